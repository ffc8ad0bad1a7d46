//! Idempotent-producer state of one partition: per producer id, its epoch, the last five
//! batches' sequence ranges and its last batch's timestamp, so retries are answered with the
//! original offsets and gaps are refused (Kafka's ProducerStateManager rules).
//!
//! Transactions: a producer's first transactional batch opens its transaction here (its
//! first offset is kept) and its marker (`txn`) closes it. The first offset of every open
//! transaction, and of every closed one whose marker is not yet below the high watermark,
//! bounds the last stable offset (LSO) that read_committed readers stop at.
//!
//! Invariants: a producer's state leaves the table only by expiry (`producer.id.expiration.ms`
//! after its last batch's timestamp, checked periodically and when the log is opened) or by
//! truncation of the log under it, never because other producers arrived: when the table is
//! full, a batch of an unknown producer id is refused (retriably) instead, so a flood of
//! fake producer ids cannot make a live producer's retry be stored twice.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::error::{Result, StorageError};
use crate::hdr::Header;
use crate::txn::{self, CompletedTxn, Marker};

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
/// producer's last timestamp, version 2 its open transaction and coordinator epoch and the
/// closed transactions not yet stable; older snapshots are still read).
pub const SNAPSHOT_BODY_VERSION: i64 = 2;

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
    /// The first offset of its transaction open in this partition.
    pub txn_first_offset: Option<i64>,
    /// The coordinator epoch of the last marker taken (-1: none): older ones are fenced.
    pub coordinator_epoch: i32,
}

/// One producer as DescribeProducers shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The sequence of its newest batch's last record; -1 when none is remembered.
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// -1 until a marker for it was taken.
    pub coordinator_epoch: i32,
    /// The first offset of its open transaction here; -1 when none is open.
    pub txn_start_offset: i64,
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
    /// Open transactions: first offset → producer id.
    open_txns: BTreeMap<i64, i64>,
    /// Closed transactions whose marker is not yet below the high watermark: first offset
    /// → (producer id, marker offset). Until it is, the outcome is not stable.
    undecided: BTreeMap<i64, (i64, i64)>,
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

    /// Checks a coordinator's batch (no sequence, see `PartitionLog::append_coordinator`):
    /// only the producer's epoch may not go back, and a new producer needs room.
    pub fn check_coordinator(&self, producer_id: i64, epoch: i16) -> Result<()> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(StorageError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: e.epoch,
            }),
            Some(_) => Ok(()),
            None if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX => {
                Err(StorageError::ProducersFull {
                    producer_id,
                    max: PRODUCERS_PER_PARTITION_MAX,
                })
            }
            None => Ok(()),
        }
    }

    /// Records an appended (or replayed) batch whose max timestamp is `timestamp`; a batch
    /// without a sequence (`first_seq` -1: a coordinator's) only moves the epoch and time.
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
                txn_first_offset: None,
                coordinator_epoch: -1,
            });
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_timestamp = timestamp;
        if first_seq < 0 {
            // A coordinator's batch (no sequence): nothing to deduplicate later against.
            return;
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
            let gone = self.producers.remove(&pid);
            if let Some(first) = gone.and_then(|e| e.txn_first_offset) {
                self.open_txns.remove(&first);
            }
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
            // A producer with a transaction open stays until its marker (Kafka's rule).
            e.txn_first_offset.is_some() || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        before - self.producers.len()
    }

    /// Drops everything at or past `offset` (the log was truncated there). A transaction
    /// whose marker was cut off is open again.
    pub fn truncate_from(&mut self, offset: i64) {
        self.open_txns.retain(|&first, _| first < offset);
        // Only a producer still in the table can take its transaction's marker again (one
        // dropped meanwhile would leave the transaction open for good).
        let reopened: Vec<(i64, i64)> = self
            .undecided
            .iter()
            .filter(|(&first, &(pid, marker))| {
                first < offset && marker >= offset && self.producers.contains_key(&pid)
            })
            .map(|(&first, &(pid, _))| (first, pid))
            .collect();
        self.undecided
            .retain(|&first, &mut (_, marker)| marker < offset && first < offset);
        for &(first, pid) in &reopened {
            self.open_txns.insert(first, pid);
        }
        let open = &self.open_txns;
        self.producers.retain(|&pid, e| {
            e.batches.retain(|b| b.last_offset < offset);
            e.txn_first_offset = e.txn_first_offset.filter(|&f| f < offset);
            if let Some(&(first, _)) = reopened.iter().find(|&&(_, p)| p == pid) {
                e.txn_first_offset = Some(first);
            }
            debug_assert!(e
                .txn_first_offset
                .is_none_or(|f| open.get(&f) == Some(&pid)));
            !e.batches.is_empty() || e.txn_first_offset.is_some()
        });
    }

    /// [`apply`](Self::apply) for a batch read back (recovery, a rebuild after a
    /// truncation): its marker, if it is one, is parsed from `batch`, its whole bytes. A
    /// marker that does not parse changes nothing: appends refuse such markers, so only
    /// damage can bring one here.
    pub fn apply_stored(&mut self, h: &Header, batch: &[u8]) -> Option<CompletedTxn> {
        if !txn::is_marker_header(h) {
            return self.apply(h, None);
        }
        let marker = txn::parse_marker(h, batch).ok().flatten()?;
        self.apply(h, Some(marker))
    }

    /// Applies a stored batch (appended, replicated, or read back): an idempotent or
    /// transactional data batch is recorded (a transactional one opens its producer's
    /// transaction); a transaction marker (`marker`, parsed by the caller) closes one and
    /// returns it.
    pub fn apply(&mut self, h: &Header, marker: Option<Marker>) -> Option<CompletedTxn> {
        if h.producer_id < 0 {
            return None;
        }
        if let Some(marker) = marker {
            return self.record_marker(
                h.producer_id,
                h.producer_epoch,
                marker,
                h.base_offset,
                h.max_timestamp,
            );
        }
        if h.is_control() {
            return None;
        }
        self.record(
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.base_offset,
            h.last_offset(),
            h.max_timestamp,
        );
        if h.is_transactional() {
            self.record_txn_batch(h.producer_id, h.base_offset);
        }
        None
    }

    /// The first offset of the oldest transaction still open (markers not yet written).
    pub fn first_open_offset(&self) -> Option<i64> {
        self.open_txns.keys().next().copied()
    }

    /// Whether the producer has a transaction open here.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// Refuses a batch that is not transactional from a producer with a transaction open
    /// here (Kafka's INVALID_TXN_STATE).
    pub fn check_txn(&self, producer_id: i64, transactional: bool) -> Result<()> {
        let open = self
            .producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some());
        if open && !transactional {
            return Err(StorageError::InvalidTxnState { producer_id });
        }
        Ok(())
    }

    /// After [`record`](Self::record) of a transactional batch at `first_offset`: opens the
    /// producer's transaction here if it has none open.
    pub fn record_txn_batch(&mut self, producer_id: i64, first_offset: i64) {
        let Some(e) = self.producers.get_mut(&producer_id) else {
            return;
        };
        if e.txn_first_offset.is_none() {
            e.txn_first_offset = Some(first_offset);
            let prev = self.open_txns.insert(first_offset, producer_id);
            assert!(prev.is_none(), "two transactions open at {first_offset}");
        }
    }

    /// Checks a marker before it is appended: an older producer epoch is
    /// INVALID_PRODUCER_EPOCH, an older coordinator epoch TRANSACTION_COORDINATOR_FENCED.
    pub fn check_marker(&self, producer_id: i64, epoch: i16, marker: Marker) -> Result<()> {
        let Some(e) = self.producers.get(&producer_id) else {
            return Ok(());
        };
        if epoch < e.epoch {
            return Err(StorageError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: e.epoch,
            });
        }
        if marker.coordinator_epoch < e.coordinator_epoch {
            return Err(StorageError::CoordinatorFenced {
                producer_id,
                coordinator_epoch: marker.coordinator_epoch,
                current: e.coordinator_epoch,
            });
        }
        Ok(())
    }

    /// Records an appended (or replayed) marker at `offset`: closes the producer's open
    /// transaction, if it has one here, and returns it. Until the high watermark passes the
    /// marker ([`advance_stable`](Self::advance_stable)) the transaction still holds the
    /// last stable offset back. A marker for a producer this partition does not know
    /// closes nothing and is not remembered.
    pub fn record_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        marker: Marker,
        offset: i64,
        timestamp: i64,
    ) -> Option<CompletedTxn> {
        let e = self.producers.get_mut(&producer_id)?;
        if epoch != e.epoch {
            // A bumped epoch restarts sequences (the coordinator fenced the producer).
            e.epoch = epoch;
            e.batches.clear();
        }
        e.coordinator_epoch = marker.coordinator_epoch;
        e.last_timestamp = timestamp;
        let first_offset = e.txn_first_offset.take()?;
        let removed = self.open_txns.remove(&first_offset);
        assert_eq!(
            removed,
            Some(producer_id),
            "open transaction index out of step"
        );
        self.undecided.insert(first_offset, (producer_id, offset));
        Some(CompletedTxn {
            producer_id,
            first_offset,
            last_offset: offset,
            aborted: !marker.commit,
        })
    }

    /// The high watermark reached `high_watermark`: transactions whose marker is below it
    /// are decided.
    pub fn advance_stable(&mut self, high_watermark: i64) {
        self.undecided
            .retain(|_, &mut (_, marker)| marker >= high_watermark);
    }

    /// The first offset of the oldest transaction not yet decided with the high watermark at
    /// `high_watermark` (open, or closed by a marker not below it): the last stable offset
    /// is the lower of it and the high watermark.
    pub fn first_unstable_offset(&self, high_watermark: i64) -> Option<i64> {
        let open = self.open_txns.keys().next().copied();
        let undecided = self
            .undecided
            .iter()
            .filter(|(_, &(_, marker))| marker >= high_watermark)
            .map(|(&first, _)| first)
            .min();
        open.into_iter().chain(undecided).min()
    }

    /// Transactions open in this partition.
    pub fn open_txn_count(&self) -> usize {
        self.open_txns.len()
    }

    /// Every producer this partition remembers, by producer id (DescribeProducers).
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut out: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.batches.back().map_or(-1, |b| b.last_seq),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                txn_start_offset: e.txn_first_offset.unwrap_or(-1),
            })
            .collect();
        out.sort_unstable_by_key(|p| p.producer_id);
        out
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
    /// producer: pid i64, epoch i16, last timestamp i64, open transaction's first offset
    /// i64 (-1: none), coordinator epoch i32, count u8, then count × (first_seq i32,
    /// last_seq i32, first i64, last i64); then the undecided transactions: count u32, then
    /// count × (first offset i64, pid i64, marker offset i64). Version 0 had no last
    /// timestamp; versions 0 and 1 had no transactions.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[&pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.extend_from_slice(&e.txn_first_offset.unwrap_or(-1).to_be_bytes());
            out.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.undecided.len() as u32).to_be_bytes());
        for (first, (pid, marker)) in &self.undecided {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&marker.to_be_bytes());
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
        let mut open_txns = BTreeMap::new();
        for _ in 0..count {
            let pid = i64::from_be_bytes(take(&mut buf)?);
            let epoch = i16::from_be_bytes(take(&mut buf)?);
            let last_timestamp = if version >= 1 {
                i64::from_be_bytes(take(&mut buf)?)
            } else {
                NO_TIMESTAMP
            };
            let (txn_first_offset, coordinator_epoch) = if version >= 2 {
                let first = i64::from_be_bytes(take(&mut buf)?);
                let epoch = i32::from_be_bytes(take(&mut buf)?);
                ((first >= 0).then_some(first), epoch)
            } else {
                (None, -1)
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
            // An entry without batches is kept only for its transaction state (version 2).
            let useful =
                !batches.is_empty() || txn_first_offset.is_some() || coordinator_epoch >= 0;
            if !useful || producers.contains_key(&pid) {
                return None;
            }
            if let Some(first) = txn_first_offset {
                if open_txns.insert(first, pid).is_some() {
                    return None;
                }
            }
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                    txn_first_offset,
                    coordinator_epoch,
                },
            );
        }
        let mut undecided = BTreeMap::new();
        if version >= 2 {
            let count = u32::from_be_bytes(take(&mut buf)?) as usize;
            if count > PRODUCERS_PER_PARTITION_MAX * 2 {
                return None;
            }
            for _ in 0..count {
                let first = i64::from_be_bytes(take(&mut buf)?);
                let pid = i64::from_be_bytes(take(&mut buf)?);
                let marker = i64::from_be_bytes(take(&mut buf)?);
                if marker < first || undecided.insert(first, (pid, marker)).is_some() {
                    return None;
                }
            }
        }
        buf.is_empty().then_some(ProducerState {
            producers,
            open_txns,
            undecided,
        })
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

    fn marker(commit: bool, coordinator_epoch: i32) -> Marker {
        Marker {
            commit,
            coordinator_epoch,
        }
    }

    #[test]
    fn transactions_hold_the_stable_offset_until_their_marker_is_below_the_high_watermark() {
        let mut s = ProducerState::default();
        assert_eq!(s.first_unstable_offset(0), None);
        // Producer 1 opens a transaction at 10 (two batches), producer 2 at 12.
        s.record(1, 0, 0, 10, 10, 1_000);
        s.record_txn_batch(1, 10);
        s.record(2, 0, 0, 11, 11, 1_000);
        s.check_txn(2, false).unwrap();
        s.record(2, 0, 1, 12, 12, 1_000);
        s.record_txn_batch(2, 12);
        s.record(1, 0, 1, 13, 13, 1_000);
        s.record_txn_batch(1, 13);
        assert_eq!(s.open_txn_count(), 2);
        assert_eq!(s.first_unstable_offset(14), Some(10));
        // A plain batch from a producer inside a transaction is refused.
        assert_eq!(
            s.check_txn(1, false).unwrap_err().kafka_error_code(),
            48,
            "INVALID_TXN_STATE"
        );
        s.check_txn(1, true).unwrap();
        // Producer 1's commit at 14: decided once the high watermark passes 14.
        s.check_marker(1, 0, marker(true, 3)).unwrap();
        let done = s.record_marker(1, 0, marker(true, 3), 14, 2_000).unwrap();
        assert_eq!(
            done,
            CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                aborted: false
            }
        );
        assert_eq!(s.first_unstable_offset(14), Some(10), "marker not below 14");
        s.advance_stable(14);
        assert_eq!(s.first_unstable_offset(14), Some(10));
        assert_eq!(s.first_unstable_offset(15), Some(12));
        s.advance_stable(15);
        assert_eq!(
            s.first_unstable_offset(0),
            Some(12),
            "pruned: decided for good"
        );
        // A marker from an older coordinator, or for an older producer epoch, is refused.
        assert_eq!(
            s.check_marker(1, 0, marker(false, 2))
                .unwrap_err()
                .kafka_error_code(),
            52
        );
        // Producer 2 aborted by a fence: the marker's epoch is bumped.
        let done = s.record_marker(2, 1, marker(false, 3), 15, 2_000).unwrap();
        assert!(done.aborted);
        assert_eq!(
            s.check_marker(2, 0, marker(false, 3))
                .unwrap_err()
                .kafka_error_code(),
            47
        );
        assert!(matches!(
            s.check(2, 0, 2, 0),
            Err(StorageError::InvalidProducerEpoch { .. })
        ));
        s.advance_stable(16);
        assert_eq!(s.first_unstable_offset(16), None);
        // A marker with nothing open closes nothing.
        assert_eq!(s.record_marker(1, 0, marker(true, 3), 16, 2_000), None);
        assert_eq!(s.record_marker(99, 0, marker(true, 3), 17, 2_000), None);
    }

    #[test]
    fn truncation_reopens_a_transaction_whose_marker_it_cut() {
        let mut s = ProducerState::default();
        s.record(1, 0, 0, 10, 10, 1_000);
        s.record_txn_batch(1, 10);
        s.record_marker(1, 0, marker(true, 0), 11, 1_000).unwrap();
        s.record(2, 0, 0, 12, 12, 1_000);
        s.record_txn_batch(2, 12);
        s.truncate_from(11);
        assert_eq!(s.first_unstable_offset(11), Some(10));
        assert_eq!(s.open_txn_count(), 1, "1 reopened, 2 cut away");
        assert_eq!(s.epoch_of(2), None);
        s.check_txn(1, true).unwrap();
        assert!(s.check_txn(1, false).is_err());
        // And its marker may come again.
        assert!(s.record_marker(1, 0, marker(true, 0), 11, 1_000).is_some());
    }

    #[test]
    fn open_transactions_survive_a_snapshot_and_keep_their_producer_from_expiring() {
        let mut s = ProducerState::default();
        s.record(1, 0, 0, 10, 10, 1_000);
        s.record_txn_batch(1, 10);
        s.record(2, 0, 0, 11, 11, 1_000);
        s.record_txn_batch(2, 11);
        s.record_marker(2, 1, marker(false, 4), 12, 1_000).unwrap();
        let mut buf = Vec::new();
        s.encode(&mut buf);
        let back = ProducerState::decode(&buf, SNAPSHOT_BODY_VERSION).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.first_unstable_offset(13), Some(10));
        for n in 0..buf.len() {
            assert!(ProducerState::decode(&buf[..n], SNAPSHOT_BODY_VERSION).is_none());
        }
        // Expiry keeps producer 1 (open) and drops producer 2 (fenced, nothing open).
        let mut s = back;
        assert_eq!(s.expire(1_000_000, 1_000), 1);
        assert_eq!(s.epoch_of(1), Some(0));
        assert_eq!(s.first_unstable_offset(13), Some(10));
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
