#!/usr/bin/env python3
"""TLS against plaintext on one broker in the same run (issue 14's TLS benchmark).

Starts one broker (`target/release/sluice`, one shard) with a plaintext and an `ssl`
listener (a throwaway P-256 certificate made with the openssl CLI), then, alternating the
listener each round so the shared host's drift favours neither, produces RECORDS records of
1 KiB with kcat (acks=1, one partition per round and listener) and reads them back. It
records each phase's wall time and the broker's CPU seconds (utime + stime from /proc), and
prints per-listener medians and the TLS/plaintext ratios as a markdown table:

    tests/.venv/bin/python perf/tls-ab.py [--rounds 3] [--records 200000]

The client is kcat (librdkafka over OpenSSL), so client-side TLS cost is in the wall time;
broker CPU seconds per GiB is the broker's own cost.
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
SLUICE = os.environ.get("SLUICE", os.path.join(ROOT, "target", "release", "sluice"))
RECORD_BYTES = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=200000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-tls-ab-")
    try:
        cert, key = os.path.join(work, "c.pem"), os.path.join(work, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True)
        data = os.path.join(work, "records.txt")
        line = ("x" * (RECORD_BYTES - 1) + "\n").encode()
        with open(data, "wb") as f:
            for _ in range(a.records):
                f.write(line)
        plain_port, ssl_port = free_port(), free_port()
        broker = subprocess.Popen(
            [SLUICE, "start", "--data-dir", os.path.join(work, "data"), "--shards", "1",
             "--no-pin", "--listen",
             f"127.0.0.1:{plain_port},ssl://127.0.0.1:{ssl_port}",
             "--tls-cert", cert, "--tls-key", key],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "broker.log"), "w"))
        while not broker.stdout.readline().startswith(b"sluice: ready"):
            if broker.poll() is not None:
                sys.exit("the broker did not start")
        opts = {
            "plaintext": ["-b", f"127.0.0.1:{plain_port}"],
            "ssl": ["-b", f"127.0.0.1:{ssl_port}", "-X", "security.protocol=ssl",
                    "-X", f"ssl.ca.location={cert}"],
        }
        res = {k: {"produce_s": [], "produce_cpu": [], "fetch_s": [], "fetch_cpu": []}
               for k in opts}
        for rnd in range(a.rounds):
            order = ["plaintext", "ssl"] if rnd % 2 == 0 else ["ssl", "plaintext"]
            for name in order:
                topic = f"ab-{name}-{rnd}"
                c0, t0 = cpu_seconds(broker.pid), time.monotonic()
                with open(data, "rb") as f:
                    kcat(opts[name] + ["-P", "-t", topic, "-p", "0", "-X", "acks=1",
                                       "-X", "linger.ms=5", "-X", "batch.size=1000000"],
                         stdin=f)
                c1, t1 = cpu_seconds(broker.pid), time.monotonic()
                out = kcat(opts[name] + ["-C", "-t", topic, "-p", "0", "-o", "beginning",
                                         "-e", "-q", "-f", "%o\n"])
                c2, t2 = cpu_seconds(broker.pid), time.monotonic()
                got = out.count(b"\n")
                if got != a.records:
                    sys.exit(f"{name}: read back {got} of {a.records}")
                r = res[name]
                r["produce_s"].append(t1 - t0)
                r["produce_cpu"].append(c1 - c0)
                r["fetch_s"].append(t2 - t1)
                r["fetch_cpu"].append(c2 - c1)
        broker.terminate()
        broker.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gib = a.records * RECORD_BYTES / 2**30
    mib = a.records * RECORD_BYTES / 2**20
    med = statistics.median
    print(f"{a.rounds} rounds of {a.records} records of {RECORD_BYTES} B "
          f"({mib:.0f} MiB) per listener; medians\n")
    print("| listener | produce MiB/s | produce broker CPU s/GiB | fetch MiB/s "
          "| fetch broker CPU s/GiB |")
    print("| --- | --- | --- | --- | --- |")
    row = {}
    for name, r in res.items():
        row[name] = (mib / med(r["produce_s"]), med(r["produce_cpu"]) / gib,
                     mib / med(r["fetch_s"]), med(r["fetch_cpu"]) / gib)
        print(f"| {name} | {row[name][0]:.0f} | {row[name][1]:.2f} | {row[name][2]:.0f} "
              f"| {row[name][3]:.2f} |")
    p, s = row["plaintext"], row["ssl"]
    print(f"| ssl / plaintext | {s[0] / p[0]:.2f} | {s[1] / p[1]:.2f} | {s[2] / p[2]:.2f} "
          f"| {s[3] / p[3]:.2f} |")


if __name__ == "__main__":
    main()
