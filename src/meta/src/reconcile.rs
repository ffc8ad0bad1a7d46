//! What one node must do with its local replicas after a [`Delta`]: the input of the
//! per-shard reconcile loop (issue 12), which opens, changes and removes replicas (and their
//! Raft groups) until they match the image, retrying failures. Derived from the delta and
//! the image after it, so every node computes its own list from the same committed records.

use crate::image::{Delta, MetadataImage, PartitionImage};
use crate::record::{NodeId, TopicId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaAction {
    /// Create the local replica (the partition is new, or this node joins its replica set).
    /// `learner`: it joins a reassignment and catches up before it votes.
    Create {
        topic: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        learner: bool,
        revision: u64,
    },
    /// The replica set changed and this node stays in it: change the group's membership.
    Update {
        topic: TopicId,
        partition: i32,
        replicas: Vec<NodeId>,
        adding: Vec<NodeId>,
        removing: Vec<NodeId>,
        revision: u64,
    },
    /// Remove the local replica and its data (the topic is gone, or this node left).
    Remove { topic: TopicId, partition: i32 },
}

/// The actions for `node`'s replicas after `delta`, applied to make `image`; in topic id
/// and partition order.
pub fn replica_actions(delta: &Delta, image: &MetadataImage, node: NodeId) -> Vec<ReplicaAction> {
    let mut out = Vec::new();
    for (id, t) in &delta.removed_topics {
        for (i, p) in t.partitions.iter().enumerate() {
            if p.replicas.contains(&node) {
                out.push(ReplicaAction::Remove {
                    topic: *id,
                    partition: i as i32,
                });
            }
        }
    }
    let partition = |topic: &TopicId, p: i32| -> &PartitionImage {
        &image.topic(topic).expect("a topic of the delta").partitions[p as usize]
    };
    for (topic, p) in &delta.added_partitions {
        let now = partition(topic, *p);
        if now.replicas.contains(&node) {
            out.push(ReplicaAction::Create {
                topic: *topic,
                partition: *p,
                replicas: now.replicas.clone(),
                learner: now.adding.contains(&node),
                revision: now.revision,
            });
        }
    }
    for ((topic, p), before) in &delta.reassigned_partitions {
        let now = partition(topic, *p);
        let (was, is) = (before.contains(&node), now.replicas.contains(&node));
        let (topic, partition) = (*topic, *p);
        match (was, is) {
            (false, true) => out.push(ReplicaAction::Create {
                topic,
                partition,
                replicas: now.replicas.clone(),
                learner: now.adding.contains(&node),
                revision: now.revision,
            }),
            (true, true) => out.push(ReplicaAction::Update {
                topic,
                partition,
                replicas: now.replicas.clone(),
                adding: now.adding.clone(),
                removing: now.removing.clone(),
                revision: now.revision,
            }),
            (true, false) => out.push(ReplicaAction::Remove { topic, partition }),
            (false, false) => {}
        }
    }
    out
}
