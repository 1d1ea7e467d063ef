"""The W1 loaders compared by the benchmark.

Every peer is a :class:`~arrowloader.bench.harness.Peer`: ``open_dataset()`` then
``make_loader(dataset, seed)``. Every W1 loader draws its batches from the same
``RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))``
(:func:`~arrowloader.bench.harness.seeded_sampler`), so with equal seeds all peers yield
the same batches, in the same order, and the real token count of a run can be recomputed
afterwards from the document lengths alone (see ``harness``).

- ``torch``: ``torch.utils.data.DataLoader`` over :class:`MappedArrowDocuments`, a per-item
  map-style dataset slicing the memory-mapped Arrow buffers with numpy, collated with
  ``pad_sequence`` (:func:`pad_collate`), ``num_workers`` 0 and 2.
- ``hf``: Hugging Face ``datasets`` with ``DataCollatorWithPadding`` (module ``hf_peer``).
- ``arrowloader``: ``arrowloader.DataLoader`` over ``TokenDataset`` with default settings.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa
import torch
import torch.utils.data
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

import arrowloader
from arrowloader.bench.harness import Batch, Peer, seeded_sampler
from arrowloader.loader import default_num_threads
from arrowloader.sources import Source, resolve_source

#: The W1 rows are plain :class:`Peer` rows (the name predates W2).
W1Peer = Peer

#: ``num_workers`` of the torch and hf peers; the better torch row is "torch best".
PEER_WORKER_COUNTS = (0, 2)


@dataclass(frozen=True)
class W1Options:
    """What W1 reads and produces.

    Attributes:
        column: the token column (Arrow ``list``/``large_list`` of integers).
        label_column: an integer column returned as ``labels`` int64 ``[B]``, or None.
        batch_size: documents per batch (the last batch of an epoch may be short).
        max_length: documents are truncated to their first ``max_length`` tokens.
        pad_token_id: the id on padded positions of ``input_ids``.
    """

    column: str = "input_ids"
    label_column: Optional[str] = "label"
    batch_size: int = 32
    max_length: int = 1024
    pad_token_id: int = 0


class MappedTokenColumn:
    """A list column of Arrow IPC files as zero-copy numpy views into their mappings.

    Each file is opened with ``pyarrow.memory_map`` and ``pa.ipc.open_file`` (or
    ``open_stream`` for the stream format, e.g. ``save_to_disk`` shards); for every record
    batch the list column's offsets and values buffers are taken as numpy arrays without
    copying. Row ``r`` of chunk ``c`` is ``values[c][offsets[c][r]:offsets[c][r + 1]]``.
    This is the torch peer's data access and, being independent of arrowloader's native
    code, the source of the document lengths the harness counts tokens with.

    Args:
        source: anything ``TokenDataset`` accepts (file, folder, glob, list,
            ``save_to_disk`` folder).
        column: the token column.
        label_column: an integer column, or None.
    """

    def __init__(self, source: Source, column: str, label_column: Optional[str]) -> None:
        self.paths: list[Path] = resolve_source(source)
        self.offsets: list[np.ndarray] = []  # int32 or int64 [rows + 1] per chunk
        self.values: list[np.ndarray] = []  # token ids [tokens] per chunk
        self.labels: list[np.ndarray] = []  # integers [rows] per chunk, if labelled
        self.first_rows: list[int] = []  # global row of each chunk's first row
        rows = 0
        for path in self.paths:
            for batch in _mapped_record_batches(path):
                tokens = batch.column(column)
                # .offsets is adjusted for a sliced array while .values is not, so the
                # two index each other directly.
                self.offsets.append(tokens.offsets.to_numpy(zero_copy_only=True))
                self.values.append(tokens.values.to_numpy(zero_copy_only=True))
                if label_column is not None:
                    self.labels.append(batch.column(label_column).to_numpy(zero_copy_only=True))
                self.first_rows.append(rows)
                rows += batch.num_rows
        self.num_rows = rows

    @property
    def value_itemsize(self) -> int:
        """Bytes per stored token id (4 for int32)."""
        return self.values[0].itemsize if self.values else 0

    def lengths(self) -> np.ndarray:
        """Token count of every document before truncation: int64 ``[num_rows]``."""
        if not self.offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(o.astype(np.int64)) for o in self.offsets])

    def locate(self, row: int) -> tuple[int, int]:
        """``(chunk, row within the chunk)`` of a global row."""
        chunk = bisect.bisect_right(self.first_rows, row) - 1
        return chunk, row - self.first_rows[chunk]

    def document(self, row: int, max_length: int) -> np.ndarray:
        """The first ``max_length`` tokens of a document: a read-only view into the mapping,
        of the column's value type, ``[min(length, max_length)]``."""
        chunk, local = self.locate(row)
        offsets = self.offsets[chunk]
        begin = int(offsets[local])
        end = min(int(offsets[local + 1]), begin + max_length)
        return self.values[chunk][begin:end]

    def label(self, row: int) -> int:
        """The label of a document."""
        chunk, local = self.locate(row)
        return int(self.labels[chunk][local])


def _mapped_record_batches(path: Path) -> list[pa.RecordBatch]:
    mapped = pa.memory_map(str(path), "r")
    try:
        reader = pa.ipc.open_file(mapped)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    except pa.ArrowInvalid:  # not the file format: an IPC stream (save_to_disk writes these)
        mapped.seek(0)
        return list(pa.ipc.open_stream(mapped))


class MappedArrowDocuments(Dataset):
    """The torch peer's dataset: ``ds[i]`` is ``(input_ids, label)``, the document's first
    ``max_length`` tokens as an int64 tensor ``[n]`` and its label as an int (-1 without a
    label column), sliced with numpy from the mapped Arrow buffers.

    Pickled by its arguments, so worker processes map the files themselves.
    """

    def __init__(
        self, source: Source, column: str, label_column: Optional[str], max_length: int
    ) -> None:
        self._args = (source, column, label_column, max_length)
        self.columns = MappedTokenColumn(source, column, label_column)
        self.max_length = max_length
        self.has_labels = label_column is not None

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.columns.num_rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tokens = self.columns.document(index, self.max_length)
        # astype copies out of the read-only mapping (torch.from_numpy refuses to wrap
        # read-only memory without a warning) and widens to W1's int64 in the same pass.
        input_ids = torch.from_numpy(tokens.astype(np.int64))
        label = self.columns.label(index) if self.has_labels else -1
        return input_ids, label


class PadCollate:
    """The torch peer's collate function: ``pad_sequence`` plus a mask built from lengths.

    Returns ``input_ids`` int64 ``[B, L]`` (``pad_token_id`` on padding),
    ``attention_mask`` int64 ``[B, L]`` and, with labels, ``labels`` int64 ``[B]``.
    A class, not a closure, so that it pickles into worker processes under any start method.
    """

    def __init__(self, pad_token_id: int, with_labels: bool) -> None:
        self.pad_token_id = pad_token_id
        self.with_labels = with_labels

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> Batch:
        documents = [input_ids for input_ids, _ in items]
        input_ids = pad_sequence(documents, batch_first=True, padding_value=self.pad_token_id)
        lengths = torch.tensor([len(d) for d in documents], dtype=torch.int64)
        positions = torch.arange(input_ids.shape[1], dtype=torch.int64)
        attention_mask = (positions[None, :] < lengths[:, None]).to(torch.int64)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_labels:
            batch["labels"] = torch.tensor([label for _, label in items], dtype=torch.int64)
        return batch


def torch_peers(source: Source, options: W1Options) -> list[Peer]:
    """The torch rows: one per worker count in :data:`PEER_WORKER_COUNTS`."""

    def open_dataset(seed: int = 0) -> MappedArrowDocuments:
        return MappedArrowDocuments(
            source, options.column, options.label_column, options.max_length
        )

    def loader_with(num_workers: int) -> Callable[[Any, int], torch.utils.data.DataLoader]:
        def make_loader(dataset: Any, seed: int) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(
                dataset,
                batch_size=options.batch_size,
                sampler=seeded_sampler(dataset, seed),
                num_workers=num_workers,
                collate_fn=PadCollate(options.pad_token_id, options.label_column is not None),
                # Runs cross epoch boundaries; restarting the workers at each one would
                # charge the peer for a setting any tuned training loop avoids.
                persistent_workers=num_workers > 0,
            )

        return make_loader

    return [
        Peer(f"torch (workers {n})", "torch", n, open_dataset, loader_with(n))
        for n in PEER_WORKER_COUNTS
    ]


def arrowloader_peer(source: Source, options: W1Options, threads: int = 0) -> Peer:
    """The arrowloader row: ``arrowloader.DataLoader(TokenDataset(...))`` with default
    settings; ``threads`` is its ``num_workers`` (native threads, 0 = one per core, at
    most 4)."""

    def open_dataset(seed: int = 0) -> arrowloader.TokenDataset:
        return arrowloader.TokenDataset(
            source,
            column=options.column,
            label_column=options.label_column,
            max_length=options.max_length,
            pad_token_id=options.pad_token_id,
        )

    def make_loader(dataset: Any, seed: int) -> torch.utils.data.DataLoader:
        return arrowloader.DataLoader(
            dataset,
            batch_size=options.batch_size,
            sampler=seeded_sampler(dataset, seed),
            num_workers=threads,
        )

    shown = threads or default_num_threads()
    return Peer(
        f"arrowloader (threads {shown})", "arrowloader", shown, open_dataset, make_loader
    )
