//! Sans-IO transaction coordinator for sluice (KIP-98, KIP-360, KIP-588, KIP-890): transactional
//! producer ids and epochs, fencing, the transaction state machine persisted as Kafka-format
//! `__transaction_state` records, transaction timeouts, transactional-id expiry, and the
//! COMMIT/ABORT markers each transaction needs. No sockets, no async, no clock: time comes
//! in as `now_ms`, and everything the coordinator needs done comes out as an [`Effect`].
//! `src/group` is the template; this crate is driven the same way.
//!
//! # Invariants
//!
//! - The in-memory state of a transactional id never runs ahead of its log: a change is
//!   computed, persisted, and applied only once durable. At most one change per id is in
//!   flight; other requests for that id meanwhile get CONCURRENT_TRANSACTIONS.
//! - Every applied transition is one of Kafka's (`TxnState::may_follow`), asserted.
//! - A producer epoch only grows for a producer id, and a fence (an InitProducerId finding
//!   a transaction open, or a timeout) aborts under a bumped epoch, so the fenced producer
//!   can never commit what it started.
//! - On transaction version 2 (EndTxn v5, KIP-890 part 2) every end bumps the epoch too
//!   (markers carry the new one; an exhausted epoch rotates to a new producer id at the
//!   end), and a retried end is answered as the first was.
//! - EndTxn is answered success only after the markers of every partition in the
//!   transaction are written and the Complete record is durable.
//! - Every reply token is answered exactly once.
//!
//! # Driving it (the broker's side)
//!
//! - One [`TxnCoordinator`] per `__transaction_state` partition (or set of them) that this
//!   node leads, built with that partition's leader epoch. A transactional id belongs to
//!   partition [`partition_for`]`(id, 50)`: FindCoordinator with key type 1 names its leader.
//! - On becoming leader: [`TxnCoordinator::replay`] every record in offset order, then
//!   [`TxnCoordinator::finish_replay`]. Until then requests get COORDINATOR_LOAD_IN_PROGRESS.
//! - Requests: `init_producer_id`, `add_partitions`, `add_offsets`, `end_txn`,
//!   `describe`, `list`, and `verify` (KIP-890 part 1: a partition leader asking before it
//!   appends a transactional batch; part 2 adds the partition with `add_partitions`). Perform the returned effects in order:
//!   - `Reply(token, reply)`: encode and send (PRODUCER_FENCED through [`fenced_code`] for
//!     the request's version).
//!   - `Persist { write, key, value }`: append, wait until durable, call `persisted`.
//!   - `WriteMarkers(markers)`: write a control batch to each partition through its leader
//!     (WriteTxnMarkers), then call `markers_written`.
//!   - `ScheduleTick { at_ms }`: call `tick` then.
//!
//! # Layout
//!
//! `coordinator` (requests, transitions, timeouts, replay), `state` (states and legal
//! transitions), `records` (record formats), `effect` (effects and replies), `error`
//! (codes, `TxnError`); tests: `tests` (each rule by hand) and `sim` (seeded random walks
//! with crashes and failed writes, checking the invariants above after every step; its first
//! run caught a new id kept in memory after its first write failed).

pub mod coordinator;
pub mod effect;
pub mod error;
pub mod records;
pub mod state;

pub use coordinator::{
    partition_for, ListedTxn, TxnConfig, TxnCoordinator, TxnView, OFFSETS_TOPIC,
    PRODUCER_EPOCH_EXHAUSTED, TRANSACTIONAL_IDS_MAX, TRANSACTIONAL_ID_EXPIRATION_MS,
    TRANSACTION_MAX_TIMEOUT_MS, TRANSACTION_STATE_PARTITIONS,
};
pub use effect::{Effect, Markers, Reply, ReplyToken, WriteId};
pub use error::{code, fenced_code, FencedApi, TxnError};
pub use state::TxnState;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
