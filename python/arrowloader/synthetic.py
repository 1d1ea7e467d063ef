"""The synthetic reference corpus of the benchmarks (README, Benchmark)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa

#: GPT-2's vocabulary size; ids are drawn from [1, VOCAB_SIZE).
VOCAB_SIZE = 50257
MIN_LENGTH = 8
MAX_LENGTH = 8192
#: Rows per record batch in the written file.
ROWS_PER_BATCH = 65536


def reference_lengths(num_docs: int, rng: np.random.Generator) -> np.ndarray:
    """Document lengths: ``clip(lognormal(mean=ln 300, sigma=1), 8, 8192)`` rounded down,
    int64 ``[num_docs]``."""
    raw = rng.lognormal(mean=math.log(300), sigma=1.0, size=num_docs)
    return np.floor(np.clip(raw, MIN_LENGTH, MAX_LENGTH)).astype(np.int64)


def make_corpus(
    path: Union[str, os.PathLike],
    num_docs: int = 200_000,
    seed: int = 0,
    vocab_size: int = VOCAB_SIZE,
) -> Path:
    """Writes the reference corpus as one Arrow IPC file and returns its path.

    Columns: ``input_ids: list<int32>`` (lengths from :func:`reference_lengths`, ids
    uniform in ``[1, 50257)``) and ``label: int64`` uniform in {0, 1}. With numpy's
    ``default_rng(seed)`` the lengths are drawn first, then the ids, then the labels, so
    the same arguments always give the same bytes. The default is about 98.6M tokens
    (394 MB). ``vocab_size`` changes the id range to ``[1, vocab_size)`` (the benchmarks
    keep GPT-2's; small models in the examples use less). The file is written to a
    temporary name and renamed, so an interrupted run never leaves a partial corpus.
    """
    if num_docs < 1:
        raise ValueError(f"num_docs must be at least 1, got {num_docs}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    rng = np.random.default_rng(seed)
    lengths = reference_lengths(num_docs, rng)
    ids = rng.integers(1, vocab_size, size=int(lengths.sum()), dtype=np.int32)
    labels = rng.integers(0, 2, size=num_docs, dtype=np.int64)
    offsets = np.zeros(num_docs + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.int64())])
    partial = path.with_name(path.name + ".partial")
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for begin in range(0, num_docs, ROWS_PER_BATCH):
            end = min(begin + ROWS_PER_BATCH, num_docs)
            first, last = offsets[begin], offsets[end]
            tokens = pa.ListArray.from_arrays(
                pa.array((offsets[begin : end + 1] - first).astype(np.int32)),
                pa.array(ids[first:last]),
            )
            writer.write_batch(
                pa.record_batch([tokens, pa.array(labels[begin:end])], schema=schema)
            )
    os.replace(partial, path)
    return path
