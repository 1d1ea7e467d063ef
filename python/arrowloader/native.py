"""The native-path contract: what a dataset implements so that :class:`arrowloader.DataLoader`
assembles its batches on native threads, and the names every such dataset shares.

This module imports no dataset and no loader. The loader drives any dataset that
implements :class:`NativeDataset`; the datasets implement it without importing the loader.
A new batching policy or a new place a corpus lives is a new implementation of this
protocol, never a change to the loader.

How a pass goes::

    settings = LoaderSettings(...)                    # what the loader was built with
    dataset.native_supported(settings)                # does this configuration go native?
    epoch = dataset.native_epoch(settings, EpochStart(...))
    while (job := epoch.submit(pool)) is not None:    # queued on the native threads
        ...                                           # the loader keeps K batches in flight
        batch = epoch.finish(job, j, job.ticket.result(timeout, j))
        loader_position = epoch.position              # what state_dict() will save
    epoch.exhausted()                                 # every batch was delivered

A *position* is a small dict the dataset defines (never changed in place once handed
out): where a run is, enough for :meth:`NativeDataset.native_state` to write a state and
for the next :meth:`NativeDataset.native_epoch` to continue from. The loader only stores
it.

Epochs (every dataset kind, the one place this is written down): the epoch is a property
of a loader's iteration, never state of the dataset. Each loader counts its own: its
first pass plays epoch 0, and a pass that ends (every batch delivered) leaves the
loader's position at the next epoch, so two fresh loaders over one dataset, built with
the same arguments and generator seed, give the same batches, as torch's DataLoader
does. A pass broken off part-way leaves the count where it was: the next iterator plays
that epoch again from its start (a mixed dataset continues its stream instead).
``set_epoch(e)`` on the dataset pins every pass of every loader over it to epoch ``e``,
as ``DistributedSampler.set_epoch`` pins its sampler's, until it is called again; a
loaded state continues mid-epoch only a pass of its own epoch (a pin to another epoch
starts that one from its start, and says so). ``state_dict()`` records the epoch of the
loader's position (:func:`pass_epoch` applies these rules). A TokenDataset that follows
the loader's own sampler has no epoch number: its order comes from the generators, as
torch's does.

Positions count samples (rows or blocks) where the dataset can, so that a state resumes
into a loader of another batch size at exactly the next sample: the samples delivered
before the state, then batches of the new size over the rest of the epoch (the last
incomplete one dropped where the old one would have been).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

#: Label value on positions that carry no target (ignored by
#: ``torch.nn.functional.cross_entropy`` and Hugging Face models).
IGNORE_INDEX = -100

#: Batches one native job writes when outputs are pageable: each job costs a submission,
#: thread wake-ups and Python bookkeeping, which for small batches is as much as the
#: native work itself (the README's benchmark section has the figures). Pinned outputs keep
#: one batch per job (see :mod:`arrowloader.buffers`).
GROUP_BATCHES = 4

#: Version tag of ``DataLoader.state_dict()``.
STATE_FORMAT = "arrowloader.DataLoader/1"

#: Native threads used when ``num_workers=0`` on the native path.
MAX_DEFAULT_THREADS = 4

Item = dict[str, torch.Tensor]
Batch = dict[str, Any]
#: The two int64 figures a native job records per batch; what they mean is the
#: assembler's (a padded batch: truncated tokens; a packed batch: the length of
#: ``cu_seqlens`` and ``max_seqlen``), read only by the epoch that submitted the job.
BatchFigures = tuple[int, int]
#: Where a run is: defined by each dataset kind (see the module docstring).
Position = dict[str, Any]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_num_threads() -> int:
    """Native assembly threads for ``num_workers=0``: one per usable core, at most 4."""
    return max(1, min(MAX_DEFAULT_THREADS, usable_cores()))


@dataclass(frozen=True)
class LoaderSettings:
    """What a DataLoader tells its dataset about the passes it wants.

    Attributes:
        batch_sampler: the loader's batch sampler (torch's ``BatchSampler`` unless the
            user gave one): the order of batches, for datasets that follow it.
        batch_size: rows per batch on this rank (None with a custom batch sampler).
        generator: the loader's ``generator`` argument (None: torch's global one).
        threads: native threads a pass runs on.
        prefetch_factor: jobs kept in flight per thread.
        persistent_workers: ``persistent_workers`` with ``num_workers > 0``.
        first_iterator: whether the loader's next pass is one torch would start with a
            fresh iterator, drawing a base seed from the generator (False only for the
            later passes of a persistent-workers loader, whose reused iterator draws none):
            sampler-driven orders follow torch's draws.
        drop_last: the loader's ``drop_last``.
        position: the loader's position now (where its next pass starts, see
            :func:`next_epoch`), None before its first batch or loaded state.
    """

    batch_sampler: Any
    batch_size: Optional[int]
    generator: Optional[torch.Generator]
    threads: int
    prefetch_factor: int
    persistent_workers: bool
    first_iterator: bool = True
    drop_last: bool = False
    position: Optional[Position] = None

    def seed(self, default: int) -> int:
        """The shuffling seed of a dataset that plans its own order: the generator's
        ``initial_seed()``, else the dataset's ``default``."""
        return default if self.generator is None else self.generator.initial_seed()

    def stock_shuffle(self) -> Optional[bool]:
        """Whether the loader asks for a shuffled order (True: ``shuffle=True``, False: a
        sequential one), or None when its sampler is not one of torch's stock samplers
        (then a dataset that plans its own order cannot honour it)."""
        batch_sampler = self.batch_sampler
        if type(batch_sampler) is not BatchSampler:
            return None
        sampler = batch_sampler.sampler
        if (
            type(sampler) is RandomSampler
            and not sampler.replacement
            and sampler._num_samples is None
        ):
            return True
        if type(sampler) is SequentialSampler:
            return False
        return None


@dataclass(frozen=True)
class EpochStart:
    """How a pass begins.

    Attributes:
        pin: allocate outputs in pinned memory (CUDA is available and asked for).
        resume: the position of a loaded state (once, for the pass after
            ``load_state_dict``), else None.
        previous: the loader's position when this pass starts (where the previous pass
            stopped), else None.
    """

    pin: bool
    resume: Optional[Position] = None
    previous: Optional[Position] = None


@dataclass
class NativeJob:
    """One native job in flight: the ticket of the job and the batches it writes, in
    order (``ticket.result(timeout, j)`` gives batch ``j``'s :data:`BatchFigures`).
    ``context`` is whatever the epoch needs to finish them; ``extra_tickets``, jobs that
    write other outputs of the same batches (a batch is done when all are)."""

    ticket: Any
    batches: list[Batch]
    context: Any = field(default=None)
    extra_tickets: list[Any] = field(default_factory=list)


class NativeEpoch(Protocol):
    """One pass of a dataset's native path."""

    #: Batches one :meth:`submit` may queue at most.
    group: int
    #: The position after the batches finished so far (the loader stores it).
    position: Position

    def __len__(self) -> int:
        """Batches of the pass still to be delivered when it began."""

    def submit(self, pool: Any) -> Optional[NativeJob]:
        """Queues the next job (1 to :attr:`group` batches) on ``pool``; None at the end."""

    def finish(self, job: NativeJob, index: int, figures: BatchFigures) -> Batch:
        """Batch ``index`` of ``job``, done: the batch to yield. Called once per batch, in
        order; updates :attr:`position`."""

    def exhausted(self) -> None:
        """Called once every batch of the pass was delivered; updates :attr:`position`."""


@runtime_checkable
class NativeDataset(Protocol):
    """What a dataset implements to have a native path (see the module docstring)."""

    def collate(self, items: Sequence[Item]) -> Batch:
        """``ds[i]`` results as one batch, equal to the native path's batch of them."""

    def native_supported(self, settings: LoaderSettings) -> bool:
        """Whether a loader with ``settings`` takes the native path (else torch's)."""

    def native_num_batches(self, settings: LoaderSettings) -> int:
        """Batches in one pass with ``settings``: ``len(loader)``."""

    def native_epoch(self, settings: LoaderSettings, start: EpochStart) -> NativeEpoch:
        """One pass, starting as ``start`` says."""

    def native_state(self, settings: LoaderSettings, position: Optional[Position]) -> dict:
        """The ``state_dict()`` fields of ``position`` (None: before the loader's first
        batch), beside ``format`` and ``fingerprint``."""

    def native_load_state(self, settings: LoaderSettings, state: Any) -> Position:
        """Checks a ``state_dict()`` and returns the position to continue from.

        Raises:
            ValueError: the state is malformed or belongs to another run.
        """

    def native_rewound(self, position: Optional[Position]) -> None:
        """The loader's position was put back to ``position`` (a prefetcher whose consumer
        stopped early): undo what passing it changed on the dataset."""

    def fingerprint(self) -> dict[str, Any]:
        """What a saved state must match to be resumed on this dataset."""

    def check_files(self) -> None:
        """Raises ``CorpusChangedError`` if a file changed since the dataset opened it."""


def next_epoch(pinned: Optional[int], position: Optional[Position]) -> int:
    """The epoch a loader's next pass plays (see the module docstring): ``pinned`` (the
    dataset's ``set_epoch``), else the epoch of the loader's ``position``, else 0 (also
    for a position that names none)."""
    if pinned is not None:
        return pinned
    return 0 if position is None else int(position.get("epoch", 0))


def pass_epoch(
    pinned: Optional[int], start: EpochStart, under_way: Callable[[Position], bool]
) -> tuple[int, Optional[Position]]:
    """The epoch a pass plays and the loaded position it continues (None: the epoch's
    start), by the rules of the module docstring.

    Args:
        pinned: the epoch ``set_epoch`` pinned on the dataset, or None.
        start: how the pass begins (a loaded state's position, the loader's).
        under_way: whether a position lies after the start of its epoch.

    Warns:
        UserWarning: a loaded state is mid-way through an epoch the pin overrides.
    """
    resume = start.resume
    epoch = next_epoch(pinned, resume if resume is not None else start.previous)
    if resume is None or int(resume["epoch"]) == epoch:
        return epoch, resume
    if under_way(resume):
        warnings.warn(
            f"the loaded state is part-way through epoch {resume['epoch']}, but set_epoch() "
            f"pinned the dataset to epoch {epoch}: this pass plays epoch {epoch} from its "
            f"start. Call set_epoch({resume['epoch']}) (or nothing) before iterating to "
            "continue the saved run.",
            UserWarning,
            stacklevel=6,  # the caller of iter(loader)
        )
    return epoch, None


def warn_empty_epoch(what: str) -> None:
    """Warns that a pass yields no batch: ``what`` names the samples of the epoch, the
    batch size and what is dropped (an epoch of zero batches is almost always a batch
    size too large for the corpus, which would otherwise go unnoticed)."""
    # stacklevel: the caller of iter(loader), past the epoch, the dataset and the loader.
    warnings.warn(f"this DataLoader pass yields no batch: {what}", UserWarning, stacklevel=6)


def check_state(state: Any, keys: Sequence[str]) -> None:
    """Checks what every loader state has: the format tag, a ``fingerprint`` (compare it
    with :func:`check_fingerprint`) and the dataset's own ``keys``.

    Raises:
        ValueError: naming what is missing or differs.
    """
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not an arrowloader DataLoader state (format {STATE_FORMAT!r})")
    missing = [key for key in ("fingerprint", *keys) if key not in state]
    if missing:
        raise ValueError(f"loader state: missing {', '.join(map(repr, missing))}")


def check_state_int(state: dict[str, Any], key: str, kind: str = "int64") -> int:
    """``state[key]``, which must be a non-negative int below 2**63.

    Raises:
        ValueError: naming the key and the value.
    """
    value = state[key]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"loader state: {key!r} must be a non-negative {kind}, got {value!r}")
    return value


def check_fingerprint(saved: Any, current: dict[str, Any]) -> None:
    """Raises ValueError, naming what differs, unless a state's ``saved`` fingerprint is
    the dataset's ``current`` one."""
    if not isinstance(saved, dict):
        raise ValueError(
            f"loader state: 'fingerprint' must be a dict, got {type(saved).__name__}"
        )
    if saved == current:
        return
    differing = []
    for key in sorted(set(saved) | set(current), key=str):
        if saved.get(key, "<missing>") != current.get(key, "<missing>"):
            ours = current.get(key, "<missing>")
            theirs = saved.get(key, "<missing>")
            differing.append(f"{key}: state {_short(theirs)}, dataset {_short(ours)}")
    raise ValueError(
        "loader state: its 'fingerprint' shows it was taken over another corpus or packing, or "
        "with other options, so resuming would not continue that run (" + "; ".join(differing)
        + "). Load it into a loader over the same files with the same options."
    )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
