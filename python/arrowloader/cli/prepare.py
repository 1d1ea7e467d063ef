"""``arrowloader prepare``: its arguments and what it prints."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

from arrowloader.cache_dir import cache_dir
from arrowloader.cli.args import name_list, parse_size, positive_int
from arrowloader.errors import ArrowLoaderError
from arrowloader.manifest import MANIFEST_NAME, read_manifest
from arrowloader.object_store import is_url, split_url, upload_folder
from arrowloader.prepare.run import prepare_corpus
from arrowloader.prepare.shard_plan import DEFAULT_SHARD_SIZE, PrepareOptions
from arrowloader.shard_cache import RetryPolicy
from arrowloader.wording import plural

PREPARE_EPILOG = """\
inputs, by file name:
  .txt                 one document per file; with --lines one per non-empty line
  .jsonl, .jsonl.gz    one JSON object per non-empty line; the text in --text-field
  .parquet             one document per row; the text in the --text-field column
  folders are searched recursively for these; globs are expanded; order: sorted

fine-tuning examples (.jsonl or .parquet), instead of --text-field:
  --prompt-field P --completion-field C   input_ids = the prompt's tokens then the
                       completion's, plus prompt_length (int32); with --loss-mask also
                       loss_mask (list<bool>, false on the prompt)
  --messages-field M   a conversation ([{"role": ..., "content": ...}, ...]) through the
                       tokenizer's chat template (a transformers tokenizer folder whose
                       template marks the assistant's turns with {% generation %}): input_ids
                       and loss_mask, true on the assistant's tokens
  Train on the completion only with TokenDataset / PackedDataset(prompt_length_column=
  "prompt_length") or (loss_mask_column="loss_mask").

output: DIR/shard-00000.arrow ... (Arrow IPC files, input_ids as uint16 when the
vocabulary has at most 65,536 ids, else int32) and DIR/manifest.json. An interrupted run
resumes when run again with the same arguments: finished shards are kept. The shard
plan is made before tokenizing, so --engine local and --engine ray write identical
shards.

examples:
  arrowloader prepare books/ --tokenizer tokenizer.json --output corpus/ --append-eos
  arrowloader prepare 'crawl/*.jsonl.gz' --tokenizer ./my-tokenizer/ --output corpus/ \\
      --keep-fields url,id --engine ray --ray-address auto
  arrowloader prepare sft.jsonl --tokenizer ./my-tokenizer/ --output sft/ \\
      --prompt-field prompt --completion-field completion --loss-mask
  arrowloader prepare chats.jsonl --tokenizer ./my-chat-tokenizer/ --output chats/ \\
      --messages-field messages
"""


def add_prepare_parser(commands: Any) -> None:
    """Adds ``prepare`` to the ``arrowloader`` subcommands."""
    parser = commands.add_parser(
        "prepare",
        help="tokenize text (.txt, .jsonl, .jsonl.gz, .parquet) into Arrow shards and a "
             "manifest",
        description="Tokenize documents into Arrow IPC shards of about --shard-size with a "
                    "manifest.json, on this machine or on a Ray cluster.",
        epilog=PREPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="input files, folders or globs")
    parser.add_argument("--tokenizer", required=True, metavar="TOKENIZER",
                        help="a tokenizer.json file, or a local transformers tokenizer folder")
    parser.add_argument("--output", "-o", required=True, metavar="DIR",
                        help="the corpus folder to write, or an s3:// prefix (the corpus is "
                             "written to a local folder, then uploaded, its manifest last)")
    parser.add_argument("--staging", type=Path, default=None, metavar="DIR",
                        help="with an s3:// --output: the local folder the corpus is "
                             "written to before the upload (default: in the arrowloader "
                             "cache folder; kept, so a rerun reuses finished shards)")
    parser.add_argument("--text-field", default="text",
                        help="text field of .jsonl/.parquet inputs (default: text)")
    parser.add_argument("--lines", action="store_true",
                        help=".txt inputs hold one document per non-empty line")
    parser.add_argument("--keep-fields", type=name_list, default=(), metavar="A,B",
                        help="comma list of .jsonl/.parquet fields to carry into the shards")
    parser.add_argument("--prompt-field", default=None, metavar="FIELD",
                        help="fine-tuning examples: the prompt's field (with "
                             "--completion-field); writes prompt_length beside input_ids")
    parser.add_argument("--completion-field", default=None, metavar="FIELD",
                        help="fine-tuning examples: the completion's field")
    parser.add_argument("--messages-field", default=None, metavar="FIELD",
                        help="fine-tuning conversations, tokenized with the tokenizer's chat "
                             "template; writes loss_mask (the assistant's tokens)")
    parser.add_argument("--loss-mask", action="store_true",
                        help="with --prompt-field: also write loss_mask (list<bool>, false on "
                             "the prompt)")
    parser.add_argument("--append-eos", action="store_true",
                        help="end every document with the EOS id")
    parser.add_argument("--eos-token", default=None, metavar="TOKEN",
                        help="the EOS token's text (default: the tokenizer's own)")
    parser.add_argument("--add-special-tokens", action="store_true",
                        help="let the tokenizer add its special tokens (e.g. BOS) to every "
                             "document (default: off)")
    parser.add_argument("--shard-size", type=parse_size, default=DEFAULT_SHARD_SIZE,
                        metavar="SIZE", help="target shard size (default: 512MiB)")
    parser.add_argument("--batch-size", type=positive_int, default=1000,
                        help="documents per tokenizer call (default: 1000)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process, the tokenizer's threads; ray: Ray Data "
                             "tasks, one per shard (default: local)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to join, e.g. auto or ray://host:10001 (default: "
                             "start a local instance)")
    parser.add_argument("--num-cpus", type=positive_int, default=None,
                        help="CPUs of a local Ray instance (default: all)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a corpus or unfinished preparation of other inputs "
                             "in DIR")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="also write the figures (documents, tokens, seconds, rates) "
                             "to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run_prepare)


def run_prepare(args: argparse.Namespace, command: str) -> int:
    """Runs ``arrowloader prepare``; returns the exit status."""
    options = PrepareOptions(
        text_field=args.text_field,
        lines=args.lines,
        keep_fields=args.keep_fields,
        append_eos=args.append_eos,
        shard_size=args.shard_size,
        prompt_field=args.prompt_field,
        completion_field=args.completion_field,
        messages_field=args.messages_field,
        loss_mask=args.loss_mask,
    )
    remote = is_url(args.output)
    output = (staging_folder(args.output, args.staging) if remote else Path(args.output))
    try:
        result = prepare_corpus(
            args.inputs, args.tokenizer, output, options,
            eos_token=args.eos_token, add_special_tokens=args.add_special_tokens,
            engine=args.engine, ray_address=args.ray_address, num_cpus=args.num_cpus,
            batch_size=args.batch_size, overwrite=args.overwrite,
            show_progress=not args.quiet, command=command,
        )
    except ValueError as exc:
        if isinstance(exc, ArrowLoaderError):
            raise
        print(f"arrowloader prepare: error: {exc}", file=sys.stderr)
        return 2
    figures = result.summary()
    if remote:
        upload_corpus(output, args.output)
    if result.up_to_date:
        print(f"{args.output}: already holds this corpus (same inputs, tokenizer and "
              f"options): {plural(figures['documents'], 'document')}, "
              f"{plural(figures['tokens'], 'token')} in {plural(figures['shards'], 'shard')}; "
              "nothing to do")
    else:
        print(
            f"{args.output}: {plural(figures['documents'], 'document')}, "
            f"{plural(figures['tokens'], 'token')} in {plural(figures['shards'], 'shard')} "
            f"({figures['bytes'] / 2**20:,.1f} MiB, "
            f"{figures['token_dtype']} ids, vocabulary {figures['vocab_size']:,})"
        )
        kept = (
            f", {plural(figures['shards_kept'], 'finished shard')} kept"
            if figures["shards_kept"] else ""
        )
        print(
            f"this run ({figures['engine']} engine): "
            f"{plural(figures['documents_written'], 'document')}, "
            f"{plural(figures['tokens_written'], 'token')} in {figures['seconds']:.2f} s "
            f"= {figures['documents_per_second']:,.0f} documents/s, "
            f"{figures['tokens_per_second']:,.0f} tokens/s{kept}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def staging_folder(url: str, staging: Optional[Path]) -> Path:
    """The local folder a corpus bound for ``url`` is prepared in: ``staging``, else one
    per URL in the arrowloader cache folder (kept, so a rerun finds its finished
    shards)."""
    if staging is not None:
        return staging
    scheme, path = split_url(url)
    key = hashlib.sha256(f"{scheme}://{path}".encode()).hexdigest()[:16]
    return cache_dir() / "prepare-staging" / key


def upload_corpus(folder: Path, url: str) -> list[str]:
    """Uploads the prepared corpus in ``folder`` to the prefix ``url``: its shards in
    manifest order, then ``manifest.json`` (a reader that finds the manifest finds every
    shard it lists). Credentials and endpoint come from the environment."""
    manifest = read_manifest(folder)
    names = [entry.file for entry in manifest.shards] + [MANIFEST_NAME]
    return upload_folder(folder, url, names, call=RetryPolicy().run)
