//! Node-to-node requests over the controller runtime's transport (its extension methods,
//! which shard 0 holds): what this node serves for others — preferred elections of
//! partitions it leads (`handlers::elect_leaders`), transaction markers for partitions it
//! leads (`handlers::write_txn_markers`), KIP-890 verification by the transaction
//! coordinators it hosts (`txn_host`), the high watermarks of the partitions it leads (for
//! other nodes' consumer lag metrics) — and [`call`], by which any shard asks another node.

use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use sluice_rpc::{LocalBoxFuture, NodeId, Request, Response};
use sluice_shard::{CallClass, Frame, ShardId};

use crate::handlers::{elect_leaders, write_txn_markers};
use crate::ops::TAG_NODE_CALL;
use crate::shard::BrokerShard;

/// Method: "is this produce part of the transaction you coordinate" (KIP-890). Body: an
/// AddPartitionsToTxn v5 request body (verify-only transactions); answer: its v5 response
/// body.
pub const VERIFY_TXN: u16 = sluice_cluster::wire::method::EXTENSION_MIN + 2;

/// Method: "the high watermarks of the partitions you lead", for another node's consumer
/// lag metrics (a group's coordinator may hold no replica of a partition it has offsets
/// for). Body: empty; answer: [`encode_high_watermarks`].
pub const HIGH_WATERMARKS: u16 = sluice_cluster::wire::method::EXTENSION_MIN + 3;

/// Entries one [`HIGH_WATERMARKS`] answer holds at most (far above a node's partitions; a
/// decoder refuses more).
pub const HIGH_WATERMARKS_MAX: usize = 1 << 20;

/// `count: u32`, then per partition `topic length: u16`, topic, `partition: i32`,
/// `high watermark: i64`.
pub fn encode_high_watermarks(entries: &[(String, i32, i64)]) -> Bytes {
    let mut b = BytesMut::new();
    let entries = &entries[..entries.len().min(HIGH_WATERMARKS_MAX)];
    b.put_u32(entries.len() as u32);
    for (topic, partition, hw) in entries {
        let name = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
        b.put_u16(name.len() as u16);
        b.put_slice(name);
        b.put_i32(*partition);
        b.put_i64(*hw);
    }
    b.freeze()
}

/// Reads what [`encode_high_watermarks`] wrote; `None` for anything else.
pub fn decode_high_watermarks(mut b: &[u8]) -> Option<Vec<(String, i32, i64)>> {
    use bytes::Buf;
    if b.remaining() < 4 {
        return None;
    }
    let count = b.get_u32() as usize;
    if count > HIGH_WATERMARKS_MAX {
        return None;
    }
    // Each entry takes at least 14 bytes: no allocation beyond what the bytes back.
    let mut out = Vec::with_capacity(count.min(b.remaining() / 14));
    for _ in 0..count {
        if b.remaining() < 2 {
            return None;
        }
        let len = b.get_u16() as usize;
        if b.remaining() < len + 12 {
            return None;
        }
        let topic = std::str::from_utf8(&b[..len]).ok()?.to_string();
        b.advance(len);
        out.push((topic, b.get_i32(), b.get_i64()));
    }
    b.is_empty().then_some(out)
}

fn serve_high_watermarks(shard: Option<Rc<BrokerShard>>) -> LocalBoxFuture<Response> {
    Box::pin(async move {
        let Some(shard) = shard else {
            return Response {
                status: sluice_rpc::status::SHUTTING_DOWN,
                body: Bytes::new(),
            };
        };
        let led: Vec<(String, i32, i64)> = crate::metrics_host::gather(&shard)
            .await
            .into_iter()
            .flat_map(|s| s.partitions)
            .filter(|p| p.leader)
            .map(|p| (p.topic, p.partition, p.high_watermark))
            .collect();
        Response {
            status: sluice_rpc::status::OK,
            body: encode_high_watermarks(&led),
        }
    })
}

/// Set on the controller runtime by `metadata_sync`.
pub struct NodeRpc(pub Weak<BrokerShard>);

impl sluice_cluster::Extension for NodeRpc {
    fn request(&self, _from: NodeId, request: Request) -> LocalBoxFuture<Response> {
        let shard = self.0.upgrade();
        match request.method {
            elect_leaders::ELECT_PREFERRED => elect_leaders::serve(shard, request),
            write_txn_markers::WRITE_MARKERS => write_txn_markers::serve(shard, request),
            VERIFY_TXN => crate::txn_host::serve_verify(shard, request),
            HIGH_WATERMARKS => serve_high_watermarks(shard),
            _ => Box::pin(async {
                Response {
                    status: sluice_rpc::status::UNKNOWN_METHOD,
                    body: Bytes::new(),
                }
            }),
        }
    }
}

/// Asks node `to` (method `method`, `body`) and waits at most `timeout` for the answer
/// body; `None` without an OK answer. From any shard: the transport is shard 0's, so other
/// shards go through it (a [`TAG_NODE_CALL`] frame).
pub async fn call(
    shard: &Rc<BrokerShard>,
    to: i32,
    method: u16,
    body: Bytes,
    timeout: Duration,
) -> Option<Bytes> {
    if shard.shard_id() == ShardId(0) {
        return call_here(shard, to, method, body, timeout).await;
    }
    let mut payload = BytesMut::with_capacity(10 + body.len());
    payload.put_i32(to);
    payload.put_u16(method);
    payload.put_u32(timeout.as_millis().min(u32::MAX as u128) as u32);
    payload.put_slice(&body);
    let frame = Frame::empty(TAG_NODE_CALL, Some(payload.freeze()));
    // Parked: the answer may wait for a quorum on the other node.
    let mut reply = shard
        .ctx
        .mesh()
        .call_in(CallClass::Parked, ShardId(0), frame)
        .await
        .ok()?;
    reply.take_payload()
}

/// Serves a [`TAG_NODE_CALL`] frame's payload on shard 0.
pub async fn call_from_frame(shard: &BrokerShard, payload: Bytes) -> Option<Bytes> {
    if payload.len() < 10 {
        return None;
    }
    let to = i32::from_be_bytes(payload[..4].try_into().expect("4 bytes"));
    let method = u16::from_be_bytes(payload[4..6].try_into().expect("2 bytes"));
    let timeout_ms = u32::from_be_bytes(payload[6..10].try_into().expect("4 bytes"));
    let timeout = Duration::from_millis(timeout_ms as u64);
    call_here(shard, to, method, payload.slice(10..), timeout).await
}

async fn call_here(
    shard: &BrokerShard,
    to: i32,
    method: u16,
    body: Bytes,
    timeout: Duration,
) -> Option<Bytes> {
    let node = shard.controller.as_ref().and_then(|c| c.cluster())?;
    match node.request(to, method, body, timeout).await {
        Ok(r) if r.status == sluice_rpc::status::OK => Some(r.body),
        Ok(r) => {
            log::debug!("method {method} at node {to}: status {}", r.status);
            None
        }
        Err(e) => {
            log::debug!("method {method} at node {to}: {e:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_watermarks_round_trip_and_junk_is_refused() {
        let entries = vec![("orders".to_string(), 3, 1_234), ("é".to_string(), 0, -1)];
        let b = encode_high_watermarks(&entries);
        assert_eq!(decode_high_watermarks(&b), Some(entries));
        assert_eq!(
            decode_high_watermarks(&encode_high_watermarks(&[])),
            Some(vec![])
        );
        for cut in 0..b.len() {
            assert_eq!(decode_high_watermarks(&b[..cut]), None, "cut at {cut}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(decode_high_watermarks(&long), None, "trailing bytes");
        assert_eq!(
            decode_high_watermarks(&[0xff; 4]),
            None,
            "a count over the limit"
        );
    }
}
