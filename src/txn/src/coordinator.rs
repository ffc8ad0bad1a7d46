//! The transaction coordinator of a set of `__transaction_state` partitions: requests,
//! state transitions through the log, markers, timeouts, expiry and replay.
//!
//! Every change goes through a *transit*: the next state of one transactional id, computed
//! from the current one, held as the id's `pending` change until its record is durable
//! ([`TxnCoordinator::persisted`]), and only then applied. While a change is pending, every
//! other request for that id gets CONCURRENT_TRANSACTIONS (retriable), so requests of one
//! id are applied in log order and the in-memory state never runs ahead of the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use crate::effect::{Effect, Markers, Reply, ReplyToken, WriteId};
use crate::error::{code, TxnError};
use crate::records::{self, TxnValue};
use crate::state::TxnState;

/// The group offsets topic, whose partitions AddOffsetsToTxn adds to a transaction.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// `transaction.state.log.num.partitions`.
pub const TRANSACTION_STATE_PARTITIONS: i32 = 50;
/// `transaction.max.timeout.ms`: a longer `transaction.timeout.ms` gets
/// INVALID_TRANSACTION_TIMEOUT.
pub const TRANSACTION_MAX_TIMEOUT_MS: i32 = 900_000;
/// `transactional.id.expiration.ms`: an id with no transaction open and no request for this
/// long is removed (a tombstone is written).
pub const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 604_800_000;
/// Transactional ids per coordinator. A new id beyond it is refused with
/// COORDINATOR_NOT_AVAILABLE (retriable: idle ids expire and free room).
pub const TRANSACTIONAL_IDS_MAX: usize = 100_000;
/// The largest epoch handed to a producer: from here on InitProducerId rotates to a new
/// producer id, so the coordinator can always bump the epoch once more to fence (Kafka's
/// `isEpochExhausted`).
pub const PRODUCER_EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// Coordinator settings (Kafka's broker configs of the same meaning).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    pub max_timeout_ms: i32,
    pub id_expiration_ms: i64,
    pub ids_max: usize,
    /// `offsets.topic.num.partitions`: where AddOffsetsToTxn finds a group's partition.
    pub offsets_partitions: i32,
}

impl Default for TxnConfig {
    fn default() -> Self {
        TxnConfig {
            max_timeout_ms: TRANSACTION_MAX_TIMEOUT_MS,
            id_expiration_ms: TRANSACTIONAL_ID_EXPIRATION_MS,
            ids_max: TRANSACTIONAL_IDS_MAX,
            offsets_partitions: sluice_group::OFFSETS_TOPIC_PARTITIONS,
        }
    }
}

/// The `__transaction_state` partition that coordinates `transactional_id` (Kafka's
/// `Utils.abs(transactionalId.hashCode) % partitions`).
pub fn partition_for(transactional_id: &str, partitions: i32) -> i32 {
    sluice_group::partition_for(transactional_id, partitions)
}

/// One transactional id's state (Kafka's `TransactionMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    producer_id: i64,
    /// The producer id before the last rotation (-1: none known).
    last_producer_id: i64,
    /// -1 until the first InitProducerId is durable.
    producer_epoch: i16,
    /// The epoch before the last bump that a producer asked for by epoch (KIP-360), so a
    /// retried InitProducerId gets the same answer; -1 when none. Not in the log (as in
    /// Kafka's v0 records): a retry across a coordinator move is fenced instead.
    last_producer_epoch: i16,
    timeout_ms: i32,
    state: TxnState,
    partitions: BTreeSet<(String, i32)>,
    /// When the open transaction began; -1 when none has.
    start_ms: i64,
    last_update_ms: i64,
    /// The transaction was ended by a client on transaction version 2 (KIP-890 part 2,
    /// EndTxn v5), which bumped the epoch: set from that end until the next transaction
    /// starts, never by a fence. In the log as value v1's `clientTransactionVersion`.
    tv2: bool,
    /// The producer id the transaction's end rotates to (its epoch was exhausted); -1 when
    /// none. Value v1's `nextProducerId`.
    next_producer_id: i64,
}

impl Snapshot {
    /// The state an InitProducerId leaves: no transaction, the given producer id and
    /// `(epoch, last epoch)`, the request's timeout.
    fn initialized(
        producer_id: i64,
        last_producer_id: i64,
        (producer_epoch, last_producer_epoch): (i16, i16),
        timeout_ms: i32,
        now_ms: i64,
    ) -> Snapshot {
        Snapshot {
            producer_id,
            last_producer_id,
            producer_epoch,
            last_producer_epoch,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            tv2: false,
            next_producer_id: -1,
        }
    }
}

/// What to do once a pending change is durable (or failed).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Then {
    InitProducerId(ReplyToken),
    AddPartitions(ReplyToken),
    /// PrepareCommit/PrepareAbort: write markers. `end` is a client's EndTxn, answered when
    /// the transaction completes; `fenced_init` an InitProducerId that found the
    /// transaction open, answered CONCURRENT_TRANSACTIONS once the abort is durable.
    Prepare {
        end: Option<ReplyToken>,
        fenced_init: Option<ReplyToken>,
    },
    Complete,
    Expire,
}

#[derive(Debug)]
struct Pending {
    write: WriteId,
    next: Snapshot,
    then: Then,
}

#[derive(Debug)]
struct Txn {
    current: Snapshot,
    pending: Option<Pending>,
    /// A client's EndTxn waiting for the markers and the Complete record.
    end_waiter: Option<ReplyToken>,
}

/// One transaction as DescribeTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnView {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// One transaction as ListTransactions shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: TxnState,
}

/// The transaction coordinator. Sans-IO: see the crate docs for how to drive it.
pub struct TxnCoordinator {
    config: TxnConfig,
    /// The leader epoch of the `__transaction_state` partition(s) this instance serves;
    /// markers carry it so that partition leaders can refuse a deposed coordinator's.
    coordinator_epoch: i32,
    loaded: bool,
    txns: BTreeMap<String, Txn>,
    writes: HashMap<WriteId, String>,
    next_write: u64,
}

fn exhausted(epoch: i16) -> bool {
    epoch >= PRODUCER_EPOCH_EXHAUSTED
}

fn end_error(error: i16) -> Reply {
    Reply::EndTxn {
        error,
        producer_id: -1,
        producer_epoch: -1,
    }
}

fn init_error(error: i16) -> Reply {
    Reply::InitProducerId {
        error,
        producer_id: -1,
        producer_epoch: -1,
    }
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig, coordinator_epoch: i32) -> Self {
        TxnCoordinator {
            config,
            coordinator_epoch,
            loaded: false,
            txns: BTreeMap::new(),
            writes: HashMap::new(),
            next_write: 0,
        }
    }

    pub fn coordinator_epoch(&self) -> i32 {
        self.coordinator_epoch
    }

    /// Transactional ids held (any state).
    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Applies one record of the partition, read in offset order, before
    /// [`finish_replay`](Self::finish_replay). A record that does not decode is skipped and
    /// its error returned (the caller logs it); a tombstone removes the id.
    pub fn replay(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), TxnError> {
        assert!(!self.loaded, "replay after finish_replay");
        let id = records::decode_key(key)?;
        let Some(value) = value else {
            self.txns.remove(&id);
            return Ok(());
        };
        let v = records::decode_value(value)?;
        // Kafka never writes its transient fence state; were one read, the transaction is
        // still open, and its timeout aborts it.
        let state = match v.state {
            TxnState::PrepareEpochFence => TxnState::Ongoing,
            s => s,
        };
        let current = Snapshot {
            producer_id: v.producer_id,
            last_producer_id: v.previous_producer_id,
            producer_epoch: v.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: v.timeout_ms,
            state,
            partitions: v.partitions,
            start_ms: v.start_ms,
            last_update_ms: v.last_update_ms,
            tv2: v.client_transaction_version >= 2,
            next_producer_id: v.next_producer_id,
        };
        if state == TxnState::Dead {
            self.txns.remove(&id);
        } else {
            self.txns.insert(
                id,
                Txn {
                    current,
                    pending: None,
                    end_waiter: None,
                },
            );
        }
        Ok(())
    }

    /// Ends the replay: from here on requests are served. Transactions the log left in
    /// PrepareCommit/PrepareAbort get their markers written again (a marker written twice
    /// is harmless: the second finds no open transaction); timeouts and expiry run.
    pub fn finish_replay(&mut self, now_ms: i64) -> Vec<Effect> {
        self.loaded = true;
        let mut out = Vec::new();
        for (id, txn) in &self.txns {
            if matches!(
                txn.current.state,
                TxnState::PrepareCommit | TxnState::PrepareAbort
            ) {
                out.push(Effect::WriteMarkers(self.markers(id, &txn.current)));
            }
        }
        out.extend(self.tick(now_ms));
        out
    }

    /// InitProducerId with a transactional id. `producer_id`/`producer_epoch` are the
    /// request's (v3+; -1/-1 when the producer has none). `fresh_id` hands out a new
    /// producer id from the cluster's blocks; it is called only when one is needed (a new
    /// id, or an exhausted epoch), and `None` is answered COORDINATOR_LOAD_IN_PROGRESS
    /// (retriable) as Kafka does while its next block is on its way.
    #[allow(clippy::too_many_arguments)]
    pub fn init_producer_id(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        transactional_id: &str,
        timeout_ms: i32,
        producer_id: i64,
        producer_epoch: i16,
        fresh_id: &mut dyn FnMut() -> Option<i64>,
    ) -> Vec<Effect> {
        let reply = |error| vec![Effect::Reply(token, init_error(error))];
        if !self.loaded {
            return reply(code::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if transactional_id.is_empty() {
            return reply(code::INVALID_REQUEST);
        }
        let expected = match (producer_id, producer_epoch) {
            (-1, -1) => None,
            (-1, _) | (_, -1) => return reply(code::INVALID_REQUEST),
            (id, epoch) => Some((id, epoch)),
        };
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return reply(code::INVALID_TRANSACTION_TIMEOUT);
        }
        if !self.txns.contains_key(transactional_id) {
            if self.txns.len() >= self.config.ids_max {
                return reply(code::COORDINATOR_NOT_AVAILABLE);
            }
            let Some(id) = fresh_id() else {
                return reply(code::COORDINATOR_LOAD_IN_PROGRESS);
            };
            self.txns.insert(
                transactional_id.to_owned(),
                Txn {
                    // Epoch -1 until its first record is durable.
                    current: Snapshot::initialized(id, -1, (-1, -1), timeout_ms, now_ms),
                    pending: None,
                    end_waiter: None,
                },
            );
        }
        let txn = self.txns.get(transactional_id).expect("inserted above");
        if txn.pending.is_some() {
            return reply(code::CONCURRENT_TRANSACTIONS);
        }
        let cur = &txn.current;
        // KIP-360: a producer naming its id and epoch is fenced unless the id is new, is
        // this id's current producer id, or is the previous one with an exhausted epoch (a
        // retry of a rotation whose answer was lost).
        let valid = |(id, epoch): (i64, i16)| {
            cur.producer_epoch == -1
                || id == cur.producer_id
                || (id == cur.last_producer_id && exhausted(epoch))
        };
        if !expected.is_none_or(valid) {
            return reply(code::PRODUCER_FENCED);
        }
        let next = match cur.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return reply(code::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing => {
                // Abort the open transaction under a bumped epoch first, then let the
                // client retry: the retry bumps again (or rotates if that exhausted it).
                let next = self.fence(transactional_id, now_ms);
                return self.begin(
                    transactional_id,
                    next,
                    Then::Prepare {
                        end: None,
                        fenced_init: Some(token),
                    },
                );
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                if exhausted(cur.producer_epoch)
                    && expected.is_none_or(|(_, e)| e == cur.producer_epoch) =>
            {
                let Some(id) = fresh_id() else {
                    return reply(code::COORDINATOR_LOAD_IN_PROGRESS);
                };
                let last = if expected.is_some() {
                    cur.producer_epoch
                } else {
                    -1
                };
                Snapshot::initialized(id, cur.producer_id, (0, last), timeout_ms, now_ms)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                // An exhausted epoch took the rotation above unless the request names an
                // older epoch, which is a retry or fenced: a bump never passes
                // PRODUCER_EPOCH_EXHAUSTED.
                let bumped = || {
                    debug_assert!(!exhausted(cur.producer_epoch));
                    cur.producer_epoch + 1
                };
                let (epoch, last) = match expected {
                    None => (bumped(), -1),
                    Some((_, e)) if cur.producer_epoch == -1 || e == cur.producer_epoch => {
                        (bumped(), cur.producer_epoch)
                    }
                    // A retry of a bump that succeeded: the same answer again.
                    Some((_, e)) if e == cur.last_producer_epoch => {
                        (cur.producer_epoch, cur.last_producer_epoch)
                    }
                    Some(_) => return reply(code::PRODUCER_FENCED),
                };
                Snapshot::initialized(
                    cur.producer_id,
                    cur.producer_id,
                    (epoch, last),
                    timeout_ms,
                    now_ms,
                )
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                unreachable!("{:?} is only ever a pending state", cur.state)
            }
        };
        self.begin(transactional_id, next, Then::InitProducerId(token))
    }

    /// AddPartitionsToTxn for one transaction (v4+'s batched form: call once per
    /// transaction). The driver answers UNKNOWN_TOPIC_OR_PARTITION for partitions that do
    /// not exist (and OPERATION_NOT_ATTEMPTED for the rest) without calling this.
    pub fn add_partitions(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<Effect> {
        let reply = |error| vec![Effect::Reply(token, Reply::AddPartitions { error })];
        if let Err(error) = self.check_producer(transactional_id, producer_id, producer_epoch) {
            return reply(error);
        }
        let cur = &self.txns[transactional_id].current;
        let next = match cur.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return reply(code::CONCURRENT_TRANSACTIONS)
            }
            TxnState::Ongoing if partitions.iter().all(|p| cur.partitions.contains(p)) => {
                return reply(code::NONE)
            }
            TxnState::Ongoing
            | TxnState::Empty
            | TxnState::CompleteCommit
            | TxnState::CompleteAbort => {
                let mut next = cur.clone();
                if cur.state != TxnState::Ongoing {
                    next.start_ms = now_ms;
                    // A new transaction: how it ends (and so whether a later EndTxn may
                    // be a retry of a version 2 end) is not known yet.
                    next.tv2 = false;
                }
                next.state = TxnState::Ongoing;
                next.partitions.extend(partitions.iter().cloned());
                next.last_update_ms = now_ms;
                next
            }
            TxnState::Dead | TxnState::PrepareEpochFence => {
                unreachable!("{:?} is only ever a pending state", cur.state)
            }
        };
        self.begin(transactional_id, next, Then::AddPartitions(token))
    }

    /// AddPartitionsToTxn v4+ with `verify_only` (KIP-890 part 1): a partition leader asks
    /// whether a transactional produce belongs to the producer's ongoing transaction,
    /// before appending it, so a late retry cannot open a transaction there that nothing
    /// will ever end. One code per partition (the same for all when the producer itself
    /// does not check out); nothing changes.
    pub fn verify(
        &self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Vec<i16> {
        let all = |error| vec![error; partitions.len()];
        if !self.loaded {
            return all(code::COORDINATOR_LOAD_IN_PROGRESS);
        }
        let Some(txn) = self.txns.get(transactional_id) else {
            return all(code::INVALID_PRODUCER_ID_MAPPING);
        };
        let cur = &txn.current;
        if cur.producer_id != producer_id {
            return all(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if cur.producer_epoch != producer_epoch {
            return all(code::PRODUCER_FENCED);
        }
        // The transaction is ending (Prepare, or a change in flight that ends it: EndTxn, an
        // abort on timeout or fence): the answer comes once it has ended, as Kafka's
        // CONCURRENT_TRANSACTIONS, which a leader turns into a retriable refusal; the retry
        // then finds the transaction over.
        let ending = matches!(cur.state, TxnState::PrepareCommit | TxnState::PrepareAbort)
            || txn
                .pending
                .as_ref()
                .is_some_and(|p| p.next.state != TxnState::Ongoing);
        if ending {
            return all(code::CONCURRENT_TRANSACTIONS);
        }
        partitions
            .iter()
            .map(|p| {
                if cur.state == TxnState::Ongoing && cur.partitions.contains(p) {
                    code::NONE
                } else {
                    code::INVALID_TXN_STATE
                }
            })
            .collect()
    }

    /// AddOffsetsToTxn: adds the group's `__consumer_offsets` partition, so that the
    /// transaction's markers reach the group's pending offsets.
    pub fn add_offsets(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        group_id: &str,
    ) -> Vec<Effect> {
        let partition = (
            OFFSETS_TOPIC.to_owned(),
            sluice_group::partition_for(group_id, self.config.offsets_partitions),
        );
        self.add_partitions(
            token,
            now_ms,
            transactional_id,
            producer_id,
            producer_epoch,
            &[partition],
        )
    }

    /// EndTxn. Answered once every marker is written and the Complete record is durable (a
    /// retry meanwhile gets CONCURRENT_TRANSACTIONS), so a producer whose commit was
    /// answered finds its records visible to read_committed consumers.
    ///
    /// `tv2` (EndTxn v5, transaction version 2, KIP-890 part 2): the end bumps the epoch
    /// (the markers carry the new one, so a late write of the ended transaction is fenced
    /// at every partition), rotating to a new producer id from `fresh_id` when the epoch is
    /// exhausted; the answer carries the id and epoch to use next. A retry after the end
    /// (the old epoch, or the old id after a rotation) gets the same answer. An abort with
    /// no transaction open is accepted and bumps the epoch too (the producer cannot know
    /// whether its writes opened one).
    #[allow(clippy::too_many_arguments)]
    pub fn end_txn(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        tv2: bool,
        fresh_id: &mut dyn FnMut() -> Option<i64>,
    ) -> Vec<Effect> {
        let reply = |error| {
            vec![Effect::Reply(
                token,
                Reply::EndTxn {
                    error,
                    producer_id: -1,
                    producer_epoch: -1,
                },
            )]
        };
        if tv2 {
            if let Some(answer) = self.retried_end(transactional_id, producer_id, producer_epoch) {
                let (cur, done) = answer;
                let ok = done == Some(commit);
                return vec![Effect::Reply(
                    token,
                    match (ok, done) {
                        (true, _) => Reply::EndTxn {
                            error: code::NONE,
                            producer_id: cur.0,
                            producer_epoch: cur.1,
                        },
                        // Still ending: retriable.
                        (false, None) => Reply::EndTxn {
                            error: code::CONCURRENT_TRANSACTIONS,
                            producer_id: -1,
                            producer_epoch: -1,
                        },
                        (false, Some(_)) => Reply::EndTxn {
                            error: code::INVALID_TXN_STATE,
                            producer_id: -1,
                            producer_epoch: -1,
                        },
                    },
                )];
            }
        }
        if let Err(error) = self.check_producer(transactional_id, producer_id, producer_epoch) {
            return reply(error);
        }
        let cur = &self.txns[transactional_id].current;
        use TxnState::*;
        let error = match (cur.state, commit, tv2) {
            (Ongoing, _, _) | (Empty | CompleteCommit | CompleteAbort, false, true) => {
                let mut next = cur.clone();
                next.state = if commit { PrepareCommit } else { PrepareAbort };
                next.last_update_ms = now_ms;
                next.tv2 = tv2;
                if tv2 {
                    // A hostile request may name an epoch no client holds (above the
                    // exhausted mark, after a fence): nothing is left to bump to.
                    let Some(bumped) = cur.producer_epoch.checked_add(1) else {
                        return reply(code::PRODUCER_FENCED);
                    };
                    if exhausted(cur.producer_epoch) {
                        let Some(id) = fresh_id() else {
                            return reply(code::COORDINATOR_LOAD_IN_PROGRESS);
                        };
                        next.next_producer_id = id;
                    }
                    next.producer_epoch = bumped;
                    next.last_producer_epoch = -1;
                }
                return self.begin(
                    transactional_id,
                    next,
                    Then::Prepare {
                        end: Some(token),
                        fenced_init: None,
                    },
                );
            }
            // A retry of an EndTxn that completed (version 0 keeps the epoch; a version 2
            // retry names the old epoch and was answered above).
            (CompleteCommit, true, false) | (CompleteAbort, false, false) => code::NONE,
            (PrepareCommit, true, _) | (PrepareAbort, false, _) => code::CONCURRENT_TRANSACTIONS,
            _ => code::INVALID_TXN_STATE,
        };
        reply(error)
    }

    /// A transaction-version-2 EndTxn from the producer id and epoch of a transaction that
    /// ended under a bumped epoch (or a rotated id): `((id, epoch) to use now, how it ended)`,
    /// the end `None` while it is still ending. `None` when the request is not such a retry.
    #[allow(clippy::type_complexity)]
    fn retried_end(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Option<((i64, i16), Option<bool>)> {
        if !self.loaded {
            return None;
        }
        let txn = self.txns.get(id)?;
        let cur = &txn.current;
        // `tv2` holds only from a client's version 2 end until the next transaction
        // starts: a fence's abort clears it, so the fenced producer's EndTxn is refused.
        if !cur.tv2 {
            return None;
        }
        let bumped = producer_id == cur.producer_id
            && producer_epoch >= 0
            && producer_epoch.checked_add(1) == Some(cur.producer_epoch);
        let rotated = producer_id == cur.last_producer_id
            && producer_id != cur.producer_id
            && cur.producer_epoch == 0
            && exhausted(producer_epoch);
        if !(bumped || rotated) {
            return None;
        }
        let end = match cur.state {
            // Another change in flight (the Complete record, or what follows the end): the
            // retry waits for it (CONCURRENT_TRANSACTIONS).
            _ if txn.pending.is_some() => None,
            TxnState::CompleteCommit => Some(true),
            TxnState::CompleteAbort => Some(false),
            TxnState::PrepareCommit | TxnState::PrepareAbort => None,
            _ => return None,
        };
        Some(((cur.producer_id, cur.producer_epoch), end))
    }

    /// The markers of a `WriteMarkers` effect are all written. Stale calls (the transaction
    /// moved on, another epoch) are ignored.
    pub fn markers_written(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        now_ms: i64,
    ) -> Vec<Effect> {
        let Some(txn) = self.txns.get(transactional_id) else {
            return Vec::new();
        };
        let cur = &txn.current;
        let state = match cur.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return Vec::new(),
        };
        if txn.pending.is_some()
            || cur.producer_id != producer_id
            || cur.producer_epoch != producer_epoch
        {
            return Vec::new();
        }
        let mut next = cur.clone();
        next.state = state;
        next.partitions.clear();
        next.last_update_ms = now_ms;
        if cur.next_producer_id >= 0 {
            // The end's rotation: the producer continues under the new id.
            next.last_producer_id = cur.producer_id;
            next.producer_id = cur.next_producer_id;
            next.producer_epoch = 0;
            next.next_producer_id = -1;
        }
        self.begin(transactional_id, next, Then::Complete)
    }

    /// A `Persist` effect finished: `Ok` once durable, `Err(code)` when it failed (see
    /// [`Effect::Persist`] for the code).
    pub fn persisted(
        &mut self,
        write: WriteId,
        result: Result<(), i16>,
        now_ms: i64,
    ) -> Vec<Effect> {
        let Some(id) = self.writes.remove(&write) else {
            return Vec::new();
        };
        let txn = self
            .txns
            .get_mut(&id)
            .expect("a pending write's id is held");
        let pending = txn.pending.take().expect("a write in flight is pending");
        assert_eq!(pending.write, write, "{id}: one write in flight per id");
        let mut out = Vec::new();
        let error = match result {
            Ok(()) => {
                assert!(
                    pending.next.state.may_follow(txn.current.state),
                    "{id}: {:?} may not follow {:?}",
                    pending.next.state,
                    txn.current.state
                );
                txn.current = pending.next;
                None
            }
            Err(error) => Some(error),
        };
        match (pending.then, error) {
            (Then::InitProducerId(token), None) => out.push(Effect::Reply(
                token,
                Reply::InitProducerId {
                    error: code::NONE,
                    producer_id: txn.current.producer_id,
                    producer_epoch: txn.current.producer_epoch,
                },
            )),
            (Then::InitProducerId(token), Some(e)) => {
                out.push(Effect::Reply(token, init_error(e)));
                // A new id whose first record failed was never durable: forget it, so
                // memory holds nothing the log does not (Kafka keeps such a placeholder).
                if txn.current.producer_epoch == -1 {
                    self.txns.remove(&id);
                    return out;
                }
            }
            (Then::AddPartitions(token), e) => out.push(Effect::Reply(
                token,
                Reply::AddPartitions {
                    error: e.unwrap_or(code::NONE),
                },
            )),
            (Then::Prepare { end, fenced_init }, None) => {
                txn.end_waiter = end;
                if let Some(token) = fenced_init {
                    out.push(Effect::Reply(
                        token,
                        init_error(code::CONCURRENT_TRANSACTIONS),
                    ));
                }
                let markers = self.markers(&id, &self.txns[&id].current);
                out.push(Effect::WriteMarkers(markers));
            }
            (Then::Prepare { end, fenced_init }, Some(e)) => {
                if let Some(token) = end {
                    out.push(Effect::Reply(token, end_error(e)));
                }
                if let Some(token) = fenced_init {
                    out.push(Effect::Reply(token, init_error(e)));
                }
            }
            (Then::Complete, None) => {
                if let Some(token) = txn.end_waiter.take() {
                    let (producer_id, producer_epoch) = if txn.current.tv2 {
                        (txn.current.producer_id, txn.current.producer_epoch)
                    } else {
                        (-1, -1)
                    };
                    out.push(Effect::Reply(
                        token,
                        Reply::EndTxn {
                            error: code::NONE,
                            producer_id,
                            producer_epoch,
                        },
                    ));
                }
            }
            (Then::Complete, Some(e)) => {
                // The markers are written; completing is retried by writing them again
                // (harmless), unless this coordinator is being dropped.
                if let Some(token) = txn.end_waiter.take() {
                    out.push(Effect::Reply(token, end_error(e)));
                }
                if e != code::NOT_COORDINATOR {
                    let markers = self.markers(&id, &self.txns[&id].current);
                    out.push(Effect::WriteMarkers(markers));
                }
            }
            (Then::Expire, None) => {
                self.txns.remove(&id);
            }
            // Retried by the next tick.
            (Then::Expire, Some(_)) => {}
        }
        // The changed id's own next deadline; earlier ones are already scheduled.
        if let Some(at_ms) = self
            .txns
            .get(&id)
            .and_then(|t| deadline(&t.current, self.config.id_expiration_ms))
        {
            out.push(Effect::ScheduleTick {
                at_ms: at_ms.max(now_ms),
            });
        }
        out
    }

    /// Aborts transactions open past their timeout (bumping the producer's epoch, which
    /// fences it: its next produce or EndTxn is refused) and expires idle transactional
    /// ids. Returns the effects and the next tick.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut out = Vec::new();
        if !self.loaded {
            return out;
        }
        let expiration_ms = self.config.id_expiration_ms;
        let due: Vec<(String, bool)> = self
            .txns
            .iter()
            .filter(|(_, t)| t.pending.is_none())
            .filter(|(_, t)| deadline(&t.current, expiration_ms).is_some_and(|d| d <= now_ms))
            .map(|(id, t)| (id.clone(), t.current.state == TxnState::Ongoing))
            .collect();
        for (id, timed_out) in due {
            if timed_out {
                let next = self.fence(&id, now_ms);
                out.extend(self.begin(
                    &id,
                    next,
                    Then::Prepare {
                        end: None,
                        fenced_init: None,
                    },
                ));
            } else {
                let mut next = self.txns[&id].current.clone();
                next.state = TxnState::Dead;
                out.extend(self.begin(&id, next, Then::Expire));
            }
        }
        if let Some(at_ms) = self.next_deadline() {
            out.push(Effect::ScheduleTick {
                at_ms: at_ms.max(now_ms),
            });
        }
        out
    }

    /// DescribeTransactions for one id.
    pub fn describe(&self, transactional_id: &str) -> Result<TxnView, i16> {
        if !self.loaded {
            return Err(code::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if transactional_id.is_empty() {
            return Err(code::INVALID_REQUEST);
        }
        let txn = self
            .txns
            .get(transactional_id)
            .ok_or(code::TRANSACTIONAL_ID_NOT_FOUND)?;
        let cur = &txn.current;
        Ok(TxnView {
            producer_id: cur.producer_id,
            producer_epoch: cur.producer_epoch,
            state: cur.state,
            timeout_ms: cur.timeout_ms,
            start_ms: cur.start_ms,
            partitions: cur.partitions.iter().cloned().collect(),
        })
    }

    /// ListTransactions: the ids whose state is in `states` (all when empty), whose
    /// producer id is in `producer_ids` (all when empty) and, when `min_duration_ms` ≥ 0,
    /// whose transaction has run at least that long (KIP-994).
    pub fn list(
        &self,
        states: &[TxnState],
        producer_ids: &[i64],
        min_duration_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<ListedTxn>, i16> {
        if !self.loaded {
            return Err(code::COORDINATOR_LOAD_IN_PROGRESS);
        }
        Ok(self
            .txns
            .iter()
            .filter(|(_, t)| states.is_empty() || states.contains(&t.current.state))
            .filter(|(_, t)| {
                producer_ids.is_empty() || producer_ids.contains(&t.current.producer_id)
            })
            .filter(|(_, t)| {
                min_duration_ms < 0
                    || (t.current.start_ms >= 0
                        && now_ms.saturating_sub(t.current.start_ms) >= min_duration_ms)
            })
            .map(|(id, t)| ListedTxn {
                transactional_id: id.clone(),
                producer_id: t.current.producer_id,
                state: t.current.state,
            })
            .collect())
    }

    /// The checks AddPartitionsToTxn, AddOffsetsToTxn and EndTxn share, in Kafka's order.
    fn check_producer(&self, id: &str, producer_id: i64, producer_epoch: i16) -> Result<(), i16> {
        if !self.loaded {
            return Err(code::COORDINATOR_LOAD_IN_PROGRESS);
        }
        if id.is_empty() {
            return Err(code::INVALID_REQUEST);
        }
        let txn = self.txns.get(id).ok_or(code::INVALID_PRODUCER_ID_MAPPING)?;
        if txn.current.producer_id != producer_id {
            return Err(code::INVALID_PRODUCER_ID_MAPPING);
        }
        if txn.current.producer_epoch != producer_epoch {
            return Err(code::PRODUCER_FENCED);
        }
        if txn.pending.is_some() {
            return Err(code::CONCURRENT_TRANSACTIONS);
        }
        Ok(())
    }

    /// The abort of `id`'s open transaction under a bumped epoch. A fence whose write
    /// failed left the current state as it was, so its retry picks the same epoch (Kafka,
    /// which bumps in memory first, needs a flag for that).
    fn fence(&self, id: &str, now_ms: i64) -> Snapshot {
        let mut next = self.txns[id].current.clone();
        // Clients never hold an epoch above PRODUCER_EPOCH_EXHAUSTED, so one more bump
        // always fits.
        next.producer_epoch = next.producer_epoch.saturating_add(1);
        next.last_producer_epoch = -1;
        // The coordinator's own abort, not a client's version 2 end: an EndTxn naming the
        // epoch before it is the fenced producer's, never a retry (`retried_end`).
        next.tv2 = false;
        next.state = TxnState::PrepareAbort;
        next.last_update_ms = now_ms;
        next
    }

    /// Makes `next` the id's pending change and asks for its record.
    fn begin(&mut self, id: &str, next: Snapshot, then: Then) -> Vec<Effect> {
        let txn = self.txns.get_mut(id).expect("begin for a held id");
        assert!(txn.pending.is_none(), "{id}: a second pending change");
        assert!(
            next.state.may_follow(txn.current.state),
            "{id}: {:?} may not follow {:?}",
            next.state,
            txn.current.state
        );
        let write = WriteId(self.next_write);
        self.next_write += 1;
        let key = records::encode_key(id);
        let value = (next.state != TxnState::Dead).then(|| encode(&next));
        txn.pending = Some(Pending { write, next, then });
        self.writes.insert(write, id.to_owned());
        vec![Effect::Persist { write, key, value }]
    }

    fn markers(&self, id: &str, s: &Snapshot) -> Markers {
        Markers {
            transactional_id: id.to_owned(),
            producer_id: s.producer_id,
            producer_epoch: s.producer_epoch,
            commit: s.state == TxnState::PrepareCommit,
            coordinator_epoch: self.coordinator_epoch,
            partitions: s.partitions.iter().cloned().collect(),
        }
    }

    /// The earliest time a tick has work: a timeout or an expiry. A scan: only ticks use it.
    fn next_deadline(&self) -> Option<i64> {
        self.txns
            .values()
            .filter(|t| t.pending.is_none())
            .filter_map(|t| deadline(&t.current, self.config.id_expiration_ms))
            .min()
    }
}

/// When a tick has work for a transactional id in state `s`: its transaction's timeout if
/// one is open, its expiry if none is; `None` while markers are being written.
fn deadline(s: &Snapshot, expiration_ms: i64) -> Option<i64> {
    match s.state {
        TxnState::Ongoing => Some(s.start_ms.saturating_add(i64::from(s.timeout_ms))),
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
            Some(s.last_update_ms.saturating_add(expiration_ms))
        }
        _ => None,
    }
}

fn encode(s: &Snapshot) -> Bytes {
    records::encode_value(&TxnValue {
        producer_id: s.producer_id,
        previous_producer_id: s.last_producer_id,
        next_producer_id: s.next_producer_id,
        producer_epoch: s.producer_epoch,
        timeout_ms: s.timeout_ms,
        state: s.state,
        partitions: s.partitions.clone(),
        last_update_ms: s.last_update_ms,
        start_ms: s.start_ms,
        client_transaction_version: if s.tv2 { 2 } else { 0 },
    })
}
