"""The password is checked before anything is written or restored (check_password).

A mistyped encryption_password (or the wrong encryption_type) makes a backup, restore or
verify stop in one line with exit code 2, the destination and the restore folder exactly as
they were; a damaged object, even the smallest (the one tried first), is not taken for a
wrong password: it fails alone and everything else is done.  Through main(), against a
local folder and a real S3 server (SeaweedFS).
"""

import dataclasses
import datetime
import os

import pytest
from conftest import PASSWORD, esb, snapshot, tree

WRONG = "Tr0ub4dor&3"          # the mistyped password: never in any output either
MTIME = 1_700_000_000
FILES = {f"docs/file{i}.txt": b"line %d of the file\n" % i * (20 * i + 1) for i in range(6)}
FILES["photo.bin"] = os.urandom(3000)


@pytest.fixture(params=["local", "s3"])
def tool(request, make_tool):
    """The tool after one backup of FILES, its destination a local folder or an S3 bucket."""
    bucket = request.getfixturevalue("s3_bucket") if request.param == "s3" else None
    tool = make_tool(bucket)
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    code, _, err = tool()
    assert code == 0, err
    return tool


def destination(tool):
    """{key: bytes} of every file on the destination (and, for a folder, everything about
    every file and folder there): equal before and after, nothing was written."""
    storage = tool.storage()
    files = {e.key: storage.read(e.key, e.size + 1)
             for e in storage.list_files(esb.ListReport())}
    return files, snapshot(tool.dest) if tool.dest is not None else None


def assert_refused(code, out, err, etype="aes"):
    """Exit code 2 and one line naming the settings to fix; nothing reported done."""
    assert code == esb.EXIT_USAGE, err
    lines = err.splitlines()
    assert len(lines) == 1 and "FAILED" not in err, err
    assert "error: the backup in " in lines[0] and "does not open" in lines[0]
    for fix in ("ENCRYPTION_PASSWORD", "ENCRYPTION_TYPE", f"encryption_type '{etype}'",
                "Nothing was done"):
        assert fix in lines[0], lines[0]
    assert WRONG not in out + err
    assert " done: " not in out                 # no summary: nothing was started


def overwrite(tool, key, data):
    """Replace an object's bytes, as damage or an attacker would."""
    tool.storage().put(key, data)


# ------------------------------------------------------------------------ a wrong password

@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_backup_with_a_wrong_password_writes_nothing(tool, dry_run):
    tool.write("docs/file1.txt", b"changed\n", MTIME + 60)      # work the backup would do
    tool.write("new.txt", b"new\n", MTIME)
    (tool.src / "docs/file2.txt").unlink()
    before = destination(tool)
    tool.set(ENCRYPTION_PASSWORD=WRONG)
    code, out, err = tool(*(["--dry-run"] if dry_run else []))
    assert_refused(code, out, err)
    assert "smallest and oldest objects tried authenticates" in err
    assert "damaged or planted" in err and "--verify --as-of" in err    # the other cause
    assert "--check-protection" in err
    assert destination(tool) == before
    tool.set(ENCRYPTION_PASSWORD=PASSWORD)                        # the right one: it runs
    code, out, err = tool()
    assert code == 0 and "2 uploaded" in out and "1 marked deleted" in out, err


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_restore_with_a_wrong_password_creates_nothing(tool, dry_run):
    before = destination(tool)
    tool.set(ENCRYPTION_PASSWORD=WRONG)
    code, out, err = tool("--restore", *(["--dry-run"] if dry_run else []))
    assert_refused(code, out, err)
    assert not tool.restore.exists()             # not even the restore folder
    assert "would restore" not in out
    code, out, err = tool("--verify")            # one line, not one FAILED line an object
    assert_refused(code, out, err)
    assert destination(tool) == before


def test_the_wrong_encryption_type_is_named(local_tool):
    tool = local_tool
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    before = destination(tool)
    tool.set(ENCRYPTION_TYPE="cha")
    for argv in ((), ("--restore",), ("--verify",)):
        code, out, err = tool(*argv)
        assert_refused(code, out, err, etype="cha")
    assert destination(tool) == before and not tool.restore.exists()


def test_a_backup_of_one_object_refuses_a_wrong_password(local_tool):
    tool = local_tool
    tool.write("only.txt", b"the only file\n", MTIME)
    assert tool()[0] == 0
    before = destination(tool)
    tool.set(ENCRYPTION_PASSWORD=WRONG)
    tool.write("only.txt", b"changed\n", MTIME + 1)
    code, out, err = tool()
    assert_refused(code, out, err)
    assert "its only object does not authenticate" in err
    assert destination(tool) == before


@pytest.mark.parametrize("where", ["local", "s3"])
def test_encrypted_names_prove_the_password_without_reading_an_object(request, make_tool,
                                                                     where):
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    tool = make_tool(bucket, encrypt_filenames=True)
    tool.write("only.txt", b"the only file\n", MTIME)       # one name: enough to tell
    assert tool()[0] == 0
    code, out, err = tool()
    assert code == 0, err
    assert " GET" not in requests_line(out)       # the name decrypted: no object read
    before = destination(tool)
    tool.set(ENCRYPTION_PASSWORD=WRONG)
    for argv in ((), ("--restore",), ("--verify",)):
        code, out, err = tool(*argv)
        assert_refused(code, out, err)
        assert "none of the 1 object names there decrypts" in err
    assert destination(tool) == before and not tool.restore.exists()


def requests_line(out):
    return next((line for line in out.splitlines() if "] requests: " in line), "")


def test_without_encryption_nothing_is_checked(make_tool):
    tool = make_tool(ENCRYPT="false")
    tool.write("a.txt", b"plain\n", MTIME)
    assert tool()[0] == 0
    tool.set(ENCRYPTION_PASSWORD=WRONG)          # not used: nothing to check it on
    code, out, err = tool("--restore")
    assert code == 0 and tool.restored() == {"a.txt": b"plain\n"}, err


# ------------------------------------------------------------- damage is not a wrong password

@pytest.mark.parametrize("damaged", [1, 2], ids=["smallest", "two-smallest"])
def test_damaged_smallest_objects_fail_alone_and_the_rest_is_restored(tool, damaged):
    entries = sorted(tool.storage().list_files(esb.ListReport()), key=lambda e: (e.size, e.key))
    victims = entries[:damaged]
    for entry in victims:
        overwrite(tool, entry.key, os.urandom(entry.size))   # junk: still the smallest
    codec = tool.codec()
    paths = {esb.decode_name(e.key, codec).path for e in victims}
    code, out, err = tool("--restore")
    assert code == esb.EXIT_FAILED, err
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failed) == damaged, err
    for path in paths:
        assert any(path in line and "authentication failed" in line for line in failed), err
    assert tree(tool.restore) == {rel: data for rel, data in FILES.items() if rel not in paths}
    code, out, err = tool("--verify")
    assert code == esb.EXIT_FAILED and err.count("FAILED") == damaged, err
    code, out, err = tool()                      # a backup goes on too (it rewrites nothing:
    assert code == 0, err                        # the names still match the files)


def backed_up_storage(tool):
    """The configuration, the destination and its objects after a backup of FILES."""
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    config = tool.config()
    dest = esb.make_storage(config.dest)
    objects = [esb.stored_object(e.key, e.size, esb.decode_name(e.key, config.codec))
               for e in dest.list_files(esb.ListReport())]
    return config, dest, objects


NOT_CHECKED = "note: the password was not checked before starting"


def test_junk_planted_on_a_bucket_does_not_block_the_backup(make_tool, s3_bucket):
    """Someone with the keys puts junk under backup names smaller than every object: the
    password still opens an older object, so the run goes on (saying so), and a wrong one
    is still refused."""
    tool = make_tool(s3_bucket)
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    codec = tool.codec()
    for i in range(esb.PASSWORD_CANDIDATES + 2):
        name = esb.BackupName(f"planted/{i}.txt", MTIME, 1, bytes(16))
        overwrite(tool, esb.encode_name(name, codec), os.urandom(esb.header_len("aes") + 1))
    code, out, err = tool()
    assert code == 0, err
    assert f"note: {esb.PASSWORD_CANDIDATES} of the objects tried in " in out + err
    assert "damaged, or planted" in out + err
    tool.set(ENCRYPTION_PASSWORD=WRONG)
    code, out, err = tool()
    assert_refused(code, out, err)
    assert "damaged or planted" in err


def test_objects_that_cannot_be_tried_prove_nothing(local_tool, capsys):
    config, dest, objects = backed_up_storage(local_tool)
    wrong = dataclasses.replace(config, codec=local_tool.codec(password=WRONG))
    esb.setup_logging(False)
    archived = [o._replace(storage_class="DEEP_ARCHIVE") for o in objects]
    esb.check_password(wrong, dest, archived, len(archived))      # none can be read
    assert NOT_CHECKED in capsys.readouterr().out
    one = [objects[0]] + archived[1:]
    esb.check_password(wrong, dest, one, len(one))    # one fails, the others unknown: go on
    assert NOT_CHECKED in capsys.readouterr().out
    with pytest.raises(esb.PasswordError):
        esb.check_password(wrong, dest, objects[:1], 1)          # every object there fails
    esb.check_password(config, dest, archived, len(archived))    # the right one: unknown ...
    esb.check_password(config, dest, one, len(one))              # ... until one can be read
    assert capsys.readouterr().out.count(NOT_CHECKED) == 1


def test_an_object_that_cannot_be_read_is_no_proof(local_tool, monkeypatch, capsys):
    config, dest, objects = backed_up_storage(local_tool)
    wrong = dataclasses.replace(config, codec=local_tool.codec(password=WRONG))

    def unreachable(self, key, limit):
        raise esb.TransferError("S3 error SlowDown")
    monkeypatch.setattr(esb.LocalStorage, "read", unreachable)
    esb.setup_logging(False)
    esb.check_password(wrong, dest, objects, len(objects))      # no error: nothing proved
    assert NOT_CHECKED in capsys.readouterr().out


def test_an_object_rewritten_since_it_was_listed_is_no_proof(local_tool):
    config, dest, objects = backed_up_storage(local_tool)
    wrong = local_tool.codec(password=WRONG)
    grown = [o._replace(size=o.size - 1) for o in objects]     # as listed before a rewrite
    assert esb.try_password(dest, wrong, grown) == (False, 0)
    assert esb.try_password(dest, wrong, objects) == (False, len(objects))
    assert esb.try_password(dest, config.codec, objects) == (True, 0)


def test_names_that_look_encrypted(local_tool):
    codec = local_tool.codec(encrypt_filenames=True)
    name = esb.BackupName("docs/a.txt", MTIME, 1, bytes(16))
    assert esb.sealed_name(esb.encode_name(name, codec), codec)
    assert not esb.sealed_name(esb.format_plain_name(name) + ".enc", codec)   # not base 36
    assert not esb.sealed_name("notes.enc", codec)           # too short for a header


# -------------------------------------------------------------------------------- Candidates

def stored(path, size, deleted=0, version=False, storage_class="", modified=MTIME):
    name = esb.BackupName(path, MTIME, 10, bytes(16), deleted, version)
    return esb.stored_object(esb.format_plain_name(name) + esb.name_suffix(name), size, name,
                             storage_class, modified)


def test_candidates_are_the_smallest_readable_objects_live_ones_first_then_the_oldest():
    written = MTIME + 1000                               # f0 written first, f19 last
    objects = [stored(f"f{i}", 1000 - i, modified=written + i) for i in range(20)]
    objects += [stored("tiny", esb.CANDIDATE_MIN),                      # a header at most
                stored("archived", 100, storage_class="DEEP_ARCHIVE"),
                stored("deleted", 60, deleted=20260101, modified=written + 50),
                stored("version", 70, version=True, modified=written + 50)]
    for order in (objects, objects[::-1]):
        candidates = esb.Candidates()
        for obj in order:
            candidates.offer(obj)
        best = candidates.best()
        assert [o.name.path for o in best] == [f"f{i}" for i in range(19, 13, -1)] + [
            f"f{i}" for i in range(6)]
        assert candidates.bound == 986 and candidates.early == written + 5
    few = esb.Candidates()
    for obj in objects[:2] + objects[-2:]:
        few.offer(obj)
    assert [o.name.path for o in few.best()] == ["f1", "f0", "deleted", "version"]


def test_junk_planted_smaller_than_every_object_cannot_take_every_candidate():
    """Junk is written after the backup (the server dates it): it may be the smallest, but
    the oldest objects are still the backup's own."""
    real = [stored(f"f{i}", 500 + i, modified=MTIME + i) for i in range(20)]
    junk = [stored(f"junk{i}", esb.CANDIDATE_MIN + 1, modified=MTIME + 9999) for i in range(30)]
    candidates = esb.Candidates()
    for obj in real[:10] + junk + real[10:]:
        candidates.offer(obj)
    best = [o.name.path for o in candidates.best()]
    assert all(p.startswith("junk") for p in best[:esb.PASSWORD_CANDIDATES])
    assert best[esb.PASSWORD_CANDIDATES:] == [f"f{i}" for i in range(esb.PASSWORD_CANDIDATES)]
    big = stored("big", esb.PASSWORD_READ_MAX + 1, modified=1)     # too large to read: not
    candidates.offer(big)                                          # among the oldest
    assert "big" not in [o.name.path for o in candidates.best()]


def test_a_backup_picks_its_candidates_while_it_plans():
    objects = [stored(f"f{i:02d}", 100 + (i * 7) % 23) for i in range(30)]
    objects.append(stored("cold", 50, storage_class="GLACIER"))
    plan = esb.plan_backup([], objects, datetime.date(2026, 12, 1), None)
    smallest = sorted((o for o in objects if o.name.path != "cold"),
                      key=lambda o: o.size)[:esb.PASSWORD_CANDIDATES]
    assert [o.size for o in plan.candidates[:esb.PASSWORD_CANDIDATES]] == [
        o.size for o in smallest]
    assert plan.objects == 31 and len(plan.renames) == 31 - 1    # (all gone: marked deleted)
