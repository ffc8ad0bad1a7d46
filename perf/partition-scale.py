#!/usr/bin/env python3
"""One node with many partitions: memory per idle partition and per idle connection, and
the start-up after kill -9 with a large data directory (issue 16, "Also": "RSS per idle
partition and per idle connection, at 10,000 partitions on one node (target <= 64 KiB per
partition)" and "start-up time after kill -9 with 10,000 partitions and 20 GiB of data").

Starts one real `sluice` process (a fresh data directory, --shards shards, plain logs: a
single node's partitions have one replica) and then:

  1. baseline: RSS (/proc/PID/status VmRSS), open files and threads with no topics;
  2. creates --partitions partitions (--topics topics of equal size), writes one small
     record to every partition (so each has a segment file with data, as a live partition
     has), lets the node settle, and measures RSS, files, threads and idle CPU (utime +
     stime over --window seconds); memory per partition = the RSS growth / partitions;
  3. opens --connections idle client connections (each sends one ApiVersions request and
     reads its answer, so the broker holds a fully set-up connection), and measures the RSS
     growth per connection; then closes them;
  4. writes --data-gib GiB more into a 16-partition topic with `sluice-bench` (produce only,
     acks=all, 1 KiB records, as fast as it goes), so most of the data sits in closed
     segments, as on a long-lived broker;
  5. kill -9s the node, starts it again on the same data directory and times spawn to the
     ready line, spawn to every partition led in Metadata, and spawn to the first record
     read back from the last-written partition of the small topics and from the bulk topic's
     tail (the node answers reads again); the node's CPU seconds up to then and its RSS;
  6. kill -9s it again and times spawn -> ready once more (the first restart after a fill
     may wait for the disk to write back what the fill left it); then kill -9s it again,
     removes every partition's `recovery-point` file (so each tail segment is read and
     CRC-checked in full, as before recovery points existed) and times spawn -> ready: the
     same data, the same run, without them.

    tests/.venv/bin/python perf/partition-scale.py --binary target/release/sluice \\
        --partitions 10000 --connections 1000 --data-gib 20

Needs confluent-kafka (tests/.venv has it, from scripts/install-test-deps.sh) and a built
`sluice-bench` (`cargo build --release -p sluice-bench`). Prints a markdown table.
"""

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import cpu_seconds, disk_usage, free_port, open_files, proc_status  # noqa: E402

BULK = "bulk"
BULK_PARTITIONS = 16


def allocated(path):
    return disk_usage(path)[0]


class Node:
    def __init__(self, binary, data, port, shards):
        self.binary, self.data, self.port, self.shards = binary, data, port, shards
        self.proc = None

    def start(self):
        """Spawns the node; returns seconds from spawn to its ready line."""
        self.proc = subprocess.Popen(
            [self.binary, "start", "--node-id", "1", "--data-dir", self.data,
             "--listen", f"127.0.0.1:{self.port}", "--shards", str(self.shards),
             "--admin-listen", "off"],
            stdout=subprocess.PIPE, stderr=open(f"{self.data}.log", "a"))
        self.spawned = time.time()
        for line in self.proc.stdout:
            if b"ready" in line:
                # Keep draining stdout so the node never blocks on a full pipe.
                subprocess.Popen(["cat"], stdin=self.proc.stdout, stdout=subprocess.DEVNULL)
                return time.time() - self.spawned
        sys.exit(f"sluice exited before ready (see {self.data}.log)")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=300)

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        return proc_status(self.pid)["VmRSS"] / 1024

    def idle_cpu(self, window):
        c0, t0 = cpu_seconds(self.pid), time.time()
        time.sleep(window)
        return (cpu_seconds(self.pid) - c0) / (time.time() - t0)


def small_topics(args):
    per = args.partitions // args.topics
    return [(f"scale-{i:03d}", per) for i in range(args.topics)]


def wait_led(bootstrap, topics, timeout=600):
    """Until Metadata names a leader for every partition of `topics`; seconds waited."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    t0 = time.time()
    want = dict(topics)
    while time.time() - t0 < timeout:
        try:
            md = admin.list_topics(timeout=30)
            ok = all(
                name in md.topics and len(md.topics[name].partitions) == n
                and all(p.leader >= 0 and p.error is None
                        for p in md.topics[name].partitions.values())
                for name, n in want.items())
            if ok:
                return time.time() - t0
        except Exception:  # noqa: BLE001 - the node is still starting
            pass
        time.sleep(0.05)
    sys.exit("partitions not all led in time")


def read_one(bootstrap, topic, partition, offset, timeout=600):
    """Reads the record at `offset` (assign, no group); seconds it took."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "scale-probe", "log_level": 2,
                  "enable.auto.commit": False, "enable.partition.eof": False})
    t0 = time.time()
    c.assign([TopicPartition(topic, partition, offset)])
    while time.time() - t0 < timeout:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            c.close()
            return time.time() - t0
    c.close()
    sys.exit(f"no record at {topic}-{partition}@{offset} in {timeout} s")


def api_versions_conn(port):
    """An idle client connection the broker has fully set up (one ApiVersions v0 answered)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    client = b"scale"
    body = struct.pack(">hhih", 18, 0, 1, len(client)) + client
    s.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    recv_exact(s, size)
    return s


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            sys.exit("connection closed by the broker")
        out += chunk
    return out


def start_phases(log, offset):
    """Seconds between the node log's "replica store open" and "partitions open" lines
    written after `offset` (the plain partitions' opening), or None."""
    stamps = {}
    with open(log, "rb") as f:
        f.seek(offset)
        for line in f:
            for key in (b"start: replica store open", b"start: partitions open"):
                if key in line and key not in stamps:
                    t = line.split(b" ", 1)[0].decode().rstrip("Z")
                    stamps[key] = time.mktime(time.strptime(t[:19], "%Y-%m-%dT%H:%M:%S")) \
                        + float("0" + t[19:])
    if len(stamps) < 2:
        return None
    return stamps[b"start: partitions open"] - stamps[b"start: replica store open"]


def fill(args, bootstrap, data):
    """Produces into BULK until the data directory holds --data-gib GiB; seconds taken."""
    target = args.data_gib * 2 ** 30
    t0 = time.time()
    while (have := allocated(data)) < target:
        left = (target - have) / 2 ** 20
        # Produce-only rounds of at most 20 s (about 300 MiB/s or more on this host).
        secs = max(3, min(20, int(left / 300) + 1))
        r = subprocess.run(
            [args.bench, "run", "--bootstrap", bootstrap,
             "--workload", args.workload, "--topic", BULK, "--delete-topic", "false",
             "--consumers", "0", "--warmup-s", "0", "--duration-s", str(secs),
             "--out", os.path.join(os.path.dirname(data), "bench")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"sluice-bench failed: {r.stderr.decode()[-2000:]}")
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--bench", default="target/release/sluice-bench")
    ap.add_argument("--workload", default="bench/workloads/max-rate-1k-16p.toml")
    ap.add_argument("--partitions", type=int, default=10_000)
    ap.add_argument("--topics", type=int, default=100)
    ap.add_argument("--connections", type=int, default=1_000)
    ap.add_argument("--data-gib", type=float, default=20)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--window", type=float, default=10, help="idle CPU window, seconds")
    ap.add_argument("--settle", type=float, default=10, help="seconds before measuring")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="partition-scale-", dir=os.environ.get("TMPDIR", "/work"))
    data = os.path.join(work, "data")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    node = Node(args.binary, data, port, args.shards)
    rows = []

    first_ready = node.start()
    time.sleep(args.settle)
    rss0, files0, threads0 = node.rss_kib(), open_files(node.pid), proc_status(node.pid)["Threads"]
    cpu0 = node.idle_cpu(args.window)
    rows.append(("no topics", f"{rss0 / 1024:.1f} MiB RSS, {files0} files, "
                 f"{threads0} threads, idle CPU {cpu0 * 100:.1f} % of a core "
                 f"(ready {first_ready:.2f} s after spawn)"))

    topics = small_topics(args)
    n = sum(p for _, p in topics)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    t0 = time.time()
    for name, parts in topics:
        for f in admin.create_topics([NewTopic(name, parts, 1)],
                                     operation_timeout=120).values():
            f.result()
    create_s = time.time() - t0
    led_s = wait_led(bootstrap, topics)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "log_level": 2,
                  "queue.buffering.max.messages": 2 * n})
    t0 = time.time()
    for name, parts in topics:
        for q in range(parts):
            p.produce(name, b"v" * 100, key=b"k", partition=q)
        p.poll(0)
    if p.flush(300) != 0:
        sys.exit("records to the small topics not all delivered")
    write_s = time.time() - t0
    del p
    rows.append((f"create {n} partitions ({len(topics)} topics)",
                 f"{create_s:.1f} s, all led {led_s:.1f} s later; "
                 f"one record each in {write_s:.1f} s"))
    time.sleep(args.settle)
    rss1, files1, threads1 = node.rss_kib(), open_files(node.pid), proc_status(node.pid)["Threads"]
    cpu1 = node.idle_cpu(args.window)
    per_partition = (rss1 - rss0) / n
    rows.append((f"{n} idle partitions",
                 f"{rss1 / 1024:.1f} MiB RSS, {files1} files, {threads1} threads, "
                 f"idle CPU {cpu1 * 100:.1f} % of a core"))
    rows.append(("**RSS per idle partition**", f"**{per_partition:.1f} KiB** (target <= 64)"))
    rows.append(("open files per partition", f"{(files1 - files0) / n:.2f}"))
    disk1 = allocated(data)
    rows.append(("disk per partition (allocated)", f"{disk1 / n / 1024:.1f} KiB"))

    conns = [api_versions_conn(port) for _ in range(args.connections)]
    time.sleep(args.settle / 2)
    rss2 = node.rss_kib()
    rows.append((f"**RSS per idle connection** ({args.connections} open)",
                 f"**{(rss2 - rss1) / args.connections:.1f} KiB**"))
    for s in conns:
        s.close()

    fill_s = fill(args, bootstrap, data)
    disk = allocated(data)
    rows.append(("data written", f"{disk / 2 ** 30:.1f} GiB on disk in {fill_s:.0f} s "
                 f"({(disk - disk1) / 2 ** 20 / fill_s:.0f} MiB/s)"))
    last_topic, last_parts = topics[-1]
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    bulk_parts = len(md.topics[BULK].partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "scale-probe", "log_level": 2})
    bulk_hw = c.get_watermark_offsets(TopicPartition(BULK, bulk_parts - 1), timeout=30)[1]
    c.close()

    node.kill9()
    log_mark = os.path.getsize(f"{data}.log")
    ready_s = node.start()
    led_after = wait_led(bootstrap, topics + [(BULK, bulk_parts)])
    served_small = read_one(bootstrap, last_topic, last_parts - 1, 0)
    served_bulk = read_one(bootstrap, BULK, bulk_parts - 1, bulk_hw - 1)
    served_s = time.time() - node.spawned
    cpu_start = cpu_seconds(node.pid)
    rows.append(("**kill -9, restart: spawn -> ready**", f"**{ready_s:.2f} s**"))
    phases = start_phases(f"{data}.log", log_mark)
    if phases:
        rows.append(("of which: the partitions' opening (node log)", f"{phases:.2f} s"))
    rows.append(("spawn -> every partition led",
                 f"{ready_s + led_after:.2f} s"))
    rows.append(("spawn -> a small partition and the bulk tail read back",
                 f"{served_s:.2f} s (reads took {served_small:.2f} + {served_bulk:.2f} s)"))
    rows.append(("node CPU seconds from spawn to then", f"{cpu_start:.1f}"))
    rows.append(("RSS after the restart", f"{node.rss_kib() / 1024:.1f} MiB"))

    node.kill9()
    log_mark = os.path.getsize(f"{data}.log")
    ready_again = node.start()
    cpu_again = cpu_seconds(node.pid)
    phases_again = start_phases(f"{data}.log", log_mark)
    rows.append(("kill -9 again, restart: spawn -> ready",
                 f"{ready_again:.2f} s (opening {phases_again or 0:.2f} s, "
                 f"{cpu_again:.1f} CPU seconds)"))

    node.kill9()
    removed = 0
    for entry in os.scandir(data):
        rp = os.path.join(entry.path, "recovery-point")
        if entry.is_dir() and os.path.exists(rp):
            os.remove(rp)
            removed += 1
    log_mark = os.path.getsize(f"{data}.log")
    ready_full = node.start()
    cpu_full = cpu_seconds(node.pid)
    phases_full = start_phases(f"{data}.log", log_mark)
    rows.append((f"the same, every tail scanned in full ({removed} recovery points removed): "
                 "spawn -> ready",
                 f"{ready_full:.2f} s (opening {phases_full or 0:.2f} s, "
                 f"{cpu_full:.1f} CPU seconds)"))
    node.stop()

    print(f"| {os.path.basename(args.binary)} --shards {args.shards}: "
          f"{n} partitions, {args.connections} connections, {args.data_gib:g} GiB | |")
    print("| --- | --- |")
    for k, v in rows:
        print(f"| {k} | {v} |")
    if args.keep:
        print(f"data directory kept: {data}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
