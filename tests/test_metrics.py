"""Stall metrics: the arithmetic of FeedCounter / FeedMetrics, and what DataLoader and
CUDAPrefetcher count, measured against a fake clock that only the test advances (known
"sleeps" of a fake loader and of the consumer's steps), never against wall time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import CUDAPrefetcher, FeedMetrics, PackedDataset, TokenDataset, metrics
from arrowloader.metrics import FeedCounter, tensor_bytes
from conftest import random_documents, write_tokens


class FakeClock:
    """Stands in for time.perf_counter: time moves only when advanced."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(metrics, "perf_counter", fake)
    return fake


class SleepyLoader:
    """Yields ``len(delays)`` batches; producing batch ``i`` takes ``delays[i]`` seconds of
    the fake clock, finding the end takes ``end_delay``."""

    def __init__(self, clock: FakeClock, delays: list[float], end_delay: float = 0.0) -> None:
        self.clock = clock
        self.delays = delays
        self.end_delay = end_delay

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i, delay in enumerate(self.delays):
            self.clock.advance(delay)
            yield {"x": torch.zeros(i + 1, dtype=torch.int32), "tag": f"batch {i}"}
        self.clock.advance(self.end_delay)


def consume(iterable: Any, clock: FakeClock, steps: list[float]) -> int:
    """Iterates ``iterable`` to its end, each step taking ``steps[i]`` seconds."""
    count = 0
    for i, _ in enumerate(iterable):
        clock.advance(steps[i])
        count += 1
    return count


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_prefetcher_counts_the_consumers_wait(clock: FakeClock, depth: int) -> None:
    delays = [0.5, 0.25, 2.0, 0.125, 1.0]
    steps = [1.0, 3.0, 0.5, 0.25, 4.0]
    prefetcher = CUDAPrefetcher(SleepyLoader(clock, delays, end_delay=0.0625), device="cpu",
                                depth=depth)
    assert consume(prefetcher, clock, steps) == 5
    got = prefetcher.metrics()
    # On the CPU nothing overlaps: every second the loader takes is waited for in next(),
    # however deep the prefetch. The span runs from the first request to the last return
    # (the one that found the end).
    waited = sum(delays) + 0.0625
    assert got.batches == 5
    assert got.wait_seconds == pytest.approx(waited)
    assert got.elapsed_seconds == pytest.approx(waited + sum(steps))
    assert got.stall_fraction == pytest.approx(waited / (waited + sum(steps)))
    assert got.batches_per_second == pytest.approx(5 / (waited + sum(steps)))
    assert got.bytes == sum(4 * (i + 1) for i in range(5))  # int32 tensors of i + 1
    assert got.copy_seconds == 0.0 and got.copy_gbps is None and got.copies_pending == 0

    # A second epoch adds to the same counters; reset_metrics() zeroes them.
    consume(prefetcher, clock, steps)
    assert prefetcher.metrics().batches == 10
    assert prefetcher.metrics().wait_seconds == pytest.approx(2 * waited)
    prefetcher.reset_metrics()
    assert prefetcher.metrics() == FeedMetrics()


def test_time_between_epochs_counts_in_elapsed_not_in_wait(clock: FakeClock) -> None:
    prefetcher = CUDAPrefetcher(SleepyLoader(clock, [1.0, 1.0]), device="cpu")
    consume(prefetcher, clock, [2.0, 2.0])
    clock.advance(10.0)  # evaluation between epochs
    consume(prefetcher, clock, [2.0, 2.0])
    got = prefetcher.metrics()
    assert got.wait_seconds == pytest.approx(4.0)
    assert got.elapsed_seconds == pytest.approx(4.0 + 8.0 + 10.0)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    docs = random_documents(rng, 50, max_tokens=20, vocab=300, empty_fraction=0.0)
    return write_tokens(tmp_path_factory.mktemp("metrics") / "c.arrow", docs)


@pytest.mark.parametrize("kind", ["token", "packed"])
def test_native_loader_counts_batches_bytes_and_the_consumers_span(
    clock: FakeClock, corpus_file: Path, kind: str
) -> None:
    dataset: Any = (
        TokenDataset(corpus_file) if kind == "token" else PackedDataset(corpus_file, 6, 0)
    )
    loader = arrowloader.DataLoader(dataset, batch_size=4, num_workers=2)
    steps = [0.5] * len(loader)
    batches = []
    for i, batch in enumerate(loader):
        batches.append(batch)
        clock.advance(steps[i])
    got = loader.metrics()
    # Native assembly does not move the fake clock: the consumer never waited by it, and
    # the span is exactly its steps (the last step precedes the call that ends the epoch).
    assert got.batches == len(loader) == len(batches)
    assert got.wait_seconds == 0.0
    assert got.elapsed_seconds == pytest.approx(sum(steps))
    oracle_bytes = sum(
        v.numel() * v.element_size() for b in batches for v in b.values()
        if isinstance(v, torch.Tensor)
    )
    assert got.bytes == oracle_bytes > 0
    assert got.copy_gbps is None
    loader.reset_metrics()
    assert loader.metrics() == FeedMetrics()


def test_loader_off_the_native_path_counts_nothing(corpus_file: Path) -> None:
    loader = arrowloader.DataLoader(list(range(10)), batch_size=2)
    assert len(list(loader)) == 5
    assert loader.metrics() == FeedMetrics()


def test_copy_bandwidth_and_device_wait_arithmetic(clock: FakeClock) -> None:
    counter = FeedCounter()
    asked = counter.asked()
    clock.advance(0.5)
    counter.handed(asked, {"a": torch.zeros(10, dtype=torch.int64)})
    counter.copies_pending(1)
    pending = counter.metrics()
    assert pending.bytes == 80 and pending.copy_gbps is None and pending.copies_pending == 1
    counter.copied(nbytes=4_000_000_000, copy_seconds=0.5, device_wait_seconds=0.25)
    counter.copied(nbytes=2_000_000_000, copy_seconds=1.0, device_wait_seconds=-0.75)
    counter.copies_pending(0)
    got = counter.metrics()
    assert got.timed_bytes == 6_000_000_000
    assert got.copy_seconds == pytest.approx(1.5)
    assert got.copy_gbps == pytest.approx(4.0)  # 6e9 bytes in 1.5 s
    assert got.device_wait_seconds == pytest.approx(0.25)  # a copy done early is no wait
    assert got.wait_seconds == pytest.approx(0.5) and got.elapsed_seconds == pytest.approx(0.5)
    as_dict = got.as_dict()
    assert as_dict["copy_gbps"] == pytest.approx(4.0)
    assert as_dict["stall_fraction"] == pytest.approx(1.0)
    assert set(as_dict) >= {"batches", "bytes", "wait_seconds", "elapsed_seconds"}
    assert "4.0 GB/s" in got.summary() and "100.0% stall" in got.summary()


def test_before_any_batch_the_fractions_are_zero() -> None:
    empty = FeedMetrics()
    assert empty.stall_fraction == 0.0 and empty.batches_per_second == 0.0
    assert empty.copy_gbps is None
    assert "0 batches" in empty.summary()


def test_tensor_bytes_of_nested_batches() -> None:
    batch = {
        "a": torch.zeros(3, 4, dtype=torch.int64),
        "b": [torch.zeros(5, dtype=torch.int32), ("x", torch.zeros(2, dtype=torch.bfloat16))],
        "c": 7,
        "d": np.zeros(100),  # not a tensor: not copied by the prefetcher, not counted
    }
    assert tensor_bytes(batch) == 3 * 4 * 8 + 5 * 4 + 2 * 2
    assert tensor_bytes(torch.zeros(0)) == 0 and tensor_bytes(None) == 0
