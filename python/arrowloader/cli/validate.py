"""``arrowloader validate``: is a corpus sound, whatever made it?

It takes any source :class:`arrowloader.TokenDataset` accepts: an Arrow IPC file or
stream, a folder of them, a glob, several of these, a Hugging Face ``save_to_disk``
folder, or a folder written by ``arrowloader prepare``. Every file is opened the way the
loader opens it; then its token column passes the loader's own checks (list offsets,
nulls), every column of every record batch passes pyarrow's full validation, and every
token id is checked against the vocabulary size (``--vocab-size``, else the manifest's).

Where the source is a prepared folder, its manifest is checked too: every shard it lists
is there, inside the folder, of the recorded size and (unless ``--quick``) SHA-256, with
the recorded token type, rows and tokens; files that look like shards but are not listed
are reported, as are totals that disagree with the shards. Every problem names the file,
the row where one is at fault, and the reason; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from tqdm.auto import tqdm

from arrowloader import _C
from arrowloader.cli.args import positive_int
from arrowloader.errors import ArrowLoaderError, CorpusError
from arrowloader.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    manifest_from_json,
    member_path,
    sha256_file,
)
from arrowloader.object_store import is_remote
from arrowloader.shard import Shard, open_shard
from arrowloader.shard_cache import fetch_remote
from arrowloader.sources import IPC_SUFFIXES, Source, expand_path, resolve_source
from arrowloader.wording import plural

#: How validate words each disagreement with the manifest (shard_disagreements' keys),
#: in the order it reports them.
_DISAGREEMENTS = {
    "token_dtype": "tokens are {}, the manifest says {}",
    "rows": "holds {}, the manifest says {}",
    "tokens": "holds {}, the manifest says {}",
}

#: The disagreements that are counts, and what they count.
_COUNTED = {"rows": "row", "tokens": "token"}

#: The token column where neither ``--column`` nor a manifest names one.
DEFAULT_COLUMN = "input_ids"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a corpus: the file (a shard, or another file of the source
    such as ``state.json``; None: the manifest itself), the row (None: the whole file)
    and why."""

    shard: Optional[str]
    row: Optional[int]
    reason: str

    @property
    def where(self) -> str:
        """The file the problem is in, as the report names it."""
        return self.shard if self.shard is not None else MANIFEST_NAME

    def __str__(self) -> str:
        where = self.where
        if self.row is not None:
            where += f": row {self.row}"
        return f"{where}: {self.reason}"


@dataclass
class ValidationReport:
    """What :func:`validate_corpus` found.

    Attributes:
        source: the source, as given.
        shards: the data files checked (a manifest's shards, or the files of the source).
        documents: rows over them (a manifest's totals, where there is one).
        tokens: tokens over them.
        hashed: whether the shards' SHA-256 were checked against a manifest.
        vocab_size: the bound token ids were checked against, or None.
        problems: what is wrong, in the order found.
        files: the names the problems give the data files, in order.
        prepared: whether the source is a prepared folder whose manifest was read.
    """

    source: str
    shards: int
    documents: int
    tokens: int
    hashed: bool
    vocab_size: Optional[int]
    problems: list[Problem]
    files: list[str] = field(default_factory=list)
    prepared: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def summary(self) -> str:
        """The problems counted: ``"1 problem in 1 of 1 shard"``, ``"3 problems in 2 of
        4 shards and in manifest.json"``."""
        files = set(self.files)
        bad = {p.shard for p in self.problems if p.shard in files}
        elsewhere = sorted({p.where for p in self.problems if p.shard not in files})
        places = []
        if bad:
            places.append(f"{len(bad)} of {plural(self.shards, 'shard')}")
        places.extend(elsewhere)
        return f"{plural(len(self.problems), 'problem')} in " + " and in ".join(places)


def validate_corpus(
    source: Source,
    *,
    column: Optional[str] = None,
    vocab_size: Optional[int] = None,
    quick: bool = False,
    show_progress: bool = True,
) -> ValidationReport:
    """Checks a corpus (see the module docstring).

    Args:
        source: anything TokenDataset accepts as a source of files.
        column: the token column (default: the manifest's, else ``input_ids``).
        vocab_size: token ids must lie in ``[0, vocab_size)`` (default: the manifest's;
            None and no manifest: ids are not bounded).
        quick: skip re-hashing a prepared corpus's shards (sizes, structure and ids are
            still checked).
        show_progress: a progress bar over the files' bytes (on a terminal).
    """
    label = str(source) if isinstance(source, (str, os.PathLike)) else " ".join(map(str, source))
    if is_remote(source):
        # Downloads verify sizes (and a manifest's SHA-256); the checks below then read
        # the local copies, and name them as the store does.
        source = fetch_remote(source).local_source
    folder = _folder(source)
    if folder is not None and (folder / MANIFEST_NAME).is_file():
        manifest, problems = _read(folder)
        if manifest is not None:
            return _validate_prepared(label, folder, manifest, problems, column, vocab_size,
                                      quick, show_progress)
        paths = _ipc_files(folder)  # the manifest is unusable: check what files there are
    else:
        problems = []
        try:
            paths = resolve_source(source)
        except (ArrowLoaderError, TypeError) as exc:
            problems.append(Problem(_name(getattr(exc, "path", None) or label, folder), None,
                                    _reason(exc, getattr(exc, "path", None))))
            paths = _ipc_files(folder) if folder is not None else []
    column = column or DEFAULT_COLUMN
    names = [_name(path, folder) for path in paths]
    documents = tokens = 0
    with _progress(paths, show_progress) as bar:
        for path, name in zip(paths, names):
            found, rows, count = _check_file(path, name, column, vocab_size)
            problems += found
            documents += rows
            tokens += count
            bar.update(_size(path))
    return ValidationReport(label, len(paths), documents, tokens, False, vocab_size, problems,
                            names)


def _validate_prepared(
    label: str, folder: Path, manifest: Manifest, problems: list[Problem],
    column: Optional[str], vocab_size: Optional[int], quick: bool, show_progress: bool,
) -> ValidationReport:
    """The checks of a prepared folder: every listed shard against its entry and the
    file checks, then the files the manifest does not list."""
    if vocab_size is not None and vocab_size != manifest.vocab_size:
        problems.append(Problem(None, None, f"'vocab_size' is {manifest.vocab_size} but "
                                f"--vocab-size is {vocab_size}; a dataset opened with both "
                                "refuses them"))
    bound = manifest.vocab_size if vocab_size is None else vocab_size
    column = column or manifest.column
    listed = set()
    paths = [folder / entry.file for entry in manifest.shards]
    with _progress(paths, show_progress, total=manifest.num_bytes) as bar:
        for entry in manifest.shards:
            listed.add(entry.file)
            problems.extend(_check_entry(folder, manifest, entry, column, bound, quick))
            bar.update(entry.bytes)
    for path in sorted(folder.iterdir()):
        if path.suffix in IPC_SUFFIXES and path.name not in listed:
            problems.append(Problem(path.name, None, "is in the folder but not listed in "
                                    f"{MANIFEST_NAME} (a dropped manifest entry?)"))
    return ValidationReport(label, len(manifest.shards), manifest.num_rows, manifest.num_tokens,
                            not quick, bound, problems, [e.file for e in manifest.shards],
                            prepared=True)


def _folder(source: Source) -> Optional[Path]:
    """The folder a source is, or None (a file, a glob, a list)."""
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(expand_path(source))
    return path if path.is_dir() else None


def _ipc_files(folder: Path) -> list[Path]:
    """The files of a folder that look like shards (by their suffix), by name."""
    return sorted(p for p in folder.iterdir() if p.suffix in IPC_SUFFIXES and p.is_file())


def _name(path: Union[str, os.PathLike], folder: Optional[Path]) -> str:
    """How the report names a file: relative to the source's folder, else as given."""
    path = Path(path)
    if folder is not None and path != folder:
        try:
            return path.relative_to(folder).as_posix()
        except ValueError:
            pass
    return str(path)


def _reason(exc: BaseException, path: Optional[Union[str, os.PathLike]]) -> str:
    """An error's message without the leading file name the problem is filed under."""
    message = str(exc)
    if path is not None:
        prefix = f"{os.fspath(path)}: "
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _progress(paths: Sequence[Path], show: bool, total: Optional[int] = None) -> Any:
    return tqdm(total=sum(_size(p) for p in paths) if total is None else total, unit="B",
                unit_scale=True, desc="validating", disable=None if show else True)


def _read(folder: Path) -> tuple[Optional[Manifest], list[Problem]]:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        manifest = manifest_from_json(data, folder, path, check_totals=False,
                                      check_paths=False)
    except (OSError, ValueError, ArrowLoaderError) as exc:
        return None, [Problem(None, None, f"cannot be used: {exc}")]
    problems = []
    for total, value in (("documents", manifest.num_rows), ("tokens", manifest.num_tokens)):
        if total in data and data[total] != value:
            problems.append(Problem(None, None, f"{total!r} is {data[total]} but the listed "
                                    f"shards add up to {value} (a dropped manifest entry?)"))
    return manifest, problems


def _check_entry(folder: Path, manifest: Manifest, entry: ShardEntry, column: str,
                 vocab_size: Optional[int], quick: bool) -> list[Problem]:
    """A listed shard: there, of its size and hash, then the checks of every file and
    the agreement of its rows, tokens and token type with the entry."""
    def problem(reason: str, row: Optional[int] = None) -> list[Problem]:
        return [Problem(entry.file, row, reason)]

    try:
        path = member_path(folder, entry.file)
    except ArrowLoaderError as exc:
        return problem(str(exc))
    if not path.is_file():
        return problem("is missing")
    size = path.stat().st_size
    if size != entry.bytes:
        return problem(f"holds {size} bytes, the manifest says {entry.bytes} (truncated or "
                       "rewritten)")
    found = []
    if not quick:
        digest = sha256_file(path)
        if digest != entry.sha256:
            found += problem(f"content hash {digest[:16]}... differs from the manifest's "
                             f"{entry.sha256[:16]}... (the file changed after preparation)")
    checked, _, _ = _check_file(path, entry.file, column, vocab_size, (manifest, entry))
    return found + checked


def _check_file(
    path: Path,
    name: str,
    column: str,
    vocab_size: Optional[int],
    listed: Optional[tuple[Manifest, ShardEntry]] = None,
) -> tuple[list[Problem], int, int]:
    """The checks of one data file: opened as the loader opens it, its token column
    through the loader's checks (offsets, nulls), every column through pyarrow's full
    validation, ids below ``vocab_size``, and its agreement with its manifest entry
    (``listed``). Returns the problems, and the rows and tokens it holds."""
    def problem(reason: str, row: Optional[int] = None) -> Problem:
        return Problem(name, row, reason)

    try:
        shard = open_shard(path, column)
        shard.add_tokens(_C.TokenColumn(column))
    except CorpusError as exc:
        return [problem(_reason(exc, path), exc.row)], 0, 0
    found = _invalid_columns(shard, problem)
    if listed is not None:
        disagree = shard.disagreements(*listed)
        for what, phrase in _DISAGREEMENTS.items():
            if what in disagree:
                have, want = disagree[what]
                if what in _COUNTED:
                    have = plural(have, _COUNTED[what])
                found.append(problem(phrase.format(have, want)))
    if vocab_size is not None:
        for array, first_row in shard.token_arrays():
            bad = _first_out_of_vocabulary(array, vocab_size)
            if bad is not None:
                row, token = bad
                found.append(problem(f"token id {token} is not below the vocabulary size "
                                     f"{vocab_size}", first_row + row))
                break
    return found, shard.num_rows, shard.num_tokens or 0


def _invalid_columns(shard: Shard, problem: Any) -> list[Problem]:
    """pyarrow's full validation of every column of every record batch (offsets and
    UTF-8 of strings, nested lists, dictionary indices, ...): one problem per column, at
    the first record batch that fails."""
    found = []
    failed: set[str] = set()
    row = 0
    for batch in shard.file.batches:
        for field_, array in zip(batch.schema, batch.columns):
            if field_.name in failed:
                continue
            try:
                array.validate(full=True)
            except Exception as exc:  # ArrowInvalid, or worse on worse input
                failed.add(field_.name)
                found.append(problem(f"column {field_.name!r} (rows from {row}): "
                                     f"{exc or type(exc).__name__}; pyarrow's full "
                                     "validation rejects it"))
        row += batch.num_rows
    return found


def _first_out_of_vocabulary(array: Any, vocab_size: int) -> Optional[tuple[int, int]]:
    """(row, id) of the first token id outside ``[0, vocab_size)`` in a list array whose
    offsets were checked, else None."""
    offsets = array.offsets.to_numpy()
    begin, end = int(offsets[0]), int(offsets[-1])
    values = array.values.slice(begin, end - begin).to_numpy(zero_copy_only=True)
    if len(values) == 0:
        return None
    outside = (values >= vocab_size) | (values < 0) if values.dtype.kind == "i" else (
        values >= vocab_size)
    hits = np.flatnonzero(outside)
    if len(hits) == 0:
        return None
    position = begin + int(hits[0])
    row = int(np.searchsorted(offsets, position, side="right")) - 1
    return row, int(values[hits[0]])


def add_validate_parser(commands: Any) -> None:
    """Adds ``validate`` to the ``arrowloader`` subcommands."""
    parser = commands.add_parser(
        "validate",
        help="check a corpus: Arrow structure, offsets, nulls, ids (and a manifest's hashes)",
        description="Check every file of a corpus (an Arrow file, a folder of shards, a "
                    "glob, a save_to_disk folder or a prepared folder): Arrow structure of "
                    "every column with pyarrow's full validation, list offsets and nulls of "
                    "the token column, token ids below the vocabulary size; for a prepared "
                    "folder also size and SHA-256, rows and tokens against its manifest. "
                    "Exits 1 naming each bad file, row and reason.",
    )
    parser.add_argument("source", nargs="+", metavar="SOURCE",
                        help="the corpus: a file, a folder or a glob (several are joined)")
    parser.add_argument("--column", default=None,
                        help=f"the token column (default: the manifest's, else {DEFAULT_COLUMN})")
    parser.add_argument("--vocab-size", type=positive_int, default=None,
                        help="token ids must be below this (default: the manifest's, else "
                             "unchecked)")
    parser.add_argument("--quick", action="store_true",
                        help="skip re-hashing the shards of a prepared folder")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace, command: Optional[str] = None) -> int:
    """Runs ``arrowloader validate``; returns 0 if the corpus is sound, else 1."""
    source = args.source[0] if len(args.source) == 1 else list(args.source)
    report = validate_corpus(source, column=args.column, vocab_size=args.vocab_size,
                             quick=args.quick, show_progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.ok else 1
    checks = "sizes, " + ("hashes, " if report.hashed else "") if report.prepared else ""
    checks += "structure, offsets, nulls"
    checks += f", ids < {report.vocab_size:,}" if report.vocab_size is not None else ""
    if report.ok:
        print(f"{report.source}: OK: {plural(report.shards, 'shard')}, "
              f"{plural(report.documents, 'document')}, {plural(report.tokens, 'token')} "
              f"({checks})")
        return 0
    for problem in report.problems:
        print(f"BAD {problem}")
    print(f"{report.source}: {report.summary()} ({checks})")
    return 1
