//! Deterministic simulation of a cluster of group managers: one seeded RNG, virtual time, a
//! network that drops, delays, reorders, duplicates and partitions envelopes, disks that lose
//! unsynced writes and tear their tail on crash, crash/restart, a client proposing
//! batches, and (a quarter of the seeds) membership changes: groups of 3 replicas on 5
//! nodes moved to random new replica sets, as reassignments do, under all of the above.
//! The checkers (`check.rs`) run after every event; a seed replays exactly.

mod check;
mod disk;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use crate::effect::{Effect, Envelope, GroupId, NodeId, ProposalToken, Role};
use crate::log::OffsetSpan;
use crate::manager::{Batch, Config, GroupManager, Membership};
use crate::rng::Rng;
use check::{Acked, Checker};
use disk::Disk;

/// Deliberate bugs that the checkers must catch (the test proving they fire uses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The client is answered when the leader appends the batch, not when it commits.
    AckOnAppend,
    /// The driver reports writes as synced as soon as it makes them, and really syncs them
    /// only every 500 ms: commits count unsynced entries.
    FsyncLies,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub groups: u64,
    /// Virtual milliseconds of faults and client load, then of healed quiet for the final
    /// convergence and durability checks.
    pub fault_ms: u64,
    pub settle_ms: u64,
    pub bug: Option<Bug>,
    pub trace: bool,
    /// The managers' `entry_cache_bytes_max`: small values make applied entries leave memory
    /// at once, so lagging followers are caught up through partition-log fetches.
    pub entry_cache_bytes: u64,
    /// Groups start on nodes 1..=3 only and the nemesis moves them to random sets of 3
    /// nodes (reassignments, also replacing one in progress); the driver plays the
    /// controller and the brokers: it creates joining replicas as learners, has each
    /// group's leader `reconfigure` towards the target, and removes a leaving replica
    /// once its group is done. Needs 5 nodes.
    pub membership: bool,
}

impl SimConfig {
    /// The configuration a seed stands for: even seeds run 3 nodes, odd ones 5.
    pub fn for_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            nodes: if seed.is_multiple_of(2) { 3 } else { 5 },
            groups: 3,
            fault_ms: 12_000,
            settle_ms: 12_000,
            bug: None,
            trace: false,
            // Nothing, a few entries, or the production budget (all in memory here).
            entry_cache_bytes: [0, 400, crate::manager::ENTRY_CACHE_BYTES_MAX]
                [(seed / 2 % 3) as usize],
            membership: seed % 4 == 1,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub events: u64,
    pub acked: usize,
    pub committed_entries: u64,
    pub crashes: u64,
    pub max_term: u64,
    pub fetches: u64,
    /// Catch-up reads that named no follower (`Effect::Fetch::to` empty): the driver cannot
    /// throttle those by follower.
    pub fetches_for_nobody: u64,
    pub compactions: u64,
    /// Logs restarted by a leader's snapshot.
    pub snapshots: u64,
    /// Sum over nemesis events of the groups quiesced then.
    pub quiesced: u64,
    /// Liveness reports that were wrong when made.
    pub wrong_reports: u64,
    /// Reassignments started, membership steps taken, reassignments completed.
    pub reassignments: u64,
    pub membership_steps: u64,
    pub reassignments_done: u64,
    /// Log-start entries (DeleteRecords) applied, summed over replicas.
    pub log_start_applied: u64,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: NodeId,
        inc: u64,
    },
    Deliver(Envelope),
    FsyncDone {
        node: NodeId,
        inc: u64,
        seq: u64,
        len: usize,
    },
    LazySync {
        node: NodeId,
        inc: u64,
    },
    /// A partition-log read completes (it reads what the log holds then).
    FetchDone {
        node: NodeId,
        inc: u64,
        id: u64,
        group: GroupId,
        offset: i64,
        max_bytes: u64,
    },
    Restart(NodeId),
    /// The transport of `to` reports `node` alive or dead (maybe wrongly).
    Liveness {
        to: NodeId,
        node: NodeId,
        alive: bool,
    },
    Nemesis,
    Client,
    EndFaults,
    /// The membership driver's periodic pass (see `SimConfig::membership`).
    Reconfigure,
}

struct Node {
    id: NodeId,
    mgr: Option<GroupManager>,
    disk: Disk,
    /// Incarnation: events scheduled by an earlier life of the node are ignored.
    inc: u64,
    fsync_busy: bool,
    /// Last persist seq written, and the last one a started fsync covers.
    written_seq: u64,
    fsync_seq: u64,
}

struct Net {
    cut: BTreeSet<(NodeId, NodeId)>,
    drop_pct: u64,
    dup_pct: u64,
    max_delay_ms: u64,
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    next_ev: u64,
    queue: BTreeMap<(u64, u64), Ev>,
    nodes: Vec<Node>,
    net: Net,
    faults: bool,
    checker: Checker,
    next_token: u64,
    /// The client sends nothing until then (so groups go idle and quiesce mid-faults).
    client_paused_until: u64,
    /// Proposals the client is waiting on: token -> (group, payload).
    waiting: BTreeMap<u64, (GroupId, Bytes)>,
    acked: Vec<Acked>,
    report: Report,
    /// Per group: the replica set it is being moved to, and the one it had when its last
    /// move completed (Kafka's "original replicas" of a reassignment in progress).
    targets: BTreeMap<GroupId, Vec<NodeId>>,
    settled: BTreeMap<GroupId, Vec<NodeId>>,
    /// Groups whose leader reported their current target reached (a new target, even the
    /// settled set again, as a cancellation is, clears it: the Raft configuration may have
    /// moved on meanwhile and must be brought back).
    done: BTreeSet<GroupId>,
}

macro_rules! trace {
    ($sim:expr, $($arg:tt)*) => {
        if $sim.cfg.trace {
            eprintln!("[{:>6} ms] {}", $sim.now, format!($($arg)*));
        }
    };
}

/// Runs one simulation; `Err` describes the first invariant broken.
pub fn run(cfg: SimConfig) -> Result<Report, String> {
    let mut sim = Sim::new(cfg);
    sim.run().map(|()| sim.report)
}

impl Sim {
    fn new(cfg: SimConfig) -> Self {
        let nodes = (1..=cfg.nodes)
            .map(|id| Node {
                id,
                mgr: None,
                disk: Disk::default(),
                inc: 0,
                fsync_busy: false,
                written_seq: 0,
                fsync_seq: 0,
            })
            .collect();
        Sim {
            rng: Rng::new(cfg.seed),
            cfg,
            now: 0,
            next_ev: 0,
            queue: BTreeMap::new(),
            nodes,
            net: Net {
                cut: BTreeSet::new(),
                drop_pct: 0,
                dup_pct: 0,
                max_delay_ms: 10,
            },
            faults: true,
            checker: Checker::default(),
            next_token: 0,
            client_paused_until: 0,
            waiting: BTreeMap::new(),
            acked: Vec::new(),
            report: Report::default(),
            targets: BTreeMap::new(),
            settled: BTreeMap::new(),
            done: BTreeSet::new(),
        }
    }

    fn at(&mut self, delay_ms: u64, ev: Ev) {
        self.next_ev += 1;
        self.queue.insert((self.now + delay_ms, self.next_ev), ev);
    }

    /// Synced copies every acknowledged batch must have: a majority of the groups' replica
    /// sets (all nodes, or 3 of them with membership changes). A reassignment never goes
    /// below it: a leaving replica is deleted only once every target voter holds everything
    /// committed.
    fn quorum(&self) -> usize {
        self.initial_voters().len() / 2 + 1
    }

    fn initial_voters(&self) -> Vec<NodeId> {
        let n = if self.cfg.membership {
            3
        } else {
            self.cfg.nodes
        };
        (1..=n).collect()
    }

    fn mgr_config(&self, node: NodeId, inc: u64) -> Config {
        Config {
            node_id: node,
            seed: self.cfg.seed ^ (inc << 32),
            entry_cache_bytes_max: self.cfg.entry_cache_bytes,
            ..Default::default()
        }
    }

    fn idx(node: NodeId) -> usize {
        node as usize - 1
    }

    fn run(&mut self) -> Result<(), String> {
        assert!(!self.cfg.membership || self.cfg.nodes == 5);
        let voters = self.initial_voters();
        for g in 0..self.cfg.groups {
            self.targets.insert(g, voters.clone());
            self.settled.insert(g, voters.clone());
            self.done.insert(g);
        }
        if self.cfg.membership {
            self.at(20, Ev::Reconfigure);
        }
        for n in 0..self.nodes.len() {
            let id = self.nodes[n].id;
            let mut mgr = GroupManager::new(self.mgr_config(id, 0));
            for g in 0..self.cfg.groups {
                if !voters.contains(&id) {
                    continue;
                }
                let fx = mgr.create_group(g, &voters).expect("create");
                for e in fx {
                    if let Effect::Persist { writes, seq } = e {
                        self.nodes[n].disk.write(&writes);
                        self.nodes[n].written_seq = seq;
                    }
                }
            }
            // Replicas are created synced (the controller would wait for that).
            let len = self.nodes[n].disk.len();
            self.nodes[n].disk.sync_to(len);
            let seq = self.nodes[n].written_seq;
            assert!(mgr.persisted(seq).is_empty());
            self.nodes[n].mgr = Some(mgr);
            let jitter = self.rng.below(10);
            self.at(jitter, Ev::Tick { node: id, inc: 0 });
            if self.cfg.bug == Some(Bug::FsyncLies) {
                self.at(500, Ev::LazySync { node: id, inc: 0 });
            }
        }
        self.at(500, Ev::Nemesis);
        self.at(1, Ev::Client);
        self.at(self.cfg.fault_ms, Ev::EndFaults);
        let end = self.cfg.fault_ms + self.cfg.settle_ms;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > end {
                break;
            }
            self.now = t;
            self.report.events += 1;
            self.event(ev)?;
            for n in &self.nodes {
                if let Some(mgr) = &n.mgr {
                    self.checker.check(n.id, mgr, &n.disk)?;
                    // Applied entries in memory stay within the shard's budget (checked where
                    // the budget is small; the others hold the whole log anyway).
                    if self.cfg.entry_cache_bytes < 1 << 20 {
                        let applied: u64 = mgr
                            .groups()
                            .map(|g| {
                                let log = mgr.log(g).expect("group");
                                let hw = mgr.status(g).expect("group").hw_index;
                                (log.window_first()..=hw)
                                    .filter_map(|i| log.entry(i))
                                    .map(crate::log::entry_bytes)
                                    .sum::<u64>()
                            })
                            .sum();
                        if applied > self.cfg.entry_cache_bytes {
                            return Err(format!(
                                "node {}: {applied} bytes of applied entries in memory, budget {}",
                                n.id, self.cfg.entry_cache_bytes
                            ));
                        }
                    }
                    if mgr.fetch_mismatches() > 0 {
                        return Err(format!(
                            "node {}: a partition-log read did not match the Raft log",
                            n.id
                        ));
                    }
                }
            }
        }
        self.final_checks()
    }

    fn event(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Tick { node, inc } => {
                let n = &mut self.nodes[Self::idx(node)];
                if n.inc != inc || n.mgr.is_none() {
                    return Ok(());
                }
                let fx = n.mgr.as_mut().expect("alive").tick(self.now);
                self.effects(node, fx);
                // Ticks arrive every 10 ms give or take, so nodes' clocks drift a little.
                let next = self.rng.range(7, 13);
                self.at(next, Ev::Tick { node, inc });
            }
            Ev::Deliver(env) => {
                let (from, to) = (env.from, env.to);
                if self.net.cut.contains(&(from, to)) {
                    return Ok(());
                }
                let n = &mut self.nodes[Self::idx(to)];
                if let Some(mgr) = n.mgr.as_mut() {
                    trace!(
                        self,
                        "deliver {from}->{to} {} hb {} msgs",
                        env.heartbeats.len(),
                        env.messages.len()
                    );
                    let fx = mgr.step(env);
                    self.effects(to, fx);
                }
            }
            Ev::FsyncDone {
                node,
                inc,
                seq,
                len,
            } => {
                let n = &mut self.nodes[Self::idx(node)];
                if n.inc != inc || n.mgr.is_none() {
                    return Ok(());
                }
                n.disk.sync_to(len);
                n.fsync_busy = false;
                let fx = n.mgr.as_mut().expect("alive").persisted(seq);
                self.effects(node, fx);
                self.start_fsync(node);
            }
            Ev::LazySync { node, inc } => {
                let n = &mut self.nodes[Self::idx(node)];
                if n.inc == inc && n.mgr.is_some() {
                    let len = n.disk.len();
                    n.disk.sync_to(len);
                    self.at(500, Ev::LazySync { node, inc });
                }
            }
            Ev::FetchDone {
                node,
                inc,
                id,
                group,
                offset,
                max_bytes,
            } => {
                let n = &mut self.nodes[Self::idx(node)];
                if n.inc != inc || n.mgr.is_none() {
                    return Ok(());
                }
                // Reads fail now and then (an IO error): the manager must cope.
                let batches = if self.rng.chance(1, 20) {
                    None
                } else {
                    n.disk.read(group, offset, max_bytes)
                };
                trace!(
                    self,
                    "node {node} group {group}: fetch {id} at offset {offset}: {:?} batches",
                    batches.as_ref().map(Vec::len)
                );
                let fx = self.nodes[Self::idx(node)]
                    .mgr
                    .as_mut()
                    .expect("alive")
                    .entries_fetched(id, batches);
                self.effects(node, fx);
            }
            Ev::Restart(node) => self.restart(node),
            Ev::Liveness { to, node, alive } => {
                if let Some(mgr) = self.nodes[Self::idx(to)].mgr.as_mut() {
                    trace!(self, "node {to} hears node {node} is alive: {alive}");
                    mgr.set_node_alive(node, alive);
                }
            }
            Ev::Nemesis => {
                if self.faults {
                    self.report.quiesced += self
                        .nodes
                        .iter()
                        .filter_map(|n| n.mgr.as_ref())
                        .map(|m| m.quiesced_groups() as u64)
                        .sum::<u64>();
                    self.nemesis();
                    // Every acknowledged batch must survive a power loss of every node now.
                    self.check_durable("after a fault")?;
                    let next = self.rng.range(200, 2_000);
                    self.at(next, Ev::Nemesis);
                }
            }
            Ev::Client => {
                if self.faults && self.now >= self.client_paused_until {
                    self.client();
                }
                if self.faults {
                    let next = self.rng.range(2, 25);
                    self.at(next, Ev::Client);
                }
            }
            Ev::Reconfigure => {
                self.reconfigure();
                self.at(20, Ev::Reconfigure);
            }
            Ev::EndFaults => {
                trace!(self, "end of faults: heal, restart every node");
                self.faults = false;
                self.check_durable("at the end of the faults")?;
                self.net = Net {
                    cut: BTreeSet::new(),
                    drop_pct: 0,
                    dup_pct: 0,
                    max_delay_ms: 5,
                };
                for node in 1..=self.cfg.nodes {
                    if self.nodes[Self::idx(node)].mgr.is_none() {
                        self.restart(node);
                    }
                }
                self.report_liveness(0);
            }
        }
        Ok(())
    }

    fn effects(&mut self, node: NodeId, fx: Vec<Effect>) {
        let mut work: std::collections::VecDeque<Effect> = fx.into();
        while let Some(e) = work.pop_front() {
            match e {
                Effect::Send(env) => self.send(env),
                Effect::Persist { seq, writes } => {
                    for w in &writes {
                        if let crate::effect::Write::LogStart {
                            group,
                            index,
                            offset,
                            reset: true,
                            ..
                        } = w
                        {
                            trace!(self, "node {node} group {group}: log restarts after {index} at offset {offset}");
                            self.report.snapshots += 1;
                        }
                    }
                    let n = &mut self.nodes[Self::idx(node)];
                    n.disk.write(&writes);
                    n.written_seq = seq;
                    if self.cfg.bug == Some(Bug::FsyncLies) {
                        work.extend(n.mgr.as_mut().expect("alive").persisted(seq));
                    } else {
                        self.start_fsync(node);
                    }
                }
                Effect::Proposed {
                    group, token, span, ..
                } => {
                    trace!(
                        self,
                        "node {node} group {group}: proposed {token:?} at {span:?}"
                    );
                    if self.cfg.bug == Some(Bug::AckOnAppend) {
                        self.ack(token, group, span);
                    }
                }
                Effect::Committed { group, token, span } => {
                    if self.cfg.bug != Some(Bug::AckOnAppend) {
                        self.ack(token, group, span);
                    }
                }
                Effect::Failed { token, .. } => {
                    self.waiting.remove(&token.0);
                }
                Effect::Role {
                    group,
                    role,
                    term,
                    leader,
                } => {
                    trace!(
                        self,
                        "node {node} group {group}: {role:?} term {term} leader {leader:?}"
                    );
                }
                Effect::HighWatermark { .. } | Effect::ReadIndex { .. } => {}
                Effect::LogStartOffset {
                    group,
                    index,
                    offset,
                } => {
                    // Applied here: within what this replica has committed and synced, and
                    // below the entry itself.
                    let mgr = self.nodes[Self::idx(node)].mgr.as_ref().expect("alive");
                    let s = mgr.status(group).expect("group");
                    assert!(
                        index <= s.hw_index && offset < s.high_watermark,
                        "node {node} group {group}: log start {offset} (entry {index}) applied past {s:?}"
                    );
                    trace!(
                        self,
                        "node {node} group {group}: log start {offset} applied (entry {index})"
                    );
                    self.report.log_start_applied += 1;
                }
                Effect::Fetch {
                    group,
                    id,
                    offset,
                    max_bytes,
                    to,
                } => {
                    assert!(
                        !to.contains(&node),
                        "node {node} group {group}: a catch-up read names the leader itself"
                    );
                    self.report.fetches += 1;
                    if to.is_empty() {
                        self.report.fetches_for_nobody += 1;
                    }
                    let inc = self.nodes[Self::idx(node)].inc;
                    let d = self.rng.range(1, 30);
                    self.at(
                        d,
                        Ev::FetchDone {
                            node,
                            inc,
                            id,
                            group,
                            offset,
                            max_bytes,
                        },
                    );
                }
            }
        }
    }

    fn ack(&mut self, token: ProposalToken, group: GroupId, span: OffsetSpan) {
        if let Some((g, payload)) = self.waiting.remove(&token.0) {
            assert_eq!(g, group, "ack for another group");
            trace!(self, "group {group}: acked {token:?} at {span:?}");
            self.acked.push(Acked {
                group,
                span,
                payload,
            });
        }
    }

    fn start_fsync(&mut self, node: NodeId) {
        let n = &mut self.nodes[Self::idx(node)];
        if n.fsync_busy || n.mgr.is_none() {
            return;
        }
        let (inc, seq, len) = (n.inc, n.written_seq, n.disk.len());
        if seq <= n.fsync_seq {
            return;
        }
        n.fsync_busy = true;
        n.fsync_seq = seq;
        let d = self.rng.range(1, 8);
        self.at(
            d,
            Ev::FsyncDone {
                node,
                inc,
                seq,
                len,
            },
        );
    }

    fn send(&mut self, env: Envelope) {
        let (from, to) = (env.from, env.to);
        if self.net.cut.contains(&(from, to)) || self.rng.below(100) < self.net.drop_pct {
            return;
        }
        let copies = if self.rng.below(100) < self.net.dup_pct {
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Mostly short delays, sometimes a long one: reordering comes from both.
            let d = if self.rng.chance(1, 20) {
                self.rng.range(1, 10 * self.net.max_delay_ms)
            } else {
                self.rng.range(1, self.net.max_delay_ms)
            };
            self.at(d, Ev::Deliver(env.clone()));
        }
    }

    fn crash(&mut self, node: NodeId) {
        let n = &mut self.nodes[Self::idx(node)];
        if n.mgr.take().is_none() {
            return;
        }
        trace!(self, "crash node {node}");
        self.report.crashes += 1;
        let n = &mut self.nodes[Self::idx(node)];
        n.disk.crash(&mut self.rng);
        n.inc += 1;
        n.fsync_busy = false;
        n.written_seq = 0;
        n.fsync_seq = 0;
        let back = self.rng.range(100, 3_000);
        self.at(back, Ev::Restart(node));
        // The others' transports notice after a while (or not before it is back).
        for to in self.alive() {
            let d = self.rng.range(50, 1_500);
            self.at(
                d,
                Ev::Liveness {
                    to,
                    node,
                    alive: false,
                },
            );
        }
    }

    fn restart(&mut self, node: NodeId) {
        let i = Self::idx(node);
        if self.nodes[i].mgr.is_some() {
            return;
        }
        let inc = self.nodes[i].inc;
        let logs = self.nodes[i].disk.recover();
        trace!(self, "restart node {node}");
        let mgr = GroupManager::recover(self.mgr_config(node, inc), logs).expect("recover");
        self.nodes[i].mgr = Some(mgr);
        self.checker.restarted(node);
        // It learns who is up, and the others learn it is back (after a delay).
        for other in 1..=self.cfg.nodes {
            if other != node {
                let up = self.nodes[Self::idx(other)].mgr.is_some();
                let mgr = self.nodes[i].mgr.as_mut().expect("restarted");
                mgr.set_node_alive(other, up);
                if up {
                    let d = self.rng.range(1, 500);
                    self.at(
                        d,
                        Ev::Liveness {
                            to: other,
                            node,
                            alive: true,
                        },
                    );
                }
            }
        }
        self.at(1, Ev::Tick { node, inc });
        if self.cfg.bug == Some(Bug::FsyncLies) {
            self.at(500, Ev::LazySync { node, inc });
        }
    }

    /// Moves the start of `node`'s partition log of `group` up, to its high watermark with
    /// `all`, else to a random offset up to it.
    fn retention(&mut self, node: NodeId, group: GroupId, all: bool) {
        let mgr = self.nodes[Self::idx(node)].mgr.as_mut().expect("alive");
        // (With membership changes not every node holds every group.)
        let Some(s) = mgr.status(group) else {
            return;
        };
        let start = mgr.log(group).expect("group").start_offset();
        let offset = if all {
            s.high_watermark
        } else {
            self.rng.range(start as u64, s.high_watermark as u64) as i64
        };
        let (moved, fx) = mgr.compact(group, offset);
        trace!(
            self,
            "node {node} group {group}: retention to offset {offset}: log starts at {moved}"
        );
        self.report.compactions += u64::from(moved > start);
        self.effects(node, fx);
    }

    /// Every live node hears the truth about every other, after up to `max_delay_ms`.
    fn report_liveness(&mut self, max_delay_ms: u64) {
        for to in self.alive() {
            for node in 1..=self.cfg.nodes {
                if node != to {
                    let alive = self.nodes[Self::idx(node)].mgr.is_some();
                    let d = self.rng.range(0, max_delay_ms);
                    self.at(d, Ev::Liveness { to, node, alive });
                }
            }
        }
    }

    fn alive(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.mgr.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn cut_between(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.net.cut.insert((x, y));
                self.net.cut.insert((y, x));
            }
        }
    }

    fn nemesis(&mut self) {
        let n = self.cfg.nodes;
        let all: Vec<NodeId> = (1..=n).collect();
        let kinds = if self.cfg.membership { 20 } else { 14 };
        match self.rng.below(kinds) {
            14..=19 => {
                // A reassignment: a group moves to 3 random nodes (replacing a move in
                // progress, if any; the same set again cancels nothing, it is a no-op).
                let g = self.rng.below(self.cfg.groups);
                let mut pick = all.clone();
                let mut target = Vec::new();
                for _ in 0..3 {
                    let j = self.rng.below(pick.len() as u64) as usize;
                    target.push(pick.swap_remove(j));
                }
                trace!(self, "nemesis: reassign group {g} to {target:?}");
                self.report.reassignments += 1;
                self.targets.insert(g, target);
                self.done.remove(&g);
            }
            12 => {
                // A wrong report: a live node is said to be dead (or a dead one alive). It
                // may cost an election, never safety; the truth follows later.
                let alive = self.alive();
                if !alive.is_empty() {
                    let to = alive[self.rng.below(alive.len() as u64) as usize];
                    let node = self.rng.range(1, n);
                    let up = self.nodes[Self::idx(node)].mgr.is_some();
                    trace!(
                        self,
                        "nemesis: node {to} wrongly hears node {node} alive: {}",
                        !up
                    );
                    self.report.wrong_reports += 1;
                    self.at(
                        0,
                        Ev::Liveness {
                            to,
                            node,
                            alive: !up,
                        },
                    );
                    let later = self.rng.range(500, 5_000);
                    self.at(
                        later,
                        Ev::Liveness {
                            to,
                            node,
                            alive: up,
                        },
                    );
                }
            }
            13 => {
                // The client goes quiet: groups settle and quiesce mid-faults.
                let pause = self.rng.range(2_000, 6_000);
                trace!(self, "nemesis: client pauses {pause} ms");
                self.client_paused_until = self.now + pause;
            }
            10 => {
                // Retention on one replica: its partition log's start moves up, somewhere
                // up to its high watermark.
                let alive = self.alive();
                if !alive.is_empty() {
                    let v = alive[self.rng.below(alive.len() as u64) as usize];
                    let g = self.rng.below(self.cfg.groups);
                    self.retention(v, g, false);
                }
            }
            11 => {
                // A replica goes down, then retention on every other one moves the log start
                // to the high watermark: it must come back through a snapshot.
                let alive = self.alive();
                if !alive.is_empty() {
                    let v = alive[self.rng.below(alive.len() as u64) as usize];
                    self.crash(v);
                    for w in self.alive() {
                        for g in 0..self.cfg.groups {
                            self.retention(w, g, true);
                        }
                    }
                }
            }
            0 | 1 => {
                let alive = self.alive();
                if !alive.is_empty() {
                    let v = alive[self.rng.below(alive.len() as u64) as usize];
                    self.crash(v);
                }
            }
            2 => {
                // Power loss of a majority at once: their unsynced tails go together.
                trace!(self, "nemesis: crash a majority");
                let mut pick = all.clone();
                for _ in 0..self.quorum() {
                    let j = self.rng.below(pick.len() as u64) as usize;
                    let v = pick.swap_remove(j);
                    self.crash(v);
                }
            }
            3 => {
                let v = self.rng.range(1, n);
                trace!(self, "nemesis: isolate {v}");
                let others: Vec<NodeId> = all.iter().copied().filter(|&x| x != v).collect();
                self.cut_between(&[v], &others);
            }
            4 => {
                let (a, b): (Vec<NodeId>, Vec<NodeId>) =
                    all.iter().partition(|_| self.rng.chance(1, 2));
                trace!(self, "nemesis: split {a:?} | {b:?}");
                self.cut_between(&a, &b);
            }
            5 => {
                let (x, y) = (self.rng.range(1, n), self.rng.range(1, n));
                if x != y {
                    trace!(self, "nemesis: one-way cut {x}->{y}");
                    self.net.cut.insert((x, y));
                }
            }
            6 => {
                // A bridge: the first node hears everyone, the other two halves only it.
                let bridge = self.rng.range(1, n);
                let rest: Vec<NodeId> = all.iter().copied().filter(|&x| x != bridge).collect();
                let (a, b) = rest.split_at(rest.len() / 2);
                trace!(self, "nemesis: bridge {bridge} between {a:?} and {b:?}");
                self.cut_between(a, b);
            }
            7 => {
                self.net.drop_pct = self.rng.range(0, 20);
                self.net.dup_pct = self.rng.range(0, 10);
                self.net.max_delay_ms = self.rng.range(2, 100);
                trace!(
                    self,
                    "nemesis: drop {}% dup {}% delay <= {} ms",
                    self.net.drop_pct,
                    self.net.dup_pct,
                    self.net.max_delay_ms
                );
            }
            _ => {
                trace!(self, "nemesis: heal");
                self.net.cut.clear();
            }
        }
    }

    /// The membership driver (controller and brokers in one): joining replicas are created
    /// as learners from the settled configuration, the leader takes the next step, and once
    /// the group is done the replicas outside it are deleted.
    fn reconfigure(&mut self) {
        for g in 0..self.cfg.groups {
            let target = self.targets[&g].clone();
            let settled = self.settled[&g].clone();
            let joining: Vec<NodeId> = target
                .iter()
                .copied()
                .filter(|n| !settled.contains(n))
                .collect();
            for &n in &joining {
                let Some(mgr) = self.nodes[Self::idx(n)].mgr.as_mut() else {
                    continue;
                };
                if mgr.status(g).is_none() {
                    trace!(self, "node {n} group {g}: created as a learner");
                    let fx = mgr.create_learner(g, &settled).expect("create learner");
                    self.checker.forget(n, g);
                    self.effects(n, fx);
                }
            }
            if !self.done.contains(&g) {
                for v in self.alive() {
                    let mgr = self.nodes[Self::idx(v)].mgr.as_mut().expect("alive");
                    let (m, fx) = mgr.reconfigure(g, &target);
                    self.effects(v, fx);
                    match m {
                        Membership::Stepped(step) => {
                            trace!(self, "node {v} group {g}: {step:?} towards {target:?}");
                            self.report.membership_steps += 1;
                        }
                        Membership::Done => {
                            trace!(self, "node {v} group {g}: moved to {target:?}");
                            self.report.reassignments_done += 1;
                            self.settled.insert(g, target.clone());
                            self.done.insert(g);
                        }
                        Membership::NotLeader | Membership::Pending => {}
                    }
                }
            }
            if self.done.contains(&g) {
                for v in self.alive() {
                    let mgr = self.nodes[Self::idx(v)].mgr.as_mut().expect("alive");
                    if !target.contains(&v) && mgr.status(g).is_some() {
                        trace!(self, "node {v} group {g}: replica deleted");
                        let fx = mgr.remove_group(g);
                        self.checker.forget(v, g);
                        self.effects(v, fx);
                    }
                }
            }
        }
    }

    fn client(&mut self) {
        let g = self.rng.below(self.cfg.groups);
        let alive = self.alive();
        if alive.is_empty() {
            return;
        }
        // Mostly to a node that thinks it leads (as a client with fresh metadata would),
        // sometimes to anyone (stale metadata).
        let leaders: Vec<NodeId> = alive
            .iter()
            .copied()
            .filter(|&v| {
                self.nodes[Self::idx(v)]
                    .mgr
                    .as_ref()
                    .and_then(|m| m.status(g))
                    .is_some_and(|s| s.role == Role::Leader)
            })
            .collect();
        let pool = if !leaders.is_empty() && self.rng.chance(9, 10) {
            leaders
        } else {
            alive
        };
        let node = pool[self.rng.below(pool.len() as u64) as usize];
        self.next_token += 1;
        let token = self.next_token;
        if self.rng.chance(1, 16) {
            // A DeleteRecords: a log start anywhere up to what this node has committed.
            let mgr = self.nodes[Self::idx(node)].mgr.as_mut().expect("alive");
            let Some(s) = mgr.status(g) else {
                return;
            };
            let start = mgr.log(g).expect("group").start_offset();
            let offset =
                self.rng
                    .range(start as u64, s.high_watermark.max(start) as u64) as i64;
            trace!(
                self,
                "node {node} group {group}: propose log start {offset} ({token})",
                group = g
            );
            let mgr = self.nodes[Self::idx(node)].mgr.as_mut().expect("alive");
            let fx = mgr.propose_log_start(g, ProposalToken(token), offset);
            self.effects(node, fx);
            return;
        }
        let mut payload = token.to_be_bytes().to_vec();
        let filler = self.rng.below(32) as usize;
        payload.extend((0..filler).map(|i| (token as usize + i) as u8));
        let payload = Bytes::from(payload);
        let records = self.rng.range(1, 5) as u32;
        self.waiting.insert(token, (g, payload.clone()));
        let mgr = self.nodes[Self::idx(node)].mgr.as_mut().expect("alive");
        let fx = mgr.propose(
            g,
            ProposalToken(token),
            Batch {
                records,
                bytes: payload,
            },
        );
        self.effects(node, fx);
    }

    fn check_durable(&self, when: &str) -> Result<(), String> {
        let disks: Vec<_> = self
            .nodes
            .iter()
            .map(|n| (n.id, n.disk.synced_logs()))
            .collect();
        self.checker
            .check_durable(&self.acked, &disks, self.quorum())
            .map_err(|e| format!("{when}: {e}"))
    }

    /// After the healed quiet: every group has one ready leader in its latest term, every
    /// replica caught up to the same high watermark with the same committed prefix, and
    /// every acknowledged batch durable on a quorum.
    fn final_checks(&mut self) -> Result<(), String> {
        let mut total = 0;
        for g in 0..self.cfg.groups {
            let target = &self.targets[&g];
            if !self.done.contains(&g) {
                return Err(format!(
                    "after healing, group {g} never moved from {:?} to {target:?}",
                    self.settled[&g]
                ));
            }
            for n in &self.nodes {
                let held = n.mgr.as_ref().expect("restarted").status(g).is_some();
                if held != target.contains(&n.id) {
                    return Err(format!(
                        "after healing, node {} holds a replica of group {g}: {held}, replicas {target:?}",
                        n.id
                    ));
                }
            }
            let statuses: Vec<_> = self
                .nodes
                .iter()
                .filter(|n| target.contains(&n.id))
                .map(|n| {
                    (
                        n.id,
                        n.mgr.as_ref().expect("restarted").status(g).expect("group"),
                    )
                })
                .collect();
            let leaders: Vec<_> = statuses
                .iter()
                .filter(|(_, s)| s.role == Role::Leader && s.ready)
                .collect();
            let [(leader, ls)] = leaders[..] else {
                return Err(format!(
                    "after healing, group {g} has no single ready leader: {statuses:?}"
                ));
            };
            let mut want = target.clone();
            want.sort_unstable();
            for (n, _) in &statuses {
                let conf = self.nodes[Self::idx(*n)]
                    .mgr
                    .as_ref()
                    .expect("alive")
                    .conf(g);
                if conf != Some((want.clone(), Vec::new())) {
                    return Err(format!(
                        "after healing, node {n} has group {g}'s configuration {conf:?}, replicas {want:?}"
                    ));
                }
            }
            for (n, s) in &statuses {
                if s.hw_index != ls.commit_index || s.leader != Some(*leader) {
                    return Err(format!(
                        "after healing, group {g}: node {n} at {s:?}, leader {leader} at {ls:?}"
                    ));
                }
                let node = &self.nodes[Self::idx(*n)];
                let log = node.mgr.as_ref().expect("alive").log(g).expect("group");
                self.checker
                    .check_full_prefix(*n, g, log, &node.disk, s.hw_index)?;
            }
            if ls.commit_index != self.checker.committed_len(g) {
                return Err(format!(
                    "group {g}: final commit {} but {} entries were seen committed",
                    ls.commit_index,
                    self.checker.committed_len(g)
                ));
            }
            total += ls.commit_index;
            self.report.max_term = self.report.max_term.max(self.checker.max_term(g));
        }
        self.check_durable("after healing")?;
        self.report.acked = self.acked.len();
        self.report.committed_entries = total;
        Ok(())
    }
}
