//! GetTelemetrySubscriptions and PushTelemetry (KIP-714, v0): a client asks which of its
//! metrics the `client-metrics` subscriptions want and how often, then pushes them as OTLP;
//! the pushed series appear on `/metrics`. Kafka's checks and codes come from
//! `sluice_telemetry`; this shard's state is `crate::telemetry_host`. Like Kafka, neither
//! API is authorized (any authenticated client may push its own metrics).

use sluice_codec::kafka_protocol::messages::{
    GetTelemetrySubscriptionsRequest, GetTelemetrySubscriptionsResponse, PushTelemetryRequest,
    PushTelemetryResponse,
};
use sluice_codec::RequestHeaderInfo;
use sluice_telemetry::{code, payload, PushCheck, ACCEPTED_COMPRESSION};

use super::{str_bytes, uuid};
use crate::conn::Client;
use crate::shard::{now_ms, BrokerShard};
use crate::telemetry_host::client_meta;

fn now() -> u64 {
    now_ms().max(0) as u64
}

pub fn get(
    shard: &BrokerShard,
    client: &Client,
    h: &RequestHeaderInfo,
    r: GetTelemetrySubscriptionsRequest,
) -> GetTelemetrySubscriptionsResponse {
    let meta = client_meta(client, h.client_id.as_deref());
    let configs = shard.shared_handle.client_metrics.get();
    let mut t = shard.telemetry.borrow_mut();
    let (subs, generation) = t.subscriptions(configs);
    let asked = r.client_instance_id.into_bytes();
    let answer = t.instances.get(
        now(),
        client.conn.0,
        asked,
        &meta,
        &subs,
        generation,
        || *uuid::Uuid::new_v4().as_bytes(),
    );
    match answer {
        Ok((id, requested)) => GetTelemetrySubscriptionsResponse::default()
            .with_client_instance_id(uuid(&id))
            .with_subscription_id(requested.subscription_id)
            .with_accepted_compression_types(ACCEPTED_COMPRESSION.to_vec())
            .with_push_interval_ms(requested.interval_ms)
            .with_telemetry_max_bytes(shard.config.telemetry_max_bytes)
            // The series keep deltas as counters; cumulative sums would be kept too.
            .with_delta_temporality(true)
            .with_requested_metrics(requested.metrics.iter().map(|m| str_bytes(m)).collect()),
        Err(refusal) => {
            log::debug!(
                "GetTelemetrySubscriptions from {}: {}",
                client.host,
                refusal.message
            );
            GetTelemetrySubscriptionsResponse::default().with_error_code(refusal.code)
        }
    }
}

pub fn push(
    shard: &BrokerShard,
    client: &Client,
    h: &RequestHeaderInfo,
    r: PushTelemetryRequest,
) -> PushTelemetryResponse {
    let meta = client_meta(client, h.client_id.as_deref());
    let configs = shard.shared_handle.client_metrics.get();
    let mut t = shard.telemetry.borrow_mut();
    let (subs, generation) = t.subscriptions(configs);
    let check = PushCheck {
        instance_id: r.client_instance_id.into_bytes(),
        subscription_id: r.subscription_id,
        terminating: r.terminating,
        compression: r.compression_type,
        bytes: r.metrics.len(),
        max_bytes: shard.config.telemetry_max_bytes.max(0) as usize,
    };
    let now = now();
    let verdict = t
        .instances
        .push(now, client.conn.0, check, &meta, &subs, generation)
        .and_then(|(meta, requested)| {
            let data = payload::decode(r.compression_type, &r.metrics)?;
            t.series
                .record(now, &check.instance_id, &meta, requested.interval_ms, &data);
            Ok(())
        });
    let error = match verdict {
        Ok(()) => code::NONE,
        Err(refusal) => {
            log::debug!("PushTelemetry from {}: {}", client.host, refusal.message);
            refusal.code
        }
    };
    PushTelemetryResponse::default().with_error_code(error)
}
