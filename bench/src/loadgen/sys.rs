//! Host facts the generator needs to judge its own results: wall clock in ns, CPU pinning,
//! process CPU time, host-wide CPU busy time, another process's CPU time and affinity.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock ns since the epoch. Wall clock, not `Instant`, because the timestamp travels
/// inside the record to a consumer that may live in another process.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Parses a CPU list such as `0`, `1,3` or `0-1`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("--cpus {s:?}: want a list like 0 or 1,3 or 0-1");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b || b >= 1024 {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => {
                let c: usize = part.parse().map_err(|_| bad())?;
                if c >= 1024 {
                    return Err(bad());
                }
                out.push(c);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("--cpus {s:?}: empty"));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Pins the calling thread (and so every thread it starts later, librdkafka's included) to
/// `cpus`. Called first thing in `main`, before any thread exists.
pub fn pin_self(cpus: &[usize]) -> Result<(), String> {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        // parse_cpu_list keeps every CPU below 1024, CpuSet's size.
        set.set(c);
    }
    rustix::thread::sched_setaffinity(None, &set)
        .map_err(|e| format!("sched_setaffinity({cpus:?}): {e}"))
}

/// CPUs a process (0 = this one) may run on.
pub fn affinity(pid: i32) -> Vec<usize> {
    let pid = rustix::process::Pid::from_raw(pid);
    match rustix::thread::sched_getaffinity(pid) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// User+system CPU seconds used so far by this process (all threads).
pub fn process_cpu_s() -> f64 {
    cpu_clock_s(rustix::time::ClockId::ProcessCPUTime)
}

/// User+system CPU seconds used so far by the calling thread.
pub fn thread_cpu_s() -> f64 {
    cpu_clock_s(rustix::time::ClockId::ThreadCPUTime)
}

fn cpu_clock_s(clock: rustix::time::ClockId) -> f64 {
    let t = rustix::time::clock_gettime(clock);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

fn clock_ticks() -> f64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100.0,
        t => t as f64,
    }
}

/// CPU seconds used so far by process `pid` (from /proc/PID/stat), if it exists.
pub fn pid_cpu_s(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / clock_ticks())
}

/// Host-wide (busy, total) CPU jiffies from /proc/stat, to tell whether the machine as a whole
/// (broker + generator + anything else) ran out of CPU.
pub fn host_cpu_jiffies() -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = s.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait are not busy.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn host_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(affinity_all_count())
}

/// CPUs online (`/sys/devices/system/cpu/online`, a CPU list), whatever this process's
/// affinity; 1 when unreadable.
fn affinity_all_count() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()).ok())
        .map_or(1, |cpus| cpus.len())
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_facts_read_back_sensibly() {
        let mine = affinity(0);
        assert!(!mine.is_empty(), "this process may run somewhere");
        assert!(host_cpus() >= mine.len());
        // Pinning to the CPUs already allowed changes nothing and succeeds.
        pin_self(&mine).unwrap();
        assert_eq!(affinity(0), mine);
        let me = std::process::id() as i32;
        assert_eq!(affinity(me), mine);
        let (p0, t0) = (process_cpu_s(), thread_cpu_s());
        let mut x = 0u64;
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(
            thread_cpu_s() > t0 && process_cpu_s() > p0,
            "CPU time moves"
        );
        assert!(process_cpu_s() >= thread_cpu_s());
        assert!(pid_cpu_s(me).is_some_and(|s| s >= 0.0));
        assert!(clock_ticks() > 0.0);
    }
}
