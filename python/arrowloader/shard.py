"""One file of a corpus, opened and checked: the one path by which datasets
(:class:`arrowloader.corpus.Corpus`, which ``arrowloader inspect`` uses too) and
``arrowloader validate`` open a file.

:func:`open_shard` memory-maps an Arrow IPC file or stream (or reads it into memory, or
takes bytes that never were a file) and checks that the token column is there with a
token type. :meth:`Shard.add_tokens` imports the column's record batches into a native
token column, which checks their offsets and nulls; :meth:`Shard.disagreements` and
:meth:`Shard.check_manifest_entry` compare what the shard holds with its manifest entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import pyarrow as pa

from arrowloader import _C
from arrowloader.errors import CorpusFormatError
from arrowloader.manifest import Manifest, ShardEntry, shard_disagreements
from arrowloader.sources import (
    OpenedFile,
    column_index,
    iter_column_chunks,
    open_ipc,
    open_ipc_buffer,
)
from arrowloader.wording import plural

#: How a dataset words each disagreement with the manifest (shard_disagreements' keys).
_DISAGREEMENTS = {
    "rows": "{}, the manifest says {}",
    "tokens": "{}, the manifest says {}",
    "token_dtype": "{} tokens, the manifest says {}",
}

#: The disagreements that are counts, and what they count.
_COUNTED = {"rows": "row", "tokens": "token"}


@dataclass
class Shard:
    """A file opened by :func:`open_shard`, its token column known to be there.

    Attributes:
        file: the opened file (schema, record batches, the mapping that holds them).
        column: the token column.
        num_tokens: tokens :meth:`add_tokens` imported, or None before.
    """

    file: OpenedFile
    column: str
    num_tokens: Optional[int] = None

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def format(self) -> str:
        """``"file"`` or ``"stream"``."""
        return self.file.format

    @property
    def schema(self) -> pa.Schema:
        return self.file.schema

    @property
    def stat(self) -> Optional[os.stat_result]:
        """``fstat`` of the file while it was mapped or read (None for bytes in memory)."""
        return self.file.stat

    @property
    def num_rows(self) -> int:
        return self.file.num_rows

    @property
    def record_batches(self) -> int:
        return len(self.file.batches)

    @property
    def token_dtype(self) -> str:
        """The value type of the token lists (``"uint16"``, ``"int32"``, ...)."""
        return str(self.schema.field(self.column).type.value_type)

    def add_tokens(
        self,
        tokens: _C.TokenColumn,
        *,
        check_offsets: bool = True,
        column: Optional[str] = None,
        narrow: bool = False,
    ) -> int:
        """Appends every record batch of the token column to ``tokens``, which keeps the
        mapping alive; returns the tokens added.

        Args:
            check_offsets: False skips the pass over every list offset (the index cache
                vouches for them); the structure, nulls and first and last offsets of
                every record batch are checked all the same.
            column: another list column of the file to append instead (a mask, token
                type ids or per-token labels beside the tokens).
            narrow: accept int8, uint8 and bool values too (``tokens`` must be narrow).

        Raises:
            CorpusFormatError: the column's structure, offsets or nulls are corrupt
                (``path``, ``column`` and, where one is at fault, ``row`` set).
        """
        if self.file.batches:
            # The mapping stays alive through this one array; the record batches' own
            # Arrow objects (~3 KB each) are released as they are imported.
            tokens.hold_region(*self.file.mapping_array().__arrow_c_array__())
        before = tokens.num_tokens
        name = str(self.path)
        column = self.column if column is None else column
        chunks = iter_column_chunks(self.file, column, list_column=True, narrow=narrow)
        for array, row in chunks:
            tokens.add_chunk(*array.__arrow_c_array__(), name, row, check_offsets=check_offsets)
        added = tokens.num_tokens - before
        if column == self.column:
            self.num_tokens = added
        return added

    def add_labels(self, labels: _C.ScalarColumn, column: str) -> None:
        """Appends every record batch of the integer ``column`` to ``labels``; raises
        CorpusFormatError as :meth:`add_tokens`."""
        name = str(self.path)
        for array, row in iter_column_chunks(self.file, column, list_column=False):
            labels.add_chunk(*array.__arrow_c_array__(), name, row)

    def token_arrays(self) -> Iterator[tuple[pa.Array, int]]:
        """``(array, first_row_in_file)`` of the token column per record batch, after
        :meth:`add_tokens` checked them."""
        index = self.schema.get_field_index(self.column)
        row = 0
        for batch in self.file.batches:
            yield batch.column(index), row
            row += batch.num_rows

    def disagreements(
        self, manifest: Manifest, entry: ShardEntry
    ) -> dict[str, tuple[Union[int, str], Union[int, str]]]:
        """How the shard differs from its manifest entry (see
        :func:`arrowloader.manifest.shard_disagreements`); call after :meth:`add_tokens`."""
        if self.num_tokens is None:
            raise ValueError(f"{self.path}: add_tokens() counts the tokens; call it first")
        return shard_disagreements(
            manifest, entry, self.column, rows=self.num_rows, tokens=self.num_tokens,
            token_dtype=self.token_dtype,
        )

    def check_manifest_entry(self, manifest: Manifest, entry: ShardEntry) -> None:
        """Raises CorpusFormatError unless the shard agrees with its manifest entry."""
        found = self.disagreements(manifest, entry)
        if found:
            problems = "; ".join(
                _DISAGREEMENTS[what].format(
                    plural(have, _COUNTED[what]) if what in _COUNTED else have, want
                )
                for what, (have, want) in found.items()
            )
            raise CorpusFormatError(
                f"{self.path}: column {self.column!r}: the shard holds {problems}. The "
                f"shard or manifest.json was changed after preparation; run 'arrowloader "
                f"validate {self.path.parent}'",
                path=self.path,
                column=self.column,
            )


def open_shard(
    path: Path,
    column: str,
    *,
    memory: Optional[pa.Buffer] = None,
    mmap: bool = True,
    require_end_of_stream: bool = True,
) -> Shard:
    """Opens one file of a corpus and checks its token column's presence and type.

    Args:
        path: the file; with ``memory``, only the name used in messages.
        column: the token column.
        memory: the bytes of an IPC file or stream, read in place instead of ``path``.
        mmap: False reads the file into memory once instead of mapping it (see
            :func:`arrowloader.sources.open_ipc`).
        require_end_of_stream: reject IPC streams without the end-of-stream marker.

    Raises:
        CorpusFileError: the file cannot be opened, mapped or read.
        CorpusFormatError: it is not a readable IPC file or stream, or the column is
            missing or of another type than a list of int32, int64, uint16 or uint32.
    """
    if memory is not None:
        opened = open_ipc_buffer(memory, path, require_end_of_stream=require_end_of_stream)
    else:
        opened = open_ipc(path, require_end_of_stream=require_end_of_stream, mmap=mmap)
    column_index(opened, column, list_column=True)
    return Shard(opened, column)
