"""The manifest of a prepared corpus (manifest.py): a manifest never leads outside its
folder (absolute names, ``..``, links); nothing in a corpus folder is run or unpickled by
opening, inspecting or validating it; its errors name the manifest; a shard's figures
against its entry."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import arrowloader
import pyarrow as pa
import pytest
from arrowloader.cli import main
from arrowloader.cli.inspect import corpus_report
from arrowloader.cli.validate import validate_corpus
from arrowloader.errors import CorpusFileError, CorpusFormatError
from arrowloader.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    read_manifest,
    shard_disagreements,
)
from prepared_corpus import (  # noqa: F401 (prepared_copy: the corpus fixture of this module)
    manifest_json,
    prepared_copy,
    read_shard,
    rewrite_shard,
)


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



def test_manifest_errors_carry_the_manifest_as_their_path(corpus: Path) -> None:
    manifest = corpus / MANIFEST_NAME
    data = manifest_json(corpus)
    shard = data["shards"][1]["file"]
    os.remove(corpus / shard)
    with pytest.raises(CorpusFileError, match=f"shard '{shard}' is missing") as info:
        arrowloader.TokenDataset(corpus)
    assert (info.value.path, info.value.column, info.value.row) == (str(manifest), None, None)
    data["shards"][1]["file"] = "../elsewhere.arrow"
    manifest.write_text(json.dumps(data))
    with pytest.raises(CorpusFileError, match="inside") as info:
        read_manifest(corpus)
    assert info.value.path == str(manifest)
    data["vocab_size"] = 0
    manifest.write_text(json.dumps(data))
    with pytest.raises(CorpusFormatError, match="'vocab_size' must be positive") as info:
        read_manifest(corpus)
    assert info.value.path == str(manifest)
    manifest.write_text("{")
    with pytest.raises(CorpusFormatError, match="not valid JSON") as info:
        read_manifest(corpus)
    assert info.value.path == str(manifest)


def test_only_the_manifests_own_column_is_compared_for_tokens() -> None:
    entry = ShardEntry("c.arrow", 3, 3, 0, "0" * 64)
    manifest = Manifest([entry], "input_ids", "int32", 1000, None, False, {}, "")
    assert shard_disagreements(manifest, entry, "input_ids", rows=3, tokens=3,
                               token_dtype="int32") == {}
    found = shard_disagreements(manifest, entry, "other_ids", rows=2, tokens=99,
                                token_dtype="int64")
    assert found == {"rows": (2, 3)}
