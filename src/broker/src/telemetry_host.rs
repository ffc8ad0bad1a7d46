//! Client telemetry (KIP-714) on one shard: the `sluice_telemetry` state of the clients
//! whose connections landed here (instances, their pushed series) and the subscriptions
//! compiled from the controller's `client-metrics` resources, recompiled when shard 0
//! adopts a change. GetTelemetrySubscriptions and PushTelemetry run on the shard of their
//! connection (`handlers::telemetry`); `/metrics` reads the series through the shard's
//! snapshot (`metrics_host`).

use std::rc::Rc;
use std::sync::Arc;

use sluice_telemetry::series::{cut, Series};
use sluice_telemetry::{ClientMeta, Instances, Subscriptions};

use crate::client_metrics::Subscriptions as Configs;
use crate::conn::Client;

#[derive(Default)]
pub struct ShardTelemetry {
    pub instances: Instances,
    pub series: Series,
    /// The configs `compiled` was built from (the store replaces its `Arc` on a change),
    /// and how many changes this shard has seen (an instance computed at another
    /// generation has its subscription recomputed).
    source: Option<Arc<Configs>>,
    compiled: Rc<Subscriptions>,
    generation: u64,
}

impl ShardTelemetry {
    /// The subscriptions now in force and their generation.
    pub fn subscriptions(&mut self, current: Arc<Configs>) -> (Rc<Subscriptions>, u64) {
        let same = self
            .source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &current));
        if !same {
            self.compiled = Rc::new(Subscriptions::compile(&current));
            self.source = Some(current);
            self.generation += 1;
        }
        (self.compiled.clone(), self.generation)
    }

    pub fn connection_closed(&mut self, conn: u64) {
        self.instances.connection_closed(conn);
    }
}

/// What `client` says about itself, as Kafka's `ClientMetricsInstanceMetadata` has it.
pub fn client_meta(client: &Client, client_id: Option<&str>) -> ClientMeta {
    let software = client.software.borrow();
    let (name, version) = software
        .as_ref()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .unwrap_or(("", ""));
    // Clients' strings are cut to label length: every instance keeps its own copy.
    let or_unknown = |s: &str| cut(if s.is_empty() { "unknown" } else { s }.to_string());
    ClientMeta {
        client_id: cut(client_id.unwrap_or_default().to_string()),
        software_name: or_unknown(name),
        software_version: or_unknown(version),
        // An IPv4 client of a dual-stack listener as Java shows it (1.2.3.4).
        source_address: client
            .source
            .map(|a| a.ip().to_canonical().to_string())
            .unwrap_or_default(),
        source_port: client
            .source
            .map(|a| a.port().to_string())
            .unwrap_or_default(),
    }
}
