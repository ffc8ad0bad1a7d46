#!/usr/bin/env python3
"""Times how long a partition goes without a leader when its leader's node is stopped with
SIGTERM, with and without controlled shutdown (`--controlled-shutdown-enable`), on a 3-node
sluice cluster on this host (issue 12).

For each mode it starts three real nodes on loopback (one shard each), creates topic `cs`
(one partition, three replicas) and then, ROUNDS times: sends SIGTERM to the node leading
the partition and measures until a survivor's Metadata names another leader, until an
acks=all produce through the survivors is acknowledged (a fresh producer per try, no
retries, so the figure includes up to one client set-up, as in controller-failover.py), and
until the stopped process has exited (and that it exited 0); then restarts the node and
waits until every node lists it again. Prints a markdown table of min / median / max in
milliseconds per mode.

    tests/.venv/bin/python perf/controlled-shutdown.py [--binary target/release/sluice] [--rounds 5]

Needs kafka-python (scripts/install-test-deps.sh puts it in tests/.venv).
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary, root, node_id, kafka, rpc, voters, extra):
        self.binary, self.node_id = binary, node_id
        self.kafka, self.rpc, self.voters, self.extra = kafka, rpc, voters, extra
        self.dir = os.path.join(root, f"d{node_id}")
        self.log = os.path.join(root, f"n{node_id}.log")
        self.proc = None

    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"

    def start(self):
        args = [self.binary, "start", "--shards", "1", "--no-pin",
                "--data-dir", self.dir, "--listen", self.bootstrap(),
                "--node-id", str(self.node_id), "--rpc-listen", f"127.0.0.1:{self.rpc}",
                "--voters", self.voters] + self.extra
        out = open(self.log, "a")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=out)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)


def metadata(bootstrap):
    """(broker ids, {topic: [leader per partition]}) as `bootstrap` says."""
    a = admin(bootstrap)
    try:
        c = a.describe_cluster()
        brokers = sorted(b["broker_id"] for b in c["brokers"])
        topics = {}
        for t in a.describe_topics():
            topics[t["name"]] = [p["leader_id"] for p in sorted(t["partitions"], key=lambda p: p["partition_index"])]
        return brokers, topics
    finally:
        a.close()


def until(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (KafkaError, OSError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"timed out: {what}")


def produced(bootstrap_servers):
    """One acks=all record to partition 0 of `cs`, no retries; True if acknowledged."""
    p = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=0,
                      request_timeout_ms=2000, max_block_ms=2000)
    try:
        p.send("cs", b"x", partition=0).get(timeout=3)
        return True
    finally:
        p.close(timeout=1)


def summary(name, xs):
    ms = [x * 1000 for x in xs]
    return f"| {name} | {len(ms)} | {min(ms):.0f} | {statistics.median(ms):.0f} | {max(ms):.0f} |"


def run(binary, rounds, enabled):
    root = tempfile.mkdtemp(prefix="sluice-cs-")
    kafka = [free_port() for _ in range(3)]
    rpc = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{rpc[i]}" for i in range(3))
    extra = ["--controlled-shutdown-enable", "true" if enabled else "false",
             "--auto-leader-rebalance-enable", "false"]
    nodes = [Node(binary, root, i + 1, kafka[i], rpc[i], voters, extra) for i in range(3)]
    elect, ack, exited = [], [], []
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            until(f"node {n.node_id} listing 3 brokers",
                  lambda n=n: metadata(n.bootstrap())[0] == [1, 2, 3])
        a = admin(nodes[0].bootstrap())
        a.create_topics([NewTopic("cs", 1, 3)])
        a.close()
        until("a leader for cs", lambda: metadata(nodes[0].bootstrap())[1]["cs"][0] > 0)
        until("a first produce to cs", lambda: produced([n.bootstrap() for n in nodes]))
        for _ in range(rounds):
            leader = metadata(nodes[0].bootstrap())[1]["cs"][0]
            victim = nodes[leader - 1]
            survivors = [n for n in nodes if n is not victim]
            exit_at = {}

            def reap(proc=victim.proc):
                exit_at["code"] = proc.wait()
                exit_at["t"] = time.monotonic()

            t0 = time.monotonic()
            victim.proc.send_signal(signal.SIGTERM)
            reaper = threading.Thread(target=reap)
            reaper.start()
            until("a new leader for cs", lambda: metadata(survivors[0].bootstrap())[1]["cs"][0]
                  not in (-1, leader))
            elect.append(time.monotonic() - t0)
            until("an acks=all produce through the survivors",
                  lambda: produced([n.bootstrap() for n in survivors]))
            ack.append(time.monotonic() - t0)
            reaper.join(timeout=30)
            if exit_at.get("code") != 0:
                raise RuntimeError(f"node {victim.node_id} exited {exit_at.get('code')} after SIGTERM")
            exited.append(exit_at["t"] - t0)
            victim.start()
            until("the restarted node listed everywhere", lambda: all(
                metadata(n.bootstrap())[0] == [1, 2, 3] for n in nodes))
    finally:
        for n in nodes:
            try:
                n.stop()
            except Exception:
                n.proc and n.proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    return elect, ack, exited


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    rows = []
    for enabled in (True, False):
        elect, ack, exited = run(binary, args.rounds, enabled)
        mode = "on" if enabled else "off"
        rows.append(summary(f"controlled shutdown {mode}: SIGTERM until Metadata names a new leader", elect))
        rows.append(summary(f"controlled shutdown {mode}: SIGTERM until an acks=all produce succeeds", ack))
        rows.append(summary(f"controlled shutdown {mode}: SIGTERM until the process exited (0)", exited))
    print("| measure | rounds | min ms | median ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(r)


if __name__ == "__main__":
    sys.exit(main())
