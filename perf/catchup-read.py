#!/usr/bin/env python3
"""How fast a new replica catches up from its leader's partition log, A/B over two sluice
binaries (issue 12: reassignments, replication throttles).

For each binary in turn (alternating for --rounds rounds, so host drift hits both) it starts
three real nodes on loopback (one shard each), creates topic `cu` with one partition and one
replica, produces --mib MiB to it (--value-kib KiB values, acks=all), then reassigns the
partition to that node plus another (a one-replica log is adopted as a Raft group and the new
replica reads all of it from the leader's log on disk) and measures until
ListPartitionReassignments is empty: the catch-up time, its rate, and the leader node's CPU
seconds over it (utime + stime from /proc). With --throttle BYTES_PER_S the topic's
`leader.replication.throttled.replicas` and the leader node's
`leader.replication.throttled.rate` are set first, as `kafka-reassign-partitions.sh
--throttle` sets them. Prints one line per run and a markdown table of medians.

    tests/.venv/bin/python perf/catchup-read.py OLD_SLUICE NEW_SLUICE [--rounds 3] [--mib 256]
        [--value-kib 64] [--throttle BYTES_PER_S]

Needs kafka-python (scripts/install-test-deps.sh puts it in tests/.venv).
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

TOPIC = "cu"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(what, timeout, probe):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            got = probe()
            if got:
                return got
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def broker_config(admin, node, key):
    """`key`'s value as broker `node` describes it (the admin client asks that broker)."""
    res = admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, str(node))])
    for by_name in res.values():
        entry = by_name.get(str(node), {}).get(key)
        if entry is not None:
            return entry.get("value")
    return None


def run(binary, args):
    root = tempfile.mkdtemp(prefix="catchup-", dir=args.dir)
    ids = [1, 2, 3]
    kafka = {i: free_port() for i in ids}
    rpc = {i: free_port() for i in ids}
    voters = ",".join(f"{i}@127.0.0.1:{rpc[i]}" for i in ids)
    procs = {}
    try:
        for i in ids:
            log = open(os.path.join(root, f"n{i}.log"), "a")
            procs[i] = subprocess.Popen(
                [binary, "start", "--shards", "1", "--no-pin",
                 "--data-dir", os.path.join(root, f"d{i}"),
                 "--listen", f"127.0.0.1:{kafka[i]}", "--node-id", str(i),
                 "--rpc-listen", f"127.0.0.1:{rpc[i]}", "--voters", voters],
                stdout=subprocess.DEVNULL, stderr=log)
        boot = ",".join(f"127.0.0.1:{kafka[i]}" for i in ids)
        admin = wait_until("the cluster", 60, lambda: KafkaAdminClient(
            bootstrap_servers=boot, request_timeout_ms=10000))
        wait_until("three brokers", 60,
                   lambda: len(admin.describe_cluster()["brokers"]) == 3)
        # A fresh client: one made before every broker registered may not reach them all.
        admin.close()
        admin = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=10000)
        def create():
            try:
                admin.create_topics([NewTopic(TOPIC, 1, 1)])
            except TopicAlreadyExistsError:
                pass  # an earlier try that raised after the controller took it
            return True

        wait_until("the topic created", 60, create)

        def leader():
            t = admin.describe_topics([TOPIC])[0]
            p = t["partitions"][0]
            return p["leader_id"] if p["leader_id"] >= 0 else None

        owner = wait_until("a leader", 60, leader)
        joining = next(i for i in ids if i != owner)
        producer = KafkaProducer(bootstrap_servers=boot, acks="all", linger_ms=5,
                                 batch_size=1 << 20, max_request_size=2 << 20)
        value = b"x" * (args.value_kib << 10)
        for _ in range((args.mib << 10) // args.value_kib):
            producer.send(TOPIC, value, partition=0)
        producer.flush()
        producer.close()
        if args.throttle:
            wait_until("the topic throttled", 60, lambda: admin.alter_configs([ConfigResource(
                ConfigResourceType.TOPIC, TOPIC,
                configs={"leader.replication.throttled.replicas": f"0:{owner}"})]) or True)
            wait_until("the rate set", 60, lambda: admin.alter_configs([ConfigResource(
                ConfigResourceType.BROKER, str(owner),
                configs={"leader.replication.throttled.rate": str(args.throttle)})]) or True)
            # The leader's node has the rate (and, applied in order, the topic's list).
            wait_until("the rate on the leader's node", 60,
                       lambda: broker_config(admin, owner, "leader.replication.throttled.rate")
                       == str(args.throttle))
        cpu0 = cpu_seconds(procs[owner].pid)
        t0 = time.monotonic()
        wait_until("the move accepted", 60, lambda: admin.alter_partition_reassignments(
            {TopicPartition(TOPIC, 0): [owner, joining]}) or True)
        wait_until("the move", 600,
                   lambda: not admin.list_partition_reassignments())
        took = time.monotonic() - t0
        cpu = cpu_seconds(procs[owner].pid) - cpu0
        admin.close()
        return took, cpu
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--value-kib", type=int, default=64)
    ap.add_argument("--throttle", type=int, default=0)
    ap.add_argument("--dir", default=os.getcwd())
    args = ap.parse_args()
    results = {"old": [], "new": []}
    for r in range(args.rounds):
        for which in ("old", "new"):
            took, cpu = run(getattr(args, which), args)
            results[which].append((took, cpu))
            print(f"round {r + 1} {which}: {args.mib} MiB caught up in {took:.2f} s "
                  f"({args.mib / took:.0f} MiB/s), leader CPU {cpu:.2f} s", flush=True)
    print()
    print("| binary | catch-up s (median) | MiB/s | leader CPU s |")
    print("|---|---|---|---|")
    for which in ("old", "new"):
        took = statistics.median(t for t, _ in results[which])
        cpu = statistics.median(c for _, c in results[which])
        print(f"| {which} | {took:.2f} | {args.mib / took:.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
