"""Resuming a TokenDataset loader from state_dict(): the continuing batches equal the
uninterrupted run's, under torch's samplers, a custom sampler and the global RNG."""

from __future__ import annotations

import io
from typing import Any, Callable

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import TokenDataset
from conftest import WrittenCorpus, assert_batches_equal, write_corpus
from torch.utils.data import RandomSampler, Sampler


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> TokenDataset:
    folder = tmp_path_factory.mktemp("resume")
    corpus: WrittenCorpus = write_corpus(folder, np.random.default_rng(3))
    return TokenDataset(corpus.paths, label_column="label", max_length=16)


class EveryOtherSampler(Sampler[int]):
    """A custom sampler drawing from the global RNG: forces the batch-by-batch plan."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        order = torch.randperm(self.n).tolist()
        return iter(order[::2] + order[1::2])

    def __len__(self) -> int:
        return self.n


LoaderFactory = Callable[[TokenDataset, int], arrowloader.DataLoader]

FACTORIES: dict[str, LoaderFactory] = {
    "generator": lambda ds, threads: arrowloader.DataLoader(
        ds, batch_size=3, shuffle=True, num_workers=threads,
        generator=torch.Generator().manual_seed(11),
    ),
    "global-rng": lambda ds, threads: arrowloader.DataLoader(
        ds, batch_size=4, shuffle=True, num_workers=threads, drop_last=True
    ),
    "sampler-generator": lambda ds, threads: arrowloader.DataLoader(
        ds, batch_size=5, num_workers=threads,
        sampler=RandomSampler(ds, generator=torch.Generator().manual_seed(2)),
    ),
    "custom-sampler": lambda ds, threads: arrowloader.DataLoader(
        ds, batch_size=2, num_workers=threads, sampler=EveryOtherSampler(len(ds))
    ),
    "sequential": lambda ds, threads: arrowloader.DataLoader(ds, batch_size=6, num_workers=threads),
}


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def epochs(loader: arrowloader.DataLoader, count: int) -> list[dict[str, torch.Tensor]]:
    return [batch for _ in range(count) for batch in loader]


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("cut", [0, 1, 5, 12, 13, 20])
def test_resume_continues_the_uninterrupted_run(ds: TokenDataset, kind: str, cut: int) -> None:
    make = FACTORIES[kind]
    torch.manual_seed(7)
    full = epochs(make(ds, 2), 3)
    per_epoch = len(make(ds, 2))

    torch.manual_seed(7)
    first = make(ds, 2)
    served: list[dict[str, torch.Tensor]] = []
    while len(served) < cut:  # cut may fall on an epoch boundary or in a later epoch
        for batch in first:
            served.append(batch)
            if len(served) == cut:
                break
    state = roundtrip(first.state_dict())
    del first

    torch.manual_seed(999)  # whatever the global RNG did in between
    resumed = make(ds, 1)
    resumed.load_state_dict(state)
    rest: list[dict[str, torch.Tensor]] = []
    remaining_epochs = 3 - cut // per_epoch
    for _ in range(remaining_epochs):
        rest.extend(resumed)
    assert_batches_equal(served + rest[: len(full) - len(served)], full)


def test_state_before_any_batch_resumes_from_the_start(ds: TokenDataset) -> None:
    make = FACTORIES["generator"]
    state = make(ds, 2).state_dict()
    resumed = make(ds, 1)
    resumed.load_state_dict(state)
    assert_batches_equal(list(resumed), list(make(ds, 2)))


def bad_states(good: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    def without(key: str) -> dict[str, Any]:
        return {k: v for k, v in good.items() if k != key}

    return [
        ({**good, "format": "other"}, "not an arrowloader"),
        (without("samples"), "missing 'samples'"),
        (without("generator_states"), "missing 'generator_states'"),
        ({**good, "samples": -1}, "'samples' must be a non-negative int"),
        ({**good, "samples": True}, "'samples' must be a non-negative int"),
        ({**good, "generator_states": []}, "must hold 1 generator states"),
        ({**good, "generator_states": ["x"]}, "not a state of this loader"),
        ({**good, "fingerprint": {**good["fingerprint"], "documents": 1}}, "another corpus"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_load_state_dict_rejects_bad_states(ds: TokenDataset, case: int) -> None:
    loader = FACTORIES["generator"](ds, 1)
    it = iter(loader)
    next(it)
    state, message = bad_states(loader.state_dict())[case]
    with pytest.raises(ValueError, match=message):
        FACTORIES["generator"](ds, 1).load_state_dict(state)


def test_state_of_another_corpus_is_rejected(ds: TokenDataset, tmp_path: Any) -> None:
    other = TokenDataset(
        write_corpus(tmp_path, np.random.default_rng(4)).paths, label_column="label", max_length=16
    )
    state = FACTORIES["generator"](other, 1).state_dict()
    with pytest.raises(ValueError, match="another corpus"):
        FACTORIES["generator"](ds, 1).load_state_dict(state)


def test_state_dict_needs_the_native_path() -> None:
    loader = arrowloader.DataLoader(torch.utils.data.TensorDataset(torch.arange(4)))
    # As torch's loader, it has no state_dict at all (frameworks check with hasattr).
    assert not hasattr(loader, "state_dict") and not hasattr(loader, "load_state_dict")
    with pytest.raises(arrowloader.NotNativeError, match="available on the native path"):
        loader.state_dict()
    with pytest.raises(NotImplementedError):
        loader.state_dict()
    with pytest.raises(NotImplementedError):
        loader.load_state_dict({})


