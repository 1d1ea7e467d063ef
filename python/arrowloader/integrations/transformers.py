"""The Hugging Face ``Trainer`` fed by :class:`arrowloader.DataLoader`.

The stock ``Trainer`` builds its loaders itself (a ``torch.utils.data.DataLoader`` over
``train_dataset`` with its own sampler and collator, then ``accelerator.prepare``), so an
arrowloader dataset given to it would be collated in Python. :class:`ArrowLoaderTrainer`
overrides the loaders and nothing else of the training loop:

- ``get_train_dataloader``: an arrowloader DataLoader over ``train_dataset`` (a
  :class:`arrowloader.TokenDataset`, whose batches are what the model takes), prepared
  with :func:`arrowloader.integrations.accelerate.prepare` (native path, batches on the
  Trainer's device). ``per_device_train_batch_size``, ``dataloader_drop_last``,
  ``dataloader_num_workers`` (native threads), ``dataloader_pin_memory`` and
  ``data_seed`` (else ``seed``) keep their meaning. The order of every epoch is a
  function of the seed and the epoch alone, so that a resumed run plays the same epochs:
  ``DistributedSampler``'s order over the Trainer's world size (with one process too), or
  with ``group_by_length`` (``train_sampling_strategy="group_by_length"`` in newer
  releases) an :class:`arrowloader.LengthGroupedBatchSampler`'s batches.
- ``get_eval_dataloader``: the same over ``eval_dataset``, in order, with
  ``per_device_eval_batch_size``.
- checkpoints: every checkpoint folder also holds each process's loader state
  (``arrowloader_state_<process>.json``), and ``train(resume_from_checkpoint=...)`` resumes
  the loader from it in O(1), at exactly the batch after the checkpoint, instead of
  reading and dropping the batches already trained on.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

import torch
from transformers import Trainer
from transformers.trainer_utils import get_last_checkpoint

from arrowloader.batch_plans import LengthGroupedBatchSampler
from arrowloader.errors import IntegrationError
from arrowloader.integrations.accelerate import AcceleratedLoader, prepare
from arrowloader.loader import DataLoader

#: The file of a process's loader state in a checkpoint folder: JSON (tensors, the
#: generators' states, as lists of their values), never a pickle.
STATE_FILE = "arrowloader_state_{process}.json"


class ArrowLoaderTrainer(Trainer):
    """A ``transformers.Trainer`` whose loaders are arrowloader's (see the module
    docstring). ``train_dataset`` and ``eval_dataset`` are arrowloader datasets on the
    native path (a :class:`arrowloader.TokenDataset`; batches: ``input_ids`` /
    ``attention_mask`` ``[B, L]`` and ``labels``); ``data_collator`` is not used.

    Raises:
        IntegrationError: a dataset that is not arrowloader's, a loader off the native
            path, a checkpoint to resume from mid-epoch that holds no loader state, or
            resuming with a transformers release older than ``get_resumed_dataloader``.
    """

    _arrowloader_train: Optional[AcceleratedLoader] = None
    _arrowloader_resume: Optional[str] = None

    def get_train_dataloader(self) -> Any:
        if self.train_dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = self.args
        dataset = self.train_dataset
        seed = args.data_seed if args.data_seed is not None else args.seed
        world_size, rank = args.world_size, args.process_index
        options: dict[str, Any] = {"batch_size": self._train_batch_size}
        if _groups_by_length(args):
            options["batch_sampler"] = LengthGroupedBatchSampler(
                dataset, self._train_batch_size, shuffle=True, drop_last=args.dataloader_drop_last,
                seed=seed, rank=rank, world_size=world_size,
            )
            options["batch_size"] = 1  # torch's rule with a batch_sampler
        else:
            options["sampler"] = torch.utils.data.DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                drop_last=args.dataloader_drop_last,
            )
            options["drop_last"] = args.dataloader_drop_last
        self._arrowloader_train = self._prepared(dataset, options, "train_dataset")
        return self._arrowloader_train

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        if eval_dataset is None and self.eval_dataset is None:
            raise ValueError("Trainer: evaluation requires an eval_dataset.")
        if isinstance(eval_dataset, str):
            dataset = self.eval_dataset[eval_dataset]
        else:
            dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        options = {
            "batch_size": self.args.eval_batch_size,
            "shuffle": False,
            "drop_last": self.args.dataloader_drop_last,
        }
        return self._prepared(dataset, options, "eval_dataset")

    def _prepared(self, dataset: Any, options: dict[str, Any], what: str) -> AcceleratedLoader:
        args = self.args
        loader = DataLoader(
            dataset,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            prefetch_factor=args.dataloader_prefetch_factor,
            **options,
        )
        if not loader.native:
            raise IntegrationError(
                f"ArrowLoaderTrainer: {what} is a {type(dataset).__name__}, which an "
                "arrowloader.DataLoader cannot take on the native path; pass an arrowloader "
                "dataset (TokenDataset), or use transformers.Trainer for other datasets"
            )
        # The Trainer checkpoints the train loader itself (_save_rng_state), and makes an
        # eval loader per evaluation: neither is registered with the accelerator.
        return prepare(self.accelerator, loader, register=False)

    def train(self, resume_from_checkpoint: Any = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; a checkpoint resumed from also resumes the loader (see the
        module docstring)."""
        checkpoint = resume_from_checkpoint
        if checkpoint and not hasattr(Trainer, "get_resumed_dataloader"):
            import transformers

            raise IntegrationError(
                f"ArrowLoaderTrainer resumes its loader through Trainer.get_resumed_dataloader, "
                f"which transformers {transformers.__version__} does not have: upgrade "
                "transformers to resume from a checkpoint"
            )
        if isinstance(checkpoint, bool):
            checkpoint = get_last_checkpoint(self.args.output_dir) if checkpoint else None
        self._arrowloader_resume = checkpoint
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def get_resumed_dataloader(self, dataloader: Any, num_batches: int) -> Any:
        """The train loader, resumed from the checkpoint's loader state: its next batch is
        the one after the ``num_batches`` already trained on in this epoch.

        Raises:
            IntegrationError: the checkpoint holds no loader state of this process (it was
                written by another Trainer), or one at another batch.
        """
        checkpoint = self._arrowloader_resume
        path = os.path.join(checkpoint or "", STATE_FILE.format(process=self.args.process_index))
        if checkpoint is None or not os.path.isfile(path):
            raise IntegrationError(
                f"ArrowLoaderTrainer: resuming mid-epoch ({num_batches} batches in) needs the "
                f"loader state {path}, which is not there (a checkpoint of another Trainer?). "
                "Resume from a checkpoint this Trainer wrote, or pass ignore_data_skip=True "
                "to start the epoch over."
            )
        with open(path) as file:
            state = from_json(json.load(file))
        saved = state.get("trainer_batches")
        if saved != num_batches:
            raise IntegrationError(
                f"ArrowLoaderTrainer: the loader state {path} was taken {saved} batches into "
                f"its epoch, but the Trainer resumes {num_batches} batches in; the checkpoint "
                "folder mixes files of two runs"
            )
        dataloader.load_state_dict(state["loader"])
        return dataloader

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        loader = self._arrowloader_train
        if loader is None:
            return
        # The Trainer's count: an epoch's last update step may take fewer batches.
        steps_per_epoch = max(1, -(-len(loader) // self.args.gradient_accumulation_steps))
        batches = (self.state.global_step % steps_per_epoch) * self.args.gradient_accumulation_steps
        state = {"loader": loader.state_dict(), "trainer_batches": batches}
        os.makedirs(output_dir, exist_ok=True)
        name = STATE_FILE.format(process=self.args.process_index)
        with open(os.path.join(output_dir, name), "w") as file:
            json.dump(to_json(state), file)


def to_json(value: Any) -> Any:
    """A loader state (nested dicts and lists of ints, strings, bools, None and tensors) as
    JSON values: a tensor becomes ``{"tensor": values, "dtype": name}``."""
    if isinstance(value, torch.Tensor):
        return {"tensor": value.tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return value


def from_json(value: Any) -> Any:
    """The state :func:`to_json` wrote.

    Raises:
        IntegrationError: a tensor of a dtype torch does not have.
    """
    if isinstance(value, dict):
        if set(value) == {"tensor", "dtype"}:
            dtype = getattr(torch, str(value["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise IntegrationError(f"loader state: no torch dtype {value['dtype']!r}")
            return torch.tensor(value["tensor"], dtype=dtype)
        return {key: from_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_json(item) for item in value]
    return value


def _groups_by_length(args: Any) -> bool:
    """Whether the TrainingArguments ask for length-grouped batches (``group_by_length``,
    or ``train_sampling_strategy="group_by_length"`` where that replaced it)."""
    return bool(getattr(args, "group_by_length", False)) or (
        getattr(args, "train_sampling_strategy", None) == "group_by_length"
    )
