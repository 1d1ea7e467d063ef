"""The folder where arrowloader keeps what it can rebuild: the benchmarks' reference corpus
and corpus index entries that cannot be written next to their data.

It is ``$ARROWLOADER_CACHE``, else ``$XDG_CACHE_HOME/arrowloader``, else
``~/.cache/arrowloader``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(create: bool = True) -> Path:
    """The cache folder, created if missing unless ``create`` is False."""
    explicit = os.environ.get("ARROWLOADER_CACHE")
    if explicit:
        folder = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        folder = (Path(xdg) if xdg else Path.home() / ".cache") / "arrowloader"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder
