"""The native-path contract (arrowloader.native): a dataset kind defined only here gets
the native path, exact resumption and distribution from DataLoader without any change to
the loader, and the contract's shared checks behave as documented."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import _C
from arrowloader.native import (
    STATE_FORMAT,
    BatchFigures,
    EpochStart,
    LoaderSettings,
    NativeDataset,
    NativeJob,
    Position,
    check_fingerprint,
    check_state,
    check_state_int,
)
from conftest import write_ipc
from torch.utils.data import Dataset


class LengthSortedDataset(Dataset):
    """Documents batched with others of similar length: rows sorted by length (stable),
    cut into batches of ``batch_size``, the batches shuffled per epoch by ``(seed,
    epoch)``; each global step of ``world_size`` batches gives rank ``r`` its ``r``-th, and
    a step that would be incomplete is left out. ``ds[i]`` is document ``i``, unpadded.

    Implements :class:`arrowloader.native.NativeDataset` and nothing else of the package's
    datasets: it plans with numpy and pads with the native assembler.
    """

    def __init__(self, path: Path, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.corpus = arrowloader.Corpus(path, "input_ids")
        self.assembler = _C.PaddedBatchAssembler(self.corpus.tokens)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, 5
        lengths = self.corpus.tokens.lengths(np.arange(self.corpus.num_rows, dtype=np.int64))
        order = np.argsort(lengths, kind="stable")
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return self.corpus.num_rows

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        flat, _ = self.assembler.gather(np.array([index], dtype=np.int64), np.dtype(np.int64))
        return {"input_ids": torch.from_numpy(flat)}

    def collate(self, items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        ids = torch.nn.utils.rnn.pad_sequence([item["input_ids"] for item in items], True, 0)
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones_like(item["input_ids"]) for item in items], True, 0
        )
        return {"input_ids": ids, "attention_mask": mask}

    def batch_order(self, epoch: int, seed: int) -> list[int]:
        """This rank's batches of ``epoch``, as indices into :attr:`batches`."""
        generator = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(self.batches), generator=generator).tolist()
        steps = len(order) // self.world_size
        return [order[s * self.world_size + self.rank] for s in range(steps)]

    # The contract.
    def native_supported(self, settings: LoaderSettings) -> bool:
        return settings.stock_shuffle() is True

    def native_num_batches(self, settings: LoaderSettings) -> int:
        return len(self.batches) // self.world_size

    def native_epoch(self, settings: LoaderSettings, start: EpochStart) -> SortedEpoch:
        position = start.resume or start.previous or {"epoch": 0, "batches": 0}
        return SortedEpoch(self, settings.seed(self.seed), position)

    def native_state(self, settings: LoaderSettings, position: Optional[Position]) -> dict:
        return dict(position or {"epoch": 0, "batches": 0})

    def native_load_state(self, settings: LoaderSettings, state: Any) -> Position:
        check_state(state, ("epoch", "batches"))
        check_fingerprint(state["fingerprint"], self.fingerprint())
        return {"epoch": check_state_int(state, "epoch"), "batches": state["batches"]}

    def native_rewound(self, position: Optional[Position]) -> None:
        pass

    def fingerprint(self) -> dict[str, Any]:
        return {"documents": len(self), "batch_size": self.batch_size}

    def check_files(self) -> None:
        self.corpus.check_unchanged()


class SortedEpoch:
    group = 2  # two batches per native job

    def __init__(self, dataset: LengthSortedDataset, seed: int, position: Position) -> None:
        self.dataset, self.epoch = dataset, position["epoch"]
        self.order = dataset.batch_order(self.epoch, seed)
        self.delivered = self.next = position["batches"]
        self.position = dict(position)

    def __len__(self) -> int:
        return len(self.order) - self.delivered

    def submit(self, pool: Any) -> Optional[NativeJob]:
        if self.next >= len(self.order):
            return None
        taken = self.order[self.next : self.next + self.group]
        self.next += len(taken)
        batches, arguments = [], []
        for b in taken:
            rows = self.dataset.batches[b]
            width = self.dataset.assembler.width(rows)
            ids = np.empty((len(rows), width), dtype=np.int64)
            mask = np.empty((len(rows), width), dtype=np.int64)
            batches.append(
                {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
            )
            arguments.append((rows, ids, mask, None, None))
        return NativeJob(self.dataset.assembler.submit_batches(pool, arguments), batches)

    def finish(self, job: NativeJob, index: int, figures: BatchFigures) -> dict:
        self.delivered += 1
        self.position = {"epoch": self.epoch, "batches": self.delivered}
        return job.batches[index]

    def exhausted(self) -> None:
        self.position = {"epoch": self.epoch + 1, "batches": 0}


@pytest.fixture
def sorted_corpus(tmp_path: Path) -> tuple[Path, list[list[int]]]:
    rng = np.random.default_rng(11)
    documents = [rng.integers(1, 500, size=int(n)).tolist() for n in rng.integers(1, 40, 103)]
    path = tmp_path / "docs.arrow"
    write_ipc(path, {"input_ids": pa.array(documents, type=pa.list_(pa.int32()))})
    return path, documents


def oracle_batches(
    documents: list[list[int]], batch_size: int, epoch: int, seed: int, rank: int, world: int
) -> list[dict[str, torch.Tensor]]:
    """The batches of the docstring of LengthSortedDataset, in plain Python."""
    order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    mine = [shuffled[s * world + rank] for s in range(len(shuffled) // world)]
    out = []
    for b in mine:
        rows = [documents[i] for i in batches[b]]
        width = max(len(r) for r in rows)
        out.append(
            {
                "input_ids": torch.tensor([r + [0] * (width - len(r)) for r in rows]),
                "attention_mask": torch.tensor(
                    [[1] * len(r) + [0] * (width - len(r)) for r in rows]
                ),
            }
        )
    return out


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for key in w:
            assert torch.equal(g[key], w[key]), key


def test_a_dataset_kind_defined_outside_the_package_gets_the_native_path(sorted_corpus) -> None:
    path, documents = sorted_corpus
    ds = LengthSortedDataset(path, batch_size=8)
    assert isinstance(ds, NativeDataset)
    loader = arrowloader.DataLoader(ds, batch_size=8, shuffle=True, num_workers=2)
    assert loader.native
    assert len(loader) == 13
    first = list(loader)
    second = list(loader)  # the epoch is the position's: the next pass is epoch 1
    assert_same(first, oracle_batches(documents, 8, 0, 5, 0, 1))
    assert_same(second, oracle_batches(documents, 8, 1, 5, 0, 1))
    # torch's own DataLoader with the dataset's collate gives the same documents per batch
    # when handed the same batches, so the native path is the contract's, not the loader's.
    torch_loader = torch.utils.data.DataLoader(
        ds, batch_sampler=[ds.batches[b] for b in ds.batch_order(0, 5)], collate_fn=ds.collate
    )
    assert_same(first, list(torch_loader))


def test_its_seed_comes_from_the_loader_generator(sorted_corpus) -> None:
    path, documents = sorted_corpus
    ds = LengthSortedDataset(path, batch_size=8)
    loader = arrowloader.DataLoader(
        ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(9)
    )
    assert_same(list(loader), oracle_batches(documents, 8, 0, 9, 0, 1))


def test_it_resumes_exactly_with_another_thread_count(sorted_corpus) -> None:
    path, documents = sorted_corpus
    ds = LengthSortedDataset(path, batch_size=8)
    loader = arrowloader.DataLoader(ds, batch_size=8, shuffle=True, num_workers=1)
    it = iter(loader)
    for _ in range(5):
        next(it)
    state = loader.state_dict()
    assert state == {
        "format": STATE_FORMAT,
        "fingerprint": ds.fingerprint(),
        "epoch": 0,
        "batches": 5,
    }
    fresh = arrowloader.DataLoader(ds, batch_size=8, shuffle=True, num_workers=3)
    fresh.load_state_dict(state)
    assert_same(list(fresh), oracle_batches(documents, 8, 0, 5, 0, 1)[5:])
    other = LengthSortedDataset(path, batch_size=4)
    with pytest.raises(ValueError, match="batch_size: state 8, dataset 4"):
        arrowloader.DataLoader(other, batch_size=4, shuffle=True).load_state_dict(state)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_its_ranks_share_every_epoch_exactly_once(sorted_corpus, world: int) -> None:
    path, documents = sorted_corpus
    seen: list[int] = []
    for rank in range(world):
        ds = LengthSortedDataset(path, batch_size=8, rank=rank, world_size=world)
        loader = arrowloader.DataLoader(ds, batch_size=8, shuffle=True)
        got = list(loader)
        assert len(got) == len(loader) == 13 // world
        assert_same(got, oracle_batches(documents, 8, 0, 5, rank, world))
        for b in ds.batch_order(0, 5):
            seen.extend(ds.batches[b].tolist())
    assert len(seen) == len(set(seen))  # no document twice across ranks
    # ... and every document of the steps that fit, by the plain-Python plan.
    shuffled = torch.randperm(13, generator=torch.Generator().manual_seed(5000)).tolist()
    expected = {int(i) for b in shuffled[: 13 // world * world] for i in ds.batches[b]}
    assert set(seen) == expected


def test_a_sampler_it_does_not_support_goes_through_torch(sorted_corpus) -> None:
    path, _ = sorted_corpus
    ds = LengthSortedDataset(path, batch_size=8)
    loader = arrowloader.DataLoader(ds, batch_size=8, shuffle=False)
    assert not loader.native
    expected = list(torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=ds.collate))
    assert_same(list(loader), expected)
    with pytest.raises(NotImplementedError, match="native path"):
        loader.state_dict()


def test_check_state_names_what_is_missing_or_wrong() -> None:
    with pytest.raises(ValueError, match="not an arrowloader DataLoader state"):
        check_state({"format": "other"}, ("epoch",))
    with pytest.raises(ValueError, match="missing 'fingerprint', 'epoch'"):
        check_state({"format": STATE_FORMAT}, ("epoch",))
    for bad in (-1, True, 2**63, "3", 1.0):
        with pytest.raises(ValueError, match="'epoch' must be a non-negative int64"):
            check_state_int({"epoch": bad}, "epoch")
    assert check_state_int({"epoch": 2**63 - 1}, "epoch") == 2**63 - 1
    with pytest.raises(ValueError, match="'fingerprint' must be a dict"):
        check_fingerprint([1], {"a": 1})
    with pytest.raises(ValueError, match=r"a: state 1, dataset 2; b: state '<missing>', dataset 3"):
        check_fingerprint({"a": 1}, {"a": 2, "b": 3})
    check_fingerprint({"a": 1}, {"a": 1})


def test_settings_name_the_stock_samplers() -> None:
    data = list(range(10))

    def shuffle_of(loader: torch.utils.data.DataLoader) -> Optional[bool]:
        settings = LoaderSettings(loader.batch_sampler, loader.batch_size, None, 1, 2, False)
        return settings.stock_shuffle()

    assert shuffle_of(torch.utils.data.DataLoader(data, batch_size=2, shuffle=True)) is True
    assert shuffle_of(torch.utils.data.DataLoader(data, batch_size=2)) is False
    replacement = torch.utils.data.RandomSampler(data, replacement=True)
    assert shuffle_of(torch.utils.data.DataLoader(data, batch_size=2, sampler=replacement)) is None
    assert shuffle_of(torch.utils.data.DataLoader(data, batch_sampler=[[0, 1]])) is None
    settings = LoaderSettings(None, 2, torch.Generator().manual_seed(4), 1, 2, False)
    assert settings.seed(7) == 4
    assert LoaderSettings(None, 2, None, 1, 2, False).seed(7) == 7
