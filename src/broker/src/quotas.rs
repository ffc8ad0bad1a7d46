//! Client quotas on the request path: the committed quotas (from the metadata image), and
//! per quota a byte budget shared by every shard of the node that produce and fetch draw
//! on. A client over its rate is answered at once with `throttle_time_ms` and its
//! connection is muted for that long (Kafka's KIP-219: the broker stops reading from it).
//!
//! Kafka's semantics: quotas are per broker (each node enforces the whole rate); a client's
//! quota is the most specific of (user, client id), (user, default client), (user),
//! (default user, client id), (default user, default client), (default user), (client
//! id), (default client); a default quota applies to each user or client id on its own.
//! The rate is a budget refilled at the quota's rate, holding at most one second of it
//! (Kafka measures over a window of seconds; a burst of one second's worth passes at
//! once, and a sustained rate converges on the quota).
//!
//! `request_percentage`: the time a client's requests spend running on the connection's
//! shard (their tasks' polls, not their waits) is charged against its share of a thread;
//! over it, the connection is muted for the throttle time, which `response_throttle`
//! writes into the response the handler encoded.
//!
//! KIP-599 `controller_mutation_rate`: partitions created (CreateTopics, CreatePartitions)
//! or deleted (DeleteTopics) per second. Newer request versions (CreateTopics v6+,
//! CreatePartitions v3+, DeleteTopics v5+) are strict: a topic asked for while the budget is
//! already spent fails with THROTTLING_QUOTA_EXCEEDED, and the one that spends it passes
//! whole. Older versions are permissive: everything passes and the client is throttled.
//!
//! KIP-612: an IP over its `connection_creation_rate` (its own quota, else the default
//! IP's) has its new connections closed at once, before anything is read from them.
//!
//! Invariants:
//! - Without any quota configured, a request costs one atomic load here.
//! - At most [`BUDGETS_MAX`] budgets exist; idle ones go first when the table is full.
//! - A throttle is at most [`THROTTLE_MS_MAX`]; a `request_percentage` one at most
//!   [`REQUEST_THROTTLE_MS_MAX`], and its debt at most [`REQUEST_DEBT_S_MAX`] of the share.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_meta::quota::{lookup_order, QuotaEntity, QuotaValue};

/// Budgets the node keeps (one per quota and client it applies to).
pub const BUDGETS_MAX: usize = 65_536;
/// The longest a connection is muted for one request (Kafka bounds it by its quota window).
pub const THROTTLE_MS_MAX: u64 = 30_000;
/// The longest one request's `request_percentage` throttle (Kafka's
/// `ClientRequestQuotaManager` caps it at `quota.window.size.seconds`, 1 s).
pub const REQUEST_THROTTLE_MS_MAX: u64 = 1_000;
/// The most `request_percentage` debt a client carries, in seconds of its share: Kafka
/// measures request time over `quota.window.num` (11) windows of a second, so what ran
/// longer ago no longer counts against the client. Without the bound, one slow request
/// under a tiny share (0.001 % of a thread is 10 µs a second, and a request on a loaded
/// host can run a millisecond) would throttle the client for minutes.
pub const REQUEST_DEBT_S_MAX: f64 = 11.0;

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";

type Quotas = BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>;

struct Budget {
    /// Bytes that may pass now; negative: debt, paid back at the rate.
    available: f64,
    at: Instant,
}

impl Budget {
    /// Refills the budget at `rate` per second up to `now` (it holds one second's worth).
    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + elapsed * rate).min(rate);
        self.at = now;
    }
}

/// How long a client waits to pay back `debt` at `rate` per second (at most
/// [`THROTTLE_MS_MAX`]).
fn wait_for(debt: f64, rate: f64) -> Duration {
    let ms = (debt / rate * 1000.0).ceil() as u64;
    Duration::from_millis(ms.min(THROTTLE_MS_MAX))
}

/// Mutes `client`'s connection until `until`, unless it already is for longer (KIP-219).
pub fn mute(client: &crate::conn::Client, until: Instant) {
    if client.mute.get().is_none_or(|m| m < until) {
        client.mute.set(Some(until));
    }
}

/// The node's quotas and budgets (in `Shared`).
#[derive(Default)]
pub struct QuotaStore {
    any: AtomicBool,
    /// Whether any `request_percentage` quota exists (requests are timed only then).
    any_request: AtomicBool,
    configured: Mutex<Arc<Quotas>>,
    budgets: Mutex<HashMap<(QuotaEntity, &'static str), Budget>>,
}

impl QuotaStore {
    /// Adopts the image's quotas (a no-op when they did not change).
    pub fn set(&self, quotas: &Quotas) {
        let mut cur = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        if **cur == *quotas {
            return;
        }
        *cur = Arc::new(quotas.clone());
        self.any.store(!quotas.is_empty(), Ordering::Release);
        let request = quotas.values().any(|q| q.contains_key(REQUEST_PERCENTAGE));
        self.any_request.store(request, Ordering::Release);
        // Budgets restart from the new rates.
        self.budgets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Whether any quota exists (otherwise no response carries a throttle).
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Whether requests must be timed for `request_percentage`.
    pub fn times_requests(&self) -> bool {
        self.any_request.load(Ordering::Acquire)
    }

    pub fn all(&self) -> Arc<Quotas> {
        self.configured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Takes one connection from `ip` of its `connection_creation_rate` and returns how long
    /// it would have to wait (zero: within the rate, or no quota).
    pub fn connection(&self, ip: std::net::IpAddr, now: Instant) -> Duration {
        if !self.any.load(Ordering::Acquire) {
            return Duration::ZERO;
        }
        let all = self.all();
        let named = QuotaEntity {
            ip: Some(Some(ip.to_string())),
            ..QuotaEntity::default()
        };
        let default = QuotaEntity {
            ip: Some(None),
            ..QuotaEntity::default()
        };
        let rate = [&named, &default]
            .into_iter()
            .find_map(|e| all.get(e).and_then(|q| q.get(CONNECTION_CREATION_RATE)));
        match rate {
            // A refused connection costs nothing: a client retrying is not locked out
            // for longer than the rate says.
            Some(rate) => self.take(named, CONNECTION_CREATION_RATE, rate.0, 1, now, None),
            None => Duration::ZERO,
        }
    }

    /// Takes `bytes` of `key` (a byte-rate quota) for the client `user`/`client_id` and
    /// returns how long it must wait (zero when it has no such quota or is within it).
    pub fn record(
        &self,
        key: &'static str,
        user: &str,
        client_id: &str,
        bytes: u64,
        now: Instant,
    ) -> Duration {
        if !self.any.load(Ordering::Acquire) || bytes == 0 {
            return Duration::ZERO;
        }
        let Some((own, rate)) = self.client_quota(key, user, client_id) else {
            return Duration::ZERO;
        };
        if key != REQUEST_PERCENTAGE {
            return self.take(own, key, rate, bytes, now, Some(f64::INFINITY));
        }
        self.take(own, key, rate, bytes, now, Some(REQUEST_DEBT_S_MAX))
            .min(Duration::from_millis(REQUEST_THROTTLE_MS_MAX))
    }

    /// The budget that `key` of the client `user`/`client_id` draws on and its rate per
    /// second; `None` when no quota applies.
    fn client_quota(&self, key: &str, user: &str, client_id: &str) -> Option<(QuotaEntity, f64)> {
        let all = self.all();
        let (matched, rate) = lookup_order(user, client_id)
            .into_iter()
            .find_map(|e| all.get(&e).and_then(|q| q.get(key)).map(|v| (e, v.0)))?;
        // request_percentage is a share of one thread's time: amounts are microseconds,
        // and 100 % is a million of them a second.
        let rate = if key == REQUEST_PERCENTAGE {
            rate / 100.0 * 1e6
        } else {
            rate
        };
        // A default quota is each client's own: the budget is the client's, shaped by the
        // entity that matched.
        let own = QuotaEntity {
            user: matched.user.as_ref().map(|_| Some(user.to_string())),
            client_id: matched
                .client_id
                .as_ref()
                .map(|_| Some(client_id.to_string())),
            ip: None,
        };
        Some((own, rate))
    }

    /// The `controller_mutation_rate` draws of one request by `user`/`client_id`.
    pub fn mutations(&self, user: &str, client_id: &str, strict: bool) -> MutationQuota<'_> {
        let quota = if self.any.load(Ordering::Acquire) {
            self.client_quota(CONTROLLER_MUTATION_RATE, user, client_id)
        } else {
            None
        };
        MutationQuota {
            store: self,
            quota,
            strict,
            throttle: Duration::ZERO,
        }
    }

    /// Adds `amount` back to the budget of `own` for `key` (at most full).
    fn put_back(&self, own: &QuotaEntity, key: &'static str, rate: f64, amount: f64) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = budgets.get_mut(&(own.clone(), key)) {
            b.available = (b.available + amount).min(rate);
        }
    }

    /// The wait until the budget of `own` for `key` is no longer in debt (zero: it is not).
    fn debt(&self, own: &QuotaEntity, key: &'static str, rate: f64, now: Instant) -> Duration {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = budgets.get_mut(&(own.clone(), key)) else {
            return Duration::ZERO;
        };
        b.refill(rate, now);
        if b.available >= 0.0 {
            Duration::ZERO
        } else {
            wait_for(-b.available, rate)
        }
    }

    /// Draws `amount` (bytes, or connections) from the budget of `own` for `key`, refilled
    /// at `rate` per second; returns how long the client must wait (zero: within it). With
    /// `debt_s_max`, what was over the budget is drawn anyway (the bytes were moved; the
    /// client pays by waiting), the debt kept to that many seconds of the rate; without,
    /// nothing is drawn when it does not fit.
    fn take(
        &self,
        own: QuotaEntity,
        key: &'static str,
        rate: f64,
        amount: u64,
        now: Instant,
        debt_s_max: Option<f64>,
    ) -> Duration {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        if budgets.len() >= BUDGETS_MAX && !budgets.contains_key(&(own.clone(), key)) {
            // Full: forget budgets idle for a second (they would be full again anyway).
            budgets.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(1));
            if budgets.len() >= BUDGETS_MAX {
                return Duration::ZERO;
            }
        }
        let b = budgets.entry((own, key)).or_insert(Budget {
            available: rate,
            at: now,
        });
        b.refill(rate, now);
        let left = b.available - amount as f64;
        match debt_s_max {
            _ if left >= 0.0 => b.available = left,
            // What is drawn is owed, down to `debt_s_max` seconds of the rate.
            Some(s) => b.available = left.max(-rate * s),
            // No debt: a refused draw costs nothing.
            None => {}
        }
        if left >= 0.0 {
            return Duration::ZERO;
        }
        wait_for(-left, rate)
    }
}

/// One request's draws on its client's `controller_mutation_rate` (KIP-599), one topic at a
/// time, and the throttle they add up to.
pub struct MutationQuota<'a> {
    store: &'a QuotaStore,
    /// The budget drawn on and its rate (`None`: no quota applies).
    quota: Option<(QuotaEntity, f64)>,
    strict: bool,
    throttle: Duration,
}

impl MutationQuota<'_> {
    /// Draws `partitions` mutations for one topic. `Err(throttle ms)`: refused
    /// (THROTTLING_QUOTA_EXCEEDED), which only a strict request is, and only while the
    /// budget is already in debt; the draw that puts it in debt passes whole.
    pub fn draw(&mut self, partitions: u32) -> Result<(), i32> {
        let Some((own, rate)) = &self.quota else {
            return Ok(());
        };
        let now = Instant::now();
        if self.strict {
            let debt = self.store.debt(own, CONTROLLER_MUTATION_RATE, *rate, now);
            if !debt.is_zero() {
                self.throttle = self.throttle.max(debt);
                return Err(debt.as_millis() as i32);
            }
        }
        let wait = self.store.take(
            own.clone(),
            CONTROLLER_MUTATION_RATE,
            *rate,
            u64::from(partitions),
            now,
            Some(f64::INFINITY),
        );
        self.throttle = self.throttle.max(wait);
        Ok(())
    }

    /// Gives back a draw whose mutation did not happen (the controller refused the topic).
    pub fn refund(&mut self, partitions: u32) {
        if let Some((own, rate)) = &self.quota {
            self.store
                .put_back(own, CONTROLLER_MUTATION_RATE, *rate, f64::from(partitions));
        }
    }

    /// The request's throttle: its response's `throttle_time_ms`, and how long `client`'s
    /// connection is muted (KIP-219).
    pub fn finish(self, client: &crate::conn::Client) -> i32 {
        if self.throttle.is_zero() {
            return 0;
        }
        mute(client, Instant::now() + self.throttle);
        self.throttle.as_millis() as i32
    }
}

/// The `controller_mutation_rate` of the request `h` from `client`: strict from version
/// `strict_from` of its API (KIP-599), permissive before.
pub fn mutation_quota<'a>(
    shard: &'a crate::shard::BrokerShard,
    client: &crate::conn::Client,
    h: &sluice_codec::RequestHeaderInfo,
    strict_from: i16,
) -> MutationQuota<'a> {
    shard.shared_handle.quotas.mutations(
        user_of(&client.principal),
        h.client_id.as_deref().unwrap_or(""),
        h.api_version >= strict_from,
    )
}

/// THROTTLING_QUOTA_EXCEEDED's message in Kafka.
pub const THROTTLED_MESSAGE: &str = "The throttling quota has been exceeded.";

/// Charges `bytes` of `key` to the client's quota and, when it is over, mutes its
/// connection for the throttle time, which is returned for the response's
/// `throttle_time_ms` (0: not throttled).
pub fn charge(
    shard: &crate::shard::BrokerShard,
    client: &crate::conn::Client,
    client_id: Option<&str>,
    key: &'static str,
    bytes: u64,
) -> i32 {
    // Every produce and fetch comes here: without quotas, one atomic load and nothing else.
    if !shard.shared_handle.quotas.any.load(Ordering::Acquire) {
        return 0;
    }
    let now = Instant::now();
    let wait = shard.shared_handle.quotas.record(
        key,
        user_of(&client.principal),
        client_id.unwrap_or(""),
        bytes,
        now,
    );
    if wait.is_zero() {
        return 0;
    }
    mute(client, now + wait);
    wait.as_millis() as i32
}

/// A request's handler, timed by the time its task spends running (each poll), not
/// waiting: what `request_percentage` charges (Kafka charges request-thread time).
pub struct PollTimed<F> {
    inner: F,
    pub spent: Duration,
}

impl<F> PollTimed<F> {
    pub fn new(inner: F) -> PollTimed<F> {
        PollTimed {
            inner,
            spent: Duration::ZERO,
        }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for PollTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let started = Instant::now();
        let polled = std::pin::Pin::new(&mut self.inner).poll(cx);
        self.spent += started.elapsed();
        polled.map(|out| (out, self.spent))
    }
}

/// The client id in a request frame's header (v1+: after the api key, version and
/// correlation id, a nullable string); `None` when absent or unreadable.
pub fn client_id_of(frame: &[u8]) -> Option<&str> {
    let len = i16::from_be_bytes(frame.get(8..10)?.try_into().ok()?);
    let bytes = frame.get(10..10 + usize::try_from(len).ok()?)?;
    std::str::from_utf8(bytes).ok()
}

/// KIP-612's `connection_creation_rate` for `ip` (its own quota, else the default IP
/// quota): whether a new connection from it is over the rate and must be refused.
pub fn connection_refused(store: &QuotaStore, ip: std::net::IpAddr, now: Instant) -> bool {
    !store.connection(ip, now).is_zero()
}

/// Kafka's quota user of a principal: its name (`User:alice` is `alice`).
pub fn user_of(principal: &str) -> &str {
    principal.split_once(':').map_or(principal, |(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(entity: QuotaEntity, key: &str, rate: f64) -> QuotaStore {
        let s = QuotaStore::default();
        let mut q = Quotas::new();
        q.entry(entity)
            .or_default()
            .insert(key.to_string(), QuotaValue(rate));
        s.set(&q);
        s
    }

    #[test]
    fn strict_mutations_pass_the_draw_that_spends_the_budget_and_refuse_the_next() {
        let client = QuotaEntity {
            client_id: Some(Some("admin".into())),
            ..Default::default()
        };
        let s = store(client, CONTROLLER_MUTATION_RATE, 10.0);
        // No quota for another client.
        let mut other = s.mutations("", "other", true);
        assert_eq!(other.draw(1000), Ok(()));
        assert!(other.throttle.is_zero());
        let mut q = s.mutations("", "admin", true);
        assert_eq!(q.draw(30), Ok(()));
        // 20 in debt at 10 a second: two seconds.
        let refused = q.draw(1).expect_err("the budget is spent");
        assert!((1900..=2000).contains(&refused), "{refused}");
        assert!(q.throttle >= Duration::from_millis(1900));
        // The refused topic took nothing; a topic the controller refused is given back.
        q.refund(30);
        assert_eq!(q.draw(5), Ok(()));
        // A permissive (older) request is never refused; it is throttled.
        let mut old = s.mutations("", "admin", false);
        assert_eq!(old.draw(20), Ok(()));
        assert_eq!(old.draw(20), Ok(()));
        assert!(
            old.throttle >= Duration::from_millis(3000),
            "{:?}",
            old.throttle
        );
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let alice = QuotaEntity {
            user: Some(Some("alice".into())),
            ..Default::default()
        };
        let s = store(alice, PRODUCER_BYTE_RATE, 1000.0);
        let t = Instant::now();
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "alice", "c", 1000, t),
            Duration::ZERO
        );
        // 500 bytes over: half a second.
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "alice", "c", 500, t),
            Duration::from_millis(500)
        );
        // Paid back after that half second (and a little more).
        let later = t + Duration::from_millis(600);
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "alice", "c", 50, later),
            Duration::ZERO
        );
        // Others and other keys are not limited.
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "bob", "c", 1 << 30, t),
            Duration::ZERO
        );
        assert_eq!(
            s.record(CONSUMER_BYTE_RATE, "alice", "c", 1 << 30, t),
            Duration::ZERO
        );
        // Bounded.
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "alice", "c", 1 << 40, later),
            Duration::from_millis(THROTTLE_MS_MAX)
        );
    }

    #[test]
    fn a_default_quota_is_each_clients_own() {
        let default_user = QuotaEntity {
            user: Some(None),
            ..Default::default()
        };
        let s = store(default_user, PRODUCER_BYTE_RATE, 1000.0);
        let t = Instant::now();
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "a", "c", 1000, t),
            Duration::ZERO
        );
        assert_eq!(
            s.record(PRODUCER_BYTE_RATE, "b", "c", 1000, t),
            Duration::ZERO
        );
        assert!(s.record(PRODUCER_BYTE_RATE, "a", "c", 1000, t) > Duration::ZERO);
    }

    #[test]
    fn connections_over_the_ip_rate_are_refused_without_debt() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let default_ip = QuotaEntity {
            ip: Some(None),
            ..Default::default()
        };
        let s = store(default_ip, CONNECTION_CREATION_RATE, 2.0);
        let t = Instant::now();
        assert!(!connection_refused(&s, ip, t));
        assert!(!connection_refused(&s, ip, t));
        assert!(connection_refused(&s, ip, t));
        assert!(connection_refused(&s, ip, t));
        // Half a second later one more fits, refusals having cost nothing.
        assert!(!connection_refused(&s, ip, t + Duration::from_millis(500)));
        // Each IP has its own budget under the default.
        assert!(!connection_refused(&s, "10.0.0.2".parse().unwrap(), t));
    }

    #[test]
    fn request_percentage_is_a_share_of_a_threads_time() {
        let alice = QuotaEntity {
            user: Some(Some("alice".into())),
            ..Default::default()
        };
        let s = store(alice, REQUEST_PERCENTAGE, 50.0);
        assert!(s.times_requests());
        let t = Instant::now();
        // Half a thread: 500 ms of running a second; 600 ms at once is 200 ms over.
        assert_eq!(
            s.record(REQUEST_PERCENTAGE, "alice", "c", 600_000, t),
            Duration::from_millis(200)
        );
        assert!(!QuotaStore::default().times_requests());
        // A request far over a tiny share is throttled for a second at most (Kafka's quota
        // window), and the debt it leaves is bounded: 11 s of the share.
        let tiny = store(
            QuotaEntity {
                user: Some(Some("bob".into())),
                ..Default::default()
            },
            REQUEST_PERCENTAGE,
            0.001,
        );
        assert_eq!(
            tiny.record(REQUEST_PERCENTAGE, "bob", "c", 5_000, t),
            Duration::from_millis(REQUEST_THROTTLE_MS_MAX)
        );
        let later = t + Duration::from_secs(12);
        assert_eq!(
            tiny.record(REQUEST_PERCENTAGE, "bob", "c", 1, later),
            Duration::ZERO,
            "the debt was paid back within Kafka's 11 s of windows"
        );
    }

    #[test]
    fn the_client_id_is_read_from_the_header() {
        let mut frame = vec![0, 3, 0, 12, 0, 0, 0, 7, 0, 5];
        frame.extend_from_slice(b"app-1rest");
        assert_eq!(client_id_of(&frame), Some("app-1"));
        assert_eq!(client_id_of(&[0, 3, 0, 12, 0, 0, 0, 7, 0xff, 0xff]), None);
        assert_eq!(client_id_of(&[0, 3]), None);
    }

    #[test]
    fn users_are_principal_names() {
        assert_eq!(user_of("User:alice"), "alice");
        assert_eq!(user_of("ANONYMOUS"), "ANONYMOUS");
    }
}
