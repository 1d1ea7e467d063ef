"""MixedDataset: packed datasets interleaved by weight, deterministically."""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from arrowloader import _C
from arrowloader.native import (
    Batch,
    BatchFigures,
    EpochStart,
    Item,
    LoaderSettings,
    NativeJob,
    Position,
    next_epoch,
    pass_epoch,
)
from arrowloader.packed import PackedDataset
from arrowloader.packed_epoch import check_packed_state, packed_state
from arrowloader.ranks import resolve_distributed
from arrowloader.wording import plural


def prefix_error_bounds(num_datasets: int) -> tuple[float, float]:
    """``(over, under)``: with ``D = num_datasets`` datasets, after any prefix of ``j`` mixed
    samples dataset ``d`` has given at most ``weight_d * j + over`` and at least
    ``weight_d * j - under`` samples, where ``over = 1 - 1/D`` and ``under = H_D - 1``
    (``H_D = 1 + 1/2 + ... + 1/D``): within one sample for up to 3 datasets, within
    ``H_D - 1`` (1.08 for 4, 1.28 for 5, about ``ln D - 0.42``) beyond.

    Why: the deficits ``e_d = weight_d * j - taken_d`` sum to 0; the dataset chosen has the
    largest ``e_d + weight_d`` (these sum to 1, so it is >= 1/D) and its ``e_d`` drops by
    one, hence ``e_d > -(1 - 1/D)``; and by induction over ``j`` the ``k`` largest deficits
    sum to at most ``k * (H_D - H_k)``, hence ``e_d <= H_D - 1``. Skewed weights come close
    to both (2 datasets reach 1/2 each way).
    """
    harmonic = sum(1.0 / k for k in range(1, num_datasets + 1))
    return 1.0 - 1.0 / num_datasets, harmonic - 1.0


def window_error_bound(num_datasets: int) -> float:
    """Bound on ``|realised - weight * N|`` samples of any dataset over any window of ``N``
    consecutive mixed samples, with ``num_datasets`` datasets: the two prefix bounds of
    :func:`prefix_error_bounds` added, ``H_D - 1/D``: 1 for 2 datasets, 1.5 for 3, 1.83 for
    4, 2.08 for 5, 2.28 for 6. Skewed weights come close: windows over 2 samples off
    occur with 5 datasets (weights about 0.823, 0.0037, 0.00012, 0.00002, 0.173)."""
    over, under = prefix_error_bounds(num_datasets)
    return over + under


class MixedDataset(Dataset):
    """Rows of several :class:`PackedDataset` interleaved in proportion to ``weights``.

    Mixed sample ``j`` comes from the dataset with the largest deficit
    ``weight * (j + 1) - taken`` (ties: the first named), as Megatron's blending does, so
    after any prefix of ``j`` samples every dataset has given within one sample of
    ``weight * j`` when there are at most 3 datasets (``H_D - 1`` with ``D`` of them, see
    :func:`prefix_error_bounds`), and over any window of ``N`` consecutive samples within
    :func:`window_error_bound` (1 sample for 2 datasets, 1.5 for 3, under 2 for 4) of
    ``weight * N``. The ``k``-th sample a dataset gives is the next block of its own
    shuffled epochs: a dataset that runs out moves on to its next epoch while the others
    continue (see :meth:`epochs_consumed`).

    ``len()`` is one pass over every dataset's current epoch. A native DataLoader's epoch
    ``e`` (its ``e``-th pass, counted by the loader: see :mod:`arrowloader.native`) is the
    mixed samples ``[e * P, (e + 1) * P)``, ``P`` being ``len(loader)`` global batches; a
    pass broken off part-way is carried on by the next one, and :meth:`set_epoch` pins
    the passes to one epoch. The loader splits every global batch between ranks like
    :class:`PackedDataset`, and resumes from ``state_dict()`` (also with another batch
    size: at the next sample) without packing or reading what it skips: the blending
    position is recomputed from the sample count alone (the rule's loop, about 10 ns per
    sample skipped), and each dataset's epoch from the state's ``source_epochs`` (concat
    epochs all have the same size).

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
            for attribute in (
                "seq_len", "dtype", "return_position_ids", "return_cu_seqlens", "shift_labels",
                "flash_attn_kwargs", "return_seq_idx",
            ):
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
        # Per (dataset, seed): concat mode, the blocks of every epoch (each packs the same
        # tokens); bestfit mode, (first epoch, [its first sample, the next epoch's, ...]) of
        # the epochs reached, from 0 or from a loaded state's "source_epochs".
        self._concat_sizes: dict[tuple[int, int], int] = {}
        self._starts: dict[tuple[int, int], tuple[int, list[int]]] = {}
        self._orders: dict[tuple[int, int], tuple[int, np.ndarray]] = {}  # latest epoch's
        #: The epoch (pass) set_epoch() pinned every loader to, or None.
        self._pinned_epoch: Optional[int] = None

    @property
    def rank(self) -> int:
        return resolve_distributed(self._rank, self._world_size)[0]

    @property
    def world_size(self) -> int:
        return resolve_distributed(self._rank, self._world_size)[1]

    def set_epoch(self, epoch: int) -> None:
        """Pins every DataLoader pass over the dataset to its epoch ``epoch`` (mixed
        samples ``[epoch * P, (epoch + 1) * P)``, see the class docstring), as
        ``DistributedSampler.set_epoch`` does; without it each loader counts its own."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._pinned_epoch = epoch

    def samples_per_pass(self, settings: LoaderSettings) -> int:
        """Mixed samples in one pass of a loader with ``settings``: ``P`` of the class
        docstring (whole global batches)."""
        global_batch = settings.batch_size * self.world_size
        return len(self) // global_batch * global_batch

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
        source_seed = self.source_seed(d, seed)
        epoch, start, size = self._epoch_at(d, k, source_seed)
        order = self._orders.get((d, source_seed))
        if order is None or order[0] != epoch:
            order = (epoch, self.datasets[d].block_order(epoch, source_seed, size))
            self._orders[(d, source_seed)] = order
        return epoch, int(order[1][k - start])

    def _epoch_size(self, d: int, epoch: int, source_seed: int) -> int:
        size = self.datasets[d].plan(epoch, source_seed).num_blocks
        if size == 0:
            raise ValueError(f"dataset {self.names[d]!r} packs into no blocks")
        return size

    def _epoch_at(self, d: int, k: int, source_seed: int) -> tuple[int, int, int]:
        """(epoch, its first sample, its blocks) of the epoch holding dataset ``d``'s
        ``k``-th sample, in time that does not grow with the epochs before it (concat mode,
        or bestfit from the loaded "source_epochs" on)."""
        key = (d, source_seed)
        if self.datasets[d].mode == "concat":  # every epoch packs as many tokens
            size = self._concat_sizes.get(key)
            if size is None:
                size = self._concat_sizes[key] = self._epoch_size(d, 0, source_seed)
            return k // size, k // size * size, size
        first, starts = self._starts.get(key, (0, [0]))
        if k < starts[0]:
            first, starts = 0, [0]
        while k >= starts[-1]:
            starts.append(starts[-1] + self._epoch_size(d, first + len(starts) - 1, source_seed))
        self._starts[key] = (first, starts)
        i = bisect.bisect_right(starts, k) - 1
        return first + i, starts[i], starts[i + 1] - starts[i]

    def source_epochs(self, taken: np.ndarray, seed: Optional[int] = None) -> dict[str, list]:
        """name -> [epoch, its first sample] of the epoch each dataset's next sample (the
        ``taken[d]``-th) is in: a loader state carries it so that resuming does not pack
        the epochs before it again."""
        epochs = {}
        for d, name in enumerate(self.names):
            epoch, start, _ = self._epoch_at(d, int(taken[d]), self.source_seed(d, seed))
            epochs[name] = [epoch, start]
        return epochs

    def check_source_epochs(self, epochs: Any) -> None:
        """Raises ValueError unless ``epochs`` looks like :meth:`source_epochs` output."""
        if not isinstance(epochs, dict) or set(epochs) != set(self.names):
            raise ValueError(
                f"loader state: 'source_epochs' must map {sorted(self.names)} to "
                f"[epoch, first sample], got {epochs!r}"
            )
        for name, value in epochs.items():
            if not (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
                and (value[0] > 0 or value[1] == 0)
            ):
                raise ValueError(
                    f"loader state: 'source_epochs' of {name!r} must be [epoch, first sample], "
                    f"non-negative ints, got {value!r}"
                )

    def _seed_source_epochs(self, epochs: Any, seed: int) -> None:
        """Starts the bestfit epoch tables at a loaded state's epochs, where they know less."""
        if epochs is None:
            return
        for d, name in enumerate(self.names):
            epoch, start = (int(v) for v in epochs[name])
            key = (d, self.source_seed(d, seed))
            first, starts = self._starts.get(key, (0, [0]))
            if first + len(starts) - 1 < epoch:
                self._starts[key] = (epoch, [start])

    def epochs_consumed(self, samples: int, seed: Optional[int] = None) -> dict[str, float]:
        """How many epochs of each dataset the first ``samples`` mixed samples used (with the
        shuffling ``seed``, default the dataset's: bestfit epochs differ in size)."""
        counts = _C.blend_counts(self.weights, samples)
        consumed = {}
        for d, name in enumerate(self.names):
            k = int(counts[d])
            epoch, start, size = self._epoch_at(d, k, self.source_seed(d, seed))
            consumed[name] = epoch + (k - start) / size
        return consumed

    def __getitem__(self, index: int) -> Item:
        """Mixed sample ``index``: a block of one of the datasets, as its ``ds[i]`` gives."""
        (d,), (k,) = self.sources(index, 1)
        epoch, block = self.locate(int(d), int(k))
        dataset = self.datasets[int(d)]
        # Not dataset.assemble(): like ds[i], the item keeps position_ids for collate().
        batch, outputs = dataset._allocate(1, pin=False)
        plan = dataset.plan(epoch, self.source_seed(int(d)))
        dataset._assembler.assemble(plan, np.array([block], dtype=np.int64), *outputs)
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

    def check_files(self) -> None:
        """Raises CorpusChangedError if a file of any dataset changed since its open."""
        for dataset in self.datasets:
            dataset.check_files()

    # The native-path contract (arrowloader.native.NativeDataset): as a PackedDataset's,
    # except that passes continue one stream of mixed samples and a position also holds
    # each dataset's epoch ("source_epochs").

    def native_supported(self, settings: LoaderSettings) -> bool:
        return settings.stock_shuffle() is not None

    def native_num_batches(self, settings: LoaderSettings) -> int:
        return len(self) // (settings.batch_size * self.world_size)

    def native_epoch(self, settings: LoaderSettings, start: EpochStart) -> MixedEpoch:
        return MixedEpoch(self, settings, start)

    def native_state(self, settings: LoaderSettings, position: Optional[Position]) -> dict:
        if position is None:
            epoch = next_epoch(self._pinned_epoch, None)
            position = {"epoch": epoch, "samples_consumed": epoch * self.samples_per_pass(settings)}
        return packed_state(self, settings, position)

    def native_load_state(self, settings: LoaderSettings, state: Any) -> Position:
        # One stream over all passes: no epoch bounds the samples consumed.
        position = check_packed_state(state, self, settings, lambda epoch, seed: math.inf)
        if "source_epochs" in state:
            self.check_source_epochs(state["source_epochs"])
            position["source_epochs"] = state["source_epochs"]
        return position

    def native_rewound(self, position: Optional[Position]) -> None:
        """Nothing to undo: the next pass continues from the loader's position."""


class MixedEpoch:
    """One pass of a DataLoader over a MixedDataset, continuing the mixed sample stream
    from the loader's position."""

    #: Batches per native job: one (a job's rows come from several datasets' plans).
    group = 1

    def __init__(
        self, dataset: MixedDataset, settings: LoaderSettings, start: EpochStart
    ) -> None:
        if settings.stock_shuffle() is False:
            raise ValueError("MixedDataset always shuffles; use shuffle=True")
        self._dataset = dataset
        self._pin = start.pin
        self._batch_size = settings.batch_size
        self._rank, world_size = dataset.rank, dataset.world_size
        self._global = self._batch_size * world_size
        self.seed = settings.seed(dataset.seed)
        # Passes are consecutive runs of len(loader) global batches of the one stream, so a
        # run resumed mid-pass ends that pass where the uninterrupted run would; pass e is
        # the loader's epoch e (positions saved before epochs were counted say 0 for all).
        per_pass = self._per_pass = dataset.samples_per_pass(settings)
        if per_pass == 0:
            largest = len(dataset) // world_size
            fix = (f"Use batch_size <= {largest}, a shorter seq_len or larger corpora."
                   if largest else "Use a shorter seq_len or larger corpora.")
            raise ValueError(
                f"MixedDataset: no pass of this DataLoader yields a batch: one pass is "
                f"{plural(len(dataset), 'block')} (every dataset's epoch), fewer than one "
                f"global batch of {self._global} (batch_size={self._batch_size} x "
                f"world_size={world_size}), so all are dropped. {fix}"
            )

        def counted(position: Optional[Position]) -> Optional[Position]:
            if position is None or "samples_consumed" not in position:
                return None
            return {**position, "epoch": position["samples_consumed"] // per_pass}

        start = EpochStart(start.pin, counted(start.resume), counted(start.previous))
        self.epoch, resume = pass_epoch(
            dataset._pinned_epoch, start,
            lambda position: position["samples_consumed"] % per_pass != 0,
        )
        # A loaded state, else where the previous pass of this loader stopped if it is
        # in this epoch (a pass broken off is carried on), else the epoch's start.
        position = resume
        if position is None and start.resume is None and start.previous is not None and (
            start.previous["epoch"] == self.epoch
        ):
            position = start.previous
        if position is None:
            position = {"samples_consumed": self.epoch * per_pass}
        dataset._seed_source_epochs(position.get("source_epochs"), self.seed)
        self.samples_consumed = position["samples_consumed"]
        self._next = self.samples_consumed
        self._end = (self.epoch + 1) * per_pass
        # Samples of each dataset among the first self._next mixed samples, so that each
        # batch costs O(batch), not O(samples before it); counted once after a load, then
        # handed from pass to pass.
        counts = None if resume is not None else position.get("counts")
        if counts is not None and int(np.sum(counts)) == self._next:
            self._taken = np.array(counts, dtype=np.int64)
        else:
            self._taken = _C.blend_counts(dataset.weights, self._next).astype(np.int64)
        self.position: Position = self._position_after(self.samples_consumed)

    def _position_after(self, samples: int) -> Position:
        """The loader's record after ``samples`` mixed samples (self._taken their counts;
        state_dict() leaves "counts" out)."""
        return {
            "epoch": samples // self._per_pass,
            "samples_consumed": samples,
            "source_epochs": self._dataset.source_epochs(self._taken, self.seed),
            "counts": self._taken.copy(),
        }

    def __len__(self) -> int:
        return (self._end - self.samples_consumed) // self._global

    def exhausted(self) -> None:
        """A pass ends; the next one continues the same stream of mixed samples."""

    def submit(self, pool: Any) -> Optional[NativeJob]:
        if self._next >= self._end:
            return None
        dataset = self._dataset
        global_sources, global_indices = _C.blend(
            dataset.weights, self._next, self._global, taken=self._taken
        )
        self._next += self._global
        after = self._position_after(self._next)
        mine = slice(self._rank * self._batch_size, (self._rank + 1) * self._batch_size)
        sources, indices = global_sources[mine], global_indices[mine]
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
        return NativeJob(ticket, [batch], context=after)

    def finish(self, job: NativeJob, index: int, figures: BatchFigures) -> Batch:
        self.samples_consumed += self._global
        self.position = job.context  # the position after this job's batch
        return self._dataset.datasets[0]._finish(job.batches[index], figures)
