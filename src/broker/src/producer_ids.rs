//! Producer id allocation, shared by all shards: ids are handed out from blocks whose upper
//! end is made durable before the first id of the block is used, so no id repeats after a
//! crash (at most one block is skipped).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BrokerError;

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    /// (next id, end of the durable block)
    state: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<ProducerIds, BrokerError> {
        let path = data_dir.join("cluster").join("producer-id-block");
        let end = match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse::<i64>().map_err(|e| BrokerError::State {
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(BrokerError::Io {
                    op: "read",
                    path,
                    source: e,
                })
            }
        };
        // Everything below the recorded end may have been handed out before a crash.
        Ok(ProducerIds {
            path,
            state: Mutex::new((end, end)),
        })
    }

    pub fn next(&self) -> Result<i64, BrokerError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 >= s.1 {
            let end = s.1 + PRODUCER_ID_BLOCK;
            persist(&self.path, end)?;
            s.1 = end;
        }
        let id = s.0;
        s.0 += 1;
        Ok(id)
    }
}

fn persist(path: &Path, end: i64) -> Result<(), BrokerError> {
    let dir = path.parent().expect("has a parent");
    let err = |op: &'static str| {
        let p = path.to_path_buf();
        move |e| BrokerError::Io {
            op,
            path: p,
            source: e,
        }
    };
    fs::create_dir_all(dir).map_err(err("create"))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(err("create"))?;
    f.write_all(end.to_string().as_bytes())
        .map_err(err("write"))?;
    f.sync_all().map_err(err("fsync"))?;
    fs::rename(&tmp, path).map_err(err("rename"))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync dir"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<_> = (0..5).map(|_| a.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(b.next().unwrap(), PRODUCER_ID_BLOCK);
    }
}
