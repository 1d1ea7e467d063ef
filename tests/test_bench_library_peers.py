"""The peers of other loading libraries (arrowloader.bench.grain_peers, spdl_peers,
dataloader_rs_peers over arrowloader.bench.sampled_peers): each row yields exactly the
batches of torch's own DataLoader over the same items, across an epoch boundary, in W1 and
W2; the seeded batch order is torch's BatchSampler's; a missing library is a skipped row
with the line that installs it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from arrowloader.bench import dataloader_rs_peers, grain_peers, litdata_peers, spdl_peers
from arrowloader.bench.harness import seeded_sampler
from arrowloader.bench.libraries import LIBRARY_FAMILIES
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.sampled_peers import KEPT_BATCHES, SeededBatches
from arrowloader.bench.token_stream import TokenStreamFile, write_token_stream
from arrowloader.bench.torch_peers import torch_pack_peers, torch_pad_peers
from arrowloader.cli import main
from bench_corpora import W2, assert_same_batches, first_batches
from torch.utils.data import BatchSampler

#: Batches compared: past the first epoch of the small corpus in W1 (10 batches of 32,
#: the last one short) and in W2 (9 batches of 8 blocks).
BATCHES = 12
#: The module of each library, and the module it imports.
LIBRARIES = {
    "grain": (grain_peers, "grain"),
    "spdl": (spdl_peers, "spdl"),
    "dataloader-rs": (dataloader_rs_peers, "dataloader_rs"),
}


@pytest.fixture(scope="module")
def small_stream(small_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> TokenStreamFile:
    path = tmp_path_factory.mktemp("stream") / "small.bin"
    write_token_stream(small_corpus, W2.column, W2.eos_token_id, path)
    return TokenStreamFile(path, np.dtype(np.uint16))


@pytest.fixture(scope="module")
def torch_w1_batches(small_corpus: Path) -> list[dict]:
    """torch's DataLoader (workers 0) over the documents: the oracle of W1's rows."""
    return first_batches(torch_pad_peers(small_corpus, PadOptions())[0], 1, BATCHES)


@pytest.fixture(scope="module")
def torch_w2_batches(small_corpus: Path) -> list[dict]:
    """torch's DataLoader (workers 0) over blocks built from the documents (not the
    stream file the rows read): the oracle of W2's rows."""
    documents = next(
        p for p in torch_pack_peers(small_corpus, W2)
        if p.name == "torch from documents (workers 0)"
    )
    return first_batches(documents, 2, BATCHES)


@pytest.mark.parametrize("family", list(LIBRARIES))
def test_library_rows_yield_torchs_batches(
    family: str,
    small_corpus: Path,
    small_stream: TokenStreamFile,
    torch_w1_batches: list[dict],
    torch_w2_batches: list[dict],
) -> None:
    module, importable = LIBRARIES[family]
    pytest.importorskip(importable)
    assert module.FAMILY == family and not module.missing_modules()

    pad_rows = module.pad_peers(small_corpus, PadOptions())
    assert pad_rows and all(row.family == family for row in pad_rows)
    for row in pad_rows:
        assert row.name.startswith(f"{family} (")
        assert_same_batches(first_batches(row, 1, BATCHES), torch_w1_batches)

    pack_rows = module.pack_peers(small_corpus, W2, small_stream)
    assert pack_rows and all(row.reads_stream for row in pack_rows)
    for row in pack_rows:
        assert row.name.startswith(f"{family} flat stream uint16 (")
        assert_same_batches(first_batches(row, 2, BATCHES), torch_w2_batches)


@pytest.mark.parametrize(("items", "batch_size", "drop_last"), [(10, 3, False), (10, 3, True)])
def test_seeded_batches_are_torchs_batch_samplers(
    items: int, batch_size: int, drop_last: bool
) -> None:
    batches = SeededBatches(items, batch_size, drop_last, seed=5)
    sampler = BatchSampler(seeded_sampler(range(items), 5), batch_size, drop_last)
    expected = [b for _ in range(4) for b in sampler]  # four epochs, one generator
    assert batches.batches_per_epoch == (3 if drop_last else 4)
    assert [batches[j].tolist() for j in range(len(expected))] == expected
    iterated = [b.tolist() for b, _ in zip(batches, range(len(expected)))]
    assert iterated == expected
    # A copy in a worker process draws the same epochs.
    clone = SeededBatches.__new__(SeededBatches)
    clone.__setstate__(batches.__getstate__())
    assert [clone[j].tolist() for j in range(len(expected))] == expected


def test_seeded_batches_refuse_what_they_cannot_give() -> None:
    with pytest.raises(ValueError, match="no batches of 4 out of 0 items"):
        SeededBatches(0, 4, False, 0)
    with pytest.raises(ValueError, match="3 items make no full batch of 4"):
        SeededBatches(3, 4, True, 0)
    batches = SeededBatches(4, 4, False, 0)
    with pytest.raises(IndexError, match="out of range"):
        batches[len(batches)]
    batches[KEPT_BATCHES + 10]
    with pytest.raises(IndexError, match="epoch 0 was dropped"):
        batches[0]


@pytest.mark.parametrize("workload", ["pad", "pack"])
def test_missing_libraries_are_skipped_rows(
    workload: str,
    tiny_corpus: Path,
    isolated_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    skippable = {**LIBRARIES, "litdata": (litdata_peers, "litdata")}
    families = [*LIBRARY_FAMILIES[1:], "litdata"]  # torchdata's own test checks it
    for family in families:
        module, importable = skippable[family]
        monkeypatch.setattr(module, "missing_modules", lambda name=importable: [name])
    out = tmp_path / "bench.json"
    argv = ["bench", "--workload", workload, "--data", str(tiny_corpus), "--peers",
            ",".join(families), "--seconds", "0.1", "--repeats", "1", "--json", str(out),
            "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())["workloads"][workload]
    assert {row["family"] for row in report["rows"]} == {"arrowloader"}
    assert [s["peer"] for s in report["skipped"]] == families
    for family in families:
        module, importable = skippable[family]
        line = f"skipped {family}: {importable} not installed ({module.INSTALL_HINT})"
        assert line in printed
