"""``arrowloader bench --loader module:function``: a user's own loader, measured with the
same figures as the built-in workloads.

The function is called with no arguments and returns an iterable of batches: mappings
(dicts, transformers' ``BatchEncoding``), tuples or lists whose values include tensors
(a ``torch.utils.data.DataLoader``, a generator function's result, anything). Each
iteration of it is one epoch; a one-shot iterator is rebuilt by calling the function
again when it runs out. Nothing about the batches is known in advance, so their tokens
are counted as they arrive: the sum of ``attention_mask`` where a mapping batch has one,
else the elements of ``input_ids`` (or of the first tensor of the batch), which costs the
loop one reduction per batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from arrowloader.bench.harness import BenchmarkError, Peer
from arrowloader.bench.report import BenchWorkload, Traffic


def load_factory(spec: str) -> Callable[[], Iterable[Any]]:
    """The callable named by ``spec``: ``package.module:function`` (imported with the
    current folder on ``sys.path``, as ``python -m`` would) or ``path/to/file.py:function``.

    Raises:
        BenchmarkError: ``spec`` is malformed, the module cannot be imported, or it has no
            such callable.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise BenchmarkError(
            f"--loader {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION, e.g. "
            "my_training.data:make_loader"
        )
    try:
        if module_name.endswith(".py"):
            path = Path(module_name)
            if not path.is_file():
                raise BenchmarkError(f"--loader {spec!r}: no such file {path}")
            module_spec = importlib.util.spec_from_file_location(path.stem, path)
            if module_spec is None or module_spec.loader is None:
                raise BenchmarkError(f"--loader {spec!r}: cannot load {path} as a module")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            if "" not in sys.path:
                sys.path.insert(0, "")
            module = importlib.import_module(module_name)
    except BenchmarkError:
        raise
    except Exception as exc:  # the user's module failed to import: say which and why
        raise BenchmarkError(
            f"--loader {spec!r}: importing {module_name} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise BenchmarkError(
            f"--loader {spec!r}: {module_name} has no callable named {attribute!r}"
        )
    return factory


class Reiterable:
    """One run's loader: the factory's result, rebuilt for each epoch if it is a one-shot
    iterator (``iter(x) is x``) rather than an iterable."""

    def __init__(self, factory: Callable[[], Iterable[Any]], spec: str) -> None:
        self._factory = factory
        self._spec = spec
        self._loader = self._make()
        self._epochs = 0

    def _make(self) -> Iterable[Any]:
        try:
            loader = self._factory()
        except Exception as exc:
            raise BenchmarkError(
                f"--loader {self._spec}: the function raised {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(loader, Iterable):
            raise BenchmarkError(
                f"--loader {self._spec}: the function returned a {type(loader).__name__}, "
                "not an iterable of batches"
            )
        return loader

    def __iter__(self) -> Iterator[Any]:
        one_shot = iter(self._loader) is self._loader
        if one_shot and self._epochs:
            self._loader = self._make()
        self._epochs += 1
        return iter(self._loader)


def batch_tensors(batch: Any) -> list[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` of each tensor in a mapping (a dict, a transformers
    ``BatchEncoding``), tuple or list batch (keys of a sequence are positions)."""
    if isinstance(batch, Mapping):
        items = list(batch.items())
    elif isinstance(batch, (tuple, list)):
        items = list(enumerate(batch))
    else:
        return []
    return [(str(key), value) for key, value in items if isinstance(value, torch.Tensor)]


class CustomLoaderWorkload(BenchWorkload):
    """A user's loader (see the module docstring), one row named after ``spec``."""

    key = "loader"
    title = "your loader"
    counts_in_loop = True

    def __init__(self, spec: str, *, show_progress: bool = True) -> None:
        super().__init__(None, reference=False, options=None, show_progress=show_progress)
        self.spec = spec
        factory = load_factory(spec)

        def open_dataset(seed: int) -> None:
            return None

        def make_loader(dataset: Any, seed: int) -> Reiterable:
            return Reiterable(factory, spec)

        self.peers = [Peer(spec, "custom", 0, open_dataset, make_loader)]
        self.token_key: Optional[str] = None
        self.mask_key: Optional[str] = None

    def check_batch(self, peer: Peer, batch: Any) -> None:
        tensors = dict(batch_tensors(batch))
        if not tensors:
            raise BenchmarkError(
                f"{peer.name}: a batch is a {type(batch).__name__} without tensors; expected "
                "a mapping (dict, BatchEncoding), tuple or list of tensors"
            )
        self.token_key = "input_ids" if "input_ids" in tensors else next(iter(tensors))
        mask = tensors.get("attention_mask")
        self.mask_key = "attention_mask" if mask is not None else None

    def observe(self, batch: Any) -> tuple[int, int]:
        tensors = dict(batch_tensors(batch))
        tokens = tensors.get(self.token_key or "")
        if tokens is None:
            raise BenchmarkError(
                f"{self.spec}: a batch has no tensor {self.token_key!r}, which the first had"
            )
        if self.mask_key is not None and self.mask_key in tensors:
            return int(tensors[self.mask_key].sum()), tokens.numel()
        return tokens.numel(), tokens.numel()

    def token_counts(self, seed: int, num_batches: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError("a custom loader's tokens are counted in the loop")

    def description(self) -> list[str]:
        counted = (
            "the sum of attention_mask"
            if self.mask_key is not None
            else f"the elements of {self.token_key or 'the first tensor'}"
        )
        return [
            f"your loader: {self.spec}(), iterated as a training loop would, restarted when "
            "an epoch ends",
            f"tokens per batch: {counted}, counted as each batch arrives",
        ]

    def settings(self) -> dict[str, Any]:
        return {"loader": self.spec, "token_key": self.token_key, "mask_key": self.mask_key}

    def corpus_facts(self) -> dict[str, Any]:
        return {}

    def traffic(self, peer: Peer) -> Traffic:
        return Traffic(0, 0)  # unknown: no bandwidth figure for a user's loader

    def batch_output_bytes(self) -> int:
        return 0
