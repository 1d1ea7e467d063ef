"""What bounds W2 on a few cores: CPU per batch on the consuming thread and on the
native threads, against the strongest torch W2 loader's CPU per batch.

    python benchmarks/w2_bound.py [--seconds 3] [--threads 2] [--json FILE]

On the reference corpus (written on first use, as ``arrowloader bench`` does) it runs,
each for ``--seconds``:

- ``arrowloader.DataLoader(PackedDataset(..., return_position_ids=False,
  return_cu_seqlens=False), batch_size=8, shuffle=True, num_workers=threads)`` (W2's
  headline row), then the same with position_ids and cu_seqlens, and with
  ``shuffle_documents=False``;
- the flat-stream torch peer (``torch.utils.data.DataLoader`` over
  :class:`~arrowloader.bench.torch_peers.FlatStreamBlocks`, workers 0, the strongest torch
  W2 row) over the same blocks' uint16 stream file;

and prints, per batch: the consuming thread's CPU microseconds (``time.thread_time``:
the Python that hands the batch out, not its waits), the rest of the process's CPU (the
native threads assembling it), and the bound they set on ``C`` cores: a loader can hand
out no more than ``min(C / (consumer + native), 1 / consumer)`` batches per second. The
ratio of those bounds, arrowloader's over the peer's (whose whole cost is on its one
thread), is the most the W2 ratio can reach on this machine, however idle it is.
CPU times are robust to other work on the machine; wall-clock rates are not.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable

import arrowloader
import torch
from arrowloader.bench.cache import reference_corpus
from arrowloader.bench.pack import PackOptions
from arrowloader.bench.token_stream import stream_dtype, write_token_stream
from arrowloader.bench.torch_peers import FlatStreamBlocks

SEQ_LEN, BATCH_SIZE, EOS = 2048, 8, 50256


def measure(make_batches: Callable[[], Any], seconds: float) -> dict[str, float]:
    """CPU microseconds per batch of the consuming thread and of the whole process over
    a loop of at least ``seconds`` (after 8 warm-up batches), and batches per second."""
    batches = iter(make_batches())
    for _ in range(8):
        next(batches)
    count = 0
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    while True:
        for _ in range(64):
            try:
                next(batches)
            except StopIteration:
                batches = iter(make_batches())
                next(batches)
            count += 1
        if time.perf_counter() - wall >= seconds:
            break
    wall = time.perf_counter() - wall
    thread = time.thread_time() - thread
    process = time.process_time() - process
    return {
        "batches": count,
        "batches_per_second": count / wall,
        "consumer_us": 1e6 * thread / count,
        "native_us": 1e6 * (process - thread) / count,
    }


def bound(figures: dict[str, float], cores: int) -> float:
    """Most batches per second the CPU per batch allows on ``cores`` cores."""
    consumer, total = figures["consumer_us"], figures["consumer_us"] + figures["native_us"]
    return 1e6 * min(cores / total, 1.0 / consumer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per row")
    parser.add_argument("--threads", type=int, default=2, help="arrowloader's num_workers")
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    source = reference_corpus()
    stream_path = source.with_suffix(f".input_ids.eos{EOS}.uint16.bin")
    if not stream_path.exists():
        write_token_stream(source, PackOptions().column, EOS, stream_path, stream_dtype(EOS))

    def arrowloader_rows(**options: Any) -> Callable[[], Any]:
        dataset = arrowloader.PackedDataset(source, seq_len=SEQ_LEN, eos_token_id=EOS, **options)
        return lambda: arrowloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=args.threads,
            generator=torch.Generator().manual_seed(0),
        )

    def flat_stream() -> Any:
        dataset = FlatStreamBlocks(stream_path, stream_dtype(EOS), SEQ_LEN)
        return torch.utils.data.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
            generator=torch.Generator().manual_seed(0),
        )

    headline = {"return_position_ids": False, "return_cu_seqlens": False}
    rows = {
        f"arrowloader (threads {args.threads})": arrowloader_rows(**headline),
        "arrowloader +position_ids +cu_seqlens": arrowloader_rows(),
        "arrowloader documents in order": arrowloader_rows(**headline, shuffle_documents=False),
        "torch flat stream uint16 (workers 0)": flat_stream,
    }
    results = {name: measure(make, args.seconds) for name, make in rows.items()}
    peer = bound(results["torch flat stream uint16 (workers 0)"], args.cores)
    print(f"W2, batches of {BATCH_SIZE} x {SEQ_LEN}, {args.cores} cores; CPU us per batch")
    print(f"{'loader':40s} {'consumer':>9s} {'native':>8s} {'batches/s':>10s} "
          f"{'bound/s':>9s} {'bound vs peer':>13s}")
    for name, figures in results.items():
        limit = bound(figures, args.cores)
        figures["bound_batches_per_second"] = limit
        figures["bound_vs_peer"] = limit / peer
        print(f"{name:40s} {figures['consumer_us']:9.1f} {figures['native_us']:8.1f} "
              f"{figures['batches_per_second']:10.0f} {limit:9.0f} {limit / peer:12.2f}x")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"cores": args.cores, "rows": results}, out, indent=2)


if __name__ == "__main__":
    main()
