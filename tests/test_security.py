"""Security: what comes with a corpus is data, never code, and never a way out of its
folder; a loader state is checked before it is trusted, and one taken over another corpus
is refused by what the corpus holds, not by where it lies."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import CorpusFileError, MixedDataset, PackedDataset, TokenDataset
from conftest import assert_batches_equal, pyarrow_rows, write_tokens

PACKAGE = Path(arrowloader.__file__).parent


# --- paths a save_to_disk state.json names ---------------------------------------------------


def save_to_disk_folder(tmp_path: Path, names: list[Any]) -> Path:
    folder = tmp_path / "hf"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    write_tokens(folder / "sub" / "inner.arrow", [[1, 2], [3]], stream=True)
    write_tokens(folder / "data-0.arrow", [[4]], stream=True)
    write_tokens(tmp_path / "outside.arrow", [[666]])
    link = folder / "link.arrow"
    if not link.exists():
        link.symlink_to(tmp_path / "outside.arrow")
    entries = [{"filename": name} for name in names]
    (folder / "state.json").write_text(json.dumps({"_data_files": entries}))
    return folder


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../outside.arrow", "outside the folder"),
        ("sub/../../outside.arrow", "outside the folder"),
        ("link.arrow", "outside the folder"),  # a link inside pointing out
        ("/OUTSIDE", "outside the folder"),  # absolute (replaced by the real path below)
        ("*.arrow", "missing"),  # names are names: no glob is expanded
        ("sub", "missing"),  # a folder is not a data file
        ("", "not a file name"),
        ("a\0b.arrow", "not a file name"),
        (5, "not a file name"),
        (None, "not a file name"),
        (["data-0.arrow"], "not a file name"),
    ],
    ids=repr,
)
def test_state_json_names_stay_inside_the_folder(tmp_path: Path, name: Any, message: str) -> None:
    if name == "/OUTSIDE":
        name = str(tmp_path / "outside.arrow")
    folder = save_to_disk_folder(tmp_path, ["data-0.arrow", name])
    with pytest.raises(CorpusFileError, match=message) as info:
        TokenDataset(folder)
    assert str(folder / "state.json") in str(info.value)


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "not json", json.dumps([1]), json.dumps({"_data_files": [1]})]
)
def test_state_json_that_is_not_a_state(tmp_path: Path, text: str) -> None:
    folder = save_to_disk_folder(tmp_path, [])
    (folder / "state.json").write_text(text)
    with pytest.raises(CorpusFileError, match="not a datasets save_to_disk state file"):
        TokenDataset(folder)


def test_state_json_names_inside_the_folder_are_read(tmp_path: Path) -> None:
    folder = save_to_disk_folder(tmp_path, ["sub/inner.arrow", "./data-0.arrow"])
    ds = TokenDataset(folder)
    expected = pyarrow_rows([folder / "sub" / "inner.arrow", folder / "data-0.arrow"])
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == expected == [[1, 2], [3], [4]]


# --- nothing in a corpus is run or unpickled -------------------------------------------------


class Touch:
    """Unpickling this creates a file: the proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_pickled_extension_type_metadata_is_never_unpickled(tmp_path: Path) -> None:
    """Arrow's old Python extension type carried a pickle in the field metadata, which
    pyarrow once unpickled on read (CVE-2023-47248). A corpus carrying one is read as the
    plain type it stores, and the pickle stays a string of bytes."""
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Touch(marker))
    metadata = {b"ARROW:extension:name": b"arrow.py_extension_type",
                b"ARROW:extension:metadata": payload}
    documents = [[1, 2, 3], [4], []]
    field = pa.field("input_ids", pa.list_(pa.int32()), metadata=metadata)
    schema = pa.schema([field], metadata={b"pandas": payload})
    batch = pa.record_batch([pa.array(documents, field.type)], schema=schema)
    paths = [tmp_path / "c.arrow", tmp_path / "c.arrows"]
    for path, new in zip(paths, (pa.ipc.new_file, pa.ipc.new_stream)):
        with pa.OSFile(str(path), "wb") as sink, new(sink, schema) as writer:
            writer.write_batch(batch)
    for path in paths:
        ds = TokenDataset(path)
        assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == documents
        packed = PackedDataset(path, seq_len=2, eos_token_id=0)
        blocks = (4 + 3) // 3  # 4 tokens and 3 EOS, in blocks of seq_len + 1
        assert len(list(arrowloader.DataLoader(packed, batch_size=1))) == blocks
        assert not marker.exists()
    # The control: these bytes do run code when unpickled, so the test above can fail.
    pickle.loads(payload)
    assert marker.exists()


def test_the_package_never_unpickles_evaluates_or_executes() -> None:
    """No module of the package can turn bytes into code: no pickle, marshal, eval, exec,
    torch.load or yaml.load (loader states are loaded by the caller; datasets pickle
    themselves by their arguments only for torch's worker processes)."""
    forbidden = re.compile(
        r"^\s*(import|from)\s+(pickle|marshal|dill|cloudpickle|shelve)\b"
        r"|\b(pickle|marshal)\.loads?\(|(?<![.\w])(eval|exec)\(|torch\.load\(|yaml\.load\("
    )
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 10
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if forbidden.search(line)
    ]
    assert found == []
    # The pattern does catch what it looks for.
    assert forbidden.search("state = pickle.load(f)") and forbidden.search("exec(code)")


# --- loader states -----------------------------------------------------------------------------


def corpus_with_lengths(folder: Path, lengths: list[int]) -> list[Path]:
    """Two files named alike in every folder, documents of the given lengths."""
    documents = [[(7 * k + j) % 100 for j in range(n)] for k, n in enumerate(lengths)]
    half = len(documents) // 2
    return [
        write_tokens(folder / "part-0.arrow", documents[:half]),
        write_tokens(folder / "part-1.arrow", documents[half:]),
    ]


LENGTHS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
SAME_SHAPE = [1, 3, 4, 1, 5, 9, 2, 6, 5, 3, 8, 5]  # same names, counts and total tokens


def loaders(paths: list[Path], kind: str) -> arrowloader.DataLoader:
    if kind == "token":
        ds: Any = TokenDataset(paths)
        return arrowloader.DataLoader(ds, batch_size=2, shuffle=True,
                                      generator=torch.Generator().manual_seed(4))
    ds = PackedDataset(paths, seq_len=3, eos_token_id=0)
    return arrowloader.DataLoader(ds, batch_size=2, shuffle=True)


def one_batch_in(paths: list[Path], kind: str) -> tuple[Any, Any, dict[str, Any]]:
    """(loader, its iterator after one batch, the state then)."""
    loader = loaders(paths, kind)
    it = iter(loader)
    next(it)
    return loader, it, loader.state_dict()


@pytest.mark.parametrize("kind", ["token", "packed"])
def test_state_from_another_corpus_is_refused_by_its_content(tmp_path: Path, kind: str) -> None:
    ours = corpus_with_lengths(tmp_path / "ours", LENGTHS)
    theirs = corpus_with_lengths(tmp_path / "theirs", SAME_SHAPE)
    loader, _, state = one_batch_in(ours, kind)
    other = loaders(theirs, kind)
    assert other.dataset.corpus.num_tokens == loader.dataset.corpus.num_tokens
    with pytest.raises(ValueError, match="another corpus") as info:
        other.load_state_dict(state)
    differing = str(info.value).split("(", 1)[1]
    assert "content:" in differing
    assert "documents:" not in differing and "files:" not in differing  # only what differs


@pytest.mark.parametrize("kind", ["token", "packed"])
def test_state_resumes_on_a_copy_of_the_corpus_elsewhere(tmp_path: Path, kind: str) -> None:
    """The fingerprint is about content, not place: a copy on another machine resumes."""
    original = corpus_with_lengths(tmp_path / "here", LENGTHS)
    copy = corpus_with_lengths(tmp_path / "there", LENGTHS)
    _, it, state = one_batch_in(original, kind)
    rest = list(it)
    resumed = loaders(copy, kind)
    resumed.load_state_dict(state)
    assert_batches_equal(list(resumed), rest)


def mixed_loader(paths: list[Path]) -> arrowloader.DataLoader:
    datasets = {
        "a": PackedDataset(paths[:1], seq_len=3, eos_token_id=0),
        "b": PackedDataset(paths[1:], seq_len=3, eos_token_id=0),
    }
    return arrowloader.DataLoader(MixedDataset(datasets, {"a": 1, "b": 1}), batch_size=2,
                                  shuffle=True)


@pytest.mark.parametrize("kind", ["token", "packed", "mixed"])
def test_state_loads_with_torch_load_weights_only(tmp_path: Path, kind: str) -> None:
    """A state is plain data and tensors: torch.load(weights_only=True), which unpickles
    nothing else, reads it back and the run continues exactly."""
    paths = corpus_with_lengths(tmp_path / "c", LENGTHS)
    make = (lambda: mixed_loader(paths)) if kind == "mixed" else (lambda: loaders(paths, kind))
    loader = make()
    it = iter(loader)
    next(it)
    torch.save({"loader": loader.state_dict()}, tmp_path / "ckpt.pt")
    rest = list(it)
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["loader"])
    assert_batches_equal(list(resumed)[: len(rest)], rest)


def malformed_states(good: dict[str, Any]) -> list[Any]:
    """States a checkpoint could hold by mistake or by malice."""
    bad: list[Any] = [None, "state", 42, [], {}, {"format": good["format"]},
                      {**good, "format": "arrowloader.DataLoader/0"},
                      {**good, "fingerprint": "x"}, {**good, "fingerprint": None},
                      {**good, "fingerprint": {**good["fingerprint"], "content": "0" * 64}}]
    for key, value in good.items():
        if key in ("format", "fingerprint"):
            continue
        for replacement in (None, "1", -1, True, 2**70, 1.5, [value], {"a": value}):
            bad.append({**good, key: replacement})
        missing = dict(good)
        del missing[key]
        bad.append(missing)
    return bad


@pytest.mark.parametrize("kind", ["token", "packed", "mixed"])
def test_malformed_states_are_refused_with_a_value_error(tmp_path: Path, kind: str) -> None:
    paths = corpus_with_lengths(tmp_path / "c", LENGTHS)
    make = (lambda: mixed_loader(paths)) if kind == "mixed" else (lambda: loaders(paths, kind))
    loader = make()
    want = list(loader)
    fresh = make()
    good = fresh.state_dict()
    for state in malformed_states(good):
        if state == good:  # a "replacement" that happens to be the value it had
            continue
        with pytest.raises((ValueError, TypeError)):
            fresh.load_state_dict(state)
    # A refused state leaves the loader as it was: it starts from the beginning.
    final = make()
    for state in malformed_states(good)[:12]:
        with pytest.raises((ValueError, TypeError)):
            final.load_state_dict(state)
    assert_batches_equal(list(final), want)


def test_index_cache_entry_is_data_too(tmp_path: Path) -> None:
    """An index cache entry is JSON read as facts; one that is not (code, a huge nesting,
    a wrong shape) is ignored and the files are checked in full."""
    paths = corpus_with_lengths(tmp_path / "c", LENGTHS)
    entry = tmp_path / "c" / ".arrowloader-index.json"
    for text in ("__import__('os').system('false')", "[" * 100_000, json.dumps({"files": 1}),
                 json.dumps({"format": "arrowloader-corpus-index", "version": 1,
                             "files": {"part-0.arrow": {"size": "big"}}})):
        entry.write_text(text)
        corpus = arrowloader.Corpus(paths, index_cache=True)
        assert corpus.checked_files == 2 and corpus.vouched_files == 0
    assert np.array_equal(
        corpus.tokens.lengths(np.arange(corpus.num_rows, dtype=np.int64)), LENGTHS
    )
    assert os.path.exists(entry)


def test_token_state_cannot_claim_more_batches_than_an_epoch_has(tmp_path: Path) -> None:
    paths = corpus_with_lengths(tmp_path / "c", LENGTHS)
    loader, _, state = one_batch_in(paths, "token")
    fresh = loaders(paths, "token")
    documents = len(loader.dataset)
    for samples in (documents + 1, 2**62):
        with pytest.raises(ValueError, match=f"beyond the {documents} samples"):
            fresh.load_state_dict({**state, "samples": samples})
    fresh.load_state_dict({**state, "samples": documents})  # the end of an epoch is fine
    # A state from before positions counted samples counts batches.
    old = {key: value for key, value in state.items() if key != "samples"}
    for batches in (len(loader) + 1, 2**62):
        with pytest.raises(ValueError, match="beyond the 6 batches"):
            fresh.load_state_dict({**old, "batches": batches})
    fresh.load_state_dict({**old, "batches": len(loader)})
