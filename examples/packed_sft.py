"""The ``--packed`` path of finetune.py: supervised fine-tuning of a small causal model on
prompt/completion examples packed whole into rows (PackedDataset, bestfit), each
attending to itself only, trained on the completion only.

The classifier of finetune.py has one label per document and pools over its tokens;
packing several documents into one row would mix them in its pooling, so packing is
shown where it belongs, on a causal model whose loss is per token. Without --data it
writes a synthetic corpus where each completion counts up from its prompt's first token
(one id further at every step), so the loss on the completion falls well below the
uniform log(vocab) as the model learns the rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import arrowloader
import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from arrowloader.synthetic import reference_lengths
from feeding import StepProfiler, Throughput, feed, pick_device, report
from torch import nn

PAD = 0
EOS = 1
#: Ends every prompt; the completion follows.
SEP = 2
#: Completion tokens per example, at most.
COMPLETION = 16


def make_example_corpus(
    path: Path, num_docs: int, vocab: int, seed: int, max_prompt: int
) -> Path:
    """Writes ``input_ids: list<int32>`` (a prompt of random ids in ``[SEP + 1, vocab)``,
    a sixteenth of the reference lengths but at most ``max_prompt``, then SEP, then the
    completion: ``COMPLETION`` ids counting up from the prompt's first, wrapping within
    that range) and ``prompt_length: int32`` (the prompt and its SEP) as one Arrow IPC
    file, as ``arrowloader prepare --prompt-field ...`` writes them."""
    rng = np.random.default_rng(seed)
    prompts = np.clip(reference_lengths(num_docs, rng) // 16, 4, max(4, max_prompt))
    first = SEP + 1
    documents, prompt_lengths = [], []
    for n in prompts.tolist():
        prompt = rng.integers(first, vocab, size=n)
        steps = np.arange(1, COMPLETION + 1)
        completion = first + (prompt[0] - first + steps) % (vocab - first)
        documents.append(np.concatenate([prompt, [SEP], completion]).tolist())
        prompt_lengths.append(n + 1)
    table = pa.table({
        "input_ids": pa.array(documents, pa.list_(pa.int32())),
        "prompt_length": pa.array(prompt_lengths, pa.int32()),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


class PackedCausalModel(nn.Module):
    """Token + position embeddings and pre-norm transformer blocks, causal within each
    packed example (``seq_idx``) and blind to the others and to the padding."""

    def __init__(self, vocab: int, seq_len: int, width: int, layers: int, heads: int):
        super().__init__()
        self.heads = heads
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(seq_len, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor, seq_idx: torch.Tensor
    ) -> torch.Tensor:
        """input_ids, position_ids: int64 [B, L]; seq_idx: int32 [B, L] (the segment of
        every position) -> logits float [B, L, vocab]."""
        length = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(position_ids)
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        allowed = (seq_idx[:, :, None] == seq_idx[:, None, :]) & causal
        # One [L, L] mask per row and head; True where attention is not allowed.
        mask = (~allowed).repeat_interleave(self.heads, dim=0)
        return self.head(self.norm(self.blocks(x, mask=mask)))


def run_packed(args: argparse.Namespace) -> None:
    """Fine-tunes on packed examples: ``args`` from finetune.py (``--max-length`` is the
    row length, ``--batch-size`` the rows per batch)."""
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    data = args.data
    if data is None:
        data = Path(args.workdir) / "examples.arrow"
        # Most examples fit a row whole; the longest prompts make a few too long for it.
        make_example_corpus(data, args.docs, args.vocab, args.seed,
                            max_prompt=args.max_length)
    dataset = arrowloader.PackedDataset(
        data,
        seq_len=args.max_length,
        mode="bestfit",
        eos_token_id=EOS,
        pad_token_id=PAD,
        shift_labels=False,  # labels = input_ids; the loss below shifts, as HF models do
        return_seq_idx=True,
        overlong="truncate",  # an example never split across rows; counted, logged
        prompt_length_column=args.prompt_length_column,
        vocab_size=args.vocab,
    )
    loader = arrowloader.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    batches_on_device = feed(loader, device)
    model = PackedCausalModel(args.vocab, args.max_length, args.width, args.layers, heads=4)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    throughput = Throughput(device)
    real = torch.zeros((), dtype=torch.int64, device=device)  # since the last log line
    slots = 0
    step = 0
    with StepProfiler(args.profile, device) as profiler:
        while step < args.steps:
            for batch in batches_on_device:
                logits = model(batch["input_ids"], batch["position_ids"], batch["seq_idx"])
                # Position i predicts token i + 1; -100 on prompts, padding and boundaries.
                loss = F.cross_entropy(
                    logits[:, :-1].flatten(0, 1), batch["labels"][:, 1:].flatten(),
                    ignore_index=-100,
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                profiler.step()
                step += 1
                tokens = batch["input_ids"].ne(PAD).sum()
                throughput.add(tokens)
                real += tokens
                slots += batch["input_ids"].numel()
                if step % args.log_every == 0 or step == args.steps:
                    padding = 100 * (1 - int(real) / slots)
                    print(
                        f"step {step:5d}  completion loss {loss.item():.3f}  padding "
                        f"{padding:.1f}%  {throughput.line(batches_on_device)}"
                    )
                    real.zero_()
                    slots = 0
                if step == args.steps:
                    break
    stats = dataset.stats()
    print(f"packed: {stats['documents']} examples, {stats['overlong_documents']} longer than a "
          f"row (truncated)")
    report(loader, batches_on_device)
