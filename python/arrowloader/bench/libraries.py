"""The optional peers of other loading libraries that W1 and W2 both run, in table order.

Each is a module with ``FAMILY`` (its ``--peers`` name), ``INSTALL_HINT``,
``missing_modules()`` (empty when its library is installed) and ``pad_peers(source,
options)`` / ``pack_peers(source, options, stream)`` building its rows; a workload records
a requested family whose library is missing as skipped
(:meth:`~arrowloader.bench.report.BenchWorkload.can_run`).
"""

from __future__ import annotations

from arrowloader.bench import dataloader_rs_peers, grain_peers, spdl_peers, torchdata_peers

#: The modules, in table order.
LIBRARY_PEERS = (torchdata_peers, grain_peers, spdl_peers, dataloader_rs_peers)
#: Their family names.
LIBRARY_FAMILIES = tuple(module.FAMILY for module in LIBRARY_PEERS)
