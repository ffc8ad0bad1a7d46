//! Leader-report dissemination: every node tells every other node who leads each partition
//! as far as it knows (`sluice_meta::leaders`), so any node can answer Metadata and KIP-951
//! hints for any partition. Partition leaders are not metadata-log records (each partition's
//! Raft group elects its own), so this is how the knowledge spreads.
//!
//! # Protocol
//!
//! - **Request** ([`method::LEADER_REPORTS`]): the body is exactly one message of
//!   `sluice_meta::leaders::encode_updates` (format byte, count, updates; at most
//!   [`UPDATES_PER_MESSAGE_MAX`] updates, each at most a few hundred bytes since an ISR holds
//!   at most `REPLICAS_MAX` ids, so a message stays within a few MiB, far under the frame
//!   limit). **Answer**: [`ReportAnswer`] (the receiver's incarnation, updates applied and
//!   refused). A body that does not decode gets `MALFORMED` (the decoder never panics and
//!   never allocates more than the bytes back); a node with no table attached yet answers
//!   `UNAVAILABLE`; either way its table is untouched.
//! - **Receiving**: each update goes through the owner's filter
//!   ([`LeaderStore::accepts`]: the broker accepts only partitions its metadata image has, so
//!   a late report cannot bring a deleted partition back) and into its table
//!   ([`LeaderStore::observe`]; reports are epoch-ordered and commute, so duplicates,
//!   reordering and relays are harmless). What a node learns this way is part of its table
//!   and goes on to its other peers too (a node cut off from a leader's node still learns
//!   from the others; an echo back is not news and stops there).
//! - **Sending**: per peer, a cursor into the sender's table change log
//!   ([`LeaderStore::changes_since`]): the peer has every change up to it. Each peer gets
//!   the changes after its cursor, oldest first, in messages of at most
//!   [`UPDATES_PER_MESSAGE_MAX`]; the cursor moves only when the peer answers `OK` (a lost
//!   request or answer is resent; applying twice changes nothing). One request in flight
//!   per peer, each with [`GOSSIP_REQUEST_TIMEOUT`]; a peer's task never waits on another's,
//!   so a slow or dead peer holds up only itself. Transport requests queue behind Raft
//!   frames (the transport writes its Raft queue first), so reports never delay Raft.
//! - **Pace**: a change goes out at once when the peer was sent nothing for
//!   [`GOSSIP_INTERVAL`] (200 ms); changes within that interval are coalesced into the next
//!   message, sent when it ends (each entry appears once, in its latest state). A full
//!   message (a backlog: a resync of a large table) is followed at once by the next. The
//!   sender notices its table changed through [`LeaderStore::seq`], polled every
//!   [`GOSSIP_POLL`] (the broker's table is shared by all shards, which cannot wake this
//!   executor) or at once after `ControllerNode::leaders_changed` on this executor. After an
//!   error or a non-OK status a peer waits [`GOSSIP_ERROR_BACKOFF`].
//! - **Resync** (cursor back to 0, the whole table): when the transport's outgoing
//!   connection to the peer is a new one (a reconnect: the peer may have restarted, and
//!   nothing says what it kept), and when a peer's answer carries another incarnation than
//!   the one that acknowledged the cursor (it restarted, or replaced its table) unless the
//!   message started at cursor 0 (then it already had everything up to the new cursor).
//!   Attaching a new table here resets every peer to 0 and draws a new incarnation, so the
//!   peers resend their whole tables too.
//! - **Who**: every known node but this one: the voters (`--voters`, already transport
//!   peers) and every broker registered in the metadata image (added as transport peers at
//!   their registered rpc address, removed when the registration goes).
//!
//! # Bounds
//!
//! Per peer: a [`PeerCursor`] (four integers), one request in flight of at most one message,
//! one task. Per node: the peers the image names. Nothing queues reports: a change made
//! while a peer is slow or down is simply after its cursor, and the table keeps one change
//! slot per entry whatever happens. Serving a message is synchronous work of at most
//! [`UPDATES_PER_MESSAGE_MAX`] filter checks and `observe` calls, in the transport's task
//! queue; sending runs in the queue that started the node.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::or;
use sluice_meta::codec::REPLICAS_MAX;
use sluice_meta::leaders::{
    decode_updates, encode_updates, LeaderTable, LeaderUpdate, UPDATES_PER_MESSAGE_MAX,
};
use sluice_meta::TopicId;
use sluice_rpc::{Response, Transport};

use crate::notify::Event;
use crate::wire::{method, status, ReportAnswer};

/// Least time between two report messages to one peer while changes keep coming (the first
/// change after a quiet spell goes at once; later ones are coalesced).
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// How often the table's latest change number is read (changes made on other shards are
/// noticed within this).
pub const GOSSIP_POLL: Duration = Duration::from_millis(20);
/// Longest one report waits for room in the transport and for its answer.
pub const GOSSIP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A peer sent nothing for this long gets an empty report, whose answer tells whether it
/// is still the incarnation the cursor counts on (a table replaced without a reconnect).
pub const GOSSIP_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Pause before sending to a peer again after a failed request or a non-OK answer.
pub const GOSSIP_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// The leader table as the dissemination sees it: the broker implements it over its
/// Mutex-wrapped `LeaderTable` and metadata image; every method is called on the node's
/// executor and must not block for long (one short lock).
pub trait LeaderStore: 'static {
    /// `LeaderTable::seq`: the number of the latest change. Polled every [`GOSSIP_POLL`];
    /// must never go down while this store is attached (attach a new store instead).
    fn seq(&self) -> u64;
    /// `LeaderTable::changes_since`.
    fn changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64);
    /// Whether reports about this partition are taken in (the broker: its image has it).
    fn accepts(&self, topic: &TopicId, partition: i32) -> bool;
    /// `LeaderTable::observe`: true if it changed the table.
    fn observe(&self, update: LeaderUpdate) -> bool;
    /// One received message: each update through [`LeaderStore::accepts`] and
    /// [`LeaderStore::observe`]; returns (changed the table, refused by the filter). An
    /// implementation may override it to take its lock once per message.
    fn observe_reports(&self, updates: Vec<LeaderUpdate>) -> (usize, usize) {
        let (mut applied, mut refused) = (0, 0);
        for u in updates {
            if !self.accepts(&u.topic, u.partition) {
                refused += 1;
            } else if self.observe(u) {
                applied += 1;
            }
        }
        (applied, refused)
    }
}

/// A table on this executor that accepts every partition.
impl LeaderStore for RefCell<LeaderTable> {
    fn seq(&self) -> u64 {
        self.borrow().seq()
    }
    fn changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64) {
        self.borrow().changes_since(cursor, max)
    }
    fn accepts(&self, _: &TopicId, _: i32) -> bool {
        true
    }
    fn observe(&self, update: LeaderUpdate) -> bool {
        self.borrow_mut().observe(update)
    }
}

/// A table shared with other threads that accepts every partition.
impl LeaderStore for Mutex<LeaderTable> {
    fn seq(&self) -> u64 {
        self.lock().unwrap_or_else(|e| e.into_inner()).seq()
    }
    fn changes_since(&self, cursor: u64, max: usize) -> (Vec<LeaderUpdate>, u64) {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes_since(cursor, max)
    }
    fn accepts(&self, _: &TopicId, _: i32) -> bool {
        true
    }
    fn observe(&self, update: LeaderUpdate) -> bool {
        self.lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(update)
    }
}

/// What a sender knows of one peer (sans-IO; the peer's task does the IO).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCursor {
    /// The peer's table has every change of ours up to this (0: assume nothing).
    pub cursor: u64,
    /// The peer incarnation that acknowledged `cursor` (0: none yet).
    pub incarnation: u64,
    /// The transport connection `cursor` was acknowledged over (`Transport::connection`).
    pub connection: Option<u64>,
}

impl PeerCursor {
    /// The outgoing connection is `c` now; true if that made the peer start over (a new
    /// connection and something already sent).
    pub fn connected(&mut self, c: u64) -> bool {
        if self.connection == Some(c) {
            return false;
        }
        self.connection = Some(c);
        std::mem::replace(&mut self.cursor, 0) != 0
    }

    /// The peer answered OK to the changes after `sent_from` up to `next`, as incarnation
    /// `incarnation`; true if it restarted (and starts over from 0).
    pub fn answered(&mut self, sent_from: u64, next: u64, incarnation: u64) -> bool {
        debug_assert!(next >= sent_from);
        let restarted = incarnation != self.incarnation && sent_from != 0;
        self.incarnation = incarnation;
        if restarted {
            self.cursor = 0;
        } else if self.cursor == sent_from {
            self.cursor = next;
        }
        restarted
    }

    /// The table had no change after the cursor when its latest was `seq`: nothing to send
    /// up to there.
    pub fn idle(&mut self, seq: u64) {
        self.cursor = self.cursor.max(seq);
    }

    /// Back to the whole table (a new table here).
    pub fn reset(&mut self) {
        self.cursor = 0;
    }
}

/// Counters since start (see `ControllerNode::gossip_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Report messages answered OK by a peer (empty probes included), and the updates
    /// they carried.
    pub reports_sent: u64,
    pub updates_sent: u64,
    /// Failed report requests and non-OK answers.
    pub send_errors: u64,
    /// Times a peer was started over from cursor 0 (reconnect or restart).
    pub resyncs: u64,
    /// Report messages received and taken in, and what became of their updates.
    pub reports_received: u64,
    pub updates_applied: u64,
    pub updates_refused: u64,
    /// Report messages refused as malformed.
    pub malformed: u64,
}

/// A peer to report to: a voter is a transport peer already (from `--voters`); a broker is
/// added at its registered rpc address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Member {
    Voter,
    Broker(SocketAddr),
}

struct PeerEntry {
    member: Cell<Member>,
    removed: Cell<bool>,
    cursor: RefCell<PeerCursor>,
}

/// The dissemination of one node (with a transport: not in a cluster of one).
pub(crate) struct Gossip {
    transport: Rc<Transport>,
    store: RefCell<Option<Rc<dyn LeaderStore>>>,
    /// Bumped by every attach: an answer to a request sent under an older store is ignored.
    store_epoch: Cell<u64>,
    /// This node's incarnation as a receiver (0: no store attached yet).
    incarnation: Cell<u64>,
    /// The store's `seq` as last read.
    seen: Cell<u64>,
    /// Wakes the peers' tasks: the table changed, a store was attached, members changed.
    wake: Event,
    peers: RefCell<BTreeMap<u64, Rc<PeerEntry>>>,
    closed: Cell<bool>,
    stats: RefCell<GossipStats>,
}

impl Gossip {
    /// Starts the poller; peers come with [`Gossip::set_members`].
    pub fn start(transport: Rc<Transport>) -> Rc<Gossip> {
        let g = Rc::new(Gossip {
            transport,
            store: RefCell::new(None),
            store_epoch: Cell::new(0),
            incarnation: Cell::new(0),
            seen: Cell::new(0),
            wake: Event::default(),
            peers: RefCell::new(BTreeMap::new()),
            closed: Cell::new(false),
            stats: RefCell::new(GossipStats::default()),
        });
        glommio::spawn_local(poll_task(g.clone())).detach();
        g
    }

    pub fn close(&self) {
        self.closed.set(true);
        self.wake.notify();
    }

    pub fn stats(&self) -> GossipStats {
        *self.stats.borrow()
    }

    /// Reports go out from, and come into, `store` from now on (see the module header's
    /// resync rules).
    pub fn attach(&self, store: Rc<dyn LeaderStore>) {
        *self.store.borrow_mut() = Some(store);
        self.store_epoch.set(self.store_epoch.get() + 1);
        self.incarnation.set(rand::random::<u64>().max(1));
        self.seen.set(0);
        for p in self.peers.borrow().values() {
            p.cursor.borrow_mut().reset();
        }
        self.refresh();
        self.wake.notify();
    }

    /// Reads the table's latest change number; wakes the peers if it moved.
    pub fn refresh(&self) {
        let store = self.store.borrow().clone();
        if let Some(s) = store {
            let seq = s.seq();
            if seq != self.seen.get() {
                self.seen.set(seq);
                self.wake.notify();
            }
        }
    }

    /// The peers, and whether each one's outgoing connection is up.
    pub fn peers(&self) -> Vec<(u64, bool)> {
        self.peers
            .borrow()
            .keys()
            .map(|&id| (id, self.transport.connection(id).is_some()))
            .collect()
    }

    /// Makes the peers exactly `want` (this node left out by the caller): new ones get a
    /// task (and brokers a transport peer), gone ones stop (their transport peer removed
    /// if it was added here), a broker's changed address is dialed from its next connection.
    pub fn set_members(self: &Rc<Self>, want: &BTreeMap<u64, Member>) {
        if self.closed.get() {
            return;
        }
        let mut peers = self.peers.borrow_mut();
        peers.retain(|id, p| {
            if want.contains_key(id) {
                return true;
            }
            p.removed.set(true);
            if matches!(p.member.get(), Member::Broker(_)) {
                self.transport.remove_peer(*id);
            }
            false
        });
        for (&id, &m) in want {
            if let Some(p) = peers.get(&id) {
                if p.member.get() != m {
                    if let Member::Broker(a) = m {
                        let _ = self.transport.add_peer(id, a);
                    }
                    p.member.set(m);
                }
                continue;
            }
            if let Member::Broker(a) = m {
                if let Err(e) = self.transport.add_peer(id, a) {
                    log::warn!("gossip: cannot add node {id} at {a}: {e}");
                    continue;
                }
            }
            let p = Rc::new(PeerEntry {
                member: Cell::new(m),
                removed: Cell::new(false),
                cursor: RefCell::new(PeerCursor::default()),
            });
            peers.insert(id, p.clone());
            glommio::spawn_local(peer_task(self.clone(), id, p)).detach();
        }
        drop(peers);
        self.wake.notify();
    }

    /// Serves one report message (see the module header).
    pub fn serve(&self, body: &[u8]) -> Response {
        let store = self.store.borrow().clone();
        let Some(store) = store.filter(|_| !self.closed.get()) else {
            return Response {
                status: status::UNAVAILABLE,
                body: Bytes::new(),
            };
        };
        let updates = match decode_updates(body) {
            Ok(u) => u,
            Err(e) => {
                self.stats.borrow_mut().malformed += 1;
                return Response {
                    status: status::MALFORMED,
                    body: Bytes::from(format!("leader reports: {e}")),
                };
            }
        };
        let (applied, refused) = store.observe_reports(updates);
        {
            let mut s = self.stats.borrow_mut();
            s.reports_received += 1;
            s.updates_applied += applied as u64;
            s.updates_refused += refused as u64;
        }
        if applied > 0 {
            // News goes on to the other peers without waiting for the poll.
            self.refresh();
        }
        let a = ReportAnswer {
            incarnation: self.incarnation.get(),
            applied: u32::try_from(applied).unwrap_or(u32::MAX),
            refused: u32::try_from(refused).unwrap_or(u32::MAX),
        };
        Response::ok(a.encode())
    }
}

async fn poll_task(g: Rc<Gossip>) {
    while !g.closed.get() {
        g.refresh();
        glommio::timer::sleep(GOSSIP_POLL).await;
    }
}

/// What one look at a peer decided.
enum Step {
    /// Look again after this long, or when woken.
    Wait(Duration),
    /// Look again at once.
    Again,
}

/// Reports to one peer until it is removed or the node closes.
async fn peer_task(g: Rc<Gossip>, id: u64, p: Rc<PeerEntry>) {
    let mut not_before: Option<Instant> = None;
    let mut last_sent: Option<Instant> = None;
    loop {
        let w = g.wake.generation();
        if g.closed.get() || p.removed.get() {
            return;
        }
        match step(&g, id, &p, &mut not_before, &mut last_sent).await {
            Step::Again => {}
            Step::Wait(d) => {
                or(g.wake.changed(w), glommio::timer::sleep(d)).await;
            }
        }
    }
}

async fn step(
    g: &Gossip,
    id: u64,
    p: &PeerEntry,
    not_before: &mut Option<Instant>,
    last_sent: &mut Option<Instant>,
) -> Step {
    // Looked at again after this when idle: soon enough to notice a (re)connection.
    let idle = Step::Wait(GOSSIP_INTERVAL);
    let store = g.store.borrow().clone();
    let Some(store) = store else { return idle };
    let Some(conn) = g.transport.connection(id) else {
        return idle;
    };
    if p.cursor.borrow_mut().connected(conn) {
        g.stats.borrow_mut().resyncs += 1;
    }
    let now = Instant::now();
    if let Some(t) = not_before.filter(|t| *t > now) {
        return Step::Wait(t - now);
    }
    let seen = g.seen.get();
    let from = p.cursor.borrow().cursor;
    let probe_due = last_sent.is_none_or(|t| now >= t + GOSSIP_PROBE_INTERVAL);
    let (mut updates, next) = if seen > from {
        store.changes_since(from, UPDATES_PER_MESSAGE_MAX)
    } else {
        (Vec::new(), from)
    };
    let (from, next) = if updates.is_empty() {
        // `seen` was read before this: nothing changed after the cursor up to it.
        let mut c = p.cursor.borrow_mut();
        c.idle(seen);
        // Only a peer that acknowledged something needs a probe: one that did not gets
        // the whole table with the first change anyway.
        if !(probe_due && c.incarnation != 0) {
            return idle;
        }
        (c.cursor, c.cursor)
    } else {
        (from, next)
    };
    let full = updates.len() >= UPDATES_PER_MESSAGE_MAX;
    let before = updates.len();
    // The codec refuses an ISR over the replica limit; no real group has one.
    updates.retain(|u| u.leadership.isr.len() <= REPLICAS_MAX);
    if updates.len() != before {
        log::error!(
            "gossip: {} report(s) with an ISR over {REPLICAS_MAX} replicas not sent",
            before - updates.len()
        );
    }
    let count = updates.len() as u64;
    let body = encode_updates(&updates).expect("at most UPDATES_PER_MESSAGE_MAX, ISRs checked");
    let epoch = g.store_epoch.get();
    *last_sent = Some(now);
    let r = g
        .transport
        .request(
            id,
            method::LEADER_REPORTS,
            Bytes::from(body),
            GOSSIP_REQUEST_TIMEOUT,
        )
        .await;
    if g.store_epoch.get() != epoch || g.closed.get() {
        // Sent from a table that is no longer ours: its cursor means nothing now.
        return Step::Again;
    }
    let failed = |what: String| {
        log::debug!("gossip: reporting to node {id}: {what}");
        g.stats.borrow_mut().send_errors += 1;
        Some(Instant::now() + GOSSIP_ERROR_BACKOFF)
    };
    match r {
        Ok(resp) if resp.status == sluice_rpc::status::OK => match ReportAnswer::decode(&resp.body)
        {
            Ok(a) => {
                let restarted = p.cursor.borrow_mut().answered(from, next, a.incarnation);
                let mut s = g.stats.borrow_mut();
                s.reports_sent += 1;
                s.updates_sent += count;
                if restarted {
                    s.resyncs += 1;
                }
                // A backlog (or a restarted peer's whole table) goes on at once; the next
                // trickle of changes waits out the interval.
                *not_before = (!full && !restarted).then(|| now + GOSSIP_INTERVAL);
            }
            Err(e) => *not_before = failed(e.to_string()),
        },
        Ok(resp) => *not_before = failed(format!("answered status {}", resp.status)),
        Err(e) => *not_before = failed(e.to_string()),
    }
    Step::Again
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_moves_only_on_answers_and_starts_over_on_reconnect_or_restart() {
        let mut c = PeerCursor::default();
        assert!(!c.connected(1), "a first connection has nothing to redo");
        // First contact from 0: whatever incarnation answers, what it got counts.
        assert!(!c.answered(0, 10, 77));
        assert_eq!((c.cursor, c.incarnation), (10, 77));
        assert!(!c.answered(10, 15, 77));
        assert_eq!(c.cursor, 15);
        // Same connection: nothing to redo.
        assert!(!c.connected(1));
        assert_eq!(c.cursor, 15);
        // Reconnected: the whole table again.
        assert!(c.connected(2));
        assert_eq!(c.cursor, 0);
        assert!(!c.answered(0, 15, 77));
        // Answer from another incarnation to a message that did not start at 0: the peer
        // lost what the cursor says it has.
        assert!(c.answered(15, 20, 78));
        assert_eq!((c.cursor, c.incarnation), (0, 78));
        assert!(!c.answered(0, 20, 78));
        assert_eq!(c.cursor, 20);
        // Idle: nothing after the cursor up to the latest change.
        c.idle(25);
        assert_eq!(c.cursor, 25);
        c.idle(3);
        assert_eq!(c.cursor, 25, "never backwards");
        c.reset();
        assert_eq!(c.cursor, 0);
    }

    #[test]
    fn a_store_filters_and_counts() {
        struct Only(RefCell<LeaderTable>);
        impl LeaderStore for Only {
            fn seq(&self) -> u64 {
                self.0.seq()
            }
            fn changes_since(&self, c: u64, m: usize) -> (Vec<LeaderUpdate>, u64) {
                self.0.changes_since(c, m)
            }
            fn accepts(&self, _: &TopicId, p: i32) -> bool {
                p != 1
            }
            fn observe(&self, u: LeaderUpdate) -> bool {
                self.0.observe(u)
            }
        }
        let up = |p: i32, epoch: i32| LeaderUpdate {
            topic: [3; 16],
            partition: p,
            leadership: sluice_meta::leaders::Leadership {
                leader: Some(1),
                epoch,
                isr: vec![1],
                isr_version: 1,
            },
        };
        let s = Only(RefCell::new(LeaderTable::new()));
        assert_eq!(
            s.observe_reports(vec![up(0, 1), up(1, 1), up(0, 1)]),
            (1, 1)
        );
        assert_eq!(s.observe_reports(vec![up(0, 2)]), (1, 0));
        assert_eq!(s.seq(), 2);
        assert!(s.0.borrow().get(&[3; 16], 1).is_none());
    }
}
