"""``arrowloader validate``: is a prepared corpus folder what its manifest says?

For every shard the manifest lists: the file is there, inside the folder, of the
recorded size and (unless ``--quick``) SHA-256; it is a readable Arrow IPC file whose
token column has the recorded type, rows and tokens; its list offsets and nulls pass the
loader's own checks; every token id is below the vocabulary size. Files in the folder
that look like shards but are not listed are reported too, as are totals that disagree
with the shards. Every problem names the shard, the row where one is at fault, and the
reason; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm.auto import tqdm

from arrowloader import _C
from arrowloader.errors import ArrowLoaderError, CorpusError
from arrowloader.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    manifest_from_json,
    member_path,
    sha256_file,
)
from arrowloader.shard import open_shard
from arrowloader.sources import IPC_SUFFIXES
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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a corpus: the shard (None: the manifest itself), the row
    (None: the whole shard) and why."""

    shard: Optional[str]
    row: Optional[int]
    reason: str

    def __str__(self) -> str:
        where = self.shard if self.shard is not None else MANIFEST_NAME
        if self.row is not None:
            where += f": row {self.row}"
        return f"{where}: {self.reason}"


@dataclass
class ValidationReport:
    """What :func:`validate_corpus` found."""

    folder: str
    shards: int
    documents: int
    tokens: int
    hashed: bool
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def validate_corpus(
    folder: str | Path, *, quick: bool = False, show_progress: bool = True
) -> ValidationReport:
    """Checks a prepared corpus folder against its manifest (see the module docstring).

    Args:
        folder: the corpus folder.
        quick: skip re-hashing the shards (sizes, structure and ids are still checked).
        show_progress: a progress bar over the shards' bytes (on a terminal).
    """
    folder = Path(folder)
    manifest, problems = _read(folder)
    if manifest is None:
        return ValidationReport(str(folder), 0, 0, 0, not quick, problems)
    listed = set()
    bar = tqdm(total=manifest.num_bytes, unit="B", unit_scale=True, desc="validating",
               disable=None if show_progress else True)
    with bar:
        for entry in manifest.shards:
            listed.add(entry.file)
            problems.extend(_check_shard(folder, manifest, entry, quick))
            bar.update(entry.bytes)
    for path in sorted(folder.iterdir()):
        if path.suffix in IPC_SUFFIXES and path.name not in listed:
            problems.append(Problem(path.name, None, "is in the folder but not listed in "
                                    f"{MANIFEST_NAME} (a dropped manifest entry?)"))
    return ValidationReport(str(folder), len(manifest.shards), manifest.num_rows,
                            manifest.num_tokens, not quick, problems)


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


def _check_shard(folder: Path, manifest: Manifest, entry: ShardEntry,
                 quick: bool) -> list[Problem]:
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
    try:
        shard = open_shard(path, manifest.column)
        shard.add_tokens(_C.TokenColumn(manifest.column))
    except CorpusError as exc:
        return found + problem(str(exc), exc.row)
    disagree = shard.disagreements(manifest, entry)
    for what, phrase in _DISAGREEMENTS.items():
        if what in disagree:
            have, want = disagree[what]
            if what in _COUNTED:
                have = plural(have, _COUNTED[what])
            found += problem(phrase.format(have, want))
    for array, first_row in shard.token_arrays():
        bad = _first_out_of_vocabulary(array, manifest.vocab_size)
        if bad is not None:
            row, token = bad
            found += problem(f"token id {token} is not below the vocabulary size "
                             f"{manifest.vocab_size}", first_row + row)
            break
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
        help="check a prepared corpus against its manifest (hashes, offsets, nulls, ids)",
        description="Check every shard of a prepared corpus folder against its manifest: "
                    "size and SHA-256, Arrow structure, list offsets, nulls, rows and tokens, "
                    "token ids below the vocabulary size. Exits 1 naming each bad shard, "
                    "row and reason.",
    )
    parser.add_argument("folder", metavar="DIR", help="the corpus folder")
    parser.add_argument("--quick", action="store_true", help="skip re-hashing the shards")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace, command: Optional[str] = None) -> int:
    """Runs ``arrowloader validate``; returns 0 if the corpus is sound, else 1."""
    report = validate_corpus(args.folder, quick=args.quick, show_progress=not args.quiet)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 0 if report.ok else 1
    checks = "sizes, " + ("" if args.quick else "hashes, ") + "structure, offsets, nulls, ids"
    if report.ok:
        print(f"{args.folder}: OK: {plural(report.shards, 'shard')}, "
              f"{plural(report.documents, 'document')}, {plural(report.tokens, 'token')} "
              f"({checks})")
        return 0
    for problem in report.problems:
        print(f"BAD {problem}")
    shards = {p.shard for p in report.problems}
    print(f"{args.folder}: {plural(len(report.problems), 'problem')} in {len(shards)} of "
          f"{plural(report.shards, 'shard')} or the manifest ({checks})")
    return 1
