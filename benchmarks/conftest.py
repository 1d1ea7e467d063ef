"""Fixtures of the pytest-benchmark suites (run with ``pytest benchmarks/
--benchmark-autosave``; pyproject's ``testpaths`` leaves them out of plain ``pytest``).

A smaller reference corpus (20,000 documents, about 10M tokens) is written once per session,
with the same generator and distributions as the 200,000-document reference corpus.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from arrowloader import synthetic
from arrowloader.bench import hf_peer
from arrowloader.bench.harness import kept_lengths
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
