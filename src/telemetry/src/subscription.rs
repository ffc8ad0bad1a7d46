//! Which metrics a client is asked for: the `client-metrics` subscriptions whose `match`
//! selectors all match the client, merged as Kafka's `ClientMetricsManager` merges them
//! (union of their metrics, `*` if any asks for everything, the smallest interval, starting
//! from the default), and the subscription id that names the result.

use std::collections::{BTreeMap, BTreeSet};

use sluice_meta::client_metrics::{self, INTERVAL_MS, MATCH, METRICS};

/// The interval of a client no subscription matches, and the one every merge starts from
/// (Kafka's `interval.ms` default).
pub const PUSH_INTERVAL_MS_DEFAULT: i32 = 300_000;

/// What a client says about itself, which `match` selectors test.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMeta {
    pub client_id: String,
    /// From ApiVersions v3+ (`"unknown"` when the client did not say, as Kafka has it).
    pub software_name: String,
    pub software_version: String,
    /// The connection's peer, as Java's `getHostAddress` and the port number.
    pub source_address: String,
    pub source_port: String,
}

impl ClientMeta {
    /// The value a selector (one of `client_metrics::SELECTORS`) tests.
    fn value<'a>(&'a self, selector: &str, instance_id: &'a str) -> Option<&'a str> {
        Some(match selector {
            "client_instance_id" => instance_id,
            "client_id" => &self.client_id,
            "client_software_name" => &self.software_name,
            "client_software_version" => &self.software_version,
            "client_source_address" => &self.source_address,
            "client_source_port" => &self.source_port,
            _ => return None,
        })
    }
}

struct Entry {
    metrics: Vec<String>,
    interval_ms: i32,
    matchers: Vec<(String, regex::Regex)>,
}

/// The subscriptions, compiled once per change of the controller's set.
#[derive(Default)]
pub struct Subscriptions {
    entries: Vec<Entry>,
}

/// What one client instance is asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requested {
    /// Metric name prefixes; `["*"]` for all of them; empty for none (the client then
    /// pushes nothing and asks again after the interval).
    pub metrics: Vec<String>,
    pub interval_ms: i32,
    pub subscription_id: i32,
}

impl Subscriptions {
    /// Compiles `subscriptions` (name → overrides). The controller refused invalid ones, so
    /// an entry that still does not parse (a newer node's setting) is left out, as a
    /// subscription that matches no client.
    pub fn compile(subscriptions: &BTreeMap<String, BTreeMap<String, String>>) -> Subscriptions {
        let mut entries = Vec::with_capacity(subscriptions.len());
        'next: for configs in subscriptions.values() {
            let metrics = configs
                .get(METRICS)
                .map(|v| client_metrics::list(v).map(str::to_string).collect())
                .unwrap_or_default();
            let interval_ms = match configs.get(INTERVAL_MS) {
                Some(v) => match v.trim().parse::<i32>() {
                    Ok(ms) => ms,
                    Err(_) => continue,
                },
                None => PUSH_INTERVAL_MS_DEFAULT,
            };
            let mut matchers = Vec::new();
            for entry in configs
                .get(MATCH)
                .map(|v| client_metrics::list(v))
                .into_iter()
                .flatten()
            {
                match client_metrics::parse_match(entry) {
                    Ok((selector, re)) => matchers.push((selector.to_string(), re)),
                    Err(_) => continue 'next,
                }
            }
            entries.push(Entry {
                metrics,
                interval_ms,
                matchers,
            });
        }
        Subscriptions { entries }
    }

    /// What the client instance `instance_id` described by `meta` is asked for.
    pub fn requested(&self, meta: &ClientMeta, instance_id: &[u8; 16]) -> Requested {
        let id_string = crate::uuid_string(instance_id);
        let mut metrics = BTreeSet::new();
        let mut all = false;
        let mut interval_ms = PUSH_INTERVAL_MS_DEFAULT;
        for e in &self.entries {
            // Every selector must match the whole value (an empty list matches everyone).
            let matches = e.matchers.iter().all(|(selector, re)| {
                meta.value(selector, &id_string)
                    .is_some_and(|v| re.is_match(v))
            });
            if !matches {
                continue;
            }
            all |= e.metrics.iter().any(|m| m == "*");
            metrics.extend(e.metrics.iter().cloned());
            interval_ms = interval_ms.min(e.interval_ms);
        }
        let metrics: Vec<String> = if all {
            vec!["*".to_string()]
        } else {
            metrics.into_iter().collect()
        };
        let subscription_id = subscription_id(&metrics, interval_ms, instance_id);
        Requested {
            metrics,
            interval_ms,
            subscription_id,
        }
    }
}

/// Kafka's recipe (CRC32C of the metric list and interval as text, XOR the instance id's
/// Java hash), over the sorted list: deterministic on every sluice node. Kafka hashes its
/// set in `HashSet` order, so the value differs from a Kafka broker's; clients only
/// compare it with what a broker of the same cluster told them.
pub fn subscription_id(metrics: &[String], interval_ms: i32, instance_id: &[u8; 16]) -> i32 {
    let text = format!("[{}]{interval_ms}", metrics.join(", "));
    let crc = crc32c::crc32c(text.as_bytes()) as i32;
    let v = u128::from_be_bytes(*instance_id);
    let x = ((v >> 64) as u64) ^ (v as u64);
    crc ^ (((x >> 32) as i32) ^ (x as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(list: &[(&str, &[(&str, &str)])]) -> Subscriptions {
        let map = list
            .iter()
            .map(|(name, cfg)| {
                (
                    name.to_string(),
                    cfg.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                )
            })
            .collect();
        Subscriptions::compile(&map)
    }

    fn meta() -> ClientMeta {
        ClientMeta {
            client_id: "orders-producer".into(),
            software_name: "librdkafka".into(),
            software_version: "2.12.1".into(),
            source_address: "127.0.0.1".into(),
            source_port: "50123".into(),
        }
    }

    const ID: [u8; 16] = [7; 16];

    #[test]
    fn no_subscription_asks_for_nothing_at_the_default_interval() {
        let r = Subscriptions::default().requested(&meta(), &ID);
        assert!(r.metrics.is_empty());
        assert_eq!(r.interval_ms, PUSH_INTERVAL_MS_DEFAULT);
        assert_eq!(r.subscription_id, subscription_id(&[], 300_000, &ID));
    }

    #[test]
    fn matching_subscriptions_merge_and_others_do_not_count() {
        let s = subs(&[
            (
                "a",
                &[
                    ("metrics", "org.apache.kafka.producer."),
                    ("interval.ms", "1000"),
                ],
            ),
            (
                "b",
                &[
                    (
                        "metrics",
                        "org.apache.kafka.consumer., org.apache.kafka.producer.",
                    ),
                    (
                        "match",
                        "client_software_name=librdkafka,client_id=orders-.*",
                    ),
                ],
            ),
            // Anchored: "orders" alone does not match "orders-producer".
            (
                "c",
                &[
                    ("metrics", "x"),
                    ("interval.ms", "100"),
                    ("match", "client_id=orders"),
                ],
            ),
            // A default interval above Kafka's default does not raise it.
            (
                "d",
                &[
                    ("metrics", "y"),
                    ("interval.ms", "600000"),
                    ("match", "client_source_port=5.*"),
                ],
            ),
        ]);
        let r = s.requested(&meta(), &ID);
        assert_eq!(
            r.metrics,
            [
                "org.apache.kafka.consumer.",
                "org.apache.kafka.producer.",
                "y"
            ]
        );
        assert_eq!(r.interval_ms, 1000);
        // The same inputs give the same id; another instance another one.
        assert_eq!(r, s.requested(&meta(), &ID));
        let mut other = ID;
        other[0] = 8;
        assert_ne!(
            r.subscription_id,
            s.requested(&meta(), &other).subscription_id
        );
    }

    #[test]
    fn a_star_asks_for_everything_and_instance_ids_match_as_kafka_prints_them() {
        let id_text = crate::uuid_string(&ID);
        let s = subs(&[
            (
                "all",
                &[
                    ("metrics", "*"),
                    ("match", &format!("client_instance_id={id_text}")),
                ],
            ),
            ("some", &[("metrics", "org.apache.kafka.producer.")]),
        ]);
        assert_eq!(s.requested(&meta(), &ID).metrics, ["*"]);
        assert_eq!(
            s.requested(&meta(), &[9; 16]).metrics,
            ["org.apache.kafka.producer."]
        );
    }

    #[test]
    fn the_id_is_kafkas_crc_of_the_list_xor_the_uuid_hash() {
        // CRC32C("[a, b]5000") XOR Java's Uuid.hashCode of 0x...01 / 0x...02.
        let mut id = [0u8; 16];
        id[7] = 1;
        id[15] = 2;
        let crc = crc32c::crc32c(b"[a, b]5000") as i32;
        assert_eq!(
            subscription_id(&["a".into(), "b".into()], 5000, &id),
            crc ^ 3
        );
    }
}
