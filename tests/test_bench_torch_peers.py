"""The torch peers' W2 datasets (arrowloader.bench.torch_peers: MappedArrowBlocks,
FlatStreamBlocks) against the reference packer and each other. (The W1 torch rows are
checked with every W1 row in test_bench_pad.py.)
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader import PackedDataset, reference
from arrowloader.bench import torch_peers
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream
from arrowloader.bench.torch_peers import (
    FlatStreamBlocks,
    MappedArrowBlocks,
    thread_worker_rows,
    thread_workers_missing,
    torch_pack_peers,
    torch_pad_peers,
)
from bench_corpora import W2, write_small_batches

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


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
    corpus = write_small_batches(tmp_path / "chunks.arrow", documents, 7)
    dataset = MappedArrowBlocks(corpus, "input_ids", seq_len, 5)
    want = reference.pack_concat(documents, seq_len, 5)
    assert len(dataset) == len(want)
    for i, row in enumerate(want):
        block = dataset.block(i)
        assert block[:-1].tolist() == row["input_ids"], i
        assert block[1:].tolist() == row["labels"], i
    with pytest.raises(IndexError):
        dataset.block(len(dataset))


def test_flat_stream_blocks_equal_the_document_blocks(small_corpus: Path, tmp_path: Path) -> None:
    """The flat-stream peer's block i (sliced from the stream file) is the from-documents
    peer's block i, both are int64 [seq_len], and every torch row of W2 draws the same
    batches for the same seed (so "torch best" compares the same work)."""
    for dtype in (np.uint16, np.int32):
        stream = TokenStreamFile(
            write_token_stream(small_corpus, W2.column, W2.eos_token_id,
                               tmp_path / f"{np.dtype(dtype).name}.bin", dtype),
            np.dtype(dtype),
        )
        flat = FlatStreamBlocks(stream.path, stream.dtype, W2.seq_len)
        documents = MappedArrowBlocks(small_corpus, W2.column, W2.seq_len, W2.eos_token_id)
        assert len(flat) == len(documents) > W2.batch_size
        for i in range(len(flat)):
            ours, theirs = flat[i], documents[i]
            assert ours["input_ids"].dtype == torch.int64
            assert torch.equal(ours["input_ids"], theirs["input_ids"]), i
            assert torch.equal(ours["labels"], theirs["labels"]), i
        with pytest.raises(IndexError):
            flat[len(flat)]
        restored = pickle.loads(pickle.dumps(flat))  # what a worker process receives
        assert torch.equal(restored[1]["input_ids"], flat[1]["input_ids"])

        peers = [p for p in torch_pack_peers(small_corpus, W2, stream) if p.num_workers == 0]
        assert [p.name for p in peers] == [
            f"torch flat stream {np.dtype(dtype).name} (workers 0)",
            "torch from documents (workers 0)",
        ]
        assert [p.reads_stream for p in peers] == [True, False]
        first, second = ([b for b, _ in zip(p.make_loader(p.open_dataset(3), 3), range(4))]
                         for p in peers)
        assert len(first) == len(second) == 4
        for a, b in zip(first, second):
            assert torch.equal(a["input_ids"], b["input_ids"])
            assert torch.equal(a["labels"], b["labels"])


def test_thread_workers_are_found_by_the_dataloaders_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import inspect

    has_them = "worker_method" in inspect.signature(torch.utils.data.DataLoader).parameters
    missing = thread_workers_missing()
    assert (missing is None) == has_them
    if missing is not None:
        assert missing == (
            f"torch {torch.__version__}'s DataLoader has no worker_method= argument "
            "(thread workers)"
        )

    class ThreadedLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, worker_method: str = "multiprocessing", **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.worker_method = worker_method

    monkeypatch.setattr(torch_peers.torch.utils.data, "DataLoader", ThreadedLoader)
    assert thread_workers_missing() is None


def test_thread_worker_rows_are_the_worker_rows_with_thread_workers(tmp_path: Path) -> None:
    corpus = write_small_batches(tmp_path / "c.arrow", [[1, 2, 3]] * 40, 10)
    rows = torch_pad_peers(corpus, PadOptions(label_column=None))
    threaded = thread_worker_rows(rows)
    assert [p.name for p in threaded] == ["torch (thread workers 2)"]
    (row,) = threaded
    assert row.family == "torch" and row.num_workers == 2
    assert row.make_loader.loader_kwargs == (("worker_method", "thread"),)

    class RecordingLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, worker_method: str, **kwargs) -> None:
            self.worker_method = worker_method
            super().__init__(*args, **{**kwargs, "num_workers": 0,
                                       "persistent_workers": False})

    import dataclasses

    factory = dataclasses.replace(row.make_loader, loader_class=RecordingLoader)
    loader = factory(row.open_dataset(0), 3)
    assert loader.worker_method == "thread"
    # The same batches as the row without threads (drawn by the same seeded sampler).
    plain = rows[0].make_loader(rows[0].open_dataset(0), 3)
    for ours, theirs in zip(loader, plain):
        for key in theirs:
            assert torch.equal(ours[key], theirs[key])
