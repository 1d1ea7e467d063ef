"""The Grain peers of W1 and W2: ``grain.MapDataset`` pipelines over the torch peers'
datasets (:mod:`arrowloader.bench.sampled_peers`), as Grain's documentation builds one
from a random-access source: ``MapDataset.source(...).map(...).to_iter_dataset(
ReadOptions(num_threads=...))``, read by Grain's thread pool.

Grain's worker processes (``.mp_prefetch(MultiprocessingOptions(num_workers=2))``) are
left out: their rows measured below a tenth of torch best here (Grain's thread pool is
its fastest configuration on these workloads), and a spawned worker now and then aborted
as it exited (a daemon thread still passing a batch back when its interpreter shut down).

The source is the batches' item indices in the seeded sampler's order, epoch after epoch
(:class:`~arrowloader.bench.sampled_peers.SeededBatches`), mapped to the collated batch
of those items, in place of ``MapDataset.shuffle`` and ``.batch``: the rows then yield
exactly the torch rows' batches (Grain's shuffle draws another permutation of the same
kind; its ``.batch`` after ``.repeat`` would join epochs into one batch). ``grain`` is optional
(``pip install 'arrowloader[peers]'``); nothing here imports it at module import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

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
#: Threads of Grain's read pool, one row each: ``ReadOptions().num_threads``, its default,
#: and one, the fastest count on the 2-core reference machine (README, Benchmarks).
READ_THREADS = (16, 1)
#: What the table's notes say of its rows.
NOTE = (
    "grain: MapDataset.source(the seeded sampler's batches of indices).map(read and collate "
    "a batch of the torch rows' items).to_iter_dataset(ReadOptions(num_threads=16, its "
    "default, or 1; 500 batches ahead)), one pipeline over every epoch"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return modules_missing("grain")


class GrainBatches:
    """The Grain pipeline of one run: an endless iterable of its batches (one endless
    epoch, as Grain pipelines are run for many epochs, so its threads start once).

    The source is :class:`~arrowloader.bench.sampled_peers.SeededBatches` (the item
    indices of each batch of the torch rows); ``.map`` reads and collates one batch's
    items (:class:`~arrowloader.bench.sampled_peers.ReadBatch`).

    Args:
        dataset: the torch peers' dataset.
        items: the workload's collate, batch size and ``drop_last``.
        seed: fixes the epochs' orders.
        threads: threads of Grain's read pool (``ReadOptions.num_threads``).
    """

    def __init__(
        self, dataset: Any, items: WorkloadItems, seed: int, threads: int = READ_THREADS[0]
    ) -> None:
        self.dataset = dataset
        self.items = items
        self.seed = seed
        self.threads = threads

    def __iter__(self) -> Iterator[Batch]:
        import grain

        items = self.items
        batches = SeededBatches(len(self.dataset), items.batch_size, items.drop_last, self.seed)
        pipeline = grain.MapDataset.source(batches).map(ReadBatch(self.dataset, items.collate))
        # 500 elements ahead is ReadOptions' default; each element here is one whole batch.
        stream = pipeline.to_iter_dataset(grain.ReadOptions(num_threads=self.threads))
        # Grain's iterator has close(), which the harness calls to stop its threads.
        return iter(stream)


def grain_peers(items: WorkloadItems) -> list[Peer]:
    """The Grain rows over ``items``, one per thread count of :data:`READ_THREADS`."""
    def factory(threads: int) -> Any:
        def make_loader(dataset: Any, seed: int) -> GrainBatches:
            return GrainBatches(dataset, items, seed, threads)

        return make_loader

    return [
        Peer(
            f"grain{items.name} (threads {threads})", FAMILY, threads, items.open_dataset,
            factory(threads), reads_stream=items.reads_stream,
        )
        for threads in READ_THREADS
    ]


def pad_peers(source: Source, options: PadOptions) -> list[Peer]:
    """W1 rows: Grain over the torch peer's documents and collate."""
    return grain_peers(pad_items(source, options))


def pack_peers(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> list[Peer]:
    """W2 rows: Grain over the flat stream file's blocks when there is one (the strongest
    form), else over blocks built from the documents."""
    return grain_peers(pack_items(source, options, stream))
