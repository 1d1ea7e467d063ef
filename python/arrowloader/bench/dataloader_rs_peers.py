"""The dataloader-rs peers of W1 and W2: ``dataloader_rs.PyDataloader``, a DataLoader
with torch's arguments whose workers are threads of a Rust thread pool, over the torch
peers' datasets, seeded sampler and collate functions (:mod:`arrowloader.bench.sampled_peers`),
``num_workers`` 0 and 2, the other arguments at their documented defaults
(``prefetch_depth=2``). The rows therefore yield the torch rows' batches.

dataloader-rs publishes wheels for CPython 3.13 and later only: on an older interpreter
:func:`missing_modules` reports it missing and its rows are skipped. It is optional
(``pip install 'arrowloader[peers]'``); nothing here imports it at module import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from arrowloader.bench.harness import PEER_WORKER_COUNTS, Peer, seeded_sampler
from arrowloader.bench.sampled_peers import WorkloadItems, modules_missing, pack_items, pad_items
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions

#: Family name, as ``--peers`` takes it.
FAMILY = "dataloader-rs"
#: What ``--peers`` users install for it.
INSTALL_HINT = "pip install 'arrowloader[peers]' on Python >= 3.13"
#: What the table's notes say of its rows.
NOTE = (
    "dataloader-rs: PyDataloader (Rust thread pool) over the torch rows' datasets, collate "
    "and seeded sampler, workers 0 and 2, prefetch_depth 2"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return modules_missing("dataloader_rs")


def wrap_dataset(dataset: Any) -> Any:
    """``dataset`` as the ``dataloader_rs.PyDataset`` subclass PyDataloader requires: the
    same ``len`` and items."""
    from dataloader_rs import PyDataset

    class TorchDatasetItems(PyDataset):
        def __init__(self, items: Any) -> None:
            super().__init__()
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, index: int) -> Any:
            return self.items[index]

    return TorchDatasetItems(dataset)


def dataloader_rs_peers(items: WorkloadItems) -> list[Peer]:
    """The dataloader-rs rows over ``items``, one per worker count of
    :data:`~arrowloader.bench.harness.PEER_WORKER_COUNTS`."""

    def factory(num_workers: int) -> Any:
        def make_loader(dataset: Any, seed: int) -> Any:
            from dataloader_rs import PyDataloader

            return PyDataloader(
                wrap_dataset(dataset),
                batch_size=items.batch_size,
                sampler=seeded_sampler(dataset, seed),
                num_workers=num_workers,
                collate_fn=items.collate,
                drop_last=items.drop_last,
            )

        return make_loader

    return [
        Peer(
            f"dataloader-rs{items.name} (workers {n})", FAMILY, n, items.open_dataset,
            factory(n), reads_stream=items.reads_stream,
        )
        for n in PEER_WORKER_COUNTS
    ]


def pad_peers(source: Source, options: PadOptions) -> list[Peer]:
    """W1 rows: PyDataloader over the torch peer's documents and collate."""
    return dataloader_rs_peers(pad_items(source, options))


def pack_peers(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> list[Peer]:
    """W2 rows: PyDataloader over the flat stream file's blocks when there is one (the
    strongest form), else over blocks built from the documents."""
    return dataloader_rs_peers(pack_items(source, options, stream))
