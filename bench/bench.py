#!/usr/bin/env python3
"""Benchmark of encrypted_s3_backup.py: speed, memory and scale, each against a floor.

Usage (from the repository root, with the dependencies and requirements-dev.txt installed):

    python bench/bench.py                          mixed and many-small, local and S3
    python bench/bench.py --quick                  the same at 1/50 scale: a smoke run
    python bench/bench.py --big                    also the 1 GB file
    python bench/bench.py --datasets many-small --targets local --keep
    python bench/bench.py --scale 1000000 --targets local   a million tiny files instead

What it does
    1. Generates deterministic datasets in a temporary folder (seeded RNG; file mtimes are
       fixed too).  Text is sliced at random offsets from a ~4 MB corpus of pseudo-words with
       Zipf-like frequencies; random data comes from random.Random(seed).randbytes.
         mixed       2,000 text files of 1-20 KB, 200 files of 0.2-2 MB (half random, half
                     text), one 150 MB random file, one 60 MB text file (about 450 MB)
         many-small  20,000 text files of 1-4 KB
         big         one 1 GB random file (only with --big or --datasets big)
       --quick divides every file count and the sizes of the single large files by 50.
    2. Floor: in this process, single-threaded, the CPU time (time.process_time) of the raw
       operations on the same bytes, read from the page cache outside the timed parts:
         backup floor   MD5 + the compressor the tool picks (its own choose_compression and
                        make_compressor, at lzma/gzip level 6) + AES-256-GCM (16-byte nonce)
         restore floor  AES-256-GCM decryption + decompression + MD5 of the output
       each divided by --processes.  A step's "x floor" is its wall time over that floor
       (backup floor for both backups, restore floor for restore and verify).
       Write floor: the wall time of --processes processes writing the data set's files
       into an empty folder of the benchmark's disk, from memory, and nothing else (create,
       write, set the mtime, close; one sync() at the end).  A restore's "x +write" is its
       wall time over the restore floor plus the write floor: the part of a restore that
       is ours and not the file system's.
       Bound: the least wall time a step could take on this machine without writing, the
       floors of the work it cannot skip added up.  Start floor: the fastest of 5 runs of
       the tool's --version (Python starting, the script compiled, its imports).  Read
       floor: listing a folder (os.scandir, an lstat a file) in one process, then
       --processes processes reading its files whole (open, read, close; shares of about
       the same bytes) from the page cache; on a local target the backup's objects get
       theirs after the first backup.  A backup's bound is the start floor + backup
       floor + read floor of the source; a restore's and a verify's, the start floor +
       restore floor + read floor of the objects.  "x bound" is a step's wall time over
       its bound, "bound x floor" the bound over the floor: the "x floor" of a tool that
       did only that work.  Writing is left out: the same restore took from 4.4 to 10.1 s
       within one run of this benchmark (the file system's state moves it), so a time of
       writing is no floor to add.  No bound on S3, where the server does part of the
       work.
    3. For each dataset and target (local: local -> local folder; s3: local -> a SeaweedFS
       bucket, server started here from tests/s3_server.py) it runs the tool as a subprocess,
       configured by environment variables only (aes, a fixed encryption_salt, levels 6,
       backup_processes = restore_processes = --processes), four steps:
         backup      first backup into an empty destination
         no-change   the same backup again (nothing to transfer)
         restore     --restore into an empty folder, then checked against the source:
                     same paths, sizes, whole-second mtimes and BLAKE2 hashes
         verify      --verify
       On a local target each of the four runs --runs times (default 3): the backup into a
       new empty folder each time (the last run's is the one the later steps use), the
       restore into a new empty folder each time, each restore checked.  The fastest run
       counts for the times, the run with the largest peak for the memory figures;
       run_wall_s in the JSON has every run's time.  Every run of the tool, S3's too, starts
       after a sync(), so that no step pays for the writing an earlier one left behind.
       Then three steps of history (versions_keep_days 30): the no-change run (fastest of
       3), a run in which every 10th file changed (its old object becomes a version), and
       the no-change run again over the objects plus those 10 % versions (fastest of 3;
       "vs_no_versions" in the JSON is its ratio to the first).  The changed files get
       their bytes and mtimes back afterwards.
       Each step must exit 0.  Measured: wall time, files/s and MB/s (source files and bytes
       over wall time), and the peak memory of the whole process tree: every ~50 ms the sum
       of VmRSS (/proc/<pid>/status) of the tool and all its descendants (found through
       /proc/<pid>/task/<tid>/children).  Pages shared by forked workers count once per
       process there, so it is an upper bound; "PSS MB" is the peak of the same sum of Pss
       (/proc/<pid>/smaps_rollup: shared pages split between their users), the real share.
       The JSON also has each process's own peak RSS (process_peaks_mb: the tool, then its
       helper and workers in the order they started).
    4. Planner scale: a subprocess plans a no-change run of 1,000,000 synthetic files (20,000
       with --quick) from listings generated in key order, as a run does: "held", both held
       as the tool's compact Listing columns and sorted (encrypted names, or a storage that
       does not list in order: the figure that bounds a run's memory), and "streamed", both
       walked as they come.  Its peak memory is the subprocess's VmHWM (peak RSS, inputs
       included; ru_maxrss would include the RSS of the benchmark that forked it, as Linux
       keeps it across exec).  --planner N sets the number of entries (0: no planner figure).
    5. Scale (--scale N, instead of the data sets): N tiny files (their number as text) in
       up to 500 folders of 40 subfolders, at least 25 files a subfolder, written by one
       process per core.  For each target: the first backup and the no-change run (fastest
       of 2), with compression off (what is measured is the number of files, not their
       bytes), and the same over a tree of one file; "bytes/file" is a step's peak memory
       beyond the one-file run's, divided by N.

    6. Slices (--slices N, instead of the four steps): for each data set and target, the
       first backup and the no-change run, once unsliced and once as N runs --slice I/N
       one after the other (into a destination of their own), each run's CPU seconds
       (its process tree; the S3 server's apart) and S3 LIST requests added up.  Reported:
       the files and bytes of the largest slice over total/N (targets: at most 1.1 for
       files; bytes are uneven by nature when a few files are large), the CPU of the N
       slices over one run's (target: at most 1.2) and their LIST requests over one run's
       (at most N).  The slices' objects are checked to be the unsliced run's (same keys).
       With --rtt, S3 is reached through the latency proxy (files/s of each step in the
       JSON).  One machine cannot show the wall-time gain of N machines: see
       docs/PERFORMANCE.md, More than one machine.

Output: one table on stdout, and every figure plus machine info (nproc, Python, date) as
JSON in --json (default bench/results.json; bench/results-quick.json with --quick).
With --keep the tool's output of each step stays in <tmp>/logs/.  MB means 10^6 bytes.
Exit status: 0 when every step exited 0 and every restore was identical, else 1.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import heapq
import importlib.util
import json
import lzma
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from typing import Callable, Iterable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TOOL_PATH = os.path.join(REPO, "encrypted_s3_backup.py")
S3_SERVER_PATH = os.path.join(REPO, "tests", "s3_server.py")
sys.path.insert(0, HERE)
from latency_proxy import LatencyProxy  # noqa: E402  (beside this file)

SEED = 20240601
MTIME_BASE = 1_700_000_000         # fixed file mtimes keep the datasets fully deterministic
PASSWORD = "benchmark password"
SALT = "5eed0f0b0a7c4b9e8d1f2a3b4c5d6e7f"  # fixed encryption_salt: key derived once per process
LEVEL = 6                          # lzma_level and gzip_level (the tool's defaults)
QUICK_SCALE = 1 / 50
PLANNER_ENTRIES = 1_000_000
SAMPLE_SECONDS = 0.05
MB = 1e6
KB = 1000
DATASETS = ("mixed", "many-small", "small-5k", "big")
TARGETS = ("local", "s3")


def load_module(name: str, path: str):
    """Import a module from a file path (the tool and the test S3 server are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# =====================================================================================
# Datasets
# =====================================================================================

def make_corpus(rng: random.Random, size: int = 4_000_000) -> bytes:
    """About ``size`` bytes of lines of pseudo-words drawn with Zipf-like frequencies."""
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"] + ["the", "and", "ing"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
             for _ in range(5000)]
    weights = [1 / rank for rank in range(1, len(vocab) + 1)]
    words = rng.choices(vocab, weights, k=size // 6)
    lines = (" ".join(words[i:i + 12]) for i in range(0, len(words), 12))
    return ("\n".join(lines) + "\n").encode()


def dataset_files(name: str, scale: float, rng: random.Random) -> list[tuple[str, str, int]]:
    """The dataset's files as (relative path, "text" or "random", size in bytes)."""
    def count(n: int) -> int:
        return max(1, round(n * scale))

    files = []
    if name == "mixed":
        for i in range(count(2000)):
            files.append((f"text/{i // 100:02d}/note-{i:05d}.txt", "text",
                          rng.randint(1 * KB, 20 * KB)))
        for i in range(count(200)):
            kind = "random" if i % 2 else "text"
            files.append((f"medium/{kind}-{i:03d}.{'bin' if i % 2 else 'txt'}", kind,
                          rng.randint(200 * KB, 2000 * KB)))
        files.append(("large/random-150MB.bin", "random", int(150 * MB * scale)))
        files.append(("large/text-60MB.txt", "text", int(60 * MB * scale)))
    elif name == "many-small":
        for i in range(count(20000)):
            files.append((f"d{i // 500:02d}/small-{i:05d}.txt", "text",
                          rng.randint(1 * KB, 4 * KB)))
    elif name == "small-5k":
        for i in range(count(5000)):
            files.append((f"d{i // 100:02d}/small-{i:04d}.txt", "text",
                          rng.randint(1 * KB, 4 * KB)))
    elif name == "big":
        files.append(("random-1GB.bin", "random", int(1000 * MB * scale)))
    return files


def write_dataset(root: str, files: list, corpus: bytes, rng: random.Random) -> None:
    """Write every file in 1 MiB pieces and give it a fixed mtime."""
    piece = 1 << 20
    for index, (rel, kind, size) in enumerate(files):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            left = size
            while left:
                n = min(left, piece)
                if kind == "random":
                    handle.write(rng.randbytes(n))
                else:
                    start = rng.randrange(len(corpus) - n)
                    handle.write(corpus[start:start + n])
                left -= n
        os.utime(path, (MTIME_BASE + index, MTIME_BASE + index))


# =====================================================================================
# Floor: CPU time of the raw operations, single process
# =====================================================================================

def measure_floor(root: str, files: list, tool) -> dict:
    """CPU seconds of hash+compress+encrypt (backup) and decrypt+decompress+hash (restore)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    key = bytes(range(32))
    backup_cpu = restore_cpu = 0.0
    kinds: dict[str, int] = {}
    for rel, _, size in files:
        with open(os.path.join(root, rel), "rb") as handle:
            chunk = handle.read(tool.CHUNK)
            t0 = time.process_time()
            kind = tool.choose_compression(size, chunk)
            compressor = tool.make_compressor(kind, size, LEVEL, LEVEL)
            nonce = os.urandom(16)
            encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
            md5 = hashlib.md5()
            t1 = time.process_time()
            decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
            decompressor = lzma.LZMADecompressor() if kind == "xz" else zlib.decompressobj(31)
            md5_back = hashlib.md5()
            t2 = time.process_time()
            backup_cpu += t1 - t0
            restore_cpu += t2 - t1
            while True:
                t0 = time.process_time()
                if chunk:
                    md5.update(chunk)
                    sealed = encryptor.update(compressor.compress(chunk))
                else:
                    sealed = encryptor.update(compressor.flush()) + encryptor.finalize()
                t1 = time.process_time()
                md5_back.update(decompressor.decompress(decryptor.update(sealed)))
                if not chunk:
                    decryptor.finalize_with_tag(encryptor.tag)
                t2 = time.process_time()
                backup_cpu += t1 - t0
                restore_cpu += t2 - t1
                if not chunk:
                    break
                chunk = handle.read(tool.CHUNK)
        if md5_back.digest() != md5.digest():
            raise RuntimeError(f"floor round trip of {rel} does not match")
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"backup_cpu_s": backup_cpu, "restore_cpu_s": restore_cpu, "compression": kinds}


def measure_write_floor(work: str, dataset: str, root: str, files: list,
                        processes: int) -> float:
    """Wall seconds that ``processes`` processes take to write the data set's files into an
    empty folder on the benchmark's disk, and nothing else: each file created, written
    from memory, its mtime set and closed, then one sync() for all.  What any restore must
    do besides the floor's CPU work; the folder stays until the end (deleting it would
    make the disk busy with the deletion during the next steps).  It starts after a
    sync(), as every run of the tool does."""
    target = os.path.join(work, "write-floor", dataset)
    contents = []
    for rel, _, _ in files:
        with open(os.path.join(root, rel), "rb") as handle:
            contents.append((rel, handle.read()))

    def write(share: list) -> None:
        for rel, data in share:
            path = os.path.join(target, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, data)   # (a regular file takes all of it in one call)
            os.utime(fd, (MTIME_BASE, MTIME_BASE))
            os.close(fd)

    os.sync()       # what was written or deleted before (discards included) is done first
    started = time.perf_counter()
    done = in_processes(write, [contents[part::processes] for part in range(processes)])
    os.sync()
    if not done:
        raise RuntimeError(f"writing the {dataset} files for the write floor failed")
    return time.perf_counter() - started


def in_processes(work: Callable[[list], None], shares: list[list]) -> bool:
    """``work(share)`` for each share in a forked process of its own, all at once; whether
    every one of them ended well."""
    children = []
    for share in shares:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                work(share)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    return not [pid for pid in children if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])]


def listed_files(root: str) -> list[tuple[str, int]]:
    """Every file under ``root`` and its size, found as a listing finds them: os.scandir,
    and an lstat of each file."""
    found, folders = [], [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    found.append((entry.path, entry.stat(follow_symlinks=False).st_size))
    return found


def shares(files: list[tuple[str, int]], parts: int) -> list[list[str]]:
    """The files' paths in ``parts`` shares of about the same bytes: the largest first, each
    to the share with the fewest bytes so far."""
    loads = [(0, part) for part in range(parts)]
    paths: list[list[str]] = [[] for _ in range(parts)]
    for path, size in sorted(files, key=lambda file: -file[1]):
        load, part = heapq.heappop(loads)
        paths[part].append(path)
        heapq.heappush(loads, (load + size, part))
    return paths


def read_all(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            while os.read(fd, 1 << 20):
                pass
        finally:
            os.close(fd)


def measure_read_floor(root: str, processes: int) -> float:
    """Wall seconds to list ``root`` in this process (listed_files) and read every file in
    it, whole, in ``processes`` processes (open, read, close; shares of about the same
    bytes): what a run that reads these files must do.  From the page cache: each file is
    read once first, untimed."""
    read_all([path for path, _ in listed_files(root)])
    os.sync()
    started = time.perf_counter()
    if not in_processes(read_all, shares(listed_files(root), processes)):
        raise RuntimeError(f"reading the files of {root} for the read floor failed")
    return time.perf_counter() - started


def measure_start_floor(runs: int = 5) -> float:
    """The fastest of ``runs`` wall times of the tool doing nothing (--version): starting
    Python, compiling the script (a script run by its path is compiled at every start,
    never cached) and importing what it imports.  Every run of the tool pays it."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, TOOL_PATH, "--version"], check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def step_bound(step: str, target: str, floor: dict, objects_read_floor: float) -> float:
    """The least wall time a step can take here without writing (NaN: none for this step,
    nor on S3): the start floor, the step's CPU floor, and listing and reading what it
    reads (a backup the source files, a restore or verify the objects)."""
    if target != "local":
        return float("nan")
    if step == "backup":
        return floor["start_floor_s"] + floor["backup_floor_s"] + floor["source_read_floor_s"]
    if step in ("restore", "verify"):
        return floor["start_floor_s"] + floor["restore_floor_s"] + objects_read_floor
    return float("nan")


# =====================================================================================
# Running the tool and watching its memory
# =====================================================================================

def kb_field(path: str, field: str) -> int:
    """Bytes of a "Name:   123 kB" line of a /proc file; 0 when absent (a zombie)."""
    with open(path) as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def tree_memory(pid: int, each: Optional[dict] = None) -> tuple[int, int, int]:
    """(sum of VmRSS, sum of Pss, number of processes) of ``pid`` and all its descendants;
    ``each`` (pid -> largest VmRSS seen) is updated with every process's own figure."""
    rss, pss, count, todo = 0, 0, 0, [pid]
    while todo:
        current = todo.pop()
        try:
            own = kb_field(f"/proc/{current}/status", "VmRSS:")
            rss += own
            pss += kb_field(f"/proc/{current}/smaps_rollup", "Pss:")
            count += 1
            if each is not None:
                each[current] = max(each.get(current, 0), own)
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as children:
                    todo.extend(int(child) for child in children.read().split())
        except OSError:     # the process (or thread) ended while we looked
            continue
    return rss, pss, count


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a running process has used so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_tool(extra_args: list, env: dict, cwd: str, log_path: str,
             server_pid: int = 0) -> dict:
    """Run the tool once: exit code, wall seconds, the peak memory of its process tree, the
    CPU seconds of that tree (and of the S3 server, which shares the machine's cores)."""
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = cpu_seconds(server_pid) if server_pid else 0.0
    peak = [(0, 0, 0)]      # the sample with the largest RSS sum
    peak_pss = [0]
    each: dict[int, int] = {}
    done = threading.Event()
    os.sync()       # what earlier steps left to write is written before this one starts
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, TOOL_PATH, "--quiet", *extra_args],
                                env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

        def sample() -> None:
            while True:
                now = tree_memory(proc.pid, each)
                peak[0] = max(peak[0], now)
                peak_pss[0] = max(peak_pss[0], now[1])
                if done.wait(SAMPLE_SECONDS):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    tool_cpu = (children.ru_utime - children_before.ru_utime
                + children.ru_stime - children_before.ru_stime)
    server_cpu = cpu_seconds(server_pid) - server_before if server_pid else 0.0
    return {"exit_code": code, "wall_s": wall, "log": log_path,
            "requests": logged_requests(log_path),
            "peak_mb": peak[0][0] / MB,
            "peak_pss_mb": peak_pss[0] / MB, "processes_at_peak": peak[0][2],
            # each process's own peak: the tool first, then its children by start order
            "process_peaks_mb": [each[p] / MB for p in sorted(each)],
            "tool_cpu_s": tool_cpu, "server_cpu_s": server_cpu}


def logged_requests(log_path: str) -> dict[str, int]:
    """The request counts of the tool's summary ("requests: 5000 PUT, 2 LIST; 3 retried")."""
    with open(log_path, encoding="utf-8", errors="replace") as log:
        lines = [line for line in log if "] requests: " in line]
    counts: dict[str, int] = {}
    if lines:
        made, _, retried = lines[-1].split("] requests: ", 1)[1].partition(";")
        for part in made.split(","):
            number, _, kind = part.strip().partition(" ")
            counts[kind] = int(number)
        counts["retried"] = int(retried.split()[0]) if retried.strip() else 0
    return counts


def tool_env(tool, dest: dict, restore_dir: str, src_dir: str, processes: int) -> dict:
    """Our environment minus any of the tool's own settings, plus the benchmark's config."""
    own = {key.upper() for key in tool.setting_keys()}
    sections = tuple(section.upper() + "_" for section in tool.STORAGE_SECTIONS)
    env = {k: v for k, v in os.environ.items() if k not in own and not k.startswith(sections)}
    env.update({
        "SRC_LOCAL_PATH": src_dir, "RESTORE_LOCAL_PATH": restore_dir,
        "ENCRYPTION_PASSWORD": PASSWORD, "ENCRYPTION_SALT": SALT, "ENCRYPTION_TYPE": "aes",
        "LZMA_LEVEL": str(LEVEL), "GZIP_LEVEL": str(LEVEL),
    })
    if processes:                       # None: the tool's own defaults
        env.update(BACKUP_PROCESSES=str(processes), RESTORE_PROCESSES=str(processes))
    env.update(dest)
    return env


def target_dest(target: str, name: str, dest_dir: str, server, proxy=None) -> dict:
    """The DEST_* variables of a target: the folder ``dest_dir`` (made here), or the bucket
    bench-``name`` on the S3 server (through the proxy when there is one)."""
    if target == "s3":
        endpoint = proxy.endpoint_url if proxy else server.endpoint_url
        return {"DEST_S3_BUCKET": f"bench-{name}", "DEST_ENDPOINT_URL": endpoint,
                "DEST_AWS_ACCESS_KEY_ID": server.access_key,
                "DEST_AWS_SECRET_ACCESS_KEY": server.secret_key,
                "DEST_REGION_NAME": server.region}
    os.makedirs(dest_dir)
    return {"DEST_LOCAL_PATH": dest_dir}


def tree_digest(root: str) -> dict[str, tuple[int, int, str]]:
    """relative path -> (size, whole-second mtime, BLAKE2b hex) of every file under root."""
    result = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            digest = hashlib.blake2b()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            info = os.stat(path)
            result[os.path.relpath(path, root)] = (info.st_size, int(info.st_mtime),
                                                   digest.hexdigest())
    return result


def compare_restore(expected: dict, restored_dir: str) -> list[str]:
    """Differences between the source's digest and the restored tree (at most 5 listed)."""
    got = tree_digest(restored_dir)
    problems = [f"missing {p}" for p in sorted(set(expected) - set(got))]
    problems += [f"unexpected {p}" for p in sorted(set(got) - set(expected))]
    for path in sorted(set(expected) & set(got)):
        for what, a, b in zip(("size", "mtime", "content"), expected[path], got[path]):
            if a != b:
                problems.append(f"{path}: {what} differs")
    return problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])


def bench_target(tool, work: str, dataset: str, target: str, source: dict, server,
                 processes: Optional[int], keep: bool, rtt: float = 0, runs: int = 1
                 ) -> list[dict]:
    """The four steps for one dataset and one target; one result dict per step, the
    fastest of ``runs`` on a local target.  With ``rtt`` (ms), S3 is reached through a
    LatencyProxy and the history steps are left out."""
    if target == "s3" and rtt:
        host, port = server.endpoint_url.rsplit("//", 1)[1].rsplit(":", 1)
        with LatencyProxy(host, int(port), rtt) as proxy:
            return _bench_target(tool, work, dataset, target, source, server, processes, keep,
                                 proxy, runs)
    return _bench_target(tool, work, dataset, target, source, server, processes, keep, None,
                         runs)


def _bench_target(tool, work: str, dataset: str, target: str, source: dict, server,
                  processes: Optional[int], keep: bool, proxy, runs: int) -> list[dict]:
    label = f"{dataset}-{target}"
    src_dir = os.path.join(work, "data", dataset)
    restore_dir = os.path.join(work, "restore", label)
    dest_dir = os.path.join(work, "dest", label)
    os.makedirs(restore_dir)
    env = tool_env(tool, target_dest(target, dataset, dest_dir, server, proxy), restore_dir,
                   src_dir, processes)
    files, size = len(source), sum(v[0] for v in source.values())
    steps = []
    objects_read_floor = float("nan")   # listing and reading the objects (local only)
    runs = runs if target == "local" else 1
    spare = []                  # the other backup runs' destinations
    for step, args in (("backup", []), ("no-change", []), ("restore", ["--restore"]),
                       ("verify", ["--verify"])):
        print(f"  {label}: {step} ...", flush=True)
        server_pid = server.pid if target == "s3" else 0
        before = (proxy.connections, proxy.cpu_seconds()) if proxy else (0, 0.0)
        results = []
        for run in range(runs):
            log_path = os.path.join(work, "logs", f"{label}-{step}-{run}.log")
            run_env = env
            if step == "backup" and run < runs - 1:     # the last run's destination stays
                spare.append(f"{dest_dir}.run{run}")
                run_env = dict(env, DEST_LOCAL_PATH=spare[-1])
                os.makedirs(spare[-1])
            elif step == "restore":
                run_env = dict(env, RESTORE_LOCAL_PATH=os.path.join(restore_dir, str(run)))
            results.append(run_reported(args, run_env, work, log_path, server_pid))
            if step == "restore":
                results[-1]["restore_problems"] = compare_restore(
                    source, run_env["RESTORE_LOCAL_PATH"])
                for problem in results[-1]["restore_problems"]:
                    print(f"  restore differs: {problem}")
        result = min(results, key=lambda r: (r["exit_code"] != 0, r["wall_s"]))
        heaviest = max(results, key=lambda r: r["peak_mb"])
        result.update({field: heaviest[field] for field in MEMORY_FIELDS})
        result.update(runs=runs, run_wall_s=[r["wall_s"] for r in results],
                      exit_code=worst_exit(r["exit_code"] for r in results),
                      restore_problems=[p for r in results for p in r.get("restore_problems", ())])
        result.update(dataset=dataset, target=target, step=step, files=files,
                      mb=size / MB, files_per_s=files / result["wall_s"],
                      mb_per_s=size / MB / result["wall_s"])
        if proxy:
            result.update(rtt_ms=proxy.rtt * 1000, connections=proxy.connections - before[0],
                          proxy_cpu_s=proxy.cpu_seconds() - before[1])
        if step == "restore" and not keep:
            shutil.rmtree(restore_dir)
        if step == "backup" and not keep:
            for folder in spare:
                shutil.rmtree(folder)
        if step == "backup" and target == "local":
            objects_read_floor = measure_read_floor(dest_dir, processes)
        steps.append(result)
    for result in steps:
        result["objects_read_floor_s"] = objects_read_floor
    for result in () if proxy else history_steps(work, label, src_dir, env, server, target):
        result.update(dataset=dataset, target=target)
        steps.append(result)
    if target == "local" and not keep:
        shutil.rmtree(dest_dir)
    return steps


MEMORY_FIELDS = ("peak_mb", "peak_pss_mb", "processes_at_peak", "process_peaks_mb")


def bench_slices(tool, work: str, dataset: str, target: str, files: list, server,
                 processes: Optional[int], parts: int, rtt: float = 0) -> dict:
    """Section 6 of the docstring: one data set on one target, unsliced and in ``parts``
    slices; a dict of the figures.  With ``rtt`` (ms), S3 is reached through a
    LatencyProxy."""
    if target == "s3" and rtt:
        host, port = server.endpoint_url.rsplit("//", 1)[1].rsplit(":", 1)
        with LatencyProxy(host, int(port), rtt) as proxy:
            return _bench_slices(tool, work, dataset, target, files, server, processes, parts,
                                 proxy)
    return _bench_slices(tool, work, dataset, target, files, server, processes, parts, None)


def _bench_slices(tool, work: str, dataset: str, target: str, files: list, server,
                  processes: Optional[int], parts: int, proxy) -> dict:
    counts, sizes = [0] * parts, [0] * parts
    for rel, _, size in files:
        part = tool.key_slice(rel, parts)
        counts[part] += 1
        sizes[part] += size
    total_files, total_bytes = len(files), sum(sizes)
    result = {"dataset": dataset, "target": target, "slices": parts, "files": total_files,
              "bytes": total_bytes, "slice_files": counts, "slice_bytes": sizes,
              "largest_files_ratio": max(counts) * parts / max(total_files, 1),
              "largest_bytes_ratio": max(sizes) * parts / max(total_bytes, 1), "exit_codes": []}
    server_pid = server.pid if target == "s3" else 0
    keys = {}
    for mode, runs in (("one", [[]]), ("sliced", [["--slice", f"{i}/{parts}"]
                                                   for i in range(1, parts + 1)])):
        name = f"{dataset}-{target}-{mode}-{parts}"
        dest_dir = os.path.join(work, "dest", name)
        env = tool_env(tool, target_dest(target, name, dest_dir, server, proxy),
                       os.path.join(work, "restore", name), os.path.join(work, "data", dataset),
                       processes)
        for step in ("backup", "no-change"):
            done = [run_tool(argv, env, work, os.path.join(work, "logs", f"{name}-{step}-{i}.log"),
                             server_pid) for i, argv in enumerate(runs)]
            result["exit_codes"] += [d["exit_code"] for d in done]
            result[f"{mode}_{step}"] = {
                "cpu_s": sum(d["tool_cpu_s"] for d in done),
                "server_cpu_s": sum(d["server_cpu_s"] for d in done),
                "wall_s": sum(d["wall_s"] for d in done),
                "slowest_wall_s": max(d["wall_s"] for d in done),
                "files_per_s": total_files / sum(d["wall_s"] for d in done),
                "list_requests": sum(d["requests"].get("LIST", 0) for d in done)}
        if target == "local":
            keys[mode] = sorted(os.path.relpath(os.path.join(folder, n), dest_dir)
                                for folder, _, names in os.walk(dest_dir) for n in names)
    result["same_objects"] = keys.get("one") == keys.get("sliced") if keys else None
    for step in ("backup", "no-change"):
        one, sliced = result[f"one_{step}"], result[f"sliced_{step}"]
        result[f"{step}_cpu_ratio"] = sliced["cpu_s"] / max(one["cpu_s"], 1e-9)
        result[f"{step}_list_ratio"] = sliced["list_requests"] / one["list_requests"] \
            if one["list_requests"] else float("nan")
    return result


def print_slices_table(rows: list) -> None:
    print_rows(("data set", "target", "N", "files max/avg", "bytes max/avg",
                "CPU 1 run s", "CPU N slices s", "x CPU", "LIST 1", "LIST N", "nc CPU 1 s",
                "nc CPU N s", "nc x CPU", "nc LIST 1", "nc LIST N"),
               [(r["dataset"], r["target"], r["slices"], f"{r['largest_files_ratio']:.3f}",
                 f"{r['largest_bytes_ratio']:.3f}", f"{r['one_backup']['cpu_s']:.2f}",
                 f"{r['sliced_backup']['cpu_s']:.2f}", f"{r['backup_cpu_ratio']:.2f}",
                 r["one_backup"]["list_requests"], r["sliced_backup"]["list_requests"],
                 f"{r['one_no-change']['cpu_s']:.2f}", f"{r['sliced_no-change']['cpu_s']:.2f}",
                 f"{r['no-change_cpu_ratio']:.2f}", r["one_no-change"]["list_requests"],
                 r["sliced_no-change"]["list_requests"]) for r in rows], 2)


def worst_exit(codes: Iterable[int]) -> int:
    """The exit code of several runs: the first that is not 0 (a run killed by a signal
    has a negative one), else 0."""
    return next((code for code in codes if code), 0)


def run_reported(extra_args: list, env: dict, cwd: str, log_path: str, server_pid: int
                 ) -> dict:
    """run_tool, with the end of the log printed when the run fails."""
    result = run_tool(extra_args, env, cwd, log_path, server_pid)
    if result["exit_code"] != 0:
        with open(log_path, encoding="utf-8", errors="replace") as log:
            print(f"  FAILED (exit {result['exit_code']}):\n" + log.read()[-2000:])
    return result


def fastest_run(runs: int, env: dict, work: str, log_name: str, server, target: str,
                args: tuple = ()) -> dict:
    """Run the tool ``runs`` times (with ``args``: a backup without): the result of the
    fastest run, with the exit code of all of them (worst_exit)."""
    results = [run_reported(list(args), env, work,
                            os.path.join(work, "logs", f"{log_name}-{run}.log"),
                            server.pid if target == "s3" else 0) for run in range(runs)]
    best = min(results, key=lambda r: r["wall_s"])
    best.update(runs=runs, exit_code=worst_exit(r["exit_code"] for r in results))
    return best


HISTORY_DAYS = "30"         # versions_keep_days of the history steps
HISTORY_SHARE = 10          # every 10th file changes: 10 % of the objects become versions
HISTORY_RUNS = 3            # no-change runs per figure; the fastest counts (they take < 1 s)


def history_steps(work: str, label: str, src_dir: str, env: dict, server, target: str
                  ) -> list[dict]:
    """What history costs a no-change run: with versions_keep_days on, the no-change run
    (fastest of HISTORY_RUNS), then a run that changes every HISTORY_SHARE-th file (its
    old object becomes a version), then the no-change run again, over the objects plus
    10 % versions.  The changed files get their old bytes and mtimes back afterwards."""
    env = dict(env, VERSIONS_KEEP_DAYS=HISTORY_DAYS)
    paths = sorted(os.path.relpath(os.path.join(folder, name), src_dir)
                   for folder, _, names in os.walk(src_dir) for name in names)
    changed = paths[::HISTORY_SHARE]
    saved = {}
    steps = []

    def step(name: str, runs: int) -> None:
        print(f"  {label}: {name} ...", flush=True)
        best = fastest_run(runs, env, work, f"{label}-{name.replace(' ', '-')}", server, target)
        best.update(step=name, files=len(paths), mb=0.0, files_per_s=len(paths) / best["wall_s"],
                    mb_per_s=0.0)
        steps.append(best)

    try:
        step("no-change, history on", HISTORY_RUNS)
        for rel in changed:
            path = os.path.join(src_dir, rel)
            info = os.stat(path)
            with open(path, "rb") as handle:
                saved[path] = (handle.read(), info.st_atime, info.st_mtime)
            with open(path, "ab") as handle:
                handle.write(b"\n")
            os.utime(path, (info.st_atime, info.st_mtime + 1))
        step(f"change {len(changed)} files", 1)
        step("no-change, 10% versions", HISTORY_RUNS)
    finally:
        for path, (data, atime, mtime) in saved.items():
            with open(path, "wb") as handle:
                handle.write(data)
            os.utime(path, (atime, mtime))
    base, versions = steps[0]["wall_s"], steps[-1]["wall_s"]
    steps[-1]["vs_no_versions"] = versions / base
    print(f"  {label}: no-change with 10% versions took {versions:.2f} s, {versions / base:.2f}x "
          f"the {base:.2f} s without them", flush=True)
    return steps


# =====================================================================================
# Planner scale check (runs in its own process: --planner-child N)
# =====================================================================================

def proc_status_kb(field: str) -> int:
    """A kB field (VmRSS, VmHWM) of /proc/self/status."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


PLANNER_MODES = ("held", "streamed")


def synthetic_listings(tool, count: int):
    """Two generators over ``count`` synthetic files of a no-change run, both in key order:
    the source's Entry objects, and the destination's (key, object size, 0) of their backup
    objects with plaintext names, as the tool's listings give them."""
    def paths():
        per_folder = -(-count // 1000)
        for i in range(count):
            yield i, f"dir{i // per_folder:04d}/file-{i:08d}.dat"

    def files():
        for i, path in paths():
            yield tool.Entry(path, 1000 + i % 50000, MTIME_BASE + i)

    def objects():
        for i, path in paths():
            name = tool.BackupName(path, MTIME_BASE + i, 1000 + i % 50000,
                                   hashlib.md5(path.encode()).digest())
            yield tool.Entry(tool.format_plain_name(name) + tool.OBJECT_SUFFIX,
                             1060 + i % 50000, 0)
    return files(), objects()


def planner_child(count: int, mode: str) -> None:
    """Plan a no-change backup of ``count`` synthetic files the way a run does; print seconds
    and memory as JSON.  "streamed": both listings walked as they come in key order (a
    plaintext-name destination); "held": both held as the tool's compact Listing columns
    and sorted (encrypted names, or a storage that does not list in order), the figure
    that bounds a run's memory."""
    tool = load_module("encrypted_s3_backup", TOOL_PATH)
    files, objects = synthetic_listings(tool, count)
    start = time.perf_counter()
    if mode == "streamed":
        report = tool.ListReport()
        source = tool.in_plan_order(tool.listed_files(files), "src")
        stored = tool.in_plan_order(tool.listed_objects(objects, tool.Codec(), report), "dest")
    else:
        held_files, held_objects = tool.Listing(), tool.Listing()
        for entry in files:
            held_files.append(*entry)
        for entry in objects:
            held_objects.append(entry.key, entry.size)
        source, stored = held_files.files_in_order(), held_objects.objects_in_order()
    plan = tool.plan_walked(source, stored, datetime.date.today(), None)
    seconds = time.perf_counter() - start
    if plan.unchanged != count or plan.uploads or plan.renames or plan.removes:
        raise SystemExit(f"planner check: expected {count} unchanged, got {plan}")
    peak_kb = proc_status_kb("VmHWM")   # not ru_maxrss: Linux carries that across exec()
    print(json.dumps({"mode": mode, "entries": count, "seconds": seconds,
                      "peak_mb": peak_kb * 1024 / MB}))


def run_planner(count: int, mode: str) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--planner-child",
                          str(count), "--planner-mode", mode], capture_output=True, text=True)
    if out.returncode != 0:
        return {"mode": mode, "entries": count,
                "error": out.stderr[-2000:] or out.stdout[-2000:]}
    return json.loads(out.stdout)


# =====================================================================================
# Scale: a tree of many tiny files, the whole run end to end (--scale N)
# =====================================================================================

SCALE_FOLDERS, SCALE_SUBFOLDERS = 500, 40  # at most 500 folders of 40 subfolders each ...
SCALE_PER_FOLDER = 25                      # ... and no fewer files than this in a subfolder
SCALE_RUNS = 2                             # no-change runs per figure; the fastest counts


def scale_folders(count: int) -> list[str]:
    """The subfolders a --scale tree of ``count`` files spreads them over."""
    leaves = max(1, min(SCALE_FOLDERS * SCALE_SUBFOLDERS, count // SCALE_PER_FOLDER))
    return [f"d{i // SCALE_SUBFOLDERS:03d}/s{i % SCALE_SUBFOLDERS:02d}" for i in range(leaves)]


def write_scale_part(root: str, count: int, part: int, parts: int) -> None:
    """Every ``parts``-th subfolder of the tree from ``part`` on, with its files: file i
    lies in subfolder i mod (subfolders) and holds its number as text (a few bytes: what
    is measured is the count of files, not their bytes)."""
    folders = scale_folders(count)
    for index in range(part, len(folders), parts):
        folder = os.path.join(root, folders[index])
        os.makedirs(folder)
        for i in range(index, count, len(folders)):
            fd = os.open(os.path.join(folder, f"f{i:07d}.txt"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"%d\n" % i)
            os.close(fd)


def make_scale_tree(root: str, count: int) -> None:
    """``count`` tiny files under ``root``, written by one process per core."""
    import multiprocessing
    parts = os.cpu_count() or 1
    with multiprocessing.get_context("fork").Pool(parts) as pool:
        pool.starmap(write_scale_part, [(root, count, part, parts) for part in range(parts)])


def scale_target(tool, work: str, name: str, count: int, target: str, server,
                 processes: Optional[int], versioned: str = "") -> list[dict]:
    """A first backup of the tree data/``name`` (``count`` files) to the target, then the
    no-change run (fastest of SCALE_RUNS), then (S3) the listing and selection of a
    restore as of now (--restore --dry-run --as-of: with ``versioned``, the bucket has
    versioning on, so it is read from the bucket's versions; "locked": Object Lock with a
    one-day GOVERNANCE default retention besides); one result dict per step."""
    label = f"{name}-{target}"
    src_dir = os.path.join(work, "data", name)
    dest_dir = os.path.join(work, "dest", label)
    env = tool_env(tool, target_dest(target, name, dest_dir, server), os.path.join(
        work, "restore", label), src_dir, processes)
    env["COMPRESS"] = "false"       # tiny files: compressing them measures nothing here
    if target == "s3" and versioned:
        client, bucket = server.client(), env["DEST_S3_BUCKET"]
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=versioned == "locked")
        client.put_bucket_versioning(Bucket=bucket,
                                     VersioningConfiguration={"Status": "Enabled"})
        if versioned == "locked":
            client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    as_of = ("--restore", "--dry-run", "--as-of",
             time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 3600)))
    plan = [("backup", 1, ()), ("no-change", SCALE_RUNS, ())]
    if target == "s3":
        plan.append(("as-of", SCALE_RUNS, as_of))
    steps = []
    for step, runs, args in plan:
        print(f"  {label}: {step} ...", flush=True)
        best = fastest_run(runs, env, work, f"{label}-{step}", server, target, args)
        best.update(dataset=name, target=target, step=step, files=count, mb=0.0,
                    files_per_s=count / best["wall_s"], mb_per_s=0.0, floor_ratio=float("nan"))
        steps.append(best)
    if target == "local":
        shutil.rmtree(dest_dir)
    return steps


def bench_scale(tool, work: str, count: int, targets: list, server,
                processes: Optional[int], versioned: str = "") -> list[dict]:
    """--scale: the steps of scale_target over ``count`` tiny files and over one file; each
    step's bytes per file are its peak memory beyond the one-file run's, per file."""
    for name, files in (("scale-1", 1), (f"scale-{count}", count)):
        started = time.perf_counter()
        make_scale_tree(os.path.join(work, "data", name), files)
        print(f"{name}: {files} files in {len(scale_folders(files))} folders, made in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    steps = []
    for target in targets:
        fixed = {s["step"]: s for s in scale_target(tool, work, "scale-1", 1, target, server,
                                                    processes, versioned)}
        for step in scale_target(tool, work, f"scale-{count}", count, target, server,
                                 processes, versioned):
            step["bytes_per_file"] = max(0.0, step["peak_mb"] - fixed[step["step"]]["peak_mb"]
                                         ) * MB / count
            steps.append(step)
    return steps


# =====================================================================================
# Report
# =====================================================================================

COLUMNS = ("dataset", "target", "step", "files", "MB", "wall s", "files/s", "MB/s",
           "x floor", "x +write", "x bound", "bound x floor", "peak MB", "PSS MB", "CPU s",
           "server CPU s")


def table_rows(steps: list, planners: list) -> list[tuple]:
    rows = []
    for s in steps:
        ok = s["exit_code"] == 0 and not s.get("restore_problems")
        rows.append((s["dataset"], s["target"], s["step"] + ("" if ok else " FAIL"),
                     f"{s['files']}", f"{s['mb']:.1f}", f"{s['wall_s']:.2f}",
                     f"{s['files_per_s']:.0f}", f"{s['mb_per_s']:.1f}" if s["mb"] else "-",
                     ratio(s["floor_ratio"]), ratio(s.get("write_floor_ratio", float("nan"))),
                     ratio(s.get("bound_ratio", float("nan"))),
                     ratio(s.get("bound_floor_ratio", float("nan"))),
                     f"{s['peak_mb']:.0f}",
                     f"{s['peak_pss_mb']:.0f}", f"{s['tool_cpu_s']:.1f}",
                     f"{s['server_cpu_s']:.1f}" if s["target"] == "s3" else "-"))
    for planner in (p for p in planners if "seconds" in p):
        rows.append(("synthetic", "-", f"plan {planner['mode']}", f"{planner['entries']}", "-",
                     f"{planner['seconds']:.2f}",
                     f"{planner['entries'] / planner['seconds']:.0f}", "-", "-", "-", "-", "-",
                     f"{planner['peak_mb']:.0f}", "-", "-", "-"))
    return rows


def ratio(value: float) -> str:
    return f"{value:.2f}" if value == value else "-"      # NaN: no floor for the step


def print_rows(columns: tuple, rows: list, left: int) -> None:
    """A plain-text table: the first ``left`` columns aligned left, the others right."""
    widths = [max(len(str(r[i])) for r in [columns] + rows) for i in range(len(columns))]
    for n, row in enumerate([columns] + rows):
        print("  ".join(str(cell).ljust(w) if i < left else str(cell).rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_table(rows: list) -> None:
    print_rows(COLUMNS, rows, 3)


RTT_COLUMNS = ("dataset", "step", "rtt ms", "files/s", "connections", "requests per file",
               "retried", "CPU ms per request", "peak MB")


def print_rtt_table(steps: list) -> None:
    """What a run costs over a long link: requests by kind per file, TCP connections, and the
    tool's CPU per request (every process of it)."""
    rows = []
    for s in steps:
        requests = dict(s.get("requests", {}))
        retried = requests.pop("retried", 0)
        made = sum(requests.values())
        per_file = ", ".join(f"{n / s['files']:.2f} {kind}" for kind, n in sorted(
            requests.items(), key=lambda item: -item[1]))
        rows.append((s["dataset"], s["step"], f"{s.get('rtt_ms', 0):.0f}",
                     f"{s['files_per_s']:.0f}", f"{s.get('connections', '-')}", per_file or "-",
                     f"{retried}", f"{1000 * s['tool_cpu_s'] / made:.2f}" if made else "-",
                     f"{s['peak_mb']:.0f}"))
    print_rows(RTT_COLUMNS, rows, len(RTT_COLUMNS))


SCALE_COLUMNS = ("files", "target", "step", "wall s", "files/s", "peak MB", "PSS MB",
                 "bytes/file", "CPU s", "server CPU s")


def print_scale_table(steps: list) -> None:
    """--scale: each step's time and memory, and its memory per file beyond a one-file run."""
    rows = [(f"{s['files']}", s["target"], s["step"] + ("" if s["exit_code"] == 0 else " FAIL"),
             f"{s['wall_s']:.2f}", f"{s['files_per_s']:.0f}", f"{s['peak_mb']:.0f}",
             f"{s['peak_pss_mb']:.0f}", f"{s['bytes_per_file']:.0f}", f"{s['tool_cpu_s']:.1f}",
             f"{s['server_cpu_s']:.1f}" if s["target"] == "s3" else "-") for s in steps]
    print_rows(SCALE_COLUMNS, rows, 3)


def machine_info() -> dict:
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                    if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "cpu": cpu,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


# =====================================================================================
# Main
# =====================================================================================

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="mixed,many-small",
                        help="comma-separated, of: " + ", ".join(DATASETS) +
                        " (default: mixed,many-small)")
    parser.add_argument("--big", action="store_true", help="add the 1 GB dataset 'big'")
    parser.add_argument("--targets", default="local,s3",
                        help="comma-separated, of: " + ", ".join(TARGETS) + " (default: both)")
    parser.add_argument("--processes", type=int,
                        help="backup_processes and restore_processes; the floor is divided by "
                             "it (default: 2; with --rtt the tool's own defaults)")
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the results (default bench/results.json, "
                             "bench/results-quick.json with --quick)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (datasets, backups, restores, logs)")
    parser.add_argument("--runs", type=int, default=3, metavar="N",
                        help="runs of each of the four steps on a local target, each after a "
                             "sync() and into an empty folder where it writes; the fastest "
                             "counts (default 3; S3 targets run each step once)")
    parser.add_argument("--quick", action="store_true",
                        help="1/50 of every file count and large-file size: a smoke run")
    parser.add_argument("--rtt", type=float, metavar="MS", default=0,
                        help="reach S3 through a proxy that adds MS of round trip (half each "
                             "way, and one round trip per new connection), without limiting "
                             "bandwidth; S3 only, dataset small-5k unless --datasets says, the "
                             "tool's default processes unless --processes says")
    parser.add_argument("--scale", type=int, metavar="N",
                        help="instead of the data sets: N tiny files in up to 500 x 40 folders, "
                             "the first backup and the no-change run of them (and of one "
                             "file, for the bytes per file), compression off")
    parser.add_argument("--versioned", nargs="?", const="versioned",
                        choices=("versioned", "locked"),
                        help="with --scale and the s3 target: the bucket has versioning on "
                             "(locked: and Object Lock with a default retention), so the "
                             "as-of step reads the bucket's own versions (compare its figures "
                             "with a run without)")
    parser.add_argument("--planner", type=int, metavar="N",
                        help="synthetic entries for the planner figure (default 1,000,000; "
                             "20,000 with --quick; 0: none)")
    parser.add_argument("--slices", type=int, metavar="N",
                        help="instead of the four steps: the first backup and the no-change "
                             "run unsliced and as N runs of --slice I/N, their CPU seconds, "
                             "LIST requests and how evenly the files split (docstring, 6)")
    parser.add_argument("--planner-child", type=int, metavar="N", help=argparse.SUPPRESS)
    parser.add_argument("--planner-mode", choices=PLANNER_MODES, default="held",
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rtt:
        args.targets = "s3"
        if args.datasets == parser.get_default("datasets"):
            args.datasets = "small-5k"
    elif args.processes is None:
        args.processes = 2
    args.datasets = [d for d in args.datasets.split(",") if d] + (["big"] if args.big else [])
    args.datasets = list(dict.fromkeys(args.datasets))
    args.targets = [t for t in args.targets.split(",") if t]
    for value, allowed in ((args.datasets, DATASETS), (args.targets, TARGETS)):
        unknown = set(value) - set(allowed)
        if unknown:
            parser.error(f"unknown: {', '.join(sorted(unknown))}; choose from {', '.join(allowed)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.slices is not None and (args.slices < 1 or args.scale):
        parser.error("--slices N needs N >= 1, and no --scale")
    if args.json is None:
        args.json = os.path.join(HERE, "results-scale.json" if args.scale else
                                 f"results-slices{args.slices}.json" if args.slices else
                                 "results-quick.json" if args.quick else "results.json")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.planner_child:
        planner_child(args.planner_child, args.planner_mode)
        return 0
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        raise SystemExit("this kernel has no /proc/<pid>/task/<tid>/children; cannot measure")
    tool = load_module("encrypted_s3_backup", TOOL_PATH)
    scale = QUICK_SCALE if args.quick else 1.0
    work = tempfile.mkdtemp(prefix="esb-bench-")
    for sub in ("data", "dest", "restore", "logs"):
        os.makedirs(os.path.join(work, sub))
    print(f"work folder: {work}")
    server = None
    floor_processes = args.processes or min(os.cpu_count() or 1, 5)   # the tool's defaults
    results = {"machine": machine_info(), "scale": scale, "processes": args.processes,
               "rtt_ms": args.rtt,
               "settings": {"lzma_level": LEVEL, "gzip_level": LEVEL, "encryption_type": "aes",
                            "encryption_salt": "fixed"},
               "datasets": {}, "steps": [], "planner": [], "slices": []}
    try:
        if "s3" in args.targets:
            server = load_module("s3_server", S3_SERVER_PATH).SeaweedServer()
            server.start(os.path.join(work, "seaweedfs"))
            print(f"SeaweedFS at {server.endpoint_url} (started in {server.startup_seconds:.1f} s)")
        if args.scale:
            results["scale_steps"] = bench_scale(tool, work, args.scale, args.targets, server,
                                                 args.processes, args.versioned)
        corpus = b"" if args.scale else make_corpus(random.Random(SEED))
        start_floor = 0.0 if args.scale or args.slices else measure_start_floor()
        for dataset in () if args.scale else args.datasets:
            rng = random.Random(f"{SEED}-{dataset}")
            files = dataset_files(dataset, scale, rng)
            root = os.path.join(work, "data", dataset)
            started = time.perf_counter()
            write_dataset(root, files, corpus, rng)
            made = time.perf_counter() - started
            if args.slices:
                print(f"{dataset}: {len(files)} files, made in {made:.1f} s", flush=True)
                for target in args.targets:
                    results["slices"].append(bench_slices(tool, work, dataset, target, files,
                                                          server, args.processes, args.slices,
                                                          args.rtt))
                    with open(args.json, "w", encoding="utf-8") as handle:   # so far
                        json.dump(results, handle, indent=1)
                continue
            source = tree_digest(root)
            floor = measure_floor(root, files, tool)
            floor.update(files=len(files), mb=sum(f[2] for f in files) / MB,
                         generate_s=made, backup_floor_s=floor["backup_cpu_s"] / floor_processes,
                         restore_floor_s=floor["restore_cpu_s"] / floor_processes)
            floor["write_floor_s"] = measure_write_floor(work, dataset, root, files,
                                                         floor_processes)
            floor["source_read_floor_s"] = measure_read_floor(root, floor_processes)
            floor["start_floor_s"] = start_floor
            results["datasets"][dataset] = floor
            print(f"{dataset}: {len(files)} files, {floor['mb']:.1f} MB, made in {made:.1f} s; "
                  f"floor backup {floor['backup_floor_s']:.2f} s, restore "
                  f"{floor['restore_floor_s']:.2f} s ({floor_processes} processes); writing "
                  f"the files {floor['write_floor_s']:.2f} s, listing and reading them "
                  f"{floor['source_read_floor_s']:.2f} s", flush=True)
            for target in args.targets:
                for step in bench_target(tool, work, dataset, target, source, server,
                                         args.processes, args.keep, args.rtt, args.runs):
                    base = {"backup": floor["backup_floor_s"],
                            "no-change": floor["backup_floor_s"],
                            "restore": floor["restore_floor_s"],
                            "verify": floor["restore_floor_s"]}.get(step["step"])
                    step["floor_ratio"] = step["wall_s"] / base if base else float("nan")
                    step["write_floor_ratio"] = step["wall_s"] / (
                        floor["restore_floor_s"] + floor["write_floor_s"]) \
                        if step["step"] == "restore" else float("nan")
                    step["bound_s"] = step_bound(step["step"], target, floor,
                                                 step.get("objects_read_floor_s", float("nan")))
                    step["bound_ratio"] = step["wall_s"] / step["bound_s"]
                    step["bound_floor_ratio"] = step["bound_s"] / base if base else float("nan")
                    results["steps"].append(step)
        count = max(1, round(PLANNER_ENTRIES * scale)) if args.planner is None else args.planner
        if count and not args.rtt and not args.slices:
            for mode in PLANNER_MODES:
                print(f"planner: {count} synthetic entries, {mode} ...", flush=True)
                results["planner"].append(run_planner(count, mode))
                if "error" in results["planner"][-1]:
                    print("planner check FAILED:\n" + results["planner"][-1]["error"])
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    if args.scale:
        print_scale_table(results["scale_steps"])
        print()
    if results["slices"]:
        print_slices_table(results["slices"])
        print()
    rows = table_rows(results["steps"], results["planner"])
    if rows:
        print_table(rows)
    if args.rtt and results["steps"]:
        print()
        print_rtt_table(results["steps"])
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=1)
    for planner in (p for p in results["planner"] if "seconds" in p):
        print(f"planner, {planner['mode']}: {planner['entries']} entries planned in "
              f"{planner['seconds']:.2f} s; peak {planner['peak_mb']:.0f} MB")
    print(f"results: {args.json}" + (f"; files kept in {work}" if args.keep else ""))
    failed = any(s["exit_code"] or s.get("restore_problems")
                 for s in results["steps"] + results.get("scale_steps", []))
    failed = failed or any(any(r["exit_codes"]) or r["same_objects"] is False
                           for r in results["slices"])
    return 1 if failed or any("error" in p for p in results["planner"]) else 0


if __name__ == "__main__":
    sys.exit(main())
