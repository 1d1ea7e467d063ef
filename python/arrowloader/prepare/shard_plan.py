"""The shard plan of ``arrowloader prepare``: which documents go into which shard,
decided before any document is tokenized.

Both engines (local and Ray) work from the same plan, and a shard's bytes depend only on
its documents, the tokenizer and the options, so both write the same shards. A plan is
computed from one scan of the inputs (:func:`arrowloader.prepare.inputs.scan_file`): the
size of a document's shard data is estimated as ``a * utf8_bytes + b``, where ``a`` (token
bytes per text byte) comes from tokenizing an evenly spaced sample of at most 256
documents and ``b`` covers the list offset, the appended EOS and kept fields. Documents
are cut into consecutive shards whose estimate stays within ``shard_size`` (a document
larger than that gets a shard of its own), so shards come out at about ``shard_size``.

A plan is plain JSON: the engines pass it to their workers and a preparation keeps it
in its output folder so that an interrupted run resumes with the very same plan.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

from arrowloader.prepare.inputs import (
    FieldType,
    PrepareInputError,
    ReadOptions,
    SampleKeeper,
    input_format,
    input_identity,
    scan_file,
)
from arrowloader.prepare.tokenizer import LoadedTokenizer

PLAN_VERSION = 1
#: 512 MiB, the default ``--shard-size``.
DEFAULT_SHARD_SIZE = 512 << 20
#: Shard files are named SHARD_NAME.format(index).
SHARD_NAME = "shard-{:05d}.arrow"
#: The token column every shard holds.
TOKEN_COLUMN = "input_ids"


@dataclass(frozen=True)
class PrepareOptions:
    """Options of a preparation that decide its output.

    Attributes:
        text_field: the text field of JSON lines and parquet inputs.
        lines: ``.txt`` inputs hold one document per non-empty line.
        keep_fields: fields of JSON lines / parquet inputs carried into every shard.
        append_eos: end every document with the tokenizer's EOS id.
        shard_size: target bytes of a shard file.
    """

    text_field: str = "text"
    lines: bool = False
    keep_fields: tuple[str, ...] = ()
    append_eos: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE

    @property
    def read(self) -> ReadOptions:
        return ReadOptions(self.text_field, self.lines, self.keep_fields)


def token_dtype(vocab_size: int) -> str:
    """The narrowest Arrow type that holds every id below ``vocab_size``: ``uint16`` up to
    65,536 ids, else ``int32`` (what torch and numpy read without a conversion), else
    ``uint32``."""
    if vocab_size <= 1 << 16:
        return "uint16"
    if vocab_size <= 1 << 31:
        return "int32"
    return "uint32"


def fingerprint(
    identities: Sequence[dict[str, Any]], tokenizer: LoadedTokenizer, options: PrepareOptions
) -> str:
    """SHA-256 over what decides the output: the inputs' paths, sizes and mtimes, the
    tokenizer's hash and EOS, and the options. An unfinished preparation resumes only
    with the same fingerprint."""
    facts = {
        "plan_version": PLAN_VERSION,
        "inputs": list(identities),
        "tokenizer": tokenizer.spec.to_json(),
        "options": {
            "text_field": options.text_field,
            "lines": options.lines,
            "keep_fields": list(options.keep_fields),
            "append_eos": options.append_eos,
            "shard_size": options.shard_size,
        },
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def shard_schema(dtype: str, field_types: dict[str, pa.DataType], large: bool = False) -> pa.Schema:
    """The schema of every shard: ``input_ids`` list (large_list when ``large``) of
    ``dtype``, then the kept fields."""
    value = pa.from_numpy_dtype(np.dtype(dtype))
    ids = pa.large_list(value) if large else pa.list_(value)
    return pa.schema(
        [pa.field(TOKEN_COLUMN, ids, nullable=False)]
        + [pa.field(name, kind) for name, kind in field_types.items()]
    )


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema as base64 text, for a JSON plan."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def decode_schema(text: str) -> pa.Schema:
    """The schema :func:`encode_schema` encoded."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def make_plan(
    paths: Sequence[Path],
    tokenizer: LoadedTokenizer,
    options: PrepareOptions,
    progress: Optional[Callable[[int], None]] = None,
) -> dict[str, Any]:
    """Scans ``paths`` and plans the shards (see the module docstring).

    Args:
        paths: input files, in corpus order.
        tokenizer: the tokenizer (its sample tokenization sets the size estimate).
        options: see :class:`PrepareOptions`.
        progress: called with the input bytes of every file scanned.

    Returns:
        The plan as a JSON-ready dict: ``inputs``, ``shards`` (each with ``index``,
        ``file``, ``documents``, ``estimated_bytes`` and ``segments`` of
        ``[input, first document, count, start byte, line]``), ``schema``,
        ``field_types``, ``token_dtype``, sizes and the fingerprint.

    Raises:
        PrepareInputError: an input is malformed, or the inputs hold no document.
    """
    read = options.read
    identities = [input_identity(p) for p in paths]
    sampler = SampleKeeper()
    scans = []
    field_types = {name: "null" for name in options.keep_fields}
    arrow_types: dict[str, pa.DataType] = {}
    documents = 0
    for path, identity in zip(paths, identities):
        scan = scan_file(path, read, sampler, documents)
        for name in options.keep_fields:
            field_types[name] = FieldType.merge(name, field_types[name],
                                                scan.field_types[name], path)
        arrow_types.update(scan.arrow_types)
        documents += len(scan.sizes)
        scans.append(scan)
        if progress is not None:
            progress(identity["bytes"])
    if documents == 0:
        raise PrepareInputError(
            f"the {len(paths)} inputs hold no document (empty files or only empty lines)"
        )
    dtype = token_dtype(tokenizer.vocab_size)
    width = np.dtype(dtype).itemsize
    sample_texts = [text for _, text in sampler.kept]
    sample_bytes = sum(len(t.encode("utf-8")) for t in sample_texts)
    sample_tokens = sum(len(ids) for ids in tokenizer.encode_batch(sample_texts))
    per_byte = width * sample_tokens / max(1, sample_bytes)
    per_document = 4 + (width if options.append_eos else 0) + 12 * len(options.keep_fields)
    types = {
        name: arrow_types[name] if kind.startswith("arrow:") else FieldType.ARROW[kind]
        for name, kind in field_types.items()
    }
    shards = _cut(scans, per_byte, per_document, options.shard_size)
    return {
        "version": PLAN_VERSION,
        "fingerprint": fingerprint(identities, tokenizer, options),
        "inputs": [
            {**identity, "format": input_format(path), "documents": len(scan.sizes)}
            for path, identity, scan in zip(paths, identities, scans)
        ],
        "tokenizer": tokenizer.spec.to_json(),
        "vocab_size": tokenizer.vocab_size,
        "eos_token_id": tokenizer.eos_token_id,
        "token_dtype": dtype,
        "read": {
            "text_field": options.text_field,
            "lines": options.lines,
            "keep_fields": list(options.keep_fields),
        },
        "field_types": field_types,
        "schema": encode_schema(shard_schema(dtype, types)),
        "append_eos": options.append_eos,
        "shard_size": options.shard_size,
        "estimate": {"bytes_per_text_byte": per_byte, "bytes_per_document": per_document},
        "documents": documents,
        "shards": shards,
    }


def _cut(
    scans: Sequence[Any], per_byte: float, per_document: float, shard_size: int
) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    segments: list[list[int]] = []
    filled = 0.0
    count = 0

    def close() -> None:
        nonlocal segments, filled, count
        index = len(shards)
        shards.append({
            "index": index,
            "file": SHARD_NAME.format(index),
            "documents": count,
            "estimated_bytes": int(filled),
            "segments": segments,
        })
        segments, filled, count = [], 0.0, 0

    for input_index, scan in enumerate(scans):
        n = len(scan.sizes)
        if n == 0:
            continue
        # cumulative[k] = estimated bytes of the file's documents before document k
        cumulative = np.zeros(n + 1, dtype=np.float64)
        np.cumsum(scan.sizes * per_byte + per_document, out=cumulative[1:])
        position = 0
        while position < n:
            room = shard_size - filled
            fits = int(np.searchsorted(cumulative, cumulative[position] + room, side="right"))
            take = fits - 1 - position
            if take <= 0:
                if count:
                    close()
                    continue
                take = 1  # a document larger than a shard gets a shard of its own
            segments.append([
                input_index, position, take, int(scan.starts[position]),
                int(scan.lines[position]),
            ])
            filled += float(cumulative[position + take] - cumulative[position])
            count += take
            position += take
            if position < n:
                close()
    if count:
        close()
    return shards
