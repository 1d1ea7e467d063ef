"""PackedDataset and its native DataLoader path: packing against the plain-Python reference
packers (arrowloader.reference) on pyarrow's own rows, orders as a function of (seed,
epoch) alone, exactly-once epochs across world sizes (simulated and under torchrun), and
exact resumption from state_dict()."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import _C, PackedDataset, reference
from arrowloader.native import STATE_FORMAT
from conftest import (
    INT32,
    TOKEN_TYPES,
    free_port,
    pyarrow_rows,
    random_documents,
    write_corpus,
    write_tokens,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Token ids each token type can hold that also fit every output dtype tested.
ID_LIMITS = {
    "int32": (-50, 2**31 - 1),
    "int64": (-50, 2**31 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**31 - 1),
}

Batch = dict[str, Any]
Row = dict[str, list]


# --------------------------------------------------------------------------- helpers


def write_shards(
    folder: Path,
    documents: Sequence[Sequence[int]],
    *,
    value_type: pa.DataType = INT32,
    cuts: Sequence[int] = (),
    num_batches: int = 2,
    stream: bool = False,
) -> list[Path]:
    """``documents`` split at ``cuts`` into files ``shard-<k>.arrow`` (alternately IPC file
    and stream format when ``stream``), each of ``num_batches`` uneven record batches."""
    edges = [0, *sorted(cuts), len(documents)]
    paths = []
    for k, (begin, end) in enumerate(zip(edges[:-1], edges[1:])):
        paths.append(
            write_tokens(
                folder / f"shard-{k:02d}.arrow",
                documents[begin:end],
                value_type=value_type,
                num_batches=num_batches,
                stream=stream and k % 2 == 1,
            )
        )
    return paths


def reference_rows(
    documents: Sequence[Sequence[int]],
    mode: str,
    seq_len: int,
    eos_token_id: int,
    pad_token_id: int,
    mask_across_documents: bool,
) -> list[Row]:
    if mode == "concat":
        return reference.pack_concat(documents, seq_len, eos_token_id, mask_across_documents)
    return reference.pack_bestfit(documents, seq_len, eos_token_id, pad_token_id)


def reference_batch(
    rows: Sequence[Row],
    seq_len: int,
    dtype: torch.dtype,
    *,
    position_ids: bool = True,
    cu_seqlens: bool = True,
) -> Batch:
    """The batch the native path must produce for ``rows`` of the reference packer."""
    batch: Batch = {}
    keys = ["input_ids", "labels"] + (["position_ids"] if position_ids else [])
    for key in keys:
        batch[key] = torch.tensor([row[key] for row in rows], dtype=dtype).reshape(
            len(rows), seq_len
        )
    if cu_seqlens:
        cu, longest = reference.packed_cu_seqlens(rows, seq_len)
        batch["cu_seqlens"] = torch.tensor(cu, dtype=torch.int32)
        batch["max_seqlen"] = longest
    return batch


def assert_batch_equal(actual: Batch, expected: Batch, where: str = "") -> None:
    assert actual.keys() == expected.keys(), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
    for key, want in expected.items():
        got = actual[key]
        if isinstance(want, torch.Tensor):
            assert isinstance(got, torch.Tensor), f"{where} {key}: not a tensor"
            assert got.dtype == want.dtype, f"{where} {key}: dtype {got.dtype} != {want.dtype}"
            assert got.shape == want.shape, f"{where} {key}: shape {got.shape} != {want.shape}"
            assert torch.equal(got, want), f"{where} {key}: {got.tolist()} != {want.tolist()}"
        else:
            assert got == want, f"{where} {key}: {got} != {want}"


def assert_batches_equal(actual: Sequence[Batch], expected: Sequence[Batch]) -> None:
    assert len(actual) == len(expected), f"{len(actual)} batches, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert_batch_equal(a, e, f"batch {k}")


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def loader_for(ds: PackedDataset, batch_size: int, seed: Optional[int], **kwargs: Any) -> Any:
    """A native DataLoader shuffling blocks with ``generator`` seeded ``seed`` (None: the
    dataset's own seed)."""
    loader = arrowloader.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        generator=None if seed is None else seeded(seed),
        **kwargs,
    )
    assert loader.native
    return loader


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through torch.save / torch.load, as a checkpoint carries it."""
    buffer = io.BytesIO()
    torch.save({"loader": state}, buffer)
    buffer.seek(0)
    return torch.load(buffer)["loader"]


def row_key(batch: Batch, i: int) -> bytes:
    """Row ``i`` of a batch, identified by its bytes (ids, labels and positions)."""
    keys = ("input_ids", "labels", "position_ids")
    return b"".join(batch[k][i].to(torch.int64).numpy().tobytes() for k in keys)


def rows_key(rows: Sequence[Row], dtype: torch.dtype) -> list[bytes]:
    return [row_key(reference_batch([row], len(row["input_ids"]), dtype), 0) for row in rows]


def concat_ranks(batches: Sequence[Batch]) -> Batch:
    """Ranks' shares of one global step, joined (cu_seqlens is per batch, so left out)."""
    return {
        k: torch.cat([b[k] for b in batches]) for k in ("input_ids", "labels", "position_ids")
    }


def without_cu(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k in ("input_ids", "labels", "position_ids")}


# --------------------------------------------------------------------------- packing


@dataclass
class PackCase:
    """A corpus and a PackedDataset configuration drawn by hypothesis."""

    documents: list[list[int]]
    type_name: str
    cuts: list[int]
    num_batches: int
    stream: bool
    options: dict[str, Any]


@st.composite
def pack_cases(draw: st.DrawFn) -> PackCase:
    type_name = draw(st.sampled_from(sorted(TOKEN_TYPES)))
    low, high = ID_LIMITS[type_name]
    seq_len = draw(st.integers(1, 40))
    token = st.one_of(st.integers(0, 9), st.integers(low, high))
    # Empty documents, short ones and ones longer than a block (up to ~2.5 blocks).
    length = st.one_of(st.just(0), st.integers(1, seq_len + 1), st.integers(0, 2 * seq_len + 5))
    lengths = draw(st.lists(length, min_size=1, max_size=24))
    documents = [draw(st.lists(token, min_size=n, max_size=n)) for n in lengths]
    cuts = draw(st.lists(st.integers(0, len(documents)), max_size=2))
    dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    limit = torch.iinfo(dtype)
    # Ids the dataset writes are refused below 0 (test_negative_ids_are_refused).
    special = st.one_of(st.integers(0, 9), st.just(50256), st.integers(0, limit.max))
    options = {
        "seq_len": seq_len,
        "eos_token_id": draw(special),
        "mode": draw(st.sampled_from(["concat", "bestfit"])),
        "mask_across_documents": draw(st.booleans()),
        "pad_token_id": draw(st.none() | special),
        "dtype": dtype,
    }
    return PackCase(
        documents=documents,
        type_name=type_name,
        cuts=cuts,
        num_batches=draw(st.integers(1, 3)),
        stream=draw(st.booleans()),
        options=options,
    )


def case_rows(case: PackCase, documents: Sequence[Sequence[int]]) -> list[Row]:
    o = case.options
    pad = o["eos_token_id"] if o["pad_token_id"] is None else o["pad_token_id"]
    return reference_rows(
        documents, o["mode"], o["seq_len"], o["eos_token_id"], pad, o["mask_across_documents"]
    )


def check_dataset_against(ds: PackedDataset, rows: list[Row], case: PackCase, data: Any) -> None:
    """Every ``ds[i]``, a drawn ``assemble()`` batch and ``collate()`` against the reference."""
    seq_len, dtype = case.options["seq_len"], case.options["dtype"]
    assert len(ds) == len(rows)
    pieces = sum(len(doc) + 1 for doc in case.documents)
    dropped = pieces - len(rows) * (seq_len + 1) if case.options["mode"] == "concat" else 0
    assert ds.plan().dropped_tokens == dropped
    for i, row in enumerate(rows):
        expected = reference_batch([row], seq_len, dtype, cu_seqlens=False)
        assert_batch_equal(ds[i], {k: v[0] for k, v in expected.items()}, f"block {i}")
    if rows:
        assert_batch_equal(ds[-1], ds[len(rows) - 1], "block -1")
    with pytest.raises(IndexError):
        ds[len(rows)]
    blocks = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=6)) if rows else []
    batch = ds.assemble(blocks)
    expected = reference_batch([rows[b] for b in blocks], seq_len, dtype)
    assert_batch_equal(batch, expected, "assemble")
    if blocks:
        assert_batch_equal(ds.collate([ds[b] for b in blocks]), batch, "collate")


@PROPERTY_SETTINGS
@given(case=pack_cases(), data=st.data())
def test_packing_matches_reference(case: PackCase, data: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        paths = write_shards(
            Path(folder),
            case.documents,
            value_type=TOKEN_TYPES[case.type_name],
            cuts=case.cuts,
            num_batches=case.num_batches,
            stream=case.stream,
        )
        ds = PackedDataset(paths, shuffle_documents=False, **case.options)
        documents = pyarrow_rows(paths)
        assert documents == case.documents
        check_dataset_against(ds, case_rows(case, documents), case, data)


@PROPERTY_SETTINGS
@given(case=pack_cases(), data=st.data())
def test_shuffled_packing_matches_reference(case: PackCase, data: Any) -> None:
    seed = data.draw(st.integers(0, 2**64 - 1))
    epoch = data.draw(st.integers(0, 5))
    with tempfile.TemporaryDirectory() as folder:
        paths = write_shards(
            Path(folder),
            case.documents,
            value_type=TOKEN_TYPES[case.type_name],
            cuts=case.cuts,
            num_batches=case.num_batches,
            stream=case.stream,
        )
        ds = PackedDataset(paths, seed=seed, **case.options)
        ds.set_epoch(epoch)
        documents = pyarrow_rows(paths)
        order = ds.document_order(epoch)
        assert order.dtype == np.int64
        assert sorted(order.tolist()) == list(range(len(documents)))
        check_dataset_against(ds, case_rows(case, [documents[i] for i in order]), case, data)


def test_reference_packers_by_hand() -> None:
    """The oracle itself, on cases worked out by hand."""
    docs = [[1, 2, 3], [], [4, 5, 6, 7, 8]]
    rows = reference.pack_concat(docs, 3, 9, mask_across_documents=True)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3], [9, 4, 5]]  # stream 1239945678 9
    assert [r["labels"] for r in rows] == [[2, 3, 9], [-100, 5, 6]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2], [0, 0, 1]]
    assert reference.packed_cu_seqlens(rows, 3) == ([0, 3, 4, 6], 3)
    unmasked = reference.pack_concat(docs, 3, 9)
    assert [r["labels"] for r in unmasked] == [[2, 3, 9], [4, 5, 6]]

    # Pieces 1234569 | 9 | 79: chunks 1234, 569; 9 fills 569's block; 79 opens a third.
    rows = reference.pack_bestfit([[1, 2, 3, 4, 5, 6], [], [7]], 3, 9, 0)
    assert [r["input_ids"] for r in rows] == [[1, 2, 3], [5, 6, 9], [7, 9, 0]]
    assert [r["labels"] for r in rows] == [[2, 3, 4], [6, 9, -100], [9, -100, -100]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2], [0, 1, 2], [0, 1, 0]]
    assert reference.packed_cu_seqlens(rows, 3) == ([0, 3, 6, 8, 9], 3)

    # Best fit, not first fit: pieces 110 | 22220 | 0 in blocks of 6; the last piece goes to
    # the second block (room 1), not the first (room 3).
    rows = reference.pack_bestfit([[1, 1], [2, 2, 2, 2], []], 5, 0, 7)
    assert [r["input_ids"] for r in rows] == [[1, 1, 0, 7, 7], [2, 2, 2, 2, 0]]
    assert [r["labels"] for r in rows] == [[1, 0, -100, -100, -100], [2, 2, 2, 0, -100]]
    assert [r["position_ids"] for r in rows] == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 4]]
    assert reference.packed_cu_seqlens(rows, 5) == ([0, 3, 5, 10], 5)


@pytest.mark.parametrize("cap", [None, 3])
def test_bestfit_wide_rows_match_the_reference_placement(
    tmp_path: Path, cap: Optional[int]
) -> None:
    """Rows wide enough that their free room spans many words of the native packer's
    bitmap of rooms (and several words of its summary): every row holds the reference
    packer's pieces, in its order, ties going to the block opened first."""
    seq_len, eos = 9_000, 0
    rng = np.random.default_rng(11)
    # Long documents leave rooms all over [1, seq_len]; many short ones of a few lengths
    # make ties; some are longer than a row (split).
    lengths = np.concatenate([
        rng.integers(0, 12_000, 300), rng.choice([5, 63, 64, 65, 4095, 4096], 900),
    ])
    rng.shuffle(lengths)
    documents = [[d + 1] * int(n) for d, n in enumerate(lengths)]  # ids name the document
    path = write_tokens(tmp_path / "wide.arrow", documents, num_batches=4)
    ds = PackedDataset(path, seq_len=seq_len, eos_token_id=eos, mode="bestfit",
                       pad_token_id=eos, shift_labels=False, return_cu_seqlens=True,
                       max_documents_per_row=cap, seed=3)
    order = ds.document_order(0)
    blocks = reference.bestfit_blocks([int(lengths[d]) + 1 for d in order], seq_len, cap)
    batches = list(arrowloader.DataLoader(ds, batch_size=1, shuffle=False))
    assert len(batches) == len(blocks)
    for b, (batch, block) in enumerate(zip(batches, blocks)):
        ids = batch["input_ids"][0].numpy()
        cu = batch["cu_seqlens"].numpy().astype(np.int64)
        # A piece's first position holds its document's id (its EOS when it is empty or a
        # last chunk of one token); padding, if any, is the row's last segment.
        expected = [(int(order[piece]) + 1 if start < lengths[order[piece]] else eos, length)
                    for piece, start, length in block]
        used = sum(length for _, length in expected)
        got = [(int(ids[s]), int(e - s)) for s, e in zip(cu[:-1], cu[1:])]
        if used < seq_len:
            assert got[-1] == (eos, seq_len - used), f"row {b}: padding"
            got = got[:-1]
        assert got == expected, f"row {b}"


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
# The big id lands on block position seq_len (the last input's target, written apart) for
# where=0 in concat (7 8 EOS | id ...) and where=3 in bestfit (a 4-token chunk of the doc).
@pytest.mark.parametrize("where", [0, 2, 3])
def test_int32_overflow_names_the_row(tmp_path: Path, mode: str, where: int) -> None:
    """A uint32 id that int32 output cannot hold raises CorpusFormatError naming the file
    and row, wherever it lands in the block; other blocks are unaffected."""
    doc = [1, 2, 3, 4]
    doc[where] = 2**31 + 5
    path = write_tokens(tmp_path / "u.arrow", [[7, 8], doc], value_type=pa.uint32())
    ds = PackedDataset(path, seq_len=3, eos_token_id=0, mode=mode, dtype=torch.int32,
                       shuffle_documents=False)
    rows = reference_rows([[7, 8], doc], mode, 3, 0, 0, False)
    bad = [i for i, row in enumerate(rows)
           if 2**31 + 5 in row["input_ids"] + row["labels"]]
    assert bad
    for i in range(len(rows)):
        if i in bad:
            with pytest.raises(arrowloader.CorpusFormatError, match=r"u\.arrow.*row 1.*2147483653"):
                ds[i]
        else:
            assert ds[i]["input_ids"].tolist() == rows[i]["input_ids"]
    with pytest.raises(arrowloader.CorpusFormatError, match="row 1"):
        list(arrowloader.DataLoader(ds, batch_size=1, num_workers=2))


@pytest.mark.parametrize("flags", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_optional_outputs_and_torch_collate(
    tmp_path: Path, mode: str, flags: tuple[bool, bool]
) -> None:
    """position_ids and cu_seqlens switch off independently; in order and without a
    remainder, the native batches equal torch's DataLoader with ``collate_fn=ds.collate``."""
    position_ids, cu_seqlens = flags
    docs = random_documents(np.random.default_rng(3), 40, max_tokens=20)
    paths = write_shards(tmp_path, docs, cuts=[15])
    ds = PackedDataset(
        paths, seq_len=8, eos_token_id=1, mode=mode, shuffle_documents=False,
        return_position_ids=position_ids, return_cu_seqlens=cu_seqlens,
    )
    rows = reference_rows(docs, mode, 8, 1, 1, False)
    native = list(arrowloader.DataLoader(ds, batch_size=4, drop_last=True))
    expected = [
        reference_batch(rows[k : k + 4], 8, torch.int64, position_ids=position_ids,
                        cu_seqlens=cu_seqlens)
        for k in range(0, len(rows) - 3, 4)
    ]
    assert_batches_equal(native, expected)
    torch_batches = list(
        torch.utils.data.DataLoader(ds, batch_size=4, drop_last=True, collate_fn=ds.collate)
    )
    assert_batches_equal(torch_batches, expected)


# --------------------------------------------------------------------------- orders


@pytest.fixture(scope="module")
def order_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[list[int]]]:
    docs = random_documents(np.random.default_rng(11), 90, max_tokens=30)
    paths = write_shards(tmp_path_factory.mktemp("order"), docs, cuts=[20, 21, 70])
    return paths, docs


def test_seeded_permutation_is_a_permutation() -> None:
    for n in (0, 1, 2, 7, 1000):
        for seed, stream in ((0, 0), (1, 0), (0, 1), (2**64 - 1, 2**63 + 5)):
            p = _C.seeded_permutation(seed, stream, n)
            assert p.dtype == np.int64 and p.shape == (n,)
            assert sorted(p.tolist()) == list(range(n))
            assert np.array_equal(p, _C.seeded_permutation(seed, stream, n))
    assert not np.array_equal(_C.seeded_permutation(0, 0, 1000), _C.seeded_permutation(1, 0, 1000))
    assert not np.array_equal(_C.seeded_permutation(0, 0, 1000), _C.seeded_permutation(0, 1, 1000))
    # Unbiased: each of the 6 permutations of 3 about equally often over 6000 seeds.
    counts = Counter(tuple(_C.seeded_permutation(s, 3, 3).tolist()) for s in range(6000))
    assert len(counts) == 6 and all(850 < c < 1150 for c in counts.values()), counts
    with pytest.raises(ValueError):
        _C.seeded_permutation(0, 0, -1)


def python_seeded_permutation(seed: int, stream: int, n: int) -> list[int]:
    """The documented algorithm in plain Python: SplitMix64 seeded from (seed, stream),
    Lemire's unbiased bounded draws, Fisher-Yates from the last entry down."""
    mask = 2**64 - 1

    def splitmix(state: int):
        while True:
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            yield z ^ (z >> 31)

    mix = splitmix(seed ^ ((stream * 0xD1B54A32D192ED03) & mask))
    rng = splitmix(next(mix) ^ next(mix))

    def below(bound: int) -> int:
        product = next(rng) * bound
        if product & mask < bound:
            threshold = (2**64 - bound) % bound
            while product & mask < threshold:
                product = next(rng) * bound
        return product >> 64

    out = list(range(n))
    for i in range(n - 1, 0, -1):
        j = below(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def test_seeded_permutation_matches_the_python_reference() -> None:
    """Orders are part of a saved state's meaning: the native permutation (which draws
    its swaps ahead of time) must stay exactly the documented algorithm."""
    for n, seed, stream in ((1, 0, 0), (2, 5, 1), (17, 1, 2), (40, 2**64 - 1, 3), (5000, 42, 7)):
        assert _C.seeded_permutation(seed, stream, n).tolist() == python_seeded_permutation(
            seed, stream, n
        ), (n, seed, stream)


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_orders_depend_on_seed_and_epoch_only(
    order_corpus: tuple[list[Path], list[list[int]]], mode: str
) -> None:
    paths, _ = order_corpus
    a = PackedDataset(paths, seq_len=12, eos_token_id=0, mode=mode, seed=5)
    b = PackedDataset(paths, seq_len=12, eos_token_id=0, mode=mode, seed=5)
    other_seed = PackedDataset(paths, seq_len=12, eos_token_id=0, mode=mode, seed=6)
    for epoch in range(3):
        assert np.array_equal(a.document_order(epoch), b.document_order(epoch))
        assert not np.array_equal(a.document_order(epoch), other_seed.document_order(epoch))
        n = a.plan(epoch).num_blocks
        assert np.array_equal(a.block_order(epoch, 5, n), b.block_order(epoch, 5, n))
        assert sorted(a.block_order(epoch, 5, n).tolist()) == list(range(n))
    assert not np.array_equal(a.document_order(0), a.document_order(1))
    n = a.plan(0).num_blocks
    assert not np.array_equal(a.block_order(0, 5, n), a.block_order(1, 5, n))
    assert not np.array_equal(a.block_order(0, 5, n), a.document_order(0)[:n])


def reference_epoch(
    documents: Sequence[Sequence[int]],
    ds: PackedDataset,
    epoch: int,
    seed: int,
    shuffle_blocks: bool = True,
    pad_token_id: Optional[int] = None,
    mask_across_documents: bool = False,
) -> list[Row]:
    """The reference's rows of ``epoch`` in the loader's global block order."""
    order = ds.document_order(epoch, seed)
    rows = reference_rows(
        [documents[i] for i in order], ds.mode, ds.seq_len, ds.eos_token_id,
        ds.eos_token_id if pad_token_id is None else pad_token_id, mask_across_documents,
    )
    if not shuffle_blocks:
        return rows
    return [rows[b] for b in ds.block_order(epoch, seed, len(rows))]


def reference_global_batches(
    rows: Sequence[Row], global_batch: int, seq_len: int, dtype: torch.dtype = torch.int64
) -> list[Batch]:
    return [
        reference_batch(rows[k : k + global_batch], seq_len, dtype)
        for k in range(0, len(rows) - global_batch + 1, global_batch)
    ]


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_loader_order_independent_of_threads_and_prefetch(
    order_corpus: tuple[list[Path], list[list[int]]], mode: str
) -> None:
    paths, docs = order_corpus
    expected: dict[int, list[Batch]] = {}
    for workers, prefetch in ((1, 1), (2, 2), (3, 5), (0, None)):
        ds = PackedDataset(paths, seq_len=12, eos_token_id=0, mode=mode, seed=1)
        loader = loader_for(ds, 3, seed=77, num_workers=workers, prefetch_factor=prefetch)
        for epoch in range(2):
            if epoch not in expected:
                rows = reference_epoch(docs, ds, epoch, 77)
                expected[epoch] = reference_global_batches(rows, 3, 12)
            assert len(loader) == len(expected[epoch])
            assert_batches_equal(list(loader), expected[epoch])
    assert not torch.equal(expected[0][0]["input_ids"], expected[1][0]["input_ids"])


def test_unseeded_loader_uses_dataset_seed(
    order_corpus: tuple[list[Path], list[list[int]]]
) -> None:
    paths, docs = order_corpus
    ds = PackedDataset(paths, seq_len=12, eos_token_id=0, mode="bestfit", seed=42)
    expected = reference_global_batches(reference_epoch(docs, ds, 0, 42), 4, 12)
    assert_batches_equal(list(loader_for(ds, 4, seed=None)), expected)
    # In order (shuffle=False): blocks as the packer numbers them.
    ds = PackedDataset(paths, seq_len=12, eos_token_id=0, mode="bestfit", seed=42)
    rows = reference_epoch(docs, ds, 0, 42, shuffle_blocks=False)
    loader = arrowloader.DataLoader(ds, batch_size=4)
    assert loader.native
    assert_batches_equal(list(loader), reference_global_batches(rows, 4, 12))


# --------------------------------------------------------------------------- exactly once


@pytest.fixture(scope="module")
def ranks_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[list[int]]]:
    docs = random_documents(np.random.default_rng(5), 130, max_tokens=40)
    paths = write_shards(tmp_path_factory.mktemp("ranks"), docs, cuts=[40, 41, 100])
    return paths, docs


def rank_batches(
    paths: list[Path], mode: str, world_size: int, batch_size: int, seed: int, **kwargs: Any
) -> tuple[list[list[Batch]], list[int]]:
    """One epoch of every rank's loader: ``(batches per rank, len(loader) per rank)``."""
    batches, lengths = [], []
    for rank in range(world_size):
        ds = PackedDataset(
            paths, seq_len=8, eos_token_id=3, mode=mode, rank=rank, world_size=world_size,
            seed=seed,
        )
        loader = loader_for(ds, batch_size, seed=seed, num_workers=1 + rank % 2, **kwargs)
        lengths.append(len(loader))
        batches.append(list(loader))
    return batches, lengths


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_exactly_once_across_world_sizes(
    ranks_corpus: tuple[list[Path], list[list[int]]], mode: str
) -> None:
    paths, docs = ranks_corpus
    batch_size, seed = 2, 9
    probe = PackedDataset(paths, seq_len=8, eos_token_id=3, mode=mode, seed=seed)
    rows = reference_epoch(docs, probe, 0, seed)
    num_blocks = len(rows)
    assert num_blocks == probe.plan(0, seed).num_blocks > 100
    reference_keys = rows_key(rows, torch.int64)
    assert len(set(reference_keys)) == num_blocks
    single, _ = rank_batches(paths, mode, 1, batch_size * 8, seed)
    for world_size in (1, 2, 3, 8):
        global_batch = batch_size * world_size
        steps = num_blocks // global_batch
        used = steps * global_batch
        batches, lengths = rank_batches(paths, mode, world_size, batch_size, seed)
        assert lengths == [steps] * world_size
        assert [len(b) for b in batches] == [steps] * world_size
        seen: list[Counter] = []
        for rank, mine in enumerate(batches):
            keys = Counter(row_key(b, i) for b in mine for i in range(len(b["input_ids"])))
            seen.append(keys)
            for step, batch in enumerate(mine):
                begin = step * global_batch + rank * batch_size
                expected = reference_batch(rows[begin : begin + batch_size], 8, torch.int64)
                assert_batch_equal(batch, expected, f"W={world_size} rank {rank} step {step}")
        # Disjoint and complete but for the remainder, which is the last blocks of the
        # order (blocks are told apart by their bytes: all distinct in this corpus).
        for r in range(world_size):
            for s in range(r + 1, world_size):
                assert not seen[r] & seen[s], f"W={world_size}: ranks {r} and {s} overlap"
        union = sum(seen, Counter())
        assert union == Counter(reference_keys[:used])
        assert set(reference_keys) - set(union) == set(reference_keys[used:])
        assert len(reference_keys) - used == num_blocks % global_batch
        # The global order does not depend on the world size.
        if world_size == 8:
            assert len(single[0]) == steps
            for step in range(steps):
                joined = concat_ranks([batches[r][step] for r in range(world_size)])
                assert_batch_equal(joined, without_cu(single[0][step]), f"global step {step}")


def test_rank_share_of_a_global_batch(ranks_corpus: tuple[list[Path], list[list[int]]]) -> None:
    """Each rank's batch is its consecutive slice of the world-size-1 global batch."""
    paths, _ = ranks_corpus
    whole, _ = rank_batches(paths, "concat", 1, 6, seed=4)
    parts, _ = rank_batches(paths, "concat", 3, 2, seed=4)
    assert len(whole[0]) == len(parts[0])
    for step, batch in enumerate(whole[0]):
        assert_batch_equal(
            concat_ranks([parts[r][step] for r in range(3)]), without_cu(batch), f"step {step}"
        )


# --------------------------------------------------------------------------- grouped jobs
# Without pinning, the loader has one native job write several consecutive batches
# (arrowloader.native.GROUP_BATCHES); each batch must still be exactly the reference's.


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_one_job_of_several_batches_matches_the_reference(
    ranks_corpus: tuple[list[Path], list[list[int]]], mode: str, dtype: torch.dtype
) -> None:
    paths, docs = ranks_corpus
    ds = PackedDataset(paths, seq_len=8, eos_token_id=3, mode=mode, dtype=dtype, seed=1)
    rows = reference_epoch(docs, ds, 0, 1, shuffle_blocks=False)
    plan = ds.plan(0, 1)
    blocks = np.random.default_rng(0).permutation(plan.num_blocks)[:15].astype(np.int64)
    size, count = 3, 5
    batches, outputs = ds._allocate_group(size, count, pin=False)
    assert outputs[0].shape == (15, 8) and outputs[3].shape == (count * (size * 8 + 1),)
    pool = _C.ThreadPool(2, "group-test")
    try:
        ticket = ds._assembler.submit(pool, plan, blocks, *outputs, batches=count)
        assert ticket.batches == count
        for j, batch in enumerate(batches):
            got = ds._finish(batch, ticket.result(None, j))
            mine = blocks[j * size : (j + 1) * size]
            expected = reference_batch([rows[b] for b in mine], 8, dtype)
            assert_batch_equal(got, expected, f"batch {j} of the job")
        with pytest.raises(IndexError, match="batch 5 of a job of 5 batches"):
            ticket.result(None, count)
        with pytest.raises(IndexError, match="batch -1"):
            ticket.result(None, -1)
    finally:
        pool.shutdown()


def test_grouped_job_arguments_are_checked(
    ranks_corpus: tuple[list[Path], list[list[int]]],
) -> None:
    paths, _ = ranks_corpus
    ds = PackedDataset(paths, seq_len=8, eos_token_id=3)
    plan = ds.plan(0, 0)
    pool = _C.ThreadPool(1, "group-test")
    try:
        _, outputs = ds._allocate_group(2, 2, pin=False)
        blocks = np.arange(4, dtype=np.int64)
        for bad in (0, -1, 3):
            with pytest.raises(ValueError, match="positive divisor of the 4 blocks"):
                ds._assembler.submit(pool, plan, blocks, *outputs, batches=bad)
        # cu_seqlens sized for one batch of 4 rows, not two batches of 2.
        _, single = ds._allocate_group(4, 1, pin=False)
        with pytest.raises(ValueError, match=r"cu_seqlens must have shape \[34\], got \[33\]"):
            ds._assembler.submit(pool, plan, blocks, *outputs[:3], single[3], batches=2)
    finally:
        pool.shutdown()


def test_error_in_a_group_delivers_the_batches_before_it(tmp_path: Path) -> None:
    """A token outside the vocabulary in the third block: one job writes batches 0-3, the
    first two are delivered equal to the reference, then the error names file and row."""
    docs = [[10 + d, 11 + d, 12 + d, 13 + d] for d in range(10)]
    docs[2][1] = 5000
    path = write_tokens(tmp_path / "c.arrow", docs)
    ds = PackedDataset(path, seq_len=4, eos_token_id=1, shuffle_documents=False,
                       vocab_size=1000)
    loader = arrowloader.DataLoader(ds, batch_size=1, num_workers=1)
    rows = reference_rows(docs, "concat", 4, 1, 1, False)
    got = []
    with pytest.raises(arrowloader.CorpusFormatError, match=r"c\.arrow.*row 2.*5000"):
        for batch in loader:
            got.append(batch)
    assert_batches_equal(got, [reference_batch([row], 4, torch.int64) for row in rows[:2]])


def test_a_batch_kept_outlives_the_rest_of_its_group(
    ranks_corpus: tuple[list[Path], list[list[int]]],
) -> None:
    """Batches of one job share an allocation: one batch kept after its group, the loader
    and its threads are gone (and other batches were allocated since) still holds its
    values."""
    paths, docs = ranks_corpus
    ds = PackedDataset(paths, seq_len=8, eos_token_id=3, seed=3)
    rows = reference_epoch(docs, ds, 0, 3)
    loader = loader_for(ds, 2, seed=3, num_workers=2)
    iterator = iter(loader)
    kept = [next(iterator) for _ in range(3)][1]
    del iterator, loader
    import gc

    gc.collect()
    churn = [torch.full((64, 8), 7) for _ in range(200)]
    assert_batch_equal(kept, reference_batch(rows[2:4], 8, torch.int64), "kept batch")
    del churn


def test_batches_dropped_as_they_come_are_right_while_blocks_are_reused(
    ranks_corpus: tuple[list[Path], list[list[int]]],
) -> None:
    """A training loop drops each batch before the next: the loader writes new batches
    into blocks freed that way, and every batch is still the reference's."""
    paths, docs = ranks_corpus
    ds = PackedDataset(paths, seq_len=8, eos_token_id=3, seed=5)
    rows = reference_epoch(docs, ds, 0, 5)
    addresses = Counter()
    for step, batch in enumerate(loader_for(ds, 2, seed=5, num_workers=2)):
        expected = reference_batch(rows[2 * step : 2 * step + 2], 8, torch.int64)
        assert_batch_equal(batch, expected, f"step {step}")
        addresses[batch["input_ids"].untyped_storage().data_ptr()] += 1
        del batch
    assert step + 1 == len(rows) // 2
    assert max(addresses.values()) > 1, "no block was reused"


# --------------------------------------------------------------------------- resumption


@pytest.fixture(scope="module")
def resume_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    docs = random_documents(np.random.default_rng(8), 70, max_tokens=30)
    return write_shards(tmp_path_factory.mktemp("resume"), docs, cuts=[30])


def two_epochs(loader: Any) -> tuple[list[Batch], list[dict[str, Any]], list[int]]:
    """Iterates two epochs: the batches, the state after each batch (index k: after k
    batches, k = 0 before any) and the batches per epoch."""
    batches, states, lengths = [], [loader.state_dict()], []
    for _ in range(2):
        it = iter(loader)
        lengths.append(len(it))
        for batch in it:
            batches.append(batch)
            states.append(loader.state_dict())
    return batches, states, lengths


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_resume_yields_exactly_the_remaining_batches(resume_corpus: list[Path], mode: str) -> None:
    def make(workers: int, prefetch: int) -> Any:
        ds = PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, mode=mode, seed=3)
        return loader_for(ds, 3, seed=21, num_workers=workers, prefetch_factor=prefetch)

    batches, states, lengths = two_epochs(make(1, 1))
    assert len(batches) == sum(lengths) and lengths[0] > 10
    assert states[lengths[0]]["epoch"] == 1 and states[lengths[0]]["samples_consumed"] == 0
    rng = np.random.default_rng(0)
    cuts = {0, 1, lengths[0] - 1, lengths[0], lengths[0] + 1, sum(lengths) - 1}
    cuts |= {int(k) for k in rng.integers(0, sum(lengths), size=4)}
    for k in sorted(cuts):
        fresh = make(2 + k % 2, 3)
        fresh.load_state_dict(roundtrip(states[k]))
        assert fresh.state_dict() == states[k]
        resumed: list[Batch] = []
        if k < lengths[0]:
            it = iter(fresh)
            assert len(it) == lengths[0] - k
            resumed.extend(it)
            assert len(resumed) == lengths[0] - k, f"cut {k}: epoch 0 did not end in place"
        it = iter(fresh)
        assert len(it) == sum(lengths) - max(k, lengths[0])
        resumed.extend(it)
        assert_batches_equal(resumed, batches[k:])
        # ...and the run goes on exactly as it would have after both epochs.
        assert fresh.state_dict()["epoch"] == 2


def test_resume_mid_epoch_after_break(resume_corpus: list[Path]) -> None:
    """A state taken while batches are still in flight counts only delivered batches."""
    ds = PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, seed=3)
    loader = loader_for(ds, 2, seed=5, num_workers=2, prefetch_factor=4)
    full = list(loader_for(PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, seed=3), 2,
                           seed=5))
    it = iter(loader)
    taken = [next(it) for _ in range(5)]
    state = roundtrip(loader.state_dict())
    del it
    assert state["samples_consumed"] == 10
    fresh = loader_for(PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, seed=3), 2,
                       seed=5, num_workers=1)
    fresh.load_state_dict(state)
    assert_batches_equal(taken + list(fresh), full)


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_resume_on_another_world_size(resume_corpus: list[Path], mode: str) -> None:
    """2 ranks x 4 stopped after k steps, resumed as 4 ranks x 2 (and 1 x 8): the joined
    batches equal the uninterrupted run's global batches."""

    def loaders(world_size: int, batch_size: int) -> list[Any]:
        return [
            loader_for(
                PackedDataset(resume_corpus, seq_len=6, eos_token_id=2, mode=mode, seed=1,
                              rank=r, world_size=world_size),
                batch_size, seed=8, num_workers=1 + r % 2,
            )
            for r in range(world_size)
        ]

    original = loaders(2, 4)
    full = [list(loader) for loader in original]
    steps = len(full[0])
    assert steps > 6 and len(full[1]) == steps
    for k in (0, 1, steps // 2, steps - 1, steps):
        before = loaders(2, 4)
        iterators = [iter(loader) for loader in before]
        for it in iterators:
            for _ in range(k):
                next(it)
        states = [roundtrip(loader.state_dict()) for loader in before]
        assert states[0] == states[1]
        for world_size, batch_size in ((4, 2), (1, 8)):
            after = loaders(world_size, batch_size)
            for loader in after:
                loader.load_state_dict(states[0])
            resumed = [list(loader) for loader in after]
            if k == steps:  # the state points at the next epoch
                assert states[0]["epoch"] == 1
                continue
            assert [len(r) for r in resumed] == [steps - k] * world_size
            for step in range(steps - k):
                assert_batch_equal(
                    concat_ranks([r[step] for r in resumed]),
                    concat_ranks([f[k + step] for f in full]),
                    f"cut {k}, {world_size} ranks, step {step}",
                )


def test_resume_with_larger_global_batch_at_epoch_end(resume_corpus: list[Path]) -> None:
    """A state whose epoch has less than one (new, larger) global batch left: that epoch
    yields nothing and the next iterator starts the next epoch, not the same one again."""

    def make(batch_size: int) -> Any:
        ds = PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, mode="bestfit", seed=3)
        return loader_for(ds, batch_size, seed=6)

    small = make(4)
    steps = len(small)
    it = iter(small)
    for _ in range(steps - 1):
        next(it)
    state = roundtrip(small.state_dict())
    num_blocks = small.dataset.plan(0, 6).num_blocks
    assert state["epoch"] == 0 and num_blocks - state["samples_consumed"] < 8

    large = make(8)
    large.load_state_dict(state)
    assert list(large) == []
    assert large.state_dict()["epoch"] == 1
    reference = make(8)
    reference.dataset.set_epoch(1)
    assert_batches_equal(list(large), list(reference))


class CountingAssembler:
    """Wraps a PackedBatchAssembler, recording the blocks of every batch it assembles."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.submitted: list[np.ndarray] = []
        self.assembled: list[np.ndarray] = []

    def submit(self, pool: Any, plan: Any, blocks: Any, *outputs: Any, batches: int = 1) -> Any:
        self.submitted.append(np.array(blocks))
        return self.inner.submit(pool, plan, blocks, *outputs, batches=batches)

    def assemble(self, plan: Any, blocks: Any, *outputs: Any) -> Any:
        self.assembled.append(np.array(blocks))
        return self.inner.assemble(plan, blocks, *outputs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_resume_late_costs_no_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming at the last global batch of a large epoch assembles that batch only."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 12, size=300_000)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    tokens = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(rng.integers(0, 50000, size=int(offsets[-1]), dtype=np.int32))
    )
    path = tmp_path / "large.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(
        sink, pa.schema([("input_ids", tokens.type)])
    ) as writer:
        writer.write_batch(pa.record_batch([tokens], names=["input_ids"]))

    ds = PackedDataset(path, seq_len=16, eos_token_id=0, seed=2, rank=1, world_size=2)
    loader = loader_for(ds, 4, seed=2)
    steps = len(loader)
    assert steps > 10_000
    state = loader.state_dict()
    state["samples_consumed"] = (steps - 1) * 8

    fresh_ds = PackedDataset(path, seq_len=16, eos_token_id=0, seed=2, rank=1, world_size=2)
    counting = CountingAssembler(fresh_ds._assembler)
    monkeypatch.setattr(fresh_ds, "_assembler", counting)
    fresh = loader_for(fresh_ds, 4, seed=2, num_workers=2, prefetch_factor=8)
    fresh.load_state_dict(roundtrip(state))
    (batch,) = list(fresh)
    order = ds.block_order(0, 2, ds.plan(0, 2).num_blocks)
    last = order[(steps - 1) * 8 + 4 : steps * 8]
    assert len(counting.submitted) == 1 and not counting.assembled
    assert np.array_equal(counting.submitted[0], last)
    assert_batch_equal(batch, ds.assemble(last.tolist(), epoch=0), "last batch")
    assert fresh.state_dict()["epoch"] == 1


@pytest.fixture
def state_setup(resume_corpus: list[Path]) -> tuple[Any, dict[str, Any]]:
    ds = PackedDataset(resume_corpus, seq_len=10, eos_token_id=2, seed=3)
    loader = loader_for(ds, 3, seed=21)
    it = iter(loader)
    next(it)
    return loader, loader.state_dict()


def fresh_loader(paths: list[Path], seed: int = 21, **kwargs: Any) -> Any:
    options = {"seq_len": 10, "eos_token_id": 2, "seed": 3, **kwargs}
    return loader_for(PackedDataset(paths, **options), 3, seed=seed)


def test_state_dict_contents(state_setup: tuple[Any, dict[str, Any]]) -> None:
    _, state = state_setup
    assert state["format"] == STATE_FORMAT
    assert state["epoch"] == 0 and state["samples_consumed"] == 3
    assert state["seed"] == 21 and state["global_batch_size"] == 3
    assert roundtrip(state) == state


def test_load_state_rejects_another_corpus_or_packing(
    state_setup: tuple[Any, dict[str, Any]], resume_corpus: list[Path]
) -> None:
    _, state = state_setup
    with pytest.raises(ValueError, match="corpus"):
        fresh_loader(resume_corpus[:1]).load_state_dict(state)
    with pytest.raises(ValueError, match="corpus or packing"):
        fresh_loader(resume_corpus, seq_len=11).load_state_dict(state)
    with pytest.raises(ValueError, match="corpus or packing"):
        fresh_loader(resume_corpus, mode="bestfit").load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        fresh_loader(resume_corpus, seed=22).load_state_dict(state)
    fresh_loader(resume_corpus).load_state_dict(state)  # the same setup loads


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "something/1"}, "format"),
        ({"format": None}, "format"),
        ({"epoch": -1}, "epoch"),
        ({"epoch": "0"}, "epoch"),
        ({"samples_consumed": -3}, "samples_consumed"),
        ({"samples_consumed": 2.5}, "samples_consumed"),
        ({"samples_consumed": 3 * 10**8}, "beyond"),
        ({"global_batch_size": True}, "global_batch_size"),
        ({"seed": -1}, "seed"),
        ({"global_batch_size": 0}, "global_batch_size"),
        ({"fingerprint": None}, "fingerprint"),
    ],
)
def test_load_state_rejects_malformed_states(
    state_setup: tuple[Any, dict[str, Any]], resume_corpus: list[Path],
    change: dict[str, Any], message: str,
) -> None:
    _, state = state_setup
    with pytest.raises(ValueError, match=message):
        fresh_loader(resume_corpus).load_state_dict({**state, **change})


@pytest.mark.parametrize(
    "key", ["format", "fingerprint", "seed", "epoch", "samples_consumed", "global_batch_size"]
)
def test_load_state_rejects_missing_keys(
    state_setup: tuple[Any, dict[str, Any]], resume_corpus: list[Path], key: str
) -> None:
    _, state = state_setup
    broken = {k: v for k, v in state.items() if k != key}
    with pytest.raises(ValueError, match=key):
        fresh_loader(resume_corpus).load_state_dict(broken)


def test_load_state_rejects_non_dict(resume_corpus: list[Path]) -> None:
    with pytest.raises(ValueError, match="state"):
        fresh_loader(resume_corpus).load_state_dict([1, 2])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- torchrun


def test_torchrun_two_ranks_disjoint_and_complete(ranks_corpus: tuple[list[Path], list[list[int]]],
                                                  tmp_path: Path) -> None:
    """Two real processes under torchrun (gloo, CPU), no explicit rank: their blocks over
    one epoch are disjoint and cover the epoch but for the documented remainder."""
    paths, docs = ranks_corpus
    script = Path(__file__).with_name("distributed_packed.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", str(script), str(tmp_path), *map(str, paths)],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert [o["rank"] for o in outputs] == [0, 1]
    assert [o["world_size"] for o in outputs] == [2, 2]

    probe = PackedDataset(paths, seq_len=8, eos_token_id=3, mode="bestfit", seed=0)
    batch_size, seed = outputs[0]["batch_size"], outputs[0]["seed"]
    rows = reference_epoch(docs, probe, 0, seed)
    global_batch = 2 * batch_size
    steps = len(rows) // global_batch
    assert [o["len"] for o in outputs] == [steps, steps]
    for rank, output in enumerate(outputs):
        assert len(output["input_ids"]) == steps
        for step, ids in enumerate(output["input_ids"]):
            begin = step * global_batch + rank * batch_size
            assert ids == [row["input_ids"] for row in rows[begin : begin + batch_size]]
    # Disjoint and complete, by the blocks' contents: together the ranks saw exactly the
    # epoch's first steps * global_batch blocks; the remainder is the last ones.
    seen = [Counter(tuple(r) for ids in o["input_ids"] for r in ids) for o in outputs]
    everything = [tuple(row["input_ids"]) for row in rows]
    assert seen[0] + seen[1] == Counter(everything[: steps * global_batch])
    assert not (seen[0] & seen[1]) or len(set(everything)) < len(everything)
    assert len(rows) - steps * global_batch < global_batch


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"seq_len": 0}, "seq_len"),
        ({"seq_len": -4}, "seq_len"),
        ({"mode": "greedy"}, "mode"),
        ({"eos_token_id": 2**31, "dtype": torch.int32}, "eos_token_id"),
        ({"eos_token_id": -(2**31) - 1, "dtype": torch.int32}, "eos_token_id"),
        ({"pad_token_id": 2**31, "dtype": torch.int32}, "pad_token_id"),
        ({"dtype": torch.float32}, "dtype"),
        ({"rank": 0}, "world_size"),
        ({"world_size": 2}, "rank"),
        ({"rank": 2, "world_size": 2}, "rank"),
        ({"rank": -1, "world_size": 2}, "rank"),
    ],
)
def test_bad_arguments(resume_corpus: list[Path], kwargs: dict[str, Any], message: str) -> None:
    options = {"seq_len": 8, "eos_token_id": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        PackedDataset(resume_corpus, **options)


def test_set_epoch_rejects_negative(resume_corpus: list[Path]) -> None:
    ds = PackedDataset(resume_corpus, seq_len=8, eos_token_id=1)
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_custom_sampler_takes_torchs_path_with_the_datasets_collate(tmp_path: Path) -> None:
    """Off the native path the batches still carry cu_seqlens: the DataLoader collates
    with the dataset's own collate, as the native path would produce them."""
    corpus = write_corpus(tmp_path, np.random.default_rng(5))
    ds = PackedDataset(corpus.paths, seq_len=8, eos_token_id=0, shuffle_documents=False)
    blocks = [3, 1, 4, 0]
    loader = arrowloader.DataLoader(ds, batch_size=4, sampler=blocks)
    assert not loader.native
    batch = next(iter(loader))
    expected = ds.assemble(blocks)
    assert batch["max_seqlen"] == expected["max_seqlen"]
    for key in ("input_ids", "labels", "position_ids", "cu_seqlens"):
        assert torch.equal(batch[key], expected[key]), key


@pytest.mark.parametrize("seq_len", [1, 5, 31])
def test_concat_length_needs_no_plan_and_matches_it(tmp_path: Path, seq_len: int) -> None:
    corpus = write_corpus(tmp_path, np.random.default_rng(seq_len))
    ds = PackedDataset(corpus.paths, seq_len=seq_len, eos_token_id=0)
    assert len(ds) == ds.plan(0, 7).num_blocks == ds.plan(3, 1).num_blocks
    loader = arrowloader.DataLoader(
        ds, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(9)
    )
    assert len(loader) == len(list(loader))


# --------------------------------------------------------------------------- page prefetch


def smaps_flags(path: Path) -> list[set[str]]:
    """VmFlags of each mapping of ``path`` in this process (``rr``: random-read advice)."""
    flags, current = [], False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and len(fields) >= 5 and ":" not in fields[0]:
            current = fields[-1] == str(path)
        elif current and line.startswith("VmFlags:"):
            flags.append(set(fields[1:]))
    return flags


def test_prefetch_pages_changes_no_batch(tmp_path: Path) -> None:
    documents = random_documents(np.random.default_rng(3), 400, max_tokens=300)
    paths = write_shards(tmp_path, documents, cuts=[150, 290])
    batches = []
    for prefetch in (False, True):
        ds = PackedDataset(tmp_path, seq_len=64, eos_token_id=7, prefetch_pages=prefetch)
        assert ds.prefetch_pages is prefetch
        loader = arrowloader.DataLoader(
            ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
        )
        batches.append([b["input_ids"].clone() for b in loader])
        if prefetch:
            # The files' mappings carry the random-read advice.
            for path in paths:
                assert any("rr" in flags for flags in smaps_flags(path.resolve())), path
        del loader, ds
    assert len(batches[0]) == len(batches[1]) > 0
    for a, b in zip(*batches):
        assert torch.equal(a, b)


def test_prefetch_pages_is_off_for_a_corpus_far_smaller_than_memory(tmp_path: Path) -> None:
    write_tokens(tmp_path / "small.arrow", [[1, 2, 3]] * 50)
    assert PackedDataset(tmp_path, seq_len=4, eos_token_id=0).prefetch_pages is False


def test_prefetch_advises_the_pages_of_exactly_the_blocks_tokens(tmp_path: Path) -> None:
    """The bytes advised equal the page-rounded, merged byte ranges of each block's
    segments, computed here from pyarrow's offsets (concat, corpus order)."""
    documents = random_documents(np.random.default_rng(5), 300, max_tokens=5000)
    path = write_tokens(tmp_path / "one.arrow", documents, num_batches=1)
    seq_len = 3000
    ds = PackedDataset(path, seq_len=seq_len, eos_token_id=7, prefetch_pages=True)
    plan = ds._assembler.plan(np.arange(len(documents), dtype=np.int64))
    # A mapping of its own: another address, but the same offset within a page (both
    # map the file from its start), which is all that page rounding depends on.
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    chunk = table.column("input_ids").chunk(0)
    values_address = chunk.values.buffers()[1].address + 4 * chunk.values.offset
    offsets = [int(x) for x in chunk.offsets.to_numpy()]
    page = os.sysconf("SC_PAGE_SIZE")

    def expected_bytes(blocks: list[int]) -> int:
        ranges = []
        for b in blocks:
            start, end = b * (seq_len + 1), (b + 1) * (seq_len + 1)  # stream positions
            position = 0
            for row, doc in enumerate(documents):
                piece = len(doc) + 1
                lo, hi = max(start, position), min(end, position + len(doc))  # EOS not read
                if lo < hi:
                    first = values_address + 4 * (offsets[row] + lo - position)
                    last = values_address + 4 * (offsets[row] + hi - position)
                    ranges.append((first // page * page, -(-last // page) * page))
                position += piece
        ranges.sort()
        total, current = 0, None
        for lo, hi in ranges:
            if current is not None and lo <= current[1]:
                current = (current[0], max(current[1], hi))
            else:
                if current is not None:
                    total += current[1] - current[0]
                current = (lo, hi)
        return total + (current[1] - current[0] if current else 0)

    for blocks in ([0], [3], [1, 2], [0, 5, 9], [plan.num_blocks - 1]):
        advised = ds._assembler.prefetch(plan, np.array(blocks, dtype=np.int64))
        assert advised == expected_bytes(blocks), blocks


def test_prefetch_rejects_blocks_outside_the_plan(tmp_path: Path) -> None:
    write_tokens(tmp_path / "c.arrow", [[1, 2, 3]] * 50)
    ds = PackedDataset(tmp_path, seq_len=4, eos_token_id=0)
    plan = ds._assembler.plan(np.arange(50, dtype=np.int64))
    with pytest.raises(IndexError, match="block 40 of a plan of 40 blocks"):
        ds._assembler.prefetch(plan, np.array([0, 40], dtype=np.int64))
    with pytest.raises(IndexError, match="block -1"):
        ds._assembler.prefetch(plan, np.array([-1], dtype=np.int64))
    with pytest.raises(ValueError, match="1-D"):
        ds._assembler.prefetch(plan, np.zeros((2, 2), dtype=np.int64))
