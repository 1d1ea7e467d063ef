"""Fixtures of the pytest-benchmark suites (run with ``pytest benchmarks/
--benchmark-autosave``; pyproject's ``testpaths`` leaves them out of plain ``pytest``).

A smaller reference corpus (20,000 documents, about 10M tokens) is written once per session,
with the same generator and distributions as the 200,000-document reference corpus; W1 and
W2 both read it (W2's nanoGPT row reads a raw token stream written from it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from arrowloader import synthetic
from arrowloader.bench import hf_peers
from arrowloader.bench.harness import kept_lengths
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.pack import PackOptions
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream

#: Documents of the benchmark corpus: a tenth of the reference corpus.
BENCH_DOCUMENTS = 20_000


@pytest.fixture(scope="session")
def pad_options() -> PadOptions:
    """W1's settings: batch 32, truncation to 1024, labels from ``label``."""
    return PadOptions()


@pytest.fixture(scope="session")
def bench_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 20,000-document corpus: ``input_ids`` list<int32>, ``label`` int64."""
    folder = tmp_path_factory.mktemp("bench-corpus")
    return synthetic.make_corpus(folder / "corpus.arrow", BENCH_DOCUMENTS, seed=0)


@pytest.fixture(scope="session")
def pad_kept_lengths(bench_corpus: Path, pad_options: PadOptions) -> np.ndarray:
    """Tokens each document keeps after truncation, int64 ``[documents]``."""
    lengths = MappedTokenColumn(bench_corpus, pad_options.column, None).lengths()
    return kept_lengths(lengths, pad_options.max_length)


@pytest.fixture(scope="session")
def hf_saved_copy(bench_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``datasets`` ``save_to_disk`` copy of the corpus (skips without the hf extra)."""
    missing = hf_peers.missing_modules()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    target = tmp_path_factory.mktemp("hf-saved") / "dataset"
    return hf_peers.write_saved_copy(
        bench_corpus, ["input_ids", "label"], target, show_progress=False
    )


@pytest.fixture(scope="session")
def pack_options() -> PackOptions:
    """W2's settings: batch 8, seq_len 2048, EOS 50256."""
    return PackOptions()


@pytest.fixture(scope="session")
def nanogpt_stream(
    bench_corpus: Path, pack_options: PackOptions, tmp_path_factory: pytest.TempPathFactory
) -> TokenStreamFile:
    """The benchmark corpus as nanoGPT's raw uint16 token stream (EOS after every
    document), for the nanoGPT row of W2."""
    folder = tmp_path_factory.mktemp("nanogpt-stream")
    path = write_token_stream(
        bench_corpus, pack_options.column, pack_options.eos_token_id, folder / "train.bin"
    )
    return TokenStreamFile(path, np.dtype(np.uint16))
