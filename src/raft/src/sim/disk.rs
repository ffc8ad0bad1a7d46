//! The simulated disk of one node: the manager's writes as checksummed records in one
//! append-only file (the real format, [`crate::wal`]), a synced length, and a crash that keeps a random part of the unsynced
//! tail (a byte prefix, so the last kept record is usually torn) and may garble it. Beside
//! it, each group's partition log as the written records make it (what a read of the real
//! partition log returns, unsynced writes included), which serves the manager's fetches.

use std::collections::BTreeMap;

use raft::eraftpb::Entry;

use crate::effect::{GroupId, Write};
use crate::log::{entry_records, FetchedBatch, OffsetSpan, ReplicaLog};
use crate::rng::Rng;
use crate::wal;

/// One group's partition log as written: it starts after entry `start.0` at offset
/// `start.1`, and holds the entries from there on with their offsets.
#[derive(Debug, Default, Clone)]
struct GroupLog {
    start: (u64, i64),
    entries: Vec<(Entry, OffsetSpan)>,
}

impl GroupLog {
    fn end_offset(&self) -> i64 {
        self.entries.last().map_or(self.start.1, |(_, s)| s.next())
    }
}

type Model = BTreeMap<GroupId, GroupLog>;

#[derive(Debug, Default, Clone)]
pub struct Disk {
    bytes: Vec<u8>,
    synced: usize,
    model: Model,
}

fn apply_model(model: &mut Model, w: &Write) {
    match w {
        Write::Create { group, .. } => {
            model.insert(*group, GroupLog::default());
        }
        Write::Entries { group, entries } => {
            let log = model.get_mut(group).expect("entries of a created group");
            let first = entries[0].index;
            let len = log.entries.len() as u64;
            assert!(
                first > log.start.0 && first <= log.start.0 + len + 1,
                "gap in the written log"
            );
            log.entries.truncate((first - log.start.0 - 1) as usize);
            for e in entries {
                let span = OffsetSpan {
                    base: log.end_offset(),
                    records: entry_records(e),
                    term: e.term,
                };
                log.entries.push((e.clone(), span));
            }
        }
        Write::LogStart {
            group,
            index,
            offset,
            reset,
            ..
        } => {
            let log = model.get_mut(group).expect("log start of a created group");
            if *reset {
                log.entries.clear();
            } else {
                let drop = (index - log.start.0) as usize;
                log.entries.drain(..drop.min(log.entries.len()));
                assert!(log.entries.first().is_none_or(|(_, s)| s.base == *offset));
            }
            log.start = (*index, *offset);
        }
        Write::HardState { .. } | Write::Conf { .. } => {}
        Write::Remove { group } => {
            model.remove(group).expect("removal of a created group");
        }
    }
}

impl Disk {
    /// Appends the writes (not synced).
    pub fn write(&mut self, writes: &[Write]) {
        for w in writes {
            apply_model(&mut self.model, w);
            wal::encode_record(w, &mut self.bytes);
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// An fsync that started when the file was `len` bytes long has completed.
    pub fn sync_to(&mut self, len: usize) {
        self.synced = self.synced.max(len.min(self.bytes.len()));
    }

    /// Power loss: the synced part survives; of the unsynced tail a random byte prefix does
    /// (nothing, all, or a cut inside a record), sometimes with a garbled byte in it.
    pub fn crash(&mut self, rng: &mut Rng) {
        let unsynced = (self.bytes.len() - self.synced) as u64;
        let keep = match rng.below(3) {
            0 => 0,
            1 => unsynced,
            _ => rng.range(0, unsynced),
        } as usize;
        self.bytes.truncate(self.synced + keep);
        if keep > 0 && rng.chance(1, 4) {
            let at = self.synced + rng.below(keep as u64) as usize;
            self.bytes[at] ^= 1 << rng.below(8);
        }
    }

    /// Reads the valid records (stopping at the first torn or garbled one) back into the
    /// replicas' logs, through the real format ([`crate::wal`]).
    fn replay(bytes: &[u8]) -> (BTreeMap<GroupId, ReplicaLog>, usize, Model) {
        let mut model = Model::new();
        let r = wal::replay_with(bytes, |w| apply_model(&mut model, w))
            .expect("the simulator writes only valid records");
        (r.logs, r.valid_len, model)
    }

    /// Restart: recovers the logs, cuts the file after the last valid record and syncs it
    /// (a real driver must sync what it recovered before acting on it: a page-cache copy that
    /// survived a process kill is not yet durable).
    pub fn recover(&mut self) -> BTreeMap<GroupId, ReplicaLog> {
        let (logs, valid, model) = Self::replay(&self.bytes);
        self.bytes.truncate(valid);
        self.synced = valid;
        self.model = model;
        logs
    }

    /// What a power loss now would certainly leave: the synced records only.
    pub fn synced_logs(&self) -> BTreeMap<GroupId, ReplicaLog> {
        Self::replay(&self.bytes[..self.synced]).0
    }

    /// Entry `index` of `group` as written, with its offsets.
    pub fn entry(&self, group: GroupId, index: u64) -> Option<&(Entry, OffsetSpan)> {
        let log = self.model.get(&group)?;
        let i = index.checked_sub(log.start.0 + 1)?;
        log.entries.get(i as usize)
    }

    /// A read of the group's partition log: the batches (Raft's own entries as control
    /// batches) from the one at `offset` on, about `max_bytes` of them (at least one); none
    /// at the log end, and `None` when no batch starts at `offset`.
    pub fn read(&self, group: GroupId, offset: i64, max_bytes: u64) -> Option<Vec<FetchedBatch>> {
        let log = self.model.get(&group)?;
        let from = log.entries.partition_point(|(_, s)| s.base < offset);
        let mut out = Vec::new();
        let mut bytes = 0;
        for (e, s) in &log.entries[from..] {
            if out.is_empty() && s.base != offset {
                return None;
            }
            bytes += e.data.len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(FetchedBatch {
                base: s.base,
                term: s.term,
                records: s.records,
                bytes: e.data.clone(),
                raft_entry: crate::log::batch_records(e)
                    .is_none()
                    .then(|| e.get_entry_type()),
            });
        }
        (!out.is_empty() || offset == log.end_offset()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use raft::eraftpb::HardState;

    fn entry(index: u64, term: u64, data: &'static [u8]) -> Entry {
        Entry {
            index,
            term,
            data: Bytes::from_static(data),
            context: crate::log::records_context(1),
            ..Default::default()
        }
    }

    #[test]
    fn writes_round_trip_and_a_torn_tail_is_cut() {
        let mut d = Disk::default();
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 1,
            ..Default::default()
        };
        d.write(&[
            Write::Create {
                group: 4,
                voters: vec![1, 2, 3],
            },
            Write::Entries {
                group: 4,
                entries: vec![entry(1, 1, b"a"), entry(2, 1, b"b")],
            },
            Write::HardState {
                group: 4,
                hard_state: hs.clone(),
            },
        ]);
        d.sync_to(d.len());
        d.write(&[Write::Entries {
            group: 4,
            entries: vec![entry(2, 2, b"c")],
        }]);
        let full = d.clone().recover();
        assert_eq!(full[&4].entry(2).unwrap().data, Bytes::from_static(b"c"));
        // Tear the last record anywhere: recovery falls back to the synced state.
        let synced_len = d.synced;
        for cut in synced_len..d.len() {
            let mut torn = d.clone();
            torn.bytes.truncate(cut);
            let logs = torn.recover();
            assert_eq!(logs[&4].entry(2).unwrap().data, Bytes::from_static(b"b"));
            assert_eq!(logs[&4].hard_state(), &hs);
            assert_eq!(torn.len(), synced_len);
        }
        let mut garbled = d.clone();
        garbled.bytes[synced_len + 9] ^= 4;
        assert_eq!(garbled.recover()[&4].last_index(), 2);
        assert_eq!(garbled.len(), synced_len);
    }
}
