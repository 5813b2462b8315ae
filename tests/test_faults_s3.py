"""Flaky S3 (issue 5, item 3): the tool talks to SeaweedFS through tests/flaky_proxy.py,
which drops connections, cuts or resets responses midway, answers 500 InternalError and
503 SlowDown, and stalls past the client's read timeout, at random (24 % of requests).

Every run must either finish (exit 0) through retries or exit 1 naming on stderr every file
it did not do; after each run the bucket, listed directly (not through the proxy), holds only
complete objects that decrypt and match their names; re-runs finish the job; restore and
verify through the same faults give back the source tree byte for byte. Short tests aim one
fault at one request (a download, a multipart upload) to pin each behaviour down.

The tool's own retry settings are kept (10 retries, botocore's backoff); only its timeouts
are made small, so that a stall costs seconds.
"""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from conftest import esb, put_file, temp_files, tree
from flaky_proxy import KINDS, FlakyProxy

CLIENT_TIMEOUT = 2.0              # seconds: the tool's connect and read timeouts here
STALL_SECONDS = CLIENT_TIMEOUT + 1.5
FLAKY = {"drop": 0.05, "cut": 0.05, "reset": 0.04, "error500": 0.04, "slowdown": 0.03,
         "stall": 0.03}                                         # 24 % of requests
MAX_RUNS = 5                      # runs of one action before we call it stuck
MIB = 1024 * 1024
FAILED = re.compile(r"\] FAILED (upload|mark deleted|undelete|expire|duplicate|restore|verify) "
                    r"(.+?): ")


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def short_timeouts(monkeypatch):
    """Every boto3 client the tool makes gets small timeouts, so a stall costs seconds,
    not the two minutes of its real read timeout. Its retry settings are left alone."""
    real_client = boto3.session.Session.client

    def client(self, *args, **kwargs):
        short = Config(connect_timeout=CLIENT_TIMEOUT, read_timeout=CLIENT_TIMEOUT)
        kwargs["config"] = kwargs["config"].merge(short) if kwargs.get("config") else short
        return real_client(self, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "client", client)


@pytest.fixture
def small_parts(monkeypatch):
    """Multipart uploads from 5 MiB (the S3 minimum part size) instead of 64 MiB."""
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MIB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MIB)


@pytest.fixture
def proxy(s3_bucket):
    with FlakyProxy(s3_bucket.endpoint_url, seed=20240601,
                    stall_seconds=STALL_SECONDS) as flaky:
        yield flaky


@pytest.fixture
def tool(make_tool, s3_bucket, proxy, short_timeouts, small_parts):
    """The tool with its S3 destination behind the proxy."""
    return make_tool(s3_bucket, endpoint_url=proxy.endpoint_url)


# ---------------------------------------------------------------------------- the source

def text(rng: random.Random, size: int) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b"backup", b"restore", b"\n"]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def make_tree(root: Path, seed: int = 7) -> None:
    """60 files: 53 small ones (empty to 200 kB, text and random), 4 of 1-3 MiB, and
    3 above 5 MiB of random bytes (their objects go up in several parts)."""
    rng = random.Random(seed)
    for i in range(53):
        size = rng.choice([0, 1, 100, 4096, 30_000, 120_000, 200_000])
        data = text(rng, size) if i % 2 else rng.randbytes(size)
        folder = ("", "docs/", "photos/2024/", "ü dir/")[i % 4]
        put_file(root / f"{folder}file {i:02d}.dat", data, 1_700_000_000 + i)
    for i, size in enumerate((1_200_000, 1_600_000, 2_100_000, 3_000_000)):
        put_file(root / f"medium/m{i}.bin", rng.randbytes(size), 1_700_100_000 + i)
    for i, size in enumerate((5 * MIB + 300_000, 6 * MIB + 123, 11 * MIB + 7)):
        put_file(root / f"big/b{i}.bin", rng.randbytes(size), 1_700_200_000 + i)


# ---------------------------------------------------------------------------- the bucket

class Bucket:
    """The destination bucket seen directly (never through the proxy)."""

    def __init__(self, bucket, codec):
        self.bucket, self.codec = bucket, codec
        self.checked: set[tuple[str, str]] = set()     # (key, ETag) already decrypted

    def listing(self) -> dict[str, str]:
        """{key: ETag} of every object."""
        return self.bucket.listing()

    def multipart_uploads(self) -> list[tuple[str, str]]:
        """(key, upload id) of every multipart upload still in progress."""
        answer = self.bucket.client.list_multipart_uploads(Bucket=self.bucket.name)
        return [(up["Key"], up["UploadId"]) for up in answer.get("Uploads", ())]

    def sound_names(self) -> list:
        """Every object's BackupName, after proving the object complete: it decrypts,
        authenticates, and matches the size and MD5 its name declares."""
        names = []
        for key, etag in sorted(self.listing().items()):
            name = esb.decode_name(key, self.codec)       # BadNameError: not a backup object
            if (key, etag) not in self.checked:
                body = self.bucket.client.get_object(Bucket=self.bucket.name, Key=key)["Body"]
                esb.decode(io.BytesIO(body.read()), name.size, name.md5, self.codec,
                           io.BytesIO())
                self.checked.add((key, etag))
            names.append(name)
        return names


def backed_up(names, source) -> set[str]:
    """Source paths whose live object matches the file now (size, mtime and MD5)."""
    return {n.path for n in names
            if n.deleted == 0 and n.path in source and source[n.path] == (n.size, n.mtime, n.md5)}


def failures(err: str, action: str = "") -> set[str]:
    """Paths named on stderr by ``FAILED <action> <path>: why`` lines."""
    return {m.group(2) for m in FAILED.finditer(err) if not action or m.group(1) == action}


def assert_one_line_errors(code: int, out: str, err: str) -> None:
    """Exit 0 or 1; no traceback; each failure one line, as many as the summary counts."""
    assert code in (0, 1), (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = [line for line in err.splitlines() if "FAILED" in line]
    assert all(FAILED.search(line) for line in lines), err
    assert f" {len(lines)} failed" in out, (out, err)
    assert (code == 0) == (not lines), (code, err)


# ---------------------------------------------------------------------------- the runs

def backup_until_done(tool, bucket: Bucket, gone: set[str] = frozenset()) -> int:
    """Back up again until a run exits 0; after every run check what is in the bucket.
    ``gone`` are deleted source files whose objects must end up marked deleted.
    Returns the number of runs it took."""
    source = tree(tool.src, "size+mtime+md5")
    for run in range(1, MAX_RUNS + 1):
        code, out, err = tool()
        assert_one_line_errors(code, out, err)
        names = bucket.sound_names()                 # nothing half-done under a final name
        not_done = set(source) - backed_up(names, source)
        not_done |= {n.path for n in names if n.path in gone and n.deleted == 0}
        named = failures(err)
        assert not_done <= named, f"run {run}: not done and not reported: {not_done - named}"
        assert named <= set(source) | gone, f"run {run}: unknown paths reported: {named}"
        if code == 0:
            assert bucket.multipart_uploads() == []
            return run
    pytest.fail(f"backup still failing after {MAX_RUNS} runs:\n{err}")


def restore_until_done(tool) -> int:
    """Restore, then restore only what failed, until a run exits 0; no run may leave a
    partial or temporary file. Returns the number of runs."""
    wanted = tree(tool.src)
    argv = ["--restore"]
    for run in range(1, MAX_RUNS + 1):
        code, out, err = tool(*argv)
        assert_one_line_errors(code, out, err)
        got = tree(tool.restore)
        assert temp_files(tool.restore) == [], got.keys()
        wrong = [p for p, data in got.items() if wanted.get(p) != data]
        assert not wrong, f"run {run}: restored files differ from the source: {wrong}"
        named = failures(err, "restore")
        assert set(wanted) - set(got) <= named, f"run {run}: missing, not reported"
        if code == 0:
            return run
        argv = ["--restore"] + [arg for path in sorted(named) for arg in ("--restore-only", path)]
    pytest.fail(f"restore still failing after {MAX_RUNS} runs:\n{err}")


def ok_lines(out: str) -> int:
    return sum(1 for line in out.splitlines() if "] OK " in line)


# ---------------------------------------------------------------------------- the tests

def first_matching(kind: str, method: bytes, target_part: bytes, times: int = 1):
    """A ``choose`` for the proxy: ``kind`` on the first ``times`` requests whose method is
    ``method`` and whose target contains ``target_part``; the dice for every other."""
    left = [times]

    def choose(request):
        if left[0] > 0 and request.method == method and target_part in request.target:
            left[0] -= 1
            return kind
        return None
    return choose


def test_backup_restore_verify_through_a_flaky_s3(tool, proxy, s3_bucket):
    bucket = Bucket(s3_bucket, tool.codec())
    make_tree(tool.src)
    proxy.set_rates(**FLAKY)

    # first backup, 2 worker processes
    backup_until_done(tool, bucket)

    # changes: 4 files rewritten (one of them big), 3 deleted, 2 new; 1 worker process
    tool.set(BACKUP_PROCESSES=1)
    for rel in ("docs/file 01.dat", "file 04.dat", "medium/m1.bin", "big/b0.bin"):
        data = (tool.src / rel).read_bytes()
        put_file(tool.src / rel, data[::-1] + b"changed", 1_710_000_000)
    gone = {"ü dir/file 03.dat", "photos/2024/file 06.dat", "medium/m3.bin"}
    for rel in gone:
        (tool.src / rel).unlink()
    put_file(tool.src / "new/one.txt", b"one\n" * 1000, 1_710_000_001)
    put_file(tool.src / "new/two.bin", os.urandom(70_000), 1_710_000_002)
    backup_until_done(tool, bucket, gone)
    names = bucket.sound_names()
    assert sorted(n.path for n in names) == sorted(set(tree(tool.src)) | gone)
    assert {n.path for n in names if n.deleted} == gone          # one object per path

    # restore and verify, faults still on (and surely one download reset midway)
    proxy.choose = first_matching("reset", b"GET", b"/big/b1.bin.")
    restore_until_done(tool)
    source = tree(tool.src, "size+mtime+md5")
    assert tree(tool.restore, "size+mtime+md5") == source     # bytes and mtimes

    code, out, err = tool("--verify")
    assert_one_line_errors(code, out, err)
    assert failures(err, "verify") <= set(source) | gone
    assert ok_lines(out) + len(failures(err, "verify")) == len(names)

    proxy.set_rates()                                           # a good day: all must pass
    code, out, err = tool("--verify")
    assert (code, err) == (0, "") and ok_lines(out) == len(names)

    counts = proxy.counts
    assert all(counts[kind] > 0 for kind in KINDS), counts
    assert proxy.injected > 0.15 * counts["requests"], counts


def small_tree(root: Path) -> None:
    """5 files, f2.txt and f3.txt of 2 MiB (a download of them is read in several pieces)."""
    for i in range(5):
        data = os.urandom(2 * MIB) if i in (2, 3) else b"%d\n" % i * 1000
        put_file(root / f"f{i}.txt", data, 1_700_000_000 + i)


def test_every_request_failing_is_one_line_and_changes_nothing(tool, proxy, s3_bucket):
    bucket = Bucket(s3_bucket, tool.codec())
    small_tree(tool.src)
    assert tool()[0] == 0
    before, requests_before = bucket.listing(), proxy.counts["requests"]
    put_file(tool.src / "f0.txt", b"changed", 1_700_009_999)
    put_file(tool.src / "new.txt", b"new", 1_700_009_999)
    (tool.src / "f1.txt").unlink()
    # connection faults only: a 500 costs a second round of retries, a SlowDown a minute
    proxy.set_rates(drop=0.5, cut=0.25, reset=0.25)
    code, out, err = tool()
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error: cannot reach" in lines[0], err
    assert bucket.listing() == before and bucket.multipart_uploads() == []
    counts = proxy.counts
    assert counts["requests"] - requests_before > 1, counts
    assert proxy.injected == counts["requests"] - requests_before, counts


@pytest.mark.parametrize("kind", ["cut", "reset", "stall"])
def test_a_download_broken_midway_is_one_failed_file(tool, proxy, s3_bucket, kind):
    small_tree(tool.src)
    assert tool()[0] == 0
    proxy.choose = first_matching(kind, b"GET", b"/f2.txt.")
    code, out, err = tool("--restore")
    assert code == 1 and failures(err) == {"f2.txt"} and "Traceback" not in err, err
    assert sorted(tree(tool.restore)) == ["f0.txt", "f1.txt", "f3.txt", "f4.txt"]
    assert tool("--restore", "--restore-only", "f2.txt")[0] == 0
    assert tree(tool.restore, "size+mtime+md5") == tree(tool.src, "size+mtime+md5")
    proxy.choose = first_matching(kind, b"GET", b"/f3.txt.")
    code, out, err = tool("--verify")
    assert code == 1 and failures(err) == {"f3.txt"} and ok_lines(out) == 4, err


def test_a_retried_create_multipart_upload_leaves_no_upload(tool, proxy, s3_bucket):
    put_file(tool.src / "big.bin", os.urandom(6 * MIB), 1_700_000_000)
    proxy.choose = first_matching("cut", b"POST", b"?uploads")
    code, out, err = tool()
    assert code == 0 and proxy.counts["cut"] == 1, err
    assert Bucket(s3_bucket, tool.codec()).multipart_uploads() == []


def test_a_retried_complete_multipart_upload(tool, proxy, s3_bucket):
    """The server completed the upload, the answer was lost: the object is whole, and the
    file is either counted as uploaded or reported, then found unchanged next run."""
    bucket = Bucket(s3_bucket, tool.codec())
    put_file(tool.src / "big.bin", os.urandom(6 * MIB), 1_700_000_000)
    proxy.choose = first_matching("cut", b"POST", b"?uploadId=")
    code, out, err = tool()
    assert_one_line_errors(code, out, err)
    assert failures(err) <= {"big.bin"} and proxy.counts["cut"] == 1
    assert [n.path for n in bucket.sound_names()] == ["big.bin"]
    code, out, err = tool()
    assert code == 0 and "1 unchanged" in out, err


# ---------------------------------------------------------------------------- the proxy itself

def direct_client(endpoint_url: str, bucket, timeout: float):
    """A boto3 client that tries each request once."""
    return boto3.client(
        "s3", endpoint_url=endpoint_url, aws_access_key_id=bucket.access_key,
        aws_secret_access_key=bucket.secret_key, region_name=bucket.region,
        config=Config(connect_timeout=timeout, read_timeout=timeout,
                      retries={"mode": "standard", "total_max_attempts": 1}))


def test_proxy_without_faults_is_transparent(proxy, s3_bucket):
    client = direct_client(proxy.endpoint_url, s3_bucket, 30)
    name = s3_bucket.name
    data = os.urandom(6 * MIB)
    client.put_object(Bucket=name, Key="a b/ü.bin", Body=io.BytesIO(data))   # Expect: 100
    assert client.get_object(Bucket=name, Key="a b/ü.bin")["Body"].read() == data
    assert client.head_object(Bucket=name, Key="a b/ü.bin")["ContentLength"] == len(data)
    upload = client.create_multipart_upload(Bucket=name, Key="multi")["UploadId"]
    parts = [{"PartNumber": n, "ETag": client.upload_part(
        Bucket=name, Key="multi", UploadId=upload, PartNumber=n,
        Body=data[(n - 1) * 5 * MIB:n * 5 * MIB])["ETag"]} for n in (1, 2)]
    client.complete_multipart_upload(Bucket=name, Key="multi", UploadId=upload,
                                     MultipartUpload={"Parts": parts})
    listed = client.list_objects_v2(Bucket=name)["Contents"]
    assert sorted(o["Key"] for o in listed) == ["a b/ü.bin", "multi"]
    assert s3_bucket.client.get_object(Bucket=name, Key="multi")["Body"].read() == data
    client.delete_object(Bucket=name, Key="multi")
    assert proxy.injected == 0 and proxy.counts["requests"] == 9


@pytest.mark.parametrize("kind,expected", [
    ("drop", BotoCoreError), ("cut", BotoCoreError), ("reset", BotoCoreError),
    ("error500", ClientError),
    ("slowdown", ClientError), ("stall", BotoCoreError)])
def test_proxy_injects_each_fault(s3_bucket, kind, expected):
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="k", Body=b"x" * 1000)
    with FlakyProxy(s3_bucket.endpoint_url, rates={kind: 1.0}, stall_seconds=1.5) as flaky:
        client = direct_client(flaky.endpoint_url, s3_bucket, 1)
        with pytest.raises(expected) as caught:
            client.get_object(Bucket=s3_bucket.name, Key="k")["Body"].read()
        assert flaky.counts[kind] == 1 == flaky.counts["requests"]
    if kind in ("error500", "slowdown"):
        code = caught.value.response["Error"]["Code"]
        assert code == {"error500": "InternalError", "slowdown": "SlowDown"}[kind]


def test_proxy_frames_messages_byte_for_byte():
    from flaky_proxy import read_body, read_head, read_response
    chunked = (b"PUT /b/k HTTP/1.1\r\nHost: 127.0.0.1:9\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-trailer: abc\r\n\r\n")
    reader = io.BytesIO(chunked + b"NEXT")
    request = read_head(reader)
    request.body = read_body(reader, request, is_request=True)
    assert request.raw_head + request.body == chunked and reader.read() == b"NEXT"
    assert request.method == b"PUT" and request.header(b"host") == b"127.0.0.1:9"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    assert read_response(io.BytesIO(head), b"HEAD").body == b""           # HEAD: no body
    response = read_response(io.BytesIO(interim + head + b"1234567rest"), b"GET")
    assert (response.status, response.raw_head, response.body) == (200, head, b"1234567")
