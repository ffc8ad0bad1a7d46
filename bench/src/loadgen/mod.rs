//! The Kafka-protocol load generator behind `sluice-bench` (see main.rs for the commands).

pub mod hist;
pub mod native;
pub mod native_consumer;
pub mod plot;
pub mod report;
pub mod run;
pub mod selftest;
pub mod sys;
pub mod workload;
