"""Opening corpora (corpus.py): every token column type, compared row by row with pyarrow
reading the same files; zero-copy and resource release; prepared corpus folders, read in
the order of their manifest and checked against it as they are opened."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import TokenDataset
from arrowloader.corpus import Corpus
from arrowloader.errors import CorpusFormatError
from arrowloader.manifest import read_manifest
from conftest import (
    TOKEN_TYPES,
    pyarrow_batches,
    pyarrow_rows,
    random_documents,
    write_corpus,
    write_tokens,
)
from prepared_corpus import (  # noqa: F401 (prepared_copy: the corpus fixture of this module)
    VOCAB,
    manifest_json,
    prepared_copy,
)


def dataset_rows(ds: TokenDataset) -> list[list[int]]:
    """Every document of ``ds`` through ``ds[i]``."""
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def loader_rows(ds: TokenDataset) -> list[list[int]]:
    """Every document of ``ds`` through the native loader (no truncation, right padding)."""
    rows = []
    for batch in arrowloader.DataLoader(ds, batch_size=4, num_workers=2):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            rows.append(ids[mask.bool()].tolist())
    return rows



def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))



def mappings_of(paths: list[Path]) -> int:
    """Lines of /proc/self/maps that map one of ``paths``."""
    names = {str(p.resolve()) for p in paths}
    with open("/proc/self/maps") as maps:
        return sum(1 for line in maps if line.split(maxsplit=5)[-1].strip() in names)



@pytest.mark.parametrize("large", [False, True], ids=["list", "large_list"])
@pytest.mark.parametrize("type_name", sorted(TOKEN_TYPES))
def test_token_types_match_pyarrow(
    tmp_path: Path, rng: np.random.Generator, type_name: str, large: bool
) -> None:
    value_type = TOKEN_TYPES[type_name]
    high = {"int32": 2**31 - 1, "int64": 2**62, "uint16": 2**16 - 1, "uint32": 2**32 - 1}
    documents = random_documents(rng, 60, max_tokens=30)
    # Ids spread over the whole value range, extremes included.
    documents[3] = [0, high[type_name], 1, high[type_name] - 1]
    if type_name.startswith("int"):
        documents[25] = [-1, -high[type_name] - 1, 7]
    # Three files (IPC file, stream, file), each split into several record batches.
    parts = [(0, 20, False, 4), (20, 45, True, 5), (45, 60, False, 3)]
    paths = [
        write_tokens(
            tmp_path / f"part-{k}.arrow",
            documents[begin:end],
            value_type=value_type,
            large=large,
            num_batches=num_batches,
            stream=stream,
        )
        for k, (begin, end, stream, num_batches) in enumerate(parts)
    ]
    expected = pyarrow_rows(paths)
    assert expected == documents  # the files hold what we meant to write
    assert all(len(pyarrow_batches(p)) >= 3 for p in paths)

    ds = TokenDataset(tmp_path)
    assert [f.format for f in ds.corpus.files] == ["file", "stream", "file"]
    assert len(ds) == len(expected)
    assert dataset_rows(ds) == expected
    assert ds.lengths.tolist() == [len(row) for row in expected]
    assert ds.stats()["tokens"] == sum(len(row) for row in expected)
    assert loader_rows(ds) == expected



def test_corpus_documents_and_labels(tmp_path: Path, rng: np.random.Generator) -> None:
    # conftest's corpus fixture, written here: this module's corpus is the prepared copy
    corpus = write_corpus(tmp_path / "corpus", rng)
    ds = TokenDataset(corpus.paths[0].parent, label_column="label")
    assert dataset_rows(ds) == corpus.documents
    assert [int(ds[i]["labels"]) for i in range(len(ds))] == pyarrow_rows(corpus.paths, "label")
    assert ds.corpus.num_rows == len(corpus.documents)
    assert ds.corpus.num_tokens == sum(len(d) for d in corpus.documents)



def test_zero_row_file(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "empty-table.arrow", [], num_batches=1)
    ds = TokenDataset(path)
    assert len(ds) == 0
    assert list(arrowloader.DataLoader(ds, batch_size=3)) == []



def test_file_descriptors_are_closed_after_open(tmp_path: Path, rng: np.random.Generator) -> None:
    corpus = write_corpus(tmp_path, rng, docs_per_file=(5, 6, 7, 8, 9))
    before = open_fds()
    ds = TokenDataset(corpus.paths)
    assert open_fds() == before
    assert dataset_rows(ds) == corpus.documents
    assert open_fds() == before



def test_files_are_mapped_while_open_and_unmapped_after(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    corpus = write_corpus(tmp_path, rng, docs_per_file=(5, 6, 7, 8, 9))
    assert mappings_of(corpus.paths) == 0
    ds = TokenDataset(corpus.paths)
    gc.collect()  # the Python-side file objects and readers are gone
    assert mappings_of(corpus.paths) >= len(corpus.paths)
    assert loader_rows(ds) == corpus.documents
    del ds
    gc.collect()
    assert mappings_of(corpus.paths) == 0



@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_tokens_are_read_in_place(tmp_path: Path, stream: bool) -> None:
    """Bytes changed in the file after opening show through: nothing was copied at open."""
    marker = [1_000_001, 1_000_002, 1_000_003, 1_000_004]
    documents = [[5, 6], [7], marker, [8, 9, 10]]
    path = write_tokens(tmp_path / "c.arrow", documents, num_batches=2, stream=stream)
    ds = TokenDataset(path)
    assert ds[2]["input_ids"].tolist() == marker
    gc.collect()

    # Overwrite the marker's bytes in place (same inode, same size), wherever pyarrow's
    # writer put copies of them.
    data = path.read_bytes()
    pattern = np.array(marker, dtype=np.int32).tobytes()
    replacement = [42, 43, 44, 45]
    assert pattern in data
    before = os.stat(path)
    with open(path, "r+b") as f:
        at = data.find(pattern)
        while at >= 0:
            f.seek(at)
            f.write(np.array(replacement, dtype=np.int32).tobytes())
            at = data.find(pattern, at + 1)
    # Set the mtime back, or the loader's epoch check would (rightly) refuse the file
    # (tests/test_bad_corpora.py); this test is about reading in place.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert ds[2]["input_ids"].tolist() == replacement
    (batch,) = list(arrowloader.DataLoader(ds, batch_size=4))
    assert batch["input_ids"][2].tolist() == replacement
    assert torch.equal(batch["input_ids"][0, :2], torch.tensor([5, 6]))



# --- prepared corpus folders --------------------------------------------------------------


def test_a_dataset_refuses_a_shard_that_disagrees_with_the_manifest(corpus: Path) -> None:
    data = manifest_json(corpus)
    data["shards"][1]["tokens"] += 3
    data["tokens"] += 3
    (corpus / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorpusFormatError, match=r"tokens, the manifest says .* validate"):
        arrowloader.PackedDataset(corpus, seq_len=16, eos_token_id=0)



def test_datasets_use_the_manifest(prepared: Path) -> None:
    """Files in manifest order (not name order), counts as the manifest says, and ids
    the loader writes checked against its vocabulary."""
    manifest = read_manifest(prepared)
    ds = arrowloader.TokenDataset(prepared)
    assert ds.corpus.manifest == manifest
    assert [f.path.name for f in ds.corpus.files] == [s.file for s in manifest.shards]
    assert (len(ds), ds.corpus.num_tokens) == (manifest.num_rows, manifest.num_tokens)
    with pytest.raises(ValueError, match=r"pad_token_id=1000 is outside the corpus vocab"):
        arrowloader.TokenDataset(prepared, pad_token_id=VOCAB)
    # The manifest records the EOS id (0): another one is refused before its range is.
    with pytest.raises(ValueError, match=r"eos_token_id=5000 disagrees with the manifest"):
        arrowloader.PackedDataset(prepared, seq_len=8, eos_token_id=5000)
    with pytest.raises(ValueError, match=r"pad_token_id=1001 is outside"):
        arrowloader.PackedDataset(prepared, seq_len=8, eos_token_id=0, pad_token_id=1001)



def test_the_manifest_order_governs(corpus: Path, bpe: Any) -> None:
    data = manifest_json(corpus)
    data["shards"] = data["shards"][::-1]
    (corpus / "manifest.json").write_text(json.dumps(data))
    expected = []
    for shard in data["shards"]:
        table = pa.ipc.open_file(pa.memory_map(str(corpus / shard["file"]))).read_all()
        expected += table.column("input_ids").to_pylist()
    ds = arrowloader.TokenDataset(corpus)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == expected



def test_a_shard_disagreeing_with_the_manifest_is_the_errors_path(corpus: Path) -> None:
    data = manifest_json(corpus)
    data["shards"][2]["rows"] -= 1
    data["documents"] -= 1
    (corpus / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CorpusFormatError, match="rows, the manifest says") as info:
        Corpus(corpus)
    error = info.value
    assert (error.path, error.column, error.row) == (
        str(corpus / data["shards"][2]["file"]), "input_ids", None)


def test_the_corpus_keeps_the_first_files_schema(tmp_path: Path, rng: np.random.Generator,
                                                 prepared: Path) -> None:
    first = write_tokens(tmp_path / "a.arrow", random_documents(rng, 5),
                         extra={"text": pa.array([f"doc {i}" for i in range(5)])})
    write_tokens(tmp_path / "b.arrow", random_documents(rng, 4))
    assert Corpus(tmp_path).schema == pyarrow_batches(first)[0].schema
    assert Corpus(pa.py_buffer(first.read_bytes())).schema == pyarrow_batches(first)[0].schema
    shard = prepared / manifest_json(prepared)["shards"][0]["file"]
    assert Corpus(prepared).schema == pyarrow_batches(shard)[0].schema
