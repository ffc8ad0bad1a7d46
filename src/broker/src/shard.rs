//! One shard's broker state: its copy of the topic table and shard table, the partitions it
//! owns (their logs and flusher tasks), and the execution of partition operations, whether
//! they come from a connection on this shard or from another shard through the mesh.
//! A partition operation's `current_leader_epoch` is checked here, against the log's
//! current epoch, in the same step as the operation; the shared epoch table Metadata reads
//! ([`crate::leader_epochs`]) is updated in the same step as any epoch change.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::Bytes;
use sluice_codec::ApiTable;
use sluice_shard::{
    DmaStorage, Frame, FrameHandler, PartitionKey, QueueKind, ShardCtx, ShardId, ShardTable,
};
use sluice_storage::{BatchCache, PartitionLog, StorageError};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::kerr;
use crate::ops::{
    self, PartitionOp, PartitionReply, PartitionRequest, TAG_AUTO_CREATE, TAG_FORWARD,
    TAG_NODE_CALL, TAG_PARTITION, TAG_PRODUCER_IDS, TAG_RAFT_IN, TAG_RAFT_OUT, TAG_TOPICS,
    TAG_UNWATCH, TAG_WATCH, TAG_WATCH_FIRED,
};
use crate::partition_dirs;
use crate::replication_throttle::{PartitionThrottle, TopicThrottles};
use crate::stats::{self, Stage};
use crate::topic_config;
use crate::topics::{ClusterState, StateDelta, TopicRecord, TopicTable};

/// Plain partition logs a shard opens at once (`apply_topics`): enough to overlap the
/// waits of their file operations, few enough that their scan buffers stay small.
const PARTITION_OPENS_IN_FLIGHT: usize = 32;

/// How long one log's cleaning pass may run before the cleaner says it holds up the rest.
const CLEANER_PASS_SLOW_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// A partition owned by this shard.
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Rc<PartitionLog<DmaStorage>>,
    /// The Raft group of a replicated partition (more than one replica, or one left with
    /// one by a reassignment: see [`replicated`]): its log is the replica store's, written
    /// only through Raft (`crate::replication`).
    pub group: Option<sluice_raft::GroupId>,
    /// The log directory holding it (an index into `Shared::log_dirs`).
    pub dir: usize,
}

/// Broker state of one shard. Owned by that shard; `!Send`.
pub struct BrokerShard {
    pub ctx: ShardCtx,
    pub config: Arc<BrokerConfig>,
    pub api: ApiTable,
    topics: RefCell<Rc<TopicTable>>,
    table: RefCell<ShardTable>,
    partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    storage: Rc<DmaStorage>,
    cache: Rc<RefCell<BatchCache>>,
    /// Present on shard 0 only.
    pub controller: Option<Controller>,
    /// With `--voters`: the controller-log index whose state this node last adopted
    /// (shard 0 only; see `metadata_sync`).
    adopted_metadata_index: Cell<u64>,
    stopping: Cell<bool>,
    /// Shutdown has begun: connections take no new requests (see [`crate::conn::serve`]).
    draining: Cell<bool>,
    pub(crate) shared_handle: Arc<crate::Shared>,
    /// KIP-227 fetch sessions of connections on this shard.
    pub fetch_sessions: RefCell<crate::handlers::fetch::FetchSessions>,
    /// Client telemetry (KIP-714) of connections on this shard.
    pub telemetry: RefCell<crate::telemetry_host::ShardTelemetry>,
    /// Group coordinators of the `__consumer_offsets` partitions this shard owns.
    group_slots: RefCell<Vec<Rc<crate::group_host::GroupSlot>>>,
    /// Transaction coordinators of the `__transaction_state` partitions this shard owns.
    txn_slots: RefCell<Vec<Rc<crate::txn_host::TxnSlot>>>,
    /// This shard itself (the transaction coordinators write markers through it).
    me: Weak<BrokerShard>,
    /// Serialises topic-table updates: each awaits while opening logs, and two interleaved
    /// ones (start-up's and a delta that arrives meanwhile) could open a partition twice.
    pub(crate) apply_lock: sluice_storage::notify::LocalLock,
    /// Parked fetch long-polls of this shard, and watches on the partitions it owns.
    pub watches: crate::watch::Watches,
    /// Bytes of requests in flight on this shard's connections (`queued.max.request.bytes`).
    pub request_memory: Rc<crate::request_memory::RequestMemory>,
    /// The shard's partition Raft groups (once opened at start).
    replication: RefCell<Option<Rc<crate::replication::Replication>>>,
    /// Shard 0: which shard hosts each replicated partition of this node.
    pub raft_routes: crate::replication::RaftRoutes,
    /// This shard's authorizer and decision cache (`--authorizer acl`).
    pub authz: crate::authz::ShardAuthz,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A partition directory to prepare: topic name, partition, topic id.
type PartitionToOpen = (String, i32, [u8; 16]);

/// Whether this node's replica of `partition` of `t` is replicated through Raft because
/// it has other replicas (the offsets topic's too: its coordinators then write through
/// Raft). A partition with one replica is a plain log unless it was a group before (a
/// reassignment shrank it to one replica, or moved it to another node by way of a group):
/// it stays a one-voter group, which only this node's store knows (`group_known`).
pub fn replicated(t: &TopicRecord, partition: i32, this_node: i32) -> bool {
    t.hosted_on(partition, this_node)
        && partition >= 0
        && t.replicas
            .get(partition as usize)
            .is_some_and(|r| r.len() > 1)
}

/// The replica set of a replicated partition as the Raft group driver takes it.
fn replica_set(t: &TopicRecord, partition: i32, this_node: i32) -> crate::replication::ReplicaSet {
    let ids = |v: Vec<i32>| v.into_iter().map(|n| n as u64).collect();
    crate::replication::ReplicaSet {
        replicas: ids(t.replicas_of(partition, this_node)),
        target: ids(t.target_of(partition, this_node)),
        original: ids(t.original_of(partition, this_node)),
        joining: t
            .move_of(partition)
            .is_some_and(|m| m.adding.contains(&this_node)),
        revision: t.move_of(partition).map(|m| m.revision),
    }
}

/// The producer id and outcome of a transaction marker batch (None for any other batch).
fn offsets_marker(batch: &[u8]) -> Option<(i64, bool)> {
    let h = sluice_storage::hdr::Header::parse(batch)?;
    if !sluice_storage::txn::is_marker_header(&h) {
        return None;
    }
    let m = sluice_storage::txn::parse_marker(&h, batch).ok()??;
    Some((h.producer_id, m.commit))
}

fn storage_error_code(e: &StorageError) -> i16 {
    e.kafka_error_code()
}

impl BrokerShard {
    pub fn new(
        ctx: ShardCtx,
        config: Arc<BrokerConfig>,
        state: ClusterState,
        shared: Arc<crate::Shared>,
    ) -> Rc<BrokerShard> {
        let storage = Rc::new(ctx.storage());
        let controller =
            (ctx.shard_id() == ShardId(0)).then(|| Controller::new(config.clone(), shared.clone()));
        let table = ShardTable::new(
            ctx.shard_count(),
            sluice_shard::table::PARTITIONS_MAX_DEFAULT,
        )
        .expect("shard count validated at start");
        let request_memory =
            crate::request_memory::RequestMemory::new(config.queued_max_request_bytes);
        Rc::new_cyclic(|me| BrokerShard {
            me: me.clone(),
            api: crate::handlers::api_table(),
            topics: RefCell::new(Rc::new(TopicTable::new(state))),
            table: RefCell::new(table),
            partitions: RefCell::new(HashMap::new()),
            cache: Rc::new(RefCell::new(BatchCache::with_read_ahead(
                config.batch_cache_bytes,
                config.read_ahead_bytes_max,
            ))),
            storage,
            controller,
            adopted_metadata_index: Cell::new(0),
            authz: crate::authz::ShardAuthz::new(&config),
            config,
            ctx,
            stopping: Cell::new(false),
            draining: Cell::new(false),
            shared_handle: shared,
            fetch_sessions: RefCell::new(Default::default()),
            telemetry: RefCell::new(Default::default()),
            group_slots: RefCell::new(Vec::new()),
            txn_slots: RefCell::new(Vec::new()),
            apply_lock: Default::default(),
            watches: Default::default(),
            request_memory,
            replication: RefCell::new(None),
            raft_routes: Default::default(),
        })
    }

    pub fn adopted_metadata_index(&self) -> u64 {
        self.adopted_metadata_index.get()
    }

    pub fn set_adopted_metadata_index(&self, index: u64) {
        self.adopted_metadata_index
            .set(self.adopted_metadata_index.get().max(index));
    }

    pub fn shard_id(&self) -> ShardId {
        self.ctx.shard_id()
    }

    /// This shard's current topic table (a cheap handle; replaced wholesale on change).
    pub fn topics(&self) -> Rc<TopicTable> {
        self.topics.borrow().clone()
    }

    pub fn owner(&self, topic_id: &[u8; 16], partition: i32) -> Option<ShardId> {
        self.table.borrow().lookup(&PartitionKey {
            topic_id: *topic_id,
            partition,
        })
    }

    /// A partition's directory, in the log directory that holds it (placed there now if it
    /// is new: see `log_dirs`).
    pub fn partition_dir(&self, topic: &str, partition: i32) -> PathBuf {
        self.shared_handle.log_dirs.partition_path(topic, partition)
    }

    pub(crate) fn local_partition(
        &self,
        topic_id: &[u8; 16],
        partition: i32,
    ) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&PartitionKey {
                topic_id: *topic_id,
                partition,
            })
            .cloned()
    }

    /// The log of a partition this shard owns.
    pub(crate) fn local_log(&self, key: &PartitionKey) -> Option<Rc<PartitionLog<DmaStorage>>> {
        self.partitions.borrow().get(key).map(|p| p.log.clone())
    }

    /// Adopts a new topic table: rebuilds the shard table, opens logs of partitions this
    /// shard now owns, and closes (and, for deleted topics, removes) those it no longer has.
    pub async fn apply_topics(
        self: &Rc<Self>,
        state: ClusterState,
    ) -> Result<(), crate::error::BrokerError> {
        let _one_at_a_time = self.apply_lock.lock().await;
        self.apply_topics_locked(state).await
    }

    /// Applies a controller delta to this shard's current state (under the same lock, so
    /// the state it builds on is the one in force when it applies). A delta that does not
    /// follow this shard's version, or one that did not decode (`Err`), means an update was
    /// missed: the shard then adopts the controller's whole persisted state instead, so one
    /// lost update never leaves it behind for good.
    pub async fn apply_delta(
        self: &Rc<Self>,
        delta: Result<StateDelta, String>,
    ) -> Result<(), String> {
        let _one_at_a_time = self.apply_lock.lock().await;
        let state = match delta {
            // Asked for: no news.
            Ok(d) if d.resync => (*self.shared_handle.cluster_state()).clone(),
            delta => match delta.and_then(|d| d.apply(&self.topics().state)) {
                Ok(state) => state,
                Err(e) => {
                    log::warn!("{e}; adopting the controller's whole state");
                    (*self.shared_handle.cluster_state()).clone()
                }
            },
        };
        self.apply_topics_locked(state)
            .await
            .map_err(|e| e.to_string())
    }

    async fn apply_topics_locked(
        self: &Rc<Self>,
        state: ClusterState,
    ) -> Result<(), crate::error::BrokerError> {
        if state.version < self.topics.borrow().version() {
            return Ok(());
        }
        let new = Rc::new(TopicTable::new(state));
        let mut table = ShardTable::new(
            self.ctx.shard_count(),
            sluice_shard::table::PARTITIONS_MAX_DEFAULT,
        )
        .expect("shard count validated at start");
        // Borrowed from `new`, not cloned: a topic record holds every partition's replicas,
        // so a clone per partition would cost the square of the partition count.
        let mut wanted: Vec<(PartitionKey, &TopicRecord)> = Vec::new();
        let this_node = self.config.node_id;
        for t in new.topics() {
            // Only the partitions with a replica on this node (all of them in a cluster of
            // one): the others are served by the nodes that host them.
            for p in (0..t.partitions).filter(|p| t.hosted_on(*p, this_node)) {
                let key = PartitionKey {
                    topic_id: t.id,
                    partition: p,
                };
                let owner = table
                    .insert_assigned(key)
                    .map_err(|e| crate::error::BrokerError::Shard(e.to_string()))?;
                if owner == self.shard_id() {
                    wanted.push((key, t));
                }
            }
            // Up to 100,000 partitions per node: let this shard's requests run meanwhile.
            sluice_shard::yield_if_needed().await;
        }
        if self.shard_id() == ShardId(0) {
            // Where envelopes for this node's replicated partitions go.
            let routes = table
                .iter()
                .filter(|(k, _)| {
                    new.get_by_id(&k.topic_id)
                        .is_some_and(|t| replicated(t, k.partition, this_node))
                })
                .map(|(k, s)| (crate::replication::group_id(&k.topic_id, k.partition), s))
                .collect();
            self.raft_routes.replace(routes);
        }
        *self.table.borrow_mut() = table;
        *self.topics.borrow_mut() = new.clone();

        // Partitions to drop, data and all: their topic is gone, or this node no longer holds
        // a replica of them (a reassignment moved it), as a Kafka broker deletes a replica
        // it is no longer assigned.
        let gone: Vec<(PartitionKey, Rc<Partition>)> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(k, _)| {
                new.get_by_id(&k.topic_id).is_none_or(|t| {
                    k.partition >= t.partitions || !t.hosted_on(k.partition, this_node)
                })
            })
            .map(|(k, p)| (*k, p.clone()))
            .collect();
        for (key, p) in gone {
            self.partitions.borrow_mut().remove(&key);
            self.unload_coordinator_slots(key);
            self.shared_handle
                .leader_epochs
                .remove(key.topic_id, key.partition);
            if let (Some(g), Some(rep)) = (p.group, self.replication()) {
                // The store forgets the group (durably) and closes its log before the
                // directory goes: a restart must not recover a group without its log.
                rep.remove_group(g)
                    .await
                    .map_err(crate::error::BrokerError::Shard)?;
            } else {
                // Fenced first: a flush stage still running could otherwise write a new
                // segment file or index into the directory after it moved, or into one
                // re-created for a new topic of the same name.
                p.log.retire_and_fence().await;
            }
            // Renamed aside first, then removed: see `partition_dirs`. Off the executor: a
            // directory of many segments takes many syscalls.
            let root = p.log.dir().parent().map(PathBuf::from).unwrap_or_default();
            let name = partition_dirs::dir_name(&p.topic, p.index);
            self.shared_handle.log_dirs.forget(&p.topic, p.index);
            if self.shared_handle.log_dirs.dir_offline(p.dir) {
                // Its disk failed: the next start's sweep removes it.
                continue;
            }
            let removed = glommio::executor()
                .spawn_blocking(move || partition_dirs::discard(&root, &name))
                .await;
            match removed {
                Ok(_) => {}
                // The metadata directory's failure stops the update, as before JBOD.
                Err(e) if p.dir == 0 => {
                    return Err(crate::error::BrokerError::Io {
                        op: "remove",
                        path: p.log.dir().to_path_buf(),
                        source: e,
                    })
                }
                // Only its directory's partitions suffer (the sweep retries at start).
                Err(e) => {
                    self.dir_failed(p.dir, format!("removing {}: {e}", p.log.dir().display()))
                }
            }
        }
        let broker_cfgs = new.state.broker_configs.clone();
        // The directories of the partitions to open, each with this topic id's
        // `partition.metadata` (created, adopted, or replacing an orphan of an earlier topic
        // of the same name): all at once, off the executor.
        let to_open: Vec<PartitionToOpen> = wanted
            .iter()
            .filter(|(key, _)| self.local_partition(&key.topic_id, key.partition).is_none())
            .map(|(key, t)| (t.name.clone(), key.partition, t.id))
            .collect();
        if !to_open.is_empty() {
            // Each in its log directory (placed now if new, the placement durable before
            // any directory is made; one in an offline directory stays closed).
            let dirs = &self.shared_handle.log_dirs;
            let mut by_root: Vec<(PathBuf, Vec<PartitionToOpen>)> = Vec::new();
            for part in to_open {
                let i = dirs.place(&part.0, part.1);
                if dirs.dir(i).is_offline() {
                    continue;
                }
                let root = &dirs.dir(i).path;
                match by_root.iter_mut().find(|(r, _)| r == root) {
                    Some((_, parts)) => parts.push(part),
                    None => by_root.push((root.clone(), vec![part])),
                }
            }
            let shared = self.shared_handle.clone();
            let failed = glommio::executor()
                .spawn_blocking(move || {
                    shared.log_dirs.persist()?;
                    // One directory's failure is its partitions' only.
                    Ok::<_, std::io::Error>(
                        by_root
                            .iter()
                            .filter_map(|(root, parts)| {
                                let e = partition_dirs::prepare(root, parts).err()?;
                                Some((shared.log_dirs.holding(root), e))
                            })
                            .collect::<Vec<_>>(),
                    )
                })
                .await
                .map_err(|e| crate::error::BrokerError::Io {
                    op: "write the log directory placement in",
                    path: self.config.data_dir.clone(),
                    source: e,
                })?;
            for (dir, e) in failed {
                if dir == 0 {
                    // The metadata directory's failure stops the update, as before JBOD.
                    return Err(crate::error::BrokerError::Io {
                        op: "prepare partition directories in",
                        path: self.config.data_dir.clone(),
                        source: e,
                    });
                }
                // Its partitions are then skipped below (`partition_offline`).
                let path = &self.shared_handle.log_dirs.dir(dir).path;
                self.dir_failed(
                    dir,
                    format!("preparing partition directories in {}: {e}", path.display()),
                );
            }
        }
        // Replicated partitions: every creation is queued first, so they share the store's
        // write and sync rounds, then each is waited for.
        let mut replicas = Vec::new();
        // Each replicated partition's replication throttles, set once its group exists.
        self.shared_handle
            .replication_throttle
            .set_rates(crate::replication_throttle::Rates::of(&new.state));
        let mut topic_throttles: HashMap<[u8; 16], TopicThrottles> = HashMap::new();
        let mut throttles = Vec::new();
        // New plain partitions, opened together after this loop.
        let mut plain = Vec::new();
        for (key, t) in wanted {
            let topic = topic_throttles
                .entry(t.id)
                .or_insert_with(|| TopicThrottles::of(&t.configs));
            let throttle = if topic.is_none() {
                // (Set all the same: a throttle removed from the topic ends here.)
                PartitionThrottle::default()
            } else {
                let replicas = t.replicas_of(key.partition, this_node);
                topic.partition(key.partition, this_node, &replicas)
            };
            throttles.push((
                crate::replication::group_id(&key.topic_id, key.partition),
                throttle,
            ));
            let log_cfg = topic_config::log_config(&t.configs, &broker_cfgs);
            if let Some(p) = self.local_partition(&key.topic_id, key.partition) {
                if p.group.is_none() && replicated(t, key.partition, this_node) {
                    // A reassignment gives this one-replica partition more replicas (or
                    // moves it): its log becomes its Raft group's.
                    let group = self.adopt_plain(key, t, p, &broker_cfgs).await?;
                    replicas.push((key, t.name.clone(), group));
                    continue;
                }
                if let (Some(g), Some(rep)) = (p.group, self.replication()) {
                    // A reassignment began, moved on or completed: the group follows.
                    rep.set_replicas(g, key, replica_set(t, key.partition, this_node));
                }
                if p.log.config() != log_cfg {
                    p.log.set_config(log_cfg)?;
                    if let (Some(g), Some(rep)) = (p.group, self.replication()) {
                        // A reset reopens the log with these.
                        rep.update_spec(g, self.partition_spec(t, key.partition, &broker_cfgs));
                    }
                }
                continue;
            }
            if self
                .shared_handle
                .log_dirs
                .partition_offline(&t.name, key.partition)
            {
                // Its log directory is offline: it answers KAFKA_STORAGE_ERROR (see `exec`).
                continue;
            }
            if replicated(t, key.partition, this_node) || self.group_known(key) {
                let group = self.begin_replicated(key, t, &broker_cfgs).await?;
                replicas.push((key, t.name.clone(), group));
                continue;
            }
            plain.push((key, t, log_cfg));
        }
        // Plain partitions open PARTITION_OPENS_IN_FLIGHT at a time: each open is a chain
        // of file operations (directory listing, checkpoints, the tail segment's scan), so a
        // start with thousands of partitions waits for them side by side, not one by one.
        let opened =
            sluice_shard::map_bounded(plain, PARTITION_OPENS_IN_FLIGHT, |(key, t, cfg)| {
                let dir = self.partition_dir(&t.name, key.partition);
                async move {
                    let log = self.open_plain_log(key, dir.clone(), cfg, &t.name).await;
                    (key, t, dir, log)
                }
            })
            .await;
        let mut opened = opened.into_iter();
        while let Some((key, t, dir, log)) = opened.next() {
            if self
                .shared_handle
                .log_dirs
                .partition_offline(&t.name, key.partition)
            {
                // Its directory failed while the others opened (see below).
                continue;
            }
            let log = match log {
                Ok(log) => log,
                Err(e) => {
                    let at = self.shared_handle.log_dirs.holding(&dir);
                    if at == 0 {
                        // The metadata directory's: the update fails, as before JBOD. The
                        // partitions after this one opened too but are not taken: their
                        // leader epochs go with them (the next update opens them again).
                        for (key, ..) in opened {
                            self.shared_handle
                                .leader_epochs
                                .remove(key.topic_id, key.partition);
                        }
                        return Err(e);
                    }
                    // A directory that cannot open its partitions is offline; the others
                    // open on.
                    self.dir_failed(at, format!("opening {}: {e}", dir.display()));
                    continue;
                }
            };
            let part = Rc::new(Partition {
                topic: t.name.clone(),
                index: key.partition,
                dir: self.shared_handle.log_dirs.holding(log.dir()),
                log: Rc::new(log),
                group: None,
            });
            self.partitions.borrow_mut().insert(key, part.clone());
            if t.name == crate::groups::OFFSETS_TOPIC {
                // This shard coordinates the groups of this partition: load them from it.
                let slot = crate::group_host::GroupSlot::local(
                    key.topic_id,
                    key.partition,
                    part.log.clone(),
                    self.config.groups.clone(),
                    self.me.clone(),
                );
                self.group_slots.borrow_mut().push(slot.clone());
                slot.reload();
            }
            if t.name == crate::txn_host::TXN_TOPIC {
                if let Some(me) = self.me.upgrade() {
                    let slot = crate::txn_host::TxnSlot::local(
                        &me,
                        key.topic_id,
                        key.partition,
                        part.log.clone(),
                    );
                    self.txn_slots.borrow_mut().push(slot.clone());
                    slot.reload();
                }
            }
            self.spawn_flusher(part);
        }
        for (key, topic, group) in replicas {
            self.open_replicated(key, topic, group).await?;
        }
        if let Some(rep) = self.replication() {
            for (group, throttle) in throttles {
                rep.set_throttle(group, throttle);
            }
        }
        Ok(())
    }

    /// Opens a plain (one-replica) partition's log in `dir`, its expired producers
    /// forgotten, its leader epoch published.
    async fn open_plain_log(
        &self,
        key: PartitionKey,
        dir: PathBuf,
        cfg: sluice_storage::LogConfig,
        topic: &str,
    ) -> Result<PartitionLog<DmaStorage>, crate::error::BrokerError> {
        let log = PartitionLog::open(
            self.storage.clone(),
            dir,
            cfg,
            self.cache.clone(),
            format!("{topic}-{}", key.partition),
        )
        .await?;
        // Before anyone can produce: expired producers do not come back from recovery.
        let expired = log.expire_producers(now_ms(), self.config.producer_id_expiration_ms);
        if expired > 0 {
            log::info!(
                "{topic}-{}: forgot {expired} expired producer(s) at open",
                key.partition
            );
        }
        self.shared_handle
            .leader_epochs
            .set(key.topic_id, key.partition, log.leader_epoch());
        Ok(log)
    }

    /// Reopens a plain partition's log from `dir` after a move between log directories
    /// (`log_moves`): requests, coordinators and retention use the new log from now on.
    pub(crate) async fn reopen_plain(
        self: &Rc<Self>,
        key: PartitionKey,
        old: &Rc<Partition>,
        dir: PathBuf,
    ) -> Result<(), crate::error::BrokerError> {
        let at = self.shared_handle.log_dirs.holding(&dir);
        let log = Rc::new(
            self.open_plain_log(key, dir, old.log.config(), &old.topic)
                .await?,
        );
        let part = Rc::new(Partition {
            topic: old.topic.clone(),
            index: old.index,
            dir: at,
            log: log.clone(),
            group: None,
        });
        self.partitions.borrow_mut().insert(key, part.clone());
        if let Some(slot) = self.group_slot(key) {
            slot.replace_log(log.clone());
        }
        if let Some(slot) = self.txn_slot(key) {
            slot.replace_log(log);
        }
        self.spawn_flusher(part);
        Ok(())
    }

    /// Takes log directory `dir` offline (see `log_dirs`); the metadata directory's disk
    /// (cluster state, Raft stores) failing stops the node, as Kafka halts a broker whose
    /// metadata log dir fails (as on SIGTERM, exiting non-zero with the reason).
    pub(crate) fn dir_failed(&self, dir: usize, why: String) {
        if dir == 0 {
            self.shared_handle.stop_fatally(
                self.ctx.shutdown(),
                format!("the metadata directory failed: {why}"),
            );
        }
        self.shared_handle.log_dirs.fail(dir, why);
    }

    /// Drops a plain partition whose log a failed move left closed: requests then find it
    /// not open (KAFKA_STORAGE_ERROR while its directory is offline) until a restart.
    pub(crate) fn forget_closed(&self, key: &PartitionKey) {
        self.partitions.borrow_mut().remove(key);
    }

    /// Queues the creation of this node's replica of a replicated partition (its Raft
    /// group; nothing to do for one recovered at start): see [`Self::open_replicated`].
    async fn begin_replicated(
        &self,
        key: PartitionKey,
        t: &TopicRecord,
        broker_cfgs: &std::collections::BTreeMap<String, String>,
    ) -> Result<sluice_raft::GroupId, crate::error::BrokerError> {
        let rep = self.replication().ok_or_else(|| {
            crate::error::BrokerError::Shard("partition replication is not running".into())
        })?;
        let set = replica_set(t, key.partition, self.config.node_id);
        let group = crate::replication::group_id(&key.topic_id, key.partition);
        let spec = self.partition_spec(t, key.partition, broker_cfgs);
        if !rep.knows(group) && set.original == [self.config.node_id as u64] {
            // This node was the partition's only replica before the reassignment under way
            // and its store has no group: the directory holds the one-replica log (a
            // restart came before the adoption was durable), adopted now, never cleared.
            return rep
                .adopt_group(key, set, spec)
                .map_err(crate::error::BrokerError::Shard);
        }
        if !rep.knows(group) {
            // Data in the directory of a group the store does not know is no replica's (a
            // crash between a creation's log write and its state record, or a removal whose
            // directory delete did not happen): cleared, as the store will not create over it.
            let dir = spec.dir.clone();
            let removed = glommio::executor()
                .spawn_blocking(move || partition_dirs::clear_log_files(&dir))
                .await
                .map_err(|e| crate::error::BrokerError::Io {
                    op: "clear",
                    path: spec.dir.clone(),
                    source: e,
                })?;
            if removed > 0 {
                log::warn!(
                    "{}: cleared {removed} file(s) of no known replica before creating its raft group",
                    spec.name
                );
            }
        }
        rep.begin_group(key, set, spec)
            .map_err(crate::error::BrokerError::Shard)
    }

    /// Whether this shard's store holds `key`'s Raft group: a partition that had more
    /// than one replica stays a group when a reassignment leaves it one (a one-voter
    /// group), so its replica count alone does not say how it is served.
    fn group_known(&self, key: PartitionKey) -> bool {
        self.replication().is_some_and(|rep| {
            rep.knows(crate::replication::group_id(&key.topic_id, key.partition))
        })
    }

    /// Unloads and forgets the coordinator slots (group or transaction) of `key`'s
    /// partition (it leaves this shard's map: deleted, moved away, or adopted by its Raft
    /// group).
    fn unload_coordinator_slots(&self, key: PartitionKey) {
        self.group_slots.borrow_mut().retain(|s| {
            let here = s.topic_id == key.topic_id && s.partition == key.partition;
            if here {
                s.unload();
            }
            !here
        });
        self.txn_slots.borrow_mut().retain(|s| {
            let here = s.topic_id == key.topic_id && s.partition == key.partition;
            if here {
                s.unload();
            }
            !here
        });
    }

    /// Stops serving `key`'s one-replica log `p` and queues its adoption as the log of
    /// the partition's Raft group ([`crate::replication::Replication::adopt_group`]): the
    /// log is closed first (appends fail from then on, NOT_LEADER_OR_FOLLOWER; what was
    /// appended is synced), so every record it acknowledged is in the group's log, then
    /// fenced, so nothing acts in its directory but the store after. Until the group serves, requests find no partition here and retry.
    async fn adopt_plain(
        &self,
        key: PartitionKey,
        t: &TopicRecord,
        p: Rc<Partition>,
        broker_cfgs: &std::collections::BTreeMap<String, String>,
    ) -> Result<sluice_raft::GroupId, crate::error::BrokerError> {
        let rep = self.replication().ok_or_else(|| {
            crate::error::BrokerError::Shard("partition replication is not running".into())
        })?;
        self.partitions.borrow_mut().remove(&key);
        self.unload_coordinator_slots(key);
        let closed = p.log.close().await;
        // Then fenced, even if the close failed: a retention pass or DeleteRecords that took
        // this log before it left the map must not remove segments once the store has the
        // directory (it waits for one in flight, and refuses any later).
        p.log.retire_and_fence().await;
        closed?;
        log::info!(
            "{}-{}: one-replica log closed at offset {}, to be adopted by its raft group",
            t.name,
            key.partition,
            p.log.log_end_offset()
        );
        let set = replica_set(t, key.partition, self.config.node_id);
        let spec = self.partition_spec(t, key.partition, broker_cfgs);
        rep.adopt_group(key, set, spec)
            .map_err(crate::error::BrokerError::Shard)
    }

    /// Serves a replicated partition once its Raft group's log is open (created, or
    /// recovered at start). No flusher: the store syncs.
    async fn open_replicated(
        &self,
        key: PartitionKey,
        topic: String,
        group: sluice_raft::GroupId,
    ) -> Result<(), crate::error::BrokerError> {
        let rep = self.replication().ok_or_else(|| {
            crate::error::BrokerError::Shard("partition replication is not running".into())
        })?;
        let log = rep
            .wait_group(group)
            .await
            .map_err(crate::error::BrokerError::Shard)?;
        let expired = log.expire_producers(now_ms(), self.config.producer_id_expiration_ms);
        if expired > 0 {
            log::info!(
                "{topic}-{}: forgot {expired} expired producer(s) at open",
                key.partition
            );
        }
        let offsets = topic == crate::groups::OFFSETS_TOPIC;
        let txn_state = topic == crate::txn_host::TXN_TOPIC;
        self.partitions.borrow_mut().insert(
            key,
            Rc::new(Partition {
                topic,
                index: key.partition,
                dir: self.shared_handle.log_dirs.holding(log.dir()),
                log: log.clone(),
                group: Some(group),
            }),
        );
        if offsets {
            // Every replica has a slot; the one serving as leader coordinates its groups.
            let slot = crate::group_host::GroupSlot::replicated(
                key.topic_id,
                key.partition,
                log.clone(),
                rep.clone(),
                group,
                self.config.groups.clone(),
                self.me.clone(),
            );
            self.group_slots.borrow_mut().push(slot);
            rep.watch_leadership(group);
        }
        if let (true, Some(me)) = (txn_state, self.me.upgrade()) {
            // Likewise for transactions: the replica serving as leader coordinates.
            let slot = crate::txn_host::TxnSlot::replicated(
                &me,
                key.topic_id,
                key.partition,
                log,
                rep.clone(),
                group,
            );
            self.txn_slots.borrow_mut().push(slot);
            rep.watch_leadership(group);
        }
        Ok(())
    }

    /// Each partition has one flusher ([`sluice_storage::PartitionLog::run_flusher`]): it
    /// writes appends as they arrive and fdatasyncs them in batches, each sync overlapping the
    /// next writes; appends that arrive meanwhile go into the next round.
    fn spawn_flusher(self: &Rc<Self>, part: Rc<Partition>) {
        let me = self.clone();
        let task = self.ctx.spawn_produce(async move {
            let result = part
                .log
                .run_flusher(
                    || me.stopping.get(),
                    |t| {
                        crate::stats::record_flush(t.write, t.sync, t.bytes);
                        sluice_metrics::recorder::flush(t.write, t.sync, t.bytes);
                    },
                )
                .await;
            // A failed log already said why (once); a deleted one fails by design.
            if let Err(e) = result {
                log::debug!("flusher of {}-{} ended: {e}", part.topic, part.index);
            }
            // A write or sync that failed takes the whole directory offline, as Kafka does:
            // its other partitions' files are on the same failing disk.
            if let Some(cause) = part.log.io_failure().filter(|_| !me.stopping.get()) {
                me.dir_failed(part.dir, format!("{}-{}: {cause}", part.topic, part.index));
            }
        });
        match task {
            Ok(t) => t.detach(),
            Err(e) => log::error!("cannot spawn flusher: {e}"),
        }
    }

    /// Logs this shard's stage timers every `--stats-interval-ms`, in the background queue,
    /// and probes the shard's timer lag (for those timers and for `/metrics`).
    pub fn spawn_stats_reporter(self: &Rc<Self>) {
        if let Some(interval) = self.config.stats_interval {
            let me = self.clone();
            let id = self.shard_id();
            let task = self.ctx.spawn_background(async move {
                crate::stats::report_every(id, interval, || me.stopping.get()).await
            });
            match task {
                Ok(t) => t.detach(),
                Err(e) => log::error!("cannot spawn stats reporter: {e}"),
            }
        }
        // The timer-lag probe sleeps in the produce queue, as the replication driver's and
        // the flushers' timers do; seldom unless the stage timers are on (an idle broker
        // should stay idle).
        let me = self.clone();
        let period = match self.config.stats_interval {
            Some(_) => crate::stats::TIMER_PROBE_PERIOD,
            None => crate::stats::TIMER_PROBE_PERIOD_IDLE,
        };
        let probe = self.ctx.spawn_produce(async move {
            while !me.stopping.get() {
                let slept = std::time::Instant::now();
                sluice_shard::sleep(period).await;
                let late = slept.elapsed().saturating_sub(period);
                crate::stats::record(crate::stats::Stage::ShardTimerLag, late);
                sluice_metrics::recorder::timer_lag(late);
            }
        });
        match probe {
            Ok(t) => t.detach(),
            Err(e) => log::error!("cannot spawn timer-lag probe: {e}"),
        }
    }

    /// Retention (and producer-state expiry) runs in the background queue so it never
    /// delays produce or fetch.
    pub fn spawn_retention(self: &Rc<Self>) {
        let me = self.clone();
        let interval = self.config.retention_check_interval;
        let task = self.ctx.spawn_background(async move {
            loop {
                sluice_shard::sleep(interval).await;
                if me.stopping.get() {
                    break;
                }
                let parts: Vec<_> = me.partitions.borrow().values().cloned().collect();
                for p in parts {
                    if let Some(group) = p.group {
                        // A replicated log's start moves only through Raft: its store
                        // deletes the segments once the new start is durable.
                        p.log
                            .expire_producers(now_ms(), me.config.producer_id_expiration_ms);
                        if let (Some(offset), Some(rep)) =
                            (p.log.retention_offset(now_ms()), me.replication())
                        {
                            rep.compact(group, offset);
                        }
                        continue;
                    }
                    // Kafka checks producer.id.expiration.ms on its own timer
                    // (producer.id.expiration.check.interval.ms, 10 min); here it rides on
                    // the retention check, which runs at least as often by default.
                    p.log
                        .expire_producers(now_ms(), me.config.producer_id_expiration_ms);
                    if let Err(e) = p.log.enforce_retention(now_ms()).await {
                        log::warn!("retention of {}-{}: {e}", p.topic, p.index);
                    }
                    sluice_shard::yield_if_needed().await;
                }
            }
        });
        match task {
            Ok(t) => t.detach(),
            Err(e) => log::error!("cannot spawn retention: {e}"),
        }
    }

    /// The log cleaner (`log.cleaner.backoff.ms` apart, in the background queue, its IO
    /// paced by `log.cleaner.io.max.bytes.per.second`): one pass over each compacted log of
    /// the shard in turn (`PartitionLog::compact`, which returns at once for a log that is
    /// not compacted, not dirty enough, or busy with another file operation). A replicated
    /// log is
    /// cleaned by every replica on its own below the high watermark: cleaning keeps each
    /// batch, so Raft's entries keep their indexes.
    pub fn spawn_log_cleaner(self: &Rc<Self>) {
        let me = self.clone();
        let interval = self.config.log_cleaner_interval;
        let map_keys_max = self.config.log_cleaner_dedupe_buffer_bytes
            / self.ctx.shard_count().max(1)
            / sluice_storage::compact::OFFSET_MAP_ENTRY_BYTES;
        let io_budget = self.config.log_cleaner_io_max_bytes_per_second.map(|rate| {
            let share = rate / self.ctx.shard_count().max(1) as f64;
            std::rc::Rc::new(crate::cleaner_budget::CleanerIoBudget::new(
                share,
                std::time::Instant::now(),
            )) as std::rc::Rc<dyn sluice_storage::log::IoBudget>
        });
        let task = self.ctx.spawn_background(async move {
            loop {
                sluice_shard::sleep(interval).await;
                if me.stopping.get() {
                    break;
                }
                let parts: Vec<_> = me.partitions.borrow().values().cloned().collect();
                log::trace!("cleaner: a pass over {} partition(s)", parts.len());
                for p in parts {
                    if !p.log.config().compact {
                        continue;
                    }
                    let opts = sluice_storage::log::CompactOptions {
                        now_ms: now_ms(),
                        map_keys_max,
                        io_budget: io_budget.clone(),
                    };
                    let began = std::time::Instant::now();
                    // One slow log holds up every other compacted log of the shard (one
                    // pass at a time keeps the offset map's memory bounded): say so while
                    // it lasts, not only after.
                    let mut pass = std::pin::pin!(p.log.compact(opts));
                    let warned =
                        futures_lite::future::or(async { Some((&mut pass).await) }, async {
                            sluice_shard::sleep(CLEANER_PASS_SLOW_AFTER).await;
                            None
                        })
                        .await;
                    let result = match warned {
                        Some(r) => r,
                        None => {
                            log::info!(
                                "cleaning {}-{} has taken {:?} so far; this shard's other \
                                 compacted logs wait for it",
                                p.topic,
                                p.index,
                                CLEANER_PASS_SLOW_AFTER
                            );
                            let r = pass.await;
                            log::info!(
                                "cleaning {}-{} ended after {:?}",
                                p.topic,
                                p.index,
                                began.elapsed()
                            );
                            r
                        }
                    };
                    match result {
                        Ok(s) if s.cleaned_to.is_some() => sluice_metrics::recorder::cleaner_pass(
                            began.elapsed(),
                            s.records_removed,
                            s.bytes_before.saturating_sub(s.bytes_after),
                            s.segments_merged as u64,
                        ),
                        Ok(_) => {}
                        Err(e) => log::warn!("cleaning {}-{}: {e}", p.topic, p.index),
                    }
                    sluice_shard::yield_if_needed().await;
                    if me.stopping.get() {
                        break;
                    }
                }
            }
        });
        match task {
            Ok(t) => t.detach(),
            Err(e) => log::error!("cannot spawn the log cleaner: {e}"),
        }
    }

    /// Shutdown has begun: connections of this shard stop taking requests.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub fn start_draining(&self) {
        self.draining.set(true);
    }

    /// The topic's `min.insync.replicas`.
    fn min_insync_replicas(&self, topic_id: &[u8; 16]) -> usize {
        let topics = self.topics();
        topics.get_by_id(topic_id).map_or(1, |t| {
            topic_config::min_insync_replicas(&t.configs, &topics.state.broker_configs)
        })
    }

    /// The shard's partition replication (present once started).
    pub fn replication(&self) -> Option<Rc<crate::replication::Replication>> {
        self.replication.borrow().clone()
    }

    /// Opens the shard's replica store (recovering its Raft groups) and starts its driver:
    /// before the first topic table is applied, which then finds the recovered groups.
    pub async fn start_replication(self: &Rc<Self>, state: &ClusterState) -> Result<(), String> {
        let shards = self.ctx.shard_count();
        let mut specs = HashMap::new();
        let broker_cfgs = &state.broker_configs;
        for t in &state.topics {
            // Every partition this shard hosts, not only those of several replicas: one a
            // reassignment left with one replica is still a group if the store holds it.
            for p in 0..t.partitions {
                if !t.hosted_on(p, self.config.node_id)
                    || sluice_shard::assign(&t.id, p, shards).ok() != Some(self.shard_id())
                {
                    continue;
                }
                let key = PartitionKey {
                    topic_id: t.id,
                    partition: p,
                };
                specs.insert(
                    crate::replication::group_id(&t.id, p),
                    (key, self.partition_spec(t, p, broker_cfgs)),
                );
            }
        }
        let dir = crate::replication::state_dir(&self.config.data_dir, shards, self.shard_id());
        let (rep, store) = crate::replication::Replication::open(
            &self.ctx,
            self.config.node_id,
            dir,
            self.storage.clone(),
            self.cache.clone(),
            specs,
            self.shared_handle.clone(),
        )
        .await?;
        rep.set_replica_lag_time_max(self.config.replica_lag_time_max);
        rep.set_leader_rebalance(self.config.leader_rebalance);
        let weak = Rc::downgrade(self);
        rep.set_new_log_hook(Box::new(move |key, log| {
            if let Some(shard) = weak.upgrade() {
                shard.replace_replica_log(key, log);
            }
        }));
        let weak = Rc::downgrade(self);
        rep.set_leadership_hook(Box::new(move |key, term| {
            if let Some(shard) = weak.upgrade() {
                if let Some(slot) = shard.group_slot(key) {
                    slot.set_leader(term);
                }
                if let Some(slot) = shard.txn_slot(key) {
                    slot.set_leader(term);
                }
            }
        }));
        rep.spawn(&self.ctx, store);
        *self.replication.borrow_mut() = Some(rep);
        Ok(())
    }

    /// A replicated partition's log was replaced (a snapshot from its leader reset it):
    /// requests, watches and retention use the new one from now on (a watch on the old one
    /// finds it gone and fires).
    fn replace_replica_log(&self, key: PartitionKey, log: Rc<PartitionLog<DmaStorage>>) {
        let mut parts = self.partitions.borrow_mut();
        let Some(p) = parts.get(&key) else {
            return;
        };
        if p.group.is_none() || Rc::ptr_eq(&p.log, &log) {
            return;
        }
        let new = Rc::new(Partition {
            topic: p.topic.clone(),
            index: p.index,
            dir: p.dir,
            log: log.clone(),
            group: p.group,
        });
        parts.insert(key, new);
        drop(parts);
        if let Some(slot) = self.group_slot(key) {
            slot.replace_log(log.clone());
        }
        if let Some(slot) = self.txn_slot(key) {
            slot.replace_log(log);
        }
    }

    fn partition_spec(
        &self,
        t: &TopicRecord,
        partition: i32,
        broker_cfgs: &std::collections::BTreeMap<String, String>,
    ) -> sluice_replica::PartitionSpec {
        sluice_replica::PartitionSpec {
            offline: self
                .shared_handle
                .log_dirs
                .partition_offline(&t.name, partition),
            dir: self.partition_dir(&t.name, partition),
            config: topic_config::log_config(&t.configs, broker_cfgs),
            name: format!("{}-{}", t.name, partition),
        }
    }

    /// Flushes and closes every log (shutdown): the replica store closes the replicated
    /// ones (its driver stops and fails what is in flight). From here on appends fail
    /// (NOT_LEADER_OR_FOLLOWER), so nothing is acknowledged that the final flush misses.
    /// False if the replicated logs were not closed in time.
    pub async fn close_all(&self) -> bool {
        self.stopping.set(true);
        let mut closed = true;
        if let Some(rep) = self.replication() {
            // The store closes the replicated partitions' logs.
            closed = rep.stop().await;
        }
        let parts: Vec<_> = self
            .partitions
            .borrow()
            .values()
            .filter(|p| p.group.is_none())
            .cloned()
            .collect();
        // Closes overlap, a bounded number at a time (a truncate and an fdatasync each: one
        // after another, thousands of partitions would take the whole shutdown budget).
        for chunk in parts.chunks(sluice_replica::FLUSH_PARALLEL_MAX) {
            let closes = chunk
                .iter()
                .cloned()
                .map(|p| async move {
                    if let Err(e) = p.log.close().await {
                        log::error!("closing {}-{}: {e}", p.topic, p.index);
                    }
                })
                .collect();
            crate::handlers::join_all(closes).await;
        }
        closed
    }

    /// Runs a partition operation on the owning shard, locally or through the mesh.
    pub async fn partition_call(
        self: &Rc<Self>,
        req: PartitionRequest,
        payload: Option<Bytes>,
    ) -> (PartitionReply, Option<Bytes>) {
        let Some(owner) = self.owner(&req.topic_id, req.partition) else {
            // A partition of a known topic that this node does not host: another node leads
            // it (Kafka's answer to a client with stale metadata; the handler adds where).
            let exists = self
                .topics()
                .get_by_id(&req.topic_id)
                .is_some_and(|t| req.partition >= 0 && req.partition < t.partitions);
            let code = if exists {
                kerr::NOT_LEADER_OR_FOLLOWER
            } else {
                kerr::UNKNOWN_TOPIC_OR_PARTITION
            };
            self.log_early_refusal(&req, payload.as_deref(), "no owner here");
            return (PartitionReply::error(code), None);
        };
        if owner == self.shard_id() {
            return self.exec(req, payload).await;
        }
        let frame = match Frame::encode_tagged(TAG_PARTITION, &req, payload) {
            Ok(f) => f,
            Err(e) => {
                log::error!("encoding partition frame: {e}");
                return (PartitionReply::error(kerr::UNKNOWN_SERVER_ERROR), None);
            }
        };
        let started = match req.op {
            PartitionOp::Produce { .. } => stats::start(),
            _ => None,
        };
        // A produce to a replicated partition waits for a quorum (up to its timeout): it
        // must not hold one of the permits that the general class, and with it the Raft
        // traffic into the owner, needs.
        // So does an ElectLeaders, for the new leader, a DeleteRecords, for its commit, and
        // a ListOffsets, for the quorum's confirmation of its leader.
        let quorum_wait = matches!(req.op, PartitionOp::Produce { acks, .. } if acks != 0)
            || matches!(
                req.op,
                PartitionOp::DeleteRecords { .. } | PartitionOp::ListOffset { .. }
            );
        let waits = (quorum_wait
            && self
                .topics()
                .get_by_id(&req.topic_id)
                .is_some_and(|t| replicated(t, req.partition, self.config.node_id)))
            || matches!(req.op, PartitionOp::ElectPreferred { .. });
        let class = if waits {
            sluice_shard::CallClass::Parked
        } else {
            sluice_shard::CallClass::General
        };
        let result = self.ctx.mesh().call_in(class, owner, frame).await;
        stats::record_since(Stage::ProduceRemote, started);
        match result {
            Ok(mut reply) => {
                let payload = reply.take_payload();
                match reply.access::<PartitionReply>() {
                    Ok(a) => (ops::reply_from_archived(a), payload),
                    Err(e) => {
                        log::error!("bad partition reply from {owner}: {e}");
                        (PartitionReply::error(kerr::UNKNOWN_SERVER_ERROR), None)
                    }
                }
            }
            // The mesh waits when it runs out of slots or permits; it fails only when the
            // owner (or this shard) is stopping, and then this broker no longer leads it.
            Err(e) => {
                log::error!("partition call to {owner}: {e}");
                (PartitionReply::error(kerr::NOT_LEADER_OR_FOLLOWER), None)
            }
        }
    }

    /// Says (info: rare, and what a lost idempotent batch would be traced to) that an
    /// idempotent produce was refused before any replica state could remember it; the
    /// client's connection does (see `handlers::produce`).
    fn log_early_refusal(&self, req: &PartitionRequest, payload: Option<&[u8]>, why: &str) {
        if !matches!(req.op, PartitionOp::Produce { .. }) {
            return;
        }
        if let Some(h) = payload
            .and_then(sluice_storage::hdr::Header::parse)
            .filter(|h| h.producer_id >= 0)
        {
            log::info!(
                "{}: produce to partition {} refused ({why}): producer {} epoch {} sequence {}",
                self.shard_id(),
                req.partition,
                h.producer_id,
                h.producer_epoch,
                h.base_sequence
            );
        }
    }

    /// Executes a partition operation on this (the owning) shard.
    pub async fn exec(
        self: &Rc<Self>,
        req: PartitionRequest,
        payload: Option<Bytes>,
    ) -> (PartitionReply, Option<Bytes>) {
        let Some(part) = self.local_partition(&req.topic_id, req.partition) else {
            // Assigned here but not open (yet, or any more, or its log directory is
            // offline). A produce refused so is remembered by the client's connection, not
            // here (see `handlers::produce`).
            self.log_early_refusal(&req, payload.as_deref(), "not open here");
            let offline = self.topics().get_by_id(&req.topic_id).is_some_and(|t| {
                self.shared_handle
                    .log_dirs
                    .partition_offline(&t.name, req.partition)
            });
            let code = if offline {
                kerr::KAFKA_STORAGE_ERROR
            } else {
                kerr::UNKNOWN_TOPIC_OR_PARTITION
            };
            return (PartitionReply::error(code), None);
        };
        if self.shared_handle.log_dirs.dir_offline(part.dir) {
            // Its directory failed while serving (see `log_dirs`).
            return (PartitionReply::error(kerr::KAFKA_STORAGE_ERROR), None);
        }
        if let PartitionOp::MoveLogDir { dest } = req.op {
            let key = PartitionKey {
                topic_id: req.topic_id,
                partition: req.partition,
            };
            let code = self.begin_move(key, &part, dest as usize).await;
            return (PartitionReply::error(code), None);
        }
        let log = &part.log;
        // ListOffsets on a replicated partition waits until a quorum confirmed this leader
        // after the request came (see `crate::leader_reads`): a leader cut off from its
        // quorum, not yet deposed, would otherwise answer a high watermark below what its
        // successor already acknowledged. Only a ready leader asks; the checks below then
        // run on the state after the wait, and answer anyone else as before.
        if let (Some(group), PartitionOp::ListOffset { .. }) = (part.group, &req.op) {
            if let Some(rep) = self.replication() {
                let asks = rep
                    .status(group)
                    .is_some_and(|s| s.role == sluice_raft::Role::Leader && s.ready);
                if asks && !rep.confirm_leadership(group).await {
                    let epoch = rep
                        .status(group)
                        .and_then(|s| sluice_meta::leaders::epoch_of_term(s.term))
                        .unwrap_or(-1);
                    return (
                        PartitionReply::error_at(kerr::NOT_LEADER_OR_FOLLOWER, epoch),
                        None,
                    );
                }
            }
        }
        // A produce this replica refuses, for whatever reason, is remembered: the producer's
        // later batches wait for it (`sluice_replica::sequences::RefusedBatches`). Else a
        // later batch already in flight could be taken as an unknown producer's first
        // (KIP-360 lets it start at any sequence), and its success would make librdkafka
        // acknowledge the refused one, which it then never retries: acknowledged records
        // lost (seen under load when a node refused as a follower and took the next batch
        // as the leader a moment later).
        let remember_refusal = |rep: &crate::replication::Replication, group| {
            if matches!(req.op, PartitionOp::Produce { .. }) {
                if let Some(h) = payload
                    .as_deref()
                    .and_then(sluice_storage::hdr::Header::parse)
                {
                    rep.refused_batch(group, &h);
                }
            }
        };
        // A replicated partition is served by its Raft leader only (a follower's log may
        // hold entries that never commit), at the leader's term as epoch; its size may be
        // described anywhere.
        let raft = match part.group {
            Some(group) => {
                let status = self
                    .replication()
                    .and_then(|r| Some((r.clone(), r.status(group)?)));
                let Some((rep, status)) = status else {
                    return (PartitionReply::error(kerr::NOT_LEADER_OR_FOLLOWER), None);
                };
                let epoch = sluice_meta::leaders::epoch_of_term(status.term).unwrap_or(-1);
                if status.role != sluice_raft::Role::Leader
                    && !matches!(req.op, PartitionOp::Describe)
                {
                    remember_refusal(&rep, group);
                    return (
                        PartitionReply::error_at(kerr::NOT_LEADER_OR_FOLLOWER, epoch),
                        None,
                    );
                }
                if !status.serving {
                    // A new leader knows its high watermark only once an entry of its term
                    // committed, and its log start once it applied everything before that
                    // (an earlier leader's DeleteRecords): until then ListOffsets gets
                    // Kafka's retriable answer (KAFKA-7395), and reads and DeleteRecords
                    // are sent to look the leader up again (a few milliseconds: one round
                    // of the election no-op).
                    match req.op {
                        PartitionOp::ListOffset { .. } => {
                            return (
                                PartitionReply::error_at(kerr::OFFSET_NOT_AVAILABLE, epoch),
                                None,
                            )
                        }
                        PartitionOp::Fetch { .. } | PartitionOp::DeleteRecords { .. } => {
                            return (
                                PartitionReply::error_at(kerr::NOT_LEADER_OR_FOLLOWER, epoch),
                                None,
                            )
                        }
                        _ => {}
                    }
                }
                Some((rep, group, epoch))
            }
            None => None,
        };
        // Checked here, not by the handler: the epoch cannot change between the check and
        // the op (both run on this shard without an await in between).
        let current = match &raft {
            Some((_, _, epoch)) => *epoch,
            None => log.leader_epoch(),
        };
        let code = kerr::check_leader_epoch(req.current_leader_epoch, current);
        if code != kerr::NONE {
            if let Some((rep, group, _)) = &raft {
                remember_refusal(rep, *group);
            }
            return (PartitionReply::error_at(code, current), None);
        }
        match req.op {
            PartitionOp::Produce { acks: -1, .. }
                if raft.as_ref().is_some_and(|(rep, group, _)| {
                    rep.isr_len(*group) < self.min_insync_replicas(&req.topic_id)
                }) =>
            {
                // Kafka's leader refuses acks=all below min.insync.replicas, before writing
                // (remembered as any refusal: the producer's later batches wait for it).
                if let (Some((rep, group, _)), Some(h)) = (
                    &raft,
                    payload
                        .as_deref()
                        .and_then(sluice_storage::hdr::Header::parse),
                ) {
                    rep.refused_batch(*group, &h);
                }
                (PartitionReply::error(kerr::NOT_ENOUGH_REPLICAS), None)
            }
            PartitionOp::Produce {
                acks,
                timeout_ms,
                guard,
                refused_seq,
            } => {
                // KIP-890: a transactional batch that would open its producer's
                // transaction here is appended only once the coordinator confirmed it, with
                // no marker in between (nothing below awaits before the append/proposal).
                let first_of_txn = payload
                    .as_deref()
                    .and_then(sluice_storage::hdr::Header::parse)
                    .filter(|h| h.is_transactional() && !h.is_control())
                    .filter(|h| !log.has_open_txn(h.producer_id));
                if first_of_txn.is_some() {
                    if guard < 0 {
                        let reply = PartitionReply {
                            error_code: kerr::VERIFY_TXN,
                            size: log.markers_seen() as i64,
                            ..PartitionReply::default()
                        };
                        return (reply, None);
                    }
                    if guard as u64 != log.markers_seen() {
                        if let Some((rep, group, _)) = &raft {
                            remember_refusal(rep, *group);
                        }
                        return (PartitionReply::error(kerr::NOT_ENOUGH_REPLICAS), None);
                    }
                }
                // A transaction marker on an offsets partition also decides the offsets the
                // transaction committed there (TxnOffsetCommit) for its group coordinator.
                let offsets_marker = (part.topic == crate::groups::OFFSETS_TOPIC)
                    .then(|| payload.as_deref().and_then(offsets_marker))
                    .flatten();
                let counted = payload
                    .as_deref()
                    .and_then(sluice_storage::hdr::Header::parse)
                    .map(|h| (h.records_count.max(0) as u64, h.size as u64));
                let reply = match raft {
                    Some((rep, group, _)) => {
                        let header = payload
                            .as_deref()
                            .and_then(sluice_storage::hdr::Header::parse);
                        let reply = crate::replication::produce(
                            &rep,
                            group,
                            log,
                            crate::replication::ProduceArgs {
                                acks,
                                timeout_ms,
                                refused_seq,
                            },
                            payload,
                        )
                        .await;
                        // Its early refusals too (recording one twice keeps the lowest).
                        if let (true, Some(h)) = (reply.error_code != kerr::NONE, header) {
                            rep.refused_batch(group, &h);
                        }
                        reply
                    }
                    None => {
                        // One replica: the connection's memory of a refused earlier batch
                        // fences an unknown producer here as a replica's own does.
                        let overtakes = payload
                            .as_deref()
                            .and_then(sluice_storage::hdr::Header::parse)
                            .is_some_and(|h| {
                                refused_seq >= 0
                                    && h.producer_id >= 0
                                    && i64::from(h.base_sequence) > refused_seq
                                    && !log.knows_producer(h.producer_id)
                            });
                        if overtakes {
                            PartitionReply::error(kerr::NOT_LEADER_OR_FOLLOWER)
                        } else {
                            self.produce(log, acks, payload).await
                        }
                    }
                };
                if let (kerr::NONE, Some((records, bytes))) = (reply.error_code, counted) {
                    sluice_metrics::recorder::produced(req.topic_id, req.partition, records, bytes);
                }
                if let (kerr::NONE, Some((producer_id, commit))) =
                    (reply.error_code, offsets_marker)
                {
                    let key = PartitionKey {
                        topic_id: req.topic_id,
                        partition: req.partition,
                    };
                    if let Some(slot) = self.group_slot(key) {
                        slot.complete_txn(reply.base_offset, producer_id, commit);
                    }
                }
                (reply, None)
            }
            PartitionOp::Fetch {
                offset,
                max_bytes,
                read_committed,
            } => {
                let max_bytes = max_bytes.max(0) as usize;
                let read = if read_committed {
                    log.read_committed(offset, max_bytes).await.map(|c| {
                        let count = c.aborted.len() as i32;
                        let payload = crate::ops::committed_payload(&c.aborted, c.outcome.records);
                        (
                            c.outcome.high_watermark,
                            c.outcome.log_start_offset,
                            c.last_stable_offset,
                            count,
                            payload,
                        )
                    })
                } else {
                    log.read(offset, max_bytes).await.map(|r| {
                        (
                            r.high_watermark,
                            r.log_start_offset,
                            log.last_stable_offset(),
                            0,
                            r.records,
                        )
                    })
                };
                match read {
                    Ok((
                        high_watermark,
                        log_start_offset,
                        last_stable_offset,
                        aborted_count,
                        payload,
                    )) => {
                        // After the aborted transactions the payload may start with.
                        let skip = (aborted_count.max(0) as usize * 16).min(payload.len());
                        let (records, bytes) = crate::metrics_host::batch_totals(&payload[skip..]);
                        if records > 0 {
                            sluice_metrics::recorder::fetched(
                                req.topic_id,
                                req.partition,
                                records,
                                bytes,
                            );
                        }
                        (
                            PartitionReply {
                                high_watermark,
                                log_start_offset,
                                last_stable_offset,
                                aborted_count,
                                ..PartitionReply::default()
                            },
                            Some(payload),
                        )
                    }
                    Err(e) => (
                        PartitionReply {
                            error_code: storage_error_code(&e),
                            high_watermark: log.high_watermark(),
                            log_start_offset: log.log_start_offset(),
                            last_stable_offset: log.last_stable_offset(),
                            ..PartitionReply::default()
                        },
                        None,
                    ),
                }
            }
            PartitionOp::ListOffset {
                timestamp,
                read_committed,
            } => (self.list_offset(log, timestamp, read_committed).await, None),
            PartitionOp::DescribeProducers => {
                let producers = log.active_producers();
                (
                    PartitionReply {
                        size: producers.len() as i64,
                        ..PartitionReply::default()
                    },
                    Some(crate::ops::encode_producers(&producers)),
                )
            }
            PartitionOp::DeleteRecords { offset, timeout_ms } if raft.is_some() => {
                let (rep, group, _) = raft.expect("replicated");
                (
                    crate::replication::delete_records(&rep, group, log, offset, timeout_ms).await,
                    None,
                )
            }
            PartitionOp::DeleteRecords { offset, .. } => {
                let target = if offset == -1 {
                    log.high_watermark()
                } else {
                    offset
                };
                match log.delete_records_before(target).await {
                    Ok(start) => (
                        PartitionReply {
                            log_start_offset: start,
                            ..PartitionReply::default()
                        },
                        None,
                    ),
                    Err(e) => (PartitionReply::error(storage_error_code(&e)), None),
                }
            }
            PartitionOp::Describe => (
                PartitionReply {
                    size: log.size_bytes() as i64,
                    high_watermark: log.high_watermark(),
                    log_start_offset: log.log_start_offset(),
                    base_offset: log.log_end_offset(),
                    ..PartitionReply::default()
                },
                None,
            ),
            // Answered above, before the leadership checks: never reaches here.
            PartitionOp::MoveLogDir { .. } => (PartitionReply::error(kerr::INVALID_REQUEST), None),
            PartitionOp::ElectPreferred { timeout_ms } => {
                let code = match raft {
                    Some((rep, group, _)) => {
                        let wait = std::time::Duration::from_millis(timeout_ms.max(0) as u64);
                        crate::replication::elect_preferred(&rep, group, wait).await
                    }
                    // One replica: it leads (it is here), and it is the preferred one.
                    None => kerr::ELECTION_NOT_NEEDED,
                };
                (PartitionReply::error(code), None)
            }
            PartitionOp::EpochEndOffset { epoch } => {
                // From the epoch history, as Kafka's leader answers (the current epoch ends
                // at the log end offset; an unknown newer epoch is UNDEFINED, -1/-1).
                let (found, end_offset) = log.end_offset_for_epoch(epoch);
                (
                    PartitionReply {
                        leader_epoch: found,
                        size: end_offset,
                        ..PartitionReply::default()
                    },
                    None,
                )
            }
        }
    }

    async fn produce(
        &self,
        log: &PartitionLog<DmaStorage>,
        acks: i16,
        payload: Option<Bytes>,
    ) -> PartitionReply {
        // The produce handler let through exactly one batch whose length field matches the
        // payload (`produce_rules`); the log checks its CRC and everything it stores.
        let Some(batch) = payload.filter(|r| !r.is_empty()) else {
            return PartitionReply::error(kerr::CORRUPT_MESSAGE);
        };
        let started = stats::start();
        let appended = match log.append_shared(batch, now_ms()) {
            Ok(a) => a,
            Err(e) => {
                return PartitionReply {
                    error_code: storage_error_code(&e),
                    log_start_offset: log.log_start_offset(),
                    ..PartitionReply::default()
                }
            }
        };
        stats::record_since(Stage::ProduceAppend, started);
        let durable_started = stats::start();
        // acks=all waits for the fsync. So does acks=1: on a single node the high watermark
        // is the durable offset (the Raft commit index later), and a client that got its ack
        // must find the record with ListOffsets/Fetch right away, as it would on Kafka.
        // The wait is not cut short by the request's `timeout_ms`: on one node the fsync is
        // part of the local append (as Kafka's local append is not subject to it; its
        // timeout covers replication), and answering REQUEST_TIMED_OUT for a batch that
        // is stored anyway would make a retrying client write it twice. The flusher is
        // bounded: a failed write or sync fails the log and wakes this waiter.
        if acks != 0 {
            match log.wait_durable(appended.last_offset).await {
                Ok(()) => stats::record_since(Stage::ProduceDurable, durable_started),
                Err(e) => return PartitionReply::error(storage_error_code(&e)),
            }
        }
        PartitionReply {
            base_offset: appended.base_offset,
            log_append_time: appended.log_append_time,
            log_start_offset: log.log_start_offset(),
            ..PartitionReply::default()
        }
    }

    async fn list_offset(
        &self,
        log: &PartitionLog<DmaStorage>,
        timestamp: i64,
        read_committed: bool,
    ) -> PartitionReply {
        let ok = |offset: i64, ts: i64| PartitionReply {
            base_offset: offset,
            timestamp: ts,
            leader_epoch: log.leader_epoch(),
            ..PartitionReply::default()
        };
        match timestamp {
            -1 if read_committed => ok(log.last_stable_offset(), -1),
            -1 => ok(log.high_watermark(), -1),
            -2 => ok(log.log_start_offset(), -1),
            // EARLIEST_LOCAL (no tiered storage: same as earliest)
            -4 => ok(log.log_start_offset(), -1),
            -3 => match log.max_timestamp() {
                Some((offset, ts)) => ok(offset, ts),
                None => ok(-1, -1),
            },
            // LATEST_TIERED (-5): nothing is tiered.
            -5 => ok(-1, -1),
            t if t >= 0 => match log.offset_for_timestamp(t).await {
                Ok(Some((base, batch_max_ts))) => match first_record_at(log, base, t).await {
                    Some((offset, ts)) => ok(offset, ts),
                    None => ok(base, batch_max_ts),
                },
                Ok(None) => ok(-1, -1),
                Err(e) => PartitionReply::error(storage_error_code(&e)),
            },
            _ => PartitionReply::error(kerr::INVALID_REQUEST),
        }
    }

    /// Creates topics with default settings (auto.create.topics.enable), on the controller.
    pub async fn auto_create(self: &Rc<Self>, names: Vec<String>) {
        if let Some(c) = &self.controller {
            let topics = names
                .into_iter()
                .map(|name| {
                    if name == crate::groups::OFFSETS_TOPIC {
                        // Kafka's offsets.topic.* defaults: compacted, its own partition count.
                        let configs = [
                            ("cleanup.policy".to_string(), "compact".to_string()),
                            (
                                "segment.bytes".to_string(),
                                crate::groups::OFFSETS_TOPIC_SEGMENT_BYTES.to_string(),
                            ),
                        ];
                        crate::controller::NewTopic {
                            name,
                            partitions: self.config.offsets_topic_partitions,
                            replication_factor: -1,
                            assignments: Vec::new(),
                            configs: configs.into_iter().collect(),
                        }
                    } else if name == crate::txn_host::TXN_TOPIC {
                        // Kafka's transaction.state.log.* defaults: compacted, 50 partitions.
                        let configs = [
                            ("cleanup.policy".to_string(), "compact".to_string()),
                            (
                                "segment.bytes".to_string(),
                                crate::txn_host::TXN_TOPIC_SEGMENT_BYTES.to_string(),
                            ),
                        ];
                        crate::controller::NewTopic {
                            name,
                            partitions: sluice_txn::TRANSACTION_STATE_PARTITIONS,
                            replication_factor: -1,
                            assignments: Vec::new(),
                            configs: configs.into_iter().collect(),
                        }
                    } else {
                        crate::controller::NewTopic {
                            name,
                            partitions: -1,
                            replication_factor: -1,
                            assignments: Vec::new(),
                            configs: Default::default(),
                        }
                    }
                })
                .collect();
            for (name, r) in c.create_topics(self, topics, false).await {
                if let Err((code, msg)) = r {
                    if code != kerr::TOPIC_ALREADY_EXISTS {
                        log::warn!("auto-creating {name}: {msg}");
                    }
                }
            }
            return;
        }
        match Frame::encode_tagged(TAG_AUTO_CREATE, &names, None) {
            Ok(f) => {
                // Parked: the controller may take its whole command timeout to answer.
                let parked = sluice_shard::CallClass::Parked;
                if let Err(e) = self.ctx.mesh().call_in(parked, ShardId(0), f).await {
                    log::error!("auto-create via controller: {e}");
                }
            }
            Err(e) => log::error!("encoding auto-create: {e}"),
        }
    }

    pub fn group_slots(&self) -> Vec<Rc<crate::group_host::GroupSlot>> {
        self.group_slots.borrow().clone()
    }

    /// The group coordinator slot of an offsets partition hosted here.
    pub fn group_slot(&self, key: PartitionKey) -> Option<Rc<crate::group_host::GroupSlot>> {
        self.group_slots
            .borrow()
            .iter()
            .find(|s| s.topic_id == key.topic_id && s.partition == key.partition)
            .cloned()
    }

    pub fn txn_slots(&self) -> Vec<Rc<crate::txn_host::TxnSlot>> {
        self.txn_slots.borrow().clone()
    }

    /// The transaction coordinator slot of a `__transaction_state` partition hosted here.
    pub fn txn_slot(&self, key: PartitionKey) -> Option<Rc<crate::txn_host::TxnSlot>> {
        self.txn_slots
            .borrow()
            .iter()
            .find(|s| s.topic_id == key.topic_id && s.partition == key.partition)
            .cloned()
    }

    /// The partitions this shard owns, with their keys (`crate::metrics_host`).
    pub(crate) fn keyed_partitions(&self) -> Vec<(PartitionKey, Rc<Partition>)> {
        self.partitions
            .borrow()
            .iter()
            .map(|(k, p)| (*k, p.clone()))
            .collect()
    }

    /// The batch cache's reads served, reads missed, and bytes held; the read-ahead's
    /// windows issued, reads served from them, and bytes held (`crate::metrics_host`).
    pub(crate) fn cache_counts(&self) -> [u64; 6] {
        let cache = self.cache.borrow();
        let (hits, misses) = cache.hits_and_misses();
        let ahead = cache.read_ahead_budget();
        let (windows, served) = ahead.windows_and_served();
        [
            hits,
            misses,
            cache.bytes() as u64,
            windows,
            served,
            ahead.used() as u64,
        ]
    }

    /// Which partitions this shard owns (DescribeLogDirs, tests).
    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }
}

/// The first record at or after timestamp `t` in the batch starting at `base` (records carry
/// their own timestamps inside a batch, possibly compressed).
async fn first_record_at(log: &PartitionLog<DmaStorage>, base: i64, t: i64) -> Option<(i64, i64)> {
    let read = log.read(base, 1).await.ok()?;
    // Decompressing one batch may take a long time (up to the decoder's cap), so it runs on a
    // blocking thread rather than stalling every other request of this shard. Client-written
    // bytes through third-party code: decoded under the codec's containment.
    glommio::executor()
        .spawn_blocking(move || {
            let set = sluice_codec::decode_record_batch_contained(read.records)?;
            set.records
                .iter()
                .find(|r| r.timestamp >= t)
                .map(|r| (r.offset, r.timestamp))
        })
        .await
}

/// Receives frames from other shards.
pub struct MeshHandler(pub Rc<BrokerShard>);

impl FrameHandler for MeshHandler {
    fn queue_for(&self, _from: ShardId, frame: &Frame) -> QueueKind {
        match frame.tag() {
            TAG_PARTITION | TAG_RAFT_IN | TAG_RAFT_OUT => QueueKind::Produce,
            // One queue for all three: its tasks start in arrival order, so a watch's cancel
            // never overtakes its registration.
            TAG_WATCH | TAG_UNWATCH | TAG_WATCH_FIRED => QueueKind::Fetch,
            _ => QueueKind::Background,
        }
    }

    async fn handle(&self, from: ShardId, mut frame: Frame) -> Frame {
        let shard = &self.0;
        match frame.tag() {
            TAG_PARTITION => {
                let payload = frame.take_payload();
                let req = match frame.access::<PartitionRequest>() {
                    Ok(a) => ops::request_from_archived(a),
                    Err(e) => {
                        log::error!("bad partition frame from {from}: {e}");
                        return encode_reply(
                            PartitionReply::error(kerr::UNKNOWN_SERVER_ERROR),
                            None,
                        );
                    }
                };
                let (reply, payload) = shard.exec(req, payload).await;
                encode_reply(reply, payload)
            }
            // One-way watch frames: handled at once (no await), so no handler permit is held
            // while a fetch is parked.
            TAG_WATCH => {
                match frame.access::<ops::WatchRequest>() {
                    Ok(a) => {
                        let entries: Vec<ops::WatchEntry> = a
                            .entries
                            .iter()
                            .map(|e| ops::WatchEntry {
                                topic_id: e.topic_id,
                                partition: e.partition.to_native(),
                                offset: e.offset.to_native(),
                                committed: e.committed,
                            })
                            .collect();
                        crate::watch::register(
                            shard,
                            from,
                            a.id.to_native(),
                            a.deadline_ms.to_native(),
                            &entries,
                        );
                    }
                    Err(e) => log::error!("bad watch frame from {from}: {e}"),
                }
                Frame::empty(TAG_WATCH, None)
            }
            TAG_UNWATCH => {
                match frame.access::<ops::WatchRef>() {
                    Ok(a) => crate::watch::cancel(shard, from, a.id.to_native()),
                    Err(e) => log::error!("bad unwatch frame from {from}: {e}"),
                }
                Frame::empty(TAG_UNWATCH, None)
            }
            TAG_WATCH_FIRED => {
                match frame.access::<ops::WatchRef>() {
                    Ok(a) => shard.watches.wake(a.id.to_native()),
                    Err(e) => log::error!("bad watch-fired frame from {from}: {e}"),
                }
                Frame::empty(TAG_WATCH_FIRED, None)
            }
            TAG_TOPICS => {
                // The reply's payload, when present, says why the update was not adopted: the
                // controller fails the request with it.
                let delta = frame
                    .access::<StateDelta>()
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        rkyv::deserialize::<StateDelta, rkyv::rancor::Error>(a)
                            .map_err(|e| e.to_string())
                    });
                let delta = delta.map_err(|e| format!("bad topic table frame from {from}: {e}"));
                let outcome = shard.apply_delta(delta).await;
                match outcome {
                    Ok(()) => Frame::empty(TAG_TOPICS, None),
                    Err(e) => {
                        log::error!("applying topic table update: {e}");
                        Frame::empty(TAG_TOPICS, Some(Bytes::from(e.into_bytes())))
                    }
                }
            }
            TAG_AUTO_CREATE => {
                if let Ok(a) = frame.access::<Vec<String>>() {
                    let names: Vec<String> = a.iter().map(|n| n.as_str().to_string()).collect();
                    shard.auto_create(names).await;
                }
                Frame::empty(TAG_AUTO_CREATE, None)
            }
            TAG_RAFT_IN | TAG_RAFT_OUT => {
                let tag = frame.tag();
                crate::replication::on_frame(shard, tag, frame.take_payload());
                Frame::empty(tag, None)
            }
            TAG_PRODUCER_IDS => {
                // A block from the controller for this node (shard 0 only).
                let payload = match &shard.controller {
                    Some(c) => c.producer_id_block().await.map(|(first, end)| {
                        let mut b = Vec::with_capacity(16);
                        b.extend_from_slice(&first.to_be_bytes());
                        b.extend_from_slice(&end.to_be_bytes());
                        Bytes::from(b)
                    }),
                    None => None,
                };
                Frame::empty(TAG_PRODUCER_IDS, payload)
            }
            TAG_NODE_CALL => {
                // A request to another node, through this node's transport (shard 0 only).
                let payload = frame.take_payload().unwrap_or_default();
                let answer = crate::node_rpc::call_from_frame(shard, payload).await;
                Frame::empty(TAG_NODE_CALL, answer)
            }
            crate::ops::TAG_METRICS => crate::metrics_host::snapshot_frame(shard),
            TAG_FORWARD => {
                let request = frame.take_payload().unwrap_or_default();
                let mut client = crate::conn::Client::internal(shard);
                // A header that does not read is never trusted as the node's own.
                client.internal = false;
                if let Ok(h) = frame.access::<ops::ForwardHeader>() {
                    client.host = std::rc::Rc::from(h.client_host.as_str());
                    client.principal = std::rc::Rc::from(h.principal.as_str());
                    client.internal = h.internal;
                    client.token_authenticated = h.token_authenticated;
                    if let Some(p) = crate::config::SecurityProtocol::from_id(h.listener.into()) {
                        client.listener = p;
                    }
                }
                let response = crate::conn::process_forwarded(shard, request, &client).await;
                Frame::empty(TAG_FORWARD, response)
            }
            other => {
                log::error!("unknown frame tag {other} from {from}");
                Frame::empty(other, None)
            }
        }
    }
}

fn encode_reply(reply: PartitionReply, payload: Option<Bytes>) -> Frame {
    Frame::encode_tagged(TAG_PARTITION, &reply, payload).expect("fixed-size reply encodes")
}
