//! The topic table (names, ids, partition counts and replicas, config overrides) and its
//! cached copy on disk.
//!
//! The table follows the controller log (`metadata_sync.rs`): shard 0 alone adopts each
//! state derived from it, caches it in `cluster/state.json` (write to a temporary file,
//! fsync, rename, fsync the directory; on a blocking thread, see `controller.rs`) and then
//! sends the change ([`StateDelta`]) to every shard, each of which keeps its own copy for
//! lock-free lookups on the produce/fetch path. The cached file is what a start serves
//! before the log has replayed, and, in a data directory from before the log, what the log
//! is bootstrapped from.
//! Beside the state file sits a space reserve (`SPACE_RESERVE_BYTES`), released when the
//! disk is full so that the state can still change: deleting topics is how space comes back.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::produce_rules::TopicRules;

// The limits are the cluster metadata's (`sluice_meta::limits`), so a state one side accepts
// the other does too.
pub use sluice_meta::limits::{
    PARTITIONS_PER_NODE_MAX, PARTITIONS_PER_TOPIC_MAX, RECORDS_PER_REQUEST_MAX, TOPICS_MAX,
    TOPIC_NAME_BYTES_MAX,
};
const _: () =
    assert!(PARTITIONS_PER_NODE_MAX <= sluice_shard::table::PARTITIONS_MAX_DEFAULT as u64);

/// A topic as the broker knows it. Serialized into the cluster state file and into the
/// cross-shard table update.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct TopicRecord {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// Internal topics (`__consumer_offsets`) are flagged in Metadata.
    pub internal: bool,
    /// Each partition's replicas (node ids, the preferred leader first), from the cluster
    /// metadata. Empty: every partition is on this node alone (a cluster of one, and every
    /// state written before replication existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<i32>>,
    /// The partitions with a reassignment in progress (Kafka's adding/removing replicas;
    /// `replicas` then holds the target followed by the leaving ones), in partition order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moves: Vec<PartitionMove>,
}

/// A partition's reassignment in progress, as the controller's image has it.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct PartitionMove {
    pub partition: i32,
    /// Joining replicas (learners until caught up).
    pub adding: Vec<i32>,
    /// Leaving replicas (the last ones of `replicas`).
    pub removing: Vec<i32>,
    /// The partition's revision: the controller completes the reassignment only when its
    /// leader reports this one done.
    pub revision: u64,
}

impl TopicRecord {
    /// The replicas of `partition` (this node alone when the record assigns none).
    pub fn replicas_of(&self, partition: i32, this_node: i32) -> Vec<i32> {
        match self.replicas.get(partition as usize) {
            Some(r) if partition >= 0 => r.clone(),
            _ => vec![this_node],
        }
    }

    /// The reassignment of `partition` in progress, if any.
    pub fn move_of(&self, partition: i32) -> Option<&PartitionMove> {
        self.moves.iter().find(|m| m.partition == partition)
    }

    /// The replicas `partition` is moving to (all of them when no reassignment is under
    /// way): what its Raft group's voters must become.
    pub fn target_of(&self, partition: i32, this_node: i32) -> Vec<i32> {
        let mut r = self.replicas_of(partition, this_node);
        if let Some(m) = self.move_of(partition) {
            r.retain(|n| !m.removing.contains(n));
        }
        r
    }

    /// The replicas `partition` had before its reassignment in progress began (all of them
    /// when none is): the voters a joining replica starts from.
    pub fn original_of(&self, partition: i32, this_node: i32) -> Vec<i32> {
        let mut r = self.replicas_of(partition, this_node);
        if let Some(m) = self.move_of(partition) {
            r.retain(|n| !m.adding.contains(n));
        }
        r
    }

    /// Whether node `node` holds a replica of `partition`.
    pub fn hosted_on(&self, partition: i32, node: i32) -> bool {
        if self.replicas.is_empty() {
            return true;
        }
        partition >= 0
            && self
                .replicas
                .get(partition as usize)
                .is_some_and(|r| r.contains(&node))
    }
}

/// Everything the controller persists.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Serialize,
    Deserialize,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
pub struct ClusterState {
    pub cluster_id: String,
    pub node_id: i32,
    pub topics: Vec<TopicRecord>,
    /// Dynamic broker configs in effect on this node (AlterConfigs on the broker resource):
    /// `default_broker_configs` with this node's own `node_broker_configs` over them.
    pub broker_configs: BTreeMap<String, String>,
    /// The cluster-wide dynamic broker configs (broker resource named ""), kept apart from
    /// the per-node ones for DescribeConfigs' sources and for AlterConfigs on either.
    #[serde(default)]
    pub default_broker_configs: BTreeMap<String, String>,
    /// Each node's own dynamic broker configs (broker resource named by its id), by node.
    #[serde(default)]
    pub node_broker_configs: BTreeMap<i32, BTreeMap<String, String>>,
    /// Producer ids below this may have been handed out; allocation resumes here.
    pub producer_id_next_block: i64,
    /// Bumped on every change.
    pub version: u64,
    /// The controller-log index this state was derived from (0: none yet). A node never
    /// adopts an image older than the state it already serves: a restarted node whose log
    /// (or pull) has not caught up yet would otherwise drop the partitions it hosts.
    #[serde(default)]
    pub metadata_index: u64,
}

/// `ClusterState`'s broker configs: in effect on the node, cluster-wide, per node.
pub type BrokerConfigs = (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    BTreeMap<i32, BTreeMap<String, String>>,
);

/// What one controller change did to the state, as it travels to the other shards: the
/// topics created or changed, the ones deleted, and the broker configs if they changed. Its
/// size follows the change, not the whole state (every shard already holds the rest).
#[derive(Clone, Debug, Default, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StateDelta {
    /// The version this delta applies to, and the one it makes.
    pub from_version: u64,
    pub to_version: u64,
    /// Created topics (appended, in this order) and changed ones (replaced in place).
    pub upserts: Vec<TopicRecord>,
    /// Ids of deleted topics.
    pub removed: Vec<[u8; 16]>,
    /// When any changed: the broker configs in effect, the cluster-wide ones, and each
    /// node's own (`ClusterState`'s three fields).
    pub broker_configs: Option<BrokerConfigs>,
    pub producer_id_next_block: i64,
    pub cluster_id: String,
    pub metadata_index: u64,
    /// Take the controller's whole persisted state instead (a change too large for one
    /// frame; see `Controller::adopt`).
    pub resync: bool,
}

impl StateDelta {
    /// The delta that turns `old` into `new` (linear in the number of topics).
    pub fn between(old: &ClusterState, new: &ClusterState) -> StateDelta {
        let before: HashMap<[u8; 16], &TopicRecord> =
            old.topics.iter().map(|t| (t.id, t)).collect();
        let after: HashMap<[u8; 16], &TopicRecord> = new.topics.iter().map(|t| (t.id, t)).collect();
        StateDelta {
            from_version: old.version,
            to_version: new.version,
            upserts: new
                .topics
                .iter()
                .filter(|t| before.get(&t.id).is_none_or(|b| *b != *t))
                .cloned()
                .collect(),
            removed: old
                .topics
                .iter()
                .filter(|t| !after.contains_key(&t.id))
                .map(|t| t.id)
                .collect(),
            broker_configs: (old.broker_configs != new.broker_configs
                || old.default_broker_configs != new.default_broker_configs
                || old.node_broker_configs != new.node_broker_configs)
                .then(|| {
                    (
                        new.broker_configs.clone(),
                        new.default_broker_configs.clone(),
                        new.node_broker_configs.clone(),
                    )
                }),
            producer_id_next_block: new.producer_id_next_block,
            cluster_id: new.cluster_id.clone(),
            metadata_index: new.metadata_index,
            resync: false,
        }
    }

    /// A delta that only tells a shard to take the controller's whole persisted state (at
    /// `to_version`).
    pub fn resync(from_version: u64, to_version: u64) -> StateDelta {
        StateDelta {
            from_version,
            to_version,
            upserts: Vec::new(),
            removed: Vec::new(),
            broker_configs: None,
            producer_id_next_block: 0,
            cluster_id: String::new(),
            metadata_index: 0,
            resync: true,
        }
    }

    /// The state after this delta, if `state` is the one it was made from.
    pub fn apply(&self, state: &ClusterState) -> Result<ClusterState, String> {
        if self.resync {
            return Err(format!(
                "topic table update to version {} is too large to send",
                self.to_version
            ));
        }
        if state.version != self.from_version {
            return Err(format!(
                "topic table update from version {} to {} does not follow this shard's version {}",
                self.from_version, self.to_version, state.version
            ));
        }
        let mut next = state.clone();
        if !self.removed.is_empty() {
            let removed: std::collections::HashSet<&[u8; 16]> = self.removed.iter().collect();
            next.topics.retain(|t| !removed.contains(&t.id));
        }
        let mut at: HashMap<[u8; 16], usize> = next
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i))
            .collect();
        for t in &self.upserts {
            match at.get(&t.id) {
                Some(&i) => next.topics[i] = t.clone(),
                None => {
                    at.insert(t.id, next.topics.len());
                    next.topics.push(t.clone());
                }
            }
        }
        if let Some((effective, default, nodes)) = &self.broker_configs {
            next.broker_configs = effective.clone();
            next.default_broker_configs = default.clone();
            next.node_broker_configs = nodes.clone();
        }
        next.producer_id_next_block = self.producer_id_next_block;
        next.cluster_id = self.cluster_id.clone();
        next.metadata_index = self.metadata_index;
        next.version = self.to_version;
        Ok(next)
    }
}

/// A shard's copy of the topic table, indexed for lookups, with each topic's produce rules
/// derived from its configs once per change (produce parses no configs).
#[derive(Default, Debug)]
pub struct TopicTable {
    pub state: ClusterState,
    by_name: HashMap<String, usize>,
    by_id: HashMap<[u8; 16], usize>,
    /// `rules[i]` belongs to `state.topics[i]`; rebuilt whenever topics or broker configs
    /// change (every change goes through `reindex` or `insert`).
    rules: Vec<TopicRules>,
}

impl TopicTable {
    pub fn new(state: ClusterState) -> TopicTable {
        let mut t = TopicTable {
            state,
            ..TopicTable::default()
        };
        t.reindex();
        t
    }

    fn reindex(&mut self) {
        self.by_name = self
            .state
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        self.by_id = self
            .state
            .topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id, i))
            .collect();
        let broker = &self.state.broker_configs;
        self.rules = self
            .state
            .topics
            .iter()
            .map(|t| TopicRules::from_configs(t.internal, &t.configs, broker))
            .collect();
    }

    /// A topic by name with its produce rules.
    pub fn get_with_rules(&self, name: &str) -> Option<(&TopicRecord, &TopicRules)> {
        let &i = self.by_name.get(name)?;
        Some((&self.state.topics[i], &self.rules[i]))
    }

    /// A topic by id with its produce rules.
    pub fn get_by_id_with_rules(&self, id: &[u8; 16]) -> Option<(&TopicRecord, &TopicRules)> {
        let &i = self.by_id.get(id)?;
        Some((&self.state.topics[i], &self.rules[i]))
    }

    pub fn get(&self, name: &str) -> Option<&TopicRecord> {
        self.by_name.get(name).map(|&i| &self.state.topics[i])
    }

    pub fn get_by_id(&self, id: &[u8; 16]) -> Option<&TopicRecord> {
        self.by_id.get(id).map(|&i| &self.state.topics[i])
    }

    pub fn topics(&self) -> &[TopicRecord] {
        &self.state.topics
    }

    pub fn version(&self) -> u64 {
        self.state.version
    }

    /// Controller only: adds a topic.
    pub fn insert(&mut self, topic: TopicRecord) -> Result<(), BrokerError> {
        if self.by_name.contains_key(&topic.name) {
            return Err(BrokerError::TopicExists(topic.name));
        }
        if self.state.topics.len() >= TOPICS_MAX {
            return Err(BrokerError::Limit {
                what: "topics",
                max: TOPICS_MAX as u64,
            });
        }
        let at = self.state.topics.len();
        self.by_name.insert(topic.name.clone(), at);
        self.by_id.insert(topic.id, at);
        self.rules.push(TopicRules::from_configs(
            topic.internal,
            &topic.configs,
            &self.state.broker_configs,
        ));
        self.state.topics.push(topic);
        self.state.version += 1;
        Ok(())
    }

    /// Controller only: removes a topic, returning it.
    pub fn remove(&mut self, name: &str) -> Option<TopicRecord> {
        let i = *self.by_name.get(name)?;
        let t = self.state.topics.remove(i);
        self.state.version += 1;
        self.reindex();
        Some(t)
    }

    /// Controller only: changes a topic in place.
    pub fn update(&mut self, name: &str, f: impl FnOnce(&mut TopicRecord)) -> bool {
        let Some(&i) = self.by_name.get(name) else {
            return false;
        };
        f(&mut self.state.topics[i]);
        self.state.version += 1;
        self.reindex();
        true
    }

    /// Controller only: changes broker-level state.
    pub fn update_state(&mut self, f: impl FnOnce(&mut ClusterState)) {
        f(&mut self.state);
        self.state.version += 1;
        self.reindex();
    }
}

/// Kafka's topic name rule (one rule for the broker and the cluster metadata).
pub use sluice_meta::limits::validate_topic_name;

/// Where the cluster state lives under the data directory.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("state.json")
}

/// Loads the cluster state, or a fresh one for a new data directory.
pub fn load_state(data_dir: &Path, node_id: i32) -> Result<ClusterState, BrokerError> {
    let path = state_path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| BrokerError::State {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterState {
            cluster_id: new_cluster_id(),
            node_id,
            ..ClusterState::default()
        }),
        Err(e) => Err(BrokerError::Io {
            op: "read",
            path,
            source: e,
        }),
    }
}

/// Persists the cluster state atomically and durably.
pub fn store_state(data_dir: &Path, state: &ClusterState) -> Result<(), BrokerError> {
    let path = state_path(data_dir);
    let dir = path.parent().expect("state file has a parent");
    let io = |op: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |e| BrokerError::Io {
            op,
            path: p,
            source: e,
        }
    };
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let tmp = dir.join("state.json.tmp");
    let bytes = serde_json::to_vec_pretty(state).expect("cluster state serializes");
    let write = || -> Result<(), BrokerError> {
        let mut f = fs::File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("fsync", &tmp))
    };
    with_space_reserve(dir, write)?;
    fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))?;
    // Space may have been freed since the reserve was spent (topics deleted): take it back.
    ensure_space_reserve(dir);
    Ok(())
}

/// Bytes kept allocated beside the cluster state so that it can still be written when the
/// disk is full: deleting topics, the way to free space, needs a state write first.
pub const SPACE_RESERVE_BYTES: u64 = 8 << 20;
const SPACE_RESERVE_FILE: &str = "space.reserve";

/// Creates (or completes) the space reserve in `dir`. Best effort: a disk already full just
/// has no reserve, and says so.
pub fn ensure_space_reserve(dir: &Path) {
    let path = dir.join(SPACE_RESERVE_FILE);
    if fs::metadata(&path).is_ok_and(|m| m.len() >= SPACE_RESERVE_BYTES) {
        return;
    }
    let reserved = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .and_then(|f| {
            // No flags: allocates the blocks and sets the size.
            let flags = rustix::fs::FallocateFlags::empty();
            rustix::fs::fallocate(&f, flags, 0, SPACE_RESERVE_BYTES)?;
            f.sync_all()
        });
    if let Err(e) = reserved {
        let _ = fs::remove_file(&path);
        log::warn!(
            "cannot keep a {} MiB space reserve at {}: {e}",
            SPACE_RESERVE_BYTES >> 20,
            path.display()
        );
    }
}

fn is_disk_full(e: &BrokerError) -> bool {
    matches!(e, BrokerError::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
}

/// Runs `write`; when it fails for lack of space, releases the space reserve in `dir` and
/// tries once more.
fn with_space_reserve(
    dir: &Path,
    mut write: impl FnMut() -> Result<(), BrokerError>,
) -> Result<(), BrokerError> {
    match write() {
        Err(e) if is_disk_full(&e) => {
            let path = dir.join(SPACE_RESERVE_FILE);
            if fs::remove_file(&path).is_err() {
                return Err(e);
            }
            log::warn!(
                "disk full: released the {} MiB space reserve to store the cluster state ({e}); \
                 delete topics or records to free space",
                SPACE_RESERVE_BYTES >> 20
            );
            write()
        }
        other => other,
    }
}

/// A random cluster id in Kafka's format (22 characters of URL-safe base64 of a UUID).
pub fn new_cluster_id() -> String {
    base64_url(uuid::Uuid::new_v4().as_bytes())
}

/// URL-safe base64 without padding (Kafka's `Uuid.toString` for 16 bytes).
pub(crate) fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

/// A fresh topic id (never the all-zero id, which Kafka reserves).
pub fn new_topic_id() -> [u8; 16] {
    loop {
        let id = *uuid::Uuid::new_v4().as_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A move in progress: the replicas are the target then the leaving ones; the target
    /// and the original set follow from the adding and removing ones, and a partition
    /// without a move is its own target and original.
    #[test]
    fn a_move_gives_the_target_and_the_original_replicas() {
        let t = TopicRecord {
            name: "t".into(),
            id: [1; 16],
            partitions: 2,
            configs: BTreeMap::new(),
            internal: false,
            replicas: vec![vec![2, 3, 1], vec![1, 2]],
            moves: vec![PartitionMove {
                partition: 0,
                adding: vec![3],
                removing: vec![1],
                revision: 9,
            }],
        };
        assert_eq!(t.target_of(0, 5), vec![2, 3]);
        assert_eq!(t.original_of(0, 5), vec![2, 1]);
        assert_eq!(t.move_of(0).map(|m| m.revision), Some(9));
        assert_eq!(
            (t.target_of(1, 5), t.original_of(1, 5)),
            (vec![1, 2], vec![1, 2])
        );
        assert!(t.move_of(1).is_none());
        assert!(t.hosted_on(0, 3) && t.hosted_on(0, 1) && !t.hosted_on(1, 3));
    }

    /// Produce rules are derived when the table changes and follow every kind of change.
    #[test]
    fn produce_rules_follow_the_table() {
        let topic = |name: &str, configs: &[(&str, &str)]| TopicRecord {
            name: name.into(),
            id: new_topic_id(),
            partitions: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            internal: name == "__consumer_offsets",
            replicas: Vec::new(),
            moves: Vec::new(),
        };
        let after =
            |t: &TopicTable, name: &str| t.get_with_rules(name).unwrap().1.timestamp_after_max_ms;
        let state = ClusterState {
            topics: vec![topic("a", &[("message.timestamp.after.max.ms", "5")])],
            ..ClusterState::default()
        };
        let mut t = TopicTable::new(state);
        assert_eq!(after(&t, "a"), 5, "built with the table");
        t.insert(topic("b", &[])).unwrap();
        assert_eq!(after(&t, "b"), 3_600_000, "inserted");
        let id = t.get("b").unwrap().id;
        assert_eq!(t.get_by_id_with_rules(&id).unwrap().0.name, "b");
        t.insert(topic("__consumer_offsets", &[])).unwrap();
        assert!(t.get_with_rules("__consumer_offsets").unwrap().1.internal);
        t.update("a", |r| {
            r.configs
                .insert("message.timestamp.after.max.ms".into(), "6".into());
        });
        assert_eq!(after(&t, "a"), 6, "a topic override changed");
        t.update_state(|s| {
            s.broker_configs
                .insert("log.message.timestamp.after.max.ms".into(), "9".into());
        });
        assert_eq!(after(&t, "b"), 9, "a broker default changed");
        assert_eq!(after(&t, "a"), 6, "the topic's own value still wins");
        t.remove("a");
        assert!(t.get_with_rules("a").is_none());
        assert_eq!(after(&t, "b"), 9, "indexes and rules stay aligned");
    }

    #[test]
    fn replicas_default_to_this_node_alone() {
        let mut t = TopicRecord {
            name: "t".into(),
            id: new_topic_id(),
            partitions: 2,
            configs: BTreeMap::new(),
            internal: false,
            replicas: Vec::new(),
            moves: Vec::new(),
        };
        assert!(t.hosted_on(0, 7) && t.hosted_on(1, 7));
        assert_eq!(t.replicas_of(1, 7), vec![7]);
        // A state file written before replicas existed reads as before, and one without
        // replicas is written as before.
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("replicas"), "{json}");
        assert_eq!(serde_json::from_str::<TopicRecord>(&json).unwrap(), t);
        t.replicas = vec![vec![1, 2], vec![2, 3]];
        assert!(t.hosted_on(0, 1) && !t.hosted_on(1, 1) && !t.hosted_on(-1, 2));
        assert!(!t.hosted_on(2, 2), "no such partition");
        assert_eq!(t.replicas_of(1, 1), vec![2, 3]);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<TopicRecord>(&json).unwrap(), t);
    }

    #[test]
    fn a_delta_turns_the_old_state_into_the_new() {
        let topic = |name: &str, partitions| TopicRecord {
            name: name.into(),
            id: new_topic_id(),
            partitions,
            configs: BTreeMap::new(),
            internal: false,
            replicas: Vec::new(),
            moves: Vec::new(),
        };
        let mut old = ClusterState {
            version: 7,
            ..ClusterState::default()
        };
        old.topics = vec![topic("a", 1), topic("b", 2), topic("c", 3)];
        let mut new = old.clone();
        new.version = 8;
        new.topics.remove(1);
        new.topics[1].partitions = 5;
        new.topics[0]
            .configs
            .insert("retention.ms".into(), "1".into());
        new.topics.push(topic("d", 1));
        new.topics.push(topic("e", 1));
        new.broker_configs
            .insert("log.retention.ms".into(), "5".into());
        let delta = StateDelta::between(&old, &new);
        assert_eq!(delta.upserts.len(), 4);
        assert_eq!(delta.removed.len(), 1);
        assert_eq!(delta.apply(&old).unwrap(), new);
        assert!(
            delta.apply(&new).is_err(),
            "applies only to the version it follows"
        );
        let same = StateDelta::between(&new, &new);
        assert!(
            same.upserts.is_empty() && same.removed.is_empty() && same.broker_configs.is_none()
        );
        // Another node's own config changes nothing in effect here, but still travels.
        let mut other = new.clone();
        other.version = 9;
        other
            .node_broker_configs
            .entry(3)
            .or_default()
            .insert("log.retention.ms".into(), "6".into());
        let delta = StateDelta::between(&new, &other);
        assert!(delta.broker_configs.is_some());
        assert_eq!(delta.apply(&new).unwrap(), other);
    }

    #[test]
    fn names() {
        assert!(validate_topic_name("a.b_c-1").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert_eq!(new_cluster_id().len(), 22);
    }

    #[test]
    fn state_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TopicTable::new(load_state(dir.path(), 1).unwrap());
        t.insert(TopicRecord {
            name: "a".into(),
            id: new_topic_id(),
            partitions: 3,
            configs: BTreeMap::new(),
            internal: false,
            replicas: Vec::new(),
            moves: Vec::new(),
        })
        .unwrap();
        assert!(t
            .insert(TopicRecord {
                name: "a".into(),
                id: new_topic_id(),
                partitions: 1,
                configs: BTreeMap::new(),
                internal: false,
                replicas: Vec::new(),
                moves: Vec::new(),
            })
            .is_err());
        store_state(dir.path(), &t.state).unwrap();
        let back = TopicTable::new(load_state(dir.path(), 1).unwrap());
        assert_eq!(back.state, t.state);
        assert_eq!(back.get("a").unwrap().partitions, 3);
        let reserve = state_path(dir.path()).with_file_name(SPACE_RESERVE_FILE);
        assert_eq!(fs::metadata(&reserve).unwrap().len(), SPACE_RESERVE_BYTES);
    }

    #[test]
    fn a_full_disk_spends_the_reserve_once_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        ensure_space_reserve(dir.path());
        let reserve = dir.path().join(SPACE_RESERVE_FILE);
        assert!(reserve.exists());
        let full = || BrokerError::Io {
            op: "write",
            path: dir.path().into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        // First attempt fails for space, the retry (after the reserve is gone) succeeds.
        let mut calls = 0;
        with_space_reserve(dir.path(), || {
            calls += 1;
            if calls == 1 {
                Err(full())
            } else {
                Ok(())
            }
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert!(!reserve.exists(), "the reserve was spent");
        // No reserve left: the error comes back after one attempt.
        let mut calls = 0;
        let err = with_space_reserve(dir.path(), || {
            calls += 1;
            Err(full())
        })
        .unwrap_err();
        assert!(is_disk_full(&err));
        assert_eq!(calls, 1);
        // Other errors are not retried.
        let mut calls = 0;
        ensure_space_reserve(dir.path());
        let _ = with_space_reserve(dir.path(), || {
            calls += 1;
            Err(BrokerError::Config("x".into()))
        });
        assert_eq!(calls, 1);
        assert!(reserve.exists(), "kept for a real shortage");
    }
}
