"""Malformed corpora, written for the hardening tests.

Each :class:`BadCase` writes one kind of bad input with pyarrow (patching bytes where
pyarrow refuses to write the corruption, since its writer checks what its reader takes on
trust) and says what the loader must do with it: raise a given ArrowLoaderError naming the
file, the column and, where one is at fault, the row, at open or when the batch holding
the bad row is made; or accept it (the documented behaviour, e.g. zero-length documents)
and serve exactly pyarrow's rows. :data:`BAD_CASES` lists them all; README's "Hardening"
table is this list in words. :func:`truncations` cuts a file at every byte.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
import pyarrow as pa
import torch
from arrowloader import CorpusFormatError
from conftest import COLUMN, write_ipc, write_tokens

Source = Union[Path, list[Path]]

#: The end-of-stream marker of the Arrow IPC stream format.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


def nine_documents() -> list[list[int]]:
    """Nine short documents (some empty), distinct enough that any mix-up shows."""
    return [[i, i + 1, i + 2][: i % 4] for i in range(9)]


#: Two record batches: rows 0-3 and 4-8 of the file.
BOUNDS = [(0, 4), (4, 9)]


# --- building blocks ---------------------------------------------------------------------


def write_with_offsets(
    path: Path, offsets: list[int], num_values: int, *, large: bool = False
) -> Path:
    """A file whose second record batch (after 2 good rows) is a list array with these
    offsets over ``num_values`` values, built without validation by
    ``ListArray.from_buffers``."""
    offset_type = np.int64 if large else np.int32
    list_type = pa.large_list(pa.int32()) if large else pa.list_(pa.int32())
    array_class = pa.LargeListArray if large else pa.ListArray
    values = pa.array(np.arange(100, 100 + num_values, dtype=np.int32))
    bad = array_class.from_buffers(
        list_type,
        len(offsets) - 1,
        [None, pa.py_buffer(np.array(offsets, dtype=offset_type))],
        children=[values],
    )
    schema = pa.schema([(COLUMN, list_type)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.ipc.new_file(str(path), schema) as writer:
        writer.write_batch(pa.record_batch([pa.array([[1, 2], [3]], list_type)], schema=schema))
        writer.write_batch(pa.record_batch([bad], schema=schema))
    return path


def patch_offsets(path: Path, old: list[int], new: list[int], *, large: bool = False) -> None:
    """Rewrites the one occurrence of the offsets ``old`` in the file as ``new``: for
    corruptions pyarrow's writer refuses to write (it checks negative and out-of-range
    offsets, but its reader does not)."""
    dtype = np.int64 if large else np.int32
    patch_once(path, np.array(old, dtype=dtype).tobytes(), np.array(new, dtype=dtype).tobytes())


def patch_once(path: Path, old: bytes, new: bytes) -> None:
    """Replaces the single occurrence of ``old`` in the file by ``new`` (same length)."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old) == 1, (len(old), data.count(old))
    path.write_bytes(data.replace(old, new))


def write_stream_with_ends(path: Path, documents: list[list[int]], num_batches: int) -> list[int]:
    """Writes an IPC stream of ``num_batches`` record batches and returns the byte offset
    where each batch's message ends."""
    schema = pa.schema([(COLUMN, pa.list_(pa.int32()))])
    per_batch = -(-len(documents) // num_batches)
    ends = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for begin in range(0, len(documents), per_batch):
            chunk = pa.array(documents[begin : begin + per_batch], schema.field(0).type)
            writer.write_batch(pa.record_batch([chunk], schema=schema))
            ends.append(sink.tell())
    return ends


def truncations(data: bytes, step: int = 1) -> Iterator[tuple[int, bytes]]:
    """``(k, data[:k])`` for every ``step``-th cut point ``k`` in ``[0, len(data))``."""
    for k in range(0, len(data), step):
        yield k, data[:k]


# --- the cases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    """One bad input and what the loader must do with it.

    ``error`` None means the input is accepted: the loader serves exactly what pyarrow
    reads from the same files. Otherwise ``error`` is raised ``at`` "open" (building the
    dataset) or "batch" (making the batch or item that holds row ``row``), and its
    message names the file that is at fault (``culprit``: the index of that file in the
    source, or the one file), ``column`` (None: the message need not name one) and
    ``row``, and holds ``match`` if given.
    """

    name: str
    build: Callable[[Path], Source]
    error: Optional[type[Exception]] = CorpusFormatError
    at: str = "open"
    column: Optional[str] = COLUMN
    row: Optional[int] = None
    match: Optional[str] = None
    culprit: int = -1
    options: dict[str, Any] = field(default_factory=dict)
    #: the outcome in words, for the README table and the report
    outcome: str = ""

    @property
    def single_file(self) -> bool:
        """Whether the case is one file (so it can be read from memory as well)."""
        return self.name not in _MULTI_FILE_CASES


def _file(folder: Path, documents: Sequence[Any] = (), **kwargs: Any) -> Path:
    return write_tokens(
        folder / ("c.arrows" if kwargs.get("stream") else "c.arrow"),
        list(documents) or nine_documents(),
        bounds=kwargs.pop("bounds", BOUNDS),
        **kwargs,
    )


def _cut(fraction: float, stream: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = _file(folder, stream=stream)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])
        return path

    return build


def _patched(stream: bool, edit: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = _file(folder, stream=stream)
        path.write_bytes(edit(path.read_bytes()))
        return path

    return build


def _compressed(codec: str, stream: bool = False) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        documents = [[1] * 64, [2] * 40, [3] * 80] * 4  # compressible, so really compressed
        options = pa.ipc.IpcWriteOptions(compression=codec)
        return _file(folder, documents, bounds=[(0, 6), (6, 12)], stream=stream,
                     options=options)

    return build


def _garbage_message(folder: Path) -> Path:
    """The second record batch's message metadata overwritten with random bytes (its
    framing kept, so a reader gets as far as parsing it)."""
    path = folder / "c.arrows"
    ends = write_stream_with_ends(path, nine_documents(), 3)
    data = bytearray(path.read_bytes())
    garbage = np.random.default_rng(5).bytes(40)
    data[ends[0] + 8 : ends[0] + 48] = garbage
    path.write_bytes(bytes(data))
    return path


def _huge_message_length(folder: Path) -> Path:
    """The second message claims 2 GiB of metadata."""
    path = folder / "c.arrows"
    ends = write_stream_with_ends(path, nine_documents(), 3)
    data = bytearray(path.read_bytes())
    data[ends[0] + 4 : ends[0] + 8] = struct.pack("<i", 2**31 - 1)
    path.write_bytes(bytes(data))
    return path


def _concatenated_streams(folder: Path) -> Path:
    first = write_tokens(folder / "a.arrows", [[1, 2], [3]], stream=True, num_batches=1)
    second = write_tokens(folder / "b.arrows", [[4], [5, 6]], stream=True, num_batches=1)
    path = folder / "c.arrows"
    path.write_bytes(first.read_bytes() + second.read_bytes())
    first.unlink()
    second.unlink()
    return path


def _offsets(offsets: list[int], num_values: int, large: bool = False,
             patch: Optional[list[int]] = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = write_with_offsets(folder / "c.arrow", offsets, num_values, large=large)
        if patch is not None:
            patch_offsets(path, offsets, patch, large=large)
        return path

    return build


def _values_shorter_than_declared(folder: Path) -> Path:
    good = [0, 7, 19, 42, 77]
    path = write_with_offsets(folder / "c.arrow", good, 77)
    # The values child's FieldNode is (length 77, null_count 0): declare 5000 values.
    patch_once(path, struct.pack("<qq", 77, 0), struct.pack("<qq", 5000, 0))
    patch_offsets(path, good, [0, 7, 19, 42, 5000])
    return path


def _column(array: pa.Array, **extra: pa.Array) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return write_ipc(folder / "c.arrow", {COLUMN: array, **extra})

    return build


def _with_null(row: int, token: Optional[int] = None) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        documents: list[Any] = nine_documents()
        if token is None:
            documents[row] = None
        else:
            documents[row] = [1, 2, None, 4][: token + 2]
        return _file(folder, documents)

    return build


def _null_count_lie(folder: Path) -> Path:
    """A token column whose validity bitmap marks every row valid but which declares one
    null (pyarrow writes the count it is given)."""
    good = pa.array(nine_documents(), pa.list_(pa.int32()))
    bitmap = pa.py_buffer(b"\xff\xff")
    lying = pa.ListArray.from_buffers(
        good.type, len(good), [bitmap, good.buffers()[1]], null_count=1, children=[good.values]
    )
    return write_ipc(folder / "c.arrow", {COLUMN: lying})


def _labels(labels: list[Any], label_type: pa.DataType) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return _file(folder, labels=labels, label_type=label_type)

    return build


def _loss_column(name: str, values: list[Any], value_type: pa.DataType) -> Callable[[Path], Path]:
    """Nine documents with a loss mask or prompt-length column ``name`` beside them."""

    def build(folder: Path) -> Path:
        return _file(folder, extra={name: pa.array(values, value_type)})

    return build


def _mask_with(row: int, mask: Any, value: Any = 1) -> list[Any]:
    """A mask of ``value`` (in the loss) for every one of the nine documents, row
    ``row``'s replaced by ``mask``."""
    masks: list[Any] = [[value] * len(doc) for doc in nine_documents()]
    masks[row] = mask
    return masks


#: The options of a dataset trained on the completion only, by mask or prompt length.
_MASKED = {"causal_labels": True, "loss_mask_column": "mask"}
_PROMPTED = {"causal_labels": True, "prompt_length_column": "prompt"}


def _empty_table(stream: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return write_tokens(folder / "c.arrow", [], num_batches=1, stream=stream)

    return build


def _no_record_batches(stream: bool) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return write_ipc(folder / "c.arrow", {COLUMN: pa.array([], pa.list_(pa.int32()))},
                         bounds=[], stream=stream)

    return build


def _ids(documents: list[list[int]], value_type: pa.DataType) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        half = len(documents) // 2
        bounds = [(0, half), (half, len(documents))]
        return _file(folder, documents, value_type=value_type, bounds=bounds)

    return build


#: Documents whose row 4 holds an id at or above 1000 (and row 5 a negative one).
VOCAB_DOCS = [[1, 2], [999], [], [0, 5, 7], [3, 1000, 4], [6]]
NEGATIVE_DOCS = [[1, 2], [999], [], [0, 5, 7], [3, 4], [6, -1]]


def _shards(*specs: tuple[str, dict[str, pa.Array]]) -> Callable[[Path], list[Path]]:
    def build(folder: Path) -> list[Path]:
        return [write_ipc(folder / name, columns, bounds=[(0, len(next(iter(columns.values()))))])
                for name, columns in specs]

    return build


def _tokens(documents: list[list[int]], list_type: pa.DataType) -> pa.Array:
    return pa.array(documents, list_type)


_MIXED_OK = _shards(
    ("0.arrow", {COLUMN: _tokens([[1, 2], [3]], pa.list_(pa.int32()))}),
    ("1.arrow", {COLUMN: _tokens([[4], [], [5, 6]], pa.large_list(pa.uint16())),
                 "text": pa.array(["a", "b", "c"])}),
    ("2.arrow", {COLUMN: _tokens([[2**40, 7]], pa.list_(pa.int64()))}),
    ("3.arrow", {COLUMN: _tokens([[2**32 - 1]], pa.list_(pa.uint32()))}),
)
_MIXED_MISSING = _shards(
    ("0.arrow", {COLUMN: _tokens([[1, 2], [3]], pa.list_(pa.int32()))}),
    ("1.arrow", {"tokens": _tokens([[4]], pa.list_(pa.int32()))}),
)
_MIXED_WRONG_TYPE = _shards(
    ("0.arrow", {COLUMN: _tokens([[1, 2], [3]], pa.list_(pa.int32()))}),
    ("1.arrow", {COLUMN: pa.array(["4 5"], pa.string())}),
)
_MIXED_LABELS = _shards(
    ("0.arrow", {COLUMN: _tokens([[1, 2], [3]], pa.list_(pa.int32())),
                 "label": pa.array([0, 1])}),
    ("1.arrow", {COLUMN: _tokens([[4]], pa.list_(pa.int32()))}),
)

_MULTI_FILE_CASES = {
    "mixed token types across shards",
    "a shard without the token column",
    "a shard whose token column is a string",
    "a shard without the label column",
}


def _replace_at(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


BAD_CASES: list[BadCase] = [
    # the file itself
    BadCase("empty file (0 bytes)", lambda folder: _touch(folder / "c.arrow"), column=None,
            match="empty", outcome="CorpusFormatError at open: the file is empty"),
    BadCase("file format cut at half", _cut(0.5, stream=False), column=None,
            outcome="CorpusFormatError at open (every cut point: test_truncated_at_every_byte)"),
    BadCase("stream cut at half", _cut(0.5, stream=True), column=None,
            outcome="CorpusFormatError at open (every cut point: test_truncated_at_every_byte)"),
    BadCase("wrong magic at the start",
            _patched(False, lambda d: _replace_at(d, 0, b"ARROW0")), column=None,
            outcome="CorpusFormatError at open: read as a stream, which it is not"),
    BadCase("wrong magic at the end",
            _patched(False, lambda d: _replace_at(d, len(d) - 6, b"ARROW0")), column=None,
            outcome="CorpusFormatError at open: not a readable IPC file"),
    BadCase("text, not Arrow", lambda folder: _text(folder / "c.arrow"), column=None,
            outcome="CorpusFormatError at open"),
    BadCase("Parquet file", lambda folder: _parquet(folder / "c.parquet"), column=None,
            match="is a Parquet file",
            outcome="CorpusFormatError at open, with the two lines that convert it"),
    BadCase("zstd-compressed IPC file", _compressed("zstd"), match="compressed with zstd",
            outcome="CorpusFormatError at open naming the codec: compressed buffers cannot "
                    "be read in place"),
    BadCase("lz4-compressed IPC file", _compressed("lz4_frame"), match="compressed with lz4",
            outcome="CorpusFormatError at open naming the codec: compressed buffers cannot "
                    "be read in place"),
    BadCase("zstd-compressed IPC stream", _compressed("zstd", stream=True),
            match="compressed with zstd",
            outcome="CorpusFormatError at open naming the codec: compressed buffers cannot "
                    "be read in place"),
    # streams
    BadCase("stream with a garbage message", _garbage_message, column=None,
            outcome="CorpusFormatError at open"),
    BadCase("stream message claiming 2 GiB of metadata", _huge_message_length, column=None,
            outcome="CorpusFormatError at open (nothing allocated for it)"),
    BadCase("stream without its end-of-stream marker",
            _patched(True, lambda d: d[: -len(END_OF_STREAM)]), column=None,
            match="end-of-stream",
            outcome="CorpusFormatError at open; require_end_of_stream=False reads it"),
    BadCase("two streams concatenated in one file", _concatenated_streams, column=None,
            match="follow the Arrow IPC stream",
            outcome="CorpusFormatError at open: the second stream would be dropped silently"),
    # list offsets
    BadCase("list offsets that decrease", _offsets([0, 3, 2, 5], 5), row=3, match="decrease",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("large_list offsets that decrease", _offsets([0, 2, 4, 1, 5], 5, large=True),
            row=4, match="decrease", outcome="CorpusFormatError at open naming the row"),
    BadCase("negative list offset", _offsets([0, 7, 19, 42, 77], 77, patch=[-1, 7, 19, 42, 77]),
            row=2, match="negative", outcome="CorpusFormatError at open naming the row"),
    BadCase("list offsets past the values buffer",
            _offsets([0, 7, 19, 42, 77], 77, patch=[0, 7, 19, 42, 99]), row=5,
            match="past the end", outcome="CorpusFormatError at open naming the row"),
    BadCase("int32 list offsets that overflow (wrap to negative)",
            _offsets([0, 7, 19, 42, 77], 77, patch=[0, 7, 2**31 - 1, -(2**31), 77]), row=4,
            match="decrease", outcome="CorpusFormatError at open naming the row"),
    BadCase("int32 list offset at INT32_MAX",
            _offsets([0, 7, 19, 42, 77], 77, patch=[0, 7, 19, 42, 2**31 - 1]), row=5,
            match="past the end", outcome="CorpusFormatError at open naming the row"),
    BadCase("large_list offset at INT64_MAX",
            _offsets([0, 7, 19, 42, 77], 77, large=True, patch=[0, 7, 19, 2**63 - 1, 77]),
            row=5, match="decrease", outcome="CorpusFormatError at open naming the row"),
    BadCase("values buffer shorter than its declared length", _values_shorter_than_declared,
            match="rows from 2", outcome="CorpusFormatError at open (buffer sizes checked)"),
    # nulls
    BadCase("null document", _with_null(6), row=6, match="null",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("null token inside a document", _with_null(7, token=1), row=7, match="null",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("declared null count the validity bitmap contradicts", _null_count_lie,
            match="declare 1 nulls but their validity bitmap marks 0",
            outcome="CorpusFormatError at open (every null count is checked against the bitmap)"),
    BadCase("null label", _labels([0, 1, 2, 3, 4, 5, 6, 7, None], pa.int64()), column="label",
            row=8, options={"label_column": "label"}, match="null",
            outcome="CorpusFormatError at open naming the row"),
    # types
    BadCase("token column of list<float32>", _column(pa.array([[1.0]], pa.list_(pa.float32()))),
            match="float", outcome="CorpusFormatError at open naming the type"),
    BadCase("token column of strings", _column(pa.array(["1 2 3"])), match="string",
            outcome="CorpusFormatError at open naming the type"),
    BadCase("token column of list<int8>", _column(pa.array([[1]], pa.list_(pa.int8()))),
            match="int8", outcome="CorpusFormatError at open naming the type"),
    BadCase("token column of nested lists",
            _column(pa.array([[[1]]], pa.list_(pa.list_(pa.int32())))),
            outcome="CorpusFormatError at open naming the type"),
    BadCase("no token column", _column(pa.array([[1]], pa.list_(pa.int32()))),
            options={"column": "tokens"}, column="tokens", match="not found",
            outcome="CorpusFormatError at open listing the columns there are"),
    BadCase("label column of float64", _labels([float(i) for i in range(9)], pa.float64()),
            column="label", options={"label_column": "label"}, match="double",
            outcome="CorpusFormatError at open naming the type"),
    BadCase("uint64 label above int64", _labels([0, 1, 2, 3, 4, 5, 6, 2**63, 8], pa.uint64()),
            column="label", row=7, options={"label_column": "label"},
            outcome="CorpusFormatError at open naming the row"),
    # empty
    BadCase("empty table (a record batch of 0 rows)", _empty_table(False), error=None,
            outcome="accepted: 0 documents, a loader yields no batch"),
    BadCase("empty stream (a record batch of 0 rows)", _empty_table(True), error=None,
            outcome="accepted: 0 documents"),
    BadCase("file with a schema and no record batch", _no_record_batches(False), error=None,
            outcome="accepted: 0 documents"),
    BadCase("stream with a schema and no record batch", _no_record_batches(True), error=None,
            outcome="accepted: 0 documents"),
    BadCase("zero-length documents", lambda folder: _file(folder, [[], [1], [], [], [2, 3], []],
                                                          bounds=[(0, 3), (3, 6)]),
            error=None, outcome="accepted: served as empty rows (all padding), packed as EOS"),
    # token ids
    BadCase("token id at the vocabulary size", _ids(VOCAB_DOCS, pa.int32()), at="batch", row=4,
            options={"vocab_size": 1000}, match="outside the vocabulary",
            outcome="CorpusFormatError naming the row when its batch is made (vocab_size=)"),
    BadCase("negative token id", _ids(NEGATIVE_DOCS, pa.int64()), at="batch", row=5,
            options={"vocab_size": 1000}, match="outside the vocabulary",
            outcome="CorpusFormatError naming the row when its batch is made (vocab_size=)"),
    BadCase("token id above the vocabulary, no vocab_size", _ids(VOCAB_DOCS, pa.uint16()),
            error=None, outcome="accepted as written: without vocab_size there is no bound"),
    BadCase("token id that does not fit int32 output", _ids([[1], [2**31]], pa.int64()),
            at="batch", row=1, options={"dtype": torch.int32}, match="does not fit",
            outcome="CorpusFormatError naming the row when its batch is made"),
    # completion-only loss
    BadCase("loss mask shorter than its tokens",
            _loss_column("mask", _mask_with(6, [1]), pa.list_(pa.uint8())), column="mask",
            row=6, options=_MASKED, match="1 values beside 2 tokens",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("null loss mask", _loss_column("mask", _mask_with(5, None, True), pa.list_(pa.bool_())),
            column="mask", row=5, options=_MASKED, match="null",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("loss mask value other than 0 and 1",
            _loss_column("mask", _mask_with(3, [1, 2, 1]), pa.list_(pa.int8())), at="batch",
            column="mask", row=3, options=_MASKED, match="neither 0 nor 1",
            outcome="CorpusFormatError naming the row when its batch is made"),
    BadCase("prompt length beyond its document",
            _loss_column("prompt", [0, 0, 0, 0, 0, 0, 0, 4, 0], pa.int32()), column="prompt",
            row=7, options=_PROMPTED, match="beyond the 3 tokens",
            outcome="CorpusFormatError at open naming the row"),
    BadCase("negative prompt length",
            _loss_column("prompt", [0, 0, -1, 0, 0, 0, 0, 0, 0], pa.int64()), column="prompt",
            row=2, options=_PROMPTED, match="is negative",
            outcome="CorpusFormatError at open naming the row"),
    # several shards
    BadCase("mixed token types across shards", _MIXED_OK, error=None,
            outcome="accepted: each shard read in its own type"),
    BadCase("a shard without the token column", _MIXED_MISSING, culprit=1, match="not found",
            outcome="CorpusFormatError at open naming that shard"),
    BadCase("a shard whose token column is a string", _MIXED_WRONG_TYPE, culprit=1,
            match="string", outcome="CorpusFormatError at open naming that shard"),
    BadCase("a shard without the label column", _MIXED_LABELS, culprit=1, column="label",
            options={"label_column": "label"}, match="not found",
            outcome="CorpusFormatError at open naming that shard"),
]

#: Changes made to a file after it was opened (see test_bad_corpora's identity tests).
CHANGES = ("replaced", "cut short", "grown", "rewritten in place", "removed")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _parquet(path: Path) -> Path:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({COLUMN: pa.array([[1, 2, 3], [4]], pa.list_(pa.int32()))}), path)
    return path


def _text(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("input_ids\n1 2 3\n4 5\n" * 20)
    return path


def assert_names(
    error: BaseException,
    path: Union[str, Path],
    column: Optional[str] = None,
    row: Optional[int] = None,
) -> None:
    """The message names ``path``, ``column`` (quoted) and ``row N``."""
    message = str(error)
    assert str(path) in message, message
    if column is not None:
        assert f"'{column}'" in message, message
    if row is not None:
        assert re.search(rf"\brow {row}\b", message), message


__all__ = [
    "BAD_CASES",
    "BOUNDS",
    "CHANGES",
    "END_OF_STREAM",
    "BadCase",
    "assert_names",
    "nine_documents",
    "patch_offsets",
    "truncations",
    "write_stream_with_ends",
    "write_with_offsets",
]
