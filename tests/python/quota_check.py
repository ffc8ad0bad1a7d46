"""Client quotas with kafka-python over SASL/SCRAM: the admin limits alice to 1 MiB/s of
produce (AlterClientQuotas, as `kafka-configs.sh --entity-type users --entity-name alice
--alter --add-config producer_byte_rate=1048576` sends it), then alice and bob each
produce 10 MiB. alice's takes at least 8 s and her producer sees throttle times; bob's
sees none. A client id held to a tiny `request_percentage` sees throttle times in its
Metadata responses; one held to 2 partition mutations a second has the second topic of a
CreateTopics refused. kafka-python's admin client has no quota calls, so the requests are its
protocol classes sent through its connection manager.

Usage: quota_check.py --bootstrap HOST:PORT --phase throttle|persisted

Prints one line per check and "QUOTA OK" at the end; exits non-zero on a failed check.
"""

import argparse
import socket
import struct
import sys
import time

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.protocol.admin import AlterClientQuotasRequest, DescribeClientQuotasRequest
from kafka.protocol.metadata import MetadataRequest

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
RATE = 1 << 20
TOTAL = 10 << 20
RECORD = 100 * 1024


def log(msg):
    print(f"[quota] {msg}", flush=True)


def cfg(bootstrap, user):
    return dict(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=user,
                sasl_plain_password=PASSWORDS[user], request_timeout_ms=30000)


def send(admin, request):
    return admin._manager.run(admin._manager.send, request)


def alter(admin, user, key, value, entity_type="user"):
    """Sets (or, with value None, removes) one quota of one entity."""
    E = AlterClientQuotasRequest.EntryData
    req = AlterClientQuotasRequest(entries=[E(
        entity=[E.EntityData(entity_type=entity_type, entity_name=user)],
        ops=[E.OpData(key=key, value=float(value or 0), remove=value is None)])],
        validate_only=False)
    resp = send(admin, req)
    errors = [(e.error_code, e.error_message) for e in resp.entries]
    assert errors == [(0, None)], f"alter_client_quotas: {errors}"


def described(admin):
    C = DescribeClientQuotasRequest.ComponentData
    req = DescribeClientQuotasRequest(
        components=[C(entity_type="user", match_type=2, match=None)], strict=False)
    resp = send(admin, req)
    assert resp.error_code == 0, (resp.error_code, resp.error_message)
    return sorted(((tuple((d.entity_type, d.entity_name) for d in e.entity)),
                   tuple((v.key, v.value) for v in e.values)) for e in resp.entries)


def answered_connections(bootstrap, n):
    """Opens n connections at once, each sending ApiVersions v0; how many were answered."""
    host, port = bootstrap.rsplit(":", 1)
    answered = 0
    for i in range(n):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.settimeout(3)
            body = struct.pack(">hhih", 18, 0, i, 1) + b"q"
            try:
                s.sendall(struct.pack(">i", len(body)) + body)
                if len(s.recv(4)) == 4:
                    answered += 1
            except OSError:
                pass
    return answered


def produce(bootstrap, user, topic):
    """10 MiB in 100 KiB records; returns (seconds, largest throttle time seen)."""
    producer = KafkaProducer(acks=1, linger_ms=5, batch_size=RECORD + 1024,
                             max_request_size=2 << 20, **cfg(bootstrap, user))
    value = b"q" * RECORD
    t0 = time.monotonic()
    futures = [producer.send(topic, value) for _ in range(TOTAL // RECORD)]
    for f in futures:
        f.get(timeout=120)
    elapsed = time.monotonic() - t0
    throttle = max((v for group in producer.metrics().values() for k, v in group.items()
                    if k.endswith("throttle-time-max") and v == v and v is not None),
                   default=0.0)
    producer.close(timeout=10)
    return elapsed, throttle


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--phase", choices=["throttle", "persisted"], required=True)
    a = ap.parse_args()
    admin = KafkaAdminClient(**cfg(a.bootstrap, "admin"))
    want = [((("user", "alice"),), (("producer_byte_rate", float(RATE)),))]
    if a.phase == "throttle":
        alter(admin, "alice", "producer_byte_rate", RATE)
        got = described(admin)
        assert got == want, f"described {got}"
        log(f"described: {got}")
        elapsed, throttle = produce(a.bootstrap, "alice", "quota-alice")
        log(f"alice: 10 MiB in {elapsed:.1f} s, largest throttle {throttle:.0f} ms")
        assert elapsed >= 8.0, f"alice's 10 MiB at 1 MiB/s took only {elapsed:.1f} s"
        assert throttle > 0, "alice's producer saw no throttle time"
        elapsed, throttle = produce(a.bootstrap, "bob", "quota-bob")
        log(f"bob: 10 MiB in {elapsed:.1f} s, largest throttle {throttle:.0f} ms")
        assert throttle == 0, f"bob, who has no quota, was throttled ({throttle} ms)"
        # KIP-612: at 5 new connections a second from this IP, most of 20 opened at once
        # are closed unanswered; the quota gone, all are answered.
        alter(admin, "127.0.0.1", "connection_creation_rate", 5, entity_type="ip")
        limited = answered_connections(a.bootstrap, 20)
        alter(admin, "127.0.0.1", "connection_creation_rate", None, entity_type="ip")
        free = answered_connections(a.bootstrap, 20)
        log(f"connections answered of 20: {limited} at 5/s, {free} without the quota")
        assert 1 <= limited < 20 and free == 20, (limited, free)
        # request_percentage: a client id held to 0.001 % of a thread (10 µs a second) is
        # told its throttle in the responses themselves, as Kafka does (KIP-219). Metadata
        # takes microseconds to answer: a few requests use up the budget.
        alter(admin, "busy-client", "request_percentage", 0.001, entity_type="client-id")
        busy = KafkaAdminClient(**cfg(a.bootstrap, "bob"), client_id="busy-client")
        node = next(iter(busy._manager.cluster.brokers())).node_id
        throttles = []
        while len(throttles) < 20 and not any(throttles):
            # To the node itself: kafka-python picks no node while its connection is muted.
            m = busy._manager.run(busy._manager.send, MetadataRequest(topics=None), node)
            throttles.append(m.throttle_time_ms)
        busy.close()
        alter(admin, "busy-client", "request_percentage", None, entity_type="client-id")
        log(f"Metadata throttle times at 0.001 % request time: {throttles}")
        assert max(throttles) > 0, f"no throttle time in the responses: {throttles}"
        # KIP-599 controller_mutation_rate, 2 partitions a second: in one CreateTopics, the
        # topic that spends the budget passes whole and the next one is refused with
        # THROTTLING_QUOTA_EXCEEDED; without the quota it is created.
        alter(admin, "mutator", "controller_mutation_rate", 2, entity_type="client-id")
        mutator = KafkaAdminClient(**cfg(a.bootstrap, "bob"), client_id="mutator")
        got = mutator.create_topics(
            {"mutations-a": {"num_partitions": 10, "replication_factor": 1},
             "mutations-b": {"num_partitions": 1, "replication_factor": 1}},
            raise_errors=False)
        codes = {t["name"]: t["error_code"] for t in got["topics"]}
        log(f"CreateTopics at 2 partitions/s: {codes}")
        assert codes == {"mutations-a": 0, "mutations-b": 89}, codes
        mutator.close()
        alter(admin, "mutator", "controller_mutation_rate", None, entity_type="client-id")
        # A new connection: the old one waits out its throttle (kafka-python's and ours).
        mutator = KafkaAdminClient(**cfg(a.bootstrap, "bob"), client_id="mutator")
        got = mutator.create_topics(
            {"mutations-b": {"num_partitions": 1, "replication_factor": 1}}, raise_errors=False)
        assert [t["error_code"] for t in got["topics"]] == [0], got
        mutator.close()
    else:
        got = described(admin)
        assert got == want, f"described after restart {got}"
        log(f"described after restart: {got}")
    admin.close()
    log("QUOTA OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
