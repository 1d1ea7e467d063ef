"""Train a small document classifier with PyTorch Lightning on arrowloader's native
batches, checkpoint mid-epoch with ModelCheckpoint, and resume from it exactly.

    python examples/lightning_fit.py                 # 12 steps, then again from step 8
    python examples/lightning_fit.py --devices 2     # DDP on 2 CPU processes (gloo)

Lightning iterates an arrowloader.DataLoader as it is: on one device it keeps it; under
DDP (use_distributed_sampler=True, the default) it rebuilds it with a DistributedSampler,
which the native path follows, so each process still takes its own share. Lightning calls
state_dict() on the loader when it checkpoints and load_state_dict() when fit() starts from
ckpt_path, so a run resumed mid-epoch continues at exactly the next batch: after
training, the example fits again from its step-8 checkpoint and prints both runs' losses.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path
from typing import Any

import arrowloader
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from arrowloader.synthetic import make_corpus
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn


class Classifier(pl.LightningModule):
    """Mean of the token embeddings (padding left out), then a linear layer."""

    def __init__(self, path: str, args: argparse.Namespace) -> None:
        super().__init__()
        self.path, self.args = path, args
        self.embed = nn.Embedding(args.vocab, 32)
        self.head = nn.Linear(32, 2)

    def train_dataloader(self) -> arrowloader.DataLoader:
        ds = arrowloader.TokenDataset(self.path, label_column="label",
                                      max_length=self.args.max_length, vocab_size=self.args.vocab)
        return arrowloader.DataLoader(ds, batch_size=self.args.batch_size, shuffle=True,
                                      generator=torch.Generator().manual_seed(0))

    def training_step(self, batch: dict[str, torch.Tensor], index: int) -> torch.Tensor:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1).clamp(min=1)
        loss = F.cross_entropy(self.head(pooled), batch["labels"])
        if self.global_rank == 0 and (self.global_step + 1) % 4 == 0:
            native = self.trainer.train_dataloader.native
            print(f"{self.args.label}step {self.global_step + 1:5d}  loss {loss.item():.4f}  "
                  f"native {native}")
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a labelled corpus (default: synthetic)")
    parser.add_argument("--docs", type=int, default=400, help="synthetic corpus documents")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--checkpoint-dir", type=Path, help="default: a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.data or make_corpus(Path(folder) / "docs.arrow", num_docs=args.docs,
                                        vocab_size=args.vocab)
        checkpoints = args.checkpoint_dir or Path(folder) / "ckpt"
        for resume in (None, checkpoints / "step=8.ckpt"):
            args.label = "" if resume is None else "resumed: "
            trainer = pl.Trainer(
                accelerator="cpu", devices=args.devices, max_steps=args.steps, logger=False,
                strategy="ddp" if args.devices > 1 else "auto", enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=folder,
                callbacks=[ModelCheckpoint(dirpath=str(checkpoints), filename="{step}",
                                           every_n_train_steps=8, save_top_k=-1)],
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*does not have many workers.*")
                warnings.filterwarnings("ignore", message="Checkpoint directory .* not empty")
                trainer.fit(Classifier(str(path), args),
                            ckpt_path=None if resume is None else str(resume))

if __name__ == "__main__":
    main()
