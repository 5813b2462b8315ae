"""End to end through main(argv): backup, incremental runs, deletion, expiry, restore,
verify and list, against a local folder and a real S3 server (SeaweedFS)."""

import datetime
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys

import pytest
from conftest import (NOBODY, PASSWORD, ROOT, SALT, SALT_BYTES, VECTOR_LIST, codec_for, esb,
                      folder_for_everyone, give_to_nobody, process_env, s3_env, set_env,
                      snapshot, tree, unmeasured)


@pytest.fixture(params=["local", "s3", "s3-base"])
def tool(request, make_tool):
    """The tool, its destination a local folder, a bucket, or a bucket under a base path.
    The base path is a storage's own business (the contract suite runs it in
    tests/test_storage.py): end to end it is run by the backup, restore, incremental and
    list tests; the other tests here run the first two (NO_BASE_PATH)."""
    if request.param == "local":
        return make_tool()
    return make_tool(request.getfixturevalue("s3_bucket"),
                     base_path="backups/host1" if request.param == "s3-base" else None)


NO_BASE_PATH = pytest.mark.parametrize("tool", ["local", "s3"], indirect=True)


def sample_tree(tool):
    tool.write("hello.txt", b"Hello, world!\n", 1_700_000_000)
    tool.write("empty.txt", b"", 1_700_000_100)
    tool.write("docs/report final.txt", b"quarterly numbers\n" * 500, 1_700_000_200)
    tool.write("ü dir/名前.bin", os.urandom(200_000), 1_700_000_300)
    tool.write("a/b/c/deep.txt.enc", b"looks like a backup\n", 1_700_000_400)


def test_first_backup_then_restore_gives_the_same_tree(tool):
    sample_tree(tool)
    code, out, err = tool()
    assert code == 0, err
    assert "5 uploaded" in out and "0 failed" in out
    assert set(tool.objects()) == set(tree(tool.src))
    code, out, err = tool("--restore")
    assert code == 0, err
    assert tree(tool.restore, "md5+mtime") == tree(tool.src, "md5+mtime")


def test_incremental_run_moves_only_changed_files(tool):
    sample_tree(tool)
    assert tool()[0] == 0
    before = tool.keys()
    tool.write("hello.txt", b"Hello, changed world!\n", 1_700_000_999)
    tool.write("new.txt", b"new\n")
    code, out, err = tool()
    assert code == 0, err
    assert "2 uploaded" in out and "4 unchanged" in out
    after = tool.keys()
    assert len(after) == 6                               # the old hello.txt object is gone
    assert len(set(before) & set(after)) == 4
    assert tool.objects()["hello.txt"].size == len(b"Hello, changed world!\n")
    code, out, _ = tool()
    assert code == 0 and "6 unchanged" in out and "uploaded" not in out


@NO_BASE_PATH
def test_delete_mark_then_undelete(tool, monkeypatch):
    sample_tree(tool)
    assert tool()[0] == 0
    kept = (tool.src / "hello.txt").read_bytes()
    (tool.src / "hello.txt").unlink()
    monkeypatch.setattr(esb, "today", lambda: datetime.date(2026, 11, 26))
    code, out, _ = tool()
    assert code == 0 and "1 marked deleted" in out
    assert tool.objects()["hello.txt"].deleted == 20261126
    # later runs keep the first deletion date
    monkeypatch.setattr(esb, "today", lambda: datetime.date(2026, 12, 5))
    code, out, _ = tool()
    assert code == 0 and "marked deleted" not in out
    assert tool.objects()["hello.txt"].deleted == 20261126
    # the file comes back unchanged: renamed back, not uploaded
    tool.write("hello.txt", kept, 1_700_000_000)
    code, out, _ = tool()
    assert code == 0 and "1 undeleted" in out and "uploaded" not in out
    assert tool.objects()["hello.txt"].deleted == 0
    assert len(tool.keys()) == 5


@pytest.mark.parametrize("keep,expect_gone_after", [("0", 0), ("3", 3), (None, None)])
def test_expiry(local_tool, monkeypatch, keep, expect_gone_after):
    tool = local_tool
    sample_tree(tool)
    tool.set(DELETED_KEEP_DAYS=keep)
    assert tool()[0] == 0
    (tool.src / "hello.txt").unlink()
    start = datetime.date(2026, 11, 26)
    for day in range(0, 6):
        monkeypatch.setattr(esb, "today", lambda d=day: start + datetime.timedelta(days=d))
        assert tool()[0] == 0
        present = "hello.txt" in tool.objects()
        if expect_gone_after is None or day < expect_gone_after:
            assert present, day
        else:
            assert not present, day


@NO_BASE_PATH
def test_restore_deleted_and_restore_only(tool):
    sample_tree(tool)
    assert tool()[0] == 0
    (tool.src / "hello.txt").unlink()
    assert tool()[0] == 0
    code, out, _ = tool("--restore")
    assert code == 0 and not (tool.restore / "hello.txt").exists()
    shutil.rmtree(tool.restore)
    code, out, _ = tool("--restore", "--restore-deleted")
    assert code == 0 and (tool.restore / "hello.txt").read_bytes() == b"Hello, world!\n"
    shutil.rmtree(tool.restore)
    code, out, _ = tool("--restore", "--restore-only", "docs", "--restore-only", "empty.txt")
    assert code == 0
    assert sorted(tree(tool.restore)) == ["docs/report final.txt", "empty.txt"]


def test_verify_good_and_damaged_backup(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    code, out, err = tool("--verify")
    assert code == 0 and err == ""
    assert out.count(" OK ") == 5
    victim = next(p for p in tool.dest.rglob("*.enc") if "report" in p.name)
    data = bytearray(victim.read_bytes())
    data[60] ^= 1
    victim.write_bytes(bytes(data))
    other = next(p for p in tool.dest.rglob("*.enc") if "hello" in p.name)
    other.write_bytes(other.read_bytes()[:20])
    code, out, err = tool("--verify")
    assert code == 1
    failures = [line for line in err.splitlines() if "FAILED" in line]
    assert len(failures) == 2                       # every failure, not just the first
    assert any("docs/report final.txt" in f and "authentication failed" in f for f in failures)
    assert any("hello.txt" in f and "shorter than" in f for f in failures)
    assert out.count(" OK ") == 3


def test_verify_reports_wrong_password(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    tool.set(ENCRYPTION_PASSWORD="Tr0ub4dor&3")
    code, _, err = tool("--verify")
    # one line, not one FAILED line per object (the password is checked first)
    assert code == 2 and "FAILED" not in err and len(err.splitlines()) == 1, err
    assert "ENCRYPTION_PASSWORD" in err and "Tr0ub4dor" not in err


def test_list_and_json(tool):
    sample_tree(tool)
    assert tool()[0] == 0
    code, out, _ = tool("--list", "--json")
    rows = json.loads(out[out.index("["):])
    assert [r["path"] for r in rows] == sorted(tree(tool.src))
    assert rows[0]["deleted"] is None
    code, out, _ = tool("--list")
    assert code == 0 and "ü dir/名前.bin" in out


def test_config_file_with_every_key(tmp_path, monkeypatch, capsys):
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "f.txt").write_text("x" * 1000)
    config = {
        "src": {"local_path": str(src)}, "dest": {"local_path": str(dest)},
        "restore": {"local_path": str(tmp_path / "r")},
        "encryption_password": PASSWORD, "encryption_salt": SALT, "encrypt_filenames": True,
        "backup_processes": 2, "restore_processes": 3, "deleted_keep_days": 7,
        "ignore_regex": ["^skip"], "lzma_level": 9, "gzip_level": 1, "compress": True,
        "encrypt": True, "encryption_type": "cha"}
    (src / "skip.me").write_text("ignored")
    path = tmp_path / "my.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    assert esb.main(["--config", str(path)]) == 0
    names = [p.name for p in dest.iterdir()]
    assert len(names) == 1 and not names[0].startswith("f.txt")     # encrypted name
    assert esb.main(["--config", str(path), "--restore"]) == 0
    assert (tmp_path / "r" / "f.txt").read_text() == "x" * 1000
    assert not (tmp_path / "r" / "skip.me").exists()
    capsys.readouterr()


def test_a_missing_config_file_with_variables_set_runs_on_the_variables(local_tool):
    """An old cron line keeps its --config after the file was replaced by variables."""
    tool = local_tool
    sample_tree(tool)
    missing = str(tool.src.parent / "config.json.gone")
    code, out, err = tool("--config", missing)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and missing in warnings[0] and "environment" in warnings[0]
    assert "backup done: 5 uploaded" in out
    assert set(tool.objects()) == {"hello.txt", "empty.txt", "docs/report final.txt",
                                   "ü dir/名前.bin", "a/b/c/deep.txt.enc"}


def test_a_missing_config_file_without_variables_is_an_error(local_tool):
    tool = local_tool
    tool.set(**{name: None for name in esb.config_variables()})
    code, out, err = tool("--config", "no-such-config.json")
    assert code == esb.EXIT_USAGE == 2
    assert err.count("\n") == 1 and "no-such-config.json does not exist" in err
    assert "check --config" in err


def test_missing_source_folder_is_an_error_and_marks_nothing(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    shutil.rmtree(tool.src)
    code, out, err = tool()
    assert code == 2 and "does not exist" in err and str(tool.src) in err
    assert all(n.deleted == 0 for n in tool.objects().values())


def test_mass_deletion_is_refused_unless_allowed(local_tool):
    tool = local_tool
    for i in range(12):
        tool.write(f"f{i}.txt", b"%d" % i)
    assert tool()[0] == 0
    for i in range(11):
        (tool.src / f"f{i}.txt").unlink()
    code, _, err = tool()
    assert code == 2 and "11 of 12" in err and "--allow-mass-delete" in err
    assert all(n.deleted == 0 for n in tool.objects().values())
    code, out, _ = tool("--allow-mass-delete")
    assert code == 0 and "11 marked deleted" in out


def test_unreadable_file_is_reported_and_the_rest_backed_up(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    tool.write("hello.txt", b"changed\n", 1_700_009_999)
    os.mkfifo(tool.src / "a-fifo")
    real_open = esb.LocalStorage.open

    def broken_open(self, key):
        if key == "hello.txt":
            raise PermissionError(13, "Permission denied")
        return real_open(self, key)

    tool.monkeypatch.setattr(esb.LocalStorage, "open", broken_open)
    tool.write("new.txt", b"new\n")
    code, out, err = tool()
    assert code == 1
    assert "FAILED upload hello.txt: Permission denied" in err
    assert "1 uploaded" in out and "a-fifo" in out
    assert tool.objects()["hello.txt"].size == 14        # the old copy is still there


def test_planted_path_traversal_object_is_refused(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    good = next(tool.dest.glob("hello.txt.*.enc"))
    planted = tool.dest / ("..%2Fevil" if False else "x")
    stem = good.name[len("hello.txt"):]
    (tool.dest / "sub").mkdir()
    shutil.copy(good, tool.dest / "sub" / (".." + stem))          # path "sub/.."
    code, _, err = tool("--restore")
    assert code == 1 and "refusing to restore" in err
    assert tree(tool.restore, "md5+mtime") == tree(tool.src, "md5+mtime")
    assert not planted.exists()


def test_bad_config_is_one_line_and_exit_2(local_tool):
    tool = local_tool
    tool.set(ENCRYPTION_TYPE="rot13", LZMA_LEVEL="high")
    code, out, err = tool()
    assert code == 2
    assert "ENCRYPTION_TYPE" in err and "LZMA_LEVEL" in err and "Traceback" not in err


def test_unreachable_s3_destination_is_one_line(local_tool, s3_bucket):
    tool = local_tool
    tool.set(DEST_LOCAL_PATH=None, **s3_env("DEST", s3_bucket))
    tool.set(DEST_AWS_SECRET_ACCESS_KEY="not-the-secret")
    code, _, err = tool()
    assert code == 2 and "SignatureDoesNotMatch" in err and "not-the-secret" not in err
    assert "Traceback" not in err


def test_s3_source_to_local_and_s3_restore_target(local_tool, s3_bucket):
    tool = local_tool
    client = s3_bucket.client
    files = {"photos/a.jpg": os.urandom(150_000), "notes.txt": b"note\n" * 100, "e": b""}
    for key, data in files.items():
        client.put_object(Bucket=s3_bucket.name, Key="source/" + key, Body=data)
    tool.set(SRC_LOCAL_PATH=None, **s3_env("SRC", s3_bucket, "source"))
    code, out, err = tool()
    assert code == 0 and "3 uploaded" in out, err
    heads = {k: client.head_object(Bucket=s3_bucket.name, Key="source/" + k) for k in files}
    for key, name in tool.objects().items():
        assert name.mtime == int(heads[key]["LastModified"].timestamp())
    code, out, _ = tool()
    assert "3 unchanged" in out
    # restore into the same bucket under another prefix
    tool.set(RESTORE_LOCAL_PATH=None, **s3_env("RESTORE", s3_bucket, "restored"))
    code, _, err = tool("--restore")
    assert code == 0, err
    for key, data in files.items():
        body = client.get_object(Bucket=s3_bucket.name, Key="restored/" + key)["Body"].read()
        assert body == data


# Every vector from a local folder; from a bucket, one of each cipher (the decoding is the
# same wherever the objects are: the bucket adds its listing and reads, names encrypted or not).
S3_VECTORS = ("aes-salt-encnames", "cha-salt")
VECTOR_RUNS = [("local", i) for i in range(len(VECTOR_LIST))] + [
    ("s3", i) for i, (name, _, _) in enumerate(VECTOR_LIST) if name in S3_VECTORS]
assert len(VECTOR_RUNS) == len(VECTOR_LIST) + len(S3_VECTORS), "a vector named above is gone"


@pytest.mark.parametrize("where, vector_index", VECTOR_RUNS,
                         ids=[f"{where}-{VECTOR_LIST[i][0]}" for where, i in VECTOR_RUNS])
def test_every_vector_restores_and_verifies_through_the_cli(vector_index, where, tmp_path,
                                                            monkeypatch, capsys, request):
    name, manifest, backup = VECTOR_LIST[vector_index]
    env = {"RESTORE_LOCAL_PATH": str(tmp_path / "r"),
           "ENCRYPTION_PASSWORD": manifest["encryption_password"],
           "ENCRYPTION_TYPE": manifest.get("encryption_type", "aes"),
           "ENCRYPTION_SALT": manifest.get("encryption_salt", ""),
           "ENCRYPT_FILENAMES": str(manifest.get("encrypt_filenames", False)),
           "COMPRESS": str(manifest.get("compress", True)),
           "ENCRYPT": str(manifest.get("encrypt", True))}
    if where == "local":
        env["DEST_LOCAL_PATH"] = str(backup)
    else:
        bucket = request.getfixturevalue("s3_bucket")
        for obj in manifest["objects"]:
            bucket.client.upload_file(str(backup / obj), bucket.name, "v/" + obj)
        env.update(s3_env("DEST", bucket, "v"))
    set_env(monkeypatch, **env)
    monkeypatch.chdir(tmp_path)
    assert esb.main(["--restore", "--restore-deleted"]) == 0, capsys.readouterr()
    assert esb.main(["--verify"]) == 0, capsys.readouterr()
    restored = tmp_path / "r"
    for path, entry in manifest["files"].items():
        data = (restored / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], path
        assert int((restored / path).stat().st_mtime) == entry["mtime"]
    assert len(tree(restored)) == len(manifest["files"])
    capsys.readouterr()
    assert esb.main(["--list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)     # stdout holds nothing but the JSON
    assert {r["path"]: bool(r["deleted"]) for r in rows} == {
        p: e["deleted"] for p, e in manifest["files"].items()}
    assert codec_for(manifest)   # the manifest's settings are the ones used above


def test_subprocess_backup_restore_verify(tmp_path):
    """The script as users run it: python3 encrypted_s3_backup.py, config from the environment."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f.txt").write_text("content\n")
    env = process_env(SRC_LOCAL_PATH=src, DEST_LOCAL_PATH=tmp_path / "dest",
                      RESTORE_LOCAL_PATH=tmp_path / "r", ENCRYPTION_PASSWORD=PASSWORD,
                      ENCRYPTION_TYPE="aes")
    script = str(ROOT / "encrypted_s3_backup.py")
    for argv in ([], ["--restore"], ["--verify"]):
        done = subprocess.run([sys.executable, script, *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("[20")             # timestamped log lines
    assert (tmp_path / "r" / "d" / "f.txt").read_text() == "content\n"
    done = subprocess.run([sys.executable, script, "--restore-deleted"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--restore-deleted needs --restore" in done.stderr


def test_generate_salt_prints_a_usable_salt():
    salts = {subprocess.run([sys.executable, str(ROOT / "generate_salt.py")], check=True,
                            capture_output=True, text=True).stdout.strip() for _ in range(2)}
    assert len(salts) == 2
    for salt in salts:
        assert len(bytes.fromhex(salt)) == esb.SALT_LEN


@pytest.mark.parametrize("example", sorted(p.name for p in ROOT.glob("config*.json.example")))
def test_example_configs_load(example, tmp_path):
    text = (ROOT / example).read_text()
    assert "output of generate_salt.py" in text
    path = tmp_path / "config.json"
    path.write_text(text.replace("output of generate_salt.py", SALT))
    path.chmod(0o600)
    config, warnings = esb.load_config(str(path), environ={})
    assert warnings == []
    assert config.codec.salt == SALT_BYTES and config.codec.password
    assert config.src and config.dest


def test_example_placeholder_salt_is_refused_clearly(tmp_path):
    path = tmp_path / "config.json"
    shutil.copy(ROOT / "config.json.example", path)
    with pytest.raises(esb.ConfigError, match="32 hex digits"):
        esb.load_config(str(path), environ={})


def test_ignore_regex_from_the_environment_skips_files_and_whole_folders(local_tool):
    tool = local_tool
    for rel in ("keep.txt", "a.tmp", "sub/b.tmp.not", "node_modules/x/y.js", ".git/config"):
        tool.write(rel, rel.encode())
    os.symlink("/nonexistent", tool.src / "node_modules" / "dangling")
    tool.set(IGNORE_REGEX=r'["node_modules/", ".*\\.tmp$"]')
    code, out, err = tool()
    assert code == 0, err
    assert sorted(tool.objects()) == [".git/config", "keep.txt", "sub/b.tmp.not"]
    assert "dangling" not in out                      # nothing reported from a skipped folder
    assert "2 ignored" in out and "ignored a.tmp" not in out   # counted; named with -v
    code, out, _ = tool("-v")
    assert code == 0 and "2 ignored" in out
    assert "ignored a.tmp: ignore_regex matches it" in out
    assert "ignored node_modules/: ignore_regex matches it" in out   # a folder: once, whole
    tool.set(IGNORE_REGEX=r"\.git/")                  # one pattern, not split into characters
    code, out, _ = tool()
    assert code == 0 and "1 marked deleted" in out and "1 ignored" in out
    assert tool.objects()[".git/config"].deleted


def test_a_source_file_named_like_our_temporary_files_is_backed_up(local_tool):
    """Our temporary prefix means ours only where we write: in a source it is a user's."""
    tool = local_tool
    tool.write(".esb-tmp-notes.txt", b"my notes")
    tool.write(f"sub/{esb.temp_prefix()}abc", b"looks like ours, is not")
    code, out, err = tool()
    assert code == 0 and "2 uploaded" in out, err
    assert sorted(tool.objects()) == [".esb-tmp-notes.txt", f"sub/{esb.temp_prefix()}abc"]
    code, _, err = tool("--restore")
    assert code == 0, err
    assert tool.restored() == {".esb-tmp-notes.txt": b"my notes",
                               f"sub/{esb.temp_prefix()}abc": b"looks like ours, is not"}
    code, out, _ = tool()                 # the destination lists their objects as ours
    assert code == 0 and "2 unchanged" in out and "0 uploaded" not in out


def test_foreign_enc_object_is_a_warning_for_backup_and_a_failure_for_verify(local_tool):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    (tool.dest / "notes.enc").write_text("not ours")
    code, out, err = tool()
    assert code == 0 and "warning: ignored object 'notes.enc'" in err
    assert (tool.dest / "notes.enc").exists()
    code, _, err = tool("--verify")
    assert code == 1 and "notes.enc" in err


def test_encrypted_names_with_a_wrong_password_stop_the_backup(local_tool):
    tool = local_tool
    tool.set(ENCRYPT_FILENAMES="true")
    sample_tree(tool)
    assert tool()[0] == 0
    before = tool.keys()
    tool.set(ENCRYPTION_PASSWORD="another password")
    code, _, err = tool()
    assert code == 2 and "none of the 5 object names" in err and "another" not in err
    assert tool.keys() == before              # nothing uploaded beside the old objects


def test_progress_bar_only_on_a_terminal(local_tool, monkeypatch):
    tool = local_tool
    sample_tree(tool)
    code, out, err = tool()
    assert code == 0 and "\r" not in err and "\r" not in out     # cron, Docker: plain lines
    assert all(line.startswith("[20") for line in out.splitlines())
    (tool.src / "hello.txt").write_text("changed")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(esb.time, "monotonic", iter(range(0, 10_000, 1)).__next__)
    code, out, err = tool()
    assert code == 0 and "\r[" in err and "1/1 files" in err
    assert "backup done: 1 uploaded" in out


def test_quiet_keeps_only_the_summary_and_verbose_adds_file_lines(local_tool):
    tool = local_tool
    sample_tree(tool)
    code, out, _ = tool("--quiet")
    new, summary = out.splitlines()      # a first run also says a new backup starts
    assert code == 0 and "a new backup starts there" in new and "backup done" in summary
    (tool.src / "hello.txt").write_text("changed")
    code, out, _ = tool("--quiet")
    assert code == 0 and len(out.splitlines()) == 1 and "backup done" in out
    (tool.src / "hello.txt").write_text("changed again")
    code, out, _ = tool("--verbose")
    assert "upload hello.txt" in out


def test_dry_run_backup_prints_the_plan_and_changes_nothing(local_tool, monkeypatch):
    tool = local_tool
    sample_tree(tool)
    tool.set(DELETED_KEEP_DAYS="0")
    assert tool()[0] == 0
    tool.write("hello.txt", b"changed\n", 1_700_001_234)
    tool.write("brand new.txt", b"new\n")
    (tool.src / "empty.txt").unlink()
    before = snapshot(tool.dest)
    code, out, err = tool("--dry-run")
    assert code == 0, err
    assert "would upload hello.txt" in out and "would upload brand new.txt" in out
    assert "would expire empty.txt" in out and "nothing was changed" in out
    assert snapshot(tool.dest) == before


def test_dry_run_on_an_empty_destination_creates_nothing(local_tool):
    tool = local_tool
    sample_tree(tool)
    code, out, _ = tool("--dry-run")
    assert code == 0 and out.count("would upload") == 5
    assert not tool.dest.exists()


@NO_BASE_PATH
def test_dry_run_restore_writes_nothing(tool):
    sample_tree(tool)
    assert tool()[0] == 0
    code, out, _ = tool("--restore", "--dry-run", "--restore-only", "docs/")
    assert code == 0 and "would restore docs/report final.txt" in out
    assert out.count("would restore") == 1
    assert not tool.restore.exists()


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as done:
        esb.main(["--version"])
    assert done.value.code == 0 and esb.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        esb.main(["--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    for option in ("--config", "--restore", "--verify", "--list", "--restore-deleted",
                   "--restore-only", "--dry-run", "--allow-mass-delete", "--json", "--quiet",
                   "--verbose", "--version", "exit codes", "examples"):
        assert option in text, option


@pytest.mark.parametrize("argv,message", [
    (["--restore-deleted"], "--restore-deleted needs --restore"),
    (["--restore-only", "x"], "--restore-only needs --restore or --list"),
    (["--json"], "--json needs --list"),
    (["--verify", "--dry-run"], "--dry-run is for a backup or --restore"),
    (["--restore", "--verify"], "not allowed with"),
    (["--repair"], "--repair needs --verify"),
    (["--restore", "--repair"], "--repair needs --verify"),
    (["--verify", "--repair", "--as-of", "2024-01-01"], "leave out --as-of"),
    (["--no-such-option"], "unrecognized arguments"),
])
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        esb.main(argv)
    assert done.value.code == esb.EXIT_USAGE == 2
    assert message in capsys.readouterr().err


def test_exit_code_1_when_some_files_failed_and_3_on_a_bug(local_tool, monkeypatch):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    victim = next(tool.dest.glob("hello.txt.*.enc"))
    victim.write_bytes(b"garbage")
    assert tool("--restore")[0] == esb.EXIT_FAILED == 1
    assert (tool.restore / "empty.txt").exists()          # the rest was done
    monkeypatch.setattr(esb, "plan_walked", lambda *a, **k: 1 / 0)
    code, _, err = tool()
    assert code == esb.EXIT_BUG == 3 and "please report" in err and "ZeroDivisionError" in err


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("action", ["backup", "--verify", "--restore"])
def test_a_bug_in_a_worker_stops_the_run_with_its_traceback_and_exit_3(local_tool, monkeypatch,
                                                                      action, processes):
    """A programming error while doing a file is not that file's failure: the run stops,
    exit 3, and the traceback from inside the worker is shown for the report."""
    tool = local_tool
    sample_tree(tool)
    tool.write("big.bin", os.urandom(esb.SMALL_FILE + 1))     # a single job and a batch
    assert tool()[0] == 0
    tool.write("hello.txt", b"changed\n", 1_700_009_999)
    tool.set(BACKUP_PROCESSES=processes, RESTORE_PROCESSES=processes)

    def broken_encode_name(name, codec):
        return name.no_such_attribute

    def broken_decode(*args):
        raise AttributeError("'NoneType' object has no attribute 'planted_bug'")

    if action == "backup":
        monkeypatch.setattr(esb, "encode_name", broken_encode_name)
    else:
        monkeypatch.setattr(esb, "decode", broken_decode)
    code, _, err = tool(*([] if action == "backup" else [action]))
    assert code == esb.EXIT_BUG == 3, err
    assert "internal error, please report it with this traceback" in err
    assert "Traceback" in err and "AttributeError" in err
    assert ("broken_encode_name" if action == "backup" else "broken_decode") in err
    assert "FAILED" not in err                          # not one file's failure
    assert multiprocessing.active_children() == []


@NO_BASE_PATH
def test_a_bug_in_the_listing_helper_process_exits_3_with_its_traceback(tool, monkeypatch):
    """With S3 the listing runs in a helper process: a bug there is shown the same way."""
    sample_tree(tool)
    assert tool()[0] == 0
    monkeypatch.setattr(esb, "list_objects", lambda dest, report: [][0])
    code, _, err = tool("--verify")
    assert code == esb.EXIT_BUG and "IndexError" in err and "<lambda>" in err, err


def test_encrypted_names_too_long_for_a_local_file_system_are_explained(local_tool):
    tool = local_tool
    tool.set(ENCRYPT_FILENAMES="true")
    tool.write("short.txt", b"ok")
    tool.write("d/" + "x" * 120 + ".txt", b"long path")
    code, out, err = tool()
    assert code == 1 and "1 uploaded" in out
    assert "File name too long" in err and "S3 destination" in err


class GrowingFile:
    """A source file that grows by a line each time it is opened and read."""

    def __init__(self, path, times):
        self.path, self.times = path, times

    def open(self, real_open):
        def opener(storage, key):
            handle = real_open(storage, key)
            if key == self.path.name and self.times > 0:
                self.times -= 1
                with open(self.path, "ab") as grow:
                    grow.write(b"more\n")
            return handle
        return opener


@pytest.mark.parametrize("changes,expect_ok", [(1, True), (5, False)])
def test_file_changing_while_read_is_retried_or_reported(local_tool, monkeypatch, changes,
                                                         expect_ok):
    tool = local_tool
    tool.write("steady.txt", b"steady\n")
    tool.write("growing.log", b"start\n" * 1000)
    grower = GrowingFile(tool.src / "growing.log", changes)
    monkeypatch.setattr(esb.LocalStorage, "open", grower.open(esb.LocalStorage.open))
    tool.set(BACKUP_PROCESSES="1")
    code, out, err = tool()
    objects = tool.objects()
    assert "steady.txt" in objects
    if expect_ok:
        assert code == 0, err
        name = objects["growing.log"]
        data = (tool.src / "growing.log").read_bytes()
        assert name.size == len(data) and name.md5 == hashlib.md5(data).digest()
    else:
        assert code == 1 and "growing.log kept changing" in err
        assert "growing.log" not in objects          # never a name whose MD5 is wrong


def test_file_vanishing_between_listing_and_reading_is_reported(local_tool, monkeypatch):
    tool = local_tool
    tool.write("stays.txt", b"x")
    tool.write("goes.txt", b"y")
    real_list = esb.LocalStorage.list_files

    def list_then_delete(self, report, skip=None):
        entries = list(real_list(self, report, skip))
        if self.root == str(tool.src):
            (tool.src / "goes.txt").unlink(missing_ok=True)
        return iter(entries)

    monkeypatch.setattr(esb.LocalStorage, "list_files", list_then_delete)
    code, out, err = tool()
    assert code == 1 and "goes.txt" in err and "no longer exists" in err
    assert sorted(tool.objects()) == ["stays.txt"]


def test_special_files_and_symlink_loops_are_skipped_with_a_note(local_tool):
    import socket
    tool = local_tool
    tool.write("real.txt", b"real")
    os.symlink("loop-b", tool.src / "loop-a")
    os.symlink("loop-a", tool.src / "loop-b")
    os.symlink("real.txt", tool.src / "link-to-real")
    os.mkfifo(tool.src / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tool.src / "sock"))
    try:
        code, out, err = tool()
    finally:
        server.close()
    assert sorted(tool.objects()) == ["link-to-real", "real.txt"]
    assert "skipped fifo: not a regular file" in out and "skipped sock" in out
    assert "2 skipped" in out                     # and counted in the summary
    assert "loop-a" in err and code == 1          # a loop is an unreadable entry: reported


AS_NOBODY = """
import os, shutil, sys, tempfile
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb
# The interpreter lives under /root, unreadable for "nobody": a first run as root of a
# throw-away tree loads every module the real run needs, then privileges are dropped.
warm = tempfile.mkdtemp()
os.makedirs(warm + "/src")
open(warm + "/src/f", "w").write("warm-up")
real = {k: os.environ[k] for k in ("SRC_LOCAL_PATH", "DEST_LOCAL_PATH")}
os.environ.update(SRC_LOCAL_PATH=warm + "/src", DEST_LOCAL_PATH=warm + "/dest")
assert esb.main(["--quiet"]) == 0
shutil.rmtree(warm)
os.environ.update(real)
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[2]))
sys.exit(esb.main([]))
"""


def test_unreadable_file_as_an_unprivileged_user():
    """A real permission problem (root reads everything, so the run drops to "nobody"):
    the file is reported, its old object kept, everything else backed up."""
    with folder_for_everyone("esb-nobody-") as top:     # tmp_path is root-only
        src, dest = os.path.join(top, "src"), os.path.join(top, "dest")
        os.makedirs(os.path.join(src, "d"))
        for name, data in (("d/ok.txt", b"fine\n"), ("secret.txt", b"v1\n")):
            with open(os.path.join(src, name), "wb") as handle:
                handle.write(data)
        env = process_env(SRC_LOCAL_PATH=src, DEST_LOCAL_PATH=dest, ENCRYPTION_PASSWORD=PASSWORD,
                          ENCRYPTION_SALT=SALT, BACKUP_PROCESSES=2)
        run = [sys.executable, str(ROOT / "encrypted_s3_backup.py")]
        assert subprocess.run(run, env=env, capture_output=True, timeout=60).returncode == 0
        with open(os.path.join(src, "secret.txt"), "wb") as handle:
            handle.write(b"v2 changed\n")
        with open(os.path.join(src, "d", "new.txt"), "wb") as handle:
            handle.write(b"new\n")
        give_to_nobody(top)
        os.chown(os.path.join(src, "secret.txt"), 0, 0)
        os.chmod(os.path.join(src, "secret.txt"), 0o000)
        done = subprocess.run([sys.executable, "-c", AS_NOBODY, str(ROOT), str(NOBODY)],
                              env=unmeasured(env), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        assert "FAILED upload secret.txt: Permission denied" in done.stderr
        assert "1 uploaded" in done.stdout and "Traceback" not in done.stderr
        names = sorted(path.split(".")[0] for path in tree(dest))
        assert names == ["d/new", "d/ok", "secret"]       # the old secret.txt object stays


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_device_file_is_skipped_with_a_note(local_tool):
    tool = local_tool
    tool.write("real.txt", b"real")
    os.mknod(tool.src / "null-device", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    code, out, _ = tool()
    assert code == 0 and sorted(tool.objects()) == ["real.txt"]
    assert "skipped null-device: not a regular file" in out


def test_old_object_that_cannot_be_removed_is_a_warning_then_cleaned(local_tool, monkeypatch):
    tool = local_tool
    sample_tree(tool)
    assert tool()[0] == 0
    tool.write("hello.txt", b"new content\n", 1_700_000_500)

    def refuse(self, key):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(esb.LocalStorage, "remove", refuse)
        code, out, err = tool()
    assert code == 0 and "1 uploaded" in out
    assert "warning: upload hello.txt: stored, but its old object was not removed" in err
    assert len(list(tool.dest.glob("hello.txt.*.enc"))) == 2
    code, out, _ = tool()
    assert code == 0 and "1 duplicates removed" in out
    assert tool.objects()["hello.txt"].size == len(b"new content\n")


def test_source_paths_a_restore_would_refuse_are_reported(local_tool):
    tool = local_tool
    tool.write("ok.txt", b"data")
    tool.write("ctl\x01char.txt", b"data")
    code, out, err = tool()
    assert code == 1 and "1 uploaded" in out
    assert "cannot back up 'ctl\\x01char.txt'" in err
    assert sorted(tool.objects()) == ["ok.txt"]


@pytest.mark.parametrize("key", ["a//b.txt", "x/../y.txt", "./z.txt", "/abs.txt", "dir/"])
def test_s3_style_source_keys_that_cannot_be_paths_are_refused(key):
    """S3 keys are any text: these would not come back out of a restore (checked here
    directly, since SeaweedFS itself normalizes such keys)."""
    report = esb.ListReport()
    assert not esb._backup_path_ok(key, report)
    assert report.blind == [key] and repr(key) in report.problems[0]
    assert esb._backup_path_ok("a/b.txt", report)


def test_config_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"encryption_password": "päss"}'.encode("latin-1"))
    path.chmod(0o600)
    assert esb.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8" in err and "Traceback" not in err and "päss" not in err


def test_a_worker_that_dies_stops_the_run_with_a_clear_error(local_tool, monkeypatch):
    """A killed worker (the OOM killer, say) must not leave the run waiting forever."""
    tool = local_tool
    for name in ("a.bin", "b.bin", "c.bin"):
        tool.write(name, os.urandom(esb.SMALL_FILE + 1))    # big files: one job each
    real_upload = esb.HANDLERS[esb.Upload]

    def die_on_b(worker, job):
        if job.path == "b.bin":
            os._exit(9)
        return real_upload.run(worker, job)

    monkeypatch.setitem(esb.HANDLERS, esb.Upload, real_upload._replace(run=die_on_b))
    signal.alarm(60)                                   # a hang fails the test, not the suite
    try:
        code, _, err = tool()
    finally:
        signal.alarm(0)
    assert code == 1 and "worker process died" in err and "Traceback" not in err
    assert "b.bin" not in tool.objects()
    monkeypatch.setitem(esb.HANDLERS, esb.Upload, real_upload)
    code, out, _ = tool()
    assert code == 0 and "b.bin" in tool.objects()


@NO_BASE_PATH
def test_objects_named_in_a_form_ours_would_not_write_are_replaced_and_marked(tool):
    """The existing tool's reader takes upper-case and zero-padded base-36 fields; such an
    object is found, replaced and marked deleted under its real key, not the one ours
    would have written for the same name."""
    tool.write("kept.txt", b"kept\n", 1_700_000_000)
    tool.write("changes.txt", b"before\n", 1_700_000_000)
    tool.write("goes.txt", b"goes\n", 1_700_000_000)
    assert tool()[0] == 0
    storage = tool.storage()
    odd = {}
    for key in tool.keys():
        path, *fields = key[:-len(esb.OBJECT_SUFFIX)].rsplit(".", 4)
        other = ".".join([path, *("0" + f.upper() for f in fields)]) + esb.OBJECT_SUFFIX
        storage.rename(key, other)
        odd[path] = other
    tool.write("changes.txt", b"after, longer\n", 1_700_000_100)
    (tool.src / "goes.txt").unlink()
    code, _, err = tool()
    assert code == 0, err
    keys = tool.keys()
    assert odd["kept.txt"] in keys                          # unchanged: left as it is
    assert odd["changes.txt"] not in keys and odd["goes.txt"] not in keys
    names = tool.objects()
    assert names["changes.txt"].size == len(b"after, longer\n")
    assert names["goes.txt"].deleted and len(keys) == 3
    code, _, err = tool("--restore")
    assert code == 0, err
    assert sorted(p.name for p in tool.restore.iterdir()) == ["changes.txt", "kept.txt"]


def test_parse_args_gives_typed_frozen_options():
    options = esb.parse_args(["--restore", "--restore-only", "a", "--restore-only", "b/*",
                              "--as-of", "2026-01-02", "--bwlimit", "1M", "-q"])
    assert isinstance(options, esb.Options)
    assert options.restore and not options.verify and options.quiet
    assert options.restore_only == ("a", "b/*")
    assert isinstance(options.as_of, esb.AsOf) and options.as_of_text == "2026-01-02"
    assert options.bwlimit == 1024 ** 2 and options.settings == {"bandwidth_limit": 1024 ** 2}
    with pytest.raises(AttributeError):        # (dataclasses.FrozenInstanceError)
        options.restore = False
    verify = esb.parse_args(["--verify", "--subset", "2/5"])
    assert verify.subset == esb.parse_subset("2/5") and verify.settings == {}
    assert esb.parse_args([]) == esb.Options()     # a backup, every option at its default
