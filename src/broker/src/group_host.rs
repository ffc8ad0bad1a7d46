//! Drives the sans-IO group coordinators (`sluice-group`) on the shard that owns each
//! `__consumer_offsets` partition: loads them from the log, turns their effects into log
//! appends, replies and timers, and runs group requests routed here.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use glommio::channels::local_channel::{self, LocalSender};
use sluice_codec::kafka_protocol::messages::*;
use sluice_codec::kafka_protocol::protocol::{Decodable, Encodable};
use sluice_group::{
    persist_failed, Effect, GroupConfig, GroupCoordinator, ReplyToken, RequestCtx, Response,
};
use sluice_shard::DmaStorage;
use sluice_storage::PartitionLog;

use crate::groups::{decode_records, encode_records, partition_for, OFFSETS_TOPIC};
use crate::shard::{now_ms, BrokerShard};

const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
const NOT_COORDINATOR: i16 = 16;
/// First tick after loading.
const TICK_MAX: Duration = Duration::from_millis(1000);

/// One coordinator and its partition log, on the shard owning the partition.
pub struct GroupSlot {
    pub partition: i32,
    log: Rc<PartitionLog<DmaStorage>>,
    coord: RefCell<GroupCoordinator>,
    loaded: Cell<bool>,
    next_token: Cell<u64>,
    waiters: RefCell<HashMap<u64, LocalSender<Response>>>,
    /// The earliest pending timer (i64::MAX: none).
    next_tick: Cell<i64>,
}

impl GroupSlot {
    pub fn new(partition: i32, log: Rc<PartitionLog<DmaStorage>>) -> Rc<GroupSlot> {
        Rc::new(GroupSlot {
            partition,
            log,
            coord: RefCell::new(GroupCoordinator::new(GroupConfig::default())),
            loaded: Cell::new(false),
            next_token: Cell::new(1),
            waiters: RefCell::new(HashMap::new()),
            next_tick: Cell::new(i64::MAX),
        })
    }

    /// Replays the partition into a fresh coordinator, then starts its ticker.
    pub async fn load(self: &Rc<Self>) {
        let mut coord = GroupCoordinator::new(GroupConfig::default());
        let mut offset = self.log.log_start_offset();
        let mut records = 0usize;
        while offset < self.log.high_watermark() {
            let batches = match self.log.read_next(offset, 1 << 20).await {
                Ok((batches, next)) => {
                    offset = next;
                    batches
                }
                Err(e) => {
                    log::error!(
                        "{OFFSETS_TOPIC}-{}: replay read at {offset}: {e}",
                        self.partition
                    );
                    return;
                }
            };
            if batches.is_empty() {
                break;
            }
            for (k, v) in decode_records(batches) {
                records += 1;
                if let Err(e) = coord.replay(&k, v.as_deref()) {
                    log::warn!("{OFFSETS_TOPIC}-{}: skipping record: {e}", self.partition);
                }
            }
        }
        let effects = coord.finish_replay(now_ms());
        *self.coord.borrow_mut() = coord;
        self.loaded.set(true);
        if records > 0 {
            log::info!(
                "{OFFSETS_TOPIC}-{}: loaded {} group(s) from {records} record(s)",
                self.partition,
                self.coord.borrow().group_count()
            );
        }
        self.next_tick.set(i64::MAX);
        self.perform(effects);
        // A first tick soon after loading expires sessions of members that did not return.
        self.schedule_tick(now_ms() + TICK_MAX.as_millis() as i64);
    }

    /// Runs `tick` at `at_ms` unless an earlier timer already covers it. One short-lived
    /// timer task per earlier hint; `tick` is idempotent, so a superseded timer is harmless.
    fn schedule_tick(self: &Rc<Self>, at_ms: i64) {
        if at_ms >= self.next_tick.get() {
            return;
        }
        self.next_tick.set(at_ms);
        let me = self.clone();
        glommio::spawn_local(async move {
            let wait = (at_ms - now_ms()).clamp(0, i64::MAX / 2) as u64;
            glommio::timer::sleep(Duration::from_millis(wait)).await;
            if !me.loaded.get() || me.next_tick.get() > at_ms {
                return; // reloaded, or a later tick already ran past this one
            }
            me.next_tick.set(i64::MAX);
            let effects = me.coord.borrow_mut().tick(now_ms());
            me.perform(effects);
        })
        .detach();
    }

    fn deliver(&self, token: ReplyToken, response: Response) {
        if let Some(tx) = self.waiters.borrow_mut().remove(&token.0) {
            let _ = tx.try_send(response);
        }
    }

    /// Carries out a coordinator's effects in order.
    fn perform(self: &Rc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply(token, response) => self.deliver(token, response),
                Effect::PersistThenReply { records, replies } => {
                    let appended = self.append(&records);
                    let me = self.clone();
                    glommio::spawn_local(async move {
                        let durable = match appended {
                            Ok(last) => me.log.wait_durable(last).await.map_err(|e| e.to_string()),
                            Err(e) => Err(e),
                        };
                        if let Err(e) = &durable {
                            log::error!(
                                "{OFFSETS_TOPIC}-{}: persisting group state: {e}",
                                me.partition
                            );
                        }
                        for (token, response) in replies {
                            let response = if durable.is_ok() {
                                response
                            } else {
                                persist_failed(response)
                            };
                            me.deliver(token, response);
                        }
                        if durable.is_err() {
                            // The log is the truth: rebuild from it.
                            me.loaded.set(false);
                            me.load().await;
                        }
                    })
                    .detach();
                }
                Effect::Persist(records) => {
                    if let Err(e) = self.append(&records) {
                        log::error!(
                            "{OFFSETS_TOPIC}-{}: persisting group state: {e}",
                            self.partition
                        );
                    }
                }
                Effect::ScheduleTick { at_ms } => self.schedule_tick(at_ms),
            }
        }
    }

    /// Appends records as one batch; returns the last offset.
    fn append(&self, records: &[(Bytes, Option<Bytes>)]) -> Result<i64, String> {
        if records.is_empty() {
            return Ok(self.log.log_end_offset() - 1);
        }
        let batch = encode_records(records, now_ms());
        self.log
            .append(&batch, now_ms())
            .map(|a| a.last_offset)
            .map_err(|e| e.to_string())
    }

    /// Runs one request against the coordinator and waits for its (possibly delayed) reply.
    async fn call(
        self: &Rc<Self>,
        op: impl FnOnce(&mut GroupCoordinator, RequestCtx<'_>) -> Vec<Effect>,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> Option<Response> {
        let token = self.next_token.get();
        self.next_token.set(token + 1);
        let (tx, rx) = local_channel::new_bounded::<Response>(1);
        self.waiters.borrow_mut().insert(token, tx);
        let ctx = RequestCtx {
            token: ReplyToken(token),
            api_version: version,
            now_ms: now_ms(),
            client_id,
            client_host,
        };
        let effects = op(&mut self.coord.borrow_mut(), ctx);
        self.perform(effects);
        let r = rx.recv().await;
        self.waiters.borrow_mut().remove(&token);
        r
    }
}

/// The group ids a request names (for routing); empty for ListGroups.
pub fn group_ids(req: &RequestKind, version: i16) -> Option<Vec<String>> {
    Some(match req {
        RequestKind::JoinGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::SyncGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::Heartbeat(r) => vec![r.group_id.0.to_string()],
        RequestKind::LeaveGroup(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetCommit(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetDelete(r) => vec![r.group_id.0.to_string()],
        RequestKind::OffsetFetch(r) if version >= 8 => {
            r.groups.iter().map(|g| g.group_id.0.to_string()).collect()
        }
        RequestKind::OffsetFetch(r) => vec![r.group_id.0.to_string()],
        RequestKind::DescribeGroups(r) => r.groups.iter().map(|g| g.0.to_string()).collect(),
        RequestKind::DeleteGroups(r) => r.groups_names.iter().map(|g| g.0.to_string()).collect(),
        RequestKind::ListGroups(_) => Vec::new(),
        _ => return None,
    })
}

fn partitions(shard: &BrokerShard) -> Option<([u8; 16], i32)> {
    shard
        .topics()
        .get(OFFSETS_TOPIC)
        .map(|t| (t.id, t.partitions))
}

/// The offsets-topic partition of a group.
pub fn group_partition(shard: &BrokerShard, group_id: &str) -> Option<i32> {
    partitions(shard).map(|(_, n)| partition_for(group_id, n))
}

/// Runs a single-group request on this shard (which owns the group's partition).
pub async fn run_local(
    shard: &Rc<BrokerShard>,
    req: RequestKind,
    version: i16,
    client_id: &str,
    client_host: &str,
) -> Option<Response> {
    let ids = group_ids(&req, version)?;
    // Multi-group requests are split per coordinator and merged.
    match req {
        RequestKind::ListGroups(r) => {
            let mut out = ListGroupsResponse::default();
            for slot in shard.group_slots() {
                if !slot.loaded.get() {
                    continue;
                }
                let r = r.clone();
                if let Some(Response::ListGroups(resp)) = slot
                    .call(
                        move |c, ctx| c.list_groups(ctx, r),
                        version,
                        client_id,
                        client_host,
                    )
                    .await
                {
                    if resp.error_code != 0 {
                        out.error_code = resp.error_code;
                    }
                    out.groups.extend(resp.groups);
                }
            }
            Some(Response::ListGroups(out))
        }
        RequestKind::DescribeGroups(r) => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups.retain(|g| ids.contains(&g.0.to_string())),
                GroupCoordinator::describe_groups,
                |r| {
                    Response::DescribeGroups(
                        DescribeGroupsResponse::default().with_groups(
                            r.groups
                                .into_iter()
                                .map(|g| {
                                    describe_groups_response::DescribedGroup::default()
                                        .with_group_id(g)
                                        .with_error_code(COORDINATOR_LOAD_IN_PROGRESS)
                                        .with_authorized_operations(i32::MIN)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::DescribeGroups(DescribeGroupsResponse::default()),
            )
            .await,
        ),
        RequestKind::DeleteGroups(r) => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups_names.retain(|g| ids.contains(&g.0.to_string())),
                GroupCoordinator::delete_groups,
                |r| {
                    Response::DeleteGroups(
                        DeleteGroupsResponse::default().with_results(
                            r.groups_names
                                .into_iter()
                                .map(|g| {
                                    delete_groups_response::DeletableGroupResult::default()
                                        .with_group_id(g)
                                        .with_error_code(COORDINATOR_LOAD_IN_PROGRESS)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::DeleteGroups(DeleteGroupsResponse::default()),
            )
            .await,
        ),
        RequestKind::OffsetFetch(r) if version >= 8 => Some(
            per_coordinator(
                shard,
                &ids,
                r,
                (version, client_id, client_host),
                |r, ids| r.groups.retain(|g| ids.contains(&g.group_id.0.to_string())),
                GroupCoordinator::offset_fetch,
                |r| {
                    Response::OffsetFetch(
                        OffsetFetchResponse::default().with_groups(
                            r.groups
                                .into_iter()
                                .map(|g| {
                                    offset_fetch_response::OffsetFetchResponseGroup::default()
                                        .with_group_id(g.group_id)
                                        .with_error_code(COORDINATOR_LOAD_IN_PROGRESS)
                                })
                                .collect(),
                        ),
                    )
                },
                Response::OffsetFetch(OffsetFetchResponse::default()),
            )
            .await,
        ),
        req => {
            let slot = ids.first().and_then(|g| local_slot(shard, g));
            let Some(slot) = slot else {
                return Some(single_error(&req, NOT_COORDINATOR));
            };
            if !slot.loaded.get() {
                return Some(single_error(&req, COORDINATOR_LOAD_IN_PROGRESS));
            }
            // Commits to partitions that do not exist are answered here, as Kafka's request
            // handler does, and never stored; the coordinator gets the rest.
            let mut unknown = Vec::new();
            let req = match req {
                RequestKind::OffsetCommit(mut r) => {
                    unknown = take_unknown_partitions(shard, &mut r);
                    if r.topics.is_empty() && !unknown.is_empty() {
                        return Some(Response::OffsetCommit(
                            OffsetCommitResponse::default().with_topics(unknown),
                        ));
                    }
                    RequestKind::OffsetCommit(r)
                }
                other => other,
            };
            type Op = Box<dyn FnOnce(&mut GroupCoordinator, RequestCtx<'_>) -> Vec<Effect>>;
            let op: Op = match req {
                RequestKind::JoinGroup(r) => Box::new(move |c, ctx| c.join_group(ctx, r)),
                RequestKind::SyncGroup(r) => Box::new(move |c, ctx| c.sync_group(ctx, r)),
                RequestKind::Heartbeat(r) => Box::new(move |c, ctx| c.heartbeat(ctx, r)),
                RequestKind::LeaveGroup(r) => Box::new(move |c, ctx| c.leave_group(ctx, r)),
                RequestKind::OffsetCommit(r) => Box::new(move |c, ctx| c.offset_commit(ctx, r)),
                RequestKind::OffsetFetch(r) => Box::new(move |c, ctx| c.offset_fetch(ctx, r)),
                RequestKind::OffsetDelete(r) => Box::new(move |c, ctx| c.offset_delete(ctx, r)),
                _ => return None,
            };
            let mut resp = slot.call(op, version, client_id, client_host).await;
            if let Some(Response::OffsetCommit(r)) = resp.as_mut() {
                r.topics.extend(unknown);
            }
            resp
        }
    }
}

/// Removes from an OffsetCommit the partitions of topics that do not exist (or indexes past
/// a topic's partition count) and returns their UNKNOWN_TOPIC_OR_PARTITION answers.
fn take_unknown_partitions(
    shard: &BrokerShard,
    req: &mut OffsetCommitRequest,
) -> Vec<offset_commit_response::OffsetCommitResponseTopic> {
    let topics = shard.topics();
    let mut unknown = Vec::new();
    for t in req.topics.iter_mut() {
        let count = topics.get(t.name.0.as_str()).map_or(0, |r| r.partitions);
        let (known, missing): (Vec<_>, Vec<_>) = std::mem::take(&mut t.partitions)
            .into_iter()
            .partition(|p| (0..count).contains(&p.partition_index));
        t.partitions = known;
        if !missing.is_empty() {
            unknown.push(
                offset_commit_response::OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id)
                    .with_partitions(
                        missing
                            .iter()
                            .map(|p| {
                                offset_commit_response::OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(crate::kerr::UNKNOWN_TOPIC_OR_PARTITION)
                            })
                            .collect(),
                    ),
            );
        }
    }
    req.topics.retain(|t| !t.partitions.is_empty());
    unknown
}

/// Runs a multi-group request once per local coordinator holding some of its groups and
/// merges the answers; groups whose coordinator is still loading get `not_loaded`'s answer.
#[allow(clippy::too_many_arguments)]
async fn per_coordinator<R: Clone + 'static>(
    shard: &BrokerShard,
    ids: &[String],
    req: R,
    (version, client_id, client_host): (i16, &str, &str),
    keep: fn(&mut R, &[String]),
    run: fn(&mut GroupCoordinator, RequestCtx<'_>, R) -> Vec<Effect>,
    not_loaded: fn(R) -> Response,
    mut out: Response,
) -> Response {
    for (slot, ids) in split(shard, ids) {
        let mut sub = req.clone();
        keep(&mut sub, &ids);
        let part = match slot {
            Some(slot) => {
                slot.call(
                    move |c, ctx| run(c, ctx, sub),
                    version,
                    client_id,
                    client_host,
                )
                .await
            }
            None => Some(not_loaded(sub)),
        };
        if let Some(p) = part {
            merge(&mut out, p);
        }
    }
    out
}

/// Groups by the local slot owning them (`None`: partition here but not loaded yet).
fn split(shard: &BrokerShard, ids: &[String]) -> Vec<(Option<Rc<GroupSlot>>, Vec<String>)> {
    let mut out: Vec<(Option<Rc<GroupSlot>>, Vec<String>)> = Vec::new();
    for id in ids {
        let slot = local_slot(shard, id).filter(|s| s.loaded.get());
        match out.iter_mut().find(|(s, _)| match (s, &slot) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }) {
            Some((_, v)) => v.push(id.clone()),
            None => out.push((slot, vec![id.clone()])),
        }
    }
    out
}

fn local_slot(shard: &BrokerShard, group_id: &str) -> Option<Rc<GroupSlot>> {
    let p = group_partition(shard, group_id)?;
    shard.group_slots().into_iter().find(|s| s.partition == p)
}

/// An error answer for a single-group request that could not reach its coordinator.
fn single_error(req: &RequestKind, code: i16) -> Response {
    match req {
        RequestKind::JoinGroup(_) => Response::JoinGroup(JoinGroupResponse::default().with_error_code(code).with_generation_id(-1)),
        RequestKind::SyncGroup(_) => Response::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        RequestKind::Heartbeat(_) => Response::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        RequestKind::LeaveGroup(_) => Response::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
        RequestKind::OffsetCommit(r) => Response::OffsetCommit(OffsetCommitResponse::default().with_topics(
            r.topics
                .iter()
                .map(|t| {
                    offset_commit_response::OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_topic_id(t.topic_id).with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| offset_commit_response::OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code))
                            .collect(),
                    )
                })
                .collect(),
        )),
        RequestKind::OffsetFetch(_) => Response::OffsetFetch(OffsetFetchResponse::default().with_error_code(code)),
        RequestKind::OffsetDelete(_) => Response::OffsetDelete(OffsetDeleteResponse::default().with_error_code(code)),
        _ => Response::ListGroups(ListGroupsResponse::default().with_error_code(code)),
    }
}

/// Encodes a coordinator response body at `version`.
pub fn encode_body(response: &Response, version: i16) -> Option<Bytes> {
    let mut buf = BytesMut::new();
    let r = match response {
        Response::JoinGroup(r) => r.encode(&mut buf, version),
        Response::SyncGroup(r) => r.encode(&mut buf, version),
        Response::Heartbeat(r) => r.encode(&mut buf, version),
        Response::LeaveGroup(r) => r.encode(&mut buf, version),
        Response::OffsetCommit(r) => r.encode(&mut buf, version),
        Response::OffsetFetch(r) => r.encode(&mut buf, version),
        Response::OffsetDelete(r) => r.encode(&mut buf, version),
        Response::DescribeGroups(r) => r.encode(&mut buf, version),
        Response::ListGroups(r) => r.encode(&mut buf, version),
        Response::DeleteGroups(r) => r.encode(&mut buf, version),
    };
    match r {
        Ok(()) => Some(buf.freeze()),
        Err(e) => {
            log::error!("encoding group response v{version}: {e:#}");
            None
        }
    }
}

/// Decodes a response body produced by [`encode_body`] on another shard (for merging).
pub fn decode_body(api_key: ApiKey, mut body: Bytes, version: i16) -> Option<Response> {
    Some(match api_key {
        ApiKey::DescribeGroups => {
            Response::DescribeGroups(DescribeGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::ListGroups => {
            Response::ListGroups(ListGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::DeleteGroups => {
            Response::DeleteGroups(DeleteGroupsResponse::decode(&mut body, version).ok()?)
        }
        ApiKey::OffsetFetch => {
            Response::OffsetFetch(OffsetFetchResponse::decode(&mut body, version).ok()?)
        }
        _ => return None,
    })
}

/// Writes size prefix + response header + an already-encoded body.
pub fn frame_raw(correlation_id: i32, header_version: i16, body: &[u8]) -> Bytes {
    let header_len = if header_version >= 1 { 5 } else { 4 };
    let mut out = BytesMut::with_capacity(4 + header_len + body.len());
    out.extend_from_slice(&((header_len + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&correlation_id.to_be_bytes());
    if header_version >= 1 {
        out.extend_from_slice(&[0]); // no tagged fields
    }
    out.extend_from_slice(body);
    out.freeze()
}

/// The body of a response frame made by [`frame_raw`] (or the codec's framing).
fn unframe(frame: &Bytes, header_version: i16) -> Bytes {
    let skip = 4 + if header_version >= 1 { 5 } else { 4 };
    frame.slice(skip.min(frame.len())..)
}

/// Which groups a response covers, and keeps only those in `keep`.
fn retain_groups(response: &mut Response, keep: &dyn Fn(&str) -> bool) {
    match response {
        Response::DescribeGroups(r) => r.groups.retain(|g| keep(&g.group_id.0)),
        Response::DeleteGroups(r) => r.results.retain(|g| keep(&g.group_id.0)),
        Response::OffsetFetch(r) => r.groups.retain(|g| keep(&g.group_id.0)),
        _ => {}
    }
}

/// The per-group NOT_COORDINATOR answers of a multi-group request for `groups` (none if
/// the list is empty).
fn not_coordinated_here(req: &RequestKind, groups: &[String]) -> Option<Response> {
    if groups.is_empty() {
        return None;
    }
    let named = |g: &String| {
        GroupId(sluice_codec::kafka_protocol::protocol::StrBytes::from_string(g.clone()))
    };
    Some(match req {
        RequestKind::DescribeGroups(_) => Response::DescribeGroups(
            DescribeGroupsResponse::default().with_groups(
                groups
                    .iter()
                    .map(|g| {
                        describe_groups_response::DescribedGroup::default()
                            .with_group_id(named(g))
                            .with_error_code(NOT_COORDINATOR)
                            .with_authorized_operations(i32::MIN)
                    })
                    .collect(),
            ),
        ),
        RequestKind::DeleteGroups(_) => Response::DeleteGroups(
            DeleteGroupsResponse::default().with_results(
                groups
                    .iter()
                    .map(|g| {
                        delete_groups_response::DeletableGroupResult::default()
                            .with_group_id(named(g))
                            .with_error_code(NOT_COORDINATOR)
                    })
                    .collect(),
            ),
        ),
        RequestKind::OffsetFetch(_) => Response::OffsetFetch(
            OffsetFetchResponse::default().with_groups(
                groups
                    .iter()
                    .map(|g| {
                        offset_fetch_response::OffsetFetchResponseGroup::default()
                            .with_group_id(named(g))
                            .with_error_code(NOT_COORDINATOR)
                    })
                    .collect(),
            ),
        ),
        _ => return None,
    })
}

fn merge(into: &mut Response, from: Response) {
    match (into, from) {
        (Response::DescribeGroups(a), Response::DescribeGroups(b)) => a.groups.extend(b.groups),
        (Response::DeleteGroups(a), Response::DeleteGroups(b)) => a.results.extend(b.results),
        (Response::OffsetFetch(a), Response::OffsetFetch(b)) => a.groups.extend(b.groups),
        (Response::ListGroups(a), Response::ListGroups(b)) => {
            if b.error_code != 0 {
                a.error_code = b.error_code;
            }
            a.groups.extend(b.groups)
        }
        _ => {}
    }
}

/// Entry point for group APIs: routes to the shard(s) owning the groups' offsets
/// partitions, runs them there, and merges multi-group answers.
pub async fn handle(
    shard: &Rc<BrokerShard>,
    header: &sluice_codec::RequestHeaderInfo,
    body: RequestKind,
    raw: Bytes,
    forwarded: bool,
    client_host: &str,
) -> crate::conn::Outcome {
    use crate::conn::Outcome;
    let version = header.api_version;
    let client_id = header.client_id.as_deref().unwrap_or("").to_string();
    let respond = |r: Option<Response>| match r.and_then(|r| encode_body(&r, version)) {
        Some(b) => Outcome::Respond(frame_raw(
            header.correlation_id,
            header.response_header_version(),
            &b,
        )),
        None => Outcome::Close,
    };
    let Some(ids) = group_ids(&body, version) else {
        return Outcome::Close;
    };
    let Some((topic_id, n)) = partitions(shard) else {
        // No offsets topic yet: nothing is coordinated anywhere (FindCoordinator creates it).
        let code = NOT_COORDINATOR;
        return match body {
            RequestKind::ListGroups(_) => {
                respond(Some(Response::ListGroups(ListGroupsResponse::default())))
            }
            RequestKind::DescribeGroups(r) => respond(Some(Response::DescribeGroups(
                DescribeGroupsResponse::default().with_groups(
                    r.groups
                        .into_iter()
                        .map(|g| {
                            describe_groups_response::DescribedGroup::default()
                                .with_group_id(g)
                                .with_error_code(code)
                                .with_authorized_operations(i32::MIN)
                        })
                        .collect(),
                ),
            ))),
            req => respond(Some(single_error(&req, code))),
        };
    };
    let owner_of = |g: &str| shard.owner(&topic_id, partition_for(g, n));
    let me = shard.shard_id();
    let multi = matches!(
        body,
        RequestKind::ListGroups(_) | RequestKind::DescribeGroups(_) | RequestKind::DeleteGroups(_)
    ) || matches!(body, RequestKind::OffsetFetch(_) if version >= 8);
    if forwarded {
        return respond(run_local(shard, body, version, &client_id, client_host).await);
    }
    if !multi {
        let owner = ids.first().and_then(|g| owner_of(g));
        return match owner {
            Some(o) if o != me => {
                crate::conn::forward(shard, o, header.api_key as i16, raw, client_host).await
            }
            _ => respond(run_local(shard, body, version, &client_id, client_host).await),
        };
    }
    // Multi-group: every shard that owns one of the groups (ListGroups: every shard).
    let mut owners: Vec<sluice_shard::ShardId> = if matches!(body, RequestKind::ListGroups(_)) {
        (0..shard.ctx.shard_count())
            .map(|i| sluice_shard::ShardId(i as u16))
            .collect()
    } else {
        ids.iter().filter_map(|g| owner_of(g)).collect()
    };
    owners.sort();
    owners.dedup();
    // Groups whose offsets partition this node does not host: another node coordinates
    // them, and Kafka answers NOT_COORDINATOR for each (the client asks FindCoordinator).
    let remote: Vec<String> = if matches!(body, RequestKind::ListGroups(_)) {
        Vec::new()
    } else {
        ids.iter()
            .filter(|g| owner_of(g).is_none())
            .cloned()
            .collect()
    };
    let mut merged: Option<Response> = not_coordinated_here(&body, &remote);
    for o in owners {
        let mut part = if o == me {
            run_local(shard, body.clone(), version, &client_id, client_host).await
        } else {
            match crate::conn::forward(shard, o, header.api_key as i16, raw.clone(), client_host)
                .await
            {
                Outcome::Respond(frame) => decode_body(
                    header.api_key,
                    unframe(&frame, header.response_header_version()),
                    version,
                ),
                _ => None,
            }
        };
        if let Some(p) = part.as_mut() {
            retain_groups(p, &|g| owner_of(g) == Some(o));
        }
        match (&mut merged, part) {
            (None, Some(p)) => merged = Some(p),
            (Some(m), Some(p)) => merge(m, p),
            _ => {}
        }
    }
    respond(merged)
}
