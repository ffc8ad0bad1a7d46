"""kafka-python over a secured listener (SSL, SASL_PLAINTEXT or SASL_SSL): produce records,
read them back, print what Metadata said.

Usage: tls_client.py --bootstrap HOST:PORT --topic T [--security-protocol P] [--cafile CA]
           [--certfile C --keyfile K] [--sasl-mechanism M --username U --password PW]
           [--count N]

Exits 0 after printing `ok brokers=<host:port,...> records=N`; anything else (a refused
handshake, a missing record) raises and exits non-zero.
"""

import argparse
import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--security-protocol", default="SSL")
    ap.add_argument("--cafile")
    ap.add_argument("--sasl-mechanism")
    ap.add_argument("--username")
    ap.add_argument("--password")
    ap.add_argument("--certfile")
    ap.add_argument("--keyfile")
    ap.add_argument("--count", type=int, default=200)
    a = ap.parse_args()
    tls = dict(security_protocol=a.security_protocol, request_timeout_ms=20000)
    if "SSL" in a.security_protocol:
        tls.update(ssl_cafile=a.cafile, ssl_certfile=a.certfile, ssl_keyfile=a.keyfile)
    if a.sasl_mechanism:
        tls.update(
            sasl_mechanism=a.sasl_mechanism,
            sasl_plain_username=a.username,
            sasl_plain_password=a.password,
        )
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, **tls)
    brokers = sorted(f"{b['host']}:{b['port']}" for b in admin.describe_cluster()["brokers"])
    admin.close()

    producer = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", **tls)
    sent = [f"tls-{i}".encode() * 10 for i in range(a.count)]
    for v in sent:
        producer.send(a.topic, value=v)
    producer.flush(timeout=30)
    producer.close()

    consumer = KafkaConsumer(
        bootstrap_servers=a.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=20000,
        **tls,
    )
    tp = TopicPartition(a.topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    got = []
    for m in consumer:
        got.append(m.value)
        if len(got) == len(sent):
            break
    consumer.close()
    if got != sent:
        print(f"read back {len(got)} records of {len(sent)}, or in another order", file=sys.stderr)
        return 1
    print(f"ok brokers={','.join(brokers)} records={len(got)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
