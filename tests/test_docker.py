"""The Docker image without Docker: crontab.sh run directly, and the Dockerfile read as text.

crontab.sh runs with `cron` and `crontab` replaced by stubs on PATH that record what they were
given, and with its ESB_* paths (env file, lock, log streams, localtime, the script and its
python) pointing into tmp_path. The backup script is replaced by a small Python stub that records
its arguments and environment, prints to both streams and can sleep or fail on request.
"""

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

CRONTAB_SH = ROOT / "crontab.sh"
DOCKERFILE = ROOT / "Dockerfile"
JOB_WORD = "__cron_job__"

# A value that breaks naive quoting: quotes, $, backticks, backslashes, a newline, UTF-8, %.
TRICKY = "it's \"quoted\" $HOME $(id) `id` \\back\\slash; & | * ?\nsecond line é 100% "

STUB_SCRIPT = """\
import json, os, sys, time
with open(os.environ["STUB_RECORD"], "a", encoding="utf-8") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "env": dict(os.environ)}) + "\\n")
print("stub stdout line", flush=True)
print("stub stderr line", file=sys.stderr, flush=True)
hold, given_up = os.environ.get("STUB_HOLD"), time.monotonic() + 120
while hold and not os.path.exists(hold) and time.monotonic() < given_up:
    time.sleep(0.01)      # running until the test creates STUB_HOLD (never a stray for long)
sys.exit(int(os.environ.get("STUB_RC", "0")))
"""


class Box:
    """One sandbox: stubs on PATH, ESB_* paths in tmp_path, helpers to run crontab.sh."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.cron_args = tmp / "cron.args"
        self.crontab_args = tmp / "crontab.args"
        self.crontab_installed = tmp / "crontab.installed"
        self.env_file = tmp / "cron.env"
        self.log_out = tmp / "out.log"
        self.log_err = tmp / "err.log"
        self.record = tmp / "runs.jsonl"
        self.localtime = tmp / "localtime"
        self.script = tmp / "stub_backup.py"
        self.script.write_text(STUB_SCRIPT, encoding="utf-8")
        q = shlex.quote
        self._stub("cron", f'printf "%s\\n" "$@" > {q(str(self.cron_args))}\nexit 0\n')
        self._stub("crontab", f'printf "%s\\n" "$@" > {q(str(self.crontab_args))}\n'
                              f'cat "$1" > {q(str(self.crontab_installed))}\n')
        self.env = {
            "PATH": f"{self.bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(tmp), "HOSTNAME": "container-id", "TERM": "xterm",
            "ESB_ENV_FILE": str(self.env_file), "ESB_LOCK_FILE": str(tmp / "backup.lock"),
            "ESB_LOG_OUT": str(self.log_out), "ESB_LOG_ERR": str(self.log_err),
            "ESB_LOCALTIME": str(self.localtime), "ESB_SCRIPT": str(self.script),
            "ESB_PYTHON": sys.executable, "STUB_RECORD": str(self.record),
            "SRC_LOCAL_PATH": "/data", "DEST_S3_BUCKET": "my-backups",
            "ENCRYPTION_PASSWORD": TRICKY,
        }

    def _stub(self, name: str, body: str) -> None:
        path = self.bin / name
        path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        path.chmod(0o755)

    def run(self, *args: str, timeout: float = 10, **extra: str) -> subprocess.CompletedProcess:
        """crontab.sh ARGS with the sandbox environment plus EXTRA (a None value unsets)."""
        env = {**self.env, **extra}
        env = {k: v for k, v in env.items() if v is not None}
        return subprocess.run([str(CRONTAB_SH), *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self, **extra: str) -> subprocess.CompletedProcess:
        """The container starting: no arguments. Must succeed (the cron stub exits 0)."""
        result = self.run(**extra)
        assert result.returncode == 0, result.stderr
        return result

    def installed_line(self) -> str:
        lines = [line for line in self.crontab_installed.read_text(encoding="utf-8").splitlines()
                 if line.strip() and not line.startswith("#")]
        assert len(lines) == 1, lines
        return lines[0]

    def run_installed_job(self, **extra: str) -> subprocess.CompletedProcess:
        """Run the installed crontab line's command as cron would: /bin/sh, a bare environment."""
        command = self.installed_line().split(None, 5)[5]
        assert re.search(r"(?<!\\)%", command) is None   # cron would cut the line at a bare %
        command = command.replace("\\%", "%")
        env = {"PATH": "/usr/bin:/bin", "HOME": "/root", "SHELL": "/bin/sh", "LOGNAME": "root",
               **extra}
        return subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True,
                              text=True, timeout=10)

    def runs(self) -> list:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines()]

    def sourced(self, name: str) -> str:
        """NAME's value after `set -a; . ENV_FILE` in a bash with an empty environment."""
        result = subprocess.run(
            ["/usr/bin/env", "-i", "/bin/bash", "-c",
             'set -euo pipefail; set -a; . "$1"; set +a; printf %s "${!2}"', "_",
             str(self.env_file), name],
            capture_output=True, timeout=10)
        assert result.returncode == 0, result.stderr
        return result.stdout.decode("utf-8")


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def exported_names(env_file: Path) -> set:
    names = set()
    for line in env_file.read_text(encoding="utf-8").splitlines():
        match = re.match(r"export ([A-Za-z_][A-Za-z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


# --- the script itself --------------------------------------------------------------------------

def test_crontab_sh_is_executable_bash_that_parses():
    assert CRONTAB_SH.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    assert os.access(CRONTAB_SH, os.X_OK)
    assert "set -euo pipefail" in CRONTAB_SH.read_text(encoding="utf-8")
    result = subprocess.run(["bash", "-n", str(CRONTAB_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_crontab_sh_passes_shellcheck_when_installed():
    if shutil.which("shellcheck") is None:
        return   # bash -n above always runs; shellcheck is an extra when the machine has it
    result = subprocess.run(["shellcheck", str(CRONTAB_SH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- start-up: schedule, environment, time zone ---------------------------------------------------

def test_default_schedule_is_hourly_and_cron_runs_in_the_foreground(box):
    box.start(CRONTAB=None)
    line = box.installed_line()
    assert line.startswith("0 * * * * ")
    assert f" {JOB_WORD} " in line
    assert box.crontab_args.read_text().splitlines()[0] != "-"   # a file, not stdin
    assert box.cron_args.read_text().split() == ["-f"]


def test_empty_crontab_means_the_default(box):
    box.start(CRONTAB="")
    assert box.installed_line().startswith("0 * * * * ")


@pytest.mark.parametrize("crontab, schedule", [
    ("0 3 * * *", "0 3 * * *"),
    ("  */15   2-4 1,15 jan-mar mon-fri  ", "*/15 2-4 1,15 jan-mar mon-fri"),
    ("@daily", "@daily"),
    ("@hourly", "@hourly"),
])
def test_custom_schedule_is_installed(box, crontab, schedule):
    result = box.start(CRONTAB=crontab)
    line = box.installed_line()
    assert line.startswith(schedule + " ")
    assert line.split()[len(schedule.split())] == f"'{CRONTAB_SH.resolve()}'"
    assert f"'{schedule}'" in result.stdout


@pytest.mark.parametrize("crontab", [
    "* * * *", "0 * * * * *", "0 * * * * python3 evil.py", "0 * * * *; id", "0 3 * * * %",
    "@often", "hourly", '"0 3 * * *"',
])
def test_invalid_schedule_exits_2_with_one_line(box, crontab):
    result = box.run(CRONTAB=crontab)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert f"CRONTAB='{crontab}' is not a cron schedule" in lines[0]
    assert "5 fields" in lines[0] and "@daily" in lines[0]
    assert not box.crontab_installed.exists() and not box.cron_args.exists()
    assert not box.env_file.exists()


def test_env_file_holds_the_environment_exactly_with_mode_0600(box):
    box.env_file.write_text("stale\n")
    box.env_file.chmod(0o644)
    box.start(MY_SETTING="plain", EMPTY_ONE="")
    assert stat.S_IMODE(box.env_file.stat().st_mode) == 0o600
    names = exported_names(box.env_file)
    for name in ("SRC_LOCAL_PATH", "DEST_S3_BUCKET", "ENCRYPTION_PASSWORD", "MY_SETTING",
                 "EMPTY_ONE", "PATH", "ESB_SCRIPT"):
        assert name in names
    for name in ("HOSTNAME", "HOME", "PWD", "SHLVL", "_", "TERM"):
        assert name not in names
    assert box.sourced("ENCRYPTION_PASSWORD") == TRICKY
    assert box.sourced("MY_SETTING") == "plain"
    assert box.sourced("EMPTY_ONE") == ""
    assert box.sourced("DEST_S3_BUCKET") == "my-backups"
    assert "stale" not in box.env_file.read_text(encoding="utf-8")
    assert [p.name for p in box.tmp.iterdir() if p.name.startswith("cron.env.")] == []


def test_startup_output_names_schedule_timezone_and_next_step(box):
    result = box.start(CRONTAB="30 2 * * *", TZ="Europe/Paris")
    out = result.stdout
    assert re.match(r"\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\] ", out)
    assert "schedule '30 2 * * *'" in out
    assert "time zone Europe/Paris" in out
    assert "next:" in out and JOB_WORD in out
    assert "still going" in out
    assert TRICKY.splitlines()[0] not in out   # the password is never printed
    assert result.stderr == ""


def test_tz_sets_the_local_time_zone_cron_reads(box):
    if not Path("/usr/share/zoneinfo/Europe/Paris").exists():
        pytest.fail("tzdata is needed: apt-get install tzdata")
    box.start(TZ="Europe/Paris")
    assert os.readlink(box.localtime) == "/usr/share/zoneinfo/Europe/Paris"
    assert box.sourced("TZ") == "Europe/Paris"


def test_unknown_tz_is_reported_and_localtime_untouched(box):
    result = box.start(TZ="Mars/Olympus_Mons")
    assert "TZ='Mars/Olympus_Mons' is not a time zone" in result.stdout
    assert not box.localtime.exists() and not box.localtime.is_symlink()


def test_without_tz_a_time_zone_is_still_named(box):
    result = box.start(TZ=None)
    match = re.search(r"time zone (\S+) \(now ", result.stdout)
    assert match and match.group(1)
    assert not box.localtime.is_symlink()


def test_cron_command_is_overridable(box):
    record = box.tmp / "other_cron.args"
    other = box.tmp / "other_cron"
    other.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(record))}\n')
    other.chmod(0o755)
    box.start(ESB_CRON=str(other))
    assert record.read_text().split() == ["-f"]
    assert not box.cron_args.exists()


# --- a command instead of cron --------------------------------------------------------------------

def test_arguments_exec_the_command_instead_of_cron(box):
    result = box.run("echo", "hello", "two words")
    assert result.returncode == 0
    assert result.stdout == "hello two words\n"
    assert not box.cron_args.exists() and not box.crontab_installed.exists()
    assert not box.env_file.exists()


def test_the_command_replaces_the_shell_and_keeps_its_exit_code(box):
    env = {**box.env, "CRONTAB": "not a schedule"}
    proc = subprocess.Popen([str(CRONTAB_SH), "sh", "-c", 'echo "$$"; exit 7'], env=env,
                            stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 7
    assert int(out) == proc.pid   # exec: the command took over crontab.sh's process


def test_the_script_runs_directly_with_its_arguments(box):
    result = box.run(sys.executable, str(box.script), "--verify", "--restore-only", "a b")
    assert result.returncode == 0
    assert "stub stdout line" in result.stdout
    assert box.runs()[0]["argv"] == ["--verify", "--restore-only", "a b"]


# --- the scheduled job ----------------------------------------------------------------------------

def test_installed_job_runs_the_script_with_the_container_environment(box):
    box.start(MY_SETTING="from the container")
    result = box.run_installed_job()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""   # all of it went to the container log
    [run] = box.runs()
    assert run["argv"] == []
    assert run["env"]["ENCRYPTION_PASSWORD"] == TRICKY
    assert run["env"]["MY_SETTING"] == "from the container"
    assert run["env"]["SRC_LOCAL_PATH"] == "/data"
    assert run["env"]["HOME"] == "/root"   # cron's, not the container's
    assert "stub stdout line" in box.log_out.read_text(encoding="utf-8")
    assert "stub stderr line" in box.log_err.read_text(encoding="utf-8")
    assert "stub stderr line" not in box.log_out.read_text(encoding="utf-8")


def test_job_output_is_appended_to_the_log(box):
    box.start()
    box.log_out.write_text("earlier line\n", encoding="utf-8")
    assert box.run("__cron_job__").returncode == 0
    assert box.run("__cron_job__").returncode == 0
    out = box.log_out.read_text(encoding="utf-8")
    assert out.startswith("earlier line\n") and out.count("stub stdout line") == 2
    assert len(box.runs()) == 2


def test_failed_backup_exit_code_is_kept_and_logged(box):
    box.start()
    result = box.run(JOB_WORD, STUB_RC="3")
    assert result.returncode == 3
    err = box.log_err.read_text(encoding="utf-8")
    assert re.search(r"\] backup exited with code 3$", err, re.M)


def test_job_without_env_file_exits_2_and_says_why(box):
    result = box.run(JOB_WORD, str(box.tmp / "missing.env"))
    assert result.returncode == 2
    assert "no environment file" in result.stderr and "missing.env" in result.stderr
    assert box.runs() == []


def test_a_run_never_overlaps_the_previous_one(box):
    box.start()
    release = box.tmp / "release"     # the first run lasts until this file exists
    env = {**box.env, "STUB_HOLD": str(release)}
    first = subprocess.Popen([str(CRONTAB_SH), JOB_WORD], env=env)
    try:
        deadline = time.monotonic() + 10
        while not box.runs():   # the stub has started, so the first job holds the lock
            assert time.monotonic() < deadline, "the first job never started the script"
            assert first.poll() is None, "the first job ended early"
            time.sleep(0.02)
        second = box.run_installed_job()      # ends while the first still runs: no waiting
        assert second.returncode == 0, second.stderr
        assert first.poll() is None   # the first run is still going
        # the skipped run only reports itself to the monitors
        [_, report] = box.runs()
        assert report["argv"][0] == "--report-skipped"
        assert report["argv"][1].startswith("previous run still going: the backup due at ")
        out = box.log_out.read_text(encoding="utf-8")
        assert re.search(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\] previous backup still running; "
                         r"skipping this run$", out, re.M)
    finally:
        release.touch()
        assert first.wait(timeout=10) == 0
    third = box.run_installed_job()
    assert third.returncode == 0, third.stderr
    assert [run["argv"] for run in box.runs()][2] == []


def test_a_skipped_run_sends_the_fail_ping_with_its_reason(box, ping_server):
    """The real script reports the skip: a /fail ping whose body says why, and the URL's
    key is not in the container log."""
    box.start(HEALTHCHECK_URL=ping_server.url("/ping/sk1p-key"))
    release = box.tmp / "release"
    first = subprocess.Popen([str(CRONTAB_SH), JOB_WORD],
                             env={**box.env, "STUB_HOLD": str(release)})
    try:
        deadline = time.monotonic() + 10
        while not box.runs():
            assert time.monotonic() < deadline, "the first job never started the script"
            time.sleep(0.02)
        real = box.tmp / "real.env"     # the same environment, with the real script
        script = shlex.quote(str(ROOT / "encrypted_s3_backup.py"))
        real.write_text(box.env_file.read_text(encoding="utf-8")
                        + f"export ESB_SCRIPT={script}\n", encoding="utf-8")
        second = box.run(JOB_WORD, str(real), timeout=60)
        assert second.returncode == 0, second.stderr
        assert first.poll() is None
    finally:
        release.touch()
        assert first.wait(timeout=10) == 0
    assert ping_server.seen() == [("POST", "/ping/sk1p-key/fail")]
    body = ping_server.requests[0].body.decode()
    assert body.startswith("previous run still going: the backup due at ")
    logged = box.log_out.read_text(encoding="utf-8") + box.log_err.read_text(encoding="utf-8")
    assert "sk1p-key" not in logged and "previous backup still running" in logged


# --- the Dockerfile -------------------------------------------------------------------------------

def dockerfile_instructions() -> list:
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert pending == "", "the Dockerfile ends inside a continued line"
    return out


def test_dockerfile_base_is_a_slim_official_python():
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM"
    assert re.fullmatch(r"python:3\.\d+-slim", instructions[0][1])
    assert sum(1 for word, _ in instructions if word == "FROM") == 1


def test_dockerfile_installs_cron_and_tzdata_lean():
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    [apt] = [rest for rest in runs if "apt-get install" in rest]
    words = apt.split()
    assert "cron" in words and "tzdata" in words
    assert "--no-install-recommends" in words and "-y" in words
    assert "apt-get update" in apt and "rm -rf /var/lib/apt/lists/*" in apt


def test_dockerfile_copies_files_that_exist():
    copies = [rest for word, rest in dockerfile_instructions() if word in ("COPY", "ADD")]
    copied = set()
    for rest in copies:
        words = [w for w in rest.split() if not w.startswith("--")]
        assert len(words) >= 2
        for source in words[:-1]:
            assert (ROOT / source).is_file(), f"COPY names {source}, which is not in the repository"
            copied.add(source)
    assert {"requirements.txt", "encrypted_s3_backup.py", "generate_salt.py",
            "crontab.sh"} <= copied


def test_dockerfile_pip_installs_requirements_before_copying_the_script():
    instructions = dockerfile_instructions()
    pip = [i for i, (word, rest) in enumerate(instructions)
           if word == "RUN" and re.search(r"\bpip3? install\b", rest)]
    assert len(pip) == 1
    rest = instructions[pip[0]][1]
    assert re.search(r"-r \S*requirements\.txt\b", rest) and "--no-cache-dir" in rest
    copies = [(i, rest) for i, (word, rest) in enumerate(instructions) if word == "COPY"]
    req = [i for i, rest in copies if "requirements.txt" in rest.split()[:-1]]
    script = [i for i, rest in copies if "encrypted_s3_backup.py" in rest.split()[:-1]]
    assert req and script and req[0] < pip[0] < script[0]


def test_dockerfile_entrypoint_is_crontab_sh_in_exec_form():
    instructions = dockerfile_instructions()
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert len(entry) == 1
    assert json.loads(entry[0]) == ["/app/crontab.sh"]
    assert not [word for word, _ in instructions if word == "CMD"]   # no args: cron
    copies = [rest.split() for word, rest in instructions if word == "COPY"]
    assert any("crontab.sh" in words[:-1] and words[-1] in ("/app/", "/app/crontab.sh")
               for words in copies)
    assert ("WORKDIR", "/app") in instructions


def test_dockerfile_header_explains_the_environment_variables():
    header = []
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    for name in ("SRC_LOCAL_PATH", "DEST_S3_BUCKET", "ENCRYPTION_PASSWORD", "CRONTAB", "TZ"):
        assert name in text
    assert "--verify" in text
