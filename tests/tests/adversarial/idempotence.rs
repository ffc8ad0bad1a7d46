//! Idempotence against hostile producer ids, over raw TCP beside a real rdkafka idempotent
//! producer: a flood of fake producer ids cannot evict the real producer's state (its retry
//! stays a duplicate, before and after a restart; new ids are refused retriably when the
//! table is full), InitProducerId naming someone else's producer id cannot fence it, and a
//! producer's state expires by `producer.id.expiration.ms`.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_tests::wire::{
    at, connect, create_by_metadata, fetch_at, frame, header, latest, now_ms, produce,
    read_response, record_batch, seal, Dec, Enc,
};
use sluice_tests::{poll_until, Broker, BrokerConfig};

const NOT_ENOUGH_REPLICAS: i16 = 19;
/// The broker's per-partition producer table (sluice_storage PRODUCERS_PER_PARTITION_MAX).
const PRODUCERS_PER_PARTITION_MAX: usize = 16_384;
const FAKE_PRODUCERS: usize = 20_000;

fn idempotent_producer(broker: &Broker) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("producer")
}

async fn send(p: &FutureProducer, topic: &str, value: &str) -> Result<i64, String> {
    let rec = FutureRecord::<[u8], _>::to(topic)
        .partition(0)
        .payload(value.as_bytes());
    p.send(rec, Duration::from_secs(30))
        .await
        .map(|d| d.offset)
        .map_err(|(e, _)| e.to_string())
}

/// The stored batch at `offset` of `topic`/0, read with Fetch v4 (whole, as stored).
fn fetch_batch(s: &mut TcpStream, topic: &str, offset: i64) -> Vec<u8> {
    let (error, _hw, records) = fetch_at(s, topic, 0, offset);
    assert_eq!(error, 0, "fetch error");
    assert!(!records.is_empty(), "records");
    let len = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize + 12;
    records[..len].to_vec()
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
const PRODUCER_EPOCH: usize = 51;

/// A one-record batch of producer `pid`, epoch `epoch`, sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, timestamp: i64) -> Vec<u8> {
    let mut b = record_batch(&[b"f"], timestamp);
    b[at::PRODUCER_ID..at::PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[at::BASE_SEQUENCE..at::BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    seal(&mut b);
    b
}

/// A stored batch sent again as its producer's retry: the broker-set base offset and leader
/// epoch back to what a producer sends (neither is covered by the CRC).
fn as_retry(stored: &[u8]) -> Vec<u8> {
    let mut b = stored.to_vec();
    b[0..8].copy_from_slice(&0i64.to_be_bytes());
    b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
    b
}

/// Produces one batch per fake producer id (acks=all, pipelined: a reader thread takes the
/// answers) and returns how many were accepted and how many refused with NOT_ENOUGH_REPLICAS.
fn flood(broker: &Broker, topic: &str, first_pid: i64, n: usize) -> (usize, usize) {
    let mut w = connect(broker);
    w.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = w.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..n {
            let resp = read_response(&mut r).expect("produce answered");
            let mut d = Dec::new(&resp);
            let _corr = d.i32();
            assert_eq!(d.i32(), 1);
            let _topic = d.str();
            assert_eq!(d.i32(), 1);
            assert_eq!(d.i32(), 0);
            match d.i16() {
                0 => ok += 1,
                NOT_ENOUGH_REPLICAS => refused += 1,
                other => panic!("fake producer got error {other}"),
            }
        }
        (ok, refused)
    });
    let ts = now_ms();
    for i in 0..n {
        let batch = idempotent_batch(first_pid + i as i64, 0, 0, ts);
        let body = Enc::new()
            .nstr(None)
            .i16(-1)
            .i32(30_000)
            .i32(1)
            .str(topic)
            .i32(1)
            .i32(0)
            .bytes(&batch)
            .0;
        let mut req = header(0, 8, i as i32);
        req.extend_from_slice(&body);
        w.write_all(&frame(&req)).expect("send produce");
    }
    reader.join().expect("reader")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_fake_producer_ids_cannot_evict_a_real_producer() {
    let mut broker = Broker::start();
    let topic = "idem-flood";
    let mut s = connect(&broker);
    create_by_metadata(&mut s, topic);

    let real = idempotent_producer(&broker);
    assert_eq!(send(&real, topic, "real-0").await, Ok(0));
    let stored = fetch_batch(&mut s, topic, 0);
    let real_pid = i64_at(&stored, at::PRODUCER_ID);
    assert!(real_pid >= 0, "rdkafka is idempotent");
    assert_eq!(i32_at(&stored, at::BASE_SEQUENCE), 0);
    let retry = as_retry(&stored);

    let (ok, refused) = flood(&broker, topic, 1 << 40, FAKE_PRODUCERS);
    assert_eq!(ok, PRODUCERS_PER_PARTITION_MAX - 1, "the table filled up");
    assert_eq!(
        refused,
        FAKE_PRODUCERS - ok,
        "the rest were refused retriably"
    );
    let end = latest(&mut s, topic);
    assert_eq!(end, 1 + ok as i64);

    // The real producer's retry of its batch is answered as a duplicate: nothing is stored.
    assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &retry), 0);
    assert_eq!(latest(&mut s, topic), end, "the retry was not stored twice");
    // And it goes on producing with its sequence.
    assert_eq!(send(&real, topic, "real-1").await, Ok(end));
    drop(real);

    // The same after a restart (state from the snapshot and the replayed log).
    drop(s);
    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &retry), 0);
    assert_eq!(latest(&mut s, topic), end + 1, "still a duplicate");
    assert_eq!(
        produce(
            &mut s,
            8,
            topic,
            0,
            -1,
            5000,
            &idempotent_batch(1 << 50, 0, 0, now_ms())
        ),
        NOT_ENOUGH_REPLICAS,
        "still full: a new producer id is refused"
    );
    assert_eq!(latest(&mut s, topic), end + 1);
}

/// InitProducerId v3 (flexible) naming `pid`/`epoch`: (error, producer id, epoch).
fn init_producer_id(s: &mut TcpStream, pid: i64, epoch: i16) -> (i16, i64, i16) {
    // Request header v2: key, version, correlation, client id, no tagged fields.
    let mut req = header(22, 3, 31);
    req.push(0);
    // transactional_id null (compact: 0), timeout, producer id, epoch, no tagged fields.
    req.push(0);
    req.extend_from_slice(&Enc::new().i32(60_000).i64(pid).i16(epoch).0);
    req.push(0);
    s.write_all(&frame(&req)).unwrap();
    let resp = read_response(s).expect("InitProducerId answered");
    assert_eq!(i32_at(&resp, 0), 31, "correlation id");
    // Response header v1: correlation id, then no tagged fields.
    assert_eq!(resp[4], 0);
    let mut d = Dec::new(&resp[5..]);
    let _throttle = d.i32();
    (d.i16(), d.i64(), d.i16())
}

#[tokio::test(flavor = "multi_thread")]
async fn init_producer_id_with_a_victims_id_does_not_fence_it() {
    let broker = Broker::start();
    let topic = "idem-fence";
    let mut s = connect(&broker);
    create_by_metadata(&mut s, topic);
    let victim = idempotent_producer(&broker);
    assert_eq!(send(&victim, topic, "v-0").await, Ok(0));
    let stored = fetch_batch(&mut s, topic, 0);
    let victim_pid = i64_at(&stored, at::PRODUCER_ID);
    let victim_epoch = i16::from_be_bytes(
        stored[PRODUCER_EPOCH..PRODUCER_EPOCH + 2]
            .try_into()
            .unwrap(),
    );

    // As Kafka: a new id at epoch 0, whatever the request names.
    let (error, pid, epoch) = init_producer_id(&mut s, victim_pid, victim_epoch);
    assert_eq!(error, 0);
    assert_ne!(pid, victim_pid, "the victim's id is not handed out again");
    assert_eq!(epoch, 0);
    // The attacker writes with what it got; the victim is untouched.
    assert_eq!(
        produce(
            &mut s,
            8,
            topic,
            0,
            -1,
            5000,
            &idempotent_batch(pid, epoch, 0, now_ms())
        ),
        0
    );
    assert_eq!(send(&victim, topic, "v-1").await, Ok(2), "not fenced");
    assert_eq!(send(&victim, topic, "v-2").await, Ok(3));
}

#[test]
fn producer_state_expires_by_producer_id_expiration_ms() {
    let broker = Broker::start_with(BrokerConfig {
        extra_args: vec![
            "--producer-id-expiration-ms".into(),
            "1000".into(),
            "--retention-check-interval-ms".into(),
            "100".into(),
        ],
        ..BrokerConfig::default()
    });
    let topic = "idem-expiry";
    let mut s = connect(&broker);
    create_by_metadata(&mut s, topic);
    let b = idempotent_batch(77, 0, 0, now_ms());
    assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &b), 0);
    // While the state lives the retry is a duplicate; once it expired (a second after the
    // batch's timestamp, seen by the next check) the producer is unknown and, as on Kafka,
    // the same batch is appended again.
    poll_until(Duration::from_secs(30), "producer state expired", || {
        assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &b), 0);
        (latest(&mut s, topic) == 2).then_some(())
    });
}
