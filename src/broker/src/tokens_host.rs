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

/// The tokens, the HMAC of each (none without a secret) and the id of each by its HMAC.
#[derive(Default)]
pub struct Tokens {
    pub by_id: BTreeMap<String, TokenRecord>,
    hmacs: HashMap<String, Vec<u8>>,
    by_hmac: HashMap<Vec<u8>, String>,
}

impl Tokens {
    pub fn by_hmac(&self, hmac: &[u8]) -> Option<&TokenRecord> {
        self.by_hmac.get(hmac).and_then(|id| self.by_id.get(id))
    }

    /// Token `id`'s HMAC (none without a secret).
    pub fn hmac(&self, id: &str) -> Option<&[u8]> {
        self.hmacs.get(id).map(Vec::as_slice)
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
    /// Only shard 0 calls this; the new set is built outside the lock (readers on other
    /// shards never wait for the HMACs), reusing the HMACs of tokens it had.
    pub fn set(&self, tokens: &BTreeMap<String, TokenRecord>, secret: Option<&str>) {
        let old = self.get();
        if old.by_id == *tokens {
            return;
        }
        let hmacs: HashMap<String, Vec<u8>> = match secret {
            Some(key) => tokens
                .keys()
                .map(|id| {
                    let mac = old.hmacs.get(id).cloned().unwrap_or_else(|| hmac(key, id));
                    (id.clone(), mac)
                })
                .collect(),
            None => HashMap::new(),
        };
        let by_hmac = hmacs
            .iter()
            .map(|(id, m)| (m.clone(), id.clone()))
            .collect();
        let new = Arc::new(Tokens {
            by_id: tokens.clone(),
            hmacs,
            by_hmac,
        });
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = new;
        // Credentials of tokens that are gone go too (a renewed token keeps its HMAC).
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
        let cached = self
            .credentials
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(c) = cached {
            return Some(c);
        }
        // Derived without the lock (PBKDF2 takes milliseconds; other shards' logins go on).
        use base64::Engine as _;
        let password = base64::engine::general_purpose::STANDARD.encode(hmac(secret, token_id));
        let c = ScramCredential::generate(mechanism, password.as_bytes(), TOKEN_ITERATIONS).ok()?;
        // Bounded by the tokens the image may hold, times two mechanisms; a credential
        // derived meanwhile by another shard wins (both are valid).
        let mut creds = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        Some(creds.entry(key).or_insert(c).clone())
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
