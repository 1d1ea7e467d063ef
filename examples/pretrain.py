"""Pretrain a small GPT-shaped model on packed sequences, with checkpoints that resume the
data order exactly.

    python examples/pretrain.py                       # synthetic corpus, 300 steps
    python examples/pretrain.py --data corpus/ --steps 1000 --checkpoint ckpt.pt
    python examples/pretrain.py --resume ckpt.pt      # continues with the very next batch

Runs on the CPU, or on CUDA when available. Without --data it writes a small synthetic
corpus (random token ids below --vocab, so the loss falls only to the unigram entropy,
log(vocab)) to a temporary folder. Under torchrun every rank reads its own share of each
global batch.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import arrowloader
import torch
import torch.nn.functional as F
from arrowloader.synthetic import make_corpus
from torch import nn


class TinyGPT(nn.Module):
    """A decoder-only transformer: token + position embeddings, pre-norm causal blocks."""

    def __init__(self, vocab: int, seq_len: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(seq_len, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2
        nn.init.normal_(self.tokens.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """input_ids, position_ids: int64 [B, T] -> logits float [B, T, vocab]."""
        x = self.tokens(input_ids) + self.positions(position_ids)
        mask = nn.Transformer.generate_square_subsequent_mask(input_ids.shape[1], device=x.device)
        return self.head(self.norm(self.blocks(x, mask=mask, is_causal=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="corpus (any source PackedDataset accepts)")
    parser.add_argument("--vocab", type=int, default=512, help="vocabulary size of the model")
    parser.add_argument("--eos", type=int, default=0, help="EOS token id")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--checkpoint", default="pretrain-ckpt.pt")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--resume", help="checkpoint to continue from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="arrowloader-pretrain-")) / "corpus.arrow"
        make_corpus(data, num_docs=20_000, seed=args.seed, vocab_size=args.vocab)

    dataset = arrowloader.PackedDataset(data, seq_len=args.seq_len, eos_token_id=args.eos)
    loader = arrowloader.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )
    model = TinyGPT(args.vocab, args.seq_len, width=128, layers=2, heads=4).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    if args.resume:
        checkpoint = torch.load(args.resume, map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        loader.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
        print(f"resumed at step {step}, epoch {checkpoint['loader']['epoch']}")

    tokens = 0
    waited = 0.0
    started = time.perf_counter()
    while step < args.steps:
        batches = iter(loader)
        while step < args.steps:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break  # end of the epoch; the loader moves on to the next one
            input_ids = batch["input_ids"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            positions = batch["position_ids"].to(device, non_blocking=True)
            logits = model(input_ids, positions)
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            tokens += input_ids.numel()
            if step % 50 == 0 or step == args.steps:
                elapsed = time.perf_counter() - started
                print(
                    f"step {step:5d}  loss {loss.item():.3f} (unigram floor "
                    f"{math.log(args.vocab):.2f})  {tokens / elapsed:,.0f} tok/s  "
                    f"waiting for data {100 * waited / elapsed:.1f}%"
                )
            if step % args.checkpoint_every == 0 or step == args.steps:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(),
                        "step": step,
                    },
                    args.checkpoint,
                )
        batches = None  # ends the iterator's threads before the next epoch starts
    print(f"saved {args.checkpoint} at step {step}")


if __name__ == "__main__":
    main()
