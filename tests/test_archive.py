"""Archive storage classes (GLACIER, DEEP_ARCHIVE): backups that keep working without the
renames those classes refuse, and restores and verifies that ask for thaws and finish on a
later run.  The planner and the pure helpers first; then whole runs against moto, the S3
server that emulates the archive (see tests/moto_server.py for how its thaws are driven).
"""

import datetime
import hashlib
import json
import pickle
import re

import pytest

from conftest import PASSWORD, esb, plan_three_ways, s3_config, tree
from moto_server import restore_header, thaws_done, thaws_under_way

TODAY = datetime.date(2026, 11, 30)
STAMP = esb.date_number(TODAY)
MTIME = 1_700_000_000
OLD_MD5 = hashlib.md5(b"old").digest()


# ------------------------------------------------------------------------------- helpers

def stored(path, mtime=MTIME, deleted=0, version=False, storage_class="DEEP_ARCHIVE",
           md5=OLD_MD5):
    name = esb.BackupName(path, mtime, 3, md5, deleted, version)
    return esb.Stored(None, 51, name, storage_class)


def entry(path, mtime=MTIME):
    return esb.Entry(path, 3, mtime)


def plan(source, objects, keep_days=None, versions_keep_days=0):
    return plan_three_ways(source, objects, TODAY, keep_days, (), versions_keep_days)


def requests_line(out):
    """The run's "requests: ..." summary line ("" when it made none)."""
    return next((line for line in out.splitlines() if "requests:" in line), "")


def restore_requests(out):
    """How many RestoreObject requests the run made, from its requests line."""
    match = re.search(r"(\d+) RESTORE", requests_line(out))
    return int(match[1]) if match else 0


@pytest.fixture
def archive_tool(make_tool, moto_bucket):
    """The tool backing up to a moto bucket in DEEP_ARCHIVE; three files in the source."""
    tool = make_tool(moto_bucket, DEST_STORAGE_CLASS="DEEP_ARCHIVE")
    tool.write("a.txt", b"alpha\n" * 100)
    tool.write("docs/b.bin", bytes(range(256)) * 40, MTIME + 1)
    tool.write("c.txt", b"", MTIME + 2)
    return tool


def classes(bucket):
    """{key: storage class} of every object in the bucket, seen directly."""
    pages = bucket.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    return {item["Key"]: item["StorageClass"] for page in pages
            for item in page.get("Contents", ())}


# ------------------------------------------------------------------------ the planner

def test_a_deleted_files_archived_object_keeps_its_live_name_and_gets_a_mark():
    obj = stored("gone.txt")
    p = plan([], [obj])
    assert (p.renames, p.removes, p.uploads) == ([], [], [])
    assert [(m.why, m.old, m.name) for m in p.marks] == [
        ("mark deleted", obj, obj.name._replace(deleted=STAMP, mark=True))]
    assert (p.vanishing, p.live) == (1, 1)
    key = esb.encode_name(p.marks[0].name, esb.Codec(encrypt=False))
    assert key == obj.key[:-len(".0.enc")] + "." + esb.b36_encode_int(STAMP) + ".del"


def marked(obj, day):
    """The object read as its mark says (deleted on ``day``), and the mark."""
    mark = stored(obj.name.path, obj.name.mtime, day, storage_class="DEEP_ARCHIVE",
                  md5=obj.name.md5)._replace(name=obj.name._replace(deleted=day, mark=True))
    return esb.Stored(obj.key, obj.size, obj.name.with_deleted(day), obj.storage_class), mark


def test_a_mark_makes_its_object_deleted_for_every_reader():
    obj = stored("gone.txt")
    as_deleted, mark = marked(obj, STAMP - 3)
    other_content = stored("gone.txt", md5=hashlib.md5(b"x").digest())._replace(
        name=mark.name._replace(md5=hashlib.md5(b"x").digest()))
    assert esb.apply_marks([obj, mark]) == ([as_deleted], {obj.key: mark}, [])
    assert esb.apply_marks([obj, other_content]) == ([obj], {}, [other_content])
    assert esb.select_for_restore([obj, mark], False) == []
    assert esb.select_for_restore([obj, mark], True) == [as_deleted]
    before = esb.parse_as_of((TODAY - datetime.timedelta(days=4)).isoformat())
    assert esb.select_for_restore([obj, mark], False, as_of=before) == [as_deleted]
    assert esb.select_for_restore([obj, mark], False, as_of=esb.parse_as_of(
        (TODAY - datetime.timedelta(days=3)).isoformat())) == []
    assert plan([], [obj, mark]).marks == []             # marked once: nothing more to do


@pytest.mark.parametrize("keep_days, expires", [(None, False), (5, False), (3, True)])
def test_a_marked_object_expires_with_its_mark(keep_days, expires):
    obj = stored("gone.txt")
    as_deleted, mark = marked(obj, STAMP - 3)
    p = plan([], [obj, mark], keep_days=keep_days)
    assert [(r.why, r.old) for r in p.removes] == (
        [("expire", as_deleted), ("drop mark", mark)] if expires else [])
    assert p.expiring == expires and p.vanishing == 0


def test_a_marked_file_that_comes_back_loses_its_mark_or_is_replaced():
    obj = stored("back.txt")
    as_deleted, mark = marked(obj, STAMP - 1)
    p = plan([entry("back.txt")], [obj, mark])            # unchanged: only the mark goes
    assert [(r.why, r.old) for r in p.removes] == [("undelete", mark)] and not p.uploads
    p = plan([entry("back.txt", MTIME + 9)], [obj, mark], versions_keep_days=30)
    assert [(u.replaces, u.versions) for u in p.uploads] == [((obj.key, mark.key), ())]
    assert p.removes == [] and p.changed == 0
    stale = marked(stored("back.txt", MTIME + 1), STAMP - 1)[1]  # names no object
    p = plan([entry("back.txt")], [obj, stale])
    assert [(r.why, r.old) for r in p.removes] == [("drop mark", stale)] and p.unchanged == 1


def test_a_deleted_files_archived_object_is_removed_with_deleted_keep_days_0():
    obj = stored("gone.txt")
    p = plan([], [obj], keep_days=0)
    assert [(r.why, r.old) for r in p.removes] == [("expire", obj)]
    assert (p.marks, p.vanishing) == ([], 1)


@pytest.mark.parametrize("storage_class", ["", "STANDARD_IA", "GLACIER_IR"])
def test_a_class_that_reads_at_once_is_marked_deleted_as_before(storage_class):
    obj = stored("gone.txt", storage_class=storage_class)
    p = plan([], [obj])
    assert [(r.why, r.old, r.name) for r in p.renames] == [
        ("mark deleted", obj, obj.name.with_deleted(STAMP))]
    assert (p.marks, p.vanishing) == ([], 1)


def test_an_archived_deleted_file_that_comes_back_is_uploaded_again_and_replaces_it():
    obj = stored("back.txt", deleted=STAMP - 1)
    p = plan([entry("back.txt")], [obj])
    assert p.renames == [] and p.removes == []
    assert [(u.path, u.replaces, u.versions) for u in p.uploads] == [
        ("back.txt", (obj.key,), ())]


def test_history_cannot_keep_an_archived_old_content_so_it_is_replaced_and_counted():
    obj = stored("changed.txt")
    p = plan([entry("changed.txt", MTIME + 60)], [obj], versions_keep_days=30)
    assert [(u.replaces, u.versions) for u in p.uploads] == [((obj.key,), ())]
    assert (p.unkept, p.changed) == (1, 1)
    readable = stored("changed.txt", storage_class="GLACIER_IR")
    p = plan([entry("changed.txt", MTIME + 60)], [readable], versions_keep_days=30)
    assert [len(u.versions) for u in p.uploads] == [1] and p.unkept == 0


def test_an_archived_duplicate_is_removed_not_kept_as_a_version():
    live = stored("x.txt", MTIME + 5, storage_class="", md5=hashlib.md5(b"new").digest())
    old = stored("x.txt")    # another content: history would keep it
    p = plan([entry("x.txt", MTIME + 5)], [live, old], versions_keep_days=30)
    assert [(r.why, r.old) for r in p.removes] == [("duplicate", old)]
    assert p.renames == [] and p.unkept == 1


def test_mass_change_with_history_is_refused_when_the_old_copies_are_archived():
    objects = [stored(f"f{i}.txt") for i in range(20)]
    p = plan([entry(f"f{i}.txt", MTIME + 60) for i in range(20)], objects,
             versions_keep_days=30)
    with pytest.raises(esb.RefusedError, match="archive storage class.*--allow-mass-change"):
        esb.check_mass_change(p, history=True)
    readable = [stored(f"f{i}.txt", storage_class="GLACIER_IR") for i in range(20)]
    esb.check_mass_change(plan([entry(f"f{i}.txt", MTIME + 60) for i in range(20)], readable,
                               versions_keep_days=30), history=True)   # versions kept: allowed


# ------------------------------------------------------------------ pure helpers, config

@pytest.mark.parametrize("header, expected", [
    (None, esb.Thaw("archived")),
    ("", esb.Thaw("archived")),
    ('ongoing-request="true"', esb.Thaw("thawing")),
    ('ongoing-request="false", expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"',
     esb.Thaw("thawed", "2012-12-21T00:00:00Z")),
    ('ongoing-request="false", expiry-date="not a date"', esb.Thaw("thawed", "")),
])
def test_the_restore_header_gives_the_thaw_state(header, expected):
    assert esb.parse_restore_header(header) == expected


def test_deep_archive_has_no_expedited_tier_and_delays_name_the_slowest_class():
    assert esb.tier_for("DEEP_ARCHIVE", "Expedited") == "Standard"
    assert esb.tier_for("GLACIER", "Expedited") == "Expedited"
    assert esb.thaw_delay(["DEEP_ARCHIVE"], "Bulk") == "Bulk, typically within 48 hours"
    assert esb.thaw_delay(["GLACIER", "GLACIER"], "Standard") == "Standard, typically 3-5 hours"
    assert esb.thaw_delay(["DEEP_ARCHIVE", "GLACIER"], "Expedited") == (
        "Expedited, typically 1-5 minutes for GLACIER; "
        "Standard, typically within 12 hours for DEEP_ARCHIVE")


def config_with(monkeypatch, tmp_path, **env):
    for key, value in {"SRC_LOCAL_PATH": tmp_path, "DEST_S3_BUCKET": "b",
                       "ENCRYPTION_PASSWORD": PASSWORD, **env}.items():
        monkeypatch.setenv(key, str(value))
    return esb.load_config(None)[0]


def test_thaw_settings_come_from_the_environment_with_their_defaults(monkeypatch, tmp_path):
    config = config_with(monkeypatch, tmp_path)
    assert (config.thaw_days, config.thaw_tier) == (7, "Bulk")
    config = config_with(monkeypatch, tmp_path, THAW_DAYS="2", THAW_TIER="expedited")
    assert (config.thaw_days, config.thaw_tier) == (2, "Expedited")
    with pytest.raises(esb.ConfigError) as raised:
        config_with(monkeypatch, tmp_path, THAW_DAYS="0", THAW_TIER="fast")
    assert "thaw_days (environment THAW_DAYS)" in raised.value.message
    assert "thaw_tier (environment THAW_TIER): 'fast' is not one of: bulk, standard, " \
        "expedited" in raised.value.message


def test_an_archive_class_warns_about_the_setting_that_needs_renames(monkeypatch, tmp_path):
    config = config_with(monkeypatch, tmp_path, DEST_STORAGE_CLASS="DEEP_ARCHIVE",
                         VERSIONS_KEEP_DAYS=30)
    versions, = esb.archive_warnings(config)           # deletions need no rename: a mark
    assert "DEEP_ARCHIVE" in versions
    assert "set versions_keep_days to 0" in versions and "GLACIER_IR" in versions
    config = config_with(monkeypatch, tmp_path, DEST_STORAGE_CLASS="glacier",
                         DELETED_KEEP_DAYS=0, VERSIONS_KEEP_DAYS=0)
    assert esb.archive_warnings(config) == []
    config = config_with(monkeypatch, tmp_path, DEST_STORAGE_CLASS="GLACIER_IR",
                         DELETED_KEEP_DAYS=None)
    assert esb.archive_warnings(config) == []


def test_no_thaw_needs_restore_or_verify():
    with pytest.raises(SystemExit):
        esb.parse_args(["--no-thaw"])
    assert esb.parse_args(["--verify", "--no-thaw"]).no_thaw


# ----------------------------------------------------------------- the storage, on moto

def test_s3_lists_storage_classes_and_refuses_to_read_or_copy_an_unthawed_object(
        moto_bucket):
    storage = esb.S3Storage(s3_config(moto_bucket, storage_class="DEEP_ARCHIVE"))
    storage.prepare(create=False)
    storage.store("", lambda sink: sink.write(b"cold"), lambda _: "cold.enc")
    assert [(e.key, e.storage_class) for e in storage.list_files(esb.ListReport())] == [
        ("cold.enc", "DEEP_ARCHIVE")]
    with pytest.raises(esb.TransferError, match="InvalidObjectState: the object is in an "
                                                "archive storage class"):
        with storage.open("cold.enc") as stream:
            stream.read()
    with pytest.raises(esb.TransferError, match="ObjectNotInActiveTierError"):
        storage.rename("cold.enc", "warm.enc", 4)
    thaws_under_way(moto_bucket)
    assert storage.thaw_state("cold.enc") == esb.Thaw("archived")
    assert storage.thaw("cold.enc", 2, "Bulk") is True
    assert storage.thaw_state("cold.enc") == esb.Thaw("thawing")
    thaws_done(moto_bucket)
    state = storage.thaw_state("cold.enc")
    until = datetime.datetime.strptime(state.until, "%Y-%m-%dT%H:%M:%SZ").date()
    assert state.state == "thawed"
    assert 1 <= (until - datetime.datetime.utcnow().date()).days <= 3      # 2 days asked
    assert esb.S3Storage(s3_config(moto_bucket)).open("cold.enc").read() == b"cold"
    with pytest.raises(esb.MissingError):
        storage.thaw_state("nothing.enc")


def test_asking_to_thaw_what_is_not_archived_fails_for_that_object(moto_bucket):
    storage = esb.S3Storage(s3_config(moto_bucket))
    storage.store("", lambda sink: sink.write(b"warm"), lambda _: "warm.enc")
    with pytest.raises(esb.TransferError, match="InvalidObjectState"):
        storage.thaw("warm.enc", 1, "Bulk")


def test_a_local_folder_has_nothing_archived(tmp_path):
    local = esb.LocalStorage(str(tmp_path))
    assert local.thaw_state("any") == esb.Thaw("thawed")
    assert local.thaw("any", 1, "Bulk") is False


# ------------------------------------------------------------------ whole runs, on moto

def test_deleted_files_under_deep_archive_are_marked_and_stay_deleted(archive_tool,
                                                                         moto_bucket,
                                                                         monkeypatch):
    """Deleted means deleted on every storage class: the archived object keeps its live
    name (the existing tool still sees one .enc per path) and a mark says it is deleted,
    for restore, list, --restore-deleted, expiry and the mass-delete guard alike."""
    tool = archive_tool
    code, out, err = tool()
    assert code == 0 and "dest.storage_class" not in err, err
    assert set(classes(moto_bucket).values()) == {"DEEP_ARCHIVE"}
    (tool.src / "docs/b.bin").unlink()
    (tool.src / "c.txt").unlink()
    code, out, err = tool("--dry-run")
    assert code == 0 and "2 to rename, 0 to remove" in out, err
    assert "would mark deleted docs/b.bin" in out
    code, out, err = tool()
    assert code == 0 and "2 marked deleted" in out and "COPY" not in requests_line(out), err
    keys = tool.keys()
    assert sorted(k[-4:] for k in keys) == [".del", ".del", ".enc", ".enc", ".enc"]
    assert len([k for k in keys if k.endswith(".enc")]) == 3       # names as they were
    code, out, err = tool()                                        # a second run: nothing
    assert code == 0 and "marked deleted" not in out and tool.keys() == keys, err

    code, out, _ = tool("--list", "--json")
    assert {r["path"]: r["deleted"] for r in json.loads(out)} == {
        "a.txt": None, "docs/b.bin": esb.date_number(esb.today()),
        "c.txt": esb.date_number(esb.today())}
    thaws_under_way(moto_bucket)
    code, out, err = tool("--restore")
    assert code == 4 and restore_requests(out) == 1, err   # the live file's object only
    thaws_done(moto_bucket)
    code, out, err = tool("--restore")
    assert code == 0 and tool.restored() == {"a.txt": b"alpha\n" * 100}, err
    thaws_under_way(moto_bucket)
    code, out, err = tool("--restore", "--restore-deleted")
    assert code == 4 and restore_requests(out) == 2, err   # and now the deleted ones'
    code, out, err = tool("--verify")                      # marks hold no content: left out
    assert code == 4 and "verify" in out and restore_requests(out) == 0, err
    thaws_done(moto_bucket)
    code, out, err = tool("--verify")
    assert code == 0 and "3 verified" in out and "FAILED" not in err, err

    later = esb.today() + datetime.timedelta(days=3)
    monkeypatch.setattr(esb, "today", lambda: later)
    tool.set(DELETED_KEEP_DAYS=2)
    code, out, err = tool()
    assert code == 0 and "1 expired" not in out and "2 expired" in out, err
    assert "2 deletion marks removed" in out
    assert set(tool.objects()) == {"a.txt"} and len(tool.keys()) == 1


def test_an_archived_deleted_object_of_a_file_that_came_back_is_uploaded_again(
        make_tool, moto_bucket):
    tool = make_tool(moto_bucket)
    tool.write("a.txt", b"alpha\n")
    tool.write("b.txt", b"bravo\n")
    assert tool()[0] == 0
    (tool.tmp / "b.keep").write_bytes((tool.src / "b.txt").read_bytes())
    (tool.src / "b.txt").unlink()
    assert tool()[0] == 0                  # marked deleted, in STANDARD
    marked = next(k for k, n in ((k, esb.decode_name(k, tool.codec())) for k in tool.keys())
                  if n.deleted)
    moto_bucket.client.copy_object(        # what a lifecycle rule does after some days
        Bucket=moto_bucket.name, Key=marked, StorageClass="DEEP_ARCHIVE",
        CopySource={"Bucket": moto_bucket.name, "Key": marked})
    assert classes(moto_bucket)[marked] == "DEEP_ARCHIVE"
    tool.write("b.txt", (tool.tmp / "b.keep").read_bytes())
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and "FAILED" not in err, err
    assert marked not in classes(moto_bucket)
    assert {n.path: n.deleted for n in tool.objects().values()} == {"a.txt": 0, "b.txt": 0}


def test_history_under_deep_archive_removes_the_old_object_and_says_so(archive_tool):
    tool = archive_tool
    tool.set(VERSIONS_KEEP_DAYS=30, DELETED_KEEP_DAYS=0)
    assert tool()[0] == 0
    tool.write("a.txt", b"changed\n", MTIME + 60)
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and "FAILED" not in err, err
    assert "VERSIONS_KEEP_DAYS" in err
    assert "1 old contents were removed, not kept as versions" in out
    assert not [k for k in tool.keys() if k.endswith(".ver")]


def test_restore_asks_for_thaws_once_and_finishes_after_them(archive_tool, moto_bucket):
    tool = archive_tool
    tool.set(DEST_STORAGE_CLASS="STANDARD")
    tool.write("warm.txt", b"readable at once\n")
    assert tool()[0] == 0                          # warm.txt (and the rest) in STANDARD ...
    tool.set(DEST_STORAGE_CLASS="DEEP_ARCHIVE", DELETED_KEEP_DAYS=0)
    for rel in ("a.txt", "docs/b.bin", "c.txt"):   # ... then these three rewritten, archived
        data = (tool.src / rel).read_bytes()
        tool.write(rel, data, MTIME + 3600)
    assert tool()[0] == 0
    archived = sorted(k for k, c in classes(moto_bucket).items() if c == "DEEP_ARCHIVE")
    assert len(archived) == 3
    thaws_under_way(moto_bucket)

    code, out, err = tool("--restore")
    assert code == esb.EXIT_THAWING == 4, err
    assert "requesting 3 objects from the archive (Bulk, typically within 48 hours)" in out
    assert out.index("requesting 3 objects") < out.index("restore done")
    assert ("3 objects requested from the archive (Bulk, typically within 48 hours); run "
            "the same command again later") in out
    assert restore_requests(out) == 3
    assert tool.restored() == {"warm.txt": b"readable at once\n"}      # what could be read
    assert {restore_header(moto_bucket, k) for k in archived} == {'ongoing-request="true"'}

    code, out, err = tool("--restore")              # still thawing: nothing asked again
    assert code == 4, err
    assert "3 objects are still thawing (asked for earlier)" in out
    assert restore_requests(out) == 0 and "requested from the archive" not in out

    thaws_done(moto_bucket)
    code, out, err = tool("--restore")
    assert code == 0, err
    assert restore_requests(out) == 0 and "archive" not in out.split("restore done")[1]
    assert tool.restored() == tree(tool.src)            # byte for byte
    assert tree(tool.restore, "md5+mtime") == tree(tool.src, "md5+mtime")


def test_verify_asks_for_thaws_and_checks_everything_after_them(archive_tool, moto_bucket):
    tool = archive_tool
    tool.set(THAW_TIER="standard", THAW_DAYS=1)
    assert tool()[0] == 0
    thaws_under_way(moto_bucket)
    code, out, err = tool("--verify")
    assert code == 4 and err == "", err
    assert ("3 objects requested from the archive (Standard, typically within 12 hours); "
            "run the same command again later") in out
    assert "readable for 1 days" in out and restore_requests(out) == 3
    assert "verify done: 0 failed" in out                # nothing was readable yet
    code, out, err = tool("--verify")
    assert code == 4 and restore_requests(out) == 0, err
    thaws_done(moto_bucket)
    code, out, err = tool("--verify")
    assert code == 0 and "3 verified" in out and restore_requests(out) == 0, err


def test_a_damaged_thawed_object_fails_verify_with_exit_1_not_4(archive_tool, moto_bucket):
    tool = archive_tool
    assert tool()[0] == 0
    key = next(k for k in tool.keys() if k.startswith("a.txt."))
    thaws_under_way(moto_bucket)
    assert tool("--verify")[0] == 4
    thaws_done(moto_bucket)
    data = moto_bucket.client.get_object(Bucket=moto_bucket.name, Key=key)["Body"].read()
    moto_bucket.client.put_object(Bucket=moto_bucket.name, Key=key,
                                  Body=data[:-1] + bytes([data[-1] ^ 1]))   # now STANDARD
    code, out, err = tool("--verify")
    assert code == 1 and "FAILED verify a.txt" in err


def test_glacier_ir_reads_and_renames_like_standard(make_tool, moto_bucket):
    tool = make_tool(moto_bucket, DEST_STORAGE_CLASS="GLACIER_IR")
    tool.write("a.txt", b"instant\n")
    tool.write("b.txt", b"gone soon\n")
    code, out, err = tool()
    assert code == 0 and err == "", err           # no warning: nothing is refused
    assert set(classes(moto_bucket).values()) == {"GLACIER_IR"}
    (tool.src / "b.txt").unlink()
    code, out, err = tool()
    assert code == 0 and "1 marked deleted" in out, err
    code, out, err = tool("--restore", "--restore-deleted")
    assert code == 0 and restore_requests(out) == 0 and "archive" not in out, err
    assert tool.restored() == {"a.txt": b"instant\n", "b.txt": b"gone soon\n"}
    rows = json.loads(tool("--list", "--json")[1])
    assert [(r["storage_class"], "thaw" in r) for r in rows] == [("GLACIER_IR", False)] * 2


def test_no_thaw_leaves_archived_objects_and_asks_for_nothing(archive_tool, moto_bucket):
    tool = archive_tool
    assert tool()[0] == 0
    thaws_under_way(moto_bucket)
    code, out, err = tool("--restore", "--no-thaw")
    assert code == 4, err
    assert "3 objects are in the archive and were not requested (--no-thaw)" in out
    assert restore_requests(out) == 0 and tool.restored() == {}
    assert {restore_header(moto_bucket, k) for k in tool.keys()} == {None}


def test_dry_run_counts_the_thaws_it_would_ask_for(archive_tool, moto_bucket):
    tool = archive_tool
    assert tool()[0] == 0
    code, out, err = tool("--restore", "--dry-run")
    assert code == 0, err
    assert "would request 3 objects from the archive (Bulk, typically within 48 hours)" in out
    assert restore_requests(out) == 0 and not tool.restore.exists()
    assert {restore_header(moto_bucket, k) for k in tool.keys()} == {None}


def test_list_shows_the_storage_class_and_thaw_state(archive_tool, moto_bucket):
    tool = archive_tool
    assert tool()[0] == 0
    rows = json.loads(tool("--list", "--json")[1])
    assert {(r["path"], r["storage_class"], r["thaw"], r["thawed_until"]) for r in rows} == {
        (p, "DEEP_ARCHIVE", "archived", None) for p in ("a.txt", "docs/b.bin", "c.txt")}
    code, out, err = tool("--list")
    assert code == 0 and out.count("[DEEP_ARCHIVE, archived]") == 3, err
    thaws_under_way(moto_bucket)
    assert tool("--restore", "--restore-only", "a.txt")[0] == 4
    rows = {r["path"]: r for r in json.loads(tool("--list", "--json")[1])}
    assert rows["a.txt"]["thaw"] == "thawing" and rows["c.txt"]["thaw"] == "archived"
    thaws_done(moto_bucket)
    rows = {r["path"]: r for r in json.loads(tool("--list", "--json")[1])}
    assert rows["a.txt"]["thaw"] == "thawed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["a.txt"]["thawed_until"])
    code, out, _ = tool("--list", "--restore-only", "a.txt")
    assert f"[DEEP_ARCHIVE, thawed until {rows['a.txt']['thawed_until']}]" in out


def test_encrypted_names_keep_their_storage_class(make_tool, moto_bucket):
    tool = make_tool(moto_bucket, encrypt_filenames=True, DEST_STORAGE_CLASS="GLACIER",
                     DELETED_KEEP_DAYS=0)
    tool.write("secret name.txt", b"hush\n")
    code, out, err = tool()
    assert code == 0 and err == "", err
    thaws_under_way(moto_bucket)
    code, out, err = tool("--restore")
    assert code == 4 and "1 objects requested from the archive (Bulk, typically 5-12 " \
        "hours)" in out, err
    thaws_done(moto_bucket)
    assert tool("--restore")[0] == 0
    assert tool.restored() == {"secret name.txt": b"hush\n"}


# ------------------------------------------------- the driver's pieces, and its failures

def test_list_objects_keeps_the_class_of_every_object_outside_standard(moto_bucket):
    storage = esb.S3Storage(s3_config(moto_bucket))
    for key, storage_class in (("a.enc", "DEEP_ARCHIVE"), ("b.ver", "GLACIER_IR"),
                               ("c.enc", "STANDARD"), ("other.txt", "GLACIER")):
        moto_bucket.client.put_object(Bucket=moto_bucket.name, Key=key, Body=b"x",
                                      StorageClass=storage_class)
    listed = esb.list_objects(storage, esb.ListReport())
    assert [(e.key, e.size, e.storage_class) for e in listed] == [
        ("a.enc", 1, "DEEP_ARCHIVE"), ("b.ver", 1, "GLACIER_IR"), ("c.enc", 1, "")]
    again = esb.Listing()                   # as a helper process sends it: in chunks
    again.append("z.enc", 2)
    again.extend(pickle.loads(pickle.dumps(listed)))
    assert [e.storage_class for e in again] == ["", "DEEP_ARCHIVE", "GLACIER_IR", ""]


def test_thaw_states_and_requests_give_each_key_its_answer_or_its_failure(moto_bucket):
    storage = esb.S3Storage(s3_config(moto_bucket))
    for key, storage_class in (("cold.enc", "GLACIER"), ("warm.enc", "STANDARD")):
        moto_bucket.client.put_object(Bucket=moto_bucket.name, Key=key, Body=b"x",
                                      StorageClass=storage_class)
    thaws_under_way(moto_bucket)
    states = esb.thaw_states(storage, ["cold.enc", "gone.enc"], 4)
    assert states == [esb.Thaw("archived"), "gone.enc no longer exists"]
    answers = esb.send_thaws(storage, [("cold.enc", "Bulk"), ("warm.enc", "Bulk")], 1, 4)
    assert answers[0] is True and "InvalidObjectState" in answers[1]
    assert esb.thaw_states(storage, ["cold.enc"], 4) == [esb.Thaw("thawing")]


class _RestoreInProgress:
    """A client whose RestoreObject answers as AWS does while a thaw is under way (moto
    never does: it accepts the request again)."""

    def restore_object(self, **kwargs):
        from botocore.exceptions import ClientError
        raise ClientError({"Error": {"Code": "RestoreAlreadyInProgress",
                                     "Message": "Object restore is already in progress"}},
                          "RestoreObject")


def test_a_thaw_under_way_already_is_not_an_error(moto_bucket, monkeypatch):
    storage = esb.S3Storage(s3_config(moto_bucket))
    monkeypatch.setattr(esb.S3Storage, "client", _RestoreInProgress())
    assert storage.thaw("cold.enc", 1, "Bulk") is False


def test_failed_state_and_thaw_requests_fail_their_files_and_the_run(archive_tool, monkeypatch):
    """One object whose HeadObject fails, one whose RestoreObject fails and one already
    thawing by AWS's answer: each is counted where it belongs (the requests are made in a
    helper process forked from this one, which inherits these patches)."""
    tool = archive_tool
    assert tool()[0] == 0

    def thaw_state(self, key):
        if key.startswith("a.txt"):
            raise esb.TransferError("S3 error SlowDown")
        return esb.Thaw("archived")

    def thaw(self, key, days, tier):
        if key.startswith("c.txt"):
            raise esb.TransferError("S3 error AccessDenied")
        return False                               # AWS: RestoreAlreadyInProgress

    monkeypatch.setattr(esb.S3Storage, "thaw_state", thaw_state)
    monkeypatch.setattr(esb.S3Storage, "thaw", thaw)
    code, out, err = tool("--restore")
    assert code == 1
    assert "FAILED thaw a.txt: S3 error SlowDown" in err
    assert "FAILED thaw c.txt: S3 error AccessDenied" in err
    assert "1 objects are still thawing (asked for earlier)" in out
    code, out, err = tool("--verify")
    assert code == 1 and "2 failed" in out and "FAILED thaw a.txt" in err
    code, out, err = tool("--restore", "--dry-run")
    assert code == 1 and "FAILED thaw a.txt: S3 error SlowDown" in err
    assert "would request 2 objects from the archive" in out
    code, out, err = tool("--list")
    assert code == 1 and "cannot tell the thaw state of a.txt: S3 error SlowDown" in err
