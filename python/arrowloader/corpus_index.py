"""The corpus index cache: what an earlier open learnt about each file, so that opening
the same, unchanged files again can skip the pass over every list offset.

An *entry* is a JSON file per data folder, written after a successful open: for every
file of the folder that was opened, its identity (size, mtime_ns, ctime_ns, inode,
device), its layout (IPC format, rows, record batches) and, per token column whose offsets
passed the check, its token count. It is kept next to the data as
``<folder>/.arrowloader-index.json`` when the folder is writable, else in
``<cache_dir()>/corpus-index/`` (see :mod:`arrowloader.cache_dir`), or in a folder the
caller names.

A file is *vouched for*, and its offsets pass skipped, only when the identity of the
mapped file (``fstat`` of the descriptor it was mapped from, so a path replaced meanwhile
cannot confuse it) equals the entry's, its layout equals the entry's, and the entry's
facts were not taken within :data:`RACY_WINDOW_NS` of the file's last change. Anything
else (a touched, rewritten, replaced, added or truncated file, an unreadable or foreign
entry) means the file is checked in full and the entry rewritten. The structural checks
(types, buffer sizes, zero copy, nulls, the first and last offset of every record batch)
run on every open, whatever the entry says.

Why facts suffice: a record vouches only if its facts were taken at least
:data:`RACY_WINDOW_NS` after the file's last change, so any later write to the file
moves its ctime (which no user can set back) past the recorded one, and an equal ctime
proves that no write happened since the offsets were checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from arrowloader.cache_dir import cache_dir

logger = logging.getLogger("arrowloader")

#: File name of an entry kept next to the data.
ENTRY_NAME = ".arrowloader-index.json"
#: Sub-folder of the cache folder that holds entries of read-only data folders.
CACHE_SUBFOLDER = "corpus-index"
ENTRY_FORMAT = "arrowloader-corpus-index"
ENTRY_VERSION = 1

#: A file that changed less than this before its facts were taken may change again
#: without any fact changing: timestamps tick coarsely (a kernel tick of 1-10 ms; 2 s on
#: FAT; a server's clock on network file systems), so a rewrite of the same size in the
#: same tick leaves size, times and inode as they were. Such a record ("racily clean", as
#: git calls it) vouches for nothing; the next open checks the file again and, the file
#: being older by then, writes a record that does vouch.
RACY_WINDOW_NS = 2_000_000_000

#: ``index_cache`` argument: None or False (off), True (next to the data, else the cache
#: folder), or a folder that holds the entries.
IndexCacheOption = Union[None, bool, str, os.PathLike]

_FACT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


@dataclass(frozen=True)
class FileFacts:
    """What identifies a file's content without reading it."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileFacts:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass
class FileRecord:
    """One file's line in an entry."""

    facts: FileFacts
    #: ``time.time_ns()`` just before the file was mapped and its facts taken
    checked_ns: int
    format: str
    rows: int
    record_batches: int
    #: token column name -> tokens, for columns whose offsets passed the full check
    columns: dict[str, int] = field(default_factory=dict)
    #: the JSON this record was read from; written back as it was while the record is
    #: unchanged (serialising thousands of records anew costs more than the check saves)
    source: Optional[dict[str, Any]] = field(default=None, compare=False, repr=False)

    @property
    def racy(self) -> bool:
        """Whether the file changed too shortly before ``checked_ns`` for its facts to
        prove that it has not changed since (see :data:`RACY_WINDOW_NS`)."""
        changed = max(self.facts.mtime_ns, self.facts.ctime_ns)
        return changed >= self.checked_ns - RACY_WINDOW_NS

    def to_json(self) -> dict[str, Any]:
        if self.source is not None:
            return self.source
        return {
            **{name: getattr(self.facts, name) for name in _FACT_FIELDS},
            "checked_ns": self.checked_ns,
            "format": self.format,
            "rows": self.rows,
            "record_batches": self.record_batches,
            "columns": {
                name: {"tokens": tokens, "offsets_valid": True}
                for name, tokens in sorted(self.columns.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any) -> Optional[FileRecord]:
        """The record ``data`` describes, or None if it is malformed."""
        try:
            facts = FileFacts(*(_int(data[name]) for name in _FACT_FIELDS))
            columns = {
                str(name): _int(column["tokens"])
                for name, column in data["columns"].items()
                if column.get("offsets_valid") is True
            }
            record = cls(
                facts,
                _int(data["checked_ns"]),
                str(data["format"]),
                _int(data["rows"]),
                _int(data["record_batches"]),
                columns,
                data,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return record


def _int(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass; JSON floats are not counts
        raise TypeError(f"expected an integer, got {value!r}")
    return value


@dataclass
class FileCheck:
    """One file's passage through an open: the records that may vouch for it, the facts
    of the file that was mapped, and the record that vouched."""

    name: str
    entries: _FolderEntries
    checked_ns: int
    candidates: list[FileRecord]
    facts: Optional[FileFacts] = None
    voucher: Optional[FileRecord] = None


class _FolderEntries:
    """The entries of one data folder: next to the data and/or in a cache folder."""

    def __init__(self, folder: str, option: IndexCacheOption) -> None:
        self.folder = folder  # absolute
        self.locations = _entry_locations(folder, option)
        self.loaded = [_read_entry(location) for location in self.locations]
        self.records: dict[str, FileRecord] = {}  # this open's records, by file name
        self.forget: set[str] = set()  # files of this open with no facts to record

    def candidates(self, name: str) -> list[FileRecord]:
        found = []
        for files in self.loaded:
            record = FileRecord.from_json(files.get(name)) if name in files else None
            if record is not None:
                found.append(record)
        return found

    def merged_files(self) -> dict[str, Any]:
        """The entry after this open: this open's records, plus earlier records of other
        files of the folder that still exist (another corpus may use them)."""
        files: dict[str, Any] = {}
        for loaded in reversed(self.loaded):  # the first location wins
            for name, data in loaded.items():
                if name in self.records or name in self.forget or name in files:
                    continue
                if os.path.exists(os.path.join(self.folder, name)):
                    files[name] = data
        for name, record in self.records.items():
            files[name] = record.to_json()
        return dict(sorted(files.items()))

    def save(self) -> Optional[Path]:
        """Writes the entry where it can be written, unless it would not change; returns
        where it was written."""
        files = self.merged_files()
        if any(files == loaded for loaded in self.loaded):
            # Up to date somewhere; a later open reads every location. (Where the data
            # folder is read-only, this spares every open a write that fails.)
            return None
        for location in self.locations:
            try:
                _write_entry(location, self.folder, files)
                return location
            except OSError as exc:
                logger.debug("cannot write the corpus index entry %s: %s", location, exc)
        logger.warning(
            "could not write a corpus index entry for %s (tried %s); the next open checks "
            "every file again",
            self.folder,
            ", ".join(str(location) for location in self.locations),
        )
        return None


class CorpusIndexCache:
    """The index cache of one open of a corpus (see the module docstring).

    Use: :meth:`before_open` before a file is mapped, :meth:`vouches_for` after, then
    :meth:`after_open` once its columns are imported and checked; :meth:`save` after the
    whole corpus opened without error.
    """

    def __init__(self, option: IndexCacheOption) -> None:
        if option is None or option is False:
            raise ValueError("CorpusIndexCache needs index_cache=True or a folder")
        if not (option is True or isinstance(option, (str, os.PathLike))):
            raise TypeError(
                "index_cache must be None, True or a folder path, got "
                f"{type(option).__name__}"
            )
        self._option = option
        self._folders: dict[str, _FolderEntries] = {}  # by absolute folder path
        self._by_dirname: dict[str, _FolderEntries] = {}  # by folder as the paths spell it

    def before_open(self, path: str) -> FileCheck:
        """Looks the file up; call before it is mapped (the time taken here is what
        :attr:`FileRecord.checked_ns` means)."""
        dirname, name = os.path.split(path)
        entries = self._by_dirname.get(dirname)
        if entries is None:
            folder = os.path.abspath(dirname or ".")
            entries = self._folders.get(folder)
            if entries is None:
                entries = self._folders[folder] = _FolderEntries(folder, self._option)
            self._by_dirname[dirname] = entries
        return FileCheck(name, entries, time.time_ns(), entries.candidates(name))

    def vouches_for(
        self,
        check: FileCheck,
        stat: Optional[os.stat_result],
        format: str,
        rows: int,
        record_batches: int,
        column: str,
    ) -> bool:
        """Whether the file may skip the offsets pass of ``column``, given ``stat`` (from
        the descriptor it was mapped from, None if unknown) and its layout."""
        if stat is None:
            return False
        check.facts = FileFacts.of(stat)
        for record in check.candidates:
            if (
                record.facts == check.facts
                and not record.racy
                and record.format == format
                and record.rows == rows
                and record.record_batches == record_batches
                and column in record.columns
            ):
                check.voucher = record
                return True
        return False

    def after_open(
        self,
        check: FileCheck,
        format: str,
        rows: int,
        record_batches: int,
        column: str,
        tokens: int,
    ) -> None:
        """Records what the open found (``column``'s offsets are known to be valid)."""
        entries = check.entries
        if check.facts is None:
            # Nothing identifies the bytes that were checked; keep nothing about them.
            entries.forget.add(check.name)
            entries.records.pop(check.name, None)
            return
        voucher = check.voucher
        if voucher is not None and voucher.columns.get(column) == tokens:
            # Nothing new: keeping the record as it was keeps the entry unwritten.
            entries.records[check.name] = voucher
            return
        record = FileRecord(check.facts, check.checked_ns, format, rows, record_batches)
        for old in check.candidates:
            # Columns checked by earlier opens still hold if the file is provably the one
            # they were checked on.
            same = (old.facts, old.format, old.rows, old.record_batches) == (
                record.facts,
                format,
                rows,
                record_batches,
            )
            if same and not old.racy:
                record.columns.update(old.columns)
        record.columns[column] = tokens
        entries.records[check.name] = record

    def save(self) -> list[Path]:
        """Writes every entry that changed; returns where entries were written."""
        written = []
        for entries in self._folders.values():
            location = entries.save()
            if location is not None:
                written.append(location)
        return written


def cache_entry_paths(
    folder: Union[str, os.PathLike], option: IndexCacheOption = True
) -> list[Path]:
    """Where the entry of data folder ``folder`` may be, the preferred place first."""
    return _entry_locations(os.path.abspath(folder), option)


def _entry_locations(folder: str, option: IndexCacheOption) -> list[Path]:
    # Entries outside the data folder are named by its real path, so that two folders
    # never share one and a folder reached through a link finds its own.
    digest = hashlib.sha256(os.fsencode(os.path.realpath(folder))).hexdigest()[:24]
    if option is True:
        # Not created here: reading must leave no folder behind; writing creates it.
        cache_folder = cache_dir(create=False) / CACHE_SUBFOLDER
        return [Path(folder) / ENTRY_NAME, cache_folder / f"{digest}.json"]
    return [Path(os.fspath(option)) / f"{digest}.json"]


def _read_entry(location: Path) -> dict[str, Any]:
    """The ``files`` of the entry at ``location``; empty if it is missing, unreadable,
    malformed or of another version (an entry is only ever a shortcut)."""
    try:
        with open(location, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deep
        return {}
    if (
        not isinstance(data, dict)
        or data.get("format") != ENTRY_FORMAT
        or data.get("version") != ENTRY_VERSION
        or not isinstance(data.get("files"), dict)
    ):
        return {}
    return data["files"]


def _write_entry(location: Path, folder: str, files: dict[str, Any]) -> None:
    """Writes an entry atomically: to a temporary file beside it, then renamed, so that
    ranks opening the same corpus at once never read a half-written entry."""
    location.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "format": ENTRY_FORMAT,
        "version": ENTRY_VERSION,
        "folder": folder,
        "files": files,
    }
    fd, temporary = tempfile.mkstemp(
        prefix=location.name + ".", suffix=".tmp", dir=location.parent
    )
    try:
        if hasattr(os, "fchmod"):  # POSIX: mkstemp's 0600 would hide the entry from
            os.fchmod(fd, 0o644)  # other users of a shared corpus
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(temporary, location)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
