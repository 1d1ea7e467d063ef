"""A shuffle with a bounded working set: a window of shards at a time.

A full shuffle reads every shard at every point of an epoch, which suits memory-mapped
local files but not a cache smaller than the corpus. The windowed shuffle of a packed
epoch (``PackedDataset(shuffle_window_shards=K)``, concat mode):

1. shuffles the order of the shards, per epoch;
2. cuts that order into windows of ``K`` shards; the documents of each window are
   shuffled among themselves, and windows follow each other in the stream the blocks are
   cut from;
3. shuffles the blocks within each window's span of the stream (a block belongs to the
   window its first token is in).

So the blocks of window ``w`` read window ``w``'s shards and, for the one block that
crosses into the next window, some of window ``w + 1``'s: two windows' shards at any point
of an epoch. Every order is drawn from ``(seed, epoch)`` alone (numpy's PCG64 seeded with
``SeedSequence([seed, epoch, stream, window])``), so it is the same on every rank, for
every world size and thread count, local or remote; the loader's exactly-once split of
global batches and its O(1) resumption (a position is a count of blocks) are untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np

#: SeedSequence stream tags: one for the shard order, one for each window's documents,
#: one for each window's blocks.
_SHARDS, _DOCUMENTS, _BLOCKS = 0x5A1, 0x5A2, 0x5A3


def _rng(seed: int, epoch: int, stream: int, window: int = 0) -> np.random.Generator:
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([int(seed) & (2**63 - 1), epoch, stream, window]))
    )


def check_window(window: object) -> int:
    """``window`` as a count of shards (an int >= 1).

    Raises:
        ValueError: anything else.
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"shuffle_window_shards must be an int >= 1, got {window!r}")
    return window


def window_from_cache_limit(cache_limit: int, shard_bytes: Sequence[int]) -> int:
    """The most shards per window such that two windows of the largest shards fit in
    ``cache_limit`` bytes (the window read and the next, fetched ahead); at least 1."""
    largest = max(shard_bytes, default=1) or 1
    return max(1, cache_limit // (2 * largest))


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The shards' order in ``epoch``: int64 ``[num_shards]``."""
    return _rng(seed, epoch, _SHARDS).permutation(num_shards).astype(np.int64)


def windowed_document_order(
    shard_rows: Sequence[int], window: int, seed: int, epoch: int
) -> tuple[np.ndarray, np.ndarray]:
    """The documents' order in ``epoch`` and where each window starts in it.

    Args:
        shard_rows: documents per shard, in corpus order (global rows are numbered
            shard by shard).
        window: shards per window.

    Returns:
        (order, starts): global document numbers, int64 ``[documents]``; and the index
        in ``order`` where each window starts, int64 ``[windows + 1]`` (the last entry is
        the number of documents).
    """
    check_window(window)
    rows = np.asarray(shard_rows, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(rows)])
    shards = shard_order(len(rows), seed, epoch)
    pieces = []
    starts = [0]
    for w, begin in enumerate(range(0, len(shards), window)):
        members = shards[begin:begin + window]
        documents = (
            np.concatenate([np.arange(first[s], first[s + 1], dtype=np.int64) for s in members])
            if len(members) else np.zeros(0, dtype=np.int64)
        )
        _rng(seed, epoch, _DOCUMENTS, w).shuffle(documents)
        pieces.append(documents)
        starts.append(starts[-1] + len(documents))
    order = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    return order, np.asarray(starts, dtype=np.int64)


def window_block_starts(
    lengths: np.ndarray, order: np.ndarray, starts: np.ndarray, block_len: int, num_blocks: int
) -> np.ndarray:
    """The first block of each window, int64 ``[windows + 1]`` (the last is
    ``num_blocks``): concat blocks are consecutive ``block_len``-token pieces of the
    stream of documents (each followed by EOS) in ``order``, and a block belongs to the
    window its first token lies in.

    Args:
        lengths: tokens of every document (global numbering), int64 ``[documents]``.
    """
    pieces = lengths[order] + 1  # each document and its EOS
    stream = np.concatenate([[0], np.cumsum(pieces)])
    window_tokens = stream[starts]  # where each window's first token lies
    blocks = -(-window_tokens // block_len)  # the first block starting at or after it
    return np.minimum(blocks, num_blocks).astype(np.int64)


def windowed_block_order(block_starts: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The blocks' order in ``epoch``: windows in turn, each window's blocks shuffled
    among themselves. int64 ``[num_blocks]``."""
    out = np.arange(int(block_starts[-1]), dtype=np.int64)
    for w in range(len(block_starts) - 1):
        begin, end = int(block_starts[w]), int(block_starts[w + 1])
        if end - begin > 1:
            out[begin:end] = begin + _rng(seed, epoch, _BLOCKS, w).permutation(end - begin)
    return out


def block_first_documents(
    lengths: np.ndarray, order: np.ndarray, block_len: int, blocks: np.ndarray
) -> np.ndarray:
    """The global document number of the first token of each of ``blocks`` (concat
    packing of the documents in ``order``), int64: where in the corpus a block reads
    from, for measuring how far apart consecutive blocks' sources are."""
    stream = np.cumsum(lengths[order] + 1)
    return order[np.searchsorted(stream, np.asarray(blocks) * block_len, side="right")]


def mean_source_distance(
    lengths: np.ndarray, order: np.ndarray, block_len: int, block_order: np.ndarray,
    shard_of: Optional[np.ndarray] = None,
) -> dict[str, float]:
    """How far apart consecutive blocks of an epoch read: the mean absolute difference of
    their first documents' global numbers, as a fraction of the corpus's documents (a
    full shuffle gives about 1/3, reading in order about 0), and, given ``shard_of`` (the
    shard of every document), the fraction of consecutive blocks that read from another
    shard, and the distinct shards a run of 64 consecutive blocks reads from."""
    first = block_first_documents(lengths, order, block_len, block_order)
    n = max(1, len(lengths))
    figures = {"mean_distance": float(np.abs(np.diff(first)).mean() / n) if len(first) > 1
               else 0.0}
    if shard_of is not None and len(first) > 1:
        shards = shard_of[first]
        figures["other_shard"] = float((np.diff(shards) != 0).mean())
        runs = [len(np.unique(shards[i:i + 64])) for i in range(0, len(shards) - 63, 64)]
        figures["shards_per_64_blocks"] = float(np.mean(runs)) if runs else 0.0
    return figures
