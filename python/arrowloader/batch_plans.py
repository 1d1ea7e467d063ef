"""Batch samplers whose epochs are planned natively over the documents' lengths:
length-grouped batches (Hugging Face's ``group_by_length``) and token-budget batches (as
many documents as fit in ``max_tokens`` padded tokens, fairseq's ``--max-tokens``).

Each epoch's batches are a function of (seed, epoch) alone, computed in C++ in one call
over a length per document (no per-item Python), and split between ranks from one global
plan, so every rank plays the same number of batches: ``RankSplit`` in
``csrc/batch_plans.h`` says exactly how (with ``drop_last`` the last ``B % world_size`` of
the epoch's ``B`` batches are left out; without it the first batches are played again
to fill the last round).

The samplers are ordinary torch batch samplers (``DataLoader(ds, batch_sampler=...)``
with any map-style dataset, given ``lengths=``). Over a :class:`arrowloader.TokenDataset`
the loader's native path plays the plan directly and resumes from ``state_dict()`` by
planning the epoch again and starting at the saved batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
from torch.utils.data import Sampler

from arrowloader import _C
from arrowloader.ranks import resolve_distributed
from arrowloader.shard_cache import parse_size
from arrowloader.windowed_shuffle import (
    check_window,
    window_from_cache_limit,
    windowed_document_order,
)

#: Hugging Face's megabatch: 50 batches sorted together (fewer on small datasets).
MEGABATCH_BATCHES = 50


@dataclass(frozen=True)
class BatchPlan:
    """One rank's batches of one epoch: batch ``k`` is ``rows[starts[k]:ends[k]]``.

    Attributes:
        rows: int64 ``[n]``, the epoch's order of every document (all ranks' batches lie
            in it).
        starts, ends: int64 ``[batches]``, this rank's batches, in the order it plays them.
    """

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def batch(self, k: int) -> np.ndarray:
        """Dataset indices of batch ``k``: int64 ``[rows in the batch]``."""
        return self.rows[self.starts[k] : self.ends[k]]

    def sizes(self) -> np.ndarray:
        """Rows in each batch: int64 ``[batches]``."""
        return self.ends - self.starts


class PlannedBatchSampler(Sampler[list[int]]):
    """What the length-grouped and token-budget samplers share: where lengths come from,
    the (seed, epoch) an epoch is planned for, the rank split and the fingerprint a loader
    state records.

    The epoch of a pass: the one :meth:`set_epoch` pinned, else the count of passes so far
    (this sampler's own iterations, or on the native path the loader's passes).
    """

    #: Names the policy in loader states.
    kind: ClassVar[str] = ""

    def __init__(
        self,
        dataset: Any,
        lengths: Any,
        *,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        rank: Optional[int],
        world_size: Optional[int],
    ) -> None:
        self.dataset = dataset
        self.lengths = planning_lengths(dataset, lengths)
        self.shuffle = check_bool("shuffle", shuffle)
        self.drop_last = check_bool("drop_last", drop_last)
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**64:
            raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")
        self.seed = seed
        if rank is None and world_size is None and dataset is not None and hasattr(
            dataset, "world_size"
        ):
            rank, world_size = dataset.rank, dataset.world_size
        self.rank, self.world_size = resolve_distributed(rank, world_size)
        self._pinned_epoch: Optional[int] = None
        self._passes = 0
        self._digest: Optional[str] = None
        self._num_batches = 0  # this rank's batches per epoch, set by the policy

    def set_epoch(self, epoch: int) -> None:
        """Pins the epoch the next passes plan (as ``DistributedSampler.set_epoch``)."""
        self._pinned_epoch = check_epoch(epoch)

    def epoch_after(self, previous: Optional[int]) -> int:
        """The epoch a native pass plays after a pass of ``previous`` (None: the first):
        the pinned one, else ``previous`` (the loader's position moves it on when a pass
        ends), else 0."""
        if self._pinned_epoch is not None:
            return self._pinned_epoch
        return 0 if previous is None else previous

    def plan(self, epoch: int) -> BatchPlan:
        """This rank's batches of ``epoch`` (planned natively, GIL released)."""
        rows, starts, ends = self._plan(check_epoch(epoch))
        return BatchPlan(rows, starts, ends)

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        if self._pinned_epoch is not None:
            epoch = self._pinned_epoch
        else:
            epoch = self._passes
            self._passes += 1
        plan = self.plan(epoch)
        for k in range(len(plan)):
            yield plan.batch(k).tolist()

    def __len__(self) -> int:
        return self._num_batches

    def options(self) -> dict[str, Any]:
        """The policy's own options (what, beside seed and ranks, shapes its batches)."""
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """What a loader state taken with this sampler must match to resume: the policy,
        its options, the seed, the world size and a digest of the lengths."""
        if self._digest is None:
            self._digest = hashlib.blake2b(self.lengths.tobytes(), digest_size=16).hexdigest()
        return {
            "kind": self.kind,
            **self.options(),
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "seed": self.seed,
            "world_size": self.world_size,
            "documents": len(self.lengths),
            "lengths": self._digest,
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return (
            f"{type(self).__name__}({len(self.lengths)} documents, {options}, "
            f"shuffle={self.shuffle}, seed={self.seed}, rank {self.rank} of "
            f"{self.world_size}: {len(self)} batches)"
        )


class LengthGroupedBatchSampler(PlannedBatchSampler):
    """Batches of ``batch_size`` documents of similar length, still shuffled every
    epoch: Hugging Face's ``group_by_length`` (``LengthGroupedSampler`` in batches).

    Each epoch's permutation (``arrowloader._C.seeded_permutation(seed, 2 * epoch, n)``;
    the identity without ``shuffle``) is cut into megabatches of ``megabatch_mult x
    batch_size`` documents, each sorted by length, longest first (ties keep the
    permutation's order); the longest document of the epoch is swapped into the first
    place, so a batch too large for memory fails at the first step; batches are then
    consecutive runs of ``batch_size``, the last one short unless ``drop_last``. Given
    the same permutation, these are ``LengthGroupedSampler``'s indices exactly. The
    permutation is arrowloader's own rather than ``torch.randperm``: it depends on
    (seed, epoch, n) alone, never on the torch version or a generator's state, and is
    drawn natively in a fraction of randperm's time.

    With ``world_size`` ranks, the epoch's batches are dealt out in turn (rank ``r``
    plays batches ``r, r + world_size, ...``), so the batches of one step come from the
    same megabatch and have similar lengths on every rank; see the module docstring for
    the remainder.

    Args:
        dataset: a :class:`arrowloader.TokenDataset` (lengths: its documents' token counts
            after ``max_length`` truncation, read from the corpus natively), or any sized
            dataset with ``lengths``, or None with ``lengths``.
        batch_size: documents per batch, on each rank.
        lengths: one length per document (any 1-D integer array), instead of the
            dataset's.
        shuffle: draw each epoch's permutation (False: megabatches of the documents in
            order).
        drop_last: drop the last, short batch and the batches that do not fill the last
            round of ranks.
        seed: the seed of every epoch's permutation (a loader's
            ``group_by_length=True`` passes its generator's ``initial_seed()``, else 0).
        megabatch_mult: batches per megabatch; default ``min(n // (4 * batch_size), 50)``,
            at least 1, as Hugging Face picks it.
        rank, world_size: this process's share; default: the dataset's (a TokenDataset's
            rank and world size), else ``torch.distributed``'s, else the whole epoch.

    Raises:
        ValueError, TypeError: an argument is out of range or of the wrong kind.
    """

    kind = "length_grouped"

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        lengths: Any = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        megabatch_mult: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        super().__init__(
            dataset, lengths, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )
        self.batch_size = check_positive("batch_size", batch_size)
        n = len(self.lengths)
        if megabatch_mult is None:
            megabatch_mult = max(1, min(n // (4 * self.batch_size), MEGABATCH_BATCHES))
        self.megabatch_mult = check_positive("megabatch_mult", megabatch_mult)
        total = _C.length_grouped_batch_count(n, self.batch_size, self.drop_last)
        self._num_batches = _C.rank_batch_count(
            total, self.rank, self.world_size, self.drop_last
        )

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _C.plan_length_grouped(
            self.lengths, self.batch_size, self.megabatch_mult * self.batch_size, self.shuffle,
            self.drop_last, self.seed, epoch, self.rank, self.world_size,
        )

    def options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "megabatch_mult": self.megabatch_mult}


class TokenBudgetBatchSampler(PlannedBatchSampler):
    """Batches of as many documents as fit in ``max_tokens`` padded tokens: ``rows x
    padded width <= max_tokens`` for every batch (and ``rows <= max_rows``), so batch
    sizes vary and padding stays low.

    The padded width is the one the dataset's batches will have: the longest document
    after ``max_length`` truncation (every document's ``max_length`` with
    ``padding="max_length"``), rounded up to ``pad_to_multiple_of``; an empty document
    counts as one token, so no batch holds more than ``max_tokens`` rows.

    Each epoch sorts the documents by padded length, ties in a random order
    (``shuffle``), cuts the sorted run greedily into batches, then shuffles the batches.
    The number of batches is the same every epoch (the sorted lengths are), so
    ``len()`` is exact. Without ``shuffle`` batches come by ascending length, ties by
    document. With ``world_size`` ranks the epoch's shuffled batches are dealt out in
    turn; see the module docstring for the remainder.

    A document that alone needs more than ``max_tokens`` padded tokens cannot be placed
    whole: the sampler refuses it when built, naming the document, its file and row.

    Args:
        dataset: a :class:`arrowloader.TokenDataset` (lengths after truncation, its
            ``padding`` and ``pad_to_multiple_of`` taken into the budget), or any sized
            dataset with ``lengths``, or None with ``lengths``.
        max_tokens: the budget of padded tokens per batch (rows x padded width).
        max_rows: also at most this many documents per batch (None: no limit).
        pad_to_multiple_of: the padded width is a multiple of this (None: the dataset's
            ``pad_to_multiple_of``; when both are set the sampler's must be a multiple of
            the dataset's, as when a later collator pads further).
        shuffle: shuffle ties and batches every epoch.
        drop_last: drop the batches that do not fill the last round of ranks.
        seed, rank, world_size, lengths: as for :class:`LengthGroupedBatchSampler`.

    Raises:
        ValueError: an argument is out of range, or a document does not fit the budget.
        TypeError: an argument is of the wrong kind.
    """

    kind = "token_budget"

    def __init__(
        self,
        dataset: Any,
        max_tokens: int,
        *,
        max_rows: Optional[int] = None,
        pad_to_multiple_of: Optional[int] = None,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        lengths: Any = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        super().__init__(
            dataset, lengths, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )
        self.max_tokens = check_positive("max_tokens", max_tokens)
        self.max_rows = None if max_rows is None else check_positive("max_rows", max_rows)
        self.pad_to_multiple_of = budget_multiple(dataset, pad_to_multiple_of)
        if getattr(dataset, "padding", "longest") == "max_length":
            # Every batch is max_length wide whatever its documents.
            self.lengths = np.full(len(self.lengths), dataset.max_length, dtype=np.int64)
            self.lengths.flags.writeable = False
        self._refuse_oversized()
        total = _C.token_budget_batch_count(
            self.lengths, self.max_tokens, self.max_rows or 0, self.pad_to_multiple_of
        )
        self._num_batches = _C.rank_batch_count(
            total, self.rank, self.world_size, self.drop_last
        )

    def _refuse_oversized(self) -> None:
        m = self.pad_to_multiple_of
        if not len(self.lengths) or -(-int(self.lengths.max()) // m) * m <= self.max_tokens:
            return  # the widest fits, so every one does
        widths = np.maximum(-(-self.lengths // m) * m, 1)
        over = np.flatnonzero(widths > self.max_tokens)
        if not len(over):
            return
        row = int(over[0])
        describe = getattr(self.dataset, "describe_row", None)
        where = f" ({describe(row)})" if describe is not None else ""
        padding = getattr(self.dataset, "padding", "longest")
        why = (
            f"padding='max_length' pads every document to {self.lengths[row]} tokens"
            if padding == "max_length" and self.dataset is not None
            else f"it has {self.lengths[row]} tokens"
        )
        raise ValueError(
            f"document {row}{where} does not fit in max_tokens={self.max_tokens}: {why}, "
            f"{widths[row]} padded, and a batch holds whole documents ({len(over)} "
            f"document(s) are too long). Raise max_tokens to at least {widths.max()}, or "
            "truncate with the dataset's max_length."
        )

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _C.plan_token_budget(
            self.lengths, self.max_tokens, self.max_rows or 0, self.pad_to_multiple_of,
            self.shuffle, self.drop_last, self.seed, epoch, self.rank, self.world_size,
        )

    def options(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "max_rows": self.max_rows,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        }


def planning_lengths(dataset: Any, lengths: Any) -> np.ndarray:
    """The length of every document a plan orders: ``lengths`` if given (checked against
    the dataset's size), else the dataset's ``kept_lengths()``; read-only int64 ``[n]``.

    Raises:
        TypeError: neither gives lengths.
        ValueError: lengths are not a 1-D array of non-negative integers of the dataset's
            size.
    """
    if lengths is None:
        kept = getattr(dataset, "kept_lengths", None)
        if kept is None:
            raise TypeError(
                "a planned batch sampler needs each document's length: pass lengths= (one "
                "integer per sample), or an arrowloader.TokenDataset, which reads them from "
                "its corpus"
            )
        values = np.ascontiguousarray(kept(), dtype=np.int64)
    else:
        array = np.asarray(lengths)
        if array.ndim != 1 or not (
            np.issubdtype(array.dtype, np.integer) or array.size == 0
        ):
            raise ValueError(
                f"lengths must be a 1-D sequence of integers, got shape {array.shape} of "
                f"{array.dtype}"
            )
        values = np.ascontiguousarray(array, dtype=np.int64)
        negative = np.flatnonzero(values < 0)
        if len(negative):
            raise ValueError(
                f"lengths[{negative[0]}] is {values[negative[0]]}; lengths must be >= 0"
            )
        if dataset is not None and len(dataset) != len(values):
            raise ValueError(
                f"lengths has {len(values)} entries, the dataset {len(dataset)} samples"
            )
    if values is lengths or not values.flags.owndata:
        values = values.copy()
    values.flags.writeable = False
    return values


def budget_multiple(dataset: Any, asked: Optional[int]) -> int:
    """The multiple a token budget rounds widths to: ``asked``, else the dataset's
    ``pad_to_multiple_of``, else 1.

    Raises:
        ValueError: ``asked`` is not positive, or not a multiple of the dataset's.
    """
    own = getattr(dataset, "pad_to_multiple_of", None) or 1
    if asked is None:
        return own
    check_positive("pad_to_multiple_of", asked)
    if asked % own:
        raise ValueError(
            f"pad_to_multiple_of={asked} is not a multiple of the dataset's "
            f"pad_to_multiple_of={own}: its batches would be wider than the budget counts. "
            f"Pass a multiple of {own}, or None to use the dataset's."
        )
    return asked


def check_positive(name: str, value: Any) -> int:
    """``value``, a positive int.

    Raises:
        TypeError: not an int. ValueError: not positive.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value``, a bool (None reads as False, as torch's ``shuffle=None`` does).

    Raises:
        TypeError: naming the argument.
    """
    if value is None:
        return False
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def check_epoch(epoch: Any) -> int:
    """``epoch``, a non-negative int below 2**63.

    Raises:
        ValueError: naming the value.
    """
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**63:
        raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
    return epoch


class WindowedShuffleBatchSampler(PlannedBatchSampler):
    """Batches of ``batch_size`` documents shuffled within windows of shards: the
    windowed shuffle of :mod:`arrowloader.windowed_shuffle` for a
    :class:`arrowloader.TokenDataset` (the shard order shuffled per epoch, the documents
    of each window of ``window_shards`` shards shuffled among themselves, windows in
    turn), so that the batches of one stretch of an epoch read one window's shards, not
    the whole corpus's. Consecutive runs of ``batch_size`` documents make the batches;
    with ``world_size`` ranks they are dealt out in turn (see the module docstring for
    the remainder). A function of (seed, epoch) alone: the native path plays the plan
    and resumes a state in O(1).

    Args:
        dataset: a :class:`arrowloader.TokenDataset` (its files are the shards).
        batch_size: documents per batch, on each rank.
        window_shards: shards per window; ``"auto"``: from the dataset's ``cache_limit``
            (two windows of its largest files fit in it).
        shuffle: False: the documents in corpus order (no window is drawn).
        drop_last, seed, rank, world_size: as for :class:`LengthGroupedBatchSampler`.

    Raises:
        ValueError, TypeError: an argument is out of range or of the wrong kind.
    """

    kind = "windowed_shuffle"

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        window_shards: Any,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        files = getattr(getattr(dataset, "corpus", None), "files", None)
        if files is None:
            raise TypeError(
                "WindowedShuffleBatchSampler needs an arrowloader.TokenDataset (its files "
                f"are the shards), got {type(dataset).__name__}"
            )
        super().__init__(
            dataset, None, shuffle=shuffle, seed=seed, drop_last=drop_last, rank=rank,
            world_size=world_size,
        )
        self.batch_size = check_positive("batch_size", batch_size)
        self.shard_rows = [f.num_rows for f in files]
        if window_shards == "auto":
            limit = parse_size(getattr(dataset, "_args", {}).get("cache_limit"))
            if limit is None:
                raise ValueError(
                    "window_shards='auto' takes the window from the dataset's cache_limit; "
                    "open it with cache_limit, or give a window size"
                )
            window_shards = window_from_cache_limit(
                limit, [f.path.stat().st_size for f in files]
            )
        self.window_shards = check_window(window_shards)
        n = len(self.lengths)
        total = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        self._total = total
        self._num_batches = _C.rank_batch_count(
            total, self.rank, self.world_size, self.drop_last
        )

    def _plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.lengths)
        if self.shuffle:
            rows, _ = windowed_document_order(self.shard_rows, self.window_shards, self.seed,
                                              epoch)
        else:
            rows = np.arange(n, dtype=np.int64)
        batches = np.arange(self._total, dtype=np.int64)
        world = self.world_size
        if self.drop_last:
            batches = batches[: len(batches) - len(batches) % world]
        elif len(batches) % world:
            # The first batches again, to fill the last round of ranks.
            batches = np.concatenate([batches, batches[: world - len(batches) % world]])
        mine = batches[self.rank::world]
        starts = mine * self.batch_size
        ends = np.minimum(starts + self.batch_size, n)
        return rows, starts.astype(np.int64), ends.astype(np.int64)

    def options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "window_shards": self.window_shards}
