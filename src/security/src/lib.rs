//! Kafka's security model for the broker: which security protocol each client listener
//! speaks, TLS on the listeners that need it, the SASL mechanisms (PLAIN, SCRAM and
//! OAUTHBEARER) with the credentials and tokens they check, and the authorizer that decides requests from ACLs.
//!
//! Invariants:
//! - A node has at most one listener per security protocol; the protocol's name is the
//!   listener's name, and Metadata answers a client with the endpoints of the listener it
//!   came in on (other nodes' listeners of the same name), never another listener's.
//! - TLS is rustls (TLS 1.2 and 1.3, modern suites); a TLS listener never falls back to
//!   plaintext, and a configuration that fails to load never replaces a working one.
//! - A SCRAM credential holds a salt, an iteration count (4096..=16384) and the two derived
//!   keys, never a password; PLAIN checks a password against that same credential. Every
//!   comparison of secrets is constant-time, and a failed authentication says only
//!   "Invalid user credentials", whether or not the user exists.
//! - A client certificate's principal is `User:` + its subject in RFC 2253 form, as Kafka's
//!   default principal mapping gives it.
//!
//! - OAUTHBEARER accepts only signed JWTs whose signature verifies against the configured
//!   JWKS and whose expiry, audience and issuer pass; the subject names the principal.
//! - Authorization is Kafka's StandardAuthorizer: DENY wins, implied operations only
//!   widen ALLOWs, a resource no binding names is denied unless
//!   `allow.everyone.if.no.acl.found`, and super users are never denied.
//!
//! - The client side (the `sluice` CLI's): a TLS client configuration trusting a given CA,
//!   and a SCRAM client that believes a server only once the server's signature checks out.
//!
//! Nothing here does network IO: the broker runs handshakes over its sockets with these
//! configurations.

pub mod acl;
pub mod listener;
pub mod oauth;
pub mod plain;
pub mod scram;
pub mod scram_client;
pub mod tls;

pub use acl::{parse_super_users, Authorizer};
pub use listener::{parse_listeners, ListenerSpec, SecurityProtocol, LISTENERS_MAX};
pub use plain::parse_plain;
pub use scram::{ScramCredential, ScramMechanism, ScramServer};
pub use scram_client::ScramClient;
pub use tls::{certificate_principal, TlsConfigs, TlsFiles};
