"""The nanoGPT peer of W2 ("pack"): nanoGPT's ``get_batch`` over ``np.memmap`` of a raw
token stream file.

:func:`write_token_stream` writes the corpus as nanoGPT's ``train.bin`` (every document
followed by the EOS id, in corpus order, uint16 when every id fits); :class:`NanoGPTBatches`
reads it as nanoGPT's ``train.py`` does: the file reopened every batch, random offsets
from ``torch.randint``, ``torch.stack`` of ``astype(np.int64)`` slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch

from arrowloader.bench.harness import Batch, Peer
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload module imports this one
    from arrowloader.bench.pack import PackOptions

#: Rows written per step of :func:`write_token_stream`.
_STREAM_ROWS_PER_STEP = 65536


def stream_dtype(max_token_id: int) -> np.dtype:
    """The dtype of a raw token stream file: uint16 as nanoGPT writes GPT-2 ids when every
    id fits, else int32."""
    return np.dtype(np.uint16) if max_token_id < 2**16 else np.dtype(np.int32)


def max_token_id(source: Source, column: str) -> int:
    """The largest token id of the corpus (-1 if it has no tokens)."""
    mapped = MappedTokenColumn(source, column, None)
    return max((int(values.max()) for values in mapped.values if len(values)), default=-1)


def write_token_stream(
    source: Source,
    column: str,
    eos_token_id: int,
    path: Union[str, Path],
    dtype: Optional[np.dtype] = None,
) -> Path:
    """Writes the corpus as nanoGPT's ``train.bin``: every document's tokens followed by
    ``eos_token_id``, in corpus order, as raw ``dtype`` values (default:
    :func:`stream_dtype` of the largest id), and returns ``path``.

    Written under a temporary name (``<path>.partial``) and renamed when complete.

    Raises:
        ValueError: an id (or the EOS id) does not fit in ``dtype``.
    """
    path = Path(path)
    mapped = MappedTokenColumn(source, column, None)
    largest = max(
        [eos_token_id, *(int(values.max()) for values in mapped.values if len(values))]
    )
    smallest = min(
        [eos_token_id, *(int(values.min()) for values in mapped.values if len(values))]
    )
    dtype = stream_dtype(largest) if dtype is None else np.dtype(dtype)
    limits = np.iinfo(dtype)
    if smallest < limits.min or largest > limits.max:
        raise ValueError(f"token ids in [{smallest}, {largest}] do not fit in {dtype}")
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        for offsets, values in zip(mapped.offsets, mapped.values):
            rows = len(offsets) - 1
            for first in range(0, rows, _STREAM_ROWS_PER_STEP):
                last = min(first + _STREAM_ROWS_PER_STEP, rows)
                begin, end = int(offsets[first]), int(offsets[last])
                # Document r's EOS goes just past its tokens, shifted by the r EOS ids
                # written before it.
                eos_at = offsets[first + 1 : last + 1].astype(np.int64) - begin
                eos_at += np.arange(last - first)
                piece = np.empty(end - begin + last - first, dtype=dtype)
                is_token = np.ones(len(piece), dtype=bool)
                is_token[eos_at] = False
                piece[is_token] = values[begin:end]
                piece[eos_at] = eos_token_id
                piece.tofile(out)
    partial.replace(path)
    return path


@dataclass(frozen=True)
class TokenStreamFile:
    """The nanoGPT peer's "dataset": a raw token stream file, reopened every batch."""

    path: Path
    dtype: np.dtype

    @property
    def num_tokens(self) -> int:
        """Tokens in the file."""
        return self.path.stat().st_size // self.dtype.itemsize


class NanoGPTBatches:
    """nanoGPT's ``get_batch`` as an endless iterable (one endless epoch).

    As nanoGPT's ``train.py`` does on CPU (no pinning, no device copy): every batch maps
    the file anew with ``np.memmap`` (nanoGPT does so to avoid a memory leak), draws
    ``batch_size`` offsets with ``torch.randint(len(data) - block_size, ...)`` and stacks
    ``data[i:i+block_size].astype(np.int64)`` for x and ``data[i+1:i+1+block_size]`` for y.
    The offsets come from a generator seeded with ``seed`` instead of the global one.
    Batches are ``{"input_ids": x, "labels": y}``, int64 ``[batch_size, block_size]``.
    """

    def __init__(self, stream: TokenStreamFile, batch_size: int, block_size: int, seed: int):
        self.stream = stream
        self.batch_size = batch_size
        self.block_size = block_size
        self.generator = torch.Generator().manual_seed(seed)

    def get_batch(self) -> Batch:
        """One batch, exactly as nanoGPT's ``get_batch('train')`` makes it."""
        block_size = self.block_size
        data = np.memmap(self.stream.path, dtype=self.stream.dtype, mode="r")
        ix = torch.randint(len(data) - block_size, (self.batch_size,), generator=self.generator)
        x = torch.stack([torch.from_numpy(data[i : i + block_size].astype(np.int64)) for i in ix])
        y = torch.stack(
            [torch.from_numpy(data[i + 1 : i + 1 + block_size].astype(np.int64)) for i in ix]
        )
        return {"input_ids": x, "labels": y}

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.get_batch()


def nanogpt_pack_peer(stream: TokenStreamFile, options: PackOptions) -> Peer:
    """The nanoGPT row over a stream file written by :func:`write_token_stream`."""

    def open_dataset(seed: int = 0) -> TokenStreamFile:
        return stream

    def make_loader(dataset: Any, seed: int) -> NanoGPTBatches:
        return NanoGPTBatches(dataset, options.batch_size, options.seq_len, seed)

    return Peer(
        f"nanoGPT get_batch (memmap {stream.dtype.name})", "nanogpt", 0, open_dataset,
        make_loader,
    )
