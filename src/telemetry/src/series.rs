//! What clients pushed, as the series one shard puts on `/metrics`: per client instance, a
//! value per (metric, attributes), labelled with who the client is. Sums that only grow are
//! counters (deltas, which the broker asks for, are added up; cumulative values replace);
//! gauges and other sums are gauges. An instance's series go when it has not pushed for
//! `max(60 s, 3 × interval)`.
//!
//! Cardinality and memory are bounded ([`SERIES_MAX`], [`SERIES_PER_INSTANCE_MAX`],
//! [`SERIES_BYTES_MAX`], [`ATTRIBUTES_MAX`], [`LABEL_BYTES_MAX`]): a point that would pass a
//! bound is dropped and counted, series already kept go on being updated.

use std::collections::HashMap;

use sluice_metrics::snapshot::{ClientSample, Label};

use crate::instances::expiry_ms;
use crate::otlp::{MetricsData, NumberDataPoint, CUMULATIVE};
use crate::subscription::ClientMeta;

/// Series one shard keeps, over all client instances.
pub const SERIES_MAX: usize = 8192;
/// Series one client instance may have (librdkafka asks for at most 1,000 metrics).
pub const SERIES_PER_INSTANCE_MAX: usize = 1024;
/// Bytes of names and labels one shard keeps (an estimate: the strings plus a fixed cost
/// per series).
pub const SERIES_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Data-point attributes kept as labels per series; more are dropped (by key order).
pub const ATTRIBUTES_MAX: usize = 8;
/// Longest label name or value: longer values are cut, longer names dropped.
pub const LABEL_BYTES_MAX: usize = 128;
/// Longest metric name (without Kafka's common prefix); longer metrics are dropped.
pub const METRIC_NAME_BYTES_MAX: usize = 200;
/// The fixed cost of a series (and of an instance's entry) in [`SERIES_BYTES_MAX`]'s
/// estimate.
const SERIES_OVERHEAD_BYTES: usize = 96;
/// Attributes of one data point looked at; the rest are ignored (each is checked against
/// those kept, so this bounds the work a point costs).
pub const ATTRIBUTES_SCAN_MAX: usize = 4 * ATTRIBUTES_MAX;
/// How often `record` looks for instances gone quiet.
const SWEEP_EVERY_MS: u64 = 10_000;

/// The labels that say which client a series is from (data-point attributes of these
/// names are dropped).
pub const CLIENT_LABELS: [&str; 4] = [
    "client_instance_id",
    "client_id",
    "client_software_name",
    "client_software_version",
];

/// Families of pushed metrics start with this (no broker family does).
pub const FAMILY_PREFIX: &str = "sluice_client_";

#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    counter: bool,
    value: f64,
    updated_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    family: String,
    attrs: Vec<Label>,
}

impl Key {
    fn bytes(&self) -> usize {
        SERIES_OVERHEAD_BYTES + self.family.len() + label_bytes(&self.attrs)
    }
}

struct Pushed {
    labels: Vec<Label>,
    expires_ms: u64,
    points: HashMap<Key, Point>,
    bytes: usize,
}

#[derive(Default)]
pub struct Series {
    by_instance: HashMap<[u8; 16], Pushed>,
    count: usize,
    bytes: usize,
    /// Points dropped at a bound or for a name that cannot be one, since start.
    pub dropped: u64,
    /// Pushes recorded, since start.
    pub pushes: u64,
    /// When `record` next drops the series of instances gone quiet (scrapes always do).
    next_sweep_ms: u64,
}

/// What one push did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    pub points: usize,
    pub dropped: usize,
}

impl Series {
    /// Series kept now.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds what instance `id` (described by `meta`, pushing every `interval_ms`) pushed.
    /// An instance gets an entry with its first kept point (at most
    /// [`crate::INSTANCES_MAX`] have one); its series are kept `max(60 s, 3 × interval)`
    /// after its last push.
    pub fn record(
        &mut self,
        now_ms: u64,
        id: &[u8; 16],
        meta: &ClientMeta,
        interval_ms: i32,
        data: &MetricsData,
    ) -> Recorded {
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
            self.expire(now_ms);
        }
        self.pushes += 1;
        let expires_ms = now_ms + expiry_ms(interval_ms);
        if let Some(p) = self.by_instance.get_mut(id) {
            p.expires_ms = expires_ms;
        }
        let mut done = Recorded::default();
        let metrics = data
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics);
        for m in metrics {
            let (points, counter, cumulative): (&[NumberDataPoint], bool, bool) =
                match (&m.sum, &m.gauge) {
                    (Some(s), _) => (
                        &s.data_points,
                        s.is_monotonic,
                        s.aggregation_temporality == CUMULATIVE,
                    ),
                    (None, Some(g)) => (&g.data_points, false, true),
                    // Histograms and summaries are not kept.
                    (None, None) => continue,
                };
            let Some(family) = family_name(&m.name, counter) else {
                done.dropped += points.len();
                continue;
            };
            for p in points {
                let Some(v) = p.value() else { continue };
                let key = Key {
                    family: family.clone(),
                    attrs: attributes(p),
                };
                if let Some(point) = self
                    .by_instance
                    .get_mut(id)
                    .and_then(|pushed| pushed.points.get_mut(&key))
                {
                    let add = !cumulative && point.counter == counter;
                    *point = Point {
                        counter,
                        value: if add { point.value + v } else { v },
                        updated_ms: now_ms,
                    };
                    done.points += 1;
                    continue;
                }
                if !self.by_instance.contains_key(id) {
                    let labels = client_labels(id, meta);
                    let bytes = SERIES_OVERHEAD_BYTES + label_bytes(&labels);
                    if self.by_instance.len() >= crate::INSTANCES_MAX
                        || self.bytes + bytes > SERIES_BYTES_MAX
                    {
                        done.dropped += 1;
                        continue;
                    }
                    self.bytes += bytes;
                    self.by_instance.insert(
                        *id,
                        Pushed {
                            labels,
                            expires_ms,
                            points: HashMap::new(),
                            bytes,
                        },
                    );
                }
                let pushed = self.by_instance.get_mut(id).expect("present or inserted");
                let bytes = key.bytes();
                if self.count >= SERIES_MAX
                    || pushed.points.len() >= SERIES_PER_INSTANCE_MAX
                    || self.bytes + bytes > SERIES_BYTES_MAX
                {
                    done.dropped += 1;
                    continue;
                }
                self.count += 1;
                self.bytes += bytes;
                pushed.bytes += bytes;
                pushed.points.insert(
                    key,
                    Point {
                        counter,
                        value: v,
                        updated_ms: now_ms,
                    },
                );
                done.points += 1;
            }
        }
        self.dropped += done.dropped as u64;
        done
    }

    /// Every series kept, for a snapshot (those of instances gone quiet are dropped first).
    pub fn samples(&mut self, now_ms: u64) -> Vec<ClientSample> {
        self.expire(now_ms);
        let mut out = Vec::with_capacity(self.count);
        for pushed in self.by_instance.values() {
            for (key, point) in &pushed.points {
                let mut labels = pushed.labels.clone();
                labels.extend(key.attrs.iter().cloned());
                out.push(ClientSample {
                    family: key.family.clone(),
                    counter: point.counter,
                    labels,
                    value: point.value,
                    updated_ms: point.updated_ms,
                });
            }
        }
        out
    }

    fn expire(&mut self, now_ms: u64) {
        let (count, bytes) = (&mut self.count, &mut self.bytes);
        self.by_instance.retain(|_, p| {
            let keep = p.expires_ms > now_ms;
            if !keep {
                *count -= p.points.len();
                *bytes -= p.bytes;
            }
            keep
        });
    }
}

/// The Prometheus family of OTLP metric `name`: Kafka's common prefix dropped, every other
/// character than a letter, digit or `_` made `_`, under [`FAMILY_PREFIX`]; a counter's
/// `_total` is the exposition's suffix, not part of its family. None for an empty or
/// over-long name.
pub fn family_name(name: &str, counter: bool) -> Option<String> {
    let name = name.strip_prefix("org.apache.kafka.").unwrap_or(name);
    if name.is_empty() || name.len() > METRIC_NAME_BYTES_MAX {
        return None;
    }
    let mut family = String::with_capacity(FAMILY_PREFIX.len() + name.len());
    family.push_str(FAMILY_PREFIX);
    family.extend(
        name.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }),
    );
    if counter {
        if let Some(stem) = family.strip_suffix("_total") {
            family.truncate(stem.len());
        }
    }
    (family.len() > FAMILY_PREFIX.len()).then_some(family)
}

/// A data point's attributes as labels: names made Prometheus names, those that would
/// shadow a client label, repeat one or are reserved (`__`) dropped, at most
/// [`ATTRIBUTES_MAX`], values cut at [`LABEL_BYTES_MAX`].
fn attributes(p: &NumberDataPoint) -> Vec<Label> {
    let mut out: Vec<Label> = Vec::new();
    for kv in p.attributes.iter().take(ATTRIBUTES_SCAN_MAX) {
        let Some(value) = kv.value.as_ref().and_then(|v| v.text()) else {
            continue;
        };
        if kv.key.is_empty() || kv.key.len() > LABEL_BYTES_MAX {
            continue;
        }
        let mut name: String = kv
            .key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.as_bytes()[0].is_ascii_digit() {
            name.insert(0, '_');
        }
        if name.starts_with("__")
            || CLIENT_LABELS.contains(&name.as_str())
            || out.iter().any(|l| l.name == name)
        {
            continue;
        }
        out.push(Label {
            name,
            value: cut(value),
        });
    }
    out.sort();
    out.truncate(ATTRIBUTES_MAX);
    out
}

/// The labels naming the client of instance `id`.
fn client_labels(id: &[u8; 16], meta: &ClientMeta) -> Vec<Label> {
    let values = [
        crate::uuid_string(id),
        meta.client_id.clone(),
        meta.software_name.clone(),
        meta.software_version.clone(),
    ];
    CLIENT_LABELS
        .iter()
        .zip(values)
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: cut(v),
        })
        .collect()
}

fn label_bytes(labels: &[Label]) -> usize {
    labels.iter().map(|l| l.name.len() + l.value.len()).sum()
}

/// `s` cut to at most [`LABEL_BYTES_MAX`] bytes, at a character boundary.
pub fn cut(mut s: String) -> String {
    if s.len() > LABEL_BYTES_MAX {
        let mut end = LABEL_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                string_value: Some(v.into()),
                ..Default::default()
            }),
        }
    }

    fn point(v: i64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            as_int: Some(v),
            ..Default::default()
        }
    }

    fn data(metrics: Vec<Metric>) -> MetricsData {
        MetricsData {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics { metrics }],
            }],
        }
    }

    fn sum(name: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.into(),
            sum: Some(Sum {
                data_points: points,
                aggregation_temporality: DELTA,
                is_monotonic: true,
            }),
            ..Default::default()
        }
    }

    fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.into(),
            gauge: Some(Gauge {
                data_points: points,
            }),
            ..Default::default()
        }
    }

    fn meta() -> ClientMeta {
        ClientMeta {
            client_id: "c1".into(),
            software_name: "librdkafka".into(),
            software_version: "2.12.1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn deltas_add_up_gauges_replace_and_series_expire() {
        let mut s = Series::default();
        let id = [3; 16];
        let push = data(vec![
            sum(
                "org.apache.kafka.producer.connection.creation.total",
                vec![point(2, vec![kv("node.id", "1")])],
            ),
            gauge(
                "org.apache.kafka.producer.record.queue.count",
                vec![point(7, vec![])],
            ),
        ]);
        assert_eq!(s.record(0, &id, &meta(), 1000, &push).points, 2);
        s.record(1000, &id, &meta(), 1000, &push);
        let mut got = s.samples(1000);
        got.sort_by(|a, b| a.family.cmp(&b.family));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].family, "sluice_client_producer_connection_creation");
        assert!(got[0].counter);
        assert_eq!(got[0].value, 4.0);
        let names: Vec<_> = got[0].labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, [&CLIENT_LABELS[..], &["node_id"]].concat());
        assert_eq!(got[0].labels[0].value, crate::uuid_string(&id));
        assert_eq!(got[1].family, "sluice_client_producer_record_queue_count");
        assert_eq!((got[1].counter, got[1].value), (false, 7.0));
        // Kept max(60 s, 3 × interval) after the last push.
        assert_eq!(s.samples(60_999).len(), 2);
        assert!(s.samples(61_000).is_empty());
        assert!(s.is_empty());
    }

    #[test]
    fn quiet_or_empty_pushes_keep_nothing_and_attributes_cost_a_bounded_scan() {
        let mut s = Series::default();
        for i in 0..1000u32 {
            let mut id = [0; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            s.record(0, &id, &meta(), 1000, &MetricsData::default());
        }
        assert!(s.by_instance.is_empty() && s.bytes == 0);
        let attrs: Vec<_> = (0..10_000).map(|i| kv(&format!("k{i}"), "v")).collect();
        let r = s.record(
            0,
            &[1; 16],
            &meta(),
            1000,
            &data(vec![gauge("g", vec![point(1, attrs)])]),
        );
        assert_eq!(r.points, 1);
        let got = s.samples(0);
        assert_eq!(got[0].labels.len(), CLIENT_LABELS.len() + ATTRIBUTES_MAX);
    }

    #[test]
    fn bounds_drop_points_not_memory() {
        let mut s = Series::default();
        let many: Vec<_> = (0..SERIES_PER_INSTANCE_MAX + 5)
            .map(|i| point(1, vec![kv("partition", &i.to_string())]))
            .collect();
        let r = s.record(0, &[1; 16], &meta(), 1000, &data(vec![gauge("g", many)]));
        assert_eq!((r.points, r.dropped), (SERIES_PER_INSTANCE_MAX, 5));
        for i in 0..20u8 {
            let points = (0..SERIES_PER_INSTANCE_MAX)
                .map(|p| point(1, vec![kv("partition", &p.to_string())]))
                .collect();
            s.record(
                0,
                &[i + 2; 16],
                &meta(),
                1000,
                &data(vec![gauge("g", points)]),
            );
        }
        assert_eq!(s.len(), SERIES_MAX);
        assert!(s.bytes <= SERIES_BYTES_MAX);
        // Long values are cut, reserved and shadowing names dropped, bad names refused.
        let mut s = Series::default();
        let long = "é".repeat(100);
        let attrs = vec![kv("client_id", "x"), kv("__name__", "x"), kv("9v", &long)];
        let r = s.record(
            0,
            &[1; 16],
            &meta(),
            1000,
            &data(vec![
                gauge("ok", vec![point(1, attrs)]),
                gauge("", vec![point(1, vec![])]),
            ]),
        );
        assert_eq!((r.points, r.dropped), (1, 1));
        let got = s.samples(0);
        let last = got[0].labels.last().unwrap();
        assert_eq!(last.name, "_9v");
        assert!(last.value.len() <= LABEL_BYTES_MAX && last.value.starts_with('é'));
        assert_eq!(got[0].labels.len(), CLIENT_LABELS.len() + 1);
    }
}
