"""Finding and opening corpus files.

A *source* names Arrow IPC files: one file (IPC file or stream format), a folder of them
(sorted by name), a glob, a list of any of these, a Hugging Face ``datasets``
``save_to_disk`` folder (its data files in the order its ``state.json`` gives), or a
folder written by ``arrowloader prepare`` (its shards in the order its ``manifest.json``
gives). Every file is memory-mapped by pyarrow and read in place (or, with
``mmap=False``, read once into memory); nothing here copies column data.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pyarrow as pa

from arrowloader.errors import ArrowLoaderError, CorpusFileError, CorpusFormatError
from arrowloader.manifest import MANIFEST_NAME, manifest_files
from arrowloader.wording import plural

Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

#: File name suffixes taken from a folder of shards.
IPC_SUFFIXES = (".arrow", ".arrows", ".ipc", ".feather")

_FILE_MAGIC = b"ARROW1"
#: Parquet files start and end with these bytes.
_PARQUET_MAGIC = b"PAR1"
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_LEGACY_END_OF_STREAM = b"\x00\x00\x00\x00"


def resolve_source(source: Source) -> list[Path]:
    """Expands a source into the ordered list of its files. A path, a glob or a list's
    item may start with ``~`` (the home folder).

    Raises:
        CorpusFileError: a path does not exist, a glob or folder matches no file, or a
            ``save_to_disk`` folder or a manifest names a file outside itself.
        CorpusFormatError: a folder's ``manifest.json`` is malformed.
    """
    if isinstance(source, (list, tuple)):
        if not source:
            raise CorpusFileError("the source is an empty list of paths")
        files: list[Path] = []
        for item in source:
            files.extend(resolve_source(item))
        return files
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a path, a glob or a list of paths, got {type(source).__name__}"
        )
    text = expand_path(source)
    path = Path(text)
    if path.is_dir():
        return _folder_files(path)
    if path.is_file():
        return [path]
    if glob.has_magic(text):
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not matches:
            raise CorpusFileError(f"{text}: the glob matches no file", path=text)
        return matches
    raise CorpusFileError(f"{text}: no such file or folder", path=text)


def expand_path(path: Union[str, os.PathLike]) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded, as a shell would."""
    return os.path.expanduser(os.fspath(path))


def _folder_files(folder: Path) -> list[Path]:
    if (folder / MANIFEST_NAME).is_file():
        return manifest_files(folder)
    state = folder / "state.json"
    if state.is_file():
        return _save_to_disk_files(folder, state)
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise CorpusFileError(
            f"{folder}: is a DatasetDict folder with splits {splits}; "
            f"pass one split's folder, e.g. {folder / (splits[0] if splits else 'train')}",
            path=folder,
        )
    # scandir's entries know their type without a stat per file (thousands of shards).
    with os.scandir(folder) as entries:
        names = sorted(
            entry.name
            for entry in entries
            if os.path.splitext(entry.name)[1] in IPC_SUFFIXES and entry.is_file()
        )
    files = [folder / name for name in names]
    if not files:
        parquet = sorted(p.name for p in folder.glob("*.parquet"))
        hint = (
            f"; it holds {plural(len(parquet), 'Parquet file')} ({parquet[0]}"
            f"{', ...' if len(parquet) > 1 else ''}), which must be converted first, e.g. "
            f"{_parquet_conversion(folder / parquet[0])}"
            if parquet else ""
        )
        raise CorpusFileError(
            f"{folder}: the folder holds no Arrow IPC files ({', '.join(IPC_SUFFIXES)})"
            + hint,
            path=folder,
        )
    return files


def _save_to_disk_files(folder: Path, state: Path) -> list[Path]:
    """The data files a ``save_to_disk`` folder's ``state.json`` lists, in its order.

    The file comes with the data and is not trusted: each name must be a relative path
    (no glob is expanded) that stays inside the folder once links are followed.
    """
    try:
        entries = json.loads(state.read_text())["_data_files"]
        names = [entry["filename"] for entry in entries]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CorpusFileError(
            f"{state}: not a datasets save_to_disk state file ({exc})", path=state
        ) from exc
    root = folder.resolve()
    files = []
    for name in names:
        if not isinstance(name, str) or not name or "\0" in name:
            raise CorpusFileError(
                f"{state}: data file name {name!r} is not a file name", path=state
            )
        if os.path.isabs(name):
            raise CorpusFileError(
                f"{state}: data file {name!r} lies outside the folder", path=state
            )
        path = (folder / name).resolve()
        if root not in path.parents:
            raise CorpusFileError(
                f"{state}: data file {name!r} lies outside the folder", path=state
            )
        if not path.is_file():
            raise CorpusFileError(f"{state}: data file {name!r} is missing", path=state)
        files.append(folder / name)
    if not files:
        raise CorpusFileError(f"{state}: lists no data files", path=state)
    return files


@dataclass
class OpenedFile:
    """One memory-mapped IPC file: its schema and record batches, read in place."""

    path: Path
    format: str  # "file" or "stream"
    schema: pa.Schema
    batches: list[pa.RecordBatch]
    #: address range of the mapping, to prove column buffers were not copied
    map_begin: int
    map_end: int
    #: ``os.fstat`` of the file while it was mapped (None where the platform gives no
    #: descriptor): the identity of the very bytes read, whatever happens to the path
    stat: Optional[os.stat_result] = None
    #: the whole mapping as one buffer; holding it holds the mapping
    mapping: Optional[pa.Buffer] = None

    def mapping_array(self) -> pa.Array:
        """The whole mapping as a uint8 array (for ``TokenColumn.hold_region``)."""
        if self.mapping is None:
            raise ValueError(f"{self.path}: the mapping was not kept")
        return pa.Array.from_buffers(pa.uint8(), self.mapping.size, [None, self.mapping])

    @property
    def num_rows(self) -> int:
        return sum(batch.num_rows for batch in self.batches)


def open_ipc(
    path: Path, *, require_end_of_stream: bool = True, mmap: bool = True
) -> OpenedFile:
    """Memory-maps ``path`` (or, with ``mmap=False``, reads it into memory) and reads its
    record batches without further copies.

    The file descriptor is closed before returning; the batches keep the mapping (or the
    memory) alive.

    Args:
        path: an Arrow IPC file (``ARROW1`` magic) or an IPC stream.
        require_end_of_stream: for streams, demand Arrow's end-of-stream marker. A stream
            cut at a message boundary otherwise reads as a shorter, valid stream.
        mmap: False reads the whole file into one heap buffer of exactly its size: for
            file systems where files can be truncated or rewritten under a reader (a
            mapped file cut short kills its reader with SIGBUS), at the cost of holding
            the file in memory.

    Raises:
        CorpusFileError: the file cannot be opened, mapped or read.
        CorpusFormatError: it is not a readable IPC file or stream, or a stream lacks its
            end-of-stream marker.
    """
    if not mmap:
        whole, stat = _read_whole_file(path)
        return open_ipc_buffer(whole, path, require_end_of_stream=require_end_of_stream,
                               stat=stat)
    try:
        source = pa.memory_map(str(path), "r")
    except (OSError, pa.ArrowException) as exc:
        raise CorpusFileError(f"{path}: cannot memory-map the file: {exc}", path=path) from exc
    try:
        size = source.size()
        if size == 0:
            raise CorpusFormatError(
                f"{path}: the file is empty; expected an Arrow IPC file", path=path
            )
        # The whole mapping as one buffer, which holds the mapping alive after close().
        # The readers below read from it, so every column buffer is a slice of it (zero
        # copy), and a reader over a buffer opens about four times faster than one over
        # the mapped file: per-file cost is what a corpus of thousands of shards pays.
        whole = source.read_buffer(size)
        stat = _fstat(source)
    except (OSError, pa.ArrowException) as exc:
        raise CorpusFileError(f"{path}: cannot memory-map the file: {exc}", path=path) from exc
    finally:
        source.close()
    return open_ipc_buffer(whole, path, require_end_of_stream=require_end_of_stream, stat=stat)


def open_ipc_buffer(
    whole: pa.Buffer,
    path: Path,
    *,
    require_end_of_stream: bool = True,
    stat: Optional[os.stat_result] = None,
) -> OpenedFile:
    """Reads the record batches of the IPC file or stream held by ``whole`` (a mapped
    file, a file read into memory, or bytes that never were a file) in place.

    ``path`` names the input in messages. Raises as :func:`open_ipc`.
    """
    size = whole.size
    if size == 0:
        raise CorpusFormatError(
                f"{path}: the file is empty; expected an Arrow IPC file", path=path
            )
    map_begin, map_end = whole.address, whole.address + size
    if size >= 8 and (
        whole.slice(0, 4).to_pybytes() == _PARQUET_MAGIC == whole.slice(size - 4).to_pybytes()
    ):
        raise CorpusFormatError(
            f"{path}: is a Parquet file, not an Arrow IPC file or stream. Parquet is encoded "
            "and compressed, so it cannot be read in place; convert it once: "
            f"{_parquet_conversion(path)}",
            path=path,
        )
    try:
        if whole.slice(0, min(size, 6)).to_pybytes() == _FILE_MAGIC:
            reader = pa.ipc.open_file(whole)
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            opened = OpenedFile(
                path, "file", reader.schema, batches, map_begin, map_end, stat, whole
            )
        else:
            opened = _read_stream(path, whole, require_end_of_stream, map_begin, map_end, stat)
        # Column names must be UTF-8, as the format demands: messages decode them, and a
        # name that does not decode must fail here, clearly, not in a message later.
        opened.schema.names  # noqa: B018
        return opened
    except ArrowLoaderError:
        raise
    except Exception as exc:  # whatever pyarrow raises on these bytes
        # pyarrow raises ArrowException or OSError on most corrupt input, but not on all
        # of it (a negative length can surface as SystemError): any failure of its
        # reader means the input cannot be read.
        raise CorpusFormatError(
            f"{path}: not a readable Arrow IPC file or stream: {exc}. The file is "
            "corrupt or was cut short; rewrite it.",
            path=path,
        ) from exc


def _parquet_conversion(path: Path) -> str:
    """How to turn the Parquet file ``path`` into an uncompressed Arrow IPC file, in words."""
    target = path.with_suffix(".arrow")
    return (
        f"table = pyarrow.parquet.read_table('{path}'); "
        f"pyarrow.feather.write_feather(table, '{target}', compression='uncompressed'). "
        "Parquet of text rather than token ids: 'arrowloader prepare FILE --tokenizer "
        "TOKENIZER --output DIR' tokenizes it into a corpus."
    )


def _read_whole_file(path: Path) -> tuple[pa.Buffer, os.stat_result]:
    """The bytes of ``path`` in one heap buffer of exactly the file's size (numpy's
    allocation: no slack after the last byte, so a memory checker sees any read beyond
    it), and the ``fstat`` of the descriptor they were read from."""
    try:
        with open(path, "rb", buffering=0) as f:
            stat = os.fstat(f.fileno())
            data = np.empty(stat.st_size, dtype=np.uint8)
            view = memoryview(data)
            done = 0
            while done < stat.st_size:
                count = f.readinto(view[done:])
                if not count:
                    raise CorpusFileError(
                        f"{path}: the file shrank from {stat.st_size} to {done} bytes while "
                        "it was read; it is being rewritten. Open it again once written.",
                        path=path,
                    )
                done += count
    except OSError as exc:
        if isinstance(exc, CorpusFileError):
            raise
        raise CorpusFileError(f"{path}: cannot read the file: {exc}", path=path) from exc
    return pa.py_buffer(data), stat


def _read_stream(
    path: Path,
    whole: pa.Buffer,
    require_end_of_stream: bool,
    map_begin: int,
    map_end: int,
    stat: Optional[os.stat_result],
) -> OpenedFile:
    source = pa.BufferReader(whole)
    reader = pa.ipc.open_stream(source)
    batches = []
    end_of_messages = source.tell()
    while True:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
        end_of_messages = source.tell()
    if require_end_of_stream:
        size = whole.size
        marker = whole.slice(end_of_messages, min(8, size - end_of_messages)).to_pybytes()
        if not (marker == _END_OF_STREAM or marker[:4] == _LEGACY_END_OF_STREAM):
            raise CorpusFormatError(
                f"{path}: the Arrow IPC stream has no end-of-stream marker after its "
                f"{len(batches)} record batches (byte {end_of_messages} of {size}): the file "
                "was probably cut short and rows are missing. If its writer never writes "
                "the marker, pass require_end_of_stream=False.",
                path=path,
            )
        end = end_of_messages + (8 if marker == _END_OF_STREAM else 4)
        if end < size:
            # Readers stop at the marker: whatever follows (a second stream appended to
            # the first, say) would be dropped without a word.
            raise CorpusFormatError(
                f"{path}: {size - end} bytes follow the Arrow IPC stream's end-of-stream "
                f"marker (byte {end_of_messages} of {size}); they would never be read. Is it "
                "several streams concatenated? Write one stream per file. "
                "require_end_of_stream=False reads up to the marker and ignores the rest.",
                path=path,
            )
    return OpenedFile(path, "stream", reader.schema, batches, map_begin, map_end, stat, whole)


def _fstat(source: pa.MemoryMappedFile) -> Optional[os.stat_result]:
    try:
        return os.fstat(source.fileno())
    except (OSError, pa.ArrowException):  # no descriptor to ask (io.UnsupportedOperation)
        return None


def column_index(
    opened: OpenedFile, column: str, *, list_column: bool, narrow: bool = False
) -> int:
    """The index of ``column`` in the schema of ``opened``, once it is known to be there
    with a type arrowloader reads (a token list type when ``list_column``, see
    :func:`check_token_type`, int8, uint8 and bool values too when ``narrow``; else an integer
    type).

    Raises:
        CorpusFormatError: the column is missing or has another type.
    """
    index = opened.schema.get_field_index(column)
    if index < 0:
        names = ", ".join(repr(name) for name in opened.schema.names)
        raise CorpusFormatError(
            f"{opened.path}: column {column!r} not found; the file has columns [{names}]",
            path=opened.path,
            column=column,
        )
    field_type = opened.schema.field(index).type
    if list_column:
        check_token_type(opened.path, column, field_type, narrow=narrow)
    elif not pa.types.is_integer(field_type):
        raise CorpusFormatError(
            f"{opened.path}: column {column!r} has type {field_type}; expected an integer type",
            path=opened.path,
            column=column,
        )
    return index


def iter_column_chunks(
    opened: OpenedFile, column: str, *, list_column: bool, narrow: bool = False
) -> Iterator[tuple[pa.Array, int]]:
    """Yields ``(array, first_row_in_file)`` for every record batch's ``column``.

    Checks the type (a list/large_list of int32, int64, uint16 or uint32 when
    ``list_column``, else an integer), the structure (pyarrow's cheap validation, and
    every buffer large enough for the declared lengths) and that every buffer lies
    inside the mapping. The caller checks the values (``TokenColumn.add_chunk``) before
    asking for the next chunk.

    Raises:
        CorpusFormatError: the column is missing, has the wrong type or a corrupt
            structure, or its buffers were copied out of the mapping (IPC buffer
            compression).
    """
    index = column_index(opened, column, list_column=list_column, narrow=narrow)
    row = 0
    for batch in opened.batches:
        array = batch.column(index)
        complaint = _validation_complaint(array)
        try:
            if len(array) != batch.num_rows:
                raise CorpusFormatError(
                    f"{opened.path}: column {column!r} (rows from {row}) holds {len(array)} "
                    f"rows but its record batch declares {batch.num_rows}; the file is "
                    "corrupt. Regenerate it from its source.",
                    path=opened.path,
                    column=column,
                )
            buffers = array.buffers()
            _check_in_mapping(opened, column, buffers, row)
            _check_buffer_sizes(opened.path, column, array, buffers, row)
            _check_alignment(opened.path, column, array, buffers, row)
        except CorpusFormatError:
            raise
        except Exception as exc:  # lengths too broken to measure (pyarrow said why)
            raise _corrupt(opened.path, column, row, complaint or str(exc)) from exc
        # Every buffer holds what the declared lengths need, so the native side may read
        # the chunk even where pyarrow's validation complained: its check names the row
        # at fault (pyarrow's message does not). If it finds nothing, pyarrow's word
        # stands, raised here when the caller asks for the next chunk.
        yield array, row
        if complaint is not None:
            raise _corrupt(opened.path, column, row, complaint)
        row += batch.num_rows


def _validation_complaint(array: pa.Array) -> Optional[str]:
    """What pyarrow's validation finds wrong with ``array``, or None. Its cheap checks
    (lengths, buffer sizes, children, first and last offsets; no pass over the data) on
    every array; the full ones on an empty array (nothing to read, but what offsets it
    has must still make sense). Arrow's IPC readers take declared lengths on trust."""
    try:
        array.validate()
        if len(array) == 0:
            array.validate(full=True)
    except Exception as exc:  # ArrowInvalid, or worse on worse input
        return str(exc) or type(exc).__name__
    return None


def _corrupt(path: Path, column: str, row: int, what: str) -> CorpusFormatError:
    return CorpusFormatError(
        f"{path}: column {column!r} (rows from {row}): {what}; the file is corrupt. "
        "Regenerate it from its source.",
        path=path,
        column=column,
    )


#: The value types of token lists, and those a narrow list column (a mask or token type
#: ids beside the tokens) may have besides.
TOKEN_VALUE_TYPES = (pa.int32(), pa.int64(), pa.uint16(), pa.uint32())
NARROW_VALUE_TYPES = (pa.int8(), pa.uint8(), pa.bool_())


def check_token_type(
    path: Path, column: str, field_type: pa.DataType, *, narrow: bool = False
) -> None:
    """Raises CorpusFormatError unless ``field_type`` is a supported token list type (or,
    with ``narrow``, a list of int8, uint8 or bool).

    This is the check whose message users see. ``TokenColumn.add_chunk`` checks the
    Arrow format string again where the array crosses into C++ (csrc/columns.cpp): a
    second line of defence for arrays that reach the native side some other way, never
    the first to object to a file opened through :func:`column_index`.
    """
    allowed = TOKEN_VALUE_TYPES + (NARROW_VALUE_TYPES if narrow else ())
    ok = (pa.types.is_list(field_type) or pa.types.is_large_list(field_type)) and (
        field_type.value_type in allowed
    )
    if not ok:
        raise CorpusFormatError(
            f"{path}: column {column!r} has type {field_type}; expected list or large_list "
            f"of {', '.join(map(str, allowed[:-1]))} or {allowed[-1]}",
            path=path,
            column=column,
        )


def _check_in_mapping(
    opened: OpenedFile, column: str, buffers: list[Optional[pa.Buffer]], row: int
) -> None:
    for buffer in buffers:
        if buffer is None or buffer.size == 0:
            continue
        if not (opened.map_begin <= buffer.address < opened.map_end):
            codec = _ipc_compression(opened) or "lz4 or zstd"
            read = (
                f"pyarrow.feather.read_table('{opened.path}')"
                if opened.format == "file"
                else f"pyarrow.ipc.open_stream('{opened.path}').read_all()"
            )
            raise CorpusFormatError(
                f"{opened.path}: column {column!r} (rows from {row}) is compressed with "
                f"{codec} (Arrow IPC buffer compression, which pyarrow.feather.write_feather "
                "applies unless told otherwise), so it cannot be read in place from the "
                f"memory mapping. Rewrite it uncompressed: table = {read}; "
                "pyarrow.feather.write_feather(table, NEW_PATH, compression='uncompressed'), "
                "or write with pyarrow.ipc.new_file and the default IpcWriteOptions.",
                path=opened.path,
                column=column,
            )


#: Arrow's ``CompressionType`` codes (format/Message.fbs).
_CODECS = {0: "lz4", 1: "zstd"}


def _ipc_compression(opened: OpenedFile) -> Optional[str]:
    """The codec (``"lz4"``, ``"zstd"``) of the first record batch of ``opened``, read
    from its message header, or None where the batch is not compressed or the header
    cannot be read. For messages only: it is read on the error path."""
    if opened.mapping is None:
        return None
    start = 8 if opened.format == "file" else 0  # after "ARROW1" and its padding
    try:
        reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(opened.mapping.slice(start)))
        for _ in range(64):  # the schema, dictionaries, then the first record batch
            message = reader.read_next_message()
            if message.type == "record batch":
                return _batch_codec(message.metadata.to_pybytes())
    except (StopIteration, pa.ArrowException, ValueError, IndexError, struct.error):
        pass
    return None


def _batch_codec(metadata: bytes) -> Optional[str]:
    """The codec named by a RecordBatch message's flatbuffer (``Message.header`` ->
    ``RecordBatch.compression`` -> ``BodyCompression.codec``), or None."""

    def table(position: int) -> int:  # a table at the uoffset stored at position
        return position + struct.unpack_from("<I", metadata, position)[0]

    def field(table_at: int, index: int) -> Optional[int]:  # where field index lies
        vtable = table_at - struct.unpack_from("<i", metadata, table_at)[0]
        vtable_size = struct.unpack_from("<H", metadata, vtable)[0]
        if 4 + 2 * index + 2 > vtable_size:
            return None
        offset = struct.unpack_from("<H", metadata, vtable + 4 + 2 * index)[0]
        return table_at + offset if offset else None

    message = table(0)
    header = field(message, 2)  # Message.header (a RecordBatch)
    if header is None:
        return None
    compression = field(table(header), 3)  # RecordBatch.compression
    if compression is None:
        return None
    codec = field(table(compression), 0)  # BodyCompression.codec, default LZ4_FRAME
    code = 0 if codec is None else metadata[codec]
    return _CODECS.get(code, f"codec {code}")


def _check_alignment(
    path: Path, column: str, array: pa.Array, buffers: list[Optional[pa.Buffer]], row: int
) -> None:
    """Checks that offsets and values lie at addresses aligned to their width: the native
    side reads them as integers of that width. Arrow's IPC format aligns every buffer to 8
    bytes; an IPC reader hands a misaligned one through as it is."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        width = 8 if pa.types.is_large_list(array.type) else 4
        # Bit-packed booleans are read byte by byte: no alignment to check.
        typed = [("list offsets", buffers[1], width),
                 ("values", buffers[3], max(1, array.type.value_type.bit_width // 8))]
    else:
        typed = [("values", buffers[1], array.type.bit_width // 8)]
    for name, buffer, width in typed:
        if buffer is not None and buffer.size and buffer.address % width:
            raise CorpusFormatError(
                f"{path}: column {column!r} (rows from {row}): the {name} buffer is not "
                f"aligned to {width} bytes, as Arrow IPC requires; the file is corrupt. "
                "Regenerate it from its source (bytes in memory: copy them into a new "
                "buffer, which is aligned).",
                path=path,
                column=column,
            )


def _check_buffer_sizes(
    path: Path, column: str, array: pa.Array, buffers: list[Optional[pa.Buffer]], row: int
) -> None:
    """Checks that every buffer (``array.buffers()``) is large enough for the lengths the
    file declares.

    Arrow's IPC readers take the declared lengths on trust; the native side reads offsets
    and values by those lengths, so a short buffer must be caught before it is read.
    """
    needs = []
    length = len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        width = 8 if pa.types.is_large_list(array.type) else 4
        values = array.values
        value_bits = (values.offset + len(values)) * values.type.bit_width
        needs = [
            ("validity bitmap", buffers[0], -(-(array.offset + length) // 8)),
            ("list offsets", buffers[1], (array.offset + length + 1) * width if length else 0),
            ("values validity bitmap", buffers[2], -(-(values.offset + len(values)) // 8)),
            ("values", buffers[3], -(-value_bits // 8)),
        ]
    else:
        width = array.type.bit_width // 8
        needs = [
            ("validity bitmap", buffers[0], -(-(array.offset + length) // 8)),
            ("values", buffers[1], (array.offset + length) * width),
        ]
    for name, buffer, need in needs:
        have = 0 if buffer is None else buffer.size
        optional_bitmap = "validity" in name and buffer is None
        if have < need and not optional_bitmap:
            raise CorpusFormatError(
                f"{path}: column {column!r} (rows from {row}): the {name} buffer holds "
                f"{have} bytes but the declared lengths need {need}; the file is corrupt. "
                "Regenerate it from its source.",
                path=path,
                column=column,
            )
