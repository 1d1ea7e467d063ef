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
    pad, pack: the workloads W1 and W2: their options, arrowloader's own rows, the check of
        a batch, token counts, descriptions.
    torch_peers, hf_peers, nanogpt_peer: the peers, one module per family (torch's
        DataLoader for both workloads; Hugging Face ``datasets`` for W1; nanoGPT for W2).
    mapped_arrow: numpy views of the mapped Arrow files, independent of the native code
        (the torch peers' data, the nanoGPT stream, the workloads' token counts).
    harness: one timed run of one loader on one workload (throughput, CPU, memory, first
        batch); the ``Peer`` and ``Workload`` interfaces; the loader factory of the peers.
    report: medians, ratios, the tables and the JSON.
    suite: every requested workload and loader, repeated (``run_bench``).
    custom: a user's own loader (``--loader``).
    plot: the chart (``--plot``).
    gpu: the GPU benchmark (``--device cuda``).
    cache: the cached reference corpus (and its ``save_to_disk`` copy).
"""

from arrowloader.bench.cache import cache_dir, reference_corpus
from arrowloader.bench.harness import (
    Peer,
    RunFigures,
    SeededLoaderFactory,
    Workload,
    measure_run,
    memcpy_gbps,
)
from arrowloader.bench.pack import PackOptions
from arrowloader.bench.pad import PadOptions
from arrowloader.bench.report import BenchReport, WorkloadReport
from arrowloader.bench.suite import BenchConfig, run_bench

__all__ = [
    "BenchConfig",
    "BenchReport",
    "PackOptions",
    "PadOptions",
    "Peer",
    "RunFigures",
    "SeededLoaderFactory",
    "Workload",
    "WorkloadReport",
    "cache_dir",
    "measure_run",
    "memcpy_gbps",
    "reference_corpus",
    "run_bench",
]
