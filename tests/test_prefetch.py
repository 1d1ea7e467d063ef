"""CUDAPrefetcher: the CPU fallback (batches unchanged, in order, one warning), containers
and odd values, errors in the loader, forwarding of len / state_dict / load_state_dict /
set_epoch (the state is at the batch the consumer got, not at those fetched ahead), and,
on a CUDA machine (tests marked ``cuda``), pinned outputs, device batches equal to the CPU
ones bit for bit, and the stream protocol under slow consumers and slow copies.

The oracle of every comparison is the same loader iterated on its own, without a
prefetcher (itself tested against torch's DataLoader elsewhere)."""

from __future__ import annotations

import warnings
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pytest
import torch
from arrowloader import CUDAPrefetcher, MixedDataset, PackedDataset, TokenDataset
from conftest import random_documents, wait_for_native_threads, write_tokens

Batch = dict[str, Any]
KINDS = ("token", "packed", "mixed")
EOS = 0


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("prefetch")
    rng = np.random.default_rng(5)
    first = write_tokens(
        folder / "a.arrow",
        random_documents(rng, 60, max_tokens=30, vocab=500, empty_fraction=0.0),
        labels=[int(x) for x in rng.integers(0, 3, size=60)],
    )
    second = write_tokens(
        folder / "b.arrow", random_documents(rng, 40, max_tokens=20, vocab=500, empty_fraction=0.0)
    )
    return first, second


def seeded(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_loader(kind: str, files: tuple[Path, Path], **kwargs: Any) -> arrowloader.DataLoader:
    """A fresh loader (over fresh datasets: packed datasets keep their epoch) of ``kind``."""
    first, second = files
    options: dict[str, Any] = {"shuffle": True, "generator": seeded(), "num_workers": 2}
    options.update(kwargs)
    if kind == "token":
        dataset: Any = TokenDataset(first, label_column="label", max_length=16)
        return arrowloader.DataLoader(dataset, batch_size=4, **options)
    if kind == "packed":
        dataset = PackedDataset(first, seq_len=8, eos_token_id=EOS)
        return arrowloader.DataLoader(dataset, batch_size=3, **options)
    dataset = MixedDataset(
        {
            "a": PackedDataset(first, seq_len=8, eos_token_id=EOS),
            "b": PackedDataset(second, seq_len=8, eos_token_id=EOS),
        },
        weights={"a": 0.7, "b": 0.3},
        seed=3,
    )
    return arrowloader.DataLoader(dataset, batch_size=3, **options)


def assert_same_batches(got: list[Batch], expected: list[Batch]) -> None:
    """Same number of batches, same keys; tensors of the same dtype, shape and values
    (bit for bit), other values equal."""
    assert len(got) == len(expected), f"{len(got)} batches, expected {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.keys() == e.keys(), f"batch {k}: keys {sorted(g)} != {sorted(e)}"
        for key, value in e.items():
            if isinstance(value, torch.Tensor):
                assert g[key].dtype == value.dtype, f"batch {k} {key}: dtype"
                assert torch.equal(g[key], value), f"batch {k} {key}: values differ"
            else:
                assert g[key] == value, f"batch {k} {key}"


def same_state(a: Any, b: Any) -> bool:
    """Loader states equal, tensors (generator states) compared by value."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def take(iterator: Iterator[Batch], count: int) -> list[Batch]:
    return [next(iterator) for _ in range(count)]


def cpu_prefetcher(loader: Any, depth: int = 2) -> CUDAPrefetcher:
    """A prefetcher that stays on the CPU (device="cpu": no warning)."""
    return CUDAPrefetcher(loader, device="cpu", depth=depth)


# --------------------------------------------------------------------------- fallback


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_without_cuda_batches_pass_unchanged_and_it_warns_once() -> None:
    batches = [{"x": torch.arange(3) + i, "i": i} for i in range(5)]
    with pytest.warns(UserWarning, match="CUDA is not available") as caught:
        prefetcher = CUDAPrefetcher(batches, device="cuda")
    assert len(caught) == 1
    assert prefetcher.device == torch.device("cpu") and not prefetcher.copies
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, over two passes
        for _ in range(2):
            got = list(prefetcher)
            assert len(got) == len(batches)
            assert all(g is b for g, b in zip(got, batches))  # the very objects


def test_cpu_device_never_warns() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(cpu_prefetcher([1, 2, 3])) == [1, 2, 3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [1, 3])
def test_order_equals_the_loader_for_every_dataset(
    files: tuple[Path, Path], kind: str, depth: int
) -> None:
    expected = list(make_loader(kind, files))
    prefetcher = cpu_prefetcher(make_loader(kind, files), depth=depth)
    assert_same_batches(list(prefetcher), expected)
    # And the next epoch too, from the same prefetcher.
    oracle = make_loader(kind, files)
    list(oracle)
    assert_same_batches(list(prefetcher), list(oracle))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_loader_to_returns_a_prefetcher_and_keeps_pin_memory_off(
    files: tuple[Path, Path],
) -> None:
    loader = make_loader("packed", files)
    with pytest.warns(UserWarning, match="CUDA is not available"):
        prefetcher = loader.to("cuda", depth=3)
    assert isinstance(prefetcher, CUDAPrefetcher) and prefetcher.depth == 3
    assert prefetcher.loader is loader and not loader.pin_memory
    assert_same_batches(list(prefetcher), list(make_loader("packed", files)))


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        CUDAPrefetcher([], device="cpu", depth=0)
    with pytest.raises(TypeError, match="depth"):
        CUDAPrefetcher([], device="cpu", depth=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CUDA device or none"):
        CUDAPrefetcher([], device="meta")


# --------------------------------------------------------------------------- containers

Pair = namedtuple("Pair", ["ids", "note"])


def odd_batch(i: int) -> Any:
    return (
        {
            "ids": torch.full((2, 3), i),
            "nested": [torch.arange(i + 1), ("text", None, 3.5)],
            "array": np.arange(3),
            "pair": Pair(torch.tensor([i]), f"batch {i}"),
        },
        OrderedDict(mask=torch.ones(2, dtype=torch.bool)),
        [i, "label"],
    )


def test_odd_values_pass_through_on_the_cpu() -> None:
    batches = [odd_batch(i) for i in range(4)]
    got = list(cpu_prefetcher(batches, depth=2))
    assert all(g is b for g, b in zip(got, batches))


def test_copies_rebuild_containers_and_leave_other_values_alone() -> None:
    # The structure of a copy, on the meta device (no data, no CUDA needed): every tensor is
    # moved, containers keep their types, everything else is the very same object.
    prefetcher = cpu_prefetcher([])
    prefetcher.device = torch.device("meta")
    batch = odd_batch(2)
    moved: list[torch.Tensor] = []
    with pytest.warns(UserWarning, match="not in pinned memory"):
        out = prefetcher._move(batch, moved)
    assert type(out) is tuple and len(out) == 3
    first, mask, tail = out
    assert type(first) is dict and list(first) == ["ids", "nested", "array", "pair"]
    assert first["ids"].device.type == "meta" and first["ids"].shape == (2, 3)
    assert first["nested"][0].device.type == "meta" and first["nested"][0].shape == (3,)
    assert first["nested"][1] == batch[0]["nested"][1]  # a tuple without tensors: rebuilt
    assert first["array"] is batch[0]["array"]
    assert type(first["pair"]) is Pair and first["pair"].note == "batch 2"
    assert first["pair"].ids.device.type == "meta"
    assert type(mask) is OrderedDict and mask["mask"].dtype == torch.bool
    assert tail == [2, "label"] and type(tail) is list
    assert len(moved) == 4  # ids, arange, pair.ids, mask


# --------------------------------------------------------------------------- errors


def failing_after(count: int) -> Iterator[Batch]:
    for i in range(count):
        yield {"i": torch.tensor(i)}
    raise RuntimeError("the corpus broke")


@pytest.mark.parametrize("depth", [1, 4])
def test_a_loader_error_comes_after_the_batches_before_it(depth: int) -> None:
    iterator = iter(cpu_prefetcher(failing_after(3), depth=depth))
    assert [int(next(iterator)["i"]) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="the corpus broke"):
        next(iterator)
    with pytest.raises(StopIteration):
        next(iterator)


# --------------------------------------------------------------------------- forwarding


class CountingLoader:
    """A stateful loader of its own kind: ``state_dict()`` counts the batches it gave."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.given = 0
        self.start = 0
        self.epochs: list[int] = []

    def __iter__(self) -> Iterator[int]:
        for i in range(self.start, self.n):
            self.given = i + 1
            yield i
        self.start = 0

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict[str, int]:
        return {"given": self.given}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.start = self.given = state["given"]

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


def test_forwarding_to_a_loader_of_another_kind() -> None:
    loader = CountingLoader(10)
    prefetcher = cpu_prefetcher(loader, depth=3)
    assert len(prefetcher) == 10
    assert prefetcher.state_dict() == {"given": 0}
    iterator = iter(prefetcher)
    assert take(iterator, 4) == [0, 1, 2, 3]
    assert loader.given == 7  # fetched ahead
    assert prefetcher.state_dict() == {"given": 4}
    prefetcher.set_epoch(5)
    assert loader.epochs == [5]
    del iterator
    prefetcher.load_state_dict({"given": 6})
    assert prefetcher.state_dict() == {"given": 6}
    assert list(prefetcher) == [6, 7, 8, 9]


def test_forwarding_without_the_methods_is_a_clear_type_error() -> None:
    prefetcher = cpu_prefetcher(iter([1, 2]))
    for call in (
        lambda: len(prefetcher),
        prefetcher.state_dict,
        lambda: prefetcher.load_state_dict({}),
        lambda: prefetcher.set_epoch(1),
    ):
        with pytest.raises(TypeError, match="list_iterator"):
            call()


def test_set_epoch_reaches_a_packed_dataset(files: tuple[Path, Path]) -> None:
    loader = make_loader("packed", files)
    cpu_prefetcher(loader).set_epoch(4)
    assert loader.dataset.epoch == 4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cut", [0, 1, 5])
def test_state_counts_batches_the_consumer_got(
    files: tuple[Path, Path], kind: str, cut: int
) -> None:
    plain = make_loader(kind, files)
    expected_iterator = iter(plain)
    take(expected_iterator, cut)
    expected_state = plain.state_dict()

    loader = make_loader(kind, files)
    prefetcher = cpu_prefetcher(loader, depth=3)
    iterator = iter(prefetcher)
    take(iterator, cut)
    assert same_state(prefetcher.state_dict(), expected_state)
    if cut:  # fetching starts at the first next()
        assert not same_state(loader.state_dict(), expected_state)  # the loader ran ahead

    # Resuming a fresh loader (and a fresh prefetcher) from it continues with exactly the
    # batches the uninterrupted run gives next, also across the epoch's end.
    rest = list(expected_iterator) + list(plain)
    resumed = cpu_prefetcher(make_loader(kind, files), depth=2)
    resumed.load_state_dict(prefetcher.state_dict())
    assert same_state(resumed.state_dict(), expected_state)
    assert_same_batches(list(resumed) + list(resumed), rest)


@pytest.mark.parametrize("kind", KINDS)
def test_breaking_out_leaves_the_loader_where_the_consumer_stopped(
    files: tuple[Path, Path], kind: str
) -> None:
    # The loader alone, broken out of after `cut` batches, then iterated again (a packed
    # epoch restarts, a mixed stream continues) is the oracle, also with the prefetcher
    # having fetched the epoch's last batches ahead.
    length = len(make_loader(kind, files))
    for cut in (2, length - 1):
        plain = make_loader(kind, files)
        for i, _ in enumerate(plain):
            if i + 1 == cut:
                break
        expected_state = plain.state_dict()
        expected_next = list(plain)

        loader = make_loader(kind, files)
        prefetcher = cpu_prefetcher(loader, depth=3)
        for i, _ in enumerate(prefetcher):
            if i + 1 == cut:
                break
        assert same_state(loader.state_dict(), expected_state)
        assert same_state(prefetcher.state_dict(), expected_state)
        assert_same_batches(list(prefetcher), expected_next)


@pytest.mark.parametrize("kind", ["packed", "mixed"])
def test_a_new_pass_closes_the_previous_one_where_its_consumer_was(
    files: tuple[Path, Path], kind: str
) -> None:
    # The oracle: the loader alone, a second iterator made while the first is alive (its
    # record then is at the first's consumer: a packed epoch restarts, a mixed stream
    # continues from there).
    plain = make_loader(kind, files)
    first = iter(plain)
    take(first, 2)
    second = iter(plain)
    expected = take(second, 3)
    expected_state = plain.state_dict()

    loader = make_loader(kind, files)
    prefetcher = cpu_prefetcher(loader, depth=3)
    first_pass = iter(prefetcher)
    take(first_pass, 2)
    second_pass = iter(prefetcher)  # closes the first pass, which had 3 batches ahead
    with pytest.raises(StopIteration):
        next(first_pass)
    assert_same_batches(take(second_pass, 3), expected)
    del first_pass
    assert same_state(prefetcher.state_dict(), expected_state)
    del second_pass
    assert same_state(loader.state_dict(), expected_state)
    del first, second


def test_breaking_out_ends_the_native_threads(files: tuple[Path, Path]) -> None:
    assert wait_for_native_threads(0) == 0
    for _ in cpu_prefetcher(make_loader("token", files), depth=2):
        break
    assert wait_for_native_threads(0) == 0


# --------------------------------------------------------------------------- CUDA

#: GPU clock cycles of torch.cuda._sleep used to make a stream slow (tens of ms).
SLOW = 50_000_000


def cuda_loader(kind: str, files: tuple[Path, Path], **kwargs: Any) -> arrowloader.DataLoader:
    return make_loader(kind, files, pin_memory=True, **kwargs)


def on_cpu(batch: Batch) -> Batch:
    return {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}




@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_native_outputs_are_pinned(files: tuple[Path, Path], kind: str) -> None:
    batches = list(cuda_loader(kind, files))
    assert batches
    for batch in batches:
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                assert value.is_pinned()


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [1, 3])
def test_device_batches_equal_the_cpu_batches_bit_for_bit(
    files: tuple[Path, Path], kind: str, depth: int
) -> None:
    expected = list(make_loader(kind, files))  # pageable, on the CPU
    prefetcher = CUDAPrefetcher(cuda_loader(kind, files), device="cuda", depth=depth)
    got = []
    for batch in prefetcher:
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                assert value.device.type == "cuda"
        got.append(on_cpu(batch))
    assert_same_batches(got, expected)


class SlowCopies:
    """Wraps a loader so that, before each batch comes out of it (and so before the
    prefetcher queues its copies), the prefetcher's copy stream is made to sleep: the
    copies then run long after the host moved on."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.prefetcher: Any = None

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            with torch.cuda.stream(self.prefetcher._stream):
                torch.cuda._sleep(SLOW)
            yield batch


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_consumer_stream_waits_for_slow_copies(files: tuple[Path, Path], kind: str) -> None:
    # Read at once on the consumer's stream: without the wait on the copy event this would
    # read device memory the delayed copies have not written yet. Dropping each host batch
    # at once while its copy waits also checks that pinned blocks are not reused early (the
    # loader assembles the next batches meanwhile).
    expected = list(make_loader(kind, files))
    slow = SlowCopies(cuda_loader(kind, files))
    prefetcher = CUDAPrefetcher(slow, device="cuda", depth=2)
    slow.prefetcher = prefetcher
    got = [on_cpu(batch) for batch in prefetcher]
    assert_same_batches(got, expected)
    torch.cuda.synchronize()
    metrics = prefetcher.metrics()
    assert metrics.copies_pending == 0 and metrics.batches == len(expected)
    assert metrics.device_wait_seconds > 0  # the consumer's stream did wait for copies


@pytest.mark.cuda
@pytest.mark.parametrize("kind", KINDS)
def test_slow_consumer_reads_uncorrupted_batches(files: tuple[Path, Path], kind: str) -> None:
    # The consumer's stream is kept busy before each use of a batch, and the batch is
    # dropped by the host at once: record_stream must keep its device memory from the next
    # copies (which are not delayed) until the consumer's stream has read it.
    expected = list(make_loader(kind, files))
    sums: list[dict[str, torch.Tensor]] = []
    for batch in CUDAPrefetcher(cuda_loader(kind, files), device="cuda", depth=3):
        torch.cuda._sleep(SLOW)
        sums.append(
            {k: v.to(torch.int64).sum() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        )
        del batch
    torch.cuda.synchronize()
    assert len(sums) == len(expected)
    for got, batch in zip(sums, expected):
        for key, value in got.items():
            assert int(value) == int(batch[key].to(torch.int64).sum()), key


@pytest.mark.cuda
def test_batches_on_a_side_compute_stream_and_metrics(files: tuple[Path, Path]) -> None:
    expected = list(make_loader("packed", files))
    compute = torch.cuda.Stream()
    with torch.cuda.stream(compute):
        prefetcher = CUDAPrefetcher(cuda_loader("packed", files), device="cuda", depth=2)
        got = [on_cpu(batch) for batch in prefetcher]
    assert_same_batches(got, expected)
    torch.cuda.synchronize()
    metrics = prefetcher.metrics()
    copied = sum(
        v.nbytes for b in expected for v in b.values() if isinstance(v, torch.Tensor)
    )
    assert metrics.bytes == metrics.timed_bytes == copied
    assert metrics.copy_gbps is not None and metrics.copy_gbps > 0


@pytest.mark.cuda
def test_loader_to_cuda_pins_and_copies(files: tuple[Path, Path]) -> None:
    loader = make_loader("token", files)
    prefetcher = loader.to("cuda")
    assert loader.pin_memory and prefetcher.copies
    got = [on_cpu(batch) for batch in prefetcher]
    assert_same_batches(got, list(make_loader("token", files)))


@pytest.mark.cuda
def test_pageable_batches_are_copied_correctly_and_warn_once() -> None:
    batches = [{"x": torch.arange(1000) * i} for i in range(4)]
    with pytest.warns(UserWarning, match="not in pinned memory") as caught:
        got = [on_cpu(b) for b in CUDAPrefetcher(batches, device="cuda")]
    assert len([w for w in caught if "pinned" in str(w.message)]) == 1
    assert_same_batches(got, batches)



def test_a_pass_knows_its_length_where_the_loaders_pass_does() -> None:
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=3)
    it = iter(CUDAPrefetcher(loader, device="cpu"))
    assert len(it) == 4 == len(list(it))
    endless = iter(CUDAPrefetcher((x for x in range(3)), device="cpu"))
    with pytest.raises(TypeError, match="has no len"):
        len(endless)
