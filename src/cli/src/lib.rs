//! The operator's commands of the `sluice` binary, in rpk's shape: `sluice topic …`,
//! `sluice group …` and `sluice cluster …` talk Kafka to a running cluster (`--brokers`), as any client does.
//!
//! - The Kafka side is a blocking client ([`client`]) over kafka-protocol, the codec the
//!   broker itself decodes with: no second protocol stack (librdkafka) in the broker's
//!   binary, every API and version the broker speaks is reachable, and the versions used are
//!   the highest both sides support (so the CLI works against Apache Kafka as well).
//! - Output: `--format text` (aligned tables with a header line) or `--format json` (one
//!   JSON document on stdout).
//! - Errors: one line on stderr saying what is wrong (an unreachable broker, an unknown
//!   topic, a Kafka error by its name), and a non-zero exit: 1 for a failed operation, 2 for
//!   bad usage (clap's).

pub mod client;
mod cluster;
mod consume;
mod group;
mod offsets;
mod output;
mod produce;
mod progress;
mod security;
mod topic;

use std::process::ExitCode;

pub use cluster::ClusterCommand;
pub use group::GroupCommand;
pub use topic::TopicCommand;

/// What a command reports when it fails: one line for the operator.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Flags every client command takes (before or after the subcommand).
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Kafka listeners to bootstrap from: comma-separated HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BROKERS",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT[,...]"
    )]
    pub brokers: String,
    /// Output: text (aligned tables with headers) or json (one document). `topic consume`
    /// also takes a kcat-style record format here ('%k\t%v\n'), and json there is one
    /// object per record and line.
    #[arg(long, global = true, default_value = "text", value_name = "text|json")]
    pub format: String,
    /// TLS, trusting the CA certificates in FILE (PEM): for ssl and sasl_ssl listeners.
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// A client certificate chain (PEM) for mTLS, with --tls-key.
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "FILE", help_heading = "Security")]
    pub tls_key: Option<std::path::PathBuf>,
    /// SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with --user and --password), for
    /// sasl_plaintext and sasl_ssl listeners.
    #[arg(
        long,
        global = true,
        value_name = "MECHANISM",
        help_heading = "Security"
    )]
    pub sasl_mechanism: Option<String>,
    #[arg(long, global = true, env = "SLUICE_USER", help_heading = "Security")]
    pub user: Option<String>,
    #[arg(
        long,
        global = true,
        env = "SLUICE_PASSWORD",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub password: Option<String>,
}

impl Global {
    /// The TLS and SASL settings the flags ask for.
    pub fn security(&self) -> Result<security::Security, CliError> {
        let identity = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => return Err(CliError("--tls-cert and --tls-key go together".into())),
        };
        let tls = match &self.tls_ca {
            Some(ca) => Some(sluice_security::tls::client_config(ca, identity).map_err(CliError)?),
            None if identity.is_some() => {
                return Err(CliError(
                    "--tls-cert needs --tls-ca (the broker's CA)".into(),
                ))
            }
            None => None,
        };
        let sasl = match &self.sasl_mechanism {
            None => None,
            Some(m) => Some(security::Sasl {
                mechanism: security::Mechanism::parse(m)?,
                user: self
                    .user
                    .clone()
                    .ok_or_else(|| CliError("--sasl-mechanism needs --user".into()))?,
                password: self
                    .password
                    .clone()
                    .ok_or_else(|| CliError("--sasl-mechanism needs --password".into()))?,
            }),
        };
        Ok(security::Security { tls, sasl })
    }

    /// A client of the cluster at `--brokers`, connected as the flags say.
    pub fn connect(&self) -> Result<client::Client, CliError> {
        client::Client::connect(&self.brokers, &self.security()?)
    }

    /// `--format` as text or json.
    pub fn output(&self) -> Result<Format, CliError> {
        match self.format.as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            other => Err(CliError(format!("--format {other}: text or json"))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Runs a `sluice topic` command.
pub fn topic(global: &Global, command: TopicCommand) -> ExitCode {
    finish(topic::run(global, command))
}

/// Runs a `sluice group` command.
pub fn group(global: &Global, command: GroupCommand) -> ExitCode {
    finish(group::run(global, command))
}

/// Runs a `sluice cluster` command.
pub fn cluster(global: &Global, command: ClusterCommand) -> ExitCode {
    finish(cluster::run(global, command))
}

fn finish(result: Result<String, CliError>) -> ExitCode {
    match result {
        Ok(out) => {
            use std::io::Write;
            // A closed stdout (`| head`) is not the command's failure.
            let _ = std::io::stdout().write_all(out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Kafka's name of an error code (`TOPIC_ALREADY_EXISTS`), as its tools print it.
pub use sluice_codec::error::error_name;

/// Kafka's name of `code`, and the broker's message when it gave one.
pub(crate) fn error_text(code: i16, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{} ({m})", error_name(code)),
        None => error_name(code),
    }
}

/// `code` as the error of `what`.
pub(crate) fn kafka_error(what: &str, code: i16, message: Option<&str>) -> CliError {
    CliError(format!("{what}: {}", error_text(code, message)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(super::error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(super::error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(super::error_name(0), "NONE");
        assert_eq!(super::error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(super::error_name(999), "UNKNOWN_ERROR_CODE_999");
    }
}
