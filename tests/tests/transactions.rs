//! Transactions with real clients (issue 13): rdkafka transactional producers committing
//! and aborting across partitions on both shards, read_committed and read_uncommitted
//! readers, an open transaction holding read_committed readers at the last stable offset,
//! the broker aborting a transaction past its timeout, zombie fencing, and
//! consume-transform-produce with `send_offsets_to_transaction` producing every input
//! exactly once across a broker kill -9 in the middle of a transaction. Over raw TCP:
//! DescribeProducers, DescribeTransactions and ListTransactions (what
//! `kafka-transactions.sh` sends), and the coordinator's answers to bad requests.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use sluice_tests::kafka::{admin, base_config, create_topics, producer};
use sluice_tests::wire::Flex;
use sluice_tests::{skip_in_cluster_mode, wire, Broker, BrokerConfig};

/// DescribeProducers v0 (flexible: request header v2, response header v1), by hand.
fn describe_producers(broker: &Broker, topics: &[(&str, &[i32])]) -> Vec<Partition> {
    let mut req = Vec::new();
    req.extend_from_slice(&61i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&7i32.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.push(b't');
    req.push(0); // header tagged fields
    req.push(topics.len() as u8 + 1);
    for (name, parts) in topics {
        req.push(name.len() as u8 + 1);
        req.extend_from_slice(name.as_bytes());
        req.push(parts.len() as u8 + 1);
        for p in *parts {
            req.extend_from_slice(&p.to_be_bytes());
        }
        req.push(0);
    }
    req.push(0);
    let mut s = wire::connect(broker);
    s.write_all(&wire::frame(&req)).unwrap();
    let resp = wire::read_response(&mut s).expect("an answer");
    let mut d = Flex(&resp);
    assert_eq!(d.i32(), 7, "correlation id");
    d.tagged();
    let _throttle = d.i32();
    let mut out = Vec::new();
    for _ in 0..d.len() {
        let topic = d.string();
        for _ in 0..d.len() {
            let index = d.i32();
            let error = d.i16();
            let _message = d.len(); // null (0) or a string we do not read
            let mut producers = Vec::new();
            for _ in 0..d.len() {
                producers.push(Producer {
                    id: d.i64(),
                    epoch: d.i32(),
                    last_sequence: d.i32(),
                    _last_timestamp: d.i64(),
                    coordinator_epoch: d.i32(),
                    txn_start: d.i64(),
                });
                d.tagged();
            }
            d.tagged();
            out.push(Partition {
                topic: topic.clone(),
                index,
                error,
                producers,
            });
        }
        d.tagged();
    }
    out
}

#[derive(Debug)]
struct Partition {
    topic: String,
    index: i32,
    error: i16,
    producers: Vec<Producer>,
}

#[derive(Debug)]
struct Producer {
    id: i64,
    epoch: i32,
    last_sequence: i32,
    _last_timestamp: i64,
    coordinator_epoch: i32,
    txn_start: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_producers_shows_an_idempotent_producers_state() {
    skip_in_cluster_mode!("raw requests to node 1, which need not lead the partitions");
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[("dp", 2, &[])]).await;
    let p = producer(&bootstrap, &[("enable.idempotence", "true")]);
    for i in 0..3 {
        p.send(
            FutureRecord::to("dp")
                .partition(0)
                .payload(&format!("v{i}"))
                .key("k"),
            Duration::from_secs(30),
        )
        .await
        .expect("produced");
    }
    let got = describe_producers(&broker, &[("dp", &[0, 1, 9]), ("nope", &[0])]);
    assert_eq!(got.len(), 4, "{got:?}");
    let p0 = &got[0];
    assert_eq!((p0.topic.as_str(), p0.index, p0.error), ("dp", 0, 0));
    assert_eq!(p0.producers.len(), 1, "{got:?}");
    let prod = &p0.producers[0];
    assert!(prod.id >= 0 && prod.epoch == 0, "{prod:?}");
    assert_eq!(prod.last_sequence, 2, "three records, sequences 0-2");
    assert_eq!((prod.coordinator_epoch, prod.txn_start), (-1, -1));
    assert_eq!(
        (got[1].index, got[1].error, got[1].producers.len()),
        (1, 0, 0)
    );
    assert_eq!(
        (got[2].index, got[2].error),
        (9, 3),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    assert_eq!((got[3].topic.as_str(), got[3].error), ("nope", 3));
}

/// How long a transactional client call may take (InitProducerId creates
/// `__transaction_state` on first use).
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

fn txn_producer(bootstrap: &str, id: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut all = vec![("transactional.id", id)];
    all.extend_from_slice(extra);
    let p = producer(bootstrap, &all);
    p.init_transactions(TXN_TIMEOUT).expect("init_transactions");
    p
}

async fn send(p: &FutureProducer, topic: &str, partition: i32, value: &str) {
    p.send(
        FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|(e, _)| panic!("send {value}: {e}"));
}

/// A consumer reading from the beginning by assign(), at `isolation.level`.
fn reader(bootstrap: &str, isolation: &str) -> StreamConsumer {
    let mut cfg = base_config(bootstrap);
    cfg.set("group.id", "sluice-txn-readers")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "100");
    cfg.create().expect("create consumer")
}

/// The values `c` reads from the start of `topic`'s partitions: waits until `want` arrived
/// (or `timeout` passed), then half a second more for any extra.
async fn read_values(
    c: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    want: usize,
    timeout: Duration,
) -> Vec<String> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let wait = if got.len() >= want {
            Duration::from_millis(500)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, c.recv()).await {
            Ok(Ok(m)) => got.push(String::from_utf8_lossy(m.payload().unwrap_or(b"")).into()),
            Ok(Err(e)) => panic!("consume {topic}: {e}"),
            Err(_) => break,
        }
    }
    c.unassign().expect("unassign");
    got.sort();
    got
}

fn values(prefix: &str, n: usize) -> Vec<String> {
    let mut v: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_and_aborted_transactions_as_each_isolation_level_sees_them() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    // Four partitions: the two shards own two each, so every transaction spans shards.
    create_topics(&admin(&b), &[("tx", 4, &[])]).await;
    let p = txn_producer(&b, "visibility", &[]);
    p.begin_transaction().unwrap();
    for i in 0..20 {
        send(&p, "tx", i % 4, &format!("committed-{i:03}")).await;
    }
    p.commit_transaction(TXN_TIMEOUT).expect("commit");
    p.begin_transaction().unwrap();
    for i in 0..10 {
        send(&p, "tx", i % 4, &format!("aborted-{i:03}")).await;
    }
    p.abort_transaction(TXN_TIMEOUT).expect("abort");
    p.begin_transaction().unwrap();
    for i in 20..25 {
        send(&p, "tx", i % 4, &format!("committed-{i:03}")).await;
    }
    p.commit_transaction(TXN_TIMEOUT).expect("commit");

    let all = [0, 1, 2, 3];
    let committed = read_values(&reader(&b, "read_committed"), "tx", &all, 25, TXN_TIMEOUT).await;
    assert_eq!(committed, values("committed", 25));
    let everything =
        read_values(&reader(&b, "read_uncommitted"), "tx", &all, 35, TXN_TIMEOUT).await;
    let mut want = values("aborted", 10);
    want.extend(values("committed", 25));
    want.sort();
    assert_eq!(everything, want);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_holds_read_committed_readers_at_the_last_stable_offset() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("lso", 1, &[])]).await;
    let plain = producer(&b, &[]);
    send(&plain, "lso", 0, "before").await;
    let p = txn_producer(&b, "holder", &[]);
    p.begin_transaction().unwrap();
    send(&p, "lso", 0, "in-txn").await;
    p.flush(TXN_TIMEOUT).unwrap();
    // Written after the transaction began: read_committed readers wait for it behind the
    // open transaction, read_uncommitted ones do not.
    send(&plain, "lso", 0, "after").await;
    let held = read_values(
        &reader(&b, "read_committed"),
        "lso",
        &[0],
        1,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(held, ["before"]);
    let uncommitted = read_values(
        &reader(&b, "read_uncommitted"),
        "lso",
        &[0],
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(uncommitted, ["after", "before", "in-txn"]);
    p.commit_transaction(TXN_TIMEOUT).expect("commit");
    let released = read_values(
        &reader(&b, "read_committed"),
        "lso",
        &[0],
        3,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(released, ["after", "before", "in-txn"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_aborts_a_transaction_past_its_timeout_and_fences_its_producer() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("slow", 2, &[])]).await;
    let p = txn_producer(
        &b,
        "slowpoke",
        &[
            ("transaction.timeout.ms", "2000"),
            ("message.timeout.ms", "2000"),
            ("socket.timeout.ms", "2000"),
        ],
    );
    p.begin_transaction().unwrap();
    send(&p, "slow", 0, "too-late-0").await;
    send(&p, "slow", 1, "too-late-1").await;
    // A record behind the open transaction: read_committed sees it only once the
    // transaction ends, which here only the coordinator's timer (2 s) can do. So reading it
    // is the wait for the abort, and nothing of the transaction may show up before it.
    let plain = producer(&b, &[]);
    send(&plain, "slow", 0, "later").await;
    let seen = read_values(
        &reader(&b, "read_committed"),
        "slow",
        &[0, 1],
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(seen, ["later"]);
    // The abort bumped the producer's epoch: its commit fails.
    let r = p.commit_transaction(TXN_TIMEOUT);
    assert!(
        r.is_err(),
        "a commit after the broker's abort must fail: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_max_timeout_ms_bounds_what_producers_may_ask_for() {
    let broker = Broker::start_with(BrokerConfig {
        extra_args: vec!["--transaction-max-timeout-ms".into(), "3000".into()],
        ..BrokerConfig::default()
    });
    let b = broker.bootstrap();
    let too_long = producer(
        &b,
        &[
            ("transactional.id", "greedy"),
            ("transaction.timeout.ms", "5000"),
            ("socket.timeout.ms", "5000"),
            ("message.timeout.ms", "5000"),
        ],
    );
    match too_long.init_transactions(TXN_TIMEOUT) {
        Err(KafkaError::Transaction(e)) => assert_eq!(
            e.code(),
            rdkafka::types::RDKafkaErrorCode::InvalidTransactionTimeout,
            "{e}"
        ),
        other => panic!("a timeout above the broker's maximum must be refused: {other:?}"),
    }
    // At the maximum is fine (init_transactions succeeds inside).
    let _modest = txn_producer(
        &b,
        "modest",
        &[
            ("transaction.timeout.ms", "3000"),
            ("socket.timeout.ms", "3000"),
            ("message.timeout.ms", "3000"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("zombie", 2, &[])]).await;
    let zombie = txn_producer(&b, "worker-1", &[]);
    zombie.begin_transaction().unwrap();
    send(&zombie, "zombie", 0, "from-zombie").await;
    zombie.flush(TXN_TIMEOUT).unwrap();
    // The new incarnation's InitProducerId aborts the zombie's open transaction first.
    let fresh = txn_producer(&b, "worker-1", &[]);
    fresh.begin_transaction().unwrap();
    send(&fresh, "zombie", 1, "from-fresh").await;
    fresh.commit_transaction(TXN_TIMEOUT).expect("commit");
    match zombie.commit_transaction(TXN_TIMEOUT) {
        Err(KafkaError::Transaction(e)) => assert!(e.is_fatal(), "fenced is fatal: {e}"),
        other => panic!("the zombie's commit must fail fenced: {other:?}"),
    }
    let seen = read_values(
        &reader(&b, "read_committed"),
        "zombie",
        &[0, 1],
        1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(seen, ["from-fresh"]);
}

/// One round of the consume-transform-produce application: reads `input` from the group's
/// committed offsets, writes each record upper-cased to `output` and the offsets in the same
/// transaction, `per_txn` records per transaction. Returns how many records it committed,
/// or stops early with the error that ended it (a broker going away).
async fn transform(b: &str, per_txn: usize, stop_after: Option<usize>) -> Result<usize, String> {
    let mut cfg = base_config(b);
    cfg.set("group.id", "eos-app")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "100");
    let consumer: StreamConsumer = cfg.create().map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition("eos-in", p);
    }
    // The group's coordinator may not serve yet (the offsets topic is created by the
    // first lookup, and loads): rdkafka hands that back here, and the application asks again.
    let deadline = Instant::now() + TXN_TIMEOUT;
    let committed = loop {
        match consumer.committed_offsets(tpl.clone(), TXN_TIMEOUT) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets not available yet ({e}); asking again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut start = TopicPartitionList::new();
    for e in committed.elements() {
        let at = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        start
            .add_partition_offset("eos-in", e.partition(), at)
            .unwrap();
    }
    consumer.assign(&start).map_err(|e| e.to_string())?;
    let p = producer(b, &[("transactional.id", "eos-app-1")]);
    p.init_transactions(TXN_TIMEOUT)
        .map_err(|e| e.to_string())?;
    let mut done = 0;
    loop {
        if stop_after.is_some_and(|n| done >= n) {
            // Leave a transaction open: produced, not committed.
            p.begin_transaction().map_err(|e| e.to_string())?;
            send(&p, "eos-out", 0, "NEVER-COMMITTED").await;
            p.flush(TXN_TIMEOUT).map_err(|e| e.to_string())?;
            return Ok(done);
        }
        let mut batch = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        while batch.len() < per_txn {
            match tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
                Ok(Ok(m)) => {
                    batch.push((
                        m.partition(),
                        String::from_utf8_lossy(m.payload().unwrap_or(b"")).to_string(),
                    ));
                    next.insert(m.partition(), m.offset() + 1);
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            return Ok(done);
        }
        p.begin_transaction().map_err(|e| e.to_string())?;
        for (part, v) in &batch {
            p.send(
                FutureRecord::<(), _>::to("eos-out")
                    .partition(*part)
                    .payload(&v.to_uppercase()),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
        }
        let mut offsets = TopicPartitionList::new();
        for (part, o) in &next {
            offsets
                .add_partition_offset("eos-in", *part, Offset::Offset(*o))
                .unwrap();
        }
        let meta = consumer.group_metadata().ok_or("no group metadata")?;
        p.send_offsets_to_transaction(&offsets, &meta, TXN_TIMEOUT)
            .map_err(|e| e.to_string())?;
        p.commit_transaction(TXN_TIMEOUT)
            .map_err(|e| e.to_string())?;
        done += batch.len();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn consume_transform_produce_is_exactly_once_across_a_broker_kill9() {
    let mut broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("eos-in", 2, &[]), ("eos-out", 2, &[])]).await;
    let plain = producer(&b, &[]);
    for i in 0..300 {
        send(&plain, "eos-in", i % 2, &format!("rec-{i:03}")).await;
    }
    // The application commits 100 records in transactions of 25, then dies with a
    // transaction open (produced, offsets not sent); the broker is killed -9 under it.
    let first = transform(&b, 25, Some(100)).await.expect("first run");
    assert_eq!(first, 100);
    broker.kill9();
    broker.restart();
    // A new incarnation (same transactional id) fences the open transaction and carries on
    // from the committed offsets; a run cut short by a restarting broker (or one that found
    // nothing to read for a while, as leaders move) is followed by another.
    let mut total = first;
    let deadline = Instant::now() + Duration::from_secs(90);
    while total < 300 {
        match transform(&b, 40, None).await {
            Ok(n) => total += n,
            Err(e) => eprintln!("the application stopped ({e}); starting it again"),
        }
        assert!(
            Instant::now() < deadline,
            "the application transformed only {total} of 300 records"
        );
    }
    assert!(total >= 300, "{total} records transformed");
    let out = read_values(
        &reader(&b, "read_committed"),
        "eos-out",
        &[0, 1],
        300,
        TXN_TIMEOUT,
    )
    .await;
    let want: Vec<String> = {
        let mut v: Vec<String> = (0..300).map(|i| format!("REC-{i:03}")).collect();
        v.sort();
        v
    };
    assert_eq!(out, want, "every input exactly once in the output");
}

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const OPERATION_NOT_ATTEMPTED: i16 = 55;
const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;

/// Calls `api` v`version` (non-flexible) until the coordinator finished loading; returns
/// the body after the throttle time.
fn call_loaded(s: &mut std::net::TcpStream, api: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + TXN_TIMEOUT;
    loop {
        let resp = wire::call(s, api, version, 1, body);
        let rest = resp[4..].to_vec();
        let code = i16::from_be_bytes([rest[0], rest[1]]);
        // (AddPartitionsToTxn's first bytes are an array count, never 14 here.)
        if code != COORDINATOR_LOAD_IN_PROGRESS || Instant::now() > deadline {
            return rest;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn init_producer_id(s: &mut std::net::TcpStream, id: &str, timeout_ms: i32) -> (i16, i64, i16) {
    let body = wire::Enc::new().nstr(Some(id)).i32(timeout_ms).0;
    let r = call_loaded(s, 22, 1, &body);
    let mut d = wire::Dec::new(&r);
    (d.i16(), d.i64(), d.i16())
}

fn end_txn(s: &mut std::net::TcpStream, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let body = wire::Enc::new()
        .str(id)
        .i64(pid)
        .i16(epoch)
        .i8(commit as i8)
        .0;
    wire::Dec::new(&call_loaded(s, 26, 1, &body)).i16()
}

/// AddPartitionsToTxn v1: (topic, partition, error) per partition.
fn add_partitions(
    s: &mut std::net::TcpStream,
    id: &str,
    pid: i64,
    epoch: i16,
    topics: &[(&str, &[i32])],
) -> Vec<(String, i32, i16)> {
    let mut e = wire::Enc::new()
        .str(id)
        .i64(pid)
        .i16(epoch)
        .i32(topics.len() as i32);
    for (t, ps) in topics {
        e = e.str(t).i32(ps.len() as i32);
        for p in *ps {
            e = e.i32(*p);
        }
    }
    let r = wire::call(s, 24, 1, 1, &e.0);
    let mut d = wire::Dec::new(&r[4..]);
    let mut out = Vec::new();
    for _ in 0..d.i32() {
        let t = d.str();
        for _ in 0..d.i32() {
            let p = d.i32();
            out.push((t.clone(), p, d.i16()));
        }
    }
    out
}

/// A flexible request (header v2, client id "t") of `api` v0 with `body`; the response
/// body after its header.
fn call_flexible(broker: &Broker, api: i16, body: &[u8]) -> Vec<u8> {
    let mut req = Vec::new();
    req.extend_from_slice(&api.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&9i32.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.push(b't');
    req.push(0);
    req.extend_from_slice(body);
    let mut s = wire::connect(broker);
    s.write_all(&wire::frame(&req)).unwrap();
    let resp = wire::read_response(&mut s).expect("an answer");
    let mut d = Flex(&resp);
    assert_eq!(d.i32(), 9, "correlation id");
    d.tagged();
    d.0.to_vec()
}

fn compact_strings(items: &[&str]) -> Vec<u8> {
    let mut b = vec![items.len() as u8 + 1];
    for i in items {
        b.push(i.len() as u8 + 1);
        b.extend_from_slice(i.as_bytes());
    }
    b
}

/// One transaction as DescribeTransactions v0 answers it: (id, error, state, producer id,
/// partitions).
type Described = (String, i16, String, i64, Vec<(String, i32)>);

fn describe_transactions(broker: &Broker, ids: &[&str]) -> Vec<Described> {
    let mut body = compact_strings(ids);
    body.push(0);
    let resp = call_flexible(broker, 65, &body);
    let mut d = Flex(&resp);
    let _throttle = d.i32();
    let mut out = Vec::new();
    for _ in 0..d.len() {
        let error = d.i16();
        let id = d.string();
        let state = d.string();
        let _timeout = d.i32();
        let _start = d.i64();
        let pid = d.i64();
        let _epoch = d.i16();
        let mut parts = Vec::new();
        for _ in 0..d.len() {
            let t = d.string();
            for _ in 0..d.len() {
                parts.push((t.clone(), d.i32()));
            }
            d.tagged();
        }
        d.tagged();
        out.push((id, error, state, pid, parts));
    }
    out
}

/// ListTransactions v0 with state filters: (error, unknown filters, (id, producer id, state)).
fn list_transactions(
    broker: &Broker,
    states: &[&str],
) -> (i16, Vec<String>, Vec<(String, i64, String)>) {
    let mut body = compact_strings(states);
    body.push(1); // no producer id filters
    body.push(0);
    let resp = call_flexible(broker, 66, &body);
    let mut d = Flex(&resp);
    let _throttle = d.i32();
    let error = d.i16();
    let unknown = (0..d.len()).map(|_| d.string()).collect();
    let mut txns = Vec::new();
    for _ in 0..d.len() {
        let id = d.string();
        let pid = d.i64();
        let state = d.string();
        d.tagged();
        txns.push((id, pid, state));
    }
    (error, unknown, txns)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_coordinator_answers_bad_requests_with_kafkas_codes_and_describes_its_transactions() {
    skip_in_cluster_mode!("raw requests to node 1, which need not coordinate the ids");
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("bi", 2, &[])]).await;
    let mut s = wire::connect(&broker);
    // FindCoordinator v1, key type 1: creates __transaction_state.
    let r = wire::call(&mut s, 10, 1, 1, &wire::Enc::new().str("ghost").i8(1).0);
    assert_eq!(wire::Dec::new(&r[4..]).i16(), 0, "FindCoordinator");

    // EndTxn for an id never initialised.
    assert_eq!(
        end_txn(&mut s, "ghost", 1000, 0, true),
        INVALID_PRODUCER_ID_MAPPING
    );
    // A transaction timeout of 0 (and above transaction.max.timeout.ms).
    assert_eq!(
        init_producer_id(&mut s, "good-id", 0).0,
        INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        init_producer_id(&mut s, "good-id", 900_001).0,
        INVALID_TRANSACTION_TIMEOUT
    );
    let (code, pid, epoch) = init_producer_id(&mut s, "good-id", 10_000);
    assert_eq!((code, epoch), (0, 0));
    assert!(pid >= 0);
    // Wrong epoch, wrong producer id, unknown partitions: nothing is added.
    let fenced = add_partitions(&mut s, "good-id", pid, epoch + 1, &[("bi", &[0])]);
    assert_eq!(
        fenced,
        [("bi".into(), 0, INVALID_PRODUCER_EPOCH)],
        "v1 says fenced so"
    );
    let mapping = add_partitions(&mut s, "good-id", pid + 1, epoch, &[("bi", &[0])]);
    assert_eq!(mapping, [("bi".into(), 0, INVALID_PRODUCER_ID_MAPPING)]);
    let unknown = add_partitions(
        &mut s,
        "good-id",
        pid,
        epoch,
        &[("bi", &[0, 7]), ("nope", &[0])],
    );
    assert_eq!(
        unknown,
        [
            ("bi".into(), 0, OPERATION_NOT_ATTEMPTED),
            ("bi".into(), 7, UNKNOWN_TOPIC_OR_PARTITION),
            ("nope".into(), 0, UNKNOWN_TOPIC_OR_PARTITION),
        ]
    );
    // Ending a transaction that never began.
    assert_eq!(
        end_txn(&mut s, "good-id", pid, epoch, true),
        INVALID_TXN_STATE
    );
    let described = describe_transactions(&broker, &["good-id", "ghost"]);
    assert_eq!(described.len(), 2, "{described:?}");
    assert_eq!(
        (
            described[0].1,
            described[0].2.as_str(),
            described[0].3,
            described[0].4.len()
        ),
        (0, "Empty", pid, 0)
    );
    assert_eq!(
        (described[1].0.as_str(), described[1].1),
        ("ghost", TRANSACTIONAL_ID_NOT_FOUND)
    );

    // Now a transaction in flight, as kafka-transactions.sh sees it.
    let added = add_partitions(&mut s, "good-id", pid, epoch, &[("bi", &[0, 1])]);
    assert!(added.iter().all(|(_, _, e)| *e == 0), "{added:?}");
    let described = describe_transactions(&broker, &["good-id"]);
    assert_eq!(described[0].2, "Ongoing");
    assert_eq!(described[0].4, [("bi".into(), 0), ("bi".into(), 1)]);
    let (error, unknown, txns) = list_transactions(&broker, &[]);
    assert_eq!((error, unknown.len()), (0, 0));
    assert_eq!(txns, [("good-id".into(), pid, "Ongoing".into())]);
    let (_, unknown, txns) = list_transactions(&broker, &["Bogus"]);
    assert_eq!((unknown, txns.len()), (vec!["Bogus".to_string()], 0));
    assert_eq!(end_txn(&mut s, "good-id", pid, epoch, false), 0, "aborted");
    let (_, _, txns) = list_transactions(&broker, &["CompleteAbort"]);
    assert_eq!(txns, [("good-id".into(), pid, "CompleteAbort".into())]);
}

/// Produce v3 of one transactional batch (`value`, sequence `seq`) of `pid`/`epoch` for
/// transactional id `id`: the partition's error code.
fn txn_produce(
    s: &mut std::net::TcpStream,
    id: &str,
    (topic, partition): (&str, i32),
    (pid, epoch, seq): (i64, i16, i32),
) -> i16 {
    use wire::at;
    let mut batch = wire::record_batch(&[b"txn-value"], wire::now_ms());
    batch[at::ATTRIBUTES..at::ATTRIBUTES + 2].copy_from_slice(&0x10i16.to_be_bytes());
    batch[at::PRODUCER_ID..at::PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    batch[at::PRODUCER_ID + 8..at::PRODUCER_ID + 10].copy_from_slice(&epoch.to_be_bytes());
    batch[at::BASE_SEQUENCE..at::BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    wire::seal(&mut batch);
    let body = wire::Enc::new()
        .nstr(Some(id))
        .i16(-1)
        .i32(10_000)
        .i32(1)
        .str(topic)
        .i32(1)
        .i32(partition)
        .bytes(&batch)
        .0;
    let r = wire::call(s, 0, 3, 1, &body);
    let mut d = wire::Dec::new(&r);
    assert_eq!(d.i32(), 1, "one topic");
    assert_eq!(d.str(), topic);
    assert_eq!(d.i32(), 1, "one partition");
    assert_eq!(d.i32(), partition);
    d.i16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transactional_produce_outside_its_transaction_is_refused_and_not_stored() {
    skip_in_cluster_mode!("raw requests to node 1, which need not lead the partition");
    let broker = Broker::start();
    let b = broker.bootstrap();
    create_topics(&admin(&b), &[("kip890", 2, &[])]).await;
    let mut s = wire::connect(&broker);
    let r = wire::call(&mut s, 10, 1, 1, &wire::Enc::new().str("loner").i8(1).0);
    assert_eq!(wire::Dec::new(&r[4..]).i16(), 0, "FindCoordinator");
    let (code, pid, epoch) = init_producer_id(&mut s, "loner", 10_000);
    assert_eq!(code, 0);
    // No AddPartitionsToTxn: the coordinator does not know this partition in a transaction
    // (none is even open), so the leader refuses the batch before storing it.
    let refused = txn_produce(&mut s, "loner", ("kip890", 0), (pid, epoch, 0));
    assert_eq!(refused, INVALID_TXN_STATE);
    assert_eq!(wire::latest(&mut s, "kip890"), 0, "nothing stored");
    // Added to the transaction, the same batch goes in.
    let added = add_partitions(&mut s, "loner", pid, epoch, &[("kip890", &[0])]);
    assert!(added.iter().all(|(_, _, e)| *e == 0), "{added:?}");
    assert_eq!(
        txn_produce(&mut s, "loner", ("kip890", 0), (pid, epoch, 0)),
        0
    );
    // Not the other partition, nor as another producer id.
    assert_eq!(
        txn_produce(&mut s, "loner", ("kip890", 1), (pid, epoch, 0)),
        INVALID_TXN_STATE
    );
    assert_eq!(
        txn_produce(&mut s, "loner", ("kip890", 0), (pid + 1, epoch, 0)),
        INVALID_PRODUCER_ID_MAPPING
    );
    // After the transaction ends, a late retry cannot open another.
    assert_eq!(end_txn(&mut s, "loner", pid, epoch, true), 0);
    assert_eq!(
        txn_produce(&mut s, "loner", ("kip890", 0), (pid, epoch, 1)),
        INVALID_TXN_STATE
    );
}
