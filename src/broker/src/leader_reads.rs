//! Leadership confirmations for reads that must not go back in time (ListOffsets on a
//! replicated partition): a leader answers only after a quorum confirmed, after the request
//! arrived, that it still leads (Raft's ReadIndex through `GroupManager::read_index`).
//!
//! Why: a leader cut off from its quorum keeps its role until check-quorum deposes it (one
//! to two election timeouts), while the others may elect a successor after one timeout and
//! acknowledge records through it. Without a confirmation the deposed leader would answer
//! ListOffsets with a high watermark below what its successor already acknowledged.
//!
//! # Rounds
//!
//! Per group at most one round is in flight; requests arriving meanwhile wait for the next
//! round, started when the one in flight ends (a round asked before a request arrived proves
//! nothing about the time after it). Everyone in a round shares one [`Confirmation`]. A
//! round ends when the manager reports its token confirmed, when the group's role changes
//! (Raft dropped the request with the leadership: everyone waiting fails, the client looks
//! the leader up again), or, if it never ended, when a later request finds it older than
//! [`LEADER_CONFIRM_TIMEOUT`] (its waiters gave up by then). Memory is one entry per group
//! with a round in flight; waiters hold the shared confirmation, not a slot each.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::or;
use sluice_raft::GroupId;
use sluice_rpc::sync::Event;

/// Longest a read waits for its leadership confirmation before it is answered
/// NOT_LEADER_OR_FOLLOWER: two election timeouts, by when a leader that cannot reach its
/// quorum has stepped down (check-quorum), so a live but slow quorum is not mistaken for a
/// lost leadership.
pub const LEADER_CONFIRM_TIMEOUT: Duration = Duration::from_millis(
    2 * sluice_raft::manager::TICK_MS * sluice_raft::manager::ELECTION_TICKS as u64,
);

/// One round's outcome, shared by everyone waiting for it.
#[derive(Default)]
pub struct Confirmation {
    outcome: Cell<Option<bool>>,
    changed: Event,
}

impl Confirmation {
    fn settle(&self, ok: bool) {
        if self.outcome.get().is_none() {
            self.outcome.set(Some(ok));
            self.changed.notify();
        }
    }

    /// Whether the leadership was confirmed; `false` if it was lost or `timeout` passed.
    pub async fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.changed.generation();
            if let Some(ok) = self.outcome.get() {
                return ok;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            or(self.changed.changed(seen), async {
                glommio::timer::sleep(deadline - now).await;
            })
            .await;
        }
    }
}

struct Round {
    token: u64,
    started: Instant,
    confirmation: Rc<Confirmation>,
}

#[derive(Default)]
struct GroupRounds {
    in_flight: Option<Round>,
    /// Who arrived after the round in flight was asked.
    next: Option<Rc<Confirmation>>,
}

/// Rounds of one shard's groups (sans-IO: the caller asks the manager and reports back).
#[derive(Default)]
pub struct LeaderReads {
    groups: HashMap<GroupId, GroupRounds>,
    next_token: u64,
}

impl LeaderReads {
    /// Joins `group`'s next round. Returns the confirmation to wait for and, when a round
    /// must start now, its token (the caller asks the manager, then reports
    /// [`Self::refused`] if it did not ask).
    pub fn join(&mut self, group: GroupId, now: Instant) -> (Rc<Confirmation>, Option<u64>) {
        let g = self.groups.entry(group).or_default();
        if let Some(r) = &g.in_flight {
            if now.duration_since(r.started) < LEADER_CONFIRM_TIMEOUT {
                let c = g.next.get_or_insert_with(Default::default).clone();
                return (c, None);
            }
            // Never ended: everyone waiting on it timed out already.
            r.confirmation.settle(false);
        }
        let c = g.next.take().unwrap_or_default();
        self.next_token += 1;
        g.in_flight = Some(Round {
            token: self.next_token,
            started: now,
            confirmation: c.clone(),
        });
        (c, Some(self.next_token))
    }

    /// The manager did not ask (this replica is not a ready leader): the group's rounds fail.
    pub fn refused(&mut self, group: GroupId) {
        self.fail(group);
    }

    /// The manager confirmed `token`. Returns the token of the round to start next, if
    /// requests are waiting for one.
    pub fn confirmed(&mut self, group: GroupId, token: u64, now: Instant) -> Option<u64> {
        let g = self.groups.get_mut(&group)?;
        if g.in_flight.as_ref().is_none_or(|r| r.token != token) {
            return None;
        }
        g.in_flight
            .take()
            .expect("round in flight")
            .confirmation
            .settle(true);
        let Some(next) = g.next.take() else {
            self.groups.remove(&group);
            return None;
        };
        self.next_token += 1;
        g.in_flight = Some(Round {
            token: self.next_token,
            started: now,
            confirmation: next,
        });
        Some(self.next_token)
    }

    /// The group's role changed: every round of it fails (Raft dropped its requests if the
    /// leadership ended; a new leadership starts new rounds).
    pub fn fail(&mut self, group: GroupId) {
        if let Some(g) = self.groups.remove(&group) {
            if let Some(r) = g.in_flight {
                r.confirmation.settle(false);
            }
            if let Some(c) = g.next {
                c.settle(false);
            }
        }
    }

    /// Groups with a round in flight.
    pub fn pending(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_during_a_round_wait_for_the_next_one_and_a_role_change_fails_both() {
        let mut r = LeaderReads::default();
        let t0 = Instant::now();
        let (a, start) = r.join(7, t0);
        let first = start.expect("first round starts");
        let (b, none) = r.join(7, t0);
        assert!(none.is_none(), "joins the next round");
        let (c, _) = r.join(7, t0);
        assert!(Rc::ptr_eq(&b, &c), "one confirmation per round");
        let second = r.confirmed(7, first, t0).expect("the next round starts");
        assert_eq!(a.outcome.get(), Some(true));
        assert_eq!(b.outcome.get(), None, "confirmed only by its own round");
        assert_eq!(
            r.confirmed(7, first, t0),
            None,
            "a repeated token changes nothing"
        );
        let (d, _) = r.join(7, t0);
        r.fail(7);
        assert_eq!(b.outcome.get(), Some(false));
        assert_eq!(d.outcome.get(), Some(false));
        assert_eq!(r.confirmed(7, second, t0), None);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn a_round_that_never_ended_is_replaced_after_the_timeout() {
        let mut r = LeaderReads::default();
        let t0 = Instant::now();
        let (a, first) = r.join(1, t0);
        let (_, none) = r.join(1, t0 + LEADER_CONFIRM_TIMEOUT / 2);
        assert!(none.is_none());
        let (b, again) = r.join(1, t0 + LEADER_CONFIRM_TIMEOUT);
        assert!(
            again.is_some() && again != first,
            "a new round with a new token"
        );
        assert_eq!(a.outcome.get(), Some(false));
        assert_eq!(r.confirmed(1, again.unwrap(), t0), None);
        assert_eq!(b.outcome.get(), Some(true));
        assert_eq!(r.pending(), 0);
    }
}
