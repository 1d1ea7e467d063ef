"""The ``arrowloader`` command line.

``arrowloader bench`` runs workload W1 (shuffled documents, truncated and
padded into batches) for arrowloader and its peers in one process, and prints a table of
real tokens/s, CPU per token, memory and time to first batch, as ratios against torch's
DataLoader. Plain ``arrowloader`` prints help.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _peer_list(text: str) -> tuple[str, ...]:
    from arrowloader.bench.w1 import KNOWN_PEERS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in KNOWN_PEERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of {', '.join(KNOWN_PEERS)}, or none; got {text!r}"
        )
    return names


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``arrowloader`` and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="arrowloader",
        description="Feed tokenized text from memory-mapped Arrow files to PyTorch.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser(
        "bench",
        help="measure W1 (pad) for arrowloader against torch and Hugging Face loaders",
        description=(
            "Workload W1: shuffled documents, truncated to --max-length, "
            "padded to the longest of each batch. arrowloader and its peers run in this "
            "process, interleaved, and are reported as ratios to the best torch DataLoader. "
            "Without --data the reference corpus (200,000 documents, about 394 MB) is "
            "created once in $ARROWLOADER_CACHE, else $XDG_CACHE_HOME/arrowloader, else "
            "~/.cache/arrowloader, and reused."
        ),
    )
    bench.add_argument(
        "--data", nargs="+", metavar="PATH",
        help="corpus: Arrow IPC file(s), a folder, a glob or a datasets save_to_disk folder "
             "(default: the cached reference corpus)",
    )
    bench.add_argument("--column", default="input_ids", help="token column (default: input_ids)")
    bench.add_argument(
        "--label-column", default="label",
        help="integer label column returned as labels; '' for none (default: label)",
    )
    bench.add_argument(
        "--seconds", type=_positive_float, default=5.0,
        help="minimum timed seconds per run (default: 5)",
    )
    bench.add_argument(
        "--repeats", type=_positive_int, default=3,
        help="runs per loader; the table shows median and min-max (default: 3)",
    )
    bench.add_argument("--batch-size", type=_positive_int, default=32, help="(default: 32)")
    bench.add_argument("--max-length", type=_positive_int, default=1024, help="(default: 1024)")
    bench.add_argument(
        "--peers", type=_peer_list, default=None,
        help="comma list of torch,hf, or none (default: every installed peer)",
    )
    bench.add_argument(
        "--threads", type=_non_negative_int, default=0,
        help="arrowloader's num_workers, i.e. native threads (default: 0 = one per core, "
             "at most 4)",
    )
    bench.add_argument("--seed", type=int, default=0, help="sampler seed of the first repeat")
    bench.add_argument(
        "--json", type=Path, metavar="FILE",
        help="also write every figure, the settings and the machine's facts to FILE",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    return parser


def run_bench(args: argparse.Namespace, command: str) -> int:
    """Runs ``arrowloader bench`` with parsed arguments; returns the exit status."""
    from arrowloader.bench.peers import W1Options
    from arrowloader.bench.w1 import KNOWN_PEERS, W1Config, run_w1

    source = None
    if args.data:
        source = args.data[0] if len(args.data) == 1 else list(args.data)
    config = W1Config(
        source=source,
        options=W1Options(
            column=args.column,
            label_column=args.label_column or None,
            batch_size=args.batch_size,
            max_length=args.max_length,
        ),
        seconds=args.seconds,
        repeats=args.repeats,
        peers=KNOWN_PEERS if args.peers is None else args.peers,
        threads=args.threads,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    report = run_w1(config, command=command)
    print(report.table(), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``arrowloader`` command; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return 0
    # Imported here: plain `arrowloader` and --help need none of the benchmark modules.
    from arrowloader.bench.harness import BenchmarkError
    from arrowloader.errors import ArrowLoaderError

    command = shlex.join(["arrowloader", *arguments])
    try:
        return run_bench(args, command)
    except (ArrowLoaderError, BenchmarkError) as exc:
        print(f"arrowloader {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
