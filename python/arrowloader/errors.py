"""Exception classes. Each concrete class also inherits the builtin that fits, so
``except ValueError`` / ``except OSError`` code written for other loaders keeps working."""

from __future__ import annotations

import os
import re
from typing import Optional, Union

#: A message of the native extension that names a place in a corpus (csrc/columns.cpp):
#: ``FILE: column 'NAME' row N: ...`` (row N of FILE is at fault) or
#: ``FILE: column 'NAME' (rows from N): ...`` (a record batch is, not one row).
_NATIVE_PLACE = re.compile(
    r"(?P<path>[^\n]+?): column '(?P<column>[^\n]*?)' "
    r"(?:row (?P<row>\d+)|\(rows from \d+\)): "
)


class ArrowLoaderError(Exception):
    """Base class of every error arrowloader raises about a corpus or a loader."""


class CorpusError(ArrowLoaderError):
    """An error about a place in a corpus. Besides the message, which names it for
    people, it carries the place for programs:

    Attributes:
        path: the file at fault as the message names it (a shard; the manifest for a
            problem of the manifest; ``<memory>`` for bytes in memory), or None.
        column: the column at fault, or None.
        row: the row at fault, numbered within ``path``, or None (also when a whole
            file or record batch is).

    The native extension raises these classes with the message alone (csrc/bindings.cpp);
    a message in its form (``FILE: column 'NAME' row N: ...``) gives the attributes.
    """

    def __init__(
        self,
        message: str,
        *,
        path: Union[str, os.PathLike, None] = None,
        column: Optional[str] = None,
        row: Optional[int] = None,
    ) -> None:
        super().__init__(message)
        if path is None and column is None and row is None:
            path, column, row = _native_place(message)
        self.path: Optional[str] = None if path is None else os.fspath(path)
        self.column = column
        self.row = row


def _native_place(message: object) -> tuple[Optional[str], Optional[str], Optional[int]]:
    """(path, column, row) of a native message naming them, else three Nones."""
    match = _NATIVE_PLACE.match(message) if isinstance(message, str) else None
    if match is None:
        return None, None, None
    row = match.group("row")
    return match.group("path"), match.group("column"), None if row is None else int(row)


class CorpusFormatError(CorpusError, ValueError):
    """The corpus content is malformed or of the wrong type: a missing column, an
    unsupported type, nulls, corrupt list offsets, a compressed or cut IPC file.
    The message names the file, the column and, where one is at fault, the row."""


class CorpusFileError(CorpusError, OSError):
    """A corpus file cannot be found, opened or memory-mapped."""


class CorpusChangedError(CorpusFileError):
    """A corpus file was removed, replaced, cut short or rewritten after it was opened
    (found at the start of an epoch or when a loader state is loaded). ``path`` is the
    first file that changed."""


class LoaderClosedError(ArrowLoaderError, RuntimeError):
    """A batch was requested from a loader iterator that was already closed."""


class LoaderTimeoutError(ArrowLoaderError, RuntimeError):
    """A batch was not ready within the DataLoader's ``timeout``."""


class NotNativeError(ArrowLoaderError, AttributeError, NotImplementedError):
    """``state_dict`` / ``load_state_dict`` of a DataLoader off the native path, which
    has neither (as torch's has neither): an AttributeError, so that ``hasattr`` is
    false and frameworks treat the loader as torch's."""


class IntegrationError(ArrowLoaderError, ValueError):
    """A training framework (Accelerate, the HF Trainer, Lightning) was handed a loader it
    cannot drive as asked without losing the native path, the split between ranks or
    exact resumption; the message names the fix."""


__all__ = [
    "ArrowLoaderError",
    "CorpusChangedError",
    "CorpusError",
    "CorpusFileError",
    "CorpusFormatError",
    "LoaderClosedError",
    "IntegrationError",
    "LoaderTimeoutError",
    "NotNativeError",
]

