"""arrowloader validate (cli/validate.py) on prepared corpora: each failure (a flipped
byte, a truncated shard, a dropped manifest entry, an id outside the vocabulary, corrupt
offsets, nulls, rows and tokens that disagree with the manifest) named with its shard and
row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
from arrowloader.cli.validate import validate_corpus
from arrowloader.errors import CorpusFormatError
from prepared_corpus import (  # noqa: F401 (prepared_copy: the corpus fixture)
    VOCAB,
    manifest_json,
    prepared_copy,
    read_shard,
    rewrite_shard,
    run_cli,
)


def test_a_sound_corpus_validates(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = validate_corpus(prepared, show_progress=False)
    assert report.ok and report.shards == len(manifest_json(prepared)["shards"]) >= 4
    status, out = run_cli(["validate", str(prepared), "--quiet"], capsys)
    assert status == 0 and "OK" in out and "hashes" in out
    status, out = run_cli(["validate", str(prepared), "--quiet", "--json"], capsys)
    assert status == 0 and json.loads(out)["ok"] is True


def test_a_flipped_byte_fails_the_hash(corpus: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A byte of token data flipped (to an id still inside the vocabulary): the hash
    names the shard; --quick, which does not hash, finds nothing."""
    name = manifest_json(corpus)["shards"][1]["file"]
    table = read_shard(corpus, 1)
    values = table.column("input_ids").chunk(0).values
    data = bytearray((corpus / name).read_bytes())
    first = bytes(np.asarray(values[:1]).astype(np.uint16).tobytes())
    at = data.find(first + bytes(np.asarray(values[1:2]).astype(np.uint16).tobytes()))
    data[at] ^= 0x01
    (corpus / name).write_bytes(bytes(data))
    report = validate_corpus(corpus, show_progress=False)
    assert [(p.shard, p.row) for p in report.problems] == [(name, None)]
    assert "content hash" in report.problems[0].reason
    assert validate_corpus(corpus, quick=True, show_progress=False).ok
    status, out = run_cli(["validate", str(corpus), "--quiet"], capsys)
    assert status == 1 and f"BAD {name}: content hash" in out


def test_a_truncated_shard_is_named(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = manifest_json(corpus)["shards"][2]["file"]
    data = (corpus / name).read_bytes()
    (corpus / name).write_bytes(data[: len(data) // 2])
    for quick in (False, True):
        report = validate_corpus(corpus, quick=quick, show_progress=False)
        assert [p.shard for p in report.problems] == [name]
        assert "truncated" in report.problems[0].reason
    with pytest.raises(CorpusFormatError):
        arrowloader.TokenDataset(corpus)
    status, out = run_cli(["validate", str(corpus), "--quiet", "--quick"], capsys)
    assert status == 1 and name in out


def test_a_dropped_manifest_entry_is_named(corpus: Path) -> None:
    data = manifest_json(corpus)
    dropped = data["shards"].pop(1)
    (corpus / "manifest.json").write_text(json.dumps(data))
    report = validate_corpus(corpus, show_progress=False)
    reasons = {(p.shard, p.reason.split(" ")[0]) for p in report.problems}
    assert (dropped["file"], "is") in reasons  # in the folder but not listed
    assert (None, "'documents'") in reasons and (None, "'tokens'") in reasons
    with pytest.raises(CorpusFormatError, match="shards add up to"):
        arrowloader.TokenDataset(corpus)


def test_an_id_outside_the_vocabulary_is_named_with_its_row(corpus: Path) -> None:
    table = read_shard(corpus, 2)
    rows = table.column("input_ids").to_pylist()
    rows[5] = [*rows[5][:-1], VOCAB]  # still uint16, one past the vocabulary
    name = rewrite_shard(corpus, 2, table.set_column(
        0, "input_ids", pa.array(rows, table.schema.field("input_ids").type)))
    report = validate_corpus(corpus, show_progress=False)
    assert [(p.shard, p.row) for p in report.problems] == [(name, 5)]
    assert f"token id {VOCAB} is not below the vocabulary size {VOCAB}" in (
        report.problems[0].reason)


def test_corrupt_offsets_and_nulls_are_named_with_their_row(corpus: Path) -> None:
    table = read_shard(corpus, 0)
    ids = table.column("input_ids").chunk(0)
    offsets = ids.offsets.to_numpy().copy()
    offsets[3] = offsets[4] + 1  # row 3 ends before it starts
    broken = pa.Array.from_buffers(ids.type, len(ids),
                                   [None, pa.py_buffer(offsets.astype(np.int32))],
                                   children=[ids.values])
    name = rewrite_shard(corpus, 0, table.set_column(0, "input_ids", broken))
    report = validate_corpus(corpus, show_progress=False)
    assert [(p.shard, p.row) for p in report.problems] == [(name, 3)]
    assert "offsets" in report.problems[0].reason

    table = read_shard(corpus, 1)
    rows = table.column("input_ids").to_pylist()
    rows[7] = None
    field = pa.field("input_ids", table.schema.field("input_ids").type)
    name = rewrite_shard(corpus, 1, table.set_column(0, field, pa.array(rows, field.type)))
    problems = validate_corpus(corpus, show_progress=False).problems
    assert (name, 7) in [(p.shard, p.row) for p in problems]
    assert any("null" in p.reason for p in problems if p.shard == name)


def test_rows_tokens_and_missing_shards_against_the_manifest(corpus: Path) -> None:
    data = manifest_json(corpus)
    data["shards"][0]["rows"] += 1
    data["shards"][0]["tokens"] += 1
    data["documents"] += 1
    data["tokens"] += 1
    (corpus / "manifest.json").write_text(json.dumps(data))
    os.remove(corpus / data["shards"][3]["file"])
    problems = validate_corpus(corpus, quick=True, show_progress=False).problems
    reasons = [(p.shard, p.reason) for p in problems]
    first, missing = data["shards"][0]["file"], data["shards"][3]["file"]
    assert any(s == first and "rows, the manifest says" in r for s, r in reasons)
    assert any(s == first and "tokens, the manifest says" in r for s, r in reasons)
    assert (missing, "is missing") in reasons
