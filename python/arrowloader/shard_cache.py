"""The local shard cache of corpora in object storage.

A remote corpus is read from local copies of its objects, which are then memory-mapped as
any local file: the rest of the package never sees a URL. Copies live under
``cache_dir/<scheme>/<bucket>/<key>`` and are made so that a crash, a second process or a
flaky network never leaves a wrong file in place:

- Atomic: each object is downloaded whole into a temporary name beside its copy, checked
  (its size, the object's size and modification time unchanged over the download, and the
  manifest's SHA-256 where the corpus has a manifest), flushed, then renamed. A sidecar
  ``.<name>.cache.json`` records what was checked; a rerun reuses a copy whose sidecar
  matches the object as listed now, and downloads anything else again.
- Shared: a lock file per object (``fcntl.flock``) makes the processes of one node (local
  ranks under torchrun) download each object once; the others wait for it and reuse it.
- Bounded: ``cache_limit`` caps the bytes of copies in the folder. Before downloading, the
  copies no current corpus needs are evicted, least recently used first; a corpus larger
  than the limit is refused before any byte is fetched.
- Patient: every request is retried with exponential backoff and full jitter; when the
  retries run out, :class:`CorpusFileError` names the URL and the last error. Failures
  that retrying cannot fix (missing object or bucket, refused credentials, an object that
  changed) fail at once.

Large objects are fetched as ranged parts in parallel; the rest as one stream.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from glob import escape as glob_escape
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import pyarrow.fs as pafs

from arrowloader.cache_dir import cache_dir as default_cache_root
from arrowloader.errors import ArrowLoaderError, CorpusChangedError, CorpusFileError
from arrowloader.object_store import (
    FileSystemLike,
    RemoteObject,
    RemoteSource,
    describe_failure,
    is_permanent,
    remote_changes,
    resolve_remote,
)

T = TypeVar("T")

#: Objects larger than this are fetched as ranged parts of this size, in parallel.
PART_SIZE = 32 << 20
#: Parallel ranged requests per object.
PART_THREADS = 4
#: Objects downloaded at once.
OBJECT_THREADS = 4
#: Bytes read per request of a streamed download.
_STREAM_CHUNK = 4 << 20
_SIDECAR_SUFFIX = ".cache.json"
_LOCK_SUFFIX = ".lock"
_PART_SUFFIX = ".part"
#: Disk errors of the cache folder (not of the store): never retried.
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)

#: Size units: a bare letter and ``KiB`` ... are powers of 1024, ``kB``, ``MB`` ... of 1000
#: (as ``arrowloader prepare --shard-size`` reads them).
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 10**3, "m": 1 << 20,
          "mib": 1 << 20, "mb": 10**6, "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
          "t": 1 << 40, "tib": 1 << 40, "tb": 10**12}


def parse_size(value: Union[int, str, None]) -> Optional[int]:
    """Bytes of ``value``: an int, or a string such as ``"200GB"`` (powers of 1000),
    ``"1.5TiB"`` or ``"64G"`` (powers of 1024), ``"4096"``; None stays None.

    Raises:
        ValueError: not a size, or negative.
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"cache_limit must not be negative, got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value) if isinstance(
        value, str) else None
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"cache_limit must be a size in bytes or a string like '200GB' or '1.5TiB', "
            f"got {value!r}"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(size: int) -> str:
    """``size`` bytes in words (``"1.50 GB"``)."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of requests to the store: ``attempts`` tries in all, waiting a random time
    in ``[0, min(max_delay, first_delay * 2**k)]`` before try ``k + 1`` (exponential
    backoff with full jitter, so many ranks retrying do not hit the store in step)."""

    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 10.0

    @classmethod
    def from_options(cls, options: Optional[Mapping[str, Any]]) -> RetryPolicy:
        """The policy ``storage_options`` sets (``retries``: attempts after the first,
        ``retry_delay``, ``retry_max_delay``: seconds), else the default."""
        options = options or {}
        default = cls()
        retries = options.get("retries", default.attempts - 1)
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ValueError(f"storage_options retries must be an int >= 0, got {retries!r}")
        return cls(
            attempts=retries + 1,
            first_delay=float(options.get("retry_delay", default.first_delay)),
            max_delay=float(options.get("retry_max_delay", default.max_delay)),
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1)."""
        return random.uniform(0, min(self.max_delay, self.first_delay * 2 ** (attempt - 1)))

    def run(self, url: str, what: str, function: Callable[[], T]) -> T:
        """``function()``, retried on the store's failures; a permanent one (see
        :func:`arrowloader.object_store.is_permanent`) or the last one raises
        CorpusFileError naming ``url``, what was being done and the store's message."""
        last: Optional[BaseException] = None
        for attempt in range(1, self.attempts + 1):
            try:
                return function()
            except (ArrowLoaderError, _DiskError):
                raise
            except OSError as exc:
                last = exc
                if is_permanent(exc):
                    raise CorpusFileError(
                        f"{url}: cannot {what}: {describe_failure(url, exc)}", path=url
                    ) from exc
                if attempt < self.attempts:
                    time.sleep(self.delay(attempt))
        assert last is not None
        raise CorpusFileError(
            f"{url}: cannot {what} after {self.attempts} attempts; last error: "
            f"{describe_failure(url, last)}",
            path=url,
        ) from last


class _DiskError(Exception):
    """A write to the cache folder failed (disk full, read-only, no permission)."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(str(error))
        self.path = path
        self.error = error


@dataclass
class CacheStats:
    """What a cache did for one corpus: objects downloaded and reused, bytes downloaded,
    objects evicted to make room."""

    downloaded: int = 0
    reused: int = 0
    bytes_downloaded: int = 0
    evicted: int = 0
    seconds: float = 0.0
    first_object_seconds: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RemoteCorpus:
    """A remote corpus with verified local copies of every file.

    Attributes:
        source: the remote source as listed.
        local_source: what to open locally: the copy of the folder (with its manifest or
            ``state.json``), or the list of copied files in corpus order.
        local_files: the copies of the data files, in corpus order.
        stats: what the download did.
    """

    source: RemoteSource
    local_source: Union[str, list[str]]
    local_files: list[Path]
    stats: CacheStats = field(default_factory=CacheStats)

    @property
    def urls(self) -> list[str]:
        return [obj.url for obj in self.source.objects]

    def check_unchanged(self) -> None:
        """Raises CorpusChangedError if an object of the corpus was deleted, replaced or
        rewritten in the store since it was listed (one listing per folder). A store that
        cannot be reached is not a change: the local copies still hold the data the run
        started with, so the check passes."""
        try:
            problems = remote_changes(self.source.filesystem, self.source.objects)
        except OSError:
            return
        if problems:
            raise CorpusChangedError(
                f"{len(problems)} object(s) of the corpus changed in the store since it was "
                "opened: " + " | ".join(problems) + ". The run reads its local copies of the "
                "objects as they were; open the dataset again to read the new ones.",
                path=problems[0].split(": ", 1)[0],
            )


class ShardCache:
    """A folder of verified local copies of remote objects (see the module docstring).

    Args:
        folder: where copies live; default ``<arrowloader cache>/objects`` (see
            :func:`arrowloader.cache_dir.cache_dir`).
        limit: the most bytes of copies the folder may hold (an int, or ``"200GB"``);
            None: no limit but the disk's.
        retry: the retry policy of requests.
    """

    def __init__(
        self,
        folder: Union[str, os.PathLike, None] = None,
        limit: Union[int, str, None] = None,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        self.folder = (
            Path(os.path.expanduser(os.fspath(folder))) if folder is not None
            else default_cache_root() / "objects"
        )
        self.limit = parse_size(limit)
        self.retry = retry or RetryPolicy()
        self._stats_lock = threading.Lock()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CorpusFileError(
                f"{self.folder}: cannot create the cache folder: {exc}", path=self.folder
            ) from exc

    def local_path(self, scheme: str, path: str) -> Path:
        """Where the copy of ``scheme://path`` lives."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise CorpusFileError(f"{scheme}://{path}: the key has '.' or '..' components")
        return self.folder.joinpath(scheme, *parts)

    # -- the whole corpus -------------------------------------------------------------

    def fetch(self, source: RemoteSource) -> RemoteCorpus:
        """Makes sure every object of ``source`` has a verified local copy (downloading
        what is missing or stale, in corpus order) and returns them.

        Raises:
            CorpusFileError: the corpus does not fit in the limit, a download failed after
                its retries, or the cache folder cannot be written (disk full: the message
                names the folder; no partial file is left).
            CorpusChangedError: an object changed while it was downloaded, or its bytes do
                not match the manifest's SHA-256.
        """
        started = time.monotonic()
        stats = CacheStats()
        needed = list(source.folder_files) + list(source.objects)
        local = [self.local_path(source.scheme, obj.path) for obj in needed]
        self._make_room(needed, local, stats)
        # The small files first (a manifest decides what the rest must be); then the data
        # files, a few at a time (each request waits on the store as much as on the
        # network), submitted in corpus order.
        for obj, path in zip(needed[:len(source.folder_files)], local):
            self._fetch_one(source.filesystem, obj, path, stats)
        data = list(zip(needed, local))[len(source.folder_files):]
        with ThreadPoolExecutor(OBJECT_THREADS, thread_name_prefix="arrowloader-fetch") as pool:
            futures = [pool.submit(self._fetch_one, source.filesystem, obj, path, stats)
                       for obj, path in data]
            try:
                for future in futures:
                    future.result()
                    if stats.first_object_seconds is None:
                        stats.first_object_seconds = time.monotonic() - started
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        stats.seconds = time.monotonic() - started
        files = local[len(source.folder_files):]
        if source.folder_path is not None:
            local_source: Union[str, list[str]] = str(
                self.local_path(source.scheme, source.folder_path)
            )
        else:
            local_source = [str(p) for p in files]
        return RemoteCorpus(source, local_source, files, stats)

    def _make_room(self, needed: Sequence[RemoteObject], local: Sequence[Path],
                   stats: CacheStats) -> None:
        """Evicts copies no current corpus needs (least recently used first) until the
        needed objects fit under the limit; refuses a corpus larger than the limit."""
        if self.limit is None:
            return
        total = sum(obj.size for obj in needed)
        name = needed[-1].url.rsplit("/", 1)[0] + "/" if needed else "the corpus"
        if total > self.limit:
            raise CorpusFileError(
                f"{name}: the corpus takes {format_size(total)} ({total:,} bytes), more than "
                f"cache_limit {format_size(self.limit)} ({self.limit:,} bytes) of "
                f"{self.folder}. Raise cache_limit, or read a part of the corpus (a glob or "
                "a list of URLs).",
                path=name,
            )
        keep = {str(p) for p in local}
        with self._folder_lock():
            copies = sorted(self._copies(), key=lambda item: item[2])  # least recent first
            held = sum(size for path, size, _ in copies if str(path) not in keep)
            # Copies of the needed objects count once, downloaded or not.
            room = self.limit - total
            for path, size, _ in copies:
                if held <= room:
                    break
                if str(path) in keep:
                    continue
                if self._evict(path):
                    held -= size
                    stats.evicted += 1
            if held > room:
                raise CorpusFileError(
                    f"{name}: cache_limit {format_size(self.limit)} of {self.folder} cannot "
                    f"hold the corpus ({format_size(total)}) beside copies other processes "
                    "hold locked; raise cache_limit or use another cache_dir",
                    path=name,
                )

    def _copies(self) -> Iterator[tuple[Path, int, float]]:
        """``(copy, size, last use)`` of every verified copy in the folder."""
        for sidecar in self.folder.rglob(f".*{_SIDECAR_SUFFIX}"):
            copy = sidecar.with_name(sidecar.name[1:-len(_SIDECAR_SUFFIX)])
            try:
                yield copy, copy.stat().st_size, sidecar.stat().st_mtime
            except OSError:
                continue

    def _evict(self, copy: Path) -> bool:
        """Removes ``copy`` unless a process holds its lock (downloading it)."""
        with self._lock(copy, blocking=False) as locked:
            if not locked:
                return False
            # The sidecar first: a copy without one is never reused.
            for path in (self._sidecar(copy), copy):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return True

    # -- one object -------------------------------------------------------------------

    @staticmethod
    def _sidecar(copy: Path) -> Path:
        return copy.with_name(f".{copy.name}{_SIDECAR_SUFFIX}")

    def is_fresh(self, obj: RemoteObject, copy: Path) -> bool:
        """Whether ``copy`` is a verified copy of ``obj`` as it is listed now."""
        try:
            record = json.loads(self._sidecar(copy).read_text())
            size = copy.stat().st_size
        except (OSError, ValueError):
            return False
        return (
            isinstance(record, dict)
            and record.get("url") == obj.url
            and record.get("size") == obj.size == size
            and record.get("mtime_ns") == obj.mtime_ns
            and (obj.sha256 is None or record.get("sha256") == obj.sha256)
        )

    def _fetch_one(self, fs: pafs.FileSystem, obj: RemoteObject, copy: Path,
                   stats: CacheStats) -> None:
        try:
            copy.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._disk_error(copy, exc) from exc
        with self._lock(copy, blocking=True):
            if self.is_fresh(obj, copy):
                with contextlib.suppress(OSError):
                    os.utime(self._sidecar(copy))  # last use, for eviction
                with self._stats_lock:
                    stats.reused += 1
                return
            with contextlib.suppress(FileNotFoundError):
                self._sidecar(copy).unlink()
            # Downloads hold this lock: any temporary file of this object is a crashed
            # process's, never to be finished.
            for stale in copy.parent.glob(f".{glob_escape(copy.name)}.*{_PART_SUFFIX}"):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            try:
                self.retry.run(obj.url, "download", lambda: self._download(fs, obj, copy))
            except _DiskError as exc:
                raise self._disk_error(exc.path, exc.error) from exc.error
            with self._stats_lock:
                stats.downloaded += 1
                stats.bytes_downloaded += obj.size

    def _disk_error(self, path: Path, exc: OSError) -> CorpusFileError:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        hint = (
            "; free space there, lower what else it holds, or pass another cache_dir / a "
            "smaller cache_limit" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        )
        return CorpusFileError(
            f"{path}: cannot write to the cache folder {self.folder}: {reason}{hint}",
            path=path,
        )

    def _download(self, fs: pafs.FileSystem, obj: RemoteObject, copy: Path) -> None:
        """One attempt: download ``obj`` into a temporary file, check it, rename it to
        ``copy`` and write its sidecar. Leaves no temporary file behind, whatever fails."""
        temporary = copy.with_name(f".{copy.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
                                   f"{_PART_SUFFIX}")
        try:
            self._check_listed(fs, obj, "before the download")
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError as exc:
                raise _DiskError(temporary, exc) from exc
            try:
                if obj.size > PART_SIZE:
                    self._download_parts(fs, obj, fd, temporary)
                else:
                    self._download_stream(fs, obj, fd, temporary)
                try:
                    written = os.fstat(fd).st_size
                    os.fsync(fd)
                except OSError as exc:
                    raise _DiskError(temporary, exc) from exc
            finally:
                os.close(fd)
            if written != obj.size:
                raise OSError(f"the download ended after {written} of {obj.size} bytes")
            self._check_listed(fs, obj, "during the download")
            digest = _sha256(temporary) if obj.sha256 is not None else None
            if digest is not None and digest != obj.sha256:
                raise CorpusChangedError(
                    f"{obj.url}: its bytes have SHA-256 {digest}, not the {obj.sha256} its "
                    "corpus's manifest records: the object was replaced after the corpus "
                    "was prepared. Prepare the corpus again, or restore the object.",
                    path=obj.url,
                )
            try:
                os.replace(temporary, copy)
                record = {"url": obj.url, "size": obj.size, "mtime_ns": obj.mtime_ns,
                          "sha256": digest}
                sidecar = self._sidecar(copy)
                partial = sidecar.with_name(sidecar.name + _PART_SUFFIX)
                partial.write_text(json.dumps(record))
                os.replace(partial, sidecar)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    copy.unlink()
                raise _DiskError(copy, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()

    @staticmethod
    def _check_listed(fs: pafs.FileSystem, obj: RemoteObject, when: str) -> None:
        info = fs.get_file_info(obj.path)
        if info.type != pafs.FileType.File:
            raise CorpusChangedError(
                f"{obj.url}: the object was deleted {when}; open the dataset again",
                path=obj.url,
            )
        if int(info.size) != obj.size or (
            obj.mtime_ns is not None and info.mtime_ns != obj.mtime_ns
        ):
            raise CorpusChangedError(
                f"{obj.url}: the object was replaced {when} ({obj.size} -> {info.size} "
                "bytes, or a new modification time); its copy is not kept, so no run mixes "
                "old and new data. Open the dataset again.",
                path=obj.url,
            )

    @staticmethod
    def _download_stream(fs: pafs.FileSystem, obj: RemoteObject, fd: int,
                         temporary: Path) -> None:
        with fs.open_input_stream(obj.path) as stream:
            while True:
                chunk = stream.read(_STREAM_CHUNK)
                if not chunk:
                    break
                _write_all(fd, memoryview(chunk), None, temporary)

    @staticmethod
    def _download_parts(fs: pafs.FileSystem, obj: RemoteObject, fd: int,
                        temporary: Path) -> None:
        try:
            os.ftruncate(fd, obj.size)
        except OSError as exc:
            raise _DiskError(temporary, exc) from exc
        with fs.open_input_file(obj.path) as handle:
            # Arrow's RandomAccessFile.ReadAt is thread safe: the parts share one handle.
            def part(offset: int) -> None:
                length = min(PART_SIZE, obj.size - offset)
                data = handle.read_at(length, offset)
                if len(data) != length:
                    raise OSError(f"a ranged read at byte {offset} returned {len(data)} of "
                                  f"{length} bytes")
                _write_all(fd, memoryview(data), offset, temporary)

            with ThreadPoolExecutor(PART_THREADS, thread_name_prefix="arrowloader-part") as pool:
                for future in [pool.submit(part, o) for o in range(0, obj.size, PART_SIZE)]:
                    future.result()

    # -- locks ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, copy: Path, blocking: bool) -> Iterator[bool]:
        path = copy.with_name(f".{copy.name}{_LOCK_SUFFIX}")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._disk_error(path, exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _folder_lock(self) -> Iterator[None]:
        with self._lock(self.folder / "cache", blocking=True):
            yield


def _write_all(fd: int, data: memoryview, offset: Optional[int], temporary: Path) -> None:
    done = 0
    try:
        while done < len(data):
            if offset is None:
                done += os.write(fd, data[done:])
            else:
                done += os.pwrite(fd, data[done:], offset + done)
    except OSError as exc:
        raise _DiskError(temporary, exc) from exc


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_remote(
    source: Union[str, Sequence[str]],
    *,
    cache_dir: Union[str, os.PathLike, None] = None,
    cache_limit: Union[int, str, None] = None,
    filesystem: Optional[FileSystemLike] = None,
    storage_options: Optional[Mapping[str, Any]] = None,
) -> RemoteCorpus:
    """Lists the remote ``source`` and makes verified local copies of its files in the
    shard cache (see the module docstring); what datasets and commands do with a URL.

    Args:
        source: a URL or a list of URLs (see :func:`arrowloader.object_store.resolve_remote`).
        cache_dir: the cache folder (default ``<arrowloader cache>/objects``).
        cache_limit: the most bytes it may hold (an int or ``"200GB"``), or None.
        filesystem, storage_options: how the store is reached (see
            :func:`arrowloader.object_store.open_filesystem`).

    Raises:
        CorpusFileError, CorpusChangedError: see :meth:`ShardCache.fetch`.
    """
    retry = RetryPolicy.from_options(storage_options)
    cache = ShardCache(cache_dir, cache_limit, retry)
    listed = resolve_remote(source, filesystem, storage_options, call=retry.run)
    return cache.fetch(listed)


def remote_name(source: Union[str, Sequence[str]]) -> str:
    """How messages name a remote source."""
    if isinstance(source, str):
        return source
    first = next(iter(source), "")
    return f"{first} and {len(source) - 1} more" if len(source) > 1 else str(first)


__all__ = ["RetryPolicy", "ShardCache", "fetch_remote", "parse_size"]
