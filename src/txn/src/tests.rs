//! The coordinator driven by hand with a fake clock: the transaction state machine, fencing,
//! timeouts, expiry, replay, failed writes, and every error code for bad requests.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::records::{self, TxnValue};
use crate::*;

const TID: &str = "txn-a";

/// A coordinator plus a fake log, a producer id source and the effects not yet performed.
struct Harness {
    c: TxnCoordinator,
    now: i64,
    next_pid: i64,
    /// Every durable record, in order: what a restart replays.
    log: Vec<(Bytes, Option<Bytes>)>,
    /// Persist effects not yet completed.
    writes: Vec<(WriteId, Bytes, Option<Bytes>)>,
    markers: Vec<Markers>,
    replies: Vec<(ReplyToken, Reply)>,
    ticks: Vec<i64>,
    token: u64,
}

impl Harness {
    fn new() -> Self {
        Self::with(TxnConfig::default())
    }

    fn with(config: TxnConfig) -> Self {
        let mut c = TxnCoordinator::new(config, 7);
        assert!(c.finish_replay(0).is_empty());
        Harness {
            c,
            now: 1_000,
            next_pid: 1000,
            log: Vec::new(),
            writes: Vec::new(),
            markers: Vec::new(),
            replies: Vec::new(),
            ticks: Vec::new(),
            token: 0,
        }
    }

    fn take(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Reply(t, r) => self.replies.push((t, r)),
                Effect::Persist { write, key, value } => self.writes.push((write, key, value)),
                Effect::WriteMarkers(m) => self.markers.push(m),
                Effect::ScheduleTick { at_ms } => self.ticks.push(at_ms),
            }
        }
    }

    fn token(&mut self) -> ReplyToken {
        self.token += 1;
        ReplyToken(self.token)
    }

    /// Completes every pending write durably (and the writes that follows from them).
    fn persist_all(&mut self) {
        while !self.writes.is_empty() {
            let (w, k, v) = self.writes.remove(0);
            self.log.push((k, v));
            let e = self.c.persisted(w, Ok(()), self.now);
            self.take(e);
        }
    }

    /// Writes every marker asked for, then persists what follows.
    fn markers_all(&mut self) {
        self.persist_all();
        while !self.markers.is_empty() {
            let m = self.markers.remove(0);
            let e = self.c.markers_written(
                &m.transactional_id,
                m.producer_id,
                m.producer_epoch,
                self.now,
            );
            self.take(e);
            self.persist_all();
        }
    }

    fn reply(&mut self, t: ReplyToken) -> Option<Reply> {
        let i = self.replies.iter().position(|(x, _)| *x == t)?;
        let (_, r) = self.replies.remove(i);
        assert!(
            !self.replies.iter().any(|(x, _)| *x == t),
            "token {t:?} answered twice"
        );
        Some(r)
    }

    fn init_raw(&mut self, id: &str, timeout: i32, pid: i64, epoch: i16) -> ReplyToken {
        let t = self.token();
        let mut next = self.next_pid;
        let e = self
            .c
            .init_producer_id(t, self.now, id, timeout, pid, epoch, &mut || {
                next += 1;
                Some(next)
            });
        self.next_pid = next;
        self.take(e);
        t
    }

    /// InitProducerId run to its answer (writes persisted): `(error, pid, epoch)`.
    fn init_with(&mut self, id: &str, pid: i64, epoch: i16) -> (i16, i64, i16) {
        let t = self.init_raw(id, 60_000, pid, epoch);
        self.markers_all();
        match self.reply(t).expect("init answered") {
            Reply::InitProducerId {
                error,
                producer_id,
                producer_epoch,
            } => (error, producer_id, producer_epoch),
            r => panic!("unexpected {r:?}"),
        }
    }

    fn init(&mut self, id: &str) -> (i64, i16) {
        let (e, pid, epoch) = self.init_with(id, -1, -1);
        assert_eq!(e, code::NONE);
        (pid, epoch)
    }

    fn add(&mut self, id: &str, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> i16 {
        let t = self.token();
        let parts: Vec<(String, i32)> = parts.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let e = self.c.add_partitions(t, self.now, id, pid, epoch, &parts);
        self.take(e);
        self.persist_all();
        match self.reply(t).expect("add answered") {
            Reply::AddPartitions { error } => error,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn end_raw(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> ReplyToken {
        let t = self.token();
        let e = self
            .c
            .end_txn(t, self.now, id, pid, epoch, commit, false, &mut || None);
        self.take(e);
        t
    }

    /// EndTxn run to its answer, markers included.
    fn end(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
        let t = self.end_raw(id, pid, epoch, commit);
        self.markers_all();
        match self.reply(t).expect("end answered") {
            Reply::EndTxn { error, .. } => error,
            r => panic!("unexpected {r:?}"),
        }
    }

    fn state(&self, id: &str) -> TxnState {
        self.c.describe(id).unwrap().state
    }

    fn tick(&mut self, now: i64) {
        self.now = now;
        let e = self.c.tick(now);
        self.take(e);
    }
}

fn last_value(h: &Harness) -> TxnValue {
    let (_, v) = h.log.last().expect("a record");
    records::decode_value(v.as_ref().expect("a value")).unwrap()
}

#[test]
fn a_new_id_gets_epoch_zero_once_its_record_is_durable() {
    let mut h = Harness::new();
    let t = h.init_raw(TID, 60_000, -1, -1);
    assert!(
        h.replies.is_empty(),
        "answered before the record is durable"
    );
    assert_eq!(h.writes.len(), 1);
    h.persist_all();
    assert_eq!(
        h.reply(t),
        Some(Reply::InitProducerId {
            error: code::NONE,
            producer_id: 1001,
            producer_epoch: 0
        })
    );
    let v = last_value(&h);
    assert_eq!(
        (v.producer_id, v.producer_epoch, v.state),
        (1001, 0, TxnState::Empty)
    );
    assert_eq!(records::decode_key(&h.log[0].0).unwrap(), TID);
    // The next InitProducerId bumps the epoch of the same id.
    assert_eq!(h.init(TID), (1001, 1));
}

#[test]
fn commit_writes_markers_before_end_txn_is_answered() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0), ("t", 1)]), code::NONE);
    assert_eq!(h.state(TID), TxnState::Ongoing);
    // Already in the transaction: answered without a write.
    let before = h.log.len();
    assert_eq!(h.add(TID, pid, epoch, &[("t", 1)]), code::NONE);
    assert_eq!(h.log.len(), before);
    assert_eq!(h.add(TID, pid, epoch, &[("u", 3)]), code::NONE);

    let t = h.end_raw(TID, pid, epoch, true);
    h.persist_all();
    assert_eq!(h.state(TID), TxnState::PrepareCommit);
    assert!(h.reply(t).is_none(), "answered before the markers");
    assert_eq!(
        h.markers,
        vec![Markers {
            transactional_id: TID.into(),
            producer_id: pid,
            producer_epoch: epoch,
            commit: true,
            coordinator_epoch: 7,
            partitions: vec![("t".into(), 0), ("t".into(), 1), ("u".into(), 3)],
        }]
    );
    // A retry meanwhile is told to wait; the other outcome is refused.
    let retry = h.end_raw(TID, pid, epoch, true);
    assert_eq!(
        h.reply(retry),
        Some(Reply::EndTxn {
            error: code::CONCURRENT_TRANSACTIONS,
            producer_id: -1,
            producer_epoch: -1,
        })
    );
    let wrong = h.end_raw(TID, pid, epoch, false);
    assert_eq!(
        h.reply(wrong),
        Some(Reply::EndTxn {
            error: code::INVALID_TXN_STATE,
            producer_id: -1,
            producer_epoch: -1,
        })
    );
    // So is adding partitions.
    let t2 = h.token();
    let e =
        h.c.add_partitions(t2, h.now, TID, pid, epoch, &[("t".into(), 5)]);
    h.take(e);
    assert_eq!(
        h.reply(t2),
        Some(Reply::AddPartitions {
            error: code::CONCURRENT_TRANSACTIONS
        })
    );

    h.markers_all();
    assert_eq!(
        h.reply(t),
        Some(Reply::EndTxn {
            error: code::NONE,
            producer_id: -1,
            producer_epoch: -1
        })
    );
    assert_eq!(h.state(TID), TxnState::CompleteCommit);
    let v = last_value(&h);
    assert_eq!(v.state, TxnState::CompleteCommit);
    assert!(v.partitions.is_empty());
    // A retry of the completed commit succeeds; an abort of it is refused.
    assert_eq!(h.end(TID, pid, epoch, true), code::NONE);
    assert_eq!(h.end(TID, pid, epoch, false), code::INVALID_TXN_STATE);
    // The next transaction starts from CompleteCommit.
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    assert_eq!(h.end(TID, pid, epoch, false), code::NONE);
    assert_eq!(h.state(TID), TxnState::CompleteAbort);
}

#[test]
fn a_second_producer_fences_the_first_and_aborts_its_transaction() {
    let mut h = Harness::new();
    let (pid, e0) = h.init(TID);
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::NONE);

    // The zombie's successor: its first InitProducerId aborts the open transaction under a
    // bumped epoch and is told to retry.
    let t = h.init_raw(TID, 60_000, -1, -1);
    h.persist_all();
    assert_eq!(
        h.reply(t),
        Some(Reply::InitProducerId {
            error: code::CONCURRENT_TRANSACTIONS,
            producer_id: -1,
            producer_epoch: -1
        })
    );
    assert_eq!(h.state(TID), TxnState::PrepareAbort);
    assert_eq!(h.markers.len(), 1);
    assert!(!h.markers[0].commit);
    assert_eq!(h.markers[0].producer_epoch, e0 + 1);
    // The zombie can neither commit nor add.
    let z = h.end_raw(TID, pid, e0, true);
    assert_eq!(
        h.reply(z),
        Some(Reply::EndTxn {
            error: code::PRODUCER_FENCED,
            producer_id: -1,
            producer_epoch: -1,
        })
    );
    h.markers_all();
    assert_eq!(h.state(TID), TxnState::CompleteAbort);
    assert_eq!(h.init(TID), (pid, e0 + 2));
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::PRODUCER_FENCED);
    assert_eq!(h.end(TID, pid, e0 + 1, false), code::PRODUCER_FENCED);
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let mut h = Harness::new();
    let t = h.init_raw(TID, 5_000, -1, -1);
    h.persist_all();
    let Some(Reply::InitProducerId {
        producer_id: pid,
        producer_epoch: epoch,
        ..
    }) = h.reply(t)
    else {
        panic!()
    };
    h.now = 10_000;
    h.ticks.clear();
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    assert_eq!(h.ticks, vec![15_000], "a tick at the timeout");
    h.tick(14_999);
    assert!(h.writes.is_empty());
    assert_eq!(h.state(TID), TxnState::Ongoing);
    h.tick(15_000);
    h.markers_all();
    assert_eq!(h.state(TID), TxnState::CompleteAbort);
    let v = last_value(&h);
    assert_eq!(v.producer_epoch, epoch + 1, "the abort bumped the epoch");
    assert_eq!(h.end(TID, pid, epoch, true), code::PRODUCER_FENCED);
    // KIP-360 recovery with its id and old epoch does not help it: that epoch is neither
    // the current one nor the last one a producer asked to bump.
    assert_eq!(h.init_with(TID, pid, epoch).0, code::PRODUCER_FENCED);
    // A fresh InitProducerId (no id given) takes over.
    assert_eq!(h.init(TID), (pid, epoch + 2));
}

#[test]
fn kip_360_a_producer_bumps_its_own_epoch_and_a_retry_gets_the_same_answer() {
    let mut h = Harness::new();
    let (pid, e0) = h.init(TID);
    assert_eq!(h.init_with(TID, pid, e0), (code::NONE, pid, e0 + 1));
    // The answer was lost; the retry names the old epoch again.
    assert_eq!(h.init_with(TID, pid, e0), (code::NONE, pid, e0 + 1));
    // An epoch that is neither current nor last is fenced; so is another producer id.
    assert_eq!(h.init_with(TID, pid, e0 + 5).0, code::PRODUCER_FENCED);
    assert_eq!(h.init_with(TID, pid + 1, e0 + 1).0, code::PRODUCER_FENCED);
    // A plain InitProducerId clears the last epoch: the old retry is now fenced.
    assert_eq!(h.init(TID), (pid, e0 + 2));
    assert_eq!(h.init_with(TID, pid, e0).0, code::PRODUCER_FENCED);
}

#[test]
fn an_exhausted_epoch_rotates_to_a_new_producer_id() {
    let mut h = Harness::new();
    let (pid, _) = h.init(TID);
    // Replay a record at the exhausted epoch: as if 32k InitProducerIds had run.
    let mut c = TxnCoordinator::new(TxnConfig::default(), 8);
    let value = records::encode_value(&TxnValue {
        producer_id: pid,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: PRODUCER_EPOCH_EXHAUSTED,
        timeout_ms: 60_000,
        state: TxnState::CompleteCommit,
        partitions: BTreeSet::new(),
        last_update_ms: 1_000,
        start_ms: 500,
        client_transaction_version: 0,
    });
    c.replay(&records::encode_key(TID), Some(&value)).unwrap();
    h.c = c;
    let _ = h.c.finish_replay(h.now);
    let (e, new_pid, epoch) = h.init_with(TID, pid, PRODUCER_EPOCH_EXHAUSTED);
    assert_eq!(e, code::NONE);
    assert_ne!(new_pid, pid);
    assert_eq!(epoch, 0);
    // A producer naming the old id with an older epoch is fenced, not bumped past the limit.
    assert_eq!(
        h.init_with(TID, pid, 5).0,
        code::PRODUCER_FENCED,
        "an older epoch of the old id"
    );
    // The retry of that rotation (old id, exhausted epoch) gets the same answer.
    assert_eq!(
        h.init_with(TID, pid, PRODUCER_EPOCH_EXHAUSTED),
        (code::NONE, new_pid, 0)
    );
}

#[test]
fn bad_requests_get_kafkas_codes_and_write_nothing() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    let written = h.log.len();
    let init = |h: &mut Harness, id: &str, timeout: i32, p: i64, e: i16| {
        let t = h.init_raw(id, timeout, p, e);
        match h.reply(t) {
            Some(Reply::InitProducerId { error, .. }) => error,
            r => panic!("{r:?}"),
        }
    };
    assert_eq!(init(&mut h, "", 1000, -1, -1), code::INVALID_REQUEST);
    assert_eq!(init(&mut h, TID, 1000, -1, 3), code::INVALID_REQUEST);
    assert_eq!(init(&mut h, TID, 1000, 5, -1), code::INVALID_REQUEST);
    assert_eq!(
        init(&mut h, TID, 0, -1, -1),
        code::INVALID_TRANSACTION_TIMEOUT
    );
    assert_eq!(
        init(&mut h, TID, TRANSACTION_MAX_TIMEOUT_MS + 1, -1, -1),
        code::INVALID_TRANSACTION_TIMEOUT
    );
    // EndTxn without InitProducerId, wrong ids, wrong epochs, wrong states.
    assert_eq!(
        h.end("nobody", pid, epoch, true),
        code::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        h.end(TID, pid + 1, epoch, true),
        code::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(h.end(TID, pid, epoch + 1, true), code::PRODUCER_FENCED);
    assert_eq!(h.end(TID, pid, epoch, true), code::INVALID_TXN_STATE);
    assert_eq!(h.end("", pid, epoch, true), code::INVALID_REQUEST);
    assert_eq!(
        h.add("nobody", pid, epoch, &[("t", 0)]),
        code::INVALID_PRODUCER_ID_MAPPING
    );
    assert_eq!(
        h.add(TID, pid, epoch - 1, &[("t", 0)]),
        code::PRODUCER_FENCED
    );
    assert_eq!(h.add("", pid, epoch, &[("t", 0)]), code::INVALID_REQUEST);
    assert_eq!(h.log.len(), written, "nothing stored");
    assert!(h.writes.is_empty());

    // Not loaded yet; no producer id to hand out; no room for another id.
    let mut fresh = TxnCoordinator::new(TxnConfig::default(), 1);
    let t = ReplyToken(99);
    let e = fresh.init_producer_id(t, 0, TID, 1000, -1, -1, &mut || Some(1));
    assert_eq!(
        e,
        vec![Effect::Reply(
            t,
            Reply::InitProducerId {
                error: code::COORDINATOR_LOAD_IN_PROGRESS,
                producer_id: -1,
                producer_epoch: -1
            }
        )]
    );
    let _ = fresh.finish_replay(0);
    let e = fresh.init_producer_id(t, 0, TID, 1000, -1, -1, &mut || None);
    assert!(matches!(
        &e[..],
        [Effect::Reply(
            _,
            Reply::InitProducerId {
                error: code::COORDINATOR_LOAD_IN_PROGRESS,
                ..
            }
        )]
    ));
    let mut full = Harness::with(TxnConfig {
        ids_max: 1,
        ..TxnConfig::default()
    });
    full.init("one");
    assert_eq!(
        init(&mut full, "two", 1000, -1, -1),
        code::COORDINATOR_NOT_AVAILABLE
    );
    assert_eq!(full.c.len(), 1);
}

#[test]
fn fenced_code_follows_the_request_version() {
    assert_eq!(
        fenced_code(FencedApi::InitProducerId, 3),
        code::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        fenced_code(FencedApi::InitProducerId, 4),
        code::PRODUCER_FENCED
    );
    assert_eq!(
        fenced_code(FencedApi::EndTxn, 1),
        code::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(fenced_code(FencedApi::EndTxn, 2), code::PRODUCER_FENCED);
    assert_eq!(
        fenced_code(FencedApi::TxnOffsetCommit, 2),
        code::INVALID_PRODUCER_EPOCH
    );
    assert_eq!(
        fenced_code(FencedApi::TxnOffsetCommit, 3),
        code::PRODUCER_FENCED
    );
}

#[test]
fn a_failed_write_changes_nothing_and_a_retried_fence_picks_the_same_epoch() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    let t = h.token();
    let e =
        h.c.add_partitions(t, h.now, TID, pid, epoch, &[("t".into(), 0)]);
    h.take(e);
    let (w, _, _) = h.writes.remove(0);
    let e =
        h.c.persisted(w, Err(code::COORDINATOR_NOT_AVAILABLE), h.now);
    h.take(e);
    assert_eq!(
        h.reply(t),
        Some(Reply::AddPartitions {
            error: code::COORDINATOR_NOT_AVAILABLE
        })
    );
    assert_eq!(h.state(TID), TxnState::Empty);
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);

    // A fence whose write fails: the retry aborts under the same bumped epoch.
    let t = h.init_raw(TID, 60_000, -1, -1);
    let (w, _, v) = h.writes.remove(0);
    let fenced = records::decode_value(v.as_ref().unwrap())
        .unwrap()
        .producer_epoch;
    assert_eq!(fenced, epoch + 1);
    let e =
        h.c.persisted(w, Err(code::COORDINATOR_NOT_AVAILABLE), h.now);
    h.take(e);
    assert!(matches!(
        h.reply(t),
        Some(Reply::InitProducerId {
            error: code::COORDINATOR_NOT_AVAILABLE,
            ..
        })
    ));
    assert_eq!(h.state(TID), TxnState::Ongoing);
    let t = h.init_raw(TID, 60_000, -1, -1);
    let v = h.writes[0].2.clone().unwrap();
    assert_eq!(records::decode_value(&v).unwrap().producer_epoch, fenced);
    h.markers_all();
    assert!(h.reply(t).is_some());
    assert_eq!(h.init(TID), (pid, fenced + 1));
}

#[test]
fn replaying_the_log_rebuilds_the_state_and_resumes_markers() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    let (pid_b, epoch_b) = h.init("txn-b");
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    assert_eq!(
        h.add("txn-b", pid_b, epoch_b, &[("t", 1), ("u", 0)]),
        code::NONE
    );
    // txn-b's commit is durable, its markers are not written: a crash now.
    let _ = h.end_raw("txn-b", pid_b, epoch_b, true);
    h.persist_all();
    assert_eq!(h.markers.len(), 1);

    let mut c = TxnCoordinator::new(TxnConfig::default(), 8);
    for (k, v) in &h.log {
        c.replay(k, v.as_deref()).unwrap();
    }
    assert!(
        c.describe(TID).is_err(),
        "not served before the replay ends"
    );
    let effects = c.finish_replay(h.now);
    let markers: Vec<&Markers> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::WriteMarkers(m) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(markers.len(), 1);
    assert_eq!(markers[0].transactional_id, "txn-b");
    assert!(markers[0].commit);
    assert_eq!(
        markers[0].coordinator_epoch, 8,
        "the new coordinator's epoch"
    );
    assert_eq!(markers[0].partitions.len(), 2);
    let a = c.describe(TID).unwrap();
    assert_eq!(
        (a.producer_id, a.producer_epoch, a.state),
        (pid, epoch, TxnState::Ongoing)
    );
    assert_eq!(a.partitions, vec![("t".to_string(), 0)]);
    // The old coordinator is gone; the new one completes txn-b.
    h.c = c;
    h.markers.clear();
    let e = h.c.markers_written("txn-b", pid_b, epoch_b, h.now);
    h.take(e);
    h.persist_all();
    assert_eq!(h.state("txn-b"), TxnState::CompleteCommit);
    // Stale or repeated marker completions are ignored.
    assert!(h
        .c
        .markers_written("txn-b", pid_b, epoch_b, h.now)
        .is_empty());
    assert!(h.c.markers_written(TID, pid, epoch, h.now).is_empty());
}

#[test]
fn idle_ids_expire_with_a_tombstone() {
    let mut h = Harness::with(TxnConfig {
        id_expiration_ms: 10_000,
        ..TxnConfig::default()
    });
    let (pid, epoch) = h.init(TID);
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    // An open transaction never expires (it times out first); a completed one does.
    assert_eq!(h.end(TID, pid, epoch, true), code::NONE);
    h.tick(h.now + 9_999);
    assert!(h.writes.is_empty());
    h.tick(h.now + 1);
    assert_eq!(h.writes.len(), 1);
    assert!(h.writes[0].2.is_none(), "a tombstone");
    h.persist_all();
    assert_eq!(h.c.describe(TID), Err(code::TRANSACTIONAL_ID_NOT_FOUND));
    assert!(h.c.is_empty());
    // Replaying the tombstone forgets the id too.
    let mut c = TxnCoordinator::new(TxnConfig::default(), 1);
    for (k, v) in &h.log {
        c.replay(k, v.as_deref()).unwrap();
    }
    let _ = c.finish_replay(h.now);
    assert!(c.is_empty());
}

#[test]
fn add_offsets_adds_the_groups_offsets_partition() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    let t = h.token();
    let e = h.c.add_offsets(t, h.now, TID, pid, epoch, "my-group");
    h.take(e);
    h.persist_all();
    assert_eq!(h.reply(t), Some(Reply::AddPartitions { error: code::NONE }));
    let p = sluice_group::partition_for("my-group", 50);
    assert_eq!(
        h.c.describe(TID).unwrap().partitions,
        vec![(OFFSETS_TOPIC.to_string(), p)]
    );
}

#[test]
fn describe_and_list_filter_as_kafka_does() {
    let mut h = Harness::new();
    let (pid, epoch) = h.init(TID);
    h.init("txn-b");
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    let all = h.c.list(&[], &[], -1, h.now).unwrap();
    assert_eq!(all.len(), 2);
    let ongoing = h.c.list(&[TxnState::Ongoing], &[], -1, h.now).unwrap();
    assert_eq!(ongoing.len(), 1);
    assert_eq!(ongoing[0].transactional_id, TID);
    assert_eq!(h.c.list(&[], &[pid], -1, h.now).unwrap().len(), 1);
    // Running for at least 5 s: none yet, then the open one.
    assert!(h.c.list(&[], &[], 5_000, h.now).unwrap().is_empty());
    assert_eq!(h.c.list(&[], &[], 5_000, h.now + 5_000).unwrap().len(), 1);
    assert_eq!(
        h.c.describe("nobody"),
        Err(code::TRANSACTIONAL_ID_NOT_FOUND)
    );
    assert_eq!(h.c.describe(""), Err(code::INVALID_REQUEST));
    assert_eq!(
        TxnState::from_name("PrepareCommit"),
        Some(TxnState::PrepareCommit)
    );
    assert_eq!(TxnState::from_name("Bogus"), None);
}

#[test]
fn partition_for_matches_kafkas_hash() {
    // Utils.abs("my-txn".hashCode()) % 50, as Kafka's coordinator places it.
    let java_hash = "my-txn"
        .chars()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32));
    assert_eq!(partition_for("my-txn", 50), java_hash.abs() % 50);
}

#[test]
fn records_round_trip_and_read_value_v1() {
    let mut parts = BTreeSet::new();
    parts.insert(("a".to_string(), 2));
    parts.insert(("a".to_string(), 0));
    parts.insert(("b".to_string(), 1));
    let v = TxnValue {
        producer_id: 42,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: 3,
        timeout_ms: 60_000,
        state: TxnState::Ongoing,
        partitions: parts.clone(),
        last_update_ms: 11,
        start_ms: 10,
        client_transaction_version: 0,
    };
    assert_eq!(
        records::decode_value(&records::encode_value(&v)).unwrap(),
        v
    );
    assert_eq!(records::decode_key(&records::encode_key("x")).unwrap(), "x");

    // v1 (flexible), as Kafka writes it for transaction version 2, by hand.
    let mut b: Vec<u8> = vec![0, 1];
    b.extend(42i64.to_be_bytes());
    b.extend(3i16.to_be_bytes());
    b.extend(60_000i32.to_be_bytes());
    b.push(1); // Ongoing
    b.push(3); // two topics
    for (t, ps) in [("a", vec![0i32, 2]), ("b", vec![1])] {
        b.push(t.len() as u8 + 1);
        b.extend(t.as_bytes());
        b.push(ps.len() as u8 + 1);
        for p in ps {
            b.extend(p.to_be_bytes());
        }
        b.push(0); // no tagged fields
    }
    b.extend(11i64.to_be_bytes());
    b.extend(10i64.to_be_bytes());
    b.push(3); // three tagged fields
    b.extend([0, 8]);
    b.extend(41i64.to_be_bytes());
    b.extend([1, 8]);
    b.extend(43i64.to_be_bytes());
    b.extend([2, 2]);
    b.extend(2i16.to_be_bytes());
    let got = records::decode_value(&b).unwrap();
    assert_eq!(
        got,
        TxnValue {
            previous_producer_id: 41,
            next_producer_id: 43,
            client_transaction_version: 2,
            ..v
        }
    );
}

#[test]
fn garbage_records_are_errors_not_panics() {
    let mut c = TxnCoordinator::new(TxnConfig::default(), 1);
    let key = records::encode_key(TID);
    let good = records::encode_value(&TxnValue {
        producer_id: 1,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: 0,
        timeout_ms: 1000,
        state: TxnState::Ongoing,
        partitions: [("t".to_string(), 0)].into_iter().collect(),
        last_update_ms: 0,
        start_ms: 0,
        client_transaction_version: 0,
    });
    // Every truncation, and a seeded stream of byte flips.
    for n in 0..good.len() {
        assert!(c.replay(&key, Some(&good[..n])).is_err(), "prefix {n}");
    }
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..2000 {
        let mut bad = good.to_vec();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % bad.len();
            bad[i] = (x >> 32) as u8;
        }
        let _ = c.replay(&key, Some(&bad));
        let _ = records::decode_key(&bad);
    }
    assert!(c.replay(&[0, 9, 0, 0], Some(&good)).is_err(), "key version");
}

#[test]
fn a_fenced_epoch_at_the_limit_is_never_bumped_past_it() {
    // After a fence at the exhausted epoch the id holds i16::MAX.
    let mut h = Harness::new();
    let mut c = TxnCoordinator::new(TxnConfig::default(), 1);
    let value = records::encode_value(&TxnValue {
        producer_id: 7,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch: i16::MAX,
        timeout_ms: 60_000,
        state: TxnState::CompleteAbort,
        partitions: BTreeSet::new(),
        last_update_ms: 1_000,
        start_ms: 500,
        client_transaction_version: 0,
    });
    c.replay(&records::encode_key(TID), Some(&value)).unwrap();
    let _ = c.finish_replay(h.now);
    h.c = c;
    // The fenced producer asks with its old epoch: fenced, no overflow.
    assert_eq!(
        h.init_with(TID, 7, PRODUCER_EPOCH_EXHAUSTED).0,
        code::PRODUCER_FENCED
    );
    // A new producer gets a new id.
    let (pid, epoch) = h.init(TID);
    assert_ne!(pid, 7);
    assert_eq!(epoch, 0);
}

#[test]
fn kip_890_verification_admits_only_partitions_of_the_ongoing_transaction() {
    let mut h = Harness::new();
    let parts = |v: &[(&str, i32)]| -> Vec<(String, i32)> {
        v.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    };
    assert_eq!(
        h.c.verify(TID, 1, 0, &parts(&[("t", 0)])),
        [code::INVALID_PRODUCER_ID_MAPPING]
    );
    let (pid, epoch) = h.init(TID);
    // No transaction yet: a late retry of an old batch must not open one.
    assert_eq!(
        h.c.verify(TID, pid, epoch, &parts(&[("t", 0)])),
        [code::INVALID_TXN_STATE]
    );
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    assert_eq!(
        h.c.verify(TID, pid, epoch, &parts(&[("t", 0), ("t", 1)])),
        [code::NONE, code::INVALID_TXN_STATE]
    );
    assert_eq!(
        h.c.verify(TID, pid, epoch + 1, &parts(&[("t", 0)])),
        [code::PRODUCER_FENCED]
    );
    assert_eq!(
        h.c.verify(TID, pid + 1, epoch, &parts(&[("t", 0)])),
        [code::INVALID_PRODUCER_ID_MAPPING]
    );
    // While the transaction ends, the answer waits for the end (retriable)...
    let _ = h.end_raw(TID, pid, epoch, true);
    assert_eq!(
        h.c.verify(TID, pid, epoch, &parts(&[("t", 0)])),
        [code::CONCURRENT_TRANSACTIONS]
    );
    h.persist_all();
    assert_eq!(h.state(TID), TxnState::PrepareCommit);
    assert_eq!(
        h.c.verify(TID, pid, epoch, &parts(&[("t", 0)])),
        [code::CONCURRENT_TRANSACTIONS]
    );
    // ...and once it has ended, nothing more is admitted.
    h.markers_all();
    assert_eq!(
        h.c.verify(TID, pid, epoch, &parts(&[("t", 0)])),
        [code::INVALID_TXN_STATE]
    );
}

impl Harness {
    /// EndTxn v5 (transaction version 2) run to its answer: `(error, pid, epoch)`.
    fn end_v2(&mut self, id: &str, pid: i64, epoch: i16, commit: bool) -> (i16, i64, i16) {
        let t = self.token();
        let mut next = self.next_pid;
        let e = self
            .c
            .end_txn(t, self.now, id, pid, epoch, commit, true, &mut || {
                next += 1;
                Some(next)
            });
        self.next_pid = next;
        self.take(e);
        self.markers_all();
        match self.reply(t).expect("end answered") {
            Reply::EndTxn {
                error,
                producer_id,
                producer_epoch,
            } => (error, producer_id, producer_epoch),
            r => panic!("unexpected {r:?}"),
        }
    }

    /// A new coordinator replaying this one's durable log.
    fn replayed(&self) -> TxnCoordinator {
        let mut c = TxnCoordinator::new(TxnConfig::default(), 8);
        for (k, v) in &self.log {
            c.replay(k, v.as_deref()).unwrap();
        }
        let _ = c.finish_replay(self.now);
        c
    }
}

#[test]
fn a_version_2_end_bumps_the_epoch_and_a_retry_gets_the_same_answer() {
    let mut h = Harness::new();
    let (pid, e0) = h.init(TID);
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::NONE);
    // The commit's markers carry the bumped epoch; the answer hands it out.
    assert_eq!(h.end_v2(TID, pid, e0, true), (code::NONE, pid, e0 + 1));
    assert_eq!(h.c.describe(TID).unwrap().producer_epoch, e0 + 1);
    let v = last_value(&h);
    assert_eq!(
        (v.state, v.client_transaction_version),
        (TxnState::CompleteCommit, 2)
    );
    // A retry with the old epoch: the same answer; the other outcome is refused.
    assert_eq!(h.end_v2(TID, pid, e0, true), (code::NONE, pid, e0 + 1));
    assert_eq!(h.end_v2(TID, pid, e0, false).0, code::INVALID_TXN_STATE);
    // The old epoch is fenced for anything else.
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::PRODUCER_FENCED);
    // The next transaction runs under the new epoch; an abort with nothing open is
    // accepted and bumps again (no markers: nothing to write to).
    let e1 = e0 + 1;
    assert_eq!(h.add(TID, pid, e1, &[("t", 1)]), code::NONE);
    assert_eq!(h.end_v2(TID, pid, e1, false), (code::NONE, pid, e1 + 1));
    assert_eq!(h.state(TID), TxnState::CompleteAbort);
    let e2 = e1 + 1;
    assert_eq!(h.end_v2(TID, pid, e2, false), (code::NONE, pid, e2 + 1));
    // A commit with nothing open is not.
    assert_eq!(h.end_v2(TID, pid, e2 + 1, true).0, code::INVALID_TXN_STATE);
    // The log replays to the same state, and a retry after the move still works.
    let mut again = h.replayed();
    assert_eq!(again.describe(TID), h.c.describe(TID));
    let t = ReplyToken(999);
    let e = again.end_txn(t, h.now, TID, pid, e2, false, true, &mut || None);
    assert_eq!(
        e,
        vec![Effect::Reply(
            t,
            Reply::EndTxn {
                error: code::NONE,
                producer_id: pid,
                producer_epoch: e2 + 1
            }
        )]
    );
}

#[test]
fn a_version_2_end_at_an_exhausted_epoch_rotates_the_producer_id() {
    let mut h = Harness::new();
    let (pid, _) = h.init(TID);
    // Walk the epoch up to the exhausted mark through empty aborts.
    let mut epoch = h.c.describe(TID).unwrap().producer_epoch;
    while epoch < PRODUCER_EPOCH_EXHAUSTED {
        let (e, p, next) = h.end_v2(TID, pid, epoch, false);
        assert_eq!((e, p), (code::NONE, pid));
        epoch = next;
    }
    assert_eq!(h.add(TID, pid, epoch, &[("t", 0)]), code::NONE);
    let (e, new_pid, new_epoch) = h.end_v2(TID, pid, epoch, true);
    assert_eq!(e, code::NONE);
    assert_ne!(new_pid, pid);
    assert_eq!(new_epoch, 0);
    // The log names the new id and the one it replaced.
    let v = last_value(&h);
    assert_eq!((v.producer_id, v.previous_producer_id), (new_pid, pid));
    // A retry from the old id and epoch gets the new ones.
    assert_eq!(h.end_v2(TID, pid, epoch, true), (code::NONE, new_pid, 0));
    assert_eq!(h.add(TID, new_pid, 0, &[("t", 0)]), code::NONE);
    assert_eq!(h.end_v2(TID, new_pid, 0, true), (code::NONE, new_pid, 1));
}

#[test]
fn a_fenced_producer_gets_no_epoch_back_from_a_version_2_end() {
    let mut h = Harness::new();
    let (pid, e0) = h.init(TID);
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::NONE);
    assert_eq!(h.end_v2(TID, pid, e0, true), (code::NONE, pid, e0 + 1));
    // The next transaction times out: the broker aborts it under a bumped epoch.
    let e1 = e0 + 1;
    assert_eq!(h.add(TID, pid, e1, &[("t", 0)]), code::NONE);
    h.tick(h.now + 120_000);
    h.markers_all();
    assert_eq!(h.state(TID), TxnState::CompleteAbort);
    assert_eq!(h.c.describe(TID).unwrap().producer_epoch, e1 + 1);
    // The fenced producer's end (its epoch is one below) is no retry of its own end.
    assert_eq!(h.end_v2(TID, pid, e1, false).0, code::PRODUCER_FENCED);
    assert_eq!(h.end_v2(TID, pid, e1, true).0, code::PRODUCER_FENCED);
}

#[test]
fn a_version_2_end_retried_while_it_completes_is_told_to_wait() {
    let mut h = Harness::new();
    let (pid, e0) = h.init(TID);
    assert_eq!(h.add(TID, pid, e0, &[("t", 0)]), code::NONE);
    let t = h.token();
    let e =
        h.c.end_txn(t, h.now, TID, pid, e0, true, true, &mut || None);
    h.take(e);
    h.persist_all();
    // The markers are written; the Complete record is not durable yet.
    let m = h.markers.remove(0);
    let e =
        h.c.markers_written(&m.transactional_id, m.producer_id, m.producer_epoch, h.now);
    h.take(e);
    let retry = h.token();
    let e =
        h.c.end_txn(retry, h.now, TID, pid, e0, true, true, &mut || None);
    h.take(e);
    assert!(matches!(
        h.reply(retry),
        Some(Reply::EndTxn {
            error: code::CONCURRENT_TRANSACTIONS,
            ..
        })
    ));
    h.persist_all();
    assert!(matches!(
        h.reply(t),
        Some(Reply::EndTxn { error: code::NONE, producer_epoch, .. }) if producer_epoch == e0 + 1
    ));
}
