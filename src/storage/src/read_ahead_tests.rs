//! Tests of the log's sequential read-ahead: a scan from disk served from windows, exactly
//! the bytes stored, the budget given back, and windows dropped when the bytes they hold
//! change (truncation and new bytes at the same offsets).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::future::block_on;

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::hdr::{self, testing::batch, Header};
use crate::log::{PartitionLog, READ_AHEAD_DEPTH, READ_AHEAD_WINDOW_BYTES};
use crate::std_io::StdStorage;

const BUDGET: usize = 8 * READ_AHEAD_WINDOW_BYTES;

/// A log whose shard caches no batch (every read goes to its files) and may read ahead.
fn open(dir: &Path) -> (PartitionLog<StdStorage>, Rc<RefCell<BatchCache>>) {
    open_with(dir, BUDGET)
}

/// [`open`] with a read-ahead budget of `budget` bytes.
fn open_with(dir: &Path, budget: usize) -> (PartitionLog<StdStorage>, Rc<RefCell<BatchCache>>) {
    let cache = Rc::new(RefCell::new(BatchCache::with_read_ahead(0, budget)));
    let log = block_on(PartitionLog::open(
        Rc::new(StdStorage),
        dir.to_path_buf(),
        LogConfig::default(),
        cache.clone(),
        "t-0".into(),
    ))
    .expect("open");
    (log, cache)
}

/// A batch as a leader of `epoch` stored it at `base` (`count` records, `len` bytes of `fill`).
fn stored(base: i64, epoch: i32, fill: u8, len: usize) -> Vec<u8> {
    let mut b = batch(4, &vec![fill; len], 1_000 + base, -1, 0);
    hdr::set_offset_and_epoch(&mut b, base, epoch);
    b
}

/// Reads batch by batch from `from` as a consumer does (each read from the offset after the
/// last batch), `max_bytes` at a time, until `to`.
fn scan(log: &PartitionLog<StdStorage>, mut from: i64, to: i64, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while from < to {
        let (records, next) = block_on(log.read_next(from, max_bytes)).expect("read");
        assert!(next > from, "no progress at {from}");
        let mut at = 0;
        while at < records.len() {
            let h = Header::parse(&records[at..]).expect("whole batch");
            h.verify(&records[at..at + h.size]).expect("crc");
            if h.base_offset < to {
                out.push(records[at..at + h.size].to_vec());
            }
            at += h.size;
        }
        from = next;
    }
    out
}

/// `got == want`, saying where they part (not printing megabytes of batches).
#[track_caller]
fn same(got: &[Vec<u8>], want: &[Vec<u8>]) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("batch {i} of {} differs", want.len());
    }
    assert_eq!(got.len(), want.len(), "batches read");
}

fn budget_of(cache: &Rc<RefCell<BatchCache>>) -> Rc<crate::log::ReadAheadBudget> {
    cache.borrow().read_ahead_budget().clone()
}

#[test]
fn a_sequential_scan_is_served_from_windows_with_the_bytes_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (log, cache) = open(dir.path());
    let mut batches = Vec::new();
    // About 12 MiB: many windows' worth, in batches of varied sizes.
    for i in 0..3_000i64 {
        let b = stored(4 * i, 0, i as u8, 1_000 + (i as usize * 613) % 6_000);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        batches.push(b);
    }
    block_on(log.flush()).unwrap();
    let end = log.high_watermark();
    let budget = budget_of(&cache);

    same(&scan(&log, 0, end, 256 * 1024), &batches);
    let (windows, served) = budget.windows_and_served();
    assert!(windows >= 8, "{windows} windows issued");
    assert!(served >= 40, "{served} reads served from windows");
    // What one reader holds: the window it reads from and those in flight.
    assert!(budget.used() <= (READ_AHEAD_DEPTH + 1) * READ_AHEAD_WINDOW_BYTES);

    // From the middle, with reads larger than a window: the same bytes.
    let mid = 4 * 1_234;
    same(&scan(&log, mid, end, 6 << 20), &batches[1_234..]);
    // Reads that do not follow each other (every other batch) are still exact.
    for i in (0..3_000).step_by(97) {
        let r = block_on(log.read(4 * i as i64 + 1, 1)).unwrap();
        assert_eq!(&r.records[..], &batches[i][..], "batch {i}");
    }
    drop(log);
    assert_eq!(budget.used(), 0, "a dropped log gives its windows back");
}

/// Batches across a window's end. Of 20,971 bytes: a 1 MiB window that starts at a batch
/// ends 26 bytes into one, inside its header, and the next window (it overlaps the end by
/// more than a batch) holds that batch whole. Of 300,001 bytes (more than the overlap): the
/// batch's two parts are joined. With room for one window only, nothing is in flight to
/// finish such a batch, and its rest comes from the file. Every way the scan is exact.
#[test]
fn a_batch_across_a_window_end_is_read_whole() {
    assert_eq!(READ_AHEAD_WINDOW_BYTES % 20_971, 26);
    for (size, windows) in [(20_971, 1), (20_971, 8), (300_001, 1), (300_001, 8)] {
        let dir = tempfile::tempdir().unwrap();
        let (log, cache) = open_with(dir.path(), windows * READ_AHEAD_WINDOW_BYTES);
        let count = (8 << 20) / size as i64;
        let batches: Vec<_> = (0..count)
            .map(|i| stored(4 * i, 0, i as u8, size - crate::hdr::HEADER_BYTES))
            .collect();
        assert_eq!(batches[0].len(), size);
        for b in &batches {
            log.append_at(Bytes::copy_from_slice(b), 0).unwrap();
        }
        block_on(log.flush()).unwrap();
        for max in [1, 30_000, 100_000, 1 << 20] {
            same(&scan(&log, 0, log.high_watermark(), max), &batches);
        }
        assert!(budget_of(&cache).windows_and_served().1 > 0);
    }
}

#[test]
fn a_spent_budget_leaves_reads_to_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, cache) = open_with(dir.path(), 0);
    let batches: Vec<_> = (0..500i64)
        .map(|i| stored(4 * i, 0, i as u8, 4_000))
        .collect();
    for b in &batches {
        log.append_at(Bytes::copy_from_slice(b), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    same(&scan(&log, 0, log.high_watermark(), 64 * 1024), &batches);
    assert_eq!(budget_of(&cache).windows_and_served(), (0, 0));
}

/// A window holds file positions: after a truncation, new batches at the same offsets sit at
/// the same positions, and a reader that went on from its window would read the old ones.
#[test]
fn truncation_drops_the_windows_so_new_bytes_at_the_same_offsets_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let (log, cache) = open(dir.path());
    let old: Vec<_> = (0..2_000i64).map(|i| stored(4 * i, 1, 1, 3_000)).collect();
    for b in &old {
        log.append_at(Bytes::copy_from_slice(b), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    // Scan the first 300 batches: the windows now hold (or are reading) what follows.
    same(&scan(&log, 0, 4 * 300, 64 * 1024), &old[..300]);
    assert!(budget_of(&cache).used() > 0, "windows are held");

    block_on(log.truncate_to(4 * 400)).unwrap();
    assert_eq!(budget_of(&cache).used(), 0, "truncation drops the windows");
    let mut expect = old[..400].to_vec();
    for i in 400..2_000i64 {
        let b = stored(4 * i, 2, 2, 3_000);
        log.append_at(Bytes::copy_from_slice(&b), 0).unwrap();
        expect.push(b);
    }
    block_on(log.flush()).unwrap();
    same(
        &scan(&log, 4 * 300, log.high_watermark(), 64 * 1024),
        &expect[300..],
    );
}

/// Two readers taking turns: a reader's windows stay while another reads elsewhere, but its
/// next read is no longer resumed at its exact position: it starts at the sparse index's
/// entry, batches before its offset, inside its window. Its scan is still exact and never
/// answers empty below the high watermark. (A window that holds only batches before the
/// offset must not end the read: `read_below` goes on to the next window then.)
#[test]
fn a_reader_back_after_another_finds_its_next_window() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _cache) = open(dir.path());
    // 1 KiB batches: windows of 1 MiB that start at a batch end at one, and index entries
    // (every 4 KiB) lie up to three batches before a batch.
    let batches: Vec<_> = (0..4_096i64)
        .map(|i| stored(4 * i, 0, i as u8, 1_024 - crate::hdr::HEADER_BYTES))
        .collect();
    for b in &batches {
        log.append_at(Bytes::copy_from_slice(b), 0).unwrap();
    }
    block_on(log.flush()).unwrap();
    let end = log.high_watermark();
    let mut from = 0;
    let mut got = Vec::new();
    let mut turn = 0i64;
    while from < end {
        // A batch short of a window: the answers drift against the windows, and some end
        // exactly at a window's end.
        let (records, next) = block_on(log.read_next(from, (1 << 20) - 1_024)).unwrap();
        assert!(next > from, "no progress at {from} below {end}");
        let mut at = 0;
        while at < records.len() {
            let h = Header::parse(&records[at..]).unwrap();
            got.push(records[at..at + h.size].to_vec());
            at += h.size;
        }
        from = next;
        turn += 1;
        // Another reader, elsewhere, from the disk.
        block_on(log.read(4 * (turn % 7) + 1, 1)).unwrap();
    }
    same(&got, &batches);
}
