"""What a corpus of many tiny shards costs to open: time, memory mappings, descriptors.

Usage::

    python benchmarks/many_shards.py [--shards 5000 20000] [--repeats 3] [--json FILE]

For each ``--shards`` count a folder of that many tiny shards (2 record batches of 4
documents of a few uint16 tokens each) is written once under ``--dir`` and reused. Every
figure is taken in a fresh child process, so that no mapping of one measurement is
counted in the next:

- ``open_s``: wall time of ``arrowloader.Corpus(folder)`` with the files in the page
  cache, median of ``--repeats`` processes;
- ``mappings_added``: lines of ``/proc/self/maps`` after the open minus before, and
  ``mappings_naming_shards``: those lines that name a shard (one per shard expected:
  each is mapped whole, once);
- ``descriptors_added``: entries of ``/proc/self/fd`` after minus before (the files'
  descriptors are closed once mapped);
- ``max_map_count``, ``mappings_before``: the limit and what the process held before,
  and ``room_left``: what the limit leaves free after the open;
- ``refused_under_default``: whether the open's check (``arrowloader.mapping_limit``)
  refuses this count under Linux's default limit of 65,530 with this process's
  mappings (the check run alone, patched to that limit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

DEFAULT_DIR = Path("/tmp/arrowloader-many-shards")
#: Marks a fully written folder (files first, this last).
COMPLETE = ".complete"
#: Linux's default vm.max_map_count.
DEFAULT_LIMIT = 65_530


def write_shards(folder: Path, count: int) -> None:
    """``count`` tiny shards in ``folder``, unless a complete set is there."""
    if (folder / COMPLETE).is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16()))])
    rng = np.random.default_rng(0)
    for k in range(count):
        batches = []
        for _ in range(2):
            lengths = rng.integers(1, 9, size=4)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            values = rng.integers(0, 50_000, size=int(offsets[-1])).astype(np.uint16)
            column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
            batches.append(pa.record_batch([column], schema=schema))
        with pa.ipc.new_file(str(folder / f"shard-{k:06d}.arrow"), schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
    (folder / COMPLETE).write_text("")


_CHILD = r"""
import json, os, sys, time
from pathlib import Path
import arrowloader
from arrowloader import mapping_limit

folder = Path(sys.argv[1])
def maps():
    with open("/proc/self/maps") as f:
        return f.read().splitlines()
before_maps = len(maps())
before_fds = len(os.listdir("/proc/self/fd"))
start = time.perf_counter()
corpus = arrowloader.Corpus(folder)
seconds = time.perf_counter() - start
after = maps()
prefix = str(folder.resolve()) + "/"
limit = mapping_limit.max_map_count()
files = len(corpus.files)
print(json.dumps({
    "open_s": seconds,
    "files": files,
    "documents": corpus.num_rows,
    "mappings_before": before_maps,
    "mappings_added": len(after) - before_maps,
    "mappings_naming_shards": sum(1 for line in after if prefix in line),
    "descriptors_added": len(os.listdir("/proc/self/fd")) - before_fds,
    "max_map_count": limit,
    "room_left": None if limit is None else limit - len(after),
    "refused_under_default": (
        files + mapping_limit.HEADROOM > int(sys.argv[2]) - before_maps
    ),
}))
"""


def measure(folder: Path, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        command = [sys.executable, "-c", _CHILD, str(folder), str(DEFAULT_LIMIT)]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.splitlines()[-1]))
    result = dict(runs[-1])
    result["open_s"] = statistics.median(run["open_s"] for run in runs)
    result["open_s_runs"] = [round(run["open_s"], 3) for run in runs]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    for count in args.shards:
        folder = args.dir / f"shards-{count}"
        write_shards(folder, count)
        # One unmeasured open puts every file in the page cache.
        measure(folder, 1)
        result = {"shards": count, **measure(folder, args.repeats)}
        results.append(result)
        print(f"{count:>7,} shards: open {result['open_s']:.2f} s (runs "
              f"{result['open_s_runs']}), +{result['mappings_added']:,} mappings "
              f"({result['mappings_naming_shards']:,} naming a shard), "
              f"+{result['descriptors_added']} descriptors; limit "
              f"{result['max_map_count']:,}, {result['room_left']:,} left; refused under "
              f"the default {DEFAULT_LIMIT:,}: {result['refused_under_default']}",
              flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
