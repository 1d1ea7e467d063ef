"""Length-grouped and token-budget batch samplers (arrowloader.batch_plans) and their
native plans.

Oracles: Hugging Face's own ``LengthGroupedSampler`` (given the same permutation), the
plain-Python plans of ``arrowloader.reference_plans`` (with a plain-Python replica of the
documented SplitMix64 draws), torch's own DataLoader iterating the same batch sampler, the
shapes of the batches themselves, and an uninterrupted run for resumption.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import (
    _C,
    DataLoader,
    LengthGroupedBatchSampler,
    TokenBudgetBatchSampler,
    TokenDataset,
)
from arrowloader import reference_plans as ref
from conftest import free_port, write_ipc

MASK = 2**64 - 1


class PythonSeededRandom:
    """The documented generator of ``csrc/permutation.h`` in plain Python: SplitMix64
    seeded from (seed, stream), Lemire's unbiased bounded draws, Fisher-Yates from the
    last entry down."""

    def __init__(self, seed: int, stream: int) -> None:
        self.state = seed ^ ((stream * 0xD1B54A32D192ED03) & MASK)
        self.state = self.next() ^ self.next()

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        product = self.next() * bound
        if product & MASK < bound:
            threshold = (2**64 - bound) % bound
            while product & MASK < threshold:
                product = self.next() * bound
        return product >> 64

    def shuffle(self, values: list[int]) -> None:
        for i in range(len(values) - 1, 0, -1):
            j = self.below(i + 1)
            values[i], values[j] = values[j], values[i]


def python_permutation(seed: int, stream: int, n: int) -> list[int]:
    values = list(range(n))
    PythonSeededRandom(seed, stream).shuffle(values)
    return values


def reference_length_grouped(
    lengths: list[int], batch_size: int, mult: int, *, seed: int, epoch: int, shuffle: bool,
    drop_last: bool, rank: int = 0, world_size: int = 1,
) -> list[list[int]]:
    n = len(lengths)
    permutation = python_permutation(seed, 2 * epoch, n) if shuffle else list(range(n))
    batches = ref.length_grouped(lengths, batch_size, mult * batch_size, permutation, drop_last)
    return ref.deal_batches(batches, rank, world_size, drop_last)


def reference_token_budget(
    lengths: list[int], max_tokens: int, *, max_rows: Optional[int] = None, multiple: int = 1,
    seed: int, epoch: int, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1,
) -> list[list[int]]:
    ties = PythonSeededRandom(seed, 2 * epoch)
    unshuffled = ref.token_budget(lengths, max_tokens, max_rows, multiple)
    order = python_permutation(seed, 2 * epoch + 1, len(unshuffled)) if shuffle else None
    batches = ref.token_budget(
        lengths, max_tokens, max_rows, multiple, ties.shuffle if shuffle else None, order
    )
    return ref.deal_batches(batches, rank, world_size, drop_last)


def plan_batches(sampler: Any, epoch: int) -> list[list[int]]:
    plan = sampler.plan(epoch)
    return [plan.batch(k).tolist() for k in range(len(plan))]


def lognormal_lengths(rng: np.random.Generator, n: int, cap: int = 200) -> list[int]:
    """Lengths shaped like the reference corpus's (many ties), capped."""
    raw = rng.lognormal(mean=np.log(40), sigma=1.0, size=n)
    return [int(x) for x in np.minimum(np.floor(raw), cap)]


@pytest.fixture
def row_corpus(tmp_path: Path) -> Path:
    """223 documents of lognormal lengths (some empty), the document's index as
    ``row``, in three files of several record batches."""
    rng = np.random.default_rng(7)
    lengths = lognormal_lengths(rng, 223, cap=90)
    lengths[5] = lengths[17] = 0
    folder = tmp_path / "rows"
    at = 0
    for k, count in enumerate((100, 0, 123)):
        docs = [[1 + (at + i) % 50] * lengths[at + i] for i in range(count)]
        bounds = [(0, count // 3), (count // 3, count)] if count else [(0, 0)]
        write_ipc(
            folder / f"part-{k}.arrow",
            {
                "input_ids": pa.array(docs, type=pa.list_(pa.int32())),
                "row": pa.array(range(at, at + count), type=pa.int64()),
            },
            bounds=bounds,
        )
        at += count
    return folder


def rows_of(batches: list[dict[str, torch.Tensor]]) -> list[list[int]]:
    return [batch["labels"].tolist() for batch in batches]


# --- length-grouped: Hugging Face's semantics ---------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size", "seed", "epoch"),
    [(1, 4, 0, 0), (37, 4, 3, 1), (500, 8, 11, 0), (3000, 16, 2**64 - 1, 5), (10_000, 32, 9, 2)],
)
def test_length_grouped_is_hugging_face_given_the_same_permutation(
    monkeypatch: pytest.MonkeyPatch, n: int, batch_size: int, seed: int, epoch: int
) -> None:
    """``LengthGroupedSampler`` over the same lengths, its ``torch.randperm`` answering
    with the epoch's permutation: the same indices, in the same order (ties, the default
    megabatch multiplier and the longest-first swap included)."""
    trainer_pt_utils = pytest.importorskip("transformers.trainer_pt_utils")
    lengths = lognormal_lengths(np.random.default_rng(n), n)
    permutation = _C.seeded_permutation(seed, 2 * epoch, n)
    assert permutation.tolist() == python_permutation(seed, 2 * epoch, n)
    drawn = []

    def randperm(size: int, generator: Any = None, **kwargs: Any) -> torch.Tensor:
        drawn.append(size)
        return torch.from_numpy(permutation.copy())

    monkeypatch.setattr(torch, "randperm", randperm)
    expected = list(trainer_pt_utils.LengthGroupedSampler(batch_size, lengths=lengths))
    monkeypatch.undo()
    assert drawn == [n]

    sampler = LengthGroupedBatchSampler(None, batch_size, lengths=lengths, seed=seed)
    batches = plan_batches(sampler, epoch)
    assert [r for batch in batches for r in batch] == expected
    assert all(len(b) == batch_size for b in batches[:-1])
    assert len(sampler) == len(batches) == -(-n // batch_size)
    assert lengths[batches[0][0]] == max(lengths)


def test_length_grouped_drop_last_is_torch_batch_sampler_over_hugging_face(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer_pt_utils = pytest.importorskip("transformers.trainer_pt_utils")
    lengths = lognormal_lengths(np.random.default_rng(1), 203)
    permutation = _C.seeded_permutation(4, 2 * 3, 203)
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: torch.from_numpy(permutation.copy()))
    hf = trainer_pt_utils.LengthGroupedSampler(10, lengths=lengths)
    expected = list(torch.utils.data.BatchSampler(hf, 10, drop_last=True))
    monkeypatch.undo()
    sampler = LengthGroupedBatchSampler(None, 10, lengths=lengths, seed=4, drop_last=True)
    assert plan_batches(sampler, 3) == expected
    assert len(sampler) == 20


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [True, False])
def test_length_grouped_matches_the_python_reference_on_every_rank(
    world_size: int, drop_last: bool, shuffle: bool
) -> None:
    lengths = lognormal_lengths(np.random.default_rng(world_size), 171)
    for rank in range(world_size):
        sampler = LengthGroupedBatchSampler(
            None, 6, lengths=lengths, seed=21, shuffle=shuffle, drop_last=drop_last,
            megabatch_mult=3, rank=rank, world_size=world_size,
        )
        for epoch in (0, 1):
            expected = reference_length_grouped(
                lengths, 6, 3, seed=21, epoch=epoch, shuffle=shuffle, drop_last=drop_last,
                rank=rank, world_size=world_size,
            )
            assert plan_batches(sampler, epoch) == expected, (rank, epoch)
            assert len(sampler) == len(expected)


def test_length_grouped_sorts_lengths_too_spread_for_a_counting_sort() -> None:
    """Megabatches whose lengths span far more than their size take the comparison sort;
    the result is the same stable order."""
    rng = np.random.default_rng(3)
    lengths = [int(x) for x in rng.integers(0, 10**12, size=300)]
    lengths[7] = lengths[8] = lengths[100] = 5 * 10**11  # ties
    sampler = LengthGroupedBatchSampler(None, 5, lengths=lengths, seed=1, megabatch_mult=4)
    expected = reference_length_grouped(
        lengths, 5, 4, seed=1, epoch=2, shuffle=True, drop_last=False
    )
    assert plan_batches(sampler, 2) == expected
    # Lengths too large to travel inside the shuffled entries, but clustered.
    near = [2**24 + int(x) for x in rng.integers(0, 50, size=300)]
    sampler = LengthGroupedBatchSampler(None, 5, lengths=near, seed=1, megabatch_mult=4)
    expected = reference_length_grouped(near, 5, 4, seed=1, epoch=2, shuffle=True, drop_last=False)
    assert plan_batches(sampler, 2) == expected


# --- token budget --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "max_rows", "multiple"),
    [(256, None, 1), (300, 7, 1), (512, None, 8), (200, 3, 16)],
)
@pytest.mark.parametrize("shuffle", [True, False])
def test_token_budget_matches_the_python_reference(
    max_tokens: int, max_rows: Optional[int], multiple: int, shuffle: bool
) -> None:
    lengths = lognormal_lengths(np.random.default_rng(max_tokens), 400, cap=190)
    lengths[:5] = [0, 0, 1, 190, 190]
    sampler = TokenBudgetBatchSampler(
        None, max_tokens, lengths=lengths, max_rows=max_rows, pad_to_multiple_of=multiple,
        shuffle=shuffle, seed=77,
    )
    for epoch in (0, 3):
        expected = reference_token_budget(
            lengths, max_tokens, max_rows=max_rows, multiple=multiple, seed=77, epoch=epoch,
            shuffle=shuffle, drop_last=False,
        )
        got = plan_batches(sampler, epoch)
        assert got == expected, epoch
        assert len(sampler) == len(got)
        for batch in got:
            width = ref.budget_width(max(lengths[r] for r in batch), multiple)
            assert len(batch) * width <= max_tokens
            assert max_rows is None or len(batch) <= max_rows
        assert sorted(r for batch in got for r in batch) == list(range(400))


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
def test_token_budget_matches_the_python_reference_on_every_rank(
    world_size: int, drop_last: bool
) -> None:
    lengths = lognormal_lengths(np.random.default_rng(5), 260)
    for rank in range(world_size):
        sampler = TokenBudgetBatchSampler(
            None, 600, lengths=lengths, seed=3, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )
        expected = reference_token_budget(
            lengths, 600, seed=3, epoch=1, shuffle=True, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )
        assert plan_batches(sampler, 1) == expected
        assert len(sampler) == len(expected)


def test_token_budget_sorts_keys_too_spread_for_a_counting_sort() -> None:
    """Padded lengths spanning far more than the rows take the comparison sort: the same
    batches as the reference."""
    lengths = [3, 10**7, 5, 10**7, 2 * 10**7, 4, 10**7 + 1, 0]
    sampler = TokenBudgetBatchSampler(None, 4 * 10**7, lengths=lengths, seed=2)
    expected = reference_token_budget(
        lengths, 4 * 10**7, seed=2, epoch=0, shuffle=True, drop_last=False
    )
    assert plan_batches(sampler, 0) == expected


def test_token_budget_batches_change_with_the_epoch_and_seed_only() -> None:
    lengths = lognormal_lengths(np.random.default_rng(8), 500)
    sampler = TokenBudgetBatchSampler(None, 1024, lengths=lengths, seed=5)
    again = TokenBudgetBatchSampler(None, 1024, lengths=lengths, seed=5)
    other = TokenBudgetBatchSampler(None, 1024, lengths=lengths, seed=6)
    assert plan_batches(sampler, 0) == plan_batches(again, 0)
    assert plan_batches(sampler, 0) != plan_batches(sampler, 1)
    assert plan_batches(sampler, 0) != plan_batches(other, 0)
    # The sorted lengths are the same each epoch, so the batch count is too.
    assert len(plan_batches(sampler, 0)) == len(plan_batches(sampler, 1)) == len(sampler)
    fixed = TokenBudgetBatchSampler(None, 1024, lengths=lengths, shuffle=False)
    assert plan_batches(fixed, 0) == plan_batches(fixed, 4)


# --- exactly once across ranks -------------------------------------------------------------


def global_batches(make: Any, world_size: int, epoch: int) -> list[list[list[int]]]:
    """Every rank's batches of ``epoch``, for samplers ``make(rank, world_size)``."""
    return [plan_batches(make(rank, world_size), epoch) for rank in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("kind", ["grouped", "budget"])
def test_every_document_once_across_ranks(world_size: int, drop_last: bool, kind: str) -> None:
    """All ranks together play every document exactly once, apart from what the
    documented remainder rule changes: without drop_last, exactly the documents of the
    first batches of the epoch, played again to fill the last round; with it, exactly
    those of the last ``B % world_size`` batches are left out. Every rank plays the same
    number of batches."""
    lengths = lognormal_lengths(np.random.default_rng(world_size + 10), 149)
    whole = (
        LengthGroupedBatchSampler(None, 4, lengths=lengths, seed=9, drop_last=drop_last)
        if kind == "grouped"
        else TokenBudgetBatchSampler(None, 300, lengths=lengths, seed=9)
    )

    def make(rank: int, world: int) -> Any:
        if kind == "grouped":
            return LengthGroupedBatchSampler(
                None, 4, lengths=lengths, seed=9, drop_last=drop_last, rank=rank,
                world_size=world,
            )
        return TokenBudgetBatchSampler(
            None, 300, lengths=lengths, seed=9, drop_last=drop_last, rank=rank, world_size=world
        )

    epoch_batches = plan_batches(whole, 2)  # the global plan, in play order
    total = len(epoch_batches)
    shares = global_batches(make, world_size, 2)
    counts = {len(share) for share in shares}
    assert len(counts) == 1
    seen = Counter(r for share in shares for batch in share for r in batch)
    base = Counter(r for batch in epoch_batches for r in batch)
    if drop_last:
        dropped = epoch_batches[total - total % world_size :]
        expected = base - Counter(r for batch in dropped for r in batch)
        assert counts == {total // world_size}
    else:
        extra = (-total) % world_size
        expected = base + Counter(r for batch in epoch_batches[:extra] for r in batch)
        assert counts == {-(-total // world_size)}
    assert seen == expected
    if kind == "budget" or not drop_last:
        assert set(base) == set(range(149))


def test_ranks_of_one_step_take_consecutive_batches_of_the_plan() -> None:
    """Step ``s`` of rank ``r`` is the global plan's batch ``s * world_size + r``: the
    ranks of one step get batches of one megabatch, of similar lengths."""
    lengths = lognormal_lengths(np.random.default_rng(0), 400)
    whole = plan_batches(LengthGroupedBatchSampler(None, 5, lengths=lengths, seed=1), 0)
    shares = [
        plan_batches(
            LengthGroupedBatchSampler(None, 5, lengths=lengths, seed=1, rank=r, world_size=4), 0
        )
        for r in range(4)
    ]
    for step in range(len(shares[0])):
        assert [shares[r][step] for r in range(4)] == whole[4 * step : 4 * step + 4]


# --- through the DataLoader ----------------------------------------------------------------


def epochs(loader: DataLoader, count: int = 2) -> list[list[dict[str, torch.Tensor]]]:
    return [list(loader) for _ in range(count)]


@pytest.mark.parametrize("kind", ["grouped", "budget"])
def test_native_batches_are_torch_dataloaders_over_the_same_sampler(
    row_corpus: Path, kind: str
) -> None:
    """The native path plays the plan: the same tensors, epoch after epoch, as torch's
    own DataLoader iterating an identical batch sampler with the dataset's collate."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=60, pad_to_multiple_of=4)

    def make() -> Any:
        if kind == "grouped":
            return LengthGroupedBatchSampler(ds, 8, seed=5)
        return TokenBudgetBatchSampler(ds, 256, seed=5)

    native = DataLoader(ds, batch_sampler=make(), num_workers=2)
    assert native.native
    torch_loader = torch.utils.data.DataLoader(ds, batch_sampler=make(), collate_fn=ds.collate)
    got, want = epochs(native), epochs(torch_loader)
    assert len(native) == len(torch_loader) == len(got[0]) == len(got[1])
    for a, b in zip(got, want):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key
    assert rows_of(got[0]) != rows_of(got[1])  # a new order each epoch


def test_token_budget_batches_hold_at_most_max_tokens_padded(row_corpus: Path) -> None:
    """The padded tensors themselves: rows x width <= max_tokens, the width a multiple
    of pad_to_multiple_of; and every document once per epoch."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=70, pad_to_multiple_of=8)
    loader = DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, 200, max_rows=9))
    batches = list(loader)
    for batch in batches:
        rows, width = batch["input_ids"].shape
        assert rows * max(width, 1) <= 200 and rows <= 9 and width % 8 == 0
    assert sorted(r for b in rows_of(batches) for r in b) == list(range(223))
    assert len(loader) == len(batches)


def test_token_budget_counts_the_wider_of_two_multiples(row_corpus: Path) -> None:
    """A sampler asked for a multiple of the dataset's budgets for the wider padding a
    later collator would add."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=70, pad_to_multiple_of=4)
    sampler = TokenBudgetBatchSampler(ds, 256, pad_to_multiple_of=32)
    for batch in DataLoader(ds, batch_sampler=sampler):
        rows, width = batch["input_ids"].shape
        assert rows * ref.budget_width(width, 32) <= 256


def test_token_budget_with_padding_to_max_length(row_corpus: Path) -> None:
    """Every batch is max_length wide, so every batch but the last holds max_tokens //
    max_length documents."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=50, padding="max_length")
    batches = list(DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, 230, seed=1)))
    sizes = Counter(b["input_ids"].shape for b in batches)
    assert sizes == {(4, 50): 223 // 4, (223 % 4, 50): 1}
    # Lengths given explicitly cannot make the budget forget that every batch is 50 wide.
    given = TokenBudgetBatchSampler(ds, 230, seed=1, lengths=np.ones(223, dtype=np.int64))
    assert {len(b) for b in plan_batches(given, 0)} == {4, 223 % 4}


def test_group_by_length_loader_is_the_length_grouped_sampler(row_corpus: Path) -> None:
    """``DataLoader(..., shuffle=True, group_by_length=True)`` plays a
    LengthGroupedBatchSampler seeded with the generator's initial seed; and its batches
    pad far less than random ones."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=60)
    grouped = DataLoader(
        ds, batch_size=8, shuffle=True, group_by_length=True,
        generator=torch.Generator().manual_seed(12),
    )
    assert grouped.native and isinstance(grouped.batch_sampler, LengthGroupedBatchSampler)
    explicit = DataLoader(ds, batch_sampler=LengthGroupedBatchSampler(ds, 8, seed=12))
    assert [rows_of(e) for e in epochs(grouped)] == [rows_of(e) for e in epochs(explicit)]
    assert len(grouped) == 28
    dropping = DataLoader(ds, batch_size=8, drop_last=True, group_by_length=True)
    assert len(dropping) == 27 and len(list(dropping)) == 27
    assert not dropping.batch_sampler.shuffle  # shuffle=None: megabatches in order

    def padding(loader: DataLoader) -> float:
        real = padded = 0
        for batch in loader:
            real += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()
        return 1 - real / padded

    random = DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(12))
    budget = DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, 256, seed=12))
    assert padding(budget) < padding(grouped) < padding(random) / 2


def test_planned_samplers_serve_any_dataset_given_lengths() -> None:
    """Plain torch samplers: torch's DataLoader over a list with them yields the plan's
    batches."""
    data = [torch.full((n,), i) for i, n in enumerate([3, 9, 1, 4, 4, 12, 0, 7])]
    lengths = [len(x) for x in data]
    sampler = TokenBudgetBatchSampler(data, 16, lengths=lengths, seed=3)
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=list)
    got = [[int(x[0]) if len(x) else 6 for x in batch] for batch in loader]
    assert got == plan_batches(sampler, 0)
    assert [[int(x[0]) if len(x) else 6 for x in b] for b in loader] == plan_batches(sampler, 1)
    sampler.set_epoch(0)
    assert [[int(x[0]) if len(x) else 6 for x in b] for b in loader] == plan_batches(sampler, 0)


def test_empty_dataset_plans_no_batches(tmp_path: Path) -> None:
    path = write_ipc(
        tmp_path / "empty.arrow", {"input_ids": pa.array([], type=pa.list_(pa.int32()))},
        bounds=[(0, 0)],
    )
    ds = TokenDataset(path)
    for sampler in (LengthGroupedBatchSampler(ds, 4), TokenBudgetBatchSampler(ds, 64)):
        loader = DataLoader(ds, batch_sampler=sampler)
        assert len(loader) == 0 and list(loader) == []


def test_samplers_take_the_datasets_ranks(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row", rank=1, world_size=3)
    sampler = TokenBudgetBatchSampler(ds, 300)
    assert (sampler.rank, sampler.world_size) == (1, 3)
    grouped = DataLoader(ds, batch_size=4, group_by_length=True)
    assert (grouped.batch_sampler.rank, grouped.batch_sampler.world_size) == (1, 3)
    assert len(grouped) == -(-56 // 3)  # 56 global batches dealt to 3 ranks
    explicit = TokenBudgetBatchSampler(ds, 300, rank=0, world_size=1)
    assert explicit.world_size == 1


# --- resumption -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["grouped", "budget"])
def test_a_state_after_any_batch_resumes_with_exactly_the_next_batches(
    row_corpus: Path, kind: str
) -> None:
    """Against one uninterrupted run of two epochs: a state taken after batch k (of
    either epoch, the last included), loaded into a fresh loader with another thread
    count, continues with batch k + 1 onwards."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=60)

    def loader(threads: int) -> DataLoader:
        sampler = (
            LengthGroupedBatchSampler(ds, 16, seed=3)
            if kind == "grouped"
            else TokenBudgetBatchSampler(ds, 512, seed=3)
        )
        return DataLoader(ds, batch_sampler=sampler, num_workers=threads)

    whole = loader(1)
    run = [rows_of(e) for e in epochs(whole)]
    flat = [(e, b) for e in range(2) for b in range(len(run[e]))]
    first = loader(2)
    states = [first.state_dict()]
    for _ in range(2):
        for _batch in first:
            states.append(first.state_dict())
    for taken, state in enumerate(states):
        resumed = loader(3)
        resumed.load_state_dict(state)
        rest = rows_of(list(resumed))
        if taken < len(flat):
            epoch, batch = flat[taken]
            assert state["epoch"] == epoch and state["batches"] == batch
            assert rest == run[epoch][batch:]
        else:  # after the last batch: the next epoch, whole
            assert state["epoch"] == 2 and state["batches"] == 0
            assert len(rest) == len(run[0])


def test_set_epoch_pins_the_plan_and_a_state_records_it(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row")
    sampler = TokenBudgetBatchSampler(ds, 400, seed=2)
    loader = DataLoader(ds, batch_sampler=sampler)
    sampler.set_epoch(5)
    assert rows_of(list(loader)) == plan_batches(sampler, 5) == rows_of(list(loader))
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    assert state["epoch"] == 5 and state["batches"] == 1
    fresh_sampler = TokenBudgetBatchSampler(ds, 400, seed=2)
    fresh = DataLoader(ds, batch_sampler=fresh_sampler)
    fresh.load_state_dict(state)
    assert rows_of(list(fresh)) == plan_batches(sampler, 5)[1:]
    assert fresh.state_dict()["epoch"] == 6  # counting on from the state's epoch


def test_resuming_a_rank_continues_its_share(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row", rank=2, world_size=3)
    whole = DataLoader(ds, batch_size=4, group_by_length=True, shuffle=True)
    run = rows_of(list(whole))
    first = DataLoader(ds, batch_size=4, group_by_length=True, shuffle=True)
    iterator = iter(first)
    for _ in range(7):
        next(iterator)
    state = first.state_dict()
    assert state["plan"]["world_size"] == 3
    resumed = DataLoader(ds, batch_size=4, group_by_length=True, shuffle=True, num_workers=3)
    resumed.load_state_dict(state)
    assert rows_of(list(resumed)) == run[7:]


def test_a_state_of_another_plan_is_refused(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row")
    loader = DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, 400, seed=2))
    next(iter(loader))
    state = loader.state_dict()
    for other, named in (
        (TokenBudgetBatchSampler(ds, 500, seed=2), "max_tokens"),
        (TokenBudgetBatchSampler(ds, 400, seed=3), "seed"),
        # One batch of one rank's is not a whole round of 2 ranks (test_dcp.py resumes
        # plans on other world sizes where it is).
        (TokenBudgetBatchSampler(ds, 400, seed=2, rank=0, world_size=2), "2 ranks cannot share"),
        (LengthGroupedBatchSampler(ds, 4, seed=2), "kind"),
        (TokenBudgetBatchSampler(ds, 400, seed=2, lengths=np.ones(223, dtype=int)), "lengths"),
    ):
        with pytest.raises(ValueError, match=named):
            DataLoader(ds, batch_sampler=other).load_state_dict(state)
    same = DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, 400, seed=2))
    for broken, message in (
        ({**state, "batches": 10**6}, "beyond"),
        ({**state, "epoch": -1}, "epoch"),
        ({k: v for k, v in state.items() if k != "plan"}, "plan"),
        ({**state, "plan": "x"}, "plan"),
        ({**state, "format": "other"}, "format"),
    ):
        with pytest.raises(ValueError, match=message):
            same.load_state_dict(broken)
    # A state of torch's stock sampler is not one of a plan, nor the reverse.
    stock = DataLoader(ds, batch_size=4, shuffle=True)
    with pytest.raises(ValueError):
        stock.load_state_dict(state)
    with pytest.raises(ValueError):
        same.load_state_dict(stock.state_dict())


# --- errors ---------------------------------------------------------------------------------


def test_a_document_longer_than_the_budget_is_refused_by_name(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row")
    with pytest.raises(ValueError) as raised:
        TokenBudgetBatchSampler(ds, 40)
    message = str(raised.value)
    assert "max_tokens=40" in message and "part-" in message and "row" in message
    assert f"Raise max_tokens to at least {int(ds.kept_lengths().max())}" in message
    first = int(np.flatnonzero(ds.kept_lengths() > 40)[0])
    assert f"document {first} ({ds.describe_row(first)})" in message
    # Truncation makes it fit.
    TokenBudgetBatchSampler(TokenDataset(row_corpus, label_column="row", max_length=40), 40)
    padded = TokenDataset(row_corpus, max_length=30, padding="max_length")
    with pytest.raises(ValueError, match="padding='max_length' pads every document to 30"):
        TokenBudgetBatchSampler(padded, 29)
    with pytest.raises(ValueError, match="document 2 does not fit"):
        TokenBudgetBatchSampler(None, 10, lengths=[1, 2, 11, 3])
    with pytest.raises(ValueError, match="16 padded"):
        TokenBudgetBatchSampler(None, 10, lengths=[9], pad_to_multiple_of=16)


def test_bad_arguments_name_the_argument(row_corpus: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row", pad_to_multiple_of=8)
    cases = [
        (lambda: TokenBudgetBatchSampler(ds, 0), ValueError, "max_tokens"),
        (lambda: TokenBudgetBatchSampler(ds, 2.5), TypeError, "max_tokens"),
        (lambda: TokenBudgetBatchSampler(ds, 512, max_rows=0), ValueError, "max_rows"),
        (lambda: TokenBudgetBatchSampler(ds, 512, pad_to_multiple_of=12), ValueError, "multiple"),
        (lambda: TokenBudgetBatchSampler(ds, 512, seed=-1), ValueError, "seed"),
        (lambda: TokenBudgetBatchSampler(ds, 512, shuffle="yes"), TypeError, "shuffle"),
        (lambda: TokenBudgetBatchSampler(ds, 512, rank=3, world_size=3), ValueError, "rank"),
        (lambda: TokenBudgetBatchSampler(ds, 512, rank=0), ValueError, "both"),
        (lambda: LengthGroupedBatchSampler(ds, 0), ValueError, "batch_size"),
        (lambda: LengthGroupedBatchSampler(ds, 4, megabatch_mult=0), ValueError, "megabatch"),
        (lambda: LengthGroupedBatchSampler(ds, 4, lengths=[1, 2]), ValueError, "223 samples"),
        (lambda: LengthGroupedBatchSampler(None, 4, lengths=[1, -2]), ValueError, r"lengths\[1\]"),
        (lambda: LengthGroupedBatchSampler(None, 4, lengths=[[1]]), ValueError, "1-D"),
        (lambda: LengthGroupedBatchSampler(None, 4, lengths=[0.5]), ValueError, "integers"),
        (lambda: LengthGroupedBatchSampler([1, 2], 4), TypeError, "lengths="),
        (lambda: LengthGroupedBatchSampler(ds, 4).set_epoch(-1), ValueError, "epoch"),
        (lambda: LengthGroupedBatchSampler(ds, 4).plan(True), ValueError, "epoch"),
        (lambda: DataLoader(ds, batch_size=None, group_by_length=True), ValueError, "batch_size"),
        (
            lambda: DataLoader(ds, batch_sampler=[[0]], group_by_length=True),
            ValueError, "batch_sampler",
        ),
        (
            lambda: DataLoader(ds, batch_size=2, sampler=[0, 1], group_by_length=True),
            ValueError, "sampler",
        ),
    ]
    for make, kind, message in cases:
        with pytest.raises(kind, match=message):
            make()


def test_a_sampler_over_another_dataset_is_refused(row_corpus: Path, tmp_path: Path) -> None:
    ds = TokenDataset(row_corpus, label_column="row")
    other = write_ipc(
        tmp_path / "small.arrow", {"input_ids": pa.array([[1], [2, 3]], type=pa.list_(pa.int32()))},
        bounds=[(0, 2)],
    )
    small = TokenDataset(other)
    loader = DataLoader(small, batch_sampler=TokenBudgetBatchSampler(ds, 400))
    with pytest.raises(ValueError, match="plans 223 documents, the dataset has 2"):
        list(loader)


def test_native_plan_functions_check_their_arguments() -> None:
    lengths = np.array([3, 1, 2], dtype=np.int64)
    cases = [
        (lambda: _C.plan_length_grouped(lengths, 0, 2, True, False, 0, 0, 0, 1), "batch_size"),
        (lambda: _C.plan_length_grouped(lengths, 2, 0, True, False, 0, 0, 0, 1), "megabatch"),
        (lambda: _C.plan_length_grouped([1, -1], 2, 2, True, False, 0, 0, 0, 1), "row 1"),
        (lambda: _C.plan_length_grouped(lengths, 2, 2, True, False, 0, 0, 2, 2), "rank 2"),
        (lambda: _C.plan_token_budget(lengths, 0, 0, 1, True, False, 0, 0, 0, 1), "max_tokens"),
        (lambda: _C.plan_token_budget(lengths, 9, -1, 1, True, False, 0, 0, 0, 1), "max_rows"),
        (lambda: _C.plan_token_budget(lengths, 9, 0, 0, True, False, 0, 0, 0, 1), "multiple"),
        (lambda: _C.plan_token_budget(lengths, 2, 0, 1, True, False, 0, 0, 0, 1), "row 0"),
        (lambda: _C.plan_token_budget(lengths, 9, 0, 1, True, False, 0, 0, 0, 0), "world_size"),
        (lambda: _C.token_budget_batch_count([4, -3], 9, 0, 1), "row 1"),
        (lambda: _C.rank_batch_count(5, -1, 2, False), "rank -1"),
        (lambda: _C.length_grouped_batch_count(5, 0, False), "batch_size"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    assert [_C.rank_batch_count(t, 0, 3, d) for t in (0, 1, 6, 7) for d in (False, True)] == [
        0, 0, 1, 0, 2, 2, 3, 2,
    ]


def test_batch_widths_and_kept_lengths(row_corpus: Path) -> None:
    """The assembler's widths of a plan's spans are those of the batches it pads; kept
    lengths are pyarrow's lengths cut at max_length."""
    ds = TokenDataset(row_corpus, label_column="row", max_length=33, pad_to_multiple_of=5)
    table_lengths = [
        len(row) for part in sorted(row_corpus.glob("*.arrow"))
        for row in pa.ipc.open_file(str(part)).read_all().column("input_ids").to_pylist()
    ]
    assert ds.kept_lengths().tolist() == [min(n, 33) for n in table_lengths]
    rows = np.arange(223, dtype=np.int64)
    widths = ds._assembler.batch_widths(rows, [0, 10, 10], [10, 50, 10])
    assert widths.tolist() == [ds._assembler.width(rows[0:10]), ds._assembler.width(rows[10:50]),
                               ds.padded_width(0)]
    with pytest.raises(ValueError, match="batch 1 spans"):
        ds._assembler.batch_widths(rows, [0, 5], [3, 300])
    with pytest.raises(ValueError, match="same length"):
        ds._assembler.batch_widths(rows, [0], [3, 4])
    assert "part-2.arrow" in ds.describe_row(150) and "row 50" in ds.describe_row(150)
    with pytest.raises(IndexError):
        ds.describe_row(223)


# --- across processes -----------------------------------------------------------------------


def test_torchrun_ranks_play_equal_shares_of_one_plan(row_corpus: Path, tmp_path: Path) -> None:
    """Two real processes under torchrun (gloo, CPU), no explicit rank: each plays its
    share of the one global token-budget plan, the same number of batches, and together
    every document once per epoch (or the documented repeats)."""
    script = Path(__file__).with_name("distributed_plans.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", str(script), str(tmp_path), str(row_corpus)],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    probe = TokenDataset(row_corpus, label_column="row", max_length=64)
    for rank, output in enumerate(outputs):
        sampler = TokenBudgetBatchSampler(probe, 512, seed=23, rank=rank, world_size=2)
        assert output["epochs"] == [plan_batches(sampler, e) for e in range(2)]
        assert output["len"] == len(sampler) == len(output["epochs"][0])
    whole = plan_batches(TokenBudgetBatchSampler(probe, 512, seed=23), 0)
    played = Counter(r for o in outputs for b in o["epochs"][0] for r in b)
    repeated = Counter(r for b in whole[: len(whole) % 2] for r in b)
    assert played == Counter(range(223)) + repeated

