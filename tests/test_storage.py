"""The storage contract, for LocalStorage and S3Storage alike, then what is special to each.

Contract (see the "Storages" section of the script): store() writes atomically under the key
that key_of() returns, list_files() lists every file with "/"-separated relative keys, open()
streams a file back, read() gives its first bytes at once, put() stores bytes in memory,
stat(), rename(), remove(); a missing key raises MissingError.
"""

import contextlib
import errno
import json
import os
import pickle
import secrets
import subprocess
import sys
import time
import urllib.parse

import pytest
from botocore.exceptions import ClientError

from conftest import (NOBODY, ROOT, esb, folder_for_everyone, give_to_nobody, s3_config,
                      unmeasured)
from s3_server import empty_and_delete_bucket

BASE_PATH = "some/prefix"
MiB = 1024 * 1024


# ----------------------------------------------------------------------------- helpers

def put(storage, key: str, data: bytes, **kwargs):
    """Store ``data`` under ``key`` through the contract's store(); returns its result."""
    def fill(sink):
        sink.write(data)
        return len(data)
    return storage.store(key.rpartition("/")[0], fill, lambda _: key, **kwargs)


def read(storage, key: str, piece: int = 64 * 1024) -> bytes:
    """Read a stored file back in pieces of ``piece`` bytes, as the restore does."""
    chunks = []
    with storage.open(key) as stream:
        while True:
            chunk = stream.read(piece)
            if not chunk:
                break
            assert len(chunk) <= piece
            chunks.append(chunk)
    return b"".join(chunks)


def listing(storage, report=None) -> dict:
    """{key: Entry} of everything list_files() yields."""
    report = esb.ListReport() if report is None else report
    entries = list(storage.list_files(report))
    keys = [entry.key for entry in entries]
    assert len(keys) == len(set(keys)), f"a key was listed twice: {keys}"
    return {entry.key: entry for entry in entries}


def sizes(storage) -> dict:
    """{key: size} of the listing."""
    return {key: entry.size for key, entry in listing(storage).items()}


def temp_files(folder) -> list:
    """Names of our temporary files in one local folder."""
    return [name for name in os.listdir(folder) if name.startswith(esb.TMP_PREFIX)]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class Boom(Exception):
    """Raised on purpose from inside store()."""


def no_temp_files_under(root) -> bool:
    """True when no temporary file of ours is left anywhere under a local root."""
    return all(not temp_files(folder) for folder, _, _ in os.walk(root))


class FlatStorage(esb.LocalStorage):
    """A third backend, made here to prove the storage contract is the whole contract: every
    file lies directly in the root under its percent-quoted key ("a/b.txt" is the file
    "a%2Fb.txt"), so no folder is ever made.  ``remote`` is set by the caller: True makes
    the driver treat it like S3 (threads in a batch, listing in a helper process)."""

    ordered = False     # it lists in the order of the quoted names ("a%2Fb" before "a-b"):
                        # a backup holds its listing as columns and sorts them

    def _full(self, key: str) -> str:
        return os.path.join(self.root, urllib.parse.quote(key, safe="")) if key else self.root

    def _folder(self, folder: str) -> str:
        os.makedirs(self.root, exist_ok=True)
        return self.root

    def list_files(self, report, skip=None):
        for entry in super().list_files(report):
            key = urllib.parse.unquote(entry.key)
            parts = key.split("/")
            folders = ("/".join(parts[:i]) + "/" for i in range(1, len(parts)))
            if not (skip and (skip(key) or any(skip(folder) for folder in folders))):
                yield entry._replace(key=key)

    def inside(self, other):
        return None


def make_flat(config, use):
    return FlatStorage(config.get("flat_path") or "", reap=use.reap, throttle=use.throttle)


FLAT_KIND = esb.StorageKind("flat_path", ("flat_path",), make_flat)
# ^ FlatStorage's registration: a section with flat_path set (DEST_FLAT_PATH) is one


@pytest.fixture
def flat_registered(monkeypatch):
    """FlatStorage registered for the length of a test (for good, its variables would be
    every test's: README names no DEST_FLAT_PATH)."""
    monkeypatch.setattr(esb, "STORAGE_KINDS", dict(esb.STORAGE_KINDS))
    esb.register_storage(FLAT_KIND)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["local", "restore-folder", "s3", "s3-base-path", "flat", "moto"])
def storage(request, tmp_path):
    """A prepared, empty storage of each kind ("restore-folder": a local folder as a restore
    writes it; "moto": S3 as moto serves it, the server of the archive tests,
    tests/moto_server.py)."""
    if request.param == "local":
        store = esb.LocalStorage(str(tmp_path / "root"))
    elif request.param == "restore-folder":
        store = esb.RestoreFolder(str(tmp_path / "root"))
    elif request.param == "flat":
        store = FlatStorage(str(tmp_path / "root"))
    else:
        bucket = request.getfixturevalue("moto_bucket" if request.param == "moto"
                                         else "s3_bucket")
        base = BASE_PATH if request.param == "s3-base-path" else None
        store = esb.S3Storage(s3_config(bucket, base_path=base))
    store.prepare(create=True)
    return store


@pytest.fixture
def root(tmp_path):
    """The root folder of a local storage (created) and nothing in it."""
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def local(root):
    return esb.LocalStorage(str(root))


@pytest.fixture
def s3(s3_bucket):
    storage = esb.S3Storage(s3_config(s3_bucket))
    storage.prepare(create=True)
    return storage


# ============================================================================ the contract

def test_store_returns_fill_result_and_key(storage):
    def fill(sink):
        sink.write(b"hello ")
        sink.write(b"world")
        return "d1g3st"

    result = storage.store("a/b", fill, lambda digest: f"a/b/{digest}.bin")

    assert result == ("d1g3st", "a/b/d1g3st.bin")
    assert read(storage, "a/b/d1g3st.bin") == b"hello world"


def test_store_at_the_root(storage):
    assert put(storage, "top.txt", b"x") == (1, "top.txt")
    assert sizes(storage) == {"top.txt": 1}


def test_store_replaces_an_existing_file(storage):
    put(storage, "f.txt", b"old content")
    put(storage, "f.txt", b"new")
    assert read(storage, "f.txt") == b"new"
    assert sizes(storage) == {"f.txt": 3}


def test_list_files_returns_every_file_with_relative_keys(storage):
    files = {
        "top.txt": b"1",
        "a/sibling.bin": b"22",
        "a/b/c/deep.bin": b"333",
        "ünïcödé dir/file with spaces é.txt": "ünï".encode(),
        "日本/名前.dat": b"",
    }
    before = int(time.time())
    for key, data in files.items():
        put(storage, key, data)
    after = time.time()

    entries = listing(storage)

    assert sizes(storage) == {key: len(data) for key, data in files.items()}
    for key, entry in entries.items():
        assert isinstance(entry, esb.Entry)
        assert entry.key == key and not key.startswith("/") and "\\" not in key
        assert isinstance(entry.mtime, int)
        assert before - 5 <= entry.mtime <= after + 5


def test_list_files_of_an_empty_storage(storage):
    report = esb.ListReport()
    assert listing(storage, report) == {}
    assert report == esb.ListReport()


def test_open_streams_the_bytes_back_in_pieces(storage):
    data = os.urandom(300_000)
    put(storage, "big/blob.bin", data)
    assert read(storage, "big/blob.bin", piece=64 * 1024) == data
    assert read(storage, "big/blob.bin", piece=1000) == data


def test_read_gives_the_first_bytes_up_to_the_limit(storage):
    data = os.urandom(300_000)
    put(storage, "r/blob.bin", data)
    put(storage, "r/empty.bin", b"")
    assert storage.read("r/blob.bin", len(data) + 1) == data    # all of it: the limit is not met
    assert storage.read("r/blob.bin", len(data)) == data
    assert storage.read("r/blob.bin", 1000) == data[:1000]
    assert storage.read("r/empty.bin", 10) == b""


@pytest.mark.parametrize("size", [0, 1000, 3 * MiB + 5])     # the last past the wire's limit
def test_put_stores_bytes_like_store(storage, size):
    data = os.urandom(size)
    put(storage, "p/q.bin", b"the version put replaces")
    storage.put("p/q.bin", data)
    storage.put("top.bin", b"at the root")
    assert sizes(storage) == {"p/q.bin": size, "top.bin": 11}
    assert read(storage, "p/q.bin") == data


def test_stat_gives_size_and_mtime_like_the_listing(storage):
    put(storage, "d/one file.txt", b"12345")
    entry = storage.stat("d/one file.txt")
    assert entry == esb.Entry("d/one file.txt", 5, entry.mtime)
    assert entry == listing(storage)["d/one file.txt"]


def test_rename_moves_the_content(storage):
    data = os.urandom(1234)
    put(storage, "old/name.bin", data)

    storage.rename("old/name.bin", "old/new name é.bin", len(data))

    assert sizes(storage) == {"old/new name é.bin": 1234}
    assert read(storage, "old/new name é.bin") == data
    with pytest.raises(esb.MissingError):
        storage.open("old/name.bin")


def test_remove_deletes_the_file(storage):
    put(storage, "x/gone.bin", b"abc")
    put(storage, "x/kept.bin", b"def")
    storage.remove("x/gone.bin")
    assert sizes(storage) == {"x/kept.bin": 3}


@pytest.mark.parametrize("operation", ["open", "stat", "read"])
def test_missing_key_raises_missing_error(storage, operation):
    put(storage, "present.txt", b"here")
    with pytest.raises(esb.MissingError):
        getattr(storage, operation)("absent/nothing.txt", *([10] if operation == "read" else []))


def test_remove_of_a_missing_key_is_not_an_error(storage):
    """Contract: remove() is idempotent on both storages (S3's DeleteObject is)."""
    put(storage, "present.txt", b"here")
    storage.remove("absent/nothing.txt")
    assert sizes(storage) == {"present.txt": 4}


def test_fill_failing_midway_leaves_nothing(storage):
    put(storage, "dir/existing.txt", b"keep me")
    before = sizes(storage)

    def fill(sink):
        sink.write(b"partial " * 1000)
        raise Boom("source read failed")

    with pytest.raises(Boom):
        storage.store("dir", fill, lambda _: "dir/new.bin")

    assert sizes(storage) == before
    if not storage.remote:
        assert no_temp_files_under(storage.root)


def test_key_of_failing_leaves_nothing(storage):
    put(storage, "dir/existing.txt", b"keep me")
    before = sizes(storage)

    def fill(sink):
        sink.write(b"complete content")
        return "result"

    def key_of(result):
        raise Boom("source changed while read")

    with pytest.raises(Boom):
        storage.store("dir", fill, key_of)

    assert sizes(storage) == before
    if not storage.remote:
        assert no_temp_files_under(storage.root)


def test_failed_store_keeps_the_previous_version(storage):
    put(storage, "f.bin", b"version 1")

    def fill(sink):
        sink.write(b"version 2, half written")
        raise Boom()

    with pytest.raises(Boom):
        storage.store("", fill, lambda _: "f.bin")
    assert read(storage, "f.bin") == b"version 1"


# ============================================================================ LocalStorage

def test_local_temp_file_is_created_in_the_target_folder(local, root):
    seen = {}

    def fill(sink):
        sink.write(b"data")
        seen["target folder"] = temp_files(root / "a" / "b")
        seen["root"] = temp_files(root)
        return None

    local.store("a/b", fill, lambda _: "a/b/final.bin")

    assert len(seen["target folder"]) == 1
    assert seen["target folder"][0].startswith(esb.temp_prefix())
    assert seen["root"] == []
    assert os.listdir(root / "a" / "b") == ["final.bin"]


def test_local_files_are_mode_0600_by_default(local, root):
    put(local, "secret.bin", b"x")
    assert os.stat(root / "secret.bin").st_mode & 0o7777 == 0o600


def test_local_store_honours_mode_and_mtime(local, root):
    put(local, "d/restored.txt", b"abc", mode=0o644, mtime=1_600_000_123)
    info = os.stat(root / "d" / "restored.txt")
    assert info.st_mode & 0o7777 == 0o644
    assert info.st_mtime == 1_600_000_123
    assert local.stat("d/restored.txt") == esb.Entry("d/restored.txt", 3, 1_600_000_123)


def test_local_stale_temp_file_is_skipped_and_deleted(root):
    (root / "sub").mkdir()
    stale = root / "sub" / f"{esb.TMP_PREFIX}{dead_pid()}@{esb.host_tag()}-xyz"
    stale.write_bytes(b"left by a crash")
    (root / "sub" / "real.txt").write_bytes(b"r")

    assert sizes(esb.LocalStorage(str(root))) == {"sub/real.txt": 1}
    assert stale.exists()                 # a verify: never changed by a listing
    assert sizes(esb.LocalStorage(str(root), source=True)) == {  # a source: nothing is ours
        "sub/real.txt": 1, f"sub/{stale.name}": 15}
    assert stale.exists()
    assert sizes(esb.LocalStorage(str(root), reap=True)) == {"sub/real.txt": 1}
    assert not stale.exists()             # a backup's destination: cleaned up


def test_local_temp_file_of_another_host_is_kept_until_a_day_old(root):
    """Another container's processes are invisible here: only age tells its files are dead."""
    theirs = root / f"{esb.TMP_PREFIX}{dead_pid()}@another-container-xyz"
    theirs.write_bytes(b"maybe still being written")
    storage = esb.LocalStorage(str(root), reap=True)
    assert sizes(storage) == {} and theirs.exists()
    day_old = time.time() - esb.FOREIGN_TMP_AGE - 60
    os.utime(theirs, (day_old, day_old))
    assert sizes(storage) == {} and not theirs.exists()


def test_local_temp_file_of_this_process_is_skipped_but_kept(local, root):
    ours = root / f"{esb.temp_prefix()}xyz"
    ours.write_bytes(b"being written right now")

    assert sizes(local) == {}
    assert ours.exists()


def test_local_list_skips_a_fifo_with_a_note(local, root):
    os.mkfifo(root / "pipe")
    (root / "file.txt").write_bytes(b"f")
    report = esb.ListReport()

    assert list(listing(local, report)) == ["file.txt"]
    assert len(report.notes) == 1 and "pipe" in report.notes[0]
    assert report.problems == [] and report.blind == []


def test_local_list_skips_a_symlink_to_a_folder_with_a_note(local, root):
    (root / "real").mkdir()
    (root / "real" / "inside.txt").write_bytes(b"i")
    os.symlink(root / "real", root / "alias")
    report = esb.ListReport()

    assert list(listing(local, report)) == ["real/inside.txt"]
    assert len(report.notes) == 1 and "alias" in report.notes[0]
    assert report.problems == []


def test_local_list_follows_a_symlink_to_a_file(local, root, tmp_path):
    target = tmp_path / "outside.bin"
    target.write_bytes(b"12345678")
    os.utime(target, (1_500_000_000, 1_500_000_000))
    os.symlink(target, root / "link.bin")
    report = esb.ListReport()

    assert listing(local, report) == {"link.bin": esb.Entry("link.bin", 8, 1_500_000_000)}
    assert report == esb.ListReport()
    assert read(local, "link.bin") == b"12345678"


def test_local_list_notes_a_dangling_symlink(local, root):
    os.symlink(root / "no-such-target", root / "dangling")
    report = esb.ListReport()

    assert listing(local, report) == {}
    assert len(report.notes) == 1 and "dangling" in report.notes[0]
    assert report.problems == []


UNREADABLE_CHILD = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb   # imported as root, before dropping privileges
os.setgroups([])
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[3]))
report = esb.ListReport()
keys = sorted(entry.key for entry in esb.LocalStorage(sys.argv[2]).list_files(report))
print(json.dumps({"keys": keys, "problems": report.problems, "blind": report.blind}))
"""


def list_as_nobody(folder: str) -> dict:
    """List ``folder`` in a child process running as "nobody" (root reads everything)."""
    give_to_nobody(folder)
    done = subprocess.run([sys.executable, "-c", UNREADABLE_CHILD, str(ROOT), folder,
                           str(NOBODY)], env=unmeasured(os.environ), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_local_unreadable_folder_is_reported_and_blind():
    # As root, chmod 000 does not stop reading: the listing then runs as "nobody" in a child
    # process, in a folder that user can reach (pytest's tmp_path is root-only).
    with folder_for_everyone("esb-unreadable-") as folder:
        os.makedirs(os.path.join(folder, "ok"))
        os.makedirs(os.path.join(folder, "locked", "inner"))
        with open(os.path.join(folder, "ok", "a.txt"), "wb") as handle:
            handle.write(b"a")
        with open(os.path.join(folder, "locked", "inner", "b.txt"), "wb") as handle:
            handle.write(b"b")
        os.chmod(os.path.join(folder, "locked"), 0o000)
        if os.geteuid() == 0:
            result = list_as_nobody(folder)
        else:
            report = esb.ListReport()
            keys = sorted(e.key for e in esb.LocalStorage(folder).list_files(report))
            result = {"keys": keys, "problems": report.problems, "blind": report.blind}

    assert result["keys"] == ["ok/a.txt"]
    assert result["blind"] == ["locked/"]
    assert len(result["problems"]) == 1 and "locked" in result["problems"][0]


def test_local_destination_inside_the_source_is_not_listed(root):
    (root / "data").mkdir()
    (root / "data" / "keep.txt").write_bytes(b"k")
    (root / "backup").mkdir()
    (root / "backup" / "object.enc").write_bytes(b"o")
    (root / "backup.txt").write_bytes(b"t")
    src, dest = esb.LocalStorage(str(root)), esb.LocalStorage(str(root / "backup"))
    assert src.inside(dest) == "backup" and dest.inside(src) is None
    assert esb.LocalStorage(str(root) + "x").inside(src) is None
    skip = esb.source_filter(src, dest, ())

    keys = sorted(e.key for e in src.list_files(esb.ListReport(), skip))
    assert keys == ["backup.txt", "data/keep.txt"]


def test_s3_destination_inside_the_source_is_not_listed(s3_bucket):
    src = esb.S3Storage(s3_config(s3_bucket))
    dest = esb.S3Storage(s3_config(s3_bucket, base_path="backups/host1"))
    src.prepare(create=True)
    for key in ("data/keep.txt", "backups/host1/x.enc", "backups/other.txt"):
        put(src, key, b"k")
    assert src.inside(dest) == "backups/host1" and dest.inside(src) is None
    assert esb.S3Storage(s3_config(s3_bucket, s3_bucket="another")).inside(dest) is None
    skip = esb.source_filter(src, dest, ())

    keys = sorted(e.key for e in src.list_files(esb.ListReport(), skip))
    assert keys == ["backups/other.txt", "data/keep.txt"]


def test_a_destination_that_is_the_source_is_refused(root, s3_bucket):
    for storage in (esb.LocalStorage(str(root)), esb.S3Storage(s3_config(s3_bucket))):
        with pytest.raises(esb.ConfigError, match="is the source"):
            esb.source_filter(storage, storage, ())


@pytest.mark.parametrize("key", ["escape/planted.txt", "escape/new/planted.txt"])
def test_local_confined_refuses_a_symlink_leading_outside(root, tmp_path, key):
    """Neither the file nor a missing folder on the way is created outside the root."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "escape")
    storage = esb.RestoreFolder(str(root))

    with pytest.raises(esb.UnsafePathError):
        put(storage, key, b"evil")
    assert os.listdir(outside) == []


def test_local_confined_refuses_even_a_symlink_inside_the_root(root):
    """A link that stays inside could be changed to one that does not between a check and
    a write: no link below the root is followed."""
    (root / "real").mkdir()
    os.symlink(root / "real", root / "alias")
    storage = esb.RestoreFolder(str(root))

    with pytest.raises(esb.UnsafePathError, match="'alias' there is a symbolic link"):
        put(storage, "alias/f.txt", b"ok")
    assert os.listdir(root / "real") == []


def test_restore_folder_says_when_a_file_stands_where_a_folder_goes(root):
    (root / "a").write_bytes(b"a file")
    with pytest.raises(esb.UnsafePathError, match="'a' there is not a folder"):
        put(esb.RestoreFolder(str(root)), "a/b.txt", b"b")
    assert (root / "a").read_bytes() == b"a file"


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
def test_restore_folder_keeps_a_bounded_number_of_folders_open(root, monkeypatch, batched):
    """Folders stay open for the next file, up to FOLDER_FDS: none is closed while a batch
    still has to rename a file in it, and none is left open beyond the bound after."""
    monkeypatch.setattr(esb, "FOLDER_FDS", 4)
    storage = esb.RestoreFolder(str(root))
    open_before = len(os.listdir("/proc/self/fd"))
    keys = [f"d{i}/e{i % 3}/f{i}.txt" for i in range(40)]
    with storage.batch() if batched else contextlib.nullcontext({}) as lost:
        for key in keys:
            put(storage, key, key.encode())
    assert lost == {}
    assert len(storage._fds) <= 4 + 1          # (and the root)
    assert len(os.listdir("/proc/self/fd")) <= open_before + 4 + 1
    assert {key: (root / key).read_bytes() for key in keys} == {k: k.encode() for k in keys}
    assert no_temp_files_under(root)


def test_restore_folder_errors_of_its_own_root(tmp_path):
    """Made where a file is; missing (not to be made); gone before a worker opens it."""
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(esb.StorageError, match="cannot create folder"):
        esb.RestoreFolder(str(tmp_path / "file" / "restore")).prepare(create=True)
    assert esb.RestoreFolder(str(tmp_path / "gone")).prepare(False, missing_ok=True) is False
    with pytest.raises(esb.StorageError, match=r"cannot open folder .*gone: No such file"):
        put(esb.RestoreFolder(str(tmp_path / "gone")), "a.txt", b"a")


def test_a_restore_folder_replaced_after_its_check_is_not_written(tmp_path):
    """The run checks the folder, then a worker opens it by its path: it must be the same."""
    root = tmp_path / "restore"
    esb.RestoreFolder(str(root)).prepare(create=True)
    root.rename(tmp_path / "checked")
    (tmp_path / "elsewhere").mkdir()
    root.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(esb.StorageError, match="was replaced by another one"):
        put(esb.RestoreFolder(str(root)), "a.txt", b"a")
    assert os.listdir(tmp_path / "elsewhere") == [] == os.listdir(tmp_path / "checked")
    esb.RestoreFolder(str(root)).prepare(create=True)     # a new run checks it anew
    put(esb.RestoreFolder(str(root)), "a.txt", b"a")
    assert os.listdir(tmp_path / "elsewhere") == ["a.txt"]


@pytest.mark.parametrize("what", ["link", "file"])
def test_an_owned_restore_folder_swapped_before_a_worker_opens_it(tmp_path, what):
    """The default folder checked by the run, then replaced before a worker opens it."""
    place = tmp_path / "default"
    if what == "link":
        (tmp_path / "elsewhere").mkdir()
        place.symlink_to(tmp_path / "elsewhere")
    else:
        place.write_bytes(b"")
    with pytest.raises(esb.StorageError, match="is a symbolic link" if what == "link"
                       else "is not a folder"):
        put(esb.RestoreFolder(str(place), owned=True), "a.txt", b"a")
    if what == "link":
        assert os.listdir(tmp_path / "elsewhere") == []


def test_restore_folder_refuses_a_folder_it_made_once_it_is_another_users(root, monkeypatch):
    """(As if another user had put a folder of theirs in place of the one just made.)"""
    storage = esb.RestoreFolder(str(root))
    put(storage, "top.txt", b"opened the root as this user")
    monkeypatch.setattr(esb.os, "geteuid", lambda: NOBODY + 1)
    with pytest.raises(esb.UnsafePathError, match="swapped for another user's"):
        put(storage, "new/deep.txt", b"x")
    assert os.listdir(root / "new") == []


def test_restore_folder_passes_on_other_errors_of_a_folder(root):
    """Deeper than the first folder (one it opened on the way is closed again)."""
    with pytest.raises(OSError) as caught:
        put(esb.RestoreFolder(str(root)), "a/" + "x" * 300 + "/f.txt", b"f")
    assert caught.value.errno == errno.ENAMETOOLONG
    assert os.listdir(root / "a") == []


def test_local_prepare_without_create_on_a_missing_folder(tmp_path):
    missing = tmp_path / "not mounted"
    storage = esb.LocalStorage(str(missing))

    with pytest.raises(esb.StorageError) as caught:
        storage.prepare(create=False)

    assert caught.value.exit_code == 2
    assert str(missing) in caught.value.message
    assert not missing.exists()


def test_local_prepare_with_create_makes_the_folder(tmp_path):
    storage = esb.LocalStorage(str(tmp_path / "new" / "nested"))
    storage.prepare(create=True)
    assert (tmp_path / "new" / "nested").is_dir()


# ============================================================================ S3Storage

def test_s3_prepare_creates_a_missing_bucket(s3_bucket):
    name = f"t-new-{secrets.token_hex(6)}"
    storage = esb.S3Storage(s3_config(s3_bucket, s3_bucket=name))
    try:
        storage.prepare(create=True)
        s3_bucket.client.head_bucket(Bucket=name)   # raises if it was not created
        storage.prepare(create=True)                # an existing bucket is fine too
        put(storage, "f.txt", b"in the new bucket")
        assert sizes(storage) == {"f.txt": 17}
    finally:
        try:
            empty_and_delete_bucket(s3_bucket.client, name)
        except ClientError:
            pass


def test_s3_prepare_without_create_on_a_missing_bucket(s3_bucket):
    name = f"t-missing-{secrets.token_hex(6)}"
    storage = esb.S3Storage(s3_config(s3_bucket, s3_bucket=name))

    with pytest.raises(esb.StorageError) as caught:
        storage.prepare(create=False)

    assert name in caught.value.message
    assert caught.value.exit_code == 2
    with pytest.raises(ClientError):
        s3_bucket.client.head_bucket(Bucket=name)


@pytest.mark.parametrize("operation", ["prepare", "list_files"])
def test_s3_wrong_secret_key_is_named(s3_bucket, operation):
    wrong = "wrong-" + secrets.token_urlsafe(20)
    storage = esb.S3Storage(s3_config(s3_bucket, aws_secret_access_key=wrong))

    with pytest.raises(esb.StorageError) as caught:
        if operation == "prepare":
            storage.prepare(create=False)
        else:
            list(storage.list_files(esb.ListReport()))

    message = caught.value.message
    assert "SignatureDoesNotMatch" in message
    assert "aws_secret_access_key" in message
    assert wrong not in message and wrong not in str(caught.value)
    assert s3_bucket.secret_key not in message


def test_s3_storage_class_standard_is_accepted(s3_bucket):
    storage = esb.S3Storage(s3_config(s3_bucket, storage_class="STANDARD"))
    put(storage, "a/f.bin", b"standard")
    storage.rename("a/f.bin", "a/g.bin", 8)
    assert sizes(storage) == {"a/g.bin": 8}
    assert read(storage, "a/g.bin") == b"standard"


def test_s3_base_path_keeps_objects_under_the_prefix(s3_bucket):
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="elsewhere/x.txt", Body=b"x")
    s3_bucket.client.put_object(Bucket=s3_bucket.name, Key=f"{BASE_PATH}ed/y.txt", Body=b"y")
    storage = esb.S3Storage(s3_config(s3_bucket, base_path=BASE_PATH))

    put(storage, "dir/file.txt", b"abc")
    storage.rename("dir/file.txt", "dir/renamed.txt", 3)
    put(storage, "top.txt", b"t")

    assert sorted(s3_bucket.listing()) == sorted([
        "elsewhere/x.txt", f"{BASE_PATH}ed/y.txt",
        f"{BASE_PATH}/dir/renamed.txt", f"{BASE_PATH}/top.txt"])
    assert sizes(storage) == {"dir/renamed.txt": 3, "top.txt": 1}


def test_s3_base_path_slashes_are_ignored(s3_bucket):
    put(esb.S3Storage(s3_config(s3_bucket, base_path=f"/{BASE_PATH}/")), "f.txt", b"f")
    assert list(s3_bucket.listing()) == [f"{BASE_PATH}/f.txt"]


def test_s3_storage_pickles_and_the_copy_makes_its_own_client(s3):
    put(s3, "f.txt", b"shared")
    original_client = s3.client

    clone = pickle.loads(pickle.dumps(s3))

    assert clone.client is not original_client
    assert clone.client is clone.client
    assert read(clone, "f.txt") == b"shared"
    assert s3.client is original_client


def test_s3_client_is_created_once(s3):
    first = s3.client
    put(s3, "f.txt", b"x")
    list(s3.list_files(esb.ListReport()))
    assert s3.client is first


def test_s3_large_store_goes_multipart_and_reads_back(s3, s3_bucket, monkeypatch):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MiB)
    data = os.urandom(11 * MiB + 123)     # three parts: 5 MiB, 5 MiB and the rest

    def fill(sink):
        for start in range(0, len(data), MiB):
            sink.write(data[start:start + MiB])
        return len(data)

    assert s3.store("big", fill, lambda n: f"big/{n}.bin") == (len(data), f"big/{len(data)}.bin")

    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=f"big/{len(data)}.bin")
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]   # a 3-part upload's ETag
    assert read(s3, f"big/{len(data)}.bin", piece=MiB) == data
    assert s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


def test_s3_failed_multipart_upload_is_aborted(s3, s3_bucket, monkeypatch):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MiB)
    real_upload_part = s3.client.upload_part
    calls = []

    def failing_second_part(**kwargs):
        calls.append(kwargs["PartNumber"])
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("network gone")
        return real_upload_part(**kwargs)

    monkeypatch.setattr(s3.client, "upload_part", failing_second_part)
    with pytest.raises(ConnectionResetError):
        put(s3, "big.bin", os.urandom(11 * MiB))
    assert calls == [1, 2]
    assert sizes(s3) == {}
    assert s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.name).get("Uploads", []) == []


@pytest.mark.parametrize("size", [1, 8 * MiB, 80 * 10 ** 9, 200 * 10 ** 9, 5 * 10 ** 12])
def test_s3_part_size_fits_any_object_in_10000_parts(size):
    part = esb.s3_part_size(size)
    assert part >= esb.S3_PART_SIZE == 8 * MiB
    assert -(-size // part) <= 10_000
    assert part == esb.S3_PART_SIZE or -(-size // (part - 1)) > 10_000   # no bigger than needed


def test_s3_small_store_is_a_single_put(s3, s3_bucket):
    put(s3, "small.bin", b"s" * 1000)
    s3.put("small-put.bin", b"p" * 1000)
    for key in ("small.bin", "small-put.bin"):
        head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
        assert "-" not in head["ETag"].strip('"')


# --- the bandwidth budget: object data only, each byte once ----------------------------

class CountingThrottle:
    """Stands in for esb.Throttle: counts the bytes that pass instead of making them wait."""

    def __init__(self):
        self.taken = 0

    def take(self, size):
        self.taken += size


def test_throttle_meters_the_bytes_stored_and_read_once_and_nothing_else(storage):
    storage.throttle = counting = CountingThrottle()
    data = os.urandom(3 * MiB + 5)
    put(storage, "a/t.bin", data)
    assert counting.taken == len(data)   # on S3, not the signer's read of it for its hash
    counting.taken = 0
    assert read(storage, "a/t.bin") == data
    assert counting.taken == len(data)
    counting.taken = 0
    assert storage.read("a/t.bin", 1000) == data[:1000]
    assert counting.taken == 1000
    counting.taken = 0
    storage.put("a/p.bin", data[:1000])
    assert counting.taken == 1000
    counting.taken = 0
    storage.remove("a/p.bin")
    assert set(listing(storage)) == {"a/t.bin"}
    storage.stat("a/t.bin")
    storage.rename("a/t.bin", "a/u.bin", len(data))
    storage.remove("a/u.bin")
    assert counting.taken == 0


def test_throttle_meters_each_part_of_a_multipart_upload_once(s3, monkeypatch):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MiB)
    s3.throttle = counting = CountingThrottle()
    data = os.urandom(11 * MiB + 1)
    put(s3, "big.bin", data)
    assert counting.taken == len(data)


def test_make_storage_gives_the_throttle_to_either_kind(tmp_path, s3_bucket):
    throttle = esb.Throttle(MiB)
    assert esb.make_storage(esb.StorageConfig(local_path=str(tmp_path)),
                            throttle=throttle).throttle is throttle
    assert esb.make_storage(s3_config(s3_bucket), throttle=throttle).throttle is throttle
    assert esb.make_storage(s3_config(s3_bucket)).throttle is None
    s3 = esb.make_storage(s3_config(s3_bucket), throttle=throttle)
    assert pickle.loads(pickle.dumps(s3)).throttle is throttle   # the run's one bucket


# --- batches: one flush for many small files -------------------------------------------

def test_batch_files_appear_only_when_the_batch_ends(storage):
    with storage.batch():
        put(storage, "a/one.txt", b"1")
        put(storage, "b/two.txt", b"22")
        if not storage.remote:
            assert sizes(storage) == {}           # still under temporary names
    assert sizes(storage) == {"a/one.txt": 1, "b/two.txt": 2}


@pytest.mark.parametrize("kind", [esb.LocalStorage, esb.RestoreFolder])
def test_failed_batch_leaves_no_file_and_no_temporary(root, kind):
    local = kind(str(root))
    put(local, "a/old.txt", b"old")
    with pytest.raises(RuntimeError):
        with local.batch():
            put(local, "a/one.txt", b"1")
            put(local, "a/old.txt", b"new")
            raise RuntimeError("crash in the middle of a batch")
    assert sizes(local) == {"a/old.txt": 3}
    assert temp_files(root / "a") == []
    assert (root / "a" / "old.txt").read_bytes() == b"old"


@pytest.mark.parametrize("kind", [esb.LocalStorage, esb.RestoreFolder])
def test_a_batch_names_the_file_whose_rename_failed(root, kind):
    local = kind(str(root))
    (root / "a" / "taken").mkdir(parents=True)
    (root / "a" / "taken" / "inside.txt").write_bytes(b"a folder is in the way")
    with local.batch() as lost:
        put(local, "a/fine.txt", b"fine")
        put(local, "a/taken", b"cannot replace a folder")
    assert list(lost) == ["a/taken"] and isinstance(lost["a/taken"], OSError)
    assert sorted(os.listdir(root / "a")) == ["fine.txt", "taken"]


@pytest.mark.parametrize("kind", [esb.LocalStorage, esb.RestoreFolder])
def test_batch_falls_back_to_fsync_without_syncfs(root, monkeypatch, kind):
    local = kind(str(root))
    synced = []
    monkeypatch.setattr(esb, "_libc_syncfs", lambda: None)
    real_fsync = os.fsync
    monkeypatch.setattr(esb.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    with local.batch():
        put(local, "x/1", b"1")
        put(local, "x/2", b"2")
    assert sizes(local) == {"x/1": 1, "x/2": 1}
    assert len(synced) == 3                       # each file, then the folder once


def test_s3_stale_multipart_uploads_are_aborted_fresh_ones_kept(s3, s3_bucket):
    client = s3_bucket.client
    client.create_multipart_upload(Bucket=s3_bucket.name, Key="left-by-a-killed-run.enc")
    client.create_multipart_upload(Bucket=s3_bucket.name, Key="sub/another.enc")

    def open_uploads():
        return sorted(u["Key"] for u in client.list_multipart_uploads(
            Bucket=s3_bucket.name).get("Uploads", []))

    assert s3.abort_stale_uploads() == 0                 # just started: a live run's
    assert len(open_uploads()) == 2
    assert s3.abort_stale_uploads(older_than=-60) == 2   # the whole bucket is our prefix
    assert open_uploads() == []


def test_s3_client_sends_only_required_checksums(s3, s3_bucket, monkeypatch):
    """Backblaze, R2 and older MinIO/Ceph reject the SDK's default CRC checksum headers
    (on the requests boto3 makes: large uploads, and any the wire hands back)."""
    monkeypatch.setattr(esb, "S3_WIRE", False)
    s3._client = None
    config = s3.client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    sent = []
    s3.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers)))
    put(s3, "plain.bin", b"no checksum header please")
    assert sent and not any(h.lower().startswith("x-amz-checksum") or
                            h.lower() == "x-amz-sdk-checksum-algorithm" for h in sent[0])


# ============================================================================ a third backend

def test_a_registered_backend_is_a_storage_section_of_its_own(flat_registered, tmp_path):
    """Registered, FlatStorage's key is read from the file and the environment, checked
    like the others' keys, and make_storage builds it: nothing else knows of it."""
    (tmp_path / "config.json").write_text(json.dumps({"src": {"flat_path": "/from/file"}}))
    environ = {"DEST_FLAT_PATH": str(tmp_path / "dest"), "ENCRYPTION_PASSWORD": "pw"}
    config, _ = esb.load_config(str(tmp_path / "config.json"), environ)
    assert config.src.get("flat_path") == "/from/file"
    assert config.dest == esb.StorageConfig.of({"flat_path": str(tmp_path / "dest")})
    dest = esb.make_storage(config.dest, reap=True)
    assert isinstance(dest, FlatStorage) and dest.root == str(tmp_path / "dest")
    assert "DEST_FLAT_PATH" in esb.config_variables()
    with pytest.raises(esb.ConfigError) as error:
        esb.load_config(None, {**environ, "SRC_FLAT_PAHT": "/x", "SRC_LOCAL_PATH": "/y",
                               "DEST_LOCAL_PATH": "/z"})
    assert "SRC_FLAT_PAHT is not one this tool reads; did you mean SRC_FLAT_PATH?" in str(
        error.value)
    assert "dest.local_path / dest.flat_path (environment DEST_LOCAL_PATH / DEST_FLAT_PATH)" \
        ": both are set" in str(error.value)


@pytest.mark.parametrize("remote", [False, True], ids=["local-like", "remote-like"])
def test_a_new_backend_needs_only_its_class_and_one_registration(
        flat_registered, tmp_path, monkeypatch, capsys, remote):
    """FlatStorage as the destination of a whole backup, restore and verify through main(),
    configured by DEST_FLAT_PATH: the driver asks nothing of a storage but the contract."""
    dest = tmp_path / "dest"
    monkeypatch.setattr(FlatStorage, "remote", remote)
    src = tmp_path / "src"
    files = {"top.txt": b"top", "a/b/deep.txt": b"deep" * 1000, "big.bin": os.urandom(2 * MiB)}
    for key, data in files.items():
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(data)
    for key, value in {"SRC_LOCAL_PATH": src, "DEST_FLAT_PATH": dest,
                       "RESTORE_LOCAL_PATH": tmp_path / "restore", "ENCRYPTION_PASSWORD": "pw",
                       "ENCRYPTION_SALT": "00" * 16, "BACKUP_PROCESSES": 2,
                       "RESTORE_PROCESSES": 2}.items():
        monkeypatch.setenv(key, str(value))

    def run(*argv):
        code = esb.main(["--quiet", *argv])
        out, err = capsys.readouterr()
        assert code == 0, err
        return out

    run()
    assert not [name for name in os.listdir(dest) if os.path.isdir(dest / name)]
    assert "a%2Fb%2Fdeep.txt." in " ".join(os.listdir(dest))
    (src / "top.txt").unlink()
    run()
    run("--verify")
    run("--restore", "--restore-deleted")
    restored = {p.relative_to(tmp_path / "restore").as_posix(): p.read_bytes()
                for p in (tmp_path / "restore").rglob("*") if p.is_file()}
    assert restored == files
    rows = json.loads(run("--list", "--json"))
    assert {r["path"]: bool(r["deleted"]) for r in rows} == {
        "top.txt": True, "a/b/deep.txt": False, "big.bin": False}
