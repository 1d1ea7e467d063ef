"""MixedDataset: packed datasets interleaved by weight, deterministically."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from arrowloader import _C
from arrowloader.dataset import Batch, Item
from arrowloader.packed import PackedDataset, native_packed_shuffle, resolve_distributed

#: Bound on |realised - expected| samples of any dataset over any window of mixed samples.
WINDOW_ERROR_SAMPLES = 2


class MixedDataset(Dataset):
    """Rows of several :class:`PackedDataset` interleaved in proportion to ``weights``.

    Mixed sample ``j`` comes from the dataset with the largest deficit
    ``weight * (j + 1) - taken`` (ties: the first named), as Megatron's blending does, so
    after any prefix of ``j`` samples every dataset has given within one sample of
    ``weight * j``, and over any window of ``N`` consecutive samples within
    :data:`WINDOW_ERROR_SAMPLES` of ``weight * N``. The ``k``-th sample a dataset gives is
    the next block of its own shuffled epochs: a dataset that runs out moves on to its next
    epoch while the others continue (see :meth:`epochs_consumed`).

    ``len()`` is one pass over every dataset's current epoch; the native DataLoader
    carries on from where the previous pass stopped, splits every global batch between
    ranks like :class:`PackedDataset`, and resumes from ``state_dict()`` in time that does
    not grow with the data skipped (the blending position is recomputed from the sample
    count alone).

    Args:
        datasets: name -> PackedDataset; all share ``seq_len``, ``dtype`` and the
            ``return_position_ids`` / ``return_cu_seqlens`` settings.
        weights: name -> positive weight (normalised to sum to 1).
        seed: shuffling seed of every dataset's documents and blocks (a DataLoader
            ``generator`` overrides it with its ``initial_seed()``); dataset ``d`` uses
            ``seed * len(datasets) + d``.
        rank, world_size: as for PackedDataset.
    """

    def __init__(
        self,
        datasets: Mapping[str, PackedDataset],
        weights: Mapping[str, float],
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        if not datasets:
            raise ValueError("MixedDataset needs at least one dataset")
        if set(weights) != set(datasets):
            raise ValueError(
                f"weights name {sorted(weights)} but the datasets are {sorted(datasets)}"
            )
        for name, weight in weights.items():
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight > 0):
                raise ValueError(f"weight of {name!r} must be a positive number, got {weight!r}")
        self.names = list(datasets)
        self.datasets = [datasets[name] for name in self.names]
        for name, dataset in zip(self.names, self.datasets):
            if not isinstance(dataset, PackedDataset):
                raise TypeError(f"dataset {name!r} must be a PackedDataset")
        first = self.datasets[0]
        for name, dataset in zip(self.names, self.datasets):
            for attribute in ("seq_len", "dtype", "return_position_ids", "return_cu_seqlens"):
                if getattr(dataset, attribute) != getattr(first, attribute):
                    raise ValueError(
                        f"dataset {name!r} has {attribute}={getattr(dataset, attribute)!r}, "
                        f"dataset {self.names[0]!r} {getattr(first, attribute)!r}; mixed "
                        "datasets must agree"
                    )
        total = float(sum(weights[name] for name in self.names))
        self.weights = np.array([weights[name] / total for name in self.names], dtype=np.float64)
        self.seed = seed
        self.seq_len = first.seq_len
        self._rank, self._world_size = rank, world_size
        resolve_distributed(rank, world_size)  # validates them
        # Blocks per epoch of each (dataset, seed), filled in as epochs are reached.
        self._epoch_sizes: dict[tuple[int, int], list[int]] = {}

    @property
    def rank(self) -> int:
        return resolve_distributed(self._rank, self._world_size)[0]

    @property
    def world_size(self) -> int:
        return resolve_distributed(self._rank, self._world_size)[1]

    def source_seed(self, d: int, seed: Optional[int] = None) -> int:
        """Shuffling seed of dataset ``d``."""
        return (self.seed if seed is None else seed) * len(self.datasets) + d

    def __len__(self) -> int:
        """Mixed samples in one pass: the blocks of every dataset's current epoch."""
        return sum(len(dataset) for dataset in self.datasets)

    def sources(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Mixed samples ``[start, start + count)``: (dataset index int64 [count], index of
        the sample within that dataset's stream int64 [count])."""
        return _C.blend(self.weights, start, count)

    def locate(self, d: int, k: int, seed: Optional[int] = None) -> tuple[int, int]:
        """(epoch, block) of the ``k``-th sample dataset ``d`` gives: its epochs follow one
        another, each in its own shuffled block order."""
        dataset = self.datasets[d]
        source_seed = self.source_seed(d, seed)
        sizes = self._epoch_sizes.setdefault((d, source_seed), [])
        epoch = 0
        while True:
            if epoch == len(sizes):
                sizes.append(dataset.plan(epoch, source_seed).num_blocks)
            if sizes[epoch] == 0:
                raise ValueError(f"dataset {self.names[d]!r} packs into no blocks")
            if k < sizes[epoch]:
                order = dataset.block_order(epoch, source_seed, sizes[epoch])
                return epoch, int(order[k])
            k -= sizes[epoch]
            epoch += 1

    def epochs_consumed(self, samples: int) -> dict[str, float]:
        """How many epochs of each dataset the first ``samples`` mixed samples used."""
        counts = _C.blend_counts(self.weights, samples)
        consumed = {}
        for d, name in enumerate(self.names):
            k, epochs = int(counts[d]), 0.0
            epoch = 0
            while k > 0:
                size = self.datasets[d].plan(epoch, self.source_seed(d)).num_blocks
                epochs += min(1.0, k / size)
                k -= size
                epoch += 1
            consumed[name] = epochs
        return consumed

    def __getitem__(self, index: int) -> Item:
        """Mixed sample ``index``: a block of one of the datasets, as its ``ds[i]`` gives."""
        (d,), (k,) = self.sources(index, 1)
        epoch, block = self.locate(int(d), int(k))
        dataset = self.datasets[int(d)]
        batch = dataset.assemble([block], epoch=epoch, seed=self.source_seed(int(d)))
        keys = ("input_ids", "labels", "position_ids")
        return {key: batch[key][0] for key in keys if key in batch}

    def collate(self, items: list[Item]) -> Batch:
        """As :meth:`PackedDataset.collate`."""
        return self.datasets[0].collate(items)

    def fingerprint(self) -> dict[str, Any]:
        return {
            "datasets": {name: ds.fingerprint() for name, ds in zip(self.names, self.datasets)},
            "weights": self.weights.tolist(),
        }

    def _native_epoch(self, loader: Any, pin: bool, first_iterator: bool) -> MixedEpoch:
        return MixedEpoch(self, loader, pin)


class MixedEpoch:
    """One pass of a DataLoader over a MixedDataset, continuing the mixed sample stream
    from the loader's position."""

    def __init__(self, dataset: MixedDataset, loader: Any, pin: bool) -> None:
        if native_packed_shuffle(loader) is False:
            raise ValueError("MixedDataset always shuffles; use shuffle=True")
        self._dataset = dataset
        self._pin = pin
        self._batch_size = loader.batch_size
        self._rank, world_size = dataset.rank, dataset.world_size
        self._global = self._batch_size * world_size
        generator = loader.generator
        self.seed = dataset.seed if generator is None else generator.initial_seed()
        self.epoch = 0  # passes are not epochs of the datasets; kept for the loader's record
        resume = loader._take_resume()
        self.samples_consumed = 0 if resume is None else resume["samples_consumed"]
        self._next = self.samples_consumed
        self._end = self._next + len(dataset) // self._global * self._global
        self._loader_progress = loader._progress
        self._loader_progress({"epoch": 0, "samples_consumed": self.samples_consumed})

    def __len__(self) -> int:
        return (self._end - self.samples_consumed) // self._global

    def exhausted(self) -> None:
        """A pass ends; the next one continues the same stream of mixed samples."""

    def submit(self, pool: Any) -> Optional[tuple]:
        if self._next >= self._end:
            return None
        dataset = self._dataset
        begin = self._next + self._rank * self._batch_size
        sources, indices = dataset.sources(begin, self._batch_size)
        self._next += self._global
        plans: dict[tuple[int, int], int] = {}
        assemblers, plan_list = [], []
        plan_of_row = np.empty(self._batch_size, dtype=np.int64)
        blocks = np.empty(self._batch_size, dtype=np.int64)
        for row, (d, k) in enumerate(zip(sources.tolist(), indices.tolist())):
            epoch, block = dataset.locate(d, k, self.seed)
            key = (d, epoch)
            if key not in plans:
                plans[key] = len(plan_list)
                source = dataset.datasets[d]
                assemblers.append(source._assembler)
                plan_list.append(source.plan(epoch, dataset.source_seed(d, self.seed)))
            plan_of_row[row] = plans[key]
            blocks[row] = block
        first = dataset.datasets[0]
        batch, outputs = first._allocate(self._batch_size, self._pin)
        ticket = _C.submit_mixed(pool, assemblers, plan_list, plan_of_row, blocks, *outputs)
        return ticket, batch, self._finish

    def _finish(self, batch: Batch, values: tuple[int, int]) -> Batch:
        self.samples_consumed += self._global
        self._loader_progress({"epoch": 0, "samples_consumed": self.samples_consumed})
        return self._dataset.datasets[0]._finish(batch, values)

