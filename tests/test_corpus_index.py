"""The corpus index cache (corpus_index.py, Corpus(index_cache=...)) and the native token
prefix sums: an entry is written, reused and invalidated by every kind of change; a file
that changed is always checked in full, so corrupt bytes never slip through; pyarrow's
reading of the files is the oracle for rows and token counts."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import arrowloader.corpus
import numpy as np
import pyarrow as pa
import pytest
from arrowloader import _C, Corpus, CorpusFormatError, TokenDataset, corpus_index
from arrowloader.sources import open_ipc
from conftest import (
    COLUMN,
    WrittenCorpus,
    pyarrow_batches,
    pyarrow_rows,
    random_documents,
    write_corpus,
    write_tokens,
)

#: The racy window the tests run with: long enough for any timestamp tick, short enough
#: to wait out (the real 2 s one is tested on its own).
TEST_WINDOW_NS = 50_000_000


@pytest.fixture(autouse=True)
def short_racy_window(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A short racy window, and a cache folder of the test's own."""
    monkeypatch.setattr(corpus_index, "RACY_WINDOW_NS", TEST_WINDOW_NS)
    monkeypatch.setenv("ARROWLOADER_CACHE", str(tmp_path / "cache"))


def settle() -> None:
    """Waits out the racy window, so that facts taken from now on vouch for files
    written before."""
    time.sleep(TEST_WINDOW_NS / 1e9 * 1.5)


@pytest.fixture
def shards(tmp_path: Path, rng: np.random.Generator) -> WrittenCorpus:
    """Four files (one empty, IPC file and stream format), old enough to be vouched for."""
    written = write_corpus(tmp_path / "data", rng)
    settle()
    return written


def entry_of(folder: Path) -> dict:
    return json.loads((folder / corpus_index.ENTRY_NAME).read_text())


def open_cached(source: object, **kwargs: object) -> Corpus:
    corpus = Corpus(source, label_column="label", index_cache=True, **kwargs)
    # Whatever the cache did, the corpus reads as pyarrow does.
    assert corpus.num_rows == sum(f.num_rows for f in corpus.files)
    return corpus


def corpus_lengths(corpus: Corpus) -> list[list[int]]:
    ds_lengths = corpus.tokens.lengths(np.arange(corpus.num_rows, dtype=np.int64))
    return ds_lengths.tolist()


def pyarrow_lengths(paths: list[Path]) -> list[int]:
    return [len(row) for row in pyarrow_rows(paths)]


def keep_times(path: Path) -> os.stat_result:
    return path.stat()


def restore_times(path: Path, old: os.stat_result) -> None:
    """Puts mtime (and atime) back: only ctime and inode can tell the change then."""
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))


def test_entry_is_written_then_reused(shards: WrittenCorpus) -> None:
    folder = shards.paths[0].parent
    first = open_cached(folder)
    assert (first.checked_files, first.vouched_files) == (4, 0)
    assert first.tokens.checked_chunks == first.tokens.num_chunks
    assert first.index_entries_written == [folder / corpus_index.ENTRY_NAME]
    files = entry_of(folder)["files"]
    assert sorted(files) == sorted(p.name for p in shards.paths)
    for path in shards.paths:
        record = files[path.name]
        st = path.stat()
        assert (record["size"], record["mtime_ns"], record["inode"]) == (
            st.st_size,
            st.st_mtime_ns,
            st.st_ino,
        )
        assert record["rows"] == len(pyarrow_rows(path))
        assert record["record_batches"] == len(pyarrow_batches(path))
        assert record["columns"][COLUMN] == {
            "tokens": sum(pyarrow_lengths([path])),
            "offsets_valid": True,
        }

    second = open_cached(folder)
    assert (second.checked_files, second.vouched_files) == (0, 4)
    assert second.tokens.checked_chunks == 0
    assert second.index_entries_written == []  # nothing changed, nothing written
    assert corpus_lengths(second) == pyarrow_lengths(shards.paths)
    assert second.num_tokens == first.num_tokens


def test_off_by_default(shards: WrittenCorpus) -> None:
    folder = shards.paths[0].parent
    corpus = Corpus(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (4, 0)
    assert not (folder / corpus_index.ENTRY_NAME).exists()
    open_cached(folder)
    # An entry is only read when asked for.
    assert Corpus(folder).checked_files == 4


def test_touched_file_is_checked_again(shards: WrittenCorpus) -> None:
    folder = shards.paths[0].parent
    open_cached(folder)
    touched = shards.paths[2]
    st = touched.stat()
    # Back in time: an mtime in the future would keep the file "racy" until then.
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    settle()
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (1, 3)
    assert corpus.index_entries_written == [folder / corpus_index.ENTRY_NAME]
    assert entry_of(folder)["files"][touched.name]["mtime_ns"] == touched.stat().st_mtime_ns
    # The rewritten entry vouches for the touched file too.
    assert open_cached(folder).vouched_files == 4


def test_same_size_rewrite_with_old_mtime_is_checked(
    shards: WrittenCorpus, rng: np.random.Generator
) -> None:
    folder = shards.paths[0].parent
    open_cached(folder)
    target = shards.paths[2]  # IPC file format, several record batches
    old = keep_times(target)
    documents = pyarrow_rows(target)
    changed = [[(t + 1) % 1000 for t in doc] for doc in documents]  # same lengths
    write_tokens(
        target,
        changed,
        num_batches=len(pyarrow_batches(target)),
        labels=[0] * len(changed),
    )
    assert target.stat().st_size == old.st_size
    assert target.stat().st_ino == old.st_ino
    restore_times(target, old)
    assert target.stat().st_mtime_ns == old.st_mtime_ns
    settle()
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (1, 3)
    assert entry_of(folder)["files"][target.name]["ctime_ns"] == target.stat().st_ctime_ns


def test_replaced_file_is_checked(shards: WrittenCorpus, tmp_path: Path) -> None:
    folder = shards.paths[0].parent
    open_cached(folder)
    target = shards.paths[3]
    old = keep_times(target)
    copy = tmp_path / "copy.arrow"
    shutil.copyfile(target, copy)
    restore_times(copy, old)
    os.replace(copy, target)  # same bytes, same size and mtime; another inode
    assert target.stat().st_ino != old.st_ino
    settle()
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (1, 3)
    assert entry_of(folder)["files"][target.name]["inode"] == target.stat().st_ino


def test_added_and_removed_files(shards: WrittenCorpus, rng: np.random.Generator) -> None:
    folder = shards.paths[0].parent
    open_cached(folder)
    added = write_tokens(folder / "shard-9.arrow", [[1, 2, 3], [4]], labels=[0, 1])
    settle()
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (1, 4)
    assert added.name in entry_of(folder)["files"]

    shards.paths[1].unlink()
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (0, 4)
    assert corpus.index_entries_written == [folder / corpus_index.ENTRY_NAME]
    assert sorted(entry_of(folder)["files"]) == sorted(
        p.name for p in [*shards.paths[:1], *shards.paths[2:], added]
    )


def one_batch_file(path: Path, documents: list[list[int]]) -> Path:
    """An IPC file of one record batch of ``documents`` (list<int32>)."""
    return write_tokens(path, documents, num_batches=1)


def offsets_position(path: Path) -> int:
    """Where the first record batch's int32 list offsets start in the file."""
    opened = open_ipc(path)
    array = opened.batches[0].column(opened.schema.get_field_index(COLUMN))
    return array.buffers()[1].address - opened.map_begin + 4 * array.offset


def corrupt_in_place(path: Path, row: int, value: int) -> None:
    """Overwrites list offset ``row`` in place: same file, same size, same first and
    last offsets (so the same token count)."""
    position = offsets_position(path) + 4 * row
    with open(path, "r+b") as f:
        f.seek(position)
        f.write(struct.pack("<i", value))


def test_corrupt_rewrite_after_caching_is_caught(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    documents = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    path = one_batch_file(folder / "a.arrow", documents)
    one_batch_file(folder / "b.arrow", documents)
    settle()
    assert Corpus(folder, index_cache=True).checked_files == 2
    old = keep_times(path)
    corrupt_in_place(path, 2, 9)  # offsets 0 3 9 6 ...: decrease at row 2
    restore_times(path, old)
    with pytest.raises(CorpusFormatError, match=r"a\.arrow: column 'input_ids' row 2"):
        Corpus(folder, index_cache=True)
    # The failed open wrote nothing; the entry still describes the good files.
    assert entry_of(folder)["files"]["a.arrow"]["ctime_ns"] == old.st_ctime_ns
    with pytest.raises(CorpusFormatError, match="list offsets decrease"):
        Corpus(folder, index_cache=True)


def test_entry_that_lies_about_a_file_does_not_hide_corruption(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    documents = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    path = one_batch_file(folder / "a.arrow", documents)
    settle()
    Corpus(folder, index_cache=True)
    # Corrupt the file, then make its entry match the new facts (a hand-edited or
    # otherwise wrong entry) but with the token count it had: the cross-check of
    # tokens cannot see an interior offset, so the facts must; here the last offset
    # moves too, and the file is checked in full.
    with open(path, "r+b") as f:
        f.seek(offsets_position(path) + 4 * len(documents))
        f.write(struct.pack("<i", 9))  # last offset 10 -> 9: tokens 10 -> 9
    corrupt_in_place(path, 2, 9)
    time.sleep(TEST_WINDOW_NS / 1e9 * 1.5)
    entry = entry_of(folder)
    st = path.stat()
    record = entry["files"]["a.arrow"]
    record.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
    record.update(inode=st.st_ino, device=st.st_dev, checked_ns=time.time_ns())
    (folder / corpus_index.ENTRY_NAME).write_text(json.dumps(entry))
    with pytest.raises(CorpusFormatError, match="row 2: list offsets decrease"):
        Corpus(folder, index_cache=True)


def test_recently_written_files_are_not_vouched_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, rng: np.random.Generator
) -> None:
    # The real window: files written a moment ago may change again within the same
    # timestamp tick, so their records vouch for nothing yet.
    monkeypatch.setattr(corpus_index, "RACY_WINDOW_NS", 2_000_000_000)
    written = write_corpus(tmp_path / "data", rng)
    folder = written.paths[0].parent
    assert open_cached(folder).checked_files == 4
    again = open_cached(folder)
    assert (again.checked_files, again.vouched_files) == (4, 0)


def test_read_only_folder_falls_back_to_the_cache_folder(
    shards: WrittenCorpus, tmp_path: Path
) -> None:
    folder = shards.paths[0].parent
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: chmod does not make the folder read-only")
        first = open_cached(folder)
        cached = corpus_index.cache_entry_paths(folder)[1]
        assert cached.parent == tmp_path / "cache" / corpus_index.CACHE_SUBFOLDER
        assert first.index_entries_written == [cached]
        assert not (folder / corpus_index.ENTRY_NAME).exists()
        assert open_cached(folder).vouched_files == 4
    finally:
        folder.chmod(0o755)


def test_unwritable_entry_falls_back_to_the_cache_folder(
    shards: WrittenCorpus, tmp_path: Path
) -> None:
    # Works as root too: a folder where the entry would go makes its rename fail.
    folder = shards.paths[0].parent
    (folder / corpus_index.ENTRY_NAME).mkdir()
    first = open_cached(folder)
    cached = corpus_index.cache_entry_paths(folder)[1]
    assert cached.parent == tmp_path / "cache" / corpus_index.CACHE_SUBFOLDER
    assert first.index_entries_written == [cached]
    assert json.loads(cached.read_text())["folder"] == str(folder)
    assert not list(folder.glob("*.tmp"))  # the temporary file was removed
    second = open_cached(folder)
    assert (second.checked_files, second.vouched_files) == (0, 4)
    assert second.index_entries_written == []


def test_explicit_cache_folder(shards: WrittenCorpus, tmp_path: Path) -> None:
    folder = shards.paths[0].parent
    where = tmp_path / "entries"
    first = Corpus(folder, index_cache=where)
    assert [p.parent for p in first.index_entries_written] == [where]
    assert not (folder / corpus_index.ENTRY_NAME).exists()
    assert Corpus(folder, index_cache=where).vouched_files == 4
    assert Corpus(folder, index_cache=True).vouched_files == 0  # another place


def test_unreadable_entry_is_ignored_and_rewritten(shards: WrittenCorpus) -> None:
    folder = shards.paths[0].parent
    open_cached(folder)
    (folder / corpus_index.ENTRY_NAME).write_text("{not json")
    corpus = open_cached(folder)
    assert (corpus.checked_files, corpus.vouched_files) == (4, 0)
    assert entry_of(folder)["format"] == corpus_index.ENTRY_FORMAT
    assert open_cached(folder).vouched_files == 4


def test_records_per_token_column(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    extra = {"other_ids": pa.array([[5], [6, 7], []], type=pa.list_(pa.int64()))}
    write_tokens(folder / "a.arrow", [[1], [2, 3], [4, 5, 6]], extra=extra)
    settle()
    assert Corpus(folder, index_cache=True).checked_files == 1
    other = Corpus(folder, "other_ids", index_cache=True)
    assert (other.checked_files, other.num_tokens) == (1, 3)
    columns = entry_of(folder)["files"]["a.arrow"]["columns"]
    assert {name: c["tokens"] for name, c in columns.items()} == {"input_ids": 6, "other_ids": 3}
    assert Corpus(folder, index_cache=True).vouched_files == 1
    assert Corpus(folder, "other_ids", index_cache=True).vouched_files == 1


def test_token_dataset_passes_index_cache(shards: WrittenCorpus) -> None:
    folder = shards.paths[0].parent
    TokenDataset(folder, index_cache=True)
    ds = TokenDataset(folder, index_cache=True)
    assert ds.corpus.vouched_files == 4
    copy = pickle.loads(pickle.dumps(ds))  # what a worker process receives
    assert copy.corpus.vouched_files == 4
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == shards.documents


def test_token_offsets_are_prefix_sums(tmp_path: Path, rng: np.random.Generator) -> None:
    written = write_corpus(tmp_path / "data", rng, docs_per_file=(13, 0, 17, 7))
    corpus = Corpus(written.paths[0].parent)
    # A sliced chunk too: offsets that do not start at 0 or at the buffer's start.
    sliced = pa.array(written.documents, type=pa.list_(pa.int32())).slice(5, 20)
    corpus.tokens.add_chunk(*sliced.__arrow_c_array__(), "sliced", 0)
    lengths = [len(doc) for doc in written.documents] + [
        len(doc) for doc in written.documents[5:25]
    ]
    offsets = corpus.tokens.token_offsets()
    assert offsets.dtype == np.int64
    assert offsets.tolist() == [0, *np.cumsum(lengths).tolist()]
    assert offsets[-1] == corpus.num_tokens
    assert not offsets.flags.writeable
    assert corpus.tokens.token_offsets() is not offsets  # a new view ...
    assert np.shares_memory(corpus.tokens.token_offsets(), offsets)  # ... of the same sums
    with pytest.raises(RuntimeError, match="frozen"):
        corpus.tokens.add_chunk(*sliced.__arrow_c_array__(), "late", 0)
    empty = _C.TokenColumn("x")
    assert empty.token_offsets().tolist() == [0]


def patched_list_array(path: Path, offsets: list[int]) -> pa.Array:
    """The token column of a one-batch file of four values whose list offsets were
    overwritten with ``offsets`` (corruption pyarrow's writer refuses to write; its IPC
    reader takes offsets on trust)."""
    one_batch_file(path, [[1, 2], [3, 4]][: len(offsets) - 1])
    with open(path, "r+b") as f:
        f.seek(offsets_position(path))
        f.write(np.array(offsets, dtype="<i4").tobytes())
    opened = open_ipc(path)
    return opened.batches[0].column(opened.schema.get_field_index(COLUMN))


def test_unchecked_chunks_keep_the_cheap_checks(tmp_path: Path) -> None:
    column = _C.TokenColumn(COLUMN)
    decreasing = patched_list_array(tmp_path / "f.arrow", [0, 3, 2])
    column.add_chunk(*decreasing.__arrow_c_array__(), "f.arrow", 0, check_offsets=False)
    assert column.checked_chunks == 0
    with pytest.raises(CorpusFormatError, match=r"f\.arrow: column 'input_ids' row 1"):
        column.check_chunk_offsets(0, 1)
    # First offset negative, last past the values, last before the first: caught without
    # the pass over the offsets.
    for k, bad in enumerate(([-1, 2, 4], [0, 2, 5], [3, 4, 2])):
        array = patched_list_array(tmp_path / f"g{k}.arrow", bad)
        with pytest.raises(CorpusFormatError, match="the file is corrupt"):
            column.add_chunk(*array.__arrow_c_array__(), "g.arrow", 0, check_offsets=False)
    assert column.num_chunks == 1


def test_unchecked_rows_are_never_read_outside_their_values(tmp_path: Path) -> None:
    """An entry that wrongly vouches for a file (forged, or its file edited with its times
    reset) skips the offsets pass; the middle offsets it lets through are still never
    followed outside the values: reading such a row raises, the others are served."""
    column = _C.TokenColumn(COLUMN)
    # Four values; row 0 claims 6 of them (past the end), row 1 ends before it starts.
    array = patched_list_array(tmp_path / "f.arrow", [0, 6, 4])
    column.add_chunk(*array.__arrow_c_array__(), "f.arrow", 0, check_offsets=False)
    for row in (0, 1):
        with pytest.raises(CorpusFormatError, match=rf"f\.arrow: column 'input_ids' row {row}"):
            column.lengths(np.array([row], dtype=np.int64))
    assembler = _C.PaddedBatchAssembler(column)
    out = np.zeros((1, 4), dtype=np.int64)
    with pytest.raises(CorpusFormatError, match="do not lie within the 4 values"):
        assembler.assemble(np.array([1], dtype=np.int64), out)
    with pytest.raises(CorpusFormatError, match="row 0"):
        assembler.width(np.array([0], dtype=np.int64))
    good = _C.TokenColumn(COLUMN)
    array = patched_list_array(tmp_path / "g.arrow", [0, 1, 4])
    good.add_chunk(*array.__arrow_c_array__(), "g.arrow", 0, check_offsets=False)
    _C.PaddedBatchAssembler(good).assemble(np.array([1], dtype=np.int64), out[:, :3])
    assert out[0, :3].tolist() == array[1].as_py() == [2, 3, 4]  # pyarrow's row 1


def test_index_keeps_one_arrow_array_per_file(tmp_path: Path, rng: np.random.Generator) -> None:
    # Files of 1 to 4 record batches, IPC file and stream format, one of empty batches.
    written = write_corpus(tmp_path / "data", rng)
    corpus = Corpus(written.paths[0].parent)
    assert corpus.tokens.num_chunks == 1 + 2 + 3 + 4
    assert corpus.tokens.held_arrays == 4  # the four mappings, no record batch
    gc.collect()
    lengths = corpus.tokens.lengths(np.arange(corpus.num_rows, dtype=np.int64))
    assert lengths.tolist() == [len(doc) for doc in written.documents]
    ds = TokenDataset(written.paths[0].parent)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == written.documents

    # A chunk outside the held region (here: in the heap) keeps its own array.
    heap = pa.array([[1, 2], [3]], type=pa.list_(pa.int32()))
    corpus.tokens.add_chunk(*heap.__arrow_c_array__(), "heap", 0)
    assert corpus.tokens.held_arrays == 5
    del heap
    gc.collect()
    last_two = np.array([corpus.num_rows - 2, corpus.num_rows - 1], dtype=np.int64)
    assert corpus.tokens.lengths(last_two).tolist() == [2, 1]


# --- content digest ----------------------------------------------------------------------


@pytest.mark.parametrize("sums_first", [False, True], ids=["row lengths", "prefix sums"])
def test_content_digest_is_the_documented_hash_of_pyarrow_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sums_first: bool
) -> None:
    """Both ways of computing it (row by row, or from the prefix sums packed datasets
    build) hash files and lengths as read by pyarrow, in blocks of any size."""
    monkeypatch.setattr(arrowloader.corpus, "_DIGEST_BLOCK_ROWS", 7)
    docs = random_documents(np.random.default_rng(11), 60, max_tokens=30)
    paths = [write_tokens(tmp_path / "a.arrow", docs[:25]),
             write_tokens(tmp_path / "b.arrow", docs[25:])]
    expected = hashlib.sha256(b"arrowloader-corpus/1")
    first = 0
    for path in paths:
        rows = pyarrow_rows(path)
        expected.update(np.array([first, len(rows)], dtype="<i8").tobytes())
        first += len(rows)
    expected.update(np.array([len(r) for r in pyarrow_rows(paths)], dtype="<i8").tobytes())
    corpus = Corpus(paths)
    if sums_first:
        corpus.tokens.token_offsets()
    assert corpus.tokens.has_token_offsets == sums_first
    assert corpus.content_digest() == expected.hexdigest()


# --- reading ahead of the files being opened ---------------------------------------------


def test_open_asks_for_the_head_and_tail_of_the_files_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = random_documents(np.random.default_rng(3), 40, max_tokens=50)
    paths = [write_tokens(tmp_path / f"s{k}.arrow", docs[10 * k : 10 * k + 10])
             for k in range(4)]
    monkeypatch.setattr(arrowloader.corpus._ReadAhead, "AHEAD", 2)
    monkeypatch.setattr(arrowloader.corpus._ReadAhead, "HEAD", 512)
    monkeypatch.setattr(arrowloader.corpus._ReadAhead, "TAIL", 256)
    calls: list[tuple[int, int, int]] = []
    fadvise = os.posix_fadvise
    inodes = {os.stat(p).st_ino: k for k, p in enumerate(paths)}

    def record(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_WILLNEED
        calls.append((inodes[os.fstat(fd).st_ino], offset, length))
        fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", record)
    corpus = Corpus(paths)
    expected = []
    for k, path in enumerate(paths):
        size = os.path.getsize(path)
        assert size > 512 + 256  # so each file gets both hints
        expected += [(k, 0, 512), (k, size - 256, 256)]
    assert calls == expected
    assert corpus.num_rows == len(pyarrow_rows(paths)) == 40


def test_reading_ahead_is_only_a_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files the read-ahead cannot open are opened as usual; a single file is not advised."""
    docs = random_documents(np.random.default_rng(4), 20, max_tokens=30)
    paths = [write_tokens(tmp_path / "a.arrow", docs[:12]),
             write_tokens(tmp_path / "b.arrow", docs[12:])]

    advised: list[object] = []
    fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda *args: advised.append(args) or fadvise(*args))
    Corpus(paths[0])
    assert advised == []
    Corpus(paths)
    assert len(advised) == 2  # (the files are smaller than the head that is advised)

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "refused")

    monkeypatch.setattr(os, "posix_fadvise", refuse)  # a kernel that rejects the hint
    assert Corpus(paths).num_rows == 20
    monkeypatch.setattr(os, "open", refuse)
    corpus = Corpus(paths)
    assert len(advised) == 2
    assert corpus.tokens.lengths(np.arange(20, dtype=np.int64)).tolist() == [
        len(row) for row in pyarrow_rows(paths)
    ]
