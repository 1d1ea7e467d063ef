"""The nanoGPT peer of W2 ("pack"): nanoGPT's ``get_batch`` over ``np.memmap`` of a raw
token stream file.

The file is nanoGPT's ``train.bin``, written by
:func:`arrowloader.bench.token_stream.write_token_stream`; :class:`NanoGPTBatches` reads
it as nanoGPT's ``train.py`` does: the file reopened every batch, random offsets
from ``torch.randint``, ``torch.stack`` of ``astype(np.int64)`` slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from arrowloader.bench.harness import Batch, Peer
from arrowloader.bench.token_stream import TokenStreamFile

if TYPE_CHECKING:  # the workload module imports this one
    from arrowloader.bench.pack import PackOptions


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
        make_loader, reads_stream=True,
    )
