//! Seed inputs for the fuzz targets, generated rather than committed: valid requests for
//! every API version the broker serves and valid record batches of every codec, in the
//! input layout each harness expects (a leading control byte, then the wire bytes).
//!
//! The targets write them at start-up (libFuzzer's initialisation runs before it reads the
//! corpus) into `$SLUICE_FUZZ_SEEDS_DIR`, which scripts/fuzz.sh points at the corpus: no
//! separate build of a generator, whose binary could not link under the fuzz flags anyway.

use std::path::Path;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_broker::handlers::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use sluice_broker::handlers::SUPPORTED;
use sluice_codec::kafka_protocol::messages::create_topics_request::{
    CreatableTopic, CreatableTopicConfig,
};
use sluice_codec::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use sluice_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_codec::kafka_protocol::messages::{
    alter_configs_request, incremental_alter_configs_request, AlterConfigsRequest, ApiKey,
    CreateTopicsRequest, DeleteTopicsRequest, IncrementalAlterConfigsRequest, MetadataRequest,
    ProduceRequest, RequestHeader, RequestKind, TopicName,
};
use sluice_codec::kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_codec::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// A default-valued request of `key`'s type (the variant names match the api key names).
fn default_request(key: ApiKey) -> Option<RequestKind> {
    macro_rules! defaults {
        ($($name:ident),* $(,)?) => {
            match key {
                $(ApiKey::$name => RequestKind::$name(Default::default()),)*
                _ => return None,
            }
        };
    }
    Some(defaults!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        DescribeLogDirs,
        CreatePartitions,
        IncrementalAlterConfigs,
        DescribeCluster,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        OffsetDelete,
        DescribeGroups,
        ListGroups,
        DeleteGroups,
        ElectLeaders,
    ))
}

/// Header + body with the size prefix, as a client writes it; `None` if kafka-protocol
/// cannot encode this body at this version.
pub fn frame(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &RequestKind,
) -> Option<Vec<u8>> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .ok()?;
    body.encode(&mut payload, version).ok()?;
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.put_i32(i32::try_from(payload.len()).ok()?);
    out.extend_from_slice(&payload);
    Some(out)
}

/// A v2 batch of three records with keys, values and a header.
pub fn batch(compression: Compression) -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(vec![b'v'; 20])),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"x")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encoding a small batch");
    buf.freeze()
}

const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn topic(name: &'static str) -> TopicName {
    TopicName(StrBytes::from_static_str(name))
}

/// Requests with content the handlers check: records, topic names, configs.
fn populated_requests() -> Vec<(ApiKey, RequestKind)> {
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic("orders"))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch(Compression::None)))])]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic("orders"))),
        MetadataRequestTopic::default().with_name(Some(topic("bad/name"))),
    ]));
    let create = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(topic("orders"))
        .with_num_partitions(3)
        .with_replication_factor(1)
        .with_configs(vec![CreatableTopicConfig::default()
            .with_name(StrBytes::from_static_str("retention.ms"))
            .with_value(Some(StrBytes::from_static_str("60000")))])]);
    let delete = DeleteTopicsRequest::default().with_topic_names(vec![topic("orders")]);
    let alter = AlterConfigsRequest::default().with_resources(vec![
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("cleanup.policy"))
                .with_value(Some(StrBytes::from_static_str("compact")))]),
        alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_BROKER)
            .with_resource_name(StrBytes::from_static_str("0"))
            .with_configs(vec![alter_configs_request::AlterableConfig::default()
                .with_name(StrBytes::from_static_str("log.retention.ms"))
                .with_value(Some(StrBytes::from_static_str("1000")))]),
    ]);
    let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
        incremental_alter_configs_request::AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_static_str("orders"))
            .with_configs(vec![
                incremental_alter_configs_request::AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("segment.bytes"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_static_str("1048576"))),
            ]),
    ]);
    vec![
        (ApiKey::Produce, RequestKind::Produce(produce)),
        (ApiKey::Metadata, RequestKind::Metadata(metadata)),
        (ApiKey::CreateTopics, RequestKind::CreateTopics(create)),
        (ApiKey::DeleteTopics, RequestKind::DeleteTopics(delete)),
        (ApiKey::AlterConfigs, RequestKind::AlterConfigs(alter)),
        (
            ApiKey::IncrementalAlterConfigs,
            RequestKind::IncrementalAlterConfigs(incremental),
        ),
    ]
}

/// Seeds for the `request` target: (file name, input).
pub fn requests() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // Every served key at its lowest and highest version, whole and in 3-byte reads.
    for &(key, min, max) in SUPPORTED {
        let Some(body) = default_request(key) else {
            continue;
        };
        for version in [min, max] {
            if let Some(f) = frame(key, version, 1, &body) {
                out.push((format!("{key:?}-v{version}"), [&[0u8][..], &f].concat()));
            }
        }
    }
    // Content the handlers look at, at each version the broker serves.
    for (key, body) in populated_requests() {
        let Some(&(_, min, max)) = SUPPORTED.iter().find(|(k, _, _)| *k == key) else {
            continue;
        };
        for version in min..=max {
            if let Some(f) = frame(key, version, 2, &body) {
                out.push((
                    format!("{key:?}-v{version}-full"),
                    [&[0u8][..], &f].concat(),
                ));
            }
        }
    }
    // Two pipelined requests split across small reads.
    if let (Some(a), Some(b)) = (
        default_request(ApiKey::ApiVersions).and_then(|r| frame(ApiKey::ApiVersions, 3, 3, &r)),
        default_request(ApiKey::Metadata).and_then(|r| frame(ApiKey::Metadata, 12, 4, &r)),
    ) {
        out.push(("pipelined".into(), [&[3u8][..], &a, &b].concat()));
    }
    out
}

/// Seeds for the `record_batch` target: (file name, input).
pub fn record_batches() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for c in COMPRESSIONS {
        let b = batch(c);
        out.push((format!("{c:?}"), [&[0u8][..], &b].concat()));
        // Mode 1 (CRCs fixed by the harness) with two batches back to back.
        out.push((format!("{c:?}-x2"), [&[1u8][..], &b, &b].concat()));
    }
    out
}

/// Write `seeds` into `$SLUICE_FUZZ_SEEDS_DIR` (created if missing) when it is set; a
/// failure is reported and fuzzing goes on with whatever corpus there is.
pub fn write_from_env(seeds: &[(String, Vec<u8>)]) {
    let Some(dir) = std::env::var_os("SLUICE_FUZZ_SEEDS_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        for (name, input) in seeds {
            std::fs::write(dir.join(format!("seed-{name}")), input)?;
        }
        Ok(())
    });
    match written {
        Ok(()) => eprintln!("seeds: {} seeds in {}", seeds.len(), dir.display()),
        Err(e) => eprintln!("seeds: writing to {}: {e}", dir.display()),
    }
}
