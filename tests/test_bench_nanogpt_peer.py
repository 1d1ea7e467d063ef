"""The nanoGPT peer (arrowloader.bench.nanogpt_peer): its token stream file and its
batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader.bench.nanogpt_peer import nanogpt_pack_peer
from arrowloader.bench.pack import check_pack_batch
from arrowloader.bench.token_stream import TokenStreamFile, stream_dtype, write_token_stream
from bench_corpora import W2, write_small_batches

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


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

    peer = nanogpt_pack_peer(TokenStreamFile(path, np.dtype(np.uint16)), W2)
    batches = iter(peer.make_loader(peer.open_dataset(3), 3))
    offsets = torch.Generator().manual_seed(3)
    for _ in range(3):
        batch = next(batches)
        check_pack_batch(batch, W2.batch_size, W2.seq_len, torch.int64, (), peer.name)
        ix = torch.randint(len(stream) - W2.seq_len, (W2.batch_size,), generator=offsets)
        for row, i in enumerate(ix.tolist()):
            assert batch["input_ids"][row].tolist() == stream[i : i + W2.seq_len].tolist()
            assert batch["labels"][row].tolist() == stream[i + 1 : i + 1 + W2.seq_len].tolist()


def test_token_stream_dtype(tmp_path: Path) -> None:
    assert stream_dtype(50256) == np.uint16 and stream_dtype(65535) == np.uint16
    assert stream_dtype(65536) == np.int32
    corpus = write_small_batches(tmp_path / "wide.arrow", [[1, 70_000], [3]], 1)
    path = write_token_stream(corpus, "input_ids", 2, tmp_path / "wide.bin")
    assert np.fromfile(path, dtype=np.int32).tolist() == [1, 70_000, 2, 3, 2]
    with pytest.raises(ValueError, match="do not fit"):
        write_token_stream(corpus, "input_ids", 2, tmp_path / "narrow.bin", np.uint16)
