"""The torchdata peers (arrowloader.bench.torchdata_peers): StatefulDataLoader over the
torch peers' datasets yields exactly the torch rows' batches, in W1 and W2, and a missing
torchdata is a skipped row with the line that installs it, not an error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from arrowloader.bench import torchdata_peers
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream
from arrowloader.bench.torch_peers import torch_pack_peers, torch_pad_peers
from arrowloader.cli import main
from bench_corpora import W2, assert_same_batches, first_batches


def test_torchdata_rows_yield_the_torch_rows_batches(small_corpus: Path, tmp_path: Path) -> None:
    pytest.importorskip("torchdata")
    from torchdata.stateful_dataloader import StatefulDataLoader

    options = PadOptions()
    torch_rows = {p.num_workers: p for p in torch_pad_peers(small_corpus, options)}
    rows = torchdata_peers.pad_peers(small_corpus, options)
    assert [p.name for p in rows] == [
        f"torchdata StatefulDataLoader (workers {n})" for n in (0, 2)
    ]
    for peer in rows:
        assert peer.family == "torchdata"
        assert isinstance(peer.make_loader(peer.open_dataset(1), 1), StatefulDataLoader)
        assert_same_batches(first_batches(peer, 1, 5), first_batches(torch_rows[0], 1, 5))

    stream = TokenStreamFile(
        write_token_stream(small_corpus, W2.column, W2.eos_token_id, tmp_path / "s.bin"),
        np.dtype(np.uint16),
    )
    documents = next(p for p in torch_pack_peers(small_corpus, W2) if p.num_workers == 0)
    pack_rows = torchdata_peers.pack_peers(small_corpus, W2, stream)
    assert [p.name for p in pack_rows] == [
        f"torchdata StatefulDataLoader flat stream uint16 (workers {n})" for n in (0, 2)
    ]
    assert all(p.reads_stream for p in pack_rows)
    for peer in pack_rows:
        assert_same_batches(first_batches(peer, 2, 4), first_batches(documents, 2, 4))


@pytest.mark.parametrize("workload", ["pad", "pack"])
def test_a_missing_torchdata_is_a_skipped_row(
    workload: str,
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(torchdata_peers, "missing_modules", lambda: ["torchdata"])
    out = tmp_path / "bench.json"
    argv = ["bench", "--workload", workload, "--data", str(tiny_corpus), "--peers", "torchdata",
            "--seconds", "0.1", "--repeats", "1", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())["workloads"][workload]
    assert {row["family"] for row in report["rows"]} == {"arrowloader"}
    assert report["skipped"] == [{
        "peer": "torchdata",
        "reason": "torchdata not installed (pip install 'arrowloader[peers]')",
    }]
    hint = "pip install 'arrowloader[peers]'"
    assert f"skipped torchdata: torchdata not installed ({hint})" in printed
