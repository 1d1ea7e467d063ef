"""``arrowloader bench`` (W1) end to end on a tiny corpus, and the pieces its figures rest
on: token counting by sampler replay, the peers' outputs, the cache, the memory sampler.

No assertion here is about speed: figures are only checked to be consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader import synthetic
from arrowloader.bench import cache, hf_peer
from arrowloader.bench.harness import (
    BenchmarkError,
    EpochCycler,
    RunFigures,
    anon_rss_bytes,
    check_replay,
    check_w1_batch,
    child_pids,
    kept_lengths,
    replay_batch_token_counts,
    seeded_sampler,
)
from arrowloader.bench.peers import (
    MappedTokenColumn,
    W1Options,
    W1Peer,
    arrowloader_peer,
    torch_peers,
)
from arrowloader.bench.w1 import SUMMARISED_FIGURES
from arrowloader.cli import main
from torch.utils.data import BatchSampler

TINY_DOCUMENTS = 2_000
#: Batches per epoch of the tiny corpus at batch 32: 63 (the last one has 16 rows).
BATCHES_PAST_AN_EPOCH = 70

needs_hf = pytest.mark.skipif(
    bool(hf_peer.missing_modules()), reason="datasets/transformers/tokenizers not installed"
)


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,000-document reference-style corpus (input_ids list<int32>, label int64)."""
    return synthetic.make_corpus(tmp_path_factory.mktemp("w1") / "tiny.arrow", TINY_DOCUMENTS, 0)


@pytest.fixture(scope="module")
def tiny_kept(tiny_corpus: Path) -> np.ndarray:
    """Kept (truncated to 1024) length of every tiny-corpus document, int64 [2000]."""
    return kept_lengths(MappedTokenColumn(tiny_corpus, "input_ids", None).lengths(), 1024)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the benchmark cache at a fresh folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ARROWLOADER_CACHE", str(folder))
    return folder


def all_peers(corpus: Path, saved_copy_folder: Path) -> list[W1Peer]:
    """Every W1 row over ``corpus``: torch, hf (if installed) and arrowloader."""
    options = W1Options()
    peers = torch_peers(corpus, options)
    if not hf_peer.missing_modules():
        saved = hf_peer.write_saved_copy(
            corpus, ["input_ids", "label"], saved_copy_folder, show_progress=False
        )
        peers += hf_peer.hf_peers(saved, options)
    peers.append(arrowloader_peer(corpus, options))
    return peers


# --------------------------------------------------------------------------- the CLI


def test_bench_cli_end_to_end(
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "w1.json"
    argv = [
        "bench", "--data", str(tiny_corpus), "--seconds", "0.2", "--repeats", "1",
        "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())

    names = [row["name"] for row in report["rows"]]
    expected = ["torch (workers 0)", "torch (workers 2)"]
    if not hf_peer.missing_modules():
        expected += ["hf collator (workers 0)", "hf collator (workers 2)"]
    assert names[:-1] == expected
    assert names[-1].startswith("arrowloader (threads ")
    header = next(line for line in printed.splitlines() if line.startswith("loader "))
    for column in ("real Mtok/s", "vs torch best", "CPU s/Mtok", "anon RSS MiB",
                   "first batch ms", "padding"):
        assert column in header
    for name in names:
        assert any(line.startswith(name) for line in printed.splitlines()), name
    assert "anonymous memory" in printed
    assert "memcpy" in printed

    # Settings, corpus and machine facts.
    assert report["command"] == "arrowloader " + " ".join(argv)
    assert report["settings"]["batch_size"] == 32 and report["settings"]["max_length"] == 1024
    assert report["corpus"]["documents"] == TINY_DOCUMENTS
    assert report["corpus"]["reference"] is False
    for fact in ("cores", "usable_cores", "memory_bytes", "python", "torch", "pyarrow",
                 "numpy", "platform"):
        assert report["machine"][fact], fact
    assert report["memcpy_gbps"] > 0

    # Every figure of every run, sane and consistent with each other.
    run_fields = set(RunFigures.__dataclass_fields__)
    for row in report["rows"]:
        assert set(row["median"]) == set(SUMMARISED_FIGURES)
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
            kept_lengths(np.asarray(_tiny_lengths(tiny_corpus)), 1024), 32, run["seed"],
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
    assert printed.rstrip().splitlines()[-1] == f"arrowloader / torch best: {ratio:.1f}x"


def _tiny_lengths(corpus: Path) -> np.ndarray:
    return MappedTokenColumn(corpus, "input_ids", None).lengths()


def test_plain_command_prints_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arrowloader.cli"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "bench" in result.stdout and "usage: arrowloader" in result.stdout


def test_bench_rejects_a_missing_corpus(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--data", str(tmp_path / "missing.arrow"), "--quiet"]) == 2
    assert "missing.arrow" in capsys.readouterr().err


def test_bench_rejects_unknown_peers(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--peers", "torch,jax"])
    assert "jax" in capsys.readouterr().err


# --------------------------------------------------------------------------- token counting


def test_replay_matches_iterating_torchs_batch_sampler() -> None:
    """The vectorised replay against torch's own BatchSampler, across two epochs."""
    rng = np.random.default_rng(3)
    kept = rng.integers(1, 50, size=100)
    sampler = seeded_sampler(range(100), seed=7)
    batches = [b for _ in range(3) for b in BatchSampler(sampler, 32, drop_last=False)]
    real, padded = replay_batch_token_counts(kept, 32, seed=7, num_batches=10)
    assert real.tolist() == [int(kept[b].sum()) for b in batches[:10]]
    assert padded.tolist() == [int(kept[b].max()) * len(b) for b in batches[:10]]


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
        cycler = EpochCycler(peer.make_loader(dataset, seeded_sampler(dataset, 5)))
        observed = []
        try:
            for batch, _ in zip(cycler, range(BATCHES_PAST_AN_EPOCH)):
                check_w1_batch(batch, True, peer.name)
                observed.append((int(batch["attention_mask"].sum()), batch["input_ids"].numel()))
        finally:
            cycler.shut_down()
        assert cycler.epochs_started == 2, peer.name
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
        loader = peer.make_loader(dataset, seeded_sampler(dataset, 11))
        first_batches.append([batch for batch, _ in zip(loader, range(3))])
    reference = first_batches[-1]
    for peer, batches in zip(peers, first_batches):
        for got, want in zip(batches, reference):
            assert set(got) == {"input_ids", "attention_mask", "labels"}, peer.name
            for key in want:
                assert torch.equal(got[key], want[key]), (peer.name, key)


def test_check_replay_reports_a_loader_off_its_sampler() -> None:
    with pytest.raises(BenchmarkError, match="batch 1"):
        check_replay("x", [(5, 8), (6, 8)], np.array([5, 7]), np.array([8, 8]))


def test_check_w1_batch_rejects_wrong_outputs() -> None:
    good = {
        "input_ids": torch.zeros(2, 3, dtype=torch.int64),
        "attention_mask": torch.zeros(2, 3, dtype=torch.int64),
        "labels": torch.zeros(2, dtype=torch.int64),
    }
    check_w1_batch(good, True, "x")
    with pytest.raises(BenchmarkError, match="input_ids"):
        check_w1_batch({**good, "input_ids": good["input_ids"].int()}, True, "x")
    with pytest.raises(BenchmarkError, match="attention_mask"):
        check_w1_batch({**good, "attention_mask": torch.zeros(2, 4, dtype=torch.int64)}, True, "x")
    with pytest.raises(BenchmarkError, match="labels"):
        check_w1_batch({**good, "labels": torch.zeros(3, dtype=torch.int64)}, True, "x")


# --------------------------------------------------------------------------- cache, memory


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ARROWLOADER_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "arrowloader"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "arrowloader"
    monkeypatch.setenv("ARROWLOADER_CACHE", str(tmp_path / "explicit"))
    assert cache.cache_dir() == tmp_path / "explicit"
    assert cache.cache_dir().is_dir()


def test_reference_corpus_is_written_once(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    make_corpus = synthetic.make_corpus

    def counting_make_corpus(*args: object, **kwargs: object) -> Path:
        calls.append(args)
        return make_corpus(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_corpus", counting_make_corpus)
    first = cache.reference_corpus(300, 1, show_progress=False)
    second = cache.reference_corpus(300, 1, show_progress=False)
    assert first == second and first.parent == isolated_cache
    assert len(calls) == 1
    assert MappedTokenColumn(first, "input_ids", "label").num_rows == 300
    assert not list(isolated_cache.glob("*.partial"))


def test_child_processes_are_found_and_measured() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = bytearray(32 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while anon_rss_bytes(child.pid) < 32 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.pid in child_pids()
        assert anon_rss_bytes(child.pid) >= 32 << 20
    finally:
        child.communicate(b"")
    assert anon_rss_bytes(child.pid) == 0  # reaped: no longer readable
