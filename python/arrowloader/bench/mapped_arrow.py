"""The token column of Arrow IPC files as zero-copy numpy views into their mappings.

The benchmark reads the corpus through these views wherever it must not rely on
arrowloader's native code: the torch peers slice their documents and blocks out of them,
the nanoGPT peer's token stream is written from them, and the workloads take the document
lengths they count tokens with from them.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from arrowloader.sources import Source, resolve_source


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
