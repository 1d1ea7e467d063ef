"""The SPDL peers of W1 and W2: an ``spdl.pipeline`` over the torch peers' datasets
(:mod:`arrowloader.bench.sampled_peers`), built as SPDL's documentation builds a
multi-epoch loader on threads: a batch sampler as a continuous source (re-iterated each
epoch), each batch read and collated by one call of a ``pipe`` stage running
``concurrency`` calls at once on the pipeline's thread pool (whole batches, not items,
pass through the pipeline's queues, as SPDL's guide advises for cheap items), outputs in
input order, a sink buffer ahead of the consumer::

    PipelineBuilder()
    .add_source(BatchSampler(sampler, batch_size, drop_last), continuous=True)
    .pipe(read_batch, concurrency=THREADS, output_order="input")
    .add_sink(SINK_BUFFER)
    .build(num_threads=THREADS)

The sampler is :func:`~arrowloader.bench.harness.seeded_sampler`, as for the torch rows,
so the rows yield exactly their batches. ``spdl`` is optional (``pip install
'arrowloader[peers]'``); nothing here imports it at module import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

from torch.utils.data import BatchSampler

from arrowloader.bench.harness import Batch, Peer, seeded_sampler
from arrowloader.bench.sampled_peers import (
    ReadBatch,
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
FAMILY = "spdl"
#: What ``--peers`` users install for it.
INSTALL_HINT = "pip install 'arrowloader[peers]'"
#: The pipeline's threads and the batches read at once (one per core of the reference
#: machine: the reads hold the GIL for part of their time).
THREADS = 2
#: Batches the sink holds ahead of the consumer (``add_sink``'s default).
SINK_BUFFER = 3
#: What the table's notes say of its rows.
NOTE = (
    "spdl: PipelineBuilder with BatchSampler(the seeded sampler) as a continuous source, "
    "pipe(read and collate a batch of the torch rows' items, concurrency 2, outputs in "
    "order), add_sink(3), build(num_threads=2)"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return modules_missing("spdl")


class SpdlEpoch:
    """One epoch of a running pipeline: its outputs, and ``close()`` to stop the pipeline
    (which the harness calls when the run ends)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline
        self._outputs = pipeline.get_iterator()

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return next(self._outputs)

    def close(self) -> None:
        """Stops the pipeline's threads and waits for them."""
        self.pipeline.stop()


class SpdlBatches:
    """An SPDL pipeline over a dataset, as a loader: built and started by the first
    ``iter()``, each ``iter()`` one epoch of it (:class:`SpdlEpoch`)."""

    def __init__(self, dataset: Any, items: WorkloadItems, seed: int) -> None:
        self.dataset = dataset
        self.items = items
        self.seed = seed
        self.pipeline: Optional[Any] = None

    def __iter__(self) -> SpdlEpoch:
        if self.pipeline is None:
            from spdl.pipeline import PipelineBuilder

            items = self.items
            self.pipeline = (
                PipelineBuilder()
                .add_source(
                    BatchSampler(
                        seeded_sampler(self.dataset, self.seed),
                        items.batch_size,
                        items.drop_last,
                    ),
                    continuous=True,
                )
                .pipe(
                    ReadBatch(self.dataset, items.collate),
                    concurrency=THREADS,
                    output_order="input",
                )
                .add_sink(SINK_BUFFER)
                .build(num_threads=THREADS)
            )
            self.pipeline.start()
        return SpdlEpoch(self.pipeline)


def spdl_peers(items: WorkloadItems) -> list[Peer]:
    """The SPDL row over ``items``."""

    def make_loader(dataset: Any, seed: int) -> SpdlBatches:
        return SpdlBatches(dataset, items, seed)

    return [
        Peer(
            f"spdl{items.name} (threads {THREADS})", FAMILY, THREADS, items.open_dataset,
            make_loader, reads_stream=items.reads_stream,
        )
    ]


def pad_peers(source: Source, options: PadOptions) -> list[Peer]:
    """W1 row: SPDL over the torch peer's documents and collate."""
    return spdl_peers(pad_items(source, options))


def pack_peers(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> list[Peer]:
    """W2 row: SPDL over the flat stream file's blocks when there is one (the strongest
    form), else over blocks built from the documents."""
    return spdl_peers(pack_items(source, options, stream))
