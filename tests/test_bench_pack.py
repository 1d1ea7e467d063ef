"""W2 ("pack", arrowloader.bench.pack) end to end on a tiny corpus, and what its figures
rest on: arrowloader's rows against the reference packer, every row's batches full across
an epoch, the check of a W2 batch; W3's corpus writer (benchmarks/make_big_corpus.py).

No assertion here is about speed: figures are only checked to be consistent.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader import PackedDataset, reference
from arrowloader.bench import litdata_peers
from arrowloader.bench.harness import BenchmarkError, EpochCycler, Peer
from arrowloader.bench.libraries import LIBRARY_PEERS
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.nanogpt_peer import nanogpt_pack_peer
from arrowloader.bench.pack import arrowloader_pack_peers, check_pack_batch
from arrowloader.bench.report import STALL_FIGURES, SUMMARISED_FIGURES
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream
from arrowloader.bench.torch_peers import thread_workers_missing, torch_pack_peers
from arrowloader.cli import main
from bench_corpora import TINY_DOCUMENTS, W2, tiny_lengths, write_small_batches

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


def all_pack_peers(corpus: Path, stream_folder: Path) -> list[Peer]:
    """Every W2 row over ``corpus``: torch (flat stream and from documents), nanoGPT (the
    stream written to ``stream_folder``), and the four arrowloader rows."""
    stream_folder.mkdir(parents=True, exist_ok=True)
    stream = TokenStreamFile(
        write_token_stream(corpus, W2.column, W2.eos_token_id, stream_folder / "train.bin"),
        np.dtype(np.uint16),
    )
    return [
        *torch_pack_peers(corpus, W2, stream),
        nanogpt_pack_peer(stream, W2),
        *arrowloader_pack_peers(corpus, W2),
    ]


def test_bench_cli_pack_end_to_end(
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every installed peer but litdata, whose optimize step takes seconds (its rows have
    # their own tests): here it is the skipped row.
    monkeypatch.setattr(litdata_peers, "missing_modules", lambda: ["litdata"])
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
    peer_names = [
        "torch flat stream uint16 (workers 0)", "torch flat stream uint16 (workers 2)",
        "torch from documents (workers 0)", "torch from documents (workers 2)",
        "nanoGPT get_batch (memmap uint16)",
    ]
    if thread_workers_missing() is None:
        peer_names.insert(4, "torch flat stream uint16 (thread workers 2)")
    stream = TokenStreamFile(isolated_cache / "unused.bin", np.dtype(np.uint16))
    for module in LIBRARY_PEERS:
        if not module.missing_modules():
            peer_names += [p.name for p in module.pack_peers(tiny_corpus, W2, stream)]
    assert names[:len(peer_names)] == peer_names
    ours = names[len(peer_names):]
    assert len(ours) == 4 and all(name.startswith("arrowloader") for name in ours)
    assert "documents in order" in ours[1]
    assert "+position_ids +cu_seqlens" in ours[2] and "int32" in ours[3]
    assert [row["headline"] for row in report["rows"]] == (
        [True] * (len(peer_names) + 1) + [False] * 3
    )
    headline = report["rows"][len(peer_names)]
    nanogpt = report["rows"][4]
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
    lengths = tiny_lengths(tiny_corpus)
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
    strongest_peer = max(
        (row for row in report["rows"] if row["family"] != "arrowloader" and row["headline"]),
        key=lambda row: row["median"]["tokens_per_s"],
    )
    assert report["strongest_peer"] == strongest_peer["name"]
    strongest_best = strongest_peer["median"]["tokens_per_s"]
    summary = []
    for row in report["rows"]:
        ratio = row["median"]["tokens_per_s"] / best
        assert row["ratio_to_torch_best"] == pytest.approx(ratio)
        line = next(line for line in printed.splitlines() if line.startswith(row["name"] + " "))
        assert f"{ratio:.2f}x" in line
        strongest = row["median"]["tokens_per_s"] / strongest_best
        assert row["ratio_to_strongest_peer"] == pytest.approx(strongest)
        assert f"{strongest:.2f}x" in line
        if row["family"] == "arrowloader":
            summary.append(
                f"W2 pack: {row['name']} / torch best: {ratio:.1f}x, / strongest peer "
                f"({strongest_peer['name']}): {strongest:.1f}x"
            )
    assert report["arrowloader_row"] == ours[0]
    assert report["ratios"]["arrowloader_over_torch_best"] == pytest.approx(
        headline["median"]["tokens_per_s"] / best
    )
    assert report["ratios"]["arrowloader_over_nanogpt_best"] == pytest.approx(
        headline["median"]["tokens_per_s"] / nanogpt["median"]["tokens_per_s"]
    )
    assert report["ratios"]["arrowloader_over_strongest_peer"] == pytest.approx(
        headline["median"]["tokens_per_s"] / strongest_best
    )
    assert report["ratios"]["arrowloader_cpu_per_token_over_strongest_peer"] == pytest.approx(
        headline["median"]["cpu_s_per_mtok"] / strongest_peer["median"]["cpu_s_per_mtok"]
    )
    assert f"strongest peer: {strongest_peer['name']}; arrowloader / strongest peer: " in printed
    assert printed.rstrip().splitlines()[-4:] == summary
    assert whole["summary"] == summary


def test_bench_pack_rejects_a_corpus_shorter_than_a_batch(
    tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_small_batches(tmp_path / "short.arrow", [[1, 2, 3]] * 10, 4)
    assert main(["bench", "--workload", "pack", "--data", str(corpus), "--quiet"]) == 2
    assert "fewer than one batch" in capsys.readouterr().err


def test_arrowloader_pack_rows_are_concat_blocks(
    small_corpus: Path, small_documents: list[list[int]]
) -> None:
    """The arrowloader rows yield concat blocks of the epoch's document order, in the
    epoch's block order: the reference packer over the documents in
    ``document_order(0, seed)``, rows ``block_order(0, seed, n)[:8]``; the variants add
    the reference's position_ids and cu_seqlens, or give the same ids as int32."""
    seed = 4
    main_row, _, positions_row, int32_row = arrowloader_pack_peers(small_corpus, W2)
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
        check_pack_batch(
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
                check_pack_batch(
                    batch, W2.batch_size, W2.seq_len, peer.dtype, peer.extra_outputs, peer.name
                )
        finally:
            cycler.shut_down()
        assert cycler.epochs_started == (1 if peer.family == "nanogpt" else 2), peer.name


def test_check_pack_batch_rejects_wrong_outputs() -> None:
    ids = torch.arange(2 * 6).reshape(2, 6)
    good = {"input_ids": ids, "labels": ids + 1}
    good["labels"][:, :-1] = ids[:, 1:]
    check_pack_batch(good, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="input_ids"):
        check_pack_batch({**good, "input_ids": ids.int()}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="labels"):
        check_pack_batch({**good, "labels": ids[:1]}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="shifted"):
        check_pack_batch({**good, "labels": ids}, 2, 6, torch.int64, (), "x")
    with pytest.raises(BenchmarkError, match="cu_seqlens"):
        check_pack_batch(good, 2, 6, torch.int64, ("cu_seqlens",), "x")
    with pytest.raises(BenchmarkError, match="unexpected"):
        check_pack_batch({**good, "position_ids": ids}, 2, 6, torch.int64, (), "x")


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


def test_pack_workload_refuses_a_dataset_of_another_corpus(
    tiny_corpus: Path, small_corpus: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    """Each peer's opened dataset is checked against the workload's corpus before its
    loader is built: a block dataset or stream file of another corpus is a BenchmarkError
    naming the peer and both counts, never a run over other data."""
    from arrowloader.bench.pack import PackWorkload
    from arrowloader.bench.torch_peers import FlatStreamBlocks, MappedArrowBlocks

    workload = PackWorkload(
        tiny_corpus, reference=False, options=W2, peers=("torch", "nanogpt"),
        show_progress=False,
    )
    try:
        by_name = {peer.name: peer for peer in workload.peers}
        for peer in workload.peers:  # the workload's own datasets pass
            if peer.family != "arrowloader":
                workload.check_dataset(peer, peer.open_dataset(0))
        other_stream = TokenStreamFile(
            write_token_stream(small_corpus, W2.column, W2.eos_token_id, tmp_path / "o.bin"),
            np.dtype(np.uint16),
        )
        wrong = [
            ("torch from documents (workers 0)",
             MappedArrowBlocks(small_corpus, W2.column, W2.seq_len, W2.eos_token_id), "blocks"),
            ("torch flat stream uint16 (workers 0)",
             FlatStreamBlocks(other_stream.path, other_stream.dtype, W2.seq_len), "blocks"),
            ("nanoGPT get_batch (memmap uint16)", other_stream, "tokens"),
        ]
        for name, dataset, unit in wrong:
            with pytest.raises(BenchmarkError, match=rf"^{re.escape(name)}: .* {unit}, expected"):
                workload.check_dataset(by_name[name], dataset)
    finally:
        workload.close()
