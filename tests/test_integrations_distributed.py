"""Two real processes under torchrun (gloo, CPU) run an Accelerator and a Lightning DDP
Trainer over one TokenDataset built without a rank (tests/distributed_integrations.py).
The oracle is ``torch.utils.data.DistributedSampler``: each rank gets its share of each
epoch, the shares are disjoint and cover the corpus once, the loaders stay native, and
``save_state`` / ``load_state`` and Lightning's ``ModelCheckpoint`` + ``ckpt_path``
resume at exactly the next batch. One launch checks all of it: starting processes is
the costly part."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from conftest import free_port, write_tokens

DOCS = 40
BATCH = 4


def sampler_batches(rank: int, epoch: int, seed: int) -> list[list[int]]:
    sampler = torch.utils.data.DistributedSampler(range(DOCS), num_replicas=2, rank=rank,
                                                  shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    order = list(sampler)
    return [order[i : i + BATCH] for i in range(0, len(order), BATCH)]


def test_accelerate_and_lightning_ddp_on_two_processes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    documents = [[int(t) for t in rng.integers(1, 999, size=int(rng.integers(1, 9)))]
                 for _ in range(DOCS)]
    path = write_tokens(tmp_path / "rows.arrow", documents, labels=list(range(DOCS)),
                        label_column="row")
    script = Path(__file__).with_name("distributed_integrations.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         f"--master_port={free_port()}", str(script), str(tmp_path), str(path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    outputs: list[dict[str, Any]] = [
        json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)
    ]

    for rank, output in enumerate(outputs):
        acc = output["accelerate"]
        assert acc["native"] and acc["process"] == [rank, 2]
        assert acc["epoch"] == sampler_batches(rank, 0, seed=23)
        assert acc["len"] == len(acc["epoch"]) == DOCS // 2 // BATCH
        # Two batches of epoch 1, save_state, then a fresh loader resumed by load_state.
        assert acc["head"] + acc["rest"] == sampler_batches(rank, 1, seed=23)

        light = output["lightning"]
        assert light["native"] == [True] * 3  # 2 epochs of the first fit, 1 of the resumed
        # Lightning's DistributedSampler (seed 0): epoch 0's 5 steps, then 3 of epoch 1.
        want = sampler_batches(rank, 0, seed=0) + sampler_batches(rank, 1, seed=0)[:3]
        assert light["whole"] == want
        assert light["resumed"] == want[3:]  # from the checkpoint after step 3

    for part, key in (("accelerate", "epoch"), ("lightning", "whole")):
        rows = [row for o in outputs for batch in o[part][key][:5] for row in batch]
        assert sorted(rows) == list(range(DOCS)), part  # disjoint shares, every row once
