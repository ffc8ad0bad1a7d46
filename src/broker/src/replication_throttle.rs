//! Replication throttles (Kafka's KIP-73, as `kafka-reassign-partitions.sh --throttle` sets
//! them): the node-wide byte rates for catching up out-of-sync replicas, and which
//! partitions they apply to.
//!
//! Kafka's followers pull, so Kafka throttles twice: the leader limits what it serves to
//! followers of partitions in `leader.replication.throttled.replicas` (its own
//! `leader.replication.throttled.rate`), the follower limits what it fetches for partitions
//! in `follower.replication.throttled.replicas` (its `follower.replication.throttled.rate`).
//! sluice's leaders push, so both are enforced where the bytes leave: a leader's catch-up
//! reads of its partition log (`Effect::Fetch`, the entries a follower needs that are no
//! longer in memory) wait while a bucket they draw on is in debt.
//!
//! # Invariants
//!
//! - Only out-of-sync followers are throttled (Kafka: a replica in the ISR never is, so a
//!   throttle cannot push it out). A read for several followers is throttled only if none
//!   of them is in sync.
//! - The leader bucket is this node's, shared by its shards; a follower's bucket is the
//!   bytes this node sends it, at that follower's rate. A follower fed by leaders on several
//!   nodes may so receive up to that many times its rate (Kafka's follower limits the sum);
//!   `kafka-reassign-partitions.sh` sets the same rate for both, so with one leader node per
//!   moved partition the two agree.
//! - A bucket holds at most one second of its rate; a read is let through while the bucket
//!   is not in debt and then charged in full, so over any span the bytes sent exceed the
//!   rate's allowance by at most one second's worth plus one read (`MAX_SIZE_PER_MSG`).
//! - Entries still in the leader's memory (the recent tail, `ENTRY_CACHE_BYTES_MAX` per
//!   shard) are sent without a read and so are not throttled: bulk catch-up (a reassignment,
//!   a node back after a long absence) reads the log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::topics::ClusterState;

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// A `*.replication.throttled.replicas` value: `*`, or `partition:broker` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ThrottledReplicas {
    #[default]
    None,
    All,
    Some(Vec<(i32, i32)>),
}

impl ThrottledReplicas {
    /// Parses a value the config check accepted; pairs that do not parse are skipped.
    pub fn parse(value: &str) -> ThrottledReplicas {
        let v = value.trim();
        if v == "*" {
            return ThrottledReplicas::All;
        }
        let pairs: Vec<(i32, i32)> = v
            .split(',')
            .filter_map(|s| {
                let (p, b) = s.trim().split_once(':')?;
                Some((p.trim().parse().ok()?, b.trim().parse().ok()?))
            })
            .collect();
        if pairs.is_empty() {
            ThrottledReplicas::None
        } else {
            ThrottledReplicas::Some(pairs)
        }
    }

    pub fn includes(&self, partition: i32, node: i32) -> bool {
        match self {
            ThrottledReplicas::None => false,
            ThrottledReplicas::All => true,
            ThrottledReplicas::Some(pairs) => pairs.contains(&(partition, node)),
        }
    }
}

/// Which throttles apply to one partition replica on this node (from its topic's configs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionThrottle {
    /// This node's replica is in `leader.replication.throttled.replicas`: as leader, it
    /// throttles what it sends to out-of-sync followers.
    pub leader: bool,
    /// The replicas in `follower.replication.throttled.replicas`: what they are sent while
    /// out of sync draws on their follower rate.
    pub followers: Vec<i32>,
}

/// A topic's two `*.replication.throttled.replicas` lists, parsed once for all its
/// partitions (a reassignment's lists name every moving replica).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicThrottles {
    pub leader: ThrottledReplicas,
    pub follower: ThrottledReplicas,
}

impl TopicThrottles {
    pub fn of(configs: &std::collections::BTreeMap<String, String>) -> TopicThrottles {
        let list = |name: &str| {
            configs
                .get(name)
                .map(|v| ThrottledReplicas::parse(v))
                .unwrap_or_default()
        };
        TopicThrottles {
            leader: list(LEADER_REPLICAS),
            follower: list(FOLLOWER_REPLICAS),
        }
    }

    /// No partition of the topic is throttled.
    pub fn is_none(&self) -> bool {
        *self == TopicThrottles::default()
    }

    /// The throttles of `partition`'s replica on `this_node`, its replicas being `replicas`.
    pub fn partition(&self, partition: i32, this_node: i32, replicas: &[i32]) -> PartitionThrottle {
        PartitionThrottle {
            leader: self.leader.includes(partition, this_node),
            followers: replicas
                .iter()
                .copied()
                .filter(|r| *r != this_node && self.follower.includes(partition, *r))
                .collect(),
        }
    }
}

impl PartitionThrottle {
    pub fn is_none(&self) -> bool {
        !self.leader && self.followers.is_empty()
    }
}

/// A bucket a throttled read draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    Leader,
    Follower(i32),
}

/// The rates in effect, bytes per second (`None`: unlimited, Kafka's `Long.MAX_VALUE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rates {
    pub leader: Option<u64>,
    /// Each node's follower rate (its own config over the cluster default).
    pub followers: HashMap<i32, u64>,
    pub follower_default: Option<u64>,
}

fn rate(v: Option<&String>) -> Option<u64> {
    // Long.MAX_VALUE (the default) and anything unparsable mean no limit.
    v.and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|r| *r >= 0 && *r < i64::MAX)
        .map(|r| r as u64)
}

impl Rates {
    /// The rates `state` sets for this node's leaders and for every node as a follower.
    pub fn of(state: &ClusterState) -> Rates {
        let default = &state.default_broker_configs;
        let mut followers = HashMap::new();
        for (node, own) in &state.node_broker_configs {
            if let Some(r) = rate(own.get(FOLLOWER_RATE).or(default.get(FOLLOWER_RATE))) {
                followers.insert(*node, r);
            }
        }
        Rates {
            leader: rate(state.broker_configs.get(LEADER_RATE)),
            followers,
            follower_default: rate(default.get(FOLLOWER_RATE)),
        }
    }

    fn of_bucket(&self, b: Bucket) -> Option<u64> {
        match b {
            Bucket::Leader => self.leader,
            // A node without a rate of its own has the cluster default.
            Bucket::Follower(n) => self.followers.get(&n).copied().or(self.follower_default),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rates: Rates,
    /// Bytes each bucket may still send (negative: in debt), as of `at`.
    tokens: HashMap<Bucket, (f64, Instant)>,
    /// Bytes sent and reads deferred under a throttle (for the stats line).
    throttled_bytes: u64,
    deferred: u64,
}

/// The node's buckets, shared by its shards (`crate::Shared`).
#[derive(Debug, Default)]
pub struct NodeThrottle {
    state: Mutex<State>,
}

impl NodeThrottle {
    pub fn set_rates(&self, rates: Rates) {
        let mut s = self.state.lock().expect("throttle lock");
        if s.rates != rates {
            s.rates = rates;
            // A new rate starts from a full second of allowance, debts forgiven.
            s.tokens.clear();
        }
    }

    /// The buckets that limit a read for `buckets`' traffic: those with a rate.
    pub fn limited(&self, buckets: &[Bucket]) -> Vec<Bucket> {
        let s = self.state.lock().expect("throttle lock");
        buckets
            .iter()
            .copied()
            .filter(|b| s.rates.of_bucket(*b).is_some())
            .collect()
    }

    /// Whether a read drawing on `buckets` may go now (none is in debt). A refusal is
    /// counted as a deferral.
    pub fn admits(&self, buckets: &[Bucket], now: Instant) -> bool {
        let mut s = self.state.lock().expect("throttle lock");
        let ok = buckets.iter().all(|b| s.refill(*b, now) >= 0.0);
        if !ok {
            s.deferred += 1;
        }
        ok
    }

    /// Charges `bytes` sent to each of `buckets`.
    pub fn charge(&self, buckets: &[Bucket], bytes: u64, now: Instant) {
        let mut s = self.state.lock().expect("throttle lock");
        for b in buckets {
            s.refill(*b, now);
            if let Some((tokens, _)) = s.tokens.get_mut(b) {
                *tokens -= bytes as f64;
            }
        }
        if !buckets.is_empty() {
            s.throttled_bytes += bytes;
        }
    }

    /// Bytes sent under a throttle and reads deferred, since start.
    pub fn counts(&self) -> (u64, u64) {
        let s = self.state.lock().expect("throttle lock");
        (s.throttled_bytes, s.deferred)
    }
}

impl State {
    /// Brings `b`'s tokens up to `now` (at most one second of its rate) and returns them;
    /// an unlimited bucket always has room.
    fn refill(&mut self, b: Bucket, now: Instant) -> f64 {
        let Some(rate) = self.rates.of_bucket(b) else {
            self.tokens.remove(&b);
            return f64::MAX;
        };
        let cap = rate as f64;
        let (tokens, at) = self.tokens.entry(b).or_insert((cap, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * cap).min(cap);
        *at = now;
        *tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn throttled_replica_lists_parse_as_kafka_writes_them() {
        assert_eq!(ThrottledReplicas::parse("*"), ThrottledReplicas::All);
        assert_eq!(ThrottledReplicas::parse(" "), ThrottledReplicas::None);
        let l = ThrottledReplicas::parse("0:1, 0:2,3:1");
        assert!(l.includes(0, 1) && l.includes(0, 2) && l.includes(3, 1));
        assert!(!l.includes(1, 1) && !l.includes(0, 3));
        let mut configs = BTreeMap::new();
        configs.insert(LEADER_REPLICAS.to_string(), "0:1,0:2".to_string());
        configs.insert(FOLLOWER_REPLICAS.to_string(), "0:3".to_string());
        let topic = TopicThrottles::of(&configs);
        let on1 = topic.partition(0, 1, &[1, 2, 3]);
        assert!(on1.leader);
        assert_eq!(on1.followers, vec![3]);
        let on3 = topic.partition(0, 3, &[1, 2, 3]);
        assert!(!on3.leader && on3.followers.is_empty());
        assert!(topic.partition(1, 1, &[1, 2, 3]).is_none());
        assert!(TopicThrottles::of(&BTreeMap::new()).is_none());
    }

    #[test]
    fn rates_come_from_the_node_over_the_cluster_default() {
        let mut state = ClusterState {
            node_id: 1,
            ..ClusterState::default()
        };
        state
            .broker_configs
            .insert(LEADER_RATE.into(), "1000".into());
        state
            .default_broker_configs
            .insert(FOLLOWER_RATE.into(), "500".into());
        let mut own2 = BTreeMap::new();
        own2.insert(FOLLOWER_RATE.to_string(), "200".to_string());
        state.node_broker_configs.insert(2, own2);
        state.node_broker_configs.insert(3, BTreeMap::new());
        let r = Rates::of(&state);
        assert_eq!(r.leader, Some(1000));
        assert_eq!(r.of_bucket(Bucket::Follower(2)), Some(200));
        assert_eq!(r.of_bucket(Bucket::Follower(3)), Some(500));
        assert_eq!(r.of_bucket(Bucket::Follower(9)), Some(500));
        state
            .broker_configs
            .insert(LEADER_RATE.into(), i64::MAX.to_string());
        assert_eq!(Rates::of(&state).leader, None);
    }

    #[test]
    fn a_bucket_in_debt_defers_reads_until_its_rate_repays_it() {
        let t = NodeThrottle::default();
        t.set_rates(Rates {
            leader: Some(1000),
            ..Rates::default()
        });
        let b = [Bucket::Leader];
        let t0 = Instant::now();
        assert_eq!(t.limited(&[Bucket::Leader, Bucket::Follower(2)]), b);
        // One second of allowance, then a read of any size goes and puts it in debt.
        assert!(t.admits(&b, t0));
        t.charge(&b, 3000, t0);
        assert!(!t.admits(&b, t0 + Duration::from_millis(1500)));
        assert!(t.admits(&b, t0 + Duration::from_millis(2000)));
        // The allowance never grows past one second.
        t.charge(&b, 0, t0 + Duration::from_secs(100));
        t.charge(&b, 1500, t0 + Duration::from_secs(100));
        assert!(!t.admits(&b, t0 + Duration::from_secs(100)));
        assert_eq!(t.counts(), (4500, 2));
        // Unlimited again: every read goes.
        t.set_rates(Rates::default());
        assert!(t.limited(&b).is_empty());
    }
}
