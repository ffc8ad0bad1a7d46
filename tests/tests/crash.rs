//! kill -9 durability tests: acknowledged (acks=all) records survive broker crashes in
//! order and byte for byte, the idempotent producer's retries across a crash create no
//! duplicates, and topics (partition counts, configs) and data survive kill -9 and SIGTERM
//! restarts.
//!
//! A process kill leaves the page cache intact, so these tests check crash consistency
//! of the broker's own state (indexes, recovery, producer-state for dedup), not power-loss
//! durability of fsync.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_tests::kafka::{
    admin, assert_log_eq, base_timestamp, consume_all, consumer, create_topics, gen_records,
    produce_all, producer, topic_config, wait_for_topic, watermarks, Consumed, Rec, OP_TIMEOUT,
};
use sluice_tests::{skip_in_cluster_mode, Broker};

const TOPIC: &str = "crash";
const PARTITIONS: i32 = 3;
/// Crash/restart rounds in the durability test.
const ROUNDS: usize = 5;
/// Hard cap on records the producer task sends, so the loop is bounded in count even if
/// the broker is very fast.
const MAX_RECORDS: u64 = 200_000;
/// Records in flight at once (awaited oldest-first).
const WINDOW: usize = 256;
/// How long a round may take to reach its acknowledgement target.
const ROUND_TIMEOUT: Duration = Duration::from_secs(90);

/// The payload of record `seq`: fully determined by `seq`, so a reader can rebuild it and
/// compare byte for byte. Varying length; a header naming the sequence number; a body
/// pattern that depends on seq and position; an FNV checksum of everything before it.
fn payload(seq: u64) -> Vec<u8> {
    let len = 40 + (seq.wrapping_mul(7919) % 1500) as usize;
    let mut v = format!("seq={seq:012};len={len};").into_bytes();
    v.extend((0..len).map(|j| (seq.wrapping_mul(131).wrapping_add(j as u64 * 7) % 251) as u8));
    let sum = sluice_tests::kafka::fnv1a(&v);
    v.extend_from_slice(format!(";sum={sum:016x}").as_bytes());
    v
}

fn key(seq: u64) -> Vec<u8> {
    format!("{seq:012}").into_bytes()
}

fn partition_of(seq: u64) -> i32 {
    (seq % PARTITIONS as u64) as i32
}

/// What the producer task learned: each sequence number's delivery outcome.
#[derive(Default)]
struct Tracker {
    /// seq -> (partition, offset) from a successful delivery report.
    acked: Mutex<HashMap<u64, (i32, i64)>>,
    /// seq -> error text from a failed delivery report.
    failed: Mutex<BTreeMap<u64, String>>,
    acked_count: AtomicU64,
    /// Highest seq handed to the client + 1.
    sent: AtomicU64,
    stop: AtomicBool,
}

impl Tracker {
    fn summary(&self) -> String {
        let failed = self.failed.lock().unwrap();
        let first: Vec<_> = failed.iter().take(5).collect();
        format!(
            "sent {}, acked {}, failed {} (first failures: {first:?})",
            self.sent.load(Ordering::SeqCst),
            self.acked_count.load(Ordering::SeqCst),
            failed.len()
        )
    }
}

/// Sends records seq = 0, 1, 2, ... (to partition seq % PARTITIONS) until told to stop,
/// keeping WINDOW in flight and recording every delivery report.
async fn produce_numbered(producer: Arc<FutureProducer>, tracker: Arc<Tracker>) {
    let mut inflight = VecDeque::with_capacity(WINDOW);
    let ts0 = base_timestamp();
    let mut seq = 0u64;
    while !tracker.stop.load(Ordering::SeqCst) && seq < MAX_RECORDS {
        let (k, v) = (key(seq), payload(seq));
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(&k),
        });
        let record = FutureRecord::to(TOPIC)
            .partition(partition_of(seq))
            .key(&k)
            .payload(&v)
            .headers(headers)
            .timestamp(ts0 + seq as i64);
        match producer.send_result(record) {
            Ok(fut) => inflight.push_back((seq, fut)),
            // With WINDOW far below queue.buffering.max.messages the local queue cannot
            // fill; any enqueue error is a bug worth seeing.
            Err((e, _)) => panic!("enqueue seq {seq}: {e}"),
        }
        seq += 1;
        tracker.sent.store(seq, Ordering::SeqCst);
        while inflight.len() >= WINDOW {
            let (s, fut) = inflight.pop_front().unwrap();
            record_delivery(&tracker, s, fut.await);
        }
    }
    for (s, fut) in inflight {
        record_delivery(&tracker, s, fut.await);
    }
}

/// What awaiting a DeliveryFuture yields: the delivery result, or the future's
/// cancellation (named through the trait so no futures crate is needed).
type DeliveryOutput = <rdkafka::producer::DeliveryFuture as std::future::Future>::Output;

fn record_delivery(tracker: &Tracker, seq: u64, res: DeliveryOutput) {
    match res {
        Ok(Ok(d)) => {
            tracker
                .acked
                .lock()
                .unwrap()
                .insert(seq, (d.partition, d.offset));
            tracker.acked_count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(Err((e, _))) => {
            tracker.failed.lock().unwrap().insert(seq, e.to_string());
        }
        Err(_) => {
            tracker
                .failed
                .lock()
                .unwrap()
                .insert(seq, "delivery future cancelled".into());
        }
    }
}

/// Waits (bounded) until at least `target` records are acknowledged.
async fn wait_acked(tracker: &Tracker, target: u64, what: &str) {
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while tracker.acked_count.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "{what}: fewer than {target} records acknowledged within {ROUND_TIMEOUT:?}: {}",
            tracker.summary()
        );
        // A counter has no event to await; poll it briefly.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_record_once() {
    skip_in_cluster_mode!("kill -9 and restart of the only broker (acks=all on one node); the cluster tests (tests/tests/cluster.rs) kill nodes of a cluster");
    let seed: u64 = match std::env::var("SLUICE_CRASH_SEED") {
        Ok(s) => s.parse().expect("SLUICE_CRASH_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("crash test seed {seed} (reproduce with SLUICE_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    create_topics(&admin(&bootstrap), &[(TOPIC, PARTITIONS, &[])]).await;
    wait_for_topic(&consumer(&bootstrap), TOPIC, PARTITIONS as usize).await;

    // Idempotent + acks=all: an acknowledged record is durable, and the client's retries of
    // records in flight during a crash must not be written twice. The long message timeout
    // keeps records queued across a restart instead of failing them.
    let prod = Arc::new(producer(
        &bootstrap,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("message.timeout.ms", "120000"),
            ("linger.ms", "2"),
        ],
    ));
    let tracker = Arc::new(Tracker::default());
    let task = tokio::spawn(produce_numbered(prod.clone(), tracker.clone()));

    for round in 0..ROUNDS {
        // Kill after a random number of further acknowledgements: a random point in the
        // stream, tied to progress rather than wall time so slow machines behave the same.
        let target = tracker.acked_count.load(Ordering::SeqCst) + rng.gen_range(200..2500);
        wait_acked(&tracker, target, &format!("round {round}")).await;
        eprintln!("round {round}: kill -9 at {}", tracker.summary());
        // kill9/restart block (bounded by the harness); keep them off the async workers.
        tokio::task::block_in_place(|| {
            broker.kill9();
            broker.restart();
        });
    }
    // The producer must make progress again after the last restart.
    let target = tracker.acked_count.load(Ordering::SeqCst) + 500;
    wait_acked(&tracker, target, "after the last restart").await;

    tracker.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(180), task)
        .await
        .expect("producer task did not finish (in-flight deliveries unresolved)")
        .expect("producer task panicked");
    prod.flush(Duration::from_secs(30)).expect("flush");
    eprintln!("produced: {}", tracker.summary());

    let cons = consumer(&bootstrap);
    let parts: Vec<i32> = (0..PARTITIONS).collect();
    let got = consume_all(&cons, TOPIC, &parts, Duration::from_secs(120)).await;
    let acked = tracker.acked.lock().unwrap().clone();
    let sent = tracker.sent.load(Ordering::SeqCst);
    verify_numbered_log(&got, &acked, sent);
}

/// The whole check of the durability test: every acknowledged record at its reported
/// offset, byte for byte; per partition dense offsets and increasing sequence numbers; no
/// sequence number twice; nothing that was never sent.
fn verify_numbered_log(
    got: &BTreeMap<i32, Vec<Consumed>>,
    acked: &HashMap<u64, (i32, i64)>,
    sent: u64,
) {
    let mut seen: BTreeMap<u64, (i32, i64)> = BTreeMap::new();
    for (&p, log) in got {
        let mut prev: Option<u64> = None;
        for (i, c) in log.iter().enumerate() {
            if i > 0 {
                assert_eq!(
                    c.offset,
                    log[i - 1].offset + 1,
                    "{TOPIC}/{p}: offsets not dense at #{i}"
                );
            }
            let key = c
                .rec
                .key
                .as_deref()
                .unwrap_or_else(|| panic!("{TOPIC}/{p}@{}: null key", c.offset));
            let seq: u64 = std::str::from_utf8(key)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "{TOPIC}/{p}@{}: key {key:?} is no sequence number",
                        c.offset
                    )
                });
            assert!(
                seq < sent,
                "{TOPIC}/{p}@{}: seq {seq} was never sent (sent {sent})",
                c.offset
            );
            assert_eq!(
                partition_of(seq),
                p,
                "{TOPIC}/{p}@{}: seq {seq} belongs in another partition",
                c.offset
            );
            assert!(
                c.rec.value.as_deref() == Some(&payload(seq)[..]),
                "{TOPIC}/{p}@{}: payload of seq {seq} corrupted: {:?}",
                c.offset,
                c.rec
            );
            assert_eq!(
                c.rec.headers,
                vec![("seq".to_string(), Some(key.to_vec()))],
                "{TOPIC}/{p}@{}: headers of seq {seq}",
                c.offset
            );
            if let Some(first) = seen.insert(seq, (p, c.offset)) {
                panic!(
                    "seq {seq} appears twice: at {first:?} and at ({p}, {})",
                    c.offset
                );
            }
            if let Some(prev) = prev {
                assert!(
                    seq > prev,
                    "{TOPIC}/{p}@{}: seq {seq} after seq {prev}: out of order",
                    c.offset
                );
            }
            prev = Some(seq);
        }
    }
    let mut missing = Vec::new();
    for (&seq, &(p, off)) in acked {
        match seen.get(&seq) {
            None => missing.push(seq),
            Some(&at) => assert_eq!(
                at,
                (p, off),
                "acknowledged seq {seq} was reported at {p}@{off} but is stored at {at:?}"
            ),
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} acknowledged records lost after kill -9, e.g. seqs {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let unacked_present = seen.keys().filter(|s| !acked.contains_key(s)).count();
    eprintln!(
        "verified: {} records stored, {} acknowledged all present, {} unacknowledged also stored",
        seen.len(),
        acked.len(),
        unacked_present
    );
}

/// Topics with their partition counts and configs, deleted topics, and data survive a
/// kill -9 and then a SIGTERM restart; offsets continue where they ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_configs_and_data_survive_restarts() {
    skip_in_cluster_mode!("kill -9 and SIGTERM restarts of the only broker");
    let mut broker = Broker::start();
    let bootstrap = broker.bootstrap();
    {
        let adm = admin(&bootstrap);
        create_topics(
            &adm,
            &[
                (
                    "alpha",
                    3,
                    &[("retention.ms", "123456789"), ("cleanup.policy", "delete")],
                ),
                ("beta", 1, &[]),
                ("doomed", 2, &[]),
            ],
        )
        .await;
        let res = adm
            .delete_topics(&["doomed"], &sluice_tests::kafka::admin_opts())
            .await
            .expect("DeleteTopics request");
        assert_eq!(res, vec![Ok("doomed".to_string())]);
    }
    let cons = consumer(&bootstrap);
    wait_for_topic(&cons, "alpha", 3).await;
    wait_for_topic(&cons, "beta", 1).await;

    // Data: alpha spread over its partitions, beta, and gamma auto-created by producing.
    let mut rng = StdRng::seed_from_u64(7);
    let ts0 = base_timestamp();
    let mut want: BTreeMap<(&str, i32), Vec<Rec>> = BTreeMap::new();
    let prod = producer(
        &bootstrap,
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    for (topic, parts, n) in [("alpha", 3, 300), ("beta", 1, 100), ("gamma", 1, 20)] {
        let recs = gen_records(&mut rng, n, ts0);
        let addressed: Vec<(i32, Rec)> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| (i as i32 % parts, r.clone()))
            .collect();
        produce_all(&prod, topic, &addressed).await;
        for (p, r) in addressed {
            want.entry((topic, p)).or_default().push(r);
        }
    }
    drop(prod);
    drop(cons);

    tokio::task::block_in_place(|| broker.kill9());
    tokio::task::block_in_place(|| broker.restart());
    check_survivors(&broker, &want, "after kill -9").await;

    // Appends after the restart continue at the old high watermark.
    let extra = gen_records(&mut rng, 10, ts0 + 1_000_000);
    let prod = producer(
        &bootstrap,
        &[("acks", "all"), ("enable.idempotence", "true")],
    );
    let addressed: Vec<(i32, Rec)> = extra.iter().map(|r| (0, r.clone())).collect();
    let delivered = produce_all(&prod, "alpha", &addressed).await;
    let base = want[&("alpha", 0)].len() as i64;
    assert_eq!(
        delivered,
        (base..base + 10).map(|o| (0, o)).collect::<Vec<_>>(),
        "offsets after restart"
    );
    want.get_mut(&("alpha", 0)).unwrap().extend(extra);
    drop(prod);

    // Graceful stop must exit 0 and lose nothing either.
    tokio::task::block_in_place(|| {
        broker.stop_ok();
        broker.restart();
    });
    check_survivors(&broker, &want, "after SIGTERM").await;
}

async fn check_survivors(broker: &Broker, want: &BTreeMap<(&str, i32), Vec<Rec>>, when: &str) {
    let bootstrap = broker.bootstrap();
    let cons = consumer(&bootstrap);
    for (topic, parts) in [("alpha", 3), ("beta", 1), ("gamma", 1)] {
        wait_for_topic(&cons, topic, parts).await;
    }
    let md = cons.fetch_metadata(None, OP_TIMEOUT).expect("metadata");
    let names: BTreeSet<&str> = md.topics().iter().map(|t| t.name()).collect();
    assert!(
        !names.contains("doomed"),
        "{when}: deleted topic came back: {names:?}"
    );
    for t in ["alpha", "beta", "gamma"] {
        let parts = md
            .topics()
            .iter()
            .find(|m| m.name() == t)
            .unwrap()
            .partitions()
            .len();
        let want_parts = want.keys().filter(|(n, _)| *n == t).count();
        assert_eq!(parts, want_parts, "{when}: {t} partition count");
    }

    let adm = admin(&bootstrap);
    assert_eq!(
        topic_config(&adm, "alpha", "retention.ms").await.as_deref(),
        Some("123456789"),
        "{when}: alpha retention.ms"
    );

    for ((topic, p), recs) in want {
        assert_eq!(
            watermarks(&cons, topic, *p),
            (0, recs.len() as i64),
            "{when}: {topic}/{p} watermarks"
        );
        let got = consume_all(&cons, topic, &[*p], Duration::from_secs(60)).await;
        assert_log_eq(&format!("{when}: {topic}/{p}"), &got[p], recs, 0);
    }
}
