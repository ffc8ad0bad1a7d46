//! ApiVersions: the APIs and versions this broker serves, and the v0 fallback answer for a
//! client that asked with a version we do not know (so it can retry with one we do).

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use sluice_codec::kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use sluice_codec::{frame_response, RequestHeaderInfo};
use sluice_meta::features::FEATURES;

use super::str_bytes;
use crate::conn::{Client, Outcome};
use crate::kerr;
use crate::shard::BrokerShard;

fn api_list(shard: &BrokerShard) -> Vec<ApiVersion> {
    shard
        .api
        .iter()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub fn handle(
    shard: &BrokerShard,
    h: &RequestHeaderInfo,
    _r: ApiVersionsRequest,
) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default().with_api_keys(api_list(shard));
    if h.api_version < 3 {
        return response;
    }
    // Feature levels (v3+, KIP-584): what this build supports, and what the cluster has
    // finalized as this node last adopted it (`crate::feature_levels`).
    let finalized = shard.shared_handle.features.get();
    response
        .with_supported_features(
            FEATURES
                .iter()
                // Before v4, ranges starting at 0 are left out (KAFKA-17492: older clients
                // refuse them).
                .filter(|f| f.max > 0 && (h.api_version >= 4 || f.min != 0))
                .map(|f| {
                    SupportedFeatureKey::default()
                        .with_name(str_bytes(f.name))
                        .with_min_version(f.min)
                        .with_max_version(f.max)
                })
                .collect(),
        )
        .with_finalized_features_epoch(finalized.epoch)
        .with_finalized_features(
            finalized
                .levels
                .iter()
                .map(|(name, &level)| {
                    FinalizedFeatureKey::default()
                        .with_name(str_bytes(name))
                        .with_min_version_level(level)
                        .with_max_version_level(level)
                })
                .collect(),
        )
}

/// Keeps what the client says its software is (v3+; empty names are not kept), cut to a
/// label's length: telemetry subscriptions match on it.
pub fn note_software(client: &Client, r: &ApiVersionsRequest) {
    let (name, version) = (
        r.client_software_name.as_str(),
        r.client_software_version.as_str(),
    );
    if !name.is_empty() || !version.is_empty() {
        let cut = |s: &str| sluice_telemetry::series::cut(s.to_string());
        *client.software.borrow_mut() = Some((cut(name), cut(version)));
    }
}

/// Kafka's rule: an ApiVersions request of unknown version gets a v0 response with
/// UNSUPPORTED_VERSION and the API list.
pub fn unsupported_version(shard: &Rc<BrokerShard>, correlation_id: i32) -> Outcome {
    let body = ApiVersionsResponse::default()
        .with_error_code(kerr::UNSUPPORTED_VERSION)
        .with_api_keys(api_list(shard));
    match frame_response(correlation_id, 0, &body, 0) {
        Ok(b) => Outcome::Respond(b),
        Err(_) => Outcome::Close,
    }
}
