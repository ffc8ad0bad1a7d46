//! Helpers shared by the sluice benchmarks: a RecordBatch v2 builder, an IO-timing wrapper
//! around any `Storage`, and latency summaries.

pub mod batch;
pub mod stats;
pub mod timed;
