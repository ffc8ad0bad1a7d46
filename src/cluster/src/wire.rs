//! The rpc methods of the controller runtime and their bodies: commands forwarded to the
//! active controller with their answers, the committed-entry pull of nodes without a
//! replica of the controller log, the answer to a leader report (whose request body is
//! `sluice_meta::leaders`'s own message), and the method range left to the broker. Every
//! body of this module starts with a format version byte
//! ([`WIRE_VERSION`]); integers are big-endian, strings and byte strings a u32 length then
//! the bytes, lists a u32 count then the items, options and outcomes a tag byte first.
//! Decoding never panics and never allocates more than the input backs (every count and
//! length is checked against the bytes that remain); anything malformed, an unknown version
//! or trailing bytes are an error.

use std::collections::BTreeMap;

use bytes::Bytes;
use sluice_meta::acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use sluice_meta::controller::{
    AlterConfig, ConfigTarget, CreateToken, QuorumReplica, QuorumView, QuotaAlteration,
    Registration, ScramChange, TopicCreated,
};
use sluice_meta::features::{FeatureUpdate, SupportedFeature, UpgradeType};
use sluice_meta::quota::{QuotaEntity, QuotaValue};
use sluice_meta::tokens::TokenRecord;
use sluice_meta::{
    Answer, ApiError, Endpoint, ListenerEndpoint, NewTopic, ProducerIdsBlock, ScramRecord,
};

/// The fewest bytes an ACL binding or filter takes (four codes, three lengths or tags).
const ACL_BYTES_MIN: usize = 4 + 3;

/// The format version this build writes and reads.
pub const WIRE_VERSION: u8 = 2;

/// Method numbers (`sluice_rpc::Request::method`).
pub mod method {
    pub const CREATE_TOPICS: u16 = 1;
    pub const DELETE_TOPICS: u16 = 2;
    pub const CREATE_PARTITIONS: u16 = 3;
    pub const ALTER_CONFIGS: u16 = 4;
    pub const ALLOCATE_PRODUCER_IDS: u16 = 5;
    pub const REGISTER_BROKER: u16 = 6;
    pub const BROKER_HEARTBEAT: u16 = 7;
    /// Committed controller-log entries after an index (long poll).
    pub const FETCH_COMMITTED: u16 = 8;
    /// Partition-leader reports (see `crate::gossip`): the body is one message of
    /// `sluice_meta::leaders::encode_updates`, the answer a [`super::ReportAnswer`].
    pub const LEADER_REPORTS: u16 = 9;
    /// AlterPartitionReassignments (a command, as methods 1 to 7).
    pub const ALTER_PARTITION_REASSIGNMENTS: u16 = 10;
    /// A partition leader's report that its reassignment is done (a command).
    pub const REASSIGNMENT_COMPLETE: u16 = 11;
    /// The active controller's applied metadata index (a command that changes nothing).
    pub const METADATA_INDEX: u16 = 12;
    /// AlterUserScramCredentials (a command).
    pub const ALTER_SCRAM: u16 = 13;
    /// CreateAcls (a command).
    pub const CREATE_ACLS: u16 = 14;
    /// DeleteAcls (a command).
    pub const DELETE_ACLS: u16 = 15;
    /// AlterClientQuotas (a command).
    pub const ALTER_QUOTAS: u16 = 16;
    /// UpdateFeatures (a command).
    pub const UPDATE_FEATURES: u16 = 17;
    /// DescribeQuorum (a command that changes nothing, answered by the active controller's
    /// runtime).
    pub const DESCRIBE_QUORUM: u16 = 18;
    /// CreateDelegationToken, RenewDelegationToken, ExpireDelegationToken (commands).
    pub const CREATE_TOKEN: u16 = 19;
    pub const RENEW_TOKEN: u16 = 20;
    pub const EXPIRE_TOKEN: u16 = 21;
    /// Methods from here to [`EXTENSION_MAX`] belong to the node's owner (the broker): they
    /// go to the `Extension` it registered (`ControllerNode::set_extension`), or are
    /// UNKNOWN_METHOD while none is.
    pub const EXTENSION_MIN: u16 = 0x8000;
    pub const EXTENSION_MAX: u16 = u16::MAX;
}

/// Response statuses of the owner (`sluice_rpc::status::APP_MIN` and up).
pub mod status {
    /// This node is not the active controller; the body is the node it believes leads
    /// (u64, 0: none known).
    pub const NOT_CONTROLLER: u16 = sluice_rpc::status::APP_MIN;
    /// The body did not decode.
    pub const MALFORMED: u16 = sluice_rpc::status::APP_MIN + 1;
    /// This node holds no replica of the controller log (a pull sent to a broker-only node),
    /// or it stopped on an error.
    pub const UNAVAILABLE: u16 = sluice_rpc::status::APP_MIN + 2;
}

/// A command for the active controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<(String, i32)>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<AlterConfig>,
        validate_only: bool,
    },
    AllocateProducerIds {
        node: i32,
        epoch: u64,
    },
    RegisterBroker(Registration),
    BrokerHeartbeat {
        node: i32,
        epoch: u64,
        caught_up: bool,
    },
    /// Per partition (topic name, index) the target replicas, or `None` to cancel.
    AlterPartitionReassignments {
        partitions: Vec<(String, i32, Option<Vec<i32>>)>,
    },
    ReassignmentComplete {
        topic: [u8; 16],
        partition: i32,
        revision: u64,
    },
    /// A read barrier, answered by the active controller at once with the Raft index its
    /// image has applied: every change it acknowledged before it answers is at or below
    /// that index, so a node that has applied up to it answers reads (such as
    /// ListPartitionReassignments, which Kafka answers from its controller) as the
    /// controller would have when the request arrived.
    MetadataIndex,
    /// AlterUserScramCredentials: upserts and deletions, in request order.
    AlterScram {
        changes: Vec<ScramChange>,
    },
    /// CreateAcls: the bindings, in request order.
    CreateAcls {
        bindings: Vec<AclBinding>,
    },
    /// DeleteAcls: the filters, in request order.
    DeleteAcls {
        filters: Vec<AclFilter>,
    },
    /// AlterClientQuotas: the entries, in request order.
    AlterQuotas {
        entries: Vec<QuotaAlteration>,
        validate_only: bool,
    },
    /// UpdateFeatures: the updates, in request order.
    UpdateFeatures {
        updates: Vec<FeatureUpdate>,
        validate_only: bool,
    },
    /// DescribeQuorum: the controller log's leader, epoch, high watermark and replicas.
    DescribeQuorum,
    /// CreateDelegationToken, checked by the broker, with the id it chose.
    CreateToken(CreateToken),
    /// RenewDelegationToken by `principal` of token `token_id`.
    RenewToken {
        token_id: String,
        principal: String,
        period_ms: i64,
    },
    /// ExpireDelegationToken by `principal` of token `token_id` (negative: at once).
    ExpireToken {
        token_id: String,
        principal: String,
        period_ms: i64,
    },
}

impl Command {
    pub fn method(&self) -> u16 {
        match self {
            Command::CreateTopics { .. } => method::CREATE_TOPICS,
            Command::DeleteTopics { .. } => method::DELETE_TOPICS,
            Command::CreatePartitions { .. } => method::CREATE_PARTITIONS,
            Command::AlterConfigs { .. } => method::ALTER_CONFIGS,
            Command::AllocateProducerIds { .. } => method::ALLOCATE_PRODUCER_IDS,
            Command::RegisterBroker(_) => method::REGISTER_BROKER,
            Command::BrokerHeartbeat { .. } => method::BROKER_HEARTBEAT,
            Command::AlterPartitionReassignments { .. } => method::ALTER_PARTITION_REASSIGNMENTS,
            Command::ReassignmentComplete { .. } => method::REASSIGNMENT_COMPLETE,
            Command::MetadataIndex => method::METADATA_INDEX,
            Command::AlterScram { .. } => method::ALTER_SCRAM,
            Command::CreateAcls { .. } => method::CREATE_ACLS,
            Command::DeleteAcls { .. } => method::DELETE_ACLS,
            Command::AlterQuotas { .. } => method::ALTER_QUOTAS,
            Command::UpdateFeatures { .. } => method::UPDATE_FEATURES,
            Command::DescribeQuorum => method::DESCRIBE_QUORUM,
            Command::CreateToken(_) => method::CREATE_TOKEN,
            Command::RenewToken { .. } => method::RENEW_TOKEN,
            Command::ExpireToken { .. } => method::EXPIRE_TOKEN,
        }
    }

    /// The answer that fails every part of this command with `code`.
    pub fn fail(&self, code: i16, message: &str) -> Answer {
        let e = ApiError {
            code,
            message: message.to_string(),
        };
        match self {
            Command::CreateTopics { topics, .. } => Answer::CreateTopics(
                topics
                    .iter()
                    .map(|t| (t.name.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::DeleteTopics { names } => {
                Answer::DeleteTopics(names.iter().map(|n| (n.clone(), Err(e.clone()))).collect())
            }
            Command::CreatePartitions { topics, .. } => Answer::CreatePartitions(
                topics
                    .iter()
                    .map(|t| (t.0.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::AlterConfigs { changes, .. } => Answer::AlterConfigs(
                changes
                    .iter()
                    .map(|c| (c.target.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::AllocateProducerIds { .. } => Answer::AllocateProducerIds(Err(e)),
            Command::RegisterBroker(_) => Answer::RegisterBroker(Err(e)),
            Command::BrokerHeartbeat { .. } => Answer::BrokerHeartbeat(Err(e)),
            Command::AlterPartitionReassignments { partitions } => {
                Answer::AlterPartitionReassignments(
                    partitions
                        .iter()
                        .map(|p| ((p.0.clone(), p.1), Err(e.clone())))
                        .collect(),
                )
            }
            Command::ReassignmentComplete { .. } => Answer::ReassignmentComplete(Err(e)),
            Command::MetadataIndex => Answer::MetadataIndex(Err(e)),
            Command::AlterScram { changes } => Answer::AlterScram(
                changes
                    .iter()
                    .map(|c| (c.user().to_string(), Err(e.clone())))
                    .collect(),
            ),
            Command::CreateAcls { bindings } => Answer::CreateAcls(
                bindings
                    .iter()
                    .map(|b| (b.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::DeleteAcls { filters } => Answer::DeleteAcls(
                filters
                    .iter()
                    .map(|f| (f.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::AlterQuotas { entries, .. } => Answer::AlterQuotas(
                entries
                    .iter()
                    .map(|q| (q.entity.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::UpdateFeatures { updates, .. } => Answer::UpdateFeatures(
                updates
                    .iter()
                    .map(|u| (u.name.clone(), Err(e.clone())))
                    .collect(),
            ),
            Command::DescribeQuorum => Answer::DescribeQuorum(Err(e)),
            Command::CreateToken(_) => Answer::CreateToken(Err(e)),
            Command::RenewToken { .. } | Command::ExpireToken { .. } => Answer::TokenExpiry(Err(e)),
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        match self {
            Command::CreateTopics {
                topics,
                validate_only,
            } => {
                w.bool(*validate_only);
                w.list(topics, |w, t| {
                    w.str(&t.name);
                    w.i32(t.partitions);
                    w.i16(t.replication_factor);
                    w.list(&t.assignments, |w, (p, replicas)| {
                        w.i32(*p);
                        w.list(replicas, |w, n| w.i32(*n));
                    });
                    w.configs(&t.configs);
                });
            }
            Command::DeleteTopics { names } => w.list(names, |w, n| w.str(n)),
            Command::CreatePartitions {
                topics,
                validate_only,
            } => {
                w.bool(*validate_only);
                w.list(topics, |w, (n, c)| {
                    w.str(n);
                    w.i32(*c);
                });
            }
            Command::AlterConfigs {
                changes,
                validate_only,
            } => {
                w.bool(*validate_only);
                w.list(changes, |w, c| {
                    w.target(&c.target);
                    w.list(&c.ops, |w, (k, v)| {
                        w.str(k);
                        w.opt_str(v.as_deref());
                    });
                    w.bool(c.replace);
                });
            }
            Command::AllocateProducerIds { node, epoch } => {
                w.i32(*node);
                w.u64(*epoch);
            }
            Command::RegisterBroker(r) => {
                w.i32(r.node);
                w.raw(&r.incarnation);
                w.raw(&r.directory);
                w.endpoint(&r.kafka);
                w.list(&r.listeners, |w, l| {
                    w.str(&l.name);
                    w.str(&l.host);
                    w.u32(u32::from(l.port));
                    w.i32(l.security_protocol.into());
                });
                w.endpoint(&r.rpc);
                w.opt_str(r.rack.as_deref());
                w.list(&r.features, |w, f| {
                    w.str(&f.name);
                    w.i16(f.min);
                    w.i16(f.max);
                });
            }
            Command::BrokerHeartbeat {
                node,
                epoch,
                caught_up,
            } => {
                w.i32(*node);
                w.u64(*epoch);
                w.bool(*caught_up);
            }
            Command::AlterPartitionReassignments { partitions } => {
                w.list(partitions, |w, (name, p, target)| {
                    w.str(name);
                    w.i32(*p);
                    w.bool(target.is_some());
                    if let Some(t) = target {
                        w.list(t, |w, n| w.i32(*n));
                    }
                });
            }
            Command::ReassignmentComplete {
                topic,
                partition,
                revision,
            } => {
                w.raw(topic);
                w.i32(*partition);
                w.u64(*revision);
            }
            Command::MetadataIndex => {}
            Command::AlterScram { changes } => {
                w.list(changes, |w, c| match c {
                    ScramChange::Upsert(r) => {
                        w.u8(0);
                        w.str(&r.user);
                        w.u8(r.mechanism as u8);
                        w.bytes(&r.salt);
                        w.u32(r.iterations);
                        w.bytes(&r.stored_key);
                        w.bytes(&r.server_key);
                    }
                    ScramChange::Delete { user, mechanism } => {
                        w.u8(1);
                        w.str(user);
                        w.u8(*mechanism as u8);
                    }
                });
            }
            Command::CreateAcls { bindings } => w.list(bindings, |w, b| w.acl(b)),
            Command::DeleteAcls { filters } => w.list(filters, |w, f| w.acl_filter(f)),
            Command::AlterQuotas {
                entries,
                validate_only,
            } => {
                w.bool(*validate_only);
                w.list(entries, |w, q| {
                    w.quota_entity(&q.entity);
                    w.list(&q.ops, |w, (k, v)| {
                        w.str(k);
                        w.bool(v.is_some());
                        if let Some(v) = v {
                            w.u64(v.0.to_bits());
                        }
                    });
                });
            }
            Command::UpdateFeatures {
                updates,
                validate_only,
            } => {
                w.bool(*validate_only);
                w.list(updates, |w, u| {
                    w.str(&u.name);
                    w.i16(u.level);
                    w.u8(match u.upgrade {
                        UpgradeType::Upgrade => 1,
                        UpgradeType::SafeDowngrade => 2,
                        UpgradeType::UnsafeDowngrade => 3,
                    });
                });
            }
            Command::DescribeQuorum => {}
            Command::CreateToken(c) => {
                w.str(&c.token_id);
                w.str(&c.owner);
                w.str(&c.requester);
                w.list(&c.renewers, |w, r| w.str(r));
                w.u64(c.max_lifetime_ms as u64);
            }
            Command::RenewToken {
                token_id,
                principal,
                period_ms,
            }
            | Command::ExpireToken {
                token_id,
                principal,
                period_ms,
            } => {
                w.str(token_id);
                w.str(principal);
                w.u64(*period_ms as u64);
            }
        }
        w.finish()
    }

    pub fn decode(method: u16, body: &[u8]) -> Result<Command, WireError> {
        let command = (method::CREATE_TOPICS..=method::BROKER_HEARTBEAT).contains(&method)
            || method == method::ALTER_PARTITION_REASSIGNMENTS
            || method == method::REASSIGNMENT_COMPLETE
            || method == method::METADATA_INDEX
            || (method::ALTER_SCRAM..=method::EXPIRE_TOKEN).contains(&method);
        if !command {
            return Err(WireError("unknown method"));
        }
        let mut r = Reader::new(body)?;
        let c = match method {
            method::CREATE_TOPICS => {
                let validate_only = r.bool()?;
                let topics = r.list(2 + 4 + 2 + 4 + 4, |r| {
                    Ok(NewTopic {
                        name: r.str()?,
                        partitions: r.i32()?,
                        replication_factor: r.i16()?,
                        assignments: r.list(8, |r| Ok((r.i32()?, r.list(4, |r| r.i32())?)))?,
                        configs: r.configs()?,
                    })
                })?;
                Command::CreateTopics {
                    topics,
                    validate_only,
                }
            }
            method::DELETE_TOPICS => Command::DeleteTopics {
                names: r.list(4, |r| r.str())?,
            },
            method::CREATE_PARTITIONS => {
                let validate_only = r.bool()?;
                let topics = r.list(8, |r| Ok((r.str()?, r.i32()?)))?;
                Command::CreatePartitions {
                    topics,
                    validate_only,
                }
            }
            method::ALTER_CONFIGS => {
                let validate_only = r.bool()?;
                let changes = r.list(6, |r| {
                    Ok(AlterConfig {
                        target: r.target()?,
                        ops: r.list(5, |r| Ok((r.str()?, r.opt_str()?)))?,
                        replace: r.bool()?,
                    })
                })?;
                Command::AlterConfigs {
                    changes,
                    validate_only,
                }
            }
            method::ALLOCATE_PRODUCER_IDS => Command::AllocateProducerIds {
                node: r.i32()?,
                epoch: r.u64()?,
            },
            method::REGISTER_BROKER => Command::RegisterBroker(Registration {
                node: r.i32()?,
                incarnation: r.array16()?,
                directory: r.array16()?,
                kafka: r.endpoint()?,
                listeners: r.list(4 + 4 + 4 + 4, |r| {
                    let name = r.str()?;
                    let Endpoint { host, port } = r.endpoint()?;
                    Ok(ListenerEndpoint {
                        name,
                        host,
                        port,
                        security_protocol: i16::try_from(r.i32()?)
                            .map_err(|_| WireError("security protocol out of range"))?,
                    })
                })?,
                rpc: r.endpoint()?,
                rack: r.opt_str()?,
                features: r.list(4 + 2 + 2, |r| {
                    Ok(SupportedFeature {
                        name: r.str()?,
                        min: r.i16()?,
                        max: r.i16()?,
                    })
                })?,
            }),
            method::ALTER_PARTITION_REASSIGNMENTS => Command::AlterPartitionReassignments {
                partitions: r.list(4 + 4 + 1, |r| {
                    let name = r.str()?;
                    let p = r.i32()?;
                    let target = if r.bool()? {
                        Some(r.list(4, |r| r.i32())?)
                    } else {
                        None
                    };
                    Ok((name, p, target))
                })?,
            },
            method::REASSIGNMENT_COMPLETE => Command::ReassignmentComplete {
                topic: r.array16()?,
                partition: r.i32()?,
                revision: r.u64()?,
            },
            method::BROKER_HEARTBEAT => Command::BrokerHeartbeat {
                node: r.i32()?,
                epoch: r.u64()?,
                caught_up: r.bool()?,
            },
            method::METADATA_INDEX => Command::MetadataIndex,
            method::ALTER_SCRAM => Command::AlterScram {
                changes: r.list(1 + 4 + 1, |r| match r.u8()? {
                    0 => Ok(ScramChange::Upsert(ScramRecord {
                        user: r.str()?,
                        mechanism: r.u8()? as i8,
                        salt: r.bytes()?.to_vec(),
                        iterations: r.u32()?,
                        stored_key: r.bytes()?.to_vec(),
                        server_key: r.bytes()?.to_vec(),
                    })),
                    1 => Ok(ScramChange::Delete {
                        user: r.str()?,
                        mechanism: r.u8()? as i8,
                    }),
                    _ => Err(WireError("bad SCRAM change")),
                })?,
            },
            method::CREATE_ACLS => Command::CreateAcls {
                bindings: r.list(ACL_BYTES_MIN, |r| r.acl())?,
            },
            method::DELETE_ACLS => Command::DeleteAcls {
                filters: r.list(ACL_BYTES_MIN, |r| r.acl_filter())?,
            },
            method::ALTER_QUOTAS => {
                let validate_only = r.bool()?;
                let entries = r.list(3 + 4, |r| {
                    Ok(QuotaAlteration {
                        entity: r.quota_entity()?,
                        ops: r.list(4 + 1, |r| {
                            let key = r.str()?;
                            let value = if r.bool()? {
                                Some(QuotaValue(f64::from_bits(r.u64()?)))
                            } else {
                                None
                            };
                            Ok((key, value))
                        })?,
                    })
                })?;
                Command::AlterQuotas {
                    entries,
                    validate_only,
                }
            }
            method::UPDATE_FEATURES => {
                let validate_only = r.bool()?;
                let updates = r.list(4 + 2 + 1, |r| {
                    Ok(FeatureUpdate {
                        name: r.str()?,
                        level: r.i16()?,
                        upgrade: UpgradeType::from_code(r.u8()? as i8)
                            .ok_or(WireError("bad upgrade type"))?,
                    })
                })?;
                Command::UpdateFeatures {
                    updates,
                    validate_only,
                }
            }
            method::DESCRIBE_QUORUM => Command::DescribeQuorum,
            method::CREATE_TOKEN => Command::CreateToken(CreateToken {
                token_id: r.str()?,
                owner: r.str()?,
                requester: r.str()?,
                renewers: r.list(4, |r| r.str())?,
                max_lifetime_ms: r.u64()? as i64,
            }),
            method::RENEW_TOKEN => Command::RenewToken {
                token_id: r.str()?,
                principal: r.str()?,
                period_ms: r.u64()? as i64,
            },
            method::EXPIRE_TOKEN => Command::ExpireToken {
                token_id: r.str()?,
                principal: r.str()?,
                period_ms: r.u64()? as i64,
            },
            _ => unreachable!("checked above"),
        };
        r.end()?;
        Ok(c)
    }
}

pub fn encode_answer(a: &Answer) -> Bytes {
    let mut w = Writer::new();
    match a {
        Answer::CreateTopics(v) => {
            w.u8(1);
            w.list(v, |w, (n, o)| {
                w.str(n);
                w.outcome(o, |w, t| {
                    w.raw(&t.id);
                    w.i32(t.partitions);
                    w.i16(t.replication_factor);
                    w.configs(&t.configs);
                });
            });
        }
        Answer::DeleteTopics(v) => {
            w.u8(2);
            w.list(v, |w, (n, o)| {
                w.str(n);
                w.outcome(o, |w, id| w.raw(id));
            });
        }
        Answer::CreatePartitions(v) => {
            w.u8(3);
            w.list(v, |w, (n, o)| {
                w.str(n);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::AlterConfigs(v) => {
            w.u8(4);
            w.list(v, |w, (t, o)| {
                w.target(t);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::AllocateProducerIds(o) => {
            w.u8(5);
            w.outcome(o, |w, b| {
                w.i32(b.node);
                w.u64(b.first as u64);
                w.u32(b.size);
            });
        }
        Answer::RegisterBroker(o) => {
            w.u8(6);
            w.outcome(o, |w, e| w.u64(*e));
        }
        Answer::BrokerHeartbeat(o) => {
            w.u8(7);
            w.outcome(o, |w, f| w.bool(*f));
        }
        Answer::AlterPartitionReassignments(v) => {
            w.u8(8);
            w.list(v, |w, ((n, p), o)| {
                w.str(n);
                w.i32(*p);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::ReassignmentComplete(o) => {
            w.u8(9);
            w.outcome(o, |_, _| {});
        }
        Answer::MetadataIndex(o) => {
            w.u8(10);
            w.outcome(o, |w, i| w.u64(*i));
        }
        Answer::AlterScram(v) => {
            w.u8(11);
            w.list(v, |w, (user, o)| {
                w.str(user);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::CreateAcls(v) => {
            w.u8(12);
            w.list(v, |w, (b, o)| {
                w.acl(b);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::AlterQuotas(v) => {
            w.u8(14);
            w.list(v, |w, (e, o)| {
                w.quota_entity(e);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::DescribeQuorum(o) => {
            w.u8(16);
            w.outcome(o, |w, q| {
                w.i32(q.leader);
                w.i32(q.epoch);
                w.u64(q.high_watermark as u64);
                for list in [&q.voters, &q.observers] {
                    w.list(list, |w, r| {
                        w.i32(r.node);
                        w.u64(r.log_end_offset as u64);
                        w.u64(r.last_fetch_ms as u64);
                        w.u64(r.last_caught_up_ms as u64);
                    });
                }
            });
        }
        Answer::UpdateFeatures(v) => {
            w.u8(15);
            w.list(v, |w, (name, o)| {
                w.str(name);
                w.outcome(o, |_, _| {});
            });
        }
        Answer::DeleteAcls(v) => {
            w.u8(13);
            w.list(v, |w, (f, o)| {
                w.acl_filter(f);
                w.outcome(o, |w, bs| w.list(bs, |w, b| w.acl(b)));
            });
        }
        Answer::CreateToken(o) => {
            w.u8(17);
            w.outcome(o, |w, t| {
                w.str(&t.token_id);
                w.str(&t.owner);
                w.str(&t.requester);
                w.list(&t.renewers, |w, r| w.str(r));
                for v in [t.issue_ms, t.max_ms, t.expiry_ms] {
                    w.u64(v as u64);
                }
            });
        }
        Answer::TokenExpiry(o) => {
            w.u8(18);
            w.outcome(o, |w, at| w.u64(*at as u64));
        }
    }
    w.finish()
}

pub fn decode_answer(body: &[u8]) -> Result<Answer, WireError> {
    let mut r = Reader::new(body)?;
    let unit = |_: &mut Reader| Ok(());
    let a = match r.u8()? {
        1 => Answer::CreateTopics(r.list(5, |r| {
            Ok((
                r.str()?,
                r.outcome(|r| {
                    Ok(TopicCreated {
                        id: r.array16()?,
                        partitions: r.i32()?,
                        replication_factor: r.i16()?,
                        configs: r.configs()?,
                    })
                })?,
            ))
        })?),
        2 => Answer::DeleteTopics(r.list(5, |r| Ok((r.str()?, r.outcome(|r| r.array16())?)))?),
        3 => Answer::CreatePartitions(r.list(5, |r| Ok((r.str()?, r.outcome(unit)?)))?),
        4 => Answer::AlterConfigs(r.list(2, |r| Ok((r.target()?, r.outcome(unit)?)))?),
        5 => Answer::AllocateProducerIds(r.outcome(|r| {
            Ok(ProducerIdsBlock {
                node: r.i32()?,
                first: r.u64()? as i64,
                size: r.u32()?,
            })
        })?),
        6 => Answer::RegisterBroker(r.outcome(|r| r.u64())?),
        7 => Answer::BrokerHeartbeat(r.outcome(|r| r.bool())?),
        8 => Answer::AlterPartitionReassignments(
            r.list(9, |r| Ok(((r.str()?, r.i32()?), r.outcome(unit)?)))?,
        ),
        9 => Answer::ReassignmentComplete(r.outcome(unit)?),
        10 => Answer::MetadataIndex(r.outcome(|r| r.u64())?),
        11 => Answer::AlterScram(r.list(5, |r| Ok((r.str()?, r.outcome(unit)?)))?),
        12 => Answer::CreateAcls(r.list(ACL_BYTES_MIN + 1, |r| Ok((r.acl()?, r.outcome(unit)?)))?),
        14 => Answer::AlterQuotas(r.list(3 + 1, |r| Ok((r.quota_entity()?, r.outcome(unit)?)))?),
        16 => Answer::DescribeQuorum(r.outcome(|r| {
            let leader = r.i32()?;
            let epoch = r.i32()?;
            let high_watermark = r.u64()? as i64;
            let mut lists = [Vec::new(), Vec::new()];
            for list in &mut lists {
                *list = r.list(4 + 8 * 3, |r| {
                    Ok(QuorumReplica {
                        node: r.i32()?,
                        log_end_offset: r.u64()? as i64,
                        last_fetch_ms: r.u64()? as i64,
                        last_caught_up_ms: r.u64()? as i64,
                    })
                })?;
            }
            let [voters, observers] = lists;
            Ok(QuorumView {
                leader,
                epoch,
                high_watermark,
                voters,
                observers,
            })
        })?),
        15 => Answer::UpdateFeatures(r.list(5, |r| Ok((r.str()?, r.outcome(unit)?)))?),
        13 => Answer::DeleteAcls(r.list(ACL_BYTES_MIN + 1, |r| {
            Ok((
                r.acl_filter()?,
                r.outcome(|r| r.list(ACL_BYTES_MIN, |r| r.acl()))?,
            ))
        })?),
        17 => Answer::CreateToken(r.outcome(|r| {
            Ok(TokenRecord {
                token_id: r.str()?,
                owner: r.str()?,
                requester: r.str()?,
                renewers: r.list(4, |r| r.str())?,
                issue_ms: r.u64()? as i64,
                max_ms: r.u64()? as i64,
                expiry_ms: r.u64()? as i64,
            })
        })?),
        18 => Answer::TokenExpiry(r.outcome(|r| Ok(r.u64()? as i64))?),
        _ => return Err(WireError("unknown answer type")),
    };
    r.end()?;
    Ok(a)
}

/// A pull of committed controller-log entries: those after Raft index `after`, about
/// `max_bytes` of them (at least one if any), waiting up to `wait_ms` for one to commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    pub after: u64,
    pub max_bytes: u32,
    pub wait_ms: u32,
}

/// The answer to a pull: metadata batches by Raft index, in order; `last` is the highest
/// index the answer covers (Raft's own entries between batches carry no metadata and are
/// not sent); `leader` is the node the answering voter believes leads (0: none). When the
/// voter's log no longer holds the entry after `after` (a metadata snapshot compacted it),
/// `snapshot` is the image as of a Raft index (a [`crate::snapshot`] payload) and the
/// entries follow that index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResponse {
    pub leader: u64,
    pub last: u64,
    pub entries: Vec<(u64, Bytes)>,
    pub snapshot: Option<(u64, Bytes)>,
}

impl FetchRequest {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u64(self.after);
        w.u32(self.max_bytes);
        w.u32(self.wait_ms);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<FetchRequest, WireError> {
        let mut r = Reader::new(body)?;
        let f = FetchRequest {
            after: r.u64()?,
            max_bytes: r.u32()?,
            wait_ms: r.u32()?,
        };
        r.end()?;
        Ok(f)
    }
}

impl FetchResponse {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u64(self.leader);
        w.u64(self.last);
        w.list(&self.entries, |w, (i, b)| {
            w.u64(*i);
            w.bytes(b);
        });
        w.bool(self.snapshot.is_some());
        if let Some((i, b)) = &self.snapshot {
            w.u64(*i);
            w.bytes(b);
        }
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<FetchResponse, WireError> {
        let mut r = Reader::new(body)?;
        let leader = r.u64()?;
        let last = r.u64()?;
        let entries = r.list(12, |r| Ok((r.u64()?, Bytes::copy_from_slice(r.bytes()?))))?;
        let snapshot = if r.bool()? {
            Some((r.u64()?, Bytes::copy_from_slice(r.bytes()?)))
        } else {
            None
        };
        r.end()?;
        // In order, after nothing the answer does not cover, and after its snapshot.
        let ordered = entries.windows(2).all(|p| p[0].0 < p[1].0)
            && entries.last().is_none_or(|e| e.0 <= last)
            && snapshot
                .as_ref()
                .is_none_or(|(i, _)| *i <= last && entries.first().is_none_or(|e| e.0 > *i));
        if !ordered {
            return Err(WireError("entries out of order"));
        }
        Ok(FetchResponse {
            leader,
            last,
            entries,
            snapshot,
        })
    }
}

/// The answer to [`method::LEADER_REPORTS`]: the receiver's incarnation (a random number
/// drawn whenever it attaches a leader table, so a sender can tell that the table it was
/// feeding is gone), and how many of the updates changed its table and how many its filter
/// refused (for the counters; the rest were stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportAnswer {
    pub incarnation: u64,
    pub applied: u32,
    pub refused: u32,
}

impl ReportAnswer {
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.u64(self.incarnation);
        w.u32(self.applied);
        w.u32(self.refused);
        w.finish()
    }

    pub fn decode(body: &[u8]) -> Result<ReportAnswer, WireError> {
        let mut r = Reader::new(body)?;
        let a = ReportAnswer {
            incarnation: r.u64()?,
            applied: r.u32()?,
            refused: r.u32()?,
        };
        r.end()?;
        if a.incarnation == 0 {
            return Err(WireError("incarnation 0"));
        }
        Ok(a)
    }
}

/// Encodes a u64 (a leader hint).
pub fn encode_u64(v: u64) -> Bytes {
    let mut w = Writer::new();
    w.u64(v);
    w.finish()
}

pub fn decode_u64(body: &[u8]) -> Result<u64, WireError> {
    let mut r = Reader::new(body)?;
    let v = r.u64()?;
    r.end()?;
    Ok(v)
}

/// A body that does not decode, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError(pub &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed controller rpc body: {}", self.0)
    }
}

impl std::error::Error for WireError {}

struct Writer(Vec<u8>);

impl Writer {
    fn new() -> Writer {
        Writer(vec![WIRE_VERSION])
    }
    fn finish(self) -> Bytes {
        Bytes::from(self.0)
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("a length within a frame fits u32"));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.raw(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn list<T>(&mut self, items: &[T], mut f: impl FnMut(&mut Writer, &T)) {
        self.len(items.len());
        for i in items {
            f(self, i);
        }
    }
    fn configs(&mut self, c: &BTreeMap<String, String>) {
        self.len(c.len());
        for (k, v) in c {
            self.str(k);
            self.str(v);
        }
    }
    fn endpoint(&mut self, e: &Endpoint) {
        self.str(&e.host);
        self.u32(u32::from(e.port));
    }
    fn target(&mut self, t: &ConfigTarget) {
        match t {
            ConfigTarget::Topic(n) => {
                self.u8(0);
                self.str(n);
            }
            ConfigTarget::Broker(None) => self.u8(1),
            ConfigTarget::Broker(Some(n)) => {
                self.u8(2);
                self.i32(*n);
            }
            ConfigTarget::ClientMetrics(n) => {
                self.u8(3);
                self.str(n);
            }
        }
    }
    fn acl(&mut self, b: &AclBinding) {
        self.u8(b.resource_type.code() as u8);
        self.str(&b.name);
        self.u8(b.pattern.code() as u8);
        self.str(&b.principal);
        self.str(&b.host);
        self.u8(b.operation.code() as u8);
        self.u8(b.permission.code() as u8);
    }
    fn quota_entity(&mut self, e: &QuotaEntity) {
        for c in [&e.user, &e.client_id, &e.ip] {
            match c {
                None => self.u8(0),
                Some(None) => self.u8(1),
                Some(Some(n)) => {
                    self.u8(2);
                    self.str(n);
                }
            }
        }
    }
    fn acl_filter(&mut self, f: &AclFilter) {
        self.u8(f.resource_type.code() as u8);
        self.opt_str(f.name.as_deref());
        self.u8(f.pattern.code() as u8);
        self.opt_str(f.principal.as_deref());
        self.opt_str(f.host.as_deref());
        self.u8(f.operation.code() as u8);
        self.u8(f.permission.code() as u8);
    }
    fn outcome<T>(&mut self, o: &Result<T, ApiError>, f: impl FnOnce(&mut Writer, &T)) {
        match o {
            Ok(v) => {
                self.u8(0);
                f(self, v);
            }
            Err(e) => {
                self.u8(1);
                self.i16(e.code);
                self.str(&e.message);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

type R<T> = Result<T, WireError>;

impl<'a> Reader<'a> {
    fn new(body: &'a [u8]) -> R<Reader<'a>> {
        let mut r = Reader(body);
        match r.u8()? {
            WIRE_VERSION => Ok(r),
            _ => Err(WireError("unknown format version")),
        }
    }
    fn end(&self) -> R<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError("trailing bytes"))
        }
    }
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        if self.0.len() < n {
            return Err(WireError("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn bool(&mut self) -> R<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError("bad boolean")),
        }
    }
    fn i16(&mut self) -> R<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn i32(&mut self) -> R<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn code<T>(&mut self, from: fn(i8) -> Option<T>) -> R<T> {
        from(self.u8()? as i8).ok_or(WireError("unknown ACL code"))
    }
    fn acl(&mut self) -> R<AclBinding> {
        Ok(AclBinding {
            resource_type: self.code(ResourceType::from_code)?,
            name: self.str()?,
            pattern: self.code(PatternType::from_code)?,
            principal: self.str()?,
            host: self.str()?,
            operation: self.code(AclOperation::from_code)?,
            permission: self.code(AclPermission::from_code)?,
        })
    }
    fn quota_entity(&mut self) -> R<QuotaEntity> {
        let mut component = || -> R<Option<Option<String>>> {
            Ok(match self.u8()? {
                0 => None,
                1 => Some(None),
                2 => Some(Some(self.str()?)),
                _ => return Err(WireError("bad quota entity")),
            })
        };
        Ok(QuotaEntity {
            user: component()?,
            client_id: component()?,
            ip: component()?,
        })
    }
    fn acl_filter(&mut self) -> R<AclFilter> {
        Ok(AclFilter {
            resource_type: self.code(ResourceType::from_code)?,
            name: self.opt_str()?,
            pattern: self.code(PatternType::from_code)?,
            principal: self.opt_str()?,
            host: self.opt_str()?,
            operation: self.code(AclOperation::from_code)?,
            permission: self.code(AclPermission::from_code)?,
        })
    }
    fn array16(&mut self) -> R<[u8; 16]> {
        Ok(self.take(16)?.try_into().expect("16"))
    }
    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn str(&mut self) -> R<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| WireError("string not UTF-8"))
    }
    fn opt_str(&mut self) -> R<Option<String>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(WireError("bad option tag")),
        }
    }
    /// A list of items of at least `item_bytes` each: the count is refused if the rest
    /// cannot hold that many, so nothing is allocated that the input does not back.
    fn list<T>(&mut self, item_bytes: usize, mut f: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_bytes.max(1)) > self.0.len() {
            return Err(WireError("count larger than the body"));
        }
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(f(self)?);
        }
        Ok(v)
    }
    fn configs(&mut self) -> R<BTreeMap<String, String>> {
        let kvs = self.list(8, |r| Ok((r.str()?, r.str()?)))?;
        let n = kvs.len();
        let map: BTreeMap<String, String> = kvs.into_iter().collect();
        if map.len() != n {
            return Err(WireError("config named twice"));
        }
        Ok(map)
    }
    fn endpoint(&mut self) -> R<Endpoint> {
        let host = self.str()?;
        let port = u16::try_from(self.u32()?).map_err(|_| WireError("port out of range"))?;
        Ok(Endpoint { host, port })
    }
    fn target(&mut self) -> R<ConfigTarget> {
        match self.u8()? {
            0 => Ok(ConfigTarget::Topic(self.str()?)),
            1 => Ok(ConfigTarget::Broker(None)),
            2 => Ok(ConfigTarget::Broker(Some(self.i32()?))),
            3 => Ok(ConfigTarget::ClientMetrics(self.str()?)),
            _ => Err(WireError("bad config target")),
        }
    }
    fn outcome<T>(&mut self, f: impl FnOnce(&mut Self) -> R<T>) -> R<Result<T, ApiError>> {
        match self.u8()? {
            0 => Ok(Ok(f(self)?)),
            1 => Ok(Err(ApiError {
                code: self.i16()?,
                message: self.str()?,
            })),
            _ => Err(WireError("bad outcome tag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> Vec<Command> {
        let mut t = NewTopic::new("a", 3, 2);
        t.assignments = vec![(0, vec![1, 2])];
        t.configs.insert("cleanup.policy".into(), "compact".into());
        vec![
            Command::CreateTopics {
                topics: vec![t, NewTopic::new("b", -1, -1)],
                validate_only: true,
            },
            Command::DeleteTopics {
                names: vec!["a".into()],
            },
            Command::CreatePartitions {
                topics: vec![("a".into(), 5)],
                validate_only: false,
            },
            Command::AlterConfigs {
                changes: vec![
                    AlterConfig {
                        target: ConfigTarget::ClientMetrics("sub".into()),
                        ops: vec![("interval.ms".into(), Some("1000".into()))],
                        replace: false,
                    },
                    AlterConfig {
                        target: ConfigTarget::Broker(Some(2)),
                        ops: vec![("k".into(), None), ("j".into(), Some("v".into()))],
                        replace: true,
                    },
                ],
                validate_only: false,
            },
            Command::AllocateProducerIds { node: 3, epoch: 9 },
            Command::RegisterBroker(Registration {
                node: 1,
                incarnation: [7; 16],
                directory: [8; 16],
                kafka: Endpoint {
                    host: "h".into(),
                    port: 9092,
                },
                listeners: vec![ListenerEndpoint {
                    name: "SSL".into(),
                    host: "h".into(),
                    port: 9092,
                    security_protocol: 1,
                }],
                rpc: Endpoint {
                    host: "r".into(),
                    port: 1,
                },
                rack: Some("x".into()),
                features: sluice_meta::features::supported(),
            }),
            Command::BrokerHeartbeat {
                node: 1,
                epoch: 2,
                caught_up: true,
            },
            Command::AlterPartitionReassignments {
                partitions: vec![("t".into(), 0, Some(vec![2, 3])), ("u".into(), 4, None)],
            },
            Command::ReassignmentComplete {
                topic: [5; 16],
                partition: 2,
                revision: 77,
            },
            Command::MetadataIndex,
            Command::AlterScram {
                changes: vec![
                    ScramChange::Upsert(ScramRecord {
                        user: "alice".into(),
                        mechanism: 2,
                        salt: vec![1, 2],
                        iterations: 4096,
                        stored_key: vec![3; 64],
                        server_key: vec![4; 64],
                    }),
                    ScramChange::Delete {
                        user: "bob".into(),
                        mechanism: 1,
                    },
                ],
            },
            Command::CreateAcls {
                bindings: vec![binding()],
            },
            Command::AlterQuotas {
                entries: vec![QuotaAlteration {
                    entity: QuotaEntity {
                        user: Some(None),
                        client_id: Some(Some("app".into())),
                        ip: None,
                    },
                    ops: vec![
                        ("producer_byte_rate".into(), Some(QuotaValue(1024.0))),
                        ("request_percentage".into(), None),
                    ],
                }],
                validate_only: true,
            },
            Command::UpdateFeatures {
                updates: vec![
                    FeatureUpdate {
                        name: "group.version".into(),
                        level: 0,
                        upgrade: UpgradeType::SafeDowngrade,
                    },
                    FeatureUpdate {
                        name: "metadata.version".into(),
                        level: 27,
                        upgrade: UpgradeType::Upgrade,
                    },
                ],
                validate_only: false,
            },
            Command::DescribeQuorum,
            Command::CreateToken(CreateToken {
                token_id: "tok".into(),
                owner: "User:alice".into(),
                requester: "User:admin".into(),
                renewers: vec!["User:bob".into()],
                max_lifetime_ms: -1,
            }),
            Command::RenewToken {
                token_id: "tok".into(),
                principal: "User:bob".into(),
                period_ms: 1000,
            },
            Command::ExpireToken {
                token_id: "tok".into(),
                principal: "User:alice".into(),
                period_ms: -1,
            },
            Command::DeleteAcls {
                filters: vec![
                    AclFilter::any(),
                    AclFilter {
                        name: Some("x".into()),
                        ..AclFilter::any()
                    },
                ],
            },
        ]
    }

    fn answers() -> Vec<Answer> {
        let e = || ApiError {
            code: 41,
            message: "m".into(),
        };
        vec![
            Answer::CreateTopics(vec![
                (
                    "a".into(),
                    Ok(TopicCreated {
                        id: [3; 16],
                        partitions: 2,
                        replication_factor: 1,
                        configs: BTreeMap::new(),
                    }),
                ),
                ("b".into(), Err(e())),
            ]),
            Answer::DeleteTopics(vec![("a".into(), Ok([1; 16]))]),
            Answer::CreatePartitions(vec![("a".into(), Ok(()))]),
            Answer::AlterConfigs(vec![(ConfigTarget::Topic("t".into()), Err(e()))]),
            Answer::AllocateProducerIds(Ok(ProducerIdsBlock {
                node: 1,
                first: 1000,
                size: 1000,
            })),
            Answer::RegisterBroker(Ok(4)),
            Answer::BrokerHeartbeat(Err(e())),
            Answer::AlterPartitionReassignments(vec![(("a".into(), 1), Ok(()))]),
            Answer::ReassignmentComplete(Ok(())),
            Answer::MetadataIndex(Ok(1 << 40)),
            Answer::MetadataIndex(Err(e())),
            Answer::AlterScram(vec![("alice".into(), Ok(())), ("bob".into(), Err(e()))]),
            Answer::CreateAcls(vec![(binding(), Ok(())), (binding(), Err(e()))]),
            Answer::AlterQuotas(vec![(QuotaEntity::default(), Err(e()))]),
            Answer::UpdateFeatures(vec![("a".into(), Ok(())), ("b".into(), Err(e()))]),
            Answer::DescribeQuorum(Err(e())),
            Answer::CreateToken(Ok(TokenRecord {
                token_id: "tok".into(),
                owner: "User:alice".into(),
                requester: "User:alice".into(),
                renewers: vec![],
                issue_ms: 1,
                max_ms: 3,
                expiry_ms: 2,
            })),
            Answer::TokenExpiry(Ok(-5)),
            Answer::TokenExpiry(Err(e())),
            Answer::DescribeQuorum(Ok(QuorumView {
                leader: 2,
                epoch: 7,
                high_watermark: 1 << 33,
                voters: vec![QuorumReplica {
                    node: 2,
                    log_end_offset: 10,
                    last_fetch_ms: -1,
                    last_caught_up_ms: 1_700_000_000_000,
                }],
                observers: Vec::new(),
            })),
            Answer::DeleteAcls(vec![
                (AclFilter::any(), Ok(vec![binding(), binding()])),
                (AclFilter::any(), Err(e())),
            ]),
        ]
    }

    fn binding() -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Group,
            name: "g".into(),
            pattern: PatternType::Prefixed,
            principal: "User:a".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Deny,
        }
    }

    #[test]
    fn bodies_round_trip() {
        for c in commands() {
            assert_eq!(Command::decode(c.method(), &c.encode()).unwrap(), c);
        }
        for a in answers() {
            assert_eq!(decode_answer(&encode_answer(&a)).unwrap(), a);
        }
        let f = FetchRequest {
            after: 5,
            max_bytes: 100,
            wait_ms: 3,
        };
        assert_eq!(FetchRequest::decode(&f.encode()).unwrap(), f);
        let r = FetchResponse {
            leader: 2,
            last: 9,
            entries: vec![(3, Bytes::from_static(b"x")), (9, Bytes::new())],
            snapshot: None,
        };
        assert_eq!(FetchResponse::decode(&r.encode()).unwrap(), r);
        let s = FetchResponse {
            snapshot: Some((2, Bytes::from_static(b"image"))),
            ..r.clone()
        };
        assert_eq!(FetchResponse::decode(&s.encode()).unwrap(), s);
        // A snapshot after the entries it precedes, or past `last`: refused.
        for bad in [3, 10] {
            let b = FetchResponse {
                snapshot: Some((bad, Bytes::new())),
                ..r.clone()
            };
            assert!(FetchResponse::decode(&b.encode()).is_err(), "{bad}");
        }
    }

    /// Every prefix and every single-byte change of a valid body: an error or a value,
    /// never a panic; a huge count in a short body is refused before allocating.
    #[test]
    fn hostile_bodies_never_panic() {
        let mut bodies: Vec<(u16, Bytes)> = commands()
            .iter()
            .map(|c| (c.method(), c.encode()))
            .collect();
        bodies.extend(answers().iter().map(|a| (0, encode_answer(a))));
        for (m, b) in bodies {
            for cut in 0..b.len() {
                assert!(Command::decode(m, &b[..cut]).is_err() || m == 0);
                let _ = decode_answer(&b[..cut]);
            }
            for i in 0..b.len() {
                for x in [0x00, 0xff, 0x80, 0x01] {
                    let mut v = b.to_vec();
                    v[i] = x;
                    let _ = Command::decode(m, &v);
                    let _ = decode_answer(&v);
                    let _ = FetchResponse::decode(&v);
                }
            }
        }
        let mut huge = vec![WIRE_VERSION];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Command::decode(method::DELETE_TOPICS, &huge).is_err());
    }
}
