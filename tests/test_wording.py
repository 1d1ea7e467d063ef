"""Counts in words (wording.py)."""

from __future__ import annotations

import pytest
from arrowloader.wording import plural


@pytest.mark.parametrize(
    ("count", "words"),
    [(0, "0 shards"), (1, "1 shard"), (2, "2 shards"), (-1, "-1 shards"),
     (1000, "1,000 shards")],
)
def test_plural_of_a_regular_noun(count: int, words: str) -> None:
    assert plural(count, "shard") == words


def test_plural_of_an_irregular_noun_and_of_several_words() -> None:
    assert plural(1, "batch", "batches") == "1 batch"
    assert plural(3, "batch", "batches") == "3 batches"
    assert plural(2, "Parquet file") == "2 Parquet files"
