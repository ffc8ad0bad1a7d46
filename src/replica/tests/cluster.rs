//! Three group managers in one process, each with its own `ReplicaStore` on real files,
//! wired by an in-memory envelope queue: replicas hold identical batches at identical
//! offsets, survive restarts, truncate a divergent suffix, serve lagging followers from the
//! partition log, and restart a follower's log through a snapshot.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use bytes::Bytes;
use sluice_raft::{
    Batch, Config, Effect, Envelope, GroupId, GroupManager, NodeId, ProposalToken, ProposeError,
    Role,
};
use sluice_replica::control::{testing::kafka_batch, CONTROL_LEADER_CHANGE};
use sluice_replica::{Error, LogSync, PartitionSpec, ReplicaStore};
use sluice_storage::fault::FaultyStorage;
use sluice_storage::hdr::{Header, HEADER_BYTES, OFF_MAGIC};
use sluice_storage::std_io::StdStorage;
use sluice_storage::{BatchCache, LogConfig};

const TICK_MS: u64 = 50;
const VOTERS: [NodeId; 3] = [1, 2, 3];

struct Node {
    store: ReplicaStore<FaultyStorage>,
    /// With `Cluster::pipelined`: the log sync begun and not yet run (it runs at the start
    /// of the next step, so the writes of every delivery until then go beside it).
    sync_out: Option<LogSync<FaultyStorage>>,
    mgr: GroupManager,
    /// Models what a power loss keeps (only fdatasynced contents, directory-synced names).
    storage: FaultyStorage,
}

struct Cluster {
    root: tempfile::TempDir,
    nodes: BTreeMap<NodeId, Node>,
    queue: VecDeque<Envelope>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    now: u64,
    cache_bytes: u64,
    /// Committed proposals: token → (group, base offset, term).
    committed: BTreeMap<u64, (GroupId, i64, u64)>,
    failed: BTreeMap<u64, ProposeError>,
    next_token: u64,
    /// Raw batches proposed, by token.
    proposed: BTreeMap<u64, Vec<u8>>,
    /// Nodes whose store failed (an injected IO error): they lose power at the end of the
    /// step. Without `allow_errors` a store error fails the test.
    broken: BTreeSet<NodeId>,
    allow_errors: bool,
    /// Votes and pre-votes to and from this node are dropped (it misses elections but
    /// gets everything else).
    no_votes: Option<NodeId>,
    /// Drive the stores as the broker does: a log sync out while further appends are
    /// written (`ReplicaStore::begin_sync`), instead of `ReplicaStore::drive`.
    pipelined: bool,
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        write_buffer_bytes: 8192,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

impl Cluster {
    async fn new(cache_bytes: u64) -> Cluster {
        let mut c = Cluster {
            root: tempfile::tempdir().unwrap(),
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            now: 0,
            cache_bytes,
            committed: BTreeMap::new(),
            failed: BTreeMap::new(),
            next_token: 0,
            proposed: BTreeMap::new(),
            broken: BTreeSet::new(),
            allow_errors: false,
            no_votes: None,
            pipelined: false,
        };
        for n in VOTERS {
            c.start(n).await;
        }
        c
    }

    fn node_dir(&self, n: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{n}"))
    }

    /// Starts node `n` from whatever its directory holds.
    async fn start(&mut self, n: NodeId) {
        let data = self.node_dir(n);
        let layout_root = data.clone();
        let layout = Rc::new(move |g: GroupId| {
            Some(PartitionSpec {
                offline: false,
                dir: layout_root.join(format!("t-{g}")),
                config: log_config(),
                name: format!("t-{g}"),
            })
        });
        let cfg = Config {
            node_id: n,
            seed: 17,
            entry_cache_bytes_max: self.cache_bytes,
            ..Config::default()
        };
        let storage = FaultyStorage::default();
        storage.plan.model_durability();
        let (store, mut mgr) = ReplicaStore::open(
            Rc::new(storage.clone()),
            data.join("raft"),
            Rc::new(RefCell::new(BatchCache::new(1 << 20))),
            layout,
            cfg,
        )
        .await
        .expect("recover");
        let fx = mgr.tick(self.now);
        self.report_alive(n, true);
        self.nodes.insert(
            n,
            Node {
                store,
                sync_out: None,
                mgr,
                storage,
            },
        );
        self.handle(n, fx).await;
    }

    /// Kills node `n`: everything in memory goes (written bytes stay in the files).
    /// Node `n` stops cleanly: its store closes (everything synced, commit indexes
    /// included), then it is gone as after [`Self::kill`].
    async fn close(&mut self, n: NodeId) {
        if let Some(node) = self.nodes.get_mut(&n) {
            if let Some(sync) = node.sync_out.take() {
                node.store.finish_sync(sync.run().await).unwrap();
            }
            node.store.close().await.unwrap();
        }
        self.kill(n);
    }

    fn kill(&mut self, n: NodeId) {
        self.nodes.remove(&n);
        self.queue.retain(|e| e.to != n);
        self.report_alive(n, false);
    }

    /// What the transport's node liveness would tell the others (quiesced followers need
    /// it to notice a dead leader).
    fn report_alive(&mut self, n: NodeId, alive: bool) {
        for (_, node) in self.nodes.iter_mut().filter(|(m, _)| **m != n) {
            node.mgr.set_node_alive(n, alive);
        }
    }

    /// Node `n` loses power: its files go back to what was synced.
    fn power_loss(&mut self, n: NodeId) {
        let node = self.nodes.remove(&n).unwrap();
        node.storage.plan.power_loss();
        drop(node);
        self.queue.retain(|e| e.to != n);
        self.report_alive(n, false);
    }

    async fn create_group(&mut self, g: GroupId) {
        for n in VOTERS {
            let fx = self
                .nodes
                .get_mut(&n)
                .unwrap()
                .mgr
                .create_group(g, &VOTERS)
                .unwrap();
            self.handle(n, fx).await;
        }
    }

    async fn handle(&mut self, n: NodeId, fx: Vec<Effect>) {
        let now = self.now as i64;
        if self.broken.contains(&n) {
            return;
        }
        let Some(node) = self.nodes.get_mut(&n) else {
            return;
        };
        let driven = if self.pipelined {
            drive_pipelined(node, fx, now).await
        } else {
            node.store.drive(&mut node.mgr, fx, now).await
        };
        let out = match driven {
            Ok(out) => out,
            Err(e) => {
                assert!(self.allow_errors, "node {n}: {e}");
                self.broken.insert(n);
                return;
            }
        };
        for e in out {
            match e {
                Effect::Send(mut env) if !self.cut.contains(&(env.from, env.to)) => {
                    if self.no_votes.is_some_and(|v| v == env.from || v == env.to) {
                        use raft::eraftpb::MessageType::*;
                        env.messages.retain(|(_, m)| {
                            !matches!(
                                m.get_msg_type(),
                                MsgRequestVote
                                    | MsgRequestVoteResponse
                                    | MsgRequestPreVote
                                    | MsgRequestPreVoteResponse
                            )
                        });
                    }
                    self.queue.push_back(env);
                }
                Effect::Committed { group, token, span } => {
                    self.committed
                        .insert(token.0, (group, span.base, span.term));
                }
                Effect::Failed { token, error, .. } => {
                    self.failed.insert(token.0, error);
                }
                _ => {}
            }
        }
    }

    /// One tick on every node, then every envelope in flight delivered.
    async fn step(&mut self) {
        self.now += TICK_MS;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &n in &ids {
            let node = self.nodes.get_mut(&n).unwrap();
            if let Some(sync) = node.sync_out.take() {
                let done = sync.run().await;
                let fx = match node.store.finish_sync(done) {
                    Ok(seq) => node.mgr.persisted(seq),
                    Err(e) => {
                        assert!(self.allow_errors, "node {n}: {e}");
                        self.broken.insert(n);
                        continue;
                    }
                };
                self.handle(n, fx).await;
            }
        }
        for n in ids {
            let fx = self.nodes.get_mut(&n).unwrap().mgr.tick(self.now);
            self.handle(n, fx).await;
        }
        for _ in 0..8 {
            let envs: Vec<Envelope> = self.queue.drain(..).collect();
            if envs.is_empty() {
                break;
            }
            for env in envs {
                let to = env.to;
                if self.cut.contains(&(env.from, to)) {
                    continue;
                }
                let Some(node) = self.nodes.get_mut(&to) else {
                    continue;
                };
                let fx = node.mgr.step(env);
                self.handle(to, fx).await;
            }
        }
        for n in std::mem::take(&mut self.broken) {
            self.power_loss(n);
        }
    }

    fn leader(&self, g: GroupId) -> Option<NodeId> {
        self.nodes.iter().find_map(|(n, node)| {
            let s = node.mgr.status(g)?;
            (s.role == Role::Leader && s.ready).then_some(*n)
        })
    }

    async fn await_leader(&mut self, g: GroupId) -> NodeId {
        for _ in 0..2000 {
            if let Some(l) = self.leader(g) {
                return l;
            }
            self.step().await;
        }
        let st: Vec<_> = self
            .nodes
            .iter()
            .map(|(n, node)| (*n, node.mgr.status(g)))
            .collect();
        panic!("no leader for group {g}: {st:#?}");
    }

    /// Proposes a batch of `records` records on `n`; returns its token.
    async fn propose(&mut self, n: NodeId, g: GroupId, records: usize) -> u64 {
        self.next_token += 1;
        let token = self.next_token;
        let values: Vec<Vec<u8>> = (0..records)
            .map(|r| format!("g{g}-t{token}-r{r}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
        let raw = kafka_batch(&refs, 1_700_000_000_000 + token as i64);
        self.proposed.insert(token, raw.clone());
        let batch = Batch {
            records: records as u32,
            bytes: Bytes::from(raw),
        };
        let fx = self
            .nodes
            .get_mut(&n)
            .unwrap()
            .mgr
            .propose(g, ProposalToken(token), batch);
        self.handle(n, fx).await;
        token
    }

    async fn await_outcome(&mut self, tokens: &[u64]) {
        for _ in 0..2000 {
            if tokens
                .iter()
                .all(|t| self.committed.contains_key(t) || self.failed.contains_key(t))
            {
                return;
            }
            self.step().await;
        }
        panic!("proposals {tokens:?} never finished");
    }

    /// Runs until every node's replica of `g` has the same high watermark and last index.
    async fn await_converged(&mut self, g: GroupId) {
        for _ in 0..4000 {
            let st: BTreeSet<_> = self
                .nodes
                .values()
                .map(|n| {
                    let s = n.mgr.status(g).unwrap();
                    (s.high_watermark, s.last_index, s.commit_index)
                })
                .collect();
            if st.len() == 1 && self.nodes.len() == 3 {
                return;
            }
            self.step().await;
        }
        panic!("group {g} never converged");
    }

    /// Every batch of node `n`'s partition log of `g` (from its start to its durable end,
    /// committed or not).
    async fn batches(&self, n: NodeId, g: GroupId) -> Vec<(i64, Vec<u8>)> {
        let log = self.nodes[&n].store.log(g).unwrap();
        let mut out = Vec::new();
        let mut at = log.log_start_offset();
        loop {
            let (bytes, next) = log.read_replica(at, 1 << 20).await.unwrap();
            if bytes.is_empty() {
                break;
            }
            let mut pos = 0;
            while pos < bytes.len() {
                let h = Header::parse(&bytes[pos..]).unwrap();
                out.push((h.base_offset, bytes[pos..pos + h.size].to_vec()));
                pos += h.size;
            }
            at = next;
        }
        out
    }

    /// The partition logs of `g` on every node hold identical bytes at identical offsets
    /// up to the shortest (a follower may trail by what it has not yet received), with the
    /// committed proposals at their offsets stamped with their term; returns the batches.
    async fn check_logs(&self, g: GroupId) -> Vec<(i64, Vec<u8>)> {
        let mut logs = Vec::new();
        for (&n, node) in &self.nodes {
            logs.push(self.batches(n, g).await);
            // Readers of the partition log see exactly what Raft published.
            assert_eq!(
                node.store.log(g).unwrap().high_watermark(),
                node.mgr.status(g).unwrap().high_watermark,
                "node {n} group {g}: partition log's high watermark"
            );
        }
        let start = logs
            .iter()
            .map(|l| l.first().map_or(i64::MAX, |b| b.0))
            .max()
            .unwrap();
        let trimmed: Vec<Vec<_>> = logs
            .iter()
            .map(|l| l.iter().filter(|b| b.0 >= start).cloned().collect())
            .collect();
        let shortest = trimmed.iter().map(|l| l.len()).min().unwrap();
        for l in &trimmed[1..] {
            assert!(
                l[..shortest] == trimmed[0][..shortest],
                "group {g}: replicas differ"
            );
        }
        let longest = trimmed.iter().max_by_key(|l| l.len()).unwrap().clone();
        let by_offset: BTreeMap<i64, &Vec<u8>> = longest.iter().map(|(o, b)| (*o, b)).collect();
        for (token, (group, base, term)) in &self.committed {
            if *group != g || *base < start {
                continue;
            }
            let stored = by_offset[base];
            let h = Header::parse(stored).unwrap();
            h.verify(stored).unwrap();
            assert_eq!(h.leader_epoch as u64, *term, "token {token}: epoch = term");
            assert!(!h.is_control());
            assert_eq!(
                stored[OFF_MAGIC..],
                self.proposed[token][OFF_MAGIC..],
                "token {token}"
            );
        }
        longest
    }
}

/// What `ReplicaStore::drive` does, the way the broker's driver does it: quiet writes go
/// beside the node's log sync out, which the next step runs; another write waits for it and
/// is synced at once; appends are written ahead (unsynced); with nothing out, a sync
/// begins (or is performed, when the store declines one to run beside writes).
async fn drive_pipelined(
    node: &mut Node,
    mut effects: Vec<Effect>,
    now_ms: i64,
) -> Result<Vec<Effect>, Error> {
    let mut out = Vec::new();
    loop {
        let mut more = Vec::new();
        let mut fetches = Vec::new();
        for e in effects.drain(..) {
            match e {
                Effect::Persist { seq, writes } => {
                    if node.store.quiet(&writes) {
                        node.store.write(seq, writes, now_ms).await?;
                        continue;
                    }
                    if let Some(sync) = node.sync_out.take() {
                        let done = sync.run().await;
                        let seq = node.store.finish_sync(done)?;
                        more.extend(node.mgr.persisted(seq));
                    }
                    node.store.write(seq, writes, now_ms).await?;
                    let seq = node.store.sync().await?;
                    more.extend(node.mgr.persisted(seq));
                }
                Effect::Fetch {
                    group,
                    id,
                    offset,
                    max_bytes,
                    ..
                } => fetches.push((group, id, offset, max_bytes)),
                Effect::HighWatermark { group, offset, .. } => {
                    node.store.high_watermark(group, offset);
                    out.push(e);
                }
                Effect::LogStartOffset { group, offset, .. } => {
                    node.store.log_start_offset(group, offset);
                    out.push(e);
                }
                other => out.push(other),
            }
        }
        // As the broker's writer does: what was appended is written now, unsynced (the
        // next sync covers it; a power loss before it may take it).
        sluice_replica::write_ahead(&node.store.take_logs_to_write()).await;
        if node.sync_out.is_none() && node.store.unsynced() {
            match node.store.begin_sync() {
                Some(sync) => node.sync_out = Some(sync),
                None => {
                    let seq = node.store.sync().await?;
                    more.extend(node.mgr.persisted(seq));
                }
            }
        }
        for (group, id, offset, max_bytes) in fetches {
            let batches = node.store.fetch(group, offset, max_bytes).await;
            more.extend(node.mgr.entries_fetched(id, batches));
        }
        if more.is_empty() {
            return Ok(out);
        }
        effects = more;
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutor::default().run(f)
}

/// The control record type of a control batch written by the store.
fn control_type(b: &[u8]) -> Option<i16> {
    let h = Header::parse(b)?;
    if !h.is_control() {
        return None;
    }
    // length varint, attributes, ts delta, offset delta, key length (all one byte here),
    // key version int16, key type int16.
    let key = HEADER_BYTES + 5;
    Some(i16::from_be_bytes([b[key + 2], b[key + 3]]))
}

#[test]
fn replicas_hold_identical_batches_at_identical_offsets_and_survive_restarts() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        c.create_group(11).await;
        let mut tokens = Vec::new();
        for g in [10, 11] {
            let l = c.await_leader(g).await;
            for i in 0..20 {
                tokens.push(c.propose(l, g, 1 + i % 4).await);
            }
        }
        c.await_outcome(&tokens).await;
        assert!(tokens.iter().all(|t| c.committed.contains_key(t)));
        for g in [10, 11] {
            c.await_converged(g).await;
            let log = c.check_logs(g).await;
            // The election no-op is a control batch (LEADER_CHANGE) at offset 0 in term 1+.
            assert_eq!(log[0].0, 0);
            assert_eq!(control_type(&log[0].1), Some(CONTROL_LEADER_CHANGE));
            assert_eq!(log.len(), 21);
        }

        // A follower and then the leader of group 10 restart from their files.
        let l = c.leader(10).unwrap();
        let f = VOTERS.into_iter().find(|&n| n != l).unwrap();
        for n in [f, l] {
            let before = c.nodes[&n].mgr.status(10).unwrap();
            c.kill(n);
            for _ in 0..5 {
                c.step().await;
            }
            c.start(n).await;
            let after = c.nodes[&n].mgr.status(10).unwrap();
            assert_eq!(after.last_index, before.last_index, "node {n}");
            // The commit may come back lower (commit-only state waits for a later sync),
            // never past the log or what it was.
            assert!(after.commit_index <= before.commit_index.min(after.last_index));
            let l = c.await_leader(10).await;
            let mut more = Vec::new();
            for _ in 0..5 {
                more.push(c.propose(l, 10, 2).await);
            }
            c.await_outcome(&more).await;
            assert!(more.iter().all(|t| c.committed.contains_key(t)));
            c.await_converged(10).await;
            c.check_logs(10).await;
        }
        // Every acknowledged batch is still where it was acknowledged.
        let log = c.check_logs(10).await;
        let n = c.committed.values().filter(|v| v.0 == 10).count();
        assert_eq!(
            log.iter().filter(|b| control_type(&b.1).is_none()).count(),
            n
        );
    });
}

#[test]
fn a_divergent_suffix_is_truncated() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        let old = c.await_leader(10).await;
        let first = c.propose(old, 10, 3).await;
        c.await_outcome(&[first]).await;
        c.await_converged(10).await;
        // Isolate the leader; it appends (and syncs) entries nobody else gets.
        for n in VOTERS {
            if n != old {
                c.cut.insert((old, n));
                c.cut.insert((n, old));
            }
        }
        let lost: Vec<u64> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(c.propose(old, 10, 2).await);
            }
            v
        };
        let new = loop {
            c.step().await;
            if let Some(l) = c.leader(10).filter(|&l| l != old) {
                break l;
            }
        };
        let kept: Vec<u64> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(c.propose(new, 10, 1).await);
            }
            v
        };
        c.await_outcome(&kept).await;
        c.cut.clear();
        c.await_outcome(&lost).await;
        c.await_converged(10).await;
        assert!(lost
            .iter()
            .all(|t| c.failed.get(t) == Some(&ProposeError::Superseded)));
        assert!(kept.iter().all(|t| c.committed.contains_key(t)));
        assert!(c.nodes[&old].store.stats().truncations > 0);
        let log = c.check_logs(10).await;
        assert_eq!(
            c.batches(old, 10).await,
            log,
            "the old leader's log is the new leader's"
        );
        // And it recovers as such.
        c.kill(old);
        c.start(old).await;
        c.await_converged(10).await;
        assert_eq!(c.batches(old, 10).await, log);
    });
}

#[test]
fn a_lagging_follower_is_served_from_the_partition_log() {
    run(async {
        // No applied entry stays in memory: catching up must read the partition log.
        let mut c = Cluster::new(0).await;
        c.create_group(10).await;
        let l = c.await_leader(10).await;
        let lag = VOTERS.into_iter().find(|&n| n != l).unwrap();
        c.kill(lag);
        let mut tokens = Vec::new();
        for i in 0..40 {
            tokens.push(c.propose(l, 10, 1 + i % 3).await);
        }
        c.await_outcome(&tokens).await;
        assert!(tokens.iter().all(|t| c.committed.contains_key(t)));
        c.start(lag).await;
        c.await_converged(10).await;
        let fetches: u64 = c.nodes.values().map(|n| n.store.stats().fetches).sum();
        assert!(fetches > 0, "the follower was caught up from memory");
        assert!(c.nodes.values().all(|n| n.mgr.fetch_mismatches() == 0));
        let log = c.check_logs(10).await;
        assert_eq!(c.batches(lag, 10).await, log);
        assert_eq!(log.len(), 41);
    });
}

#[test]
fn a_snapshot_restarts_a_lagging_followers_log_at_the_leaders_start() {
    run(async {
        // Entries stay in memory, so the log may start at any of them.
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        let l = c.await_leader(10).await;
        let lag = VOTERS.into_iter().find(|&n| n != l).unwrap();
        let first = c.propose(l, 10, 2).await;
        c.await_outcome(&[first]).await;
        c.await_converged(10).await;
        c.kill(lag);
        let mut tokens = Vec::new();
        for _ in 0..60 {
            tokens.push(c.propose(l, 10, 5).await);
        }
        c.await_outcome(&tokens).await;
        // Retention moves the log start on both live replicas.
        let hw = c.nodes[&l].mgr.status(10).unwrap().high_watermark;
        let mut starts = Vec::new();
        let live: Vec<NodeId> = c.nodes.keys().copied().collect();
        for n in live {
            let (start, fx) = c.nodes.get_mut(&n).unwrap().mgr.compact(10, hw - 20);
            c.handle(n, fx).await;
            starts.push(start);
            let log = c.nodes[&n].store.log(10).unwrap();
            assert_eq!(
                log.log_start_offset(),
                start,
                "segments go after the record"
            );
        }
        assert!(starts.iter().all(|&s| s > 12), "{starts:?}");
        c.start(lag).await;
        c.await_converged(10).await;
        assert_eq!(c.nodes[&lag].store.stats().resets, 1);
        // The snapshot carries the leader's log start.
        let leader = c.leader(10).unwrap();
        let leader_start = c.nodes[&leader].store.log(10).unwrap().log_start_offset();
        assert!(starts.contains(&leader_start));
        let log = c.nodes[&lag].store.log(10).unwrap();
        assert_eq!(log.log_start_offset(), leader_start);
        // Replication goes on from there, and the follower recovers its restarted log.
        let more = c.propose(c.leader(10).unwrap(), 10, 1).await;
        c.await_outcome(&[more]).await;
        c.await_converged(10).await;
        let want = c.check_logs(10).await;
        c.kill(lag);
        c.start(lag).await;
        c.await_converged(10).await;
        let got = c.batches(lag, 10).await;
        assert_eq!(got[..], want[want.len() - got.len()..]);
    });
}

#[test]
fn a_commit_index_beyond_the_recovered_log_is_an_error_naming_the_group() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(42).await;
        let l = c.await_leader(42).await;
        let t = c.propose(l, 42, 2).await;
        c.await_outcome(&[t]).await;
        // Closed cleanly, so that the state file holds the commit index (a sync of commit
        // changes alone may leave them for later).
        c.close(l).await;
        // The partition log loses its data behind the state file's back.
        let dir = c.node_dir(l).join("t-42");
        for e in std::fs::read_dir(&dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        let layout_root = c.node_dir(l);
        let err = ReplicaStore::open(
            Rc::new(StdStorage),
            c.node_dir(l).join("raft"),
            Rc::new(RefCell::new(BatchCache::new(1 << 20))),
            Rc::new(move |g: GroupId| {
                Some(PartitionSpec {
                    offline: false,
                    dir: layout_root.join(format!("t-{g}")),
                    config: log_config(),
                    name: format!("t-{g}"),
                })
            }),
            Config {
                node_id: l,
                ..Config::default()
            },
        )
        .await
        .err()
        .expect("a damaged store is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("group 42") && msg.contains("commit index"),
            "{msg}"
        );
    });
}

/// Nodes lose power at many points (mid-round, between a write and its sync): each recovers
/// (a durable commit index never exceeds its durable log, or `open` would refuse it), and
/// every acknowledged batch stays at its offsets.
#[test]
fn power_losses_keep_every_acknowledged_batch() {
    for seed in 1..=24 {
        power_losses(seed, false, false);
    }
}

/// The same with every store driven as the broker drives it: appends written while the
/// previous log sync is out, power lost with a sync begun and not run.
#[test]
fn power_losses_keep_every_acknowledged_batch_with_syncs_beside_writes() {
    for seed in 1..=24 {
        power_losses(seed, true, false);
    }
}

/// The same with retention moving a replica's log start every few rounds: the log-start
/// write goes beside the log sync out, and the next sync moves the start once its record is
/// durable, whenever power goes.
#[test]
fn power_losses_with_retention_keep_every_acknowledged_batch_with_syncs_beside_writes() {
    for seed in 1..=16 {
        power_losses(seed, true, true);
    }
}

fn power_losses(seed: u64, pipelined: bool, retention: bool) {
    run(async {
        let mut c = Cluster::new(4096).await;
        c.pipelined = pipelined;
        c.create_group(10).await;
        let mut tokens = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        for round in 0..40 {
            if let Some(l) = c.leader(10) {
                for _ in 0..=next(3) {
                    tokens.push(c.propose(l, 10, 1 + next(4) as usize).await);
                }
            }
            for _ in 0..next(12) {
                c.step().await;
            }
            if retention && round % 4 == 1 {
                // Retention on one replica: its log start moves to 6 offsets below its high
                // watermark (a no-op when that is not past its start).
                let n = VOTERS[next(3) as usize];
                let hw = c.nodes[&n].mgr.status(10).unwrap().high_watermark;
                let (_, fx) = c.nodes.get_mut(&n).unwrap().mgr.compact(10, hw - 6);
                c.handle(n, fx).await;
                for _ in 0..next(4) {
                    c.step().await;
                }
            }
            let victim = VOTERS[next(3) as usize];
            c.power_loss(victim);
            if round % 3 == 0 {
                for _ in 0..next(40) {
                    c.step().await;
                }
            }
            c.start(victim).await;
        }
        c.await_leader(10).await;
        let last = c.propose(c.leader(10).unwrap(), 10, 1).await;
        c.await_outcome(&[last]).await;
        c.await_converged(10).await;
        let acked = tokens
            .iter()
            .filter(|t| c.committed.contains_key(t))
            .count();
        assert!(
            acked > 10,
            "seed {seed}: only {acked} of {} acknowledged",
            tokens.len()
        );
        // check_logs finds every acknowledged batch at its offset with its term (from the
        // latest log start of any replica on, with retention).
        let log = c.check_logs(10).await;
        for n in VOTERS {
            let mut got = c.batches(n, 10).await;
            if retention {
                got.retain(|b| b.0 >= log[0].0);
            }
            assert_eq!(got, log, "seed {seed}: node {n}");
        }
        if retention {
            let starts: Vec<i64> = VOTERS
                .iter()
                .map(|n| c.nodes[n].store.log(10).unwrap().log_start_offset())
                .collect();
            assert!(
                starts.iter().any(|&s| s > 0),
                "seed {seed}: starts {starts:?}"
            );
        }
    });
}

/// A follower that missed an election learns the new term from the new leader's first
/// append (entries and the new term in one round), and the sync of that round fails at its
/// n-th fdatasync and the node loses power: whatever mix of log and state file survived
/// (entries of a term newer than the durable hard state included), it recovers and catches
/// up.
#[test]
fn a_crash_in_any_sync_of_a_term_change_recovers() {
    for n in 1..=8 {
        crash_in_term_change(n);
    }
}

fn crash_in_term_change(fail_at: u32) {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        let l1 = c.await_leader(10).await;
        let t = c.propose(l1, 10, 1).await;
        c.await_outcome(&[t]).await;
        c.await_converged(10).await;
        let term1 = c.nodes[&l1].mgr.status(10).unwrap().term;
        let f = VOTERS.into_iter().find(|&n| n != l1).unwrap();
        c.no_votes = Some(f);
        // The follower's n-th next fdatasync fails (then it loses power).
        c.nodes[&f].storage.plan.fail_fsync_in.set(fail_at);
        c.allow_errors = true;
        // The old leader restarts: a new term the follower takes no part in electing.
        c.kill(l1);
        for _ in 0..5 {
            c.step().await;
        }
        c.start(l1).await;
        let l2 = loop {
            c.step().await;
            if let Some(l) = c.leader(10) {
                break l;
            }
        };
        assert!(c.nodes[&l2].mgr.status(10).unwrap().term > term1);
        let t = c.propose(l2, 10, 2).await;
        c.await_outcome(&[t]).await;
        assert!(c.committed.contains_key(&t));
        for _ in 0..40 {
            c.step().await;
        }
        c.allow_errors = false;
        c.no_votes = None;
        if !c.nodes.contains_key(&f) {
            c.start(f).await;
        }
        c.await_converged(10).await;
        let log = c.check_logs(10).await;
        assert_eq!(c.batches(f, 10).await, log, "fail at {fail_at}");
    });
}

#[test]
fn readers_see_only_committed_entries_also_after_a_restart() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        let l = c.await_leader(10).await;
        let t = c.propose(l, 10, 2).await;
        c.await_outcome(&[t]).await;
        c.await_converged(10).await;
        c.check_logs(10).await;
        let hw = c.nodes[&l].mgr.status(10).unwrap().high_watermark;
        assert!(hw >= 3, "the no-op and two records");
        // The followers hear nothing more from the leader: its next batch is durable in its
        // partition log but never commits.
        for n in VOTERS.into_iter().filter(|&n| n != l) {
            c.cut.insert((l, n));
        }
        c.propose(l, 10, 3).await;
        let log = c.nodes[&l].store.log(10).unwrap();
        let (above, next) = log.read_replica(hw, 1 << 20).await.unwrap();
        assert!(!above.is_empty() && next == hw + 3, "replication reads it");
        assert_eq!(log.high_watermark(), hw, "readers do not");
        let r = log.read(hw, 1 << 20).await.unwrap();
        assert!(r.records.is_empty());
        assert_eq!(r.high_watermark, hw);
        // Restarted, readers resume at the recovered commit, not at the durable end: after
        // a clean stop exactly there, after a kill at or below it (commit-only state may
        // not be durable yet).
        c.close(l).await;
        c.start(l).await;
        let log = c.nodes[&l].store.log(10).unwrap();
        assert_eq!(log.log_end_offset(), hw + 3);
        assert_eq!(log.high_watermark(), hw);
        assert!(log.read(hw, 1 << 20).await.unwrap().records.is_empty());
        c.kill(l);
        c.start(l).await;
        let log = c.nodes[&l].store.log(10).unwrap();
        assert_eq!(log.log_end_offset(), hw + 3);
        assert!(log.high_watermark() <= hw);
        assert!(log.read(hw, 1 << 20).await.unwrap().records.is_empty());
        // Healed, every replica's readers follow Raft's high watermark again.
        c.cut.clear();
        let l = c.await_leader(10).await;
        let t = c.propose(l, 10, 1).await;
        c.await_outcome(&[t]).await;
        c.await_converged(10).await;
        c.check_logs(10).await;
    });
}

#[test]
fn a_create_over_a_non_empty_partition_directory_is_refused() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        // Data the state file knows nothing of, where group 12's log would go.
        let dir = c.node_dir(1).join("t-12");
        let stale = sluice_storage::PartitionLog::open(
            Rc::new(StdStorage),
            dir.clone(),
            log_config(),
            Rc::new(RefCell::new(BatchCache::new(1 << 20))),
            "stale".into(),
        )
        .await
        .unwrap();
        stale
            .append(&kafka_batch(&[b"keep me"], 1_700_000_000_000), 0)
            .unwrap();
        stale.close().await.unwrap();
        drop(stale);
        let node = c.nodes.get_mut(&1).unwrap();
        let fx = node.mgr.create_group(12, &VOTERS).unwrap();
        let e = node
            .store
            .drive(&mut node.mgr, fx, 0)
            .await
            .expect_err("refused");
        let msg = e.to_string();
        assert!(
            matches!(e, sluice_replica::Error::Damaged(_))
                && msg.contains("group 12")
                && msg.contains(&dir.display().to_string()),
            "{msg}"
        );
        // The data is still there.
        let log = sluice_storage::PartitionLog::open(
            Rc::new(StdStorage),
            dir,
            log_config(),
            Rc::new(RefCell::new(BatchCache::new(1 << 20))),
            "stale".into(),
        )
        .await
        .unwrap();
        assert_eq!(log.log_end_offset(), 1);
    });
}

#[test]
fn a_removed_group_is_gone_after_a_restart_and_comes_back_fresh() {
    run(async {
        let mut c = Cluster::new(32 << 20).await;
        c.create_group(10).await;
        c.create_group(11).await;
        let mut tokens = Vec::new();
        for g in [10, 11] {
            let l = c.await_leader(g).await;
            for _ in 0..5 {
                tokens.push(c.propose(l, g, 2).await);
            }
        }
        c.await_outcome(&tokens).await;
        c.await_converged(11).await;
        let want = c.check_logs(11).await;
        let n = VOTERS
            .into_iter()
            .find(|&n| c.leader(11) != Some(n))
            .unwrap();
        let dir = c.node_dir(n).join("t-11");

        // A removal written but not synced is undone by a power loss.
        let node = c.nodes.get_mut(&n).unwrap();
        let Some(Effect::Persist { seq, writes }) = node
            .mgr
            .remove_group(11)
            .into_iter()
            .find(|e| matches!(e, Effect::Persist { .. }))
        else {
            panic!("no persist");
        };
        assert_eq!(writes, vec![sluice_raft::Write::Remove { group: 11 }]);
        let old = node.store.log(11).unwrap();
        node.store.write(seq, writes, 0).await.unwrap();
        assert!(node.store.log(11).is_none());
        assert!(
            old.read(0, 100).await.is_err(),
            "a retired log serves nothing"
        );
        c.power_loss(n);
        c.start(n).await;
        assert!(
            c.nodes[&n].mgr.status(11).is_some(),
            "back after the power loss"
        );
        c.await_converged(11).await;
        assert_eq!(c.batches(n, 11).await, want);

        // Removed and synced: gone for good once the broker deletes the directory.
        let fx = c.nodes.get_mut(&n).unwrap().mgr.remove_group(11);
        c.handle(n, fx).await;
        assert!(c.nodes[&n].store.log(11).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        c.kill(n);
        c.start(n).await;
        assert!(c.nodes[&n].mgr.status(11).is_none());
        assert!(c.nodes[&n].store.log(11).is_none());
        assert!(
            !dir.exists(),
            "recovery does not open a removed group's log"
        );
        // Group 10 is untouched.
        c.await_converged(10).await;
        c.check_logs(10).await;

        // Created again: an empty replica the leader fills.
        let fx = c
            .nodes
            .get_mut(&n)
            .unwrap()
            .mgr
            .create_group(11, &VOTERS)
            .unwrap();
        c.handle(n, fx).await;
        let l = c.await_leader(11).await;
        let t = c.propose(l, 11, 1).await;
        c.await_outcome(&[t]).await;
        c.await_converged(11).await;
        let now = c.check_logs(11).await;
        assert!(now.starts_with(&want));
        assert_eq!(c.batches(n, 11).await, now);
    });
}

/// DeleteRecords through Raft: a log-start entry moves every replica's partition-log start
/// to the offset it names (inside a batch too) as it commits, deletes the segments wholly
/// below the Raft log start, and the start survives restarts, also when the crash came
/// before the partition log's checkpoint was written (recovery derives it from the
/// committed entry).
#[test]
fn a_log_start_entry_moves_every_replicas_start_and_survives_restarts() {
    run(async {
        // A small entry cache: most entries are evicted, so the Raft log start is found
        // at a mark, up to `MARK_EVERY` entries before the new start.
        let mut c = Cluster::new(2 << 10).await;
        c.create_group(10).await;
        let l = c.await_leader(10).await;
        let mut tokens = Vec::new();
        for _ in 0..80 {
            tokens.push(c.propose(l, 10, 5).await);
        }
        c.await_outcome(&tokens).await;
        c.await_converged(10).await;
        let hw = c.nodes[&l].mgr.status(10).unwrap().high_watermark;
        // Inside a batch (batches of 5 from offset 1).
        let x = hw - 12;
        assert_ne!((x - 1) % 5, 0);
        c.next_token += 1;
        let token = c.next_token;
        let fx = c
            .nodes
            .get_mut(&l)
            .unwrap()
            .mgr
            .propose_log_start(10, ProposalToken(token), x);
        c.handle(l, fx).await;
        c.await_outcome(&[token]).await;
        // (Not a batch: `check_logs` checks the committed batches only.)
        assert!(
            c.committed.remove(&token).is_some(),
            "{:?}",
            c.failed.get(&token)
        );
        c.await_converged(10).await;
        let check = |c: &Cluster, n: NodeId| {
            let log = c.nodes[&n].store.log(10).unwrap();
            assert_eq!(log.log_start_offset(), x, "node {n}");
            let raft_start = c.nodes[&n].mgr.log(10).unwrap().start_offset();
            assert!(raft_start <= x && log.retained_start() <= raft_start);
            raft_start
        };
        for n in VOTERS {
            let raft_start = check(&c, n);
            let log = c.nodes[&n].store.log(10).unwrap();
            assert!(
                log.retained_start() > 0,
                "node {n}: segments below were deleted"
            );
            // Readers get OFFSET_OUT_OF_RANGE below it; at it, the batch holding it.
            assert!(matches!(
                log.read(x - 1, 1 << 20).await,
                Err(sluice_storage::StorageError::OffsetOutOfRange { .. })
            ));
            let r = log.read(x, 1 << 20).await.unwrap();
            assert_eq!(r.log_start_offset, x);
            let h = Header::parse(&r.records).unwrap();
            assert!(h.base_offset < x && h.last_offset() >= x);
            // Replication still reads from the Raft log start.
            assert!(log.read_replica(raft_start, 1 << 20).await.is_ok());
        }
        // Every node restarts; one loses power; one lost the partition log's checkpoint
        // (a crash before it was written): the start comes back everywhere.
        let lost = VOTERS.into_iter().find(|&n| n != l).unwrap();
        for n in VOTERS {
            if n == l {
                c.power_loss(n);
            } else {
                c.kill(n);
            }
        }
        let checkpoint = c.node_dir(lost).join("t-10").join("log-start-offset");
        std::fs::remove_file(&checkpoint).unwrap();
        for n in VOTERS {
            c.start(n).await;
        }
        for n in VOTERS {
            check(&c, n);
        }
        let l = c.await_leader(10).await;
        let more = c.propose(l, 10, 1).await;
        c.await_outcome(&[more]).await;
        c.await_converged(10).await;
        c.check_logs(10).await;
        for n in VOTERS {
            check(&c, n);
        }
    });
}
