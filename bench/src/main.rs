//! `sluice-bench`: a Kafka-protocol load generator in the spirit of the OpenMessaging
//! Benchmark. It drives any bootstrap server (sluice or Apache Kafka, unchanged) with a
//! workload file and reports throughput, produce and end-to-end latency percentiles, and
//! backlog drain, as JSON, markdown and an SVG plot.
//!
//! The storage benchmark is the separate binary `sluice-storage-bench` (src/bin/storage.rs).

mod loadgen;

use std::path::PathBuf;

use loadgen::run::{run, RunOpts};
use loadgen::workload::{Client, Isolation, KeyDistribution, Stamp, Workload};
use loadgen::{report, selftest, sys};

/// `sluice-bench`'s command line.
#[derive(clap::Parser, Debug)]
#[command(
    name = "sluice-bench",
    about = "A Kafka-protocol load generator (OpenMessaging Benchmark style)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run a workload file against a bootstrap server.
    Run(Box<RunArgs>),
    /// The generator's ceiling without a broker (record path, librdkafka enqueue, native
    /// producer against a discard server, native consumer's parse path).
    SelfTest(SelfTestArgs),
    /// TCP bandwidth over 127.0.0.1 (one connection, 1 MiB writes).
    Loopback(LoopbackArgs),
}

fn client(v: &str) -> Result<Client, String> {
    match v {
        "rdkafka" => Ok(Client::Rdkafka),
        "native" => Ok(Client::Native),
        _ => Err(format!("{v:?}: rdkafka|native")),
    }
}

fn isolation(v: &str) -> Result<Isolation, String> {
    match v {
        "read_committed" => Ok(Isolation::ReadCommitted),
        "read_uncommitted" => Ok(Isolation::ReadUncommitted),
        _ => Err(format!("{v:?}: read_committed|read_uncommitted")),
    }
}

fn stamp(v: &str) -> Result<Stamp, String> {
    match v {
        "send" => Ok(Stamp::Send),
        "schedule" => Ok(Stamp::Schedule),
        _ => Err(format!("{v:?}: send|schedule")),
    }
}

fn key_distribution(v: &str) -> Result<KeyDistribution, String> {
    match v {
        "none" => Ok(KeyDistribution::None),
        "uniform" => Ok(KeyDistribution::Uniform),
        "skewed" => Ok(KeyDistribution::Skewed),
        _ => Err(format!("{v:?}: none|uniform|skewed")),
    }
}

/// Options of `run`; the overrides replace the workload file's value.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
struct RunArgs {
    #[arg(long, value_name = "HOST:PORT")]
    bootstrap: String,
    #[arg(long, value_name = "FILE")]
    workload: PathBuf,
    /// Where result files go.
    #[arg(long, value_name = "DIR", default_value = "target/bench-results")]
    out: PathBuf,
    /// File name stem (default <UTC date-time>-<workload name>).
    #[arg(long, value_name = "STEM")]
    name: Option<String>,
    /// Use this exact topic (created if missing) instead of <topic>-<run id>.
    #[arg(long, value_name = "NAME")]
    topic: Option<String>,
    /// Delete the run's own <topic>-<run id> when done (never a --topic NAME).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    delete_topic: bool,
    /// The peak rate, for workloads with peak_fractions.
    #[arg(long, value_name = "RECS_PER_S")]
    peak: Option<f64>,
    /// Also report the broker's CPU use and affinity.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<i32>,
    /// Pin the generator (and librdkafka's threads) to CPUs, e.g. 1 or 0-1.
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,

    #[arg(long, help_heading = "Overrides")]
    duration_s: Option<u64>,
    #[arg(long, help_heading = "Overrides")]
    warmup_s: Option<u64>,
    /// A fixed rate (clears the file's rates and peak_fractions).
    #[arg(long, help_heading = "Overrides", conflicts_with = "rates")]
    rate: Option<f64>,
    /// Rates in turn, comma-separated (clears the file's peak_fractions).
    #[arg(long, help_heading = "Overrides", value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    #[arg(long, help_heading = "Overrides", value_delimiter = ',')]
    peak_fractions: Option<Vec<f64>>,
    #[arg(long, help_heading = "Overrides")]
    producers: Option<usize>,
    #[arg(long, help_heading = "Overrides")]
    consumers: Option<usize>,
    #[arg(long, help_heading = "Overrides")]
    consumer_groups: Option<usize>,
    #[arg(long, help_heading = "Overrides")]
    partitions: Option<i32>,
    #[arg(long, help_heading = "Overrides")]
    record_bytes: Option<usize>,
    /// all|1|0
    #[arg(long, help_heading = "Overrides")]
    acks: Option<String>,
    /// none|gzip|snappy|lz4|zstd
    #[arg(long, help_heading = "Overrides")]
    compression: Option<String>,
    #[arg(long, help_heading = "Overrides")]
    batch_size: Option<usize>,
    #[arg(long, help_heading = "Overrides")]
    linger_ms: Option<u64>,
    /// none|uniform|skewed
    #[arg(long, help_heading = "Overrides", value_parser = key_distribution)]
    key_distribution: Option<KeyDistribution>,
    #[arg(long, help_heading = "Overrides")]
    backlog_s: Option<u64>,
    #[arg(long, help_heading = "Overrides")]
    drain_timeout_s: Option<u64>,
    #[arg(long, help_heading = "Overrides")]
    sender_threads: Option<usize>,
    /// Producer client: rdkafka, or native (the generator's own protocol producer).
    #[arg(long, help_heading = "Overrides", value_parser = client)]
    client: Option<Client>,
    /// Consumer client: rdkafka, or native (the generator's own Fetch loop: static
    /// partition assignment, no group protocol).
    #[arg(long, help_heading = "Overrides", value_parser = client)]
    consumer_client: Option<Client>,
    /// Transactional producers (rdkafka; one transactional.id each): commit each producer's
    /// transaction once it has been open MS ms.
    #[arg(long, help_heading = "Overrides", value_name = "MS")]
    txn_commit_ms: Option<u64>,
    /// … or once it holds N records (either flag turns transactions on; both: whichever
    /// comes first).
    #[arg(long, help_heading = "Overrides", value_name = "N")]
    txn_commit_records: Option<u64>,
    /// The consumers' isolation.level (default: the client's own, read_committed for
    /// librdkafka): read_committed|read_uncommitted.
    #[arg(long, help_heading = "Overrides", value_parser = isolation)]
    isolation: Option<Isolation>,
    /// Records carry their send time (send, the default) or, at a fixed rate, the time the
    /// schedule made them due (schedule): waits of a blocked sender count.
    #[arg(long, help_heading = "Overrides", value_parser = stamp)]
    stamp: Option<Stamp>,
}

impl RunArgs {
    /// The workload file with the overrides given applied.
    fn apply(&self, w: &mut Workload) {
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field {
                    w.$field = v.clone();
                }
            )*};
        }
        set!(
            duration_s,
            warmup_s,
            producers,
            consumers,
            consumer_groups,
            partitions,
            record_bytes,
            acks,
            compression,
            batch_size,
            linger_ms,
            key_distribution,
            backlog_s,
            drain_timeout_s,
            sender_threads,
            client,
            consumer_client,
            txn_commit_ms,
            txn_commit_records,
            stamp
        );
        if let Some(rate) = self.rate {
            w.rate = rate;
            w.rates.clear();
            w.peak_fractions.clear();
        }
        if let Some(rates) = &self.rates {
            w.rates = rates.clone();
            w.peak_fractions.clear();
        }
        if let Some(f) = &self.peak_fractions {
            w.peak_fractions = f.clone();
        }
        if let Some(i) = self.isolation {
            w.isolation = Some(i);
        }
    }
}

#[derive(clap::Args, Debug)]
struct SelfTestArgs {
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    seconds: f64,
    /// 16 bytes to 8 MiB.
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=8 << 20))]
    record_bytes: u64,
    /// Threads (default: one per CPU the generator may use).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_name = "LIST")]
    cpus: Option<String>,
    /// Also write the result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct LoopbackArgs {
    #[arg(long, default_value_t = 5.0, value_parser = seconds)]
    seconds: f64,
    /// Also write the result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// A duration of 0.5 to 600 seconds.
fn seconds(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| (0.5..=600.0).contains(s))
        .ok_or_else(|| format!("{v}: seconds in 0.5..=600"))
}

fn utc_stamp() -> String {
    let c = sluice_shard::clock::civil_utc(sys::now_ns() / 1_000_000_000);
    format!(
        "{:04}-{:02}-{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

fn pin(cpus: &Option<String>) -> Result<Vec<usize>, String> {
    match cpus {
        Some(s) => {
            let list = sys::parse_cpu_list(s)?;
            sys::pin_self(&list)?;
            Ok(list)
        }
        None => Ok(Vec::new()),
    }
}

fn cmd_run(a: &RunArgs) -> Result<(), String> {
    let cpus = pin(&a.cpus)?;
    let mut w = Workload::load(&a.workload)?;
    a.apply(&mut w);
    let opts = RunOpts {
        bootstrap: a.bootstrap.clone(),
        topic: a.topic.clone(),
        peak: a.peak,
        broker_pid: a.broker_pid,
        generator_cpus: cpus,
        delete_topic: a.delete_topic,
    };
    let out = a.out.clone();
    let stem = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", utc_stamp(), w.name));
    let result = run(&w, &opts)?;
    print!("{}", report::markdown(&result));
    for p in report::write_files(&result, &out, &stem)? {
        eprintln!("sluice-bench: wrote {}", p.display());
    }
    Ok(())
}

fn cmd_self_test(a: &SelfTestArgs) -> Result<(), String> {
    let (seconds, record_bytes, mut threads, json) = (
        a.seconds,
        a.record_bytes as usize,
        a.threads,
        a.json.clone(),
    );
    let cpus = a.cpus.clone();
    let pinned = pin(&cpus)?;
    if threads == 0 {
        threads = if pinned.is_empty() {
            sys::affinity(0).len().max(1)
        } else {
            pinned.len()
        };
    }
    let r = selftest::self_test(seconds, record_bytes, threads.min(64))?;
    println!(
        "| generator self-test ({} threads, {} B records, {:.1} s) | records/s | MiB/s |\n|---|---|---|\n\
         | record path (timestamp, key, HDR record) | {:.0} | {:.0} |\n\
         | + librdkafka enqueue (send){} | {:.0} | {:.0} |\n\
         | native producer to a discard server (batch, send, ack) | {:.0} | {:.0} |\n\
         | native consumer parse path (batch walk, HDR record) | {:.0} | {:.0} |",
        r.threads,
        r.record_bytes,
        r.seconds,
        r.record_path_records_per_s,
        r.record_path_records_per_s * r.record_bytes as f64 / 1048576.0,
        if r.enqueue_hit_queue_limit { ", until the queue filled" } else { "" },
        r.enqueue_records_per_s,
        r.enqueue_mib_per_s,
        r.native_records_per_s,
        r.native_mib_per_s,
        r.consumer_parse_records_per_s,
        r.consumer_parse_mib_per_s
    );
    if let Some(p) = json {
        let t = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        std::fs::write(&p, t).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

fn cmd_loopback(a: &LoopbackArgs) -> Result<(), String> {
    let (seconds, json) = (a.seconds, a.json.clone());
    let r = selftest::loopback(seconds)?;
    println!(
        "loopback TCP 127.0.0.1: {:.0} MiB/s ({} bytes in {:.2} s, one connection)",
        r.mib_per_s, r.bytes, r.seconds
    );
    if let Some(p) = json {
        let t = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        std::fs::write(&p, t).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}

fn main() {
    use clap::Parser;
    let cli = Cli::parse();
    let res = match &cli.command {
        Command::Run(a) => cmd_run(a),
        Command::SelfTest(a) => cmd_self_test(a),
        Command::Loopback(a) => cmd_loopback(a),
    };
    if let Err(e) = res {
        eprintln!("sluice-bench: {e}");
        std::process::exit(2);
    }
}
