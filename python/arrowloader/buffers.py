"""Output buffers that native threads write batches into.

Pinned batches without a second copy
------------------------------------
With ``pin_memory=True`` and CUDA available, every output tensor of a batch is allocated
by ``torch.empty(..., pin_memory=True)``, i.e. from torch's caching host allocator, and the
native threads write the batch straight into it: there is no pin-memory thread and no
second copy, and the host-to-device copy (``tensor.to("cuda", non_blocking=True)``, as
:class:`arrowloader.CUDAPrefetcher` issues it) reads the very bytes the batch was
assembled into.

Why a pinned buffer is never rewritten while a copy to the device may still read it:

- arrowloader never writes into a buffer twice. Each batch gets fresh tensors from
  :func:`output_buffers`; the native job of a batch writes only into its own tensors, and
  finishes (or is cancelled) before the batch is handed to the consumer. A batch that was
  cancelled was never handed over, so nothing copies from it.
- torch does not hand a freed pinned block out again while a copy may read it. From
  torch's sources (2.x): ``torch.empty(..., pin_memory=True)`` takes its memory from the
  CUDA host allocator (``GetCPUAllocatorMaybePinned`` in ``aten/src/ATen/EmptyTensor.cpp``
  returns the accelerator's pinned-memory allocator, the caching host allocator). A
  non-blocking copy between a pinned tensor and the device (``copy_kernel_cuda`` in
  ``aten/src/ATen/native/cuda/Copy.cu``) calls ``cudaMemcpyAsync`` and then the
  allocator's ``record_event(ptr, ctx, stream)``, which adds the copy's stream to the
  block's set of streams. When the tensor's storage is freed, ``free()``
  (``aten/src/ATen/core/CachingHostAllocator.h``) records one CUDA event on each of those
  streams, after the copy in stream order, and puts the block in the event queue instead
  of the free list; ``allocate()`` moves a block back to the free list only once all its
  events have completed. So dropping a CPU batch right after queuing its copy is safe, and
  the next batches cannot be assembled into memory a pending copy still reads.
- Blocking copies (``non_blocking=False``) return after the copy, so nothing is pending.

Pageable buffers (no pinning, or no CUDA) are plain host memory owned by the batch. The
blocks of packed batches come from a :class:`BlockPool`, which hands a block out again
only once nothing refers to it any more (no tensor, view or array of any batch made on
it), so a batch a caller keeps is never written again either.
"""

from __future__ import annotations

import functools
import math
import sys
from collections import deque
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch

NUMPY_DTYPES = {
    torch.int64: np.dtype(np.int64),
    torch.int32: np.dtype(np.int32),
}

#: One batch's pageable outputs live in one block (see :func:`output_buffers`): output
#: ``k`` starts ``k * OUTPUT_SKEW`` bytes past a page boundary of the block.
PAGE = 4096
OUTPUT_SKEW = 256

#: ``(shape, dtype)`` of one output, or None for an output the batch does not have.
OutputSpec = Optional[tuple[tuple[int, ...], torch.dtype]]


class BlockPool:
    """Memory blocks for pageable outputs, each handed out again once nothing refers to it.

    A fresh block per job costs the consumer thread time and page faults on every packed
    batch: glibc hands blocks that large back to the kernel and takes new pages (README,
    "Measured design choices", has the figures). Padded batches (one allocation per output,
    widths varying per batch) showed no gain, and do not use it.

    A block is free when the pool holds the only reference to it: every output array is
    made on the block (numpy keeps it as their ``base``), and every tensor, view or array
    derived from those outputs keeps them, so while any of them lives the block's
    reference count says so. Python builds without the GIL count references differently,
    so there the pool never reuses a block.

    Args:
        capacity: blocks kept for reuse at most (about the jobs in flight, plus the one
            being consumed); a block made when all are in use is not kept.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self._blocks: deque[np.ndarray] = deque()
        self._reuse = getattr(sys, "_is_gil_enabled", lambda: True)()

    def take(self, nbytes: int) -> np.ndarray:
        """A uint8 block of at least ``nbytes`` (uninitialised, or holding an old batch
        that nothing refers to any more)."""
        blocks = self._blocks
        if self._reuse:
            # Oldest first: in a training loop the batch handed out longest ago is the
            # one most likely dropped.
            for _ in range(len(blocks)):
                block = blocks.popleft()
                blocks.append(block)
                # References now: the deque, `block` and getrefcount's argument.
                if sys.getrefcount(block) == 3 and block.nbytes >= nbytes:
                    return block
        block = np.empty(max(nbytes, 1), dtype=np.uint8)
        if len(blocks) < self._capacity:
            blocks.append(block)
        return block


def output_buffers(
    specs: Sequence[OutputSpec],
    pin: bool,
    interleaved: bool = False,
    pool: Optional[BlockPool] = None,
) -> list[Optional[tuple[torch.Tensor, np.ndarray]]]:
    """Uninitialised tensors for the outputs of one batch, each with a numpy view of the
    same memory that the native side writes into; None where ``specs`` has None.
    ``interleaved``: the native side writes the outputs' rows together, in one pass (the
    packed assembler does), so their layout matters (below); their block comes from
    ``pool`` when given.

    Pinned tensors (``pin=True``, only when CUDA is available) come from torch's caching
    host allocator, so the host-to-device copy reads the very buffer the batch was written
    into, and the allocator keeps the block from being reused while a non-blocking copy
    from it may be pending (see the module docstring); it hands out page-aligned blocks.

    Pageable outputs are allocated by numpy (less per-batch Python overhead than
    ``torch.empty``). Interleaved ones share one numpy block, laid out on purpose:
    allocated one by one, two outputs of 128 KiB sit 128 KiB + 16 bytes apart (the
    allocator's chunk header), and writing rows of both at once at that distance (packed
    int64 input_ids and labels) runs at less than half the speed of any other distance:
    their addresses are 16 bytes apart in the low 12 bits. In the block, output ``k``
    starts ``k * OUTPUT_SKEW`` bytes past a page boundary (relative to the block's start),
    so no two outputs are that close in those bits (README, "Measured design choices").
    The padded assembler showed no such effect,
    and the layout's bookkeeping cost it more than it saved.
    """
    if pin:
        out: list[Optional[tuple[torch.Tensor, np.ndarray]]] = []
        for spec in specs:
            if spec is None:
                out.append(None)
                continue
            tensor = torch.empty(spec[0], dtype=spec[1], pin_memory=True)
            out.append((tensor, tensor.numpy()))
        return out
    if not interleaved:
        # Written in separate passes (the padded assembler): the layout does not matter,
        # and one allocation per output is the cheapest for widths that change per batch.
        return [
            None if spec is None else _tensor_and_array(np.empty(spec[0], NUMPY_DTYPES[spec[1]]))
            for spec in specs
        ]
    total, layout = _layout(tuple(specs))
    block = np.empty(total, dtype=np.uint8) if pool is None else pool.take(total)
    return [
        None if at is None else _tensor_and_array(np.ndarray(at[2], at[1], block, at[0]))
        for at in layout
    ]


def _tensor_and_array(array: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    return torch.from_numpy(array), array


@functools.lru_cache(maxsize=64)
def _layout(
    specs: tuple[OutputSpec, ...],
) -> tuple[int, list[Optional[tuple[int, np.dtype, tuple[int, ...]]]]]:
    """Bytes to allocate and, per output, its ``(offset, numpy dtype, shape)`` in the
    block (see :func:`output_buffers`)."""
    layout: list[Optional[tuple[int, np.dtype, tuple[int, ...]]]] = []
    end = 0
    for k, spec in enumerate(specs):
        if spec is None:
            layout.append(None)
            continue
        shape, dtype = spec
        np_dtype = NUMPY_DTYPES[dtype]
        start = -(-end // PAGE) * PAGE + (k * OUTPUT_SKEW) % PAGE
        end = start + math.prod(shape) * np_dtype.itemsize
        layout.append((start, np_dtype, tuple(shape)))
    return max(end, 1), layout
