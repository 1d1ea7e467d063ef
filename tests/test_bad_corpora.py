"""Every malformed corpus of bad_corpora.BAD_CASES, read three ways (memory-mapped, read
into memory with mmap=False, and from bytes), gives its documented outcome: a clear
ArrowLoaderError naming file, column and row, or pyarrow's own rows. Files cut at every
byte fail cleanly. Files changed after the open are caught at the next epoch and on
resume; the window that check leaves open (SIGBUS) is shown, and closed by mmap=False."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Union

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import (
    ArrowLoaderError,
    CorpusChangedError,
    CorpusFormatError,
    PackedDataset,
    TokenDataset,
)
from arrowloader.corpus import MEMORY_NAME
from bad_corpora import (
    BAD_CASES,
    CHANGES,
    NEGATIVE_DOCS,
    VOCAB_DOCS,
    BadCase,
    assert_names,
    truncations,
)
from conftest import pyarrow_rows, write_corpus, write_tokens

#: How a case's bytes reach the loader.
READ_MODES = ("mmap", "read", "memory")


def open_dataset(
    cls: type, source: Union[Path, list[Path]], mode: str, **options: Any
) -> Any:
    """``cls(source, **options)`` with the files read the ``mode`` way."""
    if mode == "read":
        options["mmap"] = False
    if mode == "memory":
        assert isinstance(source, Path)
        data = np.frombuffer(source.read_bytes(), dtype=np.uint8).copy()  # exact-size heap
        return cls(pa.py_buffer(data), **options)
    return cls(source, **options)


def served_rows(ds: TokenDataset) -> list[list[int]]:
    """Every document through the native loader (right padding, no truncation)."""
    rows = []
    for batch in arrowloader.DataLoader(ds, batch_size=2, num_workers=2):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            rows.append(ids[mask.bool()].tolist())
    return rows


def packed_stream(ds: PackedDataset) -> list[int]:
    """The tokens of every block of an unshuffled concat epoch, in order."""
    blocks = arrowloader.DataLoader(ds, batch_size=1, shuffle=False)
    return [t for batch in blocks for t in batch["input_ids"][0].tolist()]


@pytest.mark.parametrize("mode", READ_MODES)
@pytest.mark.parametrize("case", BAD_CASES, ids=lambda case: case.name)
def test_bad_corpus(tmp_path: Path, case: BadCase, mode: str) -> None:
    if mode == "memory" and not case.single_file:
        pytest.skip("several files")
    source = case.build(tmp_path / "corpus")
    culprit = source if isinstance(source, Path) else source[case.culprit]
    named = MEMORY_NAME if mode == "memory" else str(culprit)

    if case.error is None:
        expected = pyarrow_rows(source)  # the oracle: pyarrow reading the same bytes
        ds = open_dataset(TokenDataset, source, mode, **case.options)
        assert len(ds) == len(expected)
        assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == expected
        assert served_rows(ds) == expected
        packed = open_dataset(
            PackedDataset, source, mode, seq_len=3, eos_token_id=99, shuffle_documents=False
        )
        stream = [t for document in expected for t in [*document, 99]]
        blocks = len(stream) // 4  # seq_len + 1 tokens each; inputs are the first 3
        assert packed_stream(packed) == [t for b in range(blocks) for t in stream[4 * b :][:3]]
        return

    if case.at == "open":
        with pytest.raises(case.error) as info:
            open_dataset(TokenDataset, source, mode, **case.options)
    else:
        ds = open_dataset(TokenDataset, source, mode, **case.options)
        expected = pyarrow_rows(source)
        assert [ds[i]["input_ids"].tolist() for i in range(case.row)] == expected[: case.row]
        with pytest.raises(case.error):
            ds[case.row]
        with pytest.raises(case.error) as info:
            served_rows(ds)
    assert isinstance(info.value, ArrowLoaderError)
    assert_names(info.value, named, case.column, case.row)
    if case.match is not None:
        assert case.match in str(info.value)


@pytest.mark.parametrize("mode", READ_MODES)
@pytest.mark.parametrize(
    "case", [case for case in BAD_CASES if case.error is not None], ids=lambda case: case.name
)
def test_bad_corpus_error_carries_its_place(tmp_path: Path, case: BadCase, mode: str) -> None:
    """The error's ``path``, ``column`` and ``row`` are the file, column and row the case
    corrupted (None where the case is about the whole file or a record batch), whether
    the error was raised in Python, by the native open or on a native thread."""
    if mode == "memory" and not case.single_file:
        pytest.skip("several files")
    source = case.build(tmp_path / "corpus")
    culprit = source if isinstance(source, Path) else source[case.culprit]
    named = MEMORY_NAME if mode == "memory" else str(culprit)
    errors = []
    if case.at == "open":
        with pytest.raises(case.error) as info:
            open_dataset(TokenDataset, source, mode, **case.options)
        errors.append(info.value)
    else:
        ds = open_dataset(TokenDataset, source, mode, **case.options)
        for attempt in (lambda: ds[case.row], lambda: served_rows(ds)):
            with pytest.raises(case.error) as info:
                attempt()
            errors.append(info.value)
    for error in errors:
        assert (error.path, error.column, error.row) == (named, case.column, case.row)


def test_bad_cases_are_what_they_say(tmp_path: Path) -> None:
    """The corruptions are real: pyarrow reads the patched offsets without complaint, but
    its full validation rejects them (so the loader's checks are not redundant)."""
    checked = 0
    for case in BAD_CASES:
        if "offset" not in case.name:
            continue
        path = case.build(tmp_path / case.name.replace(" ", "-"))
        batches = pa.ipc.open_file(str(path))
        batch = batches.get_batch(1)
        with pytest.raises(pa.ArrowInvalid):
            batch.validate(full=True)
        checked += 1
    assert checked >= 7


@pytest.mark.parametrize("mode", ["mmap", "memory"])
@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_truncated_at_every_byte(tmp_path: Path, stream: bool, mode: str) -> None:
    """A file cut anywhere, even at a message boundary, is a CorpusFormatError: never a
    crash, and never a shorter corpus served as if whole."""
    documents = [[i] * (i % 5) for i in range(30)]
    path = write_tokens(tmp_path / "whole.arrow", documents, num_batches=3, stream=stream,
                        labels=list(range(30)))
    data = path.read_bytes()
    cut_path = tmp_path / "cut.arrow"
    tried = 0
    for k, cut in truncations(data):
        if mode == "memory":
            source: Any = cut
        else:
            cut_path.write_bytes(cut)
            source = cut_path
        with pytest.raises(CorpusFormatError):
            TokenDataset(source, label_column="label")
        tried = k + 1
    assert tried == len(data)
    assert [TokenDataset(data)[i]["input_ids"].tolist() for i in range(30)] == documents


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_bytes_at_a_misaligned_address(tmp_path: Path, stream: bool) -> None:
    """IPC bytes handed over at an odd address (a buffer sliced one byte in): every buffer
    is then misaligned, and the native side reads offsets as integers. A clear error, and
    the same bytes copied into a fresh buffer read as pyarrow reads them."""
    path = write_tokens(tmp_path / "c.arrow", [[1, 2], [3], [], [4, 5, 6]], stream=stream)
    data = path.read_bytes()
    odd = pa.py_buffer(b"\0" + data).slice(1)
    assert odd.address % 2 == 1 and odd.to_pybytes() == data
    with pytest.raises(CorpusFormatError, match="not aligned") as info:
        TokenDataset(odd)
    assert_names(info.value, MEMORY_NAME, "input_ids")
    ds = TokenDataset(pa.py_buffer(bytearray(data)))
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == pyarrow_rows(path)


def test_require_end_of_stream_false_reads_up_to_the_marker(tmp_path: Path) -> None:
    """The documented way out for streams written without a marker, or followed by bytes
    that are no part of them."""
    case = next(c for c in BAD_CASES if c.name == "two streams concatenated in one file")
    path = case.build(tmp_path)
    ds = TokenDataset(path, require_end_of_stream=False)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == pyarrow_rows(path)


# --- vocabulary --------------------------------------------------------------------------


@pytest.mark.parametrize("documents", [VOCAB_DOCS, NEGATIVE_DOCS], ids=["above", "negative"])
def test_packed_batches_check_the_vocabulary(tmp_path: Path, documents: list[list[int]]) -> None:
    path = write_tokens(tmp_path / "c.arrow", documents, value_type=pa.int64(), num_batches=2)
    bad_row = next(r for r, d in enumerate(documents) if any(not 0 <= t < 1000 for t in d))
    ds = PackedDataset(path, seq_len=4, eos_token_id=0, shuffle_documents=False,
                       vocab_size=1000)
    with pytest.raises(CorpusFormatError, match="outside the vocabulary") as info:
        list(arrowloader.DataLoader(ds, batch_size=1, num_workers=2))
    assert_names(info.value, path, "input_ids", bad_row)
    # Without the bound, the same corpus packs as written (pyarrow's rows, EOS between).
    free = PackedDataset(path, seq_len=4, eos_token_id=0, shuffle_documents=False)
    stream = [t for d in pyarrow_rows(path) for t in [*d, 0]]
    assert packed_stream(free) == [t for b in range(len(stream) // 5) for t in stream[5 * b :][:4]]


def test_vocabulary_bound_accepts_ids_just_below_it(tmp_path: Path) -> None:
    documents = [[0, 999], [998, 1, 2]]
    path = write_tokens(tmp_path / "c.arrow", documents, value_type=pa.uint16())
    ds = TokenDataset(path, vocab_size=1000, dtype=torch.int32)
    assert served_rows(ds) == documents
    assert TokenDataset(path, vocab_size=1000)[1]["input_ids"].tolist() == [998, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"vocab_size": 0}, ValueError),
        ({"vocab_size": -5}, ValueError),
        ({"vocab_size": 2.5}, TypeError),
        ({"vocab_size": True}, TypeError),
    ],
    ids=str,
)
def test_bad_vocab_size(tmp_path: Path, kwargs: dict[str, Any], error: type) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1]])
    with pytest.raises(error, match="vocab_size"):
        TokenDataset(path, **kwargs)
    with pytest.raises(error, match="vocab_size"):
        PackedDataset(path, seq_len=4, eos_token_id=0, **kwargs)


@pytest.mark.parametrize("name", ["eos_token_id", "pad_token_id"])
def test_special_ids_must_lie_in_the_vocabulary(tmp_path: Path, name: str) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1]])
    kwargs = {"eos_token_id": 1, name: 1000}
    with pytest.raises(ValueError, match=name):
        PackedDataset(path, seq_len=4, vocab_size=1000, **kwargs)


# --- files that change after the open -------------------------------------------------------


def change_file(path: Path, change: str) -> None:
    """Does ``change`` (one of bad_corpora.CHANGES) to ``path``."""
    data = path.read_bytes()
    if change == "replaced":
        fresh = path.with_name(path.name + ".new")
        fresh.write_bytes(data)
        os.replace(fresh, path)
    elif change == "cut short":
        os.truncate(path, len(data) // 2)
    elif change == "grown":
        with open(path, "ab") as f:
            f.write(b"\0" * 64)
    elif change == "rewritten in place":
        before = os.stat(path)
        with open(path, "r+b") as f:
            f.write(data)  # same bytes, same size, same inode: only the time tells
        # A rewrite comes later than the write it replaces; on a coarse clock both could
        # fall in one tick, so the later time is set explicitly.
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    elif change == "removed":
        path.unlink()
    else:
        raise ValueError(change)


CHANGE_WORDS = {
    "replaced": "replaced by another file",
    "cut short": "cut short",
    "grown": "grown",
    "rewritten in place": "modified",
    "removed": "removed",
}


@pytest.mark.parametrize("mmap", [True, False], ids=["mmap", "read"])
@pytest.mark.parametrize("change", CHANGES)
def test_changed_file_stops_the_next_epoch_and_resume(
    tmp_path: Path, rng: np.random.Generator, change: str, mmap: bool
) -> None:
    corpus = write_corpus(tmp_path / "corpus", rng)
    ds = TokenDataset(corpus.paths, mmap=mmap)
    loader = arrowloader.DataLoader(ds, batch_size=4, shuffle=True,
                                    generator=torch.Generator().manual_seed(1))
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert len([*it]) == len(loader) - 1  # an epoch started before the change ends
    packed = PackedDataset(corpus.paths, seq_len=8, eos_token_id=0, mmap=mmap)
    packed_loader = arrowloader.DataLoader(packed, batch_size=2, shuffle=True)
    packed_state = packed_loader.state_dict()

    victim = corpus.paths[2]
    change_file(victim, change)
    for attempt in (
        lambda: iter(loader),
        lambda: loader.load_state_dict(state),
        lambda: iter(packed_loader),
        lambda: packed_loader.load_state_dict(packed_state),
        lambda: iter(arrowloader.DataLoader(ds, batch_size=4, collate_fn=lambda b: b)),
    ):
        with pytest.raises(CorpusChangedError) as info:
            attempt()
        message = str(info.value)
        assert str(victim) in message and CHANGE_WORDS[change] in message, message
        assert isinstance(info.value, OSError)
        assert all(str(p) not in message for p in corpus.paths if p != victim)
    # A fresh open of the files as they are now is the way on.
    if change in ("replaced", "rewritten in place"):
        fresh = TokenDataset(corpus.paths, mmap=mmap)
        assert len(list(arrowloader.DataLoader(fresh, batch_size=4))) == len(loader)


def test_unchanged_files_pass_every_epoch(tmp_path: Path, rng: np.random.Generator) -> None:
    corpus = write_corpus(tmp_path / "corpus", rng)
    ds = TokenDataset(corpus.paths)
    loader = arrowloader.DataLoader(ds, batch_size=4)
    for _ in range(3):
        assert len(list(loader)) == len(loader)
    ds.check_files()


TRUNCATE_AND_READ = """
import os, sys
import arrowloader
ds = arrowloader.TokenDataset(sys.argv[1], mmap=sys.argv[2] == "mmap")
before = ds[len(ds) - 1]["input_ids"].tolist()
os.truncate(sys.argv[1], 0)
after = ds[len(ds) - 1]["input_ids"].tolist()
print("same" if after == before else "different")
"""


@pytest.mark.parametrize("mode", ["mmap", "read"])
def test_a_file_cut_short_during_an_epoch(tmp_path: Path, mode: str) -> None:
    """The window the epoch check leaves: a mapped file cut short while in use kills the
    process with SIGBUS on the next read of a page past its new end (the kernel's doing;
    no check can run between the cut and the read). mmap=False reads the file at open and
    is immune: it keeps serving what it read."""
    documents = [[i] * 500 for i in range(40)]  # 80 KB of tokens: many pages
    path = write_tokens(tmp_path / "c.arrow", documents)
    # Under a sanitizer (README, Hardening) the signal is left to the kernel too.
    env = dict(os.environ)
    for options in ("ASAN_OPTIONS", "TSAN_OPTIONS"):
        env[options] = env.get(options, "") + ":handle_sigbus=0"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRUNCATE_AND_READ), str(path), mode],
        capture_output=True, text=True, timeout=120, env=env,
    )
    if mode == "mmap":
        assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr)
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "same"


def test_reading_without_mmap_refuses_a_file_shrinking_while_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mmap=False reads exactly the size fstat gave; fewer bytes mean the file is being
    rewritten (simulated: fstat reports 64 bytes more than there are)."""
    path = write_tokens(tmp_path / "c.arrow", [[1, 2], [3]])
    real_fstat = os.fstat

    def larger(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        fields = list(st)
        fields[6] = st.st_size + 64  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr("arrowloader.sources.os.fstat", larger)
    with pytest.raises(arrowloader.CorpusFileError, match="shrank") as info:
        TokenDataset(path, mmap=False)
    assert str(path) in str(info.value)


def test_reading_without_mmap_names_an_unreadable_file(tmp_path: Path) -> None:
    from arrowloader.sources import open_ipc

    with pytest.raises(arrowloader.CorpusFileError, match="cannot read") as info:
        open_ipc(tmp_path, mmap=False)  # a folder is not a file to read
    assert str(tmp_path) in str(info.value)


def test_vocab_size_of_a_native_column() -> None:
    from arrowloader import _C

    column = _C.TokenColumn("input_ids")
    with pytest.raises(ValueError, match="vocab_size"):
        column.vocab_size = -1
    column.vocab_size = 10
    assert column.vocab_size == 10
    _C.PaddedBatchAssembler(column)  # an assembler freezes the column it reads
    with pytest.raises(RuntimeError, match="frozen"):
        column.vocab_size = 20
