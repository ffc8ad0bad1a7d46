"""DescribeQuorum (KIP-595) through kafka-python's admin client: waits until the controller
quorum's leader reports every expected observer (a broker-only node) with the index it has
applied and when it last pulled, as `kafka-metadata-quorum.sh describe --replication`
prints them.

Usage: quorum_check.py BOOTSTRAP OBSERVER_ID... Exits non-zero with the reason on failure.
"""

import sys
import time

from kafka import KafkaAdminClient


def main():
    bootstrap, want = sys.argv[1], {int(n) for n in sys.argv[2:]}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="quorum-check")
    deadline = time.time() + 60
    while True:
        q = admin.describe_metadata_quorum()
        p = q["topics"][0]["partitions"][0]
        observers = {o["replica_id"]: o for o in p["observers"]}
        ok = set(observers) == want and all(
            o["log_end_offset"] > 0 and o["last_fetch_timestamp"] > 0
            and o["last_caught_up_timestamp"] > 0 for o in observers.values())
        if ok:
            print(f"observers: {sorted(observers.values(), key=lambda o: o['replica_id'])}")
            return
        if time.time() > deadline:
            raise AssertionError(f"observers not reported: {p}")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
