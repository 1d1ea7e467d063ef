"""W2 ("pack") on the 20,000-document benchmark corpus: every loader end to end, and
micro-benchmarks of the native packing kernels.

- end to end: the time to receive ``BATCHES_PER_ROUND`` batches of 8 x 2048 from each W2
  row (torch's DataLoader over per-block numpy slices, nanoGPT's ``get_batch``,
  ``arrowloader.DataLoader(PackedDataset)`` with input_ids + labels, with position_ids and
  cu_seqlens, and with int32 outputs). Every W2 batch is full, so ``extra_info`` gives
  tokens/s as ``BATCHES_PER_ROUND * 8 * 2048`` per round. The authoritative comparison,
  with CPU, memory and time to first batch, is ``arrowloader bench --workload pack``.
- kernels: ``_C.PackedBatchAssembler.assemble`` of one batch of 8 random blocks into
  preallocated outputs, in concat mode (input_ids + labels; and with position_ids and
  cu_seqlens) and bestfit mode; ``assembler.plan(order)`` of a whole epoch for a shuffled
  document order, in both modes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from arrowloader import _C, Corpus
from arrowloader.bench.harness import WARMUP_BATCHES, EpochCycler, Peer
from arrowloader.bench.nanogpt_peer import nanogpt_pack_peer
from arrowloader.bench.pack import PackOptions, arrowloader_pack_peers
from arrowloader.bench.token_stream import TokenStreamFile
from arrowloader.bench.torch_peers import torch_pack_peers

BATCHES_PER_ROUND = 100
ROUNDS = 5
SEED = 0
BLOCKS_SEED = 1

#: Row kinds, with test ids that ``-k`` can select.
ROWS = [
    pytest.param("torch flat stream (workers 0)", id="torch-flat-workers0"),
    pytest.param("torch flat stream (workers 2)", id="torch-flat-workers2"),
    pytest.param("torch from documents (workers 0)", id="torch-documents-workers0"),
    pytest.param("torch from documents (workers 2)", id="torch-documents-workers2"),
    pytest.param("nanogpt", id="nanogpt"),
    pytest.param("arrowloader", id="arrowloader"),
    pytest.param("arrowloader in order", id="arrowloader-documents-in-order"),
    pytest.param("arrowloader positions", id="arrowloader-positions-cu_seqlens"),
    pytest.param("arrowloader int32", id="arrowloader-int32"),
]


def build_peer(
    kind: str, corpus: Path, options: PackOptions, request: pytest.FixtureRequest
) -> Peer:
    """The W2 row of that kind (the stream readers need the ``nanogpt_stream`` fixture)."""
    if kind == "nanogpt" or kind.startswith("torch flat"):
        stream: TokenStreamFile = request.getfixturevalue("nanogpt_stream")
        if kind == "nanogpt":
            return nanogpt_pack_peer(stream, options)
        peers = torch_pack_peers(corpus, options, stream)
        return next(p for p in peers if p.name == kind.replace("stream", f"stream {stream.dtype}"))
    if kind.startswith("torch"):
        return next(p for p in torch_pack_peers(corpus, options) if p.name == kind)
    main, in_order, positions, int32 = arrowloader_pack_peers(corpus, options)
    return {
        "arrowloader": main, "arrowloader in order": in_order,
        "arrowloader positions": positions, "arrowloader int32": int32,
    }[kind]


@pytest.mark.benchmark(group="W2 pack: 100 batches of 8 x 2048")
@pytest.mark.parametrize("kind", ROWS)
def test_pack_batches(
    benchmark,
    kind: str,
    bench_corpus: Path,
    pack_options: PackOptions,
    request: pytest.FixtureRequest,
) -> None:
    peer = build_peer(kind, bench_corpus, pack_options, request)
    dataset = peer.open_dataset(SEED)
    cycler = EpochCycler(peer.make_loader(dataset, SEED))
    batches: Iterator = iter(cycler)

    def receive_batches() -> None:
        for _ in range(BATCHES_PER_ROUND):
            next(batches)

    try:
        for _ in range(WARMUP_BATCHES):  # starts workers / threads, plans epoch 0
            batch = next(batches)
        assert tuple(batch["input_ids"].shape) == (pack_options.batch_size, pack_options.seq_len)
        assert batch["input_ids"].dtype == peer.dtype
        benchmark.pedantic(receive_batches, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    finally:
        cycler.shut_down()

    tokens = BATCHES_PER_ROUND * pack_options.batch_size * pack_options.seq_len
    benchmark.extra_info["loader"] = peer.name
    benchmark.extra_info["tokens_per_round"] = tokens
    stats = getattr(benchmark.stats, "stats", None) if benchmark.stats else None
    if stats is not None and stats.mean > 0:
        benchmark.extra_info["tokens_per_s"] = tokens / stats.mean


# --------------------------------------------------------------------------- kernels


@pytest.fixture(scope="module")
def corpus(bench_corpus: Path, pack_options: PackOptions) -> Corpus:
    """The benchmark corpus's token column."""
    return Corpus(bench_corpus, pack_options.column)


def make_assembler(corpus: Corpus, options: PackOptions, mode: str) -> Any:
    """A packing assembler as PackedDataset builds it (pad with EOS, labels -100)."""
    return _C.PackedBatchAssembler(
        corpus.tokens,
        seq_len=options.seq_len,
        eos_token_id=options.eos_token_id,
        bestfit=mode == "bestfit",
        mask_across_documents=False,
        pad_token_id=options.eos_token_id,
        label_pad_id=-100,
    )


@pytest.fixture(scope="module")
def document_order(corpus: Corpus) -> np.ndarray:
    """A shuffled order of every document: int64 ``[documents]``."""
    return _C.seeded_permutation(SEED, 0, corpus.num_rows)


def batch_outputs(
    options: PackOptions, dtype: torch.dtype, positions: bool
) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    """Preallocated ``(input_ids, labels, position_ids, cu_seqlens)`` of one batch."""
    shape = (options.batch_size, options.seq_len)
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    input_ids, labels = np.empty(shape, numpy_dtype), np.empty(shape, numpy_dtype)
    if not positions:
        return input_ids, labels, None, None
    cu_seqlens = np.empty(options.batch_size * options.seq_len + 1, np.int32)
    return input_ids, labels, np.empty(shape, numpy_dtype), cu_seqlens


ASSEMBLE_CASES = [
    pytest.param("concat", torch.int64, False, id="concat-ids-labels"),
    pytest.param("concat", torch.int64, True, id="concat-positions-cu_seqlens"),
    pytest.param("concat", torch.int32, False, id="concat-int32"),
    pytest.param("bestfit", torch.int64, False, id="bestfit-ids-labels"),
    pytest.param("bestfit", torch.int64, True, id="bestfit-positions-cu_seqlens"),
]


@pytest.mark.benchmark(group="kernel: one W2 batch (8 x 2048)")
@pytest.mark.parametrize(("mode", "dtype", "positions"), ASSEMBLE_CASES)
def test_assemble_one_packed_batch(
    benchmark,
    corpus: Corpus,
    pack_options: PackOptions,
    document_order: np.ndarray,
    mode: str,
    dtype: torch.dtype,
    positions: bool,
) -> None:
    assembler = make_assembler(corpus, pack_options, mode)
    plan = assembler.plan(document_order)
    rng = np.random.default_rng(BLOCKS_SEED)
    blocks = rng.choice(plan.num_blocks, size=pack_options.batch_size, replace=False)
    blocks = blocks.astype(np.int64)
    outputs = batch_outputs(pack_options, dtype, positions)
    cu_length, max_seqlen = benchmark(assembler.assemble, plan, blocks, *outputs)
    assert outputs[1][:, :-1].tolist() == outputs[0][:, 1:].tolist() or mode == "bestfit"
    if positions:
        assert outputs[3][cu_length - 1] == pack_options.batch_size * pack_options.seq_len
        assert 0 < max_seqlen <= pack_options.seq_len
    benchmark.extra_info.update(num_blocks=plan.num_blocks, tokens=outputs[0].size)


@pytest.mark.benchmark(group="kernel: planning a W2 epoch")
@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_plan_an_epoch(
    benchmark, corpus: Corpus, pack_options: PackOptions, document_order: np.ndarray, mode: str
) -> None:
    """``assembler.plan(order)`` for a shuffled order of the 20,000 documents, as the
    loader does at the start of every epoch."""
    assembler = make_assembler(corpus, pack_options, mode)
    plan = benchmark(assembler.plan, document_order)
    stream = corpus.num_tokens + corpus.num_rows
    if mode == "concat":
        assert plan.num_blocks == stream // (pack_options.seq_len + 1)
    else:
        assert plan.num_blocks >= -(-stream // (pack_options.seq_len + 1))
    benchmark.extra_info.update(documents=corpus.num_rows, num_blocks=plan.num_blocks)
