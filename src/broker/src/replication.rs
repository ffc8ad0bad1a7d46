//! Partition replication on one shard: the glue between the shard's partition Raft groups
//! (`sluice_raft::GroupManager`, sans-IO), their store on disk (`sluice_replica::ReplicaStore`)
//! and the node's transport (shard 0's `sluice_cluster::ControllerNode`).
//!
//! A partition with more than one replica is one Raft group, [`group_id`] of its topic id
//! and index, whose voters are its replicas (node ids), the same on every node. Its log is
//! the store's: the shard serves it like any partition, but appends go through
//! [`Replication::propose`] and only the store writes, syncs and truncates it. A partition
//! created with one replica keeps the direct path (append, flusher, fsync) until a
//! reassignment gives it others (or moves it): then its only replica closes the plain log
//! (everything it acknowledged synced) and adopts it as the log of the partition's group,
//! of which it is the only voter ([`Replication::adopt_group`]; `ReplicaStore::adoption_scan`
//! reads the log in a task beside the driver, then `finish_adoption` makes every batch a
//! committed entry, the group durable in the state file before it runs), and
//! the move proceeds as any group's (once a DeleteRecords start the plain log had is written
//! into the group's log as a log-start entry, so the replicas that join start there too:
//! `uncovered_starts`). A log that cannot be adopted (unreadable, or not a Raft log)
//! leaves that one partition unavailable on this node, never the shard's other groups. A
//! restart before the adoption was durable finds the
//! plain log and adopts it then (the broker never clears the directory of a partition whose
//! only original replica is this node). A partition that was a group stays one when a
//! reassignment leaves it one replica (3 → 1, or [X] → [Y] by way of [X, Y]): a one-voter
//! group, recovered as a group at restart because the store holds it
//! (`shard::replicated`), never turned back into a plain log.
//!
//! A reassignment (AlterPartitionReassignments) changes the group's membership, not its id:
//! a joining node creates its replica as a Raft learner from the original voters
//! ([`ReplicaSet`], from the partition's adding/removing replicas in the metadata), and the
//! group's leader moves the voters to the target one step per tick
//! ([`Replication::set_replicas`], `GroupManager::reconfigure`); when they are the target
//! and all hold everything committed it reports the move done through shard 0
//! (`Shared::reassignments_done`), the controller completes it, and the leaving nodes remove
//! their replica as for a deleted partition.
//!
//! # Invariants
//!
//! - One driver task per shard performs every effect, in the order the manager returned
//!   them (`Persist` in `seq` order: each manager call appends its effects to one queue, and
//!   the driver takes them front to back). Manager calls themselves are synchronous and
//!   happen wherever their input arrives (a produce, a received envelope, a tick).
//! - `GroupManager::persisted(seq)` is reported only after `ReplicaStore::sync` or
//!   `ReplicaStore::finish_sync` returned `seq`: an acknowledgement never precedes the
//!   fsync that makes it true. One log sync runs at a time, in a task beside the driver,
//!   which meanwhile buffers the appends, hard states and retention's log starts that arrive
//!   (they go into the next sync, which moves such a log start once its record is durable);
//!   every other write waits for it and is synced at once. The state file's records
//!   ride in the log sync, written after its logs, except a rewrite of the file (a blocking
//!   sync). The shard's writer task ([`WriteAhead`]) writes buffered appends to their
//!   segment files as they arrive, unsynced, so a log sync mostly only fdatasyncs.
//! - A produce is answered from the proposal's outcome: acks=all once it committed (on a
//!   quorum's synced logs) and this leader's own high watermark covers it, so the client's
//!   next ListOffsets or Fetch on this node sees it; acks=1 once the leader's Raft log holds it
//!   (offsets assigned, not yet durable anywhere: Kafka's acks=1 risk); acks=0 at once.
//! - DeleteRecords ([`delete_records`]) is a log-start entry through Raft, answered once it
//!   committed and this leader applied it: `push` raises the log's start for readers as the
//!   manager reports `Effect::LogStartOffset` (before the driver runs), the store persists
//!   it. A leader serves reads, ListOffsets and DeleteRecords only once it is
//!   `GroupStatus::serving` (everything earlier leaders committed is applied here), so no
//!   new leader serves below an acknowledged DeleteRecords.
//! - ListOffsets is answered only after a quorum confirmed this leader in a round of
//!   heartbeats started after the request came ([`Replication::confirm_leadership`],
//!   [`crate::leader_reads`]): a leader cut off from its quorum and not yet deposed never
//!   answers a high watermark below what a successor already acknowledged.
//! - A catch-up read of the partition log for followers that are all out of the ISR draws
//!   on the node's replication throttles (`crate::replication_throttle`): while a bucket it
//!   needs is in debt it waits in `deferred_fetches` (still pending in the manager), retried
//!   each tick; the driver never sleeps on a throttle.
//! - A store error stops the shard's groups for good ([`Replication::failure`]): the broker
//!   halts, and the next start recovers from what is durable (as Kafka halts on a failed log
//!   directory).
//! - Controlled shutdown ([`Replication::begin_handoff`]): from then on this node never
//!   campaigns nor accepts a leadership transfer, and hands each group it leads to an
//!   in-sync, reachable voter (caught up first, the preferred replica next), refusing
//!   produce to a group in hand-off with NOT_LEADER_OR_FOLLOWER; it keeps replicating as a
//!   follower until the driver stops.
//!
//! # Transport
//!
//! Only shard 0 has the node's transport. Envelopes a shard's manager sends go to shard 0
//! over the mesh (`TAG_RAFT_OUT`) and out through `ControllerNode::send_partition_raft`;
//! envelopes that arrive are split by owning shard ([`RaftRoutes`], shard 0's map of the
//! replicated partitions this node hosts) and go to each shard (`TAG_RAFT_IN`). Each hop has
//! a queue and task per target shard, bounded in bytes ([`RAFT_HOP_QUEUE_BYTES_MAX`]),
//! that drops when full, as the transport does (the mesh link itself waits for room): Raft
//! re-sends what matters (heartbeats recur, appends are retried after a reject or probe).
//! A replicated produce crosses the mesh in the parked class, so its wait for a quorum never
//! holds a permit that Raft frames into its shard need.
//! Liveness of other nodes comes from shard 0's view of the transport's connections
//! ([`crate::Shared::node_liveness`]) and wakes quiesced followers of a dead leader.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::or;
use sluice_raft::{
    Batch, Effect, Envelope, GroupId, GroupManager, GroupStatus, NodeId, OffsetSpan, ProposalToken,
    ProposeError,
};
use sluice_replica::sequences::{Admit, InflightSequences, RefusedBatches};
use sluice_replica::{LogSynced, PartitionSpec, ReplicaStore};
use sluice_rpc::sync::{Event, Latch};
use sluice_shard::{DmaStorage, Frame, PartitionKey, ShardId};
use sluice_storage::{BatchCache, PartitionLog};

use sluice_storage::config::BATCH_BYTES_MAX;
use sluice_storage::hdr::Header;

use crate::kerr;
use crate::leader_reads::{LeaderReads, LEADER_CONFIRM_TIMEOUT};
use crate::ops::{PartitionReply, TAG_RAFT_IN, TAG_RAFT_OUT};
use crate::replication_throttle::{Bucket, PartitionThrottle};

/// Bytes of envelopes waiting for mesh hops to other shards (per shard, the transport's
/// per-peer Raft queue bound); beyond it they are dropped, as the transport drops.
pub const RAFT_HOP_QUEUE_BYTES_MAX: usize = 64 << 20;

/// Test-only fault (`=1`): `acks=all` is answered once the leader's Raft log holds the
/// batch, before it commits, as a broken broker would; the cluster tests use it to show
/// that their history checker catches the records this loses. Never set it otherwise.
pub const ACK_BEFORE_COMMIT_ENV: &str = "SLUICE_TEST_ACK_BEFORE_COMMIT";

fn ack_before_commit() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let set = std::env::var(ACK_BEFORE_COMMIT_ENV).as_deref() == Ok("1");
        if set {
            log::warn!(
                "{ACK_BEFORE_COMMIT_ENV}=1: acks=all is answered before commit (test fault)"
            );
        }
        set
    })
}

/// Kafka's `replica.lag.time.max.ms` default (`--replica-lag-time-max-ms`): a follower not
/// caught up with the leader's log end for this long leaves the in-sync replicas.
pub const REPLICA_LAG_TIME_MAX_DEFAULT: Duration = Duration::from_millis(30_000);

/// Kafka's automatic preferred-leader election (`auto.leader.rebalance.enable`,
/// `leader.imbalance.check.interval.seconds`, `leader.imbalance.per.broker.percentage`,
/// with Kafka's defaults), run by each leader: see [`Replication::rebalance_leaders`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderRebalance {
    pub enable: bool,
    pub check_interval: Duration,
    pub per_broker_percentage: u32,
}

impl Default for LeaderRebalance {
    fn default() -> Self {
        LeaderRebalance {
            enable: true,
            check_interval: Duration::from_secs(300),
            per_broker_percentage: 10,
        }
    }
}

/// The longest `leader.imbalance.check.interval.seconds` accepted (a year; larger values
/// would overflow the clock's arithmetic).
pub const LEADER_IMBALANCE_CHECK_INTERVAL_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// The driver's log sync in flight (`ReplicaStore::begin_sync`), in a task of its own so
/// that it runs on while the driver awaits a fetch or a write.
type SyncTask = glommio::Task<LogSynced>;

/// The shard's writer of replicated partition logs: writes their appends as the driver
/// buffers them (`ReplicaStore::take_logs_to_write`), one pass at a time in a task of its
/// own, so that the driver's next log sync finds them written and has only its fdatasyncs
/// left (the one-replica flusher writes and syncs the same way). Logs submitted while a
/// pass runs wait for the next one, each once.
#[derive(Default)]
struct WriteAhead {
    /// Keyed by the log's address: a log appended to in several rounds is written once.
    queue: RefCell<HashMap<usize, Rc<PartitionLog<DmaStorage>>>>,
    running: Cell<bool>,
}

impl WriteAhead {
    fn submit(self: &Rc<Self>, logs: Vec<Rc<PartitionLog<DmaStorage>>>) {
        if logs.is_empty() {
            return;
        }
        {
            let mut queue = self.queue.borrow_mut();
            for log in logs {
                queue.insert(Rc::as_ptr(&log) as usize, log);
            }
        }
        if self.running.replace(true) {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            loop {
                let logs: Vec<_> = std::mem::take(&mut *me.queue.borrow_mut())
                    .into_values()
                    .collect();
                if logs.is_empty() {
                    break;
                }
                sluice_replica::write_ahead(&logs).await;
            }
            me.running.set(false);
        })
        .detach();
    }
}

/// How often a leader re-evaluates its in-sync replicas.
const ISR_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a produce waits for its proposal when the request gives no timeout.
const PRODUCE_WAIT_DEFAULT: Duration = Duration::from_secs(30);

/// The Raft group of a replicated partition: a stable 64-bit hash of topic id and index
/// (FNV-1a, then murmur3's finaliser), never the controller's group 0.
pub fn group_id(topic_id: &[u8; 16], partition: i32) -> GroupId {
    let mut bytes = [0u8; 20];
    bytes[..16].copy_from_slice(topic_id);
    bytes[16..].copy_from_slice(&partition.to_be_bytes());
    let mut h = sluice_shard::table::fnv1a64(&bytes);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    if h == sluice_meta::CONTROLLER_GROUP {
        1
    } else {
        h
    }
}

/// The directory of a shard's raft-state file. The shard count is part of it: partitions
/// are assigned to shards by a hash modulo the count, so state written with another count
/// belongs to other shards (`check_shard_count` refuses such a start).
pub fn state_dir(data_dir: &Path, shards: usize, shard: ShardId) -> PathBuf {
    data_dir
        .join("raft")
        .join(format!("{shards}-shards"))
        .join(format!("shard-{}", shard.index()))
}

/// Refuses a start with a shard count other than the one the replicated partitions' Raft
/// state was written with (their groups would be recovered on the wrong shards). State of
/// another count that holds nothing (every raft-state file empty: no replicated partition
/// was ever created there) is removed instead.
pub fn check_shard_count(data_dir: &Path, shards: usize) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("raft")) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(n) = name.strip_suffix("-shards") else {
            continue;
        };
        if n == shards.to_string() {
            continue;
        }
        let used = std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|shard| {
                std::fs::metadata(shard.path().join(sluice_replica::state::STATE_FILE))
                    .is_ok_and(|m| m.len() > 0)
            });
        if used {
            return Err(format!(
                "{} holds the Raft state of replicated partitions written by {n} shards; \
                 start with the same number of shards (--shards {n})",
                data_dir.display()
            ));
        }
        std::fs::remove_dir_all(e.path())
            .map_err(|err| format!("removing unused {}: {err}", e.path().display()))?;
    }
    Ok(())
}

/// Who wrote a batch being submitted: a client (produce: sequences checked) or a
/// coordinator (its own records, TxnOffsetCommit's without a sequence: Kafka's
/// `AppendOrigin.COORDINATOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Coordinator,
}

/// What became of a submitted batch.
pub enum Submitted {
    /// Proposed (or the same batch already was): wait for its outcome.
    Proposal(Rc<Proposal>),
    /// Already in the log at these offsets (an idempotent producer's retry).
    Duplicate { first_offset: i64, last_offset: i64 },
}

/// A log start to write into a group's log (`Replication::uncovered_starts`): the offset,
/// and the log-start entry proposed for it, if one is.
type UncoveredStart = (i64, Option<Rc<Proposal>>);

/// A produce's proposal as the driver reports it.
#[derive(Default)]
pub struct Proposal {
    proposed: Cell<Option<OffsetSpan>>,
    outcome: RefCell<Option<Result<OffsetSpan, ProposeError>>>,
    changed: Event,
}

impl Proposal {
    /// Waits until the proposal is in the leader's log (`committed == false`) or committed,
    /// or failed; `None` when `timeout` passes first.
    pub async fn wait(
        &self,
        committed: bool,
        timeout: Duration,
    ) -> Option<Result<OffsetSpan, ProposeError>> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.changed.generation();
            if let Some(o) = *self.outcome.borrow() {
                return Some(o);
            }
            if !committed {
                if let Some(span) = self.proposed.get() {
                    return Some(Ok(span));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            or(self.changed.changed(seen), async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }
}

/// A replicated partition's replica set as the controller's image has it (see
/// [`Replication::begin_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSet {
    /// Every replica in the partition's order (during a reassignment the target ones, then
    /// the leaving ones): the ISR and the preferred leader are taken from it.
    pub replicas: Vec<NodeId>,
    /// The voters the group must end up with (the reassignment's target; `replicas`
    /// otherwise).
    pub target: Vec<NodeId>,
    /// The replicas before the reassignment in progress: the voters a joining replica
    /// starts from (`sluice_raft::GroupManager::create_learner`).
    pub original: Vec<NodeId>,
    /// This node joins in the reassignment in progress (its replica starts as a learner).
    pub joining: bool,
    /// The partition's revision while a reassignment is in progress.
    pub revision: Option<u64>,
}

/// How often a leader whose reassignment is done reports it again while the controller
/// has not completed it (the report or its answer may be lost).
const REASSIGNMENT_REPORT_EVERY: Duration = Duration::from_secs(5);

/// One replicated partition of this shard.
struct GroupInfo {
    key: PartitionKey,
    voters: Vec<NodeId>,
    /// The voters the group moves to, the reassignment's revision if one is in progress,
    /// and when this leader last reported it done (see [`Replication::reconfigure`]).
    target: Vec<NodeId>,
    revision: Option<u64>,
    done_reported: Option<(u64, Instant)>,
    log: Option<Rc<PartitionLog<DmaStorage>>>,
    /// What was last reported to the cluster view.
    reported: Option<(u64, Option<NodeId>)>,
    /// On the leader: the in-sync replicas (Kafka's ISR: caught up with the leader's log
    /// end within `replica.lag.time.max.ms`), the count of their changes in this term, and
    /// when each follower was last caught up.
    isr: Vec<NodeId>,
    isr_version: u64,
    caught_up: HashMap<NodeId, Instant>,
    /// The leader's last index at the previous ISR check.
    isr_mark: u64,
    /// On the leader: idempotent batches proposed and not yet settled.
    seqs: InflightSequences,
    /// Idempotent batches this replica refused or failed, in any role: their producers'
    /// later batches wait for their retries.
    refused: RefusedBatches,
    /// Leadership changes of this group go to the leadership hook
    /// ([`Replication::watch_leadership`]).
    watched: bool,
    /// What the hook was last told: the term this replica serves as leader in.
    serving: Option<u64>,
    /// The replication throttles its topic's configs set ([`Replication::set_throttle`]).
    throttle: PartitionThrottle,
}

impl GroupInfo {
    fn new(
        key: PartitionKey,
        voters: Vec<NodeId>,
        log: Option<Rc<PartitionLog<DmaStorage>>>,
    ) -> Self {
        GroupInfo {
            key,
            isr: voters.clone(),
            target: voters.clone(),
            revision: None,
            done_reported: None,
            voters,
            log,
            reported: None,
            isr_version: 0,
            caught_up: HashMap::new(),
            isr_mark: 0,
            seqs: InflightSequences::new(),
            refused: RefusedBatches::default(),
            watched: false,
            serving: None,
            throttle: PartitionThrottle::default(),
        }
    }
}

/// An adoption whose log is being scanned (see `Replication::scans`).
struct AdoptionScan {
    voters: Vec<NodeId>,
    /// The scan's outcome, once it ended.
    done: Option<Result<sluice_replica::Scanned<DmaStorage>, sluice_replica::Error>>,
    /// `remove_group` called the adoption off meanwhile: its log is closed, not adopted.
    cancelled: bool,
}

/// See [`Replication::on_new_log`].
pub type NewLogHook = Box<dyn Fn(PartitionKey, Rc<PartitionLog<DmaStorage>>)>;

/// See [`Replication::watch_leadership`]: `Some(term)` when this replica starts serving as
/// its partition's leader in `term`, `None` when it stops.
pub type LeadershipHook = Box<dyn Fn(PartitionKey, Option<u64>)>;

/// The mesh hop of envelopes to one other shard (see the module header): its own queue and
/// task, so a shard slow to take frames holds up only the envelopes meant for it.
#[derive(Default)]
struct Hop {
    queue: RefCell<VecDeque<Bytes>>,
    kick: Event,
}

/// Partition replication of one shard (see the module header). Owned by its shard.
pub struct Replication {
    shard: ShardId,
    node_id: i32,
    mgr: RefCell<GroupManager>,
    /// Effects waiting for the driver, in the order the manager returned them.
    queue: RefCell<Vec<Effect>>,
    kick: Event,
    groups: RefCell<HashMap<GroupId, GroupInfo>>,
    proposals: RefCell<HashMap<ProposalToken, Rc<Proposal>>>,
    next_token: Cell<u64>,
    /// Where each group's partition log lives, for the store's layout.
    specs: Rc<RefCell<HashMap<GroupId, PartitionSpec>>>,
    /// A group was created (its log opened) or removed, or the store failed.
    created: Event,
    /// A group's high watermark moved (`wait_hw_index` waits on it).
    hw_moved: Event,
    /// Groups being removed, and whether the removal is durable.
    removing: RefCell<HashMap<GroupId, bool>>,
    failure: RefCell<Option<String>>,
    stopping: Cell<bool>,
    /// The manager's `heartbeats_past_log` count last logged (see `step`).
    past_log_reported: Cell<u64>,
    /// Set once the driver closed the store.
    closed: Latch,
    clock: Instant,
    /// Per target shard (started on first use).
    hops: RefCell<HashMap<ShardId, Rc<Hop>>>,
    /// Bytes queued in all hops, within [`RAFT_HOP_QUEUE_BYTES_MAX`]; envelopes beyond it
    /// are dropped and counted.
    hop_bytes: Cell<usize>,
    hop_dropped: Cell<u64>,
    mesh: sluice_shard::Mesh,
    /// Shard 0: the node's transport (weak: the runtime's owner shuts it down).
    node: RefCell<Option<std::rc::Weak<sluice_cluster::ControllerNode>>>,
    /// Told when a group's log is replaced (a snapshot reset it): the shard serves the new
    /// one from then on.
    on_new_log: RefCell<Option<NewLogHook>>,
    /// Told when a watched group's replica starts or stops serving as leader.
    on_leadership: RefCell<Option<LeadershipHook>>,
    /// `replica.lag.time.max.ms`.
    lag_max: Cell<Duration>,
    /// Preferred-leader rebalance settings.
    rebalance: Cell<LeaderRebalance>,
    /// Liveness generation last applied from `Shared::node_liveness`.
    liveness_seen: Cell<u64>,
    /// Groups whose voters may differ from their target or whose reassignment is not
    /// completed yet: each tick, the one that leads takes the next membership step.
    reconfiguring: RefCell<std::collections::BTreeSet<GroupId>>,
    /// Groups whose partition log starts past what their Raft log carries (an adopted
    /// one-replica log's DeleteRecords, `ReplicaStore::take_uncovered_starts`): the offset,
    /// and the log-start entry proposed for it. Until that entry commits the group's
    /// membership does not change (`reconfigure` waits), so no replica that would serve the
    /// deleted records can lead.
    uncovered_starts: RefCell<std::collections::BTreeMap<GroupId, UncoveredStart>>,
    /// One-replica partition logs to make into groups ([`Replication::adopt_group`]), with
    /// their voters: the driver adopts them between rounds.
    adoptions: RefCell<Vec<(GroupId, Vec<NodeId>)>>,
    /// Adoptions whose scan of the one-replica log runs beside the driver
    /// (`ReplicaStore::adoption_scan`: the whole log is read, and the shard's other groups
    /// go on meanwhile); the driver finishes each once its scan is done.
    scans: RefCell<HashMap<GroupId, AdoptionScan>>,
    /// Controlled shutdown under way ([`Replication::begin_handoff`]): the groups this
    /// replica leads are being handed to other voters (each one's attempts).
    handoffs: RefCell<Option<HashMap<GroupId, Handoff>>>,
    /// Groups this replica leads whose hand-off is under way (as of the last round).
    handoffs_pending: Cell<usize>,
    /// Leadership confirmations for ListOffsets ([`Replication::confirm_leadership`]).
    reads: RefCell<LeaderReads>,
    /// Catch-up reads a replication throttle holds back (`Effect::Fetch`es, each still
    /// pending in the manager): queued again every tick until their buckets repay their
    /// debt. At most `FETCHES_PER_GROUP_MAX` per group.
    deferred_fetches: RefCell<Vec<Effect>>,
    shared: std::sync::Arc<crate::Shared>,
}

impl Replication {
    /// Opens the shard's store and recovers its groups. `specs` names the partition
    /// directory of every replicated partition of this shard in the cached cluster state; a
    /// group the store holds that is not among them is removed for good (its Raft state,
    /// vote included, is forgotten: its partition was deleted or moved away).
    pub async fn open(
        ctx: &sluice_shard::ShardCtx,
        node_id: i32,
        dir: PathBuf,
        storage: Rc<DmaStorage>,
        cache: Rc<RefCell<BatchCache>>,
        specs: HashMap<GroupId, (PartitionKey, PartitionSpec)>,
        shared: std::sync::Arc<crate::Shared>,
    ) -> Result<(Rc<Replication>, ReplicaStore<DmaStorage>), String> {
        let shard = ctx.shard_id();
        let mesh = ctx.mesh().clone();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let keys: HashMap<GroupId, PartitionKey> =
            specs.iter().map(|(g, (k, _))| (*g, *k)).collect();
        let specs: Rc<RefCell<HashMap<GroupId, PartitionSpec>>> = Rc::new(RefCell::new(
            specs.into_iter().map(|(g, (_, s))| (g, s)).collect(),
        ));
        let layout_specs = specs.clone();
        let layout: sluice_replica::Layout = Rc::new(move |g| {
            let spec = layout_specs.borrow().get(&g).cloned();
            if spec.is_none() {
                // Its topic was deleted (or the partition moved away) while this node was
                // down: the store drops the group, and the directory sweep its data.
                log::info!(
                    "raft group {g:016x} belongs to no partition of this shard now: removed"
                );
            }
            spec
        });
        let cfg = sluice_raft::Config {
            node_id: node_id as u64,
            seed: rand::random(),
            ..Default::default()
        };
        let (store, mgr) = ReplicaStore::open(storage, dir, cache, layout, cfg)
            .await
            .map_err(|e| e.to_string())?;
        let mut groups = HashMap::new();
        for g in mgr.groups() {
            let log = store.log(g);
            if let Some(l) = &log {
                l.set_replicated();
            }
            let key = keys.get(&g).copied().unwrap_or(PartitionKey {
                topic_id: [0; 16],
                partition: -1,
            });
            let voters = mgr.log(g).map(|l| l.voters().to_vec()).unwrap_or_default();
            groups.insert(g, GroupInfo::new(key, voters, log));
        }
        let rep = Rc::new(Replication {
            shard,
            node_id,
            mgr: RefCell::new(mgr),
            queue: RefCell::new(Vec::new()),
            kick: Event::default(),
            groups: RefCell::new(groups),
            proposals: RefCell::new(HashMap::new()),
            next_token: Cell::new(1),
            specs,
            created: Event::default(),
            hw_moved: Event::default(),
            removing: RefCell::new(HashMap::new()),
            failure: RefCell::new(None),
            stopping: Cell::new(false),
            past_log_reported: Cell::new(0),
            closed: Latch::default(),
            clock: Instant::now(),
            hops: RefCell::new(HashMap::new()),
            hop_bytes: Cell::new(0),
            hop_dropped: Cell::new(0),
            mesh,
            node: RefCell::new(None),
            on_new_log: RefCell::new(None),
            on_leadership: RefCell::new(None),
            lag_max: Cell::new(REPLICA_LAG_TIME_MAX_DEFAULT),
            rebalance: Cell::new(LeaderRebalance::default()),
            liveness_seen: Cell::new(0),
            reconfiguring: RefCell::new(std::collections::BTreeSet::new()),
            uncovered_starts: RefCell::new(std::collections::BTreeMap::new()),
            adoptions: RefCell::new(Vec::new()),
            handoffs: RefCell::new(None),
            handoffs_pending: Cell::new(0),
            reads: RefCell::new(LeaderReads::default()),
            deferred_fetches: RefCell::new(Vec::new()),
            scans: RefCell::new(HashMap::new()),
            shared,
        });
        Ok((rep, store))
    }

    /// Starts the driver, which owns the store.
    pub fn spawn(self: &Rc<Self>, ctx: &sluice_shard::ShardCtx, store: ReplicaStore<DmaStorage>) {
        let me = self.clone();
        match ctx.spawn_produce(async move { me.drive(store).await }) {
            Ok(t) => t.detach(),
            Err(e) => self.fail(format!("cannot spawn the raft driver: {e}")),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn fail(&self, why: String) {
        log::error!("{}: partition replication stopped: {why}", self.shard);
        self.failure.borrow_mut().get_or_insert(why);
        self.release_waiters();
    }

    /// Every waiter finds out that no outcome comes now (the groups stopped or failed):
    /// proposals fail as NOT_LEADER, group waits re-check.
    fn release_waiters(&self) {
        for p in self.proposals.borrow_mut().drain().map(|(_, p)| p) {
            p.outcome
                .borrow_mut()
                .get_or_insert(Err(ProposeError::NotLeader { leader: None }));
            p.changed.notify();
        }
        self.created.notify();
        self.kick.notify();
    }

    /// Why the shard's groups stopped, if they did.
    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Sets `replica.lag.time.max.ms`.
    pub fn set_replica_lag_time_max(&self, max: Duration) {
        self.lag_max.set(max);
    }

    /// Sets the preferred-leader rebalance settings.
    pub fn set_leader_rebalance(&self, rebalance: LeaderRebalance) {
        self.rebalance.set(rebalance);
    }

    /// Sets what to call when a group's partition log is replaced (see the field).
    pub fn set_new_log_hook(&self, hook: NewLogHook) {
        *self.on_new_log.borrow_mut() = Some(hook);
    }

    /// Sets what to call when a watched group starts or stops serving as leader.
    pub fn set_leadership_hook(&self, hook: LeadershipHook) {
        *self.on_leadership.borrow_mut() = Some(hook);
    }

    /// Reports `group`'s leadership to the leadership hook from now on (its state is
    /// reported at once if it already serves). A replica serves as leader in a term once an
    /// entry of that term committed and its own high watermark reached the commit index it
    /// saw then: everything any earlier leader committed is readable in its log below the
    /// high watermark, so state rebuilt from the log (a group coordinator's) misses nothing.
    pub fn watch_leadership(&self, group: GroupId) {
        if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
            info.watched = true;
            info.serving = None;
        }
        self.check_leadership(group);
    }

    /// Tells the leadership hook if `group` (watched) started or stopped serving as leader.
    fn check_leadership(&self, group: GroupId) {
        let status = self.mgr.borrow().status(group);
        let (key, change) = {
            let mut groups = self.groups.borrow_mut();
            let Some(info) = groups.get_mut(&group).filter(|i| i.watched) else {
                return;
            };
            let serves = status.filter(|s| {
                s.role == sluice_raft::Role::Leader && s.ready && s.hw_index >= s.commit_index
            });
            let mut change = Vec::new();
            match (info.serving, serves) {
                (Some(t), Some(s)) if t == s.term => {}
                // A later term of its own: what it served before ended first.
                (Some(_), Some(s)) => {
                    change.push(None);
                    change.push(Some(s.term));
                    info.serving = Some(s.term);
                }
                (None, Some(s)) => {
                    change.push(Some(s.term));
                    info.serving = Some(s.term);
                }
                (Some(_), None) => {
                    // Serving ends only with the leadership (a ready leader whose high
                    // watermark trails its commit index still serves).
                    if status.is_some_and(|s| {
                        s.role == sluice_raft::Role::Leader && Some(s.term) == info.serving
                    }) {
                        return;
                    }
                    change.push(None);
                    info.serving = None;
                }
                (None, None) => {}
            }
            (info.key, change)
        };
        if let Some(hook) = &*self.on_leadership.borrow() {
            for c in change {
                hook(key, c);
            }
        }
    }

    /// Makes this (shard 0's) replication send through `node` and hand it what arrives.
    pub fn set_node(self: &Rc<Self>, node: &Rc<sluice_cluster::ControllerNode>) {
        *self.node.borrow_mut() = Some(Rc::downgrade(node));
    }

    fn push(&self, mut fx: Vec<Effect>) {
        // Read confirmations only wake their waiters (nothing for the driver to perform).
        let mut confirmed = Vec::new();
        fx.retain(|e| match e {
            Effect::ReadIndex { group, token, .. } => {
                confirmed.push((*group, *token));
                false
            }
            _ => true,
        });
        // Readers see a new high watermark at once, not after the driver's current round
        // (a new leader's ListOffsets would otherwise answer below what the old leader
        // acknowledged): safe early, as a log shows at most what it has synced.
        let mut watched = Vec::new();
        let mut hw_moved = false;
        for e in &fx {
            let group = match e {
                Effect::HighWatermark { group, offset, .. } => {
                    if let Some(log) = self.groups.borrow().get(group).and_then(|g| g.log.as_ref())
                    {
                        log.set_high_watermark(*offset);
                    }
                    hw_moved = true;
                    group
                }
                Effect::Role { group, .. } => {
                    // Raft drops pending read confirmations with the leadership.
                    self.reads.borrow_mut().fail(*group);
                    group
                }
                Effect::LogStartOffset { group, offset, .. } => {
                    // Likewise the log start: a DeleteRecords is answered once its entry is
                    // applied here, and the client's next read must not see below it; the
                    // driver persists it (`ReplicaStore::log_start_offset`).
                    if let Some(log) = self.groups.borrow().get(group).and_then(|g| g.log.as_ref())
                    {
                        log.raise_replica_start(*offset);
                    }
                    continue;
                }
                _ => continue,
            };
            if self.groups.borrow().get(group).is_some_and(|g| g.watched) {
                watched.push(*group);
            }
        }
        if !fx.is_empty() {
            self.queue.borrow_mut().extend(fx);
            self.kick.notify();
        }
        if hw_moved {
            self.hw_moved.notify();
        }
        watched.sort_unstable();
        watched.dedup();
        for g in watched {
            self.check_leadership(g);
        }
        for (group, token) in confirmed {
            let next = self
                .reads
                .borrow_mut()
                .confirmed(group, token, Instant::now());
            if let Some(next) = next {
                self.ask_read_index(group, next);
            }
        }
    }

    /// Waits until a quorum confirmed that this replica still leads `group`, in a round of
    /// heartbeats started after this call (see [`crate::leader_reads`]); `false` if it is
    /// not a ready leader, the leadership ends first, or [`LEADER_CONFIRM_TIMEOUT`] passes.
    /// A group of one voter is confirmed at once.
    pub async fn confirm_leadership(&self, group: GroupId) -> bool {
        let (confirmation, start) = self.reads.borrow_mut().join(group, Instant::now());
        if let Some(token) = start {
            self.ask_read_index(group, token);
        }
        confirmation.wait(LEADER_CONFIRM_TIMEOUT).await
    }

    fn ask_read_index(&self, group: GroupId, token: u64) {
        let (asked, fx) = self.mgr.borrow_mut().read_index(group, token);
        if !asked {
            self.reads.borrow_mut().refused(group);
        }
        self.push(fx);
    }

    /// The replica's status (role, term, leader, high watermark).
    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        self.mgr.borrow().status(group)
    }

    /// Waits until `group`'s high watermark reached Raft index `index` or the group is gone
    /// (`true`), or the store closed (`false`: nothing moves any more). Woken by the high
    /// watermark's moves, not polled.
    pub async fn wait_hw_index(&self, group: GroupId, index: u64) -> bool {
        loop {
            let (hw_seen, created_seen) = (self.hw_moved.generation(), self.created.generation());
            if self.closed.is_set() {
                return false;
            }
            if self.status(group).is_none_or(|s| s.hw_index >= index) {
                return true;
            }
            or(
                or(
                    self.hw_moved.changed(hw_seen),
                    self.created.changed(created_seen),
                ),
                self.closed.wait(),
            )
            .await;
        }
    }

    /// How many replicas are in sync on this leader (Kafka's ISR size; 0 if not leading).
    pub fn isr_len(&self, group: GroupId) -> usize {
        match self.mgr.borrow().status(group) {
            Some(st) if st.role == sluice_raft::Role::Leader => {}
            _ => return 0,
        }
        self.groups.borrow().get(&group).map_or(0, |g| g.isr.len())
    }

    /// Whether this shard has a replica of `group` (recovered or created).
    pub fn knows(&self, group: GroupId) -> bool {
        self.groups.borrow().contains_key(&group)
    }

    /// The group's log, once created.
    pub fn log(&self, group: GroupId) -> Option<Rc<PartitionLog<DmaStorage>>> {
        self.groups.borrow().get(&group).and_then(|g| g.log.clone())
    }

    /// Creates this node's replica of `key` (if the store does not hold it already): the
    /// creation is queued; [`Self::wait_group`] returns the log once the store opened it.
    /// Several creations queued before waiting share the store's write and sync rounds. A
    /// replica joining a reassignment starts as a learner from the original voters; one
    /// the store holds takes the (possibly new) replica set ([`Self::set_replicas`]).
    pub fn begin_group(
        &self,
        key: PartitionKey,
        set: ReplicaSet,
        spec: PartitionSpec,
    ) -> Result<GroupId, String> {
        let group = group_id(&key.topic_id, key.partition);
        if self.knows(group) {
            self.specs.borrow_mut().insert(group, spec);
            self.set_replicas(group, key, set);
            return Ok(group);
        }
        if self.stopping.get() {
            return Err("partition replication is stopping".into());
        }
        self.specs.borrow_mut().insert(group, spec.clone());
        let fx = if set.joining {
            self.mgr.borrow_mut().create_learner(group, &set.original)
        } else {
            self.mgr.borrow_mut().create_group(group, &set.original)
        }
        .map_err(|e| format!("creating raft group {group:016x} of {}: {e:?}", spec.name))?;
        self.groups
            .borrow_mut()
            .insert(group, GroupInfo::new(key, set.replicas.clone(), None));
        self.set_replicas(group, key, set);
        self.push(fx);
        Ok(group)
    }

    /// Makes `key`'s one-replica partition log, closed by its owner, this node's replica
    /// of its Raft group, of which this node is the only voter (`set.original`): queued
    /// for the driver (`ReplicaStore::adopt`, then `GroupManager::adopt_group`);
    /// [`Self::wait_group`] returns the log once adopted. Then the group follows `set` as
    /// any group does (a reassignment adds the new replicas as learners). One the store
    /// holds already is taken as [`Self::begin_group`] takes it.
    pub fn adopt_group(
        &self,
        key: PartitionKey,
        set: ReplicaSet,
        spec: PartitionSpec,
    ) -> Result<GroupId, String> {
        let group = group_id(&key.topic_id, key.partition);
        if self.knows(group) {
            return self.begin_group(key, set, spec);
        }
        if self.stopping.get() {
            return Err("partition replication is stopping".into());
        }
        let me = self.node_id as NodeId;
        if set.original != [me] {
            return Err(format!(
                "{}: only the only replica adopts its log (replicas before the move: {:?})",
                spec.name, set.original
            ));
        }
        self.specs.borrow_mut().insert(group, spec);
        self.adoptions
            .borrow_mut()
            .push((group, set.original.clone()));
        self.groups
            .borrow_mut()
            .insert(group, GroupInfo::new(key, set.replicas.clone(), None));
        self.set_replicas(group, key, set);
        self.kick.notify();
        Ok(group)
    }

    /// Takes the store's groups whose log start their Raft log does not carry (see
    /// `uncovered_starts`).
    fn note_uncovered_starts(&self, store: &mut ReplicaStore<DmaStorage>) {
        for (g, offset) in store.take_uncovered_starts() {
            log::info!(
                "raft group {g:016x}: its partition log starts at {offset}, past what its Raft \
                 log carries (a DeleteRecords before the log was a group's): writing that \
                 start into the log before its replicas change"
            );
            self.uncovered_starts.borrow_mut().insert(g, (offset, None));
        }
    }

    /// On the leader of each group in `uncovered_starts`: proposes the log-start entry that
    /// carries its start to every replica (again if one failed), and forgets the group once
    /// it committed. Elsewhere it waits (a follower cannot propose; it tries again if it
    /// comes to lead).
    fn cover_log_starts(&self) {
        let groups: Vec<GroupId> = self.uncovered_starts.borrow().keys().copied().collect();
        for g in groups {
            if !self.knows(g) {
                self.uncovered_starts.borrow_mut().remove(&g);
                continue;
            }
            let (offset, inflight) = self.uncovered_starts.borrow()[&g].clone();
            match inflight.map(|p| *p.outcome.borrow()) {
                Some(None) => continue,
                Some(Some(Ok(_))) => {
                    log::info!("raft group {g:016x}: log start {offset} committed in its log");
                    self.uncovered_starts.borrow_mut().remove(&g);
                    continue;
                }
                Some(Some(Err(_))) | None => {}
            }
            // Refused while this replica does not lead, or leads but is not ready yet.
            if let Ok(p) = self.propose_log_start(g, offset) {
                self.uncovered_starts
                    .borrow_mut()
                    .insert(g, (offset, Some(p)));
            }
        }
    }

    /// The driver's part of [`Self::adopt_group`]: each queued log becomes a group in the
    /// store (durably) and then in the manager.
    /// Starts the scans of the queued adoptions (each in a task beside the driver, see
    /// `scans`) and finishes those whose scan ended: the store makes the log the group's
    /// (`ReplicaStore::finish_adoption`), then the manager.
    async fn adopt_queued(
        self: &Rc<Self>,
        store: &mut ReplicaStore<DmaStorage>,
    ) -> Result<(), String> {
        let queued = std::mem::take(&mut *self.adoptions.borrow_mut());
        for (group, voters) in queued {
            if !self.knows(group) {
                continue; // removed before its turn
            }
            match store.adoption_scan(group, voters.clone()) {
                Ok(scan) => {
                    self.scans.borrow_mut().insert(
                        group,
                        AdoptionScan {
                            voters,
                            done: None,
                            cancelled: false,
                        },
                    );
                    let rep = self.clone();
                    glommio::spawn_local(async move {
                        let outcome = scan.await;
                        rep.scan_done(group, outcome).await;
                    })
                    .detach();
                }
                Err(e) => self.adoption_failed(store, group, e)?,
            }
        }
        for (group, scan) in self.take_finished_scans() {
            let outcome = scan.done.expect("a finished scan");
            if scan.cancelled || !self.knows(group) {
                if let Ok(scanned) = outcome {
                    if let Err(e) = scanned.discard().await {
                        log::warn!("{}: closing an unadopted log: {e}", self.shard);
                    }
                }
                self.created.notify(); // `remove_group` waits for it
                continue;
            }
            let adopted = match outcome {
                Ok(scanned) => store.finish_adoption(group, &scan.voters, scanned).await,
                Err(e) => Err(e),
            };
            let rlog = match adopted {
                Ok(rlog) => rlog,
                Err(e) => {
                    self.adoption_failed(store, group, e)?;
                    continue;
                }
            };
            let fx = self
                .mgr
                .borrow_mut()
                .adopt_group(group, rlog)
                .map_err(|e| format!("adopting raft group {group:016x}: {e:?}"))?;
            let log = store.log(group);
            if let Some(l) = &log {
                l.set_replicated();
            }
            if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
                info.log = log;
            }
            self.push(fx);
            self.created.notify();
        }
        self.note_uncovered_starts(store);
        Ok(())
    }

    /// A scan ended: the driver finishes the adoption (or, with the driver stopping or
    /// stopped, the log is closed here).
    async fn scan_done(
        &self,
        group: GroupId,
        outcome: Result<sluice_replica::Scanned<DmaStorage>, sluice_replica::Error>,
    ) {
        if self.stopping.get() || self.failure.borrow().is_some() {
            self.scans.borrow_mut().remove(&group);
            if let Ok(scanned) = outcome {
                let _ = scanned.discard().await;
            }
            self.created.notify();
            return;
        }
        if let Some(s) = self.scans.borrow_mut().get_mut(&group) {
            s.done = Some(outcome);
        }
        self.kick.notify();
    }

    fn scans_done(&self) -> bool {
        self.scans.borrow().values().any(|s| s.done.is_some())
    }

    /// Takes the scans that ended out of `scans`.
    fn take_finished_scans(&self) -> Vec<(GroupId, AdoptionScan)> {
        let mut scans = self.scans.borrow_mut();
        let done: Vec<GroupId> = scans
            .iter()
            .filter(|(_, s)| s.done.is_some())
            .map(|(g, _)| *g)
            .collect();
        done.into_iter()
            .filter_map(|g| scans.remove(&g).map(|s| (g, s)))
            .collect()
    }

    /// An adoption failed. The one log cannot be read or does not make a Raft log (the
    /// store then holds nothing of the group): that partition stays offline on this node,
    /// the shard's other groups go on; its waiters find the group gone, and the reconcile
    /// loop tries again later. Any other failure (the state file) stops them all.
    fn adoption_failed(
        &self,
        store: &ReplicaStore<DmaStorage>,
        group: GroupId,
        e: sluice_replica::Error,
    ) -> Result<(), String> {
        match e {
            e @ (sluice_replica::Error::Damaged(_) | sluice_replica::Error::Storage(_))
                if store.log(group).is_none() =>
            {
                log::error!(
                    "{}: cannot adopt the one-replica log of raft group {group:016x} \
                     (the partition stays unavailable here): {e}",
                    self.shard
                );
                self.groups.borrow_mut().remove(&group);
                self.specs.borrow_mut().remove(&group);
                self.reconfiguring.borrow_mut().remove(&group);
                self.created.notify();
                Ok(())
            }
            e => Err(format!("adopting raft group {group:016x}: {e}")),
        }
    }

    /// Takes the partition's replica set from the controller's image: its order (reports,
    /// ISR, preferred leader) and, if its Raft voters must change or a reassignment is in
    /// progress, the group's leader moves it there one step at a time
    /// ([`Self::reconfigure`]).
    pub fn set_replicas(&self, group: GroupId, key: PartitionKey, set: ReplicaSet) {
        let mut groups = self.groups.borrow_mut();
        let Some(info) = groups.get_mut(&group) else {
            return;
        };
        info.key = key;
        info.voters = set.replicas;
        if info.revision != set.revision {
            info.done_reported = None;
        }
        info.revision = set.revision;
        info.target = set.target;
        let mut target = info.target.clone();
        target.sort_unstable();
        let settled = self
            .mgr
            .borrow()
            .conf(group)
            .is_some_and(|(voters, learners)| voters == target && learners.is_empty());
        if !settled || info.revision.is_some() {
            self.reconfiguring.borrow_mut().insert(group);
        }
    }

    /// Each tick: every group of [`Self::set_replicas`] that this replica leads takes its
    /// next membership step (`GroupManager::reconfigure`: learners join, caught-up ones
    /// are promoted, leaving ones go, a leaving leader hands over first). When the voters
    /// are the target and all hold everything committed, a reassignment in progress is
    /// reported done to the controller (through shard 0, every
    /// [`REASSIGNMENT_REPORT_EVERY`] until the image completes it), which then removes the
    /// leaving replicas from the partition; their nodes delete them. A group leaves the
    /// set once its voters are the target and no reassignment is in progress.
    fn reconfigure(&self) {
        let pending: Vec<GroupId> = self.reconfiguring.borrow().iter().copied().collect();
        let now = Instant::now();
        for g in pending {
            if self.uncovered_starts.borrow().contains_key(&g) {
                continue; // its log start goes into its log first (`cover_log_starts`)
            }
            let Some((target, revision, key)) = self
                .groups
                .borrow()
                .get(&g)
                .map(|i| (i.target.clone(), i.revision, i.key))
            else {
                self.reconfiguring.borrow_mut().remove(&g);
                continue;
            };
            if target.is_empty() {
                self.reconfiguring.borrow_mut().remove(&g);
                continue;
            }
            let (m, fx) = self.mgr.borrow_mut().reconfigure(g, &target);
            self.push(fx);
            match m {
                sluice_raft::Membership::Stepped(step) => {
                    log::info!(
                        "raft group {g:016x} (partition {}): {step:?} towards {target:?}",
                        key.partition
                    );
                }
                sluice_raft::Membership::Done => match revision {
                    Some(rev) => {
                        let mut groups = self.groups.borrow_mut();
                        let Some(info) = groups.get_mut(&g) else {
                            continue;
                        };
                        let due = info.done_reported.is_none_or(|(r, at)| {
                            r != rev || now.duration_since(at) >= REASSIGNMENT_REPORT_EVERY
                        });
                        if due {
                            info.done_reported = Some((rev, now));
                            self.shared
                                .reassignments_done
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((key.topic_id, key.partition, rev));
                        }
                    }
                    None => {
                        self.reconfiguring.borrow_mut().remove(&g);
                    }
                },
                sluice_raft::Membership::NotLeader | sluice_raft::Membership::Pending => {
                    // A follower keeps the group in the set (it may lead next) until it
                    // sees the voters settled with no reassignment left.
                    let mut sorted = target.clone();
                    sorted.sort_unstable();
                    let settled = self
                        .mgr
                        .borrow()
                        .conf(g)
                        .is_some_and(|(v, l)| v == sorted && l.is_empty());
                    if settled && revision.is_none() && m == sluice_raft::Membership::NotLeader {
                        self.reconfiguring.borrow_mut().remove(&g);
                    }
                }
            }
        }
    }

    /// Waits until `group`'s log is open (see [`Self::begin_group`]).
    pub async fn wait_group(&self, group: GroupId) -> Result<Rc<PartitionLog<DmaStorage>>, String> {
        loop {
            let seen = self.created.generation();
            if let Some(l) = self.log(group) {
                return Ok(l);
            }
            if let Some(f) = self.failure() {
                return Err(f);
            }
            if self.stopping.get() || !self.knows(group) {
                return Err(format!("raft group {group:016x} was not created"));
            }
            self.created.changed(seen).await;
        }
    }

    /// Updates the log settings a group's log is (re)opened with (a reset reopens it).
    pub fn update_spec(&self, group: GroupId, spec: PartitionSpec) {
        if self.knows(group) {
            self.specs.borrow_mut().insert(group, spec);
        }
    }

    /// Removes this node's replica of `group` (its partition was deleted or moved off this
    /// node): returns once the store has durably forgotten it and closed its log, so the
    /// caller may delete the directory.
    pub async fn remove_group(&self, group: GroupId) -> Result<(), String> {
        if self.groups.borrow_mut().remove(&group).is_none() {
            return Ok(());
        }
        let queued = self.adoptions.borrow().len();
        self.adoptions.borrow_mut().retain(|(g, _)| *g != group);
        if self.adoptions.borrow().len() != queued {
            // Never adopted: the store holds nothing of it (its log is the caller's).
            self.reconfiguring.borrow_mut().remove(&group);
            self.specs.borrow_mut().remove(&group);
            return Ok(());
        }
        if let Some(scan) = self.scans.borrow_mut().get_mut(&group) {
            scan.cancelled = true;
        }
        if self.scans.borrow().contains_key(&group) {
            // Its log is being scanned for adoption: called off, and waited for, so that
            // the caller never deletes the directory under the scan.
            self.reconfiguring.borrow_mut().remove(&group);
            self.specs.borrow_mut().remove(&group);
            self.kick.notify();
            loop {
                let seen = self.created.generation();
                if !self.scans.borrow().contains_key(&group) {
                    return Ok(());
                }
                if let Some(f) = self.failure() {
                    return Err(f);
                }
                self.created.changed(seen).await;
            }
        }
        self.reconfiguring.borrow_mut().remove(&group);
        let fx = self.mgr.borrow_mut().remove_group(group);
        self.removing.borrow_mut().insert(group, false);
        self.push(fx);
        loop {
            let seen = self.created.generation();
            if self.removing.borrow().get(&group) == Some(&true) {
                self.removing.borrow_mut().remove(&group);
                self.specs.borrow_mut().remove(&group);
                return Ok(());
            }
            if let Some(f) = self.failure() {
                return Err(f);
            }
            self.created.changed(seen).await;
        }
    }

    /// Submits a produced batch (parsed, CRC-checked) to `group`, which this replica must
    /// lead: proposed, or joined to the same batch still in flight, or answered from the
    /// log as a duplicate (idempotent producers; see `sluice_replica::sequences`). The
    /// sequence check and the proposal happen in one step, with no await between them.
    /// Errors are Kafka error codes.
    pub fn submit(
        &self,
        group: GroupId,
        header: &Header,
        bytes: Bytes,
        log: &PartitionLog<DmaStorage>,
        origin: Origin,
    ) -> Result<Submitted, i16> {
        let submitted = self.try_submit(group, header, bytes, log, origin);
        if submitted.is_err() {
            // Whatever the reason: its producer's later batches must not overtake it (see
            // `sluice_replica::sequences::RefusedBatches`).
            self.refused_batch(group, header);
        }
        submitted
    }

    /// Remembers that the client's connection saw a batch of this header's producer and
    /// epoch, at sequence `first_seq`, refused before it reached this replica.
    pub fn refused_upstream(&self, group: GroupId, header: &Header, first_seq: i32) {
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let now = self.now_ms();
        if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
            if info
                .refused
                .refused(header.producer_id, header.producer_epoch, first_seq, now)
            {
                log::info!(
                    "raft group {group:016x} (partition {}): producer {} (epoch {}) fenced at \
                     sequence {first_seq}, refused before it reached this replica",
                    info.key.partition,
                    header.producer_id,
                    header.producer_epoch
                );
            }
        }
    }

    /// Remembers that `group` refused a batch with this header (its producer's later
    /// batches wait for its retry while the producer is unknown here).
    pub fn refused_batch(&self, group: GroupId, header: &Header) {
        let now = self.now_ms();
        match self.groups.borrow_mut().get_mut(&group) {
            Some(info) => {
                let unknown = !info.seqs.has_producer(header.producer_id)
                    && !info
                        .log
                        .as_ref()
                        .is_some_and(|l| l.knows_producer(header.producer_id));
                if info.refused.refused_batch(header, now) && unknown {
                    // Rare (a new producer's first batches meeting a leadership change),
                    // and what the fence is for: said, so a loss can be traced.
                    log::info!(
                        "raft group {group:016x} (partition {}): refused a batch of producer \
                         {} (epoch {}) unknown here at sequence {}",
                        info.key.partition,
                        header.producer_id,
                        header.producer_epoch,
                        header.base_sequence
                    );
                }
            }
            None if header.producer_id >= 0 => log::info!(
                "raft group {group:016x}: no state here to remember a refused batch of \
                 producer {} (epoch {}) at sequence {}",
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            None => {}
        }
    }

    fn try_submit(
        &self,
        group: GroupId,
        header: &Header,
        bytes: Bytes,
        log: &PartitionLog<DmaStorage>,
        origin: Origin,
    ) -> Result<Submitted, i16> {
        self.accepting(group)?;
        match self.mgr.borrow().status(group) {
            // Before an entry of its term commits, the log may hold an earlier leader's
            // uncommitted entries: no duplicate may be answered from them.
            Some(st) if st.role == sluice_raft::Role::Leader && st.ready => {}
            _ => return Err(kerr::NOT_LEADER_OR_FOLLOWER),
        }
        let coordinator = origin == Origin::Coordinator;
        // Transaction rules against the leader's log (markers, writes outside an open
        // transaction). What is proposed but not yet applied is not in the log: a marker
        // retried while its first proposal is still in flight is proposed again and closes
        // nothing the second time, which is harmless.
        log.check_txn_rules(header, &bytes, coordinator)
            .map_err(|e| e.kafka_error_code())?;
        let mut groups = self.groups.borrow_mut();
        let Some(info) = groups.get_mut(&group) else {
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        };
        // A coordinator's batch has no sequence (see `PartitionLog::append_coordinator`).
        let admit = if coordinator {
            Ok(Admit::Propose)
        } else {
            info.seqs.admit(header, || {
                log.check_producer(
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.last_offset_delta,
                )
            })
        }
        .map_err(|e: sluice_replica::sequences::AdmitError| e.kafka_error_code())?;
        let now = self.now_ms();
        let known =
            info.seqs.has_producer(header.producer_id) || log.knows_producer(header.producer_id);
        let proposing = admit == Admit::Propose;
        if !coordinator && !info.refused.admits(header, proposing, known, now) {
            // The producer is new to the log, and an earlier batch of it was refused here
            // or this one may have overtaken earlier ones (it does not start at 0): it must
            // not be appended before their retry.
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        }
        if proposing
            && !known
            && !coordinator
            && header.producer_id >= 0
            && header.base_sequence != 0
        {
            // Rare and worth a line: a producer unknown here that does not start at 0, on
            // the retry of a batch refused once for it (its state expired or was trimmed
            // with the log start; KIP-360 lets it go on).
            log::info!(
                "raft group {group:016x} (partition {}): producer {} (epoch {}) unknown \
                 here, first batch at sequence {}",
                info.key.partition,
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            );
        }
        match admit {
            Admit::Duplicate {
                first_offset,
                last_offset,
            } => {
                return Ok(Submitted::Duplicate {
                    first_offset,
                    last_offset,
                })
            }
            Admit::InFlight { token } => {
                return match self.proposals.borrow().get(&token) {
                    Some(p) => Ok(Submitted::Proposal(p.clone())),
                    // Settled meanwhile would have left the table: not reachable.
                    None => Err(kerr::NOT_LEADER_OR_FOLLOWER),
                };
            }
            Admit::Propose => {}
        }
        let token = ProposalToken(self.next_token.get());
        self.next_token.set(token.0 + 1);
        let p = Rc::new(Proposal::default());
        self.proposals.borrow_mut().insert(token, p.clone());
        let records = header.records_count.max(1) as u32;
        let bytes = self.stamped(group, bytes);
        let fx = self
            .mgr
            .borrow_mut()
            .propose(group, token, Batch { records, bytes });
        // (`push`, for a refusal, takes the groups itself; nothing runs in between.)
        drop(groups);
        let fx = match self.take_refusal(token, fx) {
            Ok(fx) => fx,
            Err(error) => return Err(propose_error_code(error)),
        };
        if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
            if !coordinator {
                info.seqs.proposed(token, header);
            }
        }
        if sluice_storage::txn::is_marker_header(header) {
            // KIP-890's guard counts it from now (see `PartitionOp::Produce`).
            log.note_marker_proposed();
        }
        // The leader's log holds it now (acks=1 is answered from this, not after the
        // driver's next round).
        if let Some(span) = fx.iter().find_map(|e| match e {
            Effect::Proposed { token: t, span, .. } if *t == token => Some(*span),
            _ => None,
        }) {
            p.proposed.set(Some(span));
        }
        self.push(fx);
        Ok(Submitted::Proposal(p))
    }

    /// Whether this replica takes proposals for `group` at all: not once the store failed or
    /// the driver stops, nor while the group is being handed to another replica (controlled
    /// shutdown: Raft refuses proposals until the transfer ends, and the client should look
    /// the new leader up). NOT_LEADER_OR_FOLLOWER otherwise.
    fn accepting(&self, group: GroupId) -> Result<(), i16> {
        if self.failure.borrow().is_some() || self.stopping.get() {
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        }
        if self
            .handoffs
            .borrow()
            .as_ref()
            .is_some_and(|h| h.get(&group).is_some_and(|h| !h.given_up))
        {
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        }
        Ok(())
    }

    /// `batch` stamped with the base offset and leader epoch it gets if proposed to `group`
    /// now (`GroupManager::proposal_position`): the one copy of a produced batch on its way
    /// into the Raft log. Every replica then stores the bytes it is given as they are (a
    /// follower's stored batch shares the memory of the frame it arrived in).
    fn stamped(&self, group: GroupId, batch: Bytes) -> Bytes {
        let Some((base, term)) = self.mgr.borrow().proposal_position(group) else {
            return batch;
        };
        let Ok(epoch) = i32::try_from(term) else {
            return batch;
        };
        let mut b = batch.to_vec();
        sluice_storage::hdr::set_offset_and_epoch(&mut b, base, epoch);
        Bytes::from(b)
    }

    /// Retention of a replicated partition: the Raft log (and with it, once durable, the
    /// partition log's segments) starts at or below `offset`, the start `retention_offset`
    /// asked for. The store deletes the segments; the broker never does for these logs.
    pub fn compact(&self, group: GroupId, offset: i64) {
        if self.failure.borrow().is_some() {
            return;
        }
        let (_, fx) = self.mgr.borrow_mut().compact(group, offset);
        self.push(fx);
    }

    /// Proposes moving `group`'s log start to `offset` (DeleteRecords, on the leader; see
    /// [`delete_records`]). Errors are Kafka error codes.
    pub fn propose_log_start(&self, group: GroupId, offset: i64) -> Result<Rc<Proposal>, i16> {
        self.accepting(group)?;
        let token = ProposalToken(self.next_token.get());
        self.next_token.set(token.0 + 1);
        let p = Rc::new(Proposal::default());
        self.proposals.borrow_mut().insert(token, p.clone());
        let fx = self
            .mgr
            .borrow_mut()
            .propose_log_start(group, token, offset);
        match self.take_refusal(token, fx) {
            Ok(fx) => {
                self.push(fx);
                Ok(p)
            }
            // Past the high watermark (checked by the caller too).
            Err(ProposeError::InvalidBatch) => Err(kerr::OFFSET_OUT_OF_RANGE),
            Err(e) => Err(propose_error_code(e)),
        }
    }

    /// A proposal's refusal comes back at once, as `Failed` for its token among the
    /// manager's effects: then the proposal is forgotten, the other effects are performed
    /// and the error returned; otherwise the effects are returned whole.
    fn take_refusal(
        &self,
        token: ProposalToken,
        fx: Vec<Effect>,
    ) -> Result<Vec<Effect>, ProposeError> {
        let refused = fx.iter().find_map(|e| match e {
            Effect::Failed {
                token: t, error, ..
            } if *t == token => Some(*error),
            _ => None,
        });
        let Some(error) = refused else {
            return Ok(fx);
        };
        self.proposals.borrow_mut().remove(&token);
        let rest = fx
            .into_iter()
            .filter(|e| !matches!(e, Effect::Failed { token: t, .. } if *t == token))
            .collect();
        self.push(rest);
        Err(error)
    }

    /// Steps an envelope from another node (its groups on this shard).
    pub fn step(&self, env: Envelope) {
        if self.failure.borrow().is_some() || self.stopping.get() {
            return;
        }
        let from = env.from;
        let fx = self.mgr.borrow_mut().step(env);
        // Logged at 1, 2, 4, 8... so a replica stuck this way is loud without flooding.
        let past = self.mgr.borrow().heartbeats_past_log();
        if past > 0 && past.is_power_of_two() && past != self.past_log_reported.replace(past) {
            log::error!(
                "replication: node {from} named a commit index past the end of a local \
                 replica's log ({past} such heartbeats dropped so far): this node lost \
                 records it had acknowledged (a data directory restored from an old copy, or \
                 a disk that lost synced writes); its replicas take no part until repaired"
            );
        }
        self.push(fx);
    }

    /// Stops the driver: it closes the store (logs flushed and synced) and returns. False
    /// if the store was not closed within `SHUTDOWN_TIMEOUT` (the next start recovers the
    /// logs as after a crash, and the shutdown must not pass for clean).
    pub async fn stop(&self) -> bool {
        self.stopping.set(true);
        self.release_waiters();
        or(
            async {
                self.closed.wait().await;
                true
            },
            async {
                glommio::timer::sleep(crate::config::SHUTDOWN_TIMEOUT).await;
                false
            },
        )
        .await
    }

    /// The driver: ticks, performs effects, feeds results back (module header).
    async fn drive(self: Rc<Self>, mut store: ReplicaStore<DmaStorage>) {
        let tick = Duration::from_millis(sluice_raft::manager::TICK_MS);
        let mut next_tick = Instant::now();
        let mut next_isr_check = Instant::now() + ISR_CHECK_EVERY;
        let mut next_rebalance = Instant::now() + self.rebalance.get().check_interval;
        let mut next_handoff = Instant::now();
        let mut syncing: Option<SyncTask> = None;
        let writer = Rc::new(WriteAhead::default());
        self.note_uncovered_starts(&mut store);
        loop {
            if self.stopping.get() || self.failure.borrow().is_some() {
                break;
            }
            let seen = self.kick.generation();
            if !self.adoptions.borrow().is_empty() || self.scans_done() {
                let adopted = match self.settle(&mut store, &mut syncing).await {
                    Ok(()) => self.adopt_queued(&mut store).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = adopted {
                    self.fail(e);
                    break;
                }
            }
            if Instant::now() >= next_tick {
                self.apply_liveness();
                let fx = self.mgr.borrow_mut().tick(self.now_ms());
                self.push(fx);
                let deferred = std::mem::take(&mut *self.deferred_fetches.borrow_mut());
                self.push(deferred);
                self.cover_log_starts();
                self.reconfigure();
                next_tick = Instant::now() + tick;
            }
            if Instant::now() >= next_isr_check {
                self.check_isr();
                next_isr_check = Instant::now() + ISR_CHECK_EVERY;
            }
            if self.handoffs.borrow().is_some() {
                // Controlled shutdown: leaderships only go away from here now.
                if Instant::now() >= next_handoff {
                    self.hand_off_leaderships();
                    next_handoff = Instant::now() + HANDOFF_CHECK_EVERY;
                }
            } else if Instant::now() >= next_rebalance {
                if self.rebalance.get().enable {
                    self.rebalance_leaders();
                }
                next_rebalance = Instant::now() + self.rebalance.get().check_interval;
            }
            let effects = std::mem::take(&mut *self.queue.borrow_mut());
            let idle = effects.is_empty();
            if !idle {
                if let Err(e) = self.perform(&mut store, effects, &mut syncing).await {
                    self.fail(e);
                    break;
                }
            }
            writer.submit(store.take_logs_to_write());
            if syncing.is_none() && store.unsynced() {
                // The next sync starts as soon as the last one ended, covering whatever
                // was written meanwhile (group commit, with writing overlapping syncing).
                match store.begin_sync() {
                    Some(sync) => {
                        syncing = Some(glommio::spawn_local(async move {
                            let started = crate::stats::start();
                            let done = sync.run().await;
                            crate::stats::record_since(crate::stats::Stage::RaftLogSync, started);
                            done
                        }))
                    }
                    None => {
                        if let Err(e) = self.sync_now(&mut store, Vec::new()).await {
                            self.fail(e);
                            break;
                        }
                    }
                }
            }
            if !idle && syncing.is_none() {
                continue;
            }
            // Wait for work, the sync in flight or the next tick.
            let mut wait = next_tick.saturating_duration_since(Instant::now());
            if self.handoffs.borrow().is_some() {
                wait = wait.min(next_handoff.saturating_duration_since(Instant::now()));
            }
            let synced = match syncing.as_mut() {
                Some(task) => {
                    or(async { Some(task.await) }, async {
                        or(self.kick.changed(seen), glommio::timer::sleep(wait)).await;
                        None
                    })
                    .await
                }
                None if idle => {
                    or(self.kick.changed(seen), glommio::timer::sleep(wait)).await;
                    None
                }
                None => None,
            };
            if let Some(synced) = synced {
                syncing = None;
                if let Err(e) = self.synced(&mut store, synced) {
                    self.fail(e);
                    break;
                }
            }
        }
        if let Some(task) = syncing.take() {
            // The store closes only with no sync out (its result no longer matters).
            let _ = store.finish_sync(task.await);
        }
        // Scans that ended unadopted close their log (those still running close theirs
        // when they end: `scan_done`).
        for (_, scan) in self.take_finished_scans() {
            if let Some(Ok(scanned)) = scan.done {
                let _ = scanned.discard().await;
            }
        }
        if let Err(e) = store.close().await {
            log::error!("{}: closing the replica store: {e}", self.shard);
        }
        self.closed.set();
    }

    /// Takes a finished log sync's result: the manager hears what is durable now.
    fn synced(
        &self,
        store: &mut ReplicaStore<DmaStorage>,
        synced: LogSynced,
    ) -> Result<(), String> {
        let seq = store.finish_sync(synced).map_err(|e| e.to_string())?;
        let fx = self.mgr.borrow_mut().persisted(seq);
        self.push(fx);
        Ok(())
    }

    /// Waits for the log sync in flight, if any, and takes its result.
    async fn settle(
        &self,
        store: &mut ReplicaStore<DmaStorage>,
        syncing: &mut Option<SyncTask>,
    ) -> Result<(), String> {
        match syncing.take() {
            Some(task) => self.synced(store, task.await),
            None => Ok(()),
        }
    }

    /// Syncs everything written (with no log sync out), reports it to the manager, and
    /// lets the removed groups' directories go (their removal is durable now).
    async fn sync_now(
        &self,
        store: &mut ReplicaStore<DmaStorage>,
        removed: Vec<GroupId>,
    ) -> Result<(), String> {
        let started = crate::stats::start();
        let seq = store.sync().await.map_err(|e| e.to_string())?;
        crate::stats::record_since(crate::stats::Stage::RaftBlockingSync, started);
        let fx = self.mgr.borrow_mut().persisted(seq);
        self.push(fx);
        if !removed.is_empty() {
            let mut removing = self.removing.borrow_mut();
            for g in removed {
                removing.insert(g, true);
            }
            self.created.notify();
        }
        Ok(())
    }

    /// Performs one batch of effects: every write, the fetches; what the manager answers
    /// goes to the back of the queue. Appends, hard states and retention's log starts are
    /// written beside the log sync in flight and left for the driver's next sync
    /// (`ReplicaStore::quiet`); any other write waits for that sync, and is synced at once
    /// (its files, the state file).
    async fn perform(
        self: &Rc<Self>,
        store: &mut ReplicaStore<DmaStorage>,
        effects: Vec<Effect>,
        syncing: &mut Option<SyncTask>,
    ) -> Result<(), String> {
        let mut fetches = Vec::new();
        let now = crate::shard::now_ms();
        for e in effects {
            match e {
                Effect::Send(env) => self.send(env),
                Effect::Persist { seq, writes } => {
                    let quiet = store.quiet(&writes);
                    if !quiet {
                        self.settle(store, syncing).await?;
                    }
                    let touched: Vec<GroupId> = writes
                        .iter()
                        .filter_map(|w| match w {
                            sluice_raft::Write::Create { group, .. } => Some(*group),
                            sluice_raft::Write::LogStart {
                                group, reset: true, ..
                            } => Some(*group),
                            _ => None,
                        })
                        .collect();
                    let removed: Vec<GroupId> = writes
                        .iter()
                        .filter_map(|w| match w {
                            sluice_raft::Write::Remove { group } => Some(*group),
                            _ => None,
                        })
                        .collect();
                    store
                        .write(seq, writes, now)
                        .await
                        .map_err(|e| e.to_string())?;
                    for g in touched {
                        // A created group's log, or the new log of a reset one.
                        let log = store.log(g);
                        if let Some(l) = &log {
                            l.set_replicated();
                        }
                        let replaced = match self.groups.borrow_mut().get_mut(&g) {
                            Some(info) => {
                                let replaced = info.log.is_some();
                                info.log = log.clone();
                                replaced.then_some(info.key)
                            }
                            None => None,
                        };
                        if let (Some(key), Some(log)) = (replaced, log) {
                            if let Some(hook) = &*self.on_new_log.borrow() {
                                hook(key, log);
                            }
                        }
                        self.created.notify();
                    }
                    if !quiet {
                        self.sync_now(store, removed).await?;
                    }
                }
                Effect::Fetch {
                    group,
                    id,
                    offset,
                    max_bytes,
                    to,
                } => fetches.push((group, id, offset, max_bytes, to)),
                Effect::Proposed { token, span, .. } => {
                    if let Some(p) = self.proposals.borrow().get(&token) {
                        p.proposed.set(Some(span));
                        p.changed.notify();
                    }
                }
                Effect::Committed { group, token, span } => {
                    if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
                        info.seqs.committed(token);
                    }
                    if let Some(p) = self.proposals.borrow_mut().remove(&token) {
                        *p.outcome.borrow_mut() = Some(Ok(span));
                        p.changed.notify();
                    }
                }
                Effect::Failed {
                    group,
                    token,
                    error,
                } => {
                    if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
                        if let Some((pid, epoch, seq)) = info.seqs.failed(token) {
                            info.refused.refused(pid, epoch, seq, self.now_ms());
                        }
                    }
                    if let Some(p) = self.proposals.borrow_mut().remove(&token) {
                        *p.outcome.borrow_mut() = Some(Err(error));
                        p.changed.notify();
                    }
                }
                Effect::HighWatermark { group, offset, .. } => {
                    store.high_watermark(group, offset);
                }
                Effect::LogStartOffset { group, offset, .. } => {
                    store.log_start_offset(group, offset);
                }
                // Taken out by `push`.
                Effect::ReadIndex { .. } => {}
                Effect::Role {
                    group,
                    role,
                    term,
                    leader,
                } => {
                    if role != sluice_raft::Role::Leader {
                        // Whatever was in flight fails with the leadership.
                        if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
                            let now = self.now_ms();
                            for (pid, epoch, seq) in info.seqs.clear() {
                                info.refused.refused(pid, epoch, seq, now);
                            }
                        }
                    }
                    self.report_role(group, term, leader)
                }
            }
        }
        let throttle = &self.shared.replication_throttle;
        for (group, id, offset, max_bytes, to) in fetches {
            let buckets = self.throttle_buckets(group, &to);
            if !buckets.is_empty() && !throttle.admits(&buckets, Instant::now()) {
                let (bytes, deferrals) = throttle.counts();
                if deferrals.is_power_of_two() {
                    log::info!(
                        "{}: replication throttle: {bytes} bytes of catch-up reads sent \
                         throttled, reads deferred {deferrals} times",
                        self.shard
                    );
                }
                self.deferred_fetches.borrow_mut().push(Effect::Fetch {
                    group,
                    id,
                    offset,
                    max_bytes,
                    to,
                });
                continue;
            }
            let batches = store.fetch(group, offset, max_bytes).await;
            if !buckets.is_empty() {
                let bytes = batches.iter().flatten().map(|b| b.bytes.len() as u64).sum();
                throttle.charge(&buckets, bytes, Instant::now());
            }
            let fx = self.mgr.borrow_mut().entries_fetched(id, batches);
            self.push(fx);
        }
        Ok(())
    }

    /// Sets the replication throttles of `group`'s partition (its topic's
    /// `*.replication.throttled.replicas`).
    pub fn set_throttle(&self, group: GroupId, throttle: PartitionThrottle) {
        if let Some(info) = self.groups.borrow_mut().get_mut(&group) {
            info.throttle = throttle;
        }
    }

    /// The rate-limited buckets a catch-up read of `group` for followers `to` draws on:
    /// none unless every one of them is out of sync (see `replication_throttle`).
    fn throttle_buckets(&self, group: GroupId, to: &[NodeId]) -> Vec<Bucket> {
        let groups = self.groups.borrow();
        let Some(info) = groups.get(&group) else {
            return Vec::new();
        };
        let t = &info.throttle;
        if t.is_none() || to.is_empty() || to.iter().any(|f| info.isr.contains(f)) {
            return Vec::new();
        }
        let mut buckets = Vec::new();
        if t.leader {
            buckets.push(Bucket::Leader);
        }
        for f in to {
            let f = *f as i32;
            if t.followers.contains(&f) {
                buckets.push(Bucket::Follower(f));
            }
        }
        self.shared.replication_throttle.limited(&buckets)
    }

    /// Publishes a replica's view of its group's leadership: the cluster view (Metadata,
    /// leader hints, dissemination to other nodes) and, when this node leads, the epoch
    /// table.
    fn report_role(&self, group: GroupId, term: u64, leader: Option<NodeId>) {
        let mut groups = self.groups.borrow_mut();
        let Some(info) = groups.get_mut(&group) else {
            return;
        };
        if info.reported == Some((term, leader)) || info.key.partition < 0 {
            return;
        }
        if info.reported.map(|(t, _)| t) != Some(term) {
            // A new term starts with every voter in sync (as a new Kafka leader keeps the
            // ISR it was given); the leader's checks narrow it. A replica joining in a
            // reassignment (a Raft learner) is not in sync until it has caught up, as in
            // Kafka, where an adding replica enters the ISR only then.
            let raft_voters = self.mgr.borrow().conf(group).map(|(voters, _)| voters);
            info.isr = info
                .voters
                .iter()
                .copied()
                .filter(|v| raft_voters.as_ref().is_none_or(|rv| rv.contains(v)))
                .collect();
            info.isr_version = 0;
            info.caught_up.clear();
            info.isr_mark = 0;
        }
        info.reported = Some((term, leader));
        if leader == Some(self.node_id as u64) {
            if let Some(epoch) = sluice_meta::leaders::epoch_of_term(term) {
                self.shared
                    .leader_epochs
                    .set(info.key.topic_id, info.key.partition, epoch);
            }
        }
        self.publish(group, info);
    }

    /// Tells the cluster view (and through it the other nodes) what `info` says.
    fn publish(&self, group: GroupId, info: &GroupInfo) {
        let Some((term, leader)) = info.reported else {
            return;
        };
        let Some(epoch) = sluice_meta::leaders::epoch_of_term(term) else {
            log::error!("raft group {group:016x}: term {term} is past Kafka's leader epochs");
            return;
        };
        self.shared
            .cluster_view
            .observe(sluice_meta::leaders::LeaderUpdate {
                topic: info.key.topic_id,
                partition: info.key.partition,
                leadership: sluice_meta::leaders::Leadership {
                    leader: leader.map(|n| n as i32),
                    epoch,
                    isr: info.isr.iter().map(|v| *v as i32).collect(),
                    isr_version: info.isr_version,
                },
            });
    }

    /// On each group this replica leads: a follower whose matched index reached the
    /// leader's last index of the previous check, and that the leader heard from lately and
    /// reaches through the transport, is caught up now (Kafka: a follower that fetched up to
    /// the log end); the ISR is the leader and the followers caught up within
    /// `replica.lag.time.max.ms`. Changes are published. A quiesced leader's followers all
    /// hold its whole log and it appends nothing until it wakes: those on reachable nodes
    /// count as caught up now, and with its ISR full such a group costs no more than that
    /// (the walk runs every second over every group; 3,000 idle partitions spent most of a
    /// node's per-partition idle CPU in `progress` here).
    fn check_isr(&self) {
        let now = Instant::now();
        let (_, liveness) = self.shared.node_liveness();
        // A node the transport does not know yet is given the benefit of the doubt here.
        let reachable = |n: NodeId| node_up(&liveness, n).unwrap_or(true);
        let mgr = self.mgr.borrow();
        let mut groups = self.groups.borrow_mut();
        for (g, info) in groups.iter_mut() {
            if mgr.quiesced_leader(*g) {
                // (Its `recent_active` flags are stale: a quiesced group exchanges nothing.)
                let mut all = true;
                for v in &info.voters {
                    if reachable(*v) {
                        info.caught_up.insert(*v, now);
                    } else {
                        all = false;
                    }
                }
                if all && info.isr.len() == info.voters.len() {
                    continue;
                }
            }
            let Some(progress) = mgr.progress(*g) else {
                continue;
            };
            let me = self.node_id as u64;
            let status = mgr.status(*g);
            let last = progress
                .iter()
                .find(|(n, _, _)| *n == me)
                .map_or(0, |(_, m, _)| *m)
                .max(status.map_or(0, |s| s.last_index));
            let learners = mgr.conf(*g).map(|(_, l)| l).unwrap_or_default();
            // A learner also has to hold everything committed (the mark is 0 on a new
            // term's first check, which would let a learner in before it caught up; Kafka
            // takes an adding replica in once it reached the high watermark).
            let committed = status.map_or(0, |s| s.hw_index);
            for (node, matched, active) in &progress {
                let mark = if learners.contains(node) {
                    info.isr_mark.max(committed)
                } else {
                    info.isr_mark
                };
                if *node == me || (*matched >= mark && *active && reachable(*node)) {
                    info.caught_up.insert(*node, now);
                } else if !learners.contains(node) {
                    // A voter first seen here has the benefit of the doubt (see
                    // `report_role`); a learner has to catch up first.
                    info.caught_up.entry(*node).or_insert(now);
                }
            }
            info.isr_mark = last;
            let mut isr: Vec<NodeId> = progress
                .iter()
                .filter(|(n, _, _)| {
                    *n == me
                        || info
                            .caught_up
                            .get(n)
                            .is_some_and(|t| now.duration_since(*t) <= self.lag_max.get())
                })
                .map(|(n, _, _)| *n)
                .collect();
            isr.sort_unstable();
            let mut current = info.isr.clone();
            current.sort_unstable();
            if isr != current {
                // The preferred (first) replica keeps its place: Kafka lists the ISR in
                // replica order.
                info.isr = info
                    .voters
                    .iter()
                    .copied()
                    .filter(|v| isr.contains(v))
                    .collect();
                info.isr_version += 1;
                self.publish(*g, info);
            }
        }
    }

    /// Kafka's automatic preferred-leader election, from each leader's side (no controller
    /// round trip: the leader is the one that can hand its leadership over). For each node
    /// `p`, the imbalance is the share of this shard's groups whose preferred replica (the
    /// first in replica order) is `p` but that another node leads; above
    /// `leader.imbalance.per.broker.percentage`, each such group this replica leads hands
    /// its leadership to `p` (Raft's leadership transfer), if `p` is in its ISR and
    /// reachable. A transfer that does not complete is abandoned by Raft within an election
    /// timeout, and the next check tries again.
    fn rebalance_leaders(&self) {
        let percentage = self.rebalance.get().per_broker_percentage as usize;
        let me = self.node_id as u64;
        let (_, liveness) = self.shared.node_liveness();
        let reachable = |n: NodeId| node_up(&liveness, n) == Some(true);
        let mut moves = Vec::new();
        {
            let mgr = self.mgr.borrow();
            let groups = self.groups.borrow();
            // Per preferred node: its groups here, and how many of them another node leads.
            let mut tally: HashMap<NodeId, (usize, usize)> = HashMap::new();
            let mut candidates = Vec::new();
            for (g, info) in groups.iter() {
                let (Some(&preferred), Some(st)) = (info.voters.first(), mgr.status(*g)) else {
                    continue;
                };
                let Some(leader) = st.leader else {
                    continue; // no leader known: Kafka's check skips it too
                };
                let t = tally.entry(preferred).or_default();
                t.0 += 1;
                if leader != preferred {
                    t.1 += 1;
                }
                // Only to a preferred replica that holds this leader's whole log and was
                // heard from lately: the transfer then completes at once, where one to a
                // replica still catching up (a restarted node stays in the ISR for
                // `replica.lag.time.max.ms`) would refuse produce until it did.
                let caught_up = || {
                    mgr.progress(*g).is_some_and(|p| {
                        p.iter().any(|&(n, matched, active)| {
                            n == preferred && active && matched >= st.last_index
                        })
                    })
                };
                if preferred != me
                    && st.role == sluice_raft::Role::Leader
                    && st.ready
                    && info.isr.contains(&preferred)
                    && reachable(preferred)
                    && caught_up()
                {
                    candidates.push((*g, info.key, preferred));
                }
            }
            for (g, key, preferred) in candidates {
                let (total, elsewhere) = tally[&preferred];
                if elsewhere * 100 > total * percentage {
                    moves.push((g, key, preferred));
                }
            }
        }
        for (g, key, preferred) in moves {
            log::info!(
                "raft group {g:016x} (partition {}): handing the leadership to its preferred \
                 replica, node {preferred}",
                key.partition
            );
            let fx = self.mgr.borrow_mut().transfer_leader(g, preferred);
            self.push(fx);
        }
    }

    /// Starts the controlled shutdown of this shard's groups (Kafka's
    /// `controlled.shutdown.enable`): this node stops campaigning for good
    /// (`GroupManager::stop_campaigning`: it never takes a leadership back, and a transfer
    /// to it is ignored), and every group it leads is handed to another voter
    /// ([`Self::hand_off_leaderships`], retried until the leadership has gone). The groups
    /// keep replicating: this node stays a follower of each until it stops.
    pub fn begin_handoff(&self) {
        if self.failure.borrow().is_some() || self.stopping.get() {
            return;
        }
        self.mgr.borrow_mut().stop_campaigning();
        self.handoffs.borrow_mut().get_or_insert_with(HashMap::new);
        self.hand_off_leaderships();
        let pending = self.handoffs_pending.get();
        if pending > 0 {
            log::info!(
                "{}: controlled shutdown: handing the leadership of {pending} partition(s) to \
                 other replicas",
                self.shard
            );
        }
        self.kick.notify();
    }

    /// Groups this replica still leads whose hand-off is under way (0 once they all moved
    /// or gave up, and before [`Self::begin_handoff`]). Groups with nowhere (else) to go (no
    /// other replica in sync and reachable, or every one asked in vain) are not counted:
    /// they stop with the node.
    pub fn handoffs_pending(&self) -> usize {
        if self.failure.borrow().is_some() || self.stopping.get() {
            return 0;
        }
        self.handoffs_pending.get()
    }

    /// One round of the controlled shutdown: each group this replica still leads is handed
    /// to its best successor ([`handoff_target`]) unless a transfer asked for less than
    /// [`HANDOFF_RETRY`] ago is still under way. raft-rs abandons a transfer that has not
    /// completed within an election timeout (the successor may be stopping too: a fenced
    /// node ignores it); the next best replica not asked yet is asked then, and once every
    /// eligible one was, the group gives up and serves until the node stops (Kafka's
    /// `controlled.shutdown.max.retries`, bounded here by the replicas).
    fn hand_off_leaderships(&self) {
        let now = Instant::now();
        let (_, liveness) = self.shared.node_liveness();
        let reachable = |n: NodeId| node_up(&liveness, n) == Some(true);
        let me = self.node_id as u64;
        let mut moves = Vec::new();
        let mut pending = 0;
        {
            let mgr = self.mgr.borrow();
            let groups = self.groups.borrow();
            let mut handoffs = self.handoffs.borrow_mut();
            let Some(handoffs) = handoffs.as_mut() else {
                return;
            };
            // Groups no longer led here are done (or never were in flight).
            handoffs.retain(|g, _| {
                mgr.status(*g)
                    .is_some_and(|st| st.role == sluice_raft::Role::Leader)
            });
            for (g, info) in groups.iter() {
                let Some(st) = mgr.status(*g) else {
                    continue;
                };
                if st.role != sluice_raft::Role::Leader || info.key.partition < 0 {
                    continue;
                }
                let h = handoffs.entry(*g).or_default();
                if h.given_up {
                    continue;
                }
                if h.asked
                    .is_some_and(|at| now.duration_since(at) < HANDOFF_RETRY)
                {
                    pending += 1;
                    continue;
                }
                let progress = mgr.progress(*g).unwrap_or_default();
                let Some(to) = handoff_target(
                    me,
                    &info.voters,
                    &info.isr,
                    &progress,
                    st.last_index,
                    mgr.quiesced_leader(*g),
                    |n| reachable(n) && !h.tried.contains(&n),
                ) else {
                    // Nowhere (else) to go: it serves until the node stops.
                    h.given_up = true;
                    continue;
                };
                pending += 1;
                h.asked = Some(now);
                h.tried.push(to);
                moves.push((*g, info.key, to));
            }
        }
        self.handoffs_pending.set(pending);
        for (g, key, to) in moves {
            log::debug!(
                "raft group {g:016x} (partition {}): controlled shutdown, handing the \
                 leadership to node {to}",
                key.partition
            );
            let fx = self.mgr.borrow_mut().transfer_leader(g, to);
            self.push(fx);
        }
    }

    /// ElectLeaders (PREFERRED) on this replica, which must lead `group`: whether its
    /// preferred replica (the first in replica order) may take over, as Kafka's controller
    /// decides: `Ok(preferred)` if it is another voter in the ISR, on a node the transport
    /// reaches, heard from lately and holding everything committed (Raft's transfer then
    /// brings it up to date at once); else the Kafka error (ELECTION_NOT_NEEDED when this
    /// replica is the preferred one, PREFERRED_LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER
    /// when this replica does not lead).
    fn preferred_successor(&self, group: GroupId) -> Result<NodeId, i16> {
        let mgr = self.mgr.borrow();
        let groups = self.groups.borrow();
        let (Some(st), Some(info)) = (mgr.status(group), groups.get(&group)) else {
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        };
        if st.role != sluice_raft::Role::Leader {
            return Err(kerr::NOT_LEADER_OR_FOLLOWER);
        }
        let me = self.node_id as u64;
        let Some(&preferred) = info.voters.first() else {
            return Err(kerr::PREFERRED_LEADER_NOT_AVAILABLE);
        };
        if preferred == me {
            return Err(kerr::ELECTION_NOT_NEEDED);
        }
        let (_, liveness) = self.shared.node_liveness();
        let reachable = node_up(&liveness, preferred) == Some(true);
        let quiesced = mgr.quiesced_leader(group);
        let caught_up = mgr.progress(group).is_some_and(|p| {
            p.iter().any(|&(n, matched, active)| {
                n == preferred && (active || quiesced) && matched >= st.commit_index
            })
        });
        if info.isr.contains(&preferred) && reachable && caught_up {
            Ok(preferred)
        } else {
            Err(kerr::PREFERRED_LEADER_NOT_AVAILABLE)
        }
    }

    /// Feeds the transport's view of other nodes to the manager (wakes quiesced followers
    /// of a leader that died).
    fn apply_liveness(&self) {
        let (generation, nodes) = self.shared.node_liveness();
        if generation == self.liveness_seen.get() {
            return;
        }
        self.liveness_seen.set(generation);
        let mut mgr = self.mgr.borrow_mut();
        for (node, alive) in nodes {
            if node != self.node_id && node > 0 {
                mgr.set_node_alive(node as u64, alive);
            }
        }
    }

    /// Sends an envelope: through the transport on shard 0, else over the mesh to it.
    fn send(self: &Rc<Self>, env: Envelope) {
        if self.shard == ShardId(0) {
            let node = self.node.borrow().as_ref().and_then(|n| n.upgrade());
            if let Some(node) = node {
                if let Err(e) = node.send_partition_raft(env) {
                    log::debug!("partition raft send: {e}");
                }
            }
            return;
        }
        self.hop(ShardId(0), sluice_rpc::encode_envelope(env, false));
    }

    /// Queues an encoded envelope for shard `to` (dropped when the hops are full). Hops
    /// encode with the batches inside the envelope (`encode_envelope(_, false)`): within
    /// one process there is no wire to check them against.
    pub fn hop(self: &Rc<Self>, to: ShardId, body: Bytes) {
        if self.hop_bytes.get() + body.len() > RAFT_HOP_QUEUE_BYTES_MAX {
            self.hop_dropped.set(self.hop_dropped.get() + 1);
            if self.hop_dropped.get() % 1024 == 1 {
                log::warn!(
                    "{}: raft envelopes to {to} dropped: {} bytes already wait for other shards \
                     ({} dropped so far)",
                    self.shard,
                    self.hop_bytes.get(),
                    self.hop_dropped.get()
                );
            }
            return;
        }
        let hop = self.hops.borrow().get(&to).cloned();
        let hop = match hop {
            Some(h) => h,
            None => {
                let h = Rc::new(Hop::default());
                self.hops.borrow_mut().insert(to, h.clone());
                let me = self.clone();
                let pump = h.clone();
                glommio::spawn_local(async move { me.pump(to, pump).await }).detach();
                h
            }
        };
        self.hop_bytes.set(self.hop_bytes.get() + body.len());
        hop.queue.borrow_mut().push_back(body);
        hop.kick.notify();
    }

    /// Sends one target shard's queued envelopes, one frame at a time, until the node stops.
    async fn pump(self: Rc<Self>, to: ShardId, hop: Rc<Hop>) {
        let tag = if self.shard == ShardId(0) {
            TAG_RAFT_IN
        } else {
            TAG_RAFT_OUT
        };
        loop {
            let seen = hop.kick.generation();
            let next = hop.queue.borrow_mut().pop_front();
            match next {
                Some(body) => {
                    self.hop_bytes.set(self.hop_bytes.get() - body.len());
                    if self
                        .mesh
                        .notify(to, Frame::empty(tag, Some(body)))
                        .await
                        .is_err()
                    {
                        // The target is stopping: so is this node.
                        return;
                    }
                }
                None => {
                    if self.closed.is_set() {
                        return;
                    }
                    or(hop.kick.changed(seen), async {
                        glommio::timer::sleep(Duration::from_millis(100)).await;
                    })
                    .await;
                }
            }
        }
    }
}

/// Kafka's answer to a proposal that failed or was refused: NOT_LEADER_OR_FOLLOWER for
/// everything about leadership (the client refreshes metadata and retries at the leader);
/// back-pressure (`Dropped`) as REQUEST_TIMED_OUT, which clients retry; a result unknown
/// after a snapshot replaced this replica's log as REQUEST_TIMED_OUT too (the batch may be
/// in the log: an idempotent producer's retry is deduplicated).
fn propose_error_code(e: ProposeError) -> i16 {
    match e {
        ProposeError::UnknownGroup
        | ProposeError::NotLeader { .. }
        | ProposeError::NotReady
        | ProposeError::Superseded => kerr::NOT_LEADER_OR_FOLLOWER,
        ProposeError::Dropped | ProposeError::Indeterminate => kerr::REQUEST_TIMED_OUT,
        ProposeError::InvalidBatch => kerr::CORRUPT_MESSAGE,
    }
}

/// A group's controlled-shutdown hand-off ([`Replication::hand_off_leaderships`]).
#[derive(Default)]
struct Handoff {
    /// When the current transfer was asked for.
    asked: Option<Instant>,
    /// The replicas asked so far, each once.
    tried: Vec<NodeId>,
    /// Nobody (else) to hand it to: it serves until the node stops.
    given_up: bool,
}

/// How often the controlled shutdown looks for leaderships still to hand off.
const HANDOFF_CHECK_EVERY: Duration = Duration::from_millis(50);

/// A hand-off not completed after this long is asked again: raft-rs abandons a leadership
/// transfer after an election timeout (the leader's, which is not randomized).
const HANDOFF_RETRY: Duration = Duration::from_millis(
    sluice_raft::manager::TICK_MS * sluice_raft::manager::ELECTION_TICKS as u64 + 100,
);

/// Whether the transport reaches node `n`, from the view in `Shared::node_liveness`:
/// `None` when the transport does not know the node (yet). Callers decide what an unknown
/// node counts as: the ISR check keeps it (a node just registered), the leadership moves
/// (rebalance, hand-off, ElectLeaders) do not send it a leadership.
fn node_up(liveness: &[(i32, bool)], n: NodeId) -> Option<bool> {
    liveness
        .iter()
        .find(|(id, _)| *id as u64 == n)
        .map(|(_, up)| *up)
}

/// The replica a leader going away hands its group to (controlled shutdown): among the
/// other voters that are in its ISR, on a node the transport reaches and heard from lately
/// (`progress`'s flag; a quiesced leader's followers were all caught up when it quiesced),
/// the one that holds the leader's whole log (index `last`) first, so the transfer
/// completes at once, then the preferred replica (first in `voters`), then the furthest
/// along (Raft's transfer first brings it up to date). `None` when there is no such voter.
fn handoff_target(
    me: NodeId,
    voters: &[NodeId],
    isr: &[NodeId],
    progress: &[(NodeId, u64, bool)],
    last: u64,
    quiesced: bool,
    reachable: impl Fn(NodeId) -> bool,
) -> Option<NodeId> {
    voters
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != me && isr.contains(v) && reachable(**v))
        .filter_map(|(rank, v)| {
            let &(_, matched, active) = progress.iter().find(|(n, _, _)| n == v)?;
            (active || quiesced).then_some(((matched >= last, rank == 0, matched), *v))
        })
        .max_by_key(|(key, _)| *key)
        .map(|(_, v)| v)
}

/// A client's produce of one batch to a replicated partition: its `acks` and
/// `timeout_ms`, and `refused_seq` (see `crate::ops::PartitionOp::Produce`).
#[derive(Clone, Copy, Debug)]
pub struct ProduceArgs {
    pub acks: i16,
    pub timeout_ms: i32,
    pub refused_seq: i64,
}

/// Produces one batch to a replicated partition this replica leads (see the module header
/// for when each `acks` is answered). The produce handler let through exactly one batch
/// whose length field matches the payload (`produce_rules`); its CRC and size are checked
/// here, before it enters the Raft log (followers store it as it is).
pub async fn produce(
    rep: &Rc<Replication>,
    group: GroupId,
    log: &PartitionLog<DmaStorage>,
    args: ProduceArgs,
    payload: Option<Bytes>,
) -> PartitionReply {
    let ProduceArgs {
        acks,
        timeout_ms,
        refused_seq,
    } = args;
    let Some(batch) = payload.filter(|b| !b.is_empty()) else {
        return PartitionReply::error(kerr::CORRUPT_MESSAGE);
    };
    let header = match Header::parse(&batch) {
        Some(h) if h.size == batch.len() && h.records_count > 0 => h,
        _ => return PartitionReply::error(kerr::CORRUPT_MESSAGE),
    };
    if header.verify(&batch).is_err() {
        return PartitionReply::error(kerr::CORRUPT_MESSAGE);
    }
    let config = log.config();
    if batch.len() > config.max_message_bytes.min(BATCH_BYTES_MAX) {
        return PartitionReply::error(kerr::MESSAGE_TOO_LARGE);
    }
    // LogAppendTime is the leader's clock, stamped before replication so that every replica
    // stores the same bytes.
    let (batch, log_append_time) = if config.log_append_time {
        let now = crate::shard::now_ms();
        let mut b = batch.to_vec();
        sluice_storage::hdr::set_log_append_time(&mut b, now);
        (Bytes::from(b), now)
    } else {
        (batch, -1)
    };
    if let Some(seq) = (refused_seq >= 0)
        .then(|| i32::try_from(refused_seq).ok())
        .flatten()
    {
        // Refused before it reached this replica (see `sluice_replica::sequences`): this
        // replica's fence takes it as one of its own refusals, and then decides.
        rep.refused_upstream(group, &header, seq);
    }
    let submitted = match rep.submit(group, &header, batch, log, Origin::Client) {
        Ok(s) => s,
        Err(code) => return PartitionReply::error(code),
    };
    if acks == 0 {
        return PartitionReply::default();
    }
    let wait = if timeout_ms >= 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        PRODUCE_WAIT_DEFAULT
    };
    let deadline = Instant::now() + wait;
    let committed = acks == -1 && !ack_before_commit();
    let started = crate::stats::start();
    let (base, last) = match submitted {
        Submitted::Duplicate {
            first_offset,
            last_offset,
        } => (first_offset, last_offset),
        Submitted::Proposal(p) => match p.wait(committed, wait).await {
            None => return PartitionReply::error(kerr::REQUEST_TIMED_OUT),
            Some(Err(e)) => return PartitionReply::error(propose_error_code(e)),
            Some(Ok(span)) => (span.base, span.last()),
        },
    };
    if committed {
        // Committed on a quorum (or, a duplicate, in the log); this leader's own high
        // watermark may be a moment behind, and the answer waits for it as Kafka's
        // DelayedProduce waits for the high watermark.
        let left = deadline.saturating_duration_since(Instant::now());
        let visible = or(
            async {
                log.wait_high_watermark_above(last).await;
                true
            },
            async {
                glommio::timer::sleep(left).await;
                false
            },
        )
        .await;
        if !visible {
            return PartitionReply::error(kerr::REQUEST_TIMED_OUT);
        }
        crate::stats::record_since(crate::stats::Stage::RaftProduceCommitted, started);
    }
    PartitionReply {
        base_offset: base,
        log_append_time,
        log_start_offset: log.log_start_offset(),
        ..PartitionReply::default()
    }
}

/// How long a DeleteRecords waits for its commit when the request gives no timeout
/// (negative): the admin clients' default `timeout_ms`.
const DELETE_RECORDS_WAIT_DEFAULT: Duration = Duration::from_secs(30);

/// DeleteRecords on a replicated partition this replica leads, as Kafka's leader answers
/// it: `offset` -1 is the high watermark; below 0 or past the high watermark is
/// OFFSET_OUT_OF_RANGE; at or below the log start changes nothing; else the new start goes
/// through Raft (a log-start entry every replica applies as it commits, see
/// `GroupManager::propose_log_start`) and the answer waits until it committed and this
/// leader applied it (at most `timeout_ms`, then REQUEST_TIMED_OUT: it may still apply).
/// The reply's `log_start_offset` is the low watermark: the log start afterwards.
pub async fn delete_records(
    rep: &Rc<Replication>,
    group: GroupId,
    log: &PartitionLog<DmaStorage>,
    offset: i64,
    timeout_ms: i32,
) -> PartitionReply {
    let hw = log.high_watermark();
    let target = if offset == -1 { hw } else { offset };
    if target < 0 || target > hw {
        return PartitionReply::error(kerr::OFFSET_OUT_OF_RANGE);
    }
    let start = log.log_start_offset();
    let done = |start: i64| PartitionReply {
        log_start_offset: start,
        ..PartitionReply::default()
    };
    if target <= start {
        return done(start);
    }
    let p = match rep.propose_log_start(group, target) {
        Ok(p) => p,
        Err(code) => return PartitionReply::error(code),
    };
    let wait = if timeout_ms >= 0 {
        Duration::from_millis(timeout_ms as u64)
    } else {
        DELETE_RECORDS_WAIT_DEFAULT
    };
    match p.wait(true, wait).await {
        None => PartitionReply::error(kerr::REQUEST_TIMED_OUT),
        Some(Err(e)) => PartitionReply::error(propose_error_code(e)),
        // Applied here as it committed (the manager's call that reported the commit raised
        // the log's start in `push`; a snapshot that replaced the log since moved it further).
        Some(Ok(_)) => done(log.log_start_offset().max(target)),
    }
}

/// ElectLeaders PREFERRED for `group`, on the replica that leads it: hands the leadership
/// to the preferred replica if it may take it ([`Replication::preferred_successor`]) and
/// answers NONE once this replica sees it lead, or REQUEST_TIMED_OUT when `timeout` passes
/// first (the transfer may still complete). A transfer that Raft abandoned (after an
/// election timeout) is asked again while time remains and the preferred replica still
/// qualifies. Other answers: ELECTION_NOT_NEEDED, PREFERRED_LEADER_NOT_AVAILABLE (also when
/// another replica took the leadership meanwhile), NOT_LEADER_OR_FOLLOWER (this replica
/// does not lead: the caller asks the leader).
pub async fn elect_preferred(rep: &Rc<Replication>, group: GroupId, timeout: Duration) -> i16 {
    let deadline = Instant::now() + timeout;
    let preferred = match rep.preferred_successor(group) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if rep.handoffs.borrow().is_some() {
        // Shutting down: its leaderships go to whichever replica suits best anyway.
        return kerr::NOT_LEADER_OR_FOLLOWER;
    }
    log::info!(
        "raft group {group:016x}: ElectLeaders, handing the leadership to its preferred \
         replica, node {preferred}"
    );
    let mut asked = Instant::now();
    let fx = rep.mgr.borrow_mut().transfer_leader(group, preferred);
    rep.push(fx);
    loop {
        match rep.status(group) {
            Some(st) if st.role != sluice_raft::Role::Leader => {
                return match st.leader {
                    Some(l) if l == preferred => kerr::NONE,
                    Some(_) => kerr::PREFERRED_LEADER_NOT_AVAILABLE,
                    // An election under way: wait for its outcome.
                    None if Instant::now() < deadline => {
                        glommio::timer::sleep(ELECT_POLL).await;
                        continue;
                    }
                    None => kerr::REQUEST_TIMED_OUT,
                };
            }
            Some(_) => {}
            None => return kerr::NOT_LEADER_OR_FOLLOWER,
        }
        if rep.failure().is_some() || rep.stopping.get() {
            return kerr::NOT_LEADER_OR_FOLLOWER;
        }
        let now = Instant::now();
        if now >= deadline {
            return kerr::REQUEST_TIMED_OUT;
        }
        if now.duration_since(asked) >= HANDOFF_RETRY {
            match rep.preferred_successor(group) {
                Ok(p) if p == preferred => {
                    asked = now;
                    let fx = rep.mgr.borrow_mut().transfer_leader(group, preferred);
                    rep.push(fx);
                }
                Ok(_) => return kerr::PREFERRED_LEADER_NOT_AVAILABLE,
                Err(code) => return code,
            }
        }
        glommio::timer::sleep(ELECT_POLL.min(deadline - now)).await;
    }
}

/// How often [`elect_preferred`] looks whether the leadership has moved.
const ELECT_POLL: Duration = Duration::from_millis(10);

/// Shard 0: an envelope another node sent, to each shard hosting its groups.
pub fn deliver(shard: &crate::shard::BrokerShard, env: Envelope) {
    let Some(rep) = shard.replication() else {
        return;
    };
    for (to, part) in shard.raft_routes.split(env) {
        if to == rep.shard {
            rep.step(part);
        } else {
            rep.hop(to, sluice_rpc::encode_envelope(part, false));
        }
    }
}

/// A frame of `TAG_RAFT_OUT` (on shard 0: send it) or `TAG_RAFT_IN` (step it here).
pub fn on_frame(shard: &crate::shard::BrokerShard, tag: u16, payload: Option<Bytes>) {
    let Some(rep) = shard.replication() else {
        return;
    };
    let env = match sluice_rpc::decode_envelope(&payload.unwrap_or_default()) {
        Ok(e) => e,
        Err(e) => {
            log::error!("{}: bad raft envelope from another shard: {e}", rep.shard);
            return;
        }
    };
    if tag == TAG_RAFT_OUT {
        rep.send(env);
    } else {
        rep.step(env);
    }
}

/// Shard 0's map from the replicated partitions this node hosts to their shards, for
/// envelopes that arrive (rebuilt with every topic table).
#[derive(Default)]
pub struct RaftRoutes {
    owners: RefCell<HashMap<GroupId, ShardId>>,
}

impl RaftRoutes {
    pub fn replace(&self, owners: HashMap<GroupId, ShardId>) {
        *self.owners.borrow_mut() = owners;
    }

    /// Splits an arriving envelope by owning shard; messages of groups this node does not
    /// (yet) host are dropped (the sender retries: the topic may not be adopted here yet).
    pub fn split(&self, env: Envelope) -> Vec<(ShardId, Envelope)> {
        let owners = self.owners.borrow();
        let mut out: HashMap<ShardId, Envelope> = HashMap::new();
        let Envelope {
            from,
            to,
            heartbeats,
            messages,
        } = env;
        let blank = || Envelope {
            from,
            to,
            ..Default::default()
        };
        for h in heartbeats {
            if let Some(s) = owners.get(&h.group) {
                out.entry(*s).or_insert_with(blank).heartbeats.push(h);
            }
        }
        for (g, m) in messages {
            if let Some(s) = owners.get(&g) {
                out.entry(*s).or_insert_with(blank).messages.push((g, m));
            }
        }
        out.into_iter().collect()
    }
}

/// The leader table as the controller runtime's dissemination sees it: the shared cluster
/// view, accepting reports about partitions of this node's cluster state.
pub struct LeaderReports {
    shared: std::sync::Arc<crate::Shared>,
    /// Partition counts by topic id, of the cluster state of this version.
    topics: RefCell<(u64, HashMap<[u8; 16], i32>)>,
}

impl LeaderReports {
    pub fn new(shared: std::sync::Arc<crate::Shared>) -> LeaderReports {
        LeaderReports {
            shared,
            topics: RefCell::new((u64::MAX, HashMap::new())),
        }
    }
}

impl sluice_cluster::LeaderStore for LeaderReports {
    fn seq(&self) -> u64 {
        self.shared.cluster_view.leader_seq()
    }

    fn changes_since(
        &self,
        cursor: u64,
        max: usize,
    ) -> (Vec<sluice_meta::leaders::LeaderUpdate>, u64) {
        self.shared.cluster_view.leader_changes_since(cursor, max)
    }

    fn accepts(&self, topic: &[u8; 16], partition: i32) -> bool {
        let state = self.shared.cluster_state();
        let mut cache = self.topics.borrow_mut();
        if cache.0 != state.version {
            *cache = (
                state.version,
                state.topics.iter().map(|t| (t.id, t.partitions)).collect(),
            );
        }
        cache
            .1
            .get(topic)
            .is_some_and(|n| partition >= 0 && partition < *n)
    }

    fn observe(&self, update: sluice_meta::leaders::LeaderUpdate) -> bool {
        self.shared.cluster_view.observe(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_going_away_picks_a_caught_up_reachable_isr_member_preferred_first() {
        let all = |_| true;
        let progress = [(1, 10, true), (2, 10, true), (3, 10, true)];
        // Node 2 leads; the preferred replica 1 holds the whole log: it gets it.
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &progress, 10, false, all),
            Some(1)
        );
        // The preferred replica behind: a caught-up one wins over it.
        let behind = [(1, 7, true), (2, 10, true), (3, 10, true)];
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &behind, 10, false, all),
            Some(3)
        );
        // Nobody caught up: the preferred one, then the furthest along.
        let lagging = [(1, 7, true), (2, 10, true), (3, 8, true)];
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &lagging, 10, false, all),
            Some(1)
        );
        let lagging = [(1, 10, true), (2, 7, true), (3, 8, true)];
        assert_eq!(
            handoff_target(1, &[1, 2, 3], &[1, 2, 3], &lagging, 10, false, all),
            Some(3)
        );
        // Out of the ISR, unreachable, or not heard from lately: not eligible.
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[2, 3], &progress, 10, false, all),
            Some(3)
        );
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &progress, 10, false, |n| n != 1),
            Some(3)
        );
        let silent = [(1, 10, false), (2, 10, true), (3, 10, false)];
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &silent, 10, false, all),
            None
        );
        // A quiesced leader's stale flags do not count against its followers.
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[1, 2, 3], &silent, 10, true, all),
            Some(1)
        );
        // The only live replica: nowhere to go.
        assert_eq!(
            handoff_target(2, &[1, 2, 3], &[2], &progress, 10, false, all),
            None
        );
    }

    #[test]
    fn node_up_tells_up_down_and_unknown_nodes_apart() {
        let liveness = [(1, true), (2, false)];
        assert_eq!(node_up(&liveness, 1), Some(true));
        assert_eq!(node_up(&liveness, 2), Some(false));
        assert_eq!(node_up(&liveness, 3), None);
        assert_eq!(node_up(&[], 1), None);
    }

    #[test]
    fn group_ids_are_stable_and_never_the_controllers() {
        let a = group_id(&[7; 16], 0);
        assert_eq!(a, group_id(&[7; 16], 0));
        assert_ne!(a, group_id(&[7; 16], 1));
        assert_ne!(a, group_id(&[8; 16], 0));
        assert_ne!(a, sluice_meta::CONTROLLER_GROUP);
    }

    #[test]
    fn a_start_with_another_shard_count_is_refused() {
        let d = tempfile::tempdir().unwrap();
        check_shard_count(d.path(), 2).unwrap();
        let dir = state_dir(d.path(), 2, ShardId(1));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("raft-state"), b"").unwrap();
        check_shard_count(d.path(), 2).unwrap();
        // Empty: nothing was replicated with 2 shards, so 4 may start (and the unused
        // state goes).
        check_shard_count(d.path(), 4).unwrap();
        assert!(!dir.exists());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("raft-state"), b"x").unwrap();
        let e = check_shard_count(d.path(), 4).unwrap_err();
        assert!(e.contains("--shards 2"), "{e}");
    }
}
