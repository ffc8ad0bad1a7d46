#!/usr/bin/env python3
"""Times the controller quorum and partition failover of a 3-node sluice cluster on this host
(issue 12).

Starts three real nodes on loopback (one shard each), then measures, ROUNDS times:
  - propagation: CreateTopics through one node until every node's Metadata lists the topic
    with a leader for every partition;
  - failover: kill -9 of the node that leads the controller group until a CreateTopics sent
    to a survivor succeeds (election timeout + new controller + one commit);
and then restarts the killed node (until it is listed again: it may not have been fenced
yet, so this is no measure of its own); then, ROUNDS times, on a topic with 3 replicas:
kill -9 of the node leading its partition until a survivor's Metadata names another leader,
and until an acks=all produce through the survivors succeeds (a fresh producer per try, so
the figure includes up to one client set-up); and, on one node alone, start-to-ready after a restart (a cluster of one registers with
itself before serving). Prints a markdown table of min / median / max in milliseconds.

    tests/.venv/bin/python perf/controller-failover.py [--binary target/release/sluice] [--rounds 5]

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
import time

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, binary, root, node_id, kafka, rpc, voters):
        self.binary, self.node_id = binary, node_id
        self.kafka, self.rpc, self.voters = kafka, rpc, voters
        self.dir = os.path.join(root, f"d{node_id}")
        self.log = os.path.join(root, f"n{node_id}.log")
        self.proc = None

    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"

    def start(self, wait=True):
        args = [self.binary, "start", "--shards", "1", "--no-pin",
                "--data-dir", self.dir, "--listen", self.bootstrap()]
        if self.voters:
            args += ["--node-id", str(self.node_id), "--rpc-listen", f"127.0.0.1:{self.rpc}",
                     "--voters", self.voters]
        out = open(self.log, "a")
        started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=out, text=True)
        if wait:
            for line in self.proc.stdout:
                if line.startswith("sluice: ready"):
                    return time.monotonic() - started
            raise RuntimeError(f"node {self.node_id} exited before ready; see {self.log}")
        return None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)


def metadata(bootstrap):
    """(broker ids, controller id, {topic: [leader per partition]}) as `bootstrap` says."""
    a = admin(bootstrap)
    try:
        c = a.describe_cluster()
        brokers = sorted(b["broker_id"] for b in c["brokers"])
        topics = {}
        for t in a.describe_topics():
            topics[t["name"]] = [p["leader_id"] for p in sorted(t["partitions"], key=lambda p: p["partition_index"])]
        return brokers, c["controller_id"], topics
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


def create(bootstrap, name):
    a = admin(bootstrap)
    try:
        r = a.create_topics([NewTopic(name, 6, 1)])
        return all(e[1] == 0 for e in r.topic_errors) if hasattr(r, "topic_errors") else True
    finally:
        a.close()


def produced(bootstrap_servers):
    """One acks=all record to partition 0 of `pf`, no retries; True if acknowledged."""
    p = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=0,
                      request_timeout_ms=2000, max_block_ms=2000)
    try:
        p.send("pf", b"x", partition=0).get(timeout=3)
        return True
    finally:
        p.close(timeout=1)


def summary(name, xs):
    ms = [x * 1000 for x in xs]
    return f"| {name} | {len(ms)} | {min(ms):.0f} | {statistics.median(ms):.0f} | {max(ms):.0f} |"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    root = tempfile.mkdtemp(prefix="sluice-ctl-")
    kafka = [free_port() for _ in range(3)]
    rpc = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{rpc[i]}" for i in range(3))
    nodes = [Node(binary, root, i + 1, kafka[i], rpc[i], voters) for i in range(3)]
    solo = Node(binary, root, 9, free_port(), 0, "")
    prop, fail, solo_start, elect, pfail = [], [], [], [], []
    try:
        for n in nodes:
            n.start(wait=False)
        for n in nodes:
            until(f"node {n.node_id} ready and listing 3 brokers",
                  lambda n=n: metadata(n.bootstrap())[0] == [1, 2, 3])
        for r in range(args.rounds):
            name = f"prop-{r}"
            t0 = time.monotonic()
            create(nodes[r % 3].bootstrap(), name)
            until("topic on every node", lambda: all(
                len(metadata(n.bootstrap())[2].get(name, [])) == 6 and
                all(l >= 0 for l in metadata(n.bootstrap())[2][name]) for n in nodes))
            prop.append(time.monotonic() - t0)

            ctl = metadata(nodes[0].bootstrap())[1]
            victim = nodes[ctl - 1]
            survivor = next(n for n in nodes if n is not victim)
            t0 = time.monotonic()
            victim.kill9()
            until("CreateTopics through a survivor", lambda r=r: create(survivor.bootstrap(), f"after-{r}"))
            fail.append(time.monotonic() - t0)

            victim.start(wait=False)
            until("the restarted node listed everywhere", lambda: all(
                metadata(n.bootstrap())[0] == [1, 2, 3] for n in nodes))
        a = admin(nodes[0].bootstrap())
        a.create_topics([NewTopic("pf", 1, 3)])
        a.close()
        until("a leader for pf", lambda: metadata(nodes[0].bootstrap())[2]["pf"][0] > 0)
        until("a first produce to pf", lambda: produced([n.bootstrap() for n in nodes]))
        for r in range(args.rounds):
            leader = metadata(nodes[0].bootstrap())[2]["pf"][0]
            victim = nodes[leader - 1]
            survivors = [n for n in nodes if n is not victim]
            t0 = time.monotonic()
            victim.kill9()
            until("a new leader for pf", lambda: metadata(survivors[0].bootstrap())[2]["pf"][0]
                  not in (-1, leader))
            elect.append(time.monotonic() - t0)
            until("an acks=all produce through the survivors",
                  lambda: produced([n.bootstrap() for n in survivors]))
            pfail.append(time.monotonic() - t0)
            victim.start(wait=False)
            until("the restarted node listed everywhere", lambda: all(
                metadata(n.bootstrap())[0] == [1, 2, 3] for n in nodes))
        solo.start()
        solo.stop()
        for _ in range(args.rounds):
            solo_start.append(solo.start())
            solo.stop()
    finally:
        for n in nodes + [solo]:
            try:
                n.stop()
            except Exception:
                n.proc and n.proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    print("| measure | rounds | min ms | median ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    print(summary("CreateTopics until every node lists it with leaders", prop))
    print(summary("controller kill -9 until CreateTopics through a survivor succeeds", fail))
    print(summary("partition leader kill -9 until Metadata names a new leader", elect))
    print(summary("partition leader kill -9 until an acks=all produce succeeds", pfail))
    print(summary("cluster of one: restart until ready", solo_start))


if __name__ == "__main__":
    sys.exit(main())
