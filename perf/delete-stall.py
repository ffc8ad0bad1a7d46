#!/usr/bin/env python3
"""How long deleting a segment file holds up every other fdatasync on the same filesystem.

A writer thread appends 4 KiB with O_DIRECT and fdatasyncs, over and over (a log's group
commit in miniature), while the main thread deletes --files segment files of --segment-mib
MiB each, one every --gap-ms, in one of two ways:

  unlink   the file at once (what a log did before `Storage::discard`);
  steps    ftruncate it --step-mib at a time with --pause-ms between steps, then unlink
           (what `DmaStorage::discard` does: shard/src/dma.rs, DISCARD_STEP_BYTES).

On ext4 freeing a large file's blocks is one journal transaction, and every fdatasync that
needs a journal commit waits for it. Prints the writer's sync latency per mode (p50, p99,
p99.9, max) and the longest single delete call, modes alternating for --rounds rounds so
host drift hits both. Standard library only; runs in --dir (default: a temporary directory
under the current one, so on the filesystem the broker's data would use).

    python3 perf/delete-stall.py [--dir DIR] [--rounds 2] [--files 8] [--segment-mib 64]
        [--step-mib 4] [--pause-ms 5] [--gap-ms 300]
"""
import argparse
import mmap
import os
import tempfile
import threading
import time

PAGE = 4096


def make_segment(path, mib):
    buf = mmap.mmap(-1, 1 << 20)
    buf.write(b"x" * (1 << 20))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT, 0o644)
    try:
        for _ in range(mib):
            os.write(fd, buf)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def delete(path, mode, step, pause):
    if mode == "steps":
        fd = os.open(path, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            while size > 0:
                size = max(0, size - step)
                os.ftruncate(fd, size)
                time.sleep(pause)
        finally:
            os.close(fd)
    os.unlink(path)


def run(mode, args, dir):
    paths = []
    for i in range(args.files):
        p = os.path.join(dir, f"{i:020}.log")
        make_segment(p, args.segment_mib)
        paths.append(p)
    lat = []
    stop = threading.Event()

    def syncer():
        fd = os.open(os.path.join(dir, "wal"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_DIRECT, 0o644)
        page = mmap.mmap(-1, PAGE)
        page.write(b"y" * PAGE)
        off = 0
        try:
            while not stop.is_set():
                t = time.perf_counter()
                os.pwrite(fd, page, off)
                os.fdatasync(fd)
                lat.append(time.perf_counter() - t)
                off = (off + PAGE) % (64 << 20)
                time.sleep(0.001)
        finally:
            os.close(fd)

    th = threading.Thread(target=syncer)
    th.start()
    time.sleep(0.5)
    longest = 0.0
    for p in paths:
        t = time.perf_counter()
        delete(p, mode, args.step_mib << 20, args.pause_ms / 1000)
        longest = max(longest, time.perf_counter() - t)
        time.sleep(args.gap_ms / 1000)
    stop.set()
    th.join()
    lat.sort()

    def q(x):
        return lat[min(len(lat) - 1, int(x * len(lat)))] * 1000

    return len(lat), q(0.5), q(0.99), q(0.999), lat[-1] * 1000, longest * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--segment-mib", type=int, default=64)
    ap.add_argument("--step-mib", type=int, default=4)
    ap.add_argument("--pause-ms", type=float, default=5)
    ap.add_argument("--gap-ms", type=float, default=300)
    args = ap.parse_args()
    base = args.dir or tempfile.mkdtemp(prefix="delete-stall-", dir=".")
    os.makedirs(base, exist_ok=True)
    print(f"{args.files} files of {args.segment_mib} MiB per run; steps of {args.step_mib} MiB, "
          f"{args.pause_ms} ms apart; in {base}\n")
    print("| round | mode | syncs | sync p50 ms | p99 ms | p99.9 ms | max ms | longest delete call ms |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        for r in range(1, args.rounds + 1):
            for mode in ("unlink", "steps"):
                n, p50, p99, p999, mx, longest = run(mode, args, base)
                print(f"| {r} | {mode} | {n} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {mx:.2f} | {longest:.1f} |")
    finally:
        for name in os.listdir(base):
            os.unlink(os.path.join(base, name))
        if not args.dir:
            os.rmdir(base)


if __name__ == "__main__":
    main()
