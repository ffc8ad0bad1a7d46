//! The `/metrics` document: every shard's snapshot merged into Prometheus metric families
//! (OpenMetrics text, written by [`crate::text`]), each family once with all its series.
//!
//! Request latency is merged across shards (one histogram per API: shards × APIs × buckets
//! would be most of the document); everything else keeps its `shard` label.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::histogram::Histogram;
use crate::snapshot::{ClientSample, ShardSnapshot};
use crate::text::{clamp, Kind, Text, Value};

/// What `/metrics` answers with (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The node-wide facts of an exposition.
#[derive(Clone, Debug)]
pub struct Node {
    pub node_id: i32,
    pub version: &'static str,
    /// Redpanda's `aggregate_metrics`: partition series summed per topic (no `partition`
    /// or `shard` label), offsets left out; lag summed per group and topic.
    pub aggregate: bool,
}

/// The whole document for these snapshots.
pub fn render(node: &Node, shards: Vec<ShardSnapshot>) -> String {
    render_with(node, shards, HashMap::new())
}

/// The whole document, with the high watermarks of partitions this node holds no replica
/// of (from the nodes that lead them) for its groups' lag.
pub fn render_with(
    node: &Node,
    shards: Vec<ShardSnapshot>,
    remote_high_watermarks: HashMap<(String, i32), i64>,
) -> String {
    let e = Exposition {
        node: node.clone(),
        shards,
        remote_high_watermarks,
    };
    // About 70 bytes a series: room for the document without growing it as it is written.
    let series = e
        .shards
        .iter()
        .map(|s| 30 + 10 * s.partitions.len() + 50 * s.apis.len());
    let mut text = Text::with_capacity(series.sum::<usize>() * 80 + 16 * 1024);
    e.encode(&mut text);
    text.finish()
}

type Labels = Vec<(&'static str, String)>;

struct Exposition {
    node: Node,
    shards: Vec<ShardSnapshot>,
    /// (topic, partition) → high watermark, for partitions without a replica here.
    remote_high_watermarks: HashMap<(String, i32), i64>,
}

/// One family of counters or gauges: its HELP and TYPE lines, then a sample per row.
fn family<L: AsRef<[(&'static str, String)]>>(
    enc: &mut Text,
    name: &str,
    help: &str,
    kind: Kind,
    rows: impl IntoIterator<Item = (L, Value)>,
) {
    enc.family(name, help, kind);
    let suffix = if kind == Kind::Counter { "_total" } else { "" };
    for (labels, v) in rows {
        enc.sample(name, suffix, labels.as_ref(), None, v);
    }
}

fn counter<L: AsRef<[(&'static str, String)]>>(
    enc: &mut Text,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, u64)>,
) {
    let rows = rows.into_iter().map(|(l, v)| (l, Value::Int(clamp(v))));
    family(enc, name, help, Kind::Counter, rows);
}

fn counter_f64<L: AsRef<[(&'static str, String)]>>(
    enc: &mut Text,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, f64)>,
) {
    let rows = rows.into_iter().map(|(l, v)| (l, Value::Float(v)));
    family(enc, name, help, Kind::Counter, rows);
}

fn gauge<L: AsRef<[(&'static str, String)]>>(
    enc: &mut Text,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, i64)>,
) {
    let rows = rows.into_iter().map(|(l, v)| (l, Value::Int(v)));
    family(enc, name, help, Kind::Gauge, rows);
}

fn histogram<L: AsRef<[(&'static str, String)]>>(
    enc: &mut Text,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, Histogram)>,
) {
    enc.family(name, help, Kind::Histogram);
    for (labels, h) in rows {
        enc.histogram(name, labels.as_ref(), &h);
    }
}

fn shard_label(s: &ShardSnapshot) -> Labels {
    vec![("shard", s.shard.to_string())]
}

impl Exposition {
    fn encode(&self, enc: &mut Text) {
        let shards = &self.shards;
        let per_shard = |f: fn(&ShardSnapshot) -> u64| -> Vec<(Labels, u64)> {
            shards.iter().map(|s| (shard_label(s), f(s))).collect()
        };
        gauge(
            enc,
            "sluice_node_info",
            "The node: its id and sluice's version (the value is always 1).",
            [(
                vec![
                    ("node_id", self.node.node_id.to_string()),
                    ("version", self.node.version.to_string()),
                ],
                1,
            )],
        );
        gauge(
            enc,
            "sluice_shards",
            "Shards (executor threads) of this node.",
            [(Labels::new(), shards.len() as i64)],
        );

        // Requests.
        counter(
            enc,
            "sluice_requests",
            "Kafka requests answered, by API.",
            shards.iter().flat_map(|s| {
                s.apis.iter().map(|a| {
                    let mut l = shard_label(s);
                    l.push(("api", a.api.clone()));
                    (l, a.requests)
                })
            }),
        );
        counter(
            enc,
            "sluice_request_errors",
            "Error codes in responses (top-level and per topic or partition), by API and \
             Kafka's error name.",
            shards.iter().flat_map(|s| {
                s.errors.iter().map(|e| {
                    let mut l = shard_label(s);
                    l.push(("api", e.api.clone()));
                    l.push(("error", e.error.clone()));
                    (l, e.count)
                })
            }),
        );
        let mut latency: BTreeMap<&str, Histogram> = BTreeMap::new();
        for a in shards.iter().flat_map(|s| &s.apis) {
            latency.entry(&a.api).or_default().merge(&a.latency);
        }
        histogram(
            enc,
            "sluice_request_latency_seconds",
            "Time from a request's decoding to its response's write, by API (all shards).",
            latency
                .into_iter()
                .map(|(api, h)| (vec![("api", api.to_string())], h)),
        );

        // Partitions.
        self.encode_partitions(enc);

        // Storage.
        histogram(
            enc,
            "sluice_flush_write_seconds",
            "One flush's writes (every segment it wrote to).",
            shards
                .iter()
                .map(|s| (shard_label(s), s.flush_write.clone())),
        );
        histogram(
            enc,
            "sluice_flush_sync_seconds",
            "One flush's fdatasync calls.",
            shards
                .iter()
                .map(|s| (shard_label(s), s.flush_sync.clone())),
        );
        counter(
            enc,
            "sluice_flushed_bytes",
            "Bytes written to segments by flushes.",
            per_shard(|s| s.flushed_bytes),
        );
        histogram(
            enc,
            "sluice_log_cleaner_pass_seconds",
            "Passes of the log cleaner over a compacted log.",
            shards
                .iter()
                .map(|s| (shard_label(s), s.cleaner_pass.clone())),
        );
        counter(
            enc,
            "sluice_log_cleaner_records_removed",
            "Records the log cleaner removed from compacted logs.",
            per_shard(|s| s.cleaner_records_removed),
        );
        counter(
            enc,
            "sluice_log_cleaner_bytes_reclaimed",
            "Bytes compacted logs shrank by in the log cleaner's passes.",
            per_shard(|s| s.cleaner_bytes_reclaimed),
        );
        counter(
            enc,
            "sluice_log_cleaner_segments_merged",
            "Segments the log cleaner merged into their predecessors.",
            per_shard(|s| s.cleaner_segments_merged),
        );
        counter(
            enc,
            "sluice_batch_cache_hits",
            "Reads served from the shard's batch cache.",
            per_shard(|s| s.cache_hits),
        );
        counter(
            enc,
            "sluice_batch_cache_misses",
            "Reads the batch cache could not serve (they went to disk).",
            per_shard(|s| s.cache_misses),
        );
        gauge(
            enc,
            "sluice_batch_cache_bytes",
            "Bytes of batches the shard's cache holds.",
            per_shard(|s| s.cache_bytes)
                .into_iter()
                .map(|(l, v)| (l, clamp(v))),
        );
        counter(
            enc,
            "sluice_read_ahead_windows",
            "Read-ahead windows issued for logs read sequentially from disk.",
            per_shard(|s| s.read_ahead_windows),
        );
        counter(
            enc,
            "sluice_read_ahead_served",
            "Disk reads of logs served from a read-ahead window instead of a read of their own.",
            per_shard(|s| s.read_ahead_served),
        );
        gauge(
            enc,
            "sluice_read_ahead_bytes",
            "Bytes the shard's read-ahead windows hold or are reading.",
            per_shard(|s| s.read_ahead_bytes)
                .into_iter()
                .map(|(l, v)| (l, clamp(v))),
        );

        // Connections and memory.
        gauge(
            enc,
            "sluice_connections",
            "Open client connections.",
            per_shard(|s| s.connections)
                .into_iter()
                .map(|(l, v)| (l, clamp(v))),
        );
        counter(
            enc,
            "sluice_connections_accepted",
            "Client connections accepted.",
            per_shard(|s| s.connections_accepted),
        );
        gauge(
            enc,
            "sluice_inflight_request_bytes",
            "Bytes of requests read and not yet answered (queued.max.request.bytes).",
            per_shard(|s| s.inflight_request_bytes)
                .into_iter()
                .map(|(l, v)| (l, clamp(v))),
        );

        // Executor.
        counter_f64(
            enc,
            "sluice_executor_runtime_seconds",
            "Time the shard's executor spent running tasks.",
            shards
                .iter()
                .map(|s| (shard_label(s), s.executor_runtime_us as f64 / 1e6)),
        );
        counter(
            enc,
            "sluice_executor_tasks",
            "Tasks the shard's executor ran.",
            per_shard(|s| s.executor_tasks),
        );

        // File IO through io_uring.
        counter(
            enc,
            "sluice_io_files_opened",
            "Files the shard opened through io_uring.",
            per_shard(|s| s.io.files_opened),
        );
        counter(
            enc,
            "sluice_io_files_closed",
            "Files the shard closed through io_uring.",
            per_shard(|s| s.io.files_closed),
        );
        type IoField = fn(&crate::snapshot::IoSample) -> (u64, u64);
        let io_kinds: [(&str, &str, IoField); 4] = [
            ("read", "direct", |i| (i.direct_reads, i.direct_bytes_read)),
            ("read", "buffered", |i| {
                (i.buffered_reads, i.buffered_bytes_read)
            }),
            ("write", "direct", |i| {
                (i.direct_writes, i.direct_bytes_written)
            }),
            ("write", "buffered", |i| {
                (i.buffered_writes, i.buffered_bytes_written)
            }),
        ];
        let io_rows = |bytes: bool| -> Vec<(Labels, u64)> {
            shards
                .iter()
                .flat_map(|s| {
                    io_kinds.iter().map(move |(op, mode, f)| {
                        let mut l = shard_label(s);
                        l.push(("op", op.to_string()));
                        l.push(("mode", mode.to_string()));
                        let (ops, b) = f(&s.io);
                        (l, if bytes { b } else { ops })
                    })
                })
                .collect()
        };
        counter(
            enc,
            "sluice_io_operations",
            "File reads and writes the shard submitted to io_uring, direct (O_DIRECT) or \
             buffered.",
            io_rows(false),
        );
        counter(
            enc,
            "sluice_io_bytes",
            "Bytes of the file reads and writes the shard submitted to io_uring.",
            io_rows(true),
        );
        let queue_rows = |f: fn(&crate::snapshot::QueueSample) -> u64| -> Vec<(Labels, u64)> {
            shards
                .iter()
                .flat_map(|s| {
                    s.queues.iter().map(move |q| {
                        let mut l = shard_label(s);
                        l.push(("queue", q.queue.clone()));
                        (l, f(q))
                    })
                })
                .collect()
        };
        gauge(
            enc,
            "sluice_task_queue_shares",
            "Shares of each of the shard's task queues (its CPU weight when others are busy).",
            queue_rows(|q| q.shares)
                .into_iter()
                .map(|(l, v)| (l, clamp(v))),
        );
        counter_f64(
            enc,
            "sluice_task_queue_runtime_seconds",
            "Time the shard's executor spent in each task queue.",
            queue_rows(|q| q.runtime_us)
                .into_iter()
                .map(|(l, v)| (l, v as f64 / 1e6)),
        );
        counter(
            enc,
            "sluice_task_queue_selected",
            "Times the executor picked each task queue to run.",
            queue_rows(|q| q.selected),
        );
        histogram(
            enc,
            "sluice_shard_timer_lag_seconds",
            "How late a periodic timer of the shard fires: the executor's own delay (busy \
             queues, a stalled task), which every timer-driven step inherits.",
            shards.iter().map(|s| (shard_label(s), s.timer_lag.clone())),
        );

        self.encode_groups(enc);
        self.encode_clients(enc);
    }
}

impl Exposition {
    /// Client telemetry (KIP-714): the broker's own counts, then what clients pushed, a
    /// family per pushed metric. Pushed names are the clients' word, so the document stays
    /// valid whatever they send: a family is a counter if any of its series is (its gauge
    /// series are left out), a family one of whose names another family already claimed is
    /// left out, a series two shards
    /// hold (a client that moved) is written once, from the shard that heard from it last,
    /// and a counter must be a non-negative number.
    fn encode_clients(&self, enc: &mut Text) {
        let shards = &self.shards;
        gauge(
            enc,
            "sluice_telemetry_instances",
            "Client instances (KIP-714 telemetry) the shard knows.",
            shards
                .iter()
                .map(|s| (shard_label(s), clamp(s.client_instances))),
        );
        counter(
            enc,
            "sluice_telemetry_pushes",
            "Telemetry pushes the shard accepted.",
            shards.iter().map(|s| (shard_label(s), s.client_pushes)),
        );
        counter(
            enc,
            "sluice_telemetry_points_dropped",
            "Pushed data points not kept: past a series bound, or with a name that cannot \
             be a metric's.",
            shards
                .iter()
                .map(|s| (shard_label(s), s.client_points_dropped)),
        );
        let mut families: BTreeMap<&str, Vec<&ClientSample>> = BTreeMap::new();
        for c in shards.iter().flat_map(|s| &s.client_series) {
            families.entry(&c.family).or_default().push(c);
        }
        // Every name a family written so far claims (a counter's samples are `_total`, and
        // parsers reserve its `_created`).
        let mut written: HashSet<String> = HashSet::new();
        for (name, mut series) in families {
            let counter = series.iter().any(|c| c.counter);
            let names = if counter {
                vec![
                    name.to_string(),
                    format!("{name}_total"),
                    format!("{name}_created"),
                ]
            } else {
                vec![name.to_string()]
            };
            if names.iter().any(|n| written.contains(n)) {
                continue;
            }
            written.extend(names);
            series.retain(|c| c.counter == counter && (!counter || c.value >= 0.0));
            // Newest first, so the first of equal label sets is the one kept.
            series.sort_by_key(|c| std::cmp::Reverse(c.updated_ms));
            let mut seen = HashSet::new();
            series.retain(|c| seen.insert(&c.labels));
            let kind = if counter { Kind::Counter } else { Kind::Gauge };
            enc.family(name, "Pushed by clients (KIP-714 telemetry).", kind);
            for c in series {
                let labels: Vec<(&str, &str)> = c
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str(), l.value.as_str()))
                    .collect();
                let suffix = if counter { "_total" } else { "" };
                enc.sample(name, suffix, &labels, None, Value::Float(c.value));
            }
        }
    }

    fn encode_partitions(&self, enc: &mut Text) {
        type Row = (Labels, crate::snapshot::PartitionSample);
        let rows: Vec<Row> = if self.node.aggregate {
            // Summed per topic over every shard's replicas.
            let mut by_topic: BTreeMap<&str, crate::snapshot::PartitionSample> = BTreeMap::new();
            for p in self.shards.iter().flat_map(|s| &s.partitions) {
                let t = by_topic.entry(&p.topic).or_default();
                t.produced_records += p.produced_records;
                t.produced_bytes += p.produced_bytes;
                t.fetched_records += p.fetched_records;
                t.fetched_bytes += p.fetched_bytes;
                t.size_bytes += p.size_bytes;
            }
            by_topic
                .into_iter()
                .map(|(topic, p)| (vec![("topic", topic.to_string())], p))
                .collect()
        } else {
            self.shards
                .iter()
                .flat_map(|s| {
                    s.partitions.iter().map(move |p| {
                        let mut l = shard_label(s);
                        l.push(("topic", p.topic.clone()));
                        l.push(("partition", p.partition.to_string()));
                        (l, p.clone())
                    })
                })
                .collect()
        };
        let column = |f: fn(&crate::snapshot::PartitionSample) -> u64| {
            rows.iter().map(move |(l, p)| (l, f(p)))
        };
        counter(
            enc,
            "sluice_produced_records",
            "Records appended to partitions this node holds.",
            column(|p| p.produced_records),
        );
        counter(
            enc,
            "sluice_produced_bytes",
            "Record batch bytes appended to partitions this node holds.",
            column(|p| p.produced_bytes),
        );
        counter(
            enc,
            "sluice_fetched_records",
            "Records read by Fetch requests from partitions this node holds.",
            column(|p| p.fetched_records),
        );
        counter(
            enc,
            "sluice_fetched_bytes",
            "Record batch bytes read by Fetch requests from partitions this node holds.",
            column(|p| p.fetched_bytes),
        );
        gauge(
            enc,
            "sluice_partition_size_bytes",
            "Bytes of a partition's segments on disk.",
            column(|p| p.size_bytes).map(|(l, v)| (l, clamp(v))),
        );
        if self.node.aggregate {
            return;
        }
        let offsets = |f: fn(&crate::snapshot::PartitionSample) -> i64| {
            rows.iter().map(move |(l, p)| (l, f(p)))
        };
        gauge(
            enc,
            "sluice_partition_log_start_offset",
            "A partition's first offset (retention and DeleteRecords move it).",
            offsets(|p| p.log_start_offset),
        );
        gauge(
            enc,
            "sluice_partition_high_watermark",
            "A partition's high watermark: the offset below which records are committed.",
            offsets(|p| p.high_watermark),
        );
        gauge(
            enc,
            "sluice_partition_log_end_offset",
            "The offset the next record appended to the replica will get.",
            offsets(|p| p.log_end_offset),
        );
        gauge(
            enc,
            "sluice_partition_leader",
            "1 if this node's replica leads the partition, else 0.",
            offsets(|p| i64::from(p.leader)),
        );
    }

    fn encode_groups(&self, enc: &mut Text) {
        let groups: Vec<_> = self.shards.iter().flat_map(|s| &s.groups).collect();
        let mut by_state: BTreeMap<&str, i64> = BTreeMap::new();
        for g in &groups {
            *by_state.entry(&g.state).or_default() += 1;
        }
        gauge(
            enc,
            "sluice_consumer_groups",
            "Consumer groups this node coordinates, by state.",
            by_state
                .into_iter()
                .map(|(state, n)| (vec![("state", state.to_string())], n)),
        );
        gauge(
            enc,
            "sluice_consumer_group_members",
            "Members of each consumer group this node coordinates.",
            groups
                .iter()
                .map(|g| (vec![("group", g.group.clone())], clamp(g.members))),
        );
        // The high watermark of every partition replica here, the leader's first.
        let mut hw: HashMap<(&str, i32), (bool, i64)> = HashMap::new();
        for p in self.shards.iter().flat_map(|s| &s.partitions) {
            let e = hw
                .entry((&p.topic, p.partition))
                .or_insert((p.leader, p.high_watermark));
            if p.leader && !e.0 {
                *e = (true, p.high_watermark);
            }
        }
        let committed: Vec<_> = self.shards.iter().flat_map(|s| &s.committed).collect();
        // Lag needs the partition's high watermark: a replica's here, else what the node
        // leading it said (a partition neither has is left out).
        let lag = committed.iter().filter_map(|c| {
            let end = match hw.get(&(c.topic.as_str(), c.partition)) {
                Some(&(_, end)) => end,
                None => *self
                    .remote_high_watermarks
                    .get(&(c.topic.clone(), c.partition))?,
            };
            Some((*c, (end - c.offset).max(0)))
        });
        if self.node.aggregate {
            let mut by_topic: BTreeMap<(&str, &str), i64> = BTreeMap::new();
            for (c, lag) in lag {
                *by_topic.entry((&c.group, &c.topic)).or_default() += lag;
            }
            gauge(
                enc,
                "sluice_consumer_group_lag",
                "Records between a group's committed offset and the partition's high \
                 watermark, summed per group and topic.",
                by_topic.into_iter().map(|((g, t), lag)| {
                    (
                        vec![("group", g.to_string()), ("topic", t.to_string())],
                        lag,
                    )
                }),
            );
            return;
        }
        let labels = |c: &crate::snapshot::CommittedSample| {
            vec![
                ("group", c.group.clone()),
                ("topic", c.topic.clone()),
                ("partition", c.partition.to_string()),
            ]
        };
        gauge(
            enc,
            "sluice_consumer_group_committed_offset",
            "A group's committed offset per partition.",
            committed.iter().map(|c| (labels(c), c.offset)),
        );
        gauge(
            enc,
            "sluice_consumer_group_lag",
            "Records between a group's committed offset and the partition's high watermark.",
            lag.map(|(c, lag)| (labels(c), lag)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::*;

    fn shard(i: u32) -> ShardSnapshot {
        let mut s = ShardSnapshot {
            shard: i,
            connections: 2,
            ..ShardSnapshot::default()
        };
        let mut h = Histogram::default();
        h.record_us(150);
        s.apis.push(ApiSample {
            api: "Produce".into(),
            requests: 1,
            latency: h,
        });
        s.partitions.push(PartitionSample {
            topic: "orders".into(),
            partition: i as i32,
            leader: true,
            produced_records: 10,
            high_watermark: 10,
            log_end_offset: 10,
            ..PartitionSample::default()
        });
        s.groups.push(GroupSample {
            group: format!("g{i}"),
            state: "Empty".into(),
            members: 0,
        });
        s.committed.push(CommittedSample {
            group: format!("g{i}"),
            topic: "orders".into(),
            partition: 0,
            offset: 4,
        });
        s
    }

    fn node(aggregate: bool) -> Node {
        Node {
            node_id: 1,
            version: "0.1.0",
            aggregate,
        }
    }

    #[test]
    fn each_family_appears_once_with_every_shards_series() {
        let text = render(&node(false), vec![shard(0), shard(1)]);
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# TYPE sluice_requests counter").count(), 1);
        assert!(text.contains("sluice_requests_total{shard=\"0\",api=\"Produce\"} 1"));
        assert!(text.contains("sluice_requests_total{shard=\"1\",api=\"Produce\"} 1"));
        // Latency is one histogram per API over the shards.
        assert!(text.contains("sluice_request_latency_seconds_count{api=\"Produce\"} 2"));
        assert!(text.contains(
            "sluice_produced_records_total{shard=\"1\",topic=\"orders\",partition=\"1\"} 10"
        ));
        assert!(text.contains("sluice_consumer_groups{state=\"Empty\"} 2"));
        assert!(text.contains(
            "sluice_consumer_group_lag{group=\"g0\",topic=\"orders\",partition=\"0\"} 6"
        ));
    }

    #[test]
    fn pushed_client_series_stay_a_valid_document_whatever_clients_send() {
        let sample = |family: &str, counter, client: &str, value, updated_ms| ClientSample {
            family: family.into(),
            counter,
            labels: vec![Label {
                name: "client_id".into(),
                value: client.into(),
            }],
            value,
            updated_ms,
        };
        let mut a = shard(0);
        a.client_instances = 2;
        a.client_series = vec![
            sample("sluice_client_x", true, "c1", 5.0, 10),
            // Same series on another shard, older: left out.
            sample("sluice_client_q", false, "c1", 1.0, 10),
            // Another kind in a counter family, a negative counter, clashing sample names.
            sample("sluice_client_x", false, "c2", 1.0, 10),
            sample("sluice_client_x", true, "c3", -1.0, 10),
            sample("sluice_client_x_total", false, "c1", 1.0, 10),
            sample("sluice_client_x_created", false, "c4", 1.0, 10),
        ];
        let mut b = shard(1);
        b.client_series = vec![sample("sluice_client_q", false, "c1", 2.0, 20)];
        let text = render(&node(false), vec![a, b]);
        assert!(text.contains("sluice_telemetry_instances{shard=\"0\"} 2"));
        assert!(text.contains(
            "# TYPE sluice_client_x counter\nsluice_client_x_total{client_id=\"c1\"} 5\n# "
        ));
        assert!(
            text.contains("# TYPE sluice_client_q gauge\nsluice_client_q{client_id=\"c1\"} 2\n# ")
        );
        assert!(!text.contains("sluice_client_x_total{client_id=\"c1\"} 1"));
        assert!(!text.contains("c2") && !text.contains("c3") && !text.contains("c4"));
    }

    #[test]
    fn aggregate_sums_partitions_per_topic() {
        let text = render(&node(true), vec![shard(0), shard(1)]);
        assert!(text.contains("sluice_produced_records_total{topic=\"orders\"} 20"));
        assert!(!text.contains("partition=\""));
        assert!(text.contains("sluice_consumer_group_lag{group=\"g1\",topic=\"orders\"} 6"));
    }

    #[test]
    fn lag_of_a_partition_held_elsewhere_uses_the_remote_high_watermark() {
        let mut s = shard(0);
        s.committed.push(CommittedSample {
            group: "g0".into(),
            topic: "elsewhere".into(),
            partition: 3,
            offset: 7,
        });
        let text = render(&node(false), vec![s.clone()]);
        let lag_elsewhere = "sluice_consumer_group_lag{group=\"g0\",topic=\"elsewhere\"";
        assert!(!text.contains(lag_elsewhere), "no high watermark, no lag");
        let remote = HashMap::from([(("elsewhere".to_string(), 3), 19)]);
        let text = render_with(&node(false), vec![s], remote);
        assert!(text.contains(
            "sluice_consumer_group_lag{group=\"g0\",topic=\"elsewhere\",partition=\"3\"} 12"
        ));
        // No partition series for it: this node holds no replica.
        assert!(!text.contains("sluice_partition_high_watermark{shard=\"0\",topic=\"elsewhere\""));
    }
}
