"""Counts in words, for messages and command output: ``plural(1, "shard")`` is
``"1 shard"``, ``plural(3000, "shard")`` is ``"3,000 shards"``."""

from __future__ import annotations

from typing import Optional


def plural(count: int, noun: str, plural_noun: Optional[str] = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless ``count`` is 1.

    Args:
        count: how many, written with thousands separated by commas.
        noun: the singular, e.g. ``"shard"`` or ``"Parquet file"``.
        plural_noun: the plural where it is not ``noun + "s"`` (``"batches"``).
    """
    if count == 1:
        return f"{count:,} {noun}"
    return f"{count:,} {plural_noun if plural_noun is not None else noun + 's'}"
