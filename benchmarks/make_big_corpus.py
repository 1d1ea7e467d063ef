"""Writes a sharded synthetic corpus of a given size, for workload W3 (W2 on a corpus
larger than memory).

Usage::

    python benchmarks/make_big_corpus.py --size-gb 32 --out /data/w3-corpus
    arrowloader bench --workload pack --data /data/w3-corpus --peers none

W3 asks for a corpus of at least 1.25 x the machine's physical memory (this script prints
that size and warns below it), so that the page cache cannot hold it and blocks are read
from disk. The corpus has the reference corpus's columns and distributions
(``arrowloader.synthetic``): ``input_ids: list<int32>`` with lengths
``clip(lognormal(ln 300, 1), 8, 8192)`` rounded down and ids uniform in ``[1, 50257)``,
``label: int64`` uniform in {0, 1}; about 1,990 bytes per document on disk.

It is written as ``shard-00000.arrow``, ``shard-00001.arrow``, ... of about ``--shard-gb``
each (GB = 10^9 bytes), every shard from its own generator (``default_rng([seed,
shard])``: lengths, then ids, then labels for each record batch of ``--rows-per-batch``
documents), under a temporary name renamed when complete. Shards already complete are kept,
so an interrupted run continues where it stopped; a ``.complete`` file marks the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
from arrowloader.synthetic import VOCAB_SIZE, reference_lengths
from tqdm.auto import tqdm

#: Marks a fully written corpus folder (shards first, this last).
COMPLETE = ".complete"
SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.int64())])


def physical_memory_bytes() -> Optional[int]:
    """``MemTotal`` of ``/proc/meminfo`` in bytes, or None where unavailable."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def batch_bytes(num_docs: int, num_tokens: int) -> int:
    """Bytes the Arrow buffers of a record batch take: int32 ids and offsets, int64 labels."""
    return 4 * num_tokens + 4 * (num_docs + 1) + 8 * num_docs


def write_shard(
    path: Path, budget_bytes: int, seed: int, shard: int, rows_per_batch: int, progress: tqdm
) -> dict[str, int]:
    """Writes one shard of about ``budget_bytes`` (whole record batches; the last one cut to
    fit) and returns its ``{"documents", "tokens", "bytes"}``."""
    rng = np.random.default_rng([seed, shard])
    partial = path.with_name(path.name + ".partial")
    documents = tokens = written = 0
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, SCHEMA) as writer:
        while written < budget_bytes:
            lengths = reference_lengths(rows_per_batch, rng)
            # Cut the batch so the shard ends near its budget.
            sizes = 4 * np.cumsum(lengths) + 12 * np.arange(1, len(lengths) + 1)
            keep = int(np.searchsorted(sizes, budget_bytes - written, side="left")) + 1
            lengths = lengths[: min(keep, len(lengths))]
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            ids = rng.integers(1, VOCAB_SIZE, size=int(offsets[-1]), dtype=np.int32)
            labels = rng.integers(0, 2, size=len(lengths), dtype=np.int64)
            column = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(ids))
            writer.write_batch(pa.record_batch([column, pa.array(labels)], schema=SCHEMA))
            size = batch_bytes(len(lengths), len(ids))
            documents += len(lengths)
            tokens += len(ids)
            written += size
            progress.update(size)
    os.replace(partial, path)
    return {"documents": documents, "tokens": tokens, "bytes": path.stat().st_size}


def make_big_corpus(
    out: Path,
    size_gb: float,
    shard_gb: float = 1.0,
    seed: int = 0,
    rows_per_batch: int = 65536,
    show_progress: bool = True,
) -> dict[str, object]:
    """Writes the corpus (see the module docstring) and returns its summary, also saved as
    ``out/.complete`` (JSON)."""
    total = int(size_gb * 1e9)
    shard_budget = int(shard_gb * 1e9)
    num_shards = max(1, math.ceil(total / shard_budget))
    out.mkdir(parents=True, exist_ok=True)
    marker = out / COMPLETE
    if marker.is_file():
        summary = json.loads(marker.read_text())
        if summary.get("size_gb") == size_gb and summary.get("seed") == seed:
            return summary
        marker.unlink()
    shards = []
    progress = tqdm(
        total=total, unit="B", unit_scale=True, desc=f"writing {num_shards} shards",
        disable=not show_progress,
    )
    with progress:
        for shard in range(num_shards):
            path = out / f"shard-{shard:05d}.arrow"
            budget = min(shard_budget, total - shard * shard_budget)
            if path.is_file():  # complete from an earlier run (shards appear only complete)
                progress.update(budget)
                continue
            progress.set_postfix_str(path.name)
            write_shard(path, budget, seed, shard, rows_per_batch, progress)
    for shard in range(num_shards):
        path = out / f"shard-{shard:05d}.arrow"
        with pa.memory_map(str(path), "r") as mapped:
            reader = pa.ipc.open_file(mapped)
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        shards.append({"file": path.name, "documents": rows, "bytes": path.stat().st_size})
    summary: dict[str, object] = {
        "size_gb": size_gb,
        "seed": seed,
        "shards": shards,
        "documents": sum(s["documents"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
    }
    marker.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, required=True, help="corpus size, 10^9 bytes")
    parser.add_argument("--out", type=Path, required=True, help="folder of the shards")
    parser.add_argument("--shard-gb", type=float, default=1.0, help="shard size (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument(
        "--rows-per-batch", type=int, default=65536, help="documents per record batch"
    )
    parser.add_argument(
        "--force", action="store_true", help="write even without enough free disk space"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.size_gb <= 0 or args.shard_gb <= 0 or args.rows_per_batch < 1:
        parser.error("--size-gb, --shard-gb and --rows-per-batch must be positive")

    memory = physical_memory_bytes()
    if memory is not None:
        needed = 1.25 * memory / 1e9
        note = f"physical memory {memory / 2**30:.1f} GiB: W3 needs >= {needed:.1f} GB"
        if args.size_gb < needed:
            note += f"; {args.size_gb:g} GB fits in memory, so this is not a W3 corpus"
        print(note, file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.out).free
    if free < args.size_gb * 1e9 * 1.02 and not args.force:
        print(
            f"only {free / 1e9:.1f} GB free under {args.out}, {args.size_gb:g} GB asked "
            "(--force to try anyway)",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    summary = make_big_corpus(
        args.out, args.size_gb, args.shard_gb, args.seed, args.rows_per_batch,
        show_progress=not args.quiet,
    )
    print(
        f"{args.out}: {len(summary['shards'])} shards, {summary['documents']:,} documents, "
        f"{summary['bytes'] / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
