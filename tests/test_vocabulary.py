"""Token ids from the tokenizer and the manifest (arrowloader.vocabulary): defaults taken
from them, disagreements refused with both values named, negative ids refused; checked
with real transformers and tokenizers objects and a corpus written by prepare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import CorpusFormatError
from arrowloader.vocabulary import TokenFacts, resolve_facts, tokenizer_facts
from conftest import write_tokens
from prepared_corpus import VOCAB, manifest_json, prepared_copy, read_shard, rewrite_shard

assert prepared_copy  # the module's `corpus` fixture: a prepared corpus free to damage


@pytest.fixture(scope="module")
def hf_tokenizer(bpe_path: Path) -> Any:
    """A transformers tokenizer over the test BPE (vocabulary 1000, EOS id 0), with a pad
    token added (id 1000)."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(bpe_path), eos_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


def test_tokenizer_facts_of_each_kind(hf_tokenizer: Any, bpe: Any, bpe_path: Path) -> None:
    facts = tokenizer_facts(hf_tokenizer)
    assert (facts.vocab_size, facts.eos_token_id, facts.pad_token_id) == (
        len(hf_tokenizer), hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id
    ) == (1001, 0, 1000)
    assert tokenizer_facts(bpe).vocab_size == bpe.get_vocab_size(with_added_tokens=True)
    assert tokenizer_facts(bpe_path) == TokenFacts(
        source=f"tokenizer {bpe_path}", vocab_size=1000
    )
    assert tokenizer_facts(bpe_path.parent).vocab_size == 1000  # a folder with the file
    with pytest.raises(ValueError, match=r"no tokenizer\.json there"):
        tokenizer_facts(bpe_path.parent / "missing")
    with pytest.raises(TypeError, match="tokenizer must be a transformers tokenizer"):
        tokenizer_facts(42)


def test_resolve_takes_the_first_known_and_names_both_on_disagreement() -> None:
    a = TokenFacts("A", vocab_size=10, eos_token_id=2)
    b = TokenFacts("B", vocab_size=10, eos_token_id=3)
    assert resolve_facts({"vocab_size": None, "eos_token_id": None}, a) == {
        "vocab_size": 10, "eos_token_id": 2
    }
    assert resolve_facts({"pad_token_id": 7}, a, None) == {"pad_token_id": 7}
    with pytest.raises(ValueError, match="eos_token_id=5 disagrees with A, which gives eos_"):
        resolve_facts({"eos_token_id": 5}, a)
    with pytest.raises(ValueError, match="eos_token_id 2 from A disagrees with B, which gives"):
        resolve_facts({"eos_token_id": None}, a, b)


def test_a_tokenizer_sets_pad_and_vocabulary_of_a_token_dataset(
    tmp_path: Path, hf_tokenizer: Any
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[5, 6, 7], [8]])
    ds = arrowloader.TokenDataset(path, tokenizer=hf_tokenizer)
    assert ds.pad_token_id == 1000
    (batch,) = arrowloader.DataLoader(ds, batch_size=2)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1000, 1000]]
    # What DataCollatorWithPadding writes for the same rows, with the same tokenizer.
    transformers = pytest.importorskip("transformers")
    collator = transformers.DataCollatorWithPadding(hf_tokenizer, return_tensors="pt")
    theirs = collator([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])
    assert torch.equal(batch["input_ids"], theirs["input_ids"])
    assert torch.equal(batch["attention_mask"], theirs["attention_mask"])
    with pytest.raises(ValueError, match=r"pad_token_id=0 disagrees with tokenizer .* 1000"):
        arrowloader.TokenDataset(path, tokenizer=hf_tokenizer, pad_token_id=0)
    # The resolved ids travel with the dataset; the tokenizer does not.
    clone = torch.utils.data.DataLoader(ds, num_workers=1, batch_size=2, collate_fn=ds.collate)
    assert torch.equal(next(iter(clone))["input_ids"], batch["input_ids"])


def test_a_token_past_the_tokenizers_vocabulary_is_refused(
    tmp_path: Path, hf_tokenizer: Any
) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[5], [64973]])
    ds = arrowloader.TokenDataset(path, tokenizer=hf_tokenizer)
    with pytest.raises(CorpusFormatError, match="row 1"):
        list(arrowloader.DataLoader(ds, batch_size=2))


def test_a_prepared_corpus_gives_vocabulary_and_eos(prepared: Path) -> None:
    ds = arrowloader.TokenDataset(prepared)
    assert ds.corpus.tokens.vocab_size == VOCAB
    packed = arrowloader.PackedDataset(prepared, seq_len=16)
    assert packed.eos_token_id == ds.corpus.manifest.eos_token_id == 0
    with pytest.raises(ValueError, match=r"eos_token_id=5 disagrees with the manifest of"):
        arrowloader.PackedDataset(prepared, seq_len=16, eos_token_id=5)
    with pytest.raises(ValueError, match=r"vocab_size=4000 disagrees with the manifest of"):
        arrowloader.TokenDataset(prepared, vocab_size=4000)


def test_a_served_id_past_the_manifests_vocabulary_is_refused(corpus: Path) -> None:
    """A shard changed after prepare (its sizes and hashes rewritten to match) that holds
    an id past the vocabulary: the manifest's vocabulary is checked without vocab_size=."""
    table = read_shard(corpus, 0)
    ids = table.column("input_ids").to_pylist()
    ids[2] = [*ids[2][:-1], 64973]
    table = table.set_column(0, "input_ids", pa.array(ids, type=table.schema.field(0).type))
    rewrite_shard(corpus, 0, table)
    assert manifest_json(corpus)["vocab_size"] == VOCAB
    ds = arrowloader.TokenDataset(corpus)
    with pytest.raises(CorpusFormatError, match="row 2"):
        ds[2]


def test_packed_dataset_needs_an_eos_from_somewhere(tmp_path: Path, bpe_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[5, 6], [7]])
    with pytest.raises(ValueError, match="PackedDataset needs eos_token_id"):
        arrowloader.PackedDataset(path, seq_len=4)
    with pytest.raises(ValueError, match="PackedDataset needs eos_token_id"):
        arrowloader.PackedDataset(path, seq_len=4, tokenizer=bpe_path)  # it has no EOS


def test_negative_ids_are_refused(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]])
    with pytest.raises(ValueError, match=r"eos_token_id=-5 is negative"):
        arrowloader.PackedDataset(path, seq_len=4, eos_token_id=-5)
    with pytest.raises(ValueError, match=r"pad_token_id=-1 is negative"):
        arrowloader.PackedDataset(path, seq_len=4, eos_token_id=0, pad_token_id=-1)
    with pytest.raises(ValueError, match=r"pad_token_id=-1 is negative"):
        arrowloader.TokenDataset(path, pad_token_id=-1)
    with pytest.raises(ValueError, match=r"eos_token_id=9 is outside the vocabulary \[0, 9\)"):
        arrowloader.PackedDataset(path, seq_len=4, eos_token_id=9, vocab_size=9)
    with pytest.raises(TypeError, match="pad_token_id must be an int"):
        arrowloader.TokenDataset(path, pad_token_id=np.float32(1.0))


@pytest.mark.parametrize(
    "cls, name",
    [("TokenDataset", "pad_token_id"), ("PackedDataset", "eos_token_id"),
     ("PackedDataset", "pad_token_id")],
)
def test_every_id_argument_is_checked(tmp_path: Path, cls: str, name: str) -> None:
    """Each id argument of each dataset: negative, at the vocabulary size, or not an int,
    refused naming the argument (MixedDataset takes no id of its own: its datasets'
    are checked as they are built)."""
    path = write_tokens(tmp_path / "c.arrow", [[1, 2]])
    base = {"seq_len": 4, "eos_token_id": 0} if cls == "PackedDataset" else {}
    make = getattr(arrowloader, cls)
    with pytest.raises(ValueError, match=rf"{name}=-3 is negative"):
        make(path, **{**base, name: -3})
    with pytest.raises(ValueError, match=rf"{name}=12 is outside the vocabulary \[0, 12\)"):
        make(path, **{**base, name: 12}, vocab_size=12)
    with pytest.raises(TypeError, match=rf"{name} must be an int"):
        make(path, **{**base, name: True})
    make(path, **{**base, name: 11}, vocab_size=12)  # the last id of the vocabulary is one
