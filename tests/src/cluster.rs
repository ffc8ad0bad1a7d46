//! Multi-node harness: N real `sluice` processes on loopback, started with issue 12's
//! cluster contract, every ordered pair of nodes talking through its own fault-injecting
//! [`Proxy`], so a test can cut, black-hole or one-way-drop the traffic of any pair and
//! direction while clients still reach every node's Kafka listener directly.
//!
//! Node `i` (ids are 1..=N, as in the contract) is started as
//!
//! ```text
//! sluice start --node-id i --data-dir Di --listen 127.0.0.1:Ki --shards S \
//!   --rpc-listen 127.0.0.1:Ri --voters 1@A(i,1),2@A(i,2),3@A(i,3)
//! ```
//!
//! where `A(i,i)` is its own rpc listener and `A(i,j)` (j ≠ i) is the address of the proxy
//! `i→j`, which forwards to `127.0.0.1:Rj`. Nodes identify peers by id, not by address (the
//! contract says so), so each node may be given a different address for the same peer. Every
//! connection node `i` dials to node `j` goes through proxy `i→j`: its A side is `i`, its B
//! side `j`. Traffic *from* `i` *to* `j` therefore flows `i→j`'s A→B and `j→i`'s B→A; the
//! harness keeps a set of blocked directed pairs and sets both proxies accordingly, so faults
//! compose (isolate one node, then one-way drop another pair) instead of replacing each other.
//!
//! Each node is a [`Broker`] (same kill -9, restart with the same ports and data directory,
//! SIGSTOP/SIGCONT, logs), labelled "node i" so that when a test fails every node's logs are
//! dumped (each `Broker` dumps its own on drop during a panic).
//!
//! Tests that need a cluster call [`gate`] first and return early, printing why, when it
//! says no; see [`gate`] for the switch. The harness itself is also exercised by a stand-in
//! node (`tests/fixtures/fake_node.py`) that speaks the command-line contract and pings its
//! peers.
//!
//! The crate's test-cluster mode (`SLUICE_TEST_CLUSTER`, crate docs) starts its clusters
//! with [`start_test_cluster`]: the same contract, but nodes dial each other directly (no
//! proxies, as those suites inject no faults).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use rdkafka::admin::NewTopic;

use crate::kafka::{admin, admin_opts};
use crate::proxy::{Mode, Proxy};
use crate::{free_port, poll_until, sluice_bin, wire, Broker, BrokerConfig, TEST_SHARDS};

/// Environment switch for the tests that need a working cluster: `1` runs them (and fails if
/// the binary lacks the cluster flags), `0` skips them; unset means
/// [`CLUSTER_TESTS_BY_DEFAULT`].
pub const CLUSTER_TESTS_ENV: &str = "SLUICE_CLUSTER_TESTS";

/// Whether cluster tests run when [`CLUSTER_TESTS_ENV`] is unset (and the binary has the
/// cluster flags): a 3-node cluster serves replicated topics, so they do.
pub const CLUSTER_TESTS_BY_DEFAULT: bool = true;

/// Most nodes a test cluster may have: every ordered pair gets a proxy with its own threads.
pub const NODES_MAX: usize = 7;

/// Whether tests that need a real cluster may run now: `Err(reason)` to skip (the test
/// prints the reason and returns). Panics when [`CLUSTER_TESTS_ENV`] asks for the tests but
/// the binary cannot run them, or has an unknown value, so a typo never skips silently.
pub fn gate() -> Result<(), String> {
    let flags = binary_has_cluster_flags();
    match std::env::var(CLUSTER_TESTS_ENV).ok().as_deref() {
        Some("1") => {
            assert!(
                flags,
                "{CLUSTER_TESTS_ENV}=1 but `{} start --help` does not mention --rpc-listen \
                 and --voters",
                sluice_bin().display()
            );
            Ok(())
        }
        Some("0") => Err(format!("{CLUSTER_TESTS_ENV}=0")),
        Some(other) => panic!("{CLUSTER_TESTS_ENV} must be 0 or 1, not {other:?}"),
        None if !CLUSTER_TESTS_BY_DEFAULT => Err(format!(
            "cluster tests are off by default; set {CLUSTER_TESTS_ENV}=1 to run this test \
             (binary has the cluster flags: {flags})"
        )),
        None if !flags => Err(format!(
            "`{} start --help` does not mention --rpc-listen and --voters",
            sluice_bin().display()
        )),
        None => Ok(()),
    }
}

/// Skips the calling test (prints why and returns from it) unless [`gate`] allows it.
#[macro_export]
macro_rules! require_cluster {
    () => {
        if let Err(why) = $crate::cluster::gate() {
            eprintln!("SKIPPED (needs a working cluster): {why}");
            return;
        }
    };
}

/// Whether the binary's usage names the contract's cluster flags (`sluice start --help`
/// prints it to stdout; stderr is read too, where an older binary printed its usage).
pub fn binary_has_cluster_flags() -> bool {
    let out = Command::new(sluice_bin())
        .args(["start", "--help"])
        .output()
        .expect("run sluice start --help");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("--rpc-listen") && text.contains("--voters")
}

/// Options for a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    /// How many of the nodes (the first ones) are controller voters; `None`: all. The
    /// others are broker-only nodes: they dial the voters through the proxies, while the
    /// nodes that reach them use the rpc address they registered (no proxy).
    pub voters: Option<usize>,
    pub shards: u32,
    /// Appended to every node's arguments.
    pub extra_args: Vec<String>,
    /// Appended to node `i`'s arguments (index `i - 1`) after `extra_args`, with
    /// `{kafka_port}` replaced by the node's Kafka port (for a `--listen` of several
    /// listeners, which replaces the harness's own).
    pub node_args: Vec<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// A stand-in program instead of the real binary (the harness's own tests).
    pub bin: Option<PathBuf>,
    /// Every node serves the admin API (`/metrics`) on a port of its own.
    pub admin_ports: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            voters: None,
            shards: TEST_SHARDS,
            extra_args: Vec::new(),
            node_args: Vec::new(),
            env: Vec::new(),
            bin: None,
            admin_ports: false,
        }
    }
}

/// N nodes and the N·(N−1) proxies between them; see the module docs.
pub struct Cluster {
    /// Index `i - 1` is node `i`. Declared first so it drops first: nodes die before the
    /// proxies they talk through.
    nodes: Vec<Broker>,
    rpc_ports: Vec<u16>,
    /// `(i, j)` → the proxy node `i` dials node `j` through.
    proxies: BTreeMap<(usize, usize), Proxy>,
    /// Directed pairs `(from, to)` whose traffic is discarded.
    blocked: BTreeSet<(usize, usize)>,
}

impl Cluster {
    /// Starts `n` nodes with the default options and waits until every one is ready.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(ClusterConfig {
            nodes: n,
            ..ClusterConfig::default()
        })
    }

    pub fn start_with(cfg: ClusterConfig) -> Cluster {
        let n = cfg.nodes;
        assert!((1..=NODES_MAX).contains(&n), "{n} nodes (1..={NODES_MAX})");
        // Every port up front and all distinct: free_port releases what it found, so two
        // calls could name the same one.
        let ports = distinct_free_ports(2 * n);
        let (rpc_ports, kafka_ports) = (ports[..n].to_vec(), ports[n..].to_vec());
        let mut proxies = BTreeMap::new();
        for i in 1..=n {
            for j in (1..=n).filter(|&j| j != i) {
                let target: SocketAddr = ([127, 0, 0, 1], rpc_ports[j - 1]).into();
                proxies.insert((i, j), start_proxy(target, &ports));
            }
        }
        let voter_count = cfg.voters.unwrap_or(n);
        assert!(
            (1..=n).contains(&voter_count),
            "{voter_count} voters of {n} nodes"
        );
        let mut nodes = Vec::with_capacity(n);
        for i in 1..=n {
            let voters: Vec<String> = (1..=voter_count)
                .map(|j| {
                    let addr = if j == i {
                        SocketAddr::from(([127, 0, 0, 1], rpc_ports[i - 1]))
                    } else {
                        proxies[&(i, j)].addr()
                    };
                    format!("{j}@{addr}")
                })
                .collect();
            let mut args = vec![
                "--node-id".to_string(),
                i.to_string(),
                "--rpc-listen".to_string(),
                format!("127.0.0.1:{}", rpc_ports[i - 1]),
                "--voters".to_string(),
                voters.join(","),
            ];
            args.extend(cfg.extra_args.iter().cloned());
            let port = kafka_ports[i - 1].to_string();
            args.extend(
                cfg.node_args
                    .get(i - 1)
                    .into_iter()
                    .flatten()
                    .map(|a| a.replace("{kafka_port}", &port)),
            );
            // All spawned before any is awaited: a node may become ready only once a
            // quorum of its peers is up.
            nodes.push(Broker::spawn_with(BrokerConfig {
                shards: cfg.shards,
                extra_args: args,
                env: cfg.env.clone(),
                label: format!("node {i}"),
                bin: cfg.bin.clone(),
                port: Some(kafka_ports[i - 1]),
                pre_start: Vec::new(),
                admin_port: cfg.admin_ports.then(crate::free_port),
            }));
        }
        let mut cluster = Cluster {
            nodes,
            rpc_ports,
            proxies,
            blocked: BTreeSet::new(),
        };
        for node in &mut cluster.nodes {
            node.wait_ready();
        }
        cluster
    }

    /// The prologue most cluster tests share: starts the nodes of `cfg`, waits until
    /// node 1 lists every node as a broker (a topic of replication factor N needs N
    /// registered, else INVALID_REPLICATION_FACTOR), creates `topic` through node 1 and waits
    /// until node 1's Metadata names a leader for each of its partitions. Bounded by
    /// [`REGISTERED_TIMEOUT`] per wait. Call it on a multi-threaded runtime (it blocks in
    /// place while it waits).
    pub async fn start_with_topic(cfg: ClusterConfig, topic: &NewTopic<'_>) -> Cluster {
        let mut c = tokio::task::block_in_place(|| Cluster::start_with(cfg));
        let port = c.node(1).port();
        let all: Vec<i32> = (1..=c.len() as i32).collect();
        tokio::task::block_in_place(|| {
            poll_until(REGISTERED_TIMEOUT, "every node registered", || {
                let (mut ids, _) = metadata_brokers(port)?;
                ids.sort_unstable();
                (ids == all).then_some(())
            })
        });
        let res = admin(&c.node(1).bootstrap())
            .create_topics([topic], &admin_opts())
            .await
            .expect("CreateTopics request");
        assert!(
            res.iter().all(|r| r.is_ok()),
            "CreateTopics {}: {res:?}",
            topic.name
        );
        let partitions = usize::try_from(topic.num_partitions).expect("a partition count");
        tokio::task::block_in_place(|| {
            poll_until(REGISTERED_TIMEOUT, "a leader for every partition", || {
                wire::partition_leaders(port, topic.name)
                    .filter(|ps| ps.len() == partitions && ps.iter().all(|&(_, l)| l > 0))
                    .map(|_| ())
            })
        });
        c
    }

    /// Node ids, 1..=N.
    pub fn ids(&self) -> std::ops::RangeInclusive<usize> {
        1..=self.nodes.len()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's Kafka listener, comma-separated, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(Broker::bootstrap)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `id` (kill9, restart, pause/resume, stop, logs, data dir).
    pub fn node(&mut self, id: usize) -> &mut Broker {
        self.check_id(id);
        &mut self.nodes[id - 1]
    }

    /// Node `id`'s own rpc listener (what its peers' proxies forward to).
    pub fn rpc_addr(&self, id: usize) -> SocketAddr {
        self.check_id(id);
        ([127, 0, 0, 1], self.rpc_ports[id - 1]).into()
    }

    /// The proxy node `from` dials node `to` through, for faults the methods below do not
    /// cover (delays, counters). A later fault method or [`Cluster::heal`] resets its modes.
    pub fn proxy(&self, from: usize, to: usize) -> &Proxy {
        self.check_pair(from, to);
        &self.proxies[&(from, to)]
    }

    /// The node id whose Kafka listener is `port`, if any (map Metadata's broker ports back).
    pub fn id_of_kafka_port(&self, port: u16) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.port() == port)
            .map(|i| i + 1)
    }

    /// Discards all traffic between `id` and every other node, both ways; clients still
    /// reach it. Adds to the faults in place.
    pub fn isolate(&mut self, id: usize) {
        self.check_id(id);
        for j in self.ids().filter(|&j| j != id) {
            self.blocked.insert((id, j));
            self.blocked.insert((j, id));
        }
        self.apply();
    }

    /// Discards all traffic between the two groups, both ways. Every node must be in exactly
    /// one group. Replaces the node-to-node faults in place.
    pub fn split(&mut self, majority: &[usize], minority: &[usize]) {
        let all: BTreeSet<usize> = majority.iter().chain(minority).copied().collect();
        assert!(
            all.len() == self.len() && all == self.ids().collect(),
            "split {majority:?} / {minority:?}: every node in exactly one group"
        );
        self.blocked.clear();
        self.block_between(majority, minority);
        self.apply();
    }

    /// `left` and `right` cannot talk to each other, `middle` talks to both (Jepsen's bridge:
    /// A↔B↔C without A↔C). Replaces the node-to-node faults in place.
    pub fn bridge(&mut self, left: &[usize], middle: usize, right: &[usize]) {
        let all: BTreeSet<usize> = left.iter().chain(right).chain([&middle]).copied().collect();
        assert!(
            all.len() == self.len() && all == self.ids().collect(),
            "bridge {left:?} / {middle} / {right:?}: every node in exactly one place"
        );
        self.blocked.clear();
        self.block_between(left, right);
        self.apply();
    }

    /// Discards what `from` sends to `to`; the other direction is untouched. Adds to the
    /// faults in place.
    pub fn drop_one_way(&mut self, from: usize, to: usize) {
        self.check_pair(from, to);
        self.blocked.insert((from, to));
        self.apply();
    }

    /// Every pair passes again. Connections that lost bytes are reset by the proxies (see
    /// `proxy.rs`); nodes must reconnect.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.apply();
    }

    /// The directed pairs currently blocked.
    pub fn blocked(&self) -> &BTreeSet<(usize, usize)> {
        &self.blocked
    }

    /// SIGTERM to every running node at once, then waits for each; panics unless every one
    /// exited 0 (the contract's clean stop). Returns each node's status.
    pub fn stop_all(&mut self) -> Vec<(usize, ExitStatus)> {
        let running: Vec<usize> = self
            .ids()
            .filter(|&id| self.nodes[id - 1].pid().is_some())
            .collect();
        for &id in &running {
            self.nodes[id - 1].begin_stop();
        }
        let statuses: Vec<(usize, ExitStatus)> = running
            .iter()
            .map(|&id| (id, self.nodes[id - 1].wait_stopped()))
            .collect();
        let bad: Vec<_> = statuses.iter().filter(|(_, s)| !s.success()).collect();
        assert!(
            bad.is_empty(),
            "after SIGTERM, nodes exited uncleanly: {bad:?} (want exit 0 from all of {running:?})"
        );
        statuses
    }

    /// The controller's node id as node `ask` reports it ([`controller_id`]), `None` if it
    /// does not answer or names no node of this cluster.
    pub fn controller_seen_by(&self, ask: usize) -> Option<usize> {
        self.check_id(ask);
        let id = controller_id(self.nodes[ask - 1].port())?;
        usize::try_from(id)
            .ok()
            .filter(|id| (1..=self.len()).contains(id))
    }

    /// The controller's node id once every running, unpaused node agrees on it (bounded by
    /// `timeout`; panics then).
    pub fn controller(&self, timeout: Duration) -> usize {
        crate::poll_until(timeout, "nodes agreeing on a controller", || {
            let mut seen = self
                .ids()
                .filter(|&id| self.nodes[id - 1].pid().is_some() && !self.nodes[id - 1].is_paused())
                .map(|id| self.controller_seen_by(id));
            let first = seen.next()??;
            seen.all(|c| c == Some(first)).then_some(first)
        })
    }

    /// Prints every node's logs (also done automatically when a test panics).
    pub fn dump_logs(&self) {
        for node in &self.nodes {
            node.dump_logs();
        }
    }

    fn block_between(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Sets every proxy from the blocked set: proxy `i→j` carries i's bytes to j (A→B) and
    /// j's bytes to i (B→A).
    fn apply(&self) {
        for (&(i, j), proxy) in &self.proxies {
            let mode = |from, to| {
                if self.blocked.contains(&(from, to)) {
                    Mode::Drop
                } else {
                    Mode::Pass
                }
            };
            proxy.set(mode(i, j), mode(j, i));
        }
    }

    fn check_id(&self, id: usize) {
        assert!(
            (1..=self.len()).contains(&id),
            "node {id} (ids are 1..={})",
            self.len()
        );
    }

    fn check_pair(&self, from: usize, to: usize) {
        self.check_id(from);
        self.check_id(to);
        assert_ne!(from, to, "a node has no proxy to itself");
    }
}

/// The controller id the Kafka listener on loopback `port` reports (Metadata v1's
/// `controller_id`; -1 when it knows none), `None` if it does not answer. Raw wire, because
/// librdkafka does not expose the field.
pub fn controller_id(port: u16) -> Option<i32> {
    metadata_brokers(port).map(|(_, controller)| controller)
}

/// The broker ids and the controller id that the Kafka listener on loopback `port` lists
/// in Metadata v1, `None` if it does not answer.
pub fn metadata_brokers(port: u16) -> Option<(Vec<i32>, i32)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    // Metadata v1 with an empty topic list: brokers and the controller only.
    const CORRELATION: i32 = 7;
    let mut req = wire::header(3, 1, CORRELATION);
    req.extend_from_slice(&0i32.to_be_bytes());
    s.write_all(&wire::frame(&req)).ok()?;
    let resp = wire::read_response(&mut s)?;
    let mut d = wire::Dec::new(&resp);
    if d.i32() != CORRELATION {
        return None;
    }
    // brokers: [node_id, host, port, rack]
    let count = d.i32();
    let mut ids = Vec::new();
    for _ in 0..count.clamp(0, NODES_MAX as i32 * 16) {
        ids.push(d.i32());
        d.str();
        d.i32();
        d.nstr();
    }
    Some((ids, d.i32()))
}

/// How long a test cluster may take, once every node printed its ready line, until every
/// node lists every node as a broker.
const REGISTERED_TIMEOUT: Duration = Duration::from_secs(60);

/// Test-cluster mode of [`Broker::start_with`] (see the crate docs): `n` nodes of `config`,
/// connected directly (no proxies: these tests inject no faults), each also given
/// `--default-replication-factor n`. Returns node 1 holding the others once every node
/// lists all `n` as brokers, so that a topic created at once gets its `n` replicas.
pub(crate) fn start_test_cluster(config: BrokerConfig, n: usize) -> Broker {
    assert!((2..=NODES_MAX).contains(&n), "{n} nodes (2..={NODES_MAX})");
    let mut ports = distinct_free_ports(2 * n + 1);
    if let Some(p) = config.port {
        ports.retain(|&q| q != p);
    }
    ports.truncate(2 * n);
    let rpc_ports = ports[..n].to_vec();
    let mut kafka_ports = ports[n..].to_vec();
    if let Some(p) = config.port {
        kafka_ports[0] = p;
    }
    let voters: Vec<String> = (1..=n)
        .map(|j| format!("{j}@127.0.0.1:{}", rpc_ports[j - 1]))
        .collect();
    let voters = voters.join(",");
    let mut nodes: Vec<Broker> = (1..=n)
        .map(|i| {
            // The test's own flags first, the cluster's last: a repeated flag takes its
            // last value, and a test's `--node-id` must not give two nodes the same id.
            let mut args = config.extra_args.clone();
            args.extend([
                "--node-id".to_string(),
                i.to_string(),
                "--rpc-listen".to_string(),
                format!("127.0.0.1:{}", rpc_ports[i - 1]),
                "--voters".to_string(),
                voters.clone(),
                "--default-replication-factor".to_string(),
                n.to_string(),
            ]);
            // All spawned before any is awaited: a node may become ready only once a
            // quorum of its peers is up.
            Broker::spawn_with(BrokerConfig {
                extra_args: args,
                label: format!("{} (node {i} of {n})", config.label),
                port: Some(kafka_ports[i - 1]),
                // Node 1 stands for the broker the test asked for; one port serves one node.
                admin_port: config.admin_port.filter(|_| i == 1),
                ..config.clone()
            })
        })
        .collect();
    for node in &mut nodes {
        node.wait_ready();
    }
    let want: Vec<i32> = (1..=n as i32).collect();
    crate::poll_until(
        REGISTERED_TIMEOUT,
        "every node of the test cluster listing every node as a broker",
        || {
            nodes
                .iter()
                .all(|node| {
                    metadata_brokers(node.port()).is_some_and(|(mut ids, _)| {
                        ids.sort_unstable();
                        ids == want
                    })
                })
                .then_some(())
        },
    );
    let mut node1 = nodes.remove(0);
    node1.peers = nodes;
    node1
}

/// `n` different loopback ports that were free a moment ago.
pub fn distinct_free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    for _ in 0..n * 16 {
        if ports.len() == n {
            break;
        }
        ports.insert(free_port());
    }
    assert_eq!(ports.len(), n, "no {n} distinct free ports");
    ports.into_iter().collect()
}

/// A proxy to `target` whose own port is none of the ports chosen for nodes (this
/// cluster's or, tests running in parallel, another's: `crate::is_reserved`): those were
/// free when chosen but are not bound until the nodes start, so the kernel could hand one
/// to a proxy meanwhile.
fn start_proxy(target: SocketAddr, reserved: &[u16]) -> Proxy {
    for _ in 0..64 {
        let p = Proxy::start(target);
        let port = p.addr().port();
        if !reserved.contains(&port) && !crate::is_reserved(port) {
            return p;
        }
    }
    panic!("no proxy port outside the reserved ports after 64 tries");
}
