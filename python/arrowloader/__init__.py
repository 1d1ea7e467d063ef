"""arrowloader: feed tokenized text from memory-mapped Arrow files to PyTorch.

``TokenDataset`` reads documents of token ids in place from Arrow IPC files;
``DataLoader`` is a drop-in ``torch.utils.data.DataLoader`` that assembles whole padded
batches on native threads for it; ``CUDAPrefetcher`` copies them to the GPU ahead of
the training step.
"""

from arrowloader import _C, errors, synthetic
from arrowloader.batch_plans import (
    LengthGroupedBatchSampler,
    TokenBudgetBatchSampler,
    WindowedShuffleBatchSampler,
)
from arrowloader.corpus import Corpus
from arrowloader.dataset import TokenDataset
from arrowloader.errors import (
    ArrowLoaderError,
    CorpusChangedError,
    CorpusError,
    CorpusFileError,
    CorpusFormatError,
    IntegrationError,
    LoaderClosedError,
    LoaderTimeoutError,
    NotNativeError,
)
from arrowloader.loader import DataLoader
from arrowloader.metrics import FeedMetrics
from arrowloader.mixed import MixedDataset
from arrowloader.packed import PackedDataset
from arrowloader.prefetch import CUDAPrefetcher
from arrowloader.rank_states import merge_rank_states

#: The version pyproject.toml gives, built into the extension (one source for both).
__version__: str = _C.__version__

__all__ = [
    "ArrowLoaderError",
    "CUDAPrefetcher",
    "Corpus",
    "CorpusChangedError",
    "CorpusError",
    "CorpusFileError",
    "CorpusFormatError",
    "DataLoader",
    "FeedMetrics",
    "IntegrationError",
    "LengthGroupedBatchSampler",
    "LoaderClosedError",
    "LoaderTimeoutError",
    "MixedDataset",
    "NotNativeError",
    "PackedDataset",
    "TokenBudgetBatchSampler",
    "TokenDataset",
    "WindowedShuffleBatchSampler",
    "__version__",
    "errors",
    "merge_rank_states",
    "synthetic",
]
