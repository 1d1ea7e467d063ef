"""W1 ("pad", arrowloader.bench.pad) end to end on a tiny corpus, and what its figures rest
on: every W1 row yields the batches its seeded sampler drew, so the replayed token counts
are the masks' sums; the check of a W1 batch.

No assertion here is about speed: figures are only checked to be consistent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader.bench import hf_peers, litdata_peers
from arrowloader.bench.harness import (
    BenchmarkError,
    EpochCycler,
    Peer,
    RunFigures,
    kept_lengths,
    replay_batch_token_counts,
)
from arrowloader.bench.libraries import LIBRARY_PEERS
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.pad import PadOptions, arrowloader_pad_peer, check_pad_batch
from arrowloader.bench.report import STALL_FIGURES, SUMMARISED_FIGURES
from arrowloader.bench.torch_peers import thread_workers_missing, torch_pad_peers
from arrowloader.cli import main
from bench_corpora import TINY_DOCUMENTS, tiny_lengths

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


#: Batches per epoch of the tiny corpus at batch 32: 63 (the last one has 16 rows).
BATCHES_PAST_AN_EPOCH = 70


@pytest.fixture(scope="module")
def tiny_kept(tiny_corpus: Path) -> np.ndarray:
    """Kept (truncated to 1024) length of every tiny-corpus document, int64 [2000]."""
    return kept_lengths(MappedTokenColumn(tiny_corpus, "input_ids", None).lengths(), 1024)


def all_peers(corpus: Path, saved_copy_folder: Path) -> list[Peer]:
    """Every W1 row over ``corpus``: torch, hf and the libraries (if installed) and
    arrowloader."""
    options = PadOptions()
    peers = torch_pad_peers(corpus, options)
    if not hf_peers.missing_modules():
        saved = hf_peers.write_saved_copy(
            corpus, ["input_ids", "label"], saved_copy_folder, show_progress=False
        )
        peers += hf_peers.hf_pad_peers(saved, options)
    for module in LIBRARY_PEERS:
        if not module.missing_modules():
            peers += module.pad_peers(corpus, options)
    peers.append(arrowloader_pad_peer(corpus, options))
    return peers


def test_bench_cli_end_to_end(
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every installed peer but litdata, whose optimize step takes seconds (its rows have
    # their own tests): here it is the skipped row.
    monkeypatch.setattr(litdata_peers, "missing_modules", lambda: ["litdata"])
    out = tmp_path / "w1.json"
    argv = [
        "bench", "--workload", "pad", "--data", str(tiny_corpus), "--seconds", "0.2",
        "--repeats", "1", "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["pad"]
    report = whole["workloads"]["pad"]

    names = [row["name"] for row in report["rows"]]
    expected = ["torch (workers 0)", "torch (workers 2)"]
    if thread_workers_missing() is None:
        expected.append("torch (thread workers 2)")
    if not hf_peers.missing_modules():
        expected += ["hf collator (workers 0)", "hf collator (workers 2)"]
    for module in LIBRARY_PEERS:
        if not module.missing_modules():
            expected += [p.name for p in module.pad_peers(tiny_corpus, PadOptions())]
    assert names[:-1] == expected
    assert names[-1].startswith("arrowloader (threads ")
    missing_threads = thread_workers_missing()
    if missing_threads is not None:  # else the thread rows are in names
        assert {"peer": "torch thread workers", "reason": missing_threads} in report["skipped"]
        assert f"skipped torch thread workers: {missing_threads}" in printed
    header = next(line for line in printed.splitlines() if line.startswith("loader "))
    for column in ("real Mtok/s", "vs torch best", "CPU s/Mtok", "anon RSS MiB",
                   "first batch ms", "padding"):
        assert column in header
    for name in names:
        assert any(line.startswith(name) for line in printed.splitlines()), name
    assert "anonymous memory" in printed
    assert "memcpy" in printed

    # Settings, corpus and machine facts.
    assert whole["command"] == "arrowloader " + " ".join(argv)
    assert whole["settings"]["workloads"] == ["pad"] and whole["settings"]["repeats"] == 1
    assert report["benchmark"] == "W1 pad"
    assert report["settings"]["batch_size"] == 32 and report["settings"]["max_length"] == 1024
    assert report["corpus"]["documents"] == TINY_DOCUMENTS
    assert report["corpus"]["reference"] is False
    for fact in ("cores", "usable_cores", "memory_bytes", "python", "torch", "pyarrow",
                 "numpy", "platform"):
        assert whole["machine"][fact], fact
    assert whole["memcpy_gbps"] > 0 and report["cache_memcpy_gbps"] > 0

    # Every figure of every run, sane and consistent with each other.
    run_fields = set(RunFigures.__dataclass_fields__)
    for row in report["rows"]:
        assert set(row["median"]) == set(SUMMARISED_FIGURES) - set(STALL_FIGURES)
        assert len(row["runs"]) == 1
        run = row["runs"][0]
        assert set(run) == run_fields
        assert run["seconds"] >= 0.2
        assert run["batches"] > 0 and run["tokens_per_s"] > 0 and run["batches_per_s"] > 0
        assert run["tokens_per_s"] == pytest.approx(run["real_tokens"] / run["seconds"])
        assert 0 < run["real_tokens"] < run["padded_tokens"]
        assert run["padding_fraction"] == pytest.approx(
            1 - run["real_tokens"] / run["padded_tokens"]
        )
        assert run["cpu_s"] > 0 and run["cpu_s_per_mtok"] > 0
        assert run["peak_anon_rss_bytes"] >= run["start_anon_rss_bytes"] > 0
        assert run["first_batch_s"] > 0
        # The timed batches' real tokens, recomputed here from the replayed sampler.
        real, _ = replay_batch_token_counts(
            kept_lengths(np.asarray(tiny_lengths(tiny_corpus)), 1024), 32, run["seed"],
            run["warmup_batches"] + run["batches"],
        )
        assert run["real_tokens"] == int(real[run["warmup_batches"]:].sum())

    # The ratio column and the last line agree with the raw figures.
    by_name = {row["name"]: row for row in report["rows"]}
    torch_best = max(
        (row for row in report["rows"] if row["family"] == "torch"),
        key=lambda row: row["median"]["tokens_per_s"],
    )
    assert report["torch_best"] == torch_best["name"]
    for row in report["rows"]:
        expected_ratio = row["median"]["tokens_per_s"] / torch_best["median"]["tokens_per_s"]
        assert row["ratio_to_torch_best"] == pytest.approx(expected_ratio)
        line = next(line for line in printed.splitlines() if line.startswith(row["name"]))
        assert f"{expected_ratio:.2f}x" in line
    ours = by_name[names[-1]]
    ratio = report["ratios"]["arrowloader_over_torch_best"]
    assert ratio == pytest.approx(
        ours["median"]["tokens_per_s"] / torch_best["median"]["tokens_per_s"]
    )
    strongest_peer = max(
        (row for row in report["rows"] if row["family"] != "arrowloader"),
        key=lambda row: row["median"]["tokens_per_s"],
    )
    assert report["strongest_peer"] == strongest_peer["name"]
    strongest = report["ratios"]["arrowloader_over_strongest_peer"]
    assert strongest == pytest.approx(
        ours["median"]["tokens_per_s"] / strongest_peer["median"]["tokens_per_s"]
    )
    assert ours["ratio_to_strongest_peer"] == pytest.approx(strongest)
    last_line = (
        f"W1 pad: {ours['name']} / torch best: {ratio:.1f}x, / strongest peer "
        f"({strongest_peer['name']}): {strongest:.1f}x"
    )
    assert printed.rstrip().splitlines()[-1] == last_line
    assert whole["summary"] == [last_line]


def test_replayed_counts_equal_mask_sums_for_every_peer(
    tiny_corpus: Path, tiny_kept: np.ndarray, tmp_path: Path
) -> None:
    """For every peer, the real and padded token counts of the replay are the attention
    masks' sums and the batches' sizes, across an epoch boundary."""
    real, padded = replay_batch_token_counts(
        tiny_kept, 32, seed=5, num_batches=BATCHES_PAST_AN_EPOCH
    )
    for peer in all_peers(tiny_corpus, tmp_path / "saved"):
        dataset = peer.open_dataset()
        cycler = EpochCycler(peer.make_loader(dataset, 5))
        observed = []
        try:
            for batch, _ in zip(cycler, range(BATCHES_PAST_AN_EPOCH)):
                check_pad_batch(batch, True, peer.name)
                observed.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
        finally:
            cycler.shut_down()
        # A Grain pipeline runs every epoch in one endless pass.
        assert cycler.epochs_started == (1 if peer.family == "grain" else 2), peer.name
        assert [m for m, _ in observed] == real.tolist(), peer.name
        assert [p for _, p in observed] == padded.tolist(), peer.name


def test_peers_yield_the_same_batches(tiny_corpus: Path, tmp_path: Path) -> None:
    """Same sampler seed, same batches: the peers do the same work (workers 0 rows)."""
    peers = [
        peer for peer in all_peers(tiny_corpus, tmp_path / "saved")
        if peer.family == "arrowloader" or peer.num_workers == 0
    ]
    first_batches = []
    for peer in peers:
        dataset = peer.open_dataset()
        loader = peer.make_loader(dataset, 11)
        first_batches.append([batch for batch, _ in zip(loader, range(3))])
    reference = first_batches[-1]
    for peer, batches in zip(peers, first_batches):
        for got, want in zip(batches, reference):
            assert set(got) == {"input_ids", "attention_mask", "labels"}, peer.name
            for key in want:
                assert torch.equal(got[key], want[key]), (peer.name, key)


def test_check_pad_batch_rejects_wrong_outputs() -> None:
    good = {
        "input_ids": torch.zeros(2, 3, dtype=torch.int64),
        "attention_mask": torch.zeros(2, 3, dtype=torch.int64),
        "labels": torch.zeros(2, dtype=torch.int64),
    }
    check_pad_batch(good, True, "x")
    with pytest.raises(BenchmarkError, match="input_ids"):
        check_pad_batch({**good, "input_ids": good["input_ids"].int()}, True, "x")
    with pytest.raises(BenchmarkError, match="attention_mask"):
        check_pad_batch({**good, "attention_mask": torch.zeros(2, 4, dtype=torch.int64)}, True, "x")
    with pytest.raises(BenchmarkError, match="labels"):
        check_pad_batch({**good, "labels": torch.zeros(3, dtype=torch.int64)}, True, "x")
