//! The client's side of a SCRAM-SHA-256/512 exchange (RFC 5802), as the `sluice` CLI
//! authenticates with it: client-first, then client-final with the proof, then the check of
//! the server's signature, so a server that does not know the password is not believed.
//! Sans-IO: the caller carries the messages (Kafka's SaslAuthenticate).
//!
//! What a server may send is bounded before any work: iterations within Kafka's range (a
//! hostile server cannot make the client spin on PBKDF2), a nonce that extends the client's.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ring::digest;

use crate::scram::{mac, salted_password, ScramMechanism, ITERATIONS_MAX, ITERATIONS_MIN};

enum State {
    Start,
    SentFirst { bare: String },
    SentFinal { server_signature: Vec<u8> },
    Over,
}

/// One SCRAM exchange of `user` with `password`.
pub struct ScramClient {
    mechanism: ScramMechanism,
    user: String,
    password: Vec<u8>,
    nonce: String,
    state: State,
}

/// RFC 5802's saslname: `,` as `=2C` and `=` as `=3D`.
fn escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// A new exchange with a fresh random client nonce.
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> ScramClient {
        let mut raw = [0u8; 24];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw);
        ScramClient::with_nonce(mechanism, user, password, B64.encode(raw))
    }

    /// A new exchange with this nonce (printable, no `,`): for tests.
    pub fn with_nonce(
        mechanism: ScramMechanism,
        user: &str,
        password: &str,
        nonce: String,
    ) -> ScramClient {
        ScramClient {
            mechanism,
            user: user.to_string(),
            password: password.as_bytes().to_vec(),
            nonce,
            state: State::Start,
        }
    }

    /// The client-first message (no channel binding, no authorization id).
    pub fn first(&mut self) -> Vec<u8> {
        let bare = format!("n={},r={}", escape(&self.user), self.nonce);
        let message = format!("n,,{bare}");
        self.state = State::SentFirst { bare };
        message.into_bytes()
    }

    /// The client-final message answering the server-first `challenge`.
    pub fn answer(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        let State::SentFirst { bare } = std::mem::replace(&mut self.state, State::Over) else {
            return Err("SCRAM: a challenge out of turn".into());
        };
        let server_first =
            std::str::from_utf8(challenge).map_err(|_| "SCRAM: the challenge is not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = B64.decode(v).ok(),
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("e", v)) => return Err(format!("SCRAM: the server refused: {v}")),
                _ => {}
            }
        }
        let nonce = nonce
            .filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len())
            .ok_or("SCRAM: the server's nonce does not extend the client's")?;
        let salt = salt.ok_or("SCRAM: no salt in the challenge")?;
        let iterations = iterations
            .filter(|i| (ITERATIONS_MIN..=ITERATIONS_MAX).contains(i))
            .ok_or("SCRAM: iterations missing or outside Kafka's 4096..=16384")?;
        let salted = salted_password(self.mechanism, &self.password, &salt, iterations);
        let client_key = mac(self.mechanism.hmac(), &salted, b"Client Key");
        let stored_key = digest::digest(self.mechanism.digest(), &client_key);
        // c=biws: base64 of the gs2 header "n,,".
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let signature = mac(
            self.mechanism.hmac(),
            stored_key.as_ref(),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = mac(self.mechanism.hmac(), &salted, b"Server Key");
        self.state = State::SentFinal {
            server_signature: mac(self.mechanism.hmac(), &server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it knows the credential.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), String> {
        let State::SentFinal { server_signature } = std::mem::replace(&mut self.state, State::Over)
        else {
            return Err("SCRAM: a final message out of turn".into());
        };
        let text = std::str::from_utf8(server_final)
            .map_err(|_| "SCRAM: the final message is not UTF-8")?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(format!("SCRAM: the server refused: {e}"));
        }
        let v = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or("SCRAM: no server signature")?;
        if v != server_signature {
            return Err(
                "SCRAM: the server's signature is wrong (it does not hold the credential)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scram::{ScramCredential, ScramServer, Step};

    fn exchange(
        mechanism: ScramMechanism,
        user: &str,
        password: &str,
        stored: &ScramCredential,
    ) -> Result<String, String> {
        let mut client = ScramClient::new(mechanism, user, password);
        let mut server = ScramServer::new(mechanism);
        let lookup = |u: &str, _token: bool| (u == "a,b=c").then(|| stored.clone());
        let Step::Challenge(challenge) = server.step(&client.first(), lookup) else {
            return Err("no challenge".into());
        };
        let last = client.answer(&challenge)?;
        match server.step(&last, |_, _| None) {
            Step::Done {
                user,
                final_message,
                ..
            } => {
                client.finish(&final_message)?;
                Ok(user)
            }
            Step::Failed(e) => Err(e),
            Step::Challenge(_) => Err("another challenge".into()),
        }
    }

    #[test]
    fn the_client_authenticates_against_the_server_and_checks_it() {
        for m in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            let stored = ScramCredential::derive(m, b"pw", b"salt", 4096);
            assert_eq!(exchange(m, "a,b=c", "pw", &stored), Ok("a,b=c".into()));
            assert!(exchange(m, "a,b=c", "wrong", &stored).is_err());
        }
    }

    #[test]
    fn a_server_without_the_credential_or_with_bad_parameters_is_refused() {
        let m = ScramMechanism::Sha256;
        let mut c = ScramClient::with_nonce(m, "u", "pw", "abc".into());
        c.first();
        let salt = B64.encode(b"salt");
        for bad in [
            format!("r=xyz,s={salt},i=4096"),
            format!("r=abc,s={salt},i=4096"),
            format!("r=abcdef,s={salt},i=1000000000"),
            "r=abcdef,i=4096".to_string(),
        ] {
            let mut c = ScramClient::with_nonce(m, "u", "pw", "abc".into());
            c.first();
            assert!(c.answer(bad.as_bytes()).is_err(), "{bad}");
        }
        c.answer(format!("r=abcdef,s={salt},i=4096").as_bytes())
            .unwrap();
        assert!(c.finish(b"v=bm90IGl0").is_err(), "a forged signature");
    }
}
