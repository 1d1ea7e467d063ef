"""The native path's passes over a :class:`arrowloader.TokenDataset`: which rows each
padded batch holds (the loader's own sampler, a rank's share of a distributed epoch, or
a planned batch sampler's plan), the batches in flight, and the positions a loader state
is made of."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from arrowloader.batch_plans import PlannedBatchSampler
from arrowloader.buffers import output_buffers
from arrowloader.native import (
    GROUP_BATCHES,
    IGNORE_INDEX,
    Batch,
    BatchFigures,
    EpochStart,
    LoaderSettings,
    NativeJob,
    Position,
    check_fingerprint,
    check_state,
    check_state_int,
    pass_epoch,
    warn_empty_epoch,
)
from arrowloader.plan import EpochPlan, count_batches, counts_samples
from arrowloader.ranks import rank_order, rank_share
from arrowloader.wording import plural

if TYPE_CHECKING:  # the dataset module imports this one
    from arrowloader.dataset import TokenDataset


def finish_batch(dataset: TokenDataset, batch: Batch) -> Batch:
    """A padded batch as the dataset yields it: with a stored attention mask, causal labels
    are -100 wherever the mask is 0 (the corpus's own padding too)."""
    if dataset.causal_labels and dataset.stored_attention_mask:
        batch["labels"].masked_fill_(batch["attention_mask"] == 0, IGNORE_INDEX)
    return batch


class PaddedEpoch:
    """One pass of a DataLoader over a TokenDataset: batches of rows, each padded natively
    into freshly allocated tensors. Subclasses choose the rows and keep the position."""

    def __init__(self, dataset: TokenDataset, settings: LoaderSettings, start: EpochStart) -> None:
        self._dataset = dataset
        self._assembler = dataset._assembler
        self._pin = start.pin
        # Batches per native job (see GROUP_BATCHES); pinned batches keep one job each,
        # as for packed datasets.
        self.group = 1 if start.pin else GROUP_BATCHES
        # Set by subclasses: (rows, width) of every batch still to submit and the
        # batches of this pass; counted here: the batches of the pass delivered, and the
        # samples and batches of the epoch delivered (those before a resume included).
        self._batches: Iterator[tuple[np.ndarray, int]] = iter(())
        self._total = 0
        self._delivered = 0
        self._epoch_samples = self._epoch_batches = 0
        self.position: Position = {}

    def __len__(self) -> int:
        return self._total

    def submit(self, pool: Any) -> Optional[NativeJob]:
        planned = list(itertools.islice(self._batches, self.group))
        if not planned:
            return None
        extras = self._dataset._extras
        batches, arguments = [], []
        extra_arguments: list[list[tuple]] = [[] for _ in extras]
        for rows, width in planned:
            batch, outputs = self._allocate(rows, width)
            batches.append(batch)
            arguments.append((rows, *outputs))
            for extra, queued in zip(extras, extra_arguments):
                queued.append((rows, batch[extra.output].numpy(), None, None, None))
        if len(arguments) == 1:
            ticket = self._assembler.submit(pool, *arguments[0])
        else:
            ticket = self._assembler.submit_batches(pool, arguments)
        # Each carried column is one more job over the same rows (the same truncation and
        # padding, its own pad value); the batch is done when all of them are.
        also = [
            extra.assembler.submit_batches(pool, queued)
            for extra, queued in zip(extras, extra_arguments)
        ]
        return NativeJob(ticket, batches, extra_tickets=also)

    def _allocate(self, rows: np.ndarray, width: int) -> tuple[Batch, tuple]:
        """Fresh output tensors of the batch of ``rows`` padded to ``width`` (pinned when
        asked: see arrowloader.buffers for why a pinned batch is never rewritten while its
        copy to the device may be pending), and the numpy arrays the native side writes,
        in ``submit()``'s order: input_ids, attention_mask, causal labels, labels."""
        dataset = self._dataset
        n = len(rows)
        shape = (n, width)
        extras = dataset._extras
        stored_mask = dataset.stored_attention_mask
        scalar_labels = dataset.corpus.labels is not None and not dataset.causal_labels
        ids, mask, causal, labels, *carried = output_buffers(
            [
                (shape, dataset.dtype),
                (shape, dataset.dtype) if dataset.return_attention_mask and not stored_mask
                else None,
                (shape, dataset.dtype) if dataset.causal_labels else None,
                ((n,), torch.int64) if scalar_labels else None,
                *((shape, dataset.dtype) for _ in extras),
            ],
            self._pin,
        )
        batch = {"input_ids": ids[0]}
        if mask is not None:
            batch["attention_mask"] = mask[0]
        if causal is not None or labels is not None:
            batch["labels"] = (causal or labels)[0]
        for extra, buffer in zip(extras, carried):
            batch[extra.output] = buffer[0]
        return batch, (ids[1], *(None if b is None else b[1] for b in (mask, causal, labels)))

    def finish(self, job: NativeJob, index: int, figures: BatchFigures) -> Batch:
        truncated_tokens, _ = figures
        self._dataset._truncated_in_batches += truncated_tokens
        batch = job.batches[index]
        self._delivered += 1
        self._epoch_batches += 1
        self._epoch_samples += int(batch["input_ids"].shape[0])
        if self._delivered == self._total:
            # After the last batch a state resumes into the next epoch, not an empty rest.
            self.exhausted()
        else:
            self.position = self._position_now()
        return finish_batch(self._dataset, batch) if self._dataset._extras else batch

    def _position_now(self) -> Position:
        """The position after the samples and batches of the epoch delivered so far."""
        raise NotImplementedError

    def exhausted(self) -> None:
        raise NotImplementedError


class SamplerEpoch(PaddedEpoch):
    """A pass whose batch indices come from the loader's own (batch) sampler.

    Its position, for ``state_dict()``, is the state of the random generators the sampler
    draws from, as they were when the epoch began, and the samples delivered since
    (``"samples"``; with a batch sampler of the user's own, whose batches are not runs of
    one order, the batches: ``"batches"``): a resumed epoch restores the generators,
    draws the same order again and skips that many samples (in O(1) for torch's stock
    samplers; other samplers are iterated, indices only, up to that point), then cuts
    the rest into batches of the loader's batch size, whatever the size before.
    """

    def __init__(self, dataset: TokenDataset, settings: LoaderSettings, start: EpochStart) -> None:
        super().__init__(dataset, settings, start)
        self._persistent = settings.persistent_workers
        self._generators = sampling_generators(settings)
        self._by_samples = counts_samples(settings.batch_sampler)
        first_iterator = settings.first_iterator
        skip = 0
        if start.resume is not None:
            for generator, state in zip(self._generators, start.resume["generator_states"]):
                generator.set_state(state)
            skip = start.resume["samples" if self._by_samples else "batches"]
            first_iterator = start.resume["draws_base_seed"]
        self._start = {
            "generator_states": [g.get_state() for g in self._generators],
            "draws_base_seed": first_iterator,
        }
        # The same draws, in the same order, as torch's _BaseDataLoaderIter: the sampler
        # iterator is made first (its draws happen lazily, at the first batch), then the
        # base seed is drawn; torch's reused persistent-worker iterator draws none.
        plan = EpochPlan(settings.batch_sampler)
        if self._by_samples:
            batch_sampler = settings.batch_sampler
            num_samples = len(batch_sampler.sampler)
            size = batch_sampler.batch_size
            self._total = count_batches(num_samples, skip, size, batch_sampler.drop_last)
            self._batches = _with_widths(self._assembler, plan, skip)
            self._epoch_samples = skip
            if skip == 0 and self._total == 0 and num_samples > 0:
                warn_empty_epoch(
                    f"drop_last=True drops the last incomplete batch, and the epoch has "
                    f"{plural(num_samples, 'sample')}, fewer than batch_size={size}, so all "
                    f"{num_samples} are dropped. Use batch_size <= {num_samples} or "
                    "drop_last=False."
                )
        else:
            self._total = len(settings.batch_sampler) - skip
            self._batches = _with_widths(self._assembler, plan, None, skip)
            self._epoch_batches = skip
        if first_iterator:
            torch.empty((), dtype=torch.int64).random_(generator=settings.generator)
        self.position = self._position_now()

    def _count(self, samples: int, batches: int) -> dict[str, int]:
        return {"samples": samples} if self._by_samples else {"batches": batches}

    def _position_now(self) -> Position:
        return {**self._start, **self._count(self._epoch_samples, self._epoch_batches)}

    def exhausted(self) -> None:
        # The next epoch starts from the generators as this one left them.
        self.position = {
            "generator_states": [g.get_state() for g in self._generators],
            # torch's reused persistent-worker iterator draws no base seed.
            "draws_base_seed": not self._persistent,
            **self._count(0, 0),
        }


class RankSplitEpoch(PaddedEpoch):
    """A pass of one rank of a distributed run: this rank's share of the epoch's order,
    as ``DistributedSampler`` gives it (see :class:`TokenDataset`), in batches of the
    loader's batch size. Its position is the epoch and the samples of this rank's share
    delivered in it (so a state resumes into another batch size at its next sample)."""

    def __init__(
        self, dataset: TokenDataset, settings: LoaderSettings, start: EpochStart, shuffle: bool
    ) -> None:
        super().__init__(dataset, settings, start)
        self.epoch, resumed = pass_epoch(
            dataset._pinned_epoch, start, lambda position: position["samples"] > 0
        )
        skip = 0 if resumed is None else resumed["samples"]
        order = rank_order(
            len(dataset), dataset.rank, dataset.world_size, shuffle=shuffle,
            seed=settings.seed(0), epoch=self.epoch, drop_last=settings.drop_last,
        )
        share = len(order)
        size = settings.batch_size
        order = order[skip:]
        if settings.drop_last:
            order = order[: len(order) - len(order) % size]
        self._total = -(-len(order) // size)
        self._epoch_samples = skip
        widths = self._assembler.widths(order, size).tolist()
        self._batches = (
            (order[b * size : (b + 1) * size], width) for b, width in enumerate(widths)
        )
        if skip == 0 and self._total == 0 and len(dataset) > 0:
            warn_empty_epoch(
                f"drop_last=True: this rank's share of the epoch is "
                f"{plural(share, 'document')} (of {len(dataset)} over {dataset.world_size} "
                f"ranks), fewer than batch_size={size}, so all {share} are dropped. Use "
                f"batch_size <= {max(1, share)} or drop_last=False."
            )
        self.position = self._position_now()

    def _position_now(self) -> Position:
        return {"epoch": self.epoch, "samples": self._epoch_samples}

    def exhausted(self) -> None:
        self.position = {"epoch": self.epoch + 1, "samples": 0}


class PlannedEpoch(PaddedEpoch):
    """A pass whose batches are a planned batch sampler's plan of one epoch
    (:mod:`arrowloader.batch_plans`): length-grouped or token-budget batches, this rank's
    share. Its position is the epoch and the batches delivered in it; a resumed pass plans
    the same epoch again (a function of seed and epoch alone) and starts at the next
    batch, reading nothing it skips."""

    def __init__(
        self,
        dataset: TokenDataset,
        settings: LoaderSettings,
        start: EpochStart,
        sampler: PlannedBatchSampler,
    ) -> None:
        super().__init__(dataset, settings, start)
        if len(sampler.lengths) != len(dataset):
            raise ValueError(
                f"the batch sampler plans {len(sampler.lengths)} documents, the dataset has "
                f"{len(dataset)}: build it over this dataset"
            )
        # The sampler's set_epoch pins its plans; else the dataset's; else the loader's
        # own count (native.pass_epoch).
        pinned = sampler._pinned_epoch
        if pinned is None:
            pinned = dataset._pinned_epoch
        self.epoch, resumed = pass_epoch(pinned, start, lambda position: position["batches"] > 0)
        skip = 0 if resumed is None else int(resumed["batches"])
        plan = sampler.plan(self.epoch)
        self._total = len(plan) - skip
        self._epoch_batches = skip
        if skip == 0 and len(plan) == 0 and len(dataset) > 0:
            warn_empty_epoch(
                f"the {type(sampler).__name__} plans no batch of this rank's for epoch "
                f"{self.epoch} ({plural(len(dataset), 'document')}, world size "
                f"{sampler.world_size}, drop_last={sampler.drop_last}): every document is "
                "dropped. Use fewer ranks, a smaller batch, or drop_last=False."
            )
        starts, ends = plan.starts[skip:], plan.ends[skip:]
        widths = self._assembler.batch_widths(plan.rows, starts, ends).tolist()
        rows = plan.rows
        self._batches = (
            (rows[begin:end], width)
            for begin, end, width in zip(starts.tolist(), ends.tolist(), widths)
        )
        self.position = self._position_now()

    def _position_now(self) -> Position:
        return {"epoch": self.epoch, "batches": self._epoch_batches}

    def exhausted(self) -> None:
        self.position = {"epoch": self.epoch + 1, "batches": 0}


def planned_sampler(settings: LoaderSettings) -> Optional[PlannedBatchSampler]:
    """The loader's batch sampler if it is a planned one (its epochs then play its plan),
    else None."""
    sampler = settings.batch_sampler
    return sampler if isinstance(sampler, PlannedBatchSampler) else None


def planned_state(sampler: PlannedBatchSampler, position: Optional[Position]) -> dict:
    """The ``state_dict()`` fields of a loader over a planned batch sampler at
    ``position`` (None: before its first batch): the sampler's fingerprint ("plan"), the
    epoch and the batches delivered in it."""
    if position is None:
        position = {"epoch": sampler.epoch_after(None), "batches": 0}
    return {
        "plan": sampler.fingerprint(),
        "epoch": position["epoch"],
        "batches": position["batches"],
    }


def check_planned_state(
    state: Any, dataset: TokenDataset, sampler: PlannedBatchSampler
) -> Position:
    """Validates the state of a loader over a planned batch sampler and returns the
    position it resumes.

    Raises:
        ValueError: the state is malformed, was taken with another plan (policy, options,
            seed, world size or lengths), or over another corpus or options.
    """
    check_state(state, ("plan", "epoch", "batches"))
    for key in ("epoch", "batches"):
        check_state_int(state, key)
    saved, current = state["plan"], sampler.fingerprint()
    taken_on = saved.get("world_size") if isinstance(saved, dict) else None
    if isinstance(taken_on, int) and taken_on != current["world_size"]:
        # One global plan, dealt out in turn: compare all but the world size.
        saved = {**saved, "world_size": current["world_size"]}
    if saved != current:
        if not isinstance(saved, dict):
            raise ValueError(f"loader state: 'plan' must be a dict, got {type(saved).__name__}")
        differing = [
            f"{key}: state {saved.get(key, '<missing>')!r}, sampler "
            f"{current.get(key, '<missing>')!r}"
            for key in sorted(set(saved) | set(current))
            if saved.get(key, "<missing>") != current.get(key, "<missing>")
        ]
        raise ValueError(
            "loader state was taken with another batch plan, so resuming would not "
            "continue that run (" + "; ".join(differing) + "). Build the batch sampler "
            "with the same options, seed and world size."
        )
    check_fingerprint(state["fingerprint"], dataset.fingerprint())
    batches = state["batches"]
    if isinstance(taken_on, int) and taken_on != sampler.world_size:
        batches = _resplit_batches(batches, taken_on, sampler)
    if batches > len(sampler):
        raise ValueError(
            f"loader state: 'batches' ({batches}) is beyond the {len(sampler)} "
            "batches of an epoch of this rank"
        )
    return {"epoch": state["epoch"], "batches": batches}


def _resplit_batches(batches: int, taken_on: int, sampler: PlannedBatchSampler) -> int:
    """The batches of each rank a planned state taken after ``batches`` each on
    ``taken_on`` ranks stands for on the sampler's ranks: the plan's batches are dealt
    out in turn, so the first ``batches * taken_on`` of the epoch's plan were consumed
    (see :func:`resplit_samples` for the same rule over samples).

    Raises:
        ValueError: they cannot be shared equally between the sampler's ranks.
    """
    consumed, world_size = batches * taken_on, sampler.world_size
    if consumed >= len(sampler) * world_size:
        return len(sampler)
    if consumed % world_size:
        raise ValueError(
            f"loader state was taken on {taken_on} ranks after {batches} batches each "
            f"({consumed} of the epoch's plan), which {world_size} ranks cannot share "
            f"equally: resume on a number of ranks that divides {consumed}"
        )
    return consumed // world_size


def sampling_generators(settings: LoaderSettings) -> list[torch.Generator]:
    """The torch generators an epoch of a loader with ``settings`` draws from: the
    loader's (or torch's global one) and its sampler's own, if it has one."""
    generators = [
        settings.generator if settings.generator is not None else torch.default_generator
    ]
    sampler = getattr(settings.batch_sampler, "sampler", None)
    own = getattr(sampler, "generator", None)
    if isinstance(own, torch.Generator) and all(own is not g for g in generators):
        generators.append(own)
    return generators


def check_token_state(
    state: Any,
    dataset: TokenDataset,
    settings: LoaderSettings,
) -> Position:
    """Validates a TokenDataset loader state and returns the position it resumes: the
    samples of the epoch delivered (``"samples"``) for a loader whose batch sampler is
    torch's ``BatchSampler``, else the batches (``"batches"``). A state from before
    positions counted samples holds ``"batches"``, taken as batches of this loader's size.

    Raises:
        ValueError: the state is malformed, was taken over another corpus or options,
            lies beyond an epoch of the loader, or counts samples and the loader's batch
            sampler is one of the user's own.
    """
    generators = sampling_generators(settings)
    check_state(state, ("generator_states", "draws_base_seed"))
    batch_sampler = settings.batch_sampler
    by_samples = counts_samples(batch_sampler)
    if "samples" in state:
        samples = check_state_int(state, "samples", kind="int")
        if not by_samples:
            raise ValueError(
                "loader state counts samples (it was taken from a loader with a "
                "batch_size), but this loader has a batch_sampler of its own, whose batches "
                "need not be runs of one sample order; resume it into a loader built with "
                "batch_size (and the same sampler)"
            )
    elif "batches" in state:
        batches = check_state_int(state, "batches", kind="int")
        try:
            num_batches: Optional[int] = len(batch_sampler)
        except TypeError:  # a sampler without a length
            num_batches = None
        if num_batches is not None and batches > num_batches:
            raise ValueError(
                f"loader state: 'batches' ({batches}) is beyond the {num_batches} batches of "
                "an epoch of this loader"
            )
        # The last batch of an epoch may be short: its end is the end of the order.
        samples = batches * batch_sampler.batch_size if by_samples else 0
        if by_samples and num_batches is not None and batches == num_batches:
            samples = len(batch_sampler.sampler)
    else:
        raise ValueError("loader state: missing 'samples'")
    if by_samples:
        try:
            num_samples: Optional[int] = len(batch_sampler.sampler)
        except TypeError:
            num_samples = None
        if num_samples is not None and samples > num_samples:
            raise ValueError(
                f"loader state: 'samples' ({samples}) is beyond the {num_samples} samples of "
                "an epoch of this loader"
            )
    if not isinstance(state["draws_base_seed"], bool):
        raise ValueError(
            f"loader state: 'draws_base_seed' must be a bool, got {state['draws_base_seed']!r}"
        )
    states = state["generator_states"]
    if not isinstance(states, (list, tuple)) or len(states) != len(generators):
        raise ValueError(
            f"loader state: 'generator_states' must hold {len(generators)} generator states "
            "(this loader's and its sampler's generators)"
        )
    for saved, generator in zip(states, generators):
        current = generator.get_state()
        if not (
            isinstance(saved, torch.Tensor)
            and saved.dtype == current.dtype
            and saved.shape == current.shape
        ):
            raise ValueError("loader state: 'generator_states' holds something that is not a "
                             "state of this loader's generators")
    check_fingerprint(state["fingerprint"], dataset.fingerprint())
    position: Position = {
        "generator_states": list(states),
        "draws_base_seed": state["draws_base_seed"],
    }
    if by_samples:
        position["samples"] = samples
    else:
        position["batches"] = batches
    return position


def check_split_state(state: Any, dataset: TokenDataset, settings: LoaderSettings) -> Position:
    """Validates the state of a rank-split TokenDataset loader and returns the position
    it resumes (the epoch, and the samples of this rank's share delivered; a state from
    before positions counted samples holds batches of this loader's size).

    Raises:
        ValueError: the state is malformed, was taken with another world size or seed,
            or over another corpus or options.
    """
    check_state(state, ("seed", "world_size", "epoch"))
    counted = "samples" if "samples" in state or "batches" not in state else "batches"
    for key in ("seed", "world_size", "epoch", counted):
        if key not in state:
            raise ValueError(f"loader state: missing {key!r}")
        check_state_int(state, key)
    seed = settings.seed(0)
    if state["seed"] != seed:
        raise ValueError(
            f"loader state was taken with seed {state['seed']}, this loader shuffles with "
            f"{seed}; pass the same generator seed to resume the same order"
        )
    check_fingerprint(state["fingerprint"], dataset.fingerprint())
    if counted == "batches":
        num_batches = dataset.native_num_batches(settings)
        if state["batches"] > num_batches:
            raise ValueError(
                f"loader state: 'batches' ({state['batches']}) is beyond the {num_batches} "
                "batches of an epoch of this rank"
            )
    share = rank_share(len(dataset), dataset.world_size, settings.drop_last)
    if counted == "batches":
        # The last batch of an epoch may be short: its end is the end of the share.
        samples = min(share, state["batches"] * settings.batch_size)
    else:
        samples = state["samples"]
    if state["world_size"] != dataset.world_size:
        samples = resplit_samples(state, len(dataset), dataset.world_size, settings.drop_last)
    if samples > share:
        raise ValueError(
            f"loader state: 'samples' ({samples}) is beyond the {share} samples of this "
            "rank's share of an epoch"
        )
    return {"epoch": state["epoch"], "samples": samples}


def resplit_samples(state: dict[str, Any], num_samples: int, world_size: int,
                    drop_last: bool) -> int:
    """The samples of each rank's share a rank-split state taken on another number of
    ranks stands for on ``world_size`` ranks.

    Every rank of a run delivers as many samples of the epoch's order as the others, and
    rank ``r`` takes every ``world_size``-th from ``r``: after ``s`` samples each on ``N``
    ranks, the first ``s * N`` of the epoch's order are consumed, whatever ``N``. On ``M``
    ranks that is ``s * N / M`` each, when it is whole (else refused); a state at (or
    past) the end of the epoch's samples ends the epoch on any number of ranks.

    Raises:
        ValueError: ``s * N`` is not a multiple of ``world_size``.
    """
    taken_on = state["world_size"]
    consumed = state["samples"] * taken_on if "samples" in state else None
    if consumed is None:
        raise ValueError(
            f"loader state was taken on {taken_on} ranks and counts batches, not samples, so "
            f"it cannot be split between the {world_size} of this run; resume it on "
            f"{taken_on} ranks"
        )
    share = rank_share(num_samples, world_size, drop_last)
    if consumed >= min(num_samples, share * world_size):
        return share
    if consumed % world_size:
        raise ValueError(
            f"loader state was taken on {taken_on} ranks after {state['samples']} samples "
            f"each ({consumed} of the epoch), which {world_size} ranks cannot share "
            f"equally: resume on a number of ranks that divides {consumed}, or from a state "
            f"taken at a step whose global batch {world_size} ranks can split"
        )
    return consumed // world_size


def _with_widths(
    assembler: Any, plan: EpochPlan, samples: Optional[int], batches: int = 0
) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (rows int64 [batch], padded width) for every batch of the epoch after its
    first ``samples`` samples (or, with ``samples`` None, its first ``batches`` batches):
    widths of a vectorised plan in one native call, else batch by batch."""
    order = plan.order(samples or 0)
    if order is None:
        if samples is not None:
            for rows in plan.batches_after(samples):
                yield rows, assembler.width(rows)
            return
        for b, rows in enumerate(plan):
            if b >= batches:
                yield rows, assembler.width(rows)
        return
    if samples is None:
        order = order[batches * plan.batch_size :]
    widths = assembler.widths(order, plan.batch_size).tolist()
    for b, width in enumerate(widths):
        yield order[b * plan.batch_size : (b + 1) * plan.batch_size], width
