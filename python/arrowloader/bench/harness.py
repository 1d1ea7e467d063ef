"""One timed run of one loader on one workload, and the figures it yields.

A run is workload-neutral: a :class:`Workload` (W1 pad, W2 pack) says what a correct batch
looks like and how many tokens the batches of a run hold; a :class:`Peer` opens a dataset
and builds a loader over it with a seed. What a run measures:

- throughput: real (non-pad) tokens/s and batches/s over at least ``seconds``, after a
  warm-up of a few batches, restarting epochs as needed;
- CPU seconds per million real tokens: process user+sys, reaped children included, from
  building the loader until after the loader's workers are shut down (``os.times``
  counts a child process only once it is reaped), over every token delivered in that
  window (warm-up and timed batches);
- peak anonymous RSS (``RssAnon``) of the process plus its child processes, sampled every
  ~20 ms on a background thread. Anonymous memory only: the page cache holding the mapped
  corpus is shared and reclaimable, not the loader's memory;
- time to first batch: from building a loader over the opened dataset to receiving its
  first batch (so it includes whatever the loader prepares when it is built or its
  iterator is created: worker processes, arrowloader's plan of a packed epoch);
- padding fraction: padded positions / all positions of the timed batches.

Tokens are never counted in the timed loop (a ``mask.sum()`` per batch would cost the
fastest loader a noticeable share of its time). The workload knows the batches of a run in
advance and recomputes the counts afterwards (:meth:`Workload.token_counts`): W1 replays
the seeded ``RandomSampler`` every W1 loader draws from (:func:`replay_batch_token_counts`),
W2's batches are always full. The warm-up batches check those counts against the batches
themselves on every run (:meth:`Workload.observe`).
"""

from __future__ import annotations

import abc
import gc
import os
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import RandomSampler

Batch = dict[str, torch.Tensor]

#: Batches consumed before timing starts (the first one gives the time to first batch).
WARMUP_BATCHES = 8
#: Interval of the anonymous-RSS sampler thread.
RSS_SAMPLE_INTERVAL_S = 0.02
#: Buffer copied to measure memory bandwidth: larger than any CPU cache.
MEMCPY_BYTES = 64 * 1024 * 1024
#: ``num_workers`` of the DataLoader peers (torch, hf), one row each; the better torch row
#: of a workload is its "torch best".
PEER_WORKER_COUNTS = (0, 2)


class BenchmarkError(RuntimeError):
    """A loader did not produce what its workload asks for (wrong outputs, or batches
    other than the ones its sampler drew)."""


@dataclass(frozen=True)
class Peer:
    """One loader configuration (one row of a workload's table).

    Attributes:
        name: the row's name, e.g. ``"torch (workers 2)"``.
        family: ``"torch"``, ``"hf"``, ``"nanogpt"`` or ``"arrowloader"``.
        num_workers: worker processes (torch, hf) or native threads (arrowloader).
        open_dataset: ``(seed)`` -> the dataset (timed apart from the loader, as
            ``open_s``); datasets that shuffle themselves (PackedDataset) take the run's
            seed, others ignore it.
        make_loader: ``(dataset, seed)`` -> the loader, an iterable of batches whose
            iteration is one epoch (an endless iterable is one endless epoch). The seed
            fixes every random choice of the loader.
        headline: whether the row stands for its family in the ratios (W2's variant
            arrowloader rows with other outputs are not headline rows).
        dtype: dtype of the id outputs (``input_ids``, ``labels``, ``position_ids``).
        extra_outputs: outputs beyond the workload's own (e.g. ``position_ids``).
        reads_stream: whether the row reads W2's flat stream file rather than the
            corpus (its token bytes are the stream's).
        counts_in_loop: whether the row's batches are not the seeded sampler's (a loader
            that shuffles in its own way), so that its tokens are counted from each batch
            as it arrives (:meth:`Workload.observe`, outside the waits) instead of being
            replayed afterwards.
    """

    name: str
    family: str
    num_workers: int
    open_dataset: Callable[[int], Any]
    make_loader: Callable[[Any, int], Iterable[Batch]]
    headline: bool = True
    dtype: torch.dtype = torch.int64
    extra_outputs: tuple[str, ...] = ()
    reads_stream: bool = False
    counts_in_loop: bool = False


@dataclass(frozen=True)
class SeededLoaderFactory:
    """The ``make_loader`` of every :class:`Peer` that is a DataLoader drawing its batches
    from :func:`seeded_sampler`: called with ``(dataset, seed)``, it returns
    ``loader_class(dataset, batch_size=batch_size, sampler=seeded_sampler(dataset, seed),
    num_workers=num_workers, collate_fn=collate_fn, drop_last=drop_last,
    pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0)``.

    With equal seeds, every loader it builds over the same documents yields the same
    batches in the same order, which is what lets W1 count a run's tokens afterwards.

    Attributes:
        batch_size: items per batch.
        num_workers: worker processes (torch's DataLoader) or native threads
            (arrowloader's).
        collate_fn: the collate function; None: the loader's default.
        drop_last: whether a short last batch of an epoch is dropped.
        pin_memory: whether batches are copied into pinned memory.
        persistent_workers: whether worker processes live across epochs (only where
            there are some). Runs cross epoch boundaries; restarting the workers at each
            one would charge a peer for a setting any tuned training loop avoids.
            arrowloader's rows leave it off: they have no worker processes to keep.
        loader_class: ``torch.utils.data.DataLoader`` or its drop-in
            ``arrowloader.DataLoader``.
        loader_kwargs: further ``(name, value)`` arguments of the loader (torch's thread
            workers: ``("worker_method", "thread")``).
    """

    batch_size: int
    num_workers: int = 0
    collate_fn: Optional[Callable[[list[Any]], Any]] = None
    drop_last: bool = False
    pin_memory: bool = False
    persistent_workers: bool = True
    loader_class: type[torch.utils.data.DataLoader] = torch.utils.data.DataLoader
    loader_kwargs: tuple[tuple[str, Any], ...] = ()

    def __call__(self, dataset: Any, seed: int) -> torch.utils.data.DataLoader:
        return self.loader_class(
            dataset,
            batch_size=self.batch_size,
            sampler=seeded_sampler(dataset, seed),
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=self.drop_last,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            **dict(self.loader_kwargs),
        )


class Workload(abc.ABC):
    """What :func:`measure_run` needs to know about a workload."""

    #: Short name, as ``--workload`` takes it (``"pad"``, ``"pack"``).
    key: str
    #: Name in tables (``"W1 pad"``).
    title: str
    #: Whether :func:`measure_run` must count each timed batch's tokens with
    #: :meth:`observe` as it arrives (a workload that cannot know its batches in advance,
    #: such as a user's own loader); else :meth:`token_counts` gives them afterwards.
    counts_in_loop: bool = False

    def check_dataset(self, peer: Peer, dataset: Any) -> None:  # noqa: B027 (optional hook)
        """Raises BenchmarkError if the opened dataset is not the workload's corpus.
        Called before the loader is built, so it must not prepare what the loader would
        (e.g. plan a packed epoch). Default: no check."""

    @abc.abstractmethod
    def check_batch(self, peer: Peer, batch: Any) -> None:
        """Raises BenchmarkError unless ``batch`` has the workload's outputs."""

    @abc.abstractmethod
    def observe(self, batch: Batch) -> tuple[int, int]:
        """``(real tokens, all positions)`` of a warm-up batch, read from the batch."""

    def token_counts(self, seed: int, num_batches: int) -> tuple[np.ndarray, np.ndarray]:
        """``(real, positions)``: int64 ``[num_batches]`` each, the real tokens and all
        positions of the first ``num_batches`` batches of a loader built with ``seed``.
        Required unless :attr:`counts_in_loop`."""
        raise NotImplementedError(f"{type(self).__name__} counts its tokens in the loop")


@dataclass
class RunFigures:
    """The figures of one run of one loader.

    Attributes:
        peer: the loader's row name.
        repeat: 0-based repeat number.
        seed: seed the loader was built with.
        seconds: length of the timed window.
        batches: batches consumed in the timed window.
        warmup_batches: batches consumed before it.
        epochs_started: epochs begun (warm-up included).
        real_tokens: non-pad tokens of the timed batches.
        padded_tokens: all token positions (rows x width) of the timed batches.
        tokens_per_s: ``real_tokens / seconds``.
        batches_per_s: ``batches / seconds``.
        cpu_s: process + reaped children user+sys seconds over the CPU window.
        cpu_window_real_tokens: real tokens delivered in the CPU window.
        cpu_s_per_mtok: ``cpu_s`` per million of ``cpu_window_real_tokens``.
        start_anon_rss_bytes: anonymous RSS (process + children) before the dataset opened.
        peak_anon_rss_bytes: highest anonymous RSS (process + children) during the run.
        rss_samples: anonymous-RSS samples taken.
        first_batch_s: seconds from building the loader to its first batch.
        open_s: seconds to open the dataset.
        padding_fraction: ``1 - real_tokens / padded_tokens``.
        consumer_ms: the simulated training step after each timed batch (0: none).
        stall_s: with a simulated step, seconds the consumer waited for its timed batches
            (time spent in ``next()``); None without one.
        stall_ms_per_step: ``stall_s`` per timed batch, in ms; None without a step.
        stall_fraction: ``stall_s / seconds``: the share of the loop spent waiting for
            data; None without a step.
    """

    peer: str
    repeat: int
    seed: int
    seconds: float
    batches: int
    warmup_batches: int
    epochs_started: int
    real_tokens: int
    padded_tokens: int
    tokens_per_s: float
    batches_per_s: float
    cpu_s: float
    cpu_window_real_tokens: int
    cpu_s_per_mtok: float
    start_anon_rss_bytes: int
    peak_anon_rss_bytes: int
    rss_samples: int
    first_batch_s: float
    open_s: float
    padding_fraction: float
    consumer_ms: float = 0.0
    stall_s: Optional[float] = None
    stall_ms_per_step: Optional[float] = None
    stall_fraction: Optional[float] = None

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


# --------------------------------------------------------------------------- memory


def anon_rss_bytes(pid: int) -> int:
    """``RssAnon`` of a process in bytes (0 if it is gone or the kernel has no such
    field)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"RssAnon:"):
                    return int(line.split()[1]) * 1024  # the kernel reports kB
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def child_pids() -> list[int]:
    """Direct child processes of this process (a DataLoader's workers), from every
    thread's ``/proc/self/task/<tid>/children``: a child belongs to the thread that forked
    it."""
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except FileNotFoundError:  # no procfs
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as children:
                pids.extend(int(pid) for pid in children.read().split())
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return pids


def tree_anon_rss_bytes() -> int:
    """Anonymous RSS of this process plus its child processes, in bytes."""
    return anon_rss_bytes(os.getpid()) + sum(anon_rss_bytes(pid) for pid in child_pids())


class AnonRssSampler:
    """Samples :func:`tree_anon_rss_bytes` every ``interval_s`` on a background thread
    while in a ``with`` block; ``start_bytes`` and ``peak_bytes`` hold the results."""

    def __init__(self, interval_s: float = RSS_SAMPLE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.start_bytes = 0
        self.peak_bytes = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anon-rss-sampler", daemon=True)

    def _record(self) -> None:
        self.peak_bytes = max(self.peak_bytes, tree_anon_rss_bytes())
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._record()

    def __enter__(self) -> AnonRssSampler:
        self.start_bytes = tree_anon_rss_bytes()
        self.peak_bytes = self.start_bytes
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._record()


def read_meminfo_bytes(key: str, path: Optional[Path] = None) -> Optional[int]:
    """A ``/proc/meminfo`` field in bytes (e.g. ``"MemTotal"``), or None if unavailable."""
    try:
        text = (path or Path("/proc/meminfo")).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0]) * 1024
    return None


# --------------------------------------------------------------------------- CPU


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def memcpy_gbps(
    num_bytes: int = MEMCPY_BYTES, copies: int = 15, copies_per_timing: int = 1
) -> float:
    """Median bandwidth of ``numpy.copyto`` between two ``num_bytes`` buffers, in GB/s
    (1e9 bytes copied per second; each byte copied is read once and written once).

    Each of ``copies`` timings covers ``copies_per_timing`` back-to-back copies (many, for
    a buffer small enough to stay in cache, whose single copy is too short to time)."""
    source = np.ones(num_bytes, dtype=np.uint8)
    target = np.empty_like(source)
    np.copyto(target, source)  # fault the pages in before timing
    rates = []
    for _ in range(copies):
        started = time.perf_counter()
        for _ in range(copies_per_timing):
            np.copyto(target, source)
        rates.append(num_bytes * copies_per_timing / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def cache_memcpy_gbps(num_bytes: int) -> float:
    """:func:`memcpy_gbps` for a buffer of one batch's outputs, which stays in cache: as
    many copies per timing as make about 64 MiB."""
    num_bytes = max(1, num_bytes)
    return memcpy_gbps(num_bytes, copies=15, copies_per_timing=max(1, MEMCPY_BYTES // num_bytes))


# --------------------------------------------------------------------------- tokens


def kept_lengths(lengths: np.ndarray, max_length: int) -> np.ndarray:
    """Tokens each document keeps after truncation: ``min(length, max_length)``, int64
    ``[documents]``."""
    return np.minimum(np.asarray(lengths, dtype=np.int64), max_length)


def seeded_sampler(data_source: Any, seed: int) -> RandomSampler:
    """The sampler every W1 loader gets: ``RandomSampler`` with its own seeded generator
    (so no loader's other random draws can change the order)."""
    return RandomSampler(data_source, generator=torch.Generator().manual_seed(seed))


def replay_batch_token_counts(
    kept: np.ndarray, batch_size: int, seed: int, num_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """Real and padded token counts of the first ``num_batches`` batches a loader yields
    with :func:`seeded_sampler` ``(dataset, seed)``, ``batch_size``, ``drop_last=False``,
    restarting epochs as the harness does.

    Args:
        kept: tokens each document keeps after truncation, int64 ``[documents]``.

    Returns:
        ``(real, padded)``, int64 ``[num_batches]`` each: the sum of the batch's kept
        lengths, and its rows times its longest kept length.
    """
    num_rows = len(kept)
    if num_rows == 0:
        raise ValueError("cannot replay batches of an empty dataset")
    sampler = seeded_sampler(range(num_rows), seed)
    real_parts: list[np.ndarray] = []
    padded_parts: list[np.ndarray] = []
    replayed = 0
    while replayed < num_batches:
        # Each epoch calls iter(sampler) again, drawing from the same generator, exactly as
        # a DataLoader does when iter(loader) starts the next epoch. The iterator must run
        # to exhaustion, as BatchSampler runs it: RandomSampler draws one more (empty)
        # permutation after its last index, and the next epoch depends on that draw.
        order = np.fromiter(iter(sampler), dtype=np.int64)
        batch_kept = kept[order]
        starts = np.arange(0, len(order), batch_size)
        rows = np.diff(np.append(starts, len(order)))
        real_parts.append(np.add.reduceat(batch_kept, starts))
        padded_parts.append(np.maximum.reduceat(batch_kept, starts) * rows)
        replayed += len(starts)
    real = np.concatenate(real_parts)[:num_batches]
    padded = np.concatenate(padded_parts)[:num_batches]
    return real, padded


# --------------------------------------------------------------------------- the run


class EpochCycler:
    """Yields a loader's batches forever, starting the next epoch (``iter(loader)``) when
    one ends; ``iterator`` is the current epoch's iterator."""

    def __init__(self, loader: Iterable[Batch]) -> None:
        self.loader = loader
        self.iterator = iter(loader)
        self.epochs_started = 1

    def __iter__(self) -> Iterator[Batch]:
        while True:
            empty = True
            for batch in self.iterator:
                empty = False
                yield batch
            if empty:
                raise BenchmarkError(
                    f"epoch {self.epochs_started} of the loader yielded no batches (an "
                    "iterator rather than an iterable, already exhausted?)"
                )
            self.iterator = iter(self.loader)
            self.epochs_started += 1

    def shut_down(self) -> None:
        """Ends the current iterator's threads or worker processes and waits for them."""
        shut_down_iterator(self.iterator)


def shut_down_iterator(iterator: Any) -> None:
    """Stops a DataLoader iterator's threads or processes and waits for them to end.

    arrowloader's iterator has ``close()``. torch's multi-process iterator (kept alive by
    its loader under ``persistent_workers``) has only the private ``_shutdown_workers()``,
    which joins, and so reaps, the workers: their CPU time reaches ``os.times()`` only then.
    """
    close = getattr(iterator, "close", None)
    if callable(close):
        close()
        return
    shutdown_workers = getattr(iterator, "_shutdown_workers", None)
    if callable(shutdown_workers):
        shutdown_workers()


def measure_run(
    peer: Peer,
    workload: Workload,
    *,
    seconds: float,
    seed: int,
    repeat: int = 0,
    warmup_batches: int = WARMUP_BATCHES,
    consumer_ms: float = 0.0,
) -> RunFigures:
    """Opens ``peer``'s dataset, builds its loader with ``seed``, and measures one run
    (see the module docstring).

    Args:
        workload: what the batches must be, and how many tokens they hold.
        seconds: minimum length of the timed window.
        seed: passed to ``peer.make_loader``.
        consumer_ms: a simulated training step after each timed batch (see
            :func:`instrumented_loop`); the run then also reports the stall.

    Raises:
        BenchmarkError: the loader's outputs are not the workload's, or its warm-up
            batches are not the ones the workload expects.
    """
    warmup_batches = max(1, warmup_batches)
    gc.collect()  # the previous run's garbage should not land in this run's figures
    with AnonRssSampler() as rss:
        opening = time.perf_counter()
        dataset = peer.open_dataset(seed)
        open_s = time.perf_counter() - opening
        workload.check_dataset(peer, dataset)

        counting = workload.counts_in_loop or peer.counts_in_loop
        cpu_start = process_cpu_seconds()
        starting = time.perf_counter()
        cycler = EpochCycler(peer.make_loader(dataset, seed))
        try:
            batches = iter(cycler)
            batch = next(batches)
            first_batch_s = time.perf_counter() - starting
            workload.check_batch(peer, batch)
            warmup_counts = []
            for i in range(warmup_batches):
                if i:
                    batch = next(batches)
                warmup_counts.append(workload.observe(batch))
            batch = None

            if consumer_ms > 0 or counting:
                loop = instrumented_loop(
                    batches, workload, seconds, consumer_ms / 1e3, count=counting
                )
            else:
                loop = plain_loop(batches, seconds)
        finally:
            # Also on an error: worker processes must not outlive the run.
            cycler.shut_down()
        cpu_s = process_cpu_seconds() - cpu_start
        epochs_started = cycler.epochs_started
        del batches, cycler, dataset

    timed, elapsed = loop.batches, loop.seconds
    if counting:
        real_tokens, padded_tokens = loop.real_tokens, loop.positions
        cpu_tokens = real_tokens + sum(real for real, _ in warmup_counts)
    else:
        real, padded = workload.token_counts(seed, warmup_batches + timed)
        check_replay(peer.name, warmup_counts, real[:warmup_batches], padded[:warmup_batches])
        real_tokens = int(real[warmup_batches:].sum())
        padded_tokens = int(padded[warmup_batches:].sum())
        cpu_tokens = int(real.sum())
    stalled = loop.stall_s is not None
    return RunFigures(
        peer=peer.name,
        repeat=repeat,
        seed=seed,
        seconds=elapsed,
        batches=timed,
        warmup_batches=warmup_batches,
        epochs_started=epochs_started,
        real_tokens=real_tokens,
        padded_tokens=padded_tokens,
        tokens_per_s=real_tokens / elapsed,
        batches_per_s=timed / elapsed,
        cpu_s=cpu_s,
        cpu_window_real_tokens=cpu_tokens,
        cpu_s_per_mtok=cpu_s / (cpu_tokens / 1e6) if cpu_tokens else float("nan"),
        start_anon_rss_bytes=rss.start_bytes,
        peak_anon_rss_bytes=rss.peak_bytes,
        rss_samples=rss.samples,
        first_batch_s=first_batch_s,
        open_s=open_s,
        padding_fraction=1.0 - real_tokens / padded_tokens if padded_tokens else 0.0,
        consumer_ms=consumer_ms,
        stall_s=loop.stall_s,
        stall_ms_per_step=1e3 * loop.stall_s / timed if stalled and timed else None,
        stall_fraction=loop.stall_s / elapsed if stalled and elapsed else None,
    )


@dataclass
class TimedLoop:
    """What the timed loop of a run saw.

    Attributes:
        batches: batches received in the timed window.
        seconds: length of the window.
        stall_s: seconds spent waiting in ``next()`` (None when not measured).
        real_tokens: real tokens of the timed batches (counted in the loop only).
        positions: all positions of the timed batches (counted in the loop only).
    """

    batches: int
    seconds: float
    stall_s: Optional[float] = None
    real_tokens: int = 0
    positions: int = 0


def plain_loop(batches: Iterator[Any], seconds: float) -> TimedLoop:
    """Receives batches for at least ``seconds`` and does nothing else: receiving each
    batch is the work measured. The loop holds the last batch until the next arrives, as
    a training loop would."""
    timed = 0
    timing = time.perf_counter()
    deadline = timing + seconds
    for _batch in batches:
        timed += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - timing
    return TimedLoop(timed, elapsed)


def instrumented_loop(
    batches: Iterator[Any],
    workload: Workload,
    seconds: float,
    consumer_s: float,
    count: Optional[bool] = None,
) -> TimedLoop:
    """Receives batches for at least ``seconds``, timing each wait in ``next()``; after
    each batch, sleeps ``consumer_s`` (a training step whose work is elsewhere, as on an
    accelerator: the loader's threads or workers have the CPU meanwhile) and, if the
    workload counts in the loop (or ``count`` says so), counts the batch's tokens (outside
    the waits)."""
    timed = stall = real_total = positions_total = 0
    count = workload.counts_in_loop if count is None else count
    timing = time.perf_counter()
    deadline = timing + seconds
    while True:
        waiting = time.perf_counter()
        batch = next(batches)
        received = time.perf_counter()
        stall += received - waiting
        timed += 1
        if count:
            real, positions = workload.observe(batch)
            real_total += real
            positions_total += positions
        if consumer_s > 0:
            time.sleep(consumer_s)
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - timing
    return TimedLoop(timed, elapsed, stall if consumer_s > 0 else None,
                     real_total, positions_total)


def check_replay(
    where: str,
    observed: list[tuple[int, int]],
    real: np.ndarray,
    padded: np.ndarray,
) -> None:
    """Raises BenchmarkError unless the observed ``(real tokens, positions)`` of each batch
    (for W1: mask sum, rows x width) equal the expected ``real`` and ``padded`` counts
    (int64 ``[batches]``)."""
    for i, (mask_sum, positions) in enumerate(observed):
        if mask_sum != real[i] or positions != padded[i]:
            raise BenchmarkError(
                f"{where}: batch {i} has {mask_sum} real tokens in {positions} positions, but "
                f"the workload expects {int(real[i])} in {int(padded[i])}: the loader "
                "does not yield the batches its sampler drew (or not full ones), so its tokens "
                "cannot be counted afterwards"
            )
