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
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
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

/// Decodes every (key, value) record of a run of batches (replay on start). Control
/// batches are skipped, as Kafka's coordinator loader skips them: a replicated offsets
/// partition's log holds Raft's own entries (the election no-op, membership changes) as
/// control batches, whose records are no coordinator records.
pub fn decode_records(batches: Bytes) -> Vec<(Bytes, Option<Bytes>)> {
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
            continue;
        }
        match sluice_codec::kafka_protocol::records::RecordBatchDecoder::decode(&mut one) {
            Ok(set) => {
                for r in set.records {
                    if let Some(k) = r.key {
                        out.push((k, r.value));
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
