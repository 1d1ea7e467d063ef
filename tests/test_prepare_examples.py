"""arrowloader prepare for fine-tuning data: prompt/completion examples (input_ids,
prompt_length, optionally loss_mask) and conversations through a chat template
(input_ids, loss_mask), from JSON lines and parquet, with tokenizers built here. The
oracles: the tokenizer's own encoding of each prompt and completion and its own
``apply_chat_template`` output, pyarrow's reading of the shards, and TRL's semantics
(labels -100 on the prompt) through the datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import arrowloader
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from arrowloader.cli import main
from arrowloader.prepare.inputs import PrepareInputError
from arrowloader.prepare.run import prepare_corpus
from arrowloader.prepare.shard_plan import PrepareOptions
from arrowloader.prepare.tokenizer import TokenizerError
from text_corpus import EOS, shard_rows, write_jsonl

EXAMPLES = [
    ("What is 2 + 2?", " 4."),
    ("Translate 'Haus' to English:", " house"),
    ("Grüße — say hi in Japanese:", " こんにちは 🙂"),
    ("", " an example without a prompt"),
    ("An example without a completion", ""),
    ("def double(x):\n", "    return 2 * x\n"),
] * 4

#: A chat template that marks the assistant's turns (content and EOS) as generation.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}{% endfor %}"
)
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "and again"},
     {"role": "assistant", "content": "Hello again — こんにちは"}],
    [{"role": "user", "content": "only a question, no answer"}],
] * 3


def prepare(inputs: Any, tokenizer: Path, out: Path, **kwargs: Any) -> Any:
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in PrepareOptions.__annotations__}
    kwargs.setdefault("show_progress", False)
    inputs = [str(p) for p in (inputs if isinstance(inputs, list) else [inputs])]
    return prepare_corpus(inputs, str(tokenizer), out, PrepareOptions(**options), **kwargs)


def write_examples(path: Path) -> Path:
    records = [{"prompt": p, "completion": c, "id": i} for i, (p, c) in enumerate(EXAMPLES)]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=5)
        return path
    return write_jsonl(path, records)


def ids_of(tokenizer: Any, text: str, special: bool = False) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=special).ids


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
@pytest.mark.parametrize("append_eos", [False, True])
def test_prompt_completion_examples(
    tmp_path: Path, bpe: Any, bpe_path: Path, suffix: str, append_eos: bool
) -> None:
    """input_ids are the tokenizer's ids of the prompt then of the completion (then EOS),
    prompt_length the prompt's id count, loss_mask false exactly on the prompt; the
    manifest names the columns; the datasets train on the completion only."""
    path = write_examples(tmp_path / f"sft{suffix}")
    out = tmp_path / "sft"
    result = prepare(path, bpe_path, out, prompt_field="prompt", completion_field="completion",
                     loss_mask=True, append_eos=append_eos, keep_fields=("id",),
                     shard_size=1 << 10)
    assert len(result.manifest.shards) > 1
    eos = [bpe.token_to_id(EOS)] if append_eos else []
    expected_ids = [ids_of(bpe, p) + ids_of(bpe, c) + eos for p, c in EXAMPLES]
    expected_prompts = [len(ids_of(bpe, p)) for p, _ in EXAMPLES]
    assert shard_rows(out) == expected_ids
    assert shard_rows(out, "prompt_length") == expected_prompts
    assert shard_rows(out, "loss_mask") == [
        [i >= p for i in range(len(ids))] for ids, p in zip(expected_ids, expected_prompts)]
    assert shard_rows(out, "id") == list(range(len(EXAMPLES)))
    settings = result.manifest.settings
    assert settings["prompt_field"] == "prompt" and settings["completion_field"] == "completion"
    assert settings["example_columns"] == ["prompt_length", "loss_mask"]
    schema = pa.ipc.open_file(str(out / result.manifest.shards[0].file)).schema
    assert schema.field("loss_mask").type == pa.list_(pa.bool_())
    assert schema.field("prompt_length").type == pa.int32()

    # TRL's completion-only loss: the prompt's labels are -100, the rest the tokens.
    by_length = arrowloader.TokenDataset(out, causal_labels=True,
                                         prompt_length_column="prompt_length")
    by_mask = arrowloader.TokenDataset(out, causal_labels=True, loss_mask_column="loss_mask")
    for i, (ids, p) in enumerate(zip(expected_ids, expected_prompts)):
        assert by_length[i]["labels"].tolist() == [-100] * p + ids[p:]
        assert torch.equal(by_mask[i]["labels"], by_length[i]["labels"])
    packed = arrowloader.PackedDataset(out, seq_len=64, eos_token_id=bpe.token_to_id(EOS),
                                       mode="bestfit", overlong="truncate", shift_labels=False,
                                       loss_mask_column="loss_mask")
    batches = arrowloader.DataLoader(packed, batch_size=1)  # every block: none left over
    trained = sum(int(b["labels"].ne(-100).sum()) for b in batches)
    # Each example's completion tokens are trained (its first token never is: it opens a
    # segment), and the EOS PackedDataset appends after a trained end.
    expected = 0
    for ids, p in zip(expected_ids, expected_prompts):
        flags = [i >= p for i in range(len(ids))]
        flags.append(bool(flags) and flags[-1])
        expected += sum(flags[1:])
    assert trained == expected


def test_special_tokens_go_to_the_prompt_only(tmp_path: Path, bpe: Any) -> None:
    """With --add-special-tokens, a tokenizer that starts every text with a BOS gives it to
    the prompt, never to the completion in the middle of the example."""
    from tokenizers import Tokenizer, processors

    tokenizer = Tokenizer.from_str(bpe.to_str())
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", special_tokens=[(EOS, bpe.token_to_id(EOS))]
    )
    path = tmp_path / "bos.json"
    tokenizer.save(str(path))
    data = write_examples(tmp_path / "sft.jsonl")
    prepare(data, path, tmp_path / "o", prompt_field="prompt", completion_field="completion",
            add_special_tokens=True)
    expected = [ids_of(tokenizer, p, special=True) + ids_of(tokenizer, c) for p, c in EXAMPLES]
    assert all(ids[0] == bpe.token_to_id(EOS) for ids in expected)
    assert shard_rows(tmp_path / "o") == expected
    assert shard_rows(tmp_path / "o", "prompt_length") == [
        len(ids_of(tokenizer, p, special=True)) for p, _ in EXAMPLES]


@pytest.fixture
def chat_tokenizer(tmp_path: Path, bpe: Any) -> tuple[Path, Any]:
    """A transformers tokenizer folder (built here from the test BPE) whose chat template
    marks the assistant's turns, and the tokenizer loaded by transformers."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path / "chat-tokenizer"
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    return folder, transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_conversations_through_the_chat_template(
    tmp_path: Path, chat_tokenizer: tuple[Path, Any], suffix: str
) -> None:
    folder, tokenizer = chat_tokenizer
    records = [{"messages": m, "n": i} for i, m in enumerate(CONVERSATIONS)]
    path = tmp_path / f"chats{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=4)
    else:
        write_jsonl(path, records)
    out = tmp_path / "chats"
    result = prepare(path, folder, out, messages_field="messages", keep_fields=("n",))
    assert result.manifest.tokenizer["kind"] == "transformers"
    assert result.manifest.settings["example_columns"] == ["loss_mask"]
    rows, masks = shard_rows(out), shard_rows(out, "loss_mask")
    for conversation, ids, mask in zip(CONVERSATIONS, rows, masks):
        theirs = tokenizer.apply_chat_template(
            conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ids == list(theirs["input_ids"])
        assert mask == [bool(v) for v in theirs["assistant_masks"]]
        # Independently: the masked tokens are the assistant's contents, each with its EOS.
        answers = "".join(m["content"] + EOS for m in conversation if m["role"] == "assistant")
        assert tokenizer.decode([t for t, m in zip(ids, mask) if m]) == answers
    assert shard_rows(out, "n") == list(range(len(CONVERSATIONS)))
    ds = arrowloader.TokenDataset(out, causal_labels=True, loss_mask_column="loss_mask")
    for i, (ids, mask) in enumerate(zip(rows, masks)):
        assert ds[i]["labels"].tolist() == [t if m else -100 for t, m in zip(ids, mask)]


def test_chat_template_errors(tmp_path: Path, bpe: Any, bpe_path: Path,
                              chat_tokenizer: tuple[Path, Any]) -> None:
    transformers = pytest.importorskip("transformers")
    data = write_jsonl(tmp_path / "c.jsonl", [{"messages": CONVERSATIONS[0]}])
    with pytest.raises(TokenizerError, match="a bare tokenizer file has no chat template"):
        prepare(data, bpe_path, tmp_path / "o1", messages_field="messages")
    plain = tmp_path / "plain"
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS).save_pretrained(
        plain)
    with pytest.raises(TokenizerError, match="no chat template"):
        prepare(data, plain, tmp_path / "o2", messages_field="messages")
    unmarked = tmp_path / "unmarked"
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS)
    tokenizer.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace(
        "{% endgeneration %}", "")
    tokenizer.save_pretrained(unmarked)
    with pytest.raises(TokenizerError, match=r"does not mark the assistant's tokens"):
        prepare(data, unmarked, tmp_path / "o3", messages_field="messages")
    folder, _ = chat_tokenizer
    for bad, words in (
        ({"messages": "hello"}, "field 'messages' is a str, expected a non-empty list"),
        ({"messages": []}, "expected a non-empty list"),
        ({"chat": CONVERSATIONS[0]}, "field 'messages' is missing"),
        ({"messages": [{"role": "user", "content": 3}]}, "message 0 is not an object"),
    ):
        path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": CONVERSATIONS[0]}, bad])
        with pytest.raises(PrepareInputError, match=words) as info:
            prepare(path, folder, tmp_path / "o4", messages_field="messages", overwrite=True)
        assert "bad.jsonl: line 2" in str(info.value)


def test_bad_examples_and_options_are_named(tmp_path: Path, bpe_path: Path) -> None:
    good = {"prompt": "a", "completion": "b"}
    for bad, words in (
        ({"prompt": "a"}, "field 'completion' is missing, expected a string"),
        ({"prompt": 1, "completion": "b"}, "field 'prompt' is a int, expected a string"),
        ({"prompt": "a", "completion": None}, "choose the field with --completion-field"),
    ):
        path = write_jsonl(tmp_path / "bad.jsonl", [good, bad])
        with pytest.raises(PrepareInputError, match=words) as info:
            prepare(path, bpe_path, tmp_path / "o", prompt_field="prompt",
                    completion_field="completion", overwrite=True)
        assert "bad.jsonl: line 2" in str(info.value)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"prompt": ["a", None], "completion": ["b", "c"]}), nulls)
    with pytest.raises(PrepareInputError, match=r"nulls\.parquet: row 1: field 'prompt'"):
        prepare(nulls, bpe_path, tmp_path / "o", prompt_field="prompt",
                completion_field="completion", overwrite=True)
    missing = tmp_path / "m.parquet"
    pq.write_table(pa.table({"prompt": ["a"]}), missing)
    with pytest.raises(PrepareInputError, match="no column 'completion'"):
        prepare(missing, bpe_path, tmp_path / "o", prompt_field="prompt",
                completion_field="completion", overwrite=True)
    text = tmp_path / "d.txt"
    text.write_text("plain")
    with pytest.raises(PrepareInputError, match=r"need \.jsonl or \.parquet inputs"):
        prepare(text, bpe_path, tmp_path / "o", prompt_field="p", completion_field="c")
    path = write_jsonl(tmp_path / "good.jsonl", [good])
    for options, words in (
        ({"prompt_field": "prompt"}, "go together: give both"),
        ({"loss_mask": True}, "--loss-mask needs fine-tuning examples"),
        ({"prompt_field": "prompt", "completion_field": "completion",
          "messages_field": "messages"}, "give one"),
        ({"prompt_field": "prompt", "completion_field": "completion",
          "keep_fields": ("prompt_length",)}, "would clash"),
        ({"prompt_field": "prompt", "completion_field": "completion",
          "keep_fields": ("prompt",)}, "would clash"),
    ):
        with pytest.raises(ValueError, match=words):
            prepare(path, bpe_path, tmp_path / "o", **options)


def test_plain_text_preparations_keep_their_fingerprint_and_plan(
    tmp_path: Path, bpe_path: Path
) -> None:
    """The fine-tuning options are named in a plan and a fingerprint only when set, so a
    plain-text preparation started before they existed still resumes."""
    assert PrepareOptions().example_options == {}
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}])
    result = prepare(path, bpe_path, tmp_path / "o")
    for key in ("prompt_field", "completion_field", "messages_field", "loss_mask",
                "example_columns"):
        assert key not in result.manifest.settings
    assert "prompt_length" not in pa.ipc.open_file(
        str(tmp_path / "o" / result.manifest.shards[0].file)).schema.names


def test_cli_prepare_examples(tmp_path: Path, bpe: Any, bpe_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = write_examples(tmp_path / "sft.jsonl")
    out = tmp_path / "out"
    assert main(["prepare", str(path), "--tokenizer", str(bpe_path), "--output", str(out),
                 "--prompt-field", "prompt", "--completion-field", "completion",
                 "--loss-mask", "--quiet"]) == 0
    assert f"{len(EXAMPLES)} documents" in capsys.readouterr().out
    assert shard_rows(out, "prompt_length") == [len(ids_of(bpe, p)) for p, _ in EXAMPLES]
    manifest = json.loads((out / "manifest.json").read_text())
    assert "--prompt-field prompt" in manifest["command"]
    assert main(["prepare", str(path), "--tokenizer", str(bpe_path), "--output",
                 str(tmp_path / "o2"), "--loss-mask", "--quiet"]) == 2
    assert "--loss-mask needs fine-tuning examples" in capsys.readouterr().err
