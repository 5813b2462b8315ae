"""Object Lock on what the tool writes (object_lock_mode, object_lock_days): every object a
backup puts or copies carries the retention in its own request, so a stolen key cannot delete
its version; a bucket without Object Lock is refused at the start, naming the fix.

On moto in server mode, which enforces Object Lock as AWS does.
"""

import datetime
import secrets

import pytest
from conftest import esb
from s3_server import S3Bucket

MTIME = 1_700_000_000
DAYS = 30


def locked_bucket(server, default=None):
    """A bucket made with Object Lock; ``default``: its default retention (mode, days)."""
    client = server.client()
    name = f"l-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    if default:
        client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": default[0], "Days": default[1]}}})
    return S3Bucket(name=name, endpoint_url=server.endpoint_url,
                    access_key=server.access_key, secret_key=server.secret_key,
                    region=server.region, client=client)


def every_version(bucket):
    pages = bucket.client.get_paginator("list_object_versions").paginate(Bucket=bucket.name)
    return [(v["Key"], v["VersionId"]) for page in pages for v in page.get("Versions", ())]


def test_every_object_written_is_locked_and_its_version_cannot_be_deleted(
        make_tool, moto_server):
    bucket = locked_bucket(moto_server)
    tool = make_tool(bucket, OBJECT_LOCK_MODE="governance", OBJECT_LOCK_DAYS=str(DAYS),
                     VERSIONS_KEEP_DAYS=5, DELETED_KEEP_DAYS=5)
    for i in range(3):
        tool.write(f"f{i}.txt", b"file %d\n" % i * (i + 1), MTIME)
    before = datetime.datetime.now(datetime.timezone.utc)
    code, out, err = tool()
    assert code == 0 and "3 uploaded" in out, err
    tool.write("f0.txt", b"changed", MTIME + 5)          # a .ver copy of the old one
    (tool.src / "f1.txt").unlink()                       # a deletion mark (a copy)
    code, out, err = tool()
    assert code == 0 and "1 versions kept" in out and "1 marked deleted" in out, err

    versions = every_version(bucket)
    assert len(versions) == 6              # 3 + 1 upload + the version's and the mark's copies
    assert {k.rsplit(".", 1)[1] for k, _ in versions} >= {"enc", "ver"}
    for key, version in versions:          # uploads, renamed versions, deleted marks alike
        held = bucket.client.head_object(Bucket=bucket.name, Key=key, VersionId=version)
        until = held.get("ObjectLockRetainUntilDate")
        assert held.get("ObjectLockMode") == "GOVERNANCE" and until, (key, held)
        assert before + datetime.timedelta(days=DAYS - 1) < until, (key, until)
        assert until < before + datetime.timedelta(days=DAYS + 1), (key, until)
    key, version = versions[0]
    with pytest.raises(Exception) as refused:  # what a stolen key would do
        bucket.client.delete_object(Bucket=bucket.name, Key=key, VersionId=version)
    assert "AccessDenied" in str(refused.value)


def test_a_bucket_without_object_lock_is_refused_at_the_start(make_tool, moto_bucket):
    tool = make_tool(moto_bucket, OBJECT_LOCK_MODE="COMPLIANCE", OBJECT_LOCK_DAYS="7")
    tool.write("a.txt", b"a")
    code, out, err = tool()
    assert code == 2 and "Traceback" not in err, err
    assert f"bucket {moto_bucket.name} has no Object Lock" in err
    assert "--object-lock-enabled-for-bucket" in err and "unset both" in err
    assert tool.keys() == []               # nothing was written


def test_a_bucket_default_retention_is_said_when_the_settings_are_unset(make_tool,
                                                                        moto_server):
    bucket = locked_bucket(moto_server, ("GOVERNANCE", 2))
    tool = make_tool(bucket)
    tool.write("a.txt", b"a")
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out, err
    assert "the bucket's default retention applies" in out + err
    assert "GOVERNANCE for 2 days" in out + err


def test_a_local_destination_with_lock_settings_is_a_clear_error(make_tool):
    tool = make_tool(OBJECT_LOCK_MODE="governance", OBJECT_LOCK_DAYS="7")
    tool.write("a.txt", b"a")
    code, out, err = tool()
    assert code != 0 and "dest is a local folder" in err and "Traceback" not in err, err


@pytest.mark.parametrize("env, problem", [
    ({"OBJECT_LOCK_MODE": "legal-hold", "OBJECT_LOCK_DAYS": "7"},
     "'legal-hold' is not one of: GOVERNANCE, COMPLIANCE"),
    ({"OBJECT_LOCK_MODE": "governance", "OBJECT_LOCK_DAYS": "-3"},
     "object_lock_days (environment OBJECT_LOCK_DAYS): '-3' is not a whole number"),
    ({"OBJECT_LOCK_MODE": "governance"}, "object_lock_days (environment OBJECT_LOCK_DAYS): "
                                         "is needed with object_lock_mode"),
])
def test_bad_lock_settings_are_configuration_problems(env, problem):
    environ = {"SRC_LOCAL_PATH": "/src", "DEST_S3_BUCKET": "b",
               "ENCRYPTION_PASSWORD": "a password long enough", **env}
    with pytest.raises(esb.ConfigError) as error:
        esb.load_config(None, environ)
    assert problem in error.value.message
