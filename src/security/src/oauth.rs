//! SASL/OAUTHBEARER (RFC 7628) with Kafka's broker-side JWT validation (KIP-768's
//! `OAuthBearerValidatorCallbackHandler`): the client's message carries a signed JWT, which
//! is checked against a JWKS (signature by the key its `kid` names; RS256/384/512 or
//! ES256/384), its expiry and not-before (with clock skew), and the expected audience and
//! issuer when configured. The principal is `User:` + the subject claim (`sub` unless
//! configured otherwise). Unsigned tokens (`alg: none`) are refused.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// Bytes of a client's OAUTHBEARER message (a JWT and its framing).
pub const OAUTH_MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// How a token refusal starts when the JWKS has no key its `kid` names (a host fetching
/// the JWKS over https refreshes it early then: the issuer may have rotated its keys).
pub const NO_KEY_FOR_KID: &str = "No key in the JWKS for kid";

/// Keys of a JWKS.
pub const JWKS_KEYS_MAX: usize = 256;

/// What a token must satisfy (Kafka's `sasl.oauthbearer.*` settings).
#[derive(Debug, Clone)]
pub struct OauthConfig {
    /// `sasl.oauthbearer.expected.audience`: one of these must be in `aud` (none: any).
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`: `iss` must equal it (none: any).
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name` (`sub`).
    pub sub_claim: String,
    /// `sasl.oauthbearer.clock.skew.seconds` (30).
    pub clock_skew_s: i64,
}

impl Default for OauthConfig {
    fn default() -> Self {
        OauthConfig {
            expected_audience: Vec::new(),
            expected_issuer: None,
            sub_claim: "sub".into(),
            clock_skew_s: 30,
        }
    }
}

#[derive(Debug, Clone)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (0x04, x, y) and its curve's size in bytes.
    Ec {
        point: Vec<u8>,
        size: usize,
    },
}

/// A JSON Web Key Set's signing keys.
#[derive(Debug, Clone, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, Key)>,
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| "bad base64url".to_string())
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`); keys of other types or uses are skipped.
    pub fn parse(json: &[u8]) -> Result<Jwks, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let keys = doc["keys"].as_array().ok_or("JWKS has no keys array")?;
        if keys.len() > JWKS_KEYS_MAX {
            return Err(format!("JWKS has more than {JWKS_KEYS_MAX} keys"));
        }
        let mut out = Jwks::default();
        for k in keys {
            let s = |f: &str| k[f].as_str();
            if s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let key = match (s("kty"), s("crv")) {
                (Some("RSA"), _) => Key::Rsa {
                    n: b64(s("n").ok_or("RSA key without n")?)?,
                    e: b64(s("e").ok_or("RSA key without e")?)?,
                },
                (Some("EC"), Some(crv @ ("P-256" | "P-384"))) => {
                    let size = if crv == "P-256" { 32 } else { 48 };
                    let (x, y) = (
                        b64(s("x").ok_or("EC key without x")?)?,
                        b64(s("y").ok_or("EC key without y")?)?,
                    );
                    if x.len() != size || y.len() != size {
                        return Err(format!("EC key coordinates of the wrong size for {crv}"));
                    }
                    let mut point = vec![4u8];
                    point.extend_from_slice(&x);
                    point.extend_from_slice(&y);
                    Key::Ec { point, size }
                }
                _ => continue,
            };
            out.keys.push((s("kid").map(str::to_string), key));
        }
        if out.keys.is_empty() {
            return Err("JWKS has no usable signing key".into());
        }
        Ok(out)
    }

    fn key(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, k)| k),
            // No kid: only a set of one key says which.
            None if self.keys.len() == 1 => Some(&self.keys[0].1),
            None => None,
        }
    }
}

/// The JWT of a client's first (and only) OAUTHBEARER message:
/// `gs2-header %x01 auth=Bearer <token> %x01 [key=value %x01]* %x01`.
pub fn bearer_token(message: &[u8]) -> Result<&str, String> {
    if message.len() > OAUTH_MESSAGE_BYTES_MAX {
        return Err("OAUTHBEARER message too large".into());
    }
    let text = std::str::from_utf8(message).map_err(|_| "OAUTHBEARER message is not UTF-8")?;
    let mut parts = text.split('\u{1}');
    let gs2 = parts.next().unwrap_or("");
    if !(gs2.starts_with("n,") || gs2.starts_with("y,")) {
        return Err("Invalid OAUTHBEARER client first message".into());
    }
    parts
        .find_map(|p| p.strip_prefix("auth="))
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "Invalid OAUTHBEARER client first message: no token".into())
}

/// A token that passed: its subject and when it expires (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub subject: String,
    pub expires_ms: i64,
}

/// Checks `token` as Kafka's validator does; `Err` says why (nothing secret in it).
pub fn validate(
    token: &str,
    jwks: &Jwks,
    config: &OauthConfig,
    now_ms: i64,
) -> Result<Validated, String> {
    let mut segments = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err("The token is not a signed JWT (three segments)".into());
    };
    let json = |seg: &str, what: &str| -> Result<BTreeMap<String, serde_json::Value>, String> {
        serde_json::from_slice(&b64(seg)?).map_err(|_| format!("The token's {what} is not JSON"))
    };
    let header = json(h, "header")?;
    let claims = json(p, "payload")?;
    let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or("none");
    let kid = header.get("kid").and_then(|k| k.as_str());
    let key = jwks
        .key(kid)
        .ok_or_else(|| format!("{NO_KEY_FOR_KID} {kid:?}"))?;
    let signed = &token[..h.len() + 1 + p.len()];
    let signature = b64(sig)?;
    let message = signed.as_bytes();
    let rsa = |params: &'static signature::RsaParameters, n: &Vec<u8>, e: &Vec<u8>| {
        signature::RsaPublicKeyComponents { n, e }
            .verify(params, message, &signature)
            .is_ok()
    };
    let ec = |algorithm: &'static dyn VerificationAlgorithm, point: &Vec<u8>| {
        UnparsedPublicKey::new(algorithm, point)
            .verify(message, &signature)
            .is_ok()
    };
    let ok = match (alg, key) {
        ("RS256", Key::Rsa { n, e }) => rsa(&signature::RSA_PKCS1_2048_8192_SHA256, n, e),
        ("RS384", Key::Rsa { n, e }) => rsa(&signature::RSA_PKCS1_2048_8192_SHA384, n, e),
        ("RS512", Key::Rsa { n, e }) => rsa(&signature::RSA_PKCS1_2048_8192_SHA512, n, e),
        ("ES256", Key::Ec { point, size: 32 }) => ec(&signature::ECDSA_P256_SHA256_FIXED, point),
        ("ES384", Key::Ec { point, size: 48 }) => ec(&signature::ECDSA_P384_SHA384_FIXED, point),
        _ => {
            return Err(format!(
                "Algorithm {alg} does not fit the key, or is not accepted"
            ))
        }
    };
    if !ok {
        return Err("The token's signature does not verify".into());
    }
    let skew_ms = config.clock_skew_s.saturating_mul(1000);
    let seconds = |name: &str| claims.get(name).and_then(|v| v.as_f64());
    let exp = seconds("exp").ok_or("The token has no exp claim")?;
    let expires_ms = (exp * 1000.0) as i64;
    if now_ms - skew_ms >= expires_ms {
        return Err("The token has expired".into());
    }
    if let Some(nbf) = seconds("nbf") {
        if now_ms + skew_ms < (nbf * 1000.0) as i64 {
            return Err("The token is not valid yet (nbf)".into());
        }
    }
    if let Some(iat) = seconds("iat") {
        if now_ms + skew_ms < (iat * 1000.0) as i64 {
            return Err("The token was issued in the future (iat)".into());
        }
    }
    if !config.expected_audience.is_empty() {
        let aud: Vec<&str> = match claims.get("aud") {
            Some(serde_json::Value::String(a)) => vec![a.as_str()],
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
            _ => Vec::new(),
        };
        if !aud
            .iter()
            .any(|a| config.expected_audience.iter().any(|e| e == a))
        {
            return Err("The token's audience is not one this broker expects".into());
        }
    }
    if let Some(want) = &config.expected_issuer {
        if claims.get("iss").and_then(|v| v.as_str()) != Some(want.as_str()) {
            return Err("The token's issuer is not the one this broker expects".into());
        }
    }
    let subject = claims
        .get(&config.sub_claim)
        .and_then(|v| v.as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("The token has no {} claim", config.sub_claim))?;
    Ok(Validated {
        subject: subject.to_string(),
        expires_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    struct Issuer {
        key: EcdsaKeyPair,
        rng: SystemRandom,
    }

    impl Issuer {
        fn new() -> Issuer {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            Issuer { key, rng }
        }

        fn jwks(&self, kid: &str) -> Jwks {
            let p = self.key.public_key().as_ref();
            let doc = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": kid,
                "use": "sig", "x": URL_SAFE_NO_PAD.encode(&p[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&p[33..65])}]});
            Jwks::parse(doc.to_string().as_bytes()).unwrap()
        }

        fn token(&self, kid: &str, claims: serde_json::Value) -> String {
            let h = URL_SAFE_NO_PAD
                .encode(serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"}).to_string());
            let p = URL_SAFE_NO_PAD.encode(claims.to_string());
            let signed = format!("{h}.{p}");
            let sig = self.key.sign(&self.rng, signed.as_bytes()).unwrap();
            format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
        }
    }

    const NOW_MS: i64 = 1_800_000_000_000;

    fn claims(exp_s: i64) -> serde_json::Value {
        serde_json::json!({"sub": "alice", "exp": exp_s, "iat": NOW_MS / 1000 - 10,
            "aud": ["sluice"], "iss": "https://issuer"})
    }

    #[test]
    fn a_signed_token_passes_and_every_flaw_is_refused() {
        let issuer = Issuer::new();
        let jwks = issuer.jwks("k1");
        let config = OauthConfig {
            expected_audience: vec!["sluice".into()],
            expected_issuer: Some("https://issuer".into()),
            ..OauthConfig::default()
        };
        let good = issuer.token("k1", claims(NOW_MS / 1000 + 60));
        assert_eq!(
            validate(&good, &jwks, &config, NOW_MS).unwrap(),
            Validated {
                subject: "alice".into(),
                expires_ms: NOW_MS + 60_000
            }
        );
        // Expired (beyond the 30 s skew), unknown key, another signer, tampered, wrong
        // audience or issuer, unsigned.
        let old = issuer.token("k1", claims(NOW_MS / 1000 - 31));
        assert!(validate(&old, &jwks, &config, NOW_MS).is_err());
        let unknown = issuer.token("k2", claims(NOW_MS / 1000 + 60));
        assert!(validate(&unknown, &jwks, &config, NOW_MS).is_err());
        let forged = Issuer::new().token("k1", claims(NOW_MS / 1000 + 60));
        assert!(validate(&forged, &jwks, &config, NOW_MS).is_err());
        let mut parts: Vec<&str> = good.split('.').collect();
        let bob = URL_SAFE_NO_PAD
            .encode(serde_json::json!({"sub": "bob", "exp": NOW_MS / 1000 + 60}).to_string());
        parts[1] = &bob;
        assert!(validate(&parts.join("."), &jwks, &config, NOW_MS).is_err());
        let other_aud = OauthConfig {
            expected_audience: vec!["other".into()],
            ..config.clone()
        };
        assert!(validate(&good, &jwks, &other_aud, NOW_MS).is_err());
        let other_iss = OauthConfig {
            expected_issuer: Some("x".into()),
            ..config.clone()
        };
        assert!(validate(&good, &jwks, &other_iss, NOW_MS).is_err());
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims(NOW_MS / 1000 + 60).to_string())
        );
        assert!(validate(&none, &jwks, &config, NOW_MS).is_err());
        assert!(validate("garbage", &jwks, &config, NOW_MS).is_err());
    }

    #[test]
    fn the_client_message_carries_the_token() {
        assert_eq!(
            bearer_token(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(
            bearer_token(b"n,a=alice,\x01host=x\x01auth=Bearer t.t.t\x01\x01").unwrap(),
            "t.t.t"
        );
        assert!(bearer_token(b"\x01auth=Bearer t\x01\x01").is_err());
        assert!(bearer_token(b"n,,\x01\x01").is_err());
        assert!(bearer_token(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn jwks_documents_are_checked() {
        assert!(Jwks::parse(b"{}").is_err());
        assert!(Jwks::parse(b"not json").is_err());
        assert!(Jwks::parse(br#"{"keys": [{"kty": "oct", "k": "AAAA"}]}"#).is_err());
        let rsa = Jwks::parse(br#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#);
        assert!(rsa.is_ok());
    }
}
