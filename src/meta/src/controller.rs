//! The controller's command layer: Kafka's admin operations and broker lifecycle validated
//! against the metadata image and turned into records to propose. Sans-IO: commands and
//! reports come in as calls, [`Effect`]s go out; no clock (time is `now_ms`), no entropy
//! (a seeded [`Rng`]), no log.
//!
//! The controller keeps two images: `committed` (what the log holds up to the commit index)
//! and `speculative` (committed plus every proposal still in flight, in order). Commands
//! validate against the speculative image, so two requests in flight never create the same
//! topic or overlapping producer-id blocks; a proposal that fails takes every later one with
//! it (they were validated on top of it) but not the earlier ones (Raft may refuse one
//! proposal while earlier entries still commit), and the speculative image is rebuilt from
//! the committed one plus the earlier ones. Committed entries are matched to proposals by
//! the id the Raft layer reports. Answers wait for the commit of their records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::acl::{AclBinding, AclFilter};
use crate::codec::{encode_batch, STRING_BYTES_MAX};
use crate::features::METADATA_VERSION;
use crate::image::{Delta, InvalidRecord, MetadataImage, OFFSETS_TOPIC};
use crate::limits::{
    validate_topic_name, HOST_BYTES_MAX, PARTITIONS_PER_NODE_MAX, PARTITIONS_PER_TOPIC_MAX,
    PRODUCER_ID_BLOCK_SIZE, PRODUCER_ID_BLOCK_SIZE_MAX, RECORDS_PER_REQUEST_MAX,
    REPLICATION_FACTOR_MAX, TOPICS_MAX,
};
use crate::placement::{self, Start};
use crate::record::{
    BrokerRegistration, ConfigResource, Endpoint, NodeId, PartitionRecord, ProducerIdsBlock,
    QuotaEntity, QuotaValue, Record, ScramRecord, TopicId,
};
use crate::rng::Rng;

/// Kafka error codes the controller answers with (numbers from Kafka's `Errors`).
pub mod code {
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    pub const INVALID_CONFIG: i16 = 40;
    pub const NOT_CONTROLLER: i16 = 41;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const STALE_BROKER_EPOCH: i16 = 77;
    pub const NO_REASSIGNMENT_IN_PROGRESS: i16 = 85;
    pub const INVALID_UPDATE_VERSION: i16 = 95;
    pub const DUPLICATE_BROKER_REGISTRATION: i16 = 101;
    pub const BROKER_ID_NOT_REGISTERED: i16 = 102;
    pub const INVALID_REGISTRATION: i16 = 119;
    pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
    pub const RESOURCE_NOT_FOUND: i16 = 91;
    pub const DUPLICATE_RESOURCE: i16 = 92;
    pub const UNACCEPTABLE_CREDENTIAL: i16 = 93;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const DELEGATION_TOKEN_AUTH_DISABLED: i16 = 61;
    pub const DELEGATION_TOKEN_NOT_FOUND: i16 = 62;
    pub const DELEGATION_TOKEN_OWNER_MISMATCH: i16 = 63;
    pub const DELEGATION_TOKEN_REQUEST_NOT_ALLOWED: i16 = 64;
    pub const DELEGATION_TOKEN_AUTHORIZATION_FAILED: i16 = 65;
    pub const DELEGATION_TOKEN_EXPIRED: i16 = 66;
    pub const INVALID_PRINCIPAL_TYPE: i16 = 67;
}

/// Kafka's `broker.session.timeout.ms`: a broker not heartbeating this long is fenced.
pub const BROKER_SESSION_TIMEOUT_MS: i64 = 9_000;
/// Kafka's `default.replication.factor`.
pub const DEFAULT_REPLICATION_FACTOR: i16 = 1;
/// Kafka's `offsets.topic.replication.factor`.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: i16 = 3;
/// Kafka's `num.partitions`.
pub const NUM_PARTITIONS: i32 = 1;

/// A Kafka error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i16,
    pub message: String,
}

fn err<T>(code: i16, message: impl Into<String>) -> Result<T, ApiError> {
    Err(ApiError {
        code,
        message: message.into(),
    })
}

pub type Outcome<T> = Result<T, ApiError>;

/// Checks config overrides; `Err` is the INVALID_CONFIG message. The broker passes its
/// validators (known keys, value types); the default accepts everything.
pub type ConfigCheck = fn(&BTreeMap<String, String>) -> Result<(), String>;

fn accept_all(_: &BTreeMap<String, String>) -> Result<(), String> {
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `num.partitions`: for a CreateTopics with -1 partitions (and auto-creation).
    pub num_partitions: i32,
    /// `default.replication.factor`: for a CreateTopics with replication factor -1.
    pub default_replication_factor: i16,
    /// `offsets.topic.replication.factor`. When the offsets topic is created with
    /// replication factor -1 and fewer nodes are live, sluice caps it to the live nodes
    /// with a warning, as issue 12 asks; Kafka (since 0.11) instead refuses to create the
    /// topic (clients get COORDINATOR_NOT_AVAILABLE) until enough brokers are alive.
    pub offsets_topic_replication_factor: i16,
    pub broker_session_timeout_ms: i64,
    pub producer_id_block_size: u32,
    /// Seeds topic ids and placement (the broker passes OS entropy; tests a constant).
    pub seed: u64,
    pub topic_config_check: ConfigCheck,
    pub broker_config_check: ConfigCheck,
    /// `delegation.token.max.lifetime.ms` and `delegation.token.expiry.time.ms`.
    pub token_max_lifetime_ms: i64,
    pub token_expiry_time_ms: i64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            num_partitions: NUM_PARTITIONS,
            default_replication_factor: DEFAULT_REPLICATION_FACTOR,
            offsets_topic_replication_factor: OFFSETS_TOPIC_REPLICATION_FACTOR,
            broker_session_timeout_ms: BROKER_SESSION_TIMEOUT_MS,
            producer_id_block_size: PRODUCER_ID_BLOCK_SIZE,
            seed: 0,
            topic_config_check: accept_all,
            broker_config_check: accept_all,
            token_max_lifetime_ms: crate::tokens::MAX_LIFETIME_MS_DEFAULT,
            token_expiry_time_ms: crate::tokens::EXPIRY_TIME_MS_DEFAULT,
        }
    }
}

/// Opaque handle of a request awaiting its answer, chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyToken(pub u64);

/// Handle of one proposal (one batch of records, one Raft entry), chosen by the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId(pub u64);

/// A topic to create, as CreateTopics asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1: `num.partitions` (must be -1 when `assignments` is given).
    pub partitions: i32,
    /// -1: the default (must be -1 when `assignments` is given).
    pub replication_factor: i16,
    /// Manual replica assignment: (partition, replicas) for partitions 0..n; empty: placed.
    pub assignments: Vec<(i32, Vec<NodeId>)>,
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    pub fn new(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.to_string(),
            partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCreated {
    pub id: TopicId,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// A config resource as AlterConfigs names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigTarget {
    Topic(String),
    /// `None`: the cluster-wide default.
    Broker(Option<NodeId>),
    /// A client-metrics subscription (KIP-714), by name; it exists while it has overrides.
    ClientMetrics(String),
}

/// One resource's change: set (`Some`) or remove (`None`) keys. `replace` (the legacy
/// AlterConfigs) makes the given settings the whole override set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterConfig {
    pub target: ConfigTarget,
    pub ops: Vec<(String, Option<String>)>,
    pub replace: bool,
}

/// A node's registration request (Kafka's BrokerRegistration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub node: NodeId,
    pub incarnation: [u8; 16],
    /// The node's data directory id (zeros: it has none).
    pub directory: [u8; 16],
    pub kafka: Endpoint,
    /// Every client listener, `kafka` first (empty: one, `PLAINTEXT` at `kafka`).
    pub listeners: Vec<crate::record::ListenerEndpoint>,
    pub rpc: Endpoint,
    pub rack: Option<String>,
    /// The feature ranges the node's build supports (empty: a build before features).
    pub features: Vec<crate::features::SupportedFeature>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Per requested topic, in request order.
    CreateTopics(Vec<(String, Outcome<TopicCreated>)>),
    DeleteTopics(Vec<(String, Outcome<TopicId>)>),
    CreatePartitions(Vec<(String, Outcome<()>)>),
    AlterConfigs(Vec<(ConfigTarget, Outcome<()>)>),
    AllocateProducerIds(Outcome<ProducerIdsBlock>),
    /// The broker epoch.
    RegisterBroker(Outcome<u64>),
    /// Whether the node is fenced now.
    BrokerHeartbeat(Outcome<bool>),
    /// Per requested (topic, partition), in request order.
    AlterPartitionReassignments(Vec<((String, i32), Outcome<()>)>),
    ReassignmentComplete(Outcome<()>),
    /// The active controller's applied metadata index (a read barrier: see
    /// `sluice_cluster::wire::Command::MetadataIndex`).
    MetadataIndex(Outcome<u64>),
    /// Per change of AlterUserScramCredentials, its user, in request order.
    AlterScram(Vec<(String, Outcome<()>)>),
    /// Per creation of CreateAcls, in request order.
    CreateAcls(Vec<(AclBinding, Outcome<()>)>),
    /// Per filter of DeleteAcls, in request order: the bindings it removed.
    DeleteAcls(Vec<(AclFilter, Outcome<Vec<AclBinding>>)>),
    /// Per entry of AlterClientQuotas, in request order.
    AlterQuotas(Vec<(QuotaEntity, Outcome<()>)>),
    /// Per update of UpdateFeatures, its feature, in request order.
    UpdateFeatures(Vec<(String, Outcome<()>)>),
    /// DescribeQuorum: the controller log's quorum as its leader sees it (answered by the
    /// node runtime from its Raft state, not by this state machine).
    DescribeQuorum(Outcome<QuorumView>),
    /// CreateDelegationToken: the token as stored.
    CreateToken(Outcome<crate::tokens::TokenRecord>),
    /// RenewDelegationToken and ExpireDelegationToken: the token's new expiry time.
    TokenExpiry(Outcome<i64>),
}

/// A CreateDelegationToken the broker checked (secret key set, connection allowed, owner
/// authorized) and gave a fresh id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateToken {
    pub token_id: String,
    pub owner: String,
    pub requester: String,
    pub renewers: Vec<String>,
    /// As asked (0 or less: the configured one).
    pub max_lifetime_ms: i64,
}

/// One replica of the controller log in DescribeQuorum (offsets are Raft indexes; times are
/// wall-clock milliseconds, -1 when not known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumReplica {
    pub node: NodeId,
    pub log_end_offset: i64,
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

/// The controller quorum as DescribeQuorum reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumView {
    pub leader: NodeId,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    /// Registered nodes that are not voters (they pull the committed log).
    pub observers: Vec<QuorumReplica>,
}

/// One entry of AlterClientQuotas: the entity and its changes (`None` removes the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaAlteration {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<QuotaValue>)>,
}

/// One change of AlterUserScramCredentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramChange {
    /// Set the user's credential for the record's mechanism.
    Upsert(ScramRecord),
    /// Remove the user's credential for the mechanism (Kafka's id).
    Delete { user: String, mechanism: i8 },
}

impl ScramChange {
    pub fn user(&self) -> &str {
        match self {
            ScramChange::Upsert(r) => &r.user,
            ScramChange::Delete { user, .. } => user,
        }
    }

    fn mechanism(&self) -> i8 {
        match self {
            ScramChange::Upsert(r) => r.mechanism,
            ScramChange::Delete { mechanism, .. } => *mechanism,
        }
    }
}

impl Answer {
    /// The answer to send when the records it announced did not commit: every success
    /// becomes NOT_CONTROLLER, which clients and brokers retry against the new controller.
    fn failed(self) -> Answer {
        let e = ApiError {
            code: code::NOT_CONTROLLER,
            message: "The controller changed before the change committed.".into(),
        };
        fail_all(self, e)
    }
}

/// An action for the driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send the answer now.
    Reply(ReplyToken, Answer),
    /// Propose `batch` (an encoded record batch, [`crate::codec::decode_batch`] reads it) to
    /// the controller Raft group as one entry, then report [`Controller::committed`] with
    /// `id` when it commits or [`Controller::failed`] if it will not.
    Propose { id: ProposalId, batch: Vec<u8> },
    /// Call [`Controller::tick`] at or after `at_ms` (a later hint does not cancel it).
    ScheduleTick { at_ms: i64 },
    /// Something an operator should see (log it as a warning).
    Warn(String),
}

struct Pending {
    id: ProposalId,
    records: Vec<Record>,
    /// Answers that go out when the records commit (the request's, and retries of it).
    replies: Vec<(ReplyToken, Answer)>,
}

pub struct Controller {
    config: ControllerConfig,
    committed: MetadataImage,
    speculative: MetadataImage,
    pending: VecDeque<Pending>,
    next_proposal: u64,
    active: bool,
    /// Last heartbeat (or registration) per node, as seen by this controller while active.
    heartbeats: BTreeMap<NodeId, i64>,
    tick_hint: Option<i64>,
    /// When `sweep_tokens` next looks for expired delegation tokens (wall clock).
    token_check_at: i64,
    rng: Rng,
}

impl Controller {
    /// A controller over `image` (replayed from the log so far), not yet leading.
    pub fn new(config: ControllerConfig, image: MetadataImage) -> Controller {
        let rng = Rng::new(config.seed);
        Controller {
            config,
            speculative: image.clone(),
            committed: image,
            pending: VecDeque::new(),
            next_proposal: 1,
            active: false,
            heartbeats: BTreeMap::new(),
            tick_hint: None,
            token_check_at: 0,
            rng,
        }
    }

    pub fn image(&self) -> &MetadataImage {
        &self.committed
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// This node leads the controller group now: its election no-op committed and every
    /// entry before it was passed to [`Controller::committed`]. Every registered node gets a
    /// full session from now before it can be fenced.
    pub fn become_active(&mut self, now_ms: i64) -> Vec<Effect> {
        self.active = true;
        self.heartbeats = self
            .committed
            .brokers()
            .keys()
            .map(|&n| (n, now_ms))
            .collect();
        self.tick_hint = None;
        // A new controller looks at the tokens on its first sweep.
        self.token_check_at = 0;
        let mut out = self.upgrade_features();
        self.schedule(&mut out);
        out
    }

    /// A log written before features (no metadata.version finalized): finalizes the levels
    /// it already served, each only if it is not already there (a client may have set one
    /// meanwhile). Made again at every tick of an active controller until it commits, so a
    /// refused proposal is not left for the next election.
    fn upgrade_features(&mut self) -> Vec<Effect> {
        let image = &self.speculative;
        if image.cluster_id().is_none() || image.feature_level(METADATA_VERSION) != 0 {
            return Vec::new();
        }
        let records: Vec<Record> = crate::features::upgrade_levels()
            .into_iter()
            .filter(|(name, level)| image.feature_level(name) != *level)
            .map(|(name, level)| Record::FeatureLevel { name, level })
            .collect();
        self.propose(None, records)
    }

    /// This node no longer leads: new commands get NOT_CONTROLLER and nothing is fenced.
    /// Proposals already in its log keep waiting: they may still commit (a new leader
    /// commits the entries it has), and the Raft layer reports each as committed or failed.
    pub fn become_inactive(&mut self) {
        self.active = false;
        self.heartbeats.clear();
    }

    /// A committed entry of the controller log, in log order, on every node. `id` is the
    /// proposal it was, when the Raft layer reported it as this node's. Applies it to the
    /// committed image and answers the request behind it. An entry that does not apply is
    /// returned as an error (the log is damaged or foreign): stop applying there.
    pub fn committed(
        &mut self,
        id: Option<ProposalId>,
        records: &[Record],
    ) -> Result<(Delta, Vec<Effect>), InvalidRecord> {
        let delta = self.committed.apply_batch(records)?;
        let mut out = Vec::new();
        let ours = id.and_then(|id| self.pending.iter().position(|p| p.id == id));
        match ours {
            Some(0) => {
                // The usual case: the speculative image already holds it.
                let p = self.pending.pop_front().expect("front");
                assert_eq!(p.records, records, "a proposal committed as other records");
                out.extend(p.replies.into_iter().map(|(t, a)| Effect::Reply(t, a)));
            }
            Some(k) => {
                // Ours, but earlier ones of ours were never reported: Raft commits in log
                // order, so they will not commit. They fail; the later ones stay if they
                // still apply on what did commit.
                out.extend(self.fail_from(0, k));
                let p = self.pending.pop_front().expect("found");
                assert_eq!(p.records, records, "a proposal committed as other records");
                out.extend(p.replies.into_iter().map(|(t, a)| Effect::Reply(t, a)));
                out.extend(self.resync());
            }
            None if !self.pending.is_empty() => {
                // Another leader's entry: ours were validated on a state that no longer comes.
                out.extend(self.fail_from(0, self.pending.len()));
                self.speculative = self.committed.clone();
            }
            None => {
                // Nothing in flight: the speculative image equals the committed one and takes
                // the same records (cheaper than a copy of the whole image per entry).
                self.speculative
                    .apply_batch(records)
                    .expect("the speculative image equals the committed one");
            }
        }
        #[cfg(test)]
        if self.pending.is_empty() {
            assert_eq!(self.speculative, self.committed);
        }
        Ok((delta, out))
    }

    /// Proposal `id` will not commit (the Raft layer refused or superseded it): it and every
    /// later one fail (they were validated on top of it). Earlier ones stay in flight: Raft
    /// may refuse one proposal (back-pressure) while the entries before it still commit.
    /// Report it before anything else is proposed, as the Raft layer refuses synchronously.
    pub fn failed(&mut self, id: ProposalId) -> Vec<Effect> {
        let Some(k) = self.pending.iter().position(|p| p.id == id) else {
            return Vec::new();
        };
        let mut out = self.fail_from(k, self.pending.len());
        let dropped = self.resync();
        debug_assert!(dropped.is_empty(), "earlier proposals apply as they did");
        out.extend(dropped);
        out
    }

    /// Fails (NOT_CONTROLLER) the pending proposals `from..to`.
    fn fail_from(&mut self, from: usize, to: usize) -> Vec<Effect> {
        self.pending
            .drain(from..to)
            .flat_map(|p| p.replies)
            .map(|(t, a)| Effect::Reply(t, a.failed()))
            .collect()
    }

    /// Rebuilds the speculative image as the committed one plus the pending proposals in
    /// order; from the first that no longer applies, they fail.
    fn resync(&mut self) -> Vec<Effect> {
        let mut image = self.committed.clone();
        let refused = self
            .pending
            .iter()
            .position(|p| image.apply_batch(&p.records).is_err());
        let Some(k) = refused else {
            self.speculative = image;
            return Vec::new();
        };
        let out = self.fail_from(k, self.pending.len());
        // `apply_batch` may have applied part of the refused proposal: build again.
        let mut image = self.committed.clone();
        for p in &self.pending {
            image.apply_batch(&p.records).expect("applied before");
        }
        self.speculative = image;
        out
    }

    /// Proposes `records` (already valid on the speculative image) and holds `reply` for
    /// their commit; with no records the reply goes out at once.
    fn propose(
        &mut self,
        reply: Option<(ReplyToken, Answer)>,
        records: Vec<Record>,
    ) -> Vec<Effect> {
        if records.is_empty() {
            return reply
                .map(|(t, a)| Effect::Reply(t, a))
                .into_iter()
                .collect();
        }
        let batch = match encode_batch(&records) {
            Ok(b) => b,
            Err(e) => {
                let m = format!(
                    "The change is more than the controller commits at once ({e}); split the request."
                );
                return match reply {
                    Some((token, answer)) => {
                        let e = ApiError {
                            code: code::POLICY_VIOLATION,
                            message: m,
                        };
                        vec![Effect::Reply(token, fail_all(answer, e))]
                    }
                    None => vec![Effect::Warn(m)],
                };
            }
        };
        let mut delta = Delta::default();
        for r in &records {
            if let Err(e) = self.speculative.apply(r, &mut delta) {
                panic!("the controller built a record its image refuses: {e}: {r:?}");
            }
        }
        let id = ProposalId(self.next_proposal);
        self.next_proposal += 1;
        self.pending.push_back(Pending {
            id,
            records,
            replies: reply.into_iter().collect(),
        });
        vec![Effect::Propose { id, batch }]
    }

    fn not_controller(&self) -> Option<ApiError> {
        (!self.active).then(|| ApiError {
            code: code::NOT_CONTROLLER,
            message: "This node is not the active controller.".into(),
        })
    }

    /// CreateTopics (Kafka's validation and codes; `validate_only` answers without creating).
    pub fn create_topics(
        &mut self,
        token: ReplyToken,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Effect> {
        let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
        if let Some(e) = self.not_controller() {
            return reply_each(token, names, e, Answer::CreateTopics);
        }
        // Kafka's controller (`validateTotalNumberOfPartitions`) refuses a request for more
        // than 10,000 partitions in all, counting the asked number (the default for -1, the
        // assignments when given); topics and configs do not count. The whole request fails.
        let partitions_asked: u64 = topics
            .iter()
            .map(|t| {
                if !t.assignments.is_empty() {
                    t.assignments.len() as u64
                } else if t.partitions == -1 {
                    self.config.num_partitions.max(0) as u64
                } else {
                    t.partitions.max(0) as u64
                }
            })
            .sum();
        if partitions_asked > RECORDS_PER_REQUEST_MAX {
            let e = ApiError {
                code: code::POLICY_VIOLATION,
                message: format!(
                    "Excessively large number of partitions per request: {partitions_asked}, \
                     at most {RECORDS_PER_REQUEST_MAX}."
                ),
            };
            return reply_each(token, names, e, Answer::CreateTopics);
        }
        let duplicates = duplicates(&names);
        let live = self.speculative.live_brokers();
        let revision = self.speculative.revision() + 1;
        let mut batch = Batch::default();
        let mut results = Vec::with_capacity(topics.len());
        let mut warnings = Vec::new();
        for t in topics {
            let r = if duplicates.contains(&t.name) {
                err(
                    code::INVALID_REQUEST,
                    format!("Duplicate topic name {}.", t.name),
                )
            } else {
                self.new_topic(&t, &live, revision, &mut batch, &mut warnings)
            };
            results.push((t.name, r));
        }
        let mut out: Vec<Effect> = warnings.into_iter().map(Effect::Warn).collect();
        let answer = Answer::CreateTopics(results);
        if validate_only {
            out.push(Effect::Reply(token, answer));
        } else {
            out.extend(self.propose(Some((token, answer)), batch.records));
        }
        out
    }

    fn new_topic(
        &mut self,
        t: &NewTopic,
        live: &[NodeId],
        revision: u64,
        batch: &mut Batch,
        warnings: &mut Vec<String>,
    ) -> Outcome<TopicCreated> {
        validate_topic_name(&t.name).or_else(|m| err(code::INVALID_TOPIC_EXCEPTION, m))?;
        let folded = crate::image::fold_topic_name(&t.name);
        match self.speculative.colliding_topic(&t.name) {
            Some(e) if e.name == t.name => {
                return err(
                    code::TOPIC_ALREADY_EXISTS,
                    format!("Topic '{}' already exists.", t.name),
                )
            }
            Some(e) => {
                return err(
                    code::INVALID_TOPIC_EXCEPTION,
                    format!(
                        "Topic '{}' collides with existing topic: {}",
                        t.name, e.name
                    ),
                )
            }
            None => {}
        }
        if let Some(other) = batch.folded.get(&folded) {
            return err(
                code::INVALID_TOPIC_EXCEPTION,
                format!(
                    "Topic '{}' collides with topic {other} of the same request.",
                    t.name
                ),
            );
        }
        if self.speculative.topic_count() + batch.topics >= TOPICS_MAX {
            return err(
                code::POLICY_VIOLATION,
                format!("The cluster already holds {TOPICS_MAX} topics, its limit."),
            );
        }
        let assignments = if t.assignments.is_empty() {
            let partitions = match t.partitions {
                -1 => self.config.num_partitions,
                p if (1..=PARTITIONS_PER_TOPIC_MAX).contains(&p) => p,
                _ => {
                    return err(
                        code::INVALID_PARTITIONS,
                        format!(
                            "Number of partitions must be -1 or in 1..={PARTITIONS_PER_TOPIC_MAX}."
                        ),
                    )
                }
            };
            let rf = match t.replication_factor {
                -1 if t.name == OFFSETS_TOPIC => {
                    // Capped to the live nodes with a warning (issue 12's contract), where
                    // Kafka would refuse until enough brokers are alive.
                    let wanted = self.config.offsets_topic_replication_factor;
                    let rf = wanted.min(live.len() as i16).max(1);
                    if rf < wanted {
                        warnings.push(format!(
                            "creating {OFFSETS_TOPIC} with replication factor {rf}: \
                             offsets.topic.replication.factor is {wanted} but only {} broker(s) are live",
                            live.len()
                        ));
                    }
                    rf
                }
                -1 => self.config.default_replication_factor,
                rf if (1..=REPLICATION_FACTOR_MAX).contains(&rf) => rf,
                rf => {
                    return err(
                        code::INVALID_REPLICATION_FACTOR,
                        format!("Replication factor must be -1 or in 1..={REPLICATION_FACTOR_MAX}, not {rf}."),
                    )
                }
            };
            if rf as usize > live.len() {
                return err(
                    code::INVALID_REPLICATION_FACTOR,
                    format!(
                        "Unable to replicate the partition {rf} time(s): The target replication \
                         factor of {rf} cannot be reached because only {} broker(s) are registered.",
                        live.len()
                    ),
                );
            }
            placement::assign(live, partitions, rf as usize, Start::Random, &mut self.rng)
        } else {
            if t.partitions != -1 || t.replication_factor != -1 {
                return err(
                    code::INVALID_REQUEST,
                    "Both numPartitions or replicationFactor and replicasAssignments were set. \
                     Both cannot be used at the same time.",
                );
            }
            self.check_assignments(&t.assignments)?
        };
        let partitions = assignments.len() as i32;
        let rf = assignments[0].len() as i16;
        check_config_strings(t.configs.iter().map(|(k, v)| (k, Some(v))))?;
        (self.config.topic_config_check)(&t.configs).or_else(|m| err(code::INVALID_CONFIG, m))?;
        batch.check_node_limits(&self.speculative, assignments.iter().flatten())?;
        let id = loop {
            let id = self.rng.uuid();
            if self.speculative.topic(&id).is_none() && !batch.ids.contains(&id) {
                break id;
            }
        };
        batch.records.push(Record::Topic {
            name: t.name.clone(),
            id,
            configs: t.configs.clone(),
        });
        for (i, replicas) in assignments.into_iter().enumerate() {
            batch.records.push(Record::Partition(PartitionRecord {
                topic: id,
                partition: i as i32,
                replicas,
                revision,
                adding: Vec::new(),
                removing: Vec::new(),
            }));
        }
        batch.topics += 1;
        batch.ids.insert(id);
        batch.folded.insert(folded, t.name.clone());
        Ok(TopicCreated {
            id,
            partitions,
            replication_factor: rf,
            configs: t.configs.clone(),
        })
    }

    /// A manual assignment: partitions 0..n in order, each with the same number of distinct
    /// registered nodes.
    /// One manual replica list (CreateTopics' assignments, a reassignment's target), with
    /// Kafka's checks and messages (`validateManualPartitionAssignment`: in broker id
    /// order, each id registered, fenced or not, and named once), and sluice's bound on the
    /// replication factor.
    fn check_manual_replicas(&self, replicas: &[NodeId]) -> Outcome<()> {
        let bad = |m: String| err(code::INVALID_REPLICA_ASSIGNMENT, m);
        if replicas.is_empty() {
            return bad("The manual partition assignment includes an empty replica list.".into());
        }
        if replicas.len() > REPLICATION_FACTOR_MAX as usize {
            return bad(format!(
                "The manual partition assignment includes {} replicas (at most \
                 {REPLICATION_FACTOR_MAX}).",
                replicas.len()
            ));
        }
        let mut sorted = replicas.to_vec();
        sorted.sort_unstable();
        for (i, n) in sorted.iter().enumerate() {
            if self.speculative.broker(*n).is_none() {
                return bad(format!(
                    "The manual partition assignment includes broker {n}, but no such broker \
                     is registered."
                ));
            }
            if i > 0 && sorted[i - 1] == *n {
                return bad(format!(
                    "The manual partition assignment includes the broker {n} more than once."
                ));
            }
        }
        Ok(())
    }

    fn check_assignments(&self, a: &[(i32, Vec<NodeId>)]) -> Outcome<Vec<Vec<NodeId>>> {
        let bad = |m: String| err(code::INVALID_REPLICA_ASSIGNMENT, m);
        if a.len() > PARTITIONS_PER_TOPIC_MAX as usize {
            return err(
                code::INVALID_PARTITIONS,
                format!("Number of partitions must be in 1..={PARTITIONS_PER_TOPIC_MAX}."),
            );
        }
        let mut sorted: Vec<&(i32, Vec<NodeId>)> = a.iter().collect();
        sorted.sort_by_key(|(p, _)| *p);
        let rf = sorted[0].1.len();
        let mut out = Vec::with_capacity(a.len());
        for (i, (p, replicas)) in sorted.into_iter().enumerate() {
            if *p != i as i32 {
                return bad(format!(
                    "Partitions should be consecutive and start from 0; found {p}."
                ));
            }
            self.check_manual_replicas(replicas)?;
            if replicas.len() != rf {
                return bad("All partitions should have the same number of replicas.".into());
            }
            if replicas
                .iter()
                .all(|n| self.speculative.broker(*n).is_some_and(|b| b.fenced))
            {
                return bad(format!(
                    "All brokers specified in the manual partition assignment for partition \
                     {p} are fenced."
                ));
            }
            out.push(replicas.clone());
        }
        Ok(out)
    }

    /// DeleteTopics by name.
    pub fn delete_topics(&mut self, token: ReplyToken, names: Vec<String>) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            return reply_each(token, names, e, Answer::DeleteTopics);
        }
        let duplicates = duplicates(&names);
        let mut records = Vec::new();
        let results = names
            .into_iter()
            .map(|n| {
                let r = match self.speculative.topic_by_name(&n) {
                    _ if duplicates.contains(&n) => {
                        err(code::INVALID_REQUEST, format!("Duplicate topic name {n}."))
                    }
                    None => err(
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic {n} does not exist."),
                    ),
                    Some(t) if t.internal() => {
                        err(code::INVALID_REQUEST, "Internal topics cannot be deleted.")
                    }
                    Some(t) => {
                        records.push(Record::RemoveTopic { id: t.id });
                        Ok(t.id)
                    }
                };
                (n, r)
            })
            .collect();
        self.propose(Some((token, Answer::DeleteTopics(results))), records)
    }

    /// CreatePartitions: raise each named topic's partition count to the given total. New
    /// partitions have the replication factor of partition 0 and continue its placement.
    pub fn create_partitions(
        &mut self,
        token: ReplyToken,
        topics: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Effect> {
        let names: Vec<String> = topics.iter().map(|t| t.0.clone()).collect();
        if let Some(e) = self.not_controller() {
            return reply_each(token, names, e, Answer::CreatePartitions);
        }
        let duplicates = duplicates(&names);
        let live = self.speculative.live_brokers();
        let revision = self.speculative.revision() + 1;
        let mut batch = Batch::default();
        let mut results = Vec::with_capacity(topics.len());
        for (name, count) in topics {
            let r = if duplicates.contains(&name) {
                err(
                    code::INVALID_REQUEST,
                    format!("Duplicate topic name {name}."),
                )
            } else {
                self.more_partitions(&name, count, &live, revision, &mut batch)
            };
            results.push((name, r));
        }
        let answer = Answer::CreatePartitions(results);
        if validate_only {
            return vec![Effect::Reply(token, answer)];
        }
        self.propose(Some((token, answer)), batch.records)
    }

    fn more_partitions(
        &mut self,
        name: &str,
        count: i32,
        live: &[NodeId],
        revision: u64,
        batch: &mut Batch,
    ) -> Outcome<()> {
        let Some(t) = self.speculative.topic_by_name(name) else {
            return err(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic {name} does not exist."),
            );
        };
        if t.internal() {
            // Group (and transaction) placement hashes ids over the partition count, so
            // growing it would strand every group's offsets in the wrong partition.
            return err(
                code::INVALID_REQUEST,
                format!("Cannot change the partition count of internal topic {name}."),
            );
        }
        let have = t.partitions.len() as i32;
        if count <= have {
            return err(
                code::INVALID_PARTITIONS,
                format!(
                    "Topic currently has {have} partitions, which is higher than the requested {count}."
                ),
            );
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return err(
                code::INVALID_PARTITIONS,
                format!("At most {PARTITIONS_PER_TOPIC_MAX} partitions."),
            );
        }
        let added = count - have;
        if batch.records.len() as u64 + added as u64 > RECORDS_PER_REQUEST_MAX {
            return err(
                code::POLICY_VIOLATION,
                format!(
                    "Excessively large number of partitions per request: at most \
                     {RECORDS_PER_REQUEST_MAX}."
                ),
            );
        }
        // Partition 0 sets the replication factor and the placement pattern; a topic
        // without partitions (only a damaged log has one) gets the defaults.
        let first = t.partitions.first();
        let rf = first.map_or(
            self.config.default_replication_factor.max(1) as usize,
            |p| p.target().len(),
        );
        if rf > live.len() {
            return err(
                code::INVALID_REPLICATION_FACTOR,
                format!(
                    "Unable to replicate the partition {rf} time(s): The target replication \
                     factor of {rf} cannot be reached because only {} broker(s) are registered.",
                    live.len()
                ),
            );
        }
        let id = t.id;
        let start = match first {
            Some(p) => placement::continue_from(live, p.preferred_leader(), have),
            None => Start::Random,
        };
        let assignments = placement::assign(live, added, rf, start, &mut self.rng);
        batch.check_node_limits(&self.speculative, assignments.iter().flatten())?;
        for (i, replicas) in assignments.into_iter().enumerate() {
            batch.records.push(Record::Partition(PartitionRecord {
                topic: id,
                partition: have + i as i32,
                replicas,
                revision,
                adding: Vec::new(),
                removing: Vec::new(),
            }));
        }
        Ok(())
    }

    /// AlterConfigs / IncrementalAlterConfigs (SET and DELETE; APPEND and SUBTRACT are
    /// resolved to SET by the caller).
    pub fn alter_configs(
        &mut self,
        token: ReplyToken,
        changes: Vec<AlterConfig>,
        validate_only: bool,
    ) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            let targets = changes.into_iter().map(|c| c.target).collect();
            return reply_each(token, targets, e, Answer::AlterConfigs);
        }
        // Kafka answers INVALID_REQUEST for every entry of a resource named twice, whatever
        // the entries ask.
        let mut seen = BTreeSet::new();
        let duplicates: BTreeSet<&ConfigTarget> = changes
            .iter()
            .map(|c| &c.target)
            .filter(|t| !seen.insert(*t))
            .collect();
        let mut records = Vec::new();
        let mut results = Vec::with_capacity(changes.len());
        for c in &changes {
            let r = if duplicates.contains(&c.target) {
                err(code::INVALID_REQUEST, "Duplicate resource in the request.")
            } else {
                self.alter_one(c, &mut records)
            };
            results.push((c.target.clone(), r));
        }
        let answer = Answer::AlterConfigs(results);
        if validate_only {
            return vec![Effect::Reply(token, answer)];
        }
        self.propose(Some((token, answer)), records)
    }

    fn alter_one(&self, c: &AlterConfig, records: &mut Vec<Record>) -> Outcome<()> {
        let (resource, check, internal) = match &c.target {
            ConfigTarget::Topic(name) => match self.speculative.topic_by_name(name) {
                Some(t) => (
                    ConfigResource::Topic(t.id),
                    self.config.topic_config_check,
                    t.internal(),
                ),
                None => {
                    return err(
                        code::UNKNOWN_TOPIC_OR_PARTITION,
                        format!("Topic {name} does not exist."),
                    )
                }
            },
            ConfigTarget::Broker(node) => {
                if node.is_some_and(|n| n < 0) {
                    return err(code::INVALID_REQUEST, "Invalid broker id.");
                }
                (
                    ConfigResource::Broker(*node),
                    self.config.broker_config_check,
                    false,
                )
            }
            // Checked below, with the codes Kafka gives (not only INVALID_CONFIG).
            ConfigTarget::ClientMetrics(name) => (
                ConfigResource::ClientMetrics(name.clone()),
                accept_all as ConfigCheck,
                false,
            ),
        };
        let empty = BTreeMap::new();
        let old = self.speculative.configs(&resource).unwrap_or(&empty);
        let mut new = if c.replace {
            BTreeMap::new()
        } else {
            old.clone()
        };
        for (k, v) in &c.ops {
            match v {
                Some(v) => new.insert(k.clone(), v.clone()),
                None => new.remove(k),
            };
        }
        if let ConfigTarget::ClientMetrics(name) = &c.target {
            // Before the generic string checks: Kafka answers an empty name first.
            crate::client_metrics::check(name, &new)?;
            let known = self.speculative.client_metrics();
            // Subscriptions this request's earlier entries create count too.
            let created: BTreeSet<&str> = records
                .iter()
                .filter_map(|r| match r {
                    Record::Config {
                        resource: ConfigResource::ClientMetrics(n),
                        value: Some(_),
                        ..
                    } if !known.contains_key(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            if !new.is_empty()
                && !known.contains_key(name)
                && known.len() + created.len() >= crate::client_metrics::SUBSCRIPTIONS_MAX
            {
                return err(
                    code::POLICY_VIOLATION,
                    format!(
                        "At most {} client metrics subscriptions.",
                        crate::client_metrics::SUBSCRIPTIONS_MAX
                    ),
                );
            }
        }
        check_config_strings(c.ops.iter().map(|(k, v)| (k, v.as_ref())))?;
        check(&new).or_else(|m| err(code::INVALID_CONFIG, m))?;
        if internal && new.get("cleanup.policy").map(|v| v.trim()) != Some("compact") {
            // Time or size retention would erase committed offsets and group metadata.
            return err(
                code::INVALID_CONFIG,
                "Internal topics must keep cleanup.policy=compact.",
            );
        }
        let mut recs = Vec::new();
        for (k, v) in &new {
            if old.get(k) != Some(v) {
                recs.push(Record::Config {
                    resource: resource.clone(),
                    key: k.clone(),
                    value: Some(v.clone()),
                });
            }
        }
        for k in old.keys().filter(|k| !new.contains_key(*k)) {
            recs.push(Record::Config {
                resource: resource.clone(),
                key: k.clone(),
                value: None,
            });
        }
        if records.len() + recs.len() > RECORDS_PER_REQUEST_MAX as usize {
            return err(
                code::POLICY_VIOLATION,
                "Too many config changes in one request.",
            );
        }
        records.extend(recs);
        Ok(())
    }

    /// AlterPartitionReassignments: per partition, the target replicas (starting a
    /// reassignment, or replacing the one in progress, whose original replicas stay the
    /// base) or `None` (cancelling the one in progress: back to the original replicas).
    /// While one runs the partition's replicas are the target followed by the leaving ones;
    /// the partition's Raft group adds the joining ones as learners, promotes them once
    /// caught up, drops the leaving ones, then its leader reports
    /// [`Controller::reassignment_complete`].
    pub fn alter_partition_reassignments(
        &mut self,
        token: ReplyToken,
        requests: Vec<(String, i32, Option<Vec<NodeId>>)>,
    ) -> Vec<Effect> {
        let keys: Vec<(String, i32)> = requests.iter().map(|r| (r.0.clone(), r.1)).collect();
        if let Some(e) = self.not_controller() {
            return reply_each(token, keys, e, Answer::AlterPartitionReassignments);
        }
        let revision = self.speculative.revision() + 1;
        let mut batch = Batch::default();
        let mut seen = BTreeSet::new();
        let mut results = Vec::with_capacity(requests.len());
        for (name, partition, target) in requests {
            let r = if !seen.insert((name.clone(), partition)) {
                err(code::INVALID_REQUEST, "Duplicate partition in the request.")
            } else {
                self.reassign(&name, partition, target, revision, &mut batch)
            };
            results.push(((name, partition), r));
        }
        self.propose(
            Some((token, Answer::AlterPartitionReassignments(results))),
            batch.records,
        )
    }

    fn reassign(
        &self,
        name: &str,
        partition: i32,
        target: Option<Vec<NodeId>>,
        revision: u64,
        batch: &mut Batch,
    ) -> Outcome<()> {
        let unknown = || {
            err(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("Topic {name} has no partition {partition}."),
            )
        };
        let Some(t) = self.speculative.topic_by_name(name) else {
            return unknown();
        };
        let Some(p) = usize::try_from(partition)
            .ok()
            .and_then(|i| t.partitions.get(i))
        else {
            return unknown();
        };
        let original = p.original();
        let change = match target {
            None => {
                if !p.reassigning() {
                    return err(
                        code::NO_REASSIGNMENT_IN_PROGRESS,
                        format!("No reassignment of {name}-{partition} is in progress."),
                    );
                }
                PartitionRecord {
                    topic: t.id,
                    partition,
                    replicas: original,
                    adding: Vec::new(),
                    removing: Vec::new(),
                    revision,
                }
            }
            Some(target) => {
                self.check_manual_replicas(&target)?;
                let adding: Vec<NodeId> = target
                    .iter()
                    .copied()
                    .filter(|n| !original.contains(n))
                    .collect();
                let removing: Vec<NodeId> = original
                    .iter()
                    .copied()
                    .filter(|n| !target.contains(n))
                    .collect();
                let mut replicas = target.clone();
                replicas.extend(&removing);
                if replicas.len() > REPLICATION_FACTOR_MAX as usize {
                    return err(
                        code::INVALID_REPLICA_ASSIGNMENT,
                        format!(
                            "The target and leaving replicas together are over \
                             {REPLICATION_FACTOR_MAX}."
                        ),
                    );
                }
                PartitionRecord {
                    topic: t.id,
                    partition,
                    replicas,
                    adding,
                    removing,
                    revision,
                }
            }
        };
        let same = change.replicas == p.replicas
            && change.adding == p.adding
            && change.removing == p.removing;
        if same {
            return Ok(());
        }
        let joining = change.replicas.iter().filter(|n| !p.replicas.contains(n));
        batch.check_node_limits(&self.speculative, joining)?;
        batch.records.push(Record::PartitionChange(change));
        Ok(())
    }

    /// The leader of a partition's Raft group reports that the reassignment the partition
    /// had at `revision` is done (the group runs on the target replicas alone): the
    /// partition's replicas become the target. A report about another revision (a newer
    /// reassignment began, or this one was cancelled) gets INVALID_UPDATE_VERSION.
    pub fn reassignment_complete(
        &mut self,
        token: ReplyToken,
        topic: TopicId,
        partition: i32,
        revision: u64,
    ) -> Vec<Effect> {
        let reply = |o| vec![Effect::Reply(token, Answer::ReassignmentComplete(o))];
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        let Some(p) = self.speculative.topic(&topic).and_then(|t| {
            usize::try_from(partition)
                .ok()
                .and_then(|i| t.partitions.get(i))
        }) else {
            return reply(err(
                code::UNKNOWN_TOPIC_OR_PARTITION,
                format!("No partition {partition} of that topic id."),
            ));
        };
        if p.revision != revision || !p.reassigning() {
            return reply(err(
                code::INVALID_UPDATE_VERSION,
                format!(
                    "The partition is at revision {}{}.",
                    p.revision,
                    if p.reassigning() {
                        ""
                    } else {
                        " with no reassignment"
                    }
                ),
            ));
        }
        let record = Record::PartitionChange(PartitionRecord {
            topic,
            partition,
            replicas: p.target(),
            adding: Vec::new(),
            removing: Vec::new(),
            revision: self.speculative.revision() + 1,
        });
        self.propose(
            Some((token, Answer::ReassignmentComplete(Ok(())))),
            vec![record],
        )
    }

    /// AllocateProducerIds from node `node` at broker epoch `epoch`: the next block.
    pub fn allocate_producer_ids(
        &mut self,
        token: ReplyToken,
        node: NodeId,
        epoch: u64,
    ) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            return vec![Effect::Reply(token, Answer::AllocateProducerIds(Err(e)))];
        }
        if let Err(e) = self.check_epoch(node, epoch) {
            return vec![Effect::Reply(token, Answer::AllocateProducerIds(Err(e)))];
        }
        let first = self.speculative.next_producer_id();
        let size = self
            .config
            .producer_id_block_size
            .clamp(1, PRODUCER_ID_BLOCK_SIZE_MAX);
        if first.checked_add(i64::from(size)).is_none() {
            let e = ApiError {
                code: code::UNKNOWN_SERVER_ERROR,
                message: "Producer ids are exhausted.".into(),
            };
            return vec![Effect::Reply(token, Answer::AllocateProducerIds(Err(e)))];
        }
        let block = ProducerIdsBlock { node, first, size };
        self.propose(
            Some((token, Answer::AllocateProducerIds(Ok(block)))),
            vec![Record::ProducerIds(block)],
        )
    }

    /// AlterUserScramCredentials (Kafka's `ScramControlManager`): each change is checked on
    /// its own; a user named by two changes gets DUPLICATE_RESOURCE on both; the valid ones
    /// commit together.
    pub fn alter_scram(&mut self, token: ReplyToken, changes: Vec<ScramChange>) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            let answer = changes
                .iter()
                .map(|c| (c.user().to_string(), Err(e.clone())));
            return vec![Effect::Reply(token, Answer::AlterScram(answer.collect()))];
        }
        let mut records = Vec::new();
        let mut answer = Vec::with_capacity(changes.len());
        // Counted once: a request may carry very many changes.
        let mut named: std::collections::HashMap<&str, usize> = Default::default();
        for c in &changes {
            *named.entry(c.user()).or_default() += 1;
        }
        for c in &changes {
            let user = c.user();
            let twice = named[user] > 1;
            let outcome = if twice {
                err(
                    code::DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            } else if user.is_empty() {
                err(code::UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
            } else if !matches!(c.mechanism(), 1 | 2) {
                err(code::UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
            } else {
                match c {
                    ScramChange::Upsert(r)
                        if r.iterations < crate::record::SCRAM_ITERATIONS_MIN =>
                    {
                        err(code::UNACCEPTABLE_CREDENTIAL, "Too few iterations")
                    }
                    ScramChange::Upsert(r)
                        if r.iterations > crate::record::SCRAM_ITERATIONS_MAX =>
                    {
                        err(code::UNACCEPTABLE_CREDENTIAL, "Too many iterations")
                    }
                    ScramChange::Upsert(r) => match crate::record::check_scram(r) {
                        Ok(()) => {
                            records.push(Record::ScramCredential(r.clone()));
                            Ok(())
                        }
                        Err(why) => err(code::UNACCEPTABLE_CREDENTIAL, why),
                    },
                    ScramChange::Delete { user, mechanism } => {
                        let key = (user.clone(), *mechanism);
                        if self.speculative.scram_credentials().contains_key(&key) {
                            records.push(Record::RemoveScramCredential {
                                user: user.clone(),
                                mechanism: *mechanism,
                            });
                            Ok(())
                        } else {
                            err(
                                code::RESOURCE_NOT_FOUND,
                                "Attempt to delete a user credential that does not exist",
                            )
                        }
                    }
                }
            };
            answer.push((user.to_string(), outcome));
        }
        self.propose(Some((token, Answer::AlterScram(answer))), records)
    }

    /// CreateDelegationToken (Kafka's `DelegationTokenControlManager.createDelegationToken`):
    /// renewers must be users; the token's max and expiry times follow from `now_ms` and
    /// the configured lifetimes.
    pub fn create_token(
        &mut self,
        token: ReplyToken,
        req: CreateToken,
        now_ms: i64,
    ) -> Vec<Effect> {
        let reply = |o| vec![Effect::Reply(token, Answer::CreateToken(o))];
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        if let Some(bad) = req.renewers.iter().find(|r| !r.starts_with("User:")) {
            return reply(err(
                code::INVALID_PRINCIPAL_TYPE,
                format!("Renewer principal type is not supported: {bad}"),
            ));
        }
        if let Some(t) = self.speculative.tokens().get(&req.token_id) {
            // A retried command (its first try committed, its answer was lost) gets the
            // token it made; any other use of a taken id is refused.
            let same =
                t.owner == req.owner && t.requester == req.requester && t.renewers == req.renewers;
            return reply(if same {
                Ok(t.clone())
            } else {
                err(code::INVALID_REQUEST, "The token id is taken.")
            });
        }
        if self.speculative.tokens().len() >= crate::tokens::TOKENS_MAX {
            return reply(err(
                code::POLICY_VIOLATION,
                format!(
                    "At most {} delegation tokens exist.",
                    crate::tokens::TOKENS_MAX
                ),
            ));
        }
        let mine = self
            .speculative
            .tokens()
            .values()
            .filter(|t| t.requester == req.requester)
            .count();
        if mine >= crate::tokens::TOKENS_PER_REQUESTER_MAX {
            return reply(err(
                code::POLICY_VIOLATION,
                format!(
                    "{} has created {} delegation tokens that still exist, the most one may.",
                    req.requester,
                    crate::tokens::TOKENS_PER_REQUESTER_MAX
                ),
            ));
        }
        let (max_ms, expiry_ms) = crate::tokens::create_times(
            now_ms,
            req.max_lifetime_ms,
            self.config.token_max_lifetime_ms,
            self.config.token_expiry_time_ms,
        );
        let record = crate::tokens::TokenRecord {
            token_id: req.token_id,
            owner: req.owner,
            requester: req.requester,
            renewers: req.renewers,
            issue_ms: now_ms,
            max_ms,
            expiry_ms,
        };
        if let Err(why) = crate::tokens::check(&record) {
            return reply(err(code::INVALID_REQUEST, why));
        }
        self.token_check_at = self.token_check_at.min(token_expires_after(&record));
        self.propose(
            Some((token, Answer::CreateToken(Ok(record.clone())))),
            vec![Record::DelegationToken(record)],
        )
    }

    /// RenewDelegationToken (`tokens::renew`'s checks) or, with `expire`,
    /// ExpireDelegationToken (`tokens::expire`'s: a negative period removes the token at
    /// once) of token `token_id` by `principal`: the answer is the new expiry time.
    pub fn token_expiry(
        &mut self,
        token: ReplyToken,
        token_id: &str,
        principal: &str,
        period_ms: i64,
        expire: bool,
        now_ms: i64,
    ) -> Vec<Effect> {
        let reply = |o| vec![Effect::Reply(token, Answer::TokenExpiry(o))];
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        let t = self.speculative.tokens().get(token_id);
        let outcome = if expire {
            crate::tokens::expire(t, principal, now_ms, period_ms)
        } else {
            let expiry_time = self.config.token_expiry_time_ms;
            crate::tokens::renew(t, principal, now_ms, period_ms, expiry_time)
                .map(crate::tokens::Expiry::At)
        };
        let (record, expiry) = match (outcome, t) {
            (Ok(crate::tokens::Expiry::Remove), _) => (
                Record::RemoveDelegationToken {
                    token_id: token_id.to_string(),
                },
                now_ms,
            ),
            (Ok(crate::tokens::Expiry::At(at)), Some(t)) => {
                let t = crate::tokens::TokenRecord {
                    expiry_ms: at,
                    ..t.clone()
                };
                self.token_check_at = self.token_check_at.min(token_expires_after(&t));
                (Record::DelegationToken(t), at)
            }
            (Ok(_), None) => unreachable!("the checks find the token"),
            (Err(e), _) => return reply(Err(e)),
        };
        self.propose(Some((token, Answer::TokenExpiry(Ok(expiry)))), vec![record])
    }

    /// CreateAcls (Kafka's `AclControlManager.createAcls`): each binding is checked on its
    /// own (INVALID_REQUEST with the reason); one that exists, or came earlier in the same
    /// request, succeeds without a record; the new ones commit together.
    pub fn create_acls(&mut self, token: ReplyToken, bindings: Vec<AclBinding>) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            let answer = bindings.into_iter().map(|b| (b, Err(e.clone())));
            return vec![Effect::Reply(token, Answer::CreateAcls(answer.collect()))];
        }
        let existing = self.speculative.acls();
        let mut added = std::collections::BTreeSet::new();
        let mut answer = Vec::with_capacity(bindings.len());
        for b in bindings {
            let outcome = match crate::acl::check_binding(&b) {
                Err(why) => err(code::INVALID_REQUEST, why),
                Ok(()) if existing.contains(&b) || added.contains(&b) => Ok(()),
                Ok(()) if existing.len() + added.len() >= crate::acl::ACLS_MAX => err(
                    code::INVALID_REQUEST,
                    format!(
                        "The cluster holds {} ACLs, the most it may",
                        crate::acl::ACLS_MAX
                    ),
                ),
                Ok(()) => {
                    added.insert(b.clone());
                    Ok(())
                }
            };
            answer.push((b, outcome));
        }
        let records = added.into_iter().map(Record::Acl).collect();
        self.propose(Some((token, Answer::CreateAcls(answer))), records)
    }

    /// DeleteAcls (Kafka's `AclControlManager.deleteAcls`): per filter, every stored binding
    /// it matches goes; a binding two filters match goes once and is reported by the first.
    pub fn delete_acls(&mut self, token: ReplyToken, filters: Vec<AclFilter>) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            let answer = filters.into_iter().map(|f| (f, Err(e.clone())));
            return vec![Effect::Reply(token, Answer::DeleteAcls(answer.collect()))];
        }
        let mut removed = std::collections::BTreeSet::new();
        let mut answer = Vec::with_capacity(filters.len());
        for f in filters {
            let outcome = match f.check() {
                Err(why) => err(code::INVALID_REQUEST, why),
                Ok(()) => {
                    let hits: Vec<AclBinding> = self
                        .speculative
                        .acls()
                        .iter()
                        .filter(|b| f.matches(b) && !removed.contains(*b))
                        .cloned()
                        .collect();
                    removed.extend(hits.iter().cloned());
                    Ok(hits)
                }
            };
            answer.push((f, outcome));
        }
        let records = removed.into_iter().map(Record::RemoveAcl).collect();
        self.propose(Some((token, Answer::DeleteAcls(answer))), records)
    }

    /// AlterClientQuotas (Kafka's `ClientQuotaControlManager`): each entry is checked on its
    /// own (INVALID_REQUEST with the reason: an entity Kafka refuses, a key the entity
    /// cannot have, a value that is not positive or not whole where it must be, a key
    /// twice); the valid entries' changes commit together, unless `validate_only`.
    pub fn alter_client_quotas(
        &mut self,
        token: ReplyToken,
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    ) -> Vec<Effect> {
        if let Some(e) = self.not_controller() {
            let answer = entries.into_iter().map(|q| (q.entity, Err(e.clone())));
            return vec![Effect::Reply(token, Answer::AlterQuotas(answer.collect()))];
        }
        let mut records = Vec::new();
        let mut answer = Vec::with_capacity(entries.len());
        // An entity named by two entries: the later one sees the earlier one's values.
        let mut pending: BTreeMap<(QuotaEntity, String), Option<QuotaValue>> = BTreeMap::new();
        let mut new_entities = std::collections::BTreeSet::new();
        for q in entries {
            let held = self.speculative.quotas().len() + new_entities.len();
            let adds_entity = !self.speculative.quotas().contains_key(&q.entity)
                && !new_entities.contains(&q.entity)
                && q.ops.iter().any(|(_, v)| v.is_some());
            let checked = (|| {
                crate::quota::check_entity(&q.entity)?;
                let mut seen = std::collections::BTreeSet::new();
                for (key, value) in &q.ops {
                    if !seen.insert(key.as_str()) {
                        return Err(format!("Duplicate quota key {key}"));
                    }
                    // A removal must name a key the entity can have; a value must be valid.
                    let probe = value.map_or(1.0, |v| v.0);
                    crate::quota::check_quota(&q.entity, key, probe)?;
                }
                if adds_entity && held >= crate::quota::QUOTA_ENTITIES_MAX {
                    return Err(format!(
                        "The cluster holds quotas of {} entities, the most it may",
                        crate::quota::QUOTA_ENTITIES_MAX
                    ));
                }
                Ok(())
            })();
            let outcome = match checked {
                Err(why) => err(code::INVALID_REQUEST, why),
                Ok(()) => {
                    if adds_entity {
                        new_entities.insert(q.entity.clone());
                    }
                    for (key, value) in &q.ops {
                        let k = (q.entity.clone(), key.clone());
                        let current = match pending.get(&k) {
                            Some(v) => *v,
                            None => self
                                .speculative
                                .quotas()
                                .get(&q.entity)
                                .and_then(|m| m.get(key))
                                .copied(),
                        };
                        if current != *value {
                            pending.insert(k, *value);
                            records.push(Record::ClientQuota {
                                entity: q.entity.clone(),
                                key: key.clone(),
                                value: *value,
                            });
                        }
                    }
                    Ok(())
                }
            };
            answer.push((q.entity, outcome));
        }
        if validate_only {
            records.clear();
        }
        self.propose(Some((token, Answer::AlterQuotas(answer))), records)
    }

    /// UpdateFeatures (Kafka's `FeatureControlManager`) on the controller of node `me`:
    /// each update is checked against the finalized levels (`features::check_update`); a
    /// feature named twice takes its last update, as Kafka's request map does. All or
    /// nothing, as in Kafka: the first failure (INVALID_UPDATE_VERSION) fails every update
    /// and nothing is written. An update to the current level writes nothing.
    pub fn update_features(
        &mut self,
        token: ReplyToken,
        me: NodeId,
        updates: Vec<crate::features::FeatureUpdate>,
        validate_only: bool,
    ) -> Vec<Effect> {
        let names: Vec<String> = updates.iter().map(|u| u.name.clone()).collect();
        let reply = |outcome: Outcome<()>| {
            let answer = names.iter().map(|n| (n.clone(), outcome.clone())).collect();
            vec![Effect::Reply(token, Answer::UpdateFeatures(answer))]
        };
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        let mut last: BTreeMap<&str, &crate::features::FeatureUpdate> = BTreeMap::new();
        for u in &updates {
            last.insert(u.name.as_str(), u);
        }
        let nodes: Vec<(NodeId, &[crate::features::SupportedFeature])> = self
            .speculative
            .brokers()
            .values()
            .map(|b| (b.node, b.features.as_slice()))
            .collect();
        let finalized = self.speculative.features();
        let mut records = Vec::new();
        for u in last.values() {
            if let Err(m) = crate::features::check_update(finalized, me, &nodes, u) {
                return reply(err(
                    code::INVALID_UPDATE_VERSION,
                    // The broker's handler knows this prefix (`ALL_FAILED`).
                    format!(
                        "The update failed for all features since the following feature had \
                         an error: {m}"
                    ),
                ));
            }
            if finalized.get(&u.name).copied().unwrap_or(0) != u.level {
                records.push(Record::FeatureLevel {
                    name: u.name.clone(),
                    level: u.level,
                });
            }
        }
        if validate_only {
            records.clear();
        }
        let answer = names.into_iter().map(|n| (n, Ok(()))).collect();
        self.propose(Some((token, Answer::UpdateFeatures(answer))), records)
    }

    fn check_epoch(&self, node: NodeId, epoch: u64) -> Outcome<&BrokerRegistration> {
        match self.speculative.broker(node) {
            None => err(
                code::BROKER_ID_NOT_REGISTERED,
                format!("Node {node} is not registered."),
            ),
            Some(b) if b.epoch != epoch => err(
                code::STALE_BROKER_EPOCH,
                format!("Node {node} epoch {epoch}, registered with {}.", b.epoch),
            ),
            Some(b) => Ok(b),
        }
    }

    /// BrokerRegistration: a node announces itself (again after every start). It is
    /// registered fenced; heartbeats unfence it.
    pub fn register_broker(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        reg: Registration,
    ) -> Vec<Effect> {
        let reply = |o| vec![Effect::Reply(token, Answer::RegisterBroker(o))];
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        let hosts_ok = [&reg.kafka.host, &reg.rpc.host]
            .iter()
            .all(|h| !h.is_empty() && h.len() <= HOST_BYTES_MAX)
            && reg.rack.as_ref().is_none_or(|r| r.len() <= HOST_BYTES_MAX);
        if reg.node < 0 || !hosts_ok {
            return reply(err(code::INVALID_REQUEST, "Invalid node id, host or rack."));
        }
        if let Err(why) = crate::record::check_listeners(&reg.kafka, &reg.listeners) {
            return reply(err(
                code::INVALID_REQUEST,
                format!("Invalid listeners: {why}."),
            ));
        }
        if !reg.features.is_empty() {
            if let Err(why) = crate::features::check_supported(&reg.features) {
                return reply(err(
                    code::INVALID_REQUEST,
                    format!("Invalid features: {why}."),
                ));
            }
        }
        // Kafka's check: a node must serve every finalized level, or clients that rely on
        // a level would meet a node that does not have it.
        for (name, &level) in self.speculative.features() {
            let range = crate::features::node_range(&reg.features, name);
            if !range.is_some_and(|(min, max)| (min..=max).contains(&level)) {
                let supported = range.map_or("none".to_string(), |(a, b)| format!("{a}-{b}"));
                return reply(err(
                    code::UNSUPPORTED_VERSION,
                    format!(
                        "Unable to register because the broker does not support finalized \
                         version {level} of {name}. The supported range is {supported}."
                    ),
                ));
            }
        }
        let mut directory = reg.directory;
        if let Some(old) = self.speculative.broker(reg.node) {
            if old.directory != [0; 16] && directory != [0; 16] && old.directory != directory {
                // Its data directory was wiped or replaced: a Raft voter that forgot what it
                // acknowledged would break the quorums counting on it (KIP-853's directory
                // ids guard against the same). The operator restores the directory, or
                // gives the new one another node id.
                return reply(err(
                    code::INVALID_REGISTRATION,
                    format!(
                        "Node {} registered another data directory before: its directory was \
                         replaced or wiped, and it may not rejoin under the same node id.",
                        reg.node
                    ),
                ));
            }
            if directory == [0; 16] {
                // A node that cannot name its directory keeps the one registered.
                directory = old.directory;
            }
            if old.incarnation == reg.incarnation {
                // A retried registration of the same process: answered like the first,
                // once its record committed.
                let epoch = old.epoch;
                self.heartbeats.insert(reg.node, now_ms);
                let answer = Answer::RegisterBroker(Ok(epoch));
                let registered = |r: &Record| match r {
                    Record::RegisterBroker(b) => b.node == reg.node && b.epoch == epoch,
                    _ => false,
                };
                return match self
                    .pending
                    .iter_mut()
                    .find(|p| p.records.iter().any(registered))
                {
                    Some(p) => {
                        p.replies.push((token, answer));
                        Vec::new()
                    }
                    None => vec![Effect::Reply(token, answer)],
                };
            }
            let alive = self
                .heartbeats
                .get(&reg.node)
                .is_some_and(|&t| now_ms - t < self.config.broker_session_timeout_ms);
            if !old.fenced && alive {
                return reply(err(
                    code::DUPLICATE_BROKER_REGISTRATION,
                    format!(
                        "Another process registered node {} and its session has not expired.",
                        reg.node
                    ),
                ));
            }
        }
        let epoch = self.speculative.revision() + 1;
        self.heartbeats.insert(reg.node, now_ms);
        let record = Record::RegisterBroker(BrokerRegistration {
            node: reg.node,
            incarnation: reg.incarnation,
            directory,
            epoch,
            kafka: reg.kafka,
            listeners: reg.listeners,
            rpc: reg.rpc,
            rack: reg.rack,
            fenced: true,
            features: reg.features,
        });
        let mut out = self.propose(
            Some((token, Answer::RegisterBroker(Ok(epoch)))),
            vec![record],
        );
        self.schedule(&mut out);
        out
    }

    /// BrokerHeartbeat: `caught_up` once the node has applied the metadata log up to its
    /// registration. A fenced node that is caught up is unfenced.
    pub fn broker_heartbeat(
        &mut self,
        token: ReplyToken,
        now_ms: i64,
        node: NodeId,
        epoch: u64,
        caught_up: bool,
    ) -> Vec<Effect> {
        let reply = |o| vec![Effect::Reply(token, Answer::BrokerHeartbeat(o))];
        if let Some(e) = self.not_controller() {
            return reply(Err(e));
        }
        let fenced = match self.check_epoch(node, epoch) {
            Ok(b) => b.fenced,
            Err(e) => return reply(Err(e)),
        };
        self.heartbeats.insert(node, now_ms);
        let mut out = if fenced && caught_up {
            self.propose(
                Some((token, Answer::BrokerHeartbeat(Ok(false)))),
                vec![Record::UnfenceBroker { node, epoch }],
            )
        } else {
            reply(Ok(fenced))
        };
        self.schedule(&mut out);
        out
    }

    /// Fences every unfenced node whose last heartbeat is `broker.session.timeout.ms` old.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        self.tick_hint = None;
        let mut out = Vec::new();
        if !self.active {
            return out;
        }
        out.extend(self.upgrade_features());
        let timeout = self.config.broker_session_timeout_ms;
        let expired: Vec<Record> = self
            .speculative
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                let last = *self.heartbeats.entry(b.node).or_insert(now_ms);
                now_ms - last >= timeout
            })
            .map(|b| Record::FenceBroker {
                node: b.node,
                epoch: b.epoch,
            })
            .collect();
        if !expired.is_empty() {
            for r in &expired {
                if let Record::FenceBroker { node, .. } = r {
                    out.push(Effect::Warn(format!(
                        "fencing node {node}: no heartbeat for {timeout} ms"
                    )));
                }
            }
            out.extend(self.propose(None, expired));
        }
        self.schedule(&mut out);
        out
    }

    /// Removes expired delegation tokens (Kafka's sweep, at most `tokens::SWEEP_MAX` at a
    /// time) when the earliest expiry has passed. `wall_ms` is the wall clock (token times
    /// are), unlike `tick`'s; the runtime calls this on every tick of its own, and it
    /// looks at the tokens only when one may have expired (or an hour passed).
    pub fn sweep_tokens(&mut self, wall_ms: i64) -> Vec<Effect> {
        if !self.active || wall_ms < self.token_check_at {
            return Vec::new();
        }
        let gone: Vec<Record> = self
            .speculative
            .tokens()
            .values()
            .filter(|t| crate::tokens::expired(t, wall_ms))
            .take(crate::tokens::SWEEP_MAX)
            .map(|t| Record::RemoveDelegationToken {
                token_id: t.token_id.clone(),
            })
            .collect();
        let more = gone.len() == crate::tokens::SWEEP_MAX;
        let out = if gone.is_empty() {
            Vec::new()
        } else {
            self.propose(None, gone)
        };
        // The next look: at once if one sweep was not enough, else when the next token
        // expires (proposed removals are gone from the speculative image already).
        self.token_check_at = if more {
            wall_ms
        } else {
            self.speculative
                .tokens()
                .values()
                .map(token_expires_after)
                .min()
                .unwrap_or(i64::MAX)
                .min(wall_ms.saturating_add(crate::tokens::EXPIRY_CHECK_INTERVAL_MS_DEFAULT))
        };
        out
    }

    /// Asks for a tick at the earliest heartbeat deadline of an unfenced node.
    fn schedule(&mut self, out: &mut Vec<Effect>) {
        if !self.active {
            return;
        }
        let timeout = self.config.broker_session_timeout_ms;
        let next = self
            .speculative
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .filter_map(|b| self.heartbeats.get(&b.node))
            .map(|&t| t + timeout)
            .min();
        if let Some(at) = next {
            if self.tick_hint.is_none_or(|h| at < h) {
                self.tick_hint = Some(at);
                out.push(Effect::ScheduleTick { at_ms: at });
            }
        }
    }
}

/// Records of one command under construction, with what they add to the image so far.
#[derive(Default)]
struct Batch {
    records: Vec<Record>,
    topics: usize,
    ids: BTreeSet<TopicId>,
    folded: BTreeMap<String, String>,
    replicas_added: BTreeMap<NodeId, u64>,
}

impl Batch {
    /// Adds `replicas` to the per-node counts if no node goes over its limit.
    fn check_node_limits<'a>(
        &mut self,
        image: &MetadataImage,
        replicas: impl Iterator<Item = &'a NodeId> + Clone,
    ) -> Outcome<()> {
        let mut added: BTreeMap<NodeId, u64> = BTreeMap::new();
        for &n in replicas {
            *added.entry(n).or_default() += 1;
        }
        for (&n, &a) in &added {
            let total =
                image.replicas_on(n) + self.replicas_added.get(&n).copied().unwrap_or(0) + a;
            if total > PARTITIONS_PER_NODE_MAX {
                return err(
                    code::POLICY_VIOLATION,
                    format!(
                        "The change would leave {total} partitions on node {n}, over its limit \
                         of {PARTITIONS_PER_NODE_MAX}."
                    ),
                );
            }
        }
        for (n, a) in added {
            *self.replicas_added.entry(n).or_default() += a;
        }
        Ok(())
    }
}

/// Config keys non-empty, keys and values within what a record carries.
fn check_config_strings<'a>(
    kvs: impl IntoIterator<Item = (&'a String, Option<&'a String>)>,
) -> Outcome<()> {
    for (k, v) in kvs {
        if k.is_empty() {
            return err(code::INVALID_CONFIG, "A config name must not be empty.");
        }
        if k.len() > STRING_BYTES_MAX || v.is_some_and(|v| v.len() > STRING_BYTES_MAX) {
            return err(
                code::INVALID_CONFIG,
                format!("Config names and values are limited to {STRING_BYTES_MAX} bytes."),
            );
        }
    }
    Ok(())
}

fn duplicates(names: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    names
        .iter()
        .filter(|n| !seen.insert(n.as_str()))
        .cloned()
        .collect()
}

fn reply_each<K, T>(
    token: ReplyToken,
    keys: Vec<K>,
    e: ApiError,
    wrap: fn(Vec<(K, Outcome<T>)>) -> Answer,
) -> Vec<Effect> {
    let v = keys.into_iter().map(|k| (k, Err(e.clone()))).collect();
    vec![Effect::Reply(token, wrap(v))]
}

/// The first wall-clock time at which `t` counts as expired (`tokens::expired`).
fn token_expires_after(t: &crate::tokens::TokenRecord) -> i64 {
    t.expiry_ms.min(t.max_ms).saturating_add(1)
}

/// `answer` with every success replaced by `e` (the whole request failed).
fn fail_all(answer: Answer, e: ApiError) -> Answer {
    fn each<K, T>(v: Vec<(K, Outcome<T>)>, e: &ApiError) -> Vec<(K, Outcome<T>)> {
        v.into_iter()
            .map(|(k, o)| (k, o.and_then(|_| Err(e.clone()))))
            .collect()
    }
    match answer {
        Answer::CreateTopics(v) => Answer::CreateTopics(each(v, &e)),
        Answer::DeleteTopics(v) => Answer::DeleteTopics(each(v, &e)),
        Answer::CreatePartitions(v) => Answer::CreatePartitions(each(v, &e)),
        Answer::AlterConfigs(v) => Answer::AlterConfigs(each(v, &e)),
        Answer::AllocateProducerIds(o) => Answer::AllocateProducerIds(o.and(Err(e))),
        Answer::RegisterBroker(o) => Answer::RegisterBroker(o.and(Err(e))),
        Answer::BrokerHeartbeat(o) => Answer::BrokerHeartbeat(o.and(Err(e))),
        Answer::AlterPartitionReassignments(v) => Answer::AlterPartitionReassignments(each(v, &e)),
        Answer::ReassignmentComplete(o) => Answer::ReassignmentComplete(o.and(Err(e))),
        Answer::MetadataIndex(o) => Answer::MetadataIndex(o.and(Err(e))),
        Answer::AlterScram(v) => Answer::AlterScram(each(v, &e)),
        Answer::CreateAcls(v) => Answer::CreateAcls(each(v, &e)),
        Answer::DeleteAcls(v) => Answer::DeleteAcls(each(v, &e)),
        Answer::AlterQuotas(v) => Answer::AlterQuotas(each(v, &e)),
        Answer::UpdateFeatures(v) => Answer::UpdateFeatures(each(v, &e)),
        Answer::DescribeQuorum(o) => Answer::DescribeQuorum(o.and(Err(e))),
        Answer::CreateToken(o) => Answer::CreateToken(o.and(Err(e))),
        Answer::TokenExpiry(o) => Answer::TokenExpiry(o.and(Err(e))),
    }
}
