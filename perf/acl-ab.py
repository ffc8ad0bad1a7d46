#!/usr/bin/env python3
"""The authorizer on against off, in the same run (issue 14's ACL benchmark).

Starts two brokers (`target/release/sluice`, one shard each, unpinned): one without an
authorizer, one with `--authorizer acl` holding ACLS bindings for other principals and
topics (a third of them prefixed, so a decision scans real patterns) plus the grants that
let the anonymous plaintext client write and read `ab-*`. Alternating the broker each round
so the shared host's drift favours neither, it produces RECORDS records of 1 KiB with kcat
(acks=1) twice: in large batches, and with one record per request (batch.size=1024,
linger.ms=0: one authorization per record, the worst case for the hot path). It records
wall time and each broker's CPU seconds (utime + stime from /proc) and prints the medians
and the on/off ratios as a markdown table:

    tests/.venv/bin/python perf/acl-ab.py [--rounds 3] [--records 100000] [--acls 3000]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from perfutil import free_port, cpu_seconds, kcat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
RECORD_BYTES = 1024
MODES = {
    "batched": ["-X", "linger.ms=5", "-X", "batch.size=1000000"],
    "record per request": ["-X", "linger.ms=0", "-X", "batch.size=1024"],
}


def start(work, name, args):
    data = os.path.join(work, name)
    port = free_port()
    broker = subprocess.Popen(
        [SLUICE, "start", "--data-dir", data, "--shards", "1", "--no-pin"] + args(port),
        stdout=subprocess.PIPE, stderr=open(os.path.join(work, f"{name}.log"), "w"))
    while not broker.stdout.readline().startswith(b"sluice: ready"):
        if broker.poll() is not None:
            sys.exit(f"the {name} broker did not start")
    return broker, port


def grant(sasl_port, n_acls):
    from kafka.admin import (ACL, ACLOperation, ACLPermissionType,
                             ACLResourcePatternType, KafkaAdminClient, ResourcePattern,
                             ResourceType)
    admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{sasl_port}",
                             security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="admin",
                             sasl_plain_password="admin-secret", request_timeout_ms=30000)

    def acl(principal, op, rtype, name, pattern=ACLResourcePatternType.LITERAL):
        return ACL(principal=principal, host="*", operation=op,
                   permission_type=ACLPermissionType.ALLOW,
                   resource_pattern=ResourcePattern(rtype, name, pattern))

    others = []
    for i in range(n_acls):
        pattern = (ACLResourcePatternType.PREFIXED if i % 3 == 0
                   else ACLResourcePatternType.LITERAL)
        others.append(acl(f"User:u{i}", ACLOperation.WRITE, ResourceType.TOPIC,
                          f"other-{i}", pattern))
    mine = [acl("User:ANONYMOUS", ACLOperation.WRITE, ResourceType.TOPIC, "ab-",
                ACLResourcePatternType.PREFIXED),
            acl("User:ANONYMOUS", ACLOperation.READ, ResourceType.TOPIC, "ab-",
                ACLResourcePatternType.PREFIXED),
            acl("User:ANONYMOUS", ACLOperation.CREATE, ResourceType.CLUSTER, "kafka-cluster"),
            acl("User:ANONYMOUS", ACLOperation.IDEMPOTENT_WRITE, ResourceType.CLUSTER,
                "kafka-cluster")]
    for i in range(0, len(others), 500):
        r = admin.create_acls(others[i:i + 500])
        if r["failed"]:
            sys.exit(f"create_acls: {r['failed'][:3]}")
    r = admin.create_acls(mine)
    if r["failed"]:
        sys.exit(f"create_acls: {r['failed']}")
    admin.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=100000)
    ap.add_argument("--acls", type=int, default=3000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-acl-ab-")
    brokers = []
    try:
        data = os.path.join(work, "records.txt")
        line = ("x" * (RECORD_BYTES - 1) + "\n").encode()
        with open(data, "wb") as f:
            for _ in range(a.records):
                f.write(line)
        off, off_port = start(work, "off", lambda p: ["--listen", f"127.0.0.1:{p}"])
        brokers.append(off)
        subprocess.run([SLUICE, "users", "add", "--data-dir", os.path.join(work, "on"),
                        "--mechanism", "SCRAM-SHA-256", "--name", "admin",
                        "--password", "admin-secret"], check=True, capture_output=True)
        sasl_port = free_port()
        on, on_port = start(work, "on", lambda p: [
            "--listen", f"127.0.0.1:{p},sasl_plaintext://127.0.0.1:{sasl_port}",
            "--authorizer", "acl", "--super-users", "User:admin"])
        brokers.append(on)
        grant(sasl_port, a.acls)
        sides = {"off": (off, off_port), "on": (on, on_port)}
        res = {(s, m): {"s": [], "cpu": []} for s in sides for m in MODES}
        for rnd in range(a.rounds):
            order = ["off", "on"] if rnd % 2 == 0 else ["on", "off"]
            for mode, extra in MODES.items():
                for side in order:
                    broker, port = sides[side]
                    topic = f"ab-{rnd}-{len(mode)}"
                    c0, t0 = cpu_seconds(broker.pid), time.monotonic()
                    with open(data, "rb") as f:
                        kcat(["-b", f"127.0.0.1:{port}", "-P", "-t", topic, "-X", "acks=1"]
                             + extra, stdin=f)
                    c1, t1 = cpu_seconds(broker.pid), time.monotonic()
                    res[(side, mode)]["s"].append(t1 - t0)
                    res[(side, mode)]["cpu"].append(c1 - c0)
            # The grants work: what the anonymous client wrote reads back.
            out = kcat(["-b", f"127.0.0.1:{on_port}", "-C", "-t", f"ab-{rnd}-7", "-o",
                        "beginning", "-e", "-q", "-f", "%o\n"])
            got = out.count(b"\n")
            if got != a.records:
                sys.exit(f"read back {got} of {a.records} under the authorizer")
    finally:
        for b in brokers:
            b.terminate()
            b.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    gib = a.records * RECORD_BYTES / 2**30
    mib = a.records * RECORD_BYTES / 2**20
    med = statistics.median
    print(f"{a.rounds} rounds of {a.records} records of {RECORD_BYTES} B ({mib:.0f} MiB) per "
          f"broker and mode; {a.acls + 4} ACLs on the authorizing broker; medians\n")
    print("| mode | authorizer | produce MiB/s | broker CPU s/GiB |")
    print("| --- | --- | --- | --- |")
    for mode in MODES:
        row = {}
        for side in ("off", "on"):
            r = res[(side, mode)]
            row[side] = (mib / med(r["s"]), med(r["cpu"]) / gib)
            print(f"| {mode} | {side} | {row[side][0]:.0f} | {row[side][1]:.2f} |")
        print(f"| {mode} | on / off | {row['on'][0] / row['off'][0]:.2f} "
              f"| {row['on'][1] / row['off'][1]:.2f} |")


if __name__ == "__main__":
    main()
