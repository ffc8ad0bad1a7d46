//! Renders a run's result as a markdown report and writes the result files (JSON, markdown,
//! SVG plot) into the output directory.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::hist::Pcts;
use super::plot;
use super::run::RunResult;
use super::workload::{Client, Isolation, Stamp};

fn rate_label(r: f64) -> String {
    if r > 0.0 {
        format!("{r:.0}")
    } else {
        "max".into()
    }
}

fn client_label(c: Client) -> &'static str {
    match c {
        Client::Rdkafka => "librdkafka",
        Client::Native => "native",
    }
}

fn lat_row(out: &mut String, phase: usize, what: &str, p: &Pcts) {
    let _ = writeln!(
        out,
        "| {phase} | {what} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
        p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.p9999_ms, p.max_ms
    );
}

pub fn markdown(r: &RunResult) -> String {
    let w = &r.workload;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "### sluice-bench: {} → {} (topic `{}`)\n",
        w.name, r.bootstrap, r.topic
    );
    if !w.description.is_empty() {
        let _ = writeln!(s, "{}\n", w.description.trim());
    }
    let _ = writeln!(
        s,
        "{} producers ({} client), {} consumer group(s) × {} consumer(s) ({} client), {} partitions, \
         {} B records, keys {:?}, acks={}, compression={}, batch.size={}, linger.ms={}, warm-up {} s, \
         measured {} s per phase.\n",
        w.producers,
        client_label(w.client),
        w.consumer_groups,
        w.consumers,
        client_label(w.consumer_client),
        w.partitions,
        w.record_bytes,
        w.key_distribution,
        w.acks,
        w.compression,
        w.batch_size,
        w.linger_ms,
        w.warmup_s,
        w.duration_s
    );
    // Only for runs that use them, so other reports read as before.
    if let Some(every) = w.txn_schedule() {
        let _ = write!(s, "Transactional producers: each commits every {every}.");
        if let Some(t) = &r.transactions {
            let _ = write!(
                s,
                " {} commits of {} records in all, {} failed calls, {} aborted.",
                t.commits, t.records_committed, t.errors, t.aborts
            );
        }
        s.push('\n');
    }
    if let Some(i) = w.isolation {
        let _ = writeln!(
            s,
            "Consumer isolation.level: {}.",
            match i {
                Isolation::ReadCommitted => "read_committed",
                Isolation::ReadUncommitted => "read_uncommitted",
            }
        );
    }
    if w.stamp == Stamp::Schedule {
        s.push_str(
            "Latencies start at each record's scheduled send time (`stamp = \"schedule\"`).\n",
        );
    }
    if w.transactional() || w.isolation.is_some() || w.stamp == Stamp::Schedule {
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "Host {}: {}. Load average before / after: {} / {}.\n",
        r.host.hostname, r.host.cpu_note, r.host.loadavg_before, r.host.loadavg_after
    );
    s.push_str(
        "| phase | target rec/s | produce rec/s | produce MiB/s | consume rec/s | consume MiB/s \
         | generator CPUs | host CPU busy | broker CPUs | max sender lag ms |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for p in &r.phases {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} % | {} | {:.1} |",
            p.index,
            rate_label(p.target_rate),
            p.produce.records_per_s,
            p.produce.mib_per_s,
            p.consume.records_per_s,
            p.consume.mib_per_s,
            p.generator_cpu_cores,
            p.host_cpu_busy * 100.0,
            p.broker_cpu_cores.map_or("–".into(), |c| format!("{c:.2}")),
            p.sender_lag_max_ms
        );
    }
    s.push_str(
        "\n| phase | latency (ms) | count | p50 | p90 | p99 | p99.9 | p99.99 | max |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for p in &r.phases {
        lat_row(&mut s, p.index, "produce (send → ack)", &p.produce_latency);
        lat_row(
            &mut s,
            p.index,
            "end-to-end (send → consumed)",
            &p.e2e_latency,
        );
        if let Some(c) = &p.commit_latency {
            lat_row(&mut s, p.index, "commit_transaction call", c);
        }
    }
    let d = &r.drain;
    let _ = writeln!(
        s,
        "\nBacklog drain: {} records ({:.1} MiB) behind when producers stopped; drained at {:.0} rec/s \
         ({:.1} MiB/s) in {:.1} s{}.",
        d.backlog_records,
        d.backlog_bytes as f64 / 1048576.0,
        d.records_per_s,
        d.mib_per_s,
        d.seconds,
        if d.complete { "" } else { " (INCOMPLETE: timeout)" }
    );
    if d.backlog_records < 10_000 {
        s.push_str(
            "(A backlog this small drains in one fetch round; the rate says little. Set \
             `backlog_s` in the workload for a real drain measurement.)\n",
        );
    }
    let _ = writeln!(
        s,
        "\nErrors: {} failed deliveries, {} send errors, {} consume errors.",
        r.produce_errors, r.send_errors, r.consume_errors
    );
    if !r.warnings.is_empty() {
        s.push_str("\n**Warnings**\n\n");
        for m in &r.warnings {
            let _ = writeln!(s, "- {m}");
        }
    }
    s
}

/// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` into `dir`; returns their paths.
pub fn write_files(r: &RunResult, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let json = dir.join(format!("{stem}.json"));
    let md = dir.join(format!("{stem}.md"));
    let svg = dir.join(format!("{stem}.svg"));
    let text = serde_json::to_string_pretty(r).map_err(|e| format!("json: {e}"))?;
    let write = |p: &Path, t: &str| {
        std::fs::write(p, t).map_err(|e| format!("writing {}: {e}", p.display()))
    };
    write(&json, &text)?;
    let mut m = markdown(r);
    let _ = writeln!(m, "\n![latency and throughput]({stem}.svg)");
    write(&md, &m)?;
    write(&svg, &plot::svg(r))?;
    Ok(vec![json, md, svg])
}
