#!/usr/bin/env python3
"""Moving a partition between log directories (JBOD, AlterReplicaLogDirs) under load: how
long the move takes against a plain copy of the same files on the same disk (measured in the
same run), how long appends were stopped for the switch, and what a producer writing to the
partition meanwhile saw.

    tests/.venv/bin/python perf/log-dir-move.py [--backlog-mib 512] [--rate 2000]
        [--binary target/release/sluice] [--out perf/results/DATE-log-dir-move.md]

Both directories are on the same file system (this host has one disk): the copy reads and
writes the same device, as a plain `cp` of the partition does.
"""

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Producer
from kafka.admin import KafkaAdminClient, NewTopic
import kafka.errors as Errors

TOPIC = "mv"
RECORD = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else float("nan")


def fill(bootstrap, mib):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "batch.size": 1 << 20, "queue.buffering.max.kbytes": 1 << 20})
    value = os.urandom(RECORD)
    for _ in range(mib * 1024):
        while True:
            try:
                p.produce(TOPIC, value, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)


def raw_copy_mib_s(src, scratch):
    """A plain copy of the partition directory, synced: the disk's copy rate."""
    dst = os.path.join(scratch, "copy")
    size = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
    t = time.time()
    shutil.copytree(src, dst)
    for f in os.listdir(dst):
        fd = os.open(os.path.join(dst, f), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    took = time.time() - t
    shutil.rmtree(dst)
    return size / took / (1 << 20), size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--backlog-mib", type=int, default=512)
    ap.add_argument("--rate", type=int, default=2000, help="records/s produced during the move")
    ap.add_argument("--out")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="log-dir-move-", dir=os.environ.get("TMPDIR", "/tmp"))
    d1, d2 = os.path.join(work, "d1"), os.path.join(work, "d2")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    log = open(os.path.join(work, "broker.log"), "w")
    broker = subprocess.Popen(
        [args.binary, "start", "--data-dir", f"{d1},{d2}", "--listen", bootstrap,
         "--shards", "1", "--no-pin", "--admin-listen", "off"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.5)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
        time.sleep(0.5)
        t = time.time()
        fill(bootstrap, args.backlog_mib)
        fill_s = time.time() - t
        # Let the fill's flushes end before measuring the producer's latency.
        time.sleep(5)
        brokers = admin.describe_log_dirs()
        node = brokers[0]["broker"]
        where = {d["log_dir"]: d for d in brokers[0]["log_dirs"]}
        src_root = next(p for p, d in where.items() if d["topics"])
        dest_root = next(p for p in where if p != src_root)
        raw_mib_s, size = raw_copy_mib_s(os.path.join(src_root, f"{TOPIC}-0"), work)

        # The producer: `rate` records/s, each delivery's latency.
        lat_before, lat_during, stop, moving = [], [], threading.Event(), threading.Event()
        errors = []

        def produce():
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                          "enable.idempotence": True})
            value = os.urandom(RECORD)
            # Connected before anything is timed.
            p.produce(TOPIC, value, partition=0)
            p.flush(30)
            interval = 1.0 / args.rate
            next_at = time.time()
            while not stop.is_set():
                sent = time.time()
                into = lat_during if moving.is_set() else lat_before

                def done(err, _msg, sent=sent, into=into):
                    if err:
                        errors.append(str(err))
                    else:
                        into.append((time.time() - sent) * 1000)
                p.produce(TOPIC, value, partition=0, on_delivery=done)
                p.poll(0)
                next_at += interval
                time.sleep(max(0, next_at - time.time()))
            p.flush(60)

        writer = threading.Thread(target=produce)
        writer.start()
        time.sleep(3)
        moving.set()
        t = time.time()
        res = admin.alter_replica_log_dirs({(TOPIC, 0, node): dest_root})
        assert list(res.values()) == [Errors.NoError], res
        while True:
            d = {x["log_dir"]: x for x in admin.describe_log_dirs()[0]["log_dirs"]}
            parts = [p for t_ in d[dest_root]["topics"] for p in t_["partitions"]]
            if parts and not any(p["is_future_key"] for p in parts) and not d[src_root]["topics"]:
                break
            time.sleep(0.05)
        move_s = time.time() - t
        time.sleep(1)
        stop.set()
        writer.join()
        admin.close()
    finally:
        broker.terminate()
        broker.wait(30)
        log.close()
    text = open(os.path.join(work, "broker.log")).read()
    m = re.search(r"moved to log directory \S+ in (\d+) ms: (\d+) passes, (\d+) bytes copied; "
                  r"appends stopped for (\d+) ms \(the last pass: (\d+) bytes\)", text)
    if not m:
        print(text[-3000:], file=sys.stderr)
        sys.exit("no move line in the broker log")
    took_ms, passes, copied, stopped_ms, last = map(int, m.groups())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    move_mib_s = size / (took_ms / 1000) / (1 << 20)
    rows = [
        ("partition size (MiB)", f"{size / (1 << 20):.0f}"),
        ("filled in (s)", f"{fill_s:.1f}"),
        ("plain copy + fsync of the partition, same disk (MiB/s)", f"{raw_mib_s:.0f}"),
        ("move, request to switched (s, broker log)", f"{took_ms / 1000:.2f}"),
        ("move, request to DescribeLogDirs showing it moved (s)", f"{move_s:.2f}"),
        ("move rate (MiB/s of the partition)", f"{move_mib_s:.0f}"),
        ("move rate / plain copy rate", f"{move_mib_s / raw_mib_s:.2f}"),
        ("copy passes / bytes copied (MiB)", f"{passes} / {copied / (1 << 20):.0f}"),
        ("appends stopped for the switch (ms)", f"{stopped_ms}"),
        ("bytes copied with appends stopped (KiB)", f"{last / 1024:.0f}"),
        (f"produce latency before, p50 / p99 / max (ms, {args.rate} rec/s)",
         f"{pct(lat_before, 50):.1f} / {pct(lat_before, 99):.1f} / {max(lat_before):.1f}"),
        ("produce latency during the move, p50 / p99 / max (ms)",
         f"{pct(lat_during, 50):.1f} / {pct(lat_during, 99):.1f} / {max(lat_during):.1f}"),
        ("records produced during the move / delivery errors",
         f"{len(lat_during)} / {len(errors)}"),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Moving a partition between log directories under load "
                    f"({time.strftime('%Y-%m-%d')})\n\n")
            f.write(f"Commit {commit}; `tests/.venv/bin/python perf/log-dir-move.py "
                    f"--backlog-mib {args.backlog_mib} --rate {args.rate} --out {args.out}` "
                    f"on this 2-core host, both log directories on its one disk, one shard.\n\n")
            f.write(table + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
