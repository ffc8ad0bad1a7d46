//! Kafka's rules for what a client may write, over raw TCP: each refused produce gets the
//! code Kafka answers with and stores nothing; internal topics refuse client writes and
//! DeleteRecords, and compacted topics DeleteRecords and records without a key (KIP-467
//! record errors naming each); a zero produce timeout does not store a batch and then
//! report a timeout.

use std::net::TcpStream;

use sluice_tests::wire::{
    at, call, connect, create_by_metadata, find_coordinator, keyed_batch, latest, now_ms, produce,
    produce_v8, record_batch, seal, Dec, Enc,
};
use sluice_tests::Broker;

const CORRUPT_MESSAGE: i16 = 2;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_TIMESTAMP: i16 = 32;
const POLICY_VIOLATION: i16 = 44;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const INVALID_RECORD: i16 = 87;

/// A batch of `n` records changed by `tweak`, then re-sealed (valid length and CRC), so
/// only the rule under test is broken.
fn tweaked(n: usize, tweak: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let values: Vec<&[u8]> = (0..n).map(|_| b"x".as_slice()).collect();
    let mut b = record_batch(&values, now_ms());
    tweak(&mut b);
    seal(&mut b);
    b
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
fn put_i32(b: &mut [u8], at: usize, v: i32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn batches_that_break_kafkas_rules_are_refused_and_nothing_is_stored() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    let topic = "rules";
    create_by_metadata(&mut s, topic);
    let good = || record_batch(&[b"a", b"b"], now_ms());
    assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &good()), 0);
    assert_eq!(latest(&mut s, topic), 2);

    let mut two = good();
    two.extend_from_slice(&good());
    let cases: Vec<(&str, i16, Vec<u8>, i16)> = vec![
        ("two batches in one partition", 8, two, INVALID_RECORD),
        (
            "a control batch",
            8,
            tweaked(1, |b| put_i16(b, at::ATTRIBUTES, 1 << 5)),
            INVALID_RECORD,
        ),
        (
            "record count disagrees with lastOffsetDelta",
            8,
            tweaked(3, |b| put_i32(b, at::RECORDS_COUNT, 2)),
            INVALID_RECORD,
        ),
        (
            "lastOffsetDelta past the records",
            8,
            tweaked(2, |b| put_i32(b, at::LAST_OFFSET_DELTA, 9)),
            INVALID_RECORD,
        ),
        (
            "an unknown compression id",
            8,
            tweaked(1, |b| put_i16(b, at::ATTRIBUTES, 5)),
            CORRUPT_MESSAGE,
        ),
        (
            "zstd before produce v7",
            6,
            tweaked(1, |b| put_i16(b, at::ATTRIBUTES, 4)),
            UNSUPPORTED_COMPRESSION_TYPE,
        ),
        (
            "a producer id with a negative sequence",
            8,
            tweaked(1, |b| put_i64(b, at::PRODUCER_ID, 4242)),
            INVALID_RECORD,
        ),
        (
            "a timestamp two hours ahead (message.timestamp.after.max.ms is one hour)",
            8,
            tweaked(1, |b| put_i64(b, at::MAX_TIMESTAMP, now_ms() + 7_200_000)),
            INVALID_TIMESTAMP,
        ),
        (
            "a transactional batch without a transactional id",
            8,
            tweaked(1, |b| {
                put_i16(b, at::ATTRIBUTES, 1 << 4);
                put_i64(b, at::PRODUCER_ID, 4243);
                put_i32(b, at::BASE_SEQUENCE, 0);
            }),
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ),
    ];
    for (what, version, batch, want) in cases {
        assert_eq!(
            produce(&mut s, version, topic, 0, -1, 5000, &batch),
            want,
            "{what}"
        );
        assert_eq!(latest(&mut s, topic), 2, "{what}: nothing stored");
    }
    assert_eq!(produce(&mut s, 8, topic, 0, -1, 5000, &good()), 0);
    assert_eq!(
        latest(&mut s, topic),
        4,
        "the broker still takes good batches"
    );
    // Nothing refused reached the log: recovery finds exactly the good batches.
    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(latest(&mut s, topic), 4, "after restart");
}

#[test]
fn a_zero_timeout_does_not_store_the_batch_and_then_report_a_timeout() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    create_by_metadata(&mut s, "zero-timeout");
    for (i, timeout) in [0, -1, 0].into_iter().enumerate() {
        let batch = record_batch(&[b"z"], now_ms());
        assert_eq!(
            produce(&mut s, 8, "zero-timeout", 0, -1, timeout, &batch),
            0,
            "acks=all with timeout {timeout} is answered as stored"
        );
        assert_eq!(latest(&mut s, "zero-timeout"), i as i64 + 1);
    }
    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(latest(&mut s, "zero-timeout"), 3, "after restart");
}

/// DeleteRecords of `topic`/`partition` before `offset`: the partition's error code.
fn delete_records(s: &mut TcpStream, topic: &str, partition: i32, offset: i64) -> i16 {
    sluice_tests::wire::delete_records(s, topic, partition, offset, 5000).0
}

#[test]
fn clients_cannot_write_or_truncate_the_offsets_topic() {
    let mut broker = Broker::start();
    let mut s = connect(&broker);
    find_coordinator(&mut s, "g");
    let topic = "__consumer_offsets";
    let before = latest(&mut s, topic);
    assert_eq!(
        produce(
            &mut s,
            8,
            topic,
            0,
            -1,
            5000,
            &record_batch(&[b"evil"], now_ms())
        ),
        INVALID_TOPIC_EXCEPTION,
        "Produce to an internal topic"
    );
    assert_eq!(
        delete_records(&mut s, topic, 0, -1),
        INVALID_TOPIC_EXCEPTION,
        "DeleteRecords on an internal topic"
    );
    assert_eq!(latest(&mut s, topic), before, "nothing written");
    // An ordinary topic still takes DeleteRecords.
    create_by_metadata(&mut s, "plain");
    assert_eq!(
        produce(
            &mut s,
            8,
            "plain",
            0,
            -1,
            5000,
            &record_batch(&[b"p"], now_ms())
        ),
        0
    );
    assert_eq!(delete_records(&mut s, "plain", 0, -1), 0);
    // A compacted topic refuses it, as Kafka does: its start moves only by compaction.
    let create = Enc::new()
        .i32(1)
        .str("compacted")
        .i32(1)
        .i16(1)
        .i32(0)
        .i32(1)
        .str("cleanup.policy")
        .nstr(Some("compact"))
        .i32(5000)
        .i8(0)
        .0;
    let resp = call(&mut s, 19, 2, 24, &create);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!((d.i32(), d.str(), d.i16()), (1, "compacted".to_string(), 0));
    assert_eq!(
        produce(
            &mut s,
            8,
            "compacted",
            0,
            -1,
            5000,
            &keyed_batch(&[(Some(b"k"), b"v")], now_ms())
        ),
        0
    );
    // Keyless records are refused, the whole batch, each named (Kafka's LogValidator).
    let mixed = keyed_batch(
        &[
            (Some(b"a"), b"1"),
            (None, b"2"),
            (Some(b"b"), b"3"),
            (None, b"4"),
        ],
        now_ms(),
    );
    let (code, errors, message) = produce_v8(&mut s, "compacted", 0, &mixed);
    assert_eq!(code, INVALID_RECORD, "keyless records on a compacted topic");
    let why = "Compacted topic cannot accept message without key in topic partition compacted-0.";
    assert_eq!(
        errors,
        vec![(1, Some(why.to_string())), (3, Some(why.to_string()))]
    );
    let message = message.expect("an error message");
    assert!(message.contains("2 record errors"), "{message}");
    assert_eq!(
        delete_records(&mut s, "compacted", 0, -1),
        POLICY_VIOLATION,
        "DeleteRecords on a compacted topic"
    );
    assert_eq!(latest(&mut s, "compacted"), 1);
    broker.restart();
    let mut s = connect(&broker);
    assert_eq!(latest(&mut s, topic), before, "after restart");
    assert_eq!(latest(&mut s, "plain"), 1, "after restart");
}
