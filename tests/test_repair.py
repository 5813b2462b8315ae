"""--verify --repair: objects a verify finds damaged are made again from their unchanged
source files (the new object first, then the damaged one removed); the rest stay failed,
with why.  The plain --verify writes nothing."""

import pytest
from conftest import esb, snapshot

MTIME = 1_700_000_000
FILES = {f"d/f{i}.txt": b"content %d " % i * (300 * i + 1) for i in range(5)}


def damage(tool, path, how):
    """Damage the object of source file ``path`` on the local destination: ``junk``
    overwrites it, ``cut`` keeps only its first 10 bytes (a half-written object)."""
    key = next(key for key in tool.keys() if esb.decode_name(key, tool.codec()).path == path)
    target = tool.dest / key
    target.write_bytes(b"junk" * 50 if how == "junk" else target.read_bytes()[:10])
    return key


@pytest.mark.parametrize("encrypt_filenames", [False, True])
def test_repair_uploads_again_what_is_damaged_and_says_what_it_cannot(make_tool,
                                                                      encrypt_filenames):
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    damage(tool, "d/f1.txt", "junk")
    damage(tool, "d/f2.txt", "cut")
    damage(tool, "d/f3.txt", "junk")
    (tool.src / "d/f3.txt").unlink()                              # its source is gone
    tool.write("d/f4.txt", FILES["d/f4.txt"].upper(), MTIME)      # same size and mtime
    damage(tool, "d/f4.txt", "junk")                              # but not the same content

    before = snapshot(tool.dest)
    code, out, err = tool("--verify")                    # the plain verify writes nothing
    assert code == 1 and err.count("FAILED verify") == 4 and snapshot(tool.dest) == before

    code, out, err = tool("--verify", "--repair")
    assert code == 1 and "2 repaired" in out and "1 failed" not in out, (out, err)
    assert "4 verified" not in out and "2 failed" in out, out
    assert "FAILED repair d/f3.txt: not repaired: its source file is gone" in err, err
    assert "FAILED repair d/f4.txt: not repaired: its source file's content changed" in err
    assert len(tool.keys()) == 5                         # each damaged one replaced, not added

    code, out, err = tool("--verify")
    failed = sorted(line.split()[3] for line in err.splitlines() if "FAILED verify" in line)
    assert code == 1 and failed == ["d/f3.txt:", "d/f4.txt:"], err
    code, out, err = tool("--restore")
    restored = tool.restored()
    assert {rel: restored[rel] for rel in ("d/f0.txt", "d/f1.txt", "d/f2.txt")} == {
        rel: FILES[rel] for rel in ("d/f0.txt", "d/f1.txt", "d/f2.txt")}


def test_repair_exits_0_when_everything_is_repaired_and_needs_src(make_tool):
    tool = make_tool()
    for rel, data in FILES.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    damage(tool, "d/f0.txt", "cut")
    code, out, err = tool("--verify", "--repair")
    assert code == 0 and "1 repaired" in out and "0 failed" in out, (out, err)
    assert tool("--restore")[0] == 0 and tool.restored() == FILES

    tool.set(SRC_LOCAL_PATH=tool.tmp / "no-such-folder")     # checked before the verify
    code, out, err = tool("--verify", "--repair")
    assert code == 2 and "no-such-folder" in err and "verify done" not in out, err
    tool.set(SRC_LOCAL_PATH=None)
    code, out, err = tool("--verify", "--repair")
    assert code == esb.EXIT_USAGE == 2 and "src is missing" in err, err
    assert tool("--verify")[0] == 0                      # the plain verify needs no src


def test_repair_on_s3_with_encrypted_names(make_tool, s3_bucket):
    """The request scheduler's way (small objects on S3): the new object gets a new
    encrypted name, and the damaged one, cut short, is removed once it is stored."""
    tool = make_tool(s3_bucket, encrypt_filenames=True)
    small = {rel: FILES[rel] for rel in ("d/f0.txt", "d/f1.txt", "d/f2.txt")}
    for rel, data in small.items():
        tool.write(rel, data, MTIME)
    assert tool()[0] == 0
    codec, client = tool.codec(), s3_bucket.client
    key = next(k for k in tool.keys() if esb.decode_name(k, codec).path == "d/f1.txt")
    body = client.get_object(Bucket=s3_bucket.name, Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket.name, Key=key, Body=body[:len(body) // 2])
    code, out, err = tool("--verify", "--repair")
    assert code == 0 and "1 repaired" in out and "FAILED verify d/f1.txt" in err, (out, err)
    keys = tool.keys()
    assert key not in keys and len(keys) == 3
    assert tool("--verify")[0] == 0
    assert tool("--restore")[0] == 0 and tool.restored() == small
