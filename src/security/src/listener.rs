//! Client listeners: Kafka's four security protocols and the `--listen` list that names them.
//!
//! A node has at most one listener per protocol, so the protocol's name is also the
//! listener's name (Kafka's `listeners=PLAINTEXT://:9092,SSL://:9093` with the default
//! `listener.security.protocol.map`): a client connected to a node's `SSL` listener is told
//! every node's `SSL` endpoint in Metadata, and nodes without one are left out, as Kafka does.

use std::fmt;

/// Kafka's `security.protocol`, with its wire id (`SecurityProtocol.id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// Kafka's name, which is also the listener's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's id (DescribeCluster and registrations carry it).
    pub fn id(self) -> i16 {
        match self {
            SecurityProtocol::Plaintext => 0,
            SecurityProtocol::Ssl => 1,
            SecurityProtocol::SaslPlaintext => 2,
            SecurityProtocol::SaslSsl => 3,
        }
    }

    pub fn from_id(id: i16) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL.into_iter().find(|p| p.id() == id)
    }

    /// The name in any case (`ssl`, `SASL_SSL`).
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether the connection is TLS from its first byte.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether clients must authenticate with SASL before any other request.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `[PROTOCOL://]HOST:PORT` of `--listen`, not yet resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    pub protocol: SecurityProtocol,
    /// `HOST:PORT` as written (resolved by the caller).
    pub address: String,
}

/// Most listeners one node may have: one per protocol.
pub const LISTENERS_MAX: usize = SecurityProtocol::ALL.len();

/// Parses `--listen`: comma-separated `[PROTOCOL://]HOST:PORT`, PROTOCOL `plaintext` (the
/// default), `ssl`, `sasl_plaintext` or `sasl_ssl` in any case. At most one listener per
/// protocol (the protocol names the listener).
pub fn parse_listeners(value: &str) -> Result<Vec<ListenerSpec>, String> {
    let mut out: Vec<ListenerSpec> = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("{value:?}: an empty listener"));
        }
        let (protocol, address) = match item.split_once("://") {
            Some((p, a)) => (
                SecurityProtocol::from_name(p).ok_or_else(|| {
                    format!(
                        "{item:?}: unknown protocol {p:?} (plaintext, ssl, sasl_plaintext, \
                         sasl_ssl)"
                    )
                })?,
                a,
            ),
            None => (SecurityProtocol::Plaintext, item),
        };
        if address.is_empty() {
            return Err(format!("{item:?}: no HOST:PORT"));
        }
        if out.iter().any(|l| l.protocol == protocol) {
            return Err(format!(
                "{value:?}: two {protocol} listeners (one per protocol: it names the listener)"
            ));
        }
        out.push(ListenerSpec {
            protocol,
            address: address.to_string(),
        });
    }
    debug_assert!(out.len() <= LISTENERS_MAX);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_parse_with_plaintext_as_the_default() {
        let l = parse_listeners("127.0.0.1:9092, SSL://h:9093,sasl_ssl://[::1]:9094").unwrap();
        assert_eq!(
            l,
            vec![
                ListenerSpec {
                    protocol: SecurityProtocol::Plaintext,
                    address: "127.0.0.1:9092".into()
                },
                ListenerSpec {
                    protocol: SecurityProtocol::Ssl,
                    address: "h:9093".into()
                },
                ListenerSpec {
                    protocol: SecurityProtocol::SaslSsl,
                    address: "[::1]:9094".into()
                },
            ]
        );
        for (bad, why) in [
            ("", "empty"),
            ("a:1,,b:2", "empty"),
            ("tls://a:1", "unknown protocol"),
            ("ssl://", "no HOST:PORT"),
            ("a:1,plaintext://b:2", "two PLAINTEXT"),
        ] {
            let e = parse_listeners(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn protocol_ids_and_names_are_kafkas() {
        for p in SecurityProtocol::ALL {
            assert_eq!(SecurityProtocol::from_id(p.id()), Some(p));
            assert_eq!(SecurityProtocol::from_name(p.name()), Some(p));
        }
        assert_eq!(SecurityProtocol::SaslSsl.id(), 3);
        assert!(SecurityProtocol::SaslSsl.tls() && SecurityProtocol::SaslSsl.sasl());
        assert!(!SecurityProtocol::Plaintext.tls() && !SecurityProtocol::Plaintext.sasl());
    }
}
