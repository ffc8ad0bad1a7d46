//! Criterion micro-benchmarks of the request path every produce and fetch takes before any
//! partition work: framing (`FrameDecoder`) and decoding (`ApiTable::decode_frame`) of a
//! Produce v9 request carrying a 16 KiB batch, and of a Fetch v12 request for 16 partitions.
//!
//! Run: `cargo bench -p sluice-bench --bench codec`.

use std::hint::black_box;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::batch::record_batch;
use sluice_codec::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_codec::kafka_protocol::messages::{
    ApiKey, FetchRequest, ProduceRequest, RequestHeader, TopicName,
};
use sluice_codec::kafka_protocol::protocol::{Encodable, StrBytes};
use sluice_codec::{ApiTable, FrameDecoder};

/// Header + body with the 4-byte size prefix, as a client writes it to the socket.
fn client_frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("rdkafka")));
    let mut payload = BytesMut::new();
    header
        .encode(&mut payload, key.request_header_version(version))
        .expect("encode header");
    body.encode(&mut payload, version).expect("encode body");
    let mut out = BytesMut::new();
    out.put_i32(payload.len() as i32);
    out.extend_from_slice(&payload);
    out.freeze()
}

fn produce_v9_16k() -> Bytes {
    let batch = record_batch(16 * 1024, 1000, 1_700_000_000_000).expect("16 KiB batch");
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("bench-max")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(3)
                .with_records(Some(Bytes::from(batch)))])]);
    client_frame(ApiKey::Produce, 9, &req)
}

/// What a consumer sends in steady state: one topic, 16 partitions, by name (v12).
fn fetch_v12_16p() -> Bytes {
    let parts = (0..16)
        .map(|p| {
            FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(1_000_000 + p as i64)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("bench-max")))
            .with_partitions(parts)]);
    client_frame(ApiKey::Fetch, 12, &req)
}

fn bench_request(c: &mut Criterion, name: &str, wire: Bytes) {
    let table = ApiTable::codec_max();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(wire.len() as u64));
    // Framing alone: the size prefix check and the split off the connection buffer.
    g.bench_function("frame", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = FrameDecoder::default();
            black_box(dec.decode(&mut buf).expect("frame").expect("whole frame"))
        })
    });
    // Framing plus header and body decode into the typed request.
    g.bench_function("frame_and_decode", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let mut dec = FrameDecoder::default();
            let frame = dec.decode(&mut buf).expect("frame").expect("whole frame");
            black_box(table.decode_frame(frame).expect("decode"))
        })
    });
    g.finish();
}

fn produce(c: &mut Criterion) {
    bench_request(c, "produce_v9_16k", produce_v9_16k());
}

fn fetch(c: &mut Criterion) {
    bench_request(c, "fetch_v12_16p", fetch_v12_16p());
}

criterion_group!(benches, produce, fetch);
criterion_main!(benches);
