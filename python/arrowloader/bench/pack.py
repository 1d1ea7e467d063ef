"""W2 ("pack"): the corpus as one token stream cut into shuffled blocks; W3 is W2 on a
corpus larger than memory.

W2 reads the corpus as one token stream, every document followed by the EOS id, cut into
blocks of ``seq_len + 1`` tokens; a block gives ``input_ids = block[:-1]`` and
``labels = block[1:]``. Every row yields ``input_ids`` and ``labels``
``[batch_size, seq_len]``, always full batches:

- ``torch``: ``torch.utils.data.DataLoader`` over per-block slices of a flat stream file
  with the EOS ids in it (the strongest plain-torch form), and over blocks built per item
  from the mapped Arrow buffers; documents in corpus order, the block order shuffled by a
  seeded ``RandomSampler``, ``drop_last=True``
  (:func:`~arrowloader.bench.torch_peers.torch_pack_peers`);
- ``nanogpt``: nanoGPT's ``get_batch`` over ``np.memmap`` of a raw token stream file
  (:mod:`arrowloader.bench.nanogpt_peer`);
- ``arrowloader``: ``arrowloader.DataLoader(PackedDataset(...), shuffle=True)`` with
  ``input_ids`` and ``labels`` only (the headline row), then without the per-epoch
  document shuffle (the flat-stream peers' work), with ``position_ids`` and
  ``cu_seqlens`` on, and with int32 outputs (:func:`arrowloader_pack_peers`).

:class:`PackWorkload` opens the corpus, writes the flat token stream file (once, into the
benchmark cache, for the reference corpus) and builds those rows. Every W2 batch
is full (``batch_size`` blocks of ``seq_len`` positions, no padding), so a run's tokens
are its batches times ``batch_size * seq_len``; the warm-up batches check the shapes.

W3 needs no code of its own: ``arrowloader bench --workload pack --data BIG --peers none``
over a corpus of at least 1.25 x the machine's memory (``benchmarks/make_big_corpus.py``
writes one), compared with W2's figures.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

import arrowloader
from arrowloader.bench import litdata_peers
from arrowloader.bench.cache import (
    REFERENCE_DOCUMENTS,
    REFERENCE_SEED,
    cache_dir,
    cache_lock,
    run_with_progress,
)
from arrowloader.bench.harness import Batch, BenchmarkError, Peer, read_meminfo_bytes
from arrowloader.bench.libraries import LIBRARY_FAMILIES, LIBRARY_PEERS, library_notes
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.nanogpt_peer import nanogpt_pack_peer
from arrowloader.bench.report import BenchWorkload, Traffic
from arrowloader.bench.token_stream import (
    TokenStreamFile,
    max_token_id,
    stream_dtype,
    write_token_stream,
)
from arrowloader.bench.torch_peers import FlatStreamBlocks, MappedArrowBlocks, torch_pack_peers
from arrowloader.native import default_num_threads
from arrowloader.sources import Source
from arrowloader.wording import plural

#: Peers of W2 besides arrowloader (which always runs): W1's library peers too.
KNOWN_PEERS = ("torch", "nanogpt", *LIBRARY_FAMILIES, litdata_peers.FAMILY)


@dataclass(frozen=True)
class PackOptions:
    """What W2 reads and produces.

    Attributes:
        column: the token column (Arrow ``list``/``large_list`` of integers).
        batch_size: blocks per batch.
        seq_len: tokens per row; blocks are ``seq_len + 1`` tokens of the stream.
        eos_token_id: the id after every document in the stream (GPT-2's ``<|endoftext|>``).
    """

    column: str = "input_ids"
    batch_size: int = 8
    seq_len: int = 2048
    eos_token_id: int = 50256

    @property
    def block_size(self) -> int:
        """Tokens of the stream per block: ``seq_len + 1``."""
        return self.seq_len + 1


class PackWorkload(BenchWorkload):
    """W2 over one corpus, with its peers built.

    Args:
        source: the corpus (anything ``PackedDataset`` accepts).
        reference: whether it is the cached reference corpus (the nanoGPT stream file is
            then cached too; for any other corpus it is written for this run only).
        options: column, batch size, sequence length, EOS id.
        peers: requested peer families (those of :data:`KNOWN_PEERS` are used).
        threads: arrowloader's ``num_workers``, one row each (a thread sweep).
        show_progress: a progress bar while the stream file is written.

    Raises:
        ArrowLoaderError: the corpus cannot be read.
        BenchmarkError: the corpus holds less than one batch of blocks.
    """

    key = "pack"
    title = "W2 pack"
    other_families = ("nanogpt", *LIBRARY_FAMILIES, litdata_peers.FAMILY)

    def __init__(
        self,
        source: Source,
        *,
        reference: bool,
        options: PackOptions,
        peers: tuple[str, ...],
        threads: tuple[int, ...] = (0,),
        show_progress: bool = True,
    ) -> None:
        super().__init__(
            source,
            reference=reference,
            options=options,
            threads=threads,
            show_progress=show_progress,
        )
        self._stream: Optional[TokenStreamFile] = None
        # Opening a PackedDataset first reports a bad source or column with arrowloader's
        # clear errors (it plans nothing until asked). The lengths come from numpy views of
        # the Arrow offsets, independent of the native code under test.
        arrowloader.PackedDataset(
            source, seq_len=options.seq_len, eos_token_id=options.eos_token_id,
            column=options.column,
        )
        mapped = MappedTokenColumn(source, options.column, None)
        self.files = len(mapped.paths)
        self.file_bytes = sum(path.stat().st_size for path in mapped.paths)
        self.memory_bytes = read_meminfo_bytes("MemTotal")
        lengths = mapped.lengths()
        self.documents = len(lengths)
        self.tokens = int(lengths.sum())
        self.token_itemsize = mapped.value_itemsize
        del mapped
        self.stream_tokens = self.tokens + self.documents
        self.blocks = self.stream_tokens // options.block_size
        if self.blocks < options.batch_size:
            raise BenchmarkError(
                f"the corpus makes {self.blocks} blocks of {options.block_size} tokens, fewer "
                f"than one batch of {options.batch_size}"
            )
        try:
            self.peers = self._build_peers(peers)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ measuring

    @property
    def batch_tokens(self) -> int:
        """Tokens (= positions) of every W2 batch: ``batch_size * seq_len``."""
        return self.options.batch_size * self.options.seq_len

    def check_dataset(self, peer: Peer, dataset: Any) -> None:
        # len() of a PackedDataset would plan an epoch, which belongs to the first batch.
        # litdata's TokensLoader copy holds the stream's whole blocks, one item each.
        blocks = isinstance(dataset, (MappedArrowBlocks, FlatStreamBlocks)) or (
            peer.family == litdata_peers.FAMILY
        )
        if blocks and len(dataset) != self.blocks:
            raise BenchmarkError(
                f"{peer.name}: the dataset has {len(dataset)} blocks, expected {self.blocks}"
            )
        if isinstance(dataset, TokenStreamFile) and dataset.num_tokens != self.stream_tokens:
            raise BenchmarkError(
                f"{peer.name}: the stream file has {dataset.num_tokens} tokens, expected "
                f"{self.stream_tokens}"
            )

    def check_batch(self, peer: Peer, batch: Any) -> None:
        check_pack_batch(
            batch, self.options.batch_size, self.options.seq_len, peer.dtype,
            peer.extra_outputs, peer.name,
        )

    def observe(self, batch: Batch) -> tuple[int, int]:
        positions = batch["input_ids"].numel()
        return positions, positions

    def token_counts(self, seed: int, num_batches: int) -> tuple[np.ndarray, np.ndarray]:
        counts = np.full(num_batches, self.batch_tokens, dtype=np.int64)
        return counts, counts.copy()

    # ------------------------------------------------------------------ reporting

    def description(self) -> list[str]:
        options = self.options
        stream = (
            f"; the stream readers read a {self._stream.dtype.name} copy of the stream "
            f"({self._stream.path})"
            if self._stream is not None
            else ""
        )
        per_epoch = self.blocks // options.batch_size
        size = f"{plural(self.files, 'file')}, {self.file_bytes / 1e9:.2f} GB"
        if self.memory_bytes:
            share = self.file_bytes / self.memory_bytes
            size += f" = {share:.2f} x physical memory"
            if share >= 1.25:
                size += " (W3: larger than memory)"
        return [
            f"W2 pack: the corpus as one token stream (EOS {options.eos_token_id} after every "
            f"document), cut into blocks of {options.block_size}, blocks shuffled, batches of "
            f"{options.batch_size}; outputs input_ids = block[:-1], labels = block[1:] "
            f"[{options.batch_size}, {options.seq_len}] int64 (rows marked otherwise: more "
            "outputs or int32)",
            f"corpus: {self.source}{' (reference)' if self.reference else ''}; {size}",
            f"        {plural(self.documents, 'document')}, {self.tokens / 1e6:.1f}M tokens; "
            f"stream of {self.stream_tokens / 1e6:.1f}M tokens = {plural(self.blocks, 'block')} "
            f"= {plural(per_epoch, 'batch', 'batches')} per epoch",
            "peers: torch flat stream slices block i out of np.memmap of the stream file "
            "(EOS ids already in it) per item; torch from documents builds block i from the "
            "mapped Arrow buffers per item, putting the EOS ids in; both in corpus order, "
            "blocks shuffled by a seeded RandomSampler, drop_last; nanoGPT draws random "
            "offsets into np.memmap of the stream file; arrowloader (PackedDataset, concat) "
            "also shuffles the documents before packing each epoch (the row 'documents in "
            "order' does not: the flat-stream peers' work), and plans each epoch natively "
            f"(epoch 0's plan is in its first batch){stream}",
            *library_notes(self.peers),
        ]

    def settings(self) -> dict[str, Any]:
        options = self.options
        return {
            "column": options.column,
            "batch_size": options.batch_size,
            "seq_len": options.seq_len,
            "eos_token_id": options.eos_token_id,
            "tokens_per_batch": self.batch_tokens,
        }

    def corpus_facts(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "reference": self.reference,
            "documents": self.documents,
            "tokens": self.tokens,
            "stream_tokens": self.stream_tokens,
            "blocks": self.blocks,
            "batches_per_epoch": self.blocks // self.options.batch_size,
            "token_itemsize": self.token_itemsize,
            "files": self.files,
            "file_bytes": self.file_bytes,
            "file_bytes_over_physical_memory": (
                self.file_bytes / self.memory_bytes if self.memory_bytes else None
            ),
            "nanogpt_stream": str(self._stream.path) if self._stream is not None else None,
            "nanogpt_stream_dtype": self._stream.dtype.name if self._stream is not None else None,
        }

    def traffic(self, peer: Peer) -> Traffic:
        # Token bytes read once (the stream readers read the stream file's, EOS ids
        # included; the others write the EOS ids, not read them); input_ids and labels
        # (and position_ids) written over every position. cu_seqlens (a few int32 per
        # row) is left out.
        read = self.token_itemsize
        if peer.reads_stream and self._stream is not None:
            read = self._stream.dtype.itemsize
        itemsize = torch.empty(0, dtype=peer.dtype).element_size()
        outputs = 3 if "position_ids" in peer.extra_outputs else 2
        return Traffic(read_bytes_per_token=read, written_bytes_per_position=outputs * itemsize)

    def batch_output_bytes(self) -> int:
        return 2 * self.batch_tokens * 8

    # ------------------------------------------------------------------ peers

    def _build_peers(self, requested: tuple[str, ...]) -> list[Peer]:
        options = self.options
        peers: list[Peer] = []
        libraries = [
            module
            for module in LIBRARY_PEERS
            if module.FAMILY in requested
            and self.can_run(module.FAMILY, module.missing_modules(), module.INSTALL_HINT)
        ]
        litdata = litdata_peers.FAMILY in requested and self.can_run(
            litdata_peers.FAMILY, litdata_peers.missing_modules(), litdata_peers.INSTALL_HINT
        )
        if "torch" in requested or "nanogpt" in requested or libraries or litdata:
            self._stream = self._stream_file()
        if "torch" in requested:
            torch_rows = torch_pack_peers(self.source, options, self._stream)
            peers.extend(torch_rows)
            # Thread workers over the strongest form only: the flat stream's blocks.
            peers.extend(self.torch_thread_rows([p for p in torch_rows if p.reads_stream]))
        if "nanogpt" in requested:
            assert self._stream is not None
            peers.append(nanogpt_pack_peer(self._stream, options))
        for module in libraries:
            peers.extend(module.pack_peers(self.source, options, self._stream))
        if litdata:
            copy = self._litdata_copy()
            self.conversions.append({
                "peer": litdata_peers.FAMILY, "seconds": copy.optimize_s, "cached": copy.cached,
                "note": copy.note("the flat stream's blocks"),
            })
            peers.extend(litdata_peers.pack_peers_over(copy, options, self._stream.dtype))
        peers.extend(arrowloader_pack_peers(self.source, options, self.threads))
        return peers

    def _litdata_copy(self) -> litdata_peers.OptimizedCopy:
        """litdata's ``TokensLoader`` copy of the stream file's blocks: beside the stream
        file in the cache for the reference corpus, else written for this run only."""
        stream = self._stream
        assert stream is not None
        block_size = self.options.block_size
        if self.reference:
            target = stream.path.with_name(f"{stream.path.stem}.litdata-blocks{block_size}")
        else:
            folder = Path(tempfile.mkdtemp(prefix="litdata-", dir=cache_dir()))
            self._temporary_folders.append(folder)
            target = folder / "blocks"
        return litdata_peers.optimized_copy(
            target, lambda f: litdata_peers.write_stream_copy(stream, block_size, f)
        )

    def _stream_file(self) -> TokenStreamFile:
        """The corpus as a flat stream file (nanoGPT's ``train.bin``), read by the torch
        flat-stream and nanoGPT peers: cached for the reference corpus, else written for
        this run and removed after it."""
        options = self.options
        if self.reference:
            # make_corpus draws ids below 50257, so GPT-2's uint16 holds them (and the EOS).
            dtype = stream_dtype(max(options.eos_token_id, 50256))
            path = cache_dir() / (
                f"reference-{REFERENCE_DOCUMENTS}docs-seed{REFERENCE_SEED}.{options.column}"
                f".eos{options.eos_token_id}.{dtype.name}.bin"
            )
            if not path.is_file():
                with cache_lock(path):
                    if not path.is_file():
                        self._write_stream(path, dtype)
            return TokenStreamFile(path, dtype)
        folder = Path(tempfile.mkdtemp(prefix="nanogpt-stream-", dir=cache_dir()))
        self._temporary_folders.append(folder)
        return self._write_stream(folder / "train.bin", None)

    def _write_stream(self, path: Path, dtype: Optional[np.dtype]) -> TokenStreamFile:
        options = self.options
        if dtype is None:
            largest = max(max_token_id(self.source, options.column), options.eos_token_id)
            dtype = stream_dtype(largest)
        run_with_progress(
            lambda: write_token_stream(
                self.source, options.column, options.eos_token_id, path, dtype
            ),
            watch=path.with_name(path.name + ".partial"),
            description="writing the flat token stream",
            show_progress=self.show_progress,
            result=path,
        )
        return TokenStreamFile(path, np.dtype(dtype))


#: The arrowloader rows: (name suffix, PackedDataset keyword arguments, headline, extra
#: outputs). The first has the torch peer's outputs; the second does the flat-stream
#: peers' work (no document shuffle), to show what the per-epoch shuffle costs.
ARROWLOADER_VARIANTS: tuple[tuple[str, dict[str, Any], bool, tuple[str, ...]], ...] = (
    ("", {}, True, ()),
    (" documents in order", {"shuffle_documents": False}, False, ()),
    (
        " +position_ids +cu_seqlens",
        {"return_position_ids": True, "return_cu_seqlens": True},
        False,
        ("position_ids", "cu_seqlens", "max_seqlen"),
    ),
    (" int32", {"dtype": torch.int32}, False, ()),
)


def arrowloader_pack_peers(
    source: Source, options: PackOptions, threads: tuple[int, ...] = (0,)
) -> list[Peer]:
    """The arrowloader rows of W2: the headline row for each thread count of ``threads``
    (a sweep), then the other :data:`ARROWLOADER_VARIANTS` with the first count:
    ``arrowloader.DataLoader(PackedDataset(source, seq_len, eos_token_id, seed=seed,
    return_position_ids=False, return_cu_seqlens=False, ...), batch_size,
    shuffle=True, generator=torch.Generator().manual_seed(seed), num_workers=threads)``.

    The dataset and the generator get the same seed, as in the README's usage, so the
    DataLoader plans epoch 0 once, when it is built (torch's ``RandomSampler`` asks the
    dataset's length there): the plan falls in the time to first batch."""
    def opener(extra: dict[str, Any]) -> Callable[[int], arrowloader.PackedDataset]:
        def open_dataset(seed: int = 0) -> arrowloader.PackedDataset:
            arguments: dict[str, Any] = {
                "return_position_ids": False,
                "return_cu_seqlens": False,
                **extra,
            }
            return arrowloader.PackedDataset(
                source,
                seq_len=options.seq_len,
                eos_token_id=options.eos_token_id,
                column=options.column,
                seed=seed,
                **arguments,
            )

        return open_dataset

    def loader_factory(num_workers: int) -> Callable[[Any, int], torch.utils.data.DataLoader]:
        def make_loader(dataset: Any, seed: int) -> torch.utils.data.DataLoader:
            return arrowloader.DataLoader(
                dataset,
                batch_size=options.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(seed),
                num_workers=num_workers,
            )

        return make_loader

    threads = tuple(threads) or (0,)
    rows = [(ARROWLOADER_VARIANTS[0], n) for n in threads]
    rows += [(variant, threads[0]) for variant in ARROWLOADER_VARIANTS[1:]]
    peers = []
    for (suffix, extra, headline, outputs), num_workers in rows:
        shown = num_workers or default_num_threads()
        peers.append(
            Peer(
                f"arrowloader{suffix} (threads {shown})",
                "arrowloader",
                shown,
                opener(extra),
                loader_factory(num_workers),
                headline=headline,
                dtype=extra.get("dtype", torch.int64),
                extra_outputs=outputs,
            )
        )
    return peers


def check_pack_batch(
    batch: Any,
    batch_size: int,
    seq_len: int,
    dtype: torch.dtype,
    extra_outputs: tuple[str, ...],
    where: str,
) -> None:
    """Raises BenchmarkError unless ``batch`` has W2's outputs: ``input_ids`` and
    ``labels`` of ``dtype`` and shape ``[batch_size, seq_len]`` with ``labels`` shifted by
    one (``labels[:, :-1] == input_ids[:, 1:]``), plus each of ``extra_outputs``
    (``position_ids`` like input_ids, ``cu_seqlens`` int32 from 0 to
    ``batch_size * seq_len``, ``max_seqlen`` an int)."""
    if not isinstance(batch, dict):
        raise BenchmarkError(f"{where}: batch is a {type(batch).__name__}, not a dict")
    shape = (batch_size, seq_len)
    names = ["input_ids", "labels"] + [n for n in extra_outputs if n == "position_ids"]
    for name in names:
        tensor = batch.get(name)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype or (
            tuple(tensor.shape) != shape
        ):
            raise BenchmarkError(
                f"{where}: {name} must be a {dtype} tensor of shape {list(shape)}, got "
                f"{getattr(tensor, 'dtype', type(tensor).__name__)} "
                f"{list(getattr(tensor, 'shape', []))}"
            )
    if not torch.equal(batch["labels"][:, :-1], batch["input_ids"][:, 1:]):
        raise BenchmarkError(f"{where}: labels are not input_ids shifted by one position")
    if "cu_seqlens" in extra_outputs:
        cu_seqlens = batch.get("cu_seqlens")
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int32 or (
            cu_seqlens.dim() != 1
            or len(cu_seqlens) < 2
            or int(cu_seqlens[0]) != 0
            or int(cu_seqlens[-1]) != batch_size * seq_len
        ):
            raise BenchmarkError(
                f"{where}: cu_seqlens must be int32 [n] from 0 to {batch_size * seq_len}"
            )
    if "max_seqlen" in extra_outputs and not isinstance(batch.get("max_seqlen"), int):
        raise BenchmarkError(f"{where}: max_seqlen must be an int")
    unexpected = set(batch) - {"input_ids", "labels", *extra_outputs}
    if unexpected:
        raise BenchmarkError(f"{where}: unexpected outputs {sorted(unexpected)}")
