"""kafka-python (a pure-Python Kafka client, not librdkafka) against a running sluice broker.

Run by tests/tests/python_client.rs with the venv from scripts/install-test-deps.sh:
    tests/.venv/bin/python tests/python/test_kafka_python.py --bootstrap 127.0.0.1:PORT

Covers admin (create_topics, list_topics, describe_configs, delete_topics, describe_features,
update_features, describe_topic_partitions, describe_metadata_quorum, client-metrics
configs and list_config_resources), transactions on transaction.version 2 by raw
requests, produce with
every codec with and without idempotence, and consume by assign() (no consumer group:
the broker has no group coordinator yet), checking every record byte for byte with its
offset, plus ListOffsets (beginning/end offsets, offsets_for_times). Exits non-zero on
the first failed check.
"""

import argparse
import logging
import os
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

TIMEOUT_S = 30  # bound on any single wait in this script


def log(msg):
    print(f"[kafka-python] {msg}", flush=True)


def wait_until(what, cond, timeout_s=TIMEOUT_S):
    """Poll cond() (bounded) until it returns a truthy value; for metadata that settles."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def make_records(n, ts0, seed):
    """n varied records (key, value, headers, timestamp_ms): null keys and values, empty
    ones, binary bytes, repeated and empty headers."""
    rnd = __import__("random").Random(seed)
    out = []
    for i in range(n):
        key = None if i % 5 == 0 else (b"" if i % 5 == 1 else f"pykey-{i}".encode())
        if i % 7 == 0:
            value = None
        elif i % 7 == 1:
            value = b""
        elif i % 7 == 2:
            value = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 1500)))
        else:
            value = (f"py value {i} " * rnd.randrange(1, 50)).encode()
        if key is None and value is None:
            # kafka-python refuses a record with neither (rdkafka tests cover that case).
            value = b""
        headers = [
            [],
            [("h", f"hv{i}".encode())],
            [("dup", b"one"), ("dup", b"two"), ("empty", b"")],  # kafka-python sends no null header values
        ][i % 3]
        out.append((key, value, headers, ts0 + i * 1000))
    return out


def produce(bootstrap, topic, partitions, records, **producer_cfg):
    """Send each record to partition i % partitions; return [(partition, offset)]."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="sluice-py-test",
                             linger_ms=5, request_timeout_ms=15000, **producer_cfg)
    futures = []
    for i, (key, value, headers, ts) in enumerate(records):
        futures.append(producer.send(topic, key=key, value=value, headers=headers,
                                     partition=i % partitions, timestamp_ms=ts))
    producer.flush(timeout=TIMEOUT_S)
    placed = []
    for i, f in enumerate(futures):
        md = f.get(timeout=TIMEOUT_S)
        placed.append((md.partition, md.offset))
    producer.close(timeout=5)
    return placed


def consume_all(bootstrap, topic, partitions, want_end=None):
    """Everything in the given partitions from offset 0 to the current end, by assign().
    want_end (partition -> end offset) waits for the end offsets to reach it first: with
    acks=1 on a replicated topic the leader answers before the followers have the records,
    so the high watermark (ListOffsets latest) may still lag the acknowledged offsets, in
    Kafka as here."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="sluice-py-test",
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             request_timeout_ms=20000, max_partition_fetch_bytes=2 * 1024 * 1024)
    tps = [TopicPartition(topic, p) for p in partitions]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    def ends():
        end = consumer.end_offsets(tps, timeout_ms=15000)
        if want_end is None or all(end[tp] >= want_end[tp.partition] for tp in tps):
            return end
        return None
    end = wait_until(f"{topic}: end offsets {want_end}", ends)
    got = {p: [] for p in partitions}
    deadline = time.monotonic() + TIMEOUT_S
    while any((got[tp.partition][-1].offset + 1 if got[tp.partition] else 0) < end[tp] for tp in tps):
        if time.monotonic() > deadline:
            counts = {p: len(v) for p, v in got.items()}
            raise AssertionError(f"consume {topic}: got {counts}, want end offsets {end}")
        for tp, recs in consumer.poll(timeout_ms=200).items():
            got[tp.partition].extend(recs)
    consumer.close(autocommit=False)
    return got, {tp.partition: off for tp, off in end.items()}


def check_roundtrip(bootstrap, topic, partitions, records, placed, got_and_end, base):
    """base: partition -> offset of its first record (first_offsets)."""
    got, end = got_and_end
    want = {p: [] for p in range(partitions)}
    for i, (rec, (p, off)) in enumerate(zip(records, placed)):
        assert p == i % partitions, f"{topic}: record {i} placed in partition {p}"
        want_off = base[p] + len(want[p])
        assert off == want_off, f"{topic}: record {i} got offset {off}, want {want_off}"
        want[p].append(rec)
    for p in range(partitions):
        # Checked first so a wrong ListOffsets answer is named as such, not as missing data.
        assert end[p] == base[p] + len(want[p]), f"{topic}/{p}: end offset (ListOffsets latest) {end[p]}, wrote {len(want[p])} from {base[p]}"
        assert len(got[p]) == len(want[p]), f"{topic}/{p}: read {len(got[p])} records, wrote {len(want[p])}"
        for i, (g, (key, value, headers, ts)) in enumerate(zip(got[p], want[p])):
            off = base[p] + i
            where = f"{topic}/{p}@{off}"
            assert g.offset == off, f"{where}: offset {g.offset}"
            assert g.key == key, f"{where}: key {g.key!r} != {key!r}"
            assert g.value == value, f"{where}: value differs ({None if g.value is None else len(g.value)} bytes vs {None if value is None else len(value)})"
            assert list(g.headers) == headers, f"{where}: headers {g.headers!r} != {headers!r}"
            assert g.timestamp == ts, f"{where}: timestamp {g.timestamp} != {ts}"
            assert g.timestamp_type == 0, f"{where}: timestamp type {g.timestamp_type} (want CreateTime)"


def wait_for_leaders(admin, topic, partitions):
    """Until every partition of `topic` has a leader in Metadata (a partition just created
    may have none yet: kafka-python's ListOffsets then leaves it out of its answer)."""
    def led():
        md = {t["name"]: t for t in admin.describe_topics([topic])}.get(topic)
        parts = md["partitions"] if md and md["error_code"] == 0 else []
        return len(parts) == partitions and all(p["leader_id"] >= 0 for p in parts)
    wait_until(f"{topic}: a leader for each partition", led)


def first_offsets(bootstrap, topic, partitions, replicated):
    """The offset the first record of each fresh, empty partition gets. On one node 0 (and
    the end offsets are 0, which this checks). Replicated (--cluster), each partition is a
    Raft group whose log is the Kafka log: Raft's own entries (the leader's election no-op)
    take the first offsets as control batches that consumers skip, and the leader serves
    produce once its no-op committed; so it is the end offset once that covers the no-op."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=20000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]

    def ends():
        begin = consumer.beginning_offsets(tps, timeout_ms=15000)
        assert all(begin[tp] == 0 for tp in tps), f"{topic}: beginning offsets {begin}"
        end = consumer.end_offsets(tps, timeout_ms=15000)
        if not replicated:
            assert all(end[tp] == 0 for tp in tps), f"{topic}: end offsets {end} of a fresh topic"
            return end
        return end if all(end[tp] > 0 for tp in tps) else None

    end = wait_until(f"{topic}: first offsets", ends)
    consumer.close(autocommit=False)
    return {tp.partition: off for tp, off in end.items()}


def send(admin, request, node_id=None):
    """One request (at the versions it allows) to node_id (any node if None)."""
    async def go():
        return await admin._manager.send(request, node_id=node_id)
    return admin._manager.run(go)


def coordinator(admin, key, key_type):
    from kafka.protocol.metadata.find_coordinator import FindCoordinatorRequest

    def found():
        r = send(admin, FindCoordinatorRequest(key=key, key_type=key_type, coordinator_keys=[key]))
        c = r.coordinators[0] if getattr(r, "coordinators", None) else r
        return c.node_id if c.error_code == 0 else None
    wait_until(f"coordinator of {key}", lambda: found() is not None)
    return found()


def check_transaction_version_2(admin, bootstrap, replicated):
    """KIP-890 part 2 by hand, as a Java 4.x producer on transaction.version 2 drives it: no
    AddPartitionsToTxn or AddOffsetsToTxn (Produce v12 and TxnOffsetCommit v5 add the
    partitions), EndTxn v5 bumps the epoch, and the old epoch is fenced everywhere."""
    from kafka.protocol.producer import ProduceRequest
    from kafka.protocol.producer.transaction import (
        EndTxnRequest, InitProducerIdRequest, TxnOffsetCommitRequest)
    from kafka.record.default_records import DefaultRecordBatchBuilder

    topic, tid, group, many = "py-tv2", "py-tv2-txn", "py-tv2-group", "py-tv2-many"
    admin.create_topics({topic: {"num_partitions": 1, "replication_factor": -1},
                         many: {"num_partitions": 3, "replication_factor": -1}})
    wait_until(f"{topic} listed", lambda: {topic, many} <= set(admin.list_topics()))
    wait_for_leaders(admin, topic, 1)
    wait_for_leaders(admin, many, 3)
    base = first_offsets(bootstrap, topic, 1, replicated)[0]
    leader = {t["name"]: t for t in admin.describe_topics([topic])}[topic]["partitions"][0]["leader_id"]
    txn_node = coordinator(admin, tid, 1)
    group_node = coordinator(admin, group, 0)

    r = send(admin, InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=60000,
                                          producer_id=-1, producer_epoch=-1), txn_node)
    assert r.error_code == 0, r
    pid, epoch = r.producer_id, r.producer_epoch

    def batch(epoch, seq, value):
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=True,
                                      producer_id=pid, producer_epoch=epoch, base_sequence=seq,
                                      batch_size=1 << 16)
        b.append(0, int(time.time() * 1000), b"k", value, [])
        return bytes(b.build())

    def produce(epoch, seq, value):
        Topic = ProduceRequest.TopicProduceData
        req = ProduceRequest(
            transactional_id=tid, acks=-1, timeout_ms=30000,
            topic_data=[Topic(name=topic, partition_data=[
                Topic.PartitionProduceData(index=0, records=batch(epoch, seq, value))])],
            min_version=12, max_version=12)
        return send(admin, req, leader).responses[0].partition_responses[0].error_code

    def end(epoch, commit):
        r = send(admin, EndTxnRequest(transactional_id=tid, producer_id=pid, producer_epoch=epoch,
                                      committed=commit, min_version=5, max_version=5), txn_node)
        return r.error_code, r.producer_id, r.producer_epoch

    # Transaction 1: a record, one more in each partition of another topic (a request per
    # leader: its partitions are added together), and the group's offset, committed.
    assert produce(epoch, 0, b"committed") == 0
    leaders = {}
    for p in {t["name"]: t for t in admin.describe_topics([many])}[many]["partitions"]:
        leaders.setdefault(p["leader_id"], []).append(p["partition_index"])
    Topic = ProduceRequest.TopicProduceData
    for node, parts in leaders.items():
        req = ProduceRequest(
            transactional_id=tid, acks=-1, timeout_ms=30000,
            topic_data=[Topic(name=many, partition_data=[
                Topic.PartitionProduceData(index=p, records=batch(epoch, 0, b"many-%d" % p))
                for p in parts])],
            min_version=12, max_version=12)
        got = send(admin, req, node).responses[0].partition_responses
        assert [r.error_code for r in got] == [0] * len(parts), got
    Topic = TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic
    r = send(admin, TxnOffsetCommitRequest(
        transactional_id=tid, group_id=group, producer_id=pid, producer_epoch=epoch,
        generation_id=-1, member_id="", group_instance_id=None,
        topics=[Topic(name=topic, partitions=[Topic.TxnOffsetCommitRequestPartition(
            partition_index=0, committed_offset=base + 1, committed_leader_epoch=-1,
            committed_metadata="")])],
        min_version=5, max_version=5), group_node)
    codes = [p.error_code for t in r.topics for p in t.partitions]
    assert codes == [0], r
    assert end(epoch, True) == (0, pid, epoch + 1)
    # A retry of the end with the old epoch gets the same answer; a late write under the
    # old epoch is fenced at the partition (INVALID_PRODUCER_EPOCH).
    assert end(epoch, True) == (0, pid, epoch + 1)
    assert produce(epoch, 1, b"late") == 47
    # Transaction 2 under the new epoch: written, then aborted (the epoch moves again).
    epoch += 1
    assert produce(epoch, 0, b"aborted") == 0
    assert end(epoch, False) == (0, pid, epoch + 1)

    def read(isolation, name=topic, partitions=1):
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                          isolation_level=isolation, auto_offset_reset="earliest",
                          consumer_timeout_ms=3000)
        c.assign([TopicPartition(name, p) for p in range(partitions)])
        got = sorted(m.value for m in c)
        c.close()
        return got
    wait_until("the committed record is readable",
               lambda: read("read_committed") == [b"committed"])
    assert read("read_uncommitted") == [b"aborted", b"committed"]
    wait_until("the other topic's records are readable",
               lambda: read("read_committed", many, 3) == [b"many-0", b"many-1", b"many-2"])
    offsets = admin.list_group_offsets({group: None})[group]
    assert offsets[TopicPartition(topic, 0)].offset == base + 1, offsets
    log("transaction version 2 ok")


def check_describe_topic_partitions(admin):
    """DescribeTopicPartitions (KIP-966): name order, pages of at most the limit, a cursor
    where the next page starts, unknown names and a bad cursor answered per topic."""
    admin.create_topics({"py-dtp-a": {"num_partitions": 2, "replication_factor": -1},
                         "py-dtp-b": {"num_partitions": 3, "replication_factor": -1}})
    wait_for_leaders(admin, "py-dtp-a", 2)
    wait_for_leaders(admin, "py-dtp-b", 3)
    ids = {t["name"]: t["topic_id"] for t in admin.describe_topics(["py-dtp-a", "py-dtp-b"])}
    names = ["py-dtp-b", "py-dtp-missing", "py-dtp-a"]

    def page(cursor):
        r = admin.describe_topic_partitions(names, response_partition_limit=2, cursor=cursor)
        got = [(t["name"], t["error_code"], [p["partition_index"] for p in t["partitions"]])
               for t in r["topics"]]
        for t in r["topics"]:
            if t["error_code"] == 0:
                assert str(t["topic_id"]) == str(ids[t["name"]]), (t, ids)
                for p in t["partitions"]:
                    assert p["leader_id"] >= 0 and p["replica_nodes"] and p["isr_nodes"], p
        return got, r["next_cursor"]

    got, cursor = page(None)
    assert got == [("py-dtp-a", 0, [0, 1])], got
    assert cursor == {"topic_name": "py-dtp-b", "partition_index": 0}, cursor
    got, cursor = page(cursor)
    assert got == [("py-dtp-b", 0, [0, 1])], got
    assert cursor == {"topic_name": "py-dtp-b", "partition_index": 2}, cursor
    got, cursor = page(cursor)
    assert got == [("py-dtp-b", 0, [2]), ("py-dtp-missing", 3, [])], got
    assert cursor is None, cursor
    # A cursor naming a topic the request does not: INVALID_REQUEST for each topic.
    r = admin.describe_topic_partitions(["py-dtp-a"], cursor={"topic_name": "py-main",
                                                             "partition_index": 0})
    assert [t["error_code"] for t in r["topics"]] == [42], r
    log("describe topic partitions ok")


def check_metadata_quorum(admin, nodes):
    """DescribeQuorum (KIP-595): the controller log's leader, epoch and high watermark, every
    voter with its position and when the leader last heard from it."""
    def described():
        q = admin.describe_metadata_quorum()
        p = q["topics"][0]["partitions"][0]
        assert q["topics"][0]["topic_name"] == "__cluster_metadata", q
        assert p["error"] is None, q
        return p

    def settled():
        p = described()
        voters = p["current_voters"]
        return (len(voters) == nodes and p["leader_epoch"] >= 1 and p["high_watermark"] > 0
                and all(v["log_end_offset"] > 0 and v["last_fetch_timestamp"] > 0
                        and v["last_caught_up_timestamp"] > 0 for v in voters))
    wait_until("every voter caught up in DescribeQuorum", settled)
    p = described()
    assert p["leader_id"] in [v["replica_id"] for v in p["current_voters"]], p
    assert p["observers"] == [], p
    log(f"metadata quorum: leader {p['leader_id']} epoch {p['leader_epoch']} "
        f"hw {p['high_watermark']}, {len(p['current_voters'])} voters")


def check_client_metrics(admin):
    """client-metrics subscriptions (KIP-714) as config resources, as kafka-client-metrics.sh
    alters and describes them."""
    from kafka.admin import AlterConfigOp

    CM = ConfigResourceType.CLIENT_METRICS

    def described(name):
        got = admin.describe_configs([ConfigResource(CM, name)], config_filter="all")
        return got["client_metrics"][name]

    def alter(name, configs, **kw):
        got = admin.alter_configs([ConfigResource(CM, name, configs)], **kw)
        return got["client_metrics"][name]

    # A subscription that does not exist shows every config at its default.
    d = described("py-none")
    assert {k: v["value"] for k, v in d.items()} == {
        "metrics": "", "interval.ms": "300000", "match": ""}, d
    res = alter("py-sub", {"metrics": "org.apache.kafka.producer.", "interval.ms": "1000",
                           "match": "client_id=py-.*"})
    assert res == "OK", res

    def set_everywhere():
        d = described("py-sub")
        return d["interval.ms"]["value"] == "1000" and d["interval.ms"]["config_source"] == "DYNAMIC_CLIENT_METRICS_CONFIG"
    wait_until("client-metrics subscription described", set_everywhere)
    d = described("py-sub")
    assert d["metrics"]["value"] == "org.apache.kafka.producer.", d
    # ListConfigResources (kafka-client-metrics.sh --list): the subscription, and with no
    # type named, topics and brokers too.
    listed = wait_until("subscription listed",
                        lambda: admin.list_config_resources(["CLIENT_METRICS"]))
    assert listed == {"client_metrics": ["py-sub"]}, listed
    every = admin.list_config_resources()
    assert "py-sub" in every["client_metrics"] and "py-none-plain" in every["topic"], every
    assert len(every["broker"]) >= 1, every
    assert d["match"]["value"] == "client_id=py-.*", d
    # Refused with Kafka's codes: a bad interval and an unknown key (INVALID_REQUEST), a bad
    # match entry (INVALID_CONFIG), list operations on this resource (INVALID_CONFIG).
    for configs, code, text in [
        ({"interval.ms": "10"}, 42, "interval must be between 100 and 3600000"),
        ({"bogus": "1"}, 42, "Unknown client metrics configuration: bogus"),
        ({"match": "host=x"}, 40, "Illegal client matching pattern"),
        ({"metrics": (AlterConfigOp.APPEND, "x")}, 40, "not LIST"),
    ]:
        res = alter("py-sub", configs, raise_on_unknown=False)
        # kafka-python reports a refused resource as "[Error CODE] Name: message".
        assert str(res).startswith(f"[Error {code}]") and text in str(res), f"{configs}: {res!r}"
    assert described("py-sub")["interval.ms"]["value"] == "1000"
    # Deleting every override removes the subscription: defaults again.
    alter("py-sub", {k: (AlterConfigOp.DELETE, None) for k in ("metrics", "interval.ms", "match")})
    wait_until("client-metrics subscription gone",
               lambda: described("py-sub")["interval.ms"]["config_source"] == "DEFAULT_CONFIG")
    wait_until("subscription unlisted",
               lambda: not admin.list_config_resources(["CLIENT_METRICS"]))
    log("client-metrics subscriptions ok")


def check_features(admin):
    from kafka.errors import InvalidUpdateVersionError

    feats = admin.describe_features()
    log(f"features: {feats}")
    mv = feats["metadata.version"]
    assert mv["supported"] == (7, 27) and mv["finalized"] == (27, 27), mv
    assert mv["finalized_epoch"] is not None and mv["finalized_epoch"] >= 0, mv
    assert feats["group.version"]["finalized"] == (1, 1), feats
    tv = feats["transaction.version"]
    assert tv["supported"] == (0, 2) and tv["finalized"] == (2, 2), tv
    # Ranges that end at 0 are not advertised (nothing beyond level 0 is served).
    assert "kraft.version" not in feats, feats
    # validate_only: answered, nothing changes.
    res = admin.update_features({"group.version": ("SAFE_DOWNGRADE", 0)}, validate_only=True)
    assert res == {"group.version": "OK"}, res
    assert admin.describe_features()["group.version"]["finalized"] == (1, 1)
    # Refused as Kafka refuses them (INVALID_UPDATE_VERSION, all or nothing).
    for updates, text in [
        ({"metadata.version": 28}, "only supports versions 7-27"),
        ({"metadata.version": ("SAFE_DOWNGRADE", 20)}, "Refusing to perform the requested downgrade"),
        ({"group.version": 0}, "without setting the upgrade type"),
        ({"group.version": ("SAFE_DOWNGRADE", 0), "no.such.version": 1}, "does not support this feature"),
    ]:
        try:
            admin.update_features(updates)
        except InvalidUpdateVersionError as e:
            assert text in str(e), f"{updates}: {e}"
        else:
            raise AssertionError(f"{updates} was accepted")
    assert admin.describe_features()["group.version"]["finalized"] == (1, 1)
    # A real change, seen by every node, then back.
    assert admin.update_features({"group.version": ("SAFE_DOWNGRADE", 0)}) == {"group.version": "OK"}
    wait_until("group.version 0 everywhere",
               lambda: all("finalized" not in admin.describe_features().get("group.version", {})
                           for _ in range(3)))
    assert admin.update_features({"group.version": 1}) == {"group.version": "OK"}
    wait_until("group.version 1 again",
               lambda: all(admin.describe_features()["group.version"].get("finalized") == (1, 1)
                           for _ in range(3)))
    log("features ok")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    # Nodes of the cluster behind --bootstrap (SLUICE_TEST_CLUSTER): topics are created with
    # the broker's default.replication.factor (-1), so with more than one node they are
    # replicated and their offsets start after Raft's own entries (first_offsets).
    ap.add_argument("--cluster", type=int, default=1)
    args = ap.parse_args()
    replicated = args.cluster > 1
    bootstrap = args.bootstrap
    if os.environ.get("SLUICE_PY_DEBUG"):
        logging.basicConfig(level=logging.DEBUG)
    import kafka
    log(f"kafka-python {kafka.__version__} -> {bootstrap}")

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-py-admin",
                             request_timeout_ms=15000)

    # --- admin: create, list, describe configs ------------------------------------------
    admin.create_topics({
        "py-main": {"num_partitions": 3, "replication_factor": -1,
                    "configs": {"retention.ms": "3600000"}},
        "py-doomed": {"num_partitions": 1, "replication_factor": -1},
    })
    wait_until("created topics listed",
               lambda: {"py-main", "py-doomed"} <= set(admin.list_topics()))
    log(f"topics: {sorted(admin.list_topics())}")
    described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-main")],
                                       config_filter="all")
    configs = described["topic"]["py-main"]
    assert configs["retention.ms"]["value"] == "3600000", f"retention.ms: {configs.get('retention.ms')}"
    log(f"describe_configs py-main: retention.ms={configs['retention.ms']['value']} ({len(configs)} entries)")
    topics_md = {t["name"]: t for t in admin.describe_topics(["py-main"])}
    assert len(topics_md["py-main"]["partitions"]) == 3, topics_md

    # --- produce + consume: each codec, idempotent and not ------------------------------
    ts0 = int(time.time() * 1000) - 3_600_000
    variants = [(codec, idem) for codec in (None, "gzip", "snappy", "lz4", "zstd") for idem in (False, True)]
    for n, (codec, idem) in enumerate(variants):
        topic = f"py-{codec or 'none'}-{'idem' if idem else 'plain'}"
        admin.create_topics({topic: {"num_partitions": 3, "replication_factor": -1}})
        wait_until(f"{topic} listed", lambda: topic in admin.list_topics())
        wait_for_leaders(admin, topic, 3)
        base = first_offsets(bootstrap, topic, 3, replicated)
        if topic == "py-none-plain":
            base_none_plain = base
        records = make_records(120, ts0, seed=n)
        cfg = {"compression_type": codec, "enable_idempotence": idem}
        cfg["acks"] = "all" if idem else 1
        placed = produce(bootstrap, topic, 3, records, **cfg)
        want_end = {p: base[p] + sum(1 for q, _ in placed if q == p) for p in range(3)}
        got = consume_all(bootstrap, topic, [0, 1, 2], want_end)
        check_roundtrip(bootstrap, topic, 3, records, placed, got, base)
        log(f"{topic}: {len(records)} records round-tripped")

    # --- ListOffsets: beginning/end and by timestamp ------------------------------------
    topic = "py-none-plain"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             request_timeout_ms=20000)
    tp0 = TopicPartition(topic, 0)
    # Partition 0 holds records 0, 3, 6, ... (i % 3 == 0) at offsets b, b+1, b+2, ... (b = 0
    # on one node; first_offsets).
    b = base_none_plain[0]
    assert consumer.beginning_offsets([tp0], timeout_ms=15000)[tp0] == 0
    assert consumer.end_offsets([tp0], timeout_ms=15000)[tp0] == b + 40
    found = consumer.offsets_for_times({tp0: ts0 + 10 * 3 * 1000 + 1}, timeout_ms=15000)[tp0]
    assert found is not None and found.offset == b + 11, f"offsets_for_times: {found}"
    assert consumer.offsets_for_times({tp0: ts0 + 10_000_000}, timeout_ms=15000)[tp0] is None
    consumer.close(autocommit=False)
    log("list offsets ok")

    # --- DescribeQuorum (KIP-595): the controller quorum -----------------------------------
    check_metadata_quorum(admin, args.cluster)

    # --- DescribeTopicPartitions (KIP-966): paged topic descriptions --------------------
    check_describe_topic_partitions(admin)

    # --- feature levels (KIP-584): ApiVersions describes them, UpdateFeatures changes them --
    check_features(admin)
    # --- client-metrics subscriptions (KIP-714) as config resources ----------------------
    check_client_metrics(admin)
    # --- transactions on transaction.version 2 (KIP-890 part 2), by raw requests ----------
    check_transaction_version_2(admin, bootstrap, replicated)

    # --- delete_topics -----------------------------------------------------------------
    admin.delete_topics(["py-doomed"])
    wait_until("deleted topic gone from list_topics", lambda: "py-doomed" not in admin.list_topics())
    admin.close()
    log("ALL OK")


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback
        traceback.print_exc()
        sys.exit(1)
