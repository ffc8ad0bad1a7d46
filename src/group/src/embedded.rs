//! Kafka's embedded consumer protocol (`ConsumerProtocolSubscription` and
//! `ConsumerProtocolAssignment`): the bytes classic consumers carry in JoinGroup metadata and
//! SyncGroup assignments. The classic protocol leaves them opaque to the coordinator; it
//! reads and writes them only where it assigns for classic members itself: classic members
//! of a consumer group, and a group converted between the two protocols.
//!
//! Versions follow Kafka's `ConsumerProtocol`: a version above the highest known one is read
//! as the highest (newer versions only add fields at the end), a negative one is malformed.

use bytes::{Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use sluice_codec::kafka_protocol::messages::ConsumerProtocolSubscription;
use sluice_codec::kafka_protocol::messages::TopicName;
use sluice_codec::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Highest `ConsumerProtocolSubscription` / `ConsumerProtocolAssignment` version known.
pub const CONSUMER_PROTOCOL_VERSION_MAX: i16 = 3;

/// Partitions by topic name, in the order the bytes list them.
pub type NamedPartitions = Vec<(String, Vec<i32>)>;

/// What the coordinator needs of a classic member's subscription.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// v1+: what the member still owns (cooperative members); empty for eager ones, which
    /// give everything up before they rejoin.
    pub owned: NamedPartitions,
    /// v3+.
    pub rack_id: Option<String>,
}

/// The version a subscription or assignment was written with, clamped as Kafka reads it;
/// `None` when malformed.
pub fn version_of(bytes: &[u8]) -> Option<i16> {
    let v = i16::from_be_bytes([*bytes.first()?, *bytes.get(1)?]);
    (v >= 0).then_some(v.min(CONSUMER_PROTOCOL_VERSION_MAX))
}

pub fn decode_subscription(bytes: &[u8]) -> Option<Subscription> {
    let version = version_of(bytes)?;
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    let s = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(Subscription {
        topics: s.topics.iter().map(|t| t.as_str().to_owned()).collect(),
        owned: s
            .owned_partitions
            .iter()
            .map(|tp| (tp.topic.0.as_str().to_owned(), tp.partitions.clone()))
            .collect(),
        rack_id: s.rack_id.map(|r| r.as_str().to_owned()),
    })
}

pub fn decode_assignment(bytes: &[u8]) -> Option<NamedPartitions> {
    let version = version_of(bytes)?;
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .map(|tp| (tp.topic.0.as_str().to_owned(), tp.partitions.clone()))
            .collect(),
    )
}

/// An assignment in `version` (the version the member's subscription was written with, as
/// Kafka answers), without user data.
pub fn encode_assignment(version: i16, partitions: &NamedPartitions) -> Bytes {
    let version = version.clamp(0, CONSUMER_PROTOCOL_VERSION_MAX);
    let mut a = ConsumerProtocolAssignment::default();
    a.assigned_partitions = partitions
        .iter()
        .map(|(topic, ps)| {
            let mut tp = AssignedTopic::default();
            tp.topic = TopicName(StrBytes::from_string(topic.clone()));
            tp.partitions = ps.clone();
            tp
        })
        .collect();
    let mut buf = BytesMut::new();
    buf.extend_from_slice(&version.to_be_bytes());
    // Encoding a struct we built from valid names cannot fail; an empty assignment is the
    // safe answer if it ever did.
    if a.encode(&mut buf, version).is_err() {
        buf.truncate(2);
        buf.extend_from_slice(&0i32.to_be_bytes());
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codec::kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;

    fn subscription_bytes(version: i16) -> Bytes {
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ];
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(StrBytes::from_static_str("a"));
        tp.partitions = vec![0, 2];
        s.owned_partitions = vec![tp];
        s.rack_id = Some(StrBytes::from_static_str("r1"));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        s.encode(&mut buf, version.min(3)).unwrap();
        buf.freeze()
    }

    #[test]
    fn subscriptions_of_every_version_decode() {
        let v0 = decode_subscription(&subscription_bytes(0)).unwrap();
        assert_eq!(v0.topics, vec!["a", "b"]);
        assert!(v0.owned.is_empty() && v0.rack_id.is_none());
        let v3 = decode_subscription(&subscription_bytes(3)).unwrap();
        assert_eq!(v3.owned, vec![("a".to_owned(), vec![0, 2])]);
        assert_eq!(v3.rack_id.as_deref(), Some("r1"));
        // A newer version is read as the newest known one.
        let mut v9 = subscription_bytes(3).to_vec();
        v9[1] = 9;
        assert_eq!(decode_subscription(&v9).unwrap(), v3);
    }

    #[test]
    fn malformed_bytes_are_refused_not_panicked_on() {
        assert_eq!(decode_subscription(&[]), None);
        assert_eq!(decode_subscription(&[0xff, 0xff, 0, 0, 0, 1]), None);
        assert_eq!(decode_subscription(&[0, 0, 0x7f, 0xff, 0xff, 0xff]), None);
        assert_eq!(decode_assignment(&[0]), None);
    }

    #[test]
    fn assignments_round_trip() {
        let parts = vec![("t".to_owned(), vec![1, 3]), ("u".to_owned(), vec![0])];
        for v in 0..=3 {
            let b = encode_assignment(v, &parts);
            assert_eq!(version_of(&b), Some(v));
            assert_eq!(decode_assignment(&b).unwrap(), parts);
        }
    }
}
