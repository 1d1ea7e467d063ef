"""Exception classes. Each concrete class also inherits the builtin that fits, so
``except ValueError`` / ``except OSError`` code written for other loaders keeps working."""

from __future__ import annotations


class ArrowLoaderError(Exception):
    """Base class of every error arrowloader raises about a corpus or a loader."""


class CorpusFormatError(ArrowLoaderError, ValueError):
    """The corpus content is malformed or of the wrong type: a missing column, an
    unsupported type, nulls, corrupt list offsets, a compressed or cut IPC file.
    The message names the file, the column and, where one is at fault, the row."""


class CorpusFileError(ArrowLoaderError, OSError):
    """A corpus file cannot be found, opened or memory-mapped."""


class CorpusChangedError(CorpusFileError):
    """A corpus file was removed, replaced, cut short or rewritten after it was opened
    (found at the start of an epoch or when a loader state is loaded)."""


class LoaderClosedError(ArrowLoaderError, RuntimeError):
    """A batch was requested from a loader iterator that was already closed."""


class LoaderTimeoutError(ArrowLoaderError, RuntimeError):
    """A batch was not ready within the DataLoader's ``timeout``."""


__all__ = [
    "ArrowLoaderError",
    "CorpusChangedError",
    "CorpusFileError",
    "CorpusFormatError",
    "LoaderClosedError",
    "LoaderTimeoutError",
]
