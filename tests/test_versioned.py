"""Versioned and Object-Locked buckets: every kind of run works on them unchanged, a delete
only ever adds a delete marker (no request names a version), and a destination written there
stays valid for the existing tool (it sees the current objects only).

Both servers: SeaweedFS (the suite's S3) and moto in server mode, which enforces Object Lock
as AWS does (a write to a bucket with a default retention needs Content-MD5).
"""

import datetime
import secrets

import pytest
from conftest import esb, tree

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


@pytest.fixture(params=["seaweedfs", "moto"])
def server(request):
    return request.getfixturevalue("s3_server" if request.param == "seaweedfs"
                                   else "moto_server")


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


@pytest.fixture(params=["versioned", "locked"])
def bucket(request, server):
    made = made_bucket(server, request.param == "locked")
    yield made
    remove_every_version(made)      # (best effort: a server may keep a locked version)
    try:
        made.client.delete_bucket(Bucket=made.name)
    except Exception:                # noqa: BLE001 - its versions outlive the test
        pass


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
