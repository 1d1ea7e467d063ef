"""The manifest of a prepared corpus: ``DIR/manifest.json``.

``arrowloader prepare`` writes it last, after every shard: the shards in corpus order
with their rows, tokens, byte sizes and SHA-256 content hashes, the token type, the
vocabulary size, the EOS id, the tokenizer's hash and the command line. Datasets opened
on ``DIR`` take their files from it (and check each file's rows and tokens against it);
``arrowloader inspect`` reads its totals without scanning; ``arrowloader validate``
re-hashes the shards against it.

The manifest is plain JSON, read with :func:`json.loads` and nothing else: nothing in a
corpus folder is ever executed or unpickled. Every shard name is resolved inside the
folder; an absolute name, a ``..`` component or a symbolic link that leads outside the
folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Optional, Union

from arrowloader.errors import CorpusFileError, CorpusFormatError

#: File name of the manifest inside a corpus folder.
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "arrowloader-corpus"
MANIFEST_VERSION = 1
#: Token value types a manifest may name.
TOKEN_DTYPES = ("uint16", "int32", "uint32", "int64")

_HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class ShardEntry:
    """One shard of a prepared corpus, as the manifest lists it.

    Attributes:
        file: the shard's name relative to the corpus folder (POSIX separators).
        rows: documents in the shard.
        tokens: tokens over its documents (EOS included where appended).
        bytes: the file's size.
        sha256: hex SHA-256 of the file's bytes.
    """

    file: str
    rows: int
    tokens: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """What ``manifest.json`` holds; see the module docstring.

    Attributes:
        shards: the shards, in corpus order.
        column: the token column of every shard.
        token_dtype: the value type of the token lists (``"uint16"`` or ``"int32"``).
        vocab_size: every token id is below this.
        eos_token_id: the tokenizer's end-of-sequence id, or None if it has none.
        append_eos: whether every document ends with ``eos_token_id``.
        tokenizer: ``{"source", "kind", "sha256"}`` of the tokenizer used.
        command: the command line that prepared the corpus.
        settings: the other preparation settings (text field, kept fields, shard size,
            engine, fingerprint of inputs and options).
    """

    shards: list[ShardEntry]
    column: str
    token_dtype: str
    vocab_size: int
    eos_token_id: Optional[int]
    append_eos: bool
    tokenizer: dict[str, Any]
    command: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        """Documents over all shards."""
        return sum(shard.rows for shard in self.shards)

    @property
    def num_tokens(self) -> int:
        """Tokens over all shards."""
        return sum(shard.tokens for shard in self.shards)

    @property
    def num_bytes(self) -> int:
        """Bytes over all shard files."""
        return sum(shard.bytes for shard in self.shards)

    def to_json(self) -> dict[str, Any]:
        """The manifest as the JSON object written to ``manifest.json``."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "column": self.column,
            "token_dtype": self.token_dtype,
            "vocab_size": self.vocab_size,
            "eos_token_id": self.eos_token_id,
            "append_eos": self.append_eos,
            "documents": self.num_rows,
            "tokens": self.num_tokens,
            "bytes": self.num_bytes,
            "tokenizer": self.tokenizer,
            "command": self.command,
            "settings": self.settings,
            "shards": [asdict(shard) for shard in self.shards],
        }

    def write(self, folder: Union[str, os.PathLike]) -> Path:
        """Writes ``folder/manifest.json`` atomically (a reader sees the old file or the
        whole new one); returns its path."""
        path = Path(folder) / MANIFEST_NAME
        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path


def shard_disagreements(
    manifest: Manifest, entry: ShardEntry, column: str, *, rows: int, tokens: int,
    token_dtype: str,
) -> dict[str, tuple[Union[int, str], Union[int, str]]]:
    """Where a shard disagrees with its manifest entry: ``{"rows" | "tokens" |
    "token_dtype": (what the shard holds, what the manifest says)}``, in that order, empty
    if it agrees. The one comparison of a shard with its manifest; datasets raise on it
    and ``arrowloader validate`` reports it.

    Args:
        manifest, entry: the manifest and the shard's entry in it.
        column: the token column read from the shard; tokens and their type are
            compared only for the manifest's own column.
        rows, tokens: the shard's rows, and tokens in ``column``.
        token_dtype: the value type of ``column``'s lists (``"uint16"``, ...).
    """
    found: dict[str, tuple[Union[int, str], Union[int, str]]] = {}
    if rows != entry.rows:
        found["rows"] = (rows, entry.rows)
    if column == manifest.column:
        if tokens != entry.tokens:
            found["tokens"] = (tokens, entry.tokens)
        if token_dtype != manifest.token_dtype:
            found["token_dtype"] = (token_dtype, manifest.token_dtype)
    return found


def check_ids_in_vocabulary(manifest: Optional[Manifest], **ids: Optional[int]) -> None:
    """Raises ValueError if an id a dataset writes (``eos_token_id=...``,
    ``pad_token_id=...``) is outside the vocabulary of a prepared corpus: an embedding
    table sized by the manifest's ``vocab_size`` would index out of range."""
    if manifest is None:
        return
    for name, value in ids.items():
        if value is not None and not 0 <= value < manifest.vocab_size:
            raise ValueError(
                f"{name}={value} is outside the corpus vocabulary [0, {manifest.vocab_size}) "
                f"of its manifest (tokenizer {manifest.tokenizer.get('source', '?')})"
            )


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path`` and renames it over ``path``."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def has_manifest(folder: Union[str, os.PathLike]) -> bool:
    """Whether ``folder`` is a folder holding a ``manifest.json``."""
    path = Path(folder)
    return path.is_dir() and (path / MANIFEST_NAME).is_file()


def read_manifest(folder: Union[str, os.PathLike]) -> Manifest:
    """Reads and checks ``folder/manifest.json``.

    Checks the format, the types of every field and that every shard name stays inside
    the folder (see :func:`member_path`); it does not touch the shards themselves.

    Raises:
        CorpusFileError: the manifest is missing or unreadable, or names a file outside
            the folder.
        CorpusFormatError: it is not valid JSON or not an arrowloader corpus manifest.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusFileError(f"{path}: cannot read the manifest: {exc}", path=path) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CorpusFormatError(
            f"{path}: not valid JSON ({exc}); re-run prepare", path=path
        ) from exc
    return manifest_from_json(data, folder, path)


def manifest_from_json(
    data: Any, folder: Path, path: Path, *, check_totals: bool = True,
    check_paths: bool = True,
) -> Manifest:
    """Builds a :class:`Manifest` from a parsed ``manifest.json`` (see read_manifest);
    ``check_totals=False`` accepts totals that disagree with the shards and
    ``check_paths=False`` shard names outside the folder (for validate, which reports
    them shard by shard; whoever follows a name must check it with member_path)."""

    def fail(message: str) -> CorpusFormatError:
        return CorpusFormatError(
            f"{path}: {message}; the manifest is damaged, re-run prepare", path=path
        )

    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise fail(f"not an arrowloader corpus manifest (format {MANIFEST_FORMAT!r})")
    if data.get("version") != MANIFEST_VERSION:
        raise fail(f"manifest version {data.get('version')!r}; this arrowloader reads "
                   f"version {MANIFEST_VERSION}")

    def need(name: str, kind: type, source: dict[str, Any] = data, where: str = "") -> Any:
        value = source.get(name)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise fail(f"{where}{name!r} must be {kind.__name__}, got {value!r}")
        return value

    dtype = need("token_dtype", str)
    if dtype not in TOKEN_DTYPES:
        raise fail(f"'token_dtype' {dtype!r} is not one of {TOKEN_DTYPES}")
    vocab_size = need("vocab_size", int)
    if vocab_size < 1:
        raise fail(f"'vocab_size' must be positive, got {vocab_size}")
    eos = data.get("eos_token_id")
    if eos is not None and (not isinstance(eos, int) or isinstance(eos, bool)
                            or not 0 <= eos < vocab_size):
        raise fail(f"'eos_token_id' must be null or an id below {vocab_size}, got {eos!r}")
    raw_shards = need("shards", list)
    shards = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_shards):
        if not isinstance(entry, dict):
            raise fail(f"shard {i} is not an object")
        where = f"shard {i}: "
        name = need("file", str, entry, where)
        if check_paths:
            member_path(folder, name, path)  # refuses names outside the folder
        if name in seen:
            raise fail(f"{where}{name!r} is listed twice")
        seen.add(name)
        counts = [need(key, int, entry, where) for key in ("rows", "tokens", "bytes")]
        if min(counts) < 0:
            raise fail(f"{where}negative rows, tokens or bytes")
        digest = need("sha256", str, entry, where)
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise fail(f"{where}'sha256' is not 64 lower-case hex digits")
        shards.append(ShardEntry(name, *counts, digest))
    for total, value in (("documents", sum(s.rows for s in shards)),
                         ("tokens", sum(s.tokens for s in shards))):
        if check_totals and total in data and data[total] != value:
            raise fail(f"{total!r} is {data[total]!r} but the shards add up to {value}")
    settings = data.get("settings", {})
    tokenizer = data.get("tokenizer", {})
    if not isinstance(settings, dict) or not isinstance(tokenizer, dict):
        raise fail("'settings' and 'tokenizer' must be objects")
    return Manifest(
        shards=shards,
        column=need("column", str),
        token_dtype=dtype,
        vocab_size=vocab_size,
        eos_token_id=eos,
        append_eos=bool(data.get("append_eos", False)),
        tokenizer=tokenizer,
        command=str(data.get("command", "")),
        settings=settings,
    )


def member_path(folder: Path, name: str, manifest: Optional[Path] = None) -> Path:
    """``folder / name`` for a shard name taken from a manifest, refusing any name that
    leads outside ``folder``: absolute names (POSIX or Windows), ``..`` components, and
    names that resolve outside it through symbolic links.

    Raises:
        CorpusFileError: the name leads outside the folder.
    """
    where = manifest if manifest is not None else folder / MANIFEST_NAME
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        not name
        or "\x00" in name
        or posix.is_absolute()
        or windows.is_absolute()
        or windows.drive
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise CorpusFileError(
            f"{where}: shard name {name!r} is not a plain path inside the corpus folder; "
            "a manifest may only name files inside its own folder",
            path=where,
        )
    path = folder / posix
    root = folder.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise CorpusFileError(
            f"{where}: shard {name!r} resolves to {resolved}, outside the corpus folder "
            f"{root} (a symbolic link?); a manifest may only name files inside its folder",
            path=where,
        )
    return path


def manifest_files(folder: Union[str, os.PathLike]) -> list[Path]:
    """The shard files of the corpus in ``folder``, in manifest order.

    Raises:
        CorpusFileError: the manifest is unreadable, names a file outside the folder, a
            shard is missing, or it lists no shard.
        CorpusFormatError: the manifest is malformed.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    files = []
    for shard in manifest.shards:
        path = member_path(folder, shard.file)
        if not path.is_file():
            raise CorpusFileError(
                f"{folder / MANIFEST_NAME}: shard {shard.file!r} is missing; run "
                f"'arrowloader validate {folder}'",
                path=folder / MANIFEST_NAME,
            )
        files.append(path)
    if not files:
        raise CorpusFileError(
            f"{folder / MANIFEST_NAME}: lists no shards", path=folder / MANIFEST_NAME
        )
    return files


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(_HASH_BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


__all__ = [
    "MANIFEST_NAME",
    "Manifest",
    "check_ids_in_vocabulary",
    "ShardEntry",
    "has_manifest",
    "manifest_files",
    "member_path",
    "read_manifest",
    "sha256_file",
    "shard_disagreements",
]
