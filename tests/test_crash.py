"""Faults a backup must survive: a crash at any point (SIGKILL of the whole process group),
a write that fails while an old copy exists (file size limit, full disk, S3 refusing it),
and a user's Ctrl-C or SIGTERM.  Also: temporary files are private (mode 0600).

The tool runs as users run it, ``python3 encrypted_s3_backup.py`` in a subprocess configured
by environment variables, except where a fault is injected in-process (S3 refusal, modes).
"""

import base64
import contextlib
import ctypes
import io
import multiprocessing
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from botocore.exceptions import ClientError
from conftest import (PASSWORD, ROOT, SALT, esb, is_temp, make_codec, process_env, put_file,
                      run_main, s3_env, set_env, temp_files, tree, unmeasured)

SCRIPT = str(ROOT / "encrypted_s3_backup.py")
BASE_MTIME = 1_700_000_000


# ---------------------------------------------------------------------------------------
# Helpers: source trees
# ---------------------------------------------------------------------------------------

def text_bytes(rng, size):
    """Compressible-ish text (base64 lines of random bytes): xz works on it for real."""
    raw = base64.encodebytes(rng.randbytes(size * 3 // 4 + 3))
    return raw[:size]


def make_tree(root, rng, small=120, big_random=3 << 20, big_text=2 << 20):
    """Many small files in nested folders plus two large ones (incompressible and text)."""
    for i in range(small):
        rel = f"d{i % 5}/sub{i % 3}/f{i:03d}.txt"
        put_file(root / rel, f"file {i}\n".encode() * rng.randint(1, 300), BASE_MTIME + i)
    put_file(root / "big/random.bin", rng.randbytes(big_random), BASE_MTIME)
    put_file(root / "big/text.txt", text_bytes(rng, big_text), BASE_MTIME)


def mutate_tree(root, rng, step, graveyard):
    """Change, add, delete and bring back files, and rewrite one large file, so that the
    next backup has uploads, replacements, renames and undeletes to do."""
    mtime = BASE_MTIME + 10_000 + step * 100
    small = sorted(p for p in root.rglob("f*.txt"))
    for path in rng.sample(small, 8):
        put_file(path, rng.randbytes(rng.randint(10, 5000)), mtime)
    for n in range(rng.randint(1, 3)):
        put_file(root / f"d{n}/new{step}-{n}.txt", rng.randbytes(rng.randint(1, 3000)), mtime)
    for path in rng.sample(small, 2):
        if path.exists():
            graveyard.append((path, path.read_bytes(), int(path.stat().st_mtime)))
            path.unlink()
    if graveyard and rng.random() < 0.5:        # comes back unchanged: an undelete
        path, data, old_mtime = graveyard.pop(0)
        put_file(path, data, old_mtime)
    if step % 2:
        put_file(root / "big/random.bin", rng.randbytes(3 << 20), mtime)
    else:
        put_file(root / "big/text.txt", text_bytes(rng, 2 << 20), mtime)


# ---------------------------------------------------------------------------------------
# Helpers: destinations seen from outside the tool
# ---------------------------------------------------------------------------------------

class LocalDest:
    kind = "local"

    def __init__(self, root):
        self.root = root

    def env(self):
        return {"DEST_LOCAL_PATH": str(self.root)}

    def listing(self):
        """{key: identity}; the identity changes whenever the file is replaced."""
        out = {}
        for folder, _, names in os.walk(self.root):
            for name in names:
                full = os.path.join(folder, name)
                info = os.stat(full)
                key = os.path.relpath(full, self.root).replace(os.sep, "/")
                out[key] = (info.st_ino, info.st_size, info.st_mtime_ns)
        return out

    def read(self, key):
        return (self.root / key).read_bytes()


class S3Dest:
    kind = "s3"

    def __init__(self, bucket):
        self.bucket = bucket

    def env(self):
        return s3_env("DEST", self.bucket)

    def listing(self):
        return self.bucket.listing()

    def read(self, key):
        return self.bucket.client.get_object(Bucket=self.bucket.name, Key=key)["Body"].read()


def decode_object(dest, key, codec):
    """The object's name and its decoded content; raises if either is bad."""
    name = esb.decode_name(key, codec)
    sink = io.BytesIO()
    esb.decode(io.BytesIO(dest.read(key)), name.size, name.md5, codec, sink)
    return name, sink.getvalue()


def check_objects(dest, codec, checked=None):
    """Every object under a final name decodes and matches its name (size, MD5); anything
    else in the destination is one of our temporary files.  ``checked`` caches objects
    already decoded (by identity), to keep many iterations cheap.  Returns the count."""
    checked = {} if checked is None else checked
    count = 0
    for key, identity in dest.listing().items():
        if is_temp(key):
            continue
        assert key.endswith(esb.OBJECT_SUFFIX), f"unexpected file in the destination: {key}"
        count += 1
        if checked.get(key) != identity:
            try:
                decode_object(dest, key, codec)
            except esb.BackupError as exc:
                pytest.fail(f"object {key} under its final name is bad: {exc.message}")
            checked[key] = identity
    return count


def live_objects(dest, codec):
    """{path: (key, content)} of the live objects."""
    out = {}
    for key in dest.listing():
        if not is_temp(key):
            name, content = decode_object(dest, key, codec)
            if not name.deleted:
                out[name.path] = (key, content)
    return out


# ---------------------------------------------------------------------------------------
# Helpers: running the tool and killing it
# ---------------------------------------------------------------------------------------

def tool_env(src, dest, restore, scratch, salt=SALT, **extra):
    """The process environment: ours, cleaned of stray config, plus this configuration."""
    config = {**dest.env(), "SRC_LOCAL_PATH": src, "RESTORE_LOCAL_PATH": restore,
              "ENCRYPTION_PASSWORD": PASSWORD, "ENCRYPTION_SALT": salt or None,
              "BACKUP_PROCESSES": 2, "RESTORE_PROCESSES": 2, "TMPDIR": scratch, **extra}
    scratch.mkdir(exist_ok=True)
    return process_env(**config)


def default_sigint():
    """In the child before exec: Ctrl-C acts, even when these tests were started in the
    background (a shell's background job ignores SIGINT, and so would the tool)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(env, *argv, **options):
    """The tool as a subprocess, leader of its own process group (workers included)."""
    options.setdefault("stdout", subprocess.DEVNULL)
    options.setdefault("stderr", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, SCRIPT, *argv], env=env,
                            start_new_session=True, preexec_fn=default_sigint, **options)


def run(env, *argv, **options):
    """The tool run to its end: CompletedProcess with text output."""
    return subprocess.run([sys.executable, SCRIPT, *argv], env=env, capture_output=True,
                          text=True, timeout=180, start_new_session=True, **options)


def group_members(pgid):
    """[(pid, state)] of every process (zombies included) in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            out.append((int(entry), fields[0]))
    return out


def wait_group_gone(pgid, timeout=15.0):
    """Wait until no process of the group is left, not even a zombie (so that a pid seen in
    a temp file's name really is dead, as it is for the next cron run).  Zombies that are
    our children (see ``reaper``) are reaped here, as a prompt init would."""
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        for pid, state in group_members(pgid):
            if state == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
        assert time.monotonic() < deadline, f"processes left: {group_members(pgid)}"
        time.sleep(0.01)


PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def reaper():
    """Make this process the subreaper of the tool's orphaned workers (Linux), so that a
    killed worker is reaped at once instead of whenever this machine's init gets to it."""
    libc = ctypes.CDLL(None, use_errno=True)
    adopted = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    yield
    if adopted:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def kill_after(proc, delay):
    """SIGKILL the whole process group after ``delay`` seconds; True if it was still
    running then (the kill interrupted something)."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    running = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    wait_group_gone(proc.pid)
    return running


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


# ---------------------------------------------------------------------------------------
# 1. Crash at any point
# ---------------------------------------------------------------------------------------

def crash_cycles(tmp_path, dest, kills, seed, backup_window, restore_window, **extra):
    """``kills`` rounds of: change the source, SIGKILL a backup at a random moment, check
    every object, re-run to completion, SIGKILL a restore at a random moment, check every
    restored file, restore to completion and compare with the source."""
    rng = random.Random(seed)
    src, scratch = tmp_path / "src", tmp_path / "scratch"
    make_tree(src, rng)
    codec = make_codec(encrypt_filenames=bool(extra.get("ENCRYPT_FILENAMES")))
    checked, graveyard, interrupted, left_behind = {}, [], 0, 0
    for step in range(kills):
        if step:
            mutate_tree(src, rng, step, graveyard)
        restore = tmp_path / f"restore{step}"
        env = tool_env(src, dest, restore, scratch, **extra)
        proc = start(unmeasured(env))             # SIGKILLed: see conftest.unmeasured
        if step == 0 and dest.kind == "local":   # once for sure: while temp files exist
            wait_for(lambda: temp_files(dest.root), what="a temporary file")
            interrupted += kill_after(proc, 0)
        else:
            interrupted += kill_after(proc, rng.uniform(0.0, backup_window))
        check_objects(dest, codec, checked)
        left_behind += dest.kind == "local" and bool(temp_files(dest.root))

        done = run(env)
        assert done.returncode == 0, f"re-run after kill {step}: {done.stderr}"
        assert check_objects(dest, codec, checked) >= len(tree(src, "sha256"))
        if dest.kind == "local":
            assert temp_files(dest.root) == [], f"after the re-run of kill {step}"
        assert os.listdir(scratch) == [], "spool files left in TMPDIR"

        interrupted += kill_after(start(unmeasured(env), "--restore"),
                                  rng.uniform(0.0, restore_window))
        wanted = tree(src, "sha256")
        for rel, digest in tree(restore, "sha256", skip_temp=True).items():
            assert wanted.get(rel) == digest, f"partial or wrong restored file {rel}"
        done = run(env, "--restore")
        assert done.returncode == 0, f"restore after kill {step}: {done.stderr}"
        assert tree(restore, "sha256", skip_temp=True) == wanted
        shutil.rmtree(restore)
    assert interrupted >= kills // 2, "too few kills hit a running process to prove anything"
    assert dest.kind != "local" or left_behind, "no kill left a temporary file to clean up"


def test_sigkill_at_random_moments_local(tmp_path, reaper):
    crash_cycles(tmp_path, LocalDest(tmp_path / "dest"), kills=12, seed=1234,
                 backup_window=1.2, restore_window=0.5)


def test_sigkill_at_random_moments_s3(tmp_path, s3_bucket, reaper):
    crash_cycles(tmp_path, S3Dest(s3_bucket), kills=6, seed=4321, backup_window=2.0,
                 restore_window=0.8, ENCRYPT_FILENAMES="true")


def test_killed_restore_leaves_no_temp_files_after_the_rerun(tmp_path, reaper):
    rng = random.Random(7)
    src, restore, dest = tmp_path / "src", tmp_path / "restore", LocalDest(tmp_path / "dest")
    make_tree(src, rng, small=60, big_random=1 << 20, big_text=4 << 20)
    env = tool_env(src, dest, restore, tmp_path / "scratch")
    assert run(env).returncode == 0
    proc = start(unmeasured(env), "--restore")
    wait_for(lambda: temp_files(restore), what="a temporary file in the restore folder")
    kill_after(proc, 0)
    assert temp_files(restore), "the kill should have left a temporary file"
    done = run(env, "--restore")
    assert done.returncode == 0, done.stderr
    assert tree(restore, "sha256", skip_temp=True) == tree(src, "sha256")
    assert temp_files(restore) == []


def test_temp_file_of_a_dead_unreaped_process_is_removed(tmp_path):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        wait_for(lambda: dict(group_members(os.getpgid(0))).get(pid) == "Z",
                 what="the child to become a zombie")
        stale = tmp_path / "dest" / f"{esb.TMP_PREFIX}{pid}@{esb.host_tag()}-abc"
        put_file(stale, b"half an object", BASE_MTIME)
        list(esb.LocalStorage(str(tmp_path / "dest"), reap=True).list_files(esb.ListReport()))
        assert not stale.exists()
    finally:
        os.waitpid(pid, 0)


# ---------------------------------------------------------------------------------------
# 2. The old copy is kept until the new one is safe
# ---------------------------------------------------------------------------------------

OLD_BIG, NEW_BIG = b"old big content\n" * 65536, os.urandom(3 << 20)   # 1 MiB text, 3 MiB


def failing_write_setup(tmp_path, dest):
    """A backed-up tree, then a change to big.bin (whose write will fail) and to a small
    file (whose write must still succeed).  Returns (src, env, old objects)."""
    src = tmp_path / "src"
    for i in range(5):
        put_file(src / f"small/s{i}.txt", f"small {i}\n".encode() * 100, BASE_MTIME)
    put_file(src / "big.bin", OLD_BIG, BASE_MTIME)
    env = tool_env(src, dest, tmp_path / "restore", tmp_path / "scratch")
    done = run(env)
    assert done.returncode == 0, done.stderr
    before = live_objects(dest, make_codec())
    put_file(src / "big.bin", NEW_BIG, BASE_MTIME + 60)
    put_file(src / "small/s0.txt", b"changed small\n", BASE_MTIME + 60)
    return src, env, before


def check_old_copy_kept(tmp_path, dest, env, before, stderr):
    """big.bin's old object is untouched and restores; the small change went through."""
    assert any("FAILED" in line and "big.bin" in line for line in stderr.splitlines()), stderr
    after = live_objects(dest, make_codec())
    assert "big.bin" in after, "the old object went before the new one was safe"
    assert after["big.bin"] == before["big.bin"]
    assert after["small/s0.txt"][1] == b"changed small\n"
    assert after["small/s0.txt"][0] != before["small/s0.txt"][0]
    assert len(dest.listing()) == len(before), "replaced object not removed, or extra files"
    done = run(env, "--restore")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "restore" / "big.bin").read_bytes() == OLD_BIG
    assert (tmp_path / "restore" / "small" / "s0.txt").read_bytes() == b"changed small\n"


def limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_old_copy_kept_when_the_new_object_exceeds_the_file_size_limit(tmp_path):
    dest = LocalDest(tmp_path / "dest")
    _, env, before = failing_write_setup(tmp_path, dest)
    done = run(env, preexec_fn=limit_file_size(256 * 1024))    # small objects fit, big not
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "too large" in done.stderr.lower()
    assert temp_files(dest.root) == []
    check_old_copy_kept(tmp_path, dest, env, before, done.stderr)


def namespace_prefix(probe_dir):
    """A command prefix giving a private mount namespace where we may mount a tmpfs:
    an unprivileged user namespace, else (as root) a plain mount namespace; None."""
    candidates = [["unshare", "--user", "--map-root-user", "--mount"]]
    if os.geteuid() == 0:
        candidates.append(["unshare", "--mount"])
    for prefix in candidates:
        if shutil.which("unshare") and subprocess.run(
                [*prefix, "mount", "-t", "tmpfs", "-o", "size=64k", "esb-probe", str(probe_dir)],
                capture_output=True).returncode == 0:
            return prefix
    return None


DISK_FULL_SCRIPT = """set -u
mount -t tmpfs -o size=1536k esb-full "$DEST_LOCAL_PATH" || exit 90
"$PYTHON" "$SCRIPT" > "$OUT/first.out" 2> "$OUT/first.err" || exit 91
cp "$NEW_BIG" "$SRC_LOCAL_PATH/big.bin" && touch -d @$NEW_MTIME "$SRC_LOCAL_PATH/big.bin"
cp "$NEW_SMALL" "$SRC_LOCAL_PATH/small/s0.txt" && touch -d @$NEW_MTIME "$SRC_LOCAL_PATH/small/s0.txt"
"$PYTHON" "$SCRIPT" > "$OUT/second.out" 2> "$OUT/second.err"
echo $? > "$OUT/second.rc"
cp -a "$DEST_LOCAL_PATH/." "$OUT/snapshot/"
"""


def test_old_copy_kept_when_the_disk_is_full(tmp_path):
    """A 1.5 MiB tmpfs holds the first backup (about 1 MiB) but not the new 3 MiB object.

    One process: with two, the small files' batch may run while the big object's temporary
    file fills the disk, and fail too (rightly, but then this test could not say which)."""
    (tmp_path / "dest").mkdir()
    prefix = namespace_prefix(tmp_path / "dest")
    if prefix is None:
        pytest.skip("cannot mount a small tmpfs here (no user namespaces and not root); "
                    "the RLIMIT_FSIZE test stands in for a full disk")
    src, out = tmp_path / "src", tmp_path / "out"
    (out / "snapshot").mkdir(parents=True)
    for i in range(5):
        put_file(src / f"small/s{i}.txt", f"small {i}\n".encode() * 100, BASE_MTIME)
    put_file(src / "big.bin", os.urandom(1 << 20), BASE_MTIME)
    put_file(tmp_path / "new_big", NEW_BIG, BASE_MTIME)
    put_file(tmp_path / "new_small", b"changed small\n", BASE_MTIME)
    env = tool_env(src, LocalDest(tmp_path / "dest"), tmp_path / "restore",
                   tmp_path / "scratch", PYTHON=sys.executable, SCRIPT=SCRIPT, OUT=out,
                   NEW_BIG=tmp_path / "new_big", NEW_SMALL=tmp_path / "new_small",
                   NEW_MTIME=BASE_MTIME + 60, BACKUP_PROCESSES=1)
    old_big = (src / "big.bin").read_bytes()
    done = subprocess.run([*prefix, "sh", "-c", DISK_FULL_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr,
                                  [p.read_text() for p in out.glob("*.err")])
    stderr = (out / "second.err").read_text()
    assert (out / "second.rc").read_text().strip() == "1", stderr
    assert "Traceback" not in stderr and "space" in stderr.lower(), stderr
    snapshot = LocalDest(out / "snapshot")
    assert temp_files(snapshot.root) == []
    after = live_objects(snapshot, make_codec())
    assert "big.bin" in after, "the old object went before the new one was safe"
    assert after["big.bin"][1] == old_big
    assert after["small/s0.txt"][1] == b"changed small\n"
    assert len(snapshot.listing()) == 6, "replaced object not removed, or extra files"
    assert any("FAILED" in line and "big.bin" in line for line in stderr.splitlines())
    done = run({**env, "DEST_LOCAL_PATH": str(snapshot.root)}, "--restore")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "restore" / "big.bin").read_bytes() == old_big


def run_in_process(monkeypatch, capsys, env, *argv):
    """esb.main in this process, configured by the variables of ``env`` that are ours."""
    set_env(monkeypatch, **{key: value for key, value in env.items()
                            if os.environ.get(key) != value})
    return run_main(capsys, *argv)


def test_old_copy_kept_when_s3_refuses_the_new_object(tmp_path, s3_bucket, monkeypatch,
                                                      capsys):
    dest = S3Dest(s3_bucket)
    _, env, before = failing_write_setup(tmp_path, dest)
    env["BACKUP_PROCESSES"] = "1"                  # in this process, where the patch is
    original, codec, refused = esb.S3Storage.store, make_codec(), []

    def refusing_store(self, folder, fill, key_of, *args, **kwargs):
        def refuse_big(result):
            key = key_of(result)
            if esb.decode_name(key, codec).path == "big.bin":
                refused.append(key)
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}},
                                  "PutObject")
            return key
        return original(self, folder, fill, refuse_big, *args, **kwargs)

    monkeypatch.setattr(esb.S3Storage, "store", refusing_store)
    code, _, err = run_in_process(monkeypatch, capsys, env)
    assert code == 1, err
    assert len(refused) == 1 and "AccessDenied" in err and "Traceback" not in err
    monkeypatch.setattr(esb.S3Storage, "store", original)
    check_old_copy_kept(tmp_path, dest, env, before, err)


# ---------------------------------------------------------------------------------------
# 3. Interrupted by the user
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_tree(tmp_path_factory):
    """A tree whose backup and restore take seconds: a per-object salt (no configured salt)
    costs a key derivation for each of its many small files.  Backed up once, locally."""
    base = tmp_path_factory.mktemp("slow")
    rng = random.Random(99)
    for i in range(4):
        put_file(base / "src" / f"big{i}.bin", rng.randbytes(3 << 19), BASE_MTIME)
    for i in range(120):
        put_file(base / "src" / f"small/s{i:03d}.txt", b"x" * i, BASE_MTIME)
    env = tool_env(base / "src", LocalDest(base / "dest"), base / "unused", base / "scratch",
                   salt=None)
    done = run(env)
    assert done.returncode == 0, done.stderr
    return base


def objects_and_temp_present(root):
    names = [n for _, _, files in os.walk(root) for n in files]
    return any(is_temp(n) for n in names) and any(not is_temp(n) for n in names)


def interrupt(proc, root, signum):
    """Send ``signum`` to the parent only, once some work is done and more is in flight;
    returns its stderr after it exits."""
    wait_for(lambda: objects_and_temp_present(root), what="work in flight")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    live = [m for m in group_members(proc.pid) if m[1] != "Z"]
    assert live == [], f"processes still running after the tool exited: {live}"
    wait_group_gone(proc.pid)
    return err


def check_interrupted(returncode, stderr):
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert returncode == 130, stderr
    assert len(lines) == 1 and "interrupted" in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_backup_cleans_up_and_exits_130(tmp_path, slow_tree, signum):
    dest = LocalDest(tmp_path / "dest")
    env = tool_env(slow_tree / "src", dest, tmp_path / "restore", tmp_path / "scratch",
                   salt=None)
    proc = start(env, stderr=subprocess.PIPE, text=True)
    err = interrupt(proc, dest.root, signum)
    check_interrupted(proc.returncode, err)
    assert temp_files(dest.root) == []
    assert check_objects(dest, make_codec(salt=None)) >= 1
    assert len(dest.listing()) < len(tree(slow_tree / "src")), "the run was not cut short"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_restore_cleans_up_and_exits_130(tmp_path, slow_tree, signum):
    restore = tmp_path / "restore"
    env = tool_env(slow_tree / "src", LocalDest(slow_tree / "dest"), restore,
                   tmp_path / "scratch", salt=None)
    proc = start(env, "--restore", stderr=subprocess.PIPE, text=True)
    err = interrupt(proc, restore, signum)
    check_interrupted(proc.returncode, err)
    assert temp_files(restore) == []
    restored, wanted = tree(restore, "sha256"), tree(slow_tree / "src", "sha256")
    assert 1 <= len(restored) < len(wanted), "the run was not cut short"
    for rel, digest in restored.items():
        assert wanted[rel] == digest, rel


# ---------------------------------------------------------------------------------------
# 4. Temporary files are mode 0600
# ---------------------------------------------------------------------------------------

def fd_info(handle):
    """(mode bits, link count, path) of an open file (a file object or a descriptor)."""
    fd = handle if isinstance(handle, int) else handle.fileno()
    info = os.fstat(fd)
    return stat_mode(info), info.st_nlink, os.readlink(f"/proc/self/fd/{fd}")


def stat_mode(info):
    return info.st_mode & 0o7777


@pytest.fixture
def open_umask():
    """umask 0: a file is only private when the tool asks for it."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_local_temp_files_are_0600_while_written(tmp_path, monkeypatch, capsys, open_umask):
    src, dest = tmp_path / "src", tmp_path / "dest"
    put_file(src / "a/one.txt", b"one\n" * 1000, BASE_MTIME)
    put_file(src / "two.bin", os.urandom(2 << 20), BASE_MTIME)
    seen, encode, decode, write_all = [], esb.encode, esb.decode, esb._write_all

    def on_disk(sink):
        return not isinstance(sink, io.BytesIO)

    def watching_encode(source, size, codec, sink):
        if on_disk(sink):                           # a big file: written as it is made
            seen.append(fd_info(sink))
        return encode(source, size, codec, sink)

    def watching_decode(source, size, md5, codec, sink):
        if on_disk(sink):
            seen.append(fd_info(sink))
        return decode(source, size, md5, codec, sink)

    def watching_write_all(fd, data):               # a small one: made in memory first
        seen.append(fd_info(fd))
        return write_all(fd, data)

    monkeypatch.setattr(esb, "encode", watching_encode)
    monkeypatch.setattr(esb, "decode", watching_decode)
    monkeypatch.setattr(esb, "_write_all", watching_write_all)
    env = tool_env(src, LocalDest(dest), tmp_path / "restore", tmp_path / "scratch",
                   BACKUP_PROCESSES=1, RESTORE_PROCESSES=1)
    code, _, err = run_in_process(monkeypatch, capsys, env)
    assert code == 0, err
    code, _, err = run_in_process(monkeypatch, capsys, env, "--restore")
    assert code == 0, err
    assert len(seen) == 4
    for mode, links, path in seen:
        assert mode == 0o600, (oct(mode), path)
        assert os.path.basename(path).startswith(esb.temp_prefix()), path
    folders = {os.path.dirname(path) for _, _, path in seen}
    assert folders == {str(dest), str(dest / "a"), str(tmp_path / "restore"),
                       str(tmp_path / "restore" / "a")}, "temp files are beside the target"


def test_spool_rolled_over_to_disk_is_0600_and_nameless(tmp_path, open_umask, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with esb.spool() as scratch:
        scratch.write(b"\0" * (esb.SPILL_BYTES + 1))
        assert scratch._rolled
        mode, links, _ = fd_info(scratch)
        assert mode == 0o600 and links == 0
    assert os.listdir(tmp_path) == []


def test_s3_upload_spool_is_0600_on_disk(tmp_path, s3_bucket, monkeypatch, capsys,
                                         open_umask):
    src = tmp_path / "src"
    put_file(src / "big.bin", os.urandom(1 << 20), BASE_MTIME)
    monkeypatch.setattr(esb, "SPILL_BYTES", 64 * 1024)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    seen, encode = [], esb.encode

    def watching_encode(source, size, codec, sink):
        result = encode(source, size, codec, sink)
        on_disk = getattr(sink, "_rolled", True)     # a spool, or a file from the start
        seen.append((on_disk, *fd_info(sink)))
        return result

    monkeypatch.setattr(esb, "encode", watching_encode)
    env = tool_env(src, S3Dest(s3_bucket), tmp_path / "restore", tmp_path / "scratch",
                   BACKUP_PROCESSES=1)
    assert run_in_process(monkeypatch, capsys, env)[0] == 0
    assert len(seen) == 1
    rolled, mode, links, path = seen[0]
    assert rolled and mode == 0o600 and links == 0, (rolled, oct(mode), links, path)
    assert path.startswith(str(tmp_path / "scratch")), path


def test_a_stop_inside_the_process_pool_waits_for_a_safe_point(tmp_path, monkeypatch):
    """Ctrl-C while the pool's code runs is deferred to the driver's loop (raised inside
    the pool, it could leave one of its locks taken and the run hanging): the run still
    stops early, with KeyboardInterrupt, and no worker is left behind."""
    src = tmp_path / "src"
    for i in range(40):
        put_file(src / f"f{i:02d}.txt", b"x" * 100, BASE_MTIME)
    env = {"SRC_LOCAL_PATH": str(src), "DEST_LOCAL_PATH": str(tmp_path / "dest"),
           "ENCRYPTION_PASSWORD": PASSWORD}
    (tmp_path / "dest").mkdir()
    config = esb.load_config(None, env)[0]
    jobs = [esb.Upload(f"f{i:02d}.txt", 100, BASE_MTIME) for i in range(40)]
    seen = []

    def on_result(outcome):
        seen.append(outcome)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, esb._on_stop_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            esb.run_in_pool(esb.run_batch, esb.batches_of_one(jobs), 2, config,
                            lambda outcomes: [on_result(o) for o in outcomes])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert 3 <= len(seen) < len(jobs) and not esb._STOP_ASKED
    assert multiprocessing.active_children() == []
    assert temp_files(tmp_path / "dest") == []


def test_a_worker_forked_before_setting_its_handler_exits_on_a_stop(monkeypatch):
    """A worker starts with the parent's handler (and its deferral) until it sets its own:
    a stop then must end it, not be deferred in a process nobody polls."""
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(esb, "_MAIN_PID", os.getpid() + 1)     # "we are not the parent"
    monkeypatch.setattr(esb, "_DEFER_STOP", True)
    monkeypatch.setattr(os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        esb._on_stop_signal(signal.SIGTERM, None)
    assert exits == [esb.EXIT_INTERRUPTED] and not esb._STOP_ASKED


def test_a_stop_that_comes_with_an_error_is_not_left_pending(monkeypatch):
    monkeypatch.setattr(esb, "_MAIN_PID", os.getpid())
    with pytest.raises(RuntimeError):
        with esb.deferred_stop():
            esb._on_stop_signal(signal.SIGINT, None)     # deferred: only noted
            assert esb._STOP_ASKED
            raise RuntimeError("the pool broke")
    assert not esb._STOP_ASKED and not esb._DEFER_STOP
    with esb.deferred_stop():      # a later block is not interrupted by the old stop
        pass


def stubborn_job(seconds, started=None, finished=None):
    """A job whose clean-up never ends: it ignores SIGTERM (then creates ``started``), and
    creates ``finished`` only if it lives its ``seconds``."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if started:
        open(started, "w").close()
    time.sleep(seconds)
    if finished:
        open(finished, "w").close()


@pytest.mark.parametrize("how", ["grace runs out", "second Ctrl-C"])
def test_workers_that_do_not_stop_are_killed(tmp_path, monkeypatch, how):
    config = esb.load_config(None, {"DEST_LOCAL_PATH": str(tmp_path),
                                    "ENCRYPTION_PASSWORD": PASSWORD}, needs=("dest",))[0]
    monkeypatch.setattr(esb, "_MAIN_PID", os.getpid())
    monkeypatch.setattr(esb, "STOP_GRACE_SECONDS", 1 if how == "grace runs out" else 600)
    previous = signal.signal(signal.SIGINT, esb._on_stop_signal)
    running, finished = tmp_path / "running", tmp_path / "finished"
    real_children, seconds = multiprocessing.active_children, []

    def children_then_second_ctrl_c():
        """stop_workers() asks for the workers it is about to stop and wait for: the second
        Ctrl-C comes then (once)."""
        children = real_children()
        if not seconds:
            seconds.append(os.getpid())
            os.kill(os.getpid(), signal.SIGINT)
        return children

    try:
        with pytest.raises(KeyboardInterrupt):
            with esb.worker_pool(1, config) as pool:
                pool.submit(stubborn_job, 300, str(running), str(finished))
                deadline = time.monotonic() + 60
                while not running.exists():         # the job is running (SIGTERM blocked)
                    assert time.monotonic() < deadline, "the job never started"
                    time.sleep(0.05)
                if how == "second Ctrl-C":
                    monkeypatch.setattr(esb.multiprocessing, "active_children",
                                        children_then_second_ctrl_c)
                raise KeyboardInterrupt     # the first Ctrl-C
    finally:
        monkeypatch.setattr(esb.multiprocessing, "active_children", real_children)
        signal.signal(signal.SIGINT, previous)
    assert multiprocessing.active_children() == []
    assert not finished.exists(), "the stuck worker was waited for"
    assert seconds == ([os.getpid()] if how == "second Ctrl-C" else [])
    assert not esb._STOP_ASKED


@pytest.mark.parametrize("kind", [esb.LocalStorage, esb.RestoreFolder])
def test_an_unfinished_store_is_discarded_on_a_stop(tmp_path, kind):
    """On a stop, other threads may be inside store(): their temporary files go, and a
    store that then tries to finish fails instead of leaving a file."""
    storage = kind(str(tmp_path))
    writing, release = threading.Event(), threading.Event()
    errors = []

    def fill(sink):
        sink.write(b"partial")
        writing.set()
        release.wait(10)
        sink.write(b" rest")

    def store():
        try:
            storage.store("", fill, lambda _: "file.txt")
        except OSError as exc:
            errors.append(exc)

    thread = threading.Thread(target=store)
    thread.start()
    assert writing.wait(10)
    assert len(temp_files(tmp_path)) == 1
    storage.discard_unfinished()
    assert temp_files(tmp_path) == []
    release.set()
    thread.join(10)
    assert errors and os.listdir(tmp_path) == []
