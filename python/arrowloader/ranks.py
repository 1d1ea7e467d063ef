"""Which share of a distributed run this process takes: explicit arguments, else
``torch.distributed``'s process group, else the whole run."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.distributed


def resolve_distributed(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    """(rank, world_size): the explicit ones, else torch.distributed's when it is
    initialised, else (0, 1).

    Raises:
        ValueError: only one of them is given, or rank is not in range(world_size).
    """
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is not None and world_size is not None:
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def rank_share(num_samples: int, world_size: int, drop_last: bool) -> int:
    """Samples each rank gets of an epoch of ``num_samples`` (see :func:`rank_order`)."""
    if drop_last and num_samples % world_size:
        return math.ceil((num_samples - world_size) / world_size)
    return math.ceil(num_samples / world_size)


def rank_order(
    num_samples: int,
    rank: int,
    world_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool,
) -> np.ndarray:
    """This rank's samples of ``epoch``, as ``torch.utils.data.DistributedSampler`` with
    the same arguments yields them: int64 ``[per_rank]``.

    The epoch's order (a permutation drawn from a generator seeded with ``seed + epoch``,
    or ``0..n-1``) is made a multiple of ``world_size`` long, by repeating its start
    (``drop_last=False``: every rank gets ``ceil(n / world_size)`` samples, so ranks run
    equal batch counts and never wait on one another) or by dropping its tail
    (``drop_last=True``), and rank ``r`` takes every ``world_size``-th sample from ``r``.
    """
    if shuffle:
        generator = torch.Generator()
        generator.manual_seed(seed + epoch)
        order = torch.randperm(num_samples, generator=generator).numpy()
    else:
        order = np.arange(num_samples, dtype=np.int64)
    total = rank_share(num_samples, world_size, drop_last) * world_size
    if total > len(order) and len(order):
        order = np.resize(order, total)  # repeats the start, as many times as needed
    return np.ascontiguousarray(order[rank:total:world_size], dtype=np.int64)
