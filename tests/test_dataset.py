"""TokenDataset: items, collate and the native loader against the plain-Python reference
(``arrowloader.reference.pad_batch``) over pyarrow's reading of the same file; indexing,
stats, pickling and dtypes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import TokenDataset, reference
from conftest import (
    TOKEN_TYPES,
    as_lists,
    free_port,
    pyarrow_rows,
    random_documents,
    write_ipc,
    write_tokens,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Largest id each token type can hold that also fits every output dtype tested.
ID_LIMITS = {"int32": (-50, 2**31 - 1), "int64": (-50, 2**31 - 1), "uint16": (0, 2**16 - 1),
             "uint32": (0, 2**31 - 1)}


@dataclass
class Case:
    """A corpus and a dataset configuration drawn by hypothesis."""

    documents: list[list[int]]
    labels: list[int]
    type_name: str
    large: bool
    stream: bool
    num_batches: int
    options: dict[str, Any]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    type_name = draw(st.sampled_from(sorted(TOKEN_TYPES)))
    low, high = ID_LIMITS[type_name]
    # Mostly small ids so pad_token_id often equals a real token id; some extremes.
    token = st.one_of(st.integers(0, 8), st.integers(low, high))
    documents = draw(
        st.lists(st.lists(token, max_size=20), min_size=1, max_size=14)
    )
    labels = draw(
        st.lists(st.integers(-(2**40), 2**40), min_size=len(documents), max_size=len(documents))
    )
    max_length = draw(st.none() | st.integers(1, 24))
    dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    target = draw(st.sampled_from(["none", "causal", "label_column"]))
    limit = torch.iinfo(dtype)
    options = {
        "max_length": max_length,
        "truncation_side": draw(st.sampled_from(["right", "left"])),
        "padding": "longest" if max_length is None else draw(
            st.sampled_from(["longest", "max_length"])
        ),
        "pad_to_multiple_of": draw(st.sampled_from([None, 1, 2, 3, 5, 8])),
        "padding_side": draw(st.sampled_from(["right", "left"])),
        # Negative ids are refused (test_negative_ids_are_refused).
        "pad_token_id": draw(st.integers(0, 8) | st.integers(0, limit.max)),
        "return_attention_mask": draw(st.booleans()),
        "causal_labels": target == "causal",
        "label_column": "label" if target == "label_column" else None,
        "dtype": dtype,
    }
    return Case(
        documents=documents,
        labels=labels,
        type_name=type_name,
        large=draw(st.booleans()),
        stream=draw(st.booleans()),
        num_batches=draw(st.integers(1, 4)),
        options=options,
    )


def write_case(folder: Path, case: Case) -> Path:
    return write_tokens(
        folder / "c.arrow",
        case.documents,
        value_type=TOKEN_TYPES[case.type_name],
        large=case.large,
        stream=case.stream,
        num_batches=case.num_batches,
        labels=case.labels,
    )


def expected_batch(
    rows: list[list[int]], labels: list[int], indices: list[int], options: dict[str, Any]
) -> dict[str, list]:
    """reference.pad_batch of pyarrow's rows at ``indices`` with the dataset's options."""
    return reference.pad_batch(
        [rows[i] for i in indices],
        max_length=options["max_length"],
        truncation_side=options["truncation_side"],
        padding=options["padding"],
        pad_to_multiple_of=options["pad_to_multiple_of"],
        padding_side=options["padding_side"],
        pad_token_id=options["pad_token_id"],
        return_attention_mask=options["return_attention_mask"],
        causal_labels=options["causal_labels"],
        labels=[labels[i] for i in indices] if options["label_column"] else None,
    )


def assert_dtypes(batch: dict[str, torch.Tensor], dtype: torch.dtype, scalar_labels: bool) -> None:
    for key, value in batch.items():
        want = torch.int64 if key == "labels" and scalar_labels else dtype
        assert value.dtype == want, f"{key}: {value.dtype} != {want}"


@given(case=cases(), data=st.data())
@PROPERTY_SETTINGS
def test_collate_and_native_loader_match_reference(
    tmp_path_factory: pytest.TempPathFactory, case: Case, data: st.DataObject
) -> None:
    path = write_case(tmp_path_factory.mktemp("prop"), case)
    rows = pyarrow_rows(path)
    labels = pyarrow_rows(path, "label")
    ds = TokenDataset(path, **case.options)
    n = len(rows)
    assert len(ds) == n
    scalar_labels = case.options["label_column"] is not None

    index = st.integers(0, n - 1)
    batches = data.draw(st.lists(st.lists(index, min_size=1, max_size=6), min_size=1, max_size=4))

    for indices in batches:
        collated = ds.collate([ds[i] for i in indices])
        assert as_lists(collated) == expected_batch(rows, labels, indices, case.options)
        assert_dtypes(collated, case.options["dtype"], scalar_labels)

    num_workers = data.draw(st.integers(0, 2))
    loader = arrowloader.DataLoader(ds, batch_sampler=batches, num_workers=num_workers)
    assert loader.native
    served = list(loader)
    assert len(served) == len(batches)
    for indices, batch in zip(batches, served):
        assert as_lists(batch) == expected_batch(rows, labels, indices, case.options)
        assert_dtypes(batch, case.options["dtype"], scalar_labels)


@given(case=cases(), data=st.data())
@PROPERTY_SETTINGS
def test_getitems_equals_getitem(
    tmp_path_factory: pytest.TempPathFactory, case: Case, data: st.DataObject
) -> None:
    path = write_case(tmp_path_factory.mktemp("items"), case)
    ds = TokenDataset(path, **case.options)
    indices = data.draw(st.lists(st.integers(0, len(ds) - 1), max_size=10))
    many = ds.__getitems__(indices)
    one_by_one = [ds[i] for i in indices]
    assert len(many) == len(one_by_one)
    rows = pyarrow_rows(path)
    for i, got, want in zip(indices, many, one_by_one):
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == want[key].dtype
            assert torch.equal(got[key], want[key])
        kept = reference.truncate(
            rows[i], case.options["max_length"], case.options["truncation_side"]
        )
        assert got["input_ids"].tolist() == kept


@given(
    lengths=st.lists(st.integers(0, 30), min_size=1, max_size=30),
    max_length=st.integers(1, 25),
    batch_size=st.integers(1, 7),
    drop_last=st.booleans(),
    truncation_side=st.sampled_from(["right", "left"]),
)
@PROPERTY_SETTINGS
def test_truncation_is_counted(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    max_length: int,
    batch_size: int,
    drop_last: bool,
    truncation_side: str,
) -> None:
    documents = [list(range(n)) for n in lengths]
    path = write_tokens(tmp_path_factory.mktemp("trunc") / "c.arrow", documents)
    rows = pyarrow_rows(path)
    ds = TokenDataset(path, max_length=max_length, truncation_side=truncation_side)
    dropped = [max(0, len(row) - max_length) for row in rows]
    stats = ds.stats()
    assert stats["truncated_tokens_per_epoch"] == sum(dropped)
    assert stats["truncated_documents_per_epoch"] == sum(1 for d in dropped if d > 0)
    assert stats["documents"] == len(rows)
    assert stats["tokens"] == sum(len(row) for row in rows)
    assert stats["files"] == 1
    assert stats["truncated_tokens_served"] == 0

    generator = torch.Generator().manual_seed(len(lengths))
    loader = arrowloader.DataLoader(
        ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, generator=generator
    )
    # An epoch whose every document drop_last drops says so (test_empty_epochs.py).
    empty = drop_last and 0 < len(rows) < batch_size
    with pytest.warns(UserWarning, match="yields no batch") if empty else nullcontext():
        served_rows = [len(b["input_ids"]) for b in loader]
    # Which rows were served: replay torch's sampler with the same seed.
    replay = torch.utils.data.DataLoader(
        range(len(rows)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(len(lengths)),
    )
    indices = [int(i) for batch in replay for i in batch]
    assert sum(served_rows) == len(indices)
    assert ds.stats()["truncated_tokens_served"] == sum(dropped[i] for i in indices)

    # Items count too: ds[i] serves one document.
    before = ds.stats()["truncated_tokens_served"]
    ds[len(rows) - 1]
    assert ds.stats()["truncated_tokens_served"] == before + dropped[-1]


def test_truncation_served_through_torchs_loader(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1] * 10, [2] * 3, [3] * 7, [4] * 9])
    ds = TokenDataset(path, max_length=5)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=ds.collate))
    assert [b["input_ids"].shape[1] for b in batches] == [5, 5]
    assert ds.stats()["truncated_tokens_served"] == 5 + 2 + 4 == 11
    assert ds.stats()["truncated_tokens_per_epoch"] == 11


def test_truncation_is_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1] * 10, [2] * 3, [3] * 7])
    with caplog.at_level(logging.WARNING, logger="arrowloader"):
        TokenDataset(path, max_length=5)
    assert "truncates 7 of 20 tokens" in caplog.text
    assert "2 of 3 documents" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="arrowloader"):
        TokenDataset(path, max_length=10)
    assert caplog.text == ""


@pytest.fixture
def small(tmp_path: Path, rng: np.random.Generator) -> tuple[Path, list[list[int]]]:
    documents = random_documents(rng, 23)
    path = write_tokens(tmp_path / "c.arrow", documents, num_batches=4, labels=range(23))
    return path, documents


def test_len_and_indexing(small: tuple[Path, list[list[int]]]) -> None:
    path, documents = small
    ds = TokenDataset(path)
    n = len(documents)
    assert len(ds) == n == len(pyarrow_rows(path))
    for i in range(-n, n):
        assert ds[i]["input_ids"].tolist() == documents[i]
    assert ds[np.int64(3)]["input_ids"].tolist() == documents[3]
    for bad in (n, -n - 1, 2**40, -(2**40)):
        with pytest.raises(IndexError):
            ds[bad]
    for bad_type in (1.0, "1", None, slice(0, 2)):
        with pytest.raises(TypeError):
            ds[bad_type]  # type: ignore[index]


def test_item_layout(small: tuple[Path, list[list[int]]]) -> None:
    path, documents = small
    i = next(k for k, doc in enumerate(documents) if len(doc) > 3)
    item = TokenDataset(path, label_column="label")[i]
    assert sorted(item) == ["attention_mask", "input_ids", "labels"]
    assert item["input_ids"].tolist() == documents[i]
    assert item["attention_mask"].tolist() == [1] * len(documents[i])
    assert item["labels"].shape == () and int(item["labels"]) == i
    item = TokenDataset(path, causal_labels=True, return_attention_mask=False)[i]
    assert sorted(item) == ["input_ids", "labels"]
    assert item["labels"].tolist() == documents[i]


def test_lengths(small: tuple[Path, list[list[int]]]) -> None:
    path, documents = small
    lengths = TokenDataset(path, max_length=3).lengths
    assert lengths.dtype == np.int64
    assert lengths.tolist() == [len(doc) for doc in documents]  # before truncation


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_output_dtypes(small: tuple[Path, list[list[int]]], dtype: torch.dtype) -> None:
    path, _ = small
    for options in ({"causal_labels": True}, {"label_column": "label"}):
        ds = TokenDataset(path, dtype=dtype, **options)
        scalar = "label_column" in options
        item = ds[0]
        assert_dtypes(item, dtype, scalar)
        assert_dtypes(ds.collate([ds[0], ds[1]]), dtype, scalar)
        for batch in arrowloader.DataLoader(ds, batch_size=5):
            assert_dtypes(batch, dtype, scalar)


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_causal_labels_ignore_padding_by_position_not_value(
    tmp_path: Path, padding_side: str, dtype: torch.dtype
) -> None:
    """pad_token_id=5 is also a real token: labels are -100 exactly on padded positions."""
    documents = [[5, 5, 1, 5], [5], [], [2, 5, 5, 5, 5, 3], [5, 5]]
    path = write_tokens(tmp_path / "c.arrow", documents, num_batches=2)
    ds = TokenDataset(
        path, causal_labels=True, pad_token_id=5, padding_side=padding_side, dtype=dtype,
        pad_to_multiple_of=4,
    )
    expected = reference.pad_batch(
        documents, causal_labels=True, pad_token_id=5, padding_side=padding_side,
        pad_to_multiple_of=4,
    )
    collated = ds.collate([ds[i] for i in range(len(documents))])
    (native,) = list(arrowloader.DataLoader(ds, batch_size=len(documents)))
    for batch in (collated, native):
        assert as_lists(batch) == expected
        padded = batch["attention_mask"] == 0
        assert torch.equal(batch["labels"] == -100, padded)
        assert torch.equal(batch["labels"][~padded], batch["input_ids"][~padded])
        assert int((batch["input_ids"][~padded] == 5).sum()) == 10  # real 5s keep label 5


def test_pickle_is_small_and_reopens(tmp_path: Path, rng: np.random.Generator) -> None:
    documents = random_documents(rng, 400, max_tokens=200, empty_fraction=0.0)
    path = write_tokens(tmp_path / "c.arrow", documents, num_batches=3, labels=range(400))
    ds = TokenDataset(
        path, max_length=50, truncation_side="left", padding_side="left", pad_token_id=7,
        dtype=torch.int32, label_column="label",
    )
    blob = pickle.dumps(ds)
    assert path.stat().st_size > 100_000
    assert len(blob) < 2_000, "the pickle carries data, not just the arguments"
    clone = pickle.loads(blob)
    assert isinstance(clone, TokenDataset)
    assert len(clone) == len(ds)
    stats, clone_stats = ds.stats(), clone.stats()
    assert clone_stats == stats
    for i in (0, 17, 399):
        for key, value in ds[i].items():
            assert torch.equal(clone[i][key], value)
    idx = [3, 1, 4, 1, 5]
    for key, value in ds.collate(ds.__getitems__(idx)).items():
        assert torch.equal(clone.collate(clone.__getitems__(idx))[key], value)
    assert (clone.max_length, clone.padding_side, clone.pad_token_id, clone.dtype) == (
        50, "left", 7, torch.int32,
    )


def test_pickle_does_not_announce_truncation_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1] * 10])
    with caplog.at_level(logging.WARNING, logger="arrowloader"):
        ds = TokenDataset(path, max_length=4)
        assert "truncates 6 of 10 tokens" in caplog.text
        caplog.clear()
        clone = pickle.loads(pickle.dumps(ds))
    assert caplog.text == ""
    assert clone.stats()["truncated_tokens_per_epoch"] == 6


def test_collate_rejects_items_longer_than_max_length(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2, 3]])
    ds = TokenDataset(path, max_length=2)
    with pytest.raises(ValueError, match="max_length"):
        ds.collate([{"input_ids": torch.tensor([1, 2, 3])}])


def test_pad_to_max_length_with_multiple(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2, 3, 4, 5, 6, 7], [8]])
    ds = TokenDataset(path, max_length=5, padding="max_length", pad_to_multiple_of=4)
    (batch,) = list(arrowloader.DataLoader(ds, batch_size=2))
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0, 0, 0], [8, 0, 0, 0, 0, 0, 0, 0]]
    assert as_lists(ds.collate([ds[0], ds[1]])) == as_lists(batch)


def test_uint_ids_above_int32_with_int64_output(tmp_path: Path) -> None:
    documents = [[2**32 - 1, 3_000_000_000], [0]]
    path = write_tokens(tmp_path / "c.arrow", documents, value_type=pa.uint32())
    ds = TokenDataset(path)
    (batch,) = list(arrowloader.DataLoader(ds, batch_size=2))
    assert batch["input_ids"].tolist() == [[2**32 - 1, 3_000_000_000], [0, 0]]


def test_repr(small: tuple[Path, list[list[int]]]) -> None:
    path, documents = small
    text = repr(TokenDataset(path, max_length=9))
    assert f"{len(documents)} documents" in text and "max_length=9" in text


def test_columns_refuse_chunks_once_an_assembler_reads_them() -> None:
    """Assemblers read columns from native threads, so a column they hold is frozen."""
    import pyarrow as pa
    from arrowloader import _C

    tokens, labels = _C.TokenColumn("input_ids"), _C.ScalarColumn("label")
    tokens.add_chunk(*pa.array([[1, 2]], pa.list_(pa.int32())).__arrow_c_array__(), "f", 0)
    labels.add_chunk(*pa.array([7], pa.int64()).__arrow_c_array__(), "f", 0)
    _C.PaddedBatchAssembler(tokens, labels)
    with pytest.raises(RuntimeError, match="frozen"):
        tokens.add_chunk(*pa.array([[3]], pa.list_(pa.int32())).__arrow_c_array__(), "f", 1)
    with pytest.raises(RuntimeError, match="frozen"):
        labels.add_chunk(*pa.array([8], pa.int64()).__arrow_c_array__(), "f", 1)
    assert tokens.num_rows == 1 and labels.num_rows == 1


# --------------------------------------------------------------------------- ranks
# Under torch.distributed (or with rank / world_size), each rank takes the share of every
# epoch that torch's DistributedSampler gives it; the oracle is DistributedSampler itself.


def _rows_corpus(path: Path, n: int) -> Path:
    rng = np.random.default_rng(n)
    documents = [rng.integers(1, 300, size=int(k)).tolist() for k in rng.integers(1, 12, n)]
    write_ipc(
        path,
        {
            "input_ids": pa.array(documents, type=pa.list_(pa.int32())),
            "row": pa.array(range(n), type=pa.int64()),
        },
    )
    return path


def _sampler_batches(
    ds: TokenDataset, rank: int, world: int, *, epoch: int, seed: int, drop_last: bool,
    shuffle: bool = True,
) -> list[list[int]]:
    """Rows of each batch torch's DataLoader over DistributedSampler gives this rank."""
    sampler = torch.utils.data.DistributedSampler(
        ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    sampler.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, sampler=sampler, drop_last=drop_last, collate_fn=ds.collate
    )
    return [batch["labels"].tolist() for batch in loader]


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_ranks_take_distributed_samplers_shares(
    tmp_path: Path, world: int, drop_last: bool, shuffle: bool
) -> None:
    path = _rows_corpus(tmp_path / "rows.arrow", 23)
    seen: list[int] = []
    for rank in range(world):
        ds = TokenDataset(path, label_column="row", rank=rank, world_size=world)
        loader = arrowloader.DataLoader(
            ds, batch_size=4, shuffle=shuffle, drop_last=drop_last,
            generator=torch.Generator().manual_seed(6),
        )
        assert loader.native
        # One process follows the loader's own sampler, exactly as torch's loader does.
        single = torch.utils.data.DataLoader(
            ds, batch_size=4, shuffle=shuffle, drop_last=drop_last, collate_fn=ds.collate,
            generator=torch.Generator().manual_seed(6),
        )
        for epoch in range(2):  # the loader counts its own epochs
            got = [batch["labels"].tolist() for batch in loader]
            if world == 1:
                want = [batch["labels"].tolist() for batch in single]
            else:
                want = _sampler_batches(
                    ds, rank, world, epoch=epoch, seed=6, drop_last=drop_last, shuffle=shuffle
                )
            assert got == want
            assert len(loader) == len(want)
            if epoch == 0:
                seen += [row for batch in got for row in batch]
    if drop_last:
        assert len(seen) == len(set(seen))  # nothing twice
    else:  # everything, the repeats being the order's first samples
        assert set(seen) == set(range(23))
        assert len(seen) == -(-23 // world) * world


def test_a_rank_split_loader_resumes_exactly_and_on_another_world_size(
    tmp_path: Path,
) -> None:
    path = _rows_corpus(tmp_path / "rows.arrow", 40)
    ds = TokenDataset(path, label_column="row", rank=1, world_size=3)

    def make(threads: int) -> arrowloader.DataLoader:
        return arrowloader.DataLoader(
            ds, batch_size=4, shuffle=True, num_workers=threads,
            generator=torch.Generator().manual_seed(2),
        )

    loader = make(1)
    list(loader)  # epoch 0
    it = iter(loader)
    first = [next(it)["labels"].tolist() for _ in range(2)]
    state = loader.state_dict()
    assert (state["epoch"], state["samples"], state["world_size"], state["seed"]) == (1, 8, 3, 2)
    fresh = make(3)
    fresh.load_state_dict(state)
    rest = [batch["labels"].tolist() for batch in fresh]
    assert first + rest == _sampler_batches(ds, 1, 3, epoch=1, seed=2, drop_last=False)
    # 8 samples on each of 3 ranks are the epoch's first 24: 12 on each of 2 ranks...
    for rank in range(2):
        other = TokenDataset(path, label_column="row", rank=rank, world_size=2)
        two = arrowloader.DataLoader(
            other, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2)
        )
        two.load_state_dict(state)
        rest = [batch["labels"].tolist() for batch in two]
        assert rest == _sampler_batches(other, rank, 2, epoch=1, seed=2, drop_last=False)[3:]
    # ...and no whole number on 5.
    other = TokenDataset(path, label_column="row", rank=0, world_size=5)
    with pytest.raises(ValueError, match=r"taken on 3 ranks after 8 samples each .* 5 ranks"):
        arrowloader.DataLoader(
            other, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(2)
        ).load_state_dict(state)
    with pytest.raises(ValueError, match="seed 2, this loader shuffles with 5"):
        arrowloader.DataLoader(
            ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(5)
        ).load_state_dict(state)


def test_set_epoch_pins_a_rank_split_epoch_and_a_users_sampler_is_not_split_again(
    tmp_path: Path,
) -> None:
    path = _rows_corpus(tmp_path / "rows.arrow", 30)
    ds = TokenDataset(path, label_column="row", rank=0, world_size=2)
    ds.set_epoch(4)
    loader = arrowloader.DataLoader(ds, batch_size=4, shuffle=True)
    for _ in range(2):  # pinned: the same epoch every pass, as DistributedSampler's
        assert [b["labels"].tolist() for b in loader] == _sampler_batches(
            ds, 0, 2, epoch=4, seed=0, drop_last=False
        )
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        ds.set_epoch(-1)
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=2, rank=0, seed=1)
    own = arrowloader.DataLoader(ds, batch_size=4, sampler=sampler)
    assert own.native
    expected = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=ds.collate)
    assert [b["labels"].tolist() for b in own] == [b["labels"].tolist() for b in expected]
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        TokenDataset(path, rank=0)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_torchrun_ranks_split_a_token_dataset(tmp_path: Path, world: int, drop_last: bool) -> None:
    """Real processes under torchrun (gloo, CPU), no explicit rank: each gets
    DistributedSampler's share, and together they see every row once per epoch (or the
    repeats DistributedSampler pads with)."""
    path = _rows_corpus(tmp_path / "rows.arrow", 29)
    script = Path(__file__).with_name("distributed_token.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}",
         f"--master_port={free_port()}", str(script), str(tmp_path), str(path),
         "1" if drop_last else "0"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(world)]
    probe = TokenDataset(path, label_column="row")
    for rank, output in enumerate(outputs):
        assert output["world_size"] == world
        for epoch, got in enumerate(output["epochs"]):
            want = _sampler_batches(probe, rank, world, epoch=epoch, seed=23, drop_last=drop_last)
            assert got == want
        assert output["len"] == len(output["epochs"][0])
    rows = [r for o in outputs for batch in o["epochs"][0] for r in batch]
    if drop_last:
        assert len(rows) == len(set(rows))
    else:
        assert set(rows) == set(range(29))
