//! The `sluice` command: `sluice start` runs the broker; `sluice verify` checks a data
//! directory's segments offline; `sluice tune --check` inspects the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_broker::config::{Listener, TlsFiles};
use sluice_broker::BrokerConfig;

/// The broker allocates per request (decoded messages, response buffers, frames); glibc
/// malloc spent ~10 % of a shard's CPU in a produce+fetch profile. mimalloc's thread-local
/// free lists suit one thread per core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's option setter, from the library the `mimalloc` crate links in
    /// (libmimalloc-sys; declared here because the crate exposes it only behind a feature
    /// that pulls in another dependency).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay`'s place in `mi_option_e` of the bundled mimalloc 3
/// (libmimalloc-sys 0.1.49, `include/mimalloc.h`; re-check when the lockfile moves it).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
/// How long freed memory stays with the process before mimalloc returns it to the OS.
/// Its default (1 s) hands back the 1 MiB write buffers and received frames a busy shard
/// frees and allocates again at once, so each reuse faults its pages in and the kernel
/// zeroes them: ~3 % of the brokers' CPU at RF 3 peak, and ~15 % less CPU per GiB with
/// the delay (`perf/replication-bench.sh`, perf/results/2026-12-02-replication-session12.md).
/// Memory an idle broker no longer uses still goes back, 10 s later.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// `mi_option_allow_thp`'s place in `mi_option_e` (same header and caveat as above).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// Sets the allocator's options, unless the operator set them (`MIMALLOC_PURGE_DELAY`,
/// `MIMALLOC_ALLOW_THP`).
///
/// Transparent huge pages go off for the whole process. mimalloc asks for them on its
/// arenas (`madvise(MADV_HUGEPAGE)`, honoured under the common `enabled=madvise` setting),
/// and then every first touch of a 2 MiB region faults in a huge page: the kernel zeroes
/// all 2 MiB (`clear_page_erms` was 18–35 % of a shard's CPU at RF 3, 120k records/s), and
/// the shards' 10 ms timers woke up to seconds late (`shard.timer_lag`; no compaction
/// stalls were counted, so zeroing, and in a VM the host backing fresh guest memory, is
/// the cost). Without them produce p99 at that load fell from seconds to tens of
/// milliseconds, at 11–16 % of a single node's peak
/// (perf/results/2026-12-04-no-transparent-huge-pages.md). This is the same advice Redis,
/// MongoDB and most databases give for THP. mimalloc reads the option for each new arena,
/// and the first one predates `main`, so the process-wide switch (`PR_SET_THP_DISABLE`,
/// what mimalloc itself does when the option is off at its start) covers that one too.
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: a plain setter of a process-wide integer option; any value is valid.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above; and prctl(PR_SET_THP_DISABLE) only sets a flag of this
        // process's memory map (refused on kernels before 3.15, which then keep THP).
        unsafe {
            mi_option_set(MI_OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

const USAGE: &str = "usage:
  sluice start [--data-dir DIR] [--listen [PROTOCOL://]HOST:PORT,...] [--shards N] [--node-id N]
               [--tls-cert FILE --tls-key FILE [--tls-ca FILE]]
               [--sasl-enabled-mechanisms M,...] [--sasl-oauthbearer-jwks-endpoint-url file:///F]
               [--sasl-oauthbearer-expected-audience A,...]
               [--sasl-oauthbearer-expected-issuer I] [--sasl-oauthbearer-sub-claim-name N]
               [--sasl-oauthbearer-clock-skew-seconds S]
               [--authorizer acl|none] [--super-users User:A;User:B]
               [--allow-everyone-if-no-acl-found true|false]
               [--advertised-host HOST] [--num-partitions N] [--default-replication-factor N]
               [--auto-create-topics true|false]
               [--retention-check-interval-ms MS] [--no-pin] [--stats-interval-ms MS]
               [--connections-max-idle-ms MS] [--connections-max-reauth-ms MS]
               [--max-connections-per-ip N] [--max-connection-creation-rate N]
               [--queued-max-request-bytes BYTES] [--request-overdraft-hold-ms MS]
               [--producer-id-expiration-ms MS] [--replica-lag-time-max-ms MS]
               [--auto-leader-rebalance-enable true|false]
               [--leader-imbalance-check-interval-seconds S]
               [--leader-imbalance-per-broker-percentage P]
               [--controlled-shutdown-enable true|false]
               [--group-consumer-session-timeout-ms MS]
               [--group-consumer-heartbeat-interval-ms MS]
               [--group-consumer-migration-policy disabled|upgrade|downgrade|bidirectional]
               [--transaction-max-timeout-ms MS] [--transactional-id-expiration-ms MS]
               [--rpc-listen HOST:PORT --voters ID@HOST:PORT,... [--rpc-tls]]
  sluice verify [--data-dir DIR]
  sluice users add [--data-dir DIR] --mechanism SCRAM-SHA-256|SCRAM-SHA-512 --name NAME
                   --password PW [--iterations N]
  sluice tune --check | --apply";

/// A flag's value as milliseconds of at least 1 (Kafka's lower bound for its timeouts).
fn positive_ms<T: std::str::FromStr + PartialOrd + From<u8>>(
    flag: &str,
    v: &str,
) -> Result<T, String> {
    v.parse()
        .ok()
        .filter(|ms: &T| *ms >= T::from(1))
        .ok_or_else(|| format!("{flag}: {v} is not a number of milliseconds of at least 1"))
}

fn parse_start(args: &[String]) -> Result<BrokerConfig, String> {
    let mut c = BrokerConfig::default();
    let mut advertised = None;
    let (mut tls_cert, mut tls_key, mut tls_ca) = (None, None, None);
    let mut mechanisms: Option<Vec<String>> = None;
    let mut jwks: Option<PathBuf> = None;
    let mut oauth = sluice_security::oauth::OauthConfig::default();
    let mut oauth_checks = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "--data-dir" => c.data_dir = PathBuf::from(value("--data-dir")?),
            "--listen" => {
                let v = value("--listen")?;
                c.listeners = sluice_security::parse_listeners(&v)
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
            "--tls-cert" => tls_cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value("--tls-key")?)),
            "--tls-ca" => tls_ca = Some(PathBuf::from(value("--tls-ca")?)),
            "--rpc-tls" => c.rpc_tls = true,
            "--sasl-enabled-mechanisms" => {
                let v = value("--sasl-enabled-mechanisms")?;
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
                mechanisms = Some(list);
            }
            "--sasl-oauthbearer-jwks-endpoint-url" => {
                let v = value("--sasl-oauthbearer-jwks-endpoint-url")?;
                // Kafka's setting is a URL; sluice reads keys from a file (no HTTP client).
                let path = v
                    .strip_prefix("file://")
                    .or_else(|| v.strip_prefix("file:"))
                    .ok_or_else(|| {
                        format!(
                            "--sasl-oauthbearer-jwks-endpoint-url: {v}: only file: URLs \
                             (file:///path/to/jwks.json) are supported"
                        )
                    })?;
                jwks = Some(PathBuf::from(path));
            }
            "--sasl-oauthbearer-expected-audience" => {
                oauth_checks = true;
                oauth.expected_audience = value("--sasl-oauthbearer-expected-audience")?
                    .split(',')
                    .map(|a| a.trim().to_string())
                    .filter(|a| !a.is_empty())
                    .collect();
            }
            "--sasl-oauthbearer-expected-issuer" => {
                oauth_checks = true;
                oauth.expected_issuer = Some(value("--sasl-oauthbearer-expected-issuer")?);
            }
            "--sasl-oauthbearer-sub-claim-name" => {
                oauth_checks = true;
                oauth.sub_claim = value("--sasl-oauthbearer-sub-claim-name")?;
            }
            "--sasl-oauthbearer-clock-skew-seconds" => {
                oauth_checks = true;
                oauth.clock_skew_s = value("--sasl-oauthbearer-clock-skew-seconds")?
                    .parse()
                    .ok()
                    .filter(|s: &i64| *s >= 0)
                    .ok_or("--sasl-oauthbearer-clock-skew-seconds: not a number of seconds")?;
            }
            "--authorizer" => {
                c.authorizer = match value("--authorizer")?.as_str() {
                    "acl" => true,
                    "none" => false,
                    v => return Err(format!("--authorizer: {v} is not acl or none")),
                }
            }
            "--super-users" => {
                c.super_users = sluice_security::parse_super_users(&value("--super-users")?)
                    .map_err(|e| format!("--super-users: {e}"))?
            }
            "--allow-everyone-if-no-acl-found" => {
                c.allow_everyone_if_no_acl_found = value("--allow-everyone-if-no-acl-found")?
                    .parse()
                    .map_err(|e| format!("--allow-everyone-if-no-acl-found: {e}"))?
            }
            "--shards" => {
                c.shards = value("--shards")?
                    .parse()
                    .map_err(|e| format!("--shards: {e}"))?;
                if c.shards == 0 {
                    return Err("--shards must be at least 1".into());
                }
            }
            "--node-id" => {
                c.node_id = value("--node-id")?
                    .parse()
                    .map_err(|e| format!("--node-id: {e}"))?
            }
            "--advertised-host" => advertised = Some(value("--advertised-host")?),
            "--num-partitions" => {
                c.num_partitions = value("--num-partitions")?
                    .parse()
                    .map_err(|e| format!("--num-partitions: {e}"))?
            }
            "--default-replication-factor" => {
                // Kafka's default.replication.factor (a topic of more replicas than the
                // Raft codec carries could never be created, so such a default is refused
                // here rather than on every CreateTopics).
                let rf: i16 = value("--default-replication-factor")?
                    .parse()
                    .map_err(|e| format!("--default-replication-factor: {e}"))?;
                let max = sluice_broker::config::REPLICATION_FACTOR_MAX;
                if !(1..=max).contains(&rf) {
                    return Err(format!(
                        "--default-replication-factor must be in 1..={max}, not {rf}"
                    ));
                }
                c.default_replication_factor = rf;
            }
            "--auto-create-topics" => {
                c.auto_create_topics = value("--auto-create-topics")?
                    .parse()
                    .map_err(|e| format!("--auto-create-topics: {e}"))?
            }
            "--retention-check-interval-ms" => {
                let ms: u64 = value("--retention-check-interval-ms")?
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                c.retention_check_interval = std::time::Duration::from_millis(ms.max(1));
            }
            "--no-pin" => c.pin = false,
            "--stats-interval-ms" => {
                let ms: u64 = value("--stats-interval-ms")?
                    .parse()
                    .map_err(|e| format!("--stats-interval-ms: {e}"))?;
                c.stats_interval = (ms > 0).then(|| std::time::Duration::from_millis(ms));
            }
            "--connections-max-idle-ms" => {
                let ms: u64 = value("--connections-max-idle-ms")?
                    .parse()
                    .map_err(|e| format!("--connections-max-idle-ms: {e}"))?;
                if ms == 0 {
                    return Err("--connections-max-idle-ms must be at least 1".into());
                }
                c.connections_max_idle = std::time::Duration::from_millis(ms);
            }
            "--connections-max-reauth-ms" => {
                // Kafka's connections.max.reauth.ms: 0 (the default) turns it off.
                let ms: u64 = value("--connections-max-reauth-ms")?
                    .parse()
                    .map_err(|e| format!("--connections-max-reauth-ms: {e}"))?;
                c.connections_max_reauth = (ms > 0).then(|| std::time::Duration::from_millis(ms));
            }
            "--replica-lag-time-max-ms" => {
                // Kafka's replica.lag.time.max.ms: a LONG, at least 0.
                let ms: u64 = value("--replica-lag-time-max-ms")?
                    .parse()
                    .map_err(|e| format!("--replica-lag-time-max-ms: {e}"))?;
                c.replica_lag_time_max = std::time::Duration::from_millis(ms);
            }
            "--auto-leader-rebalance-enable" => {
                c.leader_rebalance.enable = value("--auto-leader-rebalance-enable")?
                    .parse()
                    .map_err(|e| format!("--auto-leader-rebalance-enable: {e}"))?
            }
            "--controlled-shutdown-enable" => {
                c.controlled_shutdown_enable = value("--controlled-shutdown-enable")?
                    .parse()
                    .map_err(|e| format!("--controlled-shutdown-enable: {e}"))?
            }
            "--leader-imbalance-check-interval-seconds" => {
                // Kafka's leader.imbalance.check.interval.seconds: a LONG, at least 1.
                let s: u64 = value("--leader-imbalance-check-interval-seconds")?
                    .parse()
                    .map_err(|e| format!("--leader-imbalance-check-interval-seconds: {e}"))?;
                let max = sluice_broker::replication::LEADER_IMBALANCE_CHECK_INTERVAL_MAX;
                if s < 1 || s > max.as_secs() {
                    return Err(format!(
                        "--leader-imbalance-check-interval-seconds must be in 1..={}",
                        max.as_secs()
                    ));
                }
                c.leader_rebalance.check_interval = std::time::Duration::from_secs(s);
            }
            "--leader-imbalance-per-broker-percentage" => {
                // Kafka's leader.imbalance.per.broker.percentage: an INT, 0..=100 here.
                let p: u32 = value("--leader-imbalance-per-broker-percentage")?
                    .parse()
                    .map_err(|e| format!("--leader-imbalance-per-broker-percentage: {e}"))?;
                if p > 100 {
                    return Err(
                        "--leader-imbalance-per-broker-percentage must be at most 100".into(),
                    );
                }
                c.leader_rebalance.per_broker_percentage = p;
            }
            "--producer-id-expiration-ms" => {
                // Kafka's producer.id.expiration.ms: an INT, at least 1.
                let ms: i32 = value("--producer-id-expiration-ms")?
                    .parse()
                    .map_err(|e| format!("--producer-id-expiration-ms: {e}"))?;
                if ms < 1 {
                    return Err("--producer-id-expiration-ms must be at least 1".into());
                }
                c.producer_id_expiration_ms = ms.into();
            }
            "--max-connections-per-ip" => {
                c.max_connections_per_ip = value("--max-connections-per-ip")?
                    .parse()
                    .map_err(|e| format!("--max-connections-per-ip: {e}"))?;
            }
            "--max-connection-creation-rate" => {
                // Kafka's max.connection.creation.rate: an INT, at least 0 there; 0 would
                // stop every accept, so at least 1 here. Int.MaxValue (default): no limit.
                let rate: i32 = value("--max-connection-creation-rate")?
                    .parse()
                    .map_err(|e| format!("--max-connection-creation-rate: {e}"))?;
                if rate < 1 {
                    return Err("--max-connection-creation-rate must be at least 1".into());
                }
                c.max_connection_creation_rate = rate as u32;
            }
            "--queued-max-request-bytes" => {
                // Kafka's name; -1 (Kafka's default) means unbounded. Per shard here.
                let bytes: i64 = value("--queued-max-request-bytes")?
                    .parse()
                    .map_err(|e| format!("--queued-max-request-bytes: {e}"))?;
                c.queued_max_request_bytes = match bytes {
                    -1 => usize::MAX,
                    b if b >= 1 => usize::try_from(b).unwrap_or(usize::MAX),
                    _ => return Err("--queued-max-request-bytes must be -1 or at least 1".into()),
                };
            }
            "--request-overdraft-hold-ms" => {
                // An int of milliseconds, as Kafka's time configs are (and so a deadline
                // that an `Instant` can always hold).
                let ms: i32 = value("--request-overdraft-hold-ms")?
                    .parse()
                    .map_err(|e| format!("--request-overdraft-hold-ms: {e}"))?;
                if ms < 1 {
                    return Err("--request-overdraft-hold-ms must be at least 1".into());
                }
                c.request_overdraft_hold = std::time::Duration::from_millis(ms as u64);
            }
            "--rpc-listen" => {
                let v = value("--rpc-listen")?;
                c.rpc_listen = Some(
                    sluice_rpc::cluster::resolve(&v).map_err(|e| format!("--rpc-listen {e}"))?,
                );
            }
            "--voters" => c.voters = sluice_rpc::parse_voters(&value("--voters")?)?,
            "--group-consumer-session-timeout-ms" => {
                c.groups.consumer_session_timeout_ms =
                    value("--group-consumer-session-timeout-ms")?
                        .parse()
                        .map_err(|e| format!("--group-consumer-session-timeout-ms: {e}"))?;
            }
            "--group-consumer-heartbeat-interval-ms" => {
                c.groups.consumer_heartbeat_interval_ms =
                    value("--group-consumer-heartbeat-interval-ms")?
                        .parse()
                        .map_err(|e| format!("--group-consumer-heartbeat-interval-ms: {e}"))?;
            }
            "--group-consumer-migration-policy" => {
                let v = value("--group-consumer-migration-policy")?;
                c.groups.consumer_migration_policy = sluice_group::MigrationPolicy::from_name(&v)
                    .ok_or_else(|| {
                        format!("--group-consumer-migration-policy: {v} is not one of disabled, upgrade, downgrade, bidirectional")
                    })?;
            }
            "--transaction-max-timeout-ms" => {
                c.transaction_max_timeout_ms = positive_ms(
                    "--transaction-max-timeout-ms",
                    &value("--transaction-max-timeout-ms")?,
                )?;
            }
            "--transactional-id-expiration-ms" => {
                c.transactional_id_expiration_ms = positive_ms(
                    "--transactional-id-expiration-ms",
                    &value("--transactional-id-expiration-ms")?,
                )?;
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    // Kafka's checks: both at least 1, and the interval below the session timeout.
    let g = &c.groups;
    if g.consumer_heartbeat_interval_ms < 1
        || g.consumer_session_timeout_ms <= g.consumer_heartbeat_interval_ms
    {
        return Err(format!(
            "--group-consumer-heartbeat-interval-ms ({}) must be at least 1 and below --group-consumer-session-timeout-ms ({})",
            g.consumer_heartbeat_interval_ms, g.consumer_session_timeout_ms
        ));
    }
    sluice_rpc::check_cluster_flags(c.node_id, c.rpc_listen, &c.voters)?;
    c.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            ca: tls_ca,
        }),
        (None, None) if tls_ca.is_none() => None,
        _ => return Err("--tls-cert and --tls-key go together (and --tls-ca with them)".into()),
    };
    c.oauth = jwks.map(|jwks| sluice_broker::config::OauthSettings {
        jwks,
        checks: oauth,
    });
    if oauth_checks && c.oauth.is_none() {
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
    c.advertised_host = advertised.unwrap_or_else(|| c.listen().ip().to_string());
    Ok(c)
}

fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("--listen {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen {hostport}: no address"))
}

fn main() -> ExitCode {
    tune_allocator();
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("start") => {
            let config = match parse_start(&args[1..]) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice: {e}\n{USAGE}");
                    return ExitCode::from(2);
                }
            };
            if !config.voters.is_empty() {
                log::info!(
                    "cluster of {} voter(s), this node is {}: topics come from the controller \
                     quorum; partitions with several replicas are Raft groups",
                    config.voters.len(),
                    if config
                        .voters
                        .iter()
                        .any(|v| v.id as i64 == config.node_id as i64)
                    {
                        "a voter"
                    } else {
                        "broker-only"
                    }
                );
            }
            let result = sluice_broker::run(config, |c| {
                println!(
                    "sluice: ready listen={} shards={} node_id={} data_dir={}",
                    c.listen(),
                    c.shards,
                    c.node_id,
                    c.data_dir.display()
                );
                use std::io::Write;
                let _ = std::io::stdout().flush();
            });
            match result {
                Ok(()) => {
                    eprintln!("sluice: stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("verify") => verify(&args[1..]),
        Some("users") => users(&args[1..]),
        Some("tune") => sluice_tuning::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// `sluice users add`: a SCRAM credential (salt, iterations, derived keys: never the
/// password) stored in the data directory for the controller, which the node hands over
/// when it starts (before it serves, in a cluster of one): Kafka's `kafka-storage format
/// --add-scram`, so a first user exists before any client connects.
fn users(args: &[String]) -> ExitCode {
    match add_user(args) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "sluice users: {e}
{USAGE}"
            );
            ExitCode::from(2)
        }
    }
}

fn add_user(args: &[String]) -> Result<String, String> {
    use sluice_security::{ScramCredential, ScramMechanism};
    let Some(("add", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) else {
        return Err("the only subcommand is `add`".into());
    };
    let mut data_dir = BrokerConfig::default().data_dir;
    let (mut mechanism, mut name, mut password) = (None, None, None);
    let mut iterations = sluice_security::scram::ITERATIONS_MIN;
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--data-dir" => data_dir = PathBuf::from(v),
            "--mechanism" => {
                mechanism =
                    Some(ScramMechanism::from_name(&v).ok_or_else(|| {
                        format!("--mechanism {v}: SCRAM-SHA-256 or SCRAM-SHA-512")
                    })?)
            }
            "--name" => name = Some(v),
            "--password" => password = Some(v),
            "--iterations" => {
                iterations = v
                    .parse()
                    .map_err(|_| format!("--iterations {v}: not a number"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mechanism = mechanism.ok_or("--mechanism is required")?;
    let name = name.filter(|n| !n.is_empty()).ok_or("--name is required")?;
    let password = password
        .filter(|p| !p.is_empty())
        .ok_or("--password is required")?;
    let credential = ScramCredential::generate(mechanism, password.as_bytes(), iterations)?;
    std::fs::create_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    sluice_broker::scram_store::add_pending(
        &data_dir,
        sluice_broker::scram_store::record(&name, &credential),
    )?;
    Ok(format!(
        "sluice: {} credential of {name} stored in {}; the node hands it to the controller \
         when it starts",
        mechanism.name(),
        data_dir.display()
    ))
}

/// `sluice verify [--data-dir DIR]`: checks every segment of every partition (framing,
/// CRC32C, offsets, indexes), read only. Prints one line per problem and note, then a
/// summary; exit 0 when clean, 1 when anything is damaged, 2 on bad usage or an unreadable
/// data directory.
fn verify(args: &[String]) -> ExitCode {
    let mut data_dir = BrokerConfig::default().data_dir;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--data-dir", Some(v)) => data_dir = PathBuf::from(v),
            (other, _) => {
                eprintln!("sluice verify: bad argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let report = match sluice_storage::verify::verify_data_dir(&data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice verify: {}: {e}", data_dir.display());
            return ExitCode::from(2);
        }
    };
    for n in &report.notes {
        println!("note: {n}");
    }
    for p in &report.problems {
        println!("PROBLEM: {p}");
    }
    println!(
        "sluice verify: {} partitions, {} segments, {} batches, {} bytes checked; {} problems, {} notes",
        report.partitions,
        report.segments,
        report.batches,
        report.bytes,
        report.problems.len(),
        report.notes.len()
    );
    if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-04T02:40:12.345Z`), the log line's
/// stamp: several nodes' logs read side by side need the time of each line.
fn utc_stamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let c = sluice_shard::clock::civil_utc(d.as_secs());
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        d.subsec_millis()
    )
}

/// Minimal stderr logger; `SLUICE_LOG=debug|info|warn|error` (default info). Each line is
/// `<UTC time> <LEVEL> <target>: <message>`.
fn init_logging() {
    struct Stderr(log::LevelFilter);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            // Repeats of what the shard runtime already said (see the function); shown from
            // debug on.
            if self.0 < log::LevelFilter::Debug
                && sluice_broker::log_is_redundant(m.target(), m.level())
            {
                return false;
            }
            m.level() <= self.0
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                eprintln!(
                    "{} {} {}: {}",
                    utc_stamp(std::time::SystemTime::now()),
                    r.level(),
                    r.target(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    let level = match std::env::var("SLUICE_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("warn") => log::LevelFilter::Warn,
        Ok("error") => log::LevelFilter::Error,
        Ok("trace") => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    };
    let logger: &'static Stderr = Box::leak(Box::new(Stderr(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_stamps_are_rfc3339_utc() {
        let at = |s: u64, ms: u64| {
            utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_millis(s * 1000 + ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(at(1_796_351_503, 123), "2026-12-04T02:31:43.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn users_add_stores_a_credential_and_checks_its_flags() {
        let dir = std::env::temp_dir().join(format!("sluice-users-{}", std::process::id()));
        let d = dir.display().to_string();
        let ok = add_user(&args(&format!(
            "add --data-dir {d} --mechanism SCRAM-SHA-512 --name admin --password pw"
        )))
        .unwrap();
        assert!(ok.contains("SCRAM-SHA-512 credential of admin"), "{ok}");
        let stored = sluice_broker::scram_store::read_pending(&dir).unwrap();
        assert_eq!((stored[0].user.as_str(), stored[0].mechanism), ("admin", 2));
        for (bad, why) in [
            ("list", "only subcommand"),
            (
                "add --mechanism MD5 --name a --password p",
                "SCRAM-SHA-256 or",
            ),
            (
                "add --mechanism SCRAM-SHA-256 --password p",
                "--name is required",
            ),
            (
                "add --mechanism SCRAM-SHA-256 --name a",
                "--password is required",
            ),
            (
                "add --mechanism SCRAM-SHA-256 --name a --password p --iterations 10",
                "iterations 10",
            ),
        ] {
            let e = add_user(&args(&format!("{bad} --data-dir {d}"))).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
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
        assert_eq!(oauth.jwks, PathBuf::from("/etc/jwks.json"));
        assert_eq!(oauth.checks.expected_audience, ["a", "b"]);
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
                "--sasl-oauthbearer-jwks-endpoint-url https://idp/jwks",
                "only file: URLs",
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
            ("--authorizer simple", "not acl or none"),
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
            ("--voters", "--voters needs a value"),
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

    extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
    }

    /// The option indexes name the purge delay and allow_thp of the mimalloc linked in (the
    /// only options nearby with their defaults in mimalloc 3), the ones `tune_allocator`
    /// sets. A lockfile bump that moves the enum fails here rather than tuning others.
    #[test]
    fn the_allocator_options_set_are_the_purge_delay_and_thp() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            return;
        }
        // SAFETY: plain getters and setters of process-wide integer options, and a prctl
        // getter of this process's THP flag.
        unsafe {
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            // allow_thp: on by default on Linux, and the only option near it that is 1.
            assert_eq!(mi_option_get(MI_OPTION_ALLOW_THP), 1);
            assert_ne!(mi_option_get(MI_OPTION_ALLOW_THP - 1), 1);
            assert_ne!(mi_option_get(MI_OPTION_ALLOW_THP + 1), 1);
            tune_allocator();
            assert_eq!(mi_option_get(MI_OPTION_PURGE_DELAY), PURGE_DELAY_MS);
            assert_eq!(mi_option_get(MI_OPTION_ALLOW_THP), 0);
            assert_eq!(libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0), 1);
        }
    }
}
