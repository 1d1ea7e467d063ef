"""The GPU benchmark (arrowloader.bench.gpu, benchmarks/gpu_bench.py, ``arrowloader bench
--device cuda``): without CUDA it says so and exits 0; its whole pipeline runs on the CPU
with a tiny model (a check of the code, not a figure); its model is the documented shape
and causal; the command lines map onto its configuration. On a CUDA machine (marked
``cuda``) a tiny run measures the copy and training tables."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader.bench import gpu
from arrowloader.bench.gpu import GPT, GPUBenchConfig, ModelShape, run_gpu_bench
from arrowloader.bench.harness import BenchmarkError
from arrowloader.cli import build_parser, main
from conftest import random_documents, write_tokens

ROOT = Path(__file__).resolve().parent.parent
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    docs = random_documents(rng, 120, max_tokens=40, vocab=100, empty_fraction=0.0)
    return write_tokens(tmp_path_factory.mktemp("gpu") / "c.arrow", docs)


def tiny(corpus: Path, **kwargs) -> GPUBenchConfig:
    options = dict(
        source=corpus, device="cpu", batch_size=2, seq_len=16, eos_token_id=0,
        model=ModelShape(layers=1, heads=2, width=16, vocab=128), steps=2, warmup_steps=1,
        repeats=1, torch_workers=(0,), threads=1, show_progress=False,
    )
    options.update(kwargs)
    return GPUBenchConfig(**options)


@no_cuda
def test_without_cuda_it_says_so_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = run_gpu_bench(GPUBenchConfig())
    assert results["measured"] is False and "CUDA is not available" in results["reason"]
    assert "CUDA is not available" in capsys.readouterr().out

    out = tmp_path / "gpu.json"
    assert load_script().main(["--json", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["measured"] is False
    assert main(["bench", "--device", "cuda", "--quiet"]) == 0
    assert "measured nothing" in capsys.readouterr().out


def test_the_pipeline_runs_on_the_cpu(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = run_gpu_bench(tiny(corpus))
    table = capsys.readouterr().out
    assert results["measured"] is False and "copies" not in results  # no CUDA copies
    rows = results["training"]["rows"]
    names = [row["name"] for row in rows]
    assert names == [
        "synthetic batch on the device (no loader)",
        "arrowloader + CUDAPrefetcher",
        "arrowloader, .to(device) in the loop",
        "torch DataLoader(pin_memory=True, workers 0)",
    ]
    for row in rows:
        assert row["name"] in table
        assert row["step_ms"] > 0 and len(row["step_ms_runs"]) == 1
        assert row["tokens_per_s"] == pytest.approx(2 * 16 / (row["step_ms"] / 1e3))
    assert rows[0]["stall_fraction"] == 0.0
    # The prefetcher's own count: warm-up plus timed steps, one batch each.
    assert rows[1]["prefetcher_metrics"][0]["batches"] == 3
    assert "not a GPU figure" in table


def test_the_model_has_the_documented_shape_and_is_causal() -> None:
    for shape in (ModelShape(layers=2, heads=2, width=32, vocab=50), ModelShape(1, 4, 16, 7)):
        model = GPT(shape, seq_len=12)
        unique = {id(p): p.numel() for p in model.parameters()}
        assert sum(unique.values()) == shape.parameters(12)
    torch.manual_seed(0)
    model = GPT(ModelShape(layers=2, heads=2, width=32, vocab=50), seq_len=12).eval()
    ids = torch.randint(0, 50, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 50
    with torch.no_grad():
        before, after = model(ids), model(changed)
    assert torch.allclose(before[:, :7], after[:, :7])  # the past does not see the future
    assert not torch.allclose(before[:, 7:], after[:, 7:])
    assert GPUBenchConfig().model == gpu.GPT2_SMALL
    assert gpu.GPT2_SMALL.parameters(1024) == 124_439_808  # GPT-2 small


def test_command_lines_map_onto_the_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["bench", "--device", "cuda", "--data", "a.arrow", "--batch-size", "4", "--seq-len",
         "16", "--threads", "2", "--repeats", "5", "--seed", "3", "--eos-token-id", "7",
         "--quiet"]
    )
    config = gpu.config_from_args(args)
    assert (config.source, config.batch_size, config.seq_len, config.threads) == (
        "a.arrow", 4, 16, 2
    )
    assert (config.repeats, config.seed, config.eos_token_id, config.device) == (
        5, 3, 7, "cuda"
    )
    assert config.steps == GPUBenchConfig.steps and not config.show_progress
    defaults = gpu.config_from_args(build_parser().parse_args(["bench", "--device", "cuda"]))
    assert defaults.batch_size == 8 and defaults.seq_len == 2048 and defaults.source is None

    import argparse

    parser = argparse.ArgumentParser()
    gpu.add_arguments(parser)
    script = gpu.config_from_args(
        parser.parse_args(["--torch-workers", "0,4", "--steps", "9", "--data", "x", "y"])
    )
    assert script.torch_workers == (0, 4) and script.steps == 9
    assert script.source == ["x", "y"]


def test_corpora_it_cannot_use_are_clear_errors(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = write_tokens(tmp_path / "short.arrow", [[1, 2, 3]])
    with pytest.raises(BenchmarkError, match=r"short.arrow: .* fewer than one batch of 2"):
        run_gpu_bench(tiny(short))
    with pytest.raises(BenchmarkError, match="token id 99 is outside the model's vocabulary"):
        run_gpu_bench(tiny(corpus, model=ModelShape(1, 2, 16, vocab=50)))
    assert load_script().main(["--data", str(short), "--device", "cpu", "--quiet"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err


@pytest.mark.cuda
def test_a_tiny_run_on_cuda_measures_both_tables(corpus: Path) -> None:
    results = run_gpu_bench(tiny(corpus, device="cuda", copy_repeats=20, copy_batches=20))
    assert results["measured"] is True
    copies = results["copies"]
    for key in ("peak_gbps", "same_size_gbps", "prefetcher_gbps", "training_gbps"):
        assert copies[key] > 0, key
    assert copies["prefetcher_of_peak"] == pytest.approx(
        copies["prefetcher_gbps"] / copies["peak_gbps"]
    )
    assert len(results["training"]["rows"]) == 4
