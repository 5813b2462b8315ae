"""Memory discipline (issue 4): what keeps the process tree small, checked by behaviour.

The benchmark measures the figures; these tests pin down the mechanisms behind them:
one malloc arena per process (also in forked workers), codec work one at a time per
process while S3 requests overlap, codec buffers kept in the heap between files and given
back after a batch (beyond a little kept for the next), no boto3 in the parent process,
and multipart parts sent from the spool file instead of memory.
"""

import functools
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from conftest import PASSWORD, ROOT, SALT, esb, process_env, s3_config, s3_env, set_env

MiB = 1024 * 1024


# ---------------------------------------------------------------------- malloc arenas

ARENA_PROBE = r"""
import ctypes, os, sys, threading
sys.path.insert(0, sys.argv[2])
import encrypted_s3_backup as esb

def allocate_in_threads(count):
    # Threads alive at the same time, each allocating: by default each gets an arena.
    barrier = threading.Barrier(count)
    def work():
        barrier.wait()
        blocks = [bytearray(200_000) for _ in range(10)]
        barrier.wait()
    threads = [threading.Thread(target=work) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

if sys.argv[1] == "one":
    assert esb.one_malloc_arena()
allocate_in_threads(3)          # the parent's own threads (a pool's manager, its feeder)
pid = os.fork()
if pid == 0:                    # a forked worker with threads of its own
    allocate_in_threads(4)
    sys.stderr.flush()
    ctypes.CDLL(None).malloc_stats()      # one "Arena N:" block per arena, on stderr
    os._exit(0)
os.waitpid(pid, 0)
"""


def run_probe(code, *args, timeout=60):
    """Run ``code`` in a fresh Python with ``args`` as its arguments; it must exit 0."""
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def arenas_in_forked_child(mode):
    return run_probe(ARENA_PROBE, mode, ROOT).stderr.count("Arena ")


def test_one_malloc_arena_holds_in_a_forked_child_with_threads():
    assert arenas_in_forked_child("default") > 1       # the probe can see extra arenas
    assert arenas_in_forked_child("one") == 1


def test_main_asks_for_one_arena_before_anything_else(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(esb, "one_malloc_arena", lambda: calls.append("arena"))
    real_load = esb.load_config
    monkeypatch.setattr(esb, "load_config",
                        lambda *a, **k: calls.append("config") or real_load(*a, **k))
    (tmp_path / "src").mkdir()
    monkeypatch.setenv("SRC_LOCAL_PATH", str(tmp_path / "src"))
    monkeypatch.setenv("DEST_LOCAL_PATH", str(tmp_path / "dest"))
    monkeypatch.setenv("ENCRYPTION_PASSWORD", PASSWORD)
    assert esb.main(["--quiet"]) == 0
    assert calls[:2] == ["arena", "config"]


def test_every_job_gives_memory_back(monkeypatch, tmp_path):
    given = []
    monkeypatch.setattr(esb, "give_back_memory", lambda keep=0: given.append(keep))
    config = local_config(tmp_path, {"a.txt": b"a" * 1000, "b.txt": b"b"})
    monkeypatch.setattr(esb, "_WORKER", esb._Worker(config))
    batches = [esb.Batch((upload(config, "a.txt"),)),
               esb.Batch((upload(config, "b.txt"),), grouped=True)]
    for batch in batches:
        outcomes, _ = esb.in_worker(esb.run_batch, batch)
        assert [o.error for o in outcomes] == [""]
    assert given == [esb.KEEP_FREE] * 2


HEAP_BLOCK = 3 << 20      # a small file's xz encoder and read buffers: about 2.5 MiB

HEAP_PROBE_START = r"""
import ctypes, resource, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
"""

HEAP_FAULTS = HEAP_PROBE_START + r"""
libc.mallopt(-3, 128 << 10)          # glibc's thresholds as a process starts: blocks over
libc.mallopt(-1, 128 << 10)          # 128 KiB mapped alone, a heap top over it given back
if sys.argv[2] == "tuned":
    assert esb.keep_codec_buffers()
# Fill the holes the imports left in the heap with blocks never touched, so that no hole
# can serve the block below and hide what happens to it (mallinfo2: glibc 2.33 and later).
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
held = [libc.malloc(64 << 10) for _ in range(libc.mallinfo2().fordblks // (64 << 10) + 16)]
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
total = 0
for _ in range(10):
    block = libc.malloc(SIZE)
    start = faults()
    ctypes.memset(block, 0, SIZE)    # what liblzma does with its hash table
    total += faults() - start
    libc.free(block)
print(total)
"""


def heap_faults(mode):
    return int(run_probe(HEAP_FAULTS.replace("SIZE", str(HEAP_BLOCK)), ROOT, mode).stdout)


def test_keep_codec_buffers_keeps_them_on_pages_already_faulted_in():
    # A codec's buffers freed after each file and allocated again for the next: by default
    # their pages go back to the kernel and fault in again (zeroed) every file, which was
    # 136 faults a small file and 6 s of a 16 s one-process backup of 20,000 of them.
    pages = 10 * HEAP_BLOCK // 4096
    assert heap_faults("default") > pages // 2, "the probe no longer shows the problem"
    assert heap_faults("tuned") < pages // 5       # the first round's faults, no more


def codec_buffers_kept(worker, item):
    return esb.keep_codec_buffers.cache_info().currsize     # 1: called in this process


@pytest.mark.parametrize("processes", [2, 1])
def test_the_processes_that_run_codecs_keep_their_buffers(monkeypatch, tmp_path, processes):
    monkeypatch.setattr(esb, "keep_codec_buffers", functools.lru_cache(maxsize=1)(lambda: True))
    config = local_config(tmp_path, {"a.txt": b"a"})
    kept = []
    esb.run_in_pool(codec_buffers_kept, [1, 2], processes, config, kept.append)
    assert kept == [1, 1]


def key_misses_in_worker(worker, item):
    before = esb.derive_key.cache_info()
    worker.codec.key(worker.codec.salt)
    return before.currsize, esb.derive_key.cache_info().misses - before.misses


def test_forked_workers_inherit_the_key_derived_ahead(tmp_path):
    # Each worker derived the key on its first object: 60-90 ms of PBKDF2, every run.
    config = local_config(tmp_path, {"a.txt": b"a"}, ENCRYPTION_SALT="ab" * 16)
    esb.derive_key.cache_clear()
    config.codec.key_ahead()
    seen = []
    esb.run_in_pool(key_misses_in_worker, [1, 2, 3, 4], 2, config, seen.append)
    assert not esb._DERIVING                            # waited for before the fork
    assert seen == [(1, 0)] * 4             # the key in the cache they were forked with


_FORKS = []     # while a test appends a list: the derive threads alive at each fork


def _note_fork():
    if _FORKS:
        _FORKS[-1].append(sum(thread.name == "derive key" and thread.is_alive()
                              for thread in threading.enumerate()))


os.register_at_fork(before=_note_fork)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_no_fork_while_a_key_is_derived_ahead(request, make_tool, monkeypatch, where):
    # A fork copies only the forking thread: one copied while another was inside OpenSSL
    # or argon2 could find their locks taken.  The derivation here lasts until the run
    # waits for it (key_derived), so a fork that did not wait for it would see it alive.
    tool = make_tool(request.getfixturevalue("s3_bucket") if where == "s3" else None)
    files = {f"d{i}/f.txt": b"x" * 100 * (i + 1) for i in range(3)}
    files.update({f"big{i}.bin": os.urandom(esb.SMALL_FILE + i) for i in range(2)})
    for rel, data in files.items():         # (two big files: two jobs, so worker pools)
        tool.write(rel, data)
    real, ahead, real_derived, waited = esb.derive_key, [], esb.key_derived, threading.Event()

    def slow(*args):
        if threading.current_thread().name == "derive key":
            waited.wait(60)       # (a bound only for a run that never waits: it fails below)
            ahead.append(args)
        return real(*args)

    def key_derived():
        waited.set()
        real_derived()
        waited.clear()
    real.cache_clear()
    monkeypatch.setattr(esb, "derive_key", slow)
    monkeypatch.setattr(esb, "key_derived", key_derived)
    _FORKS.append([])
    try:
        assert tool()[0] == 0
        assert tool("--verify")[0] == 0
        assert tool("--restore")[0] == 0
        assert tool("--list")[0] == 0
        assert tool("--dry-run")[0] == 0
    finally:
        forks = _FORKS.pop()
    assert forks and not any(forks)         # forks there were, none beside a derivation
    assert len(ahead) == 3                  # backup, verify, restore; not --list, --dry-run
    assert tool.restored() == files


def test_a_worker_with_a_remote_storage_keeps_glibcs_thresholds(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(esb, "keep_codec_buffers", lambda: calls.append(1))
    worker = esb._Worker(local_config(tmp_path, {"a.txt": b"a"}))
    worker.runs_codecs()
    assert calls == [1]
    monkeypatch.setattr(worker.dest, "remote", True)     # as an S3 destination says
    worker.runs_codecs()
    assert calls == [1]


def test_a_worker_keeps_a_little_memory_between_batches_and_gives_back_more():
    probe = HEAP_PROBE_START + r"""
assert esb.keep_codec_buffers()
esb.give_back_memory()
def refaults(blocks):
    # a job's buffers (blocks of 2 MiB: in the heap) freed, the memory given back as after
    # a Batch, then the next job's buffers
    def job():
        held = [libc.malloc(2 << 20) for _ in range(blocks)]
        for block in held:
            ctypes.memset(block, 1, 2 << 20)
        for block in held:
            libc.free(block)
    job()
    esb.give_back_memory(esb.KEEP_FREE)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    job()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
small, large = esb.KEEP_FREE // (2 << 20) // 2, esb.KEEP_FREE // (2 << 20) * 2
print(esb.resident_bytes() is not None, refaults(small), refaults(large), large * 512)
"""
    known, *counts = run_probe(probe, ROOT).stdout.split()
    small, large, pages = map(int, counts)
    assert known == "True"                # Linux tells a process's resident memory
    assert small < 50                     # kept: no page faults again
    assert large > pages // 2             # given back


def test_give_back_memory_returns_an_encoders_freed_pages():
    probe = r"""
import random, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb
def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS:")) * 1024
rng = random.Random(1)
words = [bytes(rng.choices(b"abcdefghijklmnop", k=rng.randint(2, 9))) for _ in range(5000)]
data = b" ".join(rng.choices(words, k=400_000))[:2_000_000]
esb.give_back_memory()               # what the imports left free
start = rss()
compressor = esb.make_compressor("xz", len(data), 6, 6)   # about 22 MB of match finder
compressor.compress(data) + compressor.flush()
del compressor
kept = rss() - start                 # glibc keeps the freed pages for reuse ...
esb.give_back_memory()
print(kept, rss() - start)           # ... until they are given back
"""
    kept, left = map(int, run_probe(probe, ROOT).stdout.split())
    assert kept > 10 * 1000 * 1000, "the probe no longer shows the problem"
    assert left < 3 * 1000 * 1000


# ------------------------------------------------ threads: S3 overlaps, codecs do not

def local_config(tmp_path, files, **extra):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    env = {"SRC_LOCAL_PATH": str(src), "DEST_LOCAL_PATH": str(tmp_path / "dest"),
           "RESTORE_LOCAL_PATH": str(tmp_path / "restore"), "ENCRYPTION_PASSWORD": PASSWORD}
    env.update(extra)
    (tmp_path / "dest").mkdir(exist_ok=True)
    return esb.load_config(None, env)[0]


def upload(config, name):
    info = os.stat(os.path.join(config.src.local_path, name))
    return esb.Upload(name, info.st_size, int(info.st_mtime))


class Overlap:
    """Counts how many calls of a wrapped function run at the same moment.  With
    ``await_others`` each call, before it goes on, waits (up to WAIT_LIMIT seconds) until
    that many calls are running at once: calls that can overlap then always do, however
    slow the machine, and calls that cannot make the count stay below it."""

    WAIT_LIMIT = 10.0

    def __init__(self, call, await_others=1, pause=0.0):
        self.call, self.await_others, self.now, self.most = call, await_others, 0, 0
        self.pause = pause            # a wider window for calls that should never overlap
        self.changed = threading.Condition()

    def __call__(self, *args, **kwargs):
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.most >= self.await_others, self.WAIT_LIMIT)
        try:
            time.sleep(self.pause)
            return self.call(*args, **kwargs)
        finally:
            with self.changed:
                self.now -= 1


def test_s3_batch_overlaps_requests_but_runs_one_codec_at_a_time(monkeypatch, tmp_path,
                                                                 s3_bucket):
    files = {f"f{i}.txt": os.urandom(20_000) for i in range(8)}
    config = local_config(tmp_path, files, DEST_LOCAL_PATH="", **s3_env("DEST", s3_bucket))
    worker = esb._Worker(config)
    monkeypatch.setattr(esb, "_WORKER", worker)
    encodes = Overlap(esb.encode, pause=0.05)
    monkeypatch.setattr(esb, "encode", encodes)
    puts = Overlap(worker.dest.wire.put, await_others=2)   # small objects: the wire's PUTs
    monkeypatch.setattr(worker.dest.wire, "put", puts)
    try:
        outcomes, requests = esb.in_worker(esb.run_batch, esb.Batch(
            tuple(upload(config, name) for name in sorted(files)), grouped=True))
    finally:
        worker.threads().terminate()
    assert [o.error for o in outcomes] == [""] * 8
    assert puts.most >= 2, "S3 requests of a batch overlap"
    assert encodes.most == 1, "compression and encryption run one at a time"
    assert len(s3_bucket.listing()) == 8
    assert requests.get("HEAD", 0) == 0          # the puts themselves go through the mock


# ------------------------------------------------- no boto3 in the workers for small files

WORKER_PROBE = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb
marks, real_in_worker = sys.argv[2], esb.in_worker

def in_worker(function, item):
    loaded = "botocore" in sys.modules     # inherited from the parent, or loaded here
    result = real_in_worker(function, item)
    if (loaded or "botocore" in sys.modules) and function is not esb._apart:
        open(os.path.join(marks, f"{os.getpid()}-{function.__name__}"), "w").close()
    return result

esb.in_worker = in_worker
code = esb.main(sys.argv[3:])
print(code, "botocore" in sys.modules)
"""


def test_workers_never_load_boto3_for_small_files(tmp_path, s3_bucket):
    """The S3 client lives in the main process (the request scheduler's threads make the
    requests), made once the workers exist; workers only compute, at about 20 MB less each.
    Listing S3 runs in a helper process of its own, and --list makes no other request."""
    src, marks = tmp_path / "src", tmp_path / "marks"
    src.mkdir()
    marks.mkdir()
    count = esb.BATCH_FILES + 6        # more than one batch
    for i in range(count):
        (src / f"f{i:03}.txt").write_bytes(b"%d\n" % i * 3000)
    env = process_env(SRC_LOCAL_PATH=src, RESTORE_LOCAL_PATH=tmp_path / "restore",
                      ENCRYPTION_PASSWORD=PASSWORD, ENCRYPTION_SALT=SALT, BACKUP_PROCESSES=2,
                      RESTORE_PROCESSES=2, **s3_env("DEST", s3_bucket))   # (a configured
    # salt: one key derivation per process, not one per file)
    for argv, parent in (([], True), ([], False), (["--restore"], True), (["--verify"], True),
                         (["--list"], False)):
        done = subprocess.run([sys.executable, "-c", WORKER_PROBE, str(ROOT), str(marks),
                               "--quiet", *argv],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.stdout.splitlines()[-1] == f"0 {parent}", (argv, done.stdout, done.stderr)
        assert os.listdir(marks) == [], argv
    restored = sorted(p.name for p in (tmp_path / "restore").iterdir())
    assert restored == [f"f{i:03}.txt" for i in range(count)]


def test_an_error_met_listing_apart_comes_back_as_one_line(tmp_path, s3_bucket, capsys,
                                                           monkeypatch):
    set_env(monkeypatch, **s3_env("DEST", s3_bucket), ENCRYPTION_PASSWORD=PASSWORD)
    set_env(monkeypatch, DEST_AWS_SECRET_ACCESS_KEY="wrong secret")
    code = esb.main(["--verify"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "aws_secret_access_key" in err and "Traceback" not in err


def test_an_unexpected_error_met_apart_is_a_reported_bug(tmp_path, s3_bucket, capsys,
                                                         monkeypatch):
    set_env(monkeypatch, **s3_env("DEST", s3_bucket), ENCRYPTION_PASSWORD=PASSWORD)

    def broken(dest, report):
        raise KeyError("an unforeseen state")

    monkeypatch.setattr(esb, "list_objects", broken)
    code = esb.main(["--verify"])
    err = capsys.readouterr().err
    assert code == esb.EXIT_BUG
    assert "please report" in err and "KeyError" in err and "an unforeseen state" in err


# ------------------------------------------------------- big objects: never in memory

def test_spool_expecting_more_than_the_spill_size_is_a_file_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with esb.spool(expect=esb.SPILL_BYTES + 1) as sink:
        sink.write(b"x")
        sink.flush()
        info = os.fstat(sink.fileno())                 # a real file from the first byte
        assert info.st_nlink == 0 and info.st_size == 1 and info.st_mode & 0o777 == 0o600
    with esb.spool(expect=esb.SPILL_BYTES) as sink:
        sink.write(b"x")
        assert not sink._rolled                        # small work stays in memory


def test_part_window_reads_only_its_range_and_rewinds_for_a_retry():
    data = bytes(range(256)) * 4
    source = io.BytesIO(data)
    window = esb._Window(source, 100, 300)
    assert len(window) == 300 and window.tell() == 0
    assert window.read(50) == data[100:150] and len(window) == 250
    source.seek(0)                       # the file's own position does not matter
    assert window.read() == data[150:400]
    assert window.read(10) == b"" and window.tell() == 300
    assert window.seek(0) == 0 and window.read(-1) == data[100:400]   # a retry starts over
    assert window.seek(-10, os.SEEK_END) == 290 and window.read() == data[390:400]
    assert window.seek(5, os.SEEK_SET) == 5 and window.seek(5, os.SEEK_CUR) == 10
    assert window.read(5) == data[110:115]
    assert window.seek(10_000) == 300 and window.read() == b""


def test_multipart_parts_are_streamed_from_the_spool(monkeypatch, s3_bucket):
    monkeypatch.setattr(esb, "S3_MULTIPART_THRESHOLD", 5 * MiB)
    monkeypatch.setattr(esb, "S3_PART_SIZE", 5 * MiB)
    storage = esb.make_storage(s3_config(s3_bucket))
    bodies = []
    real_upload_part = storage.client.upload_part

    def upload_part(**kwargs):
        bodies.append((type(kwargs["Body"]).__name__, len(kwargs["Body"])))
        return real_upload_part(**kwargs)

    monkeypatch.setattr(storage.client, "upload_part", upload_part)
    data = os.urandom(11 * MiB + 5)
    storage.store("", lambda sink: sink.write(data), lambda _: "big.bin", expect=len(data))
    assert bodies == [("_Window", 5 * MiB), ("_Window", 5 * MiB), ("_Window", MiB + 5)]
    got = s3_bucket.client.get_object(Bucket=s3_bucket.name, Key="big.bin")["Body"].read()
    assert got == data


# ------------------------------------------------- listings shared with forked workers

COW_PROBE = r"""
import gc, os, sys
sys.path.insert(0, sys.argv[1])
import encrypted_s3_backup as esb

def private_mb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return sum(int(line.split()[1]) for line in rollup
                   if line.startswith(("Private_Dirty", "Private_Clean"))) // 1024

# a listing as the parent holds it: 200,000 files and their objects
listing = [esb.Stored(None, i, esb.BackupName(f"dir/file-{i:07d}.dat", i, i * 3, bytes(16)))
           for i in range(200_000)]

def full_collection(_):
    before = private_mb(os.getpid())
    gc.collect()                             # what a busy worker's GC does now and then
    return private_mb(os.getpid()) - before

if sys.argv[2] == "pool":
    config = esb.load_config(None, {"DEST_LOCAL_PATH": sys.argv[3], "ENCRYPTION_PASSWORD": "p"},
                             needs=("dest",))[0]
    with esb.worker_pool(1, config) as pool:
        print(pool.submit(full_collection, None).result())
else:                                        # a plain fork, for comparison
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, str(full_collection(None)).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    print(os.read(read, 100).decode())
"""


def test_workers_do_not_copy_the_listings_they_inherit(tmp_path):
    copied = {}
    for how in ("plain fork", "pool"):
        copied[how] = int(run_probe(COW_PROBE, ROOT, how, tmp_path, timeout=120).stdout)
    assert copied["plain fork"] > 30, copied        # the probe sees the copying
    assert copied["pool"] < 5, copied


def test_a_stop_while_the_hub_stores_does_not_wait_for_the_rest(monkeypatch, tmp_path,
                                                                  s3_bucket):
    """One process: it encodes and its request scheduler threads store.  Ctrl-C there is
    deferred (raised inside the thread pool's code it could leave a lock taken) but polled:
    the run stops long before every object would have been stored."""
    files = {f"f{i:02d}.txt": os.urandom(1000) for i in range(24)}
    config = local_config(tmp_path, files, DEST_LOCAL_PATH="", REQUESTS_IN_FLIGHT="2",
                          **s3_env("DEST", s3_bucket))
    puts, stopping, real_check_stop = [], threading.Event(), esb.check_stop

    def check_stop():
        if esb._STOP_ASKED:
            stopping.set()
        real_check_stop()

    def slow_put(*args, **kwargs):
        puts.append(args or kwargs)
        if len(puts) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        stopping.wait(60)       # every PUT lasts until the run sees the stop (a bound only for
        return True             # a run that never does: it then stores them all, and fails)

    real_client = esb.S3Storage.client.fget

    def client(storage):
        made_client = real_client(storage)
        made_client.put_object = slow_put
        return made_client

    monkeypatch.setattr(esb.S3Storage, "client", property(client))
    monkeypatch.setattr(esb.S3Wire, "put", slow_put)           # the small PUTs are its
    monkeypatch.setattr(esb, "check_stop", check_stop)
    monkeypatch.setattr(esb, "_MAIN_PID", os.getpid())
    previous = signal.signal(signal.SIGINT, esb._on_stop_signal)
    jobs = [upload(config, name) for name in sorted(files)]
    try:
        with pytest.raises(KeyboardInterrupt):
            esb.run_jobs(jobs, 1, config, lambda outcome: None, lambda *warning: None)
        assert stopping.is_set()
    finally:
        stopping.set()
        signal.signal(signal.SIGINT, previous)
    assert len(puts) < len(files) / 2, "most objects were stored before the stop"
