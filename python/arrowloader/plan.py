"""The order of an epoch's batches, drawn from torch's own samplers.

The native loader must yield the batches torch's DataLoader would, given the same sampler
or generator. For torch's stock ``BatchSampler`` over a ``RandomSampler`` or
``SequentialSampler`` the epoch's order is computed in one vectorised step that consumes
the random generators exactly as those samplers' ``__iter__`` do (checked against torch
by the tests); any other sampler is iterated batch by batch, as torch does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

# RandomSampler draws with-replacement samples 32 at a time; mirrored below.
_REPLACEMENT_CHUNK = 32


def epoch_batches(index_sampler: Iterable) -> Iterator[np.ndarray]:
    """Yields each batch's dataset indices as int64 ``[batch]`` arrays, in order.

    ``index_sampler`` is what torch's DataLoader iterates (its ``batch_sampler``). The
    generators are consumed when the first batch is requested, as with torch's lazy
    sampler iterators.
    """
    order = _vectorised_order(index_sampler)
    if order is None:
        for batch in index_sampler:
            yield np.asarray(batch, dtype=np.int64)
        return
    indices, batch_size, drop_last = order
    permutation = indices()
    stop = len(permutation) - len(permutation) % batch_size if drop_last else len(permutation)
    for begin in range(0, stop, batch_size):
        yield permutation[begin : begin + batch_size]


def _vectorised_order(index_sampler: Iterable):
    if type(index_sampler) is not BatchSampler:
        return None
    sampler = index_sampler.sampler
    if type(sampler) is SequentialSampler:
        n = len(sampler.data_source)
        return (lambda: np.arange(n, dtype=np.int64)), index_sampler.batch_size, (
            index_sampler.drop_last
        )
    if type(sampler) is RandomSampler:
        return (lambda: random_sampler_order(sampler)), index_sampler.batch_size, (
            index_sampler.drop_last
        )
    return None


def random_sampler_order(sampler: RandomSampler) -> np.ndarray:
    """The indices one pass of ``iter(sampler)`` yields, as int64 ``[num_samples]``,
    consuming the same random numbers in the same order."""
    n = len(sampler.data_source)
    generator: Optional[torch.Generator] = sampler.generator
    if generator is None:
        seed = int(torch.empty((), dtype=torch.int64).random_().item())
        generator = torch.Generator()
        generator.manual_seed(seed)
    num_samples = sampler.num_samples
    parts = []
    if sampler.replacement:
        for _ in range(num_samples // _REPLACEMENT_CHUNK):
            parts.append(
                torch.randint(high=n, size=(_REPLACEMENT_CHUNK,), dtype=torch.int64,
                              generator=generator)
            )
        parts.append(
            torch.randint(high=n, size=(num_samples % _REPLACEMENT_CHUNK,), dtype=torch.int64,
                          generator=generator)
        )
    else:
        for _ in range(num_samples // n):
            parts.append(torch.randperm(n, generator=generator))
        parts.append(torch.randperm(n, generator=generator)[: num_samples % n])
    return torch.cat(parts).numpy()
