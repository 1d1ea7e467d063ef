"""The behaviours PyTorch's own DataLoader tests check (its test/test_dataloader.py:
generic datasets, samplers, workers, errors, timeouts, shutdown), written here as our own
cases and run against both ``torch.utils.data.DataLoader`` and ``arrowloader.DataLoader``:
each expectation is plain Python, so a case passes for arrowloader exactly where it passes
for torch. The second half runs the cases that apply to the native path over a
TokenDataset, against torch's loader with the dataset's collate."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
import torch.utils.data as tud
from arrowloader import TokenDataset
from conftest import assert_batches_equal, random_documents, wait_for_native_threads, write_tokens

LOADERS = [tud.DataLoader, arrowloader.DataLoader]
IDS = ["torch", "arrowloader"]
loaders = pytest.mark.parametrize("Loader", LOADERS, ids=IDS)

DATA = torch.arange(60).reshape(20, 3)
LABELS = torch.arange(20)


def dataset() -> tud.TensorDataset:
    return tud.TensorDataset(DATA, LABELS)


class Failing(tud.Dataset):
    """Raises on one index, as test_dataloader's error datasets do."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> int:
        if index == 7:
            raise ValueError("bad item 7")
        return index


class Slow(tud.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        time.sleep(1)
        return index


class WorkerInfo(tud.Dataset):
    """Each item: the id and seed of the worker that made it, and the worker_init_fn mark."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> list[int]:
        info = tud.get_worker_info()
        return [info.id, info.seed, int(os.environ.get("MARK", "0")), os.getpid()]


class Counting(tud.IterableDataset):
    def __iter__(self) -> Any:
        return iter(range(6))


def mark_worker(worker_id: int) -> None:
    os.environ["MARK"] = str(100 + worker_id)


# ------------------------------------------------------------------ generic datasets


@loaders
def test_sequential_batches_and_len(Loader: Any) -> None:
    for batch_size, drop_last, count in ((3, False, 7), (3, True, 6), (20, False, 1)):
        loader = Loader(dataset(), batch_size=batch_size, drop_last=drop_last)
        assert len(loader) == count
        batches = list(loader)
        assert len(batches) == count
        assert torch.equal(torch.cat([b[1] for b in batches]), LABELS[: count * batch_size])
        assert torch.equal(batches[0][0], DATA[:batch_size])


@loaders
def test_no_automatic_batching(Loader: Any) -> None:
    items = list(Loader(dataset(), batch_size=None))
    assert len(items) == 20 and torch.equal(items[3][0], DATA[3])


@loaders
def test_shuffle_follows_the_generator(Loader: Any) -> None:
    def order(seed: int) -> list[int]:
        loader = Loader(dataset(), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
        return torch.cat([b[1] for b in loader]).tolist()

    assert sorted(order(1)) == list(range(20))
    assert order(1) == order(1) and order(1) != order(2)


@loaders
def test_samplers_and_batch_samplers(Loader: Any) -> None:
    subset = [5, 1, 9, 3]
    got = [b[1].tolist() for b in Loader(dataset(), batch_size=2, sampler=subset)]
    assert got == [[5, 1], [9, 3]]
    got = [b[1].tolist() for b in Loader(dataset(), batch_sampler=[[0, 4], [2], [19, 18, 17]])]
    assert got == [[0, 4], [2], [19, 18, 17]]
    replacement = tud.RandomSampler(range(20), replacement=True, num_samples=30)
    assert len(Loader(dataset(), batch_size=5, sampler=replacement)) == 6


@loaders
def test_default_and_custom_collate(Loader: Any) -> None:
    data = [{"a": i, "b": (float(i), str(i))} for i in range(4)]
    (batch,) = list(Loader(data, batch_size=4))
    assert torch.equal(batch["a"], torch.arange(4)) and list(batch["b"][1]) == ["0", "1", "2", "3"]
    assert list(Loader(range(5), batch_size=2, collate_fn=sum)) == [1, 5, 4]


@loaders
def test_invalid_arguments_are_refused(Loader: Any) -> None:
    data = dataset()
    for options in (
        {"batch_sampler": [[0]], "batch_size": 2},
        {"batch_sampler": [[0]], "shuffle": True},
        {"sampler": [0], "shuffle": True},
        {"num_workers": -1},
        {"timeout": -1},
        {"prefetch_factor": 2},  # without worker processes
        {"batch_size": None, "drop_last": True},
    ):
        with pytest.raises(ValueError):
            Loader(data, **options)
    loader = Loader(data, batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        loader.batch_size = 3  # fixed once the loader is made, as in torch


@loaders
@pytest.mark.parametrize("workers", [0, 2])
def test_an_error_in_the_dataset_reaches_the_loop(Loader: Any, workers: int) -> None:
    loader = Loader(Failing(), batch_size=2, num_workers=workers)
    it = iter(loader)
    assert next(it).tolist() == [0, 1]
    with pytest.raises(ValueError, match="bad item 7"):
        for _ in it:
            pass


@loaders
def test_a_worker_that_takes_longer_than_timeout_raises(Loader: Any) -> None:
    loader = Loader(Slow(), batch_size=1, num_workers=1, timeout=0.2)
    with pytest.raises(RuntimeError, match="timed out"):
        next(iter(loader))


@loaders
def test_workers_run_worker_init_fn_with_distinct_seeds(Loader: Any) -> None:
    loader = Loader(WorkerInfo(), batch_size=2, num_workers=2, worker_init_fn=mark_worker,
                    generator=torch.Generator().manual_seed(3))
    rows = [row for batch in loader for row in torch.stack(batch, 1).tolist()]
    ids = {row[0] for row in rows}
    assert ids == {0, 1}
    assert {row[2] for row in rows} == {100, 101}  # worker_init_fn ran in each worker
    assert len({row[1] for row in rows}) == 2  # a seed per worker
    assert os.getpid() not in {row[3] for row in rows}  # in other processes


@loaders
def test_persistent_workers_outlive_an_epoch(Loader: Any) -> None:
    loader = Loader(WorkerInfo(), batch_size=4, num_workers=2, persistent_workers=True)
    pids = [{row[3] for b in loader for row in torch.stack(b, 1).tolist()} for _ in range(2)]
    assert pids[0] == pids[1]
    again = Loader(WorkerInfo(), batch_size=4, num_workers=2, persistent_workers=False)
    first = {row[3] for b in again for row in torch.stack(b, 1).tolist()}
    assert first != {row[3] for b in again for row in torch.stack(b, 1).tolist()}


@loaders
def test_iterable_datasets_are_replicated_per_worker(Loader: Any) -> None:
    assert [b.tolist() for b in Loader(Counting(), batch_size=4)] == [[0, 1, 2, 3], [4, 5]]
    got = sorted(x for b in Loader(Counting(), batch_size=2, num_workers=2) for x in b.tolist())
    assert got == sorted(list(range(6)) * 2)  # each worker iterates the whole dataset
    with pytest.raises(TypeError):
        len(Loader(Counting(), batch_size=2))
    with pytest.raises(ValueError):
        Loader(Counting(), shuffle=True)


@loaders
def test_breaking_out_shuts_the_workers_down(Loader: Any) -> None:
    loader = Loader(WorkerInfo(), batch_size=1, num_workers=2)
    it = iter(loader)
    pids = {row[3] for row in torch.stack(next(it), 1).tolist()}
    workers = list(it._workers)
    assert pids <= {w.pid for w in workers}
    del it
    for worker in workers:
        worker.join(timeout=10)
        assert not worker.is_alive()


@loaders
def test_pin_memory_without_an_accelerator_warns(Loader: Any) -> None:
    if torch.cuda.is_available():
        pytest.skip("an accelerator is present")
    with pytest.warns(UserWarning, match="pin_memory"):
        list(Loader(dataset(), batch_size=5, pin_memory=True))


# ------------------------------------------------------------- the native path


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenDataset:
    documents = random_documents(np.random.default_rng(2), 23, max_tokens=9)
    path = write_tokens(tmp_path_factory.mktemp("behaviours") / "d.arrow", documents,
                        labels=list(range(23)))
    return TokenDataset(path, label_column="label")


def pair(ds: TokenDataset, **options: Any) -> tuple[Any, Any]:
    """arrowloader's loader (native) and torch's with the dataset's collate, same options."""
    ours = arrowloader.DataLoader(ds, **options)
    assert ours.native
    return ours, tud.DataLoader(ds, collate_fn=ds.collate, **options)


@pytest.mark.parametrize("options", [
    {"batch_size": 4},
    {"batch_size": 4, "drop_last": True},
    {"batch_size": 5, "shuffle": True, "generator": 7},
    {"batch_size": 3, "sampler": [22, 0, 5, 5, 9]},
    {"batch_sampler": [[3], [1, 2, 4], [], [22]]},
    {"batch_size": 2, "sampler": "replacement"},
], ids=["sequential", "drop_last", "shuffle", "sampler", "batch_sampler", "replacement"])
def test_native_batches_and_len_are_torchs(tokens: TokenDataset, options: dict[str, Any]) -> None:
    def resolved() -> dict[str, Any]:
        out = dict(options)
        if "generator" in out:
            out["generator"] = torch.Generator().manual_seed(out["generator"])
        if out.get("sampler") == "replacement":
            out["sampler"] = tud.RandomSampler(tokens, replacement=True, num_samples=9,
                                               generator=torch.Generator().manual_seed(1))
        return out

    ours = arrowloader.DataLoader(tokens, **resolved())
    theirs = tud.DataLoader(tokens, collate_fn=tokens.collate, **resolved())
    assert ours.native and len(ours) == len(theirs)
    assert_batches_equal(list(ours), list(theirs))


def test_a_sampler_out_of_range_raises_index_error_on_both(tokens: TokenDataset) -> None:
    for loader in pair(tokens, batch_size=2, sampler=[0, 1, 99]):
        with pytest.raises(IndexError):
            list(loader)


def test_breaking_out_of_the_native_path_ends_its_threads(tokens: TokenDataset) -> None:
    before = wait_for_native_threads(0)
    loader = arrowloader.DataLoader(tokens, batch_size=2, num_workers=2)
    it = iter(loader)
    next(it)
    del it
    assert wait_for_native_threads(before) == before


def test_a_worker_init_fn_on_the_native_path_is_warned_about(tmp_path: Path) -> None:
    """It has no worker process to run in: said, not ignored (torch's case of
    worker_init_fn applies to generic datasets above)."""
    documents = random_documents(np.random.default_rng(3), 5)
    ds = TokenDataset(write_tokens(tmp_path / "d.arrow", documents))
    with pytest.warns(UserWarning, match="worker_init_fn is not called on the native path"):
        list(arrowloader.DataLoader(ds, batch_size=2, worker_init_fn=mark_worker))
