"""Bad input: one test per kind, each checking the exception class (an ArrowLoaderError
that is also the fitting builtin) and that the message names the file, the column and,
where a row is at fault, the row (numbered within its file); and that the error carries
them as its ``path``, ``column`` and ``row``, also through a pickle."""

from __future__ import annotations

import pickle
import struct
import threading
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as parquet
import pytest
import torch
from arrowloader import ArrowLoaderError, CorpusFileError, CorpusFormatError, TokenDataset
from arrowloader.errors import CorpusError
from bad_corpora import (
    BOUNDS,
    assert_names,
    nine_documents,
    patch_offsets,
    write_stream_with_ends,
    write_with_offsets,
)
from conftest import (
    COLUMN,
    pyarrow_batches,
    pyarrow_rows,
    wait_for_native_threads,
    write_ipc,
    write_tokens,
)


def assert_format_error(
    path: Path, column: Optional[str] = COLUMN, row: Optional[int] = None, **kwargs: Any
) -> CorpusFormatError:
    """Opening ``path`` raises a CorpusFormatError (a ValueError) naming what is wrong."""
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(path, **kwargs)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ArrowLoaderError)
    assert_names(info.value, path, column, row)
    return info.value


def assert_file_error(source: Any, named: str) -> CorpusFileError:
    """Opening ``source`` raises a CorpusFileError (an OSError) naming ``named``."""
    with pytest.raises(CorpusFileError) as info:
        TokenDataset(source)
    assert isinstance(info.value, OSError)
    assert isinstance(info.value, ArrowLoaderError)
    assert named in str(info.value)
    return info.value


# --- the file itself ---------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_ipc_file(tmp_path: Path, codec: str) -> None:
    if not pa.Codec.is_available(codec):
        pytest.skip(f"pyarrow built without {codec}")
    documents = [[1] * 64, [2] * 40, [3] * 80] * 4  # compressible, so really compressed
    path = write_tokens(
        tmp_path / "c.arrow",
        documents,
        num_batches=2,
        options=pa.ipc.IpcWriteOptions(compression=codec),
    )
    assert pyarrow_rows(path) == documents  # pyarrow reads it, decompressing
    error = assert_format_error(path)
    assert "compress" in str(error)


def test_compressed_ipc_stream(tmp_path: Path) -> None:
    documents = [[7] * 100] * 10
    path = write_tokens(
        tmp_path / "c.arrows",
        documents,
        stream=True,
        options=pa.ipc.IpcWriteOptions(compression="zstd"),
    )
    assert pyarrow_rows(path) == documents
    message = str(assert_format_error(path))
    # A stream is not a Feather file: the fix reads it as a stream.
    assert "compressed with zstd" in message
    assert f"pyarrow.ipc.open_stream('{path}').read_all()" in message


@pytest.mark.parametrize("codec", [None, "zstd"])
def test_write_feather_default_compression_is_named_with_the_fix(
    tmp_path: Path, codec: Optional[str]
) -> None:
    """``pyarrow.feather.write_feather`` compresses with lz4 unless told otherwise: the
    error names the codec and the argument that writes a file arrowloader reads."""
    if not pa.Codec.is_available(codec or "lz4"):
        pytest.skip(f"pyarrow built without {codec or 'lz4'}")
    documents = [[1] * 64, [2] * 40, [3] * 80] * 4
    table = pa.table({COLUMN: pa.array(documents, pa.list_(pa.int32()))})
    path = tmp_path / "c.feather"
    kwargs = {} if codec is None else {"compression": codec}
    feather.write_feather(table, path, **kwargs)
    error = assert_format_error(path)
    assert f"compressed with {codec or 'lz4'}" in str(error)
    assert "compression='uncompressed'" in str(error)
    # The fix the message gives makes a file that opens, with pyarrow's rows.
    fixed = tmp_path / "fixed.feather"
    feather.write_feather(feather.read_table(path), fixed, compression="uncompressed")
    assert documents_of(TokenDataset(fixed)) == documents


def documents_of(ds: TokenDataset) -> list[list[int]]:
    """Every document of ``ds`` through ``ds[i]``."""
    return [ds[i]["input_ids"].tolist() for i in range(len(ds))]


def test_parquet_file_is_named_as_such_with_the_conversion(tmp_path: Path) -> None:
    """A Parquet file is not called corrupt: the message says what it is and how to
    convert it, and the conversion it gives works."""
    documents = [[1, 2, 3], [4], [5, 6]]
    path = tmp_path / "tokens.parquet"
    parquet.write_table(pa.table({COLUMN: pa.array(documents, pa.list_(pa.int32()))}), path)
    error = assert_format_error(path, column=None)
    message = str(error)
    assert "is a Parquet file" in message and "corrupt" not in message
    assert f"pyarrow.parquet.read_table('{path}')" in message
    assert "compression='uncompressed'" in message
    converted = tmp_path / "tokens.arrow"
    assert f"'{converted}'" in message
    feather.write_feather(parquet.read_table(path), converted, compression="uncompressed")
    assert documents_of(TokenDataset(converted)) == documents
    # Read into memory instead of mapped, it is recognised all the same.
    assert "is a Parquet file" in str(assert_format_error(path, column=None, mmap=False))


def test_folder_of_parquet_files_says_to_convert_them(tmp_path: Path) -> None:
    table = pa.table({COLUMN: pa.array([[1]], pa.list_(pa.int32()))})
    for name in ("a.parquet", "b.parquet"):
        parquet.write_table(table, tmp_path / name)
    error = assert_file_error(tmp_path, str(tmp_path))
    assert "2 Parquet files (a.parquet, ...)" in str(error)
    assert f"pyarrow.parquet.read_table('{tmp_path / 'a.parquet'}')" in str(error)


def test_missing_column(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]], column="tokens")
    error = assert_format_error(path, column=COLUMN)
    assert "'tokens'" in str(error)  # lists the columns the file has


@pytest.mark.parametrize(
    "array",
    [
        pa.array([[1.0, 2.0]], pa.list_(pa.float32())),
        pa.array([["a", "b"]], pa.list_(pa.string())),
        pa.array([[1, 2]], pa.list_(pa.int8())),
        pa.array([[1, 2]], pa.large_list(pa.uint64())),
        pa.array([[[1], [2]]], pa.list_(pa.list_(pa.int32()))),
        pa.array([3], pa.int64()),
        pa.array(["1 2 3"], pa.string()),
    ],
    ids=["list_float32", "list_string", "list_int8", "large_list_uint64", "nested", "int64",
         "string"],
)
def test_wrong_token_type(tmp_path: Path, array: pa.Array) -> None:
    path = write_ipc(tmp_path / "c.arrow", {COLUMN: array})
    error = assert_format_error(path)
    assert str(array.type) in str(error)


def test_not_arrow_text(tmp_path: Path) -> None:
    path = tmp_path / "c.arrow"
    path.write_text("input_ids\n1 2 3\n4 5\n" * 20)
    assert_format_error(path, column=None)


def test_not_arrow_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.arrow"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_format_error(path, column=None)


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_ipc_file(tmp_path: Path, keep: float) -> None:
    path = write_tokens(tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(pa.ArrowInvalid):  # pyarrow agrees that the file is broken
        pa.ipc.open_file(str(path))
    assert_format_error(path, column=None)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "c.arrow"
    path.touch()
    error = assert_format_error(path, column=None)
    assert "empty" in str(error)


def test_nonexistent_path(tmp_path: Path) -> None:
    assert_file_error(tmp_path / "missing.arrow", str(tmp_path / "missing.arrow"))


def test_nonexistent_path_in_a_list(tmp_path: Path) -> None:
    good = write_tokens(tmp_path / "good.arrow", [[1]])
    assert_file_error([good, tmp_path / "missing.arrow"], "missing.arrow")


def test_glob_matching_nothing(tmp_path: Path) -> None:
    write_tokens(tmp_path / "x.arrow", [[1]])
    assert_file_error(str(tmp_path / "shard-*.arrow"), "shard-*.arrow")


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_file_error(tmp_path / "empty", str(tmp_path / "empty"))


def test_folder_without_ipc_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no shards here")
    write_tokens(tmp_path / "data.parquet", [[1]])
    assert_file_error(tmp_path, str(tmp_path))


def test_empty_list_of_paths() -> None:
    assert_file_error([], "empty list")


def test_source_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="source"):
        TokenDataset(42)  # type: ignore[arg-type]


# --- streams -------------------------------------------------------------------------------


def test_stream_without_end_of_stream_marker(tmp_path: Path) -> None:
    path = tmp_path / "c.arrows"
    documents = nine_documents()
    write_stream_with_ends(path, documents, 3)
    data = path.read_bytes()
    assert data[-8:] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    path.write_bytes(data[:-8])
    assert pyarrow_rows(path) == documents  # pyarrow reads it without complaint
    error = assert_format_error(path, column=None)
    assert "end-of-stream" in str(error)

    ds = TokenDataset(path, require_end_of_stream=False)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == documents


def test_stream_cut_at_a_message_boundary(tmp_path: Path) -> None:
    path = tmp_path / "c.arrows"
    documents = nine_documents()
    ends = write_stream_with_ends(path, documents, 3)
    path.write_bytes(path.read_bytes()[: ends[1]])  # the third batch and the marker are gone
    kept = pyarrow_rows(path)
    assert kept == documents[: len(kept)] and 0 < len(kept) < len(documents)
    error = assert_format_error(path, column=None)
    assert "2 record batches" in str(error)

    ds = TokenDataset(path, require_end_of_stream=False)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == kept


def test_stream_cut_inside_a_message(tmp_path: Path) -> None:
    path = tmp_path / "c.arrows"
    ends = write_stream_with_ends(path, nine_documents(), 3)
    path.write_bytes(path.read_bytes()[: ends[1] + 20])
    assert_format_error(path, column=None)
    assert_format_error(path, column=None, require_end_of_stream=False)


def test_stream_with_legacy_end_of_stream_marker_is_accepted(tmp_path: Path) -> None:
    documents = nine_documents()
    path = write_tokens(
        tmp_path / "c.arrows",
        documents,
        stream=True,
        options=pa.ipc.IpcWriteOptions(use_legacy_format=True),
    )
    ds = TokenDataset(path)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == documents


# --- nulls -----------------------------------------------------------------------------------


def test_null_document(tmp_path: Path) -> None:
    documents: list[Any] = nine_documents()
    documents[6] = None  # row 2 of the second record batch: row 6 of the file
    path = write_tokens(tmp_path / "c.arrow", documents, bounds=BOUNDS)
    assert pyarrow_rows(path)[6] is None
    error = assert_format_error(path, row=6)
    assert "null" in str(error)


def test_null_document_in_a_later_file_is_numbered_within_that_file(tmp_path: Path) -> None:
    write_tokens(tmp_path / "a.arrow", nine_documents(), bounds=BOUNDS)
    documents: list[Any] = nine_documents()
    documents[5] = None
    bad = write_tokens(tmp_path / "b.arrows", documents, bounds=BOUNDS, stream=True)
    error = assert_format_error(bad, row=5)
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(tmp_path)
    assert str(info.value) == str(error)
    assert str(tmp_path / "a.arrow") not in str(info.value)


def test_null_token_inside_a_document(tmp_path: Path) -> None:
    documents: list[Any] = nine_documents()
    documents[7] = [1, 2, None, 4]  # row 3 of the second record batch: row 7
    path = write_tokens(tmp_path / "c.arrow", documents, bounds=BOUNDS, large=True)
    assert pyarrow_rows(path)[7] == [1, 2, None, 4]
    error = assert_format_error(path, row=7)
    assert "null" in str(error)


def test_label_column_with_nulls(tmp_path: Path) -> None:
    labels: list[Optional[int]] = list(range(9))
    labels[8] = None
    path = write_tokens(tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS, labels=labels)
    assert_format_error(path, column="label", row=8, label_column="label")
    TokenDataset(path)  # the token column alone is fine


@pytest.mark.parametrize(
    "label_type", [pa.float64(), pa.string(), pa.list_(pa.float32())], ids=str
)
def test_label_column_of_a_non_integer_type(tmp_path: Path, label_type: pa.DataType) -> None:
    labels = [[0.5] * len(d) for d in nine_documents()] if pa.types.is_list(label_type) else list(
        range(9)
    )
    if pa.types.is_string(label_type):
        labels = [str(i) for i in range(9)]
    path = write_tokens(
        tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS, labels=labels, label_type=label_type
    )
    error = assert_format_error(path, column="label", label_column="label")
    assert str(label_type) in str(error)


def test_per_token_labels_of_another_length_name_the_row(tmp_path: Path) -> None:
    """A list label column is per-token labels: each row must be as long as its tokens."""
    documents = nine_documents()
    labels = [[1] * len(d) for d in documents]
    labels[5] = [*labels[5], 1]
    path = write_tokens(
        tmp_path / "c.arrow", documents, bounds=BOUNDS, labels=labels,
        label_type=pa.list_(pa.int64()),
    )
    error = assert_format_error(path, column="label", row=5, label_column="label")
    assert "values beside" in str(error)


def test_uint64_label_above_int64(tmp_path: Path) -> None:
    labels = [0, 1, 2, 3, 4, 5, 6, 2**63, 8]
    path = write_tokens(
        tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS, labels=labels,
        label_type=pa.uint64(),
    )
    assert_format_error(path, column="label", row=7, label_column="label")
    labels[7] = 2**63 - 1
    path = write_tokens(
        tmp_path / "ok.arrow", nine_documents(), bounds=BOUNDS, labels=labels,
        label_type=pa.uint64(),
    )
    assert int(TokenDataset(path, label_column="label")[7]["labels"]) == 2**63 - 1


def test_missing_label_column(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", nine_documents())
    assert_format_error(path, column="labels", label_column="labels")


# --- corrupt list offsets ---------------------------------------------------------------------


def assert_pyarrow_reads_offsets(path: Path, offsets: list[int]) -> None:
    """pyarrow opens the file and hands back the corrupt offsets without complaint."""
    batches = pyarrow_batches(path)
    assert batches[1].column(0).offsets.to_pylist() == offsets


@pytest.mark.parametrize("large", [False, True], ids=["list", "large_list"])
@pytest.mark.parametrize(
    ("offsets", "bad_row"),
    [([0, 3, 2, 5], 1), ([0, 2, 4, 1, 5], 2), ([0, 5, 0], 1), ([0, 0, 5, 5, 3], 3)],
)
def test_offsets_that_decrease(
    tmp_path: Path, offsets: list[int], bad_row: int, large: bool
) -> None:
    path = write_with_offsets(tmp_path / "c.arrow", offsets, 5, large=large)
    assert_pyarrow_reads_offsets(path, offsets)
    error = assert_format_error(path, row=2 + bad_row)
    assert "decrease" in str(error)


@pytest.mark.parametrize("large", [False, True], ids=["list", "large_list"])
def test_negative_offset(tmp_path: Path, large: bool) -> None:
    good = [0, 7, 19, 42, 77]
    path = write_with_offsets(tmp_path / "c.arrow", good, 77, large=large)
    corrupt = [-1, 7, 19, 42, 77]
    patch_offsets(path, good, corrupt, large=large)
    assert_pyarrow_reads_offsets(path, corrupt)
    error = assert_format_error(path, row=2)
    assert "negative" in str(error)


@pytest.mark.parametrize("large", [False, True], ids=["list", "large_list"])
@pytest.mark.parametrize(
    ("corrupt", "bad_row"), [([0, 7, 19, 42, 99], 3), ([0, 7, 19, 78, 78], 2)]
)
def test_offsets_past_the_values(
    tmp_path: Path, corrupt: list[int], bad_row: int, large: bool
) -> None:
    good = [0, 7, 19, 42, 77]
    path = write_with_offsets(tmp_path / "c.arrow", good, 77, large=large)
    patch_offsets(path, good, corrupt, large=large)
    assert_pyarrow_reads_offsets(path, corrupt)
    error = assert_format_error(path, row=2 + bad_row)
    assert "past the end" in str(error)


def test_values_buffer_shorter_than_declared(tmp_path: Path) -> None:
    """The file declares more values than its buffer holds (and offsets that agree with
    the declaration): pyarrow reads it on trust; arrowloader must not read past the
    buffer."""
    good = [0, 7, 19, 42, 77]
    path = write_with_offsets(tmp_path / "c.arrow", good, 77)
    # The values child's FieldNode is (length 77, null_count 0): declare 5000 values.
    data = path.read_bytes()
    node = struct.pack("<qq", 77, 0)
    assert data.count(node) == 1
    path.write_bytes(data.replace(node, struct.pack("<qq", 5000, 0)))
    corrupt = [0, 7, 19, 42, 5000]
    patch_offsets(path, good, corrupt)
    assert_pyarrow_reads_offsets(path, corrupt)
    assert len(pyarrow_batches(path)[1].column(0).values) == 5000
    error = assert_format_error(path)
    assert "rows from 2" in str(error)


# --- token ids that do not fit the output ------------------------------------------------------


def out_of_range_corpus(tmp_path: Path, value_type: pa.DataType, bad_value: int) -> Path:
    documents = [[i, i + 1] for i in range(12)]
    documents[9] = [1, bad_value, 2]  # second record batch (rows 6-11), row 9 of the file
    return write_tokens(
        tmp_path / "c.arrow", documents, value_type=value_type, bounds=[(0, 6), (6, 12)]
    )


@pytest.mark.parametrize(
    ("value_type", "bad_value"),
    [(pa.uint32(), 3_000_000_000), (pa.int64(), 2**40), (pa.int64(), -(2**31) - 1)],
    ids=["uint32", "int64_high", "int64_low"],
)
def test_token_id_that_does_not_fit_int32(
    tmp_path: Path, value_type: pa.DataType, bad_value: int
) -> None:
    path = out_of_range_corpus(tmp_path, value_type, bad_value)
    ds = TokenDataset(path, dtype=torch.int32)  # opening checks structure, not values
    assert ds[8]["input_ids"].tolist() == [8, 9]
    with pytest.raises(CorpusFormatError) as info:
        ds[9]
    assert_names(info.value, path, COLUMN, 9)
    assert str(bad_value) in str(info.value)
    with pytest.raises(CorpusFormatError):
        ds.__getitems__([0, 9])
    # int64 output holds it.
    assert TokenDataset(path)[9]["input_ids"].tolist() == [1, bad_value, 2]


def test_error_on_a_native_thread_reaches_the_consumer(tmp_path: Path) -> None:
    path = out_of_range_corpus(tmp_path, pa.uint32(), 3_000_000_000)
    ds = TokenDataset(path, dtype=torch.int32)
    baseline = wait_for_native_threads(0, timeout=0)
    loader = arrowloader.DataLoader(ds, batch_size=2, num_workers=2)
    assert loader.native
    served = []
    with pytest.raises(CorpusFormatError) as info:
        for batch in loader:
            assert threading.current_thread() is threading.main_thread()
            served.append(batch["input_ids"].tolist())
    assert_names(info.value, path, COLUMN, 9)
    # Batches before the bad one (rows 0-7) came through, in order.
    assert served == [[[i, i + 1] for i in (b, b + 1)] for b in range(0, 8, 2)]
    assert wait_for_native_threads(baseline) == baseline


def test_error_through_torch_dataloader(tmp_path: Path) -> None:
    path = out_of_range_corpus(tmp_path, pa.uint32(), 3_000_000_000)
    ds = TokenDataset(path, dtype=torch.int32)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=ds.collate)
    with pytest.raises(CorpusFormatError, match=r"\brow 9\b"):
        list(loader)


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_length": 0}, ValueError),
        ({"max_length": -3}, ValueError),
        ({"max_length": 2.5}, ValueError),
        ({"padding": "max_length"}, ValueError),
        ({"padding": "longest_first"}, ValueError),
        ({"padding": True}, ValueError),
        ({"truncation_side": "middle"}, ValueError),
        ({"padding_side": "center"}, ValueError),
        ({"pad_to_multiple_of": 0}, ValueError),
        ({"dtype": torch.float32}, ValueError),
        ({"dtype": torch.int16}, ValueError),
        ({"causal_labels": True, "label_column": "label"}, ValueError),
        ({"pad_token_id": 2**31, "dtype": torch.int32}, ValueError),
        ({"pad_token_id": -(2**31) - 1, "dtype": torch.int32}, ValueError),
        ({"pad_token_id": 2**63}, ValueError),
        ({"pad_token_id": 1.5}, TypeError),
    ],
    ids=lambda value: repr(value) if isinstance(value, dict) else value.__name__,
)
def test_bad_constructor_arguments(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]], labels=[0])
    with pytest.raises(error) as info:
        TokenDataset(path, **kwargs)
    named = next(iter(kwargs)) if "label_column" not in kwargs else "label_column"
    assert named in str(info.value)


def test_pad_token_id_at_the_int32_limit_is_accepted_and_a_negative_one_refused(
    tmp_path: Path,
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2], [3]])
    pad = 2**31 - 1
    ds = TokenDataset(path, pad_token_id=pad, dtype=torch.int32)
    (batch,) = list(arrowloader.DataLoader(ds, batch_size=2))
    assert batch["input_ids"].tolist() == [[1, 2], [3, pad]]
    with pytest.raises(ValueError, match=r"pad_token_id=-2147483648 is negative"):
        TokenDataset(path, pad_token_id=-(2**31), dtype=torch.int32)


def test_index_out_of_range(tmp_path: Path) -> None:
    ds = TokenDataset(write_tokens(tmp_path / "c.arrow", [[1], [2], [3]]))
    for index in (3, -4, 10**12):
        with pytest.raises(IndexError):
            ds[index]
    with pytest.raises(TypeError):
        ds[1.0]  # type: ignore[index]
    with pytest.raises(IndexError):
        list(arrowloader.DataLoader(ds, batch_sampler=[[0, 1], [2, 3]]))


# --- the place as attributes: path, column, row ------------------------------------------------


def first_row_where(path: Path, found: Any) -> int:
    """pyarrow's reading of ``path``: the first row (numbered within the file) of the first
    record batch for which ``found(token_list_array)`` gives an index, plus that index."""
    first = 0
    for batch in pyarrow_batches(path):
        at = found(batch.column(COLUMN))
        if at is not None:
            return first + at
        first += batch.num_rows
    raise AssertionError(f"{path}: pyarrow finds no such row")


def first_null(array: pa.Array) -> Optional[int]:
    nulls = np.flatnonzero(np.asarray(array.is_null()))
    return int(nulls[0]) if len(nulls) else None


def first_decrease(array: pa.Array) -> Optional[int]:
    """The row whose end offset lies before its start (offsets read as written)."""
    down = np.flatnonzero(np.diff(np.asarray(array.offsets)) < 0)
    return int(down[0]) if len(down) else None


def place(error: CorpusError) -> tuple[Any, Any, Any]:
    return error.path, error.column, error.row


def test_a_null_in_a_later_file_carries_that_file_and_its_row(tmp_path: Path) -> None:
    write_tokens(tmp_path / "a.arrow", nine_documents(), bounds=BOUNDS)
    documents: list[Any] = nine_documents()
    documents[6] = None
    bad = write_tokens(tmp_path / "b.arrows", documents, bounds=BOUNDS, stream=True)
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(tmp_path)
    assert place(info.value) == (str(bad), COLUMN, first_row_where(bad, first_null))


def test_decreasing_offsets_carry_the_row_pyarrow_reads(tmp_path: Path) -> None:
    path = write_with_offsets(tmp_path / "c.arrow", [0, 2, 4, 1, 5], 5, large=True)
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(path)
    assert place(info.value) == (str(path), COLUMN, first_row_where(path, first_decrease))


def test_an_id_outside_the_vocabulary_carries_its_row(tmp_path: Path) -> None:
    """Raised when the batch is made, by ``__getitem__`` and by a native thread alike."""
    documents = [[i, i + 1] for i in range(12)]
    documents[9] = [3, 1000, 4]
    path = write_tokens(tmp_path / "c.arrow", documents, bounds=[(0, 5), (5, 12)])
    row = first_row_where(path, lambda a: next(
        (i for i, ids in enumerate(a.to_pylist()) if max(ids) >= 1000), None))
    ds = TokenDataset(path, vocab_size=1000)
    with pytest.raises(CorpusFormatError) as info:
        ds[row]
    assert place(info.value) == (str(path), COLUMN, row)
    with pytest.raises(CorpusFormatError) as info:
        list(arrowloader.DataLoader(ds, batch_size=2, num_workers=2))
    assert place(info.value) == (str(path), COLUMN, row)


def test_a_label_error_carries_the_label_column(tmp_path: Path) -> None:
    labels: list[Optional[int]] = list(range(9))
    labels[5] = None
    path = write_tokens(tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS, labels=labels)
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(path, label_column="label")
    assert place(info.value) == (str(path), "label", pyarrow_rows(path, "label").index(None))


def test_errors_of_a_whole_file_or_column_carry_no_row(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]], column="tokens")
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(path)
    assert place(info.value) == (str(path), COLUMN, None)
    text = tmp_path / "t.arrow"
    text.write_text("input_ids\n1 2 3\n")
    with pytest.raises(CorpusFormatError) as info:
        TokenDataset(text)
    assert place(info.value) == (str(text), None, None)
    with pytest.raises(CorpusFileError) as info:
        TokenDataset(tmp_path / "missing.arrow")
    assert place(info.value) == (str(tmp_path / "missing.arrow"), None, None)
    with pytest.raises(CorpusFileError) as info:
        TokenDataset([])
    assert place(info.value) == (None, None, None)


def test_a_changed_file_is_the_path_of_the_error(tmp_path: Path) -> None:
    paths = [write_tokens(tmp_path / f"{name}.arrow", nine_documents()) for name in "abc"]
    ds = TokenDataset(paths)
    with open(paths[1], "ab") as f:
        f.write(b"\0" * 8)
    with pytest.raises(arrowloader.CorpusChangedError) as info:
        ds.check_files()
    assert place(info.value) == (str(paths[1]), None, None)


@pytest.mark.parametrize(
    "error",
    [
        CorpusFormatError("c.arrow: column 'input_ids' row 3: bad", path="c.arrow",
                          column="input_ids", row=3),
        CorpusFormatError("f.arrow: column 'ids' row 12: raised by the native side"),
        CorpusFileError("missing.arrow: no such file or folder", path=Path("missing.arrow")),
        arrowloader.CorpusChangedError("1 file(s) of the corpus changed", path="b.arrow"),
        CorpusFormatError("the source is an empty list of paths"),
    ],
    ids=["format", "native", "file", "changed", "nowhere"],
)
def test_pickling_keeps_the_place(error: CorpusError) -> None:
    """Errors cross process boundaries (torch's worker processes, for one) as pickles."""
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert place(again) == place(error)


def test_the_place_of_a_native_message() -> None:
    """The native extension raises with the message alone; a message in its form gives
    the attributes, and attributes given explicitly win."""
    error = CorpusFormatError("dir/f.arrow: column 'ids' row 12: null where ...")
    assert place(error) == ("dir/f.arrow", "ids", 12)
    error = CorpusFormatError("dir/f.arrow: column 'ids' (rows from 4): a malformed array")
    assert place(error) == ("dir/f.arrow", "ids", None)
    error = CorpusFormatError("dir/f.arrow: column 'ids' row 12: x", path="other.arrow")
    assert place(error) == ("other.arrow", None, None)
    assert place(CorpusFormatError("no place named here")) == (None, None, None)
    assert isinstance(CorpusFileError("x", path="x"), OSError)
