"""The StatefulDataLoader protocol, as frameworks built on ``torch.distributed.checkpoint``
use it: ``state_dict()`` is a plain nested dict that DCP saves and loads per rank; the
state is taken at the batch the loop consumed, never at the ones fetched ahead; a state
saved on N ranks resumes on M ranks where the global batch allows it, and is refused,
naming what changed, where not. The oracles: ``torchdata.stateful_dataloader
.StatefulDataLoader`` over the same dataset and generator, and DistributedSampler's or the
plan's order of the uninterrupted epoch."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from arrowloader import LengthGroupedBatchSampler, PackedDataset, TokenDataset, merge_rank_states
from conftest import assert_batches_equal, random_documents, write_tokens
from torchdata.stateful_dataloader import StatefulDataLoader

SEED = 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    documents = random_documents(np.random.default_rng(31), 48, max_tokens=14)
    folder = tmp_path_factory.mktemp("dcp")
    return write_tokens(folder / "docs.arrow", documents, labels=list(range(len(documents))))


def dcp_roundtrip(state: dict[str, Any], template: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``state`` saved by DCP as one rank's ``{"dataloader": ...}``, loaded into
    ``template`` (a fresh loader's state: DCP loads in place)."""
    with warnings.catch_warnings():
        # DCP says it assumes one process when no process group exists: the case here.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"dataloader": state}, checkpoint_id=str(folder), no_dist=True)
        loaded = {"dataloader": template}
        dcp.load(loaded, checkpoint_id=str(folder), no_dist=True)
    return loaded["dataloader"]


def token_loader(ds: Any, **options: Any) -> arrowloader.DataLoader:
    return arrowloader.DataLoader(ds, batch_size=5, shuffle=True,
                                  generator=torch.Generator().manual_seed(SEED), **options)


def stateful(ds: TokenDataset, **options: Any) -> StatefulDataLoader:
    return StatefulDataLoader(ds, batch_size=5, shuffle=True, collate_fn=ds.collate,
                              generator=torch.Generator().manual_seed(SEED), **options)


def take(loader: Any, count: int) -> list[Any]:
    it = iter(loader)
    return [next(it) for _ in range(count)]


@pytest.mark.parametrize("kind", ["sampler", "rank-split", "packed"])
def test_a_state_saved_by_dcp_resumes_exactly(corpus: Path, tmp_path: Path, kind: str) -> None:
    def make() -> arrowloader.DataLoader:
        if kind == "packed":
            return token_loader(PackedDataset(corpus, seq_len=8, eos_token_id=0, seed=1))
        if kind == "rank-split":
            return token_loader(TokenDataset(corpus, label_column="label", rank=1, world_size=2))
        return token_loader(TokenDataset(corpus, label_column="label"))

    reference = make()
    whole = [batch for _ in range(2) for batch in reference]
    first = make()
    head = take(first, 3)
    state = dcp_roundtrip(first.state_dict(), make().state_dict(), tmp_path)
    resumed = make()
    resumed.load_state_dict(state)
    assert_batches_equal(head + list(resumed) + list(resumed), whole)


def test_states_behave_as_stateful_dataloaders(corpus: Path) -> None:
    """Where the protocols overlap, each loader resumed from its own state continues as
    StatefulDataLoader does from its own: before any batch and mid-epoch, however many
    batches the loader prefetched (the state is the consumer's position). One difference,
    on purpose: after an epoch's last batch, arrowloader's state is already at the next
    epoch's start (its position is the batches delivered), where StatefulDataLoader's
    first resumed pass is empty; the batches that follow are the same. (In order:
    StatefulDataLoader's own RandomSampler draws another permutation than torch's.)"""
    ds = TokenDataset(corpus, label_column="label")

    def both() -> tuple[arrowloader.DataLoader, StatefulDataLoader]:
        return (arrowloader.DataLoader(ds, batch_size=5, num_workers=2, prefetch_factor=8),
                StatefulDataLoader(ds, batch_size=5, collate_fn=ds.collate))

    epoch = len(both()[0])
    for cut in (0, 4, epoch):
        ours, theirs = both()
        assert_batches_equal(take(ours, cut), take(theirs, cut))
        ours_again, theirs_again = both()
        ours_again.load_state_dict(ours.state_dict())
        theirs_again.load_state_dict(theirs.state_dict())
        if cut == epoch:
            assert list(theirs_again) == []  # StatefulDataLoader: the rest of a done epoch
        assert_batches_equal(list(ours_again), list(theirs_again))
        assert_batches_equal(list(ours_again), list(theirs_again))  # and the epoch after


def test_a_state_of_n_ranks_resumes_on_m_ranks(corpus: Path) -> None:
    """3 steps of batch 4 on 4 ranks consume the epoch's first 48 of DistributedSampler's
    order... here 2 steps of batch 3 on 4 ranks: the first 24; on 2 ranks, 12 each, on 3
    ranks 8 each; the rest of the epoch follows as the M-rank run plays it."""
    def ranks(world: int, batch: int) -> list[arrowloader.DataLoader]:
        return [arrowloader.DataLoader(
            TokenDataset(corpus, label_column="label", rank=r, world_size=world),
            batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(SEED),
        ) for r in range(world)]

    four = ranks(4, 3)
    for loader in four:
        take(loader, 2)
    state = merge_rank_states([loader.state_dict() for loader in four])
    for world in (2, 3):
        for rank, loader in enumerate(ranks(world, 4)):
            loader.load_state_dict(state)
            sampler = torch.utils.data.DistributedSampler(range(48), num_replicas=world,
                                                          rank=rank, seed=SEED)
            rest = [row for batch in loader for row in batch["labels"].tolist()]
            assert rest == list(sampler)[24 // world :]
    with pytest.raises(ValueError, match=r"after 6 samples each \(24 of the epoch\), which 5"):
        ranks(5, 4)[0].load_state_dict(state)


def test_a_length_grouped_state_resumes_on_other_world_sizes(corpus: Path) -> None:
    ds = TokenDataset(corpus, label_column="label")
    plan = list(LengthGroupedBatchSampler(ds, 2, shuffle=True, seed=SEED))  # the global plan

    def ranks(world: int) -> list[arrowloader.DataLoader]:
        return [arrowloader.DataLoader(ds, batch_sampler=LengthGroupedBatchSampler(
            ds, 2, shuffle=True, seed=SEED, rank=r, world_size=world)) for r in range(world)]

    two = ranks(2)
    for loader in two:
        take(loader, 3)  # the plan's first 6 batches
    state = merge_rank_states([loader.state_dict() for loader in two])
    for world in (1, 3):
        for rank, loader in enumerate(ranks(world)):
            loader.load_state_dict(state)
            got = [batch["labels"].tolist() for batch in loader]
            assert got == plan[6 + rank :: world][: len(got)]
            assert len(got) == len(plan[6 + rank :: world])
    with pytest.raises(ValueError, match="4 ranks cannot share"):
        ranks(4)[0].load_state_dict(state)


def test_merge_rank_states_refuses_ranks_at_different_places(corpus: Path) -> None:
    loaders = [token_loader(TokenDataset(corpus, label_column="label", rank=r, world_size=2))
               for r in range(2)]
    take(loaders[0], 1)
    with pytest.raises(ValueError, match="rank 1 is not where rank 0 is \\('samples'"):
        merge_rank_states([loader.state_dict() for loader in loaders])
    with pytest.raises(ValueError, match="taken on 2 ranks, 1 given"):
        merge_rank_states([loaders[0].state_dict()])
    with pytest.raises(ValueError, match="no state given"):
        merge_rank_states([])
    with pytest.raises(ValueError, match="rank 0 is a list"):
        merge_rank_states([[]])  # type: ignore[list-item]
