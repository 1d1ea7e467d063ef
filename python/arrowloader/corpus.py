"""A corpus: the files of a source with their token (and label) columns imported into
native columns through the Arrow C data interface, zero copy, validated once at open."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from arrowloader import _C
from arrowloader.corpus_index import CorpusIndexCache, IndexCacheOption
from arrowloader.errors import CorpusChangedError, CorpusFormatError
from arrowloader.manifest import Manifest, has_manifest, read_manifest
from arrowloader.mapping_limit import check_room_for_mappings
from arrowloader.object_store import FileSystemLike, is_remote
from arrowloader.shard import open_shard
from arrowloader.shard_cache import RemoteCorpus, fetch_remote
from arrowloader.sources import Source, expand_path, resolve_source
from arrowloader.table_sources import table_source

#: In-memory sources: the bytes of one IPC file or stream (never a file on disk).
MEMORY_SOURCES = (pa.Buffer, bytes, bytearray, memoryview)
#: How an in-memory source is named in messages.
MEMORY_NAME = "<memory>"
#: Rows whose lengths content_digest() reads at a time (8 bytes each).
_DIGEST_BLOCK_ROWS = 1 << 20

#: Folders with more files than this show a progress bar while opening (on a terminal).
_PROGRESS_MIN_FILES = 16


class _ReadAhead:
    """Asks the kernel to start reading the head and tail of the files a few places
    ahead of the one being opened (``posix_fadvise(WILLNEED)``: the reads are queued and
    the call returns), so that on a cold disk the waits for many files overlap instead of
    adding up. Opening a file reads its footer (the tail), its schema and record-batch
    headers and its list offsets (near the head)."""

    AHEAD = 64  # files
    HEAD = 4 << 20  # bytes advised from the start of a file
    TAIL = 1 << 20  # ... and before its end

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = paths if hasattr(os, "posix_fadvise") and len(paths) > 1 else []
        self._advised = 0

    def advance(self, index: int) -> None:
        """File ``index`` is being opened: advise up to :attr:`AHEAD` files past it."""
        while self._advised < min(len(self._paths), index + self.AHEAD):
            path = self._paths[self._advised]
            self._advised += 1
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # the open proper reports it, in order
            try:
                size = os.fstat(fd).st_size
                os.posix_fadvise(fd, 0, min(size, self.HEAD), os.POSIX_FADV_WILLNEED)
                if size > self.HEAD:
                    tail = max(self.HEAD, size - self.TAIL)
                    os.posix_fadvise(fd, tail, size - tail, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # a hint only
            finally:
                os.close(fd)


@dataclass(frozen=True)
class FileIdentity:
    """What tells a file apart from the one opened earlier under the same path: a file
    replaced (another inode), cut short or grown (size), or rewritten (mtime)."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)

    def differences(self, now: FileIdentity) -> list[str]:
        """How ``now`` differs from this identity, in words (empty if it does not)."""
        found = []
        if (now.inode, now.device) != (self.inode, self.device):
            found.append("it was replaced by another file")
        if now.size != self.size:
            how = "cut short" if now.size < self.size else "grown"
            found.append(f"{how}: {self.size} -> {now.size} bytes")
        if now.mtime_ns != self.mtime_ns:
            found.append("modified after it was opened")
        return found


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus and where its rows start in the global row numbering."""

    path: Path
    format: str
    first_row: int
    num_rows: int
    #: the file as it was opened (None for an in-memory source, or where the platform
    #: gives no descriptor to ``fstat``)
    identity: Optional[FileIdentity] = None


class Corpus:
    """The files of ``source`` opened, memory-mapped and checked.

    Every file is opened and checked here, so a bad shard fails at once and not hours
    into a run. The index over all files (global row -> file, record batch, row) costs
    memory per record batch, not per document.

    A folder written by ``arrowloader prepare`` is read in the order of its
    ``manifest.json``, and every shard's rows, tokens and token type are checked against
    the manifest as it is opened (a shard that does not match fails at once).

    Args:
        source: see :func:`arrowloader.sources.resolve_source`; or the bytes of one IPC
            file or stream (``pyarrow.Buffer``, ``bytes``, ``bytearray``, ``memoryview``),
            read in place and named ``<memory>`` in messages; or a Hugging Face
            ``datasets.Dataset`` or a ``pyarrow.Table`` (see
            :mod:`arrowloader.table_sources`: a dataset on disk is read from its Arrow
            files in place; one in memory, and a table, are copied once into IPC bytes).
        column: the token column.
        label_column: an integer column, or None.
        require_end_of_stream: reject IPC streams without the end-of-stream marker.
        mmap: True (default): memory-map every file and read it in place, one mapping
            per file for as long as the corpus lives (a corpus of more files than
            ``vm.max_map_count`` leaves room for is refused before any is opened: see
            :mod:`arrowloader.mapping_limit`). False: read each file into memory once, at
            open (for file systems where files can be cut short or rewritten while in
            use: a mapped file cut short kills the process with SIGBUS). The corpus then
            costs its size in memory.
        vocab_size: if set, every token id must lie in ``[0, vocab_size)``; a batch or
            item holding one outside raises CorpusFormatError naming file, column and
            row. Checked as tokens are copied, so opening stays a pass over offsets only.
        list_columns: per-token list columns read beside the tokens (every row as long as
            its tokens), into :attr:`list_columns`.
        optional_list_columns: the same, read only when the first file has them.
        loss_mask_column: a per-token list column (bool, or integers 0 and 1; every row as
            long as its tokens) saying which tokens are in the loss, into
            :attr:`loss_mask`.
        prompt_length_column: an integer column, each row's prompt length (the tokens left
            out of the loss), into :attr:`prompt_lengths`.
        index_cache: None (default) or False: check every list offset of every file.
            True: after the open, record each file's facts in
            ``<folder>/.arrowloader-index.json``, or in the cache folder
            (:func:`arrowloader.cache_dir.cache_dir`) where the data folder is not
            writable; a later open skips the pass over the offsets of every file whose
            size, times, inode and layout still match (see
            :mod:`arrowloader.corpus_index`). A folder path: keep the entries there.
            Type, buffer-size, zero-copy and null checks run in every case.
        cache_dir, cache_limit, filesystem, storage_options: for a source in object
            storage (``s3://bucket/prefix/``, a glob or a list of URLs): the local shard
            cache its files are copied into before they are opened, its size limit (an
            int or ``"200GB"``), and how the store is reached (see
            :func:`arrowloader.shard_cache.fetch_remote`). Ignored for local sources.

    Attributes:
        files: the files, in corpus order.
        tokens: the native token column (``_C.TokenColumn``) over all files.
        labels: the native label column (``_C.ScalarColumn``) or None.
        loss_mask: the native loss-mask column (``_C.TokenColumn``, narrow) or None.
        prompt_lengths: the native prompt-length column (``_C.ScalarColumn``) or None.
        checked_files: files whose offsets were checked in full by this open.
        vouched_files: files whose offsets pass the index cache made unnecessary.
        index_entries_written: index cache entries this open wrote (or rewrote).
        manifest: the :class:`arrowloader.manifest.Manifest` of a prepared corpus folder,
            else None.
        schema: the schema of the first file (other files may hold other columns
            besides the token and label columns).
    """

    def __init__(
        self,
        source: Source,
        column: str = "input_ids",
        label_column: Optional[str] = None,
        *,
        require_end_of_stream: bool = True,
        index_cache: IndexCacheOption = None,
        mmap: bool = True,
        vocab_size: Optional[int] = None,
        list_columns: Sequence[str] = (),
        optional_list_columns: Sequence[str] = (),
        loss_mask_column: Optional[str] = None,
        prompt_length_column: Optional[str] = None,
        cache_dir: Union[str, os.PathLike, None] = None,
        cache_limit: Union[int, str, None] = None,
        filesystem: Optional[FileSystemLike] = None,
        storage_options: Optional[dict[str, Any]] = None,
    ) -> None:
        #: The remote corpus this one is the local copy of, or None.
        self.remote: Optional[RemoteCorpus] = None
        if is_remote(source):
            self.remote = fetch_remote(
                source, cache_dir=cache_dir, cache_limit=cache_limit, filesystem=filesystem,
                storage_options=storage_options,
            )
            source = self.remote.local_source
        source = table_source(
            source,
            (column, label_column, *list_columns, loss_mask_column, prompt_length_column),
        )
        memory = _memory_buffer(source)
        paths = [Path(MEMORY_NAME)] if memory is not None else resolve_source(source)
        # Each mapped file holds one mapping while the corpus lives: a corpus of more
        # files than the process may map is refused before the first is opened.
        if memory is None and mmap:
            check_room_for_mappings(len(paths), _source_name(source, paths))
        if memory is not None:
            index_cache = None  # nothing on disk to vouch for
        self.manifest: Optional[Manifest] = None
        if memory is None and isinstance(source, (str, os.PathLike)):
            folder = expand_path(source)
            if has_manifest(folder):
                self.manifest = read_manifest(folder)
        cache = CorpusIndexCache(index_cache) if index_cache not in (None, False) else None
        self.tokens = _C.TokenColumn(column)
        if vocab_size is not None:
            self.tokens.vocab_size = check_vocab_size(vocab_size)
        self.labels = _C.ScalarColumn(label_column) if label_column is not None else None
        self.loss_mask = (
            _C.TokenColumn(loss_mask_column, narrow=True)
            if loss_mask_column is not None else None
        )
        self.prompt_lengths = (
            _C.ScalarColumn(prompt_length_column) if prompt_length_column is not None else None
        )
        #: Per-token list columns beside the tokens, by name (every row as long as its
        #: tokens): those asked for, the optional ones the first file has, and a label
        #: column whose values are lists.
        self.list_columns: dict[str, _C.TokenColumn] = {}
        self.files: list[CorpusFile] = []
        self.checked_files = 0
        self.vouched_files = 0
        self.index_entries_written: list[Path] = []
        self._content_digest: Optional[str] = None
        self.schema: Optional[pa.Schema] = None
        first_row = 0
        bar = tqdm(
            paths,
            desc="opening corpus",
            unit="file",
            disable=None if len(paths) > _PROGRESS_MIN_FILES else True,
        )
        ahead = _ReadAhead(paths if memory is None and mmap else [])
        for index, path in enumerate(bar):
            ahead.advance(index)
            name = str(path)
            check = cache.before_open(name) if cache is not None else None
            shard = open_shard(path, column, memory=memory, mmap=mmap,
                               require_end_of_stream=require_end_of_stream)
            num_rows = shard.num_rows
            layout = (shard.format, num_rows, shard.record_batches)
            vouched = check is not None and cache.vouches_for(
                check, shard.stat, *layout, column
            )
            first_chunk = self.tokens.num_chunks
            tokens = shard.add_tokens(self.tokens, check_offsets=not vouched)
            if vouched and tokens != check.voucher.columns[column]:
                # Same facts, other content: the entry is wrong about this file (written
                # by hand, or the file was edited and its times reset). Check it after all.
                self.tokens.check_chunk_offsets(first_chunk, self.tokens.num_chunks)
                vouched = False
            if self.manifest is not None:
                shard.check_manifest_entry(self.manifest, self.manifest.shards[len(self.files)])
            if index == 0:
                self._choose_list_columns(
                    shard.schema, label_column, list_columns, optional_list_columns
                )
            for name, values in self.list_columns.items():
                shard.add_tokens(values, column=name, narrow=True)
                self._check_list_lengths(shard, name, values, first_row, num_rows)
            if self.loss_mask is not None:
                shard.add_tokens(self.loss_mask, column=self.loss_mask.name, narrow=True)
                self._check_list_lengths(
                    shard, self.loss_mask.name, self.loss_mask, first_row, num_rows
                )
            if self.prompt_lengths is not None:
                shard.add_labels(self.prompt_lengths, self.prompt_lengths.name)
            if self.labels is not None and label_column is not None:
                shard.add_labels(self.labels, label_column)
            if check is not None:
                cache.after_open(check, *layout, column, tokens)
            self.vouched_files += vouched
            self.checked_files += not vouched
            identity = FileIdentity.of(shard.stat) if shard.stat is not None else None
            self.files.append(CorpusFile(path, shard.format, first_row, num_rows, identity))
            if self.schema is None:
                self.schema = shard.schema
            first_row += num_rows
        if cache is not None:
            # Only now: an open that failed on any file records nothing.
            self.index_entries_written = cache.save()

    def _choose_list_columns(
        self,
        schema: pa.Schema,
        label_column: Optional[str],
        wanted: Sequence[str],
        optional: Sequence[str],
    ) -> None:
        """Decides, from the first file, which per-token list columns are read."""
        names = [*wanted, *(name for name in optional if name in schema.names)]
        if label_column is not None and label_column in schema.names:
            label_type = schema.field(label_column).type
            if pa.types.is_list(label_type) or pa.types.is_large_list(label_type):
                self.labels = None  # per-token labels: read as a list column
                names.append(label_column)
        for name in dict.fromkeys(names):
            self.list_columns[name] = _C.TokenColumn(name, narrow=True)

    def _check_list_lengths(
        self, shard: Any, name: str, values: _C.TokenColumn, first_row: int, num_rows: int
    ) -> None:
        """Raises CorpusFormatError, naming the first such row, unless every row of the
        list column ``name`` in ``shard`` is as long as its tokens."""
        rows = np.arange(first_row, first_row + num_rows, dtype=np.int64)
        ours, tokens = values.lengths(rows), self.tokens.lengths(rows)
        if not np.array_equal(ours, tokens):
            row = int(np.flatnonzero(ours != tokens)[0])
            raise CorpusFormatError(
                f"{shard.path}: column {name!r} row {row}: {int(ours[row])} values beside "
                f"{int(tokens[row])} tokens in {self.tokens.name!r}; a per-token column must "
                "be as long as the tokens of its row",
                path=shard.path,
                column=name,
                row=row,
            )

    def loss_mask_view(self) -> Optional[_C.LossMask]:
        """The native :class:`_C.LossMask` of the loss-mask or prompt-length column (None
        without either), which batch assemblers apply to causal labels. Freezes the
        columns: call once the token facts (``vocab_size``) are set.

        Raises:
            CorpusFormatError: a prompt length is negative or beyond its row (naming file,
                column and row).
        """
        if self.loss_mask is not None:
            return _C.LossMask(self.tokens, mask=self.loss_mask)
        if self.prompt_lengths is not None:
            return _C.LossMask(self.tokens, prompt_lengths=self.prompt_lengths)
        return None

    def check_unchanged(self) -> None:
        """Raises CorpusChangedError if a file is no longer the one opened: removed,
        replaced, cut short, grown or rewritten (size, mtime, inode and device against
        the ``fstat`` taken when it was opened). One ``stat`` per file.

        Loaders call this at the start of every epoch and when a state is loaded. It
        cannot see a change made after it returned: a mapped file cut short during an
        epoch still kills the process with SIGBUS when a page past its new end is read
        (``mmap=False`` closes that window).

        For a corpus in object storage, the local copies are checked so, and then the
        objects in the store (one listing per folder): one deleted, or of another size or
        modification time than when it was downloaded, raises too (see
        :meth:`arrowloader.shard_cache.RemoteCorpus.check_unchanged`).
        """
        problems = []
        changed = []
        for f in self.files:
            if f.identity is None:
                continue
            try:
                now = FileIdentity.of(os.stat(f.path))
            except OSError as exc:
                problems.append(f"{f.path}: {exc.strerror or exc} (removed or renamed)")
                changed.append(f.path)
                continue
            found = f.identity.differences(now)
            if found:
                problems.append(f"{f.path}: {'; '.join(found)}")
                changed.append(f.path)
        if not problems and self.remote is not None:
            self.remote.check_unchanged()
        if problems:
            raise CorpusChangedError(
                f"{len(problems)} file(s) of the corpus changed since it was opened: "
                + " | ".join(problems)
                + ". A memory-mapped file that changes under a reader serves other data "
                "than the run started with, and one cut short kills the process (SIGBUS). "
                "Open the dataset again once the files are final; where files change while "
                "in use, open with mmap=False.",
                path=changed[0],
            )

    def content_digest(self) -> str:
        """A sha256 (hex) of the corpus's shape: documents and tokens per file, then every
        document's length in order. It tells a corpus apart from another one (two
        corpora with the same length at every row do not occur in practice) without
        depending on where the files lie, so a state taken on one machine resumes on
        another. One pass over the offsets on the first call (int64 lengths, a block of
        rows at a time), then cached."""
        if self._content_digest is None:
            digest = hashlib.sha256(b"arrowloader-corpus/1")
            for f in self.files:
                digest.update(np.array([f.first_row, f.num_rows], dtype="<i8").tobytes())
            total = self.num_rows
            # Where the prefix sums exist (packed datasets build them to plan), lengths
            # are their differences: same bytes, about 5x faster than asking row by row.
            sums = self.tokens.token_offsets() if self.tokens.has_token_offsets else None
            for begin in range(0, total, _DIGEST_BLOCK_ROWS):
                end = min(total, begin + _DIGEST_BLOCK_ROWS)
                if sums is not None:
                    lengths = np.diff(sums[begin : end + 1])
                else:
                    lengths = self.tokens.lengths(np.arange(begin, end, dtype=np.int64))
                digest.update(lengths.astype("<i8").tobytes())
            self._content_digest = digest.hexdigest()
        return self._content_digest

    @property
    def num_rows(self) -> int:
        """Documents over all files."""
        return self.tokens.num_rows

    @property
    def num_tokens(self) -> int:
        """Tokens over all documents."""
        return self.tokens.num_tokens


def check_loss_mask_columns(
    column: str, loss_mask_column: Optional[str], prompt_length_column: Optional[str]
) -> None:
    """Checks a dataset's ``loss_mask_column`` and ``prompt_length_column`` arguments:
    strings, at most one of them, neither the token column.

    Raises:
        TypeError: one is not a string.
        ValueError: both are given, or one names the token column.
    """
    for name, value in (("loss_mask_column", loss_mask_column),
                        ("prompt_length_column", prompt_length_column)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a column name or None, got {type(value).__name__}")
        if value == column:
            raise ValueError(f"{name}={value!r} is the token column; name a column beside "
                             "the tokens")
    if loss_mask_column is not None and prompt_length_column is not None:
        raise ValueError(
            "loss_mask_column and prompt_length_column both say which tokens are in the "
            "loss; give one"
        )


def check_vocab_size(vocab_size: object) -> int:
    """``vocab_size`` as a positive int; raises ValueError / TypeError otherwise."""
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int or None, got {type(vocab_size).__name__}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return vocab_size


def _source_name(source: Any, paths: Sequence[Path]) -> str:
    """A source as a message names it: its path or glob, else its first file and count."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"{paths[0]} and {len(paths) - 1} more" if len(paths) > 1 else str(paths[0])


def _memory_buffer(source: Union[Source, pa.Buffer, bytes]) -> Optional[pa.Buffer]:
    """The buffer of an in-memory source (zero copy), or None for paths."""
    if isinstance(source, pa.Buffer):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return pa.py_buffer(source)
    return None
