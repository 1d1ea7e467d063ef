"""arrowloader prepare --engine ray on a local 2-CPU Ray instance: the same shards, byte
for byte, as the local engine for the same inputs and plan; a run the local engine left
unfinished is completed by Ray with the same bytes; a task's error reaches the caller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from arrowloader.cli import main
from arrowloader.prepare import run as prepare_run
from arrowloader.prepare.inputs import PrepareInputError
from arrowloader.prepare.run import prepare_corpus
from arrowloader.prepare.shard_plan import PrepareOptions
from text_corpus import shard_bytes, write_jsonl, write_text_files

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_instance() -> Any:
    """One local Ray instance (2 CPUs) for the module; prepare reuses a running one."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}})
    yield ray
    ray.shutdown()


def test_ray_writes_the_local_engines_bytes(ray_instance: Any, tmp_path: Path,
                                            stdlib_corpus: Any, bpe_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Standard library files as .txt documents and as JSON lines with a kept field;
    several shards each; Ray (through the command line) and local write the same files
    and the same manifest entries."""
    texts = write_text_files(tmp_path / "src", stdlib_corpus[:10])
    records = [{"text": text, "name": name} for name, text in stdlib_corpus[10:20]]
    jsonl = write_jsonl(tmp_path / "docs.jsonl", records)
    common = [str(texts), str(jsonl), "--tokenizer", str(bpe_path), "--shard-size", "24KiB",
              "--append-eos", "--quiet"]
    assert main(["prepare", *common, "--output", str(tmp_path / "local")]) == 0
    assert main(["prepare", *common, "--output", str(tmp_path / "ray"), "--engine", "ray",
                 "--json", str(tmp_path / "ray.json")]) == 0
    assert "ray engine" in capsys.readouterr().out
    local, distributed = shard_bytes(tmp_path / "local"), shard_bytes(tmp_path / "ray")
    assert len(local) > 4 and local == distributed
    manifests = [json.loads((tmp_path / n / "manifest.json").read_text())
                 for n in ("local", "ray")]
    assert manifests[0]["shards"] == manifests[1]["shards"]
    assert manifests[1]["settings"]["engine"] == "ray"
    figures = json.loads((tmp_path / "ray.json").read_text())
    assert figures["shards_written"] == len(local) and figures["engine"] == "ray"


def test_ray_completes_an_interrupted_local_run(ray_instance: Any, tmp_path: Path,
                                               stdlib_corpus: Any, bpe_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = write_text_files(tmp_path / "src", stdlib_corpus[:10])
    options = PrepareOptions(shard_size=24 << 10)
    reference = prepare_corpus([str(inputs)], str(bpe_path), tmp_path / "ref", options,
                               show_progress=False)
    real = prepare_run.write_shard
    calls = []

    def stop_after_two(*args: Any, **kwargs: Any) -> Any:
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(prepare_run, "write_shard", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus([str(inputs)], str(bpe_path), tmp_path / "out", options,
                       show_progress=False)
    monkeypatch.undo()
    result = prepare_corpus([str(inputs)], str(bpe_path), tmp_path / "out", options,
                            engine="ray", show_progress=False)
    assert result.shards_kept == 2
    assert result.shards_written == len(reference.manifest.shards) - 2
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")


def test_a_failing_ray_task_raises_its_own_error(ray_instance: Any, tmp_path: Path,
                                                 bpe_path: Path) -> None:
    """An input that changes after the plan: the task's PrepareInputError, naming the
    input, reaches the caller."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"document {i}"} for i in range(50)])
    real = prepare_run.make_plan

    def plan_then_shrink(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)
        write_jsonl(path, [{"text": "document 0"}])
        return plan

    prepare_run.make_plan = plan_then_shrink
    try:
        with pytest.raises(PrepareInputError, match=r"d\.jsonl: .*changed while"):
            prepare_corpus([str(path)], str(bpe_path), tmp_path / "out", engine="ray",
                           show_progress=False)
    finally:
        prepare_run.make_plan = real


def test_other_task_failures_and_error_names(ray_instance: Any, tmp_path: Path,
                                             bpe_path: Path) -> None:
    """A task that fails with something else than an arrowloader error gives a
    RayEngineError carrying its message; only arrowloader's own error classes are ever
    looked up by the name a task returns."""
    from arrowloader.errors import ArrowLoaderError
    from arrowloader.prepare.ray_engine import RayEngineError, _error_class, run_ray
    from arrowloader.prepare.shard_plan import make_plan
    from arrowloader.prepare.tokenizer import load_tokenizer

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "one"}, {"text": "two"}])
    tokenizer = load_tokenizer(bpe_path)
    plan = make_plan([path], tokenizer, PrepareOptions())
    plan["schema"] = "not base64 of a schema!"
    with pytest.raises(RayEngineError, match="a Ray task failed"):
        run_ray(plan, plan["shards"], tmp_path, tokenizer, 10, None, None, False, {})
    assert _error_class(f"{PrepareInputError.__module__}.PrepareInputError") is PrepareInputError
    assert _error_class("os.system") is ArrowLoaderError
