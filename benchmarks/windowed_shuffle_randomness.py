"""What the windowed shuffle (PackedDataset(shuffle_window_shards=K)) changes in
randomness against the full shuffle: for one epoch of concat packing, how far apart
consecutive blocks' sources are in the corpus (mean |difference| of their first documents'
global numbers, as a fraction of the corpus), how often consecutive blocks read from
different shards, and how many distinct shards a run of 64 consecutive blocks reads.

The orders are the ones PackedDataset draws (the same functions); the corpus is
synthetic lengths only (no files): ``--shards`` shards of ``--docs`` documents, lengths
drawn from a lognormal around ``--mean-length`` tokens.

    python benchmarks/windowed_shuffle_randomness.py --shards 64 --docs 2000 --windows 1,2,4,8,16,64
"""

from __future__ import annotations

import argparse

import numpy as np
from arrowloader import _C
from arrowloader.windowed_shuffle import (
    mean_source_distance,
    window_block_starts,
    windowed_block_order,
    windowed_document_order,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--mean-length", type=float, default=500.0)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--windows", default="1,2,4,8,16,64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    n = args.shards * args.docs
    lengths = np.maximum(1, rng.lognormal(np.log(args.mean_length), 0.8, n)).astype(np.int64)
    rows = [args.docs] * args.shards
    shard_of = np.repeat(np.arange(args.shards), rows)
    block = args.seq_len + 1
    num_blocks = int((lengths + 1).sum() // block)
    print(f"{args.shards} shards x {args.docs} documents, {int(lengths.sum()):,} tokens, "
          f"{num_blocks:,} blocks of {block}")
    print(f"{'order':<22}{'mean distance':>15}{'other shard':>13}{'shards / 64 blocks':>20}")

    def row(name: str, order: np.ndarray, blocks: np.ndarray) -> None:
        f = mean_source_distance(lengths, order, block, blocks, shard_of)
        print(f"{name:<22}{f['mean_distance']:>15.4f}{f['other_shard']:>13.3f}"
              f"{f['shards_per_64_blocks']:>20.1f}")

    row("in order", np.arange(n, dtype=np.int64), np.arange(num_blocks, dtype=np.int64))
    row("full shuffle", _C.seeded_permutation(args.seed, 0, n),
        _C.seeded_permutation(args.seed, 1, num_blocks))
    for k in (int(x) for x in args.windows.split(",")):
        order, starts = windowed_document_order(rows, k, args.seed, 0)
        bounds = window_block_starts(lengths, order, starts, block, num_blocks)
        row(f"window of {k} shards", order, windowed_block_order(bounds, args.seed, 0))


if __name__ == "__main__":
    main()
