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

const USAGE: &str = "usage:
  sluice tune --check [--data-dir DIR] [--json]
  sluice tune --apply [--data-dir DIR] [--dry-run]

  --check     report each host setting: current value, recommended value, status, why.
              Read-only; always exits 0 (unreadable settings are reported as unknown).
  --apply     as root, set the safe ones (swappiness, CPU governor, THP, aio-max-nr, the data
              disk's scheduler and nomerges); exits 1 if any change failed.
  --dry-run   with --apply: print what would be written, write nothing (no root needed).
  --data-dir  the broker's data directory (default ./sluice-data, or . if that does not exist).
  --json      with --check: machine-readable output.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Check,
    Apply,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Args {
    mode: Mode,
    json: bool,
    dry_run: bool,
    data_dir: Option<String>,
}

/// Why the arguments were rejected.
#[derive(Debug, PartialEq, Eq)]
enum ArgError {
    Help,
    Bad(String),
}

fn parse_args(args: &[String]) -> Result<Args, ArgError> {
    let mut mode = None;
    let mut json = false;
    let mut dry_run = false;
    let mut data_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let set_mode = |m: Mode, mode: &mut Option<Mode>| match mode {
            Some(prev) if *prev != m => {
                Err(ArgError::Bad("--check and --apply are exclusive".into()))
            }
            _ => {
                *mode = Some(m);
                Ok(())
            }
        };
        match a.as_str() {
            "--check" => set_mode(Mode::Check, &mut mode)?,
            "--apply" => set_mode(Mode::Apply, &mut mode)?,
            "--json" => json = true,
            "--dry-run" => dry_run = true,
            "--data-dir" => match it.next() {
                Some(d) if !d.is_empty() => data_dir = Some(d.clone()),
                _ => return Err(ArgError::Bad("--data-dir needs a value".into())),
            },
            "-h" | "--help" | "help" => return Err(ArgError::Help),
            other => {
                if let Some(d) = other.strip_prefix("--data-dir=") {
                    if d.is_empty() {
                        return Err(ArgError::Bad("--data-dir needs a value".into()));
                    }
                    data_dir = Some(d.to_string());
                } else {
                    return Err(ArgError::Bad(format!("unknown argument {other}")));
                }
            }
        }
    }
    let mode = mode.ok_or_else(|| ArgError::Bad("one of --check or --apply is required".into()))?;
    if json && mode != Mode::Check {
        return Err(ArgError::Bad("--json goes with --check".into()));
    }
    if dry_run && mode != Mode::Apply {
        return Err(ArgError::Bad("--dry-run goes with --apply".into()));
    }
    Ok(Args {
        mode,
        json,
        dry_run,
        data_dir,
    })
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

/// Entry point of `sluice tune`; `args` are the words after `tune`.
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse_args(args) {
        Ok(a) => a,
        Err(ArgError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgError::Bad(msg)) => {
            eprintln!("sluice tune: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let host = RealHost;
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| "/".into());
    let data_dir = resolve_data_dir(&host, args.data_dir.as_deref(), &cwd);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.mode {
        Mode::Check => {
            let findings = checks::run_checks(&host, &data_dir);
            // A closed stdout (e.g. `| head`) must not turn into a failure of the check.
            let _ = if args.json {
                out.write_all(render_json(&data_dir, &findings).as_bytes())
            } else {
                out.write_all(render_table(&data_dir, &findings).as_bytes())
            };
            ExitCode::SUCCESS
        }
        Mode::Apply => {
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

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args() {
        let a = parse_args(&v(&["--check", "--json", "--data-dir", "/d"])).unwrap();
        assert_eq!(
            a,
            Args {
                mode: Mode::Check,
                json: true,
                dry_run: false,
                data_dir: Some("/d".into())
            }
        );
        assert_eq!(
            parse_args(&v(&["--apply", "--dry-run", "--data-dir=x"]))
                .unwrap()
                .data_dir
                .as_deref(),
            Some("x")
        );
        assert_eq!(parse_args(&v(&["--help"])), Err(ArgError::Help));
        for bad in [
            &[][..],
            &["--check", "--apply"][..],
            &["--check", "--dry-run"][..],
            &["--apply", "--json"][..],
            &["--check", "--data-dir"][..],
            &["--check", "--data-dir="][..],
            &["--check", "--frobnicate"][..],
        ] {
            assert!(
                matches!(parse_args(&v(bad)), Err(ArgError::Bad(_))),
                "{bad:?}"
            );
        }
        assert!(parse_args(&v(&["--check", "--check"])).is_ok());
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
