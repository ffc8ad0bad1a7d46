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

/// Zigzag varint (Kafka's record encoding).
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A one-record batch whose value is `value_len` bytes (too large for the test wire helper).
fn big_batch(value_len: usize, timestamp: i64) -> Vec<u8> {
    let mut body = vec![0u8]; // attributes
    varint(&mut body, 0); // timestamp delta
    varint(&mut body, 0); // offset delta
    varint(&mut body, -1); // no key
    varint(&mut body, value_len as i64);
    body.resize(body.len() + value_len, b'v');
    varint(&mut body, 0); // no headers
    let mut record = Vec::new();
    varint(&mut record, body.len() as i64);
    record.extend_from_slice(&body);
    let mut b = Enc::new().i64(0).i32(0).i32(-1).0;
    b.push(2); // magic
    b.extend_from_slice(
        &Enc::new()
            .i32(0) // crc, sealed below
            .i16(0)
            .i32(0) // last offset delta
            .i64(timestamp)
            .i64(timestamp)
            .i64(-1)
            .i16(-1)
            .i32(-1)
            .i32(1)
            .0,
    );
    b.extend_from_slice(&record);
    wire::seal(&mut b);
    b
}

/// A partition_max_bytes over the broker's response cap (64 MiB) still gets data from a
/// partition holding more than that: the cap applies before reading, as in Kafka (the read
/// used to ask the disk for more than a read may be, and failed with KAFKA_STORAGE_ERROR).
#[test]
fn a_partition_limit_over_the_response_cap_still_returns_data() {
    const BATCHES: usize = 72;
    const VALUE_BYTES: usize = 1_000_000;
    let broker = Broker::start();
    let mut s = wire::connect(&broker);
    wire::create_by_metadata(&mut s, "big-ask");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = big_batch(VALUE_BYTES, now);
    for _ in 0..BATCHES {
        assert_eq!(wire::produce(&mut s, 8, "big-ask", 0, 1, 10_000, &batch), 0);
    }
    let mut e = Enc::new()
        .i32(-1) // replica id
        .i32(0) // max wait
        .i32(1) // min bytes
        .i32(100 << 20); // max bytes
    e.0.push(0); // isolation level
    e = e.i32(1).str("big-ask").i32(1).i32(0).i64(0).i32(100 << 20);
    s.write_all(&wire::frame(&{
        let mut req = wire::header(1, 4, 9);
        req.extend_from_slice(&e.0);
        req
    }))
    .unwrap();
    let resp = read_big_response(&mut s);
    let parts = parse_fetch_v4(&resp[4..]);
    assert_eq!(parts.len(), 1);
    let (_, error, hw, records) = parts[0];
    assert_eq!(
        (error, hw),
        (0, BATCHES as i64),
        "no error, every record stored"
    );
    assert!(
        records >= batch.len() && records <= 64 << 20,
        "data within the response cap: {records} bytes"
    );
}

/// Reads one response frame of up to 128 MiB (the wire helper stops at 16 MiB).
fn read_big_response(s: &mut TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("response size");
    let len = i32::from_be_bytes(len);
    assert!((4..=128 << 20).contains(&len), "response size {len}");
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).expect("response body");
    body
}
