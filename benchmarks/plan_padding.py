"""How much of an epoch's padded batches is padding, with random, length-grouped and
token-budget batches over the reference corpus, documents truncated to 1024.

Usage::

    python benchmarks/plan_padding.py [--data corpus.arrow] [--dir DIR] [--json FILE]

Without ``--data`` the 200,000-document reference corpus (``arrowloader.synthetic``) is
written once under ``--dir`` and reused. Rows:

- random: W1's batches (32 documents in a seeded ``RandomSampler``'s order);
- length-grouped: ``LengthGroupedBatchSampler(ds, 32)``, as ``group_by_length=True``;
- token budget: ``TokenBudgetBatchSampler(ds, max_tokens=16384)``.

For each, over one epoch (seed 0): the padding fraction (``1 - real tokens / (rows x
width)`` summed over the batches; the widths are the ones the dataset's native
assembler pads to, the same as the batches' tensors), the batches, the mean documents
per batch, and the time to plan the epoch (building the sampler apart).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from arrowloader import LengthGroupedBatchSampler, TokenBudgetBatchSampler, TokenDataset
from arrowloader.plan import random_sampler_order
from arrowloader.synthetic import make_corpus
from torch.utils.data import RandomSampler

MAX_LENGTH = 1024
BATCH_SIZE = 32
MAX_TOKENS = 16_384
SEED = 0


def padding_row(
    name: str, ds: TokenDataset, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray,
    plan_seconds: float,
) -> dict[str, Any]:
    """The figures of one epoch whose batch k is ``rows[starts[k]:ends[k]]``."""
    widths = ds._assembler.batch_widths(rows, starts, ends)
    sizes = ends - starts
    padded = int((sizes * widths).sum())
    kept_before = np.concatenate([[0], np.cumsum(ds.kept_lengths()[rows])])
    real = int((kept_before[ends] - kept_before[starts]).sum())
    return {
        "batching": name,
        "padding_fraction": 1 - real / padded,
        "batches": len(starts),
        "mean_rows": float(sizes.mean()),
        "real_tokens": real,
        "padded_tokens": padded,
        "plan_seconds": plan_seconds,
    }


def measure(path: Path) -> list[dict[str, Any]]:
    ds = TokenDataset(path, label_column="label", max_length=MAX_LENGTH)
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(SEED))
    began = time.perf_counter()
    order = random_sampler_order(sampler)
    seconds = time.perf_counter() - began
    starts = np.arange(0, len(order), BATCH_SIZE)
    ends = np.minimum(starts + BATCH_SIZE, len(order))
    rows = [padding_row("random (W1)", ds, order, starts, ends, seconds)]
    for name, planner in (
        (f"length-grouped ({BATCH_SIZE})", LengthGroupedBatchSampler(ds, BATCH_SIZE, seed=SEED)),
        (f"token budget ({MAX_TOKENS})", TokenBudgetBatchSampler(ds, MAX_TOKENS, seed=SEED)),
    ):
        began = time.perf_counter()
        plan = planner.plan(0)
        seconds = time.perf_counter() - began
        rows.append(padding_row(name, ds, plan.rows, plan.starts, plan.ends, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="corpus (default: the reference corpus)")
    parser.add_argument(
        "--dir", type=Path, default=Path(tempfile.gettempdir()) / "arrowloader-bench",
        help="where the reference corpus is written once",
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    path = args.data
    if path is None:
        path = args.dir / "reference.arrow"
        if not path.exists():
            make_corpus(path)
    rows = measure(path)
    print(f"{'batching':<24} {'padding':>8} {'batches':>8} {'rows/batch':>10} {'plan s':>7}")
    for row in rows:
        print(f"{row['batching']:<24} {100 * row['padding_fraction']:7.2f}% {row['batches']:8d} "
              f"{row['mean_rows']:10.1f} {row['plan_seconds']:7.3f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
