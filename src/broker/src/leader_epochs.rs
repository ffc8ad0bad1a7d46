//! The current leader epoch of every partition whose log this process has open, shared by
//! all shards so that Metadata (answered on the connection's shard) reports the epoch the
//! owning shard validates requests against, without a call per partition.
//!
//! The owning shard is the only writer of its partitions' entries: it sets one when it opens
//! a single-replica log (its epoch never changes after), and for a replicated partition
//! whenever this node becomes its Raft leader (the term; `crate::replication`); it removes
//! it when the partition goes.

use std::collections::HashMap;
use std::sync::Mutex;

/// Epochs by (topic id, partition). Not on the produce or fetch path: only Metadata reads it.
#[derive(Default)]
pub struct LeaderEpochs {
    map: Mutex<HashMap<([u8; 16], i32), i32>>,
}

impl LeaderEpochs {
    pub fn set(&self, topic_id: [u8; 16], partition: i32, epoch: i32) {
        debug_assert!(epoch >= 0, "leader epochs are never negative");
        self.lock().insert((topic_id, partition), epoch);
    }

    pub fn remove(&self, topic_id: [u8; 16], partition: i32) {
        self.lock().remove(&(topic_id, partition));
    }

    /// The epoch of one partition (0 if its log is not open yet; see [`Self::of_topic`]).
    pub fn of_partition(&self, topic_id: [u8; 16], partition: i32) -> i32 {
        self.lock()
            .get(&(topic_id, partition))
            .copied()
            .unwrap_or(0)
    }

    /// The epochs of partitions `0..count` of a topic. A partition whose log is not open yet
    /// (its shard is still applying the topic) is at epoch 0, as every new log is; a client
    /// that sent 0 to a log at a later epoch is told FENCED_LEADER_EPOCH and refreshes.
    pub fn of_topic(&self, topic_id: [u8; 16], count: i32) -> Vec<i32> {
        let map = self.lock();
        (0..count)
            .map(|p| map.get(&(topic_id, p)).copied().unwrap_or(0))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<([u8; 16], i32), i32>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_partitions_are_at_epoch_zero() {
        let e = LeaderEpochs::default();
        e.set([1; 16], 1, 4);
        e.set([2; 16], 0, 9);
        assert_eq!(e.of_topic([1; 16], 3), vec![0, 4, 0]);
        e.remove([1; 16], 1);
        assert_eq!(e.of_topic([1; 16], 2), vec![0, 0]);
        assert_eq!(e.of_topic([2; 16], 1), vec![9]);
    }
}
