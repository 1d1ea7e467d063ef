"""arrowloader: feed tokenized text from memory-mapped Arrow files to PyTorch.

``TokenDataset`` reads documents of token ids in place from Arrow IPC files;
``DataLoader`` is a drop-in ``torch.utils.data.DataLoader`` that assembles whole padded
batches on native threads for it; ``CUDAPrefetcher`` copies them to the GPU ahead of
the training step.
"""

from arrowloader import errors, synthetic
from arrowloader.corpus import Corpus
from arrowloader.dataset import TokenDataset
from arrowloader.errors import (
    ArrowLoaderError,
    CorpusChangedError,
    CorpusFileError,
    CorpusFormatError,
    LoaderClosedError,
    LoaderTimeoutError,
)
from arrowloader.loader import DataLoader
from arrowloader.metrics import FeedMetrics
from arrowloader.mixed import MixedDataset
from arrowloader.packed import PackedDataset
from arrowloader.prefetch import CUDAPrefetcher

__version__ = "0.1.0"

__all__ = [
    "ArrowLoaderError",
    "CUDAPrefetcher",
    "Corpus",
    "CorpusChangedError",
    "CorpusFileError",
    "CorpusFormatError",
    "DataLoader",
    "FeedMetrics",
    "LoaderClosedError",
    "LoaderTimeoutError",
    "MixedDataset",
    "PackedDataset",
    "TokenDataset",
    "__version__",
    "errors",
    "synthetic",
]
