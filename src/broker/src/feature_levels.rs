//! The finalized feature levels (KIP-584) this node has adopted from the controller log,
//! for ApiVersions and for the APIs a level turns on or off (group.version gates the
//! KIP-848 consumer group protocol). Shard 0 sets them on every adoption; every shard reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The levels and their epoch (the controller-log index of this node's latest adoption, as
/// Kafka reports the metadata offset of its image: higher means newer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalized {
    /// -1 until the first adoption (clients read that as "not known").
    pub epoch: i64,
    pub levels: BTreeMap<String, i16>,
}

impl Finalized {
    /// The level of `name` (0: not finalized).
    pub fn level(&self, name: &str) -> i16 {
        self.levels.get(name).copied().unwrap_or(0)
    }
}

pub struct FeatureStore {
    current: Mutex<Arc<Finalized>>,
}

impl Default for FeatureStore {
    fn default() -> Self {
        FeatureStore {
            current: Mutex::new(Arc::new(Finalized {
                epoch: -1,
                levels: BTreeMap::new(),
            })),
        }
    }
}

impl FeatureStore {
    /// Adopts the image's levels at controller-log index `index`: the epoch is the index of
    /// every adoption (as Kafka's is its image's offset), so a node that adopted later never
    /// reports a lower epoch than one that shows older levels.
    pub fn set(&self, levels: &BTreeMap<String, i16>, index: u64) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *cur = Arc::new(Finalized {
            epoch: i64::try_from(index).unwrap_or(i64::MAX),
            levels: levels.clone(),
        });
    }

    pub fn get(&self) -> Arc<Finalized> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
