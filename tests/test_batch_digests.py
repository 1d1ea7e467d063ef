"""Pins the bytes of the first batches of every native workload, and of the loader states
taken between them, so that a change meant to move code around cannot change what
training sees.

The digests were taken from the code before the native-path contract was introduced
(every batch there was also checked against the plain-Python reference and torch's own
DataLoader by the other test modules); a change that alters them must say why and update
them deliberately.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Callable

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import write_ipc

#: Batches hashed per case.
BATCHES = 6


@pytest.fixture(scope="module")
def digest_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 documents of 0..80 ids in [1, 1000) and a 0/1 label, from a fixed seed."""
    rng = np.random.default_rng(20261203)
    lengths = rng.integers(0, 81, size=300)
    documents = [rng.integers(1, 1000, size=int(n)).tolist() for n in lengths]
    labels = rng.integers(0, 2, size=300).tolist()
    path = tmp_path_factory.mktemp("digests") / "corpus.arrow"
    write_ipc(
        path,
        {
            "input_ids": pa.array(documents, type=pa.list_(pa.int32())),
            "label": pa.array(labels, type=pa.int64()),
        },
    )
    return path


def tensor_digest(batches: list[dict[str, Any]]) -> str:
    """SHA-256 over every batch's keys, dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            value = batch[key]
            h.update(key.encode())
            if isinstance(value, torch.Tensor):
                h.update(str(value.dtype).encode())
                h.update(repr(tuple(value.shape)).encode())
                h.update(value.contiguous().numpy().tobytes())
            else:
                h.update(repr(value).encode())
    return h.hexdigest()[:16]


def state_digest(state: dict[str, Any]) -> str:
    """A digest of a loader state that does not depend on dict order or tensor identity."""

    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", str(value.dtype), value.numpy().tobytes())
        if isinstance(value, dict):
            return tuple(sorted((str(k), plain(v)) for k, v in value.items()))
        if isinstance(value, (list, tuple)):
            return tuple(plain(v) for v in value)
        return value

    return hashlib.sha256(pickle.dumps(plain(state), protocol=4)).hexdigest()[:16]


def padded(path: Path, **options: Any) -> Callable[[], arrowloader.DataLoader]:
    batch_size = options.pop("batch_size", 8)
    loader_options = {k: options.pop(k) for k in ("drop_last", "num_workers") if k in options}

    def make() -> arrowloader.DataLoader:
        ds = arrowloader.TokenDataset(path, **options)
        return arrowloader.DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(7),
            **loader_options,
        )

    return make


def packed(path: Path, **options: Any) -> Callable[[], arrowloader.DataLoader]:
    batch_size = options.pop("batch_size", 4)
    shuffle = options.pop("shuffle", True)

    def make() -> arrowloader.DataLoader:
        ds = arrowloader.PackedDataset(path, eos_token_id=0, **options)
        return arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=2)

    return make


def mixed(path: Path, **options: Any) -> Callable[[], arrowloader.DataLoader]:
    def make() -> arrowloader.DataLoader:
        a = arrowloader.PackedDataset(path, seq_len=32, eos_token_id=0, **options)
        b = arrowloader.PackedDataset(path, seq_len=32, eos_token_id=0, mode="bestfit", **options)
        ds = arrowloader.MixedDataset({"a": a, "b": b}, {"a": 0.7, "b": 0.3}, seed=3)
        return arrowloader.DataLoader(ds, batch_size=4, shuffle=True)

    return make


CASES: dict[str, Callable[[Path], Callable[[], arrowloader.DataLoader]]] = {
    "pad": lambda p: padded(p, label_column="label", max_length=48),
    "pad-left-int32": lambda p: padded(
        p, max_length=40, truncation_side="left", padding_side="left", dtype=torch.int32,
        pad_token_id=5,
    ),
    "pad-causal-multiple": lambda p: padded(
        p, max_length=64, causal_labels=True, pad_to_multiple_of=16, num_workers=1
    ),
    "pad-max-length-drop-last": lambda p: padded(
        p, max_length=32, padding="max_length", return_attention_mask=False, batch_size=7,
        drop_last=True,
    ),
    "pack-concat": lambda p: packed(p, seq_len=64),
    "pack-concat-plain-int32": lambda p: packed(
        p, seq_len=50, return_position_ids=False, return_cu_seqlens=False, dtype=torch.int32,
        mask_across_documents=True,
    ),
    "pack-bestfit": lambda p: packed(p, seq_len=96, mode="bestfit", pad_token_id=1),
    "pack-sequential-rank1": lambda p: packed(
        p, seq_len=40, shuffle=False, rank=1, world_size=2, shuffle_documents=False
    ),
    "mixed": lambda p: mixed(p),
}

#: (digest of the first BATCHES batches, digest of the state after 3 batches, digest of
#: the 3 batches after resuming from it in a fresh loader, digest of the second epoch's
#: first BATCHES batches). The padded states' digests changed once, deliberately, when
#: their positions came to count samples ("samples": 3 * batch_size) instead of batches
#: ("batches": 3), so that a state resumes into another batch size; every batch digest,
#: the resumed ones included, stayed as it was.
EXPECTED: dict[str, tuple[str, str, str, str]] = {
    "mixed": ("15c3907d4ad72479", "025e1bf1143614fa", "6bcfd7c181ec76bf", "67b3251ec86a942f"),
    "pack-bestfit": (
        "f96e615fd197bc7a", "9e640291f5a372a6", "29819625997d02cc", "5c19bfd012931501"
    ),
    "pack-concat": ("0586eedff4598536", "044171a94e15b3fa", "365fab2d47cb1a42", "c7a00175b287e79e"),
    "pack-concat-plain-int32": (
        "10807be8f3124e1a", "5f31314a0298a3fa", "9310874323cfc2b4", "bd2c7dcd9a2c51ac"
    ),
    "pack-sequential-rank1": (
        "b4b343f8006f2ef0", "01016a8eb3ce7f42", "15e6c5c050fa989a", "b4b343f8006f2ef0"
    ),
    "pad": ("8229d881418b7d95", "b608437c9fe58748", "fb08021637d19375", "b887e96f20a8ab67"),
    "pad-causal-multiple": (
        "6e5ed5ab1af70519", "ba8aa359f27f94ec", "fbeeaca23b74da3a", "34bfadf2d29611ba"
    ),
    "pad-left-int32": (
        "4d50c71241298593", "0eaad9051e7ff1e6", "9eb6f322d9e94561", "b71236c41e791f57"
    ),
    "pad-max-length-drop-last": (
        "b69510a757c90b59", "948dac496d9c5cec", "f168b7d0de5459f4", "fb43babbda8bf5d2"
    ),
}


def observe(make: Callable[[], arrowloader.DataLoader]) -> tuple[str, str, str, str]:
    loader = make()
    it = iter(loader)
    first = [next(it) for _ in range(BATCHES)]
    del it
    loader = make()
    it = iter(loader)
    for _ in range(3):
        next(it)
    state = loader.state_dict()
    del it
    resumed_loader = make()
    resumed_loader.load_state_dict(state)
    it = iter(resumed_loader)
    resumed = [next(it) for _ in range(3)]
    del it
    epochs = make()
    for _ in epochs:
        pass
    second = []
    for batch in epochs:
        second.append(batch)
        if len(second) == BATCHES:
            break
    return tensor_digest(first), state_digest(state), tensor_digest(resumed), tensor_digest(second)


@pytest.mark.parametrize("case", sorted(CASES))
def test_batches_and_states_are_pinned(case: str, digest_corpus: Path) -> None:
    observed = observe(CASES[case](digest_corpus))
    assert observed == EXPECTED[case]
