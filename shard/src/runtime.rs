//! Thread-per-core runtime: one pinned glommio executor per shard, its task queues, and the join handle.
//!
//! `start` spawns one OS thread per shard. Each thread builds its own `LocalExecutor` (pinned
//! to one CPU when asked), reports back, and only runs the caller's future once EVERY shard
//! has built its executor; if any failed, all are told to stand down and `start` returns the
//! error. That barrier keeps a half-started runtime from ever serving traffic.
//!
//! Locked memory: glommio registers its DMA buffer pool (`io_memory`) with each of its three
//! io_uring rings, and for a process without CAP_IPC_LOCK the kernel charges every
//! registration against RLIMIT_MEMLOCK, summed over all shards. When the pool does not fit
//! that budget we keep its size and let registration fail (glommio then uses the pool as
//! plain memory, with ordinary rather than fixed-buffer IO): the pool's size matters more
//! than registration (see `plan_io_memory`). If building an executor still fails we retry
//! once with the smallest pool and ring (raising the soft memlock limit to the hard limit
//! first, since glommio refuses to start below 512 KiB). Either event is logged once per process.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::sync::Once;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use glommio::{Latency, LocalExecutor, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use crate::dma::DmaStorage;
use crate::error::ShardError;
use crate::kick::{Kicker, KICK_INTERVAL};
use crate::mesh::{self, LinkEnds, Mesh, MeshLimits};
use crate::shutdown::Shutdown;
use crate::table::{ShardId, SHARDS_MAX};

/// Largest accepted `mesh_queue_depth_max`: each directed link preallocates this many slots.
pub const MESH_QUEUE_DEPTH_LIMIT: usize = 1 << 16;
/// Default DMA pool per shard. 8 and 16 MiB left the log's durable append throughput at
/// 0.71-0.74 of raw O_DIRECT bandwidth (1 MiB batches, 8 in flight: buffers spilled to the
/// heap); 32 MiB gave 0.93, as did 64 MiB (`sluice-storage-bench --seconds 1 --rounds 12`).
pub const IO_MEMORY_DEFAULT: usize = 32 << 20;
/// Largest accepted `ring_depth` (io_uring submission queue entries per ring).
pub const RING_DEPTH_LIMIT: usize = 4096;
/// Ring depth used by the fallback configuration.
const FALLBACK_RING_DEPTH: usize = 32;
/// Attempts of the fallback configuration, and the backoff unit between them.
const FALLBACK_ATTEMPTS: u32 = 4;
const FALLBACK_BACKOFF: Duration = Duration::from_millis(50);
/// Rings per glommio executor that each register the DMA pool (main, latency, poll).
const RINGS_PER_SHARD: usize = 3;
/// glommio will not build an executor when RLIMIT_MEMLOCK is below this.
const GLOMMIO_MEMLOCK_FLOOR: u64 = 512 * 1024;

/// Relative CPU shares of the three task queues (glommio clamps shares to 1..=1000).
#[derive(Debug, Clone, Copy)]
pub struct QueueShares {
    pub produce: usize,
    pub fetch: usize,
    pub background: usize,
}

impl Default for QueueShares {
    fn default() -> Self {
        // Background work (retention, compaction) gets a tenth of a foreground queue's share,
        // so under contention it cannot starve produce or fetch, yet it still progresses.
        QueueShares {
            produce: 1000,
            fetch: 1000,
            background: 100,
        }
    }
}

/// How to start the shards.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of shards (threads). Default: the CPUs this process may run on.
    pub shards: usize,
    /// Pin shard `i` to allowed CPU `i % cpus`.
    pub pin: bool,
    /// Thread name prefix; shard threads are `{name}-{id}`.
    pub name: String,
    /// Capacity of each directed mesh link (each call class's requests and the replies each
    /// have their own).
    pub mesh_queue_depth_max: usize,
    /// General-class calls one shard may have waiting for replies at once; further callers
    /// wait for a slot.
    pub pending_calls_max: usize,
    /// General-class handler tasks one shard runs concurrently for frames from peers; beyond
    /// this the mesh stops draining those request links, so senders feel backpressure.
    pub handlers_inflight_max: usize,
    /// As `pending_calls_max`, for [`crate::mesh::CallClass::Parked`] calls (requests that may
    /// wait long, e.g. for a rebalance).
    pub parked_calls_max: usize,
    /// As `handlers_inflight_max`, for [`crate::mesh::CallClass::Parked`] handlers.
    pub parked_handlers_inflight_max: usize,
    /// Bytes of glommio DMA buffer pool per shard. Every write buffer of the partition logs
    /// comes from it while it has room: it must hold the writes in flight (a flush of up to
    /// `WRITE_BUFFER_GROWN_BYTES_MAX` chunks, several at once), else buffers come from the
    /// heap and each write pays fresh page faults. Registered with io_uring when memlock allows.
    pub io_memory: usize,
    /// io_uring submission depth per ring.
    pub ring_depth: usize,
    pub shares: QueueShares,
    /// Latency goal of the produce and fetch queues (drives glommio's preemption).
    pub latency: Duration,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            shards: allowed_cpus().len().max(1),
            pin: true,
            name: "sluice-shard".into(),
            mesh_queue_depth_max: 256,
            pending_calls_max: 4096,
            handlers_inflight_max: 1024,
            parked_calls_max: 4096,
            parked_handlers_inflight_max: 1024,
            io_memory: IO_MEMORY_DEFAULT,
            ring_depth: 128,
            shares: QueueShares::default(),
            latency: Duration::from_millis(5),
        }
    }
}

impl ShardConfig {
    fn validate(&self) -> Result<(), ShardError> {
        let bad = |field: &'static str, reason: String| Err(ShardError::Config { field, reason });
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return bad(
                "shards",
                format!("{} is outside 1..={SHARDS_MAX}", self.shards),
            );
        }
        if self.mesh_queue_depth_max == 0 || self.mesh_queue_depth_max > MESH_QUEUE_DEPTH_LIMIT {
            return bad(
                "mesh_queue_depth_max",
                format!(
                    "{} is outside 1..={MESH_QUEUE_DEPTH_LIMIT}",
                    self.mesh_queue_depth_max
                ),
            );
        }
        if self.pending_calls_max == 0 {
            return bad("pending_calls_max", "must be at least 1".into());
        }
        if self.handlers_inflight_max == 0 {
            return bad("handlers_inflight_max", "must be at least 1".into());
        }
        if self.parked_calls_max == 0 {
            return bad("parked_calls_max", "must be at least 1".into());
        }
        if self.parked_handlers_inflight_max == 0 {
            return bad("parked_handlers_inflight_max", "must be at least 1".into());
        }
        if self.ring_depth == 0 || self.ring_depth > RING_DEPTH_LIMIT {
            return bad(
                "ring_depth",
                format!("{} is outside 1..={RING_DEPTH_LIMIT}", self.ring_depth),
            );
        }
        for (field, v) in [
            ("shares.produce", self.shares.produce),
            ("shares.fetch", self.shares.fetch),
            ("shares.background", self.shares.background),
        ] {
            if !(1..=1000).contains(&v) {
                return bad(field, format!("{v} is outside 1..=1000"));
            }
        }
        if self.latency.is_zero() {
            return bad("latency", "must be positive".into());
        }
        Ok(())
    }
}

/// Which task queue a piece of work belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueKind {
    /// Appends: latency matters.
    Produce,
    /// Reads: latency matters.
    Fetch,
    /// Retention, compaction, flushing: throughput only, small share.
    Background,
}

impl QueueKind {
    pub fn name(self) -> &'static str {
        match self {
            QueueKind::Produce => "produce",
            QueueKind::Fetch => "fetch",
            QueueKind::Background => "background",
        }
    }
}

/// The glommio task queues of one shard. Owned by that shard; handles are only valid there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queues {
    produce: TaskQueueHandle,
    fetch: TaskQueueHandle,
    background: TaskQueueHandle,
    /// Mesh pumps: tiny, latency-sensitive work (moving frames, completing calls).
    pub(crate) mesh: TaskQueueHandle,
}

impl Queues {
    fn create(cfg: &ShardConfig) -> Queues {
        let ex = glommio::executor();
        Queues {
            produce: ex.create_task_queue(
                Shares::Static(cfg.shares.produce),
                Latency::Matters(cfg.latency),
                "produce",
            ),
            fetch: ex.create_task_queue(
                Shares::Static(cfg.shares.fetch),
                Latency::Matters(cfg.latency),
                "fetch",
            ),
            background: ex.create_task_queue(
                Shares::Static(cfg.shares.background),
                Latency::NotImportant,
                "background",
            ),
            mesh: ex.create_task_queue(Shares::Static(1000), Latency::Matters(cfg.latency), "mesh"),
        }
    }

    fn name_of(&self, handle: TaskQueueHandle) -> &'static str {
        [
            (self.produce, "produce"),
            (self.fetch, "fetch"),
            (self.background, "background"),
            (self.mesh, "mesh"),
        ]
        .into_iter()
        .find(|(h, _)| *h == handle)
        .map_or("default", |(_, name)| name)
    }

    pub(crate) fn handle(&self, kind: QueueKind) -> TaskQueueHandle {
        match kind {
            QueueKind::Produce => self.produce,
            QueueKind::Fetch => self.fetch,
            QueueKind::Background => self.background,
        }
    }
}

/// A task spawned on a shard. Awaiting it yields its output; dropping it CANCELS the task,
/// [`ShardTask::detach`] lets it run on unobserved. Owned by the shard that spawned it; !Send.
pub struct ShardTask<T>(glommio::Task<T>);

impl<T> ShardTask<T> {
    /// Lets the task keep running without anyone awaiting it.
    pub fn detach(self) {
        drop(self.0.detach());
    }
}

impl<T> Future for ShardTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        Pin::new(&mut self.0).poll(cx)
    }
}

pub(crate) fn spawn_into<T: 'static>(
    queues: &Queues,
    kind: QueueKind,
    fut: impl Future<Output = T> + 'static,
) -> Result<ShardTask<T>, ShardError> {
    glommio::spawn_local_into(fut, queues.handle(kind))
        .map(ShardTask)
        .map_err(|e| ShardError::Spawn {
            queue: kind.name(),
            reason: e.to_string(),
        })
}

/// Everything a shard's code needs: who it is, its mesh endpoint, its queues, the stop signal.
///
/// Owned by shard N; !Send (cloning is cheap and stays on the shard).
#[derive(Clone)]
pub struct ShardCtx {
    inner: Rc<CtxInner>,
}

struct CtxInner {
    id: ShardId,
    count: usize,
    cpu: Option<usize>,
    mesh: Mesh,
    queues: Queues,
    shutdown: Shutdown,
    /// Running totals of glommio's executor counters (see [`ShardCtx::executor_totals`]).
    totals: std::cell::RefCell<ExecutorTotals>,
}

/// A shard executor's work since it started. glommio's own counters restart at every
/// read, so only [`ShardCtx::executor_totals`] may read them.
#[derive(Clone, Debug, Default)]
pub struct ExecutorTotals {
    pub runtime: Duration,
    pub tasks: u64,
    pub queues: Vec<QueueTotals>,
    /// File IO through the shard's io_uring rings (all three: main, latency, poll).
    pub io: IoTotals,
}

/// A shard's file IO through io_uring since it started: operations submitted and their
/// bytes, direct (O_DIRECT) apart from buffered (page cache). A read glommio answered from
/// an identical read already in flight submitted nothing and is not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoTotals {
    pub files_opened: u64,
    pub files_closed: u64,
    pub direct_reads: u64,
    pub direct_bytes_read: u64,
    pub buffered_reads: u64,
    pub buffered_bytes_read: u64,
    pub direct_writes: u64,
    pub direct_bytes_written: u64,
    pub buffered_writes: u64,
    pub buffered_bytes_written: u64,
}

/// One task queue's share of an executor's work.
#[derive(Clone, Debug)]
pub struct QueueTotals {
    pub name: &'static str,
    pub shares: u64,
    pub runtime: Duration,
    pub selected: u64,
}

impl ShardCtx {
    pub fn shard_id(&self) -> ShardId {
        self.inner.id
    }

    pub fn shard_count(&self) -> usize {
        self.inner.count
    }

    /// The CPU this shard is pinned to, if pinned.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.cpu
    }

    /// This shard's endpoint of the cross-shard mesh.
    pub fn mesh(&self) -> &Mesh {
        &self.inner.mesh
    }

    /// The process-wide stop signal.
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// What this shard's executor has run since it started, per task queue too (the
    /// queues of [`QueueKind`], the mesh's, and glommio's default one).
    pub fn executor_totals(&self) -> ExecutorTotals {
        let ex = glommio::executor();
        let run = ex.executor_stats();
        let mut totals = self.inner.totals.borrow_mut();
        totals.runtime += run.executor_runtime();
        totals.tasks += run.tasks_executed();
        let queues = &self.inner.queues;
        for q in ex.all_task_queue_stats(Vec::new()) {
            let name = queues.name_of(q.index());
            let shares = q.current_shares() as u64;
            match totals.queues.iter_mut().find(|t| t.name == name) {
                Some(t) => {
                    t.shares = shares;
                    t.runtime += q.runtime();
                    t.selected += q.queue_selected();
                }
                None => totals.queues.push(QueueTotals {
                    name,
                    shares,
                    runtime: q.runtime(),
                    selected: q.queue_selected(),
                }),
            }
        }
        totals.queues.sort_by_key(|q| q.name);
        let io = ex.io_stats().all_rings();
        let t = &mut totals.io;
        t.files_opened += io.files_opened();
        t.files_closed += io.files_closed();
        let add = |ops: &mut u64, bytes: &mut u64, (o, b): (u64, u64)| {
            *ops += o;
            *bytes += b;
        };
        add(
            &mut t.direct_reads,
            &mut t.direct_bytes_read,
            io.file_reads(),
        );
        add(
            &mut t.buffered_reads,
            &mut t.buffered_bytes_read,
            io.file_buffered_reads(),
        );
        add(
            &mut t.direct_writes,
            &mut t.direct_bytes_written,
            io.file_writes(),
        );
        add(
            &mut t.buffered_writes,
            &mut t.buffered_bytes_written,
            io.file_buffered_writes(),
        );
        totals.clone()
    }

    /// DMA (O_DIRECT, io_uring) file IO for this shard's partitions.
    pub fn storage(&self) -> DmaStorage {
        DmaStorage::new(self)
    }

    /// Spawns `fut` on this shard in the given queue.
    pub fn spawn_in<T: 'static>(
        &self,
        queue: QueueKind,
        fut: impl Future<Output = T> + 'static,
    ) -> Result<ShardTask<T>, ShardError> {
        spawn_into(&self.inner.queues, queue, fut)
    }

    pub fn spawn_produce<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
    ) -> Result<ShardTask<T>, ShardError> {
        self.spawn_in(QueueKind::Produce, fut)
    }

    pub fn spawn_fetch<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
    ) -> Result<ShardTask<T>, ShardError> {
        self.spawn_in(QueueKind::Fetch, fut)
    }

    pub fn spawn_background<T: 'static>(
        &self,
        fut: impl Future<Output = T> + 'static,
    ) -> Result<ShardTask<T>, ShardError> {
        self.spawn_in(QueueKind::Background, fut)
    }
}

/// Sleeps on the current shard's timer wheel (must run on a shard).
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Yields if this task has used up its slice; call in long loops so queues share the CPU fairly.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await;
}

/// Handle to running shards: join them, or reach the stop signal.
pub struct ShardRuntime {
    threads: Vec<(ShardId, JoinHandle<Result<(), ShardError>>)>,
    shutdown: Shutdown,
    /// Held so the kick thread runs as long as the runtime (see `kick`).
    _kicker: Arc<Kicker>,
}

impl ShardRuntime {
    pub fn shard_count(&self) -> usize {
        self.threads.len()
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Waits for every shard's future to finish. Returns the first error (in shard order),
    /// after all threads have ended.
    pub fn join(self) -> Result<(), ShardError> {
        join_all(self.threads)
    }
}

fn join_all(threads: Vec<(ShardId, JoinHandle<Result<(), ShardError>>)>) -> Result<(), ShardError> {
    let mut first = Ok(());
    for (shard, t) in threads {
        let res = match t.join() {
            Ok(r) => r,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                Err(ShardError::ShardPanicked { shard, message })
            }
        };
        if first.is_ok() {
            first = res;
        }
    }
    first
}

/// Starts `config.shards` shards, each running `f(ctx)` on its own pinned executor.
///
/// Returns once every shard's executor is built (or with the first startup error, after
/// stopping the others). `f` is cloned into each thread; the future it returns stays on its
/// shard and need not be `Send`. When a shard's future returns, its mesh endpoint closes
/// (peers see [`ShardError::PeerGone`]) and its thread ends.
pub fn start<F, Fut>(
    config: ShardConfig,
    shutdown: Shutdown,
    f: F,
) -> Result<ShardRuntime, ShardError>
where
    F: Fn(ShardCtx) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    config.validate()?;
    let cpus = allowed_cpus();
    let io_memory = plan_io_memory(&config);
    let limits = MeshLimits {
        pending_calls_max: config.pending_calls_max,
        handlers_inflight_max: config.handlers_inflight_max,
        parked_calls_max: config.parked_calls_max,
        parked_handlers_inflight_max: config.parked_handlers_inflight_max,
    };
    let links = mesh::build_links(config.shards, config.mesh_queue_depth_max);
    let kicker = Kicker::start(
        config.shards,
        &format!("{}-kick", config.name),
        KICK_INTERVAL,
    )
    .map_err(|e| ShardError::Startup {
        shard: ShardId(0),
        reason: format!("spawning the kick thread: {e}"),
    })?;

    let (ready_tx, ready_rx) = mpsc::channel::<(ShardId, Result<(), ShardError>)>();
    let mut threads = Vec::with_capacity(config.shards);
    let mut go_txs = Vec::with_capacity(config.shards);
    let mut spawn_error = None;

    for (i, ends) in links.into_iter().enumerate() {
        let shard = ShardId(i as u16);
        let cpu = if config.pin && !cpus.is_empty() {
            Some(cpus[i % cpus.len()])
        } else {
            None
        };
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let ready_tx = ready_tx.clone();
        let (f, cfg, shutdown) = (f.clone(), config.clone(), shutdown.clone());
        let kicker = kicker.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-{}", config.name, i))
            .spawn(move || {
                shard_thread(
                    ShardBoot {
                        shard,
                        cpu,
                        cfg,
                        io_memory,
                        limits,
                        ends,
                        shutdown,
                        ready_tx,
                        go_rx,
                        kicker,
                    },
                    f,
                )
            });
        match spawned {
            Ok(t) => {
                threads.push((shard, t));
                go_txs.push(go_tx);
            }
            Err(e) => {
                spawn_error = Some(ShardError::Startup {
                    shard,
                    reason: format!("spawning thread: {e}"),
                });
                break;
            }
        }
    }
    drop(ready_tx);

    let mut startup_error = spawn_error;
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((_, Err(e))) => {
                startup_error.get_or_insert(e);
            }
            // A shard thread died before reporting; join below tells how.
            Err(_) => break,
        }
    }
    let go = startup_error.is_none();
    for tx in &go_txs {
        // A thread that already died cannot receive; its join result says why.
        let _ = tx.send(go);
    }
    if let Some(e) = startup_error {
        // Their futures never ran; joining only reaps the threads.
        let _ = join_all(threads);
        return Err(e);
    }
    Ok(ShardRuntime {
        threads,
        shutdown,
        _kicker: kicker,
    })
}

struct ShardBoot {
    shard: ShardId,
    cpu: Option<usize>,
    cfg: ShardConfig,
    io_memory: usize,
    limits: MeshLimits,
    ends: LinkEnds,
    shutdown: Shutdown,
    ready_tx: mpsc::Sender<(ShardId, Result<(), ShardError>)>,
    go_rx: mpsc::Receiver<bool>,
    kicker: Arc<Kicker>,
}

fn shard_thread<F, Fut>(boot: ShardBoot, f: F) -> Result<(), ShardError>
where
    F: Fn(ShardCtx) -> Fut,
    Fut: Future<Output = ()> + 'static,
{
    let ShardBoot {
        shard,
        cpu,
        cfg,
        io_memory,
        limits,
        ends,
        shutdown,
        ready_tx,
        go_rx,
        kicker,
    } = boot;
    let ex = match build_executor(shard, cpu, &cfg, io_memory) {
        Ok(ex) => ex,
        Err(e) => {
            let reason = e.to_string();
            let _ = ready_tx.send((shard, Err(e)));
            return Err(ShardError::Startup { shard, reason });
        }
    };
    let _ = ready_tx.send((shard, Ok(())));
    drop(ready_tx);
    // Anything but an explicit "go" (abort, or `start` gone) means stand down.
    if go_rx.recv() != Ok(true) {
        return Ok(());
    }
    let count = cfg.shards;
    // Kicked (module `kick`) from here until the guard clears the slot, however the run
    // ends, a panic included: never after this thread has gone.
    struct Unkick(Arc<Kicker>, usize);
    impl Drop for Unkick {
        fn drop(&mut self) {
            self.0.clear(self.1);
        }
    }
    kicker.register_current(shard.index());
    let _unkick = Unkick(kicker, shard.index());
    ex.run(async move {
        let links = mesh::connect_links(ends).await;
        let queues = Queues::create(&cfg);
        let mesh = Mesh::new(shard, count, links, limits, queues);
        let ctx = ShardCtx {
            inner: Rc::new(CtxInner {
                id: shard,
                count,
                cpu,
                mesh: mesh.clone(),
                queues,
                shutdown,
                totals: Default::default(),
            }),
        };
        f(ctx).await;
        mesh.close();
    });
    Ok(())
}

fn build_executor(
    shard: ShardId,
    cpu: Option<usize>,
    cfg: &ShardConfig,
    io_memory: usize,
) -> Result<LocalExecutor, ShardError> {
    let builder = |io_memory: usize, ring_depth: usize| {
        let placement = match cpu {
            Some(c) => Placement::Fixed(c),
            None => Placement::Unbound,
        };
        LocalExecutorBuilder::new(placement)
            .name(&format!("{}-{}", cfg.name, shard.0))
            .io_memory(io_memory)
            .ring_depth(ring_depth)
    };
    let first = match builder(io_memory, cfg.ring_depth).make() {
        Ok(ex) => return Ok(ex),
        Err(e) => e,
    };
    static RETRY_LOG: Once = Once::new();
    RETRY_LOG.call_once(|| {
        log::warn!(
            "shard executor with {io_memory} B io memory and ring depth {} failed ({first}); \
             retrying with minimal io memory and ring depth {FALLBACK_RING_DEPTH}",
            cfg.ring_depth
        );
    });
    raise_memlock_soft_limit();
    let mut last = None;
    for attempt in 0..FALLBACK_ATTEMPTS {
        if attempt > 0 {
            // The kernel releases a closed ring's locked-memory charge from a work queue, so a
            // just-stopped runtime (or a broker restarted in a hurry) may still hold some.
            std::thread::sleep(FALLBACK_BACKOFF * attempt);
        }
        match builder(0, FALLBACK_RING_DEPTH.min(cfg.ring_depth)).make() {
            Ok(ex) => return Ok(ex),
            Err(e) => last = Some(e.to_string()),
        }
    }
    Err(ShardError::Startup {
        shard,
        reason: format!(
            "{first}; {FALLBACK_ATTEMPTS} retries with minimal io memory also failed, last: {}",
            last.unwrap_or_default()
        ),
    })
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn allowed_cpus() -> Vec<usize> {
    if let Ok(set) = rustix::thread::sched_getaffinity(None) {
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect();
        if !cpus.is_empty() {
            return cpus;
        }
    }
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (0..n).collect()
}

/// Whether this thread may lock memory without RLIMIT_MEMLOCK accounting.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// The soft and hard RLIMIT_MEMLOCK, `libc::RLIM_INFINITY` for unlimited.
fn memlock_limits() -> Option<(u64, u64)> {
    let r = rustix::process::getrlimit(rustix::process::Resource::Memlock);
    let or_infinite = |l: Option<u64>| l.unwrap_or(libc::RLIM_INFINITY);
    Some((or_infinite(r.current), or_infinite(r.maximum)))
}

/// A log filter directive that drops what the runtime's dependencies log only to repeat
/// what the runtime has already said, for a process logger below debug level: glommio warns
/// once per ring (three per shard, over several lines) when buffer registration fails for
/// lack of locked memory, after `plan_io_memory` said so once, with the fix.
pub const REDUNDANT_LOG_DIRECTIVE: &str = "glommio::sys::uring=error";

/// The DMA pool size per shard: always the configured one. Without CAP_IPC_LOCK, a pool
/// larger than the RLIMIT_MEMLOCK budget cannot be registered with io_uring; glommio then
/// skips registration and keeps the pool as plain memory. That is the better trade: what
/// the log's write path needs is a pool big enough to hold every write in flight (buffers
/// beyond it come from the heap, fresh pages faulted in and zeroed per write), not fixed
/// buffers. Measured with `sluice-storage-bench` as an unprivileged user (memlock 8 MiB):
/// pool shrunk to fit registration, 0.72 of raw bandwidth and 0.40 ms of append CPU per MiB;
/// the full pool unregistered, 0.86 and 0.14 ms; registered (root), 0.93 and 0.14 ms.
fn plan_io_memory(cfg: &ShardConfig) -> usize {
    if has_cap_ipc_lock() {
        return cfg.io_memory;
    }
    let Some((soft, _)) = memlock_limits() else {
        return cfg.io_memory;
    };
    if soft == libc::RLIM_INFINITY {
        return cfg.io_memory;
    }
    // Recent kernels also charge the rings themselves to the same limit. Count only half the
    // limit as usable: other io_uring users of this uid, and rings of a runtime that just
    // stopped (released asynchronously), share it.
    let rings = RINGS_PER_SHARD * ring_bytes(cfg.ring_depth) * cfg.shards;
    let usable = (soft as usize / 2).saturating_sub(rings);
    let budget = (usable / (RINGS_PER_SHARD * cfg.shards)) & !(crate::PAGE_SIZE - 1);
    if budget < cfg.io_memory {
        static UNREGISTERED_LOG: Once = Once::new();
        UNREGISTERED_LOG.call_once(|| {
            log::warn!(
                "RLIMIT_MEMLOCK is {soft} B and the process lacks CAP_IPC_LOCK: the {} B DMA pool \
                 per shard does not fit buffer registration ({RINGS_PER_SHARD} rings x {} shards, \
                 budget {budget} B each); it is used unregistered (plain, not fixed-buffer, IO). \
                 `sluice tune --check` says what limit registration needs.",
                cfg.io_memory,
                cfg.shards
            );
        });
    }
    cfg.io_memory
}

/// Approximate locked memory of one io_uring ring of `depth` entries: the SQE array (64 B
/// each) plus the ring header, CQEs (2 per SQE, 16 B each) and SQ index array, page-rounded.
fn ring_bytes(depth: usize) -> usize {
    let page = crate::PAGE_SIZE;
    let round = |b: usize| b.div_ceil(page) * page;
    round(depth * 64) + round(depth * 2 * 16 + depth * 4 + 1024)
}

/// Lifts the soft memlock limit to the hard one when it is below glommio's floor.
fn raise_memlock_soft_limit() {
    let Some((soft, hard)) = memlock_limits() else {
        return;
    };
    if soft >= GLOMMIO_MEMLOCK_FLOOR || hard <= soft {
        return;
    }
    // Raising soft up to hard needs no privilege.
    let limit = (hard != libc::RLIM_INFINITY).then_some(hard);
    let r = rustix::process::Rlimit {
        current: limit,
        maximum: limit,
    };
    if rustix::process::setrlimit(rustix::process::Resource::Memlock, r).is_err() {
        log::warn!("could not raise RLIMIT_MEMLOCK soft limit from {soft} to {hard}");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    pub(crate) fn small(shards: usize) -> ShardConfig {
        ShardConfig {
            shards,
            pin: true,
            io_memory: 1 << 20,
            ring_depth: 64,
            ..ShardConfig::default()
        }
    }

    #[test]
    fn runs_every_shard_with_ids_and_queues() {
        let seen = Arc::new(AtomicUsize::new(0));
        let seen2 = seen.clone();
        let rt = start(small(3), Shutdown::new(), move |ctx| {
            let seen = seen2.clone();
            async move {
                assert_eq!(ctx.shard_count(), 3);
                let id = ctx.shard_id().0 as usize;
                let a = ctx.spawn_produce(async { 1 }).unwrap();
                let b = ctx.spawn_fetch(async { 2 }).unwrap();
                let c = ctx.spawn_background(async { 4 }).unwrap();
                let sum = a.await + b.await + c.await;
                assert_eq!(sum, 7);
                seen.fetch_add(1 << (id * 4), Ordering::SeqCst);
            }
        })
        .unwrap();
        assert_eq!(rt.shard_count(), 3);
        rt.join().unwrap();
        assert_eq!(seen.load(Ordering::SeqCst), 0x111);
    }

    #[test]
    fn pinned_to_allowed_cpus() {
        let cpus = allowed_cpus();
        let rt = start(small(2), Shutdown::new(), move |ctx| {
            let cpus = cpus.clone();
            async move {
                let want = cpus[ctx.shard_id().index() % cpus.len()];
                assert_eq!(ctx.cpu(), Some(want));
                assert_eq!(rustix::thread::sched_getcpu(), want);
            }
        })
        .unwrap();
        rt.join().unwrap();
    }

    #[test]
    fn shutdown_reaches_every_shard() {
        let shutdown = Shutdown::new();
        let rt = start(small(2), shutdown.clone(), |ctx| async move {
            ctx.shutdown().wait().await;
            assert!(ctx.shutdown().is_triggered());
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        rt.shutdown().trigger();
        rt.join().unwrap();
    }

    #[test]
    fn bad_config_is_rejected() {
        for cfg in [
            ShardConfig {
                shards: 0,
                ..small(1)
            },
            ShardConfig {
                mesh_queue_depth_max: 0,
                ..small(1)
            },
            ShardConfig {
                ring_depth: 0,
                ..small(1)
            },
            ShardConfig {
                shares: QueueShares {
                    background: 0,
                    ..QueueShares::default()
                },
                ..small(1)
            },
        ] {
            assert!(matches!(
                start(cfg, Shutdown::new(), |_| async {}),
                Err(ShardError::Config { .. })
            ));
        }
    }

    #[test]
    fn a_panicking_shard_is_reported() {
        let rt = start(small(2), Shutdown::new(), |ctx| async move {
            if ctx.shard_id() == ShardId(1) {
                panic!("boom");
            }
        })
        .unwrap();
        match rt.join() {
            Err(ShardError::ShardPanicked { shard, message }) => {
                assert_eq!(shard, ShardId(1));
                assert!(message.contains("boom"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
