"""A restore run by root beside other local users (issue 27, "Safe as root").

Another user who may write in the restore folder races the restore, swapping its folders
for links to elsewhere; another user made the default restore folder (a fixed name in the
shared temporary folder) first; another user reads what was restored.  Root reads
everything, so "another user" is a child process that drops to "nobody"; run as anyone
else, the tests race as that user and check the modes another user would meet.
"""

import contextlib
import os
import signal
import stat
from pathlib import Path

import pytest
from conftest import NOBODY, esb, folder_for_everyone, tree

AS_ROOT = os.geteuid() == 0
SECRET = b"-----BEGIN PRIVATE KEY-----\nnot really\n"


def drop_privileges():
    """In a forked child: become "nobody" when running as root."""
    if AS_ROOT:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def in_child(function) -> int:
    """``function()`` in a forked child as another user; its exit status (0: it returned
    True)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            drop_privileges()
            code = 0 if function() else 1
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


@contextlib.contextmanager
def swapping(roots, names, outside):
    """A child process (as another user) that, for as long as the block runs, swaps each
    folder ``names`` of each of ``roots`` for a link to ``outside`` and back, as fast as it
    can: the real folder is moved aside (inside its root), a link put in its place, then
    the link removed so that the restore makes the folder again."""
    pid = os.fork()
    if pid == 0:
        try:
            drop_privileges()
            turn = 0
            while True:
                turn += 1
                for root in roots:
                    for name in names:
                        place = os.path.join(root, name)
                        with contextlib.suppress(OSError):
                            os.rename(place, f"{place}.moved-{turn}")
                        with contextlib.suppress(OSError):
                            os.symlink(outside, place)
                        with contextlib.suppress(OSError):
                            if turn % 2:     # the link stays for a turn, then goes
                                os.unlink(place)
        finally:
            os._exit(0)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


@pytest.fixture
def shared():
    """(a folder every user may write in, as a restore folder in a shared place is; a
    folder of root's beside it, where a link may point)."""
    with folder_for_everyone("esb-users-") as top:
        restore, outside = Path(top, "restore"), Path(top, "outside")
        restore.mkdir()
        restore.chmod(0o777)
        outside.mkdir()
        yield restore, outside


# ---------------------------------------------------------------------------------------
# 1. A race: folders swapped for links while the restore writes
# ---------------------------------------------------------------------------------------

def test_a_restore_folder_swapped_for_links_never_writes_outside(shared):
    """Each round a fresh RestoreFolder (as a new worker process has) writes into "docs",
    a new folder inside it and "logs", alone or in a batch, while the other user swaps
    "docs" and "logs" for links.  Run until the race was both lost and won many times."""
    restore, outside = shared
    written, refused, rounds = 0, [], 0
    with swapping([str(restore)], ["docs", "logs"], str(outside)):
        while (written < 50 or len(refused) < 50) and rounds < 20_000:
            rounds += 1
            storage = esb.RestoreFolder(str(restore))
            storage.prepare(create=True)
            keys = [f"docs/{rounds}.txt", f"docs/new-{rounds}/deep.txt", f"logs/{rounds}.log"]
            with storage.batch() if rounds % 2 else contextlib.nullcontext({}) as lost:
                for key in keys:
                    try:
                        storage.store(key.rpartition("/")[0],
                                      lambda sink: sink.write(b"x" * 100),
                                      lambda _, key=key: key)
                        written += 1
                    except (esb.UnsafePathError, OSError) as exc:
                        refused.append(getattr(exc, "message", str(exc)))
            written -= len(lost)
    assert os.listdir(outside) == []
    assert written >= 50 and len(refused) >= 50, (written, len(refused), rounds)
    assert sum("symbolic link" in why for why in refused) >= len(refused) // 2, refused[:5]
    landed = tree(restore)
    assert len(landed) >= written and set(landed.values()) == {b"x" * 100}


def test_a_restore_run_raced_by_another_user_stays_inside(make_tool, shared):
    """The whole restore, its worker processes included, raced the same way, several
    times: whatever fails, nothing lands outside and every failure says why."""
    restore, outside = shared
    tool = make_tool(processes=2)
    files = {f"{folder}/{i:02}.txt": f"{folder} {i}\n".encode() * 50
             for folder in ("docs", "logs") for i in range(30)}
    for rel, data in files.items():
        tool.write(rel, data)
    assert tool("--quiet")[0] == 0
    roots = [restore / f"run-{run}" for run in range(4)]
    for root in roots:
        root.mkdir()
        root.chmod(0o777)
    with swapping([str(root) for root in roots], ["docs", "logs"], str(outside)):
        for root in roots:
            tool.set(RESTORE_LOCAL_PATH=root)
            code, _, err = tool("--restore", "--quiet")
            assert code in (esb.EXIT_OK, esb.EXIT_FAILED), err
            failures = [line for line in err.splitlines() if "FAILED" in line]
            assert all("symbolic link" in line or "No such file" in line
                       for line in failures), failures
            assert "Traceback" not in err
    assert os.listdir(outside) == []
    for root in roots:       # what was restored is whole, wherever the other user moved it
        for path, data in tree(root).items():
            assert data == files[path.split(".moved-")[0].split("/")[0] + "/"
                                 + path.rpartition("/")[2]], path


# ---------------------------------------------------------------------------------------
# 2. The default restore folder: a fixed name in a shared temporary folder
# ---------------------------------------------------------------------------------------

@pytest.fixture
def default_tool(make_tool, monkeypatch, shared):
    """A tool without a configured restore folder, whose default lies in ``shared``'s
    folder-for-everyone: (tool, the default restore folder, the folder outside)."""
    restore, outside = shared
    default = restore / "encrypted_s3_backup_restore"
    monkeypatch.setattr(esb, "DEFAULT_RESTORE", str(default))
    tool = make_tool(RESTORE_LOCAL_PATH=None)
    tool.write("private.key", SECRET)
    assert tool("--quiet")[0] == 0
    return tool, default, outside


def test_the_default_restore_folder_is_made_private(default_tool):
    tool, default, _ = default_tool
    code, out, err = tool("--restore")
    assert code == 0, err
    assert str(default) in out
    info = os.lstat(default)
    assert stat.S_ISDIR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o700
    assert info.st_uid == os.geteuid()
    assert (default / "private.key").read_bytes() == SECRET
    assert tool("--restore", "--quiet")[0] == 0       # ours already: used again


def test_a_default_restore_folder_made_a_link_by_another_user_is_refused(default_tool):
    tool, default, outside = default_tool
    assert in_child(lambda: os.symlink(outside, default) or True) == 0
    code, out, err = tool("--restore")
    assert code == esb.EXIT_USAGE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(default) in lines[0] and "symbolic link" in lines[0]
    assert "RESTORE_LOCAL_PATH" in lines[0]
    assert os.listdir(outside) == []


def test_a_default_restore_folder_that_is_a_file_is_refused(default_tool):
    tool, default, _ = default_tool
    default.write_bytes(b"")
    code, _, err = tool("--restore")
    assert code == esb.EXIT_USAGE
    assert err.strip().count("\n") == 0 and "is not a folder" in err, err


def test_a_default_restore_folder_of_another_user_is_refused(default_tool, tmp_path):
    tool, default, _ = default_tool
    if AS_ROOT:
        assert in_child(lambda: os.mkdir(default, 0o777) or True) == 0
    else:        # (no other user's folder can be made: root's "/" stands in for one)
        tool.monkeypatch.setattr(esb, "DEFAULT_RESTORE", "/")
        default = Path("/")
    before = os.listdir(default)
    code, _, err = tool("--restore")
    assert code == esb.EXIT_USAGE
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "belongs to another user" in lines[0], err
    assert os.listdir(default) == before


def test_an_explicit_restore_folder_keeps_working_through_a_link(make_tool, tmp_path):
    """A configured restore folder is the user's choice: it may be a link (to a disk)."""
    tool = make_tool()
    tool.write("a/b.txt", b"b")
    assert tool("--quiet")[0] == 0
    (tmp_path / "disk").mkdir()
    (tmp_path / "via-link").symlink_to(tmp_path / "disk")
    tool.set(RESTORE_LOCAL_PATH=tmp_path / "via-link")
    code, _, err = tool("--restore", "--quiet")
    assert code == 0, err
    assert (tmp_path / "disk" / "a" / "b.txt").read_bytes() == b"b"


# ---------------------------------------------------------------------------------------
# 3. Private stays private
# ---------------------------------------------------------------------------------------

def modes(root):
    """{relative path: permission bits} of everything under ``root``."""
    return {path.relative_to(root).as_posix(): stat.S_IMODE(os.lstat(path).st_mode)
            for path in Path(root).rglob("*")}


def test_restored_files_are_private_and_another_user_cannot_read_them(make_tool, shared):
    """A 0600 source file, restored into a folder everyone may enter (made by the user,
    0755): the file, and one in a folder the restore makes, stay unreadable to others."""
    restore, _ = shared
    restore.chmod(0o755)
    tool = make_tool(RESTORE_LOCAL_PATH=restore)
    for rel in ("private.key", "keys/deep/private.key"):
        tool.write(rel, SECRET)
        (tool.src / rel).chmod(0o600)
    assert tool("--quiet")[0] == 0
    code, _, err = tool("--restore", "--quiet")
    assert code == 0, err
    assert modes(restore) == {"private.key": 0o600, "keys": 0o700, "keys/deep": 0o700,
                              "keys/deep/private.key": 0o600}

    def reads() -> bool:
        for rel in ("private.key", "keys/deep/private.key"):
            with contextlib.suppress(PermissionError):
                (restore / rel).read_bytes()
                return True
        return False
    assert in_child(reads) == (1 if AS_ROOT else 0)   # (as one user, nobody else exists)


def test_restore_permissions_umask_gives_the_modes_of_the_umask(make_tool, tmp_path):
    tool = make_tool(RESTORE_PERMISSIONS="umask")
    tool.write("d/e/f.txt", b"f")
    assert tool("--quiet")[0] == 0
    old = os.umask(0o022)
    try:
        code, _, err = tool("--restore", "--quiet")
    finally:
        os.umask(old)
    assert code == 0, err
    assert modes(tool.restore) == {"d": 0o755, "d/e": 0o755, "d/e/f.txt": 0o644}
    assert stat.S_IMODE(os.stat(tool.restore).st_mode) == 0o755


def test_restore_permissions_must_be_private_or_umask(make_tool):
    tool = make_tool(RESTORE_PERMISSIONS="open")
    code, _, err = tool("--restore")
    assert code == esb.EXIT_USAGE
    assert "restore_permissions (environment RESTORE_PERMISSIONS): 'open' is not one of: " \
           "private, umask" in err
