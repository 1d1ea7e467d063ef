"""The GPU benchmark: does arrowloader keep a GPU fed? (``arrowloader bench --device cuda``,
``python benchmarks/gpu_bench.py``).

One run measures, on one CUDA device:

- **Host-to-device copies.** The pinned copy bandwidth a plain ``copy_`` loop reaches
  (64 MiB copies: the peak; and copies the size of one W2 output tensor), against the
  bandwidth arrowloader's :class:`~arrowloader.CUDAPrefetcher` achieves copying W2 batches
  out of the loader's pinned outputs, with no model running and while training.
- **Training steps.** A GPT-2-small-shaped model (12 layers, 12 heads, width 768, vocab
  50257; bf16 autocast, fused AdamW) trained on W2 batches (``input_ids``, ``labels``
  int64 ``[8, 2048]``) fed by each of:

  - a synthetic batch already on the device (the no-loader bound);
  - ``arrowloader.DataLoader(PackedDataset(...), pin_memory=True)`` behind a
    ``CUDAPrefetcher``;
  - the same loader with the copies made in the loop (``.to(device, non_blocking=True)``
    on the compute stream), to show what the prefetcher adds;
  - ``torch.utils.data.DataLoader(pin_memory=True)`` over the per-item W2 peer that
    ``arrowloader bench`` uses (:class:`~arrowloader.bench.torch_peers.MappedArrowBlocks`,
    a seeded ``RandomSampler``, ``drop_last``), workers 0 and 2, copies in the loop.

  For each: the step time (median over repeats, feeders interleaved within each repeat),
  tokens/s, the host's wait for data, and the **stall**: how much longer a step is than
  with the synthetic batch, as a share of the step time.

Targets (BENCHMARKS.md): copies >= 80 % of the pinned peak; stall < 1 % of the step time.

Without CUDA the benchmark says so and measures nothing (``device="cpu"`` runs the same
pipeline on the CPU with a tiny model, as a check of the code, not as a figure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
import torch.utils.data
from torch import nn
from tqdm.auto import tqdm

import arrowloader
from arrowloader.bench.harness import BenchmarkError, SeededLoaderFactory
from arrowloader.bench.torch_peers import MappedArrowBlocks
from arrowloader.sources import Source
from arrowloader.wording import plural

#: A plain copy loop's large transfers: well past the size where per-copy costs matter.
PEAK_COPY_BYTES = 64 * 1024 * 1024

Pair = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelShape:
    """A GPT-2-style decoder: ``layers`` pre-norm blocks of ``heads``-head causal attention
    and a 4x MLP, learned positions, the head tied to the token embedding."""

    layers: int = 12
    heads: int = 12
    width: int = 768
    vocab: int = 50257

    def parameters(self, seq_len: int) -> int:
        """Parameter count (tied head counted once)."""
        per_block = 12 * self.width * self.width + 13 * self.width
        return self.layers * per_block + (self.vocab + seq_len) * self.width + 2 * self.width


#: GPT-2 small (124M parameters).
GPT2_SMALL = ModelShape()


@dataclass(frozen=True)
class GPUBenchConfig:
    """What the GPU benchmark runs.

    Attributes:
        source: the corpus (anything PackedDataset accepts); None: the cached reference
            corpus, written on first use.
        device: ``"cuda"`` (or ``"cuda:N"``); ``"cpu"`` runs the pipeline as a code check.
        column, batch_size, seq_len, eos_token_id: W2's (rows of ``seq_len`` tokens cut
            from blocks of ``seq_len + 1``).
        threads: arrowloader's native threads (0: one per core, at most 4).
        torch_workers: worker counts of the torch DataLoader rows.
        model: the model's shape.
        steps: timed training steps per run.
        warmup_steps: untimed steps before each run (loader start-up, allocator warm-up).
        repeats: runs per feeder; the table shows medians.
        copy_repeats: copies per plain copy loop.
        copy_batches: batches the prefetcher copies in the copy-only run.
        seed: the loaders' seed.
        show_progress: progress bars on stderr.
    """

    source: Optional[Source] = None
    device: str = "cuda"
    column: str = "input_ids"
    batch_size: int = 8
    seq_len: int = 2048
    eos_token_id: int = 50256
    threads: int = 0
    torch_workers: tuple[int, ...] = (0, 2)
    model: ModelShape = field(default_factory=ModelShape)
    steps: int = 30
    warmup_steps: int = 5
    repeats: int = 3
    copy_repeats: int = 200
    copy_batches: int = 300
    seed: int = 0
    show_progress: bool = True


# --------------------------------------------------------------------------- the model


class Block(nn.Module):
    """Pre-norm causal self-attention and MLP, GPT-2 style."""

    def __init__(self, shape: ModelShape) -> None:
        super().__init__()
        self.heads = shape.heads
        self.norm1 = nn.LayerNorm(shape.width)
        self.qkv = nn.Linear(shape.width, 3 * shape.width)
        self.out = nn.Linear(shape.width, shape.width)
        self.norm2 = nn.LayerNorm(shape.width)
        self.up = nn.Linear(shape.width, 4 * shape.width)
        self.down = nn.Linear(4 * shape.width, shape.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, T, width] -> [B, T, width]."""
        batch, steps, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
        q, k, v = (t.view(batch, steps, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, steps, width))
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class GPT(nn.Module):
    """Token and position embeddings, :class:`Block` s, a final norm, a tied head."""

    def __init__(self, shape: ModelShape, seq_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(shape.vocab, shape.width)
        self.positions = nn.Embedding(seq_len, shape.width)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, shape.vocab, bias=False)
        self.head.weight = self.tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: int64 [B, T] -> logits [B, T, vocab]."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.tokens(input_ids) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class Trainer:
    """The model, its optimizer and one training step on a batch of ``(input_ids,
    labels)``; bf16 autocast."""

    def __init__(self, config: GPUBenchConfig, device: torch.device) -> None:
        torch.manual_seed(config.seed)
        self.device = device
        self.model = GPT(config.model, config.seq_len).to(device)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, **fused)

    def step(self, input_ids: torch.Tensor, labels: torch.Tensor) -> None:
        """One forward, backward and optimizer step (queued; nothing waits for it)."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.model(input_ids)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- copies


def pinned_copy_gbps(nbytes: int, repeats: int, device: torch.device) -> float:
    """Bandwidth of a plain loop of ``repeats`` non-blocking ``copy_`` calls of ``nbytes``
    from one pinned buffer into one device buffer, timed by CUDA events: 1e9 bytes/s."""
    source = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    target = torch.empty(nbytes, dtype=torch.uint8, device=device)
    target.copy_(source, non_blocking=True)  # warm-up
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        target.copy_(source, non_blocking=True)
    end.record()
    end.synchronize()
    return nbytes * repeats / (start.elapsed_time(end) / 1e3) / 1e9


# --------------------------------------------------------------------------- feeders


def arrowloader_loader(config: GPUBenchConfig, source: Source, seed: int, pin: bool) -> Any:
    """W2 for arrowloader: PackedDataset with input_ids and labels only, shuffled,
    outputs pinned if ``pin``."""
    dataset = arrowloader.PackedDataset(
        source,
        seq_len=config.seq_len,
        eos_token_id=config.eos_token_id,
        column=config.column,
        seed=seed,
        return_position_ids=False,
        return_cu_seqlens=False,
    )
    return arrowloader.DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=config.threads,
        pin_memory=pin,
    )


def torch_loader(
    config: GPUBenchConfig, source: Source, seed: int, workers: int, pin: bool
) -> Any:
    """W2's torch peer (the per-item dataset ``arrowloader bench`` uses), batches pinned by
    torch's pin-memory thread if ``pin``."""
    dataset = MappedArrowBlocks(source, config.column, config.seq_len, config.eos_token_id)
    make_loader = SeededLoaderFactory(config.batch_size, workers, drop_last=True, pin_memory=pin)
    return make_loader(dataset, seed)


def endless(iterable: Iterable[Any]) -> Iterator[Any]:
    """One epoch after another (each a fresh iterator of ``iterable``)."""
    while True:
        empty = True
        for item in iterable:
            empty = False
            yield item
        if empty:  # check_corpus() rules this out for the benchmark's own loaders
            raise BenchmarkError("the loader yields no batch")


def copied_in_loop(loader: Any, device: torch.device) -> Iterator[Pair]:
    """The usual loop: each batch copied with ``.to(device, non_blocking=True)`` on the
    compute stream, right before its step."""
    for batch in endless(loader):
        yield (
            batch["input_ids"].to(device, non_blocking=True),
            batch["labels"].to(device, non_blocking=True),
        )


def prefetched(prefetcher: arrowloader.CUDAPrefetcher) -> Iterator[Pair]:
    """Batches already on the device, from a CUDAPrefetcher."""
    for batch in endless(prefetcher):
        yield batch["input_ids"], batch["labels"]


def synthetic(config: GPUBenchConfig, device: torch.device) -> Iterator[Pair]:
    """One random batch, made on the device once and given for every step."""
    generator = torch.Generator(device=device).manual_seed(config.seed)
    shape = (config.batch_size, config.seq_len)
    ids = torch.randint(0, config.model.vocab, shape, device=device, generator=generator)
    labels = torch.randint(0, config.model.vocab, shape, device=device, generator=generator)
    while True:
        yield ids, labels


@dataclass
class Feeder:
    """One row of the training table: how to start its batches, and what it measured."""

    name: str
    start: Callable[[int], tuple[Iterator[Pair], Any]]  # seed -> (batches, prefetcher)
    step_seconds: list[float] = field(default_factory=list)
    wait_fractions: list[float] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)


def feeders(config: GPUBenchConfig, source: Source, device: torch.device) -> list[Feeder]:
    """The training table's rows (see the module docstring)."""
    pin = device.type == "cuda"

    def start_synthetic(seed: int) -> tuple[Iterator[Pair], Any]:
        return synthetic(config, device), None

    def start_prefetched(seed: int) -> tuple[Iterator[Pair], Any]:
        prefetcher = arrowloader.CUDAPrefetcher(
            arrowloader_loader(config, source, seed, pin), device=device, depth=2
        )
        return prefetched(prefetcher), prefetcher

    def start_in_loop(seed: int) -> tuple[Iterator[Pair], Any]:
        return copied_in_loop(arrowloader_loader(config, source, seed, pin), device), None

    def start_torch(workers: int) -> Callable[[int], tuple[Iterator[Pair], Any]]:
        def start(seed: int) -> tuple[Iterator[Pair], Any]:
            loader = torch_loader(config, source, seed, workers, pin)
            return copied_in_loop(loader, device), None

        return start

    rows = [
        Feeder("synthetic batch on the device (no loader)", start_synthetic),
        Feeder("arrowloader + CUDAPrefetcher", start_prefetched),
        Feeder("arrowloader, .to(device) in the loop", start_in_loop),
    ]
    rows += [
        Feeder(f"torch DataLoader(pin_memory=True, workers {n})", start_torch(n))
        for n in config.torch_workers
    ]
    return rows


def timed_steps(
    trainer: Trainer, batches: Iterator[Pair], steps: int, warmup: int
) -> tuple[float, float]:
    """Runs ``warmup`` then ``steps`` training steps on ``batches``; returns the seconds
    per timed step (the device's queue drained at both ends) and the host seconds spent
    getting batches during the timed steps."""
    for _ in range(warmup):
        trainer.step(*next(batches))
    synchronize(trainer.device)
    waited = 0.0
    started = time.perf_counter()
    for _ in range(steps):
        asked = time.perf_counter()
        batch = next(batches)
        waited += time.perf_counter() - asked
        trainer.step(*batch)
    synchronize(trainer.device)
    return (time.perf_counter() - started) / steps, waited


# --------------------------------------------------------------------------- the run


def device_facts(device: torch.device) -> dict[str, Any]:
    """The device's name and the torch / CUDA versions."""
    facts: dict[str, Any] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts.update(
            name=properties.name,
            memory_bytes=properties.total_memory,
            capability=f"{properties.major}.{properties.minor}",
            cuda=torch.version.cuda,
        )
    return facts


def run_gpu_bench(config: GPUBenchConfig = GPUBenchConfig(), *, out: Any = None) -> dict:
    """Runs the benchmark (see the module docstring), prints its table to ``out``
    (default stdout) and returns every figure as a dict (``"measured": False`` with a
    ``"reason"`` when there is no CUDA device to measure)."""
    out = out if out is not None else sys.stdout
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        reason = (
            f"CUDA is not available (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'none'}), so the GPU benchmark measured nothing. Run it "
            "on a machine with a CUDA GPU and a CUDA build of torch."
        )
        print(reason, file=out)
        return {"measured": False, "reason": reason, "config": _config_dict(config)}
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"the GPU benchmark runs on 'cuda' (or 'cpu' as a check), got {device}")

    started = time.perf_counter()
    source = config.source
    if source is None:
        from arrowloader.bench.cache import reference_corpus

        source = reference_corpus(show_progress=config.show_progress)
    check_corpus(config, source)
    results: dict[str, Any] = {
        "measured": device.type == "cuda",
        "config": _config_dict(config),
        "corpus": str(source),
        "machine": device_facts(device),
    }
    if device.type == "cuda":
        results["copies"] = measure_copies(config, source, device)
    results["training"] = measure_training(config, source, device)
    copies = results.get("copies")
    if copies is not None and results["training"]["prefetcher_copy_gbps"] is not None:
        copies["training_gbps"] = results["training"]["prefetcher_copy_gbps"]
        copies["training_of_peak"] = copies["training_gbps"] / copies["peak_gbps"]
    results["elapsed_s"] = time.perf_counter() - started
    print(format_table(results), file=out, flush=True)
    return results


def check_corpus(config: GPUBenchConfig, source: Source) -> None:
    """Raises BenchmarkError (before anything runs) when the corpus does not make one
    batch of W2 blocks, or holds ids the model's vocabulary does not."""
    dataset = MappedArrowBlocks(source, config.column, config.seq_len, config.eos_token_id)
    if len(dataset) < config.batch_size:
        raise BenchmarkError(
            f"{source}: the corpus makes {len(dataset)} blocks of {config.seq_len + 1} tokens, "
            f"fewer than one batch of {config.batch_size}"
        )
    largest = max(
        [config.eos_token_id, *(int(v.max()) for v in dataset.columns.values if len(v))]
    )
    if largest >= config.model.vocab:
        raise BenchmarkError(
            f"{source}: token id {largest} is outside the model's vocabulary of "
            f"{config.model.vocab}"
        )


def measure_copies(config: GPUBenchConfig, source: Source, device: torch.device) -> dict:
    """The copy table: plain pinned copy loops, and the prefetcher with no model."""
    tensor_bytes = config.batch_size * config.seq_len * 8  # one int64 output of a batch
    peak = pinned_copy_gbps(PEAK_COPY_BYTES, max(10, config.copy_repeats // 10), device)
    same_size = pinned_copy_gbps(tensor_bytes, config.copy_repeats, device)
    prefetcher = arrowloader.CUDAPrefetcher(
        arrowloader_loader(config, source, config.seed, pin=True), device=device, depth=2
    )
    batches = prefetched(prefetcher)
    bar = tqdm(range(config.copy_batches), desc="copies", disable=not config.show_progress)
    wall = time.perf_counter()
    for _ in bar:
        next(batches)
    synchronize(device)
    wall = time.perf_counter() - wall
    batches.close()
    metrics = prefetcher.metrics()
    achieved = metrics.copy_gbps or 0.0
    return {
        "peak_bytes": PEAK_COPY_BYTES,
        "peak_gbps": peak,
        "same_size_bytes": tensor_bytes,
        "same_size_gbps": same_size,
        "prefetcher_gbps": achieved,
        "prefetcher_of_peak": achieved / peak,
        "prefetcher_of_same_size": achieved / same_size,
        "delivered_gbps": metrics.bytes / wall / 1e9,
        "prefetcher_metrics": metrics.as_dict(),
    }


def measure_training(config: GPUBenchConfig, source: Source, device: torch.device) -> dict:
    """The training table: every feeder, ``repeats`` times, interleaved."""
    trainer = Trainer(config, device)
    rows = feeders(config, source, device)
    tokens_per_step = config.batch_size * config.seq_len
    total = config.repeats * len(rows)
    with tqdm(total=total, desc="training runs", disable=not config.show_progress) as bar:
        for repeat in range(config.repeats):
            for row in rows:
                bar.set_postfix_str(row.name)
                batches, prefetcher = row.start(config.seed + repeat)
                seconds, waited = timed_steps(
                    trainer, batches, config.steps, config.warmup_steps
                )
                row.step_seconds.append(seconds)
                row.wait_fractions.append(waited / (seconds * config.steps))
                if prefetcher is not None:
                    row.metrics.append(prefetcher.metrics().as_dict())
                batches.close()
                bar.update()
    bound = statistics.median(rows[0].step_seconds)
    table = []
    for row in rows:
        step = statistics.median(row.step_seconds)
        entry: dict[str, Any] = {
            "name": row.name,
            "step_ms": 1e3 * step,
            "step_ms_runs": [1e3 * s for s in row.step_seconds],
            "tokens_per_s": tokens_per_step / step,
            "host_wait_fraction": statistics.median(row.wait_fractions),
            "stall_fraction": (step - bound) / step,
        }
        if row.metrics:
            entry["prefetcher_metrics"] = row.metrics
            # Device seconds the compute stream waited for copies, over the prefetcher's
            # span (warm-up steps included).
            entry["device_wait_fraction"] = statistics.median(
                m["device_wait_seconds"] / m["elapsed_seconds"] if m["elapsed_seconds"] else 0.0
                for m in row.metrics
            )
        table.append(entry)
    copy_rates = [
        m["copy_gbps"] for row in rows for m in row.metrics if m["copy_gbps"] is not None
    ]
    return {
        "tokens_per_step": tokens_per_step,
        "parameters": config.model.parameters(config.seq_len),
        "rows": table,
        "prefetcher_copy_gbps": statistics.median(copy_rates) if copy_rates else None,
    }


def _config_dict(config: GPUBenchConfig) -> dict[str, Any]:
    fields = dataclasses.asdict(config)
    fields["source"] = None if config.source is None else str(config.source)
    return fields


# --------------------------------------------------------------------------- the table


def format_table(results: dict[str, Any]) -> str:
    """The report of :func:`run_gpu_bench`'s results, as aligned text."""
    config = results["config"]
    shape = config["model"]
    machine = results["machine"]
    lines = [
        f"GPU benchmark: W2 batches [{config['batch_size']}, {config['seq_len']}] int64 "
        "(input_ids, labels) into a GPT-2-shaped model "
        f"({shape['layers']} layers, {shape['heads']} heads, width {shape['width']}, vocab "
        f"{shape['vocab']}; {results['training']['parameters'] / 1e6:.0f}M parameters; bf16 "
        "autocast, AdamW)",
        f"device: {machine.get('name', machine['device'])}, torch {machine['torch']}"
        + (f", CUDA {machine['cuda']}" if machine.get("cuda") else ""),
        f"corpus: {results['corpus']}",
    ]
    if not results["measured"]:
        lines.append("(run on the CPU as a check of the benchmark's code: not a GPU figure)")
    copies = results.get("copies")
    if copies is not None:
        lines += ["", f"{'host-to-device copies':<52}{'GB/s':>8}{'of peak':>10}"]
        rows = [
            (f"pinned copy_ loop, {copies['peak_bytes'] >> 20} MiB copies (peak)",
             copies["peak_gbps"]),
            (f"pinned copy_ loop, {copies['same_size_bytes'] >> 10} KiB copies (one output)",
             copies["same_size_gbps"]),
            ("arrowloader + CUDAPrefetcher, no model", copies["prefetcher_gbps"]),
        ]
        if "training_gbps" in copies:
            rows.append(("arrowloader + CUDAPrefetcher, while training", copies["training_gbps"]))
        for name, gbps in rows:
            lines.append(f"{name:<52}{gbps:>8.1f}{100 * gbps / copies['peak_gbps']:>9.0f}%")
        lines.append(
            f"(prefetcher: copy-stream time per batch, from an event before its first copy to "
            f"one after its last, so the host's time to issue each copy counts where it is "
            f"longer than the copy, as in the small plain copies; batches reached the device "
            f"at {copies['delivered_gbps']:.1f} GB/s of wall time with no model; target: >= "
            "80% of the peak)"
        )
    training = results["training"]
    lines += [
        "",
        f"{'training step (median of runs)':<52}{'step ms':>9}{'Mtok/s':>9}"
        f"{'host wait':>11}{'stall':>9}{'device wait':>13}",
    ]
    for row in training["rows"]:
        device_wait = row.get("device_wait_fraction")
        lines.append(
            f"{row['name']:<52}{row['step_ms']:>9.1f}{row['tokens_per_s'] / 1e6:>9.3f}"
            f"{100 * row['host_wait_fraction']:>10.1f}%{100 * row['stall_fraction']:>8.1f}%"
            + (f"{100 * device_wait:>12.2f}%" if device_wait is not None else f"{'-':>13}")
        )
    lines.append(
        "stall: (step time - the synthetic batch's) / step time, the loader's share of each "
        "step (target < 1% for arrowloader + CUDAPrefetcher); host wait: share of the time "
        "the host spent getting batches (overlaps the GPU's work while it runs ahead); "
        "device wait: share of the time the compute stream waited on the prefetcher's copies"
    )
    lines.append(
        f"runs: {config['repeats']} per row, each {plural(config['steps'], 'step')} after "
        f"{plural(config['warmup_steps'], 'warm-up step')}, rows interleaved; whole run "
        f"{results['elapsed_s']:.0f} s"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The GPU benchmark's own options (``benchmarks/gpu_bench.py``)."""
    parser.add_argument("--data", nargs="+", metavar="PATH", help="corpus (default: reference)")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (cpu: a code check)")
    parser.add_argument("--steps", type=int, default=GPUBenchConfig.steps)
    parser.add_argument("--warmup-steps", type=int, default=GPUBenchConfig.warmup_steps)
    parser.add_argument("--repeats", type=int, default=GPUBenchConfig.repeats)
    parser.add_argument("--batch-size", type=int, default=GPUBenchConfig.batch_size)
    parser.add_argument("--seq-len", type=int, default=GPUBenchConfig.seq_len)
    parser.add_argument("--eos-token-id", type=int, default=GPUBenchConfig.eos_token_id)
    parser.add_argument("--threads", type=int, default=0, help="arrowloader native threads")
    parser.add_argument(
        "--torch-workers", default="0,2", help="worker counts of the torch rows (default 0,2)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> GPUBenchConfig:
    """A config from ``arrowloader bench --device cuda`` or ``gpu_bench.py`` arguments
    (options either command lacks keep their defaults)."""
    data = getattr(args, "data", None)
    source = None if not data else data[0] if len(data) == 1 else list(data)
    workers = getattr(args, "torch_workers", "0,2")
    given = {
        "source": source,
        "device": getattr(args, "device", "cuda"),
        "column": getattr(args, "column", GPUBenchConfig.column),
        "steps": getattr(args, "steps", None),
        "warmup_steps": getattr(args, "warmup_steps", None),
        "repeats": getattr(args, "repeats", None),
        "batch_size": getattr(args, "batch_size", None),
        "seq_len": getattr(args, "seq_len", None),
        "eos_token_id": getattr(args, "eos_token_id", None),
        # `arrowloader bench --threads` may list several counts (a sweep): the first here.
        "threads": _first_count(getattr(args, "threads", None)),
        "seed": getattr(args, "seed", None),
        "torch_workers": tuple(int(n) for n in str(workers).split(",") if n.strip()),
        "show_progress": not getattr(args, "quiet", False),
    }
    return GPUBenchConfig(**{k: v for k, v in given.items() if v is not None})


def _first_count(threads: Any) -> Optional[int]:
    if isinstance(threads, (tuple, list)):
        return int(threads[0]) if threads else None
    return threads


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the benchmark for parsed arguments, writes ``--json``; exit status 0 (also
    without CUDA, after saying so), 2 for a corpus it cannot use."""
    try:
        results = run_gpu_bench(config_from_args(args))
    except (BenchmarkError, arrowloader.ArrowLoaderError) as exc:
        print(f"GPU benchmark: error: {exc}", file=sys.stderr)
        return 2
    path = getattr(args, "json", None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0
