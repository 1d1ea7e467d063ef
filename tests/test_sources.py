"""Finding corpus files (sources.py): every kind of source (a file, a folder, globs, lists,
datasets save_to_disk folders), compared row by row with pyarrow reading the same
files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from arrowloader import CorpusFileError, CorpusFormatError, DataLoader, PackedDataset, TokenDataset
from arrowloader.corpus import MEMORY_NAME
from conftest import (
    WrittenCorpus,
    pyarrow_rows,
    random_documents,
    write_corpus,
    write_tokens,
)


def dataset_rows(ds: TokenDataset) -> list[list[int]]:
    """Every document of ``ds`` through ``ds[i]``."""
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


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


def test_a_leading_tilde_is_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rng: np.random.Generator, prepared: Path
) -> None:
    """``~`` expands in every kind of path source, as in a shell; a prepared folder named
    so is still read with its manifest."""
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = [write_tokens(tmp_path / "data" / f"{k}.arrow", random_documents(rng, 4 + k))
             for k in range(3)]
    shutil.copytree(prepared, tmp_path / "prepared")
    cases = {
        "~/data/0.arrow": paths[:1],
        "~/data": paths,
        "~/data/*.arrow": paths,
        "~/**/1.arrow": paths[1:2],
    }
    for source, expected in cases.items():
        assert [f.path for f in TokenDataset(source).corpus.files] == expected, source
    ds = TokenDataset(["~/data/2.arrow", Path("~/data/0.arrow")])
    assert [f.path for f in ds.corpus.files] == [paths[2], paths[0]]
    assert dataset_rows(ds) == pyarrow_rows([paths[2], paths[0]])
    from_home = TokenDataset(Path("~/prepared"))
    assert from_home.corpus.manifest is not None
    assert dataset_rows(from_home) == dataset_rows(TokenDataset(prepared))


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


def hf_token_dataset(datasets: Any, documents: list[list[int]]) -> Any:
    """A ``datasets.Dataset`` in memory of ``documents`` (int32 ids), a label per row and
    a text column arrowloader does not read."""
    features = datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")),
        "label": datasets.Value("int64"),
        "text": datasets.Value("string"),
    })
    return datasets.Dataset.from_dict(
        {"input_ids": documents, "label": list(range(len(documents))),
         "text": [f"doc {i}" for i in range(len(documents))]},
        features=features,
    )


def test_datasets_dataset_and_pyarrow_table_in_memory(rng: np.random.Generator) -> None:
    """A ``datasets.Dataset`` built in memory and a ``pyarrow.Table`` are sources: rows
    and labels as the library itself gives them."""
    datasets = pytest.importorskip("datasets")
    hf = hf_token_dataset(datasets, random_documents(rng, 40, max_tokens=12))
    ds = TokenDataset(hf, label_column="label")
    assert dataset_rows(ds) == hf["input_ids"]
    assert [int(ds[i]["labels"]) for i in range(len(ds))] == hf["label"]
    assert [str(f.path) for f in ds.corpus.files] == [MEMORY_NAME]

    table = pa.concat_tables([hf.data.table.slice(0, 15), hf.data.table.slice(15)])
    assert table.column("input_ids").num_chunks == 2
    ds = TokenDataset(table, label_column="label")
    assert dataset_rows(ds) == table.column("input_ids").to_pylist()
    batch = next(iter(DataLoader(ds, batch_size=40)))
    assert batch["labels"].tolist() == table.column("label").to_pylist()


def test_datasets_dataset_on_disk_is_read_from_its_files_in_place(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """``load_from_disk``'s dataset (and one ``.map()`` wrote, or with a column removed)
    is read from the Arrow files it maps, in their order, not copied into memory."""
    datasets = pytest.importorskip("datasets")
    documents = random_documents(rng, 60, max_tokens=12)
    hf_token_dataset(datasets, documents).save_to_disk(str(tmp_path / "hf"), num_shards=3)
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    ds = TokenDataset(loaded, label_column="label")
    files = [Path(entry["filename"]) for entry in loaded.cache_files]
    assert len(files) == 3
    assert [f.path for f in ds.corpus.files] == files
    assert all(f.identity is not None for f in ds.corpus.files)  # files, not bytes
    assert dataset_rows(ds) == loaded["input_ids"] == documents

    doubled = loaded.map(lambda row: {"input_ids": row["input_ids"] * 2})
    ds = TokenDataset(doubled)
    assert [f.path for f in ds.corpus.files] == [Path(doubled.cache_files[0]["filename"])]
    assert dataset_rows(ds) == [d * 2 for d in documents]
    assert dataset_rows(TokenDataset(loaded.remove_columns(["text", "label"]))) == documents
    twice = datasets.concatenate_datasets([loaded, loaded])
    assert dataset_rows(TokenDataset(twice)) == documents * 2

    packed = PackedDataset(loaded, seq_len=8, eos_token_id=0, shuffle_documents=False)
    assert [f.path for f in packed.corpus.files] == files


def test_datasets_dataset_with_an_indices_mapping_is_refused_with_the_fix(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """``shuffle``, ``select`` and ``filter`` leave the table as it was and add an indices
    mapping; reading the table would silently give the old order, so it is refused, and
    the fixes the message names give the dataset's own order."""
    datasets = pytest.importorskip("datasets")
    documents = random_documents(rng, 30, max_tokens=12)
    hf_token_dataset(datasets, documents).save_to_disk(str(tmp_path / "hf"))
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    data_file = loaded.cache_files[0]["filename"]
    in_memory = hf_token_dataset(datasets, documents)
    refused = {
        "shuffle": loaded.shuffle(seed=3),
        "select": loaded.select([5, 1, 2]),
        "filter": loaded.filter(lambda row: row["label"] % 2 == 0),
        "shuffle in memory": in_memory.shuffle(seed=3),
    }
    for what, hf in refused.items():
        with pytest.raises(CorpusFormatError) as info:
            TokenDataset(hf)
        message = str(info.value)
        assert "indices mapping" in message, what
        assert "flatten_indices()" in message and "save_to_disk('FOLDER')" in message
        assert "DataLoader(shuffle=True)" in message
        if what != "shuffle in memory":
            assert data_file in message and info.value.path == data_file

    shuffled = refused["shuffle"]
    assert shuffled["input_ids"] != documents
    assert dataset_rows(TokenDataset(shuffled.flatten_indices())) == shuffled["input_ids"]
    shuffled.save_to_disk(str(tmp_path / "shuffled"))
    assert dataset_rows(TokenDataset(tmp_path / "shuffled")) == shuffled["input_ids"]
    memory_shuffled = refused["shuffle in memory"].flatten_indices()
    assert dataset_rows(TokenDataset(memory_shuffled)) == memory_shuffled["input_ids"]


def test_datasets_dataset_changed_in_memory_from_its_files_is_refused(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    """A slice (``select(range(...))`` makes no indices mapping) or a renamed column
    changes the rows or columns in memory only: the file is not read in their place."""
    datasets = pytest.importorskip("datasets")
    documents = random_documents(rng, 30, max_tokens=12)
    hf_token_dataset(datasets, documents).save_to_disk(str(tmp_path / "hf"))
    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    data_file = loaded.cache_files[0]["filename"]
    for hf, column in [(loaded.select(range(10)), "input_ids"),
                       (loaded.rename_column("input_ids", "ids"), "ids")]:
        with pytest.raises(CorpusFormatError) as info:
            TokenDataset(hf, column=column)
        assert data_file in str(info.value) and "save_to_disk('FOLDER')" in str(info.value)
    sliced = loaded.select(range(10))
    sliced.save_to_disk(str(tmp_path / "sliced"))
    assert dataset_rows(TokenDataset(tmp_path / "sliced")) == documents[:10]

    with pytest.raises(CorpusFormatError, match=r"column 'tokens' not found") as info:
        TokenDataset(loaded, column="tokens")
    assert info.value.column == "tokens" and "'input_ids'" in str(info.value)
    with pytest.raises(CorpusFormatError, match=r"column 'tokens' not found"):
        TokenDataset(loaded.data.table, column="tokens")
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['train'\]"):
        TokenDataset(datasets.DatasetDict({"train": loaded}))


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


