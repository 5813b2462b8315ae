"""Every command README.md shows a user is run here (except Docker, which needs an engine:
crontab.sh and the Dockerfile are tested in test_docker.py)."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, esb, tree

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```sh\n(.*?)```", README, re.S)


def usage_lines():
    """The `python3 encrypted_s3_backup.py ...` lines of the Usage section."""
    usage = README[README.index("## Usage"):README.index("## Configuration")]
    block = re.search(r"```sh\n(.*?)```", usage, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_starts_with_the_two_commands():
    first, second = BLOCKS[0].strip(), BLOCKS[1].strip()
    assert README.index(first) < README.index("## What it does")
    assert "pip install -r requirements.txt" in first and "encrypted_s3_backup.py" in first
    assert "pip install -r requirements-dev.txt" in second and "pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.split(" && ")[-1] in ci             # CI runs exactly the README's tests


def undocumented(readme):
    """The environment variables (SETTINGS' rows and the storage kinds' keys) and the flags
    that ``readme`` does not name: the variables in its list of them, the flags anywhere."""
    listing = readme[readme.index("Every environment variable the tool reads"):]
    listing = listing[:listing.index("\n\n", listing.index("\n- "))]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]*)`", listing))
    flags = [option for action in esb.build_parser()._actions
             for option in action.option_strings if option.startswith("--")]
    return ([name for name in esb.config_variables() if name not in named]
            + [flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", readme)])


def test_every_configuration_variable_and_flag_is_named():
    """Users search the README for the exact name they saw in a docker run line."""
    assert undocumented(README) == []
    assert len([option for action in esb.build_parser()._actions
                for option in action.option_strings if option.startswith("--")]) >= 12


@pytest.fixture
def checkout(tmp_path):
    """A copy of the project as a user's clone has it."""
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("encrypted_s3_backup.py", "generate_salt.py", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    (clone / "docs").mkdir()
    (clone / "docs" / "a.txt").write_text("alpha\n")
    (clone / ".git").mkdir()
    (clone / ".git" / "HEAD").write_text("ref\n")
    return clone


def bash(command, cwd, env=None):
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_first_command_backs_up_this_folder(checkout, tmp_path):
    """The README's first command, minus creating the venv: the same environment variables
    and script, with the destination moved into the test's folder."""
    backup_part = BLOCKS[0].strip().split(" && ")[-1]
    dest = tmp_path / "demo-backup"
    command = backup_part.replace("/tmp/esb-demo-backup", str(dest)).replace(
        "python encrypted_s3_backup.py", f"{sys.executable} encrypted_s3_backup.py").replace(
        "python generate_salt.py", f"{sys.executable} generate_salt.py")
    assert "ENCRYPTION_SALT=$(" in command        # a first backup of many files is not slow
    done = bash(command, checkout)
    assert done.returncode == 0, done.stderr
    names = sorted(path.split(".")[0] for path in tree(dest) if path.endswith(".enc"))
    assert names == ["README", "docs/a", "encrypted_s3_backup", "generate_salt"]  # no .git
    assert "encryption_salt" not in done.stdout and "a new backup starts there" in done.stdout
    # the paragraph after it: the same command with --restore, then --verify (a new salt each
    # time: every object carries its own)
    assert "same command with `--restore` at its end" in README
    restored = tmp_path / "restored"
    for flag in ("--restore", "--verify"):
        again = bash(f"RESTORE_LOCAL_PATH={restored} {command} {flag}", checkout)
        assert again.returncode == 0, again.stderr
    assert (restored / "generate_salt.py").read_bytes() == (checkout / "generate_salt.py"
                                                            ).read_bytes()
    assert "verify done: 4 verified, 0 failed" in again.stdout


def test_the_host_cron_line_runs_the_backup_and_skips_while_one_runs(tmp_path):
    """The README's crontab line, its schedule cut off, run by sh as cron runs it with HOME
    a test folder holding the env file and the script: it backs up once, and while the
    lock is held it skips without a word."""
    line = re.search(r"```crontab\n(.*?)\n```", README, re.S).group(1).strip()
    command = line.split(None, 5)[5]
    assert command.startswith("flock -n ") and "backup.env" in command
    assert "chmod 600 ~/backup.env" in README
    home = tmp_path / "home"
    (home / "encrypted_s3_backup").mkdir(parents=True)
    shutil.copy(ROOT / "encrypted_s3_backup.py", home / "encrypted_s3_backup")
    (home / "data").mkdir()
    (home / "data" / "a.txt").write_text("alpha\n")
    (home / "backup.env").write_text(
        f"export SRC_LOCAL_PATH='{home / 'data'}' DEST_LOCAL_PATH='{tmp_path / 'dest'}'\n"
        "export ENCRYPTION_PASSWORD='a long passphrase'\n"
        f"export ENCRYPTION_SALT={esb.SALT_LEN * 'ab'}\n")
    (home / "backup.env").chmod(0o600)
    env = {"HOME": str(home), "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin"}
    command = command.replace("python3 ", f"{sys.executable} ")
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    log = (home / "encrypted_s3_backup.log").read_text()
    assert "backup done: 1 uploaded, 0 failed" in log
    with open(home / ".encrypted_s3_backup.lock") as lock:
        import fcntl
        fcntl.flock(lock, fcntl.LOCK_EX)                   # a run still going
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 1 and done.stdout == done.stderr == ""   # skipped
    assert (home / "encrypted_s3_backup.log").read_text() == log


def test_every_usage_example_runs(checkout, tmp_path):
    """Over a source the examples' filters match (a restore that selects nothing is an
    error), its files older than the --as-of example's date."""
    data = tmp_path / "data"
    for rel, text in (("docs/a.txt", "alpha\n"), ("notes.txt", "beta\n")):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_text(text)
        os.utime(data / rel, (1_700_000_000, 1_700_000_000))
    (checkout / "config.json").write_text(
        '{"src": {"local_path": "%s"}, "dest": {"local_path": "%s"}, '
        '"restore": {"local_path": "%s"}, "encryption_password": "pw"}'
        % (data, tmp_path / "dest", tmp_path / "restored"))
    (checkout / "config.json").chmod(0o600)
    lines = usage_lines()
    assert len(lines) >= 9
    for line in lines:
        done = bash(line.replace("python3", sys.executable, 1), checkout)
        assert done.returncode == 0, (line, done.stderr)
        if "2> errors.log" in line:
            assert (checkout / "errors.log").read_text() == ""
    assert (tmp_path / "restored" / "docs" / "a.txt").read_text() == "alpha\n"


def test_quick_start_environment_block(checkout, tmp_path, s3_bucket):
    """The local-to-S3 quick start, pointed at the test's S3 server."""
    block = next(b for b in BLOCKS if "export SRC_LOCAL_PATH" in b)
    values = {"/srv/www": str(checkout / "docs"), "my-backups": s3_bucket.name,
              "AKIA...": s3_bucket.access_key, "DEST_AWS_SECRET_ACCESS_KEY=...":
              f"DEST_AWS_SECRET_ACCESS_KEY={s3_bucket.secret_key}",
              "https://s3.example.net": s3_bucket.endpoint_url}
    for old, new in values.items():
        assert old in block
        block = block.replace(old, new)
    block = block.replace("python3 ", f"{sys.executable} ")
    done = bash(block, checkout)
    assert done.returncode == 0, done.stderr
    keys = list(s3_bucket.listing())
    assert len(keys) == 1 and keys[0].startswith("www/a.txt.")


def whole_bytes(mb):
    """The byte count behind one of bench.py's memory figures.

    bench.py measures whole bytes (kB lines of /proc times 1024) and writes bytes / 10**6
    as a float. Multiplied back and rounded, that float gives the bytes exactly (its error
    is a few units in 10**-16 of the value, far below half a byte), while a sum of such
    floats can come out one rounding below the float of the same total: 95.67436799999999
    against 95.674368 once, for byte counts that were equal."""
    return round(mb * 10**6)


def test_the_benchmark_runs_as_the_readme_says(tmp_path):
    """`python bench/bench.py` at its smallest (--quick, local): every step exits 0, the
    restore is identical, each step's bound is the sum of its floors, and the planner check
    passes; no speed is judged here."""
    assert "python bench/bench.py" in README
    out = tmp_path / "results.json"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), "--quick",
                           "--datasets", "many-small", "--targets", "local", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = json.loads(out.read_text())
    steps = {(s["dataset"], s["target"], s["step"]) for s in results["steps"]}
    assert steps == {("many-small", "local", step)
                     for step in ("backup", "no-change", "restore", "verify",
                                  "no-change, history on", "change 40 files",
                                  "no-change, 10% versions")}
    versions = next(s for s in results["steps"] if s["step"] == "no-change, 10% versions")
    assert versions["runs"] == 3 and versions["vs_no_versions"] > 0
    assert all(s["exit_code"] == 0 and s["peak_mb"] > 0 for s in results["steps"])
    for step in results["steps"][:4]:       # each run 3 times (--runs), the fastest kept
        assert step["runs"] == 3 and step["wall_s"] == min(step["run_wall_s"])
        assert len(step["run_wall_s"]) == 3 and not step["restore_problems"]
    # each step's bound: the start floor, its CPU floor, and listing and reading its files
    floors = results["datasets"]["many-small"]
    steps = {s["step"]: s for s in results["steps"][:4]}
    parts = {"backup": ("backup_floor_s", "source_read_floor_s"),
             "restore": ("restore_floor_s", "objects_read_floor_s"),
             "verify": ("restore_floor_s", "objects_read_floor_s")}
    for name, adds in parts.items():
        figures = dict(floors, **steps[name])
        assert all(figures[part] > 0 for part in ("start_floor_s",) + adds)
        assert steps[name]["bound_s"] == pytest.approx(
            floors["start_floor_s"] + sum(figures[part] for part in adds))
        assert steps[name]["bound_ratio"] == pytest.approx(
            steps[name]["wall_s"] / steps[name]["bound_s"])
        floor = steps[name]["wall_s"] / steps[name]["floor_ratio"]
        assert steps[name]["bound_floor_ratio"] == pytest.approx(steps[name]["bound_s"] / floor)
    assert all(math.isnan(s["bound_s"]) for s in results["steps"]
               if s["step"] not in parts)          # no-change and the history steps
    backup = next(s for s in results["steps"] if s["step"] == "backup")
    # the tool, its 2 workers and, when the sampler saw it, the helper that walks the source
    assert len(backup["process_peaks_mb"]) in (3, 4)
    assert sum(map(whole_bytes, backup["process_peaks_mb"])) >= whole_bytes(backup["peak_mb"]) > 0
    assert [(p["mode"], p["entries"]) for p in results["planner"]] == [
        ("held", 20_000), ("streamed", 20_000)]
    assert not any("error" in p for p in results["planner"])


def test_the_benchmark_bound_is_local_only_and_its_reading_is_shared_by_bytes():
    """No bound on S3 (the server does part of the work) nor for steps without one; the
    read floor's processes get shares of about the same bytes, every file once."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench
    floor = {"start_floor_s": 0.5, "backup_floor_s": 4.0, "restore_floor_s": 2.0,
             "source_read_floor_s": 0.25}
    assert bench.step_bound("backup", "local", floor, 0.125) == 4.75
    assert bench.step_bound("verify", "local", floor, 0.125) == 2.625
    assert bench.step_bound("restore", "local", floor, 0.125) == 2.625
    for step, target in (("backup", "s3"), ("verify", "s3"), ("no-change", "local")):
        assert math.isnan(bench.step_bound(step, target, floor, 0.125))
    files = [("big", 100), ("a", 40), ("b", 30), ("c", 30), ("d", 1)]
    parts = bench.shares(files, 2)
    assert sorted(sum(parts, [])) == sorted(path for path, _ in files)
    assert sorted(sum(dict(files)[path] for path in part) for part in parts) == [100, 101]


def test_the_monitoring_examples_match_what_the_tool_sends(local_tool, ping_server):
    """The webhook example (docs/MONITORING.md) has exactly the fields a backup's webhook
    has, and the metrics table names every metric."""
    monitoring = (ROOT / "docs" / "MONITORING.md").read_text(encoding="utf-8")
    example = json.loads(re.search(r"```json\n(.*?)```", monitoring, re.S).group(1))
    local_tool.set(NOTIFY_URL=ping_server.url("/hook"), BACKUP_PROCESSES="many")
    assert local_tool()[0] == 2                    # a configuration error, reported
    sent = ping_server.requests[0].json()
    assert set(sent) == set(example)
    assert example["kind"] == "backup" and example["status"] == "failure"
    for name, _ in esb.METRICS:
        assert f"`{name}" in monitoring


def test_every_document_the_repository_cites_is_in_it():
    """A clone can follow every reference: each document (`docs/<NAME>.md`, or a bare name:
    at the top or in docs/) named in the code, the tests or the documents, and each relative link of a
    document (to a file or folder, its #anchor dropped), is in the repository."""
    sources = [ROOT / "encrypted_s3_backup.py", ROOT / "README.md", ROOT / "CONTRIBUTING.md",
               *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "tests").glob("*.py")),
               *sorted((ROOT / "examples").rglob("*.md"))]
    missing, cited = [], set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        for name in re.findall(r"\b((?:docs/)?[A-Z][A-Z_]*\.md)\b", text):
            cited.add(name)
            if not ((ROOT / name).exists() or (ROOT / "docs" / name).exists()):
                missing.append(f"{source.name}: {name}")
        if source.suffix == ".md":
            for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
                if "://" in link or link.startswith("mailto:"):
                    continue
                cited.add(link)
                if not (source.parent / link).exists():
                    missing.append(f"{source.name}: {link}")
    assert {"docs/FORMAT.md", "docs/PERFORMANCE.md", "CONTRIBUTING.md"} <= cited
    assert not missing, f"cited but not in the repository: {missing}"
