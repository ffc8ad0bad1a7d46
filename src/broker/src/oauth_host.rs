//! OAUTHBEARER's keys on this node, from a JWKS file or an https endpoint.
//!
//! - A file is loaded at start (a start fails on a bad one) and again when it changes
//!   (looked at no more than once a second, when a client authenticates).
//! - An https endpoint is fetched by a thread of its own (blocking network calls stay off
//!   the shards' executors): at start, then every `refresh` (Kafka's
//!   `sasl.oauthbearer.jwks.endpoint.refresh.ms`, an hour), and early when a token names a
//!   key the set lacks (the issuer may have rotated its keys; at most once per
//!   [`EARLY_REFRESH_INTERVAL_MIN`], so tokens with made-up key ids cannot drive the node to
//!   hammer the issuer). A failed fetch is retried after Kafka's backoff, doubling up to its
//!   maximum. An endpoint down at start does not stop the node: OAUTHBEARER logins fail
//!   (saying why) until a fetch succeeds, while the other mechanisms work.
//!
//! Either way a key set that no longer loads is logged and the keys before it stay, as with
//! TLS certificates.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sluice_security::oauth::{
    bearer_token, validate, Jwks, OauthConfig, Validated, NO_KEY_FOR_KID,
};

use crate::config::JwksSource;

/// How often the JWKS file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Least time between two refreshes asked for by tokens naming an unknown key.
pub const EARLY_REFRESH_INTERVAL_MIN: Duration = Duration::from_secs(10);
/// Largest JWKS document fetched (an issuer's set is a few KiB).
pub const JWKS_BYTES_MAX: u64 = 1 << 20;
/// Bound on one fetch (connect, TLS, request and body).
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

struct Keys {
    checked: Instant,
    modified: Option<SystemTime>,
    jwks: Arc<Jwks>,
}

pub struct OauthState {
    source: Source,
    checks: OauthConfig,
    keys: Arc<Mutex<Keys>>,
}

enum Source {
    File(PathBuf),
    Https(Arc<Refresher>),
}

/// What the fetching thread and the authenticating shards share.
struct Refresher {
    url: String,
    /// Set when a token named an unknown key (or the state is dropped); the thread waits on
    /// `wake` for it or its next refresh.
    asked: Mutex<bool>,
    wake: Condvar,
    stop: AtomicBool,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(path: &PathBuf) -> Result<Jwks, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn lock(keys: &Mutex<Keys>) -> std::sync::MutexGuard<'_, Keys> {
    keys.lock().unwrap_or_else(|e| e.into_inner())
}

/// An https client trusting `ca` (a PEM bundle) or the Mozilla roots, on the broker's own
/// rustls provider.
fn agent(ca: Option<&PathBuf>) -> Result<ureq::Agent, String> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig, TlsProvider};
    let mut tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(sluice_security::tls::provider());
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let certs: Vec<_> = parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate", ca.display()));
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    Ok(ureq::Agent::config_builder()
        .tls_config(tls.build())
        .https_only(true)
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .new_agent())
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<Jwks, String> {
    let mut resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let body = resp
        .body_mut()
        .with_config()
        .limit(JWKS_BYTES_MAX)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))?;
    Jwks::parse(&body).map_err(|e| format!("{url}: {e}"))
}

impl OauthState {
    pub fn load(settings: &crate::config::OauthSettings) -> Result<OauthState, String> {
        match &settings.jwks {
            JwksSource::File(path) => {
                let jwks = load(path)?;
                Ok(OauthState {
                    source: Source::File(path.clone()),
                    checks: settings.checks.clone(),
                    keys: Arc::new(Mutex::new(Keys {
                        checked: Instant::now(),
                        modified: modified(path),
                        jwks: Arc::new(jwks),
                    })),
                })
            }
            JwksSource::Https {
                url,
                ca,
                refresh,
                retry_backoff,
                retry_backoff_max,
            } => {
                let agent = agent(ca.as_ref())?;
                // One try at start, so a node whose issuer is up serves OAUTHBEARER from
                // its first connection; the thread retries a failure.
                let (jwks, fetched) = match fetch(&agent, url) {
                    Ok(jwks) => {
                        log::info!("OAUTHBEARER: fetched the JWKS {url}");
                        (jwks, true)
                    }
                    Err(e) => {
                        log::error!("OAUTHBEARER: no keys until the JWKS is fetched: {e}");
                        (Jwks::default(), false)
                    }
                };
                let keys = Arc::new(Mutex::new(Keys {
                    checked: Instant::now(),
                    modified: None,
                    jwks: Arc::new(jwks),
                }));
                let refresher = Arc::new(Refresher {
                    url: url.clone(),
                    asked: Mutex::new(false),
                    wake: Condvar::new(),
                    stop: AtomicBool::new(false),
                });
                let schedule = Schedule {
                    refresh: *refresh,
                    backoff: *retry_backoff,
                    backoff_max: *retry_backoff_max,
                };
                let (r, k) = (refresher.clone(), keys.clone());
                std::thread::Builder::new()
                    .name("jwks-refresh".into())
                    .spawn(move || refresh_loop(&r, &k, &agent, schedule, fetched))
                    .map_err(|e| format!("starting the JWKS refresh thread: {e}"))?;
                Ok(OauthState {
                    source: Source::Https(refresher),
                    checks: settings.checks.clone(),
                    keys,
                })
            }
        }
    }

    fn jwks(&self) -> Arc<Jwks> {
        let mut k = lock(&self.keys);
        if let Source::File(path) = &self.source {
            if k.checked.elapsed() >= RELOAD_CHECK {
                k.checked = Instant::now();
                let m = modified(path);
                if m != k.modified {
                    k.modified = m;
                    match load(path) {
                        Ok(jwks) => {
                            log::info!("OAUTHBEARER: reloaded the JWKS {}", path.display());
                            k.jwks = Arc::new(jwks);
                        }
                        Err(e) => log::error!("OAUTHBEARER: keeping the previous JWKS: {e}"),
                    }
                }
            }
        }
        k.jwks.clone()
    }

    /// Checks a client's OAUTHBEARER message: its token's subject and expiry, or why not.
    pub fn authenticate(&self, message: &[u8]) -> Result<Validated, String> {
        let token = bearer_token(message)?;
        let result = validate(token, &self.jwks(), &self.checks, crate::shard::now_ms());
        if let (Err(e), Source::Https(r)) = (&result, &self.source) {
            if e.starts_with(NO_KEY_FOR_KID) {
                r.ask();
            }
        }
        result
    }
}

impl Drop for OauthState {
    fn drop(&mut self) {
        if let Source::Https(r) = &self.source {
            r.stop.store(true, Ordering::SeqCst);
            r.ask();
        }
    }
}

impl Refresher {
    fn ask(&self) {
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_one();
    }

    /// Waits up to `d` for an ask; whether one came (and clears it).
    fn wait(&self, d: Duration) -> bool {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        let (mut asked, _) = self
            .wake
            .wait_timeout_while(asked, d, |a| !*a)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *asked, false)
    }
}

#[derive(Clone, Copy)]
struct Schedule {
    refresh: Duration,
    backoff: Duration,
    backoff_max: Duration,
}

/// The fetching thread: a refresh every `refresh` or on an ask (at most once per
/// [`EARLY_REFRESH_INTERVAL_MIN`]), a failure retried with a doubling backoff.
fn refresh_loop(r: &Refresher, keys: &Mutex<Keys>, agent: &ureq::Agent, s: Schedule, mut ok: bool) {
    let mut backoff = s.backoff;
    let mut last = Instant::now();
    loop {
        let wait = if ok { s.refresh } else { backoff };
        let deadline = Instant::now() + wait;
        // Asks come in bursts (every login with the new key): the early refresh waits out
        // its interval, the scheduled one does not wait for an ask.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || r.stop.load(Ordering::SeqCst) {
                break;
            }
            if r.wait(left) && !r.stop.load(Ordering::SeqCst) {
                let early = last + EARLY_REFRESH_INTERVAL_MIN;
                if early <= deadline {
                    std::thread::sleep(early.saturating_duration_since(Instant::now()));
                    break;
                }
            }
        }
        if r.stop.load(Ordering::SeqCst) {
            return;
        }
        last = Instant::now();
        match fetch(agent, &r.url) {
            Ok(jwks) => {
                if !ok {
                    log::info!("OAUTHBEARER: fetched the JWKS {}", r.url);
                }
                lock(keys).jwks = Arc::new(jwks);
                ok = true;
                backoff = s.backoff;
            }
            Err(e) => {
                log::error!("OAUTHBEARER: keeping the previous JWKS: {e}");
                if !ok {
                    backoff = (backoff * 2).min(s.backoff_max);
                }
                ok = false;
            }
        }
    }
}
