"""Scale: listings walked in key order as they come, or held as compact columns.

The planner's decisions must not depend on how the listings reached it (plan_three_ways,
used by every planner test, checks that for each case); these tests pin down the parts:
key order of a local walk, the reordering into plan order, the Listing columns, the
fallback when a storage does not list in order, and that a walked run holds no listing.
"""

import datetime
import pickle
import random
import tracemalloc

import pytest
from conftest import esb, plan_three_ways, tree
from hypothesis import assume, given, settings
from hypothesis import strategies as st

TODAY = datetime.date(2026, 3, 10)
MTIME = 1_700_000_000

# Paths whose keys and object keys sort apart: "p" and "p.x" (an object key of "p" has
# ".<mtime>..." where one of "p.x" has ".x"), a folder "p.d" beside a file "p.d.txt", "p-"
# and "p0" either side of "p/", and a character above ASCII.
TRICKY = ["p", "p.x", "p.x.y", "p.d/q", "p.d.txt", "p-", "p0", "q/p", "q/p.0", "q/p.z",
          "q.", "q0/a", "é", "Z.txt", "a/b/c.1", "a/b.c/d", "a/b/c"]


def name_of(path, mtime=MTIME, size=3, deleted=0, version=False, md5=None):
    md5 = md5 or esb.hashlib.md5(path.encode()).digest()
    return esb.BackupName(path, mtime, size, md5, deleted, version)


def stored(name):
    return esb.Stored(None, name.size + 48, name)


# ----------------------------------------------------------------------------------------
# A local walk comes in key order
# ----------------------------------------------------------------------------------------

def test_a_local_walk_lists_in_key_order(tmp_path):
    for path in TRICKY:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    keys = [e.key for e in esb.LocalStorage(str(tmp_path)).list_files(esb.ListReport())]
    assert keys == sorted(TRICKY)


def test_a_local_walk_skips_a_folder_without_entering_it(tmp_path):
    for path in ("a/x", "a.txt", "b/y", "b0"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    seen = []

    def skip(key):
        seen.append(key)
        return key == "a/"
    keys = [e.key for e in esb.LocalStorage(str(tmp_path)).list_files(esb.ListReport(), skip)]
    assert keys == ["a.txt", "b/y", "b0"]
    assert "a/x" not in seen


# ----------------------------------------------------------------------------------------
# Key order -> plan order
# ----------------------------------------------------------------------------------------

def test_objects_in_key_order_come_out_in_plan_order():
    names = [name_of(p, mtime=m) for p in TRICKY for m in (MTIME, 36 ** 5, 1)]
    keys = sorted(esb.format_plain_name(n) + esb.OBJECT_SUFFIX for n in names)
    report = esb.ListReport()
    out = list(esb.in_plan_order(esb.listed_objects(
        (esb.Entry(k, 10, 0) for k in keys), esb.Codec(), report), "dest"))
    assert [key for key, _ in out] == sorted(key for key, _ in out)
    assert sorted(obj.name for _, obj in out) == sorted(names)
    assert [key for key, _ in out] == [obj.name.path + "." for _, obj in out]
    assert keys != sorted(keys, key=lambda k: esb.parse_name(k, esb.Codec()).path)  # (the
    # case is a real one: key order is not path order here)


def test_a_name_that_is_not_ours_is_reported_while_walking():
    good = esb.format_plain_name(name_of("a")) + esb.OBJECT_SUFFIX
    report = esb.ListReport()
    out = list(esb.in_plan_order(esb.listed_objects(
        [esb.Entry("a.not.a.name.enc", 5, 0), esb.Entry(good, 5, 0)], esb.Codec(), report),
        "dest"))
    assert [obj.name.path for _, obj in out] == ["a"]
    assert len(report.bad_names) == 1 and "'a.not.a.name.enc' is not a backup name" in \
        report.bad_names[0]


def test_a_little_disorder_waiting_in_the_buffer_comes_out_in_order():
    out = esb.in_plan_order(esb.listed_files(esb.Entry(k, 1, 1) for k in ["b", "a"]), "src")
    assert [key for key, _ in out] == ["a.", "b."]


@pytest.mark.parametrize("keys", [["a", "c", "d", "b"], ["a/x", "a/y", "a/z", "a/w"],
                                  ["a/b", "b.txt", "c", "a/c"]])
def test_a_listing_out_of_key_order_is_found_out(keys):
    with pytest.raises(esb.OutOfOrder) as caught:
        list(esb.in_plan_order(esb.listed_files(esb.Entry(k, 1, 1) for k in keys), "src"))
    assert caught.value.side == "src"


# ----------------------------------------------------------------------------------------
# Any layout plans the same, however the listings came
# ----------------------------------------------------------------------------------------

segment = st.text("ab.-0/é", min_size=1, max_size=4).filter(
    lambda s: "/" not in s and s not in (".", ".."))
path_strategy = st.lists(segment, min_size=1, max_size=3).map("/".join)
object_strategy = st.tuples(st.sampled_from([MTIME, MTIME + 1, 1, 36 ** 4]),
                            st.sampled_from([0, 3, 40]),
                            st.sampled_from([0, 20260101, 20260309]), st.booleans(),
                            st.sampled_from([b"1" * 16, b"2" * 16]))


@settings(max_examples=150, deadline=None)    # (every CI run tries 150 new layouts)
@given(layout=st.dictionaries(path_strategy, st.tuples(
    st.none() | st.tuples(st.sampled_from([0, 3, 40]), st.sampled_from([MTIME, 1])),
    st.lists(object_strategy, max_size=3)), max_size=8),
    keep_days=st.sampled_from([None, 0, 30]), versions_keep_days=st.sampled_from([0, 30]))
def test_any_layout_plans_the_same_walked_held_or_sorted(layout, keep_days,
                                                         versions_keep_days):
    paths = set(layout)
    assume(not any(other.startswith(p + "/") for p in paths for other in paths))
    source, objects = [], {}
    for path, (file, listed) in layout.items():
        if file:
            source.append(esb.Entry(path, *file))
        for mtime, size, deleted, version, md5 in listed:
            assume(deleted or not version)
            name = name_of(path, mtime, size, deleted, version, md5)
            objects[esb.format_plain_name(name) + esb.name_suffix(name)] = name
    random.Random(len(objects)).shuffle(source)
    plan_three_ways(source, [stored(n) for n in objects.values()], TODAY, keep_days, (),
                    versions_keep_days)


# ----------------------------------------------------------------------------------------
# Listing: the compact columns
# ----------------------------------------------------------------------------------------

def test_a_listing_gives_back_what_it_was_given():
    listing = esb.Listing()
    given_ = [("a/é.txt", 1, 2, ""), ("bad-\udcff-byte", 3, 4, ""), ("", 0, 0, ""),
              ("k", 5, 6, "a.1.2.3.0.enc")]
    for key, size, mtime, name in given_:
        listing.append(key, size, mtime, name=name)
    again = pickle.loads(pickle.dumps(listing))
    for held in (listing, again):
        assert len(held) == 4
        assert [(held.key(i), held.sizes[i], held.mtimes[i], held.name(i))
                for i in range(4)] == given_
        assert list(held) == [esb.Entry(k, s, m) for k, s, m, _ in given_]
    both = esb.Listing()
    both.append("first", 9)
    both.extend(listing)
    assert [both.key(i) for i in range(5)] == ["first"] + [k for k, *_ in given_]
    assert [both.name(i) for i in range(5)] == ["", "", "", "", "a.1.2.3.0.enc"]


@pytest.mark.parametrize("run", [1, 3, 1000])
def test_a_listing_sorts_in_runs_as_one_sort(monkeypatch, run):
    monkeypatch.setattr(esb, "SORT_RUN", run)
    keys = [f"{random.Random(i).random():.6f}" for i in range(50)] + ["p", "p.x", "p/q"]
    listing = esb.Listing()
    for key in keys:
        listing.append(key, 1, 1)
    assert [e.key for _, e in listing.files_in_order()] == sorted(keys)


def test_held_objects_sort_by_their_plaintext_path():
    names = [name_of(p) for p in TRICKY]
    listing = esb.Listing()
    for i, name in enumerate(reversed(names)):   # keys that say nothing: encrypted names
        listing.append(f"k{i:03d}.enc", 10, name=esb.format_plain_name(name) + ".enc")
    out = list(listing.objects_in_order())
    assert [obj.name.path for _, obj in out] == sorted(TRICKY, key=lambda p: p + ".")
    assert all(obj.key.startswith("k") for _, obj in out)


# ----------------------------------------------------------------------------------------
# Runs: in order, out of order, and what a walked run holds
# ----------------------------------------------------------------------------------------

def write_tricky(tool):
    for i, path in enumerate(TRICKY):
        tool.write(path, f"{path}\n".encode(), MTIME + i)


@pytest.mark.parametrize("encrypt_filenames", [False, True])
def test_a_storage_that_lists_out_of_order_is_sorted_instead(make_tool, monkeypatch,
                                                             encrypt_filenames):
    """Both sides (the source and the destination are local folders here) list their first
    key last: the walk finds it out and the run plans from sorted columns instead."""
    tool = make_tool(encrypt_filenames=encrypt_filenames)
    write_tricky(tool)
    assert tool()[0] == 0
    listing = esb.LocalStorage.list_files

    def first_last(self, report, skip=None):
        keys = list(listing(self, report, skip))
        return iter(keys[1:] + keys[:1])
    monkeypatch.setattr(esb.LocalStorage, "list_files", first_last)
    (tool.src / "p.x").unlink()
    tool.write("new.txt", b"new")
    code, out, err = tool()
    assert code == 0, out + err
    assert f"{tool.src} does not list in key order" in out + err
    assert "1 marked deleted" in out + err and "1 uploaded" in out + err
    assert f" {len(TRICKY) - 1} unchanged" in out + err
    monkeypatch.setattr(esb.LocalStorage, "list_files", listing)
    code, out, err = tool()
    assert code == 0 and "does not list in key order" not in out + err
    assert f" {len(TRICKY)} unchanged" in out + err
    assert tool("--restore")[0] == 0
    assert tool.restored() == tree(tool.src)


def test_tricky_names_to_s3_plan_the_same_as_to_a_folder(make_tool, s3_bucket):
    tool = make_tool(s3_bucket)
    write_tricky(tool)
    assert tool()[0] == 0
    (tool.src / "p").unlink()
    tool.write("q/p.z", b"changed", MTIME + 99)
    code, out, err = tool()
    assert code == 0, out + err
    assert "1 marked deleted" in out and "1 uploaded" in out
    assert f" {len(TRICKY) - 2} unchanged" in out
    code, out, _ = tool()
    assert code == 0 and f" {len(TRICKY) - 1} unchanged" in out
    assert tool("--restore")[0] == 0
    assert tool.restored() == tree(tool.src)


def test_a_walked_plan_holds_no_listing():
    """Planning 20,000 walked files peaks at a small fraction of what holding the same
    listings as objects takes (the tracemalloc peak, Python's own allocations: about 12 kB
    against 7.7 MB; the walk's peak does not grow with the count, 12 kB at 60,000 too)."""
    count = 20_000

    def files():
        for i in range(count):
            yield esb.Entry(f"d{i // 100:04d}/f{i:06d}", i, MTIME)

    def objects():
        for i in range(count):
            name = esb.BackupName(f"d{i // 100:04d}/f{i:06d}", MTIME, i, bytes(16))
            yield esb.Entry(esb.format_plain_name(name) + esb.OBJECT_SUFFIX, i + 48, 0)

    tracemalloc.start()
    try:
        plan = esb.plan_walked(
            esb.in_plan_order(esb.listed_files(files()), "src"),
            esb.in_plan_order(esb.listed_objects(objects(), esb.Codec(), esb.ListReport()),
                              "dest"), TODAY, None)
        walked = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        held = list(files()), list(objects())
        holding = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert plan.unchanged == count and not (plan.uploads or plan.renames or plan.removes)
    assert len(held[0]) == count
    assert walked * 20 < holding, (walked, holding)
