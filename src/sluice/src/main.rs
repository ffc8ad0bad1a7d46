//! The `sluice` command: `sluice start` runs the broker; `sluice verify` checks a data
//! directory's segments offline; `sluice users add` stores a SCRAM credential before the
//! first start; `sluice tune --check` inspects the host; `sluice topic|group|cluster` are the
//! operator's Kafka client (the `sluice-cli` crate). clap parses all of them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice_broker::BrokerConfig;

mod start;
mod users;

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

/// The `sluice` command line.
#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker.
    Start(Box<start::StartArgs>),
    /// Check a data directory's segments offline (framing, CRC32C, offsets, indexes).
    Verify {
        /// The broker's data directory (all of them, comma-separated or the flag repeated,
        /// for a node with several).
        #[arg(long, value_name = "DIR[,DIR...]", value_delimiter = ',',
              action = clap::ArgAction::Append)]
        data_dir: Vec<PathBuf>,
    },
    /// SCRAM credentials stored offline, before the first start.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// Check the host's settings for the broker, or apply the safe ones.
    Tune(sluice_tuning::TuneArgs),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(flatten)]
        global: sluice_cli::Global,
        #[command(subcommand)]
        command: sluice_cli::TopicCommand,
    },
    /// List, describe, seek and delete consumer groups.
    Group {
        #[command(flatten)]
        global: sluice_cli::Global,
        #[command(subcommand)]
        command: sluice_cli::GroupCommand,
    },
    /// The cluster's brokers and controller, and cluster-wide configs.
    Cluster {
        #[command(flatten)]
        global: sluice_cli::Global,
        #[command(subcommand)]
        command: sluice_cli::ClusterCommand,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    init_logging();
    let cli = Cli::parse();
    match cli.command {
        Command::Start(args) => {
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sluice start: {e}");
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
        Command::Verify { mut data_dir } => {
            if data_dir.is_empty() {
                data_dir.push(BrokerConfig::default().data_dir);
            }
            verify(&data_dir)
        }
        Command::Users(command) => users::run(command),
        Command::Tune(args) => sluice_tuning::run(args),
        Command::Topic { global, command } => sluice_cli::topic(&global, command),
        Command::Group { global, command } => sluice_cli::group(&global, command),
        Command::Cluster { global, command } => sluice_cli::cluster(&global, command),
    }
}

/// `sluice verify [--data-dir DIR[,DIR...]]`: checks every segment of every partition
/// (framing, CRC32C, offsets, indexes) in each directory, read only. Prints one line per
/// problem and note, then a summary; exit 0 when clean, 1 when anything is damaged, 2 on bad
/// usage or an unreadable data directory.
fn verify(data_dirs: &[PathBuf]) -> ExitCode {
    let mut report = sluice_storage::verify::Report::default();
    for data_dir in data_dirs {
        match sluice_storage::verify::verify_data_dir(data_dir) {
            Ok(r) => {
                report.partitions += r.partitions;
                report.segments += r.segments;
                report.batches += r.batches;
                report.bytes += r.bytes;
                report.problems.extend(r.problems);
                report.notes.extend(r.notes);
            }
            Err(e) => {
                eprintln!("sluice verify: {}: {e}", data_dir.display());
                return ExitCode::from(2);
            }
        }
    }
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

/// The process logger: tracing-subscriber on stderr (`log` records from every crate come
/// through its bridge). `SLUICE_LOG` is an env-filter (`info`, the default; `debug`;
/// `info,sluice_broker=debug`); `SLUICE_LOG_FORMAT=json` writes one JSON object a line.
/// Text lines are `<UTC time> <LEVEL> <target>: <message>`.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let spec = log_filter(std::env::var("SLUICE_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("sluice: SLUICE_LOG={spec:?} is not a log filter ({e}); logging at info");
        EnvFilter::new(log_filter(None))
    });
    let text = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(UtcMillis);
    let json = std::env::var("SLUICE_LOG_FORMAT").is_ok_and(|f| f == "json");
    // Only fails if a logger is already installed (never, this is the first thing main does).
    let _ = if json {
        text.json().try_init()
    } else {
        text.try_init()
    };
}

/// The filter for `SLUICE_LOG`: as given, except that a bare level below debug also drops
/// the runtime's redundant warnings (`REDUNDANT_LOG_DIRECTIVE`).
fn log_filter(spec: Option<&str>) -> String {
    let spec = spec
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    match spec.to_ascii_lowercase().as_str() {
        "error" | "warn" | "info" => {
            format!("{spec},{}", sluice_broker::REDUNDANT_LOG_DIRECTIVE)
        }
        _ => spec.to_string(),
    }
}

/// Log times as [`utc_stamp`] writes them (milliseconds, UTC).
struct UtcMillis;

impl tracing_subscriber::fmt::time::FormatTime for UtcMillis {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(&utc_stamp(std::time::SystemTime::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_levels_drop_the_runtimes_repeats_and_filters_pass_as_given() {
        let quiet = sluice_broker::REDUNDANT_LOG_DIRECTIVE;
        assert_eq!(log_filter(None), format!("info,{quiet}"));
        assert_eq!(log_filter(Some("warn")), format!("warn,{quiet}"));
        assert_eq!(log_filter(Some("debug")), "debug");
        assert_eq!(log_filter(Some(" ")), format!("info,{quiet}"));
        assert_eq!(
            log_filter(Some("info,sluice_broker=debug")),
            "info,sluice_broker=debug"
        );
    }

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
