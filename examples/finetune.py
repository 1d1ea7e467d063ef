"""Fine-tune a small transformer encoder to classify documents (workload W1's shape:
shuffled documents, truncated and padded to the longest of each batch, one label each).

    python examples/finetune.py                        # synthetic labelled corpus, 200 steps
    python examples/finetune.py --data corpus/ --label-column label --max-length 1024
    python examples/finetune.py --profile trace.json   # a torch.profiler trace of steps 2-4
    python examples/finetune.py --packed               # packed fine-tuning of a causal model
    python examples/finetune.py --group-by-length      # batches of documents of similar length
    python examples/finetune.py --max-tokens 8192      # as many documents as fit in 8192 tokens

Runs on the CPU, or on CUDA when available: batches are then assembled into pinned memory
and copied to the GPU by an arrowloader.CUDAPrefetcher two batches ahead, on a side
stream, while the current step computes. The log reports real (non-padding) tokens/s,
the share of the time the loop waited for data (stall) and the share of the padded
batches that was padding, and at the end the loader's and the prefetcher's metrics.

Random batches pad every document to the longest of its batch. --group-by-length batches
documents of similar length (Hugging Face's group_by_length: arrowloader's
LengthGroupedBatchSampler); --max-tokens N batches as many documents as fit in N padded
tokens (TokenBudgetBatchSampler), so batch sizes vary. Both still shuffle every epoch.

Without --data it writes a synthetic corpus with the reference document lengths in which
a document of class c carries the marker token c + 1 at about one position in ten, so the
accuracy climbs well above chance within a few hundred steps. Tiny settings for a quick
check on a CPU: --docs 500 --max-length 64 --batch-size 8 --width 32 --steps 20.

--packed fine-tunes a small causal model instead, on prompt/completion examples packed
whole into rows of --max-length tokens (PackedDataset, mode="bestfit"), each example
attending only to itself, with the loss on the completion only (labels -100 on the
prompt, from a prompt_length column as arrowloader prepare --prompt-field writes it);
see examples/packed_sft.py for why packing is not applied to the classifier.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Union

import arrowloader
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from arrowloader.synthetic import reference_lengths
from feeding import (
    StepProfiler,
    Throughput,
    add_common_arguments,
    feed,
    pick_device,
    report,
)
from packed_sft import run_packed
from torch import nn

#: Token ids 1 .. CLASSES mark the classes; ordinary tokens are drawn above them.
CLASSES = 2
PAD = 0


def make_labelled_corpus(path: Path, num_docs: int, vocab: int, seed: int) -> Path:
    """Writes ``input_ids: list<int32>`` (reference lengths, ids in ``[CLASSES + 1,
    vocab)``, about a tenth of each document's positions replaced by its class marker) and
    ``label: int64`` in ``[0, CLASSES)`` as one Arrow IPC file."""
    rng = np.random.default_rng(seed)
    lengths = reference_lengths(num_docs, rng)
    labels = rng.integers(0, CLASSES, size=num_docs)
    ids = rng.integers(CLASSES + 1, vocab, size=int(lengths.sum())).astype(np.int32)
    marked = rng.random(len(ids)) < 0.1
    ids[marked] = 1 + np.repeat(labels, lengths)[marked]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    table = pa.table(
        {
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids)),
            "label": pa.array(labels, type=pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


class EncoderClassifier(nn.Module):
    """Token + position embeddings, pre-norm transformer encoder blocks that ignore
    padding, a mean over the real tokens and a linear head."""

    def __init__(self, vocab: int, max_length: int, width: int, layers: int, heads: int):
        super().__init__()
        self.tokens = nn.Embedding(vocab, width, padding_idx=PAD)
        self.positions = nn.Embedding(max_length, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask: int64 [B, L] -> logits float [B, CLASSES]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tokens(input_ids) + self.positions(positions)
        x = self.norm(self.blocks(x, src_key_padding_mask=attention_mask == 0))
        mask = attention_mask.unsqueeze(-1).to(x.dtype)
        pooled = (x * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(pooled)


class Padding:
    """The share of the padded batches trained on so far that was padding."""

    def __init__(self) -> None:
        self.real: Union[int, torch.Tensor] = 0
        self.padded = 0

    def add(self, attention_mask: torch.Tensor) -> None:
        """One more batch (its mask may stay on the device: it is read only when a line is
        printed)."""
        self.real = self.real + attention_mask.sum()
        self.padded += attention_mask.numel()

    def line(self) -> str:
        """``padding X%`` for a log line."""
        return f"padding {100 * (1 - int(self.real) / max(self.padded, 1)):.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", help="corpus (any source TokenDataset accepts)")
    parser.add_argument(
        "--label-column", default="label", help="int column holding each document's class"
    )
    parser.add_argument("--vocab", type=int, default=1024, help="vocabulary size of the model")
    parser.add_argument("--max-length", type=int, default=256, help="truncation length")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per batch")
    batching = parser.add_mutually_exclusive_group()
    batching.add_argument(
        "--group-by-length", action="store_true",
        help="batches of --batch-size documents of similar length",
    )
    batching.add_argument(
        "--max-tokens", type=int, metavar="N",
        help="instead of --batch-size, as many documents as fit in N padded tokens",
    )
    batching.add_argument(
        "--packed", action="store_true",
        help="packed fine-tuning of a causal model on prompt/completion examples (rows of "
             "--max-length tokens, --batch-size rows per batch)",
    )
    parser.add_argument(
        "--prompt-length-column", default="prompt_length",
        help="with --packed and --data: the column of each example's prompt length",
    )
    add_common_arguments(parser, steps=200)
    args = parser.parse_args()
    if args.packed:
        args.workdir = tempfile.mkdtemp(prefix="arrowloader-finetune-packed-")
        run_packed(args)
        return

    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="arrowloader-finetune-")) / "corpus.arrow"
        make_labelled_corpus(data, args.docs, args.vocab, args.seed)

    dataset = arrowloader.TokenDataset(
        data,
        label_column=args.label_column,
        max_length=args.max_length,
        pad_token_id=PAD,
        vocab_size=args.vocab,  # an id the embedding cannot hold is an error, not a crash
    )
    if args.max_tokens is not None:
        budget = arrowloader.TokenBudgetBatchSampler(dataset, args.max_tokens, seed=args.seed)
        loader = arrowloader.DataLoader(dataset, batch_sampler=budget)
    else:
        loader = arrowloader.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            generator=torch.Generator().manual_seed(args.seed),
            group_by_length=args.group_by_length,
        )
    batches_on_device = feed(loader, device)  # pins the loader's outputs on CUDA
    model = EncoderClassifier(args.vocab, args.max_length, args.width, args.layers, heads=4)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    step = 0
    throughput = Throughput(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)  # since the last log line
    seen = 0
    padding = Padding()
    with StepProfiler(args.profile, device) as profiler:
        while step < args.steps:
            for batch in batches_on_device:  # already on the device
                logits = model(batch["input_ids"], batch["attention_mask"])
                loss = F.cross_entropy(logits, batch["labels"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                profiler.step()
                step += 1
                # Kept on the device: reading them every step would wait for the GPU.
                throughput.add(batch["attention_mask"].sum())
                padding.add(batch["attention_mask"])
                correct += (logits.argmax(-1) == batch["labels"]).sum()
                seen += len(batch["labels"])
                if step % args.log_every == 0 or step == args.steps:
                    print(
                        f"step {step:5d}  loss {loss.item():.3f}  accuracy "
                        f"{int(correct) / seen:.2f}  {throughput.line(batches_on_device)}  "
                        f"{padding.line()}"
                    )
                    correct.zero_()
                    seen = 0
                if step == args.steps:
                    break
    print(f"batches: {padding.line()} over {step} steps", flush=True)
    report(loader, batches_on_device)


if __name__ == "__main__":
    main()
