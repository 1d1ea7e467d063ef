"""The examples run end to end (briefly, with tiny models), report throughput and stalls,
write a profiler trace when asked, and resume from their own checkpoints."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Small enough for a few seconds on two CPU cores.
TINY_PRETRAIN = ("--docs", "2000", "--seq-len", "64", "--width", "32", "--log-every", "10")
TINY_FINETUNE = (
    "--docs", "400", "--max-length", "64", "--batch-size", "8", "--width", "32",
    "--log-every", "5",
)


def run_example(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_trace(path: Path) -> None:
    """A Chrome trace of the profiled steps: JSON with events, the steps among them."""
    trace = json.loads(path.read_text())
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("ProfilerStep#") for name in names), sorted(names)[:20]


def assert_feed_report(out: str, batches: int) -> None:
    """Throughput and stall on the log lines; the prefetcher's closing metrics count the
    batches the loop trained on."""
    assert "tok/s" in out and "stall" in out
    assert f"prefetcher: {batches} batches, waited" in out
    assert "loader: " in out


def test_pretrain_checkpoints_and_resumes(tmp_path: Path) -> None:
    first = tmp_path / "first.pt"
    trace = tmp_path / "trace.json"
    out = run_example(
        "pretrain.py", *TINY_PRETRAIN, "--steps", "30", "--checkpoint", str(first),
        "--checkpoint-every", "20", "--profile", str(trace),
    )
    assert "step    30" in out
    assert_feed_report(out, 30)
    assert_trace(trace)
    saved = torch.load(first, weights_only=False)
    assert saved["step"] == 30
    # 30 batches of 8 blocks trained on in epoch 0 (the prefetcher had fetched more).
    assert saved["loader"]["epoch"] == 0 and saved["loader"]["samples_consumed"] == 240

    second = tmp_path / "second.pt"
    out = run_example(
        "pretrain.py", *TINY_PRETRAIN, "--steps", "40", "--resume", str(first),
        "--checkpoint", str(second),
    )
    assert "resumed at step 30" in out
    assert torch.load(second, weights_only=False)["loader"]["samples_consumed"] == 320


def test_finetune_reports_and_profiles(tmp_path: Path) -> None:
    trace = tmp_path / "finetune.json"
    out = run_example("finetune.py", *TINY_FINETUNE, "--steps", "12", "--profile", str(trace))
    assert "step    12" in out and "accuracy" in out and "padding" in out
    assert_feed_report(out, 12)
    assert_trace(trace)


def test_finetune_packed_trains_on_whole_examples(tmp_path: Path) -> None:
    """--packed: a causal model on bestfit rows of whole examples, its loss on the
    completion only; the log reports it with the padding share, and the dataset's count
    of examples too long for a row."""
    out = run_example("finetune.py", *TINY_FINETUNE, "--packed", "--steps", "12")
    assert "step    12" in out and "completion loss" in out and "padding" in out
    assert "examples," in out and "longer than a row (truncated)" in out
    assert_feed_report(out, 12)


def test_finetune_packed_reads_a_prepared_corpus(tmp_path: Path) -> None:
    """--packed --data: a corpus with the prompt-length column prepare writes (here
    written with pyarrow), and its ids bounded by --vocab."""
    import pyarrow as pa

    corpus = tmp_path / "sft.arrow"
    ids = [[5, 6, 7, 8, 2, 9, 10], [11, 12, 2, 13], [14, 15, 16, 2, 17, 18, 19]] * 20
    table = pa.table({"input_ids": pa.array(ids, pa.list_(pa.int32())),
                      "prompt_length": pa.array([5, 3, 4] * 20, pa.int32())})
    with pa.OSFile(str(corpus), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    out = run_example("finetune.py", "--packed", "--data", str(corpus), "--vocab", "64",
                      "--max-length", "16", "--batch-size", "2", "--width", "16",
                      "--steps", "4", "--log-every", "2")
    assert "step     4" in out and "packed: 60 examples, 0 longer than a row" in out


def finetune_padding(out: str) -> float:
    """The padding share of the whole run, from the closing ``batches:`` line."""
    line = next(line for line in out.splitlines() if line.startswith("batches: padding"))
    return float(line.split()[2].rstrip("%"))


def test_finetune_groups_by_length_or_fills_a_token_budget() -> None:
    """--group-by-length and --max-tokens train on the same corpus with far less padding
    than random batches."""
    settings = ("--docs", "400", "--max-length", "160", "--batch-size", "8", "--width", "32",
                "--log-every", "5", "--steps", "10")
    random = finetune_padding(run_example("finetune.py", *settings))
    grouped_out = run_example("finetune.py", *settings, "--group-by-length")
    budget_out = run_example("finetune.py", *settings, "--max-tokens", "512")
    for out in (grouped_out, budget_out):
        assert "step    10" in out and "accuracy" in out
        assert_feed_report(out, 10)
    grouped, budget = finetune_padding(grouped_out), finetune_padding(budget_out)
    assert random > 5 and grouped < random / 4 and budget < random / 4, (random, grouped, budget)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "finetune.py"), "--group-by-length", "--max-tokens", "9"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "not allowed with" in result.stderr


def test_each_example_help_shows_its_whole_description() -> None:
    """``--help`` of every runnable example shows its docstring whole: complete
    sentences, the usage lines and their comments, not a first line cut mid-sentence."""
    scripts = [path for path in sorted(EXAMPLES.glob("*.py"))
               if "ArgumentParser(" in path.read_text()]
    assert {path.name for path in scripts} >= {"finetune.py", "pretrain.py"}
    for path in scripts:
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc is not None, path.name
        help_text = run_example(path.name, "--help")
        assert doc.strip() in help_text, path.name  # line breaks kept as written
        description = help_text[help_text.index(doc.split()[0]):]
        first_paragraph = description.split("\n\n")[0]
        assert first_paragraph.rstrip().endswith("."), (path.name, first_paragraph)


def test_each_example_refuses_ids_beyond_its_vocabulary(tmp_path: Path) -> None:
    """Both examples pass their model's ``--vocab`` to the dataset, so a corpus holding an
    id the embedding cannot hold stops with an error naming the file and the id, before
    any step (torch's embedding would raise an IndexError mid-step, or read out of bounds
    on CUDA)."""
    import pyarrow as pa

    corpus = tmp_path / "wide.arrow"
    ids = pa.array([[5, 6, 7, 8] * 20, [9, 700, 10, 11] * 20], type=pa.list_(pa.int32()))
    table = pa.table({"input_ids": ids, "label": pa.array([0, 1], type=pa.int64())})
    with pa.OSFile(str(corpus), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    for script, args in (
        ("pretrain.py", ("--seq-len", "16", "--batch-size", "2", "--checkpoint",
                         str(tmp_path / "ckpt.pt"))),
        ("finetune.py", ("--max-length", "64", "--batch-size", "2")),
    ):
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--data", str(corpus), "--vocab", "512",
             "--steps", "2", "--width", "16", *args],
            capture_output=True, text=True, timeout=300,
        )
        assert result.returncode != 0, (script, result.stdout)
        message = result.stderr.strip().splitlines()[-1]
        assert "700" in message and "wide.arrow" in message and "512" in message, (
            script, result.stderr[-2000:])


def loss_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("step")]


def test_accelerate_loop_resumes_from_save_state_and_compares_epochs(tmp_path: Path) -> None:
    tiny = ("accelerate_loop.py", "--docs", "300", "--steps", "12", "--log-every", "2", "--cpu")
    first = run_example(*tiny, "--checkpoint", str(tmp_path / "ckpt"), "--checkpoint-at", "6")
    assert "native path: True" in first
    resumed = run_example(*tiny, "--resume", str(tmp_path / "ckpt"))
    assert "resumed at step 6" in resumed
    # The same batches, hence the same losses, after the checkpoint as in the whole run.
    assert loss_lines(resumed) == loss_lines(first)[3:]
    out = run_example("accelerate_loop.py", "--compare-epochs", "--docs", "200", "--repeats", "1")
    for name in ("arrowloader.DataLoader", "integrations.accelerate.prepare",
                 "accelerator.prepare (rebuilt)", "torch DataLoader + ds.collate"):
        assert name in out


def test_hf_trainer_example_resumes_its_checkpoint() -> None:
    out = run_example("hf_trainer.py", "--docs", "200")
    resumed = [line.split(": ", 1)[1] for line in out.splitlines()
               if line.startswith("resumed from checkpoint-8: ")]
    assert resumed == loss_lines(out)[-2:]  # steps 10 and 12, after the checkpoint
    assert "native path: True; losses after the checkpoint agree: True" in out


def test_lightning_example_resumes_mid_epoch() -> None:
    out = run_example("lightning_fit.py", "--docs", "200")
    whole = loss_lines(out)
    assert len(whole) == 3 and all(line.endswith("native True") for line in whole)
    resumed = [line.split(": ", 1)[1] for line in out.splitlines()
               if line.startswith("resumed: ")]
    assert resumed == whole[2:]  # step 12, after the step-8 checkpoint
