#!/usr/bin/env python3
"""Start-up with a large `__consumer_offsets`, with and without the log cleaner.

Issue 15: the offsets topic is compacted, so what a coordinator replays when it loads is
bounded by the live offsets, not by the history of commits. Each run starts one `sluice`
node (a fresh data directory), gives `__consumer_offsets` small segments
(`segment.bytes`, so the history is in closed, cleanable segments, as on a long-lived
Kafka cluster), commits --commits offset records for one group (OffsetCommit requests of
--partitions partitions each, through librdkafka), then either waits for the log cleaner
to pass over it ("cleaned") or not ("uncleaned": the cleaner's interval is set past the
run), stops the node with SIGTERM, starts it again and times (a) spawn to the ready line
and (b) spawn to the first OffsetFetch that returns every latest offset (the coordinator
replayed the log). Also printed: the offsets topic's size on disk and its segment files
before the restart (the cleaner merges small cleaned segments).

    tests/.venv/bin/python perf/offsets-replay.py --binary target/release/sluice \\
        --commits 1000000 --partitions 100

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

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import free_port  # noqa: E402

TOPIC = "replayed"
GROUP = "replay-group"


def start(binary, data, port, cleaner_ms):
    p = subprocess.Popen(
        [binary, "start", "--node-id", "1", "--data-dir", data,
         "--listen", f"127.0.0.1:{port}", "--shards", "2", "--admin-listen", "off",
         "--log-cleaner-interval-ms", str(cleaner_ms)],
        stdout=subprocess.PIPE, stderr=open(f"{data}.log", "a"))
    t0 = time.time()
    for line in p.stdout:
        if b"ready" in line:
            return p, t0, time.time() - t0
    sys.exit(f"sluice exited before ready (see {data}.log)")


def stop(p):
    p.send_signal(signal.SIGTERM)
    if p.wait(timeout=120) != 0:
        sys.exit(f"sluice exited with {p.returncode}")


def offsets_bytes(data):
    total = 0
    for d in os.listdir(data):
        if d.startswith("__consumer_offsets"):
            for root, _, files in os.walk(os.path.join(data, d)):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def offsets_segments(data):
    return sum(1 for d in os.listdir(data) if d.startswith("__consumer_offsets")
               for _, _, files in os.walk(os.path.join(data, d))
               for f in files if f.endswith(".log"))


def consumer(port):
    return Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": GROUP,
                     "enable.auto.commit": False})


def latest(c, partitions, rounds):
    want = [TopicPartition(TOPIC, p, rounds * 1000 + p) for p in range(partitions)]
    return want


def run(args, cleaned):
    work = tempfile.mkdtemp(prefix="offsets-replay-")
    data = os.path.join(work, "data")
    port = free_port()
    cleaner_ms = 500 if cleaned else 10 ** 9
    p, _, _ = start(args.binary, data, port, cleaner_ms)
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
    for f in admin.create_topics([NewTopic(TOPIC, args.partitions, 1)]).values():
        f.result()
    c = consumer(port)
    c.commit(offsets=[TopicPartition(TOPIC, 0, 0)], asynchronous=False)  # creates the topic
    res = ConfigResource("topic", "__consumer_offsets", set_config={
        "cleanup.policy": "compact", "segment.bytes": str(args.segment_bytes),
        "min.cleanable.dirty.ratio": "0.5"})
    for f in admin.alter_configs([res]).values():
        f.result()
    rounds = args.commits // args.partitions
    t0 = time.time()
    for r in range(1, rounds + 1):
        offs = [TopicPartition(TOPIC, q, r * 1000 + q) for q in range(args.partitions)]
        c.commit(offsets=offs, asynchronous=(r % 100 != 0))
    c.commit(offsets=latest(c, args.partitions, rounds), asynchronous=False)
    commit_s = time.time() - t0
    c.close()
    if cleaned:
        # Until the cleaner has passed: the topic's size stops shrinking.
        last, still = None, 0
        while still < 3:
            time.sleep(1)
            now = offsets_bytes(data)
            still = still + 1 if now == last else 0
            last = now
    size = offsets_bytes(data)
    segments = offsets_segments(data)
    stop(p)
    p, t0, ready_s = start(args.binary, data, port, cleaner_ms)
    c = consumer(port)
    want = {(tp.partition, tp.offset) for tp in latest(c, args.partitions, rounds)}
    while True:
        try:
            got = c.committed([TopicPartition(TOPIC, q) for q in range(args.partitions)],
                              timeout=10)
            if {(tp.partition, tp.offset) for tp in got} == want:
                break
        except Exception:  # coordinator still loading
            pass
        time.sleep(0.005)
    served_s = time.time() - t0
    c.close()
    stop(p)
    shutil.rmtree(work, ignore_errors=True)
    return {"commit_s": commit_s, "offsets_mib": size / 2 ** 20, "segments": segments,
            "ready_s": ready_s, "served_s": served_s}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--commits", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=100)
    ap.add_argument("--segment-bytes", type=int, default=8 * 2 ** 20)
    args = ap.parse_args()
    print(f"{args.commits} offset records, {args.partitions} partitions per commit, "
          f"segment.bytes {args.segment_bytes}")
    print("run        commit_s  offsets_MiB  segments  ready_s  served_s")
    for cleaned in (False, True):
        r = run(args, cleaned)
        name = "cleaned" if cleaned else "uncleaned"
        print(f"{name:<10} {r['commit_s']:8.1f} {r['offsets_mib']:12.1f} "
              f"{r['segments']:9d} {r['ready_s']:8.2f} {r['served_s']:9.2f}", flush=True)


if __name__ == "__main__":
    main()
