//! DescribeUserScramCredentials (any shard, from this node's view of the metadata image) and
//! AlterUserScramCredentials (on the controller shard, through the controller), as
//! `kafka-configs.sh --entity-type users --alter --add-config 'SCRAM-SHA-256=[...]'` uses
//! them. Clients send salted passwords, never passwords; the broker keeps only the derived
//! keys. Results are per user, with Kafka's codes and messages.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use sluice_codec::kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use sluice_codec::kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use sluice_codec::RequestHeaderInfo;
use sluice_meta::controller::ScramChange;
use sluice_meta::ScramRecord;
use sluice_security::{ScramCredential, ScramMechanism};

use super::str_bytes;
use crate::kerr;
use crate::shard::BrokerShard;

const RESOURCE_NOT_FOUND: i16 = 91;
const DUPLICATE_RESOURCE: i16 = 92;

pub fn describe(
    shard: &BrokerShard,
    _h: &RequestHeaderInfo,
    r: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let all = shard.shared_handle.credentials.all();
    let mut by_user: BTreeMap<&str, Vec<CredentialInfo>> = BTreeMap::new();
    for ((user, mechanism), c) in all.iter() {
        by_user.entry(user).or_default().push(
            CredentialInfo::default()
                .with_mechanism(*mechanism)
                .with_iterations(c.iterations as i32),
        );
    }
    // Kafka's messages are null on success (the codec's default is empty).
    let result = |user: &str| {
        DescribeUserScramCredentialsResult::default()
            .with_user(str_bytes(user))
            .with_error_message(None)
    };
    let results = match &r.users {
        // Null: every user with a credential.
        None => by_user
            .iter()
            .map(|(u, infos)| result(u).with_credential_infos(infos.clone()))
            .collect(),
        Some(users) => {
            // Counted once: a request may name very many users.
            let mut named: HashMap<&str, usize> = HashMap::new();
            for u in users {
                *named.entry(u.name.as_str()).or_default() += 1;
            }
            let one = |name: &str| {
                if named[name] > 1 {
                    return result(name)
                        .with_error_code(DUPLICATE_RESOURCE)
                        .with_error_message(Some(str_bytes(
                            "Cannot describe SCRAM credentials for the same user twice in a \
                             single request",
                        )));
                }
                match by_user.get(name) {
                    Some(infos) => result(name).with_credential_infos(infos.clone()),
                    None => result(name)
                        .with_error_code(RESOURCE_NOT_FOUND)
                        .with_error_message(Some(str_bytes(
                            "Attempt to describe a user credential that does not exist",
                        ))),
                }
            };
            users.iter().map(|u| one(u.name.as_str())).collect()
        }
    };
    DescribeUserScramCredentialsResponse::default()
        .with_error_message(None)
        .with_results(results)
}

pub async fn alter(
    shard: &Rc<BrokerShard>,
    _h: &RequestHeaderInfo,
    r: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    let mut changes: Vec<ScramChange> = r
        .deletions
        .iter()
        .map(|d| ScramChange::Delete {
            user: d.name.to_string(),
            mechanism: d.mechanism,
        })
        .collect();
    for u in &r.upsertions {
        let iterations = u32::try_from(u.iterations).unwrap_or(0);
        let record = match ScramMechanism::from_id(u.mechanism) {
            Some(m) => {
                let c = ScramCredential::from_salted_password(
                    m,
                    &u.salted_password,
                    &u.salt,
                    iterations,
                );
                crate::scram_store::record(&u.name, &c)
            }
            // The controller answers UNSUPPORTED_SASL_MECHANISM before it looks at the keys.
            None => ScramRecord {
                user: u.name.to_string(),
                mechanism: u.mechanism,
                salt: u.salt.to_vec(),
                iterations,
                stored_key: Vec::new(),
                server_key: Vec::new(),
            },
        };
        changes.push(ScramChange::Upsert(record));
    }
    let outcomes = match shard.controller.as_ref().and_then(|c| c.cluster()) {
        Some(node) => crate::metadata_sync::alter_scram(shard, &node, changes).await,
        None => changes
            .iter()
            .map(|c| {
                let e = (
                    kerr::NOT_CONTROLLER,
                    "The controller is not available.".to_string(),
                );
                (c.user().to_string(), Err(e))
            })
            .collect(),
    };
    // One result per user, in the order users first appear; its first error, if any.
    let mut results: Vec<AlterUserScramCredentialsResult> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (user, outcome) in outcomes {
        let i = *index.entry(user.clone()).or_insert_with(|| {
            results.push(
                AlterUserScramCredentialsResult::default()
                    .with_user(str_bytes(&user))
                    .with_error_message(None),
            );
            results.len() - 1
        });
        if let (Err((code, msg)), 0) = (outcome, results[i].error_code) {
            results[i].error_code = code;
            results[i].error_message = Some(str_bytes(&msg));
        }
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}
