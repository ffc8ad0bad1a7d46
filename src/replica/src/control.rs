//! Raft entries as Kafka batches: stamping a Kafka batch with the offset and leader epoch
//! (= Raft term) it gets, encoding Raft's own entries as control batches of one record, and
//! reading stored batches back as `FetchedBatch`es.
//!
//! A control batch holds one control record (Kafka's format: key = version int16 0, type
//! int16) whose value is a one-byte Raft entry type followed by the entry's data, so the
//! entry is rebuilt exactly on read. Types are KRaft's: `LEADER_CHANGE` (2) for normal
//! entries (the election no-op), `KRAFT_VOTERS` (6) for configuration changes. Timestamps
//! are -1 (none): every replica must write identical bytes and no clock is shared, and a
//! batch without a timestamp moves neither time-based retention nor the time index.

use bytes::Bytes;
use raft::eraftpb::{Entry, EntryType};
use sluice_raft::{batch_records, FetchedBatch};
use sluice_storage::control::{self, put_varint, ControlHeader};
use sluice_storage::hdr::{self, Header, HEADER_BYTES, LOG_OVERHEAD};

/// Kafka's `ControlRecordType.LEADER_CHANGE`: a normal Raft entry of its own (the no-op).
pub const CONTROL_LEADER_CHANGE: i16 = 2;
/// Kafka's `ControlRecordType.KRAFT_VOTERS`: a Raft configuration change.
pub const CONTROL_KRAFT_VOTERS: i16 = 6;
/// Most bytes of data one of Raft's own entries may carry (a configuration change is a
/// few dozen bytes; the bound keeps a decoded record small).
pub const OWN_ENTRY_BYTES_MAX: usize = 1 << 20;

/// Why bytes could not be turned into what they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

fn entry_type_code(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn entry_type_of(code: u8) -> Option<EntryType> {
    match code {
        0 => Some(EntryType::EntryNormal),
        1 => Some(EntryType::EntryConfChange),
        2 => Some(EntryType::EntryConfChangeV2),
        _ => None,
    }
}

/// The control batch holding Raft's own entry `e`, at `base` in leader epoch `epoch`.
pub fn control_batch(e: &Entry, base: i64, epoch: i32) -> Result<Vec<u8>, Malformed> {
    if e.data.len() > OWN_ENTRY_BYTES_MAX {
        return Err(Malformed(format!(
            "a Raft entry of {} bytes (at most {OWN_ENTRY_BYTES_MAX})",
            e.data.len()
        )));
    }
    let kind = match e.get_entry_type() {
        EntryType::EntryNormal => CONTROL_LEADER_CHANGE,
        _ => CONTROL_KRAFT_VOTERS,
    };
    let mut value = Vec::with_capacity(1 + e.data.len());
    value.push(entry_type_code(e.get_entry_type()));
    value.extend_from_slice(&e.data);
    let mut b = control::one_record_batch(
        kind,
        &value,
        ControlHeader {
            transactional: false,
            producer_id: -1,
            producer_epoch: -1,
            timestamp: -1,
        },
    );
    hdr::set_offset_and_epoch(&mut b, base, epoch);
    Ok(b)
}

/// The bytes entry `e` is stored as at `base` in leader epoch `epoch`: a Kafka batch stamped
/// with both (neither is covered by its CRC, so the batch stays valid), or the control
/// batch of one of Raft's own entries. A Kafka batch whose header does not parse or whose
/// record count differs from the entry's is refused (the leader validated it: a mismatch
/// is a bug or damage, never written). A batch the leader already stamped with both (it
/// does before proposing, so that followers store what they receive) is returned as it is,
/// sharing `e.data`'s memory, so neither a leader nor a follower copies it here. (On a
/// follower that memory is the received frame's buffer, which stays allocated while any
/// batch of it is cached: the batch cache's byte count can understate what it holds when
/// one batch of a large frame outlives the others.)
pub fn stored_bytes(e: &Entry, base: i64, epoch: i32) -> Result<Bytes, Malformed> {
    let Some(records) = batch_records(e) else {
        return control_batch(e, base, epoch).map(Bytes::from);
    };
    let h = Header::parse(&e.data)
        .filter(|h| h.size == e.data.len())
        .ok_or_else(|| Malformed(format!("entry {}: not one whole batch", e.index)))?;
    // A data entry holds a client's batch or a transaction marker (a control batch of a
    // producer: the coordinator's), never a control batch of Raft's own.
    let own = h.is_control() && !sluice_storage::txn::is_marker_header(&h);
    if own || h.last_offset_delta.checked_add(1) != i32::try_from(records).ok() {
        return Err(Malformed(format!(
            "entry {}: a batch of {} offsets (control {}), the entry says {records} records",
            e.index,
            i64::from(h.last_offset_delta) + 1,
            h.is_control()
        )));
    }
    // An entry of term 1 carrying epoch 0 is a batch of an adopted one-replica log (see
    // `fetched`; Raft's leaders stamp their term, never 0): it keeps epoch 0, so every
    // replica's leader-epoch history says what the original's does.
    let epoch = if epoch == 1 && h.leader_epoch == 0 {
        0
    } else {
        epoch
    };
    if h.base_offset == base && h.leader_epoch == epoch {
        return Ok(e.data.clone());
    }
    let mut b = e.data.to_vec();
    hdr::set_offset_and_epoch(&mut b, base, epoch);
    Ok(b.into())
}

/// One stored batch (a whole batch as the partition log returns it) as a fetch answer: its
/// offsets and term, and for a control batch of Raft's own the Raft entry it holds (a
/// transaction marker is a control batch too, but a data entry like any produced batch).
pub fn fetched(batch: Bytes) -> Result<FetchedBatch, Malformed> {
    let h = Header::parse(&batch)
        .filter(|h| h.size == batch.len())
        .ok_or_else(|| Malformed(format!("{} bytes are not one whole batch", batch.len())))?;
    // Epoch 0 is read as term 1: Raft never writes an entry of term 0 (its first leader
    // is elected in term 1), so only the batches a one-replica partition log wrote before
    // its group adopted it carry it (`ReplicaStore::adopt`), and raft-rs must not see term
    // 0 at an index (it answers 0 for indexes outside its log, so a follower would take a
    // term-0 entry it lacks as matching).
    let term = u64::try_from(h.leader_epoch)
        .map_err(|_| Malformed(format!("batch at {} without a leader epoch", h.base_offset)))?
        .max(1);
    let records = u32::try_from(i64::from(h.last_offset_delta) + 1)
        .map_err(|_| Malformed(format!("batch at {}: bad offset delta", h.base_offset)))?;
    if !h.is_control() || sluice_storage::txn::is_marker_header(&h) {
        return Ok(FetchedBatch {
            base: h.base_offset,
            term,
            records,
            bytes: batch,
            raft_entry: None,
        });
    }
    let (t, data) = own_entry(&batch, &h)?;
    Ok(FetchedBatch {
        base: h.base_offset,
        term,
        records,
        bytes: data,
        raft_entry: Some(t),
    })
}

/// The Raft entry type and data of a control batch written by [`control_batch`].
fn own_entry(batch: &Bytes, h: &Header) -> Result<(EntryType, Bytes), Malformed> {
    let bad = |why: &str| Malformed(format!("control batch at {}: {why}", h.base_offset));
    let (kind, value) = control::one_record(batch, h).map_err(bad)?;
    if kind != CONTROL_LEADER_CHANGE && kind != CONTROL_KRAFT_VOTERS {
        return Err(bad("not a Raft entry"));
    }
    if value.is_empty() {
        return Err(bad("value"));
    }
    let t = entry_type_of(batch[value.start]).ok_or_else(|| bad("entry type"))?;
    Ok((t, batch.slice(value.start + 1..value.end)))
}

/// Test and tool helpers: valid v2 batches.
pub mod testing {
    use super::*;

    /// A valid, uncompressed v2 batch of `count` records with the given values (as a client
    /// sends it: base offset 0, leader epoch -1, no producer id).
    pub fn kafka_batch(values: &[&[u8]], timestamp: i64) -> Vec<u8> {
        assert!(!values.is_empty());
        let mut records = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let mut body = vec![0u8];
            put_varint(&mut body, 0);
            put_varint(&mut body, i as i64);
            put_varint(&mut body, -1); // null key
            put_varint(&mut body, v.len() as i64);
            body.extend_from_slice(v);
            put_varint(&mut body, 0);
            put_varint(&mut records, body.len() as i64);
            records.extend_from_slice(&body);
        }
        let mut b = vec![0u8; HEADER_BYTES];
        b.extend_from_slice(&records);
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[hdr::OFF_LENGTH..hdr::OFF_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        b[hdr::OFF_LEADER_EPOCH..hdr::OFF_LEADER_EPOCH + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[hdr::OFF_MAGIC] = 2;
        let n = values.len() as i32;
        b[hdr::OFF_LAST_OFFSET_DELTA..hdr::OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&(n - 1).to_be_bytes());
        for off in [hdr::OFF_BASE_TIMESTAMP, hdr::OFF_MAX_TIMESTAMP] {
            b[off..off + 8].copy_from_slice(&timestamp.to_be_bytes());
        }
        b[hdr::OFF_PRODUCER_ID..hdr::OFF_PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
        b[hdr::OFF_PRODUCER_EPOCH..hdr::OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&(-1i16).to_be_bytes());
        b[hdr::OFF_BASE_SEQUENCE..hdr::OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&(-1i32).to_be_bytes());
        b[hdr::OFF_RECORDS_COUNT..hdr::OFF_RECORDS_COUNT + 4].copy_from_slice(&n.to_be_bytes());
        let crc = crc32c::crc32c(&b[hdr::OFF_ATTRIBUTES..]);
        b[hdr::OFF_CRC..hdr::OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_raft::log::records_context;

    #[test]
    fn own_entries_round_trip_through_control_batches() {
        let log_start = sluice_raft::log_start_data(42);
        for (t, data) in [
            (EntryType::EntryNormal, &b""[..]),
            (EntryType::EntryConfChangeV2, &b"\x08\x01\x10\x02"[..]),
            // A DeleteRecords' log-start entry: recovery reads its offset back.
            (EntryType::EntryNormal, &log_start[..]),
        ] {
            let mut e = Entry {
                index: 7,
                term: 3,
                data: Bytes::copy_from_slice(data),
                ..Default::default()
            };
            e.set_entry_type(t);
            let b = stored_bytes(&e, 40, 3).unwrap();
            let h = Header::parse(&b).unwrap();
            assert!(h.is_control());
            h.verify(&b).unwrap();
            assert_eq!((h.base_offset, h.leader_epoch, h.records_count), (40, 3, 1));
            let f = fetched(b).unwrap();
            assert_eq!((f.base, f.term, f.records), (40, 3, 1));
            assert_eq!(f.raft_entry, Some(t));
            assert_eq!(&f.bytes[..], data);
            let asked = (data == &log_start[..]).then_some(42);
            assert_eq!(sluice_raft::log_start_of_data(&f.bytes), asked);
        }
    }

    #[test]
    fn kafka_batches_are_stamped_and_mismatches_refused() {
        let raw = Bytes::from(testing::kafka_batch(&[b"a", b"bc"], 5));
        let e = Entry {
            index: 2,
            term: 9,
            data: raw.clone(),
            context: records_context(2),
            ..Default::default()
        };
        let b = stored_bytes(&e, 100, 9).unwrap();
        let h = Header::parse(&b).unwrap();
        h.verify(&b).unwrap();
        assert_eq!((h.base_offset, h.leader_epoch), (100, 9));
        assert_eq!(b[hdr::OFF_MAGIC..], raw[hdr::OFF_MAGIC..]);
        let f = fetched(b.clone()).unwrap();
        assert_eq!((f.records, f.raft_entry), (2, None));
        // Stamped already (as a leader proposes it): the same memory, not a copy.
        let stamped = Entry {
            data: b.clone(),
            ..e.clone()
        };
        let again = stored_bytes(&stamped, 100, 9).unwrap();
        assert_eq!(again.as_ptr(), b.as_ptr());
        // Stamped for another place: copied and restamped.
        let moved = stored_bytes(&stamped, 200, 9).unwrap();
        assert_ne!(moved.as_ptr(), b.as_ptr());
        assert_eq!(Header::parse(&moved).unwrap().base_offset, 200);
        let wrong = Entry {
            context: records_context(3),
            ..e.clone()
        };
        assert!(stored_bytes(&wrong, 100, 9).is_err());
        let torn = Entry {
            data: raw.slice(..raw.len() - 1),
            ..e
        };
        assert!(stored_bytes(&torn, 100, 9).is_err());
    }

    #[test]
    fn an_adopted_batch_keeps_its_epoch_0_at_term_1() {
        let mut raw = testing::kafka_batch(&[b"a"], 5);
        hdr::set_offset_and_epoch(&mut raw, 7, 0);
        let raw = Bytes::from(raw);
        let f = fetched(raw.clone()).unwrap();
        assert_eq!(f.term, 1, "epoch 0 reads as term 1");
        let e = Entry {
            index: 8,
            term: 1,
            data: raw.clone(),
            context: records_context(1),
            ..Default::default()
        };
        // Stored as it is on every replica (not restamped 1): the same epoch history.
        let b = stored_bytes(&e, 7, 1).unwrap();
        assert_eq!(b.as_ptr(), raw.as_ptr());
        let moved = stored_bytes(&e, 9, 1).unwrap();
        let h = Header::parse(&moved).unwrap();
        assert_eq!((h.base_offset, h.leader_epoch), (9, 0));
        // Any later term is stamped as usual.
        let h = Header::parse(&stored_bytes(&Entry { term: 2, ..e }, 7, 2).unwrap()).unwrap();
        assert_eq!(h.leader_epoch, 2);
    }

    #[test]
    fn a_transaction_marker_is_a_data_entry_not_one_of_rafts_own() {
        let marker = sluice_storage::txn::Marker {
            commit: true,
            coordinator_epoch: 4,
        };
        let raw = Bytes::from(sluice_storage::txn::marker_batch(11, 2, marker, 5));
        let e = Entry {
            index: 3,
            term: 2,
            data: raw,
            context: records_context(1),
            ..Default::default()
        };
        let b = stored_bytes(&e, 20, 2).unwrap();
        let h = Header::parse(&b).unwrap();
        assert!(h.is_control() && h.is_transactional());
        assert_eq!((h.base_offset, h.producer_id), (20, 11));
        let f = fetched(b).unwrap();
        assert_eq!((f.base, f.records, f.raft_entry), (20, 1, None));
        // Raft's own control batches still are not data entries.
        let own = control_batch(&Entry::default(), 0, 1).unwrap();
        let as_data = Entry {
            data: own.into(),
            context: records_context(1),
            ..e
        };
        assert!(stored_bytes(&as_data, 20, 2).is_err());
    }
}
