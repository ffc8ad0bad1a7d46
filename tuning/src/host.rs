//! What the checks may ask of a machine (`Host`), the real machine (`RealHost`), and a fake one for tests.
//!
//! Every reading is optional: a missing file, a permission error, odd content or a syscall that
//! does not exist all come back as `None`/`Err`, and the checks turn that into "unknown". That
//! is what makes `--check` safe to run anywhere, including containers with a partial /sys.

/// A resource limit value; the kernel's RLIM_INFINITY is kept apart so nobody compares it as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Infinite,
    Bytes(u64),
}

impl Limit {
    /// True when the limit allows at least `bytes`.
    pub fn at_least(self, bytes: u64) -> bool {
        match self {
            Limit::Infinite => true,
            Limit::Bytes(b) => b >= bytes,
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Infinite => f.write_str("unlimited"),
            Limit::Bytes(b) => f.write_str(&crate::checks::human_bytes(*b)),
        }
    }
}

/// The readings the checks (and the applier) need. Paths are absolute strings on purpose: the
/// fake host is a map keyed by them, and sysfs names are always valid UTF-8.
pub trait Host {
    /// Contents of a file, or None when it does not exist or cannot be read.
    fn read(&self, path: &str) -> Option<String>;
    /// Names of the entries of a directory, sorted; None when it cannot be listed.
    fn list_dir(&self, path: &str) -> Option<Vec<String>>;
    /// The path with every symlink resolved (sysfs device links), or None.
    fn canonicalize(&self, path: &str) -> Option<String>;
    /// (major, minor) of the device holding the file system `path` lives on.
    fn dev_of(&self, path: &str) -> Option<(u32, u32)>;
    /// (major, minor) a device node (e.g. /dev/sda1) refers to.
    fn rdev_of(&self, path: &str) -> Option<(u32, u32)>;
    /// Does `path` exist (file or directory)?
    fn exists(&self, path: &str) -> bool;
    /// Soft and hard RLIMIT_MEMLOCK of this process.
    fn rlimit_memlock(&self) -> Option<(Limit, Limit)>;
    /// Effective uid is 0.
    fn is_root(&self) -> bool;
    /// CPUs this process may run on: the broker starts one shard per allowed CPU by default.
    fn allowed_cpus(&self) -> Option<usize>;
    /// Creates (and immediately closes) a one-entry io_uring; Err carries the reason.
    fn io_uring_probe(&self) -> Result<(), String>;
    /// Writes `value` to a sysfs/procfs file. Only `--apply` without `--dry-run` calls this.
    fn write(&self, path: &str, value: &str) -> Result<(), String>;
}

/// The machine this process runs on.
pub struct RealHost;

/// Splits a Linux `dev_t` the way glibc's major()/minor() do (12+20 bit layout with the high
/// bits spread out), kept as a pure function so it is testable without a device.
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

impl Host for RealHost {
    fn read(&self, path: &str) -> Option<String> {
        // Lossy on purpose: a stray non-UTF-8 byte in some driver's name must not hide the rest.
        std::fs::read(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn list_dir(&self, path: &str) -> Option<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Some(names)
    }

    fn canonicalize(&self, path: &str) -> Option<String> {
        std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.into_os_string().into_string().ok())
    }

    fn dev_of(&self, path: &str) -> Option<(u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| split_dev(m.dev()))
    }

    fn rdev_of(&self, path: &str) -> Option<(u32, u32)> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path).ok()?;
        m.file_type().is_block_device().then(|| split_dev(m.rdev()))
    }

    fn exists(&self, path: &str) -> bool {
        std::path::Path::new(path).exists()
    }

    fn rlimit_memlock(&self) -> Option<(Limit, Limit)> {
        let rl = rustix::process::getrlimit(rustix::process::Resource::Memlock);
        // `None` is unlimited.
        let conv = |v: Option<u64>| v.map_or(Limit::Infinite, Limit::Bytes);
        Some((conv(rl.current), conv(rl.maximum)))
    }

    fn is_root(&self) -> bool {
        rustix::process::geteuid().is_root()
    }

    fn allowed_cpus(&self) -> Option<usize> {
        // Same source the shard runtime uses (sched_getaffinity), so the memlock budget is
        // computed for the shard count a default `sluice start` would pick here.
        let set = rustix::thread::sched_getaffinity(None).ok()?;
        let n = set.count() as usize;
        (n > 0).then_some(n)
    }

    fn io_uring_probe(&self) -> Result<(), String> {
        io_uring_probe()
    }

    fn write(&self, path: &str, value: &str) -> Result<(), String> {
        use std::io::Write;
        // No create/truncate semantics matter for sysfs, but never create a file that is not
        // there: the applier only writes knobs it has just read.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| e.to_string())?;
        f.write_all(value.as_bytes()).map_err(|e| e.to_string())
    }
}

#[cfg(target_os = "linux")]
fn io_uring_probe() -> Result<(), String> {
    // struct io_uring_params: 10 u32 fields, then two 40-byte offset structs = 120 bytes, all
    // zero on input. Declared here rather than pulled from a crate: we need nothing but the size.
    #[repr(C, align(8))]
    struct Params([u32; 30]);
    let mut params = Params([0; 30]);
    // SAFETY: io_uring_setup reads/writes exactly one io_uring_params at the pointer we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1u32,
            &mut params as *mut Params as *mut libc::c_void,
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::ENOSYS) => "io_uring_setup: ENOSYS (kernel built without io_uring)".into(),
            Some(libc::EPERM) => {
                "io_uring_setup: EPERM (disabled by kernel.io_uring_disabled or a seccomp policy)"
                    .into()
            }
            Some(libc::ENOMEM) => {
                "io_uring_setup: ENOMEM (RLIMIT_MEMLOCK too small for even one ring)".into()
            }
            _ => format!("io_uring_setup: {err}"),
        });
    }
    // SAFETY: fd is a descriptor we just received and own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn io_uring_probe() -> Result<(), String> {
    Err("io_uring exists only on Linux".into())
}

/// An in-memory host for tests: files are a path → content map, directories are implied by the
/// files below them, symlinks are a path-prefix rewrite table.
#[cfg(test)]
#[derive(Default)]
pub struct FakeHost {
    pub files: std::collections::BTreeMap<String, String>,
    /// Exact-prefix symlinks: "/sys/dev/block/8:1" → "/sys/devices/.../sda/sda1".
    pub links: std::collections::BTreeMap<String, String>,
    pub devs: std::collections::BTreeMap<String, (u32, u32)>,
    pub rdevs: std::collections::BTreeMap<String, (u32, u32)>,
    pub memlock: Option<(Limit, Limit)>,
    pub root: bool,
    pub cpus: Option<usize>,
    pub uring: Option<Result<(), String>>,
    pub writes: std::cell::RefCell<Vec<(String, String)>>,
    /// Paths whose write fails, to test that the applier carries on.
    pub failing_writes: std::collections::BTreeSet<String>,
}

#[cfg(test)]
impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn file(mut self, path: &str, content: &str) -> Self {
        self.files.insert(path.to_string(), content.to_string());
        self
    }
    pub fn link(mut self, from: &str, to: &str) -> Self {
        self.links.insert(from.to_string(), to.to_string());
        self
    }
    fn resolve(&self, path: &str) -> String {
        // Longest matching link prefix wins, applied repeatedly (bounded, links may chain).
        let mut p = path.trim_end_matches('/').to_string();
        for _ in 0..8 {
            let hit = self
                .links
                .iter()
                .filter(|(from, _)| p == **from || p.starts_with(&format!("{from}/")))
                .max_by_key(|(from, _)| from.len());
            match hit {
                Some((from, to)) => p = format!("{to}{}", &p[from.len()..]),
                None => break,
            }
        }
        // Normalise ".." the way the kernel's link targets need it.
        let mut parts: Vec<&str> = Vec::new();
        for seg in p.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
impl Host for FakeHost {
    fn read(&self, path: &str) -> Option<String> {
        self.files.get(&self.resolve(path)).cloned()
    }
    fn list_dir(&self, path: &str) -> Option<Vec<String>> {
        let dir = self.resolve(path);
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter_map(|rest| rest.split('/').next())
            .map(str::to_string)
            .collect();
        // Links whose source sits directly in this directory are entries too (/sys/class/net/eth0).
        names.extend(
            self.links
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter(|rest| !rest.contains('/'))
                .map(str::to_string),
        );
        names.sort();
        names.dedup();
        (!names.is_empty()).then_some(names)
    }
    fn canonicalize(&self, path: &str) -> Option<String> {
        let p = self.resolve(path);
        self.exists(&p).then_some(p)
    }
    fn dev_of(&self, path: &str) -> Option<(u32, u32)> {
        self.devs.get(path).copied()
    }
    fn rdev_of(&self, path: &str) -> Option<(u32, u32)> {
        self.rdevs.get(path).copied()
    }
    fn exists(&self, path: &str) -> bool {
        let p = self.resolve(path);
        let prefix = format!("{}/", p.trim_end_matches('/'));
        self.files.contains_key(&p)
            || self.files.keys().any(|k| k.starts_with(&prefix))
            || self.devs.contains_key(path)
    }
    fn rlimit_memlock(&self) -> Option<(Limit, Limit)> {
        self.memlock
    }
    fn is_root(&self) -> bool {
        self.root
    }
    fn allowed_cpus(&self) -> Option<usize> {
        self.cpus
    }
    fn io_uring_probe(&self) -> Result<(), String> {
        self.uring
            .clone()
            .unwrap_or_else(|| Err("not probed".into()))
    }
    fn write(&self, path: &str, value: &str) -> Result<(), String> {
        if self.failing_writes.contains(path) {
            return Err("Permission denied (os error 13)".into());
        }
        self.writes
            .borrow_mut()
            .push((path.to_string(), value.to_string()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_dev_matches_glibc_layout() {
        assert_eq!(split_dev(0xfe00), (254, 0));
        assert_eq!(split_dev(0x0801), (8, 1));
        // nvme: major 259, minor 3 → dev_t 0x10303
        assert_eq!(split_dev(0x10303), (259, 3));
        // Large minor spills into the high bits.
        assert_eq!(split_dev((1 << 20) | (0x12 << 8) | 0x34), (0x12, 0x134));
    }

    #[test]
    fn fake_links_resolve_and_list() {
        let h = FakeHost::new()
            .file("/sys/devices/pci/block/sda/queue/scheduler", "x")
            .link("/sys/block/sda", "/sys/devices/pci/block/sda")
            .link("/sys/class/net/eth0", "/sys/devices/pci/net/eth0")
            .file("/sys/devices/pci/net/eth0/address", "aa");
        assert_eq!(
            h.read("/sys/block/sda/queue/scheduler").as_deref(),
            Some("x")
        );
        assert_eq!(
            h.canonicalize("/sys/block/sda/queue/../queue").as_deref(),
            Some("/sys/devices/pci/block/sda/queue")
        );
        assert_eq!(h.list_dir("/sys/class/net"), Some(vec!["eth0".to_string()]));
        assert!(h.list_dir("/nope").is_none());
    }
}
