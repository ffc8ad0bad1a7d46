//! Log compaction's decisions, sans-IO: which records of a compacted log's batches stay.
//!
//! The cleaner (`PartitionLog::compact`) works in two passes over the cleanable segments
//! (closed, durable, below the high watermark and the last stable offset, older than
//! `min.compaction.lag.ms`): the first records each key's latest offset in an [`OffsetMap`]
//! ([`map_batch`]), the second rewrites each batch with only the records that are still
//! their key's latest ([`clean_batch`]). Rules, as Kafka's cleaner applies them:
//!
//! - A record stays when no later record of its key is in the map. Records past the cleaned
//!   range are never looked at, and the map covers the range from its start, so "a later
//!   record exists" is all the map ever claims: nothing newest for its key is removed.
//! - A tombstone (null value) that is its key's latest stays for `delete.retention.ms` after
//!   the cleaner first kept it, so consumers reading the log from the start in that time see
//!   the deletion; after that it goes too. The time is KIP-534's delete horizon: the pass
//!   that first keeps a batch's tombstones writes now + `delete.retention.ms` into the batch
//!   (attributes bit 6, baseTimestamp), so it survives restarts and does not depend on the
//!   producer's clock (a tombstone with an old CreateTime is not removed at once).
//! - Records without a key (written before the topic became compacted) go, as in Kafka.
//! - Control batches (transaction markers, Raft's own entries) stay whole. A transactional
//!   batch that was aborted loses all its records and adds nothing to the map (its records
//!   never happened for a read_committed consumer, so they must not hide older values).
//!
//! Invariants: **a batch is never removed, only emptied**, and its base offset,
//! lastOffsetDelta, producer fields, epoch and record timestamps stay ([`sluice_codec::records`]).
//! A replicated log's Raft index is the ordinal of its batch, and producer state and the
//! leader-epoch history are read from batch headers, so all three survive cleaning; a
//! consumer moves past an emptied batch by its lastOffsetDelta. Kept records' bytes are
//! copied unchanged. The map is bounded ([`OffsetMap::with_capacity`]); a range it cannot
//! hold is cleaned up to where it filled.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use sluice_codec::records::{parse_records, rebuild_batch, records_section, RawRecord};

use crate::hdr::Header;

/// Bytes the cleaner's map costs per key (hash, offset and the table's overhead), for
/// sizing it from a memory budget.
pub const OFFSET_MAP_ENTRY_BYTES: usize = 40;

/// Each key's latest offset in the range mapped so far. Keys are held as 128-bit hashes
/// (two independent SipHash values), as Kafka's cleaner holds MD5 digests: a collision,
/// which would make one key's record hide another's, needs about 2^64 keys.
#[derive(Debug)]
pub struct OffsetMap {
    latest: HashMap<u128, i64>,
    capacity: usize,
}

fn key_hash(key: &[u8]) -> u128 {
    let half = |seed: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

impl OffsetMap {
    /// A map of at most `capacity` keys.
    pub fn with_capacity(capacity: usize) -> OffsetMap {
        OffsetMap {
            latest: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Room for `n` more keys (a batch's records may all be new).
    pub fn has_room(&self, n: usize) -> bool {
        self.latest.len().saturating_add(n) <= self.capacity
    }

    fn note(&mut self, key: &[u8], offset: i64) {
        let e = self.latest.entry(key_hash(key)).or_insert(offset);
        *e = (*e).max(offset);
    }

    /// The latest offset of `key` in the mapped range.
    pub fn latest(&self, key: &[u8]) -> Option<i64> {
        self.latest.get(&key_hash(key)).copied()
    }
}

/// Why a batch could not be read: the cleaner leaves such a log alone and says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

fn records(batch: &[u8]) -> Result<bytes::Bytes, Unreadable> {
    records_section(batch).map_err(|e| Unreadable(e.to_string()))
}

/// Maps `batch` (at `header`): every keyed record's offset, unless it is a control batch or
/// `aborted`. Returns `Ok(false)` without mapping anything when the map has no room for
/// all its records: the mapped range ends before this batch.
pub fn map_batch(
    map: &mut OffsetMap,
    header: &Header,
    batch: &[u8],
    aborted: bool,
) -> Result<bool, Unreadable> {
    if header.is_control() || aborted || header.records_count <= 0 {
        return Ok(true);
    }
    if !map.has_room(header.records_count as usize) {
        return Ok(false);
    }
    let raw = records(batch)?;
    let recs = parse_records(&raw).map_err(|e| Unreadable(e.to_string()))?;
    for r in &recs {
        if let Some(k) = r.key {
            map.note(k, header.base_offset + i64::from(r.offset_delta));
        }
    }
    Ok(true)
}

/// What cleaning a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// The rewritten batch; `None` when it stays as it is.
    pub batch: Option<Vec<u8>>,
    pub records_removed: usize,
    /// The delete horizon of the tombstones the batch still holds: a pass at or after it
    /// has work even when nothing else changed.
    pub delete_horizon: Option<i64>,
}

/// When the pass runs, for the tombstones' delete horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub now_ms: i64,
    /// `delete.retention.ms`.
    pub delete_retention_ms: i64,
}

/// Cleans `batch` (at `header`) against `map`: the records that stay, by the rules above.
pub fn clean_batch(
    map: &OffsetMap,
    header: &Header,
    batch: &[u8],
    aborted: bool,
    clock: Clock,
) -> Result<Cleaned, Unreadable> {
    let unchanged = Cleaned {
        batch: None,
        records_removed: 0,
        delete_horizon: None,
    };
    if header.is_control() || header.records_count <= 0 {
        return Ok(unchanged);
    }
    let horizon = header.delete_horizon();
    let tombstones_expire = horizon.is_some_and(|h| clock.now_ms >= h);
    let raw = records(batch)?;
    let recs = parse_records(&raw).map_err(|e| Unreadable(e.to_string()))?;
    let stays = |r: &RawRecord<'_>| {
        let Some(key) = r.key else { return false };
        if aborted {
            return false;
        }
        let offset = header.base_offset + i64::from(r.offset_delta);
        let newest = map.latest(key).is_none_or(|latest| latest <= offset);
        newest && !(r.tombstone && tombstones_expire)
    };
    let kept: Vec<RawRecord<'_>> = recs.iter().filter(|r| stays(r)).copied().collect();
    let keeps_tombstone = kept.iter().any(|r| r.tombstone);
    let new_horizon = (keeps_tombstone && horizon.is_none())
        .then(|| clock.now_ms.saturating_add(clock.delete_retention_ms));
    let delete_horizon = horizon.or(new_horizon).filter(|_| keeps_tombstone);
    if kept.len() == recs.len() && new_horizon.is_none() {
        return Ok(Cleaned {
            delete_horizon,
            ..unchanged
        });
    }
    let rebuilt =
        rebuild_batch(batch, &kept, new_horizon).map_err(|e| Unreadable(e.to_string()))?;
    Ok(Cleaned {
        batch: Some(rebuilt),
        records_removed: recs.len() - kept.len(),
        delete_horizon,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sluice_codec::kafka_protocol::records::{Compression, RecordBatchDecoder};

    /// One batch at `base` of (key, value) records; `None` value: a tombstone.
    fn batch(base: i64, kv: &[(Option<&str>, Option<&str>)], c: Compression) -> Vec<u8> {
        crate::compact_tests::records_batch(base, kv, 1_000 + base, c)
    }

    fn kv(b: &[u8]) -> Vec<(i64, Option<String>, Option<String>)> {
        let s = |x: &Option<Bytes>| x.as_ref().map(|b| String::from_utf8(b.to_vec()).unwrap());
        RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(b))
            .unwrap()
            .records
            .iter()
            .map(|r| (r.offset, s(&r.key), s(&r.value)))
            .collect()
    }

    #[test]
    fn the_latest_record_per_key_stays_and_batches_keep_their_range() {
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let b0 = batch(
                0,
                &[
                    (Some("a"), Some("1")),
                    (Some("b"), Some("1")),
                    (None, Some("keyless")),
                ],
                c,
            );
            let b1 = batch(
                3,
                &[(Some("a"), Some("2")), (Some("c"), None), (Some("d"), None)],
                c,
            );
            let b2 = batch(6, &[(Some("a"), Some("3")), (Some("d"), Some("4"))], c);
            let batches = [&b0, &b1, &b2];
            let mut map = OffsetMap::with_capacity(100);
            for b in batches {
                let h = Header::parse(b).unwrap();
                assert_eq!(map_batch(&mut map, &h, b, false), Ok(true));
            }
            assert_eq!(map.len(), 4);
            assert_eq!(map.latest(b"a"), Some(6));
            // Tombstones kept (first pass): c's stays; d's is hidden by d=4 later.
            let day = 86_400_000;
            let first = Clock {
                now_ms: 5_000,
                delete_retention_ms: day,
            };
            let h0 = Header::parse(&b0).unwrap();
            let c0 = clean_batch(&map, &h0, &b0, false, first).unwrap();
            assert_eq!(c0.records_removed, 2, "a=1 superseded, the keyless record");
            assert_eq!(c0.delete_horizon, None, "no tombstone");
            let r0 = c0.batch.unwrap();
            assert_eq!(kv(&r0), vec![(1, Some("b".into()), Some("1".into()))]);
            let h = Header::parse(&r0).unwrap();
            assert_eq!((h.base_offset, h.last_offset()), (0, 2), "{c:?}");
            assert_eq!((h.delete_horizon(), h.base_timestamp), (None, 1_000));
            let h1 = Header::parse(&b1).unwrap();
            let c1 = clean_batch(&map, &h1, &b1, false, first).unwrap();
            assert_eq!(c1.delete_horizon, Some(5_000 + day));
            let r1 = c1.batch.unwrap();
            assert_eq!(kv(&r1), vec![(4, Some("c".into()), None)]);
            let h1 = Header::parse(&r1).unwrap();
            assert_eq!(
                h1.delete_horizon(),
                Some(5_000 + day),
                "KIP-534 horizon set"
            );
            // Before the horizon the tombstone stays and the batch is left alone, even if
            // its records' own timestamps are old.
            let before = Clock {
                now_ms: 5_000 + day - 1,
                ..first
            };
            let again = clean_batch(&map, &h1, &r1, false, before).unwrap();
            assert_eq!(
                (again.batch, again.delete_horizon),
                (None, Some(5_000 + day))
            );
            // At the horizon: the tombstone goes and the batch is emptied, its range kept.
            let at = Clock {
                now_ms: 5_000 + day,
                ..first
            };
            let c1 = clean_batch(&map, &h1, &r1, false, at).unwrap();
            assert_eq!(c1.delete_horizon, None);
            let emptied = c1.batch.unwrap();
            let h = Header::parse(&emptied).unwrap();
            assert_eq!((h.records_count, h.base_offset, h.last_offset()), (0, 3, 5));
            assert!(sluice_codec::batch::validate_batch(&emptied).is_ok());
            // The newest batch is untouched.
            let h2 = Header::parse(&b2).unwrap();
            assert_eq!(
                clean_batch(&map, &h2, &b2, false, at).unwrap(),
                Cleaned {
                    batch: None,
                    records_removed: 0,
                    delete_horizon: None,
                }
            );
        }
    }

    const CLOCK: Clock = Clock {
        now_ms: 0,
        delete_retention_ms: 0,
    };

    #[test]
    fn an_aborted_batch_is_emptied_and_hides_nothing() {
        let committed = batch(0, &[(Some("a"), Some("kept"))], Compression::None);
        let aborted = batch(1, &[(Some("a"), Some("aborted"))], Compression::None);
        let mut map = OffsetMap::with_capacity(10);
        let (hc, ha) = (
            Header::parse(&committed).unwrap(),
            Header::parse(&aborted).unwrap(),
        );
        map_batch(&mut map, &hc, &committed, false).unwrap();
        map_batch(&mut map, &ha, &aborted, true).unwrap();
        assert_eq!(map.latest(b"a"), Some(0));
        let c = clean_batch(&map, &hc, &committed, false, CLOCK).unwrap();
        assert_eq!(c.batch, None, "the committed value stays");
        let a = clean_batch(&map, &ha, &aborted, true, CLOCK).unwrap();
        assert_eq!(a.records_removed, 1);
        assert_eq!(Header::parse(&a.batch.unwrap()).unwrap().records_count, 0);
    }

    #[test]
    fn a_full_map_ends_the_range_before_the_batch_that_does_not_fit() {
        let b0 = batch(
            0,
            &[(Some("a"), Some("1")), (Some("b"), Some("1"))],
            Compression::None,
        );
        let b1 = batch(
            2,
            &[(Some("c"), Some("1")), (Some("d"), Some("1"))],
            Compression::None,
        );
        let mut map = OffsetMap::with_capacity(3);
        let h0 = Header::parse(&b0).unwrap();
        let h1 = Header::parse(&b1).unwrap();
        assert_eq!(map_batch(&mut map, &h0, &b0, false), Ok(true));
        assert_eq!(map_batch(&mut map, &h1, &b1, false), Ok(false));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn damaged_records_are_unreadable_not_a_panic() {
        let mut b = batch(0, &[(Some("a"), Some("1"))], Compression::None);
        let n = b.len();
        b[n - 3] = 0x7e; // the value length: 63 bytes, far past the record
        let h = Header::parse(&b).unwrap();
        let mut map = OffsetMap::with_capacity(10);
        assert!(map_batch(&mut map, &h, &b, false).is_err());
        assert!(clean_batch(&map, &h, &b, false, CLOCK).is_err());
    }
}
