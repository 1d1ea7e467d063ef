"""W1 ("pad"): every loader, several repeats, medians and ratios.

:func:`run_w1` measures each peer ``repeats`` times, interleaving the loaders within each
repeat (so slow drift of a shared machine spreads over all of them), and returns a
:class:`W1Report` that prints as an aligned table and serialises to JSON.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

import arrowloader
from arrowloader.bench import hf_peer
from arrowloader.bench.cache import (
    REFERENCE_DOCUMENTS,
    REFERENCE_SEED,
    cache_dir,
    reference_corpus,
)
from arrowloader.bench.harness import (
    MEMCPY_BYTES,
    WARMUP_BATCHES,
    RunFigures,
    kept_lengths,
    measure_run,
    memcpy_gbps,
)
from arrowloader.bench.peers import (
    MappedTokenColumn,
    W1Options,
    W1Peer,
    arrowloader_peer,
    torch_peers,
)
from arrowloader.sources import Source

#: Peers that can be asked for with ``peers`` (arrowloader itself always runs).
KNOWN_PEERS = ("torch", "hf")
#: Figures summarised over repeats (median, min, max).
SUMMARISED_FIGURES = (
    "tokens_per_s",
    "batches_per_s",
    "cpu_s_per_mtok",
    "peak_anon_rss_bytes",
    "anon_rss_growth_bytes",
    "first_batch_s",
    "open_s",
    "padding_fraction",
    "bandwidth_gbps",
)
#: Bytes per element of W1's outputs (int64 input_ids, attention_mask and labels).
_OUTPUT_ITEMSIZE = 8
_MIB = 1024 * 1024

ANON_RSS_NOTE = (
    "anon RSS: peak RssAnon of the process plus its worker processes, sampled every 20 ms "
    "(anonymous memory only: the page cache of the mapped corpus is not the loader's memory "
    "and is not counted; pages a forked worker shares copy-on-write count once per process); "
    "(+N) = growth over the start of the run"
)
CPU_NOTE = (
    "CPU: user+sys seconds of the process and its reaped workers, from creating the iterator "
    "until its workers are shut down, per million real tokens delivered meanwhile"
)


@dataclass(frozen=True)
class W1Config:
    """What ``arrowloader bench`` runs.

    Attributes:
        source: the corpus (anything ``TokenDataset`` accepts); None = the cached
            reference corpus, created on first use.
        options: columns, batch size, truncation length.
        seconds: minimum timed seconds per run.
        repeats: runs per loader.
        peers: peers to run besides arrowloader, from :data:`KNOWN_PEERS`.
        threads: arrowloader's ``num_workers`` (native threads; 0 = automatic).
        seed: sampler seed of the first repeat (repeat ``r`` uses ``seed + r``).
        warmup_batches: batches consumed before timing.
        show_progress: progress bars on stderr.
    """

    source: Optional[Source] = None
    options: W1Options = field(default_factory=W1Options)
    seconds: float = 5.0
    repeats: int = 3
    peers: tuple[str, ...] = KNOWN_PEERS
    threads: int = 0
    seed: int = 0
    warmup_batches: int = WARMUP_BATCHES
    show_progress: bool = True


@dataclass
class CorpusFacts:
    """The corpus measured: where it is and what truncation does to it."""

    source: str
    reference: bool
    documents: int
    tokens: int
    kept_tokens: int
    truncated_documents: int
    token_itemsize: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RowSummary:
    """One loader's runs and their summary (one table row).

    ``median``, ``minimum`` and ``maximum`` map each of :data:`SUMMARISED_FIGURES` to its
    statistic over the runs; ``ratio_to_torch_best`` is the median real tokens/s over
    torch best's (None without a torch row).
    """

    name: str
    family: str
    num_workers: int
    runs: list[RunFigures]
    token_itemsize: int
    batch_size: int
    median: dict[str, float] = field(default_factory=dict)
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    ratio_to_torch_best: Optional[float] = None

    def summarise(self) -> None:
        """Fills ``median``, ``minimum`` and ``maximum`` from ``runs``."""
        for name in SUMMARISED_FIGURES:
            values = [self.figure(run, name) for run in self.runs]
            self.median[name] = statistics.median(values)
            self.minimum[name] = min(values)
            self.maximum[name] = max(values)

    def figure(self, run: RunFigures, name: str) -> float:
        """A run's figure, including the ones derived here."""
        if name == "anon_rss_growth_bytes":
            return float(run.peak_anon_rss_bytes - run.start_anon_rss_bytes)
        if name == "bandwidth_gbps":
            return self.bandwidth_bytes(run) / run.seconds / 1e9
        return float(getattr(run, name))

    def bandwidth_bytes(self, run: RunFigures) -> int:
        """Bytes a run moved: token bytes read from the mapping plus output bytes written
        (input_ids and attention_mask over every padded position, plus labels; the last
        batch of an epoch is counted as full for labels)."""
        read = run.real_tokens * self.token_itemsize
        written = 2 * run.padded_tokens * _OUTPUT_ITEMSIZE
        written += run.batches * self.batch_size * _OUTPUT_ITEMSIZE
        return read + written

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "num_workers": self.num_workers,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "ratio_to_torch_best": self.ratio_to_torch_best,
            "runs": [run.as_dict() for run in self.runs],
        }


@dataclass
class W1Report:
    """Everything one ``arrowloader bench`` run measured."""

    config: W1Config
    corpus: CorpusFacts
    machine: dict[str, Any]
    memcpy_gbps: float
    rows: list[RowSummary]
    skipped: list[dict[str, str]]
    command: str
    started_at: str
    elapsed_s: float = 0.0

    def row(self, family: str) -> Optional[RowSummary]:
        """The best row (highest median tokens/s) of a family, or None."""
        rows = [r for r in self.rows if r.family == family]
        return max(rows, key=lambda r: r.median["tokens_per_s"], default=None)

    @property
    def torch_best(self) -> Optional[RowSummary]:
        """The torch row with the higher median real tokens/s."""
        return self.row("torch")

    def ratios(self) -> dict[str, Optional[float]]:
        """arrowloader against the best torch and hf rows (medians)."""
        ours = self.row("arrowloader")
        torch_best = self.torch_best
        hf_best = self.row("hf")

        def ratio(a: Optional[RowSummary], b: Optional[RowSummary], name: str) -> Optional[float]:
            if a is None or b is None or not b.median[name]:
                return None
            return a.median[name] / b.median[name]

        return {
            "arrowloader_over_torch_best": ratio(ours, torch_best, "tokens_per_s"),
            "arrowloader_over_hf_best": ratio(ours, hf_best, "tokens_per_s"),
            "arrowloader_cpu_per_token_over_torch_best": ratio(
                ours, torch_best, "cpu_s_per_mtok"
            ),
        }

    def bandwidth_fraction(self) -> Optional[float]:
        """arrowloader's bytes read + written per second over memcpy's (a copy of N bytes
        reads N and writes N), or None without an arrowloader row. The outputs of one batch
        stay in cache, so this can exceed 1: the DRAM figure is context, not a ceiling."""
        ours = self.row("arrowloader")
        if ours is None or not self.memcpy_gbps:
            return None
        return ours.median["bandwidth_gbps"] / (2 * self.memcpy_gbps)

    def as_json(self) -> dict[str, Any]:
        """Every figure, the settings and the machine, JSON-ready."""
        options = self.config.options
        ours = self.row("arrowloader")
        torch_best = self.torch_best
        return {
            "benchmark": "W1 pad",
            "command": self.command,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
            "arrowloader_version": arrowloader.__version__,
            "settings": {
                "column": options.column,
                "label_column": options.label_column,
                "batch_size": options.batch_size,
                "max_length": options.max_length,
                "pad_token_id": options.pad_token_id,
                "seconds": self.config.seconds,
                "repeats": self.config.repeats,
                "warmup_batches": self.config.warmup_batches,
                "seed": self.config.seed,
                "threads": self.config.threads,
                "peers": list(self.config.peers),
            },
            "corpus": self.corpus.as_dict(),
            "machine": self.machine,
            "memcpy_gbps": self.memcpy_gbps,
            "memcpy_gbps_means": "bytes copied per second (each read once, written once)",
            "memcpy_bytes": MEMCPY_BYTES,
            "rows": [row.as_dict() for row in self.rows],
            "torch_best": torch_best.name if torch_best else None,
            "ratios": self.ratios(),
            "arrowloader_bandwidth_gbps": ours.median["bandwidth_gbps"] if ours else None,
            "arrowloader_bandwidth_fraction_of_memcpy": self.bandwidth_fraction(),
            "skipped": self.skipped,
            "notes": {"anon_rss": ANON_RSS_NOTE, "cpu": CPU_NOTE},
        }

    def table(self) -> str:
        """The report as aligned text, ending with the arrowloader / torch best line."""
        options = self.config.options
        corpus = self.corpus
        kept_share = corpus.kept_tokens / corpus.tokens if corpus.tokens else 1.0
        lines = [
            f"W1 pad: shuffled documents, truncated to {options.max_length}, padded to the "
            f"longest of each batch of {options.batch_size}; outputs int64 input_ids, "
            f"attention_mask{', labels' if options.label_column is not None else ''}",
            f"corpus: {corpus.source}{' (reference)' if corpus.reference else ''}",
            f"        {corpus.documents:,} documents, {corpus.tokens / 1e6:.1f}M tokens; "
            f"truncation keeps {corpus.kept_tokens / 1e6:.1f}M ({100 * kept_share:.1f}%), "
            f"shortening {corpus.truncated_documents:,} documents",
            f"runs: {self.config.repeats} per loader, each >= {self.config.seconds:g} s after "
            f"{self.config.warmup_batches} warm-up batches, loaders interleaved; "
            "median [min-max]",
            "",
        ]
        headers = [
            "loader", "real Mtok/s", "vs torch best", "batches/s", "CPU s/Mtok",
            "anon RSS MiB", "first batch ms", "padding",
        ]
        body = [self._row_cells(row) for row in self.rows]
        widths = [max(len(cells[i]) for cells in [headers, *body]) for i in range(len(headers))]
        for cells in [headers, *body]:
            text = cells[0].ljust(widths[0])
            text += "".join("  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
            lines.append(text.rstrip())
        lines.append("")
        for skipped in self.skipped:
            lines.append(f"skipped {skipped['peer']}: {skipped['reason']}")
        lines.append(ANON_RSS_NOTE)
        lines.append(CPU_NOTE)
        ours = self.row("arrowloader")
        bandwidth = (
            f"bandwidth: memcpy (numpy copyto, 64 MiB) copies {self.memcpy_gbps:.1f} GB/s, "
            f"i.e. reads + writes {2 * self.memcpy_gbps:.1f} GB/s"
        )
        fraction = self.bandwidth_fraction()
        if ours is not None and fraction is not None:
            bandwidth += (
                f"; arrowloader reads + writes {ours.median['bandwidth_gbps']:.1f} GB/s (token "
                f"bytes from the mapping + output bytes) = {100 * fraction:.0f}% of that"
            )
        lines.append(bandwidth)
        lines.append(
            f"machine: {self.machine['usable_cores']} usable cores, "
            f"{(self.machine['memory_bytes'] or 0) / 2**30:.0f} GiB, "
            f"torch {self.machine['torch']}, pyarrow {self.machine['pyarrow']}, "
            f"numpy {self.machine['numpy']}, python {self.machine['python']}"
        )
        lines.append(f"whole run: {self.elapsed_s:.0f} s")
        ratios = self.ratios()
        torch_best = self.torch_best
        if ratios["arrowloader_over_hf_best"] is not None:
            lines.append(
                f"arrowloader / hf collator best: {ratios['arrowloader_over_hf_best']:.1f}x"
            )
        if ratios["arrowloader_cpu_per_token_over_torch_best"] is not None:
            lines.append(
                "arrowloader CPU s/Mtok / torch best: "
                f"{ratios['arrowloader_cpu_per_token_over_torch_best']:.3f}"
            )
        if torch_best is None or ratios["arrowloader_over_torch_best"] is None:
            lines.append("arrowloader / torch best: n/a (no torch peer was measured)")
        else:
            lines.append(f"torch best: {torch_best.name}")
            lines.append(
                f"arrowloader / torch best: {ratios['arrowloader_over_torch_best']:.1f}x"
            )
        return "\n".join(lines)

    def _row_cells(self, row: RowSummary) -> list[str]:
        med, lo, hi = row.median, row.minimum, row.maximum

        def spread(name: str, scale: float) -> str:
            return (
                f"{_sig(med[name] * scale)} "
                f"[{_sig(lo[name] * scale)}-{_sig(hi[name] * scale)}]"
            )

        ratio = "-" if row.ratio_to_torch_best is None else f"{row.ratio_to_torch_best:.2f}x"
        rss = (
            f"{med['peak_anon_rss_bytes'] / _MIB:.0f} "
            f"(+{max(0.0, med['anon_rss_growth_bytes']) / _MIB:.0f})"
        )
        return [
            row.name,
            spread("tokens_per_s", 1e-6),
            ratio,
            _sig(med["batches_per_s"]),
            spread("cpu_s_per_mtok", 1.0),
            rss,
            spread("first_batch_s", 1e3),
            f"{100 * med['padding_fraction']:.1f}%",
        ]


def _sig(value: float) -> str:
    """About three significant digits, without exponents."""
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


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


def run_w1(config: W1Config, command: Optional[str] = None) -> W1Report:
    """Measures W1 for arrowloader and the requested peers.

    Args:
        config: what to run.
        command: the command line, recorded in the report (default: ``sys.argv``).

    Raises:
        ArrowLoaderError: the corpus cannot be read.
        BenchmarkError: a loader produced wrong outputs.
    """
    started = time.perf_counter()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    options = config.options
    unknown = set(config.peers) - set(KNOWN_PEERS)
    if unknown:
        raise ValueError(f"unknown peers {sorted(unknown)}; choose from {list(KNOWN_PEERS)}")
    reference = config.source is None
    if reference:
        source: Source = reference_corpus(
            REFERENCE_DOCUMENTS, REFERENCE_SEED, show_progress=config.show_progress
        )
    else:
        source = config.source  # type: ignore[assignment]

    # Opening a TokenDataset first reports a bad source or column with arrowloader's
    # clear errors. The lengths come from numpy views of the Arrow offsets, independent
    # of the native code under test.
    with quiet_truncation_warning():
        arrowloader_peer(source, options).open_dataset()
    mapped = MappedTokenColumn(source, options.column, options.label_column)
    lengths, token_itemsize = mapped.lengths(), mapped.value_itemsize
    del mapped
    kept = kept_lengths(lengths, options.max_length)
    corpus = CorpusFacts(
        source=str(source),
        reference=reference,
        documents=len(lengths),
        tokens=int(lengths.sum()),
        kept_tokens=int(kept.sum()),
        truncated_documents=int((lengths > options.max_length).sum()),
        token_itemsize=token_itemsize,
    )
    bandwidth = memcpy_gbps()

    skipped: list[dict[str, str]] = []
    temporary_folders: list[Path] = []
    try:
        peers = _build_peers(config, source, reference, skipped, temporary_folders)
        rows = {
            peer.name: RowSummary(
                peer.name, peer.family, peer.num_workers, [], token_itemsize,
                options.batch_size,
            )
            for peer in peers
        }
        progress = tqdm(
            total=config.repeats * len(peers), desc="W1", unit="run",
            disable=not config.show_progress,
        )
        with progress, quiet_truncation_warning():
            for repeat in range(config.repeats):
                for peer in peers:
                    progress.set_postfix_str(f"repeat {repeat + 1}: {peer.name}")
                    rows[peer.name].runs.append(
                        measure_run(
                            peer,
                            kept=kept,
                            batch_size=options.batch_size,
                            with_labels=options.label_column is not None,
                            seconds=config.seconds,
                            seed=config.seed + repeat,
                            repeat=repeat,
                            warmup_batches=config.warmup_batches,
                        )
                    )
                    progress.update()
    finally:
        for folder in temporary_folders:
            shutil.rmtree(folder, ignore_errors=True)

    summaries = list(rows.values())
    for row in summaries:
        row.summarise()
    report = W1Report(
        config=config,
        corpus=corpus,
        machine=machine_facts(),
        memcpy_gbps=bandwidth,
        rows=summaries,
        skipped=skipped,
        command=command if command is not None else " ".join(sys.argv),
        started_at=started_at,
    )
    torch_best = report.torch_best
    if torch_best is not None:
        for row in summaries:
            row.ratio_to_torch_best = row.median["tokens_per_s"] / torch_best.median["tokens_per_s"]
    report.elapsed_s = time.perf_counter() - started
    return report


def _build_peers(
    config: W1Config,
    source: Source,
    reference: bool,
    skipped: list[dict[str, str]],
    temporary_folders: list[Path],
) -> list[W1Peer]:
    options = config.options
    peers: list[W1Peer] = []
    if "torch" in config.peers:
        peers.extend(torch_peers(source, options))
    if "hf" in config.peers:
        missing = hf_peer.missing_modules()
        if missing:
            skipped.append({
                "peer": "hf",
                "reason": f"{', '.join(missing)} not installed (pip install 'arrowloader[hf]')",
            })
        else:
            peers.extend(
                hf_peer.hf_peers(
                    _saved_copy(config, source, reference, temporary_folders), options
                )
            )
    peers.append(arrowloader_peer(source, options, config.threads))
    return peers


def _saved_copy(
    config: W1Config, source: Source, reference: bool, temporary_folders: list[Path]
) -> Path:
    """The ``save_to_disk`` folder the hf peer loads: the source itself if it is one, a
    cached copy for the reference corpus, else a copy removed after the run (a user's
    corpus may be large, and it is not ours to keep)."""
    options = config.options
    columns = [options.column] + (
        [options.label_column] if options.label_column is not None else []
    )
    if isinstance(source, (str, os.PathLike)) and hf_peer.is_saved_dataset(Path(source)):
        return Path(source)
    if reference:
        # Cached across runs, so it holds both reference columns whatever this run uses.
        columns = ["input_ids", "label"]
        target = cache_dir() / (
            f"reference-{REFERENCE_DOCUMENTS}docs-seed{REFERENCE_SEED}.save_to_disk"
        )
    else:
        folder = Path(tempfile.mkdtemp(prefix="hf-copy-", dir=cache_dir()))
        temporary_folders.append(folder)
        target = folder / "dataset"
    return hf_peer.write_saved_copy(
        source, columns, target, show_progress=config.show_progress
    )


@contextlib.contextmanager
def quiet_truncation_warning() -> Iterator[None]:
    """Raises the ``arrowloader`` logger to ERROR inside a ``with`` block: TokenDataset
    warns about truncation each time it opens, so once per run here, while the report
    states the truncation once."""
    logger = logging.getLogger("arrowloader")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_meminfo_bytes(key: str, path: Optional[Path] = None) -> Optional[int]:
    """A ``/proc/meminfo`` field in bytes (e.g. ``"MemTotal"``), or None if unavailable."""
    try:
        text = (path or Path("/proc/meminfo")).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == key:
            return int(rest.split()[0]) * 1024
    return None
