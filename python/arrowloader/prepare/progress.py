"""The progress bar of ``arrowloader prepare``, shared by the local and the Ray engine."""

from __future__ import annotations

import time
from typing import Any

from tqdm.auto import tqdm

from arrowloader.manifest import ShardEntry


class ProgressBar:
    """Documents done of the plan's total, with tokens, shards and throughput (of this
    run: kept shards count in the total but not in the rates)."""

    def __init__(self, plan: dict[str, Any], kept: dict[str, ShardEntry],
                 show: bool) -> None:
        self._shards = len(plan["shards"])
        self._done_shards = len(kept)
        self._tokens = 0
        self._started = time.perf_counter()
        self._bar = tqdm(
            total=plan["documents"], initial=sum(e.rows for e in kept.values()),
            unit="doc", unit_scale=True, desc="tokenizing", smoothing=0.1,
            disable=None if show else True,
        )
        self._refresh()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.close()

    def update(self, documents: int, tokens: int) -> None:
        self._tokens += tokens
        self._bar.update(documents)
        self._refresh()

    def shard_done(self) -> None:
        self._done_shards += 1
        self._refresh()

    def _refresh(self) -> None:
        seconds = max(time.perf_counter() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"{self._tokens / 1e6:.2f}M tokens, {self._tokens / seconds / 1e3:,.0f}k tok/s, "
            f"shard {self._done_shards}/{self._shards}",
            refresh=False,
        )
