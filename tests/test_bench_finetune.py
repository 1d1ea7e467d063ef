"""The finetune workload: its epoch plans against plain-Python oracles over pyarrow-read
lengths, and ``arrowloader bench --workload finetune`` end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from arrowloader import _C, reference_plans
from arrowloader.bench.finetune import (
    BATCHINGS,
    EpochPlan,
    FinetuneOptions,
    FinetuneWorkload,
    packed_epoch_plan,
    packed_real_tokens,
    packed_segments,
)
from arrowloader.cli import main
from bench_corpora import TINY_DOCUMENTS
from torch.utils.data import RandomSampler

OPTIONS = FinetuneOptions()
C = 1.0 / OPTIONS.model_width


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("arrowloader").setLevel(logging.ERROR)


@pytest.fixture(scope="module")
def workload(tiny_corpus: Path) -> FinetuneWorkload:
    logging.getLogger("arrowloader").setLevel(logging.ERROR)
    return FinetuneWorkload(tiny_corpus, reference=False, options=OPTIONS)


def pyarrow_lengths(corpus: Path) -> list[int]:
    table = pa.ipc.open_file(str(corpus)).read_all()
    return pc.list_value_length(table.column("input_ids")).to_pylist()


def oracle(batches: list[list[int]], kept: list[int]) -> dict[str, float]:
    """Batches, padding and step cost of padded batches, in plain Python."""
    real = positions = attention = 0
    for batch in batches:
        width = max(kept[i] for i in batch)
        real += sum(kept[i] for i in batch)
        positions += len(batch) * width
        attention += len(batch) * width**2
    return {
        "batches": len(batches),
        "padding": 1 - real / positions,
        "cost": positions + C * attention,
        "attention": attention,
    }


def check(plan: EpochPlan, expected: dict[str, float]) -> None:
    assert plan.batches == expected["batches"]
    assert plan.attention == expected["attention"]
    assert plan.padding_fraction == pytest.approx(expected["padding"], abs=1e-12)
    assert plan.step_cost == pytest.approx(expected["cost"], rel=1e-12)


def test_random_plan_is_torch_random_sampler_order(
    workload: FinetuneWorkload, tiny_corpus: Path
) -> None:
    kept = [min(n, OPTIONS.max_length) for n in pyarrow_lengths(tiny_corpus)]
    order = list(RandomSampler(range(len(kept)), generator=torch.Generator().manual_seed(0)))
    batches = [order[i : i + 32] for i in range(0, len(order), 32)]
    check(workload.plans["random"], oracle(batches, kept))


def test_grouped_plan_is_the_reference_plan(workload: FinetuneWorkload, tiny_corpus: Path) -> None:
    kept = [min(n, OPTIONS.max_length) for n in pyarrow_lengths(tiny_corpus)]
    n = len(kept)
    mult = max(1, min(n // (4 * 32), 50))
    permutation = _C.seeded_permutation(0, 0, n).tolist()
    batches = reference_plans.length_grouped(kept, 32, mult * 32, permutation)
    check(workload.plans["grouped"], oracle(batches, kept))


def test_budget_plan_is_the_reference_plan(workload: FinetuneWorkload, tiny_corpus: Path) -> None:
    kept = [min(n, OPTIONS.max_length) for n in pyarrow_lengths(tiny_corpus)]
    # Shuffling ties and batches changes neither batch sizes nor widths.
    batches = reference_plans.token_budget(kept, OPTIONS.max_tokens)
    expected = oracle(batches, kept)
    check(workload.plans["budget"], expected)
    assert all(
        len(b) * max(kept[i] for i in b) <= OPTIONS.max_tokens for b in batches
    )


def test_packed_plan_counts_every_document_token_and_eos(
    workload: FinetuneWorkload, tiny_corpus: Path
) -> None:
    lengths = pyarrow_lengths(tiny_corpus)
    seq_len = OPTIONS.max_length
    dataset = workload._packed_dataset(0)
    # The loader plays whole batches only.
    assert workload.plans["packed"].batches == len(dataset) // OPTIONS.packed_batch_size
    assert workload.plans["packed"].positions == (
        workload.plans["packed"].batches * OPTIONS.packed_batch_size * seq_len
    )
    # Batches of one row: every block of the epoch, so every kept token plus its EOS.
    import arrowloader

    loader = arrowloader.DataLoader(
        dataset, batch_size=1, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    whole = packed_epoch_plan(loader, C)
    assert whole.real_tokens == sum(min(n + 1, seq_len) for n in lengths)
    assert whole.batches == len(dataset)


def test_packed_counts_and_segments_against_the_batch_contents(
    workload: FinetuneWorkload,
) -> None:
    # The tiny corpus's ids are >= 1, so a 0 (the pad id) is padding and nothing else;
    # a segment starts where position_ids restart at 0.
    loader = workload.make_loader("packed", workload._packed_dataset(0), 0)
    attention = real = 0
    for batch in loader:
        assert packed_real_tokens(batch) == int((batch["input_ids"] != 0).sum())
        real += int((batch["input_ids"] != 0).sum())
        starts = [
            r * OPTIONS.max_length + i
            for r, row in enumerate(batch["position_ids"].tolist())
            for i, p in enumerate(row) if p == 0
        ]
        ends = [*starts[1:], batch["input_ids"].numel()]
        lengths = [e - s for s, e in zip(starts, ends)]
        assert packed_segments(batch).tolist() == lengths
        attention += sum(n * n for n in lengths)
    plan = workload.plans["packed"]
    assert plan.real_tokens == real and plan.attention == attention
    assert plan.step_cost == pytest.approx(plan.positions + C * attention)


def test_max_tokens_below_max_length_is_refused(tiny_corpus: Path) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        FinetuneWorkload(
            tiny_corpus, reference=False, options=FinetuneOptions(max_tokens=512)
        )


def test_unknown_batching_is_refused(workload: FinetuneWorkload) -> None:
    with pytest.raises(ValueError, match="batching"):
        workload.make_loader("sorted", None, 0)


def test_bench_cli_finetune_end_to_end(
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "finetune.json"
    argv = [
        "bench", "--workload", "finetune", "--data", str(tiny_corpus), "--seconds", "0.2",
        "--repeats", "1", "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["finetune"]
    report = whole["workloads"]["finetune"]
    names = [row["name"] for row in report["rows"]]
    assert [name.split()[1] for name in names] == list(BATCHINGS)
    assert report["corpus"]["documents"] == TINY_DOCUMENTS
    plans = report["corpus"]["epoch_plans"]
    assert list(plans) == list(BATCHINGS)
    kept = [min(n, 1024) for n in pyarrow_lengths(tiny_corpus)]
    order = list(RandomSampler(range(len(kept)), generator=torch.Generator().manual_seed(0)))
    expected = oracle([order[i : i + 32] for i in range(0, len(order), 32)], kept)
    assert plans["random"]["batches"] == expected["batches"]
    assert plans["random"]["padding_fraction"] == pytest.approx(expected["padding"])
    for name in BATCHINGS:
        assert any(line.lstrip().startswith(name) for line in printed.splitlines())
    for row in report["rows"]:
        assert row["median"]["tokens_per_s"] > 0
        assert 0 <= row["median"]["padding_fraction"] < 1
    assert "vs random" in printed


def test_bench_help_lists_finetune(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "finetune" in text and "--max-tokens" in text and "--model-width" in text


def test_bench_cli_finetune_plot(tiny_corpus: Path, isolated_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "finetune.png"
    argv = [
        "bench", "--workload", "finetune", "--data", str(tiny_corpus), "--seconds", "0.1",
        "--repeats", "1", "--plot", str(chart), "--quiet",
    ]
    assert main(argv) == 0
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
