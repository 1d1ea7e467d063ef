"""The examples run end to end (briefly) and resume from their own checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_pretrain_checkpoints_and_resumes(tmp_path: Path) -> None:
    first = tmp_path / "first.pt"
    out = run_example(
        "pretrain.py", "--steps", "30", "--checkpoint", str(first), "--checkpoint-every", "20"
    )
    assert "step    30" in out
    saved = torch.load(first, weights_only=False)
    assert saved["step"] == 30
    # 30 batches of 8 blocks delivered in epoch 0.
    assert saved["loader"]["epoch"] == 0 and saved["loader"]["samples_consumed"] == 240

    second = tmp_path / "second.pt"
    out = run_example(
        "pretrain.py", "--steps", "40", "--resume", str(first), "--checkpoint", str(second)
    )
    assert "resumed at step 30" in out
    assert torch.load(second, weights_only=False)["loader"]["samples_consumed"] == 320
