"""Run by test_packed.py under ``torchrun --nproc_per_node=2``: one epoch of a
PackedDataset through arrowloader.DataLoader with no explicit rank (torch.distributed
decides), each rank writing the input_ids of its batches to ``<out>/rank-<r>.json``.

Usage: python -m torch.distributed.run --nproc_per_node=2 distributed_packed.py OUT FILE...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import arrowloader
import torch
import torch.distributed as dist

BATCH_SIZE = 3
SEED = 17


def main(out: Path, paths: list[str]) -> None:
    dist.init_process_group("gloo")
    try:
        ds = arrowloader.PackedDataset(paths, seq_len=8, eos_token_id=3, mode="bestfit")
        loader = arrowloader.DataLoader(
            ds, batch_size=BATCH_SIZE, shuffle=True, generator=torch.Generator().manual_seed(SEED)
        )
        assert loader.native
        length = len(loader)  # before iterating: the epoch advances at its end
        seen = [batch["input_ids"].tolist() for batch in loader]
        # Every rank must have taken the same number of steps: a collective per step of
        # a training loop would otherwise hang.
        counts = [None] * dist.get_world_size()
        dist.all_gather_object(counts, len(seen))
        assert len(set(counts)) == 1, counts
        result = {
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
            "batch_size": BATCH_SIZE,
            "seed": SEED,
            "len": length,
            "input_ids": seen,
        }
        (out / f"rank-{dist.get_rank()}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
