//! Unit tests: codec round trips and hostile bytes, image validation, deltas and snapshots,
//! placement spreads, the controller's commands and error codes, producer-id blocks,
//! fencing on virtual time, feature levels, and the bootstrap from the single-node state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::acl::{AclFilter, AclOperation, AclPermission, PatternType, ResourceType};
use crate::codec::{decode_batch, decode_record, encode_batch, encode_record, DecodeError};
use crate::controller::{
    code, AlterConfig, Answer, ConfigTarget, Controller, ControllerConfig, Effect, NewTopic,
    Outcome, ProposalId, QuotaAlteration, Registration, ReplyToken, ScramChange,
};
use crate::features::{FeatureUpdate, UpgradeType};
use crate::image::{Delta, MetadataImage, OFFSETS_TOPIC};
use crate::limits::PARTITIONS_PER_TOPIC_MAX;
use crate::placement::{self, Start};
use crate::record::*;
use crate::rng::Rng;
use crate::{bootstrap_records, LegacyState, LegacyTopic};

fn id(n: u8) -> TopicId {
    let mut id = [0u8; 16];
    id[15] = n;
    id[0] = 0x40;
    id
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

fn registration(node: NodeId, epoch: u64) -> BrokerRegistration {
    BrokerRegistration {
        node,
        incarnation: [node as u8; 16],
        directory: [node as u8; 16],
        epoch,
        kafka: endpoint(9092),
        listeners: Vec::new(),
        rpc: endpoint(33145),
        rack: (node % 2 == 0).then(|| "rack-a".to_string()),
        fenced: false,
        features: Vec::new(),
    }
}

fn every_kind() -> Vec<Record> {
    let configs: BTreeMap<String, String> =
        [("retention.ms".to_string(), "1000".to_string())].into();
    vec![
        Record::ClusterId {
            cluster_id: "abcdefghijklmnopqrstuv".into(),
        },
        Record::Revision { revision: u64::MAX },
        Record::RegisterBroker(registration(1, 7)),
        Record::RegisterBroker(registration(2, 8)),
        // Written before directories existed: version 0.
        Record::RegisterBroker(BrokerRegistration {
            directory: [0; 16],
            ..registration(3, 9)
        }),
        // Named listeners: version 2, with or without a directory.
        Record::RegisterBroker(BrokerRegistration {
            listeners: vec![
                ListenerEndpoint {
                    name: "SSL".into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                    security_protocol: 1,
                },
                ListenerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 1,
                    security_protocol: 0,
                },
            ],
            ..registration(4, 10)
        }),
        Record::RegisterBroker(BrokerRegistration {
            directory: [0; 16],
            listeners: registration(5, 11).client_listeners(),
            ..registration(5, 11)
        }),
        // Supported features: version 3, with or without listeners and a directory.
        Record::RegisterBroker(BrokerRegistration {
            features: crate::features::supported(),
            ..registration(6, 12)
        }),
        Record::RegisterBroker(BrokerRegistration {
            directory: [0; 16],
            listeners: registration(7, 13).client_listeners(),
            features: vec![crate::features::SupportedFeature {
                name: "x".into(),
                min: 0,
                max: i16::MAX,
            }],
            ..registration(7, 13)
        }),
        Record::FeatureLevel {
            name: "metadata.version".into(),
            level: 27,
        },
        Record::FeatureLevel {
            name: "group.version".into(),
            level: 0,
        },
        Record::FenceBroker {
            node: i32::MAX,
            epoch: 0,
        },
        Record::UnfenceBroker { node: 0, epoch: 3 },
        Record::Topic {
            name: "t.1".into(),
            id: id(1),
            configs: configs.clone(),
        },
        Record::Topic {
            name: "empty".into(),
            id: id(2),
            configs: BTreeMap::new(),
        },
        Record::Partition(PartitionRecord {
            topic: id(1),
            partition: 0,
            replicas: vec![1, 2, 3],
            revision: 5,
            adding: vec![3],
            removing: vec![2],
        }),
        Record::PartitionChange(PartitionRecord {
            topic: id(1),
            partition: i32::MAX,
            replicas: vec![0],
            revision: 6,
            adding: Vec::new(),
            removing: Vec::new(),
        }),
        Record::Config {
            resource: ConfigResource::Topic(id(1)),
            key: "cleanup.policy".into(),
            value: Some("compact".into()),
        },
        Record::Config {
            resource: ConfigResource::Broker(None),
            key: "log.retention.ms".into(),
            value: None,
        },
        Record::Config {
            resource: ConfigResource::Broker(Some(3)),
            key: "x".into(),
            value: Some(String::new()),
        },
        Record::Config {
            resource: ConfigResource::ClientMetrics("sub".into()),
            key: "metrics".into(),
            value: Some("*".into()),
        },
        Record::ProducerIds(ProducerIdsBlock {
            node: 1,
            first: i64::MAX - 1000,
            size: 1000,
        }),
        Record::ProducerIds(ProducerIdsBlock {
            node: 1,
            first: -5,
            size: 0,
        }),
        Record::RemoveTopic { id: id(1) },
        Record::ScramCredential(scram("alice", 1)),
        Record::ScramCredential(scram("bob", 2)),
        Record::RemoveScramCredential {
            user: "bob".into(),
            mechanism: 2,
        },
        Record::Acl(acl("orders", PatternType::Prefixed, AclPermission::Allow)),
        Record::RemoveAcl(acl("orders", PatternType::Prefixed, AclPermission::Allow)),
        Record::ClientQuota {
            entity: user_entity(Some("alice")),
            key: "producer_byte_rate".into(),
            value: Some(QuotaValue(1048576.0)),
        },
        Record::ClientQuota {
            entity: user_entity(None),
            key: "request_percentage".into(),
            value: None,
        },
        Record::DelegationToken(crate::tokens::TokenRecord {
            token_id: "tok1".into(),
            owner: "User:alice".into(),
            requester: "User:admin".into(),
            renewers: vec!["User:bob".into()],
            issue_ms: 1,
            max_ms: 100,
            expiry_ms: 50,
        }),
        Record::RemoveDelegationToken {
            token_id: "tok1".into(),
        },
    ]
}

fn user_entity(name: Option<&str>) -> QuotaEntity {
    QuotaEntity {
        user: Some(name.map(String::from)),
        ..QuotaEntity::default()
    }
}

fn quota_change(entity: QuotaEntity, key: &str, value: Option<f64>) -> QuotaAlteration {
    QuotaAlteration {
        entity,
        ops: vec![(key.into(), value.map(QuotaValue))],
    }
}

fn acl(name: &str, pattern: PatternType, permission: AclPermission) -> AclBinding {
    AclBinding {
        resource_type: ResourceType::Topic,
        name: name.into(),
        pattern,
        principal: "User:alice".into(),
        host: "*".into(),
        operation: AclOperation::Read,
        permission,
    }
}

fn scram(user: &str, mechanism: i8) -> ScramRecord {
    let len = if mechanism == 2 { 64 } else { 32 };
    ScramRecord {
        user: user.into(),
        mechanism,
        salt: vec![7; 16],
        iterations: 4096,
        stored_key: vec![1; len],
        server_key: vec![2; len],
    }
}

#[test]
fn every_record_round_trips() {
    let records = every_kind();
    let bytes = encode_batch(&records).unwrap();
    assert_eq!(decode_batch(&bytes).unwrap(), records);
    for r in &records {
        let mut body = Vec::new();
        encode_record(r, &mut body).unwrap();
        assert_eq!(body[0], r.type_id());
        assert_eq!(body[1], r.version());
        assert_eq!(decode_record(&body).unwrap(), *r);
    }
    // A registration names a directory from version 1 on; version 1 with zeros would not
    // re-encode to the same bytes, so it is refused.
    let with = Record::RegisterBroker(registration(1, 7));
    assert_eq!(with.version(), 1);
    let mut body = Vec::new();
    encode_record(&with, &mut body).unwrap();
    // Version 2 names at least one listener (none is version 0 or 1).
    let mut empty_list = body.clone();
    empty_list[1] = 2;
    empty_list.push(0);
    assert!(matches!(
        decode_record(&empty_list),
        Err(DecodeError::Invalid { .. })
    ));
    let n = body.len();
    body[n - 16..].fill(0);
    assert!(matches!(
        decode_record(&body),
        Err(DecodeError::Invalid { .. })
    ));
}

#[test]
fn unknown_versions_types_and_trailing_bytes_are_refused() {
    for r in every_kind() {
        let mut body = Vec::new();
        encode_record(&r, &mut body).unwrap();
        let mut newer = body.clone();
        let newest = if r.type_id() == 0 { 3 } else { 0 };
        newer[1] = newest + 1;
        assert_eq!(
            decode_record(&newer),
            Err(DecodeError::UnknownVersion {
                type_id: r.type_id(),
                version: newest + 1
            })
        );
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(
            decode_record(&longer),
            Err(DecodeError::Trailing { what: "record" })
        );
        for cut in 0..body.len() {
            assert!(decode_record(&body[..cut]).is_err(), "{r:?} cut at {cut}");
        }
    }
    let mut unknown = vec![42u8, 0];
    unknown.extend_from_slice(&[0; 8]);
    assert_eq!(
        decode_record(&unknown),
        Err(DecodeError::UnknownType { type_id: 42 })
    );
    let mut batch = encode_batch(&every_kind()).unwrap();
    batch.push(0);
    assert!(matches!(
        decode_batch(&batch),
        Err(DecodeError::Trailing { .. })
    ));
    batch[0] = 1;
    assert_eq!(
        decode_batch(&batch),
        Err(DecodeError::UnknownFormat { format: 1 })
    );
    // Over-limit values are refused by the encoder, so nothing undecodable is proposed.
    let long = Record::ClusterId {
        cluster_id: "x".repeat(crate::codec::STRING_BYTES_MAX + 1),
    };
    assert!(encode_batch(&[long]).is_err());
    let wide = Record::Partition(PartitionRecord {
        topic: id(1),
        partition: 0,
        replicas: (0..crate::codec::REPLICAS_MAX as i32 + 1).collect(),
        revision: 1,
        adding: Vec::new(),
        removing: Vec::new(),
    });
    assert!(encode_batch(&[wide]).is_err());
}

/// Random bytes, and valid batches with bytes flipped, cut or inserted, never panic the
/// decoder; whatever decodes re-encodes to something that decodes the same.
#[test]
fn hostile_bytes_never_panic() {
    let mut rng = Rng::new(0x5eed);
    let valid = encode_batch(&every_kind()).unwrap();
    let mut decoded = 0;
    for i in 0..200_000 {
        let bytes: Vec<u8> = if i % 2 == 0 {
            let len = rng.below(64) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if !b.is_empty() && rng.below(2) == 0 {
                b[0] = 0; // a valid format byte gets the fuzzing further
            }
            b
        } else {
            let mut b = valid.clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() as u64) as usize;
                match rng.below(3) {
                    0 => b[at] = rng.next_u64() as u8,
                    1 => b.truncate(at),
                    _ => b.insert(at, rng.next_u64() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            b
        };
        if let Ok(records) = decode_batch(&bytes) {
            decoded += 1;
            let again = encode_batch(&records).expect("decoded records encode");
            assert_eq!(again, bytes, "the encoding is canonical");
        }
    }
    assert!(decoded > 0, "some mutations still decode");
    // Huge claimed counts and lengths are errors, not allocations.
    let claims: [&[u8]; 4] = [
        &[0, 0xff, 0xff, 0xff, 0xff, 0x0f],
        &[0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 2, 0],
        &[0, 1, 4, 100, 0, 0xff, 0x7f],
        &[
            0, 1, 0x0b, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
    ];
    for c in claims {
        assert!(decode_batch(c).is_err(), "{c:?}");
    }
    // Padded varints and unordered config keys are not the canonical form: refused.
    assert!(decode_record(&[101, 0, 0x80, 0x00]).is_err());
    assert_eq!(
        decode_record(&[101, 0, 0x00]).unwrap(),
        Record::Revision { revision: 0 }
    );
    let mut unordered = vec![2, 0, 1, b't'];
    unordered.extend_from_slice(&id(1));
    unordered.extend_from_slice(&[2, 1, b'b', 0, 1, b'a', 0]);
    assert!(decode_record(&unordered).is_err());
}

#[test]
fn large_record_lists_split_into_batches() {
    let records: Vec<Record> = (0..5_000).map(|p| partition(1, p, &[1, 2, 3], 7)).collect();
    let batches = crate::codec::encode_batches(&records, 4096).unwrap();
    assert!(batches.len() > 10);
    assert!(batches.iter().all(|b| b.len() <= 4096));
    let back: Vec<Record> = batches
        .iter()
        .flat_map(|b| decode_batch(b).unwrap())
        .collect();
    assert_eq!(back, records);
    assert!(
        crate::codec::encode_batches(&records, 20).is_err(),
        "one record over the limit"
    );
    assert!(crate::codec::encode_batches(&[], 4096).unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// The image.

fn topic(name: &str, n: u8) -> Record {
    Record::Topic {
        name: name.into(),
        id: id(n),
        configs: BTreeMap::new(),
    }
}

fn partition(n: u8, p: i32, replicas: &[NodeId], revision: u64) -> Record {
    Record::Partition(PartitionRecord {
        topic: id(n),
        partition: p,
        replicas: replicas.to_vec(),
        revision,
        adding: Vec::new(),
        removing: Vec::new(),
    })
}

#[test]
fn invalid_sequences_are_refused_and_change_nothing() {
    let mut image = MetadataImage::replay(&[
        Record::RegisterBroker(registration(1, 1)),
        topic("a.b", 1),
        partition(1, 0, &[1], 2),
    ])
    .unwrap();
    let before = image.clone();
    let refused = [
        partition(9, 0, &[1], 3),    // unknown topic
        partition(1, 2, &[1], 3),    // out of order
        partition(1, 1, &[1, 1], 3), // a node twice
        partition(1, 1, &[], 3),     // no replicas
        partition(1, 1, &[-1], 3),   // bad node
        topic("a.b", 2),             // duplicate name
        topic("a_b", 2),             // colliding name
        topic("c", 1),               // reused id
        topic("bad name", 3),        // invalid name
        Record::Topic {
            name: "z".into(),
            id: [0; 16],
            configs: BTreeMap::new(),
        },
        Record::FenceBroker { node: 2, epoch: 1 }, // unknown node
        Record::FenceBroker { node: 1, epoch: 9 }, // stale epoch
        Record::UnfenceBroker { node: 1, epoch: 1 }, // already unfenced
        Record::RegisterBroker(registration(1, 1)), // epoch not above
        Record::RemoveTopic { id: id(7) },
        Record::Config {
            resource: ConfigResource::Topic(id(7)),
            key: "k".into(),
            value: Some("v".into()),
        },
        Record::Config {
            resource: ConfigResource::Broker(None),
            key: "k".into(),
            value: None, // removes nothing
        },
        Record::PartitionChange(PartitionRecord {
            topic: id(1),
            partition: 0,
            replicas: vec![2],
            revision: 2,
            adding: Vec::new(),
            removing: Vec::new(), // not above the partition's
        }),
        Record::PartitionChange(PartitionRecord {
            topic: id(1),
            partition: 0,
            replicas: vec![1],
            revision: 3,
            adding: Vec::new(),
            removing: Vec::new(), // the same replicas at a new revision
        }),
        Record::ClusterId {
            cluster_id: String::new(),
        },
        Record::ProducerIds(ProducerIdsBlock {
            node: 1,
            first: 0,
            size: 0,
        }),
        Record::ProducerIds(ProducerIdsBlock {
            node: 1,
            first: i64::MAX,
            size: 1,
        }),
    ];
    for r in &refused {
        let mut delta = Delta::default();
        assert!(image.apply(r, &mut delta).is_err(), "{r:?} accepted");
        assert_eq!(image, before, "{r:?} changed the image");
        assert!(delta.is_empty());
    }
    let mut delta = Delta::default();
    let block = |first, size| {
        Record::ProducerIds(ProducerIdsBlock {
            node: 1,
            first,
            size,
        })
    };
    image.apply(&block(0, 1000), &mut delta).unwrap();
    assert!(
        image.apply(&block(999, 1000), &mut delta).is_err(),
        "overlap"
    );
    image.apply(&block(1000, 1000), &mut delta).unwrap();
    assert_eq!(image.next_producer_id(), 2000);
}

#[test]
fn deltas_say_what_changed() {
    let mut image = MetadataImage::replay(&[
        Record::RegisterBroker(registration(1, 1)),
        Record::RegisterBroker(registration(2, 2)),
        topic("old", 1),
        partition(1, 0, &[1], 3),
        partition(1, 1, &[2], 3),
        topic("kept", 2),
        partition(2, 0, &[1, 2], 3),
    ])
    .unwrap();
    let delta = image
        .apply_batch(&[
            topic("brief", 3),
            partition(3, 0, &[1], 4),
            Record::Config {
                resource: ConfigResource::Topic(id(3)),
                key: "k".into(),
                value: Some("v".into()),
            },
            Record::RemoveTopic { id: id(3) },
            Record::RemoveTopic { id: id(1) },
            partition(2, 1, &[2, 1], 4),
            Record::PartitionChange(PartitionRecord {
                topic: id(2),
                partition: 0,
                replicas: vec![2],
                revision: 4,
                adding: Vec::new(),
                removing: Vec::new(),
            }),
            Record::Config {
                resource: ConfigResource::Topic(id(2)),
                key: "k".into(),
                value: Some("v".into()),
            },
            Record::FenceBroker { node: 2, epoch: 2 },
        ])
        .unwrap();
    assert!(
        delta.created_topics.is_empty(),
        "created and removed: neither"
    );
    assert_eq!(
        delta.removed_topics.keys().collect::<Vec<_>>(),
        vec![&id(1)]
    );
    assert_eq!(delta.removed_topics[&id(1)].partitions.len(), 2);
    assert_eq!(delta.added_partitions, BTreeSet::from([(id(2), 1)]));
    assert_eq!(
        delta.reassigned_partitions,
        BTreeMap::from([((id(2), 0), vec![1, 2])])
    );
    assert_eq!(delta.topic_configs, BTreeSet::from([id(2)]));
    assert_eq!(delta.brokers, BTreeSet::from([2]));
    assert_eq!(image.replicas_on(1), 1);
    assert_eq!(image.replicas_on(2), 2);
    assert_eq!(image.live_brokers(), vec![1]);
    assert_eq!(image.offline_replicas(&[1, 2, 5]), vec![2, 5]);
}

// ---------------------------------------------------------------------------------------
// A controller with a pretend Raft log: proposals queue until `commit`, and a follower's
// image applies every committed batch from its bytes.

struct Cluster {
    ctl: Controller,
    follower: MetadataImage,
    proposed: VecDeque<(ProposalId, Vec<u8>)>,
    replies: BTreeMap<ReplyToken, Answer>,
    warnings: Vec<String>,
    ticks: Vec<i64>,
    deltas: Vec<Delta>,
    next_token: u64,
}

impl Cluster {
    fn new(nodes: &[NodeId]) -> Cluster {
        Cluster::with_config(nodes, ControllerConfig::default())
    }

    fn with_config(nodes: &[NodeId], config: ControllerConfig) -> Cluster {
        let mut c = Cluster {
            ctl: Controller::new(config, MetadataImage::new()),
            follower: MetadataImage::new(),
            proposed: VecDeque::new(),
            replies: BTreeMap::new(),
            warnings: Vec::new(),
            ticks: Vec::new(),
            deltas: Vec::new(),
            next_token: 0,
        };
        let out = c.ctl.become_active(0);
        c.take(out);
        for &n in nodes {
            let epoch = c.register(n, 0);
            c.heartbeat(n, epoch, 0);
        }
        c
    }

    fn token(&mut self) -> ReplyToken {
        self.next_token += 1;
        ReplyToken(self.next_token)
    }

    fn take(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, a) => assert!(self.replies.insert(t, a).is_none(), "twice"),
                Effect::Propose { id, batch } => self.proposed.push_back((id, batch)),
                Effect::ScheduleTick { at_ms } => self.ticks.push(at_ms),
                Effect::Warn(w) => self.warnings.push(w),
            }
        }
    }

    /// Commits every proposal in order.
    fn commit(&mut self) {
        while let Some((id, batch)) = self.proposed.pop_front() {
            let records = decode_batch(&batch).unwrap();
            let (delta, out) = self.ctl.committed(Some(id), &records).unwrap();
            let follower_delta = self.follower.apply_batch(&records).unwrap();
            assert_eq!(delta, follower_delta);
            self.deltas.push(delta);
            self.take(out);
            assert_eq!(
                &self.follower,
                self.ctl.image(),
                "every node replays the same"
            );
        }
    }

    /// Runs a command, commits what it proposed, returns its answer.
    fn run(&mut self, f: impl FnOnce(&mut Controller, ReplyToken) -> Vec<Effect>) -> Answer {
        let t = self.token();
        let out = f(&mut self.ctl, t);
        self.take(out);
        self.commit();
        self.replies.remove(&t).expect("answered")
    }

    fn register(&mut self, node: NodeId, now: i64) -> u64 {
        let reg = Registration {
            node,
            incarnation: [node as u8 + 1; 16],
            directory: [0; 16],
            kafka: endpoint(9092 + node as u16),
            listeners: Vec::new(),
            rpc: endpoint(33145 + node as u16),
            rack: None,
            features: Vec::new(),
        };
        match self.run(|c, t| c.register_broker(t, now, reg)) {
            Answer::RegisterBroker(Ok(e)) => e,
            a => panic!("{a:?}"),
        }
    }

    fn heartbeat(&mut self, node: NodeId, epoch: u64, now: i64) -> Answer {
        self.run(|c, t| c.broker_heartbeat(t, now, node, epoch, true))
    }

    fn create(&mut self, topics: Vec<NewTopic>) -> Vec<(String, Result<i32, i16>)> {
        match self.run(|c, t| c.create_topics(t, topics, false)) {
            Answer::CreateTopics(v) => v
                .into_iter()
                .map(|(n, r)| (n, r.map(|c| c.partitions).map_err(|e| e.code)))
                .collect(),
            a => panic!("{a:?}"),
        }
    }

    fn create_one(&mut self, name: &str, partitions: i32, rf: i16) -> Result<i32, i16> {
        self.create(vec![NewTopic::new(name, partitions, rf)])
            .remove(0)
            .1
    }
}

fn codes<K, T>(v: Vec<(K, Result<T, crate::ApiError>)>) -> Vec<Result<(), i16>> {
    v.into_iter()
        .map(|(_, r)| r.map(|_| ()).map_err(|e| e.code))
        .collect()
}

#[test]
fn scram_credentials_are_checked_as_kafka_checks_them() {
    let mut c = Cluster::new(&[1]);
    let few = ScramRecord {
        iterations: 4095,
        ..scram("few", 1)
    };
    let many = ScramRecord {
        iterations: 16385,
        ..scram("many", 2)
    };
    let short_key = ScramRecord {
        stored_key: vec![1; 31],
        ..scram("short", 1)
    };
    let answer = c.run(|ctl, t| {
        ctl.alter_scram(
            t,
            vec![
                ScramChange::Upsert(scram("alice", 1)),
                ScramChange::Upsert(scram("twice", 1)),
                ScramChange::Delete {
                    user: "twice".into(),
                    mechanism: 2,
                },
                ScramChange::Upsert(scram("", 1)),
                ScramChange::Upsert(scram("x", 3)),
                ScramChange::Upsert(few),
                ScramChange::Upsert(many),
                ScramChange::Upsert(short_key),
                ScramChange::Delete {
                    user: "nobody".into(),
                    mechanism: 1,
                },
            ],
        )
    });
    let Answer::AlterScram(v) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        codes(v),
        vec![
            Ok(()),
            Err(code::DUPLICATE_RESOURCE),
            Err(code::DUPLICATE_RESOURCE),
            Err(code::UNACCEPTABLE_CREDENTIAL),
            Err(code::UNSUPPORTED_SASL_MECHANISM),
            Err(code::UNACCEPTABLE_CREDENTIAL),
            Err(code::UNACCEPTABLE_CREDENTIAL),
            Err(code::UNACCEPTABLE_CREDENTIAL),
            Err(code::RESOURCE_NOT_FOUND),
        ]
    );
    let keys: Vec<_> = c.ctl.image().scram_credentials().keys().cloned().collect();
    assert_eq!(keys, vec![("alice".to_string(), 1)]);
    assert!(c.deltas.last().unwrap().scram_users.contains("alice"));
    // Replaced, then deleted.
    let newer = ScramRecord {
        iterations: 8192,
        ..scram("alice", 1)
    };
    c.run(|ctl, t| ctl.alter_scram(t, vec![ScramChange::Upsert(newer)]));
    assert_eq!(
        c.ctl.image().scram_credentials()[&("alice".to_string(), 1)].iterations,
        8192
    );
    let answer = c.run(|ctl, t| {
        ctl.alter_scram(
            t,
            vec![ScramChange::Delete {
                user: "alice".into(),
                mechanism: 1,
            }],
        )
    });
    assert_eq!(answer, Answer::AlterScram(vec![("alice".into(), Ok(()))]));
    assert!(c.ctl.image().scram_credentials().is_empty());
    // A removal of a credential that is not there is not a valid record.
    let mut image = MetadataImage::new();
    assert!(image
        .apply_batch(&[Record::RemoveScramCredential {
            user: "a".into(),
            mechanism: 1
        }])
        .is_err());
}

#[test]
fn acls_are_created_and_deleted_as_kafka_does() {
    let mut c = Cluster::new(&[1]);
    let read = acl("orders", PatternType::Literal, AclPermission::Allow);
    let deny = acl("ord", PatternType::Prefixed, AclPermission::Deny);
    let mut bad = read.clone();
    bad.principal = "alice".into();
    let answer = c.run(|ctl, t| {
        ctl.create_acls(
            t,
            vec![read.clone(), deny.clone(), read.clone(), bad.clone()],
        )
    });
    let Answer::CreateAcls(v) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        codes(v),
        vec![Ok(()), Ok(()), Ok(()), Err(code::INVALID_REQUEST)]
    );
    assert_eq!(c.ctl.image().acls().len(), 2);
    assert!(c.deltas.last().unwrap().acls);
    // Again: no record, the same answer.
    let before = c.deltas.len();
    c.run(|ctl, t| ctl.create_acls(t, vec![read.clone()]));
    assert_eq!(c.deltas.len(), before);
    // Two filters matching one binding: the first reports it.
    let by_name = AclFilter {
        pattern: PatternType::Match,
        name: Some("orders".into()),
        ..AclFilter::any()
    };
    let answer = c.run(|ctl, t| ctl.delete_acls(t, vec![by_name.clone(), AclFilter::any()]));
    let Answer::DeleteAcls(v) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(v[0].1.as_ref().unwrap().len(), 2, "{v:?}");
    assert!(v[1].1.as_ref().unwrap().is_empty());
    assert!(c.ctl.image().acls().is_empty());
    let mut image = MetadataImage::new();
    assert!(image
        .apply_batch(&[Record::RemoveAcl(read.clone())])
        .is_err());
    assert!(image
        .apply_batch(&[Record::Acl(read.clone()), Record::Acl(read)])
        .is_err());
}

#[test]
fn client_quotas_are_checked_as_kafka_checks_them() {
    let mut c = Cluster::new(&[1]);
    let alice = user_entity(Some("alice"));
    let answer = c.run(|ctl, t| {
        ctl.alter_client_quotas(
            t,
            vec![
                quota_change(alice.clone(), "producer_byte_rate", Some(1024.0)),
                quota_change(alice.clone(), "producer_byte_rate", Some(10.5)),
                quota_change(alice.clone(), "connection_creation_rate", Some(1.0)),
                QuotaAlteration {
                    entity: user_entity(None),
                    ops: vec![
                        ("consumer_byte_rate".into(), Some(QuotaValue(5.0))),
                        ("consumer_byte_rate".into(), None),
                    ],
                },
                quota_change(user_entity(None), "request_percentage", None),
            ],
            false,
        )
    });
    let Answer::AlterQuotas(v) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(
        codes(v),
        vec![
            Ok(()),
            Err(code::INVALID_REQUEST),
            Err(code::INVALID_REQUEST),
            Err(code::INVALID_REQUEST),
            Ok(()),
        ]
    );
    let q = c.ctl.image().quotas();
    assert_eq!(q.len(), 1);
    assert_eq!(q[&alice]["producer_byte_rate"], QuotaValue(1024.0));
    assert!(c.deltas.last().unwrap().quotas);
    // Validate-only changes nothing; a removal takes the entity away with its last key.
    c.run(|ctl, t| {
        ctl.alter_client_quotas(
            t,
            vec![quota_change(alice.clone(), "consumer_byte_rate", Some(9.0))],
            true,
        )
    });
    assert_eq!(c.ctl.image().quotas()[&alice].len(), 1);
    c.run(|ctl, t| {
        ctl.alter_client_quotas(
            t,
            vec![quota_change(alice.clone(), "producer_byte_rate", None)],
            false,
        )
    });
    assert!(c.ctl.image().quotas().is_empty());
}

#[test]
fn snapshot_replays_to_the_same_image() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    for i in 0..20 {
        c.create_one(&format!("t{i}"), 1 + i % 7, 1 + (i % 3) as i16)
            .unwrap();
    }
    c.run(|ctl, t| ctl.delete_topics(t, vec!["t3".into(), "t4".into()]));
    c.run(|ctl, t| ctl.create_partitions(t, vec![("t5".into(), 12)], false));
    c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![
                AlterConfig {
                    target: ConfigTarget::Topic("t6".into()),
                    ops: vec![("retention.ms".into(), Some("5".into()))],
                    replace: false,
                },
                AlterConfig {
                    target: ConfigTarget::Broker(None),
                    ops: vec![("log.retention.ms".into(), Some("7".into()))],
                    replace: false,
                },
                AlterConfig {
                    target: ConfigTarget::Broker(Some(2)),
                    ops: vec![("x".into(), Some("y".into()))],
                    replace: false,
                },
                AlterConfig {
                    target: ConfigTarget::ClientMetrics("sub".into()),
                    ops: vec![("metrics".into(), Some("*".into()))],
                    replace: false,
                },
            ],
            false,
        )
    });
    c.run(|ctl, t| ctl.allocate_producer_ids(t, 1, ctl.image().broker(1).unwrap().epoch));
    c.run(|ctl, t| {
        ctl.alter_scram(
            t,
            vec![
                ScramChange::Upsert(scram("alice", 1)),
                ScramChange::Upsert(scram("bob", 2)),
            ],
        )
    });
    c.run(|ctl, t| {
        ctl.create_acls(
            t,
            vec![
                acl("a", PatternType::Literal, AclPermission::Allow),
                acl("b", PatternType::Prefixed, AclPermission::Deny),
            ],
        )
    });
    c.run(|ctl, t| {
        ctl.alter_client_quotas(
            t,
            vec![quota_change(
                user_entity(Some("a")),
                "producer_byte_rate",
                Some(7.0),
            )],
            false,
        )
    });
    let image = c.ctl.image().clone();
    let snapshot = image.snapshot();
    assert_eq!(MetadataImage::replay(&snapshot).unwrap(), image);
    // Also through the codec, as a snapshot file would carry it.
    let bytes = encode_batch(&snapshot).unwrap();
    let back = MetadataImage::replay(&decode_batch(&bytes).unwrap()).unwrap();
    assert_eq!(back, image);
    assert_eq!(back.snapshot(), snapshot);
    // A controller started from the snapshot continues where the other left off.
    let mut d = Controller::new(ControllerConfig::default(), back);
    d.become_active(0);
    let out = d.create_topics(ReplyToken(1), vec![NewTopic::new("t0", 1, 1)], false);
    assert!(matches!(&out[0], Effect::Reply(_, Answer::CreateTopics(v))
        if v[0].1.as_ref().unwrap_err().code == code::TOPIC_ALREADY_EXISTS));
}

// ---------------------------------------------------------------------------------------
// Placement.

fn spread(assignments: &[Vec<NodeId>]) -> (BTreeMap<NodeId, u64>, BTreeMap<NodeId, u64>) {
    let mut leaders = BTreeMap::new();
    let mut replicas = BTreeMap::new();
    for a in assignments {
        let distinct: BTreeSet<_> = a.iter().collect();
        assert_eq!(distinct.len(), a.len(), "distinct replicas {a:?}");
        *leaders.entry(a[0]).or_default() += 1;
        for &n in a {
            *replicas.entry(n).or_default() += 1;
        }
    }
    (leaders, replicas)
}

#[test]
fn placement_spreads_leaders_and_replicas() {
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let a = placement::assign(&[1, 2, 3], 3000, 3, Start::Random, &mut rng);
        let (leaders, replicas) = spread(&a);
        assert_eq!(leaders, BTreeMap::from([(1, 1000), (2, 1000), (3, 1000)]));
        assert_eq!(replicas, BTreeMap::from([(1, 3000), (2, 3000), (3, 3000)]));

        let nodes = [1, 2, 3, 4, 5];
        let a = placement::assign(&nodes, 3000, 3, Start::Random, &mut rng);
        let (leaders, replicas) = spread(&a);
        assert!(leaders.values().all(|&l| l == 600), "{leaders:?}");
        // 9,000 replicas over 5 nodes: 1,800 each, within a few.
        assert!(
            replicas.values().all(|&r| r.abs_diff(1800) <= 5),
            "{replicas:?}"
        );
        // Followers of each leader rotate over all other nodes.
        for &lead in &nodes {
            let mut followers: BTreeMap<NodeId, u64> = BTreeMap::new();
            for x in a.iter().filter(|x| x[0] == lead) {
                for &f in &x[1..] {
                    *followers.entry(f).or_default() += 1;
                }
            }
            assert_eq!(followers.len(), 4);
            assert!(
                followers.values().all(|&f| f.abs_diff(300) <= 3),
                "{followers:?}"
            );
        }
    }
    // Deterministic for a seed.
    let a = placement::assign(&[1, 2, 3, 4], 50, 2, Start::Random, &mut Rng::new(9));
    let b = placement::assign(&[1, 2, 3, 4], 50, 2, Start::Random, &mut Rng::new(9));
    assert_eq!(a, b);
}

#[test]
fn many_small_topics_do_not_all_lead_on_one_node() {
    let mut c = Cluster::new(&[1, 2, 3, 4, 5]);
    let mut topics = Vec::new();
    for i in 0..1000 {
        topics.push(NewTopic::new(&format!("small{i}"), 1, 3));
    }
    for chunk in topics.chunks(100) {
        for (_, r) in c.create(chunk.to_vec()) {
            r.unwrap();
        }
    }
    let all: Vec<Vec<NodeId>> = c
        .ctl
        .image()
        .topics()
        .flat_map(|t| t.partitions.iter().map(|p| p.replicas.clone()))
        .collect();
    let (leaders, replicas) = spread(&all);
    assert!(
        leaders.values().all(|&l| l.abs_diff(200) <= 60),
        "{leaders:?}"
    );
    assert!(
        replicas.values().all(|&r| r.abs_diff(600) <= 90),
        "{replicas:?}"
    );
}

#[test]
fn new_partitions_continue_the_topic_pattern() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.create_one("t", 3, 2).unwrap();
    match c.run(|ctl, t| ctl.create_partitions(t, vec![("t".into(), 3000)], false)) {
        Answer::CreatePartitions(v) => assert!(v[0].1.is_ok()),
        a => panic!("{a:?}"),
    }
    let t = c.ctl.image().topic_by_name("t").unwrap();
    assert_eq!(t.partitions.len(), 3000);
    let a: Vec<_> = t.partitions.iter().map(|p| p.replicas.clone()).collect();
    let (leaders, replicas) = spread(&a);
    assert!(
        leaders.values().all(|&l| l.abs_diff(1000) <= 2),
        "{leaders:?}"
    );
    assert!(
        replicas.values().all(|&r| r.abs_diff(2000) <= 4),
        "{replicas:?}"
    );
    assert!(
        a.iter().all(|r| r.len() == 2),
        "the topic's replication factor"
    );
    assert!(c.deltas.last().unwrap().added_partitions.len() == 2997);
}

#[test]
fn preferred_leaders_are_elected_back_past_the_imbalance() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.create_one("t", 30, 3).unwrap();
    let image = c.ctl.image();
    // Everything led by its preferred leader: nothing to do.
    let preferred = |t: &TopicId, p: i32| {
        Some(image.topic(t).unwrap().partitions[p as usize].preferred_leader())
    };
    assert!(placement::preferred_leader_elections(image, preferred).is_empty());
    // Node 1 led everything after the others restarted: the others get theirs back.
    let moves = placement::preferred_leader_elections(image, |_, _| Some(1));
    assert_eq!(moves.len(), 20);
    assert!(moves.iter().all(|(_, _, n)| *n != 1));
    // One partition of node 2's ten off it is exactly the 10% allowed: no move.
    let t = image.topic_by_name("t").unwrap().id;
    let off = (0..30)
        .find(|&p| image.topic(&t).unwrap().partitions[p as usize].preferred_leader() == 2)
        .unwrap();
    let moves = placement::preferred_leader_elections(image, |id, p| {
        let pref = image.topic(id).unwrap().partitions[p as usize].preferred_leader();
        Some(if p == off { 3 } else { pref })
    });
    assert!(moves.is_empty());
}

// ---------------------------------------------------------------------------------------
// Controller commands and their codes.

#[test]
fn create_topics_validation_codes() {
    let mut c = Cluster::new(&[1, 2, 3]);
    assert_eq!(c.create_one("a", 3, 3), Ok(3));
    assert_eq!(c.create_one("a", 3, 3), Err(code::TOPIC_ALREADY_EXISTS));
    assert_eq!(c.create_one("a_", 1, 1), Ok(1));
    assert_eq!(
        c.create_one("a.", 1, 1),
        Err(code::INVALID_TOPIC_EXCEPTION),
        "collides"
    );
    assert_eq!(
        c.create_one("b c", 1, 1),
        Err(code::INVALID_TOPIC_EXCEPTION)
    );
    assert_eq!(c.create_one("", 1, 1), Err(code::INVALID_TOPIC_EXCEPTION));
    assert_eq!(
        c.create_one("b", 4, 4),
        Err(code::INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(
        c.create_one("b", 1, 0),
        Err(code::INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(
        c.create_one("b", 1, -2),
        Err(code::INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(c.create_one("b", 0, 1), Err(code::INVALID_PARTITIONS));
    assert_eq!(c.create_one("b", -2, 1), Err(code::INVALID_PARTITIONS));
    assert_eq!(
        c.create_one("b", 10_001, 1),
        Err(code::POLICY_VIOLATION),
        "over 10,000 records"
    );
    assert_eq!(
        c.create_one("b", -1, -1),
        Ok(1),
        "num.partitions, default.replication.factor"
    );
    assert_eq!(
        c.ctl.image().topic_by_name("b").unwrap().partitions[0]
            .replicas
            .len(),
        1
    );
    // Duplicates in one request, and names colliding within it.
    let r = c.create(vec![
        NewTopic::new("d", 1, 1),
        NewTopic::new("d", 1, 1),
        NewTopic::new("e.f", 1, 1),
        NewTopic::new("e_f", 1, 1),
    ]);
    let r: Vec<_> = r.into_iter().map(|x| x.1).collect();
    assert_eq!(
        r,
        vec![
            Err(code::INVALID_REQUEST),
            Err(code::INVALID_REQUEST),
            Ok(1),
            Err(code::INVALID_TOPIC_EXCEPTION)
        ]
    );
    // 10,000 partitions in all is the limit (Kafka's); topics and configs do not count.
    let mut g = NewTopic::new("g", 5_000, 1);
    g.configs.insert("retention.ms".into(), "1".into());
    let r = c.create(vec![g, NewTopic::new("h", 5_000, 1)]);
    assert!(r.iter().all(|x| x.1.is_ok()), "{r:?}");
    let mut one = NewTopic::new("one", PARTITIONS_PER_TOPIC_MAX, 1);
    one.configs.insert("retention.ms".into(), "1".into());
    assert_eq!(
        c.create(vec![one]).remove(0).1,
        Ok(PARTITIONS_PER_TOPIC_MAX)
    );
    let r = c.create(vec![
        NewTopic::new("i", 5_000, 1),
        NewTopic::new("j", 5_001, 1),
    ]);
    assert!(
        r.iter().all(|x| x.1 == Err(code::POLICY_VIOLATION)),
        "{r:?}"
    );
    // Config validation is the broker's, passed in.
    let mut c = Cluster::with_config(
        &[1],
        ControllerConfig {
            topic_config_check: |m| match m.get("retention.ms") {
                Some(v) if v.parse::<i64>().is_err() => Err(format!("bad retention.ms {v}")),
                _ => Ok(()),
            },
            ..ControllerConfig::default()
        },
    );
    let mut t = NewTopic::new("k", 1, 1);
    t.configs.insert("retention.ms".into(), "soon".into());
    assert_eq!(c.create(vec![t]).remove(0).1, Err(code::INVALID_CONFIG));
}

#[test]
fn replication_factor_counts_only_live_unfenced_brokers() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let out = c.ctl.tick(5_000);
    c.take(out);
    // Nodes 1 and 2 keep heartbeating; 3 goes quiet and is fenced at 9 s.
    for now in [3_000, 6_000, 9_000] {
        for n in [1, 2] {
            let e = c.ctl.image().broker(n).unwrap().epoch;
            c.heartbeat(n, e, now);
        }
    }
    let out = c.ctl.tick(8_999);
    c.take(out);
    assert!(c.proposed.is_empty(), "not yet");
    let out = c.ctl.tick(9_000);
    c.take(out);
    c.commit();
    assert!(c.ctl.image().broker(3).unwrap().fenced);
    assert_eq!(c.ctl.image().live_brokers(), vec![1, 2]);
    assert!(c.warnings.iter().any(|w| w.contains("fencing node 3")));
    assert_eq!(
        c.create_one("rf3", 1, 3),
        Err(code::INVALID_REPLICATION_FACTOR)
    );
    assert_eq!(c.create_one("rf2", 30, 2), Ok(30));
    let t = c.ctl.image().topic_by_name("rf2").unwrap();
    assert!(
        t.partitions.iter().all(|p| !p.replicas.contains(&3)),
        "no replica on a fenced node"
    );
    // Node 3 comes back: a heartbeat (caught up) unfences it.
    let e3 = c.ctl.image().broker(3).unwrap().epoch;
    assert_eq!(
        c.heartbeat(3, e3, 9_500),
        Answer::BrokerHeartbeat(Ok(false))
    );
    assert!(!c.ctl.image().broker(3).unwrap().fenced);
    assert_eq!(c.create_one("rf3", 1, 3), Ok(1));
    // A stale epoch or an unknown node is refused.
    assert_eq!(
        c.heartbeat(3, e3 + 100, 9_600),
        Answer::BrokerHeartbeat(Err(crate::ApiError {
            code: code::STALE_BROKER_EPOCH,
            message: format!("Node 3 epoch {}, registered with {e3}.", e3 + 100)
        }))
    );
    assert!(
        matches!(c.heartbeat(9, 1, 9_600), Answer::BrokerHeartbeat(Err(e)) if e.code == code::BROKER_ID_NOT_REGISTERED)
    );
}

#[test]
fn a_retried_registration_is_answered_when_the_first_commits() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let reg = Registration {
        node: 4,
        incarnation: [9; 16],
        directory: [0; 16],
        kafka: endpoint(9096),
        listeners: Vec::new(),
        rpc: endpoint(33149),
        rack: None,
        features: Vec::new(),
    };
    let register = |c: &mut Cluster| {
        let t = c.token();
        let out = c.ctl.register_broker(t, 0, reg.clone());
        c.take(out);
        t
    };
    let answer = |c: &mut Cluster, t| match c.replies.remove(&t) {
        Some(Answer::RegisterBroker(o)) => Some(o.map_err(|e| e.code)),
        None => None,
        a => panic!("{a:?}"),
    };
    // The retry waits for the first registration's outcome, and fails with it.
    let (t1, t2) = (register(&mut c), register(&mut c));
    assert_eq!(c.proposed.len(), 1);
    assert_eq!(answer(&mut c, t2), None, "not before the commit");
    let (id, _) = c.proposed.pop_front().unwrap();
    let out = c.ctl.failed(id);
    c.take(out);
    assert_eq!(answer(&mut c, t1), Some(Err(code::NOT_CONTROLLER)));
    assert_eq!(answer(&mut c, t2), Some(Err(code::NOT_CONTROLLER)));
    // And succeeds with it.
    let (t1, t2) = (register(&mut c), register(&mut c));
    assert_eq!(answer(&mut c, t2), None, "not before the commit");
    c.commit();
    let epoch = c.ctl.image().broker(4).unwrap().epoch;
    assert_eq!(answer(&mut c, t1), Some(Ok(epoch)));
    assert_eq!(answer(&mut c, t2), Some(Ok(epoch)));
    // Once committed, a retry is answered at once.
    let t3 = register(&mut c);
    assert_eq!(answer(&mut c, t3), Some(Ok(epoch)));
}

#[test]
fn fencing_follows_virtual_time_and_reregistration() {
    let mut c = Cluster::new(&[1, 2]);
    assert_eq!(
        c.ticks.iter().min(),
        Some(&9_000),
        "a tick asked for the first deadline"
    );
    // Heartbeats every 2 s (Kafka's broker.heartbeat.interval.ms) keep both unfenced.
    let mut now = 0;
    while now < 60_000 {
        now += 2_000;
        for n in [1, 2] {
            let e = c.ctl.image().broker(n).unwrap().epoch;
            c.heartbeat(n, e, now);
        }
        let out = c.ctl.tick(now);
        c.take(out);
        assert!(c.proposed.is_empty());
    }
    assert_eq!(c.ctl.image().live_brokers(), vec![1, 2]);
    // Node 2's process dies; a new one registers while the old session still runs: refused.
    let reg = |incarnation| Registration {
        node: 2,
        incarnation,
        directory: [0; 16],
        kafka: endpoint(1),
        listeners: Vec::new(),
        rpc: endpoint(2),
        rack: None,
        features: Vec::new(),
    };
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 1_000, reg([9; 16])));
    assert!(
        matches!(r, Answer::RegisterBroker(Err(e)) if e.code == code::DUPLICATE_BROKER_REGISTRATION)
    );
    // Once the session expired it is fenced, and the new incarnation registers (fenced).
    let e1 = c.ctl.image().broker(1).unwrap().epoch;
    c.heartbeat(1, e1, now + 8_000);
    let out = c.ctl.tick(now + 9_000);
    c.take(out);
    c.commit();
    assert!(c.ctl.image().broker(2).unwrap().fenced);
    let old_epoch = c.ctl.image().broker(2).unwrap().epoch;
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 9_001, reg([9; 16])));
    let Answer::RegisterBroker(Ok(epoch)) = r else {
        panic!("{r:?}")
    };
    assert!(epoch > old_epoch);
    // The same incarnation retrying gets the same epoch, nothing proposed.
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 9_002, reg([9; 16])));
    assert_eq!(r, Answer::RegisterBroker(Ok(epoch)));
    assert_eq!(c.ctl.image().broker(2).unwrap().kafka, endpoint(1));
    // Not caught up yet: stays fenced.
    assert_eq!(
        c.run(|ctl, t| ctl.broker_heartbeat(t, now + 9_003, 2, epoch, false)),
        Answer::BrokerHeartbeat(Ok(true))
    );
    assert_eq!(
        c.heartbeat(2, epoch, now + 9_004),
        Answer::BrokerHeartbeat(Ok(false))
    );
    assert_eq!(c.ctl.image().live_brokers(), vec![1, 2]);
    // A process with a data directory registers it (its session expired first)...
    let with_dir = |incarnation, directory| Registration {
        directory,
        ..reg(incarnation)
    };
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 30_000, with_dir([10; 16], [5; 16])));
    assert!(matches!(r, Answer::RegisterBroker(Ok(_))), "{r:?}");
    assert_eq!(c.ctl.image().broker(2).unwrap().directory, [5; 16]);
    // ...and one with another directory (the old one was wiped) is refused for good, alive
    // or not; one that names none keeps the registered one.
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 60_000, with_dir([11; 16], [6; 16])));
    assert!(
        matches!(&r, Answer::RegisterBroker(Err(e)) if e.code == code::INVALID_REGISTRATION),
        "{r:?}"
    );
    let r = c.run(|ctl, t| ctl.register_broker(t, now + 60_001, with_dir([12; 16], [0; 16])));
    assert!(matches!(r, Answer::RegisterBroker(Ok(_))), "{r:?}");
    assert_eq!(c.ctl.image().broker(2).unwrap().directory, [5; 16]);
    assert_eq!(c.ctl.image().broker(2).unwrap().incarnation, [12; 16]);
}

#[test]
fn offsets_topic_replication_is_capped_to_live_brokers_with_a_warning() {
    let mut c = Cluster::new(&[1, 2]);
    let mut t = NewTopic::new(OFFSETS_TOPIC, 50, -1);
    t.configs.insert("cleanup.policy".into(), "compact".into());
    assert_eq!(c.create(vec![t]).remove(0).1, Ok(50));
    let topic = c.ctl.image().topic_by_name(OFFSETS_TOPIC).unwrap();
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 2));
    assert!(c
        .warnings
        .iter()
        .any(|w| w.contains("offsets.topic.replication.factor is 3")));
    // On three nodes it gets all three, and no warning.
    let mut c = Cluster::new(&[1, 2, 3]);
    assert_eq!(c.create_one(OFFSETS_TOPIC, 50, -1), Ok(50));
    let topic = c.ctl.image().topic_by_name(OFFSETS_TOPIC).unwrap();
    assert!(topic.partitions.iter().all(|p| p.replicas.len() == 3));
    assert!(c.warnings.is_empty());
    // Internal topics: no deletion, no more partitions, no retention.
    let r = c.run(|ctl, t| ctl.delete_topics(t, vec![OFFSETS_TOPIC.into(), "nope".into()]));
    let Answer::DeleteTopics(v) = r else { panic!() };
    assert_eq!(
        codes(v),
        vec![
            Err(code::INVALID_REQUEST),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION)
        ]
    );
    let r = c.run(|ctl, t| ctl.create_partitions(t, vec![(OFFSETS_TOPIC.into(), 60)], false));
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::INVALID_REQUEST)]);
    let r = c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![AlterConfig {
                target: ConfigTarget::Topic(OFFSETS_TOPIC.into()),
                ops: vec![("cleanup.policy".into(), Some("delete".into()))],
                replace: false,
            }],
            false,
        )
    });
    let Answer::AlterConfigs(v) = r else { panic!() };
    assert_eq!(codes(v), vec![Err(code::INVALID_CONFIG)]);
}

#[test]
fn create_partitions_and_delete_topics_codes() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.create_one("t", 2, 3).unwrap();
    let r = c.run(|ctl, t| {
        ctl.create_partitions(
            t,
            vec![("t".into(), 2), ("u".into(), 3), ("t".into(), 10_001)],
            false,
        )
    });
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(
        codes(v),
        vec![
            Err(code::INVALID_REQUEST),
            Err(code::UNKNOWN_TOPIC_OR_PARTITION),
            Err(code::INVALID_REQUEST)
        ]
    );
    let r = c.run(|ctl, t| ctl.create_partitions(t, vec![("t".into(), 1)], false));
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::INVALID_PARTITIONS)]);
    let r = c.run(|ctl, t| ctl.create_partitions(t, vec![("t".into(), 10_001)], false));
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::INVALID_PARTITIONS)]);
    let r = c.run(|ctl, t| ctl.create_partitions(t, vec![("t".into(), 5)], true));
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(codes(v), vec![Ok(())]);
    assert_eq!(
        c.ctl.image().topic_by_name("t").unwrap().partitions.len(),
        2,
        "validate only"
    );
    // Deleting frees the name, and a re-created topic has a new id and higher revisions.
    let old = c.ctl.image().topic_by_name("t").unwrap().clone();
    let r = c.run(|ctl, t| ctl.delete_topics(t, vec!["t".into()]));
    assert_eq!(r, Answer::DeleteTopics(vec![("t".into(), Ok(old.id))]));
    assert_eq!(c.deltas.last().unwrap().removed_topics[&old.id], old);
    c.create_one("t", 2, 3).unwrap();
    let new = c.ctl.image().topic_by_name("t").unwrap();
    assert_ne!(new.id, old.id);
    assert!(new.partitions[0].revision > old.partitions[0].revision);
}

#[test]
fn alter_configs_diff_into_records() {
    let mut c = Cluster::new(&[1]);
    c.create_one("t", 1, 1).unwrap();
    let alter = |ops: Vec<(&str, Option<&str>)>, replace| AlterConfig {
        target: ConfigTarget::Topic("t".into()),
        ops: ops
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
        replace,
    };
    let configs = |c: &Cluster| c.ctl.image().topic_by_name("t").unwrap().configs.clone();
    c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![alter(vec![("a", Some("1")), ("b", Some("2"))], false)],
            false,
        )
    });
    assert_eq!(configs(&c).len(), 2);
    c.run(|ctl, t| ctl.alter_configs(t, vec![alter(vec![("a", None)], false)], false));
    assert_eq!(
        configs(&c),
        BTreeMap::from([("b".to_string(), "2".to_string())])
    );
    c.run(|ctl, t| ctl.alter_configs(t, vec![alter(vec![("c", Some("3"))], true)], false));
    assert_eq!(
        configs(&c),
        BTreeMap::from([("c".to_string(), "3".to_string())])
    );
    // No change: answered at once, nothing proposed.
    let before = c.deltas.len();
    let r = c.run(|ctl, t| ctl.alter_configs(t, vec![alter(vec![("c", Some("3"))], false)], false));
    assert_eq!(
        r,
        Answer::AlterConfigs(vec![(ConfigTarget::Topic("t".into()), Ok(()))])
    );
    assert_eq!(c.deltas.len(), before);
    let r = c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![AlterConfig {
                target: ConfigTarget::Topic("nope".into()),
                ops: vec![],
                replace: false,
            }],
            false,
        )
    });
    let Answer::AlterConfigs(v) = r else { panic!() };
    assert_eq!(codes(v), vec![Err(code::UNKNOWN_TOPIC_OR_PARTITION)]);
    // A resource named twice: INVALID_REQUEST for both entries, also when the first one
    // changes nothing, and nothing of them is written; other resources are unaffected.
    for (i, first) in [vec![], vec![("d", Some("4"))]].into_iter().enumerate() {
        let before = c.deltas.len();
        let r = c.run(|ctl, t| {
            ctl.alter_configs(
                t,
                vec![
                    alter(first, false),
                    AlterConfig {
                        target: ConfigTarget::Broker(None),
                        ops: vec![("x".into(), Some(i.to_string()))],
                        replace: false,
                    },
                    alter(vec![("e", Some("5"))], false),
                ],
                false,
            )
        });
        let Answer::AlterConfigs(v) = r else { panic!() };
        assert_eq!(
            codes(v),
            vec![
                Err(code::INVALID_REQUEST),
                Ok(()),
                Err(code::INVALID_REQUEST)
            ]
        );
        assert_eq!(
            configs(&c),
            BTreeMap::from([("c".to_string(), "3".to_string())])
        );
        assert_eq!(c.deltas.len(), before + 1, "the broker default was written");
    }
}

#[test]
fn a_topic_without_partitions_is_refused_or_grown() {
    // A list that leaves a topic without partitions is no log or snapshot.
    assert!(MetadataImage::replay(&[topic("a", 1)]).is_err());
    assert!(MetadataImage::replay(&[topic("a", 1), partition(1, 0, &[1], 1)]).is_ok());
    // A damaged log could still apply it entry by entry: CreatePartitions of such a topic
    // places the partitions with the defaults instead of panicking.
    let mut c = Cluster::new(&[1, 2, 3]);
    let (_, out) = c.ctl.committed(None, &[topic("empty", 9)]).unwrap();
    c.take(out);
    c.follower.apply_batch(&[topic("empty", 9)]).unwrap();
    let answer = c.run(|ctl, t| ctl.create_partitions(t, vec![("empty".into(), 2)], false));
    let Answer::CreatePartitions(v) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(codes(v), vec![Ok(())]);
    let t = c.ctl.image().topic_by_name("empty").unwrap();
    assert_eq!(t.partitions.len(), 2);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 1));
}

#[test]
fn manual_assignments_are_checked() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let with = |a: Vec<(i32, Vec<NodeId>)>| {
        let mut t = NewTopic::new("m", -1, -1);
        t.assignments = a;
        t
    };
    let bad = [
        with(vec![(0, vec![1, 2]), (2, vec![2, 3])]),
        with(vec![(0, vec![1, 1])]),
        with(vec![(0, vec![1, 9])]),
        with(vec![(0, vec![1, 2]), (1, vec![3])]),
    ];
    for t in bad {
        assert_eq!(
            c.create(vec![t]).remove(0).1,
            Err(code::INVALID_REPLICA_ASSIGNMENT)
        );
    }
    let mut both = with(vec![(0, vec![1])]);
    both.partitions = 1;
    assert_eq!(c.create(vec![both]).remove(0).1, Err(code::INVALID_REQUEST));
    assert_eq!(
        c.create(vec![with(vec![(1, vec![3, 1]), (0, vec![2, 3])])])
            .remove(0)
            .1,
        Ok(2)
    );
    let t = c.ctl.image().topic_by_name("m").unwrap();
    assert_eq!(t.partitions[0].replicas, vec![2, 3]);
    assert_eq!(t.partitions[1].replicas, vec![3, 1]);
}

#[test]
fn answers_wait_for_commit_and_fail_when_it_does_not_come() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let t1 = c.token();
    let out = c
        .ctl
        .create_topics(t1, vec![NewTopic::new("x", 3, 3)], false);
    c.take(out);
    assert!(!c.replies.contains_key(&t1), "not before the commit");
    // A second request sees the first in flight: the name is taken.
    let t2 = c.token();
    let out = c
        .ctl
        .create_topics(t2, vec![NewTopic::new("x", 1, 1)], false);
    c.take(out);
    let Answer::CreateTopics(v) = c.replies.remove(&t2).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::TOPIC_ALREADY_EXISTS)]);
    // A third in flight behind it.
    let t3 = c.token();
    let out = c
        .ctl
        .create_topics(t3, vec![NewTopic::new("y", 1, 1)], false);
    c.take(out);
    assert_eq!(c.proposed.len(), 2);
    // The first proposal fails (leadership lost): both answers are NOT_CONTROLLER.
    let (first, _) = c.proposed.pop_front().unwrap();
    c.proposed.clear();
    let out = c.ctl.failed(first);
    c.take(out);
    for t in [t1, t3] {
        let Answer::CreateTopics(v) = c.replies.remove(&t).unwrap() else {
            panic!()
        };
        assert_eq!(codes(v), vec![Err(code::NOT_CONTROLLER)]);
    }
    assert!(c.ctl.image().topic_by_name("x").is_none());
    // The speculative image forgot them: the same request now succeeds.
    assert_eq!(c.create_one("x", 3, 3), Ok(3));
    // Another leader's entry commits while one of ours is in flight: ours fails.
    let t4 = c.token();
    let out = c
        .ctl
        .create_topics(t4, vec![NewTopic::new("z", 1, 1)], false);
    c.take(out);
    c.proposed.clear();
    let foreign = [topic("other", 77), partition(77, 0, &[1], 1_000)];
    let (delta, out) = c.ctl.committed(None, &foreign).unwrap();
    c.take(out);
    assert!(delta.created_topics.contains(&id(77)));
    let Answer::CreateTopics(v) = c.replies.remove(&t4).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::NOT_CONTROLLER)]);
    assert!(c.ctl.image().revision() >= 1_000);
    // Inactive: NOT_CONTROLLER at once; answers in flight wait for their entries' outcome.
    let t5 = c.token();
    let out = c
        .ctl
        .create_topics(t5, vec![NewTopic::new("w", 1, 1)], false);
    c.take(out);
    c.ctl.become_inactive();
    assert!(!c.replies.contains_key(&t5), "its entry may still commit");
    let (lost, _) = c.proposed.pop_front().unwrap();
    let out = c.ctl.failed(lost);
    c.take(out);
    let Answer::CreateTopics(v) = c.replies.remove(&t5).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::NOT_CONTROLLER)]);
    let t6 = c.token();
    let out = c.ctl.delete_topics(t6, vec!["x".into()]);
    c.take(out);
    let Answer::DeleteTopics(v) = c.replies.remove(&t6).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::NOT_CONTROLLER)]);
    // A damaged log is an error, and the image stays as it was.
    let before = c.ctl.image().clone();
    assert!(c
        .ctl
        .committed(None, &[partition(200, 0, &[1], 1)])
        .is_err());
    assert_eq!(c.ctl.image(), &before);
}

#[test]
fn a_refused_proposal_fails_only_itself_and_later_ones() {
    // P1 creates "a"; the Raft layer refuses P2 (back-pressure) but keeps leading, so P1
    // still commits. A retry of "a" must see P1 in flight, and P1's commit answers it.
    let mut c = Cluster::new(&[1, 2, 3]);
    let t1 = c.token();
    let out = c
        .ctl
        .create_topics(t1, vec![NewTopic::new("a", 1, 1)], false);
    c.take(out);
    let t2 = c.token();
    let out = c
        .ctl
        .create_topics(t2, vec![NewTopic::new("b", 1, 1)], false);
    c.take(out);
    let (p2, _) = c.proposed.pop_back().unwrap();
    let out = c.ctl.failed(p2);
    c.take(out);
    let Answer::CreateTopics(v) = c.replies.remove(&t2).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::NOT_CONTROLLER)]);
    assert!(!c.replies.contains_key(&t1), "P1 is still in flight");
    assert_eq!(c.create_one("a", 1, 1), Err(code::TOPIC_ALREADY_EXISTS));
    let Answer::CreateTopics(v) = c.replies.remove(&t1).unwrap() else {
        panic!()
    };
    assert_eq!(codes(v), vec![Ok(())]);
    // "b" was forgotten with P2: it can be created now.
    assert_eq!(c.create_one("b", 1, 1), Ok(1));
}

#[test]
fn committed_entries_are_matched_by_their_id() {
    // Two proposals in flight; the Raft layer reports the second committed (the first was
    // lost without a report): the second is answered OK, the first NOT_CONTROLLER.
    let mut c = Cluster::new(&[1, 2, 3]);
    let t1 = c.token();
    let out = c
        .ctl
        .create_topics(t1, vec![NewTopic::new("a", 1, 1)], false);
    c.take(out);
    let t2 = c.token();
    let out = c
        .ctl
        .create_topics(t2, vec![NewTopic::new("b", 1, 1)], false);
    c.take(out);
    let t3 = c.token();
    let out = c
        .ctl
        .create_topics(t3, vec![NewTopic::new("c", 1, 1)], false);
    c.take(out);
    c.proposed.pop_front().unwrap();
    c.commit();
    let answer = |c: &mut Cluster, t| {
        let Answer::CreateTopics(v) = c.replies.remove(&t).unwrap() else {
            panic!()
        };
        codes(v)
    };
    assert_eq!(answer(&mut c, t1), vec![Err(code::NOT_CONTROLLER)]);
    assert_eq!(answer(&mut c, t2), vec![Ok(())]);
    assert_eq!(answer(&mut c, t3), vec![Ok(())]);
    assert!(c.ctl.image().topic_by_name("a").is_none());
    assert_eq!(c.create_one("a", 1, 1), Ok(1));
}

#[test]
fn producer_id_blocks_never_overlap() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let mut rng = Rng::new(11);
    let mut granted: Vec<ProducerIdsBlock> = Vec::new();
    let mut waiting = Vec::new();
    for round in 0..300 {
        let node = 1 + rng.below(3) as NodeId;
        let epoch = c.ctl.image().broker(node).unwrap().epoch;
        let t = c.token();
        let out = c.ctl.allocate_producer_ids(t, node, epoch);
        c.take(out);
        waiting.push(t);
        match rng.below(4) {
            0 => c.commit(),
            1 if !c.proposed.is_empty() => {
                // Leadership lost: in-flight blocks are never granted.
                let (id, _) = c.proposed.pop_front().unwrap();
                c.proposed.clear();
                let out = c.ctl.failed(id);
                c.take(out);
            }
            _ => {}
        }
        if round % 50 == 49 {
            c.commit();
        }
    }
    c.commit();
    for t in waiting {
        match c.replies.remove(&t).unwrap() {
            Answer::AllocateProducerIds(Ok(b)) => granted.push(b),
            Answer::AllocateProducerIds(Err(e)) => assert_eq!(e.code, code::NOT_CONTROLLER),
            a => panic!("{a:?}"),
        }
    }
    assert!(granted.len() > 100);
    let mut sorted = granted.clone();
    sorted.sort_by_key(|b| b.first);
    for w in sorted.windows(2) {
        assert!(w[0].end() <= w[1].first, "overlap {w:?}");
    }
    assert!(granted.iter().all(|b| b.size == 1_000));
    assert_eq!(
        c.ctl.image().next_producer_id(),
        sorted.last().unwrap().end()
    );
    // A stale epoch is refused.
    let t = c.token();
    let out = c.ctl.allocate_producer_ids(t, 1, 999_999);
    c.take(out);
    assert!(
        matches!(c.replies.remove(&t), Some(Answer::AllocateProducerIds(Err(e))) if e.code == code::STALE_BROKER_EPOCH)
    );
}

#[test]
fn per_node_replica_limit_is_enforced() {
    use crate::limits::PARTITIONS_PER_NODE_MAX;
    let mut c = Cluster::new(&[1]);
    let mut made = 0u64;
    let mut i = 0;
    while made + 9_999 <= PARTITIONS_PER_NODE_MAX {
        assert_eq!(c.create_one(&format!("t{i}"), 9_999, 1), Ok(9_999));
        made += 9_999;
        i += 1;
    }
    let left = (PARTITIONS_PER_NODE_MAX - made) as i32;
    assert_eq!(
        c.create_one("over", left + 1, 1),
        Err(code::POLICY_VIOLATION)
    );
    assert_eq!(c.create_one("fits", left, 1), Ok(left));
    assert_eq!(c.ctl.image().replicas_on(1), PARTITIONS_PER_NODE_MAX);
    let r = c.run(|ctl, t| ctl.create_partitions(t, vec![("fits".into(), left + 1)], false));
    let Answer::CreatePartitions(v) = r else {
        panic!()
    };
    assert_eq!(codes(v), vec![Err(code::POLICY_VIOLATION)]);
}

// ---------------------------------------------------------------------------------------
// Bootstrap from the single-node state.

#[test]
fn single_node_state_becomes_a_log() {
    let state = LegacyState {
        cluster_id: "AAAAAAAAAAAAAAAAAAAAAA".into(),
        node: 1,
        topics: vec![
            LegacyTopic {
                name: "a".into(),
                id: id(1),
                partitions: 3,
                configs: BTreeMap::from([("retention.ms".into(), "5".into())]),
            },
            LegacyTopic {
                name: OFFSETS_TOPIC.into(),
                id: id(2),
                partitions: 50,
                configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
            },
        ],
        broker_configs: BTreeMap::from([("log.retention.ms".into(), "9".into())]),
        producer_id_next_block: 5_000,
    };
    let records = bootstrap_records(&state).unwrap();
    let image = MetadataImage::replay(&records).unwrap();
    assert_eq!(image.cluster_id(), Some("AAAAAAAAAAAAAAAAAAAAAA"));
    assert_eq!(image.topic_count(), 2);
    let a = image.topic_by_name("a").unwrap();
    assert_eq!(a.id, id(1));
    assert_eq!(a.partitions.len(), 3);
    assert_eq!(a.configs["retention.ms"], "5");
    assert!(image.topic_by_name(OFFSETS_TOPIC).unwrap().internal());
    assert_eq!(image.replicas_on(1), 53);
    assert_eq!(image.cluster_configs()["log.retention.ms"], "9");
    assert_eq!(image.next_producer_id(), 5_000);
    // Records of it encode (in batches, as a log or snapshot would hold them).
    assert_eq!(
        decode_batch(&encode_batch(&records).unwrap()).unwrap(),
        records
    );
    // The node registers on start, and the controller carries on from there.
    let mut ctl = Controller::new(ControllerConfig::default(), image);
    ctl.become_active(0);
    let out = ctl.allocate_producer_ids(ReplyToken(1), 1, 0);
    assert!(
        matches!(&out[0], Effect::Reply(_, Answer::AllocateProducerIds(Err(e))) if e.code == code::BROKER_ID_NOT_REGISTERED)
    );
    // A state the image refuses is an error, not a log.
    let mut dup = state.clone();
    dup.topics.push(dup.topics[0].clone());
    assert!(bootstrap_records(&dup).is_err());
    // Every topic has a partition 0.
    let mut none = state.clone();
    none.topics[0].partitions = 0;
    assert!(bootstrap_records(&none).is_err());
    let mut empty = state;
    empty.topics.clear();
    empty.producer_id_next_block = 0;
    let image = MetadataImage::replay(&bootstrap_records(&empty).unwrap()).unwrap();
    assert_eq!(image.next_producer_id(), 0);
}

// ---------------------------------------------------------------------------------------
// Random commands, hostile values included: the controller never panics (it never builds a
// record its image refuses), every node's image stays the same, snapshots stay exact.

#[test]
fn random_commands_keep_every_invariant() {
    // `SLUICE_META_SEEDS=N` runs N seeds (a soak); a failure names its seed, and
    // `SLUICE_META_FIRST_SEED=S SLUICE_META_SEEDS=1` replays it.
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let first = env("SLUICE_META_FIRST_SEED", 0);
    let seeds = env("SLUICE_META_SEEDS", 40);
    let (mut created, mut fenced) = (0, 0);
    for seed in first..first + seeds {
        match std::panic::catch_unwind(|| random_commands(seed)) {
            Ok((c, f)) => {
                created += c;
                fenced += f;
            }
            Err(e) => {
                eprintln!(
                    "failing seed {seed}: SLUICE_META_FIRST_SEED={seed} SLUICE_META_SEEDS=1 \
                     cargo test -p sluice-meta random_commands -- --nocapture"
                );
                std::panic::resume_unwind(e);
            }
        }
    }
    if seeds >= 40 {
        assert!(
            created > 5 * seeds as usize && fenced > seeds as usize,
            "the commands did something: {created} {fenced}"
        );
    }
}

/// One seed of random commands; returns the topics created and broker changes committed.
fn random_commands(seed: u64) -> (usize, usize) {
    {
        let mut rng = Rng::new(seed);
        let config = ControllerConfig {
            seed,
            // Every fifth seed asks for an oversized block (clamped).
            producer_id_block_size: [u32::MAX, 1000, 1000, 1000, 1000][(seed % 5) as usize],
            ..ControllerConfig::default()
        };
        let mut c = Cluster::with_config(&[1, 2, 3], config);
        let first_token = c.next_token + 1;
        let mut unused = BTreeSet::new();
        let names = ["a", "b", "a.b", "a_b", "", "bad name", OFFSETS_TOPIC, "c"];
        let pick = |rng: &mut Rng| names[rng.below(names.len() as u64) as usize].to_string();
        let keys = ["", "retention.ms", "cleanup.policy", "x"];
        let key = |rng: &mut Rng| keys[rng.below(keys.len() as u64) as usize].to_string();
        let mut now = 0i64;
        for _ in 0..400 {
            now += rng.below(1_000) as i64;
            // Nodes 1..=3 mostly keep heartbeating; sometimes one misses its session.
            for n in 1..=3 {
                if rng.below(8) > 0 {
                    if let Some(b) = c.ctl.image().broker(n) {
                        let (epoch, t) = (b.epoch, c.token());
                        let out = c.ctl.broker_heartbeat(t, now, n, epoch, true);
                        c.take(out);
                    }
                }
            }
            let t = c.token();
            let op = rng.below(11);
            if op == 9 || op == 10 {
                unused.insert(t);
            }
            let out = match op {
                0 | 1 => {
                    let n = 1 + rng.below(3);
                    let topics = (0..n)
                        .map(|_| {
                            let mut t = NewTopic::new(
                                &pick(&mut rng),
                                rng.below(24) as i32 - 3,
                                rng.below(8) as i16 - 3,
                            );
                            if rng.below(4) == 0 {
                                t.configs.insert(key(&mut rng), "v".into());
                            }
                            if rng.below(6) == 0 {
                                t.partitions = -1;
                                t.replication_factor = -1;
                                t.assignments = (0..1 + rng.below(3) as i32)
                                    .map(|p| {
                                        (
                                            p,
                                            vec![
                                                rng.below(5) as NodeId,
                                                1 + rng.below(3) as NodeId,
                                            ],
                                        )
                                    })
                                    .collect();
                            }
                            t
                        })
                        .collect();
                    c.ctl.create_topics(t, topics, rng.below(5) == 0)
                }
                2 => c.ctl.delete_topics(t, vec![pick(&mut rng), pick(&mut rng)]),
                3 => c.ctl.create_partitions(
                    t,
                    vec![(pick(&mut rng), rng.below(30) as i32 - 2)],
                    rng.below(5) == 0,
                ),
                4 => {
                    let target = match rng.below(3) {
                        0 => ConfigTarget::Topic(pick(&mut rng)),
                        1 => ConfigTarget::Broker(
                            Some(rng.below(4) as NodeId - 1).filter(|&n| n != 0),
                        ),
                        _ => ConfigTarget::ClientMetrics(
                            ["s1", "s2", ""][rng.below(3) as usize].to_string(),
                        ),
                    };
                    let ops = (0..rng.below(3))
                        .map(|_| {
                            let k = if matches!(target, ConfigTarget::ClientMetrics(_)) {
                                match rng.below(4) {
                                    0 => "interval.ms".to_string(),
                                    1 => "metrics".to_string(),
                                    2 => "match".to_string(),
                                    _ => key(&mut rng),
                                }
                            } else {
                                key(&mut rng)
                            };
                            let v = ["1", "1000", "*", "client_id=a.*"][rng.below(4) as usize];
                            (k, (rng.below(3) > 0).then(|| v.to_string()))
                        })
                        .collect();
                    c.ctl.alter_configs(
                        t,
                        vec![AlterConfig {
                            target,
                            ops,
                            replace: rng.below(3) == 0,
                        }],
                        false,
                    )
                }
                5 => {
                    let node = rng.below(5) as NodeId;
                    let epoch = c.ctl.image().broker(node).map_or(7, |b| b.epoch);
                    c.ctl.allocate_producer_ids(t, node, epoch)
                }
                6 => {
                    let node = rng.below(5) as NodeId - 1;
                    let reg = Registration {
                        node,
                        incarnation: [rng.below(3) as u8; 16],
                        directory: [0; 16],
                        kafka: endpoint(1),
                        listeners: Vec::new(),
                        rpc: Endpoint {
                            host: if rng.below(8) == 0 {
                                String::new()
                            } else {
                                "h".into()
                            },
                            port: 2,
                        },
                        rack: None,
                        // A build before features, this build, or one that serves less.
                        features: match rng.below(3) {
                            0 => Vec::new(),
                            1 => crate::features::supported(),
                            _ => vec![SupportedFeature {
                                name: "metadata.version".into(),
                                min: 7,
                                max: 20 + rng.below(8) as i16,
                            }],
                        },
                    };
                    c.ctl.register_broker(t, now, reg)
                }
                7 => {
                    let node = rng.below(5) as NodeId;
                    let epoch = c.ctl.image().broker(node).map_or(1, |b| b.epoch);
                    c.ctl
                        .broker_heartbeat(t, now, node, epoch, rng.below(2) == 0)
                }
                8 if rng.below(5) == 0 => {
                    let names = ["metadata.version", "group.version", "kraft.version", "x"];
                    let upgrades = [
                        UpgradeType::Upgrade,
                        UpgradeType::SafeDowngrade,
                        UpgradeType::UnsafeDowngrade,
                    ];
                    let updates = (0..1 + rng.below(2))
                        .map(|_| FeatureUpdate {
                            name: names[rng.below(4) as usize].into(),
                            level: rng.below(30) as i16 - 1,
                            upgrade: upgrades[rng.below(3) as usize],
                        })
                        .collect();
                    let me = rng.below(4) as NodeId;
                    c.ctl.update_features(t, me, updates, rng.below(4) == 0)
                }
                8 if rng.below(4) == 0 => {
                    let names = [Some("a"), None];
                    let entity = user_entity(names[rng.below(2) as usize]);
                    let keys = ["producer_byte_rate", "request_percentage", "nope"];
                    let key = keys[rng.below(3) as usize];
                    let value = [Some(1.0), Some(2.5), None][rng.below(3) as usize];
                    let validate = rng.below(4) == 0;
                    c.ctl
                        .alter_client_quotas(t, vec![quota_change(entity, key, value)], validate)
                }
                8 if rng.below(3) == 0 => {
                    let pattern = [
                        PatternType::Literal,
                        PatternType::Prefixed,
                        PatternType::Match,
                    ][rng.below(3) as usize];
                    let permission =
                        [AclPermission::Allow, AclPermission::Deny][rng.below(2) as usize];
                    let names = ["a", "ab", "*", ""];
                    let name = names[rng.below(4) as usize];
                    if rng.below(2) == 0 {
                        c.ctl.create_acls(t, vec![acl(name, pattern, permission)])
                    } else {
                        let f = AclFilter {
                            name: Some(name.into()),
                            pattern,
                            ..AclFilter::any()
                        };
                        c.ctl.delete_acls(t, vec![f])
                    }
                }
                8 => {
                    let running: Vec<_> = c
                        .ctl
                        .image()
                        .reassignments()
                        .map(|(t, p, x)| (t.id, p, x.revision))
                        .collect();
                    match running.first() {
                        Some(&(id, p, rev)) if rng.below(2) == 0 => {
                            let rev = rev - rng.below(2);
                            c.ctl.reassignment_complete(t, id, p, rev)
                        }
                        _ => {
                            let target = (rng.below(2) == 0).then(|| {
                                (0..rng.below(4))
                                    .map(|_| rng.below(5) as NodeId)
                                    .collect::<Vec<_>>()
                            });
                            let req = vec![(pick(&mut rng), rng.below(4) as i32 - 1, target)];
                            c.ctl.alter_partition_reassignments(t, req)
                        }
                    }
                }
                9 => c.ctl.tick(now),
                _ => match rng.below(3) {
                    0 => {
                        // A leadership change: in-flight entries are either superseded
                        // (failed) or kept and committed by the next leader, this node again.
                        c.ctl.become_inactive();
                        if rng.below(2) == 0 && !c.proposed.is_empty() {
                            let (id, _) = c.proposed.pop_front().unwrap();
                            c.proposed.clear();
                            let out = c.ctl.failed(id);
                            c.take(out);
                        }
                        c.ctl.become_active(now)
                    }
                    _ => Vec::new(),
                },
            };
            c.take(out);
            match rng.below(5) {
                0 if !c.proposed.is_empty() => {
                    let (id, _) = c.proposed.pop_front().unwrap();
                    c.proposed.clear();
                    let out = c.ctl.failed(id);
                    c.take(out);
                }
                1 if !c.proposed.is_empty() => {
                    // The Raft layer refuses one proposal (back-pressure) and keeps leading:
                    // it and the later ones fail, the earlier ones still commit.
                    let k = rng.below(c.proposed.len() as u64) as usize;
                    let (id, _) = c.proposed[k].clone();
                    c.proposed.truncate(k);
                    let out = c.ctl.failed(id);
                    c.take(out);
                }
                2 => {}
                _ => c.commit(),
            }
        }
        c.commit();
        for t in (first_token..=c.next_token).filter(|t| !unused.contains(&ReplyToken(*t))) {
            assert!(
                c.replies.contains_key(&ReplyToken(t)),
                "seed {seed}: {t} unanswered"
            );
        }
        c.ctl.image().check_invariants();
        let image = c.ctl.image().clone();
        assert_eq!(
            MetadataImage::replay(&image.snapshot()).unwrap(),
            image,
            "seed {seed}"
        );
        let created = c.deltas.iter().map(|d| d.created_topics.len()).sum();
        let fenced = c.deltas.iter().filter(|d| !d.brokers.is_empty()).count();
        (created, fenced)
    }
}

#[test]
fn partition_reassignments_start_replace_complete_and_cancel() {
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    let mut t = NewTopic::new("t", -1, -1);
    t.assignments = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 1])];
    c.create(vec![t]).remove(0).1.unwrap();
    let tid = c.ctl.image().topic_by_name("t").unwrap().id;
    let alter = |c: &mut Cluster, reqs: Vec<(&str, i32, Option<Vec<NodeId>>)>| {
        let reqs = reqs
            .into_iter()
            .map(|(n, p, r)| (n.to_string(), p, r))
            .collect();
        match c.run(|ctl, t| ctl.alter_partition_reassignments(t, reqs)) {
            Answer::AlterPartitionReassignments(v) => codes(v),
            a => panic!("{a:?}"),
        }
    };
    let part = |c: &Cluster, p: usize| c.ctl.image().topic(&tid).unwrap().partitions[p].clone();
    // Start: node 4 joins, node 3 leaves; the target leads the list.
    assert_eq!(
        alter(&mut c, vec![("t", 0, Some(vec![4, 2, 1]))]),
        vec![Ok(())]
    );
    let p = part(&c, 0);
    assert_eq!(p.replicas, vec![4, 2, 1, 3]);
    assert_eq!((p.adding.clone(), p.removing.clone()), (vec![4], vec![3]));
    assert_eq!((p.target(), p.original()), (vec![4, 2, 1], vec![2, 1, 3]));
    assert_eq!(p.preferred_leader(), 4);
    assert_eq!(
        c.deltas.last().unwrap().reassigned_partitions,
        BTreeMap::from([((tid, 0), vec![1, 2, 3])])
    );
    assert_eq!(c.ctl.image().reassignments().count(), 1);
    assert_eq!(c.ctl.image().replicas_on(4), 1);
    // A snapshot carries it.
    let image = c.ctl.image().clone();
    assert_eq!(MetadataImage::replay(&image.snapshot()).unwrap(), image);
    // Replace it: still measured from the original replicas.
    assert_eq!(
        alter(&mut c, vec![("t", 0, Some(vec![2, 4]))]),
        vec![Ok(())]
    );
    let p = part(&c, 0);
    assert_eq!(p.replicas, vec![2, 4, 1, 3]);
    assert_eq!(
        (p.adding.clone(), p.removing.clone()),
        (vec![4], vec![1, 3])
    );
    // Errors.
    let refused = [
        (("t", 1, Some(vec![1, 9])), code::INVALID_REPLICA_ASSIGNMENT),
        (("t", 1, Some(vec![1, 1])), code::INVALID_REPLICA_ASSIGNMENT),
        (("t", 1, Some(vec![])), code::INVALID_REPLICA_ASSIGNMENT),
        (("t", 2, Some(vec![1])), code::UNKNOWN_TOPIC_OR_PARTITION),
        (("t", -1, Some(vec![1])), code::UNKNOWN_TOPIC_OR_PARTITION),
        (("u", 0, None), code::UNKNOWN_TOPIC_OR_PARTITION),
        (("t", 1, None), code::NO_REASSIGNMENT_IN_PROGRESS),
    ];
    for (req, code) in refused {
        assert_eq!(alter(&mut c, vec![req.clone()]), vec![Err(code)], "{req:?}");
    }
    assert_eq!(
        alter(
            &mut c,
            vec![("t", 1, Some(vec![1])), ("t", 1, Some(vec![2]))]
        ),
        vec![Ok(()), Err(code::INVALID_REQUEST)],
        "the same partition twice"
    );
    assert_eq!(alter(&mut c, vec![("t", 1, None)]), vec![Ok(())]);
    assert_eq!(part(&c, 1).replicas, vec![1, 2, 3]);
    // More partitions take the target's replication factor (2), not the 4 listed now.
    c.run(|ctl, t| ctl.create_partitions(t, vec![("t".into(), 3)], false));
    assert_eq!(part(&c, 2).replicas.len(), 2, "partition 0's target has 2");
    // Completion: a stale revision is refused, the current one makes the target the set.
    let rev = part(&c, 0).revision;
    let done =
        |c: &mut Cluster, rev| match c.run(|ctl, t| ctl.reassignment_complete(t, tid, 0, rev)) {
            Answer::ReassignmentComplete(o) => o.map_err(|e| e.code),
            a => panic!("{a:?}"),
        };
    assert_eq!(done(&mut c, rev - 1), Err(code::INVALID_UPDATE_VERSION));
    assert_eq!(done(&mut c, rev), Ok(()));
    let p = part(&c, 0);
    assert_eq!(p.replicas, vec![2, 4]);
    assert!(!p.reassigning() && p.revision > rev);
    assert_eq!(
        done(&mut c, p.revision),
        Err(code::INVALID_UPDATE_VERSION),
        "none running"
    );
    // Cancel: back to the replicas before it (the staying ones in the target's order).
    assert_eq!(
        alter(&mut c, vec![("t", 1, Some(vec![4, 3]))]),
        vec![Ok(())]
    );
    assert_eq!(part(&c, 1).replicas, vec![4, 3, 1, 2]);
    assert_eq!(alter(&mut c, vec![("t", 1, None)]), vec![Ok(())]);
    let p = part(&c, 1);
    assert_eq!(
        (p.replicas.clone(), p.reassigning()),
        (vec![3, 1, 2], false)
    );
    // Asking for what is already there changes nothing.
    let before = c.deltas.len();
    assert_eq!(
        alter(&mut c, vec![("t", 1, Some(vec![3, 1, 2]))]),
        vec![Ok(())]
    );
    assert_eq!(c.deltas.len(), before);
}

#[test]
fn each_node_learns_what_to_do_with_its_replicas() {
    use crate::reconcile::{replica_actions, ReplicaAction};
    let mut c = Cluster::new(&[1, 2, 3, 4]);
    let mut t = NewTopic::new("t", -1, -1);
    t.assignments = vec![(0, vec![1, 2, 3]), (1, vec![2, 3, 4])];
    c.create(vec![t]).remove(0).1.unwrap();
    let tid = c.ctl.image().topic_by_name("t").unwrap().id;
    let actions =
        |c: &Cluster, node| replica_actions(c.deltas.last().unwrap(), c.ctl.image(), node);
    let created = |a: &[ReplicaAction]| {
        a.iter()
            .filter_map(|x| match x {
                ReplicaAction::Create {
                    partition,
                    learner: false,
                    ..
                } => Some(*partition),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(created(&actions(&c, 1)), vec![0]);
    assert_eq!(created(&actions(&c, 2)), vec![0, 1]);
    assert_eq!(created(&actions(&c, 4)), vec![1]);
    // A reassignment: 4 joins partition 0 as a learner, 1 and 2 stay (update), 3 leaves
    // only when it completes.
    let reqs = vec![("t".to_string(), 0, Some(vec![4, 1, 2]))];
    c.run(|ctl, t| ctl.alter_partition_reassignments(t, reqs));
    assert!(matches!(
        &actions(&c, 4)[..],
        [ReplicaAction::Create { learner: true, .. }]
    ));
    for n in [1, 2, 3] {
        assert!(
            matches!(&actions(&c, n)[..], [ReplicaAction::Update { removing, .. }] if removing == &vec![3])
        );
    }
    let rev = c.ctl.image().topic(&tid).unwrap().partitions[0].revision;
    c.run(|ctl, t| ctl.reassignment_complete(t, tid, 0, rev));
    assert_eq!(
        actions(&c, 3),
        vec![ReplicaAction::Remove {
            topic: tid,
            partition: 0
        }]
    );
    assert!(
        matches!(&actions(&c, 4)[..], [ReplicaAction::Update { adding, .. }] if adding.is_empty())
    );
    // Deletion removes every local replica.
    c.run(|ctl, t| ctl.delete_topics(t, vec!["t".into()]));
    assert_eq!(
        actions(&c, 3),
        vec![ReplicaAction::Remove {
            topic: tid,
            partition: 1
        }]
    );
    assert_eq!(actions(&c, 4).len(), 2);
}

/// A reassignment's target is checked as Kafka's `validateManualPartitionAssignment`
/// checks it, with its messages (ids in order: node 9 is reported before the repeated 1);
/// a fenced broker is still registered, so a move to it is accepted (it joins once back).
#[test]
fn reassignment_targets_get_kafkas_checks_and_a_fenced_broker_is_accepted() {
    let mut c = Cluster::new(&[1, 2, 3]);
    let mut t = NewTopic::new("t", -1, -1);
    t.assignments = vec![(0, vec![1, 2])];
    c.create(vec![t]).remove(0).1.unwrap();
    let alter = |c: &mut Cluster, target: Vec<NodeId>| {
        let reqs = vec![("t".to_string(), 0, Some(target))];
        match c.run(|ctl, t| ctl.alter_partition_reassignments(t, reqs)) {
            Answer::AlterPartitionReassignments(mut v) => v.remove(0).1,
            a => panic!("{a:?}"),
        }
    };
    let refused = [
        (
            vec![],
            "The manual partition assignment includes an empty replica list.",
        ),
        (
            vec![1, 9, 1],
            "The manual partition assignment includes the broker 1 more than once.",
        ),
        (
            vec![9, 1],
            "The manual partition assignment includes broker 9, but no such broker is \
             registered.",
        ),
    ];
    for (target, message) in refused {
        let e = alter(&mut c, target.clone()).expect_err("refused");
        assert_eq!(
            (e.code, e.message.as_str()),
            (code::INVALID_REPLICA_ASSIGNMENT, message),
            "{target:?}"
        );
    }
    // Node 3 goes quiet and is fenced; 1 and 2 heartbeat.
    for now in [3_000, 6_000, 9_000] {
        for n in [1, 2] {
            let e = c.ctl.image().broker(n).unwrap().epoch;
            c.heartbeat(n, e, now);
        }
    }
    let out = c.ctl.tick(9_000);
    c.take(out);
    c.commit();
    assert!(c.ctl.image().broker(3).unwrap().fenced);
    assert_eq!(alter(&mut c, vec![1, 3]), Ok(()));
    let p = &c.ctl.image().topic_by_name("t").unwrap().partitions[0];
    assert_eq!((p.adding.clone(), p.removing.clone()), (vec![3], vec![2]));
}

fn feature_update(name: &str, level: i16, upgrade: UpgradeType) -> FeatureUpdate {
    FeatureUpdate {
        name: name.into(),
        level,
        upgrade,
    }
}

#[test]
fn feature_levels_are_checked_as_kafka_checks_them() {
    use crate::features::{GROUP_VERSION, METADATA_VERSION};
    // Node 1 registers as a build before features; node 2 (the controller here) with this
    // build's ranges.
    let mut c = Cluster::new(&[1]);
    let reg = Registration {
        node: 2,
        incarnation: [9; 16],
        directory: [0; 16],
        kafka: endpoint(9094),
        listeners: Vec::new(),
        rpc: endpoint(33147),
        rack: None,
        features: crate::features::supported(),
    };
    assert!(matches!(
        c.run(|ctl, t| ctl.register_broker(t, 0, reg)),
        Answer::RegisterBroker(Ok(_))
    ));
    let update = |c: &mut Cluster, updates: Vec<FeatureUpdate>, validate_only: bool| {
        let n = updates.len();
        let a = c.run(|ctl, t| ctl.update_features(t, 2, updates, validate_only));
        let Answer::UpdateFeatures(v) = a else {
            panic!("{a:?}")
        };
        assert_eq!(v.len(), n);
        v.into_iter().map(|(_, o)| o).collect::<Vec<_>>()
    };
    let refused = |v: &[Outcome<()>], text: &str| {
        assert!(
            v.iter().all(|o| matches!(o, Err(e)
                if e.code == code::INVALID_UPDATE_VERSION && e.message.contains(text))),
            "{v:?} should say {text}"
        );
    };
    use UpgradeType::*;
    // metadata.version 27: node 1 serves only up to 25.
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 27, Upgrade)],
        false,
    );
    refused(&v, "Invalid update version 27 for feature metadata.version. Broker 1 only supports versions 7-25");
    // Below the range, unknown features, negative levels, features at max 0.
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 6, Upgrade)],
        false,
    );
    refused(&v, "Local controller 2 only supports versions 7-27");
    let v = update(
        &mut c,
        vec![feature_update("foo.version", 1, Upgrade)],
        false,
    );
    refused(&v, "Local controller 2 does not support this feature.");
    let v = update(
        &mut c,
        vec![feature_update("foo.version", 0, SafeDowngrade)],
        false,
    );
    refused(&v, "Feature foo.version not found.");
    let v = update(
        &mut c,
        vec![feature_update(GROUP_VERSION, -1, Upgrade)],
        false,
    );
    refused(&v, "A feature version cannot be less than 0.");
    let v = update(
        &mut c,
        vec![feature_update("kraft.version", 1, Upgrade)],
        false,
    );
    refused(&v, "does not support this feature.");
    // All or nothing: a valid update beside a refused one is not applied either.
    let v = update(
        &mut c,
        vec![
            feature_update(GROUP_VERSION, 1, Upgrade),
            feature_update("foo.version", 1, Upgrade),
        ],
        false,
    );
    refused(
        &v,
        "The update failed for all features since the following feature had an error",
    );
    assert!(c.ctl.image().features().is_empty());
    // validate_only writes nothing; then the real one.
    let v = update(
        &mut c,
        vec![feature_update(GROUP_VERSION, 1, Upgrade)],
        true,
    );
    assert_eq!(v, vec![Ok(())]);
    assert!(c.ctl.image().features().is_empty());
    let v = update(
        &mut c,
        vec![
            feature_update(METADATA_VERSION, 20, Upgrade),
            feature_update(GROUP_VERSION, 1, Upgrade),
        ],
        false,
    );
    assert_eq!(v, vec![Ok(()), Ok(())]);
    assert_eq!(c.ctl.image().feature_level(GROUP_VERSION), 1);
    assert_eq!(c.ctl.image().feature_level(METADATA_VERSION), 20);
    assert!(c.deltas.last().unwrap().features);
    // Directions: an upgrade may not lower, a downgrade may not raise; metadata.version is
    // never lowered.
    let v = update(
        &mut c,
        vec![feature_update(GROUP_VERSION, 0, Upgrade)],
        false,
    );
    refused(
        &v,
        "without setting the upgrade type to either safe or unsafe downgrade",
    );
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 21, SafeDowngrade)],
        false,
    );
    refused(&v, "Can't downgrade to a newer version.");
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 19, SafeDowngrade)],
        false,
    );
    refused(
        &v,
        "Invalid metadata.version 19. Refusing to perform the requested downgrade",
    );
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 19, UnsafeDowngrade)],
        false,
    );
    refused(
        &v,
        "Unsafe metadata downgrade is not supported in this version.",
    );
    // The same level again changes nothing; a feature named twice takes its last update.
    let before = c.deltas.len();
    let v = update(
        &mut c,
        vec![feature_update(METADATA_VERSION, 20, Upgrade)],
        false,
    );
    assert_eq!(v, vec![Ok(())]);
    assert_eq!(c.deltas.len(), before);
    let v = update(
        &mut c,
        vec![
            feature_update(GROUP_VERSION, 1, Upgrade),
            feature_update(GROUP_VERSION, 0, SafeDowngrade),
        ],
        false,
    );
    assert_eq!(v, vec![Ok(()), Ok(())]);
    assert_eq!(c.ctl.image().feature_level(GROUP_VERSION), 0);
    assert!(!c.ctl.image().features().contains_key(GROUP_VERSION));
    // A node must serve every finalized level to register: one that knows no group.version
    // is refused while it is finalized.
    assert_eq!(
        update(
            &mut c,
            vec![feature_update(GROUP_VERSION, 1, Upgrade)],
            false
        ),
        vec![Ok(())]
    );
    let reg = Registration {
        node: 3,
        incarnation: [10; 16],
        directory: [0; 16],
        kafka: endpoint(9095),
        listeners: Vec::new(),
        rpc: endpoint(33148),
        rack: None,
        features: vec![SupportedFeature {
            name: METADATA_VERSION.into(),
            min: 7,
            max: 27,
        }],
    };
    let a = c.run(|ctl, t| ctl.register_broker(t, 0, reg));
    assert!(
        matches!(&a, Answer::RegisterBroker(Err(e)) if e.code == code::UNSUPPORTED_VERSION
            && e.message.contains("does not support finalized version 1 of group.version")),
        "{a:?}"
    );
    // Replays and snapshots carry the levels.
    let again = MetadataImage::replay(&c.ctl.image().snapshot()).unwrap();
    assert_eq!(&again, c.ctl.image());
}

#[test]
fn a_log_from_before_features_gets_the_levels_it_served() {
    use crate::features::{GROUP_VERSION, METADATA_VERSION};
    let image = MetadataImage::replay(&[Record::ClusterId {
        cluster_id: "abcdefghijklmnopqrstuv".into(),
    }])
    .unwrap();
    let mut ctl = Controller::new(ControllerConfig::default(), image);
    let out = ctl.become_active(0);
    let batch = out
        .iter()
        .find_map(|e| match e {
            Effect::Propose { batch, .. } => Some(batch.clone()),
            _ => None,
        })
        .expect("the levels are proposed");
    let records = decode_batch(&batch).unwrap();
    assert_eq!(
        records,
        vec![
            Record::FeatureLevel {
                name: METADATA_VERSION.into(),
                level: 25
            },
            Record::FeatureLevel {
                name: GROUP_VERSION.into(),
                level: 1
            },
        ]
    );
    // A level set meanwhile (the upgrade's proposal failed, a client set group.version) is
    // not proposed again: only the missing one is.
    let image = MetadataImage::replay(&[
        Record::ClusterId {
            cluster_id: "abcdefghijklmnopqrstuv".into(),
        },
        Record::FeatureLevel {
            name: GROUP_VERSION.into(),
            level: 1,
        },
    ])
    .unwrap();
    let mut ctl = Controller::new(ControllerConfig::default(), image);
    let batch = ctl
        .become_active(0)
        .into_iter()
        .find_map(|e| match e {
            Effect::Propose { batch, .. } => Some(batch),
            _ => None,
        })
        .expect("metadata.version is proposed");
    assert_eq!(
        decode_batch(&batch).unwrap(),
        vec![Record::FeatureLevel {
            name: METADATA_VERSION.into(),
            level: 25
        }]
    );
    // A new log (no cluster id yet) gets them with its bootstrap entry instead.
    let mut fresh = Controller::new(ControllerConfig::default(), MetadataImage::new());
    assert!(!fresh
        .become_active(0)
        .iter()
        .any(|e| matches!(e, Effect::Propose { .. })));
}

#[test]
fn client_metrics_subscriptions_are_checked_stored_and_removed() {
    let mut c = Cluster::new(&[1]);
    let alter = |name: &str, ops: &[(&str, Option<&str>)]| AlterConfig {
        target: ConfigTarget::ClientMetrics(name.into()),
        ops: ops
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect(),
        replace: false,
    };
    let r = c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![
                alter(
                    "s",
                    &[
                        ("metrics", Some("org.apache.kafka.")),
                        ("interval.ms", Some("1000")),
                    ],
                ),
                alter("", &[("metrics", Some("*"))]),
                alter("bad", &[("interval.ms", Some("50"))]),
                alter("bad2", &[("match", Some("host=x"))]),
                alter("bad3", &[("bogus", Some("1"))]),
            ],
            false,
        )
    });
    let Answer::AlterConfigs(v) = r else {
        panic!("{r:?}")
    };
    let codes: Vec<_> = v
        .iter()
        .map(|(_, o)| o.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(codes, vec![None, Some(42), Some(42), Some(40), Some(42)]);
    let subs = c.ctl.image().client_metrics().clone();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs["s"]["interval.ms"], "1000");
    assert!(c.deltas.last().expect("a delta").client_metrics);
    let image = c.ctl.image().clone();
    assert_eq!(MetadataImage::replay(&image.snapshot()).unwrap(), image);
    // Removing every override removes the subscription.
    c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![alter("s", &[("metrics", None), ("interval.ms", None)])],
            false,
        )
    });
    assert!(c.ctl.image().client_metrics().is_empty());
}

#[test]
fn client_metrics_count_limit_holds_within_one_request() {
    let mut c = Cluster::new(&[1]);
    let max = crate::client_metrics::SUBSCRIPTIONS_MAX;
    let set = |name: String| AlterConfig {
        target: ConfigTarget::ClientMetrics(name),
        ops: vec![("interval.ms".into(), Some("1000".into()))],
        replace: false,
    };
    for chunk in (0..max - 1).collect::<Vec<_>>().chunks(100) {
        let changes = chunk.iter().map(|i| set(format!("s{i}"))).collect();
        c.run(|ctl, t| ctl.alter_configs(t, changes, false));
    }
    assert_eq!(c.ctl.image().client_metrics().len(), max - 1);
    // Two new ones in one request: the first fits, the second does not (and the
    // controller never proposes a record its image refuses).
    let r = c.run(|ctl, t| ctl.alter_configs(t, vec![set("x1".into()), set("x2".into())], false));
    let Answer::AlterConfigs(v) = r else {
        panic!("{r:?}")
    };
    let codes: Vec<_> = v
        .iter()
        .map(|(_, o)| o.as_ref().err().map(|e| e.code))
        .collect();
    assert_eq!(codes, vec![None, Some(code::POLICY_VIOLATION)]);
    assert_eq!(c.ctl.image().client_metrics().len(), max);
    // Deleting from a subscription that does not exist changes nothing and is no violation.
    let r = c.run(|ctl, t| {
        ctl.alter_configs(
            t,
            vec![AlterConfig {
                target: ConfigTarget::ClientMetrics("absent".into()),
                ops: vec![("interval.ms".into(), None)],
                replace: false,
            }],
            false,
        )
    });
    let Answer::AlterConfigs(v) = r else {
        panic!("{r:?}")
    };
    assert!(v[0].1.is_ok(), "{v:?}");
}

#[test]
fn delegation_tokens_are_created_renewed_expired_and_swept() {
    use crate::controller::CreateToken;
    let config = ControllerConfig {
        token_max_lifetime_ms: 10_000,
        token_expiry_time_ms: 1_000,
        ..ControllerConfig::default()
    };
    let mut c = Cluster::with_config(&[1], config);
    let create = |id: &str, renewers: &[&str]| CreateToken {
        token_id: id.into(),
        owner: "User:alice".into(),
        requester: "User:alice".into(),
        renewers: renewers.iter().map(|r| r.to_string()).collect(),
        max_lifetime_ms: -1,
    };
    let r = c.run(|ctl, t| ctl.create_token(t, create("a", &["User:bob"]), 100));
    let Answer::CreateToken(Ok(tok)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (tok.issue_ms, tok.max_ms, tok.expiry_ms),
        (100, 10_100, 1_100)
    );
    assert!(c.deltas.last().unwrap().tokens);
    let r = c.run(|ctl, t| ctl.create_token(t, create("b", &["Group:x"]), 100));
    assert!(
        matches!(r, Answer::CreateToken(Err(ref e)) if e.code == 67),
        "{r:?}"
    );
    let r = c.run(|ctl, t| ctl.create_token(t, create("a", &[]), 100));
    assert!(
        matches!(r, Answer::CreateToken(Err(ref e)) if e.code == 42),
        "{r:?}"
    );
    // A retry of the same creation gets the token it made.
    let r = c.run(|ctl, t| ctl.create_token(t, create("a", &["User:bob"]), 200));
    assert!(
        matches!(r, Answer::CreateToken(Ok(ref t)) if t.issue_ms == 100),
        "{r:?}"
    );
    // Renewed by a renewer; not by a stranger; expired at once by its owner.
    let expiry = |a: Answer| match a {
        Answer::TokenExpiry(o) => o.map_err(|e| e.code),
        a => panic!("{a:?}"),
    };
    assert_eq!(
        expiry(c.run(|ctl, t| ctl.token_expiry(t, "a", "User:bob", 500, false, 600))),
        Ok(1_100)
    );
    assert_eq!(c.ctl.image().tokens()["a"].expiry_ms, 1_100);
    assert_eq!(
        expiry(c.run(|ctl, t| ctl.token_expiry(t, "a", "User:eve", -1, false, 600))),
        Err(63)
    );
    assert_eq!(
        expiry(c.run(|ctl, t| ctl.token_expiry(t, "x", "User:bob", -1, false, 600))),
        Err(62)
    );
    let image = c.ctl.image().clone();
    assert_eq!(MetadataImage::replay(&image.snapshot()).unwrap(), image);
    // The sweep removes it once expired, looking only when one may have.
    assert!(c.ctl.sweep_tokens(1_100).is_empty());
    assert!(c.ctl.image().tokens().contains_key("a"));
    let out = c.ctl.sweep_tokens(1_101);
    c.take(out);
    c.commit();
    assert!(c.ctl.image().tokens().is_empty());
    // Expire with a negative period removes at once.
    c.run(|ctl, t| ctl.create_token(t, create("c", &[]), 2_000));
    assert_eq!(
        expiry(c.run(|ctl, t| ctl.token_expiry(t, "c", "User:alice", -1, true, 2_500))),
        Ok(2_500)
    );
    assert!(c.ctl.image().tokens().is_empty());
}
