//! How the CLI connects: TLS (rustls, trusting `--tls-ca`, with a client certificate from
//! `--tls-cert`/`--tls-key` for mTLS) and SASL (PLAIN, SCRAM-SHA-256/512 through
//! SaslHandshake and SaslAuthenticate), matching the broker's `ssl`, `sasl_plaintext` and
//! `sasl_ssl` listeners.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use sluice_security::{ScramClient, ScramMechanism};

use crate::CliError;

/// SASL mechanisms the CLI speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Scram(ScramMechanism),
}

impl Mechanism {
    pub fn parse(name: &str) -> Result<Mechanism, CliError> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            other => ScramMechanism::from_name(other)
                .map(Mechanism::Scram)
                .ok_or_else(|| {
                    CliError(format!(
                        "--sasl-mechanism {name}: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                    ))
                }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(m) => m.name(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: String,
}

/// What every connection of a command uses.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<Sasl>,
}

/// A connection's byte stream: plain TCP or TLS over it.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// `tcp` as is, or wrapped in TLS for `host` (its name or IP address, which the
    /// broker's certificate must carry).
    pub fn new(tcp: TcpStream, host: &str, security: &Security) -> Result<Stream, CliError> {
        let Some(config) = &security.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| CliError(format!("{host}: not a name TLS can check ({e})")))?;
        let conn = rustls::ClientConnection::new(config.clone(), name)
            .map_err(|e| CliError(format!("TLS to {host}: {e}")))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // The handshake now, so a refused certificate reads as such, not as a failed request.
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| CliError(format!("TLS handshake with {host}: {e}")))?;
        }
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// The messages of one SASL exchange: PLAIN's single message, or SCRAM's two with the
/// check of the server's last answer.
pub enum Exchange {
    Plain(Option<Vec<u8>>),
    Scram(Box<ScramClient>),
}

impl Exchange {
    pub fn new(sasl: &Sasl) -> Exchange {
        match sasl.mechanism {
            Mechanism::Plain => {
                let mut m = Vec::with_capacity(sasl.user.len() + sasl.password.len() + 2);
                m.push(0);
                m.extend(sasl.user.as_bytes());
                m.push(0);
                m.extend(sasl.password.as_bytes());
                Exchange::Plain(Some(m))
            }
            Mechanism::Scram(m) => {
                Exchange::Scram(Box::new(ScramClient::new(m, &sasl.user, &sasl.password)))
            }
        }
    }

    /// The first message to send.
    pub fn first(&mut self) -> Vec<u8> {
        match self {
            Exchange::Plain(m) => m.take().unwrap_or_default(),
            Exchange::Scram(c) => c.first(),
        }
    }

    /// Given the server's answer to the last message: the next message to send, or `None`
    /// when the exchange is complete.
    pub fn next(&mut self, answer: &[u8], round: u32) -> Result<Option<Vec<u8>>, CliError> {
        match (self, round) {
            (Exchange::Plain(_), _) => Ok(None),
            (Exchange::Scram(c), 1) => c.answer(answer).map(Some).map_err(CliError),
            (Exchange::Scram(c), _) => c.finish(answer).map(|()| None).map_err(CliError),
        }
    }
}
