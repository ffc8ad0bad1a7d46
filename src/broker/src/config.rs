//! Broker settings: the command-line contract (`--data-dir`, `--listen`, `--shards`,
//! `--node-id`, and for a cluster `--rpc-listen`, `--voters`) plus Kafka-named defaults and
//! the broker's named limits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Largest replication factor a topic may have (`--default-replication-factor` included).
pub use sluice_meta::limits::REPLICATION_FACTOR_MAX;
pub use sluice_security::{SecurityProtocol, TlsFiles};

// Every listener a node may have fits in its registration.
const _: () = assert!(sluice_security::LISTENERS_MAX <= sluice_meta::LISTENERS_MAX);

/// One client listener: where it listens and what it speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
}

/// Largest request accepted (Kafka's `socket.request.max.bytes`); larger → connection closed
/// before anything is allocated for it.
pub const REQUEST_SIZE_MAX: usize = 104_857_600;
/// Requests one connection may have in flight before the broker stops reading from it
/// (Kafka's `queued.max.requests` is per broker; per connection bounds memory per client).
pub const INFLIGHT_REQUESTS_MAX: usize = 32;
/// Connections one shard serves at once; further connections are closed at accept.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 10_000;
/// Longest a fetch may wait (clamps `max_wait_ms`).
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(30);
/// Bytes one fetch response may carry in total (clamps `max_bytes`).
pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// `--admin-listen`'s default (Redpanda's admin API port).
pub const ADMIN_LISTEN_DEFAULT: &str = "127.0.0.1:9644";

/// How long a SIGTERM/SIGINT shutdown may take in all: stop accepting and reading, answer
/// the requests in flight, then flush, fsync and close every log. A shutdown that has not
/// closed every log by then ends the process with an error (recovery then runs at the next
/// start, as after a crash: what acks=all acknowledged is on disk either way; acks=1 records
/// still in the write buffer are lost, as in a crash).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The part of [`SHUTDOWN_TIMEOUT`] that connections get to answer their requests in flight
/// (a parked fetch or a JoinGroup waiting for a rebalance may take longer: its connection is
/// then closed unanswered, which clients treat as a retriable network error), and that the
/// controlled shutdown gets, at the same time, to hand this node's partition leaderships to
/// other replicas (those still here after it stop with the node, as without it).
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(5);
const _: () = assert!(SHUTDOWN_DRAIN_MAX.as_millis() < SHUTDOWN_TIMEOUT.as_millis());
// The node-to-node transport must carry the largest batch the log accepts as one Raft entry,
// or a partition holding one could never replicate.
const _: () = assert!(sluice_rpc::RAFT_ENTRY_BYTES_MAX >= sluice_storage::config::BATCH_BYTES_MAX);

/// The SASL mechanisms offered without `--sasl-enabled-mechanisms`.
pub const DEFAULT_SASL_MECHANISMS: [&str; 3] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];
/// Every SASL mechanism sluice has.
pub const SASL_MECHANISMS: [&str; 4] = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

/// Where OAUTHBEARER's keys are and what its tokens must satisfy.
#[derive(Debug, Clone)]
pub struct OauthSettings {
    /// Where the JWKS is (`sasl.oauthbearer.jwks.endpoint.url`).
    pub jwks: JwksSource,
    pub checks: sluice_security::oauth::OauthConfig,
}

/// Where OAUTHBEARER's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A `file:` URL: the file, reloaded when it changes.
    File(PathBuf),
    /// An `https:` URL, fetched at start and then every `refresh` (Kafka's
    /// `sasl.oauthbearer.jwks.endpoint.refresh.ms`), and early when a token names a key the
    /// set lacks; a failed fetch is retried after `retry_backoff`, doubling up to
    /// `retry_backoff_max` (Kafka's `...jwks.endpoint.retry.backoff[.max].ms`). `ca`: the
    /// PEM bundle the endpoint's certificate must chain to (default: the Mozilla roots of
    /// `webpki-roots`, as a JVM trusts its bundled roots).
    Https {
        url: String,
        ca: Option<PathBuf>,
        refresh: std::time::Duration,
        retry_backoff: std::time::Duration,
        retry_backoff_max: std::time::Duration,
    },
}

/// Everything `sluice start` is told, with Kafka's defaults.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The first `--data-dir`: the node's metadata (cluster state, Raft stores, credentials)
    /// and partitions.
    pub data_dir: PathBuf,
    /// The other `--data-dir` directories: partitions only (Kafka's `log.dirs`, JBOD; see
    /// `log_dirs`).
    pub more_data_dirs: Vec<PathBuf>,
    /// `--listen`: the client listeners, at most one per security protocol (its name), the
    /// first one registered as the node's Kafka endpoint. Never empty.
    pub listeners: Vec<Listener>,
    /// Host name advertised in Metadata for every listener (defaults to the first
    /// listener's address).
    pub advertised_host: String,
    /// `--tls-cert`, `--tls-key` (and `--tls-ca`) for `ssl` and `sasl_ssl` listeners.
    pub tls: Option<TlsFiles>,
    /// `--sasl-enabled-mechanisms` (Kafka's `sasl.enabled.mechanisms`): what SASL
    /// listeners offer, in order. By default PLAIN and both SCRAMs, and OAUTHBEARER when a
    /// JWKS is configured.
    pub sasl_mechanisms: Vec<String>,
    /// OAUTHBEARER's token validation (`--sasl-oauthbearer-jwks-endpoint-url` and the
    /// `--sasl-oauthbearer-*` checks); `None`: OAUTHBEARER is not offered.
    pub oauth: Option<OauthSettings>,
    /// `--authorizer acl`: requests are authorized against the cluster's ACLs
    /// (`crate::authz`); off, every client may do everything (Kafka without an authorizer).
    pub authorizer: bool,
    /// `--super-users` (Kafka's `super.users`): principals the authorizer never denies.
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found` (`--allow-everyone-if-no-acl-found`; false, as in
    /// Kafka): whether a resource no ACL names is open to everyone.
    pub allow_everyone_if_no_acl_found: bool,
    pub shards: usize,
    pub node_id: i32,
    /// `auto.create.topics.enable`
    pub auto_create_topics: bool,
    /// `num.partitions`
    pub num_partitions: i32,
    /// `default.replication.factor` (`--default-replication-factor`, 1 by default as in
    /// Kafka): the replication factor of auto-created topics and of CreateTopics that ask
    /// for -1. In 1..=[`REPLICATION_FACTOR_MAX`]; a topic that asks
    /// for more replicas than there are registered brokers gets INVALID_REPLICATION_FACTOR.
    pub default_replication_factor: i16,
    /// `log.retention.check.interval.ms`
    pub retention_check_interval: Duration,
    /// `log.cleaner.backoff.ms` (`--log-cleaner-interval-ms`): how often each shard's log
    /// cleaner looks for compacted logs to clean.
    pub log_cleaner_interval: Duration,
    /// `log.cleaner.dedupe.buffer.size`: memory for the cleaners' key maps, split evenly
    /// between the shards.
    pub log_cleaner_dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.max.bytes.per.second`: the cleaners' reads and writes, split evenly
    /// between the shards; `None` is unlimited (Kafka's default).
    pub log_cleaner_io_max_bytes_per_second: Option<f64>,
    /// Pin shards to CPUs.
    pub pin: bool,
    /// Memory for each shard's batch cache.
    pub batch_cache_bytes: usize,
    /// Per shard: bytes the logs' read-ahead windows may hold, read or in flight (0: none).
    pub read_ahead_bytes_max: usize,
    /// `offsets.topic.num.partitions`
    pub offsets_topic_partitions: i32,
    /// Log per-stage produce/fetch timers this often (`--stats-interval-ms`; off when None).
    pub stats_interval: Option<Duration>,
    /// `--admin-listen`: the admin API (`/metrics`, `/v1/status/ready|live`). `None`: off.
    pub admin_listen: Option<SocketAddr>,
    /// Whether `admin_listen` was asked for: only then is an address in use a failed start
    /// (the default's may be another broker's on a shared host: a warning then).
    pub admin_listen_explicit: bool,
    /// `--aggregate-metrics` (Redpanda's `aggregate_metrics`): partition series summed per
    /// topic, for clusters with too many partitions to scrape each.
    pub aggregate_metrics: bool,
    /// `connections.max.idle.ms`: idle client connections are closed after this.
    pub connections_max_idle: Duration,
    /// `connections.max.reauth.ms` (KIP-368; `None`: 0, off, Kafka's default): a SASL
    /// session lasts this long; a client that can re-authenticate (SaslAuthenticate v1+)
    /// is told so, and its connection is closed if it sends anything but a
    /// re-authentication after that.
    pub connections_max_reauth: Option<Duration>,
    /// `max.connections.per.ip`: connections one client IP may hold over all shards.
    pub max_connections_per_ip: u32,
    /// `max.connection.creation.rate` (KIP-612): new client connections per second the node
    /// accepts; `Int.MaxValue` (Kafka's default) sets no limit.
    pub max_connection_creation_rate: u32,
    /// `queued.max.request.bytes`, per shard: bytes of requests in flight before the shard
    /// stops reading its sockets (`usize::MAX`: unbounded). See [`crate::request_memory`].
    pub queued_max_request_bytes: usize,
    /// How long a connection may hold the request-memory overdraft before the request it is
    /// finishing must be complete (else it is closed); see [`crate::request_memory`].
    pub request_overdraft_hold: Duration,
    /// `producer.id.expiration.ms`: an idempotent producer's state in a partition is
    /// forgotten this long after its last batch's timestamp (checked every
    /// `log.retention.check.interval.ms`, and when a partition is opened).
    pub producer_id_expiration_ms: i64,
    /// `--rpc-listen`: the listener for node-to-node traffic (Raft, replication, forwarding);
    /// `None` without `--voters`.
    pub rpc_listen: Option<SocketAddr>,
    /// `--rpc-tls`: TLS on every node-to-node connection, with `--tls-cert`/`--tls-key` as
    /// both server and client certificate and `--tls-ca` checking the peer's.
    pub rpc_tls: bool,
    /// `--voters`: the controller quorum, each voter's id and rpc address (Kafka's
    /// `controller.quorum.voters`). Empty: a cluster of one.
    pub voters: Vec<sluice_rpc::Voter>,
    /// `replica.lag.time.max.ms`: a follower not caught up with its leader's log end for
    /// this long leaves the partition's in-sync replicas.
    pub replica_lag_time_max: Duration,
    /// Preferred-leader rebalance (see `crate::replication`).
    pub leader_rebalance: crate::replication::LeaderRebalance,
    /// `controlled.shutdown.enable` (`--controlled-shutdown-enable`, true by default as in
    /// Kafka): at SIGTERM/SIGINT the partitions this node leads are handed to other
    /// in-sync replicas before it stops (within [`SHUTDOWN_DRAIN_MAX`]).
    pub controlled_shutdown_enable: bool,
    /// The group coordinator's settings (`group.consumer.session.timeout.ms`,
    /// `group.consumer.heartbeat.interval.ms`, `group.consumer.migration.policy`, ...).
    pub groups: sluice_group::GroupConfig,
    /// `transaction.max.timeout.ms` (`--transaction-max-timeout-ms`): the longest
    /// `transaction.timeout.ms` a producer may ask for (InitProducerId answers
    /// INVALID_TRANSACTION_TIMEOUT above it).
    pub transaction_max_timeout_ms: i32,
    /// `transactional.id.expiration.ms` (`--transactional-id-expiration-ms`): a
    /// transactional id with no transaction open and no use for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `telemetry.max.bytes` (`--telemetry-max-bytes`): the largest (compressed) metrics
    /// payload a client may push (KIP-714); larger pushes are TELEMETRY_TOO_LARGE.
    pub telemetry_max_bytes: i32,
    /// `delegation.token.secret.key` (`--delegation-token-secret-key`): signs delegation
    /// tokens (their HMAC); without it the token APIs answer DELEGATION_TOKEN_AUTH_DISABLED.
    /// The same on every node.
    pub delegation_token_secret_key: Option<String>,
    /// `delegation.token.max.lifetime.ms` and `delegation.token.expiry.time.ms`.
    pub delegation_token_max_lifetime_ms: i64,
    pub delegation_token_expiry_time_ms: i64,
}

impl BrokerConfig {
    /// The first listener's address (the node's registered Kafka endpoint).
    pub fn listen(&self) -> SocketAddr {
        self.listeners[0].addr
    }

    /// The registered form of the listeners (names, advertised host, ports).
    pub fn listener_endpoints(&self) -> Vec<sluice_meta::ListenerEndpoint> {
        self.listeners
            .iter()
            .map(|l| sluice_meta::ListenerEndpoint {
                name: l.protocol.name().to_string(),
                host: self.advertised_host.clone(),
                port: l.addr.port(),
                security_protocol: l.protocol.id(),
            })
            .collect()
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let listen: SocketAddr = "127.0.0.1:9092".parse().expect("valid address");
        BrokerConfig {
            data_dir: PathBuf::from("./sluice-data"),
            more_data_dirs: Vec::new(),
            listeners: vec![Listener {
                protocol: SecurityProtocol::Plaintext,
                addr: listen,
            }],
            advertised_host: listen.ip().to_string(),
            tls: None,
            sasl_mechanisms: DEFAULT_SASL_MECHANISMS
                .iter()
                .map(|m| m.to_string())
                .collect(),
            oauth: None,
            authorizer: false,
            super_users: Vec::new(),
            allow_everyone_if_no_acl_found: false,
            shards: sluice_shard::allowed_cpus().len().max(1),
            node_id: 0,
            auto_create_topics: true,
            num_partitions: 1,
            default_replication_factor: sluice_meta::controller::DEFAULT_REPLICATION_FACTOR,
            retention_check_interval: Duration::from_millis(300_000),
            log_cleaner_interval: Duration::from_millis(15_000),
            log_cleaner_dedupe_buffer_bytes: 128 * 1024 * 1024,
            log_cleaner_io_max_bytes_per_second: None,
            pin: true,
            batch_cache_bytes: 128 * 1024 * 1024,
            read_ahead_bytes_max: 64 * 1024 * 1024,
            offsets_topic_partitions: crate::groups::OFFSETS_TOPIC_PARTITIONS_DEFAULT,
            stats_interval: None,
            admin_listen: Some(ADMIN_LISTEN_DEFAULT.parse().expect("valid address")),
            admin_listen_explicit: false,
            aggregate_metrics: false,
            connections_max_idle: crate::connections::CONNECTIONS_MAX_IDLE_DEFAULT,
            connections_max_reauth: None,
            max_connections_per_ip: crate::connections::MAX_CONNECTIONS_PER_IP_DEFAULT,
            max_connection_creation_rate: crate::connections::MAX_CONNECTION_CREATION_RATE_DEFAULT,
            queued_max_request_bytes: crate::request_memory::QUEUED_MAX_REQUEST_BYTES_DEFAULT,
            request_overdraft_hold: crate::request_memory::REQUEST_OVERDRAFT_HOLD_DEFAULT,
            producer_id_expiration_ms: sluice_storage::producer::PRODUCER_ID_EXPIRATION_MS_DEFAULT,
            rpc_listen: None,
            rpc_tls: false,
            voters: Vec::new(),
            replica_lag_time_max: crate::replication::REPLICA_LAG_TIME_MAX_DEFAULT,
            leader_rebalance: crate::replication::LeaderRebalance::default(),
            controlled_shutdown_enable: true,
            groups: sluice_group::GroupConfig::default(),
            transaction_max_timeout_ms: sluice_txn::TRANSACTION_MAX_TIMEOUT_MS,
            transactional_id_expiration_ms: sluice_txn::TRANSACTIONAL_ID_EXPIRATION_MS,
            telemetry_max_bytes: sluice_telemetry::TELEMETRY_MAX_BYTES_DEFAULT,
            delegation_token_secret_key: None,
            delegation_token_max_lifetime_ms: sluice_meta::tokens::MAX_LIFETIME_MS_DEFAULT,
            delegation_token_expiry_time_ms: sluice_meta::tokens::EXPIRY_TIME_MS_DEFAULT,
        }
    }
}
