"""arrowloader.integrations.accelerate: a loader prepared for an Accelerator keeps the
native path, gives the batches arrowloader's own loader gives (the oracle: torch's
DataLoader with the dataset's collate over the same sampler), resumes exactly through
``save_state`` / ``load_state``, and handing a native loader to ``accelerator.prepare``
itself warns. The split between processes is checked under two processes in
test_integrations_distributed.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.data_loader import DataLoaderShard
from arrowloader import IntegrationError, TokenDataset
from arrowloader.integrations.accelerate import AcceleratedLoader, prepare
from conftest import assert_batches_equal, random_documents, write_tokens

SEED = 11


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    documents = random_documents(np.random.default_rng(5), 77, max_tokens=20)
    folder = tmp_path_factory.mktemp("accelerate")
    return write_tokens(folder / "docs.arrow", documents, labels=list(range(len(documents))))


def loader_of(ds: TokenDataset, **options: Any) -> arrowloader.DataLoader:
    return arrowloader.DataLoader(
        ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(SEED), **options
    )


def torch_batches(ds: TokenDataset, epochs: int = 1) -> list[dict[str, torch.Tensor]]:
    """What torch's own loader gives with the dataset's collate and the same generator."""
    loader = torch.utils.data.DataLoader(
        ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(SEED),
        collate_fn=ds.collate,
    )
    return [batch for _ in range(epochs) for batch in loader]


def test_prepared_loader_keeps_the_native_path_and_torchs_batches(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    accelerator = Accelerator(cpu=True)
    prepared = prepare(accelerator, loader_of(ds))
    assert isinstance(prepared, AcceleratedLoader) and prepared.native
    # accelerator.prepare (the HF Trainer calls it) passes the prepared loader through.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert accelerator.prepare(prepared) is prepared
    assert len(prepared) == -(-len(ds) // 8)
    got = [batch for _ in range(2) for batch in prepared]
    assert all(batch["input_ids"].device == accelerator.device for batch in got)
    assert_batches_equal(got, torch_batches(ds, epochs=2))
    assert prepared.loader.metrics().batches == len(got)  # the native iterators made them


def test_the_last_batch_of_an_epoch_ends_the_dataloader_for_accumulation(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=4)
    prepared = prepare(accelerator, loader_of(ds))
    ends, syncs = [], []
    for _ in prepared:
        ends.append(accelerator.gradient_state.end_of_dataloader)
        with accelerator.accumulate(torch.nn.Linear(1, 1)):
            syncs.append(accelerator.sync_gradients)
    batches = len(prepared)
    assert ends == [False] * (batches - 1) + [True]
    # Syncs every 4th batch and on the last one, as for accelerate's own loaders.
    assert syncs == [(i + 1) % 4 == 0 or i + 1 == batches for i in range(batches)]
    assert not accelerator.gradient_state.in_dataloader


def test_save_state_and_load_state_resume_at_the_next_batch(corpus: Path, tmp_path: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    expected = torch_batches(ds, epochs=2)
    accelerator = Accelerator(cpu=True)
    prepared = prepare(accelerator, loader_of(ds, num_workers=2, prefetch_factor=8))
    it = iter(prepared)
    head = [next(it) for _ in range(3)]
    accelerator.save_state(str(tmp_path / "ckpt"))
    del it

    resumed_accelerator = Accelerator(cpu=True)
    resumed = prepare(resumed_accelerator, loader_of(ds))
    resumed_accelerator.load_state(str(tmp_path / "ckpt"))
    ends = []
    rest = []
    for batch in resumed:  # the rest of epoch 0...
        rest.append(batch)
        ends.append(resumed_accelerator.gradient_state.end_of_dataloader)
    assert ends == [False] * (len(rest) - 1) + [True]  # its last batch ends the pass
    rest += list(resumed)  # ...then all of epoch 1
    assert_batches_equal(head + rest, expected)


def test_a_native_loader_given_to_accelerator_prepare_warns_once(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    accelerator = Accelerator(cpu=True)
    loader = loader_of(ds)
    with pytest.warns(UserWarning, match=r"integrations\.accelerate\.prepare\(accelerator, loader"):
        rebuilt = accelerator.prepare(loader)
    assert isinstance(rebuilt, DataLoaderShard)  # accelerate's loader, torch's path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per loader
        assert rebuilt is not accelerator.prepare(loader)
        # A loader off the native path loses nothing there: no warning.
        accelerator.prepare(arrowloader.DataLoader(list(range(10)), batch_size=2))


def test_prepare_refuses_a_loader_off_the_native_path_or_another_split(corpus: Path) -> None:
    accelerator = Accelerator(cpu=True)
    with pytest.raises(IntegrationError, match="loses nothing: use it"):
        prepare(accelerator, arrowloader.DataLoader(list(range(10)), batch_size=2))
    ds = TokenDataset(corpus, label_column="label", rank=1, world_size=2)
    with pytest.raises(IntegrationError, match="share 1 of 2, but this process is 0 of 1"):
        prepare(accelerator, loader_of(ds))
    assert accelerator._custom_objects == []  # nothing refused was registered
    prepare(accelerator, loader_of(TokenDataset(corpus)), register=False)
    assert accelerator._custom_objects == []


def test_set_epoch_reaches_the_dataset_and_the_sampler(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    sampler = torch.utils.data.DistributedSampler(ds, num_replicas=1, rank=0, seed=3)
    prepared = prepare(Accelerator(cpu=True), arrowloader.DataLoader(ds, batch_size=8,
                                                                     sampler=sampler))
    prepared.set_epoch(4)
    assert sampler.epoch == 4 and ds._pinned_epoch == 4
    want = [list(sampler)[i : i + 8] for i in range(0, len(ds), 8)]
    assert [batch["labels"].tolist() for batch in prepared] == want
