"""ACLs with kafka-python against a broker started with `--authorizer acl --super-users
User:admin`: the admin creates topics and ACLs over SASL/SCRAM, then alice, bob and an
anonymous plaintext client each get what the ACLs grant and Kafka's authorization errors
for the rest.

Usage: acl_check.py --sasl HOST:PORT --plain HOST:PORT --phase grant|persisted

`grant`: topics, ACLs, every check, then a DeleteAcls whose effect is checked too.
`persisted` (after a restart): the ACLs left by `grant` are still listed and enforced.
Exits non-zero with a message on the first check that fails; prints "ACL OK" at the end.
"""

import argparse
import sys
import time

import kafka.errors as Errors
from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, KafkaAdminClient, NewTopic,
                         ResourcePattern, ResourcePatternFilter, ResourceType)

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret"}
TIMEOUT_S = 30


def log(msg):
    print(f"[acl] {msg}", flush=True)


def sasl(user):
    return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                sasl_plain_username=user, sasl_plain_password=PASSWORDS[user])


def client_cfg(bootstrap, user):
    cfg = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    if user is not None:
        cfg.update(sasl(user))
    return cfg


def acl(principal, op, perm, rtype, name, pattern=ACLResourcePatternType.LITERAL):
    return ACL(principal=principal, host="*", operation=op, permission_type=perm,
               resource_pattern=ResourcePattern(rtype, name, pattern))


ALLOW, DENY = ACLPermissionType.ALLOW, ACLPermissionType.DENY
TOPIC, GROUP = ResourceType.TOPIC, ResourceType.GROUP
PREFIXED = ACLResourcePatternType.PREFIXED

GRANTS = [
    acl("User:alice", ACLOperation.WRITE, ALLOW, TOPIC, "orders"),
    acl("User:alice", ACLOperation.READ, ALLOW, TOPIC, "orders"),
    acl("User:alice", ACLOperation.READ, ALLOW, GROUP, "g1"),
    acl("User:alice", ACLOperation.ALL, ALLOW, TOPIC, "logs-", PREFIXED),
    acl("User:alice", ACLOperation.WRITE, DENY, TOPIC, "logs-audit"),
]


def every_acl():
    return ACLFilter(principal=None, host=None, operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(ResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def described(admin):
    acls, err = admin.describe_acls(every_acl())
    assert err is Errors.NoError, err
    return sorted((a.principal, a.operation.name, a.permission_type.name,
                   a.resource_pattern.resource_type.name, a.resource_pattern.resource_name,
                   a.resource_pattern.pattern_type.name) for a in acls)


def produce(bootstrap, user, topic, n=5):
    """Sends n records and waits for them; returns None or the error's class name."""
    producer = KafkaProducer(enable_idempotence=False, acks=1, max_block_ms=10000,
                             retries=0, **client_cfg(bootstrap, user))
    try:
        futures = [producer.send(topic, f"{user}-{i}".encode()) for i in range(n)]
        for f in futures:
            f.get(timeout=TIMEOUT_S)
        return None
    except Errors.KafkaError as e:
        return type(e).__name__
    finally:
        producer.close(timeout=5)


def consume(bootstrap, user, topic, group, want):
    """Reads `want` records of `topic` in `group`; returns None or the error's name."""
    consumer = KafkaConsumer(topic, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=20000,
                             **client_cfg(bootstrap, user))
    try:
        got = 0
        deadline = time.monotonic() + TIMEOUT_S
        while got < want and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=500).values():
                got += len(recs)
        if got < want:
            return f"read {got} of {want}"
        consumer.commit()
        return None
    except Errors.KafkaError as e:
        return type(e).__name__
    finally:
        consumer.close(autocommit=False)


def visible_topics(bootstrap, user):
    consumer = KafkaConsumer(**client_cfg(bootstrap, user))
    try:
        return sorted(t for t in consumer.topics() if not t.startswith("__"))
    finally:
        consumer.close()


def expect(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    log(f"{what}: {got!r}")


def grant(sasl_addr, plain_addr):
    admin = KafkaAdminClient(**client_cfg(sasl_addr, "admin"))
    admin.create_topics([NewTopic(t, 1, 1) for t in
                         ("orders", "logs-app", "logs-audit", "secret")])
    result = admin.create_acls(GRANTS)
    expect("create_acls failures", result["failed"], [])
    expect("described", len(described(admin)), len(GRANTS))
    # The super user sees and writes everything.
    expect("admin topics", visible_topics(sasl_addr, "admin"),
           ["logs-app", "logs-audit", "orders", "secret"])
    expect("admin produce secret", produce(sasl_addr, "admin", "secret"), None)

    # alice: what the grants say, and DENY over the prefixed ALLOW.
    expect("alice topics", visible_topics(sasl_addr, "alice"),
           ["logs-app", "logs-audit", "orders"])
    # Metadata's and DescribeCluster's authorized operations (kafka-python asks for them and
    # decodes Kafka's bit field into operation names).
    alice_admin = KafkaAdminClient(**client_cfg(sasl_addr, "alice"))
    [orders] = alice_admin.describe_topics(["orders"])
    expect("alice's operations on orders", sorted(orders["authorized_operations"]),
           ["DESCRIBE", "READ", "WRITE"])
    expect("alice's operations on the cluster",
           alice_admin.describe_cluster()["authorized_operations"], [])
    expect("admin's cluster operations include ALTER",
           "ALTER" in admin.describe_cluster()["authorized_operations"], True)
    expect("alice produce orders", produce(sasl_addr, "alice", "orders"), None)
    expect("alice produce logs-app", produce(sasl_addr, "alice", "logs-app"), None)
    expect("alice produce logs-audit", produce(sasl_addr, "alice", "logs-audit"),
           "TopicAuthorizationFailedError")
    expect("alice produce secret", produce(sasl_addr, "alice", "secret"),
           "TopicAuthorizationFailedError")
    expect("alice consume orders in g1", consume(sasl_addr, "alice", "orders", "g1", 5), None)
    expect("alice consume orders in g2", consume(sasl_addr, "alice", "orders", "g2", 5),
           "GroupAuthorizationFailedError")
    # OffsetFetch: the admin commits an offset of `secret` in g1; alice, who may read g1 but
    # not describe `secret`, does not see it in a fetch of all the group's offsets and is
    # refused it by name (Kafka's answers).
    committer = KafkaConsumer(group_id="g1", enable_auto_commit=False,
                              **client_cfg(sasl_addr, "admin"))
    committer.commit({TopicPartition("secret", 0): OffsetAndMetadata(3, "", -1)})
    committer.close(autocommit=False)
    seen = alice_admin.list_group_offsets({"g1": None})["g1"]
    expect("alice's offsets of g1", sorted(tp.topic for tp in seen), ["orders"])
    try:
        alice_admin.list_group_offsets(
            {"g1": [TopicPartition("orders", 0), TopicPartition("secret", 0)]})
        expect("alice's offset of secret in g1", "answered", "TopicAuthorizationFailedError")
    except Errors.TopicAuthorizationFailedError:
        log("alice's offset of secret in g1: TopicAuthorizationFailedError")
    try:
        r = alice_admin.create_acls([acl("User:alice", ACLOperation.ALL, ALLOW, TOPIC, "*")])
        expect("alice create_acls", [type(e).__name__ if isinstance(e, Exception) else e.__name__
                                     for e in r["failed"]],
               ["ClusterAuthorizationFailedError"])
        alice_admin.close()
    except Errors.ClusterAuthorizationFailedError:
        log("alice create_acls: ClusterAuthorizationFailedError")

    # bob has no ACLs; the anonymous plaintext client neither.
    expect("bob topics", visible_topics(sasl_addr, "bob"), [])
    expect("bob produce orders", produce(sasl_addr, "bob", "orders"),
           "TopicAuthorizationFailedError")
    expect("anonymous topics", visible_topics(plain_addr, None), [])
    expect("anonymous produce orders", produce(plain_addr, None, "orders"),
           "TopicAuthorizationFailedError")

    # DeleteAcls of the prefixed grant: alice loses logs-*.
    prefixed = ACLFilter(principal="User:alice", host=None, operation=ACLOperation.ANY,
                         permission_type=ACLPermissionType.ANY,
                         resource_pattern=ResourcePatternFilter(TOPIC, "logs-", PREFIXED))
    [(_, removed, err)] = admin.delete_acls([prefixed])
    expect("delete_acls error", err, Errors.NoError)
    expect("delete_acls removed", len(removed), 1)
    expect("alice produce logs-app after delete", produce(sasl_addr, "alice", "logs-app"),
           "TopicAuthorizationFailedError")
    expect("described after delete", len(described(admin)), len(GRANTS) - 1)
    admin.close()


def persisted(sasl_addr):
    admin = KafkaAdminClient(**client_cfg(sasl_addr, "admin"))
    expect("described after restart", len(described(admin)), len(GRANTS) - 1)
    admin.close()
    expect("alice produce orders after restart", produce(sasl_addr, "alice", "orders"), None)
    expect("alice produce logs-app after restart", produce(sasl_addr, "alice", "logs-app"),
           "TopicAuthorizationFailedError")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sasl", required=True)
    ap.add_argument("--plain", required=True)
    ap.add_argument("--phase", choices=["grant", "persisted"], required=True)
    a = ap.parse_args()
    if a.phase == "grant":
        grant(a.sasl, a.plain)
    else:
        persisted(a.sasl)
    log("ACL OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
