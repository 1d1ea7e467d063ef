"""Bad input: one test per kind, each checking the exception class (an ArrowLoaderError
that is also the fitting builtin) and that the message names the file, the column and,
where a row is at fault, the row (numbered within its file)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import ArrowLoaderError, CorpusFileError, CorpusFormatError, TokenDataset
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
    assert_format_error(path)


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
    "label_type", [pa.float64(), pa.string(), pa.list_(pa.int64())], ids=str
)
def test_label_column_of_a_non_integer_type(tmp_path: Path, label_type: pa.DataType) -> None:
    labels = [[i] for i in range(9)] if pa.types.is_list(label_type) else list(range(9))
    if pa.types.is_string(label_type):
        labels = [str(i) for i in range(9)]
    path = write_tokens(
        tmp_path / "c.arrow", nine_documents(), bounds=BOUNDS, labels=labels, label_type=label_type
    )
    error = assert_format_error(path, column="label", label_column="label")
    assert str(label_type) in str(error)


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


def test_pad_token_id_at_the_int32_limits_is_accepted(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2], [3]])
    for pad in (2**31 - 1, -(2**31)):
        ds = TokenDataset(path, pad_token_id=pad, dtype=torch.int32)
        (batch,) = list(arrowloader.DataLoader(ds, batch_size=2))
        assert batch["input_ids"].tolist() == [[1, 2], [3, pad]]


def test_index_out_of_range(tmp_path: Path) -> None:
    ds = TokenDataset(write_tokens(tmp_path / "c.arrow", [[1], [2], [3]]))
    for index in (3, -4, 10**12):
        with pytest.raises(IndexError):
            ds[index]
    with pytest.raises(TypeError):
        ds[1.0]  # type: ignore[index]
    with pytest.raises(IndexError):
        list(arrowloader.DataLoader(ds, batch_sampler=[[0, 1], [2, 3]]))
