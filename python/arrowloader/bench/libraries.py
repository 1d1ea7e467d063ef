"""The optional peers of other loading libraries that W1 and W2 both run, in table order.

Each is a module with ``FAMILY`` (its ``--peers`` name), ``INSTALL_HINT``,
``missing_modules()`` (empty when its library is installed) and ``pad_peers(source,
options)`` / ``pack_peers(source, options, stream)`` building its rows; a workload records
a requested family whose library is missing as skipped
(:meth:`~arrowloader.bench.report.BenchWorkload.can_run`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arrowloader.bench import (
    dataloader_rs_peers,
    grain_peers,
    litdata_peers,
    spdl_peers,
    torchdata_peers,
)

if TYPE_CHECKING:
    from arrowloader.bench.harness import Peer

#: The modules, in table order.
LIBRARY_PEERS = (torchdata_peers, grain_peers, spdl_peers, dataloader_rs_peers)
#: Their family names.
LIBRARY_FAMILIES = tuple(module.FAMILY for module in LIBRARY_PEERS)


def library_notes(peers: list[Peer]) -> list[str]:
    """Lines above a table saying how each library family among ``peers`` is configured
    (litdata's too), in table order."""
    families = {peer.family for peer in peers}
    modules = (*LIBRARY_PEERS, litdata_peers)
    return [f"peers: {module.NOTE}" for module in modules if module.FAMILY in families]
