"""The report's thread sweep, stall figures and memory-bandwidth bound
(arrowloader.bench.report), and its chart, from one run.

No assertion here is about speed: figures are only checked to be consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from arrowloader.bench.report import SUMMARISED_FIGURES
from arrowloader.cli import main

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


def test_bench_cli_thread_sweep_stall_and_plot(
    tiny_corpus: Path, isolated_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads 1,2 (one headline row per count), --consumer-ms (stall figures), --plot."""
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    argv = [
        "bench", "--workload", "pack", "--data", str(tiny_corpus), "--seconds", "0.2",
        "--repeats", "1", "--threads", "1,2", "--consumer-ms", "0.5", "--peers", "torch",
        "--json", str(out), "--plot", str(png), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    report = whole["workloads"]["pack"]
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows)[4:] == [
        "arrowloader (threads 1)", "arrowloader (threads 2)",
        "arrowloader documents in order (threads 1)",
        "arrowloader +position_ids +cu_seqlens (threads 1)", "arrowloader int32 (threads 1)",
    ]
    assert whole["settings"]["threads"] == [1, 2] and whole["settings"]["consumer_ms"] == 0.5

    # The sweep: the headline rows by thread count, with their own medians.
    sweep = report["thread_sweep"]
    assert [point["threads"] for point in sweep] == [1, 2]
    for point in sweep:
        row = rows[point["row"]]
        assert row["num_workers"] == point["threads"]
        assert point["tokens_per_s"] == row["median"]["tokens_per_s"]
    assert "thread sweep: 1: " in printed
    best = max(sweep, key=lambda point: point["tokens_per_s"])
    assert report["arrowloader_row"] == best["row"]

    # The stall: time in next() while the consumer slept 0.5 ms after every batch.
    header = next(line for line in printed.splitlines() if line.startswith("loader "))
    assert "stall ms/step" in header
    for row in report["rows"]:
        assert set(row["median"]) == set(SUMMARISED_FIGURES)
        (run,) = row["runs"]
        assert run["consumer_ms"] == 0.5
        assert 0 <= run["stall_s"] <= run["seconds"]
        assert run["stall_fraction"] == pytest.approx(run["stall_s"] / run["seconds"])
        assert run["stall_ms_per_step"] == pytest.approx(1e3 * run["stall_s"] / run["batches"])
        # Every timed batch was followed by a sleep of at least 0.5 ms.
        assert run["seconds"] >= run["batches"] * 0.5e-3
        assert run["real_tokens"] == run["batches"] * 8 * 2048

    # The memory-bandwidth bound of the headline row, from the memcpy of the same run.
    bound = report["bandwidth_bound_tokens_per_s"]
    ours = rows[report["arrowloader_row"]]
    (run,) = ours["runs"]
    traffic = ours["traffic"]
    per_token = (
        run["real_tokens"] * traffic["read_bytes_per_token"]
        + run["padded_tokens"] * traffic["written_bytes_per_position"]
        + run["batches"] * traffic["written_bytes_per_batch"]
    ) / run["real_tokens"]
    assert bound["bytes_per_real_token"] == pytest.approx(per_token)
    assert bound["dram"] == pytest.approx(2 * whole["memcpy_gbps"] * 1e9 / per_token)
    assert whole["machine"]["memcpy_gbps"] == whole["memcpy_gbps"]
    assert "memory-bandwidth bound:" in printed

    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
