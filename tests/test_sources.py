"""Opening corpora (sources.py, corpus.py): every kind of source, every token column type,
compared row by row with pyarrow reading the same files; zero-copy and resource release."""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import CorpusFileError, TokenDataset
from conftest import (
    TOKEN_TYPES,
    WrittenCorpus,
    pyarrow_batches,
    pyarrow_rows,
    random_documents,
    write_corpus,
    write_tokens,
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


def test_single_ipc_file_with_other_columns(tmp_path: Path, rng: np.random.Generator) -> None:
    documents = random_documents(rng, 25)
    path = write_tokens(
        tmp_path / "c.feather",
        documents,
        column="tokens",
        extra={"text": pa.array([f"doc {i}" for i in range(25)])},
        num_batches=4,
    )
    ds = TokenDataset(path, column="tokens")
    assert dataset_rows(ds) == pyarrow_rows(path, "tokens")


def test_folder_sorted_by_name_and_only_ipc_suffixes(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    folder = tmp_path / "shards"
    names = ["b.arrow", "a.ipc", "10.arrows", "9.feather", "c.arrow"]
    for k, name in enumerate(names):
        write_tokens(folder / name, random_documents(rng, 5 + k), num_batches=2, stream=k == 2)
    # Not taken: other suffixes, a folder named like a shard, a shard in a subfolder.
    write_tokens(folder / "z.parquet", random_documents(rng, 3))
    write_tokens(folder / "y.arrow.bak", random_documents(rng, 3))
    (folder / "notes.txt").write_text("not a shard")
    write_tokens(folder / "sub.arrow" / "inner.arrow", random_documents(rng, 3))

    ds = TokenDataset(folder)
    expected_order = [folder / name for name in sorted(names)]
    assert [f.path for f in ds.corpus.files] == expected_order
    assert dataset_rows(ds) == pyarrow_rows(expected_order)
    assert ds.stats()["files"] == len(names)
    # Global row numbering starts each file where the previous one ended.
    starts = [f.first_row for f in ds.corpus.files]
    sizes = [len(pyarrow_rows(p)) for p in expected_order]
    assert starts == [sum(sizes[:k]) for k in range(len(sizes))]


def test_glob(tmp_path: Path, rng: np.random.Generator) -> None:
    corpus = write_corpus(tmp_path, rng, docs_per_file=(4, 6, 5))
    write_tokens(tmp_path / "other-0.arrow", random_documents(rng, 9))
    ds = TokenDataset(str(tmp_path / "shard-*.arrow"))
    assert [f.path for f in ds.corpus.files] == corpus.paths
    assert dataset_rows(ds) == pyarrow_rows(corpus.paths)


def test_recursive_glob(tmp_path: Path, rng: np.random.Generator) -> None:
    paths = [
        write_tokens(tmp_path / "a" / "x.arrow", random_documents(rng, 4)),
        write_tokens(tmp_path / "b" / "c" / "y.arrow", random_documents(rng, 3)),
    ]
    ds = TokenDataset(str(tmp_path / "**" / "*.arrow"))
    assert dataset_rows(ds) == pyarrow_rows(sorted(paths))


def test_list_of_paths_keeps_its_order(tmp_path: Path, corpus: WrittenCorpus) -> None:
    order = [corpus.paths[2], corpus.paths[0], corpus.paths[3]]
    ds = TokenDataset(order)
    assert [f.path for f in ds.corpus.files] == order
    assert dataset_rows(ds) == pyarrow_rows(order)
    # Strings and paths, a folder among files, and the same file twice.
    mixed = [str(corpus.paths[3]), corpus.paths[0].parent, corpus.paths[3]]
    ds = TokenDataset(mixed)
    expected = pyarrow_rows([corpus.paths[3], *corpus.paths, corpus.paths[3]])
    assert dataset_rows(ds) == expected


def test_corpus_documents_and_labels(corpus: WrittenCorpus) -> None:
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


def test_hugging_face_save_to_disk(tmp_path: Path, rng: np.random.Generator) -> None:
    datasets = pytest.importorskip("datasets")
    documents = random_documents(rng, 60, max_tokens=12)
    features = datasets.Features(
        {"input_ids": datasets.List(datasets.Value("int32")), "label": datasets.Value("int64")}
    )
    hf = datasets.Dataset.from_dict(
        {"input_ids": documents, "label": list(range(60))}, features=features
    )
    folder = tmp_path / "hf"
    hf.save_to_disk(str(folder), num_shards=3)
    state = json.loads((folder / "state.json").read_text())
    shard_names = [entry["filename"] for entry in state["_data_files"]]
    assert len(shard_names) == 3

    ds = TokenDataset(folder, label_column="label")
    assert [f.path.name for f in ds.corpus.files] == shard_names
    assert all(f.format == "stream" for f in ds.corpus.files)
    expected = pyarrow_rows([folder / name for name in shard_names])
    assert expected == documents
    assert dataset_rows(ds) == expected
    assert [int(ds[i]["labels"]) for i in range(len(ds))] == list(range(60))

    # The order is state.json's, not the names': reverse it and compare with datasets.
    state["_data_files"].reverse()
    (folder / "state.json").write_text(json.dumps(state))
    ds = TokenDataset(folder)
    reloaded = datasets.load_from_disk(str(folder))
    assert dataset_rows(ds) == reloaded["input_ids"]
    assert dataset_rows(ds) != documents


def test_hugging_face_dataset_dict_names_its_splits(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]]})
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CorpusFileError, match="DatasetDict") as info:
        TokenDataset(tmp_path / "dd")
    message = str(info.value)
    assert str(tmp_path / "dd") in message
    assert "train" in message and "validation" in message
    # The split's own folder works.
    assert dataset_rows(TokenDataset(tmp_path / "dd" / "train")) == [[1, 2], [3]]


def test_save_to_disk_state_naming_a_file_outside_the_folder(tmp_path: Path) -> None:
    write_tokens(tmp_path / "outside.arrow", [[1]])
    folder = tmp_path / "hf"
    folder.mkdir()
    state = {"_data_files": [{"filename": "../outside.arrow"}]}
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(CorpusFileError, match="outside"):
        TokenDataset(folder)


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
