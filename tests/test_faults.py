"""Faults: every way an epoch can end (exhausted, break, the consumer raising, Ctrl-C, an
error on a native thread, a timeout, the iterator or the whole loader dropped mid-epoch)
ends with the right exception, no hang, and the threads, file descriptors and mappings the
process held before; torch's own DataLoader with worker processes (fork and spawn) over
every dataset type, while native threads of an arrowloader loader are running."""

from __future__ import annotations

import gc
import multiprocessing.resource_tracker
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import (
    _C,
    CorpusFormatError,
    LoaderTimeoutError,
    MixedDataset,
    PackedDataset,
    TokenDataset,
)
from arrowloader.native import NativeJob
from conftest import (
    Resources,
    WrittenCorpus,
    assert_batches_equal,
    native_threads,
    wait_for_native_threads,
    wait_for_resources,
    write_corpus,
    write_tokens,
)

KINDS = ("token", "packed", "mixed")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> WrittenCorpus:
    return write_corpus(
        tmp_path_factory.mktemp("faults"), np.random.default_rng(3), docs_per_file=(40, 0, 35, 25)
    )


def make_dataset(kind: str, paths: list[Path]) -> Any:
    if kind == "token":
        return TokenDataset(paths, label_column="label", max_length=16)
    if kind == "packed":
        return PackedDataset(paths, seq_len=8, eos_token_id=0)
    halves = {
        "a": PackedDataset(paths[:2], seq_len=8, eos_token_id=0),
        "b": PackedDataset(paths[2:], seq_len=8, eos_token_id=0, mode="bestfit"),
    }
    return MixedDataset(halves, {"a": 1.0, "b": 2.0})


def make_loader(ds: Any, **kwargs: Any) -> arrowloader.DataLoader:
    loader = arrowloader.DataLoader(ds, batch_size=2, num_workers=2, shuffle=True, **kwargs)
    assert loader.native
    return loader


#: Tests that queue jobs which only sleep need the build's test hook.
needs_sleep_hook = pytest.mark.skipif(
    not hasattr(_C.ThreadPool, "submit_sleep"),
    reason="needs ThreadPool.submit_sleep: build with ARROWLOADER_TEST_HOOKS=1",
)


class SleepyEpoch:
    """A native epoch whose batches are jobs that sleep ``seconds`` each: a batch as slow
    as a stalled file system makes it, without the file system."""

    group = 1

    def __init__(self, seconds: float, batches: int = 4) -> None:
        self.seconds = seconds
        self.left = batches
        self.position: dict = {}

    def __len__(self) -> int:
        return self.left

    def submit(self, pool: Any) -> Optional[NativeJob]:
        if self.left == 0:
            return None
        self.left -= 1
        return NativeJob(pool.submit_sleep(self.seconds), [{}])

    def finish(self, job: NativeJob, index: int, figures: Any) -> dict:
        return job.batches[index]

    def exhausted(self) -> None:
        pass


def sleepy(ds: Any, seconds: float, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ds, "native_epoch", lambda *args: SleepyEpoch(seconds))


def interrupt_after(seconds: float) -> threading.Timer:
    """Sends this process SIGINT (Ctrl-C) in ``seconds``, from another thread."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


@pytest.fixture(autouse=True)
def restore_sigint() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt during each test, as in an interactive run, even
    where the tests were started with SIGINT ignored (a background job of a script);
    the handler before is restored after."""
    handler: Callable = signal.getsignal(signal.SIGINT)  # type: ignore[assignment]
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, handler)


ENDINGS = (
    "exhausted",
    "break",
    "consumer raises",
    "keyboard interrupt in the loop",
    pytest.param("keyboard interrupt while waiting", marks=needs_sleep_hook),
    pytest.param("timeout", marks=needs_sleep_hook),
    "iterator dropped",
    "everything dropped",
)


def run_ending(
    ending: str, loader: arrowloader.DataLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ends one epoch of ``loader`` the ``ending`` way, checking the exception."""
    if ending == "exhausted":
        assert len(list(loader)) == len(loader)
    elif ending == "break":
        for k, _ in enumerate(loader):
            if k == 1:
                break
    elif ending == "consumer raises":
        with pytest.raises(ZeroDivisionError):
            for k, _ in enumerate(loader):
                if k == 1:
                    _ = 1 / 0
    elif ending == "keyboard interrupt in the loop":
        with pytest.raises(KeyboardInterrupt):
            for k, _ in enumerate(loader):
                if k == 1:
                    signal.raise_signal(signal.SIGINT)
    elif ending == "keyboard interrupt while waiting":
        sleepy(loader.dataset, 1.0, monkeypatch)
        timer = interrupt_after(0.2)
        with pytest.raises(KeyboardInterrupt):
            next(iter(loader))
        timer.join()
        monkeypatch.undo()
    elif ending == "timeout":
        sleepy(loader.dataset, 0.5, monkeypatch)
        slow = arrowloader.DataLoader(
            loader.dataset, batch_size=2, num_workers=2, timeout=0.05, shuffle=True
        )
        with pytest.raises(LoaderTimeoutError, match=r"timed out after 0\.05 seconds"):
            next(iter(slow))
        monkeypatch.undo()
    elif ending == "iterator dropped":
        it = iter(loader)
        next(it)
        del it
    else:
        raise ValueError(ending)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_ending_releases_everything(
    files: WrittenCorpus, kind: str, ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = files.paths
    # Warm-up: torch's and Python's lazily started threads exist from here on.
    warm = make_dataset(kind, paths)
    list(make_loader(warm))
    del warm
    gc.collect()
    no_dataset = Resources.now(paths)
    assert no_dataset.mappings == 0
    ds = make_dataset(kind, paths)
    loader = make_loader(ds)
    list(loader)
    before = Resources.now(paths)
    assert before.mappings >= 3  # the non-empty files are mapped
    if ending == "everything dropped":
        it = iter(loader)
        next(it)
        assert len(native_threads()) == 2
        del it, loader, ds
        gc.collect()
        assert wait_for_resources(no_dataset, paths) == no_dataset
        return
    run_ending(ending, loader, monkeypatch)
    assert wait_for_resources(before, paths) == before
    # The loader still works afterwards (a mixed loader's pass continues its stream).
    it = iter(loader)
    left = len(it)
    assert left > 0 and len(list(it)) == left
    assert wait_for_resources(before, paths) == before


@needs_sleep_hook
def test_ctrl_c_ends_the_wait_for_a_batch_not_the_batch() -> None:
    """Waits run Python's signal handlers: KeyboardInterrupt ends the wait at once, while
    the batch (here a job that sleeps) is still being made."""
    pool = _C.ThreadPool(1)
    try:
        slow = pool.submit_sleep(1.0)
        timer = interrupt_after(0.1)
        with pytest.raises(KeyboardInterrupt):
            slow.result()
        timer.join()
        assert not slow.done  # the wait ended, the job had not
        timer = interrupt_after(0.1)
        with pytest.raises(KeyboardInterrupt):
            slow.wait()
        timer.join()
        assert not slow.done
    finally:
        pool.shutdown()  # joins the sleeping job
    assert slow.done


@needs_sleep_hook
def test_timeout_without_interrupt_still_times_out() -> None:
    pool = _C.ThreadPool(1)
    try:
        slow = pool.submit_sleep(1.0)
        with pytest.raises(LoaderTimeoutError):
            slow.result(0.2)
        assert slow.wait(5.0)
        assert slow.result(0.0) == (0, 0)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("kind", ["token", "packed"])
def test_error_on_a_native_thread_releases_everything(tmp_path: Path, kind: str) -> None:
    documents = [[i, i + 1] for i in range(24)]
    documents[17] = [1, 3_000_000, 2]  # outside the vocabulary; and int32 holds it
    path = write_tokens(tmp_path / "c.arrow", documents, value_type=pa.int64(), num_batches=3)
    if kind == "token":
        ds: Any = TokenDataset(path, vocab_size=50_000)
        loader = arrowloader.DataLoader(ds, batch_size=3, num_workers=2)
    else:
        ds = PackedDataset(path, seq_len=4, eos_token_id=0, vocab_size=50_000,
                           shuffle_documents=False)
        loader = arrowloader.DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    with pytest.raises(CorpusFormatError, match="row 17"):
        list(loader)  # warm-up and first failure
    before = Resources.now([path])
    served = 0
    with pytest.raises(CorpusFormatError, match="outside the vocabulary") as info:
        for _ in loader:
            assert threading.current_thread() is threading.main_thread()
            served += 1
    assert str(path) in str(info.value)
    assert served > 0  # the batches before the bad one came through
    assert wait_for_resources(before, [path]) == before


# --- torch's worker processes over our datasets -------------------------------------------


def torch_equivalent(kind: str, ds: Any, context: str) -> tuple[list, list]:
    """(batches of torch's DataLoader with 2 worker processes, the native path's batches)
    for the same order: torch's shuffled sampler for documents, the packed datasets'
    sequential block streams (mixed: the blended stream of shuffled blocks)."""
    common = {"num_workers": 2, "multiprocessing_context": context, "collate_fn": ds.collate}
    if kind == "token":
        theirs = torch.utils.data.DataLoader(
            ds, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(21), **common
        )
        ours = arrowloader.DataLoader(
            ds, batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(21)
        )
    elif kind == "packed":
        theirs = torch.utils.data.DataLoader(ds, batch_size=3, drop_last=True, **common)
        ours = arrowloader.DataLoader(ds, batch_size=3, shuffle=False)
    else:
        theirs = torch.utils.data.DataLoader(ds, batch_size=4, drop_last=True, **common)
        ours = arrowloader.DataLoader(ds, batch_size=4, shuffle=True)
    got = list(theirs)
    return got, list(ours)


@pytest.mark.parametrize(
    ("kind", "context"),
    [("token", "fork"), ("packed", "fork"), ("packed", "spawn"), ("mixed", "fork"),
     ("mixed", "spawn")],
)
def test_torch_workers_while_native_threads_run(
    files: WrittenCorpus, kind: str, context: str
) -> None:
    """Vanilla torch DataLoader, 2 worker processes, forked (or spawned) while an
    arrowloader iterator over the same dataset has its native threads mid-epoch: the same
    batches as the native path, and nothing left behind in this process."""
    # Spawned workers start Python's resource tracker once per process, which keeps a
    # descriptor open for good: started here, before the count.
    multiprocessing.resource_tracker.ensure_running()
    ds = make_dataset(kind, files.paths)
    live = iter(make_loader(make_dataset(kind, files.paths)))
    next(live)
    assert len(native_threads()) == 2
    before = Resources.now(files.paths)
    got, want = torch_equivalent(kind, ds, context)
    assert len(got) == len(want) > 0
    assert_batches_equal(got, want)
    # Batches from worker processes hold a descriptor each (torch's shared memory) until
    # they are freed.
    del got, want
    gc.collect()
    after = wait_for_resources(before, files.paths, fields=("fds", "mappings"))
    assert (after.fds, after.mappings) == (before.fds, before.mappings)
    assert after.threads <= before.threads  # torch may end a thread of its own, never add
    assert len(native_threads()) == 2
    live.close()
    # Joined threads can stay listed in /proc a moment after the join returns.
    assert wait_for_native_threads(0) == 0, native_threads()




@needs_sleep_hook
def test_a_custom_sigint_handler_that_raises_ends_the_wait() -> None:
    """Any handler that raises ends a wait, not only the default KeyboardInterrupt one."""

    class Stop(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Stop

    signal.signal(signal.SIGINT, handler)
    pool = _C.ThreadPool(1)
    try:
        slow = pool.submit_sleep(1.0)
        timer = interrupt_after(0.1)
        with pytest.raises(Stop):
            slow.result()
        timer.join()
        assert not slow.done
    finally:
        pool.shutdown()


@needs_sleep_hook
def test_sleep_job_rejects_a_negative_time() -> None:
    pool = _C.ThreadPool(1)
    try:
        for bad in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="seconds"):
                pool.submit_sleep(bad)
    finally:
        pool.shutdown()
