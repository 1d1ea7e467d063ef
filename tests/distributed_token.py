"""Run by test_dataset.py under ``torchrun --nproc_per_node=N``: two epochs of a
TokenDataset through arrowloader.DataLoader with no explicit rank (torch.distributed
decides), each rank writing its batches' row ids (the "row" label column) and
``len(loader)`` to ``<out>/rank-<r>.json``.

Usage: python -m torch.distributed.run --nproc_per_node=N distributed_token.py OUT FILE DROP
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import arrowloader
import torch
import torch.distributed as dist

BATCH_SIZE = 4
SEED = 23


def main(out: Path, path: str, drop_last: bool) -> None:
    dist.init_process_group("gloo")
    try:
        ds = arrowloader.TokenDataset(path, label_column="row")
        loader = arrowloader.DataLoader(
            ds,
            batch_size=BATCH_SIZE,
            shuffle=True,
            drop_last=drop_last,
            generator=torch.Generator().manual_seed(SEED),
        )
        assert loader.native
        epochs = [[batch["labels"].tolist() for batch in loader] for _ in range(2)]
        counts = [None] * dist.get_world_size()
        dist.all_gather_object(counts, [len(e) for e in epochs])
        assert all(c == counts[0] for c in counts), counts  # equal steps: no rank hangs
        result = {
            "rank": dist.get_rank(),
            "world_size": dist.get_world_size(),
            "len": len(loader),
            "epochs": epochs,
        }
        (out / f"rank-{dist.get_rank()}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1")
