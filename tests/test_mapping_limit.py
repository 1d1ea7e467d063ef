"""The mapping limit (mapping_limit.py): a corpus of more files than vm.max_map_count
leaves room for is refused before any file is opened, with the sysctl, the numbers and
the fixes; the limit is read through one small function the tests patch (no 60,000
files needed). The count it relies on, one mapping per mapped file, is checked against
the process's own /proc/self/maps."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable

import arrowloader
import pyarrow as pa
import pytest
from arrowloader import CorpusFileError, mapping_limit
from conftest import write_tokens

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux's /proc")

IN_USE = 1000


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shards")
    for k in range(10):
        write_tokens(folder / f"part-{k:02d}.arrow", [[k, k + 1], [k + 2]], num_batches=2)
    return folder


def limit_with_room_for(monkeypatch: pytest.MonkeyPatch, files: int) -> int:
    """Makes the process look as if it held IN_USE mappings under a limit that leaves
    room for ``files`` more beside the headroom; returns that limit."""
    limit = IN_USE + mapping_limit.HEADROOM + files
    monkeypatch.setattr(mapping_limit, "max_map_count", lambda: limit)
    monkeypatch.setattr(mapping_limit, "mappings_in_use", lambda: IN_USE)
    return limit


def test_a_corpus_of_more_files_than_the_limit_allows_is_refused_before_any_open(
    shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit = limit_with_room_for(monkeypatch, 9)
    opened = []
    monkeypatch.setattr(arrowloader.corpus, "open_shard",
                        lambda *args, **kwargs: opened.append(args))
    with pytest.raises(CorpusFileError) as info:
        arrowloader.Corpus(shards)
    assert opened == []  # refused before the first file
    message = str(info.value)
    free = limit - IN_USE
    for words in (f"{shards}: the corpus has 10 files to memory-map, one mapping each",
                  f"may hold {limit:,} mappings (vm.max_map_count)",
                  f"already holds {IN_USE:,}: {free:,} are free",
                  f"plus {mapping_limit.HEADROOM:,} kept",
                  "sudo sysctl -w vm.max_map_count=262144", "/etc/sysctl.d/",
                  "arrowloader prepare --shard-size", "mmap=False"):
        assert words in message, (words, message)


def test_room_for_every_file_opens(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limit_with_room_for(monkeypatch, 10)
    assert arrowloader.Corpus(shards).num_rows == 20


@pytest.mark.parametrize("make", [
    lambda s: arrowloader.TokenDataset(s),
    lambda s: arrowloader.PackedDataset(s, seq_len=2, eos_token_id=0),
    lambda s: arrowloader.TokenDataset(sorted(s.iterdir())),
    lambda s: arrowloader.TokenDataset(str(s / "*.arrow")),
], ids=["token", "packed", "list", "glob"])
def test_every_dataset_and_source_is_checked(
    shards: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[Path], Any]
) -> None:
    limit_with_room_for(monkeypatch, 3)
    with pytest.raises(CorpusFileError, match=r"vm\.max_map_count"):
        make(shards)


def test_what_maps_nothing_is_not_counted(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mmap=False reads the files into memory; bytes in memory are no file at all."""
    limit_with_room_for(monkeypatch, 0)
    assert arrowloader.Corpus(shards, mmap=False).num_rows == 20
    data = (shards / "part-00.arrow").read_bytes()
    assert arrowloader.Corpus(pa.py_buffer(data)).num_rows == 2


def test_no_limit_known_means_no_check(shards: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping_limit, "max_map_count", lambda: None)
    monkeypatch.setattr(mapping_limit, "mappings_in_use", lambda: 10**9)
    assert arrowloader.Corpus(shards).num_rows == 20


def test_the_suggested_limit_leaves_room_twice_over() -> None:
    assert mapping_limit.suggested_limit(1) == 262_144
    assert mapping_limit.suggested_limit(200_000) == 524_288
    assert mapping_limit.suggested_limit(300_000) == 1_048_576


def test_the_readings_are_the_systems(shards: Path) -> None:
    """The limit is /proc/sys/vm/max_map_count's; the count in use is /proc/self/maps's
    lines, and a mapped corpus adds exactly one line per file, naming the file (with
    random-read advice on the mappings too, which could split them)."""
    assert mapping_limit.max_map_count() == int(Path("/proc/sys/vm/max_map_count").read_text())
    for prefetch_pages in (False, True):
        ds = arrowloader.PackedDataset(shards, seq_len=2, eos_token_id=0,
                                       prefetch_pages=prefetch_pages)
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
        assert mapping_limit.mappings_in_use() in range(len(lines) - 8, len(lines) + 8)
        for path in sorted(shards.iterdir()):
            named = [line for line in lines if line.endswith(" " + os.fspath(path.resolve()))]
            assert len(named) == 1, (path, named)
        del ds


def test_unreadable_proc_reads_as_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(mapping_limit, "MAX_MAP_COUNT", tmp_path / "absent")
    monkeypatch.setattr(mapping_limit, "SELF_MAPS", tmp_path / "absent")
    assert mapping_limit.max_map_count() is None and mapping_limit.mappings_in_use() is None
    (tmp_path / "garbled").write_text("many\n")
    monkeypatch.setattr(mapping_limit, "MAX_MAP_COUNT", tmp_path / "garbled")
    assert mapping_limit.max_map_count() is None


def test_a_real_limit_has_room_for_a_small_corpus() -> None:
    """Nothing patched: this process and these files are far from the limit."""
    limit, in_use = mapping_limit.max_map_count(), mapping_limit.mappings_in_use()
    assert limit is not None and in_use is not None and in_use < limit
    mapping_limit.check_room_for_mappings(10, "ten files")


def test_sixty_thousand_shards_under_the_default_limit_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's case, counted without the files: Linux's default limit, this
    process's real mappings, ~60,000 shards (as many as leave fewer than the headroom)."""
    monkeypatch.setattr(mapping_limit, "max_map_count", lambda: 65_530)
    in_use = mapping_limit.mappings_in_use()
    assert in_use is not None
    too_many = 65_530 - in_use - mapping_limit.HEADROOM + 16  # (a few may come and go)
    assert 50_000 < too_many < 65_530
    with pytest.raises(CorpusFileError, match=rf"has {too_many:,} files to memory-map.*65,530 "
                                              r"mappings \(vm\.max_map_count\)"):
        mapping_limit.check_room_for_mappings(too_many, "web/")
    mapping_limit.check_room_for_mappings(20_000, "web/")  # what fits is not refused
