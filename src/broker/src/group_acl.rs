//! Authorization of the group APIs under `--authorizer acl`, on the shard that runs them
//! (the forwarded principal decides there): Kafka's checks and answers. READ on the group
//! to join, sync, heartbeat, leave and commit; DESCRIBE to describe it or fetch its
//! offsets; DELETE to delete it or its offsets; READ on each topic whose offsets are
//! committed or deleted, DESCRIBE on each topic whose offsets are fetched and on each topic
//! a KIP-848 member subscribes to by name; WRITE on the
//! transactional id of a TxnOffsetCommit; ListGroups lists the groups the client may
//! describe (all of them with DESCRIBE on the cluster).
//!
//! A refused group or topic is left out of the request before it runs (a DeleteGroups
//! never deletes a group its client may not delete) and answered with
//! GROUP_AUTHORIZATION_FAILED or TOPIC_AUTHORIZATION_FAILED beside the rest.

use sluice_codec::kafka_protocol::messages::*;
use sluice_group::Response;
use sluice_meta::acl::AclOperation::{self, Delete, Describe, Read, Write};
use sluice_meta::acl::ResourceType::{Group, Topic, TransactionalId};

use crate::authz;
use crate::conn::Client;
use crate::kerr::{
    GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED, TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
};
use crate::shard::BrokerShard;

/// What to do with a group request.
pub enum Gate {
    /// Run it (perhaps with refused groups or topics taken out), then [`finish`] the answer.
    Run(Box<RequestKind>, Refused),
    /// Answer this instead.
    Refuse(Response),
}

/// Answers to merge into the response of what ran.
#[derive(Default)]
pub struct Refused {
    /// Per-group or per-topic error entries (a response of the request's kind).
    errors: Option<Response>,
    /// ListGroups and OffsetFetch: filter the answer by what the client may describe.
    filter: bool,
    /// OffsetFetch: the groups whose request named its topics (v8+), and whether a v0–7
    /// request (one group) did. Kafka answers a named topic the client may not describe
    /// with TOPIC_AUTHORIZATION_FAILED and leaves such topics out of a fetch of all.
    named: Vec<String>,
    named_top: bool,
}

/// [`Refused`] for an OffsetFetch (`req`), with the groups' refusals `errors`.
fn offset_fetch_refused(req: &RequestKind, errors: Option<Response>) -> Refused {
    let RequestKind::OffsetFetch(r) = req else {
        return Refused {
            errors,
            ..Refused::default()
        };
    };
    Refused {
        errors,
        filter: true,
        named: r
            .groups
            .iter()
            .filter(|g| g.topics.is_some())
            .map(|g| g.group_id.to_string())
            .collect(),
        named_top: r.topics.is_some(),
    }
}

/// The operation on the group that the request needs.
fn group_operation(req: &RequestKind) -> AclOperation {
    match req {
        RequestKind::DescribeGroups(_)
        | RequestKind::ConsumerGroupDescribe(_)
        | RequestKind::OffsetFetch(_) => Describe,
        RequestKind::DeleteGroups(_) | RequestKind::OffsetDelete(_) => Delete,
        _ => Read,
    }
}

pub fn gate(shard: &BrokerShard, client: &Client, mut req: RequestKind, version: i16) -> Gate {
    let may = |op, rt, name: &str| authz::allowed(shard, client, op, rt, name);
    let op = group_operation(&req);
    let Some(ids) = crate::group_host::group_ids(&req, version) else {
        return Gate::Run(Box::new(req), Refused::default());
    };
    let multi = matches!(
        req,
        RequestKind::DescribeGroups(_)
            | RequestKind::DeleteGroups(_)
            | RequestKind::ConsumerGroupDescribe(_)
    ) || matches!(req, RequestKind::OffsetFetch(_) if version >= 8);
    if matches!(req, RequestKind::ListGroups(_)) {
        let all = authz::cluster_allowed(shard, client, Describe);
        return Gate::Run(
            Box::new(req),
            Refused {
                filter: !all,
                ..Refused::default()
            },
        );
    }
    if multi {
        let denied: Vec<String> = ids.into_iter().filter(|g| !may(op, Group, g)).collect();
        let errors = crate::group_host::per_group_error(&req, &denied, GROUP_AUTHORIZATION_FAILED);
        let keep = |g: &str| !denied.iter().any(|d| d == g);
        match &mut req {
            RequestKind::DescribeGroups(r) => r.groups.retain(|g| keep(g)),
            RequestKind::DeleteGroups(r) => r.groups_names.retain(|g| keep(g)),
            RequestKind::ConsumerGroupDescribe(r) => r.group_ids.retain(|g| keep(g)),
            RequestKind::OffsetFetch(r) => r.groups.retain(|g| keep(&g.group_id)),
            _ => {}
        }
        let refused = offset_fetch_refused(&req, errors);
        return Gate::Run(Box::new(req), refused);
    }
    if let RequestKind::TxnOffsetCommit(r) = &req {
        if !may(Write, TransactionalId, &r.transactional_id) {
            let e = crate::group_host::single_error(&req, TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
            return Gate::Refuse(e);
        }
    }
    if ids.first().is_some_and(|g| !may(op, Group, g)) {
        let e = crate::group_host::single_error(&req, GROUP_AUTHORIZATION_FAILED);
        return Gate::Refuse(e);
    }
    // KIP-848: DESCRIBE on every topic the member subscribes to by name.
    if let RequestKind::ConsumerGroupHeartbeat(r) = &req {
        let named = r.subscribed_topic_names.iter().flatten();
        if named.clone().any(|t| !may(Describe, Topic, t)) {
            let e = crate::group_host::single_error(&req, TOPIC_AUTHORIZATION_FAILED);
            return Gate::Refuse(e);
        }
    }
    // Topics of a commit: the refused ones answered apart, the rest committed.
    let errors = match &mut req {
        RequestKind::OffsetCommit(r) => {
            let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| may(Read, Topic, &t.name));
            r.topics = ok;
            let refused =
                RequestKind::OffsetCommit(OffsetCommitRequest::default().with_topics(denied));
            (!topics_empty(&refused))
                .then(|| crate::group_host::single_error(&refused, TOPIC_AUTHORIZATION_FAILED))
        }
        RequestKind::OffsetDelete(r) => {
            let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| may(Read, Topic, &t.name));
            r.topics = ok;
            (!denied.is_empty()).then(|| {
                let topics = denied
                    .into_iter()
                    .map(|t| {
                        offset_delete_response::OffsetDeleteResponseTopic::default()
                            .with_name(t.name)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        offset_delete_response::OffsetDeleteResponsePartition::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(TOPIC_AUTHORIZATION_FAILED)
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Response::OffsetDelete(OffsetDeleteResponse::default().with_topics(topics))
            })
        }
        RequestKind::TxnOffsetCommit(r) => {
            let (ok, denied): (Vec<_>, Vec<_>) = std::mem::take(&mut r.topics)
                .into_iter()
                .partition(|t| may(Read, Topic, &t.name));
            r.topics = ok;
            let refused =
                RequestKind::TxnOffsetCommit(TxnOffsetCommitRequest::default().with_topics(denied));
            (!topics_empty(&refused))
                .then(|| crate::group_host::single_error(&refused, TOPIC_AUTHORIZATION_FAILED))
        }
        _ => None,
    };
    let refused = offset_fetch_refused(&req, errors);
    Gate::Run(Box::new(req), refused)
}

fn topics_empty(req: &RequestKind) -> bool {
    match req {
        RequestKind::OffsetCommit(r) => r.topics.is_empty(),
        RequestKind::TxnOffsetCommit(r) => r.topics.is_empty(),
        _ => true,
    }
}

/// Fills the `authorized_operations` of the groups a describe answers (asked for with
/// `include_authorized_operations`); refused groups keep Kafka's "omitted" value.
pub fn authorized_operations(shard: &BrokerShard, client: &Client, response: &mut Response) {
    let ops = |g: &str| authz::authorized_operations(shard, client, Group, g);
    match response {
        Response::DescribeGroups(r) => {
            for g in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                g.authorized_operations = ops(&g.group_id);
            }
        }
        Response::ConsumerGroupDescribe(r) => {
            for g in r.groups.iter_mut().filter(|g| g.error_code == 0) {
                g.authorized_operations = ops(&g.group_id);
            }
        }
        _ => {}
    }
}

/// Completes the answer of a request that ran after [`gate`].
pub fn finish(shard: &BrokerShard, client: &Client, response: &mut Response, refused: Refused) {
    let may = |op, rt, name: &str| authz::allowed(shard, client, op, rt, name);
    if refused.filter {
        match response {
            Response::ListGroups(r) => r.groups.retain(|g| may(Describe, Group, &g.group_id)),
            // Offsets of topics the client may not describe: refused where the request
            // named them, left out of a fetch of all (Kafka's answers).
            Response::OffsetFetch(r) => {
                // Both versions' partition types have these fields: Kafka's answer for a
                // topic the client may not describe.
                macro_rules! refuse {
                    ($topics:expr) => {
                        for t in $topics.filter(|t| !may(Describe, Topic, &t.name)) {
                            for p in &mut t.partitions {
                                p.committed_offset = -1;
                                p.committed_leader_epoch = -1;
                                p.metadata = Some(Default::default());
                                p.error_code = TOPIC_AUTHORIZATION_FAILED;
                            }
                        }
                    };
                }
                if refused.named_top {
                    refuse!(r.topics.iter_mut());
                } else {
                    r.topics.retain(|t| may(Describe, Topic, &t.name));
                }
                for g in &mut r.groups {
                    if refused.named.iter().any(|n| n.as_str() == &**g.group_id) {
                        refuse!(g.topics.iter_mut());
                    } else {
                        g.topics.retain(|t| may(Describe, Topic, &t.name));
                    }
                }
            }
            _ => {}
        }
    }
    let Some(errors) = refused.errors else {
        return;
    };
    match (response, errors) {
        (Response::OffsetCommit(a), Response::OffsetCommit(b)) => a.topics.extend(b.topics),
        (Response::TxnOffsetCommit(a), Response::TxnOffsetCommit(b)) => a.topics.extend(b.topics),
        // The refused topics join the answer.
        (Response::OffsetDelete(a), Response::OffsetDelete(b)) => a.topics.extend(b.topics),
        (a, b) => crate::group_host::merge(a, b),
    }
}
