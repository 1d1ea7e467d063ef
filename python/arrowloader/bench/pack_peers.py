"""The W2 ("pack") loaders compared by the benchmark.

W2 reads the corpus as one token stream, every document followed by the EOS id, cut into
blocks of ``seq_len + 1`` tokens; a block gives ``input_ids = block[:-1]`` and
``labels = block[1:]``. Every loader yields ``input_ids`` and ``labels``
``[batch_size, seq_len]``, always full batches:

- ``torch``: ``torch.utils.data.DataLoader`` over :class:`MappedArrowBlocks`, a per-item
  map-style dataset that cuts block ``i`` of the stream (documents in corpus order) out of
  the memory-mapped Arrow buffers with numpy, stacked by the default collate; the block
  order is shuffled by a seeded ``RandomSampler``, ``drop_last=True``; ``num_workers`` 0
  and 2.
- ``nanogpt``: nanoGPT's ``get_batch`` (:class:`NanoGPTBatches`): ``np.memmap`` of a raw
  token stream file (:func:`write_token_stream`), reopened every batch, random offsets
  from ``torch.randint``, ``torch.stack`` of ``astype(np.int64)`` slices.
- ``arrowloader``: ``arrowloader.DataLoader(PackedDataset(...), shuffle=True)`` with
  ``input_ids`` and ``labels`` only (the headline row), then with ``position_ids`` and
  ``cu_seqlens`` on, then with int32 outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
import torch.utils.data
from torch.utils.data import Dataset

import arrowloader
from arrowloader.bench.harness import Batch, Peer, seeded_sampler
from arrowloader.bench.peers import PEER_WORKER_COUNTS, MappedTokenColumn
from arrowloader.loader import default_num_threads
from arrowloader.sources import Source

#: Rows written per step of :func:`write_token_stream`.
_STREAM_ROWS_PER_STEP = 65536


@dataclass(frozen=True)
class W2Options:
    """What W2 reads and produces.

    Attributes:
        column: the token column (Arrow ``list``/``large_list`` of integers).
        batch_size: blocks per batch.
        seq_len: tokens per row; blocks are ``seq_len + 1`` tokens of the stream.
        eos_token_id: the id after every document in the stream (GPT-2's ``<|endoftext|>``).
    """

    column: str = "input_ids"
    batch_size: int = 8
    seq_len: int = 2048
    eos_token_id: int = 50256

    @property
    def block_size(self) -> int:
        """Tokens of the stream per block: ``seq_len + 1``."""
        return self.seq_len + 1


# --------------------------------------------------------------------------- torch


class MappedArrowBlocks(Dataset):
    """The torch peer's dataset: ``ds[i]`` is block ``i`` of the stream (every document
    followed by ``eos_token_id``, in corpus order) as ``{"input_ids": block[:-1],
    "labels": block[1:]}``, int64 tensors ``[seq_len]`` (views of one ``[seq_len + 1]``
    tensor). The tail of the stream shorter than a block is left out.

    Block ``i`` spans stream positions ``[i * (seq_len + 1), (i + 1) * (seq_len + 1))``;
    the prefix sums of the documents' piece lengths (tokens + EOS) and ``searchsorted``
    find the documents covering it, whose tokens are sliced with numpy from the mapped
    Arrow buffers into the block, with the EOS after each (one slice and a mask when the
    documents share a record batch, as nearly all blocks do).

    Pickled by its arguments, so worker processes map the files themselves.
    """

    def __init__(self, source: Source, column: str, seq_len: int, eos_token_id: int) -> None:
        self._args = (source, column, seq_len, eos_token_id)
        self.columns = MappedTokenColumn(source, column, None)
        self.seq_len = seq_len
        self.block_size = seq_len + 1
        self.eos_token_id = eos_token_id
        lengths = self.columns.lengths()
        #: Stream position just past each document's EOS: int64 [documents].
        self.piece_ends = np.cumsum(lengths + 1)
        self.stream_tokens = int(self.piece_ends[-1]) if len(lengths) else 0
        self.num_blocks = self.stream_tokens // self.block_size
        #: Each document's length, chunk, and first token's index in its chunk's values.
        self.lengths = lengths
        rows_per_chunk = [len(offsets) - 1 for offsets in self.columns.offsets]
        self.doc_chunk = np.repeat(np.arange(len(rows_per_chunk)), rows_per_chunk)
        self.doc_begin = (
            np.concatenate([o[:-1].astype(np.int64) for o in self.columns.offsets])
            if rows_per_chunk
            else np.zeros(0, dtype=np.int64)
        )

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.num_blocks

    def block(self, index: int) -> np.ndarray:
        """Block ``index`` of the stream: int64 ``[seq_len + 1]``."""
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} is out of range for {self.num_blocks} blocks")
        start = index * self.block_size
        # Documents whose pieces hold the block's first and last positions.
        first = int(np.searchsorted(self.piece_ends, start, side="right"))
        last = int(np.searchsorted(self.piece_ends, start + self.block_size - 1, side="right"))
        chunk = int(self.doc_chunk[first])
        if chunk != self.doc_chunk[last]:
            return self._block_across_chunks(start, first, last)
        # One record batch holds the documents' tokens contiguously: the block is one slice
        # of its values with the EOS ids put in between.
        eos_at = self.piece_ends[first : last + 1] - (start + 1)  # positions in the block
        if eos_at[-1] >= self.block_size:
            eos_at = eos_at[:-1]  # the last document's EOS is past the block
        first_piece_start = int(self.piece_ends[first]) - int(self.lengths[first]) - 1
        begin = int(self.doc_begin[first]) + start - first_piece_start
        block = np.empty(self.block_size, dtype=np.int64)
        is_token = np.ones(self.block_size, dtype=bool)
        is_token[eos_at] = False
        block[is_token] = self.columns.values[chunk][begin : begin + self.block_size - len(eos_at)]
        block[eos_at] = self.eos_token_id
        return block

    def _block_across_chunks(self, start: int, first: int, last: int) -> np.ndarray:
        """A block whose documents lie in more than one record batch: filled piece by
        piece."""
        end = start + self.block_size
        ends = self.piece_ends[first : last + 1].tolist()
        lengths = self.lengths[first : last + 1].tolist()
        chunks = self.doc_chunk[first : last + 1].tolist()
        begins = self.doc_begin[first : last + 1].tolist()
        values = self.columns.values
        block = np.empty(self.block_size, dtype=np.int64)
        filled = 0
        for piece_end, length, chunk, begin in zip(ends, lengths, chunks, begins):
            piece_start = piece_end - length - 1
            lo = max(start - piece_start, 0)  # first piece position in the block
            hi = min(end - piece_start, length + 1)  # one past the last
            tokens_hi = min(hi, length)
            if lo < tokens_hi:
                count = tokens_hi - lo
                block[filled : filled + count] = values[chunk][begin + lo : begin + tokens_hi]
                filled += count
            if hi == length + 1:  # the piece's EOS is in the block
                block[filled] = self.eos_token_id
                filled += 1
        return block

    def __getitem__(self, index: int) -> Batch:
        block = torch.from_numpy(self.block(index))
        return {"input_ids": block[:-1], "labels": block[1:]}


def torch_pack_peers(source: Source, options: W2Options) -> list[Peer]:
    """The torch rows of W2: one per worker count in :data:`PEER_WORKER_COUNTS`."""

    def open_dataset(seed: int = 0) -> MappedArrowBlocks:
        return MappedArrowBlocks(source, options.column, options.seq_len, options.eos_token_id)

    def loader_with(num_workers: int) -> Callable[[Any, int], torch.utils.data.DataLoader]:
        def make_loader(dataset: Any, seed: int) -> torch.utils.data.DataLoader:
            return torch.utils.data.DataLoader(
                dataset,
                batch_size=options.batch_size,
                sampler=seeded_sampler(dataset, seed),
                num_workers=num_workers,
                drop_last=True,  # full batches only, as the other W2 loaders yield
                persistent_workers=num_workers > 0,  # as for W1's torch peer
            )

        return make_loader

    return [
        Peer(f"torch (workers {n})", "torch", n, open_dataset, loader_with(n))
        for n in PEER_WORKER_COUNTS
    ]


# --------------------------------------------------------------------------- nanoGPT


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


def nanogpt_peer(stream: TokenStreamFile, options: W2Options) -> Peer:
    """The nanoGPT row over a stream file written by :func:`write_token_stream`."""

    def open_dataset(seed: int = 0) -> TokenStreamFile:
        return stream

    def make_loader(dataset: Any, seed: int) -> NanoGPTBatches:
        return NanoGPTBatches(dataset, options.batch_size, options.seq_len, seed)

    return Peer(
        f"nanoGPT get_batch (memmap {stream.dtype.name})", "nanogpt", 0, open_dataset,
        make_loader,
    )


# --------------------------------------------------------------------------- arrowloader


#: The arrowloader rows: (name suffix, PackedDataset keyword arguments, headline, extra
#: outputs). The first has the torch peer's outputs.
ARROWLOADER_VARIANTS: tuple[tuple[str, dict[str, Any], bool, tuple[str, ...]], ...] = (
    ("", {}, True, ()),
    (
        " +position_ids +cu_seqlens",
        {"return_position_ids": True, "return_cu_seqlens": True},
        False,
        ("position_ids", "cu_seqlens", "max_seqlen"),
    ),
    (" int32", {"dtype": torch.int32}, False, ()),
)


def arrowloader_pack_peers(
    source: Source, options: W2Options, threads: tuple[int, ...] = (0,)
) -> list[Peer]:
    """The arrowloader rows of W2: the headline row for each thread count of ``threads``
    (a sweep), then the other :data:`ARROWLOADER_VARIANTS` with the first count:
    ``arrowloader.DataLoader(PackedDataset(source, seq_len, eos_token_id, seed=seed,
    return_position_ids=False, return_cu_seqlens=False, ...), batch_size,
    shuffle=True, generator=torch.Generator().manual_seed(seed), num_workers=threads)``.

    The dataset and the generator get the same seed, as in the README's usage, so the
    DataLoader plans epoch 0 once, when it is built (torch's ``RandomSampler`` asks the
    dataset's length there): the plan falls in the time to first batch."""
    def opener(extra: dict[str, Any]) -> Callable[[int], arrowloader.PackedDataset]:
        def open_dataset(seed: int = 0) -> arrowloader.PackedDataset:
            arguments: dict[str, Any] = {
                "return_position_ids": False,
                "return_cu_seqlens": False,
                **extra,
            }
            return arrowloader.PackedDataset(
                source,
                seq_len=options.seq_len,
                eos_token_id=options.eos_token_id,
                column=options.column,
                seed=seed,
                **arguments,
            )

        return open_dataset

    def loader_factory(num_workers: int) -> Callable[[Any, int], torch.utils.data.DataLoader]:
        def make_loader(dataset: Any, seed: int) -> torch.utils.data.DataLoader:
            return arrowloader.DataLoader(
                dataset,
                batch_size=options.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                num_workers=num_workers,
            )

        return make_loader

    threads = tuple(threads) or (0,)
    rows = [(ARROWLOADER_VARIANTS[0], n) for n in threads]
    rows += [(variant, threads[0]) for variant in ARROWLOADER_VARIANTS[1:]]
    peers = []
    for (suffix, extra, headline, outputs), num_workers in rows:
        shown = num_workers or default_num_threads()
        peers.append(
            Peer(
                f"arrowloader{suffix} (threads {shown})",
                "arrowloader",
                shown,
                opener(extra),
                loader_factory(num_workers),
                headline=headline,
                dtype=extra.get("dtype", torch.int64),
                extra_outputs=outputs,
            )
        )
    return peers
