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
from arrowloader.prepare.shard_plan import (
    LOSS_MASK_COLUMN,
    PROMPT_LENGTH_COLUMN,
    TOKEN_COLUMN,
    decode_schema,
)
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
    read = read_options(plan)
    for input_index, first, count, start, line in shard["segments"]:
        path = Path(plan["inputs"][input_index]["path"])
        yield from read_documents(path, read, first, count, start, line, plan["field_types"])


def read_options(plan: dict[str, Any]) -> ReadOptions:
    """How the plan's documents are read (plans of plain text name no example fields)."""
    read = plan["read"]
    return ReadOptions(read["text_field"], read["lines"], tuple(read["keep_fields"]),
                       read.get("prompt_field"), read.get("completion_field"),
                       read.get("messages_field"))


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
    kind = read_options(plan).kind
    value_chunks: list[np.ndarray] = []
    lengths: list[int] = []
    fields: list[list[Any]] = [[] for _ in keep]
    examples: dict[str, list[Any]] = {
        name: [] for name in (PROMPT_LENGTH_COLUMN, LOSS_MASK_COLUMN) if name in schema.names
    }
    for batch in _batches(plan_documents(plan, shard), batch_size):
        ids, prompts, masks = _tokenize(tokenizer, kind, batch)
        if eos is not None:
            for row in ids:
                row.append(eos)
            for mask in masks:  # after a conversation: in the loss when its end is
                mask.append(bool(mask) and mask[-1])
        if PROMPT_LENGTH_COLUMN in examples:
            examples[PROMPT_LENGTH_COLUMN].extend(prompts)
        if LOSS_MASK_COLUMN in examples:
            if kind == "prompt_completion":  # an appended EOS ends the completion
                masks = [[i >= p for i in range(len(row))] for row, p in zip(ids, prompts)]
            examples[LOSS_MASK_COLUMN].extend(masks)
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
    table = _shard_table(schema, value_chunks, lengths, fields, keep, examples)
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


def _tokenize(
    tokenizer: LoadedTokenizer, kind: str, batch: list[Document]
) -> tuple[list[list[int]], list[int], list[list[bool]]]:
    """Token ids of a batch of documents, with, for fine-tuning examples, their prompt
    lengths (prompt and completion) or the chat template's assistant masks
    (conversations); empty lists where they have none."""
    if kind == "text":
        return tokenizer.encode_batch([document.text for document in batch]), [], []
    if kind == "prompt_completion":
        ids, prompts = tokenizer.encode_examples([d.parts[0] for d in batch],
                                                 [d.parts[1] for d in batch])
        return ids, prompts, []
    ids, masks = tokenizer.encode_conversations([d.parts[0] for d in batch])
    for document, row, mask in zip(batch, ids, masks):
        if len(mask) != len(row):
            raise TokenizerError(
                f"{document.where}: the chat template's assistant mask has {len(mask)} "
                f"entries for {len(row)} tokens"
            )
    return ids, [], [[bool(v) for v in mask] for mask in masks]


def _shard_table(
    schema: pa.Schema,
    value_chunks: list[np.ndarray],
    lengths: list[int],
    fields: list[list[Any]],
    keep: list[str],
    examples: Optional[dict[str, list[Any]]] = None,
) -> pa.Table:
    value_type = schema.field(TOKEN_COLUMN).type.value_type
    values = (np.concatenate(value_chunks) if value_chunks
              else np.zeros(0, dtype=value_type.to_pandas_dtype()))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    large = bool(offsets[-1] > np.iinfo(np.int32).max)
    # More tokens than 32-bit list offsets reach: large_list, as pyarrow would need.
    ids = _list_array(offsets, pa.array(values), large)
    if large:
        schema = schema.set(0, pa.field(TOKEN_COLUMN, ids.type, nullable=False))
    written = []
    for name, column in (examples or {}).items():
        if name == LOSS_MASK_COLUMN:  # per token: the token column's offsets
            flags = np.fromiter((v for mask in column for v in mask), dtype=bool,
                                count=int(offsets[-1]))
            array = _list_array(offsets, pa.array(flags), large)
            schema = schema.set(schema.get_field_index(name),
                                pa.field(name, array.type, nullable=False))
        else:
            array = pa.array(column, type=schema.field(name).type)
        written.append(array)
    columns = [ids, *written] + [
        pa.array(fields[i], type=schema.field(name).type) for i, name in enumerate(keep)
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _list_array(offsets: np.ndarray, values: pa.Array, large: bool) -> pa.Array:
    """A list (``large``: large_list) array of ``values`` cut at ``offsets`` (int64)."""
    if large:
        return pa.LargeListArray.from_arrays(pa.array(offsets), values)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


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
