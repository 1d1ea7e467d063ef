"""A corpus prepared from real text, shared by the tests of what reads prepared corpus
folders (test_corpus.py, test_manifest.py, test_inspect.py, test_validate.py): the
fixtures ``prepared`` (never changed; registered by conftest) and ``prepared_copy``
(named ``corpus``: a fresh copy, free to damage), and helpers that damage a copy while
keeping its manifest's sizes and hashes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from arrowloader.cli import main
from arrowloader.manifest import sha256_file
from arrowloader.prepare.run import prepare_corpus
from arrowloader.prepare.shard_plan import PrepareOptions
from text_corpus import write_jsonl

#: The vocabulary of the tokenizer the corpus is prepared with (text_corpus.bpe_path).
VOCAB = 1000


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: Any, stdlib_corpus: Any, bpe_path: Path) -> Path:
    """A corpus of standard library lines in 4+ shards, with a kept field."""
    folder = tmp_path_factory.mktemp("prepared")
    records = [{"text": line, "n": i}
               for i, line in enumerate(stdlib_corpus[0][1].splitlines()[:400]) if line]
    write_jsonl(folder / "in.jsonl", records)
    prepare_corpus([str(folder / "in.jsonl")], str(bpe_path), folder / "corpus",
                   PrepareOptions(shard_size=2 << 10, keep_fields=("n",)),
                   show_progress=False)
    return folder / "corpus"


@pytest.fixture(name="corpus")
def prepared_copy(prepared: Path, tmp_path: Path) -> Path:
    """``corpus``: a fresh copy of the prepared corpus, free to damage. A module that
    imports it has it in place of conftest's ``corpus``."""
    return Path(shutil.copytree(prepared, tmp_path / "corpus"))


def manifest_json(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "manifest.json").read_text())


def rewrite_shard(folder: Path, index: int, table: pa.Table) -> str:
    """Replaces shard ``index`` with ``table`` and updates its manifest entry's size and
    hash (rows and tokens stay), so that only the content checks can object."""
    data = manifest_json(folder)
    entry = data["shards"][index]
    path = folder / entry["file"]
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    entry["bytes"] = path.stat().st_size
    entry["sha256"] = sha256_file(path)
    (folder / "manifest.json").write_text(json.dumps(data))
    return entry["file"]


def read_shard(folder: Path, index: int) -> pa.Table:
    """Shard ``index`` read into memory (not mapped: the tests rewrite the file)."""
    name = manifest_json(folder)["shards"][index]["file"]
    return pa.ipc.open_file(pa.py_buffer((folder / name).read_bytes())).read_all()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().out

