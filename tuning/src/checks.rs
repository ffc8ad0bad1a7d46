//! The checks: pure functions from a `Host`'s readings to `Finding`s (current, recommended, verdict, why).
//!
//! Nothing here touches the machine directly, so the unit tests drive every verdict, including
//! "unknown" for missing or garbled files, through `FakeHost`. A finding may carry `fixes`: the
//! exact sysfs/procfs writes `--apply` would make. Only findings whose current value was read
//! and understood get fixes, which is how `--apply` never touches anything unknown.

use crate::device::{self, Disk, Irq};
use crate::host::Host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Tune,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Tune => "tune",
            Status::Unknown => "unknown",
        }
    }
}

/// One write `--apply` may perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fix {
    pub path: String,
    /// The current value as shown to the user (selected entry for bracketed lists).
    pub before: String,
    pub value: String,
    /// The file lists choices with the active one in brackets ("none [mq-deadline]"), so
    /// reading it back needs `bracketed()` to compare.
    pub bracketed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub name: String,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    pub why: String,
    /// Writes that would bring this to the recommended value; empty unless status is Tune and
    /// the fix is one of the safe ones.
    pub fixes: Vec<Fix>,
}

impl Finding {
    fn new(
        name: &str,
        current: impl Into<String>,
        recommended: &str,
        status: Status,
        why: impl Into<String>,
    ) -> Self {
        Finding {
            name: name.to_string(),
            current: current.into(),
            recommended: recommended.to_string(),
            status,
            why: why.into(),
            fixes: Vec::new(),
        }
    }

    fn unknown(name: &str, recommended: &str, why: impl Into<String>) -> Self {
        Finding::new(name, "unknown", recommended, Status::Unknown, why)
    }
}

/// What glommio locks per shard by default; mirrors shard/src/runtime.rs (IO_MEMORY_DEFAULT
/// and plan_io_memory; this crate does not depend on the runtime). The runtime only budgets HALF the limit for pools (the rest is slack
/// for rings being torn down and other io_uring users of the uid), so the recommendation is
/// twice what is registered.
const RINGS_PER_SHARD: u64 = 3;
const IO_MEMORY_PER_RING: u64 = 32 << 20;
const RING_DEPTH: u64 = 128;
const GLOMMIO_MEMLOCK_FLOOR: u64 = 512 * 1024;
const PAGE: u64 = 4096;
const CAP_IPC_LOCK: u32 = 14;

/// The recommended minimum of fs.aio-max-nr (what rpk's aio_events tuner sets).
pub const AIO_MAX_NR_MIN: u64 = 1_048_576;

fn ring_bytes(depth: u64) -> u64 {
    let round = |b: u64| b.div_ceil(PAGE) * PAGE;
    round(depth * 64) + round(depth * 2 * 16 + depth * 4 + 1024)
}

/// RLIMIT_MEMLOCK a default `sluice start` with `shards` shards wants without CAP_IPC_LOCK.
pub fn memlock_needed(shards: u64) -> u64 {
    2 * shards.max(1) * RINGS_PER_SHARD * (IO_MEMORY_PER_RING + ring_bytes(RING_DEPTH))
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The active entry of a sysfs choice list ("always [madvise] never" → "madvise") and all entries.
pub fn bracketed(s: &str) -> Option<(String, Vec<String>)> {
    let mut active = None;
    let mut all = Vec::new();
    for w in s.split_whitespace() {
        if let Some(inner) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            active = Some(inner.to_string());
            all.push(inner.to_string());
        } else {
            all.push(w.to_string());
        }
    }
    // A single unbracketed entry ("none" on dm devices) is the active one.
    // Only when it looks like a name, so garbage is not mistaken for a setting.
    if active.is_none()
        && all.len() == 1
        && all[0]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        active = Some(all[0].clone());
    }
    active.map(|a| (a, all))
}

fn read_u64<H: Host + ?Sized>(h: &H, path: &str) -> Option<u64> {
    h.read(path)?.trim().parse().ok()
}

/// CapEff from /proc/self/status, bit `cap`.
fn has_capability<H: Host + ?Sized>(h: &H, cap: u32) -> Option<bool> {
    let status = h.read("/proc/self/status")?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    let bits = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(bits & (1u64 << cap) != 0)
}

pub fn check_memlock<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "memlock limit";
    let shards = h.allowed_cpus().unwrap_or(1) as u64;
    let need = memlock_needed(shards);
    let rec = format!("unlimited (>= {} for {shards} shards)", human_bytes(need));
    let Some((soft, hard)) = h.rlimit_memlock() else {
        return Finding::unknown(NAME, &rec, "getrlimit(RLIMIT_MEMLOCK) failed.");
    };
    let cap = has_capability(h, CAP_IPC_LOCK);
    let mut current = format!("soft {soft}, hard {hard}");
    match cap {
        Some(true) => current.push_str("; CAP_IPC_LOCK held"),
        Some(false) => current.push_str("; no CAP_IPC_LOCK"),
        None => current.push_str("; CAP_IPC_LOCK unknown"),
    }
    let base = format!(
        "glommio registers each shard's DMA buffer pool ({} per ring, {RINGS_PER_SHARD} rings) with \
         io_uring, and the kernel charges registrations and rings to RLIMIT_MEMLOCK unless the \
         process has CAP_IPC_LOCK; the shard runtime counts half the limit as usable.",
        human_bytes(IO_MEMORY_PER_RING)
    );
    if cap == Some(true) {
        return Finding::new(
            NAME,
            current,
            &rec,
            Status::Ok,
            format!(
                "{base} This process holds CAP_IPC_LOCK (e.g. runs as root), so the limit is moot here; \
                 a broker run as another user or by a systemd unit without the capability still needs \
                 LimitMEMLOCK=infinity."
            ),
        );
    }
    if soft.at_least(need) {
        return Finding::new(
            NAME,
            current,
            &rec,
            Status::Ok,
            format!("{base} The soft limit covers it."),
        );
    }
    let floor = if soft.at_least(GLOMMIO_MEMLOCK_FLOOR) {
        ""
    } else {
        " Below 512 KiB glommio refuses to start at all unless the hard limit lets the runtime raise it."
    };
    Finding::new(
        NAME,
        current,
        &rec,
        Status::Tune,
        format!(
            "{base} Below the recommendation the pools stay their size but go unregistered (plain \
             rather than fixed-buffer I/O, which pins pages on every write).{floor} Set `memlock unlimited` in \
             /etc/security/limits.conf or LimitMEMLOCK=infinity in the unit; not changed by --apply."
        ),
    )
}

pub fn check_governor<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "cpu governor";
    const WHY: &str = "Frequency governors other than performance raise the clock only after load \
        has been seen; a broker's work arrives in short bursts (request, fsync, ack), which then \
        run at a low clock and show up as tail latency. rpk's cpu tuner sets performance too.";
    let cpus: Vec<String> = h
        .list_dir("/sys/devices/system/cpu")
        .unwrap_or_default()
        .into_iter()
        .filter(|n| {
            n.strip_prefix("cpu")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    let mut groups: Vec<(String, usize)> = Vec::new();
    let mut fixes = Vec::new();
    let mut unreadable = 0;
    for cpu in &cpus {
        let dir = format!("/sys/devices/system/cpu/{cpu}/cpufreq");
        let Some(gov) = h
            .read(&format!("{dir}/scaling_governor"))
            .map(|s| s.trim().to_string())
        else {
            unreadable += 1;
            continue;
        };
        if gov.is_empty() {
            unreadable += 1;
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == gov) {
            Some((_, n)) => *n += 1,
            None => groups.push((gov.clone(), 1)),
        }
        let available = h
            .read(&format!("{dir}/scaling_available_governors"))
            .unwrap_or_default();
        if gov != "performance" && available.split_whitespace().any(|g| g == "performance") {
            fixes.push(Fix {
                path: format!("{dir}/scaling_governor"),
                before: gov,
                value: "performance".into(),
                bracketed: false,
            });
        }
    }
    if groups.is_empty() {
        return Finding::unknown(
            NAME,
            "performance",
            format!(
                "No cpufreq interface (/sys/devices/system/cpu/cpu*/cpufreq) is readable: usual in VMs, \
                 where the hypervisor owns frequency scaling. {WHY}"
            ),
        );
    }
    let total: usize = groups.iter().map(|(_, n)| n).sum();
    let mut current = groups
        .iter()
        .map(|(g, n)| {
            if *n == total && unreadable == 0 {
                format!("{g} (all {n} CPUs)")
            } else {
                format!("{g} x{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    if unreadable > 0 {
        current.push_str(&format!(", unreadable x{unreadable}"));
    }
    let all_perf = groups.iter().all(|(g, _)| g == "performance");
    let status = if !all_perf {
        Status::Tune
    } else if unreadable > 0 {
        Status::Unknown
    } else {
        Status::Ok
    };
    let mut f = Finding::new(NAME, current, "performance", status, WHY);
    if status == Status::Tune {
        f.fixes = fixes;
    }
    f
}

pub fn check_thp<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "transparent hugepages";
    const PATH: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    const WHY: &str = "madvise gives huge pages to memory that asks for them (MADV_HUGEPAGE) and \
        leaves the rest alone. With always, khugepaged and fault-time compaction work on the whole \
        heap: small allocations get bloated to 2 MiB and page faults can stall on compaction. \
        never also refuses memory that asks. sluice itself opts its process out under any setting \
        (PR_SET_THP_DISABLE at start): its allocator asks for huge pages, and faulting them in \
        (zeroing 2 MiB each) held its shards for up to seconds \
        (perf/results/2026-12-04-no-transparent-huge-pages.md); this setting is for the rest of \
        the host. (Redpanda's tuner enables THP because Seastar preallocates all of its memory \
        and wants it huge-page backed.)";
    let Some(raw) = h.read(PATH) else {
        return Finding::unknown(
            NAME,
            "madvise",
            format!("{PATH} is not readable (kernel without THP?). {WHY}"),
        );
    };
    let Some((active, all)) = bracketed(&raw) else {
        return Finding::unknown(
            NAME,
            "madvise",
            format!("{PATH} has unexpected content. {WHY}"),
        );
    };
    let mut current = active.clone();
    if let Some((defrag, _)) = h
        .read("/sys/kernel/mm/transparent_hugepage/defrag")
        .and_then(|d| bracketed(&d))
    {
        current.push_str(&format!(" (defrag {defrag})"));
    }
    if active == "madvise" {
        return Finding::new(NAME, current, "madvise", Status::Ok, WHY);
    }
    let mut f = Finding::new(NAME, current, "madvise", Status::Tune, WHY);
    if all.iter().any(|a| a == "madvise") {
        f.fixes.push(Fix {
            path: PATH.into(),
            before: active,
            value: "madvise".into(),
            bracketed: true,
        });
    }
    f
}

pub fn check_swappiness<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "vm.swappiness";
    const PATH: &str = "/proc/sys/vm/swappiness";
    const WHY: &str = "The broker's hot memory (indexes, buffers, metadata) must stay resident: \
        swapping it turns a memory access on the request path into a disk read. A high swappiness \
        makes the kernel swap anonymous memory rather than drop page cache. 1 (not 0) still lets \
        swap act as a last resort before the OOM killer.";
    let Some(v) = read_u64(h, PATH) else {
        return Finding::unknown(
            NAME,
            "1",
            format!("{PATH} is missing or not a number. {WHY}"),
        );
    };
    let swaps = h
        .read("/proc/swaps")
        .map(|s| s.lines().skip(1).filter(|l| !l.trim().is_empty()).count());
    let current = match swaps {
        Some(0) => format!("{v} (no swap active)"),
        Some(n) => format!("{v} ({n} swap device{})", if n == 1 { "" } else { "s" }),
        None => v.to_string(),
    };
    if v <= 1 {
        return Finding::new(NAME, current, "1", Status::Ok, WHY);
    }
    let mut f = Finding::new(NAME, current, "1", Status::Tune, WHY);
    f.fixes.push(Fix {
        path: PATH.into(),
        before: v.to_string(),
        value: "1".into(),
        bracketed: false,
    });
    f
}

pub fn check_aio<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "fs.aio-max-nr";
    const PATH: &str = "/proc/sys/fs/aio-max-nr";
    let rec = format!(">= {AIO_MAX_NR_MIN}");
    const WHY: &str = "System-wide cap on Linux AIO events; io_setup fails with EAGAIN once all \
        processes together reach it. glommio submits through io_uring, which is not counted here, \
        so this protects the other AIO users on the host (Seastar/Redpanda, ScyllaDB, fio's libaio \
        engine); rpk's aio_events tuner raises it for the same reason.";
    let Some(v) = read_u64(h, PATH) else {
        return Finding::unknown(
            NAME,
            &rec,
            format!("{PATH} is missing or not a number. {WHY}"),
        );
    };
    let current = match read_u64(h, "/proc/sys/fs/aio-nr") {
        Some(used) => format!("{v} ({used} in use)"),
        None => v.to_string(),
    };
    if v >= AIO_MAX_NR_MIN {
        return Finding::new(NAME, current, &rec, Status::Ok, WHY);
    }
    let mut f = Finding::new(NAME, current, &rec, Status::Tune, WHY);
    f.fixes.push(Fix {
        path: PATH.into(),
        before: v.to_string(),
        value: AIO_MAX_NR_MIN.to_string(),
        bracketed: false,
    });
    f
}

/// Kernel version as (major, minor) from "6.8.0-45-generic".
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_kernel<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "kernel";
    const WHY: &str = "glommio needs io_uring features from Linux 5.8 (and the broker relies on \
        O_DIRECT + io_uring for storage); newer kernels also make io_uring faster.";
    let Some(rel) = h.read("/proc/sys/kernel/osrelease") else {
        return Finding::unknown(
            NAME,
            ">= 5.8",
            format!("/proc/sys/kernel/osrelease unreadable. {WHY}"),
        );
    };
    let rel = rel.trim().to_string();
    match kernel_version(&rel) {
        None => Finding::new(
            NAME,
            rel,
            ">= 5.8",
            Status::Unknown,
            format!("Unparseable release. {WHY}"),
        ),
        Some(v) if v >= (5, 8) => Finding::new(NAME, rel, ">= 5.8", Status::Ok, WHY),
        Some(_) => Finding::new(NAME, rel, ">= 5.8", Status::Tune, WHY),
    }
}

pub fn check_io_uring_disabled<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "kernel.io_uring_disabled";
    const PATH: &str = "/proc/sys/kernel/io_uring_disabled";
    const WHY: &str =
        "Every shard does its disk and network I/O through io_uring: 0 allows it for \
        everyone, 1 only for CAP_SYS_ADMIN or members of kernel.io_uring_group, 2 for nobody. Not \
        changed by --apply (a deliberate security policy on some hosts).";
    match h.read(PATH) {
        None => {
            if h.read("/proc/sys/kernel/osrelease").is_some() {
                Finding::new(
                    NAME,
                    "absent (kernel < 6.6)",
                    "0",
                    Status::Ok,
                    format!("The knob does not exist on this kernel, so io_uring is not restricted by sysctl. {WHY}"),
                )
            } else {
                Finding::unknown(NAME, "0", format!("/proc/sys is not readable. {WHY}"))
            }
        }
        Some(raw) => match raw.trim() {
            "0" => Finding::new(NAME, "0", "0", Status::Ok, WHY),
            "1" => {
                let root = h.is_root();
                Finding::new(
                    NAME,
                    "1",
                    "0",
                    if root { Status::Ok } else { Status::Tune },
                    format!(
                        "{WHY} This process {} privileged.",
                        if root {
                            "is root, so it is"
                        } else {
                            "is not root, so unless it is in kernel.io_uring_group it is not"
                        }
                    ),
                )
            }
            "2" => Finding::new(NAME, "2", "0", Status::Tune, WHY),
            other => Finding::new(
                NAME,
                other,
                "0",
                Status::Unknown,
                format!("Unexpected value. {WHY}"),
            ),
        },
    }
}

pub fn check_io_uring_setup<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "io_uring_setup";
    const WHY: &str = "A one-entry ring created and closed right away: proves this process may \
        use io_uring at all (kernel support, sysctl, seccomp of a container runtime, memlock). \
        Without it sluice cannot start.";
    match h.io_uring_probe() {
        Ok(()) => Finding::new(NAME, "works", "works", Status::Ok, WHY),
        Err(e) => Finding::new(NAME, format!("fails: {e}"), "works", Status::Tune, WHY),
    }
}

pub fn check_clocksource<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "clocksource";
    const DIR: &str = "/sys/devices/system/clocksource/clocksource0";
    const WHY: &str = "The broker reads the clock on every request (timeouts, timestamps, latency \
        accounting) and glommio's scheduler reads it for preemption. tsc is read in user space by \
        the vDSO in nanoseconds; hpet or acpi_pm force a system call and a slow device read. Not \
        changed by --apply: the kernel falls back from tsc when it judged it unstable, and forcing \
        it back can give wrong time.";
    let Some(cur) = h
        .read(&format!("{DIR}/current_clocksource"))
        .map(|s| s.trim().to_string())
    else {
        return Finding::unknown(
            NAME,
            "tsc",
            format!("current_clocksource is not readable. {WHY}"),
        );
    };
    if cur.is_empty() {
        return Finding::unknown(NAME, "tsc", WHY);
    }
    let available = h
        .read(&format!("{DIR}/available_clocksource"))
        .unwrap_or_default();
    let tsc_available = available.split_whitespace().any(|c| c == "tsc");
    if cur == "tsc" {
        return Finding::new(NAME, cur, "tsc", Status::Ok, WHY);
    }
    if !tsc_available && !available.trim().is_empty() {
        // arm64's arch_sys_counter, or a VM without a usable TSC: the best this host has.
        return Finding::new(
            NAME,
            cur.clone(),
            "tsc",
            Status::Ok,
            format!(
                "tsc is not offered here ({}); {cur} is the best available. {WHY}",
                available.trim()
            ),
        );
    }
    Finding::new(NAME, cur, "tsc", Status::Tune, WHY)
}

/// Whether the disk is a virtual one whose `rotational` flag says nothing about the backing store.
fn is_virtual_disk(name: &str) -> bool {
    name.starts_with("vd")
        || name.starts_with("xvd")
        || name.starts_with("dm-")
        || name.starts_with("md")
}

fn is_flash(disk: &Disk, rotational: Option<u64>) -> bool {
    disk.name.starts_with("nvme") || is_virtual_disk(&disk.name) || rotational == Some(0)
}

pub fn check_data_device(dd: &device::DataDevice) -> Finding {
    const NAME: &str = "data dir device";
    const REC: &str = "local NVMe/SSD";
    const WHY: &str = "The device whose queue settings the following rows check: the data dir's \
        file system device, the whole disk for a partition, and the disks under a dm/md volume.";
    let mut where_ = dd.probed.clone();
    if dd.requested.trim_end_matches('/') != dd.probed.trim_end_matches('/') {
        where_ = format!(
            "{} (does not exist yet; checked {})",
            dd.requested, dd.probed
        );
    }
    if let Some(m) = &dd.mount {
        where_.push_str(&format!(
            " ({} {} on {})",
            m.fs_type, m.source, m.mount_point
        ));
    }
    match &dd.disks {
        Ok(disks) => {
            let list = disks
                .iter()
                .map(|d| {
                    if d.via.is_empty() {
                        d.name.clone()
                    } else {
                        format!("{} ({})", d.name, d.via)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let dev = dd.dev.map(|(a, b)| format!(" {a}:{b}")).unwrap_or_default();
            Finding::new(
                NAME,
                format!("{where_} ->{dev} {list}"),
                REC,
                Status::Ok,
                WHY,
            )
        }
        Err(e) => Finding::new(
            NAME,
            format!("{where_}: {e}"),
            REC,
            Status::Unknown,
            format!("{WHY} Disk rows are skipped."),
        ),
    }
}

pub fn check_scheduler<H: Host + ?Sized>(h: &H, disk: &Disk) -> Finding {
    let name = format!("scheduler ({})", disk.name);
    let path = format!("{}/queue/scheduler", disk.sys);
    let rot = read_u64(h, &format!("{}/queue/rotational", disk.sys));
    let rec = if is_flash(disk, rot) {
        "none"
    } else {
        "mq-deadline"
    };
    let why = if rec == "none" {
        "NVMe and virtio devices order and parallelise requests themselves (for virtio the host \
         schedules again); an I/O scheduler only adds a lock and per-request CPU on the submission \
         path and may reorder sluice's sequential appends. none hands requests straight to the \
         hardware queues (rpk sets none/noop as well)."
    } else {
        "A spinning disk benefits from sorting requests to save seeks, and mq-deadline bounds how \
         long a write may wait; none would let a stream of reads starve the log's fsyncs."
    };
    let Some(raw) = h.read(&path) else {
        return Finding::unknown(&name, rec, format!("{path} is not readable. {why}"));
    };
    let Some((active, all)) = bracketed(&raw) else {
        return Finding::unknown(&name, rec, format!("{path} has unexpected content. {why}"));
    };
    if active == rec {
        return Finding::new(&name, active, rec, Status::Ok, why);
    }
    let mut f = Finding::new(&name, active.clone(), rec, Status::Tune, why);
    if all.iter().any(|a| a == rec) {
        f.fixes.push(Fix {
            path,
            before: active,
            value: rec.into(),
            bracketed: true,
        });
    } else {
        f.why = format!(
            "{why} ({rec} is not offered by this kernel: {}.)",
            all.join(" ")
        );
    }
    f
}

pub fn check_nomerges<H: Host + ?Sized>(h: &H, disk: &Disk) -> Finding {
    let name = format!("nomerges ({})", disk.name);
    let path = format!("{}/queue/nomerges", disk.sys);
    let rot = read_u64(h, &format!("{}/queue/rotational", disk.sys));
    let flash = is_flash(disk, rot);
    let rec = if flash { "2" } else { "0" };
    let why = if flash {
        "sluice writes large, aligned O_DIRECT chunks, so the block layer finds little to merge, \
         and looking costs CPU on every request; 2 turns merge lookups off entirely (rpk does the same). \
         0 = all merges, 1 = only simple one-hit merges."
    } else {
        "On a spinning disk merging adjacent requests saves seeks; keep merges on (0)."
    };
    let Some(v) = read_u64(h, &path) else {
        return Finding::unknown(
            &name,
            rec,
            format!("{path} is missing or not a number. {why}"),
        );
    };
    if v.to_string() == rec {
        return Finding::new(&name, v.to_string(), rec, Status::Ok, why);
    }
    let mut f = Finding::new(&name, v.to_string(), rec, Status::Tune, why);
    if v <= 2 {
        f.fixes.push(Fix {
            path,
            before: v.to_string(),
            value: rec.into(),
            bracketed: false,
        });
    }
    f
}

pub fn check_write_cache<H: Host + ?Sized>(h: &H, disk: &Disk) -> Finding {
    let name = format!("write cache ({})", disk.name);
    let path = format!("{}/queue/write_cache", disk.sys);
    const REC: &str = "as reported (never override)";
    const NEVER: &str = "Never write \"write through\" into this file to speed things up: it only \
        tells the kernel to stop sending flushes, and acknowledged records can then vanish on power \
        loss. Not changed by --apply.";
    let Some(raw) = h.read(&path) else {
        return Finding::unknown(&name, REC, format!("{path} is not readable. {NEVER}"));
    };
    match raw.trim() {
        "write back" => Finding::new(
            &name,
            "write back",
            REC,
            Status::Ok,
            format!(
                "The device has a volatile write cache: a completed write may still sit in device RAM, \
                 so every fdatasync makes the kernel send a cache flush (or FUA write), and waiting for \
                 it is most of fdatasync's latency. sluice's durable acks depend on that flush. \
                 Drives with power-loss protection report write through instead. {NEVER}"
            ),
        ),
        "write through" => Finding::new(
            &name,
            "write through",
            REC,
            Status::Ok,
            format!(
                "The device reports no volatile cache (or one protected against power loss): a \
                 completed write is durable, so fdatasync needs no flush command and is cheap. If \
                 someone forced this on a drive that does cache, durability is gone; check the \
                 drive's spec. {NEVER}"
            ),
        ),
        other => Finding::new(&name, other, REC, Status::Unknown, format!("Unexpected value. {NEVER}")),
    }
}

pub fn check_rotational<H: Host + ?Sized>(h: &H, disk: &Disk) -> Finding {
    let name = format!("rotational ({})", disk.name);
    let path = format!("{}/queue/rotational", disk.sys);
    const REC: &str = "0 (SSD/NVMe)";
    const WHY: &str = "sluice targets flash: on a spinning disk each fsync waits for a seek and \
        rotation, which caps durable acks at a few hundred per second.";
    match read_u64(h, &path) {
        None => Finding::unknown(
            &name,
            REC,
            format!("{path} is missing or not a number. {WHY}"),
        ),
        Some(0) => Finding::new(&name, "0", REC, Status::Ok, WHY),
        Some(1) if is_virtual_disk(&disk.name) => Finding::new(
            &name,
            "1",
            REC,
            Status::Ok,
            format!(
                "{WHY} {} is a virtual disk, which reports 1 by default whatever backs it; the \
                 flag only steers kernel heuristics, so check the backing storage instead.",
                disk.name
            ),
        ),
        Some(v) => Finding::new(&name, v.to_string(), REC, Status::Tune, WHY),
    }
}

/// Is irqbalance running, and does its config ban any CPUs from balancing?
pub fn check_irqbalance<H: Host + ?Sized>(h: &H) -> Finding {
    const NAME: &str = "irqbalance";
    const REC: &str = "stopped, or shard CPUs banned";
    const WHY: &str = "irqbalance moves IRQs between CPUs every few seconds by load, so an IRQ \
        kept off a shard core can land back on it. rpk stops it or bans the tuned CPUs \
        (IRQBALANCE_BANNED_CPULIST in /etc/default/irqbalance or /etc/sysconfig/irqbalance).";
    let Some(pids) = h.list_dir("/proc") else {
        return Finding::unknown(NAME, REC, format!("/proc is not listable. {WHY}"));
    };
    let running = pids
        .iter()
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .any(|p| {
            h.read(&format!("/proc/{p}/comm"))
                .is_some_and(|c| c.trim() == "irqbalance")
        });
    if !running {
        return Finding::new(
            NAME,
            "not running",
            REC,
            Status::Ok,
            format!("{WHY} IRQs stay where they are set."),
        );
    }
    let banned = ["/etc/default/irqbalance", "/etc/sysconfig/irqbalance"]
        .iter()
        .filter_map(|p| h.read(p))
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .find_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (k.trim().starts_with("IRQBALANCE_BANNED_CPU") && !v.is_empty())
                .then(|| format!("{}={v}", k.trim()))
        });
    match banned {
        Some(b) => Finding::new(NAME, format!("running, {b}"), REC, Status::Ok, WHY),
        None => Finding::new(
            NAME,
            "running, no CPUs banned",
            REC,
            Status::Tune,
            format!("{WHY} Not changed by --apply."),
        ),
    }
}

/// The IRQ affinity verdict for one device's IRQs.
pub fn check_irqs(name: &str, irqs: &[Irq], ncpus: usize) -> Finding {
    let rec = if ncpus <= 4 {
        "pinned, one queue per CPU (rpk mq)".to_string()
    } else {
        "pinned to CPUs outside the shard set (rpk sq/sq_split)".to_string()
    };
    let why = "Each interrupt runs its handler, plus softirq work (network receive, block \
        completion), on the CPU it is delivered to; a shard core that also takes a busy device's \
        IRQs is preempted at random, which shows as tail latency. With every core running a shard \
        (few CPUs), spread the IRQs one per core so each shard pays for its own traffic; with \
        spare cores, run --shards N below the CPU count and pin IRQs to the rest (shard i runs on \
        the i-th allowed CPU, so the spare ones are the highest). Not changed by --apply.";
    if irqs.is_empty() {
        return Finding::unknown(
            name,
            &rec,
            format!("No IRQs found for it in /proc/interrupts (shared controller, polled device, or /proc/irq hidden). {why}"),
        );
    }
    let known: Vec<&Irq> = irqs.iter().filter(|i| i.affinity.is_some()).collect();
    let shown: Vec<String> = irqs
        .iter()
        .take(3)
        .map(|i| {
            let aff = i
                .affinity
                .as_deref()
                .map(device::format_cpu_list)
                .unwrap_or_else(|| "?".into());
            let mut s = format!("{} {} -> {aff}", i.line.irq, i.line.name);
            if let Some(eff) = &i.effective {
                if i.affinity.as_deref() != Some(eff.as_slice()) {
                    s.push_str(&format!(" (eff {})", device::format_cpu_list(eff)));
                }
            }
            s
        })
        .collect();
    let mut current = shown.join("; ");
    if irqs.len() > 3 {
        current.push_str(&format!("; +{} more", irqs.len() - 3));
    }
    if known.is_empty() {
        return Finding::new(
            name,
            current,
            &rec,
            Status::Unknown,
            format!("/proc/irq/N/smp_affinity_list is not readable. {why}"),
        );
    }
    if ncpus <= 1 {
        return Finding::new(
            name,
            current,
            &rec,
            Status::Ok,
            format!("Only one CPU: nothing to place. {why}"),
        );
    }
    let unpinned = known
        .iter()
        .filter(|i| i.affinity.as_ref().is_some_and(|a| a.len() > 1))
        .count();
    let targets: std::collections::BTreeSet<usize> = known
        .iter()
        .filter_map(|i| i.affinity.as_ref().filter(|a| a.len() == 1).map(|a| a[0]))
        .collect();
    // Which CPUs actually took the interrupts so far.
    let mut per_cpu = vec![0u64; ncpus];
    for i in irqs {
        for (c, n) in i.line.counts.iter().enumerate() {
            if let Some(slot) = per_cpu.get_mut(c) {
                *slot = slot.saturating_add(*n);
            }
        }
    }
    let busy: Vec<usize> = (0..ncpus).filter(|&c| per_cpu[c] > 0).collect();
    if !busy.is_empty() {
        current.push_str(&format!(
            " [fired on cpu {}]",
            device::format_cpu_list(&busy)
        ));
    }
    // Kernel-managed multi-queue IRQs (NVMe, some NICs) each serve a disjoint group of CPUs
    // and cannot be moved: that is already "one queue per CPU group", the best there is.
    let disjoint_groups = known.len() > 1 && {
        let mut seen = std::collections::BTreeSet::new();
        known
            .iter()
            .flat_map(|i| i.affinity.iter().flatten())
            .all(|c| seen.insert(*c))
    };
    if unpinned > 0 && disjoint_groups {
        return Finding::new(
            name,
            current,
            &rec,
            Status::Ok,
            format!(
                "Each queue's IRQ serves its own disjoint group of CPUs (the kernel's managed spreading \
                 when there are fewer queues than CPUs). {why}"
            ),
        );
    }
    if unpinned > 0 {
        return Finding::new(
            name,
            current,
            &rec,
            Status::Tune,
            format!(
                "{unpinned} of {} IRQs may go to several CPUs: the kernel picks one when the IRQ is set \
                 up and irqbalance or CPU hotplug may move it later, so nothing keeps it off a shard. {why}",
                irqs.len()
            ),
        );
    }
    if known.len() > 1 && targets.len() == 1 && ncpus <= 4 {
        return Finding::new(
            name,
            current,
            &rec,
            Status::Tune,
            format!("All {} queues are pinned to one CPU, which then does all of the device's interrupt work. {why}", known.len()),
        );
    }
    Finding::new(
        name,
        current,
        &rec,
        Status::Ok,
        format!("Every IRQ is pinned to a single CPU. {why}"),
    )
}

/// All checks for a data dir (absolute path), in report order.
pub fn run_checks<H: Host + ?Sized>(h: &H, data_dir: &str) -> Vec<Finding> {
    let mut out = vec![
        check_kernel(h),
        check_memlock(h),
        check_governor(h),
        check_thp(h),
        check_swappiness(h),
        check_aio(h),
        check_io_uring_disabled(h),
        check_io_uring_setup(h),
        check_clocksource(h),
    ];
    let dd = device::data_device(h, data_dir);
    out.push(check_data_device(&dd));
    let disks = dd.disks.clone().unwrap_or_default();
    for d in &disks {
        out.push(check_scheduler(h, d));
        out.push(check_nomerges(h, d));
        out.push(check_write_cache(h, d));
        out.push(check_rotational(h, d));
    }
    let (cols, table) = h
        .read("/proc/interrupts")
        .map(|t| device::parse_interrupts(&t))
        .unwrap_or((0, Vec::new()));
    let ncpus = if cols > 0 {
        cols
    } else {
        h.allowed_cpus().unwrap_or(1)
    };
    for d in &disks {
        // dm/md volumes have no IRQs of their own; their slaves are listed separately.
        if d.name.starts_with("dm-") || d.name.starts_with("md") {
            continue;
        }
        let dev = h.canonicalize(&format!("{}/device", d.sys));
        let irqs = device::device_irqs(h, dev.as_deref(), std::slice::from_ref(&d.name), &table);
        out.push(check_irqs(
            &format!("irq affinity (disk {})", d.name),
            &irqs,
            ncpus,
        ));
    }
    let nics = device::nics(h);
    if nics.is_empty() {
        // Still a row, so a host with hidden /sys/class/net does not look IRQ-clean.
        out.push(check_irqs("irq affinity (nics)", &[], ncpus));
    }
    for (nic, dev) in nics {
        let irqs = device::device_irqs(h, Some(&dev), std::slice::from_ref(&nic), &table);
        out.push(check_irqs(
            &format!("irq affinity (nic {nic})"),
            &irqs,
            ncpus,
        ));
    }
    out.push(check_irqbalance(h));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FakeHost, Limit};

    fn disk(name: &str) -> Disk {
        Disk {
            name: name.into(),
            sys: format!("/sys/block/{name}"),
            via: String::new(),
        }
    }

    #[test]
    fn bracketed_lists() {
        assert_eq!(bracketed("always [madvise] never\n").unwrap().0, "madvise");
        assert_eq!(bracketed("none").unwrap().0, "none");
        assert!(bracketed("a b").is_none());
        assert!(bracketed("").is_none());
    }

    #[test]
    fn memlock_verdicts() {
        let need = memlock_needed(4);
        // 4 shards x 3 rings x (32 MiB + 16 KiB) x 2
        assert_eq!(need, 2 * 4 * 3 * ((32 << 20) + 16384));
        let mut h =
            FakeHost::new().file("/proc/self/status", "Name:\tx\nCapEff:\t0000000000000000\n");
        h.cpus = Some(4);
        assert_eq!(check_memlock(&h).status, Status::Unknown);
        h.memlock = Some((Limit::Bytes(8 << 20), Limit::Bytes(8 << 20)));
        let f = check_memlock(&h);
        assert_eq!(f.status, Status::Tune);
        assert!(f.fixes.is_empty(), "limits are not a sysfs knob");
        h.memlock = Some((Limit::Bytes(need), Limit::Infinite));
        assert_eq!(check_memlock(&h).status, Status::Ok);
        h.memlock = Some((Limit::Infinite, Limit::Infinite));
        assert_eq!(check_memlock(&h).status, Status::Ok);
        // CAP_IPC_LOCK (bit 14) makes even a tiny limit fine.
        let mut h = FakeHost::new().file("/proc/self/status", "CapEff:\t0000000000004000\n");
        h.memlock = Some((Limit::Bytes(65536), Limit::Bytes(65536)));
        let f = check_memlock(&h);
        assert_eq!(f.status, Status::Ok);
        assert!(f.current.contains("CAP_IPC_LOCK held"), "{}", f.current);
        // Garbled status: capability unknown, judged on the limit alone.
        let mut h = FakeHost::new().file("/proc/self/status", "CapEff:\tzz\n");
        h.memlock = Some((Limit::Bytes(65536), Limit::Bytes(65536)));
        let f = check_memlock(&h);
        assert_eq!(f.status, Status::Tune);
        assert!(f.why.contains("512 KiB"));
    }

    #[test]
    fn governor_verdicts() {
        assert_eq!(check_governor(&FakeHost::new()).status, Status::Unknown);
        let h = FakeHost::new()
            .file(
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "powersave\n",
            )
            .file(
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_available_governors",
                "performance powersave\n",
            )
            .file(
                "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
                "performance\n",
            )
            .file(
                "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
                "powersave\n",
            )
            .file("/sys/devices/system/cpu/cpufreq/policy0/x", "")
            .file("/sys/devices/system/cpu/online", "0-2");
        let f = check_governor(&h);
        assert_eq!(f.status, Status::Tune);
        assert_eq!(f.current, "powersave x2, performance x1");
        // cpu2 does not list performance as available: never written.
        assert_eq!(f.fixes.len(), 1);
        assert_eq!(
            f.fixes[0].path,
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
        );
        let h = FakeHost::new()
            .file(
                "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
                "performance\n",
            )
            .file(
                "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
                "performance\n",
            );
        let f = check_governor(&h);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.current, "performance (all 2 CPUs)");
    }

    #[test]
    fn thp_verdicts() {
        const P: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
        assert_eq!(check_thp(&FakeHost::new()).status, Status::Unknown);
        assert_eq!(
            check_thp(&FakeHost::new().file(P, "???")).status,
            Status::Unknown
        );
        assert_eq!(
            check_thp(&FakeHost::new().file(P, "always [madvise] never\n")).status,
            Status::Ok
        );
        let f = check_thp(&FakeHost::new().file(P, "[always] madvise never\n"));
        assert_eq!(f.status, Status::Tune);
        assert_eq!(f.fixes[0].value, "madvise");
        assert!(f.fixes[0].bracketed);
        let f = check_thp(&FakeHost::new().file(P, "[always] never\n"));
        assert_eq!(f.status, Status::Tune);
        assert!(f.fixes.is_empty(), "madvise not offered: nothing to write");
    }

    #[test]
    fn swappiness_and_aio_verdicts() {
        assert_eq!(check_swappiness(&FakeHost::new()).status, Status::Unknown);
        assert_eq!(
            check_swappiness(&FakeHost::new().file("/proc/sys/vm/swappiness", "sixty")).status,
            Status::Unknown
        );
        let f = check_swappiness(
            &FakeHost::new()
                .file("/proc/sys/vm/swappiness", "60\n")
                .file("/proc/swaps", "Filename Type Size Used Priority\n"),
        );
        assert_eq!(f.status, Status::Tune);
        assert_eq!(f.current, "60 (no swap active)");
        assert_eq!(f.fixes[0].value, "1");
        assert_eq!(
            check_swappiness(&FakeHost::new().file("/proc/sys/vm/swappiness", "0")).status,
            Status::Ok
        );

        assert_eq!(check_aio(&FakeHost::new()).status, Status::Unknown);
        let f = check_aio(
            &FakeHost::new()
                .file("/proc/sys/fs/aio-max-nr", "65536\n")
                .file("/proc/sys/fs/aio-nr", "12\n"),
        );
        assert_eq!(f.status, Status::Tune);
        assert_eq!(f.current, "65536 (12 in use)");
        assert_eq!(f.fixes[0].value, "1048576");
        assert_eq!(
            check_aio(&FakeHost::new().file("/proc/sys/fs/aio-max-nr", "1048576")).status,
            Status::Ok
        );
    }

    #[test]
    fn io_uring_verdicts() {
        let h = FakeHost::new().file("/proc/sys/kernel/osrelease", "5.15.0\n");
        let f = check_io_uring_disabled(&h);
        assert_eq!(
            (f.status, f.current.as_str()),
            (Status::Ok, "absent (kernel < 6.6)")
        );
        assert_eq!(
            check_io_uring_disabled(&FakeHost::new()).status,
            Status::Unknown
        );
        let h = FakeHost::new().file("/proc/sys/kernel/io_uring_disabled", "2\n");
        assert_eq!(check_io_uring_disabled(&h).status, Status::Tune);
        let mut h = FakeHost::new().file("/proc/sys/kernel/io_uring_disabled", "1\n");
        assert_eq!(check_io_uring_disabled(&h).status, Status::Tune);
        h.root = true;
        assert_eq!(check_io_uring_disabled(&h).status, Status::Ok);
        let h = FakeHost::new().file("/proc/sys/kernel/io_uring_disabled", "7");
        assert_eq!(check_io_uring_disabled(&h).status, Status::Unknown);

        let mut h = FakeHost::new();
        h.uring = Some(Err("io_uring_setup: EPERM".into()));
        let f = check_io_uring_setup(&h);
        assert_eq!(f.status, Status::Tune);
        assert!(f.current.contains("EPERM"));
        h.uring = Some(Ok(()));
        assert_eq!(check_io_uring_setup(&h).status, Status::Ok);
    }

    #[test]
    fn kernel_and_clocksource_verdicts() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("5.4"), Some((5, 4)));
        assert_eq!(kernel_version("weird"), None);
        let k =
            |r: &str| check_kernel(&FakeHost::new().file("/proc/sys/kernel/osrelease", r)).status;
        assert_eq!(k("5.4.0-1"), Status::Tune);
        assert_eq!(k("5.8.0"), Status::Ok);
        assert_eq!(k("x"), Status::Unknown);

        const D: &str = "/sys/devices/system/clocksource/clocksource0";
        assert_eq!(check_clocksource(&FakeHost::new()).status, Status::Unknown);
        let cs = |cur: &str, avail: &str| {
            check_clocksource(
                &FakeHost::new()
                    .file(&format!("{D}/current_clocksource"), cur)
                    .file(&format!("{D}/available_clocksource"), avail),
            )
        };
        assert_eq!(cs("tsc\n", "tsc hpet\n").status, Status::Ok);
        let f = cs("hpet\n", "tsc hpet acpi_pm\n");
        assert_eq!(f.status, Status::Tune);
        assert!(f.fixes.is_empty(), "clocksource is never auto-applied");
        assert_eq!(
            cs("arch_sys_counter\n", "arch_sys_counter\n").status,
            Status::Ok
        );
    }

    #[test]
    fn disk_queue_verdicts() {
        let nvme = disk("nvme0n1");
        let h = FakeHost::new()
            .file(
                "/sys/block/nvme0n1/queue/scheduler",
                "[mq-deadline] kyber none\n",
            )
            .file("/sys/block/nvme0n1/queue/nomerges", "0\n")
            .file("/sys/block/nvme0n1/queue/rotational", "0\n")
            .file("/sys/block/nvme0n1/queue/write_cache", "write back\n");
        let f = check_scheduler(&h, &nvme);
        assert_eq!(
            (f.status, f.current.as_str(), f.recommended.as_str()),
            (Status::Tune, "mq-deadline", "none")
        );
        assert_eq!(f.fixes[0].path, "/sys/block/nvme0n1/queue/scheduler");
        let f = check_nomerges(&h, &nvme);
        assert_eq!((f.status, f.fixes[0].value.as_str()), (Status::Tune, "2"));
        let f = check_write_cache(&h, &nvme);
        assert_eq!(f.status, Status::Ok);
        assert!(f.why.contains("flush"));
        assert!(f.fixes.is_empty());
        assert_eq!(check_rotational(&h, &nvme).status, Status::Ok);

        // Spinning SATA disk: deadline and merges are right.
        let sda = disk("sda");
        let h = FakeHost::new()
            .file("/sys/block/sda/queue/scheduler", "[mq-deadline] none\n")
            .file("/sys/block/sda/queue/nomerges", "0\n")
            .file("/sys/block/sda/queue/rotational", "1\n")
            .file("/sys/block/sda/queue/write_cache", "write through\n");
        assert_eq!(check_scheduler(&h, &sda).status, Status::Ok);
        assert_eq!(check_nomerges(&h, &sda).status, Status::Ok);
        assert_eq!(check_rotational(&h, &sda).status, Status::Tune);
        assert!(check_write_cache(&h, &sda).why.contains("cheap"));

        // virtio reports rotational 1 by default: not held against it.
        let vda = disk("vda");
        let h = FakeHost::new()
            .file("/sys/block/vda/queue/rotational", "1\n")
            .file("/sys/block/vda/queue/scheduler", "[bfq]\n");
        assert_eq!(check_rotational(&h, &vda).status, Status::Ok);
        let f = check_scheduler(&h, &vda);
        assert_eq!(f.status, Status::Tune);
        assert!(f.fixes.is_empty(), "none not offered");

        // Everything missing → unknown, no fixes.
        let h = FakeHost::new();
        for f in [
            check_scheduler(&h, &vda),
            check_nomerges(&h, &vda),
            check_write_cache(&h, &vda),
            check_rotational(&h, &vda),
        ] {
            assert_eq!(f.status, Status::Unknown, "{}", f.name);
            assert!(f.fixes.is_empty());
        }
        let h = FakeHost::new().file("/sys/block/vda/queue/nomerges", "9");
        assert!(
            check_nomerges(&h, &vda).fixes.is_empty(),
            "out-of-range value is not touched"
        );
    }

    fn irq(n: u32, counts: &[u64], aff: Option<&str>) -> Irq {
        Irq {
            line: device::IrqLine {
                irq: n,
                counts: counts.to_vec(),
                name: format!("q{n}"),
                desc: String::new(),
            },
            affinity: aff.and_then(device::parse_cpu_list),
            effective: None,
        }
    }

    #[test]
    fn irq_verdicts() {
        assert_eq!(check_irqs("x", &[], 4).status, Status::Unknown);
        assert_eq!(
            check_irqs("x", &[irq(1, &[1, 0], None)], 2).status,
            Status::Unknown
        );
        let f = check_irqs("x", &[irq(1, &[0, 5], Some("0-1"))], 2);
        assert_eq!(f.status, Status::Tune);
        assert!(f.current.contains("fired on cpu 1"), "{}", f.current);
        assert_eq!(
            check_irqs("x", &[irq(1, &[0, 5], Some("1"))], 2).status,
            Status::Ok
        );
        let spread = [irq(1, &[1, 0], Some("0")), irq(2, &[0, 1], Some("1"))];
        assert_eq!(check_irqs("x", &spread, 2).status, Status::Ok);
        let piled = [irq(1, &[1, 0], Some("0")), irq(2, &[1, 0], Some("0"))];
        assert_eq!(check_irqs("x", &piled, 2).status, Status::Tune);
        assert_eq!(
            check_irqs("x", &[irq(1, &[1], Some("0"))], 1).status,
            Status::Ok
        );
        let managed = [
            irq(1, &[1, 0, 0, 0], Some("0-1")),
            irq(2, &[0, 0, 1, 0], Some("2-3")),
        ];
        assert_eq!(check_irqs("x", &managed, 4).status, Status::Ok);
        let overlapping = [
            irq(1, &[1, 0, 0, 0], Some("0-2")),
            irq(2, &[0, 0, 1, 0], Some("2-3")),
        ];
        assert_eq!(check_irqs("x", &overlapping, 4).status, Status::Tune);
        let many: Vec<Irq> = (0..6).map(|i| irq(i, &[1], Some("0"))).collect();
        assert!(check_irqs("x", &many, 8).current.contains("+3 more"));
    }

    #[test]
    fn irqbalance_verdicts() {
        let h = FakeHost::new()
            .file("/proc/1/comm", "init\n")
            .file("/proc/self/status", "");
        assert_eq!(check_irqbalance(&h).status, Status::Ok);
        let h = FakeHost::new()
            .file("/proc/1/comm", "init\n")
            .file("/proc/77/comm", "irqbalance\n");
        assert_eq!(check_irqbalance(&h).status, Status::Tune);
        let h = FakeHost::new().file("/proc/77/comm", "irqbalance\n").file(
            "/etc/default/irqbalance",
            "#IRQBALANCE_BANNED_CPULIST=\nIRQBALANCE_BANNED_CPULIST=\"0-3\"\n",
        );
        let f = check_irqbalance(&h);
        assert_eq!(f.status, Status::Ok);
        assert!(f.current.contains("0-3"));
        assert_eq!(check_irqbalance(&FakeHost::new()).status, Status::Unknown);
    }

    /// A whole fake host shaped like a small virtio VM: every row is produced, none panics, and
    /// only safe knobs carry fixes.
    #[test]
    fn full_run_on_fake_vm() {
        let mut h = FakeHost::new()
            .file("/proc/sys/kernel/osrelease", "6.8.0\n")
            .file("/proc/self/status", "CapEff:\t0\n")
            .file("/sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n")
            .file("/proc/sys/vm/swappiness", "60\n")
            .file("/proc/sys/fs/aio-max-nr", "65536\n")
            .file("/proc/sys/kernel/io_uring_disabled", "0\n")
            .file("/sys/devices/system/clocksource/clocksource0/current_clocksource", "kvm-clock\n")
            .file("/sys/devices/system/clocksource/clocksource0/available_clocksource", "kvm-clock tsc\n")
            .link("/sys/dev/block/254:0", "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda")
            .link("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/device", "/sys/devices/pci0000:00/0000:00:02.0/virtio1")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/scheduler", "none [mq-deadline]\n")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/nomerges", "0\n")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/rotational", "1\n")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/write_cache", "write back\n")
            .file("/sys/devices/pci0000:00/0000:00:02.0/msi_irqs/36", "msix")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/vendor", "x")
            .link("/sys/class/net/eth0", "/sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0")
            .link("/sys/class/net/lo", "/sys/devices/virtual/net/lo")
            .file("/sys/devices/virtual/net/lo/address", "00")
            .link("/sys/devices/pci0000:00/0000:00:03.0/virtio2/net/eth0/device", "/sys/devices/pci0000:00/0000:00:03.0/virtio2")
            .file("/sys/devices/pci0000:00/0000:00:03.0/virtio2/vendor", "x")
            .file("/proc/interrupts", "  CPU0 CPU1\n 36: 0 9 PCI-MSIX 1-edge virtio1-req.0\n 38: 3 0 PCI-MSIX 1-edge virtio2-input.0\n")
            .file("/proc/irq/36/smp_affinity_list", "0-1\n")
            .file("/proc/irq/38/smp_affinity_list", "0\n")
            .file("/proc/1/comm", "init\n");
        h.devs.insert("/data".into(), (254, 0));
        h.memlock = Some((Limit::Bytes(8 << 20), Limit::Bytes(8 << 20)));
        h.cpus = Some(2);
        h.uring = Some(Ok(()));
        let fs = run_checks(&h, "/data");
        let get = |n: &str| {
            fs.iter()
                .find(|f| f.name == n)
                .unwrap_or_else(|| panic!("no {n}: {fs:#?}"))
        };
        assert_eq!(get("scheduler (vda)").status, Status::Tune);
        assert_eq!(get("irq affinity (disk vda)").status, Status::Tune);
        assert_eq!(get("irq affinity (nic eth0)").status, Status::Ok);
        assert!(fs.iter().all(|f| !f.name.contains("(nic lo)")));
        assert_eq!(get("clocksource").status, Status::Tune);
        assert_eq!(get("cpu governor").status, Status::Unknown);
        let mut paths: Vec<&str> = fs
            .iter()
            .flat_map(|f| f.fixes.iter().map(|x| x.path.as_str()))
            .collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/proc/sys/fs/aio-max-nr",
                "/proc/sys/vm/swappiness",
                "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/nomerges",
                "/sys/devices/pci0000:00/0000:00:02.0/virtio1/block/vda/queue/scheduler",
                "/sys/kernel/mm/transparent_hugepage/enabled",
            ]
        );
        for f in &fs {
            if f.status != Status::Tune {
                assert!(
                    f.fixes.is_empty(),
                    "{} has fixes but is {:?}",
                    f.name,
                    f.status
                );
            }
        }
    }

    /// An empty host (nothing readable) yields only unknowns and no fixes, and never panics.
    #[test]
    fn empty_host_is_all_unknown() {
        let mut h = FakeHost::new();
        // The probe is a syscall, not a reading; let it succeed so only readings are judged.
        h.uring = Some(Ok(()));
        let fs = run_checks(&h, "/nowhere");
        for f in &fs {
            assert!(f.fixes.is_empty());
            assert_ne!(f.status, Status::Tune, "{} judged without readings", f.name);
        }
    }
}
