"""``arrowloader bench --loader`` (arrowloader.bench.custom): a user's own loader measured,
and the loaders it refuses.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from arrowloader.cli import main

TOY_LOADERS = """
import torch

BATCHES = 5


def with_mask():
    # A one-shot generator: each epoch needs a fresh one.
    def batches():
        for _ in range(BATCHES):
            mask = torch.zeros(4, 16, dtype=torch.long)
            mask[:, :10] = 1
            yield {"input_ids": torch.ones(4, 16, dtype=torch.long), "attention_mask": mask}
    return batches()


def batch_encodings():
    # What a transformers tokenizer returns: a Mapping (a UserDict), not a dict.
    from transformers import BatchEncoding

    mask = torch.zeros(4, 16, dtype=torch.long)
    mask[:, :10] = 1
    return [BatchEncoding({"input_ids": torch.ones(4, 16, dtype=torch.long),
                           "attention_mask": mask}) for _ in range(BATCHES)]


def as_tuples():
    # An iterable (a list): iterated again for each epoch.
    return [(torch.ones(2, 8, dtype=torch.long), torch.zeros(2)) for _ in range(BATCHES)]


def no_tensors():
    return [{"text": "hello"}]


def nothing():
    return []


def not_iterable():
    return 42


def broken():
    raise RuntimeError("cannot open my data")
"""


@pytest.fixture
def toy_loaders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module of toy loaders, importable as ``toy_loaders`` from the current folder."""
    path = tmp_path / "toy_loaders.py"
    path.write_text(TOY_LOADERS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "toy_loaders", raising=False)
    return path


@pytest.mark.parametrize(
    ("spec", "real_per_batch", "positions_per_batch"),
    [("toy_loaders:with_mask", 40, 64), ("toy_loaders.py:as_tuples", 16, 16),
     ("toy_loaders:batch_encodings", 40, 64)],
)
def test_bench_cli_measures_a_users_loader(
    toy_loaders: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spec: str,
    real_per_batch: int,
    positions_per_batch: int,
) -> None:
    out = tmp_path / "mine.json"
    argv = [
        "bench", "--loader", spec, "--seconds", "0.2", "--repeats", "2", "--json", str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["loader"]  # no corpus workload without --workload
    (row,) = whole["workloads"]["loader"]["rows"]
    assert row["name"] == spec and row["family"] == "custom"
    assert row["ratio_to_torch_best"] is None
    assert any(line.startswith(spec + " ") for line in printed.splitlines())
    for run in row["runs"]:
        assert run["batches"] > 0 and run["tokens_per_s"] > 0
        # Tokens counted as they arrive: the mask's ones, else input_ids' elements.
        assert run["real_tokens"] == run["batches"] * real_per_batch
        assert run["padded_tokens"] == run["batches"] * positions_per_batch
        assert run["padding_fraction"] == pytest.approx(1 - real_per_batch / positions_per_batch)
        assert run["tokens_per_s"] == pytest.approx(run["real_tokens"] / run["seconds"])
        # 5 batches per epoch: the harness restarted the loader many times.
        assert run["epochs_started"] > 2
        assert run["cpu_window_real_tokens"] == (
            run["batches"] + run["warmup_batches"]
        ) * real_per_batch


def test_bench_help_explains_every_column_of_the_table(
    toy_loaders: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each column header a real bench table prints (stall columns included) is a term
    of ``arrowloader bench --help``'s epilog."""
    assert main(["bench", "--loader", "toy_loaders:with_mask", "--seconds", "0.1",
                 "--repeats", "1", "--consumer-ms", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out.splitlines()
    (header,) = [line for line in printed if line.startswith("loader ")]
    columns = re.split(r"\s{2,}", header.strip())
    assert len(columns) == 11 and "stall ms/step" in columns
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    for column in columns:
        assert re.search(rf"^  {re.escape(column)}  +\S", help_text, re.MULTILINE), column


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("toy_loaders", "expected MODULE:FUNCTION"),
        ("toy_loaders:missing", "no callable named 'missing'"),
        ("no_such_module_here:make", "importing no_such_module_here failed"),
        ("nowhere.py:make", "no such file"),
        ("toy_loaders:broken", "cannot open my data"),
        ("toy_loaders:no_tensors", "without tensors"),
        ("toy_loaders:nothing", "yielded no batches"),
        ("toy_loaders:not_iterable", "returned a int, not an iterable"),
    ],
)
def test_bench_cli_rejects_a_bad_loader(
    toy_loaders: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    assert main(["bench", "--loader", spec, "--seconds", "0.1", "--repeats", "1",
                 "--quiet"]) == 2
    assert message in capsys.readouterr().err
