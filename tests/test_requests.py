"""What a run costs on S3: requests by kind, connections kept alive, no round trip wasted.

Against the real S3 server (SeaweedFS), reached directly or through the benchmark's
latency proxy, which counts the TCP connections opened through it.
"""

import json
import sys

import pytest
from conftest import ROOT, esb, s3_config
from flaky_proxy import FlakyProxy

sys.path.insert(0, str(ROOT / "bench"))
from latency_proxy import LatencyProxy  # noqa: E402

MiB = 1024 * 1024


def summary_requests(out):
    """{kind: count} and retries of the "requests: ..." summary line."""
    line = next(line for line in out.splitlines() if "] requests: " in line)
    made, _, retried = line.split("] requests: ", 1)[1].partition(";")
    counts = {kind: int(n) for n, kind in (part.split() for part in made.split(","))}
    return counts, int(retried.split()[0])


def sent_headers(storage):
    """The headers of every request the storage's client sends, as they leave."""
    sent = []
    storage.client.meta.events.register(
        "before-send.s3", lambda request, **kwargs: sent.append(
            (request.method, request.url, dict(request.headers))))
    return sent


def test_the_summary_counts_the_requests_of_each_kind(make_tool, s3_bucket):
    tool = make_tool(s3_bucket)
    for i in range(5):
        tool.write(f"f{i}.txt", b"%d" % i * 100)
    code, out, err = tool()
    assert code == 0, err
    counts, retried = summary_requests(out)
    assert counts["PUT"] == 5 and counts["LIST"] >= 1 and retried == 0
    # the start-of-run line on the destination's protection: GetBucketVersioning and
    # GetObjectLockConfiguration, once per run
    assert counts["CONFIG"] == 2, counts
    (tool.src / "f0.txt").unlink()
    tool.write("f1.txt", b"changed", 1_700_000_009)
    code, out, err = tool()
    counts, _ = summary_requests(out)
    # one upload; the replaced object goes in one DeleteObjects; the mark is a copy + delete;
    # the password is checked on one object first
    assert (counts["PUT"], counts["COPY"], counts["DELETE"], counts["GET"]) == (1, 1, 2, 1), \
        counts
    code, out, err = tool("--verify")
    counts, _ = summary_requests(out)
    assert counts["GET"] == 1 + 5, counts    # the password check, then each object
    assert "CONFIG" not in counts            # (a verify without --as-of reads no settings)


def test_dry_runs_count_their_requests_too(make_tool, s3_bucket):
    tool = make_tool(s3_bucket)
    for i in range(3):
        tool.write(f"f{i}.txt", b"%d" % i * 100)
    code, out, err = tool("--dry-run", "--quiet")
    assert code == 0, err
    assert "dry run: 3 to upload" in out            # a dry run's summary, as --quiet shows
    counts, retried = summary_requests(out)
    assert counts["LIST"] >= 1 and "PUT" not in counts and retried == 0
    assert tool()[0] == 0
    code, out, err = tool("--restore", "--dry-run")
    assert code == 0, err
    counts, _ = summary_requests(out)
    assert counts["LIST"] >= 1 and counts["GET"] == 1, counts     # the password check only
    code, out, err = tool("--list", "--json")        # stdout is the listing, nothing else
    assert code == 0 and len(json.loads(out)) == 3, err


def test_a_local_destination_makes_no_requests(local_tool):
    local_tool.write("a.txt", b"a")
    code, out, _ = local_tool()
    assert code == 0 and "requests:" not in out


def test_connections_are_kept_alive_one_per_request_in_flight(make_tool, s3_bucket):
    host, port = s3_bucket.endpoint_url.rsplit("//", 1)[1].rsplit(":", 1)
    with LatencyProxy(host, int(port), rtt_ms=5) as proxy:
        tool = make_tool(s3_bucket, endpoint_url=proxy.endpoint_url, REQUESTS_IN_FLIGHT=6)
        for i in range(150):
            tool.write(f"d{i % 7}/f{i:03d}.txt", b"x" * (i + 1))
        for argv in ((), ("--restore",), ("--verify",)):
            before = proxy.connections
            code, out, err = tool(*argv)
            assert code == 0, err
            # the request scheduler's 6, one of the listing helper and one of the password
            # check (which the first backup, into an empty bucket, has no need of); never
            # one per object
            assert proxy.connections - before <= 6 + 1 + 1, (argv, proxy.connections - before)


@pytest.fixture
def recorder(s3_bucket):
    """The S3 server behind a proxy that records every request as it arrives (a flaky
    proxy with no faults: one request per connection); ``.seen`` lists them."""
    seen = []
    with FlakyProxy(s3_bucket.endpoint_url, choose=lambda request: seen.append(request)
                    ) as proxy:
        proxy.seen = seen
        yield proxy


def sent_puts(recorder):
    """{last part of the path: the request} of every PUT that arrived."""
    return {request.target.rsplit(b"/", 1)[1].decode(): request
            for request in recorder.seen if request.method == b"PUT"}


def test_small_bodies_do_not_wait_for_100_continue(s3_bucket, recorder):
    storage = esb.S3Storage(s3_config(s3_bucket, endpoint_url=recorder.endpoint_url))
    storage.prepare(create=True)
    for key, size in (("small", 1000), ("just-below", esb.EXPECT_CONTINUE_MIN - 1),
                      ("large", esb.EXPECT_CONTINUE_MIN)):
        storage.store("", lambda sink: sink.write(b"x" * size), lambda _: key)
    expects = {key: request.header(b"Expect") for key, request in sent_puts(recorder).items()}
    assert expects == {"small": None, "just-below": None, "large": b"100-continue"}


def test_remove_many_is_one_delete_objects_request_per_thousand_keys(s3_bucket, monkeypatch):
    storage = esb.S3Storage(s3_config(s3_bucket, base_path="p"))
    storage.prepare(create=True)
    for i in range(5):
        storage.store("", lambda sink: sink.write(b"x"), lambda _: f"k{i}")
    monkeypatch.setattr(esb, "S3_DELETE_BATCH", 2)
    sent = sent_headers(storage)
    esb.take_requests()
    assert storage.remove_many(["k0", "k1", "k2", "never-there", "k4"]) == {}
    assert sorted(e.key for e in storage.list_files(esb.ListReport())) == ["k3"]
    deletes = [headers for method, url, headers in sent if method == "POST"]
    assert len(deletes) == 3 and esb.take_requests()["DELETE"] == 3
    assert all("Content-MD5" in headers for headers in deletes)   # some services need it


def test_remove_many_reports_each_key_the_service_refused(s3_bucket, monkeypatch):
    storage = esb.S3Storage(s3_config(s3_bucket))
    storage.prepare(create=True)
    answer = {"Errors": [{"Key": "b", "Code": "AccessDenied"},
                         {"Key": "gone", "Code": "NoSuchKey"}]}
    monkeypatch.setattr(storage.client, "delete_objects", lambda **kwargs: answer)
    failed = storage.remove_many(["a", "b", "gone"])
    assert list(failed) == ["b"] and failed["b"].message == "S3 error AccessDenied"


@pytest.mark.parametrize("bad", ["0", "-3", "2000", "many"])
def test_requests_in_flight_is_checked(bad):
    with pytest.raises(esb.ConfigError, match="REQUESTS_IN_FLIGHT"):
        esb.load_config(None, {"DEST_LOCAL_PATH": "/d", "ENCRYPTION_PASSWORD": "pw",
                               "REQUESTS_IN_FLIGHT": bad}, needs=("dest",))


def test_a_long_listing_is_split_by_folder_and_comes_back_the_same(s3_bucket, monkeypatch):
    storage = esb.S3Storage(s3_config(s3_bucket, base_path="base"))
    storage.prepare(create=True)
    keys = ["a.txt", "a/1", "a/2/x", "a/2/y", "b", "b.d/z", "c/", "c/q", "d/e/f/g", "z",
            "\u00e9t\u00e9/1", "\u00e9t\u00e9.txt"]
    for key in keys:
        storage.store(key.rpartition("/")[0], lambda sink: sink.write(b"k"), lambda _: key)
    whole = [(e.key, e.size) for e in storage.list_files(esb.ListReport())]
    monkeypatch.setattr(esb, "S3_LIST_PAGE", 2)              # now it is long
    esb.take_requests()
    split = [(e.key, e.size) for e in storage.list_files(esb.ListReport())]
    # (the same set: SeaweedFS, unlike S3, lists a folder's files before "a.txt")
    assert sorted(split) == sorted(whole) == sorted((key, 1) for key in keys
                                                    if not key.endswith("/"))
    assert esb.take_requests()["LIST"] > 6                      # the folders' own pages
    assert sorted(e.key for e in storage.list_files(
        esb.ListReport(), lambda k: k.startswith("a"))) == sorted(
        key for key, _ in whole if not key.startswith("a"))


def test_every_body_sent_carries_its_md5(s3_bucket, recorder, monkeypatch):
    """The service checks what it got: an upload cut short (the process killed after its
    headers went out) stores nothing; SeaweedFS would keep an empty object."""
    import base64
    import hashlib
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MiB)
    storage = esb.S3Storage(s3_config(s3_bucket, endpoint_url=recorder.endpoint_url))
    storage.prepare(create=True)
    small, big = b"small body", bytes(range(256)) * (6 * MiB // 256)
    for key, data in (("small", small), ("big", big)):
        storage.store("", lambda sink: sink.write(data), lambda _: key)
    puts = [request for request in recorder.seen if request.method == b"PUT"]
    # the small one from the wire, the big one's parts from boto3
    assert [(request.body, request.header(b"Content-MD5")) for request in puts] == [
        (body, base64.b64encode(hashlib.md5(body).digest()))
        for body in (small, big[:5 * MiB], big[5 * MiB:])]
