//! Mesh resources under a hostile long-poll: Fetch requests naming 6,000 empty partitions
//! park beside an acks=all producer, which must see no errors and no stall; the parked
//! fetches still wake on new data. Prints the producer's latencies with and without the
//! hostile fetches (the numbers in perf/results/2026-12-01-hostile-longpoll.md).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::producer::FutureRecord;
use sluice_tests::kafka::{admin, consumer, create_topics, producer, wait_for_topic};
use sluice_tests::wire::{self, Dec, Enc};
use sluice_tests::Broker;

/// Partitions the hostile fetches name (all empty, all at their end offset).
const HOSTILE_PARTITIONS: i32 = 6000;
/// Connections each parking one hostile fetch: several, so that (SO_REUSEPORT spreading
/// them) every shard has one parked.
const HOSTILE_FETCHES: usize = 4;
/// The hostile fetches' max_wait: far longer than the producer needs.
const HOSTILE_WAIT_MS: i32 = 25_000;
/// Records the producer sends, one at a time, in each phase.
const RECORDS: usize = 200;
/// A latency no produce beside the parked fetches may reach (generous: the point is that
/// nothing waits for the fetches' max_wait; the measured p99 is printed).
const PRODUCE_LATENCY_BOUND: Duration = Duration::from_secs(5);

/// Fetch v4 naming every partition of `topic` at offset 0 (their end), min_bytes 1.
fn hostile_fetch(topic: &str, correlation: i32) -> Vec<u8> {
    let mut e = Enc::new()
        .i32(-1) // replica id
        .i32(HOSTILE_WAIT_MS)
        .i32(1) // min bytes
        .i32(50 << 20); // max bytes
    e.0.push(0); // isolation level: read uncommitted
    e = e.i32(1).str(topic).i32(HOSTILE_PARTITIONS);
    for p in 0..HOSTILE_PARTITIONS {
        e = e.i32(p).i64(0).i32(1 << 20);
    }
    let mut req = wire::header(1, 4, correlation);
    req.extend_from_slice(&e.0);
    wire::frame(&req)
}

/// A parsed Fetch v4 response: (partition, error code, high watermark, record bytes).
fn parse_fetch_v4(body: &[u8]) -> Vec<(i32, i16, i64, usize)> {
    let mut d = Dec::new(body);
    let _throttle = d.i32();
    let mut out = Vec::new();
    for _ in 0..d.i32() {
        let _topic = d.str();
        for _ in 0..d.i32() {
            let partition = d.i32();
            let error = d.i16();
            let hw = d.i64();
            let _lso = d.i64();
            let aborted = d.i32();
            for _ in 0..aborted.max(0) {
                d.i64();
                d.i64();
            }
            let records = d.bytes().map_or(0, |r| r.len());
            out.push((partition, error, hw, records));
        }
    }
    out
}

/// Sends `RECORDS` records one at a time (each awaited) over `partitions` partitions of
/// `topic`; returns each delivery's latency and the delivery errors.
async fn produce_one_by_one(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    partitions: i32,
) -> (Vec<Duration>, Vec<String>) {
    let (mut lat, mut errors) = (Vec::new(), Vec::new());
    for i in 0..RECORDS {
        let payload = format!("steady-{i}");
        let rec = FutureRecord::<[u8], _>::to(topic)
            .partition(i as i32 % partitions)
            .payload(payload.as_bytes());
        let t = Instant::now();
        match p.send(rec, Duration::from_secs(30)).await {
            Ok(_) => {}
            Err((e, _)) => errors.push(format!("record {i}: {e}")),
        }
        lat.push(t.elapsed());
    }
    (lat, errors)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(lat: &[Duration]) -> (Duration, Duration, Duration) {
    let mut s = lat.to_vec();
    s.sort();
    (
        percentile(&s, 0.5),
        percentile(&s, 0.99),
        *s.last().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_long_poll_does_not_starve_producers() {
    let broker = Broker::start();
    let bootstrap = broker.bootstrap();
    let admin = admin(&bootstrap);
    // Four partitions: both shards own some, so the producer crosses the mesh whichever
    // shard its connection lands on.
    create_topics(
        &admin,
        &[("hostile", HOSTILE_PARTITIONS, &[]), ("steady", 4, &[])],
    )
    .await;
    let c = consumer(&bootstrap);
    wait_for_topic(&c, "hostile", HOSTILE_PARTITIONS as usize).await;
    wait_for_topic(&c, "steady", 4).await;

    let p = producer(&bootstrap, &[("acks", "all"), ("linger.ms", "0")]);
    // Baseline: the same producer with nothing parked.
    let (base, base_errors) = produce_one_by_one(&p, "steady", 4).await;
    assert!(base_errors.is_empty(), "baseline errors: {base_errors:?}");

    let mut conns: Vec<TcpStream> = (0..HOSTILE_FETCHES)
        .map(|i| {
            let mut s = wire::connect(&broker);
            s.write_all(&hostile_fetch("hostile", 100 + i as i32))
                .unwrap();
            s
        })
        .collect();
    // Let them read every partition, find nothing, and park.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let parked_at = Instant::now();

    let (lat, errors) = produce_one_by_one(&p, "steady", 4).await;
    let (b50, b99, bmax) = summary(&base);
    let (p50, p99, max) = summary(&lat);
    println!(
        "hostile-longpoll: {HOSTILE_FETCHES} fetches x {HOSTILE_PARTITIONS} empty partitions \
         parked; {RECORDS} acks=all produces one at a time: baseline p50 {b50:?} p99 {b99:?} \
         max {bmax:?}; beside the parked fetches p50 {p50:?} p99 {p99:?} max {max:?}; \
         errors {}",
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "produce errors beside the long-poll: {errors:?}"
    );
    assert!(
        max < PRODUCE_LATENCY_BOUND,
        "a produce beside the parked long-polls took {max:?} (p99 {p99:?})"
    );

    // The fetches were parked the whole time (they answer only on news or at max_wait)...
    assert!(
        parked_at.elapsed() < Duration::from_millis(HOSTILE_WAIT_MS as u64 - 5_000),
        "producing took too long to tell whether the fetches stayed parked"
    );
    for s in conns.iter_mut() {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        let early = std::io::Read::read(s, &mut b);
        assert!(
            early.is_err(),
            "a hostile fetch answered before any news: {early:?}"
        );
    }
    // ...and one record on one of their partitions wakes every one of them, long before
    // their max_wait.
    let woke = Instant::now();
    p.send(
        FutureRecord::<[u8], _>::to("hostile")
            .partition(4321)
            .payload(b"news"),
        Duration::from_secs(30),
    )
    .await
    .expect("produce to a watched partition");
    for (i, s) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let resp = wire::read_response(s).expect("the woken fetch answers");
        assert_eq!(
            i32::from_be_bytes(resp[0..4].try_into().unwrap()),
            100 + i as i32
        );
        let parts = parse_fetch_v4(&resp[4..]);
        assert_eq!(parts.len(), HOSTILE_PARTITIONS as usize);
        for &(partition, error, hw, records) in &parts {
            assert_eq!(error, 0, "partition {partition}");
            if partition == 4321 {
                assert_eq!(hw, 1);
                assert!(records > 0, "the new record is in the answer");
            } else {
                assert_eq!((hw, records), (0, 0), "partition {partition}");
            }
        }
    }
    let elapsed = woke.elapsed();
    println!(
        "hostile-longpoll: all {HOSTILE_FETCHES} parked fetches answered {elapsed:?} after the \
         record"
    );
    // Their max_wait ends 25 s after they were sent: answering at the deadline would mean no
    // watch fired. Generous against a loaded machine, far below the deadline.
    assert!(
        elapsed < Duration::from_secs(8),
        "the record woke the parked fetches only after {elapsed:?}"
    );
}
