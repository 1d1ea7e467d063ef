"""arrowloader.plan against torch's own samplers: the same indices, from the same random
numbers, leaving the generators in the same state."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch
from arrowloader.plan import EpochPlan, random_sampler_order
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("num_samples", [None, 5, 37, 100])
def test_random_sampler_order_is_torchs(replacement: bool, num_samples: Optional[int]) -> None:
    data = list(range(37))
    ours_gen, torch_gen = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    ours = RandomSampler(data, replacement, num_samples, generator=ours_gen)
    theirs = RandomSampler(data, replacement, num_samples, generator=torch_gen)
    assert random_sampler_order(ours).tolist() == list(theirs)
    assert torch.equal(ours_gen.get_state(), torch_gen.get_state())


def test_random_sampler_without_generator_draws_its_seed_from_the_global_one() -> None:
    data = list(range(20))
    torch.manual_seed(12)
    ours = random_sampler_order(RandomSampler(data))
    after_ours = torch.default_generator.get_state()
    torch.manual_seed(12)
    theirs = list(RandomSampler(data))
    assert ours.tolist() == theirs
    assert torch.equal(after_ours, torch.default_generator.get_state())


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_epoch_plan_yields_the_batch_samplers_batches(drop_last: bool, shuffle: bool) -> None:
    data = list(range(23))

    def batch_sampler(seed: int) -> BatchSampler:
        generator = torch.Generator().manual_seed(seed)
        sampler = RandomSampler(data, generator=generator) if shuffle else SequentialSampler(data)
        return BatchSampler(sampler, 5, drop_last)

    plan = EpochPlan(batch_sampler(8))
    assert plan.vectorised
    order = plan.order()
    assert order is not None and order.dtype == np.int64
    assert [b.tolist() for b in plan] == list(batch_sampler(8))
    assert len(order) == (20 if drop_last else 23)


def test_any_other_sampler_is_iterated_as_torch_does() -> None:
    batches = [[3, 1], [0], [2, 2, 4]]
    plan = EpochPlan(batches)
    assert not plan.vectorised and plan.order() is None
    got = list(plan)
    assert [b.tolist() for b in got] == batches
    assert all(b.dtype == np.int64 for b in got)
