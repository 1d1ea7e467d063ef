"""The README's Hugging Face quickstart runs as written, offline: ``from_pretrained``
gives a tokenizer trained here (text_corpus.bpe_path) and a tiny GPT-2, ``docs.jsonl``
holds standard library sources, and everything else is the code a user copies."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"

#: Run before the snippet: what would be downloaded, made here instead.
OFFLINE_MODELS = """
import transformers
from tokenizers import Tokenizer

_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file({bpe!r}))
_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
    vocab_size=len(_tokenizer), n_positions=1024, n_embd=32, n_layer=1, n_head=2,
    bos_token_id=None, eos_token_id=None,
))
transformers.AutoTokenizer.from_pretrained = lambda *args, **kwargs: _tokenizer
transformers.AutoModelForCausalLM.from_pretrained = lambda *args, **kwargs: _model
"""

#: Run after it: what the loop trained on is what the tokenizer made of the texts.
CHECKS = """
import json as _json
_texts = [_json.loads(line)["text"] for line in open("docs.jsonl")]
_expected = [tokenizer(text)["input_ids"][:1024] for text in _texts]
assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == _expected
# The dataset itself, as the text after the block says: read from its cache file.
_direct = arrowloader.TokenDataset(tokenized, max_length=1024)
assert [_direct[i]["input_ids"].tolist() for i in range(len(_direct))] == _expected
assert _direct.corpus.files[0].path.name.startswith("cache-")
assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
assert batch["labels"][batch["attention_mask"] == 0].eq(-100).all()
assert torch.isfinite(loss.detach())
print("trained", len(loader), "steps")
"""


def quickstart_code() -> str:
    """The first python block of the README's "Hugging Face quickstart" section."""
    text = README.read_text()
    section = text.split("\n## Hugging Face quickstart\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block in the quickstart"
    return match.group(1)


def test_quickstart_is_short_and_uses_the_hugging_face_path() -> None:
    code = quickstart_code()
    assert len(code.splitlines()) <= 25
    for needed in ("save_to_disk(", "arrowloader.TokenDataset(", "arrowloader.DataLoader(",
                   "for batch in loader"):
        assert needed in code, needed


def test_quickstart_runs(
    tmp_path: Path, bpe_path: Path, stdlib_corpus: list[tuple[str, str]]
) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    with open(tmp_path / "docs.jsonl", "w") as out:
        for _, text in stdlib_corpus[:20]:
            out.write(json.dumps({"text": text}) + "\n")
    script = tmp_path / "quickstart.py"
    script.write_text(OFFLINE_MODELS.format(bpe=str(bpe_path)) + quickstart_code() + CHECKS)
    env = {
        **os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "trained 3 steps" in result.stdout


def test_the_training_framework_snippets_run(tmp_path: Path) -> None:
    """The Accelerate, HF Trainer and Lightning snippets of the README run as written
    (on the CPU, in one process, each in its own namespace) and leave their checkpoints."""
    text = README.read_text()
    section = text[text.index("## Training frameworks"):]
    section = section[: section.index("\n## ", 1)]
    snippets = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(snippets) == 3
    runner = "\n".join(f"exec(compile({code!r}, 'snippet-{i}', 'exec'), {{}})"
                       for i, code in enumerate(snippets))
    result = subprocess.run([sys.executable, "-c", runner], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ckpt").is_dir() and (tmp_path / "out" / "checkpoint-5").is_dir()
    assert any((tmp_path / "pl").rglob("*.ckpt"))
