"""arrowloader inspect (cli/inspect.py): its figures against pyarrow's reading of the
shards, of a prepared folder and of a plain file, and its length histogram."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from arrowloader.cli import main
from arrowloader.cli.inspect import PERCENTILES, corpus_report
from prepared_corpus import VOCAB, manifest_json, run_cli


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

