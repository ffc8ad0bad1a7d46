//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the stored
//! credential (salt, iterations, StoredKey, ServerKey: never the password), the server's
//! side of the exchange as a sans-IO state machine, and the password check PLAIN uses.
//!
//! Kafka's rules: iterations within 4096..=16384, no channel binding (`n` gs2 flag only),
//! the `tokenauth=true` extension makes the user name a delegation token's id (the lookup
//! is told, and finds the token's credential), and any failure is
//! "Invalid user credentials" whatever the cause. Unlike Kafka, an unknown user is not told
//! apart at the first message: the exchange runs on a throwaway credential and fails at the
//! proof, so the answers do not say which user names exist.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::{digest, hmac, pbkdf2};
use subtle::ConstantTimeEq;

/// Kafka's bounds on a SCRAM credential's iteration count.
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 16384;
/// Bytes of salt a new credential gets.
pub const SALT_BYTES: usize = 32;
/// Longest client message accepted (a user name and a nonce; Kafka's are far shorter).
pub const MESSAGE_BYTES_MAX: usize = 4096;

/// The failure Kafka reports for every SCRAM or PLAIN authentication that fails.
pub const INVALID_CREDENTIALS: &str = "Authentication failed: Invalid user credentials";

/// A SCRAM mechanism, with Kafka's wire type (`ScramMechanism` of the admin APIs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's wire id (1 SCRAM-SHA-256, 2 SCRAM-SHA-512; 0 is UNKNOWN).
    pub fn id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_id(id: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|m| m.id() == id)
    }

    pub(crate) fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    pub(crate) fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    /// Bytes of the mechanism's hash (and of its keys).
    pub fn hash_len(self) -> usize {
        self.digest().output_len()
    }
}

/// A stored SCRAM credential (Kafka's `ScramCredential`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    // Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

pub(crate) fn mac(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

impl ScramCredential {
    /// The credential of `password` with this salt and iteration count (RFC 5802 §3).
    pub fn derive(
        mechanism: ScramMechanism,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let salted = salted_password(mechanism, password, salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// The credential of a salted password (`Hi(password, salt, i)`, what
    /// AlterUserScramCredentials carries instead of the password).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted: &[u8],
        salt: &[u8],
        iterations: u32,
    ) -> ScramCredential {
        let client_key = mac(mechanism.hmac(), salted, b"Client Key");
        ScramCredential {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: digest::digest(mechanism.digest(), &client_key)
                .as_ref()
                .to_vec(),
            server_key: mac(mechanism.hmac(), salted, b"Server Key"),
        }
    }

    /// A new credential for `password` with a random salt.
    pub fn generate(
        mechanism: ScramMechanism,
        password: &[u8],
        iterations: u32,
    ) -> Result<ScramCredential, String> {
        check_iterations(iterations)?;
        let mut salt = vec![0u8; SALT_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
            .map_err(|_| "no randomness for a salt".to_string())?;
        Ok(ScramCredential::derive(
            mechanism, password, &salt, iterations,
        ))
    }

    /// Whether `password` is this credential's (PLAIN's check), in constant time.
    pub fn verify_password(&self, password: &[u8]) -> bool {
        let other = ScramCredential::derive(self.mechanism, password, &self.salt, self.iterations);
        bool::from(other.stored_key.ct_eq(&self.stored_key))
    }
}

/// Kafka's iteration bounds, as an error message.
pub fn check_iterations(iterations: u32) -> Result<(), String> {
    if (ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
        Ok(())
    } else {
        Err(format!(
            "iterations {iterations} outside {ITERATIONS_MIN}..={ITERATIONS_MAX}"
        ))
    }
}

pub(crate) fn salted_password(
    m: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let mut out = vec![0u8; m.hash_len()];
    let rounds = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one");
    pbkdf2::derive(m.pbkdf2(), rounds, salt, password, &mut out);
    out
}

/// What the server answers a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this challenge; the exchange goes on.
    Challenge(Vec<u8>),
    /// Authenticated as this user (a token id when `token`); send `final_message` (the
    /// server signature).
    Done {
        user: String,
        final_message: Vec<u8>,
        token: bool,
    },
    /// Refused (the message for the client: [`INVALID_CREDENTIALS`] or a protocol error).
    Failed(String),
}

enum State {
    First,
    Final {
        user: String,
        token: bool,
        credential: ScramCredential,
        /// Whether `credential` is a throwaway one (an unknown user): the proof must fail.
        known: bool,
        nonce: String,
        gs2_header: String,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
    },
    Over,
}

/// The server's side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: ScramMechanism,
    server_nonce: String,
    state: State,
}

impl ScramServer {
    /// A new exchange with a fresh random server nonce.
    pub fn new(mechanism: ScramMechanism) -> ScramServer {
        let mut raw = [0u8; 24];
        // Without randomness the nonce is still unique per exchange only by chance; the
        // system RNG does not fail on Linux once booted.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        ScramServer::with_nonce(mechanism, B64.encode(raw))
    }

    /// A new exchange with this server nonce (printable, no `,`): for test vectors.
    pub fn with_nonce(mechanism: ScramMechanism, server_nonce: String) -> ScramServer {
        ScramServer {
            mechanism,
            server_nonce,
            state: State::First,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Takes the client's next message; `lookup` finds a user's credential for this
    /// mechanism, or with `true` a delegation token's by its id (asked once, at the first
    /// message).
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str, bool) -> Option<ScramCredential>,
    ) -> Step {
        if message.len() > MESSAGE_BYTES_MAX {
            self.state = State::Over;
            return Step::Failed("SCRAM message too long".into());
        }
        let Ok(text) = std::str::from_utf8(message) else {
            self.state = State::Over;
            return Step::Failed("SCRAM message is not UTF-8".into());
        };
        match std::mem::replace(&mut self.state, State::Over) {
            State::First => self.client_first(text, lookup),
            State::Final {
                user,
                token,
                credential,
                known,
                nonce,
                gs2_header,
                auth_prefix,
            } => {
                let expected = Expected {
                    credential: &credential,
                    known,
                    nonce: &nonce,
                    gs2_header: &gs2_header,
                    auth_prefix: &auth_prefix,
                };
                match client_final(text, &expected) {
                    Ok(final_message) => Step::Done {
                        user,
                        final_message,
                        token,
                    },
                    Err(e) => Step::Failed(e),
                }
            }
            State::Over => Step::Failed("the SCRAM exchange is over".into()),
        }
    }

    fn client_first(
        &mut self,
        text: &str,
        lookup: impl FnOnce(&str, bool) -> Option<ScramCredential>,
    ) -> Step {
        let parsed = parse_client_first(text);
        let (gs2_header, bare, user, client_nonce, token) = match parsed {
            Ok(p) => p,
            Err(e) => return Step::Failed(e),
        };
        let found = lookup(&user, token).filter(|c| c.mechanism == self.mechanism);
        let (credential, known) = match found {
            Some(c) => (c, true),
            // A throwaway credential: the exchange looks the same and fails at the proof.
            None => (
                ScramCredential::derive(
                    self.mechanism,
                    b"",
                    &throwaway_salt(&user, token),
                    ITERATIONS_MIN,
                ),
                false,
            ),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::Final {
            user,
            token,
            credential,
            known,
            nonce,
            gs2_header,
            auth_prefix: format!("{bare},{server_first}"),
        };
        Step::Challenge(server_first.into_bytes())
    }
}

/// The salt of an unknown user's (or token's) throwaway credential: the same for the same
/// name for the life of the process, and looking like a real one (a fixed salt would tell
/// a client which names exist).
fn throwaway_salt(user: &str, token: bool) -> Vec<u8> {
    static KEY: std::sync::OnceLock<ring::hmac::Key> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut raw = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw)
    });
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(&[u8::from(token)]);
    ctx.update(user.as_bytes());
    ctx.sign().as_ref()[..SALT_BYTES].to_vec()
}

/// (gs2 header, client-first-message-bare, user name, client nonce, `tokenauth=true`)
type ClientFirst = (String, String, String, String, bool);

fn parse_client_first(text: &str) -> Result<ClientFirst, String> {
    // gs2-header: cbind-flag "," [authzid] ","
    let mut parts = text.splitn(3, ',');
    let flag = parts.next().unwrap_or("");
    let authzid = parts.next().ok_or("SCRAM: no gs2 header")?;
    let bare = parts.next().ok_or("SCRAM: no client-first-message-bare")?;
    match flag {
        "n" | "y" => {}
        _ => return Err("SCRAM: channel binding is not supported".into()),
    }
    let mut user = None;
    let mut nonce = None;
    let mut token = false;
    for (i, attr) in bare.split(',').enumerate() {
        let (k, v) = attr.split_once('=').ok_or("SCRAM: malformed attribute")?;
        match (i, k) {
            (0, "n") => user = Some(sasl_name(v)?),
            (1, "r") => nonce = Some(v.to_string()),
            // Kafka's extension for delegation tokens (the user name is the token id).
            // Java's `Boolean.parseBoolean`, as Kafka reads it: "true" in any case, else false.
            (i, "tokenauth") if i > 1 => token = v.eq_ignore_ascii_case("true"),
            (0, "m") => return Err("SCRAM: mandatory extensions are not supported".into()),
            (0 | 1, _) => return Err("SCRAM: malformed client-first-message".into()),
            // Other extensions (Kafka's are key=value pairs) are ignored.
            _ => {}
        }
    }
    let user = user.ok_or("SCRAM: no user name")?;
    let nonce = nonce
        .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','));
    let nonce = nonce.ok_or("SCRAM: no or invalid client nonce")?;
    if user.is_empty() {
        return Err("SCRAM: empty user name".into());
    }
    if !authzid.is_empty() {
        let az = authzid
            .strip_prefix("a=")
            .ok_or("SCRAM: malformed authorization id")?;
        if sasl_name(az)? != user {
            return Err(
                "Authentication failed: Client requested an authorization id that is different from username"
                    .into(),
            );
        }
    }
    Ok((
        format!("{flag},{authzid},"),
        bare.to_string(),
        user,
        nonce.to_string(),
        token,
    ))
}

/// RFC 5802's saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is malformed.
fn sasl_name(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut rest = v;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err("SCRAM: malformed user name".into()),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

struct Expected<'a> {
    credential: &'a ScramCredential,
    known: bool,
    nonce: &'a str,
    gs2_header: &'a str,
    auth_prefix: &'a str,
}

fn client_final(text: &str, e: &Expected<'_>) -> Result<Vec<u8>, String> {
    let (without_proof, proof) = text
        .rsplit_once(",p=")
        .ok_or("SCRAM: no proof in client-final-message")?;
    let mut attrs = without_proof.split(',');
    let binding = attrs
        .next()
        .and_then(|a| a.strip_prefix("c="))
        .ok_or("SCRAM: no channel binding attribute")?;
    let nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or("SCRAM: no nonce")?;
    if B64.decode(binding).ok().as_deref() != Some(e.gs2_header.as_bytes()) {
        return Err("SCRAM: channel binding does not match".into());
    }
    // Kafka checks only that the nonce ends with the server-first one: librdkafka (through
    // 2.x) sends its own nonce once more in front, and Kafka accepts it. The server's part,
    // which makes the exchange fresh, must be there either way; the proof covers the
    // message as sent.
    if !nonce.ends_with(e.nonce) {
        return Err("SCRAM: nonce does not match".into());
    }
    let proof = B64
        .decode(proof)
        .map_err(|_| "SCRAM: proof is not base64".to_string())?;
    let c = e.credential;
    let auth_message = format!("{},{without_proof}", e.auth_prefix);
    let alg = c.mechanism.hmac();
    let signature = mac(alg, &c.stored_key, auth_message.as_bytes());
    if proof.len() != signature.len() {
        return Err(INVALID_CREDENTIALS.into());
    }
    let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    let stored = digest::digest(c.mechanism.digest(), &client_key);
    let matches = bool::from(stored.as_ref().ct_eq(&c.stored_key));
    if !(matches && e.known) {
        return Err(INVALID_CREDENTIALS.into());
    }
    let server_signature = mac(alg, &c.server_key, auth_message.as_bytes());
    Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3's SCRAM-SHA-256 example (user "user", password "pencil").
    #[test]
    fn rfc7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let cred = ScramCredential::derive(ScramMechanism::Sha256, b"pencil", &salt, 4096);
        let mut s = ScramServer::with_nonce(
            ScramMechanism::Sha256,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        );
        let step = s.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |u, token| {
            (u == "user" && !token).then(|| cred.clone())
        });
        assert_eq!(
            step,
            Step::Challenge(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                  s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let step = s.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
              p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
            |_, _| unreachable!("looked up once"),
        );
        assert_eq!(
            step,
            Step::Done {
                user: "user".into(),
                final_message: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec(),
                token: false,
            }
        );
        assert!(matches!(s.step(b"more", |_, _| None), Step::Failed(_)));
        // A final message whose nonce lacks the server's part is refused before the proof.
        let mut s = ScramServer::with_nonce(ScramMechanism::Sha256, "SERVER".into());
        let _ = s.step(b"n,,n=user,r=abc", |_, _| Some(cred.clone()));
        assert_eq!(
            s.step(b"c=biws,r=abcSERVE,p=AAAA", |_, _| None),
            Step::Failed("SCRAM: nonce does not match".into())
        );
        assert!(cred.verify_password(b"pencil"));
        assert!(!cred.verify_password(b"pencil "));
    }

    /// A client's side, for exchanges with passwords of the test's choosing.
    fn client_final_for(
        m: ScramMechanism,
        password: &[u8],
        first_bare: &str,
        server_first: &str,
    ) -> String {
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for a in server_first.split(',') {
            match a.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = Some(B64.decode(v).unwrap()),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = salted_password(m, password, &salt.unwrap(), iterations);
        let client_key = mac(m.hmac(), &salted, b"Client Key");
        let stored = digest::digest(m.digest(), &client_key);
        let without = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without}");
        let sig = mac(m.hmac(), stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without},p={}", B64.encode(proof))
    }

    fn exchange(
        m: ScramMechanism,
        stored: Option<&ScramCredential>,
        user: &str,
        password: &[u8],
    ) -> Step {
        let mut s = ScramServer::new(m);
        let bare = format!("n={user},r=abcdefgh");
        let Step::Challenge(first) =
            s.step(format!("n,,{bare}").as_bytes(), |_, _| stored.cloned())
        else {
            panic!("no challenge");
        };
        let fin = client_final_for(m, password, &bare, std::str::from_utf8(&first).unwrap());
        s.step(fin.as_bytes(), |_, _| unreachable!())
    }

    #[test]
    fn both_mechanisms_accept_the_password_and_refuse_others_and_unknown_users() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::generate(m, b"s3cret", 4096).unwrap();
            assert_eq!(cred.stored_key.len(), m.hash_len());
            assert!(matches!(
                exchange(m, Some(&cred), "alice", b"s3cret"),
                Step::Done { ref user, .. } if user == "alice"
            ));
            assert_eq!(
                exchange(m, Some(&cred), "alice", b"wrong"),
                Step::Failed(INVALID_CREDENTIALS.into())
            );
            // Unknown: the throwaway credential's password (empty) must not pass either.
            assert_eq!(
                exchange(m, None, "nobody", b""),
                Step::Failed(INVALID_CREDENTIALS.into())
            );
        }
        // A credential of the other mechanism is not used.
        let c256 = ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4096).unwrap();
        assert_eq!(
            exchange(ScramMechanism::Sha512, Some(&c256), "a", b"pw"),
            Step::Failed(INVALID_CREDENTIALS.into())
        );
        assert!(ScramCredential::generate(ScramMechanism::Sha256, b"pw", 4095).is_err());
        assert!(ScramCredential::generate(ScramMechanism::Sha256, b"pw", 16385).is_err());
    }

    #[test]
    fn tokenauth_asks_for_the_token_and_says_so_when_done() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::derive(m, b"hmac-b64", b"salt", 4096);
        let mut s = ScramServer::new(m);
        let bare = "n=tokenid,r=abcdefgh,tokenauth=true";
        let Step::Challenge(first) = s.step(format!("n,,{bare}").as_bytes(), |u, token| {
            (u == "tokenid" && token).then(|| cred.clone())
        }) else {
            panic!("no challenge");
        };
        let fin = client_final_for(m, b"hmac-b64", bare, std::str::from_utf8(&first).unwrap());
        assert!(matches!(
            s.step(fin.as_bytes(), |_, _| unreachable!()),
            Step::Done { ref user, token: true, .. } if user == "tokenid"
        ));
    }

    #[test]
    fn malformed_first_messages_are_refused() {
        for bad in [
            &b"p=tls-unique,,n=u,r=abc"[..],
            b"n,,r=abc,n=u",
            b"n,,n=u",
            b"n,,n=u,r=",
            b"n,,n=,r=abc",
            b"n,,n=a=2Xb,r=abc",
            b"n,a=other,n=u,r=abc",
            b"n,,m=x,n=u,r=abc",
            b"\xff\xfe",
            b"",
        ] {
            let mut s = ScramServer::new(ScramMechanism::Sha256);
            assert!(
                matches!(s.step(bad, |_, _| None), Step::Failed(_)),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(sasl_name("a=2Cb=3Dc").unwrap(), "a,b=c");
        let mut s = ScramServer::new(ScramMechanism::Sha256);
        assert!(matches!(
            s.step(&vec![b'n'; MESSAGE_BYTES_MAX + 1], |_, _| None),
            Step::Failed(_)
        ));
    }
}
