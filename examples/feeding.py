"""What the training examples share: the device, the prefetcher in front of the model,
the throughput and stall report, and the optional torch.profiler trace.

Imported by ``examples/pretrain.py`` and ``examples/finetune.py`` (their folder is on
``sys.path`` when they run as scripts).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Union

import arrowloader
import torch
import torch.profiler


def add_common_arguments(parser: argparse.ArgumentParser, steps: int) -> None:
    """The options both examples take: run length, model size, device, logging, profile."""
    parser.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds data order and weights")
    parser.add_argument("--docs", type=int, default=20_000, help="synthetic corpus size")
    parser.add_argument("--width", type=int, default=128, help="model width")
    parser.add_argument("--layers", type=int, default=2, help="transformer blocks")
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    parser.add_argument("--profile", metavar="TRACE_JSON", help="write a torch.profiler trace")


def pick_device(name: Optional[str]) -> torch.device:
    """``name`` if given, else CUDA when available, else the CPU."""
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def feed(loader: arrowloader.DataLoader, device: torch.device) -> arrowloader.CUDAPrefetcher:
    """The loader's batches on ``device``: on CUDA, assembled into pinned memory and copied
    two batches ahead on a side stream; on the CPU, the loader's batches unchanged."""
    return loader.to(device, depth=2)


class StepProfiler:
    """torch.profiler over steps 2 to 4 of the run (after one skipped step and one warm-up
    step), written as a Chrome trace (``chrome://tracing``, Perfetto) to ``path``; does
    nothing when ``path`` is None. On CUDA the trace shows the host-to-device copies of the
    next batch on the prefetcher's stream beside the current step's kernels.

    Call :meth:`step` after every training step.
    """

    WAIT, WARMUP, ACTIVE = 1, 1, 3

    def __init__(self, path: Optional[str], device: torch.device) -> None:
        self.path = Path(path) if path else None
        self._profile: Optional[torch.profiler.profile] = None
        if self.path is None:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._profile = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(
                wait=self.WAIT, warmup=self.WARMUP, active=self.ACTIVE, repeat=1
            ),
            on_trace_ready=self._write,
        )

    def _write(self, profile: torch.profiler.profile) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            profile.export_chrome_trace(str(self.path))
            print(f"profile: wrote {self.path}", flush=True)

    def __enter__(self) -> StepProfiler:
        if self._profile is not None:
            self._profile.__enter__()
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        error: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        if self._profile is not None:
            self._profile.__exit__(kind, error, traceback)

    def step(self) -> None:
        """One training step is done."""
        if self._profile is not None:
            self._profile.step()


class Throughput:
    """Tokens per second since the first step and the share of that time the training
    loop waited for data (the prefetcher's ``stall_fraction``)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tokens: Union[int, torch.Tensor] = 0
        self.started = time.perf_counter()

    def add(self, tokens: Union[int, torch.Tensor]) -> None:
        """``tokens`` more were trained on (a 0-d tensor may stay on the device: it is read
        only when a line is printed)."""
        self.tokens = self.tokens + tokens

    def line(self, prefetcher: arrowloader.CUDAPrefetcher) -> str:
        """``N tok/s  stall X%`` for a log line (waits for the device first, so that the
        time counts the work queued so far)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - self.started
        stall = prefetcher.metrics().stall_fraction
        return f"{int(self.tokens) / max(elapsed, 1e-9):,.0f} tok/s  stall {100 * stall:.1f}%"


def report(loader: arrowloader.DataLoader, prefetcher: arrowloader.CUDAPrefetcher) -> None:
    """Prints the loader's and the prefetcher's metrics (what each waited and moved)."""
    for name, source in (("loader", loader), ("prefetcher", prefetcher)):
        metrics: Any = source.metrics()
        print(f"{name}: {metrics.summary()}", flush=True)
