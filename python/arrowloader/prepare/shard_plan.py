"""The shard plan of ``arrowloader prepare``: which documents go into which shard,
decided before any document is tokenized.

Both engines (local and Ray) work from the same plan, and a shard's bytes depend only on
its documents, the tokenizer and the options, so both write the same shards. A plan is
computed from one scan of the inputs (:func:`arrowloader.prepare.inputs.scan_file`): the
size of a document's shard data is estimated as ``a * utf8_bytes + b``, where ``a`` (token
bytes per text byte) comes from tokenizing samples, and ``b`` covers the list offset, the
appended EOS and kept fields. Each input's ``a`` is its own samples' (evenly spaced, 5%
of its text, at least 1 KiB and at most 32 KiB) pulled towards the corpus's (an evenly
spaced sample of at most 256 documents) as if the latter were 512 bytes more of it, so dense
and sparse inputs (code, tables, prose) each get their own estimate; a ``.txt`` input
that is one document uses the corpus's. Documents
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
    utf8_size,
)
from arrowloader.prepare.tokenizer import LoadedTokenizer

PLAN_VERSION = 1
#: 512 MiB, the default ``--shard-size``.
DEFAULT_SHARD_SIZE = 512 << 20
#: Shard files are named SHARD_NAME.format(index).
SHARD_NAME = "shard-{:05d}.arrow"
#: The token column every shard holds.
TOKEN_COLUMN = "input_ids"
#: The columns a preparation of fine-tuning examples writes beside the tokens: each
#: example's prompt length (int32), and its per-token loss mask (list<bool>: true on the
#: tokens in the loss).
PROMPT_LENGTH_COLUMN = "prompt_length"
LOSS_MASK_COLUMN = "loss_mask"
#: Per-input samples: at most this many documents (at least 128 characters of each), of
#: this share of the input's bytes but at least _MIN and at most _MAX characters in all.
_FILE_SAMPLES = 64
_FILE_SAMPLE_SHARE = 0.05
_FILE_SAMPLE_MIN = 1 << 10
_FILE_SAMPLE_MAX = 32 << 10
#: Weight, in bytes of text, of the corpus-wide rate in an input's own estimate.
_PRIOR_BYTES = 512


@dataclass(frozen=True)
class PrepareOptions:
    """Options of a preparation that decide its output.

    Attributes:
        text_field: the text field of JSON lines and parquet inputs.
        lines: ``.txt`` inputs hold one document per non-empty line.
        keep_fields: fields of JSON lines / parquet inputs carried into every shard.
        append_eos: end every document with the tokenizer's EOS id.
        shard_size: target bytes of a shard file.
        prompt_field, completion_field: fine-tuning examples of two strings: the tokens
            are the prompt's then the completion's, and every shard also holds
            :data:`PROMPT_LENGTH_COLUMN`.
        messages_field: fine-tuning conversations, tokenized with the tokenizer's chat
            template; every shard also holds :data:`LOSS_MASK_COLUMN` (the assistant's
            tokens).
        loss_mask: prompt and completion examples also get :data:`LOSS_MASK_COLUMN`
            (false on the prompt).
    """

    text_field: str = "text"
    lines: bool = False
    keep_fields: tuple[str, ...] = ()
    append_eos: bool = False
    shard_size: int = DEFAULT_SHARD_SIZE
    prompt_field: Optional[str] = None
    completion_field: Optional[str] = None
    messages_field: Optional[str] = None
    loss_mask: bool = False

    @property
    def read(self) -> ReadOptions:
        return ReadOptions(self.text_field, self.lines, self.keep_fields, self.prompt_field,
                           self.completion_field, self.messages_field)

    @property
    def example_options(self) -> dict[str, Any]:
        """The fine-tuning options that are set, by name (empty for plain text): what the
        fingerprint and the plan record of them, so that plain-text preparations keep
        the fingerprints they had before these options existed."""
        named = {"prompt_field": self.prompt_field, "completion_field": self.completion_field,
                 "messages_field": self.messages_field}
        found: dict[str, Any] = {k: v for k, v in named.items() if v is not None}
        if self.loss_mask:
            found["loss_mask"] = True
        return found

    @property
    def example_columns(self) -> dict[str, pa.DataType]:
        """The columns written beside the tokens for fine-tuning examples."""
        columns: dict[str, pa.DataType] = {}
        if self.prompt_field is not None:
            columns[PROMPT_LENGTH_COLUMN] = pa.int32()
        if self.messages_field is not None or self.loss_mask:
            columns[LOSS_MASK_COLUMN] = pa.list_(pa.bool_())
        return columns

    def check(self) -> None:
        """Raises ValueError, naming the option, for fine-tuning options that do not go
        together."""
        if (self.prompt_field is None) != (self.completion_field is None):
            raise ValueError("--prompt-field and --completion-field go together: give both")
        if self.messages_field is not None and self.prompt_field is not None:
            raise ValueError("--messages-field and --prompt-field are two ways to read an "
                             "example; give one")
        if self.loss_mask and self.read.kind == "text":
            raise ValueError("--loss-mask needs fine-tuning examples: give --prompt-field and "
                             "--completion-field (or --messages-field, which always writes it)")
        if self.read.kind != "text" and self.lines:
            raise ValueError("--lines reads .txt documents; fine-tuning examples need .jsonl "
                             "or .parquet inputs")
        clash = set(self.keep_fields) & {*self.example_columns, *self.read.document_fields}
        if clash:
            raise ValueError(f"--keep-fields {sorted(clash)} would clash with the example's "
                             "own fields or the columns written for it")


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
            **options.example_options,
        },
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def shard_schema(
    dtype: str,
    field_types: dict[str, pa.DataType],
    large: bool = False,
    example_columns: Optional[dict[str, pa.DataType]] = None,
) -> pa.Schema:
    """The schema of every shard: ``input_ids`` list (large_list when ``large``) of
    ``dtype``, the columns of fine-tuning examples, then the kept fields."""
    value = pa.from_numpy_dtype(np.dtype(dtype))
    ids = pa.large_list(value) if large else pa.list_(value)
    return pa.schema(
        [pa.field(TOKEN_COLUMN, ids, nullable=False)]
        + [pa.field(name, kind, nullable=False)
           for name, kind in (example_columns or {}).items()]
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
    file_samples: list[list[str]] = []
    scans = []
    field_types = {name: "null" for name in options.keep_fields}
    arrow_types: dict[str, pa.DataType] = {}
    documents = 0
    for path, identity in zip(paths, identities):
        keeper = SampleKeeper(0, 0)  # a file that is one document: the corpus's rate
        if input_format(path) != "text" or read.lines:
            budget = min(_FILE_SAMPLE_MAX,
                         max(_FILE_SAMPLE_MIN, int(_FILE_SAMPLE_SHARE * identity["bytes"])))
            keeper = SampleKeeper(_FILE_SAMPLES, max(128, budget // _FILE_SAMPLES))
        scan = scan_file(path, read, sampler, documents, keeper)
        file_samples.append([text for _, text in keeper.kept])
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
    tokens, sizes = _sample_counts(tokenizer, [[t for _, t in sampler.kept], *file_samples])
    per_byte = width * tokens[0] / max(1, sizes[0])
    # An input's own rate, shrunk towards the corpus's by a prior worth 4 KiB of text.
    per_byte_of = [
        width * (t + _PRIOR_BYTES * per_byte / width) / (b + _PRIOR_BYTES)
        for t, b in zip(tokens[1:], sizes[1:])
    ]
    per_document = 4 + (width if options.append_eos else 0) + 12 * len(options.keep_fields)
    example_columns = options.example_columns
    if PROMPT_LENGTH_COLUMN in example_columns:
        per_document += 4
    if LOSS_MASK_COLUMN in example_columns:  # a bit a token, and an offset
        per_document += 4
        per_byte_of = [rate * (1 + 1 / (8 * width)) for rate in per_byte_of]
    types = {
        name: arrow_types[name] if kind.startswith("arrow:") else FieldType.ARROW[kind]
        for name, kind in field_types.items()
    }
    schema = shard_schema(dtype, types, example_columns=example_columns)
    room = max(1, options.shard_size - _file_overhead(schema))
    shards = _cut(scans, per_byte_of, per_document, room)
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
            **options.example_options,
        },
        "field_types": field_types,
        "schema": encode_schema(schema),
        "append_eos": options.append_eos,
        "shard_size": options.shard_size,
        "estimate": {"bytes_per_text_byte": per_byte, "bytes_per_document": per_document},
        "documents": documents,
        "shards": shards,
    }


def _file_overhead(schema: pa.Schema) -> int:
    """Bytes of an Arrow IPC file of ``schema`` holding one empty record batch: what a
    shard takes besides its documents' data."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_pylist([], schema=schema))
    return sink.getvalue().size


def _sample_counts(
    tokenizer: LoadedTokenizer, groups: Sequence[Sequence[str]]
) -> tuple[list[int], list[int]]:
    """(tokens, UTF-8 bytes) of every group of sample texts, tokenized in one call."""
    flat = [text for group in groups for text in group]
    counts = [len(ids) for ids in tokenizer.encode_batch(flat)] if flat else []
    tokens, sizes, at = [], [], 0
    for group in groups:
        tokens.append(sum(counts[at : at + len(group)]))
        sizes.append(sum(utf8_size(text) for text in group))
        at += len(group)
    return tokens, sizes


def _cut(
    scans: Sequence[Any], per_byte_of: Sequence[float], per_document: float, shard_size: int
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
        np.cumsum(scan.sizes * per_byte_of[input_index] + per_document, out=cumulative[1:])
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
