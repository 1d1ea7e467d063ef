"""W1 ("pad"): shuffled documents, truncated and padded to the longest of each batch.

:class:`PadWorkload` opens the corpus, builds the W1 rows and counts each run's tokens by
replaying the seeded sampler every W1 loader draws from. The runs, repeats and report are
the workload-neutral ones of :mod:`arrowloader.bench.suite`.

Every W1 row draws its batches from the same
``RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))``
(:func:`~arrowloader.bench.harness.seeded_sampler`, through
:class:`~arrowloader.bench.harness.SeededLoaderFactory`), so with equal seeds all rows
yield the same batches, in the same order, and the real token count of a run can be
recomputed afterwards from the document lengths alone (see ``harness``):

- ``torch``: ``torch.utils.data.DataLoader`` over numpy slices of the mapped Arrow
  buffers, collated with ``pad_sequence``
  (:func:`~arrowloader.bench.torch_peers.torch_pad_peers`);
- ``hf``: Hugging Face ``datasets`` with ``DataCollatorWithPadding``
  (:mod:`arrowloader.bench.hf_peers`);
- ``arrowloader``: ``arrowloader.DataLoader`` over ``TokenDataset`` with default settings
  (:func:`arrowloader_pad_peer`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import arrowloader
from arrowloader.bench import hf_peers, litdata_peers
from arrowloader.bench.cache import REFERENCE_DOCUMENTS, REFERENCE_SEED, cache_dir
from arrowloader.bench.harness import (
    Batch,
    BenchmarkError,
    Peer,
    SeededLoaderFactory,
    kept_lengths,
    replay_batch_token_counts,
)
from arrowloader.bench.libraries import LIBRARY_FAMILIES, LIBRARY_PEERS, library_notes
from arrowloader.bench.mapped_arrow import MappedTokenColumn
from arrowloader.bench.report import BenchWorkload, Traffic
from arrowloader.bench.torch_peers import torch_pad_peers
from arrowloader.native import default_num_threads
from arrowloader.sources import Source
from arrowloader.wording import plural

#: Peers of W1 besides arrowloader (which always runs).
KNOWN_PEERS = ("torch", "hf", *LIBRARY_FAMILIES, litdata_peers.FAMILY)
#: Bytes per element of W1's outputs (int64 input_ids, attention_mask and labels).
_OUTPUT_ITEMSIZE = 8


@dataclass(frozen=True)
class PadOptions:
    """What W1 reads and produces.

    Attributes:
        column: the token column (Arrow ``list``/``large_list`` of integers).
        label_column: an integer column returned as ``labels`` int64 ``[B]``, or None.
        batch_size: documents per batch (the last batch of an epoch may be short).
        max_length: documents are truncated to their first ``max_length`` tokens.
        pad_token_id: the id on padded positions of ``input_ids``.
    """

    column: str = "input_ids"
    label_column: Optional[str] = "label"
    batch_size: int = 32
    max_length: int = 1024
    pad_token_id: int = 0


@dataclass
class CorpusFacts:
    """The corpus W1 measured: where it is and what truncation does to it."""

    source: str
    reference: bool
    documents: int
    tokens: int
    kept_tokens: int
    truncated_documents: int
    token_itemsize: int

    def as_dict(self) -> dict[str, Any]:
        """The facts, JSON-ready."""
        return dict(self.__dict__)


class PadWorkload(BenchWorkload):
    """W1 over one corpus, with its peers built.

    Args:
        source: the corpus (anything ``TokenDataset`` accepts).
        reference: whether it is the cached reference corpus (its ``save_to_disk`` copy
            is then cached too).
        options: columns, batch size, truncation length.
        peers: requested peer families (those of :data:`KNOWN_PEERS` are used).
        threads: arrowloader's ``num_workers``, one row each (a thread sweep).
        show_progress: progress bars while copies are written.

    Raises:
        ArrowLoaderError: the corpus cannot be read.
    """

    key = "pad"
    title = "W1 pad"
    other_families = ("hf", *LIBRARY_FAMILIES, litdata_peers.FAMILY)

    def __init__(
        self,
        source: Source,
        *,
        reference: bool,
        options: PadOptions,
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
        # Opening a TokenDataset first reports a bad source or column with arrowloader's
        # clear errors. The lengths come from numpy views of the Arrow offsets,
        # independent of the native code under test.
        with quiet_truncation_warning():
            arrowloader_pad_peer(source, options).open_dataset(0)
        mapped = MappedTokenColumn(source, options.column, options.label_column)
        lengths, token_itemsize = mapped.lengths(), mapped.value_itemsize
        del mapped
        self.kept = kept_lengths(lengths, options.max_length)
        self.corpus = CorpusFacts(
            source=str(source),
            reference=reference,
            documents=len(lengths),
            tokens=int(lengths.sum()),
            kept_tokens=int(self.kept.sum()),
            truncated_documents=int((lengths > options.max_length).sum()),
            token_itemsize=token_itemsize,
        )
        try:
            self.peers = self._build_peers(peers)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ measuring

    def check_dataset(self, peer: Peer, dataset: Any) -> None:
        if len(dataset) != len(self.kept):
            raise BenchmarkError(
                f"{peer.name}: the dataset has {len(dataset)} documents, "
                f"expected {len(self.kept)}"
            )

    def check_batch(self, peer: Peer, batch: Any) -> None:
        check_pad_batch(batch, self.options.label_column is not None, peer.name)

    def observe(self, batch: Batch) -> tuple[int, int]:
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()

    def token_counts(self, seed: int, num_batches: int) -> tuple[np.ndarray, np.ndarray]:
        return replay_batch_token_counts(self.kept, self.options.batch_size, seed, num_batches)

    # ------------------------------------------------------------------ reporting

    def description(self) -> list[str]:
        options, corpus = self.options, self.corpus
        kept_share = corpus.kept_tokens / corpus.tokens if corpus.tokens else 1.0
        return [
            f"W1 pad: shuffled documents, truncated to {options.max_length}, padded to the "
            f"longest of each batch of {options.batch_size}; outputs int64 input_ids, "
            f"attention_mask{', labels' if options.label_column is not None else ''}",
            f"corpus: {corpus.source}{' (reference)' if corpus.reference else ''}",
            f"        {plural(corpus.documents, 'document')}, {corpus.tokens / 1e6:.1f}M tokens; "
            f"truncation keeps {corpus.kept_tokens / 1e6:.1f}M ({100 * kept_share:.1f}%), "
            f"shortening {plural(corpus.truncated_documents, 'document')}",
            *library_notes(self.peers),
        ]

    def settings(self) -> dict[str, Any]:
        options = self.options
        return {
            "column": options.column,
            "label_column": options.label_column,
            "batch_size": options.batch_size,
            "max_length": options.max_length,
            "pad_token_id": options.pad_token_id,
        }

    def corpus_facts(self) -> dict[str, Any]:
        return self.corpus.as_dict()

    def traffic(self, peer: Peer) -> Traffic:
        # input_ids and attention_mask over every padded position, plus labels (the last
        # batch of an epoch is counted as full for labels).
        labels = self.options.batch_size * _OUTPUT_ITEMSIZE
        return Traffic(
            read_bytes_per_token=self.corpus.token_itemsize,
            written_bytes_per_position=2 * _OUTPUT_ITEMSIZE,
            written_bytes_per_batch=labels if self.options.label_column is not None else 0,
        )

    def batch_output_bytes(self) -> int:
        options = self.options
        return options.batch_size * (options.max_length * 2 + 1) * _OUTPUT_ITEMSIZE

    # ------------------------------------------------------------------ peers

    def _build_peers(self, requested: tuple[str, ...]) -> list[Peer]:
        options = self.options
        peers: list[Peer] = []
        if "torch" in requested:
            torch_rows = torch_pad_peers(self.source, options)
            peers.extend(torch_rows)
            peers.extend(self.torch_thread_rows(torch_rows))
        if "hf" in requested and self.can_run(
            "hf", hf_peers.missing_modules(), "pip install 'arrowloader[hf]'"
        ):
            peers.extend(hf_peers.hf_pad_peers(self._saved_copy(), options))
        for module in LIBRARY_PEERS:
            if module.FAMILY in requested and self.can_run(
                module.FAMILY, module.missing_modules(), module.INSTALL_HINT
            ):
                peers.extend(module.pad_peers(self.source, options))
        if litdata_peers.FAMILY in requested and self.can_run(
            litdata_peers.FAMILY, litdata_peers.missing_modules(), litdata_peers.INSTALL_HINT
        ):
            copy = self._litdata_copy()
            self.conversions.append({
                "peer": litdata_peers.FAMILY, "seconds": copy.optimize_s, "cached": copy.cached,
                "note": copy.note("the documents"),
            })
            peers.extend(litdata_peers.pad_peers_over(copy, options))
        peers.extend(arrowloader_pad_peer(self.source, options, n) for n in self.threads)
        return peers

    def _litdata_copy(self) -> litdata_peers.OptimizedCopy:
        """litdata's optimized copy of the documents: cached for the reference corpus
        (both reference columns), else written for this run and removed after it."""
        options = self.options
        if self.reference:
            target = cache_dir() / (
                f"reference-{REFERENCE_DOCUMENTS}docs-seed{REFERENCE_SEED}.litdata-documents"
            )
            reference_options = dataclasses.replace(
                options, column="input_ids", label_column="label"
            )
            return litdata_peers.optimized_copy(
                target,
                lambda f: litdata_peers.write_document_copy(self.source, reference_options, f),
            )
        folder = Path(tempfile.mkdtemp(prefix="litdata-", dir=cache_dir()))
        self._temporary_folders.append(folder)
        return litdata_peers.optimized_copy(
            folder / "documents",
            lambda f: litdata_peers.write_document_copy(self.source, options, f),
        )

    def _saved_copy(self) -> Path:
        """The ``save_to_disk`` folder the hf peer loads: the source itself if it is one,
        a cached copy for the reference corpus, else a copy removed after the run (a user's
        corpus may be large, and it is not ours to keep)."""
        options, source = self.options, self.source
        columns = [options.column] + (
            [options.label_column] if options.label_column is not None else []
        )
        if isinstance(source, (str, os.PathLike)) and hf_peers.is_saved_dataset(Path(source)):
            return Path(source)
        if self.reference:
            # Cached across runs, so it holds both reference columns whatever this run uses.
            columns = ["input_ids", "label"]
            target = cache_dir() / (
                f"reference-{REFERENCE_DOCUMENTS}docs-seed{REFERENCE_SEED}.save_to_disk"
            )
        else:
            folder = Path(tempfile.mkdtemp(prefix="hf-copy-", dir=cache_dir()))
            self._temporary_folders.append(folder)
            target = folder / "dataset"
        return hf_peers.write_saved_copy(
            source, columns, target, show_progress=self.show_progress
        )


def arrowloader_pad_peer(source: Source, options: PadOptions, threads: int = 0) -> Peer:
    """The arrowloader row: ``arrowloader.DataLoader(TokenDataset(...))`` with default
    settings; ``threads`` is its ``num_workers`` (native threads, 0 = one per core, at
    most 4)."""

    def open_dataset(seed: int = 0) -> arrowloader.TokenDataset:
        return arrowloader.TokenDataset(
            source,
            column=options.column,
            label_column=options.label_column,
            max_length=options.max_length,
            pad_token_id=options.pad_token_id,
        )

    shown = threads or default_num_threads()
    make_loader = SeededLoaderFactory(
        options.batch_size, threads, persistent_workers=False, loader_class=arrowloader.DataLoader
    )
    return Peer(
        f"arrowloader (threads {shown})", "arrowloader", shown, open_dataset, make_loader
    )


def check_pad_batch(batch: Any, with_labels: bool, where: str) -> None:
    """Raises BenchmarkError unless ``batch`` has W1's outputs: ``input_ids`` and
    ``attention_mask`` int64 ``[B, L]``, and ``labels`` int64 ``[B]`` if labelled."""
    if not isinstance(batch, dict):
        raise BenchmarkError(f"{where}: batch is a {type(batch).__name__}, not a dict")
    input_ids = batch.get("input_ids")
    mask = batch.get("attention_mask")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype != torch.int64 or (
        input_ids.dim() != 2
    ):
        raise BenchmarkError(f"{where}: input_ids must be an int64 [B, L] tensor")
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.int64 or (
        mask.shape != input_ids.shape
    ):
        raise BenchmarkError(f"{where}: attention_mask must be int64 with input_ids' shape")
    if with_labels:
        labels = batch.get("labels")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or (
            tuple(labels.shape) != (input_ids.shape[0],)
        ):
            raise BenchmarkError(f"{where}: labels must be an int64 [B] tensor")


@contextlib.contextmanager
def quiet_truncation_warning() -> Iterator[None]:
    """Raises the ``arrowloader`` logger to ERROR inside a ``with`` block: TokenDataset
    warns about truncation each time it opens, so once per run here, while the report
    states the truncation once."""
    logger = logging.getLogger("arrowloader")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
