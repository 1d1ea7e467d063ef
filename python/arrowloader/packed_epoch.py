"""The native path's passes over a :class:`arrowloader.PackedDataset`: the epoch's
shuffled blocks cut into global batches, this rank's share of each, page prefetching for
corpora larger than memory, and the positions a packed or mixed loader state is made of."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from arrowloader.buffers import BlockPool
from arrowloader.native import (
    GROUP_BATCHES,
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
from arrowloader.wording import plural

if TYPE_CHECKING:  # the dataset module imports this one
    from arrowloader.packed import PackedDataset

#: With ``prefetch_pages``, how many batches ahead of the one being queued the loader asks
#: the kernel for the pages of (a batch of 8 blocks of 2049 int32 tokens is about 64 KiB of
#: pages, so up to 16 MiB of reads in flight). The window opens gradually, by at most
#: ``PREFETCH_RAMP`` batches per batch queued, so that the first batch does not wait for
#: the reads of the whole window to be queued.
PREFETCH_BATCHES = 256
PREFETCH_RAMP = 4

#: What a packed or mixed loader state holds beside "format" and "fingerprint".
PACKED_STATE_KEYS = ("seed", "epoch", "samples_consumed", "global_batch_size")


def packed_state(dataset: Any, settings: LoaderSettings, position: Position) -> dict[str, Any]:
    """The ``state_dict()`` fields of a packed or mixed loader at ``position``: the seed,
    the epoch, the blocks of global batches delivered, the global batch size (and, for a
    mixed dataset, "source_epochs")."""
    state = {
        "seed": settings.seed(dataset.seed),
        "epoch": position["epoch"],
        "samples_consumed": position.get("samples_consumed", 0),
        "global_batch_size": settings.batch_size * dataset.world_size,
    }
    if "source_epochs" in position:  # MixedDataset: where each dataset's epochs are
        state["source_epochs"] = position["source_epochs"]
    return state


def check_packed_fields(state: Any) -> None:
    """Checks a packed or mixed state's format, keys and integer fields.

    Raises:
        ValueError: naming the field.
    """
    check_state(state, PACKED_STATE_KEYS)
    for key in ("epoch", "samples_consumed", "seed", "global_batch_size"):
        check_state_int(state, key)
    if state["global_batch_size"] < 1:
        raise ValueError("loader state: 'global_batch_size' must be positive")
    # 'samples_consumed' need not be a multiple of 'global_batch_size': a state resumed
    # into a loader of another batch size continues at its next block, so the states
    # taken after that count blocks of both sizes.


def check_packed_state(
    state: Any,
    dataset: Any,
    settings: LoaderSettings,
    blocks_in_epoch: Callable[[int, int], float],
) -> Position:
    """Checks a packed or mixed loader state against ``dataset`` (its fingerprint, the
    loader's seed, the blocks of the state's epoch: ``blocks_in_epoch(epoch, seed)``) and
    returns its position.

    Raises:
        ValueError: the state is malformed, or was taken over another corpus, packing or
            seed (continuing would not visit each block exactly once).
    """
    check_packed_fields(state)
    check_fingerprint(state["fingerprint"], dataset.fingerprint())
    seed = settings.seed(dataset.seed)
    if state["seed"] != seed:
        raise ValueError(
            f"loader state was taken with seed {state['seed']}, this loader shuffles with "
            f"{seed}; pass the same generator seed to resume the same order"
        )
    num_blocks = blocks_in_epoch(state["epoch"], seed)
    if state["samples_consumed"] > num_blocks:
        raise ValueError(
            f"loader state: 'samples_consumed' ({state['samples_consumed']}) is beyond the "
            f"{num_blocks} blocks of epoch {state['epoch']}"
        )
    return {"epoch": state["epoch"], "samples_consumed": state["samples_consumed"]}


class PackedEpoch:
    """One pass of a DataLoader over a PackedDataset.

    The epoch's blocks, in (seed, epoch)-shuffled order, are cut into *global* batches of
    ``batch_size * world_size`` blocks; this rank takes its ``batch_size`` slice of each.
    The global order does not depend on the world size, and a global batch that would be
    incomplete at the end of the epoch is left out (fewer than ``batch_size *
    world_size`` blocks per epoch, a different set each epoch).
    """

    def __init__(
        self, dataset: PackedDataset, settings: LoaderSettings, start: EpochStart
    ) -> None:
        self._dataset = dataset
        self._pin = start.pin
        # Batches per native job. Pinned batches keep one job each: their tensors come
        # from torch's caching host allocator block by block (see arrowloader.buffers).
        self.group = 1 if start.pin else GROUP_BATCHES
        # Pageable blocks are reused once no batch refers to them: room for the jobs the
        # loader keeps in flight, the one being consumed and one more.
        self._blocks = BlockPool(settings.prefetch_factor * settings.threads + 2)
        self._batch_size = settings.batch_size
        self._rank, self._world_size = dataset.rank, dataset.world_size
        self._global = self._batch_size * self._world_size
        self.seed = settings.seed(dataset.seed)
        self.epoch, resumed = pass_epoch(
            dataset._pinned_epoch, start, lambda position: position["samples_consumed"] > 0
        )
        self._plan = dataset.plan(self.epoch, self.seed)
        num_blocks = self._plan.num_blocks
        self._order = (
            dataset.block_order(self.epoch, self.seed, num_blocks)
            if settings.stock_shuffle()
            else np.arange(num_blocks, dtype=np.int64)
        )
        # Blocks, not batches: a state resumes at its next block whatever the batch size.
        resume = 0 if resumed is None else resumed["samples_consumed"]
        self.samples_consumed = resume  # blocks of global batches already yielded
        self._next = resume  # start of the next global batch to submit
        self._end = resume + (num_blocks - resume) // self._global * self._global
        self.position: Position = {"epoch": self.epoch, "samples_consumed": resume}
        self._ended = False  # the loader was told this epoch is over
        if resume == 0 and 0 < num_blocks < self._global:
            self._no_batch(num_blocks, settings.batch_size)
        # Start of the next global batch whose pages to prefetch (prefetch_pages only).
        self._prefetched = resume

    def _no_batch(self, num_blocks: int, batch_size: int) -> None:
        """An epoch of blocks, none of them in a batch: a concat epoch, as long as every
        other, can only be a mistake (raise); a bestfit epoch may differ from the next
        by a few blocks (warn)."""
        dataset = self._dataset
        what = (
            f"epoch {self.epoch} packs into {plural(num_blocks, 'block')} of "
            f"{dataset.block_len} tokens, fewer than one global batch of {self._global} "
            f"(batch_size={batch_size} x world_size={self._world_size}), so all "
            f"{num_blocks} are dropped"
        )
        largest = num_blocks // self._world_size
        fix = (
            f"Use batch_size <= {largest}, a shorter seq_len or a larger corpus."
            if largest else "Use a shorter seq_len or a larger corpus."
        )
        if dataset.mode == "concat":
            raise ValueError(
                f"PackedDataset: no epoch of this DataLoader yields a batch: {what} (every "
                f"concat epoch packs as many). {fix}"
            )
        warn_empty_epoch(f"{what} (bestfit epochs differ by a few blocks). {fix}")

    def __len__(self) -> int:
        return (self._end - self.samples_consumed) // self._global

    def _end_epoch(self) -> None:
        """The loader's next pass starts the next epoch (unless the dataset is pinned)."""
        self._ended = True
        self.position = {"epoch": self.epoch + 1, "samples_consumed": 0}

    def exhausted(self) -> None:
        if not self._ended and self.samples_consumed >= self._end:
            self._end_epoch()

    def submit(self, pool: Any) -> Optional[NativeJob]:
        if self._next >= self._end:
            if self.samples_consumed >= self._end and not self._ended:
                # Nothing of this epoch is left to deliver (e.g. resumed with a larger
                # global batch than fits in its rest): it is over, and the next iterator
                # must start the next epoch, not this one again.
                self._end_epoch()
            return None
        # Up to `group` batches in one native job: fewer submissions, allocations and
        # thread wake-ups per batch (see GROUP_BATCHES).
        count = min(self.group, (self._end - self._next) // self._global)
        size = self._batch_size
        if self._dataset.prefetch_pages:
            self._prefetch_pages(count)
        # This rank's slice of each of `count` global batches (a view at world size 1).
        span = self._order[self._next : self._next + count * self._global]
        mine = slice(self._rank * size, (self._rank + 1) * size)
        blocks = span.reshape(count, self._global)[:, mine].reshape(-1)
        self._next += count * self._global
        batches, outputs = self._dataset._allocate_group(size, count, self._pin, self._blocks)
        ticket = self._dataset._assembler.submit(
            pool, self._plan, blocks, *outputs, batches=count
        )
        return NativeJob(ticket, batches)

    def _prefetch_pages(self, queued: int) -> None:
        """Asks the kernel for the pages of this rank's batches up to
        :data:`PREFETCH_BATCHES` global batches ahead of the next one to queue (at most
        :data:`PREFETCH_RAMP` more per batch just queued, ``queued`` of them)."""
        self._prefetched = max(self._prefetched, self._next)
        ahead = min(
            self._end,
            self._next + PREFETCH_BATCHES * self._global,
            self._prefetched + PREFETCH_RAMP * queued * self._global,
        )
        assembler, plan = self._dataset._assembler, self._plan
        while self._prefetched < ahead:
            begin = self._prefetched + self._rank * self._batch_size
            assembler.prefetch(plan, self._order[begin : begin + self._batch_size])
            self._prefetched += self._global

    def finish(self, job: NativeJob, index: int, figures: BatchFigures) -> Batch:
        self.samples_consumed += self._global
        if self.samples_consumed >= self._end:
            self._end_epoch()
        else:
            self.position = {"epoch": self.epoch, "samples_consumed": self.samples_consumed}
        return self._dataset._finish(job.batches[index], figures)
