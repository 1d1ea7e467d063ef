"""arrowloader.ranks: explicit and torch.distributed ranks, and each rank's share of an
epoch against torch's own DistributedSampler."""

from __future__ import annotations

import pytest
import torch
from arrowloader.ranks import rank_order, rank_share, resolve_distributed


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 10, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_rank_order_is_distributed_samplers(
    n: int, world: int, drop_last: bool, shuffle: bool
) -> None:
    for rank in range(world):
        sampler = torch.utils.data.DistributedSampler(
            list(range(n)), num_replicas=world, rank=rank, shuffle=shuffle, seed=3,
            drop_last=drop_last,
        )
        sampler.set_epoch(2)
        got = rank_order(n, rank, world, shuffle=shuffle, seed=3, epoch=2, drop_last=drop_last)
        assert got.tolist() == list(sampler)
        assert len(got) == rank_share(n, world, drop_last) == sampler.num_samples


def test_resolve_distributed_checks_its_arguments() -> None:
    assert resolve_distributed(None, None) == (0, 1)  # no process group here
    assert resolve_distributed(2, 3) == (2, 3)
    with pytest.raises(ValueError, match="pass both rank and world_size"):
        resolve_distributed(1, None)
    for rank, world in ((3, 3), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="is not in range"):
            resolve_distributed(rank, world)
