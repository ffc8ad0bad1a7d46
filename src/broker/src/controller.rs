//! The controller role, held by shard 0: the only writer of the cluster state (topics,
//! configs). Each change is serialized, persisted durably, then pushed to every shard before
//! the request that caused it is answered, so a client that saw "created" finds the topic on
//! whatever shard its next request lands on.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use sluice_shard::Frame;

use crate::config::BrokerConfig;
use crate::kerr;
use crate::ops::TAG_TOPICS;
use crate::shard::BrokerShard;
use crate::topic_config::{self, ConfigProblem};
use crate::topics::{self, ClusterState, TopicRecord, PARTITIONS_PER_TOPIC_MAX};

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
}

impl Controller {
    pub fn new(config: Arc<BrokerConfig>, shared: Arc<crate::Shared>) -> Controller {
        Controller {
            config,
            shared,
            lock: Rc::new(Semaphore::new(1)),
        }
    }

    pub fn shared(&self) -> &Arc<crate::Shared> {
        &self.shared
    }

    /// Applies `change` to a copy of the state; if it changed anything, persists the result
    /// and distributes it to every shard.
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
        let mut state = shard.topics().state.clone();
        let (out, changed) = change(&mut state);
        if !changed {
            return Ok(out);
        }
        state.version += 1;
        topics::store_state(&self.config.data_dir, &state)
            .map_err(|e| (kerr::KAFKA_STORAGE_ERROR, e.to_string()))?;
        self.distribute(shard, state).await?;
        Ok(out)
    }

    /// Sends the state to every other shard, then adopts it here.
    async fn distribute(
        &self,
        shard: &Rc<BrokerShard>,
        state: ClusterState,
    ) -> Result<(), (i16, String)> {
        let frame = Frame::encode_tagged(TAG_TOPICS, &state, None)
            .map_err(|e| (kerr::UNKNOWN_SERVER_ERROR, e.to_string()))?;
        for (to, r) in shard.ctx.mesh().broadcast(&frame).await {
            if let Err(e) = r {
                log::error!("topic table to {to}: {e}");
            }
        }
        shard
            .apply_topics(state)
            .await
            .map_err(|e| (kerr::KAFKA_STORAGE_ERROR, e.to_string()))
    }

    /// Creates topics (or only validates them). Results are in request order.
    pub async fn create_topics(
        &self,
        shard: &Rc<BrokerShard>,
        requests: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<(String, TopicResult)> {
        let num_partitions = self.config.num_partitions;
        let names: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
        let outcome = self
            .change(shard, |state| {
                let mut table = topics::TopicTable::new(state.clone());
                let mut results = Vec::with_capacity(requests.len());
                let mut changed = false;
                for req in requests {
                    let r = check_new_topic(&table, &req, num_partitions).and_then(|record| {
                        if validate_only {
                            return Ok(record);
                        }
                        table
                            .insert(record.clone())
                            .map_err(|e| (kerr::TOPIC_ALREADY_EXISTS, e.to_string()))?;
                        changed = true;
                        Ok(record)
                    });
                    results.push((req.name, r));
                }
                let version = state.version;
                *state = table.state.clone();
                state.version = version;
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
        let requested = names.clone();
        let outcome = self
            .change(shard, |state| {
                let mut table = topics::TopicTable::new(state.clone());
                let mut changed = false;
                let results: Vec<_> = names
                    .into_iter()
                    .map(|n| {
                        let r = match table.remove(&n) {
                            Some(t) if t.internal => {
                                let _ = table.insert(t);
                                Err((
                                    kerr::INVALID_REQUEST,
                                    "internal topics cannot be deleted".to_string(),
                                ))
                            }
                            Some(t) => {
                                changed = true;
                                Ok(t)
                            }
                            None => Err((
                                kerr::UNKNOWN_TOPIC_OR_PARTITION,
                                format!("topic {n} does not exist"),
                            )),
                        };
                        (n, r)
                    })
                    .collect();
                let version = state.version;
                *state = table.state.clone();
                state.version = version;
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
        self.change(shard, |state| {
            let Some(t) = state.topics.iter_mut().find(|t| t.name == name) else {
                return (Err((kerr::UNKNOWN_TOPIC_OR_PARTITION, format!("topic {name} does not exist"))), false);
            };
            if count <= t.partitions {
                let msg = format!("Topic currently has {} partitions, which is higher than the requested {count}.", t.partitions);
                return (Err((kerr::INVALID_PARTITIONS, msg)), false);
            }
            if count > PARTITIONS_PER_TOPIC_MAX {
                return (Err((kerr::INVALID_PARTITIONS, format!("at most {PARTITIONS_PER_TOPIC_MAX} partitions"))), false);
            }
            if validate_only {
                return (Ok(()), false);
            }
            t.partitions = count;
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

fn check_new_topic(table: &topics::TopicTable, req: &NewTopic, num_partitions: i32) -> TopicResult {
    topics::validate_topic_name(&req.name).map_err(|m| (kerr::INVALID_TOPIC_EXCEPTION, m))?;
    if table.get(&req.name).is_some() {
        return Err((
            kerr::TOPIC_ALREADY_EXISTS,
            format!("Topic '{}' already exists.", req.name),
        ));
    }
    // Kafka refuses names that collide once '.' and '_' are treated alike (metric names).
    let norm = |s: &str| s.replace('.', "_");
    if let Some(t) = table
        .topics()
        .iter()
        .find(|t| norm(&t.name) == norm(&req.name))
    {
        return Err((
            kerr::INVALID_TOPIC_EXCEPTION,
            format!(
                "Topic '{}' collides with existing topic: {}",
                req.name, t.name
            ),
        ));
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
    })
}

/// The same failure for every requested topic: when the new state cannot be stored (a full
/// disk, say), each topic of the request is answered with the error, in request order —
/// clients match results to the topics they asked about (librdkafka calls a response
/// without them a malformed message).
fn each_failed(names: Vec<String>, e: (i16, String)) -> Vec<(String, TopicResult)> {
    names.into_iter().map(|n| (n, Err(e.clone()))).collect()
}
