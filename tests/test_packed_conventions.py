"""PackedDataset's label conventions and Hugging Face's keyword names: shifted labels for a
loss computed directly, unshifted ones for transformers' *ForCausalLM models (which shift
inside their loss), checked against a tiny GPT-2 with DataCollatorForLanguageModeling,
against DataCollatorWithFlattening, and against a plain-Python packer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import write_ipc

transformers = pytest.importorskip("transformers")

EOS = 0
VOCAB = 300


@pytest.fixture(scope="module")
def documents() -> list[list[int]]:
    rng = np.random.default_rng(31)
    return [rng.integers(1, VOCAB, size=int(n)).tolist() for n in rng.integers(1, 30, 60)]


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory, documents: list[list[int]]) -> Path:
    out = tmp_path_factory.mktemp("conventions") / "docs.arrow"
    write_ipc(out, {"input_ids": pa.array(documents, type=pa.list_(pa.int32()))})
    return out


@pytest.fixture(scope="module")
def tokenizer(bpe_path: Path) -> Any:
    """A transformers tokenizer whose pad id (an added token) no corpus id equals, so
    DataCollatorForLanguageModeling masks nothing the corpus holds."""
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(bpe_path))
    tok.add_special_tokens({"pad_token": "<pad>"})
    assert tok.pad_token_id >= VOCAB
    return tok


def sequential(ds: arrowloader.PackedDataset, batch_size: int) -> list[dict[str, Any]]:
    return list(arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=False))


def test_unshifted_labels_give_hf_models_the_collators_loss(path: Path, tokenizer: Any) -> None:
    """GPT2LMHeadModel(**batch): the loss of arrowloader's batch equals the loss of
    DataCollatorForLanguageModeling(mlm=False) over the same tokens; the shifted batch,
    shifted again by the model, gives another (training on token t + 2)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    ds = arrowloader.PackedDataset(
        path, seq_len=32, eos_token_id=EOS, shift_labels=False, shuffle_documents=False,
        return_cu_seqlens=False, return_position_ids=False,
    )
    (batch, *_) = sequential(ds, 4)
    assert torch.equal(batch["labels"], batch["input_ids"])  # concat, nothing masked
    collator = transformers.DataCollatorForLanguageModeling(tokenizer, mlm=False)
    theirs = collator([{"input_ids": row} for row in batch["input_ids"].tolist()])
    assert torch.equal(theirs["labels"], batch["labels"])
    with torch.no_grad():
        ours = model(**batch).loss
        expected = model(input_ids=theirs["input_ids"], labels=theirs["labels"]).loss
        shifted = arrowloader.PackedDataset(
            path, seq_len=32, eos_token_id=EOS, shuffle_documents=False,
            return_cu_seqlens=False, return_position_ids=False,
        )
        (old, *_) = sequential(shifted, 4)
        double_shifted = model(**old).loss
    assert torch.equal(ours, expected)
    assert not torch.allclose(double_shifted, expected)


def stream_blocks(
    documents: list[list[int]], seq_len: int, mask: bool
) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of every block of the unshifted concat stream, in order."""
    stream, starts = [], []
    for doc in documents:
        starts.append(len(stream))
        stream += [*doc, EOS]
    blocks = []
    first = set(starts)
    for b in range(len(stream) // seq_len):
        ids = stream[b * seq_len : (b + 1) * seq_len]
        labels = [
            -100 if mask and b * seq_len + i in first else t for i, t in enumerate(ids)
        ]
        blocks.append((ids, labels))
    return blocks


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("seq_len", [1, 7, 32])
def test_unshifted_concat_against_a_plain_python_packer(
    path: Path, documents: list[list[int]], mask: bool, seq_len: int
) -> None:
    ds = arrowloader.PackedDataset(
        path, seq_len=seq_len, eos_token_id=EOS, shift_labels=False, mask_across_documents=mask,
    )
    order = ds.document_order(0).tolist()
    expected = stream_blocks([documents[i] for i in order], seq_len, mask)
    assert len(ds) == len(expected)
    got = sequential(ds, 1)
    assert [(b["input_ids"][0].tolist(), b["labels"][0].tolist()) for b in got] == expected
    for b in got:  # positions restart at every document start, as HF's flattening does
        starts = b["cu_seqlens"][:-1].tolist()
        pos = b["position_ids"][0].tolist()
        assert [i for i, p in enumerate(pos) if p == 0] == starts


def test_unshifted_bestfit_matches_data_collator_with_flattening(
    path: Path, documents: list[list[int]]
) -> None:
    """Each row holds whole documents (each with its EOS), padded at the end: its real
    part is what DataCollatorWithFlattening makes of those documents, with the
    flash-attention keyword names and seq_idx."""
    ds = arrowloader.PackedDataset(
        path, seq_len=64, eos_token_id=EOS, mode="bestfit", pad_token_id=VOCAB,
        shift_labels=False, flash_attn_kwargs=True, return_seq_idx=True,
    )
    collator = transformers.DataCollatorWithFlattening(
        return_flash_attn_kwargs=True, return_seq_idx=True, return_tensors="pt"
    )
    pieces = {tuple([*doc, EOS]) for doc in documents}
    for batch in sequential(ds, 1):
        ids = batch["input_ids"][0].tolist()
        cu = batch["cu_seq_lens_q"].tolist()
        assert torch.equal(batch["cu_seq_lens_k"], batch["cu_seq_lens_q"])
        assert batch["max_length_q"] == batch["max_length_k"] == batch["max_seqlen"]
        valid = len(ids) - ids[::-1].index(EOS) if EOS in ids else 0
        examples = [ids[a:b] for a, b in zip(cu, cu[1:]) if b <= valid]
        assert all(tuple(e) in pieces for e in examples)  # whole documents, none split
        theirs = collator([{"input_ids": e} for e in examples])
        n = sum(map(len, examples))
        assert n == valid
        assert batch["input_ids"][0, :n].tolist() == theirs["input_ids"][0].tolist()
        assert batch["labels"][0, :n].tolist() == theirs["labels"][0].tolist()
        assert batch["labels"][0, n:].eq(-100).all()  # padding
        assert batch["position_ids"][0, :n].tolist() == theirs["position_ids"][0].tolist()
        assert batch["seq_idx"][0, :n].tolist() == theirs["seq_idx"][0].tolist()
        assert batch["seq_idx"].dtype == theirs["seq_idx"].dtype == torch.int32
        assert cu[: len(examples) + 1] == theirs["cu_seq_lens_q"].tolist()
        assert batch["cu_seq_lens_q"].dtype == theirs["cu_seq_lens_q"].dtype


def test_the_torch_path_and_mixed_datasets_keep_the_keys(path: Path) -> None:
    options = dict(
        seq_len=16, eos_token_id=EOS, shift_labels=False, flash_attn_kwargs=True,
        return_seq_idx=True, return_cu_seqlens=False,
    )
    ds = arrowloader.PackedDataset(path, **options)
    collated = ds.collate([ds[i] for i in range(3)])  # epoch 0's first blocks
    native = sequential(ds, 3)[0]
    assert native.keys() == collated.keys() == {
        "input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
        "max_length_q", "max_length_k", "seq_idx",
    }
    for key, value in native.items():
        same = torch.equal(value, collated[key]) if torch.is_tensor(value) else None
        assert same if same is not None else value == collated[key], key
    other = arrowloader.PackedDataset(path, **{**options, "shift_labels": True})
    with pytest.raises(ValueError, match="has shift_labels=True"):
        arrowloader.MixedDataset({"a": ds, "b": other}, {"a": 1, "b": 1})
    state_ds = arrowloader.PackedDataset(path, seq_len=16, eos_token_id=EOS)
    assert "shift_labels" not in state_ds.fingerprint()
    assert ds.fingerprint()["shift_labels"] is False
