"""``arrowloader bench``: runs workloads W1 (shuffled documents, truncated and padded into
batches) and W2 (the corpus as one token stream cut into shuffled blocks) for arrowloader
and its peers in one process, and prints a table per workload of real tokens/s, CPU per
token, memory and time to first batch, as ratios against torch's DataLoader.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from arrowloader.cli.args import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from arrowloader.object_store import is_remote

#: Peer names ``--peers`` accepts (arrowloader.bench.suite.KNOWN_PEERS, without importing
#: the benchmark modules for --help).
PEER_NAMES = (
    "torch", "hf", "nanogpt", "torchdata", "grain", "spdl", "dataloader-rs", "litdata",
)
#: ``--workload`` choices.
WORKLOAD_CHOICES = ("pad", "pack", "finetune", "all")

BENCH_EPILOG = """\
columns of the table (figures are the median [min-max] of the --repeats runs):
  loader          the row: a peer, arrowloader with its threads, or your --loader
  real Mtok/s     millions of real tokens (not padding) delivered per second
  vs torch best   real Mtok/s as a multiple of the fastest torch DataLoader row's
  vs strongest    real Mtok/s as a multiple of the strongest peer's: the fastest row of
                  any library but arrowloader
  batches/s       batches delivered per second
  CPU s/Mtok      user+sys CPU seconds of the process and its worker processes per
                  million real tokens: the cores the loader takes from training
  anon RSS MiB    peak anonymous memory of the process and its workers (the page cache
                  of the mapped corpus is not counted); (+N): growth during the run
  first batch ms  from building the loader to its first batch (worker start-up and
                  epoch planning included)
  padding         share of the batches' positions that are padding, not tokens
  stall ms/step   with --consumer-ms: time each training step waited in next()
  stall           with --consumer-ms: that wait as a share of the whole loop

workloads:
  pad   W1: shuffled documents, truncated to --max-length, padded to the longest of each
        batch (default batch 32); peers torch, hf, torchdata, grain, spdl, dataloader-rs,
        litdata
  pack  W2: the corpus as one token stream (--eos-token-id after every document), cut into
        blocks of --seq-len + 1 tokens, blocks shuffled (default batch 8); outputs
        input_ids = block[:-1], labels = block[1:]; peers torch (from a flat stream file
        and from the documents), nanogpt, torchdata, grain, spdl, dataloader-rs,
        litdata;
        arrowloader runs four rows:
        input_ids + labels, the same without the document shuffle, + position_ids and
        cu_seqlens, int32 outputs
  finetune
        documents truncated to --max-length, four arrowloader rows: random batches of
        32 (W1's), length-grouped (group_by_length=True), token budget
        (TokenBudgetBatchSampler, --max-tokens, default 16384) and packed (PackedDataset
        bestfit, rows of --max-length, batch 16, cu_seqlens); above the table each row's
        epoch plan: batches per epoch, padding, and a simulated GPU step cost per epoch,
        positions + attention / --model-width (attention = sum of L^2 per padded row or
        packed segment), relative to the random row; no peers; the first --threads
        count only
  all   pad, then pack (not finetune: ask for it by name). With the defaults (5 s x 3
        repeats, every peer installed: 7 pad rows and 11 pack rows) each row takes about
        16 s, about 5 minutes in all

W3 (W2 on a corpus larger than memory, >= 1.25 x physical RAM; not run in CI):
  python benchmarks/make_big_corpus.py --size-gb 32 --out /data/w3-corpus
  arrowloader bench --workload pack --data /data/w3-corpus --peers none
and compare its tokens/s with W2's (--peers torch also works; nanogpt would first write a
raw copy of the whole stream next to the benchmark cache).
"""


def _thread_list(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or any(n < 0 for n in counts):
        raise argparse.ArgumentTypeError(
            f"expected a count >= 0 or a comma list of them (a sweep), e.g. 1,2,4; got {text!r}"
        )
    return tuple(dict.fromkeys(counts))


def _peer_list(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in PEER_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(PEER_NAMES)}, or none; got {text!r}"
        )
    return names


def add_bench_parser(commands: Any) -> None:
    """Adds ``bench`` to the ``arrowloader`` subcommands."""
    bench = commands.add_parser(
        "bench",
        help="measure W1 (pad) and W2 (pack) for arrowloader against torch, Hugging Face "
             "and nanoGPT loaders, and fine-tuning batchings (finetune)",
        description=(
            "Workloads W1 (pad), W2 (pack) and finetune, see below. arrowloader and its "
            "peers run in this process, interleaved, and are reported as ratios to the best torch "
            "DataLoader. Without --data the reference corpus (200,000 documents, about 394 "
            "MB) is created once in $ARROWLOADER_CACHE, else $XDG_CACHE_HOME/arrowloader, "
            "else ~/.cache/arrowloader, and reused (with its datasets copy for the hf peer "
            "and its raw token stream for the nanogpt peer)."
        ),
        epilog=BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument(
        "--workload", choices=WORKLOAD_CHOICES, default=None,
        help="pad (W1), pack (W2), finetune, or all = pad and pack (default: all, or "
             "none with --loader; see the time below)",
    )
    bench.add_argument(
        "--loader", metavar="MODULE:FUNCTION",
        help="also (or, without --workload, only) measure your own loader: FUNCTION() "
             "returns an iterable of batches (mappings, tuples or lists of tensors); MODULE is "
             "imported from the current folder, or give FILE.py:FUNCTION",
    )
    bench.add_argument(
        "--data", nargs="+", metavar="PATH",
        help="corpus: Arrow IPC file(s), a folder, a glob or a datasets save_to_disk folder "
             "(default: the cached reference corpus)",
    )
    bench.add_argument("--column", default="input_ids", help="token column (default: input_ids)")
    bench.add_argument(
        "--label-column", default="label",
        help="pad: integer label column returned as labels; '' for none (default: label)",
    )
    bench.add_argument(
        "--seconds", type=positive_float, default=5.0,
        help="minimum timed seconds per run (default: 5)",
    )
    bench.add_argument(
        "--repeats", type=positive_int, default=3,
        help="runs per loader; the table shows median and min-max (default: 3)",
    )
    bench.add_argument(
        "--batch-size", type=positive_int, default=None,
        help="rows per batch of every workload run (default: 32 for pad, 8 for pack)",
    )
    bench.add_argument(
        "--max-length", type=positive_int, default=1024,
        help="pad, finetune: truncation length, and finetune's packed row length "
             "(default: 1024)",
    )
    bench.add_argument(
        "--max-tokens", type=positive_int, default=16384,
        help="finetune: padded tokens per token-budget batch (default: 16384)",
    )
    bench.add_argument(
        "--model-width", type=positive_int, default=4096,
        help="finetune: model width d of the simulated step cost, positions + attention "
             "/ d (default: 4096)",
    )
    bench.add_argument(
        "--seq-len", type=positive_int, default=2048,
        help="pack: tokens per row; blocks are seq-len + 1 tokens (default: 2048)",
    )
    bench.add_argument(
        "--eos-token-id", type=non_negative_int, default=50256,
        help="pack (and finetune's packed row): the id after every document (default: "
             "50256, GPT-2's)",
    )
    bench.add_argument(
        "--peers", type=_peer_list, default=None,
        help="comma list of torch,hf,nanogpt,torchdata,grain,spdl,dataloader-rs,litdata, or "
             "none; each workload uses those it knows (default: every installed peer)",
    )
    bench.add_argument(
        "--threads", type=_thread_list, default=(0,),
        help="arrowloader's num_workers, i.e. native threads, or a comma list for a sweep, "
             "e.g. 1,2,4: one arrowloader row each (default: 0 = one per core, at most 4)",
    )
    bench.add_argument(
        "--consumer-ms", type=non_negative_float, default=0.0, metavar="MS",
        help="simulate a training step of MS milliseconds (a sleep) after each batch and "
             "report how long each loader kept it waiting (the stall)",
    )
    bench.add_argument("--seed", type=int, default=0, help="loader seed of the first repeat")
    bench.add_argument(
        "--json", type=Path, metavar="FILE",
        help="also write every figure, the settings and the machine's facts to FILE",
    )
    bench.add_argument(
        "--plot", type=Path, metavar="FILE.png",
        help="also draw throughput per loader (and the thread sweep) into FILE.png "
             "(needs matplotlib: pip install 'arrowloader[plot]')",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    bench.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu",
        help="cuda: the GPU benchmark instead (copy bandwidth, training stalls; see "
             "arrowloader.bench.gpu and benchmarks/gpu_bench.py)",
    )
    bench.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace, command: str) -> int:
    """Runs ``arrowloader bench`` with parsed arguments; returns the exit status."""
    # Imported here: plain `arrowloader` and --help need none of the benchmark modules.
    from arrowloader.bench.finetune import FinetuneOptions
    from arrowloader.bench.gpu import run_from_args
    from arrowloader.bench.harness import BenchmarkError
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.pad import PadOptions
    from arrowloader.bench.plot import matplotlib_missing, write_plot
    from arrowloader.bench.suite import (
        DEFAULT_WORKLOADS,
        KNOWN_PEERS,
        BenchConfig,
        run_bench,
    )

    try:
        if args.device == "cuda":
            return run_from_args(args)
        source = None
        if args.data:
            source = args.data[0] if len(args.data) == 1 else list(args.data)
        if is_remote(source):
            return _run_remote(args, source)
        pad = PadOptions(
            column=args.column,
            label_column=args.label_column or None,
            max_length=args.max_length,
            **({} if args.batch_size is None else {"batch_size": args.batch_size}),
        )
        pack = PackOptions(
            column=args.column,
            seq_len=args.seq_len,
            eos_token_id=args.eos_token_id,
            **({} if args.batch_size is None else {"batch_size": args.batch_size}),
        )
        finetune = FinetuneOptions(
            column=args.column,
            label_column=args.label_column or None,
            max_length=args.max_length,
            max_tokens=args.max_tokens,
            eos_token_id=args.eos_token_id,
            model_width=args.model_width,
            **({} if args.batch_size is None else {"batch_size": args.batch_size}),
        )
        if args.plot is not None and matplotlib_missing():
            raise BenchmarkError(
                "--plot needs matplotlib, which is not installed: pip install "
                "'arrowloader[plot]'"
            )
        if args.workload is None:
            workloads: tuple[str, ...] = () if args.loader else DEFAULT_WORKLOADS
        else:
            workloads = DEFAULT_WORKLOADS if args.workload == "all" else (args.workload,)
        if args.loader:
            workloads += ("loader",)
        config = BenchConfig(
            workloads=workloads,
            source=source,
            pad=pad,
            pack=pack,
            finetune=finetune,
            seconds=args.seconds,
            repeats=args.repeats,
            peers=KNOWN_PEERS if args.peers is None else args.peers,
            threads=args.threads,
            seed=args.seed,
            show_progress=not args.quiet,
            consumer_ms=args.consumer_ms,
            loader=args.loader,
        )
        report = run_bench(config, command=command)
        print(report.table(), flush=True)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
        if args.plot is not None:
            write_plot(report, args.plot)
        return 0
    except BenchmarkError as exc:
        # Reported as the dispatcher reports an ArrowLoaderError.
        print(f"arrowloader {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _run_remote(args: argparse.Namespace, url: str) -> int:
    """``--data s3://...``: W2 from the store against the same files on local disk (see
    :mod:`arrowloader.bench.remote`)."""
    from arrowloader.bench.harness import BenchmarkError
    from arrowloader.bench.pack import PackOptions
    from arrowloader.bench.remote import run_remote_bench, write_json

    if args.workload not in (None, "pack") or not isinstance(url, str):
        raise BenchmarkError("--data s3://... runs W2 only, from one URL: pass --workload pack")
    options = PackOptions(
        column=args.column, seq_len=args.seq_len, eos_token_id=args.eos_token_id,
        **({} if args.batch_size is None else {"batch_size": args.batch_size}),
    )
    threads = args.threads[0] if args.threads else 0
    report = run_remote_bench(url, options, seconds=args.seconds, repeats=args.repeats,
                              threads=threads, seed=args.seed)
    print(report.table(), flush=True)
    if args.json is not None:
        write_json(report, args.json)
    return 0
