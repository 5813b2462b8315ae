"""One mistake must not lose data or pass in silence (issue 26): a typo in a setting stops
the run, a restore that selects nothing is an error, a mass change kept as history alerts,
a bucket created or a listing failure is said.  Each through the command line, as users
run it, with the destination (and restore folder) checked to be untouched where nothing
should be written."""

import json
import os

import pytest
from conftest import PASSWORD, esb, snapshot, tree

MTIME = 1_700_000_000
FILES = {f"docs/file{i:02d}.txt": f"the text of file {i}\n".encode() * (i + 1)
         for i in range(12)}


def back_up(tool, files=FILES, *argv):
    for rel, data in files.items():
        tool.write(rel, data, MTIME)
    code, _, err = tool(*argv)
    assert code == 0, err


def error_lines(err):
    """The lines of stderr that are not warnings (a known error is one line, or a heading
    and one line per configuration problem)."""
    return [line for line in err.splitlines() if "warning:" not in line]


# ---------------------------------------------------------------- 1. configuration typos

def test_a_typo_in_a_config_file_key_stops_the_run_before_history_is_purged(local_tool,
                                                                             tmp_path):
    """version_keep_days (for versions_keep_days) ran with history off and removed every
    kept version; now it is an error naming the key it looks like, even with -q."""
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=30)
    back_up(tool)
    tool.write("docs/file00.txt", b"changed", MTIME + 60)
    assert tool()[0] == 0
    assert any(key.endswith(".ver") for key in tool.keys())
    before = snapshot(tool.dest)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"version_keep_days": 30}))
    config.chmod(0o600)
    tool.set(VERSIONS_KEEP_DAYS=None)
    code, out, err = tool("--config", str(config), "-q")
    assert code == esb.EXIT_USAGE == 2
    problems = [line for line in err.splitlines() if line.startswith("  ")]
    assert len(problems) == 1
    assert "unknown key 'version_keep_days'" in problems[0]
    assert "did you mean 'versions_keep_days'" in problems[0] and "rename" in problems[0]
    assert snapshot(tool.dest) == before


def test_a_typo_in_an_environment_variable_stops_the_run(local_tool):
    tool = local_tool
    back_up(tool)
    before = snapshot(tool.dest)
    tool.set(VERSION_KEEP_DAYS="30")
    code, out, err = tool("-q")
    assert code == 2
    assert "VERSION_KEEP_DAYS" in err and "did you mean VERSIONS_KEEP_DAYS?" in err
    assert snapshot(tool.dest) == before
    tool.set(VERSION_KEEP_DAYS=None, DEST_BASEPATH="host1")
    code, out, err = tool("--restore")
    assert code == 2 and "did you mean DEST_BASE_PATH?" in err
    assert not tool.restore.exists()


# ---------------------------------------------------------- 5. a restore of nothing is an error

@pytest.fixture(params=["local", "s3"])
def tool(request, make_tool):
    """The tool, its destination a local folder or the test's S3 bucket."""
    if request.param == "local":
        return make_tool()
    return make_tool(request.getfixturevalue("s3_bucket"))


TAXES = {"taxes/2024/return.pdf": b"%PDF return", "taxes/2024/receipts/a.jpg": b"jpeg",
         "Photos/cat.jpg": b"meow"}


def one_error(code, err):
    """The run failed with exit code 2 and one error line, which is returned."""
    assert code == esb.EXIT_USAGE, err
    lines = error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("pattern,suggested", [
    ("/Taxes/2024", "'taxes/2024'"), ("taxes/2024/RETURN.PDF", "'taxes/2024/return.pdf'"),
    ("./taxes/2024/", "'taxes/2024'"), ("photos/*.JPG", "'Photos/cat.jpg'"),
    ("taxes/2023", None)])
def test_restore_only_that_matches_nothing_is_an_error_with_the_paths_it_may_mean(
        local_tool, pattern, suggested):
    tool = local_tool
    back_up(tool, TAXES)
    before = snapshot(tool.dest)
    for argv in (["--restore"], ["--restore", "--dry-run"], ["--list"]):
        line = one_error(*tool(*argv, "--restore-only", pattern)[::2])
        assert f"--restore-only {pattern!r} matches no path in the backup" in line
        if suggested:
            assert f"did you mean {suggested}?" in line
        else:
            assert "did you mean" not in line
        assert "--list shows them" in line
    assert not tool.restore.exists() and snapshot(tool.dest) == before


def test_near_misses_are_a_few_paths_or_folders_by_case_and_leading_slash():
    paths = [f"Docs/{i}.txt" for i in range(10)] + ["docs2/x.txt", "Docs/sub/y.txt"]
    assert esb.near_misses(paths, "/docs") == ["Docs"]                  # the folder, once
    assert esb.near_misses(paths, "./DOCS/*.TXT") == ["Docs/0.txt", "Docs/1.txt",
                                                      "Docs/2.txt"]      # SUGGESTIONS
    assert esb.near_misses(paths, "/") == [] and esb.near_misses(paths, "taxes") == []


def test_check_selection_says_why_nothing_is_selected():
    def stored(path, deleted=0, version=False):
        return esb.Stored(None, 64, esb.BackupName(path, MTIME, 3, b"\0" * 16, deleted,
                                                   version))
    gone_early = stored("a.txt", deleted=esb.date_number(esb.datetime.date(2024, 1, 1)))
    with pytest.raises(esb.NothingSelectedError, match="each was deleted by then"):
        esb.check_selection([gone_early], [], (), esb.parse_as_of("2025-01-01"), "2025-01-01")
    only_a_version = stored("b.txt", deleted=20240101, version=True)
    with pytest.raises(esb.NothingSelectedError, match="only old versions"):
        esb.check_selection([only_a_version], [], ("b.txt",), None)
    esb.check_selection([only_a_version], [only_a_version], ("b.txt",), None)   # selected


def test_one_restore_only_of_several_that_matches_nothing_is_an_error(tool):
    back_up(tool, TAXES)
    code, out, err = tool("--restore", "--restore-only", "Photos/", "--restore-only", "/taxes")
    line = one_error(code, err)
    assert "'/taxes' matches no path" in line and "did you mean 'taxes'?" in line
    assert "Photos" not in line
    assert not tool.restore.exists()


def test_as_of_before_the_first_backup_is_an_error_naming_the_earliest_moment(tool):
    back_up(tool, TAXES)
    earliest = esb.datetime.datetime.fromtimestamp(MTIME).strftime("%Y-%m-%dT%H:%M:%S")
    for argv in (["--restore"], ["--restore", "--dry-run"], ["--list"]):
        line = one_error(*tool(*argv, "--as-of", "2001-01-01")[::2])
        assert "no file existed as of 2001-01-01" in line
        assert f"earliest file is from {earliest}" in line and "--as-of" in line
    line = one_error(*tool("--restore", "--as-of", "2001-01-01", "--restore-only",
                           "Photos/")[::2])
    assert "no file under --restore-only 'Photos/' existed as of 2001-01-01" in line
    assert not tool.restore.exists()


def test_restore_of_only_deleted_files_says_how_to_get_them(local_tool):
    tool = local_tool
    back_up(tool, TAXES)
    (tool.src / "Photos" / "cat.jpg").unlink()
    assert tool()[0] == 0
    line = one_error(*tool("--restore", "--restore-only", "Photos/")[::2])
    assert "every file under --restore-only 'Photos/' is marked deleted" in line
    assert "add --restore-deleted" in line
    assert not tool.restore.exists()
    code, _, err = tool("--restore", "--restore-only", "Photos/", "--restore-deleted")
    assert code == 0 and tool.restored() == {"Photos/cat.jpg": b"meow"}, err


def test_restore_and_verify_of_an_empty_destination_are_errors_naming_it(local_tool):
    tool = local_tool
    tool.dest.mkdir()
    for argv in (["--restore"], ["--restore", "--dry-run"], ["--verify"],
                 ["--list", "--restore-only", "a"]):
        line = one_error(*tool(*argv)[::2])
        assert f"dest {tool.dest} holds no backup objects" in line
        assert "base_path" in line and "DEST_LOCAL_PATH" in line
    code, out, err = tool("--list")             # a listing of nothing is a listing, said
    assert code == 0 and out == ""
    assert "holds no backup objects" in err
    assert not tool.restore.exists() and tree(tool.dest) == {}


def test_a_typo_in_the_s3_base_path_is_an_error_not_a_restore_of_nothing(make_tool, s3_bucket):
    tool = make_tool(s3_bucket, base_path="host1")
    back_up(tool, TAXES)
    keys = tool.keys()
    tool.set(DEST_BASE_PATH="hots1")
    for argv in (["--restore"], ["--verify"]):
        line = one_error(*tool(*argv)[::2])
        assert "holds no backup objects" in line and "hots1" in line
    tool.set(DEST_BASE_PATH="host1")
    assert tool.keys() == keys and not tool.restore.exists()


# ------------------------------------------------------------ 6. a mass change alerts

def rewrite_all(tool, files=FILES):
    """What ransomware does: every file rewritten in place, mtime later."""
    for rel in files:
        tool.write(rel, os.urandom(64), MTIME + 3600)


def test_a_mass_change_kept_as_history_alerts_every_monitor(local_tool, ping_server):
    """The run completes (history keeps the old contents), but it is no success: exit code
    5, the /fail ping with the reason, the webhook whatever notify_on says, a metric."""
    tool = local_tool
    metrics = tool.tmp / "esb.prom"
    tool.set(VERSIONS_KEEP_DAYS=30, HEALTHCHECK_URL=ping_server.url("/ping/k"),
             NOTIFY_URL=ping_server.url("/hook"), NOTIFY_ON="failure", METRICS_FILE=metrics)
    back_up(tool)
    assert [r.path for r in ping_server.requests] == ["/ping/k/start", "/ping/k"]
    assert "last_mass_change_files{kind=\"backup\"} 0" in metrics.read_text()
    ping_server.requests.clear()
    rewrite_all(tool)

    code, out, err = tool()
    assert code == esb.EXIT_ATTENTION == 5, err
    assert "12 uploaded" in out and "12 versions kept" in out
    [warning] = [line for line in err.splitlines() if "changed in this run" in line]
    assert "12 of 12 backed-up files changed" in warning and "exit code 5" in warning
    assert "--as-of" in warning
    paths = [r.path for r in ping_server.requests]
    assert paths == ["/ping/k/start", "/hook", "/ping/k/fail"]
    body = ping_server.requests[2].body.decode()
    assert body.startswith("backup done: 12 uploaded") and "12 of 12 backed-up files" in body
    hook = ping_server.requests[1].json()
    assert hook["status"] == "attention" and hook["exit_code"] == 5
    assert hook["mass_change_files"] == 12 and "needs attention" in hook["title"]
    assert "12 of 12 backed-up files changed" in hook["message"]
    text = metrics.read_text()
    assert 'encrypted_s3_backup_last_mass_change_files{kind="backup"} 12' in text
    assert 'encrypted_s3_backup_last_exit_code{kind="backup"} 5' in text

    tool.set(ENCRYPTION_PASSWORD=None)           # a run that stops early keeps the figure
    assert tool()[0] == 2
    assert 'last_mass_change_files{kind="backup"} 12' in metrics.read_text()
    tool.set(ENCRYPTION_PASSWORD=PASSWORD)
    ping_server.requests.clear()                 # the next quiet run is a success again
    code, _, err = tool()
    assert code == 0, err
    assert [r.path for r in ping_server.requests] == ["/ping/k/start", "/ping/k"]
    assert 'last_mass_change_files{kind="backup"} 0' in metrics.read_text()


def test_an_expected_mass_change_with_history_passes_with_allow_mass_change(local_tool):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=30)
    back_up(tool)
    rewrite_all(tool)
    code, out, err = tool("--allow-mass-change")
    assert code == 0 and "12 versions kept" in out, err
    assert "changed in this run" not in err


def test_a_mass_change_with_a_failed_file_exits_1_and_still_says_the_mass_change(
        local_tool, ping_server, monkeypatch):
    tool = local_tool
    tool.set(VERSIONS_KEEP_DAYS=30, NOTIFY_URL=ping_server.url("/hook"))
    back_up(tool)
    rewrite_all(tool)
    real_open = esb.LocalStorage.open

    def broken_open(self, key):
        if key == "docs/file03.txt":
            raise PermissionError(13, "Permission denied")
        return real_open(self, key)
    monkeypatch.setattr(esb.LocalStorage, "open", broken_open)
    code, _, err = tool()
    assert code == esb.EXIT_FAILED, err
    hook = ping_server.requests[0].json()
    assert hook["status"] == "failure" and hook["mass_change_files"] == 12
    assert "12 of 12 backed-up files changed" in hook["message"]


# ---------------------------------------------------------------- 8. the small ones

def test_a_backup_to_a_bucket_that_does_not_exist_says_it_created_it(make_tool, s3_bucket):
    """A typo in s3_bucket starts a second, empty backup: one line says so, even with -q."""
    tool = make_tool(s3_bucket)
    typo = s3_bucket.name + "x"
    tool.set(DEST_S3_BUCKET=typo)
    tool.write("a.txt", b"alpha", MTIME)
    code, out, err = tool("--dry-run")
    assert code == 0, err
    [line] = [line for line in out.splitlines() if "a new backup starts there" in line]
    assert f"s3://{typo}/" in line and "does not exist (a backup creates it)" in line
    buckets = lambda: [b["Name"] for b in s3_bucket.client.list_buckets()["Buckets"]]  # noqa
    assert typo not in buckets()
    try:
        code, out, err = tool("-q")
        assert code == 0, err
        [line] = [line for line in out.splitlines() if "note:" in line]
        assert f"s3://{typo}/" in line and "did not exist and was created" in line
        assert "check dest's s3_bucket" in line
        code, out, _ = tool()                      # once: the next run says nothing of it
        assert code == 0 and "a new backup starts" not in out
    finally:
        from s3_server import empty_and_delete_bucket
        empty_and_delete_bucket(s3_bucket.client, typo)


def test_a_first_backup_without_a_salt_says_what_it_costs_and_how_to_set_one(local_tool):
    tool = local_tool
    tool.set(ENCRYPTION_SALT=None)
    tool.write("a.txt", b"alpha", MTIME)
    code, out, err = tool()
    assert code == 0, err
    [line] = [line for line in out.splitlines() if "encryption_salt" in line]
    assert "0.1 s of CPU per file" in line and "ENCRYPTION_SALT=$(python3 generate_salt.py)" \
        in line
    tool.write("b.txt", b"beta", MTIME)
    code, out, _ = tool()
    assert code == 0 and "encryption_salt" not in out      # the first run only
    tool.set(ENCRYPTION_SALT=esb.SALT_LEN * "ab")
    tool.dest = tool.tmp / "dest2"
    tool.set(DEST_LOCAL_PATH=tool.dest)
    code, out, _ = tool()
    assert code == 0 and "new backup starts" in out and "encryption_salt" not in out


def test_the_summary_counts_listing_failures(local_tool):
    tool = local_tool
    tool.write("ok.txt", b"data", MTIME)
    tool.write("ctl\x01char.txt", b"data", MTIME)
    code, out, err = tool()
    assert code == 1 and "FAILED listing: cannot back up 'ctl\\x01char.txt'" in err
    assert "1 uploaded, 1 failed;" in out
    (tool.dest / "not-ours.enc").write_bytes(b"junk")
    code, out, err = tool("--restore")
    assert code == 1 and "FAILED listing" in err
    assert "1 restored, 1 failed;" in out
