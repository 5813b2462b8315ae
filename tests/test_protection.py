"""--check-protection: what keeps the destination from keys that can write to it, and the
exit code cron and monitoring alert on (6 when those keys could destroy the backup).

Moto (server mode, which enforces Object Lock as AWS does) for the bucket settings, and one
run on SeaweedFS with a locked bucket."""

import secrets

import pytest
from botocore.exceptions import ClientError
from conftest import esb
from test_versioned import made_bucket, remove_every_version


def plain_bucket(server):
    from s3_server import S3Bucket
    client = server.client()
    name = f"p-{secrets.token_hex(6)}"
    client.create_bucket(Bucket=name)
    return S3Bucket(name=name, endpoint_url=server.endpoint_url, access_key=server.access_key,
                    secret_key=server.secret_key, region=server.region, client=client)


def locked_bucket(server, mode):
    bucket = made_bucket(server, lock=True)
    bucket.client.put_object_lock_configuration(Bucket=bucket.name, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": mode, "Days": 1}}})
    return bucket


def expire_noncurrent(bucket, days):
    bucket.client.put_bucket_lifecycle_configuration(
        Bucket=bucket.name, LifecycleConfiguration={"Rules": [{
            "ID": "old versions", "Status": "Enabled", "Filter": {"Prefix": ""},
            "NoncurrentVersionExpiration": {"NoncurrentDays": days}}]})


def probes(bucket):
    listed = bucket.client.list_object_versions(Bucket=bucket.name)
    return [v["Key"] for v in listed.get("Versions", ())]


def test_an_unversioned_bucket_is_unprotected_a_delete_is_final(make_tool, moto_server):
    bucket = plain_bucket(moto_server)
    code, out, err = make_tool(bucket)("--check-protection")
    assert code == esb.EXIT_UNPROTECTED == 6, err
    assert "versioning: off" in out and "Object Lock: off" in out
    assert "destroy the backup: yes, because the bucket keeps no versions: a delete is " \
           "final" in out
    assert "NOT protected" in err and "turn versioning on" in err
    assert "lifecycle" not in err            # (no versions: nothing to expire)
    assert probes(bucket) == []              # the probe was removed


def test_a_versioned_bucket_without_lock_is_unprotected(make_tool, moto_server):
    bucket = made_bucket(moto_server, lock=False)
    code, out, err = make_tool(bucket, base_path="host1")("--check-protection")
    assert code == 6, err
    assert "versioning: enabled" in out
    assert "destroy the backup: yes, because the delete of a version succeeded" in out
    assert "s3:DeleteObjectVersion" in err and "grows without bound" in err
    assert probes(bucket) == []


@pytest.mark.parametrize("mode", ["GOVERNANCE", "COMPLIANCE"])
def test_a_locked_bucket_is_protected_and_keeps_one_probe(make_tool, moto_server, mode):
    bucket = locked_bucket(moto_server, mode)
    tool = make_tool(bucket, base_path="host1", METRICS_FILE="m.prom")
    code, out, err = tool("--check-protection")
    assert code == 0, err
    assert f"Object Lock: {mode}, default retention 1 day" in out
    assert "destroy the backup: no, because deleting a version was refused" in out
    assert "protected: the bucket keeps versions" in out
    assert "grows without bound" in err                          # the lifecycle warning
    assert probes(bucket) == ["host1/.esb-probe"]
    code, out, err = tool("--check-protection")                  # the kept probe answers:
    assert code == 0 and probes(bucket) == ["host1/.esb-probe"], err   # no second one
    tool.write("a.txt", b"a")
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and ".esb-probe" not in out + err  # ignored
    assert f"destination versioning: enabled, Object Lock: {mode}, default retention " \
           "1 day (--check-protection tells more)" in out
    metrics = (tool.tmp / "m.prom").read_text()
    assert 'encrypted_s3_backup_destination_versioning{kind="backup"} 1' in metrics
    assert 'encrypted_s3_backup_destination_object_lock{kind="backup"} 1' in metrics
    if mode == "GOVERNANCE":
        remove_every_version(bucket)


def test_a_lifecycle_rule_for_old_versions_silences_the_warning(make_tool, moto_server):
    bucket = locked_bucket(moto_server, "GOVERNANCE")
    expire_noncurrent(bucket, 30)
    code, out, err = make_tool(bucket)("--check-protection")
    assert code == 0 and "non-current versions expire: after 30 days" in out, err
    assert "grows without bound" not in err
    remove_every_version(bucket)


def test_a_local_destination_is_unprotected(local_tool):
    local_tool.dest.mkdir()
    code, _, err = local_tool("--check-protection")
    assert code == 6 and "NOT protected" in err and "is a folder" in err


def test_what_these_keys_may_not_read_is_unknown_not_a_crash():
    class Refusing:
        def __getattr__(self, name):
            def refuse(**kwargs):
                raise ClientError({"Error": {"Code": "AccessDenied"}}, name)
            return refuse

    storage = esb.S3Storage(esb.StorageConfig(s3_bucket="b"))
    storage._client, storage._pid = Refusing(), __import__("os").getpid()
    found = storage.protection()
    assert (found.versioning, found.lock, found.destroyable) == (None, None, None)
    assert not found.safe()
    lines = found.lines()
    assert lines[0] == "versioning: unknown (these keys may not read it)"
    assert lines[-1].endswith("unknown, because the probe failed (AccessDenied)")


def test_lifecycle_rules_count_only_when_enabled_and_covering_the_prefix():
    rule = {"Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 9}}
    assert esb.noncurrent_expiry([rule], "host1/") == 9
    assert esb.noncurrent_expiry([{**rule, "Status": "Disabled"}], "host1/") == 0
    assert esb.noncurrent_expiry([{**rule, "Filter": {"Prefix": "other/"}}], "host1/") == 0
    assert esb.noncurrent_expiry([{**rule, "Filter": {"Prefix": "host"}},
                                  {**rule, "NoncurrentVersionExpiration":
                                   {"NoncurrentDays": 3}}], "host1/") == 3
    assert esb.noncurrent_expiry([{**rule, "Filter": {"Tag": {"Key": "k", "Value": "v"}}}],
                                 "") == 0


def test_seaweedfs_locked_bucket(make_tool, s3_server):
    """SeaweedFS answers as moto does: the locked probe's delete is refused with
    AccessDenied, and a bucket without lifecycle rules says so."""
    bucket = made_bucket(s3_server, lock=True)
    code, out, err = make_tool(bucket)("--check-protection")
    assert code == 0, out + err
    assert "Object Lock: GOVERNANCE, default retention 1 day" in out
    remove_every_version(bucket)


@pytest.mark.parametrize("missing", ["ObjectLockConfigurationNotFoundError",
                                     "NoSuchObjectLockConfiguration", "InvalidRequest"])
def test_each_bucket_setting_is_read_once_and_no_lock_means_the_same_everywhere(
        moto_server, missing):
    """versioning(), lock_notes(), kept_lock() and protection() of one storage share one
    GetBucketVersioning and one GetObjectLockConfiguration; each answer a bucket without
    Object Lock may give is "no lock" to all of them."""
    from conftest import s3_config
    bucket = locked_bucket(moto_server, "GOVERNANCE")
    storage = esb.S3Storage(s3_config(bucket))
    asked = []
    storage.client.meta.events.register("before-call.s3", lambda model, **_: asked.append(
        model.name))
    assert storage.versioning() == "Enabled"
    assert storage.lock_notes() and storage.kept_lock() == esb.ObjectLock("GOVERNANCE", 1)
    found = storage.protection(probe=False)
    assert (found.versioning, found.lock, found.retention) == ("Enabled", "GOVERNANCE", "1 day")
    assert sorted(asked) == ["GetBucketVersioning", "GetObjectLockConfiguration"]

    storage = esb.S3Storage(s3_config(bucket))
    storage._lock_answer = ClientError({"Error": {"Code": missing, "Message": "none"}},
                                       "GetObjectLockConfiguration")
    assert storage.object_lock_rule() == (False, None) and storage.kept_lock() is None
    assert storage.lock_notes() == [] and storage.protection(probe=False).lock == ""


# The IAM actions each S3 request of the tool needs (CreateBucket: none, the keys may not
# make the bucket); a request added to the tool must be added here, and to the policy.
IAM_ACTIONS = {
    "ListObjectsV2": ["s3:ListBucket"], "HeadBucket": ["s3:ListBucket"],
    "ListMultipartUploads": ["s3:ListBucketMultipartUploads"],
    "ListObjectVersions": ["s3:ListBucketVersions"],
    "GetObject": ["s3:GetObject", "s3:GetObjectVersion"],
    "HeadObject": ["s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectRetention"],
    **{write: ["s3:PutObject", "s3:PutObjectRetention"] for write in (
        "PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload")},
    **{copy: ["s3:GetObject", "s3:PutObject", "s3:PutObjectRetention"] for copy in (
        "CopyObject", "UploadPartCopy")},
    "DeleteObject": ["s3:DeleteObject"], "DeleteObjects": ["s3:DeleteObject"],
    "AbortMultipartUpload": ["s3:AbortMultipartUpload"],
    "RestoreObject": ["s3:RestoreObject"],
    "GetBucketVersioning": ["s3:GetBucketVersioning"],
    "GetObjectLockConfiguration": ["s3:GetBucketObjectLockConfiguration"],
    "GetBucketLifecycleConfiguration": ["s3:GetLifecycleConfiguration"],
    "PutObjectRetention": ["s3:PutObjectRetention"],
    "CreateBucket": [],
}


def security_json():
    """The JSON documents of docs/SECURITY.md, by what they are."""
    import json
    import re
    from pathlib import Path
    text = (Path(__file__).parent.parent / "docs" / "SECURITY.md").read_text()
    found = {}
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        document = json.loads(block)
        found["policy" if "Statement" in document else "lifecycle"] = document
    return found


def test_the_documented_policy_allows_what_the_tool_does_and_denies_destruction():
    policy = security_json()["policy"]
    assert policy["Version"] == "2012-10-17"

    def actions(effect, resource_suffix):
        found = set()
        for statement in policy["Statement"]:
            resources = statement["Resource"]
            resources = [resources] if isinstance(resources, str) else resources
            if statement["Effect"] == effect and any(r.endswith(resource_suffix)
                                                     for r in resources):
                found.update(statement["Action"])
        return found

    allowed = actions("Allow", "BUCKET") | actions("Allow", "BUCKET/*")
    denied = actions("Deny", "BUCKET") & actions("Deny", "BUCKET/*")
    assert set(esb.S3_REQUEST_KINDS) == set(IAM_ACTIONS)     # every request the tool makes
    needed = {action for need in IAM_ACTIONS.values() for action in need}
    assert needed == allowed, (needed ^ allowed)              # allowed, and nothing more
    bucket_level = {"s3:ListBucket", "s3:ListBucketVersions", "s3:ListBucketMultipartUploads",
                    "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration",
                    "s3:GetLifecycleConfiguration"}
    assert actions("Allow", "BUCKET") == bucket_level          # on the resource each acts on
    assert {"s3:DeleteObjectVersion", "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration",
            "s3:PutBucketObjectLockConfiguration", "s3:BypassGovernanceRetention",
            "s3:DeleteBucket", "s3:PutBucketPolicy"} <= denied
    assert not denied & allowed


def test_the_documented_lifecycle_rule_expires_non_current_versions():
    rules = security_json()["lifecycle"]["Rules"]
    assert esb.noncurrent_expiry(rules, "") == 90
    assert esb.noncurrent_expiry(rules, "host1/") == 90         # it covers every base_path
    assert rules[0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] > 0
