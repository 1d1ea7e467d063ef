"""Native core of arrowloader: zero-copy Arrow column views, batch assembly and a thread pool.

Internal; use the arrowloader package. Every index argument (rows, blocks, orders) is int64
[n] and converts from any integer sequence; every output buffer is a writeable, C-contiguous
numpy array of exactly the dtype and shape given (``tensor.numpy()``), never converted: a
mismatch raises TypeError or ValueError naming the argument. Calls that do native work
release the GIL.
"""

from collections.abc import Sequence
from typing import Union

import numpy as np
import numpy.typing as npt
from typing_extensions import CapsuleType, TypeAlias

__version__: str

_Indices: TypeAlias = npt.ArrayLike
_Int64Array: TypeAlias = npt.NDArray[np.int64]
# Token outputs: int64 or int32, one dtype for all of a batch's token outputs.
_TokenArray: TypeAlias = Union[npt.NDArray[np.int64], npt.NDArray[np.int32]]
_TokenDtype: TypeAlias = Union[np.dtype[np.int64], np.dtype[np.int32]]

class _Pybind11Type(type):
    """The metaclass of every class below (pybind11_builtins.pybind11_type at runtime)."""

class TokenColumn(metaclass=_Pybind11Type):
    """A list<int32|int64|uint16|uint32> (or large_list) column spread over many Arrow
    arrays, read in place."""

    def __init__(self, name: str, narrow: bool = False) -> None:
        """narrow=True also accepts list<int8|uint8|bool> (a mask or token type ids beside
        the tokens)."""
    def add_chunk(
        self,
        schema: CapsuleType,
        array: CapsuleType,
        file: str,
        first_row_in_file: int,
        check_offsets: bool = True,
    ) -> None:
        """Import one array (the two PyCapsules of ``__arrow_c_array__()``) without copying,
        check nulls and offsets in one pass, and append it. ``file`` and
        ``first_row_in_file`` name the rows in error messages. check_offsets=False skips the
        pass over the offsets (first and last still checked). Raises CorpusFormatError."""
    def check_chunk_offsets(self, begin: int, end: int) -> None:
        """Run the offsets pass over chunks [begin, end). Raises CorpusFormatError."""
    def hold_region(self, schema: CapsuleType, array: CapsuleType) -> None:
        """Keep a uint8 array over a region of memory (typically a whole mapped file) alive
        with the column; chunks added afterwards inside it hold no Arrow objects."""
    @property
    def vocab_size(self) -> int:
        """Token ids copied out must lie in [0, vocab_size); 0 checks nothing. Settable
        until frozen."""
    @vocab_size.setter
    def vocab_size(self, value: int) -> None: ...
    @property
    def held_arrays(self) -> int:
        """Imported arrays the column keeps alive."""
    def advise_random_access(self) -> int:
        """MADV_RANDOM on the held regions; returns the regions advised."""
    @property
    def name(self) -> str: ...
    @property
    def num_rows(self) -> int:
        """Rows over all chunks."""
    @property
    def num_tokens(self) -> int:
        """Tokens over all rows."""
    @property
    def num_chunks(self) -> int: ...
    @property
    def checked_chunks(self) -> int:
        """Chunks whose offsets were checked so far."""
    def token_offsets(self) -> _Int64Array:
        """Token prefix sums, int64 [num_rows + 1] (read-only view, built on first call)."""
    @property
    def has_token_offsets(self) -> bool:
        """Whether token_offsets() was built already."""
    def lengths(self, rows: _Indices) -> _Int64Array:
        """Token counts of rows (int64 [n]) -> int64 [n]."""
    def describe_row(self, row: int) -> str:
        """Where global row ``row`` is, for messages: "<file>: column '<name>' row <n>" (the
        row within its file). Raises IndexError out of range."""
    def truncation_loss(self, max_length: int) -> tuple[int, int]:
        """(tokens, rows) that truncating every row to max_length would drop / shorten."""

class ScalarColumn(metaclass=_Pybind11Type):
    """An integer column spread over many Arrow arrays, read as int64."""

    def __init__(self, name: str) -> None: ...
    def add_chunk(
        self, schema: CapsuleType, array: CapsuleType, file: str, first_row_in_file: int
    ) -> None:
        """Import one integer array (int8 .. uint64) without copying; raises
        CorpusFormatError on nulls or uint64 values above int64's range."""
    def values(self, rows: _Indices) -> _Int64Array:
        """Values of rows (int64 [n]) as int64 [n]."""
    @property
    def name(self) -> str: ...
    @property
    def num_rows(self) -> int: ...

class LossMask(metaclass=_Pybind11Type):
    """Which tokens of each row are in the loss (completion-only loss): a per-token mask
    column (1/true: in the loss, 0/false: label -100) or a per-row prompt length (the
    first tokens left out). A packed row's EOS counts as the row's last token does."""

    def __init__(
        self,
        tokens: TokenColumn,
        mask: TokenColumn | None = None,
        prompt_lengths: ScalarColumn | None = None,
    ) -> None:
        """tokens: the token column; mask: a narrow list column row-aligned with it (its
        row lengths checked by the caller), or prompt_lengths: an integer column, every row
        checked here (CorpusFormatError for one below 0 or beyond its row). Freezes the
        columns."""
    @property
    def column(self) -> str:
        """The column the mask comes from."""

class ThreadPool(metaclass=_Pybind11Type):
    """Native threads that assemble batches with the GIL released."""

    def __init__(self, num_threads: int, name: str = "arrowloader") -> None:
        """Start num_threads threads named '<name>-<i>'."""
    def shutdown(self) -> None:
        """Cancel queued batches and join the threads (running ones finish). Idempotent."""
    @property
    def num_threads(self) -> int: ...

class Ticket(metaclass=_Pybind11Type):
    """A job (one or more batches) being assembled; keeps its output buffers alive until
    done, and cancels or waits for the job when dropped."""

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (GIL released) up to timeout seconds (None: forever); return whether done."""
    def result(self, timeout: float | None = None, batch: int = 0) -> tuple[int, int]:
        """The two figures of the job's batch ``batch``, after waiting up to timeout seconds
        (None: forever), or that batch's error (LoaderTimeoutError when not done in time,
        LoaderClosedError when cancelled). Padded batches: (truncated tokens, 0); packed:
        (cu_seqlens entries, max_seqlen)."""
    @property
    def batches(self) -> int:
        """Batches the job writes."""
    def cancel(self) -> None:
        """Cancel if not started, else wait for it to finish."""
    @property
    def done(self) -> bool: ...

class PaddedBatchAssembler(metaclass=_Pybind11Type):
    """Gathers, truncates and pads batches of token rows into caller-owned buffers."""

    def __init__(
        self,
        tokens: TokenColumn,
        labels: ScalarColumn | None = None,
        max_length: int = -1,
        truncate_left: bool = False,
        pad_left: bool = False,
        pad_to_max_length: bool = False,
        pad_to_multiple_of: int = 0,
        pad_token_id: int = 0,
        label_pad_id: int = -100,
        loss_mask: LossMask | None = None,
    ) -> None:
        """max_length < 0 keeps whole rows; pad_to_multiple_of 0 does not round. loss_mask
        (a LossMask over the same tokens): causal labels are label_pad_id where it leaves a
        token out. Freezes the columns."""
    def width(self, rows: _Indices) -> int:
        """Padded width of the batch of rows (int64 [n])."""
    def widths(self, rows: _Indices, batch_size: int) -> _Int64Array:
        """Widths of consecutive batches of batch_size rows (int64 [n]) -> int64
        [ceil(n / batch_size)]; the last batch may be short."""
    def batch_widths(self, rows: _Indices, starts: _Indices, ends: _Indices) -> _Int64Array:
        """Widths of the batches rows[starts[b]:ends[b]] (rows int64 [n]; starts, ends int64
        [batches], each span within rows) -> int64 [batches]."""
    def kept_lengths(self) -> _Int64Array:
        """Tokens every row keeps after truncation: int64 [num_rows]."""
    def assemble(
        self,
        rows: _Indices,
        input_ids: _TokenArray,
        attention_mask: _TokenArray | None = None,
        causal_labels: _TokenArray | None = None,
        labels: _Int64Array | None = None,
    ) -> int:
        """Assemble one batch on the calling thread. rows: int64 [n]; input_ids,
        attention_mask, causal_labels: int64 or int32 [n, width], one dtype; labels: int64
        [n]. Returns the number of tokens truncation dropped."""
    def submit(
        self,
        pool: ThreadPool,
        rows: _Indices,
        input_ids: _TokenArray,
        attention_mask: _TokenArray | None = None,
        causal_labels: _TokenArray | None = None,
        labels: _Int64Array | None = None,
    ) -> Ticket:
        """Like assemble(), but queued on pool; result() is (truncated tokens, 0)."""
    def submit_batches(
        self,
        pool: ThreadPool,
        batches: Sequence[
            tuple[
                _Indices,
                _TokenArray,
                _TokenArray | None,
                _TokenArray | None,
                _Int64Array | None,
            ]
        ],
    ) -> Ticket:
        """Queue several batches as one job: (rows, input_ids, attention_mask, causal_labels,
        labels) tuples, each as submit() takes them; result(batch=j) is batch j's (truncated
        tokens, 0)."""
    def gather(
        self, rows: _Indices, dtype: _TokenDtype
    ) -> tuple[_TokenArray, _Int64Array]:
        """Kept (truncated, unpadded) tokens of rows (int64 [n]) back to back: (flat: dtype
        [sum(lengths)], lengths: int64 [n])."""
    def gather_labels(
        self, rows: _Indices, dtype: _TokenDtype
    ) -> tuple[_TokenArray, _Int64Array]:
        """Causal labels of the kept tokens of rows (int64 [n]), laid out as gather() lays
        out the tokens: the tokens, label_pad_id where the loss mask leaves them out.
        Counts no truncated tokens."""
    @property
    def truncated_tokens(self) -> int:
        """Tokens dropped by truncation in gather() calls so far."""
    @property
    def num_rows(self) -> int: ...

def seeded_permutation(seed: int, stream: int, n: int) -> _Int64Array:
    """A permutation of range(n) (int64 [n]) that depends only on (seed, stream, n)."""

class PackPlan(metaclass=_Pybind11Type):
    """The blocks of one packed epoch, for one document order (from
    PackedBatchAssembler.plan())."""

    @property
    def num_blocks(self) -> int: ...
    @property
    def dropped_tokens(self) -> int:
        """Tokens (EOS included) left out of every block: the concat tail, or what
        bestfit's overlong policy truncates or drops."""
    @property
    def overlong_pieces(self) -> int:
        """Pieces (document + EOS) longer than a block that bestfit split, truncated or
        dropped."""

class PackedBatchAssembler(metaclass=_Pybind11Type):
    """Packs documents (each followed by EOS) into blocks and writes batches of them:
    shifted labels, blocks of seq_len + 1 tokens, input_ids = block[:-1], labels =
    block[1:]; or unshifted, blocks of seq_len, labels = input_ids."""

    def __init__(
        self,
        tokens: TokenColumn,
        seq_len: int,
        eos_token_id: int,
        bestfit: bool = False,
        mask_across_documents: bool = False,
        pad_token_id: int = 0,
        label_pad_id: int = -100,
        shift_labels: bool = True,
        max_pieces_per_block: int = 0,
        overlong: str = "split",
        loss_mask: LossMask | None = None,
    ) -> None:
        """bestfit=False packs in 'concat' mode. shift_labels=False: labels = input_ids
        (the model shifts), -100 on padding and masked document starts. bestfit only:
        max_pieces_per_block (0: no cap) closes a block holding that many pieces; overlong
        ('split', 'truncate' or 'drop') is what becomes of a piece longer than a block.
        loss_mask (a LossMask over the same tokens): -100 on labels whose target it leaves
        out. Freezes the column."""
    def plan(self, order: _Indices) -> PackPlan:
        """Plan an epoch whose documents come in ``order`` (int64 [n] global rows)."""
    def assemble(
        self,
        plan: PackPlan,
        blocks: _Indices,
        input_ids: _TokenArray,
        labels: _TokenArray,
        position_ids: _TokenArray | None = None,
        cu_seqlens: npt.NDArray[np.int32] | None = None,
    ) -> tuple[int, int]:
        """Write blocks (int64 [n]) of plan as one batch on the calling thread. input_ids,
        labels, position_ids: int64 or int32 [n, seq_len]; cu_seqlens: int32
        [n * seq_len + 1], of which the returned count is used. Returns (cu_seqlens
        entries, max_seqlen)."""
    def submit(
        self,
        pool: ThreadPool,
        plan: PackPlan,
        blocks: _Indices,
        input_ids: _TokenArray,
        labels: _TokenArray,
        position_ids: _TokenArray | None = None,
        cu_seqlens: npt.NDArray[np.int32] | None = None,
        batches: int = 1,
    ) -> Ticket:
        """Like assemble(), but queued on pool. With batches=k the n blocks are k
        consecutive batches of n / k rows in one job, back to back in the outputs
        ([n, seq_len]); cu_seqlens is int32 [n * seq_len + k], batch j's run of
        n / k * seq_len + 1 entries starting at j * (n / k * seq_len + 1).
        result(batch=j) is batch j's (cu_seqlens entries, max_seqlen)."""
    def prefetch(self, plan: PackPlan, blocks: _Indices) -> int:
        """MADV_WILLNEED on the token pages of blocks (int64 [n]) of plan; returns the bytes
        advised. Raises IndexError for a block outside the plan."""

def blend(
    weights: npt.ArrayLike, start: int, count: int, taken: _Int64Array | None = None
) -> tuple[_Int64Array, _Int64Array]:
    """Mixed samples [start, start + count) of datasets weighted by ``weights`` (float64
    [D], summing to 1): (dataset int64 [count], index within it int64 [count]). ``taken``
    (int64 [D], the counts of the first ``start`` samples) is updated in place to those of
    the first start + count, and makes the call O(count)."""

def blend_counts(weights: npt.ArrayLike, samples: int) -> _Int64Array:
    """How many of the first ``samples`` mixed samples each dataset gave: int64 [D]."""

def submit_mixed(
    pool: ThreadPool,
    sources: Sequence[PackedBatchAssembler],
    plans: Sequence[PackPlan],
    plan_of_row: _Indices,
    blocks: _Indices,
    input_ids: _TokenArray,
    labels: _TokenArray,
    position_ids: _TokenArray | None = None,
    cu_seqlens: npt.NDArray[np.int32] | None = None,
) -> Ticket:
    """Queue a batch whose row r is block blocks[r] of plans[plan_of_row[r]], packed by
    sources[plan_of_row[r]] (int64 [n] each); outputs as PackedBatchAssembler.submit;
    result() is (cu_seqlens entries, max_seqlen)."""

# Batch plans (csrc/batch_plans.h): one rank's batches of an epoch, planned over one length
# per row for (seed, epoch) alone. A plan is (rows: int64 [n], the epoch's order; starts,
# ends: int64 [batches]), the rank's batch k being rows[starts[k]:ends[k]].

def rank_batch_count(total: int, rank: int, world_size: int, drop_last: bool) -> int:
    """Batches each rank plays of an epoch of ``total`` global batches: total // world_size
    with drop_last (the last total % world_size dropped), else ceil(total / world_size)
    (the first batches repeated to fill the last round)."""

def length_grouped_batch_count(n: int, batch_size: int, drop_last: bool) -> int:
    """Global batches of a length-grouped epoch of n rows."""

def plan_length_grouped(
    lengths: _Indices,
    batch_size: int,
    megabatch_size: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
) -> tuple[_Int64Array, _Int64Array, _Int64Array]:
    """One rank's length-grouped batches of an epoch. lengths: int64 [n], one per row."""

def token_budget_batch_count(
    lengths: _Indices, max_tokens: int, max_rows: int, pad_to_multiple_of: int
) -> int:
    """Global batches of a token-budget epoch (the same for every seed and epoch); max_rows
    0: no limit."""

def plan_token_budget(
    lengths: _Indices,
    max_tokens: int,
    max_rows: int,
    pad_to_multiple_of: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
) -> tuple[_Int64Array, _Int64Array, _Int64Array]:
    """One rank's token-budget batches of an epoch. lengths: int64 [n], one per row;
    max_rows 0: no limit."""
