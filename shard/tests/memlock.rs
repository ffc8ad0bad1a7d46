//! Shards must start, and do DMA IO, when locked memory is scarce (no CAP_IPC_LOCK, tiny RLIMIT_MEMLOCK).
//!
//! Its own test binary (own process) because it changes the process-wide memlock limit. It
//! drops CAP_IPC_LOCK from the test thread only; the shard threads it spawns inherit that, so
//! the kernel charges their io_uring buffer registrations against RLIMIT_MEMLOCK as it would
//! for an unprivileged broker.
#![cfg(not(loom))]

use sluice_shard::{start, ShardConfig, Shutdown};
use sluice_storage::io::{Storage, StorageFile, PAGE_SIZE};

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

/// Removes CAP_IPC_LOCK from the calling thread (effective and permitted).
fn drop_cap_ipc_lock() {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as _LINUX_CAPABILITY_VERSION_3 requires.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; pid 0 is the calling thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

fn set_memlock_soft(bytes: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer / in-pointer.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r), 0);
        r.rlim_cur = bytes.min(r.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_MEMLOCK, &r), 0);
    }
}

fn run_io_on_every_shard(dir: &std::path::Path, io_memory: usize) {
    let dir = dir.to_path_buf();
    let cfg = ShardConfig {
        shards: 2,
        io_memory,
        ..ShardConfig::default()
    };
    let rt = start(cfg, Shutdown::new(), move |ctx| {
        let dir = dir.clone();
        async move {
            let st = ctx.storage();
            let path = dir.join(format!("seg-{}-{}", ctx.shard_id().0, std::process::id()));
            let f = st.open_rw(&path).await.unwrap();
            let mut b = st.alloc_buf(4 * PAGE_SIZE);
            b.as_mut().fill(ctx.shard_id().0 as u8 + 1);
            f.write_at(b, 0).await.unwrap();
            f.fdatasync().await.unwrap();
            let r = f.read_at(100, 10).await.unwrap();
            assert_eq!(&r[..], &[ctx.shard_id().0 as u8 + 1; 10]);
            st.remove(&path).await.unwrap();
        }
    })
    .unwrap_or_else(|e| panic!("shards must start without locked memory: {e}"));
    rt.join().unwrap();
}

#[test]
fn starts_without_locked_memory() {
    drop_cap_ipc_lock();
    let dir = tempfile::tempdir().unwrap();

    // Below glommio's 512 KiB floor: the first executor build fails, the retry path must recover.
    set_memlock_soft(256 << 10);
    run_io_on_every_shard(dir.path(), 8 << 20);

    // A limit smaller than the requested pool: the planner shrinks the pool to fit.
    set_memlock_soft(1 << 20);
    run_io_on_every_shard(dir.path(), 8 << 20);
}
