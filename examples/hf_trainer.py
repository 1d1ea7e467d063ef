"""Fine-tune a tiny BERT classifier with the Hugging Face Trainer on arrowloader's native
batches (ArrowLoaderTrainer), checkpoint, and resume from the checkpoint exactly.

    python examples/hf_trainer.py                      # 12 steps, then again from step 8
    python examples/hf_trainer.py --group-by-length    # length-grouped batches

The model is built from a BertConfig (2 layers, hidden size 32): nothing is downloaded.
arrowloader.integrations.transformers.ArrowLoaderTrainer is the stock Trainer with
arrowloader's loaders: per_device_train_batch_size, dataloader_drop_last, the seed,
group_by_length and the world size keep their meaning, and each checkpoint folder also
holds the loader's state, so resume_from_checkpoint continues at exactly the next batch
without reading the batches already trained on. After training, the example trains again
from its step-8 checkpoint and prints both runs' losses: they agree after the checkpoint.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any, Optional

import arrowloader
from arrowloader.synthetic import make_corpus


def train(args: argparse.Namespace, ds: Any, out: Path, resume: Optional[str]) -> list[tuple]:
    """Trains a fresh tiny BERT (from a config) on ``ds``: the (step, loss) logged."""
    import torch
    from arrowloader.integrations.transformers import ArrowLoaderTrainer
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=args.vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=args.max_length, num_labels=2,
    ))
    strategy = {"group_by_length": True} if args.group_by_length else {}
    if strategy and hasattr(TrainingArguments, "train_sampling_strategy"):
        strategy = {"train_sampling_strategy": "group_by_length"}
    training = TrainingArguments(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=1e-3, logging_steps=2, save_strategy="steps", save_steps=args.save_steps,
        report_to=[], use_cpu=True, disable_tqdm=True, **strategy,
    )
    trainer = ArrowLoaderTrainer(model=model, args=training, train_dataset=ds)
    trainer.train(resume_from_checkpoint=resume)
    assert trainer.get_train_dataloader().native
    return [(e["step"], e["loss"]) for e in trainer.state.log_history if "loss" in e]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="a labelled corpus (default: synthetic)")
    parser.add_argument("--docs", type=int, default=400, help="synthetic corpus documents")
    parser.add_argument("--output-dir", type=Path, help="checkpoints (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--save-steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--group-by-length", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.data or make_corpus(Path(folder) / "docs.arrow", num_docs=args.docs,
                                        vocab_size=args.vocab)
        ds = arrowloader.TokenDataset(path, label_column="label", max_length=args.max_length,
                                      vocab_size=args.vocab)
        out = args.output_dir or Path(folder) / "out"
        whole = train(args, ds, out, None)
        for step, loss in whole:
            print(f"step {step:5d}  loss {loss:.4f}")
        checkpoint = out / f"checkpoint-{args.save_steps}"
        resumed = [(s, loss) for s, loss in train(args, ds, out, str(checkpoint))
                   if s > args.save_steps]
        for step, loss in resumed:
            print(f"resumed from {checkpoint.name}: step {step:5d}  loss {loss:.4f}")
        after = [(s, loss) for s, loss in whole if s > args.save_steps]
        print(f"native path: True; losses after the checkpoint agree: {resumed == after}")

if __name__ == "__main__":
    main()
