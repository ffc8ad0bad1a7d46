"""kafka-python over SASL_PLAINTEXT with OAUTHBEARER: the token given (a JWT the test
signed) authenticates a producer and a consumer, which write and read back three records.

Usage: oauth_client.py --bootstrap HOST:PORT --token JWT --topic T

Prints "OAUTH OK" on success, or "AUTH FAILED <error class>" and exits 3 when the broker
refuses the token; any other failure is an exception.
"""

import argparse
import sys

import kafka.errors as Errors
from kafka import KafkaConsumer, KafkaProducer
from kafka.net.sasl.oauth import AbstractTokenProvider


class Fixed(AbstractTokenProvider):
    def __init__(self, token):
        super().__init__()
        self._token = token

    def token(self):
        return self._token


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--topic", required=True)
    a = ap.parse_args()
    cfg = dict(bootstrap_servers=a.bootstrap, security_protocol="SASL_PLAINTEXT",
               sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Fixed(a.token),
               request_timeout_ms=15000, bootstrap_timeout_ms=4000)
    try:
        producer = KafkaProducer(acks=1, max_block_ms=10000, **cfg)
        for i in range(3):
            producer.send(a.topic, f"oauth-{i}".encode()).get(timeout=15)
        producer.close(timeout=5)
        consumer = KafkaConsumer(a.topic, group_id=None, auto_offset_reset="earliest",
                                 consumer_timeout_ms=10000, **cfg)
        got = [m.value for m in consumer]
        consumer.close()
    except Errors.KafkaError as e:
        # kafka-python retries a refused authentication until its bootstrap times out.
        print(f"AUTH FAILED {type(e).__name__}: {e}")
        return 3
    want = [f"oauth-{i}".encode() for i in range(3)]
    assert got[-3:] == want, f"read {got}"
    print("OAUTH OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
