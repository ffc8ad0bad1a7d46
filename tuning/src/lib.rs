//! `sluice tune`: host checks (`--check`, safe anywhere) and the safe tuners (`--apply`, root), in the spirit of `rpk redpanda tune`.
//!
//! Layout: `host` is the boundary to the machine (a trait, so tests use a fake), `device` finds
//! the data dir's disks and the devices' IRQs, `checks` turns readings into findings, `apply`
//! writes the safe fixes, and this file parses arguments and renders the report.

pub mod apply;
pub mod checks;
pub mod device;
pub mod host;

use std::io::Write;
use std::process::ExitCode;

use checks::{Finding, Status};
use host::{Host, RealHost};

/// `sluice tune`'s flags (a clap subcommand of the `sluice` binary).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["check", "apply"])))]
pub struct TuneArgs {
    /// Report each host setting: current value, recommended value, status, why. Read-only;
    /// always exits 0 (unreadable settings are reported as unknown).
    #[arg(long)]
    pub check: bool,
    /// As root, set the safe ones (swappiness, CPU governor, THP, aio-max-nr, the data disk's
    /// scheduler and nomerges); exits 1 if any change failed.
    #[arg(long)]
    pub apply: bool,
    /// With --check: machine-readable output.
    #[arg(long, conflicts_with = "apply")]
    pub json: bool,
    /// With --apply: print what would be written, write nothing (no root needed).
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,
    /// The broker's data directory (default ./sluice-data, or . if that does not exist).
    #[arg(long, value_name = "DIR", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub data_dir: Option<String>,
}

/// The data dir as an absolute path: relative paths are taken against the working directory
/// because sysfs lookups and mountinfo matching need absolute ones.
fn resolve_data_dir<H: Host + ?Sized>(h: &H, given: Option<&str>, cwd: &str) -> String {
    let abs = |p: &str| {
        if p.starts_with('/') {
            p.to_string()
        } else {
            let rel = p.trim_start_matches("./");
            if rel.is_empty() || rel == "." {
                cwd.to_string()
            } else {
                format!("{}/{rel}", cwd.trim_end_matches('/'))
            }
        }
    };
    match given {
        Some(d) => abs(d),
        None => {
            let default = abs("./sluice-data");
            if h.exists(&default) {
                default
            } else {
                cwd.to_string()
            }
        }
    }
}

/// Entry point of `sluice tune`.
pub fn run(args: TuneArgs) -> ExitCode {
    let host = RealHost;
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| "/".into());
    let data_dir = resolve_data_dir(&host, args.data_dir.as_deref(), &cwd);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.check {
        let findings = checks::run_checks(&host, &data_dir);
        // A closed stdout (e.g. `| head`) must not turn into a failure of the check.
        let _ = if args.json {
            out.write_all(render_json(&data_dir, &findings).as_bytes())
        } else {
            out.write_all(render_table(&data_dir, &findings).as_bytes())
        };
        ExitCode::SUCCESS
    } else {
        {
            if !args.dry_run && !host.is_root() {
                eprintln!(
                    "sluice tune --apply: must run as root; the knobs it sets live in /proc/sys and /sys, \
                     which only root may write. Run `sluice tune --apply --dry-run` to see what would change, \
                     or `sluice tune --check` for the full report."
                );
                return ExitCode::from(1);
            }
            let findings = checks::run_checks(&host, &data_dir);
            let _ = writeln!(
                out,
                "sluice tune --apply{} (data dir {data_dir})",
                if args.dry_run {
                    " --dry-run: nothing is written"
                } else {
                    ""
                }
            );
            let s = apply::apply(&host, &findings, args.dry_run, &mut out);
            let verb = if args.dry_run {
                "would change"
            } else {
                "changed"
            };
            let _ = writeln!(
                out,
                "\n{} {verb}, {} failed, {} need manual tuning, {} unknown (left alone).",
                s.applied, s.failed, s.manual, s.unknown
            );
            if s.applied > 0 {
                let _ = writeln!(
                    out,
                    "These writes last until reboot. To persist: vm.swappiness=1 and fs.aio-max-nr=1048576 in \
                     /etc/sysctl.d/, transparent_hugepage=madvise on the kernel command line, a udev rule for \
                     queue/scheduler and queue/nomerges, and cpupower or tuned for the governor."
                );
            }
            if s.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Greedy word wrap; words longer than the width are split so no line exceeds it.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        while word.chars().count() > width {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            lines.push(head);
        }
        if line.is_empty() {
            line = word;
        } else if line.chars().count() + 1 + word.chars().count() <= width {
            line.push(' ');
            line.push_str(&word);
        } else {
            lines.push(std::mem::replace(&mut line, word));
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn pad(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n >= w {
        s.to_string()
    } else {
        format!("{s}{}", " ".repeat(w - n))
    }
}

/// The human report: one row per check (long cells wrap within their column), each followed
/// by its reason, then a count of verdicts.
pub fn render_table(data_dir: &str, findings: &[Finding]) -> String {
    const CUR_MAX: usize = 42;
    const REC_MAX: usize = 38;
    const WHY_WIDTH: usize = 100;
    let w_name = findings
        .iter()
        .map(|f| f.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(5);
    let w_cur = findings
        .iter()
        .map(|f| f.current.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(7, CUR_MAX);
    let w_rec = findings
        .iter()
        .map(|f| f.recommended.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(11, REC_MAX);
    let mut s = format!("sluice tune --check (data dir {data_dir})\n\n");
    s.push_str(&format!(
        "{}  {}  {}  STATUS\n",
        pad("CHECK", w_name),
        pad("CURRENT", w_cur),
        pad("RECOMMENDED", w_rec)
    ));
    for f in findings {
        let cur = wrap(&f.current, w_cur);
        let rec = wrap(&f.recommended, w_rec);
        for i in 0..cur.len().max(rec.len()) {
            let first = i == 0;
            let row = format!(
                "{}  {}  {}  {}",
                pad(if first { &f.name } else { "" }, w_name),
                pad(cur.get(i).map(String::as_str).unwrap_or(""), w_cur),
                pad(rec.get(i).map(String::as_str).unwrap_or(""), w_rec),
                if first { f.status.as_str() } else { "" }
            );
            s.push_str(row.trim_end());
            s.push('\n');
        }
        for (i, l) in wrap(&f.why, WHY_WIDTH).iter().enumerate() {
            s.push_str(if i == 0 { "    why: " } else { "         " });
            s.push_str(l);
            s.push('\n');
        }
    }
    let count = |st: Status| findings.iter().filter(|f| f.status == st).count();
    let fixable = findings.iter().filter(|f| !f.fixes.is_empty()).count();
    s.push_str(&format!(
        "\n{} ok, {} to tune, {} unknown. {fixable} of the rows to tune can be set by `sluice tune --apply` (as root).\n",
        count(Status::Ok),
        count(Status::Tune),
        count(Status::Unknown)
    ));
    s
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Machine-readable report: {"data_dir", "findings": [{name, current, recommended, status, why,
/// apply: [{path, value}]}], "summary": {ok, tune, unknown}}.
pub fn render_json(data_dir: &str, findings: &[Finding]) -> String {
    let mut s = format!(
        "{{\n  \"data_dir\": {},\n  \"findings\": [",
        json_str(data_dir)
    );
    for (i, f) in findings.iter().enumerate() {
        let fixes = f
            .fixes
            .iter()
            .map(|x| {
                format!(
                    "{{\"path\": {}, \"value\": {}}}",
                    json_str(&x.path),
                    json_str(&x.value)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        s.push_str(&format!(
            "{}\n    {{\"name\": {}, \"current\": {}, \"recommended\": {}, \"status\": {}, \"why\": {}, \"apply\": [{fixes}]}}",
            if i == 0 { "" } else { "," },
            json_str(&f.name),
            json_str(&f.current),
            json_str(&f.recommended),
            json_str(f.status.as_str()),
            json_str(&f.why),
        ));
    }
    let count = |st: Status| findings.iter().filter(|f| f.status == st).count();
    s.push_str(&format!(
        "\n  ],\n  \"summary\": {{\"ok\": {}, \"tune\": {}, \"unknown\": {}}}\n}}\n",
        count(Status::Ok),
        count(Status::Tune),
        count(Status::Unknown)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    /// `sluice tune ARGS` through clap, as the binary parses it.
    fn parse(a: &[&str]) -> Result<TuneArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Tune {
            #[command(flatten)]
            args: TuneArgs,
        }
        use clap::Parser;
        Tune::try_parse_from(std::iter::once("tune").chain(a.iter().copied())).map(|t| t.args)
    }

    #[test]
    fn args() {
        let a = parse(&["--check", "--json", "--data-dir", "/d"]).unwrap();
        assert_eq!(
            a,
            TuneArgs {
                check: true,
                apply: false,
                json: true,
                dry_run: false,
                data_dir: Some("/d".into())
            }
        );
        assert_eq!(
            parse(&["--apply", "--dry-run", "--data-dir=x"])
                .unwrap()
                .data_dir
                .as_deref(),
            Some("x")
        );
        assert_eq!(
            parse(&["--help"]).unwrap_err().kind(),
            clap::error::ErrorKind::DisplayHelp
        );
        for bad in [
            &[][..],
            &["--check", "--apply"][..],
            &["--check", "--dry-run"][..],
            &["--apply", "--json"][..],
            &["--check", "--data-dir"][..],
            &["--check", "--data-dir="][..],
            &["--check", "--frobnicate"][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn data_dir_defaults() {
        let h = FakeHost::new();
        assert_eq!(resolve_data_dir(&h, None, "/w"), "/w");
        let h = FakeHost::new().file("/w/sluice-data/x", "");
        assert_eq!(resolve_data_dir(&h, None, "/w"), "/w/sluice-data");
        assert_eq!(resolve_data_dir(&h, Some("d"), "/w/"), "/w/d");
        assert_eq!(resolve_data_dir(&h, Some("./d"), "/w"), "/w/d");
        assert_eq!(resolve_data_dir(&h, Some("."), "/w"), "/w");
        assert_eq!(resolve_data_dir(&h, Some("/abs"), "/w"), "/abs");
    }

    #[test]
    fn wrap_never_exceeds_width() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        let long = "x".repeat(20);
        assert!(wrap(&long, 8).iter().all(|l| l.chars().count() <= 8));
        assert_eq!(wrap("", 10), vec![""]);
    }

    fn finding(name: &str, status: Status) -> Finding {
        Finding {
            name: name.into(),
            current: "a \"quoted\"\nvalue\u{1}".into(),
            recommended: "b".into(),
            status,
            why: "because".into(),
            fixes: vec![],
        }
    }

    #[test]
    fn json_escapes_and_counts() {
        let j = render_json(
            "/d",
            &[finding("x", Status::Ok), finding("y", Status::Unknown)],
        );
        assert!(
            j.contains(r#""current": "a \"quoted\"\nvalue\u0001""#),
            "{j}"
        );
        assert!(j.contains(r#""summary": {"ok": 1, "tune": 0, "unknown": 1}"#));
        // Balanced braces/brackets outside strings: a cheap structural sanity check.
        let mut depth = 0i32;
        let mut in_str = false;
        let mut esc = false;
        for c in j.chars() {
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0);
        }
        assert_eq!(depth, 0);
    }

    #[test]
    fn table_has_every_row_and_reason() {
        let t = render_table(
            "/d",
            &[
                finding("first", Status::Tune),
                finding("second", Status::Ok),
            ],
        );
        assert!(t.contains("first"));
        assert!(t.contains("    why: because"));
        assert!(t.contains("1 ok, 1 to tune, 0 unknown"));
    }
}
