"""TokenDataset: documents of token ids from memory-mapped Arrow files, padded in C++."""

from __future__ import annotations

import itertools
import logging
import operator
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from arrowloader import _C
from arrowloader.buffers import NUMPY_DTYPES, output_buffers
from arrowloader.corpus import Corpus, check_vocab_size
from arrowloader.corpus_index import IndexCacheOption
from arrowloader.manifest import check_ids_in_vocabulary
from arrowloader.plan import EpochPlan
from arrowloader.sources import Source

logger = logging.getLogger("arrowloader")

#: Label value on padded positions (ignored by torch.nn.functional.cross_entropy).
IGNORE_INDEX = -100
#: Batches the DataLoader has one native job write (pageable outputs). Each job costs a
#: submission, thread wake-ups and Python bookkeeping, which for W2's batches (8 x 2048
#: tokens, ~25 us of native work) took about as long as the work itself; a seq_len=16 loop
#: ran at 13 us a batch. Four batches per job took W2 here from ~32 to ~23 us a batch.
GROUP_BATCHES = 4

#: TokenDataset arguments that go to the Corpus, not onto the dataset's attributes.
_CORPUS_ARGS = ("source", "require_end_of_stream", "index_cache", "mmap", "vocab_size")
#: Arguments that change how the files are read, never which batches a run gives: a
#: loader state resumes across them.
_READ_ONLY_ARGS = ("source", "dtype", "index_cache", "mmap", "vocab_size")


Item = dict[str, torch.Tensor]
Batch = dict[str, torch.Tensor]


class TokenDataset(Dataset):
    """Documents of token ids, one per row of an Arrow list column, read in place.

    ``ds[i]`` is one truncated, unpadded document; batches are padded by ``ds.collate``
    or, much faster, by :class:`arrowloader.DataLoader`, which assembles whole batches on
    native threads. Both give the same tensors.

    Args:
        source: an Arrow IPC file or stream, a folder of them (sorted by name), a glob, a
            list of paths, a Hugging Face ``save_to_disk`` folder, or a folder written by
            ``arrowloader prepare`` (its shards in manifest order, each checked against
            the manifest; ``pad_token_id`` must then be inside its vocabulary).
        column: the token column, ``list`` or ``large_list`` of int32, int64, uint16 or
            uint32.
        label_column: an integer column returned as ``labels`` (int64 ``[B]``).
        max_length: documents longer than this are truncated; the dropped tokens are
            counted in :meth:`stats`.
        truncation_side: ``"right"`` keeps the first ``max_length`` tokens, ``"left"``
            the last.
        padding: ``"longest"`` pads to the longest document of the batch,
            ``"max_length"`` to ``max_length``.
        pad_to_multiple_of: round the padded width up to a multiple of this.
        padding_side: ``"right"`` or ``"left"``.
        pad_token_id: the id written on padded positions of ``input_ids``.
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
        pad_token_id: int = 0,
        return_attention_mask: bool = True,
        causal_labels: bool = False,
        dtype: torch.dtype = torch.int64,
        require_end_of_stream: bool = True,
        index_cache: IndexCacheOption = None,
        mmap: bool = True,
        vocab_size: Optional[int] = None,
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
        )
        self._configure(announce_truncation=True)

    def _configure(self, announce_truncation: bool) -> None:
        _check_options(**self._args)
        for name, value in self._args.items():
            if name not in _CORPUS_ARGS:
                setattr(self, name, value)
        self._open(announce_truncation)

    def _open(self, announce_truncation: bool) -> None:
        self.corpus = Corpus(
            self._args["source"],
            self.column,
            self.label_column,
            require_end_of_stream=self._args["require_end_of_stream"],
            index_cache=self._args.get("index_cache"),
            mmap=self._args.get("mmap", True),
            vocab_size=self._args.get("vocab_size"),
        )
        check_ids_in_vocabulary(self.corpus.manifest, pad_token_id=self.pad_token_id)
        self._assembler = _C.PaddedBatchAssembler(
            self.corpus.tokens,
            self.corpus.labels,
            max_length=-1 if self.max_length is None else self.max_length,
            truncate_left=self.truncation_side == "left",
            pad_left=self.padding_side == "left",
            pad_to_max_length=self.padding == "max_length",
            pad_to_multiple_of=self.pad_to_multiple_of or 0,
            pad_token_id=self.pad_token_id,
            label_pad_id=IGNORE_INDEX,
        )
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
        return {"args": self._args}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._args = dict(state["args"])
        self._configure(announce_truncation=False)

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
        labels = self.corpus.labels.values(rows) if self.corpus.labels is not None else None
        items = []
        for i, ids in enumerate(split):
            item = {"input_ids": ids}
            if self.return_attention_mask:
                item["attention_mask"] = torch.ones_like(ids)
            if self.causal_labels:
                item["labels"] = ids.clone()
            elif labels is not None:
                item["labels"] = torch.tensor(int(labels[i]), dtype=torch.int64)
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
                causal[row, at] = item["input_ids"]
        batch = {"input_ids": input_ids}
        if mask is not None:
            batch["attention_mask"] = mask
        if causal is not None:
            batch["labels"] = causal
        elif self.label_column is not None:
            labels = [item["labels"] for item in items]
            batch["labels"] = (
                torch.stack(labels).to(torch.int64) if labels else torch.empty(0, dtype=torch.int64)
            )
        return batch

    def fingerprint(self) -> dict[str, Any]:
        """What a saved loader state must match to be resumed on this dataset: the
        corpus (documents, tokens, file names and a digest of every document's length,
        see :meth:`Corpus.content_digest`) and the options that shape batches."""
        options = {k: v for k, v in self._args.items() if k not in _READ_ONLY_ARGS}
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

    def _native_epoch(self, loader: Any, pin: bool, first_iterator: bool) -> PaddedEpoch:
        """The native path's batches for one pass of ``loader`` (see loader.NativeEpoch)."""
        return PaddedEpoch(self, loader, pin, first_iterator)

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
    pad_token_id: int,
    return_attention_mask: bool,
    causal_labels: bool,
    dtype: torch.dtype,
    require_end_of_stream: bool,
    index_cache: IndexCacheOption = None,
    mmap: bool = True,
    vocab_size: Optional[int] = None,
) -> None:
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
    if not isinstance(pad_token_id, int):
        raise TypeError(f"pad_token_id must be an int, got {type(pad_token_id).__name__}")
    limit = torch.iinfo(dtype)
    if not limit.min <= pad_token_id <= limit.max:
        raise ValueError(f"pad_token_id={pad_token_id} does not fit in {dtype}")
    if causal_labels and label_column is not None:
        raise ValueError(
            "causal_labels=True and label_column both produce 'labels'; choose one"
        )
    if vocab_size is not None:
        check_vocab_size(vocab_size)


class PaddedEpoch:
    """One pass of a DataLoader over a TokenDataset: batch indices from the loader's own
    (batch) sampler, each batch padded natively into freshly allocated tensors.

    Its position, for ``state_dict()``, is the state of the random generators the sampler
    draws from, as they were when the epoch began, and the batches delivered since: a
    resumed epoch restores the generators, draws the same order again and skips that many
    batches (in O(1) for torch's stock samplers; other samplers are iterated, indices
    only, up to that point).
    """

    def __init__(self, dataset: TokenDataset, loader: Any, pin: bool, first_iterator: bool) -> None:
        self._dataset = dataset
        self._assembler = dataset._assembler
        self._pin = pin
        # Batches per native job (see GROUP_BATCHES); pinned batches keep one job each,
        # as for packed datasets.
        self.group = 1 if pin else GROUP_BATCHES
        self._progress = loader._progress
        self._persistent = bool(loader.persistent_workers and loader.num_workers > 0)
        self._generators = sampling_generators(loader)
        resume = loader._take_resume()
        skip = 0
        if resume is not None:
            for generator, state in zip(self._generators, resume["generator_states"]):
                generator.set_state(state)
            skip = resume["batches"]
            first_iterator = resume["draws_base_seed"]
        self._start = {
            "generator_states": [g.get_state() for g in self._generators],
            "draws_base_seed": first_iterator,
        }
        self._delivered = skip
        self._total = len(loader)
        self._length = self._total - skip
        # The same draws, in the same order, as torch's _BaseDataLoaderIter: the sampler
        # iterator is made first (its draws happen lazily, at the first batch), then the
        # base seed is drawn; torch's reused persistent-worker iterator draws none.
        plan = EpochPlan(loader._index_sampler)
        self._batches = _batches_with_widths(self._assembler, plan, skip)
        if first_iterator:
            torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
        self._progress({**self._start, "batches": skip})

    def __len__(self) -> int:
        return self._length

    def submit(self, pool: Any) -> Optional[list[tuple]]:
        planned = list(itertools.islice(self._batches, self.group))
        if not planned:
            return None
        batches, arguments = [], []
        for rows, width in planned:
            batch, outputs = self._allocate(rows, width)
            batches.append(batch)
            arguments.append((rows, *outputs))
        if len(arguments) == 1:
            ticket = self._assembler.submit(pool, *arguments[0])
        else:
            ticket = self._assembler.submit_batches(pool, arguments)
        return [(ticket, j, batch, self._finish) for j, batch in enumerate(batches)]

    def _allocate(self, rows: np.ndarray, width: int) -> tuple[Batch, tuple]:
        """Fresh output tensors of the batch of ``rows`` padded to ``width`` (pinned when
        asked: see arrowloader.buffers for why a pinned batch is never rewritten while its
        copy to the device may be pending), and the numpy arrays the native side writes,
        in ``submit()``'s order: input_ids, attention_mask, causal labels, labels."""
        dataset = self._dataset
        n = len(rows)
        shape = (n, width)
        ids, mask, causal, labels = output_buffers(
            [
                (shape, dataset.dtype),
                (shape, dataset.dtype) if dataset.return_attention_mask else None,
                (shape, dataset.dtype) if dataset.causal_labels else None,
                ((n,), torch.int64)
                if dataset.label_column is not None and not dataset.causal_labels
                else None,
            ],
            self._pin,
        )
        batch = {"input_ids": ids[0]}
        if mask is not None:
            batch["attention_mask"] = mask[0]
        if causal is not None or labels is not None:
            batch["labels"] = (causal or labels)[0]
        return batch, (ids[1], *(None if b is None else b[1] for b in (mask, causal, labels)))

    def _finish(self, batch: Batch, values: tuple[int, int]) -> Batch:
        self._dataset._truncated_in_batches += values[0]
        self._delivered += 1
        if self._delivered == self._total:
            # After the last batch a state resumes into the next epoch, not an empty rest.
            self.exhausted()
        else:
            self._progress({**self._start, "batches": self._delivered})
        return batch

    def exhausted(self) -> None:
        # The next epoch starts from the generators as this one left them.
        self._progress(
            {
                "generator_states": [g.get_state() for g in self._generators],
                # torch's reused persistent-worker iterator draws no base seed.
                "draws_base_seed": not self._persistent,
                "batches": 0,
            }
        )


def sampling_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators an epoch of ``loader`` draws from: the loader's (or torch's
    global one) and its sampler's own, if it has one."""
    generators = [loader.generator if loader.generator is not None else torch.default_generator]
    sampler = getattr(loader.batch_sampler, "sampler", None)
    own = getattr(sampler, "generator", None)
    if isinstance(own, torch.Generator) and all(own is not g for g in generators):
        generators.append(own)
    return generators


def check_token_state(
    state: Any,
    dataset: TokenDataset,
    generators: list[torch.Generator],
    num_batches: Optional[int] = None,
) -> dict[str, Any]:
    """Validates a TokenDataset loader state and returns the fields resumption uses.
    ``num_batches``: batches in an epoch of the loader (None where its sampler has no
    length).

    Raises:
        ValueError: the state is malformed or was taken over another corpus or options.
    """
    from arrowloader.loader import STATE_FORMAT

    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"not an arrowloader DataLoader state (format {STATE_FORMAT!r})")
    missing = [
        key for key in ("fingerprint", "generator_states", "draws_base_seed", "batches")
        if key not in state
    ]
    if missing:
        raise ValueError(f"loader state: missing {', '.join(map(repr, missing))}")
    batches = state["batches"]
    if not isinstance(batches, int) or isinstance(batches, bool) or not 0 <= batches < 2**63:
        raise ValueError(f"loader state: 'batches' must be a non-negative int, got {batches!r}")
    if num_batches is not None and batches > num_batches:
        raise ValueError(
            f"loader state: 'batches' ({batches}) is beyond the {num_batches} batches of an "
            "epoch of this loader"
        )
    if not isinstance(state["draws_base_seed"], bool):
        raise ValueError(
            f"loader state: 'draws_base_seed' must be a bool, got {state['draws_base_seed']!r}"
        )
    states = state["generator_states"]
    if not isinstance(states, (list, tuple)) or len(states) != len(generators):
        raise ValueError(
            f"loader state: 'generator_states' must hold {len(generators)} generator states "
            "(this loader's and its sampler's generators)"
        )
    for saved, generator in zip(states, generators):
        current = generator.get_state()
        if not (
            isinstance(saved, torch.Tensor)
            and saved.dtype == current.dtype
            and saved.shape == current.shape
        ):
            raise ValueError("loader state: 'generator_states' holds something that is not a "
                             "state of this loader's generators")
    check_fingerprint(state["fingerprint"], dataset.fingerprint())
    return {
        "generator_states": list(states),
        "draws_base_seed": state["draws_base_seed"],
        "batches": batches,
    }


def check_fingerprint(saved: Any, current: dict[str, Any]) -> None:
    """Raises ValueError, naming what differs, unless a state's ``saved`` fingerprint is
    the dataset's ``current`` one."""
    if not isinstance(saved, dict):
        raise ValueError(
            f"loader state: 'fingerprint' must be a dict, got {type(saved).__name__}"
        )
    if saved == current:
        return
    differing = []
    for key in sorted(set(saved) | set(current), key=str):
        if saved.get(key, "<missing>") != current.get(key, "<missing>"):
            ours = current.get(key, "<missing>")
            theirs = saved.get(key, "<missing>")
            differing.append(f"{key}: state {_short(theirs)}, dataset {_short(ours)}")
    raise ValueError(
        "loader state: its 'fingerprint' shows it was taken over another corpus or packing, or "
        "with other options, so resuming would not continue that run (" + "; ".join(differing)
        + "). Load it into a loader over the same files with the same options."
    )


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _batches_with_widths(
    assembler: Any, plan: EpochPlan, skip: int = 0
) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (rows int64 [batch], padded width) for every batch of the epoch after the
    first ``skip``: widths of a vectorised plan in one native call, else batch by batch."""
    order = plan.order()
    if order is None:
        for b, rows in enumerate(plan):
            if b >= skip:
                yield rows, assembler.width(rows)
        return
    order = order[skip * plan.batch_size :]
    widths = assembler.widths(order, plan.batch_size).tolist()
    for b, width in enumerate(widths):
        yield order[b * plan.batch_size : (b + 1) * plan.batch_size], width
