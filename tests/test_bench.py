"""``arrowloader bench`` (W1 pad, W2 pack) end to end on a tiny corpus, and the pieces its
figures rest on: token counting (sampler replay for W1, full batches for W2), the peers'
outputs against each other and against the reference packer, the cache, the memory sampler.

No assertion here is about speed: figures are only checked to be consistent.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import PackedDataset, reference, synthetic
from arrowloader.bench import cache, hf_peer
from arrowloader.bench.harness import (
    BenchmarkError,
    EpochCycler,
    Peer,
    RunFigures,
    anon_rss_bytes,
    check_replay,
    check_w1_batch,
    child_pids,
    kept_lengths,
    replay_batch_token_counts,
    seeded_sampler,
)
from arrowloader.bench.pack_peers import (
    MappedArrowBlocks,
    TokenStreamFile,
    W2Options,
    arrowloader_pack_peers,
    nanogpt_peer,
    stream_dtype,
    torch_pack_peers,
    write_token_stream,
)
from arrowloader.bench.peers import (
    MappedTokenColumn,
    W1Options,
    W1Peer,
    arrowloader_peer,
    torch_peers,
)
from arrowloader.bench.report import STALL_FIGURES, SUMMARISED_FIGURES
from arrowloader.bench.w2 import check_w2_batch
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
    last_line = f"W1 pad: {ours['name']} / torch best: {ratio:.1f}x"
    assert printed.rstrip().splitlines()[-1] == last_line
    assert whole["summary"] == [last_line]


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
        cycler = EpochCycler(peer.make_loader(dataset, 5))
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
        loader = peer.make_loader(dataset, 11)
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


# --------------------------------------------------------------------------- W2 pack

#: W2 settings of the tests: the benchmark's own (batch 8, seq_len 2048, EOS 50256).
W2 = W2Options()
#: Documents of the small corpus the content checks compare with the reference packer.
SMALL_DOCUMENTS = 300


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-document reference-style corpus (about 72 blocks of 2049 tokens)."""
    return synthetic.make_corpus(tmp_path_factory.mktemp("w2") / "small.arrow", SMALL_DOCUMENTS, 1)


@pytest.fixture(scope="module")
def small_documents(small_corpus: Path) -> list[list[int]]:
    """The small corpus's documents, read by pyarrow."""
    return _documents(small_corpus)


@pytest.fixture(scope="module")
def small_reference_blocks(small_documents: list[list[int]]) -> list[dict[str, list]]:
    """The reference packer's concat rows of the small corpus, documents in corpus order."""
    return reference.pack_concat(small_documents, W2.seq_len, W2.eos_token_id)


def _documents(path: Path, column: str = "input_ids") -> list[list[int]]:
    with pa.memory_map(str(path), "r") as mapped:
        return pa.ipc.open_file(mapped).read_all().column(column).to_pylist()


def _write_small_batches(path: Path, documents: list[list[int]], rows_per_batch: int) -> Path:
    """``documents`` as an ``input_ids: list<int32>`` IPC file of many small record batches."""
    schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for begin in range(0, len(documents), rows_per_batch):
            chunk = pa.array(documents[begin : begin + rows_per_batch], type=pa.list_(pa.int32()))
            writer.write_batch(pa.record_batch([chunk], schema=schema))
    return path


def all_pack_peers(corpus: Path, stream_folder: Path) -> list[Peer]:
    """Every W2 row over ``corpus``: torch, nanoGPT (stream written to ``stream_folder``),
    and the three arrowloader rows."""
    stream_folder.mkdir(parents=True, exist_ok=True)
    stream = TokenStreamFile(
        write_token_stream(corpus, W2.column, W2.eos_token_id, stream_folder / "train.bin"),
        np.dtype(np.uint16),
    )
    return [
        *torch_pack_peers(corpus, W2),
        nanogpt_peer(stream, W2),
        *arrowloader_pack_peers(corpus, W2),
    ]


def test_bench_cli_pack_end_to_end(
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "w2.json"
    argv = [
        "bench", "--workload", "pack", "--data", str(tiny_corpus), "--seconds", "0.2",
        "--repeats", "1", "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["pack"]
    report = whole["workloads"]["pack"]

    names = [row["name"] for row in report["rows"]]
    assert names[:3] == [
        "torch (workers 0)", "torch (workers 2)", "nanoGPT get_batch (memmap uint16)",
    ]
    ours = names[3:]
    assert len(ours) == 3 and all(name.startswith("arrowloader") for name in ours)
    assert "+position_ids +cu_seqlens" in ours[1] and "int32" in ours[2]
    assert [row["headline"] for row in report["rows"]] == [True] * 4 + [False] * 2
    header = next(line for line in printed.splitlines() if line.startswith("loader "))
    for column in ("real Mtok/s", "vs torch best", "batches/s", "CPU s/Mtok", "anon RSS MiB",
                   "first batch ms", "padding"):
        assert column in header
    for name in names:
        assert any(line.startswith(name + " ") for line in printed.splitlines()), name
    assert printed.splitlines()[0].startswith("W2 pack: the corpus as one token stream")

    # Settings and corpus facts.
    assert whole["command"] == "arrowloader " + " ".join(argv)
    assert report["benchmark"] == "W2 pack"
    assert report["settings"] == {
        "column": "input_ids", "batch_size": 8, "seq_len": 2048, "eos_token_id": 50256,
        "tokens_per_batch": 8 * 2048,
    }
    lengths = _tiny_lengths(tiny_corpus)
    corpus = report["corpus"]
    assert corpus["documents"] == TINY_DOCUMENTS and corpus["tokens"] == int(lengths.sum())
    assert corpus["stream_tokens"] == corpus["tokens"] + TINY_DOCUMENTS
    assert corpus["blocks"] == corpus["stream_tokens"] // 2049
    assert corpus["batches_per_epoch"] == corpus["blocks"] // 8
    assert corpus["nanogpt_stream_dtype"] == "uint16"
    # The stream file of a user's corpus is removed after the run.
    assert not Path(corpus["nanogpt_stream"]).exists()
    assert not list(isolated_cache.glob("nanogpt-stream-*"))

    # Every figure of every run, sane and consistent: W2 batches are always full.
    for row in report["rows"]:
        assert set(row["median"]) == set(SUMMARISED_FIGURES) - set(STALL_FIGURES)
        (run,) = row["runs"]
        assert run["seconds"] >= 0.2 and run["batches"] > 0
        assert run["real_tokens"] == run["padded_tokens"] == run["batches"] * 8 * 2048
        assert run["padding_fraction"] == 0.0
        assert run["tokens_per_s"] == pytest.approx(run["real_tokens"] / run["seconds"])
        assert run["batches_per_s"] == pytest.approx(run["batches"] / run["seconds"])
        assert run["cpu_window_real_tokens"] == (run["batches"] + run["warmup_batches"]) * 16384
        assert run["cpu_s"] > 0 and run["cpu_s_per_mtok"] > 0
        assert run["peak_anon_rss_bytes"] >= run["start_anon_rss_bytes"] > 0
        assert run["first_batch_s"] > 0
        assert row["median"]["bandwidth_gbps"] > 0

    # The ratios agree with the raw figures, in the table and in the last lines.
    torch_best = max(
        (row for row in report["rows"] if row["family"] == "torch"),
        key=lambda row: row["median"]["tokens_per_s"],
    )
    assert report["torch_best"] == torch_best["name"]
    best = torch_best["median"]["tokens_per_s"]
    summary = []
    for row in report["rows"]:
        ratio = row["median"]["tokens_per_s"] / best
        assert row["ratio_to_torch_best"] == pytest.approx(ratio)
        line = next(line for line in printed.splitlines() if line.startswith(row["name"] + " "))
        assert f"{ratio:.2f}x" in line
        if row["family"] == "arrowloader":
            summary.append(f"W2 pack: {row['name']} / torch best: {ratio:.1f}x")
    assert report["arrowloader_row"] == ours[0]
    assert report["ratios"]["arrowloader_over_torch_best"] == pytest.approx(
        report["rows"][3]["median"]["tokens_per_s"] / best
    )
    assert report["ratios"]["arrowloader_over_nanogpt_best"] == pytest.approx(
        report["rows"][3]["median"]["tokens_per_s"] / report["rows"][2]["median"]["tokens_per_s"]
    )
    assert printed.rstrip().splitlines()[-3:] == summary
    assert whole["summary"] == summary


def test_bench_cli_all_workloads_without_peers(
    tiny_corpus: Path, isolated_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.json"
    argv = [
        "bench", "--data", str(tiny_corpus), "--seconds", "0.1", "--repeats", "1",
        "--peers", "none", "--json", str(out), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    assert list(whole["workloads"]) == ["pad", "pack"]
    assert [len(w["rows"]) for w in whole["workloads"].values()] == [1, 3]
    assert whole["workloads"]["pack"]["torch_best"] is None
    lines = printed.rstrip().splitlines()
    assert lines[-4].startswith("W1 pad: arrowloader") and lines[-4].endswith("n/a (no torch row)")
    assert all(line.startswith("W2 pack: arrowloader") for line in lines[-3:])
    assert printed.index("W1 pad: shuffled documents") < printed.index("W2 pack: the corpus")


def test_bench_cli_thread_sweep_stall_and_plot(
    tiny_corpus: Path, isolated_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--threads 1,2 (one headline row per count), --consumer-ms (stall figures), --plot."""
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    argv = [
        "bench", "--workload", "pack", "--data", str(tiny_corpus), "--seconds", "0.2",
        "--repeats", "1", "--threads", "1,2", "--consumer-ms", "0.5", "--peers", "torch",
        "--json", str(out), "--plot", str(png), "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    whole = json.loads(out.read_text())
    report = whole["workloads"]["pack"]
    rows = {row["name"]: row for row in report["rows"]}
    assert list(rows)[2:] == [
        "arrowloader (threads 1)", "arrowloader (threads 2)",
        "arrowloader +position_ids +cu_seqlens (threads 1)", "arrowloader int32 (threads 1)",
    ]
    assert whole["settings"]["threads"] == [1, 2] and whole["settings"]["consumer_ms"] == 0.5

    # The sweep: the headline rows by thread count, with their own medians.
    sweep = report["thread_sweep"]
    assert [point["threads"] for point in sweep] == [1, 2]
    for point in sweep:
        row = rows[point["row"]]
        assert row["num_workers"] == point["threads"]
        assert point["tokens_per_s"] == row["median"]["tokens_per_s"]
    assert "thread sweep: 1: " in printed
    best = max(sweep, key=lambda point: point["tokens_per_s"])
    assert report["arrowloader_row"] == best["row"]

    # The stall: time in next() while the consumer slept 0.5 ms after every batch.
    header = next(line for line in printed.splitlines() if line.startswith("loader "))
    assert "stall ms/step" in header
    for row in report["rows"]:
        assert set(row["median"]) == set(SUMMARISED_FIGURES)
        (run,) = row["runs"]
        assert run["consumer_ms"] == 0.5
        assert 0 <= run["stall_s"] <= run["seconds"]
        assert run["stall_fraction"] == pytest.approx(run["stall_s"] / run["seconds"])
        assert run["stall_ms_per_step"] == pytest.approx(1e3 * run["stall_s"] / run["batches"])
        # Every timed batch was followed by a sleep of at least 0.5 ms.
        assert run["seconds"] >= run["batches"] * 0.5e-3
        assert run["real_tokens"] == run["batches"] * 8 * 2048

    # The memory-bandwidth bound of the headline row, from the memcpy of the same run.
    bound = report["bandwidth_bound_tokens_per_s"]
    ours = rows[report["arrowloader_row"]]
    (run,) = ours["runs"]
    traffic = ours["traffic"]
    per_token = (
        run["real_tokens"] * traffic["read_bytes_per_token"]
        + run["padded_tokens"] * traffic["written_bytes_per_position"]
        + run["batches"] * traffic["written_bytes_per_batch"]
    ) / run["real_tokens"]
    assert bound["bytes_per_real_token"] == pytest.approx(per_token)
    assert bound["dram"] == pytest.approx(2 * whole["memcpy_gbps"] * 1e9 / per_token)
    assert whole["machine"]["memcpy_gbps"] == whole["memcpy_gbps"]
    assert "memory-bandwidth bound:" in printed

    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


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
    [("toy_loaders:with_mask", 40, 64), ("toy_loaders.py:as_tuples", 16, 16)],
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


@pytest.mark.parametrize("threads", ["", "1,x", "-1", "2,-3"])
def test_bench_rejects_bad_thread_lists(threads: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--threads", threads])
    assert "--threads" in capsys.readouterr().err


def test_bench_plot_without_matplotlib_fails_before_measuring(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arrowloader.bench import plot

    monkeypatch.setattr(plot, "matplotlib_missing", lambda: True)
    assert main(["bench", "--data", str(tmp_path / "none.arrow"), "--plot",
                 str(tmp_path / "out.png"), "--quiet"]) == 2
    assert "pip install 'arrowloader[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"threads": (-1,)}, "threads must be counts >= 0"),
        ({"threads": ()}, "threads must be counts >= 0"),
        ({"consumer_ms": -1.0}, "consumer_ms must be >= 0"),
        ({"workloads": ("loader",)}, "needs config.loader"),
    ],
)
def test_run_bench_rejects_bad_settings(changes: dict, message: str) -> None:
    from arrowloader.bench.suite import BenchConfig, run_bench

    config = BenchConfig(source="unused.arrow", show_progress=False, **changes)
    with pytest.raises(ValueError, match=message):
        run_bench(config)


def test_bench_rejects_an_unknown_workload(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--workload", "sort"])
    assert "sort" in capsys.readouterr().err


def test_bench_pack_rejects_a_corpus_shorter_than_a_batch(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = _write_small_batches(tmp_path / "short.arrow", [[1, 2, 3]] * 10, 4)
    assert main(["bench", "--workload", "pack", "--data", str(corpus), "--quiet"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err


def test_torch_blocks_equal_the_reference_packer(
    small_corpus: Path, small_reference_blocks: list[dict[str, list]]
) -> None:
    """The torch peer's block i is the reference packer's concat block i over the
    unshuffled stream, and PackedDataset(shuffle_documents=False)'s ds[i]."""
    dataset = MappedArrowBlocks(small_corpus, W2.column, W2.seq_len, W2.eos_token_id)
    packed = PackedDataset(
        small_corpus, seq_len=W2.seq_len, eos_token_id=W2.eos_token_id, shuffle_documents=False,
        return_position_ids=False, return_cu_seqlens=False,
    )
    assert len(dataset) == len(small_reference_blocks) == len(packed) > W2.batch_size
    for i, want in enumerate(small_reference_blocks):
        item = dataset[i]
        assert item["input_ids"].dtype == torch.int64
        assert item["input_ids"].tolist() == want["input_ids"], i
        assert item["labels"].tolist() == want["labels"], i
        assert torch.equal(item["input_ids"], packed[i]["input_ids"]), i
        assert torch.equal(item["labels"], packed[i]["labels"]), i


@pytest.mark.parametrize("seq_len", [1, 7, 64])
def test_torch_blocks_across_record_batches(tmp_path: Path, seq_len: int) -> None:
    """Blocks whose documents span several record batches (and empty documents)."""
    rng = np.random.default_rng(seq_len)
    documents = [
        rng.integers(1, 1000, size=int(rng.choice([0, 1, 2, 9, 40, 150]))).tolist()
        for _ in range(200)
    ]
    corpus = _write_small_batches(tmp_path / "chunks.arrow", documents, 7)
    dataset = MappedArrowBlocks(corpus, "input_ids", seq_len, 5)
    want = reference.pack_concat(documents, seq_len, 5)
    assert len(dataset) == len(want)
    for i, row in enumerate(want):
        block = dataset.block(i)
        assert block[:-1].tolist() == row["input_ids"], i
        assert block[1:].tolist() == row["labels"], i
    with pytest.raises(IndexError):
        dataset.block(len(dataset))


def test_nanogpt_stream_and_batches(
    small_corpus: Path, small_documents: list[list[int]], tmp_path: Path
) -> None:
    """The stream file is every document followed by EOS, in corpus order, uint16; each
    nanoGPT batch row is a window of it at the offsets torch.randint draws, labels the
    window one further."""
    path = write_token_stream(small_corpus, "input_ids", W2.eos_token_id, tmp_path / "train.bin")
    stream = np.fromfile(path, dtype=np.uint16)
    assert stream.tolist() == [t for doc in small_documents for t in [*doc, W2.eos_token_id]]
    assert not list(tmp_path.glob("*.partial"))

    peer = nanogpt_peer(TokenStreamFile(path, np.dtype(np.uint16)), W2)
    batches = iter(peer.make_loader(peer.open_dataset(3), 3))
    offsets = torch.Generator().manual_seed(3)
    for _ in range(3):
        batch = next(batches)
        check_w2_batch(batch, W2.batch_size, W2.seq_len, torch.int64, (), peer.name)
        ix = torch.randint(len(stream) - W2.seq_len, (W2.batch_size,), generator=offsets)
        for row, i in enumerate(ix.tolist()):
            assert batch["input_ids"][row].tolist() == stream[i : i + W2.seq_len].tolist()
            assert batch["labels"][row].tolist() == stream[i + 1 : i + 1 + W2.seq_len].tolist()


def test_token_stream_dtype(tmp_path: Path) -> None:
    assert stream_dtype(50256) == np.uint16 and stream_dtype(65535) == np.uint16
    assert stream_dtype(65536) == np.int32
    corpus = _write_small_batches(tmp_path / "wide.arrow", [[1, 70_000], [3]], 1)
    path = write_token_stream(corpus, "input_ids", 2, tmp_path / "wide.bin")
    assert np.fromfile(path, dtype=np.int32).tolist() == [1, 70_000, 2, 3, 2]
    with pytest.raises(ValueError, match="do not fit"):
        write_token_stream(corpus, "input_ids", 2, tmp_path / "narrow.bin", np.uint16)


def test_arrowloader_pack_rows_are_concat_blocks(
    small_corpus: Path, small_documents: list[list[int]]
) -> None:
    """The arrowloader rows yield concat blocks of the epoch's document order, in the
    epoch's block order: the reference packer over the documents in
    ``document_order(0, seed)``, rows ``block_order(0, seed, n)[:8]``; the variants add
    the reference's position_ids and cu_seqlens, or give the same ids as int32."""
    seed = 4
    main_row, positions_row, int32_row = arrowloader_pack_peers(small_corpus, W2)
    dataset = main_row.open_dataset(seed)
    order = dataset.document_order(0, seed)
    want = reference.pack_concat(
        [small_documents[i] for i in order.tolist()], W2.seq_len, W2.eos_token_id
    )
    blocks = dataset.block_order(0, seed, len(want))[: W2.batch_size].tolist()
    want_batch = [want[b] for b in blocks]
    first = {}
    for peer in (main_row, positions_row, int32_row):
        batch = next(iter(peer.make_loader(peer.open_dataset(seed), seed)))
        check_w2_batch(
            batch, W2.batch_size, W2.seq_len, peer.dtype, peer.extra_outputs, peer.name
        )
        assert batch["input_ids"].tolist() == [row["input_ids"] for row in want_batch]
        assert batch["labels"].tolist() == [row["labels"] for row in want_batch]
        first[peer.name] = batch
    assert set(first[main_row.name]) == {"input_ids", "labels"}
    assert set(first[int32_row.name]) == {"input_ids", "labels"}
    with_positions = first[positions_row.name]
    assert with_positions["position_ids"].tolist() == [row["position_ids"] for row in want_batch]
    cu_seqlens, max_seqlen = reference.packed_cu_seqlens(want_batch, W2.seq_len)
    assert with_positions["cu_seqlens"].tolist() == cu_seqlens
    assert with_positions["max_seqlen"] == max_seqlen


def test_pack_peers_yield_full_batches_across_an_epoch(
    small_corpus: Path, small_reference_blocks: list[dict[str, list]], tmp_path: Path
) -> None:
    """Every W2 row yields only full batches, also where an epoch ends, so a run's tokens
    are its batches times 8 x 2048 (what PackWorkload.token_counts says)."""
    batches_per_epoch = len(small_reference_blocks) // W2.batch_size
    wanted = batches_per_epoch + 3
    for peer in all_pack_peers(small_corpus, tmp_path / "stream"):
        dataset = peer.open_dataset(2)
        cycler = EpochCycler(peer.make_loader(dataset, 2))
        try:
            for batch, _ in zip(cycler, range(wanted)):
                check_w2_batch(
                    batch, W2.batch_size, W2.seq_len, peer.dtype, peer.extra_outputs, peer.name
                )
        finally:
            cycler.shut_down()
        assert cycler.epochs_started == (1 if peer.family == "nanogpt" else 2), peer.name


def test_check_w2_batch_rejects_wrong_outputs() -> None:
    ids = torch.arange(2 * 6).reshape(2, 6)
    good = {"input_ids": ids, "labels": ids + 1}
    good["labels"][:, :-1] = ids[:, 1:]
    check_w2_batch(good, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="input_ids"):
        check_w2_batch({**good, "input_ids": ids.int()}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="labels"):
        check_w2_batch({**good, "labels": ids[:1]}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="shifted"):
        check_w2_batch({**good, "labels": ids}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="cu_seqlens"):
        check_w2_batch(good, 2, 6, torch.int64, ("cu_seqlens",), "x")
    with pytest.raises(BenchmarkError, match="unexpected"):
        check_w2_batch({**good, "position_ids": ids}, 2, 6, torch.int64, (), "x")


def test_make_big_corpus_writes_shards_packed_dataset_reads(tmp_path: Path) -> None:
    """W3's corpus writer at a tiny size: several complete shards of the reference
    distributions, one corpus for PackedDataset; a second call keeps them."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "make_big_corpus.py"
    spec = importlib.util.spec_from_file_location("make_big_corpus", script)
    assert spec is not None and spec.loader is not None
    make_big_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_big_corpus)
    out = tmp_path / "big"
    argv = [
        "--size-gb", "0.003", "--shard-gb", "0.001", "--rows-per-batch", "256",
        "--out", str(out), "--quiet",
    ]
    assert make_big_corpus.main(argv) == 0
    shards = sorted(out.glob("*.arrow"))
    assert [p.name for p in shards] == [f"shard-0000{i}.arrow" for i in range(3)]
    assert not list(out.glob("*.partial"))
    summary = json.loads((out / ".complete").read_text())
    assert summary["bytes"] == sum(p.stat().st_size for p in shards) >= 3_000_000
    columns = MappedTokenColumn(out, "input_ids", "label")
    lengths = columns.lengths()
    assert columns.num_rows == summary["documents"] > 1000
    assert lengths.min() >= 8 and lengths.max() <= 8192
    assert 200 < np.median(lengths) < 450  # lognormal(ln 300, 1)
    packed = PackedDataset(out, seq_len=W2.seq_len, eos_token_id=W2.eos_token_id)
    assert packed.corpus.num_rows == columns.num_rows
    assert packed.corpus.num_tokens == int(lengths.sum())
    mtimes = [p.stat().st_mtime_ns for p in shards]
    assert make_big_corpus.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in shards] == mtimes
