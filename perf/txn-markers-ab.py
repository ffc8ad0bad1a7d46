#!/usr/bin/env python3
"""A/B of transaction commit latency on a 3-node loopback cluster (issue 13, marker batching).

Each round starts three nodes of one binary (one shard each, fresh data directories),
creates a topic of PARTITIONS single-replica partitions spread over the nodes (so about two
thirds of a transaction's markers go to other nodes than its coordinator), and runs one
kafka-python transactional producer that writes one record to every partition per
transaction and commits, TXNS times. It records each commit_transaction()'s latency and
the CPU seconds the three brokers used. Rounds alternate the binaries (A B, then B A, ...)
so the shared host's drift favours neither; the summary gives per-binary medians of each
round's p50/p99 and the per-round B/A ratios.

    tests/.venv/bin/python perf/txn-markers-ab.py OLD_SLUICE NEW_SLUICE \\
        [--rounds 3] [--partitions 24] [--txns 200]

Needs tests/.venv (scripts/install-test-deps.sh). Prints a markdown table.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pids):
    ticks = 0
    for p in pids:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_cluster(binary, work):
    kports = [free_port() for _ in range(3)]
    rports = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{rports[i]}" for i in range(3))
    procs = []
    for i in range(3):
        log = open(os.path.join(work, f"n{i + 1}.log"), "w")
        procs.append(
            subprocess.Popen(
                [binary, "start", "--node-id", str(i + 1),
                 "--data-dir", os.path.join(work, f"d{i + 1}"), "--shards", "1",
                 "--listen", f"127.0.0.1:{kports[i]}",
                 "--rpc-listen", f"127.0.0.1:{rports[i]}", "--voters", voters],
                stdout=log, stderr=subprocess.STDOUT))
    return procs, ",".join(f"127.0.0.1:{p}" for p in kports)


def create_topic(bootstrap, partitions):
    deadline = time.time() + 60
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap)
            if len(admin.describe_cluster()["brokers"]) == 3:
                admin.create_topics([NewTopic("wide", partitions, 1)])
                break
        except Exception as e:  # the cluster is still forming
            if "TopicAlreadyExists" in repr(e):
                break
            if time.time() > deadline:
                sys.exit(f"creating the topic: {e!r}")
        time.sleep(0.5)
    time.sleep(3)  # every partition elects its leader


def run(binary, partitions, txns):
    work = tempfile.mkdtemp(prefix="txn-markers-")
    procs, bootstrap = start_cluster(binary, work)
    try:
        create_topic(bootstrap, partitions)
        p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id="wide-writer",
                          linger_ms=0)
        p.init_transactions()

        def one(timed):
            p.begin_transaction()
            for part in range(partitions):
                p.send("wide", b"x" * 100, partition=part)
            p.flush()  # the records are written; what follows is the commit alone
            t0 = time.perf_counter()
            p.commit_transaction()
            return (time.perf_counter() - t0) * 1000

        # Warm-up: the coordinator, leaders and connections are in place before timing.
        for _ in range(10):
            one(False)
        pids = [x.pid for x in procs]
        cpu0 = cpu_seconds(pids)
        lat = [one(True) for _ in range(txns)]
        cpu = cpu_seconds(pids) - cpu0
        p.close()
        lat.sort()
        return {
            "p50": lat[len(lat) // 2],
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "cpu_ms_per_txn": cpu * 1000 / txns,
        }
    finally:
        for x in procs:
            x.terminate()
        for x in procs:
            try:
                x.wait(10)
            except subprocess.TimeoutExpired:
                x.kill()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=24)
    ap.add_argument("--txns", type=int, default=200)
    args = ap.parse_args()
    rows = {"A": [], "B": []}
    print("| round | binary | commit p50 ms | commit p99 ms | broker CPU ms per txn |")
    print("|---|---|---|---|---|")
    for r in range(1, args.rounds + 1):
        order = ["A", "B"] if r % 2 else ["B", "A"]
        for which in order:
            binary = args.a if which == "A" else args.b
            res = run(binary, args.partitions, args.txns)
            rows[which].append(res)
            print(f"| {r} | {which} | {res['p50']:.1f} | {res['p99']:.1f} "
                  f"| {res['cpu_ms_per_txn']:.2f} |", flush=True)
    print()
    print("| metric | A median | B median | median of per-round B/A |")
    print("|---|---|---|---|")
    for key in ("p50", "p99", "cpu_ms_per_txn"):
        a = [x[key] for x in rows["A"]]
        b = [x[key] for x in rows["B"]]
        ratios = [y / x for x, y in zip(a, b) if x > 0]
        print(f"| {key} | {statistics.median(a):.2f} | {statistics.median(b):.2f} "
              f"| {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
