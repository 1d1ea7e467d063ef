"""Shared helpers and fixtures: tiny Arrow corpora written with pyarrow into ``tmp_path``,
and pyarrow's own reading of them, which is the oracle the package is compared with."""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import pyarrow as pa
import pytest
import torch

COLUMN = "input_ids"

#: The token value types arrowloader reads, by name.
TOKEN_TYPES: dict[str, pa.DataType] = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "uint16": pa.uint16(),
    "uint32": pa.uint32(),
}

INT32 = pa.int32()
INT64 = pa.int64()

#: Prefix of the native thread names (``_C.ThreadPool(n, "arrowloader")``).
THREAD_PREFIX = "arrowloader-"

#: Whether the tests run against a sanitizer build (README, Hardening): AddressSanitizer
#: keeps freed memory in quarantine (up to 256 MiB), so resident memory says nothing about
#: leaks there, and the memory bounds of the load tests do not apply.
UNDER_SANITIZER = any(
    name in os.environ.get("LD_PRELOAD", "") for name in ("libasan", "libtsan")
)

#: gcc's AddressSanitizer allocator takes no lock around fork(): a worker process forked
#: while another thread of the test process (pyarrow's or torch's pools) is inside
#: malloc waits on that allocator lock forever. Under ASan, torch's worker processes
#: therefore start from a clean forkserver; tests that ask for "fork" still get it.
if "libasan" in os.environ.get("LD_PRELOAD", "") or os.environ.get(
    "ARROWLOADER_TEST_FORKSERVER"
):
    import multiprocessing

    multiprocessing.set_start_method("forkserver", force=True)


def token_list_type(value_type: pa.DataType, *, large: bool = False) -> pa.DataType:
    """``list<value_type>`` or ``large_list<value_type>``."""
    return pa.large_list(value_type) if large else pa.list_(value_type)


def random_documents(
    rng: np.random.Generator,
    num_docs: int,
    *,
    max_tokens: int = 24,
    vocab: int = 1000,
    empty_fraction: float = 0.15,
) -> list[list[int]]:
    """``num_docs`` documents of ids in ``[0, vocab)``; about ``empty_fraction`` of them
    are empty, the rest have 1 .. ``max_tokens`` tokens."""
    documents = []
    for _ in range(num_docs):
        n = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_tokens + 1))
        documents.append([int(t) for t in rng.integers(0, vocab, size=n)])
    return documents


def batch_bounds(num_rows: int, num_batches: int) -> list[tuple[int, int]]:
    """Splits ``range(num_rows)`` into ``num_batches`` consecutive, uneven ranges (some
    may be empty) as ``(begin, end)`` pairs."""
    if num_batches <= 1:
        return [(0, num_rows)]
    # Deterministic but uneven: cut points at squares, scaled into the row range.
    cuts = sorted({min(num_rows, (i * i * num_rows) // (num_batches * num_batches))
                   for i in range(1, num_batches)})
    edges = [0, *cuts, num_rows]
    return list(zip(edges[:-1], edges[1:]))


def write_ipc(
    path: Union[str, os.PathLike],
    columns: Mapping[str, pa.Array],
    *,
    bounds: Optional[Sequence[tuple[int, int]]] = None,
    stream: bool = False,
    options: Optional[pa.ipc.IpcWriteOptions] = None,
) -> Path:
    """Writes ``columns`` as one Arrow IPC file (``stream=False``) or stream, one record
    batch per ``(begin, end)`` range of ``bounds`` (default: one batch)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = list(columns.values())
    num_rows = len(arrays[0]) if arrays else 0
    schema = pa.schema([(name, array.type) for name, array in columns.items()])
    bounds = bounds if bounds is not None else [(0, num_rows)]
    open_writer = pa.ipc.new_stream if stream else pa.ipc.new_file
    with pa.OSFile(str(path), "wb") as sink, open_writer(sink, schema, options=options) as writer:
        for begin, end in bounds:
            batch = pa.record_batch([a.slice(begin, end - begin) for a in arrays], schema=schema)
            writer.write_batch(batch)
    return path


def write_tokens(
    path: Union[str, os.PathLike],
    documents: Sequence[Any],
    *,
    value_type: pa.DataType = INT32,
    large: bool = False,
    num_batches: int = 3,
    bounds: Optional[Sequence[tuple[int, int]]] = None,
    stream: bool = False,
    labels: Optional[Sequence[Optional[int]]] = None,
    label_type: pa.DataType = INT64,
    column: str = COLUMN,
    label_column: str = "label",
    extra: Optional[Mapping[str, pa.Array]] = None,
    options: Optional[pa.ipc.IpcWriteOptions] = None,
) -> Path:
    """Writes ``documents`` (lists of token ids) as the token column of an IPC file or
    stream split into ``num_batches`` uneven record batches (or the given ``bounds``),
    with an optional label column and extra columns."""
    columns: dict[str, pa.Array] = {}
    if extra:
        columns.update(extra)
    columns[column] = pa.array(documents, type=token_list_type(value_type, large=large))
    if labels is not None:
        columns[label_column] = pa.array(labels, type=label_type)
    if bounds is None:
        bounds = batch_bounds(len(documents), num_batches)
    return write_ipc(path, columns, bounds=bounds, stream=stream, options=options)


def pyarrow_batches(path: Union[str, os.PathLike]) -> list[pa.RecordBatch]:
    """Record batches of an IPC file or stream, as pyarrow itself reads them."""
    with open(path, "rb") as f:
        is_file_format = f.read(6) == b"ARROW1"
    if is_file_format:
        reader = pa.ipc.open_file(str(path))
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
    with pa.ipc.open_stream(str(path)) as reader:
        return list(reader)


def pyarrow_rows(
    paths: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]], column: str = COLUMN
) -> list[Any]:
    """The values of ``column`` over the files, in order, read by pyarrow (``to_pylist``)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    rows: list[Any] = []
    for path in paths:
        for batch in pyarrow_batches(path):
            rows.extend(batch.column(column).to_pylist())
    return rows


@dataclass
class WrittenCorpus:
    """Files written for a test, with the documents and labels they hold, in order."""

    paths: list[Path]
    documents: list[list[int]]
    labels: list[int]


def write_corpus(
    folder: Path,
    rng: np.random.Generator,
    *,
    docs_per_file: Sequence[int] = (13, 0, 17, 7),
    value_type: pa.DataType = INT32,
    max_tokens: int = 24,
) -> WrittenCorpus:
    """Writes one file per entry of ``docs_per_file`` (alternately IPC file and stream
    format, each in several record batches) named ``shard-<k>.arrow``, with a ``label``
    column."""
    paths, documents, labels = [], [], []
    for k, n in enumerate(docs_per_file):
        docs = random_documents(rng, n, max_tokens=max_tokens)
        labs = [int(x) for x in rng.integers(0, 5, size=n)]
        path = write_tokens(
            folder / f"shard-{k}.arrow",
            docs,
            value_type=value_type,
            num_batches=1 + k % 4,
            stream=k % 2 == 1,
            labels=labs,
        )
        paths.append(path)
        documents.extend(docs)
        labels.extend(labs)
    return WrittenCorpus(paths, documents, labels)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, so every run writes the same corpora."""
    return np.random.default_rng(20240601)


@pytest.fixture
def corpus(tmp_path: Path, rng: np.random.Generator) -> WrittenCorpus:
    """Four files (37 documents, one file empty), mixed IPC file and stream format."""
    return write_corpus(tmp_path / "corpus", rng)


def native_threads() -> list[str]:
    """Names of this process's native loader threads (``/proc/self/task/*/comm``)."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:  # the thread ended while we looked
            continue
        if name.startswith(THREAD_PREFIX):
            names.append(name)
    return names


def wait_for_native_threads(count: int, timeout: float = 10.0) -> int:
    """Polls until exactly ``count`` native loader threads exist or ``timeout`` seconds
    pass; returns the last count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = len(native_threads())
        if seen == count or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


@dataclass(frozen=True)
class Resources:
    """What a process holds that a loader could leak: threads (all of them, from
    /proc/self/task), open file descriptors, and memory mappings of the given files."""

    threads: int
    fds: int
    mappings: int

    @classmethod
    def now(cls, paths: Iterable[Union[str, os.PathLike]] = ()) -> Resources:
        names = {str(Path(p).resolve()) for p in paths}
        with open("/proc/self/maps") as maps:
            mapped = sum(1 for line in maps if line.split(maxsplit=5)[-1].strip() in names)
        return cls(
            threads=len(os.listdir("/proc/self/task")),
            fds=len(os.listdir("/proc/self/fd")),
            mappings=mapped,
        )


def wait_for_resources(
    expected: Resources,
    paths: Iterable[Union[str, os.PathLike]] = (),
    timeout: float = 10.0,
    fields: Sequence[str] = ("threads", "fds", "mappings"),
) -> Resources:
    """Polls until the process holds ``expected`` in ``fields`` (threads of worker
    processes and pipes take a moment to go) or ``timeout`` seconds pass; returns the
    last reading, with ``threads`` capped at the expected count when it is below it.

    Threads may only be fewer, never more: a thread that no loader owns (tqdm's monitor,
    a pool another library started earlier in the session) may end meanwhile, while a
    leak can only add threads. Descriptors and mappings must match exactly."""
    paths = list(paths)
    deadline = time.monotonic() + timeout
    while True:
        seen = Resources.now(paths)
        if "threads" in fields and seen.threads < expected.threads:
            seen = dataclasses.replace(seen, threads=expected.threads)
        if all(getattr(seen, f) == getattr(expected, f) for f in fields):
            return seen
        if time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_lists(batch: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A batch of tensors as nested lists, to compare with the reference's output."""
    return {key: value.tolist() for key, value in batch.items()}


def assert_batches_equal(
    actual: Sequence[Mapping[str, torch.Tensor]], expected: Sequence[Mapping[str, torch.Tensor]]
) -> None:
    """Same number of batches, same keys, dtypes, shapes and values, in order."""
    assert len(actual) == len(expected), f"{len(actual)} batches, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.keys() == e.keys(), f"batch {k}: keys {sorted(a)} != {sorted(e)}"
        for key in e:
            if not isinstance(e[key], torch.Tensor):  # e.g. a packed batch's max_seqlen
                assert a[key] == e[key], f"batch {k} {key}: {a[key]!r} != {e[key]!r}"
                continue
            assert a[key].dtype == e[key].dtype, f"batch {k} {key}: dtype"
            assert a[key].shape == e[key].shape, f"batch {k} {key}: shape"
            assert torch.equal(a[key], e[key]), f"batch {k} {key}: values differ"


# Real text and a BPE tokenizer trained on it, for the tests of arrowloader prepare; and a
# corpus prepared from that text, for the tests of what reads prepared corpus folders.
from prepared_corpus import prepared  # noqa: E402, F401
from text_corpus import bpe, bpe_path, stdlib_corpus  # noqa: E402, F401

#: The bench tests' shared corpora and fixtures, registered here (the root conftest) so
#: that any one bench test module also runs alone.
pytest_plugins = ["bench_corpora", "s3_server"]
