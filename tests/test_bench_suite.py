"""``arrowloader bench`` as a whole (arrowloader.bench.suite): every workload in one run,
and the settings it refuses before measuring anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from arrowloader.cli import main

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


def test_bench_rejects_a_missing_corpus(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--data", str(tmp_path / "missing.arrow"), "--quiet"]) == 2
    assert "missing.arrow" in capsys.readouterr().err


def test_bench_rejects_unknown_peers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--peers", "torch,jax"])
    assert "jax" in capsys.readouterr().err


def test_bench_cli_all_workloads_without_peers(
    tiny_corpus: Path, isolated_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.json"
    argv = [
        "bench", "--data", str(tiny_corpus), "--seconds", "0.1", "--repeats", "1",
        "--peers", "none", "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["pad", "pack"]
    assert [len(w["rows"]) for w in whole["workloads"].values()] == [1, 4]
    assert whole["workloads"]["pack"]["torch_best"] is None
    lines = printed.rstrip().splitlines()
    assert whole["workloads"]["pack"]["strongest_peer"] is None
    assert lines[-5].startswith("W1 pad: arrowloader")
    assert lines[-5].endswith("/ torch best: n/a (no torch row), / strongest peer n/a (no peer)")
    assert all(line.startswith("W2 pack: arrowloader") for line in lines[-4:])
    assert printed.index("W1 pad: shuffled documents") < printed.index("W2 pack: the corpus")


@pytest.mark.parametrize("threads", ["", "1,x", "-1", "2,-3"])
def test_bench_rejects_bad_thread_lists(threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--threads", threads])
    assert "--threads" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threads": (-1,)}, "threads must be counts >= 0"),
        ({"threads": ()}, "threads must be counts >= 0"),
        ({"consumer_ms": -1.0}, "consumer_ms must be >= 0"),
        ({"workloads": ("loader",)}, "needs config.loader"),
    ],
)
def test_run_bench_rejects_bad_settings(changes: dict, message: str) -> None:
    from arrowloader.bench.suite import BenchConfig, run_bench

    config = BenchConfig(source="unused.arrow", show_progress=False, **changes)
    with pytest.raises(ValueError, match=message):
        run_bench(config)


def test_bench_rejects_an_unknown_workload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--workload", "sort"])
    assert "sort" in capsys.readouterr().err
