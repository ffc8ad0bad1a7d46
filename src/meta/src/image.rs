//! [`MetadataImage`]: the cluster metadata as of some prefix of the record log, built by
//! applying records in order, and the [`Delta`] each application reports.
//!
//! `apply` first checks that the record is valid against the image (a partition of an
//! unknown topic, a duplicate topic name, a replica set with a node twice...) and refuses it
//! without changing anything if not: the controller runs the same check on its
//! speculative image before it proposes, so a committed log never holds a refused record,
//! and a log that does (a foreign or damaged one) is reported rather than misapplied.
//! After every batch the derived indexes are asserted consistent in tests
//! ([`MetadataImage::check_invariants`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::limits::{
    validate_topic_name, HOST_BYTES_MAX, PARTITIONS_PER_NODE_MAX, PARTITIONS_PER_TOPIC_MAX,
    PRODUCER_ID_BLOCK_SIZE_MAX, TOPICS_MAX,
};
use crate::record::{
    check_scram, AclBinding, BrokerRegistration, ConfigResource, NodeId, PartitionRecord,
    ProducerIdsBlock, QuotaEntity, QuotaValue, Record, ScramRecord, TopicId,
};

/// Kafka's internal topics (flagged in Metadata, not deletable, partition count fixed).
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

pub fn is_internal_topic(name: &str) -> bool {
    name == OFFSETS_TOPIC || name == TRANSACTION_STATE_TOPIC
}

/// A record the image refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord(pub String);

impl fmt::Display for InvalidRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid metadata record: {}", self.0)
    }
}

impl std::error::Error for InvalidRecord {}

fn invalid<T>(msg: impl Into<String>) -> Result<T, InvalidRecord> {
    Err(InvalidRecord(msg.into()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    /// In preference order: `replicas[0]` is the preferred leader. During a reassignment,
    /// the target replicas first, then those being removed.
    pub replicas: Vec<NodeId>,
    /// Joining replicas of a reassignment in progress (learners until caught up).
    pub adding: Vec<NodeId>,
    /// Leaving replicas of a reassignment in progress.
    pub removing: Vec<NodeId>,
    pub revision: u64,
}

impl PartitionImage {
    fn from_record(p: &PartitionRecord) -> PartitionImage {
        PartitionImage {
            replicas: p.replicas.clone(),
            adding: p.adding.clone(),
            removing: p.removing.clone(),
            revision: p.revision,
        }
    }

    pub fn preferred_leader(&self) -> NodeId {
        self.replicas[0]
    }

    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// The replicas once the reassignment in progress (if any) completes.
    pub fn target(&self) -> Vec<NodeId> {
        let keep = self.replicas.len() - self.removing.len();
        self.replicas[..keep].to_vec()
    }

    /// The replicas before the reassignment in progress (if any) began: that set, the
    /// staying ones in the target's order, then the leaving ones (a cancelled
    /// reassignment reverts to this, as Kafka's revert does).
    pub fn original(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|n| !self.adding.contains(n))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub configs: BTreeMap<String, String>,
    /// Partition `i` is `partitions[i]`.
    pub partitions: Vec<PartitionImage>,
}

impl TopicImage {
    pub fn internal(&self) -> bool {
        is_internal_topic(&self.name)
    }
}

/// What applying records changed. Shards receive the committed records, apply them to their
/// own image and act on the delta (open, remove or reassign local replicas, rebuild a
/// topic's rules...). A topic created and removed within one delta appears in neither list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub created_topics: BTreeSet<TopicId>,
    /// Removed topics as they were (they are gone from the image).
    pub removed_topics: BTreeMap<TopicId, TopicImage>,
    /// Partitions added to existing or created topics.
    pub added_partitions: BTreeSet<(TopicId, i32)>,
    /// Partitions whose replica set changed, with the replicas they had before.
    pub reassigned_partitions: BTreeMap<(TopicId, i32), Vec<NodeId>>,
    /// Topics whose config overrides changed (created topics are not listed).
    pub topic_configs: BTreeSet<TopicId>,
    /// Broker config scopes that changed (`None`: cluster-wide defaults).
    pub broker_configs: BTreeSet<Option<NodeId>>,
    /// Nodes registered, re-registered, fenced or unfenced.
    pub brokers: BTreeSet<NodeId>,
    pub producer_ids: Vec<ProducerIdsBlock>,
    pub cluster_id: bool,
    /// Users whose SCRAM credentials changed.
    pub scram_users: BTreeSet<String>,
    /// Whether any access-control entry came or went.
    pub acls: bool,
    /// Whether any client quota changed.
    pub quotas: bool,
    /// Whether any finalized feature level changed.
    pub features: bool,
    /// Some client-metrics subscription changed.
    pub client_metrics: bool,
    /// Some delegation token came, changed or went.
    pub tokens: bool,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        *self == Delta::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    cluster_id: Option<String>,
    /// Highest revision (or broker epoch) ever used; new ones are above it.
    revision: u64,
    brokers: BTreeMap<NodeId, BrokerRegistration>,
    topics: BTreeMap<TopicId, TopicImage>,
    cluster_configs: BTreeMap<String, String>,
    node_configs: BTreeMap<NodeId, BTreeMap<String, String>>,
    /// Client-metrics subscriptions by name, none empty (at most
    /// `client_metrics::SUBSCRIPTIONS_MAX`).
    client_metrics: BTreeMap<String, BTreeMap<String, String>>,
    /// The last block handed out; the next starts at or after its end.
    producer_ids: Option<ProducerIdsBlock>,
    /// SCRAM credentials by (user, mechanism id).
    scram: BTreeMap<(String, i8), ScramRecord>,
    /// Access-control entries (at most `acl::ACLS_MAX`).
    acls: BTreeSet<AclBinding>,
    /// Client quotas by entity (at most `quota::QUOTA_ENTITIES_MAX` entities), none empty.
    quotas: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
    /// Finalized feature levels, each at least 1 (at most `features::FEATURES_MAX`).
    features: BTreeMap<String, i16>,
    /// Delegation tokens by id (at most `tokens::TOKENS_MAX`).
    tokens: BTreeMap<String, crate::tokens::TokenRecord>,
    // Derived (rebuilt identically by any replay, so equality still means "same state").
    names: BTreeMap<String, TopicId>,
    /// Names with '.' folded to '_' (Kafka refuses names that collide so).
    folded: BTreeMap<String, TopicId>,
    /// Replicas per node, nodes with none left out.
    replicas_per_node: BTreeMap<NodeId, u64>,
    partitions_total: u64,
}

/// Kafka refuses topic names that collide once '.' and '_' are treated alike (metric names).
pub fn fold_topic_name(name: &str) -> String {
    name.replace('.', "_")
}

impl MetadataImage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The image after `records` from an empty one (a log, a snapshot, a bootstrap list).
    /// A topic left without partitions is refused: the controller writes a topic and its
    /// partitions in one entry, so only a damaged list ends that way (a batch boundary may
    /// fall between them, so `apply_batch` cannot check it).
    pub fn replay<'a>(
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<MetadataImage, InvalidRecord> {
        let mut image = MetadataImage::new();
        let mut delta = Delta::default();
        for r in records {
            image.apply(r, &mut delta)?;
        }
        if let Some(t) = image.topics.values().find(|t| t.partitions.is_empty()) {
            return Err(InvalidRecord(format!(
                "{}: a topic without partitions",
                t.name
            )));
        }
        Ok(image)
    }

    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn brokers(&self) -> &BTreeMap<NodeId, BrokerRegistration> {
        &self.brokers
    }

    pub fn broker(&self, node: NodeId) -> Option<&BrokerRegistration> {
        self.brokers.get(&node)
    }

    /// Registered, unfenced nodes in id order: where replicas may be placed.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.node)
            .collect()
    }

    /// Replicas of `replicas` on nodes that are fenced or not registered (Metadata's
    /// `offline_replicas`).
    pub fn offline_replicas(&self, replicas: &[NodeId]) -> Vec<NodeId> {
        replicas
            .iter()
            .copied()
            .filter(|n| self.brokers.get(n).is_none_or(|b| b.fenced))
            .collect()
    }

    /// Partitions with a reassignment in progress (ListPartitionReassignments).
    pub fn reassignments(&self) -> impl Iterator<Item = (&TopicImage, i32, &PartitionImage)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.reassigning())
                .map(move |(i, p)| (t, i as i32, p))
        })
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    pub fn topic(&self, id: &TopicId) -> Option<&TopicImage> {
        self.topics.get(id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.names.get(name).and_then(|id| self.topics.get(id))
    }

    /// The existing topic whose name equals `name` or collides with it ('.' vs '_').
    pub fn colliding_topic(&self, name: &str) -> Option<&TopicImage> {
        self.folded
            .get(&fold_topic_name(name))
            .and_then(|id| self.topics.get(id))
    }

    pub fn cluster_configs(&self) -> &BTreeMap<String, String> {
        &self.cluster_configs
    }

    pub fn node_configs(&self, node: NodeId) -> Option<&BTreeMap<String, String>> {
        self.node_configs.get(&node)
    }

    /// Every node's own broker configs (the nodes that have any).
    pub fn all_node_configs(&self) -> &BTreeMap<NodeId, BTreeMap<String, String>> {
        &self.node_configs
    }

    pub fn configs(&self, resource: &ConfigResource) -> Option<&BTreeMap<String, String>> {
        match resource {
            ConfigResource::Topic(id) => self.topics.get(id).map(|t| &t.configs),
            ConfigResource::Broker(None) => Some(&self.cluster_configs),
            ConfigResource::Broker(Some(n)) => self.node_configs.get(n),
            ConfigResource::ClientMetrics(name) => self.client_metrics.get(name),
        }
    }

    /// Client-metrics subscriptions (KIP-714) by name, each with its overrides.
    pub fn client_metrics(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.client_metrics
    }

    /// The first producer id not yet handed out.
    /// SCRAM credentials by (user, mechanism id).
    pub fn scram_credentials(&self) -> &BTreeMap<(String, i8), ScramRecord> {
        &self.scram
    }

    /// Delegation tokens by id.
    pub fn tokens(&self) -> &BTreeMap<String, crate::tokens::TokenRecord> {
        &self.tokens
    }

    pub fn acls(&self) -> &BTreeSet<AclBinding> {
        &self.acls
    }

    pub fn quotas(&self) -> &BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> {
        &self.quotas
    }

    /// The finalized feature levels (each at least 1; an absent feature is at 0).
    pub fn features(&self) -> &BTreeMap<String, i16> {
        &self.features
    }

    /// The finalized level of `name` (0: absent).
    pub fn feature_level(&self, name: &str) -> i16 {
        self.features.get(name).copied().unwrap_or(0)
    }

    pub fn next_producer_id(&self) -> i64 {
        self.producer_ids.map_or(0, |b| b.end())
    }

    pub fn last_producer_ids(&self) -> Option<ProducerIdsBlock> {
        self.producer_ids
    }

    /// Replicas hosted by `node`.
    pub fn replicas_on(&self, node: NodeId) -> u64 {
        self.replicas_per_node.get(&node).copied().unwrap_or(0)
    }

    pub fn partitions_total(&self) -> u64 {
        self.partitions_total
    }

    /// Checks `record` against the image without changing it.
    pub fn validate(&self, record: &Record) -> Result<(), InvalidRecord> {
        match record {
            Record::ClusterId { cluster_id } => {
                if cluster_id.is_empty() {
                    return invalid("empty cluster id");
                }
                match &self.cluster_id {
                    Some(c) if c != cluster_id => {
                        invalid(format!("cluster id {cluster_id} but the log is of {c}"))
                    }
                    Some(_) => invalid("cluster id set twice"),
                    None => Ok(()),
                }
            }
            Record::Revision { .. } => Ok(()),
            Record::RegisterBroker(b) => {
                check_node(b.node)?;
                for (what, host) in [("kafka", &b.kafka.host), ("rpc", &b.rpc.host)] {
                    if host.is_empty() || host.len() > HOST_BYTES_MAX {
                        return invalid(format!("node {}: bad {what} host", b.node));
                    }
                }
                if b.rack.as_ref().is_some_and(|r| r.len() > HOST_BYTES_MAX) {
                    return invalid(format!("node {}: rack name too long", b.node));
                }
                if let Err(why) = crate::record::check_listeners(&b.kafka, &b.listeners) {
                    return invalid(format!("node {}: {why}", b.node));
                }
                if !b.features.is_empty() {
                    if let Err(why) = crate::features::check_supported(&b.features) {
                        return invalid(format!("node {}: {why}", b.node));
                    }
                }
                match self.brokers.get(&b.node) {
                    Some(old) if b.epoch <= old.epoch => invalid(format!(
                        "node {} registers with epoch {} not above its {}",
                        b.node, b.epoch, old.epoch
                    )),
                    _ => Ok(()),
                }
            }
            Record::FenceBroker { node, epoch } | Record::UnfenceBroker { node, epoch } => {
                let fence = matches!(record, Record::FenceBroker { .. });
                let Some(b) = self.brokers.get(node) else {
                    return invalid(format!("node {node} is not registered"));
                };
                if b.epoch != *epoch {
                    return invalid(format!("node {node} epoch {epoch}, registered {}", b.epoch));
                }
                if b.fenced == fence {
                    return invalid(format!("node {node} is already in that fencing state"));
                }
                Ok(())
            }
            Record::Topic { name, id, configs } => {
                validate_topic_name(name).map_err(InvalidRecord)?;
                if *id == [0; 16] {
                    return invalid("the zero topic id");
                }
                if self.topics.contains_key(id) {
                    return invalid(format!("topic id of {name} already used"));
                }
                if let Some(t) = self.colliding_topic(name) {
                    return invalid(format!("topic {name} collides with {}", t.name));
                }
                if self.topics.len() >= TOPICS_MAX {
                    return invalid(format!("over {TOPICS_MAX} topics"));
                }
                check_configs(configs.iter().map(|(k, v)| (k, Some(v))))
            }
            Record::Partition(p) => {
                let t = self.topic_of(p)?;
                if p.partition as usize != t.partitions.len() {
                    return invalid(format!(
                        "partition {} of {} added out of order (it has {})",
                        p.partition,
                        t.name,
                        t.partitions.len()
                    ));
                }
                if p.partition >= PARTITIONS_PER_TOPIC_MAX {
                    return invalid(format!(
                        "{}: over {PARTITIONS_PER_TOPIC_MAX} partitions",
                        t.name
                    ));
                }
                self.check_replicas(p, &[])
            }
            Record::PartitionChange(p) => {
                let t = self.topic_of(p)?;
                let Some(old) = usize::try_from(p.partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
                else {
                    return invalid(format!("{} has no partition {}", t.name, p.partition));
                };
                if p.revision <= old.revision {
                    return invalid("a partition change must raise the revision");
                }
                // The revision always differs (checked above): compare the replica sets.
                if old.replicas == p.replicas
                    && old.adding == p.adding
                    && old.removing == p.removing
                {
                    return invalid("a partition change must change the replicas");
                }
                self.check_replicas(p, &old.replicas)
            }
            Record::Config {
                resource,
                key,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic(id) => match self.topics.get(id) {
                        Some(t) => Some(&t.configs),
                        None => return invalid("config of an unknown topic"),
                    },
                    ConfigResource::Broker(Some(n)) => {
                        check_node(*n)?;
                        self.node_configs.get(n)
                    }
                    ConfigResource::Broker(None) => Some(&self.cluster_configs),
                    ConfigResource::ClientMetrics(name) => {
                        let known = self.client_metrics.get(name);
                        if name.is_empty() || name.len() > crate::codec::STRING_BYTES_MAX {
                            return invalid("bad client metrics name");
                        }
                        if known.is_none()
                            && self.client_metrics.len() >= crate::client_metrics::SUBSCRIPTIONS_MAX
                        {
                            return invalid("too many client metrics subscriptions");
                        }
                        known
                    }
                };
                check_configs([(key, value.as_ref())])?;
                let old = configs.and_then(|c| c.get(key));
                if old == value.as_ref() {
                    return invalid(format!("config {key} does not change"));
                }
                Ok(())
            }
            Record::ScramCredential(c) => check_scram(c).map_err(InvalidRecord),
            Record::DelegationToken(t) => {
                crate::tokens::check(t).map_err(InvalidRecord)?;
                if !self.tokens.contains_key(&t.token_id)
                    && self.tokens.len() >= crate::tokens::TOKENS_MAX
                {
                    return invalid("too many delegation tokens");
                }
                Ok(())
            }
            Record::RemoveDelegationToken { token_id } => {
                if !self.tokens.contains_key(token_id) {
                    return invalid(format!("no delegation token {token_id} to remove"));
                }
                Ok(())
            }
            Record::RemoveScramCredential { user, mechanism } => {
                if !self.scram.contains_key(&(user.clone(), *mechanism)) {
                    return invalid(format!("no SCRAM credential of {user} to remove"));
                }
                Ok(())
            }
            Record::Acl(b) => {
                crate::acl::check_binding(b).map_err(InvalidRecord)?;
                if self.acls.contains(b) {
                    return invalid(format!("ACL {b:?} exists"));
                }
                if self.acls.len() >= crate::acl::ACLS_MAX {
                    return invalid(format!("more than {} ACLs", crate::acl::ACLS_MAX));
                }
                Ok(())
            }
            Record::RemoveAcl(b) => {
                if !self.acls.contains(b) {
                    return invalid(format!("no ACL {b:?} to remove"));
                }
                Ok(())
            }
            Record::ClientQuota { entity, key, value } => {
                let current = self.quotas.get(entity).and_then(|q| q.get(key));
                match value {
                    Some(v) => {
                        crate::quota::check_quota(entity, key, v.0).map_err(InvalidRecord)?
                    }
                    None => crate::quota::check_entity(entity).map_err(InvalidRecord)?,
                }
                if current == value.as_ref() {
                    return invalid(format!("quota {key} of {entity:?} does not change"));
                }
                if !self.quotas.contains_key(entity)
                    && self.quotas.len() >= crate::quota::QUOTA_ENTITIES_MAX
                {
                    return invalid("too many quota entities");
                }
                Ok(())
            }
            Record::FeatureLevel { name, level } => {
                crate::features::check_level_record(name, *level).map_err(InvalidRecord)?;
                let current = self.features.get(name).copied().unwrap_or(0);
                if current == *level {
                    return invalid(format!("feature {name} is already at level {level}"));
                }
                if current == 0 && self.features.len() >= crate::features::FEATURES_MAX {
                    return invalid("too many finalized features");
                }
                Ok(())
            }
            Record::ProducerIds(b) => {
                check_node(b.node)?;
                if b.size == 0 || b.size > PRODUCER_ID_BLOCK_SIZE_MAX {
                    return invalid(format!("producer id block of {} ids", b.size));
                }
                if b.first < self.next_producer_id() {
                    return invalid(format!(
                        "producer id block at {} overlaps ids up to {}",
                        b.first,
                        self.next_producer_id()
                    ));
                }
                if b.first.checked_add(i64::from(b.size)).is_none() {
                    return invalid("producer ids exhausted");
                }
                Ok(())
            }
            Record::RemoveTopic { id } => {
                if !self.topics.contains_key(id) {
                    return invalid("removal of an unknown topic");
                }
                Ok(())
            }
        }
    }

    fn topic_of(&self, p: &PartitionRecord) -> Result<&TopicImage, InvalidRecord> {
        match self.topics.get(&p.topic) {
            Some(t) => Ok(t),
            None => invalid(format!("partition {} of an unknown topic", p.partition)),
        }
    }

    /// A replica set: non-empty, within the limit, nodes valid and distinct, and no node
    /// over its replica limit once it holds the new ones (`old`: replicas being replaced);
    /// adding and removing replicas among them, distinct, apart, the removing ones last, and
    /// at least one replica staying.
    fn check_replicas(&self, p: &PartitionRecord, old: &[NodeId]) -> Result<(), InvalidRecord> {
        let replicas = &p.replicas;
        if replicas.is_empty() || replicas.len() > crate::codec::REPLICAS_MAX {
            return invalid(format!("{} replicas", replicas.len()));
        }
        for (what, list) in [("adding", &p.adding), ("removing", &p.removing)] {
            for (i, n) in list.iter().enumerate() {
                if !replicas.contains(n) || list[..i].contains(n) {
                    return invalid(format!("{what} replica {n} not a distinct replica"));
                }
            }
        }
        if p.adding.iter().any(|n| p.removing.contains(n)) {
            return invalid("a replica both adding and removing");
        }
        let keep = replicas.len() - p.removing.len();
        if keep == 0 || replicas[keep..].iter().any(|n| !p.removing.contains(n)) {
            return invalid("the removing replicas must come last, after at least one other");
        }
        for (i, &n) in replicas.iter().enumerate() {
            check_node(n)?;
            if replicas[..i].contains(&n) {
                return invalid(format!("node {n} twice in one replica set"));
            }
            if !old.contains(&n) && self.replicas_on(n) >= PARTITIONS_PER_NODE_MAX {
                return invalid(format!(
                    "node {n} would hold over {PARTITIONS_PER_NODE_MAX} replicas"
                ));
            }
        }
        Ok(())
    }

    /// Applies `record` if it is valid (see [`MetadataImage::validate`]), recording what
    /// changed in `delta`; if not, nothing changes.
    pub fn apply(&mut self, record: &Record, delta: &mut Delta) -> Result<(), InvalidRecord> {
        self.validate(record)?;
        match record {
            Record::ClusterId { cluster_id } => {
                self.cluster_id = Some(cluster_id.clone());
                delta.cluster_id = true;
            }
            Record::Revision { revision } => self.revision = self.revision.max(*revision),
            Record::RegisterBroker(b) => {
                self.revision = self.revision.max(b.epoch);
                self.brokers.insert(b.node, b.clone());
                delta.brokers.insert(b.node);
            }
            Record::FenceBroker { node, .. } | Record::UnfenceBroker { node, .. } => {
                let b = self.brokers.get_mut(node).expect("validated");
                b.fenced = matches!(record, Record::FenceBroker { .. });
                delta.brokers.insert(*node);
            }
            Record::Topic { name, id, configs } => {
                self.names.insert(name.clone(), *id);
                self.folded.insert(fold_topic_name(name), *id);
                self.topics.insert(
                    *id,
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        configs: configs.clone(),
                        partitions: Vec::new(),
                    },
                );
                delta.created_topics.insert(*id);
            }
            Record::Partition(p) => {
                self.revision = self.revision.max(p.revision);
                for &n in &p.replicas {
                    *self.replicas_per_node.entry(n).or_default() += 1;
                }
                self.partitions_total += 1;
                let t = self.topics.get_mut(&p.topic).expect("validated");
                t.partitions.push(PartitionImage::from_record(p));
                delta.added_partitions.insert((p.topic, p.partition));
            }
            Record::PartitionChange(p) => {
                self.revision = self.revision.max(p.revision);
                let t = self.topics.get_mut(&p.topic).expect("validated");
                let slot = &mut t.partitions[p.partition as usize];
                let old = std::mem::replace(slot, PartitionImage::from_record(p));
                for &n in &p.replicas {
                    *self.replicas_per_node.entry(n).or_default() += 1;
                }
                self.forget_replicas(&old.replicas);
                let key = (p.topic, p.partition);
                if !delta.added_partitions.contains(&key) {
                    delta
                        .reassigned_partitions
                        .entry(key)
                        .or_insert(old.replicas);
                }
            }
            Record::Config {
                resource,
                key,
                value,
            } => {
                let configs = match resource {
                    ConfigResource::Topic(id) => {
                        if !delta.created_topics.contains(id) {
                            delta.topic_configs.insert(*id);
                        }
                        &mut self.topics.get_mut(id).expect("validated").configs
                    }
                    ConfigResource::Broker(None) => {
                        delta.broker_configs.insert(None);
                        &mut self.cluster_configs
                    }
                    ConfigResource::Broker(Some(n)) => {
                        delta.broker_configs.insert(Some(*n));
                        self.node_configs.entry(*n).or_default()
                    }
                    ConfigResource::ClientMetrics(name) => {
                        delta.client_metrics = true;
                        self.client_metrics.entry(name.clone()).or_default()
                    }
                };
                match value {
                    Some(v) => {
                        configs.insert(key.clone(), v.clone());
                    }
                    None => {
                        configs.remove(key);
                    }
                }
                match resource {
                    ConfigResource::Broker(Some(n))
                        if self.node_configs.get(n).is_some_and(|c| c.is_empty()) =>
                    {
                        self.node_configs.remove(n);
                    }
                    ConfigResource::ClientMetrics(name)
                        if self.client_metrics.get(name).is_some_and(|c| c.is_empty()) =>
                    {
                        self.client_metrics.remove(name);
                    }
                    _ => {}
                }
            }
            Record::ProducerIds(b) => {
                self.producer_ids = Some(*b);
                delta.producer_ids.push(*b);
            }
            Record::ScramCredential(c) => {
                self.scram.insert((c.user.clone(), c.mechanism), c.clone());
                delta.scram_users.insert(c.user.clone());
            }
            Record::RemoveScramCredential { user, mechanism } => {
                self.scram.remove(&(user.clone(), *mechanism));
                delta.scram_users.insert(user.clone());
            }
            Record::DelegationToken(t) => {
                self.tokens.insert(t.token_id.clone(), t.clone());
                delta.tokens = true;
            }
            Record::RemoveDelegationToken { token_id } => {
                self.tokens.remove(token_id);
                delta.tokens = true;
            }
            Record::Acl(b) => {
                self.acls.insert(b.clone());
                delta.acls = true;
            }
            Record::RemoveAcl(b) => {
                self.acls.remove(b);
                delta.acls = true;
            }
            Record::ClientQuota { entity, key, value } => {
                match value {
                    Some(v) => {
                        self.quotas
                            .entry(entity.clone())
                            .or_default()
                            .insert(key.clone(), *v);
                    }
                    None => {
                        let q = self.quotas.get_mut(entity).expect("validated");
                        q.remove(key);
                        if q.is_empty() {
                            self.quotas.remove(entity);
                        }
                    }
                }
                delta.quotas = true;
            }
            Record::FeatureLevel { name, level } => {
                if *level == 0 {
                    self.features.remove(name);
                } else {
                    self.features.insert(name.clone(), *level);
                }
                delta.features = true;
            }
            Record::RemoveTopic { id } => {
                let t = self.topics.remove(id).expect("validated");
                self.names.remove(&t.name);
                self.folded.remove(&fold_topic_name(&t.name));
                for p in &t.partitions {
                    self.forget_replicas(&p.replicas);
                    self.partitions_total -= 1;
                }
                delta.topic_configs.remove(id);
                let range = (*id, i32::MIN)..=(*id, i32::MAX);
                let added: Vec<_> = delta
                    .added_partitions
                    .range(range.clone())
                    .copied()
                    .collect();
                for k in added {
                    delta.added_partitions.remove(&k);
                }
                let moved: Vec<_> = delta
                    .reassigned_partitions
                    .range(range)
                    .map(|(k, _)| *k)
                    .collect();
                for k in moved {
                    delta.reassigned_partitions.remove(&k);
                }
                if !delta.created_topics.remove(id) {
                    delta.removed_topics.insert(*id, t);
                }
            }
        }
        Ok(())
    }

    /// Applies a whole batch, stopping at the first invalid record (the records before it
    /// stay applied: a log with one is damaged or foreign, and the caller stops there).
    pub fn apply_batch(&mut self, records: &[Record]) -> Result<Delta, InvalidRecord> {
        let mut delta = Delta::default();
        for r in records {
            self.apply(r, &mut delta)?;
        }
        #[cfg(test)]
        self.check_invariants();
        Ok(delta)
    }

    fn forget_replicas(&mut self, replicas: &[NodeId]) {
        for n in replicas {
            let c = self.replicas_per_node.get_mut(n).expect("counted replica");
            *c -= 1;
            if *c == 0 {
                self.replicas_per_node.remove(n);
            }
        }
    }

    /// Asserts that the derived indexes agree with the primary state.
    pub fn check_invariants(&self) {
        assert_eq!(self.names.len(), self.topics.len());
        assert_eq!(self.folded.len(), self.topics.len());
        let mut per_node: BTreeMap<NodeId, u64> = BTreeMap::new();
        let mut total = 0;
        for (id, t) in &self.topics {
            assert_eq!(*id, t.id);
            assert_eq!(self.names.get(&t.name), Some(id));
            assert_eq!(self.folded.get(&fold_topic_name(&t.name)), Some(id));
            for p in &t.partitions {
                assert!(!p.replicas.is_empty());
                assert!(p.revision <= self.revision);
                for &n in &p.replicas {
                    *per_node.entry(n).or_default() += 1;
                }
                total += 1;
            }
        }
        assert_eq!(per_node, self.replicas_per_node);
        assert_eq!(total, self.partitions_total);
        for (n, b) in &self.brokers {
            assert_eq!(*n, b.node);
            assert!(b.epoch <= self.revision);
        }
        assert!(self.node_configs.values().all(|c| !c.is_empty()));
        assert!(self.features.values().all(|&l| l >= 1));
        assert!(self.features.len() <= crate::features::FEATURES_MAX);
    }

    /// Records that rebuild this image from nothing: `replay(snapshot()) == self`. For log
    /// compaction (a Raft snapshot) and for a new node catching up.
    pub fn snapshot(&self) -> Vec<Record> {
        let mut out = Vec::new();
        if let Some(c) = &self.cluster_id {
            out.push(Record::ClusterId {
                cluster_id: c.clone(),
            });
        }
        out.push(Record::Revision {
            revision: self.revision,
        });
        for b in self.brokers.values() {
            out.push(Record::RegisterBroker(b.clone()));
        }
        let config = |resource, (k, v): (&String, &String)| Record::Config {
            resource,
            key: k.clone(),
            value: Some(v.clone()),
        };
        for kv in &self.cluster_configs {
            out.push(config(ConfigResource::Broker(None), kv));
        }
        for (n, c) in &self.node_configs {
            for kv in c {
                out.push(config(ConfigResource::Broker(Some(*n)), kv));
            }
        }
        for (name, c) in &self.client_metrics {
            for kv in c {
                out.push(config(ConfigResource::ClientMetrics(name.clone()), kv));
            }
        }
        for t in self.topics.values() {
            out.push(Record::Topic {
                name: t.name.clone(),
                id: t.id,
                configs: t.configs.clone(),
            });
            for (i, p) in t.partitions.iter().enumerate() {
                out.push(Record::Partition(PartitionRecord {
                    topic: t.id,
                    partition: i as i32,
                    replicas: p.replicas.clone(),
                    revision: p.revision,
                    adding: p.adding.clone(),
                    removing: p.removing.clone(),
                }));
            }
        }
        if let Some(b) = self.producer_ids {
            out.push(Record::ProducerIds(b));
        }
        for c in self.scram.values() {
            out.push(Record::ScramCredential(c.clone()));
        }
        for t in self.tokens.values() {
            out.push(Record::DelegationToken(t.clone()));
        }
        for b in &self.acls {
            out.push(Record::Acl(b.clone()));
        }
        for (entity, q) in &self.quotas {
            for (key, value) in q {
                out.push(Record::ClientQuota {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: Some(*value),
                });
            }
        }
        for (name, level) in &self.features {
            out.push(Record::FeatureLevel {
                name: name.clone(),
                level: *level,
            });
        }
        out
    }
}

fn check_node(n: NodeId) -> Result<(), InvalidRecord> {
    if n < 0 {
        return invalid(format!("node id {n}"));
    }
    Ok(())
}

fn check_configs<'a>(
    kvs: impl IntoIterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), InvalidRecord> {
    for (k, v) in kvs {
        if k.is_empty() || k.len() > crate::codec::STRING_BYTES_MAX {
            return invalid("bad config key");
        }
        if v.is_some_and(|v| v.len() > crate::codec::STRING_BYTES_MAX) {
            return invalid(format!("config {k}: value too long"));
        }
    }
    Ok(())
}
