//! Errors of the broker crate, with context.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum BrokerError {
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    State {
        path: PathBuf,
        reason: String,
    },
    TopicExists(String),
    Limit {
        what: &'static str,
        max: u64,
    },
    Storage(sluice_storage::StorageError),
    Shard(String),
    Config(String),
    /// The node stopped on its own, for this reason (see `Shared::stop_fatally`).
    Fatal(String),
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrokerError::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            BrokerError::State { path, reason } => {
                write!(f, "cluster state {}: {reason}", path.display())
            }
            BrokerError::TopicExists(t) => write!(f, "topic {t} already exists"),
            BrokerError::Limit { what, max } => write!(f, "limit of {max} {what} reached"),
            BrokerError::Storage(e) => write!(f, "storage: {e}"),
            BrokerError::Shard(e) => write!(f, "shard runtime: {e}"),
            BrokerError::Config(e) => write!(f, "configuration: {e}"),
            BrokerError::Fatal(e) => write!(f, "stopped: {e}"),
        }
    }
}

impl std::error::Error for BrokerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BrokerError::Io { source, .. } => Some(source),
            BrokerError::Storage(e) => Some(e),
            _ => None,
        }
    }
}

impl From<sluice_storage::StorageError> for BrokerError {
    fn from(e: sluice_storage::StorageError) -> Self {
        BrokerError::Storage(e)
    }
}
