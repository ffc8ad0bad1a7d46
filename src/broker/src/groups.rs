//! Where consumer groups live: the internal `__consumer_offsets` topic, the partition (and so
//! the shard) that owns each group (Kafka's placement, from the group crate), and the
//! record-batch encoding of coordinator records.

use bytes::{Bytes, BytesMut};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_codec::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The internal topic that stores group metadata and committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Kafka's `offsets.topic.num.partitions` default.
pub const OFFSETS_TOPIC_PARTITIONS_DEFAULT: i32 = 50;
/// `offsets.topic.segment.bytes` default (100 MiB; compaction keeps it small later).
pub const OFFSETS_TOPIC_SEGMENT_BYTES: &str = "104857600";

/// A group's `__consumer_offsets` partition: Kafka's placement, kept in one place (the
/// group crate), so routing and storage never disagree.
pub use sluice_group::partition_for;

/// Encodes coordinator records (key, value or tombstone) as one uncompressed batch, ready
/// for the log (which assigns the offsets).
pub fn encode_records(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Bytes {
    encode_batch(records, None, now_ms)
}

/// [`encode_records`] as a transactional batch of `(producer id, epoch)` (TxnOffsetCommit's
/// records), whose transaction's marker later decides them.
pub fn encode_txn_records(
    records: &[(Bytes, Option<Bytes>)],
    producer_id: i64,
    producer_epoch: i16,
    now_ms: i64,
) -> Bytes {
    encode_batch(records, Some((producer_id, producer_epoch)), now_ms)
}

fn encode_batch(
    records: &[(Bytes, Option<Bytes>)],
    producer: Option<(i64, i16)>,
    now_ms: i64,
) -> Bytes {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: producer.is_some(),
            control: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch whenever `offset - sequence` changes, so a
            // constant "no sequence" (-1) made one batch per record, which the log refuses
            // as one append (every multi-record commit failed to persist). Counting up from
            // -1 keeps them in one batch whose base sequence is still -1.
            sequence: i as i32 - 1,
            timestamp: now_ms,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encoding in-memory records cannot fail");
    buf.freeze()
}

/// Every (key, value) record of a run of batches, transactional ones included, without
/// their batches' context (moving groups between partitions; see [`decode_loaded`] for
/// replay).
pub fn decode_records(batches: Bytes) -> Vec<(Bytes, Option<Bytes>)> {
    decode_loaded(batches)
        .into_iter()
        .filter_map(|l| match l {
            Loaded::Record { key, value, .. } => Some((key, value)),
            Loaded::Marker { .. } => None,
        })
        .collect()
}

/// What replay reads from an offsets partition, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// A coordinator record; `producer_id` when it is in a transactional batch (a
    /// TxnOffsetCommit's offset, pending until its producer's marker).
    Record {
        producer_id: Option<i64>,
        key: Bytes,
        value: Option<Bytes>,
    },
    /// A transaction marker: the producer's pending offsets commit or are dropped.
    Marker { producer_id: i64, commit: bool },
}

/// Decodes a run of batches for replay (on start). Control batches other than transaction
/// markers are skipped, as Kafka's coordinator loader skips them: a replicated offsets
/// partition's log holds Raft's own entries (the election no-op, membership changes) as
/// control batches, whose records are no coordinator records.
pub fn decode_loaded(batches: Bytes) -> Vec<Loaded> {
    let mut out = Vec::new();
    // Each batch is cut out by its own length field and decoded alone, so one batch the
    // decoder refuses costs only its own records, not every batch after it in the read.
    let mut at = 0usize;
    while at < batches.len() {
        let Some(h) = sluice_storage::hdr::Header::parse(&batches[at..]) else {
            log::error!("{OFFSETS_TOPIC}: unreadable batch framing; rest of this read skipped");
            break;
        };
        let end = (at + h.size).min(batches.len());
        let mut one = batches.slice(at..end);
        at = end;
        if h.is_control() {
            match sluice_storage::txn::parse_marker(&h, &one) {
                Ok(Some(m)) => out.push(Loaded::Marker {
                    producer_id: h.producer_id,
                    commit: m.commit,
                }),
                Ok(None) => {}
                Err(e) => log::error!("{OFFSETS_TOPIC}: {e}; marker skipped"),
            }
            continue;
        }
        let producer_id = h.is_transactional().then_some(h.producer_id);
        match sluice_codec::kafka_protocol::records::RecordBatchDecoder::decode(&mut one) {
            Ok(set) => {
                for r in set.records {
                    if let Some(key) = r.key {
                        out.push(Loaded::Record {
                            producer_id,
                            key,
                            value: r.value,
                        });
                    }
                }
            }
            Err(e) => log::error!(
                "undecodable batch at offset {} in {OFFSETS_TOPIC} skipped: {e}",
                h.base_offset
            ),
        }
    }
    out
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let recs = vec![
            (Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))),
            (Bytes::from_static(b"k2"), None),
        ];
        let batch = encode_records(&recs, 5);
        // One batch (what one log append takes), with no producer sequence.
        let header = sluice_storage::hdr::Header::parse(&batch).expect("a batch");
        assert_eq!(header.size, batch.len());
        assert_eq!(header.base_sequence, -1);
        assert_eq!(decode_records(batch), recs);
    }

    #[test]
    fn replay_skips_one_undecodable_batch_and_reads_on() {
        let a = vec![(Bytes::from_static(b"a"), Some(Bytes::from_static(b"1")))];
        let b = vec![(Bytes::from_static(b"b"), Some(Bytes::from_static(b"2")))];
        let c = vec![(Bytes::from_static(b"c"), None)];
        let mut bad = encode_records(&b, 5).to_vec();
        // Break the CRC: the decoder refuses this batch, its framing stays sound.
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut all = encode_records(&a, 5).to_vec();
        all.extend_from_slice(&bad);
        all.extend_from_slice(&encode_records(&c, 5));
        let mut want = a;
        want.extend(c);
        assert_eq!(decode_records(Bytes::from(all)), want);
    }

    /// TxnOffsetCommit's records replay as pending offsets of their producer, and its
    /// transaction's marker decides them.
    #[test]
    fn replay_reads_transactional_records_and_markers() {
        use sluice_storage::txn::{marker_batch, Marker};
        let plain = vec![(Bytes::from_static(b"a"), Some(Bytes::from_static(b"1")))];
        let txn = vec![(Bytes::from_static(b"b"), Some(Bytes::from_static(b"2")))];
        let mut all = encode_records(&plain, 5).to_vec();
        all.extend_from_slice(&encode_txn_records(&txn, 42, 3, 5));
        let marker = Marker {
            commit: true,
            coordinator_epoch: 1,
        };
        all.extend_from_slice(&marker_batch(42, 3, marker, 5));
        assert_eq!(
            decode_loaded(Bytes::from(all.clone())),
            vec![
                Loaded::Record {
                    producer_id: None,
                    key: Bytes::from_static(b"a"),
                    value: Some(Bytes::from_static(b"1")),
                },
                Loaded::Record {
                    producer_id: Some(42),
                    key: Bytes::from_static(b"b"),
                    value: Some(Bytes::from_static(b"2")),
                },
                Loaded::Marker {
                    producer_id: 42,
                    commit: true
                },
            ]
        );
        let h = sluice_storage::hdr::Header::parse(&all[encode_records(&plain, 5).len()..])
            .expect("the transactional batch");
        assert!(h.is_transactional() && h.producer_id == 42 && h.producer_epoch == 3);
        assert_eq!(decode_records(Bytes::from(all)).len(), 2, "both records");
    }

    /// Raft's own entries in a replicated offsets partition (the election no-op, a
    /// membership change) are control batches: replay must not take their records for
    /// coordinator records (which logged "skipping record: OffsetCommitKey: truncated" once
    /// per partition and leadership).
    #[test]
    fn replay_skips_raft_control_batches() {
        use raft::eraftpb::{Entry, EntryType};
        use sluice_replica::control::control_batch;
        let a = vec![(Bytes::from_static(b"a"), Some(Bytes::from_static(b"1")))];
        let noop = control_batch(&Entry::default(), 0, 1).expect("a control batch");
        let mut conf = Entry::default();
        conf.set_entry_type(EntryType::EntryConfChangeV2);
        conf.data = vec![1, 2, 3].into();
        let conf = control_batch(&conf, 1, 1).expect("a control batch");
        let mut all = noop;
        all.extend_from_slice(&encode_records(&a, 5));
        all.extend_from_slice(&conf);
        assert_eq!(decode_records(Bytes::from(all)), a);
    }
}
