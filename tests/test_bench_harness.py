"""The harness's pieces (arrowloader.bench.harness): the replay of the seeded sampler that
W1's token counts come from, the check of warm-up batches against it, the memory sampler's
view of child processes.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from arrowloader.bench.harness import (
    BenchmarkError,
    anon_rss_bytes,
    check_replay,
    child_pids,
    replay_batch_token_counts,
    seeded_sampler,
)
from torch.utils.data import BatchSampler


def test_replay_matches_iterating_torchs_batch_sampler() -> None:
    """The vectorised replay against torch's own BatchSampler, across two epochs."""
    rng = np.random.default_rng(3)
    kept = rng.integers(1, 50, size=100)
    sampler = seeded_sampler(range(100), seed=7)
    batches = [b for _ in range(3) for b in BatchSampler(sampler, 32, drop_last=False)]
    real, padded = replay_batch_token_counts(kept, 32, seed=7, num_batches=10)
    assert real.tolist() == [int(kept[b].sum()) for b in batches[:10]]
    assert padded.tolist() == [int(kept[b].max()) * len(b) for b in batches[:10]]


def test_check_replay_reports_a_loader_off_its_sampler() -> None:
    with pytest.raises(BenchmarkError, match="batch 1"):
        check_replay("x", [(5, 8), (6, 8)], np.array([5, 7]), np.array([8, 8]))


def test_child_processes_are_found_and_measured() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = bytearray(32 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while anon_rss_bytes(child.pid) < 32 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in child_pids()
        assert anon_rss_bytes(child.pid) >= 32 << 20
    finally:
        child.communicate(b"")
    assert anon_rss_bytes(child.pid) == 0  # reaped: no longer readable
