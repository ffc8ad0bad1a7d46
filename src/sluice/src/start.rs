//! `sluice start`'s flags: clap parses and range-checks each one; [`StartArgs::into_config`]
//! turns them into a [`BrokerConfig`] and checks the flags that only make sense together.
//!
//! Flag names follow Kafka's broker configs (`max.connections.per.ip` is
//! `--max-connections-per-ip`) and their defaults are `BrokerConfig::default()`'s, which are
//! Kafka's; a flag left out keeps the default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_broker::config::{Listener, TlsFiles};
use sluice_broker::BrokerConfig;

/// Milliseconds of at least 1 (Kafka's lower bound for its timeouts).
fn positive_ms<T: std::str::FromStr + PartialOrd + From<u8>>(v: &str) -> Result<T, String> {
    v.parse()
        .ok()
        .filter(|ms: &T| *ms >= T::from(1))
        .ok_or_else(|| format!("{v} is not a number of milliseconds of at least 1"))
}

/// A byte rate: a finite number above 0.
fn positive_rate(v: &str) -> Result<f64, String> {
    v.parse()
        .ok()
        .filter(|r: &f64| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("{v} is not a number of bytes per second above 0"))
}

/// `--authorizer`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authorizer {
    /// ACLs (Kafka's StandardAuthorizer): deny unless an ACL allows.
    Acl,
    /// No authorization: every client may do everything.
    None,
}

/// `--group-consumer-migration-policy`'s values (Kafka's `group.consumer.migration.policy`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "lower")]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

/// Runs the broker until SIGTERM or SIGINT.
///
/// A flag given twice takes its last value (scripts append overrides to a base command line).
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Broker", args_override_self = true)]
pub struct StartArgs {
    /// Directory of the partitions' logs and the node's state. Several (comma-separated,
    /// or the flag repeated: Kafka's log.dirs, JBOD) spread the partitions over them; the
    /// first also holds the node's state.
    #[arg(long, value_name = "DIR[,DIR...]", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub data_dir: Vec<PathBuf>,
    /// Kafka listeners, comma-separated `[PROTOCOL://]HOST:PORT` (PROTOCOL: plaintext, ssl,
    /// sasl_plaintext, sasl_ssl; plaintext when left out).
    #[arg(long, value_name = "LISTENERS")]
    pub listen: Option<String>,
    /// Host clients are told to connect to (default: the first listener's address).
    #[arg(long, value_name = "HOST")]
    pub advertised_host: Option<String>,
    /// Executor threads, one per CPU (default: every CPU the process may use).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub shards: Option<u32>,
    /// Do not pin each shard to a CPU.
    #[arg(long)]
    pub no_pin: bool,
    /// This node's id (Kafka's node.id).
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,

    /// This node's listener for node-to-node traffic (Raft, replication, forwarding).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Cluster")]
    pub rpc_listen: Option<String>,
    /// The controller quorum: `ID@HOST:PORT` of each voter's rpc listener, comma-separated
    /// (Kafka's controller.quorum.voters). Without it the node is a cluster of one.
    #[arg(long, value_name = "ID@HOST:PORT,...", help_heading = "Cluster")]
    pub voters: Option<String>,
    /// TLS with client certificates between nodes (needs --tls-cert, --tls-key, --tls-ca).
    #[arg(long, help_heading = "Cluster")]
    pub rpc_tls: bool,
    /// Kafka's replica.lag.time.max.ms.
    #[arg(long, value_name = "MS", help_heading = "Cluster")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Kafka's auto.leader.rebalance.enable.
    #[arg(long, value_name = "BOOL", help_heading = "Cluster")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// Kafka's leader.imbalance.check.interval.seconds.
    #[arg(long, value_name = "S", help_heading = "Cluster")]
    pub leader_imbalance_check_interval_seconds: Option<u64>,
    /// Kafka's leader.imbalance.per.broker.percentage.
    #[arg(long, value_name = "P", help_heading = "Cluster",
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub leader_imbalance_per_broker_percentage: Option<u32>,
    /// Kafka's controlled.shutdown.enable.
    #[arg(long, value_name = "BOOL", help_heading = "Cluster")]
    pub controlled_shutdown_enable: Option<bool>,

    /// Kafka's num.partitions (for auto-created topics and CreateTopics without a count).
    #[arg(long, value_name = "N", help_heading = "Topics")]
    pub num_partitions: Option<i32>,
    /// Kafka's default.replication.factor.
    #[arg(
        long,
        value_name = "N",
        help_heading = "Topics",
        allow_negative_numbers = true
    )]
    pub default_replication_factor: Option<i16>,
    /// Kafka's auto.create.topics.enable.
    #[arg(long, value_name = "BOOL", help_heading = "Topics")]
    pub auto_create_topics: Option<bool>,
    /// Kafka's log.retention.check.interval.ms.
    #[arg(long, value_name = "MS", help_heading = "Topics")]
    pub retention_check_interval_ms: Option<u64>,
    /// Kafka's producer.id.expiration.ms.
    #[arg(long, value_name = "MS", help_heading = "Topics", value_parser = positive_ms::<i32>)]
    pub producer_id_expiration_ms: Option<i32>,
    /// Kafka's log.cleaner.backoff.ms: how often each shard looks for compacted logs to clean.
    #[arg(long, value_name = "MS", help_heading = "Topics", value_parser = positive_ms::<u64>)]
    pub log_cleaner_interval_ms: Option<u64>,
    /// Kafka's log.cleaner.dedupe.buffer.size: memory for the cleaners' key maps (all shards).
    #[arg(long, value_name = "BYTES", help_heading = "Topics")]
    pub log_cleaner_dedupe_buffer_size: Option<usize>,
    /// Kafka's log.cleaner.io.max.bytes.per.second: the log cleaners' reads and writes, all
    /// shards together (default: unlimited).
    #[arg(long, value_name = "BYTES", help_heading = "Topics", value_parser = positive_rate)]
    pub log_cleaner_io_max_bytes_per_second: Option<f64>,

    /// PEM certificate chain for ssl and sasl_ssl listeners.
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: turns on client certificates (mTLS) on ssl listeners.
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub tls_ca: Option<PathBuf>,
    /// Kafka's sasl.enabled.mechanisms (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER).
    #[arg(long, value_name = "M,...", help_heading = "Security")]
    pub sasl_enabled_mechanisms: Option<String>,
    /// Where OAUTHBEARER's signing keys are: a file: or https: URL of a JWKS document.
    #[arg(long, value_name = "URL", help_heading = "Security")]
    pub sasl_oauthbearer_jwks_endpoint_url: Option<String>,
    /// Kafka's sasl.oauthbearer.jwks.endpoint.refresh.ms (https: URLs).
    #[arg(long, value_name = "MS", default_value_t = 3_600_000, help_heading = "Security",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sasl_oauthbearer_jwks_endpoint_refresh_ms: u64,
    /// Kafka's sasl.oauthbearer.jwks.endpoint.retry.backoff.ms (https: URLs).
    #[arg(long, value_name = "MS", default_value_t = 100, help_heading = "Security",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sasl_oauthbearer_jwks_endpoint_retry_backoff_ms: u64,
    /// Kafka's sasl.oauthbearer.jwks.endpoint.retry.backoff.max.ms (https: URLs).
    #[arg(long, value_name = "MS", default_value_t = 10_000, help_heading = "Security",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sasl_oauthbearer_jwks_endpoint_retry_backoff_max_ms: u64,
    /// PEM CA bundle an https: JWKS endpoint's certificate must chain to (default: the
    /// Mozilla root certificates).
    #[arg(long, value_name = "FILE", help_heading = "Security")]
    pub sasl_oauthbearer_jwks_ca: Option<PathBuf>,
    /// Kafka's sasl.oauthbearer.expected.audience (comma-separated).
    #[arg(long, value_name = "A,...", help_heading = "Security")]
    pub sasl_oauthbearer_expected_audience: Option<String>,
    /// Kafka's sasl.oauthbearer.expected.issuer.
    #[arg(long, value_name = "I", help_heading = "Security")]
    pub sasl_oauthbearer_expected_issuer: Option<String>,
    /// Kafka's sasl.oauthbearer.sub.claim.name.
    #[arg(long, value_name = "N", help_heading = "Security")]
    pub sasl_oauthbearer_sub_claim_name: Option<String>,
    /// Kafka's sasl.oauthbearer.clock.skew.seconds.
    #[arg(long, value_name = "S", help_heading = "Security",
          value_parser = clap::value_parser!(i64).range(0..))]
    pub sasl_oauthbearer_clock_skew_seconds: Option<i64>,
    /// Authorization: acl (deny unless an ACL allows) or none.
    #[arg(long, value_enum, help_heading = "Security")]
    pub authorizer: Option<Authorizer>,
    /// Kafka's super.users: `User:A;User:B`.
    #[arg(long, value_name = "PRINCIPALS", help_heading = "Security")]
    pub super_users: Option<String>,
    /// Kafka's allow.everyone.if.no.acl.found.
    #[arg(long, value_name = "BOOL", help_heading = "Security")]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// Kafka's delegation.token.secret.key: signs delegation tokens (the same on every
    /// node); without it the token APIs are refused.
    #[arg(
        long,
        value_name = "KEY",
        help_heading = "Security",
        env = "SLUICE_DELEGATION_TOKEN_SECRET_KEY",
        hide_env_values = true
    )]
    pub delegation_token_secret_key: Option<String>,
    /// Kafka's delegation.token.max.lifetime.ms.
    #[arg(long, value_name = "MS", help_heading = "Security",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub delegation_token_max_lifetime_ms: Option<i64>,
    /// Kafka's delegation.token.expiry.time.ms.
    #[arg(long, value_name = "MS", help_heading = "Security",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub delegation_token_expiry_time_ms: Option<i64>,
    /// Kafka's connections.max.reauth.ms (0: no re-authentication).
    #[arg(long, value_name = "MS", help_heading = "Security")]
    pub connections_max_reauth_ms: Option<u64>,

    /// Kafka's telemetry.max.bytes: the largest metrics payload a client may push (KIP-714).
    #[arg(long, value_name = "BYTES", help_heading = "Limits",
          value_parser = clap::value_parser!(i32).range(1..))]
    pub telemetry_max_bytes: Option<i32>,
    /// Kafka's connections.max.idle.ms.
    #[arg(long, value_name = "MS", help_heading = "Limits", value_parser = positive_ms::<u64>)]
    pub connections_max_idle_ms: Option<u64>,
    /// Kafka's max.connections.per.ip.
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub max_connections_per_ip: Option<u32>,
    /// Kafka's max.connection.creation.rate: new connections per second over all listeners.
    #[arg(long, value_name = "N", help_heading = "Limits",
          value_parser = clap::value_parser!(i32).range(1..))]
    pub max_connection_creation_rate: Option<i32>,
    /// Kafka's queued.max.request.bytes (per shard here; -1: no limit).
    #[arg(
        long,
        value_name = "BYTES",
        help_heading = "Limits",
        allow_negative_numbers = true
    )]
    pub queued_max_request_bytes: Option<i64>,
    /// Per shard: bytes the partition logs' read-ahead may hold (windows read from disk
    /// ahead of consumers and followers reading sequentially); 0 turns read-ahead off.
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    pub read_ahead_bytes_max: Option<usize>,
    /// How long a request over the memory budget may hold its overdraft.
    #[arg(long, value_name = "MS", help_heading = "Limits", value_parser = positive_ms::<i32>)]
    pub request_overdraft_hold_ms: Option<i32>,
    /// How often each shard logs its counters (0: never).
    #[arg(long, value_name = "MS", help_heading = "Limits")]
    pub stats_interval_ms: Option<u64>,
    /// Where the admin API listens: Prometheus `/metrics`, `/v1/status/ready` and
    /// `/v1/status/live` over HTTP; `off` for none [default: 127.0.0.1:9644; if that
    /// address is in use, the broker starts without it and warns].
    #[arg(long, value_name = "HOST:PORT|off", help_heading = "Metrics")]
    pub admin_listen: Option<String>,
    /// Sum partition metrics per topic (Redpanda's aggregate_metrics): no per-partition
    /// series, for clusters with very many partitions.
    #[arg(long, help_heading = "Metrics")]
    pub aggregate_metrics: bool,

    /// Kafka's group.consumer.session.timeout.ms (KIP-848 groups).
    #[arg(long, value_name = "MS", help_heading = "Groups and transactions")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Kafka's group.consumer.heartbeat.interval.ms.
    #[arg(long, value_name = "MS", help_heading = "Groups and transactions")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Kafka's group.consumer.migration.policy.
    #[arg(
        long,
        value_enum,
        ignore_case = true,
        help_heading = "Groups and transactions"
    )]
    pub group_consumer_migration_policy: Option<MigrationPolicy>,
    /// Kafka's transaction.max.timeout.ms.
    #[arg(long, value_name = "MS", help_heading = "Groups and transactions",
          value_parser = positive_ms::<i32>)]
    pub transaction_max_timeout_ms: Option<i32>,
    /// Kafka's transactional.id.expiration.ms.
    #[arg(long, value_name = "MS", help_heading = "Groups and transactions",
          value_parser = positive_ms::<i64>)]
    pub transactional_id_expiration_ms: Option<i64>,
}

impl StartArgs {
    /// The broker's configuration: the defaults, with each flag given applied, and the
    /// flags that depend on each other checked.
    pub fn into_config(self) -> Result<BrokerConfig, String> {
        let mut c = BrokerConfig::default();
        let a = self;
        if let Some((first, more)) = a.data_dir.split_first() {
            c.data_dir = first.clone();
            c.more_data_dirs = more.to_vec();
        }
        if let Some(v) = &a.listen {
            c.listeners = sluice_security::parse_listeners(v)
                .map_err(|e| format!("--listen {e}"))?
                .into_iter()
                .map(|l| {
                    Ok(Listener {
                        protocol: l.protocol,
                        addr: resolve(&l.address)?,
                    })
                })
                .collect::<Result<_, String>>()?;
        }
        if let Some(n) = a.shards {
            c.shards = n as usize;
        }
        c.pin &= !a.no_pin;
        if let Some(id) = a.node_id {
            c.node_id = id;
        }
        if let Some(v) = &a.rpc_listen {
            c.rpc_listen =
                Some(sluice_rpc::cluster::resolve(v).map_err(|e| format!("--rpc-listen {e}"))?);
        }
        if let Some(v) = &a.voters {
            c.voters = sluice_rpc::parse_voters(v)?;
        }
        c.rpc_tls = a.rpc_tls;
        if let Some(ms) = a.replica_lag_time_max_ms {
            c.replica_lag_time_max = Duration::from_millis(ms);
        }
        if let Some(b) = a.auto_leader_rebalance_enable {
            c.leader_rebalance.enable = b;
        }
        if let Some(s) = a.leader_imbalance_check_interval_seconds {
            // Kafka's leader.imbalance.check.interval.seconds: a LONG, at least 1.
            let max = sluice_broker::replication::LEADER_IMBALANCE_CHECK_INTERVAL_MAX;
            if s < 1 || s > max.as_secs() {
                return Err(format!(
                    "--leader-imbalance-check-interval-seconds must be in 1..={}",
                    max.as_secs()
                ));
            }
            c.leader_rebalance.check_interval = Duration::from_secs(s);
        }
        if let Some(p) = a.leader_imbalance_per_broker_percentage {
            c.leader_rebalance.per_broker_percentage = p;
        }
        if let Some(b) = a.controlled_shutdown_enable {
            c.controlled_shutdown_enable = b;
        }
        if let Some(n) = a.num_partitions {
            c.num_partitions = n;
        }
        if let Some(rf) = a.default_replication_factor {
            // A topic of more replicas than the Raft codec carries could never be created,
            // so such a default is refused here rather than on every CreateTopics.
            let max = sluice_broker::config::REPLICATION_FACTOR_MAX;
            if !(1..=max).contains(&rf) {
                return Err(format!(
                    "--default-replication-factor must be in 1..={max}, not {rf}"
                ));
            }
            c.default_replication_factor = rf;
        }
        if let Some(b) = a.auto_create_topics {
            c.auto_create_topics = b;
        }
        if let Some(ms) = a.retention_check_interval_ms {
            c.retention_check_interval = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = a.producer_id_expiration_ms {
            c.producer_id_expiration_ms = ms.into();
        }
        if let Some(ms) = a.log_cleaner_interval_ms {
            c.log_cleaner_interval = Duration::from_millis(ms);
        }
        if let Some(b) = a.log_cleaner_dedupe_buffer_size {
            c.log_cleaner_dedupe_buffer_bytes = b;
        }
        if let Some(r) = a.log_cleaner_io_max_bytes_per_second {
            c.log_cleaner_io_max_bytes_per_second = Some(r);
        }
        if let Some(b) = a.allow_everyone_if_no_acl_found {
            c.allow_everyone_if_no_acl_found = b;
        }
        if let Some(z) = a.authorizer {
            c.authorizer = z == Authorizer::Acl;
        }
        if let Some(v) = &a.super_users {
            c.super_users =
                sluice_security::parse_super_users(v).map_err(|e| format!("--super-users: {e}"))?;
        }
        if let Some(ms) = a.connections_max_reauth_ms {
            // Kafka's connections.max.reauth.ms: 0 (the default) turns it off.
            c.connections_max_reauth = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(key) = &a.delegation_token_secret_key {
            // Kafka: an empty key leaves tokens off.
            c.delegation_token_secret_key = Some(key.clone()).filter(|k| !k.is_empty());
        }
        if let Some(ms) = a.delegation_token_max_lifetime_ms {
            c.delegation_token_max_lifetime_ms = ms;
        }
        if let Some(ms) = a.delegation_token_expiry_time_ms {
            c.delegation_token_expiry_time_ms = ms;
        }
        if let Some(bytes) = a.telemetry_max_bytes {
            c.telemetry_max_bytes = bytes;
        }
        if let Some(ms) = a.connections_max_idle_ms {
            c.connections_max_idle = Duration::from_millis(ms);
        }
        if let Some(n) = a.max_connections_per_ip {
            c.max_connections_per_ip = n;
        }
        if let Some(rate) = a.max_connection_creation_rate {
            // At least 0 in Kafka; 0 would stop every accept, so at least 1 here.
            c.max_connection_creation_rate = rate as u32;
        }
        if let Some(bytes) = a.read_ahead_bytes_max {
            c.read_ahead_bytes_max = bytes;
        }
        if let Some(bytes) = a.queued_max_request_bytes {
            c.queued_max_request_bytes = match bytes {
                -1 => usize::MAX,
                b if b >= 1 => usize::try_from(b).unwrap_or(usize::MAX),
                _ => return Err("--queued-max-request-bytes must be -1 or at least 1".into()),
            };
        }
        if let Some(ms) = a.request_overdraft_hold_ms {
            // An int of milliseconds, as Kafka's time configs are (and so a deadline that an
            // `Instant` can always hold).
            c.request_overdraft_hold = Duration::from_millis(ms as u64);
        }
        if let Some(ms) = a.stats_interval_ms {
            c.stats_interval = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if let Some(addr) = &a.admin_listen {
            c.admin_listen = match addr.as_str() {
                "off" => None,
                a => Some(
                    a.parse()
                        .map_err(|e| format!("--admin-listen {a}: not HOST:PORT ({e})"))?,
                ),
            };
            c.admin_listen_explicit = true;
        }
        c.aggregate_metrics = a.aggregate_metrics;
        if let Some(ms) = a.group_consumer_session_timeout_ms {
            c.groups.consumer_session_timeout_ms = ms;
        }
        if let Some(ms) = a.group_consumer_heartbeat_interval_ms {
            c.groups.consumer_heartbeat_interval_ms = ms;
        }
        if let Some(p) = a.group_consumer_migration_policy {
            use sluice_group::MigrationPolicy as M;
            c.groups.consumer_migration_policy = match p {
                MigrationPolicy::Disabled => M::Disabled,
                MigrationPolicy::Upgrade => M::Upgrade,
                MigrationPolicy::Downgrade => M::Downgrade,
                MigrationPolicy::Bidirectional => M::Bidirectional,
            };
        }
        if let Some(ms) = a.transaction_max_timeout_ms {
            c.transaction_max_timeout_ms = ms;
        }
        if let Some(ms) = a.transactional_id_expiration_ms {
            c.transactional_id_expiration_ms = ms;
        }
        // Kafka's checks: both at least 1, and the interval below the session timeout.
        let g = &c.groups;
        if g.consumer_heartbeat_interval_ms < 1
            || g.consumer_session_timeout_ms <= g.consumer_heartbeat_interval_ms
        {
            return Err(format!(
                "--group-consumer-heartbeat-interval-ms ({}) must be at least 1 and below \
                 --group-consumer-session-timeout-ms ({})",
                g.consumer_heartbeat_interval_ms, g.consumer_session_timeout_ms
            ));
        }
        sluice_rpc::check_cluster_flags(c.node_id, c.rpc_listen, &c.voters)?;
        security(&mut c, &a)?;
        c.tls = match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                ca: a.tls_ca,
            }),
            (None, None) if a.tls_ca.is_none() => None,
            _ => {
                return Err("--tls-cert and --tls-key go together (and --tls-ca with them)".into())
            }
        };
        if c.rpc_tls && (c.voters.is_empty() || c.tls.as_ref().is_none_or(|t| t.ca.is_none())) {
            return Err("--rpc-tls needs --voters and --tls-cert, --tls-key and --tls-ca".into());
        }
        for l in &c.listeners {
            if l.protocol.tls() && c.tls.is_none() {
                return Err(format!(
                    "the {} listener needs --tls-cert and --tls-key",
                    l.protocol
                ));
            }
        }
        let mut ports: Vec<SocketAddr> = c.listeners.iter().map(|l| l.addr).collect();
        ports.sort();
        ports.dedup();
        if ports.len() != c.listeners.len() {
            return Err("--listen: two listeners on one address".into());
        }
        c.advertised_host = a
            .advertised_host
            .unwrap_or_else(|| c.listen().ip().to_string());
        Ok(c)
    }
}

/// The SASL mechanisms and OAUTHBEARER's key file and checks.
fn security(c: &mut BrokerConfig, a: &StartArgs) -> Result<(), String> {
    let mechanisms = match &a.sasl_enabled_mechanisms {
        None => None,
        Some(v) => {
            let list: Vec<String> = v
                .split(',')
                .map(|m| m.trim().to_ascii_uppercase())
                .filter(|m| !m.is_empty())
                .collect();
            if let Some(m) = list
                .iter()
                .find(|m| !sluice_broker::config::SASL_MECHANISMS.contains(&m.as_str()))
            {
                return Err(format!("--sasl-enabled-mechanisms: unknown mechanism {m}"));
            }
            if list.is_empty() {
                return Err("--sasl-enabled-mechanisms: no mechanism".into());
            }
            Some(list)
        }
    };
    let jwks = match &a.sasl_oauthbearer_jwks_endpoint_url {
        None => None,
        Some(v) => {
            use sluice_broker::config::JwksSource;
            let ms = std::time::Duration::from_millis;
            if let Some(path) = v
                .strip_prefix("file://")
                .or_else(|| v.strip_prefix("file:"))
            {
                Some(JwksSource::File(PathBuf::from(path)))
            } else if v.starts_with("https://") {
                if a.sasl_oauthbearer_jwks_endpoint_retry_backoff_max_ms
                    < a.sasl_oauthbearer_jwks_endpoint_retry_backoff_ms
                {
                    return Err("--sasl-oauthbearer-jwks-endpoint-retry-backoff-max-ms is \
                                below --sasl-oauthbearer-jwks-endpoint-retry-backoff-ms"
                        .into());
                }
                Some(JwksSource::Https {
                    url: v.clone(),
                    ca: a.sasl_oauthbearer_jwks_ca.clone(),
                    refresh: ms(a.sasl_oauthbearer_jwks_endpoint_refresh_ms),
                    retry_backoff: ms(a.sasl_oauthbearer_jwks_endpoint_retry_backoff_ms),
                    retry_backoff_max: ms(a.sasl_oauthbearer_jwks_endpoint_retry_backoff_max_ms),
                })
            } else {
                // Kafka takes file: and https: only (an IdP's keys over plain http could
                // be forged on the way).
                return Err(format!(
                    "--sasl-oauthbearer-jwks-endpoint-url: {v}: a file: or https: URL \
                     (file:///path/to/jwks.json, https://idp.example/jwks)"
                ));
            }
        }
    };
    if a.sasl_oauthbearer_jwks_ca.is_some()
        && !matches!(jwks, Some(sluice_broker::config::JwksSource::Https { .. }))
    {
        return Err("--sasl-oauthbearer-jwks-ca is for an https: \
                    --sasl-oauthbearer-jwks-endpoint-url"
            .into());
    }
    let mut checks = sluice_security::oauth::OauthConfig::default();
    let mut any_check = false;
    if let Some(v) = &a.sasl_oauthbearer_expected_audience {
        any_check = true;
        checks.expected_audience = v
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect();
    }
    if let Some(v) = &a.sasl_oauthbearer_expected_issuer {
        any_check = true;
        checks.expected_issuer = Some(v.clone());
    }
    if let Some(v) = &a.sasl_oauthbearer_sub_claim_name {
        any_check = true;
        checks.sub_claim = v.clone();
    }
    if let Some(s) = a.sasl_oauthbearer_clock_skew_seconds {
        any_check = true;
        checks.clock_skew_s = s;
    }
    c.oauth = jwks.map(|jwks| sluice_broker::config::OauthSettings { jwks, checks });
    if any_check && c.oauth.is_none() {
        return Err(
            "the --sasl-oauthbearer-* checks need --sasl-oauthbearer-jwks-endpoint-url".into(),
        );
    }
    match mechanisms {
        Some(list) => {
            if list.iter().any(|m| m == "OAUTHBEARER") && c.oauth.is_none() {
                return Err("OAUTHBEARER needs --sasl-oauthbearer-jwks-endpoint-url".into());
            }
            c.sasl_mechanisms = list;
        }
        None if c.oauth.is_some() => c.sasl_mechanisms.push("OAUTHBEARER".into()),
        None => {}
    }
    Ok(())
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("--listen {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen {hostport}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sluice start ARGS` as the binary parses them.
    fn parse_start(args: &[String]) -> Result<BrokerConfig, String> {
        #[derive(clap::Parser)]
        struct Start {
            #[command(flatten)]
            args: StartArgs,
        }
        use clap::Parser;
        let start =
            Start::try_parse_from(std::iter::once("start").chain(args.iter().map(String::as_str)))
                .map_err(|e| e.to_string())?;
        start.args.into_config()
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn listener_and_tls_flags() {
        use sluice_broker::config::SecurityProtocol;
        let c = parse_start(&args(
            "--listen 127.0.0.1:9092,SSL://127.0.0.1:9093 --tls-cert c.pem --tls-key k.pem \
             --tls-ca ca.pem --advertised-host broker1",
        ))
        .unwrap();
        let l: Vec<_> = c.listeners.iter().map(|l| (l.protocol, l.addr)).collect();
        assert_eq!(
            l,
            [
                (
                    SecurityProtocol::Plaintext,
                    "127.0.0.1:9092".parse().unwrap()
                ),
                (SecurityProtocol::Ssl, "127.0.0.1:9093".parse().unwrap())
            ]
        );
        let tls = c.tls.clone().unwrap();
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.listen().port(), 9092);
        let ssl = c
            .listeners
            .iter()
            .find(|l| l.protocol == SecurityProtocol::Ssl);
        assert_eq!(ssl.map(|l| l.addr.port()), Some(9093));
        assert_eq!(c.listener_endpoints()[1].host, "broker1");
        for (flags, why) in [
            ("--listen ssl://127.0.0.1:1", "needs --tls-cert"),
            ("--tls-cert c.pem", "go together"),
            ("--tls-ca ca.pem", "go together"),
            ("--listen sasl_ssl://127.0.0.1:1", "needs --tls-cert"),
            (
                "--listen 127.0.0.1:1,ssl://127.0.0.1:1 --tls-cert c --tls-key k",
                "two listeners on one address",
            ),
            (
                "--listen 127.0.0.1:1,plaintext://127.0.0.1:2",
                "two PLAINTEXT",
            ),
            ("--listen tcp://127.0.0.1:1", "unknown protocol"),
        ] {
            let e = parse_start(&args(flags)).unwrap_err();
            assert!(e.contains(why), "{flags}: {e}");
        }
    }

    #[test]
    fn sasl_and_authorizer_flags() {
        let c = parse_start(&args(
            "--sasl-oauthbearer-jwks-endpoint-url file:///etc/jwks.json \
             --sasl-oauthbearer-expected-audience a,b --authorizer acl \
             --super-users User:admin;User:ops --connections-max-reauth-ms 60000",
        ))
        .unwrap();
        assert_eq!(
            c.sasl_mechanisms,
            ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
        );
        let oauth = c.oauth.clone().unwrap();
        assert_eq!(
            oauth.jwks,
            sluice_broker::config::JwksSource::File(PathBuf::from("/etc/jwks.json"))
        );
        assert_eq!(oauth.checks.expected_audience, ["a", "b"]);
        let https = parse_start(&args(
            "--sasl-oauthbearer-jwks-endpoint-url https://idp/jwks \
             --sasl-oauthbearer-jwks-ca /ca.pem --sasl-oauthbearer-jwks-endpoint-refresh-ms 5000",
        ))
        .unwrap();
        let ms = std::time::Duration::from_millis;
        assert_eq!(
            https.oauth.unwrap().jwks,
            sluice_broker::config::JwksSource::Https {
                url: "https://idp/jwks".into(),
                ca: Some(PathBuf::from("/ca.pem")),
                refresh: ms(5000),
                retry_backoff: ms(100),
                retry_backoff_max: ms(10_000),
            },
            "Kafka's retry backoff defaults"
        );
        assert!(c.authorizer);
        assert_eq!(c.super_users, ["User:admin", "User:ops"]);
        assert_eq!(
            c.connections_max_reauth,
            Some(std::time::Duration::from_secs(60))
        );
        let c = parse_start(&args("--sasl-enabled-mechanisms scram-sha-512")).unwrap();
        assert_eq!(c.sasl_mechanisms, ["SCRAM-SHA-512"]);
        for (flags, why) in [
            (
                "--sasl-oauthbearer-jwks-endpoint-url http://idp/jwks",
                "a file: or https: URL",
            ),
            (
                "--sasl-oauthbearer-jwks-endpoint-url file:///j --sasl-oauthbearer-jwks-ca /ca",
                "is for an https:",
            ),
            (
                "--sasl-enabled-mechanisms OAUTHBEARER",
                "needs --sasl-oauthbearer",
            ),
            ("--sasl-enabled-mechanisms GSSAPI", "unknown mechanism"),
            (
                "--sasl-oauthbearer-expected-issuer x",
                "need --sasl-oauthbearer",
            ),
            ("--authorizer simple", "possible values: acl, none"),
            ("--super-users admin", "principal"),
        ] {
            let e = parse_start(&args(flags)).unwrap_err();
            assert!(e.contains(why), "{flags}: {e}");
        }
    }

    #[test]
    fn cluster_flags() {
        let c = parse_start(&args(
            "--node-id 1 --listen 127.0.0.1:9092 --rpc-listen 127.0.0.1:33145 \
             --voters 1@127.0.0.1:33145,2@127.0.0.1:33146,3@127.0.0.1:33147",
        ))
        .unwrap();
        assert_eq!(c.rpc_listen, Some("127.0.0.1:33145".parse().unwrap()));
        let ids: Vec<u64> = c.voters.iter().map(|v| v.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(
            c.voters[2].addr,
            "127.0.0.1:33147".parse::<SocketAddr>().unwrap()
        );
        // Without --voters nothing changes.
        let c = parse_start(&args("--node-id 0")).unwrap();
        assert!(c.voters.is_empty() && c.rpc_listen.is_none());
        for (bad, why) in [
            (
                "--voters 1@127.0.0.1:1 --node-id 1",
                "--voters needs --rpc-listen",
            ),
            ("--rpc-listen 127.0.0.1:1", "--rpc-listen needs --voters"),
            (
                "--rpc-listen 127.0.0.1:1 --voters 1@127.0.0.1:1",
                "--node-id 0",
            ),
            (
                "--rpc-listen nowhere --voters 1@127.0.0.1:1",
                "--rpc-listen",
            ),
            (
                "--node-id 1 --rpc-listen 127.0.0.1:1 --voters 1@127.0.0.1:1,1@127.0.0.1:2",
                "twice",
            ),
            (
                "--node-id 1 --rpc-listen 127.0.0.1:1 --voters 0@127.0.0.1:1",
                "out of range",
            ),
            ("--voters", "a value is required for '--voters"),
        ] {
            let e = parse_start(&args(bad)).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn group_consumer_flags() {
        let c = parse_start(&args("")).unwrap();
        assert_eq!(c.groups, sluice_group::GroupConfig::default());
        let c = parse_start(&args(
            "--group-consumer-session-timeout-ms 10000 --group-consumer-heartbeat-interval-ms 1000 \
             --group-consumer-migration-policy UPGRADE",
        ))
        .unwrap();
        assert_eq!(c.groups.consumer_session_timeout_ms, 10_000);
        assert_eq!(c.groups.consumer_heartbeat_interval_ms, 1_000);
        assert_eq!(
            c.groups.consumer_migration_policy,
            sluice_group::MigrationPolicy::Upgrade
        );
        for bad in [
            "--group-consumer-migration-policy sideways",
            "--group-consumer-heartbeat-interval-ms 45000",
            "--group-consumer-heartbeat-interval-ms 0",
            "--group-consumer-session-timeout-ms x",
        ] {
            parse_start(&args(bad)).expect_err(bad);
        }
    }

    #[test]
    fn transaction_flags() {
        let c = parse_start(&[]).unwrap();
        assert_eq!(c.transaction_max_timeout_ms, 900_000);
        assert_eq!(c.transactional_id_expiration_ms, 604_800_000);
        let c = parse_start(&args(
            "--transaction-max-timeout-ms 60000 --transactional-id-expiration-ms 3600000",
        ))
        .unwrap();
        assert_eq!(c.transaction_max_timeout_ms, 60_000);
        assert_eq!(c.transactional_id_expiration_ms, 3_600_000);
        for bad in [
            "--transaction-max-timeout-ms 0",
            "--transaction-max-timeout-ms soon",
            "--transactional-id-expiration-ms -5",
        ] {
            parse_start(&args(bad)).expect_err(bad);
        }
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let c = parse_start(&args(
            "--num-partitions 3 --no-pin --num-partitions 5 --no-pin",
        ));
        assert_eq!(c.unwrap().num_partitions, 5);
    }

    #[test]
    fn controlled_shutdown_flag() {
        // Kafka's default (true) without the flag.
        assert!(parse_start(&args("")).unwrap().controlled_shutdown_enable);
        let c = parse_start(&args("--controlled-shutdown-enable false")).unwrap();
        assert!(!c.controlled_shutdown_enable);
        let e = parse_start(&args("--controlled-shutdown-enable no")).expect_err("not a bool");
        assert!(e.contains("--controlled-shutdown-enable"), "{e}");
    }

    #[test]
    fn default_replication_factor_flag() {
        // Kafka's default (1) without the flag.
        let c = parse_start(&args("")).unwrap();
        assert_eq!(c.default_replication_factor, 1);
        let c = parse_start(&args("--default-replication-factor 3")).unwrap();
        assert_eq!(c.default_replication_factor, 3);
        for bad in ["0", "-1", "x", "40000"] {
            let e =
                parse_start(&args(&format!("--default-replication-factor {bad}"))).expect_err(bad);
            assert!(e.contains("--default-replication-factor"), "{bad}: {e}");
        }
        let max = sluice_broker::config::REPLICATION_FACTOR_MAX;
        let e = parse_start(&args(&format!("--default-replication-factor {}", max + 1)))
            .expect_err("above the max");
        assert!(e.contains("1..="), "{e}");
    }
}
