"""The "finetune" workload: W1's documents (truncated to ``max_length``) batched four
ways, and what each batching would cost a GPU per epoch.

Rows, all arrowloader over the same corpus:

- ``random``: today's W1 loader, ``DataLoader(TokenDataset, batch_size=32,
  sampler=seeded RandomSampler)``: rows padded to the longest of each random batch;
- ``grouped``: ``DataLoader(ds, batch_size=32, shuffle=True, group_by_length=True)``;
- ``budget``: ``DataLoader(ds, batch_sampler=TokenBudgetBatchSampler(ds, max_tokens,
  shuffle=True))``: as many documents as fit in ``max_tokens`` padded tokens;
- ``packed``: ``PackedDataset(mode="bestfit", overlong="truncate", shift_labels=False)``,
  whole documents (each with its EOS) packed into rows of ``max_length``, batches of
  ``packed_batch_size`` rows with ``cu_seqlens`` for variable-length attention.

Besides the harness's figures, each row gets its *epoch plan*: batches per epoch, the
padding fraction of the whole epoch and a simulated GPU step cost summed over the epoch,
``positions + c * attention``: a padded batch of ``B`` rows of width ``W`` costs ``B * W``
positions and ``B * W**2`` attention; a packed batch costs its ``B * seq_len`` positions
and the sum of ``L**2`` over the segments of its ``cu_seqlens`` (what a varlen attention
kernel computes; a row's padding is one segment). ``c`` = 1 / model width: per token
the dense layers cost about ``width`` multiply-adds per weight row while attention costs
``L`` per head dimension, so the attention term is ``L / width`` of the dense one (an
estimate that leaves out constant factors, MLP ratio and heads; the default width is
4096). The epoch plans of the padded rows come from their samplers' plans of epoch 0
(seed 0) and the document lengths; the packed row's from iterating its epoch 0 once.

Real tokens are counted as the batches arrive (:attr:`counts_in_loop`): the four rows
draw different batches, so no single replay gives them all. A padded batch's real tokens
are its ``attention_mask`` sum; a packed batch's are its positions outside padding
(:func:`packed_real_tokens`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

import arrowloader
from arrowloader.bench.harness import (
    Batch,
    BenchmarkError,
    Peer,
    SeededLoaderFactory,
    kept_lengths,
    seeded_sampler,
)
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.pad import check_pad_batch, quiet_truncation_warning
from arrowloader.bench.report import BenchWorkload, Traffic
from arrowloader.native import IGNORE_INDEX, default_num_threads
from arrowloader.sources import Source
from arrowloader.wording import plural

#: The rows, in table order.
BATCHINGS = ("random", "grouped", "budget", "packed")
#: Bytes per element of the int64 outputs.
_OUTPUT_ITEMSIZE = 8


@dataclass(frozen=True)
class FinetuneOptions:
    """What the finetune workload reads and how each row batches it.

    Attributes:
        column: the token column.
        label_column: an integer column returned as ``labels`` int64 ``[B]`` by the padded
            rows, or None.
        batch_size: documents per batch of the random and grouped rows.
        max_length: truncation length of the padded rows, row length of the packed one.
        max_tokens: padded-token budget per batch of the budget row (32 x 1024 / 2 by
            default: half of a random batch's largest size).
        packed_batch_size: rows per batch of the packed row.
        pad_token_id: the padding id.
        eos_token_id: the id after every packed document.
        model_width: ``c = 1 / model_width`` weighs attention in the step cost.
    """

    column: str = "input_ids"
    label_column: Optional[str] = "label"
    batch_size: int = 32
    max_length: int = 1024
    max_tokens: int = 16384
    packed_batch_size: int = 16
    pad_token_id: int = 0
    eos_token_id: int = 50256
    model_width: int = 4096


@dataclass(frozen=True)
class EpochPlan:
    """One row's batches of one epoch, summed.

    Attributes:
        batches: batches per epoch.
        real_tokens: tokens that are not padding.
        positions: all positions (rows x width).
        attention: sum over rows (padded) or segments (packed) of length squared.
        attention_weight: ``c`` of the step cost.
    """

    batches: int
    real_tokens: int
    positions: int
    attention: int
    attention_weight: float

    @property
    def padding_fraction(self) -> float:
        """``1 - real_tokens / positions``."""
        return 1.0 - self.real_tokens / self.positions if self.positions else 0.0

    @property
    def step_cost(self) -> float:
        """``positions + c * attention``, summed over the epoch."""
        return self.positions + self.attention_weight * self.attention

    def as_dict(self) -> dict[str, Any]:
        """The plan, JSON-ready."""
        return {
            "batches": self.batches,
            "real_tokens": self.real_tokens,
            "positions": self.positions,
            "attention": self.attention,
            "attention_weight": self.attention_weight,
            "padding_fraction": self.padding_fraction,
            "step_cost": self.step_cost,
        }


def padded_epoch_plan(
    kept: np.ndarray, batches: list[np.ndarray], attention_weight: float
) -> EpochPlan:
    """The epoch plan of padded batches: batch ``b`` (int64 indices) of width ``W =
    max(kept[b])`` has ``len(b) * W`` positions and ``len(b) * W**2`` attention.

    Args:
        kept: tokens each document keeps after truncation, int64 ``[documents]``.
        batches: each batch's document indices.
    """
    real = positions = attention = 0
    for batch in batches:
        lengths = kept[batch]
        width = int(lengths.max()) if len(lengths) else 0
        real += int(lengths.sum())
        positions += len(lengths) * width
        attention += len(lengths) * width * width
    return EpochPlan(len(batches), real, positions, attention, attention_weight)


def random_batches(documents: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """The batches of the first epoch of a loader over ``seeded_sampler(dataset, seed)``
    (the random row, W1's order): consecutive runs of ``batch_size``, the last short."""
    order = np.fromiter(iter(seeded_sampler(range(documents), seed)), dtype=np.int64)
    return [order[i : i + batch_size] for i in range(0, documents, batch_size)]


def planned_batches(sampler: Any, epoch: int = 0) -> list[np.ndarray]:
    """The batches of ``epoch`` of a :class:`~arrowloader.batch_plans.PlannedBatchSampler`."""
    plan = sampler.plan(epoch)
    return [plan.batch(k) for k in range(len(plan))]


def packed_segments(batch: Batch) -> np.ndarray:
    """Segment lengths of a packed batch, from its ``cu_seqlens``: int64 ``[segments]``."""
    return np.diff(batch["cu_seqlens"].numpy().astype(np.int64))


def packed_real_tokens(batch: Batch) -> int:
    """Positions of a packed batch that hold a document (token or EOS), not padding.

    A bestfit row's padding is one segment of ``cu_seqlens``, its last, and its labels are
    -100; with ``shift_labels=False`` a document's last label is its EOS (or, truncated,
    its last token), never -100. So a row is padded exactly when its last label is -100,
    and the real tokens are the positions less those rows' last segments. This reads a
    few values per row, not the batch: the count runs on the consuming thread of the
    loop being timed. (A row ending in a document of a single token, an empty one with
    its EOS, whose only label is -100, would count that document as padding.)
    """
    labels = batch["labels"]
    rows, width = labels.shape
    cu_seqlens = batch["cu_seqlens"].numpy().astype(np.int64)
    ends = np.arange(1, rows + 1, dtype=np.int64) * width
    last_starts = cu_seqlens[np.searchsorted(cu_seqlens, ends) - 1]
    padded = labels[:, -1].numpy() == IGNORE_INDEX
    return rows * width - int(((ends - last_starts) * padded).sum())


def packed_epoch_plan(loader: Any, attention_weight: float) -> EpochPlan:
    """The epoch plan of one pass over a packed ``loader`` (its next epoch)."""
    batches = real = positions = attention = 0
    for batch in loader:
        segments = packed_segments(batch)
        batches += 1
        real += packed_real_tokens(batch)
        positions += batch["input_ids"].numel()
        attention += int((segments * segments).sum())
    return EpochPlan(batches, real, positions, attention, attention_weight)


class FinetuneWorkload(BenchWorkload):
    """The finetune workload over one corpus, its four rows built and their epoch plans
    computed.

    Args:
        source: the corpus (anything ``TokenDataset`` accepts).
        reference: whether it is the cached reference corpus.
        options: columns, batch sizes, budget, lengths.
        peers: ignored (the workload has no peers; every row is arrowloader's).
        threads: arrowloader's ``num_workers`` of every row (the first count).
        show_progress: unused (nothing is copied).

    Raises:
        ArrowLoaderError: the corpus cannot be read.
        ValueError: a document does not fit ``max_tokens`` (cannot happen when
            ``max_tokens >= max_length``).
    """

    key = "finetune"
    title = "finetune"
    counts_in_loop = True

    def __init__(
        self,
        source: Source,
        *,
        reference: bool,
        options: FinetuneOptions,
        peers: tuple[str, ...] = (),
        threads: tuple[int, ...] = (0,),
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            source, reference=reference, options=options, threads=threads,
            show_progress=show_progress,
        )
        if options.max_tokens < options.max_length:
            raise ValueError(
                f"max_tokens={options.max_tokens} must be at least max_length="
                f"{options.max_length}: a document of max_length tokens must fit a batch"
            )
        with quiet_truncation_warning():
            dataset = self._token_dataset()
        mapped = MappedTokenColumn(source, options.column, options.label_column)
        lengths, self.token_itemsize = mapped.lengths(), mapped.value_itemsize
        del mapped
        self.kept = kept_lengths(lengths, options.max_length)
        self.documents, self.tokens = len(lengths), int(lengths.sum())
        self.plans = self._epoch_plans(dataset)
        num_workers = self.threads[0]
        self.peers = [self._peer(name, num_workers) for name in BATCHINGS]

    # ------------------------------------------------------------------ the rows

    def _token_dataset(self) -> arrowloader.TokenDataset:
        options = self.options
        return arrowloader.TokenDataset(
            self.source, column=options.column, label_column=options.label_column,
            max_length=options.max_length, pad_token_id=options.pad_token_id,
        )

    def _packed_dataset(self, seed: int) -> arrowloader.PackedDataset:
        options = self.options
        return arrowloader.PackedDataset(
            self.source, seq_len=options.max_length, eos_token_id=options.eos_token_id,
            mode="bestfit", column=options.column, seed=seed, pad_token_id=options.pad_token_id,
            overlong="truncate", shift_labels=False, return_cu_seqlens=True,
            flash_attn_kwargs=True,
        )

    def make_loader(self, batching: str, dataset: Any, seed: int, num_workers: int = 0) -> Any:
        """The loader of row ``batching`` over its opened dataset, seeded."""
        options = self.options
        generator = torch.Generator().manual_seed(seed)
        if batching == "random":
            return SeededLoaderFactory(
                options.batch_size, num_workers, persistent_workers=False,
                loader_class=arrowloader.DataLoader,
            )(dataset, seed)
        if batching == "grouped":
            return arrowloader.DataLoader(
                dataset, batch_size=options.batch_size, shuffle=True, group_by_length=True,
                generator=generator, num_workers=num_workers,
            )
        if batching == "budget":
            sampler = arrowloader.TokenBudgetBatchSampler(
                dataset, max_tokens=options.max_tokens, shuffle=True, seed=seed
            )
            return arrowloader.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers)
        if batching == "packed":
            return arrowloader.DataLoader(
                dataset, batch_size=options.packed_batch_size, shuffle=True,
                generator=generator, num_workers=num_workers,
            )
        raise ValueError(f"batching must be one of {BATCHINGS}, got {batching!r}")

    def _peer(self, batching: str, num_workers: int) -> Peer:
        def open_dataset(seed: int = 0) -> Any:
            if batching == "packed":
                return self._packed_dataset(seed)
            return self._token_dataset()

        def make_loader(dataset: Any, seed: int) -> Any:
            return self.make_loader(batching, dataset, seed, num_workers)

        shown = num_workers or default_num_threads()
        return Peer(
            f"arrowloader {batching} (threads {shown})", "arrowloader", shown, open_dataset,
            make_loader, headline=batching == "random",
            extra_outputs=("cu_seqlens",) if batching == "packed" else (),
        )

    def _epoch_plans(self, dataset: arrowloader.TokenDataset) -> dict[str, EpochPlan]:
        options, c = self.options, 1.0 / self.options.model_width
        grouped = arrowloader.LengthGroupedBatchSampler(
            dataset, options.batch_size, shuffle=True, seed=0
        )
        budget = arrowloader.TokenBudgetBatchSampler(
            dataset, max_tokens=options.max_tokens, shuffle=True, seed=0
        )
        with quiet_truncation_warning():
            packed = self.make_loader("packed", self._packed_dataset(0), 0)
            packed_plan = packed_epoch_plan(packed, c)
        return {
            "random": padded_epoch_plan(
                self.kept, random_batches(self.documents, options.batch_size, 0), c
            ),
            "grouped": padded_epoch_plan(self.kept, planned_batches(grouped), c),
            "budget": padded_epoch_plan(self.kept, planned_batches(budget), c),
            "packed": packed_plan,
        }

    # ------------------------------------------------------------------ measuring

    def check_batch(self, peer: Peer, batch: Any) -> None:
        if "cu_seqlens" not in peer.extra_outputs:
            check_pad_batch(batch, self.options.label_column is not None, peer.name)
            return
        if not isinstance(batch, dict):
            raise BenchmarkError(f"{peer.name}: batch is a {type(batch).__name__}, not a dict")
        input_ids, cu_seqlens = batch.get("input_ids"), batch.get("cu_seqlens")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or (
            input_ids.shape[1] != self.options.max_length
        ):
            raise BenchmarkError(
                f"{peer.name}: input_ids must be [B, {self.options.max_length}]"
            )
        if not isinstance(cu_seqlens, torch.Tensor) or int(cu_seqlens[-1]) != input_ids.numel():
            raise BenchmarkError(f"{peer.name}: cu_seqlens must end at B x seq_len")

    def observe(self, batch: Batch) -> tuple[int, int]:
        if "cu_seqlens" in batch:
            return packed_real_tokens(batch), batch["input_ids"].numel()
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()

    # ------------------------------------------------------------------ reporting

    def epoch_table(self) -> list[str]:
        """The epoch plans as aligned lines, step cost relative to the random row's."""
        base = self.plans["random"].step_cost
        header = ["batching", "batches/epoch", "padding", "step cost (M)", "vs random"]
        body = [
            [
                name, f"{plan.batches:,}", f"{100 * plan.padding_fraction:.1f}%",
                f"{plan.step_cost / 1e6:,.1f}", f"{plan.step_cost / base:.2f}x",
            ]
            for name, plan in self.plans.items()
        ]
        widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
        return [
            "  " + cells[0].ljust(widths[0])
            + "".join("  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
            for cells in [header, *body]
        ]

    def description(self) -> list[str]:
        options = self.options
        return [
            f"finetune: documents truncated to {options.max_length}; random and grouped "
            f"batches of {options.batch_size}, budget batches of <= {options.max_tokens:,} "
            f"padded tokens, packed rows of {options.max_length} (bestfit, whole documents + "
            f"EOS {options.eos_token_id}, overlong truncated) in batches of "
            f"{options.packed_batch_size}",
            f"corpus: {self.source}{' (reference)' if self.reference else ''}, "
            f"{plural(self.documents, 'document')}, {self.tokens / 1e6:.1f}M tokens",
            f"epoch plans (epoch 0, seed 0; step cost = positions + attention / "
            f"{options.model_width}, attention = sum of L^2 per padded row or packed segment):",
            *self.epoch_table(),
        ]

    def settings(self) -> dict[str, Any]:
        return dict(self.options.__dict__)

    def corpus_facts(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "reference": self.reference,
            "documents": self.documents,
            "tokens": self.tokens,
            "kept_tokens": int(self.kept.sum()),
            "token_itemsize": self.token_itemsize,
            "epoch_plans": {name: plan.as_dict() for name, plan in self.plans.items()},
        }

    def traffic(self, peer: Peer) -> Traffic:
        # Padded rows: input_ids and attention_mask; packed: input_ids, labels and
        # position_ids (cu_seqlens is small).
        per_position = 3 if "cu_seqlens" in peer.extra_outputs else 2
        return Traffic(
            read_bytes_per_token=self.token_itemsize,
            written_bytes_per_position=per_position * _OUTPUT_ITEMSIZE,
        )

    def batch_output_bytes(self) -> int:
        return self.options.batch_size * self.options.max_length * 2 * _OUTPUT_ITEMSIZE
