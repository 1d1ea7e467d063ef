"""Stall metrics: how long a training loop waited for its data, and what was moved.

``DataLoader.metrics()`` and ``CUDAPrefetcher.metrics()`` return a :class:`FeedMetrics`.
Both count from their creation (or the last ``reset_metrics()``) over every iterator made
since, so a run of several epochs gives one figure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from time import perf_counter
from typing import Any, Optional

import torch


@dataclass(frozen=True)
class FeedMetrics:
    """What a consumer got from a loader or prefetcher, and how long it waited.

    Attributes:
        batches: batches handed to the consumer.
        bytes: bytes of the tensors in those batches (for a prefetcher on CUDA, the bytes
            copied from host to device; tensors already on the device count too).
        wait_seconds: host seconds the consumer spent inside ``next()`` (waiting for a
            batch to be assembled, or for the copies of the next one to be issued),
            including the call that found the end of an epoch.
        elapsed_seconds: host seconds from the first ``next()`` call to the latest return
            from one (time spent between epochs counts too).
        copy_seconds: device seconds the host-to-device copies took, timed by CUDA events
            on the copy stream (0.0 where nothing was copied, e.g. without CUDA, and always
            for a DataLoader, which copies nothing to a device).
        device_wait_seconds: device seconds the consumer's stream sat waiting for a batch's
            copy to finish after it had asked for it (a stall on the GPU that the host does
            not see; 0.0 without CUDA).
        copies_pending: batches handed over whose copy timings were not yet read back
            (their events had not completed); they are counted in ``bytes`` but not in
            ``copy_seconds``, ``device_wait_seconds`` or ``timed_bytes`` yet.
        timed_bytes: bytes of the batches whose copy timings were read back (what
            ``copy_gbps`` divides by ``copy_seconds``).
    """

    batches: int = 0
    bytes: int = 0
    wait_seconds: float = 0.0
    elapsed_seconds: float = 0.0
    copy_seconds: float = 0.0
    device_wait_seconds: float = 0.0
    copies_pending: int = 0
    timed_bytes: int = 0

    @property
    def stall_fraction(self) -> float:
        """``wait_seconds / elapsed_seconds`` (0.0 before anything was handed over)."""
        return self.wait_seconds / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def batches_per_second(self) -> float:
        """``batches / elapsed_seconds`` (0.0 before anything was handed over)."""
        return self.batches / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def copy_gbps(self) -> Optional[float]:
        """Host-to-device copy bandwidth, 1e9 bytes per device second:
        ``timed_bytes / copy_seconds``, None when no copy was timed."""
        return None if self.copy_seconds <= 0 else self.timed_bytes / self.copy_seconds / 1e9

    def as_dict(self) -> dict[str, Any]:
        """Every field plus ``stall_fraction``, ``batches_per_second`` and ``copy_gbps``."""
        return {
            **asdict(self),
            "stall_fraction": self.stall_fraction,
            "batches_per_second": self.batches_per_second,
            "copy_gbps": self.copy_gbps,
        }

    def summary(self) -> str:
        """One line for a training log: batches, stall %, and the copy bandwidth if any."""
        text = (
            f"{self.batches} batches, waited {self.wait_seconds:.3f} s of "
            f"{self.elapsed_seconds:.3f} s ({100 * self.stall_fraction:.1f}% stall)"
        )
        if self.copy_gbps is not None:
            text += (
                f", copied {self.bytes / 1e6:.1f} MB at {self.copy_gbps:.1f} GB/s, device "
                f"waited {1e3 * self.device_wait_seconds:.1f} ms"
            )
        return text


def tensor_bytes(value: Any) -> int:
    """Bytes of every tensor in ``value`` (a tensor, or dicts / lists / tuples of them,
    nested; other values count 0)."""
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if isinstance(value, dict):
        # A batch is nearly always a flat dict of tensors: no recursion for those.
        return sum(
            v.nbytes if isinstance(v, torch.Tensor) else tensor_bytes(v) for v in value.values()
        )
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


class FeedCounter:
    """Counters behind :class:`FeedMetrics`, updated by the iterators that hand batches
    to a consumer. Not thread-safe: one consumer thread updates it.

    Host times come from :func:`time.perf_counter` (read through this module, so tests can
    substitute a clock); device times are added by the prefetcher from CUDA events.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zeroes every counter."""
        self._batches = 0
        self._bytes = 0
        self._timed_bytes = 0
        self._wait = 0.0
        self._first_request: Optional[float] = None
        self._last_return: Optional[float] = None
        self._copy = 0.0
        self._device_wait = 0.0
        self._pending = 0

    def asked(self) -> float:
        """The consumer called ``next()``: returns the time to pass to :meth:`handed`."""
        now = perf_counter()
        if self._first_request is None:
            self._first_request = now
        return now

    def handed(self, asked_at: float, batch: Any = None, nbytes: Optional[int] = None) -> None:
        """``next()`` returns ``batch`` (None: it found the end of the epoch); its bytes are
        ``nbytes`` if given, else counted from the batch's tensors."""
        now = perf_counter()
        self._wait += now - asked_at
        self._last_return = now
        if batch is not None:
            self._batches += 1
            self._bytes += tensor_bytes(batch) if nbytes is None else nbytes

    def copies_pending(self, count: int) -> None:
        """Batches handed over whose copy timings are not read back yet."""
        self._pending = count

    def copied(self, nbytes: int, copy_seconds: float, device_wait_seconds: float) -> None:
        """The device timings of one handed batch's copies were read back."""
        self._timed_bytes += nbytes
        self._copy += copy_seconds
        self._device_wait += max(0.0, device_wait_seconds)

    def metrics(self) -> FeedMetrics:
        """The counters now."""
        elapsed = 0.0
        if self._first_request is not None and self._last_return is not None:
            elapsed = self._last_return - self._first_request
        return FeedMetrics(
            batches=self._batches,
            bytes=self._bytes,
            wait_seconds=self._wait,
            elapsed_seconds=elapsed,
            copy_seconds=self._copy,
            device_wait_seconds=self._device_wait,
            copies_pending=self._pending,
            timed_bytes=self._timed_bytes,
        )

