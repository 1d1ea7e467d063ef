"""The windowed shuffle of PackedDataset (shuffle_window_shards): a function of (seed,
epoch), exactly once across world sizes, resumable, and reading a bounded set of shards
at any point of an epoch. Oracles: reference.pack_concat over the documents read back
with pyarrow, and a plain-Python walk of the stream for which document each block reads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader.reference import pack_concat
from arrowloader.windowed_shuffle import (
    mean_source_distance,
    window_from_cache_limit,
    windowed_document_order,
)
from conftest import assert_batches_equal, pyarrow_rows, write_tokens

SEQ = 7
SHARDS = 6


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("windowed")
    rng = np.random.default_rng(11)
    for k in range(SHARDS):
        docs = [rng.integers(1, 500, size=int(rng.integers(1, 20))).tolist() for _ in range(9 + k)]
        write_tokens(folder / f"shard-{k}.arrow", docs)
    return folder


def dataset(folder: Path, window: int = 2, **kwargs: object) -> arrowloader.PackedDataset:
    return arrowloader.PackedDataset(str(folder), seq_len=SEQ, eos_token_id=0,
                                     shuffle_window_shards=window, **kwargs)


def rows_of(batches: list[dict]) -> list[tuple]:
    return [tuple(row.tolist()) for b in batches for row in b["input_ids"]]


def loader(ds: arrowloader.PackedDataset, batch_size: int = 2) -> arrowloader.DataLoader:
    return arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(5))


def test_each_window_reads_its_own_shards(shards: Path) -> None:
    ds = dataset(shards, window=2)
    rows = [f.num_rows for f in ds.corpus.files]
    shard_of = np.repeat(np.arange(SHARDS), rows)
    for epoch in (0, 1):
        order = ds.document_order(epoch, seed=5)
        assert sorted(order.tolist()) == list(range(sum(rows)))  # a permutation
        again, starts = windowed_document_order(rows, 2, 5, epoch)
        assert np.array_equal(order, again)
        windows = [set(shard_of[order[a:b]].tolist()) for a, b in zip(starts, starts[1:])]
        assert all(len(w) == 2 for w in windows)
        assert set().union(*windows) == set(range(SHARDS))
    # Another epoch, another shard order.
    assert not np.array_equal(ds.document_order(0, 5), ds.document_order(1, 5))


def test_an_epoch_yields_every_block_once_and_reads_two_windows_at_most(shards: Path) -> None:
    """Exactly once: the epoch's rows are the rows of concat packing of the documents in
    the epoch's order (pyarrow's reading of the files, packed by the reference). Bounded:
    block i of the epoch reads only documents of its window and the next."""
    ds = dataset(shards, window=2)
    docs = [doc for path in sorted(shards.iterdir()) for doc in pyarrow_rows(path)]
    got = rows_of(list(loader(ds, batch_size=1)))
    order = ds.document_order(0, seed=5)
    expected = [tuple(r["input_ids"]) for r in pack_concat([docs[i] for i in order], SEQ, 0)]
    assert sorted(got) == sorted(expected) and len(got) == len(expected)

    rows = [f.num_rows for f in ds.corpus.files]
    shard_of = np.repeat(np.arange(SHARDS), rows)
    _, starts = windowed_document_order(rows, 2, 5, 0)
    window_of_doc = np.zeros(sum(rows), dtype=np.int64)
    for w, (a, b) in enumerate(zip(starts, starts[1:])):
        window_of_doc[order[a:b]] = w
    # Which documents each block covers, walking the stream in plain Python.
    covers: list[set[int]] = []
    current: set[int] = set()
    room = SEQ + 1
    for d in order:
        left = len(docs[d]) + 1
        while left:
            take = min(room, left)
            current.add(int(d))
            left -= take
            room -= take
            if room == 0:
                covers.append(current)
                current, room = set(), SEQ + 1
    blocks = ds.block_order(0, 5, len(covers))
    position_window = []
    for b in blocks:
        first = min(covers[b], key=lambda d: int(np.where(order == d)[0][0]))
        position_window.append(window_of_doc[first])
    assert position_window == sorted(position_window)  # windows in turn
    for i, b in enumerate(blocks):
        windows = {int(window_of_doc[d]) for d in covers[b]}
        assert windows <= {position_window[i], position_window[i] + 1}
        assert {int(shard_of[d]) for d in covers[b]} <= set(
            shard_of[order[starts[position_window[i]]:starts[min(len(starts) - 1,
                                                                 position_window[i] + 2)]]])


@pytest.mark.parametrize("world", [2, 3])
def test_exactly_once_across_world_sizes(shards: Path, world: int) -> None:
    """The ranks' shares of every global batch, joined, are the one-process run's
    batches of batch_size x world."""
    single = list(loader(dataset(shards), batch_size=2 * world))
    shares = [list(loader(dataset(shards, rank=r, world_size=world), batch_size=2))
              for r in range(world)]
    joined = []
    for k in range(len(single)):
        rows = [row for r in range(world) for row in shares[r][k]["input_ids"]]
        joined.append({"input_ids": torch.stack(rows)})
    assert_batches_equal(joined, [{"input_ids": b["input_ids"]} for b in single])


def test_resumes_mid_epoch(shards: Path) -> None:
    ds = dataset(shards)
    uninterrupted = loader(ds)
    full = [b for _ in range(2) for b in uninterrupted]
    first = loader(ds)
    served = []
    for batch in first:
        served.append(batch)
        if len(served) == 3:
            break
    state = first.state_dict()
    resumed = loader(dataset(shards))
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert_batches_equal(served + rest[: len(full) - 3], full)


def test_window_options_are_checked(shards: Path) -> None:
    with pytest.raises(ValueError, match="mode='concat'"):
        dataset(shards, mode="bestfit")
    with pytest.raises(ValueError, match="int >= 1"):
        dataset(shards, window=0)
    with pytest.raises(ValueError, match="from cache_limit"):
        dataset(shards, window="auto")
    assert window_from_cache_limit(10_000, [1000, 2000]) == 2
    assert window_from_cache_limit(100, [1000]) == 1
    auto = dataset(shards, window="auto", cache_limit="1GB")
    assert auto.shuffle_window_shards >= SHARDS


def test_a_window_of_every_shard_reads_the_whole_corpus(shards: Path) -> None:
    """Distances between consecutive blocks' sources: larger with larger windows."""
    small, large = dataset(shards, window=1), dataset(shards, window=SHARDS)
    rows = [f.num_rows for f in small.corpus.files]
    lengths = np.diff(np.asarray(small.corpus.tokens.token_offsets()))
    figures = []
    for ds in (small, large):
        order = ds.document_order(0, 5)
        blocks = ds.block_order(0, 5, ds.plan(0, 5).num_blocks)
        figures.append(mean_source_distance(lengths, order, SEQ + 1, blocks,
                                            np.repeat(np.arange(SHARDS), rows)))
    assert figures[0]["mean_distance"] < figures[1]["mean_distance"]
    assert figures[0]["other_shard"] < figures[1]["other_shard"]


# -- TokenDataset: WindowedShuffleBatchSampler ------------------------------------------


def token_loader(ds: arrowloader.TokenDataset, sampler: object, native: bool = True) -> object:
    if native:
        return arrowloader.DataLoader(ds, batch_sampler=sampler)
    return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=ds.collate)


def test_token_batches_are_torch_s_over_the_same_sampler(shards: Path) -> None:
    ds = arrowloader.TokenDataset(str(shards))
    native = list(token_loader(ds, arrowloader.WindowedShuffleBatchSampler(ds, 4, 2, seed=3)))
    torch_s = list(token_loader(ds, arrowloader.WindowedShuffleBatchSampler(ds, 4, 2, seed=3),
                                native=False))
    assert_batches_equal(native, torch_s)
    # Each batch reads at most two windows' shards (a batch may straddle two windows).
    rows = [f.num_rows for f in ds.corpus.files]
    shard_of = np.repeat(np.arange(SHARDS), rows)
    order, starts = windowed_document_order(rows, 2, 3, 0)
    sampler = arrowloader.WindowedShuffleBatchSampler(ds, 4, 2, seed=3)
    for batch in sampler:
        assert len({int(shard_of[i]) for i in batch}) <= 4
        positions = [int(np.where(order == i)[0][0]) for i in batch]
        windows = set(np.searchsorted(starts, positions, side="right").tolist())
        assert len(windows) <= 2


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_token_windows_exactly_once_across_world_sizes(
    shards: Path, world: int, drop_last: bool
) -> None:
    ds = arrowloader.TokenDataset(str(shards))
    n = len(ds)
    seen: list[int] = []
    counts = set()
    for rank in range(world):
        sampler = arrowloader.WindowedShuffleBatchSampler(
            ds, 4, 2, seed=1, drop_last=drop_last, rank=rank, world_size=world)
        batches = list(sampler)
        counts.add(len(batches))
        assert len(batches) == len(sampler)
        seen.extend(i for b in batches for i in b)
    assert len(counts) == 1  # every rank plays as many batches
    total = n // 4 if drop_last else -(-n // 4)
    if drop_last:
        assert len(seen) == len(set(seen)) == (total - total % world) * 4
    else:
        # Every document once, and the epoch's first batches again to fill the last round.
        pad = (-total) % world
        order, _ = windowed_document_order([f.num_rows for f in ds.corpus.files], 2, 1, 0)
        again = Counter(order[: pad * 4].tolist())
        assert Counter(seen) == Counter(range(n)) + again


def test_token_windows_resume_mid_epoch(shards: Path) -> None:
    ds = arrowloader.TokenDataset(str(shards))

    def make() -> arrowloader.DataLoader:
        return token_loader(ds, arrowloader.WindowedShuffleBatchSampler(ds, 4, 2, seed=3))

    uninterrupted = make()
    full = list(uninterrupted) + list(uninterrupted)
    first = make()
    served = []
    for batch in first:
        served.append(batch)
        if len(served) == 5:
            break
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed) + list(resumed)
    assert_batches_equal(served + rest[: len(full) - 5], full)


def test_token_window_options_are_checked(shards: Path) -> None:
    ds = arrowloader.TokenDataset(str(shards))
    with pytest.raises(TypeError, match=r"needs an arrowloader\.TokenDataset"):
        arrowloader.WindowedShuffleBatchSampler([1, 2, 3], 2, 1)
    with pytest.raises(ValueError, match="int >= 1"):
        arrowloader.WindowedShuffleBatchSampler(ds, 2, 0)
    with pytest.raises(ValueError, match="cache_limit"):
        arrowloader.WindowedShuffleBatchSampler(ds, 2, "auto")
