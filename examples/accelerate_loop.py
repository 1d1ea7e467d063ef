"""Train a small document classifier with Hugging Face Accelerate on arrowloader's native
batches, checkpoint with accelerator.save_state, resume with load_state.

    python examples/accelerate_loop.py                       # 40 steps on a synthetic corpus
    python examples/accelerate_loop.py --resume ckpt/        # continue from a save_state folder
    python examples/accelerate_loop.py --compare-epochs      # one epoch's time per loader

accelerator.prepare(loader) would rebuild an arrowloader.DataLoader as accelerate's own
loader, which collates in Python (it warns when it does);
arrowloader.integrations.accelerate.prepare(accelerator, loader) keeps the native path, puts
batches on accelerator.device and registers the loader for save_state / load_state, which
then resume it at exactly the next batch. Launched with `accelerate launch` on several
processes, each takes its share of every epoch (the dataset reads its rank from
torch.distributed, which the Accelerator initialises).

--compare-epochs times one shuffled epoch (batch 32) of a --docs corpus through
arrowloader's own loader, the loader prepared by arrowloader.integrations.accelerate, the
one accelerator.prepare rebuilds, and torch's DataLoader with the dataset's collate (best
of --repeats passes each), and prints the seconds per epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import arrowloader
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from arrowloader.integrations.accelerate import prepare
from arrowloader.synthetic import make_corpus
from torch import nn


class BagClassifier(nn.Module):
    """Mean of the token embeddings (padding left out), then a linear layer: logits [B, 2]."""

    def __init__(self, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # [B, L, 1]
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.head(pooled)


def loader_of(ds: arrowloader.TokenDataset, batch_size: int, seed: int) -> arrowloader.DataLoader:
    return arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(seed))


def train(args: argparse.Namespace, path: Path) -> None:
    accelerator = Accelerator(cpu=args.cpu)
    ds = arrowloader.TokenDataset(path, label_column="label", max_length=args.max_length,
                                  vocab_size=args.vocab)
    loader = prepare(accelerator, loader_of(ds, args.batch_size, args.seed))
    torch.manual_seed(args.seed)
    model = BagClassifier(args.vocab, args.width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    step = 0
    if args.resume:
        accelerator.load_state(args.resume)  # model, optimizer and the loader's position
        step = int(Path(args.resume, "step.txt").read_text())
        print(f"resumed at step {step}")
    while step < args.steps:
        for batch in loader:
            logits = model(batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(logits, batch["labels"])
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
            if step % args.log_every == 0:
                labels = batch["labels"][:4].tolist()
                print(f"step {step:5d}  loss {loss.item():.4f}  labels {labels}")
            if args.checkpoint and step == args.checkpoint_at:
                accelerator.save_state(args.checkpoint)
                Path(args.checkpoint, "step.txt").write_text(str(step))
                print(f"saved at step {step} to {args.checkpoint}")
            if step >= args.steps:
                break
    print(f"native path: {loader.native}; device: {loader.device}")


def epoch_seconds(loader: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _batch in loader:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def compare(args: argparse.Namespace, path: Path) -> None:
    ds = arrowloader.TokenDataset(path, label_column="label")
    accelerator = Accelerator(cpu=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # accelerate's rebuild warns: measured on purpose
        rebuilt = accelerator.prepare(loader_of(ds, 32, args.seed))
    rows = {
        "arrowloader.DataLoader": loader_of(ds, 32, args.seed),
        "integrations.accelerate.prepare": prepare(accelerator, loader_of(ds, 32, args.seed)),
        "accelerator.prepare (rebuilt)": rebuilt,
        "torch DataLoader + ds.collate": torch.utils.data.DataLoader(
            ds, batch_size=32, shuffle=True, collate_fn=ds.collate,
            generator=torch.Generator().manual_seed(args.seed)),
    }
    print(f"one epoch of {len(ds)} documents ({ds.corpus.num_tokens} tokens), batch 32, "
          f"best of {args.repeats}:")
    for name, loader in rows.items():
        print(f"  {name:34s} {epoch_seconds(loader, args.repeats):8.4f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a labelled corpus (default: synthetic)")
    parser.add_argument("--docs", type=int, default=3001, help="synthetic corpus documents")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--checkpoint", help="save_state folder")
    parser.add_argument("--checkpoint-at", type=int, default=20, help="step to save at")
    parser.add_argument("--resume", help="a save_state folder to continue from")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    parser.add_argument("--compare-epochs", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.data or make_corpus(Path(folder) / "docs.arrow", num_docs=args.docs,
                                        vocab_size=args.vocab)
        compare(args, path) if args.compare_epochs else train(args, path)


if __name__ == "__main__":
    main()
