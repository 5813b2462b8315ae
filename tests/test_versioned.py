"""Versioned and Object-Locked buckets: every kind of run works on them unchanged, a delete
only ever adds a delete marker (no request names a version), and a destination written there
stays valid for the existing tool (it sees the current objects only).

Both servers: SeaweedFS (the suite's S3) and moto in server mode, which enforces Object Lock
as AWS does (a write to a bucket with a default retention needs Content-MD5).
"""

import datetime
import secrets

import pytest
from conftest import decoded, esb, tree

MTIME = 1_700_000_000
FILES = {f"docs/f{i:02d}.txt": b"content of file %d\n" % i * (i + 1) for i in range(12)}


def every_version(bucket):
    """[(key, version id)] of every version in the bucket, and the delete markers' keys."""
    pages = bucket.client.get_paginator("list_object_versions").paginate(Bucket=bucket.name)
    versions, markers = [], []
    for page in pages:
        versions += [(v["Key"], v["VersionId"]) for v in page.get("Versions", ())]
        markers += [m["Key"] for m in page.get("DeleteMarkers", ())]
    return versions, markers


def remove_every_version(bucket):
    """Empty a versioned bucket, every version and marker (GOVERNANCE locks bypassed)."""
    versions, _ = every_version(bucket)
    pages = bucket.client.get_paginator("list_object_versions").paginate(Bucket=bucket.name)
    for page in pages:
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            bucket.client.delete_object(Bucket=bucket.name, Key=item["Key"],
                                        VersionId=item["VersionId"],
                                        BypassGovernanceRetention=True)


# Both servers, each with one kind of bucket in each test: a locked bucket is a versioned
# one with retention besides (the suite's time is kept for other tests).
KINDS = {"cycle": [("seaweedfs", "versioned"), ("moto", "locked")],
         "attack": [("seaweedfs", "locked"), ("moto", "locked")]}


def made_bucket(server, lock):
    """A bucket with versioning on; with ``lock``, Object Lock and a one-day GOVERNANCE
    default retention."""
    from s3_server import S3Bucket
    client = server.client()
    name = f"v-{secrets.token_hex(6)}"
    if lock:
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    else:
        client.create_bucket(Bucket=name)
        client.put_bucket_versioning(Bucket=name,
                                     VersioningConfiguration={"Status": "Enabled"})
    return S3Bucket(name=name, endpoint_url=server.endpoint_url,
                    access_key=server.access_key, secret_key=server.secret_key,
                    region=server.region, client=client)


@pytest.fixture
def bucket(request, where):
    server_name, kind = where
    server = request.getfixturevalue("s3_server" if server_name == "seaweedfs"
                                     else "moto_server")
    made = made_bucket(server, kind == "locked")
    yield made
    remove_every_version(made)      # (best effort: a server may keep a locked version)
    try:
        made.client.delete_bucket(Bucket=made.name)
    except Exception:                # noqa: BLE001 - its versions outlive the test
        pass


@pytest.mark.parametrize("where", KINDS["cycle"], ids="-".join)
def test_every_run_works_on_a_versioned_or_locked_bucket_and_never_removes_a_version(
        make_tool, bucket, monkeypatch):
    tool = make_tool(bucket, VERSIONS_KEEP_DAYS=2, DELETED_KEEP_DAYS=3)
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    code, out, err = tool()
    assert code == 0 and "12 uploaded" in out, err
    tool.write("docs/f00.txt", b"changed", MTIME + 5)            # a version is kept
    (tool.src / "docs/f01.txt").unlink()                         # marked deleted
    tool.write("docs/f02.txt", FILES["docs/f02.txt"], MTIME + 9)  # same content: replaced
    code, out, err = tool()
    assert code == 0 and "FAILED" not in err, err
    assert "2 uploaded" in out and "1 marked deleted" in out and "1 versions kept" in out
    later = esb.today() + datetime.timedelta(days=4)             # expiry of both
    monkeypatch.setattr(esb, "today", lambda: later)
    monkeypatch.setattr(esb, "now", lambda: esb.noon(later))
    code, out, err = tool()
    assert code == 0 and "1 expired" in out and "1 versions expired" in out, err

    current = tool.keys()
    assert all(key.endswith(".enc") for key in current) and len(current) == 11
    expected = {rel: data for rel, data in FILES.items() if rel != "docs/f01.txt"}
    expected["docs/f00.txt"] = b"changed"
    code, out, err = tool("--restore")
    assert code == 0 and tool.restored() == expected == tree(tool.src), err
    code, out, err = tool("--verify")
    assert code == 0 and "11 verified" in out, err
    code, out, err = tool("--list", "--versions")
    assert code == 0 and len(out.strip().splitlines()) == 11, err

    versions, markers = every_version(bucket)
    # 12 first uploads, 2 new ones, the version and the deleted name (copies): nothing that
    # was written was ever removed, and every removal left a delete marker
    assert len(versions) == 16, versions
    assert len(markers) == 5           # the 2 replaced, the marked one's live name, the
                                       # expired deleted one and the expired version


def moment_passed(after):
    """Wait until the clock is past ``after`` (epoch second), so that S3 dates what is
    written next later than anything written before."""
    import time
    while time.time() < after + 1.2:
        time.sleep(0.1)


@pytest.mark.parametrize("where", KINDS["attack"], ids="-".join)
def test_after_stolen_keys_wiped_the_bucket_as_of_before_brings_everything_back(
        make_tool, bucket, monkeypatch):
    """The attack: with the tool's own keys, every object deleted (no version named: S3
    keeps the versions), some keys overwritten with junk, junk objects added.  The state
    before comes back byte for byte from the bucket's own versions (listed in pages of 3,
    by folder, side by side: a long listing's way)."""
    import time
    monkeypatch.setattr(esb, "S3_LIST_PAGE", 3)
    tool = make_tool(bucket, VERSIONS_KEEP_DAYS=30)
    for rel, data in {**FILES, "top.txt": b"at the top\n"}.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    tool.write("docs/f03.txt", b"a later content", MTIME + 60)       # history too
    assert tool()[0] == 0
    before = int(time.time())
    moment_passed(before)
    expected = dict(FILES, **{"docs/f03.txt": b"a later content", "top.txt": b"at the top\n"})

    client, keys = bucket.client, tool.keys()
    for key in keys[:4]:                                            # overwritten ...
        client.put_object(Bucket=bucket.name, Key=key, Body=b"junk" * 20)
    client.delete_objects(Bucket=bucket.name, Delete={               # ... and the rest gone
        "Objects": [{"Key": key} for key in keys[4:]], "Quiet": True})
    name = esb.format_plain_name(esb.BackupName("docs/evil.txt", MTIME, 4, bytes(16)))
    client.put_object(Bucket=bucket.name, Key=name + ".enc", Body=b"evil")
    client.put_object(Bucket=bucket.name, Key="docs/f05.txt.1.1.1.0.ver", Body=b"evil")
    assert tool("--restore")[0] != 0 or tool.restored() != expected   # the wreck as it is

    when = datetime.datetime.fromtimestamp(before).strftime("%Y-%m-%dT%H:%M:%S")
    code, out, err = tool("--verify", "--as-of", when)
    assert code == 0 and "13 verified" in out and "bucket's own versions" in out, err
    lists = int(__import__("re").search(r"(\d+) LIST", out)[1])
    assert lists > 5, out            # the versions' pages, the top level's and the folder's
    import shutil
    shutil.rmtree(tool.restore, ignore_errors=True)
    code, out, err = tool("--restore", "--as-of", when)
    assert code == 0 and "FAILED" not in err, err
    assert tool.restored() == expected                          # byte for byte
    code, out, err = tool("--list", "--as-of", when, "--json")
    assert code == 0 and sorted(r["path"] for r in __import__("json").loads(out)) == sorted(
        expected), err

    code, out, err = tool("--allow-mass-delete")      # the next backup puts back what it can:
    assert code == 0, err                             # the deleted ones, while the junk ones
    junk = [esb.decode_name(k, tool.codec()).path for k in keys[:4] if k.endswith(".enc")]
    assert f"{13 - len(junk)} uploaded" in out, out   # look unchanged by their names ...
    code, out, err = tool("--verify")                 # ... until a verify reads them
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert code == 1 and all(any(path in line for line in failed) for path in junk), err

    code, out, err = tool("--verify", "--repair")     # the recovery's last step: the junk
    assert f"{len(junk)} repaired" in out, err        # current objects made again from src;
    code, out, err = tool("--verify")                 # the junk version, and the evil object
    failed = {line.split()[3] for line in err.splitlines() if "FAILED verify" in line}
    assert code == 1 and failed == {"docs/f03.txt:", "docs/f05.txt:", "docs/evil.txt:"}, err
    shutil.rmtree(tool.restore, ignore_errors=True)   # (deleted since) have no source: they
    assert tool("--restore")[0] == 0 and tool.restored() == expected   # stay. Byte for byte,
    codec, current = tool.codec(), {}                 # and what the existing tool reads (the
    for key in tool.keys():                           # .enc objects of files not deleted)
        name = esb.decode_name(key, codec)
        if key.endswith(".enc") and not name.deleted:
            with tool.storage().open(key) as src:
                current[name.path] = decoded(src, name.size, name.md5, codec)
    assert current == expected

@pytest.mark.parametrize("code, said", [("AccessDenied", ""), ("NotImplemented", ""),
                                        ("NoSuchBucket", None)])
def test_a_service_that_does_not_say_whether_it_keeps_versions_is_read_as_it_is(
        code, said, caplog):
    """Keys that may not read the versioning (or a service without it) leave --as-of to
    the current objects, saying so; any other error is the storage's error."""
    from botocore.exceptions import ClientError

    class Refusing:
        def get_bucket_versioning(self, **_):
            raise ClientError({"Error": {"Code": code, "Message": "no"}},
                              "GetBucketVersioning")

    storage = esb.S3Storage(esb.StorageConfig(s3_bucket="b"))
    storage._client, storage._pid = Refusing(), __import__("os").getpid()
    if said is None:
        with pytest.raises(esb.BackupError):
            storage.versioning()
        return
    with caplog.at_level("INFO", logger="encrypted_s3_backup"):
        assert storage.versioning() == said
    assert f"S3 error {code}" in caplog.text and "only its current objects" in caplog.text


def test_a_version_listing_that_fails_mid_way_restores_nothing(make_tool, moto_server,
                                                                monkeypatch):
    """A listing of the bucket's versions cut short by an error is the storage's error
    (exit 2, one line): nothing is restored from half a listing."""
    from botocore.exceptions import ClientError
    bucket = made_bucket(moto_server, lock=False)
    tool = make_tool(bucket)
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    monkeypatch.setattr(esb, "S3_LIST_PAGE", 3)
    real = esb.S3Storage._pages

    def failing(self, prefix, delimiter="", versions=False):
        pages = real(self, prefix, delimiter, versions)
        if versions and delimiter == "":          # a folder's pages: the second one fails
            yield next(pages)
            raise ClientError({"Error": {"Code": "InternalError", "Message": "x"}},
                              "ListObjectVersions")
        yield from pages

    monkeypatch.setattr(esb.S3Storage, "_pages", failing)
    when = (datetime.datetime.now() + datetime.timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S")
    code, out, err = tool("--restore", "--as-of", when)
    assert code == 2, err
    line, = [x for x in err.splitlines() if "error:" in x]
    assert "cannot list the versions" in line and "InternalError" in line, err
    assert not tool.restore.exists()
    remove_every_version(bucket)
