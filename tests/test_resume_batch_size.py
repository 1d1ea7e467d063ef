"""Resuming into a loader of another batch size (or another split between ranks)
continues at exactly the next sample: the samples delivered before the state, then the
rest of the epoch in batches of the new size, each sample once. The oracle is the
uninterrupted run's sample order, from a loader of batch size 1 (torch's own DataLoader
and DistributedSampler for a TokenDataset, the packed loader itself for packed and mixed
datasets, whose global order does not depend on the batch size)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Optional

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import MixedDataset, PackedDataset, TokenDataset
from conftest import random_documents, write_tokens
from torch.utils.data import Sampler

ROW_KEYS = ("input_ids", "labels", "position_ids")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    documents = random_documents(np.random.default_rng(23), 101, max_tokens=18)
    folder = tmp_path_factory.mktemp("batch-size")
    return write_tokens(folder / "docs.arrow", documents, labels=list(range(len(documents))))


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def take(loader: Any, count: Optional[int]) -> list[dict[str, Any]]:
    """``count`` batches of a new pass (None: all of them)."""
    it = iter(loader)
    got = list(it) if count is None else [next(it) for _ in range(count)]
    del it
    return got


# --------------------------------------------------------------------------- packed


def packed(path: Path, mode: str, rank: int = 0, world_size: int = 1) -> PackedDataset:
    return PackedDataset(path, seq_len=6, eos_token_id=0, mode=mode, seed=4, rank=rank,
                         world_size=world_size)


def packed_loaders(path: Path, mode: str, world_size: int, batch_size: int) -> list[Any]:
    return [
        arrowloader.DataLoader(packed(path, mode, r, world_size), batch_size=batch_size,
                               shuffle=True, generator=torch.Generator().manual_seed(9))
        for r in range(world_size)
    ]


def rows(batches: list[dict[str, Any]]) -> list[tuple]:
    """Every row of the batches, in order, as a comparable tuple of its tensors."""
    out = []
    for batch in batches:
        for i in range(batch["input_ids"].shape[0]):
            out.append(tuple(tuple(batch[key][i].tolist()) for key in ROW_KEYS))
    return out


def global_rows(per_rank: list[list[dict[str, Any]]]) -> list[tuple]:
    """The rows of every global step, ranks in order within each step."""
    steps = {len(batches) for batches in per_rank}
    assert len(steps) == 1, steps  # every rank takes as many steps
    return [row for step in zip(*per_rank) for row in rows(list(step))]


@pytest.mark.parametrize("mode", ["concat", "bestfit"])
def test_a_packed_state_resumes_into_other_batch_sizes_and_ranks(corpus: Path, mode: str) -> None:
    (reference,) = packed_loaders(corpus, mode, 1, 1)
    order = rows(take(reference, None))  # every block of epoch 0, in the global order
    epoch_1 = rows(take(reference, None))
    blocks = len(order)
    assert blocks > 40 and len(set(order)) == blocks

    # 5 steps of 4 on one rank, then 2 steps of 8, then the rest on 2 ranks of 3 each.
    (first,) = packed_loaders(corpus, mode, 1, 4)
    seen = rows(take(first, 5))
    state = roundtrip(first.state_dict())
    assert (state["epoch"], state["samples_consumed"], state["global_batch_size"]) == (0, 20, 4)
    (second,) = packed_loaders(corpus, mode, 1, 8)
    second.load_state_dict(state)
    assert len(second) == blocks // 8  # a whole epoch's batches, as torch counts them
    seen += rows(take(second, 2))
    state = roundtrip(second.state_dict())
    assert (state["samples_consumed"], state["global_batch_size"]) == (36, 8)
    third = packed_loaders(corpus, mode, 2, 3)
    for loader in third:
        loader.load_state_dict(state)
    seen += global_rows([take(loader, None) for loader in third])

    served = 36 + (blocks - 36) // 6 * 6  # the last incomplete global batch of 6 left out
    assert seen == order[:served]
    assert len(set(seen)) == len(seen)  # each block at most once...
    assert blocks - served < 6  # ...and all but fewer than one new global batch
    # The epoch is over: every rank's next pass is epoch 1, whatever it was resumed from.
    assert all(loader.state_dict()["epoch"] == 1 for loader in third)
    after = global_rows([take(loader, None) for loader in third])
    assert after == epoch_1[: len(epoch_1) // 6 * 6]


def test_a_packed_state_taken_after_a_size_change_loads(corpus: Path) -> None:
    """Its block count is no multiple of its own global batch (it was a multiple of the
    old one): it is still a valid position, and resumes at its next block."""
    (reference,) = packed_loaders(corpus, "concat", 1, 1)
    order = rows(take(reference, None))
    (first,) = packed_loaders(corpus, "concat", 1, 4)
    take(first, 3)
    (second,) = packed_loaders(corpus, "concat", 1, 5)
    second.load_state_dict(first.state_dict())
    take(second, 1)
    state = roundtrip(second.state_dict())
    assert (state["samples_consumed"], state["global_batch_size"]) == (17, 5)
    (third,) = packed_loaders(corpus, "concat", 1, 5)
    third.load_state_dict(state)
    assert rows(take(third, 2)) == order[17:27]


def test_a_mixed_state_resumes_into_another_batch_size(corpus: Path) -> None:
    def make(batch_size: int) -> Any:
        ds = MixedDataset(
            {"a": packed(corpus, "concat"), "b": packed(corpus, "bestfit")}, {"a": 2, "b": 1}
        )
        return arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=True)

    stream = rows(take(make(1), None))  # the mixed samples of pass 0, one at a time
    first = make(4)
    head = rows(take(first, 3))
    resumed = make(6)
    resumed.load_state_dict(roundtrip(first.state_dict()))
    rest = rows(take(resumed, None))
    per_pass = len(stream) // 6 * 6  # the new size's first pass ends where its grid does
    assert head + rest == stream[:per_pass]


# --------------------------------------------------------------------------- TokenDataset


class EveryOtherSampler(Sampler[int]):
    """A sampler of the user's own, drawing from torch's global generator: the order is
    iterated, not computed up front."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        order = torch.randperm(self.n).tolist()
        return iter(order[::2] + order[1::2])

    def __len__(self) -> int:
        return self.n


def token_loader(ds: TokenDataset, batch_size: int, kind: str, drop_last: bool = False) -> Any:
    if kind == "custom-sampler":
        return arrowloader.DataLoader(ds, batch_size=batch_size, drop_last=drop_last,
                                      sampler=EveryOtherSampler(len(ds)))
    return arrowloader.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                                  generator=torch.Generator().manual_seed(5))


def torch_order(ds: TokenDataset, kind: str) -> list[int]:
    """The sample order torch's own DataLoader draws, one sample per batch."""
    if kind == "custom-sampler":
        theirs = torch.utils.data.DataLoader(ds, batch_size=1, sampler=EveryOtherSampler(len(ds)),
                                             collate_fn=ds.collate)
    else:
        theirs = torch.utils.data.DataLoader(ds, batch_size=1, shuffle=True,
                                             generator=torch.Generator().manual_seed(5),
                                             collate_fn=ds.collate)
    return [int(batch["labels"][0]) for batch in theirs]


def labels(batches: list[dict[str, Any]]) -> list[list[int]]:
    return [batch["labels"].tolist() for batch in batches]


def chunks(order: list[int], size: int, drop_last: bool) -> list[list[int]]:
    out = [order[i : i + size] for i in range(0, len(order), size)]
    return [c for c in out if len(c) == size] if drop_last else out


@pytest.mark.parametrize("kind", ["generator", "custom-sampler"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_a_token_state_resumes_into_other_batch_sizes(
    corpus: Path, kind: str, drop_last: bool
) -> None:
    ds = TokenDataset(corpus, label_column="label")
    torch.manual_seed(7)
    order = torch_order(ds, kind)
    assert sorted(order) == list(range(len(ds)))

    torch.manual_seed(7)
    first = token_loader(ds, 4, kind, drop_last)
    head = take(first, 5)
    state = roundtrip(first.state_dict())
    assert state["samples"] == 20 and "batches" not in state
    torch.manual_seed(999)  # whatever the global generator did in between
    second = token_loader(ds, 7, kind, drop_last)
    second.load_state_dict(state)
    middle = take(second, 2)
    state = roundtrip(second.state_dict())
    assert state["samples"] == 34
    torch.manual_seed(1234)
    third = token_loader(ds, 5, kind, drop_last)
    third.load_state_dict(state)
    it = iter(third)
    assert len(it) == len(chunks(order[34:], 5, drop_last))
    tail = list(it)

    assert labels(head) == chunks(order[:20], 4, False)
    assert labels(middle) == chunks(order[20:34], 7, False)
    assert labels(tail) == chunks(order[34:], 5, drop_last)
    for batch in tail:  # each batch is what torch's collate makes of those documents
        want = ds.collate([ds[i] for i in batch["labels"].tolist()])
        assert all(torch.equal(batch[key], want[key]) for key in want)


@pytest.mark.parametrize("drop_last", [False, True])
def test_a_rank_split_token_state_resumes_into_another_batch_size(
    corpus: Path, drop_last: bool
) -> None:
    world = 3
    for rank in range(world):
        ds = TokenDataset(corpus, label_column="label", rank=rank, world_size=world)
        sampler = torch.utils.data.DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=True, seed=2, drop_last=drop_last
        )
        order = list(sampler)  # torch's share of epoch 0 for this rank

        def make(batch_size: int) -> Any:
            return arrowloader.DataLoader(
                ds, batch_size=batch_size, shuffle=True, drop_last=drop_last,  # noqa: B023
                generator=torch.Generator().manual_seed(2),
            )

        first = make(4)
        head = take(first, 2)
        state = roundtrip(first.state_dict())
        assert (state["epoch"], state["samples"]) == (0, 8)
        resumed = make(3)
        resumed.load_state_dict(state)
        assert labels(head) + labels(take(resumed, None)) == (
            chunks(order[:8], 4, False) + chunks(order[8:], 3, drop_last)
        )
        assert resumed.state_dict()["epoch"] == 1


def test_a_state_counting_samples_is_refused_by_a_batch_sampler_of_the_users_own(
    corpus: Path,
) -> None:
    ds = TokenDataset(corpus, label_column="label")
    first = token_loader(ds, 4, "generator")
    take(first, 2)
    own = arrowloader.DataLoader(ds, batch_sampler=[[0, 1], [2, 3, 4], [5]])
    with pytest.raises(ValueError, match="has a batch_sampler of its own"):
        own.load_state_dict(first.state_dict())
    # ...whose own states count its batches, and resume them.
    take(own, 1)
    state = own.state_dict()
    assert state["batches"] == 1 and "samples" not in state
    again = arrowloader.DataLoader(ds, batch_sampler=[[0, 1], [2, 3, 4], [5]])
    again.load_state_dict(state)
    assert labels(take(again, None)) == [[2, 3, 4], [5]]


def test_a_state_from_before_samples_were_counted_resumes_as_batches(corpus: Path) -> None:
    """States saved before positions counted samples hold "batches" (of the loader's
    size, the only one they could be resumed with)."""
    ds = TokenDataset(corpus, label_column="label")
    first = token_loader(ds, 4, "generator")
    head = take(first, 3)
    state = first.state_dict()
    old = {key: value for key, value in state.items() if key != "samples"}
    old["batches"] = 3
    resumed = token_loader(ds, 4, "generator")
    resumed.load_state_dict(old)
    order = torch_order(ds, "generator")
    assert labels(head) + labels(take(resumed, None)) == chunks(order, 4, False)
