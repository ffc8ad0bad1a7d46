//! Turning today's single-node cluster state (`cluster/state.json`, the broker's
//! `ClusterState`) into the first records of a controller log, so a data directory of a
//! single-node sluice upgrades in place. Takes plain data: this crate does not depend on the
//! broker.

use std::collections::BTreeMap;

use crate::image::{InvalidRecord, MetadataImage};
use crate::limits::PRODUCER_ID_BLOCK_SIZE_MAX;
use crate::record::{ConfigResource, NodeId, PartitionRecord, ProducerIdsBlock, Record, TopicId};

/// One topic of the old state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTopic {
    pub name: String,
    pub id: TopicId,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

/// The old state's content (its `internal` flags follow from the names; its `version` has
/// no meaning in a log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyState {
    pub cluster_id: String,
    /// The node that held every partition.
    pub node: NodeId,
    pub topics: Vec<LegacyTopic>,
    /// Dynamic cluster-wide broker configs.
    pub broker_configs: BTreeMap<String, String>,
    /// Producer ids below this may have been handed out.
    pub producer_id_next_block: i64,
}

/// The revision every bootstrapped partition gets.
pub const BOOTSTRAP_REVISION: u64 = 1;

/// The records that express `state`: the cluster id, the revision mark, feature levels, the
/// cluster configs, every topic with its partitions (one replica each, on `state.node`) and
/// a producer-id block ending where the old allocation would have resumed. Checked by replaying them, so
/// a state the image refuses (a duplicate name, a bad id) is an error, never a bad log.
/// The node's own registration is not included: every start registers anew.
pub fn bootstrap_records(state: &LegacyState) -> Result<Vec<Record>, InvalidRecord> {
    let mut out = vec![
        Record::ClusterId {
            cluster_id: state.cluster_id.clone(),
        },
        Record::Revision {
            revision: BOOTSTRAP_REVISION,
        },
    ];
    // A state that holds nothing (a node's first start makes one) is a new cluster and gets
    // a new cluster's levels; any other is an upgrade in place and keeps the levels it
    // served before features existed, so nothing a client sees changes.
    let empty = state.topics.is_empty()
        && state.broker_configs.is_empty()
        && state.producer_id_next_block == 0;
    let levels = if empty {
        crate::features::bootstrap_levels()
    } else {
        crate::features::upgrade_levels()
    };
    for (name, level) in levels {
        out.push(Record::FeatureLevel { name, level });
    }
    for (k, v) in &state.broker_configs {
        out.push(Record::Config {
            resource: ConfigResource::Broker(None),
            key: k.clone(),
            value: Some(v.clone()),
        });
    }
    for t in &state.topics {
        out.push(Record::Topic {
            name: t.name.clone(),
            id: t.id,
            configs: t.configs.clone(),
        });
        if t.partitions < 1 {
            // Every topic has a partition 0 (CreatePartitions and placement start there).
            return Err(InvalidRecord(format!(
                "{}: {} partitions, at least 1 needed",
                t.name, t.partitions
            )));
        }
        for p in 0..t.partitions {
            out.push(Record::Partition(PartitionRecord {
                topic: t.id,
                partition: p,
                replicas: vec![state.node],
                revision: BOOTSTRAP_REVISION,
                adding: Vec::new(),
                removing: Vec::new(),
            }));
        }
    }
    if state.producer_id_next_block > 0 {
        let size = state
            .producer_id_next_block
            .min(i64::from(PRODUCER_ID_BLOCK_SIZE_MAX)) as u32;
        out.push(Record::ProducerIds(ProducerIdsBlock {
            node: state.node,
            first: state.producer_id_next_block - i64::from(size),
            size,
        }));
    }
    MetadataImage::replay(&out)?;
    Ok(out)
}
