//! Per-shard cache of recently appended batches so tailing consumers are served from
//! memory. Bounded by bytes (`batch_cache_bytes_max`); evicts oldest-inserted first.

use std::collections::{BTreeMap, VecDeque};

use bytes::{Bytes, BytesMut};

/// Default memory budget of one shard's batch cache.
pub const BATCH_CACHE_BYTES_DEFAULT: usize = 256 * 1024 * 1024;

/// Recent batches of every partition on one shard. Owned by that shard (!Send by use).
#[derive(Debug)]
pub struct BatchCache {
    bytes_max: usize,
    bytes: usize,
    /// (log id, base offset) → (last offset, batch bytes)
    batches: BTreeMap<(u64, i64), (i64, Bytes)>,
    order: VecDeque<(u64, i64)>,
}

impl BatchCache {
    pub fn new(bytes_max: usize) -> BatchCache {
        BatchCache {
            bytes_max,
            bytes: 0,
            batches: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn insert(&mut self, log: u64, base_offset: i64, last_offset: i64, batch: Bytes) {
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
        let (&(_, base), &(last, ref first)) = self
            .batches
            .range((log, i64::MIN)..=(log, offset))
            .next_back()?;
        if last < offset || base >= upper {
            return None;
        }
        let mut parts: Vec<&Bytes> = vec![first];
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
        if parts.len() == 1 {
            return Some(first.clone());
        }
        let mut out = BytesMut::with_capacity(total);
        for p in parts {
            out.extend_from_slice(p);
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
        c.insert(1, 0, 4, Bytes::from(vec![0u8; 40]));
        c.insert(1, 5, 9, Bytes::from(vec![1u8; 40]));
        assert_eq!(c.read(1, 3, 10, 1000).unwrap().len(), 80);
        assert_eq!(c.read(1, 3, 5, 1000).unwrap().len(), 40);
        assert_eq!(c.read(1, 7, 10, 10).unwrap().len(), 40);
        assert!(c.read(2, 0, 10, 100).is_none());
        c.insert(1, 10, 14, Bytes::from(vec![2u8; 40]));
        assert!(c.bytes() <= 100);
        assert!(c.read(1, 0, 20, 1000).is_none());
        c.forget(1, 10);
        assert!(c.read(1, 10, 20, 1000).is_none());
    }
}
