"""The order of an epoch's batches, drawn from torch's own samplers.

The native loader must yield the batches torch's DataLoader would, given the same sampler
or generator. For torch's stock ``BatchSampler`` over a ``RandomSampler`` or
``SequentialSampler`` the epoch's order is computed in one vectorised step that consumes
the random generators exactly as those samplers' ``__iter__`` do (checked against torch
by the tests); any other sampler is iterated batch by batch, as torch does.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

# RandomSampler draws with-replacement samples 32 at a time; mirrored below.
_REPLACEMENT_CHUNK = 32


class EpochPlan:
    """One epoch's batches of dataset indices, in order.

    Iterating yields int64 ``[batch]`` arrays. ``order()`` returns the whole epoch's
    indices at once (int64 ``[samples]``, consecutive ``batch_size`` slices being the
    batches) when the sampler is one whose order can be computed up front, else None.
    Random generators are consumed on the first call of either, as torch's lazy sampler
    iterators consume them on the first batch.
    """

    def __init__(self, index_sampler: Iterable) -> None:
        self._index_sampler = index_sampler
        self._order: Optional[np.ndarray] = None
        self._iterator: Optional[Iterator[np.ndarray]] = None
        self.batch_size = 0
        self.drop_last = False
        self.vectorised = type(index_sampler) is BatchSampler and type(
            index_sampler.sampler
        ) in (RandomSampler, SequentialSampler)
        if self.vectorised:
            self.batch_size = index_sampler.batch_size
            self.drop_last = index_sampler.drop_last

    def order(self, skip: int = 0) -> Optional[np.ndarray]:
        """The epoch's indices after its first ``skip`` samples, int64 ``[samples]``
        (with ``drop_last``, cut to whole batches of the rest), or None when the sampler
        is not vectorised."""
        if not self.vectorised:
            return None
        if self._order is None:
            sampler = self._index_sampler.sampler
            if type(sampler) is SequentialSampler:
                self._order = np.arange(len(sampler.data_source), dtype=np.int64)
            else:
                self._order = random_sampler_order(sampler)
        order = self._order[skip:]
        if self.drop_last:
            order = order[: len(order) - len(order) % self.batch_size]
        return order

    def __iter__(self) -> Iterator[np.ndarray]:
        order = self.order()
        if order is None:
            for batch in self._index_sampler:
                yield np.asarray(batch, dtype=np.int64)
            return
        for begin in range(0, len(order), self.batch_size):
            yield order[begin : begin + self.batch_size]

    def batches_after(self, skip: int) -> Iterator[np.ndarray]:
        """The epoch's batches after its first ``skip`` samples: the sampler's order from
        there in runs of ``batch_size`` (torch's ``BatchSampler`` cuts that order the same
        way), int64 ``[batch]`` each. Only for a ``BatchSampler`` (see
        :func:`counts_samples`)."""
        batch_sampler = self._index_sampler
        order = self.order(skip)
        if order is not None:
            for begin in range(0, len(order), self.batch_size):
                yield order[begin : begin + self.batch_size]
            return
        size = batch_sampler.batch_size
        indices = itertools.islice(iter(batch_sampler.sampler), skip, None)
        while True:
            batch = list(itertools.islice(indices, size))
            if not batch or (batch_sampler.drop_last and len(batch) < size):
                return
            yield np.asarray(batch, dtype=np.int64)


def counts_samples(batch_sampler: Any) -> bool:
    """Whether a loader with ``batch_sampler`` has batches that are runs of one sample
    order (torch's ``BatchSampler``, over any sampler), so that a position can count
    samples and resume into another batch size."""
    return type(batch_sampler) is BatchSampler


def count_batches(num_samples: int, skip: int, batch_size: int, drop_last: bool) -> int:
    """Batches of ``batch_size`` over an order of ``num_samples`` after its first
    ``skip`` (the last one short, or dropped with ``drop_last``)."""
    rest = max(0, num_samples - skip)
    return rest // batch_size if drop_last else -(-rest // batch_size)


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
                torch.randint(
                    high=n, size=(_REPLACEMENT_CHUNK,), dtype=torch.int64, generator=generator
                )
            )
        parts.append(
            torch.randint(
                high=n,
                size=(num_samples % _REPLACEMENT_CHUNK,),
                dtype=torch.int64,
                generator=generator,
            )
        )
    else:
        for _ in range(num_samples // n):
            parts.append(torch.randperm(n, generator=generator))
        parts.append(torch.randperm(n, generator=generator)[: num_samples % n])
    return torch.cat(parts).numpy()
