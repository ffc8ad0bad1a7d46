//! The partition side of transactions: transaction markers (the control batches a
//! transaction coordinator writes to end a transaction in a partition) and the index of
//! aborted transactions that read_committed fetches need.
//!
//! Formats are Kafka's:
//! - A marker is a control batch (attributes: control and transactional bits) of one record
//!   with the producer's id and epoch in the batch header and base sequence -1. The record's
//!   key is `version: int16 = 0, type: int16` (`ControlRecordType`: ABORT 0, COMMIT 1), its
//!   value `EndTxnMarker`: `version: int16 = 0, coordinatorEpoch: int32`.
//! - An aborted transaction (`.txnindex` entry, 34 bytes): `version: int16 = 0, producerId:
//!   int64, firstOffset: int64, lastOffset: int64 (the ABORT marker's), lastStableOffset:
//!   int64 (the partition's last stable offset when the marker was appended)`.

use crate::control::{self, ControlHeader};
use crate::error::{Result, StorageError};
use crate::hdr::Header;

/// `ControlRecordType.ABORT`.
pub const CONTROL_ABORT: i16 = 0;
/// `ControlRecordType.COMMIT`.
pub const CONTROL_COMMIT: i16 = 1;
/// Bytes of one aborted-transaction index entry.
pub const ABORTED_TXN_BYTES: usize = 34;

/// What a transaction marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// A transaction that ended in this partition: from its producer's first batch in it to its
/// marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// One aborted transaction as the index keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub last_stable_offset: i64,
}

/// The marker batch for `marker`, at base offset 0 and leader epoch 0 (the append stamps
/// both; neither is under the CRC).
pub fn marker_batch(
    producer_id: i64,
    producer_epoch: i16,
    marker: Marker,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if marker.commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    };
    // EndTxnMarker: version int16 0, coordinator epoch.
    let mut value = [0u8; 6];
    value[2..].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    control::one_record_batch(
        kind,
        &value,
        ControlHeader {
            transactional: true,
            producer_id,
            producer_epoch,
            timestamp: timestamp_ms,
        },
    )
}

/// Whether `h` is a transaction marker's header (a control batch of a transactional
/// producer). Raft's own control batches have no producer and are not.
pub fn is_marker_header(h: &Header) -> bool {
    h.is_control() && h.is_transactional() && h.producer_id >= 0
}

/// Reads the marker in a whole batch whose header is `h`: `None` for a control batch that
/// is not a transaction marker, an error for one that claims to be and does not parse.
pub fn parse_marker(h: &Header, batch: &[u8]) -> Result<Option<Marker>> {
    if !is_marker_header(h) {
        return Ok(None);
    }
    let bad = |why: &str| StorageError::CorruptBatch {
        reason: format!("transaction marker at {}: {why}", h.base_offset),
    };
    let (kind, value) = control::one_record(batch, h).map_err(bad)?;
    let commit = match kind {
        CONTROL_ABORT => false,
        CONTROL_COMMIT => true,
        other => return Err(bad(&format!("control type {other}"))),
    };
    let value = &batch[value];
    if value.len() < 6 {
        return Err(bad("value too short"));
    }
    let coordinator_epoch = i32::from_be_bytes(value[2..6].try_into().expect("4 bytes"));
    Ok(Some(Marker {
        commit,
        coordinator_epoch,
    }))
}

impl AbortedTxn {
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.first_offset.to_be_bytes());
        out.extend_from_slice(&self.last_offset.to_be_bytes());
        out.extend_from_slice(&self.last_stable_offset.to_be_bytes());
    }

    /// Every whole entry of an index file. A torn last entry (a crash mid-write) is
    /// dropped; an unknown entry version ends the list there (`Err` with what was read
    /// before it), as does an entry that is out of order.
    pub fn decode_all(b: &[u8]) -> std::result::Result<Vec<AbortedTxn>, Vec<AbortedTxn>> {
        let mut out: Vec<AbortedTxn> = Vec::with_capacity(b.len() / ABORTED_TXN_BYTES);
        for e in b.chunks_exact(ABORTED_TXN_BYTES) {
            let i64_at = |i: usize| i64::from_be_bytes(e[i..i + 8].try_into().expect("8 bytes"));
            let t = AbortedTxn {
                producer_id: i64_at(2),
                first_offset: i64_at(10),
                last_offset: i64_at(18),
                last_stable_offset: i64_at(26),
            };
            let in_order = out.last().is_none_or(|p| p.last_offset < t.last_offset);
            if i16::from_be_bytes([e[0], e[1]]) != 0 || t.first_offset > t.last_offset || !in_order
            {
                return Err(out);
            }
            out.push(t);
        }
        Ok(out)
    }
}

/// The aborted transactions a read_committed fetch of `[from, to)` must name (producer id,
/// first offset): those whose range overlaps it. `aborted` is in marker order.
pub fn aborted_between(aborted: &[AbortedTxn], from: i64, to: i64) -> Vec<(i64, i64)> {
    // Ordered by last offset: skip those that ended before `from`.
    let start = aborted.partition_point(|t| t.last_offset < from);
    aborted[start..]
        .iter()
        .filter(|t| t.first_offset < to)
        .map(|t| (t.producer_id, t.first_offset))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdr::{self, HEADER_BYTES};

    #[test]
    fn a_marker_round_trips_and_is_a_valid_batch() {
        for commit in [true, false] {
            let m = Marker {
                commit,
                coordinator_epoch: 17,
            };
            let mut b = marker_batch(42, 3, m, 1_700_000_000_000);
            hdr::set_offset_and_epoch(&mut b, 100, 5);
            let h = Header::parse(&b).unwrap();
            assert_eq!(h.size, b.len());
            h.verify(&b).unwrap();
            assert!(is_marker_header(&h));
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_offset),
                (42, 3, 100)
            );
            assert_eq!(parse_marker(&h, &b).unwrap(), Some(m));
            // The codec sees a control batch too.
            let cb = sluice_codec::batch::BatchHeader::parse(&b).unwrap();
            assert!(cb.is_control() && cb.is_transactional());
        }
    }

    #[test]
    fn a_damaged_marker_is_an_error_not_a_panic() {
        let good = marker_batch(
            1,
            0,
            Marker {
                commit: true,
                coordinator_epoch: 0,
            },
            0,
        );
        let h = Header::parse(&good).unwrap();
        for n in HEADER_BYTES..good.len() {
            assert!(parse_marker(&h, &good[..n]).is_err(), "prefix {n}");
        }
        let mut wrong_type = good.clone();
        let key_type_at = HEADER_BYTES + 1 + 1 + 1 + 1 + 1 + 2;
        wrong_type[key_type_at + 1] = 7;
        assert!(parse_marker(&h, &wrong_type).is_err());
        // A Raft control batch (no producer) is not a marker.
        let mut raft = h;
        raft.producer_id = -1;
        assert_eq!(parse_marker(&raft, &good).unwrap(), None);
    }

    #[test]
    fn the_index_round_trips_and_stops_at_a_torn_or_bad_entry() {
        let ts = [
            AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 10,
                last_stable_offset: 0,
            },
            AbortedTxn {
                producer_id: 2,
                first_offset: 5,
                last_offset: 20,
                last_stable_offset: 5,
            },
        ];
        let mut b = Vec::new();
        for t in &ts {
            t.encode(&mut b);
        }
        assert_eq!(b.len(), 2 * ABORTED_TXN_BYTES);
        assert_eq!(AbortedTxn::decode_all(&b).unwrap(), ts);
        assert_eq!(AbortedTxn::decode_all(&b[..b.len() - 3]).unwrap(), ts[..1]);
        let mut bad = b.clone();
        bad[ABORTED_TXN_BYTES + 1] = 9;
        assert_eq!(AbortedTxn::decode_all(&bad).unwrap_err(), ts[..1]);
    }

    #[test]
    fn aborted_between_names_the_overlapping_transactions() {
        let t = |pid, first, last| AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: first,
        };
        let all = [t(1, 0, 10), t(2, 5, 20), t(3, 30, 31)];
        assert_eq!(aborted_between(&all, 0, 5), vec![(1, 0)]);
        assert_eq!(aborted_between(&all, 11, 30), vec![(2, 5)]);
        assert_eq!(aborted_between(&all, 10, 40), vec![(1, 0), (2, 5), (3, 30)]);
        assert!(aborted_between(&all, 32, 40).is_empty());
    }
}
