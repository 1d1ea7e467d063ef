"""arrowloader validate (cli/validate.py) on every kind of source TokenDataset accepts.
Prepared corpora: each failure (a flipped byte, a truncated shard, a dropped manifest
entry, an id outside the vocabulary, corrupt offsets, nulls, rows and tokens that
disagree with the manifest) named with its shard and row. Plain files, folders of
shards, globs, lists and save_to_disk folders: every corrupt corpus of
bad_corpora.BAD_CASES named with its file and row as the loader names it (the oracle:
the loader's own outcome on the same files), pyarrow's full validation of the other
columns, and counts worded right."""

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
from bad_corpora import BAD_CASES, BadCase
from conftest import write_ipc, write_tokens
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


# --------------------------------------------------------------------------- any source


def _loader_faults(case: BadCase) -> bool:
    """Whether the case's files are at fault whatever reads them (a case that is bad only
    for a label, loss-mask or prompt-length column or an output dtype the loader was asked
    for holds valid Arrow data that validate, which knows none of them, accepts)."""
    asked = {"label_column", "dtype", "loss_mask_column", "prompt_length_column"}
    return case.error is not None and not asked & set(case.options)


@pytest.mark.parametrize("as_folder", [False, True], ids=["as-built", "folder"])
@pytest.mark.parametrize("case", BAD_CASES, ids=lambda case: case.name)
def test_every_bad_corpus_is_named(tmp_path: Path, case: BadCase, as_folder: bool) -> None:
    source = case.build(tmp_path / "corpus")
    culprit = source if isinstance(source, Path) else source[case.culprit]
    if as_folder:
        source = tmp_path / "corpus"
    report = validate_corpus(source, column=case.options.get("column"),
                             vocab_size=case.options.get("vocab_size"), show_progress=False)
    if not _loader_faults(case):
        assert report.ok, report.problems
        opened = arrowloader.TokenDataset(source, column=case.options.get("column", "input_ids"))
        assert (report.shards, report.documents, report.tokens) == (
            len(opened.corpus.files), len(opened), opened.corpus.num_tokens)
        return
    assert not report.ok
    problem = report.problems[0]
    named = culprit.name if as_folder else str(culprit)
    # A folder holding only a Parquet file is named as the folder (it has no shard).
    assert problem.shard in (named, str(tmp_path / "corpus")), (problem, named)
    if case.row is not None:
        assert problem.row == case.row, problem
    if case.match is not None and case.at == "open" and problem.shard == named:
        assert case.match.lower() in problem.reason.lower(), problem


def test_a_plain_file_good_and_broken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    documents = [[1, 2, 3], [4], [], [5, 6]]
    path = write_tokens(tmp_path / "c.arrow", documents)
    status, out = run_cli(["validate", str(path), "--quiet"], capsys)
    assert status == 0
    assert f"{path}: OK: 1 shard, 4 documents, 6 tokens (structure, offsets, nulls)" in out
    broken = write_tokens(tmp_path / "bad.arrow", [[1, 2], None, [3]], num_batches=1)
    status, out = run_cli(["validate", str(broken), "--quiet"], capsys)
    assert status == 1
    assert f"BAD {broken}: row 1: column 'input_ids' row 1:" in out and "null" in out
    assert f"{broken}: 1 problem in 1 of 1 shard (structure, offsets, nulls)" in out
    assert "manifest" not in out


def test_a_folder_a_glob_and_a_list_of_shards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "shards"
    for k in range(3):
        write_tokens(folder / f"part-{k}.arrow", [[k, k + 1], [k + 2]])
    names = [f"part-{k}.arrow" for k in range(3)]
    for source in (str(folder), str(folder / "*.arrow")):
        assert run_cli(["validate", source, "--quiet"], capsys) == (
            0, f"{source}: OK: 3 shards, 6 documents, 9 tokens (structure, offsets, nulls)\n")
    write_tokens(folder / names[1], [[7], [8, 300]])  # an id past a vocabulary of 300
    status, out = run_cli(["validate", str(folder), "--quiet", "--vocab-size", "300"], capsys)
    assert status == 1
    assert f"BAD {names[1]}: row 1: token id 300 is not below the vocabulary size 300" in out
    assert "1 problem in 1 of 3 shards (structure, offsets, nulls, ids < 300)" in out
    # Several paths (a glob the shell expanded): named as given.
    paths = [str(folder / name) for name in names]
    status, out = run_cli(["validate", *paths, "--quiet", "--vocab-size", "300"], capsys)
    assert status == 1 and f"BAD {paths[1]}: row 1: token id 300" in out
    assert "1 problem in 1 of 3 shards" in out
    assert validate_corpus(paths, show_progress=False).ok  # without a bound, 300 is an id


def test_a_save_to_disk_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    datasets = pytest.importorskip("datasets")
    documents = [[i, i + 1][: i % 3] for i in range(30)]
    features = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")),
                                  "text": datasets.Value("string")})
    folder = tmp_path / "hf"
    datasets.Dataset.from_dict(
        {"input_ids": documents, "text": [str(i) for i in range(30)]}, features=features
    ).save_to_disk(str(folder), num_shards=3)
    state = json.loads((folder / "state.json").read_text())
    names = [entry["filename"] for entry in state["_data_files"]]
    report = validate_corpus(folder, show_progress=False)
    assert report.ok and (report.shards, report.documents) == (3, 30)
    assert report.tokens == sum(len(d) for d in documents)
    assert report.files == names

    # One shard rewritten with a null document in its second row.
    rows = pa.ipc.open_stream(str(folder / names[2])).read_all().to_pylist()
    ids = [row["input_ids"] for row in rows]
    ids[1] = None
    write_ipc(folder / names[2], {"input_ids": pa.array(ids, pa.list_(pa.int32())),
                                  "text": pa.array([row["text"] for row in rows])},
              stream=True)
    status, out = run_cli(["validate", str(folder), "--quiet"], capsys)
    assert status == 1 and f"BAD {names[2]}: row 1:" in out
    assert "1 problem in 1 of 3 shards" in out
    # A state.json that names a file outside the folder: the folder's files are checked.
    state["_data_files"][0]["filename"] = "../elsewhere.arrow"
    (folder / "state.json").write_text(json.dumps(state))
    report = validate_corpus(folder, show_progress=False)
    assert [p.shard for p in report.problems] == ["state.json", names[2]]
    assert "lies outside the folder" in report.problems[0].reason
    assert report.shards == 3
    assert report.summary() == "2 problems in 1 of 3 shards and in state.json"


def test_every_column_gets_pyarrow_full_validation(tmp_path: Path) -> None:
    """A text column with invalid UTF-8 beside sound tokens: the loader, which never
    reads it, opens the file; validate names the column."""
    text = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.py_buffer(np.array([0, 2, 4], dtype=np.int32)),
                         pa.py_buffer(b"ok\xff\xfe")])
    path = write_ipc(tmp_path / "c.arrow", {
        "input_ids": pa.array([[1, 2], [3]], pa.list_(pa.int32())), "text": text})
    assert len(arrowloader.TokenDataset(path)) == 2
    (problem,) = validate_corpus(path, show_progress=False).problems
    assert (problem.shard, problem.row) == (str(path), None)
    assert problem.reason.startswith("column 'text' (rows from 0): ")
    assert "UTF8" in problem.reason and "full validation" in problem.reason


def test_a_prepared_folder_with_an_unusable_manifest_checks_its_files(corpus: Path) -> None:
    shards = sorted(p.name for p in corpus.iterdir() if p.suffix == ".arrow")
    (corpus / "manifest.json").write_text("{")
    report = validate_corpus(corpus, show_progress=False)
    assert [p.shard for p in report.problems] == [None]  # the manifest, named as such
    assert report.shards == len(shards) and report.files == shards
    assert report.summary() == "1 problem in manifest.json"
    data = (corpus / shards[1]).read_bytes()
    (corpus / shards[1]).write_bytes(data[: len(data) // 2])
    report = validate_corpus(corpus, show_progress=False)
    assert [p.shard for p in report.problems] == [None, shards[1]]
    assert report.summary() == f"2 problems in 1 of {len(shards)} shards and in manifest.json"


def test_a_vocabulary_size_that_disagrees_with_the_manifest(corpus: Path) -> None:
    report = validate_corpus(corpus, vocab_size=VOCAB - 1, quick=True, show_progress=False)
    assert report.problems[0].shard is None
    assert f"'vocab_size' is {VOCAB} but --vocab-size is {VOCAB - 1}" in report.problems[0].reason
    assert report.vocab_size == VOCAB - 1


def test_a_source_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    status, out = run_cli(["validate", str(missing), "--quiet"], capsys)
    assert status == 1
    assert f"BAD {missing}: no such file or folder" in out
    assert f"{missing}: 1 problem in {missing} (" in out
