"""Run by test_batch_plans.py under ``torchrun --nproc_per_node=N``: two epochs of a
TokenDataset through arrowloader.DataLoader with a TokenBudgetBatchSampler and no
explicit rank (torch.distributed decides), each rank writing its batches' row ids (the
"row" label column) and ``len(loader)`` to ``<out>/rank-<r>.json``.

Usage: python -m torch.distributed.run --nproc_per_node=N distributed_plans.py OUT CORPUS
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import arrowloader
import torch.distributed as dist

MAX_TOKENS = 512
SEED = 23


def main(out: Path, path: str) -> None:
    dist.init_process_group("gloo")
    try:
        ds = arrowloader.TokenDataset(path, label_column="row", max_length=64)
        sampler = arrowloader.TokenBudgetBatchSampler(ds, MAX_TOKENS, seed=SEED)
        loader = arrowloader.DataLoader(ds, batch_sampler=sampler)
        assert loader.native
        epochs = [[batch["labels"].tolist() for batch in loader] for _ in range(2)]
        counts = [None] * dist.get_world_size()
        dist.all_gather_object(counts, [len(e) for e in epochs])
        assert all(c == counts[0] for c in counts), counts  # equal steps: no rank hangs
        result = {"rank": dist.get_rank(), "len": len(loader), "epochs": epochs}
        (out / f"rank-{dist.get_rank()}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
