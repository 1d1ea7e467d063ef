"""The Ray engine of ``arrowloader prepare``: the shards of a plan written by Ray Data
tasks, one shard per task, each reading its documents, tokenizing them and writing its
shard and done record straight into the output folder; the driver assembles the
manifest from what the tasks return.

Every task writes exactly what the local engine writes for the same shard (the same
function does it), so the two engines' outputs are byte-identical. On a cluster, the
inputs, the tokenizer and the output folder must be at the same paths on every node (a
shared file system); a task checks the tokenizer's hash before it starts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from arrowloader.errors import ArrowLoaderError
from arrowloader.manifest import ShardEntry
from arrowloader.prepare.progress import ProgressBar
from arrowloader.prepare.shard_writer import write_shard
from arrowloader.prepare.tokenizer import LoadedTokenizer, TokenizerSpec, load_spec

#: Tokenizers loaded in a Ray worker process, reused by later tasks (keyed by spec).
_WORKER_TOKENIZERS: dict[str, LoadedTokenizer] = {}


class RayEngineError(ArrowLoaderError, RuntimeError):
    """Ray is missing, cannot be reached, or a task failed (the message carries the
    task's own error)."""


def _write_task(
    row: dict[str, Any], plan_json: str, output: str, batch_size: int
) -> dict[str, Any]:
    """Ray Data map function: writes the shard ``row["shard"]`` names; returns its entry."""
    plan = json.loads(plan_json)
    key = json.dumps(plan["tokenizer"], sort_keys=True)
    tokenizer = _WORKER_TOKENIZERS.get(key)
    if tokenizer is None:
        tokenizer = load_spec(TokenizerSpec(**plan["tokenizer"]))
        _WORKER_TOKENIZERS[key] = tokenizer
    shard = plan["shards"][int(row["shard"])]
    try:
        entry = write_shard(plan, shard, Path(output), tokenizer, batch_size)
    except ArrowLoaderError as exc:
        # Ray Data hands the driver only its own wrapper of a task's exception; the
        # error travels as data and is raised again, as itself, by the driver.
        kind = type(exc)
        return {"error_type": f"{kind.__module__}.{kind.__qualname__}", "error": str(exc)}
    return {**entry.__dict__, "error_type": "", "error": ""}


def run_ray(
    plan: dict[str, Any],
    todo: list[dict[str, Any]],
    out: Path,
    tokenizer: LoadedTokenizer,
    batch_size: int,
    address: Optional[str],
    num_cpus: Optional[int],
    show_progress: bool,
    kept: dict[str, ShardEntry],
) -> dict[str, ShardEntry]:
    """Writes the ``todo`` shards of ``plan`` into ``out`` on Ray Data; returns their
    entries by file name.

    Uses the Ray instance this process is connected to, else connects to ``address``,
    else starts a local one with ``num_cpus`` CPUs (shut down at the end).

    Raises:
        RayEngineError: Ray is not installed or a task failed.
    """
    try:  # an optional dependency (the ray extra), imported only by this engine
        import ray
        import ray.data
    except ImportError:
        raise RayEngineError(
            "--engine ray needs Ray Data: pip install 'arrowloader[ray]'"
        ) from None
    started_here = False
    if not ray.is_initialized():
        # One tokenizer thread per task: Ray runs one task per CPU.
        env = {"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            runtime_env={"env_vars": env},
        )
        started_here = True
    written: dict[str, ShardEntry] = {}
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # this run's own bar shows the progress
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context.print_on_execution_start = False
        with ProgressBar(plan, kept, show_progress) as bar:
            if todo:
                items = [{"shard": shard["index"]} for shard in todo]
                dataset = ray.data.from_items(items, override_num_blocks=len(items))
                results = dataset.map(
                    _write_task,
                    fn_kwargs={"plan_json": json.dumps(plan), "output": str(out),
                               "batch_size": batch_size},
                    num_cpus=1,
                )
                try:
                    for row in results.iter_rows():
                        if row["error_type"]:
                            raise _error_class(str(row["error_type"]))(str(row["error"]))
                        entry = ShardEntry(str(row["file"]), int(row["rows"]),
                                           int(row["tokens"]), int(row["bytes"]),
                                           str(row["sha256"]))
                        written[entry.file] = entry
                        bar.update(entry.rows, entry.tokens)
                        bar.shard_done()
                except ArrowLoaderError:
                    raise
                except Exception as exc:  # Ray wraps a task's failure in its own types
                    raise RayEngineError(f"a Ray task failed: {exc}") from exc
    finally:
        if started_here:
            ray.shutdown()
    return written


def _error_class(name: str) -> type[ArrowLoaderError]:
    """The arrowloader error class of a qualified name a task returned (only classes
    arrowloader defines, never an arbitrary import), else ArrowLoaderError."""
    pending: list[type[ArrowLoaderError]] = [ArrowLoaderError]
    while pending:
        kind = pending.pop()
        if f"{kind.__module__}.{kind.__qualname__}" == name:
            return kind
        pending.extend(kind.__subclasses__())
    return ArrowLoaderError
