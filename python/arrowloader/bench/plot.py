"""``arrowloader bench --plot FILE.png``: the report as a chart.

One panel per workload: a horizontal bar per loader, its median real tokens/s (log scale,
so a 100x gap stays readable) with the min-max of its runs as an error bar and its ratio to
torch best written beside it, and a dashed line at the workload's memory-bandwidth bound.
When ``--threads`` listed several counts, a last panel draws arrowloader's tokens/s against
its thread count for each workload. Needs matplotlib (``pip install 'arrowloader[plot]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from arrowloader.bench.report import BenchReport, WorkloadReport
from arrowloader.wording import plural

#: Bar colour of each loader family.
FAMILY_COLOURS = {
    "arrowloader": "#1f77b4",
    "torch": "#ff7f0e",
    "hf": "#9467bd",
    "nanogpt": "#2ca02c",
    "torchdata": "#d62728",
    "grain": "#e377c2",
    "spdl": "#bcbd22",
    "dataloader-rs": "#17becf",
    "litdata": "#7f7f7f",
    "custom": "#8c564b",
}


def matplotlib_missing() -> bool:
    """Whether matplotlib cannot be imported (``--plot`` then fails before measuring)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return True
    return False


def write_plot(report: BenchReport, path: Path) -> None:
    """Draws ``report`` (see the module docstring) into the PNG file ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    panels = list(report.workloads)
    sweeps = [w for w in panels if len(w.thread_sweep()) > 1]
    heights = [max(1.6, 0.45 * len(w.rows) + 1.1) for w in panels]
    if sweeps:
        heights.append(3.2)
    figure, axes = plt.subplots(
        len(heights), 1, figsize=(10, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )
    for ax, workload in zip(axes[:, 0], panels):
        _throughput_panel(ax, workload, report.memcpy_gbps)
    if sweeps:
        _sweep_panel(axes[-1, 0], sweeps)
    machine = report.machine
    figure.suptitle(
        f"arrowloader bench: {plural(machine.get('usable_cores') or 0, 'core')}, "
        f"{(machine.get('memory_bytes') or 0) / 2**30:.0f} GiB, torch {machine.get('torch')}; "
        f"median of {plural(report.settings.get('repeats') or 0, 'run')}, bars min-max",
        fontsize=11,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _throughput_panel(ax: Any, workload: WorkloadReport, dram_memcpy_gbps: float) -> None:
    rows = workload.rows
    names = [row.name for row in rows]
    medians = [row.median["tokens_per_s"] / 1e6 for row in rows]
    low = [m - row.minimum["tokens_per_s"] / 1e6 for m, row in zip(medians, rows)]
    high = [row.maximum["tokens_per_s"] / 1e6 - m for m, row in zip(medians, rows)]
    colours = [FAMILY_COLOURS.get(row.family, "#7f7f7f") for row in rows]
    positions = list(range(len(rows)))[::-1]  # first row on top, as in the table
    ax.barh(positions, medians, xerr=[low, high], color=colours, capsize=3, height=0.6)
    ax.set_yticks(positions, names, fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("real tokens/s (millions, log scale)")
    ax.set_title(workload.title, loc="left", fontsize=10, fontweight="bold")
    largest = max([*medians, 1e-9])
    bound = workload.bandwidth_bounds(dram_memcpy_gbps)["dram"]
    if bound:
        ax.axvline(bound / 1e6, color="#555555", linestyle="--", linewidth=1)
        ax.text(
            bound / 1e6, len(rows) - 0.45, "memory bound (DRAM memcpy) ", fontsize=8,
            color="#555555", va="top", ha="right",
        )
        largest = max(largest, bound / 1e6)
    for y, row, value, above in zip(positions, rows, medians, high):
        ratio = "" if row.ratio_to_torch_best is None else f"  {row.ratio_to_torch_best:.2f}x"
        # Right of the error bar, not on it.
        ax.text((value + above) * 1.15, y, f"{value:,.3g}{ratio}", va="center", fontsize=8)
    smallest = min(m for m in medians if m > 0) if any(m > 0 for m in medians) else 0.1
    ax.set_xlim(smallest / 2, largest * 6)
    ax.grid(axis="x", which="major", alpha=0.3)


def _sweep_panel(ax: Any, workloads: list[WorkloadReport]) -> None:
    for workload in workloads:
        sweep = workload.thread_sweep()
        threads = [point["threads"] for point in sweep]
        medians = [point["tokens_per_s"] / 1e6 for point in sweep]
        low = [m - point["min"] / 1e6 for m, point in zip(medians, sweep)]
        high = [point["max"] / 1e6 - m for m, point in zip(medians, sweep)]
        ax.errorbar(threads, medians, yerr=[low, high], marker="o", capsize=3,
                    label=workload.title)
    ax.set_xlabel("arrowloader native threads (num_workers)")
    ax.set_ylabel("real Mtok/s")
    ax.set_xticks(sorted({p["threads"] for w in workloads for p in w.thread_sweep()}))
    ax.set_ylim(bottom=0)
    ax.set_title("thread sweep", loc="left", fontsize=10, fontweight="bold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
