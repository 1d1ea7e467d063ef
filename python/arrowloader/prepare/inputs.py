"""Reading documents out of the inputs of ``arrowloader prepare``.

Formats, by file name:

- ``.txt``: the whole file is one document, or (``lines=True``) every non-empty line is
  one (``\\n`` ends a line; a ``\\r`` before it is dropped);
- ``.jsonl``, ``.jsonl.gz``: every non-empty line is a JSON object whose ``text_field``
  is a string;
- ``.parquet``: every row is a document; ``text_field`` is a string column.

For fine-tuning data a document is made of other fields instead of ``text_field``: a
``prompt_field`` and a ``completion_field`` (two strings), or a ``messages_field`` (a
conversation: a list of objects with string ``role`` and ``content``), in ``.jsonl`` and
``.parquet`` inputs alike.

Text is UTF-8 and decoded strictly. A *scan* walks an input once without tokenizing:
it counts the documents, measures each one's UTF-8 size and where it starts, checks the
JSON and the text field, and infers the Arrow type of every kept field. Reading then
takes any range of documents by the positions the scan found.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Optional

import numpy as np
import pyarrow as pa

from arrowloader.errors import ArrowLoaderError

#: Input formats by file name ending (checked longest first).
SUFFIXES = {".jsonl.gz": "jsonl", ".jsonl": "jsonl", ".parquet": "parquet", ".txt": "text"}

_READ_BLOCK = 1 << 24


class PrepareInputError(ArrowLoaderError, ValueError):
    """An input of ``arrowloader prepare`` cannot be read as documents: not UTF-8, not
    JSON, no text field, a kept field of two types. The message names file and line
    (or row) and field."""


def input_format(path: Path) -> Optional[str]:
    """``"text"``, ``"jsonl"`` or ``"parquet"`` for a supported file name, else None."""
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIXES[suffix]
    return None


def find_inputs(inputs: Sequence[str]) -> list[Path]:
    """Expands files, folders (searched recursively, files of a supported format) and
    globs into a list of files in a fixed order: each argument's files sorted by path,
    arguments in the order given, duplicates dropped.

    Raises:
        PrepareInputError: an argument names nothing, or a file of no supported format.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and input_format(p))
            if not files:
                raise PrepareInputError(
                    f"{item}: the folder holds no .txt, .jsonl, .jsonl.gz or .parquet file"
                )
        elif path.is_file():
            if input_format(path) is None:
                raise PrepareInputError(
                    f"{item}: unsupported input; expected .txt, .jsonl, .jsonl.gz or .parquet"
                )
            files = [path]
        elif glob.has_magic(item):
            files = sorted(Path(p) for p in glob.glob(item, recursive=True)
                           if Path(p).is_file() and input_format(Path(p)))
            if not files:
                raise PrepareInputError(f"{item}: the glob matches no supported input file")
        else:
            raise PrepareInputError(f"{item}: no such file or folder")
        for file in files:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(key)
    if not found:
        raise PrepareInputError("no input files")
    return found


@dataclass(frozen=True)
class ReadOptions:
    """How documents are taken out of the inputs: their text from ``text_field``, or a
    fine-tuning example from ``prompt_field`` and ``completion_field``, or from
    ``messages_field`` (see the module docstring)."""

    text_field: str = "text"
    lines: bool = False
    keep_fields: tuple[str, ...] = ()
    prompt_field: Optional[str] = None
    completion_field: Optional[str] = None
    messages_field: Optional[str] = None

    @property
    def kind(self) -> str:
        """``"text"``, ``"prompt_completion"`` or ``"messages"``."""
        if self.messages_field is not None:
            return "messages"
        return "text" if self.prompt_field is None else "prompt_completion"

    @property
    def document_fields(self) -> tuple[str, ...]:
        """The fields a document is made of."""
        if self.kind == "messages":
            return (str(self.messages_field),)
        if self.kind == "prompt_completion":
            return (str(self.prompt_field), str(self.completion_field))
        return (self.text_field,)


@dataclass
class Document:
    """One document: its text (for a fine-tuning example, the text of its parts joined:
    what its size is estimated from), its parts (the prompt and the completion, or the
    conversation; empty for plain text), its kept field values (in ``keep_fields``
    order) and where it came from, for error messages."""

    text: str
    fields: tuple[Any, ...]
    where: str
    parts: tuple[Any, ...] = ()


@dataclass
class FileScan:
    """What a scan learnt about one input.

    Attributes:
        sizes: UTF-8 bytes of every document's text, int64 ``[documents]``.
        starts: byte offset where every document's line starts (line formats; for gzip,
            in the decompressed stream), int64 ``[documents]``; zeros otherwise.
        lines: 1-based line number of every document (line formats), else its row
            (parquet) or 0, int64 ``[documents]``.
        field_types: the inferred type name of each kept field (see :class:`FieldType`).
        arrow_types: the Arrow types of a parquet input's kept fields.
    """

    sizes: np.ndarray
    starts: np.ndarray
    lines: np.ndarray
    field_types: dict[str, str]
    arrow_types: dict[str, pa.DataType] = dataclass_field(default_factory=dict)


def _line_bounds(data: bytes, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive, without ``\\n``) of the complete lines in ``data``."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buffer == 10)
    starts = np.empty_like(ends)
    if len(ends):
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    return starts + base, ends + base


def open_binary(path: Path) -> BinaryIO:
    """The file's bytes, decompressed for ``.gz``."""
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def iter_raw_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yields ``(line number, start byte, line bytes without \\n and \\r)`` for every
    non-empty line, reading blocks of 16 MiB."""
    number = 0
    offset = 0
    tail = b""
    with open_binary(path) as handle:
        while True:
            block = handle.read(_READ_BLOCK)
            data = tail + block
            if not block:
                if data:
                    data += b"\n"
                else:
                    return
            starts, ends = _line_bounds(data, 0)
            for start, end in zip(starts.tolist(), ends.tolist()):
                number += 1
                stop = end - 1 if end > start and data[end - 1] == 13 else end
                if stop > start:
                    yield number, offset + start, data[start:stop]
            consumed = int(ends[-1]) + 1 if len(ends) else 0
            tail = data[consumed:]
            offset += consumed
            if not block:
                return


def decode(raw: bytes, where: str) -> str:
    """UTF-8 text of ``raw``, or PrepareInputError naming ``where`` and the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrepareInputError(
            f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason}); convert the input "
            "to UTF-8"
        ) from None


def parse_json_line(
    raw: bytes, where: str, options: ReadOptions
) -> tuple[dict[str, Any], str, tuple[Any, ...]]:
    """The object of one JSON line, its text and its parts (see :func:`document_parts`)."""
    try:
        record = json.loads(decode(raw, where))
    except ValueError as exc:
        raise PrepareInputError(f"{where}: not a JSON object ({exc})") from None
    if not isinstance(record, dict):
        raise PrepareInputError(f"{where}: a JSON {type(record).__name__}, expected an object")
    text, parts = document_parts(record, where, options)
    return record, text, parts


def document_parts(
    record: dict[str, Any], where: str, options: ReadOptions
) -> tuple[str, tuple[Any, ...]]:
    """The text and the parts of one record: ``(text, ())`` for plain text, ``(prompt +
    completion, (prompt, completion))``, or ``(the contents joined, (messages,))``.

    Raises:
        PrepareInputError: a field is missing or of the wrong type (naming ``where``, the
            field and, for a message, its number).
    """
    if options.kind == "messages":
        field = str(options.messages_field)
        messages = record.get(field)
        if not isinstance(messages, list) or not messages:
            raise PrepareInputError(
                f"{where}: field {field!r} is {_what(record, field)}, expected a non-empty "
                "list of messages ({'role': ..., 'content': ...}); choose the field with "
                "--messages-field"
            )
        for k, message in enumerate(messages):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):
                raise PrepareInputError(
                    f"{where}: field {field!r} message {k} is not an object with string "
                    "'role' and 'content'"
                )
        return "".join(m["content"] for m in messages), (messages,)
    values = []
    for field in options.document_fields:
        value = record.get(field)
        if not isinstance(value, str):
            option = {options.text_field: "--text-field", options.prompt_field: "--prompt-field",
                      options.completion_field: "--completion-field"}.get(field, "")
            names = ", ".join(repr(k) for k in list(record)[:10])
            raise PrepareInputError(
                f"{where}: field {field!r} is {_what(record, field)}, expected a string (the "
                f"record's fields: {names}); choose the field with {option}"
            )
        values.append(value)
    if options.kind == "text":
        return values[0], ()
    return "".join(values), tuple(values)


def _what(record: dict[str, Any], field: str) -> str:
    return "missing" if field not in record else f"a {type(record[field]).__name__}"


def utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


class FieldType:
    """The Arrow type of a kept JSON field, inferred over all its values: ``null`` (none
    seen yet), ``bool``, ``int`` (int64), ``float`` (float64; ints too), ``string``, or
    ``json`` (mixed or nested values, each stored as its JSON text)."""

    ARROW: ClassVar[dict[str, pa.DataType]] = {
        "null": pa.string(), "bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
        "string": pa.string(), "json": pa.string(),
    }

    @staticmethod
    def of(value: Any) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "int" if -(2**63) <= value < 2**63 else "json"
        if isinstance(value, float):
            return "float"
        if isinstance(value, str):
            return "string"
        return "json"

    @staticmethod
    def join(a: str, b: str) -> str:
        if a == b or b == "null":
            return a
        if a == "null":
            return b
        if {a, b} == {"int", "float"}:
            return "float"
        return "json"

    @staticmethod
    def from_arrow(arrow_type: pa.DataType) -> str:
        """The name of a parquet column's type: its own Arrow type, as ``arrow:TYPE``."""
        return f"arrow:{arrow_type}"

    @staticmethod
    def merge(field: str, a: str, b: str, where: Path) -> str:
        """Joins the types one field has in two inputs; parquet types must agree.

        Raises:
            PrepareInputError: the field has two types that cannot be joined.
        """
        if not a.startswith("arrow:") and not b.startswith("arrow:"):
            return FieldType.join(a, b)
        if a == b or b == "null":
            return a
        if a == "null":
            return b
        for name, other in ((a, b), (b, a)):
            if not name.startswith("arrow:") and f"arrow:{FieldType.ARROW[name]}" == other:
                return other
        raise PrepareInputError(
            f"{where}: kept field {field!r} is {b.removeprefix('arrow:')} here but "
            f"{a.removeprefix('arrow:')} in earlier inputs; a kept field needs one type"
        )

    @staticmethod
    def convert(name: str, value: Any) -> Any:
        """A JSON value as the column of type ``name`` stores it."""
        if value is None or not name == "json":
            return float(value) if name == "float" and value is not None else value
        return json.dumps(value, sort_keys=True, ensure_ascii=False)


class SampleKeeper:
    """Keeps the texts of evenly spaced documents over a whole scan, at most ``capacity``
    of them, whatever the number of documents: documents whose global number is a
    multiple of ``stride``; when full, every other one goes and the stride doubles."""

    def __init__(self, capacity: int = 256, max_chars: int = 1 << 16) -> None:
        self.capacity = capacity
        self.max_chars = max_chars
        self.stride = 1
        self.kept: list[tuple[int, str]] = []

    def wants(self, number: int) -> bool:
        return self.capacity > 0 and number % self.stride == 0

    def keep(self, number: int, text: str) -> None:
        if not self.wants(number):
            return
        self.kept.append((number, text[: self.max_chars]))
        while len(self.kept) > self.capacity:
            self.stride *= 2
            self.kept = [(n, t) for n, t in self.kept if n % self.stride == 0]


def scan_file(
    path: Path, options: ReadOptions, sampler: SampleKeeper, first_number: int,
    file_sampler: Optional[SampleKeeper] = None,
) -> FileScan:
    """Scans one input (see the module docstring); ``first_number`` is the global number
    of its first document, for ``sampler``; ``file_sampler`` (numbered from 0) keeps
    samples of this file alone.

    Raises:
        PrepareInputError: the input is not UTF-8, not JSON lines, lacks the text field,
            or a kept field is missing from a parquet file.
    """
    kind = input_format(path)
    file_sampler = file_sampler if file_sampler is not None else SampleKeeper(0, 0)
    if kind == "parquet":
        return _scan_parquet(path, options, sampler, first_number, file_sampler)
    if options.keep_fields and kind == "text":
        raise PrepareInputError(
            f"{path}: --keep-fields needs .jsonl or .parquet inputs; a .txt file has no fields"
        )
    if options.kind != "text" and kind == "text":
        raise PrepareInputError(
            f"{path}: fine-tuning examples (--prompt-field, --messages-field) need .jsonl or "
            ".parquet inputs; a .txt file has no fields"
        )
    if kind == "text" and not options.lines:
        size = path.stat().st_size
        chars = max(sampler.max_chars if sampler.wants(first_number) else 0,
                    file_sampler.max_chars)
        if chars:
            with open(path, "rb") as handle:
                head = handle.read(chars * 4).decode("utf-8", errors="ignore")
            sampler.keep(first_number, head)
            file_sampler.keep(0, head)
        one = np.zeros(1, dtype=np.int64)
        return FileScan(np.array([size], dtype=np.int64), one, one.copy(), {})
    sizes: list[int] = []
    starts: list[int] = []
    numbers: list[int] = []
    types = {name: "null" for name in options.keep_fields}
    for number, start, raw in iter_raw_lines(path):
        where = f"{path}: line {number}"
        document = first_number + len(sizes)
        if kind == "jsonl":
            record, text, _ = parse_json_line(raw, where, options)
            for name in options.keep_fields:
                types[name] = FieldType.join(types[name], FieldType.of(record.get(name)))
            size = utf8_size(text)
        else:
            text = decode(raw, where)
            size = len(raw)
        if sampler.wants(document):
            sampler.keep(document, text)
        if file_sampler.wants(len(sizes)):
            file_sampler.keep(len(sizes), text)
        sizes.append(size)
        starts.append(start)
        numbers.append(number)
    return FileScan(
        np.array(sizes, dtype=np.int64),
        np.array(starts, dtype=np.int64),
        np.array(numbers, dtype=np.int64),
        types,
    )


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq  # here: only .parquet inputs pay for loading it

    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise PrepareInputError(f"{path}: not a readable parquet file ({exc})") from None


def parquet_field_types(path: Path, options: ReadOptions) -> dict[str, pa.DataType]:
    """Arrow types of the document's fields (the text field, or a fine-tuning example's)
    and kept fields of a parquet input.

    Raises:
        PrepareInputError: a field is missing, or the text field is not a string column.
    """
    schema = _parquet_file(path).schema_arrow
    types = {}
    for name in (*options.document_fields, *options.keep_fields):
        index = schema.get_field_index(name)
        if index < 0:
            raise PrepareInputError(
                f"{path}: no column {name!r}; the file has columns {schema.names}"
            )
        types[name] = schema.field(index).type
    if options.kind != "text":
        return types  # the fields of an example are checked row by row, as in JSON lines
    text_type = types[options.text_field]
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise PrepareInputError(
            f"{path}: column {options.text_field!r} has type {text_type}; expected a string "
            "column (choose it with --text-field)"
        )
    return types


def _scan_parquet(
    path: Path, options: ReadOptions, sampler: SampleKeeper, first_number: int,
    file_sampler: SampleKeeper,
) -> FileScan:
    import pyarrow.compute as pc  # here: only .parquet inputs pay for loading it

    types = parquet_field_types(path, options)
    parquet = _parquet_file(path)
    sizes = []
    row = 0
    for group in range(parquet.num_row_groups):
        if options.kind != "text":
            texts = [text for text, _ in _parquet_examples(path, parquet, group, row, options)]
            for i, text in enumerate(texts):
                if sampler.wants(first_number + row + i):
                    sampler.keep(first_number + row + i, text)
                if file_sampler.wants(row + i):
                    file_sampler.keep(row + i, text)
            sizes.append(np.array([utf8_size(text) for text in texts], dtype=np.int64))
            row += len(texts)
            continue
        text = parquet.read_row_group(group, columns=[options.text_field]).column(0)
        if text.null_count:
            nulls = np.flatnonzero(np.asarray(text.is_null().to_numpy(zero_copy_only=False)))
            raise PrepareInputError(
                f"{path}: row {row + int(nulls[0])}: column {options.text_field!r} is null; "
                "every document needs a text"
            )
        lengths = pc.binary_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
        for i in range(len(lengths)):
            if sampler.wants(first_number + row + i):
                sampler.keep(first_number + row + i, text[i].as_py())
            if file_sampler.wants(row + i):
                file_sampler.keep(row + i, text[i].as_py())
        sizes.append(lengths)
        row += len(lengths)
    all_sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    return FileScan(
        all_sizes,
        np.zeros(len(all_sizes), dtype=np.int64),
        np.arange(len(all_sizes), dtype=np.int64),
        {name: FieldType.from_arrow(types[name]) for name in options.keep_fields},
        {name: types[name] for name in options.keep_fields},
    )


def _parquet_examples(
    path: Path, parquet: Any, group: int, first_row: int, options: ReadOptions,
    lo: int = 0, hi: Optional[int] = None,
) -> list[tuple[str, tuple[Any, ...]]]:
    """``(text, parts)`` of rows ``lo .. hi`` of a row group of fine-tuning examples (the
    group's first row is row ``first_row`` of the file), as :func:`document_parts` makes
    them of JSON records."""
    fields = options.document_fields
    table = parquet.read_row_group(group, columns=list(fields))
    hi = table.num_rows if hi is None else hi
    columns = [table.column(i).slice(lo, hi - lo).to_pylist() for i in range(len(fields))]
    return [
        document_parts(dict(zip(fields, values)), f"{path}: row {first_row + lo + i}", options)
        for i, values in enumerate(zip(*columns))
    ]


def read_documents(
    path: Path, options: ReadOptions, first: int, count: int, start: int, line: int,
    field_types: dict[str, str],
) -> Iterator[Document]:
    """Yields ``count`` documents of ``path`` from its document ``first``, which starts at
    byte ``start`` (line formats) and is on line (or row) ``line``.

    Raises:
        PrepareInputError: the input changed since the scan, or a document is malformed.
    """
    kind = input_format(path)
    if kind == "text" and not options.lines:
        raw = path.read_bytes()
        yield Document(decode(raw, str(path)), (), str(path))
        return
    if kind == "parquet":
        yield from _read_parquet(path, options, first, count, field_types)
        return
    produced = 0
    number = line
    with open_binary(path) as handle:
        handle.seek(start)
        for raw_line in handle:
            where = f"{path}: line {number}"
            number += 1
            raw = raw_line.rstrip(b"\n")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if not raw:
                continue
            if kind == "jsonl":
                record, text, parts = parse_json_line(raw, where, options)
                fields = tuple(
                    FieldType.convert(field_types[name], record.get(name))
                    for name in options.keep_fields
                )
                yield Document(text, fields, where, parts)
            else:
                yield Document(decode(raw, where), (), where)
            produced += 1
            if produced == count:
                return
    if produced < count:
        raise PrepareInputError(
            f"{path}: has {produced} documents from line {line} on, {count} expected; the "
            "input changed while it was being prepared"
        )


def _read_parquet(
    path: Path, options: ReadOptions, first: int, count: int, field_types: dict[str, str]
) -> Iterator[Document]:
    parquet = _parquet_file(path)
    row = 0
    end = first + count
    for group in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(group).num_rows
        if row + rows > first and row < end:
            lo, hi = max(first, row) - row, min(end, row + rows) - row
            yield from _parquet_documents(path, parquet, group, row, options, lo, hi)
        row += rows
        if row >= end:
            break
    if row < end:
        raise PrepareInputError(
            f"{path}: has {row} rows, {end} expected; the input changed while it was being "
            "prepared"
        )


def _parquet_documents(
    path: Path, parquet: Any, group: int, first_row: int, options: ReadOptions, lo: int,
    hi: int,
) -> Iterator[Document]:
    """The documents of rows ``lo .. hi`` of a row group whose first row is row
    ``first_row`` of the file."""
    kept: list[list[Any]] = []
    if options.keep_fields:
        table = parquet.read_row_group(group, columns=list(options.keep_fields))
        kept = [table.column(i).slice(lo, hi - lo).to_pylist()
                for i in range(len(options.keep_fields))]
    if options.kind != "text":
        examples = _parquet_examples(path, parquet, group, first_row, options, lo, hi)
        for i, (text, parts) in enumerate(examples):
            yield Document(text, tuple(column[i] for column in kept),
                           f"{path}: row {first_row + lo + i}", parts)
        return
    texts = parquet.read_row_group(group, columns=[options.text_field]).column(0)
    for i, text in enumerate(texts.slice(lo, hi - lo).to_pylist()):
        where = f"{path}: row {first_row + lo + i}"
        if not isinstance(text, str):
            raise PrepareInputError(
                f"{where}: column {options.text_field!r} is null; every document needs a text"
            )
        yield Document(text, tuple(column[i] for column in kept), where)


def input_identity(path: Path) -> dict[str, Any]:
    """What identifies an input without reading it: path, size and mtime."""
    st = os.stat(path)
    return {"path": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
