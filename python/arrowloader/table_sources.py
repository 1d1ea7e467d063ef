"""Tables as sources: a Hugging Face ``datasets.Dataset`` or a ``pyarrow.Table`` handed
to a dataset instead of a path.

A ``datasets.Dataset`` whose rows are exactly the rows of the Arrow files it maps (one
loaded with ``load_from_disk`` or ``load_dataset``, or written by ``.map()``) is read
from those files, memory-mapped and in place, like a ``save_to_disk`` folder. One whose
rows live in memory (``Dataset.from_dict``, ``keep_in_memory=True``), and a
``pyarrow.Table``, are written once into an IPC buffer in memory (a copy of the columns
read) and read from it. A dataset whose order or rows differ from its files (an
indices mapping from ``shuffle``, ``select``, ``filter``, ``sort``; a slice; a renamed
column) is refused with the way to write it out, never read in its files' order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import pyarrow as pa

from arrowloader.errors import CorpusFormatError
from arrowloader.wording import plural

#: ``datasets.table`` operations that leave the named columns' rows as the file holds
#: them: schema metadata, chunking, and dropping or selecting columns (a column the
#: dataset no longer has is refused before the files are read).
_HARMLESS_REPLAYS = frozenset(
    {"replace_schema_metadata", "combine_chunks", "drop", "remove_column", "select"}
)


def table_source(source: Any, columns: Sequence[Optional[str]]) -> Any:
    """What to read for ``source``: the Arrow files of a memory-mapped
    ``datasets.Dataset`` (a list of paths), the IPC bytes of an in-memory one or of a
    ``pyarrow.Table`` (a ``pyarrow.Buffer`` holding ``columns``), or ``source`` itself
    when it is neither.

    Args:
        source: anything a dataset accepts as its source.
        columns: the columns the corpus reads (the token column, the label column or
            None).

    Raises:
        CorpusFormatError: a column is missing, or the dataset's rows differ from its
            files' (the message says how to write it out).
        TypeError: a ``datasets.DatasetDict`` or ``IterableDataset``.
    """
    names = [name for name in columns if name is not None]
    if isinstance(source, pa.Table):
        return _ipc_bytes(source, names, "pyarrow.Table")
    hf = sys.modules.get("datasets")  # a datasets object means datasets is imported
    if hf is None:
        return source
    if isinstance(source, (hf.DatasetDict, hf.IterableDatasetDict)):
        splits = list(source.keys())
        raise TypeError(
            f"source is a datasets.{type(source).__name__} with splits {splits}; pass "
            f"one split, e.g. ds[{(splits[0] if splits else 'train')!r}]"
        )
    if isinstance(source, hf.IterableDataset):
        raise TypeError(
            "source is a datasets.IterableDataset (streamed, with no files to map); "
            "load it with streaming=False, or write it with save_to_disk and pass the folder"
        )
    if isinstance(source, hf.Dataset):
        return _dataset_source(source, names)
    return source


def _dataset_source(ds: Any, columns: list[str]) -> Union[list[Path], pa.Buffer]:
    from datasets.table import ConcatenationTable, InMemoryTable, MemoryMappedTable

    files = [Path(entry["filename"]) for entry in ds.cache_files]
    name = f"datasets.Dataset of {plural(len(ds), 'row')}" + (
        f" ({files[0]}{', ...' if len(files) > 1 else ''})" if files else ""
    )
    fix = (
        "Write it out and pass the folder: ds.save_to_disk('FOLDER'), then "
        "TokenDataset('FOLDER', ...)."
    )
    if getattr(ds, "_indices", None) is not None:
        raise CorpusFormatError(
            f"{name}: the dataset has an indices mapping (from shuffle, select, filter, sort "
            "or train_test_split): its rows are a reordering or a subset of those its table "
            "holds, and reading the table would ignore it. Write the rows in their order "
            "first: ds = ds.flatten_indices(), or "
            "ds.save_to_disk('FOLDER') and TokenDataset('FOLDER', ...). To shuffle every "
            "epoch, pass the unshuffled dataset and use DataLoader(shuffle=True).",
            path=files[0] if files else None,
        )
    _check_columns(ds.data.table.schema, columns, name)
    table = ds.data
    rows = table.blocks if isinstance(table, ConcatenationTable) else [[table]]
    mapped: list[Path] = []
    in_memory = 0
    for row in rows:
        if len(row) != 1:
            raise CorpusFormatError(
                f"{name}: its columns are joined from several tables "
                f"(concatenate_datasets(axis=1)), so no one file holds its rows. {fix}",
                path=files[0] if files else None,
            )
        block = row[0]
        if isinstance(block, MemoryMappedTable):
            changed = sorted({replay[0] for replay in block.replays} - _HARMLESS_REPLAYS)
            if changed:
                raise CorpusFormatError(
                    f"{name}: its rows or columns differ from those of its file "
                    f"{block.path} (changed by {', '.join(changed)}, as select(range(...)), "
                    "rename_column or cast_column do in memory), so the file cannot be read "
                    f"in their place. {fix}",
                    path=block.path,
                )
            mapped.append(Path(block.path))
        elif isinstance(block, InMemoryTable):
            in_memory += 1
        else:
            raise CorpusFormatError(
                f"{name}: its table is a {type(block).__name__}, which arrowloader does not "
                f"know how to read in place. {fix}",
                path=files[0] if files else None,
            )
    if mapped and in_memory:
        raise CorpusFormatError(
            f"{name}: part of its rows lie in memory, part in Arrow files; the files alone "
            f"would miss rows. {fix}",
            path=mapped[0],
        )
    if mapped:
        return mapped
    return _ipc_bytes(ds.data.table, columns, name)


def _check_columns(schema: pa.Schema, columns: list[str], name: str) -> None:
    for column in columns:
        if schema.get_field_index(column) < 0:
            found = ", ".join(repr(field) for field in schema.names)
            raise CorpusFormatError(
                f"{name}: column {column!r} not found; it has columns [{found}]. Pass "
                "column= (or label_column=) one of them.",
                column=column,
            )


def _ipc_bytes(table: pa.Table, columns: list[str], name: str) -> pa.Buffer:
    """``columns`` of ``table`` as the bytes of one IPC stream (a copy: the table's
    buffers may lie anywhere, an IPC buffer is what the corpus reads in place)."""
    _check_columns(table.schema, columns, name)
    table = table.select(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()
