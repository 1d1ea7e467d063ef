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
from arrowloader.bench import hf_peer
from arrowloader.bench.harness import kept_lengths
from arrowloader.bench.pack_peers import TokenStreamFile, W2Options, write_token_stream
from arrowloader.bench.peers import MappedTokenColumn, W1Options

#: Documents of the benchmark corpus: a tenth of the reference corpus.
BENCH_DOCUMENTS = 20_000


@pytest.fixture(scope="session")
def w1_options() -> W1Options:
    """W1's settings: batch 32, truncation to 1024, labels from ``label``."""
    return W1Options()


@pytest.fixture(scope="session")
def w1_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 20,000-document corpus: ``input_ids`` list<int32>, ``label`` int64."""
    folder = tmp_path_factory.mktemp("w1-corpus")
    return synthetic.make_corpus(folder / "w1.arrow", BENCH_DOCUMENTS, seed=0)


@pytest.fixture(scope="session")
def w1_kept(w1_corpus: Path, w1_options: W1Options) -> np.ndarray:
    """Tokens each document keeps after truncation, int64 ``[documents]``."""
    lengths = MappedTokenColumn(w1_corpus, w1_options.column, None).lengths()
    return kept_lengths(lengths, w1_options.max_length)


@pytest.fixture(scope="session")
def w1_saved_copy(w1_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``datasets`` ``save_to_disk`` copy of the corpus (skips without the hf extra)."""
    missing = hf_peer.missing_modules()
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    target = tmp_path_factory.mktemp("w1-saved") / "dataset"
    return hf_peer.write_saved_copy(
        w1_corpus, ["input_ids", "label"], target, show_progress=False
    )


@pytest.fixture(scope="session")
def w2_options() -> W2Options:
    """W2's settings: batch 8, seq_len 2048, EOS 50256."""
    return W2Options()


@pytest.fixture(scope="session")
def w2_stream(
    w1_corpus: Path, w2_options: W2Options, tmp_path_factory: pytest.TempPathFactory
) -> TokenStreamFile:
    """The benchmark corpus as nanoGPT's raw uint16 token stream (EOS after every
    document), for the nanoGPT row of W2."""
    folder = tmp_path_factory.mktemp("w2-stream")
    path = write_token_stream(
        w1_corpus, w2_options.column, w2_options.eos_token_id, folder / "train.bin"
    )
    return TokenStreamFile(path, np.dtype(np.uint16))
