#!/usr/bin/env python3
"""How much slower the floor's own work gets when two processes do it at once.

The benchmark's floor is the CPU time of the raw operations measured in one process with
the machine otherwise idle, divided by the number of processes.  A backup with 2 processes
runs two compressors at the same time, and XZ is memory-bound (its match finder walks
megabytes of tables): on a machine whose cores share caches and memory bandwidth, each of
them then needs more CPU seconds for the same bytes.  This script measures that factor on
the `mixed` data set's XZ work (its text files up to 2 MB, made the same way, same seed):
the same list of compressions (every SAMPLE-th of those files, about 10 s of work) run by 1
process, then right after by 2 processes at once (each doing the whole list), ROUNDS times.
Each round's ratio compares two runs minutes apart at most, so a slow drift of the shared
machine's speed cancels out; the median of the rounds' ratios is the result.

Usage (from the repository root):  python bench/contention.py
Prints the CPU seconds per process for each round, its ratio, and the median ratio.
"""

from __future__ import annotations

import os
import random
import resource
import statistics
import sys
import time
from multiprocessing import get_context

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the data sets and the tool, loaded the benchmark's way)

ROUNDS = 7
SAMPLE = 4


def text_files() -> list[bytes]:
    """The `mixed` set's XZ inputs: every text file up to 2 MB, as bench.py makes them."""
    corpus = bench.make_corpus(random.Random(bench.SEED))
    rng = random.Random(f"{bench.SEED}-mixed")
    out = []
    for _, kind, size in bench.dataset_files("mixed", 1.0, rng):
        if kind == "text" and size <= 2 * bench.MB:
            start = random.Random(size).randrange(len(corpus) - size)
            out.append(corpus[start:start + size])
    return out[::SAMPLE]


def compress_all(files: list[bytes]) -> None:
    tool = bench.load_module("encrypted_s3_backup", bench.TOOL_PATH)
    for data in files:
        compressor = tool.make_compressor("xz", len(data), bench.LEVEL, bench.LEVEL)
        compressor.compress(data)
        compressor.flush()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(files: list[bytes], processes: int) -> float:
    """CPU seconds per process to compress the list, ``processes`` copies at once."""
    context = get_context("fork")
    before = children_cpu()
    workers = [context.Process(target=compress_all, args=(files,)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (children_cpu() - before) / processes


def main() -> int:
    files = text_files()
    print(f"{len(files)} text files, {sum(map(len, files)) / bench.MB:.1f} MB, XZ level "
          f"{bench.LEVEL}, dictionary fitted to each file")
    ratios = []
    for round_ in range(1, ROUNDS + 1):
        started = time.perf_counter()
        alone, together = run(files, 1), run(files, 2)
        ratios.append(together / alone)
        print(f"round {round_}: alone {alone:.2f} CPU s, two at once {together:.2f} CPU s "
              f"each: {ratios[-1]:.2f}x ({time.perf_counter() - started:.1f} s wall)",
              flush=True)
    print(f"two at once need {statistics.median(ratios):.2f}x the CPU seconds of one alone "
          f"(median of {ROUNDS} rounds; lowest {min(ratios):.2f}x, highest {max(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
