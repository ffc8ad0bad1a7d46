//! Criterion micro-benchmarks of the storage hot paths that run on every append or fetch:
//! CRC32C validation of a 16 KiB batch, sparse offset-index lookup, and a batch-cache read.
//!
//! Run: `cargo bench -p sluice-bench --bench storage`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::batch::record_batch;
use sluice_storage::hdr::Header;
use sluice_storage::index::OffsetIndex;
use sluice_storage::{BatchCache, CachedBatch};

fn crc_validation(c: &mut Criterion) {
    let batch = record_batch(16 * 1024, 1000, 1_700_000_000_000).expect("16 KiB batch");
    let mut g = c.benchmark_group("batch_validation");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    // What `PartitionLog::append` does before anything else: header parse + CRC32C.
    g.bench_function("log_header_verify_16k", |b| {
        b.iter(|| {
            let h = Header::parse(black_box(&batch)).expect("header");
            h.verify(black_box(&batch)).expect("valid");
        })
    });
    // The codec's stricter check the broker runs on produce requests.
    g.bench_function("codec_validate_batch_16k", |b| {
        b.iter(|| sluice_codec::batch::validate_batch(black_box(&batch)).expect("valid"))
    });
    g.finish();
}

fn index_lookup(c: &mut Criterion) {
    // A full 1 GiB segment indexed every 4 KiB (index.interval.bytes default) with ~1 KiB
    // batches of 10 records: 262,144 entries, the worst case the log keeps per segment.
    let mut index = OffsetIndex::default();
    let entries = (1u32 << 30) / 4096;
    for i in 0..entries {
        index.push(i * 40, i * 4096);
    }
    let max_offset = entries * 40;
    let mut probe = 0x9e37_79b9u32;
    c.bench_function("offset_index_lookup_262k_entries", |b| {
        b.iter(|| {
            // A cheap LCG spreads probes over the index so branch prediction cannot learn them.
            probe = probe.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            black_box(index.lookup(black_box(probe % max_offset)))
        })
    });
}

fn cache_read(c: &mut Criterion) {
    // 64 MiB of 16 KiB batches of 10 records for one log; a tailing consumer reads 1 MiB
    // starting mid-way (the common fetch.max.bytes), which concatenates 64 batches. Log 1
    // holds stored copies, log 2 the producer's bytes to be patched (what produce caches).
    let batch = Bytes::from(record_batch(16 * 1024, 1600, 0).expect("16 KiB batch"));
    let mut cache = BatchCache::new(128 << 20);
    let batches = (64 << 20) / batch.len() as i64;
    for i in 0..batches {
        cache.insert(1, i * 10, i * 10 + 9, CachedBatch::stored(batch.clone()));
        cache.insert(
            2,
            i * 10,
            i * 10 + 9,
            CachedBatch::shared(batch.clone(), i * 10, 0),
        );
    }
    let hw = batches * 10;
    let mut g = c.benchmark_group("batch_cache_read");
    g.bench_function("single_batch", |b| {
        b.iter(|| black_box(cache.read(1, black_box(hw - 5), hw, 1)).expect("cached"))
    });
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("1mib_from_middle", |b| {
        b.iter(|| black_box(cache.read(1, black_box(hw / 2 + 3), hw, 1 << 20)).expect("cached"))
    });
    g.bench_function("1mib_from_middle_patched", |b| {
        b.iter(|| black_box(cache.read(2, black_box(hw / 2 + 3), hw, 1 << 20)).expect("cached"))
    });
    g.finish();
}

criterion_group!(benches, crc_validation, index_lookup, cache_read);
criterion_main!(benches);
