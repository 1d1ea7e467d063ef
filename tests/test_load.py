"""Load: eight loaders at once over one corpus, a thousand short epochs, and one long
epoch, each checked against torch's own DataLoader or a plain-Python oracle, with anonymous
resident memory, threads and open files flat (generous bounds: the full figures come from
benchmarks/load_soak.py on the reference corpus; memory bounds are not checked against a
sanitizer build, whose allocator holds freed memory back)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow as pa
import pytest
import torch
from arrowloader import PackedDataset, TokenDataset, synthetic
from arrowloader.bench.harness import anon_rss_bytes
from conftest import (
    UNDER_SANITIZER,
    Resources,
    WrittenCorpus,
    assert_batches_equal,
    native_threads,
    wait_for_native_threads,
    write_corpus,
    write_tokens,
)

MiB = 1 << 20


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> WrittenCorpus:
    return write_corpus(
        tmp_path_factory.mktemp("load"), np.random.default_rng(8), docs_per_file=(30, 25, 45)
    )


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_eight_loaders_at_once(files: WrittenCorpus) -> None:
    """Eight native loaders over the same files, some sharing one dataset object, consumed
    in turns, each yield exactly what torch's DataLoader yields for the same seed."""
    shared = TokenDataset(files.paths, label_column="label", max_length=12)
    packed = PackedDataset(files.paths, seq_len=16, eos_token_id=0)
    datasets: list[Any] = [shared] * 4 + [
        TokenDataset(files.paths, label_column="label", max_length=12),
        TokenDataset(files.paths, label_column="label", max_length=12, padding_side="left"),
        packed,
        packed,
    ]
    baseline = len(native_threads())
    loaders = [
        arrowloader.DataLoader(ds, batch_size=3 + k % 3, shuffle=True, num_workers=2,
                               generator=seeded(100 + k))
        for k, ds in enumerate(datasets)
    ]
    iterators = [iter(loader) for loader in loaders]
    got: list[list[dict[str, Any]]] = [[] for _ in loaders]
    live = set(range(len(loaders)))
    rounds = 0
    while live:
        for k in sorted(live):
            batch = next(iterators[k], None)
            if batch is None:
                live.discard(k)
            else:
                got[k].append(batch)
        if rounds == 1:
            assert len(native_threads()) == baseline + 16  # 8 loaders x 2 threads, at once
        rounds += 1
    assert wait_for_native_threads(baseline) == baseline
    for k, ds in enumerate(datasets):
        if isinstance(ds, PackedDataset):
            # The packed reference: the dataset's own blocks in the loader's shuffled order.
            order = ds.block_order(0, 100 + k, ds.plan(0, 100 + k).num_blocks)
            batch_size = 3 + k % 3
            want = [ds.assemble(order[b : b + batch_size], epoch=0, seed=100 + k)
                    for b in range(0, len(order) - batch_size + 1, batch_size)]
        else:
            want = list(torch.utils.data.DataLoader(
                ds, batch_size=3 + k % 3, shuffle=True, generator=seeded(100 + k),
                collate_fn=ds.collate,
            ))
        assert_batches_equal(got[k], want)


def epoch_rows(batches: list[dict[str, torch.Tensor]]) -> list[int]:
    return [int(x) for batch in batches for x in batch["labels"]]


def test_a_thousand_short_epochs(tmp_path: Path) -> None:
    """1,000 epochs of 3 batches: each epoch is torch's, every document once, and the
    process ends where it was after the first hundred (threads, descriptors, mappings
    exactly; anonymous memory within 32 MiB)."""
    documents = [[k] * (1 + k % 5) for k in range(12)]
    path = write_tokens(tmp_path / "small.arrow", documents, labels=list(range(12)))
    ds = TokenDataset(path, label_column="label")
    ours = arrowloader.DataLoader(ds, batch_size=4, shuffle=True, num_workers=2,
                                  generator=seeded(5))
    theirs = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, generator=seeded(5),
                                         collate_fn=ds.collate)
    orders = set()
    for epoch in range(1000):
        got = list(ours)
        assert_batches_equal(got, list(theirs))
        rows = epoch_rows(got)
        assert sorted(rows) == list(range(12))
        orders.add(tuple(rows))
        if epoch == 99:
            gc.collect()
            early = Resources.now([path]), anon_rss_bytes(os.getpid())
    gc.collect()
    late = Resources.now([path]), anon_rss_bytes(os.getpid())
    assert late[0] == early[0]
    if not UNDER_SANITIZER:
        assert late[1] - early[1] < 32 * MiB, (early[1] / MiB, late[1] / MiB)
    assert len(orders) > 900  # epochs really are reshuffled


def test_a_thousand_short_packed_epochs(files: WrittenCorpus) -> None:
    """A loader's epochs over a PackedDataset advance by themselves (the loader counts
    them; the dataset stays at epoch 0); 1,000 of them, each a permutation of that
    epoch's blocks (checked against the dataset's own block order), resources flat."""
    ds = PackedDataset(files.paths[:1], seq_len=32, eos_token_id=0)
    loader = arrowloader.DataLoader(ds, batch_size=2, shuffle=True, num_workers=2)
    for epoch in range(1000):
        assert loader.state_dict()["epoch"] == epoch and ds.epoch == 0
        plan_blocks = ds.plan(epoch, ds.seed).num_blocks
        order = ds.block_order(epoch, ds.seed, plan_blocks)
        got = list(loader)
        assert len(got) == plan_blocks // 2
        if epoch % 97 == 0:  # the contents, now and then, against the dataset's own blocks
            want = ds.assemble(order[: 2 * len(got)], epoch=epoch)
            assert torch.equal(torch.cat([b["input_ids"] for b in got]), want["input_ids"])
        if epoch == 99:
            gc.collect()
            early = Resources.now(files.paths), anon_rss_bytes(os.getpid())
    gc.collect()
    late = Resources.now(files.paths), anon_rss_bytes(os.getpid())
    assert late[0] == early[0]
    if not UNDER_SANITIZER:
        assert late[1] - early[1] < 32 * MiB, (early[1] / MiB, late[1] / MiB)


def test_one_long_epoch_keeps_memory_flat(tmp_path: Path) -> None:
    """An epoch of a synthetic corpus (the reference corpus's recipe, 30,000 documents,
    about 15M tokens): after the first tenth, anonymous memory stays within 64 MiB of its
    level then, and threads and descriptors do not change. Every document is served once,
    at its length (the oracle: the lengths pyarrow reads)."""
    path = synthetic.make_corpus(tmp_path / "long.arrow", num_docs=30_000, seed=3)
    with pa.memory_map(str(path)) as source:
        column = pa.ipc.open_file(source).read_all().column("input_ids").combine_chunks()
        lengths = np.minimum(np.diff(column.offsets.to_numpy()), 1024)
        del column
    ds = TokenDataset(path, max_length=1024)
    loader = arrowloader.DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
                                    generator=seeded(9))
    served: list[np.ndarray] = []
    samples = []
    it = iter(loader)
    total = len(it)
    for b, batch in enumerate(it):
        served.append(batch["attention_mask"].sum(dim=1).numpy())
        if b % 50 == 0:
            samples.append((b, Resources.now([path]), anon_rss_bytes(os.getpid())))
    assert np.array_equal(np.sort(np.concatenate(served)), np.sort(lengths))
    settled = [s for s in samples if s[0] >= total // 10]
    assert len(settled) >= 5
    _, first, first_rss = settled[0]
    for _, resources, rss in settled:
        assert (resources.threads, resources.fds) == (first.threads, first.fds)
        if not UNDER_SANITIZER:
            assert rss - first_rss < 64 * MiB, [(b, r / MiB) for b, _, r in settled]
