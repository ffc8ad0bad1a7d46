//! Sans-IO partition replication for sluice (header written below).

pub mod effect;
pub mod log;
pub mod manager;
pub mod rng;
#[cfg(test)]
mod sim;

pub use effect::{
    Effect, Envelope, GroupId, Heartbeat, NodeId, ProposalToken, ProposeError, Role, Write,
};
pub use log::{entry_records, OffsetSpan, ReplicaLog};
pub use manager::{Batch, Config, Error, GroupManager, GroupStatus};
pub use rng::Rng;
