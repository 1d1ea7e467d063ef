"""PackedDataset: documents packed into fixed-length rows for pretraining."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed
from torch.utils.data import BatchSampler, Dataset, RandomSampler, SequentialSampler

from arrowloader import _C
from arrowloader.buffers import NUMPY_DTYPES, BlockPool, output_buffers
from arrowloader.corpus import Corpus, check_vocab_size
from arrowloader.dataset import GROUP_BATCHES, IGNORE_INDEX, Batch, Item
from arrowloader.manifest import check_ids_in_vocabulary
from arrowloader.sources import Source

MODES = ("concat", "bestfit")
#: With ``prefetch_pages``, how many batches ahead of the one being queued the loader asks
#: the kernel for the pages of (a batch of 8 blocks of 2049 int32 tokens is about 64 KiB of
#: pages, so up to 16 MiB of reads in flight). The window opens gradually, by at most
#: ``PREFETCH_RAMP`` batches per batch queued, so that the first batch does not wait for
#: the reads of the whole window to be queued.
PREFETCH_BATCHES = 256
PREFETCH_RAMP = 4
#: Outputs of a packed batch, in the order the native assembler takes them.
PACKED_OUTPUTS = ("input_ids", "labels", "position_ids", "cu_seqlens")


class PackedDataset(Dataset):
    """Documents packed into rows of ``seq_len`` tokens for causal language modelling.

    Every document is followed by ``eos_token_id``. Each epoch the documents are shuffled
    (a function of ``(seed, epoch)`` alone) and packed into *blocks* of ``seq_len + 1``
    tokens; a block gives one row with ``input_ids = block[:-1]`` and
    ``labels = block[1:]``.

    - ``mode="concat"``: the documents form one stream cut into consecutive blocks
      (Megatron / nanoGPT); documents may cross blocks; the tail of the stream shorter
      than a block is left out of the epoch (it is elsewhere in the next one).
    - ``mode="bestfit"``: whole documents go, in epoch order, into the open block with the
      least room that still holds them; only documents longer than a block are split. The
      rest of a block is ``pad_token_id`` with label -100, and labels never cross from one
      document into the next.

    ``ds[i]`` is block ``i`` of the current epoch's packing (set with :meth:`set_epoch`);
    :class:`arrowloader.DataLoader` assembles whole batches natively, shuffles the block
    order per epoch, splits every global batch between distributed ranks and can resume
    mid-epoch from ``state_dict()``.

    Args:
        source: anything :class:`TokenDataset` accepts (for a folder written by
            ``arrowloader prepare``, ``eos_token_id`` and ``pad_token_id`` must be inside
            the vocabulary its manifest gives).
        seq_len: tokens per row.
        eos_token_id: appended to every document.
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
        rank, world_size: this process's share of every global batch; default: from
            ``torch.distributed`` when initialised, else 0 and 1.
        require_end_of_stream, mmap, vocab_size: as for :class:`TokenDataset`
            (``eos_token_id`` and ``pad_token_id`` must then lie in the vocabulary too).
        prefetch_pages: for corpora larger than memory, read in random block order: tell
            the kernel not to read around each page fault (on some disks it reads
            megabytes around every 8 KiB block) and ask it, as each batch is queued, to
            start reading the pages of the batch :data:`PREFETCH_BATCHES` further on, so
            that many reads are in flight at once. Default (None): on when the corpus
            files take more than half of the physical memory (never for ``mmap=False``).
    """

    def __init__(
        self,
        source: Source,
        seq_len: int,
        eos_token_id: int,
        mode: str = "concat",
        column: str = "input_ids",
        seed: int = 0,
        shuffle_documents: bool = True,
        mask_across_documents: bool = False,
        pad_token_id: Optional[int] = None,
        return_position_ids: bool = True,
        return_cu_seqlens: bool = True,
        dtype: torch.dtype = torch.int64,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        require_end_of_stream: bool = True,
        prefetch_pages: Optional[bool] = None,
        mmap: bool = True,
        vocab_size: Optional[int] = None,
    ) -> None:
        self._args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self._configure()

    def _configure(self) -> None:
        args = self._args
        if not isinstance(args["seq_len"], int) or args["seq_len"] < 1:
            raise ValueError(f"seq_len must be a positive integer, got {args['seq_len']!r}")
        if args["mode"] not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {args['mode']!r}")
        if args["dtype"] not in NUMPY_DTYPES:
            raise ValueError(f"dtype must be torch.int64 or torch.int32, got {args['dtype']}")
        limit = torch.iinfo(args["dtype"])
        for name in ("eos_token_id", "pad_token_id"):
            value = args[name]
            if value is not None and not limit.min <= value <= limit.max:
                raise ValueError(f"{name}={value} does not fit in {args['dtype']}")
        self.seq_len: int = args["seq_len"]
        self.eos_token_id: int = args["eos_token_id"]
        self.mode: str = args["mode"]
        self.seed: int = args["seed"]
        self.shuffle_documents: bool = args["shuffle_documents"]
        self.pad_token_id: int = (
            args["eos_token_id"] if args["pad_token_id"] is None else args["pad_token_id"]
        )
        self.return_position_ids: bool = args["return_position_ids"]
        self.return_cu_seqlens: bool = args["return_cu_seqlens"]
        self.dtype: torch.dtype = args["dtype"]
        self._rank, self._world_size = args["rank"], args["world_size"]
        resolve_distributed(self._rank, self._world_size)  # validates them
        vocab_size = args.get("vocab_size")
        if vocab_size is not None:
            check_vocab_size(vocab_size)
            for name in ("eos_token_id", "pad_token_id"):
                value = args[name]
                if value is not None and not 0 <= value < vocab_size:
                    raise ValueError(
                        f"{name}={value} is outside the vocabulary [0, {vocab_size})"
                    )
        self.corpus = Corpus(
            args["source"],
            args["column"],
            require_end_of_stream=args["require_end_of_stream"],
            mmap=args.get("mmap", True),
            vocab_size=vocab_size,
        )
        check_ids_in_vocabulary(
            self.corpus.manifest, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id
        )
        self._assembler = _C.PackedBatchAssembler(
            self.corpus.tokens,
            seq_len=self.seq_len,
            eos_token_id=self.eos_token_id,
            bestfit=self.mode == "bestfit",
            mask_across_documents=bool(args["mask_across_documents"]),
            pad_token_id=self.pad_token_id,
            label_pad_id=IGNORE_INDEX,
        )
        prefetch = args.get("prefetch_pages")
        if prefetch is None:
            prefetch = args.get("mmap", True) and larger_than_half_of_memory(self.corpus)
        self.prefetch_pages: bool = bool(prefetch)
        if self.prefetch_pages:
            self.corpus.tokens.advise_random_access()
        self.epoch = 0
        self._plans: dict[tuple[int, int], Any] = {}

    # Pickling by arguments: workers reopen and remap the files.
    def __getstate__(self) -> dict[str, Any]:
        return {"args": self._args, "epoch": self.epoch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = dict(state["args"])
        self._configure()
        self.epoch = state["epoch"]

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

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose document order (and block order) is used."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def document_order(self, epoch: int, seed: Optional[int] = None) -> np.ndarray:
        """The order documents are packed in for ``epoch``: int64 ``[documents]``."""
        n = self.corpus.num_rows
        if not self.shuffle_documents:
            return np.arange(n, dtype=np.int64)
        return _C.seeded_permutation(self.seed if seed is None else seed, 2 * epoch, n)

    def block_order(self, epoch: int, seed: int, num_blocks: int) -> np.ndarray:
        """The shuffled order of ``epoch``'s blocks: int64 ``[num_blocks]``."""
        return _C.seeded_permutation(seed, 2 * epoch + 1, num_blocks)

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
        """Blocks (rows) in the current epoch."""
        if self.mode == "concat":
            # The stream's length does not depend on the order: no epoch to plan (torch's
            # samplers ask for len() when a DataLoader is built, before its seed is known).
            return (self.corpus.num_tokens + self.corpus.num_rows) // (self.seq_len + 1)
        return self.plan().num_blocks

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
        if self.return_cu_seqlens:
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
        job (``submit(..., batches=batches)``): returns each batch's dict of tensors and
        the numpy arrays of the whole group, in :data:`PACKED_OUTPUTS` order (None for an
        output not asked for). ``input_ids``, ``labels``, ``position_ids``: ``[batches *
        rows, seq_len]``; ``cu_seqlens``: int32 ``[batches * (rows * seq_len + 1)]``. Batch
        ``j``'s tensors are views of rows ``j * rows ..`` of those arrays, so its memory
        lives as long as any batch of the group is held. Pageable outputs take their block
        from ``pool`` when given."""
        n = rows * batches
        shape = (n, self.seq_len)
        # position ids are needed to derive cu_seqlens in collate(); the native path
        # computes both anyway.
        positions = self.return_position_ids or self.return_cu_seqlens
        cu_run = rows * self.seq_len + 1
        specs = [
            (shape, self.dtype),
            (shape, self.dtype),
            (shape, self.dtype) if positions else None,
            ((batches * cu_run,), torch.int32) if self.return_cu_seqlens else None,
        ]
        buffers = output_buffers(specs, pin, interleaved=True, pool=pool)
        arrays = tuple(None if buffer is None else buffer[1] for buffer in buffers)
        named = [(name, buffer) for name, buffer in zip(PACKED_OUTPUTS, buffers) if buffer]
        if batches == 1:
            return [{name: buffer[0] for name, buffer in named}], arrays
        group: list[Batch] = []
        for j in range(batches):
            batch: Batch = {}
            for name, (tensor, array) in named:
                run = cu_run if name == "cu_seqlens" else rows
                # Pinned tensors are sliced as tensors, so the views keep the caching host
                # allocator's block (see arrowloader.buffers); pageable ones through numpy,
                # which is cheaper.
                view = slice(j * run, (j + 1) * run)
                batch[name] = tensor[view] if pin else torch.from_numpy(array[view])
            group.append(batch)
        return group, arrays

    def _finish(self, batch: Batch, values: tuple[int, int]) -> Batch:
        if self.return_cu_seqlens:
            batch["cu_seqlens"] = batch["cu_seqlens"][: values[0]]
            batch["max_seqlen"] = values[1]
        if not self.return_position_ids:
            batch.pop("position_ids", None)
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
        }

    def check_files(self) -> None:
        """Raises CorpusChangedError if a file changed since the open (see
        :meth:`arrowloader.Corpus.check_unchanged`)."""
        self.corpus.check_unchanged()

    def _native_epoch(self, loader: Any, pin: bool, first_iterator: bool) -> PackedEpoch:
        return PackedEpoch(self, loader, pin)


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


def resolve_distributed(rank: Optional[int], world_size: Optional[int]) -> tuple[int, int]:
    """(rank, world_size): the explicit ones, else torch.distributed's when it is
    initialised, else (0, 1).

    Raises:
        ValueError: only one of them is given, or rank is not in range(world_size).
    """
    if (rank is None) != (world_size is None):
        raise ValueError("pass both rank and world_size, or neither")
    if rank is not None and world_size is not None:
        if not (isinstance(world_size, int) and world_size >= 1 and 0 <= rank < world_size):
            raise ValueError(f"rank {rank} is not in range(world_size={world_size})")
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def native_packed_shuffle(loader: Any) -> Optional[bool]:
    """Whether the loader asks for shuffled blocks, or None when its sampler is custom
    (then torch's own path iterates the dataset)."""
    batch_sampler = loader.batch_sampler
    if type(batch_sampler) is not BatchSampler:
        return None
    sampler = batch_sampler.sampler
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True
    if type(sampler) is SequentialSampler:
        return False
    return None


class PackedEpoch:
    """One pass of a DataLoader over a PackedDataset.

    The epoch's blocks, in (seed, epoch)-shuffled order, are cut into *global* batches of
    ``batch_size * world_size`` blocks; this rank takes its ``batch_size`` slice of each.
    The global order does not depend on the world size, and a global batch that would be
    incomplete at the end of the epoch is left out (fewer than ``batch_size *
    world_size`` blocks per epoch, a different set each epoch).
    """

    def __init__(self, dataset: PackedDataset, loader: Any, pin: bool) -> None:
        self._dataset = dataset
        self._pin = pin
        # Batches per native job. Pinned batches keep one job each: their tensors come
        # from torch's caching host allocator block by block (see arrowloader.buffers).
        self.group = 1 if pin else GROUP_BATCHES
        # Pageable blocks are reused once no batch refers to them: room for the jobs the
        # loader keeps in flight, the one being consumed and one more.
        from arrowloader.loader import default_num_threads  # (loader imports this module)

        threads = loader.num_workers or default_num_threads()
        self._blocks = BlockPool((loader.prefetch_factor or 2) * threads + 2)
        self._batch_size = loader.batch_size
        self._rank, self._world_size = dataset.rank, dataset.world_size
        self._global = self._batch_size * self._world_size
        generator = loader.generator
        self.seed = dataset.seed if generator is None else generator.initial_seed()
        self.epoch = dataset.epoch
        self._plan = dataset.plan(self.epoch, self.seed)
        num_blocks = self._plan.num_blocks
        shuffle = native_packed_shuffle(loader)
        self._order = (
            dataset.block_order(self.epoch, self.seed, num_blocks)
            if shuffle
            else np.arange(num_blocks, dtype=np.int64)
        )
        resume_state = loader._take_resume()
        resume = (
            resume_state["samples_consumed"]
            if resume_state is not None and resume_state["epoch"] == self.epoch
            else 0
        )
        self.samples_consumed = resume  # blocks of global batches already yielded
        self._next = resume  # start of the next global batch to submit
        self._end = resume + (num_blocks - resume) // self._global * self._global
        self._loader_progress = loader._progress
        self._loader_progress({"epoch": self.epoch, "samples_consumed": resume})
        self._ended = False  # the loader was told this epoch is over
        # Start of the next global batch whose pages to prefetch (prefetch_pages only).
        self._prefetched = resume

    def __len__(self) -> int:
        return (self._end - self.samples_consumed) // self._global

    def _end_epoch(self) -> None:
        """The next iterator starts the next epoch."""
        self._ended = True
        self._dataset.set_epoch(self.epoch + 1)
        self._loader_progress({"epoch": self.epoch + 1, "samples_consumed": 0})

    def exhausted(self) -> None:
        if not self._ended and self.samples_consumed >= self._end:
            self._end_epoch()

    def submit(self, pool: Any) -> Optional[list[tuple]]:
        if self._next >= self._end:
            if self.samples_consumed >= self._end and not self._ended:
                # Nothing of this epoch is left to deliver (e.g. resumed with a larger
                # global batch than fits in its rest): it is over, and the next iterator
                # must start the next epoch, not this one again.
                self._end_epoch()
            return None
        # Up to `group` batches in one native job: fewer submissions, allocations and
        # thread wake-ups per batch (see GROUP_BATCHES).
        count = min(self.group, (self._end - self._next) // self._global)
        size = self._batch_size
        if self._dataset.prefetch_pages:
            self._prefetch_pages(count)
        # This rank's slice of each of `count` global batches (a view at world size 1).
        span = self._order[self._next : self._next + count * self._global]
        mine = slice(self._rank * size, (self._rank + 1) * size)
        blocks = span.reshape(count, self._global)[:, mine].reshape(-1)
        self._next += count * self._global
        batches, outputs = self._dataset._allocate_group(size, count, self._pin, self._blocks)
        ticket = self._dataset._assembler.submit(
            pool, self._plan, blocks, *outputs, batches=count
        )
        return [(ticket, j, batch, self._finish) for j, batch in enumerate(batches)]

    def _prefetch_pages(self, queued: int) -> None:
        """Asks the kernel for the pages of this rank's batches up to
        :data:`PREFETCH_BATCHES` global batches ahead of the next one to queue (at most
        :data:`PREFETCH_RAMP` more per batch just queued, ``queued`` of them)."""
        self._prefetched = max(self._prefetched, self._next)
        ahead = min(
            self._end,
            self._next + PREFETCH_BATCHES * self._global,
            self._prefetched + PREFETCH_RAMP * queued * self._global,
        )
        assembler, plan = self._dataset._assembler, self._plan
        while self._prefetched < ahead:
            begin = self._prefetched + self._rank * self._batch_size
            assembler.prefetch(plan, self._order[begin : begin + self._batch_size])
            self._prefetched += self._global

    def _finish(self, batch: Batch, values: tuple[int, int]) -> Batch:
        self.samples_consumed += self._global
        if self.samples_consumed >= self._end:
            self._end_epoch()
        else:
            self._loader_progress(
                {"epoch": self.epoch, "samples_consumed": self.samples_consumed}
            )
        return self._dataset._finish(batch, values)
