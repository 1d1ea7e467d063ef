"""DataLoader: torch's DataLoader, with a native path for datasets that implement
:class:`arrowloader.native.NativeDataset`."""

from __future__ import annotations

import warnings
import weakref
from collections import deque
from typing import Any, Callable, Optional, TypeVar

import torch
import torch.utils.data

from arrowloader import _C
from arrowloader.batch_plans import LengthGroupedBatchSampler
from arrowloader.errors import LoaderClosedError, NotNativeError
from arrowloader.metrics import FeedCounter, FeedMetrics
from arrowloader.native import (
    STATE_FORMAT,
    Batch,
    EpochStart,
    LoaderSettings,
    NativeDataset,
    NativeEpoch,
    NativeJob,
    Position,
    default_num_threads,
    usable_cores,
)

T_co = TypeVar("T_co", covariant=True)


def check_files(dataset: Any) -> None:
    """Raises CorpusChangedError if a file of a native-path dataset changed since it was
    opened; other datasets pass."""
    if isinstance(dataset, NativeDataset):
        dataset.check_files()


class DataLoader(torch.utils.data.DataLoader[T_co]):
    """A drop-in ``torch.utils.data.DataLoader``.

    Takes the same arguments. For a dataset that implements the native-path contract
    (:class:`arrowloader.native.NativeDataset`: :class:`TokenDataset`,
    :class:`PackedDataset`, :class:`MixedDataset`), with automatic batching, no custom
    ``collate_fn`` (or ``collate_fn=dataset.collate``) and a configuration the dataset
    supports, it takes the *native path*: whole batches are assembled by native threads
    straight into the output tensors, with the GIL released, equal to
    ``torch.utils.data.DataLoader(ds, ..., collate_fn=ds.collate)`` given the same sampler
    or generator (a TokenDataset follows the loader's own (batch) sampler; packed and
    mixed datasets plan their own order from the seed). Every other dataset or
    configuration behaves exactly as torch's DataLoader.

    On the native path:

    - ``num_workers`` is the number of native threads (not processes); ``0`` picks one
      per usable core, at most 4 (:func:`default_num_threads`).
    - ``prefetch_factor`` (default 2) jobs per thread are kept in flight. Without
      pinning a job is up to 4 consecutive batches
      (:data:`arrowloader.native.GROUP_BATCHES`; a packed job's batches share one
      allocation), with pinning one batch.
    - ``pin_memory=True`` allocates the outputs in pinned memory when CUDA is available,
      so no second copy is made (see :mod:`arrowloader.buffers` for why a pinned batch is
      never rewritten while a copy to the device may still read it).
    - ``timeout`` (seconds, 0 = forever) bounds the wait for one batch and raises
      :class:`LoaderTimeoutError`.
    - ``worker_init_fn``, ``multiprocessing_context`` and ``persistent_workers`` have no
      effect (no worker processes exist; a ``worker_init_fn`` is warned about);
      ``in_order`` is always honoured. More threads than usable cores are warned about,
      as torch warns about worker processes.
    - :meth:`metrics` counts how long the consumer waited for batches.

    ``batch_transform`` (keyword only, not one of torch's arguments): a function applied
    to every batch after it is made, on either path (on the native path in the consuming
    thread, once the native threads are done with the batch; on torch's, after its
    collate, in the worker processes if there are any). It keeps the native path where a
    custom ``collate_fn`` would leave it: use it to rename keys, add tensors or move
    some to another dtype.

    ``group_by_length`` (keyword only, not one of torch's arguments; Hugging Face's
    ``TrainingArguments.group_by_length``): batches of ``batch_size`` documents of similar
    length, shuffled every epoch if ``shuffle``: the loader's batch sampler becomes a
    :class:`arrowloader.LengthGroupedBatchSampler` over the dataset, seeded with the
    ``generator``'s ``initial_seed()`` (else 0) and split between ranks like the dataset.
    It needs ``batch_size`` and neither ``sampler`` nor ``batch_sampler``. For variable
    batch sizes under a token budget pass
    ``batch_sampler=arrowloader.TokenBudgetBatchSampler(ds, max_tokens=...)``.

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
        batch_transform: Optional[Callable[[Any], Any]] = None,
        group_by_length: bool = False,
    ) -> None:
        if group_by_length:
            batch_sampler = length_grouped(
                dataset, batch_size, shuffle, sampler, batch_sampler, drop_last, generator
            )
            batch_size, shuffle, drop_last = 1, None, False  # torch's rule with a batch_sampler
        self._custom_collate_fn = collate_fn
        self.batch_transform = batch_transform
        if (
            collate_fn is None
            and isinstance(dataset, NativeDataset)
            and (batch_size is not None or batch_sampler is not None)
        ):
            # Off the native path (e.g. a custom sampler over a packed dataset) torch's
            # default collate would drop cu_seqlens; the dataset's own gives the native
            # path's batches.
            collate_fn = dataset.collate
        if batch_transform is not None:
            # Off the native path the transform runs where torch collates (in the worker
            # processes, if any); on it, in NativeBatchIterator.
            collate_fn = TransformedCollate(
                collate_fn or torch.utils.data.default_collate, batch_transform
            )
        self._native_iterators = 0
        self._resume: Optional[Position] = None  # a loaded state's, for the next iterator
        self._position: Optional[Position] = None  # after the latest batch delivered
        self._feed = FeedCounter()
        self._warned_accelerate = False
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
        if self.native:
            self.state_dict = LoaderMethod(self, "_native_state_dict")
            self.load_state_dict = LoaderMethod(self, "_native_load_state_dict")

    @property
    def native(self) -> bool:
        """Whether iteration takes the native path (see the class docstring)."""
        dataset = self.dataset
        if self.batch_sampler is None or not isinstance(dataset, NativeDataset):
            return False
        if not (self._custom_collate_fn is None or self._custom_collate_fn == dataset.collate):
            return False
        return dataset.native_supported(self.native_settings())

    @property
    def _is_accelerate_prepared(self) -> bool:
        """False: this loader has not been prepared by an ``accelerate.Accelerator``.

        ``Accelerator.prepare_data_loader`` reads this attribute first, and rebuilds a
        loader whose value is false as accelerate's own, which runs torch's path over the
        dataset. That is the one moment a native loader is about to lose its native path
        without a word, so reading the attribute of a loader on the native path warns,
        once per loader, naming the adapter that keeps it.
        """
        if self.native and not self._warned_accelerate:
            self._warned_accelerate = True
            warnings.warn(
                "accelerator.prepare() rebuilds this arrowloader.DataLoader as accelerate's "
                "own loader, which assembles batches in Python over the dataset: the native "
                "path is lost (and with it arrowloader's resumption). Use "
                "arrowloader.integrations.accelerate.prepare(accelerator, loader) instead: "
                "same process split, device placement and save_state/load_state, native "
                "path kept.",
                UserWarning,
                stacklevel=3,
            )
        return False

    def native_settings(self) -> LoaderSettings:
        """What this loader tells a native-path dataset about the passes it wants."""
        persistent = bool(self.persistent_workers and self.num_workers > 0)
        return LoaderSettings(
            batch_sampler=self.batch_sampler,
            batch_size=self.batch_size,
            generator=self.generator,
            threads=self.num_workers or default_num_threads(),
            prefetch_factor=self.prefetch_factor or 2,
            persistent_workers=persistent,
            # torch's persistent-worker iterator draws its base seed once, when first made,
            # and none on later epochs: sampler-driven orders must advance the same way.
            first_iterator=not (persistent and self._native_iterators),
            drop_last=self.drop_last,
            position=self._position,
        )

    def check_worker_number_rationality(self) -> None:
        """Warns, as torch does for worker processes, when the native path would start
        more threads than this process has cores, and when it ignores a
        ``worker_init_fn`` (there are no worker processes to run it in)."""
        if not self.native:
            super().check_worker_number_rationality()
            return
        cores = usable_cores()
        if self.num_workers > cores:
            warnings.warn(
                f"num_workers={self.num_workers} starts {self.num_workers} native threads "
                f"(the native path runs threads, not processes), but this process may use "
                f"{cores} cores: the extra threads only compete with the training loop. "
                "Lower num_workers, or pass 0 for one thread per core (at most "
                f"{default_num_threads()} here).",
                UserWarning,
                stacklevel=4,
            )
        if self.worker_init_fn is not None:
            warnings.warn(
                "worker_init_fn is not called on the native path: it runs no worker "
                "processes (its native threads need no set-up). Seed or configure in the "
                "main process, or pass a collate_fn to use torch's worker processes.",
                UserWarning,
                stacklevel=4,
            )

    def __len__(self) -> int:
        if self.native:
            return self.dataset.native_num_batches(self.native_settings())
        return super().__len__()

    def __iter__(self):
        # Every epoch starts by checking that the files are still the ones opened.
        check_files(self.dataset)
        if self.native:
            iterator = NativeBatchIterator(self)
            self._native_iterators += 1
            return iterator
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

    # Resumption. The loader keeps the position its dataset's epochs report after every
    # batch (what a position holds is the dataset's; see arrowloader.native); a state is
    # the dataset's fields of it, beside the format tag and the dataset's fingerprint.

    # Off the native path a loader has no state_dict / load_state_dict at all, as torch's
    # has none: frameworks that look for them (Lightning's isinstance check against a
    # Protocol, which reads attributes statically; Accelerate; CUDAPrefetcher) then treat
    # it as torch's loader instead of failing when they checkpoint. On the native path
    # __init__ puts both on the instance (as LoaderMethods: no reference cycle; reading
    # one gives a bound method); reading either off it reaches __getattr__, which raises
    # NotNativeError (an AttributeError) saying why.

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if (name == "state_dict" or name == "load_state_dict") and isinstance(value, LoaderMethod):
            return value.bound()  # holds the loader while the caller holds the method
        return value

    def __getattr__(self, name: str) -> Any:
        if name in ("state_dict", "load_state_dict"):
            raise NotNativeError(_NOT_NATIVE.format(method=f"{name}()"))
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _native_state_dict(self) -> dict[str, Any]:
        """``state_dict()`` on the native path: where this loader is. Load it into a fresh
        loader over the same dataset to continue with exactly the batches this one would
        have produced next.

        "Where" counts the batches this loader's iterators returned; behind a
        :class:`CUDAPrefetcher`, take the prefetcher's ``state_dict()``, which counts the
        batches it handed to the training loop, not those it fetched ahead.

        For a TokenDataset the state holds the random generators' states at the start of
        the epoch and the samples delivered since (torch's samplers draw an epoch's order
        from them; split between ranks, the epoch and the samples of this rank's share),
        or with a length-grouped or token-budget batch sampler its options ("plan"), the
        epoch and the batches delivered; for packed and mixed datasets, the epoch and the
        blocks delivered (a mixed one also each dataset's epoch, "source_epochs", so that
        resuming packs none of the epochs before). The epoch is this loader's own count of
        its passes, unless the dataset's ``set_epoch`` pins it; a state loaded into a
        loader of another batch size continues at its next sample (see
        :mod:`arrowloader.native`).

        Raises:
            NotNativeError: the loader is not on the native path.
        """
        return self._state_at(self._position)

    def _snapshot(self) -> Optional[Position]:
        """The loader's record of its position now, cheap to take after every batch (a
        CUDAPrefetcher does so, to report the state at the batch its consumer is at):
        :meth:`_state_at` turns it into a ``state_dict()``. The record is never changed in
        place, so holding it is enough."""
        return self._position

    def _rewind(self, position: Optional[Position]) -> None:
        """Puts the loader's record back to ``position`` (from :meth:`_snapshot`), as if the
        batches returned after it had never been: a CUDAPrefetcher whose consumer stops
        early calls this for the batches it fetched ahead, so that ``state_dict()`` and the
        next iterator (a mixed dataset continues its stream; a packed epoch that the
        prefetcher finished but the consumer did not is not over) match a loader used
        without it."""
        self._position = position
        if self.native:
            self.dataset.native_rewound(position)

    def _state_at(self, position: Optional[Position]) -> dict[str, Any]:
        """The ``state_dict()`` of the record ``position`` (see :meth:`_snapshot`)."""
        if not self.native:
            raise NotNativeError(_NOT_NATIVE.format(method="state_dict()"))
        dataset = self.dataset
        fields = dataset.native_state(self.native_settings(), position)
        return {"format": STATE_FORMAT, "fingerprint": dataset.fingerprint(), **fields}

    def _native_load_state_dict(self, state: dict[str, Any]) -> None:
        """``load_state_dict(state)`` on the native path: makes the next iterator continue
        from ``state`` (see :meth:`state_dict`).

        Raises:
            ValueError: the state is malformed, or was taken over another corpus, packing
                or seed (continuing would not visit each block exactly once).
            CorpusChangedError: a file of the dataset changed since it was opened.
            NotNativeError: the loader is not on the native path.
        """
        check_files(self.dataset)
        if not self.native:
            raise NotNativeError(_NOT_NATIVE.format(method="load_state_dict()"))
        position = self.dataset.native_load_state(self.native_settings(), state)
        self._resume = position
        self._position = position


def length_grouped(
    dataset: Any,
    batch_size: Optional[int],
    shuffle: Optional[bool],
    sampler: Any,
    batch_sampler: Any,
    drop_last: bool,
    generator: Optional[torch.Generator],
) -> LengthGroupedBatchSampler:
    """The batch sampler of ``DataLoader(..., group_by_length=True)``.

    Raises:
        ValueError: the loader also got a sampler, a batch sampler or no batch size.
    """
    if sampler is not None or batch_sampler is not None:
        raise ValueError(
            "group_by_length=True chooses the batches itself: pass no sampler or "
            "batch_sampler (or pass batch_sampler=arrowloader.LengthGroupedBatchSampler(...) "
            "and leave group_by_length off)"
        )
    if batch_size is None:
        raise ValueError("group_by_length=True needs a batch_size")
    seed = 0 if generator is None else generator.initial_seed()
    return LengthGroupedBatchSampler(
        dataset, batch_size, shuffle=bool(shuffle), drop_last=drop_last, seed=seed
    )


class LoaderMethod:
    """A method of a DataLoader, kept on the loader itself without the reference cycle a
    bound method there would make (see DataLoader.__getattr__)."""

    def __init__(self, loader: DataLoader, name: str) -> None:
        self._loader = weakref.ref(loader)
        self._name = name
        self.__doc__ = getattr(type(loader), name).__doc__

    def bound(self) -> Callable[..., Any]:
        """The method, bound to the loader."""
        return getattr(self._loader(), self._name)


class TransformedCollate:
    """``transform(collate(items))``, picklable for torch's worker processes."""

    def __init__(self, collate: Callable[[Any], Any], transform: Callable[[Any], Any]) -> None:
        self.collate = collate
        self.transform = transform

    def __call__(self, items: Any) -> Any:
        return self.transform(self.collate(items))


_NOT_NATIVE = (
    "{method} is available on the native path: a dataset that implements "
    "arrowloader.native.NativeDataset (TokenDataset, PackedDataset, MixedDataset), with "
    "batch_size or batch_sampler, no custom collate_fn and a sampler it supports"
)


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

    What to assemble comes from the dataset's :class:`arrowloader.native.NativeEpoch`; this
    class only keeps batches in flight, records the epoch's position on the loader after
    every batch, hands errors to the consumer and shuts down.
    """

    def __init__(self, loader: DataLoader) -> None:
        self._closed = True  # until the pool exists, __del__ has nothing to do
        settings = loader.native_settings()
        self._timeout = loader.timeout if loader.timeout > 0 else None
        pin = bool(loader.pin_memory) and torch.cuda.is_available()
        if loader.pin_memory and not pin:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=3,
            )
        resume, loader._resume = loader._resume, None  # a loaded state is used once
        start = EpochStart(pin=pin, resume=resume, previous=loader._position)
        self._epoch: NativeEpoch = loader.dataset.native_epoch(settings, start)
        self._loader = loader
        loader._position = self._epoch.position
        # Jobs in flight: prefetch_factor per thread, each of up to `group` batches; a new
        # job is queued once a whole one fits.
        self._group = self._epoch.group
        self._depth = max(1, settings.prefetch_factor * settings.threads) * self._group
        self._feed = loader._feed
        self._transform = loader.batch_transform
        # (job, index of the batch in the job) per batch in flight, in order.
        self._inflight: deque[tuple[NativeJob, int]] = deque()
        self._submitted_all = False  # the epoch has no batch left to queue
        self._exhausted = False  # ... and every batch was delivered
        self._pool = _C.ThreadPool(settings.threads, "arrowloader")
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
                self._loader._position = self._epoch.position
                self._feed.handed(asked)
                raise StopIteration
            job, index = self._inflight.popleft()
            self._fill()  # keep the threads busy while this batch is finished and consumed
            # Raises the batch's native error (or LoaderTimeoutError) in this thread.
            figures = job.ticket.result(self._timeout, index)
            for also in job.extra_tickets:
                also.result(self._timeout, index)
            batch = self._epoch.finish(job, index, figures)
            self._loader._position = self._epoch.position
            if self._transform is not None:
                batch = self._transform(batch)
            self._feed.handed(asked, batch)
            return batch
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        while not self._submitted_all and len(self._inflight) + self._group <= self._depth:
            job = self._epoch.submit(self._pool)
            if job is None:
                self._submitted_all = True
                break
            self._inflight.extend((job, j) for j in range(len(job.batches)))

    def close(self) -> None:
        """Cancels batches in flight and joins the native threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._inflight:
            job, _ = self._inflight.popleft()
            job.ticket.cancel()
            for also in job.extra_tickets:
                also.cancel()
        self._pool.shutdown()

    def __enter__(self) -> NativeBatchIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
