"""Plain-Python reference batch plans: the oracle the native length-grouped and
token-budget plans (``csrc/batch_plans.h``) are tested against.

Deliberately simple and slow: lists, sorts and loops, written from the documented
semantics with no code shared with the native path. Randomness comes in as arguments
(the epoch's permutation, a function that shuffles a list in place, the batch order), so
the plans themselves hold no generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Optional


def length_grouped(
    lengths: Sequence[int],
    batch_size: int,
    megabatch_size: int,
    permutation: Sequence[int],
    drop_last: bool = False,
) -> list[list[int]]:
    """Batches of ``batch_size`` indices: ``permutation`` cut into megabatches, each
    sorted by length, longest first (a stable sort), the longest index of the epoch
    swapped with the first, then consecutive runs of ``batch_size`` (the last one short
    unless ``drop_last``)."""
    order = list(permutation)
    megabatches = [
        sorted(order[i : i + megabatch_size], key=lambda r: lengths[r], reverse=True)
        for i in range(0, len(order), megabatch_size)
    ]
    if megabatches:
        heads = [lengths[m[0]] for m in megabatches]
        first = heads.index(max(heads))
        megabatches[0][0], megabatches[first][0] = megabatches[first][0], megabatches[0][0]
    flat = [r for m in megabatches for r in m]
    batches = [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def budget_width(longest: int, pad_to_multiple_of: int = 1) -> int:
    """The padded width a token budget counts for a batch whose longest document has
    ``longest`` tokens: rounded up to the multiple, at least 1."""
    m = pad_to_multiple_of
    return max(1, -(-longest // m) * m)


def token_budget(
    lengths: Sequence[int],
    max_tokens: int,
    max_rows: Optional[int] = None,
    pad_to_multiple_of: int = 1,
    shuffle_run: Optional[Callable[[list[int]], None]] = None,
    batch_order: Optional[Sequence[int]] = None,
) -> list[list[int]]:
    """Batches of indices with ``len(batch) * budget_width(longest) <= max_tokens`` (and
    ``len(batch) <= max_rows``): indices sorted by padded length, ties by index, each
    run of one padded length passed to ``shuffle_run`` in ascending order of length,
    then cut greedily (a batch takes the next index while it still fits), then played
    in ``batch_order`` (None: as cut).

    Raises:
        ValueError: an index alone needs more than ``max_tokens``.
    """
    m = pad_to_multiple_of
    for r, n in enumerate(lengths):
        if budget_width(n, m) > max_tokens:
            raise ValueError(f"row {r} does not fit")
    key = [-(-n // m) for n in lengths]
    runs: dict[int, list[int]] = {}
    for r in sorted(range(len(lengths)), key=lambda r: (key[r], r)):
        runs.setdefault(key[r], []).append(r)
    ordered: list[int] = []
    for k in sorted(runs):
        run = runs[k]
        if shuffle_run is not None:
            shuffle_run(run)
        ordered.extend(run)
    batches: list[list[int]] = []
    for r in ordered:
        if batches:
            batch = batches[-1]
            width = budget_width(max(lengths[i] for i in [*batch, r]), m)
            fits = (len(batch) + 1) * width <= max_tokens
            if fits and (max_rows is None or len(batch) < max_rows):
                batch.append(r)
                continue
        batches.append([r])
    if batch_order is None:
        return batches
    return [batches[g] for g in batch_order]


def deal_batches(
    batches: Sequence[list[int]], rank: int, world_size: int, drop_last: bool
) -> list[list[int]]:
    """Rank ``rank``'s share of an epoch's ``batches``: with ``drop_last`` the last
    ``len(batches) % world_size`` are dropped; without, the list is extended by repeating
    it from its start until its length is a multiple of ``world_size``. Rank ``r`` then
    takes every ``world_size``-th batch from ``r``."""
    played = list(batches)
    if drop_last:
        played = played[: len(played) - len(played) % world_size]
    elif played:
        while len(played) % world_size:
            played.append(batches[(len(played)) % len(batches)])
    return played[rank::world_size]
