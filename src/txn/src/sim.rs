//! A seeded random walk over the coordinator: requests from current and stale producers,
//! writes that succeed, fail or are lost in a crash, markers, timeouts, expiry and reloads
//! from the log, checking after every step that the coordinator keeps its invariants.
//! `SLUICE_TXN_SIM_SEEDS=N` runs more seeds; a failing seed is printed and replays alone
//! with `SLUICE_TXN_SIM_SEED=S`.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;

use crate::records;
use crate::*;

const IDS: [&str; 3] = ["a", "b", "c"];
const STEPS: usize = 400;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

struct World {
    c: TxnCoordinator,
    now: i64,
    next_pid: i64,
    next_token: u64,
    /// Durable records, in order.
    log: Vec<(Bytes, Option<Bytes>)>,
    /// Writes asked for and not yet finished.
    writes: Vec<(WriteId, Bytes, Option<Bytes>)>,
    markers: Vec<Markers>,
    answered: HashSet<ReplyToken>,
    /// Per id, the (producer id, epoch) of the last successful InitProducerId.
    granted: BTreeMap<String, (i64, i16)>,
    /// Tokens of EndTxn requests by id and outcome, to check their answers.
    ends: BTreeMap<ReplyToken, (String, bool)>,
    coordinator_epoch: i32,
    seen: Seen,
}

/// What a walk reached, so the test can tell the walks cover the state machine.
#[derive(Default, Clone, Copy)]
struct Seen {
    commits: u64,
    aborts: u64,
    fences: u64,
    reloads: u64,
    failed_writes: u64,
    rotations: u64,
    /// EndTxn v5 answers that moved the producer on (transaction version 2).
    tv2_ends: u64,
}

fn last_state(log: &[(Bytes, Option<Bytes>)], id: &str) -> Option<records::TxnValue> {
    log.iter()
        .rev()
        .find(|(k, _)| records::decode_key(k).as_deref() == Ok(id))
        .and_then(|(_, v)| v.as_ref().map(|v| records::decode_value(v).unwrap()))
}

impl World {
    fn new() -> Self {
        let mut c = TxnCoordinator::new(config(), 0);
        assert!(c
            .finish_replay(0)
            .iter()
            .all(|e| matches!(e, Effect::ScheduleTick { .. })));
        World {
            c,
            now: 0,
            next_pid: 100,
            next_token: 0,
            log: Vec::new(),
            writes: Vec::new(),
            markers: Vec::new(),
            answered: HashSet::new(),
            granted: BTreeMap::new(),
            ends: BTreeMap::new(),
            coordinator_epoch: 0,
            seen: Seen::default(),
        }
    }

    fn token(&mut self) -> ReplyToken {
        self.next_token += 1;
        ReplyToken(self.next_token)
    }

    fn take(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, r) => self.reply(t, r),
                Effect::Persist { write, key, value } => self.writes.push((write, key, value)),
                Effect::WriteMarkers(m) => {
                    // Asked for only once the Prepare record naming them is durable.
                    let v = last_state(&self.log, &m.transactional_id).expect("a durable state");
                    let want = if m.commit {
                        TxnState::PrepareCommit
                    } else {
                        TxnState::PrepareAbort
                    };
                    assert_eq!(v.state, want, "markers for {m:?}");
                    assert_eq!(
                        (v.producer_id, v.producer_epoch),
                        (m.producer_id, m.producer_epoch)
                    );
                    assert_eq!(m.coordinator_epoch, self.coordinator_epoch);
                    self.markers.push(m);
                }
                Effect::ScheduleTick { at_ms } => assert!(at_ms >= 0),
            }
        }
    }

    fn reply(&mut self, t: ReplyToken, r: Reply) {
        assert!(self.answered.insert(t), "token {t:?} answered twice");
        match r {
            Reply::InitProducerId {
                error: code::NONE,
                producer_id,
                producer_epoch,
            } => {
                // The id's durable state is what was handed out.
                let id = self
                    .log
                    .iter()
                    .rev()
                    .find_map(|(k, v)| {
                        let v = records::decode_value(v.as_ref()?).ok()?;
                        (v.producer_id == producer_id && v.producer_epoch == producer_epoch)
                            .then(|| records::decode_key(k).unwrap())
                    })
                    .expect("an InitProducerId answer is durable");
                let v = last_state(&self.log, &id).unwrap();
                assert_eq!(v.state, TxnState::Empty);
                if producer_epoch == 0
                    && self
                        .granted
                        .get(&id)
                        .is_some_and(|&(p, _)| p != producer_id)
                {
                    self.seen.rotations += 1;
                }
                if let Some(&(pid, epoch)) = self.granted.get(&id) {
                    assert!(
                        producer_id != pid || producer_epoch >= epoch,
                        "{id}: epoch went back from {epoch} to {producer_epoch}"
                    );
                }
                self.granted.insert(id, (producer_id, producer_epoch));
            }
            Reply::InitProducerId {
                error: code::CONCURRENT_TRANSACTIONS,
                ..
            } => self.seen.fences += 1,
            Reply::EndTxn {
                error: code::NONE,
                producer_id,
                producer_epoch,
            } => {
                if let Some((id, commit)) = self.ends.remove(&t) {
                    let v = last_state(&self.log, &id).expect("durable");
                    let want = if commit {
                        TxnState::CompleteCommit
                    } else {
                        TxnState::CompleteAbort
                    };
                    assert_eq!(v.state, want, "{id}: EndTxn answered before it completed");
                    if producer_id >= 0 {
                        // Transaction version 2: the answer is the durable id and epoch,
                        // which the producer uses from now on.
                        assert_eq!(
                            (v.producer_id, v.producer_epoch),
                            (producer_id, producer_epoch),
                            "{id}: EndTxn v5 answered another epoch than the log's"
                        );
                        if let Some(&(pid, epoch)) = self.granted.get(&id) {
                            // (A retry's answer repeats the first one's.)
                            assert!(
                                producer_id != pid || producer_epoch >= epoch,
                                "{id}: a version 2 end moved the epoch back"
                            );
                        }
                        self.granted
                            .insert(id.clone(), (producer_id, producer_epoch));
                        self.seen.tv2_ends += 1;
                    }
                    if commit {
                        self.seen.commits += 1;
                    } else {
                        self.seen.aborts += 1;
                    }
                }
            }
            _ => {}
        }
    }

    /// A fresh coordinator from the durable log, as after a crash or a move.
    fn reload(&mut self) {
        self.seen.reloads += 1;
        self.coordinator_epoch += 1;
        let mut c = TxnCoordinator::new(config(), self.coordinator_epoch);
        for (k, v) in &self.log {
            c.replay(k, v.as_deref()).unwrap();
        }
        self.c = c;
        self.writes.clear();
        self.markers.clear();
        let e = self.c.finish_replay(self.now);
        self.take(e);
    }

    /// With no write in flight, memory matches the log: a replay describes every id alike.
    fn check_matches_log(&self) {
        if !self.writes.is_empty() {
            return;
        }
        let mut fresh = TxnCoordinator::new(config(), 99);
        for (k, v) in &self.log {
            fresh.replay(k, v.as_deref()).unwrap();
        }
        let _ = fresh.finish_replay(self.now);
        for id in IDS {
            assert_eq!(
                self.c.describe(id),
                fresh.describe(id),
                "{id}: memory and log differ"
            );
        }
    }

    fn step(&mut self, rng: &mut Rng) {
        let id = *rng.pick(&IDS);
        // The producer's own id and epoch, or a stale/unknown one.
        let (pid, epoch) = match (self.granted.get(id), rng.below(5)) {
            (Some(&(p, e)), 0) => (p, e.saturating_sub(1)),
            (Some(&(p, e)), _) => (p, e),
            (None, _) => (1, 0),
        };
        match rng.below(12) {
            0 | 1 => {
                let t = self.token();
                let (p, e) = if rng.below(3) == 0 {
                    (pid, epoch)
                } else {
                    (-1, -1)
                };
                let mut next = self.next_pid;
                let effects = self
                    .c
                    .init_producer_id(t, self.now, id, 3_000, p, e, &mut || {
                        next += 1;
                        Some(next)
                    });
                self.next_pid = next;
                self.take(effects);
            }
            2 | 3 => {
                let t = self.token();
                let parts = [("t".to_string(), rng.below(4) as i32)];
                let effects = self.c.add_partitions(t, self.now, id, pid, epoch, &parts);
                self.take(effects);
            }
            4 => {
                let t = self.token();
                let commit = rng.below(2) == 0;
                self.ends.insert(t, (id.to_string(), commit));
                let tv2 = rng.below(2) == 0;
                let mut next = self.next_pid;
                let effects = self
                    .c
                    .end_txn(t, self.now, id, pid, epoch, commit, tv2, &mut || {
                        next += 1;
                        Some(next)
                    });
                self.next_pid = next;
                self.take(effects);
            }
            5..=7 if !self.writes.is_empty() => {
                let i = rng.below(self.writes.len() as u64) as usize;
                // Writes finish in the order they were asked for per id; any order across
                // ids. (One write per id is in flight, so any pick is fine.)
                let (w, k, v) = self.writes.remove(i);
                let result = if rng.below(8) == 0 {
                    self.seen.failed_writes += 1;
                    Err(code::COORDINATOR_NOT_AVAILABLE)
                } else {
                    self.log.push((k, v));
                    Ok(())
                };
                let effects = self.c.persisted(w, result, self.now);
                self.take(effects);
            }
            8 if !self.markers.is_empty() => {
                let m = self.markers.remove(0);
                let effects = self.c.markers_written(
                    &m.transactional_id,
                    m.producer_id,
                    m.producer_epoch,
                    self.now,
                );
                self.take(effects);
            }
            9 => {
                self.now += rng.below(2_000) as i64;
                let effects = self.c.tick(self.now);
                self.take(effects);
            }
            10 if rng.below(6) == 0 => self.reload(),
            _ => {}
        }
        self.check_matches_log();
    }
}

fn config() -> TxnConfig {
    TxnConfig {
        id_expiration_ms: 20_000,
        ..TxnConfig::default()
    }
}

fn run(seed: u64) -> Seen {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut w = World::new();
    if seed.is_multiple_of(4) {
        // Every id a few bumps short of the exhausted epoch: rotations and fences at the
        // limit.
        for (i, id) in IDS.iter().enumerate() {
            let value = records::encode_value(&records::TxnValue {
                producer_id: 10 + i as i64,
                previous_producer_id: -1,
                next_producer_id: -1,
                producer_epoch: PRODUCER_EPOCH_EXHAUSTED - 3,
                timeout_ms: 3_000,
                state: TxnState::CompleteCommit,
                partitions: Default::default(),
                last_update_ms: 0,
                start_ms: 0,
                client_transaction_version: 0,
            });
            w.log.push((records::encode_key(id), Some(value)));
        }
        w.reload();
    }
    for _ in 0..STEPS {
        w.step(&mut rng);
    }
    w.seen
}

#[test]
fn random_walks_keep_the_invariants() {
    if let Ok(seed) = std::env::var("SLUICE_TXN_SIM_SEED") {
        run(seed.parse().expect("a seed"));
        return;
    }
    let seeds: u64 = std::env::var("SLUICE_TXN_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut total = Seen::default();
    for seed in 0..seeds {
        let r = std::panic::catch_unwind(|| run(seed));
        let Ok(seen) = r else {
            panic!("seed {seed} failed; replay with SLUICE_TXN_SIM_SEED={seed}");
        };
        total.commits += seen.commits;
        total.aborts += seen.aborts;
        total.fences += seen.fences;
        total.reloads += seen.reloads;
        total.failed_writes += seen.failed_writes;
        total.rotations += seen.rotations;
        total.tv2_ends += seen.tv2_ends;
    }
    // The walks reach what they are meant to check.
    let Seen {
        commits,
        aborts,
        fences,
        reloads,
        failed_writes,
        rotations,
        tv2_ends,
    } = total;
    eprintln!(
        "{seeds} walks: {commits} commits, {aborts} aborts, {fences} fences, {reloads} reloads, \
         {failed_writes} failed writes, {rotations} producer id rotations, {tv2_ends} \
         version 2 ends"
    );
    assert!(commits > 0 && aborts > 0 && fences > 0 && reloads > 0 && failed_writes > 0);
    assert!(rotations > 0 && tv2_ends > 0);
}
