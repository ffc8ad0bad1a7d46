//! The client instances one broker shard knows, and Kafka's checks of their
//! GetTelemetrySubscriptions and PushTelemetry requests (`ClientMetricsManager`'s, in its
//! order): a client asking again before its interval is throttled, a push with a stale
//! subscription id is told to ask again, a push after `terminating` is refused.
//!
//! An instance is created by whichever request names it first (a client that reconnects to
//! another shard or broker is simply new there), forgotten when the connection that
//! created it closes, when it was not heard from for `max(60 s, 3 × interval)`, or, past
//! [`INSTANCES_MAX`], least recently used first.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use crate::code::*;
use crate::subscription::{ClientMeta, Requested, Subscriptions};
use crate::{reserved, uuid_string, Refusal, INSTANCES_MAX};

/// An instance is forgotten this long after its last request at the least (Kafka's).
pub const EXPIRY_MS_MIN: u64 = 60_000;
/// How often forgotten instances are looked for.
const SWEEP_EVERY_MS: u64 = 10_000;

pub struct Instance {
    pub meta: Rc<ClientMeta>,
    pub requested: Rc<Requested>,
    /// The subscriptions generation `requested` was computed from.
    generation: u64,
    conn: u64,
    last_get_ms: Option<u64>,
    last_push_ms: Option<u64>,
    last_error: i16,
    terminating: bool,
    touched: u64,
    expires_ms: u64,
}

/// The parts of a PushTelemetry request the checks read.
#[derive(Clone, Copy, Debug)]
pub struct PushCheck {
    pub instance_id: [u8; 16],
    pub subscription_id: i32,
    pub terminating: bool,
    pub compression: i8,
    /// The payload as sent (compressed).
    pub bytes: usize,
    /// Kafka's `telemetry.max.bytes`.
    pub max_bytes: usize,
}

#[derive(Default)]
pub struct Instances {
    by_id: HashMap<[u8; 16], Instance>,
    /// Least recently used first: (touch counter, id).
    lru: BTreeSet<(u64, [u8; 16])>,
    by_conn: HashMap<u64, Vec<[u8; 16]>>,
    touches: u64,
    next_sweep_ms: u64,
}

impl Instances {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// GetTelemetrySubscriptions from connection `conn`: the instance id to use (a new one
    /// from `new_id` when the client has none) and what it is asked for, or THROTTLING_QUOTA_EXCEEDED
    /// when it asks again within its interval (unless its last push was told its
    /// subscription or compression was wrong, which it must fix at once).
    #[allow(clippy::too_many_arguments)]
    pub fn get(
        &mut self,
        now_ms: u64,
        conn: u64,
        instance_id: [u8; 16],
        meta: &ClientMeta,
        subs: &Subscriptions,
        generation: u64,
        mut new_id: impl FnMut() -> [u8; 16],
    ) -> Result<([u8; 16], Rc<Requested>), Refusal> {
        self.sweep(now_ms);
        let id = if reserved(&instance_id) {
            loop {
                let id = new_id();
                if !reserved(&id) && !self.by_id.contains_key(&id) {
                    break id;
                }
            }
        } else {
            instance_id
        };
        let inst = self.lookup(now_ms, conn, id, meta, subs, generation);
        let interval = inst.requested.interval_ms.max(0) as u64;
        let last = inst.last_get_ms.max(inst.last_push_ms);
        let exempt = matches!(
            inst.last_error,
            UNKNOWN_SUBSCRIPTION_ID | UNSUPPORTED_COMPRESSION_TYPE
        );
        if let Some(last) = last {
            if !exempt && now_ms.saturating_sub(last) < interval {
                inst.last_error = THROTTLING_QUOTA_EXCEEDED;
                return Err(Refusal::new(
                    THROTTLING_QUOTA_EXCEEDED,
                    format!(
                        "Request from the client [{}] arrived before the next push interval time",
                        uuid_string(&id)
                    ),
                ));
            }
        }
        inst.last_get_ms = Some(now_ms);
        inst.last_error = NONE;
        Ok((id, inst.requested.clone()))
    }

    /// PushTelemetry from connection `conn`: the instance's metadata when the push is
    /// accepted (its payload is then the caller's to decode), else the refusal. The request's
    /// `terminating` flag is kept whatever the answer, as Kafka keeps it.
    pub fn push(
        &mut self,
        now_ms: u64,
        conn: u64,
        req: PushCheck,
        meta: &ClientMeta,
        subs: &Subscriptions,
        generation: u64,
    ) -> Result<(Rc<ClientMeta>, Rc<Requested>), Refusal> {
        self.sweep(now_ms);
        let id = req.instance_id;
        if reserved(&id) {
            return Err(Refusal::new(
                INVALID_REQUEST,
                format!(
                    "Invalid request from the client [{}], invalid client instance id",
                    uuid_string(&id)
                ),
            ));
        }
        let inst = self.lookup(now_ms, conn, id, meta, subs, generation);
        let verdict = check_push(inst, now_ms, &req);
        inst.terminating = req.terminating;
        inst.last_error = verdict.as_ref().err().map_or(NONE, |r| r.code);
        verdict.map(|()| (inst.meta.clone(), inst.requested.clone()))
    }

    /// Forgets the instances connection `conn` created.
    pub fn connection_closed(&mut self, conn: u64) {
        for id in self.by_conn.remove(&conn).unwrap_or_default() {
            if let Some(inst) = self.by_id.remove(&id) {
                self.lru.remove(&(inst.touched, id));
            }
        }
    }

    /// The instance `id`, created from this connection if it is new, re-created (same
    /// client, no history) if the subscriptions changed since its request was computed,
    /// marked used and its expiry re-armed.
    fn lookup(
        &mut self,
        now_ms: u64,
        conn: u64,
        id: [u8; 16],
        meta: &ClientMeta,
        subs: &Subscriptions,
        generation: u64,
    ) -> &mut Instance {
        self.touches += 1;
        let touch = self.touches;
        if !self.by_id.contains_key(&id) {
            while self.by_id.len() >= INSTANCES_MAX {
                let Some((_, oldest)) = self.lru.pop_first() else {
                    break;
                };
                self.forget(&oldest);
            }
            let meta = Rc::new(meta.clone());
            let requested = Rc::new(subs.requested(&meta, &id));
            self.by_conn.entry(conn).or_default().push(id);
            self.by_id.insert(
                id,
                Instance {
                    meta,
                    requested,
                    generation,
                    conn,
                    last_get_ms: None,
                    last_push_ms: None,
                    last_error: NONE,
                    terminating: false,
                    touched: touch,
                    expires_ms: 0,
                },
            );
        } else if let Some(inst) = self.by_id.get_mut(&id) {
            self.lru.remove(&(inst.touched, id));
            if inst.generation != generation {
                inst.requested = Rc::new(subs.requested(&inst.meta, &id));
                inst.generation = generation;
                inst.last_get_ms = None;
                inst.last_push_ms = None;
                inst.last_error = NONE;
            }
        }
        self.lru.insert((touch, id));
        let inst = self.by_id.get_mut(&id).expect("inserted or present above");
        inst.touched = touch;
        inst.expires_ms = now_ms + expiry_ms(inst.requested.interval_ms);
        inst
    }

    fn forget(&mut self, id: &[u8; 16]) {
        if let Some(inst) = self.by_id.remove(id) {
            self.lru.remove(&(inst.touched, *id));
            if let Some(ids) = self.by_conn.get_mut(&inst.conn) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    self.by_conn.remove(&inst.conn);
                }
            }
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        if now_ms < self.next_sweep_ms {
            return;
        }
        self.next_sweep_ms = now_ms + SWEEP_EVERY_MS;
        let expired: Vec<[u8; 16]> = self
            .by_id
            .iter()
            .filter(|(_, i)| i.expires_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.forget(&id);
        }
    }
}

/// How long an instance (and its series) is kept after its last request.
pub fn expiry_ms(interval_ms: i32) -> u64 {
    EXPIRY_MS_MIN.max(3 * interval_ms.max(0) as u64)
}

fn check_push(inst: &mut Instance, now_ms: u64, req: &PushCheck) -> Result<(), Refusal> {
    let id = uuid_string(&req.instance_id);
    if inst.terminating {
        return Err(Refusal::new(
            INVALID_REQUEST,
            format!(
                "Client [{id}] sent the previous request with state terminating to TRUE, can not \
                 accept any requests after that"
            ),
        ));
    }
    // The first push after a Get, or one a whole interval after the last, is on time; a
    // terminating client's last push always is.
    let interval = inst.requested.interval_ms.max(0) as u64;
    let on_time = match (inst.last_get_ms, inst.last_push_ms) {
        (_, None) => true,
        (Some(get), Some(push)) if get > push => true,
        (_, Some(push)) => now_ms.saturating_sub(push) >= interval,
    };
    if !req.terminating && !on_time {
        return Err(Refusal::new(
            THROTTLING_QUOTA_EXCEEDED,
            format!("Request from the client [{id}] arrived before the next push interval time"),
        ));
    }
    inst.last_push_ms = Some(now_ms);
    if req.subscription_id != inst.requested.subscription_id {
        return Err(Refusal::new(
            UNKNOWN_SUBSCRIPTION_ID,
            format!(
                "Unknown client subscription id for the client [{id}]: {}",
                req.subscription_id
            ),
        ));
    }
    if !(0..=4).contains(&req.compression) {
        return Err(Refusal::new(
            UNSUPPORTED_COMPRESSION_TYPE,
            format!(
                "Unknown compression type from the client [{id}]: {}",
                req.compression
            ),
        ));
    }
    if req.bytes > req.max_bytes {
        return Err(Refusal::new(
            TELEMETRY_TOO_LARGE,
            format!(
                "Telemetry data from the client [{id}] is larger than the maximum allowed \
                 size {}",
                req.max_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn subs(interval: &str) -> Subscriptions {
        let mut cfg = BTreeMap::new();
        cfg.insert("metrics".to_string(), "*".to_string());
        cfg.insert("interval.ms".to_string(), interval.to_string());
        Subscriptions::compile(&BTreeMap::from([("all".to_string(), cfg)]))
    }

    fn ids() -> impl FnMut() -> [u8; 16] {
        let mut n = 0u8;
        move || {
            n += 1;
            [n; 16]
        }
    }

    fn push(id: [u8; 16], sub: i32) -> PushCheck {
        PushCheck {
            instance_id: id,
            subscription_id: sub,
            terminating: false,
            compression: 0,
            bytes: 10,
            max_bytes: 1024,
        }
    }

    #[test]
    fn get_assigns_an_id_then_throttles_until_the_interval_passed() {
        let (s, m) = (subs("1000"), ClientMeta::default());
        let mut i = Instances::default();
        let (id, r) = i.get(0, 1, [0; 16], &m, &s, 1, ids()).unwrap();
        assert!(!reserved(&id));
        assert_eq!(
            (r.metrics.as_slice(), r.interval_ms),
            (&["*".to_string()][..], 1000)
        );
        let e = i.get(500, 1, id, &m, &s, 1, ids()).unwrap_err();
        assert_eq!(e.code, THROTTLING_QUOTA_EXCEEDED);
        assert_eq!(i.get(1000, 1, id, &m, &s, 1, ids()).unwrap().0, id);
        // A client's own id is kept.
        assert_eq!(i.get(0, 2, [42; 16], &m, &s, 1, ids()).unwrap().0, [42; 16]);
    }

    #[test]
    fn pushes_are_checked_in_kafkas_order() {
        let (s, m) = (subs("1000"), ClientMeta::default());
        let mut i = Instances::default();
        let (id, r) = i.get(0, 1, [0; 16], &m, &s, 1, ids()).unwrap();
        let sub = r.subscription_id;
        assert!(
            i.push(100, 1, push(id, sub), &m, &s, 1).is_ok(),
            "first push after a get"
        );
        let code = |r: Result<_, Refusal>| r.unwrap_err().code;
        assert_eq!(
            code(i.push(200, 1, push(id, sub), &m, &s, 1)),
            THROTTLING_QUOTA_EXCEEDED
        );
        assert_eq!(
            code(i.push(1100, 1, push(id, sub + 1), &m, &s, 1)),
            UNKNOWN_SUBSCRIPTION_ID
        );
        // A wrong subscription lets the client ask again at once.
        assert!(i.get(1150, 1, id, &m, &s, 1, ids()).is_ok());
        let bad_codec = PushCheck {
            compression: 5,
            ..push(id, sub)
        };
        assert_eq!(
            code(i.push(1200, 1, bad_codec, &m, &s, 1)),
            UNSUPPORTED_COMPRESSION_TYPE
        );
        let big = PushCheck {
            bytes: 1025,
            ..push(id, sub)
        };
        assert_eq!(code(i.push(2200, 1, big, &m, &s, 1)), TELEMETRY_TOO_LARGE);
        // Terminating is on time whenever it comes, and the last word.
        let last = PushCheck {
            terminating: true,
            ..push(id, sub)
        };
        assert!(i.push(2300, 1, last, &m, &s, 1).is_ok());
        assert_eq!(
            code(i.push(9000, 1, push(id, sub), &m, &s, 1)),
            INVALID_REQUEST
        );
        assert_eq!(
            code(i.push(9000, 1, push([0; 16], sub), &m, &s, 1)),
            INVALID_REQUEST
        );
    }

    #[test]
    fn an_unknown_instance_can_push_with_the_id_any_broker_computes() {
        let (s, m) = (subs("1000"), ClientMeta::default());
        let mut elsewhere = Instances::default();
        let (id, r) = elsewhere.get(0, 1, [0; 16], &m, &s, 1, ids()).unwrap();
        let mut here = Instances::default();
        assert!(here
            .push(50, 9, push(id, r.subscription_id), &m, &s, 1)
            .is_ok());
    }

    #[test]
    fn a_subscription_change_renames_the_subscription_and_forgets_the_history() {
        let m = ClientMeta::default();
        let mut i = Instances::default();
        let (id, r) = i.get(0, 1, [0; 16], &m, &subs("1000"), 1, ids()).unwrap();
        let s2 = subs("2000");
        let e = i
            .push(10, 1, push(id, r.subscription_id), &m, &s2, 2)
            .unwrap_err();
        assert_eq!(e.code, UNKNOWN_SUBSCRIPTION_ID);
        let (_, r2) = i.get(20, 1, id, &m, &s2, 2, ids()).unwrap();
        assert_eq!(r2.interval_ms, 2000);
        assert!(i
            .push(30, 1, push(id, r2.subscription_id), &m, &s2, 2)
            .is_ok());
    }

    #[test]
    fn instances_go_with_their_connection_with_time_and_past_the_bound() {
        let (s, m) = (subs("100"), ClientMeta::default());
        let mut i = Instances::default();
        i.get(0, 1, [5; 16], &m, &s, 1, ids()).unwrap();
        i.get(0, 2, [6; 16], &m, &s, 1, ids()).unwrap();
        i.connection_closed(1);
        assert_eq!(i.len(), 1);
        // 60 s is the least an instance is kept.
        i.get(59_999, 3, [7; 16], &m, &s, 1, ids()).unwrap();
        assert_eq!(i.len(), 2);
        // Looked for every 10 s.
        i.get(70_000, 3, [8; 16], &m, &s, 1, ids()).unwrap();
        assert_eq!(i.len(), 2, "[6] expired");
        for n in 0..INSTANCES_MAX as u32 + 10 {
            let mut id = [0xff; 16];
            id[..4].copy_from_slice(&n.to_be_bytes());
            i.get(71_000, 4, id, &m, &s, 1, ids()).unwrap();
        }
        assert_eq!(i.len(), INSTANCES_MAX);
        assert!(
            !i.by_id.contains_key(&[7; 16]),
            "least recently used went first"
        );
        i.connection_closed(4);
        i.connection_closed(3);
        assert!(i.is_empty() && i.lru.is_empty() && i.by_conn.is_empty());
    }
}
