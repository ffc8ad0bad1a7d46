//! Node-to-node transport for sluice (issue 12): framed, versioned, checksummed messages over
//! TCP between the nodes of a cluster, with Raft traffic in its own queue ahead of forwarded
//! requests, bounded memory per peer, reconnects and timeouts; plus the cluster flags
//! (`--rpc-listen`, `--voters`, in [`cluster`]). The controller runtime (`sluice-cluster`)
//! owns each node's transport; the partitions' Raft traffic goes through it too (the broker
//! hands it over on shard 0).
//!
//! # Wire format
//!
//! Every message is a frame: a 24-byte header, then the body. All integers big-endian.
//!
//! ```text
//! offset size field
//!  0     4    magic           "SLRP"
//!  4     1    format version  1 (layout of this header)
//!  5     1    kind            1 Hello, 2 Raft, 3 Request, 4 Response, 5 Ping, 6 Pong
//!  6     2    reserved        0
//!  8     8    correlation id  Request/Response pairs, Ping/Pong pairs; 0 otherwise
//! 16     4    body length     at most RPC_FRAME_MAX (HELLO_BODY_MAX before the handshake)
//! 20     4    CRC32C          of the body (Castagnoli, as Kafka's record batches); of a
//!                             `Raft` body only the part its first field names
//! ```
//!
//! Bodies:
//! - `Hello`: version min u16, version max u16, node id u64, the id the sender believes the
//!   receiver has u64 (0: none), the sender's data directory id (16 bytes), the directory id
//!   the sender knows the receiver by (16 bytes; zeros: none), cluster id (u16 length +
//!   UTF-8, at most 255 bytes).
//! - `Raft`: one `sluice_raft::Envelope` (layout in [`envelope`]): compact heartbeats by
//!   hand, other Raft messages in raft-rs's protobuf encoding, and the Kafka batches of
//!   partition entries after them, outside the frame CRC (each batch's own CRC is checked on
//!   receipt instead, so the bytes are checked once, and the sender writes them from where
//!   they are without copying them into the encoding).
//! - `Request`: method u16, then the argument bytes. `Response`: status u16 (see
//!   [`frame::status`]), then the answer bytes.
//! - `Ping`, `Pong`: empty.
//!
//! # Connections and handshake
//!
//! Each node dials each peer it knows (one outgoing connection per peer) and accepts the
//! peers' connections on `--rpc-listen`, so a pair of nodes has two connections, one per
//! dialing direction (the tests put one fault-injecting proxy on each). On an outgoing
//! connection the dialer sends Raft envelopes, requests and pings, and receives responses and
//! pongs; nothing else is allowed either way.
//!
//! The first frame each way is `Hello`. The dialer names itself and the id it means to reach;
//! the listener checks that the dialer's id is neither 0 nor its own, that it was the one
//! meant (when named), that the cluster ids are equal and that the version ranges overlap,
//! then answers with its own `Hello`, which the dialer checks the same way, and that the id
//! it announces is the peer dialed. **Peers are identified by the id they announce, never by
//! address** (two nodes may reach a third by different addresses); a connection to peer N
//! whose `Hello` says another id is closed and logged as an error, and retried with backoff.
//! The version agreed is the highest both ranges hold (only version 2 exists).
//!
//! **A node whose data directory was replaced is refused** (Raft's safety rests on a voter
//! never forgetting what it acknowledged; raft-rs even panics when a leader tells a wiped
//! follower of a commit index past its empty log). Each data directory has a random id
//! (`meta.properties`), registered with the controller; the owner tells the transport the
//! id each peer registered ([`Transport::set_peer_directory`]). A `Hello` carries the
//! sender's own id and the one it knows the receiver by. A peer announcing another id than
//! the registered one is refused (and told the id the cluster knows it by, in the answering
//! `Hello`); a node told that it is known by another id than its own reports it to its
//! owner ([`Handler::directory_replaced`]), which stops: that node must not rejoin under
//! the same node id with an empty directory. Zeros on either side (a peer never
//! registered, a node without an id) skip the check. Before the
//! handshake a connection may send one frame of at most [`frame::HELLO_BODY_MAX`] bytes, and
//! must do it within [`HANDSHAKE_TIMEOUT`].
//!
//! A frame with a bad magic, format version, reserved bits, unknown kind, a length over the
//! limit, a bad CRC, a body that does not decode, or a kind not allowed at that point closes
//! the connection (counted in [`Stats::protocol_errors`], never a panic). The one exception
//! is a Kafka batch beside a Raft envelope that fails only its own CRC: that message is
//! dropped and counted ([`Stats::raft_messages_damaged`], see
//! [`envelope::decode_envelope_lossy`]). The length is checked before anything is
//! allocated for the body, and the body buffer (at most 1 MiB at first) then grows with the
//! bytes that actually arrive. A newer incoming connection from a node closes its older one.
//!
//! # Queues, priority and back-pressure
//!
//! Per peer, two bounded FIFO queues of encoded frames feed the outgoing connection; the
//! writer always takes the Raft queue first, so a Raft frame waits at most for the one frame
//! being written, never behind queued requests. Limits ([`RAFT_QUEUE_FRAMES_MAX`],
//! [`RAFT_QUEUE_BYTES_MAX`], [`REQUEST_QUEUE_FRAMES_MAX`], [`REQUEST_QUEUE_BYTES_MAX`]) count
//! frames and bytes; a frame is admitted while its queue is empty or it fits both (so one
//! frame larger than the byte limit still goes out alone).
//!
//! - [`Transport::send_raft`] never waits: a Raft frame that finds its queue full is dropped
//!   and counted ([`Stats::raft_frames_dropped`]). Raft tolerates lost messages by design
//!   and retransmits: heartbeats recur every tick, a lost append is re-sent after the
//!   follower's rejection or the leader's next probe, a lost vote leaves the election to time
//!   out. When a connection to a peer is lost, its queued Raft frames are discarded, and so
//!   is what is sent until the peer is back ([`SendError::Disconnected`], counted in
//!   [`Stats::raft_frames_discarded`]): by then it is stale (a restarted follower must
//!   learn the leader's log start, not receive entries the leader compacted meanwhile), and
//!   a long outage would hold a full queue for nothing. Before a peer's first connection its
//!   frames queue as usual, so a starting cluster's first election does not lose its votes
//!   to the dial.
//! - [`Transport::request`] waits for room in the request queue and for one of
//!   [`REQUESTS_IN_FLIGHT_MAX`] slots, within its timeout (`Backpressure` if none came), then
//!   for the response (`Timeout`). A request written on a connection that closes before the
//!   answer fails with `ConnectionLost` (it may have been handled); one still queued waits for
//!   the next connection. The receiver answers `BUSY` rather than stop reading when a
//!   connection has more requests in flight than the limit, so Raft frames behind them on the
//!   same connection are never held up by request handling.
//! - Liveness: the dialer pings every [`PING_INTERVAL`]; either side closes a connection on
//!   which nothing arrived for [`SILENCE_TIMEOUT`] (a black-holed peer whose TCP stack still
//!   accepts bytes is noticed this way). Reconnects back off exponentially from
//!   [`BACKOFF_MIN`] to [`BACKOFF_MAX`] (Kafka's `reconnect.backoff.ms` and
//!   `reconnect.backoff.max.ms`).
//!
//! # Runtime
//!
//! [`Transport::start`] first asks whatever answers on the listen address for a `Hello`
//! and refuses to start if a sluice node does: glommio binds with SO_REUSEPORT, which would
//! otherwise let a second node share the port silently.
//!
//! [`Transport`] runs on the glommio executor that starts it (one per node for now; which
//! shard hosts it is the broker's choice), in the task queue the owner names, so Raft
//! traffic can have its own scheduling queue. It depends on glommio directly (sockets,
//! timers, task queues) rather than on an executor abstraction with a single implementation;
//! the framing and envelope code above the sockets is sans-IO or generic over futures-lite's
//! `AsyncRead`/`AsyncWrite`, and the tests run whole transports over loopback TCP in plain
//! `LocalExecutor`s. Received envelopes and requests go to the owner's [`Handler`].

pub mod cluster;
pub mod envelope;
pub mod frame;
pub mod sync;
pub mod transport;

use std::time::Duration;

pub use cluster::{check_cluster_flags, parse_node_id, parse_voters, Voter};
pub use envelope::{
    decode_envelope, decode_envelope_lossy, encode_envelope, encode_envelope_frames, EnvelopeError,
    RaftBody,
};
pub use frame::{status, DirectoryId, FrameError, Hello, Kind, Request, Response};
pub use sluice_raft::NodeId;
pub use transport::{
    Handler, Limits, LocalBoxFuture, QueueLengths, RequestError, RpcTls, SendError, Stats,
    Timeouts, Transport, TransportConfig,
};

/// Largest Raft entry the transport must carry whole: one Kafka record batch at sluice's
/// hard cap (`sluice_storage::config::BATCH_BYTES_MAX`, whatever a topic's
/// `max.message.bytes` says; the broker asserts the two agree). raft-rs packs entries into
/// an append message up to `max_size_per_msg` (1 MiB, `sluice_raft::manager::MAX_SIZE_PER_MSG`)
/// but always sends at least one entry, so a single batch at this cap is one message.
pub const RAFT_ENTRY_BYTES_MAX: usize = 64 << 20;
/// Largest frame body. It must hold the largest Raft message, one entry of
/// [`RAFT_ENTRY_BYTES_MAX`] plus its protobuf and envelope framing (well under 1 MiB), or
/// that partition could never replicate; with Kafka's default `max.message.bytes` (1 MiB) an
/// append of up to 1 MiB of batches is far inside it. Larger envelopes are split across
/// frames. Memory is not reserved at this size: a body buffer grows with the bytes received.
pub const RPC_FRAME_MAX: usize = RAFT_ENTRY_BYTES_MAX + (1 << 20);
const _: () = assert!(RPC_FRAME_MAX <= u32::MAX as usize);

/// Raft frames one peer's queue holds. Heartbeats go out once per tick (50 ms) per node pair
/// and appends as proposals arrive; thousands queued means the peer has not read for
/// seconds, when what is queued is stale anyway.
pub const RAFT_QUEUE_FRAMES_MAX: usize = 4096;
/// Bytes of Raft frames one peer's queue holds (plus one frame). raft-rs's own flow control
/// (256 appends of 1 MiB in flight per group) bounds one group, not a node's hundreds.
pub const RAFT_QUEUE_BYTES_MAX: usize = 64 << 20;
/// Requests one peer's queue holds before `request` callers wait.
pub const REQUEST_QUEUE_FRAMES_MAX: usize = 1024;
/// Bytes of requests one peer's queue holds (plus one frame).
pub const REQUEST_QUEUE_BYTES_MAX: usize = 16 << 20;
/// Requests to one peer admitted and not yet answered; also the most a receiving connection
/// runs at once before answering `BUSY`.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 256;
/// Incoming connections one transport holds (peers have one each; the rest is a guard
/// against strangers holding descriptors).
pub const INBOUND_CONNECTIONS_MAX: usize = 1024;

/// Longest a TCP connect may take. Shorter than Kafka's `socket.connection.setup.timeout.ms`
/// (10 s): an attempt stuck in a network partition delays the first Raft message after the
/// partition heals by up to this.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the `Hello` exchange may take after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the dialer pings (the listener's liveness signal when no other traffic flows).
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A connection on which nothing arrived for this long is closed (and re-dialed).
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect backoff: Kafka's `reconnect.backoff.ms` and `reconnect.backoff.max.ms`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
const _: () = assert!(PING_INTERVAL.as_millis() * 2 < SILENCE_TIMEOUT.as_millis());
