"""The benchmark cache: the reference corpus, written once and reused by later runs.

The folder is :func:`arrowloader.cache_dir.cache_dir` (``$ARROWLOADER_CACHE``, else
``$XDG_CACHE_HOME/arrowloader``, else ``~/.cache/arrowloader``). Files appear in it only
complete: they are written under a temporary name and renamed, with a lock file held so
that two benchmark runs started at once do not write the same file twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from tqdm.auto import tqdm

from arrowloader import synthetic
from arrowloader.cache_dir import cache_dir

#: The reference corpus: ``make_corpus(path, 200_000, 0)``.
REFERENCE_DOCUMENTS = 200_000
REFERENCE_SEED = 0

#: How often the progress bar of a file being written is refreshed, in seconds.
_PROGRESS_INTERVAL_S = 0.1


def reference_corpus_path(
    num_docs: int = REFERENCE_DOCUMENTS, seed: int = REFERENCE_SEED
) -> Path:
    """Where the reference corpus of ``num_docs`` documents and ``seed`` lives in the cache
    (it may not exist yet)."""
    return cache_dir() / f"reference-{num_docs}docs-seed{seed}.arrow"


def reference_corpus(
    num_docs: int = REFERENCE_DOCUMENTS,
    seed: int = REFERENCE_SEED,
    *,
    show_progress: bool = True,
) -> Path:
    """The path of the cached reference corpus, written first if it is not there yet.

    ``make_corpus`` output is a pure function of ``(num_docs, seed)``, so a file of the
    right name is the right file.
    """
    path = reference_corpus_path(num_docs, seed)
    if path.is_file():
        return path
    with cache_lock(path):
        if not path.is_file():  # another run may have written it while we waited
            run_with_progress(
                lambda: synthetic.make_corpus(path, num_docs, seed),
                watch=path.with_name(path.name + ".partial"),
                description=f"creating the reference corpus ({num_docs:,} documents)",
                show_progress=show_progress,
                result=path,
            )
    return path


@contextlib.contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``<path>.lock`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent first runs are then the user's to avoid
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def run_with_progress(
    work: Callable[[], object],
    *,
    watch: Path,
    description: str,
    show_progress: bool,
    result: Optional[Path] = None,
) -> None:
    """Runs ``work`` while a progress bar shows the bytes written so far to ``watch``
    (a file or folder that ``work`` is writing); re-raises what ``work`` raises.

    ``make_corpus`` and ``save_to_disk`` report nothing while they run, so the growing
    output is the only sign of progress there is. ``result`` is where the output lies once
    ``work`` is done, if ``work`` renames it (for the bar's final size).
    """
    bar = tqdm(desc=description, unit="B", unit_scale=True, disable=not show_progress)
    with bar, ThreadPoolExecutor(max_workers=1) as executor:
        future = executor.submit(work)
        while not future.done():
            time.sleep(_PROGRESS_INTERVAL_S)
            bar.update(max(0, bytes_under(watch) - bar.n))
        future.result()
        bar.update(max(0, bytes_under(result or watch) - bar.n))


def bytes_under(path: Path) -> int:
    """Size of a file, or of every file under a folder; 0 if it does not exist."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:  # the writer renamed or removed it between our calls
        return 0


def replace_folder(partial: Path, final: Path) -> None:
    """Moves a completely written folder to its final name (replacing a stale one)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
