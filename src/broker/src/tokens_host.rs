//! Delegation tokens (KIP-48) as this node has adopted them from the controller log, with
//! the HMAC of each (HMAC-SHA512 of the token id under `delegation.token.secret.key`, which
//! the log does not keep: every node derives it, as Kafka's do). Shard 0 sets them on every
//! adoption; every shard reads (DescribeDelegationToken, the HMAC lookups of Renew and
//! Expire, and SCRAM logins with a token, whose credentials are derived here from the HMAC
//! on first use and kept until the tokens change).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sluice_meta::tokens::TokenRecord;
use sluice_security::{ScramCredential, ScramMechanism};

/// Iterations of a token's SCRAM credential (Kafka's: the mechanism's minimum).
const TOKEN_ITERATIONS: u32 = 4096;

/// The tokens, and the id of each by its HMAC.
#[derive(Default)]
pub struct Tokens {
    pub by_id: BTreeMap<String, TokenRecord>,
    by_hmac: HashMap<Vec<u8>, String>,
}

impl Tokens {
    pub fn by_hmac(&self, hmac: &[u8]) -> Option<&TokenRecord> {
        self.by_hmac.get(hmac).and_then(|id| self.by_id.get(id))
    }
}

#[derive(Default)]
pub struct TokenStore {
    current: Mutex<Arc<Tokens>>,
    /// SCRAM credentials of tokens by (id, mechanism id): PBKDF2 of the HMAC, so each is
    /// derived once (Kafka derives them when a token arrives), not at every login.
    credentials: Mutex<HashMap<(String, i8), ScramCredential>>,
}

impl TokenStore {
    /// Adopts the image's tokens (a no-op when they did not change); `secret` signs them.
    pub fn set(&self, tokens: &BTreeMap<String, TokenRecord>, secret: Option<&str>) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.by_id == *tokens {
            return;
        }
        let by_hmac = match secret {
            Some(key) => tokens
                .keys()
                .map(|id| (hmac(key, id), id.clone()))
                .collect(),
            None => HashMap::new(),
        };
        *cur = Arc::new(Tokens {
            by_id: tokens.clone(),
            by_hmac,
        });
        // Credentials of tokens that are gone (or renewed: same id, same HMAC) go too.
        let mut creds = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        creds.retain(|(id, _), _| tokens.contains_key(id));
    }

    /// The SCRAM credential of token `token_id` for `mechanism`: password the token's HMAC
    /// in base64 (what clients log in with), Kafka's fewest iterations, a random salt.
    pub fn credential(
        &self,
        token_id: &str,
        mechanism: ScramMechanism,
        secret: &str,
    ) -> Option<ScramCredential> {
        if !self.get().by_id.contains_key(token_id) {
            return None;
        }
        let key = (token_id.to_string(), mechanism.id());
        let mut creds = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = creds.get(&key) {
            return Some(c.clone());
        }
        use base64::Engine as _;
        let password = base64::engine::general_purpose::STANDARD.encode(hmac(secret, token_id));
        let c = ScramCredential::generate(mechanism, password.as_bytes(), TOKEN_ITERATIONS).ok()?;
        // Bounded by the tokens the image may hold, times two mechanisms.
        creds.insert(key, c.clone());
        Some(c)
    }

    pub fn get(&self) -> Arc<Tokens> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A token's HMAC: HMAC-SHA512 of its id's UTF-8 bytes, keyed by the secret's UTF-8 bytes
/// (Kafka's `DelegationTokenManager.createHmac`).
pub fn hmac(secret: &str, token_id: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA512, secret.as_bytes());
    ring::hmac::sign(&key, token_id.as_bytes())
        .as_ref()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_found_by_their_hmac_under_the_secret() {
        let t = TokenRecord {
            token_id: "abc".into(),
            owner: "User:alice".into(),
            requester: "User:alice".into(),
            renewers: vec![],
            issue_ms: 0,
            max_ms: 10,
            expiry_ms: 5,
        };
        let store = TokenStore::default();
        store.set(
            &BTreeMap::from([("abc".to_string(), t.clone())]),
            Some("s3cret"),
        );
        let tokens = store.get();
        assert_eq!(tokens.by_hmac(&hmac("s3cret", "abc")), Some(&t));
        assert_eq!(tokens.by_hmac(&hmac("other", "abc")), None);
        assert_eq!(hmac("s3cret", "abc").len(), 64);
    }
}
