"""CUDAPrefetcher: batches copied to the GPU on a side stream while the previous step runs.

How a batch travels (see also :mod:`arrowloader.buffers` for the pinned side):

1. The loader assembles batch ``k + depth`` into pinned host tensors.
2. The prefetcher issues its host-to-device copies with ``non_blocking=True`` on its own
   *copy stream*; device tensors are allocated there, and an event is recorded after the
   copies. The host does not wait for them.
3. When the training loop asks for batch ``k``, the stream current at that moment (the
   *compute stream*) is made to wait on batch ``k``'s event (a device-side wait: the host
   goes on), and every device tensor of the batch is marked with
   ``Tensor.record_stream(compute)``, so that torch's caching device allocator does not
   hand its memory to a later copy until the work queued on the compute stream up to
   then is done.
4. The host copy is safe to drop as soon as the copy is queued: torch records an event on
   the copy stream for every non-blocking copy out of its pinned allocator, and does not
   reuse that host block until the event completes.

So the copies of the next ``depth`` batches run while step ``k`` computes, and no
synchronisation with the host is ever needed.
"""

from __future__ import annotations

import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch

from arrowloader.metrics import FeedCounter, FeedMetrics, tensor_bytes

#: The prefetcher's record of where its consumer is, before any batch was handed over.
_UNSET = object()


@dataclass
class _Fetched:
    """A batch pulled from the loader, with its copies in flight."""

    batch: Any  # on the device (or the CPU batch itself without CUDA)
    position: Any  # the loader's record right after this batch came out of it
    nbytes: int  # bytes of its tensors
    moved: list[torch.Tensor] = field(default_factory=list)  # device tensors made by copies
    started: Optional[torch.cuda.Event] = None  # on the copy stream, before the copies
    ready: Optional[torch.cuda.Event] = None  # on the copy stream, after the copies


@dataclass
class _CopyTiming:
    """Events of a handed batch, read back once they completed."""

    started: torch.cuda.Event
    ready: torch.cuda.Event
    asked: torch.cuda.Event  # on the compute stream, where it started to wait
    nbytes: int


class CUDAPrefetcher:
    """Yields a loader's batches already on a CUDA device, copying ``depth`` batches ahead
    on a side stream so that the copies overlap the training step (see the module
    docstring for the stream and event protocol).

    Works with any iterable of batches: tensors, and dicts (any mapping), lists, tuples and
    named tuples of them, nested. Every tensor not yet on ``device`` is copied; other
    values (ints, strings, None, numpy arrays...) pass through unchanged. For asynchronous
    copies the host tensors must be pinned: build an :class:`arrowloader.DataLoader` with
    ``pin_memory=True`` (or use ``loader.to(device)``, which does so); pageable tensors are
    still copied correctly, but the copies block the host (a warning says so once).

    Without CUDA (or with ``device="cpu"``) it yields the loader's CPU batches unchanged;
    asking for a CUDA device then warns once, when the prefetcher is made.

    It forwards ``len()``, ``state_dict()``, ``load_state_dict()`` and ``set_epoch()`` to
    the loader where the loader has them. ``state_dict()`` is the loader's state at the
    batch the consumer last received, not at the batches fetched ahead, so a run resumed
    from it continues with exactly the next batch the training loop would have seen.
    One pass at a time: starting a new pass (``iter()``) closes the previous one, and a
    closed pass leaves an arrowloader DataLoader where its consumer stopped.

    Args:
        loader: an iterable of batches (e.g. an :class:`arrowloader.DataLoader`).
        device: the CUDA device, e.g. ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or
            ``"cpu"`` for none.
        depth: batches copied ahead of the one the consumer holds (>= 1). Each costs one
            batch of device memory.

    Raises:
        ValueError: ``depth`` < 1, or a device that is neither CUDA nor the CPU.
        TypeError: ``depth`` is not an int.
    """

    def __init__(
        self, loader: Iterable[Any], device: Union[str, torch.device] = "cuda", depth: int = 2
    ) -> None:
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise TypeError(f"depth must be an int, got {type(depth).__name__}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        device = torch.device(device)
        if device.type not in ("cuda", "cpu"):
            raise ValueError(
                f"CUDAPrefetcher copies to a CUDA device or none ('cpu'), got {device}"
            )
        self.loader = loader
        self.depth = depth
        #: Whether batches are copied to a CUDA device (False: CPU batches pass through).
        self.copies = device.type == "cuda" and torch.cuda.is_available()
        if device.type == "cuda" and not self.copies:
            warnings.warn(
                "CUDAPrefetcher: CUDA is not available, so batches stay on the CPU "
                "(yielded unchanged).",
                stacklevel=2,
            )
        if self.copies and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        #: Where the batches are yielded.
        self.device = device if self.copies else torch.device("cpu")
        self._stream: Optional[torch.cuda.Stream] = None
        self._feed = FeedCounter()
        self._timings: deque[_CopyTiming] = deque()
        self._position: Any = _UNSET  # the loader's record at the consumer's batch
        self._current: Optional[weakref.ref[_PrefetchIterator]] = None  # the latest pass
        self._warned_pageable = False

    # -- forwarding ---------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch: the loader's ``len()``."""
        if not hasattr(self.loader, "__len__"):
            raise TypeError(f"the wrapped {type(self.loader).__name__} has no len()")
        return len(self.loader)  # type: ignore[arg-type]

    def state_dict(self) -> Any:
        """The loader's state at the last batch this prefetcher handed over (before the
        first one: the loader's own ``state_dict()``).

        Raises:
            TypeError: the loader has no ``state_dict()``.
        """
        loader = self.loader
        if not callable(getattr(loader, "state_dict", None)):
            raise TypeError(f"the wrapped {type(loader).__name__} has no state_dict()")
        if self._position is _UNSET:
            return loader.state_dict()
        if callable(getattr(loader, "_state_at", None)):  # an arrowloader DataLoader
            return loader._state_at(self._position)
        return self._position

    def load_state_dict(self, state: Any) -> None:
        """Loads ``state`` into the loader; the next iterator continues from it.

        Raises:
            TypeError: the loader has no ``load_state_dict()``.
        """
        if not callable(getattr(self.loader, "load_state_dict", None)):
            raise TypeError(f"the wrapped {type(self.loader).__name__} has no load_state_dict()")
        self.loader.load_state_dict(state)
        self._position = _UNSET

    def set_epoch(self, epoch: int) -> None:
        """Calls ``set_epoch(epoch)`` on the loader if it has one, else on its ``dataset``
        and ``sampler`` that have one (a PackedDataset, a DistributedSampler). Call it
        between epochs: batches already fetched ahead are not fetched again.

        Raises:
            TypeError: none of them has ``set_epoch()``.
        """
        targets = [self.loader]
        if not callable(getattr(self.loader, "set_epoch", None)):
            targets = [
                target
                for target in (
                    getattr(self.loader, "dataset", None),
                    getattr(self.loader, "sampler", None),
                )
                if callable(getattr(target, "set_epoch", None))
            ]
        if not targets:
            raise TypeError(
                f"neither the wrapped {type(self.loader).__name__} nor its dataset or sampler "
                "has set_epoch()"
            )
        for target in targets:
            target.set_epoch(epoch)

    # -- metrics ------------------------------------------------------------------------

    def metrics(self) -> FeedMetrics:
        """How long the consumer waited in ``next()``, the batches and bytes handed over
        and, on CUDA, the copy time and bandwidth and how long the consumer's stream
        waited for copies, over every iterator since the prefetcher was made or
        :meth:`reset_metrics` (see :class:`arrowloader.metrics.FeedMetrics`). Device
        timings are read from events that have completed; the others are read later and
        counted in ``copies_pending`` meanwhile (this never waits for the device)."""
        self._read_timings()
        return self._feed.metrics()

    def reset_metrics(self) -> None:
        """Zeroes the counters of :meth:`metrics`."""
        self._feed.reset()
        self._timings.clear()

    def _read_timings(self) -> None:
        timings = self._timings
        while timings and timings[0].ready.query() and timings[0].asked.query():
            timing = timings.popleft()
            copy_ms = timing.started.elapsed_time(timing.ready)
            # The consumer's stream reached its wait at `asked`; it went on at `ready`.
            waited_ms = timing.asked.elapsed_time(timing.ready)
            self._feed.copied(timing.nbytes, copy_ms / 1e3, waited_ms / 1e3)
        self._feed.copies_pending(len(timings))

    # -- iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        if self.copies and self._stream is None:
            self._stream = torch.cuda.Stream(device=self.device)
        return _PrefetchIterator(self)

    def _take_position(self) -> Any:
        """The loader's record now: cheap for an arrowloader DataLoader, its
        ``state_dict()`` for other loaders that have one (taken after every batch), None
        for the rest."""
        loader = self.loader
        snapshot = getattr(loader, "_snapshot", None)
        if callable(snapshot):
            return snapshot()
        if callable(getattr(loader, "state_dict", None)):
            return loader.state_dict()
        return None

    def _fetch(self, batch: Any, position: Any) -> _Fetched:
        """A batch just pulled from the loader, its copies issued on the copy stream (see
        the module docstring); without copies, the batch itself."""
        stream = self._stream
        if stream is None:
            return _Fetched(batch, position, tensor_bytes(batch))
        moved: list[torch.Tensor] = []
        with torch.cuda.stream(stream):
            started = torch.cuda.Event(enable_timing=True)
            started.record(stream)
            on_device = self._move(batch, moved)
            ready = torch.cuda.Event(enable_timing=True)
            ready.record(stream)
        return _Fetched(on_device, position, tensor_bytes(on_device), moved, started, ready)

    def _move(self, value: Any, moved: list[torch.Tensor]) -> Any:
        """``value`` with every tensor not on the device copied there (non-blocking, on
        the current stream); containers rebuilt, other values as they are."""
        if isinstance(value, torch.Tensor):
            if value.device == self.device:
                return value
            if not self._warned_pageable and value.device.type == "cpu" and not value.is_pinned():
                self._warned_pageable = True
                warnings.warn(
                    "CUDAPrefetcher: a batch tensor is not in pinned memory, so its copy "
                    "blocks the host instead of overlapping compute; build the DataLoader "
                    "with pin_memory=True (or use loader.to(device)).",
                    stacklevel=2,
                )
            on_device = value.to(self.device, non_blocking=True)
            moved.append(on_device)
            return on_device
        if isinstance(value, Mapping):
            items = {key: self._move(item, moved) for key, item in value.items()}
            return items if type(value) is dict else _rebuild(value, items)
        if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
            return type(value)(*(self._move(item, moved) for item in value))
        if isinstance(value, (list, tuple)):
            items_list = [self._move(item, moved) for item in value]
            return items_list if type(value) is list else _rebuild(value, items_list)
        return value

    def _hand_over(self, fetched: _Fetched) -> Any:
        """Makes the consumer's current stream wait for ``fetched``'s copies and keeps its
        device memory from being reused before that stream is done with it."""
        if fetched.ready is None or fetched.started is None:  # nothing was copied
            return fetched.batch
        compute = torch.cuda.current_stream(self.device)
        asked = torch.cuda.Event(enable_timing=True)
        asked.record(compute)
        compute.wait_event(fetched.ready)
        for tensor in fetched.moved:
            tensor.record_stream(compute)
        self._timings.append(_CopyTiming(fetched.started, fetched.ready, asked, fetched.nbytes))
        self._read_timings()
        return fetched.batch


def _rebuild(original: Any, items: Any) -> Any:
    """A container of ``original``'s type holding ``items`` (a dict or a list), or the
    plain dict / list when that type cannot be built from them."""
    try:
        return type(original)(items)
    except TypeError:
        return items


# Shutdown of _PrefetchIterator: close() drops the batches fetched ahead and, for an
# arrowloader DataLoader, rewinds the loader's record to the batch the consumer last got
# (DataLoader._rewind), then closes the loader's iterator if it can be closed. It runs on
# exhaustion, on an error, by __exit__, by __del__ (breaking out of a for loop drops the
# iterator at once: the prefetcher holds only a weak reference to it) and when the
# prefetcher starts its next pass: one pass at a time, so that the loader's record is always
# that of the one consumer.
class _PrefetchIterator:
    """One pass of a :class:`CUDAPrefetcher` over its loader."""

    def __init__(self, owner: CUDAPrefetcher) -> None:
        self._closed = True  # until the loader's iterator exists, __del__ has nothing to do
        self._owner = owner
        previous = owner._current() if owner._current is not None else None
        if previous is not None:
            previous.close()  # one pass at a time: the loader's record is at its consumer's
        self._source = iter(owner.loader)
        # Batches of the pass when it began, where the loader's iterator knows them.
        self._length: Optional[int] = (
            len(self._source) if hasattr(self._source, "__len__") else None  # type: ignore[arg-type]
        )
        owner._current = weakref.ref(self)
        self._ahead: deque[_Fetched] = deque()
        self._exhausted = False
        self._error: Optional[BaseException] = None  # raised once the batches before it are out
        owner._position = owner._take_position()
        self._closed = False

    def __iter__(self) -> _PrefetchIterator:
        return self

    def __len__(self) -> int:
        """Batches of this pass when it began (the loader's iterator's ``len()``).

        Raises:
            TypeError: the loader's iterator has no ``len()``.
        """
        if self._length is None:
            raise TypeError(f"the {type(self._source).__name__} this pass reads has no len()")
        return self._length

    def __next__(self) -> Any:
        if self._closed:
            raise StopIteration
        owner = self._owner
        asked = owner._feed.asked()
        try:
            self._fill()
            if not self._ahead:
                owner._feed.handed(asked)
                self.close()
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopIteration
            fetched = self._ahead.popleft()
            owner._position = fetched.position
            self._fill()  # the next copies are queued before this step's work
            batch = owner._hand_over(fetched)
            owner._feed.handed(asked, batch, fetched.nbytes)
            return batch
        except BaseException:
            self.close()
            raise

    def _fill(self) -> None:
        owner = self._owner
        while not self._exhausted and len(self._ahead) < owner.depth:
            try:
                batch = next(self._source)
            except StopIteration:
                self._exhausted = True
                break
            except Exception as exc:  # delivered after the batches fetched before it
                self._exhausted = True
                self._error = exc
                break
            self._ahead.append(owner._fetch(batch, owner._take_position()))

    def close(self) -> None:
        """Drops the batches fetched ahead (rewinding an arrowloader DataLoader's record to
        the consumer's batch) and closes the loader's iterator. Idempotent."""
        if self._closed:
            return
        self._closed = True
        owner = self._owner
        if self._ahead:
            self._ahead.clear()
            rewind = getattr(owner.loader, "_rewind", None)
            if callable(rewind) and owner._position is not _UNSET:
                rewind(owner._position)
        close = getattr(self._source, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> _PrefetchIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
