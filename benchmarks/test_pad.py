"""W1 end to end per loader: the time to receive ``BATCHES_PER_ROUND`` batches.

Every loader draws the same batches (one seeded ``RandomSampler``), so the rounds of all
rows cover the same documents and their times compare directly; ``extra_info`` adds real
tokens/s, counted by replaying the sampler (never by summing masks while timing). The
authoritative comparison, with CPU, memory and time to first batch, is ``arrowloader
bench``; this suite tracks the same figure across commits (``--benchmark-autosave``,
``--benchmark-compare``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from arrowloader.bench import hf_peers
from arrowloader.bench.harness import (
    WARMUP_BATCHES,
    EpochCycler,
    Peer,
    replay_batch_token_counts,
)
from arrowloader.bench.pad import PadOptions, arrowloader_pad_peer
from arrowloader.bench.torch_peers import torch_pad_peers

BATCHES_PER_ROUND = 100
ROUNDS = 5
SEED = 0

#: Row names of the peers, with test ids that ``-k`` can select.
PEER_NAMES = [
    pytest.param("torch (workers 0)", id="torch-workers0"),
    pytest.param("torch (workers 2)", id="torch-workers2"),
    pytest.param("hf collator (workers 0)", id="hf-workers0"),
    pytest.param("hf collator (workers 2)", id="hf-workers2"),
    pytest.param("arrowloader", id="arrowloader"),
]


def build_peer(
    name: str, corpus: Path, options: PadOptions, request: pytest.FixtureRequest
) -> Peer:
    """The peer of that row name (the hf rows need the ``hf_saved_copy`` fixture)."""
    if name == "arrowloader":
        return arrowloader_pad_peer(corpus, options)
    if name.startswith("hf"):
        saved: Path = request.getfixturevalue("hf_saved_copy")
        peers = hf_peers.hf_pad_peers(saved, options)
    else:
        peers = torch_pad_peers(corpus, options)
    return next(peer for peer in peers if peer.name == name)


@pytest.mark.benchmark(group="W1 pad: 100 batches of 32, truncated to 1024")
@pytest.mark.parametrize("peer_name", PEER_NAMES)
def test_pad_batches(
    benchmark,
    peer_name: str,
    bench_corpus: Path,
    pad_options: PadOptions,
    pad_kept_lengths: np.ndarray,
    request: pytest.FixtureRequest,
) -> None:
    peer = build_peer(peer_name, bench_corpus, pad_options, request)
    dataset = peer.open_dataset(SEED)
    cycler = EpochCycler(peer.make_loader(dataset, SEED))
    batches: Iterator = iter(cycler)
    consumed = 0

    def receive_batches() -> None:
        nonlocal consumed
        for _ in range(BATCHES_PER_ROUND):
            next(batches)
        consumed += BATCHES_PER_ROUND

    try:
        for _ in range(WARMUP_BATCHES):  # starts workers / threads before any round
            next(batches)
        consumed = WARMUP_BATCHES
        benchmark.pedantic(receive_batches, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        cycler.shut_down()

    real, _ = replay_batch_token_counts(pad_kept_lengths, pad_options.batch_size, SEED, consumed)
    timed_real_tokens = int(real[WARMUP_BATCHES:].sum())
    benchmark.extra_info["loader"] = peer.name
    benchmark.extra_info["real_tokens"] = timed_real_tokens
    stats = getattr(benchmark.stats, "stats", None) if benchmark.stats else None
    if stats is not None and stats.total > 0:
        benchmark.extra_info["real_tokens_per_s"] = timed_real_tokens / stats.total
