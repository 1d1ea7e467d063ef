"""arrowloader.integrations.transformers.ArrowLoaderTrainer: a tiny BERT (built from a
config, nothing downloaded) trained a few steps on the CPU. The oracle is the stock
``transformers.Trainer`` with ``DataCollatorWithPadding`` over the same documents in the
same order: the losses are equal, step by step; a run resumed from a checkpoint
continues with exactly the losses of the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from arrowloader import IntegrationError, LengthGroupedBatchSampler, TokenDataset
from arrowloader.integrations.transformers import ArrowLoaderTrainer, from_json, to_json
from conftest import write_tokens
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
)

VOCAB = 50
DOCS = 48
BATCH = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[int]], list[int]]:
    rng = np.random.default_rng(8)
    documents = [[int(t) for t in rng.integers(1, VOCAB, size=int(rng.integers(2, 17)))]
                 for _ in range(DOCS)]
    labels = [int(x) for x in rng.integers(0, 2, size=DOCS)]
    path = write_tokens(tmp_path_factory.mktemp("trainer") / "docs.arrow", documents,
                        labels=labels)
    return path, documents, labels


def model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=2, pad_token_id=0,
    )
    return BertForSequenceClassification(config)


def arguments(out: Path, **options: Any) -> TrainingArguments:
    defaults: dict[str, Any] = dict(
        output_dir=str(out), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        max_steps=8, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, seed=5, disable_tqdm=True, dataloader_num_workers=0,
    )
    defaults.update(options)
    return TrainingArguments(**defaults)


def losses(trainer: Trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


class OrderedTrainer(Trainer):
    """The stock Trainer, told the order of examples to take."""

    order: ClassVar[list[int]] = []

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        return list(self.order)


def stock_trainer(tmp: Path, corpus: Any, order: list[int], **options: Any) -> Trainer:
    """The stock Trainer over the same documents, trained in ``order``."""
    _, documents, labels = corpus
    vocab = {"[PAD]": 0} | {f"t{i}": i for i in range(1, VOCAB)}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab)),
                                        pad_token="[PAD]")
    examples = [{"input_ids": documents[i], "label": labels[i]} for i in range(DOCS)]
    OrderedTrainer.order = order
    trainer = OrderedTrainer(
        model=model(), args=arguments(tmp / "stock", **options), train_dataset=examples,
        eval_dataset=examples, data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.train()
    return trainer


def stock_losses(tmp: Path, corpus: Any, order: list[int], **options: Any) -> list[float]:
    return losses(stock_trainer(tmp, corpus, order, **options))


def epoch_order(seed: int, epochs: int) -> list[int]:
    """DistributedSampler's order over one process, epoch after epoch."""
    sampler = torch.utils.data.DistributedSampler(range(DOCS), num_replicas=1, rank=0, seed=seed)
    order: ClassVar[list[int]] = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order += list(sampler)
    return order


def test_losses_equal_the_stock_trainers_over_the_same_order(tmp_path: Path, corpus: Any) -> None:
    ds = TokenDataset(corpus[0], label_column="label")
    # 16 steps of 4 cross an epoch boundary (12 steps per epoch).
    trainer = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path / "al", max_steps=16),
                                 train_dataset=ds, eval_dataset=ds)
    trainer.train()
    ours = losses(trainer)
    assert len(ours) == 16
    assert trainer.get_train_dataloader().native
    stock = stock_trainer(tmp_path, corpus, epoch_order(5, 2), max_steps=16)
    np.testing.assert_allclose(ours, losses(stock), rtol=1e-5)
    # Evaluation takes arrowloader's loader too, in order, and agrees with the stock one.
    assert trainer.get_eval_dataloader().native
    np.testing.assert_allclose(trainer.evaluate()["eval_loss"], stock.evaluate()["eval_loss"],
                               rtol=1e-5)


def test_group_by_length_plays_the_length_grouped_plan(tmp_path: Path, corpus: Any) -> None:
    ds = TokenDataset(corpus[0], label_column="label")
    strategy = {"train_sampling_strategy": "group_by_length"}
    if not hasattr(TrainingArguments, "train_sampling_strategy"):
        strategy = {"group_by_length": True}
    trainer = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path / "al", **strategy),
                                 train_dataset=ds)
    trainer.train()
    plan = LengthGroupedBatchSampler(ds, BATCH, shuffle=True, seed=5)
    batches = [batch for batch in plan][:8]
    assert len({len(ds[i]["input_ids"]) for i in batches[0]}) <= 3  # grouped by length
    order = [i for batch in batches for i in batch]
    np.testing.assert_allclose(losses(trainer), stock_losses(tmp_path, corpus, order), rtol=1e-5)


def test_resume_from_checkpoint_continues_exactly(tmp_path: Path, corpus: Any) -> None:
    ds = TokenDataset(corpus[0], label_column="label")
    options = dict(max_steps=8, save_strategy="steps", save_steps=5, gradient_accumulation_steps=1,
                   dataloader_drop_last=True)
    whole = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path / "a", **options),
                               train_dataset=ds)
    whole.train()
    assert (tmp_path / "a" / "checkpoint-5" / "arrowloader_state_0.json").is_file()

    resumed = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path / "a", **options),
                                 train_dataset=ds)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-5"))
    np.testing.assert_allclose(losses(resumed)[-3:], losses(whole)[-3:], rtol=1e-5)


def test_a_dataset_that_is_not_arrowloaders_is_refused(tmp_path: Path) -> None:
    trainer = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path),
                                 train_dataset=[{"input_ids": [1, 2], "label": 0}])
    with pytest.raises(IntegrationError, match=r"use transformers\.Trainer for other datasets"):
        trainer.get_train_dataloader()


def test_resuming_mid_epoch_without_a_loader_state_is_refused(tmp_path: Path, corpus: Any) -> None:
    ds = TokenDataset(corpus[0], label_column="label")
    trainer = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path), train_dataset=ds)
    with pytest.raises(IntegrationError, match="ignore_data_skip=True"):
        trainer.get_resumed_dataloader(trainer.get_train_dataloader(), 3)


def test_resuming_on_a_transformers_without_the_resume_hook_is_refused(
    tmp_path: Path, corpus: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = TokenDataset(corpus[0], label_column="label")
    trainer = ArrowLoaderTrainer(model=model(), args=arguments(tmp_path), train_dataset=ds)
    monkeypatch.delattr(Trainer, "get_resumed_dataloader")
    with pytest.raises(IntegrationError, match="upgrade transformers"):
        trainer.train(resume_from_checkpoint=str(tmp_path))


def test_a_state_with_tensors_round_trips_through_json() -> None:
    state = {"generator_states": [torch.Generator().manual_seed(3).get_state()],
             "fingerprint": {"files": ["a.arrow"], "dtype": "torch.int64"}, "samples": 4}
    back = from_json(json.loads(json.dumps(to_json(state))))
    assert torch.equal(back["generator_states"][0], state["generator_states"][0])
    assert back["generator_states"][0].dtype == torch.uint8
    assert {k: v for k, v in back.items() if k != "generator_states"} == {
        k: v for k, v in state.items() if k != "generator_states"}
    with pytest.raises(IntegrationError, match="no torch dtype 'nope'"):
        from_json({"tensor": [1], "dtype": "nope"})
