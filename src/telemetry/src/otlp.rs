//! The OTLP metrics messages a push carries (`opentelemetry.proto.metrics.v1.MetricsData`
//! and what it contains), declared for prost with the field numbers of the OpenTelemetry
//! protocol. Only what the broker reads is declared: gauges and sums of numbers, with their
//! attributes. Histograms, summaries, exemplars and the rest are other field numbers,
//! which the decoder skips.

use prost::Message;

/// Messages (of the kinds below) one payload may hold. Decoding builds a struct of up to
/// ~130 bytes (a `Metric`) from as little as 2 bytes of wire, so the count, not the payload
/// size, bounds the memory a push costs: checked by [`count_messages`] before anything is
/// built.
pub const MESSAGES_MAX: usize = 65_536;

#[derive(Clone, PartialEq, Message)]
pub struct MetricsData {
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ResourceMetrics {
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ScopeMetrics {
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

/// One metric; exactly one of its data fields is set in a valid message (a oneof in the
/// protocol: 5 gauge, 7 sum, 9 histogram, 10 exponential histogram, 11 summary).
#[derive(Clone, PartialEq, Message)]
pub struct Metric {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    #[prost(string, tag = "3")]
    pub unit: String,
    #[prost(message, optional, tag = "5")]
    pub gauge: Option<Gauge>,
    #[prost(message, optional, tag = "7")]
    pub sum: Option<Sum>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Gauge {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sum {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<NumberDataPoint>,
    /// [`DELTA`] or [`CUMULATIVE`].
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `AggregationTemporality` values.
pub const DELTA: i32 = 1;
pub const CUMULATIVE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct NumberDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "2")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// The value is one of these two (a oneof in the protocol).
    #[prost(double, optional, tag = "4")]
    pub as_double: Option<f64>,
    #[prost(sfixed64, optional, tag = "6")]
    pub as_int: Option<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// The scalar kinds of `AnyValue` (1 string, 2 bool, 3 int, 4 double); arrays, key-value
/// lists and bytes (5–7) are skipped.
#[derive(Clone, PartialEq, Message)]
pub struct AnyValue {
    #[prost(string, optional, tag = "1")]
    pub string_value: Option<String>,
    #[prost(bool, optional, tag = "2")]
    pub bool_value: Option<bool>,
    #[prost(int64, optional, tag = "3")]
    pub int_value: Option<i64>,
    #[prost(double, optional, tag = "4")]
    pub double_value: Option<f64>,
}

impl AnyValue {
    /// The value as a label value (none for the kinds that are skipped).
    pub fn text(&self) -> Option<String> {
        if let Some(s) = &self.string_value {
            return Some(s.clone());
        }
        if let Some(b) = self.bool_value {
            return Some(b.to_string());
        }
        if let Some(i) = self.int_value {
            return Some(i.to_string());
        }
        self.double_value.map(|d| d.to_string())
    }
}

impl NumberDataPoint {
    pub fn value(&self) -> Option<f64> {
        self.as_double.or(self.as_int.map(|i| i as f64))
    }
}

/// The message kinds declared above, for the pre-decode walk.
#[derive(Clone, Copy)]
enum Kind {
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Points,
    Point,
    KeyValue,
    AnyValue,
}

/// The kind of field `field` of a `kind` message, when it is one decoding builds.
fn child(kind: Kind, field: u32) -> Option<Kind> {
    use Kind::*;
    Some(match (kind, field) {
        (MetricsData, 1) => ResourceMetrics,
        (ResourceMetrics, 2) => ScopeMetrics,
        (ScopeMetrics, 2) => Metric,
        // Gauge and Sum: their points are field 1 of both.
        (Metric, 5 | 7) => Points,
        (Points, 1) => Point,
        (Point, 7) => KeyValue,
        (KeyValue, 2) => AnyValue,
        _ => return None,
    })
}

/// Why [`count_messages`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Walk {
    /// More than the limit.
    TooMany,
    /// Not protobuf.
    Malformed(String),
}

impl From<String> for Walk {
    fn from(why: String) -> Walk {
        Walk::Malformed(why)
    }
}

impl From<&str> for Walk {
    fn from(why: &str) -> Walk {
        Walk::Malformed(why.to_string())
    }
}

/// Walks `payload` as a `MetricsData` without building it, counting the messages decoding
/// would build.
pub fn count_messages(payload: &[u8], max: usize) -> Result<usize, Walk> {
    let mut count = 0;
    walk(payload, Kind::MetricsData, &mut count, max)?;
    Ok(count)
}

fn walk(mut buf: &[u8], kind: Kind, count: &mut usize, max: usize) -> Result<(), Walk> {
    use prost::encoding::{decode_varint, WireType};
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).map_err(|e| e.to_string())?;
        let field = (key >> 3) as u32;
        let wire = WireType::try_from(key & 7).map_err(|e| e.to_string())?;
        let skip = match wire {
            WireType::Varint => {
                decode_varint(&mut buf).map_err(|e| e.to_string())?;
                0
            }
            WireType::SixtyFourBit => 8,
            WireType::ThirtyTwoBit => 4,
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|e| e.to_string())?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= buf.len())
                    .ok_or("a field longer than its message")?;
                if let Some(sub) = child(kind, field) {
                    *count += 1;
                    if *count > max {
                        return Err(Walk::TooMany);
                    }
                    walk(&buf[..len], sub, count, max)?;
                }
                len
            }
            WireType::StartGroup | WireType::EndGroup => return Err("groups are not OTLP".into()),
        };
        buf = buf.get(skip..).ok_or("a field past its message's end")?;
    }
    Ok(())
}
