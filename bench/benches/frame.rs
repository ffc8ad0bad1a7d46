//! Criterion micro-benchmark of the cross-shard hop's serialization: an rkyv frame round
//! trip (`Frame::encode_tagged`, then `Frame::access` on the receiving shard) of a struct
//! with the layout of the broker's `PartitionRequest` (src/broker/src/ops.rs), plus a 16 KiB
//! payload riding beside it as `Bytes` (a refcount, never copied).
//!
//! The struct is a local copy because the broker crate is glue, not a library for benches;
//! keep it in step with ops.rs if that type changes shape.
//!
//! Run: `cargo bench -p sluice-bench --bench frame`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use rkyv::{Archive, Deserialize, Serialize};
use sluice_shard::Frame;

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
enum PartitionOp {
    Produce { acks: i16, timeout_ms: i32 },
    Fetch { offset: i64, max_bytes: i32 },
}

#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionRequest {
    topic_id: [u8; 16],
    partition: i32,
    op: PartitionOp,
}

fn round_trip(c: &mut Criterion) {
    let payload = Bytes::from(vec![7u8; 16 * 1024]);
    let req = PartitionRequest {
        topic_id: [0xab; 16],
        partition: 3,
        op: PartitionOp::Produce {
            acks: -1,
            timeout_ms: 30_000,
        },
    };
    let mut g = c.benchmark_group("shard_frame");
    g.bench_function("encode_tagged", |b| {
        b.iter(|| {
            black_box(
                Frame::encode_tagged(1, black_box(&req), Some(payload.clone())).expect("encode"),
            )
        })
    });
    let frame = Frame::encode_tagged(1, &req, Some(payload.clone())).expect("encode");
    // What the owning shard does on arrival: validate the body and read it in place.
    g.bench_function("access", |b| {
        b.iter(|| {
            let a = black_box(&frame)
                .access::<PartitionRequest>()
                .expect("valid frame");
            black_box(a.partition.to_native())
        })
    });
    g.bench_function("encode_then_access", |b| {
        b.iter(|| {
            let f =
                Frame::encode_tagged(1, black_box(&req), Some(payload.clone())).expect("encode");
            let a = f.access::<PartitionRequest>().expect("valid frame");
            black_box((a.partition.to_native(), f.payload().map(Bytes::len)))
        })
    });
    g.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
