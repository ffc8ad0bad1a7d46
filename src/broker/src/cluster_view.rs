//! What this node knows of the cluster beyond its own partitions, for every shard's answers:
//! the brokers clients may connect to (Metadata's broker list, KIP-951's node endpoints),
//! the active controller, and who leads each partition ([`sluice_meta::leaders::LeaderTable`]:
//! Metadata's leader, epoch and ISR; the current-leader hint of a NOT_LEADER_OR_FOLLOWER).
//!
//! A cluster of one knows only itself: the view starts as this node alone, as controller,
//! with no leadership reports, and every partition it hosts is led here. The cluster glue
//! replaces the broker list from the metadata image and feeds leadership reports in; the
//! request path only reads. Not on the produce or fetch hot path: Metadata and error answers
//! read it, under one short lock.

use std::sync::{Arc, Mutex, MutexGuard};

use sluice_meta::leaders::{LeaderTable, LeaderUpdate, Leadership};
use sluice_security::SecurityProtocol;

/// A broker as clients reach it (its client listeners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub node: i32,
    /// Every client listener, named by its security protocol (the first registered).
    pub listeners: Vec<sluice_meta::ListenerEndpoint>,
    pub rack: Option<String>,
}

impl BrokerEndpoint {
    /// Where a client of `listener` reaches this broker (host, port); `None` when the broker
    /// has no listener of that name (Kafka then leaves it out of the client's answers).
    pub fn endpoint(&self, listener: SecurityProtocol) -> Option<(&str, i32)> {
        self.listeners
            .iter()
            .find(|l| l.name == listener.name())
            .map(|l| (l.host.as_str(), i32::from(l.port)))
    }
}

/// A broker as the clients of one listener reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub node: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl NodeAddress {
    fn of(b: &BrokerEndpoint, listener: SecurityProtocol) -> Option<NodeAddress> {
        let (host, port) = b.endpoint(listener)?;
        Some(NodeAddress {
            node: b.node,
            host: host.to_string(),
            port,
            rack: b.rack.clone(),
        })
    }
}

/// Where a partition's leader is, as a client needs it (KIP-951's `CurrentLeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderHint {
    /// -1: unknown (an election is under way).
    pub leader: i32,
    /// -1: unknown.
    pub epoch: i32,
}

pub struct ClusterView {
    this_node: i32,
    inner: Mutex<Inner>,
}

struct Inner {
    /// Live brokers in id order (fenced and unregistered nodes are left out, as Kafka does).
    brokers: Arc<Vec<BrokerEndpoint>>,
    controller: i32,
    leaders: LeaderTable,
}

impl ClusterView {
    /// A cluster of one: this node, its controller.
    pub fn single(this: BrokerEndpoint) -> ClusterView {
        let node = this.node;
        ClusterView {
            this_node: node,
            inner: Mutex::new(Inner {
                brokers: Arc::new(vec![this]),
                controller: node,
                leaders: LeaderTable::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn this_node(&self) -> i32 {
        self.this_node
    }

    /// The live brokers, in id order.
    pub fn brokers(&self) -> Arc<Vec<BrokerEndpoint>> {
        self.lock().brokers.clone()
    }

    /// Whether `node` is a live (registered, unfenced) broker.
    pub fn is_live(&self, node: i32) -> bool {
        self.lock().brokers.iter().any(|b| b.node == node)
    }

    /// The live brokers with a `listener`, as its clients reach them, in id order.
    pub fn brokers_on(&self, listener: SecurityProtocol) -> Vec<NodeAddress> {
        self.lock()
            .brokers
            .iter()
            .filter_map(|b| NodeAddress::of(b, listener))
            .collect()
    }

    /// Where a client of `listener` reaches `node` (`None`: not live, or no such listener).
    pub fn broker_on(&self, node: i32, listener: SecurityProtocol) -> Option<NodeAddress> {
        let inner = self.lock();
        let b = inner.brokers.iter().find(|b| b.node == node)?;
        NodeAddress::of(b, listener)
    }

    /// The active controller's node id (-1 while none is known).
    pub fn controller(&self) -> i32 {
        self.lock().controller
    }

    pub fn set_controller(&self, controller: i32) {
        self.lock().controller = controller;
    }

    /// Replaces the broker list and controller (from the metadata image).
    pub fn set_brokers(&self, mut brokers: Vec<BrokerEndpoint>, controller: i32) {
        brokers.sort_by_key(|b| b.node);
        brokers.dedup_by_key(|b| b.node);
        let mut inner = self.lock();
        inner.brokers = Arc::new(brokers);
        inner.controller = controller;
    }

    /// Takes in a leadership report (this node's Raft groups or another node's); true if it
    /// was news. The caller passes only partitions its metadata image has.
    pub fn observe(&self, update: LeaderUpdate) -> bool {
        self.lock().leaders.observe(update)
    }

    /// Forgets the leadership of partitions `keep` refuses (deleted from the image).
    pub fn retain_partitions(&self, keep: impl FnMut(&[u8; 16], i32) -> bool) {
        self.lock().leaders.retain(keep)
    }

    /// The number of the leader table's latest change.
    pub fn leader_seq(&self) -> u64 {
        self.lock().leaders.seq()
    }

    /// The reports changed after `cursor` (for another node), at most `max`, and the next
    /// cursor.
    pub fn leader_changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64) {
        self.lock().leaders.changes_since(cursor, max)
    }

    pub fn leadership(&self, topic: &[u8; 16], partition: i32) -> Option<Leadership> {
        self.lock().leaders.get(topic, partition).cloned()
    }

    /// Who leads a partition with these replicas, as far as this node knows: the latest
    /// report; with none, a partition with a single replica is led by it (no election: a
    /// cluster of one, or replication factor 1) if it is a live broker, at `local_epoch` if
    /// that replica is this node's (its log's epoch), at an unknown epoch otherwise.
    pub fn leader_hint(
        &self,
        topic: &[u8; 16],
        partition: i32,
        replicas: &[i32],
        local_epoch: Option<i32>,
    ) -> LeaderHint {
        if let Some(l) = self.leadership(topic, partition) {
            return LeaderHint {
                leader: l.leader.unwrap_or(-1),
                epoch: l.epoch,
            };
        }
        // A fenced or unregistered node (this one too, while it registers after a restart)
        // leads nothing: Kafka reports no leader, LEADER_NOT_AVAILABLE.
        let live = |n: i32| self.lock().brokers.iter().any(|b| b.node == n);
        match replicas {
            [only] if live(*only) => LeaderHint {
                leader: *only,
                epoch: if *only == self.this_node {
                    local_epoch.unwrap_or(-1)
                } else {
                    -1
                },
            },
            _ => LeaderHint {
                leader: -1,
                epoch: -1,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: i32) -> BrokerEndpoint {
        BrokerEndpoint {
            node,
            listeners: vec![sluice_meta::ListenerEndpoint {
                name: "PLAINTEXT".into(),
                host: format!("h{node}"),
                port: 9000 + node as u16,
                security_protocol: 0,
            }],
            rack: None,
        }
    }

    #[test]
    fn a_cluster_of_one_leads_its_partitions_itself() {
        let v = ClusterView::single(ep(1));
        assert_eq!(v.controller(), 1);
        assert_eq!(*v.brokers(), vec![ep(1)]);
        let h = v.leader_hint(&[1; 16], 0, &[1], Some(4));
        assert_eq!((h.leader, h.epoch), (1, 4));
    }

    #[test]
    fn clients_are_told_the_endpoints_of_their_own_listener() {
        let v = ClusterView::single(ep(1));
        let mut two = ep(5);
        two.listeners.push(sluice_meta::ListenerEndpoint {
            name: "SSL".into(),
            host: "s5".into(),
            port: 7005,
            security_protocol: 1,
        });
        v.set_brokers(vec![ep(1), two], 1);
        assert_eq!(v.brokers_on(SecurityProtocol::Plaintext).len(), 2);
        let ssl: Vec<_> = v
            .brokers_on(SecurityProtocol::Ssl)
            .into_iter()
            .map(|a| (a.node, a.host, a.port))
            .collect();
        assert_eq!(ssl, vec![(5, "s5".to_string(), 7005)]);
    }

    #[test]
    fn reports_beat_the_single_replica_guess() {
        let v = ClusterView::single(ep(1));
        v.set_brokers(vec![ep(3), ep(2), ep(1), ep(2)], 2);
        assert_eq!(
            v.brokers().iter().map(|b| b.node).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(v.is_live(3) && !v.is_live(4));
        let on = |l| v.broker_on(3, l).map(|a| (a.host, a.port));
        assert_eq!(on(SecurityProtocol::Plaintext), Some(("h3".into(), 9003)));
        assert_eq!(
            on(SecurityProtocol::Ssl),
            None,
            "node 3 has no SSL listener"
        );
        assert_eq!(v.leader_hint(&[1; 16], 0, &[2], None).leader, 2);
        assert_eq!(
            v.leader_hint(&[1; 16], 0, &[4], None).leader,
            -1,
            "node 4 is no live broker"
        );
        assert_eq!(v.leader_hint(&[1; 16], 0, &[1, 2, 3], None).leader, -1);
        assert!(v.observe(LeaderUpdate {
            topic: [1; 16],
            partition: 0,
            leadership: Leadership {
                leader: Some(3),
                epoch: 5,
                isr: vec![3, 1],
                isr_version: 1,
            },
        }));
        let h = v.leader_hint(&[1; 16], 0, &[1, 2, 3], None);
        assert_eq!((h.leader, h.epoch), (3, 5));
        v.retain_partitions(|_, _| false);
        assert!(v.leadership(&[1; 16], 0).is_none());
    }
}
