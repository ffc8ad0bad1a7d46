"""Client telemetry (KIP-714) against a real broker: a librdkafka producer (confluent-kafka)
matched by a client-metrics subscription pushes its metrics, which then appear on the admin
API's /metrics (parsed by the Prometheus project's own OpenMetrics parser); then raw
GetTelemetrySubscriptions / PushTelemetry requests check Kafka's answers to good and bad
input: a hand-encoded OTLP payload in every codec (zstd, gzip, raw snappy, lz4; none),
deltas adding up, a null payload, and each refusal code.

Usage: telemetry_check.py BOOTSTRAP ADMIN_URL. Exits non-zero (with the reason) on a
failed check.
"""

import gzip
import struct
import sys
import time
import urllib.request

import confluent_kafka
import lz4.frame
import snappy
import zstandard
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType
import kafka_wire
from kafka_wire import uvarint
from prometheus_client.openmetrics.parser import text_string_to_metric_families

GET, PUSH = 71, 72
# Set by main (perf/telemetry-push-cost.py imports the wire helpers and sets them too).
BOOTSTRAP, ADMIN = None, None


def wait_until(what, f, timeout=40.0):
    deadline = time.time() + timeout
    while True:
        got = f()
        if got:
            return got
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def scrape():
    """Every sample on /metrics as (name, labels, value); the parser refuses a bad document."""
    with urllib.request.urlopen(ADMIN + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return [(s.name, s.labels, s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples]


# ---- the wire: flexible v0 requests, header v2 --------------------------------------------

class Conn(kafka_wire.Conn):
    def __init__(self, client_id, bootstrap=None):
        super().__init__(bootstrap or BOOTSTRAP, client_id, timeout=10)

    def get(self, instance=bytes(16)):
        r = self.call(GET, 0, instance + b"\0")
        r.i32()  # throttle
        error, inst, sub = r.i16(), r.take(16), r.i32()
        n = r.uvarint() - 1
        codecs = list(struct.unpack(">%db" % n, r.take(n)))
        interval, max_bytes, delta = struct.unpack(">ii?", r.take(9))
        metrics = [r.cstr() for _ in range(r.uvarint() - 1)]
        return dict(error=error, instance=inst, sub=sub, codecs=codecs, interval=interval,
                    max_bytes=max_bytes, delta=delta, metrics=metrics)

    def push(self, instance, sub, payload, compression=0, terminating=False):
        metrics = b"\0" if payload is None else uvarint(len(payload) + 1) + payload
        body = instance + struct.pack(">i?b", sub, terminating, compression) + metrics + b"\0"
        r = self.call(PUSH, 0, body)
        r.i32()  # throttle
        return r.i16()


# ---- OTLP, hand-encoded (protobuf wire format) ----------------------------------------------

def field(num, payload):
    return uvarint(num << 3 | 2) + uvarint(len(payload)) + payload


def point(value, attrs):
    kvs = b"".join(field(7, field(1, k.encode()) + field(2, field(1, v.encode())))
                   for k, v in attrs.items())
    return kvs + uvarint(6 << 3 | 1) + struct.pack("<q", value)


def metrics_data(gauge_value, sum_delta):
    # Metric: name (1), gauge (5) or sum (7: points, temporality 1 = delta, monotonic).
    gauge = (field(1, b"org.apache.kafka.test.queue.depth")
             + field(5, field(1, point(gauge_value, {"node.id": "1"}))))
    total = (field(1, b"org.apache.kafka.test.sent.total")
             + field(7, field(1, point(sum_delta, {})) + uvarint(2 << 3) + uvarint(1)
                     + uvarint(3 << 3) + uvarint(1)))
    # MetricsData: resource metrics (1) > scope metrics (2) > metrics (2).
    return field(1, field(2, field(2, gauge) + field(2, total)))


def main():
    global BOOTSTRAP, ADMIN
    BOOTSTRAP, ADMIN = sys.argv[1], sys.argv[2]
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="tel-admin")
    cm = ConfigResourceType.CLIENT_METRICS
    for name, configs in [
        ("tel-librdkafka", {"metrics": "org.apache.kafka.producer.", "interval.ms": "1000",
                            "match": "client_id=tel-producer"}),
        ("tel-raw", {"metrics": "*", "interval.ms": "1000", "match": "client_id=tel-raw.*"}),
    ]:
        res = admin.alter_configs([ConfigResource(cm, name, configs)])
        assert res["client_metrics"][name] == "OK", res

    # librdkafka (enable.metrics.push is on by default) asks, is matched, and pushes.
    p = confluent_kafka.Producer({"bootstrap.servers": BOOTSTRAP, "client.id": "tel-producer"})
    for i in range(100):
        p.produce("telemetry-topic", value=b"v%d" % i)
    p.flush(30)

    def pushed():
        p.poll(0)
        got = [s for s in scrape()
               if s[0].startswith("sluice_client_producer_")
               and s[1].get("client_id") == "tel-producer"]
        return got
    got = wait_until("librdkafka's metrics on /metrics", pushed)
    labels = got[0][1]
    assert labels["client_software_name"] not in ("", "unknown"), labels
    assert len(labels["client_instance_id"]) == 22, labels
    print(f"librdkafka pushed {len(got)} series, e.g. {got[0]}")
    # Only what the subscription asked for (producer metrics).
    ours = [s for s in scrape() if s[1].get("client_id") == "tel-producer"]
    assert all(s[0].startswith("sluice_client_producer_") for s in ours), ours
    p.flush(10)
    del p

    # Raw requests. Get: a new instance id, the subscription's metrics and interval,
    # Kafka's codecs, telemetry.max.bytes, delta temporality.
    c = Conn("tel-raw-1")
    g = c.get()
    assert g["error"] == 0 and g["instance"] != bytes(16), g
    assert (g["metrics"], g["interval"], g["codecs"], g["max_bytes"], g["delta"]) == (
        ["*"], 1000, [4, 3, 1, 2], 1048576, True), g
    # Asked again within the interval: throttled, every other field zero.
    again = c.get(g["instance"])
    assert again["error"] == 89 and again["instance"] == bytes(16), again

    inst, sub = g["instance"], g["sub"]
    data = metrics_data(5, 2)
    assert c.push(inst, sub, zstandard.ZstdCompressor().compress(data), compression=4) == 0
    # Too early for the next one.
    assert c.push(inst, sub, data) == 89
    time.sleep(1.1)
    assert c.push(inst, sub, gzip.compress(metrics_data(7, 3)), compression=1) == 0
    time.sleep(1.1)
    # Raw snappy (as librdkafka writes it) and an lz4 frame.
    assert c.push(inst, sub, snappy.compress(metrics_data(7, 1)), compression=2) == 0
    time.sleep(1.1)
    assert c.push(inst, sub, lz4.frame.compress(metrics_data(7, 1)), compression=3) == 0
    time.sleep(1.1)
    # librdkafka 2.5-2.10 send null metrics when they have none: accepted as empty.
    assert c.push(inst, sub, None) == 0

    series = {(n, l.get("node_id")): v for n, l, v in scrape()
              if l.get("client_id") == "tel-raw-1"}
    assert len(series) == 2, series
    assert series[("sluice_client_test_queue_depth", "1")] == 7, series
    assert series[("sluice_client_test_sent_total", None)] == 7, series

    # Refusals, each on a fresh instance (a Get, then its first push).
    def fresh(client_id):
        conn = Conn(client_id)
        got = conn.get()
        assert got["error"] == 0, got
        return conn, got["instance"], got["sub"]

    conn, i, s = fresh("tel-raw-2")
    assert conn.push(i, s + 1, data) == 117, "unknown subscription id"
    conn, i, s = fresh("tel-raw-3")
    assert conn.push(i, s, data, compression=9) == 76, "unknown compression"
    conn, i, s = fresh("tel-raw-4")
    assert conn.push(i, s, b"\0" * (1048576 + 1)) == 118, "too large"
    conn, i, s = fresh("tel-raw-5")
    assert conn.push(i, s, b"\xff\xff\xff\xff") == 87, "not OTLP"
    conn, i, s = fresh("tel-raw-6")
    bomb = gzip.compress(b"\0" * (9 << 20))
    # Past a bound of ours: TELEMETRY_TOO_LARGE, which clients retry (87 would end their
    # telemetry).
    assert conn.push(i, s, bomb, compression=1) == 118, "decompresses past the cap"
    conn, i, s = fresh("tel-raw-7")
    assert conn.push(bytes(16), s, data) == 42, "reserved instance id"
    assert conn.push(i, s, data, terminating=True) == 0
    assert conn.push(i, s, data) == 42, "push after terminating"
    # The connections still work: a last Get on one.
    assert fresh("tel-raw-8")[1] != bytes(16)

    pushes = sum(v for n, _, v in scrape() if n == "sluice_telemetry_pushes_total")
    assert pushes >= 4, pushes
    print("telemetry checks passed")


if __name__ == "__main__":
    main()
