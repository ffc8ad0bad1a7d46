#!/usr/bin/env python3
"""Start-up after kill -9 with and without recovery points, alternating, on one data
directory (issue 16: "start-up time after kill -9 with 10,000 partitions and 20 GiB").

Takes a data directory a sluice node wrote (`perf/partition-scale.py --keep` leaves one:
10,000 small partitions and ~20 GiB in 16), and for --rounds rounds: starts the node, waits
for its ready line, kill -9s it; every other start first moves each partition's
`recovery-point` file aside (so the tail segments are read and CRC-checked in full, as
before recovery points existed) and puts them back after the kill. Nothing is written
between starts, so the files stay valid. Reports spawn -> ready and the partitions' opening
(node log phases) per variant: every value and the median.

    tests/.venv/bin/python perf/restart-recovery.py /work/partition-scale-XXXX/data \\
        --binary target/release/sluice --rounds 5
"""

import argparse
import importlib.util
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import cpu_seconds, free_port  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "partition_scale", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "partition-scale.py"))
partition_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(partition_scale)

RECOVERY_POINT = "recovery-point"
ASIDE = "recovery-point.aside"


def move_all(data, src, dst):
    """Renames `src` to `dst` in every partition directory; returns how many."""
    n = 0
    for entry in os.scandir(data):
        path = os.path.join(entry.path, src)
        if entry.is_dir() and os.path.exists(path):
            os.rename(path, os.path.join(entry.path, dst))
            n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    node = partition_scale.Node(args.binary, args.data, free_port(), args.shards)
    results = {"with recovery points": [], "tails scanned in full": []}
    counts = {}
    for r in range(2 * args.rounds):
        variant = list(results)[r % 2]
        if r % 2:
            counts[variant] = move_all(args.data, RECOVERY_POINT, ASIDE)
        else:
            counts[variant] = sum(
                os.path.exists(os.path.join(e.path, RECOVERY_POINT))
                for e in os.scandir(args.data) if e.is_dir())
        mark = os.path.getsize(f"{args.data}.log") if os.path.exists(f"{args.data}.log") else 0
        ready = node.start()
        cpu = cpu_seconds(node.pid)
        opening = partition_scale.start_phases(f"{args.data}.log", mark) or 0.0
        node.kill9()
        if r % 2:
            move_all(args.data, ASIDE, RECOVERY_POINT)
        results[variant].append((ready, opening, cpu))

    print(f"| {os.path.basename(args.binary)} --shards {args.shards}, kill -9 then start, "
          f"{args.rounds} rounds each, alternating | spawn -> ready, s | opening, s | "
          "CPU s to ready |")
    print("| --- | --- | --- | --- |")
    for variant, runs in results.items():
        ready = ", ".join(f"{x[0]:.2f}" for x in runs)
        print(f"| {variant} ({counts[variant]} files) | median "
              f"**{statistics.median(x[0] for x in runs):.2f}** ({ready}) | median "
              f"{statistics.median(x[1] for x in runs):.2f} | median "
              f"{statistics.median(x[2] for x in runs):.1f} |")


if __name__ == "__main__":
    main()
