"""The corpus as one flat token stream file: every document's tokens followed by the EOS
id, in corpus order, raw uint16 (when every id fits) or int32 values, the way nanoGPT's
``train.bin`` and Megatron's ``.bin`` store a pretraining corpus. The nanoGPT peer and the
torch flat-stream peer of W2 read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.sources import Source

#: Rows written per step of :func:`write_token_stream`.
_STREAM_ROWS_PER_STEP = 65536


def stream_dtype(max_token_id: int) -> np.dtype:
    """The dtype of a raw token stream file: uint16 as nanoGPT writes GPT-2 ids when every
    id fits, else int32."""
    return np.dtype(np.uint16) if max_token_id < 2**16 else np.dtype(np.int32)


def max_token_id(source: Source, column: str) -> int:
    """The largest token id of the corpus (-1 if it has no tokens)."""
    mapped = MappedTokenColumn(source, column, None)
    return max((int(values.max()) for values in mapped.values if len(values)), default=-1)


def write_token_stream(
    source: Source,
    column: str,
    eos_token_id: int,
    path: Union[str, Path],
    dtype: Optional[np.dtype] = None,
) -> Path:
    """Writes the corpus as one flat stream (nanoGPT's ``train.bin``): every document's
    tokens followed by ``eos_token_id``, in corpus order, as raw ``dtype`` values (default:
    :func:`stream_dtype` of the largest id), and returns ``path``.

    Written under a temporary name (``<path>.partial``) and renamed when complete.

    Raises:
        ValueError: an id (or the EOS id) does not fit in ``dtype``.
    """
    path = Path(path)
    mapped = MappedTokenColumn(source, column, None)
    largest = max(
        [eos_token_id, *(int(values.max()) for values in mapped.values if len(values))]
    )
    smallest = min(
        [eos_token_id, *(int(values.min()) for values in mapped.values if len(values))]
    )
    dtype = stream_dtype(largest) if dtype is None else np.dtype(dtype)
    limits = np.iinfo(dtype)
    if smallest < limits.min or largest > limits.max:
        raise ValueError(f"token ids in [{smallest}, {largest}] do not fit in {dtype}")
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        for offsets, values in zip(mapped.offsets, mapped.values):
            rows = len(offsets) - 1
            for first in range(0, rows, _STREAM_ROWS_PER_STEP):
                last = min(first + _STREAM_ROWS_PER_STEP, rows)
                begin, end = int(offsets[first]), int(offsets[last])
                # Document r's EOS goes just past its tokens, shifted by the r EOS ids
                # written before it.
                eos_at = offsets[first + 1 : last + 1].astype(np.int64) - begin
                eos_at += np.arange(last - first)
                piece = np.empty(end - begin + last - first, dtype=dtype)
                is_token = np.ones(len(piece), dtype=bool)
                is_token[eos_at] = False
                piece[is_token] = values[begin:end]
                piece[eos_at] = eos_token_id
                piece.tofile(out)
    partial.replace(path)
    return path


@dataclass(frozen=True)
class TokenStreamFile:
    """A flat token stream file written by :func:`write_token_stream` and its dtype."""

    path: Path
    dtype: np.dtype

    @property
    def num_tokens(self) -> int:
        """Tokens in the file."""
        return self.path.stat().st_size // self.dtype.itemsize
