//! Replica placement as Kafka's rack-unaware assignment does it, and the preferred-leader
//! check behind Kafka's periodic leader rebalance.
//!
//! Assignment: with the live nodes sorted by id, partition `p`'s first replica (its
//! preferred leader) is node `(p + start) % n`, so leaders go round-robin; the other replicas
//! follow it at distances `1 + (shift + j) % (n - 1)`, where `shift` grows by one every `n`
//! partitions, so followers rotate over all other nodes too. `start` and the initial `shift`
//! are random per topic (from the caller's seeded [`Rng`]), so many small topics do not all
//! lead on the lowest node. New partitions of an existing topic continue its pattern from
//! the node of its partition 0's preferred leader.

use std::collections::BTreeMap;

use crate::image::MetadataImage;
use crate::record::{NodeId, TopicId};
use crate::rng::Rng;

/// Kafka's `leader.imbalance.per.broker.percentage`.
pub const LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: u64 = 10;
/// Kafka's `leader.imbalance.check.interval.seconds`, in ms.
pub const LEADER_IMBALANCE_CHECK_INTERVAL_MS: i64 = 300_000;

/// Where the partitions of one assignment start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A new topic: random start node and shift.
    Random,
    /// More partitions of a topic: continue from this node index, from partition `first`.
    Continue { index: usize, first: i32 },
}

/// Replica lists for `count` partitions of replication factor `rf` over `nodes` (sorted,
/// distinct). The caller has checked `1 <= rf <= nodes.len()`.
pub fn assign(
    nodes: &[NodeId],
    count: i32,
    rf: usize,
    start: Start,
    rng: &mut Rng,
) -> Vec<Vec<NodeId>> {
    let n = nodes.len();
    assert!(rf >= 1 && rf <= n, "replication factor {rf} over {n} nodes");
    debug_assert!(
        nodes.windows(2).all(|w| w[0] < w[1]),
        "nodes sorted and distinct"
    );
    let (start_index, mut shift, first) = match start {
        Start::Random => (
            rng.below(n as u64) as usize,
            rng.below(n as u64) as usize,
            0,
        ),
        Start::Continue { index, first } => (index % n, index % n, first.max(0) as usize),
    };
    let mut out = Vec::with_capacity(count.max(0) as usize);
    for p in first..first + count.max(0) as usize {
        if p > 0 && p % n == 0 {
            shift += 1;
        }
        let lead = (p + start_index) % n;
        let mut replicas = Vec::with_capacity(rf);
        replicas.push(nodes[lead]);
        for j in 0..rf - 1 {
            let distance = 1 + (shift + j) % (n - 1);
            replicas.push(nodes[(lead + distance) % n]);
        }
        out.push(replicas);
    }
    out
}

/// Where new partitions of a topic whose partition 0 is led (preferably) by `leader`
/// continue: the first live node with an id at or above it (Kafka's choice).
pub fn continue_from(nodes: &[NodeId], leader: NodeId, first: i32) -> Start {
    let index = nodes.iter().position(|&n| n >= leader).unwrap_or(0);
    Start::Continue { index, first }
}

/// The preferred-leader elections Kafka's periodic rebalance would run
/// (`auto.leader.rebalance.enable`): for every live node whose share of partitions it should
/// lead but does not is over [`LEADER_IMBALANCE_PER_BROKER_PERCENTAGE`], each such partition
/// whose preferred leader is live. `leader_of` gives a partition's current leader, if any.
pub fn preferred_leader_elections(
    image: &MetadataImage,
    mut leader_of: impl FnMut(&TopicId, i32) -> Option<NodeId>,
) -> Vec<(TopicId, i32, NodeId)> {
    let live = image.live_brokers();
    // Per preferred node: partitions it should lead, and those it does not.
    let mut preferred: BTreeMap<NodeId, (u64, Vec<(TopicId, i32)>)> = BTreeMap::new();
    for t in image.topics() {
        for (i, p) in t.partitions.iter().enumerate() {
            let node = p.preferred_leader();
            let e = preferred.entry(node).or_default();
            e.0 += 1;
            if leader_of(&t.id, i as i32) != Some(node) {
                e.1.push((t.id, i as i32));
            }
        }
    }
    let mut out = Vec::new();
    for (node, (total, off)) in preferred {
        if !live.contains(&node) || total == 0 {
            continue;
        }
        if off.len() as u64 * 100 > total * LEADER_IMBALANCE_PER_BROKER_PERCENTAGE {
            out.extend(off.into_iter().map(|(t, p)| (t, p, node)));
        }
    }
    out
}
