//! Idempotent-producer sequence checks on a replicated partition's leader, covering the
//! batches still in flight in Raft ([`InflightSequences`], sans-IO, one per partition led
//! by the shard).
//!
//! # Why it exists
//!
//! On one node `PartitionLog::append` checks a batch's producer sequence against the log's
//! producer state and records it in the same step, so the state always covers every batch
//! before the next one is checked. A replicated leader instead proposes the batch to Raft;
//! the store writes it to the partition log (`append_verified`, which records producer
//! state without checking) only when it performs the `Persist`, and its outcome comes later still.
//! Meanwhile the producer pipelines up to five batches (KIP-98,
//! `max.in.flight.requests.per.connection`) and retries any of them, so the log's producer
//! state lags the proposals: checked against the log alone, a producer's second batch
//! would look like a gap, and a retry of a batch not yet written would be proposed twice.
//! This table holds, per producer id, the batches proposed and not yet settled, in
//! proposal order (which is log order), and answers as Kafka's ProducerStateManager would if
//! they were already appended:
//!
//! - nothing in flight for the producer: the log decides (`PartitionLog::check_producer`);
//! - an older epoch than the newest in flight: INVALID_PRODUCER_EPOCH;
//! - a newer epoch: proposed if its first sequence is 0 (a bumped epoch restarts sequences),
//!   else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - the same epoch: exactly an in-flight batch's sequences, [`Admit::InFlight`] (the
//!   request waits for that proposal's outcome); following the newest in-flight batch
//!   (wrapping at `i32::MAX`), proposed; otherwise a duplicate only if the log holds it
//!   (an older batch, already committed), else OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! Non-idempotent batches (producer id < 0) and control batches are always proposed and
//! never tracked, as the log never checks them.
//!
//! # Driving it (the caller's side)
//!
//! - Admit only while the group's leader is ready (`GroupStatus::ready`: an entry of its
//!   term committed). Before that the log may hold an earlier leader's uncommitted entries,
//!   and a duplicate answered from them could name offsets another leader replaces.
//! - [`InflightSequences::admit`], `GroupManager::propose` and
//!   [`InflightSequences::proposed`] run in one go, with no await between them: a second
//!   admission of the same producer in between would not see the first batch (a retry
//!   would be proposed twice). `propose` reports `Effect::Proposed` in its own return value;
//!   a `Failed` there means nothing to record.
//! - `Effect::Committed` → [`InflightSequences::committed`]: the batch is in the log's
//!   producer state by then (the manager reports a commit only once the entry is synced on
//!   the leader, hence written by the store), so the log answers its retries.
//! - `Effect::Failed` → [`InflightSequences::failed`]; the partition's leadership lost or
//!   the group gone → [`InflightSequences::clear`].
//! - A [`Admit::Duplicate`] is answered like a write of those offsets: with acks=all once
//!   the high watermark passes `last_offset` (as Kafka's DelayedProduce does for a duplicate).
//!
//! # Bounds
//!
//! At most [`INFLIGHT_BATCHES_PER_PARTITION_MAX`] tracked batches; a new batch beyond it
//! is refused with NOT_ENOUGH_REPLICAS, retriable, nothing written ([`AdmitError::Full`]).
//! Retries of in-flight or logged batches are still answered. A tracked batch costs at
//! most about 200 bytes (its entries in two hash maps, its producer's queue), so a full
//! table is under 4 MiB per partition, given back as it empties.
//!
//! # Refused batches ([`RefusedBatches`])
//!
//! A producer the log does not know (new, expired, or whose only batches were truncated)
//! may start at any sequence: Kafka's rule since KIP-360, which the log applies. Alone,
//! that rule loses acknowledged records here: a new producer's first batch refused (the
//! leader not ready yet, a leadership transfer, a proposal failed with the leadership)
//! while its next batch, already sent, is appended right after, because the producer is
//! still unknown. The client then takes the later batch's success as proof that the
//! earlier one was written too (librdkafka acknowledges it "implicitly", offset -1) and
//! never retries it. So a replica remembers, per producer, the first sequence of the
//! earliest batch it refused or failed (whatever the reason; across leaderships, since
//! the producer may come back to it), and a later batch of that producer and epoch that
//! would be proposed is refused as NOT_LEADER_OR_FOLLOWER (retriable: the client retries
//! its batches in order) until a batch at or before the remembered sequence is admitted
//! (from then on the in-flight table or the log know the producer, and their own sequence
//! rules hold). Entries go after [`REFUSED_REMEMBER_MS`] (Kafka's `delivery.timeout.ms`
//! default: the client gave up on the batch by then) and at most
//! [`REFUSED_PRODUCERS_MAX`] producers are remembered, the oldest forgotten first.
//!
//! # A new producer that does not start at 0
//!
//! The fence above covers batches some replica refused. A client can also overtake its own
//! batches with no refusal anywhere: librdkafka, moving a partition to its new leader,
//! waits until nothing is in flight to the old one, but counts a failed request as drained
//! a moment before it puts that request's batches back at the head of its queue; in that
//! moment it may send its next batch, at a later sequence, to the new leader, which has
//! never seen the producer. Accepted as a KIP-360 new start, that batch's success makes
//! the client take the earlier batches as written (implicitly acknowledged, offset -1)
//! although no replica has them. So a batch of a producer neither the in-flight table nor
//! the log knows, at a first sequence other than 0, is refused once (NOT_LEADER_OR_FOLLOWER,
//! retriable) and remembered like any refusal: by its retry the client has the earlier
//! batches back in order and sends them first; if there are none (the producer's batches
//! went with retention or DeleteRecords, the case KIP-360 is for), the retry itself goes
//! through, one round trip later.
//!
//! # Refusals a connection saw ([`ConnRefusals`])
//!
//! A replica can remember only what it refused itself. A batch may also be refused before
//! it reaches the partition's owner: on the connection's shard, whose view of the topics
//! can be a moment behind the owner's (a new topic, a moved partition), or by a replica
//! that holds no state for the group yet. The client's connection remembers those: per
//! partition and producer, the first sequence of the earliest batch refused with a
//! retriable error; a later batch of that producer and epoch carries it to the owner
//! (`refused_seq`), which records it in its [`RefusedBatches`] before it decides, so the
//! same rule applies whoever refused. The batch's retry (at or before that sequence), a new
//! epoch, a success or [`REFUSED_REMEMBER_MS`] end the entry; at most
//! [`CONN_REFUSALS_MAX`] are kept per connection, the oldest forgotten first.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use sluice_raft::ProposalToken;
use sluice_storage::hdr::Header;
use sluice_storage::producer::{
    in_sequence, last_seq_of, SeqCheck, NO_PRODUCER_EPOCH, PRODUCERS_PER_PARTITION_MAX,
};
use sluice_storage::StorageError;

/// Idempotent batches tracked in flight per partition. Raft's own bound (64 MiB of
/// uncommitted entries) would allow about a million minimal batches, too many to track;
/// this many covers 5 batches in flight for each of 3,000 producers at once, far beyond a
/// partition's commit rate times a commit latency. It is at most the log's producer limit
/// ([`PRODUCERS_PER_PARTITION_MAX`]): each producer new to the log is checked against a
/// table that may not hold the other new ones in flight yet, so the table can pass its
/// limit by up to this many, and must stay below twice the limit, where
/// `ProducerState::record` trims the oldest producers in bulk.
pub const INFLIGHT_BATCHES_PER_PARTITION_MAX: usize = 16_384;
const _: () = assert!(INFLIGHT_BATCHES_PER_PARTITION_MAX <= PRODUCERS_PER_PARTITION_MAX);

/// Most producers one partition's [`RefusedBatches`] remembers; the least recently refused
/// is forgotten first. A refusal streak beyond it means thousands of new producers at once
/// hitting one leader change, where forgetting reopens only the window described in the
/// module header.
pub const REFUSED_PRODUCERS_MAX: usize = 4096;
/// How long a refused batch fences its producer's later batches (Kafka's
/// `delivery.timeout.ms` default, after which clients stop retrying a batch).
pub const REFUSED_REMEMBER_MS: u64 = 120_000;

/// Most (partition, producer) refusals one connection remembers ([`ConnRefusals`]). A
/// producer has one connection per broker and refusals come in bursts at leadership
/// changes: this covers a thousand partitions of one client refused at once.
pub const CONN_REFUSALS_MAX: usize = 1024;

/// Map capacity kept however empty the table gets: below it, giving memory back after a
/// burst is not worth the rehash.
const SHRINK_FLOOR: usize = 1024;

/// What to do with an idempotent producer's batch on the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// New and in order: propose it, then call [`InflightSequences::proposed`].
    Propose,
    /// A retry of a batch already in the log: answer with its offsets, propose nothing.
    Duplicate { first_offset: i64, last_offset: i64 },
    /// A retry of a batch still in flight: answer with `token`'s outcome (its offsets once
    /// committed, its error if it fails), propose nothing.
    InFlight { token: ProposalToken },
}

/// Why a batch is refused; nothing was proposed.
#[derive(Debug)]
pub enum AdmitError {
    /// The sequence rules (OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH) or the
    /// log's producer table (`ProducersFull`), as on a single node.
    Storage(StorageError),
    /// [`INFLIGHT_BATCHES_PER_PARTITION_MAX`] batches are in flight on the partition.
    Full { max: usize },
}

impl AdmitError {
    /// The Kafka error code for the produce response.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AdmitError::Storage(e) => e.kafka_error_code(),
            // Kafka has no such limit. Replication is not keeping up with the partition's
            // writes, which is what NOT_ENOUGH_REPLICAS says; every client retries it as
            // not written (librdkafka: retriable, not persisted; Java: a RetriableException)
            // with the same sequence, and a later batch of the same producer refused
            // meanwhile as out of order is retried too (its predecessor is unacknowledged).
            // The storage crate's ProducersFull uses it for the same reasons.
            AdmitError::Full { .. } => 19, // NOT_ENOUGH_REPLICAS
        }
    }
}

impl fmt::Display for AdmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdmitError::Storage(e) => e.fmt(f),
            AdmitError::Full { max } => write!(
                f,
                "{max} idempotent batches are already waiting for replication on this partition"
            ),
        }
    }
}

impl std::error::Error for AdmitError {}

impl From<StorageError> for AdmitError {
    fn from(e: StorageError) -> Self {
        AdmitError::Storage(e)
    }
}

/// One proposed, unsettled batch of a producer.
#[derive(Clone, Copy, Debug)]
struct Batch {
    token: ProposalToken,
    epoch: i16,
    first_seq: i32,
    last_seq: i32,
}

/// The idempotent batches proposed on one partition and not yet committed or failed.
///
/// Invariants: every token in `tokens` is in exactly one producer's queue and the reverse;
/// no queue is empty; within a queue each batch follows the one before it (same epoch and
/// the next sequence, or a newer epoch starting at 0) in proposal order.
#[derive(Debug, Default)]
pub struct InflightSequences {
    producers: HashMap<i64, VecDeque<Batch>>,
    tokens: HashMap<ProposalToken, i64>,
}

/// Whether the sequence rules apply to a batch (as the log decides on append).
fn tracked(header: &Header) -> bool {
    header.producer_id >= 0 && !header.is_control()
}

/// The sequence that follows `last_seq` (wrapping to 0 after `i32::MAX`, as `in_sequence`).
fn next_seq(last_seq: i32) -> i32 {
    if last_seq == i32::MAX {
        0
    } else {
        last_seq.wrapping_add(1)
    }
}

impl InflightSequences {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides what to do with a produced batch (its header parsed and verified).
    /// `log_check` is the partition log's own check of this batch
    /// (`PartitionLog::check_producer` with the header's producer id, epoch, base sequence
    /// and lastOffsetDelta); it is called at most once, only when the log can decide.
    pub fn admit(
        &self,
        header: &Header,
        log_check: impl FnOnce() -> sluice_storage::Result<SeqCheck>,
    ) -> Result<Admit, AdmitError> {
        if !tracked(header) {
            return Ok(Admit::Propose);
        }
        let producer_id = header.producer_id;
        let epoch = header.producer_epoch;
        let first_seq = header.base_sequence;
        let last_seq = last_seq_of(first_seq, header.last_offset_delta);
        let Some(batches) = self.producers.get(&producer_id) else {
            // The log's state is the producer's whole state.
            return match log_check()? {
                SeqCheck::Append => self.room().map(|()| Admit::Propose),
                SeqCheck::Duplicate {
                    first_offset,
                    last_offset,
                } => Ok(Admit::Duplicate {
                    first_offset,
                    last_offset,
                }),
            };
        };
        let newest = batches.back().expect("no empty queue");
        if epoch < newest.epoch {
            // Fenced as soon as a newer epoch is proposed: the log fences it once appended.
            return Err(StorageError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: newest.epoch,
            }
            .into());
        }
        if epoch > newest.epoch {
            if first_seq != 0 && newest.epoch != NO_PRODUCER_EPOCH {
                return Err(StorageError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                }
                .into());
            }
            return self.room().map(|()| Admit::Propose);
        }
        if let Some(b) = batches
            .iter()
            .find(|b| b.epoch == epoch && b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Admit::InFlight { token: b.token });
        }
        if in_sequence(newest.last_seq, first_seq) {
            return self.room().map(|()| Admit::Propose);
        }
        // An older batch of this epoch is a duplicate if the log still holds it. Anything
        // else the log might say (append, a gap by its older view, a full table for a
        // producer whose batches are not written yet) means out of order here.
        match log_check() {
            Ok(SeqCheck::Duplicate {
                first_offset,
                last_offset,
            }) => Ok(Admit::Duplicate {
                first_offset,
                last_offset,
            }),
            _ => Err(StorageError::OutOfOrderSequence {
                producer_id,
                expected: next_seq(newest.last_seq),
                got: first_seq,
            }
            .into()),
        }
    }

    /// Room for one more tracked batch?
    fn room(&self) -> Result<(), AdmitError> {
        if self.tokens.len() >= INFLIGHT_BATCHES_PER_PARTITION_MAX {
            return Err(AdmitError::Full {
                max: INFLIGHT_BATCHES_PER_PARTITION_MAX,
            });
        }
        Ok(())
    }

    /// The batch [`Self::admit`] answered [`Admit::Propose`] for was proposed as `token`
    /// (`Effect::Proposed`). Untracked batches (no producer id, control) are ignored.
    pub fn proposed(&mut self, token: ProposalToken, header: &Header) {
        if !tracked(header) {
            return;
        }
        let batch = Batch {
            token,
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            last_seq: last_seq_of(header.base_sequence, header.last_offset_delta),
        };
        assert!(
            self.tokens.len() < INFLIGHT_BATCHES_PER_PARTITION_MAX,
            "proposed without room: admit first"
        );
        let previous = self.tokens.insert(token, header.producer_id);
        assert!(previous.is_none(), "{token:?} proposed twice");
        let queue = self.producers.entry(header.producer_id).or_default();
        if let Some(newest) = queue.back() {
            // What admit checked: the queue stays in order.
            assert!(
                (batch.epoch == newest.epoch && in_sequence(newest.last_seq, batch.first_seq))
                    || (batch.epoch > newest.epoch
                        && (batch.first_seq == 0 || newest.epoch == NO_PRODUCER_EPOCH)),
                "producer {}: {batch:?} does not follow {newest:?}: admit first",
                header.producer_id
            );
        }
        queue.push_back(batch);
    }

    /// `token` committed: it is in the log's producer state now, which answers its retries.
    /// Unknown tokens (untracked, or forgotten by [`Self::failed`]) are ignored.
    pub fn committed(&mut self, token: ProposalToken) {
        let Some(producer_id) = self.tokens.remove(&token) else {
            return;
        };
        let queue = self.producers.get_mut(&producer_id).expect("token's queue");
        // Raft commits in log order, which is each producer's proposal order.
        debug_assert_eq!(queue.front().map(|b| b.token), Some(token));
        queue.retain(|b| b.token != token);
        if queue.is_empty() {
            self.producers.remove(&producer_id);
        }
        self.maybe_shrink();
    }

    /// `token` did not commit: it is forgotten, and so is every batch of the same producer
    /// proposed after it, whose sequences no longer follow anything proposed (Raft fails a
    /// suffix: they fail too). The client retries them in order; the first retry follows
    /// the producer's last batch still in flight or in the log and is proposed again, a
    /// later one arriving first is out of order (which clients retry while an earlier batch
    /// is unacknowledged). Unknown tokens are ignored.
    ///
    /// Returns the failed batch's producer id, epoch and first sequence, for
    /// [`RefusedBatches::refused`].
    pub fn failed(&mut self, token: ProposalToken) -> Option<(i64, i16, i32)> {
        let producer_id = self.tokens.remove(&token)?;
        let queue = self.producers.get_mut(&producer_id).expect("token's queue");
        let at = queue
            .iter()
            .position(|b| b.token == token)
            .expect("token in its queue");
        let failed = queue[at];
        for b in queue.drain(at..).skip(1) {
            self.tokens.remove(&b.token);
        }
        if queue.is_empty() {
            self.producers.remove(&producer_id);
        }
        self.maybe_shrink();
        Some((producer_id, failed.epoch, failed.first_seq))
    }

    /// Maps keep their capacity after a burst (a full table holds megabytes): once one is
    /// under a quarter full it is shrunk to twice its size. Each shrink costs its size, paid
    /// for by the removals since the last one, so it is amortized constant.
    fn maybe_shrink(&mut self) {
        if self.tokens.capacity() > 4 * self.tokens.len() + SHRINK_FLOOR {
            self.tokens.shrink_to(2 * self.tokens.len());
        }
        if self.producers.capacity() > 4 * self.producers.len() + SHRINK_FLOOR {
            self.producers.shrink_to(2 * self.producers.len());
        }
    }

    /// The partition's leadership was lost (or its group removed): nothing in flight is
    /// tracked any more. The proposals' outcomes still come from the group manager.
    /// Returns each producer's oldest batch that was in flight (producer id, epoch, first
    /// sequence), for [`RefusedBatches::refused`].
    pub fn clear(&mut self) -> Vec<(i64, i16, i32)> {
        let oldest = self
            .producers
            .iter()
            .filter_map(|(&pid, q)| q.front().map(|b| (pid, b.epoch, b.first_seq)))
            .collect();
        self.producers = HashMap::new();
        self.tokens = HashMap::new();
        oldest
    }

    /// Tracked batches in flight.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Whether `producer_id` has a batch in flight.
    pub fn has_producer(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    /// Producer ids with a batch in flight.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }
}

/// See the module header: per producer, the earliest batch this replica refused.
#[derive(Debug, Default)]
pub struct RefusedBatches {
    producers: HashMap<i64, Refused>,
}

#[derive(Clone, Copy, Debug)]
struct Refused {
    epoch: i16,
    first_seq: i32,
    at_ms: u64,
}

/// Records `new` under `key`: an entry of an older epoch is replaced, one of the same epoch
/// keeps the earlier sequence, one of a newer epoch stays (it fences anyway); a full map
/// (`max`) forgets its least recently refused entry first. Whether the fence is new or
/// moved to an earlier sequence.
fn note_refusal<K: std::hash::Hash + Eq + Copy>(
    map: &mut HashMap<K, Refused>,
    key: K,
    new: Refused,
    max: usize,
) -> bool {
    if let Some(r) = map.get_mut(&key) {
        if new.epoch < r.epoch {
            return false;
        }
        if new.epoch == r.epoch {
            let earlier = new.first_seq < r.first_seq;
            r.first_seq = r.first_seq.min(new.first_seq);
            r.at_ms = new.at_ms;
            return earlier;
        }
    } else if map.len() >= max {
        let oldest = map
            .iter()
            .min_by_key(|(_, r)| r.at_ms)
            .map(|(&k, _)| k)
            .expect("full map");
        map.remove(&oldest);
    }
    map.insert(key, new);
    true
}

impl RefusedBatches {
    /// A batch of `producer_id` (epoch, first sequence) was refused or failed at `now_ms`.
    /// Non-idempotent batches (producer id < 0) are ignored. Whether the fence is new or
    /// moved to an earlier sequence (worth a log line; a repeat is not).
    pub fn refused(&mut self, producer_id: i64, epoch: i16, first_seq: i32, now_ms: u64) -> bool {
        if producer_id < 0 {
            return false;
        }
        let refused = Refused {
            epoch,
            first_seq,
            at_ms: now_ms,
        };
        note_refusal(
            &mut self.producers,
            producer_id,
            refused,
            REFUSED_PRODUCERS_MAX,
        )
    }

    /// [`Self::refused`] for a batch by its header (control batches are never checked).
    pub fn refused_batch(&mut self, header: &Header, now_ms: u64) -> bool {
        tracked(header)
            && self.refused(
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                now_ms,
            )
    }

    /// Whether the batch may go on. `proposing`: it was admitted as new; `known`: the
    /// in-flight table or the log holds state of its producer (then their sequence rules
    /// order its batches, and the entry is no longer needed). A new batch of a producer
    /// neither knows is refused while an earlier batch of the same epoch is remembered; a
    /// batch at or before that one (its retry), a new epoch, a known producer or an expired
    /// entry ends the fence. A batch answered from the log or from a proposal in flight
    /// (`proposing == false`) always goes on.
    ///
    /// Without an entry, an unknown producer's batch that would be proposed at a first
    /// sequence other than 0 is refused once (the caller records the refusal with
    /// [`Self::refused_batch`], so the retry of that very batch goes on): it may have
    /// overtaken its producer's earlier batches, still on their way back from another
    /// replica (see "A new producer that does not start at 0" in the module header).
    pub fn admits(&mut self, header: &Header, proposing: bool, known: bool, now_ms: u64) -> bool {
        if !tracked(header) {
            return true;
        }
        if let Some(r) = self.producers.get(&header.producer_id).copied() {
            let retry = header.producer_epoch == r.epoch && header.base_sequence <= r.first_seq;
            if known || retry {
                self.producers.remove(&header.producer_id);
                return true;
            }
            if now_ms.saturating_sub(r.at_ms) < REFUSED_REMEMBER_MS
                && header.producer_epoch == r.epoch
            {
                return !proposing;
            }
            // Expired, or another epoch: the entry fences nothing any more, and the batch
            // is judged as if there were none.
            self.producers.remove(&header.producer_id);
        }
        !(proposing && !known && header.base_sequence != 0)
    }

    /// Producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

/// Idempotent batches a client connection saw refused with a retriable error before they
/// were written, by partition (`K`) and producer; see the module header.
#[derive(Debug)]
pub struct ConnRefusals<K> {
    entries: HashMap<(K, i64), Refused>,
}

impl<K> Default for ConnRefusals<K> {
    fn default() -> Self {
        ConnRefusals {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> ConnRefusals<K> {
    /// A batch with this header for `partition` was refused (retriably) at `now_ms`.
    pub fn refused(&mut self, partition: K, header: &Header, now_ms: u64) {
        if !tracked(header) {
            return;
        }
        let refused = Refused {
            epoch: header.producer_epoch,
            first_seq: header.base_sequence,
            at_ms: now_ms,
        };
        let key = (partition, header.producer_id);
        note_refusal(&mut self.entries, key, refused, CONN_REFUSALS_MAX);
    }

    /// What a batch about to be sent to `partition` must carry: the first sequence of an
    /// earlier refused batch of its producer and epoch that it would overtake. The
    /// refused batch's retry (at or before it), a new epoch or an expired entry ends it.
    pub fn carried(&mut self, partition: K, header: &Header, now_ms: u64) -> Option<i32> {
        if self.entries.is_empty() || !tracked(header) {
            return None;
        }
        let key = (partition, header.producer_id);
        let r = *self.entries.get(&key)?;
        if now_ms.saturating_sub(r.at_ms) >= REFUSED_REMEMBER_MS
            || header.producer_epoch != r.epoch
            || header.base_sequence <= r.first_seq
        {
            self.entries.remove(&key);
            return None;
        }
        Some(r.first_seq)
    }

    /// A batch of this producer was written to `partition`: its log knows the producer
    /// now, and its own sequence rules order what follows.
    pub fn written(&mut self, partition: K, producer_id: i64) {
        if !self.entries.is_empty() {
            self.entries.remove(&(partition, producer_id));
        }
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod conn_refusals_tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, first_seq: i32) -> Header {
        super::tests::hdr(pid, epoch, first_seq, 1)
    }

    #[test]
    fn a_later_batch_carries_the_earliest_refused_sequence_until_the_retry() {
        let mut c = ConnRefusals::<u32>::default();
        c.refused(1, &hdr(7, 0, 10), 0);
        c.refused(1, &hdr(7, 0, 0), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.carried(1, &hdr(7, 0, 21), 2), Some(0));
        assert_eq!(c.carried(2, &hdr(7, 0, 21), 2), None, "another partition");
        assert_eq!(c.carried(1, &hdr(8, 0, 21), 2), None, "another producer");
        assert_eq!(c.carried(1, &hdr(-1, 0, 21), 2), None, "not idempotent");
        assert_eq!(c.carried(1, &hdr(7, 0, 0), 3), None, "the retry");
        assert!(c.is_empty());
        assert_eq!(c.carried(1, &hdr(7, 0, 21), 4), None);
    }

    #[test]
    fn an_entry_ends_with_a_write_a_new_epoch_or_time() {
        let mut c = ConnRefusals::<u32>::default();
        c.refused(1, &hdr(7, 2, 4), 0);
        c.refused(1, &hdr(7, 1, 0), 0);
        assert_eq!(
            c.carried(1, &hdr(7, 2, 9), 1),
            Some(4),
            "older epoch ignored"
        );
        c.written(1, 7);
        assert_eq!(c.carried(1, &hdr(7, 2, 9), 1), None);
        c.refused(1, &hdr(7, 2, 4), 0);
        assert_eq!(c.carried(1, &hdr(7, 3, 0), 1), None, "a bumped epoch");
        c.refused(1, &hdr(7, 2, 4), 0);
        assert_eq!(
            c.carried(1, &hdr(7, 2, 9), REFUSED_REMEMBER_MS - 1),
            Some(4)
        );
        assert_eq!(c.carried(1, &hdr(7, 2, 9), REFUSED_REMEMBER_MS), None);
    }

    #[test]
    fn at_most_the_limit_is_kept_the_oldest_going_first() {
        let mut c = ConnRefusals::<u32>::default();
        for p in 0..CONN_REFUSALS_MAX as u32 + 1 {
            c.refused(p, &hdr(1, 0, 1), p as u64);
        }
        assert_eq!(c.len(), CONN_REFUSALS_MAX);
        assert_eq!(c.carried(0, &hdr(1, 0, 5), 10), None, "forgotten");
        assert_eq!(c.carried(1, &hdr(1, 0, 5), 10), Some(1));
    }
}

#[cfg(test)]
mod refused_tests {
    use super::*;

    fn hdr(pid: i64, epoch: i16, first_seq: i32) -> Header {
        super::tests::hdr(pid, epoch, first_seq, 1)
    }

    #[test]
    fn a_later_batch_of_an_unknown_producer_waits_for_its_refused_predecessor() {
        let mut r = RefusedBatches::default();
        assert!(r.refused_batch(&hdr(7, 0, 10), 0), "a new fence");
        assert!(r.refused_batch(&hdr(7, 0, 0), 1), "moved earlier");
        assert!(!r.refused_batch(&hdr(7, 0, 5), 2), "a repeat");
        assert_eq!(r.len(), 1, "one entry per producer, the earliest sequence");
        assert!(
            !r.admits(&hdr(7, 0, 10), true, false, 3),
            "after the refused one"
        );
        assert!(
            r.admits(&hdr(7, 0, 10), false, false, 3),
            "answered, not proposed"
        );
        assert!(r.admits(&hdr(8, 0, 0), true, false, 3), "another producer");
        assert!(r.admits(&hdr(-1, 0, 10), true, false, 3), "not idempotent");
        assert!(r.admits(&hdr(7, 0, 0), true, false, 4), "its retry goes");
        assert!(r.is_empty());
        assert!(
            r.admits(&hdr(7, 0, 10), true, true, 5),
            "and so does the next, its producer known by then"
        );
    }

    #[test]
    fn an_unknown_producer_not_starting_at_0_is_held_once() {
        let mut r = RefusedBatches::default();
        assert!(r.admits(&hdr(7, 0, 0), true, false, 0), "a start at 0 goes");
        assert!(
            r.admits(&hdr(7, 0, 21), true, true, 0),
            "a known producer's goes"
        );
        assert!(
            r.admits(&hdr(7, 0, 21), false, false, 0),
            "answered, not proposed"
        );
        assert!(r.admits(&hdr(-1, 0, 21), true, false, 0), "not idempotent");
        // May have overtaken sequences 0..=20: refused, and recorded as the caller does.
        assert!(!r.admits(&hdr(7, 0, 21), true, false, 0));
        assert!(r.refused_batch(&hdr(7, 0, 21), 0));
        assert!(
            !r.admits(&hdr(7, 0, 22), true, false, 1),
            "a later one waits too"
        );
        // Either the overtaken batches come first ...
        assert!(r.admits(&hdr(7, 0, 0), true, false, 2));
        assert!(r.is_empty());
        // ... or the refused one is retried: nothing was overtaken (KIP-360's new start).
        assert!(!r.admits(&hdr(8, 0, 500), true, false, 3));
        r.refused_batch(&hdr(8, 0, 500), 3);
        assert!(r.admits(&hdr(8, 0, 500), true, false, 4), "its retry goes");
        // An expired entry or another epoch fences nothing, and the rule applies afresh.
        r.refused_batch(&hdr(9, 0, 5), 0);
        assert!(!r.admits(&hdr(9, 0, 9), true, false, REFUSED_REMEMBER_MS));
        assert!(r.is_empty(), "the expired entry went");
        r.refused_batch(&hdr(9, 0, 5), 0);
        assert!(
            r.admits(&hdr(9, 1, 0), true, false, 1),
            "a bumped epoch starts at 0"
        );
    }

    #[test]
    fn a_fence_ends_with_a_known_producer_a_new_epoch_or_time() {
        let mut r = RefusedBatches::default();
        r.refused(1, 3, 4, 0);
        assert!(
            r.admits(&hdr(1, 3, 9), true, true, 1),
            "known: the log's rules hold"
        );
        r.refused(1, 3, 4, 0);
        r.refused(1, 2, 0, 0);
        assert!(
            !r.admits(&hdr(1, 3, 9), true, false, 1),
            "an older epoch changes nothing"
        );
        assert!(r.admits(&hdr(1, 4, 0), true, false, 1), "a bumped epoch");
        r.refused(1, 3, 4, 0);
        assert!(!r.admits(&hdr(1, 3, 9), true, false, REFUSED_REMEMBER_MS - 1));
        assert!(r.admits(&hdr(1, 3, 9), true, true, REFUSED_REMEMBER_MS));
        assert!(r.is_empty(), "expired");
    }

    #[test]
    fn at_most_the_limit_of_producers_is_remembered_the_oldest_going_first() {
        let mut r = RefusedBatches::default();
        for pid in 0..REFUSED_PRODUCERS_MAX as i64 + 1 {
            r.refused(pid, 0, 1, pid as u64);
        }
        assert_eq!(r.len(), REFUSED_PRODUCERS_MAX);
        assert!(
            !r.admits(&hdr(0, 0, 1), true, false, 10),
            "the oldest was forgotten: its retry is judged afresh, as a start not at 0"
        );
        assert!(!r.admits(&hdr(1, 0, 5), true, false, 10));
        assert!(
            r.admits(&hdr(1, 0, 1), true, false, 10),
            "a remembered one's retry"
        );
    }

    #[test]
    fn failed_and_cleared_in_flight_batches_name_the_earliest_one() {
        let mut s = InflightSequences::new();
        for (i, seq) in [0, 2, 4].into_iter().enumerate() {
            let h = super::tests::hdr(5, 0, seq, 2);
            assert!(matches!(
                s.admit(&h, || Ok(SeqCheck::Append)),
                Ok(Admit::Propose)
            ));
            s.proposed(ProposalToken(i as u64), &h);
        }
        assert_eq!(s.failed(ProposalToken(1)), Some((5, 0, 2)));
        assert_eq!(s.failed(ProposalToken(2)), None, "failed with it");
        assert_eq!(s.clear(), vec![(5, 0, 0)]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sluice_storage::hdr::HEADER_BYTES;
    use sluice_storage::producer::ProducerState;

    use super::*;

    /// The header of a batch of `records` records of producer `pid`.
    pub(super) fn hdr(pid: i64, epoch: i16, first_seq: i32, records: i32) -> Header {
        Header {
            base_offset: 0,
            size: HEADER_BYTES,
            leader_epoch: -1,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: first_seq,
            records_count: records,
        }
    }

    /// What a produce request gets.
    #[derive(Debug, PartialEq, Eq)]
    enum Answer {
        Proposed(ProposalToken),
        Duplicate(i64, i64),
        InFlight(ProposalToken),
        Refused(i16),
    }
    use Answer::*;

    /// A partition leader as the broker drives it: the table, the partition log's producer
    /// state (a real `ProducerState`, which `append_at` records into without checks), and
    /// the proposals in log order.
    #[derive(Default)]
    struct Leader {
        seqs: InflightSequences,
        log: ProducerState,
        /// Committed batches in log order: header and base offset.
        committed: Vec<(Header, i64)>,
        /// Proposed, unsettled: header, base offset, written to the log yet.
        pending: BTreeMap<ProposalToken, (Header, i64, bool)>,
        next_token: u64,
        next_offset: i64,
        log_checks: usize,
    }

    impl Leader {
        fn admit(&mut self, h: Header) -> Result<Admit, AdmitError> {
            let (log, checks) = (&self.log, &mut self.log_checks);
            self.seqs.admit(&h, || {
                *checks += 1;
                log.check(
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.last_offset_delta,
                )
            })
        }

        /// admit, then propose and `proposed` as the broker does.
        fn produce(&mut self, h: Header) -> Answer {
            match self.admit(h) {
                Ok(Admit::Propose) => {
                    let token = ProposalToken(self.next_token);
                    self.next_token += 1;
                    self.seqs.proposed(token, &h);
                    self.pending.insert(token, (h, self.next_offset, false));
                    self.next_offset += h.records_count as i64;
                    Proposed(token)
                }
                Ok(Admit::Duplicate {
                    first_offset,
                    last_offset,
                }) => Duplicate(first_offset, last_offset),
                Ok(Admit::InFlight { token }) => InFlight(token),
                Err(e) => Refused(e.kafka_error_code()),
            }
        }

        fn proposed(
            &mut self,
            pid: i64,
            epoch: i16,
            first_seq: i32,
            records: i32,
        ) -> ProposalToken {
            match self.produce(hdr(pid, epoch, first_seq, records)) {
                Proposed(t) => t,
                other => panic!("{pid}/{epoch}/{first_seq}: {other:?}"),
            }
        }

        /// The store writes every pending batch up to `token` (in log order).
        fn write_to(&mut self, token: ProposalToken) {
            for (h, base, written) in self.pending.range_mut(..=token).map(|(_, v)| v) {
                if !*written {
                    *written = true;
                    self.log.record(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        *base,
                        *base + h.last_offset_delta as i64,
                        0,
                    );
                }
            }
        }

        /// Commits the oldest pending batch (written first: a commit is synced on the leader).
        fn commit_next(&mut self) -> ProposalToken {
            let (&token, _) = self.pending.iter().next().expect("pending");
            self.write_to(token);
            let (h, base, _) = self.pending.remove(&token).unwrap();
            self.committed.push((h, base));
            self.seqs.committed(token);
            token
        }

        /// `token` and every later proposal fail (Raft replaces a suffix): the log loses
        /// them and its producer state is rebuilt from what remains, as after `truncate_to`.
        fn fail_from(&mut self, token: ProposalToken) {
            let failed: Vec<_> = self.pending.range(token..).map(|(t, _)| *t).collect();
            let Some(&first) = failed.first() else {
                return;
            };
            self.next_offset = self.pending[&first].1;
            for t in failed {
                self.pending.remove(&t);
                self.seqs.failed(t);
            }
            self.log = ProducerState::default();
            let written = self.pending.values().filter(|p| p.2).map(|p| (p.0, p.1));
            for (h, base) in self.committed.iter().copied().chain(written) {
                let last = base + h.last_offset_delta as i64;
                self.log.record(
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    base,
                    last,
                    0,
                );
            }
        }

        /// The sequences committed for `pid`, in log order.
        fn committed_seqs(&self, pid: i64) -> Vec<(i16, i32)> {
            self.committed
                .iter()
                .filter(|(h, _)| h.producer_id == pid)
                .map(|(h, _)| (h.producer_epoch, h.base_sequence))
                .collect()
        }
    }

    fn out_of_order(r: Result<Admit, AdmitError>) -> (i32, i32) {
        match r {
            Err(AdmitError::Storage(StorageError::OutOfOrderSequence {
                expected, got, ..
            })) => (expected, got),
            other => panic!("not out of order: {other:?}"),
        }
    }

    #[test]
    fn five_batches_pipeline_in_order_before_the_log_has_any() {
        let mut l = Leader::default();
        // Batches of two records: sequences 0-1, 2-3, .., 8-9, none written yet.
        let tokens: Vec<_> = (0..5).map(|i| l.proposed(1, 0, 2 * i, 2)).collect();
        assert_eq!(l.seqs.len(), 5);
        assert_eq!(l.seqs.producer_count(), 1);
        assert_eq!(l.log_checks, 1, "only the first batch asked the log");
        // The log knows nothing of producer 1, so it alone would take any sequence.
        assert_eq!(out_of_order(l.admit(hdr(1, 0, 11, 1))), (10, 11), "a gap");
        assert_eq!(
            out_of_order(l.admit(hdr(1, 0, 0, 1))),
            (10, 0),
            "no such batch"
        );
        // Another producer is independent.
        l.proposed(2, 0, 0, 1);
        for t in &tokens {
            assert_eq!(l.commit_next(), *t);
        }
        assert_eq!(l.seqs.len(), 1);
        assert_eq!(
            l.committed_seqs(1),
            [(0, 0), (0, 2), (0, 4), (0, 6), (0, 8)]
        );
        // Nothing in flight for producer 1: the log, now holding everything, decides.
        l.proposed(1, 0, 10, 1);
        assert_eq!(out_of_order(l.admit(hdr(1, 0, 12, 1))), (11, 12));
    }

    #[test]
    fn a_retry_of_an_in_flight_batch_waits_for_it_even_once_written() {
        let mut l = Leader::default();
        let t: Vec<_> = (0..3).map(|i| l.proposed(1, 0, 3 * i, 3)).collect();
        // Written to the log but not committed: the log would call it a duplicate, but
        // the answer must wait for the commit.
        l.write_to(t[2]);
        let checks = l.log_checks;
        assert_eq!(l.produce(hdr(1, 0, 3, 3)), InFlight(t[1]));
        assert_eq!(l.produce(hdr(1, 0, 0, 3)), InFlight(t[0]));
        assert_eq!(l.log_checks, checks, "in flight: the log is not asked");
        l.commit_next();
        assert_eq!(
            l.produce(hdr(1, 0, 0, 3)),
            Duplicate(0, 2),
            "from the log now"
        );
        assert_eq!(l.produce(hdr(1, 0, 6, 3)), InFlight(t[2]));
        // Same first sequence, other length: no batch of ours.
        assert_eq!(out_of_order(l.admit(hdr(1, 0, 3, 2))), (9, 3));
        assert_eq!(l.seqs.len(), 2, "answers track nothing");
    }

    #[test]
    fn retries_of_committed_batches_are_answered_from_the_log_behind_a_pipeline() {
        let mut l = Leader::default();
        let t: Vec<_> = (0..4).map(|i| l.proposed(7, 0, 2 * i, 2)).collect();
        l.commit_next();
        l.commit_next();
        // Batches 0 and 1 committed, 2 and 3 in flight (2 written, 3 not).
        l.write_to(t[2]);
        assert_eq!(l.produce(hdr(7, 0, 0, 2)), Duplicate(0, 1));
        assert_eq!(l.produce(hdr(7, 0, 2, 2)), Duplicate(2, 3));
        assert_eq!(l.produce(hdr(7, 0, 4, 2)), InFlight(t[2]));
        assert_eq!(l.produce(hdr(7, 0, 6, 2)), InFlight(t[3]));
        // Partial overlaps and gaps are refused with the next sequence expected.
        assert_eq!(out_of_order(l.admit(hdr(7, 0, 0, 1))), (8, 0));
        assert_eq!(out_of_order(l.admit(hdr(7, 0, 9, 1))), (8, 9));
        assert_eq!(l.produce(hdr(7, 0, 9, 1)), Refused(45));
        assert_eq!(l.produce(hdr(7, 0, 8, 1)), Proposed(ProposalToken(4)));
    }

    #[test]
    fn gaps_are_out_of_order_with_and_without_batches_in_flight() {
        let mut l = Leader::default();
        l.proposed(3, 0, 0, 5);
        l.commit_next();
        // Nothing in flight: the log's own answer.
        assert_eq!(l.produce(hdr(3, 0, 6, 1)), Refused(45));
        l.proposed(3, 0, 5, 1);
        // In flight: expected follows the newest in-flight batch.
        assert_eq!(out_of_order(l.admit(hdr(3, 0, 7, 1))), (6, 7));
        assert_eq!(out_of_order(l.admit(hdr(3, 0, 5, 2))), (6, 5));
        assert_eq!(l.seqs.len(), 1);
    }

    #[test]
    fn an_epoch_bump_behind_in_flight_batches_fences_the_old_epoch() {
        let mut l = Leader::default();
        let t0 = l.proposed(1, 0, 0, 2);
        l.proposed(1, 0, 2, 2);
        // A bumped epoch starts at sequence 0.
        assert_eq!(out_of_order(l.admit(hdr(1, 1, 4, 1))), (0, 4));
        let b = l.proposed(1, 1, 0, 1);
        // The old epoch is fenced at once, retries included (Kafka checks the epoch first).
        assert_eq!(l.produce(hdr(1, 0, 2, 2)), Refused(47));
        assert_eq!(l.produce(hdr(1, 0, 4, 1)), Refused(47));
        assert!(matches!(
            l.admit(hdr(1, 0, 0, 2)),
            Err(AdmitError::Storage(StorageError::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            }))
        ));
        assert_eq!(l.produce(hdr(1, 1, 0, 1)), InFlight(b));
        l.proposed(1, 1, 1, 1);
        // A second bump while the first is in flight.
        l.proposed(1, 2, 0, 1);
        assert_eq!(l.seqs.len(), 5);
        assert_eq!(l.commit_next(), t0);
        while !l.pending.is_empty() {
            l.commit_next();
        }
        assert_eq!(
            l.committed_seqs(1),
            [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0)]
        );
        // Settled: the log fences and deduplicates the same way.
        assert_eq!(l.produce(hdr(1, 1, 2, 1)), Refused(47));
        assert_eq!(l.produce(hdr(1, 2, 0, 1)), Duplicate(6, 6));
        assert_eq!(l.produce(hdr(1, 3, 5, 1)), Refused(45));
        l.proposed(1, 3, 0, 1);
    }

    #[test]
    fn a_failure_mid_pipeline_forgets_the_rest_and_the_retries_go_in_order() {
        let mut l = Leader::default();
        let t: Vec<_> = (0..5).map(|i| l.proposed(9, 0, i, 1)).collect();
        l.write_to(t[4]);
        l.commit_next();
        l.commit_next();
        // Batch 2 fails; Raft fails 3 and 4 with it, and the log loses them.
        l.fail_from(t[2]);
        assert!(l.seqs.is_empty());
        // A later batch's retry arriving first is out of order (the client retries it).
        assert_eq!(l.produce(hdr(9, 0, 3, 1)), Refused(45));
        // The committed ones are still duplicates; the retries in order are proposed again.
        assert_eq!(l.produce(hdr(9, 0, 1, 1)), Duplicate(1, 1));
        let r2 = l.proposed(9, 0, 2, 1);
        assert_eq!(l.produce(hdr(9, 0, 4, 1)), Refused(45));
        let r3 = l.proposed(9, 0, 3, 1);
        assert_eq!(l.produce(hdr(9, 0, 2, 1)), InFlight(r2));
        l.proposed(9, 0, 4, 1);
        while !l.pending.is_empty() {
            l.commit_next();
        }
        assert_eq!(
            l.committed_seqs(9),
            (0..5).map(|s| (0, s)).collect::<Vec<_>>()
        );
        // Outcomes of forgotten or settled tokens change nothing.
        l.seqs.failed(t[3]);
        l.seqs.committed(r3);
        assert!(l.seqs.is_empty());
    }

    #[test]
    fn a_failure_reported_before_the_later_ones_keeps_the_earlier_batches() {
        let mut l = Leader::default();
        let t: Vec<_> = (0..5).map(|i| l.proposed(9, 0, 2 * i, 2)).collect();
        // Only batch 2's failure has been handled so far: 3 and 4 go with it.
        l.seqs.failed(t[2]);
        assert_eq!(l.seqs.len(), 2);
        assert_eq!(l.produce(hdr(9, 0, 2, 2)), InFlight(t[1]));
        assert_eq!(out_of_order(l.admit(hdr(9, 0, 6, 2))), (4, 6));
        l.seqs.failed(t[3]);
        l.seqs.failed(t[4]);
        assert_eq!(l.seqs.len(), 2);
        // The retry of batch 2 follows batch 1, still in flight.
        assert!(matches!(l.admit(hdr(9, 0, 4, 2)), Ok(Admit::Propose)));
    }

    #[test]
    fn clear_forgets_everything_and_the_log_decides_again() {
        let mut l = Leader::default();
        let t = l.proposed(4, 0, 0, 1);
        l.proposed(4, 0, 1, 1);
        l.proposed(5, 2, 0, 1);
        l.seqs.clear();
        assert!(l.seqs.is_empty());
        assert_eq!(l.seqs.producer_count(), 0);
        let checks = l.log_checks;
        // Nothing was written: the log takes producer 4's sequence 0 as new.
        assert!(matches!(l.admit(hdr(4, 0, 0, 1)), Ok(Admit::Propose)));
        assert_eq!(l.log_checks, checks + 1);
        l.seqs.committed(t);
        l.seqs.failed(ProposalToken(1));
        assert!(l.seqs.is_empty());
    }

    #[test]
    fn batches_without_idempotence_and_control_batches_are_not_tracked() {
        let mut seqs = InflightSequences::new();
        let no_log = || -> sluice_storage::Result<SeqCheck> { panic!("not asked") };
        let plain = hdr(-1, -1, -1, 3);
        let mut control = hdr(5, 0, 17, 1);
        control.attributes = 0x20 | 0x10; // control, transactional
        for h in [plain, control] {
            assert_eq!(seqs.admit(&h, no_log).unwrap(), Admit::Propose);
            seqs.proposed(ProposalToken(1), &h);
            assert!(seqs.is_empty());
        }
        // A control batch does not break its producer's sequence either.
        seqs.proposed(ProposalToken(2), &hdr(5, 0, 0, 1));
        assert_eq!(seqs.admit(&control, no_log).unwrap(), Admit::Propose);
        assert_eq!(
            seqs.admit(&hdr(5, 0, 1, 1), no_log).unwrap(),
            Admit::Propose
        );
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut l = Leader::default();
        l.proposed(1, 0, i32::MAX - 1, 2);
        assert_eq!(out_of_order(l.admit(hdr(1, 0, 1, 1))), (0, 1));
        l.proposed(1, 0, 0, 1);
        // A batch crossing the wrap: i32::MAX, 0, 1 of producer 2.
        l.proposed(2, 0, i32::MAX, 3);
        assert_eq!(out_of_order(l.admit(hdr(2, 0, 3, 1))), (2, 3));
        l.proposed(2, 0, 2, 1);
        assert_eq!(
            l.produce(hdr(2, 0, i32::MAX, 3)),
            InFlight(ProposalToken(2))
        );
    }

    #[test]
    fn the_in_flight_table_is_bounded_and_retries_still_answered() {
        let mut l = Leader::default();
        l.proposed(0, 0, 0, 1);
        l.commit_next();
        let first = l.proposed(1, 0, 0, 1);
        for pid in 2..=INFLIGHT_BATCHES_PER_PARTITION_MAX as i64 {
            l.proposed(pid, 0, 0, 1);
        }
        assert_eq!(l.seqs.len(), INFLIGHT_BATCHES_PER_PARTITION_MAX);
        // New batches, of a new or of a tracked producer, are refused retriably.
        let e = l.admit(hdr(1 << 40, 0, 0, 1)).unwrap_err();
        assert!(matches!(e, AdmitError::Full { .. }), "{e}");
        assert_eq!(e.kafka_error_code(), 19, "NOT_ENOUGH_REPLICAS");
        assert_eq!(l.produce(hdr(1, 0, 1, 1)), Refused(19));
        // Retries need no room.
        assert_eq!(l.produce(hdr(1, 0, 0, 1)), InFlight(first));
        assert_eq!(l.produce(hdr(0, 0, 0, 1)), Duplicate(0, 0));
        // Sequence errors come first: they are final.
        assert_eq!(l.produce(hdr(1, 0, 5, 1)), Refused(45));
        assert_eq!(l.commit_next(), first);
        l.proposed(1, 0, 1, 1);
        assert_eq!(l.produce(hdr(1 << 40, 0, 0, 1)), Refused(19));
        // Settled, the burst's memory goes back.
        while !l.pending.is_empty() {
            l.commit_next();
        }
        assert!(l.seqs.is_empty());
        assert!(l.seqs.tokens.capacity() <= 2 * SHRINK_FLOOR);
        assert!(l.seqs.producers.capacity() <= 2 * SHRINK_FLOOR);
    }

    /// A deterministic xorshift, so a failing seed reproduces.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Idempotent producers pipelining up to 5 batches over a connection each (requests
    /// reach the leader in order, some time after they were sent), losing responses now and
    /// then and retrying, against a leader whose log writes, commits, suffix failures and
    /// leadership changes interleave at random: every batch is committed exactly once, in
    /// sequence order, and every acknowledgement names the offsets that batch holds.
    #[test]
    fn random_pipelines_retries_and_failures_commit_each_batch_once_in_order() {
        const PRODUCERS: usize = 3;
        const BATCHES: usize = 40;
        const WINDOW: usize = 5;
        // Answers proposed, in flight, duplicate, refused; failures; leadership changes.
        let mut seen = [0usize; 6];
        for seed in 1..=64u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut l = Leader::default();
            // Per producer: its batches' sizes and first sequences, their acknowledgements
            // (offsets), and the batches on its connection not yet at the leader.
            let sizes: Vec<Vec<i32>> = (0..PRODUCERS)
                .map(|_| (0..BATCHES).map(|_| 1 + rng.below(3) as i32).collect())
                .collect();
            let firsts: Vec<Vec<i32>> = sizes
                .iter()
                .map(|s| {
                    s.iter()
                        .scan(1, |next, n| {
                            *next += n;
                            Some(*next - n)
                        })
                        .collect()
                })
                .collect();
            // Each producer is known to the log (its sequence 0 is committed): one the
            // log does not know may start at any sequence (see the module header).
            for p in 0..PRODUCERS {
                l.proposed(p as i64, 0, 0, 1);
                l.commit_next();
            }
            let mut acked = vec![vec![None::<(i64, i64)>; BATCHES]; PRODUCERS];
            let mut wire = vec![VecDeque::<usize>::new(); PRODUCERS];
            // Requests at the leader waiting for a proposal: producer, batch, token.
            let mut waiting: Vec<(usize, usize, ProposalToken)> = Vec::new();
            let settle = |t: ProposalToken,
                          l: &Leader,
                          waiting: &mut Vec<(usize, usize, ProposalToken)>,
                          acked: &mut Vec<Vec<Option<(i64, i64)>>>| {
                let (h, base) = *l.committed.last().unwrap();
                let span = (base, base + h.last_offset_delta as i64);
                waiting.retain(|&(p, i, w)| {
                    if w == t {
                        acked[p][i] = Some(span);
                    }
                    w != t
                });
            };
            let mut steps = 0;
            while !acked.iter().flatten().all(Option::is_some) {
                steps += 1;
                assert!(steps < 200_000, "seed {seed}: no progress");
                let draining = steps > 3_000;
                let p = rng.below(PRODUCERS as u64) as usize;
                match rng.below(12) {
                    // The producer sends a batch: its next one, or the first unacknowledged
                    // one without a request outstanding (a retry). Clients resend in
                    // sequence order, so a batch goes only while every unacknowledged one
                    // before it has a request outstanding.
                    0..=3 => {
                        let outstanding = |k: usize| {
                            acked[p][k].is_some()
                                || wire[p].contains(&k)
                                || waiting.iter().any(|w| (w.0, w.1) == (p, k))
                        };
                        let Some(i) = (0..BATCHES).find(|&k| !outstanding(k)) else {
                            continue;
                        };
                        let head = acked[p].iter().position(Option::is_none).unwrap();
                        if i < head + WINDOW {
                            wire[p].push_back(i);
                        }
                    }
                    // The leader receives the producer's oldest request on the wire.
                    4..=5 => {
                        let Some(i) = wire[p].pop_front() else {
                            continue;
                        };
                        if acked[p][i].is_some() {
                            continue; // acknowledged meanwhile: the client dropped it
                        }
                        let head = acked[p].iter().position(Option::is_none).unwrap();
                        let answer = l.produce(hdr(p as i64, 0, firsts[p][i], sizes[p][i]));
                        seen[match answer {
                            Proposed(_) => 0,
                            InFlight(_) => 1,
                            Duplicate(..) => 2,
                            Refused(_) => 3,
                        }] += 1;
                        match answer {
                            Proposed(t) | InFlight(t) => waiting.push((p, i, t)),
                            Duplicate(first, last) => acked[p][i] = Some((first, last)),
                            // An earlier batch failed after this one was sent.
                            Refused(45) => assert!(i > head, "seed {seed}: head {i} refused"),
                            Refused(code) => panic!("seed {seed}: code {code}"),
                        }
                    }
                    // A response is lost (the client times out and will retry).
                    6..=7 => {
                        if !waiting.is_empty() {
                            waiting.swap_remove(rng.below(waiting.len() as u64) as usize);
                        }
                    }
                    // The store writes some of the pending batches.
                    8 => {
                        if let Some(&t) = l.pending.keys().nth(rng.below(4) as usize) {
                            l.write_to(t);
                        }
                    }
                    // The oldest pending batch commits; its requests are answered.
                    9..=10 => {
                        if !l.pending.is_empty() {
                            let t = l.commit_next();
                            settle(t, &l, &mut waiting, &mut acked);
                        }
                    }
                    // A suffix fails: the leadership was lost (and regained), and the
                    // table cleared before or after the failures; the requests not yet
                    // processed were refused NOT_LEADER_OR_FOLLOWER. Or, to exercise
                    // `failed` alone, the leader goes on and they are still processed.
                    _ => {
                        if draining || l.pending.is_empty() {
                            continue;
                        }
                        let clear = rng.below(3);
                        if clear < 2 {
                            wire.iter_mut().for_each(VecDeque::clear);
                        }
                        if clear == 0 {
                            l.seqs.clear();
                        }
                        let k = rng.below(l.pending.len() as u64) as usize;
                        let from = *l.pending.keys().nth(k).unwrap();
                        l.fail_from(from);
                        waiting.retain(|&(_, _, w)| w < from);
                        seen[4] += 1;
                        if clear < 2 {
                            // The rest settle (the new term's no-op commits them) before
                            // the node leads again, with nothing tracked.
                            while !l.pending.is_empty() {
                                let t = l.commit_next();
                                settle(t, &l, &mut waiting, &mut acked);
                            }
                            l.seqs.clear();
                            seen[5] += 1;
                        }
                    }
                }
            }
            for p in 0..PRODUCERS {
                let want: Vec<_> = std::iter::once(0)
                    .chain(firsts[p].iter().copied())
                    .map(|s| (0, s))
                    .collect();
                assert_eq!(l.committed_seqs(p as i64), want, "seed {seed} producer {p}");
                for (i, ack) in acked[p].iter().enumerate() {
                    let (first, last) = ack.unwrap();
                    let (h, _) = l.committed.iter().find(|(_, b)| *b == first).unwrap();
                    assert_eq!(
                        (
                            h.producer_id,
                            h.base_sequence,
                            first + h.last_offset_delta as i64
                        ),
                        (p as i64, firsts[p][i], last),
                        "seed {seed}: ack of producer {p} batch {i}"
                    );
                }
            }
        }
        eprintln!("answers and events: {seen:?}");
        assert!(
            seen.iter().all(|&n| n > 50),
            "every case exercised: {seen:?}"
        );
    }
}
