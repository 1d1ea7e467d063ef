"""One preparation from start to manifest: check the output folder, plan (or take the
plan of the unfinished run being resumed), write the shards not yet done with the local
or the Ray engine, then write ``manifest.json`` and drop the run's state.

The output folder holds, while a run is unfinished, ``.arrowloader-prepare/plan.json``
(the plan and the fingerprint of inputs and options) and one done record per finished
shard. A later run with the same fingerprint resumes: finished shards are kept, partial
ones deleted and redone. A folder that holds a finished corpus of the same inputs and
options is left as it is; any other content is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from arrowloader.errors import ArrowLoaderError
from arrowloader.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardEntry,
    read_manifest,
    write_text_atomic,
)
from arrowloader.prepare.inputs import find_inputs, input_identity
from arrowloader.prepare.progress import ProgressBar
from arrowloader.prepare.ray_engine import run_ray
from arrowloader.prepare.shard_plan import (
    TOKEN_COLUMN,
    PrepareOptions,
    fingerprint,
    make_plan,
)
from arrowloader.prepare.shard_writer import (
    STATE_FOLDER,
    completed_entry,
    partial_path,
    write_shard,
)
from arrowloader.prepare.tokenizer import LoadedTokenizer, load_tokenizer

ENGINES = ("local", "ray")


class OutputFolderError(ArrowLoaderError, OSError):
    """The output folder of ``arrowloader prepare`` holds something else than a
    preparation of the same inputs and options (and ``--overwrite`` was not given)."""


@dataclass
class PrepareResult:
    """What a preparation did.

    Attributes:
        manifest: the corpus's manifest.
        output: the output folder.
        seconds: wall time of the whole run (scan and plan included).
        documents, tokens: written by this run (kept shards not counted).
        shards_written: shards this run wrote; shards_kept: finished shards of an earlier
            run that this one kept.
        up_to_date: the folder already held this very corpus; nothing was done.
    """

    manifest: Manifest
    output: Path
    seconds: float
    documents: int
    tokens: int
    shards_written: int
    shards_kept: int
    up_to_date: bool = False

    def summary(self) -> dict[str, Any]:
        """Figures for people and ``--json``."""
        seconds = max(self.seconds, 1e-9)
        return {
            "output": str(self.output),
            "documents": self.manifest.num_rows,
            "tokens": self.manifest.num_tokens,
            "shards": len(self.manifest.shards),
            "bytes": self.manifest.num_bytes,
            "token_dtype": self.manifest.token_dtype,
            "vocab_size": self.manifest.vocab_size,
            "engine": self.manifest.settings.get("engine"),
            "seconds": round(self.seconds, 3),
            "documents_written": self.documents,
            "tokens_written": self.tokens,
            "shards_written": self.shards_written,
            "shards_kept": self.shards_kept,
            "documents_per_second": round(self.documents / seconds, 1),
            "tokens_per_second": round(self.tokens / seconds, 1),
            "up_to_date": self.up_to_date,
        }


def prepare_corpus(
    inputs: Sequence[str],
    tokenizer: str,
    output: str | os.PathLike[str],
    options: Optional[PrepareOptions] = None,
    *,
    eos_token: Optional[str] = None,
    add_special_tokens: bool = False,
    engine: str = "local",
    ray_address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    batch_size: int = 1000,
    overwrite: bool = False,
    show_progress: bool = True,
    command: str = "",
) -> PrepareResult:
    """Tokenizes ``inputs`` into Arrow shards and a manifest in ``output``.

    Args:
        inputs: files, folders and globs (see :func:`arrowloader.prepare.inputs.find_inputs`).
        tokenizer: a ``tokenizer.json`` or a tokenizer folder.
        output: the corpus folder to write.
        options: what decides the output (see :class:`PrepareOptions`; default: its
            defaults).
        eos_token: the EOS token's text (default: the tokenizer's).
        add_special_tokens: let the tokenizer add its special tokens to every document.
        engine: ``"local"`` (this process; the tokenizer's own threads) or ``"ray"``.
        ray_address: the Ray cluster to use (default: a running one this process is
            connected to, else a new local instance).
        num_cpus: CPUs of a new local Ray instance (default: all).
        batch_size: documents per tokenizer call (does not change the output).
        overwrite: replace whatever preparation the folder holds.
        show_progress: progress bars on stderr (when it is a terminal).
        command: the command line recorded in the manifest.

    Raises:
        PrepareInputError, TokenizerError, OutputFolderError: see their docstrings.
        ValueError: a bad option.
    """
    options = PrepareOptions() if options is None else options
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if options.shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {options.shard_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if TOKEN_COLUMN in options.keep_fields or len(set(options.keep_fields)) != len(
        options.keep_fields
    ):
        raise ValueError(f"keep_fields must be distinct and not {TOKEN_COLUMN!r}")
    options.check()
    started = time.perf_counter()
    out = Path(output)
    # A conversation needs the tokenizer's chat template: transformers reads it.
    kind = "transformers" if options.messages_field is not None else None
    loaded = load_tokenizer(tokenizer, eos_token, add_special_tokens, kind=kind)
    if options.messages_field is not None:
        loaded.chat_template()  # fails now, not in the first shard, if it cannot mask
    if options.append_eos and loaded.eos_token_id is None:
        raise ValueError(
            f"{tokenizer}: --append-eos needs an EOS token and the tokenizer names none; "
            "give one with --eos-token"
        )
    paths = find_inputs(inputs)
    expected = fingerprint([input_identity(p) for p in paths], loaded, options)
    out.mkdir(parents=True, exist_ok=True)
    state = out / STATE_FOLDER
    finished = _finished_manifest(out, expected, overwrite)
    if finished is not None:
        return PrepareResult(finished, out, time.perf_counter() - started, 0, 0, 0,
                             len(finished.shards), up_to_date=True)
    plan = _resumable_plan(out, expected, overwrite)
    if plan is None:
        _clear(out, overwrite)
        total = sum(p.stat().st_size for p in paths)
        with tqdm(total=total, unit="B", unit_scale=True, desc="scanning inputs",
                  disable=None if show_progress else True) as bar:
            plan = make_plan(paths, loaded, options, progress=bar.update)
        state.mkdir(parents=True, exist_ok=True)
        write_text_atomic(state / "plan.json", json.dumps(plan) + "\n")
    kept: dict[str, ShardEntry] = {}
    for shard in plan["shards"]:
        partial_path(out, shard["file"]).unlink(missing_ok=True)
        entry = completed_entry(out, shard["file"])
        if entry is not None:
            kept[shard["file"]] = entry
    todo = [shard for shard in plan["shards"] if shard["file"] not in kept]
    if engine == "ray":
        written = run_ray(plan, todo, out, loaded, batch_size, ray_address, num_cpus,
                          show_progress, kept)
    else:
        written = _run_local(plan, todo, out, loaded, batch_size, show_progress, kept)
    entries = {**kept, **written}
    manifest = Manifest(
        shards=[entries[shard["file"]] for shard in plan["shards"]],
        column=TOKEN_COLUMN,
        token_dtype=plan["token_dtype"],
        vocab_size=plan["vocab_size"],
        eos_token_id=plan["eos_token_id"],
        append_eos=plan["append_eos"],
        tokenizer={"source": loaded.spec.source, "kind": loaded.spec.kind,
                   "sha256": loaded.spec.sha256, "eos_token": loaded.spec.eos_token,
                   "add_special_tokens": loaded.spec.add_special_tokens},
        command=command,
        settings={
            "fingerprint": plan["fingerprint"],
            "engine": engine,
            "text_field": options.text_field,
            "lines": options.lines,
            "keep_fields": list(options.keep_fields),
            "shard_size": options.shard_size,
            **options.example_options,
            **({"example_columns": list(options.example_columns)}
               if options.example_columns else {}),
            "inputs": [{k: i[k] for k in ("path", "bytes", "format", "documents")}
                       for i in plan["inputs"]],
        },
    )
    manifest.write(out)
    shutil.rmtree(state, ignore_errors=True)
    return PrepareResult(
        manifest, out, time.perf_counter() - started,
        sum(e.rows for e in written.values()), sum(e.tokens for e in written.values()),
        len(written), len(kept),
    )


def _finished_manifest(out: Path, expected: str, overwrite: bool) -> Optional[Manifest]:
    """The folder's manifest if it is a finished preparation with fingerprint
    ``expected``; None if there is none (or ``overwrite``)."""
    if not (out / MANIFEST_NAME).is_file() or overwrite:
        return None
    try:
        manifest = read_manifest(out)
    except ArrowLoaderError:
        manifest = None
    if manifest is not None and manifest.settings.get("fingerprint") == expected:
        return manifest
    raise OutputFolderError(
        f"{out}: already holds a prepared corpus of other inputs, tokenizer or options; "
        "choose another folder or pass --overwrite to replace it"
    )


def _resumable_plan(out: Path, expected: str, overwrite: bool) -> Optional[dict[str, Any]]:
    path = out / STATE_FOLDER / "plan.json"
    if overwrite or not path.is_file():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        plan = None
    if isinstance(plan, dict) and plan.get("fingerprint") == expected:
        return plan
    raise OutputFolderError(
        f"{out}: holds an unfinished preparation of other inputs, tokenizer or options; "
        "re-run it with the same ones to resume, or pass --overwrite to start afresh"
    )


def _clear(out: Path, overwrite: bool) -> None:
    """Empties ``out`` of an earlier preparation (only its own files), or refuses a
    folder with other content unless ``overwrite``."""
    planless = out / STATE_FOLDER
    if planless.is_dir() and not (planless / "plan.json").exists():
        shutil.rmtree(planless)  # a run that stopped before its plan was written
    ours = [
        p for p in out.iterdir()
        if p.name in (MANIFEST_NAME, STATE_FOLDER)
        or (p.name.startswith("shard-") and p.name.endswith(".arrow"))
        or (p.name.startswith(".shard-") and p.name.endswith(".partial"))
    ]
    others = [p.name for p in out.iterdir() if p not in ours]
    if not overwrite and (ours or others):
        raise OutputFolderError(
            f"{out}: is not empty ({', '.join(sorted(p.name for p in ours)[:3] + others[:3])}"
            "...); choose an empty folder or pass --overwrite"
        )
    for path in ours:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _run_local(
    plan: dict[str, Any],
    todo: list[dict[str, Any]],
    out: Path,
    tokenizer: LoadedTokenizer,
    batch_size: int,
    show_progress: bool,
    kept: dict[str, ShardEntry],
) -> dict[str, ShardEntry]:
    written: dict[str, ShardEntry] = {}
    with ProgressBar(plan, kept, show_progress) as bar:
        for shard in todo:
            written[shard["file"]] = write_shard(plan, shard, out, tokenizer, batch_size,
                                                 bar.update)
            bar.shard_done()
    return written
