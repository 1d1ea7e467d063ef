"""The litdata peers (arrowloader.bench.litdata_peers): after litdata's own ``optimize``
step, an epoch of the W2 row holds the reference packer's blocks, each once, and an epoch
of the W1 row holds every document pyarrow reads, truncated and padded as W1 asks; the
optimized copy is reused with the time it took."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from arrowloader.bench import litdata_peers
from arrowloader.bench.harness import EpochCycler
from arrowloader.bench.pack import check_pack_batch
from arrowloader.bench.pad import PadOptions, check_pad_batch
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream
from bench_corpora import W2

pytest.importorskip("litdata", reason="litdata is installed apart (README, Benchmarks)")


def one_epoch(peer, seed: int) -> list[dict]:
    """The batches of the first epoch of a row (its loader's first iter())."""
    cycler = EpochCycler(peer.make_loader(peer.open_dataset(seed), seed))
    try:
        return list(cycler.iterator)
    finally:
        cycler.shut_down()


def test_an_epoch_of_the_w2_row_is_every_block_once(
    small_corpus: Path, small_reference_blocks: list[dict], tmp_path: Path
) -> None:
    stream = TokenStreamFile(
        write_token_stream(small_corpus, W2.column, W2.eos_token_id, tmp_path / "s.bin"),
        np.dtype(np.uint16),
    )
    start_method = multiprocessing.get_start_method(allow_none=True)
    copy = litdata_peers.optimized_copy(
        tmp_path / "blocks",
        lambda f: litdata_peers.write_stream_copy(stream, W2.block_size, f),
    )
    assert not copy.cached and copy.optimize_s > 0
    # optimize() forces "spawn" on the process; the peer puts the start method back, so
    # the loaders measured after it start their workers as before.
    assert multiprocessing.get_start_method(allow_none=True) == start_method
    again = litdata_peers.optimized_copy(tmp_path / "blocks", lambda f: pytest.fail("rewritten"))
    assert again == litdata_peers.OptimizedCopy(copy.path, copy.optimize_s, True)
    assert "converted in" in copy.note("the blocks") and "cached" in again.note("the blocks")

    rows = litdata_peers.pack_peers_over(copy, W2, stream.dtype)
    assert [p.name for p in rows] == [
        f"litdata TokensLoader uint16 (workers {n})" for n in (0, 2)
    ]
    assert len(rows[0].open_dataset(3)) == len(small_reference_blocks)
    batches = one_epoch(rows[0], 3)
    for batch in batches:
        check_pack_batch(batch, W2.batch_size, W2.seq_len, rows[0].dtype, (), rows[0].name)
    # The reference packer's blocks, as (input_ids, last label) keys.
    reference = Counter(
        (*row["input_ids"], row["labels"][-1]) for row in small_reference_blocks
    )
    order = [
        (*ids, labels[-1])
        for batch in batches
        for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist())
    ]
    assert len(batches) == len(reference) // W2.batch_size
    assert max(Counter(order).values()) == 1 and set(order) <= set(reference)
    # Shuffled: not the blocks in stream order.
    in_stream_order = [(*r["input_ids"], r["labels"][-1]) for r in small_reference_blocks]
    assert order != in_stream_order[: len(order)]


def test_an_epoch_of_the_w1_row_is_every_document_once(
    small_corpus: Path, tmp_path: Path
) -> None:
    options = PadOptions()
    copy = litdata_peers.optimized_copy(
        tmp_path / "documents",
        lambda f: litdata_peers.write_document_copy(small_corpus, options, f),
    )
    rows = litdata_peers.pad_peers_over(copy, options)
    assert [p.name for p in rows] == [f"litdata StreamingDataset (workers {n})" for n in (0, 2)]
    assert all(p.counts_in_loop for p in rows)
    batches = one_epoch(rows[0], 4)
    seen = Counter()
    for batch in batches:
        check_pad_batch(batch, True, rows[0].name)
        for ids, mask, label in zip(
            batch["input_ids"].tolist(), batch["attention_mask"].tolist(),
            batch["labels"].tolist(),
        ):
            real = sum(mask)
            assert mask == [1] * real + [0] * (len(mask) - real)
            assert ids[real:] == [options.pad_token_id] * (len(ids) - real)
            seen[(tuple(ids[:real]), label)] += 1
    with pa.memory_map(str(small_corpus), "r") as mapped:
        table = pa.ipc.open_file(mapped).read_all()
    expected = Counter(
        (tuple(ids[: options.max_length]), label)
        for ids, label in zip(table["input_ids"].to_pylist(), table["label"].to_pylist())
    )
    assert seen == expected
    assert max(b["input_ids"].shape[1] for b in batches) <= options.max_length
