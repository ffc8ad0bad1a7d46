//! Sequential read-ahead of a partition log's segment files, for consumers and followers
//! that read from disk (a catch-up, a replay, a new group): while they use one window of
//! the segment, the next is already being read.
//!
//! Reads are O_DIRECT, so nothing below the log reads ahead for it (Kafka has the page
//! cache do it). A read that starts where the log's last disk read ended is sequential;
//! from then on the log keeps [`READ_AHEAD_DEPTH`] windows of [`READ_AHEAD_WINDOW_BYTES`]
//! (or of what the reader asks for, if more) in flight past the bytes it holds, and a read that reaches the end of what is held takes
//! the next window (read, or still in flight) instead of asking the disk and waiting. A
//! read elsewhere leaves the windows to the reader they serve (two consumers of one
//! partition at different offsets: one of them is read ahead for).
//!
//! Invariants:
//! - A window holds bytes of one segment file (the same handle: a cleaning pass's new file
//!   is another), below that segment's durable size when it was issued. Such bytes change
//!   only when the log is truncated or rewritten, and every such change (and a close)
//!   drops the windows with the batch cache's entries (`PartitionLog::forget_cached`);
//!   deleting segments drops them too, so no window keeps a deleted file open.
//! - A reader that leaves the disk (served by the batch cache from where its last disk read
//!   ended, or at the high watermark) gives its windows back; one that stops reading keeps
//!   them until the log's bytes change or it closes (at most depth + 1 windows).
//! - Every byte held or in flight is counted against the shard's [`ReadAheadBudget`] and
//!   given back when dropped; with the budget spent, reads go to the disk as they come.
//! - Read-ahead only moves where bytes come from: readers still parse each batch and stop
//!   at the high watermark and the durable size, as they do on a direct read.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::hdr::{Header, HEADER_BYTES};
use crate::io::StorageFile;

/// Size of one read-ahead window, or of what a reader asks for if that is more: a
/// consumer's fetch of one partition (Kafka clients ask for 1 MiB). Larger windows measured slower on the test VM (4 MiB: 30 % below 1 MiB, the cost
/// of faulting in fresh large buffers); smaller ones need more requests for the same bytes.
pub const READ_AHEAD_WINDOW_BYTES: usize = 1024 * 1024;

/// How far each window reaches back into the one before it: a batch up to this size that
/// runs past a window's end is whole in the next, and a read served from windows ends where
/// its window ends, so an answer is one slice of one window (no copy). Larger batches across
/// a window's end are copied together from their two parts.
pub const READ_AHEAD_OVERLAP_BYTES: usize = 128 * 1024;

/// Largest window, whatever a reader asks for (as a read's chunks are capped).
const WINDOW_BYTES_MAX: usize = super::READ_CHUNK_BYTES_MAX;

/// Windows a sequential reader keeps in flight.
pub const READ_AHEAD_DEPTH: usize = 2;

/// Bytes one shard's read-ahead windows may hold, read or in flight.
#[derive(Debug)]
pub struct ReadAheadBudget {
    bytes_max: usize,
    /// Size of each window ([`READ_AHEAD_WINDOW_BYTES`] unless set otherwise).
    window_bytes: Cell<usize>,
    /// Windows a reader keeps in flight ([`READ_AHEAD_DEPTH`] unless set otherwise).
    depth: Cell<usize>,
    used: Cell<usize>,
    /// Windows issued, and reads (or parts of reads) served from a window, since made.
    windows: Cell<u64>,
    served: Cell<u64>,
}

impl ReadAheadBudget {
    pub fn new(bytes_max: usize) -> Rc<ReadAheadBudget> {
        Rc::new(ReadAheadBudget {
            bytes_max,
            window_bytes: Cell::new(READ_AHEAD_WINDOW_BYTES),
            depth: Cell::new(READ_AHEAD_DEPTH),
            used: Cell::new(0),
            windows: Cell::new(0),
            served: Cell::new(0),
        })
    }

    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    pub fn window_bytes(&self) -> usize {
        self.window_bytes.get()
    }

    /// Sets the size of the windows issued from now on (at least one page).
    pub fn set_window_bytes(&self, bytes: usize) {
        self.window_bytes.set(bytes.max(crate::io::PAGE_SIZE));
    }

    pub fn depth(&self) -> usize {
        self.depth.get()
    }

    /// Sets how many windows a reader keeps in flight from now on (at least one).
    pub fn set_depth(&self, depth: usize) {
        self.depth.set(depth.max(1));
    }

    /// Bytes held or in flight now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Windows issued and chunks served from windows, since the budget was made.
    pub fn windows_and_served(&self) -> (u64, u64) {
        (self.windows.get(), self.served.get())
    }

    /// A read (or part of one) took its bytes from a window.
    pub(super) fn count_served(&self) {
        self.served.set(self.served.get() + 1);
    }

    fn take(self: &Rc<Self>, bytes: usize) -> Option<Grant> {
        let used = self.used.get().checked_add(bytes)?;
        if used > self.bytes_max {
            return None;
        }
        self.used.set(used);
        Some(Grant {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes taken from a [`ReadAheadBudget`], given back on drop.
#[derive(Debug)]
struct Grant {
    budget: Rc<ReadAheadBudget>,
    bytes: usize,
}

impl Drop for Grant {
    fn drop(&mut self) {
        let used = self.budget.used.get();
        debug_assert!(used >= self.bytes, "read-ahead budget underflow");
        self.budget.used.set(used.saturating_sub(self.bytes));
    }
}

type Pending = Pin<Box<dyn Future<Output = io::Result<Bytes>>>>;

/// A window being read: file positions `[pos, end)`.
struct Next {
    pos: u64,
    end: u64,
    read: Pending,
    grant: Grant,
}

/// One log's read-ahead: the bytes of a window already read, and the windows in flight.
pub(super) struct ReadAhead<F> {
    /// The segment (its base offset) and the file handle the windows read.
    base: i64,
    file: Rc<F>,
    /// File positions `[start, start + data.len())`.
    start: u64,
    data: Bytes,
    data_grant: Option<Grant>,
    /// Windows in flight, in file order, each starting where the one before ends.
    next: VecDeque<Next>,
}

impl<F: StorageFile> ReadAhead<F> {
    pub(super) fn new(base: i64, file: Rc<F>) -> ReadAhead<F> {
        ReadAhead {
            base,
            file,
            start: 0,
            data: Bytes::new(),
            data_grant: None,
            next: VecDeque::new(),
        }
    }

    /// Nothing held and nothing in flight.
    pub(super) fn is_idle(&self) -> bool {
        self.data.is_empty() && self.next.is_empty()
    }

    fn holds(&self, pos: u64) -> bool {
        pos >= self.start && pos - self.start < self.data.len() as u64
    }

    fn data_end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// Whether the first window in flight holds `pos`.
    fn next_covers(&self, pos: u64) -> bool {
        self.next
            .front()
            .is_some_and(|n| n.pos <= pos && pos < n.end)
    }

    /// Whether a read at `pos` of segment `base` (through `file`) continues this reader's
    /// scan: its bytes are held or in the first window in flight.
    pub(super) fn serves(&self, base: i64, file: &Rc<F>, pos: u64) -> bool {
        self.base == base
            && Rc::ptr_eq(&self.file, file)
            && (self.holds(pos) || self.next_covers(pos))
    }

    /// The bytes from `pos` on, from the window held or the next one (read, or awaited while
    /// in flight), with the length of the whole buffer they share; `None` if neither covers
    /// `pos`. Windows overlap by [`READ_AHEAD_OVERLAP_BYTES`], so a batch that runs past the
    /// end of one is whole in the next (up to that size); a larger one comes alone, as a copy
    /// of its two parts. Once the next window is taken, it is the one held.
    pub(super) async fn chunk_at(&mut self, pos: u64) -> Option<io::Result<(Bytes, usize)>> {
        if self.holds(pos) {
            let rest = self.data.slice((pos - self.start) as usize..);
            let whole = Header::parse(&rest).is_some_and(|h| h.size <= rest.len());
            let old_end = self.data_end();
            if whole || !self.next_covers(old_end) {
                // A whole batch, or nothing in flight to finish it with: the caller reads
                // the rest of a straddling batch from the file itself.
                return Some(Ok((rest, self.data.len())));
            }
            if let Err(e) = self.take_next().await? {
                return Some(Err(e));
            }
            if self.holds(pos) {
                let from_pos = self.data.slice((pos - self.start) as usize..);
                return Some(Ok((from_pos, self.data.len())));
            }
            // The batch began before the overlap: join its two parts.
            let following = self.data.slice((old_end - self.start) as usize..);
            let mut joined = rest.to_vec();
            let take = HEADER_BYTES
                .saturating_sub(joined.len())
                .min(following.len());
            joined.extend_from_slice(&following[..take]);
            let Some(h) = Header::parse(&joined) else {
                // Not a batch header: the caller finds it corrupt.
                return Some(Ok((rest.clone(), rest.len())));
            };
            let need = h.size.saturating_sub(rest.len());
            if need > following.len() {
                // Larger than the next window: the caller reads it whole from the file.
                return None;
            }
            joined.truncate(rest.len());
            joined.extend_from_slice(&following[..need]);
            let len = joined.len();
            return Some(Ok((Bytes::from(joined), len)));
        }
        if !self.next_covers(pos) {
            return None;
        }
        if let Err(e) = self.take_next().await? {
            return Some(Err(e));
        }
        if !self.holds(pos) {
            // The window came back short (the end of the file).
            return None;
        }
        let rest = self.data.slice((pos - self.start) as usize..);
        Some(Ok((rest, self.data.len())))
    }

    /// Awaits the first window in flight and holds it instead of what was held; `None` at
    /// the end of the file (nothing read).
    async fn take_next(&mut self) -> Option<io::Result<()>> {
        let Next {
            pos, read, grant, ..
        } = self.next.pop_front()?;
        self.data = Bytes::new();
        self.data_grant = None;
        match read.await {
            Ok(bytes) if !bytes.is_empty() => {
                self.start = pos;
                self.data = bytes;
                // The window's bytes stay counted while they are held.
                self.data_grant = Some(grant);
                Some(Ok(()))
            }
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    }

    /// Keeps the budget's depth of windows in flight after what is held (or from `pos` when
    /// nothing held or in flight covers it), up to `end` (the segment's durable size), as far
    /// as the budget allows. Each window begins [`READ_AHEAD_OVERLAP_BYTES`] before the end
    /// of the one before it, so a batch across that end is whole in it. Each read is
    /// submitted now (polled once) so the disk works on it while the reader handles what it
    /// has.
    pub(super) fn issue(&mut self, budget: &Rc<ReadAheadBudget>, pos: u64, end: u64, want: usize) {
        // A window holds at least one read's answer (a reader asking 2 MiB gets 2 MiB
        // windows), so an answer never needs two.
        let window = budget.window_bytes().max(want).min(WINDOW_BYTES_MAX) as u64;
        if !self.holds(pos) && !self.next_covers(pos) {
            // Everything held or in flight is behind (or away from) the reader: give it back.
            self.data = Bytes::new();
            self.data_grant = None;
            self.next.clear();
        }
        let overlapped = |start: u64, stop: u64, floor: u64| {
            if stop - start > 2 * READ_AHEAD_OVERLAP_BYTES as u64 {
                (stop - READ_AHEAD_OVERLAP_BYTES as u64).max(floor)
            } else {
                stop
            }
        };
        while self.next.len() < budget.depth() {
            let (from, covered) = match self.next.back() {
                Some(n) => (overlapped(n.pos, n.end, n.pos), n.end),
                None if self.holds(pos) => {
                    let stop = self.data_end();
                    (overlapped(self.start, stop, pos), stop)
                }
                None => (pos, pos),
            };
            let len = end.saturating_sub(from).min(window) as usize;
            if from + len as u64 <= covered {
                // Nothing past what is held or in flight (the segment's durable end).
                return;
            }
            let Some(grant) = budget.take(len) else {
                return;
            };
            budget.windows.set(budget.windows.get() + 1);
            let file = self.file.clone();
            let mut read: Pending = Box::pin(async move { file.read_at(from, len).await });
            // Poll once so the read is submitted (an io_uring read is queued on its first
            // poll); the real waker is registered when a reader awaits it.
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(done) = read.as_mut().poll(&mut cx) {
                read = Box::pin(std::future::ready(done));
            }
            self.next.push_back(Next {
                pos: from,
                end: from + len as u64,
                read,
                grant,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_given_back_when_windows_drop() {
        let budget = ReadAheadBudget::new(10);
        let a = budget.take(6).expect("fits");
        assert!(budget.take(5).is_none(), "over the budget");
        let b = budget.take(4).expect("fits exactly");
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 4);
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(budget.take(usize::MAX).is_none());
    }
}
