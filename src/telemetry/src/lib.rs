//! Client telemetry (KIP-714), sans-IO: which metrics a client is asked to push
//! ([`subscription`], from the `client-metrics` subscriptions of the controller log), the
//! client instances a broker shard knows and whether their GetTelemetrySubscriptions and
//! PushTelemetry requests are accepted ([`instances`]), the pushed payload decompressed and
//! decoded from OTLP ([`payload`], [`otlp`]), and the series it becomes on `/metrics`
//! ([`series`]). The broker crate glues it to the wire and the clock; time comes in as
//! milliseconds, randomness as a function, so tests drive it without either.
//!
//! Invariants:
//! - Everything is bounded by a named limit: instances ([`INSTANCES_MAX`], least recently
//!   used evicted first; as many with series), the decompressed payload
//!   ([`DECOMPRESSED_BYTES_MAX`]) and the messages it decodes to ([`otlp::MESSAGES_MAX`]),
//!   series ([`series::SERIES_MAX`], [`series::SERIES_PER_INSTANCE_MAX`],
//!   [`series::SERIES_BYTES_MAX`]), attributes looked at and kept per point, label lengths
//!   (the broker cuts a client's strings to [`series::LABEL_BYTES_MAX`] before they reach
//!   an instance). A client past a bound loses data; the broker's memory and the work of
//!   one push stay bounded.
//! - A subscription id is a function of the requested metrics, the interval and the
//!   instance id only, so every broker (and every shard) computes the same one and a client
//!   whose instance a broker has not seen can push there.
//! - A successful GetTelemetrySubscriptions always names a non-zero, non-reserved client
//!   instance id (Java clients throw on a zero one).
//! - Bad input is an error code Kafka answers with (the codes below), never a panic.

pub mod instances;
pub mod otlp;
pub mod payload;
pub mod series;
pub mod subscription;

pub use instances::{Instances, PushCheck};
pub use subscription::{ClientMeta, Requested, Subscriptions};

/// Kafka's `telemetry.max.bytes` default: the largest compressed payload a push may carry.
pub const TELEMETRY_MAX_BYTES_DEFAULT: i32 = 1024 * 1024;

/// Largest payload after decompression. Kafka sets none (its receiver plugins decompress
/// as they like); a 1 MiB zstd payload could otherwise become gigabytes.
pub const DECOMPRESSED_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Client instances one shard remembers (Kafka's cache holds as many per broker).
pub const INSTANCES_MAX: usize = 16_384;

/// Kafka's compression ids, in the order the broker offers them (Kafka's order: the client
/// takes the first it supports).
pub const ACCEPTED_COMPRESSION: [i8; 4] = [4, 3, 1, 2];

/// Kafka's error codes this crate answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const INVALID_REQUEST: i16 = 42;
    pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    pub const INVALID_RECORD: i16 = 87;
    pub const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    pub const UNKNOWN_SUBSCRIPTION_ID: i16 = 117;
    pub const TELEMETRY_TOO_LARGE: i16 = 118;
}

/// An error answer: Kafka's code and the message it logs with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
}

impl Refusal {
    pub fn new(code: i16, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

/// A client instance id as Kafka prints a `Uuid`: URL-safe base64 of its 16 bytes, no
/// padding (what a subscription's `client_instance_id` selector matches against).
pub fn uuid_string(id: &[u8; 16]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

/// Kafka's reserved ids (`Uuid.ZERO`, `Uuid.ONE_UUID`), which no client instance may have.
pub fn reserved(id: &[u8; 16]) -> bool {
    let v = u128::from_be_bytes(*id);
    v == 0 || v == 1
}
