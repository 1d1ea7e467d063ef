"""PackedDataset: documents packed into fixed-length rows for pretraining."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from arrowloader import _C
from arrowloader.buffers import NUMPY_DTYPES, BlockPool, output_buffers
from arrowloader.corpus import Corpus, check_loss_mask_columns, check_vocab_size
from arrowloader.manifest import check_ids_in_vocabulary
from arrowloader.native import (
    IGNORE_INDEX,
    Batch,
    BatchFigures,
    EpochStart,
    Item,
    LoaderSettings,
    Position,
    next_epoch,
)
from arrowloader.object_store import FileSystemLike
from arrowloader.packed_epoch import PackedEpoch, check_packed_state, packed_state
from arrowloader.ranks import resolve_distributed
from arrowloader.shard_cache import parse_size
from arrowloader.sources import Source
from arrowloader.vocabulary import (
    TokenizerLike,
    check_token_id,
    manifest_facts,
    resolve_facts,
    tokenizer_facts,
)
from arrowloader.windowed_shuffle import (
    check_window,
    window_block_starts,
    window_from_cache_limit,
    windowed_block_order,
    windowed_document_order,
)

logger = logging.getLogger("arrowloader")

MODES = ("concat", "bestfit")
#: What bestfit packing does with a document longer than a row (see PackedDataset).
OVERLONG = ("split", "truncate", "drop")
#: Outputs of a packed batch, in the order the native assembler takes them.
PACKED_OUTPUTS = ("input_ids", "labels", "position_ids", "cu_seqlens")


class PackedDataset(Dataset):
    """Documents packed into rows of ``seq_len`` tokens for causal language modelling.

    Every document is followed by ``eos_token_id``. Each epoch the documents are shuffled
    (a function of ``(seed, epoch)`` alone) and packed into *blocks*, each giving one row.
    Labels come in one of two conventions:

    - ``shift_labels=True`` (default): blocks of ``seq_len + 1`` tokens, ``input_ids =
      block[:-1]``, ``labels = block[1:]``: ``labels[i]`` is the target of position ``i``,
      for a loss computed directly, ``cross_entropy(logits.flatten(0, 1),
      labels.flatten(), ignore_index=-100)`` (Megatron, nanoGPT, torchtitan).
    - ``shift_labels=False``: Hugging Face's convention, for ``*ForCausalLM`` models,
      which shift inside their loss (given shifted labels they would learn to predict
      token ``t + 2``): blocks of ``seq_len`` tokens, ``labels = input_ids`` with -100
      where masked, as ``DataCollatorForLanguageModeling(mlm=False)`` and
      ``DataCollatorWithFlattening`` write them.

    - ``mode="concat"``: the documents form one stream cut into consecutive blocks
      (Megatron / nanoGPT); documents may cross blocks; the tail of the stream shorter
      than a block is left out of the epoch (it is elsewhere in the next one).
    - ``mode="bestfit"``: whole documents go, in epoch order, into the open block with the
      least room that still holds them (ties: the block opened first), and no document
      that fits a block is ever split. The rest of a block is ``pad_token_id`` with label
      -100, and labels never cross from one document into the next. A document whose
      piece (tokens and EOS) is longer than a block is *overlong*; ``overlong`` says what
      becomes of it. For fine-tuning, where an example must stay whole, use
      ``shift_labels=False`` with ``flash_attn_kwargs`` / ``return_seq_idx``: each row
      is then what ``DataCollatorWithFlattening(return_flash_attn_kwargs=True,
      return_seq_idx=True)`` makes of its documents (with their EOS), followed by
      padding.

    Completion-only loss (``loss_mask_column`` or ``prompt_length_column``, in either
    mode): labels whose target token is left out of the loss are -100 as well, as TRL
    masks prompts; the EOS after a document is in the loss exactly when the document's
    last token is.

    ``ds[i]`` is block ``i`` of the packing of :attr:`epoch` (0 unless :meth:`set_epoch`
    pinned another); :class:`arrowloader.DataLoader` assembles whole batches natively,
    shuffles the block order per epoch, counts its own epochs (see
    :mod:`arrowloader.native`: two loaders over one dataset do not move each other on),
    splits every global batch between distributed ranks and can resume mid-epoch from
    ``state_dict()``, also into a loader of another batch size (at the next block).

    Args:
        source: anything :class:`TokenDataset` accepts (for a folder written by
            ``arrowloader prepare``, ``eos_token_id`` and ``pad_token_id`` must be inside
            the vocabulary its manifest gives).
        seq_len: tokens per row.
        eos_token_id: appended to every document. Default: the tokenizer's EOS id, else
            the manifest's of a corpus written by ``arrowloader prepare``; one of the three
            must give it.
        mode: ``"concat"`` or ``"bestfit"``.
        column: the token column.
        seed: shuffling seed (a DataLoader ``generator`` overrides it with its
            ``initial_seed()``).
        shuffle_documents: shuffle documents before packing each epoch.
        mask_across_documents: in concat mode, -100 on labels whose target is the first
            token of the next document (always so in bestfit mode).
        pad_token_id: padding id in bestfit mode (default: ``eos_token_id``).
        return_position_ids: add ``position_ids`` restarting at 0 at every document start.
        return_cu_seqlens: batches carry ``cu_seqlens`` (int32, document boundaries over the
            flattened batch) and ``max_seqlen`` for variable-length attention kernels.
        dtype: ``torch.int64`` or ``torch.int32`` for ids, labels and positions.
        shift_labels: the labels' convention (above).
        flash_attn_kwargs: batches also carry Hugging Face's flash-attention keyword
            arguments, ``cu_seq_lens_q`` / ``cu_seq_lens_k`` (int32, = ``cu_seqlens``) and
            ``max_length_q`` / ``max_length_k`` (int), which its models read (they ignore
            ``cu_seqlens``).
        return_seq_idx: batches also carry ``seq_idx`` (int32 ``[B, seq_len]``, the
            segment of the flattened batch each position is in), as
            ``DataCollatorWithFlattening(return_seq_idx=True)`` writes it.
        rank, world_size: this process's share of every global batch; default: from
            ``torch.distributed`` when initialised, else 0 and 1.
        require_end_of_stream, mmap, vocab_size: as for :class:`TokenDataset`
            (``eos_token_id`` and ``pad_token_id`` must then lie in the vocabulary too).
        tokenizer: a ``transformers`` tokenizer, a ``tokenizers.Tokenizer`` or the path of
            a ``tokenizer.json``: ``eos_token_id``, ``pad_token_id`` and ``vocab_size``
            default to its EOS id, pad id and size (added tokens included), and
            ``vocab_size`` to the manifest's. An argument that disagrees with the tokenizer
            or the manifest, or a tokenizer that disagrees with the manifest, is refused
            with both values named; negative ids are refused.
        overlong: bestfit mode: what becomes of a document longer than a block (more than
            ``seq_len`` tokens with its EOS, ``seq_len + 1`` with shifted labels):
            ``"split"`` (default) cuts it into block-sized chunks packed like documents
            (pretraining: no token is lost); ``"truncate"`` keeps its first block of tokens
            as one row (its EOS and the rest are left out, as a tokenizer's ``max_length``
            truncation would cut them); ``"drop"`` leaves it out of every epoch. Either
            way they are counted (:meth:`stats`) and, at open, logged once.
        max_documents_per_row: bestfit mode: a block holding this many documents takes no
            more (None: no cap), for attention kernels or models with a limit on the
            segments of a row.
        loss_mask_column: completion-only loss: a per-token list column beside the tokens
            (bool, or integers 0 and 1, every row as long as its tokens; e.g. the
            ``assistant_masks`` of ``apply_chat_template``): labels of its 0 / false
            tokens are -100. A value other than 0 and 1 raises CorpusFormatError naming
            file, column and row when a batch holding it is made.
        prompt_length_column: completion-only loss the other way: an integer column, each
            document's prompt length ``p``; its first ``p`` tokens are left out of the loss
            (``0 <= p <=`` the document's length, checked for every row at open).
        prefetch_pages: for corpora larger than memory, read in random block order: tell
            the kernel not to read around each page fault (on some disks it reads
            megabytes around every 8 KiB block) and ask it, as each batch is queued, to
            start reading the pages of the batch
            :data:`arrowloader.packed_epoch.PREFETCH_BATCHES` further on, so
            that many reads are in flight at once. Default (None): on when the corpus
            files take more than half of the physical memory (never for ``mmap=False``).
        cache_dir, cache_limit, filesystem, storage_options: for a source in object
            storage, as for :class:`TokenDataset`.
        shuffle_window_shards: None (default): documents and blocks are shuffled over the
            whole corpus. K: the windowed shuffle of :mod:`arrowloader.windowed_shuffle`
            (concat mode, with ``shuffle_documents``): shard order shuffled per epoch,
            documents and blocks shuffled within windows of K shards, so an epoch reads
            about two windows' shards at any point rather than all of them. ``"auto"``:
            K from ``cache_limit`` (two windows of the largest shards fit in it).
    """

    def __init__(
        self,
        source: Source,
        seq_len: int,
        eos_token_id: Optional[int] = None,
        mode: str = "concat",
        column: str = "input_ids",
        seed: int = 0,
        shuffle_documents: bool = True,
        mask_across_documents: bool = False,
        pad_token_id: Optional[int] = None,
        return_position_ids: bool = True,
        return_cu_seqlens: bool = True,
        dtype: torch.dtype = torch.int64,
        shift_labels: bool = True,
        flash_attn_kwargs: bool = False,
        return_seq_idx: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        require_end_of_stream: bool = True,
        prefetch_pages: Optional[bool] = None,
        mmap: bool = True,
        vocab_size: Optional[int] = None,
        tokenizer: Optional[TokenizerLike] = None,
        overlong: str = "split",
        max_documents_per_row: Optional[int] = None,
        loss_mask_column: Optional[str] = None,
        prompt_length_column: Optional[str] = None,
        cache_dir: Union[str, os.PathLike, None] = None,
        cache_limit: Union[int, str, None] = None,
        filesystem: Optional[FileSystemLike] = None,
        storage_options: Optional[dict[str, Any]] = None,
        shuffle_window_shards: Union[int, str, None] = None,
    ) -> None:
        self._args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._configure(announce=True)

    def _configure(self, announce: bool = False) -> None:
        args = self._args
        if not isinstance(args["seq_len"], int) or args["seq_len"] < 1:
            raise ValueError(f"seq_len must be a positive integer, got {args['seq_len']!r}")
        if args["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {args['mode']!r}")
        if args["dtype"] not in NUMPY_DTYPES:
            raise ValueError(f"dtype must be torch.int64 or torch.int32, got {args['dtype']}")
        self.overlong: str = args.get("overlong", "split")
        self.max_documents_per_row: Optional[int] = args.get("max_documents_per_row")
        _check_bestfit_options(args["mode"], self.overlong, self.max_documents_per_row)
        self.loss_mask_column: Optional[str] = args.get("loss_mask_column")
        self.prompt_length_column: Optional[str] = args.get("prompt_length_column")
        check_loss_mask_columns(args["column"], self.loss_mask_column, self.prompt_length_column)
        vocab_size = args.get("vocab_size")
        if vocab_size is not None:
            check_vocab_size(vocab_size)
        for name in ("eos_token_id", "pad_token_id"):
            self._check_id(name, args[name], vocab_size)
        self.seq_len: int = args["seq_len"]
        self.mode: str = args["mode"]
        self.seed: int = args["seed"]
        self.shuffle_documents: bool = args["shuffle_documents"]
        self.return_position_ids: bool = args["return_position_ids"]
        self.return_cu_seqlens: bool = args["return_cu_seqlens"]
        self.shift_labels: bool = bool(args.get("shift_labels", True))
        self.flash_attn_kwargs: bool = bool(args.get("flash_attn_kwargs", False))
        self.return_seq_idx: bool = bool(args.get("return_seq_idx", False))
        #: Tokens per block: a row's inputs, plus the target of its last one when shifted.
        self.block_len: int = self.seq_len + (1 if self.shift_labels else 0)
        self.dtype: torch.dtype = args["dtype"]
        self._rank, self._world_size = args["rank"], args["world_size"]
        resolve_distributed(self._rank, self._world_size)  # validates them
        if args.get("shuffle_window_shards") not in (None, "auto"):
            self._resolve_window(args["shuffle_window_shards"])  # before any download
        self.corpus = Corpus(
            args["source"],
            args["column"],
            require_end_of_stream=args["require_end_of_stream"],
            mmap=args.get("mmap", True),
            vocab_size=vocab_size,
            loss_mask_column=self.loss_mask_column,
            prompt_length_column=self.prompt_length_column,
            cache_dir=args.get("cache_dir"),
            cache_limit=args.get("cache_limit"),
            filesystem=args.get("filesystem"),
            storage_options=args.get("storage_options"),
        )
        self._take_token_facts()
        self.shuffle_window_shards: Optional[int] = self._resolve_window(
            args.get("shuffle_window_shards")
        )
        self._windows: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._overlong_counts = self._count_overlong()
        if announce:
            self._announce_overlong()
        self._assembler = _C.PackedBatchAssembler(
            self.corpus.tokens,
            seq_len=self.seq_len,
            eos_token_id=self.eos_token_id,
            bestfit=self.mode == "bestfit",
            mask_across_documents=bool(args["mask_across_documents"]),
            pad_token_id=self.pad_token_id,
            label_pad_id=IGNORE_INDEX,
            shift_labels=self.shift_labels,
            max_pieces_per_block=self.max_documents_per_row or 0,
            overlong=self.overlong,
            loss_mask=self.corpus.loss_mask_view(),
        )
        prefetch = args.get("prefetch_pages")
        if prefetch is None:
            prefetch = args.get("mmap", True) and larger_than_half_of_memory(self.corpus)
        self.prefetch_pages: bool = bool(prefetch)
        if self.prefetch_pages:
            self.corpus.tokens.advise_random_access()
        #: The epoch set_epoch() pinned every loader's passes to, or None: each loader
        #: counts its own (see arrowloader.native).
        self._pinned_epoch: Optional[int] = None
        self._plans: dict[tuple[int, int], Any] = {}

    def _count_overlong(self) -> tuple[int, int]:
        """(documents, tokens left out) of every bestfit epoch: documents whose piece
        (tokens and EOS) is longer than a block, and the tokens (EOS included) that
        ``overlong`` truncates or drops of them. The same each epoch: packing order does not
        change which documents are too long."""
        if self.mode != "bestfit":
            return 0, 0
        # A piece is longer than a block when its document has more than block_len - 1
        # tokens; truncating it leaves out exactly the tokens beyond that, EOS for one.
        beyond, documents = self.corpus.tokens.truncation_loss(self.block_len - 1)
        if self.overlong == "drop":
            return documents, beyond + documents * self.block_len
        return documents, beyond if self.overlong == "truncate" else 0

    def _announce_overlong(self) -> None:
        documents, tokens = self._overlong_counts
        if documents == 0:
            return
        done = {
            "split": "splits them into row-sized chunks",
            "truncate": f"truncates them, leaving out {tokens} tokens",
            "drop": f"drops them, leaving out {tokens} tokens",
        }[self.overlong]
        logger.warning(
            "%d of %d documents are longer than a row (seq_len=%d, EOS included); "
            "overlong=%r %s each epoch; ds.stats() has the counts.",
            documents, self.corpus.num_rows, self.seq_len, self.overlong, done,
        )

    def stats(self) -> dict[str, Any]:
        """Counts about the corpus and what packing leaves out, per epoch.

        ``overlong_documents``: documents longer than a row (bestfit mode, EOS included);
        ``overlong_tokens_left_out``: the tokens (EOS included) that ``overlong`` truncates
        or drops of them (0 when they are split); ``overlong``: the policy.
        """
        documents, tokens = self._overlong_counts
        return {
            "documents": self.corpus.num_rows,
            "tokens": self.corpus.num_tokens,
            "files": len(self.corpus.files),
            "overlong": self.overlong,
            "overlong_documents": documents,
            "overlong_tokens_left_out": tokens,
        }

    def _check_id(self, name: str, value: Optional[int], vocab_size: Optional[int]) -> None:
        check_token_id(name, value, vocab_size)
        limit = torch.iinfo(self._args["dtype"])
        if value is not None and not limit.min <= value <= limit.max:
            raise ValueError(f"{name}={value} does not fit in {self._args['dtype']}")

    def _take_token_facts(self) -> None:
        """Resolves ``eos_token_id``, ``pad_token_id`` and ``vocab_size`` from the
        arguments, the tokenizer and the manifest (see the class docstring), and keeps the
        results as arguments, so that a pickled dataset reopens with them and no
        tokenizer.

        Raises:
            ValueError: two of them disagree, an id is out of range, or no EOS id is known.
        """
        args = self._args
        tokenizer = args.get("tokenizer")
        facts = resolve_facts(
            {name: args.get(name) for name in ("vocab_size", "eos_token_id", "pad_token_id")},
            None if tokenizer is None else tokenizer_facts(tokenizer),
            manifest_facts(self.corpus.manifest, str(args["source"])),
        )
        if facts["eos_token_id"] is None:
            raise ValueError(
                "PackedDataset needs eos_token_id (written after every document): pass it, "
                "or a tokenizer= that has one, or a corpus prepared with such a tokenizer"
            )
        vocab_size = facts["vocab_size"]
        for name in ("eos_token_id", "pad_token_id"):
            self._check_id(name, facts[name], vocab_size)
        self.eos_token_id: int = facts["eos_token_id"]
        self.pad_token_id: int = (
            self.eos_token_id if facts["pad_token_id"] is None else facts["pad_token_id"]
        )
        check_ids_in_vocabulary(
            self.corpus.manifest, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id
        )
        if vocab_size is not None:
            self.corpus.tokens.vocab_size = check_vocab_size(vocab_size)
        args.update(facts, tokenizer=None)

    # Pickling by arguments: workers reopen and remap the files.
    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "epoch": self._pinned_epoch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = dict(state["args"])
        self._configure()
        self._pinned_epoch = state.get("epoch")

    def __repr__(self) -> str:
        return (
            f"PackedDataset({self.corpus.num_rows} documents, {self.corpus.num_tokens} tokens, "
            f"mode={self.mode!r}, seq_len={self.seq_len}, epoch={self.epoch})"
        )

    @property
    def rank(self) -> int:
        """This process's rank (explicit, else torch.distributed's, else 0)."""
        return resolve_distributed(self._rank, self._world_size)[0]

    @property
    def world_size(self) -> int:
        """Processes sharing every global batch (explicit, else torch.distributed's, else 1)."""
        return resolve_distributed(self._rank, self._world_size)[1]

    @property
    def epoch(self) -> int:
        """The epoch ``ds[i]`` and ``len(ds)`` refer to: the one :meth:`set_epoch` pinned,
        else 0. A DataLoader's passes play their own count unless pinned."""
        return 0 if self._pinned_epoch is None else self._pinned_epoch

    def set_epoch(self, epoch: int) -> None:
        """Pins the epoch whose document order (and block order) ``ds[i]`` and every
        DataLoader pass over the dataset use, as ``DistributedSampler.set_epoch`` does
        (see :mod:`arrowloader.native`); without it each loader counts its own."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._pinned_epoch = epoch

    def document_order(self, epoch: int, seed: Optional[int] = None) -> np.ndarray:
        """The order documents are packed in for ``epoch``: int64 ``[documents]``."""
        n = self.corpus.num_rows
        if not self.shuffle_documents:
            return np.arange(n, dtype=np.int64)
        seed = self.seed if seed is None else seed
        if self.shuffle_window_shards is not None:
            return self._window_plan(epoch, seed)[0]
        return _C.seeded_permutation(seed, 2 * epoch, n)

    def block_order(self, epoch: int, seed: int, num_blocks: int) -> np.ndarray:
        """The shuffled order of ``epoch``'s blocks: int64 ``[num_blocks]``."""
        if self.shuffle_window_shards is not None:
            order, starts = self._window_plan(epoch, seed)
            lengths = np.diff(np.asarray(self.corpus.tokens.token_offsets()))
            bounds = window_block_starts(lengths, order, starts, self.block_len, num_blocks)
            return windowed_block_order(bounds, seed, epoch)
        return _C.seeded_permutation(seed, 2 * epoch + 1, num_blocks)

    def _window_plan(self, epoch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The windowed document order of ``epoch`` and its window starts (the last two
        epochs' kept)."""
        key = (epoch, seed)
        if key not in self._windows:
            while len(self._windows) >= 2:
                self._windows.pop(next(iter(self._windows)))
            rows = [f.num_rows for f in self.corpus.files]
            self._windows[key] = windowed_document_order(
                rows, self.shuffle_window_shards or 1, seed, epoch
            )
        return self._windows[key]

    def _resolve_window(self, window: Union[int, str, None]) -> Optional[int]:
        """``shuffle_window_shards`` as a count of shards, checked against the options."""
        if window is None:
            return None
        if self.mode != "concat" or not self.shuffle_documents:
            raise ValueError(
                "shuffle_window_shards needs mode='concat' and shuffle_documents=True (it "
                f"shuffles documents and blocks within windows), got mode={self.mode!r}, "
                f"shuffle_documents={self.shuffle_documents}"
            )
        if window == "auto":
            limit = parse_size(self._args.get("cache_limit"))
            if limit is None:
                raise ValueError(
                    "shuffle_window_shards='auto' takes the window from cache_limit; pass "
                    "cache_limit, or a window size"
                )
            return window_from_cache_limit(
                limit, [os.path.getsize(f.path) for f in self.corpus.files]
            )
        return check_window(window)

    def plan(self, epoch: Optional[int] = None, seed: Optional[int] = None) -> Any:
        """The packing of ``epoch`` (default: the current one); kept for the last two
        epochs asked for, since each costs one pass over the documents."""
        key = (self.epoch if epoch is None else epoch, self.seed if seed is None else seed)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._assembler.plan(self.document_order(*key))
            while len(self._plans) >= 2:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        return plan

    def __len__(self) -> int:
        """Blocks (rows) in :attr:`epoch` (torch's samplers ask for len() when a
        DataLoader is built, before its seed is known: the dataset's seed is used)."""
        return self.blocks_in_epoch(self.epoch, self.seed)

    def __getitem__(self, index: int) -> Item:
        """Block ``index`` of the current epoch: ``input_ids``, ``labels`` and
        ``position_ids``, each ``[seq_len]`` of the dataset's dtype. ``position_ids`` is
        left out only when neither ``return_position_ids`` nor ``return_cu_seqlens`` is set:
        :meth:`collate` derives ``cu_seqlens`` from it (and then drops it if not asked)."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"block {index} is out of range for an epoch of {n} blocks")
        batch, outputs = self._allocate(1, pin=False)
        self._assembler.assemble(self.plan(), np.array([index % n], dtype=np.int64), *outputs)
        return {k: batch[k][0] for k in ("input_ids", "labels", "position_ids") if k in batch}

    def assemble(
        self, blocks: Sequence[int], epoch: Optional[int] = None, seed: Optional[int] = None
    ) -> Batch:
        """Blocks of ``epoch``'s packing (shuffled with ``seed``) as one batch, on the
        calling thread."""
        plan = self.plan(epoch, seed)
        rows = np.asarray(blocks, dtype=np.int64)
        batch, outputs = self._allocate(len(rows), pin=False)
        values = self._assembler.assemble(plan, rows, *outputs)
        return self._finish(batch, values)

    def collate(self, items: Sequence[Item]) -> Batch:
        """Stacks ``ds[i]`` results into a batch exactly like the native path: ``input_ids``,
        ``labels``, ``position_ids`` ``[B, seq_len]``, plus ``cu_seqlens`` (int32) and
        ``max_seqlen`` (int) derived from the position ids."""
        batch = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        if self._needs_cu_seqlens:
            positions = batch.get("position_ids")
            if positions is None:
                raise ValueError("collate needs position_ids to derive cu_seqlens")
            flat = positions.reshape(-1)
            starts = torch.nonzero(flat == 0).reshape(-1)
            ends = torch.cat([starts[1:], torch.tensor([flat.numel()])])
            batch["cu_seqlens"] = torch.cat([starts, torch.tensor([flat.numel()])]).to(
                torch.int32
            )
            batch["max_seqlen"] = int((ends - starts).max()) if len(starts) else 0
        return self._with_requested_keys(batch)

    @property
    def _needs_cu_seqlens(self) -> bool:
        """Whether batches are made with cu_seqlens: asked for, or the keyword arguments
        of Hugging Face's flash attention or seq_idx (derived from it) are."""
        return self.return_cu_seqlens or self.flash_attn_kwargs or self.return_seq_idx

    def _with_requested_keys(self, batch: Batch) -> Batch:
        """A batch with ``cu_seqlens`` and ``max_seqlen`` (when made) completed into the
        keys the dataset was asked for: Hugging Face's flash-attention names
        (``cu_seq_lens_q``/``_k``: int32 ``[segments + 1]``, ``max_length_q``/``_k``: int,
        as ``DataCollatorWithFlattening(return_flash_attn_kwargs=True)`` writes them),
        ``seq_idx`` (int32 ``[B, seq_len]``: the segment of the flattened batch each
        position is in), and without what was not asked for."""
        if self.flash_attn_kwargs:
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = batch["cu_seqlens"]
            batch["max_length_q"] = batch["max_length_k"] = batch["max_seqlen"]
        if self.return_seq_idx:
            cu = batch["cu_seqlens"].to(torch.int64)
            segments = torch.arange(len(cu) - 1, dtype=torch.int32)
            batch["seq_idx"] = torch.repeat_interleave(segments, cu[1:] - cu[:-1]).view(
                batch["input_ids"].shape
            )
        if not self.return_cu_seqlens:
            batch.pop("cu_seqlens", None)
            batch.pop("max_seqlen", None)
        if not self.return_position_ids:
            batch.pop("position_ids", None)
        return batch

    def _allocate(self, n: int, pin: bool) -> tuple[Batch, tuple]:
        """Fresh output tensors for ``n`` rows and the numpy views the native side writes:
        pinned when ``pin`` (then never reused while a copy to the device may read them; see
        :mod:`arrowloader.buffers`)."""
        batches, arrays = self._allocate_group(n, 1, pin)
        return batches[0], arrays

    def _allocate_group(
        self, rows: int, batches: int, pin: bool, pool: Optional[BlockPool] = None
    ) -> tuple[list[Batch], tuple]:
        """Outputs of ``batches`` consecutive batches of ``rows`` rows, written by one native
        job (``submit(..., batches=batches)``).

        Returns each batch's dict of tensors and the numpy arrays of the whole group, in
        :data:`PACKED_OUTPUTS` order (None for an output not asked for): ``input_ids``,
        ``labels``, ``position_ids`` ``[batches * rows, seq_len]``; ``cu_seqlens`` int32
        ``[batches * (rows * seq_len + 1)]``. Batch ``j``'s tensors are views of rows ``j *
        rows ..`` of those arrays, so its memory lives as long as any batch of the group is
        held; its ``cu_seqlens`` is its whole run (a numpy array when pageable) until
        :meth:`_finish` cuts it. Pageable outputs take their block from ``pool`` when
        given."""
        n = rows * batches
        shape = (n, self.seq_len)
        cu_seqlens = self._needs_cu_seqlens
        # position ids are needed to derive cu_seqlens in collate(); the native path
        # computes both anyway.
        positions = self.return_position_ids or cu_seqlens
        cu_run = rows * self.seq_len + 1
        specs = [
            (shape, self.dtype),
            (shape, self.dtype),
            (shape, self.dtype) if positions else None,
            ((batches * cu_run,), torch.int32) if cu_seqlens else None,
        ]
        buffers = output_buffers(specs, pin, interleaved=True, pool=pool)
        arrays = tuple(None if buffer is None else buffer[1] for buffer in buffers)
        group: list[Batch] = [{} for _ in range(batches)]
        # Batch j's views, output by output: the consuming thread pays this per batch, so
        # it is kept to one view each. Pinned tensors are sliced as tensors, so the views
        # keep the caching host allocator's block (see arrowloader.buffers); pageable ones
        # through numpy, which is cheaper.
        for name, buffer in zip(PACKED_OUTPUTS[:3], buffers[:3]):
            if buffer is None:
                continue
            tensor, array = buffer
            if batches == 1:
                group[0][name] = tensor
                continue
            for j, batch in enumerate(group):
                part = slice(j * rows, (j + 1) * rows)
                batch[name] = tensor[part] if pin else torch.from_numpy(array[part])
        if cu_seqlens:
            # Only its first entries are used; _finish takes the view of those, so a pageable
            # batch holds the numpy run until then.
            tensor, array = buffers[3]
            whole = tensor if pin else array
            for j, batch in enumerate(group):
                batch["cu_seqlens"] = whole[j * cu_run : (j + 1) * cu_run]
        return group, arrays

    def _finish(self, batch: Batch, figures: BatchFigures) -> Batch:
        """A natively assembled batch as the dataset yields it; ``figures``: the length of
        its ``cu_seqlens`` and its ``max_seqlen``."""
        cu_length, max_seqlen = figures
        cu_seqlens = batch.get("cu_seqlens")
        if cu_seqlens is not None:
            cu_seqlens = cu_seqlens[:cu_length]
            batch["cu_seqlens"] = (
                torch.from_numpy(cu_seqlens) if isinstance(cu_seqlens, np.ndarray) else cu_seqlens
            )
            batch["max_seqlen"] = max_seqlen
        if self.flash_attn_kwargs or self.return_seq_idx or not self.return_position_ids:
            return self._with_requested_keys(batch)
        return batch

    def fingerprint(self) -> dict[str, Any]:
        """What a saved loader state must match to be resumed on this dataset."""
        # Planning needs the token prefix sums anyway; with them the content digest is
        # taken from their differences, ~5x faster than row by row.
        self.corpus.tokens.token_offsets()
        return {
            "documents": self.corpus.num_rows,
            "tokens": self.corpus.num_tokens,
            "files": [os.fspath(f.path.name) for f in self.corpus.files],
            "content": self.corpus.content_digest(),
            "seq_len": self.seq_len,
            "mode": self.mode,
            "eos_token_id": self.eos_token_id,
            "shuffle_documents": self.shuffle_documents,
            # Added with the choice of convention; left out when shifted (the default), so
            # that states saved before it still load. The same for the options below.
            **({} if self.shift_labels else {"shift_labels": False}),
            **({} if self.overlong == "split" else {"overlong": self.overlong}),
            **(
                {} if self.max_documents_per_row is None
                else {"max_documents_per_row": self.max_documents_per_row}
            ),
            **({"loss_mask_column": self.loss_mask_column} if self.loss_mask_column else {}),
            **(
                {"shuffle_window_shards": self.shuffle_window_shards}
                if self.shuffle_window_shards is not None else {}
            ),
            **(
                {"prompt_length_column": self.prompt_length_column}
                if self.prompt_length_column else {}
            ),
        }

    def check_files(self) -> None:
        """Raises CorpusChangedError if a file changed since the open (see
        :meth:`arrowloader.Corpus.check_unchanged`)."""
        self.corpus.check_unchanged()

    # The native-path contract (arrowloader.native.NativeDataset): the dataset plans its
    # own (seed, epoch) order, so only torch's stock samplers (shuffle or not) go native;
    # a position is the epoch and the blocks of global batches delivered in it.

    def native_supported(self, settings: LoaderSettings) -> bool:
        return settings.stock_shuffle() is not None

    def blocks_in_epoch(self, epoch: int, seed: int) -> int:
        """Blocks of ``epoch``'s packing shuffled with ``seed`` (concat: every epoch's)."""
        if self.mode == "concat":
            # The stream's length does not depend on the order: no epoch to plan.
            return (self.corpus.num_tokens + self.corpus.num_rows) // self.block_len
        return self.plan(epoch, seed).num_blocks

    def native_num_batches(self, settings: LoaderSettings) -> int:
        epoch = next_epoch(self._pinned_epoch, settings.position)
        blocks = self.blocks_in_epoch(epoch, settings.seed(self.seed))
        return blocks // (settings.batch_size * self.world_size)

    def native_epoch(self, settings: LoaderSettings, start: EpochStart) -> PackedEpoch:
        return PackedEpoch(self, settings, start)

    def native_state(self, settings: LoaderSettings, position: Optional[Position]) -> dict:
        if position is None:
            position = {"epoch": next_epoch(self._pinned_epoch, None), "samples_consumed": 0}
        return packed_state(self, settings, position)

    def native_load_state(self, settings: LoaderSettings, state: Any) -> Position:
        return check_packed_state(state, self, settings, self.blocks_in_epoch)

    def native_rewound(self, position: Optional[Position]) -> None:
        """Nothing to undo: the position lives in the loader alone."""


def _check_bestfit_options(
    mode: str, overlong: object, max_documents_per_row: object
) -> None:
    """Raises ValueError (TypeError for a non-integer cap), naming the argument, for a
    bad ``overlong`` or ``max_documents_per_row``, or either set in concat mode, where
    documents run across blocks and neither applies."""
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
    if max_documents_per_row is not None:
        if not isinstance(max_documents_per_row, int) or isinstance(max_documents_per_row, bool):
            raise TypeError(
                "max_documents_per_row must be a positive int or None, got "
                f"{type(max_documents_per_row).__name__}"
            )
        if max_documents_per_row < 1:
            raise ValueError(
                f"max_documents_per_row must be positive, got {max_documents_per_row}"
            )
    if mode != "bestfit" and (overlong != "split" or max_documents_per_row is not None):
        which = "overlong" if overlong != "split" else "max_documents_per_row"
        raise ValueError(
            f"{which} applies to mode='bestfit'; in mode={mode!r} documents run across "
            "blocks"
        )


def larger_than_half_of_memory(corpus: Corpus) -> bool:
    """Whether the corpus files take more than half of the physical memory (then the page
    cache cannot be expected to hold them: see ``PackedDataset(prefetch_pages=...)``)."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    total = 0
    for opened in corpus.files:
        try:
            total += os.stat(opened.path).st_size
        except OSError:
            continue
    return total > memory // 2
