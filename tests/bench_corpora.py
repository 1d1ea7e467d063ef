"""Corpora and fixtures the ``test_bench_*`` modules share (registered as a plugin by
``conftest.py``, so its fixtures are there for every test module).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import reference, synthetic
from arrowloader.bench.harness import EpochCycler
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.pack import PackOptions

TINY_DOCUMENTS = 2_000


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2,000-document reference-style corpus (input_ids list<int32>, label int64)."""
    return synthetic.make_corpus(tmp_path_factory.mktemp("w1") / "tiny.arrow", TINY_DOCUMENTS, 0)


def tiny_lengths(corpus: Path) -> np.ndarray:
    """Token count of every document of ``corpus``, read by numpy: int64 ``[documents]``."""
    return MappedTokenColumn(corpus, "input_ids", None).lengths()


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points the benchmark cache at a fresh folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("ARROWLOADER_CACHE", str(folder))
    return folder


#: W2 settings of the tests: the benchmark's own (batch 8, seq_len 2048, EOS 50256).
W2 = PackOptions()
#: Documents of the small corpus the content checks compare with the reference packer.
SMALL_DOCUMENTS = 300


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-document reference-style corpus (about 72 blocks of 2049 tokens)."""
    return synthetic.make_corpus(tmp_path_factory.mktemp("w2") / "small.arrow", SMALL_DOCUMENTS, 1)


@pytest.fixture(scope="module")
def small_documents(small_corpus: Path) -> list[list[int]]:
    """The small corpus's documents, read by pyarrow."""
    return read_documents(small_corpus)


@pytest.fixture(scope="module")
def small_reference_blocks(small_documents: list[list[int]]) -> list[dict[str, list]]:
    """The reference packer's concat rows of the small corpus, documents in corpus order."""
    return reference.pack_concat(small_documents, W2.seq_len, W2.eos_token_id)


def read_documents(path: Path, column: str = "input_ids") -> list[list[int]]:
    with pa.memory_map(str(path), "r") as mapped:
        return pa.ipc.open_file(mapped).read_all().column(column).to_pylist()


def write_small_batches(path: Path, documents: list[list[int]], rows_per_batch: int) -> Path:
    """``documents`` as an ``input_ids: list<int32>`` IPC file of many small record batches."""
    schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for begin in range(0, len(documents), rows_per_batch):
            chunk = pa.array(documents[begin : begin + rows_per_batch], type=pa.list_(pa.int32()))
            writer.write_batch(pa.record_batch([chunk], schema=schema))
    return path


def first_batches(peer, seed: int, count: int) -> list[dict]:
    """The first ``count`` batches of a bench row's loader over its dataset opened with
    ``seed`` (its workers or threads shut down after)."""
    cycler = EpochCycler(peer.make_loader(peer.open_dataset(seed), seed))
    try:
        return [batch for batch, _ in zip(cycler, range(count))]
    finally:
        cycler.shut_down()


def assert_same_batches(ours: list[dict], theirs: list[dict]) -> None:
    """Two rows' batches are equal: the same keys, dtypes and values."""
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype, key
            assert torch.equal(a[key], b[key]), key
