//! `--apply`: performs the fixes the checks attached (the safe sysfs/procfs knobs only), reporting each.
//!
//! The fixes come from the same findings `--check` prints, so only values that were read and
//! understood are ever written. Every write is read back to confirm it took; a failure is
//! reported and the remaining fixes still run.

use std::io::Write;

use crate::checks::{bracketed, Finding, Status};
use crate::host::Host;

/// Result of an apply run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub applied: usize,
    pub failed: usize,
    /// Rows that need tuning but have no safe automatic fix (memlock, clocksource, IRQs...).
    pub manual: usize,
    pub unknown: usize,
}

/// What a knob reads as now, in the form the fix compares against.
fn current_value<H: Host + ?Sized>(h: &H, path: &str, bracketed_list: bool) -> Option<String> {
    let raw = h.read(path)?;
    if bracketed_list {
        bracketed(&raw).map(|(a, _)| a)
    } else {
        Some(raw.trim().to_string())
    }
}

/// Applies (or with `dry_run` only describes) every fix in `findings`. Output errors are
/// ignored: the changes matter more than the log line.
pub fn apply<H: Host + ?Sized>(
    h: &H,
    findings: &[Finding],
    dry_run: bool,
    out: &mut dyn Write,
) -> Summary {
    let mut s = Summary::default();
    for f in findings {
        match f.status {
            Status::Ok => continue,
            Status::Unknown => {
                s.unknown += 1;
                let _ = writeln!(
                    out,
                    "  skip    {}: current value unknown, not touched",
                    f.name
                );
                continue;
            }
            Status::Tune if f.fixes.is_empty() => {
                s.manual += 1;
                let _ = writeln!(
                    out,
                    "  manual  {}: {} -> {} (no safe automatic change; see --check)",
                    f.name, f.current, f.recommended
                );
                continue;
            }
            Status::Tune => {}
        }
        for fix in &f.fixes {
            if dry_run {
                let _ = writeln!(
                    out,
                    "  would   {}: write '{}' to {} (now '{}')",
                    f.name, fix.value, fix.path, fix.before
                );
                s.applied += 1;
                continue;
            }
            match h.write(&fix.path, &fix.value) {
                Err(e) => {
                    s.failed += 1;
                    let _ = writeln!(
                        out,
                        "  FAILED  {}: {}: writing '{}': {e}",
                        f.name, fix.path, fix.value
                    );
                }
                Ok(()) => match current_value(h, &fix.path, fix.bracketed) {
                    Some(now) if now == fix.value => {
                        s.applied += 1;
                        let _ = writeln!(
                            out,
                            "  changed {}: {}: {} -> {}",
                            f.name, fix.path, fix.before, now
                        );
                    }
                    other => {
                        s.failed += 1;
                        let _ = writeln!(
                            out,
                            "  FAILED  {}: {}: wrote '{}' but it reads back '{}'",
                            f.name,
                            fix.path,
                            fix.value,
                            other.unwrap_or_else(|| "unreadable".into())
                        );
                    }
                },
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::Fix;
    use crate::host::FakeHost;

    fn tune(name: &str, path: &str, before: &str, value: &str, bracketed: bool) -> Finding {
        Finding {
            name: name.into(),
            current: before.into(),
            recommended: value.into(),
            status: Status::Tune,
            why: String::new(),
            fixes: vec![Fix {
                path: path.into(),
                before: before.into(),
                value: value.into(),
                bracketed,
            }],
        }
    }

    #[test]
    fn dry_run_writes_nothing() {
        let h = FakeHost::new().file("/proc/sys/vm/swappiness", "60");
        let mut out = Vec::new();
        let s = apply(
            &h,
            &[tune(
                "vm.swappiness",
                "/proc/sys/vm/swappiness",
                "60",
                "1",
                false,
            )],
            true,
            &mut out,
        );
        assert_eq!(s.applied, 1);
        assert!(h.writes.borrow().is_empty());
        assert!(String::from_utf8(out).unwrap().contains("would"));
    }

    #[test]
    fn failures_are_reported_and_the_rest_continue() {
        // The fake's write records but does not change the file, so the read-back of a knob
        // whose file still shows the old value counts as a failure too.
        let mut h = FakeHost::new()
            .file("/a", "1\n")
            .file("/b", "old\n")
            .file("/c", "none [mq-deadline]\n");
        h.files.insert("/c".into(), "[none] mq-deadline\n".into());
        h.failing_writes.insert("/a".into());
        let findings = vec![
            tune("a", "/a", "0", "1", false),
            tune("b", "/b", "old", "new", false),
            tune("c", "/c", "mq-deadline", "none", true),
            Finding {
                name: "m".into(),
                current: "x".into(),
                recommended: "y".into(),
                status: Status::Tune,
                why: String::new(),
                fixes: vec![],
            },
            Finding {
                name: "u".into(),
                current: "unknown".into(),
                recommended: "y".into(),
                status: Status::Unknown,
                why: String::new(),
                fixes: vec![],
            },
        ];
        let mut out = Vec::new();
        let s = apply(&h, &findings, false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            s,
            Summary {
                applied: 1,
                failed: 2,
                manual: 1,
                unknown: 1
            },
            "{text}"
        );
        assert!(text.contains("Permission denied"));
        assert!(text.contains("reads back 'old'"));
        assert!(text.contains("changed c"));
        assert_eq!(
            h.writes.borrow().len(),
            2,
            "b and c were written after a failed"
        );
    }
}
