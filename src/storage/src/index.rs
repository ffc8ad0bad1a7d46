//! Sparse per-segment indexes: offset → file position and timestamp → offset, kept in
//! memory and written beside the segment when it is rolled.

/// One entry every `index.interval.bytes`; offsets relative to the segment base.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub fn push(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(o, p)| o < relative_offset && p < position));
        self.entries.push((relative_offset, position));
    }

    /// Position of the last indexed batch starting at or before `relative_offset` (0 if none).
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        match self.entries.partition_point(|&(o, _)| o <= relative_offset) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries, (relative offset, position), in order.
    pub fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Parses an encoded index; `None` unless entries are strictly increasing and below `size`.
    pub fn decode(body: &[u8], segment_size: u64) -> Option<OffsetIndex> {
        if !body.len().is_multiple_of(8) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for e in body.chunks_exact(8) {
            let o = u32::from_be_bytes(e[..4].try_into().ok()?);
            let p = u32::from_be_bytes(e[4..].try_into().ok()?);
            if p as u64 >= segment_size
                || index
                    .entries
                    .last()
                    .is_some_and(|&(lo, lp)| lo >= o || lp >= p)
            {
                return None;
            }
            index.entries.push((o, p));
        }
        Some(index)
    }
}

/// Entries (largest timestamp so far, relative offset of the batch that first reached it).
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry when `timestamp` is newer than every earlier one.
    pub fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        if self.entries.last().is_none_or(|&(t, _)| timestamp > t) {
            self.entries.push((timestamp, relative_offset));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries, (timestamp, relative offset), in order.
    pub fn entries(&self) -> &[(i64, u32)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Relative offset to start scanning from for the first batch with timestamp >= `target`.
    pub fn lookup(&self, target: i64) -> u32 {
        match self.entries.partition_point(|&(t, _)| t < target) {
            0 => 0,
            i => self.entries[i - 1].1,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    pub fn decode(body: &[u8]) -> Option<TimeIndex> {
        if !body.len().is_multiple_of(12) {
            return None;
        }
        let mut index = TimeIndex::default();
        for e in body.chunks_exact(12) {
            let t = i64::from_be_bytes(e[..8].try_into().ok()?);
            let o = u32::from_be_bytes(e[8..].try_into().ok()?);
            if index
                .entries
                .last()
                .is_some_and(|&(lt, lo)| lt >= t || lo > o)
            {
                return None;
            }
            index.entries.push((t, o));
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_floor() {
        let mut i = OffsetIndex::default();
        assert_eq!(i.lookup(5), 0);
        i.push(10, 4096);
        i.push(20, 8192);
        assert_eq!(i.lookup(9), 0);
        assert_eq!(i.lookup(10), 4096);
        assert_eq!(i.lookup(19), 4096);
        assert_eq!(i.lookup(1000), 8192);
        assert_eq!(OffsetIndex::decode(&i.encode(), 10_000), Some(i.clone()));
        assert_eq!(OffsetIndex::decode(&i.encode(), 5000), None);
    }

    #[test]
    fn time_lookup() {
        let mut t = TimeIndex::default();
        t.maybe_push(100, 0);
        t.maybe_push(90, 1);
        t.maybe_push(200, 5);
        assert_eq!(t.lookup(50), 0);
        assert_eq!(t.lookup(150), 0);
        assert_eq!(t.lookup(201), 5);
        assert_eq!(TimeIndex::decode(&t.encode()), Some(t));
    }
}
