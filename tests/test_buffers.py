"""Output buffers of one batch: requested shapes and dtypes, disjoint memory, and the
layout that keeps concurrent output streams apart in the low address bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from arrowloader.buffers import OUTPUT_SKEW, PAGE, BlockPool, output_buffers

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



# --- reusing blocks ----------------------------------------------------------------------

PACKED = [((4, 16), torch.int64), ((4, 16), torch.int64), None, None]


def block_address(buffers: list) -> int:
    """Where the block under one packed job's outputs starts."""
    return buffers[0][1].base.__array_interface__["data"][0]


@pytest.mark.parametrize(
    "keep",
    [
        lambda out: out[0][0],  # the tensor
        lambda out: out[1][0][2:],  # a tensor view
        lambda out: out[1][0].numpy(),  # an array made from the tensor
        lambda out: torch.from_numpy(out[0][1][1:3]),  # a tensor of a slice of the array
        lambda out: memoryview(out[0][1]),  # a buffer export
    ],
    ids=["tensor", "tensor view", "tensor.numpy()", "slice", "memoryview"],
)
def test_a_block_anything_refers_to_is_not_reused(keep) -> None:
    pool = BlockPool(capacity=4)
    first = output_buffers(PACKED, pin=False, interleaved=True, pool=pool)
    first[0][1][:] = 7
    first[1][1][:] = 8
    kept = keep(first)
    address = block_address(first)
    del first
    for _ in range(6):  # every other block of the pool is free
        again = output_buffers(PACKED, pin=False, interleaved=True, pool=pool)
        assert block_address(again) != address
        again[0][1][:] = -1
        again[1][1][:] = -1
    assert set(np.asarray(kept).reshape(-1).tolist()) <= {7, 8}
    del kept, again
    reused = {block_address(output_buffers(PACKED, False, True, pool)) for _ in range(4)}
    assert address in reused


def test_dropped_blocks_are_reused_and_a_full_pool_keeps_no_more() -> None:
    pool = BlockPool(capacity=2)
    held = [output_buffers(PACKED, False, True, pool) for _ in range(3)]
    addresses = [block_address(h) for h in held]
    assert len(set(addresses)) == 3
    del held
    # The third block was made while both pooled ones were in use: it was not kept.
    again = [block_address(output_buffers(PACKED, False, True, pool)) for _ in range(4)]
    assert set(again) == set(addresses[:2])
    # A larger job takes a new block rather than a pooled one too small for it.
    big = [((64, 64), torch.int64), ((64, 64), torch.int64), None, None]
    assert block_address(output_buffers(big, False, True, pool)) not in addresses


def test_a_pool_that_may_not_reuse_always_makes_new_blocks() -> None:
    """Without the GIL reference counts cannot tell a free block; the pool then hands out
    a new block every time (``_reuse`` is False there), where one that may reuse hands
    out a pooled one nothing refers to."""
    for reuse in (True, False):
        pool = BlockPool(capacity=2)
        pool._reuse = reuse
        pooled = [id(pool.take(64)), id(pool.take(64))]  # dropped at once: both free
        assert (id(pool.take(64)) in pooled) == reuse
