"""Epochs belong to a loader's iteration (the contract in arrowloader.native): fresh
loaders over one dataset give the same batches for every dataset kind, as torch's
DataLoader does; set_epoch pins every pass of every loader; a loaded state continues its
own epoch; and a pass that can yield no batch says so instead of ending silently."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import MixedDataset, PackedDataset, TokenDataset
from conftest import assert_batches_equal, random_documents, write_tokens

#: Every dataset kind, and the split between ranks of the two that have one.
KINDS = ("token", "token-ranks", "concat", "bestfit", "packed-ranks", "mixed")
#: Those with an epoch number (a TokenDataset following torch's sampler has none: its
#: order comes from the generator, as torch's does).
NUMBERED = ("token-ranks", "concat", "bestfit", "packed-ranks", "mixed")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    documents = random_documents(np.random.default_rng(17), 90, max_tokens=20)
    folder = tmp_path_factory.mktemp("epochs")
    return write_tokens(folder / "docs.arrow", documents, labels=list(range(len(documents))))


def make_dataset(kind: str, path: Path) -> Any:
    if kind == "token":
        return TokenDataset(path, label_column="label")
    if kind == "token-ranks":
        return TokenDataset(path, label_column="label", rank=1, world_size=2)
    if kind in ("concat", "bestfit"):
        return PackedDataset(path, seq_len=8, eos_token_id=0, mode=kind)
    if kind == "packed-ranks":
        return PackedDataset(path, seq_len=8, eos_token_id=0, rank=1, world_size=2)
    assert kind == "mixed"
    return MixedDataset(
        {
            "a": PackedDataset(path, seq_len=8, eos_token_id=0),
            "b": PackedDataset(path, seq_len=8, eos_token_id=0, mode="bestfit"),
        },
        {"a": 0.6, "b": 0.4},
    )


def make_loader(ds: Any, batch_size: int = 4, **kwargs: Any) -> arrowloader.DataLoader:
    """The loader of the issue: shuffled, a freshly seeded generator."""
    loader = arrowloader.DataLoader(
        ds, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(1),
        **kwargs,
    )
    assert loader.native
    return loader


def epochs(loader: Any, count: int) -> list[list[dict[str, Any]]]:
    return [list(loader) for _ in range(count)]


def same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b)
    )


# --------------------------------------------------------------------------- counting


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_loaders_over_one_dataset_give_the_same_batches(corpus: Path, kind: str) -> None:
    """A second loader over a dataset another loader went through plays epoch 0 again,
    exactly as a loader over a dataset nothing touched (a training and an evaluation
    loader sharing one dataset do not move each other's order)."""
    ds = make_dataset(kind, corpus)
    first = epochs(make_loader(ds), 2)
    second = epochs(make_loader(ds), 2)
    alone = epochs(make_loader(make_dataset(kind, corpus)), 2)
    for epoch in range(2):
        assert_batches_equal(first[epoch], alone[epoch])
        assert_batches_equal(second[epoch], alone[epoch])
    assert not same(alone[0], alone[1])  # the loader's epochs do move on
    if kind == "token":  # ...as torch's DataLoader does with the same arguments
        theirs = torch.utils.data.DataLoader(
            ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1),
            collate_fn=ds.collate,
        )
        for epoch in range(2):
            assert_batches_equal(first[epoch], list(theirs))


def test_interleaved_loaders_keep_their_own_epochs(corpus: Path) -> None:
    """An evaluation pass between two training epochs changes nothing of the training
    order (the old behaviour: the evaluation pass moved the dataset to the next epoch)."""
    reference = epochs(make_loader(make_dataset("concat", corpus)), 2)
    ds = make_dataset("concat", corpus)
    train, evaluation = make_loader(ds), make_loader(ds, batch_size=2)
    assert_batches_equal(list(train), reference[0])
    list(evaluation)
    assert_batches_equal(list(train), reference[1])
    assert ds.epoch == 0  # the dataset itself never moved


def test_packed_epochs_are_the_datasets_own_block_orders(corpus: Path) -> None:
    """The oracle of what a loader's epoch e is: the dataset's block order of epoch e,
    assembled on the calling thread."""
    ds = make_dataset("concat", corpus)
    loader = make_loader(ds)
    for epoch, got in enumerate(epochs(loader, 3)):
        order = ds.block_order(epoch, 1, ds.plan(epoch, 1).num_blocks)
        want = ds.assemble(order[: 4 * len(got)].tolist(), epoch=epoch, seed=1)
        assert torch.equal(torch.cat([b["input_ids"] for b in got]), want["input_ids"])


# --------------------------------------------------------------------------- set_epoch


@pytest.mark.parametrize("kind", NUMBERED)
def test_set_epoch_pins_every_pass(corpus: Path, kind: str) -> None:
    reference = epochs(make_loader(make_dataset(kind, corpus)), 3)
    ds = make_dataset(kind, corpus)
    ds.set_epoch(2)
    pinned = make_loader(ds)
    for _ in range(2):  # as DistributedSampler.set_epoch: the same epoch until set again
        assert_batches_equal(list(pinned), reference[2])
    assert pinned.state_dict()["epoch"] == 3  # the loader records where its pass ended
    ds.set_epoch(1)
    assert_batches_equal(list(make_loader(ds)), reference[1])


@pytest.mark.parametrize("kind", ["concat", "mixed"])
def test_set_epoch_rejects_what_is_not_an_epoch(corpus: Path, kind: str) -> None:
    ds = make_dataset(kind, corpus)
    for bad in (-1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="epoch must be a non-negative int"):
            ds.set_epoch(bad)


def test_a_pickled_packed_dataset_keeps_its_pin_and_nothing_else(corpus: Path) -> None:
    reference = epochs(make_loader(make_dataset("concat", corpus)), 3)
    ds = make_dataset("concat", corpus)
    list(make_loader(ds))  # a pass of some loader leaves nothing on the dataset to carry
    assert_batches_equal(list(make_loader(pickle.loads(pickle.dumps(ds)))), reference[0])
    ds.set_epoch(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.epoch == 2
    assert_batches_equal(list(make_loader(copy)), reference[2])


# --------------------------------------------------------------------------- resuming


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_continues_its_own_epoch(corpus: Path, kind: str) -> None:
    """A state taken 3 batches into epoch 1 and loaded into a fresh loader over the same
    dataset (which other loaders went through meanwhile) continues epoch 1, then plays
    epoch 2: the uninterrupted run's batches."""
    reference = epochs(make_loader(make_dataset(kind, corpus)), 3)
    ds = make_dataset(kind, corpus)
    first = make_loader(ds)
    list(first)
    it = iter(first)
    taken = [next(it) for _ in range(3)]
    state = first.state_dict()
    del it
    if kind != "token":
        assert state["epoch"] == 1
    epochs(make_loader(ds), 2)  # another loader's passes move nothing
    resumed = make_loader(ds)
    resumed.load_state_dict(state)
    assert_batches_equal(taken + list(resumed), reference[1])
    assert_batches_equal(list(resumed), reference[2])


@pytest.mark.parametrize("kind", ["concat", "token-ranks", "mixed"])
def test_a_pin_to_another_epoch_overrides_a_loaded_state_and_says_so(
    corpus: Path, kind: str
) -> None:
    reference = epochs(make_loader(make_dataset(kind, corpus)), 3)
    ds = make_dataset(kind, corpus)
    first = make_loader(ds)
    it = iter(first)
    for _ in range(3):
        next(it)
    state = first.state_dict()
    del it
    ds.set_epoch(2)
    resumed = make_loader(ds)
    resumed.load_state_dict(state)
    with pytest.warns(UserWarning, match="part-way through epoch 0, but set_epoch.. pinned "
                                         "the dataset to epoch 2"):
        got = list(resumed)
    assert_batches_equal(got, reference[2])
    ds.set_epoch(0)  # the state's own epoch: it continues, and nothing is said
    resumed.load_state_dict(state)
    assert_batches_equal(list(resumed), reference[0][3:])


# --------------------------------------------------------------------------- empty epochs


def test_a_concat_epoch_smaller_than_a_global_batch_is_refused(corpus: Path) -> None:
    """Every concat epoch packs as many blocks: a global batch larger than that would
    never yield a batch, which can only be a mistake."""
    for world_size in (1, 4):
        ds = PackedDataset(corpus, seq_len=8, eos_token_id=0, rank=0, world_size=world_size)
        blocks = len(ds)
        batch_size = blocks // world_size + 1
        loader = make_loader(ds, batch_size=batch_size)
        assert len(loader) == 0
        global_batch = batch_size * world_size
        with pytest.raises(
            ValueError,
            match=rf"packs into {blocks:,} blocks of 9 tokens, fewer than one global batch of "
                  rf"{global_batch} \(batch_size={batch_size} x world_size={world_size}\), so "
                  rf"all {blocks} are dropped.*Use batch_size <= {blocks // world_size}",
        ):
            iter(loader)
    fits = make_loader(PackedDataset(corpus, seq_len=8, eos_token_id=0), batch_size=blocks)
    assert len(list(fits)) == 1  # one global batch that fits is served


def test_a_bestfit_epoch_that_yields_nothing_warns(corpus: Path) -> None:
    ds = PackedDataset(corpus, seq_len=8, eos_token_id=0, mode="bestfit")
    blocks = ds.plan(0, 1).num_blocks  # the dataset's own packing of the loader's epoch 0
    loader = make_loader(ds, batch_size=blocks + 1)
    with pytest.warns(UserWarning, match=rf"yields no batch: epoch 0 packs into {blocks:,} "
                                         rf"blocks .* global batch of {blocks + 1} .* all "
                                         rf"{blocks} are dropped"):
        assert list(loader) == []


def test_a_mixed_pass_smaller_than_a_global_batch_is_refused(corpus: Path) -> None:
    ds = make_dataset("mixed", corpus)
    loader = make_loader(ds, batch_size=len(ds) + 1)
    with pytest.raises(ValueError, match=rf"one pass is {len(ds):,} blocks .* global batch of "
                                         rf"{len(ds) + 1} .* so all are dropped"):
        iter(loader)


def test_a_drop_last_epoch_that_yields_nothing_warns_once(corpus: Path) -> None:
    """torch's DataLoader yields nothing here too, silently; ours yields the same
    nothing and says why, once for the same figures."""
    ds = TokenDataset(corpus, label_column="label")
    n = len(ds)
    loader = make_loader(ds, batch_size=n + 1, drop_last=True)
    theirs = torch.utils.data.DataLoader(ds, batch_size=n + 1, shuffle=True, drop_last=True,
                                         collate_fn=ds.collate)
    assert list(theirs) == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            assert list(loader) == []
    said = [str(w.message) for w in caught if "yields no batch" in str(w.message)]
    assert len(said) == 1, said
    assert f"the epoch has {n} samples, fewer than batch_size={n + 1}, so all {n} are " \
           "dropped" in said[0]
    assert len(list(make_loader(ds, batch_size=n + 1))) == 1  # without drop_last: one batch


def test_a_rank_share_that_drop_last_drops_whole_warns(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label", rank=1, world_size=2)
    share = len(ds) // 2
    loader = make_loader(ds, batch_size=share + 1, drop_last=True)
    with pytest.warns(UserWarning, match=rf"this rank's share of the epoch is {share} documents "
                                         rf"\(of {len(ds)} over 2 ranks\), fewer than "
                                         rf"batch_size={share + 1}"):
        assert list(loader) == []


# --------------------------------------------------------------------------- planned batches


def planned_loader(ds: TokenDataset, kind: str, **kwargs: Any) -> arrowloader.DataLoader:
    if kind == "grouped":
        return make_loader(ds, group_by_length=True, **kwargs)
    sampler = arrowloader.TokenBudgetBatchSampler(ds, max_tokens=64, shuffle=True, **kwargs)
    loader = arrowloader.DataLoader(ds, batch_sampler=sampler)
    assert loader.native
    return loader


@pytest.mark.parametrize("kind", ["grouped", "budget"])
def test_planned_batches_count_epochs_by_the_loader_too(corpus: Path, kind: str) -> None:
    """Length-grouped and token-budget loaders follow the same rules: fresh loaders over
    one dataset (and one sampler) play epoch 0 first, each pass moves its own loader on,
    the state records that loader's epoch, and the sampler's set_epoch pins the plan."""
    ds = TokenDataset(corpus, label_column="label")
    if kind == "grouped":
        first, second = planned_loader(ds, kind), planned_loader(ds, kind)
    else:
        sampler = arrowloader.TokenBudgetBatchSampler(ds, max_tokens=64, shuffle=True)
        first = arrowloader.DataLoader(ds, batch_sampler=sampler)
        second = arrowloader.DataLoader(ds, batch_sampler=sampler)
    a = epochs(first, 2)
    b = epochs(second, 2)
    for epoch in range(2):
        assert_batches_equal(a[epoch], b[epoch])
    assert not same(a[0], a[1])
    assert first.state_dict()["epoch"] == 2
    pinned = planned_loader(ds, kind)
    pinned.batch_sampler.set_epoch(1)
    assert_batches_equal(list(pinned), a[1])
    assert_batches_equal(list(pinned), a[1])


def test_a_plan_with_no_batch_for_a_rank_warns(corpus: Path) -> None:
    """A token-budget plan with fewer batches than ranks and drop_last leaves every rank
    without a batch: the pass says so instead of ending silently."""
    ds = TokenDataset(corpus, label_column="label")
    sampler = arrowloader.TokenBudgetBatchSampler(
        ds, max_tokens=4096, shuffle=True, drop_last=True, rank=0, world_size=8
    )
    assert len(sampler) == 0
    loader = arrowloader.DataLoader(ds, batch_sampler=sampler)
    with pytest.warns(UserWarning, match="plans no batch of this rank's") as caught:
        assert list(loader) == []
    assert "world size 8, drop_last=True" in str(caught[0].message)
