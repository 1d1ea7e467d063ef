"""A corpus: the files of a source with their token (and label) columns imported into
native columns through the Arrow C data interface, zero copy, validated once at open."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from arrowloader import _C
from arrowloader.sources import Source, iter_column_chunks, open_ipc, resolve_source

#: Folders with more files than this show a progress bar while opening (on a terminal).
_PROGRESS_MIN_FILES = 16


@dataclass(frozen=True)
class CorpusFile:
    """One file of a corpus and where its rows start in the global row numbering."""

    path: Path
    format: str
    first_row: int
    num_rows: int


class Corpus:
    """The files of ``source`` opened, memory-mapped and checked.

    Every file is opened and every offset checked here, so a bad shard fails at once and
    not hours into a run.

    Attributes:
        files: the files, in corpus order.
        tokens: the native token column (``_C.TokenColumn``) over all files.
        labels: the native label column (``_C.ScalarColumn``) or None.
    """

    def __init__(
        self,
        source: Source,
        column: str = "input_ids",
        label_column: Optional[str] = None,
        *,
        require_end_of_stream: bool = True,
    ) -> None:
        paths = resolve_source(source)
        self.tokens = _C.TokenColumn(column)
        self.labels = _C.ScalarColumn(label_column) if label_column is not None else None
        self.files: list[CorpusFile] = []
        first_row = 0
        bar = tqdm(
            paths,
            desc="opening corpus",
            unit="file",
            disable=None if len(paths) > _PROGRESS_MIN_FILES else True,
        )
        for path in bar:
            opened = open_ipc(path, require_end_of_stream=require_end_of_stream)
            for array, row in iter_column_chunks(opened, column, list_column=True):
                self.tokens.add_chunk(*array.__arrow_c_array__(), str(path), row)
            if self.labels is not None and label_column is not None:
                for array, row in iter_column_chunks(opened, label_column, list_column=False):
                    self.labels.add_chunk(*array.__arrow_c_array__(), str(path), row)
            self.files.append(CorpusFile(path, opened.format, first_row, opened.num_rows))
            first_row += opened.num_rows

    @property
    def num_rows(self) -> int:
        """Documents over all files."""
        return self.tokens.num_rows

    @property
    def num_tokens(self) -> int:
        """Tokens over all documents."""
        return self.tokens.num_tokens
