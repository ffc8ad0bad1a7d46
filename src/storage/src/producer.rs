//! Idempotent-producer state of one partition: per producer id, its epoch, the last five
//! batches' sequence ranges and its last batch's timestamp, so retries are answered with the
//! original offsets and gaps are refused (Kafka's ProducerStateManager rules).
//!
//! Invariants: a producer's state leaves the table only by expiry (`producer.id.expiration.ms`
//! after its last batch's timestamp, checked periodically and when the log is opened) or by
//! truncation of the log under it, never because other producers arrived: when the table is
//! full, a batch of an unknown producer id is refused (retriably) instead, so a flood of
//! fake producer ids cannot make a live producer's retry be stored twice.

use std::collections::{HashMap, VecDeque};

use crate::error::{Result, StorageError};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` ceiling for idempotence is 5).
pub const PRODUCER_BATCHES_MAX: usize = 5;
/// Producers remembered per partition (about 200 bytes each). When it is full a new
/// producer id's batch is refused until expiry frees room; known producers go on.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 16_384;
/// Kafka's `producer.id.expiration.ms` default: one day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

/// Epoch value meaning "none yet".
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// A batch timestamp meaning "none" (Kafka's `RecordBatch.NO_TIMESTAMP`).
pub const NO_TIMESTAMP: i64 = -1;

/// Layout of the snapshot body [`ProducerState::encode`] writes (version 1 added each
/// producer's last timestamp; version 0 snapshots are still read).
pub const SNAPSHOT_BODY_VERSION: i64 = 1;

/// One remembered batch of a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSeq {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// What one producer id has written to this partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchSeq>,
    /// Max timestamp of its newest batch (the append time under LogAppendTime), as Kafka's
    /// `lastTimestamp`: expiry counts from it. [`NO_TIMESTAMP`] until the first expiry
    /// check stamps it (a batch without timestamps, or state from a version-0 snapshot).
    pub last_timestamp: i64,
}

/// Decision for an idempotent batch before it is appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// Append it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets, write nothing.
    Duplicate { first_offset: i64, last_offset: i64 },
}

/// Per-partition producer table. Owned by the partition's shard.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct ProducerState {
    producers: HashMap<i64, ProducerEntry>,
}

/// The sequence of a batch's last record: `first_seq + last_offset_delta`, wrapping past
/// `i32::MAX` to 0.
pub fn last_seq_of(first_seq: i32, last_offset_delta: i32) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as Kafka's DefaultRecordBatch does.
    let sum = first_seq as i64 + last_offset_delta as i64;
    if sum > i32::MAX as i64 {
        (sum - i32::MAX as i64 - 1) as i32
    } else {
        sum as i32
    }
}

/// Whether a batch starting at `next_seq` directly follows one ending at `last_seq` (Kafka's
/// `inSequence`, wrapping at `i32::MAX`).
pub fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

impl ProducerState {
    /// Checks an idempotent batch (`producer_id >= 0`) against the table without changing it.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_offset_delta: i32,
    ) -> Result<SeqCheck> {
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired or went with retention): any
            // sequence goes, as in Kafka 4's ProducerAppendInfo (no UNKNOWN_PRODUCER_ID on
            // produce since KIP-360). A producer whose state expired therefore gets its next
            // batch appended whatever its sequence, and a retry of a batch it sent before the
            // expiry is stored again: Kafka has the same window, which is why the expiry is
            // long (a day by default).
            if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX {
                return Err(StorageError::ProducersFull {
                    producer_id,
                    max: PRODUCERS_PER_PARTITION_MAX,
                });
            }
            return Ok(SeqCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts sequences at 0.
            if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SeqCheck::Append);
        }
        let last_seq = last_seq_of(first_seq, last_offset_delta);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SeqCheck::Duplicate {
                first_offset: b.first_offset,
                last_offset: b.last_offset,
            });
        }
        match entry.batches.back() {
            Some(newest) if !in_sequence(newest.last_seq, first_seq) => {
                Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected: newest.last_seq.wrapping_add(1),
                    got: first_seq,
                })
            }
            _ => Ok(SeqCheck::Append),
        }
    }

    /// Records an appended (or replayed) batch whose max timestamp is `timestamp`.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        first_offset: i64,
        last_offset: i64,
        timestamp: i64,
    ) {
        if producer_id < 0 {
            return;
        }
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= 2 * PRODUCERS_PER_PARTITION_MAX
        {
            // Only recovery gets past the limit: an append was checked first, and `check`
            // refuses a new producer at the limit. The log says each producer was admitted, so
            // older entries had expired by then. Trimming in bulk when the table reaches twice
            // the limit (and once after the replay, `trim_to_limit`) keeps the replay linear:
            // trimming one entry per new producer would scan the table every time.
            self.trim_to(PRODUCERS_PER_PARTITION_MAX);
        }
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_MAX),
                last_timestamp: timestamp,
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_MAX {
            entry.batches.pop_front();
        }
        let delta = (last_offset - first_offset) as i32;
        entry.batches.push_back(BatchSeq {
            first_seq,
            last_seq: last_seq_of(first_seq, delta),
            first_offset,
            last_offset,
        });
        entry.last_timestamp = timestamp;
        debug_assert!(self.producers.len() <= 2 * PRODUCERS_PER_PARTITION_MAX);
    }

    /// After a replay: back within [`PRODUCERS_PER_PARTITION_MAX`], keeping the newest.
    pub fn trim_to_limit(&mut self) {
        self.trim_to(PRODUCERS_PER_PARTITION_MAX);
    }

    /// Keeps the `keep` producers with the newest last timestamps (linear time).
    fn trim_to(&mut self, keep: usize) {
        let excess = self.producers.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        let mut by_age: Vec<(i64, i64)> = self
            .producers
            .iter()
            .map(|(&pid, e)| (e.last_timestamp, pid))
            .collect();
        by_age.select_nth_unstable(excess - 1);
        for &(_, pid) in &by_age[..excess] {
            self.producers.remove(&pid);
        }
    }

    /// Forgets producers whose last batch is `expiration_ms` or more older than `now_ms`
    /// (Kafka's `producer.id.expiration.ms` rule); returns how many. A producer without a
    /// timestamp is stamped `now_ms` instead, so it expires a whole period later.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            if e.last_timestamp == NO_TIMESTAMP {
                e.last_timestamp = now_ms;
            }
            now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Drops everything at or past `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < offset);
            !e.batches.is_empty()
        });
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The epoch currently known for a producer.
    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    /// Serializes the table (snapshot file body, [`SNAPSHOT_BODY_VERSION`]). Layout per
    /// producer: pid i64, epoch i16, last timestamp i64, count u8, then count × (first_seq
    /// i32, last_seq i32, first i64, last i64). Version 0 had no last timestamp.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[&pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
    }

    /// Parses what [`ProducerState::encode`] wrote in body layout `version`; `None` if it
    /// is malformed or of an unknown version.
    pub fn decode(mut buf: &[u8], version: i64) -> Option<ProducerState> {
        if !(0..=SNAPSHOT_BODY_VERSION).contains(&version) {
            return None;
        }
        fn take<const N: usize>(buf: &mut &[u8]) -> Option<[u8; N]> {
            let (head, rest) = buf.split_first_chunk::<N>()?;
            *buf = rest;
            Some(*head)
        }
        let count = u32::from_be_bytes(take(&mut buf)?) as usize;
        if count > PRODUCERS_PER_PARTITION_MAX {
            return None;
        }
        let mut producers = HashMap::with_capacity(count);
        for _ in 0..count {
            let pid = i64::from_be_bytes(take(&mut buf)?);
            let epoch = i16::from_be_bytes(take(&mut buf)?);
            let last_timestamp = if version >= 1 {
                i64::from_be_bytes(take(&mut buf)?)
            } else {
                NO_TIMESTAMP
            };
            let n = take::<1>(&mut buf)?[0] as usize;
            if n > PRODUCER_BATCHES_MAX {
                return None;
            }
            let mut batches = VecDeque::with_capacity(PRODUCER_BATCHES_MAX);
            for _ in 0..n {
                batches.push_back(BatchSeq {
                    first_seq: i32::from_be_bytes(take(&mut buf)?),
                    last_seq: i32::from_be_bytes(take(&mut buf)?),
                    first_offset: i64::from_be_bytes(take(&mut buf)?),
                    last_offset: i64::from_be_bytes(take(&mut buf)?),
                });
            }
            if batches.is_empty() || producers.contains_key(&pid) {
                return None;
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        buf.is_empty().then_some(ProducerState { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_answer_with_original_offsets() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(7, 0, 0, 4).unwrap(), SeqCheck::Append);
        s.record(7, 0, 0, 100, 104, 1_000);
        assert_eq!(s.check(7, 0, 5, 2).unwrap(), SeqCheck::Append);
        s.record(7, 0, 5, 105, 107, 1_000);
        assert_eq!(
            s.check(7, 0, 0, 4).unwrap(),
            SeqCheck::Duplicate {
                first_offset: 100,
                last_offset: 104
            }
        );
        assert!(matches!(
            s.check(7, 0, 9, 0),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            s.check(7, -1, 8, 0),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        assert_eq!(s.check(7, 1, 0, 0).unwrap(), SeqCheck::Append);
        assert!(s.check(7, 1, 3, 0).is_err());
    }

    #[test]
    fn remembers_only_five_batches_and_round_trips() {
        let mut s = ProducerState::default();
        for i in 0..8 {
            s.record(1, 3, i, i as i64, i as i64, 1_000 + i as i64);
        }
        assert_eq!(s.check(1, 3, 0, 0).unwrap_err().kafka_error_code(), 45);
        assert!(matches!(
            s.check(1, 3, 7, 0).unwrap(),
            SeqCheck::Duplicate { .. }
        ));
        let mut buf = Vec::new();
        s.encode(&mut buf);
        assert_eq!(
            ProducerState::decode(&buf, SNAPSHOT_BODY_VERSION).unwrap(),
            s
        );
        assert!(ProducerState::decode(&buf[..buf.len() - 1], SNAPSHOT_BODY_VERSION).is_none());
        assert!(ProducerState::decode(&buf, SNAPSHOT_BODY_VERSION + 1).is_none());
    }

    #[test]
    fn version_0_snapshots_are_read_and_aged_from_the_first_check() {
        // pid 9, epoch 2, one batch (seq 0..=1 at offsets 10..=11), no timestamp.
        let mut v0 = 1u32.to_be_bytes().to_vec();
        v0.extend_from_slice(&9i64.to_be_bytes());
        v0.extend_from_slice(&2i16.to_be_bytes());
        v0.push(1);
        for v in [0i32, 1] {
            v0.extend_from_slice(&v.to_be_bytes());
        }
        for v in [10i64, 11] {
            v0.extend_from_slice(&v.to_be_bytes());
        }
        let mut s = ProducerState::decode(&v0, 0).unwrap();
        assert_eq!(s.epoch_of(9), Some(2));
        assert!(matches!(
            s.check(9, 2, 0, 1),
            Ok(SeqCheck::Duplicate { .. })
        ));
        assert_eq!(s.expire(5_000, 1_000), 0, "stamped, not expired");
        assert_eq!(s.expire(5_999, 1_000), 0);
        assert_eq!(s.expire(6_000, 1_000), 1);
    }

    #[test]
    fn producers_expire_by_their_last_timestamp() {
        let mut s = ProducerState::default();
        s.record(1, 0, 0, 0, 0, 1_000);
        s.record(2, 0, 0, 1, 1, 1_500);
        s.record(1, 0, 1, 2, 2, 2_000);
        // Kafka: expired once now - lastTimestamp >= producer.id.expiration.ms.
        assert_eq!(s.expire(2_499, 1_000), 0);
        assert_eq!(s.expire(2_500, 1_000), 1);
        assert_eq!(s.epoch_of(2), None);
        assert_eq!(s.epoch_of(1), Some(0));
        assert_eq!(s.expire(3_000, 1_000), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn a_full_table_refuses_new_producers_and_keeps_live_ones() {
        let mut s = ProducerState::default();
        s.record(0, 0, 0, 0, 4, 1_000);
        for pid in 1..PRODUCERS_PER_PARTITION_MAX as i64 {
            assert_eq!(s.check(pid, 0, 0, 0).unwrap(), SeqCheck::Append);
            s.record(pid, 0, 0, 4 + pid, 4 + pid, 2_000);
        }
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        // A new producer id is refused with a retriable code; nothing was evicted.
        let e = s.check(1_000_000, 0, 0, 0).unwrap_err();
        assert!(matches!(e, StorageError::ProducersFull { .. }));
        assert_eq!(e.kafka_error_code(), 19, "NOT_ENOUGH_REPLICAS");
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        // The oldest producer's retry is still a duplicate, and it may go on.
        assert_eq!(
            s.check(0, 0, 0, 4).unwrap(),
            SeqCheck::Duplicate {
                first_offset: 0,
                last_offset: 4
            }
        );
        assert_eq!(s.check(0, 0, 5, 0).unwrap(), SeqCheck::Append);
        // Expiry frees room for new producers.
        assert_eq!(s.expire(2_000, 1_000), 1);
        assert_eq!(s.check(1_000_000, 0, 0, 0).unwrap(), SeqCheck::Append);
    }

    #[test]
    fn replay_at_the_limit_forgets_the_oldest() {
        let mut s = ProducerState::default();
        for pid in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            s.record(pid, 0, 0, pid, pid, 10_000 + pid);
        }
        s.record(-5, 0, 0, 0, 0, 0);
        assert_eq!(
            s.len(),
            PRODUCERS_PER_PARTITION_MAX,
            "no producer id, no entry"
        );
        s.record(99_999, 0, 0, 20_000, 20_000, 30_000);
        // Replay may run past the limit; the end of the replay trims back to it.
        s.trim_to_limit();
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        assert_eq!(s.epoch_of(0), None, "the oldest went");
        assert_eq!(s.epoch_of(1), Some(0));
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(last_seq_of(i32::MAX, 1), 0);
        assert!(in_sequence(i32::MAX, 0));
    }

    #[test]
    fn a_replay_past_the_limit_trims_in_bulk_and_keeps_the_newest() {
        let mut s = ProducerState::default();
        let n = 3 * PRODUCERS_PER_PARTITION_MAX as i64;
        for pid in 0..n {
            s.record(pid, 0, 0, pid, pid, pid);
            assert!(s.len() <= 2 * PRODUCERS_PER_PARTITION_MAX);
        }
        s.trim_to_limit();
        assert_eq!(s.len(), PRODUCERS_PER_PARTITION_MAX);
        assert!(s.epoch_of(n - 1).is_some(), "the newest is kept");
        assert!(s
            .epoch_of(n - 1 - PRODUCERS_PER_PARTITION_MAX as i64)
            .is_none());
    }
}
