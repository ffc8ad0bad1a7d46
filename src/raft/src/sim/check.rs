//! The simulator's safety checkers, run after every event: one leader per term, committed
//! entries never lost or changed and identical on every replica, high watermarks monotonic,
//! and at the end every acknowledged batch durable at its offset on a quorum.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::effect::{GroupId, NodeId, Role};
use crate::log::{OffsetSpan, ReplicaLog};
use crate::manager::GroupManager;

use super::disk::Disk;

/// One committed entry as the first replica to commit it had it.
#[derive(Debug, Clone, PartialEq)]
struct Committed {
    term: u64,
    data: Bytes,
    span: OffsetSpan,
}

/// A batch the client was told is committed.
#[derive(Debug, Clone)]
pub struct Acked {
    pub group: GroupId,
    pub span: OffsetSpan,
    pub payload: Bytes,
}

#[derive(Default)]
pub struct Checker {
    /// Who led each (group, term).
    leaders: BTreeMap<(GroupId, u64), NodeId>,
    /// The committed log of each group, index 1 first, as replicas reported it.
    committed: BTreeMap<GroupId, Vec<Committed>>,
    /// Per (node, group) of the current incarnation: the high watermark checked so far.
    seen: BTreeMap<(NodeId, GroupId), (u64, i64)>,
}

impl Checker {
    /// A node restarted: its high watermark starts afresh (from its recovered commit index),
    /// and its whole committed prefix is compared again on the next check.
    pub fn restarted(&mut self, node: NodeId) {
        self.seen.retain(|(n, _), _| *n != node);
    }

    /// A node's replica of `group` was deleted or created afresh: its high watermark starts
    /// again.
    pub fn forget(&mut self, node: NodeId, group: GroupId) {
        self.seen.remove(&(node, group));
    }

    pub fn max_term(&self, group: GroupId) -> u64 {
        self.leaders
            .range((group, 0)..=(group, u64::MAX))
            .map(|((_, t), _)| *t)
            .max()
            .unwrap_or(0)
    }

    pub fn committed_len(&self, group: GroupId) -> u64 {
        self.committed.get(&group).map_or(0, |c| c.len() as u64)
    }

    /// Checks one live replica.
    pub fn check(&mut self, node: NodeId, mgr: &GroupManager, disk: &Disk) -> Result<(), String> {
        for group in mgr.groups() {
            let s = mgr.status(group).expect("status");
            let log = mgr.log(group).expect("log");
            if s.role == Role::Leader {
                let who = *self.leaders.entry((group, s.term)).or_insert(node);
                if who != node {
                    return Err(format!(
                        "two leaders in group {group} term {}: nodes {who} and {node}",
                        s.term
                    ));
                }
            }
            if s.hw_index > s.commit_index || s.hw_index > log.last_index() {
                return Err(format!(
                    "node {node} group {group}: high watermark index {} beyond commit {} or log end {}",
                    s.hw_index, s.commit_index, log.last_index()
                ));
            }
            if s.quiesced && (s.hw_index != s.last_index || s.commit_index != s.last_index) {
                return Err(format!(
                    "node {node} group {group}: quiesced with entries not committed or applied: {s:?}"
                ));
            }
            let (seen_index, seen_hw) = self.seen.get(&(node, group)).copied().unwrap_or((0, 0));
            if s.hw_index < seen_index || s.high_watermark < seen_hw {
                return Err(format!(
                    "node {node} group {group}: high watermark went back from index {seen_index} offset {seen_hw} to index {} offset {}",
                    s.hw_index, s.high_watermark
                ));
            }
            self.compare(node, group, log, disk, seen_index + 1, s.hw_index)?;
            self.seen
                .insert((node, group), (s.hw_index, s.high_watermark));
        }
        Ok(())
    }

    /// Compares `log`'s entries `from..=to` (committed on that replica) with the committed
    /// log, extending it where this replica is the first to get there. Entries no longer in
    /// memory are read from the node's partition log (`disk`), where they must be, and
    /// their term must be the one the replica's compact offset map has.
    fn compare(
        &mut self,
        node: NodeId,
        group: GroupId,
        log: &ReplicaLog,
        disk: &Disk,
        from: u64,
        to: u64,
    ) -> Result<(), String> {
        let committed = self.committed.entry(group).or_default();
        // Entries before the log start are gone (retention, or a leader's snapshot).
        for i in from.max(log.first_index())..=to {
            let got = match log.entry(i) {
                Some(e) => Committed {
                    term: e.term,
                    data: e.data.clone(),
                    span: log.span(i).expect("span"),
                },
                None => {
                    let Some((e, span)) = disk.entry(group, i) else {
                        return Err(format!(
                            "node {node} group {group}: committed entry {i} is neither in memory nor in the partition log"
                        ));
                    };
                    if log.term_of(i) != Some(e.term) || log.span(i).is_some_and(|s| s != *span) {
                        return Err(format!(
                            "node {node} group {group}: entry {i}'s offset map says term {:?} span {:?}, the partition log {span:?}",
                            log.term_of(i),
                            log.span(i)
                        ));
                    }
                    Committed {
                        term: e.term,
                        data: e.data.clone(),
                        span: *span,
                    }
                }
            };
            match committed.get(i as usize - 1) {
                Some(c) if *c != got => {
                    return Err(format!(
                        "node {node} group {group}: committed entry {i} changed: was {c:?}, now {got:?}"
                    ))
                }
                Some(_) => {}
                None if i as usize == committed.len() + 1 => committed.push(got),
                None => {
                    return Err(format!(
                        "node {node} group {group}: committed entry {i} seen before entry {}",
                        committed.len() + 1
                    ))
                }
            }
        }
        Ok(())
    }

    /// A replica's whole log must hold the committed prefix it has been told of. Used at the
    /// end, after healing, on every replica.
    pub fn check_full_prefix(
        &mut self,
        node: NodeId,
        group: GroupId,
        log: &ReplicaLog,
        disk: &Disk,
        upto: u64,
    ) -> Result<(), String> {
        self.compare(node, group, log, disk, 1, upto)
    }

    /// Every acknowledged batch is in the committed log at its offsets, and present there in
    /// the synced logs of at least `quorum` of `disks`.
    pub fn check_durable(
        &self,
        acked: &[Acked],
        disks: &[(NodeId, BTreeMap<GroupId, ReplicaLog>)],
        quorum: usize,
    ) -> Result<(), String> {
        for a in acked {
            // Below a replica's log start the batch is gone by retention (or with the log a
            // leader's snapshot replaced), as in Kafka.
            let in_log = |log: &ReplicaLog| {
                a.span.next() <= log.start_offset()
                    || log
                        .index_of_offset(a.span.base)
                        .filter(|&i| log.span(i) == Some(a.span))
                        .and_then(|i| log.entry(i))
                        .is_some_and(|e| e.data == a.payload)
            };
            let committed = self.committed.get(&a.group).is_some_and(|c| {
                let from = c.partition_point(|c| c.span.base < a.span.base);
                c[from..]
                    .iter()
                    .take_while(|c| c.span.base == a.span.base)
                    .any(|c| c.span == a.span && c.data == a.payload && a.span.records > 0)
            });
            if !committed {
                return Err(format!(
                    "acknowledged batch {:?} of group {} is not in the committed log at its offsets",
                    a.span, a.group
                ));
            }
            let holders: Vec<NodeId> = disks
                .iter()
                .filter(|(_, logs)| logs.get(&a.group).is_some_and(in_log))
                .map(|(n, _)| *n)
                .collect();
            if holders.len() < quorum {
                return Err(format!(
                    "acknowledged batch {:?} of group {} is durable on nodes {holders:?} only (quorum {quorum})",
                    a.span, a.group
                ));
            }
        }
        Ok(())
    }
}
