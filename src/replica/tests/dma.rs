//! The store on the broker's real IO: glommio DMA files (O_DIRECT, io_uring) on a shard,
//! where every write is page-aligned. Single-voter groups elect themselves, commit batches,
//! are dropped without a clean close or closed cleanly, and recover from the files.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_raft::{Batch, Config, Effect, GroupId, GroupManager, ProposalToken, Role};
use sluice_replica::control::testing::kafka_batch;
use sluice_replica::{PartitionSpec, ReplicaStore};
use sluice_shard::runtime::{start, ShardConfig};
use sluice_shard::{DmaStorage, Shutdown};
use sluice_storage::{BatchCache, LogConfig};

async fn open(st: &DmaStorage, root: &std::path::Path) -> (ReplicaStore<DmaStorage>, GroupManager) {
    open_without(st, root, None).await
}

/// [`open`] with the broker knowing no partition for group `gone`.
async fn open_without(
    st: &DmaStorage,
    root: &std::path::Path,
    gone: Option<GroupId>,
) -> (ReplicaStore<DmaStorage>, GroupManager) {
    let data = root.to_path_buf();
    ReplicaStore::open(
        Rc::new(st.clone()),
        data.join("raft"),
        Rc::new(RefCell::new(BatchCache::new(1 << 20))),
        Rc::new(move |g: GroupId| {
            (Some(g) != gone).then(|| PartitionSpec {
                offline: false,
                dir: data.join(format!("t-{g}")),
                config: LogConfig {
                    segment_bytes: 64 * 1024,
                    ..LogConfig::default()
                },
                name: format!("t-{g}"),
            })
        }),
        Config {
            node_id: 1,
            ..Config::default()
        },
    )
    .await
    .expect("open")
}

/// Ticks until every group leads and is ready; returns the time reached.
async fn elect(store: &mut ReplicaStore<DmaStorage>, mgr: &mut GroupManager, mut now: u64) -> u64 {
    for _ in 0..1000 {
        now += 50;
        let fx = mgr.tick(now);
        store.drive(mgr, fx, now as i64).await.unwrap();
        let all: Vec<_> = mgr.groups().collect();
        if all.iter().all(|&g| {
            let s = mgr.status(g).unwrap();
            s.role == Role::Leader && s.ready
        }) {
            return now;
        }
    }
    panic!("no election");
}

async fn propose(
    store: &mut ReplicaStore<DmaStorage>,
    mgr: &mut GroupManager,
    g: GroupId,
    token: u64,
) -> i64 {
    let v = format!("value-{g}-{token}").into_bytes();
    let raw = kafka_batch(&[&v[..], b"second"], 1_700_000_000_000);
    let fx = mgr.propose(
        g,
        ProposalToken(token),
        Batch {
            records: 2,
            bytes: Bytes::from(raw),
        },
    );
    let out = store.drive(mgr, fx, 0).await.unwrap();
    out.iter()
        .find_map(|e| match e {
            Effect::Committed { span, .. } => Some(span.base),
            _ => None,
        })
        .expect("a single voter commits on its own sync")
}

async fn all_bytes(store: &ReplicaStore<DmaStorage>, g: GroupId) -> Vec<u8> {
    let log = store.log(g).unwrap();
    let mut out = Vec::new();
    let mut at = log.log_start_offset();
    while at < log.high_watermark() {
        let (b, next) = log.read_next(at, 1 << 20).await.unwrap();
        out.extend_from_slice(&b);
        at = next;
    }
    out
}

#[test]
fn single_voter_groups_commit_and_recover_on_dma_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let ok = done.clone();
    let cfg = ShardConfig {
        shards: 1,
        io_memory: 1 << 20,
        ring_depth: 64,
        pin: false,
        ..ShardConfig::default()
    };
    let rt = start(cfg, Shutdown::new(), move |ctx| {
        let root = root.clone();
        let ok = ok.clone();
        async move {
            let st = ctx.storage();
            let (mut store, mut mgr) = open(&st, &root).await;
            for g in [1, 2] {
                let fx = mgr.create_group(g, &[1]).unwrap();
                store.drive(&mut mgr, fx, 0).await.unwrap();
            }
            let now = elect(&mut store, &mut mgr, 0).await;
            let mut next = 1;
            for _ in 0..150 {
                for g in [1, 2] {
                    propose(&mut store, &mut mgr, g, next).await;
                    next += 1;
                }
            }
            let before = (all_bytes(&store, 1).await, all_bytes(&store, 2).await);
            let last = mgr.status(1).unwrap().last_index;
            // Dropped without closing, as a killed process leaves it.
            drop((store, mgr));
            let (mut store, mut mgr) = open(&st, &root).await;
            assert_eq!(mgr.status(1).unwrap().last_index, last);
            // Readers see a prefix (the commit index may come back lower: commit-only state
            // waits for a later sync), and everything once the group committed again.
            let (b1, b2) = (all_bytes(&store, 1).await, all_bytes(&store, 2).await);
            assert!(before.0.starts_with(&b1) && before.1.starts_with(&b2));
            elect(&mut store, &mut mgr, now).await;
            assert!(all_bytes(&store, 1).await.starts_with(&before.0));
            assert!(all_bytes(&store, 2).await.starts_with(&before.1));
            let base = propose(&mut store, &mut mgr, 1, next).await;
            assert!(base > 300);
            store.close().await.unwrap();
            drop((store, mgr));
            let (store, mgr) = open(&st, &root).await;
            assert_eq!(
                mgr.status(1).unwrap().last_index,
                last + 2,
                "a new no-op and the batch"
            );
            assert!(all_bytes(&store, 1).await.starts_with(&before.0));
            drop((store, mgr));
            // Group 2's partition is gone (deleted while the node was down): recovery
            // drops the group, durably, and keeps group 1.
            let (store, mgr) = open_without(&st, &root, Some(2)).await;
            assert_eq!(mgr.groups().collect::<Vec<_>>(), vec![1]);
            drop((store, mgr));
            let (store, mgr) = open(&st, &root).await;
            assert_eq!(
                mgr.groups().collect::<Vec<_>>(),
                vec![1],
                "the removal is durable"
            );
            assert!(all_bytes(&store, 1).await.starts_with(&before.0));
            ok.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    rt.join().unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "the shard's checks did not finish"
    );
}

/// More groups than one close round takes (`FLUSH_PARALLEL_MAX`): every log is closed
/// cleanly, its active segment cut back from whole pages to its data, and the groups recover
/// with every entry.
#[test]
fn close_closes_every_log_of_many_groups() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let ok = done.clone();
    let cfg = ShardConfig {
        shards: 1,
        io_memory: 1 << 20,
        ring_depth: 64,
        pin: false,
        ..ShardConfig::default()
    };
    let groups: Vec<GroupId> = (1..=2 * sluice_replica::FLUSH_PARALLEL_MAX as u64 + 3).collect();
    let rt = start(cfg, Shutdown::new(), move |ctx| {
        let root = root.clone();
        let ok = ok.clone();
        let groups = groups.clone();
        async move {
            let st = ctx.storage();
            let (mut store, mut mgr) = open(&st, &root).await;
            for &g in &groups {
                let fx = mgr.create_group(g, &[1]).unwrap();
                store.drive(&mut mgr, fx, 0).await.unwrap();
            }
            let now = elect(&mut store, &mut mgr, 0).await;
            for &g in &groups {
                propose(&mut store, &mut mgr, g, g).await;
            }
            let ends: Vec<i64> = groups
                .iter()
                .map(|&g| store.log(g).unwrap().log_end_offset())
                .collect();
            store.close().await.unwrap();
            for &g in &groups {
                let seg = root.join(format!("t-{g}")).join("00000000000000000000.log");
                let len = std::fs::metadata(&seg).unwrap().len();
                assert!(
                    !len.is_multiple_of(4096),
                    "{} not closed: {len} bytes",
                    seg.display()
                );
            }
            drop((store, mgr));
            let (mut store, mut mgr) = open(&st, &root).await;
            for (&g, &end) in groups.iter().zip(&ends) {
                assert_eq!(store.log(g).unwrap().log_end_offset(), end);
            }
            elect(&mut store, &mut mgr, now).await;
            ok.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    rt.join().unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "the shard's checks did not finish"
    );
}

/// A one-replica partition log (batches of epoch 0, as a broker's single-replica log
/// stamps them) becomes a single-voter group (`ReplicaStore::adopt`): every batch is a
/// committed entry of term 1, the group elects itself in a later term and appends after
/// them, and a restart (dropped without close) recovers the group with every batch in
/// place. The log's DeleteRecords start (its checkpoint, past the Raft log's start) is
/// reported as not carried by the Raft log, at adoption and again at a restart until a
/// committed log-start entry carries it.
#[test]
fn a_one_replica_log_is_adopted_as_a_group() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let done = Arc::new(AtomicBool::new(false));
    let ok = done.clone();
    let cfg = ShardConfig {
        shards: 1,
        io_memory: 1 << 20,
        ring_depth: 64,
        pin: false,
        ..ShardConfig::default()
    };
    let rt = start(cfg, Shutdown::new(), move |ctx| {
        let root = root.clone();
        let ok = ok.clone();
        async move {
            let st = ctx.storage();
            let cache = Rc::new(RefCell::new(BatchCache::new(1 << 20)));
            const G: GroupId = 7;
            let plain = sluice_storage::PartitionLog::open(
                Rc::new(st.clone()),
                root.join(format!("t-{G}")),
                LogConfig {
                    segment_bytes: 64 * 1024,
                    ..LogConfig::default()
                },
                cache,
                "plain".into(),
            )
            .await
            .unwrap();
            for i in 0..300 {
                let v = format!("plain-{i}").into_bytes();
                plain
                    .append(&kafka_batch(&[&v[..]], 1_700_000_000_000), 0)
                    .unwrap();
            }
            plain.flush().await.unwrap();
            assert_eq!(plain.delete_records_before(120).await.unwrap(), 120);
            plain.close().await.unwrap();
            let end = plain.log_end_offset();
            assert_eq!(end, 300);
            drop(plain);

            let (mut store, mut mgr) = open(&st, &root).await;
            let rlog = store.adopt(G, &[1]).await.unwrap();
            assert_eq!(store.take_uncovered_starts(), [(G, 120)].into());
            assert!(store.take_uncovered_starts().is_empty(), "taken");
            assert_eq!(rlog.last_index(), 300);
            assert_eq!(rlog.hard_state().commit, 300);
            assert_eq!(rlog.term_of(1), Some(1), "epoch 0 is term 1");
            let fx = mgr.adopt_group(G, rlog).unwrap();
            store.drive(&mut mgr, fx, 0).await.unwrap();
            let now = elect(&mut store, &mut mgr, 0).await;
            let st1 = mgr.status(G).unwrap();
            assert!(st1.term >= 2, "a term past every stored epoch");
            let before = all_bytes(&store, G).await;
            let base = propose(&mut store, &mut mgr, G, 1).await;
            assert_eq!(base, end + 1, "after the batches and the election no-op");
            let last = mgr.status(G).unwrap().last_index;
            drop((store, mgr));

            let (mut store, mut mgr) = open(&st, &root).await;
            assert_eq!(mgr.groups().collect::<Vec<_>>(), vec![G]);
            assert_eq!(mgr.status(G).unwrap().last_index, last);
            assert_eq!(store.log(G).unwrap().log_start_offset(), 120);
            assert_eq!(
                store.take_uncovered_starts(),
                [(G, 120)].into(),
                "no entry carries it yet"
            );
            // The adopted commit is durable; later commit-only state may not be (it waits
            // for a later sync), so readers resume between the two and see everything once
            // the group committed again.
            let hw = store.log(G).unwrap().high_watermark();
            assert!((end..=base + 2).contains(&hw), "{hw}");
            elect(&mut store, &mut mgr, now).await;
            assert!(all_bytes(&store, G).await.starts_with(&before));
            propose(&mut store, &mut mgr, G, 2).await;
            // Once a log-start entry carries it, a restart finds nothing uncovered.
            let fx = mgr.propose_log_start(G, ProposalToken(99), 120);
            let out = store.drive(&mut mgr, fx, now as i64).await.unwrap();
            assert!(out.iter().any(|e| matches!(
                e,
                Effect::Committed {
                    token: ProposalToken(99),
                    ..
                }
            )));
            // (Closed, so the commit covering it is durable: after a crash the entry may be
            // in the uncommitted tail, and the start is reported again, to be proposed again.)
            store.close().await.unwrap();
            drop((store, mgr));
            let (mut store, _mgr) = open(&st, &root).await;
            assert!(store.take_uncovered_starts().is_empty());
            assert_eq!(store.log(G).unwrap().log_start_offset(), 120);
            // A group is never adopted twice.
            assert!(store.adopt(G, &[1]).await.is_err());
            ok.store(true, Ordering::SeqCst);
        }
    })
    .unwrap();
    rt.join().unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "the shard's checks did not finish"
    );
}
