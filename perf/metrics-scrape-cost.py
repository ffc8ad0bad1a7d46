#!/usr/bin/env python3
"""Measures what scraping /metrics costs the broker (issue 15: "scraping 100 times/s costs
< 2 % of broker CPU").

Starts one real `sluice` (--shards 2 --no-pin by default, admin API on a free port), creates --topics
topics of --partitions partitions each, writes a record to every partition and commits a
group's offsets for all of them (so every per-partition and lag series is in the document),
then, in the same run:

  1. idle: the broker's CPU seconds (utime + stime from /proc) over --window seconds with
     nothing to do;
  2. status: the same window while one client GETs /v1/status/live --rate times a second
     over a kept-alive connection (what any HTTP request to the broker costs);
  3. scraped: the same with /metrics, each response read whole;

and prints a markdown table: CPU as % of one core in each phase, the difference (what the
scrapes cost), the cost per scrape in microseconds and the part of it beyond a status GET, the document's size and series count,
and the scrape latency (p50, p99) the client saw.

    python3 perf/metrics-scrape-cost.py [--binary target/release/sluice] [--rate 100]
"""

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import cpu_seconds, free_port  # noqa: E402


def wait_ready(proc, log):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if line.startswith("sluice: ready"):
            return
        if proc.poll() is not None:
            sys.exit(f"broker exited: see {log}")
    sys.exit("broker not ready in 60 s")


def sluice(binary, brokers, args, stdin=None):
    r = subprocess.run([binary] + args, input=stdin, capture_output=True,
                       env=dict(os.environ, SLUICE_BROKERS=brokers))
    if r.returncode != 0:
        sys.exit(f"sluice {' '.join(args)}: {r.stderr.decode()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--topics", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-scrape-")
    port, admin = free_port(), free_port()
    brokers = f"127.0.0.1:{port}"
    log = os.path.join(work, "broker.log")
    proc = subprocess.Popen(
        [args.binary, "start", "--shards", str(args.shards), "--no-pin", "--data-dir",
         os.path.join(work, "data"), "--listen", brokers,
         "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.PIPE, stderr=open(log, "w"))
    try:
        wait_ready(proc, log)
        for t in range(args.topics):
            topic = f"scraped-{t}"
            sluice(args.binary, brokers,
                   ["topic", "create", topic, "-p", str(args.partitions)])
            for p in range(args.partitions):
                sluice(args.binary, brokers,
                       ["topic", "produce", topic, "-p", str(p)], stdin=b"x\n")
            sluice(args.binary, brokers,
                   ["topic", "consume", topic, "-g", f"scraper-{t}", "-e"])
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)

        def scrape(path="/metrics"):
            conn.request("GET", path)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                sys.exit(f"{path} answered {r.status}")
            return body

        doc = scrape()
        series = sum(1 for line in doc.splitlines() if line and not line.startswith(b"#"))
        partitions = sum(1 for line in doc.splitlines()
                         if line.startswith(b"sluice_partition_leader{"))

        time.sleep(2)
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.window)
        idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)

        def run(path):
            """CPU share of the broker and request latencies while GETting `path`."""
            lat = []
            period = 1.0 / args.rate
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            nxt = t0
            while time.monotonic() - t0 < args.window:
                s = time.monotonic()
                scrape(path)
                lat.append(time.monotonic() - s)
                nxt += period
                pause = nxt - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            elapsed = time.monotonic() - t0
            lat.sort()
            return (cpu_seconds(proc.pid) - c0) / elapsed, len(lat) / elapsed, lat

        # The same rate of the smallest request the admin API answers: what any HTTP
        # request costs (wake-ups, socket calls), whatever it asks for.
        live, _, _ = run("/v1/status/live")
        busy, rate, lat = run("/metrics")
        cost = busy - idle
        print("| shards | partitions | scrapes/s | document | series | idle CPU | /v1/status/live CPU "
              "| /metrics CPU | scrape cost | per scrape | of which beyond a status GET "
              "| latency p50 / p99 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(f"| {args.shards} | {partitions} | {rate:.0f} "
              f"| {len(doc) / 1024:.0f} KiB | {series} | {idle * 100:.2f} % "
              f"| {live * 100:.2f} % | {busy * 100:.2f} % | {cost * 100:.2f} % of a core "
              f"| {cost / rate * 1e6:.0f} µs | {(busy - live) / rate * 1e6:.0f} µs "
              f"| {lat[len(lat) // 2] * 1e3:.2f} / {lat[int(len(lat) * 0.99)] * 1e3:.2f} ms |")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
