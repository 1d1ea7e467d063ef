"""Corpora in object storage: what a URL source (``s3://bucket/prefix/``, a glob, a list
of URLs; other schemes through fsspec) names, listed through a well-kept client.

``s3://`` goes through pyarrow's own ``S3FileSystem`` (C++, part of pyarrow), which takes
credentials, region and endpoint from the usual places (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``~/.aws``
config and credential files, instance roles) unless ``storage_options`` or an explicit
``filesystem`` says otherwise. Another scheme (``gs://``, ``az://``, ...) needs fsspec and
its package for that scheme, wrapped into a pyarrow file system.

A folder-like source is resolved as a local folder is (:mod:`arrowloader.sources`): its
``manifest.json`` (a corpus written by ``arrowloader prepare``) or ``state.json`` (a
``save_to_disk`` folder) decides its files and their order, else its Arrow IPC files in
name order. This module only lists; :mod:`arrowloader.shard_cache` downloads.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from arrowloader.errors import CorpusChangedError, CorpusFileError
from arrowloader.manifest import MANIFEST_NAME

#: Suffixes of the files a folder-like prefix contributes (as for a local folder).
IPC_SUFFIXES = (".arrow", ".arrows", ".ipc", ".feather")
#: Keys of ``storage_options`` that arrowloader reads itself (the rest go to the client).
RETRY_OPTIONS = ("retries", "retry_delay", "retry_max_delay")

FileSystemLike = Any  # a pyarrow.fs.FileSystem or an fsspec AbstractFileSystem


def is_url(source: object) -> bool:
    """Whether ``source`` is a string naming an object store (``scheme://...``, other
    than ``file://``)."""
    if not isinstance(source, str) or "://" not in source:
        return False
    scheme = source.split("://", 1)[0]
    return scheme.isidentifier() and scheme.lower() != "file" and len(scheme) > 1


def is_remote(source: object) -> bool:
    """Whether ``source`` (a path, URL or list of them) names at least one object in an
    object store."""
    if isinstance(source, (list, tuple)):
        return any(is_url(item) for item in source)
    return is_url(source)


@dataclass(frozen=True)
class RemoteObject:
    """One object of a remote corpus.

    Attributes:
        url: its URL, as messages name it.
        path: its path in its file system (``bucket/key``).
        size: its size in bytes when listed.
        mtime_ns: its modification time when listed (the store's ``Last-Modified``), or
            None where the store gives none; with the size, what tells a replaced object
            from the one listed (pyarrow exposes no ETag).
        sha256: the SHA-256 its corpus's manifest records, or None.
    """

    url: str
    path: str
    size: int
    mtime_ns: Optional[int]
    sha256: Optional[str] = None


@dataclass
class RemoteSource:
    """What a URL source names: the objects to download, in corpus order, and how the
    local copy is to be opened.

    Attributes:
        filesystem: the pyarrow file system the objects are read through.
        objects: the data files, in corpus order.
        folder_path: for a folder-like source with a manifest or ``state.json``: the
            folder's path in the file system (its copy is opened as a folder), else None
            (the copies are opened as a list of files).
        folder_files: the small files of that folder (``manifest.json`` or
            ``state.json``) to copy beside the data files.
        scheme: the URL scheme (``s3``, ...).
    """

    filesystem: pafs.FileSystem
    objects: list[RemoteObject]
    folder_path: Optional[str]
    folder_files: list[RemoteObject]
    scheme: str


def split_url(url: str) -> tuple[str, str]:
    """``(scheme, path)`` of ``url``: ``s3://bucket/key`` -> ``("s3", "bucket/key")``."""
    parts = urlsplit(url)
    path = (parts.netloc + parts.path).rstrip("/")
    if not parts.netloc:
        raise CorpusFileError(f"{url}: the URL names no bucket", path=url)
    return parts.scheme.lower(), path


def open_filesystem(
    url: str,
    filesystem: Optional[FileSystemLike] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
) -> pafs.FileSystem:
    """The pyarrow file system ``url`` is read through.

    Args:
        url: a URL of the store (its scheme picks the client).
        filesystem: a ``pyarrow.fs.FileSystem`` (used as it is) or an fsspec file system
            (wrapped in ``pyarrow.fs.PyFileSystem(FSSpecHandler(...))``).
        storage_options: for ``s3://``, keyword arguments of ``pyarrow.fs.S3FileSystem``
            (``access_key``, ``secret_key``, ``session_token``, ``region``,
            ``endpoint_override``, ``scheme``, ...; ``endpoint_url="http://host:port"``
            is taken too); for another scheme, fsspec's options for it. The keys
            ``retries``, ``retry_delay`` and ``retry_max_delay`` are arrowloader's
            (see :class:`arrowloader.shard_cache.RetryPolicy`) and never reach the client.

    Raises:
        CorpusFileError: the client cannot be made (bad options, fsspec missing).
    """
    if filesystem is not None:
        if isinstance(filesystem, pafs.FileSystem):
            return filesystem
        if hasattr(filesystem, "open") and hasattr(filesystem, "ls"):
            return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        raise TypeError(
            "filesystem must be a pyarrow.fs.FileSystem or an fsspec file system, got "
            f"{type(filesystem).__name__}"
        )
    scheme, _ = split_url(url)
    options = {k: v for k, v in (storage_options or {}).items() if k not in RETRY_OPTIONS}
    try:
        if scheme == "s3":
            if not options:
                fs, _ = pafs.FileSystem.from_uri(url)
                return fs
            return pafs.S3FileSystem(**_s3_options(options))
        return _fsspec_filesystem(url, scheme, options)
    except (TypeError, ValueError, pa.ArrowException, OSError) as exc:
        if isinstance(exc, CorpusFileError):
            raise
        raise CorpusFileError(
            f"{url}: cannot make a client for the store: {exc}", path=url
        ) from exc


def _s3_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``S3FileSystem`` keyword arguments from ``storage_options``, ``endpoint_url`` split
    into the scheme and ``endpoint_override`` pyarrow takes."""
    settings = dict(options)
    endpoint = settings.pop("endpoint_url", None)
    if endpoint is not None:
        parts = urlsplit(str(endpoint))
        if parts.scheme and parts.netloc:
            settings.setdefault("scheme", parts.scheme)
            settings.setdefault("endpoint_override", parts.netloc)
        else:
            settings.setdefault("endpoint_override", str(endpoint))
    return settings


def _fsspec_filesystem(url: str, scheme: str, options: Mapping[str, Any]) -> pafs.FileSystem:
    try:
        import fsspec
    except ImportError as exc:
        raise CorpusFileError(
            f"{url}: the scheme {scheme}:// needs fsspec and its package for the scheme "
            "(pip install fsspec gcsfs / adlfs / ...); s3:// needs neither",
            path=url,
        ) from exc
    fs = fsspec.filesystem(scheme, **options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def describe_failure(url: str, exc: BaseException) -> str:
    """``exc`` of the client about ``url`` in words, with the likely fix where the
    store's message says what is wrong."""
    text = str(exc) or type(exc).__name__
    upper = text.upper()
    if "NO_SUCH_BUCKET" in upper or "NOSUCHBUCKET" in upper or "BUCKET DOES NOT EXIST" in upper:
        return f"{text} (the bucket does not exist; check the URL)"
    if any(
        word in upper
        for word in ("ACCESS_DENIED", "ACCESSDENIED", "INVALID_ACCESS_KEY", "SIGNATURE",
                     "FORBIDDEN", "HTTP STATUS 403")
    ):
        return (
            f"{text} (the store refused the credentials: check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, the AWS profile, or storage_options)"
        )
    return text


def is_permanent(exc: BaseException) -> bool:
    """Whether a failure of the client will not go away by retrying (missing object or
    bucket, refused credentials)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, CorpusChangedError)):
        return True
    return describe_failure("", exc) != (str(exc) or type(exc).__name__)


def _url_of(scheme: str, path: str) -> str:
    return f"{scheme}://{path}"


def _object(scheme: str, info: pafs.FileInfo, sha256: Optional[str] = None) -> RemoteObject:
    return RemoteObject(_url_of(scheme, info.path), info.path, int(info.size),
                        info.mtime_ns, sha256)


def resolve_remote(
    source: Union[str, Sequence[str]],
    filesystem: Optional[FileSystemLike] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    *,
    call: Any = None,
) -> RemoteSource:
    """Lists what ``source`` names in its store (see the module docstring).

    Args:
        source: a URL (an object, a prefix, a glob of objects) or a list of URLs (each an
            object or a glob; folders are not taken in a list).
        filesystem, storage_options: see :func:`open_filesystem`.
        call: ``call(url, what, function)`` runs a request with retries (the cache's
            :meth:`~arrowloader.shard_cache.RetryPolicy.run`); default: run it once.

    Raises:
        CorpusFileError: the store cannot be reached or refuses the request (after the
            retries), or names no object, naming the URL and the store's last word.
        CorpusFormatError: a ``manifest.json`` or ``state.json`` is malformed.
    """
    run = call if call is not None else (lambda url, what, function: function())
    urls = list(source) if isinstance(source, (list, tuple)) else [source]
    if not urls:
        raise CorpusFileError("the source is an empty list of URLs")
    for url in urls:
        if not is_url(url):
            raise CorpusFileError(
                f"{url}: a list of sources mixes URLs with local paths; give a "
                "MixedDataset one dataset of each",
                path=str(url),
            )
    schemes = {split_url(url)[0] for url in urls}
    if len(schemes) > 1:
        raise CorpusFileError(f"the URLs name several stores ({sorted(schemes)}): give one")
    scheme = schemes.pop()
    fs = open_filesystem(urls[0], filesystem, storage_options)
    if len(urls) == 1:
        url = urls[0]
        _, path = split_url(url)
        if glob.has_magic(path):
            return RemoteSource(fs, _glob(fs, scheme, url, path, run), None, [], scheme)
        info = run(url, "look up", lambda: fs.get_file_info(path))
        if info.type == pafs.FileType.File:
            return RemoteSource(fs, [_object(scheme, info)], None, [], scheme)
        return _folder(fs, scheme, url, path, run)
    objects: list[RemoteObject] = []
    for url in urls:
        _, path = split_url(url)
        if glob.has_magic(path):
            objects.extend(_glob(fs, scheme, url, path, run))
            continue
        info = run(url, "look up", lambda path=path: fs.get_file_info(path))
        if info.type != pafs.FileType.File:
            raise CorpusFileError(f"{url}: no such object", path=url)
        objects.append(_object(scheme, info))
    return RemoteSource(fs, objects, None, [], scheme)


def _listing(fs: pafs.FileSystem, url: str, path: str, recursive: bool, run: Any) -> list:
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
    return run(url, "list", lambda: fs.get_file_info(selector))


def _glob(fs: pafs.FileSystem, scheme: str, url: str, path: str, run: Any) -> list:
    """The objects matching the glob ``path``, in name order: ``*`` and ``?`` within one
    path component, ``**`` across them, as :func:`glob.glob` with ``recursive=True``."""
    parts = path.split("/")
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    base = "/".join(fixed)
    recursive = len(fixed) < len(parts) - 1 or "**" in path
    pattern = _glob_pattern(path)
    found = sorted(
        (info for info in _listing(fs, url, base, recursive, run)
         if info.type == pafs.FileType.File and pattern.fullmatch(info.path)),
        key=lambda info: info.path,
    )
    if not found:
        raise CorpusFileError(f"{url}: the glob matches no object", path=url)
    return [_object(scheme, info) for info in found]


def _glob_pattern(path: str) -> re.Pattern:
    """A regular expression matching what the glob ``path`` matches."""
    out = []
    i = 0
    while i < len(path):
        if path.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif path.startswith("**", i):
            out.append(".*")
            i += 2
        elif path[i] == "*":
            out.append("[^/]*")
            i += 1
        elif path[i] == "?":
            out.append("[^/]")
            i += 1
        elif path[i] == "[" and "]" in path[i + 2:]:
            close = path.index("]", i + 2)
            body = path[i + 1:close]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = close + 1
        else:
            out.append(re.escape(path[i]))
            i += 1
    return re.compile("".join(out))


def _folder(fs: pafs.FileSystem, scheme: str, url: str, path: str, run: Any) -> RemoteSource:
    infos = {
        posixpath.relpath(info.path, path): info
        for info in _listing(fs, url, path, True, run)
        if info.type == pafs.FileType.File
    }
    if not infos:
        bucket = path.split("/", 1)[0]
        found = run(url, "look up", lambda: fs.get_file_info(bucket))
        if found.type == pafs.FileType.NotFound:
            raise CorpusFileError(
                f"{url}: the bucket {bucket!r} does not exist (or these credentials may not "
                "see it); check the URL",
                path=url,
            )
        raise CorpusFileError(
            f"{url}: no such object or prefix (nothing listed under it)", path=url
        )
    if MANIFEST_NAME in infos:
        manifest = infos[MANIFEST_NAME]
        entries = _read_json(fs, scheme, manifest, run).get("shards")
        if not isinstance(entries, list):
            return RemoteSource(fs, [], path, [_object(scheme, manifest)], scheme)
        objects = [_member(scheme, url, path, infos, e.get("file") if isinstance(e, dict)
                           else None, e.get("sha256") if isinstance(e, dict) else None)
                   for e in entries]
        return RemoteSource(fs, objects, path, [_object(scheme, manifest)], scheme)
    if "state.json" in infos:
        state = infos["state.json"]
        try:
            names = [e["filename"] for e in _read_json(fs, scheme, state, run)["_data_files"]]
        except (KeyError, TypeError) as exc:
            raise CorpusFileError(
                f"{state.path}: not a datasets save_to_disk state file ({exc})",
                path=_url_of(scheme, state.path),
            ) from exc
        small = [_object(scheme, info) for name, info in sorted(infos.items())
                 if name.endswith(".json") and "/" not in name]
        objects = [_member(scheme, url, path, infos, name, None) for name in names]
        return RemoteSource(fs, objects, path, small, scheme)
    names = sorted(
        name for name in infos
        if "/" not in name and os.path.splitext(name)[1] in IPC_SUFFIXES
    )
    if not names:
        raise CorpusFileError(
            f"{url}: the prefix holds no Arrow IPC objects ({', '.join(IPC_SUFFIXES)})",
            path=url,
        )
    return RemoteSource(fs, [_object(scheme, infos[name]) for name in names], None, [],
                        scheme)


def _member(
    scheme: str, url: str, folder: str, infos: dict, name: object, sha256: object
) -> RemoteObject:
    """The object a folder's manifest or ``state.json`` names ``name``; the name must be
    relative and stay inside the folder (the file comes with the data, untrusted)."""
    if (not isinstance(name, str) or not name or name.startswith("/") or "\\" in name
            or ".." in name.split("/")):
        raise CorpusFileError(
            f"{url}: its listing names a data file {name!r} outside the folder", path=url
        )
    info = infos.get(posixpath.normpath(name))
    if info is None:
        raise CorpusFileError(
            f"{url}: data file {name!r} named by the folder's listing is missing",
            path=_url_of(scheme, f"{folder}/{name}"),
        )
    return _object(scheme, info, sha256 if isinstance(sha256, str) else None)


def _read_json(fs: pafs.FileSystem, scheme: str, info: pafs.FileInfo, run: Any) -> dict:
    url = _url_of(scheme, info.path)

    def read() -> bytes:
        with fs.open_input_stream(info.path) as stream:
            return stream.read()

    data = run(url, "read", read)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CorpusFileError(f"{url}: not valid JSON ({exc})", path=url) from exc
    if not isinstance(parsed, dict):
        raise CorpusFileError(f"{url}: expected a JSON object", path=url)
    return parsed


def remote_changes(filesystem: pafs.FileSystem, objects: Sequence[RemoteObject]) -> list[str]:
    """How each of ``objects`` differs now from when it was listed: removed, or another
    size or modification time (replaced or rewritten), in words, one entry per object
    that changed. One listing request per folder of the objects.

    Raises:
        OSError: the store cannot be asked.
    """
    by_folder: dict[str, list[RemoteObject]] = {}
    for obj in objects:
        by_folder.setdefault(posixpath.dirname(obj.path), []).append(obj)
    problems = []
    for folder, members in by_folder.items():
        selector = pafs.FileSelector(folder, allow_not_found=True, recursive=False)
        now = {info.path: info for info in filesystem.get_file_info(selector)}
        for obj in members:
            info = now.get(obj.path)
            if info is None or info.type != pafs.FileType.File:
                problems.append(f"{obj.url}: the object was deleted")
            elif int(info.size) != obj.size:
                problems.append(f"{obj.url}: replaced ({obj.size} -> {info.size} bytes)")
            elif obj.mtime_ns is not None and info.mtime_ns != obj.mtime_ns:
                problems.append(f"{obj.url}: replaced or rewritten (modified since listed)")
    return problems


def upload_folder(
    folder: Union[str, os.PathLike],
    url: str,
    names: Sequence[str],
    *,
    filesystem: Optional[FileSystemLike] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
    call: Any = None,
) -> list[str]:
    """Uploads ``folder/name`` for each of ``names`` to ``url/name``, in that order (put
    the manifest last: a reader that finds it finds every shard it lists). Returns the
    URLs written.

    Raises:
        CorpusFileError: an upload failed (after the retries of ``call``).
    """
    run = call if call is not None else (lambda url, what, function: function())
    fs = open_filesystem(url, filesystem, storage_options)
    _, prefix = split_url(url)
    written = []
    for name in names:
        target = f"{prefix}/{name}"
        source = os.path.join(os.fspath(folder), name)

        def put(source: str = source, target: str = target) -> None:
            with open(source, "rb") as local, fs.open_output_stream(target) as out:
                for block in iter(lambda: local.read(8 << 20), b""):
                    out.write(block)

        object_url = f"{url.rstrip('/')}/{name}"
        run(object_url, "upload", put)
        written.append(object_url)
    return written
