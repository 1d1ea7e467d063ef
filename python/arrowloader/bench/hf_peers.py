"""The Hugging Face peer of W1: ``datasets.load_from_disk`` of the same table, batched by
torch's DataLoader with ``transformers.DataCollatorWithPadding``.

The dataset keeps its default (python) format, as in the ``DataCollatorWithPadding``
examples; truncation to ``max_length`` happens in :class:`TruncatingPaddingCollator`, just
before the collator, because the table is already tokenized. ``datasets``,
``transformers`` and ``tokenizers`` are optional: :func:`missing_modules` says whether this
peer can run, and nothing here imports them at module import time.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import pyarrow as pa

from arrowloader.bench.cache import cache_lock, replace_folder, run_with_progress
from arrowloader.bench.harness import PEER_WORKER_COUNTS, Batch, Peer, SeededLoaderFactory
from arrowloader.sources import resolve_source

if TYPE_CHECKING:  # the workload module imports this one
    from arrowloader.bench.pad import PadOptions

_REQUIRED_MODULES = ("datasets", "transformers", "tokenizers")


def missing_modules() -> list[str]:
    """The modules the hf peer needs that are not installed (empty: it can run)."""
    return [name for name in _REQUIRED_MODULES if importlib.util.find_spec(name) is None]


def is_saved_dataset(path: Path) -> bool:
    """Whether ``path`` is a ``datasets`` ``save_to_disk`` folder of one split."""
    return path.is_dir() and (path / "state.json").is_file()


def write_saved_copy(
    source: Any, columns: list[str], target: Path, *, show_progress: bool
) -> Path:
    """Writes ``columns`` of the files of ``source`` as a ``save_to_disk`` folder at
    ``target`` (once: an existing complete folder is reused) and returns ``target``.

    The table is read from the memory mappings without copying and handed to
    ``datasets.Dataset`` as is, so the copy holds the same rows in the same order.
    """
    import datasets

    if is_saved_dataset(target):
        return target
    with cache_lock(target):
        if is_saved_dataset(target):
            return target
        tables = []
        for path in resolve_source(source):
            mapped = pa.memory_map(str(path), "r")
            try:
                table = pa.ipc.open_file(mapped).read_all()
            except pa.ArrowInvalid:  # the stream format
                mapped.seek(0)
                table = pa.ipc.open_stream(mapped).read_all()
            tables.append(table.select(columns))
        table = pa.concat_tables(tables)
        partial = Path(tempfile.mkdtemp(prefix=target.name + ".partial-", dir=target.parent))
        # Our own bar (bytes written) replaces datasets' per-shard bar, which would otherwise
        # print from the writer thread while ours redraws.
        bars_were_enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            run_with_progress(
                lambda: datasets.Dataset(table).save_to_disk(str(partial)),
                watch=partial,
                description="writing a datasets.save_to_disk copy",
                show_progress=show_progress,
            )
            replace_folder(partial, target)
        finally:
            if bars_were_enabled:
                datasets.enable_progress_bars()
            if partial.exists():
                shutil.rmtree(partial)
    return target


def minimal_tokenizer(pad_token_id: int = 0) -> Any:
    """A ``PreTrainedTokenizerFast`` over a two-word ``tokenizers`` WordLevel model built in
    memory (no download): ``DataCollatorWithPadding`` needs a tokenizer object only for
    ``pad()``, which reads its pad id and padding side, never its vocabulary."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    if pad_token_id < 0:
        raise ValueError(f"pad_token_id must be >= 0, got {pad_token_id}")
    # WordLevel ids must be dense, so ids below the pad id get filler words.
    vocab = {f"[FILL{i}]": i for i in range(pad_token_id)}
    vocab.update({"[PAD]": pad_token_id, "[UNK]": pad_token_id + 1})
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]")
    # pad() on a fast tokenizer otherwise warns once that __call__ would be faster; the
    # data is already tokenized, so the advice does not apply.
    warnings_seen = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warnings_seen, dict):
        warnings_seen["Asking-to-pad-a-fast-tokenizer"] = True
    return tokenizer


class TruncatingPaddingCollator:
    """Truncates each feature's tokens to ``max_length``, then calls
    ``DataCollatorWithPadding``.

    Takes ``datasets`` rows ``{column: list[int], label_column: int}`` and returns
    ``input_ids`` int64 ``[B, L]``, ``attention_mask`` int64 ``[B, L]`` and, with a label
    column, ``labels`` int64 ``[B]`` (the collator renames ``label`` to ``labels``).
    """

    def __init__(
        self, column: str, label_column: Optional[str], max_length: int, tokenizer: Any
    ) -> None:
        from transformers import DataCollatorWithPadding

        self.column = column
        self.label_column = label_column
        self.max_length = max_length
        self.collator = DataCollatorWithPadding(
            tokenizer, padding="longest", return_tensors="pt"
        )

    def __call__(self, features: list[dict[str, Any]]) -> Batch:
        if self.label_column is None:
            rows = [{"input_ids": f[self.column][: self.max_length]} for f in features]
        else:
            rows = [
                {"input_ids": f[self.column][: self.max_length], "label": f[self.label_column]}
                for f in features
            ]
        return dict(self.collator(rows))


def hf_pad_peers(saved_folder: Path, options: PadOptions) -> list[Peer]:
    """The hf rows of W1 (one per worker count in ``PEER_WORKER_COUNTS``) over a
    ``save_to_disk`` folder holding ``options.column`` (and ``options.label_column``)."""
    import datasets

    # Built (and transformers imported) here, once, so that no run's figures include it.
    tokenizer = minimal_tokenizer(options.pad_token_id)

    def open_dataset(seed: int = 0) -> Any:
        return datasets.load_from_disk(str(saved_folder))

    collate = TruncatingPaddingCollator(
        options.column, options.label_column, options.max_length, tokenizer
    )

    return [
        Peer(
            f"hf collator (workers {n})", "hf", n, open_dataset,
            SeededLoaderFactory(options.batch_size, n, collate_fn=collate),
        )
        for n in PEER_WORKER_COUNTS
    ]


__all__ = [
    "TruncatingPaddingCollator",
    "hf_pad_peers",
    "is_saved_dataset",
    "minimal_tokenizer",
    "missing_modules",
    "write_saved_copy",
]
