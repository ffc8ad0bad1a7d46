//! `sluice-bench`: reserved for the Kafka-protocol load generator (not written yet).
//!
//! The storage benchmark is the separate binary `sluice-storage-bench`
//! (src/bin/storage.rs, driven by perf/storage-bench.sh).

fn main() {
    eprintln!(
        "sluice-bench: the load generator is not implemented yet; \
         for the storage benchmark run `sluice-storage-bench` (see perf/storage-bench.sh)"
    );
    std::process::exit(2);
}
