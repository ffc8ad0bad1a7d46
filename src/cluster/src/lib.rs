//! The controller runtime of sluice (issue 12): the glue that makes the nodes of a cluster
//! agree on cluster metadata. One [`ControllerNode`] per node, on the glommio executor that
//! starts it (the broker's shard 0), drives the controller Raft group
//! ([`sluice_meta::CONTROLLER_GROUP`] in a `sluice_raft::GroupManager` holding only that
//! group) with a tick timer, a Raft-state WAL and the `sluice_rpc` transport; replays every
//! committed entry into a `MetadataImage`; runs the active `sluice_meta::Controller` on the
//! leader; forwards commands from any node to it; registers and heartbeats every node; and
//! feeds nodes without a replica (broker-only nodes) by pulling committed entries.
//!
//! # Driving it (the broker's side)
//!
//! On shard 0's executor: [`ControllerNode::start`]`(ClusterConfig)` (node id, data dir,
//! rpc listen address, voters, this node's Kafka endpoint, the legacy single-node state for
//! an upgrade in place); [`ControllerNode::wait_live`] before serving (registered and
//! unfenced); [`ControllerNode::subscribe`] then [`ControllerNode::image`] for the shards'
//! images and deltas; the commands (`create_topics`, `delete_topics`, `create_partitions`,
//! `alter_configs`, `allocate_producer_ids`, or [`ControllerNode::run`] with any
//! [`Command`] and a timeout) from any shard's handler (they run on shard 0); and
//! [`ControllerNode::shutdown`] on the way out ([`ControllerNode::resign`] first, for a
//! controlled shutdown: the controller leadership goes to another voter at once). [`ControllerNode::failure`] says why the
//! node stopped, if it did.
//!
//! For partition leadership (not in the metadata log: each partition's Raft group elects its
//! own leader), [`ControllerNode::attach_leaders`] with the broker's table (a
//! [`LeaderStore`]: `seq`, `changes_since`, `accepts` as the filter of what its image has,
//! `observe`), and [`ControllerNode::leaders_changed`] after a change made on shard 0 (other
//! shards' changes are polled). For its own node-to-node calls: [`ControllerNode::set_extension`]
//! (an [`Extension`] serving the method range [`wire::method::EXTENSION_MIN`]`..=`
//! [`wire::method::EXTENSION_MAX`]) and [`ControllerNode::request`] to any of
//! [`ControllerNode::peers`], through the node's one transport and behind its Raft frames.
//!
//! # Roles
//!
//! - A node listed in `--voters` holds a replica of the controller group: its Raft state is
//!   `<data dir>/cluster/controller.wal` ([`wal`], records in `sluice_raft::wal`'s format),
//!   and its last metadata snapshot `<data dir>/cluster/controller.snapshot` ([`snapshot`]).
//! - A node not listed (broker-only) holds no replica and no WAL: it long-polls a voter for
//!   committed entries after the last index it applied ([`wire::method::FETCH_COMMITTED`],
//!   at most [`node::FETCH_BYTES_MAX`] per answer, waiting at most [`node::FETCH_WAIT_MS`]);
//!   when the voter's log no longer holds the next entry, the answer carries the voter's
//!   snapshot instead (the image as of its index) and no entries: the next pull asks for
//!   those after it.
//! - Without `--voters` (a cluster of one) the same code runs with one voter (Raft id
//!   [`node::SOLO_RAFT_ID`], whatever the Kafka node id) and no transport.
//! - The transport's `Hello` carries a cluster id derived from the sorted voter ids
//!   ([`node::transport_cluster_id`]): nodes do not know the metadata's cluster id before
//!   they replay the log, and two clusters with different voters cannot cross-wire. The
//!   metadata's own cluster id is written by the first active controller when the log has
//!   none: the legacy single-node state's (with [`sluice_meta::bootstrap_records`] of it,
//!   when `ClusterConfig::legacy` is given) or a random one in Kafka's 22-character form.
//!   Only the node that becomes the first active controller uses its legacy state (an
//!   upgrade in place is a cluster of one); once the log has a cluster id it is ignored.
//!
//! - Each data directory has an id ([`identity`], `<data dir>/meta.properties`), sent in
//!   this node's registration and in its transport's `Hello`; the transport learns the ids
//!   the other nodes registered from the image. A node told by a peer that it is known by
//!   another id (its directory was wiped since it registered), or refused registration for
//!   it, stops ([`ControllerNode::failure`]): it must not rejoin under its node id.
//!
//! # Invariants
//!
//! - **Durable when:** the group manager is told `persisted(seq)` only after an `fdatasync`
//!   of the WAL that started after every write up to `seq` was written; one sync covers
//!   all writes before it. So Raft acknowledges appends and votes, and counts the leader's
//!   own copy, only for synced state; a committed entry is on a quorum's disks. On open the
//!   WAL is replayed, a torn tail is cut and the rest synced before Raft sees it; a record
//!   that checksums but does not fit the log stops the start (never a guess).
//! - **Snapshots** ([`snapshot`]): a voter snapshots its image at its applied index once
//!   `ClusterConfig::snapshot_bytes` of entries were applied since its last snapshot (Kafka's
//!   `metadata.log.max.record.bytes.between.snapshots`, 20 MiB) or `snapshot_interval` (1 h)
//!   passed with anything applied (the image encoded on a blocking thread, taken at the
//!   next tick), then compacts its Raft log to that index
//!   (`GroupManager::compact_to_snapshot`) and its WAL (a `LogStart` record, then a rewrite
//!   of the file as the log now stands). The WAL task writes the snapshot file durably
//!   (temporary file, fdatasync, rename, directory sync) before any WAL write that drops
//!   entries, so a restart always finds, beside the WAL, the state of every entry the WAL
//!   lacks: it loads the snapshot, compacts a WAL a crash left longer than it (or restarts
//!   the log at the snapshot when the WAL ends below it: a follower's install cut short),
//!   rewrites the WAL to match before anything can append to it, and replays the entries
//!   after it. A snapshot index of 2^62 or more, or a WAL commit index past the log that
//!   is left, refuses the start (damaged files). A data dir without a snapshot (from before them) starts as
//!   before. A voter that needs entries before its leader's log start gets the snapshot in
//!   Raft's `MsgSnapshot` (after the 8-byte log-start offset the partition groups' snapshots
//!   carry alone): its image is replaced and it writes the snapshot as its own before its
//!   log restart. Only committed state is ever snapshotted.
//! - **Applied in order, exactly once:** every node applies committed entries in Raft-index
//!   order (voters from their replica up to their high watermark, which counts only locally
//!   synced entries; broker-only nodes from pulls, which voters serve only up to what they
//!   applied), through `Controller::committed` (leader or not), which updates the image; a
//!   snapshot (at start, from the leader, or in a pull) replaces the image as of its index
//!   and applying goes on after it (subscribers get `Update::Image`).
//!   An entry that does not decode or apply stops the node ([`ControllerNode::failure`]):
//!   it applies and answers nothing more.
//! - **Who answers when:** only the active controller runs commands. It becomes active
//!   once its Raft replica leads, its election no-op committed (`GroupStatus::ready`) and
//!   every committed entry was applied, and after the log has a cluster id; it turns
//!   inactive on losing leadership. It answers a mutating command only when its records
//!   commit (sluice-meta does this); validation errors at once. Any other node forwards
//!   the command over rpc to the node it believes leads (a method number per command,
//!   bodies in [`wire`]); NOT_CONTROLLER answers and unreachable or unknown leaders are
//!   retried every [`node::RETRY_BACKOFF`] (and whenever the leadership changes) until
//!   [`node::COMMAND_TIMEOUT`] (Kafka's 30 s `request.timeout.ms`), then the caller gets the
//!   last NOT_CONTROLLER or REQUEST_TIMED_OUT, which Kafka's admin client retries.
//! - **Subscribers** ([`ControllerNode::subscribe`]) get every committed batch with its
//!   `Delta`, in log order, each once, after it is in [`ControllerNode::image`]. A queue
//!   holds at most [`node::SUBSCRIBER_QUEUE_MAX`] batches: a subscriber that falls further
//!   behind loses its queue and gets `Update::Image` (the whole image as of an index) and
//!   then the batches after it; memory stays bounded whatever a subscriber does.
//! - **Leader reports** ([`gossip`], protocol and bounds in its header): every node sends
//!   every other node it knows (voters, and brokers registered in the image, dialed at their
//!   registered rpc address) the changes of its leader table after that peer's cursor, in
//!   messages of at most `sluice_meta::leaders::UPDATES_PER_MESSAGE_MAX` updates in
//!   `sluice_meta::leaders`'s codec ([`wire::method::LEADER_REPORTS`]), at most every
//!   [`gossip::GOSSIP_INTERVAL`] while changes keep coming and at once after a quiet spell;
//!   one request in flight per peer with a timeout. A peer starts over from cursor 0 (the
//!   whole table) after a reconnect and when its answer shows another incarnation (it
//!   restarted or replaced its table; idle peers are probed every
//!   [`gossip::GOSSIP_PROBE_INTERVAL`]). Received updates pass the owner's filter, then go
//!   into its table; hostile bodies get MALFORMED and change nothing.
//! - **Registration:** every node registers (Kafka endpoint, rpc address, a random
//!   incarnation) with the active controller and heartbeats every
//!   [`node::HEARTBEAT_INTERVAL`] (2 s) across leader changes, registering again when told
//!   its epoch is stale or unknown; the controller fences nodes silent for 9 s.
//!
//! # Known limits
//!
//! - The controller log after the last snapshot is kept whole in memory (about
//!   `snapshot_bytes` of it). A snapshot travels as one Raft message or one pull answer: an
//!   image over [`snapshot::METADATA_SNAPSHOT_BYTES_MAX`] (64 MiB) is not snapshotted (a
//!   warning each time one is due), and the log then grows as it did before snapshots.
//! - The snapshot's image is encoded on a blocking thread, but cloned for it on shard 0,
//!   and the WAL's re-encoding for its rewrite runs there too: a large image still costs
//!   that shard (the broker's) a copy of it.
//! - Compaction goes right up to the applied index (no trailing margin of entries, unlike
//!   Kafka's retention of the log behind a snapshot): a voter only slightly behind the
//!   leader's snapshot needs the whole snapshot rather than a few entries.
//! - [`wire::FetchResponse`] gained its snapshot field without a version bump: nodes of
//!   different versions cannot pull from each other (a rolling upgrade of broker-only
//!   nodes across this change is not supported).
//! - A node whose data dir was wiped is refused and stops (see the directory id above);
//!   bringing it back under its id needs its old directory (there is no way yet to
//!   replace a voter's disk and rejoin, as KIP-853's `kafka-metadata-quorum` offers).
//! - A command retried after a lost answer may be applied twice in effect (a retried
//!   CreateTopics then answers TOPIC_ALREADY_EXISTS), as with Kafka's own retries.
//! - Voter membership is fixed at first start (`--voters` must not change afterwards; a
//!   start whose voters differ from the WAL's refuses to start).
//! - A restarted node of a cluster registers with a new incarnation, which the controller
//!   refuses (DUPLICATE_BROKER_REGISTRATION) until its previous session expires (9 s, as
//!   Kafka after an unclean shutdown; Kafka's clean-shutdown shortcut, KIP-966's previous
//!   broker epoch, is not done): until then it is not live and placement skips it. A
//!   cluster of one keeps its incarnation across restarts while its endpoints stay the same
//!   (see `solo_incarnation` in `node.rs`), so it is live again at once.
//! - AlterPartitionReassignments and the partition leader's reassignment-complete report
//!   are commands like the others (methods 10 and 11); the broker decides when to send them.
//! - `Command::MetadataIndex` (method 12) is a read barrier, not a change: the active
//!   controller answers it at once with the index its image applied (every change it
//!   acknowledged is at or below it); a node that then applied that index
//!   ([`ControllerNode::wait_applied`]) answers a read as the controller would have. It
//!   trusts the controller's belief that it is active (no lease), as reads of Kafka's
//!   controller do.

pub mod gossip;
pub mod identity;
pub mod node;
mod notify;
pub mod snapshot;
pub mod wal;
pub mod wire;

pub use wire::Command;

pub use gossip::{GossipStats, LeaderStore};
pub use node::{
    ClusterConfig, ControllerNode, Extension, Subscription, Update, COMMAND_TIMEOUT,
    HEARTBEAT_INTERVAL, REQUEST_TIMED_OUT,
};
