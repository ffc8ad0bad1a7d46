//! What the coordinator asks its driver to do: reply, persist (then reply), wake it later.

use bytes::Bytes;
use sluice_codec::kafka_protocol::messages::{
    ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse, DeleteGroupsResponse,
    DescribeGroupsResponse, HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse,
    ListGroupsResponse, OffsetCommitResponse, OffsetDeleteResponse, OffsetFetchResponse,
    SyncGroupResponse, TxnOffsetCommitResponse,
};

use crate::error::code;

/// Opaque handle for a request awaiting its answer, chosen by the caller (e.g. connection id
/// and correlation id packed together). The coordinator hands it back in `Effect`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyToken(pub u64);

/// One `__consumer_offsets` record: key and value (`None` = tombstone).
pub type Record = (Bytes, Option<Bytes>);

/// Per-request context: the reply token, the request's API version (behaviour differs by
/// version), the driver's clock and the client identity from the request header.
#[derive(Debug, Clone, Copy)]
pub struct RequestCtx<'a> {
    pub token: ReplyToken,
    pub api_version: i16,
    pub now_ms: i64,
    /// `client_id` from the request header (JoinGroup stores it; DescribeGroups shows it).
    pub client_id: &'a str,
    /// The peer's address as text (DescribeGroups shows it, as Kafka's `/1.2.3.4`).
    pub client_host: &'a str,
}

/// A response the driver encodes with the request's API version.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    JoinGroup(JoinGroupResponse),
    SyncGroup(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    LeaveGroup(LeaveGroupResponse),
    OffsetCommit(OffsetCommitResponse),
    OffsetFetch(OffsetFetchResponse),
    OffsetDelete(OffsetDeleteResponse),
    DescribeGroups(DescribeGroupsResponse),
    ListGroups(ListGroupsResponse),
    DeleteGroups(DeleteGroupsResponse),
    TxnOffsetCommit(TxnOffsetCommitResponse),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse),
    ConsumerGroupDescribe(ConsumerGroupDescribeResponse),
}

/// An action for the driver. Effects of one call are ordered; perform them in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send `Response` for the request identified by the token now.
    Reply(ReplyToken, Response),
    /// Append `records` to this coordinator's `__consumer_offsets` partition and wait until
    /// they are durable (fsynced; on a replicated partition, committed on a quorum), then
    /// send every reply. If the append or fsync fails, send
    /// [`persist_failed`]`(response)` for every reply instead, and rebuild this coordinator
    /// from the log (`GroupCoordinator::new` + `replay` + `finish_replay`) once the partition
    /// accepts writes again: the coordinator applied the change in memory already, and the
    /// log is the truth.
    PersistThenReply {
        records: Vec<Record>,
        replies: Vec<(ReplyToken, Response)>,
    },
    /// As `PersistThenReply`, but the records go to the log as one transactional batch of
    /// this producer id and epoch (TxnOffsetCommit), so the partition's producer state and
    /// the transaction's marker apply to them.
    PersistTxnThenReply {
        producer_id: i64,
        producer_epoch: i16,
        records: Vec<Record>,
        replies: Vec<(ReplyToken, Response)>,
    },
    /// Append `records`; nobody waits on them (expiry tombstones, a group turning Empty).
    /// A failure here also means: rebuild from the log.
    Persist(Vec<Record>),
    /// Call `tick(now)` at (or after) `at_ms`. Earlier ticks are harmless; a later hint does
    /// not cancel an earlier one. The driver keeps one timer at the earliest hint it holds.
    ScheduleTick { at_ms: i64 },
}

/// The response to send instead of `response` when the records it depended on could not be
/// made durable: every error slot becomes COORDINATOR_NOT_AVAILABLE, which every client treats
/// as "find the coordinator again and retry".
pub fn persist_failed(response: Response) -> Response {
    persist_failed_with(response, code::COORDINATOR_NOT_AVAILABLE)
}

/// [`persist_failed`] with the error the driver chose: Kafka's coordinator answers
/// NOT_COORDINATOR when the write failed because this replica no longer leads the offsets
/// partition (or its storage failed), COORDINATOR_NOT_AVAILABLE when it may succeed here on
/// a retry (a timeout, too few replicas).
pub fn persist_failed_with(response: Response, error: i16) -> Response {
    match response {
        Response::JoinGroup(mut r) => {
            r.error_code = error;
            r.generation_id = -1;
            r.members.clear();
            r.leader = Default::default();
            r.skip_assignment = false;
            Response::JoinGroup(r)
        }
        Response::SyncGroup(mut r) => {
            r.error_code = error;
            r.assignment = Bytes::new();
            Response::SyncGroup(r)
        }
        Response::Heartbeat(mut r) => {
            r.error_code = error;
            Response::Heartbeat(r)
        }
        Response::LeaveGroup(mut r) => {
            r.error_code = error;
            Response::LeaveGroup(r)
        }
        Response::OffsetCommit(mut r) => {
            for t in &mut r.topics {
                for p in &mut t.partitions {
                    if p.error_code == code::NONE {
                        p.error_code = error;
                    }
                }
            }
            Response::OffsetCommit(r)
        }
        Response::OffsetDelete(mut r) => {
            r.error_code = error;
            r.topics.clear();
            Response::OffsetDelete(r)
        }
        Response::TxnOffsetCommit(mut r) => {
            for t in &mut r.topics {
                for p in &mut t.partitions {
                    if p.error_code == code::NONE {
                        p.error_code = error;
                    }
                }
            }
            Response::TxnOffsetCommit(r)
        }
        Response::DeleteGroups(mut r) => {
            for g in &mut r.results {
                if g.error_code == code::NONE {
                    g.error_code = error;
                }
            }
            Response::DeleteGroups(r)
        }
        Response::ConsumerGroupHeartbeat(mut r) => {
            r.error_code = error;
            r.error_message = None;
            r.member_epoch = 0;
            r.assignment = None;
            Response::ConsumerGroupHeartbeat(r)
        }
        // Read-only answers never wait on records; passed through unchanged.
        other @ (Response::OffsetFetch(_)
        | Response::DescribeGroups(_)
        | Response::ListGroups(_)
        | Response::ConsumerGroupDescribe(_)) => other,
    }
}
