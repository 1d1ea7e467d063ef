"""The benchmark workloads, run by ``arrowloader bench``.

Workload W1 ("pad"): shuffled documents, truncated to 1024 tokens and padded to the longest
document of each batch of 32, yielding ``input_ids`` int64 ``[B, L]``, ``attention_mask``
int64 ``[B, L]`` and ``labels`` int64 ``[B]``. arrowloader and its peers (torch's DataLoader
over numpy slices of the same mapped Arrow buffers, Hugging Face ``datasets`` with
``DataCollatorWithPadding``) are measured in the same run and reported as ratios.

Modules:
    cache: the cached reference corpus (and its ``save_to_disk`` copy).
    peers: the loaders compared, all fed by the same seeded sampler.
    harness: one timed run of one loader (throughput, CPU, memory, first batch).
    w1: the repeats of every loader, their medians and ratios, the table and the JSON.
"""

from arrowloader.bench.cache import cache_dir, reference_corpus
from arrowloader.bench.harness import RunFigures, measure_run, memcpy_gbps
from arrowloader.bench.peers import W1Options, W1Peer
from arrowloader.bench.w1 import W1Config, W1Report, run_w1

__all__ = [
    "RunFigures",
    "W1Config",
    "W1Options",
    "W1Peer",
    "W1Report",
    "cache_dir",
    "measure_run",
    "memcpy_gbps",
    "reference_corpus",
    "run_w1",
]
