"""Pretrain a small GPT-shaped model on packed sequences, with checkpoints that resume the
data order exactly.

    python examples/pretrain.py                       # synthetic corpus, 300 steps
    python examples/pretrain.py --data corpus/ --steps 1000 --checkpoint ckpt.pt
    python examples/pretrain.py --resume ckpt.pt      # continues with the very next batch
    python examples/pretrain.py --profile trace.json  # a torch.profiler trace of steps 2-4

Runs on the CPU, or on CUDA when available: batches are then assembled into pinned memory
and copied to the GPU by an arrowloader.CUDAPrefetcher two batches ahead, on a side
stream, while the current step computes. The log reports tokens/s and the share of the
time the loop waited for data (stall), and at the end the loader's and the prefetcher's
metrics.

Without --data it writes a small synthetic corpus (--docs documents of random token ids
below --vocab, so the loss falls only to the unigram entropy, log(vocab)) to a temporary
folder. Under torchrun every rank reads its own share of each global batch. Tiny settings
for a quick check on a CPU: --docs 2000 --seq-len 64 --width 32 --steps 20.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import arrowloader
import torch
import torch.nn.functional as F
from arrowloader.synthetic import make_corpus
from feeding import (
    StepProfiler,
    Throughput,
    add_common_arguments,
    feed,
    pick_device,
    report,
)
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
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="corpus (any source PackedDataset accepts)")
    parser.add_argument("--vocab", type=int, default=512, help="vocabulary size of the model")
    parser.add_argument("--eos", type=int, default=0, help="EOS token id")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per packed block")
    parser.add_argument("--batch-size", type=int, default=8, help="blocks per batch")
    parser.add_argument("--checkpoint", default="pretrain-ckpt.pt", help="where to save state")
    parser.add_argument(
        "--checkpoint-every", type=int, default=100, help="steps between checkpoints"
    )
    parser.add_argument("--resume", help="checkpoint to continue from")
    add_common_arguments(parser, steps=300)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="arrowloader-pretrain-")) / "corpus.arrow"
        make_corpus(data, num_docs=args.docs, seed=args.seed, vocab_size=args.vocab)

    # vocab_size: an id the embedding cannot hold is an error naming its row, not a crash.
    dataset = arrowloader.PackedDataset(
        data, seq_len=args.seq_len, eos_token_id=args.eos, vocab_size=args.vocab
    )
    loader = arrowloader.DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    batches_on_device = feed(loader, device)  # pins the loader's outputs on CUDA
    model = TinyGPT(args.vocab, args.seq_len, args.width, args.layers, heads=4).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    step = 0
    if args.resume:
        checkpoint = torch.load(args.resume, map_location=device, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        batches_on_device.load_state_dict(checkpoint["loader"])
        step = checkpoint["step"]
        print(f"resumed at step {step}, epoch {checkpoint['loader']['epoch']}")

    throughput = Throughput(device)
    with StepProfiler(args.profile, device) as profiler:
        while step < args.steps:
            batches = iter(batches_on_device)
            while step < args.steps:
                batch = next(batches, None)  # already on the device
                if batch is None:
                    break  # end of the epoch; the loader moves on to the next one
                logits = model(batch["input_ids"], batch["position_ids"])
                loss = F.cross_entropy(
                    logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                profiler.step()
                step += 1
                throughput.add(batch["input_ids"].numel())
                if step % args.log_every == 0 or step == args.steps:
                    print(
                        f"step {step:5d}  loss {loss.item():.3f} (unigram floor "
                        f"{math.log(args.vocab):.2f})  {throughput.line(batches_on_device)}"
                    )
                if step % args.checkpoint_every == 0 or step == args.steps:
                    torch.save(
                        {
                            "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            # The batches the loop trained on, not those fetched ahead.
                            "loader": batches_on_device.state_dict(),
                            "step": step,
                        },
                        args.checkpoint,
                    )
            batches = None  # ends the iterator's threads before the next epoch starts
    print(f"saved {args.checkpoint} at step {step}")
    report(loader, batches_on_device)


if __name__ == "__main__":
    main()
