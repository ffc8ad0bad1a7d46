//! Producer id allocation, shared by all shards: ids are handed out from blocks whose upper
//! end is made durable before the first id of the block is used, so no id repeats after a
//! crash (at most one block is skipped). The lock guards only memory: the durable write of
//! a new block runs on a blocking thread, never on a shard's executor and never under the
//! lock, while other requests for an id wait for it without blocking their thread.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::BrokerError;

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

pub struct ProducerIds {
    path: PathBuf,
    state: Mutex<Alloc>,
}

struct Alloc {
    next: i64,
    /// End of the durable block: ids below it may be handed out.
    end: i64,
    /// A new block's end is being made durable.
    reserving: bool,
}

/// What [`ProducerIds::take`] says to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    /// An id, from the durable block.
    Id(i64),
    /// The block is spent: persist this end, then report it with [`ProducerIds::reserved`].
    Reserve(i64),
    /// Another caller is persisting the next block: try again shortly.
    Wait,
}

/// How long a caller waits before asking again while another persists the next block.
const RESERVE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

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
            state: Mutex::new(Alloc {
                next: end,
                end,
                reserving: false,
            }),
        })
    }

    fn alloc(&self) -> std::sync::MutexGuard<'_, Alloc> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands out an id if the durable block has one left; otherwise says what to do.
    pub fn take(&self) -> Take {
        let mut s = self.alloc();
        if s.next < s.end {
            s.next += 1;
            return Take::Id(s.next - 1);
        }
        if s.reserving {
            return Take::Wait;
        }
        s.reserving = true;
        Take::Reserve(s.end + PRODUCER_ID_BLOCK)
    }

    /// Records the outcome of persisting the end [`Take::Reserve`] asked for.
    pub fn reserved(&self, end: i64, ok: bool) {
        let mut s = self.alloc();
        s.reserving = false;
        if ok {
            s.end = s.end.max(end);
        }
    }

    /// The next producer id; a new block is made durable (off this thread) when needed.
    pub async fn next(&self) -> Result<i64, BrokerError> {
        loop {
            match self.take() {
                Take::Id(id) => return Ok(id),
                Take::Wait => glommio::timer::sleep(RESERVE_POLL).await,
                Take::Reserve(end) => {
                    // If this future is dropped mid-reservation (its connection closed), the
                    // guard still ends the reservation, or every later caller would wait on
                    // one that never finishes.
                    let guard = ReservationGuard {
                        ids: self,
                        end,
                        done: false,
                    };
                    let path = self.path.clone();
                    let r = glommio::executor()
                        .spawn_blocking(move || persist(&path, end))
                        .await;
                    guard.finish(r.is_ok());
                    r?;
                }
            }
        }
    }

    /// [`ProducerIds::next`] on the calling thread (for tests and tools without an executor).
    pub fn next_blocking(&self) -> Result<i64, BrokerError> {
        loop {
            match self.take() {
                Take::Id(id) => return Ok(id),
                Take::Wait => std::thread::sleep(RESERVE_POLL),
                Take::Reserve(end) => {
                    let r = persist(&self.path, end);
                    self.reserved(end, r.is_ok());
                    r?;
                }
            }
        }
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

/// Ends a reservation started by [`ProducerIds::next`], as failed if the caller went away
/// before it finished: a later call reserves the same block again, and no id of it was
/// handed out meanwhile (ids come only from below a reported end).
struct ReservationGuard<'a> {
    ids: &'a ProducerIds,
    end: i64,
    done: bool,
}

impl ReservationGuard<'_> {
    fn finish(mut self, ok: bool) {
        self.done = true;
        self.ids.reserved(self.end, ok);
    }
}

impl Drop for ReservationGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ids.reserved(self.end, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let first: Vec<_> = (0..5).map(|_| a.next_blocking().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2, 3, 4]);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(b.next_blocking().unwrap(), PRODUCER_ID_BLOCK);
    }

    #[test]
    fn one_caller_reserves_while_others_wait() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(a.take(), Take::Reserve(PRODUCER_ID_BLOCK));
        assert_eq!(a.take(), Take::Wait, "one reservation at a time");
        a.reserved(PRODUCER_ID_BLOCK, false);
        assert_eq!(
            a.take(),
            Take::Reserve(PRODUCER_ID_BLOCK),
            "a failed one is retried"
        );
        a.reserved(PRODUCER_ID_BLOCK, true);
        assert_eq!(a.take(), Take::Id(0));
    }
}

/// With `--voters`, producer ids come from blocks the controller hands this node (Kafka's
/// `AllocateProducerIds`): unique across the cluster, durable in the metadata log. Shared by
/// all shards; a spent block is replaced by asking shard 0, which asks the controller.
#[derive(Default)]
pub struct ClusterBlocks {
    /// `(next, end)` of the current block.
    block: Mutex<(i64, i64)>,
}

impl ClusterBlocks {
    /// The next id of the current block, if it has one left.
    pub fn take(&self) -> Option<i64> {
        let mut b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if b.0 < b.1 {
            b.0 += 1;
            return Some(b.0 - 1);
        }
        None
    }

    /// Starts using a new block `first..end` (a block older than the current one, from a
    /// request that raced another, is ignored: blocks only move up).
    pub fn adopt(&self, first: i64, end: i64) {
        let mut b = self.block.lock().unwrap_or_else(|e| e.into_inner());
        if first >= b.1 && first < end {
            *b = (first, end);
        }
    }
}
