"""``arrowloader inspect``: what a corpus holds, at a glance.

Schema, documents, tokens, the token type, document length percentiles and, with
``--plot FILE.png``, a histogram of document lengths (needs matplotlib:
``pip install 'arrowloader[plot]'``). On a prepared corpus folder the totals, the
vocabulary and the tokenizer come from its manifest; lengths always come from the list
offsets (never from the token values), so inspecting reads a few bytes per document.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from arrowloader.corpus import Corpus
from arrowloader.wording import plural

#: Percentiles of document length that inspect reports.
PERCENTILES = (1, 10, 25, 50, 75, 90, 99)


def corpus_report(source: str, column: str = "input_ids") -> tuple[dict[str, Any], np.ndarray]:
    """Figures about the corpus at ``source`` (a file, a folder, a prepared folder).

    Returns:
        (report, lengths): the report as a JSON-ready dict (schema, documents, tokens,
        dtype, length statistics, manifest facts) and every document's token count,
        int64 ``[documents]``.

    Raises:
        CorpusFileError, CorpusFormatError: as opening a dataset would.
    """
    corpus = Corpus(source, column)
    lengths = np.diff(np.asarray(corpus.tokens.token_offsets()))
    schema = [{"name": f.name, "type": str(f.type)} for f in corpus.schema]
    token_type = corpus.schema.field(column).type
    report: dict[str, Any] = {
        "source": str(source),
        "files": len(corpus.files),
        "schema": schema,
        "column": column,
        "token_dtype": str(token_type.value_type),
        "documents": corpus.num_rows,
        "tokens": corpus.num_tokens,
        "lengths": length_statistics(lengths),
    }
    manifest = corpus.manifest
    if manifest is not None:
        report["manifest"] = {
            "documents": manifest.num_rows,
            "tokens": manifest.num_tokens,
            "bytes": manifest.num_bytes,
            "shards": len(manifest.shards),
            "vocab_size": manifest.vocab_size,
            "eos_token_id": manifest.eos_token_id,
            "append_eos": manifest.append_eos,
            "tokenizer": manifest.tokenizer,
            "command": manifest.command,
        }
    return report, lengths


def length_statistics(lengths: np.ndarray) -> dict[str, Any]:
    """min, mean, max and :data:`PERCENTILES` (numpy's linear interpolation) of
    ``lengths`` (int64 ``[documents]``)."""
    if len(lengths) == 0:
        return {"min": None, "mean": None, "max": None, "percentiles": {}}
    values = np.percentile(lengths, PERCENTILES)
    return {
        "min": int(lengths.min()),
        "mean": float(lengths.mean()),
        "max": int(lengths.max()),
        "percentiles": {f"p{p}": float(v) for p, v in zip(PERCENTILES, values)},
    }


def plot_lengths(lengths: np.ndarray, path: Path, title: str) -> None:
    """Writes a histogram of document lengths to ``path`` (PNG), with the median and
    p90 / p99 marked; logarithmic bins when the lengths span more than 100x.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    try:  # an optional dependency (the plot extra), imported only to plot
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError(
            "--plot needs matplotlib: pip install 'arrowloader[plot]'"
        ) from None
    positive = lengths[lengths > 0]
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=100)
    if len(positive) and positive.max() > 100 * max(1, positive.min()):
        bins = np.geomspace(max(1, positive.min()), positive.max() + 1, 60)
        axes.set_xscale("log")
        data = positive
    else:
        bins = 60
        data = lengths
    axes.hist(data, bins=bins, color="#4878a8")
    for p, style in ((50, "-"), (90, "--"), (99, ":")):
        if len(lengths):
            value = float(np.percentile(lengths, p))
            axes.axvline(max(value, 1), color="#c44e52", linestyle=style,
                         label=f"p{p} = {value:,.0f}")
    axes.set_xlabel("tokens per document")
    axes.set_ylabel("documents")
    axes.set_title(title)
    if len(lengths):
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def format_report(report: dict[str, Any]) -> str:
    """The report as lines for people."""
    lines = [f"corpus: {report['source']} ({plural(report['files'], 'file')})"]
    lines.append("schema: " + ", ".join(f"{f['name']}: {f['type']}" for f in report["schema"]))
    manifest = report.get("manifest")
    dtype = f"tokens: {report['token_dtype']} in column {report['column']!r}"
    if manifest is not None:
        eos = manifest["eos_token_id"]
        dtype += (f"; vocabulary {manifest['vocab_size']:,}; EOS id {eos}"
                  + (" (appended to every document)" if manifest["append_eos"] else ""))
    lines.append(dtype)
    lines.append(f"documents: {report['documents']:,}")
    stats = report["lengths"]
    mean = f" (mean {stats['mean']:,.1f} per document)" if stats["mean"] is not None else ""
    lines.append(f"tokens: {report['tokens']:,}{mean}")
    if stats["min"] is not None:
        parts = [f"min {stats['min']:,}"]
        parts += [f"{k} {v:,.0f}" for k, v in stats["percentiles"].items()]
        parts.append(f"max {stats['max']:,}")
        lines.append("document length: " + ", ".join(parts))
    if manifest is not None:
        lines.append(
            f"manifest: {plural(manifest['shards'], 'shard')}, "
            f"{manifest['bytes'] / 2**20:,.1f} MiB; "
            f"tokenizer {manifest['tokenizer'].get('source')} "
            f"(sha256 {str(manifest['tokenizer'].get('sha256'))[:12]})"
        )
        if manifest["command"]:
            lines.append(f"prepared by: {manifest['command']}")
    return "\n".join(lines)


def add_inspect_parser(commands: Any) -> None:
    """Adds ``inspect`` to the ``arrowloader`` subcommands."""
    parser = commands.add_parser(
        "inspect",
        help="schema, documents, tokens and length percentiles of a corpus",
        description="Print what a corpus (an Arrow file, a folder, a prepared corpus "
                    "folder) holds: schema, documents, tokens, token type, document length "
                    "percentiles; optionally a length histogram.",
    )
    parser.add_argument("source", metavar="DIR_OR_FILE",
                        help="the corpus (also an s3:// prefix or object, read through the "
                             "local shard cache)")
    parser.add_argument("--column", default="input_ids", help="token column (default: input_ids)")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="write a histogram of document lengths (needs matplotlib)")
    parser.add_argument("--json", action="store_true",
                        help="print the figures as JSON instead of text")
    parser.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace, command: Optional[str] = None) -> int:
    """Runs ``arrowloader inspect``; returns the exit status."""
    report, lengths = corpus_report(args.source, args.column)
    if args.plot is not None:
        try:
            plot_lengths(lengths, args.plot, f"{args.source}: {report['documents']:,} documents")
        except RuntimeError as exc:
            print(f"arrowloader inspect: error: {exc}", file=sys.stderr)
            return 2
        report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        if args.plot is not None:
            print(f"histogram: {args.plot}")
    return 0
