"""DataLoader: torch's DataLoader, with a native path for arrowloader datasets."""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Iterator
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.utils.data

from arrowloader import _C
from arrowloader.dataset import _NUMPY_DTYPES, Batch, TokenDataset
from arrowloader.errors import LoaderClosedError
from arrowloader.plan import EpochPlan

#: Native threads used when ``num_workers=0`` on the native path.
MAX_DEFAULT_THREADS = 4


def default_num_threads() -> int:
    """Native assembly threads for ``num_workers=0``: one per usable core, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


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
    - ``prefetch_factor`` (default 2) batches per thread are kept in flight.
    - ``pin_memory=True`` allocates the outputs in pinned memory when CUDA is available,
      so no second copy is made.
    - ``timeout`` (seconds, 0 = forever) bounds the wait for one batch and raises
      :class:`LoaderTimeoutError`.
    - ``worker_init_fn``, ``multiprocessing_context`` and ``persistent_workers`` have no
      effect (no worker processes exist); ``in_order`` is always honoured.
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
        self._native_iterators = 0
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
        return (
            isinstance(dataset, TokenDataset)
            and self.batch_sampler is not None
            and (self._custom_collate_fn is None or self._custom_collate_fn == dataset.collate)
        )

    def check_worker_number_rationality(self) -> None:
        # torch warns when worker processes outnumber cores; native threads are not
        # processes and num_workers=0 already picks a count that fits the machine.
        if not self.native:
            super().check_worker_number_rationality()

    def __iter__(self):
        if self.native:
            # torch's persistent-worker iterator draws its base seed once, when first
            # made, and none on later epochs: the generator must advance the same way.
            reused = self.persistent_workers and self.num_workers > 0 and self._native_iterators
            self._native_iterators += 1
            return NativeBatchIterator(self, draw_base_seed=not reused)
        return super().__iter__()


# Shutdown protocol of NativeBatchIterator (the one place it is written down):
#
# - The iterator owns a _C.ThreadPool and a deque of (Ticket, batch) in flight. A Ticket
#   keeps its batch's output arrays alive and, when destroyed, cancels its job or waits
#   for it, so native threads never write into freed memory.
# - close() cancels every ticket, then shuts the pool down (queued jobs are cancelled,
#   running ones finish, threads are joined). It is idempotent and is called on
#   exhaustion, on an error, by __exit__ and by __del__, so breaking out of a loop,
#   deleting the loader or an exception in the loop body all end the threads.
# - Native threads never take the GIL, so close() holding it cannot deadlock; at
#   interpreter exit an iterator still alive is closed by __del__ or, if never
#   collected, its idle threads end with the process.
class NativeBatchIterator:
    """Iterates a :class:`DataLoader` on the native path (see the shutdown protocol above)."""

    def __init__(self, loader: DataLoader, draw_base_seed: bool = True) -> None:
        self._closed = True  # until the pool exists, __del__ has nothing to do
        dataset: TokenDataset = loader.dataset
        self._dataset = dataset
        self._assembler = dataset._assembler
        self._threads = loader.num_workers or default_num_threads()
        self._depth = max(1, (loader.prefetch_factor or 2) * self._threads)
        self._timeout = loader.timeout if loader.timeout > 0 else None
        self._pin = bool(loader.pin_memory) and torch.cuda.is_available()
        if loader.pin_memory and not self._pin:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=3,
            )
        self._length = len(loader)
        # The same draws, in the same order, as torch's _BaseDataLoaderIter: the sampler
        # iterator is created first (lazily), then the base seed is drawn.
        self._batches = self._batches_with_widths(self._assembler, EpochPlan(loader._index_sampler))
        if draw_base_seed:
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        self._inflight: deque = deque()
        self._exhausted = False
        self._pool = _C.ThreadPool(self._threads, "arrowloader")
        self._closed = False

    def __iter__(self) -> NativeBatchIterator:
        return self

    def __len__(self) -> int:
        return self._length

    def __next__(self) -> Batch:
        if self._closed:
            if self._exhausted:
                raise StopIteration
            raise LoaderClosedError("this DataLoader iterator was closed")
        try:
            self._fill()
            if not self._inflight:
                self._exhausted = True
                self.close()
                raise StopIteration
            ticket, batch = self._inflight.popleft()
            self._fill()  # keep the threads busy while this batch is finished and consumed
            # Raises the batch's native error (or LoaderTimeoutError) in this thread.
            self._dataset._truncated_in_batches += ticket.result(self._timeout)
            return batch
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _batches_with_widths(assembler: Any, plan: EpochPlan) -> Iterator[tuple[np.ndarray, int]]:
        """Yields (rows int64 [batch], padded width) for every batch of the epoch.

        A static method: a generator holding ``self`` would make a reference cycle, and
        ``del``/``break`` would leave the threads running until the cyclic collector ran.
        """
        order = plan.order()
        if order is None:
            for rows in plan:
                yield rows, assembler.width(rows)
            return
        widths = assembler.widths(order, plan.batch_size).tolist()
        for b, width in enumerate(widths):
            yield order[b * plan.batch_size : (b + 1) * plan.batch_size], width

    def _fill(self) -> None:
        while not self._exhausted and len(self._inflight) < self._depth:
            planned = next(self._batches, None)
            if planned is None:
                self._exhausted = True
                break
            self._inflight.append(self._submit(*planned))

    def _empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, Any]:
        """An output tensor and its numpy view for the native side. Pinned tensors come
        from torch's caching host allocator; pageable ones are allocated by numpy and
        shared with torch (same memory, about half the per-batch Python overhead)."""
        if self._pin:
            tensor = torch.empty(shape, dtype=dtype, pin_memory=True)
            return tensor, tensor.numpy()
        array = np.empty(shape, dtype=_NUMPY_DTYPES[dtype])
        return torch.from_numpy(array), array

    def _submit(self, rows: np.ndarray, width: int) -> tuple:
        dataset = self._dataset
        n = len(rows)
        shape = (n, width)
        dtype = dataset.dtype
        input_ids, ids_out = self._empty(shape, dtype)
        batch = {"input_ids": input_ids}
        mask_out = causal_out = labels_out = None
        if dataset.return_attention_mask:
            batch["attention_mask"], mask_out = self._empty(shape, dtype)
        if dataset.causal_labels:
            batch["labels"], causal_out = self._empty(shape, dtype)
        elif dataset.label_column is not None:
            batch["labels"], labels_out = self._empty((n,), torch.int64)
        ticket = self._assembler.submit(
            self._pool, rows, ids_out, mask_out, causal_out, labels_out
        )
        return ticket, batch

    def close(self) -> None:
        """Cancels batches in flight and joins the native threads. Idempotent."""
        if self._closed:
            return
        self._closed = True
        while self._inflight:
            ticket, _ = self._inflight.popleft()
            ticket.cancel()
        self._pool.shutdown()

    def __enter__(self) -> NativeBatchIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
