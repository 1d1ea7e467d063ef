"""The benchmark workloads, run by ``arrowloader bench``.

Workload W1 ("pad"): shuffled documents, truncated to 1024 tokens and padded to the longest
document of each batch of 32, yielding ``input_ids`` int64 ``[B, L]``, ``attention_mask``
int64 ``[B, L]`` and ``labels`` int64 ``[B]``. Workload W2 ("pack"): the corpus as one token
stream (EOS after every document) cut into shuffled blocks of 2049 tokens, yielding
``input_ids`` and ``labels`` int64 ``[8, 2048]``. W3 is W2 on a corpus larger than memory.
arrowloader and its peers (torch's DataLoader over numpy slices of the same mapped Arrow
buffers; Hugging Face ``datasets`` with ``DataCollatorWithPadding`` for W1; nanoGPT's
``get_batch`` over ``np.memmap`` for W2) are measured in the same run and reported as
ratios.

Modules:
    cache: the cached reference corpus (and its ``save_to_disk`` copy).
    harness: one timed run of one loader on one workload (throughput, CPU, memory, first
        batch); the ``Peer`` and ``Workload`` interfaces.
    peers, hf_peer: the W1 loaders, all fed by the same seeded sampler.
    pack_peers: the W2 loaders.
    w1, w2: the workloads (peers, token counts, descriptions).
    report: medians, ratios, the tables and the JSON.
    suite: every requested workload and loader, repeated (``run_bench``).
"""

from arrowloader.bench.cache import cache_dir, reference_corpus
from arrowloader.bench.harness import Peer, RunFigures, Workload, measure_run, memcpy_gbps
from arrowloader.bench.pack_peers import W2Options
from arrowloader.bench.peers import W1Options, W1Peer
from arrowloader.bench.report import BenchReport, WorkloadReport
from arrowloader.bench.suite import BenchConfig, run_bench

__all__ = [
    "BenchConfig",
    "BenchReport",
    "Peer",
    "RunFigures",
    "W1Options",
    "W1Peer",
    "W2Options",
    "Workload",
    "WorkloadReport",
    "cache_dir",
    "measure_run",
    "memcpy_gbps",
    "reference_corpus",
    "run_bench",
]
