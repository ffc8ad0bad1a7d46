//! Criterion micro-benchmark of a `/metrics` document: two shards' snapshots (150
//! partitions, 9 APIs with latency histograms, the executor's queues) written as
//! OpenMetrics text, and one snapshot's rkyv round trip between shards. About 154 KB and
//! 2,300 series: the document perf/metrics-scrape-cost.py scrapes.
//!
//! Run: `cargo bench -p sluice-bench --bench metrics`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_metrics::snapshot::{ApiSample, PartitionSample, QueueSample};
use sluice_metrics::{Histogram, Node, ShardSnapshot};

fn snapshots() -> Vec<ShardSnapshot> {
    let apis = [
        "Produce",
        "Fetch",
        "Metadata",
        "ApiVersions",
        "OffsetCommit",
        "FindCoordinator",
        "ListOffsets",
        "OffsetFetch",
        "CreateTopics",
    ];
    (0..2u32)
        .map(|shard| {
            let mut s = ShardSnapshot {
                shard,
                ..ShardSnapshot::default()
            };
            for api in apis {
                let mut latency = Histogram::default();
                latency.record_us(100);
                s.apis.push(ApiSample {
                    api: api.into(),
                    requests: 5,
                    latency,
                });
            }
            for p in 0..75 {
                s.partitions.push(PartitionSample {
                    topic: format!("topic-{}", p % 10),
                    partition: p,
                    leader: true,
                    ..PartitionSample::default()
                });
            }
            for queue in ["background", "default", "fetch", "mesh", "produce"] {
                s.queues.push(QueueSample {
                    queue: queue.into(),
                    shares: 1000,
                    runtime_us: 5,
                    selected: 4,
                });
            }
            s
        })
        .collect()
}

fn document(c: &mut Criterion) {
    let shards = snapshots();
    let node = Node {
        node_id: 1,
        version: "bench",
        aggregate: false,
    };
    c.bench_function("render 2 shards, 150 partitions", |b| {
        b.iter_batched(
            || shards.clone(),
            |s| black_box(sluice_metrics::render(&node, s)),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("snapshot rkyv round trip (75 partitions)", |b| {
        b.iter(|| {
            let bytes = black_box(&shards[0]).to_bytes();
            black_box(ShardSnapshot::from_bytes(&bytes).expect("reads back"))
        })
    });
}

criterion_group!(benches, document);
criterion_main!(benches);
