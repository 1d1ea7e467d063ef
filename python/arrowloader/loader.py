"""DataLoader: torch's DataLoader, with a native path for arrowloader datasets."""

from __future__ import annotations

import math
import os
import warnings
from collections import deque
from typing import Any, Callable, Optional, Protocol

import torch
import torch.utils.data

from arrowloader import _C
from arrowloader.dataset import (
    Batch,
    TokenDataset,
    check_fingerprint,
    check_token_state,
    sampling_generators,
)
from arrowloader.errors import LoaderClosedError
from arrowloader.metrics import FeedCounter, FeedMetrics
from arrowloader.mixed import MixedDataset
from arrowloader.packed import PackedDataset, native_packed_shuffle

# Datasets whose native path is planned by (seed, epoch) and resumable by state_dict().
_PACKED_KINDS = (PackedDataset, MixedDataset)

#: Version tag of DataLoader.state_dict().
STATE_FORMAT = "arrowloader.DataLoader/1"
#: What DataLoader.state_dict() holds.
STATE_KEYS = ("format", "fingerprint", "seed", "epoch", "samples_consumed", "global_batch_size")

#: Native threads used when ``num_workers=0`` on the native path.
MAX_DEFAULT_THREADS = 4


def default_num_threads() -> int:
    """Native assembly threads for ``num_workers=0``: one per usable core, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


def check_files(dataset: Any) -> None:
    """Raises CorpusChangedError if a file of an arrowloader dataset changed since it was
    opened; other datasets pass."""
    if isinstance(dataset, (TokenDataset, *_PACKED_KINDS)):
        dataset.check_files()


class NativeEpoch(Protocol):
    """One pass of a dataset's native path, as its ``_native_epoch()`` returns it."""

    def __len__(self) -> int:
        """Batches of the epoch."""

    #: Batches one ``submit()`` may queue at most (default 1).
    group: int

    def submit(
        self, pool: Any
    ) -> Optional[list[tuple[Any, int, Batch, Callable[[Batch, tuple], Batch]]]]:
        """Queues the next job on ``pool``, one or more (at most :attr:`group`) batches in
        order: returns ``(ticket, j, batch, finish)`` for each, where ``finish(batch,
        ticket.result(timeout, j))`` gives the batch to yield; None at the end."""

    def exhausted(self) -> None:
        """Called once every batch of the epoch was delivered."""


class DataLoader(torch.utils.data.DataLoader):
    """A drop-in ``torch.utils.data.DataLoader``.

    Takes the same arguments. For a :class:`TokenDataset` with automatic batching and no
    custom ``collate_fn`` (or ``collate_fn=dataset.collate``) it takes the *native path*:
    batch indices come from the very sampler / batch sampler torch would build (so with
    the same ``generator`` the batches equal ``torch.utils.data.DataLoader(ds, ...,
    collate_fn=ds.collate)``), and whole batches are gathered, truncated and padded by
    native threads straight into the output tensors, with the GIL released. Every other
    dataset or configuration behaves exactly as torch's DataLoader.

    On the native path:

    - ``num_workers`` is the number of native threads (not processes); ``0`` picks one
      per usable core, at most 4 (:func:`default_num_threads`).
    - ``prefetch_factor`` (default 2) jobs per thread are kept in flight. Without
      pinning a job is up to 4 consecutive batches
      (:data:`arrowloader.dataset.GROUP_BATCHES`; a packed job's batches share one
      allocation), with pinning one batch.
    - ``pin_memory=True`` allocates the outputs in pinned memory when CUDA is available,
      so no second copy is made (see :mod:`arrowloader.buffers` for why a pinned batch is
      never rewritten while a copy to the device may still read it).
    - ``timeout`` (seconds, 0 = forever) bounds the wait for one batch and raises
      :class:`LoaderTimeoutError`.
    - ``worker_init_fn``, ``multiprocessing_context`` and ``persistent_workers`` have no
      effect (no worker processes exist); ``in_order`` is always honoured.
    - :meth:`metrics` counts how long the consumer waited for batches.

    ``loader.to("cuda")`` wraps the loader in a :class:`arrowloader.CUDAPrefetcher`.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: Optional[int] = 1,
        shuffle: Optional[bool] = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int = 0,
        collate_fn: Optional[Callable] = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Optional[Callable] = None,
        multiprocessing_context: Any = None,
        generator: Optional[torch.Generator] = None,
        *,
        prefetch_factor: Optional[int] = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
    ) -> None:
        self._custom_collate_fn = collate_fn
        if (
            collate_fn is None
            and isinstance(dataset, (TokenDataset, *_PACKED_KINDS))
            and (batch_size is not None or batch_sampler is not None)
        ):
            # Off the native path (e.g. a custom sampler over a packed dataset) torch's
            # default collate would drop cu_seqlens; the dataset's own gives the native
            # path's batches.
            collate_fn = dataset.collate
        self._native_iterators = 0
        self._resume: Optional[dict[str, Any]] = None  # a loaded state for the next iterator
        self._position: Optional[dict[str, Any]] = None  # of the latest packed iterator
        self._feed = FeedCounter()
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            drop_last=drop_last,
            timeout=timeout,
            worker_init_fn=worker_init_fn,
            multiprocessing_context=multiprocessing_context,
            generator=generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            in_order=in_order,
        )

    @property
    def native(self) -> bool:
        """Whether iteration takes the native path (see the class docstring)."""
        dataset = self.dataset
        if self.batch_sampler is None or not (
            self._custom_collate_fn is None or self._custom_collate_fn == dataset.collate
        ):
            return False
        if isinstance(dataset, TokenDataset):
            return True
        return isinstance(dataset, _PACKED_KINDS) and native_packed_shuffle(self) is not None

    def check_worker_number_rationality(self) -> None:
        # torch warns when worker processes outnumber cores; native threads are not
        # processes and num_workers=0 already picks a count that fits the machine.
        if not self.native:
            super().check_worker_number_rationality()

    def __len__(self) -> int:
        if self.native and isinstance(self.dataset, MixedDataset):
            return len(self.dataset) // (self.batch_size * self.dataset.world_size)
        if self.native and isinstance(self.dataset, PackedDataset):
            dataset = self.dataset
            blocks = (
                len(dataset)
                if dataset.mode == "concat"
                else dataset.plan(dataset.epoch, self._packed_seed()).num_blocks
            )
            return blocks // (self.batch_size * dataset.world_size)
        return super().__len__()

    def __iter__(self):
        # Every epoch starts by checking that the files are still the ones opened.
        check_files(self.dataset)
        if self.native:
            # torch's persistent-worker iterator draws its base seed once, when first
            # made, and none on later epochs: the generator must advance the same way.
            reused = self.persistent_workers and self.num_workers > 0 and self._native_iterators
            self._native_iterators += 1
            return NativeBatchIterator(self, first_iterator=not reused)
        return super().__iter__()

    def metrics(self) -> FeedMetrics:
        """How long the consumer waited for batches, how many it got and their bytes, over
        every native-path iterator since the loader was made or :meth:`reset_metrics`
        (see :class:`arrowloader.metrics.FeedMetrics`; ``copy_seconds`` stays 0: the
        loader copies nothing to a device, a :class:`CUDAPrefetcher` does).

        Off the native path torch's own iterators run and nothing is counted; wrap the
        loader in a CUDAPrefetcher, whose metrics count any loader.
        """
        return self._feed.metrics()

    def reset_metrics(self) -> None:
        """Zeroes the counters of :meth:`metrics`."""
        self._feed.reset()

    def to(self, device: Any = "cuda", depth: int = 2) -> Any:
        """This loader's batches on ``device``: a :class:`arrowloader.CUDAPrefetcher`
        (``depth`` batches copied ahead on a side stream).

        For a CUDA device, with CUDA available, it also turns ``pin_memory`` on (from the
        next iterator), so batches are assembled straight into pinned memory and the copies
        are truly asynchronous.
        """
        from arrowloader.prefetch import CUDAPrefetcher

        prefetcher = CUDAPrefetcher(self, device=device, depth=depth)
        if prefetcher.copies:
            self.pin_memory = True
        return prefetcher

    # Resumption (packed datasets). The position of a run is (epoch, blocks of global
    # batches already delivered); the global order depends on (seed, epoch) alone, so a
    # fresh loader, with any thread count or world size, continues where it stopped.

    def _packed_seed(self) -> int:
        return self.dataset.seed if self.generator is None else self.generator.initial_seed()

    def state_dict(self) -> dict[str, Any]:
        """Where this loader is: load it into a fresh loader over the same dataset to
        continue with exactly the batches this one would have produced next.

        "Where" counts the batches this loader's iterators returned; behind a
        :class:`CUDAPrefetcher`, take the prefetcher's ``state_dict()``, which counts the
        batches it handed to the training loop, not those it fetched ahead.

        For a TokenDataset the state holds the random generators' states at the start of
        the epoch and the batches delivered since (torch's samplers draw an epoch's order
        from them); for packed and mixed datasets, the epoch and the blocks delivered (a
        mixed one also each dataset's epoch, "source_epochs", so that resuming packs none of
        the epochs before).
        """
        return self._state_at(self._position)

    def _snapshot(self) -> Optional[dict[str, Any]]:
        """The loader's record of its position now, cheap to take after every batch (a
        CUDAPrefetcher does so, to report the state at the batch its consumer is at):
        :meth:`_state_at` turns it into a ``state_dict()``. The record is never changed in
        place, so holding it is enough."""
        return self._position

    def _rewind(self, position: Optional[dict[str, Any]]) -> None:
        """Puts the loader's record back to ``position`` (from :meth:`_snapshot`), as if the
        batches returned after it had never been: a CUDAPrefetcher whose consumer stops
        early calls this for the batches it fetched ahead, so that ``state_dict()`` and the
        next iterator (a mixed dataset continues its stream; a packed epoch that the
        prefetcher finished but the consumer did not is not over) match a loader used
        without it."""
        self._position = position
        if position is not None and isinstance(self.dataset, PackedDataset):
            self.dataset.set_epoch(position["epoch"])

    def _state_at(self, position: Optional[dict[str, Any]]) -> dict[str, Any]:
        """The ``state_dict()`` of the record ``position`` (see :meth:`_snapshot`)."""
        dataset = self.dataset
        if self.native and isinstance(dataset, TokenDataset):
            position = position or {
                "generator_states": [g.get_state() for g in sampling_generators(self)],
                "draws_base_seed": not self._native_iterators
                or not (self.persistent_workers and self.num_workers > 0),
                "batches": 0,
            }
            return {"format": STATE_FORMAT, "fingerprint": dataset.fingerprint(), **position}
        if not (self.native and isinstance(dataset, _PACKED_KINDS)):
            raise NotImplementedError(
                "state_dict() is available on the native path (TokenDataset, PackedDataset, "
                "MixedDataset)"
            )
        position = position or {
            "epoch": getattr(dataset, "epoch", 0),
            "samples_consumed": 0,
        }
        state = {
            "format": STATE_FORMAT,
            "fingerprint": dataset.fingerprint(),
            "seed": self._packed_seed(),
            "epoch": position["epoch"],
            "samples_consumed": position["samples_consumed"],
            "global_batch_size": self.batch_size * dataset.world_size,
        }
        if "source_epochs" in position:  # MixedDataset: where each dataset's epochs are
            state["source_epochs"] = position["source_epochs"]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Makes the next iterator continue from ``state`` (see :meth:`state_dict`).

        Raises:
            ValueError: the state is malformed, or was taken over another corpus, packing
                or seed (continuing would not visit each block exactly once).
            CorpusChangedError: a file of the dataset changed since it was opened.
        """
        dataset = self.dataset
        check_files(dataset)
        if self.native and isinstance(dataset, TokenDataset):
            try:
                num_batches: Optional[int] = len(self)
            except TypeError:  # a sampler without a length
                num_batches = None
            self._resume = check_token_state(
                state, dataset, sampling_generators(self), num_batches
            )
            self._position = dict(self._resume)
            return
        if not (self.native and isinstance(dataset, _PACKED_KINDS)):
            raise NotImplementedError(
                "load_state_dict() is available on the native path (TokenDataset, "
                "PackedDataset, MixedDataset)"
            )
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not an arrowloader DataLoader state (format {STATE_FORMAT!r})")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"loader state: missing {', '.join(map(repr, missing))}")
        for key in ("epoch", "samples_consumed", "seed", "global_batch_size"):
            value = state[key]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise ValueError(
                    f"loader state: {key!r} must be a non-negative int64, got {value!r}"
                )
        if state["global_batch_size"] < 1:
            raise ValueError("loader state: 'global_batch_size' must be positive")
        if state["samples_consumed"] % state["global_batch_size"]:
            raise ValueError(
                f"loader state: 'samples_consumed' ({state['samples_consumed']}) is not a "
                f"multiple of 'global_batch_size' ({state['global_batch_size']})"
            )
        check_fingerprint(state["fingerprint"], dataset.fingerprint())
        if state["seed"] != self._packed_seed():
            raise ValueError(
                f"loader state was taken with seed {state['seed']}, this loader shuffles with "
                f"{self._packed_seed()}; pass the same generator seed to resume the same order"
            )
        num_blocks = (
            math.inf
            if isinstance(dataset, MixedDataset)  # one stream over all passes
            else dataset.plan(state["epoch"], state["seed"]).num_blocks
        )
        if state["samples_consumed"] > num_blocks:
            raise ValueError(
                f"loader state: 'samples_consumed' ({state['samples_consumed']}) is beyond the "
                f"{num_blocks} blocks of epoch {state['epoch']}"
            )
        mixed_epochs = isinstance(dataset, MixedDataset) and "source_epochs" in state
        if mixed_epochs:
            dataset.check_source_epochs(state["source_epochs"])
        if isinstance(dataset, PackedDataset):
            dataset.set_epoch(state["epoch"])
        self._resume = dict(state)
        self._position = {"epoch": state["epoch"], "samples_consumed": state["samples_consumed"]}
        if mixed_epochs:
            self._position["source_epochs"] = state["source_epochs"]

    def _take_resume(self) -> Optional[dict[str, Any]]:
        """The loaded state the iterator now starting continues from (once), or None."""
        resume, self._resume = self._resume, None
        return resume

    def _progress(self, position: dict[str, Any]) -> None:
        """Records where the run is, as each native batch is delivered."""
        self._position = position


# Shutdown protocol of NativeBatchIterator (the one place it is written down):
#
# - The iterator owns a _C.ThreadPool and a deque of batches in flight, each with the
#   Ticket of its native job. A Ticket keeps its batch's output arrays alive and, when
#   destroyed, cancels its job or waits for it, so native threads never write into freed
#   memory.
# - close() cancels every ticket, then shuts the pool down (queued jobs are cancelled,
#   running ones finish, threads are joined). It is idempotent and is called on
#   exhaustion, on an error, by __exit__ and by __del__, so breaking out of a loop,
#   deleting the loader or an exception in the loop body all end the threads.
# - Native threads never take the GIL, so close() holding it cannot deadlock; at
#   interpreter exit an iterator still alive is closed by __del__ or, if never
#   collected, its idle threads end with the process.
# - Nothing the iterator owns refers back to it (no reference cycle), so dropping the
#   last reference closes it at once, without waiting for the cyclic collector.
class NativeBatchIterator:
    """Iterates a :class:`DataLoader` on the native path (see the shutdown protocol above).

    What to assemble comes from the dataset's *native epoch* (``_native_epoch()``); this
    class only keeps batches in flight, hands errors to the consumer and shuts down.
    """

    def __init__(self, loader: DataLoader, first_iterator: bool = True) -> None:
        self._closed = True  # until the pool exists, __del__ has nothing to do
        self._threads = loader.num_workers or default_num_threads()
        self._timeout = loader.timeout if loader.timeout > 0 else None
        pin = bool(loader.pin_memory) and torch.cuda.is_available()
        if loader.pin_memory and not pin:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=3,
            )
        self._epoch: NativeEpoch = loader.dataset._native_epoch(loader, pin, first_iterator)
        # Jobs in flight: prefetch_factor per thread, each of up to `group` batches; a new
        # job is queued once a whole one fits.
        self._group = getattr(self._epoch, "group", 1)
        self._depth = max(1, (loader.prefetch_factor or 2) * self._threads) * self._group
        self._feed = loader._feed
        self._inflight: deque = deque()
        self._submitted_all = False  # the epoch has no batch left to queue
        self._exhausted = False  # ... and every batch was delivered
        self._pool = _C.ThreadPool(self._threads, "arrowloader")
        self._closed = False

    def __iter__(self) -> NativeBatchIterator:
        return self

    def __len__(self) -> int:
        return len(self._epoch)

    def __next__(self) -> Batch:
        if self._closed:
            if self._exhausted:
                raise StopIteration
            raise LoaderClosedError("this DataLoader iterator was closed")
        asked = self._feed.asked()
        try:
            self._fill()
            if not self._inflight:
                self._exhausted = True  # every batch was delivered
                self.close()
                self._epoch.exhausted()
                self._feed.handed(asked)
                raise StopIteration
            ticket, index, batch, finish = self._inflight.popleft()
            self._fill()  # keep the threads busy while this batch is finished and consumed
            # Raises the batch's native error (or LoaderTimeoutError) in this thread.
            batch = finish(batch, ticket.result(self._timeout, index))
            self._feed.handed(asked, batch)
            return batch
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        while not self._submitted_all and len(self._inflight) + self._group <= self._depth:
            submitted = self._epoch.submit(self._pool)
            if submitted is None:
                self._submitted_all = True
                break
            self._inflight.extend(submitted)

    def close(self) -> None:
        """Cancels batches in flight and joins the native threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._inflight:
            ticket = self._inflight.popleft()[0]
            ticket.cancel()
        self._pool.shutdown()

    def __enter__(self) -> NativeBatchIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
