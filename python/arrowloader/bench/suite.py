"""``arrowloader bench``: every requested workload, every loader, several repeats,
medians and ratios.

:func:`run_bench` measures, for each workload in turn, each of its loaders ``repeats``
times, interleaving the loaders within each repeat (so slow drift of a shared machine
spreads over all of them), and returns a :class:`~arrowloader.bench.report.BenchReport`
that prints as aligned tables and serialises to JSON. W1 and W2 share this code path;
only their :class:`~arrowloader.bench.report.BenchWorkload` differs.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import arrowloader
from arrowloader.bench import finetune, pack, pad
from arrowloader.bench.cache import REFERENCE_DOCUMENTS, REFERENCE_SEED, reference_corpus
from arrowloader.bench.custom import CustomLoaderWorkload
from arrowloader.bench.finetune import FinetuneOptions
from arrowloader.bench.harness import (
    WARMUP_BATCHES,
    cache_memcpy_gbps,
    measure_run,
    memcpy_gbps,
    read_meminfo_bytes,
)
from arrowloader.bench.libraries import LIBRARY_FAMILIES
from arrowloader.bench.pack import PackOptions
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.report import BenchReport, BenchWorkload, RowSummary, WorkloadReport
from arrowloader.sources import Source
from arrowloader.wording import plural

#: Workloads over a corpus by ``--workload`` name (a user's loader, ``--loader``, is
#: workload ``"loader"``, run after them).
WORKLOADS = ("pad", "pack", "finetune")
#: The workloads ``all`` (and no ``--workload``) runs, in order: finetune is asked for by
#: name, so the default run keeps its length.
DEFAULT_WORKLOADS = ("pad", "pack")
#: Peers each workload can compare against (arrowloader always runs).
WORKLOAD_PEERS = {"pad": pad.KNOWN_PEERS, "pack": pack.KNOWN_PEERS, "finetune": ()}
#: Every peer name ``peers`` accepts.
KNOWN_PEERS = ("torch", "hf", "nanogpt", *LIBRARY_FAMILIES, "litdata")


@dataclass(frozen=True)
class BenchConfig:
    """What ``arrowloader bench`` runs.

    Attributes:
        workloads: from :data:`WORKLOADS`, run in this order.
        source: the corpus (anything ``TokenDataset`` / ``PackedDataset`` accepts);
            None = the cached reference corpus, created on first use.
        pad: W1's columns, batch size and truncation length.
        pack: W2's column, batch size, sequence length and EOS id.
        finetune: the finetune workload's columns, batch sizes, budget and lengths.
        seconds: minimum timed seconds per run.
        repeats: runs per loader.
        peers: peers to run besides arrowloader, from :data:`KNOWN_PEERS`; each workload
            uses those it knows (:data:`WORKLOAD_PEERS`).
        threads: arrowloader's ``num_workers`` (native threads; 0 = automatic), one row
            each: more than one is a thread sweep.
        seed: seed of the first repeat (repeat ``r`` uses ``seed + r``).
        warmup_batches: batches consumed before timing.
        show_progress: progress bars on stderr.
        consumer_ms: a simulated training step of this many ms after each batch; the
            report then gives each loader's stall (0: none).
        loader: ``module:function`` of a user's loader to measure as workload
            ``"loader"`` (:mod:`arrowloader.bench.custom`); None: none.
    """

    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    source: Optional[Source] = None
    pad: PadOptions = field(default_factory=PadOptions)
    pack: PackOptions = field(default_factory=PackOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    seconds: float = 5.0
    repeats: int = 3
    peers: tuple[str, ...] = KNOWN_PEERS
    threads: tuple[int, ...] = (0,)
    seed: int = 0
    warmup_batches: int = WARMUP_BATCHES
    show_progress: bool = True
    consumer_ms: float = 0.0
    loader: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        """The settings shared by every workload, JSON-ready."""
        return {
            "workloads": list(self.workloads),
            "seconds": self.seconds,
            "repeats": self.repeats,
            "warmup_batches": self.warmup_batches,
            "seed": self.seed,
            "threads": list(self.threads),
            "peers": list(self.peers),
            "consumer_ms": self.consumer_ms,
            "loader": self.loader,
        }


def open_workload(key: str, config: BenchConfig, source: Source, reference: bool) -> BenchWorkload:
    """The workload ``key`` over ``source``, its peers built (copies written)."""
    if key == "loader":
        if config.loader is None:
            raise ValueError("workload 'loader' needs config.loader (module:function)")
        return CustomLoaderWorkload(config.loader, show_progress=config.show_progress)
    peers = tuple(p for p in config.peers if p in WORKLOAD_PEERS[key])
    common: dict[str, Any] = {
        "reference": reference,
        "peers": peers,
        "threads": config.threads,
        "show_progress": config.show_progress,
    }
    if key == "pad":
        return pad.PadWorkload(source, options=config.pad, **common)
    if key == "pack":
        return pack.PackWorkload(source, options=config.pack, **common)
    if key == "finetune":
        return finetune.FinetuneWorkload(source, options=config.finetune, **common)
    raise ValueError(f"unknown workload {key!r}; choose from {list(WORKLOADS)}")


def measure_workload(workload: BenchWorkload, config: BenchConfig) -> WorkloadReport:
    """Every peer of ``workload``, ``config.repeats`` times, interleaved; summarised."""
    started = time.perf_counter()
    rows = {
        peer.name: RowSummary(
            peer.name, peer.family, peer.num_workers, peer.headline, workload.traffic(peer)
        )
        for peer in workload.peers
    }
    progress = tqdm(
        total=config.repeats * len(workload.peers), desc=workload.title, unit="run",
        disable=not config.show_progress,
    )
    with progress, pad.quiet_truncation_warning():
        for repeat in range(config.repeats):
            for peer in workload.peers:
                progress.set_postfix_str(f"repeat {repeat + 1}: {peer.name}")
                rows[peer.name].runs.append(
                    measure_run(
                        peer,
                        workload,
                        seconds=config.seconds,
                        seed=config.seed + repeat,
                        repeat=repeat,
                        warmup_batches=config.warmup_batches,
                        consumer_ms=config.consumer_ms,
                    )
                )
                progress.update()
    summaries = list(rows.values())
    for row in summaries:
        row.summarise()
    batch_bytes = workload.batch_output_bytes()
    report = WorkloadReport(
        key=workload.key,
        title=workload.title,
        description=[
            *workload.description(),
            f"runs: {config.repeats} per loader, each >= {config.seconds:g} s after "
            f"{plural(config.warmup_batches, 'warm-up batch', 'warm-up batches')}, loaders "
            "interleaved; median [min-max]",
            *(
                [
                    f"consumer: a simulated training step of {config.consumer_ms:g} ms (sleep) "
                    "after each batch; stall = time spent waiting in next()"
                ]
                if config.consumer_ms > 0
                else []
            ),
        ],
        settings=workload.settings(),
        corpus=workload.corpus_facts(),
        rows=summaries,
        skipped=list(workload.skipped),
        conversions=list(workload.conversions),
        other_families=workload.other_families,
        cache_memcpy_gbps=cache_memcpy_gbps(batch_bytes) if batch_bytes else 0.0,
        batch_output_bytes=batch_bytes,
    )
    report.set_ratios()
    report.elapsed_s = time.perf_counter() - started
    return report


def run_bench(config: BenchConfig, command: Optional[str] = None) -> BenchReport:
    """Measures the requested workloads for arrowloader and the requested peers.

    Args:
        config: what to run.
        command: the command line, recorded in the report (default: ``sys.argv``).

    Raises:
        ValueError: an unknown workload or peer.
        ArrowLoaderError: the corpus cannot be read.
        BenchmarkError: a loader produced wrong outputs.
    """
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    unknown = set(config.workloads) - set(WORKLOADS) - {"loader"}
    if unknown or not config.workloads:
        raise ValueError(f"unknown workloads {sorted(unknown)}; choose from {list(WORKLOADS)}")
    if any(n < 0 for n in config.threads) or not config.threads:
        raise ValueError(f"threads must be counts >= 0, got {list(config.threads)}")
    if config.consumer_ms < 0:
        raise ValueError(f"consumer_ms must be >= 0, got {config.consumer_ms}")
    unknown = set(config.peers) - set(KNOWN_PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; choose from {list(KNOWN_PEERS)}")
    reference = config.source is None
    corpus_workloads = [key for key in config.workloads if key in WORKLOADS]
    if not corpus_workloads:
        source: Source = ""  # only a user's loader: no corpus to open
    elif reference:
        source = reference_corpus(
            REFERENCE_DOCUMENTS, REFERENCE_SEED, show_progress=config.show_progress
        )
    else:
        source = config.source  # type: ignore[assignment]
    bandwidth = memcpy_gbps()

    reports = []
    for key in config.workloads:
        workload = open_workload(key, config, source, reference)
        try:
            reports.append(measure_workload(workload, config))
        finally:
            workload.close()
    report = BenchReport(
        workloads=reports,
        settings=config.as_dict(),
        machine={**machine_facts(), "memcpy_gbps": bandwidth},
        memcpy_gbps=bandwidth,
        command=command if command is not None else " ".join(sys.argv),
        started_at=started_at,
    )
    report.elapsed_s = time.perf_counter() - started
    return report


def machine_facts() -> dict[str, Any]:
    """Cores, memory, CPU model and library versions of this machine."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.partition(":")[2].strip()
                break
    except OSError:
        pass

    def version(package: str) -> Optional[str]:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_model": cpu_model,
        "memory_bytes": read_meminfo_bytes("MemTotal"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pyarrow": version("pyarrow"),
        "numpy": np.__version__,
        "datasets": version("datasets"),
        "transformers": version("transformers"),
        "arrowloader": arrowloader.__version__,
    }
