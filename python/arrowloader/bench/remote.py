"""The ``remote`` rows of ``arrowloader bench --workload pack --data s3://...``: W2 read
from object storage through the shard cache, against the same corpus on local disk, in
the same run.

Three measurements:

- cold: a fresh cache folder; from building ``PackedDataset(URL)`` to the loader's first
  batch (listing, every download, the open, the epoch's plan), with the bytes downloaded
  and the time the first object took;
- warm: the same URL again over that cache (every object a cache hit: a listing and a
  check of each copy, no download), its open time and cache hits;
- steady state: W2 throughput of the warm remote dataset and of the same files opened as
  a local corpus, interleaved, ``repeats`` runs of ``seconds`` each (the harness's
  :func:`~arrowloader.bench.harness.measure_run`).

The store is named by the usual environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
...). Peers that read object storage themselves (litdata, Mosaic ``streaming``) are not
run: both pull another torch build when installed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any, Optional, Union

import torch

import arrowloader
from arrowloader.bench.harness import Peer, measure_run
from arrowloader.bench.pack import PackOptions, PackWorkload
from arrowloader.shard_cache import format_size

#: Why the object-storage peers are not measured (checked with ``pip install --dry-run``).
PEERS_NOT_RUN = (
    "litdata and mosaicml-streaming are not measured: installing either pulls another "
    "torch build (with CUDA libraries) over the pinned one"
)


@dataclass
class RemoteReport:
    """The figures of one remote benchmark run (see the module docstring)."""

    url: str
    files: int
    bytes: int
    cold_first_batch_s: float
    cold_download_s: float
    first_object_s: Optional[float]
    bytes_downloaded: int
    objects_downloaded: int
    warm_open_s: float
    cache_hits: int
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    whole_run_s: float = 0.0

    def medians(self, name: str) -> dict[str, float]:
        runs = self.rows[name]
        return {
            "tokens_per_s": median(r["tokens_per_s"] for r in runs),
            "first_batch_s": median(r["first_batch_s"] for r in runs),
            "open_s": median(r["open_s"] for r in runs),
            "cpu_s_per_mtok": median(r["cpu_s_per_mtok"] for r in runs),
        }

    def table(self) -> str:
        """The report as text."""
        s = self.settings
        lines = [
            f"W2 pack, remote: {self.url} ({self.files} files, {format_size(self.bytes)}), "
            f"blocks of {s['seq_len'] + 1}, batches of {s['batch_size']}, "
            f"threads {s['threads']}",
            f"cold cache: first batch {self.cold_first_batch_s:.2f} s after building the "
            f"dataset (download {self.cold_download_s:.2f} s of "
            f"{format_size(self.bytes_downloaded)} in {self.objects_downloaded} objects; first "
            f"object {self.first_object_s or 0:.2f} s)",
            f"warm cache: open {self.warm_open_s:.2f} s, {self.cache_hits} cache hits, "
            "0 bytes downloaded",
            f"runs: {s['repeats']} per loader, each >= {s['seconds']:g} s, interleaved; median",
            "",
            f"{'loader':<34}{'real Mtok/s':>12}{'vs local':>10}{'first batch ms':>16}"
            f"{'open s':>9}{'CPU s/Mtok':>12}",
        ]
        local = self.medians("local")
        for name in ("local", "remote"):
            m = self.medians(name)
            label = ("arrowloader, local disk" if name == "local"
                     else "arrowloader, s3 (warm cache)")
            lines.append(
                f"{label:<34}{m['tokens_per_s'] / 1e6:>12.1f}"
                f"{m['tokens_per_s'] / local['tokens_per_s']:>9.2f}x"
                f"{m['first_batch_s'] * 1e3:>16.1f}{m['open_s']:>9.2f}"
                f"{m['cpu_s_per_mtok']:>12.4f}"
            )
        lines += ["", PEERS_NOT_RUN, f"whole run: {self.whole_run_s:.0f} s"]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _open(source: Union[str, list[str]], options: PackOptions, seed: int,
          **extra: Any) -> arrowloader.PackedDataset:
    return arrowloader.PackedDataset(
        source, seq_len=options.seq_len, eos_token_id=options.eos_token_id,
        column=options.column, seed=seed, return_position_ids=False,
        return_cu_seqlens=False, **extra,
    )


def _loader(options: PackOptions, threads: int) -> Any:
    def make_loader(dataset: Any, seed: int) -> arrowloader.DataLoader:
        return arrowloader.DataLoader(
            dataset, batch_size=options.batch_size, shuffle=True,
            generator=torch.Generator().manual_seed(seed), num_workers=threads,
        )

    return make_loader


def run_remote_bench(
    url: str,
    options: PackOptions,
    *,
    seconds: float = 5.0,
    repeats: int = 3,
    threads: int = 2,
    seed: int = 0,
    cache_dir: Optional[Path] = None,
) -> RemoteReport:
    """Measures W2 from ``url`` against the same files on local disk (see the module
    docstring). ``cache_dir``: the warm cache's folder (default: a temporary folder,
    removed after the run)."""
    started = time.perf_counter()
    own_cache = cache_dir is None
    folder = Path(tempfile.mkdtemp(prefix="arrowloader-remote-bench-")) if own_cache else \
        Path(cache_dir)
    try:
        cold = folder / "cold"
        if cold.exists():
            shutil.rmtree(cold)
        building = time.perf_counter()
        dataset = _open(url, options, seed, cache_dir=cold)
        loader = _loader(options, threads)(dataset, seed)
        next(iter(loader))
        cold_first_batch = time.perf_counter() - building
        remote = dataset.corpus.remote
        assert remote is not None
        stats = remote.stats
        local_source = [str(p) for p in remote.local_files]
        del loader, dataset

        opening = time.perf_counter()
        warm = _open(url, options, seed, cache_dir=cold)
        warm_open = time.perf_counter() - opening
        hits = warm.corpus.remote.stats.reused if warm.corpus.remote else 0
        del warm

        workload = PackWorkload(local_source, reference=False, options=options, peers=(),
                                threads=(threads,), show_progress=False)
        try:
            peers = {
                "local": Peer(f"arrowloader local (threads {threads})", "arrowloader", threads,
                              lambda s: _open(local_source, options, s),
                              _loader(options, threads)),
                "remote": Peer(f"arrowloader s3 (threads {threads})", "arrowloader", threads,
                               lambda s: _open(url, options, s, cache_dir=cold),
                               _loader(options, threads)),
            }
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in peers}
            for repeat in range(repeats):
                for name, peer in peers.items():
                    figures = measure_run(peer, workload, seconds=seconds, seed=seed,
                                          repeat=repeat)
                    rows[name].append(asdict(figures))
        finally:
            workload.close()
        return RemoteReport(
            url=url,
            files=len(local_source),
            bytes=sum(Path(p).stat().st_size for p in local_source),
            cold_first_batch_s=cold_first_batch,
            cold_download_s=stats.seconds,
            first_object_s=stats.first_object_seconds,
            bytes_downloaded=stats.bytes_downloaded,
            objects_downloaded=stats.downloaded,
            warm_open_s=warm_open,
            cache_hits=hits,
            rows=rows,
            settings={"seq_len": options.seq_len, "batch_size": options.batch_size,
                      "threads": threads, "repeats": repeats, "seconds": seconds,
                      "seed": seed},
            whole_run_s=time.perf_counter() - started,
        )
    finally:
        if own_cache:
            shutil.rmtree(folder, ignore_errors=True)


def write_json(report: RemoteReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_json(), indent=2) + "\n")
