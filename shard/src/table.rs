//! `ShardTable`: which shard owns which partition, and the stable assignment rule behind it.
//!
//! Assignment is a pure function of `(topic_id, partition, shard_count)`: the topic id is hashed
//! with FNV-1a (fixed constants, so the result is identical across processes and restarts, unlike
//! std's randomly seeded `RandomState`), finished with murmur3's 64-bit mixer (FNV's low bits
//! depend only on the inputs' low bits, so `hash % small_n` alone clusters badly), to pick a
//! starting shard, and partitions go round-robin from there. A topic's partitions therefore spread evenly over all shards, and different
//! topics start at different shards so partition 0 of every topic does not pile onto shard 0.

use std::collections::HashMap;

use crate::error::ShardError;

/// Index of a shard, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The id as an index into per-shard vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// Most shards a runtime may have; `ShardId` is a `u16`, and a full mesh grows with the square.
pub const SHARDS_MAX: usize = 1024;

/// Default cap on the number of partitions one table tracks.
pub const PARTITIONS_MAX_DEFAULT: usize = 1 << 20;

/// A partition, named by its topic's UUID bytes and its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic_id: [u8; 16],
    pub partition: i32,
}

/// 64-bit FNV-1a. Written out here because the assignment must never change between builds.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET_BASIS;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

/// murmur3's `fmix64`: spreads every input bit over the low bits that `% shard_count` keeps.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Stable 64-bit hash of a topic id: the start of its round-robin.
pub fn topic_hash(topic_id: &[u8; 16]) -> u64 {
    fmix64(fnv1a64(topic_id))
}

/// The shard that owns `partition` of `topic_id` when there are `shard_count` shards.
///
/// Pure and stable: the same inputs give the same shard on every run and every machine.
pub fn assign(
    topic_id: &[u8; 16],
    partition: i32,
    shard_count: usize,
) -> Result<ShardId, ShardError> {
    if shard_count == 0 || shard_count > SHARDS_MAX {
        return Err(ShardError::Config {
            field: "shard_count",
            reason: format!("{shard_count} is outside 1..={SHARDS_MAX}"),
        });
    }
    if partition < 0 {
        return Err(ShardError::BadPartition { partition });
    }
    let n = shard_count as u64;
    let start = topic_hash(topic_id) % n;
    // Both terms are < 2^32 after the reduction, so the sum cannot overflow a u64.
    let shard = (start + (partition as u64 % n)) % n;
    Ok(ShardId(shard as u16))
}

/// Partition → owning shard map.
///
/// Every shard holds its own copy (owned by that shard; it is plain data and `Send`, but is
/// never shared): lookups take no lock. The broker changes all copies by broadcasting the
/// change over the mesh and each shard applying it to its own table.
#[derive(Debug, Clone)]
pub struct ShardTable {
    shard_count: usize,
    partitions_max: usize,
    owners: HashMap<PartitionKey, ShardId>,
}

impl ShardTable {
    /// An empty table for `shard_count` shards holding at most `partitions_max` partitions.
    pub fn new(shard_count: usize, partitions_max: usize) -> Result<ShardTable, ShardError> {
        if shard_count == 0 || shard_count > SHARDS_MAX {
            return Err(ShardError::Config {
                field: "shard_count",
                reason: format!("{shard_count} is outside 1..={SHARDS_MAX}"),
            });
        }
        Ok(ShardTable {
            shard_count,
            partitions_max,
            owners: HashMap::new(),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn partitions_max(&self) -> usize {
        self.partitions_max
    }

    /// Records that `shard` owns `key`, returning the previous owner.
    ///
    /// Explicit placement exists for moves decided elsewhere (rebalancing, operator action);
    /// new partitions normally go through [`ShardTable::insert_assigned`].
    pub fn insert(
        &mut self,
        key: PartitionKey,
        shard: ShardId,
    ) -> Result<Option<ShardId>, ShardError> {
        if shard.index() >= self.shard_count {
            return Err(ShardError::NoSuchShard {
                shard,
                shard_count: self.shard_count,
            });
        }
        if key.partition < 0 {
            return Err(ShardError::BadPartition {
                partition: key.partition,
            });
        }
        if !self.owners.contains_key(&key) && self.owners.len() >= self.partitions_max {
            return Err(ShardError::TableFull {
                partitions_max: self.partitions_max,
            });
        }
        Ok(self.owners.insert(key, shard))
    }

    /// Places `key` on the shard [`assign`] picks and returns that shard.
    pub fn insert_assigned(&mut self, key: PartitionKey) -> Result<ShardId, ShardError> {
        let shard = assign(&key.topic_id, key.partition, self.shard_count)?;
        self.insert(key, shard)?;
        Ok(shard)
    }

    /// Forgets `key`, returning its owner if it was known.
    pub fn remove(&mut self, key: &PartitionKey) -> Option<ShardId> {
        self.owners.remove(key)
    }

    /// Forgets every partition of a topic (topic deletion); returns how many were removed.
    pub fn remove_topic(&mut self, topic_id: &[u8; 16]) -> usize {
        let before = self.owners.len();
        self.owners.retain(|k, _| &k.topic_id != topic_id);
        before - self.owners.len()
    }

    /// The owner of `key`, if the table knows the partition.
    pub fn lookup(&self, key: &PartitionKey) -> Option<ShardId> {
        self.owners.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// Every known partition and its owner, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&PartitionKey, ShardId)> {
        self.owners.iter().map(|(k, s)| (k, *s))
    }

    /// The partitions `shard` owns, in no particular order.
    pub fn owned_by(&self, shard: ShardId) -> impl Iterator<Item = &PartitionKey> {
        self.owners
            .iter()
            .filter(move |(_, s)| **s == shard)
            .map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u8) -> [u8; 16] {
        let mut id = [0u8; 16];
        id[0] = n;
        id[15] = n.wrapping_mul(31);
        id
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a 64 test vectors; if these move, every assignment moves.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_topic_spreads_evenly() {
        for shards in 1..=9usize {
            for t in 0..20u8 {
                let mut counts = vec![0usize; shards];
                let partitions = 3 * shards + 1;
                for p in 0..partitions as i32 {
                    counts[assign(&topic(t), p, shards).unwrap().index()] += 1;
                }
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(max - min <= 1, "shards {shards} topic {t}: {counts:?}");
            }
        }
    }

    #[test]
    fn many_single_partition_topics_spread() {
        let shards = 4;
        let mut counts = vec![0usize; shards];
        for t in 0..=255u8 {
            counts[assign(&topic(t), 0, shards).unwrap().index()] += 1;
        }
        // 256 topics over 4 shards: each shard should get a fair share, not all of them.
        for c in &counts {
            assert!(*c > 32, "{counts:?}");
        }
    }

    // topic_hash(b"0123456789abcdef"), recorded when the rule was set; it must never change.
    const PINNED_HASH: u64 = 11_521_655_711_262_432_966;

    #[test]
    fn assignment_is_deterministic() {
        // Pinned values: a change here means partitions would move on upgrade.
        let id = *b"0123456789abcdef";
        let got: Vec<u16> = (0..8).map(|p| assign(&id, p, 3).unwrap().0).collect();
        let start = (topic_hash(&id) % 3) as u16;
        let want: Vec<u16> = (0..8).map(|p| (start + p) % 3).collect();
        assert_eq!(got, want);
        assert_eq!(topic_hash(&id), PINNED_HASH);
        assert_eq!(assign(&id, 5, 7).unwrap(), assign(&id, 5, 7).unwrap());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(matches!(
            assign(&topic(1), -1, 2),
            Err(ShardError::BadPartition { .. })
        ));
        assert!(matches!(
            assign(&topic(1), 0, 0),
            Err(ShardError::Config { .. })
        ));
        assert!(assign(&topic(1), i32::MAX, SHARDS_MAX).is_ok());
        assert!(ShardTable::new(0, 10).is_err());
    }

    #[test]
    fn table_insert_lookup_remove() {
        let mut t = ShardTable::new(2, 3).unwrap();
        let k = |p| PartitionKey {
            topic_id: topic(9),
            partition: p,
        };
        let s0 = t.insert_assigned(k(0)).unwrap();
        assert_eq!(t.lookup(&k(0)), Some(s0));
        assert_eq!(t.insert(k(1), ShardId(1)).unwrap(), None);
        assert!(matches!(
            t.insert(k(2), ShardId(2)),
            Err(ShardError::NoSuchShard { .. })
        ));
        t.insert(k(2), ShardId(0)).unwrap();
        assert!(matches!(
            t.insert(k(3), ShardId(0)),
            Err(ShardError::TableFull { .. })
        ));
        // Re-placing a known partition is not growth.
        assert_eq!(t.insert(k(2), ShardId(1)).unwrap(), Some(ShardId(0)));
        assert_eq!(
            t.owned_by(ShardId(1)).count() + t.owned_by(ShardId(0)).count(),
            3
        );
        assert_eq!(t.remove(&k(1)), Some(ShardId(1)));
        assert_eq!(t.lookup(&k(1)), None);
        assert_eq!(t.remove_topic(&topic(9)), 2);
        assert!(t.is_empty());
    }
}
