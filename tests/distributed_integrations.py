"""Run by test_integrations_distributed.py under ``torchrun --nproc_per_node=2`` (gloo,
CPU): an Accelerator and a Lightning DDP Trainer, in the same two processes, over a
TokenDataset built with no explicit rank. Each rank writes to ``<out>/rank-<r>.json``:

- ``accelerate``: the row ids of each batch of one epoch of a loader prepared with
  arrowloader.integrations.accelerate, whether it stayed native, and the rows after a
  save_state / load_state in the middle of the epoch;
- ``lightning``: the row ids of every training step of a fit of 8 steps (checkpointed by
  ModelCheckpoint every 3 steps), whether the loader Lightning iterated stayed native,
  and the row ids of a second fit resumed from the step-3 checkpoint (``ckpt_path``).

Usage: python -m torch.distributed.run --nproc_per_node=2 distributed_integrations.py OUT FILE
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import arrowloader
import torch
import torch.distributed as dist

BATCH_SIZE = 4
SEED = 23


def accelerate_part(out: Path, path: str) -> dict[str, Any]:
    from accelerate import Accelerator
    from arrowloader.integrations.accelerate import prepare

    accelerator = Accelerator(cpu=True)
    assert dist.is_initialized() and accelerator.num_processes == 2

    def prepared(accelerator: Any) -> Any:
        ds = arrowloader.TokenDataset(path, label_column="row")
        loader = arrowloader.DataLoader(ds, batch_size=BATCH_SIZE, shuffle=True,
                                        generator=torch.Generator().manual_seed(SEED))
        return prepare(accelerator, loader)

    loader = prepared(accelerator)
    epoch = [batch["labels"].tolist() for batch in loader]
    it = iter(loader)
    head = [next(it)["labels"].tolist() for _ in range(2)]
    accelerator.save_state(str(out / "accelerate-ckpt"))
    accelerator.wait_for_everyone()
    del it
    again = Accelerator(cpu=True)
    resumed = prepared(again)
    again.load_state(str(out / "accelerate-ckpt"))
    rest = [batch["labels"].tolist() for batch in resumed]
    return {"native": loader.native, "len": len(loader), "epoch": epoch, "head": head,
            "rest": rest, "process": [accelerator.process_index, accelerator.num_processes]}


def lightning_part(out: Path, path: str) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    class Rows(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Embedding(1000, 1)
            self.seen: list[list[int]] = []
            self.native: list[bool] = []

        def train_dataloader(self) -> Any:
            ds = arrowloader.TokenDataset(path, label_column="row")
            return arrowloader.DataLoader(ds, batch_size=BATCH_SIZE, shuffle=True,
                                          generator=torch.Generator().manual_seed(SEED))

        def on_train_epoch_start(self) -> None:
            self.native.append(bool(self.trainer.train_dataloader.native))

        def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
            self.seen.append(batch["labels"].tolist())
            return self.layer(batch["input_ids"]).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(ckpt_path: Any = None) -> Rows:
        module = Rows()
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_steps=8, logger=False,
            enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=str(out),
            callbacks=[ModelCheckpoint(dirpath=str(out / "lightning-ckpt"), filename="{step}",
                                       every_n_train_steps=3, save_top_k=-1)],
        )
        trainer.fit(module, ckpt_path=ckpt_path)
        return module

    with warnings.catch_warnings():
        # Lightning's own advice about worker processes and logging on a tiny CPU run.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")
        whole = fit()
        resumed = fit(str(out / "lightning-ckpt" / "step=3.ckpt"))
    return {"native": whole.native + resumed.native, "whole": whole.seen,
            "resumed": resumed.seen}


def main(out: Path, path: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = {"accelerate": accelerate_part(out, path)}
    result["lightning"] = lightning_part(out, path)
    result["rank"], result["world_size"] = dist.get_rank(), dist.get_world_size()
    (out / f"rank-{dist.get_rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
