//! Adversarial suite: what one hostile or broken client, or a bug, must not do to the broker.
//! Real `sluice` processes, real clients (rdkafka) and raw TCP; one module per area.

mod connections;
mod panics;
mod produce;
