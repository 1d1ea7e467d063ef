"""PyTorch Lightning on one CPU process: the Trainer iterates arrowloader's loader as it
is (native path, the batches torch's DataLoader gives with the dataset's collate), and
``ModelCheckpoint`` + ``ckpt_path`` resume it at exactly the next batch (Lightning
calls ``state_dict()`` on loaders that have one). Two processes under DDP:
test_integrations_distributed.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from arrowloader import TokenDataset
from conftest import random_documents, write_tokens
from lightning_fabric.utilities.warnings import PossibleUserWarning
from pytorch_lightning.callbacks import ModelCheckpoint

BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    documents = random_documents(np.random.default_rng(9), 30, max_tokens=12)
    folder = tmp_path_factory.mktemp("lightning")
    return write_tokens(folder / "docs.arrow", documents, labels=list(range(len(documents))))


class Rows(pl.LightningModule):
    """Records the row ids of every training batch."""

    def __init__(self, make_loader: Any) -> None:
        super().__init__()
        self.layer = torch.nn.Embedding(1000, 1)
        self.make_loader = make_loader
        self.seen: list[list[int]] = []
        self.native: list[bool] = []

    def train_dataloader(self) -> Any:
        return self.make_loader()

    def on_train_epoch_start(self) -> None:
        self.native.append(bool(getattr(self.trainer.train_dataloader, "native", False)))

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        ids = batch["input_ids"] if isinstance(batch, dict) else batch
        if isinstance(batch, dict):
            self.seen.append(batch["labels"].tolist())
        return self.layer(ids.clamp(0, 999)).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(module: Rows, out: Path, ckpt_path: Optional[str] = None, max_steps: int = 10) -> None:
    """Fits ``module``, checkpointing every 4 steps into ``out/ckpt``."""
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out),
        callbacks=[ModelCheckpoint(dirpath=str(out / "ckpt"), filename="{step}",
                                   every_n_train_steps=4, save_top_k=-1)],
    )
    with warnings.catch_warnings():
        # Lightning's advice, about a tiny CPU run (use worker processes) and about a
        # resumed run checkpointing into the folder it resumed from.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message="Checkpoint directory .* is not empty")
        trainer.fit(module, ckpt_path=ckpt_path)


def test_one_process_keeps_the_native_path_and_resumes_exactly(
    corpus: Path, tmp_path: Path
) -> None:
    ds = TokenDataset(corpus, label_column="label")

    def loader() -> arrowloader.DataLoader:
        return arrowloader.DataLoader(ds, batch_size=BATCH, shuffle=True,
                                      generator=torch.Generator().manual_seed(3))

    whole = Rows(loader)
    fit(whole, tmp_path)
    assert whole.native == [True, True]  # 8 steps an epoch: epoch 0, then 2 of epoch 1
    oracle = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True,
                                         generator=torch.Generator().manual_seed(3),
                                         collate_fn=ds.collate)
    want = [batch["labels"].tolist() for _ in range(2) for batch in oracle][:10]
    assert whole.seen == want

    resumed = Rows(loader)
    fit(resumed, tmp_path, ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"))
    assert resumed.seen == want[4:]


def test_a_loader_off_the_native_path_is_checkpointed_as_torchs(tmp_path: Path) -> None:
    """A generic dataset: arrowloader's DataLoader is torch's, with no state_dict (as
    torch's has none), so Lightning checkpoints a run over it as it would over torch's, and
    warns on resuming mid-epoch that the loader is not resumable."""
    data = [torch.tensor([i]) for i in range(12)]
    module = Rows(lambda: arrowloader.DataLoader(data, batch_size=BATCH))
    fit(module, tmp_path, max_steps=5)
    assert (tmp_path / "ckpt" / "step=4.ckpt").is_file()
    assert not hasattr(arrowloader.DataLoader(data), "state_dict")
    again = Rows(lambda: arrowloader.DataLoader(data, batch_size=BATCH))
    with pytest.warns(PossibleUserWarning, match="your dataloader is not resumable"):
        fit(again, tmp_path, ckpt_path=str(tmp_path / "ckpt" / "step=4.ckpt"), max_steps=5)
