"""The torchdata peers of W1 and W2: ``torchdata.stateful_dataloader.StatefulDataLoader``,
the checkpointable drop-in for torch's DataLoader, over exactly the torch peers' datasets,
collate and seeded sampler (:mod:`arrowloader.bench.torch_peers`), workers 0 and 2. Its
rows therefore yield the torch rows' batches; what they measure is what the stateful
loader's bookkeeping costs. ``torchdata`` is optional (``pip install 'arrowloader[peers]'``):
:func:`missing_modules` says whether these rows can run, and nothing here imports it at
module import time.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING, Any, Optional

from arrowloader.bench.harness import Peer
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.bench.torch_peers import LoaderKind, torch_pack_peers, torch_pad_peers
from arrowloader.sources import Source

if TYPE_CHECKING:  # the workload modules import this one
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions

#: Family name, as ``--peers`` takes it.
FAMILY = "torchdata"
#: What ``--peers`` users install for it.
INSTALL_HINT = "pip install 'arrowloader[peers]'"
#: What the table's notes say of its rows.
NOTE = (
    "torchdata StatefulDataLoader: the torch rows' datasets, collate and seeded sampler, "
    "workers 0 and 2"
)


def missing_modules() -> list[str]:
    """The modules these peers need that are not installed (empty: they can run)."""
    return [] if importlib.util.find_spec("torchdata") is not None else ["torchdata"]


def _loader_kind() -> LoaderKind:
    from torchdata.stateful_dataloader import StatefulDataLoader

    class QuietStatefulDataLoader(StatefulDataLoader):
        """StatefulDataLoader without the UserWarning its constructor's call of torch's
        deprecated ``torch.set_vital`` raises on every loader built (the bench builds one
        per run)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message="'set_vital' is deprecated", category=UserWarning
                )
                super().__init__(*args, **kwargs)

    return LoaderKind("torchdata StatefulDataLoader", FAMILY, QuietStatefulDataLoader)


def pad_peers(source: Source, options: PadOptions) -> list[Peer]:
    """W1 rows: :func:`~arrowloader.bench.torch_peers.torch_pad_peers` built by
    ``StatefulDataLoader``."""
    return torch_pad_peers(source, options, _loader_kind())


def pack_peers(
    source: Source, options: PackOptions, stream: Optional[TokenStreamFile]
) -> list[Peer]:
    """W2 rows: :func:`~arrowloader.bench.torch_peers.torch_pack_peers` built by
    ``StatefulDataLoader``, over the flat stream file when there is one (the strongest
    form), else over the documents."""
    peers = torch_pack_peers(source, options, stream, _loader_kind())
    return [peer for peer in peers if peer.reads_stream] or peers
