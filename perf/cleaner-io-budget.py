#!/usr/bin/env python3
"""The log cleaner's IO budget (`--log-cleaner-io-max-bytes-per-second`, Kafka's
`log.cleaner.io.max.bytes.per.second`), measured: the rate a cleaning pass moves bytes
at, without a budget and under one.

Each run starts one `sluice` node (2 shards, a fresh data directory), writes --mib MiB of
1 KiB records over --keys keys to a one-partition compacted topic with 1 MiB segments, with
the cleaner's interval past the writes, then lets the cleaner run (interval 200 ms by a
restart) and reads `/metrics` until its counters stop moving. Printed per run: the
cleaner's pass seconds, records removed, bytes the log shrank by, and the bytes the pass
read and wrote per pass-second (map + clean reads of the cleanable range, writes of what
it kept: about 2 × before + after). With a budget the rate must stay at or below the
budget's per-shard share (the rate split over the shards; one partition is on one shard).

    tests/.venv/bin/python perf/cleaner-io-budget.py --binary target/release/sluice \\
        --mib 64 --budget 4000000

Needs confluent-kafka (tests/.venv has it, from scripts/install-test-deps.sh).
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import free_port  # noqa: E402

TOPIC = "budgeted"


def start(binary, data, port, admin_port, extra):
    p = subprocess.Popen(
        [binary, "start", "--node-id", "1", "--data-dir", data,
         "--listen", f"127.0.0.1:{port}", "--shards", "2",
         "--admin-listen", f"127.0.0.1:{admin_port}"] + extra,
        stdout=subprocess.PIPE, stderr=open(f"{data}.log", "a"))
    for line in p.stdout:
        if b"ready" in line:
            return p
    sys.exit(f"sluice exited before ready (see {data}.log)")


def stop(p):
    p.send_signal(signal.SIGTERM)
    if p.wait(timeout=120) != 0:
        sys.exit(f"sluice exited with {p.returncode}")


def cleaner(admin_port):
    """(pass seconds, records removed, bytes reclaimed), summed over the shards."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics").read().decode()
    sums = {"sluice_log_cleaner_pass_seconds_sum": 0.0,
            "sluice_log_cleaner_records_removed_total": 0.0,
            "sluice_log_cleaner_bytes_reclaimed_total": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return tuple(sums.values())


def run(args, budget):
    work = tempfile.mkdtemp(prefix="cleaner-budget-")
    data = os.path.join(work, "data")
    port, admin_port = free_port(), free_port()
    # Written with the cleaner held off, so every pass below starts from the same log.
    p = start(args.binary, data, port, admin_port, ["--log-cleaner-interval-ms", str(10 ** 9)])
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    configs = {"cleanup.policy": "compact", "segment.bytes": str(2 ** 20),
               "min.cleanable.dirty.ratio": "0.01"}
    for f in admin.create_topics([NewTopic(TOPIC, 1, 1, config=configs)]).values():
        f.result()
    prod = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 5,
                     "batch.size": 65536})
    value = b"v" * 1000
    for i in range(args.mib * 1024):
        while True:
            try:
                prod.produce(TOPIC, key=f"key-{i % args.keys}".encode(), value=value,
                             partition=0)
                break
            except BufferError:
                prod.poll(0.01)
    prod.flush(60)
    stop(p)
    extra = ["--log-cleaner-interval-ms", "200"]
    if budget:
        extra += ["--log-cleaner-io-max-bytes-per-second", str(budget)]
    p = start(args.binary, data, port, admin_port, extra)
    # A pass's counters move when it ends: wait for the first, then for them to settle.
    last, still, deadline = None, 0, time.time() + 600
    while (still < 5 or not last[1]) and time.time() < deadline:
        time.sleep(1)
        now = cleaner(admin_port)
        still = still + 1 if now == last else 0
        last = now
    stop(p)
    shutil.rmtree(work, ignore_errors=True)
    return last


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--budget", type=float, default=4_000_000,
                    help="bytes per second, all shards together")
    args = ap.parse_args()
    print(f"{args.mib} MiB of 1 KiB records over {args.keys} keys, 1 MiB segments; "
          f"budget {args.budget:.0f} B/s over 2 shards")
    print("run         pass_s  removed  reclaimed_MiB  moved_MiB/pass_s")
    for budget in (None, args.budget):
        secs, removed, reclaimed = run(args, budget)
        before = args.mib * 2 ** 20
        moved = 2 * before + (before - reclaimed)
        name = "budgeted" if budget else "unlimited"
        print(f"{name:<10} {secs:7.2f} {removed:8.0f} {reclaimed / 2 ** 20:14.1f} "
              f"{moved / 2 ** 20 / max(secs, 1e-9):17.1f}", flush=True)


if __name__ == "__main__":
    main()
