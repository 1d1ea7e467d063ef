"""Load and soak figures on the reference corpus (README, Hardening).

Three runs, each sampling the process's anonymous resident memory (``RssAnon``: file
pages of the mapped corpus are the page cache's, not the loader's), threads and open file
descriptors:

1. one long epoch: every document of the reference corpus once (W1: shuffled, truncated
   to 1024, padded, batches of 32) on the default native threads;
2. eight loaders at once over the same corpus (one shared dataset, 2 threads each),
   consumed in turns for ``--batches`` batches each;
3. ``--short-epochs`` epochs (default 1,000) of a 1,000-document slice, batches of 32.

    python benchmarks/load_soak.py [--data PATH] [--json out.json]

Without ``--data`` the reference corpus is taken from (or written to) the benchmark cache
(``arrowloader bench`` uses the same file). tests/test_load.py asserts the same properties
on small corpora with generous bounds; this script gives the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import arrowloader
import pyarrow as pa
import torch
from arrowloader.bench.cache import reference_corpus
from arrowloader.bench.harness import anon_rss_bytes
from tqdm.auto import tqdm

MiB = 1 << 20


def snapshot() -> dict[str, float]:
    """Anonymous RSS (MiB), threads and open descriptors of this process now."""
    return {
        "anon_rss_mib": anon_rss_bytes(os.getpid()) / MiB,
        "threads": len(os.listdir("/proc/self/task")),
        "fds": len(os.listdir("/proc/self/fd")),
    }


def summarise(samples: list[dict[str, float]], after: float = 0.1) -> dict[str, Any]:
    """Figures of ``samples`` once the first ``after`` of them (warm-up) are past."""
    settled = samples[int(len(samples) * after) :] or samples
    rss = [s["anon_rss_mib"] for s in settled]
    return {
        "samples": len(samples),
        "anon_rss_mib_first": round(rss[0], 1),
        "anon_rss_mib_last": round(rss[-1], 1),
        "anon_rss_mib_max": round(max(rss), 1),
        "anon_rss_growth_mib": round(rss[-1] - rss[0], 1),
        "threads_min_max": [min(s["threads"] for s in settled),
                            max(s["threads"] for s in settled)],
        "fds_min_max": [min(s["fds"] for s in settled), max(s["fds"] for s in settled)],
    }


def long_epoch(path: Path, every: int) -> dict[str, Any]:
    ds = arrowloader.TokenDataset(path, max_length=1024)
    loader = arrowloader.DataLoader(ds, batch_size=32, shuffle=True,
                                    generator=torch.Generator().manual_seed(0))
    samples, tokens, start = [snapshot()], 0, time.perf_counter()
    for b, batch in enumerate(tqdm(loader, desc="one long epoch", unit="batch")):
        tokens += int(batch["attention_mask"].sum())
        if b % every == 0:
            samples.append(snapshot())
    elapsed = time.perf_counter() - start
    return {"batches": len(loader), "documents": len(ds), "real_tokens": tokens,
            "seconds": round(elapsed, 2), **summarise(samples), "after": snapshot()}


def eight_loaders(path: Path, batches: int, every: int) -> dict[str, Any]:
    ds = arrowloader.TokenDataset(path, max_length=1024)
    loaders = [iter(arrowloader.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
                                           generator=torch.Generator().manual_seed(k)))
               for k in range(8)]
    samples = [snapshot()]
    native = 0
    for b in tqdm(range(batches), desc="eight loaders at once", unit="round"):
        for it in loaders:
            next(it)
        if b == 1:
            native = sum(1 for t in os.listdir("/proc/self/task")
                         if _comm(t).startswith("arrowloader-"))
        if b % every == 0:
            samples.append(snapshot())
    for it in loaders:
        it.close()
    return {"rounds": batches, "native_threads_while_running": native, **summarise(samples),
            "after": snapshot()}


def short_epochs(path: Path, epochs: int) -> dict[str, Any]:
    folder = tempfile.TemporaryDirectory(prefix="load-soak-")
    small = Path(folder.name) / "slice.arrow"
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all().slice(0, 1000)
        with pa.ipc.new_file(str(small), table.schema) as writer:
            writer.write_table(table)
    try:
        ds = arrowloader.TokenDataset(small, max_length=1024)
        loader = arrowloader.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
                                        generator=torch.Generator().manual_seed(1))
        samples = []
        start = time.perf_counter()
        for epoch in tqdm(range(epochs), desc="short epochs", unit="epoch"):
            for _ in loader:
                pass
            if epoch % max(1, epochs // 50) == 0:
                gc.collect()
                samples.append(snapshot())
        elapsed = time.perf_counter() - start
        gc.collect()
        samples.append(snapshot())
        return {"epochs": epochs, "batches_per_epoch": len(loader),
                "seconds": round(elapsed, 2), **summarise(samples)}
    finally:
        folder.cleanup()


def _comm(tid: str) -> str:
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="default: the reference corpus")
    parser.add_argument("--batches", type=int, default=2000,
                        help="batches each of the eight loaders serves")
    parser.add_argument("--short-epochs", type=int, default=1000)
    parser.add_argument("--every", type=int, default=200, help="batches between samples")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    path = args.data or reference_corpus()
    report = {
        "corpus": str(path),
        "start": snapshot(),
        "long_epoch": long_epoch(path, args.every),
        "eight_loaders": eight_loaders(path, args.batches, args.every // 8 or 1),
        "short_epochs": short_epochs(path, args.short_epochs),
    }
    report["end"] = snapshot()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
