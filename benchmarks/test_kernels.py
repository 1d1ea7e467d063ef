"""Micro-benchmarks of the native kernels on the 20,000-document corpus.

- ``PaddedBatchAssembler.assemble`` of one W1 batch (32 random rows, width from ``.width``)
  into preallocated outputs, and into fresh torch tensors as the loader allocates them;
- ``gather`` of the same rows (the path of ``TokenDataset.__getitems__``);
- ``width`` of one batch and ``widths`` of a whole shuffled epoch (the loader's planning);
- opening a corpus (mapping, importing and validating every offset) and the validation
  alone (``TokenColumn.add_chunk`` over already-mapped record batches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from arrowloader import _C, Corpus
from arrowloader.bench.pad import PadOptions
from arrowloader.sources import iter_column_chunks, open_ipc

ROWS_SEED = 1


@pytest.fixture(scope="module")
def corpus(bench_corpus: Path, pad_options: PadOptions) -> Corpus:
    """The benchmark corpus opened with its token and label columns."""
    return Corpus(bench_corpus, pad_options.column, pad_options.label_column)


@pytest.fixture(scope="module")
def assembler(corpus: Corpus, pad_options: PadOptions) -> _C.PaddedBatchAssembler:
    """W1's assembler: truncation to 1024, right padding with 0."""
    return _C.PaddedBatchAssembler(
        corpus.tokens, corpus.labels, max_length=pad_options.max_length
    )


@pytest.fixture(scope="module")
def batch_rows(corpus: Corpus, pad_options: PadOptions) -> np.ndarray:
    """One W1 batch: 32 distinct random rows, int64 ``[32]``."""
    rng = np.random.default_rng(ROWS_SEED)
    return rng.choice(corpus.num_rows, size=pad_options.batch_size, replace=False).astype(np.int64)


def kept_tokens(assembler: _C.PaddedBatchAssembler, rows: np.ndarray) -> int:
    _, lengths = assembler.gather(rows, np.dtype(np.int64))
    return int(lengths.sum())


@pytest.mark.benchmark(group="kernel: one W1 batch")
def test_assemble_one_batch(benchmark, assembler, batch_rows: np.ndarray) -> None:
    width = assembler.width(batch_rows)
    shape = (len(batch_rows), width)
    input_ids = np.empty(shape, dtype=np.int64)
    attention_mask = np.empty(shape, dtype=np.int64)
    labels = np.empty(len(batch_rows), dtype=np.int64)
    benchmark(assembler.assemble, batch_rows, input_ids, attention_mask, None, labels)
    assert attention_mask.sum() == kept_tokens(assembler, batch_rows)
    benchmark.extra_info.update(width=width, real_tokens=kept_tokens(assembler, batch_rows))


@pytest.mark.benchmark(group="kernel: one W1 batch")
def test_assemble_one_batch_into_fresh_tensors(
    benchmark, assembler, batch_rows: np.ndarray
) -> None:
    """As the loader does per batch: width, three torch.empty outputs, assemble."""

    def assemble() -> None:
        shape = (len(batch_rows), assembler.width(batch_rows))
        input_ids = torch.empty(shape, dtype=torch.int64)
        attention_mask = torch.empty(shape, dtype=torch.int64)
        labels = torch.empty(len(batch_rows), dtype=torch.int64)
        assembler.assemble(
            batch_rows, input_ids.numpy(), attention_mask.numpy(), None, labels.numpy()
        )

    benchmark(assemble)


@pytest.mark.benchmark(group="kernel: one W1 batch")
def test_gather_one_batch(benchmark, assembler, batch_rows: np.ndarray) -> None:
    flat, lengths = benchmark(assembler.gather, batch_rows, np.dtype(np.int64))
    assert len(flat) == lengths.sum()


@pytest.mark.benchmark(group="kernel: one W1 batch")
def test_width_of_one_batch(benchmark, assembler, batch_rows: np.ndarray) -> None:
    benchmark(assembler.width, batch_rows)


@pytest.mark.benchmark(group="kernel: planning")
def test_widths_of_a_shuffled_epoch(benchmark, assembler, corpus: Corpus) -> None:
    permutation = np.random.default_rng(ROWS_SEED).permutation(corpus.num_rows).astype(np.int64)
    widths = benchmark(assembler.widths, permutation, 32)
    assert len(widths) == -(-corpus.num_rows // 32)


@pytest.mark.benchmark(group="kernel: opening")
def test_open_corpus(benchmark, bench_corpus: Path, pad_options: PadOptions) -> None:
    """Mapping the file, importing its columns and validating every offset."""
    opened = benchmark(Corpus, bench_corpus, pad_options.column, pad_options.label_column)
    assert opened.num_rows > 0


@pytest.mark.benchmark(group="kernel: opening")
def test_token_column_validation(benchmark, bench_corpus: Path, pad_options: PadOptions) -> None:
    """``TokenColumn`` construction and offset validation alone, over mapped batches."""
    opened = open_ipc(bench_corpus)
    chunks = list(iter_column_chunks(opened, pad_options.column, list_column=True))

    def build_column() -> _C.TokenColumn:
        column = _C.TokenColumn(pad_options.column)
        for array, row in chunks:
            column.add_chunk(*array.__arrow_c_array__(), str(bench_corpus), row)
        return column

    column = benchmark(build_column)
    assert column.num_rows == sum(batch.num_rows for batch in opened.batches)
