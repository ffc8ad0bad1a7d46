//! CreateDelegationToken (v1–3), RenewDelegationToken (v1–2), ExpireDelegationToken (v1–2)
//! and DescribeDelegationToken (v1–3) (KIP-48, as `kafka-delegation-tokens.sh` calls them):
//! the broker's checks in Kafka's order (`KafkaApis`: token requests only from an
//! authenticated, not token-authenticated connection, creating for another owner needs
//! CREATE_TOKENS on that user, renewers are users), then the controller's
//! (`sluice_meta::tokens`). Create, Renew and Expire run on shard 0 (they go through the
//! controller and answer once this node adopted the change); Describe on any shard, from
//! this node's adopted tokens (`crate::tokens_host`), each with its HMAC.

use std::rc::Rc;

use bytes::Bytes;

use sluice_codec::kafka_protocol::messages::describe_delegation_token_response::{
    DescribedDelegationToken, DescribedDelegationTokenRenewer,
};
use sluice_codec::kafka_protocol::messages::{
    CreateDelegationTokenRequest, CreateDelegationTokenResponse, DescribeDelegationTokenRequest,
    DescribeDelegationTokenResponse, ExpireDelegationTokenRequest, ExpireDelegationTokenResponse,
    RenewDelegationTokenRequest, RenewDelegationTokenResponse,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_meta::acl::{AclOperation, ResourceType};
use sluice_meta::controller::code::{
    DELEGATION_TOKEN_AUTHORIZATION_FAILED, DELEGATION_TOKEN_AUTH_DISABLED,
    DELEGATION_TOKEN_NOT_FOUND, DELEGATION_TOKEN_REQUEST_NOT_ALLOWED, INVALID_PRINCIPAL_TYPE,
};
use sluice_meta::tokens::TokenRecord;
use sluice_security::SecurityProtocol;

use super::str_bytes;
use crate::authz;
use crate::conn::{Client, ANONYMOUS};
use crate::shard::BrokerShard;
use crate::tokens_host::hmac;

/// Kafka's `allowTokenRequests`: not on a plaintext listener, not from an anonymous TLS
/// client, not from a connection that authenticated with a token.
fn allowed(client: &Client) -> bool {
    if client.internal {
        return true;
    }
    match client.listener {
        SecurityProtocol::Plaintext => false,
        SecurityProtocol::Ssl => &*client.principal != ANONYMOUS,
        SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl => !client.token_authenticated,
    }
}

/// `User:alice` as (type, name).
fn split(principal: &str) -> (StrBytes, StrBytes) {
    let (t, n) = principal.split_once(':').unwrap_or(("User", principal));
    (str_bytes(t), str_bytes(n))
}

fn secret(shard: &BrokerShard) -> Option<&str> {
    shard.config.delegation_token_secret_key.as_deref()
}

/// A new token id: 16 random bytes as Kafka prints a `Uuid`.
fn new_token_id() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

pub async fn create(
    shard: &Rc<BrokerShard>,
    client: &Client,
    r: CreateDelegationTokenRequest,
) -> CreateDelegationTokenResponse {
    let requester = client.principal.to_string();
    // v3: a token for another owner.
    let owner = match (&r.owner_principal_type, &r.owner_principal_name) {
        (t, Some(n)) if !n.is_empty() => {
            format!(
                "{}:{}",
                t.as_deref().filter(|t| !t.is_empty()).unwrap_or("User"),
                n
            )
        }
        _ => requester.clone(),
    };
    let refuse = |code: i16| {
        let (pt, pn) = split(&owner);
        let (rt, rn) = split(&requester);
        CreateDelegationTokenResponse::default()
            .with_error_code(code)
            .with_principal_type(pt)
            .with_principal_name(pn)
            .with_token_requester_principal_type(rt)
            .with_token_requester_principal_name(rn)
            .with_issue_timestamp_ms(-1)
            .with_expiry_timestamp_ms(-1)
            .with_max_timestamp_ms(-1)
    };
    if !allowed(client) {
        return refuse(DELEGATION_TOKEN_REQUEST_NOT_ALLOWED);
    }
    if owner != requester
        && !authz::allowed(
            shard,
            client,
            AclOperation::CreateTokens,
            ResourceType::User,
            &owner,
        )
    {
        return refuse(DELEGATION_TOKEN_AUTHORIZATION_FAILED);
    }
    if r.renewers
        .iter()
        .any(|p| p.principal_type.as_str() != "User")
    {
        return refuse(INVALID_PRINCIPAL_TYPE);
    }
    let Some(key) = secret(shard) else {
        return refuse(DELEGATION_TOKEN_AUTH_DISABLED);
    };
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return refuse(crate::kerr::NOT_CONTROLLER);
    };
    let req = sluice_meta::controller::CreateToken {
        token_id: new_token_id(),
        owner: owner.clone(),
        requester: requester.clone(),
        renewers: r
            .renewers
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p.principal_type.as_str(),
                    p.principal_name.as_str()
                )
            })
            .collect(),
        max_lifetime_ms: r.max_lifetime_ms,
    };
    match crate::metadata_sync::create_token(shard, &node, req).await {
        Ok(t) => {
            let (pt, pn) = split(&t.owner);
            let (rt, rn) = split(&t.requester);
            let mac = hmac(key, &t.token_id);
            CreateDelegationTokenResponse::default()
                .with_principal_type(pt)
                .with_principal_name(pn)
                .with_token_requester_principal_type(rt)
                .with_token_requester_principal_name(rn)
                .with_issue_timestamp_ms(t.issue_ms)
                .with_expiry_timestamp_ms(t.expiry_ms)
                .with_max_timestamp_ms(t.max_ms)
                .with_token_id(str_bytes(&t.token_id))
                .with_hmac(mac.into())
        }
        Err((code, message)) => {
            log::debug!("CreateDelegationToken: {message}");
            refuse(code)
        }
    }
}

/// Renew and Expire: the checks before the controller's, and the token's id.
fn find(shard: &BrokerShard, client: &Client, mac: &[u8]) -> Result<String, i16> {
    if !allowed(client) {
        return Err(DELEGATION_TOKEN_REQUEST_NOT_ALLOWED);
    }
    if secret(shard).is_none() {
        return Err(DELEGATION_TOKEN_AUTH_DISABLED);
    }
    shard
        .shared_handle
        .tokens
        .get()
        .by_hmac(mac)
        .map(|t| t.token_id.clone())
        .ok_or(DELEGATION_TOKEN_NOT_FOUND)
}

async fn expiry(
    shard: &Rc<BrokerShard>,
    client: &Client,
    mac: &[u8],
    period_ms: i64,
    expire: bool,
) -> Result<i64, i16> {
    let id = find(shard, client, mac)?;
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return Err(crate::kerr::NOT_CONTROLLER);
    };
    let principal = client.principal.to_string();
    crate::metadata_sync::token_expiry(shard, &node, id, principal, period_ms, expire)
        .await
        .map_err(|(code, message)| {
            log::debug!("delegation token expiry: {message}");
            code
        })
}

pub async fn renew(
    shard: &Rc<BrokerShard>,
    client: &Client,
    r: RenewDelegationTokenRequest,
) -> RenewDelegationTokenResponse {
    match expiry(shard, client, &r.hmac, r.renew_period_ms, false).await {
        Ok(at) => RenewDelegationTokenResponse::default().with_expiry_timestamp_ms(at),
        Err(code) => RenewDelegationTokenResponse::default()
            .with_error_code(code)
            .with_expiry_timestamp_ms(-1),
    }
}

pub async fn expire(
    shard: &Rc<BrokerShard>,
    client: &Client,
    r: ExpireDelegationTokenRequest,
) -> ExpireDelegationTokenResponse {
    match expiry(shard, client, &r.hmac, r.expiry_time_period_ms, true).await {
        Ok(at) => ExpireDelegationTokenResponse::default().with_expiry_timestamp_ms(at),
        Err(code) => ExpireDelegationTokenResponse::default()
            .with_error_code(code)
            .with_expiry_timestamp_ms(-1),
    }
}

/// Kafka's `DelegationTokenManager.filterToken`: with an owners filter, tokens one of the
/// owners owns, requested or may renew; of those, the ones the client owns, requested or
/// may renew, or may describe (DESCRIBE on the token, or DESCRIBE_TOKENS on its owner).
fn visible(
    shard: &BrokerShard,
    client: &Client,
    t: &TokenRecord,
    owners: Option<&[String]>,
) -> bool {
    let involves = |p: &str| t.owner == p || t.requester == p || t.renewers.iter().any(|r| r == p);
    if let Some(owners) = owners {
        if !owners.iter().any(|o| involves(o)) {
            return false;
        }
    }
    involves(&client.principal)
        || authz::allowed(
            shard,
            client,
            AclOperation::Describe,
            ResourceType::DelegationToken,
            &t.token_id,
        )
        || authz::allowed(
            shard,
            client,
            AclOperation::DescribeTokens,
            ResourceType::User,
            &t.owner,
        )
}

pub fn describe(
    shard: &BrokerShard,
    client: &Client,
    r: DescribeDelegationTokenRequest,
) -> DescribeDelegationTokenResponse {
    if !allowed(client) {
        return DescribeDelegationTokenResponse::default()
            .with_error_code(DELEGATION_TOKEN_REQUEST_NOT_ALLOWED);
    }
    if secret(shard).is_none() {
        return DescribeDelegationTokenResponse::default()
            .with_error_code(DELEGATION_TOKEN_AUTH_DISABLED);
    }
    let owners: Option<Vec<String>> = r.owners.map(|v| {
        v.iter()
            .map(|o| {
                format!(
                    "{}:{}",
                    o.principal_type.as_str(),
                    o.principal_name.as_str()
                )
            })
            .collect()
    });
    // An empty filter asks for nobody's tokens.
    if owners.as_ref().is_some_and(|o| o.is_empty()) {
        return DescribeDelegationTokenResponse::default();
    }
    let tokens = shard.shared_handle.tokens.get();
    let described = tokens
        .by_id
        .values()
        .filter(|t| visible(shard, client, t, owners.as_deref()))
        .map(|t| {
            let (pt, pn) = split(&t.owner);
            let (rt, rn) = split(&t.requester);
            DescribedDelegationToken::default()
                .with_principal_type(pt)
                .with_principal_name(pn)
                .with_token_requester_principal_type(rt)
                .with_token_requester_principal_name(rn)
                .with_issue_timestamp(t.issue_ms)
                .with_expiry_timestamp(t.expiry_ms)
                .with_max_timestamp(t.max_ms)
                .with_token_id(str_bytes(&t.token_id))
                .with_hmac(Bytes::copy_from_slice(
                    tokens.hmac(&t.token_id).unwrap_or_default(),
                ))
                .with_renewers(
                    t.renewers
                        .iter()
                        .map(|r| {
                            let (rt, rn) = split(r);
                            DescribedDelegationTokenRenewer::default()
                                .with_principal_type(rt)
                                .with_principal_name(rn)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeDelegationTokenResponse::default().with_tokens(described)
}
