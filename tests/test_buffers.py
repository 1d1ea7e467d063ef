"""Output buffers of one batch: requested shapes and dtypes, disjoint memory, and the
layout that keeps concurrent output streams apart in the low address bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from arrowloader.buffers import OUTPUT_SKEW, PAGE, output_buffers

SPECS = [
    [((8, 2048), torch.int64), ((8, 2048), torch.int64), None, ((16385,), torch.int32)],
    [((32, 517), torch.int32), ((32, 517), torch.int32), ((32, 517), torch.int32), None],
    [((0, 7), torch.int64), ((0, 7), torch.int64), ((1,), torch.int32)],
    [None, ((3,), torch.int64)],
]


def address_range(array: np.ndarray) -> tuple[int, int]:
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("specs", SPECS)
def test_outputs_have_the_requested_shapes_and_share_no_memory(specs, interleaved) -> None:
    buffers = output_buffers(specs, pin=False, interleaved=interleaved)
    assert len(buffers) == len(specs)
    ranges = []
    for spec, buffer in zip(specs, buffers):
        if spec is None:
            assert buffer is None
            continue
        tensor, array = buffer
        assert tuple(tensor.shape) == spec[0] and tensor.dtype == spec[1]
        assert tensor.is_contiguous() and array.flags.c_contiguous and array.flags.writeable
        assert tensor.data_ptr() == array.__array_interface__["data"][0] or array.size == 0
        ranges.append(address_range(array))
    ranges.sort()
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        assert end <= start
    # Writing through one array shows in its tensor only.
    for k, buffer in enumerate(b for b in buffers if b is not None):
        buffer[1].fill(k + 1)
    for k, buffer in enumerate(b for b in buffers if b is not None):
        assert torch.all(buffer[0] == k + 1)


def test_outputs_start_at_distinct_offsets_within_a_page() -> None:
    """Interleaved outputs: output k starts k * OUTPUT_SKEW bytes past a page boundary of
    the block, never two outputs 16 bytes apart modulo a page (the layout that halved
    W2's speed)."""
    specs = SPECS[0]
    buffers = [b for b in output_buffers(specs, pin=False, interleaved=True) if b is not None]
    starts = [address_range(array)[0] for _, array in buffers]
    offsets = [(start - starts[0]) % PAGE for start in starts]
    assert offsets == [0, OUTPUT_SKEW, 3 * OUTPUT_SKEW]

