//! Leader epochs of the partitions this node leads, over raw TCP and rdkafka: the leader
//! stamps its epoch into every stored batch (`partitionLeaderEpoch`, bytes 12..16); Fetch,
//! ListOffsets and OffsetForLeaderEpoch check the client's `current_leader_epoch` per
//! partition (newer: UNKNOWN_LEADER_EPOCH, older: FENCED_LEADER_EPOCH, -1: no check) without
//! touching the other partitions of the request; Metadata reports the epoch; and
//! OffsetForLeaderEpoch answers from the epoch history as Kafka's
//! `LeaderEpochFileCache.endOffsetFor` does.
//!
//! Nothing bumps an epoch on a single node yet, so the later-epoch partition is made as a
//! replica that led epochs 1 and 3 before a restart would have it: with the broker stopped,
//! its batches are restamped (outside the CRC) and its `leader-epoch-checkpoint` written.

use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sluice_tests::kafka::{consume_all, consumer};
use sluice_tests::wire::{call, connect, create_by_metadata, produce, record_batch, Dec, Enc};
use sluice_tests::Broker;

const FENCED_LEADER_EPOCH: i16 = 74;
const UNKNOWN_LEADER_EPOCH: i16 = 75;

/// Metadata v7 (the first with leader epochs, non-flexible): partition 0's (error, epoch)
/// per topic.
fn metadata_epochs(s: &mut TcpStream, topics: &[&str]) -> Vec<(i16, i32)> {
    let mut body = Enc::new().i32(topics.len() as i32);
    for t in topics {
        body = body.str(t);
    }
    let mut body = body.0;
    body.push(0); // allow auto-creation: no
    let resp = call(s, 3, 7, 31, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    for _ in 0..d.i32() {
        let (_id, _host, _port, _rack) = (d.i32(), d.str(), d.i32(), d.nstr());
    }
    let (_cluster, _controller) = (d.nstr(), d.i32());
    assert_eq!(d.i32(), topics.len() as i32, "one entry per topic");
    let mut out = Vec::new();
    for t in topics {
        let error = d.i16();
        assert_eq!(&d.str(), t);
        let _internal = d.i8();
        let mut epoch = None;
        for _ in 0..d.i32() {
            let (_error, index, _leader, leader_epoch) = (d.i16(), d.i32(), d.i32(), d.i32());
            for _ in 0..3 {
                // replicas, ISR, offline replicas
                for _ in 0..d.i32() {
                    d.i32();
                }
            }
            if index == 0 {
                epoch = Some(leader_epoch);
            }
        }
        out.push((error, epoch.expect("partition 0 listed")));
    }
    out
}

/// One partition's Fetch answer.
#[derive(Debug)]
struct Fetched {
    error: i16,
    high_watermark: i64,
    records: Vec<u8>,
}

/// Fetch v11 (non-flexible, with `current_leader_epoch`) of partition 0 of each topic:
/// (topic, current leader epoch, fetch offset).
fn fetch(s: &mut TcpStream, parts: &[(&str, i32, i64)]) -> Vec<Fetched> {
    let mut body = Enc::new().i32(-1).i32(0).i32(1).i32(1 << 20).0;
    body.push(0); // isolation level
    let mut body = Enc(body).i32(0).i32(-1).i32(parts.len() as i32); // sessionless
    for (topic, epoch, offset) in parts {
        body = body
            .str(topic)
            .i32(1)
            .i32(0)
            .i32(*epoch)
            .i64(*offset)
            .i64(-1) // log start offset
            .i32(1 << 20);
    }
    let body = body.i32(0).str("").0; // no forgotten topics, rack ""
    let resp = call(s, 1, 11, 41, &body);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i16(), 0, "top-level error");
    let _session = d.i32();
    assert_eq!(d.i32(), parts.len() as i32, "one response per topic");
    let mut out = Vec::new();
    for (topic, _, _) in parts {
        assert_eq!(&d.str(), topic);
        assert_eq!(d.i32(), 1);
        assert_eq!(d.i32(), 0, "partition index");
        let error = d.i16();
        let high_watermark = d.i64();
        let (_lso, _log_start) = (d.i64(), d.i64());
        let aborted = d.i32();
        for _ in 0..aborted.max(0) {
            d.i64();
            d.i64();
        }
        let _preferred_replica = d.i32();
        let records = d.bytes().unwrap_or_default();
        out.push(Fetched {
            error,
            high_watermark,
            records,
        });
    }
    out
}

/// ListOffsets v4 (the first with `current_leader_epoch`) of partition 0 of each topic:
/// (topic, current leader epoch, timestamp) → (error, offset, leader epoch).
fn list_offsets(s: &mut TcpStream, parts: &[(&str, i32, i64)]) -> Vec<(i16, i64, i32)> {
    let mut body = Enc::new().i32(-1).0;
    body.push(0); // isolation level
    let mut body = Enc(body).i32(parts.len() as i32);
    for (topic, epoch, ts) in parts {
        body = body.str(topic).i32(1).i32(0).i32(*epoch).i64(*ts);
    }
    let resp = call(s, 2, 4, 51, &body.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), parts.len() as i32);
    let mut out = Vec::new();
    for (topic, _, _) in parts {
        assert_eq!(&d.str(), topic);
        assert_eq!(d.i32(), 1);
        assert_eq!(d.i32(), 0);
        let error = d.i16();
        let _timestamp = d.i64();
        out.push((error, d.i64(), d.i32()));
    }
    out
}

/// OffsetForLeaderEpoch v2 (the oldest served) of partition 0 of each topic:
/// (topic, current leader epoch, requested epoch) → (error, epoch, end offset).
fn epoch_end(s: &mut TcpStream, parts: &[(&str, i32, i32)]) -> Vec<(i16, i32, i64)> {
    let mut body = Enc::new().i32(parts.len() as i32);
    for (topic, current, epoch) in parts {
        body = body.str(topic).i32(1).i32(0).i32(*current).i32(*epoch);
    }
    let resp = call(s, 23, 2, 61, &body.0);
    let mut d = Dec::new(&resp);
    let _throttle = d.i32();
    assert_eq!(d.i32(), parts.len() as i32);
    let mut out = Vec::new();
    for (topic, _, _) in parts {
        assert_eq!(&d.str(), topic);
        assert_eq!(d.i32(), 1);
        let error = d.i16();
        assert_eq!(d.i32(), 0);
        out.push((error, d.i32(), d.i64()));
    }
    out
}

/// (base offset, partitionLeaderEpoch) of each batch in fetched records.
fn batch_epochs(records: &[u8]) -> Vec<(i64, i32)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= records.len() {
        let base = i64::from_be_bytes(records[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap());
        let epoch = i32::from_be_bytes(records[at + 12..at + 16].try_into().unwrap());
        if len <= 0 || at + 12 + len as usize > records.len() {
            break; // a partial batch at the end of a response
        }
        out.push((base, epoch));
        at += 12 + len as usize;
    }
    out
}

fn produce_one(s: &mut TcpStream, topic: &str, value: &[u8]) {
    let batch = record_batch(&[value], sluice_tests::wire::now_ms());
    assert_eq!(produce(s, 8, topic, 0, -1, 5_000, &batch), 0, "produce");
}

/// Makes a stopped broker's `topic`/0 a log that epoch 1 wrote from offset 0 and epoch 3
/// from `from`: restamps the batches in its first segment (the header's leader epoch is
/// outside the CRC) and writes the matching `leader-epoch-checkpoint` (Kafka's format).
fn restamp_offline(data_dir: &Path, topic: &str, from: i64) {
    let dir = data_dir.join(format!("{topic}-0"));
    let seg = dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).expect("read segment");
    let mut at = 0;
    let mut batches = 0;
    while at + 16 <= bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        if len <= 0 {
            break; // the page padding after the last batch
        }
        let epoch: i32 = if base < from { 1 } else { 3 };
        bytes[at + 12..at + 16].copy_from_slice(&epoch.to_be_bytes());
        batches += 1;
        at += 12 + len as usize;
    }
    assert!(batches > 0, "no batches in {}", seg.display());
    std::fs::write(&seg, &bytes).expect("write segment");
    std::fs::write(
        dir.join("leader-epoch-checkpoint"),
        format!("0\n2\n1 0\n3 {from}\n"),
    )
    .expect("write checkpoint");
}

#[test]
fn a_new_partition_is_at_epoch_zero_and_stamps_it() {
    let broker = Broker::start();
    let mut s = connect(&broker);
    let topic = "epochs-new";
    create_by_metadata(&mut s, topic);
    // The client sends -1 in the header (as producers do); the stored batch has 0.
    produce_one(&mut s, topic, b"a");
    produce_one(&mut s, topic, b"b");
    assert_eq!(metadata_epochs(&mut s, &[topic]), vec![(0, 0)]);

    for current in [0, -1] {
        let f = fetch(&mut s, &[(topic, current, 0)]);
        assert_eq!(f[0].error, 0, "current epoch {current}");
        assert_eq!(batch_epochs(&f[0].records), vec![(0, 0), (1, 0)]);
    }
    let f = fetch(&mut s, &[(topic, 1, 0)]);
    assert_eq!(f[0].error, UNKNOWN_LEADER_EPOCH);
    assert!(f[0].records.is_empty());

    assert_eq!(list_offsets(&mut s, &[(topic, 0, -1)]), vec![(0, 2, 0)]);
    assert_eq!(
        list_offsets(&mut s, &[(topic, 1, -1)]),
        vec![(UNKNOWN_LEADER_EPOCH, -1, -1)]
    );

    assert_eq!(epoch_end(&mut s, &[(topic, 0, 0)]), vec![(0, 0, 2)]);
    assert_eq!(epoch_end(&mut s, &[(topic, -1, 0)]), vec![(0, 0, 2)]);
    // An epoch newer than any: UNDEFINED_EPOCH / UNDEFINED_EPOCH_OFFSET, no error.
    assert_eq!(epoch_end(&mut s, &[(topic, 0, 1)]), vec![(0, -1, -1)]);
    assert_eq!(
        epoch_end(&mut s, &[(topic, 1, 0)]),
        vec![(UNKNOWN_LEADER_EPOCH, -1, -1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_epoch_fences_older_clients_partition_by_partition() {
    let mut broker = Broker::start();
    let (old, other) = ("epochs-later", "epochs-other");
    {
        let mut s = connect(&broker);
        create_by_metadata(&mut s, old);
        create_by_metadata(&mut s, other);
        for v in [b"0", b"1", b"2"] {
            produce_one(&mut s, old, v);
        }
        produce_one(&mut s, other, b"x");
    }
    tokio::task::block_in_place(|| {
        broker.stop_ok();
        restamp_offline(broker.data_dir(), old, 1);
        broker.restart();
    });
    let mut s = connect(&broker);
    assert_eq!(
        metadata_epochs(&mut s, &[old, other]),
        vec![(0, 3), (0, 0)],
        "Metadata reports each partition's epoch"
    );

    // Fetch: each partition is checked on its own.
    let f = fetch(&mut s, &[(old, 2, 0), (other, 0, 0)]);
    assert_eq!(f[0].error, FENCED_LEADER_EPOCH);
    assert!(f[0].records.is_empty());
    assert_eq!(f[1].error, 0);
    assert_eq!(batch_epochs(&f[1].records), vec![(0, 0)]);
    let f = fetch(&mut s, &[(other, 0, 0), (old, 4, 0)]);
    assert_eq!(f[0].error, 0);
    assert_eq!(f[1].error, UNKNOWN_LEADER_EPOCH);
    let f = fetch(&mut s, &[(old, 3, 0)]);
    assert_eq!(f[0].error, 0);
    assert_eq!(batch_epochs(&f[0].records), vec![(0, 1), (1, 3), (2, 3)]);

    // The leader stamps its current epoch on new batches.
    produce_one(&mut s, old, b"3");
    let f = fetch(&mut s, &[(old, 3, 3)]);
    assert_eq!((f[0].error, f[0].high_watermark), (0, 4));
    assert_eq!(batch_epochs(&f[0].records), vec![(3, 3)]);

    // ListOffsets.
    assert_eq!(
        list_offsets(&mut s, &[(old, 2, -1), (other, -1, -1)]),
        vec![(FENCED_LEADER_EPOCH, -1, -1), (0, 1, 0)]
    );
    assert_eq!(
        list_offsets(&mut s, &[(other, 0, -1), (old, 7, -1)]),
        vec![(0, 1, 0), (UNKNOWN_LEADER_EPOCH, -1, -1)]
    );
    assert_eq!(list_offsets(&mut s, &[(old, 3, -1)]), vec![(0, 4, 3)]);

    // OffsetForLeaderEpoch: the check, then Kafka's answers from the history
    // [(1, 0), (3, 1)] with the log ending at 4.
    assert_eq!(
        epoch_end(&mut s, &[(old, 2, 3), (other, 0, 0)]),
        vec![(FENCED_LEADER_EPOCH, -1, -1), (0, 0, 1)]
    );
    assert_eq!(
        epoch_end(&mut s, &[(old, 4, 3)]),
        vec![(UNKNOWN_LEADER_EPOCH, -1, -1)]
    );
    for (requested, want) in [
        // Older than every known epoch: itself, ending where the first known one starts.
        (0, (0, 0)),
        (1, (1, 1)),
        // Unknown, between two known ones: the floor epoch, ending where the next starts.
        (2, (1, 1)),
        // The current epoch ends at the log end.
        (3, (3, 4)),
        // Newer than any: undefined.
        (4, (-1, -1)),
        (-1, (-1, -1)),
    ] {
        for current in [3, -1] {
            assert_eq!(
                epoch_end(&mut s, &[(old, current, requested)]),
                vec![(0, want.0, want.1)],
                "epoch {requested}, current {current}"
            );
        }
    }

    // librdkafka takes the epoch from Metadata, sends it with every Fetch, and validates
    // its position with OffsetForLeaderEpoch: it reads both partitions through.
    let c = consumer(&broker.bootstrap());
    for (topic, n) in [(old, 4), (other, 1)] {
        let got = consume_all(&c, topic, &[0], Duration::from_secs(30)).await;
        let offsets: Vec<i64> = got[&0].iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..n).collect::<Vec<_>>(), "{topic}");
    }
}
