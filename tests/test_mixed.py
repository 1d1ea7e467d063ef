"""MixedDataset and its native DataLoader path: the blending rule against a plain-Python
oracle, its proportions against the documented bounds, native batches against
``mixed[j]`` and the source datasets' own blocks, epochs of each source, ranks' shares of
global batches, and exact resumption (also far into the stream)."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import _C, MixedDataset, PackedDataset, TokenDataset, mixed
from conftest import random_documents, write_tokens
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

Batch = dict[str, Any]
ROW_KEYS = ("input_ids", "labels", "position_ids")

# --------------------------------------------------------------------------- blending


def blend_oracle(weights: Sequence[float], end: int) -> tuple[list[int], list[int], list[int]]:
    """The blending rule in plain Python over mixed samples ``[0, end)``: sample ``j`` goes
    to the dataset with the largest ``weight * (j + 1) - taken`` (ties: the lowest index).
    Returns (dataset of each sample, its index within that dataset, final counts)."""
    taken = [0] * len(weights)
    sources, indices = [], []
    for j in range(end):
        best, best_deficit = 0, weights[0] * (j + 1) - taken[0]
        for d in range(1, len(weights)):
            deficit = weights[d] * (j + 1) - taken[d]
            if deficit > best_deficit:
                best, best_deficit = d, deficit
        sources.append(best)
        indices.append(taken[best])
        taken[best] += 1
    return sources, indices, taken


def normalised(raw: Sequence[float]) -> np.ndarray:
    weights = np.asarray(raw, dtype=np.float64)
    return weights / weights.sum()


weight_lists = st.one_of(
    st.lists(st.floats(min_value=1e-4, max_value=1.0), min_size=2, max_size=5),
    st.lists(st.integers(1, 4).map(float), min_size=2, max_size=5),  # exact ties
)


@PROPERTY_SETTINGS
@given(raw=weight_lists, start=st.integers(0, 3000), count=st.integers(0, 1500))
@example(raw=[0.7, 0.3], start=3000, count=1500)
@example(raw=[1.0, 1.0, 1.0, 1.0, 1.0], start=2999, count=1001)
@example(raw=[0.8315, 0.1654, 0.00023, 0.00285], start=2500, count=1500)
def test_blend_matches_oracle(raw: list[float], start: int, count: int) -> None:
    weights = normalised(raw)
    sources, indices, taken = blend_oracle(weights.tolist(), start + count)

    got_sources, got_indices = _C.blend(weights, start, count)
    assert got_sources.dtype == got_indices.dtype == np.int64
    assert got_sources.tolist() == sources[start:]
    assert got_indices.tolist() == indices[start:]
    # blend(start, count) is the tail of blend(0, start + count).
    all_sources, all_indices = _C.blend(weights, 0, start + count)
    assert all_sources.tolist() == sources and all_indices.tolist() == indices
    assert _C.blend_counts(weights, start + count).tolist() == taken
    assert _C.blend_counts(weights, start).tolist() == np.bincount(
        np.asarray(sources[:start], dtype=np.int64), minlength=len(raw)
    ).tolist()
    # Continuing from the counts of the first `start` samples gives the same, in O(count).
    counts = _C.blend_counts(weights, start)
    cont_sources, cont_indices = _C.blend(weights, start, count, taken=counts)
    assert cont_sources.tolist() == sources[start:] and cont_indices.tolist() == indices[start:]
    assert counts.tolist() == taken


def test_blend_rejects_bad_arguments() -> None:
    weights = normalised([1.0, 2.0])
    with pytest.raises(ValueError):
        _C.blend(weights, -1, 3)
    with pytest.raises(ValueError):
        _C.blend(weights, 0, -3)
    with pytest.raises(ValueError):
        _C.blend_counts(weights, -1)
    with pytest.raises(ValueError):
        _C.blend(np.zeros(0), 0, 3)
    with pytest.raises(ValueError, match="sum to start"):
        _C.blend(weights, 5, 3, taken=np.array([1, 1], dtype=np.int64))
    with pytest.raises(ValueError):
        _C.blend(weights, 2, 3, taken=np.array([1, 1, 0], dtype=np.int64))
    with pytest.raises(ValueError, match="int64 array"):
        _C.blend(weights, 2, 3, taken=np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="negative count"):
        _C.blend(weights, 0, 3, taken=np.array([-1, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="writeable"):
        read_only = np.array([1, 1], dtype=np.int64)
        read_only.setflags(write=False)
        _C.blend(weights, 2, 3, taken=read_only)


def prefix_errors(weights: np.ndarray, samples: int) -> np.ndarray:
    """``taken_d(j) - weight_d * j`` for ``j`` in ``[0, samples]``: float64 [samples + 1, D]."""
    sources, _ = _C.blend(weights, 0, samples)
    taken = np.zeros((samples + 1, len(weights)))
    taken[np.arange(1, samples + 1), sources] = 1
    return np.cumsum(taken, axis=0) - np.arange(samples + 1)[:, None] * weights[None, :]


def assert_within_documented_bounds(weights: np.ndarray, samples: int) -> None:
    errors = prefix_errors(weights, samples)
    over, under = mixed.prefix_error_bounds(len(weights))
    tolerance = 1e-9
    assert errors.max() <= over + tolerance, (weights.tolist(), errors.max())
    assert -errors.min() <= under + tolerance, (weights.tolist(), errors.min())
    # Every window (a, b]: realised - weight * (b - a) = errors[b] - errors[a].
    worst_window = (errors.max(axis=0) - errors.min(axis=0)).max()
    assert worst_window <= mixed.window_error_bound(len(weights)) + tolerance
    if len(weights) <= 3:
        assert np.abs(errors).max() < 1  # within one sample of weight * j
    if len(weights) <= 4:
        assert worst_window < 2


def test_proportions_within_documented_bounds() -> None:
    rng = np.random.default_rng(7)
    for num_datasets in range(2, 6):
        for trial in range(120):
            # Mostly skewed weights (tiny ones next to large ones are the hard cases).
            raw = rng.random(num_datasets) ** rng.uniform(1, 8) + 1e-6
            assert_within_documented_bounds(normalised(raw), 3000 if trial % 10 else 12000)


@PROPERTY_SETTINGS
@given(raw=weight_lists)
def test_proportions_within_documented_bounds_hypothesis(raw: list[float]) -> None:
    assert_within_documented_bounds(normalised(raw), 2000)


def test_documented_bounds_are_needed() -> None:
    """The bounds grow with the number of datasets: four datasets can fall more than one
    sample behind weight * j, and five or six can be more than two samples off over a
    window."""
    four = normalised([0.8315263438570344, 0.16538782427795679, 0.00023354006991219007,
                       0.0028522917950967387])
    errors = prefix_errors(four, 5000)
    assert -errors.min() > 1
    assert_within_documented_bounds(four, 5000)
    five = normalised([0.8232535051512162, 0.003704241393887716, 0.00011806551650952641,
                       2.1893451070819756e-05, 0.17290229448731573])
    errors = prefix_errors(five, 20000)
    assert (errors.max(axis=0) - errors.min(axis=0)).max() > 2
    assert_within_documented_bounds(five, 20000)
    six = normalised([0.00049, 0.48825, 0.00224, 0.48688, 0.00011, 0.02203])
    errors = prefix_errors(six, 20000)
    assert (errors.max(axis=0) - errors.min(axis=0)).max() > 2
    assert_within_documented_bounds(six, 20000)
    assert mixed.prefix_error_bounds(2) == (0.5, 0.5)
    assert mixed.window_error_bound(3) == pytest.approx(1.5)


# --------------------------------------------------------------------------- corpora


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three tiny corpora of different sizes."""
    folder = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(20240611)
    sizes = {"web": 30, "code": 12, "books": 7}
    return {
        name: write_tokens(folder / f"{name}.arrow", random_documents(rng, n, max_tokens=14))
        for name, n in sizes.items()
    }


WEIGHTS = {"web": 0.5, "code": 0.3, "books": 0.2}
SEQ_LEN = 7
EOS = 1


def packed(path: Path, mode: str = "concat", **kwargs: Any) -> PackedDataset:
    kwargs.setdefault("seq_len", SEQ_LEN)
    return PackedDataset(path, eos_token_id=EOS, mode=mode, **kwargs)


def make_mixed(
    corpora: dict[str, Path],
    mode: str = "concat",
    weights: Optional[dict[str, float]] = None,
    seed: int = 3,
    **kwargs: Any,
) -> MixedDataset:
    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("rank", "world_size")}
    weights = WEIGHTS if weights is None else weights
    datasets = {name: packed(corpora[name], mode, **options) for name in weights}
    return MixedDataset(datasets, weights=weights, seed=seed, **kwargs)


def loader_for(ds: MixedDataset, batch_size: int, seed: Optional[int] = None, **kwargs: Any):
    loader = arrowloader.DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        generator=None if seed is None else torch.Generator().manual_seed(seed),
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


def expected_batch(ds: MixedDataset, samples: Sequence[int]) -> Batch:
    """What the native path must give for mixed samples ``samples``: ``ds[j]`` stacked by
    ``collate`` (which derives cu_seqlens and max_seqlen)."""
    return ds.collate([ds[j] for j in samples])


def assert_batch_equal(actual: Batch, expected: Batch, where: str = "") -> None:
    assert actual.keys() == expected.keys(), f"{where}: {sorted(actual)} != {sorted(expected)}"
    for key, want in expected.items():
        got = actual[key]
        if isinstance(want, torch.Tensor):
            assert got.dtype == want.dtype and got.shape == want.shape, f"{where} {key}"
            assert torch.equal(got, want), f"{where} {key}: {got.tolist()} != {want.tolist()}"
        else:
            assert got == want, f"{where} {key}: {got} != {want}"


def assert_batches_equal(actual: Sequence[Batch], expected: Sequence[Batch]) -> None:
    assert len(actual) == len(expected), f"{len(actual)} batches, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert_batch_equal(a, e, f"batch {k}")


def without_cu(batch: Batch) -> Batch:
    return {k: v for k, v in batch.items() if k in ROW_KEYS}


def concat_ranks(batches: Sequence[Batch]) -> Batch:
    return {k: torch.cat([b[k] for b in batches]) for k in ROW_KEYS}


def source_epoch_sizes(ds: MixedDataset, d: int, seed: int, samples: int) -> list[int]:
    """Blocks of dataset ``d``'s epochs (shuffled with the mixed seed ``seed``) until they
    hold ``samples`` samples, from its own plans."""
    source_seed = seed * len(ds.datasets) + d  # as MixedDataset documents it
    sizes: list[int] = []
    while sum(sizes) <= samples:
        sizes.append(ds.datasets[d].plan(len(sizes), source_seed).num_blocks)
    return sizes


def oracle_blocks(ds: MixedDataset, d: int, seed: int, samples: int) -> list[tuple[int, int]]:
    """(epoch, block) of dataset ``d``'s samples ``0 .. samples - 1``: its epochs one after
    another, each in its own shuffled block order."""
    source_seed = seed * len(ds.datasets) + d
    blocks: list[tuple[int, int]] = []
    for epoch, size in enumerate(source_epoch_sizes(ds, d, seed, samples)):
        order = ds.datasets[d].block_order(epoch, source_seed, size)
        blocks.extend((epoch, int(b)) for b in order)
    return blocks[:samples]


# --------------------------------------------------------------------------- contents

MODES = ("concat", "bestfit")
OPTIONS = (
    {},
    {"dtype": torch.int32, "return_cu_seqlens": False},
    {"return_position_ids": False, "mask_across_documents": True},
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", OPTIONS, ids=["default", "int32", "nopos"])
def test_items_are_the_sources_blocks(
    corpora: dict[str, Path], mode: str, options: dict[str, Any]
) -> None:
    """``mixed[j]`` is block ``locate(d, k)`` of source ``d`` for the oracle's (d, k), as
    the source dataset itself packs it (set to that epoch, with the source seed)."""
    options = dict(options)
    if mode == "bestfit":
        options.pop("mask_across_documents", None)
    ds = make_mixed(corpora, mode, seed=4, **options)
    weights = ds.weights.tolist()
    samples = 3 * len(ds)  # every source through a few epochs
    sources, indices, _ = blend_oracle(weights, samples)
    blocks = {d: oracle_blocks(ds, d, 4, samples) for d in range(len(weights))}
    own = [packed(corpora[name], mode, seed=4 * 3 + d, **options) for d, name in
           enumerate(ds.names)]
    assert ds.sources(0, samples)[0].tolist() == sources
    for j in range(samples):
        d, k = sources[j], indices[j]
        epoch, block = blocks[d][k]
        assert ds.locate(d, k) == (epoch, block)
        item = ds[j]
        expected = ds.datasets[d].assemble([block], epoch, seed=ds.source_seed(d))
        own[d].set_epoch(epoch)
        by_index = own[d][block]
        assert item.keys() == by_index.keys()
        for key in item:
            assert torch.equal(item[key], by_index[key]), f"sample {j} {key}"
            if key in expected:  # assemble() drops position_ids unless asked for
                assert torch.equal(item[key], expected[key][0]), f"sample {j} {key}"


@pytest.mark.parametrize("mode", MODES)
def test_each_source_cycles_through_its_epochs(corpora: dict[str, Path], mode: str) -> None:
    """Each source's samples are its epochs one after another, every block of an epoch
    exactly once, and each epoch's order differs."""
    ds = make_mixed(corpora, mode, seed=2)
    samples = 40 * len(ds)
    _, _, taken = blend_oracle(ds.weights.tolist(), samples)
    for d, count in enumerate(taken):
        sizes = source_epoch_sizes(ds, d, 2, count)
        assert len(sizes) >= 5, "the test should cover several epochs of every source"
        located = [ds.locate(d, k) for k in range(count)]
        start, orders = 0, set()
        for epoch, size in enumerate(sizes):
            part = located[start : start + size]
            assert all(e == epoch for e, _ in part)
            blocks = [b for _, b in part]
            if start + size <= count:  # a whole epoch
                assert sorted(blocks) == list(range(size)), f"source {d} epoch {epoch}"
                orders.add(tuple(blocks))
            else:
                assert len(set(blocks)) == len(blocks)
            start += size
        assert len(orders) > 1


@pytest.mark.parametrize("mode", MODES)
def test_epochs_consumed(corpora: dict[str, Path], mode: str) -> None:
    ds = make_mixed(corpora, mode, seed=5)
    for samples in (0, 1, 7, len(ds), 5 * len(ds) + 3, 23 * len(ds)):
        _, _, taken = blend_oracle(ds.weights.tolist(), samples)
        consumed = ds.epochs_consumed(samples)
        assert list(consumed) == ds.names
        for d, name in enumerate(ds.names):
            sizes = source_epoch_sizes(ds, d, 5, taken[d])
            k, expected = taken[d], 0.0
            for size in sizes:
                expected += min(1.0, k / size)
                k = max(0, k - size)
            assert consumed[name] == pytest.approx(expected, abs=1e-12), (samples, name)
    # With a generator seed the loader uses, bestfit epochs have other sizes.
    samples = 9 * len(ds)
    _, _, taken = blend_oracle(ds.weights.tolist(), samples)
    seeded = ds.epochs_consumed(samples, seed=11)
    for d, name in enumerate(ds.names):
        sizes = source_epoch_sizes(ds, d, 11, taken[d])
        whole = len(sizes) - 1
        assert seeded[name] == pytest.approx(whole + (taken[d] - sum(sizes[:-1])) / sizes[-1])


# --------------------------------------------------------------------------- native batches


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", OPTIONS[:2], ids=["default", "int32"])
@pytest.mark.parametrize("num_workers", [1, 3])
def test_native_batches_are_mixed_samples(
    corpora: dict[str, Path], mode: str, options: dict[str, Any], num_workers: int
) -> None:
    """Every pass continues the one stream of mixed samples: batch t holds samples
    [t * B, (t + 1) * B), each equal to mixed[j], cu_seqlens and max_seqlen included."""
    ds = make_mixed(corpora, mode, **options)
    batch_size = 4
    loader = loader_for(ds, batch_size, num_workers=num_workers)
    steps = len(ds) // batch_size
    assert len(loader) == steps
    batches = []
    for _ in range(3):
        it = iter(loader)
        assert len(it) == steps
        passed = list(it)
        assert len(passed) == steps
        batches.extend(passed)
        assert loader.state_dict()["samples_consumed"] == len(batches) * batch_size
    expected = [
        expected_batch(ds, range(t * batch_size, (t + 1) * batch_size))
        for t in range(len(batches))
    ]
    assert_batches_equal(batches, expected)


def test_generator_seed_shuffles_the_sources(corpora: dict[str, Path]) -> None:
    """A DataLoader generator's seed replaces the mixed seed."""
    ds = make_mixed(corpora, "bestfit", seed=3)
    batches = list(loader_for(ds, 3, seed=8))
    reseeded = make_mixed(corpora, "bestfit", seed=8)
    assert_batches_equal(batches, [expected_batch(reseeded, range(3 * t, 3 * t + 3))
                                   for t in range(len(batches))])
    assert not torch.equal(batches[0]["input_ids"], expected_batch(ds, range(3))["input_ids"])


def test_shuffle_false_is_refused(corpora: dict[str, Path]) -> None:
    loader = arrowloader.DataLoader(make_mixed(corpora), batch_size=2, shuffle=False)
    with pytest.raises(ValueError, match="shuffle=True"):
        iter(loader)


# --------------------------------------------------------------------------- distribution


def rank_loaders(corpora: dict[str, Path], mode: str, batch_size: int, world_size: int,
                 **kwargs: Any) -> list[Any]:
    return [
        loader_for(make_mixed(corpora, mode, rank=rank, world_size=world_size), batch_size,
                   **kwargs)
        for rank in range(world_size)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_ranks_share_the_global_batches(corpora: dict[str, Path], mode: str) -> None:
    """With world size W each rank gets its B-slice of the same global batches (B * W) as
    one process; slices are disjoint and together cover every global batch."""
    global_batch = 6
    single = loader_for(make_mixed(corpora, mode, rank=0, world_size=1), global_batch)
    reference = list(single) + list(single)
    for world_size in (1, 2, 3):
        batch_size = global_batch // world_size
        loaders = rank_loaders(corpora, mode, batch_size, world_size)
        assert [len(loader) for loader in loaders] == [len(single)] * world_size
        per_rank = [list(loader) + list(loader) for loader in loaders]
        assert [len(batches) for batches in per_rank] == [len(reference)] * world_size
        for step, want in enumerate(reference):
            parts = [batches[step] for batches in per_rank]
            for rank, part in enumerate(parts):
                begin = step * global_batch + rank * batch_size
                assert_batch_equal(
                    part, expected_batch(loaders[rank].dataset, range(begin, begin + batch_size))
                )
            assert_batch_equal(concat_ranks(parts), without_cu(want), f"W={world_size}")


# --------------------------------------------------------------------------- resumption


def passes(loader: Any, count: int) -> tuple[list[Batch], list[dict[str, Any]], list[int]]:
    """``count`` passes: the batches, the state before the first and after every batch, and
    the batches of each pass."""
    batches, states, lengths = [], [loader.state_dict()], []
    for _ in range(count):
        n = 0
        for batch in loader:
            batches.append(batch)
            states.append(loader.state_dict())
            n += 1
        lengths.append(n)
    return batches, states, lengths


@pytest.mark.parametrize("mode", MODES)
def test_resume_yields_exactly_the_continuing_batches(corpora: dict[str, Path], mode: str) -> None:
    """States after random batches (pass ends included), through torch.save, into fresh
    loaders with other thread counts: the rest of that pass, then the next ones."""
    batch_size = 4
    loader = loader_for(make_mixed(corpora, mode), batch_size, num_workers=2)
    batches, states, lengths = passes(loader, 3)
    steps = lengths[0]
    assert lengths == [steps] * 3
    rng = np.random.default_rng(1)
    cuts = sorted({0, steps - 1, steps, steps + 1, *rng.integers(0, 2 * steps, size=5).tolist()})
    for k in cuts:
        fresh = loader_for(make_mixed(corpora, mode), batch_size, num_workers=1 + k % 3)
        fresh.load_state_dict(roundtrip(states[k]))
        assert fresh.state_dict() == states[k]
        first = list(fresh)
        assert len(first) == steps - k % steps, f"cut {k}: the pass did not end in place"
        second = list(fresh)
        assert len(second) == steps
        assert_batches_equal(first + second, batches[k : k + len(first) + steps])
        assert fresh.state_dict() == states[k + len(first) + steps]


def advance(loader: Any, batches: int) -> None:
    """Takes ``batches`` batches from ``loader``, pass after pass, stopping mid-pass."""
    while batches:
        it = iter(loader)
        take = min(batches, len(it))
        for _ in range(take):
            next(it)
        batches -= take
        del it


@pytest.mark.parametrize("mode", MODES)
def test_resume_on_another_world_size(corpora: dict[str, Path], mode: str) -> None:
    """Stopped as 2 ranks x 3, resumed as 3 ranks x 2 and 1 x 6: the joined batches are
    the uninterrupted single-process ones, through the end of the pass and the next."""
    global_batch = 6
    single = loader_for(make_mixed(corpora, mode, rank=0, world_size=1), global_batch)
    reference, _, lengths = passes(single, 3)
    steps = lengths[0]
    for k in (1, steps - 1, steps, steps + 2):
        before = rank_loaders(corpora, mode, 3, 2)
        for loader in before:
            advance(loader, k)
        states = [roundtrip(loader.state_dict()) for loader in before]
        assert all(state == states[0] for state in states)
        assert states[0]["samples_consumed"] == k * global_batch
        for world_size in (3, 1):
            after = rank_loaders(
                corpora, mode, global_batch // world_size, world_size, num_workers=2
            )
            for loader in after:
                loader.load_state_dict(states[0])
            resumed = [list(loader) + list(loader) for loader in after]
            rest = steps - k % steps + steps
            assert [len(r) for r in resumed] == [rest] * world_size
            for step in range(rest):
                assert_batch_equal(
                    concat_ranks([r[step] for r in resumed]),
                    without_cu(reference[k + step]),
                    f"k={k} W={world_size} step {step}",
                )


def far_state(loader: Any, batches: int, source_epochs: bool) -> dict[str, Any]:
    """The loader's state, moved to after ``batches`` batches (a run that far would take
    hours here), with the "source_epochs" such a run would have saved, or none."""
    state = dict(loader.state_dict())
    state["samples_consumed"] = batches * state["global_batch_size"]
    state.pop("source_epochs", None)
    if source_epochs:
        ds = loader.dataset
        counts = _C.blend_counts(ds.weights, state["samples_consumed"])
        state["source_epochs"] = ds.source_epochs(counts)
    return state


@pytest.mark.parametrize(
    ("mode", "batches", "source_epochs"),
    [("concat", 1_000_000, True), ("concat", 1_000_000, False), ("bestfit", 1_000_000, True),
     ("bestfit", 20_000, False)],
)
def test_resume_far_into_the_stream(
    corpora: dict[str, Path], mode: str, batches: int, source_epochs: bool
) -> None:
    """At the 1,000,000th batch of a tiny mixed corpus every source is over 50,000 epochs
    in; a fresh loader starts there without replaying them (the time is printed). Without
    the saved "source_epochs" a bestfit state is still exact, but its epochs' sizes are
    packed again."""
    batch_size = 4
    ds = make_mixed(corpora, mode)
    state = roundtrip(far_state(loader_for(ds, batch_size), batches, source_epochs))
    fresh = loader_for(make_mixed(corpora, mode), batch_size)
    started = time.perf_counter()
    fresh.load_state_dict(state)
    it = iter(fresh)
    first = next(it)
    elapsed = time.perf_counter() - started
    start = batches * batch_size
    consumed = ds.epochs_consumed(start)
    print(f"\n{mode}: resumed at batch {batches:,} in {elapsed:.3f} s "
          f"({'with' if source_epochs else 'without'} source_epochs; epochs consumed "
          f"{ {name: round(e) for name, e in consumed.items()} })")
    assert_batch_equal(first, expected_batch(ds, range(start, start + batch_size)))
    second = next(it)
    following = range(start + batch_size, start + 2 * batch_size)
    assert_batch_equal(second, expected_batch(ds, following))
    assert fresh.state_dict()["samples_consumed"] == start + 2 * batch_size
    if batches == 1_000_000:
        assert min(consumed.values()) > 50_000


def test_resume_uses_the_saved_source_epochs(
    corpora: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bestfit state carries each source's epoch and its first sample: resuming packs
    only the epochs from there, not every epoch before (their sizes differ)."""
    batch_size = 4
    loader = loader_for(make_mixed(corpora, "bestfit"), batch_size)
    for _ in range(30):
        for _ in loader:
            pass
    state = roundtrip(loader.state_dict())
    assert min(epoch for epoch, _ in state["source_epochs"].values()) >= 5
    planned: list[tuple[int, int]] = []
    plan = PackedDataset.plan

    def counting_plan(self: PackedDataset, epoch: Optional[int] = None,
                      seed: Optional[int] = None) -> Any:
        planned.append((epoch, seed))
        return plan(self, epoch, seed)

    monkeypatch.setattr(PackedDataset, "plan", counting_plan)
    fresh = loader_for(make_mixed(corpora, "bestfit"), batch_size)
    fresh.load_state_dict(state)
    first = next(iter(fresh))
    start = state["samples_consumed"]
    monkeypatch.undo()
    assert_batch_equal(first, expected_batch(loader.dataset, range(start, start + batch_size)))
    mixed_epochs = {epoch for epoch, seed in planned if seed is not None}
    assert len(mixed_epochs) <= 2 * len(WEIGHTS), sorted(mixed_epochs)
    assert fresh.state_dict()["source_epochs"] == loader.dataset.source_epochs(
        _C.blend_counts(loader.dataset.weights, start + batch_size)
    )


def test_load_state_rejects_other_weights_corpora_or_seed(corpora: dict[str, Path]) -> None:
    loader = loader_for(make_mixed(corpora), 2)
    next(iter(loader))
    state = roundtrip(loader.state_dict())
    other_weights = loader_for(make_mixed(corpora, weights={"web": 1, "code": 1, "books": 1}), 2)
    with pytest.raises(ValueError, match="fingerprint"):
        other_weights.load_state_dict(state)
    swapped = MixedDataset(
        {"web": packed(corpora["code"]), "code": packed(corpora["web"]),
         "books": packed(corpora["books"])},
        weights=WEIGHTS, seed=3,
    )
    with pytest.raises(ValueError, match="fingerprint"):
        loader_for(swapped, 2).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint"):
        loader_for(make_mixed(corpora, "bestfit"), 2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        loader_for(make_mixed(corpora, seed=4), 2).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        loader_for(make_mixed(corpora), 2, seed=9).load_state_dict(state)
    for bad in ({"web": [0, 0]}, {**state["source_epochs"], "web": [0, 5]},
                {**state["source_epochs"], "web": [1, -1]}, [[0, 0]] * 3):
        with pytest.raises(ValueError, match="source_epochs"):
            loader_for(make_mixed(corpora), 2).load_state_dict({**state, "source_epochs": bad})
    loader_for(make_mixed(corpora), 2).load_state_dict(state)  # the state itself loads


# --------------------------------------------------------------------------- arguments


def test_bad_arguments(corpora: dict[str, Path]) -> None:
    web, code = packed(corpora["web"]), packed(corpora["code"])
    both = {"web": web, "code": code}
    with pytest.raises(ValueError, match="at least one"):
        MixedDataset({}, weights={})
    with pytest.raises(ValueError, match="weights name"):
        MixedDataset(both, weights={"web": 1.0, "books": 1.0})
    with pytest.raises(ValueError, match="weights name"):
        MixedDataset(both, weights={"web": 1.0})
    with pytest.raises(ValueError, match="weights name"):
        MixedDataset(both, weights={"web": 1.0, "code": 1.0, "books": 1.0})
    for bad in (0, 0.0, -1.0, math.nan, math.inf, "1", None):
        with pytest.raises(ValueError, match="positive number"):
            MixedDataset(both, weights={"web": 1.0, "code": bad})
    with pytest.raises(TypeError, match="PackedDataset"):
        MixedDataset({"web": web, "tokens": TokenDataset(corpora["code"])},
                     weights={"web": 1.0, "tokens": 1.0})
    with pytest.raises(TypeError, match="PackedDataset"):
        MixedDataset({"web": web, "list": [1, 2, 3]}, weights={"web": 1.0, "list": 1.0})
    with pytest.raises(ValueError, match="seq_len"):
        MixedDataset({"web": web, "code": packed(corpora["code"], seq_len=SEQ_LEN + 1)},
                     weights={"web": 1.0, "code": 1.0})
    with pytest.raises(ValueError, match="dtype"):
        MixedDataset({"web": web, "code": packed(corpora["code"], dtype=torch.int32)},
                     weights={"web": 1.0, "code": 1.0})
    with pytest.raises(ValueError, match="return_cu_seqlens"):
        MixedDataset({"web": web, "code": packed(corpora["code"], return_cu_seqlens=False)},
                     weights={"web": 1.0, "code": 1.0})
    with pytest.raises(ValueError, match="both rank and world_size"):
        MixedDataset(both, weights={"web": 1.0, "code": 1.0}, rank=0)
    with pytest.raises(ValueError, match="range"):
        MixedDataset(both, weights={"web": 1.0, "code": 1.0}, rank=2, world_size=2)


def test_weights_are_normalised(corpora: dict[str, Path]) -> None:
    ds = make_mixed(corpora, weights={"web": 5, "code": 3, "books": 2})
    assert ds.weights.tolist() == pytest.approx([0.5, 0.3, 0.2])
    assert ds.names == ["web", "code", "books"]
    assert len(ds) == sum(len(source) for source in ds.datasets)
