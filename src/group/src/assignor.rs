//! Server-side partition assignors of KIP-848 consumer groups: `uniform` (the default, like
//! Kafka's `UniformAssignor`) and `range` (like Kafka's server-side `RangeAssignor`), which turn
//! the members' subscriptions and previous targets into every member's new target assignment.
//!
//! # `uniform`
//!
//! Balance first, then stickiness. Every member first claims the partitions of its previous
//! target that are still valid (topic still exists and is subscribed, index below the partition
//! count; a partition claimed by two members goes to the first in member-id order).
//!
//! - **Same subscriptions** (every member with a non-empty subscription has the same one): with
//!   `P` partitions and `M` such members each gets `P / M`, and `P % M` of them one more. The
//!   extra slots go to the members that currently hold the most, so the number of partitions
//!   kept is the largest balance allows. Members over their quota give up their highest
//!   (topic, partition) pairs; the freed and never-owned partitions, in (topic, partition) order,
//!   fill the members below quota in member-id order. A member joining therefore only receives
//!   partitions taken from members over the new quota, and a member leaving only has its own
//!   partitions moved.
//! - **Different subscriptions**: members keep every valid partition; unowned partitions go,
//!   topic by topic (most partitions per subscriber first, as Kafka orders them), each to the
//!   currently least-loaded subscriber; then, per topic, partitions move from its most loaded
//!   holder to its least loaded subscriber while they differ by two or more (Kafka's balancing
//!   loop). Kafka stops there; per-topic balance can leave chains such as 9/10/11 partitions over
//!   three members with overlapping subscriptions. A final pass removes those: it moves one
//!   partition along a chain of members (each hop within a topic both subscribe to) from a member
//!   with load `L` to one with load `<= L - 2`, until no such chain exists. An assignment without
//!   such chains has the smallest possible maximum load and the largest possible minimum load
//!   (the optimal "semi-matching" of Harvey et al.), i.e. it is as balanced as the subscriptions
//!   allow. When a partition has to leave a member, one it was newly given in this computation
//!   moves before one it already owned.
//!
//! Racks are ignored, as in Kafka's current uniform assignor (its rack-aware variant was removed).
//!
//! # `range`
//!
//! Per topic, the subscribers are ordered Kafka's way (members with an instance id first, by
//! instance id; then the others by member id) and get contiguous ranges from partition 0: with
//! `P` partitions and `S` subscribers the first `P % S` get `P / S + 1`, the rest `P / S`.
//! Co-partitioned topics (same subscribers, same partition count) thus give each member the same
//! indexes. Like Kafka's, it does not look at the previous assignment: stability comes from the
//! ordering, which static members keep across restarts.
//!
//! # Determinism and cost
//!
//! Inputs are re-sorted (members by id, topics by id) and every tie is broken by those orders,
//! so the output does not depend on the order of `members`. Work is about
//! `O(P log M + S log M)` for `S` subscriptions in total, plus, for different subscriptions, one
//! graph search per partition moved along a chain (bounded by a work budget so a pathological
//! subscription pattern cannot stall the coordinator; below the budget the result is optimal).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use uuid::Uuid;

/// A member's partitions: topic id -> partition indexes.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub const DEFAULT: Assignor = Assignor::Uniform;

    /// Kafka's names: "uniform", "range".
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        // Exact match: Kafka looks assignors up by their exact configured name.
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// Computes the target assignment of every member.
    ///
    /// Every member of `members` appears in the result (with an empty assignment if it gets
    /// nothing). Member ids are expected to be unique; should one repeat, only its first entry
    /// (in the assignor's member order) is used.
    pub fn assign(
        self,
        members: &[MemberSpec<'_>],
        topics: &BTreeMap<Uuid, TopicSpec>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub rack: Option<&'a str>,
    /// Topic ids this member subscribes to (already resolved from names/regex and filtered
    /// to topics that exist).
    pub subscribed: &'a BTreeSet<Uuid>,
    /// The member's current target assignment (what the previous assignment gave it), for stickiness.
    pub current: &'a Assignment,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
}

/// "No member" in per-partition owner arrays.
const NONE: u32 = u32::MAX;

/// Topics numbered `0..T` in topic-id order, so per-topic data can live in vectors and every
/// iteration over topic numbers is in topic-id order.
struct TopicTable {
    ids: Vec<Uuid>,
    counts: Vec<usize>,
}

impl TopicTable {
    fn new(topics: &BTreeMap<Uuid, TopicSpec>) -> Self {
        TopicTable {
            ids: topics.keys().copied().collect(),
            // A negative count is nonsense from upstream; treat it as a topic with no partitions.
            counts: topics
                .values()
                .map(|t| t.partitions.max(0) as usize)
                .collect(),
        }
    }

    fn index(&self, id: &Uuid) -> Option<usize> {
        self.ids.binary_search(id).ok()
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    /// A member's subscription as ascending topic numbers; ids missing from `topics` are
    /// skipped because there is nothing to assign from them.
    fn subscription(&self, m: &MemberSpec<'_>) -> Vec<usize> {
        m.subscribed
            .iter()
            .filter_map(|id| self.index(id))
            .collect()
    }

    /// Converts per-topic-number partition sets to an [`Assignment`], leaving out empty sets.
    fn to_assignment(&self, sets: impl Iterator<Item = (usize, BTreeSet<i32>)>) -> Assignment {
        sets.filter(|(_, s)| !s.is_empty())
            .map(|(t, s)| (self.ids[t], s))
            .collect()
    }
}

/// Members in `order`, keeping only the first entry of a repeated member id.
fn first_of_each_id<'s, 'a>(order: Vec<&'s MemberSpec<'a>>) -> Vec<&'s MemberSpec<'a>> {
    let mut seen = BTreeSet::new();
    order
        .into_iter()
        .filter(|m| seen.insert(m.member_id))
        .collect()
}

// ------------------------------------------------------------------------------------------
// range
// ------------------------------------------------------------------------------------------

/// Kafka's member order for range: static members first by instance id, then dynamic members
/// by member id (the member-id tie-break only matters for duplicate instance ids).
fn range_order(a: &MemberSpec<'_>, b: &MemberSpec<'_>) -> Ordering {
    match (a.instance_id, b.instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(b.member_id)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.member_id.cmp(b.member_id),
    }
}

fn range(
    members: &[MemberSpec<'_>],
    topics: &BTreeMap<Uuid, TopicSpec>,
) -> BTreeMap<String, Assignment> {
    let table = TopicTable::new(topics);
    let mut order: Vec<&MemberSpec<'_>> = members.iter().collect();
    order.sort_by(|a, b| range_order(a, b));
    let order = first_of_each_id(order);

    // Subscribers of each topic, in member order; built from subscriptions rather than by
    // scanning all members per topic.
    let mut subscribers: Vec<Vec<usize>> = vec![Vec::new(); table.len()];
    for (i, m) in order.iter().enumerate() {
        for t in table.subscription(m) {
            subscribers[t].push(i);
        }
    }

    let mut sets: Vec<Vec<(usize, BTreeSet<i32>)>> = vec![Vec::new(); order.len()];
    for (t, subs) in subscribers.iter().enumerate() {
        if subs.is_empty() {
            continue;
        }
        let n = table.counts[t];
        let (quota, extra) = (n / subs.len(), n % subs.len());
        let mut start = 0usize;
        for (rank, &i) in subs.iter().enumerate() {
            let len = quota + usize::from(rank < extra);
            if len > 0 {
                sets[i].push((t, (start as i32..(start + len) as i32).collect()));
            }
            start += len;
        }
    }

    order
        .iter()
        .zip(sets)
        .map(|(m, s)| (m.member_id.to_string(), table.to_assignment(s.into_iter())))
        .collect()
}

// ------------------------------------------------------------------------------------------
// uniform
// ------------------------------------------------------------------------------------------

fn uniform(
    members: &[MemberSpec<'_>],
    topics: &BTreeMap<Uuid, TopicSpec>,
) -> BTreeMap<String, Assignment> {
    let table = TopicTable::new(topics);
    let mut order: Vec<&MemberSpec<'_>> = members.iter().collect();
    // Stable sort, so among repeated ids the first given one is kept.
    order.sort_by(|a, b| a.member_id.cmp(b.member_id));
    let order = first_of_each_id(order);
    let subs: Vec<Vec<usize>> = order.iter().map(|m| table.subscription(m)).collect();

    // Only members subscribed to something take part; the others just get an empty entry.
    let participants: Vec<usize> = (0..order.len()).filter(|&i| !subs[i].is_empty()).collect();

    // Claim the still-valid partitions of each member's previous target. `owner` is indexed by
    // topic number then partition; topics nobody subscribes to get no array.
    let mut subscribed_topic = vec![false; table.len()];
    for &i in &participants {
        for &t in &subs[i] {
            subscribed_topic[t] = true;
        }
    }
    let mut owner: Vec<Vec<u32>> = (0..table.len())
        .map(|t| {
            vec![
                NONE;
                if subscribed_topic[t] {
                    table.counts[t]
                } else {
                    0
                }
            ]
        })
        .collect();
    // Per member, claimed (topic, partition) pairs in ascending order (`current` iterates in
    // topic-id order and topic numbers follow it).
    let mut claimed: Vec<Vec<(usize, i32)>> = vec![Vec::new(); order.len()];
    for &i in &participants {
        for (id, parts) in order[i].current {
            let Some(t) = table.index(id) else { continue };
            if subs[i].binary_search(&t).is_err() {
                continue;
            }
            for &p in parts {
                if p < 0 || p as usize >= table.counts[t] {
                    continue;
                }
                let slot = &mut owner[t][p as usize];
                if *slot == NONE {
                    *slot = i as u32;
                    claimed[i].push((t, p));
                }
            }
        }
    }

    let mut result: Vec<Vec<(usize, BTreeSet<i32>)>> = vec![Vec::new(); order.len()];
    if let Some(&first) = participants.first() {
        let homogeneous = participants.iter().all(|&i| subs[i] == subs[first]);
        if homogeneous {
            let per_member =
                uniform_homogeneous(&participants, &subs[first], &table, &mut owner, &claimed);
            for (i, pairs) in per_member.into_iter().enumerate() {
                let mut by_topic: BTreeMap<usize, BTreeSet<i32>> = BTreeMap::new();
                for (t, p) in pairs {
                    by_topic.entry(t).or_default().insert(p);
                }
                result[i] = by_topic.into_iter().collect();
            }
        } else {
            let mut state = Hetero::new(order.len(), &subs, &table, owner, &claimed);
            state.assign_unowned();
            state.balance_per_topic();
            state.balance_chains(&participants);
            for (i, held) in state.held.into_iter().enumerate() {
                result[i] = held
                    .into_iter()
                    .map(|(t, h)| (t, h.kept.into_iter().chain(h.fresh).collect()))
                    .collect();
            }
        }
    }

    order
        .iter()
        .zip(result)
        .map(|(m, s)| (m.member_id.to_string(), table.to_assignment(s.into_iter())))
        .collect()
}

/// Same subscriptions: exact quotas, extra slots to the members holding the most.
/// Returns, per member number, its (topic, partition) pairs.
fn uniform_homogeneous(
    participants: &[usize],
    topics: &[usize],
    table: &TopicTable,
    owner: &mut [Vec<u32>],
    claimed: &[Vec<(usize, i32)>],
) -> Vec<Vec<(usize, i32)>> {
    let total: usize = topics.iter().map(|&t| table.counts[t]).sum();
    let (quota, extra) = (total / participants.len(), total % participants.len());

    // Giving the `quota + 1` slots to the members that hold the most maximises what is kept:
    // a slot is only worth something to a member holding more than `quota`.
    let mut by_claim = participants.to_vec();
    by_claim.sort_by_key(|&i| (Reverse(claimed[i].len()), i));
    let mut target = vec![0usize; claimed.len()];
    for (rank, &i) in by_claim.iter().enumerate() {
        target[i] = quota + usize::from(rank < extra);
    }

    let mut result: Vec<Vec<(usize, i32)>> = vec![Vec::new(); claimed.len()];
    for &i in participants {
        let keep = claimed[i].len().min(target[i]);
        result[i] = claimed[i][..keep].to_vec();
        for &(t, p) in &claimed[i][keep..] {
            owner[t][p as usize] = NONE;
        }
    }

    // The targets add up to `total`, so the free partitions exactly fill the gaps.
    let owner = &*owner;
    let mut free = topics.iter().flat_map(|&t| {
        (0..table.counts[t])
            .filter(move |&p| owner[t][p] == NONE)
            .map(move |p| (t, p as i32))
    });
    for &i in participants {
        while result[i].len() < target[i] {
            let next = free.next().expect("quotas add up to the partition count");
            result[i].push(next);
        }
    }
    debug_assert!(free.next().is_none());
    result
}

/// A member's partitions of one topic, split so that a partition handed out during this
/// computation is moved away before one the member already owned.
#[derive(Default)]
struct Held {
    kept: BTreeSet<i32>,
    fresh: BTreeSet<i32>,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.fresh.is_empty()
    }
}

/// State of the different-subscriptions algorithm. Members and topics are numbers.
struct Hetero<'x> {
    subs: &'x [Vec<usize>],
    counts: &'x [usize],
    /// Who owned each partition before this computation (after validation), to know whether a
    /// partition arriving at a member is one it owned.
    original: Vec<Vec<u32>>,
    load: Vec<usize>,
    held: Vec<BTreeMap<usize, Held>>,
    /// Per topic, the members holding at least one of its partitions.
    holders: Vec<BTreeSet<usize>>,
    /// Per topic, its subscribers in member order.
    subscribers: Vec<Vec<usize>>,
}

impl<'x> Hetero<'x> {
    fn new(
        members: usize,
        subs: &'x [Vec<usize>],
        table: &'x TopicTable,
        original: Vec<Vec<u32>>,
        claimed: &[Vec<(usize, i32)>],
    ) -> Self {
        let mut subscribers = vec![Vec::new(); table.len()];
        for (i, s) in subs.iter().enumerate() {
            for &t in s {
                subscribers[t].push(i);
            }
        }
        let mut st = Hetero {
            subs,
            counts: &table.counts,
            original,
            load: vec![0; members],
            held: (0..members).map(|_| BTreeMap::new()).collect(),
            holders: vec![BTreeSet::new(); table.len()],
            subscribers,
        };
        // Every valid claim is kept here; balancing decides later what has to move.
        for (i, pairs) in claimed.iter().enumerate() {
            for &(t, p) in pairs {
                st.put(i, t, p);
            }
        }
        st
    }

    fn put(&mut self, m: usize, t: usize, p: i32) {
        let h = self.held[m].entry(t).or_default();
        if self.original[t][p as usize] == m as u32 {
            h.kept.insert(p);
        } else {
            h.fresh.insert(p);
        }
        self.holders[t].insert(m);
        self.load[m] += 1;
    }

    /// Removes one of `m`'s partitions of `t`: the highest newly given one, else the highest
    /// owned one. `m` must hold one.
    fn take(&mut self, m: usize, t: usize) -> i32 {
        let h = self.held[m].get_mut(&t).expect("member holds the topic");
        let p = h
            .fresh
            .pop_last()
            .or_else(|| h.kept.pop_last())
            .expect("member holds a partition of the topic");
        if h.is_empty() {
            self.held[m].remove(&t);
            self.holders[t].remove(&m);
        }
        self.load[m] -= 1;
        p
    }

    /// Hands every unowned partition to the least loaded subscriber of its topic, topics with
    /// the most partitions per subscriber first (they are the hardest to spread evenly).
    fn assign_unowned(&mut self) {
        let mut order: Vec<usize> = (0..self.subscribers.len())
            .filter(|&t| !self.subscribers[t].is_empty())
            .collect();
        let (counts, subscribers) = (self.counts, &self.subscribers);
        order.sort_by(|&a, &b| {
            let (na, sa) = (counts[a] as u128, subscribers[a].len() as u128);
            let (nb, sb) = (counts[b] as u128, subscribers[b].len() as u128);
            // na/sa > nb/sb first, compared without floating point.
            (nb * sa).cmp(&(na * sb)).then(sa.cmp(&sb)).then(a.cmp(&b))
        });
        for t in order {
            let free: Vec<i32> = (0..self.counts[t])
                .filter(|&p| self.original[t][p] == NONE)
                .map(|p| p as i32)
                .collect();
            if free.is_empty() {
                continue;
            }
            let mut heap: BinaryHeap<Reverse<(usize, usize)>> = self.subscribers[t]
                .iter()
                .map(|&m| Reverse((self.load[m], m)))
                .collect();
            for p in free {
                let Reverse((load, m)) = heap.pop().expect("topic has subscribers");
                self.put(m, t, p);
                heap.push(Reverse((load + 1, m)));
            }
        }
    }

    /// Kafka's balancing loop: per topic, move partitions from the most loaded holder to the
    /// least loaded subscriber while they differ by two or more; repeat over all topics until
    /// nothing moves. It does the bulk of the moving cheaply; `balance_chains` finishes.
    fn balance_per_topic(&mut self) {
        // Kafka's bound on rounds; the chain pass below does not depend on convergence here.
        const MAX_ROUNDS: usize = 16;
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            for t in 0..self.subscribers.len() {
                if self.subscribers[t].len() >= 2 {
                    moved |= self.balance_topic(t);
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn balance_topic(&mut self, t: usize) -> bool {
        let mut receivers: BTreeSet<(usize, usize)> = self.subscribers[t]
            .iter()
            .map(|&m| (self.load[m], m))
            .collect();
        let mut givers: BTreeSet<(usize, usize)> =
            self.holders[t].iter().map(|&m| (self.load[m], m)).collect();
        let mut moved = false;
        while let (Some(&(gl, g)), Some(&(rl, r))) = (givers.last(), receivers.first()) {
            if gl < rl + 2 {
                break;
            }
            let p = self.take(g, t);
            let receiver_held = self.holders[t].contains(&r);
            self.put(r, t, p);
            moved = true;

            givers.remove(&(gl, g));
            if self.holders[t].contains(&g) {
                givers.insert((gl - 1, g));
            }
            if receiver_held {
                givers.remove(&(rl, r));
            }
            givers.insert((rl + 1, r));
            receivers.remove(&(gl, g));
            receivers.insert((gl - 1, g));
            receivers.remove(&(rl, r));
            receivers.insert((rl + 1, r));
        }
        moved
    }

    /// Moves single partitions along chains of members until no member with load `L` can pass
    /// a partition, hop by hop through topics, to a member with load `<= L - 2`.
    ///
    /// Thresholds `k` are handled from the lowest load up: search backwards from all members
    /// with load `<= k` for the most loaded member that can reach one; move along the path if
    /// that member has `>= k + 2`, else go to the next load value above `k`. A move never
    /// creates a chain below the current threshold, so one pass over thresholds suffices.
    fn balance_chains(&mut self, participants: &[usize]) {
        let subs_total: usize = participants.iter().map(|&i| self.subs[i].len()).sum();
        let partitions: usize = self.load.iter().sum();
        // Bounds the searches (edges looked at). Never reached by realistic groups; a contrived
        // chain of overlapping subscriptions stops early with Kafka-level balance instead.
        let mut budget: usize = (1 << 22) + 32 * (subs_total + partitions + participants.len());

        let Some(mut k) = participants.iter().map(|&i| self.load[i]).min() else {
            return;
        };
        loop {
            let max = participants
                .iter()
                .map(|&i| self.load[i])
                .max()
                .unwrap_or(0);
            if max < k + 2 {
                return;
            }
            match self.find_chain(participants, k, max, &mut budget) {
                Some(path) => {
                    for (from, to, t) in path {
                        let p = self.take(from, t);
                        self.put(to, t, p);
                    }
                }
                None if budget == 0 => return,
                None => {
                    // Between two load values present the sources (and so the result) do not
                    // change; jump to the next one.
                    match participants
                        .iter()
                        .map(|&i| self.load[i])
                        .filter(|&l| l > k)
                        .min()
                    {
                        Some(next) => k = next,
                        None => return,
                    }
                }
            }
        }
    }

    /// Breadth-first search backwards from the members with load `<= k`: a member `u` reaches
    /// `v` if it holds a partition of a topic `v` subscribes to. Returns the hops
    /// (giver, receiver, topic) from the most loaded reachable member (first found among
    /// equals) if its load is at least `k + 2`.
    fn find_chain(
        &self,
        participants: &[usize],
        k: usize,
        max: usize,
        budget: &mut usize,
    ) -> Option<Vec<(usize, usize, usize)>> {
        // The per-search setup is charged too, so the budget bounds all the work of the pass.
        let setup = self.load.len() + self.subscribers.len();
        if *budget < setup {
            *budget = 0;
            return None;
        }
        *budget -= setup;
        let mut seen = vec![false; self.load.len()];
        let mut topic_seen = vec![false; self.subscribers.len()];
        // parent[u] = (v, t): u gives a partition of t to v, one step closer to a source.
        let mut parent: Vec<Option<(usize, usize)>> = vec![None; self.load.len()];
        let mut queue = VecDeque::new();
        for &i in participants {
            if self.load[i] <= k {
                seen[i] = true;
                queue.push_back(i);
            }
        }
        let mut best: Option<usize> = None;
        'search: while let Some(v) = queue.pop_front() {
            for &t in &self.subs[v] {
                if topic_seen[t] {
                    continue;
                }
                topic_seen[t] = true;
                for &u in &self.holders[t] {
                    if *budget == 0 {
                        return None;
                    }
                    *budget -= 1;
                    if seen[u] {
                        continue;
                    }
                    seen[u] = true;
                    parent[u] = Some((v, t));
                    queue.push_back(u);
                    if self.load[u] >= k + 2 && best.is_none_or(|b| self.load[u] > self.load[b]) {
                        best = Some(u);
                        if self.load[u] == max {
                            break 'search;
                        }
                    }
                }
            }
        }
        let mut u = best?;
        let mut path = Vec::new();
        while let Some((v, t)) = parent[u] {
            path.push((u, v, t));
            u = v;
        }
        Some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn tid(n: u32) -> Uuid {
        Uuid::from_u128(0xabc0_0000 + n as u128)
    }

    #[derive(Clone, Debug)]
    struct M {
        id: String,
        instance: Option<String>,
        subs: BTreeSet<Uuid>,
        current: Assignment,
    }

    fn m(id: &str, subs: &[Uuid]) -> M {
        M {
            id: id.to_string(),
            instance: None,
            subs: subs.iter().copied().collect(),
            current: Assignment::new(),
        }
    }

    fn topics(spec: &[(Uuid, i32)]) -> BTreeMap<Uuid, TopicSpec> {
        spec.iter()
            .map(|&(id, n)| {
                (
                    id,
                    TopicSpec {
                        name: format!("t-{id}"),
                        partitions: n,
                    },
                )
            })
            .collect()
    }

    fn run(a: Assignor, ms: &[M], ts: &BTreeMap<Uuid, TopicSpec>) -> BTreeMap<String, Assignment> {
        let specs: Vec<MemberSpec<'_>> = ms
            .iter()
            .map(|m| MemberSpec {
                member_id: &m.id,
                instance_id: m.instance.as_deref(),
                rack: None,
                subscribed: &m.subs,
                current: &m.current,
            })
            .collect();
        a.assign(&specs, ts)
    }

    /// Makes the output the members' current targets, as the state machine does.
    fn settle(ms: &mut [M], out: &BTreeMap<String, Assignment>) {
        for m in ms {
            m.current = out.get(&m.id).cloned().unwrap_or_default();
        }
    }

    fn size(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn owners(out: &BTreeMap<String, Assignment>) -> BTreeMap<(Uuid, i32), String> {
        let mut o = BTreeMap::new();
        for (id, a) in out {
            for (t, ps) in a {
                for &p in ps {
                    assert!(
                        o.insert((*t, p), id.clone()).is_none(),
                        "{t}:{p} assigned twice"
                    );
                }
            }
        }
        o
    }

    /// Invariant (4): all members present; every partition of every subscribed topic owned by
    /// exactly one subscriber; nothing else assigned.
    fn check_valid(ms: &[M], ts: &BTreeMap<Uuid, TopicSpec>, out: &BTreeMap<String, Assignment>) {
        let ids: BTreeSet<&str> = ms.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(out.keys().map(String::as_str).collect::<BTreeSet<_>>(), ids);
        let own = owners(out);
        let subs_of: BTreeMap<&str, &BTreeSet<Uuid>> =
            ms.iter().map(|m| (m.id.as_str(), &m.subs)).collect();
        for (id, a) in out {
            for (t, ps) in a {
                assert!(!ps.is_empty(), "empty set for {t} in {id}");
                assert!(
                    subs_of[id.as_str()].contains(t),
                    "{id} got unsubscribed {t}"
                );
                let n = ts[t].partitions;
                assert!(
                    ps.iter().all(|&p| (0..n).contains(&p)),
                    "{id}: {t} {ps:?} of {n}"
                );
            }
        }
        let wanted: BTreeSet<Uuid> = ms.iter().flat_map(|m| m.subs.iter().copied()).collect();
        for t in wanted {
            for p in 0..ts[&t].partitions {
                assert!(own.contains_key(&(t, p)), "{t}:{p} unassigned");
            }
        }
    }

    fn loads(out: &BTreeMap<String, Assignment>) -> BTreeMap<&str, usize> {
        out.iter().map(|(id, a)| (id.as_str(), size(a))).collect()
    }

    /// Max minus min load over the members subscribed to something.
    fn spread(ms: &[M], out: &BTreeMap<String, Assignment>) -> usize {
        let l: Vec<usize> = ms
            .iter()
            .filter(|m| !m.subs.is_empty())
            .map(|m| size(&out[&m.id]))
            .collect();
        l.iter().max().unwrap_or(&0) - l.iter().min().unwrap_or(&0)
    }

    /// "As balanced as the subscriptions allow": no member can pass a partition, hop by hop
    /// through topics both ends of each hop subscribe to, to a member with 2 or more fewer.
    fn check_best_balance(ms: &[M], out: &BTreeMap<String, Assignment>) {
        let l = loads(out);
        for u in ms {
            let mut seen = BTreeSet::from([u.id.as_str()]);
            let mut queue = vec![u.id.as_str()];
            while let Some(x) = queue.pop() {
                for t in out[x].keys() {
                    for w in ms.iter().filter(|w| w.subs.contains(t)) {
                        if seen.insert(w.id.as_str()) {
                            assert!(
                                l[w.id.as_str()] + 2 > l[u.id.as_str()],
                                "{} ({}) could pass to {} ({}): {out:?}",
                                u.id,
                                l[u.id.as_str()],
                                w.id,
                                l[w.id.as_str()]
                            );
                            queue.push(w.id.as_str());
                        }
                    }
                }
            }
        }
    }

    /// Range: per topic, subscribers in Kafka's order hold consecutive ranges from 0, sizes
    /// non-increasing and differing by at most one.
    fn check_range_layout(
        ms: &[M],
        ts: &BTreeMap<Uuid, TopicSpec>,
        out: &BTreeMap<String, Assignment>,
    ) {
        let mut ordered: Vec<&M> = ms.iter().collect();
        ordered.sort_by(|a, b| match (&a.instance, &b.instance) {
            (Some(x), Some(y)) => x.cmp(y).then(a.id.cmp(&b.id)),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        for (t, spec) in ts {
            let subs: Vec<&M> = ordered
                .iter()
                .copied()
                .filter(|m| m.subs.contains(t))
                .collect();
            if subs.is_empty() {
                continue;
            }
            let n = spec.partitions;
            let q = n / subs.len() as i32;
            let mut start = 0;
            let mut prev = i32::MAX;
            for m in subs {
                let got: Vec<i32> = out[&m.id]
                    .get(t)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                let len = got.len() as i32;
                assert!(len == q || len == q + 1, "{}: {t} {got:?}", m.id);
                assert!(len <= prev, "extras must go to earlier members");
                assert_eq!(
                    got,
                    (start..start + len).collect::<Vec<_>>(),
                    "{}: {t}",
                    m.id
                );
                start += len;
                prev = len;
            }
            assert_eq!(start, n);
        }
    }

    fn moved(
        before: &BTreeMap<String, Assignment>,
        after: &BTreeMap<String, Assignment>,
    ) -> BTreeMap<(Uuid, i32), (String, String)> {
        let (b, a) = (owners(before), owners(after));
        a.into_iter()
            .filter_map(|(tp, new)| match b.get(&tp) {
                Some(old) if *old != new => Some((tp, (old.clone(), new))),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn names() {
        assert_eq!(Assignor::DEFAULT, Assignor::Uniform);
        for a in [Assignor::Uniform, Assignor::Range] {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::Uniform.name(), "uniform");
        assert_eq!(Assignor::Range.name(), "range");
        assert_eq!(Assignor::from_name("sticky"), None);
        assert_eq!(Assignor::from_name("Uniform"), None);
    }

    #[test]
    fn empty_inputs() {
        let none = topics(&[]);
        for a in [Assignor::Uniform, Assignor::Range] {
            assert!(run(a, &[], &none).is_empty());
            assert!(run(a, &[], &topics(&[(tid(1), 4)])).is_empty());
            // Members without subscriptions still appear, empty.
            let ms = [m("a", &[]), m("b", &[])];
            let out = run(a, &ms, &none);
            assert_eq!(out.len(), 2);
            assert!(out.values().all(Assignment::is_empty));
            // A topic with no partitions yields nothing; the unsubscribed member stays empty.
            let ts = topics(&[(tid(1), 0), (tid(2), 3)]);
            let ms = [m("a", &[tid(1)]), m("b", &[tid(1), tid(2)]), m("c", &[])];
            let out = run(a, &ms, &ts);
            check_valid(&ms, &ts, &out);
            assert!(out["a"].is_empty() && out["c"].is_empty());
            assert_eq!(size(&out["b"]), 3);
        }
    }

    #[test]
    fn uniform_homogeneous_balance() {
        let ts = topics(&[(tid(1), 7), (tid(2), 5), (tid(3), 11)]);
        let all = [tid(1), tid(2), tid(3)];
        let ms: Vec<M> = ["e", "d", "c", "b", "a"]
            .iter()
            .map(|id| m(id, &all))
            .collect();
        let out = run(Assignor::Uniform, &ms, &ts);
        check_valid(&ms, &ts, &out);
        let mut sizes: Vec<usize> = loads(&out).into_values().collect();
        sizes.sort();
        assert_eq!(sizes, [4, 4, 5, 5, 5]);
        // A member subscribed to nothing does not count toward the quotas.
        let mut ms2 = ms.clone();
        ms2.push(m("idle", &[]));
        let out2 = run(Assignor::Uniform, &ms2, &ts);
        check_valid(&ms2, &ts, &out2);
        assert!(out2["idle"].is_empty());
        assert_eq!(
            out2.into_iter()
                .filter(|(k, _)| k != "idle")
                .collect::<BTreeMap<_, _>>(),
            out
        );
    }

    #[test]
    fn uniform_heterogeneous_balance() {
        // Overlapping chain: a{t1}, b{t1,t2}, c{t2,t3}, d{t3}; 24 partitions -> 6 each.
        let ts = topics(&[(tid(1), 3), (tid(2), 18), (tid(3), 3)]);
        let ms = [
            m("a", &[tid(1)]),
            m("b", &[tid(1), tid(2)]),
            m("c", &[tid(2), tid(3)]),
            m("d", &[tid(3)]),
        ];
        let out = run(Assignor::Uniform, &ms, &ts);
        check_valid(&ms, &ts, &out);
        check_best_balance(&ms, &out);
        // a and d can have at most 3; b and c share the remaining 18.
        assert_eq!(
            loads(&out),
            BTreeMap::from([("a", 3), ("b", 9), ("c", 9), ("d", 3)])
        );

        // The subscriptions bound the balance: a alone reads the big topic.
        let ts = topics(&[(tid(1), 10), (tid(2), 2)]);
        let ms = [m("a", &[tid(1)]), m("b", &[tid(2)]), m("c", &[tid(2)])];
        let out = run(Assignor::Uniform, &ms, &ts);
        check_valid(&ms, &ts, &out);
        assert_eq!(loads(&out), BTreeMap::from([("a", 10), ("b", 1), ("c", 1)]));

        // Kafka's per-topic loop leaves 9/10/11 here from this start; chains fix it.
        let ts = topics(&[(tid(1), 19), (tid(2), 11)]);
        let mut ms = [
            m("a", &[tid(1)]),
            m("b", &[tid(1), tid(2)]),
            m("c", &[tid(2)]),
        ];
        ms[0].current = Assignment::from([(tid(1), (0..9).collect())]);
        ms[1].current = Assignment::from([(tid(1), (9..19).collect())]);
        ms[2].current = Assignment::from([(tid(2), (0..11).collect())]);
        let out = run(Assignor::Uniform, &ms, &ts);
        check_valid(&ms, &ts, &out);
        check_best_balance(&ms, &out);
        assert_eq!(
            loads(&out),
            BTreeMap::from([("a", 10), ("b", 10), ("c", 10)])
        );
        // Only the two partitions of the chain moved: b -> a (t1), c -> b (t2).
        let before: BTreeMap<String, Assignment> = ms
            .iter()
            .map(|m| (m.id.clone(), m.current.clone()))
            .collect();
        assert_eq!(moved(&before, &out).len(), 2);
    }

    #[test]
    fn uniform_sticky_join_and_leave_homogeneous() {
        let ts = topics(&[(tid(1), 10), (tid(2), 7), (tid(3), 3)]);
        let all = [tid(1), tid(2), tid(3)];
        let mut ms: Vec<M> = ["a", "b", "c", "d"].iter().map(|id| m(id, &all)).collect();
        let first = run(Assignor::Uniform, &ms, &ts);
        settle(&mut ms, &first);

        // Join: only partitions moving to the newcomer change owner.
        let mut joined = ms.clone();
        joined.push(m("e", &all));
        let after = run(Assignor::Uniform, &joined, &ts);
        check_valid(&joined, &ts, &after);
        assert!(spread(&joined, &after) <= 1);
        let mv = moved(&first, &after);
        assert!(mv.values().all(|(_, to)| to == "e"), "{mv:?}");
        assert_eq!(mv.len(), size(&after["e"]));
        assert_eq!(size(&after["e"]), 4);

        // Leave: only the leaver's partitions move.
        let left: Vec<M> = ms.iter().filter(|m| m.id != "b").cloned().collect();
        let after = run(Assignor::Uniform, &left, &ts);
        check_valid(&left, &ts, &after);
        assert!(spread(&left, &after) <= 1);
        for m in &left {
            for (t, ps) in &first[&m.id] {
                assert!(ps.is_subset(&after[&m.id][t]), "{} lost partitions", m.id);
            }
        }
    }

    #[test]
    fn uniform_sticky_join_and_leave_heterogeneous() {
        let ts = topics(&[(tid(1), 12), (tid(2), 6), (tid(3), 5)]);
        let mut ms = vec![
            m("a", &[tid(1), tid(2)]),
            m("b", &[tid(1)]),
            m("c", &[tid(1), tid(2), tid(3)]),
            m("d", &[tid(3)]),
        ];
        let first = run(Assignor::Uniform, &ms, &ts);
        check_valid(&ms, &ts, &first);
        check_best_balance(&ms, &first);
        settle(&mut ms, &first);

        let mut joined = ms.clone();
        joined.push(m("e", &[tid(1), tid(3)]));
        let after = run(Assignor::Uniform, &joined, &ts);
        check_valid(&joined, &ts, &after);
        check_best_balance(&joined, &after);
        let mv = moved(&first, &after);
        assert!(mv.values().all(|(_, to)| to == "e"), "{mv:?}");
        assert_eq!(mv.len(), size(&after["e"]));

        let left: Vec<M> = ms.iter().filter(|m| m.id != "a").cloned().collect();
        let after = run(Assignor::Uniform, &left, &ts);
        check_valid(&left, &ts, &after);
        check_best_balance(&left, &after);
        let mv = moved(&first, &after);
        assert!(mv.values().all(|(from, _)| from == "a"), "{mv:?}");
    }

    #[test]
    fn uniform_drops_stale_partitions() {
        let ts = topics(&[(tid(1), 4), (tid(2), 3)]);
        let mut ms = vec![m("a", &[tid(1), tid(2)]), m("b", &[tid(1), tid(2)])];
        // a: t1 shrank from 6 to 4 partitions, t9 was deleted.
        ms[0].current = Assignment::from([
            (tid(1), BTreeSet::from([0, 4, 5])),
            (tid(9), BTreeSet::from([0, 1])),
        ]);
        // b: t3 is no longer subscribed; t2 kept.
        ms[1].current = Assignment::from([
            (tid(2), BTreeSet::from([1, 2])),
            (tid(3), BTreeSet::from([0])),
        ]);
        for a in [Assignor::Uniform, Assignor::Range] {
            let out = run(a, &ms, &ts);
            check_valid(&ms, &ts, &out);
        }
        let out = run(Assignor::Uniform, &ms, &ts);
        assert!(out["a"][&tid(1)].contains(&0));
        assert!(out["b"][&tid(2)].is_superset(&BTreeSet::from([1, 2])));
        assert!(spread(&ms, &out) <= 1);
        // Topic deleted entirely (no longer subscribed): its partitions vanish.
        let ts2 = topics(&[(tid(1), 4)]);
        let mut ms2 = vec![m("a", &[tid(1)]), m("b", &[tid(1)])];
        settle(&mut ms2, &out);
        let out2 = run(Assignor::Uniform, &ms2, &ts2);
        check_valid(&ms2, &ts2, &out2);
        assert!(out2.values().all(|a| a.keys().all(|t| *t == tid(1))));
        // 4 partitions left for 2 members: each keeps what it can of t1 (2 each), so a
        // member only loses or only gains.
        let empty = BTreeSet::new();
        for m in &ms2 {
            let (old, new) = (
                out[&m.id].get(&tid(1)).unwrap_or(&empty),
                &out2[&m.id][&tid(1)],
            );
            assert_eq!(new.len(), 2);
            assert!(
                old.is_subset(new) || new.is_subset(old),
                "{old:?} -> {new:?}"
            );
        }
    }

    #[test]
    fn determinism_independent_of_member_order() {
        let ts = topics(&[(tid(1), 9), (tid(2), 4), (tid(3), 6)]);
        let mut ms = vec![
            m("m3", &[tid(1), tid(2)]),
            m("m1", &[tid(1)]),
            m("m2", &[tid(2), tid(3)]),
            m("m0", &[tid(1), tid(2), tid(3)]),
        ];
        // Conflicting claims: two members both say they own t1:0.
        ms[0].current = Assignment::from([(tid(1), BTreeSet::from([0, 1]))]);
        ms[1].current = Assignment::from([(tid(1), BTreeSet::from([0, 2]))]);
        for a in [Assignor::Uniform, Assignor::Range] {
            let out = run(a, &ms, &ts);
            check_valid(&ms, &ts, &out);
            for rot in 1..ms.len() {
                let mut other = ms.clone();
                other.rotate_left(rot);
                assert_eq!(run(a, &other, &ts), out);
                other.reverse();
                assert_eq!(run(a, &other, &ts), out);
            }
        }
    }

    #[test]
    fn range_contiguous_layout() {
        let ts = topics(&[(tid(1), 7), (tid(2), 7)]);
        let ms = [
            m("c", &[tid(1), tid(2)]),
            m("a", &[tid(1), tid(2)]),
            m("b", &[tid(1), tid(2)]),
        ];
        let out = run(Assignor::Range, &ms, &ts);
        check_valid(&ms, &ts, &out);
        check_range_layout(&ms, &ts, &out);
        let want = |ps: &[i32]| -> BTreeSet<i32> { ps.iter().copied().collect() };
        // 7 / 3 = 3, 2, 2 in member order; co-partitioned topics get the same indexes.
        for t in [tid(1), tid(2)] {
            assert_eq!(out["a"][&t], want(&[0, 1, 2]));
            assert_eq!(out["b"][&t], want(&[3, 4]));
            assert_eq!(out["c"][&t], want(&[5, 6]));
        }
        // More members than partitions: the last ones get nothing but are listed.
        let ts = topics(&[(tid(1), 2)]);
        let ms = [m("a", &[tid(1)]), m("b", &[tid(1)]), m("c", &[tid(1)])];
        let out = run(Assignor::Range, &ms, &ts);
        assert_eq!(out["a"][&tid(1)], want(&[0]));
        assert_eq!(out["b"][&tid(1)], want(&[1]));
        assert!(out["c"].is_empty());
    }

    #[test]
    fn range_orders_static_members_first_by_instance_id() {
        let ts = topics(&[(tid(1), 8)]);
        let mut ms = vec![m("a", &[tid(1)]), m("z", &[tid(1)]), m("m", &[tid(1)])];
        ms[1].instance = Some("i0".into());
        ms[2].instance = Some("i1".into());
        let out = run(Assignor::Range, &ms, &ts);
        check_range_layout(&ms, &ts, &out);
        assert_eq!(out["z"][&tid(1)], (0..3).collect());
        assert_eq!(out["m"][&tid(1)], (3..6).collect());
        assert_eq!(out["a"][&tid(1)], (6..8).collect());
        // Kafka's range ignores the previous assignment: the same order gives the same result
        // whatever the members held, and a new member id for a static member changes nothing.
        let mut again = ms.clone();
        settle(&mut again, &out);
        again[1].id = "y".into();
        again[1].current = Assignment::from([(tid(1), (5..8).collect())]);
        let out2 = run(Assignor::Range, &again, &ts);
        assert_eq!(out2["y"], out["z"]);
        assert_eq!(out2["m"], out["m"]);
    }

    #[test]
    fn range_heterogeneous_and_shrink() {
        let ts = topics(&[(tid(1), 5), (tid(2), 3)]);
        let ms = [
            m("a", &[tid(1)]),
            m("b", &[tid(1), tid(2)]),
            m("c", &[tid(2)]),
        ];
        let out = run(Assignor::Range, &ms, &ts);
        check_valid(&ms, &ts, &out);
        check_range_layout(&ms, &ts, &out);
        assert_eq!(out["a"][&tid(1)], (0..3).collect());
        assert_eq!(out["b"][&tid(1)], (3..5).collect());
        assert_eq!(out["b"][&tid(2)], (0..2).collect());
        assert_eq!(out["c"][&tid(2)], (2..3).collect());
        // t1 shrinks to 2, t2 deleted (so unsubscribed): the layout is recomputed.
        let ts2 = topics(&[(tid(1), 2)]);
        let mut ms2 = vec![m("a", &[tid(1)]), m("b", &[tid(1)]), m("c", &[])];
        settle(&mut ms2, &out);
        let out2 = run(Assignor::Range, &ms2, &ts2);
        check_valid(&ms2, &ts2, &out2);
        assert_eq!(out2["a"][&tid(1)], BTreeSet::from([0]));
        assert_eq!(out2["b"][&tid(1)], BTreeSet::from([1]));
        assert!(out2["c"].is_empty());
    }

    /// SplitMix64: a tiny seeded generator, so the random test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
    }

    #[test]
    fn random_inputs_keep_invariants() {
        let mut rng = Rng(0x51u64 << 32 | 0xce);
        let deleted = tid(99);
        for case in 0..600 {
            let n_topics = 1 + rng.below(5) as u32;
            let ts: BTreeMap<Uuid, TopicSpec> = (0..n_topics)
                .map(|i| {
                    (
                        tid(i),
                        TopicSpec {
                            name: format!("t{i}"),
                            partitions: rng.below(13) as i32,
                        },
                    )
                })
                .collect();
            let ids: Vec<Uuid> = ts.keys().copied().collect();
            let homogeneous = rng.chance(35);
            let common: Vec<Uuid> = ids.iter().copied().filter(|_| rng.chance(60)).collect();
            let n_members = rng.below(9);
            let mut ms: Vec<M> = (0..n_members)
                .map(|i| {
                    let subs: Vec<Uuid> = if homogeneous {
                        common.clone()
                    } else {
                        ids.iter().copied().filter(|_| rng.chance(50)).collect()
                    };
                    let mut mm = m(&format!("member-{}", (i * 7919 + case) % 1000), &subs);
                    if rng.chance(30) {
                        mm.instance = Some(format!("inst-{}", rng.below(1000)));
                    }
                    // Garbage-laden previous targets: stale indexes, deleted and unsubscribed
                    // topics, partitions claimed by several members.
                    for &t in ids.iter().chain([&deleted]) {
                        if rng.chance(40) {
                            let n = ts.get(&t).map_or(4, |s| s.partitions) as u64 + 3;
                            let ps: BTreeSet<i32> = (0..n)
                                .filter(|_| rng.chance(40))
                                .map(|p| p as i32)
                                .collect();
                            if !ps.is_empty() {
                                mm.current.insert(t, ps);
                            }
                        }
                    }
                    mm
                })
                .collect();
            if rng.chance(50) {
                // Half the time, start from a settled uniform assignment instead.
                let out = run(Assignor::Uniform, &ms, &ts);
                settle(&mut ms, &out);
            }

            for a in [Assignor::Uniform, Assignor::Range] {
                let out = run(a, &ms, &ts);
                check_valid(&ms, &ts, &out);
                let mut reversed = ms.clone();
                reversed.reverse();
                assert_eq!(run(a, &reversed, &ts), out, "case {case}: order-dependent");
                let mut again = ms.clone();
                settle(&mut again, &out);
                assert_eq!(run(a, &again, &ts), out, "case {case}: not idempotent");
                match a {
                    Assignor::Uniform => {
                        if homogeneous {
                            assert!(spread(&ms, &out) <= 1, "case {case}: {out:?}");
                        }
                        check_best_balance(&ms, &out);
                    }
                    Assignor::Range => check_range_layout(&ms, &ts, &out),
                }
            }

            // Homogeneous stickiness from a settled state: a join only moves partitions to the
            // newcomer; a leave only moves the leaver's partitions.
            if homogeneous && !ms.is_empty() {
                let mut settled = ms.clone();
                let base = run(Assignor::Uniform, &settled, &ts);
                settle(&mut settled, &base);
                let mut joined = settled.clone();
                joined.push(m("newcomer", &common));
                let after = run(Assignor::Uniform, &joined, &ts);
                check_valid(&joined, &ts, &after);
                assert!(
                    moved(&base, &after)
                        .values()
                        .all(|(_, to)| to == "newcomer"),
                    "case {case}"
                );
                let gone = settled[rng.below(settled.len() as u64) as usize].id.clone();
                let left: Vec<M> = settled.iter().filter(|m| m.id != gone).cloned().collect();
                let after = run(Assignor::Uniform, &left, &ts);
                check_valid(&left, &ts, &after);
                assert!(
                    moved(&base, &after).values().all(|(from, _)| *from == gone),
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn scale_thousand_members_ten_thousand_partitions() {
        let ts: BTreeMap<Uuid, TopicSpec> = (0..10)
            .map(|i| {
                (
                    tid(i),
                    TopicSpec {
                        name: format!("t{i}"),
                        partitions: 1000,
                    },
                )
            })
            .collect();
        let all: Vec<Uuid> = ts.keys().copied().collect();
        let mut timings = Vec::new();
        let mut timed = |label: &'static str, a: Assignor, ms: &[M]| {
            let start = Instant::now();
            let out = run(a, ms, &ts);
            timings.push((label, start.elapsed()));
            check_valid(ms, &ts, &out);
            out
        };

        // Same subscriptions: fresh group, a member joins, a member leaves.
        let mut ms: Vec<M> = (0..1000)
            .map(|i| m(&format!("member-{i:04}"), &all))
            .collect();
        let out = timed("uniform homogeneous, fresh", Assignor::Uniform, &ms);
        assert!(spread(&ms, &out) <= 1);
        settle(&mut ms, &out);
        let mut joined = ms.clone();
        joined.push(m("member-new", &all));
        let after = timed("uniform homogeneous, join", Assignor::Uniform, &joined);
        assert!(moved(&out, &after)
            .values()
            .all(|(_, to)| to == "member-new"));
        let left: Vec<M> = ms[1..].to_vec();
        let after = timed("uniform homogeneous, leave", Assignor::Uniform, &left);
        assert_eq!(moved(&out, &after).len(), size(&out["member-0000"]));

        // Different subscriptions: three overlapping topics per member.
        let mut hs: Vec<M> = (0..1000u32)
            .map(|i| {
                m(
                    &format!("member-{i:04}"),
                    &[tid(i % 10), tid((i + 3) % 10), tid((i + 7) % 10)],
                )
            })
            .collect();
        let out = timed("uniform heterogeneous, fresh", Assignor::Uniform, &hs);
        assert!(spread(&hs, &out) <= 1);
        settle(&mut hs, &out);
        let mut joined = hs.clone();
        joined.push(m("member-new", &[tid(0), tid(5)]));
        let after = timed("uniform heterogeneous, join", Assignor::Uniform, &joined);
        assert!(spread(&joined, &after) <= 1);
        assert!(moved(&out, &after)
            .values()
            .all(|(_, to)| to == "member-new"));

        timed("range homogeneous", Assignor::Range, &ms);
        timed("range heterogeneous", Assignor::Range, &hs);

        let total: Duration = timings.iter().map(|(_, d)| *d).sum();
        for (label, d) in &timings {
            eprintln!("{label}: {d:?}");
        }
        // Timing only means something with optimisations on.
        if !cfg!(debug_assertions) {
            assert!(
                total < Duration::from_millis(1000),
                "took {total:?}: {timings:?}"
            );
        }
    }
}
