//! The controller role, held by shard 0. The cluster's controller quorum decides every
//! change to topics, configs and producer-id blocks (sluice-cluster's runtime; a cluster of
//! one included); this role hands admin requests to it and adopts what its log commits
//! (`metadata_sync`): each adopted state is cached in `cluster/state.json` and pushed to
//! every shard, as a change (a [`StateDelta`]) or, when that is larger than a frame, as a
//! resync (each shard takes the whole state from `Shared`).
//!
//! Invariant: shards adopt states in commit order, one at a time, and never one derived from
//! an older log index than the state in force. Caching comes before distributing, so no
//! shard serves a state that the next start would not open again. What can still fail after
//! that is a shard opening or removing partition files (I/O); the admin request that waits
//! for the change then gets KAFKA_STORAGE_ERROR, and the next adoption or start retries.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use sluice_shard::Frame;

use crate::config::BrokerConfig;
use crate::kerr;
use crate::ops::TAG_TOPICS;
use crate::shard::BrokerShard;
use crate::topic_config::ConfigProblem;
use crate::topics::{self, ClusterState, StateDelta, TopicRecord};

/// A topic creation request, after defaults are filled in.
#[derive(Clone, Debug)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions`.
    pub partitions: i32,
    /// -1: default (1). Anything else but 1 is refused on a single node.
    pub replication_factor: i16,
    /// A manual replica assignment (kafka-topics.sh --replica-assignment): (partition,
    /// replicas) for partitions 0..n, with `partitions` and `replication_factor` -1, as
    /// Kafka asks; empty: placed by the controller.
    pub assignments: Vec<(i32, Vec<i32>)>,
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
    pub async fn producer_id_block(&self) -> Option<(i64, i64)> {
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

    /// The runtime, or NOT_CONTROLLER while it is not running (before start, at shutdown).
    fn runtime(&self) -> Result<Rc<sluice_cluster::ControllerNode>, (i16, String)> {
        self.cluster().ok_or_else(|| {
            (
                kerr::NOT_CONTROLLER,
                "The controller runtime is not running.".to_string(),
            )
        })
    }

    /// Creates topics (or only validates them). Results are in request order.
    pub async fn create_topics(
        &self,
        shard: &Rc<BrokerShard>,
        requests: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<(String, TopicResult)> {
        match self.runtime() {
            Ok(node) => {
                crate::metadata_sync::create_topics(shard, &node, requests, validate_only).await
            }
            Err(e) => each_failed(requests.into_iter().map(|r| r.name).collect(), e),
        }
    }

    /// Deletes topics by name. Results are in request order.
    pub async fn delete_topics(
        &self,
        shard: &Rc<BrokerShard>,
        names: Vec<String>,
    ) -> Vec<(String, TopicResult)> {
        match self.runtime() {
            Ok(node) => crate::metadata_sync::delete_topics(shard, &node, names).await,
            Err(e) => each_failed(names, e),
        }
    }

    /// Raises a topic's partition count to `count`.
    pub async fn create_partitions(
        &self,
        shard: &Rc<BrokerShard>,
        name: String,
        count: i32,
        validate_only: bool,
    ) -> Result<(), (i16, String)> {
        let node = self.runtime()?;
        crate::metadata_sync::create_partitions(shard, &node, name, count, validate_only).await
    }

    /// AlterPartitionReassignments: per (topic, partition, target or `None` to cancel), the
    /// outcome, in request order.
    pub async fn alter_partition_reassignments(
        &self,
        shard: &Rc<BrokerShard>,
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
    ) -> Vec<Result<(), (i16, String)>> {
        match self.runtime() {
            Ok(node) => {
                crate::metadata_sync::alter_partition_reassignments(shard, &node, partitions).await
            }
            Err(e) => partitions.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Edits a topic's config overrides: `edit` turns the current ones into the new ones
    /// (the controller validates the result, internal topics keeping `cleanup.policy=compact`).
    pub async fn alter_topic_configs(
        &self,
        shard: &Rc<BrokerShard>,
        name: String,
        validate_only: bool,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ConfigProblem>,
    ) -> Result<(), (i16, String)> {
        let node = self.runtime()?;
        let Some(current) = shard.topics().get(&name).map(|t| t.configs.clone()) else {
            return Err((
                kerr::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic {name} does not exist"),
            ));
        };
        let new = edit(&current).map_err(|p| (kerr::INVALID_CONFIG, p.message()))?;
        crate::metadata_sync::alter_configs(
            shard,
            &node,
            sluice_meta::controller::ConfigTarget::Topic(name),
            &current,
            &new,
            validate_only,
        )
        .await
    }

    /// Edits the dynamic broker configs of `target`: one node's own (`Some(id)`, the broker
    /// resource named by its id, which win on that node) or the cluster-wide defaults
    /// (`None`, the resource named ""). `edit` gets that resource's current settings alone.
    pub async fn alter_broker_configs(
        &self,
        shard: &Rc<BrokerShard>,
        target: Option<i32>,
        validate_only: bool,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, String>,
    ) -> Result<(), (i16, String)> {
        let node = self.runtime()?;
        let current = {
            let topics = shard.topics();
            match target {
                None => topics.state.default_broker_configs.clone(),
                Some(n) => topics
                    .state
                    .node_broker_configs
                    .get(&n)
                    .cloned()
                    .unwrap_or_default(),
            }
        };
        let new = edit(&current).map_err(|m| (kerr::INVALID_CONFIG, m))?;
        crate::metadata_sync::alter_configs(
            shard,
            &node,
            sluice_meta::controller::ConfigTarget::Broker(target),
            &current,
            &new,
            validate_only,
        )
        .await
    }

    /// Edits client-metrics subscription `name` (KIP-714): `edit` gets its overrides (none
    /// when it does not exist) and gives the whole new set, checked here as the controller
    /// checks it, so a change that alters nothing is still refused when invalid.
    pub async fn alter_client_metrics(
        &self,
        shard: &Rc<BrokerShard>,
        name: String,
        validate_only: bool,
        edit: impl FnOnce(&BTreeMap<String, String>) -> Result<BTreeMap<String, String>, (i16, String)>,
    ) -> Result<(), (i16, String)> {
        let node = self.runtime()?;
        let current = shard
            .shared_handle
            .client_metrics
            .get()
            .get(&name)
            .cloned()
            .unwrap_or_default();
        let new = edit(&current)?;
        sluice_meta::client_metrics::check(&name, &new)
            .map_err(|e| crate::metadata_sync::api_err(&e))?;
        crate::metadata_sync::alter_configs(
            shard,
            &node,
            sluice_meta::controller::ConfigTarget::ClientMetrics(name),
            &current,
            &new,
            validate_only,
        )
        .await
    }
}

/// The same failure for every requested topic: when the new state cannot be stored (a full
/// disk, say), each topic of the request is answered with the error, in request order —
/// clients match results to the topics they asked about (librdkafka calls a response
/// without them a malformed message).
fn each_failed(names: Vec<String>, e: (i16, String)) -> Vec<(String, TopicResult)> {
    names.into_iter().map(|n| (n, Err(e.clone()))).collect()
}
