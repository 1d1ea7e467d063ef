"""The Grain peers of W1 and W2: ``grain.MapDataset`` pipelines over the torch peers'
datasets (:mod:`arrowloader.bench.sampled_peers`), as Grain's documentation builds one
from a random-access source: ``MapDataset.source(...).map(...).to_iter_dataset(
ReadOptions(num_threads=...))``, read by Grain's thread pool, and the same followed by
``.mp_prefetch(MultiprocessingOptions(num_workers=2))``, read by worker processes.

The source is the batches' item indices in the seeded sampler's order, epoch after epoch
(:class:`~arrowloader.bench.sampled_peers.SeededBatches`), mapped to the collated batch
of those items, in place of ``MapDataset.shuffle`` and ``.batch``: the rows then yield
exactly the torch rows' batches (Grain's shuffle draws another permutation of the same
kind; its ``.batch`` after ``.repeat`` would join epochs into one batch). ``grain`` is optional
(``pip install 'arrowloader[peers]'``); nothing here imports it at module import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np
import torch

from arrowloader.bench.harness import Batch, Peer
from arrowloader.bench.sampled_peers import (
    ReadBatch,
    SeededBatches,
    WorkloadItems,
    modules_missing,
    pack_items,
    pad_items,
)
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions

#: Family name, as ``--peers`` takes it.
FAMILY = "grain"
#: What ``--peers`` users install for it.
INSTALL_HINT = "pip install 'arrowloader[peers]'"
#: Worker processes of the ``mp_prefetch`` row (one per core of the reference machine; 0:
#: no such row).
PROCESSES = 2
#: Threads of Grain's read pool, one row each: ``ReadOptions().num_threads``, its default,
#: and one, the fastest count on the 2-core reference machine (README, Benchmarks).
READ_THREADS = (16, 1)
#: What the table's notes say of its rows.
NOTE = (
    "grain: MapDataset.source(the seeded sampler's batches of indices).map(read and collate "
    "a batch of the torch rows' items).to_iter_dataset(ReadOptions(num_threads=16, its "
    "default, or 1; 500 batches ahead)), one pipeline over every epoch; the mp_prefetch row "
    "adds mp_prefetch(MultiprocessingOptions(num_workers=2)), batches back as numpy "
    "through shared memory"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return modules_missing("grain")


class GrainBatches:
    """The Grain pipeline of one run: an endless iterable of its batches (one endless
    epoch, as Grain pipelines are run for many epochs, so its threads and processes start
    once).

    The source is :class:`~arrowloader.bench.sampled_peers.SeededBatches` (the item
    indices of each batch of the torch rows); ``.map`` reads and collates one batch's
    items (:class:`~arrowloader.bench.sampled_peers.ReadBatch`).

    Args:
        dataset: the torch peers' dataset.
        items: the workload's collate, batch size and ``drop_last``.
        seed: fixes the epochs' orders.
        processes: ``mp_prefetch`` worker processes (0: Grain's thread pool only).
        threads: threads of Grain's read pool (``ReadOptions.num_threads``).
    """

    def __init__(
        self, dataset: Any, items: WorkloadItems, seed: int, processes: int,
        threads: int = READ_THREADS[0],
    ) -> None:
        self.dataset = dataset
        self.items = items
        self.seed = seed
        self.processes = processes
        self.threads = threads

    def __iter__(self) -> Iterator[Batch]:
        import grain

        items = self.items
        collate = NumpyBatches(items.collate) if self.processes else items.collate
        batches = SeededBatches(len(self.dataset), items.batch_size, items.drop_last, self.seed)
        pipeline = grain.MapDataset.source(batches).map(ReadBatch(self.dataset, collate))
        # 500 elements ahead is ReadOptions' default; each element here is one whole batch.
        stream = pipeline.to_iter_dataset(grain.ReadOptions(num_threads=self.threads))
        if self.processes:
            stream = stream.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.processes)
            ).map(as_tensors)
        # Grain's iterator has close(), which the harness calls to stop its threads and
        # processes.
        return iter(stream)


class NumpyBatches:
    """A collate function whose batch's tensors are returned as numpy arrays (views, no
    copy): Grain's worker processes hand numpy arrays to the main process through shared
    memory, and torch tensors would go through torch's own file-descriptor sharing, which
    Grain's shutdown cannot drain. A class, so that it pickles into spawned workers."""

    def __init__(self, collate: Callable[[list[Any]], Batch]) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> dict[str, np.ndarray]:
        return {name: tensor.numpy() for name, tensor in self.collate(items).items()}


def as_tensors(batch: dict[str, np.ndarray]) -> Batch:
    """The batch's numpy arrays as torch tensors over the same memory."""
    return {name: torch.from_numpy(array) for name, array in batch.items()}


def grain_peers(items: WorkloadItems) -> list[Peer]:
    """The Grain rows over ``items``: the thread pool alone (one row per count of
    :data:`READ_THREADS`), then with ``mp_prefetch``."""
    def factory(processes: int, threads: int = READ_THREADS[0]) -> Any:
        def make_loader(dataset: Any, seed: int) -> GrainBatches:
            return GrainBatches(dataset, items, seed, processes, threads)

        return make_loader

    rows = [
        Peer(
            f"grain{items.name} (threads {threads})", FAMILY, threads, items.open_dataset,
            factory(0, threads), reads_stream=items.reads_stream,
        )
        for threads in READ_THREADS
    ]
    if PROCESSES:
        rows.append(
            Peer(
                f"grain{items.name} mp_prefetch (workers {PROCESSES})", FAMILY, PROCESSES,
                items.open_dataset, factory(PROCESSES), reads_stream=items.reads_stream,
            )
        )
    return rows


def pad_peers(source: Source, options: PadOptions) -> list[Peer]:
    """W1 rows: Grain over the torch peer's documents and collate."""
    return grain_peers(pad_items(source, options))


def pack_peers(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> list[Peer]:
    """W2 rows: Grain over the flat stream file's blocks when there is one (the strongest
    form), else over blocks built from the documents."""
    return grain_peers(pack_items(source, options, stream))
