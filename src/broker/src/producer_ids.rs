//! Producer ids: every node hands out ids from blocks the controller allocated to it in the
//! metadata log (Kafka's `AllocateProducerIds`), so no two nodes, and no two starts of one,
//! ever hand out the same id. A data directory from before the controller log kept its own
//! allocator's durable mark in `cluster/producer-id-block`: [`legacy_end`] reads it so that
//! the log's first block starts above every id that allocator may have handed out.

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use crate::error::BrokerError;

/// The old single-node allocator's durable end (0 without the file): ids below it may have
/// been handed out.
pub fn legacy_end(data_dir: &Path) -> Result<i64, BrokerError> {
    let path = data_dir.join("cluster").join("producer-id-block");
    match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<i64>().map_err(|e| BrokerError::State {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(BrokerError::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

/// The current block, shared by all shards; a spent block is replaced by asking shard 0,
/// which asks the controller (one request at a time: see `metadata_sync`).
#[derive(Default)]
pub struct ClusterBlocks {
    /// `(next, end)` of the current block.
    block: Mutex<(i64, i64)>,
}

impl ClusterBlocks {
    /// The next id of the current block, if it has one left.
    pub fn take(&self) -> Option<i64> {
        let mut b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if b.0 < b.1 {
            b.0 += 1;
            return Some(b.0 - 1);
        }
        None
    }

    /// Whether the current block has an id left.
    pub fn has_ids(&self) -> bool {
        let b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        b.0 < b.1
    }

    /// Starts using a new block `first..end` (a block older than the current one, from a
    /// request that raced another, is ignored: blocks only move up).
    pub fn adopt(&self, first: i64, end: i64) {
        let mut b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if first >= b.1 && first < end {
            *b = (first, end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hand_out_each_id_once_and_only_move_up() {
        let b = ClusterBlocks::default();
        assert_eq!(b.take(), None);
        b.adopt(1000, 1002);
        assert_eq!(
            (b.take(), b.take(), b.take()),
            (Some(1000), Some(1001), None)
        );
        b.adopt(0, 1000);
        assert_eq!(b.take(), None, "an older block is ignored");
        b.adopt(5000, 6000);
        assert_eq!(b.take(), Some(5000));
    }

    #[test]
    fn the_legacy_mark_reads_what_the_old_allocator_wrote() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_end(dir.path()).unwrap(), 0);
        fs::create_dir_all(dir.path().join("cluster")).unwrap();
        fs::write(dir.path().join("cluster/producer-id-block"), "3000").unwrap();
        assert_eq!(legacy_end(dir.path()).unwrap(), 3000);
    }
}
