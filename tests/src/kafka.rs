//! Shared rdkafka helpers for the integration tests: client configs, admin calls, a record
//! model with readable diffs, pipelined produce, and bounded consume-to-watermark.
//!
//! The consumers made here never join a group: they `assign()` explicit partitions at
//! explicit offsets, with auto-commit off. Group members are in `tests/tests/groups.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, Timestamp, TopicPartitionList};

/// Bound on every single client call (metadata, admin, watermarks).
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings every client gets: loopback IPv4 only, and timeouts short enough that a dead
/// broker fails a test in seconds rather than librdkafka's minute-long defaults.
pub fn base_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "sluice-tests")
        .set("socket.timeout.ms", "10000")
        // Reconnect quickly after a broker restart (crash tests).
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "2000");
    cfg
}

/// A FutureProducer with test defaults plus `extra` overrides (acks, compression, ...).
pub fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut cfg = base_config(bootstrap);
    // A small linger batches a burst of sends into few requests (exercises multi-record
    // batches) without slowing single sends noticeably.
    cfg.set("linger.ms", "5").set("message.timeout.ms", "30000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("create producer")
}

/// A consumer for `assign()`-only use. librdkafka requires a group.id for assign(), but
/// with explicit offsets and no commits it never needs the group coordinator.
pub fn consumer(bootstrap: &str) -> StreamConsumer {
    let mut cfg = base_config(bootstrap);
    cfg.set("group.id", "sluice-tests-assign-only")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        // Fetch up to the 1 MiB-ish records the large-message test writes.
        .set("max.partition.fetch.bytes", "2097152")
        .set("fetch.wait.max.ms", "100");
    cfg.create().expect("create consumer")
}

pub fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    base_config(bootstrap)
        .create()
        .expect("create admin client")
}

pub fn admin_opts() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(OP_TIMEOUT))
        .operation_timeout(Some(OP_TIMEOUT))
}

/// The broker's `default.replication.factor` in a CreateTopics request.
pub const DEFAULT_REPLICATION: TopicReplication<'static> = TopicReplication::Fixed(-1);

/// A topic to create: name, partition count, topic configs.
pub type TopicSpec<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// Creates topics and asserts each creation succeeded. Their replication factor is the
/// broker's `default.replication.factor` (-1 in the request, as Kafka allows since
/// CreateTopics v4): 1 on one node, N in test-cluster mode (crate docs).
pub async fn create_topics(admin: &AdminClient<DefaultClientContext>, topics: &[TopicSpec<'_>]) {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, parts, cfg)| {
            cfg.iter().fold(
                NewTopic::new(name, *parts, DEFAULT_REPLICATION),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(new.iter(), &admin_opts())
        .await
        .expect("CreateTopics request");
    assert_eq!(
        results.len(),
        topics.len(),
        "one CreateTopics result per topic"
    );
    for r in results {
        if let Err((name, code)) = r {
            panic!("CreateTopics {name}: {code:?}");
        }
    }
}

/// Waits (bounded) until metadata shows `topic` with `partitions` partitions, each with a
/// leader. CreateTopics may return before metadata reflects it, as in Kafka.
pub async fn wait_for_topic(consumer: &StreamConsumer, topic: &str, partitions: usize) {
    let deadline = Instant::now() + OP_TIMEOUT;
    let mut last;
    loop {
        match consumer.fetch_metadata(Some(topic), OP_TIMEOUT) {
            Ok(md) => {
                if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
                    let ready = t.error().is_none()
                        && t.partitions().len() == partitions
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none());
                    if ready {
                        return;
                    }
                    last = format!(
                        "error {:?}, {} partitions, leaders {:?}",
                        t.error(),
                        t.partitions().len(),
                        t.partitions()
                            .iter()
                            .map(|p| p.leader())
                            .collect::<Vec<_>>()
                    );
                } else {
                    last = "topic absent from metadata".into();
                }
            }
            Err(e) => last = format!("metadata error {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "topic {topic} not ready with {partitions} partitions within {OP_TIMEOUT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Current value of one topic config, via DescribeConfigs.
pub async fn topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    key: &str,
) -> Option<String> {
    let res = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &admin_opts())
        .await
        .expect("DescribeConfigs request");
    let resource = res
        .into_iter()
        .next()
        .expect("one result")
        .expect("DescribeConfigs result");
    resource.get(key).and_then(|e| e.value.clone())
}

/// Sets topic configs with (non-incremental) AlterConfigs and asserts success.
pub async fn alter_topic_config(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    entries: &[(&str, &str)],
) {
    let alter = entries.iter().fold(
        AlterConfig::new(ResourceSpecifier::Topic(topic)),
        |a, (k, v)| a.set(k, v),
    );
    let res = admin
        .alter_configs([&alter], &admin_opts())
        .await
        .expect("AlterConfigs request");
    for r in res {
        if let Err((spec, code)) = r {
            panic!("AlterConfigs {spec:?}: {code:?}");
        }
    }
}

/// One Kafka record as the tests see it. Equality is byte-for-byte on everything a client
/// can set.
#[derive(Clone, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// CreateTime in ms; always set explicitly so it can be checked and searched.
    pub timestamp: i64,
}

/// Short rendering of bytes: length, a hash, and a printable prefix, so a mismatch in a
/// 1 MB value prints one line, not a megabyte.
fn show_bytes(b: &Option<Vec<u8>>) -> String {
    match b {
        None => "null".into(),
        Some(b) => {
            let prefix: String = b
                .iter()
                .take(24)
                .map(|&c| {
                    if c.is_ascii_graphic() || c == b' ' {
                        c as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{}B#{:016x}\"{prefix}\"", b.len(), fnv1a(b))
        }
    }
}

pub fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x100000001b3)
    })
}

impl fmt::Debug for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rec{{ts={} key={} value={} headers=[",
            self.timestamp,
            show_bytes(&self.key),
            show_bytes(&self.value)
        )?;
        for (i, (k, v)) in self.headers.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k:?}={}", show_bytes(v))?;
        }
        write!(f, "]}}")
    }
}

impl Rec {
    pub fn from_message<M: Message>(m: &M) -> Rec {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("expected a CreateTime timestamp, got {other:?}"),
        };
        Rec {
            key: m.key().map(|k| k.to_vec()),
            value: m.payload().map(|p| p.to_vec()),
            headers,
            timestamp,
        }
    }

    fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        Some(self.headers.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: v.as_deref(),
            })
        }))
    }

    /// A FutureRecord for `topic`/`partition` carrying exactly this record. A negative
    /// partition leaves the choice to the client's partitioner.
    pub fn to_record<'a>(&'a self, topic: &'a str, partition: i32) -> FutureRecord<'a, [u8], [u8]> {
        let mut r = FutureRecord::<[u8], [u8]>::to(topic).timestamp(self.timestamp);
        if partition >= 0 {
            r = r.partition(partition);
        }
        if let Some(k) = &self.key {
            r = r.key(k.as_slice());
        }
        if let Some(v) = &self.value {
            r = r.payload(v.as_slice());
        }
        if let Some(h) = self.owned_headers() {
            r = r.headers(h);
        }
        r
    }
}

/// A fixed base for record timestamps: an hour ago, so "now"-relative broker checks
/// (message.timestamp.difference / retention) do not reject or delete them.
pub fn base_timestamp() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - 3_600_000
}

/// `n` varied records: keyed and null-keyed, null and empty values, headers with null
/// values and repeated keys, binary and compressible text of mixed sizes. Timestamps are
/// `ts0, ts0+1000, ...` so offsets_for_times has distinct targets.
pub fn gen_records(rng: &mut StdRng, n: usize, ts0: i64) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let key = match i % 5 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("key-{i}").into_bytes()),
            };
            let value = match i % 7 {
                0 => None,
                1 => Some(Vec::new()),
                2 => {
                    // Incompressible bytes, so codecs see both kinds of input.
                    let mut v = vec![0u8; rng.gen_range(1..2000)];
                    rng.fill_bytes(&mut v);
                    Some(v)
                }
                _ => Some(
                    format!("value {i} ")
                        .repeat(rng.gen_range(1..60))
                        .into_bytes(),
                ),
            };
            let headers = match i % 4 {
                0 => vec![],
                1 => vec![("h".to_string(), Some(format!("hv{i}").into_bytes()))],
                2 => vec![
                    ("nullh".to_string(), None),
                    ("e".to_string(), Some(Vec::new())),
                ],
                _ => vec![
                    ("dup".to_string(), Some(b"first".to_vec())),
                    ("dup".to_string(), Some(b"second".to_vec())),
                    ("bin".to_string(), Some(vec![0, 255, 1, 254])),
                ],
            };
            Rec {
                key,
                value,
                headers,
                timestamp: ts0 + i as i64 * 1000,
            }
        })
        .collect()
}

/// Produces `records` (each with its partition) with all sends in flight at once, then
/// awaits the delivery reports in send order. Returns the reported (partition, offset) of
/// each record; panics on any delivery failure.
pub async fn produce_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[(i32, Rec)],
) -> Vec<(i32, i64)> {
    let mut pending = Vec::with_capacity(records.len());
    for (i, (p, rec)) in records.iter().enumerate() {
        match producer.send_result(rec.to_record(topic, *p)) {
            Ok(f) => pending.push(f),
            Err((e, _)) => panic!("enqueue record {i} to {topic}/{p}: {e}"),
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for (i, f) in pending.into_iter().enumerate() {
        // message.timeout.ms bounds each delivery; this outer timeout only guards against
        // a client bug leaving a future unresolved.
        let res = tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .unwrap_or_else(|_| panic!("delivery report for record {i} never came"))
            .expect("delivery future cancelled");
        match res {
            Ok(d) => out.push((d.partition, d.offset)),
            Err((e, _)) => panic!("delivery of record {i} to {topic}/{}: {e}", records[i].0),
        }
    }
    out
}

/// A record read back, with where it was.
#[derive(Clone, Debug)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub rec: Rec,
}

/// Low and high watermarks (ListOffsets earliest/latest).
pub fn watermarks(consumer: &StreamConsumer, topic: &str, partition: i32) -> (i64, i64) {
    consumer
        .fetch_watermarks(topic, partition, OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("fetch_watermarks {topic}/{partition}: {e}"))
}

/// The offset the first record produced to the fresh, empty `topic`/`partition` gets, once
/// the partition serves. On one node that is 0 and the watermarks are (0, 0), which this
/// asserts. In test-cluster mode (crate docs) the partition is a Raft group whose log is
/// the Kafka log: Raft's own entries (the leader's election no-op) take the first offsets as
/// control batches that consumers skip, and a leader serves produce only once its no-op
/// committed, so this waits (bounded) until the high watermark covers it and returns that.
/// Records then get dense offsets from there while the leader stays.
pub async fn first_offset(consumer: &StreamConsumer, topic: &str, partition: i32) -> i64 {
    if crate::test_cluster_nodes().is_none() {
        assert_eq!(
            watermarks(consumer, topic, partition),
            (0, 0),
            "{topic}/{partition}: watermarks of a fresh partition"
        );
        return 0;
    }
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        // A leader elected a moment ago answers OFFSET_NOT_AVAILABLE until its no-op
        // commits (Kafka's KAFKA-7395 answer; retriable), a leader may not be known yet,
        // and on a cluster the node asked may not list a topic created through another
        // one yet (the controller's records reach each node a moment apart, as Kafka's
        // metadata does): librdkafka hands those back rather than retrying.
        match consumer.fetch_watermarks(topic, partition, OP_TIMEOUT) {
            Ok((low, high)) => {
                assert_eq!(
                    low, 0,
                    "{topic}/{partition}: low watermark of a fresh partition"
                );
                if high > 0 {
                    return high;
                }
            }
            Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::OffsetNotAvailable
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::UnknownTopicOrPartition,
            )) => {}
            Err(e) => panic!("fetch_watermarks {topic}/{partition}: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{topic}/{partition}: not listed with a leader whose election entry committed within {OP_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every record of the given partitions from the low to the high watermark as
/// they are when this is called, by assign() (no group). Bounded by `timeout`.
pub async fn consume_all(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> BTreeMap<i32, Vec<Consumed>> {
    let mut tpl = TopicPartitionList::new();
    let mut end = BTreeMap::new();
    let mut out: BTreeMap<i32, Vec<Consumed>> = BTreeMap::new();
    for &p in partitions {
        let (lo, hi) = watermarks(consumer, topic, p);
        out.insert(p, Vec::new());
        if hi > lo {
            tpl.add_partition_offset(topic, p, Offset::Offset(lo))
                .unwrap();
            end.insert(p, hi);
        }
    }
    if end.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let done = |out: &BTreeMap<i32, Vec<Consumed>>| {
        end.iter()
            .all(|(p, hi)| out[p].last().is_some_and(|c| c.offset + 1 >= *hi))
    };
    while !done(&out) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => panic!("consume {topic}: {e}"),
            Err(_) => {
                let got: Vec<_> = out
                    .iter()
                    .map(|(p, v)| (*p, v.len(), v.last().map(|c| c.offset)))
                    .collect();
                panic!(
                    "consume {topic}: not all records within {timeout:?}; want up to high \
                     watermarks {end:?}, got (partition, count, last offset) {got:?}"
                );
            }
        };
        assert_eq!(msg.topic(), topic);
        out.get_mut(&msg.partition())
            .expect("assigned partition")
            .push(Consumed {
                partition: msg.partition(),
                offset: msg.offset(),
                rec: Rec::from_message(&msg),
            });
    }
    consumer.unassign().expect("unassign");
    out
}

/// Asserts that `got` is exactly `want`, in order, at consecutive offsets from
/// `first_offset`; prints the first difference compactly.
pub fn assert_log_eq(what: &str, got: &[Consumed], want: &[Rec], first_offset: i64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let off = first_offset + i as i64;
        assert_eq!(
            g.offset, off,
            "{what}: record #{i} at offset {} but expected offset {off}",
            g.offset
        );
        assert!(
            g.rec == *w,
            "{what}: record #{i} (offset {off}) differs:\n   got {:?}\n  want {:?}",
            g.rec,
            w
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: read {} records, produced {}",
        got.len(),
        want.len()
    );
}

/// Produces `n` generated records ([`gen_records`]) to the existing, empty `topic` with
/// `partitions` partitions through a producer configured with `producer_cfg`, reads
/// everything back and checks it record by record: content, order within each partition,
/// dense offsets from [`first_offset`] (0 on one node), delivery-report offsets, and
/// watermarks.
///
/// `explicit_partitions`: if true record i goes to partition i % partitions; if false the
/// client's partitioner picks (keyed records hash, null keys spread), which exercises the
/// client's use of Metadata.
pub async fn produce_and_verify(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    producer_cfg: &[(&str, &str)],
    n: usize,
    explicit_partitions: bool,
) {
    let cons = consumer(bootstrap);
    let mut base = BTreeMap::new();
    for p in 0..partitions {
        base.insert(p, first_offset(&cons, topic, p).await);
    }
    let mut rng = StdRng::seed_from_u64(0x5eed ^ n as u64);
    let records = gen_records(&mut rng, n, base_timestamp());
    let addressed: Vec<(i32, Rec)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                if explicit_partitions {
                    i as i32 % partitions
                } else {
                    -1
                },
                r.clone(),
            )
        })
        .collect();
    let prod = producer(bootstrap, producer_cfg);
    let delivered = produce_all(&prod, topic, &addressed).await;

    // What each partition must contain, in send order, according to the delivery reports.
    let acks0 = producer_cfg.contains(&("acks", "0"));
    let mut want: BTreeMap<i32, Vec<Rec>> = (0..partitions).map(|p| (p, Vec::new())).collect();
    for (i, ((p, off), (asked, rec))) in delivered.iter().zip(&addressed).enumerate() {
        assert!(
            (0..partitions).contains(p),
            "{topic}: record {i} delivered to partition {p}"
        );
        if *asked >= 0 {
            assert_eq!(
                p, asked,
                "{topic}: record {i} delivered to the wrong partition"
            );
        }
        let log = want.get_mut(p).unwrap();
        if acks0 {
            // acks=0 gets no offset back (librdkafka reports -1 / invalid).
            assert!(*off < 0, "{topic}: acks=0 delivery reported offset {off}");
        } else {
            assert_eq!(
                *off,
                base[p] + log.len() as i64,
                "{topic}: record {i} got offset {off} in partition {p}"
            );
        }
        log.push(rec.clone());
    }

    // Watermarks first: a wrong high watermark would otherwise show up only as "read 0
    // records", hiding which API is wrong.
    // With acks=0 a delivery report means "sent", not "appended", so wait (bounded) for
    // the broker to catch up; with acks=1/all the single replica's high watermark must
    // already cover every acknowledged record. With several replicas only acks=all waits
    // for the high watermark (acks=1 is answered once the leader's log holds the batch,
    // before a quorum has it), so acks=1 may wait too.
    let acks1 = producer_cfg.contains(&("acks", "1"));
    let may_lag = acks0 || (acks1 && crate::test_cluster_nodes().is_some());
    for p in 0..partitions {
        let want_wm = (0, base[&p] + want[&p].len() as i64);
        let deadline = Instant::now() + OP_TIMEOUT;
        let mut wm = watermarks(&cons, topic, p);
        while may_lag && wm != want_wm && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            wm = watermarks(&cons, topic, p);
        }
        if wm != want_wm {
            // Already a failure; look again after a pause only to tell the broker's
            // developers whether the answer was stale (a race) or wrong for good.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let later = watermarks(&cons, topic, p);
            panic!(
                "{topic}/{p}: (low, high) watermarks after producing are {wm:?}, want \
                 {want_wm:?} (1 s later: {later:?})"
            );
        }
    }
    let all: Vec<i32> = (0..partitions).collect();
    let got = consume_all(&cons, topic, &all, Duration::from_secs(60)).await;
    for p in 0..partitions {
        assert_log_eq(&format!("{topic}/{p}"), &got[&p], &want[&p], base[&p]);
    }
}
