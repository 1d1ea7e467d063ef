"""How long opening a sharded corpus takes, what its index costs in memory, and the time
to the first shuffled batch.

Usage::

    python benchmarks/index_build.py [--docs 10000000] [--files 1 100 1000] [--json FILE]

A synthetic corpus of ``--docs`` documents (lengths uniform in 1 .. ``--max-tokens``,
``list<uint16>`` tokens, ``--batch-rows`` rows per record batch) split evenly over each
``--files`` count is written once under ``--dir`` and reused by later runs. Every figure
is taken in a fresh child process, so no state of one measurement leaks into the next:

- ``open``: wall time of ``arrowloader.Corpus(folder)``: once after the corpus was
  dropped from the page cache (``posix_fadvise(DONTNEED)``, as after a reboot; "cold"),
  and the median of ``--repeats`` opens with the files in the page cache ("warm"; each
  in a new process, so the mapping's pages are still faulted in once);
- memory: the process's ``RssAnon`` (``/proc/self/status``) before and after the open
  (median over the warm opens), and its peak during one more open, sampled every
  millisecond by a thread (that open is not timed: the sampler competes for the GIL),
  per document. Mapped file pages count as ``RssFile``, not ``RssAnon``, so this is the
  index alone;
- first batch: ``TokenDataset(folder)`` then ``next(iter(DataLoader(ds, batch_size=8,
  shuffle=True)))``, split into the open and the rest, warm and cold.

``--index-cache`` measures every layout a second time with ``index_cache=True``: the
first (cold) open writes the entry, the later ones read it and skip the offsets pass.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pyarrow as pa

DEFAULT_DIR = Path("/tmp/arrowloader-index-bench")
VOCAB = 50257
#: Marks a fully written corpus folder (files are written first, this last).
COMPLETE = ".complete"


def corpus_folder(root: Path, docs: int, files: int, batch_rows: int, max_tokens: int) -> Path:
    """Where the corpus of these parameters lives (it may not exist yet)."""
    return root / f"docs{docs}-files{files}-rows{batch_rows}-len{max_tokens}"


def write_corpus(folder: Path, docs: int, files: int, batch_rows: int, max_tokens: int) -> bool:
    """Writes the corpus unless a complete one is there; returns whether it wrote it."""
    if (folder / COMPLETE).is_file():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, max_tokens + 1, size=docs, dtype=np.int64)
    offsets = np.zeros(docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Token values do not matter to the index; a cheap pattern keeps writing quick.
    tokens = (np.arange(int(offsets[-1]), dtype=np.int64) % VOCAB).astype(np.uint16)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16()))])
    bounds = np.linspace(0, docs, files + 1).astype(np.int64)
    for k in range(files):
        path = folder / f"shard-{k:05d}.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for begin in range(int(bounds[k]), int(bounds[k + 1]), batch_rows):
                end = min(begin + batch_rows, int(bounds[k + 1]))
                first, last = offsets[begin], offsets[end]
                column = pa.ListArray.from_arrays(
                    pa.array((offsets[begin : end + 1] - first).astype(np.int32)),
                    pa.array(tokens[first:last]),
                )
                writer.write_batch(pa.record_batch([column], schema=schema))
    (folder / COMPLETE).write_text("")
    return True


def evict_page_cache(folder: Path) -> None:
    """Drops the folder's files from the page cache (no root needed for clean pages)."""
    for path in folder.iterdir():
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def rss_anon() -> int:
    """This process's anonymous resident memory, in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakSampler:
    """Samples RssAnon every millisecond on a thread until stopped; keeps the maximum."""

    def __init__(self) -> None:
        self.peak = rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_anon())

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def measure_open(folder: Path, index_cache: bool, sample_peak: bool) -> dict[str, Any]:
    """Child process: opens the corpus once and returns time and memory (and the peak
    memory during the open if ``sample_peak``; the time is then not representative)."""
    from arrowloader import Corpus

    kwargs = {"index_cache": True} if index_cache else {}
    before = rss_anon()
    sampler = PeakSampler() if sample_peak else contextlib.nullcontext()
    with sampler:
        start = time.perf_counter()
        corpus = Corpus(folder, **kwargs)
        seconds = time.perf_counter() - start
    after = rss_anon()
    figures = {
        "open_s": seconds,
        "docs": corpus.num_rows,
        "tokens": corpus.num_tokens,
        "chunks": corpus.tokens.num_chunks,
        "rss_anon_added_bytes": after - before,
    }
    if isinstance(sampler, PeakSampler):
        figures["rss_anon_peak_added_bytes"] = sampler.peak - before
    for name in ("checked_files", "vouched_files"):  # absent before the index cache
        if hasattr(corpus, name):
            figures[name] = getattr(corpus, name)
    return figures


def measure_first_batch(folder: Path, index_cache: bool) -> dict[str, Any]:
    """Child process: TokenDataset, then the first shuffled batch of 8."""
    import torch
    from arrowloader import DataLoader, TokenDataset

    kwargs = {"index_cache": True} if index_cache else {}
    before = rss_anon()
    start = time.perf_counter()
    dataset = TokenDataset(folder, **kwargs)
    opened = time.perf_counter()
    loader = DataLoader(
        dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    iterator = iter(loader)
    batch = next(iterator)
    done = time.perf_counter()
    assert batch["input_ids"].shape[0] == 8
    # With the iterator alive: the index plus the epoch's plan and the batches in flight.
    figures = {
        "dataset_open_s": opened - start,
        "first_batch_after_open_s": done - opened,
        "time_to_first_batch_s": done - start,
        "rss_anon_added_bytes": rss_anon() - before,
    }
    del iterator
    return figures


def run_child(kind: str, folder: Path, index_cache: bool, *, cold: bool = False) -> dict[str, Any]:
    """Runs one measurement (``open``, ``open_peak`` or ``first_batch``) in a fresh
    interpreter and returns its figures; ``cold`` first drops the corpus from the page
    cache."""
    if cold:
        evict_page_cache(folder)
    command = [sys.executable, __file__, "--child", kind, "--dir", str(folder)]
    if index_cache:
        command.append("--index-cache")
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def remove_index_cache(folder: Path) -> None:
    """Deletes the corpus's index cache entry, wherever it was written."""
    try:
        from arrowloader.corpus_index import cache_entry_paths
    except ImportError:  # no index cache in this version of the package
        return
    for path in cache_entry_paths(folder):
        path.unlink(missing_ok=True)


def measure_layout(args: argparse.Namespace, files: int, index_cache: bool) -> dict[str, Any]:
    """Every figure of one layout (one ``--files`` count), with or without the index
    cache. With it, the first open writes the entry and every later one reads it."""
    folder = corpus_folder(args.dir, args.docs, files, args.batch_rows, args.max_tokens)
    write_start = time.perf_counter()
    wrote = write_corpus(folder, args.docs, files, args.batch_rows, args.max_tokens)
    write_s = time.perf_counter() - write_start
    result: dict[str, Any] = {
        "files": files,
        "docs": args.docs,
        "batch_rows": args.batch_rows,
        "index_cache": index_cache,
        "written_now": wrote,
    }
    if wrote:
        result["write_s"] = write_s
    if index_cache:
        remove_index_cache(folder)
        if wrote:
            # Files written less than RACY_WINDOW_NS ago are checked in full whatever the
            # entry says; wait so that the figures show the entry's effect.
            time.sleep(2.5)
        result["writes_entry"] = run_child("open", folder, index_cache, cold=True)
    elif wrote:
        # The first open after writing: the files are in the page cache, nothing else is.
        result["after_write"] = run_child("open", folder, index_cache)
    result["cold"] = run_child("open", folder, index_cache, cold=True)
    warm = [run_child("open", folder, index_cache) for _ in range(args.repeats)]
    result["warm_runs"] = warm
    result["warm"] = {
        key: statistics.median(run[key] for run in warm)
        for key in ("open_s", "rss_anon_added_bytes")
    }
    result["peak"] = run_child("open_peak", folder, index_cache)
    result["first_batch_cold"] = run_child("first_batch", folder, index_cache, cold=True)
    result["first_batch"] = run_child("first_batch", folder, index_cache)
    return result


def print_table(results: list[dict[str, Any]]) -> None:
    """One line per layout, for people. Memory is RssAnon added by the open (median of
    the warm opens) and its peak during the open; "ttfb" = dataset open + first batch."""
    print(
        f"{'files':>6} {'cache':>5} {'cold s':>7} {'warm s':>7} {'B/doc':>6} "
        f"{'peak B/doc':>10} {'ds open s':>9} {'batch s':>8} {'ttfb s':>7} "
        f"{'cold ttfb s':>11}"
    )
    for r in results:
        docs = r["docs"]
        warm = r["warm"]
        fb = r["first_batch"]
        print(
            f"{r['files']:>6} {'yes' if r['index_cache'] else 'no':>5} "
            f"{r['cold']['open_s']:>7.3f} {warm['open_s']:>7.3f} "
            f"{warm['rss_anon_added_bytes'] / docs:>6.2f} "
            f"{r['peak']['rss_anon_peak_added_bytes'] / docs:>10.2f} "
            f"{fb['dataset_open_s']:>9.3f} {fb['first_batch_after_open_s']:>8.3f} "
            f"{fb['time_to_first_batch_s']:>7.3f} "
            f"{r['first_batch_cold']['time_to_first_batch_s']:>11.3f}"
        )
        if "writes_entry" in r:
            entry = r["writes_entry"]
            print(f"{'':>6} first open with index_cache=True (cold, writes the entry): "
                  f"{entry['open_s']:.3f} s")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=10_000_000, help="documents in all")
    parser.add_argument(
        "--files", type=int, nargs="+", default=[1, 100, 1000], help="file counts to measure"
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where corpora are kept")
    parser.add_argument("--batch-rows", type=int, default=65536, help="rows per record batch")
    parser.add_argument("--max-tokens", type=int, default=64, help="longest document")
    parser.add_argument("--repeats", type=int, default=3, help="warm opens (median taken)")
    parser.add_argument(
        "--index-cache", action="store_true", help="also measure with index_cache=True"
    )
    parser.add_argument("--json", type=Path, help="write all figures to this file")
    parser.add_argument(
        "--child", choices=["open", "open_peak", "first_batch"], help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    if args.child == "first_batch":
        print(json.dumps(measure_first_batch(args.dir, args.index_cache)))
        return
    if args.child:
        print(json.dumps(measure_open(args.dir, args.index_cache, args.child == "open_peak")))
        return
    results = []
    for files in args.files:
        results.append(measure_layout(args, files, index_cache=False))
        if args.index_cache:
            results.append(measure_layout(args, files, index_cache=True))
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
