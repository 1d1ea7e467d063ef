"""Completion-only loss (a per-token loss mask or a per-example prompt length) in padded
and packed batches, against plain-Python oracles built from pyarrow reading the same
files, TRL's semantics (labels -100 on the prompt) and, for packed rows, Hugging Face's
DataCollatorWithFlattening given the same examples with their labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import CorpusFormatError, PackedDataset, TokenDataset, reference
from conftest import pyarrow_rows, write_ipc

IGNORE = -100
EOS = 0
PAD = 999
#: The mask columns of the corpus, one per value type a mask may have.
MASKS = ("mask_bool", "mask_uint8", "mask_int8", "mask_int64")


def example_corpus(folder: Path, seed: int, files: int = 2) -> list[Path]:
    """``files`` IPC files (three record batches each) of 0..40-token examples with ids in
    [1, 500): ``input_ids``, a random per-token mask in every mask type (``MASKS``), a
    prompt length in [0, length] (``prompt_len``) and the same prompt as a mask
    (``prompt_mask``: 0 on the prompt, 1 after)."""
    rng = np.random.default_rng(seed)
    paths = []
    for f in range(files):
        n = 40
        lengths = rng.integers(0, 41, size=n)
        ids = [rng.integers(1, 500, size=int(k)).tolist() for k in lengths]
        masks = [rng.integers(0, 2, size=int(k)).tolist() for k in lengths]
        prompts = [int(rng.integers(0, k + 1)) for k in lengths]
        columns = {
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "mask_bool": pa.array([[bool(v) for v in m] for m in masks], pa.list_(pa.bool_())),
            "mask_uint8": pa.array(masks, pa.list_(pa.uint8())),
            "mask_int8": pa.array(masks, pa.list_(pa.int8())),
            "mask_int64": pa.array(masks, pa.large_list(pa.int64())),
            "prompt_len": pa.array(prompts, pa.int32()),
            "prompt_mask": pa.array(
                [[0] * p + [1] * (int(k) - p) for p, k in zip(prompts, lengths)],
                pa.list_(pa.uint8()),
            ),
        }
        # Uneven record batches, and a bool column whose slices start mid-byte.
        bounds = [(0, 7), (7, 23), (23, n)]
        paths.append(write_ipc(folder / f"part-{f}.arrow", columns, bounds=bounds,
                               stream=f % 2 == 1))
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return example_corpus(tmp_path_factory.mktemp("sft"), 13)


def in_loss_of(paths: list[Path], mask: Optional[str], prompt: Optional[str]) -> list[list[bool]]:
    """Per document, whether each token is in the loss, read by pyarrow: the mask's 1s,
    or the tokens from the prompt length on (TRL: the prompt's labels are -100)."""
    ids = pyarrow_rows(paths)
    if mask is not None:
        return [[bool(v) for v in row] for row in pyarrow_rows(paths, mask)]
    if prompt is not None:
        return [[i >= p for i in range(len(doc))] for doc, p in
                zip(ids, pyarrow_rows(paths, prompt))]
    return [[True] * len(doc) for doc in ids]


SOURCES = [(m, None) for m in MASKS] + [("prompt_mask", None), (None, "prompt_len")]


def source_options(mask: Optional[str], prompt: Optional[str]) -> dict[str, str]:
    if mask is not None:
        return {"loss_mask_column": mask}
    return {"prompt_length_column": prompt} if prompt is not None else {}


def padded_oracle(
    documents: list[list[int]], in_loss: list[list[bool]], max_length: Optional[int],
    truncation_side: str, padding_side: str,
) -> list[list[int]]:
    """Causal labels of a padded batch: each document's tokens, -100 where not in the loss,
    truncated and padded (with -100) as the dataset pads."""
    labels = [[t if keep else IGNORE for t, keep in zip(doc, flags)]
              for doc, flags in zip(documents, in_loss)]
    kept = [reference.truncate(row, max_length, truncation_side) for row in labels]
    width = max(map(len, kept), default=0)
    pad = [[IGNORE] * (width - len(row)) for row in kept]
    return [row + p if padding_side == "right" else p + row for row, p in zip(kept, pad)]


@pytest.mark.parametrize(("mask", "prompt"), SOURCES)
@pytest.mark.parametrize(
    ("max_length", "truncation_side", "padding_side", "dtype"),
    [(None, "right", "right", torch.int64), (17, "right", "left", torch.int32),
     (11, "left", "right", torch.int64)],
)
def test_padded_labels_leave_out_what_the_mask_says(
    corpus: list[Path], mask: Optional[str], prompt: Optional[str], max_length: Optional[int],
    truncation_side: str, padding_side: str, dtype: torch.dtype,
) -> None:
    ds = TokenDataset(
        corpus, causal_labels=True, max_length=max_length, truncation_side=truncation_side,
        padding_side=padding_side, dtype=dtype, pad_token_id=PAD,
        **source_options(mask, prompt),
    )
    documents = pyarrow_rows(corpus)
    in_loss = in_loss_of(corpus, mask, prompt)
    batch_size = 6
    batches = list(arrowloader.DataLoader(ds, batch_size=batch_size, num_workers=2))
    assert len(batches) == -(-len(documents) // batch_size)
    for b, batch in enumerate(batches):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        expected = padded_oracle(documents[rows], in_loss[rows], max_length, truncation_side,
                                 padding_side)
        assert batch["labels"].tolist() == expected, b
        assert batch["labels"].dtype == dtype
        # The tokens themselves are untouched: where a label is kept, it is the token.
        kept = batch["labels"] != IGNORE
        assert torch.equal(batch["labels"][kept], batch["input_ids"][kept])
    # The item path (ds[i], ds.collate) gives the same batches as the native one, also
    # shuffled, through torch's own DataLoader.
    torch_loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=True, collate_fn=ds.collate,
        generator=torch.Generator().manual_seed(5),
    )
    ours = arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=True,
                                  generator=torch.Generator().manual_seed(5))
    for theirs, native in zip(torch_loader, ours):
        assert theirs.keys() == native.keys()
        for key in theirs:
            assert torch.equal(theirs[key], native[key]), key


def test_a_prompt_length_and_its_mask_give_the_same_batches(corpus: list[Path]) -> None:
    """TRL's two spellings of the same completion-only loss: a prompt length, or a
    completion mask that is 0 on the prompt."""
    by_length = TokenDataset(corpus, causal_labels=True, prompt_length_column="prompt_len")
    by_mask = TokenDataset(corpus, causal_labels=True, loss_mask_column="prompt_mask")
    for a, b in zip(arrowloader.DataLoader(by_length, batch_size=8),
                    arrowloader.DataLoader(by_mask, batch_size=8)):
        assert torch.equal(a["labels"], b["labels"])
    documents = pyarrow_rows(corpus)
    prompts = pyarrow_rows(corpus, "prompt_len")
    for i in range(len(documents)):
        labels = by_length[i]["labels"].tolist()
        assert labels == [IGNORE] * prompts[i] + documents[i][prompts[i]:]


def flattening_collator() -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.DataCollatorWithFlattening(
        return_flash_attn_kwargs=True, return_seq_idx=True, return_tensors="pt"
    )


@pytest.mark.parametrize(("mask", "prompt"), [("mask_bool", None), ("mask_int8", None),
                                              (None, "prompt_len"), (None, None)])
@pytest.mark.parametrize(("overlong", "cap"), [("truncate", None), ("drop", 3),
                                               ("split", None), ("truncate", 1)])
def test_packed_rows_are_what_data_collator_with_flattening_makes(
    corpus: list[Path], mask: Optional[str], prompt: Optional[str], overlong: str,
    cap: Optional[int],
) -> None:
    """Every bestfit row, up to its padding, is DataCollatorWithFlattening's output for the
    row's examples (each with its EOS, labels -100 where not in the loss), in the order
    the plain-Python packer places them; the padding has label -100."""
    seq_len = 32
    collator = flattening_collator()
    ds = PackedDataset(
        corpus, seq_len=seq_len, eos_token_id=EOS, mode="bestfit", pad_token_id=PAD,
        shift_labels=False, flash_attn_kwargs=True, return_seq_idx=True, seed=4,
        overlong=overlong, max_documents_per_row=cap, **source_options(mask, prompt),
    )
    documents = pyarrow_rows(corpus)
    in_loss = in_loss_of(corpus, mask, prompt)
    order = ds.document_order(0).tolist()
    pieces = [[*documents[d], EOS] for d in order]
    flags = [reference.piece_in_loss(len(documents[d]), in_loss[d] if mask or prompt else None)
             for d in order]
    blocks = reference.bestfit_blocks([len(p) for p in pieces], seq_len, cap, overlong)
    batches = list(arrowloader.DataLoader(ds, batch_size=1, shuffle=False))
    assert len(batches) == len(blocks)
    split_seen = False
    for batch, block in zip(batches, blocks):
        examples = []
        for piece, start, length in block:
            ids = pieces[piece][start : start + length]
            labels = [t if keep else IGNORE
                      for t, keep in zip(ids, flags[piece][start : start + length])]
            examples.append({"input_ids": ids, "labels": labels})
            split_seen |= length < len(pieces[piece])
        if cap is not None:
            assert len(examples) <= cap
        theirs = collator(examples)
        n = theirs["input_ids"].shape[1]
        assert batch["input_ids"][0, :n].tolist() == theirs["input_ids"][0].tolist()
        assert batch["labels"][0, :n].tolist() == theirs["labels"][0].tolist()
        assert batch["position_ids"][0, :n].tolist() == theirs["position_ids"][0].tolist()
        assert batch["seq_idx"][0, :n].tolist() == theirs["seq_idx"][0].tolist()
        cu = batch["cu_seq_lens_q"].tolist()
        assert cu[: len(examples) + 1] == theirs["cu_seq_lens_q"].tolist()
        assert batch["cu_seq_lens_q"].dtype == theirs["cu_seq_lens_q"].dtype
        assert batch["labels"][0, n:].eq(IGNORE).all()
        assert batch["input_ids"][0, n:].eq(PAD).all()
    too_long = sum(len(doc) + 1 > seq_len for doc in documents)
    assert too_long > 0  # the corpus has overlong examples: the policy is exercised
    assert split_seen == (overlong in ("split", "truncate"))
    stats = ds.stats()
    assert stats["overlong_documents"] == too_long and stats["overlong"] == overlong


@pytest.mark.parametrize(("mask", "prompt"), [("mask_uint8", None), (None, "prompt_len")])
@pytest.mark.parametrize("overlong", ["split", "truncate", "drop"])
def test_shifted_packed_labels_against_the_plain_python_packer(
    corpus: list[Path], mask: Optional[str], prompt: Optional[str], overlong: str
) -> None:
    seq_len = 24
    ds = PackedDataset(
        corpus, seq_len=seq_len, eos_token_id=EOS, mode="bestfit", pad_token_id=PAD,
        overlong=overlong, max_documents_per_row=4, **source_options(mask, prompt),
    )
    documents = pyarrow_rows(corpus)
    in_loss = in_loss_of(corpus, mask, prompt)
    order = ds.document_order(0).tolist()
    rows = reference.pack_bestfit(
        [documents[d] for d in order], seq_len, EOS, PAD, max_documents_per_row=4,
        overlong=overlong,
        in_loss=[reference.piece_in_loss(len(documents[d]), in_loss[d]) for d in order],
    )
    got = list(arrowloader.DataLoader(ds, batch_size=1, shuffle=False))
    assert len(got) == len(rows)
    for batch, row in zip(got, rows):
        for key in ("input_ids", "labels", "position_ids"):
            assert batch[key][0].tolist() == row[key], key


def test_concat_packing_masks_targets_left_out_of_the_loss(corpus: list[Path]) -> None:
    """In concat mode too: label i of a block targets stream position i + 1, and is -100
    where that token is not in the loss (plain-Python stream oracle)."""
    seq_len = 20
    ds = PackedDataset(corpus, seq_len=seq_len, eos_token_id=EOS, loss_mask_column="mask_bool")
    documents = pyarrow_rows(corpus)
    in_loss = in_loss_of(corpus, "mask_bool", None)
    stream: list[int] = []
    flags: list[bool] = []
    for d in ds.document_order(0).tolist():
        stream += [*documents[d], EOS]
        flags += reference.piece_in_loss(len(documents[d]), in_loss[d])
    block = seq_len + 1
    got = list(arrowloader.DataLoader(ds, batch_size=1, shuffle=False))
    assert len(got) == len(stream) // block
    for b, batch in enumerate(got):
        at = b * block
        expected = [stream[at + i + 1] if flags[at + i + 1] else IGNORE for i in range(seq_len)]
        assert batch["input_ids"][0].tolist() == stream[at : at + seq_len]
        assert batch["labels"][0].tolist() == expected


def test_items_the_torch_path_and_resumption_keep_the_mask(corpus: list[Path]) -> None:
    options = dict(seq_len=32, eos_token_id=EOS, mode="bestfit", pad_token_id=PAD,
                   shift_labels=False, overlong="truncate", loss_mask_column="mask_bool")
    ds = PackedDataset(corpus, **options)
    collated = [ds.collate([ds[i] for i in range(3 * b, 3 * b + 3)]) for b in range(len(ds) // 3)]
    native = list(arrowloader.DataLoader(ds, batch_size=3, shuffle=False))  # epoch 0 too
    assert len(native) == len(collated)
    for a, b in zip(native, collated):
        for key in a:
            assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key]
    fingerprint = ds.fingerprint()
    assert fingerprint["loss_mask_column"] == "mask_bool"
    assert fingerprint["overlong"] == "truncate"
    loader = arrowloader.DataLoader(ds, batch_size=2, shuffle=True)
    it = iter(loader)
    [next(it) for _ in range(3)]
    state = loader.state_dict()
    rest = list(it)
    fresh = arrowloader.DataLoader(PackedDataset(corpus, **options), batch_size=2, shuffle=True,
                                   num_workers=3)
    fresh.load_state_dict(state)
    resumed = list(fresh)
    assert len(resumed) == len(rest)
    for a, b in zip(rest, resumed):
        assert torch.equal(a["labels"], b["labels"])
    # A state taken without the mask is refused: it was another loss.
    plain = arrowloader.DataLoader(
        PackedDataset(corpus, **{**options, "loss_mask_column": None}), batch_size=2,
        shuffle=True,
    )
    with pytest.raises(ValueError, match="loss_mask_column"):
        plain.load_state_dict(state)


def test_defaults_keep_the_fingerprints_of_earlier_states(corpus: list[Path]) -> None:
    """Options added later are named in a fingerprint only when set, so that states saved
    before them still load."""
    packed = PackedDataset(corpus, seq_len=16, eos_token_id=EOS, mode="bestfit").fingerprint()
    padded = TokenDataset(corpus, causal_labels=True).fingerprint()
    for key in ("overlong", "max_documents_per_row", "loss_mask_column",
                "prompt_length_column"):
        assert key not in packed and key not in padded


# --- overlong examples and the cap -------------------------------------------------------


def test_overlong_examples_are_counted_and_announced_once(
    corpus: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    import pickle

    documents = pyarrow_rows(corpus)
    seq_len = 30
    over = [len(doc) + 1 for doc in documents if len(doc) + 1 > seq_len]
    expected = {
        "split": 0,
        "truncate": sum(n - seq_len for n in over),
        "drop": sum(over),
    }
    for overlong, left_out in expected.items():
        caplog.clear()
        with caplog.at_level("WARNING", logger="arrowloader"):
            ds = PackedDataset(corpus, seq_len=seq_len, eos_token_id=EOS, mode="bestfit",
                               shift_labels=False, overlong=overlong)
        assert ds.stats()["overlong_documents"] == len(over)
        assert ds.stats()["overlong_tokens_left_out"] == left_out
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 1 and f"{len(over)} of {len(documents)} documents" in messages[0]
        assert f"overlong={overlong!r}" in messages[0]
        plan = ds.plan()
        assert plan.dropped_tokens == left_out
        assert plan.overlong_pieces == len(over)
        caplog.clear()
        with caplog.at_level("WARNING", logger="arrowloader"):
            pickle.loads(pickle.dumps(ds))  # a worker's copy says nothing again
        assert not caplog.records


def test_overlong_policies_serve_every_token_they_keep(corpus: list[Path]) -> None:
    """Real tokens served per epoch = the corpus's (with EOS) less what the policy leaves
    out; truncated examples keep their first seq_len tokens, dropped ones are absent."""
    documents = pyarrow_rows(corpus)
    seq_len = 30
    for overlong in ("split", "truncate", "drop"):
        ds = PackedDataset(corpus, seq_len=seq_len, eos_token_id=EOS, mode="bestfit",
                           pad_token_id=PAD, shift_labels=False, overlong=overlong)
        served = []
        for batch in arrowloader.DataLoader(ds, batch_size=1):
            row = batch["input_ids"][0]
            cu = batch["cu_seqlens"].tolist()
            served += [tuple(row[a:b].tolist()) for a, b in zip(cu, cu[1:])
                       if not row[a:b].eq(PAD).all()]
        expected = []
        for doc in documents:
            piece = (*doc, EOS)
            if len(piece) <= seq_len:
                expected.append(piece)
            elif overlong == "truncate":
                expected.append(piece[:seq_len])
            elif overlong == "split":
                expected += [piece[i : i + seq_len] for i in range(0, len(piece), seq_len)]
        assert sorted(served) == sorted(expected), overlong


@pytest.mark.parametrize("shift", [True, False])
def test_bestfit_options_against_the_plain_python_packer_on_random_corpora(
    tmp_path: Path, shift: bool
) -> None:
    """Many small corpora, caps and policies: the native plan's rows are the plain-Python
    packer's (shifted convention; unshifted rows compared as blocks)."""
    rng = np.random.default_rng(99)
    for trial in range(25):
        documents = [rng.integers(1, 50, size=int(n)).tolist()
                     for n in rng.integers(0, 25, size=int(rng.integers(1, 30)))]
        path = write_ipc(tmp_path / f"c{trial}.arrow",
                         {"input_ids": pa.array(documents, pa.list_(pa.int32()))})
        seq_len = int(rng.integers(1, 20))
        cap = [None, 1, 2, 5][trial % 4]
        overlong = ("split", "truncate", "drop")[trial % 3]
        ds = PackedDataset(path, seq_len=seq_len, eos_token_id=EOS, mode="bestfit",
                           pad_token_id=PAD, shift_labels=shift, overlong=overlong,
                           max_documents_per_row=cap, seed=trial)
        order = ds.document_order(0).tolist()
        ordered = [documents[d] for d in order]
        got = list(arrowloader.DataLoader(ds, batch_size=1, shuffle=False))
        if shift:
            rows = reference.pack_bestfit(ordered, seq_len, EOS, PAD, cap, overlong)
            assert [b["input_ids"][0].tolist() for b in got] == [r["input_ids"] for r in rows]
            assert [b["labels"][0].tolist() for b in got] == [r["labels"] for r in rows]
        else:
            pieces = [[*doc, EOS] for doc in ordered]
            blocks = reference.bestfit_blocks([len(p) for p in pieces], seq_len, cap, overlong)
            expected = []
            for block in blocks:
                ids = [t for d, s, n in block for t in pieces[d][s : s + n]]
                expected.append(ids + [PAD] * (seq_len - len(ids)))
            assert [b["input_ids"][0].tolist() for b in got] == expected, trial


def test_bad_packing_arguments_name_the_argument(corpus: list[Path]) -> None:
    base = dict(seq_len=16, eos_token_id=EOS)
    with pytest.raises(ValueError, match="overlong must be one of"):
        PackedDataset(corpus, mode="bestfit", overlong="cut", **base)
    with pytest.raises(ValueError, match="max_documents_per_row must be positive"):
        PackedDataset(corpus, mode="bestfit", max_documents_per_row=0, **base)
    with pytest.raises(TypeError, match="max_documents_per_row"):
        PackedDataset(corpus, mode="bestfit", max_documents_per_row=2.0, **base)
    with pytest.raises(TypeError, match="max_documents_per_row"):
        PackedDataset(corpus, mode="bestfit", max_documents_per_row=True, **base)
    with pytest.raises(ValueError, match="overlong applies to mode='bestfit'"):
        PackedDataset(corpus, overlong="drop", **base)
    with pytest.raises(ValueError, match="max_documents_per_row applies to mode='bestfit'"):
        PackedDataset(corpus, max_documents_per_row=2, **base)


# --- errors ------------------------------------------------------------------------------


def one_file(folder: Path, **columns: pa.Array) -> Path:
    ids = pa.array([[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]], pa.list_(pa.int32()))
    return write_ipc(folder / "bad.arrow", {"input_ids": ids, **columns}, bounds=[(0, 2), (2, 4)])


def assert_place(error: CorpusFormatError, path: Path, column: str, row: Optional[int]) -> None:
    assert (error.path, error.column, error.row) == (str(path), column, row)
    assert str(path) in str(error) and repr(column)[1:-1] in str(error)


@pytest.mark.parametrize("dataset", ["padded", "packed"])
def test_bad_masks_and_prompt_lengths_name_file_column_and_row(
    tmp_path: Path, dataset: str
) -> None:
    def open_one(path: Path, **options: Any) -> Any:
        if dataset == "padded":
            return TokenDataset(path, causal_labels=True, **options)
        return PackedDataset(path, seq_len=8, eos_token_id=EOS, mode="bestfit", **options)

    u8 = pa.list_(pa.uint8())
    cases = [
        # (columns, options, column, row within the file, words in the message)
        ({"m": pa.array([[1, 1, 1], [1, 0], [1, 1], [0, 0, 0, 0]], u8)},
         {"loss_mask_column": "m"}, "m", 2, "2 values beside 1 tokens"),
        ({"m": pa.array([[1, 1, 1], [1, 0], None, [0, 0, 0, 0]], u8)},
         {"loss_mask_column": "m"}, "m", 2, "null"),  # in the file's second record batch
        ({"p": pa.array([0, 2, 2, 1], pa.int32())},
         {"prompt_length_column": "p"}, "p", 2, "prompt length 2 is beyond the 1 tokens"),
        ({"p": pa.array([0, -1, 0, 1], pa.int64())},
         {"prompt_length_column": "p"}, "p", 1, "prompt length -1 is negative"),
        ({"p": pa.array([0, 1, None, 1], pa.int16())},
         {"prompt_length_column": "p"}, "p", 2, "null"),
    ]
    for k, (columns, options, column, row, words) in enumerate(cases):
        path = one_file(tmp_path / str(k), **columns)
        with pytest.raises(CorpusFormatError) as info:
            open_one(path, **options)
        assert_place(info.value, path, column, row)
        assert words in str(info.value), str(info.value)


@pytest.mark.parametrize("dataset", ["padded", "packed"])
def test_a_mask_value_other_than_0_and_1_fails_its_batch(tmp_path: Path, dataset: str) -> None:
    path = one_file(tmp_path, m=pa.array([[1, 1, 1], [1, 0], [1], [0, 2, 0, 0]],
                                         pa.list_(pa.int8())))
    if dataset == "padded":
        ds = TokenDataset(path, causal_labels=True, loss_mask_column="m")
        assert ds[0]["labels"].tolist() == [1, 2, 3]
        attempts = [lambda: ds[3], lambda: list(arrowloader.DataLoader(ds, batch_size=2))]
    else:
        ds = PackedDataset(path, seq_len=8, eos_token_id=EOS, mode="bestfit",
                           loss_mask_column="m", shuffle_documents=False)
        attempts = [lambda: list(arrowloader.DataLoader(ds, batch_size=1, num_workers=2))]
    for attempt in attempts:
        with pytest.raises(CorpusFormatError, match="value 2 at position 1 is neither 0 nor 1") \
                as info:
            attempt()
        assert_place(info.value, path, "m", 3)


def test_bad_column_types_and_missing_columns(tmp_path: Path) -> None:
    path = one_file(
        tmp_path,
        f=pa.array([[1.0] * 3, [1.0] * 2, [1.0], [1.0] * 4], pa.list_(pa.float32())),
        listed=pa.array([[1], [1], [1], [1]], pa.list_(pa.int32())),
    )
    with pytest.raises(CorpusFormatError, match="float") as info:
        TokenDataset(path, causal_labels=True, loss_mask_column="f")
    assert info.value.column == "f"
    with pytest.raises(CorpusFormatError, match="expected an integer type") as info:
        PackedDataset(path, seq_len=4, eos_token_id=EOS, prompt_length_column="listed")
    assert info.value.column == "listed"
    with pytest.raises(CorpusFormatError, match="not found") as info:
        TokenDataset(path, causal_labels=True, loss_mask_column="absent")
    assert info.value.column == "absent"


def test_bad_loss_arguments_name_the_argument(tmp_path: Path) -> None:
    path = one_file(tmp_path, m=pa.array([[1, 1, 1], [1, 0], [1], [0, 0, 0, 0]],
                                         pa.list_(pa.uint8())),
                    p=pa.array([0, 0, 0, 0], pa.int32()), label=pa.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="pass causal_labels=True"):
        TokenDataset(path, loss_mask_column="m")
    with pytest.raises(ValueError, match="give one"):
        TokenDataset(path, causal_labels=True, loss_mask_column="m", prompt_length_column="p")
    with pytest.raises(ValueError, match="give one"):
        PackedDataset(path, seq_len=4, eos_token_id=EOS, loss_mask_column="m",
                      prompt_length_column="p")
    with pytest.raises(ValueError, match="is the token column"):
        PackedDataset(path, seq_len=4, eos_token_id=EOS, loss_mask_column="input_ids")
    with pytest.raises(TypeError, match="loss_mask_column must be a column name"):
        TokenDataset(path, causal_labels=True, loss_mask_column=3)
    with pytest.raises(ValueError, match="one role"):
        TokenDataset(path, causal_labels=True, loss_mask_column="m", extra_columns={"m": 0})


def test_bool_list_columns_are_read_in_place_bit_by_bit(corpus: list[Path]) -> None:
    """A list<bool> column (bit-packed, rows starting at any bit) carried as an extra
    column gives pyarrow's values, truncated and padded as the tokens are."""
    ds = TokenDataset(corpus, max_length=13, extra_columns={"mask_bool": 0})
    expected = [[int(v) for v in row][:13] for row in pyarrow_rows(corpus, "mask_bool")]
    at = 0
    for batch in arrowloader.DataLoader(ds, batch_size=7):
        for row, mask in zip(batch["mask_bool"].tolist(), batch["attention_mask"]):
            assert row[: int(mask.sum())] == expected[at]
            at += 1
    assert at == len(expected)
    assert [ds[i]["mask_bool"].tolist() for i in range(len(ds))] == expected
