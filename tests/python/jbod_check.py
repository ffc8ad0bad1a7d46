"""JBOD (several --data-dir directories) through kafka-python's admin client: partitions
spread over the directories, DescribeLogDirs per directory, AlterReplicaLogDirs moving a
replica while a producer writes to it, bad requests refused with Kafka's codes, the
placement kept across kill -9, and an offline directory taking only its partitions offline.

Phases (the Rust test restarts and breaks the broker between them):
  spread     create the topic, produce, check placement, move a partition under load
  persisted  after kill -9: same placement, every acknowledged record readable
  runtime    a segment file cannot be created in a directory while serving (its partition
             directory renamed away): that directory goes offline, the others serve
  offline    one directory is unusable: it reports KAFKA_STORAGE_ERROR, its partitions
             refuse produce with it, the others serve
  back       the directory is back: every record readable
"""

import argparse
import json
import os
import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
import kafka.errors as Errors

TOPIC = "jbod"
PARTITIONS = 6
PER_PARTITION = 200
KAFKA_STORAGE_ERROR = 56


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def describe(admin):
    """Log dirs of the (only) broker: {path: result dict}."""
    brokers = admin.describe_log_dirs()
    check(len(brokers) == 1, f"one broker: {brokers}")
    return {d["log_dir"]: d for d in brokers[0]["log_dirs"]}, brokers[0]["broker"]


def placement(dirs):
    """{partition: path} of current replicas, {partition: path} of future ones."""
    current, future = {}, {}
    for path, d in dirs.items():
        for t in d["topics"]:
            if t["name"] != TOPIC:
                continue
            for p in t["partitions"]:
                (future if p["is_future_key"] else current)[p["partition_index"]] = path
    return current, future


def produce(bootstrap, partitions, count, tag):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                             enable_idempotence=True, linger_ms=5)
    futures = [producer.send(TOPIC, value=f"{tag}-{p}-{i}".encode(), partition=p)
               for p in partitions for i in range(count)]
    producer.flush(60)
    for f in futures:
        f.get(timeout=60)
    producer.close()


def read_all(bootstrap, partition):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tp = TopicPartition(TOPIC, partition)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    end = consumer.end_offsets([tp])[tp]
    values, offsets = [], []
    deadline = time.time() + 60
    while consumer.position(tp) < end and time.time() < deadline:
        for records in consumer.poll(timeout_ms=1000).values():
            for r in records:
                values.append(r.value.decode())
                offsets.append(r.offset)
    consumer.close()
    check(offsets == list(range(len(offsets))), f"partition {partition}: offsets not dense")
    check(len(values) == end, f"partition {partition}: read {len(values)} of {end}")
    return values


def check_all(bootstrap, state):
    for p in range(PARTITIONS):
        values = read_all(bootstrap, p)
        want = state["acked"][str(p)]
        missing = set(want) - set(values)
        check(not missing, f"partition {p}: {len(missing)} acknowledged records missing, "
                           f"e.g. {sorted(missing)[:3]}")
        check(len(values) == len(set(values)), f"partition {p}: duplicates")


def phase_spread(args, admin, state):
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    time.sleep(0.5)
    produce(args.bootstrap, range(PARTITIONS), PER_PARTITION, "a")
    state["acked"] = {str(p): [f"a-{p}-{i}" for i in range(PER_PARTITION)]
                      for p in range(PARTITIONS)}
    dirs, broker = describe(admin)
    check(sorted(dirs) == sorted(args.dirs), f"log dirs {sorted(dirs)} != {sorted(args.dirs)}")
    for path, d in dirs.items():
        check(d["error_code"] == 0, f"{path}: error {d['error_code']}")
        check(d["total_bytes"] > 0 and 0 <= d["usable_bytes"] <= d["total_bytes"],
              f"{path}: bytes {d['total_bytes']} {d['usable_bytes']}")
    current, future = placement(dirs)
    check(sorted(current) == list(range(PARTITIONS)) and not future, f"placement {current}")
    per_dir = {path: sorted(p for p, at in current.items() if at == path) for path in dirs}
    # The directory with the fewest partitions takes the next: 6 over 3 is 2 each.
    check(all(len(ps) == PARTITIONS // len(dirs) for ps in per_dir.values()),
          f"not spread evenly: {per_dir}")
    for p, at in current.items():
        check(os.path.isdir(os.path.join(at, f"{TOPIC}-{p}")), f"{TOPIC}-{p} not in {at}")
    for path, d in dirs.items():
        for t in d["topics"]:
            for p in t["partitions"]:
                check(p["partition_size"] > 0, f"{path} {p}: empty")

    # Bad requests: Kafka's codes.
    src = current[0]
    dest = next(d for d in args.dirs if d != src)
    res = admin.alter_replica_log_dirs({
        (TOPIC, 0, broker): "/not/a/log/dir",
        ("no-such-topic", 0, broker): dest,
        (TOPIC, 99, broker): dest,
        (TOPIC, 1, broker): current[1],
    })
    got = {(k.topic, k.partition): v for k, v in res.items()}
    check(got[(TOPIC, 0)] is Errors.LogDirNotFoundError, f"unknown dir: {got}")
    check(got[("no-such-topic", 0)] is Errors.UnknownTopicOrPartitionError, f"unknown topic: {got}")
    check(got[(TOPIC, 99)] is Errors.UnknownTopicOrPartitionError, f"no partition 99: {got}")
    check(got[(TOPIC, 1)] is Errors.NoError, f"already there: {got}")

    # The move, while a producer writes to the partition.
    acked, stop = [], threading.Event()

    def keep_producing():
        producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all",
                                 enable_idempotence=True, linger_ms=2)
        i = 0
        while not stop.is_set():
            batch = [(f"m-0-{i + k}", producer.send(TOPIC, value=f"m-0-{i + k}".encode(),
                                                   partition=0)) for k in range(20)]
            i += 20
            for value, f in batch:
                f.get(timeout=60)
                acked.append(value)
        producer.close()

    writer = threading.Thread(target=keep_producing)
    writer.start()
    time.sleep(0.5)
    res = admin.alter_replica_log_dirs({(TOPIC, 0, broker): dest})
    check(list(res.values()) == [Errors.NoError], f"move: {res}")
    deadline = time.time() + 60
    while True:
        current, future = placement(describe(admin)[0])
        if current.get(0) == dest and 0 not in future:
            break
        check(time.time() < deadline, f"partition 0 not moved: {current} {future}")
        time.sleep(0.2)
    time.sleep(0.5)
    stop.set()
    writer.join()
    check(len(acked) > 0, "nothing produced during the move")
    state["acked"]["0"] += acked
    check(not os.path.exists(os.path.join(src, f"{TOPIC}-0")), f"{TOPIC}-0 still in {src}")
    check(os.path.isdir(os.path.join(dest, f"{TOPIC}-0")), f"{TOPIC}-0 not in {dest}")
    for d in args.dirs:
        left = [n for n in os.listdir(d) if n.endswith("-future") or n.endswith("-delete")]
        check(not left, f"{d}: left behind {left}")
    check_all(args.bootstrap, state)
    state["placement"] = {str(p): at for p, at in current.items()}
    print(f"spread: {json.dumps(per_dir)}; moved {TOPIC}-0 {src} -> {dest} "
          f"with {len(acked)} records produced during the move")


def phase_persisted(args, admin, state):
    dirs, _ = describe(admin)
    current, future = placement(dirs)
    check({str(p): at for p, at in current.items()} == state["placement"] and not future,
          f"placement changed: {current} vs {state['placement']}")
    check_all(args.bootstrap, state)
    print("persisted: placement and records as before")


def phase_runtime(args, admin, state):
    # A partition that rolls a segment every 16 KiB: its next roll creates a file.
    rt = "jbod-rt"
    admin.create_topics([NewTopic(rt, 1, 1, topic_configs={"segment.bytes": "16384"})])
    time.sleep(0.5)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", retries=0,
                             max_block_ms=10000)
    for i in range(10):
        producer.send(rt, value=b"x" * 100, partition=0).get(timeout=30)
    # Into the last directory (the first holds the node's metadata: its failure would stop
    # the node, as Kafka's does).
    at = args.dirs[-1]
    res = admin.alter_replica_log_dirs({(rt, 0, describe(admin)[1]): at})
    check(list(res.values()) == [Errors.NoError], f"move: {res}")
    deadline = time.time() + 30
    while True:
        current = [path for path, d in describe(admin)[0].items()
                   for t in d["topics"] if t["name"] == rt
                   for p in t["partitions"] if not p["is_future_key"]]
        if current == [at] and os.path.isdir(os.path.join(at, f"{rt}-0")):
            break
        check(time.time() < deadline, f"{rt}-0 not moved to {at}: {current}")
        time.sleep(0.2)
    live = os.path.join(at, f"{rt}-0")
    aside = os.path.join(os.path.dirname(args.state), "rt-aside")
    os.rename(live, aside)
    try:
        refused = None
        for i in range(200):
            try:
                producer.send(rt, value=b"y" * 1000, partition=0).get(timeout=30)
            except Errors.KafkaStorageError as e:
                refused = e
                break
        check(refused is not None, f"{rt}-0 kept taking writes without its directory")
        deadline = time.time() + 30
        while describe(admin)[0][at]["error_code"] != KAFKA_STORAGE_ERROR:
            check(time.time() < deadline, f"{at} not offline after a failed write")
            time.sleep(0.2)
        mine = sorted(int(p) for p, where in state["placement"].items() if where == at)
        others = sorted(set(range(PARTITIONS)) - set(mine))
        for p in mine:
            try:
                producer.send(TOPIC, value=b"refused", partition=p).get(timeout=30)
                fail(f"produce to partition {p} in the failed directory succeeded")
            except Errors.KafkaStorageError:
                pass
        produce(args.bootstrap, others, 5, "r")
        for p in others:
            state["acked"][str(p)] += [f"r-{p}-{i}" for i in range(5)]
    finally:
        os.rename(aside, live)
    producer.close()
    print(f"runtime: {at} offline after a failed segment creation; partitions {mine} "
          f"refused, {others} served")


def phase_offline(args, admin, state):
    dirs, _ = describe(admin)
    off = dirs[args.offline_dir]
    check(off["error_code"] == KAFKA_STORAGE_ERROR and not off["topics"],
          f"offline dir: {off}")
    gone = sorted(int(p) for p, at in state["placement"].items() if at == args.offline_dir)
    live = sorted(set(range(PARTITIONS)) - set(gone))
    check(gone, "no partition in the offline directory")
    current, _ = placement(dirs)
    check(sorted(current) == live, f"online replicas {sorted(current)} != {live}")
    producer = KafkaProducer(bootstrap_servers=args.bootstrap, acks="all", retries=0,
                             max_block_ms=10000)
    try:
        producer.send(TOPIC, value=b"refused", partition=gone[0]).get(timeout=30)
        fail(f"produce to partition {gone[0]} in the offline directory succeeded")
    except Errors.KafkaStorageError:
        pass
    producer.close()
    produce(args.bootstrap, live, 10, "b")
    for p in live:
        state["acked"][str(p)] += [f"b-{p}-{i}" for i in range(10)]
        values = read_all(args.bootstrap, p)
        check(set(state["acked"][str(p)]) <= set(values), f"partition {p}: records missing")
    print(f"offline: partitions {gone} refused with KAFKA_STORAGE_ERROR, {live} served")


def phase_back(args, admin, state):
    dirs, _ = describe(admin)
    check(all(d["error_code"] == 0 for d in dirs.values()), f"dirs: {dirs}")
    check_all(args.bootstrap, state)
    print("back: every acknowledged record readable")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--dirs", required=True, help="the broker's log dirs, comma-separated")
    ap.add_argument("--state", required=True, help="JSON file carried between phases")
    ap.add_argument("--phase", required=True,
                    choices=["spread", "persisted", "runtime", "offline", "back"])
    ap.add_argument("--offline-dir")
    args = ap.parse_args()
    args.dirs = args.dirs.split(",")
    state = {}
    if os.path.exists(args.state):
        with open(args.state) as f:
            state = json.load(f)
    admin = KafkaAdminClient(bootstrap_servers=args.bootstrap, request_timeout_ms=30000)
    {"spread": phase_spread, "persisted": phase_persisted, "runtime": phase_runtime,
     "offline": phase_offline, "back": phase_back}[args.phase](args, admin, state)
    admin.close()
    with open(args.state, "w") as f:
        json.dump(state, f)


if __name__ == "__main__":
    main()
