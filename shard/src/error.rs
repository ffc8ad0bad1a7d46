//! `ShardError`: every failure the shard runtime reports, each with enough context to act on.

use std::fmt;
use std::io;

use crate::table::ShardId;

/// Errors of the shard runtime, the mesh, frames and the shard table.
///
/// Variants carry the values that explain the failure (which shard, which limit, which type)
/// so a log line alone is enough to diagnose it.
#[derive(Debug)]
pub enum ShardError {
    /// The configuration was rejected before any thread started.
    Config { field: &'static str, reason: String },
    /// A shard's executor (io_uring rings, CPU pinning, thread) could not be created.
    Startup { shard: ShardId, reason: String },
    /// A shard thread ended with a panic; the panic message when it was a string.
    ShardPanicked { shard: ShardId, message: String },
    /// A shard id outside `0..shard_count`.
    NoSuchShard { shard: ShardId, shard_count: usize },
    /// A partition index that cannot be assigned (negative).
    BadPartition { partition: i32 },
    /// The shard table would exceed its `partitions_max`.
    TableFull { partitions_max: usize },
    /// Serializing a value into a frame failed.
    Encode {
        type_name: &'static str,
        reason: String,
    },
    /// A frame body failed validation as the requested archived type.
    Decode {
        type_name: &'static str,
        reason: String,
    },
    /// A frame body is larger than [`crate::frame::FRAME_BODY_MAX`].
    FrameTooLarge { len: usize, frame_body_max: usize },
    /// The peer shard closed its end of the mesh (it stopped or is stopping).
    PeerGone { shard: ShardId },
    /// This shard's mesh endpoint was closed; no more calls can be made.
    MeshClosed { shard: ShardId },
    /// A call to this shard itself found no handler installed.
    NoHandler { shard: ShardId },
    /// The remote shard could not run its handler for our request.
    HandlerFailed { shard: ShardId },
    /// A task could not be spawned into a task queue.
    Spawn { queue: &'static str, reason: String },
    /// An IO operation failed.
    Io { context: String, source: io::Error },
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShardError::Config { field, reason } => {
                write!(f, "invalid shard config `{field}`: {reason}")
            }
            ShardError::Startup { shard, reason } => {
                write!(f, "shard {} failed to start: {reason}", shard.0)
            }
            ShardError::ShardPanicked { shard, message } => {
                write!(f, "shard {} panicked: {message}", shard.0)
            }
            ShardError::NoSuchShard { shard, shard_count } => {
                write!(
                    f,
                    "shard {} does not exist (shard count {shard_count})",
                    shard.0
                )
            }
            ShardError::BadPartition { partition } => {
                write!(f, "partition index {partition} is negative")
            }
            ShardError::TableFull { partitions_max } => {
                write!(f, "shard table is full (partitions_max {partitions_max})")
            }
            ShardError::Encode { type_name, reason } => {
                write!(f, "encoding {type_name} into a frame failed: {reason}")
            }
            ShardError::Decode { type_name, reason } => {
                write!(f, "frame body is not a valid {type_name}: {reason}")
            }
            ShardError::FrameTooLarge {
                len,
                frame_body_max,
            } => {
                write!(
                    f,
                    "frame body of {len} bytes exceeds frame_body_max {frame_body_max}"
                )
            }
            ShardError::PeerGone { shard } => write!(f, "shard {} left the mesh", shard.0),
            ShardError::MeshClosed { shard } => {
                write!(f, "mesh endpoint of shard {} is closed", shard.0)
            }
            ShardError::NoHandler { shard } => {
                write!(f, "shard {} has no frame handler installed", shard.0)
            }
            ShardError::HandlerFailed { shard } => {
                write!(
                    f,
                    "shard {} could not run the handler for the request",
                    shard.0
                )
            }
            ShardError::Spawn { queue, reason } => {
                write!(f, "spawning into task queue `{queue}` failed: {reason}")
            }
            ShardError::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for ShardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ShardError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ShardError {
    /// Wraps an IO error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> ShardError {
        ShardError::Io {
            context: context.into(),
            source,
        }
    }
}
