//! The sluice broker: glues the Kafka codec, the partition log and the shard runtime into a
//! server. Each shard accepts connections on every listener's shared address (SO_REUSEPORT),
//! runs requests, and sends partition work to the partition's owning shard.
//!
//! Boundary invariants:
//! - Partition logs are touched only on their owning shard (see [`shard::BrokerShard::exec`]).
//! - Cluster state (topics, configs) changes only on shard 0 ([`controller::Controller`]),
//!   which persists it before distributing it and answering.
//! - A request answered "ok" with acks=all was fsynced.
//! - A panic anywhere ends the process at once ([`panic_policy`]); no shard dies alone.
//! - SIGTERM/SIGINT: every shard stops accepting and reading requests and answers those in
//!   flight, and (controlled shutdown) hands the partition leaderships it holds to other
//!   replicas, never taking one again; only when all shards have, are logs flushed, fsynced
//!   and closed (a closed log refuses appends), all within [`config::SHUTDOWN_TIMEOUT`].
//! - Request bytes held in flight are bounded per shard ([`request_memory`]); over the
//!   budget, connections stop reading (back-pressure), they never fail.

pub mod admin;
pub mod authz;
pub mod cleaner_budget;
pub mod client_metrics;
pub mod cluster_view;
pub mod config;
pub mod conn;
pub mod connections;
pub mod controller;
pub mod coord_log;
pub mod error;
pub mod feature_levels;
pub mod group_acl;
pub mod group_host;
pub mod group_placement;
pub mod group_topic_ids;
pub mod groups;
pub mod handlers;
pub mod kerr;
pub mod leader_epochs;
pub mod leader_reads;
pub mod log_dirs;
pub mod log_moves;
pub mod metadata_sync;
pub mod metrics_host;
pub mod node_rpc;
pub mod oauth_host;
pub mod ops;
pub mod panic_policy;
pub mod partition_dirs;
pub mod produce_rules;
pub mod producer_ids;
pub mod quotas;
pub mod replication;
pub mod replication_throttle;
pub mod request_memory;
pub mod response_throttle;
pub mod sasl_host;
pub mod scram_store;
pub mod shard;
pub mod stats;
pub mod telemetry_host;
pub mod tls_host;
pub mod tokens_host;
pub mod topic_config;
pub mod topics;
pub mod txn_host;
pub mod watch;

use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use sluice_shard::{ShardConfig, Shutdown};

pub use config::BrokerConfig;
pub use error::BrokerError;
/// For the process logger: records that repeat what the shard runtime already logged.
pub use sluice_shard::runtime::REDUNDANT_LOG_DIRECTIVE;

/// Process-wide state shared by all shards (behind its own locks; not on the produce path).
pub struct Shared {
    /// The node's log directories and where each partition lives.
    pub log_dirs: log_dirs::LogDirs,
    /// The pre-controller-log allocator's mark: the first block starts above it.
    pub legacy_producer_id_end: i64,
    /// Connections per client IP over all shards (`max.connections.per.ip`).
    pub connections_per_ip: Arc<connections::PerIp>,
    /// `max.connection.creation.rate` over every shard's accept loops (`None`: no limit).
    pub connection_creation: Option<connections::CreationRate>,
    /// Current leader epoch of each open partition, for Metadata.
    pub leader_epochs: leader_epochs::LeaderEpochs,
    /// The brokers, the controller and partition leaders beyond this node's own partitions.
    pub cluster_view: cluster_view::ClusterView,
    /// Producer ids from the controller's blocks for this node.
    pub cluster_producer_ids: producer_ids::ClusterBlocks,
    /// The controller's latest persisted cluster state: a shard that finds a gap in the
    /// deltas it receives (one never arrived or did not decode) adopts it whole. Shards share
    /// this process, so it is read here rather than sent (it may be larger than a frame).
    cluster_state: Mutex<Arc<topics::ClusterState>>,
    ready: (Mutex<usize>, Condvar),
    failed: AtomicUsize,
    /// Triggered once shard 0 has started the controller runtime (the other shards may
    /// serve) or a shard failed to start (the start is over): the other shards await it.
    /// A one-shot cross-thread latch, which is what the stop signal's type is.
    controller_started: sluice_shard::shutdown::Shutdown,
    /// Shards done answering their connections' requests (shutdown): logs close only when
    /// every shard is, since a request on one shard may append to a log of another.
    drained: AtomicUsize,
    /// Shards whose logs did not all close within `SHUTDOWN_TIMEOUT`.
    unclean: AtomicUsize,
    /// Other nodes and whether the transport reaches them, with a generation that moves on
    /// every change (shard 0 refreshes it; every shard's partition groups read it).
    node_liveness: Mutex<(u64, Vec<(i32, bool)>)>,
    /// Reassignments partition leaders found done (topic id, partition, revision), for
    /// shard 0 to report to the controller (`replication.rs`, `metadata_sync.rs`).
    pub reassignments_done: Mutex<Vec<([u8; 16], i32, u64)>>,
    /// The node's replication throttles (every shard's catch-up reads draw on them).
    pub replication_throttle: replication_throttle::NodeThrottle,
    /// Why the node is stopping on its own (the controller runtime failed): set before the
    /// shutdown it triggers, and [`run`]'s error once every shard has stopped.
    fatal: Mutex<Option<String>>,
    /// TLS configurations of the `ssl` and `sasl_ssl` listeners (when `--tls-cert` is given).
    pub tls: Option<Arc<tls_host::TlsState>>,
    /// OAUTHBEARER's keys and checks (when a JWKS is configured).
    pub oauth: Option<oauth_host::OauthState>,
    /// The committed SCRAM credentials (SASL authentication reads them).
    pub credentials: scram_store::Credentials,
    /// The committed ACLs and the authorizer built from them.
    pub acls: authz::AclStore,
    /// The committed client quotas and the node's budgets.
    pub quotas: quotas::QuotaStore,
    /// The finalized feature levels.
    pub features: feature_levels::FeatureStore,
    /// Client-metrics subscriptions (KIP-714), as adopted from the controller log.
    pub client_metrics: client_metrics::ClientMetricsStore,
    /// Delegation tokens (KIP-48), as adopted from the controller log.
    pub tokens: tokens_host::TokenStore,
    /// Every shard serves clients and shutdown has not begun (`/v1/status/ready`).
    pub serving: std::sync::atomic::AtomicBool,
    /// The bound admin listener until shard 0 takes it to serve the admin API.
    admin_listener: Mutex<Option<std::net::TcpListener>>,
}

impl Shared {
    /// Stops the node on its own, as SIGTERM does (requests in flight answered, logs closed),
    /// for a reason [`run`] then returns (the process exits non-zero). The first reason wins.
    pub fn stop_fatally(&self, shutdown: &sluice_shard::shutdown::Shutdown, why: String) {
        self.fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        shutdown.trigger();
    }

    /// The controller's latest persisted cluster state.
    pub fn cluster_state(&self) -> Arc<topics::ClusterState> {
        self.cluster_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a state the controller has persisted (before it distributes it).
    pub fn set_cluster_state(&self, state: Arc<topics::ClusterState>) {
        let mut cur = self.cluster_state.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert!(
            state.version >= cur.version,
            "cluster state version went back"
        );
        *cur = state;
    }
}

impl Shared {
    /// Other nodes' liveness as the transport sees it, and its generation.
    pub fn node_liveness(&self) -> (u64, Vec<(i32, bool)>) {
        self.node_liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records the transport's view of other nodes (a new generation only if it changed).
    pub fn set_node_liveness(&self, mut nodes: Vec<(i32, bool)>) {
        nodes.sort_unstable();
        let mut cur = self.node_liveness.lock().unwrap_or_else(|e| e.into_inner());
        if cur.1 != nodes {
            *cur = (cur.0 + 1, nodes);
        }
    }
}

impl shard::BrokerShard {
    pub fn shared(&self) -> Arc<Shared> {
        self.shared_handle.clone()
    }
}

/// Runs the broker until SIGTERM/SIGINT; `on_ready` is called once every shard listens.
pub fn run(
    mut config: BrokerConfig,
    on_ready: impl FnOnce(&BrokerConfig),
) -> Result<(), BrokerError> {
    panic_policy::install();
    if let Some(limit) = connections::raise_nofile_limit() {
        log::info!("open file limit (RLIMIT_NOFILE): {limit}");
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| BrokerError::Io {
        op: "create",
        path: config.data_dir.clone(),
        source: e,
    })?;
    // Absolute from here on: partition paths must not depend on the working directory.
    config.data_dir = std::fs::canonicalize(&config.data_dir).map_err(|e| BrokerError::Io {
        op: "resolve",
        path: config.data_dir.clone(),
        source: e,
    })?;
    let _lock = lock_data_dir(&config.data_dir)?;
    for l in &config.listeners {
        // A TLS listener does not answer the probe's plaintext ApiVersions: only plaintext
        // ones can be probed (a second broker on the same TLS port would not be detected).
        if !l.protocol.tls() {
            probe_listen_address(l.addr)?;
        }
    }
    let tls = match &config.tls {
        None => None,
        Some(files) => Some(Arc::new(
            tls_host::TlsState::load(files).map_err(BrokerError::Config)?,
        )),
    };
    let oauth = match &config.oauth {
        None => None,
        Some(s) => Some(oauth_host::OauthState::load(s).map_err(BrokerError::Config)?),
    };
    let state = topics::load_state(&config.data_dir, config.node_id)?;
    let fresh = !topics::state_path(&config.data_dir).exists();
    if state.node_id != config.node_id {
        // Kafka refuses a node.id that differs from the data directory's meta.properties:
        // every replica placed on the old id would look like another node's.
        return Err(BrokerError::Config(format!(
            "{} belongs to node {}, not --node-id {}",
            config.data_dir.display(),
            state.node_id,
            config.node_id
        )));
    }
    let primary_id =
        sluice_cluster::identity::directory_id(&config.data_dir).map_err(|e| BrokerError::Io {
            op: "identify",
            path: config.data_dir.clone(),
            source: e,
        })?;
    let (log_dirs, opened) =
        log_dirs::LogDirs::open(config.data_dir.clone(), primary_id, &config.more_data_dirs)?;
    if opened != log_dirs::Opened::default() {
        log::info!("log directories: {opened:?}");
    }
    let online_dirs: Vec<std::path::PathBuf> = log_dirs
        .iter()
        .filter(|d| !d.is_offline())
        .map(|d| d.path.clone())
        .collect();
    if fresh {
        // Partition data without the state that names its topics: the state was lost, or this
        // is another program's directory. Sweeping would delete it all; refuse instead.
        for dir in &online_dirs {
            partition_dirs::refuse_unowned_data(dir)?;
        }
        topics::store_state(&config.data_dir, &state)?;
    }
    if let Some(dir) = topics::state_path(&config.data_dir).parent() {
        topics::ensure_space_reserve(dir);
    }
    replication::check_shard_count(&config.data_dir, config.shards).map_err(BrokerError::Config)?;
    // Before any partition opens: a topic re-created under an old name must not find the
    // data of its predecessor (KIP-516 topic ids in partition directories).
    for dir in &online_dirs {
        let swept = partition_dirs::sweep(dir, &state)?;
        if swept != partition_dirs::Swept::default() {
            log::info!("data directory sweep of {}: {swept:?}", dir.display());
        }
    }
    // Partitions deleted or moved off this node while it was down (or while their directory
    // was offline) no longer count where they were placed.
    let by_name: std::collections::HashMap<&str, &topics::TopicRecord> =
        state.topics.iter().map(|t| (t.name.as_str(), t)).collect();
    log_dirs.retain(|topic, p| {
        by_name
            .get(topic)
            .is_some_and(|t| p < t.partitions && t.hosted_on(p, state.node_id))
    });
    // Before any partition directory is created: each one's placement is durable first.
    log_dirs.persist().map_err(|e| BrokerError::Io {
        op: "write the log directory placement in",
        path: config.data_dir.clone(),
        source: e,
    })?;
    // Groups an older sluice placed outside Kafka's partition move before anything serves.
    group_placement::migrate(&config.data_dir, &state, |topic, p| {
        log_dirs.partition_path(topic, p)
    })?;
    let admin_listener = match config.admin_listen {
        None => None,
        Some(addr) => match admin::bind(addr) {
            Ok(l) => {
                let at = l.local_addr().map_or(addr.to_string(), |a| a.to_string());
                log::info!("admin API listening on {at}");
                Some(l)
            }
            // The default address may be another broker's on a shared host: start without.
            Err(e) if !config.admin_listen_explicit => {
                log::warn!(
                    "admin API off: cannot listen on {addr} ({e}); give --admin-listen an \
                     address that is free"
                );
                None
            }
            Err(e) => {
                return Err(BrokerError::Config(format!(
                    "--admin-listen {addr}: cannot listen: {e}"
                )))
            }
        },
    };
    let shared = Arc::new(Shared {
        log_dirs,
        legacy_producer_id_end: producer_ids::legacy_end(&config.data_dir)?,
        connections_per_ip: Arc::default(),
        connection_creation: connections::CreationRate::new(config.max_connection_creation_rate),
        leader_epochs: Default::default(),
        cluster_view: cluster_view::ClusterView::single(cluster_view::BrokerEndpoint {
            node: config.node_id,
            listeners: config.listener_endpoints(),
            rack: None,
        }),
        cluster_producer_ids: Default::default(),
        cluster_state: Mutex::new(Arc::new(state.clone())),
        ready: (Mutex::new(0), Condvar::new()),
        failed: AtomicUsize::new(0),
        controller_started: Default::default(),
        drained: AtomicUsize::new(0),
        unclean: AtomicUsize::new(0),
        node_liveness: Mutex::new((0, Vec::new())),
        reassignments_done: Mutex::new(Vec::new()),
        replication_throttle: Default::default(),
        fatal: Mutex::new(None),
        tls: tls.clone(),
        oauth,
        credentials: Default::default(),
        acls: authz::AclStore::new(&config),
        quotas: Default::default(),
        features: Default::default(),
        client_metrics: Default::default(),
        tokens: Default::default(),
        serving: Default::default(),
        admin_listener: Mutex::new(admin_listener),
    });
    if config.stats_interval.is_some() {
        stats::enable();
    }
    let config = Arc::new(config);
    let shutdown = Shutdown::new();
    if let (Some(files), Some(state)) = (&config.tls, &tls) {
        tls_host::spawn_reloader(files.clone(), state.clone())
            .map_err(|e| BrokerError::Shard(format!("starting the TLS reloader: {e}")))?;
    }
    sluice_shard::trigger_on_signals(&shutdown).map_err(|e| BrokerError::Shard(e.to_string()))?;
    let shard_config = ShardConfig {
        shards: config.shards,
        pin: config.pin,
        ..ShardConfig::default()
    };
    let shards = config.shards;
    let runtime = {
        let shared = shared.clone();
        let config = config.clone();
        sluice_shard::start(shard_config, shutdown.clone(), move |ctx| {
            let shared = shared.clone();
            let config = config.clone();
            let state = state.clone();
            async move { shard_main(ctx, config, state, shared).await }
        })
        .map_err(|e| BrokerError::Shard(e.to_string()))?
    };
    // Wait for every shard to listen (or one to fail).
    {
        let (lock, cv) = &shared.ready;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *n < shards && shared.failed.load(Ordering::SeqCst) == 0 {
            n = cv.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
    if shared.failed.load(Ordering::SeqCst) != 0 {
        shutdown.trigger();
        let _ = runtime.join();
        return Err(BrokerError::Config(
            "a shard failed to start; see the log above".into(),
        ));
    }
    shared.serving.store(true, Ordering::SeqCst);
    on_ready(&config);
    runtime
        .join()
        .map_err(|e| BrokerError::Shard(e.to_string()))?;
    if let Some(why) = shared
        .fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(BrokerError::Fatal(why));
    }
    match shared.unclean.load(Ordering::SeqCst) {
        0 => Ok(()),
        n => Err(BrokerError::Config(format!(
            "{n} shard(s) did not close their logs within {:?}; the next start recovers them",
            config::SHUTDOWN_TIMEOUT
        ))),
    }
}

fn signal_ready(shared: &Shared, ok: bool) {
    if !ok {
        shared.failed.fetch_add(1, Ordering::SeqCst);
        // Shards waiting for shard 0's controller runtime stop waiting: the start failed.
        shared.controller_started.trigger();
    }
    let (lock, cv) = &shared.ready;
    *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    cv.notify_all();
}

async fn shard_main(
    ctx: sluice_shard::ShardCtx,
    config: Arc<BrokerConfig>,
    state: topics::ClusterState,
    shared: Arc<Shared>,
) {
    if panic_policy::test_panic() == panic_policy::TestPanic::Start
        && ctx.shard_id().index() + 1 == ctx.shard_count()
    {
        panic!(
            "test panic before the shard is ready ({})",
            panic_policy::TEST_PANIC_ENV
        );
    }
    let shard = shard::BrokerShard::new(ctx.clone(), config.clone(), state.clone(), shared.clone());
    ctx.mesh().set_handler(shard::MeshHandler(shard.clone()));
    if ctx.shard_id().index() == 0 {
        let admin = shared
            .admin_listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(listener) = admin {
            glommio::spawn_local(admin::serve(shard.clone(), listener)).detach();
        }
    }
    if let Err(e) = shard.start_replication(&state).await {
        log::error!("{}: recovering replicated partitions: {e}", ctx.shard_id());
        eprintln!("sluice: cannot recover the replicated partitions: {e}");
        signal_ready(&shared, false);
        return;
    }
    // Start phases on shard 0, so a start that never gets ready says where it stopped (a
    // node of a starting cluster occasionally does: README, "Known problem").
    let phase = |what: &str| {
        if ctx.shard_id().index() == 0 {
            log::info!("start: {what}");
        }
    };
    phase("replica store open");
    if let Err(e) = shard.apply_topics(state).await {
        log::error!("{}: opening partitions: {e}", ctx.shard_id());
        signal_ready(&shared, false);
        return;
    }
    phase("partitions open; starting the controller runtime");
    if ctx.shard_id().index() == 0 {
        // A cluster of one runs the same controller runtime, with itself as the only voter.
        if let Err(e) = metadata_sync::start(&shard).await {
            log::error!("starting the controller runtime: {e}");
            eprintln!("sluice: cannot start the controller runtime: {e}");
            signal_ready(&shared, false);
            return;
        }
        shared.controller_started.trigger();
    } else {
        // No shard serves before shard 0 has started the runtime (a cluster of one: and
        // registered with it), or its Metadata could name a stale registration.
        futures_lite::future::or(shared.controller_started.wait(), ctx.shutdown().wait()).await;
    }
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for l in &config.listeners {
        match glommio::net::TcpListener::bind(l.addr) {
            Ok(bound) => listeners.push((l.protocol, bound)),
            Err(e) => {
                log::error!(
                    "{}: cannot listen on {} ({}): {e}",
                    ctx.shard_id(),
                    l.addr,
                    l.protocol
                );
                eprintln!("sluice: cannot listen on {}: {e}", l.addr);
                signal_ready(&shared, false);
                return;
            }
        }
    }
    shard.spawn_retention();
    shard.spawn_log_cleaner();
    shard.spawn_stats_reporter();
    let conns = connections::Connections::new(
        config::CONNECTIONS_PER_SHARD_MAX,
        config.max_connections_per_ip,
        config.connections_max_idle,
        shared.connections_per_ip.clone(),
    );
    spawn_idle_sweeper(&ctx, &conns);
    signal_ready(&shared, true);
    let accepts = listeners.iter().map(|(protocol, listener)| {
        let (ctx, conns, shard) = (&ctx, &conns, &shard);
        async move {
            let mut last_error_log: Option<std::time::Instant> = None;
            loop {
                match listener.accept().await {
                    Ok(stream) => {
                        use std::os::fd::AsRawFd;
                        // Over the node's creation rate this loop waits, and the next
                        // connections wait in the backlog (Kafka's acceptor does the same).
                        if let Some(rate) = &shard.shared_handle.connection_creation {
                            let wait = rate.take(std::time::Instant::now());
                            if !wait.is_zero() {
                                glommio::timer::sleep(wait).await;
                            }
                        }
                        let ip = stream.peer_addr().ok().map(|a| a.ip());
                        if ip.is_some_and(|ip| {
                            quotas::connection_refused(
                                &shard.shared_handle.quotas,
                                ip,
                                std::time::Instant::now(),
                            )
                        }) {
                            log::debug!(
                                "{}: closing a connection from {ip:?}: over its \
                                 connection_creation_rate",
                                ctx.shard_id()
                            );
                            drop(stream);
                            continue;
                        }
                        let admitted = match conns.admit(ip, stream.as_raw_fd()) {
                            Ok(a) => a,
                            Err(why) => {
                                log::debug!(
                                    "{}: refusing a connection from {ip:?}: {why:?}",
                                    ctx.shard_id()
                                );
                                drop(stream);
                                continue;
                            }
                        };
                        let shard = shard.clone();
                        glommio::spawn_local(conn::serve(shard, stream, *protocol, admitted))
                            .detach();
                    }
                    Err(e) => {
                        // EMFILE and friends persist until connections close: pause rather
                        // than spin on an accept that fails at once, and say so at most once
                        // a minute.
                        if last_error_log.is_none_or(|t| t.elapsed() >= ACCEPT_ERROR_LOG_EVERY) {
                            log::warn!(
                                "{}: accept ({protocol}): {e}; pausing accepts briefly",
                                ctx.shard_id()
                            );
                            last_error_log = Some(std::time::Instant::now());
                        }
                        glommio::timer::sleep(connections::ACCEPT_ERROR_BACKOFF).await;
                    }
                }
            }
        }
    });
    // Every listener's accept loop runs until shutdown (none ends on its own).
    let mut accept: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + '_>> =
        Box::pin(std::future::pending());
    for one in accepts {
        accept = Box::pin(futures_lite::future::or(accept, one));
    }
    futures_lite::future::or(accept, ctx.shutdown().wait()).await;
    drop(listeners);
    stop(&ctx, &shard, &conns, &shared).await;
}

/// How often shutdown looks whether connections and other shards are done.
const SHUTDOWN_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Shutdown of one shard, after its listener closed: stop reading requests, answer those in
/// flight (at most `SHUTDOWN_DRAIN_MAX`), wait for every other shard to have done the same,
/// then flush, fsync and close the logs, all within `SHUTDOWN_TIMEOUT`.
async fn stop(
    ctx: &sluice_shard::ShardCtx,
    shard: &Rc<shard::BrokerShard>,
    conns: &Rc<connections::Connections>,
    shared: &Shared,
) {
    use std::time::Instant;
    let started = Instant::now();
    let drain_until = started + config::SHUTDOWN_DRAIN_MAX;
    shared.serving.store(false, Ordering::SeqCst);
    shard.start_draining();
    conns.stop_reading();
    // Controlled shutdown: the leaderships this shard holds go to other replicas meanwhile
    // (the groups keep replicating until the logs close below).
    let handoff = shard
        .replication()
        .filter(|_| shard.config.controlled_shutdown_enable);
    if let Some(rep) = &handoff {
        rep.begin_handoff();
    }
    // Shard 0: and the controller leadership, if this node holds it.
    let resigning = shard.config.controlled_shutdown_enable && ctx.shard_id().index() == 0;
    let resign_asked = std::cell::Cell::new((None, 0));
    let pending = || {
        handoff.as_ref().map_or(0, |r| r.handoffs_pending())
            + usize::from(resigning && metadata_sync::resign(shard, &resign_asked))
    };
    while (conns.count() > 0 || pending() > 0) && Instant::now() < drain_until {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    if pending() > 0 {
        log::warn!(
            "{}: {} partition leadership(s) not handed off within {:?}: they stop with the node",
            ctx.shard_id(),
            pending(),
            config::SHUTDOWN_DRAIN_MAX
        );
    } else if handoff.is_some() {
        log::debug!(
            "{}: controlled shutdown: no leadership left to hand off after {:?}",
            ctx.shard_id(),
            started.elapsed()
        );
    }
    if conns.count() > 0 {
        log::warn!(
            "{}: closing {} connection(s) with requests still in flight after {:?}",
            ctx.shard_id(),
            conns.count(),
            config::SHUTDOWN_DRAIN_MAX
        );
        conns.close_all();
    }
    // Requests of other shards' connections may still append to logs of this one: serve
    // them (this executor keeps running while it waits) until every shard has drained.
    shared.drained.fetch_add(1, Ordering::SeqCst);
    let close_until = started + config::SHUTDOWN_TIMEOUT;
    // (Shards that failed to start never drain: they count as done.)
    let done = || shared.drained.load(Ordering::SeqCst) + shared.failed.load(Ordering::SeqCst);
    while done() < ctx.shard_count() && Instant::now() < close_until {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    let closed = futures_lite::future::or(async { shard.close_all().await }, async {
        glommio::timer::sleep(close_until.saturating_duration_since(Instant::now())).await;
        false
    })
    .await;
    if !closed {
        log::error!(
            "{}: logs not closed within {:?} of the shutdown signal",
            ctx.shard_id(),
            config::SHUTDOWN_TIMEOUT
        );
        shared.unclean.fetch_add(1, Ordering::SeqCst);
    }
    metadata_sync::stop(shard).await;
}

/// Fails if a Kafka broker already serves `addr`. The shards bind it with SO_REUSEPORT,
/// which another process of the same user that did the same would also accept: a second
/// broker on the port would start and take half the connections. A bind probe cannot tell
/// (sockets a killed broker left in TIME_WAIT also refuse a bind without SO_REUSEPORT), nor
/// can a bare connection (a killed broker's listener lives on, accepting handshakes, until
/// the kernel tears down its io_uring rings). A live broker answers ApiVersions; nothing
/// else sharing the port through SO_REUSEPORT is expected.
fn probe_listen_address(addr: std::net::SocketAddr) -> Result<(), BrokerError> {
    use std::io::{Read, Write};
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // Refused, unreachable or timed out: nobody serves there; the bind decides the rest.
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&target, LISTEN_PROBE_TIMEOUT) else {
        return Ok(());
    };
    // A port of the ephemeral range nobody listens on can be picked as the connection's own
    // source port (a TCP self-connect), which would echo the request back as an answer.
    if s.local_addr().ok() == s.peer_addr().ok() {
        return Ok(());
    }
    // ApiVersions v0, correlation id 1, null client id.
    const REQUEST: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let mut size = [0u8; 4];
    let answered = s.set_read_timeout(Some(LISTEN_PROBE_TIMEOUT)).is_ok()
        && s.set_write_timeout(Some(LISTEN_PROBE_TIMEOUT)).is_ok()
        && s.write_all(&REQUEST).is_ok()
        && s.read_exact(&mut size).is_ok();
    if answered {
        return Err(BrokerError::Config(format!(
            "cannot listen on {addr}: a Kafka broker already serves it"
        )));
    }
    Ok(())
}

/// Accept errors are logged at most this often per shard.
const ACCEPT_ERROR_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Closes idle connections (`connections.max.idle.ms`) in the background queue.
fn spawn_idle_sweeper(ctx: &sluice_shard::ShardCtx, conns: &Rc<connections::Connections>) {
    let conns = conns.clone();
    let shutdown = ctx.shutdown().clone();
    let task = ctx.spawn_background(async move {
        while !shutdown.is_triggered() {
            sluice_shard::sleep(conns.sweep_interval()).await;
            let closed = conns.sweep(std::time::Instant::now());
            if closed > 0 {
                log::debug!("closed {closed} idle connection(s)");
            }
        }
    });
    match task {
        Ok(t) => t.detach(),
        Err(e) => log::error!("cannot spawn the idle-connection sweeper: {e}"),
    }
}

/// How long the start-up check waits for a connection to the listen address.
const LISTEN_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// One broker per data directory: an exclusive `flock` held for the process lifetime.
pub(crate) fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, BrokerError> {
    let path = dir.join(".lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::Io {
            op: "open",
            path: path.clone(),
            source: e,
        })?;
    if rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(BrokerError::Config(format!(
            "{} is in use by another sluice process",
            dir.display()
        )));
    }
    Ok(f)
}
