"""Unattended runs: health check pings, the webhook, the metrics file, pre/post commands,
verify in slices and the shared bandwidth cap, through main() against a recording HTTP
server on loopback (ping_server) and, for the bandwidth cap, a real S3 server."""

import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT, esb, process_env
from prometheus_client.parser import text_string_to_metric_families

KEY = "k3y-5ecret"          # the secret part of every URL: never in any output
MiB = 1024 * 1024


@pytest.fixture
def fast_retries(monkeypatch):
    """The real number of tries, with short pauses between them."""
    monkeypatch.setattr(esb, "NOTIFY_BACKOFF", 0.01)


def run(tool, *argv):
    """The tool's run; no output ever shows a URL's secret part."""
    code, out, err = tool(*argv)
    assert KEY not in out + err and "source=nas" not in out + err     # path and query
    return code, out, err


def sample(tool, files=3):
    for i in range(files):
        tool.write(f"f{i}.txt", b"file %d\n" % i, 1_700_000_000 + i)


def fail_reading(tool, *keys):
    """Make reading these source files fail (in the workers too: they are forked)."""
    real_open = esb.LocalStorage.open

    def broken_open(self, key):
        if key in keys:
            raise PermissionError(13, "Permission denied")
        return real_open(self, key)
    tool.monkeypatch.setattr(esb.LocalStorage, "open", broken_open)


# =============================================================================== pings

@pytest.fixture
def pinged(local_tool, ping_server, fast_retries):
    """The tool with a health check URL (its key in the path, a query too) on the server."""
    local_tool.set(HEALTHCHECK_URL=ping_server.url(f"/ping/{KEY}?source=nas"))
    return local_tool


def test_a_successful_backup_pings_start_then_success_with_the_summary(pinged, ping_server):
    sample(pinged)
    code, out, _ = run(pinged)
    assert code == 0
    assert ping_server.seen() == [("GET", f"/ping/{KEY}/start"), ("POST", f"/ping/{KEY}")]
    start, end = ping_server.requests
    assert start.query == end.query == "source=nas"
    summary = next(line for line in out.splitlines() if "backup done:" in line)
    assert end.body.decode() == summary.split("] ", 1)[1] + "\n"
    assert start.headers["User-Agent"].startswith("encrypted_s3_backup/")


def test_a_per_file_failure_pings_fail_with_the_failure_lines(pinged, ping_server):
    sample(pinged)
    fail_reading(pinged, "f1.txt")
    code, _, err = run(pinged)
    assert code == 1
    assert ping_server.seen() == [("GET", f"/ping/{KEY}/start"), ("POST", f"/ping/{KEY}/fail")]
    body = ping_server.requests[1].body.decode()
    assert body.startswith("backup done: 2 uploaded, 1 failed;")
    assert "FAILED upload f1.txt: Permission denied" in body
    assert "FAILED upload f1.txt: Permission denied" in err


def test_the_end_pings_body_keeps_the_summary_and_the_last_failures_that_fit(
        pinged, ping_server, monkeypatch):
    monkeypatch.setattr(esb, "PING_BODY_MAX", 400)
    names = [f"f{i:02}.txt" for i in range(30)]
    for name in names:
        pinged.write(name, b"x")
    fail_reading(pinged, *names)
    code, _, err = run(pinged)
    assert code == 1
    failures = [line.split("] ", 1)[1] for line in err.splitlines() if "FAILED" in line]
    assert len(failures) == 30
    lines = ping_server.requests[-1].body.decode().splitlines()
    assert len("\n".join(lines).encode()) < 400 and lines[0].startswith("backup done: 30 failed;")
    assert 3 < len(lines) - 1 < 30
    assert lines[1:] == failures[-(len(lines) - 1):]     # the last ones, in their order


def test_a_configuration_error_pings_fail_when_the_url_is_known(pinged, ping_server):
    pinged.set(ENCRYPTION_PASSWORD=None, BACKUP_PROCESSES="many")
    code, _, err = run(pinged)
    assert code == 2 and "configuration problems" in err
    assert ping_server.seen() == [("POST", f"/ping/{KEY}/fail")]
    body = ping_server.requests[0].body.decode()
    assert body.startswith("backup ended with exit code 2\n")
    assert "encryption_password" in body and "backup_processes" in body


def test_a_configuration_error_in_a_broken_file_still_pings_from_the_environment(
        pinged, ping_server):
    (pinged.tmp / "config.json").write_text("{not json")
    code, _, err = run(pinged)
    assert code == 2 and "not valid JSON" in err
    assert ping_server.seen() == [("POST", f"/ping/{KEY}/fail")]


@pytest.mark.parametrize("text", ['{"backup_processes": %s}' % ("7" * 5000),
                                  "[" * 100_000 + "]" * 100_000], ids=["digits", "nesting"])
def test_a_configuration_python_cannot_hold_is_one_line_and_reaches_every_monitor(
        pinged, ping_server, text):
    """JSON that parses but that Python cannot hold: one line, exit 2, and the failure
    reaches the ping, the webhook and the metrics file the environment names."""
    metrics = pinged.tmp / "esb.prom"
    pinged.set(NOTIFY_URL=ping_server.url(f"/hook/{KEY}"), METRICS_FILE=metrics)
    (pinged.tmp / "config.json").write_text(text)
    code, out, err = run(pinged)
    assert code == 2 and "Traceback" not in err and "internal error" not in err
    [line] = err.splitlines()
    assert line.endswith("error: config file config.json cannot be read: " + (
        "a number in it has too many digits" if "7777" in text else
        "it nests arrays or objects too deeply") + "; fix the file")
    assert sorted(ping_server.seen()) == [("POST", f"/hook/{KEY}"),
                                          ("POST", f"/ping/{KEY}/fail")]
    assert 'encrypted_s3_backup_last_exit_code{kind="backup"} 2' in metrics.read_text()


def test_a_refused_mass_deletion_pings_fail(pinged, ping_server):
    sample(pinged, 12)
    assert run(pinged)[0] == 0
    for i in range(11):
        (pinged.src / f"f{i}.txt").unlink()
    code, _, _ = run(pinged)
    assert code == 2
    assert ping_server.seen()[2:] == [("GET", f"/ping/{KEY}/start"),
                                      ("POST", f"/ping/{KEY}/fail")]
    assert "refusing to mark deleted or remove 11 of 12" in ping_server.requests[3].body.decode()


def test_a_failed_verify_pings_fail_and_a_restore_pings_success(pinged, ping_server):
    sample(pinged)
    assert run(pinged)[0] == 0
    assert run(pinged, "--restore")[0] == 0
    next(pinged.dest.glob("f1.txt.*")).write_bytes(b"garbage")
    assert run(pinged, "--verify")[0] == 1
    ok, start, fail = ("POST", f"/ping/{KEY}"), ("GET", f"/ping/{KEY}/start"), \
        ("POST", f"/ping/{KEY}/fail")
    assert ping_server.seen() == [start, ok, start, ok, start, fail]
    body = ping_server.requests[-1].body.decode()
    assert body.startswith("verify done: 2 verified, 1 failed;") and "FAILED verify f1.txt" in body


def test_lists_and_dry_runs_send_nothing(pinged, ping_server):
    sample(pinged)
    assert run(pinged, "--dry-run")[0] == 0
    assert run(pinged)[0] == 0
    assert run(pinged, "--list")[0] == 0
    assert run(pinged, "--restore", "--dry-run")[0] == 0
    assert len(ping_server.seen()) == 2


def test_an_unreachable_ping_server_leaves_the_backup_alone_with_one_warning(
        local_tool, closed_url, fast_retries):
    local_tool.set(HEALTHCHECK_URL=closed_url)
    sample(local_tool)
    code, out, err = local_tool()
    assert code == 0 and "3 uploaded" in out
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1, err
    origin = closed_url.split("/ping/")[0]
    assert f"health check ping to {origin} failed after 3 tries" in warnings[0]
    assert "refused" in warnings[0] and "outcome is unchanged" in warnings[0]
    assert "c1osed-k3y" not in out + err


def test_a_failing_answer_is_tried_three_times_and_a_slow_one_times_out(
        pinged, ping_server, monkeypatch):
    ping_server.answers[f"/ping/{KEY}/start"] = 503
    sample(pinged)
    code, _, err = run(pinged)
    assert code == 0 and "(HTTP 503)" in err
    start, success = ("GET", f"/ping/{KEY}/start"), ("POST", f"/ping/{KEY}")
    assert ping_server.seen() == [start] * 3 + [success]     # a server that answers: kept
    monkeypatch.setattr(esb, "NOTIFY_TIMEOUT", 0.2)
    # A server that answers only after 60 s (or at the test's end): "timed out" is the 0.2 s
    # timeout, each of 3 tries; the URL then gets nothing more (its end ping is not sent).
    ping_server.stall, ping_server.answers = 60, {}
    code, _, err = run(pinged, "--verify")
    assert code == 0 and "timed out" in err and err.count("warning") == 1
    assert ping_server.seen()[4:] == [("GET", f"/ping/{KEY}/start")] * 3


def test_a_client_error_is_final_and_a_bad_url_is_refused_without_showing_it(
        pinged, ping_server):
    ping_server.answers[f"/ping/{KEY}/start"] = 404      # an Uptime Kuma push URL does this
    sample(pinged)
    code, _, err = run(pinged)
    assert code == 0 and "(HTTP 404)" in err
    assert ping_server.seen() == [("GET", f"/ping/{KEY}/start"), ("POST", f"/ping/{KEY}")]
    pinged.set(HEALTHCHECK_URL=f"ftp://example.net/{KEY}", NOTIFY_URL=f"https://{KEY} x")
    code, _, err = run(pinged)
    assert code == 2
    assert "healthcheck_url (environment HEALTHCHECK_URL): must be an http:// or https://" in err
    assert "notify_url (environment NOTIFY_URL)" in err


def test_user_information_in_a_url_is_sent_as_basic_authentication_never_shown(
        local_tool, ping_server, fast_retries):
    import base64
    tool = local_tool
    secured = ping_server.url("").replace("http://", "http://nas-user:s%40cret-pw@")
    tool.set(HEALTHCHECK_URL=f"{secured}/ping/{KEY}", NOTIFY_URL=f"{secured}/hook/{KEY}",
             NOTIFY_ON="always")
    sample(tool)
    code, out, err = run(tool)
    assert code == 0, err
    assert ping_server.seen() == [("GET", f"/ping/{KEY}/start"), ("POST", f"/hook/{KEY}"),
                                  ("POST", f"/ping/{KEY}")]
    sent = "Basic " + base64.b64encode(b"nas-user:s@cret-pw").decode()
    assert [r.headers.get("Authorization") for r in ping_server.requests] == [sent] * 3
    ping_server.answers[f"/hook/{KEY}"] = 401                 # refused: said, not shown
    code, out, err = run(tool)
    assert code == 0 and "webhook to http://127.0.0.1:" in err and "(HTTP 401)" in err
    for secret in ("nas-user", "s%40cret", "s@cret"):
        assert secret not in out + err


def test_the_overlap_guards_report_pings_fail_with_its_reason(pinged, ping_server):
    code, out, err = run(pinged, "--report-skipped", "previous run still going")
    assert code == 0 and out == "" and err == ""
    assert ping_server.seen() == [("POST", f"/ping/{KEY}/fail")]
    assert ping_server.requests[0].body == b"previous run still going\n"


def test_the_url_never_shows_in_the_configurations_repr(pinged, ping_server):
    pinged.set(NOTIFY_URL=ping_server.url(f"/hook/{KEY}"))
    assert KEY not in repr(pinged.config())


# ============================================================================= webhook

def webhook_tool(local_tool, ping_server, **env):
    local_tool.set(NOTIFY_URL=ping_server.url(f"/hook/{KEY}"), **env)
    return local_tool


def test_the_webhook_is_sent_on_failure_only_by_default(local_tool, ping_server):
    tool = webhook_tool(local_tool, ping_server)
    sample(tool)
    assert run(tool)[0] == 0
    assert ping_server.seen() == []
    tool.write("f9.txt", b"new")
    fail_reading(tool, "f9.txt")
    code, out, _ = run(tool)
    assert code == 1
    [hook] = ping_server.requests
    assert (hook.method, hook.path) == ("POST", f"/hook/{KEY}")
    assert hook.headers["Content-Type"] == "application/json"
    data = hook.json()
    assert data["kind"] == "backup" and data["status"] == "failure" and data["exit_code"] == 1
    assert data["title"] == f"encrypted_s3_backup: backup failed on {data['host']}"
    assert data["summary"] in out and data["message"].startswith(data["summary"] + "\n")
    assert data["failures"] == ["FAILED upload f9.txt: Permission denied"]
    assert (data["uploaded"], data["unchanged"], data["failed"]) == (0, 3, 1)
    assert data["destination_objects"] == 3 and data["destination_bytes"] > 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", data["started"])
    assert data["started"] <= data["ended"]


def test_the_webhook_schema_always_and_with_every_figure(local_tool, ping_server):
    tool = webhook_tool(local_tool, ping_server, NOTIFY_ON="always")
    sample(tool)
    code, out, _ = run(tool)
    assert code == 0
    data = ping_server.requests[0].json()
    assert set(data) == {"title", "message", "tool", "version", "kind", "status", "exit_code",
                         "host", "started", "ended", "summary", *esb.FIGURES["backup"],
                         "seconds", "mb_per_s", "destination_objects", "destination_bytes",
                         "failures", "slice"}
    assert data["status"] == "success" and data["exit_code"] == 0 and data["failures"] == []
    assert data["slice"] is None                      # (a run of one slice: "I/N")
    assert data["tool"] == "encrypted_s3_backup" and data["version"] == esb.__version__
    assert data["uploaded"] == 3 and data["bytes_read"] == 21 and data["bytes_written"] > 21
    assert (data["destination_objects"], data["destination_bytes"]) == (3, data["bytes_written"])
    assert "3 uploaded" in data["summary"] and data["message"] == data["summary"]
    assert isinstance(data["seconds"], float) and isinstance(data["mb_per_s"], float)
    run(tool, "--verify", "--subset", "1/1")
    verify = ping_server.requests[1].json()
    assert verify["kind"] == "verify" and verify["verified"] == 3 and verify["skipped"] == 0
    assert verify["bytes_checked"] == 21


def test_the_destination_figures_follow_every_change_a_backup_makes(local_tool, ping_server):
    tool = webhook_tool(local_tool, ping_server, NOTIFY_ON="always", VERSIONS_KEEP_DAYS=30,
                        DELETED_KEEP_DAYS=0)
    for i in range(6):
        tool.write(f"f{i}.txt", b"first %d" % i)
    assert run(tool)[0] == 0
    tool.write("f0.txt", b"second content")             # the old one kept as a version
    tool.write("f1.txt", b"first 1", 1_700_000_500)      # a new mtime only: the old one goes
    (tool.src / "f2.txt").unlink()                       # removed at once (keep days 0)
    code, out, _ = run(tool)
    assert code == 0 and "1 expired" in out and "1 versions kept" in out
    sizes = [entry.size for entry in tool.storage().list_files(esb.ListReport())]
    data = ping_server.requests[-1].json()
    assert (data["destination_objects"], data["destination_bytes"]) == (len(sizes), sum(sizes))
    assert len(sizes) == 6


def test_the_webhook_carries_the_first_50_failures(local_tool, ping_server):
    tool = webhook_tool(local_tool, ping_server)
    names = [f"f{i:02}.txt" for i in range(60)]
    for name in names:
        tool.write(name, b"x")
    fail_reading(tool, *names)
    assert run(tool)[0] == 1
    data = ping_server.requests[0].json()
    assert data["failed"] == 60 and len(data["failures"]) == 50
    assert len(data["message"].splitlines()) == 1 + esb.MESSAGE_FAILURES


def test_a_configuration_error_reaches_the_webhook_and_a_bad_notify_on_is_one(
        local_tool, ping_server):
    tool = webhook_tool(local_tool, ping_server, NOTIFY_ON="sometimes")
    code, _, err = run(tool)
    assert code == 2 and "notify_on (environment NOTIFY_ON): 'sometimes' is not one of: " \
        "failure, always" in err
    data = ping_server.requests[0].json()
    assert data["status"] == "failure" and data["exit_code"] == 2
    assert data["uploaded"] == 0 and data["destination_objects"] is None
    assert any("notify_on" in line for line in data["failures"])


# ======================================================================== metrics file

def metrics(path):
    """{(name, kind, result): value} of a metrics file, read by Prometheus' own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge" and family.documentation
        for s in family.samples:
            out[s.name, s.labels["kind"], s.labels.get("result")] = s.value
    return out


def test_the_metrics_file_parses_and_matches_the_summary(local_tool):
    tool = local_tool
    path = tool.tmp / "textfile" / "backup.prom"
    path.parent.mkdir()
    tool.set(METRICS_FILE=path)
    sample(tool, 4)
    began = time.time()
    assert run(tool)[0] == 0
    tool.write("f9.txt", b"new file\n")
    code, out, _ = run(tool)
    assert code == 0 and "1 uploaded, 4 unchanged" in out
    m = metrics(path)
    name = "encrypted_s3_backup_"
    assert m[name + "last_exit_code", "backup", None] == 0
    assert began <= m[name + "last_start_timestamp_seconds", "backup", None] \
        <= m[name + "last_end_timestamp_seconds", "backup", None] \
        == m[name + "last_success_timestamp_seconds", "backup", None] <= time.time()
    assert m[name + "last_duration_seconds", "backup", None] >= 0
    files = {r: m[name + "last_files", "backup", r]
             for r in ("read", "written", "unchanged", "failed", "skipped")}
    assert files == {"read": 1, "written": 1, "unchanged": 4, "failed": 0, "skipped": 0}
    assert m[name + "last_bytes", "backup", "read"] == 9
    objects = tool.storage().list_files(esb.ListReport())
    sizes = [e.size for e in objects]
    assert m[name + "destination_objects", "backup", None] == len(sizes) == 5
    assert m[name + "destination_bytes", "backup", None] == sum(sizes)
    assert [p.name for p in path.parent.iterdir()] == ["backup.prom"]     # no temp file
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask       # node-exporter may read it


def test_metrics_keep_the_other_kinds_and_the_last_success(local_tool):
    tool = local_tool
    path = tool.tmp / "esb.prom"
    tool.set(METRICS_FILE=path)
    sample(tool)
    assert run(tool)[0] == 0
    success = metrics(path)["encrypted_s3_backup_last_success_timestamp_seconds", "backup", None]
    assert run(tool, "--verify")[0] == 0
    tool.write("f0.txt", b"changed")
    tool.set(ENCRYPTION_PASSWORD=None)          # a configuration error: exit 2
    assert run(tool)[0] == 2
    m = metrics(path)
    assert m["encrypted_s3_backup_last_exit_code", "backup", None] == 2
    assert m["encrypted_s3_backup_last_success_timestamp_seconds", "backup", None] == success
    assert m["encrypted_s3_backup_destination_objects", "backup", None] == 3   # the last known
    assert m["encrypted_s3_backup_last_files", "backup", "written"] == 0
    assert m["encrypted_s3_backup_last_exit_code", "verify", None] == 0
    assert m["encrypted_s3_backup_last_files", "verify", "read"] == 3


def test_a_metrics_file_that_cannot_be_written_is_a_warning(local_tool):
    local_tool.set(METRICS_FILE=local_tool.tmp / "missing" / "esb.prom")
    sample(local_tool)
    code, _, err = run(local_tool)
    assert code == 0 and "warning: cannot write the metrics file" in err


def test_the_metrics_file_is_replaced_whole_never_seen_in_part(tmp_path):
    path = tmp_path / "esb.prom"
    figures = {"uploaded": 10 ** 6, "unchanged": 5, "failed": 0, "bytes_read": 2 ** 40,
               "bytes_written": 2 ** 39, "destination_objects": 7, "destination_bytes": 99}
    esb.write_metrics(str(path), "verify", esb.metric_samples("verify", 0, 1.0, 2.0, figures))
    done = threading.Event()

    def writer():
        for i in range(100):
            kind = ("backup", "restore")[i % 2]
            esb.write_metrics(str(path), kind, esb.metric_samples(kind, i % 4, i, i + 1.5,
                                                                  figures))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set() or reads == 0:
        text = path.read_text()
        families = list(text_string_to_metric_families(text))
        assert text.endswith("\n") and len(families) == len(esb.METRICS)
        assert any(s.labels["kind"] == "verify" for f in families for s in f.samples)
        reads += 1
    thread.join()
    assert reads > 10 and [p.name for p in tmp_path.iterdir()] == ["esb.prom"]


# ==================================================================== pre/post commands

def test_pre_and_post_commands_run_around_the_backup_in_order(local_tool):
    tool = local_tool
    journal = tool.tmp / "journal"
    tool.set(PRE_COMMAND=f'echo "dump of $HOME" > src/dump.sql; echo pre >> {journal}; '
                         f'echo dumping; echo "a notice" >&2',
             POST_COMMAND=f'echo "post $BACKUP_EXIT_CODE" >> {journal}; echo cleaned')
    sample(tool)
    code, out, err = run(tool)
    assert code == 0 and "4 uploaded" in out        # the dump the pre_command wrote too
    assert "dump.sql" in tool.objects()
    assert journal.read_text() == "pre\npost 0\n"
    lines = [line.split("] ", 1)[1] for line in out.splitlines()]
    assert lines.index("pre_command: dumping") < lines.index(
        f"backup {tool.src} -> {tool.dest}") < next(
        i for i, line in enumerate(lines) if "backup done" in line) < lines.index(
        "post_command: cleaned")
    assert re.search(r"^\[[^]]+\] pre_command: a notice$", err, re.M)
    fail_reading(tool, "f0.txt")
    tool.write("f0.txt", b"changed", 1_700_001_000)
    assert run(tool)[0] == 1
    assert journal.read_text().endswith("post 1\n")
    assert run(tool, "--dry-run")[0] == 0 and run(tool, "--verify")[0] == 0
    assert journal.read_text().count("pre") == 2          # not for a dry run or a verify


def test_a_failing_pre_command_stops_the_backup_before_anything_changes(
        local_tool, ping_server):
    tool = local_tool
    tool.set(PRE_COMMAND="echo starting; echo 'pg_dump: connection refused' >&2; exit 3",
             POST_COMMAND="echo post saw $BACKUP_EXIT_CODE",
             HEALTHCHECK_URL=ping_server.url(f"/ping/{KEY}"))
    sample(tool)
    code, out, err = run(tool)
    assert code == 2
    [error] = [line for line in err.splitlines() if "error:" in line]
    assert "pre_command failed (exit status 3): " in error
    assert "the backup did not start and nothing was changed" in error and "PRE_COMMAND" in error
    quoted = error.split("(exit status 3): ")[1].split("; the backup")[0]
    assert sorted(quoted.split(" | ")) == ["pg_dump: connection refused", "starting"]
    assert not tool.dest.exists()
    assert "post_command: post saw 2" in out
    assert ping_server.seen() == [("GET", f"/ping/{KEY}/start"), ("POST", f"/ping/{KEY}/fail")]
    assert "pre_command failed" in ping_server.requests[1].body.decode()
    tool.set(PRE_COMMAND="kill -9 $$")
    code, _, err = run(tool)
    assert code == 2 and "pre_command failed (killed by signal 9) with no output" in err


def test_a_stopped_pre_command_is_stopped_with_the_run_and_post_command_still_runs(tmp_path):
    """SIGTERM (docker stop) while the pre_command runs: the command and what it started
    end, the run exits 130, and the post_command runs with BACKUP_EXIT_CODE 130."""
    (tmp_path / "src").mkdir()
    pid_file, journal = tmp_path / "sleeper.pid", tmp_path / "journal"
    env = process_env(SRC_LOCAL_PATH=tmp_path / "src", DEST_LOCAL_PATH=tmp_path / "dest",
                      ENCRYPTION_PASSWORD="pw",
                      PRE_COMMAND=f"sleep 60 & echo $! > {pid_file}; wait",
                      POST_COMMAND=f"echo post $BACKUP_EXIT_CODE > {journal}")
    child = subprocess.Popen([sys.executable, str(ROOT / "encrypted_s3_backup.py")], env=env,
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text().strip()):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 130, err
    assert "interrupted" in err and journal.read_text() == "post 130\n"
    sleeper, deadline = int(pid_file.read_text()), time.monotonic() + 5
    while esb._pid_alive(sleeper):
        assert time.monotonic() < deadline, "the pre_command's child was not stopped"
        time.sleep(0.02)
    assert not (tmp_path / "dest").exists()


def test_a_failing_post_command_is_a_warning(local_tool):
    local_tool.set(POST_COMMAND="echo unmount failed >&2; exit 1")
    sample(local_tool)
    code, _, err = run(local_tool)
    assert code == 0
    assert "post_command: unmount failed" in err
    assert "warning: post_command failed (exit status 1); the backup's outcome is " \
        "unchanged" in err


def group_alive(pgid):
    """Whether a process of process group ``pgid`` runs (zombies do not count)."""
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as status:
                fields = status.read().rpartition(")")[2].split()
        except (FileNotFoundError, NotADirectoryError, ProcessLookupError):
            continue
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def wait_for(condition, what, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_command_that_runs_too_long_is_stopped_with_all_it_started(local_tool, monkeypatch):
    """command_timeout: SIGTERM to the command's process group, SIGKILL after the grace for
    what ignores it; a pre_command then fails the run, a post_command is a warning."""
    monkeypatch.setattr(esb, "COMMAND_GRACE_SECONDS", 1)
    tool, shell = local_tool, local_tool.tmp / "shell.pid"
    tool.set(PRE_COMMAND=f"trap '' TERM; echo $$ > {shell}; echo dumping; sleep 300",
             COMMAND_TIMEOUT=1)
    sample(tool)
    code, out, err = run(tool)
    assert code == 2 and "pre_command: dumping" in out
    assert "pre_command: stopping it and all it started (SIGTERM, then SIGKILL after 1 s)" in err
    [error] = [line for line in err.splitlines() if "error:" in line]
    assert "pre_command did not finish within command_timeout (1 s), so it was stopped" in error
    assert "nothing was changed" in error and "COMMAND_TIMEOUT" in error
    wait_for(lambda: not group_alive(int(shell.read_text())), "the command still runs")
    assert not tool.dest.exists()              # (SIGKILL lands at once, the exit a moment on)
    tool.set(PRE_COMMAND=None, POST_COMMAND="sleep 300")
    code, out, err = run(tool)
    assert code == 0 and "3 uploaded" in out
    assert "warning: post_command did not finish within command_timeout (1 s), so it was " \
        "stopped with all it started; the backup's outcome is unchanged" in err


def test_the_run_waits_for_the_shell_not_for_what_it_leaves_in_the_background(local_tool):
    tool, sleeper = local_tool, local_tool.tmp / "sleeper.pid"
    tool.set(PRE_COMMAND=f"sleep 300 & echo $! > {sleeper}; echo started; printf 'no newline'")
    sample(tool)
    try:
        code, out, err = run(tool)
        assert code == 0 and "3 uploaded" in out, err
        assert "pre_command: started" in out and "pre_command: no newline" in out
        assert esb._pid_alive(int(sleeper.read_text()))     # still running: not waited for
    finally:
        os.kill(int(sleeper.read_text()), signal.SIGKILL)


def test_ctrl_c_stops_a_command_that_ignores_sigterm(tmp_path):
    """The first Ctrl-C sends SIGTERM to the command's group, which ignores it; a second
    one kills what is left at once.  The run exits 130 and nothing of the command runs."""
    (tmp_path / "src").mkdir()
    shell, log_file = tmp_path / "shell.pid", tmp_path / "stderr.txt"
    env = process_env(SRC_LOCAL_PATH=tmp_path / "src", DEST_LOCAL_PATH=tmp_path / "dest",
                      ENCRYPTION_PASSWORD="pw",
                      PRE_COMMAND=f"trap '' TERM INT; echo $$ > {shell}; sleep 300")
    with open(log_file, "w") as errors:
        child = subprocess.Popen([sys.executable, str(ROOT / "encrypted_s3_backup.py")],
                                 env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                 stderr=errors)
    try:
        wait_for(lambda: shell.exists() and shell.read_text().strip(), "no pre_command")
        child.send_signal(signal.SIGINT)
        wait_for(lambda: "stopping it and all it started" in log_file.read_text(),
                 "the command was not being stopped")
        child.send_signal(signal.SIGINT)                # the second: SIGKILL now
        assert child.wait(timeout=60) == 130, log_file.read_text()
    finally:
        child.kill()
    assert "interrupted" in log_file.read_text()
    wait_for(lambda: not group_alive(int(shell.read_text())), "the command still runs")
    assert not (tmp_path / "dest").exists()


# ==================================================================== verify in slices

def stored_objects(count):
    return [esb.stored_object(f"file{i}.txt.1.1.1.0.enc", 1,
                              esb.BackupName(f"file{i}.txt", 1, 1, b"\x01" * 16))
            for i in range(count)]


def test_t_slices_cover_every_object_exactly_once():
    objects = stored_objects(1000)
    slices = [esb.select_subset(objects, esb.parse_subset(f"{n}/7")) for n in range(1, 8)]
    keys = [o.key for part in slices for o in part]
    assert sorted(keys) == sorted(o.key for o in objects)
    assert all(90 < len(part) < 200 for part in slices)          # the hash spreads them
    assert esb.select_subset(objects, esb.Subset(3, 7)) == slices[2]   # the same every time
    # ... and on every machine: the first 8 bytes of the key's SHA-256, modulo T.  Checked
    # with coreutils and bc: printf %s 'a/b.txt.1.2.3.0.enc' | sha256sum starts with
    # 09ec80788c546dc3, and echo 'ibase=16; 09EC80788C546DC3 % 7' | bc prints 1.
    assert esb.key_slice("a/b.txt.1.2.3.0.enc", 7) == 1


@pytest.mark.parametrize("percent, count", [("10%", 100), ("0.5%", 5), ("0.01%", 1),
                                            ("33.3%", 333), ("100%", 1000)])
def test_a_percentage_picks_that_many_at_random(percent, count):
    objects = stored_objects(1000)
    picked = esb.select_subset(objects, esb.parse_subset(percent))
    assert len(picked) == count and len(set(picked)) == count
    assert picked == [o for o in objects if o in set(picked)]     # in the listing's order
    if count < 1000:
        assert any(esb.select_subset(objects, esb.parse_subset(percent)) != picked
                   for _ in range(5))


@pytest.mark.parametrize("text", ["0/7", "8/7", "3/0", "0%", "101%", "half", "1/2/3", "-1/2"])
def test_a_bad_subset_is_a_usage_error(text, capsys):
    with pytest.raises(SystemExit) as done:
        esb.parse_args(["--verify", "--subset", text])
    assert done.value.code == 2 and "--subset:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        esb.parse_args(["--restore", "--subset", "1/2"])
    assert "--subset needs --verify" in capsys.readouterr().err


def test_verify_slices_through_the_cli(local_tool):
    tool = local_tool
    for i in range(30):
        tool.write(f"d{i % 3}/f{i}.txt", b"%d" % i)
    assert run(tool)[0] == 0
    checked = []
    for n in (1, 2, 3):
        code, out, _ = run(tool, "--verify", "--subset", f"{n}/3")
        assert code == 0
        ok = [line.split(" OK ", 1)[1] for line in out.splitlines() if " OK " in line]
        assert f"verified, {30 - len(ok)} skipped, 0 failed" in out
        assert f"(subset {n}/3: {len(ok)} checked, {30 - len(ok)} skipped)" in out
        checked += ok
    assert sorted(checked) == sorted(f"d{i % 3}/f{i}.txt" for i in range(30))
    code, out, _ = run(tool, "--verify", "--subset", "10%")
    assert code == 0 and "3 verified, 27 skipped, 0 failed" in out


# ======================================================================== bandwidth cap

@pytest.mark.parametrize("text, rate", [("4M", 4 * MiB), ("512k", 512 * 1024), ("1.5G", 1536 * MiB),
                                        ("250000", 250_000), ("4MB", 4 * MiB), ("4MiB/s", 4 * MiB),
                                        (" 2 K ", 2048), ("0", 0)])
def test_rates(text, rate):
    assert esb.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "4X", "-1M", "", "0.0001", "M"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError, match="is not a rate"):
        esb.parse_rate(text)


def _take(throttle, size, chunk):
    for _ in range(size // chunk):
        throttle.take(chunk)


def test_one_budget_for_all_processes_forked_after_it():
    """Four processes each pass 1 MiB through a 2 MiB/s bucket: 4 MiB less the one-second
    burst at 2 MiB/s is at least 1 s.  Four buckets of their own would take no time."""
    throttle = esb.Throttle(2 * MiB)
    context = multiprocessing.get_context("fork")
    began = time.monotonic()
    children = [context.Process(target=_take, args=(pickle.loads(pickle.dumps(throttle)),
                                                    MiB, 64 * 1024)) for _ in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join()
    assert all(child.exitcode == 0 for child in children)
    assert time.monotonic() - began >= 1.0
    assert pickle.loads(pickle.dumps(throttle)) is throttle


def test_backup_and_restore_with_a_4_mib_cap_take_at_least_2_seconds(make_tool, s3_bucket):
    """12 MiB of random data, 4 processes, 4 MiB/s: (12 MiB - one second's burst) / 4 MiB/s
    is 2 s at least (a lower bound only: a slow machine cannot fail it; no upper bound)."""
    tool = make_tool(s3_bucket, processes=4, BANDWIDTH_LIMIT="4M")
    data = {f"r{i}.bin": os.urandom(12 * MiB // 8) for i in range(8)}
    for name, content in data.items():
        tool.write(name, content)
    began = time.monotonic()
    code, out, err = tool()
    assert code == 0, err
    assert time.monotonic() - began >= 2.0
    tool.set(BANDWIDTH_LIMIT=None)
    began = time.monotonic()
    code, _, err = tool("--restore", "--bwlimit", "4M")
    assert code == 0, err
    assert time.monotonic() - began >= 2.0
    assert tool.restored() == data
    with pytest.raises(SystemExit):
        esb.parse_args(["--bwlimit", "lots"])


def test_a_url_that_cannot_be_requested_is_reported_without_retries(monkeypatch):
    monkeypatch.setattr(esb, "NOTIFY_BACKOFF", 60)        # a retry would hang the test
    assert esb.deliver("http://[::1/ping") == "not a URL that can be requested"
    assert esb.url_origin("https://user:pw@hc.example:8443/ping/k?x=1") == \
        "https://hc.example:8443"
    assert esb.with_suffix("https://hc.example/ping/k/?x=1", "/start") == \
        "https://hc.example/ping/k/start?x=1"
