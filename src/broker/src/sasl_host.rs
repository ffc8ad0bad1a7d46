//! SASL authentication of connections on `sasl_plaintext` and `sasl_ssl` listeners, as
//! Kafka's `SaslServerAuthenticator` runs it: until a client has authenticated it may send
//! only ApiVersions, SaslHandshake and then SaslAuthenticate (handshake v1) or raw SASL
//! tokens (handshake v0); anything else, a malformed message or a failed authentication
//! closes the connection (a failure after its error response and a short delay).
//!
//! Mechanisms (those `--sasl-enabled-mechanisms` offers): PLAIN, SCRAM-SHA-256 and
//! SCRAM-SHA-512, checked against the SCRAM credentials of the metadata image
//! (`crate::scram_store`), and OAUTHBEARER, a JWT checked against the configured JWKS
//! (`crate::oauth_host`). The principal is `User:` and the authenticated name (a token's
//! subject). SCRAM with Kafka's `tokenauth=true` extension logs in with a delegation token
//! (user name: the token id, password: its HMAC in base64; `crate::tokens_host`): the
//! principal is the token's owner, the connection is token-authenticated (it may not ask
//! for tokens), and its session never outlives the token's expiry.
//!
//! Re-authentication (KIP-368) under `connections.max.reauth.ms`: a client that
//! authenticated with SaslAuthenticate v1+ is told its session's lifetime; it may run the
//! exchange again on the same connection (SaslHandshake, then SaslAuthenticate) as the same
//! principal, which starts a new session; once the session has expired, anything else it
//! sends closes the connection.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::{
    ApiKey, RequestKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_codec::{peek_request_prefix, RequestHeaderInfo};
use sluice_security::scram::{Step, INVALID_CREDENTIALS};
use sluice_security::{parse_plain, ScramMechanism, ScramServer};

use crate::conn::Outcome;
use crate::handlers::respond;
use crate::shard::BrokerShard;

/// Largest frame a client may send before it has authenticated (Kafka's
/// `sasl.server.max.receive.size`).
pub const SASL_FRAME_BYTES_MAX: usize = 512 * 1024;

/// How long a failed authentication waits before its answer (Kafka's
/// `connection.failed.authentication.delay.ms`), so a client guessing passwords gets few
/// tries a second per connection.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

use crate::kerr::{ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM};

enum Mechanism {
    Plain,
    Scram(Box<ScramServer>),
    OAuthBearer,
}

enum State {
    /// ApiVersions and SaslHandshake only.
    Start,
    /// SaslHandshake chose the mechanism; its messages come in SaslAuthenticate requests
    /// (`raw` false) or as bare size-prefixed tokens (`raw`: handshake v0).
    Exchange {
        mechanism: Mechanism,
        raw: bool,
    },
    Authenticated,
}

/// One connection's SASL state.
pub struct SaslConn {
    state: State,
    principal: Option<String>,
    /// `connections.max.reauth.ms`.
    reauth: Option<Duration>,
    /// When the session ends (clients that can re-authenticate, under `reauth`).
    expires: Option<Instant>,
    /// The principal being re-authenticated (it may not change).
    reauthenticating: Option<String>,
    /// When the authenticating token expires (OAUTHBEARER, a delegation token; ms since
    /// the epoch): a session never outlives its token.
    token_expires_ms: Option<i64>,
    /// Authenticated with a delegation token.
    token_authenticated: bool,
}

/// What to do with a frame of a connection that has not authenticated yet.
pub enum Verdict {
    /// Serve it as any request (ApiVersions).
    Serve,
    /// Answer with this and go on reading.
    Answer(Outcome),
    /// Answer with this (if anything), then close the connection.
    Refuse(Option<Outcome>),
}

impl SaslConn {
    pub fn new(reauth: Option<Duration>) -> SaslConn {
        SaslConn {
            state: State::Start,
            principal: None,
            reauth,
            expires: None,
            reauthenticating: None,
            token_expires_ms: None,
            token_authenticated: false,
        }
    }

    /// Whether this frame belongs to the authentication exchange (rather than being served
    /// as a request): every frame before the client has authenticated, and a SaslHandshake
    /// that starts a re-authentication.
    pub fn takes(&self, frame: &Bytes) -> bool {
        match self.state {
            // Re-authentication: under `connections.max.reauth.ms`, or for a session a
            // token's expiry ends.
            State::Authenticated => {
                (self.reauth.is_some() || self.expires.is_some()) && is_handshake(frame)
            }
            _ => true,
        }
    }

    /// Whether the session has ended and `frame` is not the start of a new one: the
    /// connection must close (Kafka's rule for clients told their session lifetime).
    pub fn expired_for(&self, frame: &Bytes, now: Instant) -> bool {
        self.authenticated() && self.expires.is_some_and(|e| now >= e) && !is_handshake(frame)
    }

    /// `User:<name>` once authenticated.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    pub fn authenticated(&self) -> bool {
        matches!(self.state, State::Authenticated)
    }

    /// Whether the client logged in with a delegation token.
    pub fn token_authenticated(&self) -> bool {
        self.token_authenticated
    }

    /// Takes one frame of the authentication exchange ([`SaslConn::takes`]).
    pub async fn frame(&mut self, shard: &BrokerShard, frame: Bytes) -> Verdict {
        if self.authenticated() {
            // A re-authentication: the exchange starts over for the same principal (the
            // new login says whether a token bounds it).
            debug_assert!(is_handshake(&frame));
            self.reauthenticating = self.principal.clone();
            self.token_expires_ms = None;
            self.state = State::Start;
        }
        if let State::Exchange { raw: true, .. } = self.state {
            // Handshake v0: the frame is the token itself, and so is the answer.
            return match self.token(shard, &frame) {
                Ok(answer) => Verdict::Answer(Outcome::Respond(raw_frame(&answer))),
                Err(message) => {
                    log::info!("SASL authentication failed: {message}");
                    glommio::timer::sleep(FAILED_AUTHENTICATION_DELAY).await;
                    Verdict::Refuse(None)
                }
            };
        }
        let Ok(prefix) = peek_request_prefix(&frame) else {
            return Verdict::Refuse(None);
        };
        let allowed = match (&self.state, ApiKey::try_from(prefix.api_key)) {
            (_, Ok(ApiKey::ApiVersions)) => return Verdict::Serve,
            (State::Start, Ok(ApiKey::SaslHandshake)) => true,
            (State::Exchange { raw: false, .. }, Ok(ApiKey::SaslAuthenticate)) => true,
            _ => false,
        };
        if !allowed {
            log::info!(
                "closing a connection that sent api key {} before authenticating",
                prefix.api_key
            );
            return Verdict::Refuse(None);
        }
        let request = match shard.api.decode_frame(frame) {
            Ok(r) => r,
            Err(_) => return Verdict::Refuse(None),
        };
        let h = &request.header;
        match request.body {
            RequestKind::SaslHandshake(r) => self.handshake(shard, h, r.mechanism.as_str()),
            RequestKind::SaslAuthenticate(r) => match self.token(shard, &r.auth_bytes) {
                Ok(answer) => {
                    let mut resp =
                        SaslAuthenticateResponse::default().with_auth_bytes(answer.into());
                    // Kafka's message is null on success (the codec's default is empty).
                    resp.error_message = None;
                    // A session with a lifetime for clients that can re-authenticate (v1+
                    // carries the lifetime; v0 clients keep theirs, as in Kafka): at most
                    // `connections.max.reauth.ms`, and never past the expiry of the token
                    // it logged in with (with or without a maximum, as Kafka's).
                    let token_left = self.token_expires_ms.map(|exp| {
                        Duration::from_millis(
                            exp.saturating_sub(crate::shard::now_ms()).max(0) as u64
                        )
                    });
                    let life = match (self.reauth, token_left) {
                        (Some(r), Some(t)) => Some(r.min(t)),
                        (r, t) => r.or(t),
                    };
                    if let (true, Some(life), true) =
                        (self.authenticated(), life, h.api_version >= 1)
                    {
                        self.expires = Some(Instant::now() + life);
                        resp.session_lifetime_ms = life.as_millis().min(i64::MAX as u128) as i64;
                    }
                    Verdict::Answer(respond(h, &resp))
                }
                Err(message) => {
                    log::info!("SASL authentication failed: {message}");
                    glommio::timer::sleep(FAILED_AUTHENTICATION_DELAY).await;
                    let resp = SaslAuthenticateResponse::default()
                        .with_error_code(SASL_AUTHENTICATION_FAILED)
                        .with_error_message(Some(StrBytes::from_string(message)));
                    Verdict::Refuse(Some(respond(h, &resp)))
                }
            },
            _ => Verdict::Refuse(None),
        }
    }

    fn handshake(&mut self, shard: &BrokerShard, h: &RequestHeaderInfo, name: &str) -> Verdict {
        let enabled = &shard.config.sasl_mechanisms;
        let mechanisms = enabled
            .iter()
            .map(|m| StrBytes::from_string(m.clone()))
            .collect();
        let chosen = match name {
            _ if !enabled.iter().any(|m| m == name) => None,
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" if shard.shared_handle.oauth.is_some() => Some(Mechanism::OAuthBearer),
            other => ScramMechanism::from_name(other)
                .map(|m| Mechanism::Scram(Box::new(ScramServer::new(m)))),
        };
        let resp = SaslHandshakeResponse::default().with_mechanisms(mechanisms);
        match chosen {
            Some(mechanism) => {
                self.state = State::Exchange {
                    mechanism,
                    raw: h.api_version == 0,
                };
                Verdict::Answer(respond(h, &resp))
            }
            None => {
                log::info!("SASL handshake for an unsupported mechanism {name:?}");
                Verdict::Refuse(Some(respond(
                    h,
                    &resp.with_error_code(UNSUPPORTED_SASL_MECHANISM),
                )))
            }
        }
    }

    /// Runs one SASL message of the chosen mechanism: the bytes to answer with, or why the
    /// authentication failed (for the client; nothing secret in it).
    fn token(&mut self, shard: &BrokerShard, message: &[u8]) -> Result<Vec<u8>, String> {
        let State::Exchange { mechanism, .. } = &mut self.state else {
            return Err("SASL message out of order".into());
        };
        let credentials = &shard.shared_handle.credentials;
        let user = match mechanism {
            Mechanism::Plain => {
                let (user, password) = parse_plain(message)?;
                // Every stored credential of the user is tried (each check costs the same
                // PBKDF2 work whether or not the password matches).
                let ok = credentials
                    .of_user(&user)
                    .iter()
                    .any(|c| c.verify_password(&password));
                if !ok {
                    return Err(INVALID_CREDENTIALS.into());
                }
                self.finish(user)?;
                return Ok(Vec::new());
            }
            Mechanism::OAuthBearer => {
                let oauth = shard
                    .shared_handle
                    .oauth
                    .as_ref()
                    .ok_or("OAUTHBEARER is not configured")?;
                let v = oauth.authenticate(message)?;
                self.token_expires_ms = Some(v.expires_ms);
                self.finish(v.subject)?;
                return Ok(Vec::new());
            }
            Mechanism::Scram(server) => {
                let m = server.mechanism();
                let secret = shard.config.delegation_token_secret_key.as_deref();
                let tokens = &shard.shared_handle.tokens;
                let lookup = |user: &str, token: bool| match (token, secret) {
                    (false, _) => credentials.get(user, m),
                    (true, Some(key)) => tokens.credential(user, m, key),
                    (true, None) => None,
                };
                match server.step(message, lookup) {
                    Step::Challenge(c) => return Ok(c),
                    Step::Failed(e) => return Err(e),
                    Step::Done {
                        user,
                        final_message,
                        token: false,
                    } => (user, final_message),
                    Step::Done {
                        user: token_id,
                        final_message,
                        token: true,
                    } => {
                        // The token may have gone since the first message.
                        let t = tokens.get();
                        let t = t.by_id.get(&token_id).ok_or(INVALID_CREDENTIALS)?;
                        self.token_expires_ms = Some(t.expiry_ms.min(t.max_ms));
                        self.finish_as(t.owner.clone(), true)?;
                        return Ok(final_message);
                    }
                }
            }
        };
        let (user, final_message) = user;
        self.finish(user)?;
        Ok(final_message)
    }

    fn finish(&mut self, user: String) -> Result<(), String> {
        self.finish_as(format!("User:{user}"), false)
    }

    fn finish_as(&mut self, principal: String, token: bool) -> Result<(), String> {
        if let Some(before) = self.reauthenticating.take() {
            if before != principal {
                return Err("Cannot change principals during re-authentication".into());
            }
        }
        self.token_authenticated = token;
        log::debug!("SASL: authenticated {principal}");
        self.principal = Some(principal);
        self.state = State::Authenticated;
        Ok(())
    }
}

fn is_handshake(frame: &Bytes) -> bool {
    peek_request_prefix(frame).is_ok_and(|p| p.api_key == ApiKey::SaslHandshake as i16)
}

/// A bare SASL token frame (handshake v0): the size, then the bytes.
fn raw_frame(token: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + token.len());
    b.put_u32(token.len() as u32);
    b.put_slice(token);
    b.freeze()
}

/// SaslHandshake or SaslAuthenticate on a connection that needs none, or has authenticated
/// already without re-authentication on (`connections.max.reauth.ms` 0) or outside one:
/// Kafka's ILLEGAL_SASL_STATE.
pub fn out_of_place(h: &RequestHeaderInfo, body: &RequestKind) -> Option<Outcome> {
    match body {
        RequestKind::SaslHandshake(_) => Some(respond(
            h,
            &SaslHandshakeResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_mechanisms(Vec::new()),
        )),
        RequestKind::SaslAuthenticate(_) => Some(respond(
            h,
            &SaslAuthenticateResponse::default()
                .with_error_code(ILLEGAL_SASL_STATE)
                .with_error_message(Some(StrBytes::from_static_str(
                    "Unexpected SaslAuthenticate: the connection needs no authentication or has authenticated",
                ))),
        )),
        _ => None,
    }
}
