"""History: version objects (.ver), point-in-time restore (--as-of), the mass-change guard.

The planner's decisions are checked case by case as pure functions; the rest end to end
through main() against a local folder and a real S3 server, as users run it.
"""

import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, esb, plan_three_ways, process_env, tree
from hypothesis import assume, given, settings
from hypothesis import strategies as st

TODAY = datetime.date(2026, 11, 30)
STAMP = esb.date_number(TODAY)
NOON = esb.noon(TODAY)                 # the moment of a plan made for TODAY
MTIME = 1_700_000_000
NOW = int(datetime.datetime.now().timestamp())
YESTERDAY = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
OLD_MD5, NEW_MD5 = hashlib.md5(b"old").digest(), hashlib.md5(b"new").digest()


# ------------------------------------------------------------------------------- helpers

def stored(path, mtime=MTIME, size=3, md5=OLD_MD5, deleted=0, version=False):
    name = esb.BackupName(path, mtime, size, md5, deleted, version)
    return esb.Stored(None, size + 48, name)


def entry(path, mtime=MTIME + 60, size=3):
    return esb.Entry(path, size, mtime)


def plan(source, objects, versions_keep_days=30, keep_days=None, today=TODAY):
    return plan_three_ways(source, objects, today, keep_days, (), versions_keep_days)


def actions(p):
    """Every decision of a plan as comparable tuples."""
    out = [("upload", u.path, tuple(u.replaces), tuple((v.old, v.name) for v in u.versions))
           for u in p.uploads]
    out += [(r.why, r.old, r.name) for r in p.renames]
    out += [(r.why, r.old) for r in p.removes]
    return sorted(out, key=repr)


# ------------------------------------------------------------------------ the planner

def test_a_changed_file_keeps_its_old_object_as_a_version_once_the_new_one_is_stored():
    old = stored("a.txt")
    p = plan([entry("a.txt")], [old])
    assert actions(p) == [("upload", "a.txt", (), (
        (old, old.name._replace(deleted=esb.version_stamp(NOON, 30), version=True)),))]
    assert p.changed == 1 and p.live == 1
    assert esb.encode_name(p.uploads[0].versions[0].name, esb.Codec(encrypt=False)).endswith(
        ".ver")


def test_without_history_a_changed_file_replaces_its_old_object_as_before():
    old = stored("a.txt")
    p = plan([entry("a.txt")], [old], versions_keep_days=0)
    assert actions(p) == [("upload", "a.txt", (old.key,), ())]
    assert p.changed == 1


@pytest.mark.parametrize("kept, keep, age, gone", [
    (30, 30, 29, False), (30, 30, 30, True), (1, 1, 0, False), (1, 1, 1, True),
    (30, 7, 29, False), (30, 7, 30, True),       # a lowered setting: the version's own days
    (30, 0, 29, False), (30, 0, 30, True),       # history off: the same
    (7, 30, 7, False), (7, 30, 30, True),        # a raised one: the longer
    (None, 30, 29, False), (None, 30, 30, True),  # from before stamps: the setting's days ...
    (None, 0, 0, False), (None, 0, 900, False)])  # ... and kept while history is off
def test_versions_expire_by_the_longer_of_their_own_days_and_the_setting(kept, keep, age,
                                                                         gone):
    replaced = TODAY - datetime.timedelta(days=age)
    deleted = esb.date_number(replaced) if kept is None else esb.version_stamp(
        esb.noon(replaced) - 3600, kept)
    version = stored("a.txt", md5=NEW_MD5, deleted=deleted, version=True)
    live = stored("a.txt", mtime=MTIME + 60)
    p = plan([entry("a.txt")], [live, version], versions_keep_days=keep)
    assert actions(p) == ([("expire version", version)] if gone else [])
    assert p.unchanged == 1
    assert p.outliving == (not gone and esb.version_expired(version.name, TODAY, keep, True))


@pytest.mark.parametrize("keep, removed", [(0, 3), (7, 2), (30, 0)])
def test_expire_versions_applies_the_setting_to_every_version(keep, removed):
    """--expire-versions: the setting as it is now, whatever each version was kept under."""
    versions = [stored("a.txt", md5=bytes([n]) * 16, version=True, deleted=esb.version_stamp(
        esb.noon(TODAY - datetime.timedelta(days=age)), 30)) for n, age in enumerate((1, 9))]
    versions.append(stored("a.txt", md5=b"\7" * 16, deleted=STAMP - 20, version=True))
    live = stored("a.txt", mtime=MTIME + 60)
    p = esb.plan_backup([entry("a.txt")], [live, *versions], TODAY, None, (), keep,
                        expire_versions=True)
    assert len(p.removes) == removed and all(r.why == "expire version" for r in p.removes)


def test_a_version_stamp_reads_back_and_is_never_taken_for_a_day():
    for moment, days in [(1_000, 1), (NOON, 30), (2 ** 40, esb.STAMP_DAYS - 1)]:
        stamp = esb.version_stamp(moment, days)
        assert stamp >= esb.STAMP_MIN > 99991231 and esb.read_stamp(stamp) == (moment, days)
        name = esb.BackupName("a", MTIME, 3, OLD_MD5, stamp, True)
        key = esb.encode_name(name, esb.Codec(encrypt=False))
        assert esb.decode_name(key, esb.Codec(encrypt=False)) == name
    assert esb.read_stamp(STAMP) is None and esb.read_stamp(99991231) is None
    assert esb.replaced_on(esb.BackupName("a", 1, 1, OLD_MD5, esb.version_stamp(NOON, 3),
                                          True)) == STAMP


def test_a_deleted_file_keeps_its_versions_and_follows_deleted_keep_days():
    version = stored("a.txt", md5=NEW_MD5, deleted=STAMP - 2, version=True)
    live = stored("a.txt", mtime=MTIME + 60)
    p = plan([], [live, version], keep_days=5)
    assert actions(p) == [("mark deleted", live, live.name.with_deleted(STAMP))]
    deleted = stored("a.txt", mtime=MTIME + 60, deleted=STAMP - 5)
    p = plan([], [deleted, version], keep_days=5)
    assert actions(p) == [("expire", deleted)]             # the version stays


def test_a_file_back_with_new_content_keeps_its_deleted_object_as_a_version_of_that_day():
    deleted = stored("a.txt", deleted=STAMP - 3)
    p = plan([entry("a.txt")], [deleted])
    start = esb.day_start(STAMP - 3)          # gone since that day began, as a deletion says
    assert actions(p) == [("upload", "a.txt", (), (
        (deleted, deleted.name._replace(deleted=esb.version_stamp(start, 30), version=True)),))]
    assert p.changed == 0            # not a live file: no part of a mass change


def test_a_version_alone_is_not_taken_for_the_current_object():
    version = stored("a.txt", mtime=MTIME + 60, deleted=STAMP - 1, version=True)
    p = plan([entry("a.txt")], [version])
    assert actions(p) == [("upload", "a.txt", (), ())] and p.live == 0


def test_crash_leftovers_become_versions_unless_their_content_is_kept_already():
    """A run killed between storing the new object and renaming the old one leaves two
    .enc objects: the next run keeps the other content as a version (once), and removes
    what is only a copy."""
    new = stored("a.txt", mtime=MTIME + 60, md5=NEW_MD5)
    old = stored("a.txt", md5=OLD_MD5)
    same = stored("a.txt", mtime=MTIME + 30, md5=NEW_MD5)
    p = plan([entry("a.txt")], [new, old, same])
    assert actions(p) == sorted([("keep version", old, old.name.as_version(
                                     esb.version_stamp(NOON, 30))),
                                 ("duplicate", same)], key=repr)
    kept = stored("a.txt", md5=OLD_MD5, deleted=STAMP - 1, version=True)
    p = plan([entry("a.txt")], [new, old, kept])
    assert actions(p) == [("duplicate", old)]
    p = plan([entry("a.txt")], [new, old], versions_keep_days=0)
    assert actions(p) == [("duplicate", old)]


def test_a_changed_file_with_crash_leftovers_keeps_each_content_once():
    live = stored("a.txt", mtime=MTIME + 30, md5=NEW_MD5)
    older = stored("a.txt", md5=OLD_MD5)
    copy = stored("a.txt", mtime=MTIME + 10, md5=NEW_MD5)
    p = plan([entry("a.txt", mtime=MTIME + 99)], [live, older, copy])
    upload, = p.uploads
    assert upload.replaces == (copy.key,)
    assert [v.old for v in upload.versions] == [live, older]


def test_blind_paths_keep_their_versions():
    version = stored("dir/a.txt", deleted=STAMP - 400, version=True)
    p = plan_three_ways([], [version], TODAY, 0, ("dir/",), 30)
    assert actions(p) == []


@pytest.mark.parametrize("live, changed, refused", [(100, 50, False), (100, 51, True),
                                                    (20, 10, False), (21, 11, True),
                                                    (22, 11, False)])
def test_mass_change_guard(live, changed, refused):
    source = [entry(f"f{i}", mtime=MTIME + (60 if i < changed else 0)) for i in range(live)]
    objects = [stored(f"f{i}") for i in range(live)]
    p = plan(source, objects, versions_keep_days=0)
    assert (p.changed, p.live) == (changed, live)
    if refused:
        with pytest.raises(esb.RefusedError) as caught:
            esb.check_mass_change(p)
        message = caught.value.message
        assert f"{changed} of {live}" in message and "--allow-mass-change" in message
        assert "versions_keep_days" in message and caught.value.exit_code == 2
    else:
        esb.check_mass_change(p)


# ------------------------------------------------------------------------ --as-of

def at(day, hour=12):
    return int(datetime.datetime(day.year, day.month, day.day, hour).timestamp())


def test_state_at_picks_what_was_current_then():
    d = [TODAY - datetime.timedelta(days=n) for n in range(10)]
    v1 = stored("a", mtime=at(d[9]), md5=OLD_MD5, deleted=esb.date_number(d[6]), version=True)
    v2 = stored("a", mtime=at(d[6]), md5=NEW_MD5, deleted=esb.date_number(d[3]), version=True)
    live = stored("a", mtime=at(d[3]), md5=b"\1" * 16)
    objects = [v1, v2, live]

    def state(day, hour=23):
        return esb.state_at(objects, esb.AsOf(esb.date_number(day), at(day, hour)))

    assert state(TODAY - datetime.timedelta(days=12)) is None     # before the file existed
    assert state(d[9]) is v1 and state(d[7]) is v1
    assert state(d[6], hour=1) is None   # days, not times: v1 was replaced that day and v2
                                         # written later that day
    assert state(d[6]) is v2 and state(d[4]) is v2
    assert state(d[3]) is live and state(d[0]) is live


def test_state_at_leaves_out_a_file_deleted_on_or_before_that_day():
    gone = stored("a", mtime=MTIME, deleted=STAMP - 1)
    day_before = esb.parse_as_of((TODAY - datetime.timedelta(days=2)).isoformat())
    assert esb.state_at([gone], day_before) is gone
    assert esb.state_at([gone], esb.parse_as_of((TODAY - datetime.timedelta(days=1))
                                                .isoformat())) is None


def test_select_for_restore_ignores_versions_without_as_of():
    version = stored("a", deleted=STAMP, version=True)
    only_version = stored("b", deleted=STAMP, version=True)
    live = stored("a", mtime=MTIME + 5, md5=NEW_MD5)
    assert esb.select_for_restore([version, only_version, live], True) == [live]


@pytest.mark.parametrize("text, day, moment", [
    ("2026-11-02", 20261102, (2026, 11, 2, 23, 59, 59)),
    ("2026-11-02T08:30", 20261102, (2026, 11, 2, 8, 30, 0)),
    ("2026-11-02T08:30:15", 20261102, (2026, 11, 2, 8, 30, 15)),
    (" 2026-11-02 08:30 ", 20261102, (2026, 11, 2, 8, 30, 0))])
def test_parse_as_of(text, day, moment):
    assert esb.parse_as_of(text) == (day, int(datetime.datetime(*moment).timestamp()))


@pytest.mark.parametrize("argv, message", [
    (["--restore", "--as-of", "yesterday"], "is not a date"),
    (["--restore", "--as-of", "2026-13-01"], "is not a date"),
    (["--restore", "--as-of", "2026-11-31"], "is not a date"),
    (["--list", "--as-of", "02.11.2026"], "YYYY-MM-DD"),
    (["--as-of", "2026-11-02"], "--as-of needs --restore, --verify or --list"),
    (["--restore", "--restore-deleted", "--as-of", "2026-11-02"], "leave out"),
    (["--list", "--versions", "--as-of", "2026-11-02"], "leave out"),
    (["--restore", "--versions"], "--versions needs --list")])
def test_as_of_and_versions_usage_errors_are_one_line_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        esb.main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and message in err
    assert err.strip().splitlines()[-1].startswith("encrypted_s3_backup.py: error:")


# ------------------------------------------------------------------------ end to end

FILES = {f"docs/file{i:02d}.txt": f"the original text of file {i}\n".encode() * (i + 1)
         for i in range(12)}


@pytest.fixture(params=["local", "s3"])
def tool(request, make_tool):
    """The tool, its destination a local folder or the test's S3 bucket.  A bucket (where a
    rename is a copy) runs the ransomware cycle; what only reads names (--list --versions,
    --as-of's choice) runs on the folder (LOCAL_ONLY)."""
    if request.param == "local":
        return make_tool()
    return make_tool(request.getfixturevalue("s3_bucket"))


LOCAL_ONLY = pytest.mark.parametrize("tool", ["local"], indirect=True)


def objects_by_kind(tool):
    """{".enc": {path: [BackupName]}, ".ver": {...}} of the destination's objects."""
    codec = tool.codec()
    out = {".enc": {}, ".ver": {}}
    for key in tool.keys():
        name = esb.decode_name(key, codec)
        out[key[-4:]].setdefault(name.path, []).append(name)
    return out


def enc_contents(tool):
    """What the existing tool sees: the .enc objects only (it lists `*.enc`), decoded."""
    codec, storage = tool.codec(), tool.storage()
    out = {}
    for key in tool.keys():
        if key.endswith(".enc"):
            name = esb.decode_name(key, codec)
            assert name.path not in out, f"two .enc objects for {name.path}"
            with storage.open(key) as src:
                out[name.path] = decoded_bytes(src, name, codec)
    return out


def decoded_bytes(src, name, codec):
    from conftest import decoded
    return decoded(src, name.size, name.md5, codec)


def back_up_originals(tool):
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    code, _, err = tool()
    assert code == 0, err


def encrypt_in_place(tool):
    """What ransomware does: every file rewritten with random bytes, mtime now."""
    for rel in FILES:
        tool.write(rel, os.urandom(200), NOW)


def test_ransomware_is_refused_without_history_and_undone_with_it(tool):
    back_up_originals(tool)
    before = tool.keys()
    encrypt_in_place(tool)

    code, out, err = tool()
    assert code == esb.EXIT_USAGE == 2
    assert "refusing to replace 12 of 12 backed-up files" in err
    assert "--allow-mass-change" in err and "versions_keep_days" in err
    assert tool.keys() == before                             # nothing changed

    tool.set(VERSIONS_KEEP_DAYS=30)
    code, out, err = tool()
    assert code == esb.EXIT_ATTENTION == 5, err          # done, but someone must look
    assert "12 uploaded" in out and "12 versions kept" in out
    assert "12 of 12 backed-up files changed in this run" in err
    kinds = objects_by_kind(tool)
    assert {p: len(n) for p, n in kinds[".enc"].items()} == {p: 1 for p in FILES}
    assert {p: len(n) for p, n in kinds[".ver"].items()} == {p: 1 for p in FILES}
    assert all(esb.replaced_on(n[0]) == esb.date_number(esb.today())
               and esb.read_stamp(n[0].deleted)[1] == 30 for n in kinds[".ver"].values())
    encrypted = tree(tool.src)
    assert enc_contents(tool) == encrypted        # the existing tool sees the current state

    code, out, err = tool("--restore", "--as-of", YESTERDAY)
    assert code == 0, err
    assert tool.restored() == FILES and f"as of {YESTERDAY}" in out
    for rel in FILES:
        assert int(os.stat(tool.restore / rel).st_mtime) == MTIME
    code, _, err = tool("--restore", "--as-of", esb.today().isoformat())
    assert code == 0, err
    assert tool.restored() == encrypted
    shutil.rmtree(tool.restore)
    code, _, err = tool("--restore")                   # without --as-of: as it always was
    assert code == 0 and tool.restored() == encrypted, err
    code, out, err = tool("--verify")
    assert code == 0 and "24 verified" in out, err


def test_allow_mass_change_lets_one_run_replace_everything_without_history(local_tool):
    tool = local_tool
    back_up_originals(tool)
    encrypt_in_place(tool)
    code, out, err = tool("--allow-mass-change")
    assert code == 0 and "12 uploaded" in out, err
    assert objects_by_kind(tool)[".ver"] == {} and enc_contents(tool) == tree(tool.src)


@LOCAL_ONLY
def test_list_versions_shows_every_object_oldest_first(tool):
    tool.set(VERSIONS_KEEP_DAYS=10)
    tool.write("a.txt", b"one", MTIME)
    tool.write("b.txt", b"bee", MTIME)
    assert tool()[0] == 0
    tool.write("a.txt", b"two", MTIME + 100)
    assert tool()[0] == 0
    (tool.src / "b.txt").unlink()
    assert tool()[0] == 0
    code, out, err = tool("--list", "--versions", "--json")
    assert code == 0, err
    stamp = esb.date_number(esb.today())
    rows = json.loads(out)
    replaced_at = rows[0].pop("replaced_at")          # the second the second run started
    assert abs(esb.parse_as_of(replaced_at).moment - NOW) < 600
    assert rows == [
        {"path": "a.txt", "size": 3, "mtime": MTIME, "deleted": None, "kind": "version",
         "replaced": stamp, "kept_days": 10},
        {"path": "a.txt", "size": 3, "mtime": MTIME + 100, "deleted": None, "kind": "live"},
        {"path": "b.txt", "size": 3, "mtime": MTIME, "deleted": stamp, "kind": "deleted"}]
    code, out, _ = tool("--list", "--versions", "--restore-only", "a.txt")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith(f"a.txt  version, replaced {replaced_at}")
    assert "a.txt" in lines[1]
    code, out, _ = tool("--list", "--json")                 # without --versions: as before
    assert [r["path"] for r in json.loads(out)] == ["a.txt", "b.txt"]


def test_only_the_mtime_changed_keeps_no_version(local_tool):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=30)
    tool.write("a.txt", b"same content", MTIME)
    assert tool()[0] == 0
    tool.write("a.txt", b"same content", MTIME + 3600)
    code, out, err = tool()
    assert code == 0 and "1 uploaded" in out and "versions kept" not in out, err
    kinds = objects_by_kind(tool)
    assert kinds[".ver"] == {} and kinds[".enc"]["a.txt"][0].mtime == MTIME + 3600


def test_versions_expire_on_their_day_and_all_when_history_is_turned_off(local_tool,
                                                                           monkeypatch):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=3, DELETED_KEEP_DAYS=10)
    start = esb.today()
    tool.write("a.txt", b"one", MTIME)
    tool.write("b.txt", b"bee", MTIME)
    tool.write("c.txt", b"sea", MTIME)
    assert tool()[0] == 0
    tool.write("a.txt", b"two", MTIME + 1)
    tool.write("b.txt", b"bee two", MTIME + 1)
    (tool.src / "c.txt").unlink()
    assert tool()[0] == 0
    assert sorted(objects_by_kind(tool)[".ver"]) == ["a.txt", "b.txt"]

    def move_to(days):
        day = start + datetime.timedelta(days=days)
        monkeypatch.setattr(esb, "today", lambda: day)
        monkeypatch.setattr(esb, "now", lambda: esb.noon(day))

    move_to(2)
    code, out, _ = tool()
    assert code == 0 and "versions expired" not in out
    assert sorted(objects_by_kind(tool)[".ver"]) == ["a.txt", "b.txt"]
    move_to(3)
    tool.write("b.txt", b"bee three", MTIME + 2)      # a new version of b, replaced today
    code, out, _ = tool()
    assert code == 0 and "2 versions expired" in out and "1 versions kept" in out
    assert {p: [esb.replaced_on(n) for n in v]
            for p, v in objects_by_kind(tool)[".ver"].items()} == {
        "b.txt": [esb.date_number(start + datetime.timedelta(days=3))]}
    assert "c.txt" in objects_by_kind(tool)[".enc"]   # deleted files follow their own days

    kept = tool.keys()
    for lowered in (1, 0):           # history lowered, then off: the version keeps its 3 days
        tool.set(VERSIONS_KEEP_DAYS=lowered)
        code, out, _ = tool("--quiet")
        assert code == 0 and "versions expired" not in out and tool.keys() == kept
    code, out, _ = tool()
    assert "note: 1 version objects are kept longer than versions_keep_days (0)" in out
    move_to(6)
    code, out, _ = tool()                              # its own 3 days are over
    assert code == 0 and "1 versions expired" in out and objects_by_kind(tool)[".ver"] == {}


def test_expire_versions_removes_what_a_lowered_setting_keeps_and_says_how_many(local_tool):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=30)
    for n in range(3):
        tool.write("a.txt", b"content %d" % n, MTIME + n)
        assert tool()[0] == 0
    assert len(objects_by_kind(tool)[".ver"]["a.txt"]) == 2
    tool.set(VERSIONS_KEEP_DAYS=0)
    before = tool.keys()
    code, out, err = tool("--expire-versions", "--dry-run")
    assert code == 0 and "2 versions to expire" in out and tool.keys() == before, err
    code, out, err = tool("--quiet", "--expire-versions")
    assert code == 0, err
    assert "removed 2 version objects: --expire-versions applied versions_keep_days 0" in out
    assert objects_by_kind(tool)[".ver"] == {}
    with pytest.raises(SystemExit) as done:
        tool("--restore", "--expire-versions")                # for a backup only
    assert done.value.code == 2


def test_a_lowered_deleted_keep_days_that_expires_most_files_is_refused(local_tool,
                                                                       monkeypatch):
    tool = local_tool
    for n in range(30):
        tool.write(f"f{n:02d}.txt", b"x%d" % n, MTIME)
    assert tool()[0] == 0
    for n in range(18):
        (tool.src / f"f{n:02d}.txt").unlink()
    assert tool("--allow-mass-delete")[0] == 0      # 18 of 30 marked deleted: wanted
    later = esb.today() + datetime.timedelta(days=5)
    monkeypatch.setattr(esb, "today", lambda: later)
    before = tool.keys()
    tool.set(DELETED_KEEP_DAYS=2)                     # was: forever
    code, out, err = tool()
    assert code == 2 and tool.keys() == before
    line, = [x for x in err.splitlines() if "refusing" in x]
    assert "refusing to remove the objects of 18 deleted files at once" in line
    assert "deleted_keep_days" in line and "--allow-mass-delete" in line
    code, out, err = tool("--allow-mass-delete")
    assert code == 0 and len(tool.keys()) == 12, err


@LOCAL_ONLY
def test_as_of_a_time_of_the_same_day_restores_what_was_there_then(tool, monkeypatch):
    """Written in the morning, rewritten in the afternoon: the state in between comes back."""
    day = esb.today()

    def at_hour(hour):
        return int(datetime.datetime.combine(day, datetime.time(hour)).timestamp())

    tool.set(VERSIONS_KEEP_DAYS=30)
    tool.write("a.txt", b"morning", at_hour(9))
    tool.write("b.txt", b"untouched", at_hour(9))
    monkeypatch.setattr(esb, "now", lambda: at_hour(9) + 300)
    assert tool()[0] == 0
    tool.write("a.txt", b"afternoon", at_hour(14))
    monkeypatch.setattr(esb, "now", lambda: at_hour(14) + 300)
    assert tool()[0] == 0
    for when, expected in [("T12:00", b"morning"), ("T13:59:59", b"morning"),
                           ("T14:00", b"afternoon"), ("T14:06", b"afternoon")]:
        shutil.rmtree(tool.restore, ignore_errors=True)
        code, out, err = tool("--restore", "--as-of", day.isoformat() + when)
        assert code == 0, err
        assert tool.restored() == {"a.txt": expected, "b.txt": b"untouched"}, when


def test_history_with_encrypted_names(make_tool):
    tool = make_tool(encrypt_filenames=True, VERSIONS_KEEP_DAYS=5)
    tool.write("dir/a.txt", b"first", MTIME)
    assert tool()[0] == 0
    tool.write("dir/a.txt", b"second", NOW)
    assert tool()[0] == 0
    keys = tool.keys()
    assert len(keys) == 2 and all("/" not in k and "a.txt" not in k for k in keys)
    assert sorted(k[-4:] for k in keys) == [".enc", ".ver"]
    code, _, err = tool("--restore", "--as-of", YESTERDAY)
    assert code == 0 and tool.restored() == {"dir/a.txt": b"first"}, err


def test_dry_run_counts_versions_and_changes_nothing(local_tool, monkeypatch):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=2)
    tool.write("a.txt", b"one", MTIME)
    assert tool()[0] == 0
    tool.write("a.txt", b"two", MTIME + 1)
    assert tool()[0] == 0
    tool.write("a.txt", b"three", MTIME + 2)
    before = tool.keys()
    later = datetime.date.today() + datetime.timedelta(2)
    monkeypatch.setattr(esb, "today", lambda: later)
    monkeypatch.setattr(esb, "now", lambda: esb.noon(later))
    code, out, _ = tool("--dry-run")
    assert code == 0 and tool.keys() == before
    assert "would upload a.txt" in out and "would expire version a.txt" in out
    assert "up to 1 old contents to keep as versions, 1 versions to expire" in out


CRASH_AFTER_UPLOAD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb
def killed(worker, job, outcome):
    os.kill(os.getpid(), signal.SIGKILL)
esb.HANDLERS[esb.Upload] = esb.HANDLERS[esb.Upload]._replace(settle=killed)
sys.exit(esb.main(["--quiet"]))
"""


@pytest.mark.parametrize("history", [30, 0])
def test_a_crash_between_the_upload_and_the_rename_is_repaired_by_the_next_run(
        make_tool, history):
    tool = make_tool(processes=1, VERSIONS_KEEP_DAYS=history)
    tool.write("a.txt", b"good content", MTIME)
    assert tool()[0] == 0
    tool.write("a.txt", b"new content!", NOW)
    done = subprocess.run([sys.executable, "-c", CRASH_AFTER_UPLOAD, str(ROOT)],
                          env=process_env(**{k: os.environ[k] for k in esb.config_variables()
                                             if k in os.environ}),
                          capture_output=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [len(n) for n in objects_by_kind(tool)[".enc"].values()] == [2]   # both there

    code, out, err = tool()
    assert code == 0, err
    kinds = objects_by_kind(tool)
    assert [n.mtime for n in kinds[".enc"]["a.txt"]] == [NOW]
    assert enc_contents(tool) == {"a.txt": b"new content!"}
    if history:
        assert "1 versions kept" in out
        assert [n.mtime for n in kinds[".ver"]["a.txt"]] == [MTIME]
        code, _, _ = tool("--restore", "--as-of", YESTERDAY)
        assert code == 0 and tool.restored() == {"a.txt": b"good content"}
    else:
        assert "1 duplicates removed" in out and kinds[".ver"] == {}


# ------------------------------------------------------------------------ every case at once

MD5S = [hashlib.md5(bytes([i])).digest() for i in range(3)]
NEW = hashlib.md5(b"the content of this run").digest()

an_object = st.tuples(st.sampled_from([(3, MTIME), (3, MTIME + 1), (9, MTIME)]),
                      st.sampled_from(MD5S),
                      st.sampled_from([0, 20200101, STAMP - 1, STAMP]),
                      st.sampled_from([".enc", ".ver", ".del"]),
                      st.sampled_from(["", "DEEP_ARCHIVE"]))
a_path = st.tuples(st.one_of(st.none(), st.sampled_from([(3, MTIME), (3, MTIME + 2)])),
                   st.lists(an_object, max_size=4))


def key_of(name):
    return esb.format_plain_name(name) + esb.name_suffix(name)


def apply(objects, p):
    """The destination after every job of plan ``p`` succeeded; uploads store NEW."""
    after = dict(objects)
    for upload in p.uploads:
        new = esb.BackupName(upload.path, upload.mtime, upload.size, NEW)
        for key in upload.replaces:
            after.pop(key)
        for version in upload.versions:
            old = after.pop(version.old.key)
            if old.md5 != NEW:
                after[key_of(version.name)] = version.name
        after[key_of(new)] = new
    for rename in p.renames:
        after.pop(rename.old.key)
        after[key_of(rename.name)] = rename.name
    for mark in p.marks:
        after[key_of(mark.name)] = mark.name
    for remove in p.removes:
        after.pop(remove.old.key)
    return after


@settings(max_examples=200, deadline=None, database=None)    # (200 new ones every CI run)
@given(layout=st.dictionaries(st.sampled_from(["a", "a/b", "a.b", "b"]), a_path, max_size=4),
       versions_keep_days=st.sampled_from([0, 1, 30]),
       keep_days=st.sampled_from([None, 0, 1, 30]))
def test_after_any_run_one_enc_per_path_and_no_content_lost_that_history_keeps(
        layout, versions_keep_days, keep_days):
    source, objects, classes = [], {}, {}
    for path, (file, listed) in layout.items():
        if file:
            source.append(esb.Entry(path, *file))
        for (size, mtime), md5, deleted, suffix, storage_class in listed:
            name = esb.BackupName(path, mtime, size, md5, deleted, suffix == ".ver",
                                  suffix == ".del")
            assume(suffix == ".enc" or deleted)     # a version or a mark always has its day
            objects[key_of(name)] = name
            classes[key_of(name)] = "" if suffix == ".del" else storage_class
    stored_objects = [esb.Stored(None, n.size + 48, n, classes[k]) for k, n in objects.items()]
    p = plan_three_ways(source, stored_objects, TODAY, keep_days, (), versions_keep_days)
    # jobs run in parallel: no two may touch the same key (one writing what another removes)
    touched = [key for u in p.uploads for key in u.replaces]
    touched += [key for u in p.uploads for v in u.versions for key in (v.old.key,
                                                                        key_of(v.name))]
    touched += [key for r in p.renames for key in (r.old.key, key_of(r.name))]
    touched += [r.old.key for r in p.removes]
    touched += [key_of(m.name) for m in p.marks]
    assert len(touched) == len(set(touched)), sorted(touched)
    after = apply(objects, p)
    expired_on_purpose = {(r.old.name.path, r.old.name.md5) for r in p.removes
                          if r.why == "expire"}
    # a deleted object's content, as a version, would date from its deletion day
    expired_on_purpose |= {(n.path, n.md5) for n in objects.values() if not n.version
                           and esb.expired(n.deleted or STAMP, TODAY, versions_keep_days)}
    # an archived object cannot be renamed into a version (counted in unkept, said)
    expired_on_purpose |= {(n.path, n.md5) for k, n in objects.items() if classes[k]}
    files = {e.key: e for e in source}
    for path in layout:
        group, _, stale = esb.apply_marks([esb.Stored(k, 0, n) for k, n in after.items()
                                           if n.path == path])
        assert stale == []                             # every mark left names its object
        current = [o.name for o in group if not o.name.version]
        versions = [o.name for o in group if o.name.version]
        assert len(current) <= 1, (path, current)
        if path in files:
            name, = current
            assert (name.deleted, name.size, name.mtime) == (0, files[path].size,
                                                              files[path].mtime)
        else:
            assert all(n.deleted for n in current)
        assert all(not esb.version_expired(v, TODAY, versions_keep_days) for v in versions)
        if not versions_keep_days:        # no new versions; those kept keep their own days
            assert all(objects.get(key_of(v)) == v for v in versions)
            continue
        before = {n.md5 for n in objects.values()
                  if n.path == path and not n.version and not n.mark}
        now = {n.md5 for n in current + versions} | ({NEW} if path in files else set())
        lost = {md5 for md5 in before - now if (path, md5) not in expired_on_purpose}
        assert not lost, (path, lost)


def test_an_interrupted_mark_deleted_rename_is_finished_without_touching_one_key_twice():
    """A run stopped after the copy of a "mark deleted" rename (S3 copies, then deletes)
    leaves the live object and its marked copy.  Renaming the live one again onto the
    copy's key while removing that key as a duplicate could lose both: the copy stays."""
    live = stored("a.txt")
    copy = stored("a.txt", deleted=STAMP)
    for history in (0, 30):
        p = plan([], [live, copy], versions_keep_days=history)
        assert actions(p) == [("duplicate", live)] and p.vanishing == 1
