"""confluent-kafka (librdkafka as Confluent ships it in its wheel) over a secured listener:
produce records with an idempotent acks=all producer, read them back, print what Metadata
said.

Usage: confluent_client.py --bootstrap HOST:PORT --topic T [--security-protocol P]
           [--cafile CA] [--certfile C --keyfile K]
           [--sasl-mechanism M --username U --password PW] [--count N] [--expect-refused]

Exits 0 after printing `ok brokers=<host:port,...> records=N`. With --expect-refused it
exits 0 after printing `refused <error name>: <reason>` when the broker refuses the client's
authentication or its TLS handshake (a TLS alert), and non-zero if the client gets in.
"""

import argparse
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def config(a: argparse.Namespace) -> dict:
    c = {
        "bootstrap.servers": a.bootstrap,
        "security.protocol": a.security_protocol,
        # Fail fast instead of retrying a refused login for the default minute.
        "socket.timeout.ms": 20000,
    }
    if "SSL" in a.security_protocol:
        c["ssl.ca.location"] = a.cafile
        if a.certfile:
            c["ssl.certificate.location"] = a.certfile
            c["ssl.key.location"] = a.keyfile
    if a.sasl_mechanism:
        c.update(
            {
                "sasl.mechanism": a.sasl_mechanism,
                "sasl.username": a.username,
                "sasl.password": a.password,
            }
        )
    return c


def refused(a: argparse.Namespace) -> int:
    """Waits for the client's own verdict: an authentication (or handshake) error."""
    errors = []
    c = config(a)
    c["error_cb"] = lambda e: errors.append(e)
    admin = AdminClient(c)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            print("got in: Metadata answered")
            return 1
        except KafkaException:
            pass
        admin.poll(0.1)  # serves error_cb
        for e in errors:
            # Under TLS 1.3 the client learns of a refused certificate from the server's
            # alert after its own side of the handshake: a transport error.
            tls_alert = e.code() == KafkaError._TRANSPORT and "alert" in e.str()
            if e.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) or tls_alert:
                print(f"refused {e.name()}: {e.str()}")
                return 0
    print(f"no refusal seen within 20 s: {[str(e) for e in errors]}")
    return 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--security-protocol", default="SSL")
    ap.add_argument("--cafile")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    ap.add_argument("--sasl-mechanism")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--expect-refused", action="store_true")
    a = ap.parse_args()
    if a.expect_refused:
        return refused(a)

    admin = AdminClient(config(a))
    md = admin.list_topics(timeout=20)
    brokers = sorted(f"{b.host}:{b.port}" for b in md.brokers.values())

    producer = Producer(
        {**config(a), "acks": "all", "enable.idempotence": True, "linger.ms": 5}
    )
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    sent = [f"confluent-{i}".encode() * 10 for i in range(a.count)]
    for v in sent:
        producer.produce(a.topic, value=v, partition=0, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(30)
    if left or failures:
        raise SystemExit(f"produce: {left} undelivered, failures {failures[:3]}")

    consumer = Consumer(
        {
            **config(a),
            "group.id": f"confluent-{a.topic}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(a.topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is None:
            continue
        if m.error():
            raise KafkaException(m.error())
        got.append(m.value())
    consumer.close()
    if got != sent:
        raise SystemExit(f"read {len(got)} of {len(sent)} records, or out of order")
    print(f"ok brokers={','.join(brokers)} records={len(got)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
