"""The memory-mapping limit of a process, checked before a corpus is opened.

Linux lets a process hold at most ``vm.max_map_count`` memory mappings (65,530 by
default). A corpus opened with ``mmap=True`` holds one mapping per file for as long as
the dataset lives (:func:`arrowloader.sources.open_ipc` maps each file whole, once, and
closes its descriptor), so a corpus of ~60,000 small shards would fail part-way through
its open, or leave too few mappings for the threads, allocations and libraries mapped
after it (a thread's stack, torch's and CUDA's allocations), failing somewhere deep in a
run. :func:`check_room_for_mappings` says so first, with the numbers and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from arrowloader.errors import CorpusFileError
from arrowloader.wording import plural

#: Where Linux keeps the limit and a process's mappings.
MAX_MAP_COUNT = Path("/proc/sys/vm/max_map_count")
SELF_MAPS = Path("/proc/self/maps")

#: Mappings kept free beside a corpus's, for what a run maps after the open: native
#: threads (a stack and its guard each), torch's and CUDA's allocations and libraries.
HEADROOM = 4096

#: The smallest limit the error suggests (a common setting for memory-mapping servers).
SUGGESTED_MINIMUM = 262_144


def max_map_count() -> Optional[int]:
    """``vm.max_map_count``: the mappings a process may hold, or None where the system
    does not say (not Linux, or /proc unreadable)."""
    try:
        return int(MAX_MAP_COUNT.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def mappings_in_use() -> Optional[int]:
    """The mappings this process holds now (lines of /proc/self/maps), or None where
    the system does not say."""
    try:
        with SELF_MAPS.open("rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


def suggested_limit(needed: int) -> int:
    """A ``vm.max_map_count`` with room for ``needed`` mappings twice over: the next
    power of two, at least :data:`SUGGESTED_MINIMUM`."""
    limit = SUGGESTED_MINIMUM
    while limit < 2 * needed:
        limit *= 2
    return limit


def check_room_for_mappings(files: int, source: str) -> None:
    """Raises CorpusFileError when mapping ``files`` more files (one mapping each) would
    leave this process fewer than :data:`HEADROOM` mappings under ``vm.max_map_count``.
    Does nothing where the system gives no limit.

    Args:
        files: the files the open will map.
        source: the corpus, as messages name it.

    Raises:
        CorpusFileError: naming the sysctl, the numbers and the fixes.
    """
    if files == 0:
        return
    limit = max_map_count()
    if limit is None:
        return
    in_use = mappings_in_use() or 0
    free = limit - in_use
    if files + HEADROOM <= free:
        return
    raise CorpusFileError(
        f"{source}: the corpus has {plural(files, 'file')} to memory-map, one mapping each, "
        f"but this process may hold {limit:,} mappings (vm.max_map_count) and already holds "
        f"{in_use:,}: {free:,} are free, fewer than the {files:,} files plus {HEADROOM:,} kept "
        "for the threads and allocations of the run, so mapping would fail part-way. Raise "
        f"the limit (sudo sysctl -w vm.max_map_count={suggested_limit(in_use + files + HEADROOM)}"
        "; a file in /etc/sysctl.d/ keeps it across reboots), or write the corpus as fewer, "
        "larger shards (arrowloader prepare --shard-size 1GiB from its text), or open it with "
        "mmap=False (the files are read into memory instead)."
    )
