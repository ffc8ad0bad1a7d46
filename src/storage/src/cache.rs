//! Per-shard cache of recently appended batches so tailing consumers are served from
//! memory. Bounded by bytes (`batch_cache_bytes_max`); evicts oldest-inserted first.
//!
//! A batch is kept either as stored (a copy of the log's bytes) or, to spare that copy on
//! the produce path, as the producer's own bytes (a slice of the request) plus the two
//! header fields the log rewrote, which a read patches into its output. A read copies
//! whenever it must join batches or patch one, and shares the bytes otherwise.
//!
//! The budget counts batch bytes, but a shared slice keeps its whole request buffer alive.
//! So the produce path shares a request only when the batches the cache may keep make up at
//! least half of it ([`RequestSharing`]): then the cache retains at most about twice what it
//! counts (requests are evicted together, as their batches were inserted together), plus the
//! allocator's slack around the request. A request that is mostly something else (padding,
//! tagged fields, batches too large to cache or refused) has its small batches copied out
//! (`Bytes::copy_from_slice`, at most `CACHE_BATCH_BYTES_MAX` each), so a 100-byte batch can
//! never pin a 100 MiB request. Copying always would cost a second copy of every produced
//! byte; sharing always would let retained memory exceed the budget without bound.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use crate::hdr;
use crate::log::ReadAheadBudget;

/// One cached batch.
#[derive(Clone, Debug)]
pub struct CachedBatch {
    bytes: Bytes,
    /// `Some((base offset, leader epoch))` when `bytes` are the producer's and these still
    /// have to be written into the header; `None` when `bytes` are exactly what was stored.
    patch: Option<(i64, i32)>,
}

impl CachedBatch {
    /// The batch exactly as the log stored it.
    pub fn stored(bytes: Bytes) -> CachedBatch {
        CachedBatch { bytes, patch: None }
    }

    /// The producer's batch, whose stored form differs only in its base offset and
    /// partition leader epoch (both outside the CRC).
    pub fn shared(bytes: Bytes, base_offset: i64, leader_epoch: i32) -> CachedBatch {
        CachedBatch {
            bytes,
            patch: Some((base_offset, leader_epoch)),
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Whether the batches of one produce request may be cached as slices of it (see the module
/// header): decided once per request from its length and its batches' lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestSharing {
    share: bool,
}

impl RequestSharing {
    /// For a request of `request_len` bytes carrying batches of `batch_lens` bytes.
    pub fn new(request_len: usize, batch_lens: impl IntoIterator<Item = usize>) -> Self {
        let cacheable: usize = batch_lens
            .into_iter()
            .filter(|&l| l <= crate::log::CACHE_BATCH_BYTES_MAX)
            .fold(0, usize::saturating_add);
        RequestSharing {
            share: cacheable.saturating_mul(2) >= request_len,
        }
    }

    /// Whether the request's batches are shared.
    pub fn shares(&self) -> bool {
        self.share
    }

    /// The bytes to append for `batch` (a slice of the request): itself when the request is
    /// shared or the batch is too large to be cached, otherwise a copy of just the batch.
    pub fn batch(&self, batch: Bytes) -> Bytes {
        if self.share || batch.len() > crate::log::CACHE_BATCH_BYTES_MAX {
            batch
        } else {
            Bytes::copy_from_slice(&batch)
        }
    }
}

/// Default memory budget of one shard's batch cache.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 256 * 1024 * 1024;

/// Recent batches of every partition on one shard. Owned by that shard (!Send by use).
/// It also carries the shard's budget for its logs' read-ahead windows, which hold the
/// older bytes that consumers read from disk.
#[derive(Debug)]
pub struct BatchCache {
    bytes_max: usize,
    read_ahead: Rc<ReadAheadBudget>,
    bytes: usize,
    /// (log id, base offset) → (last offset, batch)
    batches: BTreeMap<(u64, i64), (i64, CachedBatch)>,
    order: VecDeque<(u64, i64)>,
    /// Reads served (for metrics).
    hits: Cell<u64>,
    /// Reads not served: the caller reads the log instead.
    misses: Cell<u64>,
}

impl BatchCache {
    /// A cache of `bytes_max` whose shard may hold half that again in read-ahead windows.
    pub fn new(bytes_max: usize) -> BatchCache {
        Self::with_read_ahead(bytes_max, bytes_max / 2)
    }

    pub fn with_read_ahead(bytes_max: usize, read_ahead_bytes_max: usize) -> BatchCache {
        BatchCache {
            bytes_max,
            read_ahead: ReadAheadBudget::new(read_ahead_bytes_max),
            bytes: 0,
            batches: BTreeMap::new(),
            order: VecDeque::new(),
            hits: Cell::new(0),
            misses: Cell::new(0),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The shard's read-ahead budget, shared by its logs (see `crate::log::read_ahead`).
    pub fn read_ahead_budget(&self) -> &Rc<ReadAheadBudget> {
        &self.read_ahead
    }

    /// Reads served from the cache and reads it could not serve, since it was made.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.get(), self.misses.get())
    }

    pub fn insert(&mut self, log: u64, base_offset: i64, last_offset: i64, batch: CachedBatch) {
        if batch.len() > self.bytes_max {
            return;
        }
        while self.bytes + batch.len() > self.bytes_max {
            let Some(key) = self.order.pop_front() else {
                break;
            };
            if let Some((_, b)) = self.batches.remove(&key) {
                self.bytes -= b.len();
            }
        }
        self.bytes += batch.len();
        if let Some((_, old)) = self
            .batches
            .insert((log, base_offset), (last_offset, batch))
        {
            self.bytes -= old.len();
        } else {
            self.order.push_back((log, base_offset));
        }
    }

    /// Whole batches from the one holding `offset` onward, below `upper` (exclusive), up to
    /// `max_bytes` (the first batch always). `None` when the batch holding `offset` is not cached.
    pub fn read(&self, log: u64, offset: i64, upper: i64, max_bytes: usize) -> Option<Bytes> {
        let found = self.lookup(log, offset, upper, max_bytes);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.set(counter.get() + 1);
        found
    }

    fn lookup(&self, log: u64, offset: i64, upper: i64, max_bytes: usize) -> Option<Bytes> {
        let (&(_, base), &(last, ref first)) = self
            .batches
            .range((log, i64::MIN)..=(log, offset))
            .next_back()?;
        if last < offset || base >= upper {
            return None;
        }
        let mut parts: Vec<&CachedBatch> = vec![first];
        let mut total = first.len();
        let mut next = last + 1;
        while next < upper {
            match self.batches.get(&(log, next)) {
                Some((l, b)) if total + b.len() <= max_bytes => {
                    parts.push(b);
                    total += b.len();
                    next = l + 1;
                }
                _ => break,
            }
        }
        if let [CachedBatch { bytes, patch: None }] = parts[..] {
            return Some(bytes.clone());
        }
        let mut out = BytesMut::with_capacity(total);
        for p in parts {
            let at = out.len();
            out.extend_from_slice(&p.bytes);
            if let Some((base_offset, leader_epoch)) = p.patch {
                hdr::set_offset_and_epoch(&mut out[at..], base_offset, leader_epoch);
            }
        }
        Some(out.freeze())
    }

    /// Drops every batch of `log` at or after `from` (truncation) or all of it.
    pub fn forget(&mut self, log: u64, from: i64) {
        let keys: Vec<_> = self
            .batches
            .range((log, from)..=(log, i64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some((_, b)) = self.batches.remove(&k) {
                self.bytes -= b.len();
            }
        }
        // `order` keeps stale keys; eviction skips them.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_contiguous() {
        let mut c = BatchCache::new(100);
        let stored = |fill: u8| CachedBatch::stored(Bytes::from(vec![fill; 40]));
        c.insert(1, 0, 4, stored(0));
        c.insert(1, 5, 9, stored(1));
        assert_eq!(c.read(1, 3, 10, 1000).unwrap().len(), 80);
        assert_eq!(c.read(1, 3, 5, 1000).unwrap().len(), 40);
        assert_eq!(c.read(1, 7, 10, 10).unwrap().len(), 40);
        assert!(c.read(2, 0, 10, 100).is_none());
        c.insert(1, 10, 14, stored(2));
        assert!(c.bytes() <= 100);
        assert!(c.read(1, 0, 20, 1000).is_none());
        c.forget(1, 10);
        assert!(c.read(1, 10, 20, 1000).is_none());
    }

    /// A produce request with one small batch among large padding: the cache keeps a copy
    /// of the batch, not a slice that would keep the padding alive.
    #[test]
    fn a_small_batch_in_a_large_request_does_not_retain_the_request() {
        let batch = hdr::testing::batch(1, b"small", 1_000, -1, -1);
        let mut request = vec![0u8; 1 << 20];
        let at = request.len() - batch.len();
        request[at..].copy_from_slice(&batch);
        let request = Bytes::from(request);
        let inside = |b: &Bytes| request.as_ptr_range().contains(&b.as_ptr());

        let sharing = RequestSharing::new(request.len(), [batch.len()]);
        assert!(!sharing.shares());
        let kept = sharing.batch(request.slice(at..));
        assert_eq!(&kept[..], &batch[..]);
        assert!(!inside(&kept), "a copy of just the batch");
        let mut c = BatchCache::new(1 << 20);
        c.insert(1, 0, 0, CachedBatch::shared(kept, 0, 0));
        let cached = &c.batches[&(1, 0)].1.bytes;
        assert!(!inside(cached));
        assert_eq!(c.bytes(), batch.len());

        // A request that is at least half batches is shared, not copied.
        assert!(!RequestSharing::new(2 * batch.len() + 1, [batch.len()]).shares());
        let sharing = RequestSharing::new(2 * batch.len(), [batch.len()]);
        assert!(sharing.shares());
        let whole = Bytes::from(batch.clone());
        assert_eq!(sharing.batch(whole.clone()).as_ptr(), whole.as_ptr());
        // A batch too large to be cached is never copied here (the log copies it once).
        let big = crate::log::CACHE_BATCH_BYTES_MAX + 1;
        let sharing = RequestSharing::new(10 * big, [big]);
        let large = Bytes::from(vec![0u8; big]);
        assert_eq!(sharing.batch(large.clone()).as_ptr(), large.as_ptr());
    }

    #[test]
    fn shared_batches_read_with_the_stored_offset_and_epoch() {
        let produced = Bytes::from(hdr::testing::batch(3, b"v", 1_000, -1, -1));
        let mut stored = produced.to_vec();
        hdr::set_offset_and_epoch(&mut stored, 7, 2);
        let mut c = BatchCache::new(1 << 20);
        c.insert(1, 7, 9, CachedBatch::shared(produced.clone(), 7, 2));
        // Alone: patched (a copy).
        assert_eq!(&c.read(1, 7, 10, 1 << 20).unwrap()[..], &stored[..]);
        // Joined with a stored batch: both as stored, in order.
        let mut next = produced.to_vec();
        hdr::set_offset_and_epoch(&mut next, 10, 2);
        c.insert(1, 10, 12, CachedBatch::stored(Bytes::from(next.clone())));
        let both = c.read(1, 8, 13, 1 << 20).unwrap();
        assert_eq!(&both[..stored.len()], &stored[..]);
        assert_eq!(&both[stored.len()..], &next[..]);
        // The producer's bytes are untouched.
        assert_eq!(hdr::Header::parse(&produced).unwrap().base_offset, 0);
        // A stored batch alone is shared, not copied.
        let alone = c.read(1, 10, 13, 1 << 20).unwrap();
        assert_eq!(alone.as_ptr(), c.batches[&(1, 10)].1.bytes.as_ptr());
    }
}
