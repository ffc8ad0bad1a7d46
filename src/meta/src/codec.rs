//! The binary encoding of metadata records: compact, versioned, and safe to decode from
//! hostile bytes (every length is checked against what remains, every count is bounded,
//! nothing is allocated by a size the bytes claim beyond the bytes present, nothing panics).
//!
//! ```text
//! batch   := format:u8 (= 0)  count:uvarint  record{count}     one Raft entry
//! record  := len:uvarint  body                                 body is exactly len bytes
//! body    := type:u8  version:u8  fields                       fields by type and version
//! ```
//!
//! Field types: `uvarint` is LEB128 (at most 10 bytes, the value must fit the field);
//! `varint` is a zig-zag LEB128 signed integer; `bool` is one byte 0 or 1; `uuid` is 16 raw
//! bytes; `string` is a uvarint length and UTF-8 bytes (at most [`STRING_BYTES_MAX`]);
//! `bytes` is a uvarint length and the bytes (at most [`STRING_BYTES_MAX`]);
//! `option<T>` is a byte 0 (absent) or 1 followed by `T`; `list<T>` is a uvarint count and
//! the items. Fields of version 0 of each type (type byte, then fields in order):
//!
//! ```text
//!   0 RegisterBroker   node:varint incarnation:uuid epoch:uvarint
//!                      kafka_host:string kafka_port:uvarint rpc_host:string rpc_port:uvarint
//!                      rack:option<string> fenced:bool
//!                      version 1 appends directory:uuid (never all zeros: a registration
//!                      without a directory is version 0)
//!                      version 2 appends directory:uuid (zeros allowed) and
//!                      listeners:list<(name:string host:string port:uvarint
//!                      security_protocol:varint)> (never empty: a registration without
//!                      named listeners is version 0 or 1)
//!                      version 3 appends directory:uuid (zeros allowed),
//!                      listeners:list<...> as version 2 (empty allowed) and
//!                      features:list<(name:string min:varint max:varint)> (never empty,
//!                      0 <= min <= max, names unique)
//!   2 Topic            name:string id:uuid configs:list<(key:string value:string)>
//!   3 Partition        topic:uuid partition:varint replicas:list<varint>
//!                      adding:list<varint> removing:list<varint> revision:uvarint
//!   4 Config           resource config key:string value:option<string>
//!                      resource := 2 uuid (topic) | 4 option<varint> (broker; absent: cluster)
//!                                | 16 name:string (client-metrics subscription)
//!   5 PartitionChange  as Partition
//!   7 FenceBroker      node:varint epoch:uvarint
//!   8 UnfenceBroker    node:varint epoch:uvarint
//!   9 RemoveTopic      id:uuid
//!  11 ScramCredential  user:string mechanism:varint salt:bytes iterations:uvarint
//!                      stored_key:bytes server_key:bytes
//!  12 RemoveScramCredential user:string mechanism:varint
//!  13 Acl              resource_type:u8 name:string pattern_type:u8 principal:string
//!                      host:string operation:u8 permission:u8 (Kafka's codes; a binding
//!                      `acl::check_binding` accepts)
//!  14 RemoveAcl        as Acl
//!  16 ClientQuota      user:component client_id:component ip:component key:string
//!                      value:option<f64 as 8 big-endian bytes> (absent: removed)
//!                      component := 0 (absent) | 1 (the default) | 2 name:string
//!  15 ProducerIds      node:varint first:varint size:uvarint
//! 100 ClusterId        cluster_id:string
//! 101 Revision         revision:uvarint
//! 102 FeatureLevel     name:string level:varint (0 <= level <= i16::MAX)
//!  10 DelegationToken  token_id:string owner:string requester:string
//!                      renewers:list<string> (at most `tokens::RENEWERS_MAX`)
//!                      issue:varint max:varint expiry:varint
//!  26 RemoveDelegationToken token_id:string
//! ```
//!
//! A version newer than this build knows, an unknown type, trailing bytes inside a record or
//! after a batch are errors: a record is never misread or skipped. The encoding is
//! canonical: varints in their shortest form, topic configs in increasing key order, so
//! records and bytes correspond one to one (`encode(decode(b)) == b` for every accepted `b`;
//! equal images give equal snapshot bytes). Adding a field means a
//! new version of its type; an old build then refuses the log rather than dropping the field.

use std::collections::BTreeMap;
use std::fmt;

use crate::record::{
    BrokerRegistration, ConfigResource, Endpoint, ListenerEndpoint, PartitionRecord,
    ProducerIdsBlock, Record, ScramRecord, SupportedFeature, LISTENERS_MAX,
};

/// The only batch format so far.
pub const BATCH_FORMAT: u8 = 0;
/// Bytes of one encoded batch (a Raft entry), written or read.
pub const BATCH_BYTES_MAX: usize = 8 << 20;
/// Bytes of one string field (names, hosts, config keys and values).
pub const STRING_BYTES_MAX: usize = 64 << 10;
/// Replicas one partition record may list.
pub const REPLICAS_MAX: usize = 64;

/// Why bytes did not decode into records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes ended inside `what`.
    Truncated { what: &'static str },
    /// A record type this build does not know.
    UnknownType { type_id: u8 },
    /// A record version newer than this build reads.
    UnknownVersion { type_id: u8, version: u8 },
    /// A batch format this build does not know.
    UnknownFormat { format: u8 },
    /// A value out of its field's range or shape.
    Invalid { what: &'static str },
    /// Bytes left over inside a record or after a batch.
    Trailing { what: &'static str },
    /// Over [`BATCH_BYTES_MAX`], [`STRING_BYTES_MAX`] or [`REPLICAS_MAX`].
    TooLarge { what: &'static str },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what } => write!(f, "metadata record truncated in {what}"),
            DecodeError::UnknownType { type_id } => {
                write!(f, "unknown metadata record type {type_id}")
            }
            DecodeError::UnknownVersion { type_id, version } => write!(
                f,
                "metadata record type {type_id} version {version} is newer than this build reads"
            ),
            DecodeError::UnknownFormat { format } => {
                write!(f, "unknown metadata batch format {format}")
            }
            DecodeError::Invalid { what } => write!(f, "invalid metadata field {what}"),
            DecodeError::Trailing { what } => write!(f, "bytes left over after {what}"),
            DecodeError::TooLarge { what } => write!(f, "metadata field {what} is too large"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why records could not be encoded (a value over a limit the decoder would refuse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub DecodeError);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}

/// Encodes `records` as one batch. Fails if the result would not decode (a string, replica
/// list or the batch over its limit), so nothing is proposed that replay would refuse.
pub fn encode_batch(records: &[Record]) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![BATCH_FORMAT];
    put_uvarint(&mut out, records.len() as u64);
    let mut body = Vec::new();
    for r in records {
        body.clear();
        encode_record(r, &mut body).map_err(EncodeError)?;
        put_uvarint(&mut out, body.len() as u64);
        out.extend_from_slice(&body);
        if out.len() > BATCH_BYTES_MAX {
            return Err(EncodeError(DecodeError::TooLarge { what: "batch" }));
        }
    }
    Ok(out)
}

/// Encodes `records` as consecutive batches of at most `max_bytes` each (a snapshot or a
/// bootstrap list too large for one entry). A record alone over the limit is an error.
pub fn encode_batches(records: &[Record], max_bytes: usize) -> Result<Vec<Vec<u8>>, EncodeError> {
    let max_bytes = max_bytes.min(BATCH_BYTES_MAX);
    let mut batches = Vec::new();
    let mut start = 0;
    let mut size = 0;
    let mut body = Vec::new();
    for (i, r) in records.iter().enumerate() {
        body.clear();
        encode_record(r, &mut body).map_err(EncodeError)?;
        // Length prefix of the record, at most 10 bytes; 11 for the batch header and count.
        let len = body.len() + 10;
        if len + 11 > max_bytes {
            return Err(EncodeError(DecodeError::TooLarge { what: "record" }));
        }
        if size + len + 11 > max_bytes {
            batches.push(encode_batch(&records[start..i])?);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < records.len() {
        batches.push(encode_batch(&records[start..])?);
    }
    Ok(batches)
}

/// Decodes one batch. Never panics; any defect is an error and no record is returned.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Record>, DecodeError> {
    if bytes.len() > BATCH_BYTES_MAX {
        return Err(DecodeError::TooLarge { what: "batch" });
    }
    let mut r = Reader { buf: bytes };
    let format = r.u8("batch format")?;
    if format != BATCH_FORMAT {
        return Err(DecodeError::UnknownFormat { format });
    }
    let count = r.count("batch count", 1)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.count("record length", 1)?;
        let body = r.take(len, "record")?;
        records.push(decode_record(body)?);
    }
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing { what: "batch" });
    }
    Ok(records)
}

/// Encodes one record's body (type, version, fields).
pub fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.push(record.type_id());
    out.push(record.version());
    match record {
        Record::ClusterId { cluster_id } => put_str(out, cluster_id)?,
        Record::FeatureLevel { name, level } => {
            if crate::features::check_level_record(name, *level).is_err() {
                return Err(DecodeError::Invalid {
                    what: "feature level",
                });
            }
            put_str(out, name)?;
            put_varint(out, (*level).into());
        }
        Record::Revision { revision } => put_uvarint(out, *revision),
        Record::RegisterBroker(b) => {
            put_varint(out, b.node.into());
            out.extend_from_slice(&b.incarnation);
            put_uvarint(out, b.epoch);
            put_str(out, &b.kafka.host)?;
            put_uvarint(out, b.kafka.port.into());
            put_str(out, &b.rpc.host)?;
            put_uvarint(out, b.rpc.port.into());
            match &b.rack {
                None => out.push(0),
                Some(rack) => {
                    out.push(1);
                    put_str(out, rack)?;
                }
            }
            out.push(u8::from(b.fenced));
            if record.version() >= 1 {
                out.extend_from_slice(&b.directory);
            }
            if record.version() >= 2 {
                if b.listeners.len() > LISTENERS_MAX {
                    return Err(DecodeError::Invalid {
                        what: "registration listeners",
                    });
                }
                put_uvarint(out, b.listeners.len() as u64);
                for l in &b.listeners {
                    put_str(out, &l.name)?;
                    put_str(out, &l.host)?;
                    put_uvarint(out, l.port.into());
                    put_varint(out, l.security_protocol.into());
                }
            }
            if record.version() >= 3 {
                if crate::features::check_supported(&b.features).is_err() {
                    return Err(DecodeError::Invalid {
                        what: "registration features",
                    });
                }
                put_uvarint(out, b.features.len() as u64);
                for f in &b.features {
                    put_str(out, &f.name)?;
                    put_varint(out, f.min.into());
                    put_varint(out, f.max.into());
                }
            }
        }
        Record::FenceBroker { node, epoch } | Record::UnfenceBroker { node, epoch } => {
            put_varint(out, (*node).into());
            put_uvarint(out, *epoch);
        }
        Record::Topic { name, id, configs } => {
            put_str(out, name)?;
            out.extend_from_slice(id);
            put_uvarint(out, configs.len() as u64);
            for (k, v) in configs {
                put_str(out, k)?;
                put_str(out, v)?;
            }
        }
        Record::Partition(p) | Record::PartitionChange(p) => {
            out.extend_from_slice(&p.topic);
            put_varint(out, p.partition.into());
            for list in [&p.replicas, &p.adding, &p.removing] {
                if list.len() > REPLICAS_MAX {
                    return Err(DecodeError::TooLarge { what: "replicas" });
                }
                put_uvarint(out, list.len() as u64);
                for &n in list {
                    put_varint(out, n.into());
                }
            }
            put_uvarint(out, p.revision);
        }
        Record::Config {
            resource,
            key,
            value,
        } => {
            match resource {
                ConfigResource::Topic(id) => {
                    out.push(2);
                    out.extend_from_slice(id);
                }
                ConfigResource::Broker(node) => {
                    out.push(4);
                    match node {
                        None => out.push(0),
                        Some(n) => {
                            out.push(1);
                            put_varint(out, (*n).into());
                        }
                    }
                }
                ConfigResource::ClientMetrics(name) => {
                    out.push(16);
                    put_str(out, name)?;
                }
            }
            put_str(out, key)?;
            match value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    put_str(out, v)?;
                }
            }
        }
        Record::ProducerIds(b) => {
            put_varint(out, b.node.into());
            put_varint(out, b.first);
            put_uvarint(out, b.size.into());
        }
        Record::RemoveTopic { id } => out.extend_from_slice(id),
        Record::ScramCredential(c) => {
            put_str(out, &c.user)?;
            put_varint(out, c.mechanism.into());
            put_bytes(out, &c.salt)?;
            put_uvarint(out, c.iterations.into());
            put_bytes(out, &c.stored_key)?;
            put_bytes(out, &c.server_key)?;
        }
        Record::RemoveScramCredential { user, mechanism } => {
            put_str(out, user)?;
            put_varint(out, (*mechanism).into());
        }
        Record::DelegationToken(t) => {
            if t.renewers.len() > crate::tokens::RENEWERS_MAX {
                return Err(DecodeError::Invalid {
                    what: "token renewers",
                });
            }
            put_str(out, &t.token_id)?;
            put_str(out, &t.owner)?;
            put_str(out, &t.requester)?;
            put_uvarint(out, t.renewers.len() as u64);
            for r in &t.renewers {
                put_str(out, r)?;
            }
            put_varint(out, t.issue_ms);
            put_varint(out, t.max_ms);
            put_varint(out, t.expiry_ms);
        }
        Record::RemoveDelegationToken { token_id } => put_str(out, token_id)?,
        Record::ClientQuota { entity, key, value } => {
            let valid = match value {
                Some(v) => crate::quota::check_quota(entity, key, v.0).is_ok(),
                None => crate::quota::check_entity(entity).is_ok(),
            };
            if !valid {
                return Err(DecodeError::Invalid {
                    what: "client quota",
                });
            }
            for c in [&entity.user, &entity.client_id, &entity.ip] {
                match c {
                    None => out.push(0),
                    Some(None) => out.push(1),
                    Some(Some(name)) => {
                        out.push(2);
                        put_str(out, name)?;
                    }
                }
            }
            put_str(out, key)?;
            match value {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.0.to_bits().to_be_bytes());
                }
            }
        }
        Record::Acl(b) | Record::RemoveAcl(b) => {
            if crate::acl::check_binding(b).is_err() {
                return Err(DecodeError::Invalid {
                    what: "ACL binding",
                });
            }
            out.push(b.resource_type.code() as u8);
            put_str(out, &b.name)?;
            out.push(b.pattern.code() as u8);
            put_str(out, &b.principal)?;
            put_str(out, &b.host)?;
            out.push(b.operation.code() as u8);
            out.push(b.permission.code() as u8);
        }
    }
    Ok(())
}

/// Decodes one record's body; all of `body` must be used.
pub fn decode_record(body: &[u8]) -> Result<Record, DecodeError> {
    let mut r = Reader { buf: body };
    let type_id = r.u8("record type")?;
    let version = r.u8("record version")?;
    let known = matches!(
        type_id,
        0 | 2 | 3 | 4 | 5 | 7 | 8 | 9 | 10 | 11 | 12 | 13 | 14 | 15 | 16 | 26 | 100 | 101 | 102
    );
    if !known {
        return Err(DecodeError::UnknownType { type_id });
    }
    let newest = if type_id == 0 { 3 } else { 0 };
    if version > newest {
        return Err(DecodeError::UnknownVersion { type_id, version });
    }
    let record = match type_id {
        0 => {
            let node = r.node("broker node")?;
            let incarnation = r.uuid("incarnation")?;
            let epoch = r.uvarint("broker epoch")?;
            let kafka = Endpoint {
                host: r.string("kafka host")?,
                port: r.port("kafka port")?,
            };
            let rpc = Endpoint {
                host: r.string("rpc host")?,
                port: r.port("rpc port")?,
            };
            let rack = if r.bool("rack present")? {
                Some(r.string("rack")?)
            } else {
                None
            };
            let fenced = r.bool("fenced")?;
            let directory = if version >= 1 {
                let d = r.uuid("directory")?;
                if d == [0; 16] && version == 1 {
                    // Version 0 says "no directory": zeros here would not re-encode the same.
                    return Err(DecodeError::Invalid {
                        what: "registration directory",
                    });
                }
                d
            } else {
                [0; 16]
            };
            let mut listeners = Vec::new();
            if version >= 2 {
                let count = r.uvarint("listener count")?;
                if (count == 0 && version == 2) || count > LISTENERS_MAX as u64 {
                    // None: that is version 0 or 1, which must not encode two ways.
                    return Err(DecodeError::Invalid {
                        what: "registration listeners",
                    });
                }
                for _ in 0..count {
                    listeners.push(ListenerEndpoint {
                        name: r.string("listener name")?,
                        host: r.string("listener host")?,
                        port: r.port("listener port")?,
                        security_protocol: i16::try_from(r.varint("security protocol")?).map_err(
                            |_| DecodeError::Invalid {
                                what: "security protocol",
                            },
                        )?,
                    });
                }
            }
            let mut features = Vec::new();
            if version >= 3 {
                let count = r.uvarint("feature count")?;
                if count > crate::features::FEATURES_MAX as u64 {
                    return Err(DecodeError::Invalid {
                        what: "registration features",
                    });
                }
                for _ in 0..count {
                    features.push(SupportedFeature {
                        name: r.string("feature name")?,
                        min: r.i16("feature min")?,
                        max: r.i16("feature max")?,
                    });
                }
                // Never empty: that is an older version, which must not encode two ways.
                if crate::features::check_supported(&features).is_err() {
                    return Err(DecodeError::Invalid {
                        what: "registration features",
                    });
                }
            }
            Record::RegisterBroker(BrokerRegistration {
                node,
                incarnation,
                directory,
                epoch,
                kafka,
                listeners,
                rpc,
                rack,
                fenced,
                features,
            })
        }
        2 => {
            let name = r.string("topic name")?;
            let id = r.uuid("topic id")?;
            // Each pair is at least two bytes (two empty strings).
            let n = r.count("topic configs", 2)?;
            let mut configs = BTreeMap::new();
            for _ in 0..n {
                let k = r.string("config key")?;
                let v = r.string("config value")?;
                // Keys in strictly increasing order, as they are written (no duplicates).
                if configs.last_key_value().is_some_and(|(last, _)| *last >= k) {
                    return Err(DecodeError::Invalid {
                        what: "topic config keys out of order",
                    });
                }
                configs.insert(k, v);
            }
            Record::Topic { name, id, configs }
        }
        3 | 5 => {
            let topic = r.uuid("partition topic")?;
            let partition = r.i32("partition")?;
            let replicas = r.nodes("replicas")?;
            let adding = r.nodes("adding replicas")?;
            let removing = r.nodes("removing replicas")?;
            let revision = r.uvarint("revision")?;
            let p = PartitionRecord {
                topic,
                partition,
                replicas,
                adding,
                removing,
                revision,
            };
            if type_id == 3 {
                Record::Partition(p)
            } else {
                Record::PartitionChange(p)
            }
        }
        4 => {
            let resource = match r.u8("config resource type")? {
                2 => ConfigResource::Topic(r.uuid("config topic")?),
                4 => ConfigResource::Broker(if r.bool("config broker present")? {
                    Some(r.node("config broker")?)
                } else {
                    None
                }),
                16 => ConfigResource::ClientMetrics(r.string("client metrics name")?),
                _ => {
                    return Err(DecodeError::Invalid {
                        what: "config resource type",
                    })
                }
            };
            let key = r.string("config key")?;
            let value = if r.bool("config value present")? {
                Some(r.string("config value")?)
            } else {
                None
            };
            Record::Config {
                resource,
                key,
                value,
            }
        }
        7 | 8 => {
            let node = r.node("fence node")?;
            let epoch = r.uvarint("fence epoch")?;
            if type_id == 7 {
                Record::FenceBroker { node, epoch }
            } else {
                Record::UnfenceBroker { node, epoch }
            }
        }
        9 => Record::RemoveTopic {
            id: r.uuid("removed topic id")?,
        },
        11 => Record::ScramCredential(ScramRecord {
            user: r.string("SCRAM user")?,
            mechanism: r.mechanism()?,
            salt: r.bytes("SCRAM salt")?,
            iterations: u32::try_from(r.uvarint("SCRAM iterations")?).map_err(|_| {
                DecodeError::Invalid {
                    what: "SCRAM iterations",
                }
            })?,
            stored_key: r.bytes("SCRAM stored key")?,
            server_key: r.bytes("SCRAM server key")?,
        }),
        12 => Record::RemoveScramCredential {
            user: r.string("SCRAM user")?,
            mechanism: r.mechanism()?,
        },
        10 => {
            let token_id = r.string("token id")?;
            let owner = r.string("token owner")?;
            let requester = r.string("token requester")?;
            let count = r.uvarint("token renewers")?;
            if count > crate::tokens::RENEWERS_MAX as u64 {
                return Err(DecodeError::Invalid {
                    what: "token renewers",
                });
            }
            let mut renewers = Vec::new();
            for _ in 0..count {
                renewers.push(r.string("token renewer")?);
            }
            Record::DelegationToken(crate::tokens::TokenRecord {
                token_id,
                owner,
                requester,
                renewers,
                issue_ms: r.varint("token issue time")?,
                max_ms: r.varint("token max time")?,
                expiry_ms: r.varint("token expiry time")?,
            })
        }
        26 => Record::RemoveDelegationToken {
            token_id: r.string("token id")?,
        },
        16 => {
            let what = "client quota";
            let mut component = || -> Result<crate::quota::Component, DecodeError> {
                Ok(match r.u8(what)? {
                    0 => None,
                    1 => Some(None),
                    2 => Some(Some(r.string(what)?)),
                    _ => return Err(DecodeError::Invalid { what }),
                })
            };
            let entity = crate::quota::QuotaEntity {
                user: component()?,
                client_id: component()?,
                ip: component()?,
            };
            let key = r.string(what)?;
            let value = match r.u8(what)? {
                0 => None,
                1 => {
                    let b: [u8; 8] = r.take(8, what)?.try_into().expect("8 bytes");
                    Some(crate::quota::QuotaValue(f64::from_bits(
                        u64::from_be_bytes(b),
                    )))
                }
                _ => return Err(DecodeError::Invalid { what }),
            };
            let valid = match value {
                Some(v) => crate::quota::check_quota(&entity, &key, v.0).is_ok(),
                None => crate::quota::check_entity(&entity).is_ok(),
            };
            if !valid {
                return Err(DecodeError::Invalid { what });
            }
            Record::ClientQuota { entity, key, value }
        }
        13 | 14 => {
            let b = r.acl()?;
            if type_id == 13 {
                Record::Acl(b)
            } else {
                Record::RemoveAcl(b)
            }
        }
        15 => {
            let node = r.node("producer ids node")?;
            let first = r.varint("producer ids first")?;
            let size = u32::try_from(r.uvarint("producer ids size")?).map_err(|_| {
                DecodeError::Invalid {
                    what: "producer ids size",
                }
            })?;
            Record::ProducerIds(ProducerIdsBlock { node, first, size })
        }
        100 => Record::ClusterId {
            cluster_id: r.string("cluster id")?,
        },
        101 => Record::Revision {
            revision: r.uvarint("revision")?,
        },
        102 => {
            let name = r.string("feature name")?;
            let level = r.i16("feature level")?;
            if crate::features::check_level_record(&name, level).is_err() {
                return Err(DecodeError::Invalid {
                    what: "feature level",
                });
            }
            Record::FeatureLevel { name, level }
        }
        _ => unreachable!("type checked above"),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing { what: "record" });
    }
    Ok(record)
}

pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), DecodeError> {
    put_bytes(out, s.as_bytes())
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), DecodeError> {
    if b.len() > STRING_BYTES_MAX {
        return Err(DecodeError::TooLarge { what: "string" });
    }
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
    Ok(())
}

pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated { what });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid { what }),
        }
    }

    pub(crate) fn uuid(&mut self, what: &'static str) -> Result<[u8; 16], DecodeError> {
        let b = self.take(16, what)?;
        let mut id = [0u8; 16];
        id.copy_from_slice(b);
        Ok(id)
    }

    pub(crate) fn uvarint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && bits > 1 {
                return Err(DecodeError::Invalid { what });
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                // Canonical only: a last byte of zero (after the first) is a padded form.
                if i > 0 && b == 0 {
                    return Err(DecodeError::Invalid { what });
                }
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid { what })
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let u = self.uvarint(what)?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        i32::try_from(self.varint(what)?).map_err(|_| DecodeError::Invalid { what })
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        i16::try_from(self.varint(what)?).map_err(|_| DecodeError::Invalid { what })
    }

    /// A node id: a non-negative i32.
    pub(crate) fn node(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let n = self.i32(what)?;
        if n < 0 {
            return Err(DecodeError::Invalid { what });
        }
        Ok(n)
    }

    /// A list of at most [`REPLICAS_MAX`] node ids.
    pub(crate) fn nodes(&mut self, what: &'static str) -> Result<Vec<i32>, DecodeError> {
        let n = self.count(what, 1)?;
        if n > REPLICAS_MAX {
            return Err(DecodeError::TooLarge { what });
        }
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(self.node(what)?);
        }
        Ok(nodes)
    }

    fn port(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        u16::try_from(self.uvarint(what)?).map_err(|_| DecodeError::Invalid { what })
    }

    /// A count of items each at least `min_item_bytes` long: never more than the bytes left
    /// could hold, so no allocation is sized by a claim the bytes cannot back.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_item_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.uvarint(what)?;
        let fits = (self.buf.len() / min_item_bytes.max(1)) as u64;
        if n > fits {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes(what)?;
        String::from_utf8(b).map_err(|_| DecodeError::Invalid { what })
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let n = self.uvarint(what)?;
        if n > STRING_BYTES_MAX as u64 {
            return Err(DecodeError::TooLarge { what });
        }
        Ok(self.take(n as usize, what)?.to_vec())
    }

    fn acl(&mut self) -> Result<crate::acl::AclBinding, DecodeError> {
        use crate::acl::*;
        let what = "ACL binding";
        let bad = || DecodeError::Invalid { what };
        let resource_type = ResourceType::from_code(self.u8(what)? as i8).ok_or_else(bad)?;
        let name = self.string(what)?;
        let pattern = PatternType::from_code(self.u8(what)? as i8).ok_or_else(bad)?;
        let principal = self.string(what)?;
        let host = self.string(what)?;
        let operation = AclOperation::from_code(self.u8(what)? as i8).ok_or_else(bad)?;
        let permission = AclPermission::from_code(self.u8(what)? as i8).ok_or_else(bad)?;
        let b = AclBinding {
            resource_type,
            name,
            pattern,
            principal,
            host,
            operation,
            permission,
        };
        check_binding(&b).map_err(|_| bad())?;
        Ok(b)
    }

    fn mechanism(&mut self) -> Result<i8, DecodeError> {
        i8::try_from(self.varint("SCRAM mechanism")?).map_err(|_| DecodeError::Invalid {
            what: "SCRAM mechanism",
        })
    }
}
