"""Opening one file of a corpus (shard.py), the path datasets, inspect and validate share:
every way of reading the bytes gives what pyarrow reads; the token column is checked at
open; the shard against its manifest entry, and the datasets' message about it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from arrowloader import _C
from arrowloader.errors import CorpusFormatError
from arrowloader.manifest import Manifest, ShardEntry
from arrowloader.shard import open_shard
from conftest import COLUMN, pyarrow_batches, pyarrow_rows, write_tokens


def manifest_of(rows: int, tokens: int, dtype: str = "int32") -> tuple[Manifest, ShardEntry]:
    entry = ShardEntry("c.arrow", rows, tokens, 0, "0" * 64)
    return Manifest([entry], COLUMN, dtype, 1000, None, False, {}, ""), entry


@pytest.mark.parametrize("how", ["mmap", "read", "memory"])
@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_every_way_of_reading_gives_pyarrows_rows(tmp_path: Path, how: str,
                                                  stream: bool) -> None:
    documents = [[i] * (i % 4) for i in range(11)]
    path = write_tokens(tmp_path / "c.arrow", documents, num_batches=3, stream=stream,
                        value_type=pa.uint16())
    memory = pa.py_buffer(path.read_bytes()) if how == "memory" else None
    shard = open_shard(path, COLUMN, memory=memory, mmap=how != "read")
    batches = pyarrow_batches(path)
    assert shard.format == ("stream" if stream else "file")
    assert shard.schema == batches[0].schema
    assert (shard.num_rows, shard.record_batches) == (len(documents), len(batches))
    assert shard.token_dtype == "uint16"
    assert (shard.stat is None) == (how == "memory")
    tokens = _C.TokenColumn(COLUMN)
    assert shard.add_tokens(tokens) == shard.num_tokens == sum(map(len, documents))
    assert tokens.num_rows == len(documents)
    rows = [list(ids) for array, _ in shard.token_arrays() for ids in array.to_pylist()]
    assert rows == pyarrow_rows(path)
    starts = [row for _, row in shard.token_arrays()]
    assert starts == list(np.cumsum([0] + [b.num_rows for b in batches[:-1]]))


def test_the_token_column_is_checked_at_open(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]], column="tokens")
    with pytest.raises(CorpusFormatError, match="not found") as info:
        open_shard(path, COLUMN)
    assert (info.value.path, info.value.column) == (str(path), COLUMN)
    path = write_tokens(tmp_path / "f.arrow", [[1.5]], value_type=pa.float32())
    with pytest.raises(CorpusFormatError, match="expected list or large_list"):
        open_shard(path, COLUMN)


def test_disagreements_with_the_manifest_entry(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2], [3], []], num_batches=2)
    shard = open_shard(path, COLUMN)
    with pytest.raises(ValueError, match="add_tokens"):
        shard.disagreements(*manifest_of(3, 3))
    shard.add_tokens(_C.TokenColumn(COLUMN))
    assert shard.disagreements(*manifest_of(3, 3)) == {}
    shard.check_manifest_entry(*manifest_of(3, 3))
    assert shard.disagreements(*manifest_of(4, 5, "uint16")) == {
        "rows": (3, 4), "tokens": (3, 5), "token_dtype": ("int32", "uint16")}
    with pytest.raises(CorpusFormatError) as info:
        shard.check_manifest_entry(*manifest_of(4, 5, "uint16"))
    assert str(info.value) == (
        f"{path}: column 'input_ids': the shard holds 3 rows, the manifest says 4; 3 tokens, "
        "the manifest says 5; int32 tokens, the manifest says uint16. The shard or "
        "manifest.json was changed after preparation; run 'arrowloader validate "
        f"{tmp_path}'"
    )
    assert (info.value.path, info.value.column, info.value.row) == (str(path), COLUMN, None)
