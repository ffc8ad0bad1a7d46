//! `__consumer_offsets` record formats, written and read exactly as Kafka does, so a log
//! written by sluice reads like Kafka's (and tools that dump it understand it).
//!
//! Schemas (apache/kafka `group-coordinator/src/main/resources/common/message/`):
//! - key version 0 or 1: `OffsetCommitKey { group: string, topic: string, partition: int32 }`
//! - key version 2: `GroupMetadataKey { group: string }`
//! - key versions 3, 5, 6, 7, 8 and 16: KIP-848 consumer-group records
//!   (`ConsumerGroupMetadataKey`, `...MemberMetadataKey`, `...TargetAssignmentMetadataKey`,
//!   `...TargetAssignmentMemberKey`, `...CurrentMemberAssignmentKey`,
//!   `...RegularExpressionKey`): in Kafka 4.x these are
//!   "coordinator-key" schemas whose apiKey is the int16 written before the key, with
//!   non-flexible `group: string` then `member: string` (5, 7, 8) or `regex: string` (16).
//!   Their values are in `consumer_records`. Key 4 (`ConsumerGroupPartitionMetadataKey`,
//!   deprecated since 4.1) and share/streams-group keys stay `RecordKey::Other`.
//! - `OffsetCommitValue` v0-4: `offset: int64, leaderEpoch: int32 (v3+), metadata: string,
//!   commitTimestamp: int64, expireTimestamp: int64 (v1 only), topicId (v4 tagged)`; v4+ flexible.
//! - `GroupMetadataValue` v0-4: `protocolType: string, generation: int32, protocol: nullable
//!   string, leader: nullable string, currentStateTimestamp: int64 (v2+), members: [
//!   memberId, groupInstanceId (v3+, nullable), clientId, clientHost, rebalanceTimeout (v1+),
//!   sessionTimeout, subscription: bytes, assignment: bytes ]`; v4+ flexible.
//!
//! Every key and value starts with its int16 schema version. We write OffsetCommitKey v1,
//! OffsetCommitValue v3 (v1 when the commit carries an explicit expire timestamp, as Kafka
//! does), GroupMetadataKey v2 and GroupMetadataValue v3; we read every version above.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::GroupError;

/// A decoded `__consumer_offsets` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKey {
    OffsetCommit {
        group: String,
        topic: String,
        partition: i32,
    },
    GroupMetadata {
        group: String,
    },
    /// Key 3: a consumer group's epoch (and metadata hash).
    ConsumerGroupMetadata {
        group: String,
    },
    /// Key 5: one member's subscription and client metadata.
    ConsumerGroupMember {
        group: String,
        member: String,
    },
    /// Key 6: the epoch of the group's target assignment.
    ConsumerGroupTargetMetadata {
        group: String,
    },
    /// Key 7: one member's partitions in the target assignment.
    ConsumerGroupTargetMember {
        group: String,
        member: String,
    },
    /// Key 8: one member's current epoch, state and partitions.
    ConsumerGroupCurrentAssignment {
        group: String,
        member: String,
    },
    /// Key 16: the topics a subscription regular expression resolved to.
    ConsumerGroupRegex {
        group: String,
        regex: String,
    },
    /// A record type this coordinator does not serve (the deprecated consumer-group partition
    /// metadata, key 4; share and streams group records; anything newer).
    Other {
        version: i16,
    },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommitValue {
    pub offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Set only by OffsetCommit v2-v4 with an explicit retention time.
    pub expire_timestamp: Option<i64>,
}

/// One member inside a `GroupMetadataValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberMetadataValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the selected protocol.
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A classic group's metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetadataValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// -1 when unknown (v0/v1 records).
    pub current_state_timestamp: i64,
    pub members: Vec<MemberMetadataValue>,
}

pub const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
pub const GROUP_METADATA_KEY_VERSION: i16 = 2;
pub const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
pub const OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE: i16 = 1;
pub const GROUP_METADATA_VALUE_VERSION: i16 = 3;
/// KIP-848 key versions: Kafka 4.x's coordinator record apiKeys.
pub const CONSUMER_GROUP_METADATA_KEY_VERSION: i16 = 3;
pub const CONSUMER_GROUP_PARTITION_METADATA_KEY_VERSION: i16 = 4;
pub const CONSUMER_GROUP_MEMBER_KEY_VERSION: i16 = 5;
pub const CONSUMER_GROUP_TARGET_METADATA_KEY_VERSION: i16 = 6;
pub const CONSUMER_GROUP_TARGET_MEMBER_KEY_VERSION: i16 = 7;
pub const CONSUMER_GROUP_CURRENT_ASSIGNMENT_KEY_VERSION: i16 = 8;
pub const CONSUMER_GROUP_REGEX_KEY_VERSION: i16 = 16;

fn put_str(buf: &mut BytesMut, s: &str) {
    // Kafka strings are at most i16::MAX bytes; callers bound every string well below that
    // (group ids and topic names come from i16-length wire strings, metadata is capped).
    let len = s.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len().min(i32::MAX as usize) as i32);
    buf.put_slice(b);
}

/// Key of an offset commit for `(group, topic, partition)`.
pub fn offset_commit_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut buf = BytesMut::with_capacity(2 + 2 + group.len() + 2 + topic.len() + 4);
    buf.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_str(&mut buf, group);
    put_str(&mut buf, topic);
    buf.put_i32(partition);
    buf.freeze()
}

/// Key of a group's metadata record.
pub fn group_metadata_key(group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(GROUP_METADATA_KEY_VERSION);
    put_str(&mut buf, group);
    buf.freeze()
}

/// A key of one string after its version (the group-level consumer-group keys).
fn one_string_key(version: i16, group: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + group.len());
    buf.put_i16(version);
    put_str(&mut buf, group);
    buf.freeze()
}

/// A key of two strings after its version (the per-member and regex keys).
fn two_string_key(version: i16, group: &str, second: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(6 + group.len() + second.len());
    buf.put_i16(version);
    put_str(&mut buf, group);
    put_str(&mut buf, second);
    buf.freeze()
}

/// Key of a consumer group's `ConsumerGroupMetadataValue` (key 3).
pub fn consumer_group_metadata_key(group: &str) -> Bytes {
    one_string_key(CONSUMER_GROUP_METADATA_KEY_VERSION, group)
}

/// Key of a member's `ConsumerGroupMemberMetadataValue` (key 5).
pub fn consumer_group_member_key(group: &str, member: &str) -> Bytes {
    two_string_key(CONSUMER_GROUP_MEMBER_KEY_VERSION, group, member)
}

/// Key of a group's `ConsumerGroupTargetAssignmentMetadataValue` (key 6).
pub fn consumer_group_target_metadata_key(group: &str) -> Bytes {
    one_string_key(CONSUMER_GROUP_TARGET_METADATA_KEY_VERSION, group)
}

/// Key of a member's `ConsumerGroupTargetAssignmentMemberValue` (key 7).
pub fn consumer_group_target_member_key(group: &str, member: &str) -> Bytes {
    two_string_key(CONSUMER_GROUP_TARGET_MEMBER_KEY_VERSION, group, member)
}

/// Key of a member's `ConsumerGroupCurrentMemberAssignmentValue` (key 8).
pub fn consumer_group_current_assignment_key(group: &str, member: &str) -> Bytes {
    two_string_key(CONSUMER_GROUP_CURRENT_ASSIGNMENT_KEY_VERSION, group, member)
}

/// Key of a resolved subscription regex, `ConsumerGroupRegularExpressionValue` (key 16).
pub fn consumer_group_regex_key(group: &str, regex: &str) -> Bytes {
    two_string_key(CONSUMER_GROUP_REGEX_KEY_VERSION, group, regex)
}

/// Value of an offset commit: v3, or v1 when an explicit expire timestamp must be kept.
pub fn offset_commit_value(v: &OffsetCommitValue) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + v.metadata.len());
    match v.expire_timestamp {
        Some(expire) => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRE);
            buf.put_i64(v.offset);
            put_str(&mut buf, &v.metadata);
            buf.put_i64(v.commit_timestamp);
            buf.put_i64(expire);
        }
        None => {
            buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
            buf.put_i64(v.offset);
            buf.put_i32(v.leader_epoch);
            put_str(&mut buf, &v.metadata);
            buf.put_i64(v.commit_timestamp);
        }
    }
    buf.freeze()
}

/// Value of a group's metadata record (v3).
pub fn group_metadata_value(v: &GroupMetadataValue) -> Bytes {
    let members_len: usize = v
        .members
        .iter()
        .map(|m| {
            40 + m.member_id.len()
                + m.group_instance_id.as_ref().map_or(0, |s| s.len())
                + m.client_id.len()
                + m.client_host.len()
                + m.subscription.len()
                + m.assignment.len()
        })
        .sum();
    let mut buf = BytesMut::with_capacity(64 + v.protocol_type.len() + members_len);
    buf.put_i16(GROUP_METADATA_VALUE_VERSION);
    put_str(&mut buf, &v.protocol_type);
    buf.put_i32(v.generation);
    put_nullable_str(&mut buf, v.protocol.as_deref());
    put_nullable_str(&mut buf, v.leader.as_deref());
    buf.put_i64(v.current_state_timestamp);
    buf.put_i32(v.members.len().min(i32::MAX as usize) as i32);
    for m in &v.members {
        put_str(&mut buf, &m.member_id);
        put_nullable_str(&mut buf, m.group_instance_id.as_deref());
        put_str(&mut buf, &m.client_id);
        put_str(&mut buf, &m.client_host);
        buf.put_i32(m.rebalance_timeout_ms);
        buf.put_i32(m.session_timeout_ms);
        put_bytes(&mut buf, &m.subscription);
        put_bytes(&mut buf, &m.assignment);
    }
    buf.freeze()
}

/// Bounds-checked reader over one record; `flexible` switches to compact encodings.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
    flexible: bool,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader {
            buf,
            what,
            flexible: false,
        }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], GroupError> {
        if self.buf.len() < n {
            return Err(GroupError::Truncated {
                what: self.what,
                field,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, GroupError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, GroupError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, GroupError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    fn uvarint(&mut self, field: &'static str) -> Result<u64, GroupError> {
        let mut value = 0u64;
        for i in 0..5 {
            let b = self.take(1, field)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(GroupError::BadLength {
            what: self.what,
            field,
            len: -1,
        })
    }

    /// Length prefix of a string/bytes/array: `None` for null.
    fn len(&mut self, field: &'static str, wide: bool) -> Result<Option<usize>, GroupError> {
        let len: i64 = if self.flexible {
            self.uvarint(field)? as i64 - 1
        } else if wide {
            i64::from(self.i32(field)?)
        } else {
            i64::from(self.i16(field)?)
        };
        if len < 0 {
            return if len == -1 {
                Ok(None)
            } else {
                Err(GroupError::BadLength {
                    what: self.what,
                    field,
                    len,
                })
            };
        }
        Ok(Some(len as usize))
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, GroupError> {
        let Some(len) = self.len(field, false)? else {
            return Ok(None);
        };
        let raw = self.take(len, field)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(GroupError::NotUtf8 {
                what: self.what,
                field,
            }),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, GroupError> {
        match self.opt_string(field)? {
            Some(s) => Ok(s),
            None => Err(GroupError::BadLength {
                what: self.what,
                field,
                len: -1,
            }),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, GroupError> {
        // Kafka writes non-null bytes here; read null as empty rather than refusing the group.
        let Some(len) = self.len(field, true)? else {
            return Ok(Bytes::new());
        };
        Ok(Bytes::copy_from_slice(self.take(len, field)?))
    }

    fn array_len(&mut self, field: &'static str) -> Result<usize, GroupError> {
        let len = self.len(field, true)?.unwrap_or(0);
        // Each element takes at least one byte, so a count beyond the remaining bytes is a lie;
        // refusing it keeps allocation bounded by the record, not by the count.
        if len > self.buf.len() {
            return Err(GroupError::BadLength {
                what: self.what,
                field,
                len: len as i64,
            });
        }
        Ok(len)
    }

    fn skip_tagged(&mut self) -> Result<(), GroupError> {
        if !self.flexible {
            return Ok(());
        }
        let n = self.uvarint("tagged fields")?;
        for _ in 0..n {
            self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            self.take(size, "tag value")?;
        }
        Ok(())
    }
}

/// Decode a `__consumer_offsets` key.
pub fn decode_key(key: &[u8]) -> Result<RecordKey, GroupError> {
    let mut r = Reader::new(key, "key");
    let version = r.i16("version")?;
    match version {
        0 | 1 => {
            r.what = "OffsetCommitKey";
            let group = r.string("group")?;
            let topic = r.string("topic")?;
            let partition = r.i32("partition")?;
            Ok(RecordKey::OffsetCommit {
                group,
                topic,
                partition,
            })
        }
        2 => {
            r.what = "GroupMetadataKey";
            Ok(RecordKey::GroupMetadata {
                group: r.string("group")?,
            })
        }
        CONSUMER_GROUP_METADATA_KEY_VERSION => {
            r.what = "ConsumerGroupMetadataKey";
            Ok(RecordKey::ConsumerGroupMetadata {
                group: r.string("groupId")?,
            })
        }
        CONSUMER_GROUP_MEMBER_KEY_VERSION => {
            r.what = "ConsumerGroupMemberMetadataKey";
            let group = r.string("groupId")?;
            let member = r.string("memberId")?;
            Ok(RecordKey::ConsumerGroupMember { group, member })
        }
        CONSUMER_GROUP_TARGET_METADATA_KEY_VERSION => {
            r.what = "ConsumerGroupTargetAssignmentMetadataKey";
            Ok(RecordKey::ConsumerGroupTargetMetadata {
                group: r.string("groupId")?,
            })
        }
        CONSUMER_GROUP_TARGET_MEMBER_KEY_VERSION => {
            r.what = "ConsumerGroupTargetAssignmentMemberKey";
            let group = r.string("groupId")?;
            let member = r.string("memberId")?;
            Ok(RecordKey::ConsumerGroupTargetMember { group, member })
        }
        CONSUMER_GROUP_CURRENT_ASSIGNMENT_KEY_VERSION => {
            r.what = "ConsumerGroupCurrentMemberAssignmentKey";
            let group = r.string("groupId")?;
            let member = r.string("memberId")?;
            Ok(RecordKey::ConsumerGroupCurrentAssignment { group, member })
        }
        CONSUMER_GROUP_REGEX_KEY_VERSION => {
            r.what = "ConsumerGroupRegularExpressionKey";
            let group = r.string("groupId")?;
            let regex = r.string("regularExpression")?;
            Ok(RecordKey::ConsumerGroupRegex { group, regex })
        }
        // Key 4 (partition metadata) is no longer written by Kafka 4.1 and carries nothing we
        // use; it, share/streams group keys and unknown keys are skipped by the caller.
        v => Ok(RecordKey::Other { version: v }),
    }
}

/// Decode an `OffsetCommitValue` of any version 0-4.
pub fn decode_offset_commit_value(value: &[u8]) -> Result<OffsetCommitValue, GroupError> {
    let what = "OffsetCommitValue";
    let mut r = Reader::new(value, what);
    let version = r.i16("version")?;
    if !(0..=4).contains(&version) {
        return Err(GroupError::UnknownValueVersion { what, version });
    }
    r.flexible = version >= 4;
    let offset = r.i64("offset")?;
    let leader_epoch = if version >= 3 {
        r.i32("leaderEpoch")?
    } else {
        -1
    };
    let metadata = r.string("metadata")?;
    let commit_timestamp = r.i64("commitTimestamp")?;
    let expire_timestamp = if version == 1 {
        Some(r.i64("expireTimestamp")?).filter(|&t| t >= 0)
    } else {
        None
    };
    r.skip_tagged()?;
    Ok(OffsetCommitValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
        expire_timestamp,
    })
}

/// Decode a `GroupMetadataValue` of any version 0-4.
pub fn decode_group_metadata_value(value: &[u8]) -> Result<GroupMetadataValue, GroupError> {
    let what = "GroupMetadataValue";
    let mut r = Reader::new(value, what);
    let version = r.i16("version")?;
    if !(0..=4).contains(&version) {
        return Err(GroupError::UnknownValueVersion { what, version });
    }
    r.flexible = version >= 4;
    let protocol_type = r.string("protocolType")?;
    let generation = r.i32("generation")?;
    let protocol = r.opt_string("protocol")?;
    let leader = r.opt_string("leader")?;
    let current_state_timestamp = if version >= 2 {
        r.i64("currentStateTimestamp")?
    } else {
        -1
    };
    let count = r.array_len("members")?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string("memberId")?;
        let group_instance_id = if version >= 3 {
            r.opt_string("groupInstanceId")?
        } else {
            None
        };
        let client_id = r.string("clientId")?;
        let client_host = r.string("clientHost")?;
        let rebalance_timeout_ms = if version >= 1 {
            r.i32("rebalanceTimeout")?
        } else {
            -1
        };
        let session_timeout_ms = r.i32("sessionTimeout")?;
        // v0 has no rebalance timeout; Kafka then uses the session timeout.
        let rebalance_timeout_ms = if rebalance_timeout_ms < 0 {
            session_timeout_ms
        } else {
            rebalance_timeout_ms
        };
        let subscription = r.bytes("subscription")?;
        let assignment = r.bytes("assignment")?;
        r.skip_tagged()?;
        members.push(MemberMetadataValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.skip_tagged()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

/// Topics named in a `ConsumerProtocolSubscription` (the classic "consumer" protocol's join
/// metadata). Every version (0-3, and later ones by Kafka's forward-compatibility rule) starts
/// with `version: int16, topics: [string]`, so only that prefix is read. `None` when the
/// metadata does not parse; callers then treat every topic as subscribed, as Kafka does.
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut r = Reader::new(metadata, "ConsumerProtocolSubscription");
    let version = r.i16("version").ok()?;
    if version < 0 {
        return None;
    }
    let count = r.array_len("topics").ok()?;
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        topics.push(r.string("topic").ok()?);
    }
    Some(topics)
}

/// Java `String.hashCode` over UTF-16 code units, which Kafka uses to place a group.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The `__consumer_offsets` partition that owns `group_id`: `Utils.abs(hashCode) % count`,
/// where Kafka's `Utils.abs(Integer.MIN_VALUE)` is 0. A non-positive count yields 0.
pub fn partition_for(group_id: &str, partition_count: i32) -> i32 {
    if partition_count <= 0 {
        return 0;
    }
    let h = java_string_hash(group_id);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partition_count
}

/// Finds, while a `__consumer_offsets` partition is read in offset order, the records of
/// groups that do not belong in it ([`partition_for`] names another partition), and says
/// what moving them takes: each such key's latest live value, to append to its group's own
/// partition, and a tombstone for it here.
///
/// Why it exists: sluice before Kafka's placement was adopted placed a group with a
/// negative `hashCode` at `(hash & 0x7fffffff) % n` instead of `Utils.abs(hash) % n`, so about
/// half the groups of an older data dir sit in another partition than Kafka's. Moving the
/// records as they are (not re-encoding the state) keeps commit timestamps, expiry and
/// group metadata exactly; replay is "last record per key wins", so appending a copy after
/// whatever the right partition holds, and a tombstone here, is the move.
#[derive(Debug)]
pub struct PlacementScan {
    partition: i32,
    partition_count: i32,
    /// Misplaced keys in first-seen order, with their group's partition and latest value.
    keys: Vec<(Bytes, i32)>,
    latest: std::collections::HashMap<Bytes, Option<Bytes>>,
    groups: std::collections::BTreeSet<String>,
}

/// What [`PlacementScan::finish`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PlacementMoves {
    /// Records to append, per the partition they belong to, in first-seen key order.
    pub copies: std::collections::BTreeMap<i32, Vec<(Bytes, Bytes)>>,
    /// Keys to tombstone in the scanned partition (after the copies are durable): offset
    /// keys first, then group metadata keys.
    pub tombstones: Vec<Bytes>,
    /// The groups that move.
    pub groups: std::collections::BTreeSet<String>,
}

impl PlacementScan {
    pub fn new(partition: i32, partition_count: i32) -> PlacementScan {
        PlacementScan {
            partition,
            partition_count,
            keys: Vec::new(),
            latest: std::collections::HashMap::new(),
            groups: std::collections::BTreeSet::new(),
        }
    }

    /// One record of the partition, in offset order. Keys that do not decode, or of record
    /// types this coordinator does not serve, stay where they are.
    pub fn record(&mut self, key: &Bytes, value: Option<&Bytes>) {
        let group = match decode_key(key) {
            Ok(RecordKey::OffsetCommit { group, .. }) | Ok(RecordKey::GroupMetadata { group }) => {
                group
            }
            _ => return,
        };
        let home = partition_for(&group, self.partition_count);
        if home == self.partition {
            return;
        }
        // Copies, not slices: a slice would keep the whole read buffer it came in alive, and
        // a scan of an offsets partition reads all of it.
        let key = Bytes::copy_from_slice(key);
        if !self.latest.contains_key(&key) {
            self.keys.push((key.clone(), home));
        }
        self.latest
            .insert(key, value.map(|v| Bytes::copy_from_slice(v)));
        self.groups.insert(group);
    }

    pub fn finish(mut self) -> PlacementMoves {
        let mut out = PlacementMoves::default();
        let mut metadata_tombstones = Vec::new();
        for (key, home) in self.keys {
            // A key whose latest record is a tombstone is already gone: nothing to move.
            if let Some(Some(value)) = self.latest.remove(&key) {
                out.copies
                    .entry(home)
                    .or_default()
                    .push((key.clone(), value));
                if matches!(decode_key(&key), Ok(RecordKey::GroupMetadata { .. })) {
                    metadata_tombstones.push(key);
                } else {
                    out.tombstones.push(key);
                }
            }
        }
        // Offsets before group metadata: replay of a metadata tombstone while the group still
        // has offsets keeps an offsets-only group, which later offset tombstones never remove.
        out.tombstones.extend(metadata_tombstones);
        out.groups = self.groups;
        out
    }
}
