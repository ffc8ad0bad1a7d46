//! The log under a coordinator: one `__consumer_offsets` or `__transaction_state` partition
//! on this shard, how a coordinator's records reach it (appended to a single replica's log,
//! or proposed to the partition's Raft group) and become durable, and whether this replica
//! serves it (leading, loaded, reload generations, the one pending timer). `group_host`
//! and `txn_host` each drive their sans-IO coordinator on top of one.
//!
//! A single-replica partition serves at once. A replicated one serves only while its
//! replica leads (`Replication::watch_leadership` calls `set_leading`), and loads once
//! everything its leader proposed before has settled, so no write still in flight commits
//! behind the rebuilt state's back.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use sluice_raft::ProposeError;
use sluice_rpc::sync::Event;
use sluice_shard::DmaStorage;
use sluice_storage::PartitionLog;

use crate::kerr::{COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR};
use crate::replication::{Origin, Proposal, Replication, Submitted};
use crate::shard::now_ms;

/// Kafka's `offsets.commit.timeout.ms` (and `transaction.state.log` writes use the same
/// bound): how long a replicated write may take to commit before it counts as failed
/// (COORDINATOR_NOT_AVAILABLE, and the coordinator reloads from the log).
pub const COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Bytes per read while a coordinator replays its partition.
const REPLAY_READ_BYTES: usize = 1 << 20;

/// Where a coordinator's records go.
enum Writer {
    /// A single-replica partition: appended to its log, durable after the flusher's fsync.
    Local,
    /// A replicated partition: proposed to its Raft group, durable once committed.
    Raft {
        rep: Rc<Replication>,
        group: sluice_raft::GroupId,
    },
}

/// A write under way (see [`CoordLog::write`]).
pub enum Pending {
    /// Appended locally; durable once the log's flushed offset passes this one.
    Appended(i64),
    Proposed(Rc<Proposal>),
    Failed(WriteFailed),
}

/// A coordinator write that did not become durable, and the error its requests get. As in
/// Kafka's coordinators: a replica that no longer leads the partition (or whose storage
/// failed) says NOT_COORDINATOR, so the client looks the coordinator up again; a write that
/// may succeed here on a retry (timed out, refused for back-pressure, too few replicas)
/// says COORDINATOR_NOT_AVAILABLE.
pub struct WriteFailed {
    pub why: String,
    pub code: i16,
}

impl WriteFailed {
    fn new(why: impl Into<String>, code: i16) -> WriteFailed {
        WriteFailed {
            why: why.into(),
            code,
        }
    }

    /// Kafka's mapping of a failed local append: a storage failure or a partition that is
    /// no longer led here is NOT_COORDINATOR, a deleted partition COORDINATOR_NOT_AVAILABLE,
    /// anything else (a batch too large, damage) UNKNOWN_SERVER_ERROR.
    fn storage(e: &sluice_storage::StorageError) -> WriteFailed {
        let code = match e.kafka_error_code() {
            crate::kerr::KAFKA_STORAGE_ERROR | crate::kerr::NOT_LEADER_OR_FOLLOWER => {
                NOT_COORDINATOR
            }
            crate::kerr::UNKNOWN_TOPIC_OR_PARTITION => COORDINATOR_NOT_AVAILABLE,
            _ => crate::kerr::UNKNOWN_SERVER_ERROR,
        };
        WriteFailed::new(e.to_string(), code)
    }
}

/// How this replica serves its coordinator now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Loaded,
    /// Leading (or elected), still loading: Kafka answers COORDINATOR_LOAD_IN_PROGRESS.
    Loading,
    /// Not leading: another node coordinates (NOT_COORDINATOR).
    Elsewhere,
}

/// One coordinator partition's log and serving state.
pub struct CoordLog {
    /// The topic's name, for logs.
    topic: &'static str,
    pub topic_id: [u8; 16],
    pub partition: i32,
    log: RefCell<Rc<PartitionLog<DmaStorage>>>,
    writer: Writer,
    /// Serving as the partition's leader (always, for a single replica): only then are
    /// requests run here; other replicas answer NOT_COORDINATOR.
    leading: Cell<bool>,
    loaded: Cell<bool>,
    /// Bumped whenever what the slot serves changes (leadership, a reload): a load or a
    /// write's failure handling from before sees it and backs off.
    generation: Cell<u64>,
    /// Notified with every bump of `generation`, so a reload waiting for its writes to
    /// settle gives up at once.
    moved_on: Event,
    /// The earliest pending timer (i64::MAX: none).
    next_tick: Cell<i64>,
}

impl CoordLog {
    /// A single-replica partition's: it serves at once.
    pub fn local(
        topic: &'static str,
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
    ) -> CoordLog {
        Self::new(topic, topic_id, partition, log, Writer::Local)
    }

    /// A replicated partition's replica: it serves only while [`Self::set_leading`] says so.
    pub fn replicated(
        topic: &'static str,
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
        rep: Rc<Replication>,
        group: sluice_raft::GroupId,
    ) -> CoordLog {
        Self::new(topic, topic_id, partition, log, Writer::Raft { rep, group })
    }

    fn new(
        topic: &'static str,
        topic_id: [u8; 16],
        partition: i32,
        log: Rc<PartitionLog<DmaStorage>>,
        writer: Writer,
    ) -> CoordLog {
        let leading = matches!(writer, Writer::Local);
        CoordLog {
            topic,
            topic_id,
            partition,
            log: RefCell::new(log),
            writer,
            leading: Cell::new(leading),
            loaded: Cell::new(false),
            generation: Cell::new(0),
            moved_on: Event::default(),
            next_tick: Cell::new(i64::MAX),
        }
    }

    /// `topic-partition`, for logs.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }

    pub fn log(&self) -> Rc<PartitionLog<DmaStorage>> {
        self.log.borrow().clone()
    }

    /// The partition's log was replaced (a snapshot reset this replica).
    pub fn replace_log(&self, log: Rc<PartitionLog<DmaStorage>>) {
        *self.log.borrow_mut() = log;
    }

    pub fn is_leading(&self) -> bool {
        self.leading.get()
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.set(leading);
    }

    /// This replica started (`Some(term)`) or stopped (`None`) serving as the partition's
    /// leader (`Replication::watch_leadership`): logs it, and marks it leading when it
    /// starts. True when the coordinator of its `what` should now load, false when it
    /// should unload.
    pub fn leadership(&self, term: Option<u64>, what: &str) -> bool {
        match term {
            Some(term) => {
                log::info!(
                    "{}: leading in term {term}: loading its {what}",
                    self.name()
                );
                self.leading.set(true);
                true
            }
            None => {
                if self.leading.get() {
                    log::info!(
                        "{}: no longer leading: its {what} are unloaded",
                        self.name()
                    );
                }
                false
            }
        }
    }

    /// Leading and loaded: requests run here.
    pub fn is_serving(&self) -> bool {
        self.leading.get() && self.loaded.get()
    }

    pub fn state(&self) -> State {
        if self.leading.get() {
            return if self.loaded.get() {
                State::Loaded
            } else {
                State::Loading
            };
        }
        match &self.writer {
            // Raft elected this replica, which loads once its term's first entry committed
            // (Kafka answers LOAD_IN_PROGRESS while a new coordinator loads).
            Writer::Raft { rep, group }
                if rep
                    .status(*group)
                    .is_some_and(|s| s.role == sluice_raft::Role::Leader) =>
            {
                State::Loading
            }
            _ => State::Elsewhere,
        }
    }

    /// The partition leader epoch this replica serves in: a transaction coordinator's epoch
    /// (markers carry it, so partitions refuse a deposed coordinator's).
    pub fn leader_epoch(&self) -> i32 {
        match &self.writer {
            Writer::Local => self.log().leader_epoch(),
            Writer::Raft { rep, group } => rep
                .status(*group)
                .and_then(|s| sluice_meta::leaders::epoch_of_term(s.term))
                .unwrap_or(-1),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Starts a new generation in which nothing is loaded (an unload, or a reload's start)
    /// and returns it: loads and write follow-ups of earlier generations back off.
    pub fn next_generation(&self) -> u64 {
        let generation = self.generation.get() + 1;
        self.generation.set(generation);
        self.moved_on.notify();
        self.loaded.set(false);
        self.next_tick.set(i64::MAX);
        generation
    }

    /// Marks the load of `generation` done (false, and nothing marked, if the slot moved on
    /// or stopped leading meanwhile).
    pub fn finish_load(&self, generation: u64) -> bool {
        if self.generation.get() != generation || !self.leading.get() {
            return false;
        }
        self.loaded.set(true);
        true
    }

    /// Before a load: on a replicated partition, waits until everything this leader
    /// proposed so far has settled (its high watermark reached its last index). False if
    /// the slot moved on first.
    pub async fn settle_before_load(&self, generation: u64) -> bool {
        if let Writer::Raft { rep, group } = &self.writer {
            let last = rep.status(*group).map_or(0, |s| s.last_index);
            let seen = self.moved_on.generation();
            if self.generation.get() != generation {
                return false;
            }
            let settled = futures_lite::future::or(rep.wait_hw_index(*group, last), async {
                self.moved_on.changed(seen).await;
                false
            })
            .await;
            if !settled {
                return false;
            }
        }
        self.generation.get() == generation
    }

    /// Reads every batch from the log start to the high watermark, in offset order, into
    /// `each`; the offset it read up to. `None` if the slot moved on meanwhile or a read
    /// failed (logged).
    pub async fn replay(&self, generation: u64, mut each: impl FnMut(Bytes)) -> Option<i64> {
        let log = self.log();
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            if self.generation.get() != generation {
                return None;
            }
            match log.read_next(offset, REPLAY_READ_BYTES).await {
                Ok((batches, next)) => {
                    if batches.is_empty() {
                        break;
                    }
                    offset = next;
                    each(batches);
                }
                Err(e) => {
                    log::error!("{}: replay read at {offset}: {e}", self.name());
                    return None;
                }
            }
        }
        (self.generation.get() == generation).then_some(offset)
    }

    /// Whether a timer for `at_ms` is needed (no earlier one is pending); if so it becomes
    /// the pending one.
    pub fn claim_tick(&self, at_ms: i64) -> bool {
        if at_ms >= self.next_tick.get() {
            return false;
        }
        self.next_tick.set(at_ms);
        true
    }

    /// When the timer for `at_ms` fires: whether it should run the tick (still loaded, and
    /// no earlier tick ran past it). It then stops being pending.
    pub fn fire_tick(&self, at_ms: i64) -> bool {
        if !self.loaded.get() || self.next_tick.get() > at_ms {
            return false;
        }
        self.next_tick.set(i64::MAX);
        true
    }

    /// Starts writing one batch (built by `groups::encode_records` or
    /// `groups::encode_txn_records`) to the partition.
    pub fn write_batch(&self, batch: Bytes) -> Pending {
        let log = self.log();
        match &self.writer {
            Writer::Local => match log.append_coordinator(&batch, now_ms()) {
                Ok(a) => Pending::Appended(a.last_offset),
                Err(e) => Pending::Failed(WriteFailed::storage(&e)),
            },
            Writer::Raft { rep, group } => {
                let Some(header) = sluice_storage::hdr::Header::parse(&batch) else {
                    // Our own encoder's output: a bug, which a retry would not fix.
                    return Pending::Failed(WriteFailed::new(
                        "unparsable batch header",
                        crate::kerr::UNKNOWN_SERVER_ERROR,
                    ));
                };
                match rep.submit(*group, &header, batch, &log, Origin::Coordinator) {
                    Ok(Submitted::Proposal(p)) => Pending::Proposed(p),
                    Ok(Submitted::Duplicate { last_offset, .. }) => Pending::Appended(last_offset),
                    Err(code) => Pending::Failed(WriteFailed::new(
                        format!("proposal refused (error {code})"),
                        if code == crate::kerr::NOT_LEADER_OR_FOLLOWER {
                            NOT_COORDINATOR
                        } else {
                            COORDINATOR_NOT_AVAILABLE
                        },
                    )),
                }
            }
        }
    }

    /// Starts writing plain coordinator records as one batch (none: nothing to wait for).
    pub fn write(&self, records: &[(Bytes, Option<Bytes>)]) -> Pending {
        if records.is_empty() {
            return Pending::Appended(self.log().log_end_offset() - 1);
        }
        self.write_batch(crate::groups::encode_records(records, now_ms()))
    }

    /// Waits until a write is durable: fsynced here, or committed on a quorum.
    pub async fn settle(&self, pending: Pending) -> Result<(), WriteFailed> {
        match pending {
            Pending::Appended(last) => self
                .log()
                .wait_durable(last)
                .await
                .map(|_| ())
                .map_err(|e| WriteFailed::storage(&e)),
            Pending::Proposed(p) => match p.wait(true, COMMIT_TIMEOUT).await {
                Some(Ok(_)) => Ok(()),
                Some(Err(e)) => {
                    // The leadership went (or another leader replaced the entry).
                    let gone =
                        matches!(e, ProposeError::NotLeader { .. } | ProposeError::Superseded);
                    Err(WriteFailed::new(
                        format!("not committed: {e:?}"),
                        if gone {
                            NOT_COORDINATOR
                        } else {
                            COORDINATOR_NOT_AVAILABLE
                        },
                    ))
                }
                None => Err(WriteFailed::new(
                    format!("not committed within {} ms", COMMIT_TIMEOUT.as_millis()),
                    COORDINATOR_NOT_AVAILABLE,
                )),
            },
            Pending::Failed(e) => Err(e),
        }
    }
}
