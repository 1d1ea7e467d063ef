"""A corpus: the files of a source with their token (and label) columns imported into
native columns through the Arrow C data interface, zero copy, validated once at open."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from arrowloader import _C
from arrowloader.corpus_index import CorpusIndexCache, IndexCacheOption
from arrowloader.errors import CorpusFormatError
from arrowloader.manifest import Manifest, ShardEntry, has_manifest, read_manifest
from arrowloader.sources import Source, iter_column_chunks, open_ipc, resolve_source

#: Folders with more files than this show a progress bar while opening (on a terminal).
_PROGRESS_MIN_FILES = 16


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus and where its rows start in the global row numbering."""

    path: Path
    format: str
    first_row: int
    num_rows: int


class Corpus:
    """The files of ``source`` opened, memory-mapped and checked.

    Every file is opened and checked here, so a bad shard fails at once and not hours
    into a run. The index over all files (global row -> file, record batch, row) costs
    memory per record batch, not per document.

    A folder written by ``arrowloader prepare`` is read in the order of its
    ``manifest.json``, and every shard's rows, tokens and token type are checked against
    the manifest as it is opened (a shard that does not match fails at once).

    Args:
        source: see :func:`arrowloader.sources.resolve_source`.
        column: the token column.
        label_column: an integer column, or None.
        require_end_of_stream: reject IPC streams without the end-of-stream marker.
        index_cache: None (default) or False: check every list offset of every file.
            True: after the open, record each file's facts in
            ``<folder>/.arrowloader-index.json``, or in the cache folder
            (:func:`arrowloader.cache_dir.cache_dir`) where the data folder is not
            writable; a later open skips the pass over the offsets of every file whose
            size, times, inode and layout still match (see
            :mod:`arrowloader.corpus_index`). A folder path: keep the entries there.
            Type, buffer-size, zero-copy and null checks run in every case.

    Attributes:
        files: the files, in corpus order.
        tokens: the native token column (``_C.TokenColumn``) over all files.
        labels: the native label column (``_C.ScalarColumn``) or None.
        checked_files: files whose offsets were checked in full by this open.
        vouched_files: files whose offsets pass the index cache made unnecessary.
        index_entries_written: index cache entries this open wrote (or rewrote).
        manifest: the :class:`arrowloader.manifest.Manifest` of a prepared corpus folder,
            else None.
    """

    def __init__(
        self,
        source: Source,
        column: str = "input_ids",
        label_column: Optional[str] = None,
        *,
        require_end_of_stream: bool = True,
        index_cache: IndexCacheOption = None,
    ) -> None:
        paths = resolve_source(source)
        self.manifest: Optional[Manifest] = None
        if isinstance(source, (str, os.PathLike)) and has_manifest(source):
            self.manifest = read_manifest(source)
        cache = CorpusIndexCache(index_cache) if index_cache not in (None, False) else None
        self.tokens = _C.TokenColumn(column)
        self.labels = _C.ScalarColumn(label_column) if label_column is not None else None
        self.files: list[CorpusFile] = []
        self.checked_files = 0
        self.vouched_files = 0
        self.index_entries_written: list[Path] = []
        first_row = 0
        bar = tqdm(
            paths,
            desc="opening corpus",
            unit="file",
            disable=None if len(paths) > _PROGRESS_MIN_FILES else True,
        )
        for path in bar:
            name = str(path)
            check = cache.before_open(name) if cache is not None else None
            opened = open_ipc(path, require_end_of_stream=require_end_of_stream)
            num_rows = opened.num_rows
            layout = (opened.format, num_rows, len(opened.batches))
            vouched = check is not None and cache.vouches_for(
                check, opened.stat, *layout, column
            )
            if opened.batches:
                # The mapping stays alive through this one array; the record batches'
                # own Arrow objects (~3 KB each) are released as they are imported.
                self.tokens.hold_region(*opened.mapping_array().__arrow_c_array__())
            first_chunk = self.tokens.num_chunks
            tokens_before = self.tokens.num_tokens
            for array, row in iter_column_chunks(opened, column, list_column=True):
                self.tokens.add_chunk(
                    *array.__arrow_c_array__(), name, row, check_offsets=not vouched
                )
            tokens = self.tokens.num_tokens - tokens_before
            if vouched and tokens != check.voucher.columns[column]:
                # Same facts, other content: the entry is wrong about this file (written
                # by hand, or the file was edited and its times reset). Check it after all.
                self.tokens.check_chunk_offsets(first_chunk, self.tokens.num_chunks)
                vouched = False
            if self.manifest is not None:
                _check_shard(self.manifest, self.manifest.shards[len(self.files)], opened,
                             column, num_rows, tokens)
            if self.labels is not None and label_column is not None:
                for array, row in iter_column_chunks(opened, label_column, list_column=False):
                    self.labels.add_chunk(*array.__arrow_c_array__(), name, row)
            if check is not None:
                cache.after_open(check, *layout, column, tokens)
            self.vouched_files += vouched
            self.checked_files += not vouched
            self.files.append(CorpusFile(path, opened.format, first_row, num_rows))
            first_row += num_rows
        if cache is not None:
            # Only now: an open that failed on any file records nothing.
            self.index_entries_written = cache.save()

    @property
    def num_rows(self) -> int:
        """Documents over all files."""
        return self.tokens.num_rows

    @property
    def num_tokens(self) -> int:
        """Tokens over all documents."""
        return self.tokens.num_tokens


def _check_shard(
    manifest: Manifest, entry: ShardEntry, opened: Any, column: str, rows: int, tokens: int
) -> None:
    """Raises CorpusFormatError unless an opened shard agrees with its manifest entry."""
    problems = []
    if rows != entry.rows:
        problems.append(f"{rows} rows, the manifest says {entry.rows}")
    if column == manifest.column:
        if tokens != entry.tokens:
            problems.append(f"{tokens} tokens, the manifest says {entry.tokens}")
        value_type = str(opened.schema.field(column).type.value_type)
        if value_type != manifest.token_dtype:
            problems.append(f"{value_type} tokens, the manifest says {manifest.token_dtype}")
    if problems:
        raise CorpusFormatError(
            f"{opened.path}: column {column!r}: the shard holds {'; '.join(problems)}. The "
            f"shard or manifest.json was changed after preparation; run 'arrowloader "
            f"validate {opened.path.parent}'"
        )
