//! Controller nodes on loopback, each on its own thread with its own glommio executor and
//! data dir: election, registration, forwarding, failover, restart from the WAL, a
//! broker-only node, a torn WAL tail, the cluster of one, and metadata snapshots (log and
//! WAL compaction, restart from them, a lagging voter and a new broker-only node catching
//! up from them). Waits are "until it happens"
//! with a generous bound, never timing assertions.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_cluster::node::transport_cluster_id;
use sluice_cluster::wire::{decode_answer, method, status, Command, FetchRequest, FetchResponse};
use sluice_cluster::{ClusterConfig, ControllerNode, Update};
use sluice_meta::{decode_batch, MetadataImage};
use sluice_meta::{Answer, Endpoint, LegacyState, LegacyTopic, NewTopic, TopicImage};
use sluice_rpc::{Response, Transport, TransportConfig};
use sluice_rpc::{Timeouts, Voter};

/// Bound on every "until it happens" wait.
const PATIENCE: Duration = Duration::from_secs(60);

type LocalFut<T> = Pin<Box<dyn Future<Output = T>>>;
type Job = Box<dyn FnOnce(Rc<ControllerNode>) -> LocalFut<()> + Send>;

/// A node running on its own thread; jobs run on its executor.
struct Node {
    id: i32,
    jobs: mpsc::Sender<Option<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Node {
    fn start(cfg: ClusterConfig) -> Node {
        let id = cfg.node_id;
        let (tx, rx) = mpsc::channel::<Option<Job>>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(1 << 20)
                .ring_depth(64)
                .make()
                .expect("glommio executor");
            ex.run(async move {
                let node = Rc::new(ControllerNode::start(cfg).await.expect("start node"));
                ready_tx.send(()).unwrap();
                loop {
                    match rx.try_recv() {
                        Ok(Some(job)) => {
                            glommio::spawn_local(job(node.clone())).detach();
                        }
                        Ok(None) | Err(mpsc::TryRecvError::Disconnected) => break,
                        Err(mpsc::TryRecvError::Empty) => {
                            glommio::timer::sleep(Duration::from_millis(5)).await
                        }
                    }
                }
                // Dropping the executor with the node in it: a crash, as far as the other
                // nodes and the WAL are concerned (nothing is flushed on the way out).
            });
        });
        ready_rx
            .recv_timeout(PATIENCE)
            .expect("node started in time");
        Node {
            id,
            jobs: tx,
            thread: Some(thread),
        }
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(Rc<ControllerNode>) -> LocalFut<T> + Send + 'static,
    ) -> T {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |n| {
            Box::pin(async move {
                let v = f(n).await;
                let _ = tx.send(v);
            })
        });
        self.jobs.send(Some(job)).expect("node running");
        rx.recv_timeout(PATIENCE).expect("job answered")
    }

    fn get<T: Send + 'static>(&self, f: impl FnOnce(&ControllerNode) -> T + Send + 'static) -> T {
        self.call(move |n| Box::pin(async move { f(&n) }))
    }

    fn stop(mut self) {
        let _ = self.jobs.send(None);
        self.thread.take().unwrap().join().expect("node thread");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.jobs.send(None);
            let _ = t.join();
        }
    }
}

/// A loopback address that was free a moment ago and never handed out before in this
/// process. Tests run in parallel and a node may bind its address seconds after it was
/// chosen (the broker-only node, a restart); the kernel readily hands a released port to the
/// next bind of port 0, so without the record another test's node could take it first.
fn free_addr() -> SocketAddr {
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        if handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

fn config(id: i32, dir: &Path, rpc: Option<SocketAddr>, voters: &[Voter]) -> ClusterConfig {
    let mut c = ClusterConfig::new(
        id,
        dir.join(format!("node{id}")),
        Endpoint {
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
        },
    );
    c.rpc_listen = rpc;
    c.voters = voters.to_vec();
    c.controller.seed = 7;
    c.rpc_timeouts = Timeouts {
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..Timeouts::default()
    };
    c
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < PATIENCE, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn create(node: &Node, name: &'static str, partitions: i32, rf: i16) -> Answer {
    node.call(move |n| {
        Box::pin(async move {
            n.create_topics(vec![NewTopic::new(name, partitions, rf)], false)
                .await
        })
    })
}

/// Until the node is registered and unfenced (placement counts only live nodes).
fn wait_live(node: &Node) {
    let live = node.call(|n| Box::pin(async move { n.wait_live(PATIENCE).await }));
    assert!(live, "node {} never became live", node.id);
}

fn assert_created(a: &Answer) {
    match a {
        Answer::CreateTopics(v) => assert!(v.iter().all(|(_, o)| o.is_ok()), "{a:?}"),
        other => panic!("{other:?}"),
    }
}

fn topic(node: &Node, name: &'static str) -> Option<TopicImage> {
    node.get(move |n| n.image().topic_by_name(name).cloned())
}

fn all(nodes: &[Option<Node>]) -> Vec<&Node> {
    nodes.iter().flatten().collect()
}

fn active(nodes: &[&Node]) -> Vec<i32> {
    nodes
        .iter()
        .filter(|n| n.get(|c| c.is_active()))
        .map(|n| n.id)
        .collect()
}

#[test]
fn three_voters_elect_forward_fail_over_restart_and_feed_a_broker_only_node() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let voters: Vec<Voter> = (1..=3)
        .map(|id| Voter {
            id: id as u64,
            addr: addrs[id - 1],
        })
        .collect();
    let mut nodes: Vec<Option<Node>> = (1..=3)
        .map(|id| {
            Some(Node::start(config(
                id,
                dir.path(),
                Some(addrs[id as usize - 1]),
                &voters,
            )))
        })
        .collect();

    // One active controller; every node registered and unfenced.
    eventually("one active controller", || active(&all(&nodes)).len() == 1);
    let leader = active(&all(&nodes))[0];
    let l = nodes[leader as usize - 1].as_ref().unwrap();
    eventually("three live brokers", || {
        l.get(|n| n.image().live_brokers()) == vec![1, 2, 3]
    });
    let cluster_id = l.get(|n| n.image().cluster_id().map(str::to_string));
    assert_eq!(cluster_id.as_ref().map(String::len), Some(22));

    // A follower's command is forwarded; every image gets the same assignment.
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let f = nodes[follower as usize - 1].as_ref().unwrap();
    assert_created(&create(f, "t1", 3, 3));
    let t1 = topic(l, "t1").expect("t1 on the leader");
    assert_eq!(t1.partitions.len(), 3);
    for n in all(&nodes) {
        eventually("t1 everywhere", || topic(n, "t1").as_ref() == Some(&t1));
        assert_eq!(
            n.get(|c| c.image().cluster_id().map(str::to_string)),
            cluster_id
        );
    }

    // A broker-only node registers and gets the metadata by pulling.
    let b = Node::start(config(4, dir.path(), Some(addrs[3]), &voters));
    eventually("broker-only node has t1", || {
        topic(&b, "t1").as_ref() == Some(&t1)
    });
    eventually("broker-only node registered", || {
        l.get(|n| n.image().live_brokers()) == vec![1, 2, 3, 4]
    });
    // Its commands are forwarded too.
    assert_created(&create(&b, "t0", 1, 2));

    // The leader's node dies: another is elected and commands still work.
    nodes[leader as usize - 1].take().unwrap().stop();
    eventually("a new active controller", || {
        let a = active(&all(&nodes));
        a.len() == 1 && a[0] != leader
    });
    let f = all(&nodes)[0];
    assert_created(&create(f, "t2", 2, 1));
    let t2 = topic(f, "t2").expect("t2");
    eventually("broker-only node has t2", || {
        topic(&b, "t2").as_ref() == Some(&t2)
    });

    // The dead node comes back from its WAL and catches up.
    let back = Node::start(config(
        leader,
        dir.path(),
        Some(addrs[leader as usize - 1]),
        &voters,
    ));
    assert_eq!(
        topic(&back, "t1").as_ref(),
        Some(&t1),
        "replayed from its WAL"
    );
    eventually("restarted node has t2", || {
        topic(&back, "t2").as_ref() == Some(&t2)
    });
    nodes[leader as usize - 1] = Some(back);
    let indexes: Vec<u64> = all(&nodes)
        .iter()
        .map(|n| n.get(|c| c.applied_index()))
        .collect();
    assert!(indexes.iter().all(|&i| i > 0));
    assert!(nodes
        .iter()
        .flatten()
        .all(|n| n.get(|c| c.failure()).is_none()));
    b.stop();
}

#[test]
fn a_cluster_of_one_creates_topics_and_publishes_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(config(0, dir.path(), None, &[]));
    // The subscription sees every batch from now on, in log order.
    let (tx, rx) = mpsc::channel();
    n.call(move |c| {
        let sub = c.subscribe();
        glommio::spawn_local(async move {
            while let Some(u) = sub.next().await {
                let item = match u {
                    Update::Batch { index, delta, .. } => (index, delta.created_topics.len()),
                    Update::Image { index, .. } => (index, usize::MAX),
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        })
        .detach();
        Box::pin(async {})
    });
    wait_live(&n);
    assert_created(&create(&n, "a", 2, 1));
    assert_created(&create(&n, "b", 1, 1));
    match create(&n, "a", 1, 1) {
        Answer::CreateTopics(v) => assert_eq!(v[0].1.as_ref().unwrap_err().code, 36),
        other => panic!("{other:?}"),
    }
    let a = topic(&n, "a").expect("a");
    let mut seen = Vec::new();
    eventually("both creations published", || {
        seen.extend(rx.try_iter());
        seen.iter().filter(|(_, c)| *c == 1).count() == 2
    });
    assert!(
        seen.windows(2).all(|p| p[0].0 < p[1].0),
        "in order: {seen:?}"
    );
    assert!(
        seen.iter().all(|(_, c)| *c != usize::MAX),
        "no lag: {seen:?}"
    );
    let cluster_id = n.get(|c| c.image().cluster_id().map(str::to_string));
    n.stop();

    // Restart: the image comes back from the WAL alone.
    let n = Node::start(config(0, dir.path(), None, &[]));
    assert_eq!(topic(&n, "a").as_ref(), Some(&a));
    assert_eq!(
        n.get(|c| c.image().cluster_id().map(str::to_string)),
        cluster_id
    );
    wait_live(&n);
    assert_created(&create(&n, "c", 1, 1));
    n.stop();
}

/// A data dir of a single-node sluice: the first active controller writes its state as the
/// first records of the log (its cluster id, its topics on this node), then serves.
#[test]
fn the_first_controller_bootstraps_from_the_legacy_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(0, dir.path(), None, &[]);
    cfg.legacy = Some(LegacyState {
        cluster_id: "legacy-cluster-id-0123".into(),
        node: 0,
        topics: vec![LegacyTopic {
            name: "old".into(),
            id: [9; 16],
            partitions: 2,
            configs: BTreeMap::new(),
        }],
        broker_configs: BTreeMap::new(),
        producer_id_next_block: 2000,
    });
    let n = Node::start(cfg.clone());
    wait_live(&n);
    let old = topic(&n, "old").expect("bootstrapped topic");
    assert_eq!((old.id, old.partitions.len()), ([9; 16], 2));
    assert_eq!(
        n.get(|c| c.image().cluster_id().map(str::to_string)),
        Some("legacy-cluster-id-0123".to_string())
    );
    assert_created(&create(&n, "new", 1, 1));
    n.stop();
    // Once the log has a cluster id the legacy state is not applied again.
    let n = Node::start(cfg);
    wait_live(&n);
    assert_eq!(topic(&n, "old").as_ref(), Some(&old));
    assert!(topic(&n, "new").is_some());
    n.stop();
}

/// A subscriber that does not keep up loses its queue (memory stays bounded) and is given
/// the whole image instead, then the batches after it.
#[test]
fn a_subscriber_that_falls_behind_gets_the_whole_image() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(1, dir.path(), None, &[]);
    cfg.subscriber_queue_max = 2;
    let n = Node::start(cfg);
    wait_live(&n);
    let (sub_tx, sub_rx) = mpsc::channel::<()>();
    let (tx, rx) = mpsc::channel();
    n.call(move |c| {
        let sub = c.subscribe();
        glommio::spawn_local(async move {
            // Read nothing until told to.
            while sub_rx.try_recv().is_err() {
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            while let Some(u) = sub.next().await {
                let item = match u {
                    Update::Batch { index, .. } => (index, None),
                    Update::Image { index, image } => (index, Some(image.topic_count())),
                };
                if tx.send(item).is_err() {
                    break;
                }
            }
        })
        .detach();
        Box::pin(async {})
    });
    for name in ["s1", "s2", "s3", "s4"] {
        assert_created(&create(&n, name, 1, 1));
    }
    sub_tx.send(()).unwrap();
    let first = rx.recv_timeout(PATIENCE).expect("an update");
    assert_eq!(
        first.1,
        Some(4),
        "the whole image, all four topics: {first:?}"
    );
    assert_eq!(first.0, n.get(|c| c.applied_index()));
    assert_created(&create(&n, "s5", 1, 1));
    let next = rx
        .recv_timeout(PATIENCE)
        .expect("the batch after the image");
    assert!(next.0 > first.0 && next.1.is_none(), "{next:?}");
    n.stop();
}

struct NoHandler;

impl sluice_rpc::Handler for NoHandler {
    fn raft(&self, _: sluice_raft::Envelope) {}
    fn request(&self, _: u64, _: sluice_rpc::Request) -> sluice_rpc::LocalBoxFuture<Response> {
        Box::pin(async {
            Response {
                status: sluice_rpc::status::UNKNOWN_METHOD,
                body: Bytes::new(),
            }
        })
    }
}

/// The controller's rpc methods as another node (or a hostile peer in the cluster) sees
/// them: malformed bodies are refused with a status, never a panic; a well-formed command
/// is run by the active controller; a pull returns the committed batches, which replay to
/// the node's image.
#[test]
fn rpc_methods_refuse_malformed_bodies_and_serve_commands_and_pulls() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let voters = [Voter { id: 1, addr }];
    let n = Node::start(config(1, dir.path(), Some(addr), &voters));
    wait_live(&n);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .unwrap();
        ex.run(async move {
            let mut cfg = TransportConfig::new(99, None);
            cfg.cluster_id = transport_cluster_id(&voters);
            let t = Transport::start(cfg, Rc::new(NoHandler)).await.unwrap();
            t.add_peer(1, addr).unwrap();
            let d = Duration::from_secs(20);
            let mut statuses = Vec::new();
            for m in 1..=8u16 {
                for body in [&b""[..], &[9], &[1, 0xff, 0xff, 0xff, 0xff], &[1; 40]] {
                    let r = t
                        .request(1, m, Bytes::copy_from_slice(body), d)
                        .await
                        .unwrap();
                    statuses.push(r.status);
                }
            }
            let unknown = t.request(1, 77, Bytes::new(), d).await.unwrap().status;
            let cmd = Command::CreateTopics {
                topics: vec![NewTopic::new("remote", 2, 1)],
                validate_only: false,
            };
            let r = t.request(1, cmd.method(), cmd.encode(), d).await.unwrap();
            let answer = decode_answer(&r.body).unwrap();
            let pull = FetchRequest {
                after: 0,
                max_bytes: 1 << 20,
                wait_ms: 100,
            };
            let r = t
                .request(1, method::FETCH_COMMITTED, pull.encode(), d)
                .await
                .unwrap();
            let fetched = FetchResponse::decode(&r.body).unwrap();
            // A pull from beyond the end (a hostile `after`) is an empty answer.
            let beyond = FetchRequest {
                after: u64::MAX,
                max_bytes: 1,
                wait_ms: 10,
            };
            let r = t
                .request(1, method::FETCH_COMMITTED, beyond.encode(), d)
                .await
                .unwrap();
            assert!(FetchResponse::decode(&r.body).unwrap().entries.is_empty());
            t.shutdown().await;
            tx.send((statuses, unknown, answer, fetched)).unwrap();
        });
    });
    let (statuses, unknown, answer, fetched) = rx.recv_timeout(PATIENCE).expect("client done");
    assert!(
        statuses.iter().all(|&s| s == status::MALFORMED),
        "{statuses:?}"
    );
    assert_eq!(unknown, sluice_rpc::status::UNKNOWN_METHOD);
    assert_created(&answer);
    // The pull covers everything committed so far; replayed, it is the node's image.
    let mut replayed = MetadataImage::new();
    for (_, batch) in &fetched.entries {
        replayed.apply_batch(&decode_batch(batch).unwrap()).unwrap();
    }
    let remote = replayed.topic_by_name("remote").cloned();
    assert!(remote.is_some(), "the pull has the committed topic");
    assert_eq!(remote, topic(&n, "remote"));
    assert!(n.get(|c| c.failure()).is_none());
    n.stop();
}

/// A WAL whose committed entry is not a metadata batch (a damaged or foreign log): the
/// node refuses to start rather than guess.
#[test]
fn a_committed_entry_that_does_not_decode_stops_the_start() {
    use raft::eraftpb::{Entry, HardState};
    use sluice_raft::Write;
    let dir = tempfile::tempdir().unwrap();
    let path = wal_path(dir.path(), 1);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = Vec::new();
    for w in [
        Write::Create {
            group: 0,
            voters: vec![1],
        },
        Write::Entries {
            group: 0,
            entries: vec![Entry {
                index: 1,
                term: 1,
                data: Bytes::from_static(b"not a metadata batch"),
                context: Bytes::copy_from_slice(&1u32.to_be_bytes()),
                ..Default::default()
            }],
        },
        Write::HardState {
            group: 0,
            hard_state: HardState {
                term: 1,
                vote: 1,
                commit: 1,
                ..Default::default()
            },
        },
    ] {
        sluice_raft::wal::encode_record(&w, &mut bytes);
    }
    std::fs::write(&path, &bytes).unwrap();
    let cfg = config(1, dir.path(), None, &[]);
    let err = std::thread::spawn(move || {
        let ex = LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .unwrap();
        ex.run(async move {
            ControllerNode::start(cfg)
                .await
                .err()
                .map(|e| e.to_string())
        })
    })
    .join()
    .expect("no panic");
    let err = err.expect("the start is refused");
    assert!(err.contains("does not decode"), "{err}");
}

fn wal_path(dir: &Path, id: i32) -> PathBuf {
    dir.join(format!("node{id}"))
        .join("cluster")
        .join("controller.wal")
}

#[test]
fn a_torn_wal_tail_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let n = Node::start(config(1, dir.path(), None, &[]));
    wait_live(&n);
    assert_created(&create(&n, "kept", 1, 1));
    n.stop();
    let path = wal_path(dir.path(), 1);
    // A record cut short: a header promising 100 bytes, then 10 of them.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(&100u32.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&[7; 10]);
    std::fs::write(&path, &bytes).unwrap();

    let n = Node::start(config(1, dir.path(), None, &[]));
    assert!(topic(&n, "kept").is_some());
    wait_live(&n);
    assert_created(&create(&n, "after", 1, 1));
    n.stop();
    let n = Node::start(config(1, dir.path(), None, &[]));
    // Had the torn bytes stayed, replay would stop at them and lose what came after.
    assert!(
        topic(&n, "after").is_some(),
        "appended after the cut, replayed"
    );
    n.stop();
}

fn create_owned(node: &Node, name: String) -> Answer {
    node.call(move |n| {
        Box::pin(async move {
            n.create_topics(vec![NewTopic::new(&name, 1, 1)], false)
                .await
        })
    })
}

fn topic_names(node: &Node) -> Vec<String> {
    node.get(|n| {
        let mut v: Vec<String> = n.image().topics().map(|t| t.name.clone()).collect();
        v.sort();
        v
    })
}

/// Metadata snapshots (issue 12): with a tiny `snapshot_bytes`, voters snapshot and compact
/// their log and WAL; a voter that was down past the leader's log start catches up through
/// Raft's snapshot, a new broker-only node through its pull; every node restarts from
/// snapshot + WAL with every topic.
#[test]
fn snapshots_compact_the_log_and_catch_up_lagging_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
    let voters: Vec<Voter> = (1..=3)
        .map(|id| Voter {
            id: id as u64,
            addr: addrs[id - 1],
        })
        .collect();
    let cfg = |id: i32| {
        let mut c = config(id, dir.path(), Some(addrs[id as usize - 1]), &voters);
        c.snapshot_bytes = 2048;
        c
    };
    let mut nodes: Vec<Option<Node>> = (1..=3).map(|id| Some(Node::start(cfg(id)))).collect();
    eventually("one active controller", || active(&all(&nodes)).len() == 1);
    let leader = active(&all(&nodes))[0];
    let l = nodes[leader as usize - 1].as_ref().unwrap();
    eventually("three live brokers", || {
        l.get(|n| n.image().live_brokers()) == vec![1, 2, 3]
    });
    for i in 0..10 {
        assert_created(&create_owned(l, format!("early-{i}")));
    }
    // A follower goes down; the others go on far past a snapshot.
    let down = (1..=3).find(|&i| i != leader).unwrap();
    let down_last = nodes[down as usize - 1]
        .as_ref()
        .unwrap()
        .get(|c| c.raft_last_index());
    nodes[down as usize - 1].take().unwrap().stop();
    let l = nodes[leader as usize - 1].as_ref().unwrap();
    for i in 0..60 {
        assert_created(&create_owned(l, format!("late-{i}")));
    }
    let want = topic_names(l);
    assert_eq!(want.len(), 70);
    let first = l.get(|n| n.raft_log_start());
    assert!(
        first > down_last,
        "the leader's log was compacted past the downed follower's last entry \
         {down_last}: starts after {first}"
    );
    let snap = dir
        .path()
        .join(format!("node{leader}"))
        .join("cluster")
        .join("controller.snapshot");
    eventually("the leader's snapshot file", || snap.exists());

    // The follower comes back behind the leader's log start: it gets the snapshot.
    let back = Node::start(cfg(down));
    eventually("the restarted follower has every topic", || {
        topic_names(&back) == want
    });
    nodes[down as usize - 1] = Some(back);
    let down_snap = dir
        .path()
        .join(format!("node{down}"))
        .join("cluster")
        .join("controller.snapshot");
    eventually("the follower wrote the snapshot it got", || {
        down_snap.exists()
    });

    // A new broker-only node pulls the image from a snapshot.
    let b = Node::start(config(4, dir.path(), Some(addrs[3]), &voters));
    eventually("the broker-only node has every topic", || {
        topic_names(&b) == want
    });
    b.stop();

    // Every voter restarts from its snapshot and WAL, with every topic at once; the WALs
    // hold far less than the whole log.
    let applied: Vec<u64> = all(&nodes)
        .iter()
        .map(|n| n.get(|c| c.applied_index()))
        .collect();
    for n in nodes.iter_mut() {
        n.take().unwrap().stop();
    }
    for id in 1..=3 {
        let wal = std::fs::metadata(wal_path(dir.path(), id)).unwrap().len();
        assert!(
            wal < 64 << 10,
            "node {id}: WAL of {wal} bytes after compaction"
        );
    }
    let nodes: Vec<Node> = (1..=3).map(|id| Node::start(cfg(id))).collect();
    for n in &nodes {
        assert_eq!(
            topic_names(n),
            want,
            "node {} replayed snapshot + WAL",
            n.id
        );
        assert!(n.get(|c| c.failure()).is_none());
    }
    assert!(nodes
        .iter()
        .all(|n| n.get(|c| c.applied_index()) >= applied[0].min(applied[1]) - 5));
    eventually("an active controller again", || {
        nodes.iter().any(|n| n.get(|c| c.is_active()))
    });
    let a = nodes.iter().find(|n| n.get(|c| c.is_active())).unwrap();
    assert_created(&create_owned(a, "after-restart".into()));
    for n in nodes {
        n.stop();
    }
}

/// A cluster of one snapshots too, and restarts from snapshot + WAL (stopped while its
/// WAL task may be mid-write: the executor is dropped, as in a crash).
#[test]
fn a_cluster_of_one_restarts_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = config(1, dir.path(), None, &[]);
        c.snapshot_bytes = 256;
        c
    };
    let n = Node::start(cfg());
    wait_live(&n);
    for i in 0..40 {
        assert_created(&create_owned(&n, format!("solo-{i}")));
    }
    let want = topic_names(&n);
    assert_eq!(want.len(), 40);
    assert!(n.get(|c| c.raft_log_start()) > 0);
    n.stop();
    let cluster = dir.path().join("node1").join("cluster");
    assert!(cluster.join("controller.snapshot").exists());
    let n = Node::start(cfg());
    assert_eq!(topic_names(&n), want, "replayed snapshot + WAL");
    wait_live(&n);
    assert_created(&create_owned(&n, "solo-after".into()));
    n.stop();
}

/// The state a crash leaves when a follower installing a leader's snapshot dies between
/// the snapshot file's rename and the WAL's `LogStart`: a snapshot at index B beside a WAL
/// that ends below B. The start rewrites the WAL to begin at B before anything is appended,
/// so a write after it replays and the node starts again (appended to the old file, it
/// would lie past the log's end and the node could never start).
#[test]
fn a_snapshot_ahead_of_the_wal_is_written_into_the_wal_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = config(1, dir.path(), None, &[]);
        c.snapshot_bytes = 256;
        c
    };
    let wal = wal_path(dir.path(), 1);
    let n = Node::start(cfg());
    wait_live(&n);
    assert_created(&create_owned(&n, "old-0".into()));
    assert_eq!(n.get(|c| c.raft_log_start()), 0, "no snapshot yet");
    // The WAL as it stood before any snapshot (a torn tail is cut on open).
    let old = std::fs::read(&wal).unwrap();
    for i in 0..40 {
        assert_created(&create_owned(&n, format!("new-{i}")));
    }
    let start = n.get(|c| c.raft_log_start());
    assert!(start > 0);
    let want = topic_names(&n);
    n.stop();
    std::fs::write(&wal, &old).unwrap();

    let n = Node::start(cfg());
    assert_ne!(
        std::fs::read(&wal).unwrap(),
        old,
        "the WAL was rewritten before the start returned"
    );
    // The image is the snapshot's (the entries after it were in the replaced WAL).
    let got = topic_names(&n);
    assert!(
        got.len() > 1 && got.iter().all(|t| want.contains(t)),
        "{got:?}"
    );
    assert!(n.get(|c| c.raft_log_start()) >= start);
    wait_live(&n);
    assert_created(&create_owned(&n, "after".into()));
    n.stop();
    let n = Node::start(cfg());
    assert!(n.get(|c| c.failure()).is_none());
    let again = topic_names(&n);
    assert!(again.contains(&"after".to_string()));
    assert!(got.iter().all(|t| again.contains(t)));
    wait_live(&n);
    n.stop();
}

/// Why a start fails (it must fail, not panic).
fn start_error(cfg: ClusterConfig) -> std::io::Error {
    std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(1 << 20)
            .ring_depth(64)
            .make()
            .expect("glommio executor")
            .run(async move {
                match ControllerNode::start(cfg).await {
                    Ok(_) => panic!("the start succeeded"),
                    Err(e) => e,
                }
            })
    })
    .join()
    .expect("the start did not panic")
}

/// A damaged snapshot file is refused with a clear error: an index far beyond any log, or
/// one whose restart would leave the WAL's commit index past the log's end.
#[test]
fn a_damaged_snapshot_file_is_refused_at_start() {
    use sluice_cluster::snapshot::{SnapshotFile, SNAPSHOT_FILE};
    let dir = tempfile::tempdir().unwrap();
    let cfg = || config(1, dir.path(), None, &[]);
    let n = Node::start(cfg());
    wait_live(&n);
    assert_created(&create_owned(&n, "t".into()));
    n.stop();
    let path = dir.path().join("node1").join("cluster").join(SNAPSHOT_FILE);
    let craft = |index, term| {
        let f = SnapshotFile {
            index,
            term,
            offset: 2,
            payload: Bytes::new(),
        };
        std::fs::write(&path, f.encode()).unwrap();
    };
    craft(1 << 62, 1);
    let e = start_error(cfg());
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("index"), "{e}");
    // Entry 2 is in the WAL, committed, in another term than the snapshot says.
    craft(2, 99);
    let e = start_error(cfg());
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains("commit index"), "{e}");
}

#[test]
fn the_transport_cluster_id_depends_on_the_voter_set_only() {
    let v = |id, port| Voter {
        id,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    };
    let a = transport_cluster_id(&[v(1, 1), v(2, 2), v(3, 3)]);
    assert_eq!(a, transport_cluster_id(&[v(3, 9), v(1, 8), v(2, 7)]));
    assert_ne!(a, transport_cluster_id(&[v(1, 1), v(2, 2), v(4, 3)]));
}

/// Leader-report dissemination between controller nodes (`sluice_cluster::gossip`), each
/// node's table behind a Mutex the test thread writes and reads, as the broker's shards do.
mod gossip {
    use super::*;
    use sluice_cluster::gossip::LeaderStore;
    use sluice_cluster::wire::ReportAnswer;
    use sluice_cluster::Extension;
    use sluice_meta::leaders::{encode_updates, LeaderTable, LeaderUpdate, Leadership};
    use sluice_meta::TopicId;
    use std::sync::{Arc, Mutex};

    const T: TopicId = [7; 16];

    /// A node's table and the partition its filter refuses (the broker refuses what its
    /// image does not have).
    struct Table {
        t: Mutex<LeaderTable>,
        refuse: Option<(TopicId, i32)>,
    }

    impl Table {
        fn observe(&self, u: LeaderUpdate) -> bool {
            self.t.lock().unwrap().observe(u)
        }
        fn get(&self, p: i32) -> Option<(Option<i32>, i32)> {
            self.t
                .lock()
                .unwrap()
                .get(&T, p)
                .map(|l| (l.leader, l.epoch))
        }
        fn len(&self) -> usize {
            self.t.lock().unwrap().len()
        }
    }

    struct Store(Arc<Table>);

    impl LeaderStore for Store {
        fn seq(&self) -> u64 {
            self.0.t.lock().unwrap().seq()
        }
        fn changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64) {
            self.0.t.lock().unwrap().changes_since(cursor, max)
        }
        fn accepts(&self, topic: &TopicId, partition: i32) -> bool {
            self.0.refuse != Some((*topic, partition))
        }
        fn observe(&self, update: LeaderUpdate) -> bool {
            self.0.observe(update)
        }
    }

    fn attach(node: &Node, refuse: Option<(TopicId, i32)>) -> Arc<Table> {
        let t = Arc::new(Table {
            t: Mutex::new(LeaderTable::new()),
            refuse,
        });
        let s = t.clone();
        node.get(move |n| n.attach_leaders(Rc::new(Store(s))));
        t
    }

    fn up(p: i32, leader: i32, epoch: i32) -> LeaderUpdate {
        LeaderUpdate {
            topic: T,
            partition: p,
            leadership: Leadership {
                leader: Some(leader),
                epoch,
                isr: vec![leader],
                isr_version: 1,
            },
        }
    }

    /// More partitions than one message carries, so every full exchange takes pages.
    const PARTITIONS: i32 = 12_000;

    #[test]
    fn reports_reach_every_node_newer_epochs_win_and_restarts_resync() {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> = (0..4).map(|_| free_addr()).collect();
        let voters: Vec<Voter> = (1..=3)
            .map(|id| Voter {
                id: id as u64,
                addr: addrs[id - 1],
            })
            .collect();
        let start = |id: i32| {
            let mut c = config(id, dir.path(), Some(addrs[id as usize - 1]), &voters);
            // Dropping an executor in this process does not close its sockets the way a
            // dying process would: peers notice by silence, kept short here.
            c.rpc_timeouts.ping_interval = Duration::from_millis(200);
            c.rpc_timeouts.silence = Duration::from_secs(1);
            Node::start(c)
        };
        let mut nodes: Vec<Node> = (1..=4).map(start).collect();
        let mut tables: Vec<Arc<Table>> = nodes
            .iter()
            .map(|n| attach(n, (n.id == 3).then_some((T, 7))))
            .collect();

        // Reports observed on node 1 (written from another thread: the poll notices).
        for p in 0..PARTITIONS {
            assert!(tables[0].observe(up(p, 1, 1)));
        }
        eventually("node 2 has every report", || {
            tables[1].len() == PARTITIONS as usize
        });
        eventually("node 3 has every report its filter takes", || {
            tables[2].len() == PARTITIONS as usize - 1
        });
        assert_eq!(tables[1].get(7), Some((Some(1), 1)));
        assert_eq!(tables[2].get(7), None, "refused by node 3's filter");
        assert!(nodes[2].get(|n| n.gossip_stats()).updates_refused >= 1);

        // A newer epoch, learnt on node 2, replaces the report everywhere.
        assert!(tables[1].observe(up(0, 2, 2)));
        nodes[1].get(|n| n.leaders_changed());
        for (i, t) in tables.iter().take(3).enumerate() {
            eventually(&format!("node {} has epoch 2", i + 1), || {
                t.get(0) == Some((Some(2), 2))
            });
        }

        // The broker-only node is reported to once its registration is in the image, and
        // its own reports reach the voters.
        eventually("node 4 registered", || {
            nodes[0].get(|n| n.image().broker(4).is_some())
        });
        eventually("node 4 has every report", || {
            tables[3].len() == PARTITIONS as usize && tables[3].get(0) == Some((Some(2), 2))
        });
        assert!(tables[3].observe(up(1, 4, 5)));
        for t in tables.iter().take(3) {
            eventually("node 4's report everywhere", || {
                t.get(1) == Some((Some(4), 5))
            });
        }
        assert!(nodes[0].get(|n| n.peers()).contains(&(4, true)));

        // Node 3 crashes (executor dropped) and starts again with an empty table: its
        // peers reconnect and send it the whole table.
        let resyncs = nodes[0].get(|n| n.gossip_stats()).resyncs;
        nodes.remove(2).stop();
        // While node 3 is down (first silent, its connections still open, then gone), the
        // others go on: a report from node 1 reaches node 2 and node 4.
        assert!(tables[0].observe(up(2, 1, 6)));
        for t in [&tables[1], &tables[3]] {
            eventually("a report while node 3 is down", || {
                t.get(2) == Some((Some(1), 6))
            });
        }
        nodes.insert(2, start(3));
        tables[2] = attach(&nodes[2], Some((T, 7)));
        eventually("restarted node 3 has the whole table again", || {
            tables[2].len() == PARTITIONS as usize - 1
                && tables[2].get(0) == Some((Some(2), 2))
                && tables[2].get(1) == Some((Some(4), 5))
                && tables[2].get(2) == Some((Some(1), 6))
        });
        eventually("node 1 started node 3 over", || {
            nodes[0].get(|n| n.gossip_stats()).resyncs > resyncs
        });

        // Node 2 replaces its table without a reconnect: its new incarnation shows in the
        // answer to the next report or probe, and its peers start over.
        tables[1] = attach(&nodes[1], None);
        eventually("node 2's new table is filled again", || {
            tables[1].len() == PARTITIONS as usize && tables[1].get(1) == Some((Some(4), 5))
        });

        for n in &nodes {
            assert!(n.get(|c| c.failure()).is_none());
        }
        for n in nodes {
            n.stop();
        }
    }

    struct Echo;

    impl Extension for Echo {
        fn request(
            &self,
            from: u64,
            request: sluice_rpc::Request,
        ) -> sluice_rpc::LocalBoxFuture<Response> {
            Box::pin(async move {
                let mut body = from.to_be_bytes().to_vec();
                body.extend_from_slice(&request.body);
                Response::ok(Bytes::from(body))
            })
        }
    }

    #[test]
    fn hostile_report_bodies_are_refused_and_extensions_reach_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let voters = [Voter { id: 1, addr }];
        let n = Node::start(config(1, dir.path(), Some(addr), &voters));
        let (tx, rx) = mpsc::channel();
        let (first_tx, first_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let valid = encode_updates(&[up(3, 1, 1)]).unwrap();
        std::thread::spawn(move || {
            let ex = LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(1 << 20)
                .ring_depth(64)
                .make()
                .unwrap();
            ex.run(async move {
                let mut cfg = TransportConfig::new(99, None);
                cfg.cluster_id = transport_cluster_id(&voters);
                let t = Transport::start(cfg, Rc::new(NoHandler)).await.unwrap();
                t.add_peer(1, addr).unwrap();
                let d = Duration::from_secs(20);
                let send = |body: Vec<u8>, m: u16| {
                    let t = &t;
                    async move { t.request(1, m, Bytes::from(body), d).await.unwrap() }
                };
                // No table attached yet.
                let before = send(valid.clone(), method::LEADER_REPORTS).await.status;
                let ext_before = send(vec![1], method::EXTENSION_MIN).await.status;
                first_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                let mut trailing = valid.clone();
                trailing.push(0);
                let mut bad_format = valid.clone();
                bad_format[0] = 9;
                let hostile: Vec<Vec<u8>> = vec![
                    vec![],
                    vec![0],
                    vec![0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
                    valid[..valid.len() - 1].to_vec(),
                    trailing,
                    bad_format,
                    vec![0xab; 4096],
                ];
                let mut statuses = Vec::new();
                for b in hostile {
                    statuses.push(send(b, method::LEADER_REPORTS).await.status);
                }
                let ok = send(valid.clone(), method::LEADER_REPORTS).await;
                let answer = ReportAnswer::decode(&ok.body).unwrap();
                let echo = send(vec![1, 2], method::EXTENSION_MAX).await;
                t.shutdown().await;
                tx.send((before, ext_before, statuses, ok.status, answer, echo.body))
                    .unwrap();
            });
        });
        // Nothing is attached until the client's first two requests were answered.
        first_rx
            .recv_timeout(PATIENCE)
            .expect("first requests answered");
        let table = attach(&n, None);
        n.get(|c| c.set_extension(Rc::new(Echo)));
        go_tx.send(()).unwrap();
        let (before, ext_before, statuses, ok, answer, echo) =
            rx.recv_timeout(PATIENCE).expect("client done");
        assert_eq!(before, status::UNAVAILABLE);
        assert_eq!(ext_before, sluice_rpc::status::UNKNOWN_METHOD);
        assert!(
            statuses.iter().all(|&s| s == status::MALFORMED),
            "{statuses:?}"
        );
        assert_eq!(ok, sluice_rpc::status::OK);
        assert_eq!((answer.applied, answer.refused), (1, 0));
        assert_eq!(table.len(), 1, "only the valid report went in");
        assert_eq!(table.get(3), Some((Some(1), 1)));
        let stats = n.get(|c| c.gossip_stats());
        assert_eq!(stats.malformed, statuses.len() as u64);
        assert_eq!(stats.reports_received, 1);
        let mut want = 99u64.to_be_bytes().to_vec();
        want.extend_from_slice(&[1, 2]);
        assert_eq!(&echo[..], &want[..]);
        assert!(n.get(|c| c.failure()).is_none());
        n.stop();
    }
}
