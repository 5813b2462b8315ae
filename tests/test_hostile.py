"""Hostile or damaged backups, and secrets.

Restore, verify and list must never crash (exit 3, a traceback), hang, or write outside the
restore root, whatever the destination holds: planted names, damaged objects, decompression
bombs, absurd name fields.  Passwords, derived keys and S3 secrets never reach the output.
"""

import contextlib
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import signal
import threading
import time
import tracemalloc
import zlib

import pytest
from conftest import (PASSWORD, S3_SECRET, SALT, SALT_BYTES, decoded, esb, make_codec, snapshot,
                      temp_files, tree)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MTIME = 1_700_000_000
GOOD = {"hello.txt": b"Hello, world!\n",
        "docs/report.txt": b"quarterly numbers\n" * 300,
        "empty.txt": b""}
EVIL = b"planted content\n"


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------

@pytest.fixture
def make_tool(make_tool):
    """Tools with a local destination whose restore root (created) sits three folders deep
    in tmp_path, so that an escape by ``../..`` would still land inside tmp_path."""
    def make(**options):
        options = {"restore": "deep/er/restore", "encryption_type": "aes",
                   "encrypt_filenames": False, **options}
        tool = make_tool(**options)
        tool.restore.mkdir(parents=True)
        return tool
    return make


def backup_good(tool):
    for rel, data in GOOD.items():
        tool.write(rel, data, MTIME)
    code, _, err = tool()
    assert code == 0, err


def plant(tool, name, blob):
    """Store ``blob`` under the object name of ``name``; returns the object's key."""
    key = esb.encode_name(name, tool.codec())
    target = tool.dest.joinpath(*key.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(blob)
    return key


def plant_file(tool, path, data=EVIL, codec=None, **fields):
    """A perfectly valid object for ``data`` whose name says ``path`` (and ``fields``)."""
    name = esb.BackupName(path, fields.pop("mtime", MTIME), fields.pop("size", len(data)),
                          fields.pop("md5", hashlib.md5(data).digest()), **fields)
    return plant(tool, name, object_bytes(data, codec or tool.codec()))


def object_bytes(data, codec):
    sink = io.BytesIO()
    esb.encode(io.BytesIO(data), len(data), codec, sink)
    return sink.getvalue()


def escaped(path):
    """How a path may be shown: control characters as Python escapes."""
    return repr(path)[1:-1]


def failures(err):
    return [line for line in err.splitlines() if "FAILED" in line]


def assert_no_crash(code, err):
    assert code != esb.EXIT_BUG, err
    assert "Traceback" not in err and "internal error" not in err, err


def assert_reported(err, path, reason=""):
    lines = [line for line in failures(err) if escaped(path) in line]
    assert lines, f"{path!r} not reported in:\n{err}"
    assert any(reason in line for line in lines), f"{path!r}: no {reason!r} in {lines}"


def assert_good_restored(tool):
    got = tool.restored()
    for rel, data in GOOD.items():
        assert got.get(rel) == data, rel
        assert int(os.stat(tool.restore / rel).st_mtime) == MTIME


# ---------------------------------------------------------------------------------------
# Planted names
# ---------------------------------------------------------------------------------------

# Inside an encrypted name a path can be anything at all.
HOSTILE_PATHS = ["../../evil", "../../../../../../tmp/evil-esb-test", "/etc/evil-esb-test",
                 "/tmp/evil-esb-abs",
                 "a/../../../evil", "a//b", "a/./b", "./evil", ".", "..", "dir/",
                 "nul\x00byte", "new\nline", "\x1b[31mred", "tab\tand\x7fdel",
                 "sub/\x1b]0;title\x07"]
# A plaintext name on a local destination is a real file: only control characters can be
# planted (no NUL, no "..", no "//").
PLAIN_HOSTILE_PATHS = ["new\nline", "\x1b[31mred", "cr\rreturn", "tab\tand\x7fdel",
                       "sub/\x1b]0;title\x07"]


def plant_hostile(tool, paths, deleted):
    for path in paths:
        plant_file(tool, path, deleted=deleted)
    return list(paths)


def printable(text):
    return all(c == "\n" or (" " <= c and c != "\x7f") for c in text)


@pytest.mark.parametrize("deleted", [0, 20260101], ids=["live", "deleted"])
@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_planted_names_are_refused_and_nothing_leaves_the_restore_root(
        make_tool, encrypt_filenames, deleted):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    paths = plant_hostile(tool, HOSTILE_PATHS if encrypt_filenames else PLAIN_HOSTILE_PATHS,
                          deleted)
    before = snapshot(tool.tmp, tool.restore)
    argv = ["--restore", "--restore-deleted"] if deleted else ["--restore"]
    code, out, err = tool(*argv)
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED, err
    for path in paths:
        assert_reported(err, path, "refusing")
    assert len(failures(err)) == len(paths), err
    assert printable(out + err)                          # no terminal escapes, no NUL
    assert_good_restored(tool)
    assert set(tool.restored()) == set(GOOD)
    assert snapshot(tool.tmp, tool.restore) == before
    for escape in ("/etc/evil-esb-test", "/tmp/evil-esb-test", "/tmp/evil-esb-abs"):
        assert not os.path.exists(escape)
    assert temp_files(tool.restore) == []
    code, out, err = tool("--verify")          # what a restore refuses, a verify fails
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED, err
    for path in paths:
        assert_reported(err, path, "refusing")
    assert len(failures(err)) == len(paths), err
    if deleted:    # a plain --restore does not even look at deleted objects
        code, _, err = tool("--restore")
        assert code == esb.EXIT_OK, err


# A file name that is not UTF-8 (bytes from another locale): os.fsdecode gives it to us
# with surrogates, a plaintext S3 key cannot hold it, an encrypted name or a folder can.
ODD_NAME = os.fsdecode(b"caf\xe9-latin1.txt")
ODD_FOLDER = os.fsdecode(b"d\xff")


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_a_name_that_is_not_utf8_fails_one_file_never_the_run(make_tool, request, where,
                                                              encrypt_filenames):
    bucket = request.getfixturevalue("s3_bucket") if where == "s3" else None
    tool = make_tool(bucket=bucket, encrypt_filenames=encrypt_filenames)
    odd = {ODD_NAME: b"odd one\n", f"{ODD_FOLDER}/inner.txt": b"inner\n"}
    for rel, data in {**GOOD, **odd}.items():
        tool.write(rel, data, MTIME)
    (tool.src / "hello.txt").write_bytes(b"Hello again\n")       # changed since: replaced
    code, out, err = tool()
    assert_no_crash(code, err)
    holds_any_name = where == "local" or encrypt_filenames
    if holds_any_name:
        assert code == esb.EXIT_OK, err
    else:
        assert code == esb.EXIT_FAILED, err
        assert len(failures(err)) == 2, err
        for rel in odd:
            [line] = [f for f in failures(err) if esb.show(rel) in f]
            assert "not UTF-8" in line and "encrypt_filenames" in line, line
        assert "3 uploaded" in out
    paths = [name.path for name in tool.objects().values()]
    assert sorted(paths) == sorted({**GOOD, **(odd if holds_any_name else {})})
    assert len(tool.keys()) == len(paths)            # one object a path: hello.txt's replaced
    code, out, err = tool("--restore")                    # what was stored comes back
    assert code == esb.EXIT_OK, err
    expected = {rel: (tool.src / rel).read_bytes() for rel in GOOD}
    if holds_any_name:
        expected.update(odd)
    assert tool.restored() == expected
    code, _, err = tool()                                 # and again: the same, no more
    assert code == (esb.EXIT_OK if holds_any_name else esb.EXIT_FAILED), err
    assert len(tool.keys()) == len(expected)


def test_a_bug_that_stops_a_backup_to_s3_leaves_no_path_with_two_live_objects(
        make_tool, s3_bucket, monkeypatch):
    """The request scheduler removes replaced objects in groups, later: a bug that stops the
    run first removes those whose new object is stored already."""
    tool = make_tool(bucket=s3_bucket)
    backup_good(tool)
    for rel in GOOD:
        (tool.src / rel).write_bytes(b"changed " + rel.encode())
    tool.write("zz-bug.txt", b"the one that meets a bug")
    real_store, stored, lock = esb.RequestScheduler._store, [], threading.Lock()

    def store(scheduler, encoded):
        if encoded.job.path != "zz-bug.txt":
            outcome = real_store(scheduler, encoded)
            with lock:
                stored.append(encoded.job.path)
            return outcome
        deadline = time.monotonic() + 60
        while len(stored) < len(GOOD):           # the others' new objects are in first
            assert time.monotonic() < deadline
            time.sleep(0.01)
        raise RuntimeError("a bug while storing")
    monkeypatch.setattr(esb.RequestScheduler, "_store", store)
    code, _, err = tool()
    assert code == esb.EXIT_BUG and "RuntimeError: a bug while storing" in err
    live = [key for key in tool.keys() if key.endswith(".enc")]
    assert sorted(esb.decode_name(key, tool.codec()).path for key in live) == sorted(GOOD)
    assert {esb.decode_name(key, tool.codec()).md5 for key in live} == {
        hashlib.md5(b"changed " + rel.encode()).digest() for rel in GOOD}


def test_planted_empty_path_is_reported_by_its_object_name(make_tool):
    tool = make_tool(encrypt_filenames=True)
    backup_good(tool)
    key = plant(tool, esb.BackupName("", MTIME, len(EVIL), hashlib.md5(EVIL).digest()),
                     object_bytes(EVIL, tool.codec()))
    for argv in (["--restore"], ["--verify"], ["--list"]):
        code, _, err = tool(*argv)
        assert_no_crash(code, err)
        assert code == esb.EXIT_FAILED, (argv, err)
        assert any(key in line for line in failures(err)), err
    assert_good_restored(tool)


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_symlinks_in_the_restore_root_do_not_lead_outside(make_tool, encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    outside = tool.tmp / "outside"
    outside.mkdir()
    (outside / "target.txt").write_bytes(b"must stay\n")
    (tool.restore / "escape").symlink_to(outside, target_is_directory=True)
    (tool.restore / "deeper").symlink_to(outside, target_is_directory=True)
    (tool.restore / "hello.txt").symlink_to(outside / "target.txt")
    plant_file(tool, "escape/payload.txt")
    plant_file(tool, "deeper/new/dir/payload.txt")
    before = snapshot(tool.tmp, tool.restore)
    code, _, err = tool("--restore")
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED, err
    assert_reported(err, "escape/payload.txt", "symbolic link")
    assert_reported(err, "deeper/new/dir/payload.txt", "symbolic link")
    assert snapshot(tool.tmp, tool.restore) == before          # outside/ untouched
    assert sorted(p.name for p in outside.iterdir()) == ["target.txt"]
    # the link at a restored file's own place is replaced, never written through
    assert not (tool.restore / "hello.txt").is_symlink()
    assert_good_restored(tool)


def test_special_files_in_the_destination_do_not_hang_or_crash(make_tool):
    """A FIFO (opening it would block forever), /dev/zero (endless), a link loop."""
    tool = make_tool()
    backup_good(tool)
    name = functools.partial(esb.BackupName, mtime=MTIME, size=5, md5=bytes(16))
    os.mkfifo(tool.dest / esb.encode_name(name("fifo.txt"), tool.codec()))
    (tool.dest / esb.encode_name(name("zero.txt"), tool.codec())).symlink_to("/dev/zero")
    (tool.dest / "loop").symlink_to(tool.dest, target_is_directory=True)
    for argv in (["--verify"], ["--restore"], ["--list"]):
        with time_limit(30):
            code, out, err = tool(*argv)
        assert_no_crash(code, err)
        assert code in (esb.EXIT_OK, esb.EXIT_FAILED), err
        assert "fifo.txt" not in out and "zero.txt" not in out     # not taken for backups
    assert_good_restored(tool)
    assert set(tool.restored()) == set(GOOD)


# ---------------------------------------------------------------------------------------
# Damaged objects
# ---------------------------------------------------------------------------------------

def damaged_objects(tool):
    """Plant every kind of damage; returns {path: reason the tool must give}."""
    codec = tool.codec()
    header = esb.header_len(codec.encryption_type)
    expect = {}
    content = b"some text that is long enough to be worth damaging\n" * 40
    good = object_bytes(content, codec)
    name = functools.partial(esb.BackupName, mtime=MTIME, size=len(content),
                             md5=hashlib.md5(content).digest())
    for length in (0, 1, 47):
        plant(tool, name(f"short-{length}.bin"), os.urandom(length))
        expect[f"short-{length}.bin"] = "shorter than"
    for at in (0, esb.SALT_LEN, header - esb.TAG_LEN, header, len(good) // 2, len(good) - 1):
        for bit in (0x01, 0x80):
            flipped = bytearray(good)
            flipped[at] ^= bit
            plant(tool, name(f"flip-{at}-{bit}.bin"), bytes(flipped))
            expect[f"flip-{at}-{bit}.bin"] = "authentication failed"
    for cut in (header, header + 3, len(good) // 2, len(good) - 1):
        plant(tool, name(f"cut-{cut}.bin"), good[:cut])
        expect[f"cut-{cut}.bin"] = "authentication failed"
    plant(tool, name("extra-byte.bin"), good + b"\0")
    expect["extra-byte.bin"] = "authentication failed"
    # contents swapped between two names: one pair of different sizes, one of equal sizes
    for a, b, reason in ((b"alpha\n", b"beta beta\n", "declares"),
                         (b"same-1\n", b"same-2\n", "MD5")):
        pa, pb = f"swap-{a.decode().strip()}", f"swap-{b.decode().strip()}"
        plant(tool, esb.BackupName(pa, MTIME, len(a), hashlib.md5(a).digest()),
                   object_bytes(b, codec))
        plant(tool, esb.BackupName(pb, MTIME, len(b), hashlib.md5(b).digest()),
                   object_bytes(a, codec))
        expect[pa] = expect[pb] = reason
    other = tool.codec(password="not the password")
    plant(tool, name("wrong-password.bin"), object_bytes(content, other))
    expect["wrong-password.bin"] = "authentication failed"
    return expect


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_damaged_objects_fail_verify_one_by_one(make_tool, etype):
    tool = make_tool(encryption_type=etype)
    backup_good(tool)
    expect = damaged_objects(tool)
    before = snapshot(tool.tmp, tool.restore)
    code, out, err = tool("--verify")
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED
    for path, reason in expect.items():
        assert_reported(err, path, reason)
    assert len(failures(err)) == len(expect), err
    for rel in GOOD:
        assert f"OK {rel}" in out
    assert f"{len(expect)} failed" in out
    assert snapshot(tool.tmp, tool.restore) == before         # verify writes nothing
    assert tool.restored() == {}


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_damaged_objects_are_not_restored_not_even_partly(make_tool, etype):
    tool = make_tool(encryption_type=etype)
    backup_good(tool)
    expect = damaged_objects(tool)
    code, _, err = tool("--restore")
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED
    for path, reason in expect.items():
        assert_reported(err, path, reason)
    assert set(tool.restored()) == set(GOOD)           # no file, no partial file for the rest
    assert_good_restored(tool)
    assert temp_files(tool.restore) == []


# ---------------------------------------------------------------------------------------
# Decompression bombs, end to end
# ---------------------------------------------------------------------------------------

BOMB_SIZE = 100 * 1000 * 1000          # what the payload inflates to (twice the peak bound)
BOMB_DECLARED = 10                     # what its name says


@functools.lru_cache(maxsize=None)
def bomb_payload(kind):
    # (gzip's run-length strategy: as small as level 9 on zeros, and three times faster)
    compressor = (esb.make_compressor(kind, BOMB_SIZE, 1, 9) if kind == "xz" else
                  zlib.compressobj(9, zlib.DEFLATED, 31, 9, zlib.Z_RLE))
    zeros = bytes(esb.CHUNK)
    parts = [compressor.compress(zeros) for _ in range(BOMB_SIZE // len(zeros))]
    return b"".join(parts) + compressor.flush()


@pytest.mark.parametrize("action", ["--restore", "--verify"])
@pytest.mark.parametrize("kind", ["xz", "gzip"])
def test_decompression_bomb_is_stopped_at_the_declared_size(make_tool, monkeypatch, kind,
                                                            action):
    tool = make_tool(processes=1)                 # in this process, so tracemalloc sees it
    backup_good(tool)
    payload = bomb_payload(kind)
    assert len(payload) < 1_000_000
    plant(tool, esb.BackupName("bomb.bin", MTIME, BOMB_DECLARED, bytes(16)),
               esb.seal_with(tool.codec(), payload))
    inflated, real_stream = [], esb.decompress_stream

    def counted(chunks):
        for piece in real_stream(chunks):
            inflated.append(len(piece))
            yield piece
    monkeypatch.setattr(esb, "decompress_stream", counted)
    tracemalloc.start()
    try:
        code, _, err = tool(action)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED
    assert_reported(err, "bomb.bin", f"larger than the {BOMB_DECLARED} bytes")
    assert len(failures(err)) == 1, err
    assert 0 < sum(inflated) <= 2 * esb.CHUNK, inflated    # not the BOMB_SIZE bytes
    assert peak < 48 * 1024 * 1024                 # a few chunks and the xz dictionary
    assert sum(map(len, tree(tool.restore).values())) <= sum(map(len, GOOD.values()))
    assert not (tool.restore / "bomb.bin").exists() and temp_files(tool.restore) == []
    if action == "--restore":
        assert_good_restored(tool)


# ---------------------------------------------------------------------------------------
# Absurd name fields
# ---------------------------------------------------------------------------------------

ABSURD = {"huge-size.txt": dict(size=10 ** 30),
          "huge-mtime.txt": dict(mtime=10 ** 30),
          "time-t-overflow.txt": dict(mtime=2 ** 63),
          "year-10000.txt": dict(mtime=253_402_300_800),
          "year-6325.txt": dict(mtime=2 ** 37 - 1),
          "deleted-99999999.txt": dict(deleted=99_999_999),
          "deleted-7fffffff.txt": dict(deleted=0x7FFFFFFF),
          "deleted-huge.txt": dict(deleted=10 ** 30)}


def plant_absurd(tool):
    for path, fields in ABSURD.items():
        plant_file(tool, path, **fields)


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_absurd_names_in_list_and_json_list(make_tool, encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    plant_absurd(tool)
    code, out, err = tool("--list")
    assert_no_crash(code, err)
    assert code in (esb.EXIT_OK, esb.EXIT_FAILED)
    for path in list(GOOD) + list(ABSURD):
        assert path in out or path in err, path
    code, out, err = tool("--list", "--json")
    assert_no_crash(code, err)
    rows = {row["path"]: row for row in json.loads(out)}
    for path, data in GOOD.items():
        assert (rows[path]["size"], rows[path]["mtime"]) == (len(data), MTIME)
        assert rows[path]["deleted"] is None
    for path, fields in ABSURD.items():
        if path in rows:                           # listed as the name says, or reported
            for key, value in fields.items():
                assert rows[path][key] == value
        else:
            assert_reported(err, path)


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_absurd_names_in_verify(make_tool, encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    plant_absurd(tool)
    code, out, err = tool("--verify")
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED
    assert_reported(err, "huge-size.txt", "declares")
    for rel in GOOD:
        assert f"OK {rel}" in out


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_absurd_names_in_restore(make_tool, encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    plant_absurd(tool)
    code, _, err = tool("--restore", "--restore-deleted")
    assert_no_crash(code, err)
    assert code == esb.EXIT_FAILED
    assert_reported(err, "huge-size.txt", "declares")
    got = tool.restored()
    for path in ABSURD:       # either restored whole, or reported and absent
        reported = any(escaped(path) in line for line in failures(err))
        assert reported != (got.get(path) == EVIL), (path, err)
        if reported:
            assert path not in got
    for path in ("huge-mtime.txt", "time-t-overflow.txt"):   # beyond time_t: cannot be set
        assert_reported(err, path)
    assert_good_restored(tool)
    assert temp_files(tool.restore) == []


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_verify_fails_every_object_a_restore_refuses(make_tool, encrypt_filenames):
    """A verify that says OK promises a restore: both fail the same objects, saying why."""
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    plant_absurd(tool)
    plant_hostile(tool, HOSTILE_PATHS if encrypt_filenames else PLAIN_HOSTILE_PATHS, 0)
    said = {}
    for argv in (["--restore", "--restore-deleted"], ["--verify"]):
        code, _, err = tool(*argv)
        assert_no_crash(code, err)
        assert code == esb.EXIT_FAILED, err
        said[argv[0]] = {line.split("FAILED ", 1)[1].split(" ", 1)[1] for line in failures(err)}
    assert said["--verify"] == said["--restore"]
    # the huge size, the two mtimes beyond time_t, and every hostile path
    assert len(said["--verify"]) == 3 + (len(HOSTILE_PATHS) if encrypt_filenames else
                                         len(PLAIN_HOSTILE_PATHS))


def test_absurd_deleted_date_does_not_crash_a_backup_with_expiry(make_tool):
    tool = make_tool()
    backup_good(tool)
    plant_absurd(tool)
    tool.set(DELETED_KEEP_DAYS=30)
    code, _, err = tool()
    assert_no_crash(code, err)


@pytest.mark.parametrize("deleted", [99_999_999, 0x7FFFFFFF])
def test_unparseable_deleted_date_is_kept_by_a_backup_with_expiry(make_tool, deleted):
    tool = make_tool()
    backup_good(tool)
    key = plant_file(tool, "gone.txt", deleted=deleted)
    tool.set(DELETED_KEEP_DAYS=0)
    code, _, err = tool()
    assert code == esb.EXIT_OK, err
    assert tool.dest.joinpath(key).exists()       # not a date we wrote: never expired


# ---------------------------------------------------------------------------------------
# Property-based: only typed errors, never wrong data
# ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def time_limit(seconds):
    """A hang becomes a failure instead of a stuck test run."""
    def alarm(signum, frame):
        raise TimeoutError(f"took more than {seconds} s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
PLAIN_NAMES = make_codec()
CRYPT_NAMES = make_codec(encrypt_filenames=True)

name_pieces = st.lists(st.sampled_from([".", "..", "/", "0", "00", "z", "Z", "a", "9",
                                        "enc", ".enc", "s44we8", "\x00", "-", " "]),
                       max_size=24).map("".join)
name_texts = st.one_of(
    st.text(max_size=80),
    name_pieces,
    name_pieces.map(lambda s: s + ".enc"),
    st.text(alphabet=B36 + "./", max_size=60).map(lambda s: s + ".enc"),
    # base36 of bytes with the configured salt: decrypts (and fails) without a key derivation
    st.binary(max_size=120).map(lambda b: esb.b36_encode_bytes(SALT_BYTES + b) + ".enc"),
    # a name that really decrypts, to any stem at all
    st.binary(max_size=120).map(
        lambda b: esb.b36_encode_bytes(esb.seal_with(CRYPT_NAMES, b)) + ".enc"),
    st.text(max_size=60).map(
        lambda s: esb.b36_encode_bytes(esb.seal_with(CRYPT_NAMES, s.encode("utf-8", "replace")))
        + ".enc"),
)


@PROPERTY
@given(text=name_texts, encrypted=st.booleans())
def test_decode_name_raises_only_bad_name_error(text, encrypted):
    codec = CRYPT_NAMES if encrypted else PLAIN_NAMES
    try:
        name = esb.decode_name(text, codec)
    except esb.BadNameError as exc:
        assert PASSWORD not in exc.message
        return
    assert isinstance(name, esb.BackupName) and isinstance(name.path, str) and name.path
    assert min(name.mtime, name.size, name.deleted) >= 0 and len(name.md5) == 16


@PROPERTY
@given(path=st.text(min_size=1, max_size=40),
       mtime=st.integers(0, 10 ** 40), size=st.integers(0, 10 ** 40),
       md5=st.binary(min_size=16, max_size=16), deleted=st.integers(0, 10 ** 12))
def test_plaintext_names_round_trip(path, mtime, size, md5, deleted):
    name = esb.BackupName(path, mtime, size, md5, deleted)
    assert esb.decode_name(esb.encode_name(name, PLAIN_NAMES), PLAIN_NAMES) == name


DECODE_CODECS = [make_codec(compress=c, encrypt=e, encryption_type=t)
                 for c in (True, False) for e in (True, False) for t in ("aes", "cha")
                 if e or t == "aes"]


def mutate(blob, how, at, value):
    if not blob:
        return bytes([value])
    at %= len(blob)
    if how == "flip":
        return blob[:at] + bytes([blob[at] ^ (value or 1)]) + blob[at + 1:]
    if how == "cut":
        return blob[:at]
    if how == "insert":
        return blob[:at] + bytes([value]) + blob[at:]
    return blob + bytes([value])


@functools.lru_cache(maxsize=None)
def decode_blobs(index):
    """Candidate objects for a codec: random bytes, and valid objects damaged at random."""
    codec = DECODE_CODECS[index]
    data = st.binary(max_size=3000)

    def sealed(payload):
        return esb.seal_with(codec, payload) if codec.encrypt else payload

    valid = data.map(lambda d: (object_bytes(d, codec), d, True))
    damaged = st.tuples(valid, st.sampled_from(["flip", "cut", "insert", "append"]),
                        st.integers(0, 10 ** 6), st.integers(0, 255)).map(
        lambda t: (mutate(t[0][0], *t[1:]), t[0][1], False))
    garbage = st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=400).map(lambda b: SALT_BYTES + b),
        st.binary(max_size=400).map(lambda b: sealed(esb.GZIP_MAGIC + b)),
        st.binary(max_size=400).map(lambda b: sealed(b"\xfd7zXZ\x00" + b)),
        st.binary(max_size=400).map(lambda b: sealed(b"\x5d\x00\x00\x80\x00" + b)),
    ).map(lambda b: (b, b"", False))
    return st.one_of(garbage, damaged, valid)


@pytest.mark.parametrize("index", range(len(DECODE_CODECS)),
                         ids=[f"{'xz' if c.compress else 'raw'}-"
                              f"{c.encryption_type if c.encrypt else 'plain'}"
                              for c in DECODE_CODECS])
def test_decode_raises_only_integrity_error_and_never_returns_wrong_data(index):
    codec = DECODE_CODECS[index]

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=decode_blobs(index), claim=st.sampled_from(["true", "other", "size+1"]))
    def check(case, claim):
        blob, original, intact = case
        size, md5 = len(original), hashlib.md5(original).digest()
        if claim == "other":
            md5 = hashlib.md5(original + b"x").digest()
        elif claim == "size+1":
            size += 1
        results = []
        for src in (io.BytesIO(blob), blob):     # streamed, and whole (decode_whole)
            with time_limit(20):
                try:
                    results.append(decoded(src, size, md5, codec))
                except esb.IntegrityError as exc:
                    assert not (intact and claim == "true"), "an intact object did not decode"
                    results.append(exc.message)
        assert results[0] == results[1], "the whole object decodes otherwise than its stream"
        data = results[0]
        if isinstance(data, str):
            return
        assert len(data) == size and hashlib.md5(data).digest() == md5
        if intact:
            assert data == original

    check()


def gzip_members(data, cut):
    return gzip.compress(data[:cut]) + gzip.compress(data[cut:])


@PROPERTY
@given(blob=st.one_of(st.binary(max_size=600),
                      st.binary(max_size=600).map(lambda b: esb.GZIP_MAGIC + b),
                      st.binary(max_size=600).map(lambda b: b"\xfd7zXZ\x00" + b),
                      st.binary(max_size=600).map(lambda b: lzma.compress(b)[:-3] + b[:3]),
                      st.binary(max_size=600).map(lambda b: gzip.compress(b) + b)),
       splits=st.lists(st.integers(0, 700), max_size=5))
def test_decompress_stream_raises_only_integrity_error(blob, splits):
    cuts = sorted({0, len(blob), *(min(s, len(blob)) for s in splits)})
    chunks = [blob[a:b] for a, b in zip(cuts, cuts[1:])]
    with time_limit(20):
        try:
            out = b"".join(esb.decompress_stream(iter(chunks)))
        except esb.IntegrityError:
            return
    assert isinstance(out, bytes)


@PROPERTY
@given(data=st.binary(max_size=5000), cut=st.integers(0, 5000),
       kind=st.sampled_from(["xz", "gzip", "gzip2", "lzma"]),
       step=st.integers(1, 4096))
def test_decompress_stream_gives_back_valid_streams_in_any_chunking(data, cut, kind, step):
    payload = {"xz": lambda: lzma.compress(data), "gzip": lambda: gzip.compress(data),
               "gzip2": lambda: gzip_members(data, cut),
               "lzma": lambda: lzma.compress(data, format=lzma.FORMAT_ALONE)}[kind]()
    chunks = [payload[i:i + step] for i in range(0, len(payload), step)]
    assert b"".join(esb.decompress_stream(iter(chunks))) == data


ROOT = "/restore/root"
path_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["a", "b.txt", ".", "..", "...", "/", "//", "\x00", "\n", "\x7f",
                              "\x1b", " ", "\\", "~", "é", ".hidden", "..x"]),
             max_size=12).map("".join))


@PROPERTY
@given(path=path_texts)
def test_safe_relpath_accepts_only_paths_inside_the_root(path):
    try:
        result = esb.safe_relpath(path)
    except esb.UnsafePathError as exc:
        assert isinstance(exc.message, str)
        return
    assert result == path
    joined = os.path.join(ROOT, path)
    assert os.path.normpath(joined) == joined         # nothing to collapse: no . or ..
    assert joined.startswith(ROOT + "/") and joined != ROOT + "/"
    assert not any(ord(c) < 32 or ord(c) == 127 for c in path)


# ---------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------

def secrets_for(etype):
    """Every form a secret could take in output."""
    key = esb.derive_key(etype, PASSWORD, SALT_BYTES)
    return [PASSWORD, PASSWORD.encode().hex(), key.hex(), key.hex().upper(), repr(key)[2:-1],
            S3_SECRET]


def assert_no_secret(text, etype="aes"):
    for secret in secrets_for(etype):
        assert secret not in text, f"secret {secret[:6]}... printed"


@pytest.mark.parametrize("etype,encrypt_filenames", [("aes", False), ("aes", True),
                                                     ("cha", True)])
def test_no_secret_in_the_output_of_any_run(make_tool, etype, encrypt_filenames):
    tool = make_tool(encryption_type=etype, encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    (tool.src / "hello.txt").write_bytes(b"changed\n")
    (tool.src / "empty.txt").unlink()
    runs = [(), ("-v",), ("--dry-run", "-v"), ("--list",), ("--list", "--json"),
            ("--verify", "-v"), ("--restore", "-v"), ("--restore", "--restore-deleted"),
            ("--restore", "--dry-run"), ("--help",), ("--version",)]
    for argv in runs:
        try:
            code, out, err = tool(*argv)
        except SystemExit as exc:             # --help and --version exit through argparse
            code = exc.code
            out, err = tool.capsys.readouterr()
        assert code == 0, (argv, err)
        assert_no_secret(out + err, etype)


@pytest.mark.parametrize("encrypt_filenames", [False, True], ids=["plain", "encrypted"])
def test_no_secret_when_the_password_is_wrong(make_tool, encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    backup_good(tool)
    tool.set(ENCRYPTION_PASSWORD=PASSWORD + "-but-wrong")
    for argv in (("--verify",), ("--restore",), ("--list",), ()):
        code, out, err = tool(*argv)
        assert_no_crash(code, err)
        # plaintext names list (and back up) without the password; contents never decrypt
        if encrypt_filenames or argv in (("--verify",), ("--restore",)):
            assert code != esb.EXIT_OK, (argv, err)
        assert_no_secret(out + err)


BAD_CONFIGS = [
    dict(ENCRYPTION_SALT="not hex"),
    dict(ENCRYPTION_TYPE="rot13"),
    dict(ENCRYPTION_PASSWORD=PASSWORD + "-\u20ac"),         # outside Latin-1, aes
    dict(ENCRYPT="false"),                                 # with encrypt_filenames on
    dict(ENCRYPT_FILENAMES="maybe"),
    dict(DEST_LOCAL_PATH=None),
    dict(DEST_LOCAL_PATH=None, DEST_S3_BUCKET="bucket", DEST_AWS_SECRET_ACCESS_KEY=S3_SECRET),
]


@pytest.mark.parametrize("env", BAD_CONFIGS, ids=lambda env: next(iter(env)))
def test_no_secret_in_configuration_errors(make_tool, env):
    tool = make_tool(encrypt_filenames=True)
    tool.set(**env)
    for argv in ((), ("--restore",), ("--verify",), ("--list",)):
        code, out, err = tool(*argv)
        assert code == esb.EXIT_USAGE, (argv, err)
        assert "error" in err
        assert_no_secret(out + err)


def test_no_secret_in_config_file_errors_and_warnings(make_tool):
    tool = make_tool()
    backup_good(tool)
    tool.set(ENCRYPTION_PASSWORD=None, ENCRYPTION_SALT=None)
    config = tool.tmp / "config.json"
    body = json.dumps({"encryption_password": PASSWORD, "encryption_salt": SALT,
                       "dest": {"local_path": str(tool.dest)}})
    config.write_text(body[:-1] + ', "extra": ')            # broken JSON holding the secret
    code, out, err = tool("--list")
    assert code == esb.EXIT_USAGE and "not valid JSON" in err
    assert_no_secret(out + err)
    config.write_text(body)
    config.chmod(0o644)                                     # readable by others: a warning
    code, out, err = tool("--list")
    assert code == esb.EXIT_OK and "chmod 600" in err
    assert_no_secret(out + err)


def test_repr_of_configuration_hides_secrets(make_tool):
    tool = make_tool()
    tool.set(SRC_S3_BUCKET="b", SRC_LOCAL_PATH=None, SRC_AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
             SRC_AWS_SECRET_ACCESS_KEY=S3_SECRET)
    loaded = esb.load_config(None)
    config = loaded[0]
    assert config.codec.password == PASSWORD and config.src.aws_secret_access_key == S3_SECRET
    codec = make_codec()
    storage = esb.StorageConfig(s3_bucket="b", aws_secret_access_key=S3_SECRET)
    for obj in (loaded, config, config.codec, config.src, codec, storage,
                esb.make_storage(storage)):
        assert_no_secret(repr(obj) + str(obj) + f"{obj}")
    assert "AKIDEXAMPLE" in repr(config.src)                # not everything is hidden


@pytest.mark.parametrize("action,patched", [("--verify", "read_backup"),
                                            ("--restore", "select_for_restore"),
                                            ("", "plan_walked")])
def test_internal_error_traceback_holds_no_secret(make_tool, monkeypatch, action, patched):
    tool = make_tool(encrypt_filenames=True)
    backup_good(tool)

    def broken(*args, **kwargs):
        raise RuntimeError(f"unexpected state: {args!r}")   # even a careless message

    monkeypatch.setattr(esb, patched, broken)
    code, out, err = tool(*filter(None, [action]))
    assert code == esb.EXIT_BUG
    assert "please report" in err and "Traceback" in err and "RuntimeError" in err
    assert_no_secret(out + err)
