//! Writes a `request_percentage` throttle time into a response that is already encoded,
//! and reads the throttle a response carries (its connection is muted that long).
//!
//! Kafka puts the larger of a request's quota throttles into the response's
//! `throttle_time_ms` (KIP-219: the client then waits too). The request-time throttle is
//! known only once the handler has run, and sluice's handlers encode their own responses,
//! so the field is rewritten in the encoded frame: a fixed offset for the APIs that carry
//! it at the start of their body (most, from the version that has it), none for those that
//! carry it after variable-length fields (Produce, ApiVersions, the delegation-token APIs)
//! or not at all (SASL). For those the connection's mute alone applies.
//!
//! Invariants:
//! - The field is only ever raised (Kafka answers the larger of the byte-rate and the
//!   request-time throttles), never lowered.
//! - The offsets are checked against kafka-protocol's encoders for every version (the unit
//!   test encodes each response with a marker in the field and finds it there).

use bytes::{Bytes, BytesMut};
use sluice_codec::kafka_protocol::messages::ApiKey;

use crate::conn::Outcome;

/// Where `throttle_time_ms` sits in the body (after the response header) of `api` at
/// `version`; `None` where it is absent or follows variable-length fields.
pub fn body_offset(api: ApiKey, version: i16) -> Option<usize> {
    use ApiKey::*;
    let since = match api {
        // The first field in every version.
        Fetch
        | CreateTopics
        | DeleteTopics
        | DeleteRecords
        | InitProducerId
        | OffsetForLeaderEpoch
        | AddPartitionsToTxn
        | AddOffsetsToTxn
        | EndTxn
        | TxnOffsetCommit
        | DescribeAcls
        | CreateAcls
        | DeleteAcls
        | DescribeConfigs
        | AlterConfigs
        | AlterReplicaLogDirs
        | DescribeLogDirs
        | CreatePartitions
        | DeleteGroups
        | ElectLeaders
        | IncrementalAlterConfigs
        | AlterPartitionReassignments
        | ListPartitionReassignments
        | DescribeClientQuotas
        | AlterClientQuotas
        | DescribeUserScramCredentials
        | AlterUserScramCredentials
        | UpdateFeatures
        | DescribeCluster
        | DescribeProducers
        | DescribeTransactions
        | ListTransactions
        | ConsumerGroupHeartbeat
        | ConsumerGroupDescribe
        | GetTelemetrySubscriptions
        | PushTelemetry
        | ListConfigResources
        | DescribeTopicPartitions
        | ShareGroupHeartbeat
        | ShareGroupDescribe
        | ShareFetch
        | ShareAcknowledge
        | DescribeShareGroupOffsets
        | AlterShareGroupOffsets
        | DeleteShareGroupOffsets => 0,
        // The first field from the version that added it.
        FindCoordinator | Heartbeat | LeaveGroup | SyncGroup | DescribeGroups | ListGroups => 1,
        JoinGroup | ListOffsets => 2,
        Metadata | OffsetCommit | OffsetFetch => 3,
        // After the top-level error code.
        OffsetDelete => return Some(2),
        _ => return None,
    };
    (version >= since).then_some(0)
}

/// `outcome` with its `throttle_time_ms` raised to `throttle_ms` where the response has the
/// field at a known place (`api_key`/`version`: the request's); otherwise unchanged.
pub fn raise(outcome: Outcome, api_key: i16, version: i16, throttle_ms: i32) -> Outcome {
    let Some(at) = frame_offset(api_key, version) else {
        return outcome;
    };
    match outcome {
        Outcome::Respond(frame) => Outcome::Respond(raised(frame, at, throttle_ms)),
        Outcome::RespondParts(mut parts) => {
            // The first part is the head that the encoder wrote (the field is near its start).
            if let Some(head) = parts.first_mut() {
                *head = raised(std::mem::take(head), at, throttle_ms);
            }
            Outcome::RespondParts(parts)
        }
        other => other,
    }
}

/// The `throttle_time_ms` that `outcome` (a response to `api_key`/`version`) carries where
/// the field has a known place; 0 otherwise.
pub fn carried(outcome: &Outcome, api_key: i16, version: i16) -> i32 {
    let Some(at) = frame_offset(api_key, version) else {
        return 0;
    };
    let head = match outcome {
        Outcome::Respond(frame) => frame,
        Outcome::RespondParts(parts) => match parts.first() {
            Some(head) => head,
            None => return 0,
        },
        _ => return 0,
    };
    head.get(at..at + 4)
        .map_or(0, |f| i32::from_be_bytes(f.try_into().expect("4 bytes")))
}

/// Where `throttle_time_ms` sits in a response frame to `api_key`/`version`: after the size
/// prefix, the correlation id and the flexible header's (empty) tagged fields.
fn frame_offset(api_key: i16, version: i16) -> Option<usize> {
    let api = ApiKey::try_from(api_key).ok()?;
    let header = 8 + usize::from(api.response_header_version(version) >= 1);
    Some(header + body_offset(api, version)?)
}

fn raised(frame: Bytes, at: usize, throttle_ms: i32) -> Bytes {
    let Some(field) = frame.get(at..at + 4) else {
        return frame;
    };
    let current = i32::from_be_bytes(field.try_into().expect("4 bytes"));
    if current >= throttle_ms {
        return frame;
    }
    let mut out = BytesMut::from(&frame[..]);
    out[at..at + 4].copy_from_slice(&throttle_ms.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_codec::frame_response;
    use sluice_codec::kafka_protocol::messages::*;

    const MARK: i32 = 0x0A0B_0C0D;

    /// Encodes `$ty` with the marker in `throttle_time_ms` at every version kafka-protocol
    /// knows for `$api`, and checks [`raise`] finds the field where [`body_offset`] says
    /// (and that the field sits nowhere it is said to be absent from the start).
    macro_rules! check {
        ($($ty:ident => $api:ident),* $(,)?) => {{
            let mut checked = 0;
            $(
                let range = ApiKey::$api.valid_versions();
                for v in range.min..=range.max {
                    let body = $ty::default().with_throttle_time_ms(MARK);
                    let frame = frame_response(7, ApiKey::$api.response_header_version(v), &body, v)
                        .expect("encodes");
                    let header = 8 + usize::from(ApiKey::$api.response_header_version(v) >= 1);
                    match body_offset(ApiKey::$api, v) {
                        Some(off) => {
                            let at = header + off;
                            assert_eq!(
                                frame[at..at + 4], MARK.to_be_bytes(),
                                "{:?} v{v}", ApiKey::$api
                            );
                            assert_eq!(
                                carried(&Outcome::Respond(frame.clone()), ApiKey::$api as i16, v),
                                MARK
                            );
                            // Raised, never lowered.
                            let up = raise(Outcome::Respond(frame.clone()), ApiKey::$api as i16, v, MARK + 1);
                            let Outcome::Respond(up) = up else { panic!() };
                            assert_eq!(up[at..at + 4], (MARK + 1).to_be_bytes());
                            let same = raise(Outcome::Respond(frame.clone()), ApiKey::$api as i16, v, 5);
                            let Outcome::Respond(same) = same else { panic!() };
                            assert_eq!(same, frame);
                            checked += 1;
                        }
                        None => assert_ne!(
                            frame.get(header..header + 4), Some(&MARK.to_be_bytes()[..]),
                            "{:?} v{v} has the field first", ApiKey::$api
                        ),
                    }
                }
            )*
            checked
        }};
    }

    #[test]
    fn the_field_is_where_the_table_says_in_every_version() {
        let checked = check!(
            FetchResponse => Fetch, CreateTopicsResponse => CreateTopics,
            DeleteTopicsResponse => DeleteTopics, DeleteRecordsResponse => DeleteRecords,
            InitProducerIdResponse => InitProducerId,
            OffsetForLeaderEpochResponse => OffsetForLeaderEpoch,
            AddPartitionsToTxnResponse => AddPartitionsToTxn,
            AddOffsetsToTxnResponse => AddOffsetsToTxn, EndTxnResponse => EndTxn,
            TxnOffsetCommitResponse => TxnOffsetCommit, DescribeAclsResponse => DescribeAcls,
            CreateAclsResponse => CreateAcls, DeleteAclsResponse => DeleteAcls,
            DescribeConfigsResponse => DescribeConfigs, AlterConfigsResponse => AlterConfigs,
            AlterReplicaLogDirsResponse => AlterReplicaLogDirs,
            DescribeLogDirsResponse => DescribeLogDirs,
            CreatePartitionsResponse => CreatePartitions, DeleteGroupsResponse => DeleteGroups,
            ElectLeadersResponse => ElectLeaders,
            IncrementalAlterConfigsResponse => IncrementalAlterConfigs,
            AlterPartitionReassignmentsResponse => AlterPartitionReassignments,
            ListPartitionReassignmentsResponse => ListPartitionReassignments,
            DescribeClientQuotasResponse => DescribeClientQuotas,
            AlterClientQuotasResponse => AlterClientQuotas,
            DescribeUserScramCredentialsResponse => DescribeUserScramCredentials,
            AlterUserScramCredentialsResponse => AlterUserScramCredentials,
            UpdateFeaturesResponse => UpdateFeatures, DescribeClusterResponse => DescribeCluster,
            DescribeProducersResponse => DescribeProducers,
            DescribeTransactionsResponse => DescribeTransactions,
            ListTransactionsResponse => ListTransactions,
            ConsumerGroupHeartbeatResponse => ConsumerGroupHeartbeat,
            ConsumerGroupDescribeResponse => ConsumerGroupDescribe,
            GetTelemetrySubscriptionsResponse => GetTelemetrySubscriptions,
            PushTelemetryResponse => PushTelemetry,
            ListConfigResourcesResponse => ListConfigResources,
            DescribeTopicPartitionsResponse => DescribeTopicPartitions,
            ShareGroupHeartbeatResponse => ShareGroupHeartbeat,
            ShareGroupDescribeResponse => ShareGroupDescribe, ShareFetchResponse => ShareFetch,
            ShareAcknowledgeResponse => ShareAcknowledge,
            DescribeShareGroupOffsetsResponse => DescribeShareGroupOffsets,
            AlterShareGroupOffsetsResponse => AlterShareGroupOffsets,
            DeleteShareGroupOffsetsResponse => DeleteShareGroupOffsets,
            FindCoordinatorResponse => FindCoordinator, HeartbeatResponse => Heartbeat,
            LeaveGroupResponse => LeaveGroup, SyncGroupResponse => SyncGroup,
            DescribeGroupsResponse => DescribeGroups, ListGroupsResponse => ListGroups,
            JoinGroupResponse => JoinGroup, ListOffsetsResponse => ListOffsets,
            MetadataResponse => Metadata, OffsetCommitResponse => OffsetCommit,
            OffsetFetchResponse => OffsetFetch, OffsetDeleteResponse => OffsetDelete,
            // Not rewritten: the field follows variable-length fields.
            ProduceResponse => Produce, ApiVersionsResponse => ApiVersions,
            CreateDelegationTokenResponse => CreateDelegationToken,
        );
        assert!(checked > 200, "{checked} versions checked");
    }

    #[test]
    fn responses_without_the_field_or_too_short_are_left_alone() {
        let sasl = Outcome::Respond(Bytes::from_static(&[0, 0, 0, 6, 0, 0, 0, 7, 0, 0]));
        let Outcome::Respond(b) = raise(sasl, ApiKey::SaslHandshake as i16, 1, 100) else {
            panic!()
        };
        assert_eq!(&b[..], &[0, 0, 0, 6, 0, 0, 0, 7, 0, 0]);
        let short = Outcome::Respond(Bytes::from_static(&[0, 0, 0, 4, 0, 0, 0, 7]));
        let Outcome::Respond(b) = raise(short, ApiKey::Metadata as i16, 12, 100) else {
            panic!()
        };
        assert_eq!(b.len(), 8);
        assert!(matches!(
            raise(Outcome::NoResponse, ApiKey::Metadata as i16, 12, 100),
            Outcome::NoResponse
        ));
        assert!(matches!(raise(Outcome::Close, -5, 0, 100), Outcome::Close));
    }
}
