//! The client-metrics subscriptions (KIP-714) this node has adopted from the controller
//! log: `client-metrics` config resources by name, for DescribeConfigs, AlterConfigs,
//! ListConfigResources and the telemetry APIs that hand them to clients
//! (`crate::telemetry_host`, which compiles them once per change). Shard 0 sets them on
//! every adoption (replaced only when they changed, so a changed `Arc` means a change);
//! every shard reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Subscriptions by name, each with its overrides (never empty).
pub type Subscriptions = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Default)]
pub struct ClientMetricsStore {
    current: Mutex<Arc<Subscriptions>>,
}

impl ClientMetricsStore {
    /// Adopts the image's subscriptions (a no-op when they did not change).
    pub fn set(&self, subscriptions: &Subscriptions) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if **cur != *subscriptions {
            *cur = Arc::new(subscriptions.clone());
        }
    }

    pub fn get(&self) -> Arc<Subscriptions> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
