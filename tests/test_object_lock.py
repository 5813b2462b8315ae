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
        make_tool, moto_server, monkeypatch):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * 1024 ** 2)   # big.bin in parts,
    monkeypatch.setattr(esb, "S3_COPY_LIMIT", 5 * 1024 ** 2)            # and copied in parts
    bucket = locked_bucket(moto_server)
    tool = make_tool(bucket, OBJECT_LOCK_MODE="governance", OBJECT_LOCK_DAYS=str(DAYS),
                     VERSIONS_KEEP_DAYS=5, DELETED_KEEP_DAYS=5)
    for i in range(3):
        tool.write(f"f{i}.txt", b"file %d\n" % i * (i + 1), MTIME)
    tool.write("big.bin", secrets.token_bytes(6 * 1024 ** 2), MTIME)
    before = datetime.datetime.now(datetime.timezone.utc)
    code, out, err = tool()
    assert code == 0 and "4 uploaded" in out, err
    tool.write("f0.txt", b"changed", MTIME + 5)          # a .ver copy of the old one
    tool.write("big.bin", b"small now", MTIME + 5)
    (tool.src / "f1.txt").unlink()                       # a deletion mark (a copy)
    code, out, err = tool()
    assert code == 0 and "2 versions kept" in out and "1 marked deleted" in out, err

    versions = every_version(bucket)
    assert len(versions) == 9              # 4 + 2 uploads, the versions' and the mark's copies
    assert {k.rsplit(".", 1)[1] for k, _ in versions} >= {"enc", "ver"}
    # (moto drops a multipart upload's lock when it completes it, which AWS keeps: what
    # the large writes' requests carry is checked by the next test)
    in_parts = [key for key, _ in versions if key.startswith("big.bin.")]
    for key, version in versions:          # uploads, renamed versions, deleted marks alike
        if key in in_parts:
            continue
        held = bucket.client.head_object(Bucket=bucket.name, Key=key, VersionId=version)
        until = held.get("ObjectLockRetainUntilDate")
        assert held.get("ObjectLockMode") == "GOVERNANCE" and until, (key, held)
        assert before + datetime.timedelta(days=DAYS - 1) < until, (key, until)
        assert until < before + datetime.timedelta(days=DAYS + 1), (key, until)
    key, version = next(v for v in versions if v[0] not in in_parts)
    with pytest.raises(Exception) as refused:  # what a stolen key would do
        bucket.client.delete_object(Bucket=bucket.name, Key=key, VersionId=version)
    assert "AccessDenied" in str(refused.value)


def test_large_writes_ask_for_the_lock_in_their_first_request(moto_server, monkeypatch):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * 1024 ** 2)
    monkeypatch.setattr(esb, "S3_COPY_LIMIT", 5 * 1024 ** 2)
    bucket = locked_bucket(moto_server)
    from conftest import s3_config
    storage = esb.S3Storage(s3_config(bucket), lock=esb.ObjectLock("COMPLIANCE", 2))
    asked = []
    for operation in ("CreateMultipartUpload", "CopyObject"):
        storage.client.meta.events.register(
            f"before-call.s3.{operation}",
            lambda params, model, **_: asked.append((model.name, params["headers"])))
    before = datetime.datetime.now(datetime.timezone.utc)
    storage.put("big", secrets.token_bytes(6 * 1024 ** 2))
    storage.rename("big", "moved", 6 * 1024 ** 2)
    # the upload; the copy (boto3's managed copy, one request at this size)
    assert [name for name, _ in asked] == ["CreateMultipartUpload", "CopyObject"]
    for _, headers in asked:
        assert headers["x-amz-object-lock-mode"] == "COMPLIANCE"
        until = datetime.datetime.fromisoformat(
            headers["x-amz-object-lock-retain-until-date"].replace("Z", "+00:00"))
        assert before + datetime.timedelta(days=2) <= until + datetime.timedelta(seconds=1)
        assert until < before + datetime.timedelta(days=2, minutes=5)


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


DAY = 86400


def test_due_locks_end_on_a_grid_of_whole_periods_from_last_modified():
    lock = esb.ObjectLock("GOVERNANCE", 30)          # margin: 7 days
    written = 1_800_000_000
    assert lock.due(written, written + 22 * DAY) is None          # 8 days left
    assert lock.due(written, written + 24 * DAY) == written + 60 * DAY
    assert lock.due(written, written + 30 * DAY) == written + 60 * DAY   # (missed: late)
    assert lock.due(written, written + 40 * DAY) is None          # extended to day 60
    assert lock.due(written, written + 55 * DAY) == written + 90 * DAY
    assert lock.due(0, written) is None                           # LastModified unknown
    short = esb.ObjectLock("COMPLIANCE", 3)                       # margin: a day
    assert short.due(written, written + 2 * DAY) is None
    assert short.due(written, written + 2 * DAY + 1) == written + 6 * DAY


def test_the_planner_extends_exactly_the_unchanged_objects_whose_lock_ends_soon():
    moment = 1_800_000_000
    name = esb.BackupName("a", MTIME, 5, bytes(16), 0)
    objects = [esb.stored_object(esb.encode_name(name._replace(path=path), esb.Codec(
        compress=False, encrypt=False)), 53, name._replace(path=path), "", moment - age * DAY)
        for path, age in (("due", 25), ("fresh", 3), ("changed", 25), ("gone", 25))]
    source = [esb.Entry("due", 5, MTIME), esb.Entry("fresh", 5, MTIME),
              esb.Entry("changed", 5, MTIME + 1)]
    plan = esb.plan_backup(source, objects, datetime.date(2027, 1, 15), None, moment=moment,
                           lock=esb.ObjectLock("GOVERNANCE", 30))
    assert [(job.path, job.until) for job in plan.extends] == [
        ("due", moment - 25 * DAY + 60 * DAY)]
    assert esb.plan_backup(source, objects, datetime.date(2027, 1, 15), None,
                           moment=moment).extends == []


def test_unchanged_objects_are_extended_once_their_lock_nears_its_end(make_tool, moto_server,
                                                                     monkeypatch):
    bucket = locked_bucket(moto_server)
    tool = make_tool(bucket, OBJECT_LOCK_MODE="GOVERNANCE", OBJECT_LOCK_DAYS=str(DAYS))
    for i in range(3):
        tool.write(f"f{i}.txt", b"%d" % i * 50, MTIME)
    code, out, err = tool()
    assert code == 0 and "3 uploaded" in out, err
    code, out, err = tool()                          # nothing changed, nothing due
    assert code == 0 and "RETAIN" not in out and "locks extended" not in out, out
    written = {key: bucket.client.head_object(Bucket=bucket.name, Key=key)["LastModified"]
               for key in tool.keys()}

    def at(moment):
        monkeypatch.setattr(esb, "now", lambda: int(moment.timestamp()))
        monkeypatch.setattr(esb, "today", lambda: moment.astimezone().date())

    first = min(written.values())
    at(first + datetime.timedelta(days=DAYS - 3))    # within the margin of the lock's end
    tool.write("f2.txt", b"changed", MTIME + 1)      # uploaded anew: locked afresh
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and "2 locks extended" in out, (out, err)
    assert "2 RETAIN" in out, out
    for key, modified in written.items():
        if key.startswith("f2"):
            continue
        until = bucket.client.head_object(Bucket=bucket.name, Key=key)[
            "ObjectLockRetainUntilDate"]
        assert until == modified + datetime.timedelta(days=2 * DAYS), (key, until)
    code, out, err = tool()        # due still, but done: checked only; f2's new object,
    # written by the server's clock, is due by the moved one
    assert code == 0 and "2 locks checked" in out and "1 locks extended" in out, out
    assert "1 RETAIN" in out, out
    at(first + datetime.timedelta(days=DAYS + 10))   # extended already: nothing due
    code, out, err = tool()
    assert code == 0 and "RETAIN" not in out and "locks extended" not in out, out


def test_a_bucket_default_retention_is_extended_when_the_settings_are_unset(
        make_tool, moto_server, monkeypatch):
    """Without object_lock settings, the bucket's default retention (moto applies it to
    every write) is the lock kept: objects due are extended in its mode, by whole periods
    from LastModified; a run far from the end sends no retention request."""
    bucket = locked_bucket(moto_server, ("COMPLIANCE", DAYS))
    tool = make_tool(bucket)
    for i in range(3):
        tool.write(f"f{i}.txt", b"%d" % i * 50, MTIME)
    code, out, err = tool()
    assert code == 0 and "3 uploaded" in out, err
    assert "each run extends the lock of an unchanged object whose lock ends within 7 " \
           f"days, by whole periods of {DAYS} days" in out + err
    code, out, err = tool()                          # nothing changed, nothing due
    assert code == 0 and "RETAIN" not in out and "locks extended" not in out, out
    written = {key: bucket.client.head_object(Bucket=bucket.name, Key=key)["LastModified"]
               for key in tool.keys()}
    first = min(written.values())
    moved = first + datetime.timedelta(days=DAYS - 3)   # within the margin of the lock's end
    monkeypatch.setattr(esb, "now", lambda: int(moved.timestamp()))
    monkeypatch.setattr(esb, "today", lambda: moved.astimezone().date())
    tool.write("f2.txt", b"changed", MTIME + 1)      # uploaded anew: locked afresh
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and "2 locks extended" in out, (out, err)
    assert "2 RETAIN" in out, out
    assert "2 CONFIG" in out, out          # versioning and lock read once each, for all uses
    for key, modified in written.items():
        if key.startswith("f2"):
            continue
        held = bucket.client.head_object(Bucket=bucket.name, Key=key)
        assert held["ObjectLockMode"] == "COMPLIANCE", (key, held)
        assert held["ObjectLockRetainUntilDate"] == modified + datetime.timedelta(
            days=2 * DAYS), (key, held)
