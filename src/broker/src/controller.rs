//! The controller role, held by shard 0: the only writer of the cluster state (topics,
//! configs). Each change is serialized, persisted durably, then pushed to every shard before
//! the request that caused it is answered, so a client that saw "created" finds the topic on
//! whatever shard its next request lands on.
//!
//! Invariant: a state is persisted only if it can be distributed and loaded again. Before
//! the write, the controller checks the totals (partitions per node, records per request,
//! topics) and builds the very frame it will send (the change, a [`StateDelta`], not the
//! whole state), so a change over the frame limit or a state over the shard table's capacity
//! is refused with an error and never reaches the disk (a persisted state that cannot be
//! distributed would fail every later change, or the next start).
//! Persisting comes before distributing, so no shard ever serves a state that a crash could
//! take back. What can still fail after the write is a shard opening or removing partition
//! files (I/O); that fails the request (KAFKA_STORAGE_ERROR) rather than being only logged,
//! and the next start, which opens every partition of the stored state, retries it.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use sluice_shard::Frame;

use crate::config::BrokerConfig;
use crate::kerr;
use crate::ops::TAG_TOPICS;
use crate::shard::BrokerShard;
use crate::topic_config::{self, ConfigProblem};
use crate::topics::{
    self, ClusterState, StateDelta, TopicRecord, PARTITIONS_PER_NODE_MAX, PARTITIONS_PER_TOPIC_MAX,
    RECORDS_PER_REQUEST_MAX, TOPICS_MAX,
};

/// A topic creation request, after defaults are filled in.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: default (1). Anything else but 1 is refused on a single node.
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// The outcome of one topic operation: Kafka error code and message.
pub type TopicResult = Result<TopicRecord, (i16, String)>;

pub struct Controller {
    config: Arc<BrokerConfig>,
    shared: Arc<crate::Shared>,
    /// Serializes changes: one read-modify-persist-broadcast at a time.
    lock: Rc<Semaphore>,
    /// The controller runtime, which decides every change (this role then only adopts what
    /// the metadata log commits; see `metadata_sync`). Set at start.
    cluster: std::cell::RefCell<Option<Rc<sluice_cluster::ControllerNode>>>,
    /// One producer-id block request to the controller at a time: the others wait for it
    /// and take ids from the block it brought.
    producer_id_lock: Rc<Semaphore>,
}

impl Controller {
    pub fn new(config: Arc<BrokerConfig>, shared: Arc<crate::Shared>) -> Controller {
        Controller {
            config,
            shared,
            lock: Rc::new(Semaphore::new(1)),
            cluster: Default::default(),
            producer_id_lock: Rc::new(Semaphore::new(1)),
        }
    }

    /// A new producer-id block for this node, unless the current one still has ids (another
    /// request just brought it: the asker takes from it) or the controller gave none.
    pub async fn producer_id_block(&self, _shard: &Rc<BrokerShard>) -> Option<(i64, i64)> {
        let _one = self.producer_id_lock.acquire_permit(1).await.ok()?;
        if self.shared.cluster_producer_ids.has_ids() {
            return None;
        }
        let node = self.cluster()?;
        match crate::metadata_sync::allocate_producer_ids(&node).await {
            Ok(block) => {
                // Adopted here too, so the waiters behind this one find it.
                self.shared.cluster_producer_ids.adopt(block.0, block.1);
                Some(block)
            }
            Err((code, msg)) => {
                log::warn!("producer ids from the controller: {msg} (error {code})");
                None
            }
        }
    }

    /// Hands every later change to the cluster's controller runtime.
    pub fn set_cluster(&self, node: Rc<sluice_cluster::ControllerNode>) {
        *self.cluster.borrow_mut() = Some(node);
    }

    pub fn cluster(&self) -> Option<Rc<sluice_cluster::ControllerNode>> {
        self.cluster.borrow().clone()
    }

    /// Returns once no change or adoption is in progress (one that began before the call has
    /// distributed and opened or removed its partitions).
    pub async fn settled(&self) {
        let _ = self.lock.acquire_permit(1).await;
    }

    /// Takes the runtime out (shutdown): later changes find none.
    pub fn take_cluster(&self) -> Option<Rc<sluice_cluster::ControllerNode>> {
        self.cluster.borrow_mut().take()
    }

    /// Adopts a state derived from the metadata log: caches it in the state file and
    /// distributes it to every shard, as a change made here would be. Its version is set to
    /// follow the current one.
    ///
    /// The log decided it, so nothing here refuses it: a change larger than one frame goes
    /// to the shards as a resync (each takes the whole state from `Shared`), and the node's
    /// partition count was the controller's to check. A state derived from an older log
    /// index than the one in force is not adopted (`Ok(false)`): the node waits for its log
    /// to catch up rather than drop partitions it hosts.
    pub async fn adopt(
        &self,
        shard: &Rc<BrokerShard>,
        mut new: ClusterState,
    ) -> Result<bool, (i16, String)> {
        let _permit = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|e| (kerr::UNKNOWN_SERVER_ERROR, e.to_string()))?;
        let current = shard.topics();
        if new.metadata_index < current.state.metadata_index {
            return Ok(false);
        }
        new.version = current.state.version;
        if new == current.state {
            return Ok(true);
        }
        new.version += 1;
        let delta = StateDelta::between(&current.state, &new);
        let frame = match Frame::encode_tagged(TAG_TOPICS, &delta, None) {
            Ok(f) => f,
            Err(_) => {
                let resync = StateDelta::resync(current.state.version, new.version);
                Frame::encode_tagged(TAG_TOPICS, &resync, None)
                    .map_err(|e| (kerr::UNKNOWN_SERVER_ERROR, e.to_string()))?
            }
        };
        drop(current);
        let data_dir = self.config.data_dir.clone();
        let stored = new.clone();
        glommio::executor()
            .spawn_blocking(move || topics::store_state(&data_dir, &stored))
            .await
            .map_err(|e| (kerr::KAFKA_STORAGE_ERROR, e.to_string()))?;
        self.shared.set_cluster_state(Arc::new(new.clone()));
        self.distribute(shard, frame, new).await?;
        Ok(true)
    }

    pub fn shared(&self) -> &Arc<crate::Shared> {
        &self.shared
    }

    /// Applies `change` to a copy of the state; if it changed anything, checks that the
    /// result can be distributed, persists it and distributes it to every shard.
    async fn change<T>(
        &self,
        shard: &Rc<BrokerShard>,
        change: impl FnOnce(&mut ClusterState) -> (T, bool),
    ) -> Result<T, (i16, String)> {
        let _permit = self
            .lock
            .acquire_permit(1)
            .await
            .map_err(|e| (kerr::UNKNOWN_SERVER_ERROR, e.to_string()))?;
        let current = shard.topics();
        let mut state = current.state.clone();
        let (out, changed) = change(&mut state);
        if !changed {
            return Ok(out);
        }
        state.version += 1;
        let frame = distributable(&current.state, &state)?;
        drop(current);
        let data_dir = self.config.data_dir.clone();
        let stored = state.clone();
        // The store creates, writes, fsyncs and renames files: off the executor thread, so
        // shard 0 keeps serving its partitions and connections meanwhile.
        glommio::executor()
            .spawn_blocking(move || topics::store_state(&data_dir, &stored))
            .await
            .map_err(|e| (kerr::KAFKA_STORAGE_ERROR, e.to_string()))?;
        self.shared.set_cluster_state(Arc::new(state.clone()));
        self.distribute(shard, frame, state).await?;
        Ok(out)
    }

    /// Sends the state to every other shard, then adopts it here. Every shard is sent it
    /// even when one fails; the first failure is the request's.
    async fn distribute(
        &self,
        shard: &Rc<BrokerShard>,
        frame: Frame,
        state: ClusterState,
    ) -> Result<(), (i16, String)> {
        let mut failure = None;
        for (to, r) in shard.ctx.mesh().broadcast(&frame).await {
            let problem = match r {
                Ok(reply) => reply
                    .payload()
                    .map(|m| String::from_utf8_lossy(m).into_owned()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(p) = problem {
                log::error!("topic table to {to}: {p}");
                failure.get_or_insert((
                    kerr::KAFKA_STORAGE_ERROR,
                    format!("shard {to} could not apply the change: {p}"),
                ));
            }
        }
        let here = shard
            .apply_topics(state)
            .await
            .map_err(|e| (kerr::KAFKA_STORAGE_ERROR, e.to_string()));
        match failure {
            Some(f) => Err(f),
            None => here,
        }
    }

    /// Creates topics (or only validates them). Results are in request order.
    pub async fn create_topics(
        &self,
        shard: &Rc<BrokerShard>,
        requests: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<(String, TopicResult)> {
        if let Some(node) = self.cluster() {
            return crate::metadata_sync::create_topics(shard, &node, requests, validate_only)
                .await;
        }
        let num_partitions = self.config.num_partitions;
        let names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
        // Kafka's controller refuses a user operation that would write more than 10,000
        // records (one per topic, per partition, per config): the whole request fails.
        let records: u64 = requests
            .iter()
            .map(|r| {
                let partitions = if r.partitions == -1 {
                    num_partitions
                } else {
                    r.partitions
                };
                1 + partitions.max(0) as u64 + r.configs.len() as u64
            })
            .sum();
        if records > RECORDS_PER_REQUEST_MAX {
            return each_failed(
                names,
                (
                    kerr::POLICY_VIOLATION,
                    format!(
                        "Excessively large number of partitions per request: {records} records, \
                         at most {RECORDS_PER_REQUEST_MAX}."
                    ),
                ),
            );
        }
        let outcome = self
            .change(shard, |state| {
                let mut known = NameIndex::new(&state.topics);
                let mut partitions_total: u64 = state
                    .topics
                    .iter()
                    .map(|t| t.partitions.max(0) as u64)
                    .sum();
                let mut results = Vec::with_capacity(requests.len());
                let mut changed = false;
                for req in requests {
                    let r = check_new_topic(&known, &req, num_partitions).and_then(|record| {
                        if state.topics.len() >= TOPICS_MAX {
                            return Err((
                                kerr::POLICY_VIOLATION,
                                format!("This node already holds {TOPICS_MAX} topics, its limit."),
                            ));
                        }
                        let total = partitions_total + record.partitions as u64;
                        if total > PARTITIONS_PER_NODE_MAX {
                            return Err((
                                kerr::POLICY_VIOLATION,
                                format!(
                                    "Creating {} partitions would make {total}, over the \
                                     {PARTITIONS_PER_NODE_MAX} one node holds.",
                                    record.partitions
                                ),
                            ));
                        }
                        if validate_only {
                            return Ok(record);
                        }
                        partitions_total = total;
                        known.insert(&record.name);
                        state.topics.push(record.clone());
                        changed = true;
                        Ok(record)
                    });
                    results.push((req.name, r));
                }
                (results, changed)
            })
            .await;
        outcome.unwrap_or_else(|e| each_failed(names, e))
    }

    /// Deletes topics by name. Results are in request order.
    pub async fn delete_topics(
        &self,
        shard: &Rc<BrokerShard>,
        names: Vec<String>,
    ) -> Vec<(String, TopicResult)> {
        if let Some(node) = self.cluster() {
            return crate::metadata_sync::delete_topics(shard, &node, names).await;
        }
        let requested = names.clone();
        let outcome = self
            .change(shard, |state| {
                let index: HashMap<&str, usize> = state
                    .topics
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.name.as_str(), i))
                    .collect();
                let mut doomed = vec![false; state.topics.len()];
                let results: Vec<_> = names
                    .into_iter()
                    .map(|n| {
                        let r = match index.get(n.as_str()) {
                            Some(&i) if state.topics[i].internal => Err((
                                kerr::INVALID_REQUEST,
                                "internal topics cannot be deleted".to_string(),
                            )),
                            Some(&i) => {
                                doomed[i] = true;
                                Ok(state.topics[i].clone())
                            }
                            None => Err((
                                kerr::UNKNOWN_TOPIC_OR_PARTITION,
                                format!("topic {n} does not exist"),
                            )),
                        };
                        (n, r)
                    })
                    .collect();
                drop(index);
                let changed = doomed.contains(&true);
                let mut at = 0;
                state.topics.retain(|_| {
                    at += 1;
                    !doomed[at - 1]
                });
                (results, changed)
            })
            .await;
        outcome.unwrap_or_else(|e| each_failed(requested, e))
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        shard: &Rc<BrokerShard>,
        name: String,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        if let Some(node) = self.cluster() {
            return crate::metadata_sync::create_partitions(
                shard,
                &node,
                name,
                count,
                validate_only,
            )
            .await;
        }
        self.change(shard, |state| {
            let Some(t) = state.topics.iter_mut().find(|t| t.name == name) else {
                return (Err((kerr::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name} does not exist"))), false);
            };
            if t.internal {
                // Group (and transaction) placement hashes ids over the partition count, so
                // growing it would strand every group's offsets in the wrong partition.
                let msg = format!("Cannot change the partition count of internal topic {name}.");
                return (Err((kerr::INVALID_REQUEST, msg)), false);
            }
            if count <= t.partitions {
                let msg = format!("Topic currently has {} partitions, which is higher than the requested {count}.", t.partitions);
                return (Err((kerr::INVALID_PARTITIONS, msg)), false);
            }
            if count > PARTITIONS_PER_TOPIC_MAX {
                return (Err((kerr::INVALID_PARTITIONS, format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"))), false);
            }
            let added = (count - t.partitions) as u64;
            if added > RECORDS_PER_REQUEST_MAX {
                let msg = format!("Excessively large number of partitions per request: {added}, at most {RECORDS_PER_REQUEST_MAX}.");
                return (Err((kerr::POLICY_VIOLATION, msg)), false);
            }
            if validate_only {
                return (Ok(()), false);
            }
            t.partitions = count;
            let total: u64 = state.topics.iter().map(|t| t.partitions.max(0) as u64).sum();
            if total > PARTITIONS_PER_NODE_MAX {
                let msg = format!("Adding {added} partitions would make {total}, over the {PARTITIONS_PER_NODE_MAX} one node holds.");
                return (Err((kerr::POLICY_VIOLATION, msg)), false);
            }
            (Ok(()), true)
        })
        .await?
    }

    /// Replaces (`replace = true`, AlterConfigs) or edits (IncrementalAlterConfigs) a
    /// topic's overrides. `edit` returns the new override map or a problem.
    pub async fn alter_topic_configs(
        &self,
        shard: &Rc<BrokerShard>,
        name: String,
        validate_only: bool,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ConfigProblem>,
    ) -> Result<(), (i16, String)> {
        if let Some(node) = self.cluster() {
            let Some(current) = shard.topics().get(&name).map(|t| t.configs.clone()) else {
                return Err((
                    kerr::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic {name} does not exist"),
                ));
            };
            let new = edit(&current).map_err(|p| (kerr::INVALID_CONFIG, p.message()))?;
            return crate::metadata_sync::alter_configs(
                shard,
                &node,
                sluice_meta::controller::ConfigTarget::Topic(name),
                &current,
                &new,
                validate_only,
            )
            .await;
        }
        self.change(shard, |state| {
            let Some(t) = state.topics.iter_mut().find(|t| t.name == name) else {
                return (
                    Err((
                        kerr::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("topic {name} does not exist"),
                    )),
                    false,
                );
            };
            let new = match edit(&t.configs) {
                Ok(n) => n,
                Err(p) => return (Err((kerr::INVALID_CONFIG, p.message())), false),
            };
            if let Err(p) = topic_config::validate_topic_configs(
                new.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            ) {
                return (Err((kerr::INVALID_CONFIG, p.message())), false);
            }
            if t.internal && new.get("cleanup.policy").map(|v| v.trim()) != Some("compact") {
                // Time or size retention (cleanup.policy with `delete`, or the default once the
                // override is gone) would erase committed offsets and group metadata.
                let msg = format!("Internal topic {name} must keep cleanup.policy=compact.");
                return (Err((kerr::INVALID_CONFIG, msg)), false);
            }
            if validate_only || new == t.configs {
                return (Ok(()), false);
            }
            t.configs = new;
            (Ok(()), true)
        })
        .await?
    }

    /// Edits the dynamic broker configs.
    pub async fn alter_broker_configs(
        &self,
        shard: &Rc<BrokerShard>,
        validate_only: bool,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    ) -> Result<(), (i16, String)> {
        if let Some(node) = self.cluster() {
            let current = shard.topics().state.broker_configs.clone();
            let new = edit(&current).map_err(|m| (kerr::INVALID_CONFIG, m))?;
            // The broker resource's settings as one map: kept as the cluster-wide defaults
            // (Kafka's per-node dynamic configs are not told apart yet).
            return crate::metadata_sync::alter_configs(
                shard,
                &node,
                sluice_meta::controller::ConfigTarget::Broker(None),
                &current,
                &new,
                validate_only,
            )
            .await;
        }
        self.change(shard, |state| {
            let new = match edit(&state.broker_configs) {
                Ok(n) => n,
                Err(m) => return (Err((kerr::INVALID_CONFIG, m)), false),
            };
            if validate_only || new == state.broker_configs {
                return (Ok(()), false);
            }
            state.broker_configs = new;
            (Ok(()), true)
        })
        .await?
    }
}

/// Topic names of the state by their '.'/'_'-folded form, for the existence and collision
/// checks of CreateTopics (one lookup per requested topic, not a scan).
struct NameIndex {
    folded: HashMap<String, String>,
}

impl NameIndex {
    fn new(topics: &[TopicRecord]) -> NameIndex {
        NameIndex {
            folded: topics
                .iter()
                .map(|t| (fold(&t.name), t.name.clone()))
                .collect(),
        }
    }

    fn insert(&mut self, name: &str) {
        self.folded.insert(fold(name), name.to_string());
    }

    /// The existing topic `name` equals or collides with.
    fn find(&self, name: &str) -> Option<&str> {
        self.folded.get(&fold(name)).map(String::as_str)
    }
}

/// Kafka refuses names that collide once '.' and '_' are treated alike (metric names).
fn fold(name: &str) -> String {
    name.replace('.', "_")
}

fn check_new_topic(known: &NameIndex, req: &NewTopic, num_partitions: i32) -> TopicResult {
    topics::validate_topic_name(&req.name).map_err(|m| (kerr::INVALID_TOPIC_EXCEPTION, m))?;
    match known.find(&req.name) {
        Some(existing) if existing == req.name => {
            return Err((
                kerr::TOPIC_ALREADY_EXISTS,
                format!("Topic '{}' already exists.", req.name),
            ));
        }
        Some(existing) => {
            return Err((
                kerr::INVALID_TOPIC_EXCEPTION,
                format!(
                    "Topic '{}' collides with existing topic: {existing}",
                    req.name
                ),
            ));
        }
        None => {}
    }
    let partitions = if req.partitions == -1 {
        num_partitions
    } else {
        req.partitions
    };
    if !(1..=PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
        return Err((
            kerr::INVALID_PARTITIONS,
            format!("Number of partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}."),
        ));
    }
    if req.replication_factor != -1 && req.replication_factor != 1 {
        return Err((
            kerr::INVALID_REPLICATION_FACTOR,
            format!(
                "Replication factor: {} larger than available brokers: 1.",
                req.replication_factor
            ),
        ));
    }
    topic_config::validate_topic_configs(req.configs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|p| (kerr::INVALID_CONFIG, p.message()))?;
    Ok(TopicRecord {
        name: req.name.clone(),
        id: topics::new_topic_id(),
        partitions,
        configs: req.configs.clone(),
        internal: req.name == crate::groups::OFFSETS_TOPIC || req.name == "__transaction_state",
        replicas: Vec::new(),
    })
}

/// The same failure for every requested topic: when the new state cannot be stored (a full
/// disk, say), each topic of the request is answered with the error, in request order —
/// clients match results to the topics they asked about (librdkafka calls a response
/// without them a malformed message).
fn each_failed(names: Vec<String>, e: (i16, String)) -> Vec<(String, TopicResult)> {
    names.into_iter().map(|n| (n, Err(e.clone()))).collect()
}

/// The frame that carries the change from `old` to `new` to the other shards, if `new` can
/// be distributed and loaded: the change within the frame limit, the partitions within the
/// shard table's capacity. Checked before the state is persisted.
fn distributable(old: &ClusterState, new: &ClusterState) -> Result<Frame, (i16, String)> {
    // The partitions this node hosts (every one in a cluster of one).
    let partitions: u64 = new
        .topics
        .iter()
        .map(|t| {
            if t.replicas.is_empty() {
                t.partitions.max(0) as u64
            } else {
                (0..t.partitions)
                    .filter(|p| t.hosted_on(*p, new.node_id))
                    .count() as u64
            }
        })
        .sum();
    if partitions > PARTITIONS_PER_NODE_MAX {
        return Err((
            kerr::POLICY_VIOLATION,
            format!("The change would leave {partitions} partitions on this node, over its limit of {PARTITIONS_PER_NODE_MAX}."),
        ));
    }
    let delta = StateDelta::between(old, new);
    Frame::encode_tagged(TAG_TOPICS, &delta, None).map_err(|e| {
        (
            kerr::POLICY_VIOLATION,
            format!(
                "The change was refused: it is more than the controller distributes in one \
                 update ({e}); split the request."
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: String, partitions: i32, configs: &[(&str, &str)]) -> TopicRecord {
        TopicRecord {
            name,
            id: topics::new_topic_id(),
            partitions,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            internal: false,
            replicas: Vec::new(),
        }
    }

    #[test]
    fn states_that_cannot_be_distributed_are_refused() {
        let empty = ClusterState::default();
        let mut state = ClusterState::default();
        state.topics.push(topic("a".into(), 3, &[]));
        assert!(distributable(&empty, &state).is_ok());

        // 105 topics of 10,000 partitions: over the shard table the next start would build.
        let mut wide = ClusterState::default();
        for i in 0..105 {
            wide.topics
                .push(topic(format!("t{i}"), PARTITIONS_PER_TOPIC_MAX, &[]));
        }
        let (code, msg) = distributable(&empty, &wide).unwrap_err();
        assert_eq!(code, kerr::POLICY_VIOLATION);
        assert!(msg.contains("partitions"), "{msg}");

        // Long names and large (valid) values in one change: over the distribution frame.
        let mut big = ClusterState::default();
        let throttles = "0:0,".repeat(8_000);
        for i in 0..64 {
            big.topics.push(topic(
                format!("{i:0>249}"),
                1,
                &[("leader.replication.throttled.replicas", &throttles)],
            ));
        }
        let (code, msg) = distributable(&empty, &big).unwrap_err();
        assert_eq!(code, kerr::POLICY_VIOLATION);
        assert!(msg.contains("one update"), "{msg}");
        // The same state grown a little at a time is fine: only the change travels.
        let mut grown = big.clone();
        grown.topics.push(topic("one-more".into(), 1, &[]));
        assert!(distributable(&big, &grown).is_ok());
    }

    #[test]
    fn names_are_found_by_their_folded_form() {
        let topics = vec![topic("a.b".into(), 1, &[])];
        let mut known = NameIndex::new(&topics);
        assert_eq!(known.find("a.b"), Some("a.b"));
        assert_eq!(known.find("a_b"), Some("a.b"));
        assert_eq!(known.find("c"), None);
        known.insert("c_d");
        assert_eq!(known.find("c.d"), Some("c_d"));
        let req = NewTopic {
            name: "a_b".into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            check_new_topic(&known, &req, 1).unwrap_err().0,
            kerr::INVALID_TOPIC_EXCEPTION
        );
    }
}
