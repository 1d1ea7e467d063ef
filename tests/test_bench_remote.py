"""arrowloader bench --workload pack --data s3://...: the remote rows, measured against
the real S3 server on loopback (tests/s3_server.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from arrowloader.cli import main
from conftest import write_tokens
from s3_server import S3Server


def test_bench_remote_rows(s3_env: S3Server, tmp_path: Path,
                           capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(1)
    fs = s3_env.filesystem()
    place = s3_env.new_bucket()
    sizes = 0
    for k in range(3):
        docs = [rng.integers(1, 1000, size=int(rng.integers(5, 60))).tolist() for _ in range(80)]
        path = write_tokens(tmp_path / f"shard-{k}.arrow", docs)
        sizes += path.stat().st_size
        with fs.open_output_stream(f"{place}/corpus/{path.name}") as out:
            out.write(path.read_bytes())
    url = f"s3://{place}/corpus/"
    assert main(["bench", "--workload", "pack", "--data", url, "--seq-len", "16",
                 "--batch-size", "2", "--eos-token-id", "0", "--seconds", "0.2",
                 "--repeats", "1", "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "arrowloader, s3 (warm cache)" in out and "arrowloader, local disk" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["objects_downloaded"] == 3 and report["bytes_downloaded"] == sizes
    assert report["cache_hits"] == 3
    assert all(run["batches"] > 0 for rows in report["rows"].values() for run in rows)


def test_bench_remote_refuses_other_workloads(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--workload", "pad", "--data", "s3://bucket/corpus/"]) == 2
    assert "--workload pack" in capsys.readouterr().err
