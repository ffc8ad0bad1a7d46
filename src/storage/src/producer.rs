//! Idempotent-producer state of one partition: per producer id, its epoch and the last
//! five batches' sequence ranges, so retries are answered with the original offsets and
//! gaps are refused (Kafka's ProducerStateManager rules).

use std::collections::{HashMap, VecDeque};

use crate::error::{Result, StorageError};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `max.in.flight.requests.per.connection` ceiling for idempotence is 5).
pub const PRODUCER_BATCHES_MAX: usize = 5;
/// Producers remembered per partition; beyond it the least recently seen is forgotten.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 16_384;

/// Epoch value meaning "none yet".
pub const NO_PRODUCER_EPOCH: i16 = -1;

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
    /// Offset of its newest batch: used to forget the stalest producer at the limit.
    pub last_offset: i64,
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

fn last_seq_of(first_seq: i32, last_offset_delta: i32) -> i32 {
    // Sequences wrap at i32::MAX back to 0, as Kafka's DefaultRecordBatch does.
    let sum = first_seq as i64 + last_offset_delta as i64;
    if sum > i32::MAX as i64 {
        (sum - i32::MAX as i64 - 1) as i32
    } else {
        sum as i32
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
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
            // Unknown producer (new, or its state was dropped by retention): any sequence goes.
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

    /// Records an appended (or replayed) batch.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        first_offset: i64,
        last_offset: i64,
    ) {
        if producer_id < 0 {
            return;
        }
        if !self.producers.contains_key(&producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.forget_stalest();
        }
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(PRODUCER_BATCHES_MAX),
                last_offset,
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
        entry.last_offset = last_offset;
    }

    fn forget_stalest(&mut self) {
        if let Some((&pid, _)) = self.producers.iter().min_by_key(|(_, e)| e.last_offset) {
            self.producers.remove(&pid);
        }
    }

    /// Drops everything at or past `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: i64) {
        self.producers.retain(|_, e| {
            e.batches.retain(|b| b.last_offset < offset);
            e.last_offset = e.batches.back().map_or(-1, |b| b.last_offset);
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

    /// Serializes the table (snapshot file body). Layout per producer:
    /// pid i64, epoch i16, count u8, then count × (first_seq i32, last_seq i32, first i64, last i64).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut pids: Vec<_> = self.producers.keys().copied().collect();
        pids.sort_unstable();
        for pid in pids {
            let e = &self.producers[&pid];
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
    }

    /// Parses what [`ProducerState::encode`] wrote; `None` if it is malformed.
    pub fn decode(mut buf: &[u8]) -> Option<ProducerState> {
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
            let last_offset = batches.back().map_or(-1, |b| b.last_offset);
            producers.insert(
                pid,
                ProducerEntry {
                    epoch,
                    batches,
                    last_offset,
                },
            );
        }
        Some(ProducerState { producers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_answer_with_original_offsets() {
        let mut s = ProducerState::default();
        assert_eq!(s.check(7, 0, 0, 4).unwrap(), SeqCheck::Append);
        s.record(7, 0, 0, 100, 104);
        assert_eq!(s.check(7, 0, 5, 2).unwrap(), SeqCheck::Append);
        s.record(7, 0, 5, 105, 107);
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
            s.record(1, 3, i, i as i64, i as i64);
        }
        assert_eq!(s.check(1, 3, 0, 0).unwrap_err().kafka_error_code(), 45);
        assert!(matches!(
            s.check(1, 3, 7, 0).unwrap(),
            SeqCheck::Duplicate { .. }
        ));
        let mut buf = Vec::new();
        s.encode(&mut buf);
        assert_eq!(ProducerState::decode(&buf).unwrap(), s);
        assert!(ProducerState::decode(&buf[..buf.len() - 1]).is_none());
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(last_seq_of(i32::MAX, 1), 0);
        assert!(in_sequence(i32::MAX, 0));
    }
}
