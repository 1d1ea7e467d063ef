"""The fuzzing harness (tests/fuzz_ipc.py) in CI's stead of a long run: every input a
fuzzing run found (tests/fuzz_regressions/) now gets a clear error, the seeds are valid
and read exactly as pyarrow reads them, and a short seeded run finds nothing."""

from __future__ import annotations

from pathlib import Path

import fuzz_ipc
import pyarrow as pa
import pytest
from arrowloader import CorpusFormatError, TokenDataset

REGRESSIONS = sorted((Path(__file__).parent / "fuzz_regressions").glob("*.ipc"))


def test_there_are_regressions() -> None:
    assert len(REGRESSIONS) >= 6


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda path: path.stem)
def test_fuzz_finding_is_a_clear_error(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    assert fuzz_ipc.check_input(data).startswith("rejected")
    # The same bytes as a file, mapped and read: a CorpusFormatError naming it.
    copy = tmp_path / "finding.arrow"
    copy.write_bytes(data)
    for mmap in (True, False):
        with pytest.raises(CorpusFormatError, match=r"finding\.arrow"):
            TokenDataset(copy, label_column="label", mmap=mmap)


@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_seeds_are_read_as_pyarrow_reads_them(fmt: str) -> None:
    outcomes = [fuzz_ipc.check_input(data) for data in fuzz_ipc.seed_inputs(fmt)]
    # All accepted but the seed with nulls and the compressed one, which must be refused.
    assert outcomes.count("accepted") == len(outcomes) - 2, outcomes
    assert "rejected: nulls in the token column" in outcomes
    assert "rejected: buffers not stored in place" in outcomes


def test_the_oracle_catches_a_loader_that_lies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: rows served differently from pyarrow's are a finding."""
    seed = fuzz_ipc.seed_inputs("file")[0]

    original = TokenDataset.__getitem__

    def off_by_one(self: TokenDataset, index: int) -> dict:
        item = original(self, index)
        item["input_ids"] = item["input_ids"] + 1
        return item

    monkeypatch.setattr(TokenDataset, "__getitem__", off_by_one)
    with pytest.raises(fuzz_ipc.Finding, match="pyarrow's rows"):
        fuzz_ipc.check_input(seed)


@pytest.mark.parametrize("fmt", ["file", "stream"])
def test_short_seeded_run_finds_nothing(fmt: str, tmp_path: Path) -> None:
    report = fuzz_ipc.run_mutate(
        fmt, seconds=60, seed=11, artifacts=tmp_path, progress=lambda *_: None,
        max_executions=400,
    )
    assert report["executions"] == 400
    assert report["findings"] == []
    assert report["outcomes"].get("accepted", 0) > 20  # mutants do reach the loader
    assert report["outcomes"].get("rejected", 0) > 20


def test_mutations_keep_their_size_bound() -> None:
    import random

    rng = random.Random(3)
    data = fuzz_ipc.seed_inputs("stream")[0]
    for _ in range(200):
        data = fuzz_ipc.mutate(data, rng, max_size=2048) or data
        assert len(data) <= 2048
    assert isinstance(pa.py_buffer(data), pa.Buffer)
