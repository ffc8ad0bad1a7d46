//! The metadata records (modelled on Kafka KRaft's metadata log) and their types.
//! Encoding and decoding are in `codec.rs`.

use std::collections::BTreeMap;

pub use crate::acl::AclBinding;
pub use crate::features::SupportedFeature;
pub use crate::quota::{QuotaEntity, QuotaValue};
pub use crate::tokens::TokenRecord;

/// A broker's (node's) id, as Kafka's `broker.id` / `node.id`: non-negative.
pub type NodeId = i32;
/// A topic id (KIP-516): 16 bytes of a random UUID, never all zero.
pub type TopicId = [u8; 16];

/// What a config record applies to (Kafka's `ConfigResource`: type 2 topic, 4 broker, 16
/// client metrics).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResource {
    Topic(TopicId),
    /// `None`: the cluster-wide default (Kafka's broker resource named ""); `Some(n)`: node n.
    Broker(Option<NodeId>),
    /// A client-metrics subscription (KIP-714), by name (see `client_metrics`).
    ClientMetrics(String),
}

/// One metadata record. Each kind has a type byte (Kafka's metadata `apiKey` where Kafka has
/// the same record, ≥ 100 for sluice's own) and a version; see `codec.rs` for the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The cluster's id (Kafka's 22-character form). Set once, first in every log.
    ClusterId { cluster_id: String },
    /// Raises the image's revision high-water mark (snapshots carry it; revisions are never
    /// reused, even those of deleted partitions).
    Revision { revision: u64 },
    /// A node joined (or rejoined: a new incarnation replaces the old registration).
    RegisterBroker(BrokerRegistration),
    /// The node stopped heartbeating: it leads nothing and is left out of placement.
    FenceBroker { node: NodeId, epoch: u64 },
    /// The node heartbeats and has caught up with the metadata log.
    UnfenceBroker { node: NodeId, epoch: u64 },
    /// A topic and its initial config overrides. Its partitions follow as `Partition`s.
    Topic {
        name: String,
        id: TopicId,
        configs: BTreeMap<String, String>,
    },
    /// Partition `partition` of a topic (partitions arrive in order 0, 1, 2...).
    Partition(PartitionRecord),
    /// A partition's replica set changed (a reassignment began, completed or was
    /// cancelled); `revision` is the new one.
    PartitionChange(PartitionRecord),
    /// A config override set (`Some`) or removed (`None`).
    Config {
        resource: ConfigResource,
        key: String,
        value: Option<String>,
    },
    /// Producer ids `first..first + size` belong to `node` (Kafka's `ProducerIdsRecord`;
    /// blocks never overlap and only move up).
    ProducerIds(ProducerIdsBlock),
    /// The topic and all its partitions and configs are gone.
    RemoveTopic { id: TopicId },
    /// A user's SCRAM credential for one mechanism, new or replacing the one it had
    /// (Kafka's `UserScramCredentialRecord`).
    ScramCredential(ScramRecord),
    /// The user's credential for `mechanism` is gone (Kafka's
    /// `RemoveUserScramCredentialRecord`).
    RemoveScramCredential { user: String, mechanism: i8 },
    /// An access-control entry (Kafka's `AccessControlEntryRecord`, keyed by the binding
    /// itself rather than an id: equal bindings are one).
    Acl(AclBinding),
    /// The entry is gone (Kafka's `RemoveAccessControlEntryRecord`).
    RemoveAcl(AclBinding),
    /// A client quota set (`Some`) or removed (`None`) (Kafka's `ClientQuotaRecord`).
    ClientQuota {
        entity: QuotaEntity,
        key: String,
        value: Option<QuotaValue>,
    },
    /// A feature's finalized level (Kafka's `FeatureLevelRecord`); level 0 removes it.
    FeatureLevel { name: String, level: i16 },
    /// A delegation token, new or renewed (Kafka's `DelegationTokenRecord`).
    DelegationToken(TokenRecord),
    /// The token is gone: expired and swept, or expired at once (Kafka's
    /// `RemoveDelegationTokenRecord`).
    RemoveDelegationToken { token_id: String },
}

/// A node's registration (Kafka's `RegisterBrokerRecord`, one listener each for clients and
/// for node-to-node traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node: NodeId,
    /// A random id per process start: a restarted node registers again with a new one.
    pub incarnation: [u8; 16],
    /// The id of the node's data directory (`meta.properties`; zeros: not known, as in
    /// registrations written before it existed). Fixed for the life of a node id: a node
    /// that comes back with another (its directory was wiped) is refused, by the controller
    /// and by every peer's transport, since Raft cannot let a voter forget what it wrote.
    pub directory: [u8; 16],
    /// Assigned by the controller from the image's revision counter; heartbeats and
    /// producer-id requests must carry it (stale ones get STALE_BROKER_EPOCH).
    pub epoch: u64,
    /// The node's first client listener (`--listen`/`--advertised-host`).
    pub kafka: Endpoint,
    /// Every client listener, `kafka` first (version 2). Empty in registrations written
    /// before listeners had names: those have one, `PLAINTEXT` at `kafka`
    /// ([`BrokerRegistration::client_listeners`]).
    pub listeners: Vec<ListenerEndpoint>,
    /// The node-to-node listener (`--rpc-listen`).
    pub rpc: Endpoint,
    pub rack: Option<String>,
    /// A registration starts fenced; heartbeats unfence it.
    pub fenced: bool,
    /// The feature ranges the node's build supports (version 3). Empty in registrations
    /// written before features: see [`crate::features::node_range`].
    pub features: Vec<SupportedFeature>,
}

impl BrokerRegistration {
    /// The node's client listeners, the first at `kafka`.
    pub fn client_listeners(&self) -> Vec<ListenerEndpoint> {
        if !self.listeners.is_empty() {
            return self.listeners.clone();
        }
        vec![ListenerEndpoint {
            name: PLAINTEXT_LISTENER.to_string(),
            host: self.kafka.host.clone(),
            port: self.kafka.port,
            security_protocol: 0,
        }]
    }
}

/// Why a registration's listeners are not valid: none or every one named (the first at
/// `kafka`), at most [`LISTENERS_MAX`], names unique, names and hosts non-empty and at most
/// [`crate::limits::HOST_BYTES_MAX`].
pub fn check_listeners(kafka: &Endpoint, listeners: &[ListenerEndpoint]) -> Result<(), String> {
    use crate::limits::HOST_BYTES_MAX;
    if listeners.len() > LISTENERS_MAX {
        return Err(format!("more than {LISTENERS_MAX} listeners"));
    }
    if let Some(first) = listeners.first() {
        if first.host != kafka.host || first.port != kafka.port {
            return Err("the first listener is not the registered Kafka endpoint".into());
        }
    }
    for (i, l) in listeners.iter().enumerate() {
        let bad = |s: &str| s.is_empty() || s.len() > HOST_BYTES_MAX;
        if bad(&l.name) || bad(&l.host) {
            return Err(format!("listener {i}: bad name or host"));
        }
        if listeners[..i].iter().any(|o| o.name == l.name) {
            return Err(format!("listener {} named twice", l.name));
        }
    }
    Ok(())
}

/// A stored SCRAM credential (salted keys, never a password). `mechanism` is Kafka's id:
/// 1 SCRAM-SHA-256 (32-byte keys), 2 SCRAM-SHA-512 (64-byte keys).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramRecord {
    pub user: String,
    pub mechanism: i8,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramRecord {
    // Keys stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramRecord")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Bytes of a SCRAM user name.
pub const SCRAM_USER_BYTES_MAX: usize = 256;
/// Bytes of a SCRAM salt.
pub const SCRAM_SALT_BYTES_MAX: usize = 128;

/// Kafka's bounds on a SCRAM credential's iteration count (`ScramMechanism`'s min and max).
pub const SCRAM_ITERATIONS_MIN: u32 = 4096;
pub const SCRAM_ITERATIONS_MAX: u32 = 16384;

/// Why a SCRAM credential is not valid (iterations within
/// [`SCRAM_ITERATIONS_MIN`]..=[`SCRAM_ITERATIONS_MAX`], keys of the mechanism's length).
pub fn check_scram(r: &ScramRecord) -> Result<(), String> {
    let key_len = match r.mechanism {
        1 => 32,
        2 => 64,
        m => return Err(format!("unknown SCRAM mechanism {m}")),
    };
    if r.user.is_empty() || r.user.len() > SCRAM_USER_BYTES_MAX {
        return Err("bad SCRAM user name".into());
    }
    if !(SCRAM_ITERATIONS_MIN..=SCRAM_ITERATIONS_MAX).contains(&r.iterations) {
        return Err(format!("SCRAM iterations {} out of bounds", r.iterations));
    }
    if r.salt.is_empty() || r.salt.len() > SCRAM_SALT_BYTES_MAX {
        return Err("bad SCRAM salt".into());
    }
    if r.stored_key.len() != key_len || r.server_key.len() != key_len {
        return Err("SCRAM keys of the wrong length".into());
    }
    Ok(())
}

/// The listener (and security protocol) of registrations that name none.
pub const PLAINTEXT_LISTENER: &str = "PLAINTEXT";
/// Client listeners one registration may name (one per Kafka security protocol, with room).
pub const LISTENERS_MAX: usize = 8;

/// One client listener of a node (Kafka's `BrokerEndpoint` of `RegisterBrokerRecord`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerEndpoint {
    /// The listener's name (sluice names a listener by its protocol: `SSL`).
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's `SecurityProtocol` id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRecord {
    pub topic: TopicId,
    pub partition: i32,
    /// Node ids in preference order: the first is the preferred leader. During a
    /// reassignment, the target replicas first, then those being removed (Kafka's order).
    pub replicas: Vec<NodeId>,
    /// Replicas joining in a reassignment (learners until caught up); within `replicas`.
    pub adding: Vec<NodeId>,
    /// Replicas leaving once the reassignment completes; within `replicas`, none adding.
    pub removing: Vec<NodeId>,
    /// When this replica set was decided (a number from the image's revision counter): a
    /// replica re-created on the same node is a new one (Redpanda's (node, revision)).
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdsBlock {
    pub node: NodeId,
    pub first: i64,
    pub size: u32,
}

impl ProducerIdsBlock {
    /// The id after the block's last.
    pub fn end(&self) -> i64 {
        self.first + i64::from(self.size)
    }
}

impl Record {
    /// The type byte in the encoding.
    pub fn type_id(&self) -> u8 {
        match self {
            Record::RegisterBroker(_) => 0,
            Record::Topic { .. } => 2,
            Record::Partition(_) => 3,
            Record::Config { .. } => 4,
            Record::PartitionChange(_) => 5,
            Record::FenceBroker { .. } => 7,
            Record::UnfenceBroker { .. } => 8,
            Record::RemoveTopic { .. } => 9,
            Record::ScramCredential(_) => 11,
            Record::RemoveScramCredential { .. } => 12,
            Record::Acl(_) => 13,
            Record::RemoveAcl(_) => 14,
            Record::ClientQuota { .. } => 16,
            Record::ProducerIds(_) => 15,
            Record::ClusterId { .. } => 100,
            Record::Revision { .. } => 101,
            // Kafka's FeatureLevelRecord is apiKey 12, which this encoding gave
            // RemoveScramCredential before features existed.
            Record::FeatureLevel { .. } => 102,
            Record::DelegationToken(_) => 10,
            Record::RemoveDelegationToken { .. } => 26,
        }
    }

    /// The version this build writes (and the highest it reads) for the record's type:
    /// RegisterBroker is version 3 when it lists features, 2 when it names listeners, 1 when
    /// it names a directory (so older registrations keep their bytes), every other type
    /// version 0.
    pub fn version(&self) -> u8 {
        match self {
            Record::RegisterBroker(b) if !b.features.is_empty() => 3,
            Record::RegisterBroker(b) if !b.listeners.is_empty() => 2,
            Record::RegisterBroker(b) if b.directory != [0; 16] => 1,
            _ => 0,
        }
    }
}
