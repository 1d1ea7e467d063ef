"""Accelerate: an :class:`arrowloader.DataLoader` prepared for an ``accelerate.Accelerator``
without losing the native path.

``accelerator.prepare(loader)`` rebuilds every ``torch.utils.data.DataLoader`` it is given
as accelerate's own (a ``DataLoaderShard`` over the loader's dataset, with a batch sampler
of its own that hands each process every n-th batch): the batches are then collated by
torch's loop in Python, and arrowloader's native threads never run. Accelerate offers no
hook to keep a loader as it is, so :func:`prepare` does what ``accelerator.prepare`` would,
the arrowloader way:

- the split between processes is the dataset's own (a TokenDataset or PackedDataset built
  without ``rank`` / ``world_size`` takes them from ``torch.distributed``, which the
  Accelerator initialised); :func:`prepare` checks that they are the accelerator's
  ``process_index`` and ``num_processes``;
- batches arrive on ``accelerator.device``: through an :class:`arrowloader.CUDAPrefetcher`
  (pinned outputs, copies on a side stream) on a CUDA device, unchanged on the CPU;
- the result is registered with ``accelerator.register_for_checkpointing``, so
  ``accelerator.save_state`` / ``load_state`` save it and resume it at exactly the next
  batch the training loop would have seen;
- it takes part in accelerate's gradient accumulation (``accelerator.accumulate`` syncs
  on the last batch of an epoch) as a prepared loader does.

Handing an arrowloader loader on the native path straight to ``accelerator.prepare``
still works (accelerate's loader, torch's path), but warns once, naming :func:`prepare`
(see ``DataLoader._is_accelerate_prepared``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Optional

import torch
from accelerate.data_loader import DataLoaderStateMixin
from accelerate.state import GradientState

from arrowloader.errors import IntegrationError


class AcceleratedLoader(DataLoaderStateMixin):
    """An :class:`arrowloader.DataLoader` as a prepared loader of an Accelerator (made by
    :func:`prepare`): yields the loader's batches (dicts of tensors, shapes as the loader
    makes them) on :attr:`device`, and forwards ``len()``, ``state_dict()``,
    ``load_state_dict()`` and ``set_epoch()``.

    It is not a ``torch.utils.data.DataLoader``, so ``accelerator.prepare`` (which the HF
    ``Trainer`` calls on its loaders) passes it through unchanged.

    ``state_dict()`` is the state at the last batch handed to the training loop (never at
    a batch fetched ahead); each process's state is that of its own share, and the
    position it records is the same on every process, so the one ``save_state`` writes
    (the main process's) resumes every process.

    ``remainder`` stays -1: the ranks' shares interleave the epoch's order (as
    ``DistributedSampler`` does), so ``accelerator.gather_for_metrics`` cannot tell the
    samples repeated to even out the last step by position; run with ``drop_last=True``
    or drop them by their labels.
    """

    def __init__(self, loader: Any, device: torch.device) -> None:
        self.loader = loader
        self.device = device
        self.gradient_state = GradientState()
        #: What the training loop iterates: the loader itself, or a prefetcher over it.
        self.source: Any = loader
        if device.type == "cuda":
            self.source = loader.to(device)
        self._drop_last = bool(loader.drop_last)

    @property
    def dataset(self) -> Any:
        """The loader's dataset."""
        return self.loader.dataset

    @property
    def batch_size(self) -> Optional[int]:
        """The loader's per-process batch size (None with a batch sampler)."""
        return self.loader.batch_size

    @property
    def total_batch_size(self) -> Optional[int]:
        """Rows of one step over every process (None with a batch sampler)."""
        if self.loader.batch_size is None:
            return None
        return self.loader.batch_size * _world_size(self.loader.dataset)

    @property
    def native(self) -> bool:
        """Whether the loader takes the native path (always, once prepared)."""
        return bool(self.loader.native)

    def __len__(self) -> int:
        return len(self.loader)

    def begin(self) -> None:
        """Registers this loader with accelerate's gradient state for the pass."""
        self.reset()
        self.gradient_state._add_dataloader(self)

    def __iter__(self) -> Iterator[Any]:
        self.begin()
        try:
            batches = iter(self.source)
            # This pass's batches (fewer than an epoch's after load_state_dict): the last
            # one ends the dataloader for accelerate's gradient accumulation.
            total = len(batches)
            for index, batch in enumerate(batches):
                if index + 1 >= total:
                    self.end_of_dataloader = True
                yield _on_device(batch, self.device)
        finally:
            self.end()

    def state_dict(self) -> dict[str, Any]:
        """The loader's state at the last batch handed to the training loop (see
        :meth:`arrowloader.DataLoader.state_dict`)."""
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues the next pass from ``state`` (see
        :meth:`arrowloader.DataLoader.load_state_dict`)."""
        self.source.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Pins the epoch the next passes play: ``set_epoch`` of the dataset and samplers."""
        _set_epoch(self.loader, epoch)


def prepare(
    accelerator: Any,
    loader: Any,
    *,
    device_placement: Optional[bool] = None,
    register: bool = True,
) -> AcceleratedLoader:
    """``accelerator.prepare(loader)`` for an :class:`arrowloader.DataLoader`, keeping its
    native path (see the module docstring).

    Args:
        accelerator: an ``accelerate.Accelerator``.
        loader: an arrowloader DataLoader on the native path.
        device_placement: put batches on ``accelerator.device`` (default: the
            accelerator's ``device_placement``); False leaves them on the CPU.
        register: register the result for ``save_state`` / ``load_state`` (False for a
            loader saved some other way, or made anew for every evaluation: a registered
            loader stays registered for the accelerator's life).

    Returns:
        An :class:`AcceleratedLoader`.

    Raises:
        IntegrationError: the loader is not on the native path (then
            ``accelerator.prepare`` loses nothing: use it), or its dataset's rank or world
            size is not the accelerator's process index or count.
    """
    if not getattr(loader, "native", False):
        raise IntegrationError(
            f"arrowloader.integrations.accelerate.prepare() takes an arrowloader.DataLoader "
            f"on the native path; this {type(loader).__name__} is not on it (a dataset that "
            "is not arrowloader's, or a custom collate_fn), so accelerator.prepare(loader) "
            "loses nothing: use it"
        )
    dataset = loader.dataset
    rank, world_size = _rank(dataset), _world_size(dataset)
    if (rank, world_size) != (accelerator.process_index, accelerator.num_processes):
        raise IntegrationError(
            f"the loader's dataset takes share {rank} of {world_size}, but this process is "
            f"{accelerator.process_index} of {accelerator.num_processes} of the "
            "Accelerator: build the dataset without rank and world_size (they come from "
            "torch.distributed, which the Accelerator initialised) or pass "
            "rank=accelerator.process_index, world_size=accelerator.num_processes"
        )
    if device_placement is None:
        device_placement = bool(getattr(accelerator, "device_placement", True))
    device = torch.device(accelerator.device) if device_placement else torch.device("cpu")
    prepared = AcceleratedLoader(loader, device)
    if register:
        accelerator.register_for_checkpointing(prepared)
    return prepared


def _rank(dataset: Any) -> int:
    return int(getattr(dataset, "rank", 0))


def _world_size(dataset: Any) -> int:
    return int(getattr(dataset, "world_size", 1))


def _set_epoch(loader: Any, epoch: int) -> None:
    """``set_epoch`` on each of the loader's dataset, sampler and batch sampler that has
    one (a TokenDataset pins its rank split, a DistributedSampler or planned batch sampler
    its own order)."""
    targets = [
        target
        for target in (loader.dataset, loader.sampler, loader.batch_sampler)
        if callable(getattr(target, "set_epoch", None))
    ]
    if not targets:
        raise IntegrationError(
            f"set_epoch(): neither the loader's {type(loader.dataset).__name__} nor its "
            "samplers have set_epoch(); the loader counts its own epochs"
        )
    for target in targets:
        target.set_epoch(epoch)


def _on_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with its tensors on ``device`` (a CUDA batch came through the prefetcher
    and is there already; a CPU batch stays as it is)."""
    if device.type in ("cpu", "cuda"):
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return type(batch)({key: _on_device(value, device) for key, value in batch.items()})
    return batch
