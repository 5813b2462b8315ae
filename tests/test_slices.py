"""One backup split into slices (--slice I/N, issue 30): N processes, as the pods of a
Kubernetes Indexed Job or the tasks of an AWS Batch array job would be, each doing the work
of the paths a hash gives it; together they do what one run does.  Also the hash itself,
auto/N from the schedulers' variables, the guards per slice, the slice in the reports, and
the example manifests in examples/."""

import json
import os
import random
import re
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, esb, put_file, tree
from test_crash import LocalDest, S3Dest, kill_after, reaper, start, tool_env, wait_for  # noqa: F401
from test_crash import run as run_script

MTIME = 1_700_000_000


def source(root, count=12, seed=30):
    """``count`` small files in a few folders (names with a space and non-ASCII too)."""
    rng = random.Random(seed)
    for i in range(count):
        put_file(root / f"d{i % 3}/f é {i}.txt", rng.randbytes(rng.randrange(1, 300)),
                 MTIME + i)


def expected_keys(root):
    """The object names one unsliced run makes of ``root`` (plaintext names)."""
    return sorted(esb.format_plain_name(esb.BackupName(path, mtime, size, md5)) + ".enc"
                  for path, (size, mtime, md5) in tree(root, "size+mtime+md5").items())


def live_keys(dest):
    return sorted(key for key in dest.listing() if not esb.is_temp_name(os.path.basename(key)))


def run_slices(env, parts, *argv):
    """Slices 1..parts of a run, all at once in separate processes: their outputs."""
    procs = [start(env, "--slice", f"{i}/{parts}", *argv, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True) for i in range(1, parts + 1)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        outs.append(out)
    return outs


def summary(out):
    return next(line for line in out.splitlines() if " done: " in line)


def count(out, word):
    """A figure of the summary line (0 when the line leaves it out)."""
    found = re.search(rf"(\d+) {word}", summary(out))
    return int(found[1]) if found else 0


@pytest.mark.parametrize("where, parts", [("s3", 1), ("s3", 3), ("s3", 7), ("local", 3)])
def test_concurrent_slices_do_what_one_run_does(tmp_path, request, where, parts):
    dest = LocalDest(tmp_path / "dest") if where == "local" else \
        S3Dest(request.getfixturevalue("s3_bucket"))
    src, restore = tmp_path / "src", tmp_path / "restore"
    source(src)
    env = tool_env(src, dest, restore, tmp_path / "scratch", BACKUP_PROCESSES=1,
                   RESTORE_PROCESSES=1)
    outs = run_slices(env, parts)
    assert live_keys(dest) == expected_keys(src)     # the same objects, the same names
    assert sum(count(out, "uploaded") for out in outs) == 12
    assert all(f"backup of slice {i}/{parts} done" in summary(out)
               for i, out in enumerate(outs, 1))
    before = dest.listing()
    outs = run_slices(env, parts)                    # no change: nothing moves
    assert dest.listing() == before
    assert all("uploaded" not in summary(out) for out in outs)
    assert sum(count(out, "unchanged") for out in outs) == 12
    done = run_script(env, "--restore")              # the whole destination, unsliced
    assert done.returncode == 0, done.stderr
    assert tree(restore) == tree(src)


def test_a_restore_and_a_verify_of_each_slice_together_are_the_whole(tmp_path):
    src, restore, dest = tmp_path / "src", tmp_path / "restore", LocalDest(tmp_path / "dest")
    source(src)
    env = tool_env(src, dest, restore, tmp_path / "scratch", BACKUP_PROCESSES=1,
                   RESTORE_PROCESSES=1)
    assert run_script(env).returncode == 0
    outs = run_slices(env, 3, "--restore")
    assert tree(restore) == tree(src)
    assert sum(count(out, "restored") for out in outs) == 12
    outs = run_slices(env, 3, "--verify")
    checked = [line.split(" OK ", 1)[1] for out in outs for line in out.splitlines()
               if " OK " in line]
    assert sorted(checked) == sorted(tree(src))


def share(items, part, parts):
    """The object keys (a list) or files ({path: ...}) of the paths of slice part/parts."""
    if isinstance(items, dict):
        return {path: v for path, v in items.items() if slice_of(path, parts) == part}
    return [key for key in items if slice_of(esb.parse_plain_name(key[:-4]).path, parts) == part]


def slice_of(path, parts):
    return esb.key_slice(path, parts) + 1


def test_deletions_and_changes_are_the_owners_alone(local_tool):
    tool = local_tool
    for i in range(12):
        tool.write(f"f{i}.txt", b"%d" % i)
    for i in (1, 2, 3):
        assert tool("--slice", f"{i}/3")[0] == 0
    gone = "f0.txt"
    changed = next(f"f{i}.txt" for i in range(1, 12)
                   if slice_of(f"f{i}.txt", 3) != slice_of(gone, 3))
    (tool.src / gone).unlink()
    tool.write(changed, b"new content")
    before = tool.objects()
    others = {1, 2, 3} - {slice_of(gone, 3), slice_of(changed, 3)}
    for i in others:                                 # neither path is theirs: left alone
        code, out, _ = tool("--slice", f"{i}/3")
        assert code == 0 and tool.objects() == before
    code, out, _ = tool("--slice", f"{slice_of(gone, 3)}/3")
    assert code == 0 and "1 marked deleted" in out
    assert tool.objects()[gone].deleted and tool.objects()[changed] == before[changed]
    code, out, _ = tool("--slice", f"{slice_of(changed, 3)}/3")
    assert code == 0 and "1 uploaded" in out
    assert tool.objects()[changed].size == len(b"new content")
    assert tool()[1].count("0 failed") == 1 and "uploaded" not in summary(tool()[1])


def test_the_mass_delete_guard_judges_a_slice_by_its_own_share(local_tool):
    tool = local_tool
    names = [f"f{i}.txt" for i in range(40)]
    for name in names:
        tool.write(name, b"x")
    assert tool()[0] == 0
    mine = [name for name in names if slice_of(name, 3) == 3]
    assert 10 < len(mine) <= 20           # of 40: a whole run would not call it mass
    for name in mine:
        (tool.src / name).unlink()
    code, _, err = tool("--slice", "3/3")
    assert code == 2 and f"refusing to mark deleted or remove {len(mine)} of {len(mine)}" in err
    assert all(not name.deleted for name in tool.objects().values())
    code, out, _ = tool("--slice", "2/3")     # the other slices' files are all there
    assert code == 0
    code, out, _ = tool("--slice", "3/3", "--allow-mass-delete")
    assert code == 0 and f"{len(mine)} marked deleted" in out


@pytest.mark.usefixtures("reaper")
def test_a_killed_slice_run_again_repairs_its_share(tmp_path):
    src, restore, dest = tmp_path / "src", tmp_path / "restore", LocalDest(tmp_path / "dest")
    source(src)
    big = next(f"big{i}.bin" for i in range(100) if slice_of(f"big{i}.bin", 3) == 2)
    put_file(src / big, random.Random(1).randbytes(12 << 20), MTIME)
    env = tool_env(src, dest, restore, tmp_path / "scratch")
    proc = start(env, "--slice", "2/3")
    wait_for(lambda: any(esb.is_temp_name(os.path.basename(k)) for k in dest.listing()),
             what="a temporary file of the big upload")
    kill_after(proc, 0)
    assert not any(key.startswith(big) for key in live_keys(dest))   # killed mid-run
    done = run_script(env, "--slice", "2/3")
    assert done.returncode == 0, done.stderr
    assert live_keys(dest) == share(expected_keys(src), 2, 3)    # no temporary file left
    assert run_script(env, "--restore").returncode == 0
    assert tree(restore) == share(tree(src), 2, 3)


def test_two_runs_of_the_same_slice_at_once_do_no_damage(tmp_path):
    src, restore, dest = tmp_path / "src", tmp_path / "restore", LocalDest(tmp_path / "dest")
    source(src)
    env = tool_env(src, dest, restore, tmp_path / "scratch", BACKUP_PROCESSES=1)
    procs = [start(env, "--slice", "2/3", stderr=subprocess.PIPE, text=True) for _ in "ab"]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode in (0, 1), err      # at worst a file found taken by the other
    assert run_script(env, "--slice", "2/3").returncode == 0
    assert live_keys(dest) == share(expected_keys(src), 2, 3)    # one object per file
    assert run_script(env, "--restore").returncode == 0
    assert tree(restore) == share(tree(src), 2, 3)


# ======================================================================== the hash

def test_the_hash_is_stable_known_answers():
    # The first 8 bytes of the SHA-256 of the UTF-8 path, big-endian, modulo N.  Checked with
    # coreutils and bc: printf %s 'a/b.txt' | sha256sum starts with 5550000d3b1cf1ff, and
    # echo 'ibase=16; 5550000D3B1CF1FF % 3' | bc prints 2 (slice 3 of 3).
    answers = {"a/b.txt": (2, 0, 1, 591), "docs/report 2024.pdf": (0, 0, 6, 156),
               "π/ü.txt": (0, 1, 3, 743)}
    for path, slices in answers.items():
        assert tuple(esb.key_slice(path, n) for n in (3, 7, 10, 1000)) == slices
    assert esb.Subset(3, 3).owns("a/b.txt") and not esb.Subset(1, 3).owns("a/b.txt")


@settings(max_examples=40, deadline=None)
@given(paths=st.sets(st.text(min_size=1, max_size=20), max_size=20), parts=st.integers(1, 12))
def test_slices_are_disjoint_and_cover_every_path(paths, parts):
    owners = {path: [i for i in range(1, parts + 1) if esb.Subset(i, parts).owns(path)]
              for path in paths}
    assert all(len(found) == 1 for found in owners.values())


def test_slices_split_evenly():
    paths = [f"folder{i % 17}/file{i}.dat" for i in range(7000)]
    for parts in (3, 7):
        counts = [sum(esb.Subset(i, parts).owns(p) for p in paths) for i in range(1, parts + 1)]
        assert max(counts) <= 1.1 * len(paths) / parts


# ======================================================================== the command line

@pytest.mark.parametrize("environ, part, via", [
    ({"JOB_COMPLETION_INDEX": "0"}, 1, "JOB_COMPLETION_INDEX"),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "4"}, 5, "AWS_BATCH_JOB_ARRAY_INDEX"),
    ({"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_MIN": "10"}, 3, "SLURM_ARRAY_TASK_ID"),
    ({"SLURM_ARRAY_TASK_ID": "2"}, 3, "SLURM_ARRAY_TASK_ID"),
])
def test_auto_takes_the_index_from_the_scheduler(environ, part, via):
    assert esb.parse_slice("auto/5", environ) == esb.Subset(part, 5, via=via)


@pytest.mark.parametrize("text, environ, said", [
    ("3/2", {}, "slice 3 of 2 does not exist"),
    ("0/0", {}, "is not I/N"),
    ("0/3", {}, "slice 0 of 3 does not exist"),
    ("x/3", {}, "is not I/N"),
    ("1/x", {}, "is not I/N"),
    ("1/2/3", {}, "is not I/N"),
    ("auto/3", {}, "no job array index is set (JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, "
                   "SLURM_ARRAY_TASK_ID)"),
    ("auto/3", {"JOB_COMPLETION_INDEX": "3"}, "JOB_COMPLETION_INDEX='3' is not an index "
                                              "from 0 to 2"),
    ("auto/3", {"AWS_BATCH_JOB_ARRAY_INDEX": "-1"}, "is not an index from 0 to 2"),
    ("auto/3", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "2"}, "less "
                                                                          "SLURM_ARRAY_TASK_MIN"),
])
def test_bad_slices_are_a_usage_error_in_one_line(text, environ, said, monkeypatch, capsys):
    for name in (*esb.SLICE_VARIABLES, "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as done:
        esb.main(["--slice", text])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "error: --slice: " in err and said in err and len(err.splitlines()[-1]) < 200


@pytest.mark.parametrize("argv, said", [
    (["--list", "--slice", "1/2"], "--slice is for a backup, --restore or --verify"),
    (["--verify", "--subset", "1/2", "--slice", "1/2"], "--subset is the older name"),
])
def test_slice_with_what_it_is_not_for(argv, said, capsys):
    with pytest.raises(SystemExit) as done:
        esb.parse_args(argv)
    assert done.value.code == 2 and said in capsys.readouterr().err


def test_auto_says_which_variable_it_used(local_tool, monkeypatch):
    local_tool.write("a.txt", b"a")
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    code, out, _ = local_tool("--slice", "auto/2")
    assert code == 0 and "(slice 2/2, from AWS_BATCH_JOB_ARRAY_INDEX" in out


# ======================================================================== reports

def test_the_metrics_file_keeps_each_slice_apart(tmp_path):
    path = tmp_path / "backup.prom"
    for part, code in (("1/2", 0), ("2/2", 1), ("", 0)):
        esb.write_metrics(str(path), "backup", esb.metric_samples(
            "backup", code, 1.0, 2.0, {"uploaded": 3}, part), part)
    samples = esb.read_metrics(str(path))
    assert samples["last_exit_code", (("kind", "backup"), ("slice", "1/2"))] == 0
    assert samples["last_exit_code", (("kind", "backup"), ("slice", "2/2"))] == 1
    assert samples["last_exit_code", (("kind", "backup"),)] == 0
    assert 'encrypted_s3_backup_last_exit_code{kind="backup",slice="2/2"} 1' in \
        path.read_text()


def test_the_webhook_and_ping_carry_the_slice(local_tool, ping_server):
    tool = local_tool
    tool.set(NOTIFY_URL=ping_server.url("/hook"), NOTIFY_ON="always",
             HEALTHCHECK_URL=ping_server.url("/ping"))
    tool.write("a.txt", b"a")
    assert tool("--slice", "2/3")[0] == 0
    hook = next(r for r in ping_server.requests if r.path.startswith("/hook"))
    data = hook.json()
    assert data["slice"] == "2/3" and "of slice 2/3" in data["title"]
    end = [r for r in ping_server.requests if r.path == "/ping"][-1]
    assert b"backup of slice 2/3 done" in end.body


# ======================================================================== examples

def read_simple_yaml(text):
    """The JSON-compatible subset of YAML the examples are written in: comments ("#" lines)
    and JSON.  (PyYAML is not a dependency.)"""
    return json.loads("\n".join(line for line in text.splitlines()
                                if not line.lstrip().startswith("#")))


def env_names(container):
    return {item["name"] for item in container.get("env", [])}


def test_the_kubernetes_indexed_job_is_wired():
    job = read_simple_yaml((ROOT / "examples/kubernetes/indexed-job.yaml").read_text())
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] >= spec["parallelism"] > 1
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    container, = pod["containers"]
    command = container["command"] + container.get("args", [])
    assert command[:2] == ["python3", "/app/encrypted_s3_backup.py"]
    assert "--slice" in command
    assert command[command.index("--slice") + 1] == f"auto/{spec['completions']}"
    assert esb.parse_slice(f"auto/{spec['completions']}", {"JOB_COMPLETION_INDEX": "0"})
    secret_refs = {ref["secretRef"]["name"] for ref in container.get("envFrom", [])}
    assert secret_refs, "the password and keys come from a Secret"
    names = env_names(container)
    known = set(esb.config_variables())
    assert names <= known | {"TZ"}, names - known
    assert {"SRC_S3_BUCKET", "DEST_S3_BUCKET"} <= names
    assert "ENCRYPTION_PASSWORD" not in names      # in the Secret, never in the manifest


def test_the_aws_batch_array_job_is_wired():
    folder = ROOT / "examples/aws-batch"
    definition = json.loads((folder / "job-definition.json").read_text())
    submit = json.loads((folder / "submit-job.json").read_text())
    size = submit["arrayProperties"]["size"]
    assert size > 1 and submit["jobDefinition"] == definition["jobDefinitionName"]
    container = definition["containerProperties"]
    command = container["command"]
    assert command[:2] == ["python3", "/app/encrypted_s3_backup.py"]
    assert command[command.index("--slice") + 1] == f"auto/{size}"
    names = {item["name"] for item in container.get("environment", [])}
    secrets = {item["name"] for item in container.get("secrets", [])}
    assert "ENCRYPTION_PASSWORD" in secrets and "ENCRYPTION_PASSWORD" not in names
    assert (names | secrets) <= set(esb.config_variables())
    assert definition["type"] == "container"
