//! Every node takes its topics from the cluster's metadata log (a node without `--voters` is
//! a cluster of one, its own only voter): shard 0 runs the controller runtime ([`sluice_cluster::ControllerNode`]) and turns every committed
//! metadata batch into the broker's own cluster state, which the controller role
//! ([`crate::controller::Controller::adopt`]) caches in `cluster/state.json` and distributes
//! to the shards as today, so each shard opens the partitions this node hosts and serves the
//! others' Metadata from the view.
//!
//! Order: a state is derived from the image only after the batch committed (on a quorum of
//! the controller group) and was applied here; shards adopt states in commit order (one
//! loop, one adoption at a time). The cached `state.json` is a cache: at start the node serves
//! it (so its partitions open before the quorum is reachable) and the log's image replaces it
//! as soon as the runtime has replayed it.
//!
//! Partitions with several replicas are Raft groups (`crate::replication`); this runtime's
//! transport carries their messages too, and its dissemination their leaders. The offsets
//! topic is created with Kafka's `offsets.topic.replication.factor` (3, capped to the live
//! nodes): its group coordinators write through Raft too (`crate::group_host`).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sluice_cluster::{ClusterConfig, ControllerNode, Subscription, Update};
use sluice_meta::acl::{AclBinding, AclFilter};
use sluice_meta::controller::{AlterConfig, ConfigTarget};
use sluice_meta::{
    Answer, ApiError, Endpoint, LegacyState, LegacyTopic, MetadataImage, PLAINTEXT_LISTENER,
};

use crate::cluster_view::BrokerEndpoint;
use crate::controller::{NewTopic, TopicResult};
use crate::kerr;
use crate::shard::BrokerShard;
use crate::topics::{ClusterState, TopicRecord};

/// The broker's cluster state for node `node` from the metadata image. `version` orders it
/// after the state it replaces (the shards apply deltas between consecutive versions).
pub fn state_from_image(
    image: &MetadataImage,
    node: i32,
    metadata_index: u64,
    version: u64,
    producer_id_next_block: i64,
) -> ClusterState {
    let topics = image
        .topics()
        .map(|t| TopicRecord {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions.len() as i32,
            configs: t.configs.clone(),
            internal: t.internal(),
            replicas: t.partitions.iter().map(|p| p.replicas.clone()).collect(),
            moves: t
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.reassigning())
                .map(|(i, p)| crate::topics::PartitionMove {
                    partition: i as i32,
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                    revision: p.revision,
                })
                .collect(),
        })
        .collect();
    // This node's own overrides win over the cluster-wide defaults, as in Kafka.
    let mut broker_configs: BTreeMap<String, String> = image.cluster_configs().clone();
    if let Some(own) = image.node_configs(node) {
        broker_configs.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    ClusterState {
        cluster_id: image.cluster_id().unwrap_or_default().to_string(),
        node_id: node,
        topics,
        broker_configs,
        default_broker_configs: image.cluster_configs().clone(),
        node_broker_configs: image.all_node_configs().clone(),
        producer_id_next_block,
        version,
        metadata_index,
    }
}

/// The brokers clients may use: registered and unfenced nodes, by their Kafka listener.
pub fn brokers_from_image(image: &MetadataImage) -> Vec<BrokerEndpoint> {
    image
        .brokers()
        .values()
        .filter(|b| !b.fenced)
        .map(|b| BrokerEndpoint {
            node: b.node,
            listeners: b.client_listeners(),
            rack: b.rack.clone(),
        })
        .collect()
}

/// Starts the controller runtime on shard 0 and the loop that adopts what it commits.
pub async fn start(shard: &Rc<BrokerShard>) -> std::io::Result<()> {
    let Some(controller) = &shard.controller else {
        return Ok(());
    };
    let config = &shard.config;
    let mut cfg = ClusterConfig::new(
        config.node_id,
        config.data_dir.clone(),
        Endpoint {
            host: config.advertised_host.clone(),
            port: config.listen().port(),
        },
    );
    // A node with one PLAINTEXT listener registers as builds before named listeners did
    // (a version 1 record, which they can still read).
    let listeners = config.listener_endpoints();
    cfg.listeners = if listeners.len() == 1 && listeners[0].name == PLAINTEXT_LISTENER {
        Vec::new()
    } else {
        listeners
    };
    cfg.rpc_listen = config.rpc_listen;
    cfg.voters = config.voters.clone();
    if config.rpc_tls {
        // `--rpc-tls` needs --tls-cert, --tls-key and --tls-ca (checked at start).
        let state = shard
            .shared_handle
            .tls
            .clone()
            .filter(|s| s.rpc_configs().is_some())
            .ok_or_else(|| std::io::Error::other("--rpc-tls needs --tls-ca"))?;
        cfg.rpc_tls = Some(sluice_rpc::RpcTls {
            configs: std::sync::Arc::new(move || state.rpc_configs().expect("checked above")),
        });
    }
    // Kafka's metadata.log.max.record.bytes.between.snapshots (20 MiB); tests force
    // snapshots after a few KiB through this variable (not a supported setting).
    if let Some(bytes) = std::env::var("SLUICE_METADATA_SNAPSHOT_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        cfg.snapshot_bytes = bytes.max(1);
    }
    cfg.controller.num_partitions = config.num_partitions;
    // Kafka's default.replication.factor (--default-replication-factor; the offsets
    // topic's is the controller's default, Kafka's 3: module header).
    cfg.controller.default_replication_factor = config.default_replication_factor;
    cfg.controller.topic_config_check = check_topic_configs;
    cfg.controller.token_max_lifetime_ms = config.delegation_token_max_lifetime_ms;
    cfg.controller.token_expiry_time_ms = config.delegation_token_expiry_time_ms;
    // A log that is still empty starts from the state this data directory already has (a
    // single-node sluice from before the controller log: upgrade in place). Only a node
    // that is its cluster's only voter may do that: of several voters, whichever became
    // the first controller would write its own topics, and the others would drop theirs.
    let legacy = legacy_state(shard);
    let has_log = config
        .data_dir
        .join("cluster")
        .join("controller.wal")
        .exists();
    let alone = config
        .voters
        .iter()
        .all(|v| v.id as i64 == config.node_id as i64);
    let voter = config.voters.is_empty()
        || config
            .voters
            .iter()
            .any(|v| v.id as i64 == config.node_id as i64);
    let adopted = shard.topics().state.metadata_index;
    if voter && !has_log && adopted > 0 {
        // The state came from a log that is gone: bootstrapping again from it would hand
        // out producer ids and revisions that log had already given. (A broker-only node
        // keeps no log: it pulls the log from the voters at every start.)
        return Err(std::io::Error::other(format!(
            "{} has a state adopted from the controller log (index {adopted}) but no \
             cluster/controller.wal: the log was lost; restore it rather than start afresh",
            config.data_dir.display()
        )));
    }
    // (A state adopted from a log, `adopted > 0`, is no single-node state: a broker-only
    // node restarting has one and no log of its own.)
    if !has_log && adopted == 0 && !alone && !legacy.topics.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} holds the topics of a single-node sluice ({} of them) and no controller log: \
             it can be upgraded in place only as a cluster of one (no --voters, or itself as \
             the only voter), not join a cluster of {} voters",
            config.data_dir.display(),
            legacy.topics.len(),
            config.voters.len()
        )));
    }
    cfg.legacy = Some(legacy);
    let node = Rc::new(ControllerNode::start(cfg).await?);
    // The partition groups' traffic and leaders ride on this runtime's transport.
    if let Some(rep) = shard.replication() {
        rep.set_node(&node);
        let weak = Rc::downgrade(shard);
        node.set_partition_raft(Rc::new(move |env| {
            if let Some(shard) = weak.upgrade() {
                crate::replication::deliver(&shard, env);
            }
        }));
    }
    // Other nodes ask this one to hand partitions it leads to their preferred replicas,
    // and to write transaction markers to them.
    node.set_extension(Rc::new(crate::node_rpc::NodeRpc(Rc::downgrade(shard))));
    node.attach_leaders(Rc::new(crate::replication::LeaderReports::new(
        shard.shared_handle.clone(),
    )));
    let sub = node.subscribe();
    let solo = config.voters.is_empty();
    controller.set_cluster(node.clone());
    let me = shard.clone();
    glommio::spawn_local(async move { run(me, sub).await }).detach();
    if !solo {
        // The quorum may need nodes that start after this one: hand them over meanwhile.
        let (me, n) = (shard.clone(), node.clone());
        glommio::spawn_local(async move { crate::scram_store::apply_pending(&me, &n).await })
            .detach();
    }
    if solo {
        // Alone, this node is live as soon as its own registration commits (one fsync):
        // serve only then, so the first Metadata already lists it. A node of a larger
        // cluster cannot wait here: the quorum may need nodes that start after it. A
        // shutdown signal ends the wait (the node then stops without serving).
        let live = futures_lite::future::or(node.wait_live(SOLO_LIVE_WAIT), async {
            shard.ctx.shutdown().wait().await;
            true
        })
        .await;
        if !live {
            return Err(std::io::Error::other(format!(
                "not registered with its own controller within {SOLO_LIVE_WAIT:?}"
            )));
        }
        // Credentials `sluice users add` left commit before the node serves, so the first
        // client may already authenticate with them.
        crate::scram_store::apply_pending(shard, &node).await;
        // Serve the image that holds its registration. Adopting here (the loop may not have
        // run yet; adoptions are serialized) rather than waiting for the loop to reach the
        // applied index: entries that are no metadata batch (Raft's election no-op) raise
        // that index without an update for the loop.
        adopt(shard).await;
    }
    Ok(())
}

/// How long a cluster of one may take to register with itself at start.
const SOLO_LIVE_WAIT: Duration = Duration::from_secs(30);

/// This data directory's state as the controller log's first records would express it.
fn legacy_state(shard: &BrokerShard) -> LegacyState {
    let state = shard.shared_handle.cluster_state();
    LegacyState {
        cluster_id: state.cluster_id.clone(),
        // This start's id (the caller refused a state of another node's).
        node: shard.config.node_id,
        topics: state
            .topics
            .iter()
            .map(|t| LegacyTopic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
            })
            .collect(),
        broker_configs: state.broker_configs.clone(),
        // Ids below either mark may have been handed out by the single-node allocator.
        producer_id_next_block: state
            .producer_id_next_block
            .max(shard.shared_handle.legacy_producer_id_end),
    }
}

/// The broker's topic-config rules, for the controller to refuse what a node could not apply.
fn check_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), String> {
    crate::topic_config::validate_topic_configs(
        configs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|p| p.message())
}

/// Shard 0's loop: every committed metadata batch becomes the broker's state and view. It
/// holds no handle on the runtime between updates, so shutdown can take it.
async fn run(shard: Rc<BrokerShard>, sub: Subscription) {
    // The image as of now first (the runtime replayed its log before it started): the
    // cached state may be older.
    adopt(&shard).await;
    loop {
        // A leadership change of the controller group commits no batch: refresh the
        // controller id Metadata reports while waiting.
        let next = futures_lite::future::or(async { Some(sub.next().await) }, async {
            glommio::timer::sleep(CONTROLLER_REFRESH).await;
            None
        })
        .await;
        let update = match next {
            None => {
                refresh_controller(&shard);
                continue;
            }
            Some(None) => break,
            Some(Some(u)) => u,
        };
        let index = match &update {
            Update::Batch { index, .. } | Update::Image { index, .. } => *index,
        };
        // Batches queued behind one already adopted: the image held them then.
        if index <= shard.adopted_metadata_index() {
            continue;
        }
        adopt(&shard).await;
        refresh_controller(&shard);
    }
    // The runtime stops at shutdown (`stop` takes it first) or when it failed.
    let failure = shard
        .controller
        .as_ref()
        .and_then(|c| c.cluster())
        .and_then(|n| n.failure());
    if let Some(why) = failure {
        // Kafka halts a broker whose metadata log fails: serving frozen metadata would
        // answer every client wrongly from now on. The node stops as on SIGTERM (what is
        // in flight is answered, logs close) and exits non-zero with the reason.
        log::error!("the controller runtime failed: {why}; stopping the node");
        shard.shared_handle.stop_fatally(
            shard.ctx.shutdown(),
            format!("the controller runtime failed: {why}"),
        );
        return;
    }
    log::info!("metadata updates ended (the controller runtime stopped)");
}

/// How often the controller id is refreshed between metadata batches.
const CONTROLLER_REFRESH: Duration = Duration::from_millis(250);

fn refresh_controller(shard: &BrokerShard) {
    report_reassignments(shard);
    if let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) {
        // And the transport's view of the other nodes, for the partition groups.
        shard.shared_handle.set_node_liveness(node.peers());
        let view = &shard.shared_handle.cluster_view;
        let leader = node.leader().unwrap_or(-1);
        if view.controller() != leader {
            view.set_controller(leader);
        }
    }
}

/// Sends the controller the reassignments this node's partition leaders found done
/// (`replication.rs` queues them in `Shared::reassignments_done`, from any shard). Each
/// report is its own task: the controller answers once the completion commits. A report
/// that fails is not retried here: the leader reports again while the image still shows
/// the reassignment; a stale one (another revision) is refused by the controller.
fn report_reassignments(shard: &BrokerShard) {
    let done = std::mem::take(
        &mut *shard
            .shared_handle
            .reassignments_done
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return;
    };
    for (topic, partition, revision) in done {
        let node = node.clone();
        glommio::spawn_local(async move {
            match node
                .reassignment_complete(topic, partition, revision)
                .await
            {
                Answer::ReassignmentComplete(Ok(())) => log::info!(
                    "reassignment of partition {partition} of topic {} completed (revision {revision})",
                    crate::topics::base64_url(&topic)
                ),
                other => log::info!(
                    "reassignment of partition {partition} (revision {revision}) not completed: {other:?}"
                ),
            }
        })
        .detach();
    }
}

/// Controlled shutdown on shard 0: the controller leadership, if this node holds it, goes to
/// another voter (`ControllerNode::resign`; asked again after an abandoned transfer, at most
/// [`RESIGN_ATTEMPTS_MAX`] times in all). True while this node still leads the controller
/// group and a transfer is under way.
pub fn resign(shard: &BrokerShard, asked: &std::cell::Cell<(Option<Instant>, u32)>) -> bool {
    let Some(node) = shard.controller.as_ref().and_then(|c| c.cluster()) else {
        return false;
    };
    if !node.leads_controller() {
        return false;
    }
    let (at, times) = asked.get();
    if at.is_some_and(|at| at.elapsed() < RESIGN_RETRY) {
        return true;
    }
    // (Its successor may be stopping too, and then ignores the transfer.)
    if times >= RESIGN_ATTEMPTS_MAX {
        return false;
    }
    let sent = node.resign();
    if sent {
        asked.set((Some(Instant::now()), times + 1));
    }
    sent
}

/// How many times a stopping node asks to hand the controller leadership over.
const RESIGN_ATTEMPTS_MAX: u32 = 2;

/// A controller hand-off not completed after this long is asked again (raft-rs abandons a
/// transfer after an election timeout).
const RESIGN_RETRY: Duration = Duration::from_millis(
    sluice_raft::manager::TICK_MS * sluice_raft::manager::ELECTION_TICKS as u64 + 100,
);

/// Stops the runtime (shard 0, at shutdown, after the logs closed).
pub async fn stop(shard: &BrokerShard) {
    let Some(node) = shard.controller.as_ref().and_then(|c| c.take_cluster()) else {
        return;
    };
    match Rc::try_unwrap(node) {
        Ok(node) => node.shutdown().await,
        // A request still holds it: dropping our handle closes it when that one ends.
        Err(node) => drop(node),
    }
}

async fn adopt(shard: &Rc<BrokerShard>) {
    let Some(controller) = &shard.controller else {
        return;
    };
    if shard.draining() {
        // Shutting down: logs are closing; no partition opens or goes now (the next start
        // adopts what committed meanwhile).
        return;
    }
    let Some(node) = controller.cluster() else {
        return;
    };
    let index = node.applied_index();
    let image = node.image();
    if image.cluster_id().is_none() {
        // A log not bootstrapped yet (its first entry, which carries the cluster id and
        // any single-node state, has not committed): its empty image would drop every
        // partition this node holds.
        return;
    }
    shard
        .shared_handle
        .credentials
        .set(image.scram_credentials());
    shard.shared_handle.acls.set(image.acls());
    shard.shared_handle.quotas.set(image.quotas());
    shard.shared_handle.features.set(image.features(), index);
    shard
        .shared_handle
        .client_metrics
        .set(image.client_metrics());
    shard.shared_handle.tokens.set(
        image.tokens(),
        shard.config.delegation_token_secret_key.as_deref(),
    );
    let view = &shard.shared_handle.cluster_view;
    view.set_brokers(brokers_from_image(&image), node.leader().unwrap_or(-1));
    // Leadership reports of partitions the image no longer has go.
    view.retain_partitions(|t, p| {
        image
            .topic(t)
            .is_some_and(|t| (p as usize) < t.partitions.len())
    });
    let current = shard.topics();
    // The state records where the log's producer-id blocks have reached, so a state file
    // never understates what was handed out.
    let pid_mark = image
        .last_producer_ids()
        .map_or(0, |b| b.end())
        .max(current.state.producer_id_next_block);
    let state = state_from_image(
        &image,
        shard.config.node_id,
        index,
        current.version() + 1,
        pid_mark,
    );
    let behind = current.state.metadata_index;
    drop(current);
    match controller.adopt(shard, state).await {
        Ok(true) => shard.set_adopted_metadata_index(index),
        Ok(false) => log::info!(
            "metadata log at index {index}, behind the state this node serves (index \
             {behind}): waiting for it to catch up"
        ),
        // An IO error writing the cached state or opening a partition: the next batch
        // retries (committed records cannot be refused).
        Err((code, msg)) => {
            log::error!("applying metadata up to index {index}: {msg} (error {code})")
        }
    }
}

/// How long an admin request waits, after the controller answered, for this node to have
/// applied the change (so the client's next request here sees it; Kafka's brokers answer
/// before their metadata catches up, sluice waits a little for read-your-writes).
const ADOPT_WAIT: Duration = Duration::from_secs(10);

/// Waits until this shard's topics satisfy `done` (or [`ADOPT_WAIT`] passed), and the
/// adoption that made them so has finished: shard 0's table changes before its own
/// partitions open (the other shards' have opened by then), so a client told "created"
/// could otherwise find a partition of shard 0 not open yet.
async fn wait_for(shard: &Rc<BrokerShard>, done: impl Fn(&crate::topics::TopicTable) -> bool) {
    let deadline = Instant::now() + ADOPT_WAIT;
    while !done(&shard.topics()) && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if let Some(c) = &shard.controller {
        c.settled().await;
    }
}

/// A controller refusal as a Kafka error code and message.
pub fn api_err(e: &ApiError) -> (i16, String) {
    (e.code, e.message.clone())
}

pub async fn create_topics(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    requests: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<(String, TopicResult)> {
    let mut results: Vec<(String, Option<TopicResult>)> = Vec::new();
    let mut asked = Vec::new();
    for r in requests {
        asked.push(sluice_meta::NewTopic {
            name: r.name.clone(),
            partitions: r.partitions,
            replication_factor: r.replication_factor,
            assignments: r.assignments,
            configs: r.configs,
        });
        results.push((r.name, None));
    }
    if asked.is_empty() {
        return results
            .into_iter()
            .map(|(n, r)| (n, r.expect("set")))
            .collect();
    }
    let answers = match node.create_topics(asked, validate_only).await {
        Answer::CreateTopics(a) => a,
        other => {
            log::error!("create topics: unexpected answer {other:?}");
            Vec::new()
        }
    };
    let mut answers = answers.into_iter();
    let mut created = Vec::new();
    for (name, slot) in &mut results {
        if slot.is_some() {
            continue;
        }
        let outcome = match answers.next() {
            Some((_, Ok(t))) => {
                created.push(t.id);
                Ok(TopicRecord {
                    name: name.clone(),
                    id: t.id,
                    partitions: t.partitions,
                    configs: t.configs,
                    internal: sluice_meta::image::is_internal_topic(name),
                    // The placement is the image's; the answer says how many replicas
                    // (filled in from the adopted state below).
                    replicas: vec![
                        vec![-1; t.replication_factor.max(1) as usize];
                        t.partitions.max(0) as usize
                    ],
                    moves: Vec::new(),
                })
            }
            Some((_, Err(e))) => Err(api_err(&e)),
            None => Err((
                kerr::UNKNOWN_SERVER_ERROR,
                "the controller gave no answer for this topic".into(),
            )),
        };
        *slot = Some(outcome);
    }
    if !validate_only && !created.is_empty() {
        wait_for(shard, |t| {
            created.iter().all(|id| t.get_by_id(id).is_some())
        })
        .await;
        let adopted = shard.topics();
        for (_, r) in &mut results {
            if let Some(Ok(t)) = r {
                if let Some(a) = adopted.get_by_id(&t.id) {
                    t.replicas = a.replicas.clone();
                }
            }
        }
    }
    results
        .into_iter()
        .map(|(n, r)| (n, r.expect("set")))
        .collect()
}

pub async fn delete_topics(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    names: Vec<String>,
) -> Vec<(String, TopicResult)> {
    let before = shard.topics();
    let answers = match node.delete_topics(names.clone()).await {
        Answer::DeleteTopics(a) => a,
        other => {
            log::error!("delete topics: unexpected answer {other:?}");
            Vec::new()
        }
    };
    let mut out = Vec::new();
    let mut gone = Vec::new();
    let mut answers = answers.into_iter();
    for name in names {
        let r = match answers.next() {
            Some((_, Ok(id))) => {
                gone.push(id);
                let known = before.get_by_id(&id);
                Ok(TopicRecord {
                    name: name.clone(),
                    id,
                    partitions: known.map_or(0, |t| t.partitions),
                    configs: Default::default(),
                    internal: sluice_meta::image::is_internal_topic(&name),
                    replicas: Vec::new(),
                    moves: Vec::new(),
                })
            }
            Some((_, Err(e))) => Err(api_err(&e)),
            None => Err((
                kerr::UNKNOWN_SERVER_ERROR,
                "the controller gave no answer for this topic".into(),
            )),
        };
        out.push((name, r));
    }
    if !gone.is_empty() {
        wait_for(shard, |t| gone.iter().all(|id| t.get_by_id(id).is_none())).await;
    }
    out
}

pub async fn create_partitions(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    name: String,
    count: i32,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let answer = node
        .create_partitions(vec![(name.clone(), count)], validate_only)
        .await;
    let outcome = match answer {
        Answer::CreatePartitions(mut a) if a.len() == 1 => a.remove(0).1,
        other => {
            log::error!("create partitions: unexpected answer {other:?}");
            return Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".into()));
        }
    };
    outcome.map_err(|e| api_err(&e))?;
    if !validate_only {
        wait_for(shard, |t| {
            t.get(&name).is_none_or(|t| t.partitions >= count)
        })
        .await;
    }
    Ok(())
}

/// AlterPartitionReassignments through the controller; waits (within `ADOPT_WAIT`) until
/// this node's topic table shows each accepted change (a new target, or a cancellation),
/// so a ListPartitionReassignments or Metadata on this node that follows sees it.
pub async fn alter_partition_reassignments(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    partitions: Vec<(String, i32, Option<Vec<i32>>)>,
) -> Vec<Result<(), (i16, String)>> {
    let n = partitions.len();
    let answer = node.alter_partition_reassignments(partitions.clone()).await;
    let outcomes: Vec<Result<(), (i16, String)>> = match answer {
        Answer::AlterPartitionReassignments(a) if a.len() == n => a
            .into_iter()
            .map(|(_, o)| o.map_err(|e| api_err(&e)))
            .collect(),
        other => {
            log::error!("alter partition reassignments: unexpected answer {other:?}");
            return vec![Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".into())); n];
        }
    };
    let node_id = shard.config.node_id;
    let accepted: Vec<&(String, i32, Option<Vec<i32>>)> = partitions
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_ok())
        .map(|(p, _)| p)
        .collect();
    if !accepted.is_empty() {
        wait_for(shard, |t| {
            accepted.iter().all(|(name, p, target)| {
                t.get(name).is_none_or(|t| match target {
                    Some(target) => t.target_of(*p, node_id) == *target,
                    None => t.move_of(*p).is_none(),
                })
            })
        })
        .await;
    }
    outcomes
}

/// Sends the difference between `current` and `new` settings of one resource.
pub async fn alter_configs(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    target: ConfigTarget,
    current: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let mut ops: Vec<(String, Option<String>)> = new
        .iter()
        .filter(|(k, v)| current.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    ops.extend(
        current
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    if ops.is_empty() {
        return Ok(());
    }
    let change = AlterConfig {
        target,
        ops,
        replace: false,
    };
    let outcome = match node.alter_configs(vec![change], validate_only).await {
        Answer::AlterConfigs(mut a) if a.len() == 1 => a.remove(0).1,
        other => {
            log::error!("alter configs: unexpected answer {other:?}");
            return Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".into()));
        }
    };
    outcome.map_err(|e| api_err(&e))?;
    if !validate_only {
        let want = node.applied_index();
        wait_for(shard, |_| shard.adopted_metadata_index() >= want).await;
    }
    Ok(())
}

/// AlterUserScramCredentials through the controller: per change, its user and outcome, in
/// order. Once they commit, this returns only after every shard of this node has adopted
/// them, so the client's next authentication here sees the new credential.
pub async fn alter_scram(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    changes: Vec<sluice_meta::controller::ScramChange>,
) -> Vec<(String, Result<(), (i16, String)>)> {
    let users: Vec<String> = changes.iter().map(|c| c.user().to_string()).collect();
    let answer = match node.alter_scram(changes).await {
        Answer::AlterScram(v) if v.len() == users.len() => v,
        other => {
            log::error!("alter SCRAM credentials: unexpected answer {other:?}");
            let e = (kerr::UNKNOWN_SERVER_ERROR, "no answer".to_string());
            return users.into_iter().map(|u| (u, Err(e.clone()))).collect();
        }
    };
    if answer.iter().any(|(_, o)| o.is_ok()) {
        let want = node.applied_index();
        wait_for(shard, |_| shard.adopted_metadata_index() >= want).await;
    }
    answer
        .into_iter()
        .map(|(u, o)| (u, o.map_err(|e| api_err(&e))))
        .collect()
}

/// Takes a command's per-item outcomes out of its answer (or gives the answer back).
type Pick<K, T> = fn(Answer) -> Result<Vec<(K, sluice_meta::controller::Outcome<T>)>, Answer>;

/// Waits until this node has adopted every change the controller had applied when it
/// answered (so a read here after the answer sees the change).
async fn adopt_answered(shard: &Rc<BrokerShard>, node: &ControllerNode) {
    let want = node.applied_index();
    wait_for(shard, |_| shard.adopted_metadata_index() >= want).await;
}

/// The per-item outcomes of a controller command, in request order (an answer of another
/// kind or length fails every item with UNKNOWN_SERVER_ERROR); when any outcome `changed`
/// something, this returns only once this node has adopted the change, so every shard acts
/// on it from the client's next request.
async fn per_item<K: std::fmt::Debug, T: std::fmt::Debug>(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    n: usize,
    answer: Answer,
    pick: Pick<K, T>,
    changed: impl Fn(&sluice_meta::controller::Outcome<T>) -> bool,
) -> Vec<Result<T, (i16, String)>> {
    let answer = match pick(answer) {
        Ok(v) if v.len() == n => v,
        other => {
            log::error!("controller command: unexpected answer {other:?}");
            let e = (kerr::UNKNOWN_SERVER_ERROR, "no answer".to_string());
            return (0..n).map(|_| Err(e.clone())).collect();
        }
    };
    if answer.iter().any(|(_, o)| changed(o)) {
        adopt_answered(shard, node).await;
    }
    answer
        .into_iter()
        .map(|(_, o)| o.map_err(|e| api_err(&e)))
        .collect()
}

/// CreateDelegationToken through the controller: the token as stored, once this node has
/// adopted it (a Describe here then shows it).
pub async fn create_token(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    req: sluice_meta::controller::CreateToken,
) -> Result<sluice_meta::tokens::TokenRecord, (i16, String)> {
    let answer = node.create_token(req).await;
    let Answer::CreateToken(o) = answer else {
        log::error!("controller command: unexpected answer {answer:?}");
        return Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".to_string()));
    };
    let t = o.map_err(|e| api_err(&e))?;
    adopt_answered(shard, node).await;
    Ok(t)
}

/// RenewDelegationToken (`expire`: ExpireDelegationToken) through the controller: the new
/// expiry time, once this node has adopted it.
pub async fn token_expiry(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    token_id: String,
    principal: String,
    period_ms: i64,
    expire: bool,
) -> Result<i64, (i16, String)> {
    let answer = node
        .token_expiry(token_id, principal, period_ms, expire)
        .await;
    let Answer::TokenExpiry(o) = answer else {
        log::error!("controller command: unexpected answer {answer:?}");
        return Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".to_string()));
    };
    let at = o.map_err(|e| api_err(&e))?;
    adopt_answered(shard, node).await;
    Ok(at)
}

/// CreateAcls through the controller: per binding, its outcome.
pub async fn create_acls(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    bindings: Vec<AclBinding>,
) -> Vec<Result<(), (i16, String)>> {
    let n = bindings.len();
    let answer = node.create_acls(bindings).await;
    let pick = |a| match a {
        Answer::CreateAcls(v) => Ok(v),
        other => Err(other),
    };
    per_item(shard, node, n, answer, pick, Result::is_ok).await
}

/// DeleteAcls through the controller: per filter, the bindings it removed.
pub async fn delete_acls(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    filters: Vec<AclFilter>,
) -> Vec<Result<Vec<AclBinding>, (i16, String)>> {
    let n = filters.len();
    let answer = node.delete_acls(filters).await;
    let pick = |a| match a {
        Answer::DeleteAcls(v) => Ok(v),
        other => Err(other),
    };
    let removed = |o: &sluice_meta::controller::Outcome<Vec<AclBinding>>| {
        o.as_ref().is_ok_and(|v| !v.is_empty())
    };
    per_item(shard, node, n, answer, pick, removed).await
}

/// AlterClientQuotas through the controller: per entry, its outcome.
pub async fn alter_quotas(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    entries: Vec<sluice_meta::controller::QuotaAlteration>,
    validate_only: bool,
) -> Vec<Result<(), (i16, String)>> {
    let n = entries.len();
    let answer = node.alter_client_quotas(entries, validate_only).await;
    let pick = |a| match a {
        Answer::AlterQuotas(v) => Ok(v),
        other => Err(other),
    };
    let changed = |o: &sluice_meta::controller::Outcome<()>| !validate_only && o.is_ok();
    per_item(shard, node, n, answer, pick, changed).await
}

/// UpdateFeatures through the controller: per update, its outcome. Answered once this
/// node has adopted the new levels, so its own ApiVersions shows them.
pub async fn update_features(
    shard: &Rc<BrokerShard>,
    node: &ControllerNode,
    updates: Vec<sluice_meta::features::FeatureUpdate>,
    validate_only: bool,
) -> Vec<Result<(), (i16, String)>> {
    let n = updates.len();
    let answer = node.update_features(updates, validate_only).await;
    let pick = |a| match a {
        Answer::UpdateFeatures(v) => Ok(v),
        other => Err(other),
    };
    let changed = |o: &sluice_meta::controller::Outcome<()>| !validate_only && o.is_ok();
    per_item(shard, node, n, answer, pick, changed).await
}

/// A block of producer ids for this node from the controller: `(first, end)`.
pub async fn allocate_producer_ids(node: &ControllerNode) -> Result<(i64, i64), (i16, String)> {
    match node.allocate_producer_ids().await {
        Answer::AllocateProducerIds(Ok(b)) => Ok((b.first, b.end())),
        Answer::AllocateProducerIds(Err(e)) => Err(api_err(&e)),
        other => {
            log::error!("allocate producer ids: unexpected answer {other:?}");
            Err((kerr::UNKNOWN_SERVER_ERROR, "no answer".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_meta::record::{BrokerRegistration, Endpoint, PartitionRecord, Record};

    fn ep(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn the_state_follows_the_image() {
        let mut image = MetadataImage::new();
        let mut records = vec![Record::ClusterId {
            cluster_id: "abcdefghijklmnopqrstuv".into(),
        }];
        for node in 1..=2 {
            records.push(Record::RegisterBroker(BrokerRegistration {
                node,
                incarnation: [node as u8; 16],
                directory: [node as u8; 16],
                epoch: node as u64,
                kafka: ep(9090 + node as u16),
                listeners: Vec::new(),
                rpc: ep(7070 + node as u16),
                rack: None,
                fenced: node == 2,
                features: Vec::new(),
            }));
        }
        records.push(Record::Topic {
            name: "t".into(),
            id: [7; 16],
            configs: [("retention.ms".to_string(), "1000".to_string())].into(),
        });
        for (p, replicas) in [vec![1], vec![2]].into_iter().enumerate() {
            records.push(Record::Partition(PartitionRecord {
                topic: [7; 16],
                partition: p as i32,
                replicas,
                adding: vec![],
                removing: vec![],
                revision: 10 + p as u64,
            }));
        }
        records.push(Record::Config {
            resource: sluice_meta::ConfigResource::Broker(None),
            key: "log.retention.ms".into(),
            value: Some("5".into()),
        });
        records.push(Record::Config {
            resource: sluice_meta::ConfigResource::Broker(Some(1)),
            key: "log.retention.ms".into(),
            value: Some("6".into()),
        });
        image.apply_batch(&records).expect("valid records");
        let s = state_from_image(&image, 1, 9, 4, 2000);
        assert_eq!(s.cluster_id, "abcdefghijklmnopqrstuv");
        assert_eq!(
            (s.node_id, s.version, s.producer_id_next_block),
            (1, 4, 2000)
        );
        assert_eq!(s.topics.len(), 1);
        let t = &s.topics[0];
        assert_eq!((t.name.as_str(), t.partitions), ("t", 2));
        assert_eq!(t.replicas, vec![vec![1], vec![2]]);
        assert!(t.hosted_on(0, 1) && !t.hosted_on(1, 1));
        assert_eq!(
            s.broker_configs["log.retention.ms"], "6",
            "the node's own wins"
        );
        let other = state_from_image(&image, 2, 9, 1, 0);
        assert_eq!(other.broker_configs["log.retention.ms"], "5");
        let brokers = brokers_from_image(&image);
        assert_eq!(brokers.len(), 1, "fenced node 2 is left out");
        assert_eq!(brokers[0].node, 1);
        assert_eq!(
            brokers[0].endpoint(sluice_security::SecurityProtocol::Plaintext),
            Some(("127.0.0.1", 9091)),
            "a registration without named listeners has one, PLAINTEXT"
        );
    }
}
