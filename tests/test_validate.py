"""arrowloader validate and inspect on prepared corpora, and what datasets make of a
corpus folder's manifest: each validate failure (a flipped byte, a truncated shard, a
dropped manifest entry, an id outside the vocabulary, corrupt offsets, nulls), inspect's
figures against pyarrow's, and manifests that try to lead outside their folder or to run
code."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
from arrowloader.cli import main
from arrowloader.errors import CorpusFileError, CorpusFormatError
from arrowloader.inspect_cmd import PERCENTILES, corpus_report
from arrowloader.manifest import read_manifest, sha256_file
from arrowloader.prepare.run import prepare_corpus
from arrowloader.prepare.shard_plan import PrepareOptions
from arrowloader.validate_cmd import validate_corpus
from text_corpus import write_jsonl

VOCAB = 1000


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: Any, stdlib_corpus: Any, bpe_path: Path) -> Path:
    """A corpus of standard library lines in 4+ shards, with a kept field."""
    folder = tmp_path_factory.mktemp("prepared")
    records = [{"text": line, "n": i}
               for i, line in enumerate(stdlib_corpus[0][1].splitlines()[:400]) if line]
    write_jsonl(folder / "in.jsonl", records)
    prepare_corpus([str(folder / "in.jsonl")], str(bpe_path), folder / "corpus",
                   PrepareOptions(shard_size=2 << 10, keep_fields=("n",)),
                   show_progress=False)
    return folder / "corpus"


@pytest.fixture
def corpus(prepared: Path, tmp_path: Path) -> Path:
    """A fresh copy of the prepared corpus, free to damage."""
    return Path(shutil.copytree(prepared, tmp_path / "corpus"))


def manifest_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def rewrite_shard(folder: Path, index: int, table: pa.Table) -> str:
    """Replaces shard ``index`` with ``table`` and updates its manifest entry's size and
    hash (rows and tokens stay), so that only the content checks can object."""
    data = manifest_json(folder)
    entry = data["shards"][index]
    path = folder / entry["file"]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(data))
    return entry["file"]


def read_shard(folder: Path, index: int) -> pa.Table:
    """Shard ``index`` read into memory (not mapped: the tests rewrite the file)."""
    name = manifest_json(folder)["shards"][index]["file"]
    return pa.ipc.open_file(pa.py_buffer((folder / name).read_bytes())).read_all()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().out


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


def test_a_dataset_refuses_a_shard_that_disagrees_with_the_manifest(corpus: Path) -> None:
    data = manifest_json(corpus)
    data["shards"][1]["tokens"] += 3
    data["tokens"] += 3
    (corpus / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorpusFormatError, match=r"tokens, the manifest says .* validate"):
        arrowloader.PackedDataset(corpus, seq_len=16, eos_token_id=0)


def test_datasets_use_the_manifest(prepared: Path) -> None:
    """Files in manifest order (not name order), counts as the manifest says, and ids
    the loader writes checked against its vocabulary."""
    manifest = read_manifest(prepared)
    ds = arrowloader.TokenDataset(prepared)
    assert ds.corpus.manifest == manifest
    assert [f.path.name for f in ds.corpus.files] == [s.file for s in manifest.shards]
    assert (len(ds), ds.corpus.num_tokens) == (manifest.num_rows, manifest.num_tokens)
    with pytest.raises(ValueError, match=r"pad_token_id=1000 is outside the corpus vocab"):
        arrowloader.TokenDataset(prepared, pad_token_id=VOCAB)
    with pytest.raises(ValueError, match=r"eos_token_id=5000 is outside"):
        arrowloader.PackedDataset(prepared, seq_len=8, eos_token_id=5000)
    with pytest.raises(ValueError, match=r"pad_token_id=1001 is outside"):
        arrowloader.PackedDataset(prepared, seq_len=8, eos_token_id=0, pad_token_id=1001)


def test_the_manifest_order_governs(corpus: Path, bpe: Any) -> None:
    data = manifest_json(corpus)
    data["shards"] = data["shards"][::-1]
    (corpus / "manifest.json").write_text(json.dumps(data))
    expected = []
    for shard in data["shards"]:
        table = pa.ipc.open_file(pa.memory_map(str(corpus / shard["file"]))).read_all()
        expected += table.column("input_ids").to_pylist()
    ds = arrowloader.TokenDataset(corpus)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == expected


# --- inspect -----------------------------------------------------------------------------


def test_inspect_figures_match_pyarrow(prepared: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    lengths, schema = [], None
    for shard in manifest_json(prepared)["shards"]:
        table = pa.ipc.open_file(pa.memory_map(str(prepared / shard["file"]))).read_all()
        schema = table.schema
        lengths += [len(r) for r in table.column("input_ids").to_pylist()]
    status, out = run_cli(["inspect", str(prepared), "--json"], capsys)
    report = json.loads(out)
    assert status == 0
    assert report["documents"] == len(lengths) and report["tokens"] == sum(lengths)
    assert report["schema"] == [{"name": f.name, "type": str(f.type)} for f in schema]
    assert report["token_dtype"] == "uint16"
    assert report["manifest"]["vocab_size"] == VOCAB
    stats = report["lengths"]
    assert (stats["min"], stats["max"]) == (min(lengths), max(lengths))
    assert stats["mean"] == pytest.approx(np.mean(lengths))
    for p in PERCENTILES:
        assert stats["percentiles"][f"p{p}"] == pytest.approx(np.percentile(lengths, p))
    status, out = run_cli(["inspect", str(prepared)], capsys)
    assert f"documents: {len(lengths):,}" in out and "vocabulary 1,000" in out
    assert "input_ids: list<item: uint16>" in out and "p50" in out


def test_inspect_a_plain_file_and_plot(prepared: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    shard = prepared / manifest_json(prepared)["shards"][0]["file"]
    report, lengths = corpus_report(str(shard))
    table = pa.ipc.open_file(pa.memory_map(str(shard))).read_all()
    assert lengths.tolist() == [len(r) for r in table.column("input_ids").to_pylist()]
    assert "manifest" not in report
    plot = tmp_path / "lengths.png"
    status, out = run_cli(["inspect", str(prepared), "--plot", str(plot)], capsys)
    assert status == 0 and f"histogram: {plot}" in out
    image = __import__("matplotlib.image", fromlist=["imread"]).imread(plot)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


# --- a manifest never leads outside its folder, nothing is run or unpickled ---------------


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside.arrow", "sub/../../outside.arrow", "C:\\x.arrow",
             "..\\outside.arrow", ""],
)
def test_manifest_names_outside_the_folder_are_refused(corpus: Path, name: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(corpus / "shard-00000.arrow", corpus.parent / "outside.arrow")
    data = manifest_json(corpus)
    data["shards"][0]["file"] = name
    (corpus / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorpusFileError, match="inside"):
        arrowloader.TokenDataset(corpus)
    report = validate_corpus(corpus, show_progress=False)
    assert not report.ok and "inside" in report.problems[0].reason
    assert main(["inspect", str(corpus)]) == 2
    assert "inside" in capsys.readouterr().err


def test_a_symlinked_shard_leading_outside_is_refused(corpus: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.arrow"
    shutil.move(corpus / "shard-00001.arrow", outside)
    os.symlink(outside, corpus / "shard-00001.arrow")
    with pytest.raises(CorpusFileError, match="outside the corpus folder"):
        arrowloader.TokenDataset(corpus)
    problems = validate_corpus(corpus, show_progress=False).problems
    assert [p.shard for p in problems] == ["shard-00001.arrow"]
    # A link that stays inside the folder is fine.
    os.remove(corpus / "shard-00001.arrow")
    inside = corpus / "data"
    inside.mkdir()
    shutil.move(outside, inside / "real.arrow")
    os.symlink(inside / "real.arrow", corpus / "shard-00001.arrow")
    assert validate_corpus(corpus, show_progress=False).ok


class _Trap:
    """Unpickling this writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (Path(self.marker), "unpickled"))


def test_nothing_in_a_corpus_is_unpickled_or_run(corpus: Path, tmp_path: Path) -> None:
    """Pickles placed in the schema's extension metadata (the old pickle-based extension
    type), in the manifest and beside the shards are never loaded by opening, inspecting
    or validating the corpus; neither is a Python file."""
    marker = tmp_path / "marker"
    payload = pickle.dumps(_Trap(str(marker)))
    table = read_shard(corpus, 0)
    field = pa.field("n", table.schema.field("n").type, metadata={
        b"ARROW:extension:name": b"arrow.py_extension_type",
        b"ARROW:extension:metadata": payload})
    schema = pa.schema([table.schema.field(0), field])
    rewrite_shard(corpus, 0, pa.Table.from_arrays(table.columns, schema=schema))
    data = manifest_json(corpus)
    data["settings"]["pickled"] = payload.hex()
    (corpus / "manifest.json").write_text(json.dumps(data))
    (corpus / "state.pkl").write_bytes(payload)
    (corpus / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    ds = arrowloader.TokenDataset(corpus, label_column="n")
    assert len(ds) == read_manifest(corpus).num_rows
    corpus_report(str(corpus))
    assert validate_corpus(corpus, show_progress=False).ok
    assert not marker.exists()
