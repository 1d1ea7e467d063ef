"""Summaries of the runs: one table (and one JSON object) per workload, and the whole
``arrowloader bench`` report around them.

A workload taking part in a report is a :class:`BenchWorkload`: besides what
:func:`~arrowloader.bench.harness.measure_run` needs, it lists its peers and says how to
describe itself, its corpus and its settings, and how many bytes each row moves.
"""

from __future__ import annotations

import abc
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import arrowloader
from arrowloader.bench.harness import MEMCPY_BYTES, Peer, RunFigures, Workload
from arrowloader.bench.torch_peers import thread_worker_rows, thread_workers_missing
from arrowloader.sources import Source
from arrowloader.wording import plural

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
    "stall_ms_per_step",
    "stall_fraction",
)
#: Figures measured only with a simulated training step (``--consumer-ms``).
STALL_FIGURES = ("stall_ms_per_step", "stall_fraction")
_MIB = 1024 * 1024

ANON_RSS_NOTE = (
    "anon RSS: peak RssAnon of the process plus its worker processes, sampled every 20 ms "
    "(anonymous memory only: the page cache of the mapped corpus is not the loader's memory "
    "and is not counted; pages a forked worker shares copy-on-write count once per process); "
    "(+N) = growth over the start of the run"
)
CPU_NOTE = (
    "CPU: user+sys seconds of the process and its reaped workers, from building the loader "
    "until its workers are shut down, per million real tokens delivered meanwhile"
)
FIRST_BATCH_NOTE = (
    "first batch: from building the loader over the opened dataset to receiving its first "
    "batch (worker start-up and any epoch planning included)"
)
#: Names of the non-torch peer families in ratio lines.
FAMILY_LABELS = {
    "hf": "hf collator",
    "nanogpt": "nanoGPT get_batch",
    "torchdata": "torchdata StatefulDataLoader",
    "grain": "grain",
    "spdl": "spdl",
    "dataloader-rs": "dataloader-rs",
    "litdata": "litdata",
}


@dataclass(frozen=True)
class Traffic:
    """Bytes a loader moves: token bytes read from the mapping plus output bytes written.

    A run moves ``real_tokens * read_bytes_per_token + positions *
    written_bytes_per_position + batches * written_bytes_per_batch``.
    """

    read_bytes_per_token: int
    written_bytes_per_position: int
    written_bytes_per_batch: int = 0

    def bytes_moved(self, run: RunFigures) -> int:
        """Bytes read plus written over a run's timed batches."""
        return (
            run.real_tokens * self.read_bytes_per_token
            + run.padded_tokens * self.written_bytes_per_position
            + run.batches * self.written_bytes_per_batch
        )


class BenchWorkload(Workload):
    """A workload ready to run: its corpus is open, its peers are built.

    Attributes:
        peers: the rows, in table order (arrowloader's last).
        skipped: ``{"peer", "reason"}`` of each requested peer that cannot run.
        conversions: ``{"peer", "seconds", "cached", "note"}`` of each copy of the corpus
            a peer converts it into before its rows run (litdata's ``optimize``): timed
            apart, not part of any row's figures.
        other_families: peer families besides torch and arrowloader that this workload
            compares against (their best row gets a ratio line).
    """

    peers: list[Peer]
    skipped: list[dict[str, str]]
    conversions: list[dict[str, Any]]
    other_families: tuple[str, ...] = ()

    def __init__(
        self,
        source: Source,
        *,
        reference: bool,
        options: Any,
        threads: tuple[int, ...] = (0,),
        show_progress: bool = True,
    ) -> None:
        self.source = source
        self.reference = reference
        self.options = options
        self.threads = tuple(threads) or (0,)
        self.show_progress = show_progress
        self.skipped = []
        self.conversions = []
        self._temporary_folders: list[Path] = []

    def can_run(self, family: str, missing: list[str], install: str) -> bool:
        """Whether a requested optional peer family can run: with ``missing`` modules it
        cannot, and is recorded in :attr:`skipped` with the ``install`` line."""
        if missing:
            self.skipped.append({
                "peer": family,
                "reason": f"{', '.join(missing)} not installed ({install})",
            })
        return not missing

    def torch_thread_rows(self, torch_rows: list[Peer]) -> list[Peer]:
        """``torch_rows`` with worker processes again with torch's thread workers, where the
        installed torch has them; else none, recorded in :attr:`skipped`."""
        missing = thread_workers_missing()
        if missing is not None:
            self.skipped.append({"peer": "torch thread workers", "reason": missing})
            return []
        return thread_worker_rows(torch_rows)

    @abc.abstractmethod
    def description(self) -> list[str]:
        """Lines above the table: what the workload does, the corpus, the peers."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """The workload's settings, JSON-ready."""

    @abc.abstractmethod
    def corpus_facts(self) -> dict[str, Any]:
        """What the corpus is, JSON-ready."""

    @abc.abstractmethod
    def traffic(self, peer: Peer) -> Traffic:
        """The bytes ``peer`` moves per token, position and batch."""

    @abc.abstractmethod
    def batch_output_bytes(self) -> int:
        """Bytes of one (full-width) batch's outputs: the cache-sized memcpy buffer."""

    def close(self) -> None:
        """Removes what the workload wrote for this run only (copies of a user's corpus)."""
        for folder in self._temporary_folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._temporary_folders.clear()


@dataclass
class RowSummary:
    """One loader's runs and their summary (one table row).

    ``median``, ``minimum`` and ``maximum`` map each of :data:`SUMMARISED_FIGURES` to its
    statistic over the runs; ``ratio_to_torch_best`` is the median real tokens/s over
    torch best's (None without a torch row), ``ratio_to_strongest_peer`` over the
    strongest peer's (the fastest headline row of any library but arrowloader; None
    without a peer).
    """

    name: str
    family: str
    num_workers: int
    headline: bool
    traffic: Traffic
    runs: list[RunFigures] = field(default_factory=list)
    median: dict[str, float] = field(default_factory=dict)
    minimum: dict[str, float] = field(default_factory=dict)
    maximum: dict[str, float] = field(default_factory=dict)
    ratio_to_torch_best: Optional[float] = None
    ratio_to_strongest_peer: Optional[float] = None

    def summarise(self) -> None:
        """Fills ``median``, ``minimum`` and ``maximum`` from ``runs``."""
        for name in SUMMARISED_FIGURES:
            values = [self.figure(run, name) for run in self.runs]
            if any(value is None for value in values):
                continue  # a figure the runs did not measure (the stall, without a step)
            self.median[name] = statistics.median(values)
            self.minimum[name] = min(values)
            self.maximum[name] = max(values)

    def figure(self, run: RunFigures, name: str) -> Optional[float]:
        """A run's figure, including the ones derived here (None if not measured)."""
        if name == "anon_rss_growth_bytes":
            return float(run.peak_anon_rss_bytes - run.start_anon_rss_bytes)
        if name == "bandwidth_gbps":
            return self.traffic.bytes_moved(run) / run.seconds / 1e9
        value = getattr(run, name)
        return None if value is None else float(value)

    def as_dict(self) -> dict[str, Any]:
        """The row, its summary and every run, JSON-ready."""
        return {
            "name": self.name,
            "family": self.family,
            "num_workers": self.num_workers,
            "headline": self.headline,
            "median": self.median,
            "min": self.minimum,
            "max": self.maximum,
            "ratio_to_torch_best": self.ratio_to_torch_best,
            "ratio_to_strongest_peer": self.ratio_to_strongest_peer,
            "traffic": dict(self.traffic.__dict__),
            "runs": [run.as_dict() for run in self.runs],
        }


@dataclass
class WorkloadReport:
    """Everything measured for one workload: its rows and how they compare."""

    key: str
    title: str
    description: list[str]
    settings: dict[str, Any]
    corpus: dict[str, Any]
    rows: list[RowSummary]
    skipped: list[dict[str, str]]
    conversions: list[dict[str, Any]]
    other_families: tuple[str, ...]
    cache_memcpy_gbps: float
    batch_output_bytes: int
    elapsed_s: float = 0.0

    def row(self, family: str) -> Optional[RowSummary]:
        """The best headline row (highest median tokens/s) of a family, or None."""
        rows = [r for r in self.rows if r.family == family and r.headline]
        return max(rows, key=lambda r: r.median["tokens_per_s"], default=None)

    @property
    def torch_best(self) -> Optional[RowSummary]:
        """The torch row with the highest median real tokens/s."""
        return self.row("torch")

    @property
    def strongest_peer(self) -> Optional[RowSummary]:
        """The fastest headline row (median real tokens/s) of any family but arrowloader:
        the peer a claim is made against."""
        rows = [r for r in self.rows if r.family != "arrowloader" and r.headline]
        return max(rows, key=lambda r: r.median["tokens_per_s"], default=None)

    def arrowloader_rows(self) -> list[RowSummary]:
        """Every arrowloader row (the headline one first)."""
        rows = [r for r in self.rows if r.family == "arrowloader"]
        return sorted(rows, key=lambda r: not r.headline)

    def set_ratios(self) -> None:
        """Fills each row's ``ratio_to_torch_best`` and ``ratio_to_strongest_peer``."""
        torch_best, strongest = self.torch_best, self.strongest_peer

        def over(row: RowSummary, best: Optional[RowSummary]) -> Optional[float]:
            if best is None or not best.median["tokens_per_s"]:
                return None
            return row.median["tokens_per_s"] / best.median["tokens_per_s"]

        for row in self.rows:
            row.ratio_to_torch_best = over(row, torch_best)
            row.ratio_to_strongest_peer = over(row, strongest)

    def ratios(self) -> dict[str, Optional[float]]:
        """arrowloader's headline row against the best torch row, the best row of each
        other family and the strongest peer (medians; CPU per token against torch best's
        and the strongest peer's)."""
        ours = self.row("arrowloader")
        torch_best, strongest = self.torch_best, self.strongest_peer

        def ratio(a: Optional[RowSummary], b: Optional[RowSummary], name: str) -> Optional[float]:
            if a is None or b is None or not b.median[name]:
                return None
            return a.median[name] / b.median[name]

        ratios = {"arrowloader_over_torch_best": ratio(ours, torch_best, "tokens_per_s")}
        for family in self.other_families:
            ratios[f"arrowloader_over_{family}_best"] = ratio(
                ours, self.row(family), "tokens_per_s"
            )
        ratios["arrowloader_over_strongest_peer"] = ratio(ours, strongest, "tokens_per_s")
        ratios["arrowloader_cpu_per_token_over_torch_best"] = ratio(
            ours, torch_best, "cpu_s_per_mtok"
        )
        ratios["arrowloader_cpu_per_token_over_strongest_peer"] = ratio(
            ours, strongest, "cpu_s_per_mtok"
        )
        return ratios

    def bandwidth_fractions(self, dram_memcpy_gbps: float) -> dict[str, Optional[float]]:
        """arrowloader's bytes read + written per second over memcpy's, for the DRAM-sized
        and the cache-sized (one batch's outputs) buffer (a copy of N bytes reads N and
        writes N). The outputs of one batch stay in cache, so the DRAM fraction can exceed
        1: it is context, not a ceiling."""
        ours = self.row("arrowloader")

        def fraction(memcpy: float) -> Optional[float]:
            if ours is None or not memcpy:
                return None
            return ours.median["bandwidth_gbps"] / (2 * memcpy)

        return {"dram": fraction(dram_memcpy_gbps), "cache": fraction(self.cache_memcpy_gbps)}

    def bandwidth_bounds(self, dram_memcpy_gbps: float) -> dict[str, Optional[float]]:
        """Real tokens/s that arrowloader's headline row would reach if moving its bytes
        (token bytes read + output bytes written, per real token, from its median run)
        ran at memcpy's reads + writes rate, DRAM-sized and cache-sized: the
        memory-bandwidth bound of this workload on this machine."""
        ours = self.row("arrowloader")
        bounds: dict[str, Optional[float]] = {
            "bytes_per_real_token": None, "dram": None, "cache": None,
        }
        runs = [] if ours is None else [r for r in ours.runs if r.real_tokens]
        if not runs:
            return bounds
        run = sorted(runs, key=lambda r: r.tokens_per_s)[len(runs) // 2]
        per_token = ours.traffic.bytes_moved(run) / run.real_tokens
        bounds["bytes_per_real_token"] = per_token
        bounds["dram"] = 2 * dram_memcpy_gbps * 1e9 / per_token if dram_memcpy_gbps else None
        bounds["cache"] = (
            2 * self.cache_memcpy_gbps * 1e9 / per_token if self.cache_memcpy_gbps else None
        )
        return bounds

    def thread_sweep(self) -> list[dict[str, Any]]:
        """arrowloader's headline rows by thread count (more than one with ``--threads``
        listing several): ``{"threads", "row", "tokens_per_s", "min", "max"}`` each."""
        rows = [r for r in self.rows if r.family == "arrowloader" and r.headline]
        return [
            {
                "threads": r.num_workers,
                "row": r.name,
                "tokens_per_s": r.median["tokens_per_s"],
                "min": r.minimum["tokens_per_s"],
                "max": r.maximum["tokens_per_s"],
            }
            for r in sorted(rows, key=lambda r: r.num_workers)
        ]

    @property
    def stalls_measured(self) -> bool:
        """Whether the runs simulated a training step (``--consumer-ms``)."""
        return any("stall_fraction" in row.median for row in self.rows)

    def summary_lines(self) -> list[str]:
        """``<title>: <arrowloader row> / torch best: Nx, / strongest peer (<row>): Mx``,
        one per arrowloader row."""
        strongest = self.strongest_peer
        lines = []
        for row in self.arrowloader_rows():
            torch_part = (
                "n/a (no torch row)"
                if row.ratio_to_torch_best is None
                else f"{row.ratio_to_torch_best:.1f}x"
            )
            peer_part = (
                "n/a (no peer)"
                if strongest is None or row.ratio_to_strongest_peer is None
                else f"({strongest.name}): {row.ratio_to_strongest_peer:.1f}x"
            )
            lines.append(
                f"{self.title}: {row.name} / torch best: {torch_part}, / strongest peer "
                f"{peer_part}"
            )
        return lines

    def as_json(self, dram_memcpy_gbps: float) -> dict[str, Any]:
        """Every figure of the workload, JSON-ready."""
        ours = self.row("arrowloader")
        torch_best = self.torch_best
        fractions = self.bandwidth_fractions(dram_memcpy_gbps)
        return {
            "benchmark": self.title,
            "settings": self.settings,
            "corpus": self.corpus,
            "elapsed_s": self.elapsed_s,
            "rows": [row.as_dict() for row in self.rows],
            "torch_best": torch_best.name if torch_best else None,
            "strongest_peer": self.strongest_peer.name if self.strongest_peer else None,
            "ratios": self.ratios(),
            "arrowloader_row": ours.name if ours else None,
            "arrowloader_bandwidth_gbps": ours.median["bandwidth_gbps"] if ours else None,
            "arrowloader_bandwidth_fraction_of_memcpy": fractions["dram"],
            "cache_memcpy_gbps": self.cache_memcpy_gbps,
            "cache_memcpy_bytes": self.batch_output_bytes,
            "arrowloader_bandwidth_fraction_of_cache_memcpy": fractions["cache"],
            "bandwidth_bound_tokens_per_s": self.bandwidth_bounds(dram_memcpy_gbps),
            "thread_sweep": self.thread_sweep(),
            "skipped": self.skipped,
            "conversions": self.conversions,
        }

    def table(self, dram_memcpy_gbps: float) -> list[str]:
        """The workload's section of the report: description, table, ratio lines."""
        lines = [*self.description, ""]
        headers = [
            "loader", "real Mtok/s", "vs torch best", "vs strongest", "batches/s", "CPU s/Mtok",
            "anon RSS MiB", "first batch ms", "padding",
        ]
        stalls = self.stalls_measured
        if stalls:
            headers += ["stall ms/step", "stall"]
        body = [_row_cells(row, stalls) for row in self.rows]
        widths = [max(len(cells[i]) for cells in [headers, *body]) for i in range(len(headers))]
        for cells in [headers, *body]:
            text = cells[0].ljust(widths[0])
            text += "".join("  " + c.rjust(w) for c, w in zip(cells[1:], widths[1:]))
            lines.append(text.rstrip())
        lines.append("")
        for skipped in self.skipped:
            lines.append(f"skipped {skipped['peer']}: {skipped['reason']}")
        for conversion in self.conversions:
            lines.append(conversion["note"])
        ours = self.row("arrowloader")
        fractions = self.bandwidth_fractions(dram_memcpy_gbps)
        if ours is not None and fractions["dram"] is not None:
            cache = (
                f", {100 * fractions['cache']:.0f}% of the cache-sized copy's "
                f"({2 * self.cache_memcpy_gbps:.1f} GB/s, {self.batch_output_bytes / 1024:.0f} "
                "KiB = one batch's outputs)"
                if fractions["cache"] is not None
                else ""
            )
            lines.append(
                f"bandwidth: {ours.name} reads + writes {ours.median['bandwidth_gbps']:.1f} GB/s "
                f"(token bytes from the mapping + output bytes) = {100 * fractions['dram']:.0f}% "
                f"of the DRAM memcpy's reads + writes{cache}"
            )
        bounds = self.bandwidth_bounds(dram_memcpy_gbps)
        if bounds["dram"] is not None:
            cache_bound = (
                f", {bounds['cache'] / 1e6:,.0f} at the cache-sized copy's"
                if bounds["cache"] is not None
                else ""
            )
            lines.append(
                f"memory-bandwidth bound: {bounds['dram'] / 1e6:,.0f} real Mtok/s at the DRAM "
                f"memcpy's rate{cache_bound} ({bounds['bytes_per_real_token']:.1f} bytes moved "
                "per real token)"
            )
        sweep = self.thread_sweep()
        if len(sweep) > 1:
            lines.append(
                "thread sweep: "
                + ", ".join(f"{p['threads']}: {p['tokens_per_s'] / 1e6:.0f}" for p in sweep)
                + " real Mtok/s"
            )
        ratios = self.ratios()
        for family in self.other_families:
            value = ratios[f"arrowloader_over_{family}_best"]
            if value is not None:
                label = FAMILY_LABELS.get(family, family)
                lines.append(f"arrowloader / {label} best: {value:.1f}x")
        if ratios["arrowloader_cpu_per_token_over_torch_best"] is not None:
            lines.append(
                "arrowloader CPU s/Mtok / torch best: "
                f"{ratios['arrowloader_cpu_per_token_over_torch_best']:.3f}"
            )
        strongest_cpu = ratios["arrowloader_cpu_per_token_over_strongest_peer"]
        if strongest_cpu is not None:
            lines.append(f"arrowloader CPU s/Mtok / strongest peer: {strongest_cpu:.3f}")
        torch_best = self.torch_best
        lines.append(f"torch best: {torch_best.name if torch_best else 'n/a (no torch row)'}")
        strongest = self.strongest_peer
        lines.append(
            f"strongest peer: {strongest.name if strongest else 'n/a (no peer)'}"
            + (
                f"; arrowloader / strongest peer: {ratios['arrowloader_over_strongest_peer']:.1f}x"
                if ratios["arrowloader_over_strongest_peer"] is not None
                else ""
            )
        )
        return lines


@dataclass
class BenchReport:
    """Everything one ``arrowloader bench`` run measured, over one or more workloads."""

    workloads: list[WorkloadReport]
    settings: dict[str, Any]
    machine: dict[str, Any]
    memcpy_gbps: float
    command: str
    started_at: str
    elapsed_s: float = 0.0

    def workload(self, key: str) -> WorkloadReport:
        """The report of one workload (``"pad"``, ``"pack"``)."""
        for report in self.workloads:
            if report.key == key:
                return report
        raise KeyError(key)

    def as_json(self) -> dict[str, Any]:
        """Every figure, the settings and the machine, JSON-ready."""
        return {
            "command": self.command,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed_s,
            "arrowloader_version": arrowloader.__version__,
            "settings": self.settings,
            "machine": self.machine,
            "memcpy_gbps": self.memcpy_gbps,
            "memcpy_gbps_means": "bytes copied per second (each read once, written once)",
            "memcpy_bytes": MEMCPY_BYTES,
            "workloads": {w.key: w.as_json(self.memcpy_gbps) for w in self.workloads},
            "summary": [line for w in self.workloads for line in w.summary_lines()],
            "notes": {"anon_rss": ANON_RSS_NOTE, "cpu": CPU_NOTE, "first_batch": FIRST_BATCH_NOTE},
        }

    def table(self) -> str:
        """The report as text: each workload's section, the notes, the machine, and last
        one line per arrowloader row with its ratio to its workload's torch best."""
        lines: list[str] = []
        for report in self.workloads:
            lines.extend(report.table(self.memcpy_gbps))
            lines.append("")
        lines.append(ANON_RSS_NOTE)
        lines.append(CPU_NOTE)
        lines.append(FIRST_BATCH_NOTE)
        lines.append(
            f"memcpy (numpy copyto, {MEMCPY_BYTES // _MIB} MiB, DRAM): {self.memcpy_gbps:.1f} "
            f"GB/s copied, i.e. reads + writes {2 * self.memcpy_gbps:.1f} GB/s"
        )
        machine = self.machine
        lines.append(
            f"machine: {plural(machine['usable_cores'], 'usable core')}, "
            f"{(machine['memory_bytes'] or 0) / 2**30:.0f} GiB, "
            f"torch {machine['torch']}, pyarrow {machine['pyarrow']}, "
            f"numpy {machine['numpy']}, python {machine['python']}"
        )
        lines.append(f"whole run: {self.elapsed_s:.0f} s")
        for report in self.workloads:
            lines.extend(report.summary_lines())
        return "\n".join(lines)


def _row_cells(row: RowSummary, stalls: bool = False) -> list[str]:
    med, lo, hi = row.median, row.minimum, row.maximum

    def spread(name: str, scale: float) -> str:
        return f"{_sig(med[name] * scale)} [{_sig(lo[name] * scale)}-{_sig(hi[name] * scale)}]"

    ratio = "-" if row.ratio_to_torch_best is None else f"{row.ratio_to_torch_best:.2f}x"
    strongest = (
        "-" if row.ratio_to_strongest_peer is None else f"{row.ratio_to_strongest_peer:.2f}x"
    )
    rss = (
        f"{med['peak_anon_rss_bytes'] / _MIB:.0f} "
        f"(+{max(0.0, med['anon_rss_growth_bytes']) / _MIB:.0f})"
    )
    cells = [
        row.name,
        spread("tokens_per_s", 1e-6),
        ratio,
        strongest,
        _sig(med["batches_per_s"]),
        spread("cpu_s_per_mtok", 1.0),
        rss,
        spread("first_batch_s", 1e3),
        f"{100 * med['padding_fraction']:.1f}%",
    ]
    if stalls:
        if "stall_fraction" in med:
            cells += [spread("stall_ms_per_step", 1.0), f"{100 * med['stall_fraction']:.1f}%"]
        else:
            cells += ["-", "-"]
    return cells


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
