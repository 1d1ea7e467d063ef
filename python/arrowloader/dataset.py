"""TokenDataset: documents of token ids from memory-mapped Arrow files, padded in C++."""

from __future__ import annotations

import logging
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from arrowloader import _C
from arrowloader.buffers import NUMPY_DTYPES
from arrowloader.corpus import Corpus, check_loss_mask_columns, check_vocab_size
from arrowloader.corpus_index import IndexCacheOption
from arrowloader.manifest import check_ids_in_vocabulary
from arrowloader.native import (
    IGNORE_INDEX,
    Batch,
    EpochStart,
    Item,
    LoaderSettings,
    Position,
    next_epoch,
)
from arrowloader.object_store import FileSystemLike
from arrowloader.padded_epoch import (
    PaddedEpoch,
    PlannedEpoch,
    RankSplitEpoch,
    SamplerEpoch,
    check_planned_state,
    check_split_state,
    check_token_state,
    finish_batch,
    planned_sampler,
    planned_state,
    sampling_generators,
)
from arrowloader.plan import counts_samples
from arrowloader.ranks import rank_share, resolve_distributed
from arrowloader.shard_cache import parse_size
from arrowloader.sources import Source
from arrowloader.vocabulary import (
    TokenizerLike,
    check_token_id,
    manifest_facts,
    resolve_facts,
    tokenizer_facts,
)

logger = logging.getLogger("arrowloader")

#: The per-token columns a Hugging Face tokenizer writes beside ``input_ids``, carried
#: when present (``extra_columns=None``), with the value their padding takes.
HF_TOKEN_COLUMNS = {"token_type_ids": 0, "attention_mask": 0}


@dataclass(frozen=True)
class ExtraColumn:
    """A per-token column padded beside ``input_ids``: the batch key it becomes, its pad
    value and the native assembler that pads it (same truncation and padding)."""

    output: str
    pad: int
    assembler: Any

#: TokenDataset arguments that go to the Corpus, not onto the dataset's attributes.
_CORPUS_ARGS = (
    "source", "require_end_of_stream", "index_cache", "mmap", "vocab_size", "rank", "world_size",
    "tokenizer", "extra_columns", "cache_dir", "cache_limit", "filesystem", "storage_options",
)
#: Arguments added after loader states were first saved: in the fingerprint only when set,
#: so that states saved before them still load.
_LATER_ARGS = ("loss_mask_column", "prompt_length_column")
#: Arguments that change how the files are read, never which batches a run gives: a
#: loader state resumes across them. (``rank`` and ``world_size`` do change them: a state
#: of a rank-split run records its world size itself.)
_READ_ONLY_ARGS = (
    "source", "dtype", "index_cache", "mmap", "vocab_size", "rank", "world_size", "tokenizer",
    "cache_dir", "cache_limit", "filesystem", "storage_options",
)



class TokenDataset(Dataset):
    """Documents of token ids, one per row of an Arrow list column, read in place.

    ``ds[i]`` is one truncated, unpadded document; batches are padded by ``ds.collate``
    or, much faster, by :class:`arrowloader.DataLoader`, which assembles whole batches on
    native threads (the dataset implements :class:`arrowloader.native.NativeDataset`,
    following the loader's own sampler). Both give the same tensors.

    Args:
        source: an Arrow IPC file or stream, a folder of them (sorted by name), a glob, a
            list of paths, a Hugging Face ``save_to_disk`` folder, or a folder written by
            ``arrowloader prepare`` (its shards in manifest order, each checked against
            the manifest; ``pad_token_id`` must then be inside its vocabulary).
        column: the token column, ``list`` or ``large_list`` of int32, int64, uint16 or
            uint32.
        label_column: an integer column returned as ``labels`` (int64 ``[B]``), or a list
            column of per-token labels (token classification), padded with -100 beside
            ``input_ids`` as ``DataCollatorForTokenClassification`` pads them (``[B, L]`` of
            the dataset's dtype).
        max_length: documents longer than this are truncated; the dropped tokens are
            counted in :meth:`stats`.
        truncation_side: ``"right"`` keeps the first ``max_length`` tokens, ``"left"``
            the last.
        padding: ``"longest"`` pads to the longest document of the batch,
            ``"max_length"`` to ``max_length``.
        pad_to_multiple_of: round the padded width up to a multiple of this.
        padding_side: ``"right"`` or ``"left"``.
        pad_token_id: the id written on padded positions of ``input_ids``. Default: the
            tokenizer's pad id when ``tokenizer`` has one, else 0.
        return_attention_mask: add ``attention_mask`` (1 on tokens, 0 on padding).
        causal_labels: add ``labels`` = ``input_ids`` with -100 on every padded position
            (decided by length, never by comparing token values).
        dtype: ``torch.int64`` or ``torch.int32`` for ``input_ids``, ``attention_mask``
            and causal labels. Scalar labels are always int64.
        require_end_of_stream: reject IPC streams without the end-of-stream marker (a
            stream cut at a message boundary otherwise loads silently short).
        index_cache: None (default): check every list offset of every file at open.
            True, or a folder: keep an index entry next to the data (else in the cache
            folder, or in that folder) so that later opens of unchanged files skip the
            pass over their offsets; see :class:`arrowloader.Corpus`.
        mmap: True (default) memory-maps the files. False reads each file into memory
            once, at open: for file systems where files may be cut short or rewritten
            while in use (a mapped file cut short kills the process with SIGBUS). Costs
            the corpus's size in memory.
        vocab_size: if set, token ids outside ``[0, vocab_size)`` raise
            CorpusFormatError (naming file, column and row) when the batch or item
            holding them is made, instead of reaching an embedding lookup.
        rank, world_size: this process's share of the run; default: from
            ``torch.distributed`` when a process group is initialised, else 0 and 1.
        tokenizer: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer`` or the path of
            a ``tokenizer.json``: ``pad_token_id`` and ``vocab_size`` default to its pad id
            and its size (added tokens included).
        extra_columns: per-token list columns (int8 .. int64 values, every row as long as
            its tokens) carried into batches beside ``input_ids``, truncated and padded the
            same way: name -> pad value. Default (None): the columns a Hugging Face
            tokenizer writes, when the corpus has them: ``token_type_ids`` (padded with 0)
            and ``attention_mask`` (padded with 0; a stored mask is the batch's mask, so pad
            tokens a corpus was tokenized with, ``padding="max_length"``, stay masked, and
            causal labels are -100 where it is 0). ``{}`` carries none.
        loss_mask_column: completion-only loss (with ``causal_labels=True``): a per-token
            list column (bool, or integers 0 and 1, every row as long as its tokens; e.g.
            the ``assistant_masks`` of ``apply_chat_template``) whose 0 / false tokens get
            label -100, as TRL's completion and assistant masks do. Truncated with the
            tokens. Applied natively as batches are written; a value other than 0 and 1
            raises CorpusFormatError naming file, column and row.
        prompt_length_column: completion-only loss the other way: an integer column, each
            row's prompt length ``p``; labels of the row's first ``p`` tokens are -100
            (``0 <= p <=`` the row's length, checked for every row at open). Counted in
            the row before truncation (with ``truncation_side="left"``, a prompt cut
            away leaves nothing to mask).

        cache_dir, cache_limit, filesystem, storage_options: for a source in object
            storage (``s3://bucket/prefix/``, a glob, a list of URLs; the prefix may be a
            prepared corpus folder or a ``save_to_disk`` folder): the local folder its
            shards are copied into (default ``<arrowloader cache>/objects``), the most
            bytes that folder may hold (an int or ``"200GB"``), and how the store is
            reached (a ``pyarrow.fs.FileSystem`` or an fsspec file system; or options of
            ``pyarrow.fs.S3FileSystem``; default: the AWS environment and config files).
            See the README, "Corpora in object storage".

    ``vocab_size`` also defaults to the manifest's of a corpus written by ``arrowloader
    prepare``. An argument that disagrees with the tokenizer or the manifest, or a
    tokenizer that disagrees with the manifest, is refused with both values named.

    Distributed runs: with more than one process and torch's stock sampler (``shuffle``
    True or False, no custom ``sampler`` / ``batch_sampler``), each rank's
    :class:`arrowloader.DataLoader` takes its own share of every epoch, exactly as
    ``torch.utils.data.DistributedSampler(ds, world_size, rank, shuffle, seed,
    drop_last=loader's drop_last)`` gives it: the epoch's order is drawn from ``seed +
    epoch`` (``seed``: the loader's ``generator.initial_seed()``, else 0), so every rank
    draws the same one; without ``drop_last`` the shares are made equal by repeating the
    order's first samples, with it the tail is dropped. The epoch is the loader's count of
    its passes, unless :meth:`set_epoch` pins it (as ``DistributedSampler.set_epoch``
    does). A sampler of the user's own (a ``DistributedSampler`` among them) is followed
    as it is, never split again. A :class:`arrowloader.LengthGroupedBatchSampler` or
    :class:`arrowloader.TokenBudgetBatchSampler` (``group_by_length=True`` builds the
    first) splits its own plan between the dataset's ranks, and the native path plays
    that plan directly.

    Every epoch of :class:`arrowloader.DataLoader` starts by checking that no file was
    replaced, cut short or rewritten since the open (:meth:`check_files`).

    Raises:
        CorpusFileError: a file is missing or cannot be mapped.
        CorpusFormatError: a file is malformed (names file, column and row).
        ValueError: an argument is out of range.
    """

    def __init__(
        self,
        source: Source,
        column: str = "input_ids",
        label_column: Optional[str] = None,
        max_length: Optional[int] = None,
        truncation_side: str = "right",
        padding: str = "longest",
        pad_to_multiple_of: Optional[int] = None,
        padding_side: str = "right",
        pad_token_id: Optional[int] = None,
        return_attention_mask: bool = True,
        causal_labels: bool = False,
        dtype: torch.dtype = torch.int64,
        require_end_of_stream: bool = True,
        index_cache: IndexCacheOption = None,
        mmap: bool = True,
        vocab_size: Optional[int] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        tokenizer: Optional[TokenizerLike] = None,
        extra_columns: Optional[Mapping[str, int]] = None,
        loss_mask_column: Optional[str] = None,
        prompt_length_column: Optional[str] = None,
        cache_dir: Union[str, os.PathLike, None] = None,
        cache_limit: Union[int, str, None] = None,
        filesystem: Optional[FileSystemLike] = None,
        storage_options: Optional[dict[str, Any]] = None,
    ) -> None:
        self._args = dict(
            source=source,
            column=column,
            label_column=label_column,
            max_length=max_length,
            truncation_side=truncation_side,
            padding=padding,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            pad_token_id=pad_token_id,
            return_attention_mask=return_attention_mask,
            causal_labels=causal_labels,
            dtype=dtype,
            require_end_of_stream=require_end_of_stream,
            index_cache=index_cache,
            mmap=mmap,
            vocab_size=vocab_size,
            rank=rank,
            world_size=world_size,
            tokenizer=tokenizer,
            extra_columns=None if extra_columns is None else dict(extra_columns),
            loss_mask_column=loss_mask_column,
            prompt_length_column=prompt_length_column,
            cache_dir=cache_dir,
            cache_limit=cache_limit,
            filesystem=filesystem,
            storage_options=storage_options,
        )
        self._configure(announce_truncation=True)

    def _configure(self, announce_truncation: bool) -> None:
        _check_options(**self._args)
        for name, value in self._args.items():
            if name not in _CORPUS_ARGS:
                setattr(self, name, value)
        resolve_distributed(self._args.get("rank"), self._args.get("world_size"))  # checks
        self._pinned_epoch: Optional[int] = None
        self._open(announce_truncation)

    def _padder(self, tokens: Any, labels: Any, pad: int, loss_mask: Any = None) -> Any:
        """A native assembler of ``tokens`` with this dataset's truncation and padding
        (and, for the tokens' own, the loss mask of their causal labels)."""
        return _C.PaddedBatchAssembler(
            tokens,
            labels,
            loss_mask=loss_mask,
            max_length=-1 if self.max_length is None else self.max_length,
            truncate_left=self.truncation_side == "left",
            pad_left=self.padding_side == "left",
            pad_to_max_length=self.padding == "max_length",
            pad_to_multiple_of=self.pad_to_multiple_of or 0,
            pad_token_id=pad,
            label_pad_id=IGNORE_INDEX,
        )

    def _extra_columns(self) -> list[ExtraColumn]:
        """The per-token columns the corpus read beside the tokens, as batch outputs."""
        asked = self._args.get("extra_columns")
        pads = HF_TOKEN_COLUMNS if asked is None else asked
        extras = []
        limit = torch.iinfo(self.dtype)
        for name, values in self.corpus.list_columns.items():
            if name == self.label_column:
                output, pad = "labels", IGNORE_INDEX
            else:
                output, pad = name, pads[name]
            if name == "attention_mask" and not self.return_attention_mask:
                continue
            if not isinstance(pad, int) or not limit.min <= pad <= limit.max:
                raise ValueError(f"extra_columns: the pad value of {name!r} ({pad!r}) is not "
                                 f"an integer that fits in {self.dtype}")
            if output == "labels" and self.causal_labels:
                raise ValueError("causal_labels=True and a per-token label_column both "
                                 "produce 'labels'; choose one")
            extras.append(ExtraColumn(output, pad, self._padder(values, None, pad)))
        return extras

    @property
    def stored_attention_mask(self) -> bool:
        """Whether batches carry the corpus's own ``attention_mask`` column."""
        return any(extra.output == "attention_mask" for extra in self._extras)

    def _take_token_facts(self) -> None:
        """Resolves ``pad_token_id`` and ``vocab_size`` from the arguments, the tokenizer
        and the manifest (see the class docstring), and keeps the results as arguments,
        so that a pickled dataset reopens with them and no tokenizer."""
        args = self._args
        tokenizer = args.get("tokenizer")
        facts = resolve_facts(
            {"vocab_size": args.get("vocab_size"), "pad_token_id": args["pad_token_id"]},
            None if tokenizer is None else tokenizer_facts(tokenizer),
            manifest_facts(self.corpus.manifest, str(args["source"])),
        )
        vocab_size = facts["vocab_size"]
        pad_token_id = 0 if facts["pad_token_id"] is None else facts["pad_token_id"]
        check_ids_in_vocabulary(self.corpus.manifest, pad_token_id=pad_token_id)
        check_token_id("pad_token_id", pad_token_id, vocab_size)
        if vocab_size is not None:
            self.corpus.tokens.vocab_size = check_vocab_size(vocab_size)
        args.update(vocab_size=vocab_size, pad_token_id=pad_token_id, tokenizer=None)
        self.pad_token_id = pad_token_id

    @property
    def rank(self) -> int:
        """This process's rank (explicit, else torch.distributed's, else 0)."""
        return resolve_distributed(self._args.get("rank"), self._args.get("world_size"))[0]

    @property
    def world_size(self) -> int:
        """Processes sharing each epoch (explicit, else torch.distributed's, else 1)."""
        return resolve_distributed(self._args.get("rank"), self._args.get("world_size"))[1]

    def set_epoch(self, epoch: int) -> None:
        """Pins the epoch whose order a rank-split loader plays (see the class docstring),
        as ``DistributedSampler.set_epoch`` does; without it each loader counts its own."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._pinned_epoch = epoch

    def _open(self, announce_truncation: bool) -> None:
        self.corpus = Corpus(
            self._args["source"],
            self.column,
            self.label_column,
            require_end_of_stream=self._args["require_end_of_stream"],
            index_cache=self._args.get("index_cache"),
            mmap=self._args.get("mmap", True),
            vocab_size=self._args.get("vocab_size"),
            list_columns=tuple(self._args.get("extra_columns") or ()),
            optional_list_columns=(
                tuple(HF_TOKEN_COLUMNS) if self._args.get("extra_columns") is None else ()
            ),
            loss_mask_column=self._args.get("loss_mask_column"),
            prompt_length_column=self._args.get("prompt_length_column"),
            cache_dir=self._args.get("cache_dir"),
            cache_limit=self._args.get("cache_limit"),
            filesystem=self._args.get("filesystem"),
            storage_options=self._args.get("storage_options"),
        )
        self._take_token_facts()
        self._loss_mask = self.corpus.loss_mask_view()
        self._assembler = self._padder(
            self.corpus.tokens, self.corpus.labels, self.pad_token_id, self._loss_mask
        )
        self._extras = self._extra_columns()
        self._np_dtype = NUMPY_DTYPES[self.dtype]
        # Tokens dropped in batches the native loader delivered (items count natively).
        self._truncated_in_batches = 0
        self._truncation = (0, 0)
        if self.max_length is not None:
            self._truncation = self.corpus.tokens.truncation_loss(self.max_length)
            if announce_truncation and self._truncation[0] > 0:
                tokens, documents = self._truncation
                logger.warning(
                    "max_length=%d truncates %d of %d tokens (%.2f%%) in %d of %d documents "
                    "each epoch; ds.stats() has the counts.",
                    self.max_length,
                    tokens,
                    self.corpus.num_tokens,
                    100.0 * tokens / max(1, self.corpus.num_tokens),
                    documents,
                    len(self),
                )

    # Pickling by arguments: workers (fork or spawn) reopen and remap the files instead
    # of receiving the corpus through a pipe.
    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "epoch": self._pinned_epoch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = dict(state["args"])
        self._configure(announce_truncation=False)
        self._pinned_epoch = state.get("epoch")

    def __len__(self) -> int:
        return self.corpus.num_rows

    def __repr__(self) -> str:
        return (
            f"TokenDataset({len(self)} documents, {self.corpus.num_tokens} tokens, "
            f"{len(self.corpus.files)} files, column={self.column!r}, "
            f"max_length={self.max_length})"
        )

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every document before truncation: int64 ``[len(self)]``."""
        return self.corpus.tokens.lengths(np.arange(len(self), dtype=np.int64))

    def kept_lengths(self) -> np.ndarray:
        """Tokens every document keeps after ``max_length`` truncation, read natively from
        the corpus: int64 ``[len(self)]`` (what length-grouped and token-budget batch
        samplers plan over)."""
        return self._assembler.kept_lengths()

    def describe_row(self, index: int) -> str:
        """Where document ``index`` lives, for messages: its file, column and row there.

        Raises:
            IndexError: ``index`` is out of range.
        """
        return self.corpus.tokens.describe_row(index)

    def __getitem__(self, index: int) -> Item:
        """One document: ``input_ids`` ``[n]`` (truncated, unpadded), ``attention_mask``
        ``[n]`` of ones, and ``labels`` (a 0-d int64 label, or ``[n]`` causal labels),
        each as the dataset's dtype unless noted."""
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(
                f"TokenDataset indices must be integers, got {type(index).__name__}"
            ) from None
        n = len(self)
        if i < -n or i >= n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} documents")
        if i < 0:
            i += n
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """The documents at ``indices`` with one native call (torch's DataLoader uses this
        for a whole batch): a list of the dicts ``ds[i]`` would give."""
        rows = np.asarray(indices, dtype=np.int64)
        if rows.ndim != 1:
            raise ValueError("indices must be a flat sequence of integers")
        flat, lengths = self._assembler.gather(rows, self._np_dtype)
        split = torch.from_numpy(flat).split(lengths.tolist())
        masked_labels = None
        if self.causal_labels and self._loss_mask is not None:
            flat_labels, _ = self._assembler.gather_labels(rows, self._np_dtype)
            masked_labels = torch.from_numpy(flat_labels).split(lengths.tolist())
        labels = self.corpus.labels.values(rows) if self.corpus.labels is not None else None
        extras = {}
        for extra in self._extras:
            values, _ = extra.assembler.gather(rows, self._np_dtype)
            extras[extra.output] = torch.from_numpy(values).split(lengths.tolist())
        items = []
        for i, ids in enumerate(split):
            item = {"input_ids": ids}
            if self.return_attention_mask:
                item["attention_mask"] = torch.ones_like(ids)
            if masked_labels is not None:
                item["labels"] = masked_labels[i]
            elif self.causal_labels:
                item["labels"] = ids.clone()
            elif labels is not None:
                item["labels"] = torch.tensor(int(labels[i]), dtype=torch.int64)
            for output, values in extras.items():
                item[output] = values[i]
            if self.causal_labels and self.stored_attention_mask:
                item["labels"] = item["labels"].masked_fill(item["attention_mask"] == 0, -100)
            items.append(item)
        return items

    def padded_width(self, longest: int) -> int:
        """Width of a padded batch whose longest (truncated) document has ``longest``
        tokens."""
        width = self.max_length if self.padding == "max_length" else longest
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return width

    def collate(self, items: Sequence[Item]) -> Batch:
        """Pads a list of ``ds[i]`` results into a batch, exactly as the native path does.

        Returns:
            ``input_ids`` ``[B, L]``, ``attention_mask`` ``[B, L]`` (if enabled), and
            ``labels``: ``[B]`` int64 from ``label_column`` or ``[B, L]`` causal labels.
        """
        lengths = [int(item["input_ids"].shape[0]) for item in items]
        if self.max_length is not None and any(n > self.max_length for n in lengths):
            raise ValueError(
                f"collate got a document of {max(lengths)} tokens, longer than "
                f"max_length={self.max_length}; pass items produced by this dataset"
            )
        width = self.padded_width(max(lengths, default=0))
        size = (len(items), width)
        input_ids = torch.full(size, self.pad_token_id, dtype=self.dtype)
        mask = torch.zeros(size, dtype=self.dtype) if self.return_attention_mask else None
        causal = torch.full(size, IGNORE_INDEX, dtype=self.dtype) if self.causal_labels else None
        for row, (item, n) in enumerate(zip(items, lengths)):
            at = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            input_ids[row, at] = item["input_ids"]
            if mask is not None:
                mask[row, at] = 1
            if causal is not None:
                # Items carry their causal labels (-100 where a loss mask leaves tokens out).
                causal[row, at] = item["labels"]
        batch = {"input_ids": input_ids}
        if mask is not None:
            batch["attention_mask"] = mask
        if causal is not None:
            batch["labels"] = causal
        elif self.label_column is not None and self.corpus.labels is not None:
            labels = [item["labels"] for item in items]
            batch["labels"] = (
                torch.stack(labels).to(torch.int64) if labels else torch.empty(0, dtype=torch.int64)
            )
        for extra in self._extras:
            padded = torch.full(size, extra.pad, dtype=self.dtype)
            for row, (item, n) in enumerate(zip(items, lengths)):
                at = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
                padded[row, at] = item[extra.output]
            batch[extra.output] = padded
        return finish_batch(self, batch)

    def fingerprint(self) -> dict[str, Any]:
        """What a saved loader state must match to be resumed on this dataset: the
        corpus (documents, tokens, file names and a digest of every document's length,
        see :meth:`Corpus.content_digest`) and the options that shape batches."""
        options = {k: v for k, v in self._args.items() if k not in _READ_ONLY_ARGS}
        # Added after states were first saved: named only when the dataset carries some,
        # so that states saved before still load.
        options.pop("extra_columns", None)
        for name in _LATER_ARGS:
            if options.get(name) is None:
                options.pop(name, None)
        if self._extras:
            options["extra_columns"] = {extra.output: extra.pad for extra in self._extras}
        return {
            "documents": len(self),
            "tokens": self.corpus.num_tokens,
            "files": [f.path.name for f in self.corpus.files],
            "content": self.corpus.content_digest(),
            "dtype": str(self.dtype),
            **options,
        }

    def check_files(self) -> None:
        """Raises CorpusChangedError if a file changed since the open (see
        :meth:`arrowloader.Corpus.check_unchanged`)."""
        self.corpus.check_unchanged()

    # The native-path contract (arrowloader.native.NativeDataset). Batches follow the
    # loader's own (batch) sampler, and a position is the sampling generators' states at
    # the start of the epoch and the batches delivered since; or, for a rank-split run
    # (see the class docstring), the order is DistributedSampler's for (seed, epoch) and a
    # position is the epoch and the batches delivered in it; or, for a planned batch
    # sampler (arrowloader.batch_plans), the batches are its plan of (seed, epoch) and a
    # position is again the epoch and the batches delivered.

    def _split(self, settings: LoaderSettings) -> Optional[bool]:
        """Whether a loader with ``settings`` takes a rank's share (then: whether it
        shuffles), or None when it follows its sampler."""
        if self.world_size == 1:
            return None
        return settings.stock_shuffle()

    def native_supported(self, settings: LoaderSettings) -> bool:
        """Every sampler works: the batches follow it (or split it between ranks)."""
        return True

    def native_num_batches(self, settings: LoaderSettings) -> int:
        if self._split(settings) is None:
            return len(settings.batch_sampler)
        per_rank = rank_share(len(self), self.world_size, settings.drop_last)
        if settings.drop_last:
            return per_rank // settings.batch_size
        return -(-per_rank // settings.batch_size)

    def native_epoch(self, settings: LoaderSettings, start: EpochStart) -> PaddedEpoch:
        planner = planned_sampler(settings)
        if planner is not None:
            return PlannedEpoch(self, settings, start, planner)
        shuffle = self._split(settings)
        if shuffle is None:
            return SamplerEpoch(self, settings, start)
        return RankSplitEpoch(self, settings, start, shuffle)

    def native_state(self, settings: LoaderSettings, position: Optional[Position]) -> dict:
        planner = planned_sampler(settings)
        if planner is not None:
            return planned_state(planner, position)
        if self._split(settings) is not None:
            position = position or {"epoch": next_epoch(self._pinned_epoch, None), "samples": 0}
            return {
                "seed": settings.seed(0),
                "world_size": self.world_size,
                "epoch": position["epoch"],
                "samples": position["samples"],
            }
        if position is None:
            counted = "samples" if counts_samples(settings.batch_sampler) else "batches"
            position = {
                "generator_states": [g.get_state() for g in sampling_generators(settings)],
                "draws_base_seed": settings.first_iterator,
                counted: 0,
            }
        return dict(position)

    def native_load_state(self, settings: LoaderSettings, state: Any) -> Position:
        planner = planned_sampler(settings)
        if planner is not None:
            return check_planned_state(state, self, planner)
        if self._split(settings) is not None:
            return check_split_state(state, self, settings)
        return check_token_state(state, self, settings)

    def native_rewound(self, position: Optional[Position]) -> None:
        """Nothing to undo: the position lives in the loader alone."""

    def stats(self) -> dict[str, int]:
        """Counts about the corpus and truncation.

        ``truncated_tokens_per_epoch`` / ``truncated_documents_per_epoch``: what
        ``max_length`` drops from one pass over the corpus. ``truncated_tokens_served``:
        tokens dropped in the batches and items this process produced so far (worker
        processes of torch's DataLoader count their own).
        """
        tokens, documents = self._truncation
        return {
            "documents": len(self),
            "tokens": self.corpus.num_tokens,
            "files": len(self.corpus.files),
            "truncated_tokens_per_epoch": tokens,
            "truncated_documents_per_epoch": documents,
            "truncated_tokens_served": self._assembler.truncated_tokens
            + self._truncated_in_batches,
        }


def _check_options(
    *,
    source: Source,
    column: str,
    label_column: Optional[str],
    max_length: Optional[int],
    truncation_side: str,
    padding: str,
    pad_to_multiple_of: Optional[int],
    padding_side: str,
    pad_token_id: Optional[int],
    return_attention_mask: bool,
    causal_labels: bool,
    dtype: torch.dtype,
    require_end_of_stream: bool,
    index_cache: IndexCacheOption = None,
    mmap: bool = True,
    vocab_size: Optional[int] = None,
    rank: Optional[int] = None,
    world_size: Optional[int] = None,
    tokenizer: Optional[TokenizerLike] = None,
    extra_columns: Optional[Mapping[str, int]] = None,
    loss_mask_column: Optional[str] = None,
    prompt_length_column: Optional[str] = None,
    cache_dir: Union[str, os.PathLike, None] = None,
    cache_limit: Union[int, str, None] = None,
    filesystem: Optional[FileSystemLike] = None,
    storage_options: Optional[dict[str, Any]] = None,
) -> None:
    parse_size(cache_limit)  # raises on a malformed size before anything is fetched
    check_loss_mask_columns(column, loss_mask_column, prompt_length_column)
    if (loss_mask_column is not None or prompt_length_column is not None) and not causal_labels:
        which = "loss_mask_column" if loss_mask_column is not None else "prompt_length_column"
        raise ValueError(
            f"{which} masks causal labels; pass causal_labels=True (labels = input_ids with "
            "-100 on padding and on the tokens left out of the loss)"
        )
    for name in (loss_mask_column, prompt_length_column):
        if name is not None and name in (label_column, *(extra_columns or ())):
            raise ValueError(
                f"column {name!r} is the loss mask or prompt length and also "
                "label_column or an extra column; give each column one role"
            )
    if max_length is not None and (
        not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1
    ):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
    if truncation_side not in ("right", "left"):
        raise ValueError(f"truncation_side must be 'right' or 'left', got {truncation_side!r}")
    if padding not in ("longest", "max_length"):
        raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
    if padding == "max_length" and max_length is None:
        raise ValueError("padding='max_length' needs max_length")
    if pad_to_multiple_of is not None and (
        not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
    ):
        raise ValueError(
            f"pad_to_multiple_of must be a positive integer or None, got {pad_to_multiple_of!r}"
        )
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    if dtype not in NUMPY_DTYPES:
        raise ValueError(f"dtype must be torch.int64 or torch.int32, got {dtype}")
    if causal_labels and label_column is not None:
        raise ValueError(
            "causal_labels=True and label_column both produce 'labels'; choose one"
        )
    if vocab_size is not None:
        check_vocab_size(vocab_size)
    if pad_token_id is not None:
        check_token_id("pad_token_id", pad_token_id, vocab_size)
        limit = torch.iinfo(dtype)
        if not limit.min <= pad_token_id <= limit.max:
            raise ValueError(f"pad_token_id={pad_token_id} does not fit in {dtype}")
