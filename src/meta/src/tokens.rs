//! Delegation tokens (KIP-48): what the controller log keeps of a token (Kafka's
//! `DelegationTokenRecord`: no HMAC, which every node derives from the token id and its
//! `delegation.token.secret.key`), the limits on it, and the timestamps the controller's
//! create, renew and expire commands compute, as Kafka's `DelegationTokenControlManager`
//! computes them.
//!
//! Invariants: every stored token has a non-empty id and owner and a requester of at most
//! [`PRINCIPAL_BYTES_MAX`] bytes, at most [`RENEWERS_MAX`] renewers, `issue <= max` and
//! `expiry <= max`; at most [`TOKENS_MAX`] exist (the image refuses records that break
//! these).

use crate::controller::code::{
    DELEGATION_TOKEN_EXPIRED, DELEGATION_TOKEN_NOT_FOUND, DELEGATION_TOKEN_OWNER_MISMATCH,
};
use crate::controller::ApiError;

/// A token as the log keeps it. Principals are Kafka's strings (`User:alice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Kafka's form of a random `Uuid` (22 characters of URL-safe base64).
    pub token_id: String,
    pub owner: String,
    /// Who created it (the owner, unless created for another user: CreateDelegationToken v3).
    pub requester: String,
    /// Principals that may renew or expire it besides the owner.
    pub renewers: Vec<String>,
    pub issue_ms: i64,
    /// It cannot be renewed past this.
    pub max_ms: i64,
    /// It stops working after this unless renewed.
    pub expiry_ms: i64,
}

/// Tokens the image keeps (Kafka has no limit; sluice bounds its image).
pub const TOKENS_MAX: usize = 10_000;
/// Tokens one principal may have created that still exist (sluice's bound, checked by
/// the controller: no one principal takes all of [`TOKENS_MAX`]).
pub const TOKENS_PER_REQUESTER_MAX: usize = 1_000;
/// Renewers of one token.
pub const RENEWERS_MAX: usize = 64;
/// Bytes of a principal string or token id.
pub const PRINCIPAL_BYTES_MAX: usize = 256;
/// Kafka's `delegation.token.max.lifetime.ms` default (7 days).
pub const MAX_LIFETIME_MS_DEFAULT: i64 = 7 * 24 * 3600 * 1000;
/// Kafka's `delegation.token.expiry.time.ms` default (1 day).
pub const EXPIRY_TIME_MS_DEFAULT: i64 = 24 * 3600 * 1000;
/// Kafka's `delegation.token.expiry.check.interval.ms` default (1 hour).
pub const EXPIRY_CHECK_INTERVAL_MS_DEFAULT: i64 = 3600 * 1000;
/// Expired tokens one sweep removes (Kafka's; the next sweep takes the rest).
pub const SWEEP_MAX: usize = 1000;

/// Why `t` cannot be stored.
pub fn check(t: &TokenRecord) -> Result<(), String> {
    let principal = |p: &str| !p.is_empty() && p.len() <= PRINCIPAL_BYTES_MAX;
    if !principal(&t.token_id) || !principal(&t.owner) || !principal(&t.requester) {
        return Err("a token needs an id, an owner and a requester".into());
    }
    if t.renewers.len() > RENEWERS_MAX || !t.renewers.iter().all(|r| principal(r)) {
        return Err("bad token renewers".into());
    }
    if t.issue_ms > t.max_ms || t.expiry_ms > t.max_ms {
        return Err("token timestamps out of order".into());
    }
    Ok(())
}

/// A new token's (max, expiry) timestamps at `now_ms`: the max lifetime asked for, within
/// the configured one (0 or less: the configured one); expiry one expiry period later,
/// within the max.
pub fn create_times(
    now_ms: i64,
    asked_max_lifetime_ms: i64,
    max_lifetime_ms: i64,
    expiry_time_ms: i64,
) -> (i64, i64) {
    let life = if asked_max_lifetime_ms > 0 {
        asked_max_lifetime_ms.min(max_lifetime_ms)
    } else {
        max_lifetime_ms
    };
    let max = now_ms.saturating_add(life);
    (max, max.min(now_ms.saturating_add(expiry_time_ms)))
}

fn refuse<T>(code: i16, message: impl Into<String>) -> Result<T, ApiError> {
    Err(ApiError {
        code,
        message: message.into(),
    })
}

/// Whether `principal` may renew or expire `t`: its owner or one of its renewers (not its
/// requester, as in Kafka).
fn may_renew(t: &TokenRecord, principal: &str) -> bool {
    t.owner == principal || t.renewers.iter().any(|r| r == principal)
}

/// RenewDelegationToken's checks (Kafka's order: not found, expired, not allowed) and the
/// new expiry: `period_ms` (0 or less: the configured expiry time) from now, within the max.
pub fn renew(
    t: Option<&TokenRecord>,
    principal: &str,
    now_ms: i64,
    period_ms: i64,
    expiry_time_ms: i64,
) -> Result<i64, ApiError> {
    let Some(t) = t else {
        return refuse(
            DELEGATION_TOKEN_NOT_FOUND,
            "Delegation Token is not found on server.",
        );
    };
    if t.max_ms < now_ms || t.expiry_ms < now_ms {
        return refuse(DELEGATION_TOKEN_EXPIRED, "Delegation Token is expired.");
    }
    if !may_renew(t, principal) {
        return refuse(
            DELEGATION_TOKEN_OWNER_MISMATCH,
            "Specified Principal is not valid Owner/Renewer.",
        );
    }
    let period = if period_ms > 0 {
        period_ms.min(expiry_time_ms)
    } else {
        expiry_time_ms
    };
    Ok(t.max_ms.min(now_ms.saturating_add(period)))
}

/// What ExpireDelegationToken does to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Removed at once (a negative period); the answer's expiry is now.
    Remove,
    /// Expires at this time (not capped by the configured expiry time, as in Kafka).
    At(i64),
}

/// ExpireDelegationToken's checks (Kafka's order: not found, not allowed, then expired
/// unless the period is negative).
pub fn expire(
    t: Option<&TokenRecord>,
    principal: &str,
    now_ms: i64,
    period_ms: i64,
) -> Result<Expiry, ApiError> {
    let Some(t) = t else {
        return refuse(
            DELEGATION_TOKEN_NOT_FOUND,
            "Delegation Token is not found on server.",
        );
    };
    if !may_renew(t, principal) {
        return refuse(
            DELEGATION_TOKEN_OWNER_MISMATCH,
            "Specified Principal is not valid Owner/Renewer.",
        );
    }
    if period_ms < 0 {
        return Ok(Expiry::Remove);
    }
    if t.max_ms < now_ms || t.expiry_ms < now_ms {
        return refuse(DELEGATION_TOKEN_EXPIRED, "Delegation Token is expired.");
    }
    Ok(Expiry::At(t.max_ms.min(now_ms.saturating_add(period_ms))))
}

/// Whether `t` has expired at `now_ms` (the sweep removes it).
pub fn expired(t: &TokenRecord, now_ms: i64) -> bool {
    t.max_ms < now_ms || t.expiry_ms < now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> TokenRecord {
        TokenRecord {
            token_id: "id".into(),
            owner: "User:alice".into(),
            requester: "User:admin".into(),
            renewers: vec!["User:bob".into()],
            issue_ms: 0,
            max_ms: 1000,
            expiry_ms: 500,
        }
    }

    #[test]
    fn lifetimes_are_capped_by_the_config_and_defaults_fill_in() {
        assert_eq!(create_times(10, -1, 1000, 100), (1010, 110));
        assert_eq!(create_times(10, 50, 1000, 100), (60, 60));
        assert_eq!(create_times(10, 5000, 1000, 2000), (1010, 1010));
        assert_eq!(
            create_times(i64::MAX - 1, 0, 1000, 100),
            (i64::MAX, i64::MAX)
        );
    }

    #[test]
    fn renew_and_expire_check_in_kafkas_order() {
        let t = token();
        let code = |r: Result<i64, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(renew(None, "User:alice", 0, 0, 100)),
            DELEGATION_TOKEN_NOT_FOUND
        );
        assert_eq!(
            code(renew(Some(&t), "User:eve", 600, 0, 100)),
            DELEGATION_TOKEN_EXPIRED
        );
        assert_eq!(
            code(renew(Some(&t), "User:admin", 0, 0, 100)),
            DELEGATION_TOKEN_OWNER_MISMATCH
        );
        assert_eq!(renew(Some(&t), "User:bob", 100, 0, 300), Ok(400));
        assert_eq!(renew(Some(&t), "User:alice", 100, 50, 300), Ok(150));
        let later = TokenRecord {
            expiry_ms: 950,
            ..token()
        };
        assert_eq!(
            renew(Some(&later), "User:alice", 900, 0, 300),
            Ok(1000),
            "within max"
        );
        // Expire: ownership before expiry; a negative period removes even an expired one.
        assert_eq!(
            expire(Some(&t), "User:eve", 600, 0).unwrap_err().code,
            DELEGATION_TOKEN_OWNER_MISMATCH
        );
        assert_eq!(expire(Some(&t), "User:alice", 600, -1), Ok(Expiry::Remove));
        assert_eq!(
            expire(Some(&t), "User:alice", 600, 0).unwrap_err().code,
            DELEGATION_TOKEN_EXPIRED
        );
        assert_eq!(
            expire(Some(&t), "User:bob", 100, 5000),
            Ok(Expiry::At(1000))
        );
        assert!(expired(&t, 501) && !expired(&t, 500));
        assert!(check(&t).is_ok());
        assert!(check(&TokenRecord {
            expiry_ms: 2000,
            ..token()
        })
        .is_err());
    }
}
