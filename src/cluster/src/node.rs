//! [`ControllerNode`]: one per node, on the glommio executor that starts it. It drives the
//! controller Raft group (a `GroupManager` holding only [`CONTROLLER_GROUP`]) with a tick
//! timer, the WAL and the rpc transport; replays committed entries into the metadata image;
//! runs the active `Controller` on the leader; forwards commands to the active controller;
//! registers and heartbeats this node; snapshots the image and compacts the log behind it
//! (voters); and, on a node without a replica, pulls committed entries (or a voter's
//! snapshot) from the voters. See the crate header for the invariants.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::or;
use raft::eraftpb::EntryType;
use sluice_meta::acl::{AclBinding, AclFilter};
use sluice_meta::controller::{
    code, AlterConfig, QuorumReplica, QuorumView, QuotaAlteration, Registration, ScramChange,
};
use sluice_meta::{
    bootstrap_records, codec, decode_batch, Answer, Controller, ControllerConfig, Delta, Endpoint,
    LegacyState, ListenerEndpoint, MetadataImage, NewTopic, ProposalId, Record, ReplyToken,
    CONTROLLER_GROUP,
};
use sluice_raft::manager::TICK_MS;
use sluice_raft::{
    Batch, Config as RaftConfig, Effect as RaftEffect, GroupManager, ProposalToken, Role,
};
use sluice_rpc::{
    Handler, LocalBoxFuture, NodeId, Request, RequestError, Response, SendError, Transport,
    TransportConfig, Voter,
};

use crate::gossip::{Gossip, GossipStats, LeaderStore, Member};
use crate::notify::{Event, Slot};
use crate::snapshot::{self, SnapshotFile};
use crate::wal::{WalFile, CLUSTER_DIR};
use crate::wire::{self, method, status, Command, FetchRequest, FetchResponse};

/// Kafka's `request.timeout.ms` default: how long a command may take, retries included,
/// before the caller gets REQUEST_TIMED_OUT (or the NOT_CONTROLLER it last saw).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's `broker.heartbeat.interval.ms`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Pause between attempts while no active controller is known or reachable.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Longest one forwarded attempt waits for its answer (the controller answers once the
/// records commit; a longer wait means the target lost its quorum, and another is tried).
pub const FORWARD_TRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of entries one pull answer carries (at least one entry whatever its size).
pub const FETCH_BYTES_MAX: u32 = 1 << 20;
/// Longest a pull waits on the voter for a new entry to commit.
pub const FETCH_WAIT_MS: u32 = 500;
/// Committed batches one subscriber may have queued; one that falls further behind is told
/// to re-read the whole image instead (its queue is dropped).
pub const SUBSCRIBER_QUEUE_MAX: usize = 1024;
/// Largest bootstrap entry: the whole legacy state goes into the log as one entry (the
/// metadata codec's batch limit, 8 MiB: about 200,000 partitions), so a crash or a refused
/// proposal can never leave a log holding part of it (a partial bootstrap would make the
/// node drop the topics it lacks). A larger state does not upgrade in place: the start fails.
pub const BOOTSTRAP_ENTRY_BYTES_MAX: usize = codec::BATCH_BYTES_MAX;
/// Raft id of the only voter of a cluster of one (whatever its Kafka node id, which may
/// be 0, an id Raft reserves).
pub const SOLO_RAFT_ID: u64 = 1;
/// Election timeout of a cluster of one, in Raft ticks (raft-rs needs it above the
/// heartbeat's one tick).
const SOLO_ELECTION_TICKS: usize = 3;

/// How to start a [`ControllerNode`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Kafka node id (`--node-id`); at least 1 in a cluster with voters.
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// `--rpc-listen`; needed with voters.
    pub rpc_listen: Option<SocketAddr>,
    /// `--voters`; empty: a cluster of one (no transport).
    pub voters: Vec<Voter>,
    /// This node's Kafka endpoint as clients should reach it (registered).
    pub kafka: Endpoint,
    /// Every client listener, `kafka` first (empty: one, `PLAINTEXT` at `kafka`).
    pub listeners: Vec<ListenerEndpoint>,
    /// Today's single-node state, for the first active controller of an empty log.
    pub legacy: Option<LegacyState>,
    /// Placement, defaults and config validators (`seed` 0 takes OS entropy).
    pub controller: ControllerConfig,
    /// Transport timing (tests shorten the reconnect backoff).
    pub rpc_timeouts: sluice_rpc::Timeouts,
    /// [`SUBSCRIBER_QUEUE_MAX`] (tests make subscribers fall behind with a small one).
    pub subscriber_queue_max: usize,
    /// The glommio task queue of the transport's tasks (the broker gives Raft traffic its
    /// own); `None`: the current one.
    pub rpc_task_queue: Option<glommio::TaskQueueHandle>,
    /// TLS between nodes (`--rpc-tls`); `None`: plaintext.
    pub rpc_tls: Option<sluice_rpc::RpcTls>,
    /// Kafka's `metadata.log.max.record.bytes.between.snapshots`
    /// ([`snapshot::METADATA_LOG_MAX_RECORD_BYTES_BETWEEN_SNAPSHOTS`]; tests force
    /// snapshots with a few KiB).
    pub snapshot_bytes: u64,
    /// Kafka's `metadata.log.max.snapshot.interval.ms`
    /// ([`snapshot::METADATA_LOG_MAX_SNAPSHOT_INTERVAL`]).
    pub snapshot_interval: Duration,
}

impl ClusterConfig {
    pub fn new(node_id: i32, data_dir: PathBuf, kafka: Endpoint) -> ClusterConfig {
        ClusterConfig {
            node_id,
            data_dir,
            rpc_listen: None,
            voters: Vec::new(),
            kafka,
            listeners: Vec::new(),
            legacy: None,
            controller: ControllerConfig::default(),
            rpc_timeouts: sluice_rpc::Timeouts::default(),
            subscriber_queue_max: SUBSCRIBER_QUEUE_MAX,
            rpc_task_queue: None,
            rpc_tls: None,
            snapshot_bytes: snapshot::METADATA_LOG_MAX_RECORD_BYTES_BETWEEN_SNAPSHOTS,
            snapshot_interval: snapshot::METADATA_LOG_MAX_SNAPSHOT_INTERVAL,
        }
    }
}

/// One committed batch as subscribers see it, or the notice that they fell behind.
#[derive(Debug, Clone)]
pub enum Update {
    /// The batch at Raft index `index` of the controller log and what it changed.
    Batch {
        index: u64,
        records: Rc<Vec<Record>>,
        delta: Rc<Delta>,
    },
    /// The subscriber fell more than [`SUBSCRIBER_QUEUE_MAX`] batches behind: batches were
    /// dropped; this is the whole image as of `index`, and batches after it follow.
    Image {
        index: u64,
        image: Box<MetadataImage>,
    },
}

struct SubQueue {
    queue: RefCell<VecDeque<Update>>,
    lagged: Cell<bool>,
    event: Event,
}

/// Every committed batch in log order (see [`ControllerNode::subscribe`]).
pub struct Subscription {
    q: Rc<SubQueue>,
    node: Weak<Inner>,
}

impl Subscription {
    /// The next update; `None` once the node is gone or stopped.
    pub async fn next(&self) -> Option<Update> {
        loop {
            let g = self.q.event.generation();
            let inner = self.node.upgrade()?;
            if self.q.lagged.get() {
                // Read now, in the same step as clearing the flag: every batch after this
                // image is queued from here on.
                self.q.lagged.set(false);
                self.q.queue.borrow_mut().clear();
                let st = inner.st.borrow();
                return Some(Update::Image {
                    index: st.applied,
                    image: Box::new(st.controller.image().clone()),
                });
            }
            if let Some(u) = self.q.queue.borrow_mut().pop_front() {
                return Some(u);
            }
            if inner.closed.get() {
                return None;
            }
            drop(inner);
            self.q.event.changed(g).await;
        }
    }
}

struct State {
    /// The controller group's replica (voters only).
    manager: Option<GroupManager>,
    /// Inactive except on the leader; every node applies committed entries through it.
    controller: Controller,
    /// Raft index of the last committed entry applied to the image.
    applied: u64,
    /// Controller proposals in flight: Raft token → controller id, and their indexes.
    proposals: BTreeMap<ProposalToken, ProposalId>,
    proposed_at: BTreeMap<ProposalToken, u64>,
    /// Our committed proposals not yet applied, by index.
    ours_at: BTreeMap<u64, ProposalId>,
    /// Cluster-id / bootstrap entries proposed directly (not through the controller).
    bootstrap: Vec<ProposalToken>,
    next_token: u64,
    replies: BTreeMap<ReplyToken, Rc<Slot<Answer>>>,
    next_reply: u64,
    /// Record bytes not yet handed to the WAL, and the last `Persist` seq among them.
    wal_buf: Vec<u8>,
    wal_seq: u64,
    /// A snapshot file to write before `wal_buf` (its compaction's records are in or
    /// after it), and whether the WAL is to be rewritten without the compacted entries
    /// once everything before is written.
    wal_snapshot: Option<Vec<u8>>,
    wal_rewrite: bool,
    /// The last snapshot's index (0: none), the entry bytes applied since, and when it was
    /// taken (voters only).
    snap_index: u64,
    snap_bytes: u64,
    snap_at: Instant,
    /// A snapshot being encoded off this thread (see `maybe_snapshot`), and where its
    /// (index, payload) lands once encoded.
    snap_encoding: bool,
    snap_encoded: Rc<RefCell<Option<EncodedSnapshot>>>,
    /// The node believed to lead (voters: from Raft; others: from the voters' hints).
    leader: Option<u64>,
    /// Round robin over the voters when no leader is known.
    next_voter: usize,
    ctrl_tick_at: Option<i64>,
    subscribers: Vec<Weak<SubQueue>>,
    /// This node's registration epoch, once registered.
    epoch: Option<u64>,
    /// Liveness last reported to the manager, per voter.
    alive: BTreeMap<u64, bool>,
    /// While leading the controller group: per voter, when (wall-clock ms) it was last seen
    /// active (heard from since the last check-quorum round) and last caught up with this
    /// log's end, sampled every tick, for DescribeQuorum.
    quorum_seen: BTreeMap<u64, (i64, i64)>,
    /// Per node that pulled committed entries from this one (observers, Kafka's term): the
    /// index it had applied, when (wall-clock ms) it last pulled, and when it last pulled
    /// having caught up with the commit index, for DescribeQuorum. Peers are nodes the
    /// transport knows, so this holds at most the cluster's.
    observers_seen: BTreeMap<NodeId, (i64, i64, i64)>,
    fatal: Option<String>,
}

struct Inner {
    node_id: i32,
    /// This node's Raft id (= node id; [`SOLO_RAFT_ID`] in a cluster of one).
    raft_id: u64,
    voters: Vec<Voter>,
    is_voter: bool,
    kafka: Endpoint,
    listeners: Vec<ListenerEndpoint>,
    rpc: Endpoint,
    legacy: Option<LegacyState>,
    subscriber_queue_max: usize,
    data_dir: PathBuf,
    /// This node's data directory id ([`crate::identity`]), registered with the controller.
    directory: [u8; 16],
    /// What the controller is rebuilt with when a snapshot replaces the image.
    ctrl_cfg: ControllerConfig,
    snapshot_bytes: u64,
    snapshot_interval: Duration,
    st: RefCell<State>,
    transport: RefCell<Option<Rc<Transport>>>,
    /// Leader-report dissemination (with a transport).
    gossip: RefCell<Option<Rc<Gossip>>>,
    /// The owner's handler of the extension methods.
    extension: RefCell<Option<Rc<dyn Extension>>>,
    /// The owner's receiver of Raft messages of groups other than the controller's (the
    /// partition groups).
    partition_raft: RefCell<Option<PartitionRaftSink>>,
    /// Wakes the WAL writer.
    wal_kick: Event,
    /// The applied index, leadership or registration changed.
    changed: Event,
    closed: Cell<bool>,
    clock: Instant,
}

/// The controller runtime of one node (see the crate header).
pub struct ControllerNode {
    inner: Rc<Inner>,
}

/// A deterministic cluster id for the transport's `Hello`, from the sorted voter ids: two
/// clusters with different voters cannot connect to each other by mistake.
pub fn transport_cluster_id(voters: &[Voter]) -> String {
    let mut ids: Vec<u64> = voters.iter().map(|v| v.id).collect();
    ids.sort_unstable();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for id in ids {
        for b in id.to_be_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("sluice-voters-{h:016x}")
}

/// A fresh cluster id in Kafka's form: 16 random bytes as 22 characters of URL-safe base64.
pub fn random_cluster_id() -> String {
    crate::identity::uuid_to_base64(&rand::random())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Makes a recovered controller log agree with the snapshot beside it. The log starts at
/// the snapshot's index when the WAL was rewritten after it; before it when a crash came
/// between the snapshot's write and the WAL's compaction (or a follower's install of a
/// leader's snapshot was cut short): the log is then compacted to the snapshot (restarted
/// there if the WAL lacks the snapshot's entry or holds another one at its index, which was
/// never committed). A log that starts after the snapshot has lost state: the start fails.
/// Returns whether the log changed (`start` then rewrites the file to match, before
/// anything can append to it).
fn restore_snapshot(log: &mut sluice_raft::ReplicaLog, sf: &SnapshotFile) -> io::Result<bool> {
    let damaged = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    // Far beyond any real log, and keeps index arithmetic from overflowing (as the WAL's
    // replay refuses such a log start).
    if sf.index >= 1 << 62 {
        return Err(damaged(format!(
            "the controller snapshot says index {}: damaged",
            sf.index
        )));
    }
    let (start, start_term) = log.start();
    if sf.index < start || (sf.index == start && sf.term != start_term) {
        return Err(damaged(format!(
            "the controller snapshot (index {}, term {}) is older than the WAL's log start \
             (index {start}, term {start_term})",
            sf.index, sf.term
        )));
    }
    if sf.index == start {
        check_commit(log)?;
        return Ok(false);
    }
    let whole = log.window_first() == log.first_index();
    if whole && sf.index <= log.last_index() && log.term_of(sf.index) == Some(sf.term) {
        log.compact_before(sf.index + 1);
        if log.start_offset() != sf.offset {
            return Err(damaged(format!(
                "the controller snapshot at index {} says offset {}, the WAL {}",
                sf.index,
                sf.offset,
                log.start_offset()
            )));
        }
    } else {
        log.restart_at(sf.index, sf.term, sf.offset);
    }
    // The snapshot's entries are committed, whatever hard state the WAL kept.
    let hs = log.hard_state().clone();
    log.set_hard_state(hs);
    check_commit(log)?;
    Ok(true)
}

/// A commit index past the log's end (the WAL kept a commit for entries a restart at the
/// snapshot dropped: another term at the snapshot's index) is a damaged pair of files, not
/// a state a crash leaves: refused here rather than asserted on in the group manager.
fn check_commit(log: &sluice_raft::ReplicaLog) -> io::Result<()> {
    let commit = log.hard_state().commit;
    if commit > log.last_index() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the controller WAL's commit index {commit} is past its log ({}..={}) after \
                 the snapshot",
                log.first_index(),
                log.last_index()
            ),
        ));
    }
    Ok(())
}

impl ControllerNode {
    /// Starts the node: opens and replays the WAL (voters), applies the committed entries
    /// to the image, starts the transport (with voters) and the background tasks. Returns
    /// once running; the image may still be catching up.
    pub async fn start(cfg: ClusterConfig) -> io::Result<ControllerNode> {
        let solo = cfg.voters.is_empty();
        let directory = crate::identity::directory_id(&cfg.data_dir)?;
        let raft_id = if solo {
            SOLO_RAFT_ID
        } else {
            if cfg.node_id < 1 {
                return Err(invalid(format!(
                    "node id {} in a cluster: at least 1 needed",
                    cfg.node_id
                )));
            }
            cfg.node_id as u64
        };
        let mut voter_ids: Vec<u64> = if solo {
            vec![SOLO_RAFT_ID]
        } else {
            cfg.voters.iter().map(|v| v.id).collect()
        };
        voter_ids.sort_unstable();
        let is_voter = voter_ids.contains(&raft_id);
        if !solo && cfg.rpc_listen.is_none() {
            return Err(invalid("a cluster node needs an rpc listener".into()));
        }
        let mut ctrl_cfg = cfg.controller.clone();
        if ctrl_cfg.seed == 0 {
            ctrl_cfg.seed = rand::random();
        }
        let mut raft_cfg = RaftConfig {
            node_id: raft_id,
            seed: rand::random(),
            // The controller log after the last snapshot stays whole in memory (about
            // `snapshot_bytes` of it): nothing is evicted, so nothing is ever read back,
            // and pulls and applies read entries from memory (see the crate header).
            entry_cache_bytes_max: u64::MAX,
            // The controller's snapshots carry the metadata image after their offset.
            payload_group: Some(CONTROLLER_GROUP),
            ..Default::default()
        };
        if solo {
            // A lone voter has nobody to wait for or disagree with: elect it within a few
            // ticks rather than after the cluster's election timeout (1.5-3 s per start).
            raft_cfg.heartbeat_ticks = 1;
            raft_cfg.election_ticks = SOLO_ELECTION_TICKS;
            raft_cfg.quiesce_ticks = SOLO_ELECTION_TICKS as u64;
        }
        let mut wal = None;
        let mut manager = None;
        let mut create_fx = Vec::new();
        let mut image = MetadataImage::new();
        let mut snap_index = 0;
        if is_voter {
            log::debug!("controller: opening the WAL");
            let mut opened = WalFile::open(&cfg.data_dir).await?;
            log::debug!("controller: WAL open");
            let snap = snapshot::read(&cfg.data_dir.join(CLUSTER_DIR))?;
            let mut logs = opened.logs;
            let m = if let Some(mut log) = logs.remove(&CONTROLLER_GROUP) {
                let mut have = log.voters().to_vec();
                have.sort_unstable();
                if have != voter_ids {
                    return Err(invalid(format!(
                        "the controller log was written for voters {have:?}, this start names {voter_ids:?}"
                    )));
                }
                if let Some(sf) = snap {
                    if restore_snapshot(&mut log, &sf)? {
                        // The log was brought into line with the snapshot in memory only:
                        // make the file say so before anything is appended to it. A write
                        // appended to the old file (which ends below the snapshot) would
                        // never replay, and the voter could never start again.
                        let mut out = Vec::new();
                        sluice_raft::wal::encode_log(CONTROLLER_GROUP, &log, &mut out).ok_or_else(
                            || invalid("the recovered controller log has evicted entries".into()),
                        )?;
                        opened.wal = WalFile::rewrite(&cfg.data_dir, out).await?;
                        log::info!(
                            "controller: WAL rewritten to start at the snapshot (index {})",
                            sf.index
                        );
                    }
                    image = snapshot::decode_payload(&sf.payload).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("the controller snapshot at index {}: {e}", sf.index),
                        )
                    })?;
                    log.set_snapshot_payload(sf.payload);
                    snap_index = sf.index;
                    log::info!(
                        "controller: restarting from the metadata snapshot at index {snap_index}"
                    );
                }
                GroupManager::recover(raft_cfg, [(CONTROLLER_GROUP, log)])
                    .map_err(|e| invalid(format!("recovering the controller group: {e:?}")))?
            } else {
                if let Some(sf) = snap {
                    return Err(invalid(format!(
                        "a controller snapshot (index {}) without the controller WAL it goes with",
                        sf.index
                    )));
                }
                let mut m = GroupManager::new(raft_cfg);
                create_fx = m
                    .create_group(CONTROLLER_GROUP, &voter_ids)
                    .map_err(|e| invalid(format!("creating the controller group: {e:?}")))?;
                m
            };
            if !logs.is_empty() {
                return Err(invalid(
                    "the controller WAL holds groups other than the controller's".into(),
                ));
            }
            manager = Some(m);
            wal = Some(opened.wal);
        }
        let rpc = match cfg.rpc_listen {
            Some(a) => Endpoint {
                host: a.ip().to_string(),
                port: a.port(),
            },
            None => cfg.kafka.clone(),
        };
        let inner = Rc::new(Inner {
            node_id: cfg.node_id,
            raft_id,
            voters: cfg.voters.clone(),
            is_voter,
            kafka: cfg.kafka.clone(),
            listeners: cfg.listeners.clone(),
            rpc,
            legacy: cfg.legacy.clone(),
            subscriber_queue_max: cfg.subscriber_queue_max.max(1),
            data_dir: cfg.data_dir.clone(),
            directory,
            ctrl_cfg: ctrl_cfg.clone(),
            snapshot_bytes: cfg.snapshot_bytes.max(1),
            snapshot_interval: cfg.snapshot_interval,
            st: RefCell::new(State {
                manager,
                controller: Controller::new(ctrl_cfg, image),
                applied: snap_index,
                proposals: BTreeMap::new(),
                proposed_at: BTreeMap::new(),
                ours_at: BTreeMap::new(),
                bootstrap: Vec::new(),
                next_token: 1,
                replies: BTreeMap::new(),
                next_reply: 1,
                wal_buf: Vec::new(),
                wal_seq: 0,
                wal_snapshot: None,
                wal_rewrite: false,
                snap_index,
                snap_bytes: 0,
                snap_at: Instant::now(),
                snap_encoding: false,
                snap_encoded: Rc::default(),
                leader: solo.then_some(SOLO_RAFT_ID),
                next_voter: 0,
                ctrl_tick_at: None,
                subscribers: Vec::new(),
                epoch: None,
                alive: BTreeMap::new(),
                quorum_seen: BTreeMap::new(),
                observers_seen: BTreeMap::new(),
                fatal: None,
            }),
            transport: RefCell::new(None),
            gossip: RefCell::new(None),
            extension: RefCell::new(None),
            partition_raft: RefCell::new(None),
            wal_kick: Event::default(),
            changed: Event::default(),
            closed: Cell::new(false),
            clock: Instant::now(),
        });
        {
            // Entries the WAL holds up to the recovered commit index are committed: replay
            // them before anything else happens.
            let mut st = inner.st.borrow_mut();
            let recovered = st
                .manager
                .as_ref()
                .and_then(|m| m.status(CONTROLLER_GROUP))
                .map_or(0, |s| s.hw_index);
            inner.apply_committed(&mut st, recovered);
            if let Some(e) = &st.fatal {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
            }
            inner.raft_fx(&mut st, create_fx);
        }
        if !solo {
            let handler = Rc::new(RpcHandler {
                inner: Rc::downgrade(&inner),
            });
            let mut tcfg = TransportConfig::new(raft_id, cfg.rpc_listen);
            tcfg.cluster_id = transport_cluster_id(&cfg.voters);
            tcfg.directory = directory;
            tcfg.timeouts = cfg.rpc_timeouts.clone();
            tcfg.task_queue = cfg.rpc_task_queue;
            tcfg.tls = cfg.rpc_tls.clone();
            log::debug!("controller: starting the transport");
            let t = Transport::start(tcfg, handler).await?;
            // The directories peers registered, as the replayed image has them (more as
            // registrations commit: `sync_peer_directories`).
            Inner::sync_peer_directories(&t, &inner.st.borrow());
            for v in &cfg.voters {
                if v.id != raft_id {
                    t.add_peer(v.id, v.addr)?;
                }
            }
            let t = Rc::new(t);
            let g = Gossip::start(t.clone());
            *inner.transport.borrow_mut() = Some(t);
            *inner.gossip.borrow_mut() = Some(g.clone());
            glommio::spawn_local(members_task(inner.clone(), g)).detach();
        }
        if let Some(wal) = wal {
            glommio::spawn_local(wal_task(inner.clone(), wal)).detach();
            glommio::spawn_local(tick_task(inner.clone())).detach();
        } else {
            glommio::spawn_local(pull_task(inner.clone())).detach();
        }
        glommio::spawn_local(register_task(inner.clone())).detach();
        Ok(ControllerNode { inner })
    }

    /// The committed metadata image.
    pub fn image(&self) -> MetadataImage {
        self.inner.st.borrow().controller.image().clone()
    }

    /// Raft index of the last committed entry in the image.
    pub fn applied_index(&self) -> u64 {
        self.inner.st.borrow().applied
    }

    /// Whether this node runs the active controller.
    pub fn is_active(&self) -> bool {
        self.inner.st.borrow().controller.is_active()
    }

    /// The node this one believes leads the controller group (its Kafka node id).
    pub fn leader(&self) -> Option<i32> {
        let st = self.inner.st.borrow();
        if self.inner.voters.is_empty() {
            return Some(self.inner.node_id);
        }
        st.leader.map(|l| l as i32)
    }

    /// The local replica of the controller group as Raft sees it (voters only).
    pub fn raft_status(&self) -> Option<sluice_raft::GroupStatus> {
        let st = self.inner.st.borrow();
        st.manager.as_ref().and_then(|m| m.status(CONTROLLER_GROUP))
    }

    /// Controlled shutdown of this node's controller replica: it never campaigns again
    /// (`GroupManager::stop_campaigning`), and while it leads the controller group it hands
    /// the leadership to the voter furthest along among those heard from lately that the
    /// transport reaches (Raft's leadership transfer: that voter campaigns at once), so the
    /// quorum has an active controller again without waiting out an election timeout.
    /// Returns whether a transfer was asked for (false: not leading, or nobody to hand to).
    /// Call it again while [`Self::leads_controller`] stays true: Raft abandons a transfer
    /// not completed within an election timeout.
    pub fn resign(&self) -> bool {
        let t = self.inner.transport();
        let mut st = self.inner.st.borrow_mut();
        if st.fatal.is_some() || self.inner.closed.get() {
            return false;
        }
        let me = self.inner.raft_id;
        let Some(m) = st.manager.as_mut() else {
            return false;
        };
        m.stop_campaigning();
        let leads = m
            .status(CONTROLLER_GROUP)
            .is_some_and(|s| s.role == sluice_raft::Role::Leader);
        let Some(t) = t.filter(|_| leads) else {
            return false;
        };
        let to = m
            .progress(CONTROLLER_GROUP)
            .unwrap_or_default()
            .into_iter()
            .filter(|&(n, _, active)| n != me && active && t.is_connected(n))
            .max_by_key(|&(_, matched, _)| matched)
            .map(|(n, _, _)| n);
        let Some(to) = to else {
            return false;
        };
        log::info!("controller: shutting down, handing the controller leadership to node {to}");
        let fx = m.transfer_leader(CONTROLLER_GROUP, to);
        self.inner.raft_fx(&mut st, fx);
        true
    }

    /// The index of the last entry in the local replica's log (0 on a node without one).
    pub fn raft_last_index(&self) -> u64 {
        let st = self.inner.st.borrow();
        st.manager
            .as_ref()
            .and_then(|m| m.log(CONTROLLER_GROUP))
            .map_or(0, |l| l.last_index())
    }

    /// The index of the last entry the local replica's log dropped (its metadata snapshot's
    /// index; 0 before the first snapshot, and on a node without a replica).
    pub fn raft_log_start(&self) -> u64 {
        let st = self.inner.st.borrow();
        st.manager
            .as_ref()
            .and_then(|m| m.log(CONTROLLER_GROUP))
            .map_or(0, |l| l.start().0)
    }

    /// Whether this node's replica leads the controller group.
    pub fn leads_controller(&self) -> bool {
        self.raft_status()
            .is_some_and(|s| s.role == sluice_raft::Role::Leader)
    }

    /// This node's broker epoch, once its registration committed.
    pub fn broker_epoch(&self) -> Option<u64> {
        self.inner.st.borrow().epoch
    }

    /// Why the node stopped, if it did (a committed entry that does not apply, a WAL
    /// write or sync that failed): it then answers nothing and applies nothing more.
    pub fn failure(&self) -> Option<String> {
        self.inner.st.borrow().fatal.clone()
    }

    /// Every committed batch from now on, in log order (see [`Update`]). Take
    /// [`ControllerNode::image`] right after this call (no `.await` between) to start from
    /// the image the first batch applies to.
    pub fn subscribe(&self) -> Subscription {
        let q = Rc::new(SubQueue {
            queue: RefCell::new(VecDeque::new()),
            lagged: Cell::new(false),
            event: Event::default(),
        });
        self.inner
            .st
            .borrow_mut()
            .subscribers
            .push(Rc::downgrade(&q));
        Subscription {
            q,
            node: Rc::downgrade(&self.inner),
        }
    }

    /// Waits until this node's registration is in the image and unfenced (the broker
    /// serves once it is: before that, placement does not count it), within `d`.
    pub async fn wait_live(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let g = self.inner.changed.generation();
            let live = {
                let st = self.inner.st.borrow();
                let me = st.controller.image().broker(self.inner.node_id);
                me.is_some_and(|b| !b.fenced && Some(b.epoch) == st.epoch)
            };
            if live {
                return true;
            }
            if Instant::now() >= deadline || self.inner.closed.get() {
                return false;
            }
            or(self.inner.changed.changed(g), sleep_until(deadline)).await;
        }
    }

    /// Waits until the image has applied index `index` (or the node stopped), within `d`.
    pub async fn wait_applied(&self, index: u64, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        loop {
            let g = self.inner.changed.generation();
            if self.inner.st.borrow().applied >= index {
                return true;
            }
            if Instant::now() >= deadline || self.inner.closed.get() {
                return false;
            }
            or(self.inner.changed.changed(g), sleep_until(deadline)).await;
        }
    }

    /// Runs `cmd` on the active controller (here or forwarded), retrying until `timeout`
    /// (see the crate header); the named methods below use [`COMMAND_TIMEOUT`].
    pub async fn run(&self, cmd: Command, timeout: Duration) -> Answer {
        self.inner.command(cmd, timeout).await
    }

    pub async fn create_topics(&self, topics: Vec<NewTopic>, validate_only: bool) -> Answer {
        self.inner
            .command(
                Command::CreateTopics {
                    topics,
                    validate_only,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    pub async fn delete_topics(&self, names: Vec<String>) -> Answer {
        self.inner
            .command(Command::DeleteTopics { names }, COMMAND_TIMEOUT)
            .await
    }

    pub async fn create_partitions(
        &self,
        topics: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Answer {
        self.inner
            .command(
                Command::CreatePartitions {
                    topics,
                    validate_only,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    pub async fn alter_configs(&self, changes: Vec<AlterConfig>, validate_only: bool) -> Answer {
        self.inner
            .command(
                Command::AlterConfigs {
                    changes,
                    validate_only,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    /// AlterUserScramCredentials: per change, its user's outcome.
    pub async fn alter_scram(&self, changes: Vec<ScramChange>) -> Answer {
        self.inner
            .command(Command::AlterScram { changes }, COMMAND_TIMEOUT)
            .await
    }

    /// CreateDelegationToken: the token as stored.
    pub async fn create_token(&self, req: sluice_meta::controller::CreateToken) -> Answer {
        self.inner
            .command(Command::CreateToken(req), COMMAND_TIMEOUT)
            .await
    }

    /// RenewDelegationToken (`expire`: ExpireDelegationToken): the new expiry time.
    pub async fn token_expiry(
        &self,
        token_id: String,
        principal: String,
        period_ms: i64,
        expire: bool,
    ) -> Answer {
        let cmd = if expire {
            Command::ExpireToken {
                token_id,
                principal,
                period_ms,
            }
        } else {
            Command::RenewToken {
                token_id,
                principal,
                period_ms,
            }
        };
        self.inner.command(cmd, COMMAND_TIMEOUT).await
    }

    /// CreateAcls: per binding, its outcome.
    pub async fn create_acls(&self, bindings: Vec<AclBinding>) -> Answer {
        self.inner
            .command(Command::CreateAcls { bindings }, COMMAND_TIMEOUT)
            .await
    }

    /// AlterClientQuotas: per entry, its outcome.
    pub async fn alter_client_quotas(
        &self,
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    ) -> Answer {
        self.inner
            .command(
                Command::AlterQuotas {
                    entries,
                    validate_only,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    /// UpdateFeatures: per update, its outcome.
    pub async fn update_features(
        &self,
        updates: Vec<sluice_meta::features::FeatureUpdate>,
        validate_only: bool,
    ) -> Answer {
        self.inner
            .command(
                Command::UpdateFeatures {
                    updates,
                    validate_only,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    /// DescribeQuorum: the controller quorum as its leader sees it.
    pub async fn describe_quorum(&self) -> Answer {
        self.inner
            .command(Command::DescribeQuorum, COMMAND_TIMEOUT)
            .await
    }

    /// DeleteAcls: per filter, the bindings it removed.
    pub async fn delete_acls(&self, filters: Vec<AclFilter>) -> Answer {
        self.inner
            .command(Command::DeleteAcls { filters }, COMMAND_TIMEOUT)
            .await
    }

    /// AlterPartitionReassignments: per partition the target replicas, or `None` to cancel.
    pub async fn alter_partition_reassignments(
        &self,
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Answer {
        self.inner
            .command(
                Command::AlterPartitionReassignments { partitions },
                COMMAND_TIMEOUT,
            )
            .await
    }

    /// The active controller's applied metadata index ([`Command::MetadataIndex`]): once
    /// this node's image has applied up to it ([`Self::wait_applied`]), it holds every
    /// change the controller had acknowledged when it answered.
    pub async fn metadata_index(&self, timeout: Duration) -> Answer {
        self.inner.command(Command::MetadataIndex, timeout).await
    }

    /// A partition leader's report that the reassignment at `revision` is done.
    pub async fn reassignment_complete(
        &self,
        topic: [u8; 16],
        partition: i32,
        revision: u64,
    ) -> Answer {
        self.inner
            .command(
                Command::ReassignmentComplete {
                    topic,
                    partition,
                    revision,
                },
                COMMAND_TIMEOUT,
            )
            .await
    }

    /// The next producer-id block for this node (it must be registered: waits for that
    /// within the timeout).
    pub async fn allocate_producer_ids(&self) -> Answer {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let g = self.inner.changed.generation();
            let epoch = self.inner.st.borrow().epoch;
            if let Some(epoch) = epoch {
                let left = deadline.saturating_duration_since(Instant::now());
                let cmd = Command::AllocateProducerIds {
                    node: self.inner.node_id,
                    epoch,
                };
                return self.inner.command(cmd, left).await;
            }
            if Instant::now() >= deadline || self.inner.closed.get() {
                return Answer::AllocateProducerIds(Err(sluice_meta::ApiError {
                    code: REQUEST_TIMED_OUT,
                    message: "This node has not registered with the controller yet.".into(),
                }));
            }
            or(self.inner.changed.changed(g), sleep_until(deadline)).await;
        }
    }

    /// Makes `store` this node's leader table for dissemination (see [`crate::gossip`]):
    /// its changes go to every other node, and other nodes' reports that its filter
    /// accepts go into it. Attaching again (a new table) starts every exchange over. A
    /// cluster of one has nobody to tell: the store is not used.
    pub fn attach_leaders(&self, store: Rc<dyn LeaderStore>) {
        if let Some(g) = self.inner.gossip() {
            g.attach(store);
        }
    }

    /// Tells the dissemination that the table changed (call it after observing a local
    /// report on this executor, so it goes out at once; changes made on other threads
    /// are noticed within [`crate::gossip::GOSSIP_POLL`] anyway).
    pub fn leaders_changed(&self) {
        if let Some(g) = self.inner.gossip() {
            g.refresh();
        }
    }

    /// The dissemination's counters (all zero in a cluster of one).
    pub fn gossip_stats(&self) -> GossipStats {
        self.inner.gossip().map(|g| g.stats()).unwrap_or_default()
    }

    /// The other nodes this one knows (voters and registered brokers) and whether the
    /// connection to each is up.
    pub fn peers(&self) -> Vec<(i32, bool)> {
        self.inner
            .gossip()
            .map(|g| g.peers())
            .unwrap_or_default()
            .into_iter()
            .map(|(id, up)| (id as i32, up))
            .collect()
    }

    /// Hands Raft messages of every group but the controller's ([`CONTROLLER_GROUP`]) that
    /// peers send this node to `sink` (the broker's partition groups), on this executor.
    /// Until then they are dropped (Raft re-sends what matters).
    pub fn set_partition_raft(&self, sink: PartitionRaftSink) {
        *self.inner.partition_raft.borrow_mut() = Some(sink);
    }

    /// Sends partition groups' Raft messages (never the controller group's: its manager
    /// is this node's) through the transport, behind nothing: see
    /// `sluice_rpc::Transport::send_raft` (never waits; frames over the queue bound are
    /// dropped and counted). A cluster of one has nobody to send to.
    pub fn send_partition_raft(&self, envelope: sluice_raft::Envelope) -> Result<(), SendError> {
        debug_assert!(
            envelope
                .messages
                .iter()
                .all(|(g, _)| *g != CONTROLLER_GROUP)
                && envelope
                    .heartbeats
                    .iter()
                    .all(|h| h.group != CONTROLLER_GROUP),
            "the controller group's messages are the runtime's own"
        );
        match self.inner.transport() {
            Some(t) => t.send_raft(envelope, true),
            None => Err(SendError::UnknownPeer(envelope.to)),
        }
    }

    /// This node's Raft id (its node id; [`SOLO_RAFT_ID`] in a cluster of one).
    pub fn raft_id(&self) -> u64 {
        self.inner.raft_id
    }

    /// Hands requests with methods in `wire::method::EXTENSION_MIN..=EXTENSION_MAX` to
    /// `ext` (replacing any earlier one); until then they get UNKNOWN_METHOD.
    pub fn set_extension(&self, ext: Rc<dyn Extension>) {
        *self.inner.extension.borrow_mut() = Some(ext);
    }

    /// Sends an extension request to node `to` (any of [`ControllerNode::peers`]) through
    /// this node's transport, behind its Raft traffic, and waits for the answer within
    /// `timeout` (see `sluice_rpc::Transport::request`). `method` must be in the extension
    /// range (the runtime's own methods are not the owner's to call).
    pub async fn request(
        &self,
        to: i32,
        method: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        assert!(
            method >= wire::method::EXTENSION_MIN,
            "method {method} is not an extension method"
        );
        let Some(t) = self.inner.transport() else {
            return Err(RequestError::UnknownPeer(to.max(0) as u64));
        };
        if to < 1 {
            return Err(RequestError::UnknownPeer(0));
        }
        t.request(to as u64, method, body, timeout).await
    }

    /// Stops the tasks and the transport (its listener's port is free when this returns).
    /// The WAL needs no closing: everything reported persisted was synced.
    pub async fn shutdown(self) {
        self.inner.close();
        let t = self.inner.transport.borrow_mut().take();
        if let Some(t) = t {
            t.shutdown().await;
        }
    }
}

impl Drop for ControllerNode {
    fn drop(&mut self) {
        self.inner.close();
    }
}

/// Kafka's REQUEST_TIMED_OUT.
pub const REQUEST_TIMED_OUT: i16 = 7;

/// The owner's receiver of partition groups' Raft messages
/// ([`ControllerNode::set_partition_raft`]).
pub type PartitionRaftSink = Rc<dyn Fn(sluice_raft::Envelope)>;

/// `env` split into the controller group's part and the rest (each `None` when empty).
fn split_controller(
    env: sluice_raft::Envelope,
) -> (Option<sluice_raft::Envelope>, Option<sluice_raft::Envelope>) {
    let sluice_raft::Envelope {
        from,
        to,
        heartbeats,
        messages,
    } = env;
    let mut mine = sluice_raft::Envelope {
        from,
        to,
        ..Default::default()
    };
    let mut rest = mine.clone();
    for h in heartbeats {
        if h.group == CONTROLLER_GROUP {
            mine.heartbeats.push(h);
        } else {
            rest.heartbeats.push(h);
        }
    }
    for (g, m) in messages {
        if g == CONTROLLER_GROUP {
            mine.messages.push((g, m));
        } else {
            rest.messages.push((g, m));
        }
    }
    let some = |e: sluice_raft::Envelope| {
        (!e.heartbeats.is_empty() || !e.messages.is_empty()).then_some(e)
    };
    (some(mine), some(rest))
}

/// Whether every part of `a` failed with NOT_CONTROLLER (a retry may succeed elsewhere).
fn not_controller(a: &Answer) -> bool {
    fn all<K, T>(v: &[(K, Result<T, sluice_meta::ApiError>)]) -> bool {
        !v.is_empty() && v.iter().all(|(_, o)| nc(o))
    }
    fn nc<T>(o: &Result<T, sluice_meta::ApiError>) -> bool {
        matches!(o, Err(e) if e.code == code::NOT_CONTROLLER)
    }
    match a {
        Answer::CreateTopics(v) => all(v),
        Answer::DeleteTopics(v) => all(v),
        Answer::CreatePartitions(v) => all(v),
        Answer::AlterConfigs(v) => all(v),
        Answer::AllocateProducerIds(o) => nc(o),
        Answer::RegisterBroker(o) => nc(o),
        Answer::BrokerHeartbeat(o) => nc(o),
        Answer::AlterPartitionReassignments(v) => all(v),
        Answer::ReassignmentComplete(o) => nc(o),
        Answer::MetadataIndex(o) => nc(o),
        Answer::AlterScram(v) => all(v),
        Answer::CreateAcls(v) => all(v),
        Answer::DeleteAcls(v) => all(v),
        Answer::AlterQuotas(v) => all(v),
        Answer::UpdateFeatures(v) => all(v),
        Answer::DescribeQuorum(o) => nc(o),
        Answer::CreateToken(o) => nc(o),
        Answer::TokenExpiry(o) => nc(o),
    }
}

async fn sleep_until(deadline: Instant) {
    let d = deadline.saturating_duration_since(Instant::now());
    if !d.is_zero() {
        glommio::timer::sleep(d).await;
    }
}

impl Inner {
    /// Node `from` pulls the committed entries after `after` (it has applied up to there).
    fn note_pull(&self, from: NodeId, after: u64) {
        let mut st = self.st.borrow_mut();
        let commit = st
            .manager
            .as_ref()
            .and_then(|m| m.status(CONTROLLER_GROUP))
            .map(|s| s.commit_index);
        let now = wall_ms();
        let seen = st.observers_seen.entry(from).or_insert((-1, -1, -1));
        seen.0 = after.min(i64::MAX as u64) as i64;
        seen.1 = now;
        if commit.is_some_and(|c| after >= c) {
            seen.2 = now;
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    fn close(&self) {
        if !self.closed.replace(true) {
            if let Ok(g) = self.gossip.try_borrow() {
                if let Some(g) = g.as_ref() {
                    g.close();
                }
            }
            self.changed.notify();
            self.wal_kick.notify();
            // Not borrowable when closing from inside a state change: `fail` wakes the
            // subscribers itself.
            if let Ok(st) = self.st.try_borrow() {
                Self::wake_subscribers(&st);
            }
        }
    }

    fn wake_subscribers(st: &State) {
        for s in st.subscribers.iter().filter_map(Weak::upgrade) {
            s.event.notify();
        }
    }

    fn fail(&self, st: &mut State, msg: String) {
        if st.fatal.is_none() {
            log::error!("controller: stopped: {msg}");
            st.fatal = Some(msg);
        }
        Self::wake_subscribers(st);
        self.close();
    }

    /// Tells the transport the data directory each other node registered, so a node that
    /// comes back with another (wiped) is refused before any Raft message reaches it.
    fn sync_peer_directories(t: &Transport, st: &State) {
        for (&node, b) in st.controller.image().brokers() {
            if node as u64 != t.node_id() && node > 0 {
                t.set_peer_directory(node as u64, b.directory);
            }
        }
    }

    fn transport(&self) -> Option<Rc<Transport>> {
        self.transport.borrow().clone()
    }

    fn gossip(&self) -> Option<Rc<Gossip>> {
        self.gossip.borrow().clone()
    }

    /// Performs the group manager's effects (and what they lead to, depth first, so a
    /// refused proposal reaches the controller before it proposes anything else).
    fn raft_fx(&self, st: &mut State, mut fx: Vec<RaftEffect>) {
        // The call's writes first: what the other effects lead to (a proposal on a commit)
        // makes later manager calls, whose writes must follow these in the file.
        fx.retain(|e| match e {
            RaftEffect::Persist { seq, writes } => {
                assert_eq!(*seq, st.wal_seq + 1, "persist batches in seq order");
                for w in writes {
                    sluice_raft::wal::encode_record(w, &mut st.wal_buf);
                }
                st.wal_seq = *seq;
                self.wal_kick.notify();
                false
            }
            _ => true,
        });
        for e in fx {
            if st.fatal.is_some() {
                return;
            }
            match e {
                RaftEffect::Send(env) => {
                    if let Some(t) = self.transport() {
                        if let Err(e) = t.send_raft(env, false) {
                            log::debug!("controller: raft send: {e}");
                        }
                    }
                }
                RaftEffect::Persist { .. } => unreachable!("taken above"),
                RaftEffect::Proposed { token, index, .. } => {
                    st.proposed_at.insert(token, index);
                }
                RaftEffect::Committed { token, .. } => {
                    let index = st.proposed_at.remove(&token);
                    if let (Some(id), Some(index)) = (st.proposals.remove(&token), index) {
                        st.ours_at.insert(index, id);
                    }
                    st.bootstrap.retain(|t| *t != token);
                }
                RaftEffect::Failed { token, error, .. } => {
                    st.proposed_at.remove(&token);
                    if let Some(id) = st.proposals.remove(&token) {
                        log::debug!("controller: proposal {id:?} failed: {error:?}");
                        let fx = st.controller.failed(id);
                        self.ctrl_fx(st, fx);
                    }
                    if st.bootstrap.contains(&token) {
                        // Every later bootstrap entry fails too (Raft commits in order);
                        // the next leader check proposes them again.
                        st.bootstrap.clear();
                    }
                }
                RaftEffect::HighWatermark { index, .. } => {
                    self.apply_committed(st, index);
                    self.check_active(st);
                }
                RaftEffect::Role { role, leader, .. } => {
                    st.leader = leader;
                    if role != Role::Leader && st.controller.is_active() {
                        log::info!(
                            "controller: node {} is no longer the active controller",
                            self.node_id
                        );
                        st.controller.become_inactive();
                    }
                    if role != Role::Leader {
                        st.bootstrap.clear();
                    }
                    self.check_active(st);
                    self.changed.notify();
                }
                // The controller never asks for read confirmations.
                RaftEffect::ReadIndex { .. } => {}
                RaftEffect::Fetch { id, .. } => {
                    // Never asked for: nothing is evicted (the cache is unbounded).
                    log::warn!("controller: unexpected log read request {id}");
                    if let Some(m) = st.manager.as_mut() {
                        let fx = m.entries_fetched(id, None);
                        self.raft_fx(st, fx);
                    }
                }
                // Only partitions' groups are asked to move their log start (DeleteRecords).
                RaftEffect::LogStartOffset { .. } => {}
            }
        }
    }

    fn ctrl_fx(&self, st: &mut State, fx: Vec<sluice_meta::Effect>) {
        for e in fx {
            if st.fatal.is_some() {
                return;
            }
            match e {
                sluice_meta::Effect::Reply(token, answer) => {
                    if let Some(slot) = st.replies.remove(&token) {
                        slot.set(answer);
                    }
                }
                sluice_meta::Effect::Propose { id, batch } => {
                    let token = ProposalToken(st.next_token);
                    st.next_token += 1;
                    st.proposals.insert(token, id);
                    let fx = self.propose(st, token, batch);
                    self.raft_fx(st, fx);
                }
                sluice_meta::Effect::ScheduleTick { at_ms } => {
                    st.ctrl_tick_at = Some(st.ctrl_tick_at.map_or(at_ms, |t| t.min(at_ms)));
                }
                sluice_meta::Effect::Warn(w) => log::warn!("controller: {w}"),
            }
        }
    }

    fn propose(&self, st: &mut State, token: ProposalToken, batch: Vec<u8>) -> Vec<RaftEffect> {
        let batch = Batch {
            records: 1,
            bytes: Bytes::from(batch),
        };
        match st.manager.as_mut() {
            Some(m) => m.propose(CONTROLLER_GROUP, token, batch),
            None => vec![RaftEffect::Failed {
                group: CONTROLLER_GROUP,
                token,
                error: sluice_raft::ProposeError::UnknownGroup,
            }],
        }
    }

    /// Applies the committed entries up to `upto` from the local replica, in order (first
    /// the snapshot the log restarted at, if a leader's snapshot restarted it past what was
    /// applied here).
    fn apply_committed(&self, st: &mut State, upto: u64) {
        self.install_log_snapshot(st);
        while st.applied < upto && st.fatal.is_none() {
            let i = st.applied + 1;
            let entry = st
                .manager
                .as_ref()
                .and_then(|m| m.log(CONTROLLER_GROUP))
                .and_then(|l| l.entry(i))
                .cloned();
            let Some(e) = entry else {
                self.fail(st, format!("committed entry {i} is not in memory"));
                return;
            };
            st.applied = i;
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                let id = st.ours_at.remove(&i);
                st.snap_bytes += e.data.len() as u64;
                self.apply_batch(st, i, &e.data, id);
            }
        }
        self.changed.notify();
        self.maybe_snapshot(st);
    }

    /// A voter whose log a leader's snapshot restarted past its applied index (it was too
    /// far behind): the snapshot's image replaces this node's, and is written as this
    /// node's snapshot file before the WAL's restart record (both are queued for the WAL
    /// task in this same step; it writes the snapshot first).
    fn install_log_snapshot(&self, st: &mut State) {
        let Some(log) = st.manager.as_ref().and_then(|m| m.log(CONTROLLER_GROUP)) else {
            return;
        };
        let (index, term) = log.start();
        if index <= st.applied || st.fatal.is_some() {
            return;
        }
        let payload = log.snapshot_payload().clone();
        let offset = log.start_offset();
        let image = match snapshot::decode_payload(&payload) {
            Ok(i) => i,
            Err(e) => {
                self.fail(
                    st,
                    format!(
                        "the controller log restarted at index {index} with a bad snapshot: {e}"
                    ),
                );
                return;
            }
        };
        log::info!("controller: caught up from the leader's metadata snapshot at index {index}");
        queue_snapshot(st, index, term, offset, payload);
        st.snap_bytes = 0;
        st.snap_at = Instant::now();
        self.wal_kick.notify();
        self.install_image(st, index, image);
    }

    /// The image as of `index` replaces this node's (a snapshot from a voter): the
    /// controller is rebuilt on it, inactive (only a follower or a broker-only node falls
    /// that far behind; a leader that just lost its leadership may not have seen its `Role`
    /// effect yet, but the manager failed its proposals before the snapshot's high
    /// watermark, so nothing of the old controller waits), and every subscriber is told to
    /// re-read the image.
    fn install_image(&self, st: &mut State, index: u64, image: MetadataImage) {
        if st.controller.is_active() {
            log::info!(
                "controller: node {} is no longer the active controller",
                self.node_id
            );
        }
        st.controller = Controller::new(self.ctrl_cfg.clone(), image);
        if let Some(t) = self.transport() {
            Self::sync_peer_directories(&t, st);
        }
        st.applied = index;
        st.ours_at.retain(|&i, _| i > index);
        st.subscribers.retain(|s| s.strong_count() > 0);
        for s in st.subscribers.iter().filter_map(Weak::upgrade) {
            s.queue.borrow_mut().clear();
            s.lagged.set(true);
            s.event.notify();
        }
        self.changed.notify();
    }

    /// On a voter: once `snapshot_bytes` of entries were applied since the last snapshot
    /// (or `snapshot_interval` passed with anything applied), snapshots the image at the
    /// applied index. The image is encoded on a blocking thread (a large one would stall
    /// this shard, the broker's shard 0, for as long); a later call (the next tick) takes
    /// the payload, queues the file for the WAL task and compacts the Raft log (and so the
    /// WAL) up to that index, unless the log moved past it meanwhile (a leader's snapshot).
    /// An image over `METADATA_SNAPSHOT_BYTES_MAX` is not snapshotted (logged; the log
    /// keeps growing).
    fn maybe_snapshot(&self, st: &mut State) {
        let encoded = st.snap_encoded.borrow_mut().take();
        if let Some((index, payload)) = encoded {
            st.snap_encoding = false;
            match payload {
                Ok(payload) => self.take_snapshot(st, index, payload),
                Err(e) => log::warn!("controller: no metadata snapshot at index {index}: {e}"),
            }
        }
        if st.snap_encoding || !self.is_voter || st.fatal.is_some() || st.applied <= st.snap_index {
            return;
        }
        let due =
            st.snap_bytes >= self.snapshot_bytes || st.snap_at.elapsed() >= self.snapshot_interval;
        if !due {
            return;
        }
        st.snap_bytes = 0;
        st.snap_at = Instant::now();
        let index = st.applied;
        let image = st.controller.image().clone();
        st.snap_encoding = true;
        let slot = st.snap_encoded.clone();
        glommio::spawn_local(async move {
            let payload = glommio::executor()
                .spawn_blocking(move || snapshot::encode_payload(&image))
                .await;
            *slot.borrow_mut() = Some((index, payload));
        })
        .detach();
    }

    /// Makes the encoded image at `index` this voter's snapshot (see `maybe_snapshot`).
    fn take_snapshot(&self, st: &mut State, index: u64, payload: Bytes) {
        if st.fatal.is_some() || index <= st.snap_index || index > st.applied {
            return;
        }
        let Some(m) = st.manager.as_mut() else {
            return;
        };
        let Some(log) = m.log(CONTROLLER_GROUP) else {
            return;
        };
        let Some(term) = log.term_of(index) else {
            return;
        };
        let offset = log.next_offset_after(index);
        let fx = m.compact_to_snapshot(CONTROLLER_GROUP, index, payload.clone());
        if fx.is_empty() {
            return;
        }
        log::debug!(
            "controller: metadata snapshot at index {index} ({} bytes)",
            payload.len()
        );
        // Queued before the compaction's writes: the WAL task writes it first.
        queue_snapshot(st, index, term, offset, payload);
        self.raft_fx(st, fx);
        self.wal_kick.notify();
    }

    /// One committed metadata batch: into the controller (and its image), then to the
    /// subscribers. One that does not decode or apply stops the node.
    fn apply_batch(&self, st: &mut State, index: u64, data: &[u8], id: Option<ProposalId>) {
        let records = match decode_batch(data) {
            Ok(r) => r,
            Err(e) => {
                self.fail(
                    st,
                    format!("controller log entry {index} does not decode: {e}"),
                );
                return;
            }
        };
        let (delta, fx) = match st.controller.committed(id, &records) {
            Ok(x) => x,
            Err(e) => {
                self.fail(
                    st,
                    format!("controller log entry {index} does not apply: {e}"),
                );
                return;
            }
        };
        if records
            .iter()
            .any(|r| matches!(r, Record::RegisterBroker(_)))
        {
            if let Some(t) = self.transport() {
                Self::sync_peer_directories(&t, st);
            }
        }
        let records = Rc::new(records);
        let delta = Rc::new(delta);
        st.subscribers.retain(|s| s.strong_count() > 0);
        for s in st.subscribers.iter().filter_map(Weak::upgrade) {
            if !s.lagged.get() {
                let mut q = s.queue.borrow_mut();
                if q.len() >= self.subscriber_queue_max {
                    q.clear();
                    s.lagged.set(true);
                } else {
                    q.push_back(Update::Batch {
                        index,
                        records: records.clone(),
                        delta: delta.clone(),
                    });
                }
            }
            s.event.notify();
        }
        self.ctrl_fx(st, fx);
    }

    /// On a ready leader that has applied every committed entry: write the cluster id if
    /// the log has none (bootstrapping from the legacy state if given), then activate the
    /// controller.
    fn check_active(&self, st: &mut State) {
        if st.fatal.is_some() || st.controller.is_active() {
            return;
        }
        let Some(s) = st.manager.as_ref().and_then(|m| m.status(CONTROLLER_GROUP)) else {
            return;
        };
        if !(s.role == Role::Leader && s.ready && st.applied == s.commit_index) {
            return;
        }
        if st.controller.image().cluster_id().is_none() {
            if !st.bootstrap.is_empty() {
                return;
            }
            let records = match &self.legacy {
                Some(l) => match bootstrap_records(l) {
                    Ok(r) => {
                        log::info!(
                            "controller: bootstrapping the metadata log from the single-node state ({} topics)",
                            l.topics.len()
                        );
                        r
                    }
                    Err(e) => {
                        self.fail(st, format!("the single-node state does not bootstrap: {e}"));
                        return;
                    }
                },
                None => {
                    // A new cluster: its id and the feature levels this build starts at.
                    let mut r = vec![Record::ClusterId {
                        cluster_id: random_cluster_id(),
                    }];
                    for (name, level) in sluice_meta::features::bootstrap_levels() {
                        r.push(Record::FeatureLevel { name, level });
                    }
                    r
                }
            };
            let batches = match codec::encode_batches(&records, BOOTSTRAP_ENTRY_BYTES_MAX) {
                Ok(b) if b.len() == 1 => b,
                Ok(b) => {
                    self.fail(
                        st,
                        format!(
                            "the single-node state is {} entries of the controller log, and its \
                             bootstrap must be one (atomic) entry",
                            b.len()
                        ),
                    );
                    return;
                }
                Err(e) => {
                    self.fail(st, format!("the bootstrap records do not encode: {e}"));
                    return;
                }
            };
            for b in batches {
                let token = ProposalToken(st.next_token);
                st.next_token += 1;
                st.bootstrap.push(token);
                let fx = self.propose(st, token, b);
                self.raft_fx(st, fx);
                if st.bootstrap.is_empty() {
                    return; // refused: tried again on the next check
                }
            }
            return;
        }
        log::info!("controller: node {} is the active controller", self.node_id);
        let now = self.now_ms() as i64;
        let fx = st.controller.become_active(now);
        self.ctrl_fx(st, fx);
        self.changed.notify();
    }

    /// The controller quorum as this leader sees it: voters with the index each has matched
    /// (this node: its log end), observers (registered non-voters) with the index each had
    /// applied when it last pulled from this node (-1 for one that never did).
    fn quorum_view(&self, st: &State) -> QuorumView {
        let m = st.manager.as_ref();
        let status = m.and_then(|m| m.status(CONTROLLER_GROUP));
        let progress = m
            .and_then(|m| m.progress(CONTROLLER_GROUP))
            .unwrap_or_default();
        let voters: Vec<QuorumReplica> = progress
            .iter()
            .map(|&(node, matched, _)| {
                let (fetch, caught_up) = st.quorum_seen.get(&node).copied().unwrap_or((-1, -1));
                // (A cluster of one runs its group under a fixed Raft id.)
                let node = if node == self.raft_id {
                    self.node_id
                } else {
                    node as i32
                };
                QuorumReplica {
                    node,
                    log_end_offset: matched as i64,
                    last_fetch_ms: fetch,
                    last_caught_up_ms: caught_up,
                }
            })
            .collect();
        let observers = st
            .controller
            .image()
            .brokers()
            .keys()
            .filter(|n| !voters.iter().any(|v| v.node == **n))
            .map(|&node| {
                let (log_end_offset, last_fetch_ms, last_caught_up_ms) = st
                    .observers_seen
                    .get(&(node as NodeId))
                    .copied()
                    .unwrap_or((-1, -1, -1));
                QuorumReplica {
                    node,
                    log_end_offset,
                    last_fetch_ms,
                    last_caught_up_ms,
                }
            })
            .collect();
        QuorumView {
            leader: self.node_id,
            epoch: status.map_or(-1, |s| s.term.min(i32::MAX as u64) as i32),
            high_watermark: status.map_or(-1, |s| s.commit_index as i64),
            voters,
            observers,
        }
    }

    /// Runs `cmd` on the local controller, which must be active; waits for the answer
    /// until `deadline` (`None` if it did not come).
    async fn run_local(&self, cmd: Command, deadline: Instant) -> Option<Answer> {
        if matches!(cmd, Command::DescribeQuorum) {
            let st = self.st.borrow();
            return Some(if st.controller.is_active() {
                Answer::DescribeQuorum(Ok(self.quorum_view(&st)))
            } else {
                cmd.fail(
                    code::NOT_CONTROLLER,
                    "This node is not the active controller.",
                )
            });
        }
        if matches!(cmd, Command::MetadataIndex) {
            // A read: answered at once, nothing to propose. Every change this controller
            // acknowledged was applied before its answer went out.
            let st = self.st.borrow();
            return Some(if st.controller.is_active() {
                Answer::MetadataIndex(Ok(st.applied))
            } else {
                cmd.fail(
                    code::NOT_CONTROLLER,
                    "This node is not the active controller.",
                )
            });
        }
        let slot = Rc::new(Slot::default());
        let token;
        {
            let mut st = self.st.borrow_mut();
            token = ReplyToken(st.next_reply);
            st.next_reply += 1;
            st.replies.insert(token, slot.clone());
            let now = self.now_ms() as i64;
            let c = &mut st.controller;
            let fx = match cmd {
                Command::CreateTopics {
                    topics,
                    validate_only,
                } => c.create_topics(token, topics, validate_only),
                Command::DeleteTopics { names } => c.delete_topics(token, names),
                Command::CreatePartitions {
                    topics,
                    validate_only,
                } => c.create_partitions(token, topics, validate_only),
                Command::AlterConfigs {
                    changes,
                    validate_only,
                } => c.alter_configs(token, changes, validate_only),
                Command::AllocateProducerIds { node, epoch } => {
                    c.allocate_producer_ids(token, node, epoch)
                }
                Command::RegisterBroker(r) => c.register_broker(token, now, r),
                Command::BrokerHeartbeat {
                    node,
                    epoch,
                    caught_up,
                } => c.broker_heartbeat(token, now, node, epoch, caught_up),
                Command::AlterPartitionReassignments { partitions } => {
                    c.alter_partition_reassignments(token, partitions)
                }
                Command::ReassignmentComplete {
                    topic,
                    partition,
                    revision,
                } => c.reassignment_complete(token, topic, partition, revision),
                Command::MetadataIndex => unreachable!("answered above"),
                Command::AlterScram { changes } => c.alter_scram(token, changes),
                Command::CreateAcls { bindings } => c.create_acls(token, bindings),
                Command::DeleteAcls { filters } => c.delete_acls(token, filters),
                Command::AlterQuotas {
                    entries,
                    validate_only,
                } => c.alter_client_quotas(token, entries, validate_only),
                Command::UpdateFeatures {
                    updates,
                    validate_only,
                } => c.update_features(token, self.node_id, updates, validate_only),
                Command::DescribeQuorum => unreachable!("answered above"),
                // Token times are wall-clock milliseconds (clients see them).
                Command::CreateToken(req) => c.create_token(token, req, wall_ms()),
                Command::RenewToken {
                    token_id,
                    principal,
                    period_ms,
                } => c.token_expiry(token, &token_id, &principal, period_ms, false, wall_ms()),
                Command::ExpireToken {
                    token_id,
                    principal,
                    period_ms,
                } => c.token_expiry(token, &token_id, &principal, period_ms, true, wall_ms()),
            };
            self.ctrl_fx(&mut st, fx);
        }
        let answer = or(async { Some(slot.take().await) }, async {
            sleep_until(deadline).await;
            None
        })
        .await;
        if answer.is_none() {
            // A late answer is dropped rather than held for nobody.
            self.st.borrow_mut().replies.remove(&token);
        }
        answer
    }

    /// Where to send a command this node cannot run: the believed leader, else the voters
    /// in turn (a node without a replica learns the leader from their answers).
    fn target(&self, st: &mut State) -> Option<u64> {
        if let Some(l) = st.leader.filter(|&l| l != self.raft_id) {
            return Some(l);
        }
        if self.is_voter || self.voters.is_empty() {
            return None; // a voter waits for its own election to tell it
        }
        let v = self.voters[st.next_voter % self.voters.len()].id;
        st.next_voter += 1;
        Some(v)
    }

    /// Runs `cmd` on the active controller, here or forwarded, retrying NOT_CONTROLLER and
    /// unreachable controllers until `timeout`; then the last NOT_CONTROLLER answer, or
    /// REQUEST_TIMED_OUT.
    async fn command(&self, cmd: Command, timeout: Duration) -> Answer {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(f) = self.st.borrow().fatal.clone() {
                return cmd.fail(
                    code::UNKNOWN_SERVER_ERROR,
                    &format!("The controller runtime stopped: {f}"),
                );
            }
            if self.closed.get() {
                return cmd.fail(code::NOT_CONTROLLER, "This node is shutting down.");
            }
            let active = self.st.borrow().controller.is_active();
            if active {
                match self.run_local(cmd.clone(), deadline).await {
                    Some(a) if !not_controller(&a) => return a,
                    Some(a) => last = Some(a),
                    None => break,
                }
            } else {
                let target = self.target(&mut self.st.borrow_mut());
                let t = self.transport();
                if let (Some(to), Some(t)) = (target, t) {
                    if t.is_connected(to) {
                        let left = deadline.saturating_duration_since(Instant::now());
                        let r = t
                            .request(
                                to,
                                cmd.method(),
                                cmd.encode(),
                                left.min(FORWARD_TRY_TIMEOUT),
                            )
                            .await;
                        match r {
                            Ok(resp) if resp.status == sluice_rpc::status::OK => {
                                match wire::decode_answer(&resp.body) {
                                    Ok(a) if !not_controller(&a) => return a,
                                    Ok(a) => last = Some(a),
                                    Err(e) => log::warn!("controller: answer from node {to}: {e}"),
                                }
                            }
                            Ok(resp) if resp.status == status::NOT_CONTROLLER => {
                                let hint = wire::decode_u64(&resp.body).unwrap_or(0);
                                if !self.is_voter {
                                    let mut st = self.st.borrow_mut();
                                    st.leader = (hint != 0 && hint != to).then_some(hint);
                                }
                                last =
                                    Some(cmd.fail(
                                        code::NOT_CONTROLLER,
                                        "No active controller answered.",
                                    ));
                            }
                            Ok(resp) => {
                                log::debug!("controller: node {to} answered status {}", resp.status)
                            }
                            Err(e) => {
                                log::debug!("controller: forwarding to node {to}: {e}");
                                if !self.is_voter {
                                    self.st.borrow_mut().leader = None;
                                }
                            }
                        }
                    } else if !self.is_voter {
                        // Try another voter next time.
                        self.st.borrow_mut().leader = None;
                    }
                }
            }
            if Instant::now() + RETRY_BACKOFF >= deadline {
                break;
            }
            let g = self.changed.generation();
            or(
                self.changed.changed(g),
                glommio::timer::sleep(RETRY_BACKOFF),
            )
            .await;
            if Instant::now() >= deadline {
                break;
            }
        }
        last.unwrap_or_else(|| {
            cmd.fail(
                REQUEST_TIMED_OUT,
                "No active controller answered within the request timeout.",
            )
        })
    }

    /// Serves a pull: committed entries after `req.after` from the local replica.
    async fn serve_fetch(&self, req: FetchRequest) -> Response {
        let deadline =
            Instant::now() + Duration::from_millis(u64::from(req.wait_ms.min(FETCH_WAIT_MS)));
        loop {
            let g = self.changed.generation();
            {
                let st = self.st.borrow();
                if st.fatal.is_some() || st.manager.is_none() {
                    return Response {
                        status: status::UNAVAILABLE,
                        body: Bytes::new(),
                    };
                }
                if st.applied > req.after || Instant::now() >= deadline || self.closed.get() {
                    let log = st
                        .manager
                        .as_ref()
                        .and_then(|m| m.log(CONTROLLER_GROUP))
                        .expect("a voter holds the controller group");
                    let max = req.max_bytes.min(FETCH_BYTES_MAX) as usize;
                    let mut entries = Vec::new();
                    let mut bytes = 0;
                    let mut after = req.after;
                    // Entries a snapshot compacted away: the image as of the log start
                    // instead, then the entries after it.
                    let (start, _) = log.start();
                    let snapshot = (after < start && start <= st.applied).then(|| {
                        after = start;
                        (start, log.snapshot_payload().clone())
                    });
                    if snapshot.as_ref().is_some_and(|(_, p)| p.is_empty()) {
                        return Response {
                            status: status::UNAVAILABLE,
                            body: Bytes::new(),
                        };
                    }
                    let mut last = after.min(st.applied);
                    // With a snapshot (up to METADATA_SNAPSHOT_BYTES_MAX), no entries: the
                    // answer stays within one frame; the next pull gets them.
                    let upto = if snapshot.is_some() {
                        after
                    } else {
                        st.applied
                    };
                    for i in after.saturating_add(1)..=upto {
                        let Some(e) = log.entry(i) else { break };
                        if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                            if !entries.is_empty() && bytes + e.data.len() > max {
                                break;
                            }
                            bytes += e.data.len();
                            entries.push((i, e.data.clone()));
                        }
                        last = i;
                    }
                    let resp = FetchResponse {
                        leader: st.leader.unwrap_or(0),
                        last,
                        entries,
                        snapshot,
                    };
                    return Response::ok(resp.encode());
                }
            }
            or(self.changed.changed(g), sleep_until(deadline)).await;
        }
    }

    async fn serve_command(&self, cmd: Command) -> Response {
        let active = self.st.borrow().controller.is_active();
        if !active {
            let hint = self
                .st
                .borrow()
                .leader
                .filter(|&l| l != self.raft_id)
                .unwrap_or(0);
            return Response {
                status: status::NOT_CONTROLLER,
                body: wire::encode_u64(hint),
            };
        }
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        match self.run_local(cmd.clone(), deadline).await {
            Some(a) => Response::ok(wire::encode_answer(&a)),
            None => Response::ok(wire::encode_answer(
                &cmd.fail(REQUEST_TIMED_OUT, "The change did not commit in time."),
            )),
        }
    }
}

/// What the node's owner does with requests in the extension method range
/// (`wire::method::EXTENSION_MIN..=EXTENSION_MAX`), on the node's executor. `from` is the
/// sending node's id as its connection authenticated it. The future runs in the
/// transport's task queue (`ClusterConfig::rpc_task_queue`, the broker's Raft queue): work
/// longer than a few milliseconds belongs in a task of another queue.
pub trait Extension: 'static {
    fn request(&self, from: NodeId, request: Request) -> LocalBoxFuture<Response>;
}

struct RpcHandler {
    inner: Weak<Inner>,
}

impl Handler for RpcHandler {
    fn raft(&self, envelope: sluice_raft::Envelope) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        if inner.closed.get() {
            return;
        }
        // One connection carries every group's messages between two nodes: the
        // controller's go to its manager here, the partition groups' to the owner.
        let (controller, partitions) = split_controller(envelope);
        if let Some(env) = partitions {
            let sink = inner.partition_raft.borrow().clone();
            if let Some(sink) = sink {
                sink(env);
            }
        }
        let Some(envelope) = controller else {
            return;
        };
        let mut st = inner.st.borrow_mut();
        if let Some(m) = st.manager.as_mut() {
            let fx = m.step(envelope);
            inner.raft_fx(&mut st, fx);
        }
    }

    fn directory_replaced(&self, by: NodeId, known: sluice_rpc::DirectoryId) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        let mut st = inner.st.borrow_mut();
        let msg = format!(
            "node {by} knows node {} by data directory {}, but {} holds directory {}: this \
             node's data directory was wiped or replaced since it registered. A node that \
             forgot what it acknowledged must not rejoin under the same node id: restore \
             the directory, or reassign its replicas and start it with another --node-id",
            inner.node_id,
            crate::identity::uuid_to_base64(&known),
            inner.data_dir.display(),
            crate::identity::uuid_to_base64(&inner.directory),
        );
        inner.fail(&mut st, msg);
    }

    fn request(&self, from: NodeId, request: Request) -> LocalBoxFuture<Response> {
        let inner = self.inner.clone();
        Box::pin(async move {
            let unavailable = Response {
                status: status::UNAVAILABLE,
                body: Bytes::new(),
            };
            let Some(inner) = inner.upgrade() else {
                return unavailable;
            };
            if inner.closed.get() {
                return unavailable;
            }
            let malformed = |e: wire::WireError| Response {
                status: status::MALFORMED,
                body: Bytes::from(e.to_string()),
            };
            if request.method == method::FETCH_COMMITTED {
                return match FetchRequest::decode(&request.body) {
                    Ok(req) => {
                        inner.note_pull(from, req.after);
                        inner.serve_fetch(req).await
                    }
                    Err(e) => malformed(e),
                };
            }
            if request.method == method::LEADER_REPORTS {
                return match inner.gossip() {
                    Some(g) => g.serve(&request.body),
                    None => unavailable,
                };
            }
            if request.method >= method::EXTENSION_MIN {
                let ext = inner.extension.borrow().clone();
                drop(inner);
                return match ext {
                    Some(ext) => ext.request(from, request).await,
                    None => Response {
                        status: sluice_rpc::status::UNKNOWN_METHOD,
                        body: Bytes::new(),
                    },
                };
            }
            match Command::decode(request.method, &request.body) {
                Ok(cmd) => inner.serve_command(cmd).await,
                Err(wire::WireError("unknown method")) => Response {
                    status: sluice_rpc::status::UNKNOWN_METHOD,
                    body: Bytes::new(),
                },
                Err(e) => malformed(e),
            }
        })
    }
}

/// Writes what the manager asked to persist, syncs, and reports it: one sync covers every
/// write handed over before it (group commit). A queued snapshot file is written (durably)
/// before the records handed over with it; after a snapshot, the next pass rewrites the
/// file as the log now stands (without the compacted entries, with the writes queued
/// meanwhile, which it then need not append).
async fn wal_task(inner: Rc<Inner>, mut wal: WalFile) {
    loop {
        let g = inner.wal_kick.generation();
        if inner.closed.get() {
            return;
        }
        let (snap, buf, seq, rewrite) = {
            let mut st = inner.st.borrow_mut();
            let snap = st.wal_snapshot.take();
            let buf = std::mem::take(&mut st.wal_buf);
            // The log in memory is what replaying the file and then `buf` (every write up
            // to `wal_seq`) gives: encoded now, it replaces both, so a rewrite is never put
            // off by writes that keep coming. The snapshot file (if queued) is written first.
            let rewrite = std::mem::take(&mut st.wal_rewrite)
                .then(|| {
                    let log = st.manager.as_ref()?.log(CONTROLLER_GROUP)?;
                    let mut out = Vec::new();
                    sluice_raft::wal::encode_log(CONTROLLER_GROUP, log, &mut out)?;
                    Some(out)
                })
                .flatten();
            (snap, buf, st.wal_seq, rewrite)
        };
        if snap.is_none() && buf.is_empty() && rewrite.is_none() {
            inner.wal_kick.changed(g).await;
            continue;
        }
        let r = async {
            if let Some(file) = snap {
                let dir = inner.data_dir.join(CLUSTER_DIR);
                crate::wal::write_atomic(&dir, snapshot::SNAPSHOT_FILE, file).await?;
            }
            if let Some(bytes) = rewrite {
                // `buf`'s effects are in `bytes`: it is dropped.
                let before = wal.len();
                wal = WalFile::rewrite(&inner.data_dir, bytes).await?;
                log::debug!(
                    "controller: WAL rewritten after a snapshot: {before} -> {} bytes",
                    wal.len()
                );
            } else if !buf.is_empty() {
                wal.append(buf).await?;
                wal.sync().await?;
            }
            Ok::<(), io::Error>(())
        }
        .await;
        let mut st = inner.st.borrow_mut();
        if let Err(e) = r {
            // A failed write or sync leaves unknown what is durable: stop, as Kafka does
            // on a log-dir failure of its metadata log.
            inner.fail(&mut st, format!("controller WAL: {e}"));
            return;
        }
        if inner.closed.get() {
            return;
        }
        if let Some(m) = st.manager.as_mut() {
            let fx = m.persisted(seq);
            inner.raft_fx(&mut st, fx);
        }
    }
}

/// Raft ticks, liveness reports from the transport, and the controller's own timer.
async fn tick_task(inner: Rc<Inner>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(TICK_MS)).await;
        if inner.closed.get() {
            return;
        }
        let t = inner.transport();
        let now = inner.now_ms();
        let mut st = inner.st.borrow_mut();
        if st.fatal.is_some() {
            return;
        }
        if let Some(t) = &t {
            for v in &inner.voters {
                if v.id == inner.raft_id {
                    continue;
                }
                let up = t.is_connected(v.id);
                if st.alive.insert(v.id, up) != Some(up) {
                    if let Some(m) = st.manager.as_mut() {
                        m.set_node_alive(v.id, up);
                    }
                }
            }
        }
        let fx = st.manager.as_mut().map(|m| m.tick(now)).unwrap_or_default();
        inner.raft_fx(&mut st, fx);
        sample_quorum(&mut st);
        inner.maybe_snapshot(&mut st);
        if st.ctrl_tick_at.is_some_and(|at| at <= now as i64) {
            st.ctrl_tick_at = None;
            let fx = st.controller.tick(now as i64);
            inner.ctrl_fx(&mut st, fx);
        }
        // Expired delegation tokens (a no-op until the earliest expiry).
        let fx = st.controller.sweep_tokens(wall_ms());
        inner.ctrl_fx(&mut st, fx);
        inner.check_active(&mut st);
    }
}

/// While leading the controller group: notes which voters are active and caught up now.
fn sample_quorum(st: &mut State) {
    let Some(m) = st.manager.as_ref() else {
        return;
    };
    let (Some(progress), Some(status)) = (m.progress(CONTROLLER_GROUP), m.status(CONTROLLER_GROUP))
    else {
        st.quorum_seen.clear();
        return;
    };
    let now = wall_ms();
    for (node, matched, active) in progress {
        let seen = st.quorum_seen.entry(node).or_insert((-1, -1));
        if active {
            seen.0 = now;
        }
        if matched >= status.last_index {
            seen.1 = now;
        }
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(-1, |d| d.as_millis() as i64)
}

/// A node without a replica: pulls committed entries from the voters and applies them.
async fn pull_task(inner: Rc<Inner>) {
    let Some(t) = inner.transport() else {
        return;
    };
    loop {
        if inner.closed.get() || inner.st.borrow().fatal.is_some() {
            return;
        }
        let (to, after) = {
            let mut st = inner.st.borrow_mut();
            let to = inner.target(&mut st);
            (to, st.applied)
        };
        let Some(to) = to.filter(|&to| t.is_connected(to)) else {
            inner.st.borrow_mut().leader = None;
            glommio::timer::sleep(RETRY_BACKOFF).await;
            continue;
        };
        let req = FetchRequest {
            after,
            max_bytes: FETCH_BYTES_MAX,
            wait_ms: FETCH_WAIT_MS,
        };
        let timeout = Duration::from_millis(u64::from(FETCH_WAIT_MS)) + FORWARD_TRY_TIMEOUT;
        let resp = t
            .request(to, method::FETCH_COMMITTED, req.encode(), timeout)
            .await;
        let ok = match resp {
            Ok(r) if r.status == sluice_rpc::status::OK => match FetchResponse::decode(&r.body) {
                Ok(f) => {
                    let mut st = inner.st.borrow_mut();
                    st.leader = (f.leader != 0).then_some(f.leader);
                    if st.applied == after {
                        if let Some((index, payload)) = &f.snapshot {
                            if *index > st.applied {
                                match snapshot::decode_payload(payload) {
                                    Ok(image) => {
                                        log::info!(
                                            "controller: caught up from node {to}'s metadata snapshot at index {index}"
                                        );
                                        inner.install_image(&mut st, *index, image);
                                    }
                                    Err(e) => {
                                        inner.fail(
                                            &mut st,
                                            format!("node {to}'s metadata snapshot at index {index}: {e}"),
                                        );
                                        return;
                                    }
                                }
                            }
                        }
                        for (i, data) in &f.entries {
                            if *i <= st.applied {
                                continue;
                            }
                            st.applied = *i;
                            inner.apply_batch(&mut st, *i, data, None);
                        }
                        if f.last > st.applied {
                            st.applied = f.last;
                        }
                        inner.changed.notify();
                    }
                    true
                }
                Err(e) => {
                    log::warn!("controller: pull from node {to}: {e}");
                    false
                }
            },
            Ok(r) => {
                log::debug!("controller: pull from node {to}: status {}", r.status);
                false
            }
            Err(e) => {
                log::debug!("controller: pull from node {to}: {e}");
                false
            }
        };
        if !ok {
            inner.st.borrow_mut().leader = None;
            glommio::timer::sleep(RETRY_BACKOFF).await;
        }
    }
}

/// Registers this node with the active controller, then heartbeats every
/// [`HEARTBEAT_INTERVAL`]; registers again when the controller no longer knows the epoch.
async fn register_task(inner: Rc<Inner>) {
    let incarnation = if inner.voters.is_empty() {
        solo_incarnation(&inner)
    } else {
        rand::random()
    };
    loop {
        if inner.closed.get() {
            return;
        }
        let epoch = inner.st.borrow().epoch;
        match epoch {
            None => {
                let reg = Registration {
                    node: inner.node_id,
                    incarnation,
                    directory: inner.directory,
                    kafka: inner.kafka.clone(),
                    listeners: inner.listeners.clone(),
                    rpc: inner.rpc.clone(),
                    rack: None,
                    features: sluice_meta::features::supported(),
                };
                match inner
                    .command(Command::RegisterBroker(reg), HEARTBEAT_INTERVAL)
                    .await
                {
                    Answer::RegisterBroker(Ok(epoch)) => {
                        log::info!(
                            "controller: node {} registered (epoch {epoch})",
                            inner.node_id
                        );
                        inner.st.borrow_mut().epoch = Some(epoch);
                        inner.changed.notify();
                        // Heartbeat once the image shows the registration (it unfences).
                        wait_registered(&inner, epoch).await;
                        continue;
                    }
                    Answer::RegisterBroker(Err(e)) if e.code == code::INVALID_REGISTRATION => {
                        // Refused for good (its directory was replaced): stop, loudly.
                        let mut st = inner.st.borrow_mut();
                        inner.fail(&mut st, format!("registration refused: {}", e.message));
                        return;
                    }
                    Answer::RegisterBroker(Err(e)) => {
                        log::debug!("controller: registration: {}", e.message);
                    }
                    other => log::warn!("controller: registration answered {other:?}"),
                }
                glommio::timer::sleep(RETRY_BACKOFF * 5).await;
            }
            Some(epoch) => {
                let caught_up = inner
                    .st
                    .borrow()
                    .controller
                    .image()
                    .broker(inner.node_id)
                    .is_some_and(|b| b.epoch == epoch);
                let cmd = Command::BrokerHeartbeat {
                    node: inner.node_id,
                    epoch,
                    caught_up,
                };
                match inner.command(cmd, HEARTBEAT_INTERVAL).await {
                    Answer::BrokerHeartbeat(Err(e))
                        if e.code == code::STALE_BROKER_EPOCH
                            || e.code == code::BROKER_ID_NOT_REGISTERED =>
                    {
                        log::warn!(
                            "controller: heartbeat refused ({}): registering again",
                            e.message
                        );
                        inner.st.borrow_mut().epoch = None;
                        continue;
                    }
                    _ => {}
                }
                glommio::timer::sleep(HEARTBEAT_INTERVAL).await;
            }
        }
    }
}

/// The incarnation of a cluster of one: the same on every start with the same node id and
/// endpoints. A new incarnation is refused (DUPLICATE_BROKER_REGISTRATION) until the old
/// one's session expires (9 s), which guards a cluster against two processes with one
/// node id; a cluster of one has no other process to guard against (no transport), and
/// would otherwise wait out its own last session on every restart. With the same
/// incarnation the controller takes the registration as a retry and keeps its epoch; a
/// changed endpoint makes a new incarnation, so the new address is registered.
fn solo_incarnation(inner: &Inner) -> [u8; 16] {
    let text = format!(
        "sluice-solo/{}/{}:{}/{}:{}",
        inner.node_id, inner.kafka.host, inner.kafka.port, inner.rpc.host, inner.rpc.port
    );
    let mut out = [0u8; 16];
    for (i, half) in out.chunks_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ i as u64;
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        half.copy_from_slice(&h.to_be_bytes());
    }
    out
}

async fn wait_registered(inner: &Inner, epoch: u64) {
    let deadline = Instant::now() + HEARTBEAT_INTERVAL;
    loop {
        let g = inner.changed.generation();
        let seen = inner
            .st
            .borrow()
            .controller
            .image()
            .broker(inner.node_id)
            .is_some_and(|b| b.epoch == epoch);
        if seen || Instant::now() >= deadline || inner.closed.get() {
            return;
        }
        or(inner.changed.changed(g), sleep_until(deadline)).await;
    }
}

/// Keeps the dissemination's peers equal to the other nodes known: the voters, and every
/// broker the image has registered (dialed at its registered rpc address).
async fn members_task(inner: Rc<Inner>, g: Rc<Gossip>) {
    let mut last: Option<BTreeMap<u64, Member>> = None;
    loop {
        let gen = inner.changed.generation();
        if inner.closed.get() {
            return;
        }
        let mut want = BTreeMap::new();
        for v in &inner.voters {
            if v.id != inner.raft_id {
                want.insert(v.id, Member::Voter);
            }
        }
        {
            let st = inner.st.borrow();
            for (&node, b) in st.controller.image().brokers() {
                let Ok(id) = u64::try_from(node) else {
                    continue;
                };
                if id == 0 || id == inner.raft_id || want.contains_key(&id) {
                    continue;
                }
                // Registered from `--rpc-listen`, so an IP address; an unspecified one
                // (0.0.0.0) names no host another node could dial.
                match b.rpc.host.parse::<IpAddr>() {
                    Ok(ip) if !ip.is_unspecified() => {
                        want.insert(id, Member::Broker(SocketAddr::new(ip, b.rpc.port)));
                    }
                    _ => {
                        if last.as_ref().is_none_or(|l| l.contains_key(&id)) {
                            log::warn!(
                                "gossip: node {node} registered rpc address {}:{}, which no other node can dial: it gets no leader reports",
                                b.rpc.host, b.rpc.port
                            );
                        }
                    }
                }
            }
        }
        if last.as_ref() != Some(&want) {
            g.set_members(&want);
            last = Some(want);
        }
        inner.changed.changed(gen).await;
    }
}

/// An image encoded for the snapshot at an index (see `Inner::maybe_snapshot`).
type EncodedSnapshot = (u64, Result<Bytes, String>);

/// Queues the snapshot file of `index` for the WAL task (written before any WAL write
/// queued after it, then the WAL rewritten behind it) and makes it this node's latest.
fn queue_snapshot(st: &mut State, index: u64, term: u64, offset: i64, payload: Bytes) {
    st.wal_snapshot = Some(
        SnapshotFile {
            index,
            term,
            offset,
            payload,
        }
        .encode(),
    );
    st.wal_rewrite = true;
    st.snap_index = index;
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{Entry, HardState};
    use sluice_raft::log::records_context;
    use sluice_raft::ReplicaLog;

    fn log_of(last: u64, commit: u64) -> ReplicaLog {
        let mut log = ReplicaLog::new(&[1, 2, 3]);
        let entries: Vec<Entry> = (1..=last)
            .map(|i| Entry {
                index: i,
                term: 1,
                data: Bytes::from_static(b"x"),
                context: records_context(1),
                ..Default::default()
            })
            .collect();
        log.append(&entries);
        log.set_hard_state(HardState {
            term: 1,
            vote: 1,
            commit,
            ..Default::default()
        });
        log
    }

    fn snap(index: u64, term: u64, offset: i64) -> SnapshotFile {
        SnapshotFile {
            index,
            term,
            offset,
            payload: Bytes::from_static(b"p"),
        }
    }

    /// The states a crash can leave beside a snapshot file, and damage.
    #[test]
    fn a_recovered_log_is_made_to_agree_with_its_snapshot() {
        // The WAL was not compacted yet (a crash after the snapshot's rename): compacted now,
        // and the snapshot's entries count as committed whatever the hard state says.
        let mut log = log_of(10, 5);
        let offset = log.next_offset_after(7);
        assert!(restore_snapshot(&mut log, &snap(7, 1, offset)).unwrap());
        assert_eq!((log.start(), log.last_index()), ((7, 1), 10));
        assert_eq!(log.hard_state().commit, 7);
        // Already compacted there: nothing to do.
        assert!(!restore_snapshot(&mut log, &snap(7, 1, offset)).unwrap());
        // A leader's snapshot past the WAL's end (an install cut short): the log restarts.
        let mut log = log_of(10, 10);
        assert!(restore_snapshot(&mut log, &snap(15, 2, 15)).unwrap());
        assert_eq!(
            (log.start(), log.first_index(), log.last_index()),
            ((15, 2), 16, 15)
        );
        // Another term at the snapshot's index (an uncommitted suffix): restarted too.
        let mut log = log_of(10, 5);
        assert!(restore_snapshot(&mut log, &snap(8, 3, 8)).unwrap());
        assert_eq!(log.start(), (8, 3));
        // A snapshot older than the log's start, or at it in another term: damage.
        let mut log = log_of(10, 10);
        log.compact_before(8);
        assert!(restore_snapshot(&mut log, &snap(5, 1, 5)).is_err());
        assert!(restore_snapshot(&mut log, &snap(7, 9, 7)).is_err());
        // An offset that disagrees with the WAL's: damage.
        let mut log = log_of(10, 10);
        assert!(restore_snapshot(&mut log, &snap(6, 1, 1000)).is_err());
        // An index far beyond any log: damage, not an overflow.
        let mut log = log_of(10, 10);
        let e = restore_snapshot(&mut log, &snap(1 << 62, 1, 5)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        // Another term at a committed index: the commit would be past the restarted log.
        let mut log = log_of(10, 10);
        let e = restore_snapshot(&mut log, &snap(8, 3, 8)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
