"""The extension module as it is shipped: the version it reports, its type stub, and
None where it needs a native object.

The oracle is the built module itself: mypy's stubtest compares the stub's names, kinds
(class, method, property, settable or not) with what the module holds, and the argument
names and defaults of every function are compared with the signature line pybind11 writes
at the head of each docstring (stubtest cannot read the signatures of builtins).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
from arrowloader import _C, Corpus
from conftest import write_tokens

STUB = Path(_C.__file__).with_name("_C.pyi")
ALLOWLIST = Path(__file__).with_name("native_stub_allowlist.txt")
#: Test hooks (ARROWLOADER_TEST_HOOKS builds only) stay out of the stub.
TEST_HOOKS = ("ThreadPool.submit_sleep",)

#: mypy reads the stub and numpy's types, and skips what the package's Python modules
#: import (torch, pyarrow, ...): they are not the stub's business, and slow to analyse.
MYPY_CONFIG = """\
[mypy]
follow_imports = skip
[mypy-numpy,numpy.*,typing_extensions]
follow_imports = normal
"""

Signature = list[tuple[str, Optional[str]]]  # (argument, default as source text or None)


def test_module_reports_the_package_version() -> None:
    """pyproject.toml's version reaches _C through setup.py and CMake."""
    assert _C.__version__ == importlib.metadata.version("arrowloader")


def test_stub_and_marker_are_installed_with_the_module() -> None:
    assert STUB.is_file()
    assert STUB.with_name("py.typed").is_file()


def test_stubtest_finds_no_difference(tmp_path: Path) -> None:
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_CONFIG)
    hooks = tmp_path / "hooks-allowlist.txt"
    hooks.write_text(
        "".join(f"arrowloader._C.{name}\n" for name in TEST_HOOKS if runtime_has(name))
    )
    command = [
        sys.executable, "-m", "mypy.stubtest", "arrowloader._C",
        "--mypy-config-file", str(config),
        "--allowlist", str(ALLOWLIST), "--allowlist", str(hooks),
    ]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_stub_arguments_and_defaults_match_the_module() -> None:
    stub = stub_signatures(STUB)
    runtime = runtime_signatures()
    assert sorted(stub) == sorted(runtime)
    differ = [
        f"{name}:\n  stub    {stub[name]}\n  runtime {runtime[name]}"
        for name in sorted(stub)
        if stub[name] != runtime[name]
    ]
    assert not differ, "\n".join(differ)


def test_none_for_a_native_object_raises_type_error(tmp_path: Path) -> None:
    """None for a column, pool, plan or assembler raises TypeError, never dereferences a
    null pointer (a crash)."""
    corpus = Corpus(write_tokens(tmp_path / "c.arrow", [[1, 2, 3], [4, 5]]), "input_ids")
    pool = _C.ThreadPool(1)
    padded = _C.PaddedBatchAssembler(corpus.tokens)
    packed = _C.PackedBatchAssembler(corpus.tokens, seq_len=2, eos_token_id=0)
    plan = packed.plan(np.arange(corpus.num_rows))
    rows = np.array([0, 1])
    ids = np.zeros((2, 3), np.int64)
    blocks = np.array([0, 1])
    block_ids, block_labels = np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64)
    calls = [
        lambda: _C.PaddedBatchAssembler(None),
        lambda: _C.PackedBatchAssembler(None, seq_len=2, eos_token_id=0),
        lambda: padded.submit(None, rows, ids),
        lambda: padded.submit_batches(None, [(rows, ids, None, None, None)]),
        lambda: packed.submit(None, plan, blocks, block_ids, block_labels),
        lambda: packed.submit(pool, None, blocks, block_ids, block_labels),
        lambda: _C.submit_mixed(None, [packed], [plan], [0, 0], blocks, block_ids, block_labels),
        lambda: _C.submit_mixed(pool, [None], [plan], [0, 0], blocks, block_ids, block_labels),
        lambda: _C.submit_mixed(pool, [packed], [None], [0, 0], blocks, block_ids, block_labels),
    ]
    try:
        for call in calls:
            with pytest.raises(TypeError):
                call()
        # The same calls with the objects do work.
        assert padded.submit(pool, rows, ids).result() == (0, 0)
        assert packed.submit(pool, plan, blocks, block_ids, block_labels).result()[0] >= 0
    finally:
        pool.shutdown()


def runtime_has(name: str) -> bool:
    owner, _, attribute = name.rpartition(".")
    return hasattr(getattr(_C, owner) if owner else _C, attribute)


def runtime_signatures() -> dict[str, Signature]:
    """Every function and method of the module (test hooks left out), from pybind11's
    docstrings: "name(arg: type = default, ...) -> type"."""
    found: dict[str, Signature] = {}
    for name, value in vars(_C).items():
        if isinstance(value, type):
            for attribute, member in vars(value).items():
                signature = pybind11_signature(member, attribute)
                qualified = f"{name}.{attribute}"
                if signature is not None and qualified not in TEST_HOOKS:
                    found[qualified] = signature
        elif not name.startswith("_"):
            signature = pybind11_signature(value, name)
            if signature is not None:
                found[name] = signature
    return found


def pybind11_signature(value: Any, name: str) -> Optional[Signature]:
    if isinstance(value, property) or (name.startswith("_") and name != "__init__"):
        return None
    doc = getattr(value, "__doc__", None) or ""
    match = re.match(rf"{re.escape(name)}\((.*)\) -> ", doc.split("\n", 1)[0])
    if match is None:
        return None
    arguments: Signature = []
    for argument in split_top_level(match.group(1)):
        head, _, default = argument.partition(" = ")
        arguments.append((head.split(":", 1)[0].strip(), default or None))
    return arguments


def split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets (types such as ``tuple[int, int]``)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    if text[start:].strip():
        parts.append(text[start:].strip())
    return parts


def stub_signatures(path: Path) -> dict[str, Signature]:
    """Every function and method the stub declares (properties left out)."""
    found: dict[str, Signature] = {}

    def add(node: ast.stmt, prefix: str) -> None:
        if isinstance(node, ast.FunctionDef) and not node.decorator_list:
            positional = node.args.posonlyargs + node.args.args
            defaults: list[Optional[str]] = [None] * (
                len(positional) - len(node.args.defaults)
            ) + [ast.unparse(d) for d in node.args.defaults]
            found[prefix + node.name] = [
                (a.arg, d) for a, d in zip(positional, defaults)
            ] + [
                (a.arg, None if d is None else ast.unparse(d))
                for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults)
            ]

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for member in node.body:
                add(member, f"{node.name}.")
        else:
            add(node, "")
    return found


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("self: X, rows: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]",
         ["self: X", "rows: typing.Annotated[numpy.typing.ArrayLike, numpy.int64]"]),
        ("a: int = 0, b: tuple[int, int] = None", ["a: int = 0", "b: tuple[int, int] = None"]),
        ("", []),
    ],
)  # fmt: skip
def test_split_top_level(text: str, parts: list[str]) -> None:
    assert split_top_level(text) == parts


def test_the_package_reports_the_same_version() -> None:
    import arrowloader

    assert arrowloader.__version__ == _C.__version__ == importlib.metadata.version("arrowloader")
