"""Writing one planned shard: read its documents, tokenize them in batches, write one
Arrow IPC file, hash it, and record it as done.

A shard is written to a hidden ``.NAME.partial`` file and renamed into place only when
whole; its *done record* (``.arrowloader-prepare/done/NAME.json``: its manifest entry
plus the file's size and mtime) is written after the rename. An interrupted run leaves at
most partial files, which the next run deletes and redoes; shards with a done record that
still matches their file are kept.

Shards are byte-identical for the same documents, tokenizer and options: one record
batch, no metadata that depends on time, place or engine.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

from arrowloader.manifest import ShardEntry, sha256_file, write_text_atomic
from arrowloader.prepare.inputs import Document, ReadOptions, read_documents
from arrowloader.prepare.shard_plan import TOKEN_COLUMN, decode_schema
from arrowloader.prepare.tokenizer import LoadedTokenizer, TokenizerError

#: Folder, inside the output folder, holding the plan and done records of an unfinished
#: preparation.
STATE_FOLDER = ".arrowloader-prepare"
#: Characters of text per tokenizer call, at most (besides ``batch_size`` documents).
_BATCH_CHARS = 8 << 20

Progress = Callable[[int, int], None]


def done_record_path(output: Path, name: str) -> Path:
    return output / STATE_FOLDER / "done" / f"{name}.json"


def partial_path(output: Path, name: str) -> Path:
    return output / f".{name}.partial"


def plan_documents(plan: dict[str, Any], shard: dict[str, Any]) -> Iterator[Document]:
    """The documents of a planned shard, in order."""
    read = ReadOptions(plan["read"]["text_field"], plan["read"]["lines"],
                       tuple(plan["read"]["keep_fields"]))
    for input_index, first, count, start, line in shard["segments"]:
        path = Path(plan["inputs"][input_index]["path"])
        yield from read_documents(path, read, first, count, start, line, plan["field_types"])


def _batches(documents: Iterator[Document], batch_size: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    chars = 0
    for document in documents:
        batch.append(document)
        chars += len(document.text)
        if len(batch) >= batch_size or chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def write_shard(
    plan: dict[str, Any],
    shard: dict[str, Any],
    output: Path,
    tokenizer: LoadedTokenizer,
    batch_size: int = 1000,
    progress: Optional[Progress] = None,
) -> ShardEntry:
    """Tokenizes and writes one shard of ``plan`` into ``output``; returns its entry.

    Args:
        plan: see :func:`arrowloader.prepare.shard_plan.make_plan`.
        shard: one of ``plan["shards"]``.
        output: the output folder.
        tokenizer: the plan's tokenizer.
        batch_size: documents per tokenizer call.
        progress: called with (documents, tokens) after every batch.

    Raises:
        PrepareInputError: a document is malformed or an input changed since the scan.
        TokenizerError: the tokenizer produced an id outside its vocabulary.
    """
    schema = decode_schema(plan["schema"])
    dtype = np.dtype(plan["token_dtype"])
    vocab_size = plan["vocab_size"]
    eos = plan["eos_token_id"] if plan["append_eos"] else None
    keep = list(plan["read"]["keep_fields"])
    value_chunks: list[np.ndarray] = []
    lengths: list[int] = []
    fields: list[list[Any]] = [[] for _ in keep]
    for batch in _batches(plan_documents(plan, shard), batch_size):
        ids = tokenizer.encode_batch([document.text for document in batch])
        if eos is not None:
            for row in ids:
                row.append(eos)
        counts = [len(row) for row in ids]
        values = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=sum(counts))
        if len(values) and (values.min() < 0 or values.max() >= vocab_size):
            bad = int(np.flatnonzero((values < 0) | (values >= vocab_size))[0])
            row = int(np.searchsorted(np.cumsum(counts), bad, side="right"))
            raise TokenizerError(
                f"{batch[row].where}: the tokenizer produced id {int(values[bad])}, outside "
                f"its vocabulary of {vocab_size}"
            )
        value_chunks.append(values.astype(dtype))
        lengths.extend(counts)
        for i in range(len(keep)):
            fields[i].extend(document.fields[i] for document in batch)
        if progress is not None:
            progress(len(batch), len(values))
    if len(lengths) != shard["documents"]:
        raise TokenizerError(
            f"shard {shard['file']}: read {len(lengths)} documents, the plan has "
            f"{shard['documents']}; an input changed while it was being prepared"
        )
    table = _shard_table(schema, value_chunks, lengths, fields, keep)
    path = output / shard["file"]
    partial = partial_path(output, shard["file"])
    with pa.OSFile(str(partial), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=max(1, table.num_rows))
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, path)
    entry = ShardEntry(shard["file"], len(lengths), int(sum(lengths)), path.stat().st_size,
                       sha256_file(path))
    record_done(output, entry)
    return entry


def _shard_table(
    schema: pa.Schema,
    value_chunks: list[np.ndarray],
    lengths: list[int],
    fields: list[list[Any]],
    keep: list[str],
) -> pa.Table:
    value_type = schema.field(TOKEN_COLUMN).type.value_type
    values = (np.concatenate(value_chunks) if value_chunks
              else np.zeros(0, dtype=value_type.to_pandas_dtype()))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        # More tokens than 32-bit list offsets reach: large_list, as pyarrow would need.
        ids: pa.Array = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
        schema = schema.set(0, pa.field(TOKEN_COLUMN, ids.type, nullable=False))
    else:
        ids = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values))
    columns = [ids] + [
        pa.array(fields[i], type=schema.field(name).type) for i, name in enumerate(keep)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def record_done(output: Path, entry: ShardEntry) -> None:
    """Writes the done record of a shard just renamed into place."""
    path = done_record_path(output, entry.file)
    path.parent.mkdir(parents=True, exist_ok=True)
    st = (output / entry.file).stat()
    record = {**entry.__dict__, "mtime_ns": st.st_mtime_ns}
    write_text_atomic(path, json.dumps(record) + "\n")


def completed_entry(output: Path, name: str) -> Optional[ShardEntry]:
    """The entry of a shard a previous run completed, or None when it must be redone:
    no done record, or the file is missing, not a regular file (a symbolic link is never
    trusted), or its size or mtime differ from the record."""
    try:
        record = json.loads(done_record_path(output, name).read_text(encoding="utf-8"))
        st = os.lstat(output / name)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        entry = ShardEntry(record["file"], int(record["rows"]), int(record["tokens"]),
                           int(record["bytes"]), str(record["sha256"]))
        same = (record["file"] == name and st.st_size == entry.bytes
                and st.st_mtime_ns == record["mtime_ns"])
    except (KeyError, TypeError, ValueError):
        return None
    return entry if same else None
