//! Adversarial suite: what one hostile or broken client, or a bug, must not do to the broker.
//! Real `sluice` processes, real clients (rdkafka) and raw TCP; one module per area. Requests
//! built to break the broker get Kafka's answer, and a restart after them still succeeds.

mod admin;
mod configs;
mod connections;
mod costs;
mod epochs;
mod fetch_sessions;
mod idempotence;
mod memory;
mod mesh;
mod panics;
mod produce;
