//! Broker metrics: what each shard counts, kept by that shard alone ([`recorder`]); the
//! plain-data snapshot a shard takes of it and of its partitions, groups and executor
//! ([`snapshot`]); and the Prometheus exposition of every shard's snapshot, merged at
//! scrape time ([`exposition`]), in the OpenMetrics text format ([`text`]).
//!
//! Invariants:
//! - Recording touches only the recording thread's own state (a thread-local `RefCell`): no
//!   atomics shared between shards, no locks. A scrape asks each shard for a snapshot (the
//!   broker sends it a mesh message), so the cost of collecting lands on the scrape.
//! - Counters only grow for the life of the process, except that a partition's counters go
//!   when its shard no longer owns it (its series end with it).
//! - Label sets are bounded: API keys below [`recorder::API_KEYS_MAX`], error codes, one
//!   series per owned partition (per topic with `aggregate`, Redpanda's
//!   `aggregate_metrics`), and per group and partition for committed offsets and lag.
//! - Every histogram has the same log-linear bounds ([`histogram`]), so shards merge by
//!   adding counts.

pub mod exposition;
pub mod histogram;
pub mod recorder;
pub mod snapshot;
pub mod text;

pub use exposition::{render, render_with, Node, CONTENT_TYPE};
pub use histogram::Histogram;
pub use snapshot::ShardSnapshot;
