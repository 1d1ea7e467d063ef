"""Corpora in object storage, against a real S3 server on loopback (tests/s3_server.py):
every kind of source, the shard cache (atomic, verified, shared by processes, bounded),
and the faults (store unreachable, connections cut, outages, objects replaced or
deleted, refused credentials, a missing bucket, a full disk).

The oracle: the same corpus opened from local disk gives the same batches."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import arrowloader
import numpy as np
import pyarrow.fs as pafs
import pytest
import torch
from arrowloader import shard_cache
from arrowloader.errors import CorpusChangedError, CorpusFileError
from arrowloader.object_store import is_remote, resolve_remote
from arrowloader.shard_cache import RetryPolicy, ShardCache, fetch_remote, parse_size
from conftest import assert_batches_equal, write_corpus
from s3_server import FaultyProxy, S3Server

#: Quick retries: the fault tests need seconds, not minutes.
FAST = {"retries": 4, "retry_delay": 0.05, "retry_max_delay": 0.2}


def upload(fs: pafs.FileSystem, local: Path, prefix: str) -> list[str]:
    """Uploads every file under ``local`` to ``prefix`` (``bucket/key``); returns the
    object paths, sorted."""
    paths = []
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        target = f"{prefix}/{path.relative_to(local).as_posix()}"
        put(fs, target, path.read_bytes())
        paths.append(target)
    return paths


def put(fs: pafs.FileSystem, target: str, data: bytes) -> None:
    """Writes one object (the tests' own writes are retried as a store's client would)."""
    RetryPolicy(attempts=5, first_delay=0.2).run(target, "upload", lambda: _put(fs, target, data))


def _put(fs: pafs.FileSystem, target: str, data: bytes) -> None:
    with fs.open_output_stream(target) as out:
        out.write(data)


@pytest.fixture
def remote_corpus(s3_server: S3Server, tmp_path: Path) -> dict[str, Any]:
    """Four small shards written locally and uploaded under ``s3://BUCKET/corpus``."""
    local = tmp_path / "local"
    local.mkdir()
    write_corpus(local, np.random.default_rng(3), docs_per_file=(13, 5, 17, 7))
    fs = s3_server.filesystem()
    bucket = s3_server.new_bucket()
    upload(fs, local, f"{bucket}/corpus")
    return {"local": local, "bucket": bucket, "url": f"s3://{bucket}/corpus/", "fs": fs}


def batches(ds: Any, epochs: int = 2, **kwargs: Any) -> list[dict]:
    loader = arrowloader.DataLoader(
        ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(7), **kwargs
    )
    out = []
    for _ in range(epochs):
        out.extend({k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
                   for b in loader)
    return out


def test_urls_are_told_from_paths() -> None:
    assert is_remote("s3://bucket/key") and is_remote(["a.arrow", "s3://b/k"])
    assert not is_remote("/data/corpus") and not is_remote("file:///data/x.arrow")
    assert not is_remote("C://x")  # a one-letter scheme is a drive letter


@pytest.mark.parametrize(
    ("text", "size"),
    [("200GB", 200 * 10**9), ("1.5TiB", int(1.5 * 2**40)), ("64M", 64 << 20), ("4096", 4096),
     (123, 123), (None, None)],
)
def test_cache_limit_sizes(text: Any, size: Any) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", -1, True])
def test_cache_limit_rejects_non_sizes(bad: Any) -> None:
    with pytest.raises(ValueError, match="cache_limit"):
        parse_size(bad)


def test_packed_dataset_from_a_prefix_equals_local(
    remote_corpus: dict, s3_env: S3Server, tmp_path: Path
) -> None:
    """Credentials and endpoint from the environment, as a user's AWS settings give them."""
    remote = arrowloader.PackedDataset(remote_corpus["url"], seq_len=8, eos_token_id=0,
                                       cache_dir=tmp_path / "cache")
    local = arrowloader.PackedDataset(str(remote_corpus["local"]), seq_len=8, eos_token_id=0)
    assert [f.path.name for f in remote.corpus.files] == [
        f.path.name for f in local.corpus.files]
    assert remote.fingerprint() == local.fingerprint()  # a state resumes across the two
    assert_batches_equal(batches(remote), batches(local))
    stats = remote.corpus.remote.stats
    assert (stats.downloaded, stats.reused) == (4, 0)
    assert stats.bytes_downloaded == sum(p.stat().st_size for p in remote_corpus["local"].iterdir())
    # The windowed shuffle too: the same batches whether the corpus is local or remote.
    windowed = [arrowloader.PackedDataset(source, seq_len=8, eos_token_id=0,
                                          shuffle_window_shards=2, cache_dir=tmp_path / "cache")
                for source in (remote_corpus["url"], str(remote_corpus["local"]))]
    assert windowed[0].corpus.remote.stats.reused == 4
    assert_batches_equal(batches(windowed[0]), batches(windowed[1]))


def test_mixed_dataset_over_a_remote_and_a_local_dataset(
    remote_corpus: dict, tmp_path: Path
) -> None:
    """A remote dataset beside a local one mixes as two local ones do."""
    def packed(source: str, **extra: Any) -> arrowloader.PackedDataset:
        return arrowloader.PackedDataset(source, seq_len=8, eos_token_id=0, **extra)

    local = str(remote_corpus["local"])
    mixed = arrowloader.MixedDataset(
        {"web": packed(remote_corpus["url"], cache_dir=tmp_path / "cache",
                       filesystem=remote_corpus["fs"]),
         "books": packed(local, seed=3)},
        weights={"web": 0.7, "books": 0.3},
    )
    oracle = arrowloader.MixedDataset({"web": packed(local), "books": packed(local, seed=3)},
                                      weights={"web": 0.7, "books": 0.3})
    assert_batches_equal(batches(mixed, epochs=1), batches(oracle, epochs=1))


def test_token_dataset_from_a_glob_and_a_list(remote_corpus: dict, tmp_path: Path) -> None:
    fs, bucket = remote_corpus["fs"], remote_corpus["bucket"]
    local_files = sorted(remote_corpus["local"].iterdir())
    picked = [local_files[2], local_files[0]]
    from_list = arrowloader.TokenDataset(
        [f"s3://{bucket}/corpus/{p.name}" for p in picked], label_column="label",
        cache_dir=tmp_path / "cache", filesystem=fs,
    )
    local_list = arrowloader.TokenDataset([str(p) for p in picked], label_column="label")
    assert_batches_equal(batches(from_list, epochs=1), batches(local_list, epochs=1))
    from_glob = arrowloader.TokenDataset(f"s3://{bucket}/corpus/shard-[13].arrow",
                                         cache_dir=tmp_path / "cache", filesystem=fs)
    assert [f.path.name for f in from_glob.corpus.files] == ["shard-1.arrow", "shard-3.arrow"]
    local_glob = arrowloader.TokenDataset(str(remote_corpus["local"] / "shard-[13].arrow"))
    assert_batches_equal(batches(from_glob, epochs=1), batches(local_glob, epochs=1))


def test_storage_options_name_the_server(remote_corpus: dict, s3_server: S3Server,
                                         tmp_path: Path) -> None:
    from s3_server import ACCESS_KEY, REGION, SECRET_KEY

    ds = arrowloader.TokenDataset(remote_corpus["url"], cache_dir=tmp_path / "cache",
                                  storage_options={
                                      "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
                                      "region": REGION,
                                      "endpoint_url": f"http://{s3_server.endpoint}"})
    assert len(ds) == 13 + 5 + 17 + 7


def test_fsspec_filesystem_is_taken(remote_corpus: dict, tmp_path: Path) -> None:
    """An fsspec file system (its local one here, over a folder laid out as the store)."""
    fsspec = pytest.importorskip("fsspec")
    from fsspec.implementations.dirfs import DirFileSystem

    store = tmp_path / "store"
    (store / "bkt").mkdir(parents=True)
    for path in remote_corpus["local"].iterdir():
        (store / "bkt" / path.name).write_bytes(path.read_bytes())
    wrapped = DirFileSystem(str(store), fsspec.filesystem("file"))
    ds = arrowloader.TokenDataset("memory://bkt/", cache_dir=tmp_path / "cache",
                                  filesystem=wrapped)
    local = arrowloader.TokenDataset(str(remote_corpus["local"]))
    assert_batches_equal(batches(ds, epochs=1), batches(local, epochs=1))


def test_prepared_folder_with_manifest_and_cli(
    prepared: Path, s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A prepared corpus uploaded to a prefix: shards in manifest order, each checked
    against the manifest's SHA-256 on download; inspect and validate read it."""
    from arrowloader.cli import main

    monkeypatch.setenv("ARROWLOADER_CACHE", str(tmp_path / "cache"))
    fs = s3_env.filesystem()
    bucket = s3_env.new_bucket()
    upload(fs, prepared, f"{bucket}/prepared")
    url = f"s3://{bucket}/prepared"
    remote = arrowloader.PackedDataset(url, seq_len=16)
    local = arrowloader.PackedDataset(str(prepared), seq_len=16)
    assert remote.corpus.manifest is not None
    assert remote.corpus.manifest.to_json() == local.corpus.manifest.to_json()
    assert_batches_equal(batches(remote, epochs=1), batches(local, epochs=1))
    capsys.readouterr()
    assert main(["inspect", url, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == local.corpus.num_rows and report["source"] == url
    assert main(["validate", url]) == 0
    capsys.readouterr()

    # An object replaced after the corpus was prepared, at its old size: only the
    # manifest's hash tells, and the download refuses it (and keeps no copy). (The cache
    # above still holds a copy that matches the manifest: a fresh cache is needed.)
    monkeypatch.setenv("ARROWLOADER_CACHE", str(tmp_path / "cache2"))
    entry = remote.corpus.manifest.shards[1]
    data = bytearray(fs.open_input_stream(f"{bucket}/prepared/{entry.file}").read())
    data[-20] ^= 0xFF
    put(fs, f"{bucket}/prepared/{entry.file}", bytes(data))
    with pytest.raises(CorpusChangedError, match="SHA-256") as caught:
        arrowloader.PackedDataset(url, seq_len=16)
    assert entry.file in str(caught.value)
    assert not list((tmp_path / "cache2").rglob("*.part"))
    assert not list((tmp_path / "cache2").rglob(entry.file))


def test_prepare_writes_to_a_prefix(s3_env: S3Server, tmp_path: Path, bpe_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from arrowloader.cli import main
    from text_corpus import write_jsonl

    monkeypatch.setenv("ARROWLOADER_CACHE", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"line {i} of the corpus"} for i in range(50)])
    bucket = s3_env.new_bucket()
    url = f"s3://{bucket}/out"
    assert main(["prepare", str(tmp_path / "in.jsonl"), "--tokenizer", str(bpe_path),
                 "--output", url, "--quiet", "--staging", str(tmp_path / "staged")]) == 0
    listed = sorted(info.base_name for info in s3_env.filesystem().get_file_info(
        pafs.FileSelector(f"{bucket}/out")))
    staged = sorted(p.name for p in (tmp_path / "staged").iterdir() if not p.name.startswith("."))
    assert listed == staged and "manifest.json" in listed
    ds = arrowloader.TokenDataset(url)
    assert len(ds) == 50


def test_save_to_disk_folder(s3_server: S3Server, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    docs = [[i, i + 1, i + 2][: 1 + i % 3] for i in range(40)]
    datasets.Dataset.from_dict({"input_ids": docs}).save_to_disk(str(tmp_path / "hf"),
                                                                 max_shard_size="1KB")
    fs = s3_server.filesystem()
    bucket = s3_server.new_bucket()
    upload(fs, tmp_path / "hf", f"{bucket}/hf")
    ds = arrowloader.TokenDataset(f"s3://{bucket}/hf", cache_dir=tmp_path / "cache",
                                  filesystem=fs)
    assert [ds[i]["input_ids"].tolist() for i in range(len(ds))] == docs


def test_rerun_reuses_verified_copies_and_replaces_broken_ones(
    remote_corpus: dict, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    first = fetch_remote(remote_corpus["url"], cache_dir=cache, filesystem=remote_corpus["fs"])
    assert first.stats.downloaded == 4
    again = fetch_remote(remote_corpus["url"], cache_dir=cache, filesystem=remote_corpus["fs"])
    assert (again.stats.downloaded, again.stats.reused) == (0, 4)
    # What a crash leaves: a temporary file, and a copy whose sidecar was never written.
    broken = first.local_files[1]
    leftover = broken.with_name(f".{broken.name}.999.dead.part")
    leftover.write_bytes(b"partial")
    broken.with_name(f".{broken.name}.cache.json").unlink()
    broken.write_bytes(b"garbage")
    third = fetch_remote(remote_corpus["url"], cache_dir=cache, filesystem=remote_corpus["fs"])
    assert (third.stats.downloaded, third.stats.reused) == (1, 3)
    assert not leftover.exists()  # a crashed download's temporary file is cleared
    assert broken.read_bytes() == (remote_corpus["local"] / broken.name).read_bytes()


def _fetch_in_process(args: tuple) -> tuple[int, int]:
    endpoint, url, cache = args
    fs = S3Server(endpoint, Path(cache)).filesystem()
    got = fetch_remote(url, cache_dir=cache, filesystem=fs)
    return got.stats.downloaded, got.stats.reused


def test_local_ranks_share_one_cache_and_download_each_shard_once(
    remote_corpus: dict, s3_server: S3Server, tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        counts = pool.map(_fetch_in_process, [(s3_server.endpoint, remote_corpus["url"], cache)]
                          * 3)
    assert sum(d for d, _ in counts) == 4, counts
    assert sum(r for _, r in counts) == 8, counts


def test_cache_limit_refuses_a_corpus_too_large_and_evicts_others(
    remote_corpus: dict, tmp_path: Path
) -> None:
    cache, fs, url = tmp_path / "cache", remote_corpus["fs"], remote_corpus["url"]
    sizes = {p.name: p.stat().st_size for p in remote_corpus["local"].iterdir()}
    total = sum(sizes.values())
    with pytest.raises(CorpusFileError, match="more than cache_limit") as caught:
        fetch_remote(url, cache_dir=cache, cache_limit=total - 1, filesystem=fs)
    assert url.rstrip("/") in str(caught.value)
    assert not any(p.is_file() and p.suffix == ".arrow" for p in cache.rglob("*"))
    # Two corpora that do not fit together: the second evicts the first's copies.
    bucket = remote_corpus["bucket"]
    first = fetch_remote(f"s3://{bucket}/corpus/shard-[01].arrow", cache_dir=cache,
                         cache_limit=total, filesystem=fs)
    limit = sizes["shard-2.arrow"] + sizes["shard-3.arrow"] + sizes["shard-1.arrow"]
    second = fetch_remote(f"s3://{bucket}/corpus/shard-[23].arrow", cache_dir=cache,
                          cache_limit=limit, filesystem=fs)
    held = [p for p in cache.rglob("*.arrow")]
    assert sum(p.stat().st_size for p in held) <= limit
    assert second.stats.evicted >= 1
    assert all(p.is_file() for p in second.local_files)
    assert not all(p.is_file() for p in first.local_files)


# -- faults --------------------------------------------------------------------------


def test_store_unreachable_at_start(tmp_path: Path) -> None:
    from s3_server import free_port

    endpoint = f"127.0.0.1:{free_port()}"  # nothing listens there
    fs = S3Server(endpoint, tmp_path).filesystem()
    with pytest.raises(CorpusFileError, match="after 5 attempts") as caught:
        fetch_remote("s3://bucket/corpus/", cache_dir=tmp_path / "cache", filesystem=fs,
                     storage_options=FAST)
    assert "s3://bucket/corpus" in str(caught.value)


def test_connections_cut_mid_download_are_retried(
    remote_corpus: dict, s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """Responses cut after 100 bytes, three times: the downloads retry and the data is the
    local corpus's, byte for byte; so are the batches."""
    faulty_proxy.drop_after, faulty_proxy.drops = 100, 3
    fs = s3_server.filesystem(faulty_proxy.endpoint)
    ds = arrowloader.PackedDataset(remote_corpus["url"], seq_len=8, eos_token_id=0,
                                   cache_dir=tmp_path / "cache", filesystem=fs,
                                   storage_options=FAST)
    assert faulty_proxy.dropped == 3
    for copy in ds.corpus.remote.local_files:
        assert copy.read_bytes() == (remote_corpus["local"] / copy.name).read_bytes()
    local = arrowloader.PackedDataset(str(remote_corpus["local"]), seq_len=8, eos_token_id=0)
    assert_batches_equal(batches(ds), batches(local))
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_an_outage_beyond_the_retries_names_the_url(
    remote_corpus: dict, s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    faulty_proxy.drop_after, faulty_proxy.drops = 10, 10**6  # every response cut
    fs = s3_server.filesystem(faulty_proxy.endpoint)
    with pytest.raises(CorpusFileError, match="attempts; last error") as caught:
        fetch_remote(remote_corpus["url"], cache_dir=tmp_path / "cache", filesystem=fs,
                     storage_options=FAST)
    assert remote_corpus["bucket"] in str(caught.value)
    assert not list((tmp_path / "cache").rglob("*.part"))


def test_a_store_down_mid_run_does_not_disturb_the_epoch(
    remote_corpus: dict, s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """The store goes away after the open (every connection refused): the epochs after
    read the local copies and give exactly the batches of an undisturbed run."""
    fs = s3_server.filesystem(faulty_proxy.endpoint)
    ds = arrowloader.PackedDataset(remote_corpus["url"], seq_len=8, eos_token_id=0,
                                   cache_dir=tmp_path / "cache", filesystem=fs)
    loader = arrowloader.DataLoader(ds, batch_size=4, shuffle=True,
                                    generator=torch.Generator().manual_seed(7))
    got = [next(iter(loader))]
    faulty_proxy.refuse = True
    got = [dict(b) for b in loader] + [dict(b) for b in loader]
    local = arrowloader.PackedDataset(str(remote_corpus["local"]), seq_len=8, eos_token_id=0)
    expected = batches(local)
    assert_batches_equal(got, expected)


def test_an_object_replaced_or_deleted_during_a_run(
    remote_corpus: dict, tmp_path: Path
) -> None:
    fs, bucket = remote_corpus["fs"], remote_corpus["bucket"]
    ds = arrowloader.TokenDataset(remote_corpus["url"], cache_dir=tmp_path / "cache",
                                  filesystem=fs)
    loader = arrowloader.DataLoader(ds, batch_size=4)
    assert len(list(loader)) > 0
    other = (remote_corpus["local"] / "shard-0.arrow").read_bytes()
    put(fs, f"{bucket}/corpus/shard-2.arrow", other)
    with pytest.raises(CorpusChangedError, match=r"shard-2\.arrow: replaced"):
        list(loader)  # the next epoch checks the store first
    fs.delete_file(f"{bucket}/corpus/shard-1.arrow")
    with pytest.raises(CorpusChangedError, match=r"shard-1\.arrow: the object was deleted"):
        ds.check_files()


def test_an_object_replaced_during_its_download(
    remote_corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, bucket = remote_corpus["fs"], remote_corpus["bucket"]
    listed = resolve_remote(remote_corpus["url"], fs)
    real = ShardCache._download_stream

    def replace_then_download(fs_: Any, obj: Any, fd: int, temporary: Path) -> None:
        if obj.path.endswith("shard-2.arrow"):
            with fs.open_output_stream(obj.path) as out:
                out.write(b"x" * (obj.size + 1))
        real(fs_, obj, fd, temporary)

    monkeypatch.setattr(ShardCache, "_download_stream", staticmethod(replace_then_download))
    cache = ShardCache(tmp_path / "cache", retry=RetryPolicy(**_fast_policy()))
    with pytest.raises(CorpusChangedError, match=r"shard-2\.arrow: the object was replaced"):
        cache.fetch(listed)
    assert not (tmp_path / "cache" / "s3" / bucket / "corpus" / "shard-2.arrow").exists()
    assert not list((tmp_path / "cache").rglob("*.part"))


def _fast_policy() -> dict:
    return {"attempts": 3, "first_delay": 0.01, "max_delay": 0.05}


def test_wrong_credentials(remote_corpus: dict, s3_server: S3Server, tmp_path: Path) -> None:
    fs = s3_server.filesystem(secret_key="not-the-secret")
    with pytest.raises(CorpusFileError, match="refused the credentials") as caught:
        fetch_remote(remote_corpus["url"], cache_dir=tmp_path / "cache", filesystem=fs,
                     storage_options=FAST)
    assert remote_corpus["bucket"] in str(caught.value)
    assert "after" not in str(caught.value)  # not retried: retrying cannot fix it


def test_missing_bucket_and_missing_prefix(s3_server: S3Server, tmp_path: Path) -> None:
    fs = s3_server.filesystem()
    with pytest.raises(CorpusFileError, match="the bucket 'no-such-bucket-here' does not exist"):
        fetch_remote("s3://no-such-bucket-here/corpus/", cache_dir=tmp_path / "cache",
                     filesystem=fs, storage_options=FAST)
    bucket = s3_server.new_bucket()
    with pytest.raises(CorpusFileError, match="no such object or prefix"):
        fetch_remote(f"s3://{bucket}/nothing/", cache_dir=tmp_path / "cache", filesystem=fs,
                     storage_options=FAST)


def test_disk_full_in_the_cache_folder(
    remote_corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills during a download (ENOSPC from the write): the error names the
    cache folder and the file, is not retried, and leaves no partial file."""
    calls = []

    def full(fd: int, data: Any, *rest: Any) -> int:
        calls.append(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shard_cache.os, "write", full)
    cache = tmp_path / "cache"
    with pytest.raises(CorpusFileError, match="No space left on device") as caught:
        fetch_remote(remote_corpus["url"], cache_dir=cache, filesystem=remote_corpus["fs"],
                     storage_options=FAST)
    assert str(cache) in str(caught.value) and "shard-0.arrow" in str(caught.value)
    assert len(calls) <= shard_cache.OBJECT_THREADS  # one write per object begun: no retry
    assert not [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".part", ".arrow")]


def test_server_restarted_mid_download(
    remote_corpus: dict, s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """The real server stops and starts again while the corpus downloads (slowed by the
    proxy): the requests that fail are retried with backoff until it is back, and the
    epoch gives exactly the batches of the local corpus."""
    import threading
    import time

    faulty_proxy.delay = 0.25  # every response chunk held back: the download takes seconds
    fs = s3_server.filesystem(faulty_proxy.endpoint)
    outcome: dict[str, Any] = {}

    def open_remote() -> None:
        try:
            outcome["ds"] = arrowloader.PackedDataset(
                remote_corpus["url"], seq_len=8, eos_token_id=0, cache_dir=tmp_path / "cache",
                filesystem=fs,
                storage_options={"retries": 60, "retry_delay": 0.5, "retry_max_delay": 2.0})
        except Exception as exc:  # handed to the test thread
            outcome["error"] = exc

    opener = threading.Thread(target=open_remote)
    opener.start()
    time.sleep(0.6)
    assert opener.is_alive()  # still downloading when the server goes
    s3_server.restart()
    faulty_proxy.delay = 0.0
    opener.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    ds = outcome["ds"]
    local = arrowloader.PackedDataset(str(remote_corpus["local"]), seq_len=8, eos_token_id=0)
    assert_batches_equal(batches(ds), batches(local))
    assert ds.corpus.remote.stats.downloaded == 4


# -- bad arguments (no server needed) ---------------------------------------------------


def test_a_list_mixing_urls_and_paths_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusFileError, match="mixes URLs with local paths"):
        fetch_remote(["s3://bucket/a.arrow", str(tmp_path / "b.arrow")], cache_dir=tmp_path)


def test_a_url_without_a_bucket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CorpusFileError, match="names no bucket"):
        fetch_remote("s3:///key.arrow", cache_dir=tmp_path)


def test_a_filesystem_of_another_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"pyarrow\.fs\.FileSystem or an fsspec"):
        fetch_remote("s3://bucket/key.arrow", cache_dir=tmp_path, filesystem=object())


@pytest.mark.parametrize("retries", [-1, "3", 1.5])
def test_bad_retry_settings_are_refused(retries: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retries must be an int"):
        fetch_remote("s3://bucket/key.arrow", cache_dir=tmp_path,
                     storage_options={"retries": retries})


def test_bad_s3_options_name_the_url(tmp_path: Path) -> None:
    with pytest.raises(CorpusFileError, match="cannot make a client") as caught:
        fetch_remote("s3://bucket/key.arrow", cache_dir=tmp_path,
                     storage_options={"no_such_option": 1})
    assert "s3://bucket/key.arrow" in str(caught.value)


def test_a_malformed_cache_limit_fails_before_any_download(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_limit"):
        arrowloader.TokenDataset("s3://bucket/corpus/", cache_dir=tmp_path, cache_limit="big")


def test_requests_that_time_out_are_retried_then_named(
    remote_corpus: dict, s3_server: S3Server, faulty_proxy: FaultyProxy, tmp_path: Path
) -> None:
    """Responses held back past the client's request timeout: retried, then a
    CorpusFileError naming the URL and the timeout; nothing left in the cache."""
    faulty_proxy.delay = 4.0
    fs = s3_server.filesystem(faulty_proxy.endpoint, request_timeout=1, connect_timeout=1)
    with pytest.raises(CorpusFileError, match="after 2 attempts") as caught:
        fetch_remote(remote_corpus["url"], cache_dir=tmp_path / "cache", filesystem=fs,
                     storage_options={"retries": 1, "retry_delay": 0.05})
    assert remote_corpus["bucket"] in str(caught.value)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()
                and p.suffix in (".part", ".arrow")]
