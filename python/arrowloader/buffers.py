"""Output buffers that native threads write batches into."""

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

    Pinned tensors come from torch's caching host allocator, so the host-to-device copy
    reads the very buffer the batch was written into. Pageable ones are allocated by
    numpy and shared with torch: same memory, about half the per-batch Python overhead of
    ``torch.empty`` followed by ``.numpy()``.
    """
    if pin:
        tensor = torch.empty(shape, dtype=dtype, pin_memory=True)
        return tensor, tensor.numpy()
    array = np.empty(shape, dtype=NUMPY_DTYPES[dtype])
    return torch.from_numpy(array), array
