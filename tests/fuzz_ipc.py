"""Fuzzing the open, the checks and batch assembly of IPC files and streams.

Every input is copied into a numpy buffer of exactly its size (heap memory: a memory
checker sees a read one byte past its end, which it cannot inside a mapped page) and
opened from there as an in-memory source, the path a file read with ``mmap=False`` takes.
pyarrow is the oracle:

- where pyarrow cannot read the input, or ``validate(full=True)`` rejects a column the
  loader reads (the token column, and the label column where the input has one), the
  loader must raise an ArrowLoaderError;
- where pyarrow reads and validates it, the loader must return exactly pyarrow's rows
  (through ``ds[i]``, the native DataLoader and the packed token stream), unless it
  raises an ArrowLoaderError for a reason the oracle confirms on its own: no supported
  token column, nulls in it, buffers that are not stored in place (compression), a
  stream without its end-of-stream marker or with bytes after it, a label that does not
  fit int64, a column name that is not UTF-8, offsets or values not aligned to their
  width (IPC aligns every buffer; the native side reads them as integers).

Anything else (another exception, wrong rows, a crash, a sanitizer report, a hang past
the per-input limit) is a finding. Two engines drive :func:`check_input`:

- ``atheris`` (libFuzzer; ``pip install atheris``): coverage-guided over the Python code,
  with a structure-aware mutator beside libFuzzer's byte mutations;
- ``mutate``: the same mutators driven by a seeded random generator, for Pythons
  atheris has no build for, for reproducible runs, and under gcc's AddressSanitizer
  (whose runtime takes over the coverage hooks atheris needs; ``--engine auto`` picks
  it there).

Seeds are valid files written here (every token type, list and large_list, several record
batches, empty documents and tables, labels, extra columns, legacy stream markers),
separately for the file and the stream format. Commands (README, Hardening)::

    python tests/fuzz_ipc.py --format file --seconds 60            # atheris if present
    python tests/fuzz_ipc.py --format stream --engine mutate --seconds 60 --seed 3
    python tests/fuzz_ipc.py --format file --seconds 3600 -- -jobs=2  # libFuzzer flags

Findings are written to ``--artifacts`` (default ``build/fuzz/<format>/findings``);
each becomes a file in tests/fuzz_regressions/ that tests/test_fuzz.py replays.
"""

from __future__ import annotations

import argparse
import faulthandler
import hashlib
import os
import random
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow as pa

#: Bytes of the largest input tried (libFuzzer's -max_len too).
MAX_INPUT_BYTES = 1 << 16
#: Seconds one input may take before the run stops with a finding (libFuzzer -timeout).
INPUT_TIMEOUT_S = 10
#: Resident memory one run may use, in MiB (libFuzzer -rss_limit_mb).
RSS_LIMIT_MB = 2048
#: Rows beyond which the packed and loader comparisons are skipped (ds[i] still runs).
MAX_COMPARED_ROWS = 20_000

COLUMN = "input_ids"
LABEL = "label"
FILE_MAGIC = b"ARROW1"
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
TOKEN_VALUE_TYPES = (pa.int32(), pa.int64(), pa.uint16(), pa.uint32())
EOS = 2**40 + 7  # packed with int64 output: an id no seed holds (ids written must be >= 0)


class Finding(AssertionError):
    """The loader and the oracle disagree about an input."""


# --- the oracle --------------------------------------------------------------------------


def exact_buffer(data: bytes) -> pa.Buffer:
    """``data`` in a heap buffer of exactly ``len(data)`` bytes (numpy's own allocation)."""
    array = np.empty(len(data), dtype=np.uint8)
    array[:] = np.frombuffer(data, dtype=np.uint8)
    return pa.py_buffer(array)


class PyarrowView:
    """What pyarrow makes of an input: its record batches, fully validated, or why not."""

    def __init__(self, buffer: pa.Buffer) -> None:
        self.buffer = buffer
        self.rejected: Optional[str] = None
        self.format = "file" if buffer.to_pybytes()[:6] == FILE_MAGIC else "stream"
        self.schema: Optional[pa.Schema] = None
        self.batches: list[pa.RecordBatch] = []
        self.stream_tail_ok = True  # the end-of-stream marker closes the input exactly
        try:
            if self.format == "file":
                reader = pa.ipc.open_file(buffer)
                self.schema = reader.schema
                self.batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
            else:
                self._read_stream()
            for batch in self.batches:
                for name in (COLUMN, LABEL):
                    if name in batch.schema.names:
                        column = batch.column(name)
                        column.validate(full=True)
                        if len(column) != batch.num_rows:
                            raise ValueError(f"column {name!r} is not num_rows long")
        except Exception as exc:  # whatever pyarrow raises, it did not read the input
            self.rejected = f"{type(exc).__name__}: {exc}"

    def _read_stream(self) -> None:
        source = pa.BufferReader(self.buffer)
        reader = pa.ipc.open_stream(source)
        self.schema = reader.schema
        end = source.tell()
        while True:
            try:
                self.batches.append(reader.read_next_batch())
            except StopIteration:
                break
            end = source.tell()
        tail = self.buffer.to_pybytes()[end:]
        self.stream_tail_ok = tail == END_OF_STREAM or tail == END_OF_STREAM[4:]

    def token_type_ok(self) -> bool:
        assert self.schema is not None
        index = self.schema.get_field_index(COLUMN)
        if index < 0:
            return False
        kind = self.schema.field(index).type
        return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and (
            kind.value_type in TOKEN_VALUE_TYPES
        )

    def has_nulls(self, column: str) -> bool:
        for batch in self.batches:
            array = batch.column(column)
            if array.null_count:
                return True
            if len(array) and (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
                # Not flatten(): on an empty list array whose one offset lies past its values
                # (which validate(full=True) lets through) pyarrow aborts the process.
                offsets = array.offsets
                first, last = offsets[0].as_py(), offsets[len(offsets) - 1].as_py()
                if array.values.slice(first, last - first).null_count:
                    return True
        return False

    def stored_in_place(self) -> bool:
        """Whether every buffer of every batch is a slice of the input (no compression)."""
        begin, end = self.buffer.address, self.buffer.address + self.buffer.size
        for batch in self.batches:
            for i in range(batch.num_columns):
                for buffer in _all_buffers(batch.column(i)):
                    if buffer is not None and buffer.size and not begin <= buffer.address < end:
                        return False
        return True

    def aligned(self) -> bool:
        """Whether the offsets and values of the columns read lie at addresses aligned to
        their width (IPC aligns buffers to 8 bytes; pyarrow passes misaligned ones on)."""
        for batch in self.batches:
            for name in (COLUMN, LABEL):
                if name not in batch.schema.names:
                    continue
                array = batch.column(name)
                kind = array.type
                buffers = array.buffers()
                if pa.types.is_list(kind) or pa.types.is_large_list(kind):
                    widths = {1: 8 if pa.types.is_large_list(kind) else 4}
                    if pa.types.is_integer(kind.value_type):
                        widths[3] = kind.value_type.bit_width // 8
                elif pa.types.is_integer(kind):
                    widths = {1: kind.bit_width // 8}
                else:
                    continue
                for index, width in widths.items():
                    buffer = buffers[index] if index < len(buffers) else None
                    if buffer is not None and buffer.size and buffer.address % width:
                        return False
        return True

    def rows(self, column: str) -> list[Any]:
        return [row for batch in self.batches for row in batch.column(column).to_pylist()]

    def label_ok(self) -> Optional[bool]:
        """None without a label column; else whether the loader must accept it."""
        assert self.schema is not None
        index = self.schema.get_field_index(LABEL)
        if index < 0:
            return None
        kind = self.schema.field(index).type
        if not pa.types.is_integer(kind) or self.has_nulls(LABEL):
            return False
        if kind == pa.uint64():
            return all(v < 2**63 for v in self.rows(LABEL))
        return True


def _all_buffers(array: pa.Array) -> Iterator[Optional[pa.Buffer]]:
    yield from array.buffers()


def allowed_rejections(view: PyarrowView) -> list[str]:
    """Why the loader may refuse an input pyarrow reads and validates (empty: it may not)."""
    reasons = []
    try:
        view.schema.names  # noqa: B018
    except UnicodeDecodeError:
        reasons.append("a column name is not UTF-8")
    if not view.token_type_ok():
        reasons.append("token column missing or of an unsupported type")
    elif view.has_nulls(COLUMN):
        reasons.append("nulls in the token column")
    if not view.stored_in_place():
        reasons.append("buffers not stored in place")
    if not view.aligned():
        reasons.append("a buffer not aligned to its integers' width")
    if view.format == "stream" and not view.stream_tail_ok:
        reasons.append("stream not closed by exactly its end-of-stream marker")
    if view.label_ok() is False:
        reasons.append("label column unusable")
    return reasons


# --- the check ---------------------------------------------------------------------------


def check_input(data: bytes) -> str:
    """Runs one input through the loader and the oracle; returns the outcome ("accepted",
    "rejected: <why>") or raises Finding."""
    import arrowloader
    from arrowloader import ArrowLoaderError

    buffer = exact_buffer(data)
    view = PyarrowView(buffer)
    options: dict[str, Any] = {}
    if view.schema is not None and view.schema.get_field_index(LABEL) >= 0:
        options["label_column"] = LABEL
    try:
        ds = arrowloader.TokenDataset(buffer, **options)
        served = [ds[i]["input_ids"].tolist() for i in range(len(ds))]
    except ArrowLoaderError as exc:
        if view.rejected is not None:
            return "rejected: pyarrow rejects it too"
        reasons = allowed_rejections(view)
        if not reasons:
            raise Finding(
                f"the loader rejects an input pyarrow reads and validates: {exc}"
            ) from exc
        return f"rejected: {reasons[0]}"
    if view.rejected is not None:
        raise Finding(f"the loader accepts an input pyarrow rejects ({view.rejected})")
    expected = view.rows(COLUMN)
    if served != expected:
        raise Finding(f"ds[i] differs from pyarrow's rows: {served[:5]} != {expected[:5]}")
    if LABEL in options:
        labels = [int(ds[i]["labels"]) for i in range(len(ds))]
        if labels != view.rows(LABEL):
            raise Finding("labels differ from pyarrow's")
    if len(expected) <= MAX_COMPARED_ROWS:
        _check_loader(ds, expected)
        _check_packed(buffer, expected)
    return "accepted"


def _check_loader(ds: Any, expected: list[list[int]]) -> None:
    import arrowloader

    rows = []
    for batch in arrowloader.DataLoader(ds, batch_size=7, num_workers=1):
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"]):
            rows.append(ids[mask.bool()].tolist())
    if rows != expected:
        raise Finding("the native DataLoader's rows differ from pyarrow's")


def _check_packed(buffer: pa.Buffer, expected: list[list[int]]) -> None:
    import arrowloader

    ds = arrowloader.PackedDataset(buffer, seq_len=5, eos_token_id=EOS, shuffle_documents=False)
    stream = [t for document in expected for t in [*document, EOS]]
    want = [stream[6 * b : 6 * b + 5] for b in range(len(stream) // 6)]
    got = []
    for batch in arrowloader.DataLoader(ds, batch_size=1, shuffle=False, num_workers=1):
        got.append(batch["input_ids"][0].tolist())
    if got != want:
        raise Finding("packed blocks differ from pyarrow's rows packed in Python")


# --- seeds ---------------------------------------------------------------------------------


def seed_inputs(fmt: str) -> list[bytes]:
    """Valid inputs of format ``fmt`` ("file" or "stream") covering what the loader reads."""
    rng = np.random.default_rng(0)
    seeds = []

    def documents(n: int, high: int) -> list[list[int]]:
        return [
            [int(t) for t in rng.integers(0, high, size=int(rng.integers(0, 6)))] for _ in range(n)
        ]

    highs = {pa.int32(): 2**31 - 1, pa.int64(): 2**62, pa.uint16(): 2**16, pa.uint32(): 2**32}
    for value_type in TOKEN_VALUE_TYPES:
        for large in (False, True):
            list_type = pa.large_list(value_type) if large else pa.list_(value_type)
            docs = documents(9, highs[value_type])
            seeds.append(_write(fmt, {COLUMN: pa.array(docs, list_type)}, [(0, 4), (4, 9)]))
    docs = documents(12, 1000)
    seeds.append(_write(fmt, {COLUMN: pa.array(docs, pa.list_(pa.int32())),
                              LABEL: pa.array(range(12), pa.int64())}, [(0, 5), (5, 12)]))
    seeds.append(_write(fmt, {"text": pa.array([str(d) for d in docs]),
                              COLUMN: pa.array(docs, pa.list_(pa.uint16())),
                              LABEL: pa.array(range(12), pa.uint8())}, [(0, 12)]))
    seeds.append(_write(fmt, {COLUMN: pa.array([[], [], [1]], pa.list_(pa.int32()))}, [(0, 3)]))
    seeds.append(_write(fmt, {COLUMN: pa.array([], pa.list_(pa.int32()))}, [(0, 0)]))
    seeds.append(_write(fmt, {COLUMN: pa.array([], pa.list_(pa.int32()))}, []))
    seeds.append(_write(fmt, {COLUMN: pa.array([[1, None], None], pa.list_(pa.int32()))},
                        [(0, 2)]))
    seeds.append(_write(fmt, {COLUMN: pa.array([[5] * 40] * 4, pa.list_(pa.int32()))},
                        [(0, 4)], pa.ipc.IpcWriteOptions(compression="zstd")))
    if fmt == "stream":
        seeds.append(_write(fmt, {COLUMN: pa.array(docs, pa.list_(pa.int64()))}, [(0, 12)],
                            pa.ipc.IpcWriteOptions(use_legacy_format=True)))
    return seeds


def _write(fmt: str, columns: dict[str, pa.Array], bounds: list[tuple[int, int]],
           options: Optional[pa.ipc.IpcWriteOptions] = None) -> bytes:
    schema = pa.schema([(name, array.type) for name, array in columns.items()])
    sink = pa.BufferOutputStream()
    new = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
    with new(sink, schema, options=options) as writer:
        for begin, end in bounds:
            arrays = [array.slice(begin, end - begin) for array in columns.values()]
            writer.write_batch(pa.record_batch(arrays, schema=schema))
    return sink.getvalue().to_pybytes()


# --- structure-aware mutations -------------------------------------------------------------

INTERESTING_32 = (0, 1, -1, 2, 7, 8, 255, 256, 4096, 2**15, 2**16, 2**31 - 1, -(2**31))
INTERESTING_64 = (*INTERESTING_32, 2**32, 2**32 - 1, 2**62, 2**63 - 1, -(2**63))


def _regions(data: bytes) -> tuple[list[tuple[int, int]], list[int]]:
    """Where pyarrow finds buffers in ``data`` ((offset, size) within it) and the lengths
    it read (rows and values), when it can read it; else nothing."""
    view = PyarrowView(exact_buffer(data))
    regions: list[tuple[int, int]] = []
    lengths: set[int] = set()
    base = view.buffer.address
    for batch in view.batches:
        lengths.add(batch.num_rows)
        for i in range(batch.num_columns):
            try:  # arrays pyarrow did not validate may fail even here
                array = batch.column(i)
                if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                    lengths.add(len(array.values))
                buffers = list(_all_buffers(array))
            except Exception:
                continue
            for buffer in buffers:
                if buffer is not None and buffer.size and 0 <= buffer.address - base < len(data):
                    regions.append((buffer.address - base, buffer.size))
    return regions, sorted(lengths)


def _put(data: bytearray, at: int, value: int, width: int) -> None:
    """Writes ``value`` as a little-endian integer of ``width`` bytes at ``at``, wrapped
    into that width (a length one past INT64_MAX becomes INT64_MIN, as in C)."""
    if 0 <= at <= len(data) - width:
        data[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")


def mutate_structure(data: bytes, rng: random.Random) -> bytes:
    """One mutation that knows the format: an interesting value written into a buffer
    (list offsets above all), a declared length (FieldNode) changed, a message dropped,
    doubled or swapped, or a cut at a message boundary."""
    out = bytearray(data)
    regions, lengths = _regions(data)
    choice = rng.randrange(5)
    if choice == 0 and regions:
        at, size = rng.choice(regions)
        width = rng.choice((4, 8))
        slot = at + rng.randrange(max(1, size // width)) * width
        _put(out, slot, rng.choice(INTERESTING_64 if width == 8 else INTERESTING_32), width)
        return bytes(out)
    if choice == 1 and lengths:
        # Declared lengths sit in the metadata as int64; rewrite one occurrence.
        length = rng.choice(lengths)
        pattern = struct.pack("<q", length)
        hits = [i for i in range(len(data) - 7) if data[i : i + 8] == pattern]
        if hits:
            _put(out, rng.choice(hits), rng.choice((*INTERESTING_64, length + 1, length - 1)), 8)
            return bytes(out)
    bounds = _message_bounds(data)
    if choice == 2 and len(bounds) > 1:
        begin, end = rng.choice(bounds[1:])
        return data[:begin] + data[end:] if rng.random() < 0.5 else data[:end] + data[begin:]
    if choice == 3 and len(bounds) > 2:
        (b1, e1), (b2, e2) = sorted(rng.sample(bounds[1:], 2))
        return data[:b1] + data[b2:e2] + data[e1:b2] + data[b1:e1] + data[e2:]
    if bounds:
        return data[: rng.choice(bounds)[1]]
    # Fall back on a byte-level change.
    if out:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def _message_bounds(data: bytes) -> list[tuple[int, int]]:
    """(begin, end) of every IPC message pyarrow can frame, from the start of a stream or
    after a file's 8-byte magic."""
    start = 8 if data[:6] == FILE_MAGIC else 0
    reader = pa.BufferReader(pa.py_buffer(data[start:]))
    bounds = []
    try:
        messages = pa.ipc.MessageReader.open_stream(reader)
        while True:
            begin = reader.tell()
            message = messages.read_next_message()
            bounds.append((start + begin, start + reader.tell()))
            del message
    except (StopIteration, pa.ArrowException, OSError, ValueError):
        pass
    return bounds


def mutate_bytes(data: bytes, rng: random.Random, max_size: int) -> bytes:
    """A libFuzzer-like byte mutation: bit flip, interesting integer, copy, insert,
    delete or truncate."""
    out = bytearray(data)
    choice = rng.randrange(6)
    if not out or choice == 0:
        out.insert(rng.randrange(len(out) + 1), rng.randrange(256))
    elif choice == 1:
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif choice == 2:
        width = rng.choice((4, 8))
        values = INTERESTING_64 if width == 8 else INTERESTING_32
        _put(out, rng.randrange(len(out)), rng.choice(values), width)
    elif choice == 3:
        begin = rng.randrange(len(out))
        chunk = out[begin : begin + rng.randrange(1, 64)]
        at = rng.randrange(len(out) + 1)
        out[at:at] = chunk
    elif choice == 4:
        begin = rng.randrange(len(out))
        del out[begin : begin + rng.randrange(1, 16)]
    else:
        del out[rng.randrange(len(out) + 1) :]
    return bytes(out[:max_size])


def mutate(data: bytes, rng: random.Random, max_size: int = MAX_INPUT_BYTES) -> bytes:
    """Structure-aware half of the time, else bytes; a few mutations stacked."""
    for _ in range(1 + rng.randrange(3)):
        if rng.random() < 0.5:
            data = mutate_structure(data, rng)[:max_size]
        else:
            data = mutate_bytes(data, rng, max_size)
    return data


# --- engines -------------------------------------------------------------------------------


def save_finding(folder: Path, data: bytes, error: BaseException) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"finding-{hashlib.sha256(data).hexdigest()[:16]}.ipc"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(f"{type(error).__name__}: {error}\n")
    return path


def run_mutate(fmt: str, seconds: float, seed: int, artifacts: Path,
               progress: Callable[[int, dict[str, int]], None],
               max_executions: Optional[int] = None) -> dict[str, Any]:
    """The seeded engine: mutates seeds (and inputs found accepted) until ``seconds`` pass
    or ``max_executions`` inputs ran (then the run is a function of ``seed`` alone)."""
    rng = random.Random(seed)
    pool = seed_inputs(fmt)
    outcomes: dict[str, int] = {}
    findings: list[str] = []
    executions = 0
    deadline = time.monotonic() + seconds
    # The input being tried, on disk: what a crash (an abort, a signal, a sanitizer
    # report) leaves behind to reproduce it with.
    artifacts.mkdir(parents=True, exist_ok=True)
    current = artifacts / "current-input.ipc"
    while time.monotonic() < deadline and executions != max_executions:
        data = mutate(rng.choice(pool), rng)
        current.write_bytes(data)
        faulthandler.dump_traceback_later(INPUT_TIMEOUT_S, exit=True)
        try:
            outcome = check_input(data)
        except Exception as exc:  # a finding: keep going, report at the end
            findings.append(str(save_finding(artifacts, data, exc)))
            outcome = "finding"
        finally:
            faulthandler.cancel_dump_traceback_later()
        executions += 1
        key = outcome.split(":")[0]
        outcomes[key] = outcomes.get(key, 0) + 1
        if outcome == "accepted" and len(pool) < 512 and rng.random() < 0.05:
            pool.append(data)  # valid variants breed further
        if executions % 200 == 0:
            progress(executions, outcomes)
    current.unlink()
    return {"engine": "mutate", "format": fmt, "seconds": seconds, "seed": seed,
            "executions": executions, "outcomes": outcomes, "findings": findings}


def run_atheris(fmt: str, seconds: float, artifacts: Path, corpus: Path,
                extra: list[str]) -> None:
    """Coverage-guided with atheris/libFuzzer (does not return: libFuzzer exits)."""
    import atheris
    import torch  # noqa: F401 -- imported first, so that only arrowloader is instrumented

    with atheris.instrument_imports(include=["arrowloader"]):
        import arrowloader
        import arrowloader.sources  # noqa: F401

    corpus.mkdir(parents=True, exist_ok=True)
    for data in seed_inputs(fmt):
        (corpus / f"seed-{hashlib.sha256(data).hexdigest()[:16]}").write_bytes(data)

    def one_input(data: bytes) -> None:
        check_input(data)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return mutate_structure(data, rng)[:max_size]
        return atheris.Mutate(data, max_size)

    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={int(seconds)}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-max_len={MAX_INPUT_BYTES}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        *extra,
    ]
    atheris.Setup(argv, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", choices=("file", "stream"), required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--engine", choices=("auto", "atheris", "mutate"), default="auto")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutate engine")
    parser.add_argument("--artifacts", type=Path, default=None)
    parser.add_argument("--corpus", type=Path, default=None, help="atheris's working corpus")
    parser.add_argument("libfuzzer", nargs="*", help="flags passed on to libFuzzer")
    args = parser.parse_args(argv)
    root = Path("build") / "fuzz" / args.format
    artifacts = args.artifacts or root / "findings"
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _atheris_can_guide() else "mutate"
    if engine == "atheris":
        run_atheris(args.format, args.seconds, artifacts, args.corpus or root / "corpus",
                    args.libfuzzer)
        return 0
    _limit_memory()
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"fuzzing {args.format}", unit="input", total=None, mininterval=1,
               disable=None)

    def progress(executions: int, outcomes: dict[str, int]) -> None:
        bar.n = executions
        bar.set_postfix(outcomes, refresh=True)

    report = run_mutate(args.format, args.seconds, args.seed, artifacts, progress)
    bar.close()
    print(report)
    return 1 if report["findings"] else 0


def _atheris_can_guide() -> bool:
    """Whether atheris is installed and its coverage can work: not under gcc's ASan
    runtime, whose coverage hooks take the place of libFuzzer's (atheris then fuzzes
    blind; the mutate engine is the one to run against such a build)."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return "libasan" not in os.environ.get("LD_PRELOAD", "")


def _limit_memory() -> None:
    """Caps the address space where no sanitizer needs a huge one (the mutate engine's
    stand-in for libFuzzer's -rss_limit_mb)."""
    if "asan" in os.environ.get("LD_PRELOAD", "") or "tsan" in os.environ.get("LD_PRELOAD", ""):
        return
    try:
        import resource

        limit = (RSS_LIMIT_MB + 4096) << 20  # address space, not resident memory
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


if __name__ == "__main__":
    sys.exit(main())
