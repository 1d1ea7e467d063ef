"""arrowloader prepare: every input format, real text that decodes back exactly through
TokenDataset and PackedDataset, kept fields, the token type, determinism, shard sizes,
resumption after an interruption, and every error path. The oracles: the tokenizer's own
encoding of each document, and pyarrow's reading of the shards."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from arrowloader.cli import main
from arrowloader.prepare import run as prepare_run
from arrowloader.prepare.inputs import PrepareInputError
from arrowloader.prepare.run import OutputFolderError, prepare_corpus
from arrowloader.prepare.shard_plan import PrepareOptions, token_dtype
from arrowloader.prepare.tokenizer import TokenizerError, load_tokenizer
from text_corpus import EOS, shard_bytes, shard_rows, write_jsonl, write_text_files

#: Mixed text for the format tests: unicode, tabs, CRLF inside a document, quotes.
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 🙂.",
    "def f(x):\n\treturn x * 2  # code\n",
    'She said "hello" and left; \\ backslash',
    "a",
    "Windows line\r\nends inside one document",
    "   leading and trailing spaces   ",
    "numbers 0123456789 and symbols !@#$%^&*()",
] * 3


def encode(tokenizer: Any, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def prepare(inputs: Any, tokenizer: Path, out: Path, **kwargs: Any) -> Any:
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in PrepareOptions.__annotations__}
    kwargs.setdefault("show_progress", False)
    inputs = [str(p) for p in (inputs if isinstance(inputs, list) else [inputs])]
    return prepare_corpus(inputs, str(tokenizer), out, PrepareOptions(**options), **kwargs)


# --- real text, through both datasets -------------------------------------------------


def test_stdlib_round_trips_through_token_and_packed_datasets(
    tmp_path: Path, stdlib_corpus: list[tuple[str, str]], bpe: Any, bpe_path: Path
) -> None:
    """Standard library files, one document each, in shards of ~64 KiB: TokenDataset on
    the folder decodes back to every file's exact text, in input order; PackedDataset's
    token stream, split at EOS, decodes back to every document it covers."""
    inputs = write_text_files(tmp_path / "src", stdlib_corpus)
    out = tmp_path / "corpus"
    result = prepare(inputs, bpe_path, out, shard_size=64 << 10)
    assert len(result.manifest.shards) > 3
    ds = arrowloader.TokenDataset(out)
    assert len(ds) == len(stdlib_corpus)
    for i, (_, text) in enumerate(stdlib_corpus):
        assert bpe.decode(ds[i]["input_ids"].tolist(), skip_special_tokens=False) == text

    eos = bpe.token_to_id(EOS)
    seq_len = 255
    packed = arrowloader.PackedDataset(out, seq_len=seq_len, eos_token_id=eos,
                                       shuffle_documents=False)
    stream: list[int] = []
    for b in range(len(packed)):
        block = packed[b]
        stream += block["input_ids"].tolist() + block["labels"][-1:].tolist()
    oracle = [t for _, text in stdlib_corpus for t in [*encode(bpe, text), eos]]
    assert 0 <= len(oracle) - len(stream) <= seq_len  # only the tail short of a block
    assert stream == oracle[: len(stream)]
    documents = []
    start = 0
    for i, token in enumerate(stream):
        if token == eos:
            documents.append(stream[start:i])
            start = i + 1
    assert len(documents) >= len(stdlib_corpus) // 2
    for ids, (_, text) in zip(documents, stdlib_corpus):
        assert bpe.decode(ids, skip_special_tokens=False) == text


def test_append_eos_ends_every_document(tmp_path: Path, bpe: Any, bpe_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    result = prepare(path, bpe_path, tmp_path / "out", append_eos=True)
    eos = bpe.token_to_id(EOS)
    assert result.manifest.eos_token_id == eos and result.manifest.append_eos
    assert shard_rows(tmp_path / "out") == [[*encode(bpe, t), eos] for t in TEXTS]


# --- every input format --------------------------------------------------------------


def write_format(kind: str, folder: Path, texts: list[str]) -> tuple[list[Path], dict[str, Any]]:
    """Writes ``texts`` as input files of one format; returns (inputs, options)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "txt":
        files = write_text_files(folder, [(f"t{i}", t) for i, t in enumerate(texts)])
        return sorted(files.iterdir()), {}
    if kind == "lines":
        # Two files; blank lines and a last line without newline; CRLF line ends.
        half = len(texts) // 2
        a = folder / "a.txt"
        a.write_bytes(("\n\n".join(texts[:half]) + "\n").encode())
        b = folder / "b.txt"
        b.write_bytes("\r\n".join(texts[half:]).encode())
        return [a, b], {"lines": True}
    if kind in ("jsonl", "jsonl.gz"):
        records = [{"text": t, "n": i} for i, t in enumerate(texts)]
        half = len(records) // 2
        a = write_jsonl(folder / f"a.{kind}", records[:half])
        b = write_jsonl(folder / f"b.{kind}", records[half:])
        return [a, b], {}
    if kind == "parquet":
        path = folder / "a.parquet"
        pq.write_table(pa.table({"body": texts, "n": list(range(len(texts)))}), path,
                       row_group_size=5)
        return [path], {"text_field": "body"}
    raise AssertionError(kind)


def split_lines(texts: list[str]) -> list[str]:
    """What --lines makes of the texts written by write_format("lines")."""
    out = []
    for text in texts:
        for line in text.replace("\r\n", "\n").split("\n"):
            if line:
                out.append(line)
    return out


@pytest.mark.parametrize("kind", ["txt", "lines", "jsonl", "jsonl.gz", "parquet"])
def test_every_input_format(tmp_path: Path, kind: str, bpe: Any, bpe_path: Path) -> None:
    """Each format, cut into several shards (shard boundaries inside files and row
    groups): the shards hold exactly the tokenizer's encoding of every document, in
    order; the manifest's counts match pyarrow's."""
    inputs, options = write_format(kind, tmp_path / "in", TEXTS)
    out = tmp_path / "out"
    result = prepare(inputs, bpe_path, out, shard_size=160, **options)
    documents = split_lines(TEXTS) if kind == "lines" else TEXTS
    rows = shard_rows(out)
    assert rows == [encode(bpe, t) for t in documents]
    manifest = result.manifest
    assert len(manifest.shards) > 2
    assert manifest.num_rows == len(documents)
    assert manifest.num_tokens == sum(len(r) for r in rows)
    for shard in manifest.shards:
        table = pa.ipc.open_file(pa.memory_map(str(out / shard.file))).read_all()
        assert shard.rows == table.num_rows
        assert shard.tokens == sum(len(r) for r in table.column("input_ids").to_pylist())
        assert shard.bytes == (out / shard.file).stat().st_size
    assert not (out / ".arrowloader-prepare").exists()


def test_inputs_from_folders_and_globs_are_sorted(tmp_path: Path, bpe: Any,
                                                 bpe_path: Path) -> None:
    folder = tmp_path / "in"
    write_jsonl(folder / "b" / "x.jsonl", [{"text": "second"}])
    write_jsonl(folder / "a.jsonl", [{"text": "first"}])
    (folder / "notes.md").write_text("not an input")
    prepare(folder, bpe_path, tmp_path / "o1")
    assert shard_rows(tmp_path / "o1") == [encode(bpe, "first"), encode(bpe, "second")]
    prepare([str(folder / "**" / "*.jsonl")], bpe_path, tmp_path / "o2")
    assert shard_bytes(tmp_path / "o1") == shard_bytes(tmp_path / "o2")


def test_keep_fields_from_jsonl_and_parquet(tmp_path: Path, bpe_path: Path) -> None:
    """JSON fields get one type over all inputs (ints and floats -> float64, mixed or
    nested -> their JSON text, missing -> null); parquet columns keep their own type."""
    records = [
        {"text": "one", "id": 1, "score": 1, "meta": {"b": 1, "a": [1, 2]}, "tag": "x"},
        {"text": "two", "id": 2, "score": 2.5, "meta": "plain", "tag": None},
        {"text": "three", "id": 3, "meta": 7},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", records)
    out = tmp_path / "out"
    prepare(path, bpe_path, out, keep_fields=("id", "score", "meta", "tag"))
    table = pa.ipc.open_file(pa.memory_map(str(out / "shard-00000.arrow"))).read_all()
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("score").type == pa.float64()
    assert table.schema.field("meta").type == pa.string()
    assert table.column("id").to_pylist() == [1, 2, 3]
    assert table.column("score").to_pylist() == [1.0, 2.5, None]
    assert table.column("meta").to_pylist() == ['{"a": [1, 2], "b": 1}', '"plain"', "7"]
    assert table.column("tag").to_pylist() == ["x", None, None]

    parquet = tmp_path / "d.parquet"
    source = pa.table({"text": ["a", "b"], "when": pa.array([1, 2], pa.timestamp("ms")),
                       "label": pa.array([0, 1], pa.int8())})
    pq.write_table(source, parquet)
    prepare(parquet, bpe_path, tmp_path / "pq", keep_fields=("label", "when"))
    table = pa.ipc.open_file(pa.memory_map(str(tmp_path / "pq" / "shard-00000.arrow"))).read_all()
    assert table.select(["label", "when"]).equals(source.select(["label", "when"]))
    ds = arrowloader.TokenDataset(tmp_path / "pq", label_column="label")
    assert ds.collate([ds[0], ds[1]])["labels"].tolist() == [0, 1]


def test_token_type_is_the_narrowest_for_the_vocabulary(tmp_path: Path) -> None:
    """uint16 up to 65,536 ids, int32 beyond; both read by TokenDataset with the ids the
    tokenizer gives."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    assert [token_dtype(n) for n in (2, 65_536, 65_537, 2**31)] == [
        "uint16", "uint16", "int32", "int32"]
    words = [f"w{i}" for i in range(70_000)]
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "big.json"
    tokenizer.save(str(path))
    text = "w0 w65534 w65535 w69999 unknown"
    write_jsonl(tmp_path / "d.jsonl", [{"text": text}])
    result = prepare(tmp_path / "d.jsonl", path, tmp_path / "out")
    assert result.manifest.token_dtype == "int32" and result.manifest.vocab_size == 70_001
    schema = pa.ipc.open_file(pa.memory_map(str(tmp_path / "out/shard-00000.arrow"))).schema
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    ids = arrowloader.TokenDataset(tmp_path / "out")[0]["input_ids"].tolist()
    assert ids == [1, 65535, 65536, 70000, 0] == tokenizer.encode(text).ids


# --- determinism and shard sizes -----------------------------------------------------


def test_same_inputs_give_byte_identical_shards(tmp_path: Path, stdlib_corpus: Any,
                                                bpe_path: Path) -> None:
    """Two runs, and a run with another tokenizer batch size, write the same bytes."""
    inputs = write_text_files(tmp_path / "src", stdlib_corpus[:12])
    a = prepare(inputs, bpe_path, tmp_path / "a", shard_size=32 << 10, append_eos=True)
    prepare(inputs, bpe_path, tmp_path / "b", shard_size=32 << 10, append_eos=True)
    prepare(inputs, bpe_path, tmp_path / "c", shard_size=32 << 10, append_eos=True,
            batch_size=3)
    first = shard_bytes(tmp_path / "a")
    assert len(first) == len(a.manifest.shards) > 1
    assert shard_bytes(tmp_path / "b") == first == shard_bytes(tmp_path / "c")
    manifests = [(tmp_path / name / "manifest.json").read_bytes() for name in "ab"]
    assert manifests[0] == manifests[1]


def test_shards_come_out_at_about_the_shard_size(tmp_path: Path, stdlib_corpus: Any,
                                                 bpe_path: Path) -> None:
    """Lines of source code as documents (many per shard): every shard but the last is
    within 25% of --shard-size."""
    inputs = write_text_files(tmp_path / "src", stdlib_corpus)
    target = 24 << 10
    result = prepare(inputs, bpe_path, tmp_path / "out", lines=True, shard_size=target)
    sizes = [shard.bytes for shard in result.manifest.shards]
    assert len(sizes) >= 5
    for size in sizes[:-1]:
        assert 0.75 * target <= size <= 1.25 * target, sizes


# --- resumption ------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch: pytest.MonkeyPatch, shards: int) -> None:
    """Makes the local engine write ``shards`` shards, then leave a partial file behind
    and stop, as a killed run would."""
    real = prepare_run.write_shard
    calls = {"n": 0}

    def write_shard(plan: Any, shard: Any, out: Path, *args: Any, **kwargs: Any) -> Any:
        if calls["n"] == shards:
            (out / f".{shard['file']}.partial").write_bytes(b"ARROW1 half a shard")
            raise Interrupted()
        calls["n"] += 1
        return real(plan, shard, out, *args, **kwargs)

    monkeypatch.setattr(prepare_run, "write_shard", write_shard)


def test_resume_keeps_finished_shards_and_redoes_the_partial_one(
    tmp_path: Path, stdlib_corpus: Any, bpe_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = write_text_files(tmp_path / "src", stdlib_corpus[:12])
    options = {"shard_size": 32 << 10, "append_eos": True}
    reference = prepare(inputs, bpe_path, tmp_path / "ref", **options)
    out = tmp_path / "out"
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        prepare(inputs, bpe_path, out, **options)
    assert not (out / "manifest.json").exists()
    kept = {name: os.stat(out / name) for name in ("shard-00000.arrow", "shard-00001.arrow")}
    monkeypatch.undo()

    result = prepare(inputs, bpe_path, out, **options)
    assert (result.shards_kept, result.shards_written) == (2, len(reference.manifest.shards) - 2)
    for name, st in kept.items():  # not rewritten
        now = os.stat(out / name)
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert not list(out.glob(".*.partial"))
    assert shard_bytes(out) == shard_bytes(tmp_path / "ref")
    assert result.manifest.shards == reference.manifest.shards

    again = prepare(inputs, bpe_path, out, **options)
    assert again.up_to_date and again.shards_written == 0


def test_resume_after_the_process_is_killed(tmp_path: Path, stdlib_corpus: Any,
                                            bpe_path: Path) -> None:
    """A CLI run killed (SIGKILL, no clean-up) while writing its third shard; the same
    command run again keeps the two finished shards and ends with the reference bytes."""
    inputs = write_text_files(tmp_path / "src", stdlib_corpus[:12])
    args = [str(inputs), "--tokenizer", str(bpe_path), "--shard-size", "32KiB", "--quiet"]
    assert main(["prepare", *args, "--output", str(tmp_path / "ref")]) == 0
    script = textwrap.dedent(f"""
        import os, signal, sys
        from arrowloader.prepare import run
        real, done = run.write_shard, []
        def write_shard(plan, shard, out, *a, **k):
            if len(done) == 2:
                (out / ("." + shard["file"] + ".partial")).write_bytes(b"ARROW1 cut")
                os.kill(os.getpid(), signal.SIGKILL)
            done.append(1)
            return real(plan, shard, out, *a, **k)
        run.write_shard = write_shard
        from arrowloader.cli import main
        sys.exit(main({["prepare", *args, "--output", str(tmp_path / "out")]!r}))
    """)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").glob("shard-*")) == [
        "shard-00000.arrow", "shard-00001.arrow"]
    assert main(["prepare", *args, "--output", str(tmp_path / "out")]) == 0
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")
    assert not list((tmp_path / "out").glob(".*.partial"))


def test_a_finished_shard_that_changed_is_redone(
    tmp_path: Path, stdlib_corpus: Any, bpe_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = write_text_files(tmp_path / "src", stdlib_corpus[:12])
    options = {"shard_size": 32 << 10}
    reference = shard_bytes(prepare(inputs, bpe_path, tmp_path / "ref", **options).output)
    out = tmp_path / "out"
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        prepare(inputs, bpe_path, out, **options)
    monkeypatch.undo()
    with open(out / "shard-00001.arrow", "ab") as handle:
        handle.write(b"junk")
    result = prepare(inputs, bpe_path, out, **options)
    assert result.shards_kept == 1
    assert shard_bytes(out) == reference


def test_output_folder_rules(tmp_path: Path, bpe_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with other content, another corpus, or another unfinished preparation is
    refused without --overwrite; with it, the folder is prepared afresh."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "alpha"}, {"text": "beta"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": "gamma"}])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match="not empty"):
        prepare(a, bpe_path, busy)
    prepare(a, bpe_path, busy, overwrite=True)
    assert (busy / "notes.txt").read_text() == "mine"

    out = tmp_path / "out"
    prepare(a, bpe_path, out)
    with pytest.raises(OutputFolderError, match="already holds a prepared corpus"):
        prepare(b, bpe_path, out)
    assert prepare(b, bpe_path, out, overwrite=True).manifest.num_rows == 1

    unfinished = tmp_path / "unfinished"
    interrupt_after(monkeypatch, 0)
    with pytest.raises(Interrupted):
        prepare(a, bpe_path, unfinished)
    monkeypatch.undo()
    with pytest.raises(OutputFolderError, match="unfinished preparation"):
        prepare(b, bpe_path, unfinished)
    assert prepare(b, bpe_path, unfinished, overwrite=True).manifest.num_rows == 1


# --- tokenizers ------------------------------------------------------------------------


def test_transformers_tokenizer_folders(tmp_path: Path, bpe: Any, bpe_path: Path) -> None:
    """A saved fast tokenizer folder (read with tokenizers, EOS from its config) and a
    slow-only folder (read with transformers) give the ids transformers gives."""
    transformers = pytest.importorskip("transformers")
    fast = tmp_path / "fast"
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS).save_pretrained(fast)
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS[:8]])
    result = prepare(tmp_path / "d.jsonl", fast, tmp_path / "o1", append_eos=True)
    assert result.manifest.tokenizer["kind"] == "tokenizers"
    oracle = transformers.AutoTokenizer.from_pretrained(fast)
    eos = oracle.eos_token_id
    assert shard_rows(tmp_path / "o1") == [
        oracle(t, add_special_tokens=False)["input_ids"] + [eos] for t in TEXTS[:8]]

    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "vocab.txt").write_text("\n".join(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "brown", "fox", ".",
         "a", "##s"]) + "\n")
    (slow / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    texts = ["The quick brown fox.", "a fox", "foxes"]
    write_jsonl(tmp_path / "s.jsonl", [{"text": t} for t in texts])
    result = prepare(tmp_path / "s.jsonl", slow, tmp_path / "o2", add_special_tokens=True)
    assert result.manifest.tokenizer["kind"] == "transformers"
    oracle = transformers.AutoTokenizer.from_pretrained(slow)
    assert shard_rows(tmp_path / "o2") == [oracle(t)["input_ids"] for t in texts]
    assert result.manifest.vocab_size == len(oracle)


def test_tokenizer_folder_code_is_never_run(tmp_path: Path) -> None:
    """A tokenizer folder that asks for its own Python class is refused; the class's
    module is never imported."""
    pytest.importorskip("transformers")
    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "evil_tokenizer.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PreTrainedTokenizer\n"
        "class EvilTokenizer(PreTrainedTokenizer):\n    pass\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"auto_map": {"AutoTokenizer": ["evil_tokenizer.EvilTokenizer", None]},
         "tokenizer_class": "EvilTokenizer"}))
    with pytest.raises(TokenizerError, match="not a transformers tokenizer folder"):
        load_tokenizer(folder)
    assert not marker.exists()


def test_tokenizer_errors(tmp_path: Path, bpe_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not a tokenizers tokenizer file"):
        load_tokenizer(bad)
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        load_tokenizer(bpe_path, eos_token="<nope>")
    loaded = load_tokenizer(bpe_path)
    with pytest.raises(TokenizerError, match="changed since the preparation began"):
        load_tokenizer(bpe_path, expected_sha256="0" * 64)
    assert loaded.vocab_size == 1000 and loaded.eos_token_id == 0


def test_truncation_in_a_tokenizer_file_is_switched_off(tmp_path: Path, bpe: Any) -> None:
    """A tokenizer.json saved with truncation enabled would cut documents silently."""
    from tokenizers import Tokenizer

    cut = Tokenizer.from_str(bpe.to_str())
    cut.enable_truncation(4)
    path = tmp_path / "cut.json"
    cut.save(str(path))
    text = TEXTS[1] * 3
    write_jsonl(tmp_path / "d.jsonl", [{"text": text}])
    prepare(tmp_path / "d.jsonl", path, tmp_path / "out")
    assert shard_rows(tmp_path / "out") == [encode(bpe, text)]
    assert len(encode(bpe, text)) > 4


def test_append_eos_needs_an_eos_token(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / "t.json"
    tokenizer.save(str(path))
    write_jsonl(tmp_path / "d.jsonl", [{"text": "a a"}])
    with pytest.raises(ValueError, match="--append-eos needs an EOS token"):
        prepare(tmp_path / "d.jsonl", path, tmp_path / "out", append_eos=True)
    prepare(tmp_path / "d.jsonl", path, tmp_path / "out", append_eos=True, eos_token="[UNK]")
    assert shard_rows(tmp_path / "out") == [[1, 1, 0]]


# --- bad inputs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("d.jsonl", b'{"text": "ok"}\n{"text": broken}\n', {}, r"d\.jsonl: line 2: not a JSON"),
        ("d.jsonl", b'{"text": "ok"}\n\n[1, 2]\n', {}, r"line 3: a JSON list, expected an obj"),
        ("d.jsonl", b'{"body": "x"}\n', {}, r"line 1: field 'text' is missing"),
        ("d.jsonl", b'{"text": 5}\n', {}, r"line 1: field 'text' is a int"),
        ("d.jsonl.gz", gzip.compress(b'{"text": "a"}\n{"text"\n'), {}, r"line 2: not a JSON"),
        ("d.txt", b"ok\n\xff\xfe bad\n", {"lines": True}, r"d\.txt: line 2: not UTF-8"),
        ("d.txt", b"caf\xe9", {}, r"d\.txt: not UTF-8 text \(byte 3"),
        ("d.txt", b"text", {"keep_fields": ("id",)}, r"--keep-fields needs \.jsonl or"),
        ("d.txt", b"\n\n", {"lines": True}, r"hold no document"),
        ("d.csv", b"text\nx\n", {}, r"d\.csv: unsupported input"),
    ],
)
def test_bad_inputs_are_named(tmp_path: Path, bpe_path: Path, name: str, content: bytes,
                              options: dict[str, Any], message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PrepareInputError, match=message):
        prepare(path, bpe_path, tmp_path / "out", **options)


def test_bad_parquet_inputs_are_named(tmp_path: Path, bpe_path: Path) -> None:
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), path)
    with pytest.raises(PrepareInputError, match=r"p\.parquet: no column 'text'"):
        prepare(path, bpe_path, tmp_path / "o")
    with pytest.raises(PrepareInputError, match=r"column 'n' has type int64; expected a str"):
        prepare(path, bpe_path, tmp_path / "o", text_field="n")
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None]}), nulls)
    with pytest.raises(PrepareInputError, match=r"row 1: column 'text' is null"):
        prepare(nulls, bpe_path, tmp_path / "o")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(PrepareInputError, match="not a readable parquet file"):
        prepare(broken, bpe_path, tmp_path / "o")
    first = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": ["a"], "n": [1]}), first)
    other = tmp_path / "q.parquet"
    pq.write_table(pa.table({"text": ["b"], "n": ["one"]}), other)
    with pytest.raises(PrepareInputError, match="kept field 'n' is string here but int64"):
        prepare([first, other], bpe_path, tmp_path / "o", keep_fields=("n",))


def test_missing_inputs_and_bad_options(tmp_path: Path, bpe_path: Path) -> None:
    with pytest.raises(PrepareInputError, match="no such file or folder"):
        prepare(tmp_path / "nope.jsonl", bpe_path, tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareInputError, match=r"holds no \.txt"):
        prepare(tmp_path / "empty", bpe_path, tmp_path / "o")
    with pytest.raises(PrepareInputError, match="the glob matches no"):
        prepare([str(tmp_path / "*.jsonl")], bpe_path, tmp_path / "o")
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    with pytest.raises(ValueError, match="engine must be one of"):
        prepare(path, bpe_path, tmp_path / "o", engine="spark")
    with pytest.raises(ValueError, match="keep_fields must be distinct"):
        prepare(path, bpe_path, tmp_path / "o", keep_fields=("input_ids",))
    with pytest.raises(ValueError, match="shard_size must be positive"):
        prepare(path, bpe_path, tmp_path / "o", shard_size=0)


def test_an_input_that_changes_during_preparation_is_caught(
    tmp_path: Path, bpe_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"doc {i}"} for i in range(20)])
    real = prepare_run.write_shard

    def shrink_then_write(plan: Any, shard: Any, *args: Any, **kwargs: Any) -> Any:
        write_jsonl(path, [{"text": "doc 0"}])
        return real(plan, shard, *args, **kwargs)

    monkeypatch.setattr(prepare_run, "write_shard", shrink_then_write)
    with pytest.raises(PrepareInputError, match="changed while it was being prepared"):
        prepare(path, bpe_path, tmp_path / "out")


# --- the command line --------------------------------------------------------------------


def test_cli_prepare_prints_and_writes_figures(tmp_path: Path, bpe_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "id": i} for i, t in enumerate(TEXTS)])
    out = tmp_path / "out"
    argv = ["prepare", str(path), "--tokenizer", str(bpe_path), "--output", str(out),
            "--keep-fields", "id", "--append-eos", "--shard-size", "1KiB", "--quiet",
            "--json", str(tmp_path / "fig.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    figures = json.loads((tmp_path / "fig.json").read_text())
    assert figures["documents"] == len(TEXTS) == figures["documents_written"]
    assert figures["tokens"] == sum(len(r) for r in shard_rows(out))
    assert f"{len(TEXTS)} documents" in printed and "tokens/s" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"].startswith("arrowloader prepare ")
    assert "--keep-fields id" in manifest["command"]
    assert main(argv) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert main(["prepare", str(path), "--tokenizer", str(tmp_path / "x.json"), "--output",
                 str(tmp_path / "o2"), "--quiet"]) == 2
    assert "no such tokenizer" in capsys.readouterr().err


def test_progress_bar_reports_documents_and_tokens(tmp_path: Path, bpe_path: Path) -> None:
    """With progress on, the bar shows documents of the total, tokens and rates."""
    from tqdm import tqdm

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    bars: list[Any] = []
    real_init = tqdm.__init__
    sink = open(os.devnull, "w")  # closed below

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs["disable"] = False
        kwargs["file"] = sink
        real_init(self, *args, **kwargs)
        bars.append(self)

    mp = pytest.MonkeyPatch()
    mp.setattr(tqdm, "__init__", init)
    try:
        prepare(path, bpe_path, tmp_path / "out", show_progress=True)
    finally:
        mp.undo()
        sink.close()
    bar = next(b for b in bars if b.desc == "tokenizing")
    assert bar.n == bar.total == len(TEXTS)
    tokens = sum(len(r) for r in shard_rows(tmp_path / "out"))
    assert f"{tokens / 1e6:.2f}M tokens" in bar.postfix and "tok/s" in bar.postfix
    assert "shard 1/1" in bar.postfix


def test_values_are_exact_arrays(tmp_path: Path, bpe: Any, bpe_path: Path) -> None:
    """The token column is stored as uint16 lists, no nulls, one record batch."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in TEXTS])
    prepare(path, bpe_path, tmp_path / "out")
    reader = pa.ipc.open_file(pa.memory_map(str(tmp_path / "out/shard-00000.arrow")))
    assert reader.num_record_batches == 1
    column = reader.get_batch(0).column("input_ids")
    assert column.type == pa.list_(pa.uint16()) and column.null_count == 0
    assert np.array_equal(column.values.to_numpy(),
                          np.concatenate([encode(bpe, t) for t in TEXTS]).astype(np.uint16))
