"""Broker CPU per client-telemetry push (KIP-714): starts a sluice broker, subscribes every
client to every metric, then pushes librdkafka-sized OTLP payloads (zstd) from raw
connections, each push from a fresh client instance (a GetTelemetrySubscriptions, then its
first push), and reports the broker's CPU time (utime + stime from /proc) per push and per
request, beside the client's wall time.

Usage: python3 perf/telemetry-push-cost.py [--pushes N] [--metrics M]
  (SLUICE=path picks the binary; default target/release/sluice; run with tests/.venv's
  python, which has kafka-python and zstandard)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import telemetry_check as tc  # noqa: E402  (the wire and OTLP helpers)
import zstandard  # noqa: E402
from kafka import KafkaAdminClient  # noqa: E402
from kafka.admin import ConfigResource, ConfigResourceType  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def payload(metrics):
    """One push: `metrics` gauges with a node.id attribute, as librdkafka sends."""
    body = b""
    for i in range(metrics):
        gauge = (tc.field(1, f"org.apache.kafka.producer.perf.metric{i}".encode())
                 + tc.field(5, tc.field(1, tc.point(i, {"node.id": "1"}))))
        body += tc.field(2, gauge)
    return zstandard.ZstdCompressor().compress(tc.field(1, tc.field(2, body)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pushes", type=int, default=2000)
    ap.add_argument("--metrics", type=int, default=40)
    a = ap.parse_args()
    binary = os.environ.get("SLUICE", os.path.join(ROOT, "target", "release", "sluice"))
    data = tempfile.mkdtemp(prefix="sluice-telemetry-")
    port = 19192
    broker = subprocess.Popen(
        [binary, "start", "--shards", "1", "--no-pin", "--listen", f"127.0.0.1:{port}",
         "--data-dir", data], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bootstrap = f"127.0.0.1:{port}"
    try:
        tc.wait_until("the broker", lambda: _up(bootstrap), timeout=30)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        res = admin.alter_configs([ConfigResource(
            ConfigResourceType.CLIENT_METRICS, "all", {"metrics": "*", "interval.ms": "100"})])
        assert res["client_metrics"]["all"] == "OK", res
        body = payload(a.metrics)
        conn = tc.Conn("perf-telemetry", bootstrap)
        before, start = cpu_seconds(broker.pid), time.time()
        for _ in range(a.pushes):
            g = conn.get()
            assert g["error"] == 0, g
            assert conn.push(g["instance"], g["sub"], body, compression=4) == 0
        cpu, wall = cpu_seconds(broker.pid) - before, time.time() - start
        print(f"commit {_commit()}  pushes {a.pushes}  metrics/push {a.metrics}  "
              f"payload {len(body)} B (zstd)")
        print(f"broker CPU {cpu:.2f} s = {cpu / a.pushes * 1e6:.0f} us/push "
              f"({cpu / (2 * a.pushes) * 1e6:.0f} us/request); client wall {wall:.2f} s "
              f"= {a.pushes / wall:.0f} pushes/s")
    finally:
        broker.kill()
        broker.wait()


def _up(bootstrap):
    try:
        tc.Conn("probe", bootstrap)
        return True
    except OSError:
        return False


def _commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                       text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


if __name__ == "__main__":
    main()
