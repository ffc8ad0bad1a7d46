//! SCRAM credentials on this node: every shard's view of the committed ones (copied from the
//! metadata image whenever shard 0 adopts one), and the credentials `sluice users add` left
//! in the data directory for the controller, applied once the node's controller runtime
//! runs (Kafka's `kafka-storage format --add-scram`, which also works before the first
//! start). Nothing here holds a password: only salts, iteration counts and derived keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sluice_cluster::ControllerNode;
use sluice_meta::controller::ScramChange;
use sluice_meta::{Answer, ScramRecord};
use sluice_security::{ScramCredential, ScramMechanism};

use crate::shard::BrokerShard;

// The metadata layer and the SASL layer enforce the same bounds.
const _: () = assert!(
    sluice_meta::record::SCRAM_ITERATIONS_MIN == sluice_security::scram::ITERATIONS_MIN
        && sluice_meta::record::SCRAM_ITERATIONS_MAX == sluice_security::scram::ITERATIONS_MAX
);

/// The committed credentials by (user, Kafka mechanism id), shared by every shard (read once
/// per authentication, never on the produce or fetch path).
#[derive(Default)]
pub struct Credentials(Mutex<Arc<BTreeMap<(String, i8), ScramRecord>>>);

impl Credentials {
    /// Replaces them with the image's (when they changed).
    pub fn set(&self, all: &BTreeMap<(String, i8), ScramRecord>) {
        let mut cur = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if **cur != *all {
            *cur = Arc::new(all.clone());
        }
    }

    pub fn all(&self) -> Arc<BTreeMap<(String, i8), ScramRecord>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `user`'s credential for `mechanism`.
    pub fn get(&self, user: &str, mechanism: ScramMechanism) -> Option<ScramCredential> {
        let all = self.all();
        let r = all.get(&(user.to_string(), mechanism.id()))?;
        Some(credential(r, mechanism))
    }

    /// Every credential of `user` (PLAIN checks a password against any of them).
    pub fn of_user(&self, user: &str) -> Vec<ScramCredential> {
        ScramMechanism::ALL
            .into_iter()
            .filter_map(|m| self.get(user, m))
            .collect()
    }
}

fn credential(r: &ScramRecord, mechanism: ScramMechanism) -> ScramCredential {
    ScramCredential {
        mechanism,
        salt: r.salt.clone(),
        iterations: r.iterations,
        stored_key: r.stored_key.clone(),
        server_key: r.server_key.clone(),
    }
}

/// The record of a credential for `user`.
pub fn record(user: &str, c: &ScramCredential) -> ScramRecord {
    ScramRecord {
        user: user.to_string(),
        mechanism: c.mechanism.id(),
        salt: c.salt.clone(),
        iterations: c.iterations,
        stored_key: c.stored_key.clone(),
        server_key: c.server_key.clone(),
    }
}

/// The file in the data directory with credentials waiting for the controller.
pub const PENDING_FILE: &str = "scram-credentials.pending.json";

#[derive(Serialize, Deserialize)]
struct Pending {
    user: String,
    mechanism: i8,
    salt: String,
    iterations: u32,
    stored_key: String,
    server_key: String,
}

fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join(PENDING_FILE)
}

/// The credentials waiting in `data_dir` (none when there is no file).
pub fn read_pending(data_dir: &Path) -> Result<Vec<ScramRecord>, String> {
    let path = pending_path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let list: Vec<Pending> =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    list.into_iter()
        .map(|p| {
            let d = |s: &str| {
                B64.decode(s)
                    .map_err(|e| format!("{}: {e}", path.display()))
            };
            let r = ScramRecord {
                user: p.user,
                mechanism: p.mechanism,
                salt: d(&p.salt)?,
                iterations: p.iterations,
                stored_key: d(&p.stored_key)?,
                server_key: d(&p.server_key)?,
            };
            sluice_meta::record::check_scram(&r).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(r)
        })
        .collect()
}

/// Adds `r` to the credentials waiting in `data_dir` (replacing one of the same user and
/// mechanism), written to a temporary file, fsynced and renamed into place.
pub fn add_pending(data_dir: &Path, r: ScramRecord) -> Result<(), String> {
    let mut all = read_pending(data_dir)?;
    all.retain(|o| (o.user.as_str(), o.mechanism) != (r.user.as_str(), r.mechanism));
    all.push(r);
    let list: Vec<Pending> = all
        .into_iter()
        .map(|r| Pending {
            user: r.user,
            mechanism: r.mechanism,
            salt: B64.encode(&r.salt),
            iterations: r.iterations,
            stored_key: B64.encode(&r.stored_key),
            server_key: B64.encode(&r.server_key),
        })
        .collect();
    let bytes = serde_json::to_vec_pretty(&list).map_err(|e| e.to_string())?;
    let path = pending_path(data_dir);
    let tmp = data_dir.join(format!("{PENDING_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

/// How long between attempts to hand the waiting credentials to the controller.
const PENDING_RETRY: Duration = Duration::from_secs(1);

/// Hands the credentials waiting in the data directory to the controller, retrying until it
/// accepts them, then removes the file. Returns at once when there are none.
pub async fn apply_pending(shard: &Rc<BrokerShard>, node: &ControllerNode) {
    let data_dir = &shard.config.data_dir;
    let pending = match read_pending(data_dir) {
        Ok(p) if p.is_empty() => return,
        Ok(p) => p,
        Err(e) => {
            log::error!("SCRAM credentials waiting for the controller not applied: {e}");
            return;
        }
    };
    let users: Vec<String> = pending.iter().map(|r| r.user.clone()).collect();
    let changes: Vec<ScramChange> = pending.into_iter().map(ScramChange::Upsert).collect();
    loop {
        if shard.draining() {
            return;
        }
        match node.alter_scram(changes.clone()).await {
            Answer::AlterScram(v) if v.iter().all(|(_, o)| o.is_ok()) => break,
            Answer::AlterScram(v) if v.iter().any(|(_, o)| o.is_ok()) => {
                // Some were refused for good (validated before they were written, so not
                // expected): the rest committed.
                log::error!("SCRAM credentials partly refused by the controller: {v:?}");
                break;
            }
            other => log::debug!("SCRAM credentials not applied yet: {other:?}"),
        }
        glommio::timer::sleep(PENDING_RETRY).await;
    }
    if let Err(e) = std::fs::remove_file(pending_path(data_dir)) {
        log::warn!("removing {PENDING_FILE}: {e}");
    }
    log::info!("SCRAM credentials of {users:?} handed to the controller");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_credentials_round_trip_and_replace_their_own() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_pending(dir.path()).unwrap().is_empty());
        let c = ScramCredential::generate(ScramMechanism::Sha512, b"first-secret", 4096).unwrap();
        add_pending(dir.path(), record("admin", &c)).unwrap();
        let c2 = ScramCredential::generate(ScramMechanism::Sha512, b"second-secret", 8192).unwrap();
        add_pending(dir.path(), record("admin", &c2)).unwrap();
        let c3 = ScramCredential::generate(ScramMechanism::Sha256, b"first-secret", 4096).unwrap();
        add_pending(dir.path(), record("admin", &c3)).unwrap();
        let back = read_pending(dir.path()).unwrap();
        assert_eq!(back, vec![record("admin", &c2), record("admin", &c3)]);
        let text = std::fs::read_to_string(dir.path().join(PENDING_FILE)).unwrap();
        // The passwords hold a '-', which base64 (salts, keys) never writes: a match could
        // only be the password itself.
        assert!(
            !text.contains("first-secret") && !text.contains("second-secret"),
            "no password in the file"
        );

        let creds = Credentials::default();
        let map = back
            .into_iter()
            .map(|r| ((r.user.clone(), r.mechanism), r))
            .collect();
        creds.set(&map);
        assert!(creds
            .get("admin", ScramMechanism::Sha512)
            .unwrap()
            .verify_password(b"second-secret"));
        assert_eq!(creds.of_user("admin").len(), 2);
        assert!(creds.of_user("nobody").is_empty());
    }
}
