"""arrowloader.DataLoader against torch's own DataLoader (``collate_fn=ds.collate``) given
the same sampler or generator; native threads and their shutdown."""

from __future__ import annotations

import contextlib
import gc
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any, Optional

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import LoaderClosedError, TokenDataset
from conftest import (
    WrittenCorpus,
    assert_batches_equal,
    native_threads,
    pyarrow_rows,
    wait_for_native_threads,
    write_corpus,
    write_tokens,
)
from torch.utils.data import RandomSampler, Sampler, TensorDataset


@pytest.fixture(scope="module")
def module_corpus(tmp_path_factory: pytest.TempPathFactory) -> WrittenCorpus:
    return write_corpus(tmp_path_factory.mktemp("loader"), np.random.default_rng(7))


@pytest.fixture(scope="module")
def ds(module_corpus: WrittenCorpus) -> TokenDataset:
    """37 documents over 4 files; truncation, left padding and labels make batches
    distinct enough that any reordering shows."""
    return TokenDataset(
        module_corpus.paths, label_column="label", max_length=16, padding_side="left",
        pad_token_id=3,
    )


def native(ds: Any, **kwargs: Any) -> list[dict[str, torch.Tensor]]:
    loader = arrowloader.DataLoader(ds, **kwargs)
    assert loader.native
    with expect_empty_epoch_warning(ds, kwargs):
        return list(loader)


def expect_empty_epoch_warning(ds: Any, kwargs: dict[str, Any]) -> Any:
    """pytest.warns where drop_last drops every sample of an epoch (the loader says so,
    see test_epochs.py; torch's yields the same nothing silently), else nothing."""
    size = kwargs.get("batch_size", 1)
    if kwargs.get("drop_last") and "sampler" not in kwargs and size and 0 < len(ds) < size:
        return pytest.warns(UserWarning, match="yields no batch")
    return contextlib.nullcontext()


def reference(ds: TokenDataset, **kwargs: Any) -> list[dict[str, torch.Tensor]]:
    """torch's own DataLoader with the dataset's collate."""
    return list(torch.utils.data.DataLoader(ds, collate_fn=ds.collate, **kwargs))


def seeded(seed: int = 1234) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows_of(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    """The label of every row served; labels are unique per document here."""
    return [int(x) for batch in batches for x in batch["labels"]]


@pytest.fixture(scope="module")
def indexed(module_corpus: WrittenCorpus) -> TokenDataset:
    """The same corpus with each document's row number recoverable from its batch."""
    return TokenDataset(module_corpus.paths, max_length=16)


@pytest.mark.parametrize("batch_size", [1, 4, 5, 37, 64])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shuffle_with_generator(ds: TokenDataset, batch_size: int, drop_last: bool) -> None:
    kwargs = {"batch_size": batch_size, "shuffle": True, "drop_last": drop_last}
    g_native, g_torch = seeded(), seeded()
    got = native(ds, generator=g_native, **kwargs)
    want = reference(ds, generator=g_torch, **kwargs)
    assert_batches_equal(got, want)
    # Both consumed the generators identically.
    assert torch.equal(g_native.get_state(), g_torch.get_state())
    if batch_size < len(ds):
        assert_batches_differ(got, reference(ds, generator=seeded(99), **kwargs))


def assert_batches_differ(
    a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]]
) -> None:
    """Guards the equality tests: another seed really gives other batches."""
    with pytest.raises(AssertionError):
        assert_batches_equal(a, b)


def test_shuffle_with_global_seed(ds: TokenDataset) -> None:
    torch.manual_seed(11)
    got = native(ds, batch_size=6, shuffle=True)
    after_native = torch.random.get_rng_state()
    torch.manual_seed(11)
    want = reference(ds, batch_size=6, shuffle=True)
    assert_batches_equal(got, want)
    assert torch.equal(torch.random.get_rng_state(), after_native)
    torch.manual_seed(12)
    assert_batches_differ(got, reference(ds, batch_size=6, shuffle=True))


@pytest.mark.parametrize("batch_size", [1, 5, 36, 37, 40])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sequential(ds: TokenDataset, batch_size: int, drop_last: bool) -> None:
    kwargs = {"batch_size": batch_size, "drop_last": drop_last}
    g_native, g_torch = seeded(), seeded()
    got = native(ds, generator=g_native, **kwargs)
    assert_batches_equal(got, reference(ds, generator=g_torch, **kwargs))
    # Even without shuffling, torch draws a base seed from the generator; so must we.
    assert torch.equal(g_native.get_state(), g_torch.get_state())
    assert not torch.equal(g_native.get_state(), seeded().get_state())
    expected_rows = len(ds) - (len(ds) % batch_size if drop_last else 0)
    assert rows_of(got) == rows_of(reference(ds, batch_size=len(ds)))[:expected_rows]


@pytest.mark.parametrize("num_samples", [5, 32, 70])
@pytest.mark.parametrize("replacement", [True, False])
def test_random_sampler(ds: TokenDataset, num_samples: int, replacement: bool) -> None:
    def sampler() -> RandomSampler:
        return RandomSampler(
            ds, replacement=replacement, num_samples=num_samples, generator=seeded(5)
        )

    got = native(ds, batch_size=4, sampler=sampler())
    assert_batches_equal(got, reference(ds, batch_size=4, sampler=sampler()))
    assert sum(len(b["input_ids"]) for b in got) == num_samples


def test_own_random_sampler_with_loader_generator(ds: TokenDataset) -> None:
    """The sampler draws from the global RNG, the base seed from the loader's generator."""
    torch.manual_seed(5)
    got = native(ds, batch_size=7, sampler=RandomSampler(ds), generator=seeded(1))
    torch.manual_seed(5)
    want = reference(ds, batch_size=7, sampler=RandomSampler(ds), generator=seeded(1))
    assert_batches_equal(got, want)


class EvensThenOdds(Sampler[int]):
    """A custom sampler: even rows, then odd rows backwards."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        yield from range(0, self.n, 2)
        yield from (i for i in range(self.n - 1, -1, -1) if i % 2)

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("drop_last", [False, True])
def test_custom_sampler(ds: TokenDataset, drop_last: bool) -> None:
    kwargs = {"batch_size": 5, "drop_last": drop_last, "sampler": EvensThenOdds(len(ds))}
    got = native(ds, **kwargs)
    assert_batches_equal(got, reference(ds, **kwargs))
    assert len(arrowloader.DataLoader(ds, **kwargs)) == len(
        torch.utils.data.DataLoader(ds, **kwargs)
    )


def test_custom_batch_sampler(ds: TokenDataset) -> None:
    batches = [[0], [36, 1, 35], [5, 5, 5], [10, 20, 30, 31, 32, 33], [], [2], [17, 3]]
    got = native(ds, batch_sampler=batches)
    assert_batches_equal(got, reference(ds, batch_sampler=batches))
    assert [len(b["input_ids"]) for b in got] == [len(b) for b in batches]


def test_several_epochs_of_one_loader(ds: TokenDataset) -> None:
    ours = arrowloader.DataLoader(ds, batch_size=8, shuffle=True, generator=seeded(3))
    theirs = torch.utils.data.DataLoader(
        ds, batch_size=8, shuffle=True, generator=seeded(3), collate_fn=ds.collate
    )
    epochs = []
    for _ in range(3):
        got, want = list(ours), list(theirs)
        assert_batches_equal(got, want)
        epochs.append(rows_of(got))
    assert epochs[0] != epochs[1] != epochs[2]
    assert all(sorted(epoch) == sorted(epochs[0]) for epoch in epochs)  # each one full


@pytest.mark.parametrize(
    ("num_workers", "prefetch_factor"),
    # torch accepts prefetch_factor only with num_workers > 0.
    [(0, None), (1, None), (1, 1), (1, 4), (3, None), (3, 1), (3, 4)],
)
def test_threads_and_prefetch_do_not_change_batches(
    ds: TokenDataset, num_workers: int, prefetch_factor: Optional[int]
) -> None:
    kwargs = {"batch_size": 3, "shuffle": True, "drop_last": False}
    got = native(
        ds, num_workers=num_workers, prefetch_factor=prefetch_factor, generator=seeded(8), **kwargs
    )
    assert_batches_equal(got, reference(ds, generator=seeded(8), **kwargs))


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_torch_worker_processes_give_the_native_batches(ds: TokenDataset, context: str) -> None:
    kwargs = {"batch_size": 5, "shuffle": True}
    want = reference(
        ds, num_workers=2, multiprocessing_context=context, generator=seeded(21), **kwargs
    )
    assert_batches_equal(native(ds, num_workers=2, generator=seeded(21), **kwargs), want)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 1},
        {"batch_size": 5},
        {"batch_size": 5, "drop_last": True},
        {"batch_size": 37, "drop_last": True},
        {"batch_size": 38, "drop_last": True},
        {"batch_size": 4, "sampler": RandomSampler(range(37), replacement=True, num_samples=9)},
        {"batch_sampler": [[1, 2], [3]]},
    ],
    ids=str,
)
def test_len_matches_torch(ds: TokenDataset, kwargs: dict[str, Any]) -> None:
    ours = arrowloader.DataLoader(ds, **kwargs)
    theirs = torch.utils.data.DataLoader(ds, collate_fn=ds.collate, **kwargs)
    with expect_empty_epoch_warning(ds, kwargs):
        assert len(ours) == len(theirs) == len(list(ours))
    with expect_empty_epoch_warning(ds, kwargs):
        assert len(iter(ours)) == len(ours)


def test_collate_fn_of_the_dataset_keeps_the_native_path(ds: TokenDataset) -> None:
    loader = arrowloader.DataLoader(ds, batch_size=4, collate_fn=ds.collate)
    assert loader.native
    assert_batches_equal(list(loader), reference(ds, batch_size=4))


def test_custom_collate_fn_takes_torchs_path(ds: TokenDataset) -> None:
    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = ds.collate(items)
        batch["n"] = torch.tensor(len(items))
        return batch

    loader = arrowloader.DataLoader(ds, batch_size=6, shuffle=True, collate_fn=collate,
                                    generator=seeded(4))
    assert not loader.native
    want = list(torch.utils.data.DataLoader(ds, batch_size=6, shuffle=True, collate_fn=collate,
                                            generator=seeded(4)))
    assert_batches_equal(list(loader), want)


def test_other_datasets_take_torchs_path() -> None:
    data = TensorDataset(torch.arange(50).reshape(25, 2), torch.arange(25) % 3)
    kwargs = {"batch_size": 4, "shuffle": True, "drop_last": True}
    loader = arrowloader.DataLoader(data, generator=seeded(6), **kwargs)
    assert not loader.native
    got = list(loader)
    want = list(torch.utils.data.DataLoader(data, generator=seeded(6), **kwargs))
    assert len(got) == len(want) == 6
    for (x, y), (wx, wy) in zip(got, want):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    assert type(iter(loader)) is type(iter(torch.utils.data.DataLoader(data, **kwargs)))


def test_batch_size_none_takes_torchs_path(ds: TokenDataset) -> None:
    loader = arrowloader.DataLoader(ds, batch_size=None, shuffle=True, generator=seeded(2))
    assert not loader.native
    got = list(loader)
    want = list(torch.utils.data.DataLoader(ds, batch_size=None, shuffle=True, generator=seeded(2)))
    assert len(got) == len(want) == len(ds)
    assert_batches_equal(got, want)


def test_persistent_workers_over_epochs(ds: TokenDataset) -> None:
    """torch's persistent workers draw no new base seed after the first epoch, so later
    epochs' orders differ from non-persistent ones; the native path must follow."""
    kwargs = {"batch_size": 6, "shuffle": True, "num_workers": 2, "persistent_workers": True}
    g_native, g_torch = seeded(9), seeded(9)
    ours = arrowloader.DataLoader(ds, generator=g_native, **kwargs)
    theirs = torch.utils.data.DataLoader(
        ds, generator=g_torch, collate_fn=ds.collate, multiprocessing_context="fork", **kwargs
    )
    for _ in range(3):
        assert_batches_equal(list(ours), list(theirs))
        assert torch.equal(g_native.get_state(), g_torch.get_state())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 2, "shuffle": True, "sampler": [0, 1]},
        {"batch_size": 2, "batch_sampler": [[0, 1]]},
        {"batch_size": 1, "batch_sampler": [[0, 1]], "drop_last": True},
        {"batch_size": 2, "prefetch_factor": 2},
        {"batch_size": 2, "num_workers": -1},
        {"batch_size": 2, "timeout": -1},
        {"batch_size": None, "drop_last": True},
    ],
    ids=str,
)
def test_bad_arguments_fail_as_in_torch(ds: TokenDataset, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as theirs:
        torch.utils.data.DataLoader(ds, **kwargs)
    with pytest.raises(ValueError) as ours:
        arrowloader.DataLoader(ds, **kwargs)
    assert str(ours.value) == str(theirs.value)


def test_default_thread_count(indexed: TokenDataset) -> None:
    expected = arrowloader.native.default_num_threads()
    assert 1 <= expected <= arrowloader.native.MAX_DEFAULT_THREADS
    it = iter(arrowloader.DataLoader(indexed, batch_size=2))
    next(it)
    assert len(native_threads()) == expected
    it.close()


def test_timeout_does_not_fire_on_a_healthy_corpus(ds: TokenDataset) -> None:
    got = native(ds, batch_size=4, timeout=5, num_workers=2, shuffle=True, generator=seeded())
    assert_batches_equal(got, reference(ds, batch_size=4, shuffle=True, generator=seeded()))


def test_pin_memory_without_cuda_warns_and_gives_the_same_batches(ds: TokenDataset) -> None:
    if torch.cuda.is_available():
        pytest.skip("checks the CPU-only fallback")
    with pytest.warns(UserWarning, match="pin_memory"):
        got = native(ds, batch_size=4, pin_memory=True)
    assert_batches_equal(got, reference(ds, batch_size=4))


# --- shutdown ------------------------------------------------------------------------------


@pytest.fixture
def no_threads_before() -> Iterator[None]:
    """Every test below starts and must end with no native loader threads."""
    assert wait_for_native_threads(0) == 0, native_threads()
    yield
    assert wait_for_native_threads(0) == 0, native_threads()


@pytest.mark.usefixtures("no_threads_before")
def test_break_ends_the_threads(indexed: TokenDataset) -> None:
    loader = arrowloader.DataLoader(indexed, batch_size=2, num_workers=2)
    for k, _ in enumerate(loader):
        assert len(native_threads()) == 2
        if k == 3:
            break
    assert wait_for_native_threads(0) == 0


@pytest.mark.usefixtures("no_threads_before")
def test_del_of_an_iterator_mid_epoch_ends_the_threads(indexed: TokenDataset) -> None:
    it = iter(arrowloader.DataLoader(indexed, batch_size=2, num_workers=3))
    next(it)
    assert len(native_threads()) == 3
    del it
    assert wait_for_native_threads(0) == 0


@pytest.mark.usefixtures("no_threads_before")
def test_exception_in_the_loop_body_ends_the_threads(indexed: TokenDataset) -> None:
    loader = arrowloader.DataLoader(indexed, batch_size=2, num_workers=2)

    def train() -> None:
        for k, _ in enumerate(loader):
            if k == 2:
                raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        train()
    assert wait_for_native_threads(0) == 0


@pytest.mark.usefixtures("no_threads_before")
def test_exhaustion_ends_the_threads_while_the_iterator_lives(indexed: TokenDataset) -> None:
    it = iter(arrowloader.DataLoader(indexed, batch_size=5, num_workers=2))
    assert len(list(it)) == 8
    assert wait_for_native_threads(0) == 0
    with pytest.raises(StopIteration):
        next(it)  # after exhaustion: stops cleanly, again


@pytest.mark.usefixtures("no_threads_before")
def test_close_and_context_manager(indexed: TokenDataset) -> None:
    loader = arrowloader.DataLoader(indexed, batch_size=5, num_workers=2)
    it = iter(loader)
    next(it)
    it.close()
    assert wait_for_native_threads(0) == 0
    with pytest.raises(LoaderClosedError):
        next(it)
    it.close()  # idempotent

    with iter(loader) as it:
        first = next(it)
    assert wait_for_native_threads(0) == 0
    with pytest.raises(LoaderClosedError):
        next(it)
    assert torch.equal(first["input_ids"], next(iter(loader))["input_ids"])


@pytest.mark.usefixtures("no_threads_before")
def test_many_iterators_in_a_row_leave_nothing_behind(indexed: TokenDataset) -> None:
    loader = arrowloader.DataLoader(indexed, batch_size=3, num_workers=2, shuffle=True)
    for epoch in range(20):
        it = iter(loader)
        for _ in range(epoch % 4):
            next(it)
    del it
    assert wait_for_native_threads(0) == 0


def test_iterator_outlives_its_loader_and_dataset(module_corpus: WrittenCorpus) -> None:
    """The iterator keeps the columns and their mappings alive on its own."""
    ds = TokenDataset(module_corpus.paths, label_column="label")
    want = reference(ds, batch_size=4)
    it = iter(arrowloader.DataLoader(ds, batch_size=4, num_workers=2, prefetch_factor=1))
    first = next(it)
    del ds
    gc.collect()
    assert_batches_equal([first, *it], want)


@pytest.mark.parametrize("keep", ["global", "cycle", "local"])
def test_interpreter_exit_with_a_live_iterator(module_corpus: WrittenCorpus, keep: str) -> None:
    script = textwrap.dedent(
        f"""
        import arrowloader
        ds = arrowloader.TokenDataset({[str(p) for p in module_corpus.paths]!r})
        loader = arrowloader.DataLoader(ds, batch_size=2, num_workers=2)
        it = iter(loader)
        batch = next(it)
        if {keep!r} == "cycle":
            it.self_reference = it  # only the cyclic collector (or exit) can end it
        if {keep!r} == "local":
            def run():
                inner = iter(loader)
                next(inner)
                raise SystemExit(0)
            run()
        print("served", batch["input_ids"].shape[0])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    if keep != "local":
        assert "served 2" in result.stdout


def test_a_batch_not_ready_in_time_raises_loader_timeout(indexed: TokenDataset) -> None:
    """The ticket behind the loader's ``timeout``: a batch queued behind a long one on a
    single thread is not done within 0 s."""
    from arrowloader import _C

    assembler = indexed._assembler
    pool = _C.ThreadPool(1)
    try:
        big_rows = np.tile(np.arange(len(indexed), dtype=np.int64), 20_000)
        width = assembler.width(big_rows)
        big = np.empty((len(big_rows), width), dtype=np.int64)
        small = np.empty((1, assembler.width(np.zeros(1, np.int64))), dtype=np.int64)
        slow = assembler.submit(pool, big_rows, big)
        queued = assembler.submit(pool, np.zeros(1, np.int64), small)
        with pytest.raises(arrowloader.LoaderTimeoutError, match="timed out after 0 seconds"):
            queued.result(0.0)
        slow.result()
        queued.result()
    finally:
        pool.shutdown()


def test_native_path_does_not_warn_about_worker_processes(indexed: TokenDataset) -> None:
    """It warns about threads instead (when they outnumber the cores), never with torch's
    words about worker processes, which it does not start."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = arrowloader.DataLoader(indexed, batch_size=4, num_workers=8)
    assert not [w for w in caught if "worker processes" in str(w.message)]
    expected = 1 if arrowloader.native.usable_cores() < 8 else 0
    assert len([w for w in caught if "native threads" in str(w.message)]) == expected
    assert len(list(loader)) == len(loader)


@pytest.mark.usefixtures("no_threads_before")
def test_forked_child_does_not_touch_the_parents_threads(indexed: TokenDataset) -> None:
    """After a fork the child has none of the parent's threads: using the parent's
    iterator there raises instead of hanging, dropping it is safe, and a new loader in
    the child works."""
    import os

    loader = arrowloader.DataLoader(indexed, batch_size=4, num_workers=2)
    it = iter(loader)
    first = next(it)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 0
        try:
            try:
                for _ in it:
                    pass
                code = 1  # the parent's iterator must not run here
            except RuntimeError as exc:
                code = 0 if "parent process" in str(exc) else 2
            del it
            gc.collect()
            if code == 0 and not torch.equal(next(iter(loader))["input_ids"], first["input_ids"]):
                code = 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert torch.equal(next(iter(loader))["input_ids"], first["input_ids"])
    assert len([first, *it]) == len(loader)


# --- several batches per native job ------------------------------------------------------


def test_one_job_of_several_padded_batches_matches_torch(
    indexed: TokenDataset, module_corpus: WrittenCorpus
) -> None:
    """submit_batches() writes each batch exactly as torch's DataLoader collates it, and
    reports each batch's truncated tokens (counted from pyarrow's rows)."""
    from arrowloader import _C

    ds = indexed
    lengths = [len(row) for row in pyarrow_rows(module_corpus.paths)]
    order = torch.randperm(len(ds), generator=seeded(3)).numpy()
    groups = [order[0:5], order[5:6], order[6:13]]
    expected = [ds.collate([ds[int(i)] for i in rows]) for rows in groups]
    outputs = []
    for rows, want in zip(groups, expected):
        width = ds._assembler.width(rows.astype(np.int64))
        assert width == want["input_ids"].shape[1]
        outputs.append(
            (rows.astype(np.int64), np.empty((len(rows), width), np.int64),
             np.empty((len(rows), width), np.int64), None, None)
        )
    pool = _C.ThreadPool(2)
    try:
        ticket = ds._assembler.submit_batches(pool, outputs)
        assert ticket.batches == 3
        for j, (args, want) in enumerate(zip(outputs, expected)):
            assert ticket.result(None, j) == (
                sum(max(0, lengths[r] - 16) for r in args[0]), 0
            )
            assert torch.equal(torch.from_numpy(args[1]), want["input_ids"]), f"batch {j}"
            assert torch.equal(torch.from_numpy(args[2]), want["attention_mask"]), f"batch {j}"
        with pytest.raises(IndexError, match="batch 3 of a job of 3 batches"):
            ticket.result(None, 3)
    finally:
        pool.shutdown()


def test_submit_batches_arguments_are_checked(indexed: TokenDataset) -> None:
    from arrowloader import _C

    assembler = indexed._assembler
    rows = np.arange(2, dtype=np.int64)
    good = (rows, np.empty((2, assembler.width(rows)), np.int64), None, None, None)
    pool = _C.ThreadPool(1)
    try:
        with pytest.raises(ValueError, match="at least one batch"):
            assembler.submit_batches(pool, [])
        with pytest.raises(ValueError, match=r"each batch is \(rows, input_ids"):
            assembler.submit_batches(pool, [good, good[:3]])
        with pytest.raises(TypeError, match="input_ids must have dtype"):
            bad = (rows, np.empty((2, 4), np.float32), *good[2:])
            assembler.submit_batches(pool, [good, bad])
    finally:
        pool.shutdown()


def test_error_in_a_job_delivers_the_batches_before_it(tmp_path: Any) -> None:
    """An id outside the vocabulary in the 5th document: with batches of 2 one job writes
    batches 0-3; batches 0 and 1 arrive equal to torch's, then the error names the row."""
    docs = [[10 + d, 20 + d, 30 + d] for d in range(12)]
    docs[4][2] = 7000
    path = write_tokens(tmp_path / "v.arrow", docs)
    ds = TokenDataset(path, vocab_size=1000)
    expected = reference(TokenDataset(path), batch_size=2)[:2]
    got = []
    with pytest.raises(arrowloader.CorpusFormatError, match=r"v\.arrow.*row 4.*7000"):
        for batch in arrowloader.DataLoader(ds, batch_size=2, num_workers=1):
            got.append(batch)
    assert_batches_equal(got, expected)


# Datasets that are not arrowloader's: the loader must behave exactly as torch's, with and
# without a custom collate_fn (the native path is asked of the dataset through the
# contract, never assumed).


class DictItems(torch.utils.data.Dataset):
    """A map-style dataset of dicts, as a Hugging Face tokenizer's output per example."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": torch.arange(3) + i, "label": i % 2}


class CountingStream(torch.utils.data.IterableDataset):
    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.arange(12).split(1))


def list_collate(batch: list) -> list:
    return batch


def pad_collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    ids = [item["input_ids"] for item in batch]
    return {
        "input_ids": torch.nn.utils.rnn.pad_sequence(ids, batch_first=True),
        "labels": torch.tensor([item["label"] for item in batch]),
    }


GENERIC_DATASETS: dict[str, Any] = {
    "list": lambda: [1, 2, 3, 4, 5, 6, 7],
    "dicts": DictItems,
    "iterable": CountingStream,
    "tensors": lambda: TensorDataset(torch.arange(10), torch.arange(10) * 2),
    "subset": lambda: torch.utils.data.Subset(list(range(20)), [3, 1, 4, 1, 5, 9, 2, 6]),
    "concat": lambda: torch.utils.data.ConcatDataset([list(range(5)), list(range(10, 16))]),
}


def generic_batches(loader_class: type, name: str, collate: Optional[Any]) -> list:
    dataset = GENERIC_DATASETS[name]()
    shuffle = None if name == "iterable" else True
    kwargs: dict[str, Any] = {"batch_size": 3, "collate_fn": collate}
    if shuffle:
        kwargs.update(shuffle=True, generator=torch.Generator().manual_seed(3))
    loader = loader_class(dataset, **kwargs)
    return [len(loader), *loader] if name != "iterable" else list(loader)


def same_structure(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            same_structure(a[k], b[k]) for k in a
        )
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same_structure, a, b))
    return a == b


@pytest.mark.parametrize("name", sorted(GENERIC_DATASETS))
@pytest.mark.parametrize("collate", ["default", "custom"])
def test_generic_datasets_get_torchs_batches(name: str, collate: str) -> None:
    custom = pad_collate if name == "dicts" else list_collate
    chosen = custom if collate == "custom" else None
    ours = generic_batches(arrowloader.DataLoader, name, chosen)
    theirs = generic_batches(torch.utils.data.DataLoader, name, chosen)
    assert same_structure(ours, theirs)
    assert not arrowloader.DataLoader(GENERIC_DATASETS[name](), batch_size=2).native


def test_a_list_with_a_custom_collate_fn_and_worker_processes() -> None:
    """torch's own test of nested batches with a multiprocessing context, on a list."""
    kwargs = dict(batch_size=2, collate_fn=list_collate, num_workers=1)
    ours = list(arrowloader.DataLoader([1, 2, 3, 4], multiprocessing_context="spawn", **kwargs))
    assert ours == list(torch.utils.data.DataLoader([1, 2, 3, 4], **kwargs)) == [[1, 2], [3, 4]]


def test_the_loader_is_generic_like_torchs() -> None:
    """Typed code subscripts torch's DataLoader (it is Generic[T_co])."""
    alias = arrowloader.DataLoader[list[torch.Tensor]]
    loader = alias([torch.zeros(1)], batch_size=1)
    assert isinstance(loader, arrowloader.DataLoader)
    assert issubclass(arrowloader.DataLoader, torch.utils.data.DataLoader)
    assert same_structure(list(loader), [torch.zeros(1, 1)])


def test_more_native_threads_than_cores_and_a_worker_init_fn_are_warned_about(
    ds: TokenDataset,
) -> None:
    cores = arrowloader.native.usable_cores()
    with pytest.warns(UserWarning, match=rf"num_workers={cores + 1} starts {cores + 1} native"):
        loader = arrowloader.DataLoader(ds, batch_size=4, num_workers=cores + 1)
    assert loader.native
    with pytest.warns(UserWarning, match="worker_init_fn is not called on the native path"):
        arrowloader.DataLoader(ds, batch_size=4, worker_init_fn=lambda worker: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrowloader.DataLoader(ds, batch_size=4, num_workers=min(cores, 2))
        # Off the native path torch runs the worker_init_fn itself: nothing to say.
        arrowloader.DataLoader([1, 2, 3], batch_size=2, worker_init_fn=lambda worker: None)


def _add_lengths(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**batch, "lengths": batch["attention_mask"].sum(1)}


def _doubled(batch: torch.Tensor) -> torch.Tensor:
    return batch * 2


def test_batch_transform_keeps_the_native_path(ds: TokenDataset) -> None:
    generator = torch.Generator().manual_seed(8)
    loader = arrowloader.DataLoader(
        ds, batch_size=5, shuffle=True, generator=generator, batch_transform=_add_lengths
    )
    assert loader.native
    got = list(loader)
    expected = torch.utils.data.DataLoader(
        ds, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(8),
        collate_fn=ds.collate,
    )
    assert_batches_equal(got, [_add_lengths(batch) for batch in expected])
    # Off the native path it runs after torch's collate, in worker processes too.
    for workers in (0, 1):
        plain = arrowloader.DataLoader(
            list(range(6)), batch_size=4, num_workers=workers, batch_transform=_doubled
        )
        assert [b.tolist() for b in plain] == [[0, 2, 4, 6], [8, 10]]
