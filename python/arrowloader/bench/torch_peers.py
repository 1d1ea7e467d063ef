"""The torch peers: ``torch.utils.data.DataLoader`` over per-item map-style datasets that
slice the memory-mapped Arrow buffers with numpy (:mod:`arrowloader.bench.mapped_arrow`),
``num_workers`` 0 and 2 (:data:`~arrowloader.bench.harness.PEER_WORKER_COUNTS`); the
better row of a workload is its "torch best".

- W1 ("pad"): :class:`MappedArrowDocuments` (a document's first ``max_length`` tokens and
  its label per item), collated with ``pad_sequence`` (:class:`PadCollate`).
- W2 ("pack"): :class:`FlatStreamBlocks` (block ``i`` sliced from a flat stream file
  with the EOS ids in it, the strongest form) and :class:`MappedArrowBlocks` (block ``i``
  built from the documents, EOS ids put in per item), stacked by the default collate,
  ``drop_last``.

Both draw their items from :func:`~arrowloader.bench.harness.seeded_sampler`, through
:class:`~arrowloader.bench.harness.SeededLoaderFactory`.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from arrowloader.bench.harness import PEER_WORKER_COUNTS, Batch, Peer, SeededLoaderFactory
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions


@dataclass(frozen=True)
class LoaderKind:
    """Which DataLoader class builds a family's rows, and their names in the table."""

    label: str
    family: str
    loader_class: type[torch.utils.data.DataLoader]


#: torch's own ``torch.utils.data.DataLoader``.
TORCH_LOADER = LoaderKind("torch", "torch", torch.utils.data.DataLoader)
#: The DataLoader argument that selects thread workers, in the torch versions that have
#: them (torch 2.13's ``WorkerInfo`` names ``worker_method`` "multiprocessing" or
#: "thread", while its DataLoader takes no such argument yet).
THREAD_WORKERS = ("worker_method", "thread")


def thread_workers_missing() -> Optional[str]:
    """Why the installed torch's DataLoader cannot run thread workers (None: it can)."""
    name, _ = THREAD_WORKERS
    if name in inspect.signature(torch.utils.data.DataLoader.__init__).parameters:
        return None
    return f"torch {torch.__version__}'s DataLoader has no {name}= argument (thread workers)"


def thread_worker_rows(peers: list[Peer]) -> list[Peer]:
    """``peers``' rows with worker processes, again with thread workers instead (call only
    where :func:`thread_workers_missing` is None)."""
    rows = []
    for peer in peers:
        factory = peer.make_loader
        if peer.num_workers == 0 or not isinstance(factory, SeededLoaderFactory):
            continue
        threaded = dataclasses.replace(factory, loader_kwargs=(THREAD_WORKERS,))
        name = peer.name.replace(f"(workers {peer.num_workers})",
                                 f"(thread workers {peer.num_workers})")
        rows.append(dataclasses.replace(peer, name=name, make_loader=threaded))
    return rows


# --------------------------------------------------------------------------- W1 pad


class MappedArrowDocuments(Dataset):
    """The torch peer's dataset: ``ds[i]`` is ``(input_ids, label)``, the document's first
    ``max_length`` tokens as an int64 tensor ``[n]`` and its label as an int (-1 without a
    label column), sliced with numpy from the mapped Arrow buffers.

    Pickled by its arguments, so worker processes map the files themselves.
    """

    def __init__(
        self, source: Source, column: str, label_column: Optional[str], max_length: int
    ) -> None:
        self._args = (source, column, label_column, max_length)
        self.columns = MappedTokenColumn(source, column, label_column)
        self.max_length = max_length
        self.has_labels = label_column is not None

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.columns.num_rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        tokens = self.columns.document(index, self.max_length)
        # astype copies out of the read-only mapping (torch.from_numpy refuses to wrap
        # read-only memory without a warning) and widens to W1's int64 in the same pass.
        input_ids = torch.from_numpy(tokens.astype(np.int64))
        label = self.columns.label(index) if self.has_labels else -1
        return input_ids, label


class PadCollate:
    """The torch peer's collate function: ``pad_sequence`` plus a mask built from lengths.

    Returns ``input_ids`` int64 ``[B, L]`` (``pad_token_id`` on padding),
    ``attention_mask`` int64 ``[B, L]`` and, with labels, ``labels`` int64 ``[B]``.
    A class, not a closure, so that it pickles into worker processes under any start method.
    """

    def __init__(self, pad_token_id: int, with_labels: bool) -> None:
        self.pad_token_id = pad_token_id
        self.with_labels = with_labels

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> Batch:
        documents = [input_ids for input_ids, _ in items]
        input_ids = pad_sequence(documents, batch_first=True, padding_value=self.pad_token_id)
        lengths = torch.tensor([len(d) for d in documents], dtype=torch.int64)
        positions = torch.arange(input_ids.shape[1], dtype=torch.int64)
        attention_mask = (positions[None, :] < lengths[:, None]).to(torch.int64)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_labels:
            batch["labels"] = torch.tensor([label for _, label in items], dtype=torch.int64)
        return batch


def torch_pad_peers(
    source: Source, options: PadOptions, loader: LoaderKind = TORCH_LOADER
) -> list[Peer]:
    """The torch rows of W1: one per worker count in
    :data:`~arrowloader.bench.harness.PEER_WORKER_COUNTS`, built by ``loader``'s class
    (torch's DataLoader, or a drop-in of it such as torchdata's StatefulDataLoader)."""

    def open_dataset(seed: int = 0) -> MappedArrowDocuments:
        return MappedArrowDocuments(
            source, options.column, options.label_column, options.max_length
        )

    collate = PadCollate(options.pad_token_id, options.label_column is not None)

    return [
        Peer(
            f"{loader.label} (workers {n})", loader.family, n, open_dataset,
            SeededLoaderFactory(
                options.batch_size, n, collate_fn=collate, loader_class=loader.loader_class
            ),
        )
        for n in PEER_WORKER_COUNTS
    ]


# --------------------------------------------------------------------------- W2 pack


class MappedArrowBlocks(Dataset):
    """The torch peer's dataset: ``ds[i]`` is block ``i`` of the stream (every document
    followed by ``eos_token_id``, in corpus order) as ``{"input_ids": block[:-1],
    "labels": block[1:]}``, int64 tensors ``[seq_len]`` (views of one ``[seq_len + 1]``
    tensor). The tail of the stream shorter than a block is left out.

    Block ``i`` spans stream positions ``[i * (seq_len + 1), (i + 1) * (seq_len + 1))``;
    the prefix sums of the documents' piece lengths (tokens + EOS) and ``searchsorted``
    find the documents covering it, whose tokens are sliced with numpy from the mapped
    Arrow buffers into the block, with the EOS after each (one slice and a mask when the
    documents share a record batch, as nearly all blocks do).

    Pickled by its arguments, so worker processes map the files themselves.
    """

    def __init__(self, source: Source, column: str, seq_len: int, eos_token_id: int) -> None:
        self._args = (source, column, seq_len, eos_token_id)
        self.columns = MappedTokenColumn(source, column, None)
        self.seq_len = seq_len
        self.block_size = seq_len + 1
        self.eos_token_id = eos_token_id
        lengths = self.columns.lengths()
        #: Stream position just past each document's EOS: int64 [documents].
        self.piece_ends = np.cumsum(lengths + 1)
        self.stream_tokens = int(self.piece_ends[-1]) if len(lengths) else 0
        self.num_blocks = self.stream_tokens // self.block_size
        #: Each document's length, chunk, and first token's index in its chunk's values.
        self.lengths = lengths
        rows_per_chunk = [len(offsets) - 1 for offsets in self.columns.offsets]
        self.doc_chunk = np.repeat(np.arange(len(rows_per_chunk)), rows_per_chunk)
        self.doc_begin = (
            np.concatenate([o[:-1].astype(np.int64) for o in self.columns.offsets])
            if rows_per_chunk
            else np.zeros(0, dtype=np.int64)
        )

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.num_blocks

    def block(self, index: int) -> np.ndarray:
        """Block ``index`` of the stream: int64 ``[seq_len + 1]``."""
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} is out of range for {self.num_blocks} blocks")
        start = index * self.block_size
        # Documents whose pieces hold the block's first and last positions.
        first = int(np.searchsorted(self.piece_ends, start, side="right"))
        last = int(np.searchsorted(self.piece_ends, start + self.block_size - 1, side="right"))
        chunk = int(self.doc_chunk[first])
        if chunk != self.doc_chunk[last]:
            return self._block_across_chunks(start, first, last)
        # One record batch holds the documents' tokens contiguously: the block is one slice
        # of its values with the EOS ids put in between.
        eos_at = self.piece_ends[first : last + 1] - (start + 1)  # positions in the block
        if eos_at[-1] >= self.block_size:
            eos_at = eos_at[:-1]  # the last document's EOS is past the block
        first_piece_start = int(self.piece_ends[first]) - int(self.lengths[first]) - 1
        begin = int(self.doc_begin[first]) + start - first_piece_start
        block = np.empty(self.block_size, dtype=np.int64)
        is_token = np.ones(self.block_size, dtype=bool)
        is_token[eos_at] = False
        block[is_token] = self.columns.values[chunk][begin : begin + self.block_size - len(eos_at)]
        block[eos_at] = self.eos_token_id
        return block

    def _block_across_chunks(self, start: int, first: int, last: int) -> np.ndarray:
        """A block whose documents lie in more than one record batch: filled piece by
        piece."""
        end = start + self.block_size
        ends = self.piece_ends[first : last + 1].tolist()
        lengths = self.lengths[first : last + 1].tolist()
        chunks = self.doc_chunk[first : last + 1].tolist()
        begins = self.doc_begin[first : last + 1].tolist()
        values = self.columns.values
        block = np.empty(self.block_size, dtype=np.int64)
        filled = 0
        for piece_end, length, chunk, begin in zip(ends, lengths, chunks, begins):
            piece_start = piece_end - length - 1
            lo = max(start - piece_start, 0)  # first piece position in the block
            hi = min(end - piece_start, length + 1)  # one past the last
            tokens_hi = min(hi, length)
            if lo < tokens_hi:
                count = tokens_hi - lo
                block[filled : filled + count] = values[chunk][begin + lo : begin + tokens_hi]
                filled += count
            if hi == length + 1:  # the piece's EOS is in the block
                block[filled] = self.eos_token_id
                filled += 1
        return block

    def __getitem__(self, index: int) -> Batch:
        block = torch.from_numpy(self.block(index))
        return {"input_ids": block[:-1], "labels": block[1:]}


class FlatStreamBlocks(Dataset):
    """Map-style dataset of the blocks of a flat token stream file, as the strongest
    plain-torch W2 loader is written: the corpus stored once as one stream with the EOS
    ids already in it (nanoGPT's ``train.bin``, Megatron's ``.bin``, litdata's
    ``TokensLoader`` chunks), item ``i`` one slice of ``np.memmap`` of it, cast to int64.

    Item ``i`` is ``{"input_ids": block[:-1], "labels": block[1:]}`` (int64
    ``[seq_len]``) of ``block = stream[i * (seq_len + 1) : (i + 1) * (seq_len + 1)]``, the
    same block :class:`MappedArrowBlocks` builds from the documents. The mapping is made
    once per process (the dataset pickles as its path, for worker processes).
    """

    def __init__(self, path: Path, dtype: np.dtype, seq_len: int) -> None:
        self._args = (path, dtype, seq_len)
        self.block_size = seq_len + 1
        self.stream = np.memmap(path, dtype=dtype, mode="r")
        self.num_blocks = len(self.stream) // self.block_size

    def __getstate__(self) -> tuple:
        return self._args

    def __setstate__(self, args: tuple) -> None:
        self.__init__(*args)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} is out of range for {self.num_blocks} blocks")
        start = index * self.block_size
        block = torch.from_numpy(self.stream[start : start + self.block_size].astype(np.int64))
        return {"input_ids": block[:-1], "labels": block[1:]}


def torch_pack_peers(
    source: Source,
    options: PackOptions,
    stream: Optional[TokenStreamFile] = None,
    loader: LoaderKind = TORCH_LOADER,
) -> list[Peer]:
    """The torch rows of W2, one per worker count in
    :data:`~arrowloader.bench.harness.PEER_WORKER_COUNTS` each: blocks sliced from a flat
    stream file (:class:`FlatStreamBlocks`, when ``stream`` is given), then blocks built
    from the documents of the mapped Arrow buffers (:class:`MappedArrowBlocks`), built by
    ``loader``'s class. Every row draws its blocks with the same seeded sampler, so all
    yield the same batches."""

    def open_documents(seed: int = 0) -> MappedArrowBlocks:
        return MappedArrowBlocks(source, options.column, options.seq_len, options.eos_token_id)

    def open_stream(seed: int = 0) -> FlatStreamBlocks:
        assert stream is not None
        return FlatStreamBlocks(stream.path, stream.dtype, options.seq_len)

    rows: list[tuple[str, Callable[[int], Dataset], bool]] = []
    if stream is not None:
        rows.append((f"{loader.label} flat stream {stream.dtype.name}", open_stream, True))
    rows.append((f"{loader.label} from documents", open_documents, False))
    # drop_last: full batches only, as the other W2 loaders yield.
    return [
        Peer(
            f"{name} (workers {n})", loader.family, n, opener,
            SeededLoaderFactory(
                options.batch_size, n, drop_last=True, loader_class=loader.loader_class
            ),
            reads_stream=reads,
        )
        for name, opener, reads in rows
        for n in PEER_WORKER_COUNTS
    ]
