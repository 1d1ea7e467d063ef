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
  :func:`output_buffer`; the native job of a batch writes only into its own tensors, and
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

Pageable buffers (no pinning, or no CUDA) are plain host memory owned by the batch.
"""

from __future__ import annotations

import numpy as np
import torch

NUMPY_DTYPES = {
    torch.int64: np.dtype(np.int64),
    torch.int32: np.dtype(np.int32),
}


def output_buffer(
    shape: tuple[int, ...], dtype: torch.dtype, pin: bool
) -> tuple[torch.Tensor, np.ndarray]:
    """An uninitialised tensor of ``shape`` and ``dtype`` and a numpy view of the same
    memory, handed to the native side.

    Pinned tensors (``pin=True``, only when CUDA is available) come from torch's caching
    host allocator, so the host-to-device copy reads the very buffer the batch was written
    into, and the allocator keeps the block from being reused while a non-blocking copy
    from it may be pending (see the module docstring). Pageable ones are allocated by
    numpy and shared with torch: same memory, about half the per-batch Python overhead of
    ``torch.empty`` followed by ``.numpy()``.
    """
    if pin:
        tensor = torch.empty(shape, dtype=dtype, pin_memory=True)
        return tensor, tensor.numpy()
    array = np.empty(shape, dtype=NUMPY_DTYPES[dtype])
    return torch.from_numpy(array), array
