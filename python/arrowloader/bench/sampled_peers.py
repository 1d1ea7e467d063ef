"""What the peers of other loading libraries (Grain, SPDL, dataloader-rs) share: the torch
peers' per-item datasets and collate functions of a workload, and the seeded sampler's
order of each epoch.

Every such row reads exactly what the torch rows read (:mod:`arrowloader.bench.torch_peers`:
documents sliced from the mapped Arrow buffers for W1, blocks sliced from the flat stream
file for W2), and draws each epoch's order from
:func:`~arrowloader.bench.harness.seeded_sampler` as the torch rows do, so it yields the
torch rows' batches in the same order: the harness can count its tokens afterwards, and a
test can compare its batches with torch's. What differs, and what the row measures, is the
library's own machinery: its threads or processes, prefetching and batching.

Each library's module has the same shape as :mod:`arrowloader.bench.torchdata_peers`:
``FAMILY``, ``INSTALL_HINT``, ``missing_modules()``, ``pad_peers(source, options)`` and
``pack_peers(source, options, stream)``; none imports its library at module import time.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch.utils.data
from torch.utils.data import Dataset

from arrowloader.bench.harness import Batch, seeded_sampler
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.bench.torch_peers import (
    FlatStreamBlocks,
    MappedArrowBlocks,
    MappedArrowDocuments,
    PadCollate,
)
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions


@dataclass(frozen=True)
class WorkloadItems:
    """The items and batching of one workload, as the torch rows have them.

    Attributes:
        name: what the rows read, after the library's name in the row name (``""`` for
            W1, ``" flat stream uint16"`` for W2 over the stream file).
        open_dataset: ``(seed)`` -> the torch peers' map-style dataset.
        collate: ``list of items`` -> one batch (W1: :class:`PadCollate`; W2: torch's
            ``default_collate``, which stacks the blocks).
        batch_size: items per batch.
        drop_last: whether the short last batch of an epoch is dropped (W2's are).
        reads_stream: whether the items come from W2's flat stream file.
    """

    name: str
    open_dataset: Callable[[int], Dataset]
    collate: Callable[[list[Any]], Batch]
    batch_size: int
    drop_last: bool
    reads_stream: bool = False


def pad_items(source: Source, options: PadOptions) -> WorkloadItems:
    """W1's items: the torch peer's :class:`MappedArrowDocuments`, collated by
    :class:`PadCollate`, short last batches kept."""

    def open_dataset(seed: int = 0) -> MappedArrowDocuments:
        return MappedArrowDocuments(
            source, options.column, options.label_column, options.max_length
        )

    collate = PadCollate(options.pad_token_id, options.label_column is not None)
    return WorkloadItems("", open_dataset, collate, options.batch_size, drop_last=False)


def pack_items(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> WorkloadItems:
    """W2's items: blocks sliced from the flat stream file (:class:`FlatStreamBlocks`, the
    strongest form) when there is one, else built from the documents
    (:class:`MappedArrowBlocks`); stacked by ``default_collate``, full batches only."""
    collate = torch.utils.data.default_collate
    if stream is not None:

        def open_stream(seed: int = 0) -> FlatStreamBlocks:
            return FlatStreamBlocks(stream.path, stream.dtype, options.seq_len)

        return WorkloadItems(
            f" flat stream {stream.dtype.name}", open_stream, collate, options.batch_size,
            drop_last=True, reads_stream=True,
        )

    def open_documents(seed: int = 0) -> MappedArrowBlocks:
        return MappedArrowBlocks(source, options.column, options.seq_len, options.eos_token_id)

    return WorkloadItems(
        " from documents", open_documents, collate, options.batch_size, drop_last=True
    )


#: Epochs a :class:`SeededBatches` spans (its length must be finite for Grain; no run
#: gets near it).
RUN_EPOCHS = 1_000_000
#: Batches behind the latest one asked for whose epochs :class:`SeededBatches` keeps: more
#: than any peer fetches ahead (Grain's 500 elements per process).
KEPT_BATCHES = 4096


class SeededBatches:
    """The item indices of every batch of a run, epoch after epoch: the batches the torch
    rows' ``BatchSampler`` draws from :func:`~arrowloader.bench.harness.seeded_sampler`
    ``(range(num_items), seed)``, each epoch's permutation drawn once, when first needed,
    in epoch order (as the torch rows draw them, running each pass to exhaustion).

    ``batches[j]`` is batch ``j`` of the run (int64 ``[batch_size]``, or fewer for the
    last batch of an epoch without ``drop_last``), for loaders that fetch batches out of
    order or from several threads (it keeps the epochs of the :data:`KEPT_BATCHES` batches
    before the latest one asked for); iterating yields them all in order, endlessly.
    Pickles as its arguments, so a worker process draws the same epochs itself.
    """

    def __init__(self, num_items: int, batch_size: int, drop_last: bool, seed: int) -> None:
        self._args = (num_items, batch_size, drop_last, seed)
        if num_items <= 0 or batch_size <= 0:
            raise ValueError(f"no batches of {batch_size} out of {num_items} items")
        self.num_items = num_items
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.batches_per_epoch = (
            num_items // batch_size if drop_last else -(-num_items // batch_size)
        )
        if self.batches_per_epoch == 0:
            raise ValueError(f"{num_items} items make no full batch of {batch_size}")
        self._sampler = seeded_sampler(range(num_items), seed)
        self._orders: dict[int, np.ndarray] = {}
        self._drawn = 0  # epochs drawn so far
        self._lock = threading.Lock()
        self._kept_epochs = 2 + KEPT_BATCHES // self.batches_per_epoch

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.batches_per_epoch * RUN_EPOCHS

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The item order of ``epoch``: int64 ``[num_items]``, a permutation."""
        with self._lock:
            while self._drawn <= epoch:
                self._orders[self._drawn] = np.fromiter(iter(self._sampler), dtype=np.int64)
                self._orders.pop(self._drawn - self._kept_epochs, None)
                self._drawn += 1
            order = self._orders.get(epoch)
        if order is None:
            raise IndexError(f"epoch {epoch} was dropped: batches are asked for too far back")
        return order

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} is out of range")
        epoch, batch = divmod(int(index), self.batches_per_epoch)
        begin = batch * self.batch_size
        return self.epoch_order(epoch)[begin : begin + self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        for index in range(len(self)):
            yield self[index]


class ReadBatch:
    """``(item indices)`` -> the collated batch of those items of ``dataset``: one batch's
    work, as the torch rows' fetcher does it (``collate([dataset[i] for i in indices])``).
    A class, so that it pickles into worker processes."""

    def __init__(self, dataset: Any, collate: Callable[[list[Any]], Batch]) -> None:
        self.dataset = dataset
        self.collate = collate

    def __call__(self, indices: Sequence[int]) -> Batch:
        return self.collate([self.dataset[int(i)] for i in indices])


def modules_missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported (not installed)."""
    return [name for name in modules if importlib.util.find_spec(name) is None]
