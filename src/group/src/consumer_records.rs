//! Values of the KIP-848 consumer-group records of `__consumer_offsets`, written and read
//! byte for byte as Apache Kafka 4.1 does, so a log written by sluice reads like Kafka's.
//!
//! Schemas (apache/kafka `group-coordinator/src/main/resources/common/message/`); the keys are
//! in `records` (key version = the schema's apiKey):
//! - key 3 `ConsumerGroupMetadataValue` v0: `Epoch: int32`, tagged `MetadataHash: int64`
//!   (tag 0, default 0, added in 4.1 by KIP-1101).
//! - key 4 `ConsumerGroupPartitionMetadataValue`: deprecated by KIP-1101; Kafka 4.1 only
//!   deletes it, so only its key is decoded (to skip it).
//! - key 5 `ConsumerGroupMemberMetadataValue` v0: `InstanceId: nullable string, RackId:
//!   nullable string, ClientId: string, ClientHost: string, SubscribedTopicNames: [string],
//!   SubscribedTopicRegex: nullable string, RebalanceTimeoutMs: int32, ServerAssignor:
//!   nullable string`, tagged `ClassicMemberMetadata` (tag 0, nullable struct, default null:
//!   `SessionTimeoutMs: int32, SupportedProtocols: [Name: string, Metadata: bytes]`).
//! - key 6 `ConsumerGroupTargetAssignmentMetadataValue` v0: `AssignmentEpoch: int32`, tagged
//!   `AssignmentTimestamp: int64` (tag 0, default 0; added after 4.1 by KIP-1263).
//! - key 7 `ConsumerGroupTargetAssignmentMemberValue` v0: `TopicPartitions: [TopicId: uuid,
//!   Partitions: [int32]]`.
//! - key 8 `ConsumerGroupCurrentMemberAssignmentValue` v0: `MemberEpoch: int32,
//!   PreviousMemberEpoch: int32, State: int8, AssignedPartitions: [TopicPartitions],
//!   PartitionsPendingRevocation: [TopicPartitions]`.
//! - key 16 `ConsumerGroupRegularExpressionValue` v0: `Topics: [string], Version: int64,
//!   Timestamp: int64`.
//!
//! Every value is an int16 version (0, the only one Kafka 4.x defines for these) followed by
//! the flexible encoding: compact strings/arrays/bytes (unsigned varint of length + 1, 0 for
//! null), and a tagged-field section closing every struct. Kafka writes a tagged field only
//! when it differs from its default, so we do too; tags we do not model (Kafka after 4.1
//! adds `CreationTimeMs` to the group metadata and `AssignmentEpochs` to `TopicPartitions`)
//! are skipped on read, which is how Kafka 4.1 itself reads them.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::error::GroupError;

/// Kafka's `TopicPartitions` arrays: a topic id and its partition indexes.
pub type TopicPartitions = Vec<(Uuid, Vec<i32>)>;

/// The value version Kafka 4.1 writes (and the only one it, or any 4.x, defines) for every
/// record of this module.
pub const CONSUMER_GROUP_VALUE_VERSION: i16 = 0;

/// Kafka's generated readers refuse strings longer than this (`0x7fff`) and its writers
/// cannot write them; strings we write are cut to it so the record stays readable.
const STRING_BYTES_MAX: usize = 0x7fff;

/// Key 3: a consumer group's epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerGroupMetadataValue {
    pub epoch: i32,
    /// Hash of the subscribed topics' metadata (KIP-1101); 0 when not computed, and then not
    /// written, exactly as Kafka omits a tagged field at its default.
    pub metadata_hash: i64,
}

/// One protocol a classic-protocol member of a consumer group supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicProtocol {
    pub name: String,
    pub metadata: Bytes,
}

/// What Kafka keeps of a member that joined a consumer group with the classic protocol
/// (online upgrade, KIP-848); absent for members using the consumer protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassicMemberMetadata {
    pub session_timeout_ms: i32,
    pub supported_protocols: Vec<ClassicProtocol>,
}

/// Key 5: a member's client and subscription metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMemberMetadataValue {
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    /// Kafka's tagged `ClassicMemberMetadata` (tag 0): set for a member that speaks the classic
    /// protocol inside a consumer group (online migration).
    pub classic_member_metadata: Option<ClassicMemberMetadata>,
}

impl Default for ConsumerGroupMemberMetadataValue {
    fn default() -> Self {
        ConsumerGroupMemberMetadataValue {
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            // The schema's default.
            rebalance_timeout_ms: -1,
            classic_member_metadata: None,
        }
    }
}

/// Key 6: the epoch the group's target assignment was computed at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMetadataValue {
    pub assignment_epoch: i32,
    /// Tagged `AssignmentTimestamp` (tag 0) that Kafka added after 4.1 (KIP-1263). Kafka 4.1
    /// never writes it; left at 0 it is not written, giving 4.1's exact bytes.
    pub assignment_timestamp: i64,
}

/// Key 7: one member's partitions in the target assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerGroupTargetAssignmentMemberValue {
    pub topic_partitions: TopicPartitions,
}

/// Key 8: one member's current epoch, reconciliation state and partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerGroupCurrentMemberAssignmentValue {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// Kafka's `MemberState` value.
    pub state: i8,
    pub assigned_partitions: TopicPartitions,
    pub partitions_pending_revocation: TopicPartitions,
}

/// Key 16: the topics a subscription regular expression resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerGroupRegularExpressionValue {
    pub topics: Vec<String>,
    /// The metadata image version the regex was resolved against.
    pub version: i64,
    pub timestamp: i64,
}

// ---- writing ------------------------------------------------------------------------------

fn put_uvarint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Compact length prefix (length + 1; 0 is null).
fn put_compact_len(buf: &mut BytesMut, len: usize) {
    put_uvarint(buf, len as u64 + 1);
}

fn put_compact_str(buf: &mut BytesMut, s: &str) {
    // Cut at a char boundary: a split character would make the record undecodable.
    let mut len = s.len().min(STRING_BYTES_MAX);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    put_compact_len(buf, len);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_compact_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_compact_str(buf, s),
        None => buf.put_u8(0),
    }
}

fn put_compact_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_compact_len(buf, b.len());
    buf.put_slice(b);
}

fn put_compact_strs(buf: &mut BytesMut, v: &[String]) {
    put_compact_len(buf, v.len());
    for s in v {
        put_compact_str(buf, s);
    }
}

fn put_topic_partitions(buf: &mut BytesMut, tps: &TopicPartitions) {
    put_compact_len(buf, tps.len());
    for (topic_id, partitions) in tps {
        buf.put_slice(topic_id.as_bytes());
        put_compact_len(buf, partitions.len());
        for p in partitions {
            buf.put_i32(*p);
        }
        // No tagged fields in the element.
        buf.put_u8(0);
    }
}

/// A tagged-field section holding at most one int64 field at `tag`, written only when it is
/// not `default` (Kafka's rule).
fn put_tagged_i64(buf: &mut BytesMut, tag: u64, value: i64, default: i64) {
    if value == default {
        buf.put_u8(0);
    } else {
        put_uvarint(buf, 1);
        put_uvarint(buf, tag);
        put_uvarint(buf, 8);
        buf.put_i64(value);
    }
}

fn value_buf(capacity: usize) -> BytesMut {
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i16(CONSUMER_GROUP_VALUE_VERSION);
    buf
}

fn topic_partitions_len(tps: &TopicPartitions) -> usize {
    5 + tps.iter().map(|(_, p)| 22 + 4 * p.len()).sum::<usize>()
}

// ---- reading ------------------------------------------------------------------------------

/// Bounds-checked cursor over one value. Every value here is flexible-only, so this is a
/// compact-encoding sibling of `records`' reader rather than a reuse of it.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
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

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], GroupError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    fn i8(&mut self, field: &'static str) -> Result<i8, GroupError> {
        Ok(i8::from_be_bytes(self.array(field)?))
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, GroupError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, GroupError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn i64(&mut self, field: &'static str) -> Result<i64, GroupError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    fn uuid(&mut self, field: &'static str) -> Result<Uuid, GroupError> {
        // Kafka writes a uuid as its most then least significant int64, big-endian: the RFC
        // byte order `Uuid::from_bytes` takes.
        Ok(Uuid::from_bytes(self.array(field)?))
    }

    fn bad_length(&self, field: &'static str, len: i64) -> GroupError {
        GroupError::BadLength {
            what: self.what,
            field,
            len,
        }
    }

    /// Unsigned varint of at most 32 bits, as Kafka's `readUnsignedVarint` (5 bytes at most).
    fn uvarint(&mut self, field: &'static str) -> Result<u32, GroupError> {
        let mut value = 0u64;
        for i in 0..5 {
            let b = self.take(1, field)?[0];
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(value).map_err(|_| self.bad_length(field, value as i64));
            }
        }
        Err(self.bad_length(field, -1))
    }

    /// Compact length prefix: `None` for null. A length past the bytes left is refused here
    /// (every byte or element takes at least one byte), so a lying count never sizes an
    /// allocation.
    fn compact_len(&mut self, field: &'static str) -> Result<Option<usize>, GroupError> {
        let raw = self.uvarint(field)?;
        let Some(len) = raw.checked_sub(1) else {
            return Ok(None);
        };
        let len = len as usize;
        if len > self.buf.len() {
            return Err(self.bad_length(field, len as i64));
        }
        Ok(Some(len))
    }

    /// A compact length where the schema allows no null: Kafka's generated readers refuse
    /// null there, and so do we.
    fn required_len(&mut self, field: &'static str) -> Result<usize, GroupError> {
        self.compact_len(field)?
            .ok_or_else(|| self.bad_length(field, -1))
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, GroupError> {
        let Some(len) = self.compact_len(field)? else {
            return Ok(None);
        };
        // Kafka refuses longer strings on read as well.
        if len > STRING_BYTES_MAX {
            return Err(self.bad_length(field, len as i64));
        }
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
        self.opt_string(field)?
            .ok_or_else(|| self.bad_length(field, -1))
    }

    fn strings(&mut self, field: &'static str) -> Result<Vec<String>, GroupError> {
        let n = self.required_len(field)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.string(field)?);
        }
        Ok(out)
    }

    fn bytes(&mut self, field: &'static str) -> Result<Bytes, GroupError> {
        let n = self.required_len(field)?;
        Ok(Bytes::copy_from_slice(self.take(n, field)?))
    }

    /// A struct's tagged-field section: each field's bytes go, as their own reader, to
    /// `known` with the tag; `known` ignores tags it does not model, which skips them.
    fn tagged_fields(
        &mut self,
        mut known: impl FnMut(u32, &mut Reader<'a>) -> Result<(), GroupError>,
    ) -> Result<(), GroupError> {
        let count = self.uvarint("tagged fields")?;
        // Each field takes at least two bytes, so a lying count ends in Truncated.
        for _ in 0..count {
            let tag = self.uvarint("tag")?;
            let size = self.uvarint("tag size")? as usize;
            let data = self.take(size, "tag value")?;
            known(
                tag,
                &mut Reader {
                    buf: data,
                    what: self.what,
                },
            )?;
        }
        Ok(())
    }

    /// A tagged-field section with nothing we model.
    fn skip_tagged(&mut self) -> Result<(), GroupError> {
        self.tagged_fields(|_, _| Ok(()))
    }

    fn topic_partitions(&mut self, field: &'static str) -> Result<TopicPartitions, GroupError> {
        let n = self.required_len(field)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let topic_id = self.uuid("topicId")?;
            let count = self.required_len("partitions")?;
            let mut partitions = Vec::with_capacity(count);
            for _ in 0..count {
                partitions.push(self.i32("partitions")?);
            }
            // Kafka after 4.1 may add `AssignmentEpochs` (tag 0) here; not modelled.
            self.skip_tagged()?;
            out.push((topic_id, partitions));
        }
        Ok(out)
    }
}

/// Reads the version of a value and refuses any but the one Kafka 4.x defines.
fn open<'a>(bytes: &'a [u8], what: &'static str) -> Result<Reader<'a>, GroupError> {
    let mut r = Reader { buf: bytes, what };
    let version = r.i16("version")?;
    if version != CONSUMER_GROUP_VALUE_VERSION {
        return Err(GroupError::UnknownValueVersion { what, version });
    }
    Ok(r)
}

// ---- the values ---------------------------------------------------------------------------

impl ConsumerGroupMetadataValue {
    const WHAT: &'static str = "ConsumerGroupMetadataValue";

    pub fn encode(&self) -> Bytes {
        let mut buf = value_buf(2 + 4 + 12);
        buf.put_i32(self.epoch);
        put_tagged_i64(&mut buf, 0, self.metadata_hash, 0);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let epoch = r.i32("epoch")?;
        let mut metadata_hash = 0;
        r.tagged_fields(|tag, t| {
            if tag == 0 {
                metadata_hash = t.i64("metadataHash")?;
            }
            Ok(())
        })?;
        Ok(ConsumerGroupMetadataValue {
            epoch,
            metadata_hash,
        })
    }
}

impl ClassicMemberMetadata {
    fn encode_into(&self, buf: &mut BytesMut) {
        buf.put_i32(self.session_timeout_ms);
        put_compact_len(buf, self.supported_protocols.len());
        for p in &self.supported_protocols {
            put_compact_str(buf, &p.name);
            put_compact_bytes(buf, &p.metadata);
            buf.put_u8(0);
        }
        buf.put_u8(0);
    }

    fn decode_from(r: &mut Reader<'_>) -> Result<Self, GroupError> {
        let session_timeout_ms = r.i32("sessionTimeoutMs")?;
        let n = r.required_len("supportedProtocols")?;
        let mut supported_protocols = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string("name")?;
            let metadata = r.bytes("metadata")?;
            r.skip_tagged()?;
            supported_protocols.push(ClassicProtocol { name, metadata });
        }
        r.skip_tagged()?;
        Ok(ClassicMemberMetadata {
            session_timeout_ms,
            supported_protocols,
        })
    }
}

impl ConsumerGroupMemberMetadataValue {
    const WHAT: &'static str = "ConsumerGroupMemberMetadataValue";

    pub fn encode(&self) -> Bytes {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, |s| s.len());
        let classic = self.classic_member_metadata.as_ref().map(|c| {
            let mut b = BytesMut::new();
            c.encode_into(&mut b);
            b
        });
        let mut buf = value_buf(
            32 + opt(&self.instance_id)
                + opt(&self.rack_id)
                + self.client_id.len()
                + self.client_host.len()
                + self
                    .subscribed_topic_names
                    .iter()
                    .map(|t| t.len() + 3)
                    .sum::<usize>()
                + opt(&self.subscribed_topic_regex)
                + opt(&self.server_assignor)
                + classic.as_ref().map_or(0, |c| c.len() + 8),
        );
        // Field order is the schema's, which puts the rebalance timeout before the assignor.
        put_compact_nullable_str(&mut buf, self.instance_id.as_deref());
        put_compact_nullable_str(&mut buf, self.rack_id.as_deref());
        put_compact_str(&mut buf, &self.client_id);
        put_compact_str(&mut buf, &self.client_host);
        put_compact_strs(&mut buf, &self.subscribed_topic_names);
        put_compact_nullable_str(&mut buf, self.subscribed_topic_regex.as_deref());
        buf.put_i32(self.rebalance_timeout_ms);
        put_compact_nullable_str(&mut buf, self.server_assignor.as_deref());
        match classic {
            // Default null: not written.
            None => buf.put_u8(0),
            Some(c) => {
                put_uvarint(&mut buf, 1);
                put_uvarint(&mut buf, 0);
                // A nullable tagged struct is sized including its one-byte presence marker.
                put_uvarint(&mut buf, c.len() as u64 + 1);
                put_uvarint(&mut buf, 1);
                buf.put_slice(&c);
            }
        }
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let instance_id = r.opt_string("instanceId")?;
        let rack_id = r.opt_string("rackId")?;
        let client_id = r.string("clientId")?;
        let client_host = r.string("clientHost")?;
        let subscribed_topic_names = r.strings("subscribedTopicNames")?;
        let subscribed_topic_regex = r.opt_string("subscribedTopicRegex")?;
        let rebalance_timeout_ms = r.i32("rebalanceTimeoutMs")?;
        let server_assignor = r.opt_string("serverAssignor")?;
        let mut classic_member_metadata = None;
        r.tagged_fields(|tag, t| {
            if tag == 0 {
                // Presence marker first; Kafka reads 0 as null.
                classic_member_metadata = if t.uvarint("classicMemberMetadata")? == 0 {
                    None
                } else {
                    Some(ClassicMemberMetadata::decode_from(t)?)
                };
            }
            Ok(())
        })?;
        Ok(ConsumerGroupMemberMetadataValue {
            instance_id,
            rack_id,
            client_id,
            client_host,
            subscribed_topic_names,
            subscribed_topic_regex,
            server_assignor,
            rebalance_timeout_ms,
            classic_member_metadata,
        })
    }
}

impl ConsumerGroupTargetAssignmentMetadataValue {
    const WHAT: &'static str = "ConsumerGroupTargetAssignmentMetadataValue";

    pub fn encode(&self) -> Bytes {
        let mut buf = value_buf(2 + 4 + 12);
        buf.put_i32(self.assignment_epoch);
        put_tagged_i64(&mut buf, 0, self.assignment_timestamp, 0);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let assignment_epoch = r.i32("assignmentEpoch")?;
        let mut assignment_timestamp = 0;
        r.tagged_fields(|tag, t| {
            if tag == 0 {
                assignment_timestamp = t.i64("assignmentTimestamp")?;
            }
            Ok(())
        })?;
        Ok(ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch,
            assignment_timestamp,
        })
    }
}

impl ConsumerGroupTargetAssignmentMemberValue {
    const WHAT: &'static str = "ConsumerGroupTargetAssignmentMemberValue";

    pub fn encode(&self) -> Bytes {
        let mut buf = value_buf(3 + topic_partitions_len(&self.topic_partitions));
        put_topic_partitions(&mut buf, &self.topic_partitions);
        buf.put_u8(0);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let topic_partitions = r.topic_partitions("topicPartitions")?;
        r.skip_tagged()?;
        Ok(ConsumerGroupTargetAssignmentMemberValue { topic_partitions })
    }
}

impl ConsumerGroupCurrentMemberAssignmentValue {
    const WHAT: &'static str = "ConsumerGroupCurrentMemberAssignmentValue";

    pub fn encode(&self) -> Bytes {
        let mut buf = value_buf(
            12 + topic_partitions_len(&self.assigned_partitions)
                + topic_partitions_len(&self.partitions_pending_revocation),
        );
        buf.put_i32(self.member_epoch);
        buf.put_i32(self.previous_member_epoch);
        buf.put_i8(self.state);
        put_topic_partitions(&mut buf, &self.assigned_partitions);
        put_topic_partitions(&mut buf, &self.partitions_pending_revocation);
        buf.put_u8(0);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let member_epoch = r.i32("memberEpoch")?;
        let previous_member_epoch = r.i32("previousMemberEpoch")?;
        let state = r.i8("state")?;
        let assigned_partitions = r.topic_partitions("assignedPartitions")?;
        let partitions_pending_revocation = r.topic_partitions("partitionsPendingRevocation")?;
        r.skip_tagged()?;
        Ok(ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch,
            previous_member_epoch,
            state,
            assigned_partitions,
            partitions_pending_revocation,
        })
    }
}

impl ConsumerGroupRegularExpressionValue {
    const WHAT: &'static str = "ConsumerGroupRegularExpressionValue";

    pub fn encode(&self) -> Bytes {
        let names: usize = self.topics.iter().map(|t| t.len() + 3).sum();
        let mut buf = value_buf(2 + 5 + names + 17);
        put_compact_strs(&mut buf, &self.topics);
        buf.put_i64(self.version);
        buf.put_i64(self.timestamp);
        buf.put_u8(0);
        buf.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, GroupError> {
        let mut r = open(bytes, Self::WHAT)?;
        let topics = r.strings("topics")?;
        let version = r.i64("version")?;
        let timestamp = r.i64("timestamp")?;
        r.skip_tagged()?;
        Ok(ConsumerGroupRegularExpressionValue {
            topics,
            version,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{
        consumer_group_current_assignment_key, consumer_group_member_key,
        consumer_group_metadata_key, consumer_group_regex_key, consumer_group_target_member_key,
        consumer_group_target_metadata_key, decode_key, RecordKey,
    };

    const T1: Uuid = Uuid::from_bytes([
        0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee,
        0xff,
    ]);
    const T2: Uuid = Uuid::from_bytes([7; 16]);

    fn member() -> ConsumerGroupMemberMetadataValue {
        ConsumerGroupMemberMetadataValue {
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/h".into(),
            subscribed_topic_names: vec!["a".into(), "bc".into()],
            subscribed_topic_regex: None,
            server_assignor: Some("uniform".into()),
            rebalance_timeout_ms: 300_000,
            classic_member_metadata: Some(ClassicMemberMetadata {
                session_timeout_ms: 45_000,
                supported_protocols: vec![ClassicProtocol {
                    name: "range".into(),
                    metadata: Bytes::from_static(&[0, 1, 2]),
                }],
            }),
        }
    }

    fn current() -> ConsumerGroupCurrentMemberAssignmentValue {
        ConsumerGroupCurrentMemberAssignmentValue {
            member_epoch: 5,
            previous_member_epoch: 4,
            state: 1,
            assigned_partitions: vec![(T1, vec![0, 2])],
            partitions_pending_revocation: vec![],
        }
    }

    /// An encoded value and a check that decodes bytes and compares with the original.
    type Sample = (Bytes, Box<dyn Fn(&[u8]) -> Result<(), GroupError>>);

    /// Every value type, encoded, with a check that it decodes back to itself.
    fn samples() -> Vec<Sample> {
        fn row<T: PartialEq + std::fmt::Debug + 'static>(
            v: T,
            enc: fn(&T) -> Bytes,
            dec: fn(&[u8]) -> Result<T, GroupError>,
        ) -> Sample {
            let bytes = enc(&v);
            let check = move |b: &[u8]| {
                let got = dec(b)?;
                assert_eq!(got, v);
                Ok(())
            };
            (bytes, Box::new(check))
        }
        let mut unicode = member();
        unicode.instance_id = None;
        unicode.rack_id = Some("rack-é".into());
        unicode.subscribed_topic_names = vec![];
        unicode.subscribed_topic_regex = Some("orders\\..*".into());
        unicode.server_assignor = None;
        unicode.classic_member_metadata = None;
        let mut classic_empty = member();
        classic_empty.classic_member_metadata = Some(ClassicMemberMetadata::default());
        vec![
            row(
                ConsumerGroupMetadataValue {
                    epoch: 7,
                    metadata_hash: 0,
                },
                ConsumerGroupMetadataValue::encode,
                ConsumerGroupMetadataValue::decode,
            ),
            row(
                ConsumerGroupMetadataValue {
                    epoch: -1,
                    metadata_hash: i64::MIN,
                },
                ConsumerGroupMetadataValue::encode,
                ConsumerGroupMetadataValue::decode,
            ),
            row(
                member(),
                ConsumerGroupMemberMetadataValue::encode,
                ConsumerGroupMemberMetadataValue::decode,
            ),
            row(
                unicode,
                ConsumerGroupMemberMetadataValue::encode,
                ConsumerGroupMemberMetadataValue::decode,
            ),
            row(
                classic_empty,
                ConsumerGroupMemberMetadataValue::encode,
                ConsumerGroupMemberMetadataValue::decode,
            ),
            row(
                ConsumerGroupMemberMetadataValue::default(),
                ConsumerGroupMemberMetadataValue::encode,
                ConsumerGroupMemberMetadataValue::decode,
            ),
            row(
                ConsumerGroupTargetAssignmentMetadataValue {
                    assignment_epoch: 3,
                    assignment_timestamp: 0,
                },
                ConsumerGroupTargetAssignmentMetadataValue::encode,
                ConsumerGroupTargetAssignmentMetadataValue::decode,
            ),
            row(
                ConsumerGroupTargetAssignmentMetadataValue {
                    assignment_epoch: 3,
                    assignment_timestamp: 1_700_000_000_000,
                },
                ConsumerGroupTargetAssignmentMetadataValue::encode,
                ConsumerGroupTargetAssignmentMetadataValue::decode,
            ),
            row(
                ConsumerGroupTargetAssignmentMemberValue {
                    topic_partitions: vec![
                        (T1, vec![0, 1, 2]),
                        (T2, vec![]),
                        (Uuid::nil(), vec![9]),
                    ],
                },
                ConsumerGroupTargetAssignmentMemberValue::encode,
                ConsumerGroupTargetAssignmentMemberValue::decode,
            ),
            row(
                ConsumerGroupTargetAssignmentMemberValue::default(),
                ConsumerGroupTargetAssignmentMemberValue::encode,
                ConsumerGroupTargetAssignmentMemberValue::decode,
            ),
            row(
                current(),
                ConsumerGroupCurrentMemberAssignmentValue::encode,
                ConsumerGroupCurrentMemberAssignmentValue::decode,
            ),
            row(
                ConsumerGroupCurrentMemberAssignmentValue {
                    member_epoch: i32::MAX,
                    previous_member_epoch: -1,
                    state: -1,
                    assigned_partitions: vec![(T2, (0..200).collect())],
                    partitions_pending_revocation: vec![(T1, vec![3]), (T2, vec![200, 201])],
                },
                ConsumerGroupCurrentMemberAssignmentValue::encode,
                ConsumerGroupCurrentMemberAssignmentValue::decode,
            ),
            row(
                ConsumerGroupRegularExpressionValue {
                    topics: vec!["orders.eu".into(), "orders.us".into()],
                    version: 42,
                    timestamp: 1_700_000_000_123,
                },
                ConsumerGroupRegularExpressionValue::encode,
                ConsumerGroupRegularExpressionValue::decode,
            ),
            row(
                ConsumerGroupRegularExpressionValue::default(),
                ConsumerGroupRegularExpressionValue::encode,
                ConsumerGroupRegularExpressionValue::decode,
            ),
        ]
    }

    #[test]
    fn consumer_records_every_value_round_trips() {
        for (bytes, check) in samples() {
            check(&bytes).unwrap();
        }
    }

    #[test]
    fn consumer_records_every_truncation_is_an_error() {
        for (bytes, check) in samples() {
            for len in 0..bytes.len() {
                assert!(
                    check(&bytes[..len]).is_err(),
                    "{len} of {} bytes decoded: {bytes:?}",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn consumer_records_unknown_versions_are_errors() {
        for (bytes, check) in samples() {
            for version in [1i16, -1, 3, i16::MAX] {
                let mut b = bytes.to_vec();
                b[..2].copy_from_slice(&version.to_be_bytes());
                assert!(
                    matches!(
                        check(&b),
                        Err(GroupError::UnknownValueVersion { version: v, .. }) if v == version
                    ),
                    "version {version} accepted"
                );
            }
        }
    }

    #[test]
    fn consumer_records_member_metadata_bytes_match_the_schema() {
        let expected: Vec<u8> = [
            &[0x00, 0x00][..],         // value version 0
            &[0x02, b'i'],             // InstanceId: compact nullable string, length + 1
            &[0x00],                   // RackId: null
            &[0x02, b'c'],             // ClientId
            &[0x03, b'/', b'h'],       // ClientHost
            &[0x03],                   // SubscribedTopicNames: compact array of 2
            &[0x02, b'a'],             //   "a"
            &[0x03, b'b', b'c'],       //   "bc"
            &[0x00],                   // SubscribedTopicRegex: null
            &[0x00, 0x04, 0x93, 0xe0], // RebalanceTimeoutMs 300000 (before ServerAssignor)
            &[0x08],                   // ServerAssignor: 7 bytes
            b"uniform",
            &[0x01],                   // one tagged field
            &[0x00],                   //   tag 0: ClassicMemberMetadata
            &[0x12],                   //   size 18: presence byte + 17-byte struct
            &[0x01],                   //   present (nullable struct marker)
            &[0x00, 0x00, 0xaf, 0xc8], //   SessionTimeoutMs 45000
            &[0x02],                   //   SupportedProtocols: compact array of 1
            &[0x06],                   //     Name: 5 bytes
            b"range",
            &[0x04, 0x00, 0x01, 0x02], //     Metadata: compact bytes of 3
            &[0x00],                   //     protocol's tagged fields
            &[0x00],                   //   struct's tagged fields
        ]
        .concat();
        assert_eq!(member().encode().as_ref(), &expected[..]);
        assert_eq!(
            ConsumerGroupMemberMetadataValue::decode(&expected).unwrap(),
            member()
        );

        // A member of the consumer protocol: no classic metadata, so no tagged field at all.
        let mut plain = member();
        plain.classic_member_metadata = None;
        let n = expected.len() - 21;
        let mut expected_plain = expected[..n].to_vec();
        expected_plain.push(0x00);
        assert_eq!(plain.encode().as_ref(), &expected_plain[..]);
    }

    #[test]
    fn consumer_records_current_assignment_bytes_match_the_schema() {
        let expected: Vec<u8> = [
            &[0x00, 0x00][..],         // value version 0
            &[0x00, 0x00, 0x00, 0x05], // MemberEpoch
            &[0x00, 0x00, 0x00, 0x04], // PreviousMemberEpoch
            &[0x01],                   // State (int8)
            &[0x02],                   // AssignedPartitions: compact array of 1
            T1.as_bytes(),             //   TopicId: 16 bytes, big-endian msb then lsb
            &[0x03],                   //   Partitions: compact array of 2
            &[0x00, 0x00, 0x00, 0x00],
            &[0x00, 0x00, 0x00, 0x02],
            &[0x00], //   element's tagged fields
            &[0x01], // PartitionsPendingRevocation: empty compact array
            &[0x00], // tagged fields
        ]
        .concat();
        assert_eq!(current().encode().as_ref(), &expected[..]);
        assert_eq!(
            ConsumerGroupCurrentMemberAssignmentValue::decode(&expected).unwrap(),
            current()
        );
    }

    #[test]
    fn consumer_records_small_values_bytes_match_the_schema() {
        // Epoch then tagged MetadataHash (tag 0, 8 bytes) only when not 0.
        let v = ConsumerGroupMetadataValue {
            epoch: 2,
            metadata_hash: 0x0102030405060708,
        };
        assert_eq!(
            v.encode().as_ref(),
            &[0, 0, 0, 0, 0, 2, 1, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8][..]
        );
        let v = ConsumerGroupMetadataValue {
            epoch: 2,
            metadata_hash: 0,
        };
        assert_eq!(v.encode().as_ref(), &[0, 0, 0, 0, 0, 2, 0][..]);
        // Kafka 4.1's target metadata: the epoch and an empty tagged section.
        let v = ConsumerGroupTargetAssignmentMetadataValue {
            assignment_epoch: 9,
            ..Default::default()
        };
        assert_eq!(v.encode().as_ref(), &[0, 0, 0, 0, 0, 9, 0][..]);
        let v = ConsumerGroupTargetAssignmentMemberValue {
            topic_partitions: vec![(T2, vec![1])],
        };
        // Array of 1, topic id, partitions [1], element tags, value tags.
        let mut expected = vec![0, 0, 2];
        expected.extend_from_slice(T2.as_bytes());
        expected.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0]);
        assert_eq!(v.encode().as_ref(), &expected[..]);
        // Topics: array of 1 (0x02) holding "t" (0x02 't'), Version, Timestamp, no tags.
        let v = ConsumerGroupRegularExpressionValue {
            topics: vec!["t".into()],
            version: 1,
            timestamp: 2,
        };
        assert_eq!(
            v.encode().as_ref(),
            &[0, 0, 2, 2, b't', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0][..]
        );
    }

    #[test]
    fn consumer_records_unknown_tagged_fields_are_skipped() {
        // Kafka after 4.1 adds CreationTimeMs (tag 1) to the group metadata.
        let b = [
            0, 0, 0, 0, 0, 2, 2, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5, 1, 8, 0, 0, 0, 0, 0, 0, 1, 0,
        ];
        assert_eq!(
            ConsumerGroupMetadataValue::decode(&b).unwrap(),
            ConsumerGroupMetadataValue {
                epoch: 2,
                metadata_hash: 5
            }
        );
        // ... and AssignmentEpochs (tag 0, nullable int32 array) to each TopicPartitions.
        let mut b = vec![0, 0, 0, 0, 0, 5, 0, 0, 0, 4, 1, 2];
        b.extend_from_slice(T1.as_bytes());
        b.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend_from_slice(&[1, 0, 9, 3, 0, 0, 0, 5, 0, 0, 0, 5]);
        b.extend_from_slice(&[1, 0]);
        assert_eq!(
            ConsumerGroupCurrentMemberAssignmentValue::decode(&b).unwrap(),
            current()
        );
        // Unknown tags inside the classic metadata: in a protocol entry and in the struct.
        let mut plain = member();
        plain.classic_member_metadata = None;
        let mut b = plain.encode().to_vec();
        b.pop(); // the empty tagged section
        let classic: &[u8] = &[
            0x00, 0x00, 0xaf, 0xc8, // SessionTimeoutMs
            0x02, 0x06, b'r', b'a', b'n', b'g', b'e', 0x04, 0x00, 0x01, 0x02, // one protocol
            0x01, 0x07, 0x01, 0xff, // its tags: unknown tag 7, one byte
            0x01, 0x05, 0x02, 0xaa, 0xbb, // struct tags: unknown tag 5, two bytes
        ];
        b.extend_from_slice(&[0x01, 0x00, classic.len() as u8 + 1, 0x01]);
        b.extend_from_slice(classic);
        assert_eq!(
            ConsumerGroupMemberMetadataValue::decode(&b).unwrap(),
            member()
        );
        // A tagged null ClassicMemberMetadata (marker 0) reads as absent.
        let mut plain = member();
        plain.classic_member_metadata = None;
        let mut b = plain.encode().to_vec();
        b.pop();
        b.extend_from_slice(&[0x01, 0x00, 0x01, 0x00]);
        assert_eq!(ConsumerGroupMemberMetadataValue::decode(&b).unwrap(), plain);
    }

    #[test]
    fn consumer_records_bad_bytes_are_errors() {
        let m = member().encode();
        // InstanceId claiming more bytes than the record has.
        let mut b = m.to_vec();
        b[2] = 0x7f;
        assert!(matches!(
            ConsumerGroupMemberMetadataValue::decode(&b),
            Err(GroupError::BadLength { .. })
        ));
        // Not UTF-8.
        let mut b = m.to_vec();
        b[3] = 0xff;
        assert!(matches!(
            ConsumerGroupMemberMetadataValue::decode(&b),
            Err(GroupError::NotUtf8 { .. })
        ));
        // Null where the schema has no null (ClientId, the topic array).
        let mut b = m.to_vec();
        b[5] = 0;
        assert!(ConsumerGroupMemberMetadataValue::decode(&b).is_err());
        let mut b = m.to_vec();
        b[10] = 0;
        assert!(ConsumerGroupMemberMetadataValue::decode(&b).is_err());
        // A varint longer than five bytes, and one past 32 bits.
        let b = [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(ConsumerGroupRegularExpressionValue::decode(&b).is_err());
        let b = [0, 0, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(ConsumerGroupRegularExpressionValue::decode(&b).is_err());
        // A huge partition count.
        let mut b = vec![0, 0, 2];
        b.extend_from_slice(T1.as_bytes());
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(ConsumerGroupTargetAssignmentMemberValue::decode(&b).is_err());
        // A string longer than Kafka allows.
        let mut b = vec![0, 0, 2, 0x81, 0x80, 0x02];
        b.resize(b.len() + 0x8000, b'a');
        b.extend_from_slice(&[0; 17]);
        assert!(matches!(
            ConsumerGroupRegularExpressionValue::decode(&b),
            Err(GroupError::BadLength { len: 0x8000, .. })
        ));
        // A tagged MetadataHash shorter than 8 bytes.
        let b = [0, 0, 0, 0, 0, 2, 1, 0, 4, 1, 2, 3, 4];
        assert!(ConsumerGroupMetadataValue::decode(&b).is_err());
    }

    #[test]
    fn consumer_records_mutated_bytes_never_panic() {
        // Deterministic byte flips over every sample: any result is fine, a panic is not.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let decoders: [fn(&[u8]) -> bool; 6] = [
            |b| ConsumerGroupMetadataValue::decode(b).is_ok(),
            |b| ConsumerGroupMemberMetadataValue::decode(b).is_ok(),
            |b| ConsumerGroupTargetAssignmentMetadataValue::decode(b).is_ok(),
            |b| ConsumerGroupTargetAssignmentMemberValue::decode(b).is_ok(),
            |b| ConsumerGroupCurrentMemberAssignmentValue::decode(b).is_ok(),
            |b| ConsumerGroupRegularExpressionValue::decode(b).is_ok(),
        ];
        for (bytes, _) in samples() {
            for _ in 0..300 {
                let mut b = bytes.to_vec();
                for _ in 0..1 + next() % 3 {
                    let i = (next() as usize) % b.len();
                    b[i] = next() as u8;
                }
                for d in &decoders {
                    let _ = d(&b);
                }
            }
        }
    }

    #[test]
    fn consumer_records_keys_round_trip_with_kafka_api_keys() {
        let cases = [
            (
                consumer_group_metadata_key("g"),
                3i16,
                RecordKey::ConsumerGroupMetadata { group: "g".into() },
            ),
            (
                consumer_group_member_key("g", "m"),
                5,
                RecordKey::ConsumerGroupMember {
                    group: "g".into(),
                    member: "m".into(),
                },
            ),
            (
                consumer_group_target_metadata_key("g"),
                6,
                RecordKey::ConsumerGroupTargetMetadata { group: "g".into() },
            ),
            (
                consumer_group_target_member_key("g", "m"),
                7,
                RecordKey::ConsumerGroupTargetMember {
                    group: "g".into(),
                    member: "m".into(),
                },
            ),
            (
                consumer_group_current_assignment_key("g", "m"),
                8,
                RecordKey::ConsumerGroupCurrentAssignment {
                    group: "g".into(),
                    member: "m".into(),
                },
            ),
            (
                consumer_group_regex_key("g", "m"),
                16,
                RecordKey::ConsumerGroupRegex {
                    group: "g".into(),
                    regex: "m".into(),
                },
            ),
        ];
        for (key, version, decoded) in cases {
            // int16 apiKey, then non-flexible int16-length strings.
            let mut expected = version.to_be_bytes().to_vec();
            expected.extend_from_slice(&[0, 1, b'g']);
            if !matches!(version, 3 | 6) {
                expected.extend_from_slice(&[0, 1, b'm']);
            }
            assert_eq!(key.as_ref(), &expected[..]);
            assert_eq!(decode_key(&key).unwrap(), decoded);
            for len in 2..key.len() {
                assert!(decode_key(&key[..len]).is_err());
            }
        }
        // The deprecated partition metadata key (4) and share-group keys stay `Other`.
        assert_eq!(
            decode_key(&[0, 4, 0, 1, b'g']).unwrap(),
            RecordKey::Other { version: 4 }
        );
        assert_eq!(
            decode_key(&[0, 9, 0, 1, b'g']).unwrap(),
            RecordKey::Other { version: 9 }
        );
    }
}
