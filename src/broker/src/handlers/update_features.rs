//! UpdateFeatures (KIP-584, v0–v2): finalized feature levels changed through the
//! controller (shard 0), as `kafka-features.sh upgrade|downgrade|disable` sends them.
//! Checked by the controller (`sluice_meta::features::check_update`); all or nothing.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::update_features_response::UpdatableFeatureResult;
use sluice_codec::kafka_protocol::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use sluice_codec::RequestHeaderInfo;
use sluice_meta::features::{FeatureUpdate, UpgradeType};

use super::str_bytes;
use crate::kerr;
use crate::shard::BrokerShard;

pub async fn handle(
    shard: &Rc<BrokerShard>,
    h: &RequestHeaderInfo,
    r: UpdateFeaturesRequest,
) -> UpdateFeaturesResponse {
    let mut updates = Vec::with_capacity(r.feature_updates.len());
    for u in &r.feature_updates {
        // v0 has no upgrade type, and Kafka's controller reads v0 updates as upgrades (its
        // `allow_downgrade` flag is not consulted), so a v0 downgrade fails there too.
        let upgrade = if h.api_version == 0 {
            Some(UpgradeType::Upgrade)
        } else {
            UpgradeType::from_code(u.upgrade_type)
        };
        let Some(upgrade) = upgrade else {
            let m = format!(
                "{ALL_FAILED}Invalid update version {} for feature {}. The controller does not \
                 support the given upgrade type.",
                u.max_version_level, u.feature
            );
            return whole(kerr::INVALID_UPDATE_VERSION, &m);
        };
        updates.push(FeatureUpdate {
            name: u.feature.to_string(),
            level: u.max_version_level,
            upgrade,
        });
    }
    let names: Vec<String> = updates.iter().map(|u| u.name.clone()).collect();
    let answers = match shard.controller.as_ref().and_then(|c| c.cluster()) {
        Some(node) => {
            crate::metadata_sync::update_features(shard, &node, updates, r.validate_only).await
        }
        None => return whole(kerr::NOT_CONTROLLER, "The controller is not available."),
    };
    // The controller fails all or nothing: one error is the whole answer.
    if let Some((code, m)) = answers.iter().find_map(|a| a.as_ref().err()) {
        return whole(*code, m);
    }
    let response = UpdateFeaturesResponse::default().with_error_message(None);
    if h.api_version >= 2 {
        return response;
    }
    // v0 and v1 list each update; Kafka's message for success is its error's name, "NONE".
    response.with_results(
        names
            .iter()
            .map(|n| {
                UpdatableFeatureResult::default()
                    .with_feature(str_bytes(n))
                    .with_error_message(Some(str_bytes("NONE")))
            })
            .collect(),
    )
}

/// How the controller's failure message begins (Kafka's wording).
const ALL_FAILED: &str =
    "The update failed for all features since the following feature had an error: ";

/// The whole request failed with `code`: a top-level error and no per-feature results, as
/// Kafka answers every version.
pub fn whole(code: i16, message: &str) -> UpdateFeaturesResponse {
    UpdateFeaturesResponse::default()
        .with_error_code(code)
        .with_error_message(Some(str_bytes(message)))
}
