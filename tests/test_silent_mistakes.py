"""One mistake must not lose data or pass in silence (issue 26): a typo in a setting stops
the run, a restore that selects nothing is an error, a mass change kept as history alerts,
a bucket created or a listing failure is said.  Each through the command line, as users
run it, with the destination (and restore folder) checked to be untouched where nothing
should be written."""

import json
import os

import pytest
from conftest import esb, snapshot, tree

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
