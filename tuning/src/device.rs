//! Finding the hardware behind the data directory (block devices) and behind the NICs, and their IRQs.
//!
//! The path is: stat the data dir → st_dev → /sys/dev/block/MAJ:MIN → its sysfs directory; a
//! partition's parent directory is the whole disk (queue settings live on the disk), and a
//! device-mapper/md volume also lists the disks under it in `slaves/`, whose queues matter just
//! as much. File systems without a block device of their own (btrfs subvolumes report an
//! anonymous 0:N) are looked up in /proc/self/mountinfo to find their source device.

use crate::host::Host;

/// A whole disk whose queue settings the checks inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name, e.g. "nvme0n1", "vda", "dm-0".
    pub name: String,
    /// Canonical sysfs directory of the disk (holds `queue/`, `device`, `slaves/`).
    pub sys: String,
    /// How we got here, for the report: "partition vda1", "under dm-0", or empty.
    pub via: String,
}

/// One mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: (u32, u32),
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
}

/// Where the data dir lives.
#[derive(Debug, Clone)]
pub struct DataDevice {
    /// The data dir as asked for.
    pub requested: String,
    /// The directory actually stat'ed (the data dir, or its nearest existing ancestor).
    pub probed: String,
    pub dev: Option<(u32, u32)>,
    pub mount: Option<Mount>,
    /// The disks, or why there are none.
    pub disks: Result<Vec<Disk>, String>,
}

/// Parses /proc/self/mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
            let (left, right) = line.split_once(" - ")?;
            let f: Vec<&str> = left.split_whitespace().collect();
            let (maj, min) = f.get(2)?.split_once(':')?;
            let r: Vec<&str> = right.split_whitespace().collect();
            Some(Mount {
                dev: (maj.parse().ok()?, min.parse().ok()?),
                mount_point: unescape_octal(f.get(4)?),
                fs_type: r.first()?.to_string(),
                source: r.get(1).map(|s| unescape_octal(s)).unwrap_or_default(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path`: the one with device `dev` whose mount point is the longest prefix.
fn mount_of(mounts: &[Mount], path: &str, dev: Option<(u32, u32)>) -> Option<Mount> {
    let under = |mp: &str| {
        mp == "/" || path == mp || path.starts_with(&format!("{}/", mp.trim_end_matches('/')))
    };
    mounts
        .iter()
        .filter(|m| under(&m.mount_point))
        .filter(|m| dev.is_none_or(|d| d == m.dev))
        .max_by_key(|m| m.mount_point.len())
        .cloned()
}

fn basename(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

fn dirname(p: &str) -> &str {
    match p.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/",
        Some((d, _)) => d,
        None => p,
    }
}

/// The nearest existing directory at or above `dir` (a data dir that `sluice start` would create).
pub fn existing_ancestor<H: Host + ?Sized>(host: &H, dir: &str) -> String {
    let mut p = dir.trim_end_matches('/').to_string();
    if p.is_empty() {
        return "/".into();
    }
    while !host.exists(&p) {
        let parent = dirname(&p).to_string();
        if parent == p {
            break;
        }
        p = parent;
    }
    p
}

/// Resolves the data dir (absolute path) to its mount and disks.
pub fn data_device<H: Host + ?Sized>(host: &H, dir: &str) -> DataDevice {
    let probed = existing_ancestor(host, dir);
    let dev = host.dev_of(&probed);
    let mounts = host
        .read("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let mount = mount_of(&mounts, &probed, dev);
    let disks = match dev {
        None => Err(format!("cannot stat {probed}")),
        Some(d) => block_dev(host, d, mount.as_ref()).and_then(|d| disks_of(host, d)),
    };
    DataDevice {
        requested: dir.to_string(),
        probed,
        dev,
        mount,
        disks,
    }
}

/// The block device behind st_dev; anonymous devices (major 0) go through the mount's source.
fn block_dev<H: Host + ?Sized>(
    host: &H,
    dev: (u32, u32),
    mount: Option<&Mount>,
) -> Result<(u32, u32), String> {
    if dev.0 != 0 {
        return Ok(dev);
    }
    let Some(m) = mount else {
        return Err(format!(
            "{}:{} is not a block device and no mount matches",
            dev.0, dev.1
        ));
    };
    if m.source.starts_with("/dev/") {
        if let Some(r) = host.rdev_of(&m.source) {
            return Ok(r);
        }
    }
    Err(format!(
        "{} file system from '{}' (device {}:{}) has no block device of its own",
        m.fs_type, m.source, dev.0, dev.1
    ))
}

/// The disk for a block device number, then the disks below it (dm/md `slaves`), deduplicated.
pub fn disks_of<H: Host + ?Sized>(host: &H, dev: (u32, u32)) -> Result<Vec<Disk>, String> {
    let link = format!("/sys/dev/block/{}:{}", dev.0, dev.1);
    let sys = host
        .canonicalize(&link)
        .ok_or_else(|| format!("{link} does not exist"))?;
    let top = whole_disk(host, &sys, String::new());
    let mut out = vec![top];
    // Breadth-first through slaves; depth-bounded because a corrupt sysfs must not loop us.
    let mut i = 0;
    while i < out.len() && out.len() < 32 {
        let parent = out[i].clone();
        for s in host
            .list_dir(&format!("{}/slaves", parent.sys))
            .unwrap_or_default()
        {
            let Some(ssys) = host.canonicalize(&format!("/sys/class/block/{s}")) else {
                continue;
            };
            let d = whole_disk(host, &ssys, format!("under {}", parent.name));
            if !out.iter().any(|o| o.sys == d.sys) {
                out.push(d);
            }
        }
        i += 1;
    }
    Ok(out)
}

fn whole_disk<H: Host + ?Sized>(host: &H, sys: &str, via: String) -> Disk {
    // A partition directory has a `partition` file and sits inside its disk's directory.
    if host.exists(&format!("{sys}/partition")) {
        let disk = dirname(sys).to_string();
        let via = if via.is_empty() {
            format!("partition {}", basename(sys))
        } else {
            format!("{via}, partition {}", basename(sys))
        };
        Disk {
            name: basename(&disk).to_string(),
            sys: disk,
            via,
        }
    } else {
        Disk {
            name: basename(sys).to_string(),
            sys: sys.to_string(),
            via,
        }
    }
}

/// One line of /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    pub irq: u32,
    /// Per-CPU counts, in CPU column order.
    pub counts: Vec<u64>,
    /// The action name(s): the last field, e.g. "nvme0q3", "virtio1-req.0", "eth0-TxRx-2".
    pub name: String,
    /// Everything after the counts (chip, hwirq, type, name) for loose matching.
    pub desc: String,
}

/// Parses /proc/interrupts: returns the CPU column count and the numbered IRQ lines.
pub fn parse_interrupts(text: &str) -> (usize, Vec<IrqLine>) {
    let mut lines = text.lines();
    let ncpu = lines
        .next()
        .map(|h| {
            h.split_whitespace()
                .filter(|w| w.starts_with("CPU"))
                .count()
        })
        .unwrap_or(0);
    let irqs = lines
        .filter_map(|line| {
            let (num, rest) = line.split_once(':')?;
            let irq: u32 = num.trim().parse().ok()?;
            let mut words = rest.split_whitespace().peekable();
            let mut counts = Vec::with_capacity(ncpu);
            while counts.len() < ncpu {
                match words.peek().and_then(|w| w.parse::<u64>().ok()) {
                    Some(c) => {
                        counts.push(c);
                        words.next();
                    }
                    None => break,
                }
            }
            let desc: Vec<&str> = words.collect();
            Some(IrqLine {
                irq,
                counts,
                name: desc.last().map(|s| s.to_string()).unwrap_or_default(),
                desc: desc.join(" "),
            })
        })
        .collect();
    (ncpu, irqs)
}

/// Parses a CPU list ("0-3,8,10-11"); None on anything malformed. Bounded so a garbage range
/// cannot allocate the machine away.
pub fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let s = s.trim();
    let mut out = Vec::new();
    if s.is_empty() {
        return Some(out);
    }
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                a.trim().parse::<usize>().ok()?,
                b.trim().parse::<usize>().ok()?,
            ),
            None => {
                let v = part.parse::<usize>().ok()?;
                (v, v)
            }
        };
        if b < a || b - a > 65536 || out.len() > 65536 {
            return None;
        }
        out.extend(a..=b);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Formats CPUs back into the kernel's compact list form.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut v = cpus.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// An IRQ of a device with its affinity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    pub line: IrqLine,
    /// /proc/irq/N/smp_affinity_list: where the IRQ may be delivered.
    pub affinity: Option<Vec<usize>>,
    /// /proc/irq/N/effective_affinity_list: where the kernel actually routes it (x86 picks one).
    pub effective: Option<Vec<usize>>,
}

/// True when `name` is `hint` or starts with it followed by a non-digit ("nvme0q1" for
/// "nvme0", but not "virtio10-req.0" for "virtio1").
fn name_matches(name: &str, hint: &str) -> bool {
    !hint.is_empty()
        && name.starts_with(hint)
        && !name[hint.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
}

/// "nvme0q0": the admin queue of controller nvme0.
fn is_nvme_admin_queue(name: &str) -> bool {
    name.strip_prefix("nvme")
        .and_then(|r| r.strip_suffix("q0"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The IRQs of the device whose sysfs directory is `dev_sys` (a disk's or NIC's `device`
/// link, canonicalised). Prefers the PCI function's `msi_irqs/` (exact); falls back to
/// /proc/interrupts names that start with one of `hints`.
pub fn device_irqs<H: Host + ?Sized>(
    host: &H,
    dev_sys: Option<&str>,
    hints: &[String],
    table: &[IrqLine],
) -> Vec<Irq> {
    let mut numbers: Vec<u32> = Vec::new();
    let mut hints: Vec<String> = hints.to_vec();
    if let Some(start) = dev_sys {
        // The device node itself is often a child (virtio1 under the PCI function, nvme0 under
        // nvme/ under it); climb a few levels, stopping at the root bus.
        let mut p = start.trim_end_matches('/').to_string();
        hints.push(basename(&p).to_string());
        for _ in 0..4 {
            if let Some(list) = host.list_dir(&format!("{p}/msi_irqs")) {
                numbers = list.iter().filter_map(|n| n.parse().ok()).collect();
                if !numbers.is_empty() {
                    break;
                }
            }
            let b = basename(&p);
            if p == "/sys/devices" || b.starts_with("pci") || p.len() <= 1 {
                break;
            }
            p = dirname(&p).to_string();
        }
    }
    let lines: Vec<&IrqLine> = if numbers.is_empty() {
        table
            .iter()
            .filter(|l| hints.iter().any(|h| name_matches(&l.name, h)))
            .collect()
    } else {
        table.iter().filter(|l| numbers.contains(&l.irq)).collect()
    };
    lines
        .into_iter()
        // virtio's "-config" vector only signals configuration changes and NVMe's queue 0 only
        // carries admin commands; neither is on the I/O path.
        .filter(|l| !l.name.ends_with("-config") && !is_nvme_admin_queue(&l.name))
        .map(|l| Irq {
            line: l.clone(),
            affinity: host
                .read(&format!("/proc/irq/{}/smp_affinity_list", l.irq))
                .and_then(|s| parse_cpu_list(&s)),
            effective: host
                .read(&format!("/proc/irq/{}/effective_affinity_list", l.irq))
                .and_then(|s| parse_cpu_list(&s)),
        })
        .collect()
}

/// Network interfaces backed by a device (skips lo, bridges, veth, ifb: they have no IRQs).
pub fn nics<H: Host + ?Sized>(host: &H) -> Vec<(String, String)> {
    host.list_dir("/sys/class/net")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| {
            let dev = host.canonicalize(&format!("/sys/class/net/{n}/device"))?;
            Some((n, dev))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    #[test]
    fn mountinfo_parses_and_unescapes() {
        let t = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                 30 22 0:27 / /my\\040dir rw - btrfs /dev/sda2 rw\n\
                 garbage line\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, (254, 0));
        assert_eq!(m[1].mount_point, "/my dir");
        assert_eq!(m[1].fs_type, "btrfs");
        assert_eq!(
            mount_of(&m, "/my dir/x", Some((0, 27))).unwrap().source,
            "/dev/sda2"
        );
        assert_eq!(
            mount_of(&m, "/work", Some((254, 0))).unwrap().mount_point,
            "/"
        );
    }

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("0-99999999999"), None);
    }

    #[test]
    fn interrupts_parse_tolerates_odd_lines() {
        let t = "           CPU0       CPU1\n\
                  36:          0     409491 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0\n\
                 NMI:          0          0   Non-maskable interrupts\n\
                 ERR:          0\n\
                  9:   5\n";
        let (n, l) = parse_interrupts(t);
        assert_eq!(n, 2);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].irq, 36);
        assert_eq!(l[0].counts, vec![0, 409491]);
        assert_eq!(l[0].name, "virtio1-req.0");
        assert_eq!(l[1].counts, vec![5]);
        assert_eq!(l[1].name, "");
    }

    #[test]
    fn name_matching_respects_digits() {
        assert!(name_matches("nvme0q1", "nvme0"));
        assert!(name_matches("virtio1-req.0", "virtio1"));
        assert!(!name_matches("virtio10-req.0", "virtio1"));
        assert!(name_matches("eth0-TxRx-3", "eth0"));
        assert!(!name_matches("x", ""));
        assert!(is_nvme_admin_queue("nvme0q0"));
        assert!(!is_nvme_admin_queue("nvme0q10"));
        assert!(!is_nvme_admin_queue("nvmeq0"));
    }

    fn partitioned() -> FakeHost {
        let mut h = FakeHost::new()
            .link(
                "/sys/dev/block/259:1",
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p1",
            )
            .file(
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p1/partition",
                "1",
            )
            .file(
                "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/queue/scheduler",
                "[none]",
            )
            .file("/data/x", "");
        h.devs.insert("/data".into(), (259, 1));
        h
    }

    #[test]
    fn partition_resolves_to_its_disk() {
        let h = partitioned();
        let d = data_device(&h, "/data/sluice-data");
        assert_eq!(d.probed, "/data");
        let disks = d.disks.unwrap();
        assert_eq!(disks.len(), 1);
        assert_eq!(disks[0].name, "nvme0n1");
        assert_eq!(disks[0].via, "partition nvme0n1p1");
    }

    #[test]
    fn dm_lists_its_slaves() {
        let mut h = FakeHost::new()
            .link("/sys/dev/block/253:0", "/sys/devices/virtual/block/dm-0")
            .file("/sys/devices/virtual/block/dm-0/queue/scheduler", "none")
            .file("/sys/devices/virtual/block/dm-0/slaves/sda2", "")
            .link(
                "/sys/class/block/sda2",
                "/sys/devices/pci/host0/block/sda/sda2",
            )
            .file("/sys/devices/pci/host0/block/sda/sda2/partition", "2")
            .file(
                "/sys/devices/pci/host0/block/sda/queue/scheduler",
                "[mq-deadline] none",
            );
        h.devs.insert("/srv".into(), (253, 0));
        let disks = data_device(&h, "/srv").disks.unwrap();
        assert_eq!(
            disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["dm-0", "sda"]
        );
        assert_eq!(disks[1].via, "under dm-0, partition sda2");
    }

    #[test]
    fn anonymous_device_goes_through_mountinfo_or_reports() {
        let mut h = FakeHost::new().file(
            "/proc/self/mountinfo",
            "1 0 0:31 / / rw - overlay overlay rw\n",
        );
        h.devs.insert("/".into(), (0, 31));
        let d = data_device(&h, "/");
        assert!(d.disks.unwrap_err().contains("overlay"));

        let mut h = FakeHost::new()
            .file(
                "/proc/self/mountinfo",
                "1 0 0:31 / / rw - btrfs /dev/sda2 rw\n",
            )
            .link("/sys/dev/block/8:2", "/sys/devices/x/block/sda/sda2")
            .file("/sys/devices/x/block/sda/sda2/partition", "2");
        h.devs.insert("/".into(), (0, 31));
        h.rdevs.insert("/dev/sda2".into(), (8, 2));
        assert_eq!(data_device(&h, "/").disks.unwrap()[0].name, "sda");
    }

    #[test]
    fn missing_sysfs_is_an_error_not_a_panic() {
        let mut h = FakeHost::new();
        h.devs.insert("/".into(), (8, 0));
        assert!(data_device(&h, "/").disks.is_err());
        let h = FakeHost::new();
        assert!(data_device(&h, "relative/dir").disks.is_err());
    }

    #[test]
    fn irqs_found_by_msi_then_by_name() {
        let (_, table) = parse_interrupts(
            "  CPU0 CPU1\n 35: 0 0 PCI-MSIX 0-edge virtio1-config\n 36: 0 9 PCI-MSIX 1-edge virtio1-req.0\n 50: 1 1 PCI-MSIX 1-edge nvme0q1\n",
        );
        let h = FakeHost::new()
            .file("/sys/devices/pci0000:00/0000:00:02.0/msi_irqs/35", "msix")
            .file("/sys/devices/pci0000:00/0000:00:02.0/msi_irqs/36", "msix")
            .file("/sys/devices/pci0000:00/0000:00:02.0/virtio1/vendor", "")
            .file("/proc/irq/36/smp_affinity_list", "0-1\n")
            .file("/proc/irq/36/effective_affinity_list", "1\n");
        let irqs = device_irqs(
            &h,
            Some("/sys/devices/pci0000:00/0000:00:02.0/virtio1"),
            &[],
            &table,
        );
        assert_eq!(irqs.len(), 1, "config vector dropped");
        assert_eq!(irqs[0].affinity, Some(vec![0, 1]));
        assert_eq!(irqs[0].effective, Some(vec![1]));

        let irqs = device_irqs(&h, None, &["nvme0".to_string()], &table);
        assert_eq!(irqs.len(), 1);
        assert_eq!(irqs[0].line.irq, 50);
        assert_eq!(irqs[0].affinity, None);
    }
}
