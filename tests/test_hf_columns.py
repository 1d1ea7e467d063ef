"""The per-token columns Hugging Face tokenizers write beside input_ids (a stored
attention_mask, token_type_ids, per-token labels) are carried into native batches, padded
as transformers' own collators pad them; the collators are the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import CorpusFormatError
from conftest import write_ipc

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def tokenizer(bpe_path: Path) -> Any:
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_path))
    tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


@pytest.fixture(scope="module")
def texts(stdlib_corpus: Any) -> list[str]:
    lines = [line for line in stdlib_corpus[0][1].splitlines() if line.strip()]
    return lines[:40]


def native_and_torch(ds: arrowloader.TokenDataset, batch_size: int = 8) -> list[dict]:
    """Native batches, checked equal to torch's loader with the dataset's collate over the
    same sampler."""
    native = list(arrowloader.DataLoader(ds, batch_size=batch_size, num_workers=2))
    assert arrowloader.DataLoader(ds, batch_size=batch_size).native
    torch_batches = list(
        torch.utils.data.DataLoader(ds, batch_size=batch_size, collate_fn=ds.collate)
    )
    assert len(native) == len(torch_batches)
    for a, b in zip(native, torch_batches):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    return native


def test_a_stored_attention_mask_is_the_batchs_mask(
    tmp_path: Path, tokenizer: Any, texts: list[str]
) -> None:
    """The classic tutorial: tokenized with padding="max_length", saved with datasets.
    The batch's mask is the stored one (pads inside input_ids stay masked), not ones."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=64)
    assert any(0 in m for m in encoded["attention_mask"])
    folder = tmp_path / "imdb_tok"
    datasets.Dataset.from_dict(
        {**encoded, "label": [i % 2 for i in range(len(texts))]}
    ).save_to_disk(str(folder))
    ds = arrowloader.TokenDataset(folder, label_column="label", pad_token_id=tokenizer.pad_token_id)
    assert ds.stored_attention_mask
    batches = native_and_torch(ds)
    stored = torch.tensor(encoded["attention_mask"])
    got = torch.cat([b["attention_mask"] for b in batches])
    assert torch.equal(got, stored)
    assert got.sum(1).tolist() == stored.sum(1).tolist() != [64] * len(texts)
    # What DataCollatorWithPadding gives for the same stored rows.
    collator = transformers.DataCollatorWithPadding(tokenizer, return_tensors="pt")
    theirs = collator(
        [{"input_ids": i, "attention_mask": m} for i, m in
         zip(encoded["input_ids"][:8], encoded["attention_mask"][:8])]
    )
    assert torch.equal(batches[0]["input_ids"], theirs["input_ids"])
    assert torch.equal(batches[0]["attention_mask"], theirs["attention_mask"])


def test_causal_labels_follow_a_stored_mask(
    tmp_path: Path, tokenizer: Any, texts: list[str]
) -> None:
    encoded = tokenizer(texts[:12], padding="max_length", truncation=True, max_length=32)
    folder = tmp_path / "clm"
    datasets.Dataset.from_dict(dict(encoded)).save_to_disk(str(folder))
    ds = arrowloader.TokenDataset(
        folder, causal_labels=True, pad_token_id=tokenizer.pad_token_id
    )
    (batch, *_) = native_and_torch(ds, batch_size=12)
    ids, mask = torch.tensor(encoded["input_ids"]), torch.tensor(encoded["attention_mask"])
    assert torch.equal(batch["labels"], ids.masked_fill(mask == 0, -100))


def test_token_type_ids_are_padded_as_data_collator_with_padding_pads_them(
    tmp_path: Path, tokenizer: Any, texts: list[str]
) -> None:
    rng = np.random.default_rng(2)
    ids = [tokenizer(t)["input_ids"][:20] or [5] for t in texts[:16]]
    types = [(np.arange(len(i)) >= rng.integers(0, len(i) + 1)).astype(np.int8).tolist()
             for i in ids]
    path = tmp_path / "pairs.arrow"
    write_ipc(path, {
        "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
        "token_type_ids": pa.array(types, type=pa.list_(pa.int8())),
    })
    ds = arrowloader.TokenDataset(path, pad_token_id=tokenizer.pad_token_id)
    batches = native_and_torch(ds)
    collator = transformers.DataCollatorWithPadding(tokenizer, return_tensors="pt")
    for b, start in zip(batches, range(0, 16, 8)):
        theirs = collator([{"input_ids": i, "token_type_ids": t}
                           for i, t in zip(ids[start:start + 8], types[start:start + 8])])
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert torch.equal(b[key], theirs[key]), key
    with pytest.raises(CorpusFormatError, match="'token_type_ids' row 3"):
        types[3] = [*types[3], 1]
        bad = tmp_path / "bad.arrow"
        write_ipc(bad, {
            "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
            "token_type_ids": pa.array(types, type=pa.list_(pa.int8())),
        })
        arrowloader.TokenDataset(bad)
    plain = arrowloader.TokenDataset(path, extra_columns={})  # carry nothing
    assert "token_type_ids" not in next(iter(arrowloader.DataLoader(plain, batch_size=4)))


def test_per_token_labels_are_padded_as_for_token_classification(
    tmp_path: Path, tokenizer: Any, texts: list[str]
) -> None:
    ids = [tokenizer(t)["input_ids"][:24] or [5] for t in texts[:16]]
    tags = [[(t % 5) for t in row] for row in ids]
    path = tmp_path / "ner.arrow"
    write_ipc(path, {
        "input_ids": pa.array(ids, type=pa.list_(pa.int32())),
        "tags": pa.array(tags, type=pa.list_(pa.int64())),
    })
    ds = arrowloader.TokenDataset(
        path, label_column="tags", pad_token_id=tokenizer.pad_token_id, padding_side="right"
    )
    batches = native_and_torch(ds)
    collator = transformers.DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    for b, start in zip(batches, range(0, 16, 8)):
        theirs = collator([{"input_ids": i, "labels": t}
                           for i, t in zip(ids[start:start + 8], tags[start:start + 8])])
        for key in ("input_ids", "attention_mask", "labels"):
            assert torch.equal(b[key], theirs[key]), key
    truncated = arrowloader.TokenDataset(path, label_column="tags", max_length=5)
    (first, *_) = arrowloader.DataLoader(truncated, batch_size=2)
    assert first["labels"].tolist() == [row[:5] + [-100] * (5 - len(row[:5])) for row in tags[:2]]
