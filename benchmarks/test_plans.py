"""Planning an epoch of 10 million documents: length-grouped (batches of 32) and token
budget (16,384 padded tokens) batch plans, and building each sampler once.

The documents have the reference corpus's lengths (``arrowloader.synthetic``'s
lognormal), truncated to 1024 as in W1; plans read only lengths, so no corpus is written.
The target (BENCHMARKS.md, issue 13): one epoch's plan in at most 1 s. Run with::

    pytest benchmarks/test_plans.py --benchmark-columns=min,median,max
"""

from __future__ import annotations

import numpy as np
import pytest
from arrowloader import LengthGroupedBatchSampler, TokenBudgetBatchSampler
from arrowloader.synthetic import reference_lengths

DOCUMENTS = 10_000_000
MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def lengths() -> np.ndarray:
    """Kept lengths of 10M reference-corpus documents: int64 ``[10M]``."""
    return np.minimum(reference_lengths(DOCUMENTS, np.random.default_rng(0)), MAX_LENGTH)


def sampler_of(kind: str, lengths: np.ndarray) -> object:
    if kind == "length_grouped":
        return LengthGroupedBatchSampler(None, 32, lengths=lengths, seed=0)
    return TokenBudgetBatchSampler(None, 16_384, lengths=lengths, seed=0)


@pytest.mark.benchmark(group="plan one epoch of 10M documents")
@pytest.mark.parametrize("kind", ["length_grouped", "token_budget"])
def test_plan_epoch(benchmark, lengths: np.ndarray, kind: str) -> None:
    sampler = sampler_of(kind, lengths)
    epochs = iter(range(10**6))  # a new epoch each round: nothing is cached between them
    plan = benchmark.pedantic(lambda: sampler.plan(next(epochs)), rounds=5, warmup_rounds=1)
    assert len(plan) == len(sampler)
    benchmark.extra_info["batches"] = len(plan)
    benchmark.extra_info["documents"] = DOCUMENTS


@pytest.mark.benchmark(group="build the sampler over 10M documents (once per run)")
@pytest.mark.parametrize("kind", ["length_grouped", "token_budget"])
def test_build_sampler(benchmark, lengths: np.ndarray, kind: str) -> None:
    sampler = benchmark.pedantic(lambda: sampler_of(kind, lengths), rounds=3)
    assert len(sampler) > 0
