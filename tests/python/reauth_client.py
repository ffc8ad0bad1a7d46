"""A kafka-python producer that outlives several SASL sessions (KIP-368): against a broker
with a short `connections.max.reauth.ms`, it sends one record every 300 ms for 5 s over
SASL_PLAINTEXT/SCRAM-SHA-256, every one acknowledged, and prints how many times the client
authenticated (re-authentications on the same connection count) as `AUTHENTICATIONS n`.

Usage: reauth_client.py --bootstrap HOST:PORT --username U --password PW --topic T
"""

import argparse
import logging
import sys
import time

from kafka import KafkaProducer


class Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.n = 0

    def emit(self, record):
        if "Authenticated as" in record.getMessage():
            self.n += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--topic", required=True)
    a = ap.parse_args()
    count = Count()
    logger = logging.getLogger("kafka")
    logger.setLevel(logging.INFO)
    logger.addHandler(count)
    producer = KafkaProducer(bootstrap_servers=a.bootstrap, security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism="SCRAM-SHA-256", sasl_plain_username=a.username,
                             sasl_plain_password=a.password, acks=1, request_timeout_ms=15000)
    deadline = time.monotonic() + 5
    sent = 0
    while time.monotonic() < deadline:
        producer.send(a.topic, f"r{sent}".encode()).get(timeout=15)
        sent += 1
        time.sleep(0.3)
    producer.close(timeout=5)
    print(f"SENT {sent}")
    print(f"AUTHENTICATIONS {count.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
