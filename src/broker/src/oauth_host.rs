//! OAUTHBEARER's keys on this node: the JWKS file loaded at start (a start fails on a bad
//! one) and again when it changes (looked at no more than once a second, when a client
//! authenticates); a file that no longer loads is logged and the keys before it stay, as
//! with TLS certificates.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sluice_security::oauth::{bearer_token, validate, Jwks, OauthConfig, Validated};

/// How often the JWKS file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

struct Keys {
    checked: Instant,
    modified: Option<SystemTime>,
    jwks: Arc<Jwks>,
}

pub struct OauthState {
    path: PathBuf,
    checks: OauthConfig,
    keys: Mutex<Keys>,
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(path: &PathBuf) -> Result<Jwks, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Jwks::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

impl OauthState {
    pub fn load(settings: &crate::config::OauthSettings) -> Result<OauthState, String> {
        let jwks = load(&settings.jwks)?;
        Ok(OauthState {
            path: settings.jwks.clone(),
            checks: settings.checks.clone(),
            keys: Mutex::new(Keys {
                checked: Instant::now(),
                modified: modified(&settings.jwks),
                jwks: Arc::new(jwks),
            }),
        })
    }

    fn jwks(&self) -> Arc<Jwks> {
        let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if k.checked.elapsed() >= RELOAD_CHECK {
            k.checked = Instant::now();
            let m = modified(&self.path);
            if m != k.modified {
                k.modified = m;
                match load(&self.path) {
                    Ok(jwks) => {
                        log::info!("OAUTHBEARER: reloaded the JWKS {}", self.path.display());
                        k.jwks = Arc::new(jwks);
                    }
                    Err(e) => log::error!("OAUTHBEARER: keeping the previous JWKS: {e}"),
                }
            }
        }
        k.jwks.clone()
    }

    /// Checks a client's OAUTHBEARER message: its token's subject and expiry, or why not.
    pub fn authenticate(&self, message: &[u8]) -> Result<Validated, String> {
        let token = bearer_token(message)?;
        validate(token, &self.jwks(), &self.checks, crate::shard::now_ms())
    }
}
