//! A replica's Raft log in memory: hard state, configuration, entries and the map from Raft
//! index to Kafka offsets. raft-rs reads it through [`raft::Storage`]; the group manager writes
//! it (and tells its driver to persist the same writes). It is rebuilt from disk on restart.

use bytes::Bytes;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The Kafka offsets one Raft entry occupies: `records` dense offsets from `base` (none for
/// Raft's own entries: the leader's no-op, configuration changes), written in `term`, which
/// is the batch's `partitionLeaderEpoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSpan {
    pub base: i64,
    pub records: u32,
    pub term: u64,
}

impl OffsetSpan {
    /// The offset after this entry's last record (its Kafka "next offset").
    pub fn next(&self) -> i64 {
        self.base + i64::from(self.records)
    }

    /// The last record's offset; `base - 1` for an entry without records.
    pub fn last(&self) -> i64 {
        self.next() - 1
    }
}

/// How many Kafka records an entry carries. A Kafka batch is a normal entry with non-empty
/// data whose 4-byte big-endian context is the record count (the batch header has it too,
/// but this crate treats the batch bytes as opaque). Everything else carries none.
pub fn entry_records(e: &Entry) -> u32 {
    if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
        return 0;
    }
    match <[u8; 4]>::try_from(&e.context[..]) {
        Ok(b) => u32::from_be_bytes(b),
        Err(_) => 0,
    }
}

/// The context bytes that mark an entry as a Kafka batch of `records` records.
pub fn records_context(records: u32) -> Bytes {
    Bytes::copy_from_slice(&records.to_be_bytes())
}

/// Entries start at index 1 and are never compacted yet (retention and snapshots come with
/// the segment log), so `first_index` is always 1. `spans[i]` belongs to `entries[i]`.
#[derive(Debug, Clone, Default)]
pub struct ReplicaLog {
    hard_state: HardState,
    conf_state: ConfState,
    entries: Vec<Entry>,
    spans: Vec<OffsetSpan>,
}

impl ReplicaLog {
    /// A new replica of a group whose voters are `voters` (every replica starts with the same
    /// set, as raft-rs requires of a group created without a snapshot).
    pub fn new(voters: &[u64]) -> Self {
        ReplicaLog {
            conf_state: ConfState {
                voters: voters.to_vec(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn voters(&self) -> &[u64] {
        &self.conf_state.voters
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn last_index(&self) -> u64 {
        self.entries.len() as u64
    }

    pub fn entry(&self, index: u64) -> Option<&Entry> {
        index
            .checked_sub(1)
            .and_then(|i| self.entries.get(i as usize))
    }

    pub fn span(&self, index: u64) -> Option<OffsetSpan> {
        index
            .checked_sub(1)
            .and_then(|i| self.spans.get(i as usize))
            .copied()
    }

    /// The Kafka offset after entry `index` (0 for index 0): the high watermark when `index`
    /// is the commit index, the log end offset when it is the last index.
    pub fn next_offset_after(&self, index: u64) -> i64 {
        if index == 0 {
            return 0;
        }
        self.span(index).expect("index within the log").next()
    }

    /// The log end offset: the offset the next batch gets.
    pub fn next_offset(&self) -> i64 {
        self.next_offset_after(self.last_index())
    }

    /// The Raft index of the entry holding Kafka offset `offset`, if any.
    pub fn index_of_offset(&self, offset: i64) -> Option<u64> {
        // Spans are sorted by base; the holder is the last span with base <= offset that has
        // records (entries without records share their base with the next batch).
        let n = self.spans.partition_point(|s| s.base <= offset);
        self.spans[..n]
            .iter()
            .rposition(|s| s.records > 0)
            .filter(|&i| self.spans[i].last() >= offset)
            .map(|i| i as u64 + 1)
    }

    /// Appends `ents` (consecutive indexes), first replacing any entries at or after the first
    /// one's index (a follower dropping a divergent suffix). Returns the first replaced index.
    pub fn append(&mut self, ents: &[Entry]) -> Option<u64> {
        let first = ents.first()?.index;
        assert!(
            first >= 1 && first <= self.last_index() + 1,
            "append at {first} leaves a gap after {}",
            self.last_index()
        );
        let replaced = (first <= self.last_index()).then_some(first);
        self.entries.truncate((first - 1) as usize);
        self.spans.truncate((first - 1) as usize);
        for e in ents {
            assert_eq!(
                e.index,
                self.last_index() + 1,
                "entries are not consecutive"
            );
            let base = self.next_offset();
            self.spans.push(OffsetSpan {
                base,
                records: entry_records(e),
                term: e.term,
            });
            self.entries.push(e.clone());
        }
        replaced
    }
}

impl raft::Storage for ReplicaLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < 1 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = self.entries[(low - 1) as usize..(high - 1) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == 0 {
            return Ok(0);
        }
        self.entry(idx)
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Nothing is compacted, so a follower is always caught up from entries.
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(index: u64, term: u64, records: u32) -> Entry {
        let mut e = Entry {
            index,
            term,
            ..Default::default()
        };
        if records > 0 {
            e.data = Bytes::from(vec![index as u8; 3]);
            e.context = records_context(records);
        }
        e
    }

    #[test]
    fn offsets_are_dense_and_follow_truncation() {
        let mut log = ReplicaLog::new(&[1, 2, 3]);
        log.append(&[batch(1, 1, 0), batch(2, 1, 3), batch(3, 1, 2)]);
        assert_eq!(log.span(2).unwrap().base, 0);
        assert_eq!(log.span(3).unwrap().base, 3);
        assert_eq!(log.next_offset(), 5);
        assert_eq!(log.index_of_offset(0), Some(2));
        assert_eq!(log.index_of_offset(4), Some(3));
        assert_eq!(log.index_of_offset(5), None);
        // A new leader replaces index 3 with a no-op and a batch of one record.
        assert_eq!(log.append(&[batch(3, 2, 0), batch(4, 2, 1)]), Some(3));
        assert_eq!(log.next_offset(), 4);
        assert_eq!(log.index_of_offset(3), Some(4));
        assert_eq!(log.span(4).unwrap().term, 2);
        assert_eq!(log.append(&[batch(5, 2, 1)]), None);
    }
}
