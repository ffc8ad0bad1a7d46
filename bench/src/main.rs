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

const USAGE: &str = "\
usage:
  sluice-bench run --bootstrap HOST:PORT --workload FILE [options] [overrides]
  sluice-bench self-test [--seconds N] [--record-bytes N] [--threads N] [--cpus LIST] [--json FILE]
  sluice-bench loopback [--seconds N] [--json FILE]

run options:
  --out DIR            where result files go (default target/bench-results)
  --name STEM          file name stem (default <UTC date-time>-<workload name>)
  --topic NAME         use this exact topic (created if missing) instead of <topic>-<run id>
  --delete-topic B     delete the run's own <topic>-<run id> when done (default true; never
                       a --topic NAME)
  --peak RECS_PER_S    the peak rate, for workloads with peak_fractions
  --broker-pid PID     also report the broker's CPU use and affinity
  --cpus LIST          pin the generator (and librdkafka's threads) to CPUs, e.g. 1 or 0-1
run overrides (replace the workload file's value):
  --duration-s N --warmup-s N --rate R --rates R,R,.. --peak-fractions F,F,..
  --producers N --consumers N --consumer-groups N --partitions N --record-bytes N
  --acks all|1|0 --compression none|gzip|snappy|lz4|zstd --batch-size N --linger-ms N
  --key-distribution none|uniform|skewed --backlog-s N --drain-timeout-s N --sender-threads N
  --client rdkafka|native (producer client; native = the generator's own protocol producer)
  --consumer-client rdkafka|native (consumer client; native = the generator's own Fetch
                       loop: static partition assignment, no group protocol)
  --txn-commit-ms MS   transactional producers (rdkafka; one transactional.id each): commit
                       each producer's transaction once it has been open MS ms
  --txn-commit-records N  … or once it holds N records (either flag turns transactions on;
                       both: whichever comes first)
  --isolation read_committed|read_uncommitted  the consumers' isolation.level (default: the
                       client's own, read_committed for librdkafka)
  --stamp send|schedule  records carry their send time (default) or, at a fixed rate, the
                       time the schedule made them due: waits of a blocked sender count

self-test: the generator's ceiling without a broker (record path, librdkafka enqueue, native
producer against a discard server, native consumer's parse path).
loopback: TCP bandwidth over 127.0.0.1 (one connection, 1 MiB writes).
";

fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag} {v:?}: not a valid number"))
}

fn client(flag: &str, v: &str) -> Result<Client, String> {
    match v {
        "rdkafka" => Ok(Client::Rdkafka),
        "native" => Ok(Client::Native),
        _ => Err(format!("{flag} {v:?}: rdkafka|native")),
    }
}

fn list(flag: &str, v: &str) -> Result<Vec<f64>, String> {
    v.split(',').map(|x| num(flag, x.trim())).collect()
}

/// Splits `--flag=value` / `--flag value` pairs; every option here takes a value.
fn pairs(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if !a.starts_with("--") {
            return Err(format!("unexpected argument {a:?}"));
        }
        match a.split_once('=') {
            Some((f, v)) => out.push((f.to_string(), v.to_string())),
            None => {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                out.push((a.clone(), v.clone()));
            }
        }
    }
    Ok(out)
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

fn cmd_run(args: &[String]) -> Result<(), String> {
    let kv = pairs(args)?;
    let get = |f: &str| {
        kv.iter()
            .rev()
            .find(|(k, _)| k == f)
            .map(|(_, v)| v.clone())
    };
    let cpus = pin(&get("--cpus"))?;
    let bootstrap = get("--bootstrap").ok_or("run needs --bootstrap HOST:PORT")?;
    let path = PathBuf::from(get("--workload").ok_or("run needs --workload FILE")?);
    let mut w = Workload::load(&path)?;
    for (k, v) in &kv {
        let f = k.as_str();
        match f {
            "--bootstrap" | "--workload" | "--out" | "--name" | "--topic" | "--peak"
            | "--broker-pid" | "--cpus" | "--delete-topic" => {}
            "--duration-s" => w.duration_s = num(f, v)?,
            "--warmup-s" => w.warmup_s = num(f, v)?,
            "--rate" => {
                w.rate = num(f, v)?;
                w.rates.clear();
                w.peak_fractions.clear();
            }
            "--rates" => {
                w.rates = list(f, v)?;
                w.peak_fractions.clear();
            }
            "--peak-fractions" => w.peak_fractions = list(f, v)?,
            "--producers" => w.producers = num(f, v)?,
            "--consumers" => w.consumers = num(f, v)?,
            "--consumer-groups" => w.consumer_groups = num(f, v)?,
            "--partitions" => w.partitions = num(f, v)?,
            "--record-bytes" => w.record_bytes = num(f, v)?,
            "--acks" => w.acks = v.clone(),
            "--compression" => w.compression = v.clone(),
            "--batch-size" => w.batch_size = num(f, v)?,
            "--linger-ms" => w.linger_ms = num(f, v)?,
            "--backlog-s" => w.backlog_s = num(f, v)?,
            "--drain-timeout-s" => w.drain_timeout_s = num(f, v)?,
            "--sender-threads" => w.sender_threads = num(f, v)?,
            "--client" => w.client = client(f, v)?,
            "--consumer-client" => w.consumer_client = client(f, v)?,
            "--txn-commit-ms" => w.txn_commit_ms = num(f, v)?,
            "--txn-commit-records" => w.txn_commit_records = num(f, v)?,
            "--isolation" => {
                w.isolation = Some(match v.as_str() {
                    "read_committed" => Isolation::ReadCommitted,
                    "read_uncommitted" => Isolation::ReadUncommitted,
                    _ => return Err(format!("{f} {v:?}: read_committed|read_uncommitted")),
                })
            }
            "--stamp" => {
                w.stamp = match v.as_str() {
                    "send" => Stamp::Send,
                    "schedule" => Stamp::Schedule,
                    _ => return Err(format!("{f} {v:?}: send|schedule")),
                }
            }
            "--key-distribution" => {
                w.key_distribution = match v.as_str() {
                    "none" => KeyDistribution::None,
                    "uniform" => KeyDistribution::Uniform,
                    "skewed" => KeyDistribution::Skewed,
                    _ => return Err(format!("--key-distribution {v:?}: none|uniform|skewed")),
                }
            }
            _ => return Err(format!("unknown option {k}\n\n{USAGE}")),
        }
    }
    let opts = RunOpts {
        bootstrap,
        topic: get("--topic"),
        peak: get("--peak").map(|v| num("--peak", &v)).transpose()?,
        broker_pid: get("--broker-pid")
            .map(|v| num("--broker-pid", &v))
            .transpose()?,
        generator_cpus: cpus,
        delete_topic: match get("--delete-topic").as_deref() {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => return Err(format!("--delete-topic {v:?}: true|false")),
        },
    };
    let out = PathBuf::from(get("--out").unwrap_or_else(|| "target/bench-results".into()));
    let stem = get("--name").unwrap_or_else(|| format!("{}-{}", utc_stamp(), w.name));
    let result = run(&w, &opts)?;
    print!("{}", report::markdown(&result));
    for p in report::write_files(&result, &out, &stem)? {
        eprintln!("sluice-bench: wrote {}", p.display());
    }
    Ok(())
}

fn cmd_self_test(args: &[String]) -> Result<(), String> {
    let kv = pairs(args)?;
    let mut seconds = 3.0;
    let mut record_bytes = 1024usize;
    let mut threads = 0usize;
    let mut json = None;
    let mut cpus = None;
    for (k, v) in &kv {
        match k.as_str() {
            "--seconds" => seconds = num(k, v)?,
            "--record-bytes" => record_bytes = num(k, v)?,
            "--threads" => threads = num(k, v)?,
            "--json" => json = Some(PathBuf::from(v)),
            "--cpus" => cpus = Some(v.clone()),
            _ => return Err(format!("unknown option {k}\n\n{USAGE}")),
        }
    }
    if !(0.5..=600.0).contains(&seconds) || !(16..=8 << 20).contains(&record_bytes) {
        return Err("--seconds 0.5..=600, --record-bytes 16..=8MiB".into());
    }
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

fn cmd_loopback(args: &[String]) -> Result<(), String> {
    let kv = pairs(args)?;
    let mut seconds = 5.0;
    let mut json = None;
    for (k, v) in &kv {
        match k.as_str() {
            "--seconds" => seconds = num(k, v)?,
            "--json" => json = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown option {k}\n\n{USAGE}")),
        }
    }
    if !(0.5..=600.0).contains(&seconds) {
        return Err("--seconds 0.5..=600".into());
    }
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("run") => cmd_run(&args[1..]),
        Some("self-test") => cmd_self_test(&args[1..]),
        Some("loopback") => cmd_loopback(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            return;
        }
        _ => Err(USAGE.to_string()),
    };
    if let Err(e) = res {
        eprintln!("sluice-bench: {e}");
        std::process::exit(2);
    }
}
