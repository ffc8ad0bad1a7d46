//! Test harness: runs the real `sluice` binary as a child process on a free loopback port.
//!
//! The integration tests in `tests/tests/` drive the broker only through its command-line
//! contract (`sluice start --data-dir D --listen H:P --shards N`, a `sluice: ready` line on
//! stdout, SIGTERM = clean shutdown) and the Kafka wire protocol, exactly as a user would.
//!
//! Which binary: `$SLUICE_BIN` if set, else `<target>/release/sluice`, where `<target>` is
//! `$CARGO_TARGET_DIR` or the workspace's `target/`. This crate cannot depend on the binary
//! (it lives in another package, so `CARGO_BIN_EXE_sluice` does not exist here), so the test
//! command must build it first: `cargo build --release -p sluice` — `scripts/test.sh` does.
//!
//! On a failing test the broker's stderr and stdout (kept in files in its temporary
//! directory) are printed when the [`Broker`] is dropped during the panic.
//!
//! Test-cluster mode: with `SLUICE_TEST_CLUSTER=N` ([`TEST_CLUSTER_ENV`], N in
//! 2..=[`cluster::NODES_MAX`]) [`Broker::start`] and [`Broker::start_with`] start an N-node
//! cluster (issue 12's contract, nodes talking directly, every node given
//! `--default-replication-factor N`, so every topic a test creates without naming a
//! replication factor, and every auto-created one, has N replicas) and hand out node 1: its
//! [`Broker::bootstrap`] is what clients dial, and they find the other nodes through
//! Metadata. That runs the client suites unchanged against a replicated cluster. What acts on
//! the process (kill -9, restart, stop, pause, data dir, logs) acts on node 1 alone; tests
//! that rely on the broker being the only process call [`skip_in_cluster_mode!`] first,
//! which prints why and returns.
//!
//! Multi-node tests use [`cluster::Cluster`] (N brokers, a fault-injecting [`proxy::Proxy`]
//! per ordered pair) and check what clients recorded with [`history`] (driven by
//! [`workload`]).

pub mod cluster;
pub mod history;
pub mod kafka;
pub mod procfs;
pub mod proxy;
pub mod tls;
pub mod wire;
pub mod workload;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// How long a (re)start may take before the harness gives up: generous, because recovery
/// after kill -9 may rescan segments and CI machines are slow, but bounded so a broker that
/// never becomes ready fails the test instead of hanging it.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a SIGTERM'd broker may take to flush, fsync and exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Shards per broker in tests: more than one, so cross-shard routing is always exercised.
pub const TEST_SHARDS: u32 = 2;
/// At most this much of each broker log is printed on failure, from the end.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Absolute path of the `sluice` binary under test (see the module docs for the lookup).
pub fn sluice_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(bin.is_file(), "SLUICE_BIN={} is not a file", bin.display());
        return bin;
    }
    let bin = target_dir().join("release").join("sluice");
    assert!(
        bin.is_file(),
        "broker binary {} not found: build it first with `cargo build --release -p sluice` \
         (scripts/test.sh does this), or point SLUICE_BIN at a sluice binary",
        bin.display()
    );
    warn_if_stale(&bin);
    bin
}

/// The cargo target directory the workspace builds into.
fn target_dir() -> PathBuf {
    // Runtime first (the environment the tests run in), then what cargo saw at compile time,
    // then the workspace default: this crate's manifest dir is <workspace>/tests.
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return absolute_from_workspace(PathBuf::from(dir));
    }
    if let Some(dir) = option_env!("CARGO_TARGET_DIR") {
        return absolute_from_workspace(PathBuf::from(dir));
    }
    workspace_root().join("target")
}

fn absolute_from_workspace(dir: PathBuf) -> PathBuf {
    if dir.is_absolute() {
        dir
    } else {
        workspace_root().join(dir)
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Runs `tests/python/<script>` with the test venv's interpreter (made by
/// scripts/install-test-deps.sh); its stdout and stderr, and its exit code.
pub fn python_script(script: &str, args: &[&str]) -> (String, Option<i32>) {
    let root = workspace_root();
    let out = Command::new(root.join("tests/.venv/bin/python"))
        .arg(root.join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code())
}

/// [`python_script`], failing the test unless the script succeeds; its output.
pub fn python_script_ok(script: &str, args: &[&str]) -> String {
    let (out, code) = python_script(script, args);
    assert_eq!(code, Some(0), "{script} {args:?}:\n{out}");
    out
}

/// A stale release binary silently tests old code; say so loudly (but don't fail: the
/// sources may have been touched without a semantic change).
fn warn_if_stale(bin: &Path) {
    let Ok(bin_time) = fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let root = workspace_root();
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    for dir in ["src", "shard", "tuning"] {
        newest_rs(&root.join(dir), &mut newest, 0);
    }
    if let Some((t, path)) = newest {
        if t > bin_time {
            eprintln!(
                "WARNING: {} is older than {}; run `cargo build --release -p sluice` \
                 (scripts/test.sh does) or these tests exercise an old broker",
                bin.display(),
                path.display()
            );
        }
    }
}

fn newest_rs(dir: &Path, newest: &mut Option<(SystemTime, PathBuf)>, depth: u32) {
    // Depth-bounded so a symlink loop cannot make the harness walk forever.
    if depth > 8 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            newest_rs(&path, newest, depth + 1);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if let Ok(t) = meta.modified() {
                if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                    *newest = Some((t, path));
                }
            }
        }
    }
}

/// Environment switch for test-cluster mode (module docs): unset, empty or `1` = one
/// process; `N` in 2..=[`cluster::NODES_MAX`] = an N-node cluster at replication factor N.
pub const TEST_CLUSTER_ENV: &str = "SLUICE_TEST_CLUSTER";

/// The node count [`TEST_CLUSTER_ENV`] asks for, `None` for one process. Panics on any other
/// value, so a typo never quietly runs the single-node suite instead.
pub fn test_cluster_nodes() -> Option<usize> {
    let v = std::env::var(TEST_CLUSTER_ENV).ok()?;
    match v.trim() {
        "" | "1" => None,
        n => match n.parse::<usize>() {
            Ok(n) if (2..=cluster::NODES_MAX).contains(&n) => Some(n),
            _ => panic!(
                "{TEST_CLUSTER_ENV} must be 1 or a node count in 2..={}, not {v:?}",
                cluster::NODES_MAX
            ),
        },
    }
}

/// Skips the calling test in test-cluster mode (module docs), printing `reason` (why it
/// cannot run against a cluster), so that no test is left out silently.
#[macro_export]
macro_rules! skip_in_cluster_mode {
    ($reason:expr) => {
        if let Some(n) = $crate::test_cluster_nodes() {
            eprintln!("SKIPPED ({}={n}): {}", $crate::TEST_CLUSTER_ENV, $reason);
            return;
        }
    };
}

/// A loopback port that was free a moment ago, and never handed out before in this test
/// process. The broker binds it right after. Tests run in parallel threads, and the
/// kernel readily hands a port just released to the next bind of port 0: without the
/// process-wide record, one test's proxy (or another test's `free_port`) could take a port
/// chosen for another's broker before that broker binds it. Ports stay recorded (a node
/// restarted binds its port again), and [`is_reserved`] lets proxies skip them. Another
/// process taking the port in the window is accepted (a clash shows up as a "broker exited
/// before ready" failure with the bind error in its stderr).
pub fn free_port() -> u16 {
    let mut reserved = RESERVED_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1024 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if reserved.insert(port) {
            return port;
        }
    }
    panic!("no loopback port left that this process has not handed out");
}

/// Ports [`free_port`] handed out in this process.
static RESERVED_PORTS: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Whether [`free_port`] handed `port` out (to a broker that may not have bound it yet).
pub fn is_reserved(port: u16) -> bool {
    RESERVED_PORTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&port)
}

/// Options for starting a broker.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    pub shards: u32,
    /// Extra arguments appended after the contract's flags.
    pub extra_args: Vec<String>,
    /// Extra environment variables for the broker process (e.g. test switches).
    pub env: Vec<(String, String)>,
    /// Names this process in log markers and failure dumps ("node 2"), so a cluster's dumps
    /// say whose log is whose.
    pub label: String,
    /// Run this program instead of [`sluice_bin`] (the cluster harness's own test runs a
    /// stand-in node that speaks the command-line contract).
    pub bin: Option<PathBuf>,
    /// The Kafka listener's port; [`free_port`] when `None`. A cluster picks every port it
    /// needs up front so that none is handed out twice.
    pub port: Option<u16>,
    /// `sluice` commands run before the first start, each with `--data-dir` of this broker
    /// appended (`["users", "add", ...]`); each must succeed.
    pub pre_start: Vec<Vec<String>>,
    /// Serve the admin API (`/metrics`) on this loopback port. `None`: `--admin-listen off`,
    /// so brokers of parallel tests never race for the default port.
    pub admin_port: Option<u16>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            shards: TEST_SHARDS,
            extra_args: Vec::new(),
            env: Vec::new(),
            label: "broker".to_string(),
            bin: None,
            port: None,
            pre_start: Vec::new(),
            admin_port: None,
        }
    }
}

/// A running (or stopped) broker process with its own data directory and port.
///
/// The data directory and port stay the same across [`Broker::kill9`] / [`Broker::stop`] +
/// [`Broker::restart`], so a restart sees the previous incarnation's data, and clients
/// configured with [`Broker::bootstrap`] reconnect to it.
pub struct Broker {
    bin: PathBuf,
    config: BrokerConfig,
    /// Holds the data dir and the log files; removed on drop.
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// Copies the broker's stdout to `stdout.log` after the ready line was seen.
    stdout_pump: Option<thread::JoinHandle<()>>,
    /// How many times the broker was started, for log markers.
    incarnation: u32,
    /// Sent SIGSTOP and not yet SIGCONT.
    paused: bool,
    /// Reports the ready line of the process last spawned, until [`Broker::wait_ready`].
    ready_rx: Option<mpsc::Receiver<String>>,
    /// In test-cluster mode (module docs) this is node 1 and these are nodes 2..=N, which
    /// live (and die, dumping their logs on a failure) with it.
    peers: Vec<Broker>,
}

impl Broker {
    /// Starts a broker with [`TEST_SHARDS`] shards and waits until it is ready.
    pub fn start() -> Broker {
        Broker::start_with(BrokerConfig::default())
    }

    /// In test-cluster mode (module docs), node 1 of a cluster started with `config` on
    /// every node.
    pub fn start_with(config: BrokerConfig) -> Broker {
        if let Some(n) = test_cluster_nodes() {
            return cluster::start_test_cluster(config, n);
        }
        let mut broker = Broker::spawn_with(config);
        broker.wait_ready();
        broker
    }

    /// Starts the process without waiting for its ready line; [`Broker::wait_ready`] waits.
    /// For nodes that become ready only together (a cluster whose nodes wait for a quorum).
    pub fn spawn_with(config: BrokerConfig) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let bin = config.bin.clone().unwrap_or_else(sluice_bin);
        let port = config.port.unwrap_or_else(free_port);
        let mut broker = Broker {
            bin,
            config,
            dir,
            data_dir,
            port,
            child: None,
            stdout_pump: None,
            incarnation: 0,
            paused: false,
            ready_rx: None,
            peers: Vec::new(),
        };
        broker.spawn();
        broker
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<admin port>`, when the config asked for the admin API.
    pub fn admin_url(&self) -> Option<String> {
        self.config
            .admin_port
            .map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id of the running broker.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Files the broker still holds open although they were removed (`/proc/<pid>/fd`
    /// links ending in " (deleted)"): their disk space is not freed while they stay open.
    /// In test-cluster mode, those of every node, each prefixed with the node's label.
    pub fn open_deleted_files(&self) -> Vec<String> {
        let mut files = self.own_open_deleted_files();
        for peer in &self.peers {
            let label = peer.label();
            files.extend(
                peer.own_open_deleted_files()
                    .into_iter()
                    .map(|f| format!("{label}: {f}")),
            );
        }
        files
    }

    fn own_open_deleted_files(&self) -> Vec<String> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return Vec::new();
        };
        fds.flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .filter(|p| p.ends_with(" (deleted)"))
            .collect()
    }

    /// Every node's id and Kafka port, as Metadata should list them: this broker's alone
    /// (its `--node-id`, 0 by default) on one node, nodes 1..=N in test-cluster mode.
    pub fn node_ports(&self) -> Vec<(i32, u16)> {
        if !self.peers.is_empty() {
            return std::iter::once(self)
                .chain(&self.peers)
                .enumerate()
                .map(|(i, b)| (i as i32 + 1, b.port))
                .collect();
        }
        let args = &self.config.extra_args;
        let id = args
            .iter()
            .rposition(|a| a == "--node-id")
            .and_then(|i| args.get(i + 1))
            .map_or(0, |v| v.parse().expect("--node-id value"));
        vec![(id, self.port)]
    }

    /// The other nodes in test-cluster mode (module docs); empty otherwise.
    pub fn peers(&self) -> &[Broker] {
        &self.peers
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// SIGSTOP: the process is frozen (no timers, no heartbeats, sockets open) until
    /// [`Broker::resume`]; what a long GC pause or a stalled VM looks like to its peers.
    pub fn pause(&mut self) {
        let pid = self.pid().expect("pause: broker is not running");
        assert!(!self.paused, "pause: already paused");
        signal(pid, "STOP");
        self.paused = true;
        self.log_marker("harness: SIGSTOP");
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&mut self) {
        let pid = self.pid().expect("resume: broker is not running");
        assert!(self.paused, "resume: not paused");
        signal(pid, "CONT");
        self.paused = false;
        self.log_marker("harness: SIGCONT");
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// SIGKILL: no flush, no fsync, no goodbye. Waits until the process is gone so the
    /// next start cannot race the dying process for the port or the data directory.
    /// A paused process dies as well (SIGKILL needs no SIGCONT).
    pub fn kill9(&mut self) {
        self.paused = false;
        let mut child = self.child.take().expect("kill9: broker is not running");
        // Child::kill sends SIGKILL on Unix. It errors only if the child was already
        // reaped; an already-exited (zombie) child is still fine to kill.
        let _ = child.kill();
        let status = child.wait().expect("wait for killed broker");
        self.join_stdout_pump();
        self.log_marker(&format!("harness: kill -9 -> {status}"));
    }

    /// SIGTERM and wait (bounded) for the broker to exit; returns its exit status. The
    /// contract says SIGTERM means flush + fsync + exit 0, so callers usually assert success.
    pub fn stop(&mut self) -> ExitStatus {
        self.begin_stop();
        self.wait_stopped()
    }

    /// Sends SIGTERM (after SIGCONT if paused: a stopped process would hold the signal
    /// pending) without waiting; [`Broker::wait_stopped`] waits. For stopping the nodes of a
    /// cluster together, so none waits for a peer already gone.
    pub fn begin_stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let pid = self.pid().expect("stop: broker is not running");
        signal(pid, "TERM");
    }

    /// Waits (up to [`STOP_TIMEOUT`]) for the exit after [`Broker::begin_stop`]; kills the
    /// process and panics if it does not come.
    pub fn wait_stopped(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop: broker is not running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.join_stdout_pump();
                // No dump here: Drop prints the logs while this panic unwinds.
                panic!("broker did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed it)");
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_stdout_pump();
        self.log_marker(&format!("harness: SIGTERM -> {status}"));
        status
    }

    /// [`Broker::stop`] and assert the clean exit the contract promises.
    pub fn stop_ok(&mut self) {
        let status = self.stop();
        if !status.success() {
            panic!("broker exited with {status} after SIGTERM, expected exit 0");
        }
    }

    /// Waits up to `timeout` for the broker to exit by itself; its status, or `None` if it
    /// is still running then (it is left running).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self
                .child
                .as_mut()
                .expect("wait_exit: broker is not running");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                self.join_stdout_pump();
                self.log_marker(&format!("harness: exited by itself -> {status}"));
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the broker wrote to stderr so far, over all its incarnations.
    pub fn stderr_log(&self) -> String {
        fs::read_to_string(self.log_path("stderr.log")).unwrap_or_default()
    }

    /// Everything the broker wrote to stdout so far (copied as it comes), over all its
    /// incarnations.
    pub fn stdout_log(&self) -> String {
        fs::read_to_string(self.log_path("stdout.log")).unwrap_or_default()
    }

    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// Environment of the next (re)start.
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.config.env = env;
    }

    /// Starts the broker again on the same port and data dir and waits until it is ready.
    /// A broker that is still running is killed with SIGKILL first.
    pub fn restart(&mut self) {
        self.respawn();
        self.wait_ready();
    }

    /// [`Broker::restart`] without waiting for the ready line ([`Broker::wait_ready`]).
    pub fn respawn(&mut self) {
        if self.child.is_some() {
            self.kill9();
        }
        self.spawn();
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log_marker(&self, line: &str) {
        for name in ["stderr.log", "stdout.log"] {
            if let Ok(mut f) = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path(name))
            {
                let _ = writeln!(f, "==== {line}");
            }
        }
    }

    fn spawn(&mut self) {
        if self.incarnation == 0 {
            for args in &self.config.pre_start {
                let out = Command::new(&self.bin)
                    .args(args)
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .output()
                    .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
                assert!(
                    out.status.success(),
                    "sluice {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        self.incarnation += 1;
        self.log_marker(&format!("harness: start #{}", self.incarnation));
        // Append, so the logs of every incarnation survive for the failure dump.
        let stderr = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path("stderr.log"))
            .expect("open stderr.log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("start")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(self.bootstrap())
            .arg("--shards")
            .arg(self.config.shards.to_string())
            .arg("--admin-listen")
            .arg(match self.config.admin_port {
                Some(port) => format!("127.0.0.1:{port}"),
                None => "off".to_string(),
            })
            .args(&self.config.extra_args)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        if std::env::var_os("RUST_BACKTRACE").is_none() {
            cmd.env("RUST_BACKTRACE", "1");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));

        // A thread reads stdout line by line: it reports the ready line over a channel and
        // then keeps copying stdout to a file, so the broker never blocks on a full pipe.
        let stdout = child.stdout.take().expect("piped stdout");
        let mut out_log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path("stdout.log"))
            .expect("open stdout.log");
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let pump = thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out_log, "{line}");
                if line.starts_with("sluice: ready") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
            // EOF: dropping ready_tx (if still held) tells the waiter stdout closed first.
        });
        self.child = Some(child);
        self.stdout_pump = Some(pump);
        self.ready_rx = Some(ready_rx);
    }

    /// Waits (up to [`READY_TIMEOUT`]) for the ready line of the process last spawned;
    /// panics with its logs if it exits first or never gets there.
    pub fn wait_ready(&mut self) {
        let ready_rx = self
            .ready_rx
            .take()
            .expect("wait_ready: no start to wait for");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    self.check_ready_line(&line);
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without a ready line: the process is exiting or gone.
                    let status = self.wait_exit_briefly();
                    self.fail_start(&format!(
                        "broker exited before ready (status: {status}); it closed stdout \
                         without printing a `sluice: ready` line"
                    ));
                }
            }
            let exited = self.child.as_mut().unwrap().try_wait().expect("try_wait");
            if let Some(status) = exited {
                self.fail_start(&format!("broker exited before ready with {status}"));
            }
            if Instant::now() >= deadline {
                self.fail_start(&format!(
                    "broker printed no `sluice: ready` line within {READY_TIMEOUT:?}"
                ));
            }
        }
    }

    /// The ready line must name the address we asked for; a mismatch means the flags were
    /// not honoured and clients would talk to something else.
    fn check_ready_line(&mut self, line: &str) {
        let want = format!("listen={}", self.bootstrap());
        if line.contains("listen=") && !line.split_whitespace().any(|w| w == want) {
            self.fail_start(&format!("ready line `{line}` does not contain `{want}`"));
        }
    }

    /// After stdout closed, give the process a moment to be reaped, for a useful status.
    fn wait_exit_briefly(&mut self) -> String {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.to_string();
            }
            thread::sleep(Duration::from_millis(10));
        }
        "still running after closing stdout".to_string()
    }

    fn fail_start(&mut self, why: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stdout_pump();
        // Drop prints the logs while this panic unwinds (the Broker is always alive here).
        panic!(
            "{why}\n  binary: {}\n  args: start --data-dir {} --listen {} --shards {} {}",
            self.bin.display(),
            self.data_dir.display(),
            self.bootstrap(),
            self.config.shards,
            self.config.extra_args.join(" ")
        );
    }

    fn join_stdout_pump(&mut self) {
        // The pump ends at EOF, which comes once the process is dead (unless a grandchild
        // inherited stdout; the broker spawns none).
        if let Some(pump) = self.stdout_pump.take() {
            let _ = pump.join();
        }
    }

    /// Prints the tail of the broker's stderr and stdout logs to the test's stderr.
    pub fn dump_logs(&self) {
        let label = &self.config.label;
        for name in ["stderr.log", "stdout.log"] {
            let path = self.log_path(name);
            eprintln!("----- {label} {name} ({}) -----", path.display());
            match tail(&path, LOG_TAIL_BYTES) {
                Ok(text) => eprintln!("{text}"),
                Err(e) => eprintln!("(unreadable: {e})"),
            }
            eprintln!("----- end of {label} {name} -----");
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stdout_pump();
        // Drop runs during unwinding of a failed test: that is when the logs are needed.
        if thread::panicking() {
            self.dump_logs();
        }
        // Soaks keep every node's log (`SLUICE_TEST_LOGS=DIR`): a rare event that did not
        // fail this run may explain one that fails another.
        if let Some(keep) = std::env::var_os("SLUICE_TEST_LOGS") {
            let name = self
                .dir
                .path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = std::fs::create_dir_all(&keep);
            let _ = std::fs::copy(
                self.log_path("stderr.log"),
                Path::new(&keep).join(format!(
                    "{name}-{}.log",
                    self.config.label.replace(' ', "-")
                )),
            );
        }
    }
}

/// Sends a signal with the system `kill` command (no libc dependency for one syscall).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed: {status}");
}

fn tail(path: &Path, max: u64) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text.insert_str(0, &format!("[... {start} earlier bytes omitted ...]\n"));
    }
    Ok(text)
}

/// Polls `cond` until it returns `Some` or `timeout` passes; the poll interval is short
/// because each check is cheap. For conditions with no event to await (metadata settling,
/// a counter reaching a value).
pub fn poll_until<T>(timeout: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(25));
    }
}
