"""The benchmark cache (arrowloader.bench.cache): its folder, and the reference corpus
written once."""

from __future__ import annotations

from pathlib import Path

import pytest
from arrowloader import synthetic
from arrowloader.bench import cache
from arrowloader.bench.mapped_arrow import MappedTokenColumn

#: The shared fixtures (tiny corpora, an isolated cache) of tests/bench_corpora.py.


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
