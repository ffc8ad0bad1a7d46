//! Fetch long-polls: a fetch that found no data parks ONE waiter and asks each owner of its
//! partitions to tell it when a watched high watermark moves. Nothing parked holds a mesh
//! handler permit or pending-call slot: a watch is a few one-way frames.
//!
//! On the fetch's shard, the waiter ([`ParkedFetch`]) sits in `parked` by id until an owner
//! fires its watch (`TAG_WATCH_FIRED`, or directly for partitions owned here). Dropping it,
//! however the fetch ends (answer, timeout, closed connection), cancels the watch on every
//! owner it was sent to (`TAG_UNWATCH`).
//!
//! On an owner, a watch's entries sit in `by_partition`, and ONE task per watched partition
//! (not per fetch) waits for that partition's high watermark to move and fires the watches
//! it satisfies. A fired watch is removed from the owner and tells its fetch once. The task
//! ends when a move finds no watches left, so a partition costs at most one task and one
//! waker in its log however many fetches come and go. Entries cost memory proportional to the
//! partitions of fetches in flight, which their requests already hold. Registering and
//! cancelling cost O(1) per partition (entries are keyed by watch), so many fetches on one
//! partition never make it quadratic. An entry past its deadline whose cancel never arrives
//! (a shard stopping, or a cancel task that could not be spawned) is dropped at that
//! partition's next append; on a partition that stays quiet it stays until then.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::task::{Poll, Waker};

use sluice_shard::{DmaStorage, Frame, PartitionKey, ShardId};
use sluice_storage::PartitionLog;

use crate::ops::{WatchEntry, WatchRef, WatchRequest, TAG_UNWATCH, TAG_WATCH, TAG_WATCH_FIRED};
use crate::shard::{now_ms, BrokerShard};

/// Entries per `TAG_WATCH` frame (40 bytes each: far below `FRAME_BODY_MAX`).
pub const WATCH_ENTRIES_PER_FRAME_MAX: usize = 8192;

/// A watch: the shard of its fetch and the id the fetch got there.
type WatchKey = (ShardId, u64);

/// What one watch waits for on one partition: its high watermark (its last stable offset
/// when `committed`) past `offset`.
struct Entry {
    offset: i64,
    deadline_ms: i64,
    committed: bool,
}

#[derive(Default)]
struct Waiter {
    fired: bool,
    waker: Option<Waker>,
}

/// One shard's watches: fetches parked here, and watches on partitions it owns.
#[derive(Default)]
pub struct Watches {
    next_id: Cell<u64>,
    parked: RefCell<HashMap<u64, Rc<RefCell<Waiter>>>>,
    by_partition: RefCell<HashMap<PartitionKey, HashMap<WatchKey, Entry>>>,
    by_watch: RefCell<HashMap<WatchKey, Vec<PartitionKey>>>,
    /// Partitions with a task waiting for their high watermark to move.
    watched: RefCell<HashSet<PartitionKey>>,
}

impl Watches {
    /// Fetches parked on this shard.
    pub fn parked_fetches(&self) -> usize {
        self.parked.borrow().len()
    }

    /// Watch entries on partitions this shard owns.
    pub fn entries(&self) -> usize {
        self.by_partition.borrow().values().map(HashMap::len).sum()
    }

    /// Removes a watch from this (owning) shard; returns whether it was here.
    fn remove(&self, key: WatchKey) -> bool {
        let Some(parts) = self.by_watch.borrow_mut().remove(&key) else {
            return false;
        };
        let mut by_partition = self.by_partition.borrow_mut();
        for pk in parts {
            if let Some(list) = by_partition.get_mut(&pk) {
                list.remove(&key);
                if list.is_empty() {
                    by_partition.remove(&pk);
                }
            }
        }
        true
    }

    /// Marks parked fetch `id` as having news and wakes it.
    pub fn wake(&self, id: u64) {
        let waiter = self.parked.borrow().get(&id).cloned();
        if let Some(w) = waiter {
            let waker = {
                let mut w = w.borrow_mut();
                w.fired = true;
                w.waker.take()
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A fetch parked in a long-poll; cancels its watch everywhere when dropped.
pub struct ParkedFetch {
    shard: Rc<BrokerShard>,
    id: u64,
    waiter: Rc<RefCell<Waiter>>,
    /// Shards the watch was (or was being) registered on.
    owners: Vec<ShardId>,
}

impl ParkedFetch {
    /// Parks a fetch on `entries` (grouped by owning shard): registers its watch on each
    /// owner. Waits only while a request link to an owner is full (backpressure).
    pub async fn park(
        shard: &Rc<BrokerShard>,
        by_owner: Vec<(ShardId, Vec<WatchEntry>)>,
        deadline_ms: i64,
    ) -> ParkedFetch {
        let w = &shard.watches;
        let id = w.next_id.get().wrapping_add(1);
        w.next_id.set(id);
        let waiter = Rc::new(RefCell::new(Waiter::default()));
        w.parked.borrow_mut().insert(id, waiter.clone());
        let mut parked = ParkedFetch {
            shard: shard.clone(),
            id,
            waiter,
            owners: Vec::with_capacity(by_owner.len()),
        };
        let me = shard.shard_id();
        for (owner, entries) in by_owner {
            parked.owners.push(owner);
            if owner == me {
                register(shard, me, id, deadline_ms, &entries);
                continue;
            }
            for chunk in entries.chunks(WATCH_ENTRIES_PER_FRAME_MAX) {
                let req = WatchRequest {
                    id,
                    deadline_ms,
                    entries: chunk.to_vec(),
                };
                let sent = match Frame::encode_tagged(TAG_WATCH, &req, None) {
                    Ok(f) => shard
                        .ctx
                        .mesh()
                        .notify(owner, f)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = sent {
                    // The owner is stopping: let the fetch re-read and report what it finds.
                    log::debug!("watch on {owner}: {e}");
                    w.wake(id);
                }
            }
        }
        parked
    }

    /// Waits until some watched partition has news.
    pub async fn fired(&self) {
        std::future::poll_fn(|cx| {
            let mut w = self.waiter.borrow_mut();
            if w.fired {
                return Poll::Ready(());
            }
            w.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for ParkedFetch {
    fn drop(&mut self) {
        let shard = &self.shard;
        let me = shard.shard_id();
        shard.watches.parked.borrow_mut().remove(&self.id);
        for &owner in &self.owners {
            if owner == me {
                shard.watches.remove((me, self.id));
                continue;
            }
            // Always cancel, fired or not: a watch split over several frames may have had
            // some registered after it fired. One-way, so nothing waits for an answer.
            let frame = match Frame::encode_tagged(TAG_UNWATCH, &WatchRef { id: self.id }, None) {
                Ok(f) => f,
                Err(e) => {
                    log::error!("encoding unwatch: {e}");
                    continue;
                }
            };
            let mesh = shard.ctx.mesh().clone();
            let task = shard.ctx.spawn_fetch(async move {
                // A stopped owner dropped its watches with it.
                let _ = mesh.notify(owner, frame).await;
            });
            match task {
                Ok(t) => t.detach(),
                Err(e) => log::error!("cannot spawn unwatch: {e}"),
            }
        }
    }
}

/// Registers (on this, the owning shard) watch `id` of shard `origin` on `entries`; fires it
/// at once if one of them already has news.
pub fn register(
    shard: &Rc<BrokerShard>,
    origin: ShardId,
    id: u64,
    deadline_ms: i64,
    entries: &[WatchEntry],
) {
    let key = (origin, id);
    let w = &shard.watches;
    let mut news = false;
    for e in entries {
        let pk = PartitionKey {
            topic_id: e.topic_id,
            partition: e.partition,
        };
        let log = match shard.local_log(&pk) {
            Some(log) if log.failure().is_none() && visible_end(&log, e.committed) <= e.offset => {
                log
            }
            // Data, a failed log or a partition no longer here: the fetch's read says which.
            _ => {
                news = true;
                break;
            }
        };
        {
            let mut by_partition = w.by_partition.borrow_mut();
            by_partition.entry(pk).or_default().insert(
                key,
                Entry {
                    offset: e.offset,
                    deadline_ms,
                    committed: e.committed,
                },
            );
        }
        w.by_watch.borrow_mut().entry(key).or_default().push(pk);
        if w.watched.borrow_mut().insert(pk) {
            spawn_watcher(shard, pk, log);
        }
    }
    if news {
        fire(shard, key);
    }
}

/// Drops watch `id` of shard `origin` from this shard (its fetch is done).
pub fn cancel(shard: &BrokerShard, origin: ShardId, id: u64) {
    shard.watches.remove((origin, id));
}

/// Where a fetch's visible data ends: the high watermark, or for a read_committed fetch
/// the last stable offset.
fn visible_end(log: &PartitionLog<DmaStorage>, committed: bool) -> i64 {
    if committed {
        log.last_stable_offset()
    } else {
        log.high_watermark()
    }
}

/// Removes a watch from this shard and tells its fetch.
fn fire(shard: &Rc<BrokerShard>, key: WatchKey) {
    shard.watches.remove(key);
    let (origin, id) = key;
    if origin == shard.shard_id() {
        shard.watches.wake(id);
        return;
    }
    let frame = match Frame::encode_tagged(TAG_WATCH_FIRED, &WatchRef { id }, None) {
        Ok(f) => f,
        Err(e) => {
            log::error!("encoding watch fired: {e}");
            return;
        }
    };
    let mesh = shard.ctx.mesh().clone();
    // One task per fired watch (each fires once): the send may wait for room in the link.
    let task = shard.ctx.spawn_fetch(async move {
        let _ = mesh.notify(origin, frame).await;
    });
    match task {
        Ok(t) => t.detach(),
        Err(e) => log::error!("cannot spawn watch fired: {e}"),
    }
}

/// The task watching one partition: fires watches as its high watermark moves, and ends when
/// a move finds no watch left (or the log failed or left this shard).
fn spawn_watcher(shard: &Rc<BrokerShard>, pk: PartitionKey, log: Rc<PartitionLog<DmaStorage>>) {
    let me = shard.clone();
    let task = shard.ctx.spawn_fetch(async move {
        // The first pass checks before waiting: the high watermark may have moved between
        // the registration that spawned this task and the task's first run.
        let mut evaluated_at: Option<i64> = None;
        loop {
            if let Some(seen) = evaluated_at {
                log.wait_high_watermark_above(seen).await;
            }
            let gone = log.failure().is_some()
                || me
                    .local_log(&pk)
                    .is_none_or(|current| !Rc::ptr_eq(&current, &log));
            // The last stable offset moves only when the high watermark does (a marker is
            // an append; a transaction is decided once its marker is below the mark).
            let hw = log.high_watermark();
            let lso = log.last_stable_offset();
            let now = now_ms();
            let (due, expired): (Vec<WatchKey>, Vec<WatchKey>) = {
                let by_partition = me.watches.by_partition.borrow();
                match by_partition.get(&pk) {
                    Some(list) => (
                        list.iter()
                            .filter(|(_, e)| gone || e.offset < if e.committed { lso } else { hw })
                            .map(|(k, _)| *k)
                            .collect(),
                        list.iter()
                            .filter(|(_, e)| e.deadline_ms < now)
                            .map(|(k, _)| *k)
                            .collect(),
                    ),
                    None => (Vec::new(), Vec::new()),
                }
            };
            for key in due {
                fire(&me, key);
            }
            for key in expired {
                me.watches.remove(key);
            }
            let empty = !me.watches.by_partition.borrow().contains_key(&pk);
            if empty || gone {
                me.watches.watched.borrow_mut().remove(&pk);
                break;
            }
            evaluated_at = Some(hw);
        }
    });
    match task {
        Ok(t) => t.detach(),
        Err(e) => {
            // Without a watcher the fetch still ends at its deadline; it just hears no news.
            log::error!("cannot spawn partition watcher: {e}");
            shard.watches.watched.borrow_mut().remove(&pk);
        }
    }
}
