"""The planner: what a backup run does, decided from the two listings alone (no storage, no I/O).

Every case is built by hand from small Entry / Stored / BackupName values.
"""

import datetime

import pytest
from conftest import esb, plan_three_ways
from hypothesis import given, settings
from hypothesis import strategies as st

TODAY = datetime.date(2026, 3, 10)
STAMP = 20260310                       # TODAY as the deleted field stores it
MTIME = 1_700_000_000
MD5 = bytes.fromhex("746308829575e17c3331bbcb00c0898b")


def entry(path, size=100, mtime=MTIME):
    return esb.Entry(path, size, mtime)


def stored(path, size=100, mtime=MTIME, deleted=0, key=None):
    """An object whose name says path/size/mtime/deleted; its key is the real plaintext name."""
    name = esb.BackupName(path, mtime, size, MD5, deleted)
    return esb.stored_object(key or esb.format_plain_name(name) + esb.OBJECT_SUFFIX, size + 48,
                             name)


def plan(source=(), objects=(), today=TODAY, keep_days=None, blind=()):
    return plan_three_ways(source, objects, today, keep_days, blind)


def is_empty(p):
    return not p.uploads and not p.renames and not p.removes


# ----------------------------------------------------------------------------------------
# date_number and expired
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("day,number", [
    (datetime.date(2026, 11, 26), 20261126),
    (datetime.date(2026, 1, 5), 20260105),
    (datetime.date(1999, 12, 31), 19991231),
])
def test_date_number_is_yyyymmdd(day, number):
    assert esb.date_number(day) == number


def test_expired_never_with_keep_days_none():
    assert not esb.expired(19700101, TODAY, None)


def test_expired_at_once_with_keep_days_zero():
    assert esb.expired(STAMP, TODAY, 0)


@pytest.mark.parametrize("deleted,keep,last_kept_day", [
    (20260305, 3, datetime.date(2026, 3, 7)),        # same month
    (20260227, 3, datetime.date(2026, 3, 1)),        # across February's end (2026: 28 days)
    (20240227, 3, datetime.date(2024, 2, 29)),       # leap year
    (20251230, 5, datetime.date(2026, 1, 3)),        # across the year's end
    (20251201, 31, datetime.date(2025, 12, 31)),     # expires on New Year's Day
])
def test_expired_exactly_keep_days_after_deletion(deleted, keep, last_kept_day):
    expiry_day = last_kept_day + datetime.timedelta(days=1)
    assert not esb.expired(deleted, last_kept_day, keep)      # N - 1 days after: kept
    assert esb.expired(deleted, expiry_day, keep)             # N days after: expired
    assert esb.expired(deleted, expiry_day + datetime.timedelta(days=400), keep)


@pytest.mark.parametrize("bad_date", [1, 20261345, 20260230, 20260100, 99999999])
def test_expired_never_for_an_invalid_deletion_date(bad_date):
    assert not esb.expired(bad_date, TODAY, 0)
    assert not esb.expired(bad_date, datetime.date(2100, 1, 1), 1)


# ----------------------------------------------------------------------------------------
# pick_keeper
# ----------------------------------------------------------------------------------------

def test_pick_keeper_prefers_the_object_matching_the_source():
    old, new = stored("a", size=5), stored("a", size=7)
    assert esb.pick_keeper([new, old], entry("a", size=5)) is old
    assert esb.pick_keeper([old, new], entry("a", size=7)) is new


def test_pick_keeper_prefers_a_matching_deleted_object_over_a_different_live_one():
    live, gone = stored("a", size=9), stored("a", size=5, deleted=20260101)
    assert esb.pick_keeper([live, gone], entry("a", size=5)) is gone


def test_pick_keeper_prefers_live_over_deleted_without_a_match():
    live, gone = stored("a", mtime=1), stored("a", mtime=2, deleted=20260101)
    assert esb.pick_keeper([gone, live], None) is live
    assert esb.pick_keeper([gone, live], entry("a", size=12345)) is live


def test_pick_keeper_prefers_the_latest_deleted_date():
    older, newer = stored("a", mtime=9, deleted=20250101), stored("a", mtime=1, deleted=20260101)
    assert esb.pick_keeper([newer, older], None) is newer
    assert esb.pick_keeper([older, newer], None) is newer


def test_pick_keeper_breaks_a_tie_between_live_objects_by_newest_mtime():
    older, newer = stored("a", mtime=100), stored("a", mtime=200)
    assert esb.pick_keeper([newer, older], None) is newer
    assert esb.pick_keeper([older, newer], None) is newer


# ----------------------------------------------------------------------------------------
# plan_backup: one path, one object
# ----------------------------------------------------------------------------------------

def test_new_file_is_uploaded():
    p = plan([entry("docs/a.txt", size=10, mtime=123)])
    assert p.uploads == [esb.Upload("docs/a.txt", 10, 123, ())]
    assert not p.renames and not p.removes and p.unchanged == 0


def test_uploads_come_sorted_by_path():
    p = plan([entry("b"), entry("a/z"), entry("a")])
    assert [u.path for u in p.uploads] == ["a", "a/z", "b"]


def test_unchanged_file_needs_nothing():
    p = plan([entry("a", 10, 123)], [stored("a", 10, 123)])
    assert is_empty(p)
    assert p.unchanged == 1
    assert p.live == 1 and p.vanishing == 0


@pytest.mark.parametrize("size,mtime", [(11, 123), (10, 124), (10, 122), (0, 123)])
def test_changed_size_or_mtime_uploads_and_replaces_the_old_object(size, mtime):
    old = stored("a", 10, 123)
    p = plan([entry("a", size, mtime)], [old])
    assert p.uploads == [esb.Upload("a", size, mtime, (old.key,))]
    assert not p.renames and not p.removes and p.unchanged == 0


def test_vanished_file_is_marked_deleted_with_today():
    old = stored("gone.txt")
    p = plan([], [old], keep_days=30)
    assert p.renames == [esb.Rename(old, old.name.with_deleted(STAMP), "mark deleted")]
    assert not p.uploads and not p.removes
    assert p.live == 1 and p.vanishing == 1


def test_vanished_file_is_marked_deleted_when_kept_forever():
    old = stored("gone.txt")
    p = plan([], [old], keep_days=None)
    assert p.renames == [esb.Rename(old, old.name.with_deleted(STAMP), "mark deleted")]


def test_vanished_file_is_removed_at_once_with_keep_days_zero():
    old = stored("gone.txt")
    p = plan([], [old], keep_days=0)
    assert p.removes == [esb.Remove(old, "expire")]
    assert not p.renames and not p.uploads
    assert p.vanishing == 1


def test_deleted_object_keeps_its_first_deletion_date():
    # The old tool renamed it with today's date on every run, so it never expired.
    gone = stored("gone.txt", deleted=20260101)
    for keep_days in (None, 365):
        p = plan([], [gone], keep_days=keep_days)
        assert is_empty(p), keep_days
        assert p.live == 0 and p.vanishing == 0


def test_deleted_object_never_expires_with_keep_days_none():
    gone = stored("gone.txt", deleted=19700101)
    assert is_empty(plan([], [gone], today=datetime.date(2100, 1, 1), keep_days=None))


def test_deleted_object_is_removed_at_once_with_keep_days_zero():
    gone = stored("gone.txt", deleted=STAMP)
    assert plan([], [gone], keep_days=0).removes == [esb.Remove(gone, "expire")]


@pytest.mark.parametrize("deleted,keep,day_before", [
    (20260305, 3, datetime.date(2026, 3, 7)),
    (20260130, 2, datetime.date(2026, 1, 31)),      # month boundary
    (20251231, 1, datetime.date(2025, 12, 31)),     # year boundary, one day
    (20251215, 20, datetime.date(2026, 1, 3)),      # year boundary, twenty days
])
def test_deleted_object_expires_exactly_keep_days_after_its_date(deleted, keep, day_before):
    gone = stored("gone.txt", deleted=deleted)
    assert is_empty(plan([], [gone], today=day_before, keep_days=keep))
    expiry_day = day_before + datetime.timedelta(days=1)
    assert plan([], [gone], today=expiry_day, keep_days=keep).removes == [
        esb.Remove(gone, "expire")]


@pytest.mark.parametrize("bad_date", [1, 20261345, 20260230])
def test_deleted_object_with_an_invalid_date_never_expires(bad_date):
    gone = stored("gone.txt", deleted=bad_date)
    assert is_empty(plan([], [gone], today=datetime.date(2100, 1, 1), keep_days=0))


def test_deleted_file_back_unchanged_is_undeleted():
    gone = stored("a", 10, 123, deleted=20260101)
    p = plan([entry("a", 10, 123)], [gone], keep_days=30)
    assert p.renames == [esb.Rename(gone, gone.name.with_deleted(0), "undelete")]
    assert not p.uploads and not p.removes and p.unchanged == 0


def test_deleted_file_back_unchanged_is_undeleted_even_when_its_date_expired():
    gone = stored("a", 10, 123, deleted=20200101)
    p = plan([entry("a", 10, 123)], [gone], keep_days=1)
    assert p.renames == [esb.Rename(gone, gone.name.with_deleted(0), "undelete")]
    assert not p.removes


def test_deleted_file_back_changed_is_uploaded_replacing_the_deleted_object():
    gone = stored("a", 10, 123, deleted=20260101)
    p = plan([entry("a", 11, 456)], [gone], keep_days=30)
    assert p.uploads == [esb.Upload("a", 11, 456, (gone.key,))]
    assert not p.renames and not p.removes


# ----------------------------------------------------------------------------------------
# plan_backup: several objects for one path (a crash between upload and delete)
# ----------------------------------------------------------------------------------------

def test_two_live_objects_keep_the_one_matching_the_source():
    old, new = stored("a", 10, 100), stored("a", 20, 200)
    p = plan([entry("a", 20, 200)], [old, new])
    assert p.removes == [esb.Remove(old, "duplicate")]
    assert not p.uploads and not p.renames and p.unchanged == 1
    assert p.live == 1


def test_two_live_objects_neither_matching_are_both_replaced_by_the_upload():
    old, new = stored("a", 10, 100), stored("a", 20, 200)
    p = plan([entry("a", 30, 300)], [old, new])
    assert len(p.uploads) == 1
    assert p.uploads[0].path == "a" and p.uploads[0].size == 30
    assert sorted(p.uploads[0].replaces) == sorted([old.key, new.key])
    assert not p.renames and not p.removes


def test_two_live_objects_of_a_vanished_file_mark_the_newest_deleted():
    old, new = stored("a", 10, 100), stored("a", 20, 200)
    p = plan([], [new, old], keep_days=None)
    assert p.renames == [esb.Rename(new, new.name.with_deleted(STAMP), "mark deleted")]
    assert p.removes == [esb.Remove(old, "duplicate")]
    assert p.live == 1 and p.vanishing == 1


def test_live_and_deleted_object_of_an_unchanged_file_keep_the_live_one():
    live, gone = stored("a", 10, 100), stored("a", 5, 50, deleted=20260101)
    p = plan([entry("a", 10, 100)], [gone, live])
    assert p.removes == [esb.Remove(gone, "duplicate")]
    assert not p.uploads and not p.renames and p.unchanged == 1


def test_live_and_deleted_object_where_the_deleted_one_matches_undeletes_it():
    live, gone = stored("a", 10, 100), stored("a", 5, 50, deleted=20260101)
    p = plan([entry("a", 5, 50)], [live, gone])
    assert p.renames == [esb.Rename(gone, gone.name.with_deleted(0), "undelete")]
    assert p.removes == [esb.Remove(live, "duplicate")]
    assert not p.uploads


def test_live_and_deleted_object_of_a_changed_file_are_both_replaced():
    live, gone = stored("a", 10, 100), stored("a", 5, 50, deleted=20260101)
    p = plan([entry("a", 7, 70)], [live, gone])
    assert [u.path for u in p.uploads] == ["a"]
    assert sorted(p.uploads[0].replaces) == sorted([live.key, gone.key])
    assert not p.renames and not p.removes


def test_live_and_deleted_object_of_a_vanished_file_keep_the_live_one_marked_deleted():
    live, gone = stored("a", 10, 100), stored("a", 5, 50, deleted=20260101)
    p = plan([], [gone, live], keep_days=None)
    assert p.renames == [esb.Rename(live, live.name.with_deleted(STAMP), "mark deleted")]
    assert p.removes == [esb.Remove(gone, "duplicate")]


def test_two_deleted_objects_keep_the_latest_date():
    older = stored("a", 10, 900, deleted=20250101)
    newer = stored("a", 10, 100, deleted=20260101)
    p = plan([], [newer, older], keep_days=None)
    assert p.removes == [esb.Remove(older, "duplicate")]
    assert not p.renames and not p.uploads
    assert p.live == 0 and p.vanishing == 0


def test_two_deleted_objects_the_kept_one_still_expires_on_its_own_date():
    older = stored("a", 10, 900, deleted=20250101)
    newer = stored("a", 10, 100, deleted=20260301)
    p = plan([], [older, newer], keep_days=10)        # 2026-03-01 + 10 days = 2026-03-11
    assert p.removes == [esb.Remove(older, "duplicate")]
    p = plan([], [older, newer], today=datetime.date(2026, 3, 11), keep_days=10)
    assert sorted(p.removes, key=lambda r: r.why) == [
        esb.Remove(older, "duplicate"), esb.Remove(newer, "expire")]


# ----------------------------------------------------------------------------------------
# Blind spots: what the listing could not read is left alone
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path,blind,inside", [
    ("secret.txt", ["secret.txt"], True),
    ("secret.txt.bak", ["secret.txt"], False),
    ("private/a", ["private/"], True),
    ("private/deep/b", ["private/"], True),
    ("privateX/a", ["private/"], False),
    ("private", ["private/"], False),
    ("anything/at/all", ["/"], True),
    ("x", [], False),
    ("x", ["y", "x"], True),
])
def test_blind_spots(path, blind, inside):
    assert (path in esb.BlindSpots(blind)) is inside


def test_unreadable_file_keeps_its_object():
    obj = stored("secret.txt")
    p = plan([], [obj], keep_days=0, blind=("secret.txt",))
    assert is_empty(p)
    assert p.live == 0 and p.vanishing == 0


def test_unreadable_folder_keeps_every_object_under_it():
    inside = [stored("private/a"), stored("private/deep/b"), stored("private/c", deleted=1)]
    outside = stored("privateX/a")
    p = plan([entry("privateX/a")], inside + [outside], keep_days=0, blind=("private/",))
    assert is_empty(p)
    assert p.unchanged == 1


def test_blind_spot_leaves_other_vanished_files_to_be_marked_deleted():
    hidden, gone = stored("private/a"), stored("public/b")
    p = plan([], [hidden, gone], keep_days=None, blind=("private/",))
    assert p.renames == [esb.Rename(gone, gone.name.with_deleted(STAMP), "mark deleted")]
    assert not p.removes


def test_blind_spot_does_not_keep_deleted_objects_from_expiring_elsewhere():
    hidden = stored("private/a", deleted=20200101)
    gone = stored("public/b", deleted=20200101)
    p = plan([], [hidden, gone], keep_days=1, blind=("private/",))
    assert p.removes == [esb.Remove(gone, "expire")]


# ----------------------------------------------------------------------------------------
# Mass-deletion guard
# ----------------------------------------------------------------------------------------

def vanishing_plan(live, vanishing, keep_days=None):
    """A plan over ``live`` backed-up files of which ``vanishing`` are gone from the source."""
    objects = [stored(f"f{i:03d}") for i in range(live)]
    source = [entry(f"f{i:03d}") for i in range(vanishing, live)]
    p = plan(source, objects, keep_days=keep_days)
    assert (p.live, p.vanishing) == (live, vanishing)
    return p


@pytest.mark.parametrize("live,vanishing", [(12, 10), (23, 11), (10, 10), (2, 2), (1000, 500),
                                            (0, 0)])
def test_mass_delete_guard_allows(live, vanishing):
    esb.check_mass_delete(vanishing_plan(live, vanishing))


@pytest.mark.parametrize("keep_days", [None, 0, 30])
@pytest.mark.parametrize("live,vanishing", [(21, 11), (11, 11), (1000, 501)])
def test_mass_delete_guard_refuses(live, vanishing, keep_days):
    p = vanishing_plan(live, vanishing, keep_days)
    with pytest.raises(esb.RefusedError) as caught:
        esb.check_mass_delete(p)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert f"{vanishing} of {live}" in message
    assert "--allow-mass-delete" in message


def test_mass_delete_guard_lets_deleted_objects_expire_in_the_normal_course_of_things():
    # Expiring old deleted objects is the normal course of things, not a mass deletion ...
    live = [stored(f"live{i:03d}") for i in range(101)]
    objects = [stored(f"old{i:02d}", deleted=20200101) for i in range(50)]
    p = plan([entry(o.name.path) for o in live], live + objects, keep_days=1)
    assert len(p.removes) == 50 and p.vanishing == 0 and p.expiring == 50
    esb.check_mass_delete(p)
    # ... unless more than half of the live files' worth expire at once: deleted_keep_days
    # lowered (by mistake?) is refused like a mass delete
    p = plan([entry(o.name.path) for o in live[:98]], live[:98] + objects, keep_days=1)
    assert (p.expiring, p.live) == (50, 98)
    with pytest.raises(esb.RefusedError, match="objects of 50 deleted files at once"):
        esb.check_mass_delete(p)


def test_mass_delete_guard_counts_paths_not_duplicate_objects():
    objects = [stored(f"f{i:02d}", mtime=m) for i in range(12) for m in (1, 2)]
    p = plan([entry("f00", mtime=2), entry("f01", mtime=2)], objects)
    assert (p.live, p.vanishing) == (12, 10)
    esb.check_mass_delete(p)


# ----------------------------------------------------------------------------------------
# select_for_restore
# ----------------------------------------------------------------------------------------

RESTORE_SET = [
    stored("docs/a.txt"),
    stored("docs/sub/b.txt"),
    stored("docsX/file"),
    stored("docs", size=1),                          # a file named like the folder's prefix
    stored("notes.md", deleted=20250101),
    stored("notes.md", size=2, deleted=20260101),    # the latest deleted copy
    stored("photo.jpg", deleted=20260101),
    stored("photo.jpg", size=3),                     # live: wins over the deleted one
]


def paths(objects):
    return [o.name.path for o in objects]


def test_restore_selects_live_objects_only_by_default():
    chosen = esb.select_for_restore(RESTORE_SET, include_deleted=False)
    assert paths(chosen) == ["docs", "docs/a.txt", "docs/sub/b.txt", "docsX/file", "photo.jpg"]
    assert all(o.name.deleted == 0 for o in chosen)


def test_restore_with_deleted_adds_the_latest_deleted_copy():
    chosen = esb.select_for_restore(RESTORE_SET, include_deleted=True)
    assert paths(chosen) == ["docs", "docs/a.txt", "docs/sub/b.txt", "docsX/file", "notes.md",
                             "photo.jpg"]
    by_path = {o.name.path: o for o in chosen}
    assert by_path["notes.md"].name.deleted == 20260101
    assert by_path["photo.jpg"].name.deleted == 0


def test_restore_picks_one_object_per_path():
    twins = [stored("a", mtime=1), stored("a", mtime=2)]
    assert esb.select_for_restore(twins, include_deleted=True) == [twins[1]]


@pytest.mark.parametrize("only,expected", [
    (("docs/a.txt",), ["docs/a.txt"]),
    (("docs/sub",), ["docs/sub/b.txt"]),
    (("docs/sub/",), ["docs/sub/b.txt"]),
    (("docs/",), ["docs/a.txt", "docs/sub/b.txt"]),
    (("docs",), ["docs", "docs/a.txt", "docs/sub/b.txt"]),     # never docsX/file
    (("*.txt",), ["docs/a.txt", "docs/sub/b.txt"]),
    (("docs/*.txt",), ["docs/a.txt", "docs/sub/b.txt"]),
    (("docs?/*",), ["docsX/file"]),
    (("photo.jpg", "docsX"), ["docsX/file", "photo.jpg"]),
    (("nothing",), []),
    (("notes.md",), []),                                       # deleted: not without the flag
])
def test_restore_only(only, expected):
    assert paths(esb.select_for_restore(RESTORE_SET, False, only)) == expected


def test_restore_only_with_deleted():
    chosen = esb.select_for_restore(RESTORE_SET, True, ("notes.md",))
    assert [(o.name.path, o.name.deleted) for o in chosen] == [("notes.md", 20260101)]


# ----------------------------------------------------------------------------------------
# safe_relpath
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["..", "../etc/passwd", "a/../b", "a/..", "/abs", "/etc/passwd",
                                  "a//b", "./a", "a/./b", "a/", "", ".", "a\x00b", "a\nb",
                                  "a\rb", "tab\there", "del\x7f"])
def test_safe_relpath_refuses(path):
    with pytest.raises(esb.UnsafePathError) as caught:
        esb.safe_relpath(path)
    assert "refusing" in str(caught.value)


@pytest.mark.parametrize("path", ["a", "docs/report.pdf", "..hidden", "a..b", "dir/..hidden/x",
                                  "...", ".bashrc", "fotos/été/日本.jpg", "spaces in name.txt",
                                  "emoji 🎉/ok"])
def test_safe_relpath_accepts(path):
    assert esb.safe_relpath(path) == path


# ----------------------------------------------------------------------------------------
# Scale (not timed: a guard against accidentally quadratic planning)
# ----------------------------------------------------------------------------------------

def test_no_change_run_over_30000_files():
    count = 30_000      # (quadratic planning would take minutes here: 9e8 steps)
    source = [esb.Entry(f"dir{i % 100}/file{i}", i, MTIME + i) for i in range(count)]
    objects = [esb.Stored(f"k{i}", i + 48,
                          esb.BackupName(f"dir{i % 100}/file{i}", MTIME + i, i, MD5))
               for i in range(count)]
    p = plan_three_ways(source, objects, TODAY, 30)
    assert p.unchanged == count and p.live == count
    assert is_empty(p)


def test_batch_small_groups_small_files_and_keeps_big_ones_single():
    small = 2 * esb.BATCH_FILES + 2
    jobs = [esb.Upload(f"f{i}", size, 0) for i, size in
            enumerate([5 * 2 ** 20] + [100] * small + [esb.SMALL_FILE])]
    grouped = esb.batch_small(jobs)
    single = [b.jobs[0] for b in grouped if not b.grouped]
    batches = [b for b in grouped if b.grouped]
    assert all(len(b.jobs) == 1 for b in grouped if not b.grouped)
    assert [j.path for j in single] == ["f0", f"f{small + 1}"]
    assert [len(b.jobs) for b in batches] == [esb.BATCH_FILES, esb.BATCH_FILES, 2]
    assert sorted(j.path for b in batches for j in b.jobs) == sorted(
        f"f{i}" for i in range(1, small + 1))


def test_batch_small_caps_the_bytes_of_a_batch():
    jobs = [esb.Upload(f"f{i}", esb.SMALL_FILE - 1, 0) for i in range(20)]
    batches = esb.batch_small(jobs)
    assert all(sum(j.size for j in b.jobs) < esb.BATCH_BYTES + esb.SMALL_FILE for b in batches)
    assert len(batches) == 3


def test_stored_keeps_its_key_only_when_the_name_does_not_give_it_back():
    name = esb.BackupName("a/b.txt", MTIME, 5, MD5)
    plain = esb.format_plain_name(name) + esb.OBJECT_SUFFIX
    same = esb.stored_object(plain, 60, name)
    assert same.object_key is None and same.key == plain      # rebuilt, not kept
    path, *fields = plain[:-len(esb.OBJECT_SUFFIX)].rsplit(".", 4)
    padded = ".".join([path, *("0" + f.upper() for f in fields)]) + esb.OBJECT_SUFFIX
    assert esb.decode_name(padded, esb.Codec(encrypt=False)) == name
    for key in (padded, "3k2j9x0a1b.enc"):                    # another form, an encrypted name
        obj = esb.stored_object(key, 60, name)
        assert obj.object_key == key and obj.key == key


# ----------------------------------------------------------------------------------------
# The whole plan is each path's own plan: the walk over both sorted listings never lets
# one path's objects or file leak into another's decision, whatever the input order.
# ----------------------------------------------------------------------------------------

PATHS = ["a", "a/b", "a.b", "a/b/c", "ab", "a b", "é", "z"]   # prefixes and neighbours


def summary(p):
    """A plan as comparable sets (the lists' order is not part of the contract)."""
    return ({(u.path, u.size, u.mtime, tuple(sorted(u.replaces))) for u in p.uploads},
            {(r.old.key, r.name, r.why) for r in p.renames},
            {(r.old.key, r.why) for r in p.removes},
            (p.unchanged, p.live, p.vanishing), len(p.uploads) + len(p.renames) + len(p.removes))


per_path = st.tuples(
    st.one_of(st.none(), st.sampled_from([(100, MTIME), (100, MTIME + 1), (7, MTIME)])),
    st.lists(st.tuples(st.sampled_from([(100, MTIME), (7, MTIME), (100, MTIME - 5)]),
                       st.sampled_from([0, 20200101, STAMP])), max_size=3))


@settings(max_examples=200, deadline=None, database=None)
@given(layout=st.dictionaries(st.sampled_from(PATHS), per_path, max_size=len(PATHS)),
       keep_days=st.sampled_from([None, 0, 30]), order=st.randoms(use_true_random=False))
def test_plan_is_the_union_of_every_paths_own_plan(layout, keep_days, order):
    source, objects = {}, {}
    for path, (file, versions) in layout.items():
        source[path] = [entry(path, *file)] if file else []
        objects[path] = [stored(path, size, mtime, deleted, key=f"{path}.{i}.{deleted}.enc")
                         for i, ((size, mtime), deleted) in enumerate(versions)]
    everything = [e for v in source.values() for e in v], [o for v in objects.values() for o in v]
    for listing in everything:
        order.shuffle(listing)
    whole = summary(plan(*everything, keep_days=keep_days))
    parts = [summary(plan(source[p], objects[p], keep_days=keep_days)) for p in layout]
    union = (set().union(*(s[0] for s in parts)), set().union(*(s[1] for s in parts)),
             set().union(*(s[2] for s in parts)),
             tuple(sum(s[3][i] for s in parts) for i in range(3)), sum(s[4] for s in parts))
    assert whole == union
