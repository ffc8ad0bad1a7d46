//! Sans-IO consumer-group coordinator for sluice: the classic group protocol (JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup), the KIP-848 consumer group protocol
//! (ConsumerGroupHeartbeat, ConsumerGroupDescribe) and committed offsets (OffsetCommit, OffsetFetch,
//! OffsetDelete), DescribeGroups, ListGroups and DeleteGroups, persisted as Kafka-format
//! `__consumer_offsets` records, and offsets committed inside transactions (TxnOffsetCommit,
//! held pending until the transaction's marker). No sockets, no async, no clock: time comes
//! in as `now_ms`.
//!
//! # Driving it (the broker's side)
//!
//! - One [`GroupCoordinator`] per `__consumer_offsets` partition (or per set of partitions),
//!   living on the shard that owns that partition. Route a group's requests to the partition
//!   [`partition_for`]`(group_id, partition_count)` (Kafka's placement; 50 partitions by
//!   default, [`OFFSETS_TOPIC_PARTITIONS`]). FindCoordinator stays in the broker.
//! - On start: feed every record of the partition, in offset order, to
//!   [`GroupCoordinator::replay`] (records of a transactional batch to
//!   [`GroupCoordinator::replay_txn`] with the batch's producer id, and each transaction
//!   marker to [`GroupCoordinator::complete_txn`]), then call
//!   [`GroupCoordinator::finish_replay`]`(now)`.
//!   Only then serve requests (answer COORDINATOR_LOAD_IN_PROGRESS before that).
//! - Per request: build a [`RequestCtx`] (a [`ReplyToken`] of your choice, the request's API
//!   version, `now_ms`, client id and host from the header) and call the handler with the
//!   decoded request. Perform the returned [`Effect`]s in order:
//!   - `Reply(token, response)`: encode `response` at the request's version and send it. A
//!     token may be answered later than the call that brought it (a JoinGroup waits for the
//!     rebalance, a follower's SyncGroup for the leader), always exactly once.
//!   - `PersistThenReply { records, replies }`: append the records to the partition (as one
//!     batch; key and value bytes are Kafka's record formats), wait until durable, then send
//!     the replies; on failure send [`persist_failed`]`(response)` (or [`persist_failed_with`] a
//!     chosen error) for each and rebuild the
//!     coordinator from the log. OffsetCommit, OffsetDelete, DeleteGroups, the leader's
//!     SyncGroup (group metadata) and a static member's no-rebalance rejoin use this.
//!   - `PersistTxnThenReply { producer_id, producer_epoch, records, replies }`: the same,
//!     with the records in one transactional batch of that producer (TxnOffsetCommit).
//!     When a marker for a producer is appended to the partition, call
//!     [`GroupCoordinator::complete_txn`].
//!   - `Persist(records)`: append; nobody waits (expiry tombstones, a group turned Empty).
//!   - `ScheduleTick { at_ms }`: make sure [`GroupCoordinator::tick`] runs at or after
//!     `at_ms`. Keep a single timer at the earliest hint; `tick` always returns the next one.
//! - ConsumerGroupHeartbeat and ConsumerGroupDescribe (KIP-848) also take a [`TopicsView`]:
//!   the cluster's topics (names, ids, partition counts) as the broker's metadata image has
//!   them. A change in the subscribed topics is noticed on the next heartbeat.
//! - A closed connection needs no call: replies to its tokens are simply dropped. (Kafka does
//!   not remove members on disconnect either; their sessions expire.)
//! - DescribeGroups/ListGroups: split or fan out across coordinators and concatenate the
//!   `groups` lists; OffsetFetch v8+ may name groups of several coordinators: split by
//!   coordinator and concatenate `groups`.
//! - OffsetCommit/OffsetFetch by topic id (v10) must be resolved to names by the broker; the
//!   broker also answers UNKNOWN_TOPIC_OR_PARTITION for partitions that do not exist.
//!
//! # Durability of plain replies
//!
//! A `Reply` can reveal state whose records are still in flight (a follower's SyncGroup
//! answered right after the leader's, an OffsetFetch seeing a commit not yet fsynced). If
//! those records are then lost, the group falls back to its previous generation or offset:
//! members get ILLEGAL_GENERATION and rejoin, consumers re-read a little. Both are the
//! at-least-once outcomes Kafka clients already handle, so those replies are not held back.
//!
//! # Layout
//!
//! `coordinator` (requests, offsets, expiry, replay), `group` (the classic rebalance state
//! machine), `consumer` (the KIP-848 consumer group protocol: group epochs, target
//! assignment, reconciliation), `assignor` (its server-side `uniform` and `range`
//! assignors), `records` and `consumer_records` (record formats), `effect` (effects and
//! responses), `error` (codes, `GroupError`).

pub mod assignor;
pub mod consumer;
pub mod consumer_records;
pub mod coordinator;
pub mod effect;
pub mod embedded;
pub mod error;
mod group;
pub mod records;

pub use consumer::{ConsumerGroupState, TopicsView};
pub use coordinator::{
    GroupConfig, GroupCoordinator, MigrationPolicy, GROUPS_MAX, GROUP_MEMBERS_MAX,
    INITIAL_REBALANCE_DELAY_MS, MEMBER_METADATA_BYTES_MAX, MEMBER_PROTOCOLS_MAX,
    NEW_MEMBER_JOIN_TIMEOUT_MS, OFFSETS_RETENTION_CHECK_INTERVAL_MS, OFFSETS_RETENTION_MS,
    OFFSETS_TOPIC_PARTITIONS, OFFSET_METADATA_BYTES_MAX, SESSION_TIMEOUT_MAX_MS,
    SESSION_TIMEOUT_MIN_MS,
};
pub use effect::{
    persist_failed, persist_failed_with, Effect, Record, ReplyToken, RequestCtx, Response,
};
pub use error::{code, GroupError};
pub use group::{ClassicState, CONSUMER_PROTOCOL_TYPE};
pub use records::partition_for;

#[cfg(test)]
mod consumer_tests;
#[cfg(test)]
mod migration_tests;
#[cfg(test)]
mod tests;
