"""``--plot`` (arrowloader.bench.plot) without matplotlib. (A chart drawn from a run is
checked in test_bench_report.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from arrowloader.cli import main


def test_bench_plot_without_matplotlib_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arrowloader.bench import plot

    monkeypatch.setattr(plot, "matplotlib_missing", lambda: True)
    assert main(["bench", "--data", str(tmp_path / "none.arrow"), "--plot",
                 str(tmp_path / "out.png"), "--quiet"]) == 2
    assert "pip install 'arrowloader[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
