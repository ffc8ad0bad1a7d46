//! End-to-end tests through the public API (encode with kafka-protocol, frame, decode back)
//! and property tests feeding arbitrary bytes to every entry point.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, MetadataRequest, ProduceRequest, RequestHeader, RequestKind,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType as KpTimestampType,
};
use proptest::prelude::*;

use crate::batch::testutil::build_batch;
use crate::*;

/// Encode header + body the way a client does, with the size prefix.
fn client_frame<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> BytesMut {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("test-client")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .unwrap();
    body.encode(&mut payload, version).unwrap();
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(&payload);
    out
}

fn table() -> ApiTable {
    ApiTable::new(&[
        (ApiKey::Produce, 3, 11),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::ApiVersions, 0, 4),
    ])
    .unwrap()
}

fn kp_batch(compression: KpCompression) -> Bytes {
    let records: Vec<Record> = (0..3)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 42,
            producer_epoch: 1,
            timestamp_type: KpTimestampType::Creation,
            offset: i,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(vec![b'v'; 100])),
            headers: Default::default(),
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
    .unwrap();
    buf.freeze()
}

#[test]
fn metadata_v12_round_trip() {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_static_str("orders"))))]))
        .with_allow_auto_topic_creation(false);
    let mut wire = client_frame(ApiKey::Metadata, 12, 99, &req);
    let mut dec = FrameDecoder::default();
    let frame = dec.decode(&mut wire).unwrap().unwrap();
    assert!(wire.is_empty());
    let decoded = table().decode_frame(frame).unwrap();
    assert_eq!(decoded.header.api_key, ApiKey::Metadata);
    assert_eq!(decoded.header.correlation_id, 99);
    assert_eq!(decoded.header.header_version, 2);
    assert_eq!(decoded.header.client_id.as_deref(), Some("test-client"));
    assert_eq!(decoded.header.response_header_version(), 1);
    assert_eq!(decoded.body, RequestKind::Metadata(req));
}

#[test]
fn produce_v9_round_trip_with_zero_copy_records() {
    for compression in [
        KpCompression::None,
        KpCompression::Gzip,
        KpCompression::Zstd,
    ] {
        let batch = kp_batch(compression);
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("orders")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(3)
                    .with_records(Some(batch.clone()))])]);
        let mut wire = client_frame(ApiKey::Produce, 9, 7, &req);
        let frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();

        let (header, body) = decode_request_header(frame).unwrap();
        assert_eq!(
            (header.api_key, header.api_version, header.correlation_id),
            (ApiKey::Produce, 9, 7)
        );
        let RequestKind::Produce(decoded) =
            decode_request(&table(), header.api_key, header.api_version, body).unwrap()
        else {
            panic!("not a produce request");
        };
        assert_eq!(decoded, req);
        let records = decoded.topic_data[0].partition_data[0]
            .records
            .clone()
            .unwrap();
        // The record bytes are a view into the frame, not a copy.
        assert!(frame_range.contains(&(records.as_ptr() as usize)));

        let h = validate_batch(&records).unwrap();
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.producer_id, 42);
        let expected = match compression {
            KpCompression::None => Compression::None,
            KpCompression::Gzip => Compression::Gzip,
            _ => Compression::Zstd,
        };
        assert_eq!(h.compression(), Some(expected));

        // Broker-side stamping keeps the batch valid.
        let mut owned = records.to_vec();
        set_base_offset(&mut owned, 1_000).unwrap();
        set_partition_leader_epoch(&mut owned, 4).unwrap();
        set_log_append_time(&mut owned, 1_800_000_000_000).unwrap();
        let h = validate_batch(&owned).unwrap();
        assert_eq!(
            (h.base_offset, h.partition_leader_epoch, h.next_offset()),
            (1_000, 4, 1_003)
        );
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
    }
}

#[test]
fn api_versions_v3_round_trip_and_old_version_rejected() {
    let req = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str("sluice-test"))
        .with_client_software_version(StrBytes::from_static_str("1.0"));
    let mut wire = client_frame(ApiKey::ApiVersions, 3, 1, &req);
    let frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
    let decoded = table().decode_frame(frame).unwrap();
    assert_eq!(decoded.body, RequestKind::ApiVersions(req));
    assert_eq!(decoded.header.response_header_version(), 0);

    // Produce v2 is below the table's minimum (kafka-protocol cannot even encode it).
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::Produce as i16);
    frame.put_i16(2);
    frame.put_i32(5);
    frame.put_i16(-1); // null client id
    let err = table().decode_frame(frame.freeze()).unwrap_err();
    assert!(matches!(
        err,
        CodecError::UnsupportedVersion {
            api_key: ApiKey::Produce,
            version: 2,
            ..
        }
    ));
    assert!(err.closes_connection());
}

#[test]
fn hand_built_batch_in_a_blob_with_kafka_protocol_batches() {
    let mut blob = build_batch(0, &[b"a", b"b"]).to_vec();
    blob.extend_from_slice(&kp_batch(KpCompression::None));
    let n = BatchIter::new(&blob)
        .map(|item| match item.unwrap() {
            BatchItem::Batch(b) => b.header.records_count,
            BatchItem::Partial(p) => panic!("unexpected partial {p:?}"),
        })
        .sum::<i32>();
    assert_eq!(n, 5);
}

#[test]
fn huge_array_count_is_an_error_not_an_abort() {
    // Metadata v0 body declaring 0x033c0c00 topics in 4 bytes. Unpatched kafka-protocol 0.18
    // pre-allocates ~3.6 GiB for it; see vendor/README.md. This must be a plain decode error.
    let table = ApiTable::codec_max();
    let body = Bytes::from_static(&[0x03, 0x3c, 0x0c, 0x00, 0xb6]);
    let err = decode_request(&table, ApiKey::Metadata, 0, body).unwrap_err();
    assert!(matches!(err, CodecError::BodyDecode { .. }), "{err}");
    // Same for i32::MAX and for a compact (flexible) array count of u32::MAX.
    let body = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
    assert!(decode_request(&table, ApiKey::Metadata, 4, body).is_err());
    let body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode_request(&table, ApiKey::Metadata, 12, body).is_err());
}

/// `batch` (a valid v2 batch) with its records section replaced by `payload` and the length
/// and CRC32C fixed, so only the payload is wrong.
fn with_records_payload(batch: &[u8], payload: &[u8]) -> Bytes {
    const RECORDS_AT: usize = 61;
    let mut out = batch[..RECORDS_AT].to_vec();
    out.extend_from_slice(payload);
    let len = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

#[test]
fn decompression_bombs_are_errors_not_allocations() {
    use kafka_protocol::records::RecordBatchDecoder;
    // Real batches of every codec still decode through the capped paths.
    for c in [
        KpCompression::Gzip,
        KpCompression::Snappy,
        KpCompression::Lz4,
        KpCompression::Zstd,
    ] {
        let decoded = RecordBatchDecoder::decode(&mut kp_batch(c)).unwrap();
        assert_eq!(decoded.records.len(), 3, "{c:?}");
    }
    let good = kp_batch(KpCompression::Snappy);
    // Raw snappy whose length header claims 3 GiB (varint), followed by a few bytes: the
    // unpatched crate allocated (and zeroed) the claimed length before looking further.
    let mut claim = Vec::new();
    let mut v: u64 = 3 << 30;
    while v >= 0x80 {
        claim.push((v as u8) | 0x80);
        v >>= 7;
    }
    claim.push(v as u8);
    claim.extend_from_slice(&[0u8; 16]);
    let mut bomb = with_records_payload(&good, &claim);
    let err = RecordBatchDecoder::decode(&mut bomb).unwrap_err();
    assert!(err.to_string().contains("snappy"), "{err:#}");
    // zstd of zeros past the cap: 300 MiB squeezed into a few KiB.
    let zeros = vec![0u8; 1 << 20];
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    for _ in 0..300 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let compressed = enc.finish().unwrap();
    assert!(compressed.len() < 64 << 10, "{} bytes", compressed.len());
    let zstd_batch = kp_batch(KpCompression::Zstd);
    let mut bomb = with_records_payload(&zstd_batch, &compressed);
    let err = RecordBatchDecoder::decode(&mut bomb).unwrap_err();
    assert!(format!("{err:#}").contains("more than"), "{err:#}");
}

#[test]
fn record_offsets_and_timestamps_near_i64_max_wrap_instead_of_panicking() {
    use kafka_protocol::records::RecordBatchDecoder;
    // Found by the record_batch fuzz target: the vendored decoder added a record's deltas to
    // the batch's base offset and base timestamp unchecked, which panics with overflow
    // checks on. It now wraps, as Kafka's Java decoder does.
    let mut batch = kp_batch(KpCompression::None).to_vec();
    // baseOffset sits outside the CRC; baseTimestamp inside (27..35), so fix the CRC.
    batch[0..8].copy_from_slice(&i64::MAX.to_be_bytes());
    batch[27..35].copy_from_slice(&i64::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    assert!(validate_batch(&batch).is_ok());
    let decoded = RecordBatchDecoder::decode(&mut Bytes::from(batch)).unwrap();
    let offsets: Vec<i64> = decoded.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [i64::MAX, i64::MIN, i64::MIN + 1]);
    let timestamps: Vec<i64> = decoded.records.iter().map(|r| r.timestamp).collect();
    assert_eq!(timestamps, [i64::MAX, i64::MIN, i64::MIN + 1]);
}

// ---------------------------------------------------------------------------------------
// Property tests: arbitrary input must yield values or errors, never a panic.

fn valid_blob() -> Vec<u8> {
    let mut blob = build_batch(5, &[b"one", b"two"]);
    blob.extend(build_batch(7, &[b"three"]));
    blob
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn framer_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
                           size_max in 0usize..256) {
        let mut dec = FrameDecoder::new(size_max);
        let mut buf = BytesMut::new();
        'outer: for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(frame)) => prop_assert!(frame.len() <= size_max),
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
        }
    }

    #[test]
    fn header_decoder_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_request_header(Bytes::from(frame.clone()));
        let _ = table().decode_frame(Bytes::from(frame));
    }

    #[test]
    fn header_with_known_prefix_never_panics(key in 0i16..100, version in -2i16..20, corr in any::<i32>(),
                                             rest in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frame = BytesMut::new();
        frame.put_i16(key);
        frame.put_i16(version);
        frame.put_i32(corr);
        frame.extend_from_slice(&rest);
        match ApiTable::codec_max().decode_frame(frame.freeze()) {
            Ok(req) => prop_assert_eq!(req.header.correlation_id, corr),
            Err(e) => prop_assert!(e.correlation_id().is_none() || e.correlation_id() == Some(corr)),
        }
    }

    #[test]
    fn decode_request_never_panics_for_any_api(
        key_idx in any::<prop::sample::Index>(),
        version_pick in any::<prop::sample::Index>(),
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let table = ApiTable::codec_max();
        let keys: Vec<_> = table.iter().collect();
        let (key, range) = keys[key_idx.index(keys.len())];
        let span = (range.max - range.min) as usize + 1;
        let version = range.min + version_pick.index(span) as i16;
        // decode_request contains a decoder panic as an error, so "no panic" is checked on
        // the counter it keeps: any contained panic anywhere in this process fails the test.
        let panics_before = contained_panics();
        let _ = decode_request(&table, key, version, Bytes::from(body.clone()));
        prop_assert_eq!(
            contained_panics(),
            panics_before,
            "the decoder panicked on {:?} v{} body {:02x?}", key, version, body
        );
    }

    #[test]
    fn batch_iter_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut it = BatchIter::new(&blob);
        for item in it.by_ref() {
            if let Ok(BatchItem::Batch(b)) = item {
                prop_assert_eq!(b.bytes.len(), b.header.total_len());
            }
        }
        prop_assert!(it.position() <= blob.len());
        let _ = validate_batch(&blob);
        let mut m = blob.clone();
        let _ = set_base_offset(&mut m, 1);
        let _ = set_partition_leader_epoch(&mut m, 1);
        let _ = set_log_append_time(&mut m, 1);
    }

    #[test]
    fn mutated_valid_batches_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                                         cut in any::<prop::sample::Index>()) {
        let mut blob = valid_blob();
        for (at, x) in flips {
            let i = at.index(blob.len());
            blob[i] ^= x;
        }
        blob.truncate(cut.index(blob.len() + 1));
        let mut it = BatchIter::new(&blob);
        for item in it.by_ref() {
            if let Ok(BatchItem::Batch(b)) = item {
                // Whatever survived must have a correct CRC.
                prop_assert!(validate_batch(b.bytes).is_ok());
            }
        }
        let _ = set_log_append_time(&mut blob, 5);
    }
}

// --- OffsetCommit / OffsetFetch v10 (KIP-848 topic ids; vendored patch, see vendor/README.md) ---

mod offset_v10 {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::{
        ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
        OffsetFetchResponse, RequestKind, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use uuid::Uuid;

    use super::client_frame;
    use crate::*;

    const TOPIC_ID: Uuid = Uuid::from_bytes([
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ]);

    fn name() -> TopicName {
        TopicName(StrBytes::from_static_str("orders"))
    }

    /// Encodes `msg` at `version` (checking `compute_size` agrees) and decodes it back,
    /// checking every byte was read.
    fn round_trip<T: Encodable + Decodable>(msg: &T, version: i16) -> (Bytes, T) {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf, version).unwrap();
        assert_eq!(msg.compute_size(version).unwrap(), buf.len(), "v{version}");
        let wire = buf.freeze();
        let mut rd = wire.clone();
        let back = T::decode(&mut rd, version).unwrap();
        assert!(rd.is_empty(), "v{version}: {} bytes left", rd.len());
        (wire, back)
    }

    /// One topic, one partition, carrying both the name and the id (the broker fills both;
    /// each version writes only the one its schema has).
    fn commit_request() -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_generation_id_or_member_epoch(5)
            .with_member_id(StrBytes::from_static_str("m"))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name())
                .with_topic_id(TOPIC_ID)
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(3)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(7)
                    .with_committed_metadata(Some(StrBytes::from_static_str(
                        "md",
                    )))])])
    }

    fn fetch_request() -> OffsetFetchRequest {
        // The top-level `topics` (v0-7) stays at its default, an empty list: the generated
        // encoder counts `None` as set and refuses it at v8+.
        OffsetFetchRequest::default()
            .with_groups(vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_member_id(Some(StrBytes::from_static_str("m")))
                .with_member_epoch(5)
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(name())
                    .with_topic_id(TOPIC_ID)
                    .with_partition_indexes(vec![3])]))])
            .with_require_stable(true)
    }

    fn commit_response() -> OffsetCommitResponse {
        OffsetCommitResponse::default()
            .with_throttle_time_ms(0)
            .with_topics(vec![OffsetCommitResponseTopic::default()
                .with_name(name())
                .with_topic_id(TOPIC_ID)
                .with_partitions(vec![OffsetCommitResponsePartition::default()
                    .with_partition_index(3)
                    .with_error_code(0)])])
    }

    fn fetch_response() -> OffsetFetchResponse {
        OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_topics(vec![OffsetFetchResponseTopics::default()
                .with_name(name())
                .with_topic_id(TOPIC_ID)
                .with_partitions(vec![OffsetFetchResponsePartitions::default()
                    .with_partition_index(3)
                    .with_committed_offset(42)
                    .with_committed_leader_epoch(7)
                    .with_metadata(Some(StrBytes::from_static_str("md")))
                    .with_error_code(0)])])])
    }

    /// The 16 bytes of `TOPIC_ID` as a UUID is written (most significant byte first).
    const TOPIC_ID_BYTES: [u8; 16] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,
        0x0f,
    ];

    #[test]
    fn offset_commit_request_v10_bytes_are_the_kafka_schema_layout() {
        // OffsetCommitRequest v10 (flexible, 8+): compact strings/arrays are length+1 varints,
        // every struct ends with a tagged-field count (0 here).
        let mut expected: Vec<u8> = vec![
            0x02, b'g', //                         group_id: COMPACT_STRING "g"
            0x00, 0x00, 0x00, 0x05, //             generation_id_or_member_epoch: INT32 5
            0x02, b'm', //                         member_id: COMPACT_STRING "m"
            0x00, //                               group_instance_id: COMPACT_NULLABLE_STRING null
            //                                     (retention_time_ms is v2-4 only)
            0x02, //                               topics: COMPACT_ARRAY, 1 element
        ];
        //                                         topics[0].name: versions 0-9, absent
        expected.extend_from_slice(&TOPIC_ID_BYTES); // topics[0].topic_id: UUID (10+)
        expected.extend_from_slice(&[
            0x02, //                               topics[0].partitions: COMPACT_ARRAY, 1 element
            0x00, 0x00, 0x00, 0x03, //             partition_index: INT32 3
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // committed_offset: INT64 42
            0x00, 0x00, 0x00, 0x07, //             committed_leader_epoch: INT32 7
            0x03, b'm',
            b'd', //                   committed_metadata: COMPACT_NULLABLE_STRING "md"
            0x00, //                               partition TAG_BUFFER
            0x00, //                               topic TAG_BUFFER
            0x00, //                               request TAG_BUFFER
        ]);
        let mut buf = BytesMut::new();
        commit_request().encode(&mut buf, 10).unwrap();
        assert_eq!(&buf[..], &expected[..]);

        // The same bytes decode through the codec's request path, topic id in, name empty.
        let table = ApiTable::codec_max();
        let RequestKind::OffsetCommit(req) =
            decode_request(&table, ApiKey::OffsetCommit, 10, Bytes::from(expected)).unwrap()
        else {
            panic!("not an OffsetCommit request");
        };
        assert_eq!(req.topics[0].topic_id, TOPIC_ID);
        assert!(req.topics[0].name.is_empty());
        assert_eq!(req.topics[0].partitions[0].committed_offset, 42);
    }

    #[test]
    fn offset_fetch_request_v10_bytes_are_the_kafka_schema_layout() {
        // OffsetFetchRequest v10 (flexible, 6+). group_id and topics at the top are v0-7 only.
        let mut expected: Vec<u8> = vec![
            0x02, //                               groups: COMPACT_ARRAY, 1 element
            0x02, b'g', //                         groups[0].group_id: COMPACT_STRING "g"
            0x02, b'm', //                         member_id: COMPACT_NULLABLE_STRING "m" (9+)
            0x00, 0x00, 0x00, 0x05, //             member_epoch: INT32 5 (9+)
            0x02, //                               topics: COMPACT_NULLABLE_ARRAY, 1 element
        ];
        //                                         topics[0].name: versions 8-9, absent
        expected.extend_from_slice(&TOPIC_ID_BYTES); // topics[0].topic_id: UUID (10+)
        expected.extend_from_slice(&[
            0x02, 0x00, 0x00, 0x00, 0x03, //       partition_indexes: COMPACT_ARRAY [INT32 3]
            0x00, //                               topic TAG_BUFFER
            0x00, //                               group TAG_BUFFER
            0x01, //                               require_stable: BOOLEAN true (7+)
            0x00, //                               request TAG_BUFFER
        ]);
        let mut buf = BytesMut::new();
        fetch_request().encode(&mut buf, 10).unwrap();
        assert_eq!(&buf[..], &expected[..]);

        let table = ApiTable::codec_max();
        let RequestKind::OffsetFetch(req) =
            decode_request(&table, ApiKey::OffsetFetch, 10, Bytes::from(expected)).unwrap()
        else {
            panic!("not an OffsetFetch request");
        };
        let topic = &req.groups[0].topics.as_ref().unwrap()[0];
        assert_eq!(topic.topic_id, TOPIC_ID);
        assert!(topic.name.is_empty());
        assert_eq!(topic.partition_indexes, vec![3]);
    }

    #[test]
    fn offset_commit_and_fetch_v10_carry_topic_ids_and_v9_names() {
        // v10: the id survives, the name is not on the wire (decoded empty). v9: the reverse.
        let (v10, req) = round_trip(&commit_request(), 10);
        assert_eq!(
            (req.topics[0].topic_id, req.topics[0].name.is_empty()),
            (TOPIC_ID, true)
        );
        let (v9, req) = round_trip(&commit_request(), 9);
        assert_eq!(
            (req.topics[0].topic_id, &req.topics[0].name),
            (Uuid::nil(), &name())
        );
        // v10 swaps the 7-byte compact name "orders" for the 16-byte id.
        assert_eq!(v10.len(), v9.len() - 7 + 16);

        let (v10, req) = round_trip(&fetch_request(), 10);
        let t = &req.groups[0].topics.as_ref().unwrap()[0];
        assert_eq!((t.topic_id, t.name.is_empty()), (TOPIC_ID, true));
        let (v9, req) = round_trip(&fetch_request(), 9);
        let t = &req.groups[0].topics.as_ref().unwrap()[0];
        assert_eq!((t.topic_id, &t.name), (Uuid::nil(), &name()));
        assert_eq!(v10.len(), v9.len() - 7 + 16);

        let (v10, resp) = round_trip(&commit_response(), 10);
        assert_eq!(
            (resp.topics[0].topic_id, resp.topics[0].name.is_empty()),
            (TOPIC_ID, true)
        );
        let (v9, resp) = round_trip(&commit_response(), 9);
        assert_eq!(
            (resp.topics[0].topic_id, &resp.topics[0].name),
            (Uuid::nil(), &name())
        );
        assert_eq!(v10.len(), v9.len() - 7 + 16);

        let (v10, resp) = round_trip(&fetch_response(), 10);
        let t = &resp.groups[0].topics[0];
        assert_eq!((t.topic_id, t.name.is_empty()), (TOPIC_ID, true));
        assert_eq!(t.partitions[0].committed_offset, 42);
        let (v9, resp) = round_trip(&fetch_response(), 9);
        let t = &resp.groups[0].topics[0];
        assert_eq!((t.topic_id, &t.name), (Uuid::nil(), &name()));
        assert_eq!(v10.len(), v9.len() - 7 + 16);
    }

    #[test]
    fn offset_commit_and_fetch_v10_requests_pass_the_codec_frame_path() {
        // A whole client frame at v10 (request header v2) through the framer and the table.
        let table = ApiTable::codec_max();
        for (key, frame) in [
            (
                ApiKey::OffsetCommit,
                client_frame(ApiKey::OffsetCommit, 10, 11, &commit_request()),
            ),
            (
                ApiKey::OffsetFetch,
                client_frame(ApiKey::OffsetFetch, 10, 12, &fetch_request()),
            ),
        ] {
            let mut wire = frame;
            let frame = FrameDecoder::default().decode(&mut wire).unwrap().unwrap();
            let decoded = table.decode_frame(frame).unwrap();
            assert_eq!(
                (decoded.header.api_key, decoded.header.api_version),
                (key, 10)
            );
            match decoded.body {
                RequestKind::OffsetCommit(r) => assert_eq!(r.topics[0].topic_id, TOPIC_ID),
                RequestKind::OffsetFetch(r) => {
                    assert_eq!(r.groups[0].topics.as_ref().unwrap()[0].topic_id, TOPIC_ID)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

/// librdkafka 2.5.0-2.10.0 send a null `metrics` in PushTelemetry; the vendored decoder
/// reads it as empty (see vendor/README.md) instead of failing the request.
#[test]
fn push_telemetry_null_metrics() {
    use kafka_protocol::messages::PushTelemetryRequest;
    use kafka_protocol::protocol::Decodable;
    // client_instance_id (16), subscription_id, terminating, compression, metrics, tags.
    let mut body = BytesMut::new();
    body.extend_from_slice(&[7u8; 16]);
    body.put_i32(42);
    body.put_u8(0);
    body.put_i8(4);
    body.put_u8(0); // compact bytes: 0 is null
    body.put_u8(0); // no tagged fields
    let r = PushTelemetryRequest::decode(&mut body.freeze(), 0).unwrap();
    assert!(r.metrics.is_empty());
    assert_eq!((r.subscription_id, r.compression_type), (42, 4));
}
