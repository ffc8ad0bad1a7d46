//! Who leads each partition, as this node knows it: the table Metadata, Produce and Fetch
//! answer from (leader id, leader epoch, ISR; KIP-951's current-leader hints), fed by the
//! node's own Raft groups and by the other nodes' reports.
//!
//! Partition leaders are not metadata-log records here (as in Redpanda, unlike KRaft): each
//! partition's Raft group elects its own leader, so only the nodes hosting a replica learn of
//! an election first-hand. Every node reports what it knows to every other node
//! (sluice-cluster's `gossip` sends [`LeaderTable::changes_since`] a peer's cursor, and the
//! whole table after a reconnect), so a client may ask any node about any partition.
//!
//! # Which report wins
//!
//! Leader epoch = Raft term, and Raft elects at most one leader per term, so reports are
//! ordered by epoch and need no clock:
//! - a higher epoch replaces what is known (also with no leader yet: an election is under
//!   way, and Metadata says LEADER_NOT_AVAILABLE rather than name a deposed leader);
//! - in the same epoch, a known leader replaces "no leader", and the leader's own ISR
//!   reports replace older ones by their `isr_version` (the leader counts its ISR changes
//!   within its epoch);
//! - anything else is stale (an older epoch, "no leader" after a leader was learnt) and is
//!   ignored. Two different leaders in one epoch cannot both be true: the first one known
//!   stays, and [`LeaderTable::conflicts`] counts the refused one (a bug or a forged report).
//!
//! Reports therefore commute: every node that receives the same reports, in any order and
//! any number of times, ends with the same table (tested below). Deletions are not reported:
//! a topic's entries go when the metadata image drops it ([`LeaderTable::remove_topic`],
//! [`LeaderTable::retain`]), and the caller accepts reports only for partitions its image
//! has, so a late report cannot bring a deleted partition back.
//!
//! Memory: one entry per partition of the cluster, plus one change-log slot per entry
//! (only each entry's latest change is kept). A report message holds at most
//! [`UPDATES_PER_MESSAGE_MAX`] updates; decoding one never allocates more than its bytes back.

use std::collections::BTreeMap;

use crate::codec::{put_uvarint, put_varint, DecodeError, Reader, REPLICAS_MAX};
use crate::record::{NodeId, TopicId};

/// Updates one dissemination message may carry (a larger table goes in several).
pub const UPDATES_PER_MESSAGE_MAX: usize = 10_000;
/// The only message format so far.
pub const UPDATES_FORMAT: u8 = 0;

/// A partition's leadership as known here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// `None` while an election is under way (or nothing was heard yet in this epoch).
    pub leader: Option<NodeId>,
    /// Kafka's leader epoch: the Raft term of `leader` (or of the election under way).
    pub epoch: i32,
    /// In-sync replicas as the leader reports them (empty until it does).
    pub isr: Vec<NodeId>,
    /// Counts the leader's ISR changes within `epoch`: a later report has a larger number.
    pub isr_version: u64,
}

/// One report: a partition and its leadership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderUpdate {
    pub topic: TopicId,
    pub partition: i32,
    pub leadership: Leadership,
}

/// Kafka's leader epoch for a Raft term, if it fits an `i32` (a term past 2^31 - 1 would
/// take two billion elections; the caller refuses to serve such a group rather than wrap).
pub fn epoch_of_term(term: u64) -> Option<i32> {
    i32::try_from(term).ok()
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LeaderTable {
    entries: BTreeMap<(TopicId, i32), (Leadership, u64)>,
    /// Sequence number of each entry's latest change → the entry.
    changes: BTreeMap<u64, (TopicId, i32)>,
    seq: u64,
    conflicts: u64,
}

/// Whether `new` is news over `cur` (see the module header).
fn supersedes(cur: &Leadership, new: &Leadership) -> Result<bool, ()> {
    if new.epoch != cur.epoch {
        return Ok(new.epoch > cur.epoch);
    }
    match (cur.leader, new.leader) {
        (None, Some(_)) => Ok(true),
        (_, None) => Ok(false),
        (Some(a), Some(b)) if a != b => Err(()),
        (Some(_), Some(_)) => Ok(new.isr_version > cur.isr_version),
    }
}

impl LeaderTable {
    pub fn new() -> LeaderTable {
        LeaderTable::default()
    }

    pub fn get(&self, topic: &TopicId, partition: i32) -> Option<&Leadership> {
        self.entries.get(&(*topic, partition)).map(|(l, _)| l)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The sequence number of the latest change (0: none yet).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Reports refused because they named a second leader for an epoch.
    pub fn conflicts(&self) -> u64 {
        self.conflicts
    }

    /// Takes in a report; true if it changed the table.
    pub fn observe(&mut self, update: LeaderUpdate) -> bool {
        let LeaderUpdate {
            topic,
            partition,
            mut leadership,
        } = update;
        if leadership.epoch < 0 || partition < 0 {
            return false;
        }
        if leadership.leader.is_none() {
            // Without a leader there is nobody whose ISR it would be.
            leadership.isr.clear();
            leadership.isr_version = 0;
        }
        let key = (topic, partition);
        if let Some((cur, _)) = self.entries.get(&key) {
            match supersedes(cur, &leadership) {
                Ok(true) => {}
                Ok(false) => return false,
                Err(()) => {
                    self.conflicts += 1;
                    return false;
                }
            }
        }
        self.seq += 1;
        if let Some((_, old_seq)) = self.entries.insert(key, (leadership, self.seq)) {
            self.changes.remove(&old_seq);
        }
        self.changes.insert(self.seq, key);
        debug_assert_eq!(self.changes.len(), self.entries.len());
        true
    }

    /// Forgets every partition of a topic (deleted from the metadata image).
    pub fn remove_topic(&mut self, topic: &TopicId) {
        self.retain(|t, _| t != topic);
    }

    /// Keeps only the partitions `keep` accepts (the ones the metadata image has).
    pub fn retain(&mut self, mut keep: impl FnMut(&TopicId, i32) -> bool) {
        let changes = &mut self.changes;
        self.entries.retain(|(t, p), (_, seq)| {
            let k = keep(t, *p);
            if !k {
                changes.remove(seq);
            }
            k
        });
        debug_assert_eq!(self.changes.len(), self.entries.len());
    }

    /// At most `max` entries changed after sequence number `cursor`, oldest change first, and
    /// the cursor to ask from next time (the last change included; `cursor` if none).
    pub fn changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64) {
        let mut next = cursor;
        let updates = self
            .changes
            .range(cursor.saturating_add(1)..)
            .take(max)
            .map(|(seq, key)| {
                next = *seq;
                let (l, _) = &self.entries[key];
                LeaderUpdate {
                    topic: key.0,
                    partition: key.1,
                    leadership: l.clone(),
                }
            })
            .collect();
        (updates, next)
    }
}

/// Encodes at most [`UPDATES_PER_MESSAGE_MAX`] updates as one message (`None` if more, or an
/// ISR over the replica limit: the caller splits its reports).
///
/// ```text
/// message := format:u8 (= 0)  count:uvarint  update{count}
/// update  := topic:uuid partition:varint leader:option<varint> epoch:varint
///            isr_version:uvarint isr:list<varint>
/// ```
pub fn encode_updates(updates: &[LeaderUpdate]) -> Option<Vec<u8>> {
    if updates.len() > UPDATES_PER_MESSAGE_MAX {
        return None;
    }
    let mut out = vec![UPDATES_FORMAT];
    put_uvarint(&mut out, updates.len() as u64);
    for u in updates {
        let l = &u.leadership;
        if l.isr.len() > REPLICAS_MAX {
            return None;
        }
        out.extend_from_slice(&u.topic);
        put_varint(&mut out, i64::from(u.partition));
        match l.leader {
            None => out.push(0),
            Some(n) => {
                out.push(1);
                put_varint(&mut out, i64::from(n));
            }
        }
        put_varint(&mut out, i64::from(l.epoch));
        put_uvarint(&mut out, l.isr_version);
        put_uvarint(&mut out, l.isr.len() as u64);
        for n in &l.isr {
            put_varint(&mut out, i64::from(*n));
        }
    }
    Some(out)
}

/// Decodes a message of [`encode_updates`]; hostile bytes give an error, never a panic.
pub fn decode_updates(bytes: &[u8]) -> Result<Vec<LeaderUpdate>, DecodeError> {
    let mut r = Reader { buf: bytes };
    let format = r.u8("leader updates format")?;
    if format != UPDATES_FORMAT {
        return Err(DecodeError::UnknownFormat { format });
    }
    // An update is at least 16 + 1 + 1 + 1 + 1 + 1 bytes.
    let n = r.count("leader updates", 21)?;
    if n > UPDATES_PER_MESSAGE_MAX {
        return Err(DecodeError::TooLarge {
            what: "leader updates",
        });
    }
    let mut updates = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.uuid("topic")?;
        let partition = r.i32("partition")?;
        if partition < 0 {
            return Err(DecodeError::Invalid { what: "partition" });
        }
        let leader = if r.bool("leader")? {
            Some(r.node("leader")?)
        } else {
            None
        };
        let epoch = r.i32("leader epoch")?;
        if epoch < 0 {
            return Err(DecodeError::Invalid {
                what: "leader epoch",
            });
        }
        let isr_version = r.uvarint("isr version")?;
        let isr = r.nodes("isr")?;
        updates.push(LeaderUpdate {
            topic,
            partition,
            leadership: Leadership {
                leader,
                epoch,
                isr,
                isr_version,
            },
        });
    }
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing {
            what: "leader updates",
        });
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn up(t: u8, p: i32, leader: Option<i32>, epoch: i32, isr: &[i32], v: u64) -> LeaderUpdate {
        LeaderUpdate {
            topic: [t; 16],
            partition: p,
            leadership: Leadership {
                leader,
                epoch,
                isr: isr.to_vec(),
                isr_version: v,
            },
        }
    }

    #[test]
    fn later_epochs_win_and_stale_reports_are_ignored() {
        let mut t = LeaderTable::new();
        assert!(t.observe(up(1, 0, Some(1), 3, &[1, 2, 3], 1)));
        assert!(!t.observe(up(1, 0, Some(2), 2, &[2], 1)), "older epoch");
        assert!(
            !t.observe(up(1, 0, None, 3, &[], 0)),
            "no leader after one was learnt"
        );
        assert!(
            t.observe(up(1, 0, Some(1), 3, &[1, 2], 2)),
            "leader's newer ISR"
        );
        assert!(!t.observe(up(1, 0, Some(1), 3, &[1, 2, 3], 1)), "older ISR");
        assert!(
            t.observe(up(1, 0, None, 4, &[1], 7)),
            "an election under way"
        );
        let l = t.get(&[1; 16], 0).unwrap();
        assert_eq!((l.leader, l.epoch), (None, 4));
        assert!(l.isr.is_empty(), "no ISR without a leader");
        assert!(t.observe(up(1, 0, Some(3), 4, &[3, 1], 1)));
        assert_eq!(t.conflicts(), 0);
        assert!(
            !t.observe(up(1, 0, Some(2), 4, &[2], 9)),
            "second leader in an epoch"
        );
        assert_eq!(t.conflicts(), 1);
        assert_eq!(t.get(&[1; 16], 0).unwrap().leader, Some(3));
        assert!(!t.observe(up(1, -1, Some(1), 1, &[], 0)));
        assert!(!t.observe(up(1, 1, Some(1), -1, &[], 0)));
    }

    #[test]
    fn changes_since_gives_each_entry_once_with_its_latest_state() {
        let mut t = LeaderTable::new();
        t.observe(up(1, 0, Some(1), 1, &[1], 1));
        t.observe(up(1, 1, Some(2), 1, &[2], 1));
        let (first, cursor) = t.changes_since(0, 10);
        assert_eq!(first.len(), 2);
        assert_eq!(cursor, t.seq());
        assert!(t.changes_since(cursor, 10).0.is_empty());
        t.observe(up(1, 0, Some(1), 2, &[1], 1));
        t.observe(up(1, 0, Some(1), 3, &[1], 1));
        let (later, c2) = t.changes_since(cursor, 10);
        assert_eq!(later, vec![up(1, 0, Some(1), 3, &[1], 1)]);
        // Paging.
        let (a, ca) = t.changes_since(0, 1);
        let (b, cb) = t.changes_since(ca, 1);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(cb, c2);
        t.remove_topic(&[1; 16]);
        assert!(t.is_empty());
        assert!(t.changes_since(0, 10).0.is_empty());
    }

    #[test]
    fn reports_commute() {
        // Every permutation and duplication of the same reports ends in the same table.
        for seed in 0..200 {
            let mut rng = Rng::new(seed);
            let mut reports = Vec::new();
            for _ in 0..40 {
                let p = rng.below(3) as i32;
                let epoch = rng.below(5) as i32;
                // Raft: one leader per (partition, epoch): derive it from both.
                let leader = (rng.below(4) != 0).then_some((p + epoch) % 3 + 1);
                let v = rng.below(4);
                let isr: Vec<i32> = (1..=3).filter(|_| rng.below(2) == 0).collect();
                reports.push(up(7, p, leader, epoch, &isr, v));
            }
            // Same (partition, epoch, leader, isr_version) must carry the same ISR, as a
            // leader's report does: make it so.
            let mut canon: BTreeMap<(i32, i32, Option<i32>, u64), Vec<i32>> = BTreeMap::new();
            for r in &mut reports {
                let l = &mut r.leadership;
                let k = (r.partition, l.epoch, l.leader, l.isr_version);
                l.isr = canon.entry(k).or_insert_with(|| l.isr.clone()).clone();
            }
            let mut reference = LeaderTable::new();
            for r in &reports {
                reference.observe(r.clone());
            }
            for _ in 0..5 {
                let mut shuffled = reports.clone();
                for i in (1..shuffled.len()).rev() {
                    shuffled.swap(i, rng.below(i as u64 + 1) as usize);
                }
                let dup = shuffled[rng.below(shuffled.len() as u64) as usize].clone();
                shuffled.push(dup);
                let mut t = LeaderTable::new();
                for r in shuffled {
                    t.observe(r);
                }
                let a: Vec<_> = t.changes_since(0, usize::MAX).0;
                let mut a: Vec<_> = a.into_iter().map(|u| (u.partition, u.leadership)).collect();
                let mut b: Vec<_> = reference
                    .changes_since(0, usize::MAX)
                    .0
                    .into_iter()
                    .map(|u| (u.partition, u.leadership))
                    .collect();
                a.sort_by_key(|x| x.0);
                b.sort_by_key(|x| x.0);
                assert_eq!(a, b, "seed {seed}");
            }
        }
    }

    #[test]
    fn updates_round_trip_and_hostile_bytes_fail_cleanly() {
        let ups = vec![
            up(1, 0, Some(1), 3, &[1, 2, 3], 1),
            up(2, 9, None, 0, &[], 0),
            up(3, i32::MAX, Some(i32::MAX), i32::MAX, &[5], u64::MAX),
        ];
        let bytes = encode_updates(&ups).unwrap();
        assert_eq!(decode_updates(&bytes).unwrap(), ups);
        for cut in 0..bytes.len() {
            assert!(decode_updates(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_updates(&trailing).is_err());
        // A count the bytes cannot back is refused before allocating.
        let mut huge = vec![UPDATES_FORMAT];
        put_uvarint(&mut huge, u64::MAX >> 1);
        assert!(decode_updates(&huge).is_err());
        let mut rng = Rng::new(5);
        for _ in 0..50_000 {
            let mut b = bytes.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len() as u64) as usize;
                b[i] = rng.below(256) as u8;
            }
            if let Ok(u) = decode_updates(&b) {
                assert_eq!(encode_updates(&u).unwrap(), b, "canonical");
            }
        }
        assert!(encode_updates(&vec![
            up(1, 0, None, 0, &[], 0);
            UPDATES_PER_MESSAGE_MAX + 1
        ])
        .is_none());
    }
}
