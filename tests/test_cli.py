"""The ``arrowloader`` dispatcher (arrowloader.cli): help, an unknown command, the console
script and ``python -m arrowloader``; and the argument types the commands share
(arrowloader.cli.args). Each command's own behaviour is tested with the code it runs
(test_bench.py, test_prepare.py, test_inspect.py, test_validate.py)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import arrowloader
import pytest
from arrowloader.cli import BROKEN_PIPE_STATUS, _stdout_reader_gone, main
from arrowloader.cli.args import (
    name_list,
    non_negative_float,
    non_negative_int,
    parse_size,
    positive_float,
    positive_int,
)
from conftest import WrittenCorpus

COMMANDS = ("bench", "prepare", "inspect", "validate")


def test_plain_command_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arrowloader"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "bench" in result.stdout and "usage: arrowloader" in result.stdout


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: arrowloader")
    assert all(f"    {name} " in out for name in COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_its_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: arrowloader {name}")


def test_an_unknown_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'frobnicate'" in err
    assert all(repr(name) in err for name in COMMANDS)


def test_python_dash_m_runs_the_same_main() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arrowloader", "--help"], capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: arrowloader [-h] [--version] COMMAND ...")
    assert all(f"    {name} " in result.stdout for name in COMMANDS)
    result = subprocess.run(
        [sys.executable, "-m", "arrowloader", "frobnicate"], capture_output=True, text=True,
        check=False,
    )
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"arrowloader {arrowloader.__version__}\n"
    result = subprocess.run(
        [sys.executable, "-m", "arrowloader", "--version"], capture_output=True, text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, f"arrowloader {arrowloader.__version__}\n")


def run_into_a_closed_pipe(argv: list[str]) -> tuple[int, str]:
    """Runs ``python -m arrowloader ARGV`` with stdout a pipe whose reader closed before
    the command wrote a byte (``| head -0`` at its most eager); its status and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "arrowloader", *argv], stdout=write_end,
            stderr=subprocess.PIPE, text=True,
        )
    finally:
        os.close(write_end)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


def test_a_reader_that_stops_early_ends_the_command_quietly(corpus: WrittenCorpus) -> None:
    """``arrowloader inspect ... | head -1``: no BrokenPipeError traceback, no "Exception
    ignored" at exit, and a shell's status for a SIGPIPE death."""
    status, err = run_into_a_closed_pipe(["inspect", str(corpus.paths[0])])
    assert (status, err) == (BROKEN_PIPE_STATUS, "")
    assert BROKEN_PIPE_STATUS == 141
    # Help and version: argparse ignores the failed write itself, and so exits 0.
    for argv in (["--help"], ["--version"], ["inspect", "--help"]):
        assert run_into_a_closed_pipe(argv) == (0, ""), argv


def test_only_a_broken_stdout_counts_as_the_reader_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert not _stdout_reader_gone()  # a BrokenPipeError of another pipe is raised
        os.close(read_end)
        assert _stdout_reader_gone()
        monkeypatch.undo()


def test_counts_of_one_are_singular(
    tmp_path: Path, bpe_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """prepare, inspect and validate of a corpus of one document in one shard say "1
    document", "1 shard", "1 file" and "1 problem", never "1 documents"."""
    (tmp_path / "one.txt").write_text("def f(x):\n    return x\n")
    corpus = tmp_path / "corpus"
    outputs = []
    assert main(["prepare", str(tmp_path / "one.txt"), "--tokenizer", str(bpe_path),
                 "--output", str(corpus), "--quiet"]) == 0
    outputs.append(capsys.readouterr().out)
    assert main(["inspect", str(corpus)]) == 0
    outputs.append(capsys.readouterr().out)
    assert main(["validate", str(corpus), "--quiet"]) == 0
    outputs.append(capsys.readouterr().out)
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["shards"][0]["rows"] = manifest["documents"] = 2  # the shard holds 1 row
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    assert main(["validate", str(corpus), "--quiet", "--quick"]) == 1
    outputs.append(capsys.readouterr().out)
    text = "\n".join(outputs)
    for words in ("1 document,", "in 1 shard", "(1 file)", "manifest: 1 shard,",
                  "OK: 1 shard, 1 document,", "holds 1 row,", "1 problem in 1 of 1 shard"):
        assert words in text, words
    # (Rates are units: "1 documents/s" is right.)
    assert not re.search(r"\b1 (document|shard|file|problem|row|token)s\b(?!/)", text), text


def test_the_console_script_runs_main() -> None:
    script = shutil.which("arrowloader", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the arrowloader console script is not installed beside this python")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("usage: arrowloader")


def test_parse_size() -> None:
    assert parse_size("512MiB") == 512 << 20 == parse_size("512m")
    assert parse_size("1GB") == 10**9 and parse_size("64k") == 65536
    assert parse_size("100000") == 100000 and parse_size("1.5KiB") == 1536
    for bad in ("", "12 parsecs", "0"):
        with pytest.raises(Exception, match=r"size|at least"):
            parse_size(bad)


def test_number_and_list_types() -> None:
    assert (positive_int("1"), non_negative_int("0")) == (1, 0)
    assert (positive_float("0.5"), non_negative_float("0")) == (0.5, 0.0)
    for parse, bad in ((positive_int, "0"), (non_negative_int, "-1"),
                       (positive_float, "0"), (non_negative_float, "-0.1")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {bad}"):
            parse(bad)
    assert name_list(" url, id,,") == ("url", "id") and name_list("") == ()
