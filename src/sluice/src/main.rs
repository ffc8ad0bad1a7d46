//! The `sluice` command: `sluice start` runs the broker; `sluice tune --check` inspects the host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use sluice_broker::BrokerConfig;

/// The broker allocates per request (decoded messages, response buffers, frames); glibc
/// malloc spent ~10 % of a shard's CPU in a produce+fetch profile. mimalloc's thread-local
/// free lists suit one thread per core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage:
  sluice start [--data-dir DIR] [--listen HOST:PORT] [--shards N] [--node-id N]
               [--advertised-host HOST] [--num-partitions N] [--auto-create-topics true|false]
               [--retention-check-interval-ms MS] [--no-pin] [--stats-interval-ms MS]
               [--connections-max-idle-ms MS] [--max-connections-per-ip N]
  sluice tune --check | --apply";

fn parse_start(args: &[String]) -> Result<BrokerConfig, String> {
    let mut c = BrokerConfig::default();
    let mut advertised = None;
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
                c.listen = resolve(&v)?;
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
            other => return Err(format!("unknown flag {other}")),
        }
    }
    c.advertised_host = advertised.unwrap_or_else(|| c.listen.ip().to_string());
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
            let result = sluice_broker::run(config, |c| {
                println!(
                    "sluice: ready listen={} shards={} node_id={} data_dir={}",
                    c.listen,
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
        Some("tune") => sluice_tuning::main(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Minimal stderr logger; `SLUICE_LOG=debug|info|warn|error` (default info).
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
                eprintln!("{} {}: {}", r.level(), r.target(), r.args());
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
