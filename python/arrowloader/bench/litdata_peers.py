"""The litdata peers of W1 and W2: litdata's ``StreamingDataset`` + ``StreamingDataLoader``
over the corpus converted by its own ``optimize`` step, as litdata's documentation has it
for pretraining (``TokensLoader``) and for samples (the default item loader).

- W2: ``optimize`` writes the flat stream file's blocks (``seq_len + 1`` tokens each, the
  EOS ids already in them, the stream's dtype) into chunks of whole blocks for
  ``TokensLoader``; ``StreamingDataset(item_loader=TokensLoader(block_size=seq_len + 1),
  shuffle=True, drop_last=True, seed=seed)`` reads them back. Every block is one of the
  torch rows' blocks; the order is litdata's own shuffle (chunks shuffled, then the blocks
  within them), so a run cannot replay the torch rows' order, but every W2 batch is full.
- W1: ``optimize`` writes one sample per document (``input_ids`` as stored, ``label``);
  ``StreamingDataset(shuffle=True, seed=seed)`` reads them, and the collate function
  truncates, widens to int64 and pads as the torch peer's does. The order is litdata's,
  so the rows count their tokens from each batch as it arrives
  (:attr:`~arrowloader.bench.harness.Peer.counts_in_loop`).

Both load with ``StreamingDataLoader(batch_size, num_workers)``, workers 0 and 2 (kept
across epochs). The ``optimize`` step is timed apart and reported above the table
(:class:`OptimizedCopy`); for the reference corpus its output is cached with the time it
took.

litdata's package requires torchvision and a newer torch than this project pins, although
neither is needed to load tokens: it is installed without its dependencies (README,
Benchmarks) and is not in an extra. Nothing here imports it at module import time.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from arrowloader.bench.harness import PEER_WORKER_COUNTS, Batch, Peer
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.sampled_peers import modules_missing
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.bench.torch_peers import PadCollate
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions

#: Family name, as ``--peers`` takes it.
FAMILY = "litdata"
#: What ``--peers`` users install for it (its own dependencies would replace torch).
INSTALL_HINT = "pip install --no-deps litdata && pip install lightning-utilities boto3 obstore"
#: Blocks of one W2 chunk (litdata's examples write chunks of a few MB of tokens).
BLOCKS_PER_CHUNK = 512
#: Documents of one W1 chunk.
DOCUMENTS_PER_CHUNK = 8192
#: Blocks or documents per ``optimize`` input (one call of the writing function).
ITEMS_PER_INPUT = 4096
#: File in an optimized folder that records how long ``optimize`` took.
STAMP = "arrowloader-optimize.json"
#: What the table's notes say of its rows.
NOTE = (
    "litdata: its optimize step (timed apart, below the table), then StreamingDataset("
    "shuffle=True: litdata's own order, chunks then items; W2 with TokensLoader(block_size))"
    " + StreamingDataLoader, workers 0 and 2; W1 counts its tokens from each batch"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return modules_missing("litdata", "lightning_utilities", "boto3", "obstore")


@dataclass(frozen=True)
class OptimizedCopy:
    """A folder written by litdata's ``optimize``, and how long that took.

    Attributes:
        path: the folder (``index.json`` and the chunks).
        optimize_s: seconds ``optimize`` took to write it.
        cached: whether it was written by an earlier run (its time is that run's).
    """

    path: Path
    optimize_s: float
    cached: bool

    def note(self, what: str) -> str:
        """The line above the table that reports the conversion."""
        when = " (by an earlier run; cached)" if self.cached else ""
        return (
            f"litdata optimize: {what} converted in {self.optimize_s:.1f} s{when}, not part "
            f"of the rows' figures ({self.path})"
        )


def optimized_copy(target: Path, write: Callable[[Path], None]) -> OptimizedCopy:
    """``target`` as written by ``write(folder)`` (which calls ``optimize``), timed; an
    existing complete copy (its :data:`STAMP` present) is reused with its recorded time.
    Written under ``<target>.partial`` and renamed when complete."""
    stamp = target / STAMP
    if stamp.is_file():
        return OptimizedCopy(target, float(json.loads(stamp.read_text())["optimize_s"]), True)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    write(partial)
    seconds = time.perf_counter() - started
    (partial / STAMP).write_text(json.dumps({"optimize_s": seconds}))
    partial.replace(target)
    return OptimizedCopy(target, seconds, False)


def _optimize(fn: Callable[[Any], Iterator[Any]], inputs: list[Any], folder: Path,
              chunk_size: int, tokens: bool) -> None:
    from litdata import optimize
    from litdata.streaming.item_loader import TokensLoader

    # optimize() sets the process's multiprocessing start method to "spawn" for good:
    # every DataLoader with workers built after it would spawn its workers (other peers
    # measured with another start-up than torch's default, and spawned workers whose
    # queue threads are killed mid-send when they exit, aborting them). It is put back.
    start_method = multiprocessing.get_start_method(allow_none=True)
    try:
        optimize(
            fn=fn,
            inputs=inputs,
            output_dir=str(folder),
            chunk_size=chunk_size,
            item_loader=TokensLoader() if tokens else None,
            num_workers=os.cpu_count() or 1,
            verbose=False,
        )
    finally:
        multiprocessing.set_start_method(start_method, force=True)


# --------------------------------------------------------------------------- W2 pack


def stream_blocks(span: tuple[str, str, int, int, int]) -> Iterator[torch.Tensor]:
    """``optimize``'s function for W2: blocks ``first`` to ``last - 1`` of a flat stream
    file, as tensors ``[block_size]`` of the stream's dtype. ``span`` is ``(path, dtype,
    block_size, first, last)``."""
    path, dtype, block_size, first, last = span
    stream = np.memmap(path, dtype=np.dtype(dtype), mode="r")
    for block in range(first, last):
        yield torch.from_numpy(np.array(stream[block * block_size : (block + 1) * block_size]))


def write_stream_copy(stream: TokenStreamFile, block_size: int, folder: Path) -> None:
    """litdata's ``TokensLoader`` copy of the stream's whole blocks, into ``folder``."""
    blocks = stream.num_tokens // block_size
    spans = [
        (str(stream.path), stream.dtype.name, block_size, first,
         min(first + ITEMS_PER_INPUT, blocks))
        for first in range(0, blocks, ITEMS_PER_INPUT)
    ]
    _optimize(stream_blocks, spans, folder, block_size * BLOCKS_PER_CHUNK, tokens=True)


class TokenBlocks:
    """W2's collate function over ``TokensLoader`` blocks: stacked, widened to int64,
    ``{"input_ids": blocks[:, :-1], "labels": blocks[:, 1:]}``."""

    def __call__(self, blocks: list[torch.Tensor]) -> Batch:
        stacked = torch.stack(blocks).to(torch.int64)
        return {"input_ids": stacked[:, :-1], "labels": stacked[:, 1:]}


def pack_peers_over(copy: OptimizedCopy, options: PackOptions, dtype: np.dtype) -> list[Peer]:
    """The W2 rows over an optimized copy of the stream, whose tokens are ``dtype``."""

    def open_dataset(seed: int = 0) -> Any:
        from litdata import StreamingDataset
        from litdata.streaming.item_loader import TokensLoader

        return StreamingDataset(
            str(copy.path), item_loader=TokensLoader(block_size=options.block_size),
            shuffle=True, drop_last=True, seed=seed,
        )

    return [
        Peer(
            f"litdata TokensLoader {np.dtype(dtype).name} (workers {n})", FAMILY, n, open_dataset,
            loader_factory(options.batch_size, n, TokenBlocks(), drop_last=True),
        )
        for n in PEER_WORKER_COUNTS
    ]


# --------------------------------------------------------------------------- W1 pad


def documents(span: tuple[Any, str, str, int, int]) -> Iterator[dict[str, Any]]:
    """``optimize``'s function for W1: documents ``first`` to ``last - 1`` of the corpus
    as ``{"input_ids": ids as stored, "label": int}`` (-1 without a label column). ``span``
    is ``(source, column, label_column or "", first, last)``."""
    source, column, label_column, first, last = span
    mapped = MappedTokenColumn(source, column, label_column or None)
    for row in range(first, last):
        yield {
            "input_ids": np.array(mapped.document(row, 2**62)),
            "label": mapped.label(row) if label_column else -1,
        }


def write_document_copy(source: Source, options: PadOptions, folder: Path) -> None:
    """litdata's copy of the corpus's documents (one sample each), into ``folder``."""
    rows = MappedTokenColumn(source, options.column, None).num_rows
    spans = [
        (source, options.column, options.label_column or "", first,
         min(first + ITEMS_PER_INPUT, rows))
        for first in range(0, rows, ITEMS_PER_INPUT)
    ]
    _optimize(documents, spans, folder, DOCUMENTS_PER_CHUNK, tokens=False)


class PadSamples:
    """W1's collate function over litdata's samples: each document's first
    ``max_length`` ids widened to int64, then the torch peer's :class:`PadCollate`."""

    def __init__(self, max_length: int, pad_token_id: int, with_labels: bool) -> None:
        self.max_length = max_length
        self.pad = PadCollate(pad_token_id, with_labels)

    def __call__(self, samples: list[dict[str, Any]]) -> Batch:
        return self.pad([
            (torch.from_numpy(sample["input_ids"][: self.max_length].astype(np.int64)),
             int(sample["label"]))
            for sample in samples
        ])


def pad_peers_over(copy: OptimizedCopy, options: PadOptions) -> list[Peer]:
    """The W1 rows over an optimized copy of the documents."""

    def open_dataset(seed: int = 0) -> Any:
        from litdata import StreamingDataset

        return StreamingDataset(str(copy.path), shuffle=True, drop_last=False, seed=seed)

    collate = PadSamples(
        options.max_length, options.pad_token_id, options.label_column is not None
    )
    return [
        Peer(
            f"litdata StreamingDataset (workers {n})", FAMILY, n, open_dataset,
            loader_factory(options.batch_size, n, collate, drop_last=False),
            counts_in_loop=True,
        )
        for n in PEER_WORKER_COUNTS
    ]


# --------------------------------------------------------------------------- both


def loader_factory(
    batch_size: int, num_workers: int, collate: Callable[[list[Any]], Batch], drop_last: bool
) -> Callable[[Any, int], Any]:
    """``(dataset, seed)`` -> ``StreamingDataLoader`` (the seed is the dataset's)."""

    def make_loader(dataset: Any, seed: int) -> Any:
        from litdata import StreamingDataLoader

        return StreamingDataLoader(
            dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
            drop_last=drop_last, persistent_workers=num_workers > 0,
        )

    return make_loader
