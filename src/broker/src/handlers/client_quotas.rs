//! DescribeClientQuotas (any shard, from this node's adopted quotas) and AlterClientQuotas
//! (on the controller shard, through the controller), as `kafka-configs.sh --entity-type
//! users|clients|ips` and the Admin clients use them. Kafka's entity types (`user`,
//! `client-id`, `ip`), keys and error codes; enforcement is `crate::quotas`.

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::{
    alter_client_quotas_response, describe_client_quotas_response, AlterClientQuotasRequest,
    AlterClientQuotasResponse, DescribeClientQuotasRequest, DescribeClientQuotasResponse,
};
use sluice_meta::controller::QuotaAlteration;
use sluice_meta::quota::{filter_matches, Match, QuotaEntity, QuotaValue};

use super::str_bytes;
use crate::kerr;
use crate::shard::BrokerShard;

pub fn describe(
    shard: &BrokerShard,
    r: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    let fail = |message: String| {
        DescribeClientQuotasResponse::default()
            .with_error_code(kerr::INVALID_REQUEST)
            .with_error_message(Some(str_bytes(&message)))
    };
    let mut components = Vec::with_capacity(r.components.len());
    for c in &r.components {
        let m = match (c.match_type, &c._match) {
            (0, Some(name)) => Match::Exact(name.to_string()),
            (0, None) | (1, _) => Match::Default,
            (2, _) => Match::Specified,
            (t, _) => return fail(format!("Unknown match type {t}")),
        };
        let t = c.entity_type.to_string();
        if components.iter().any(|(have, _)| *have == t) {
            return fail(format!("Duplicate {t} in the filter"));
        }
        components.push((t, m));
    }
    let entries = shard
        .shared_handle
        .quotas
        .all()
        .iter()
        .filter(|(e, _)| filter_matches(e, &components, r.strict))
        .map(|(e, values)| {
            describe_client_quotas_response::EntryData::default()
                .with_entity(
                    e.pairs()
                        .into_iter()
                        .map(|(t, n)| {
                            describe_client_quotas_response::EntityData::default()
                                .with_entity_type(str_bytes(t))
                                .with_entity_name(n.map(str_bytes))
                        })
                        .collect(),
                )
                .with_values(
                    values
                        .iter()
                        .map(|(k, v)| {
                            describe_client_quotas_response::ValueData::default()
                                .with_key(str_bytes(k))
                                .with_value(v.0)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeClientQuotasResponse::default()
        .with_error_message(None)
        .with_entries(Some(entries))
}

pub async fn alter(
    shard: &Rc<BrokerShard>,
    r: AlterClientQuotasRequest,
) -> AlterClientQuotasResponse {
    // Per entry: refused here (a malformed entity), or sent to the controller.
    let mut refused: Vec<Option<(i16, String)>> = Vec::with_capacity(r.entries.len());
    let mut entries = Vec::new();
    for e in &r.entries {
        let pairs = e
            .entity
            .iter()
            .map(|d| (d.entity_type.as_str(), d.entity_name.as_deref()));
        match QuotaEntity::from_pairs(pairs) {
            Ok(entity) => {
                let ops = e
                    .ops
                    .iter()
                    .map(|o| {
                        let value = (!o.remove).then_some(QuotaValue(o.value));
                        (o.key.to_string(), value)
                    })
                    .collect();
                entries.push(QuotaAlteration { entity, ops });
                refused.push(None);
            }
            Err(why) => refused.push(Some((kerr::INVALID_REQUEST, why))),
        }
    }
    let n = entries.len();
    let mut answers = match shard.controller.as_ref().and_then(|c| c.cluster()) {
        Some(node) => {
            crate::metadata_sync::alter_quotas(shard, &node, entries, r.validate_only).await
        }
        None => {
            let e = (
                kerr::NOT_CONTROLLER,
                "The controller is not available.".to_string(),
            );
            vec![Err(e); n]
        }
    }
    .into_iter();
    let results = r
        .entries
        .into_iter()
        .zip(refused)
        .map(|(e, refusal)| {
            let outcome =
                refusal.map_or_else(|| answers.next().expect("one answer per entry"), Err);
            let entity = e
                .entity
                .into_iter()
                .map(|d| {
                    alter_client_quotas_response::EntityData::default()
                        .with_entity_type(d.entity_type)
                        .with_entity_name(d.entity_name)
                })
                .collect();
            let out = alter_client_quotas_response::EntryData::default().with_entity(entity);
            match outcome {
                // Kafka's message is null on success (the codec's default is empty).
                Ok(()) => out.with_error_message(None),
                Err((code, message)) => out
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(&message))),
            }
        })
        .collect();
    AlterClientQuotasResponse::default().with_entries(results)
}
