//! Sans-IO cluster metadata for sluice (issue 12): the controller's record log, the image
//! every node replays from it, replica placement, and the controller's command layer. No
//! sockets, no async, no clock, no entropy: time comes in as `now_ms`, randomness from a
//! seeded [`Rng`], and the controller's answers go out as [`controller::Effect`]s. Modelled
//! on Kafka KRaft's metadata log (`metadata/src/main/resources/common/metadata/*.json`).
//! It is the state machine of the controller Raft group ([`CONTROLLER_GROUP`] in
//! `sluice-raft`'s `GroupManager` on shard 0 of the voters, driven by `sluice-cluster`).
//!
//! # Layout
//!
//! - `record`: the records (RegisterBroker, Fence/UnfenceBroker, Topic, Partition,
//!   PartitionChange, Config, ProducerIds, RemoveTopic, ScramCredential and its removal,
//!   Acl and RemoveAcl, ClientQuota, FeatureLevel, ClusterId, Revision).
//! - `features`: the feature levels (KIP-584) this build supports, a new cluster's levels,
//!   and UpdateFeatures' checks.
//! - `acl`: access-control bindings and filters in Kafka's codes, and their validation.
//! - `client_metrics`: client-metrics subscriptions (KIP-714) and their checks.
//! - `tokens`: delegation tokens (KIP-48): the record, lifetimes, renew/expire checks.
//! - `quota`: client-quota entities and keys, their validation and lookup order.
//! - `codec`: their versioned binary encoding (the format is documented there).
//! - `image`: [`MetadataImage`], built by applying records in order; each application
//!   reports a [`Delta`]; [`MetadataImage::snapshot`] gives records that rebuild it.
//! - `placement`: Kafka's rack-unaware replica assignment and the preferred-leader check.
//! - `controller`: [`Controller`], CreateTopics, DeleteTopics, CreatePartitions,
//!   AlterConfigs, AllocateProducerIds, AlterPartitionReassignments (and the partition
//!   leader's report that one completed), broker registration, heartbeats and fencing.
//! - `reconcile`: what a node must do with its local replicas after a delta.
//! - `leaders`: who leads each partition as this node knows it ([`leaders::LeaderTable`]),
//!   from its own Raft groups and the other nodes' reports (leaders are not log records).
//! - `bootstrap`: today's single-node `cluster/state.json` as the first records of a log.
//! - `limits`: the named limits (shared with the broker's single-node checks).
//!
//! # Driving it (the broker's side, through sluice-cluster)
//!
//! - Every node: replay the controller log (snapshot batches, then entries) into a
//!   [`MetadataImage`] with `apply_batch`; an entry that does not decode or apply means a
//!   damaged or foreign log: stop there and refuse to serve rather than guess.
//! - The node leading [`CONTROLLER_GROUP`]: a [`Controller`] over that image. Call
//!   `become_active(now)` once its election no-op has committed and every earlier entry was
//!   passed to `committed`, `become_inactive()` when it stops leading. Commands (`create_topics`,
//!   `delete_topics`, `create_partitions`, `alter_configs`, `allocate_producer_ids`,
//!   `alter_partition_reassignments`, `reassignment_complete`, `register_broker`,
//!   `broker_heartbeat`) and `tick(now)` return [`controller::Effect`]s:
//!   `Propose { id, batch }` → propose `batch` as one entry and report `committed(Some(id),
//!   records)` or `failed(id)`; `Reply` → encode the answer; `ScheduleTick` → keep one
//!   timer at the earliest; `Warn` → log it.
//! - Every committed entry, on every node and in log order: decode it, pass it to
//!   `Controller::committed` (leader or not; it applies it and answers what waited on it)
//!   or to `MetadataImage::apply_batch`, and hand the returned [`Delta`] with the batch to
//!   the shards, which apply the same batch to their own images and reconcile.
//! - Bootstrap: a data directory with today's `cluster/state.json` and no controller log
//!   starts the log with [`bootstrap_records`] of it (split by `codec::encode_batches`).
//!
//! # Tests
//!
//! `cargo test -p sluice-meta`: unit tests beside the code (`src/tests.rs`), among them a
//! hostile-bytes loop over the decoder and a seeded random-command run (40 seeds; hostile
//! values, failed proposals (the front one or a later one), leadership changes, fencing)
//! that checks the controller never builds a record its image refuses, a follower's image
//! equals the controller's, every request is answered once, and snapshots replay exactly.
//! `SLUICE_META_SEEDS=N` runs N seeds (a soak); a failing seed is printed with the command
//! that replays it.
//!
//! # Invariants
//!
//! - Decoding never panics and never allocates more than the input can back: hostile
//!   bytes are an error. Every record has a type and a version; an unknown type, a version
//!   newer than this build, or trailing bytes are refused, never skipped or misread.
//! - Anything encodable decodes (the encoder refuses what the decoder would), so the
//!   controller never proposes a batch that replay would refuse.
//! - `apply` is deterministic: the same records in the same order give the same image on
//!   every node (ordered maps only; no clock, no randomness in apply).
//! - `apply` validates each record first and changes nothing for an invalid one: a partition
//!   of an unknown topic or out of order, a duplicate or colliding topic name, a reused or
//!   zero topic id, a replica set with a node twice or a node over its replica limit, a
//!   fence of an unknown node or stale epoch, a config change that changes nothing, an
//!   overlapping producer-id block. The controller validates its commands against its
//!   speculative image and asserts that its records apply, so a committed log holds only
//!   valid records. Derived indexes are asserted after every batch in tests.
//! - Revisions (partition revisions and broker epochs) come from one counter that only
//!   grows, also across topic deletion, so a replica re-created on a node is a new replica.
//! - Producer-id blocks never overlap and only move up.
//! - Every topic has at least one partition (`replay` refuses a list that leaves one
//!   without). A partition's replicas are distinct and at least one; during a reassignment
//!   they are the target followed by the leaving ones, the joining and leaving ones among
//!   them and apart; every change of them raises the partition's revision.
//! - `replay(snapshot(image)) == image`.
//! - The controller answers a mutating request only when its records commit (or fails it
//!   with NOT_CONTROLLER when they will not); validation errors are answered at once. It
//!   validates against committed + in-flight records, so concurrent requests cannot both
//!   succeed where one excludes the other. A proposal the Raft layer refuses fails with
//!   every later one (validated on top of it), never an earlier one (it may still commit);
//!   the driver reports the refusal before it proposes anything else.
//! - Placement is Kafka's: leaders round-robin over the live (registered, unfenced) nodes
//!   from a random start, followers rotated by a shift that moves every `n` partitions;
//!   deterministic for a given seed.

pub mod acl;
pub mod bootstrap;
pub mod client_metrics;
pub mod codec;
pub mod controller;
pub mod features;
pub mod image;
pub mod leaders;
pub mod limits;
pub mod placement;
pub mod quota;
pub mod reconcile;
pub mod record;
pub mod rng;
pub mod tokens;

#[cfg(test)]
mod tests;

pub use bootstrap::{bootstrap_records, LegacyState, LegacyTopic};
pub use codec::{decode_batch, encode_batch, DecodeError};
pub use controller::{
    Answer, ApiError, Controller, ControllerConfig, Effect, NewTopic, ProposalId, ReplyToken,
};
pub use image::{Delta, InvalidRecord, MetadataImage, PartitionImage, TopicImage};
pub use reconcile::{replica_actions, ReplicaAction};
pub use record::{
    BrokerRegistration, ConfigResource, Endpoint, ListenerEndpoint, NodeId, PartitionRecord,
    ProducerIdsBlock, Record, ScramRecord, TopicId, LISTENERS_MAX, PLAINTEXT_LISTENER,
};
pub use rng::Rng;

/// The Raft group id reserved for the controller in `sluice-raft`'s `GroupManager`, the same
/// on every node; the broker must give partition groups other ids.
pub const CONTROLLER_GROUP: u64 = 0;
