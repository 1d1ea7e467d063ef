"""Real text for the tests of ``arrowloader prepare``: source files of Python's own
standard library (on every machine that runs the tests) and a byte-level BPE tokenizer
trained on them offline with ``tokenizers``, which decodes its ids back to the exact
text. Fixtures here are imported by the test modules that use them."""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

EOS = "<|endoftext|>"
#: Characters of standard library source the corpus takes, at most.
CORPUS_CHARS = 600_000


def stdlib_texts(limit: int = CORPUS_CHARS) -> list[tuple[str, str]]:
    """``(file name, text)`` of the standard library's top-level ``.py`` files, sorted by
    name, until ``limit`` characters; files that are not UTF-8 are skipped."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    total = 0
    for path in sorted(root.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text or total + len(text) > limit:
            continue
        texts.append((path.name, text))
        total += len(text)
    assert len(texts) >= 20, "expected the standard library's source files"
    return texts


def train_bpe(texts: Sequence[str], vocab_size: int = 1000) -> Any:
    """A byte-level BPE tokenizer (no normalizer, no prefix space), which round-trips
    any text exactly, with ``EOS`` as its special token 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


@pytest.fixture(scope="session")
def stdlib_corpus() -> list[tuple[str, str]]:
    """The standard library texts (see :func:`stdlib_texts`)."""
    return stdlib_texts()


@pytest.fixture(scope="session")
def bpe_path(stdlib_corpus: list[tuple[str, str]], tmp_path_factory: Any) -> Path:
    """``tokenizer.json`` of a BPE trained on the corpus (vocabulary 1000)."""
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    train_bpe([text for _, text in stdlib_corpus]).save(str(path))
    return path


@pytest.fixture(scope="session")
def bpe(bpe_path: Path) -> Any:
    """The trained tokenizer, loaded (the oracle the shards are compared with)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(bpe_path))


def write_text_files(folder: Path, texts: Sequence[tuple[str, str]]) -> Path:
    """One ``.txt`` file per text, named so that sorting keeps the order; returns the
    folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, text) in enumerate(texts):
        (folder / f"{i:04d}-{name}.txt").write_bytes(text.encode("utf-8"))
    return folder


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    """One JSON object per line (gzip-compressed for a ``.gz`` name)."""
    import gzip

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def shard_rows(folder: Path, column: str = "input_ids") -> list[Any]:
    """pyarrow's own reading of every shard the manifest lists, in order: the column's
    values as Python lists."""
    manifest = json.loads((folder / "manifest.json").read_text())
    rows: list[Any] = []
    for shard in manifest["shards"]:
        with pa.memory_map(str(folder / shard["file"])) as source:
            rows.extend(pa.ipc.open_file(source).read_all().column(column).to_pylist())
    return rows


def shard_bytes(folder: Path) -> dict[str, bytes]:
    """Every shard file's bytes by name."""
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.arrow"))}
