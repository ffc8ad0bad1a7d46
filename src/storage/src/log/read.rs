//! Reading a partition log: consumers' reads below the high watermark (read_committed ones
//! below the last stable offset; runs of batches compaction emptied come as one),
//! replication's reads up to the durable offset (as stored), and lookups by timestamp.

use bytes::{Bytes, BytesMut};

use crate::error::{Result, StorageError};
use crate::hdr::{Header, HEADER_BYTES};
use crate::io::{Storage, StorageFile};
use crate::txn;

use super::read_ahead::ReadAhead;
use super::{
    segment_path, CommittedRead, PartitionLog, ReadOutcome, DIRECT_READ_BYTES_MIN,
    READ_CHUNK_BYTES_MAX, SCAN_CHUNK_BYTES,
};

impl<S: Storage> PartitionLog<S> {
    /// [`Self::read`] for a scan from `offset` towards the high watermark: the batches read
    /// (empty at the end) and the offset after the last of them, where the next read starts.
    pub async fn read_next(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64)> {
        let records = self.read(offset, max_bytes).await?.records;
        Ok(Self::after_batches(records, offset))
    }

    /// [`Self::read_next`] up to the durable offset, past the high watermark of a replicated
    /// log: for replication only (a leader feeding followers uncommitted entries, recovery
    /// scanning its log), never for consumers.
    pub async fn read_replica(&self, offset: i64, max_bytes: usize) -> Result<(Bytes, i64)> {
        // From the first segment kept, which may be below the log start: a replicated log's
        // start can lie past its first Raft entry (see `move_replica_start`).
        let (end, start) = {
            let inner = self.inner.borrow();
            let first = *inner.segments.keys().next().expect("a log has a segment");
            (inner.durable_offset, first.min(inner.log_start_offset))
        };
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                high_watermark: end,
            });
        }
        let records = self
            .read_below(offset, max_bytes, end, start)
            .await?
            .records;
        Ok(Self::after_batches(records, offset))
    }

    /// The batches of `records` (whole ones) and the offset after the last, `offset` if none.
    fn after_batches(records: Bytes, offset: i64) -> (Bytes, i64) {
        let mut next = offset;
        let mut at = 0;
        while let Some(h) = records.get(at..).and_then(Header::parse) {
            if at + h.size > records.len() {
                break;
            }
            next = h.last_offset() + 1;
            at += h.size;
        }
        (records, next)
    }

    /// Reads whole batches starting with the one that holds `offset`, at most `max_bytes`
    /// (but always the first batch, as Kafka does, so a large batch cannot stall a consumer),
    /// below the high watermark. An offset past it is out of range, except on a replicated
    /// log up to its log end offset: that reads nothing, as in Kafka (a consumer that read
    /// up to an old leader's high watermark may be ahead of a new leader's for a while).
    pub async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadOutcome> {
        let (hw, start) = self.check_read_offset(offset)?;
        if offset >= hw {
            self.left_disk(offset);
            return Ok(ReadOutcome {
                records: Bytes::new(),
                high_watermark: hw,
                log_start_offset: start,
            });
        }
        self.read_for_consumer(offset, max_bytes, hw, start).await
    }

    /// [`Self::read_below`] for a consumer. Compaction leaves batches with no records in
    /// place (a batch is never removed: see [`crate::compact`]); a consumer is given each
    /// run of them as one empty batch spanning the run, and the read goes on past runs
    /// until it holds a batch with records or reaches `limit`. librdkafka doubles its fetch
    /// size after each response without a message and fails the partition once that passes
    /// 1 GiB, so responses of emptied batches alone must stay rare. A log never cleaned
    /// (`compacted` unset) is read as stored.
    async fn read_for_consumer(
        &self,
        offset: i64,
        max_bytes: usize,
        limit: i64,
        start: i64,
    ) -> Result<ReadOutcome> {
        let first = self.read_below(offset, max_bytes, limit, start).await?;
        if !self.cleaned.get() || !has_empty_batch(&first.records) {
            return Ok(first);
        }
        let mut out = BytesMut::with_capacity(first.records.len());
        let mut run: Option<EmptyRun> = None;
        let mut records = first.records.clone();
        loop {
            let mut at = 0;
            let mut next = None;
            let mut live = false;
            while let Some(h) = records.get(at..).and_then(Header::parse) {
                if at + h.size > records.len() {
                    break;
                }
                if h.records_count == 0 && !h.is_control() {
                    match run.as_mut() {
                        Some(r) => r.extend(&h),
                        None => run = Some(EmptyRun::new(&h)),
                    }
                } else {
                    if let Some(r) = run.take() {
                        out.extend_from_slice(&r.batch());
                    }
                    out.extend_from_slice(&records[at..at + h.size]);
                    live = true;
                }
                next = Some(h.last_offset() + 1);
                at += h.size;
            }
            match next {
                Some(n) if !live && n < limit => {
                    records = self.read_below(n, max_bytes, limit, start).await?.records;
                }
                _ => break,
            }
        }
        if let Some(r) = run.take() {
            out.extend_from_slice(&r.batch());
        }
        Ok(ReadOutcome {
            records: out.freeze(),
            ..first
        })
    }

    /// [`Self::read`] for a read_committed consumer: batches below the last stable offset
    /// only, with the aborted transactions (producer id, first offset) that overlap what was
    /// read, which the consumer uses to skip the aborted batches. The outcome's high
    /// watermark is the log's, as Fetch reports it beside the last stable offset.
    pub async fn read_committed(&self, offset: i64, max_bytes: usize) -> Result<CommittedRead> {
        let lso = self.last_stable_offset();
        let (hw, start) = self.check_read_offset(offset)?;
        let mut outcome = if offset >= lso {
            ReadOutcome {
                records: Bytes::new(),
                high_watermark: hw,
                log_start_offset: start,
            }
        } else {
            let mut o = self
                .read_for_consumer(offset, max_bytes, lso, start)
                .await?;
            o.high_watermark = hw;
            o
        };
        let (records, next) = Self::after_batches(std::mem::take(&mut outcome.records), offset);
        outcome.records = records;
        let aborted = if next > offset {
            let inner = self.inner.borrow();
            let first = inner
                .segments
                .range(..=offset)
                .next_back()
                .map_or(offset, |(&b, _)| b);
            inner
                .segments
                .range(first..)
                .flat_map(|(_, s)| txn::aborted_between(&s.aborted, offset, next))
                .collect()
        } else {
            Vec::new()
        };
        Ok(CommittedRead {
            outcome,
            last_stable_offset: lso,
            aborted,
        })
    }

    /// The high watermark and log start for a consumer's read at `offset`, or
    /// OFFSET_OUT_OF_RANGE: below the log start, or past the high watermark (on a replicated
    /// log, past its log end: see [`Self::read`]).
    fn check_read_offset(&self, offset: i64) -> Result<(i64, i64)> {
        let inner = self.inner.borrow();
        let hw = inner.visible_hw();
        let end = match inner.replica_hw {
            None => hw,
            Some(_) => inner.log_end_offset(),
        };
        let start = inner.log_start_offset;
        if offset < start || offset > end {
            return Err(StorageError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                high_watermark: hw,
            });
        }
        Ok((hw, start))
    }

    /// [`Self::read`] of the batches below `hw` (`start <= offset <= hw`).
    async fn read_below(
        &self,
        offset: i64,
        max_bytes: usize,
        hw: i64,
        start: i64,
    ) -> Result<ReadOutcome> {
        let outcome = |records| ReadOutcome {
            records,
            high_watermark: hw,
            log_start_offset: start,
        };
        if offset == hw {
            self.left_disk(offset);
            return Ok(outcome(Bytes::new()));
        }
        let cached = self.cache.borrow().read(self.id, offset, hw, max_bytes);
        if let Some(b) = cached {
            self.left_disk(offset);
            return Ok(outcome(b));
        }
        let (file, base, mut pos, end) = {
            let inner = self.inner.borrow();
            let (&base, seg) = inner
                .segments
                .range(..=offset)
                .next_back()
                .expect("offset >= log start");
            // Durable data has a file unless the log was destroyed under this read (a
            // ListOffsets or Fetch racing DeleteTopics).
            let Some(file) = seg.file.clone() else {
                return Err(if inner.deleted {
                    StorageError::Deleted {
                        partition: self.name.clone(),
                    }
                } else {
                    StorageError::Failed {
                        partition: self.name.clone(),
                        cause: "segment file closed".into(),
                    }
                });
            };
            let rel = (offset - base) as u32;
            (file, base, seg.index.lookup(rel) as u64, seg.durable_size)
        };
        let path = segment_path(&self.dir, base, "log");
        let want = max_bytes.max(1);
        // Set aside: if the windows are dropped while this read awaits, it keeps its own.
        let generation = self.read_ahead_generation.get();
        // A read from where the last one ended starts at its exact position (the index is
        // sparse: its entry may lie batches before) and is sequential.
        let resumed = match self.last_read_end.get() {
            Some((b, next, at)) if b == base && next == offset => {
                pos = at;
                true
            }
            _ => false,
        };
        // This reader's windows, if the read continues their scan; another reader's are put
        // back untouched unless this read starts a scan of its own.
        let mut others = self.read_ahead.borrow_mut().take();
        let mut ahead = match others.take() {
            Some(r) if r.serves(base, &file, pos) => Some(r),
            r => {
                others = r;
                None
            }
        };
        let sequential = ahead.is_some() || resumed;
        let mut next_offset = None;
        let mut out = Gathered::default();
        'chunks: while pos < end {
            let held = match ahead.as_mut() {
                Some(r) => r.chunk_at(pos).await,
                None => None,
            };
            // A window's tail that does not hold the next batch whole (none in flight to
            // join it with): the file has the rest.
            let held = held.filter(|c| {
                c.as_ref().map_or(true, |(b, _)| {
                    Header::parse(b).is_some_and(|h| h.size <= b.len())
                })
            });
            if held.is_some() {
                self.read_ahead_budget.count_served();
            }
            let windowed = held.is_some();
            let (mut chunk, buffer) = match held {
                Some(read) => read.map_err(|e| StorageError::io("read", &path, e))?,
                None => {
                    let len = ((end - pos) as usize)
                        .min(want.max(DIRECT_READ_BYTES_MIN) + HEADER_BYTES)
                        .min(READ_CHUNK_BYTES_MAX);
                    let chunk = file
                        .read_at(pos, len)
                        .await
                        .map_err(|e| StorageError::io("read", &path, e))?;
                    let len = chunk.len();
                    (chunk, len)
                }
            };
            // Never past the durable size this read started with (a window holds no more,
            // but a direct read may end in the tail page's padding).
            chunk.truncate(((end - pos) as usize).min(chunk.len()));
            let mut at = 0usize;
            let mut taken = None;
            while at + HEADER_BYTES <= chunk.len() {
                let Some(h) = Header::parse(&chunk[at..]) else {
                    return Err(StorageError::CorruptBatch {
                        reason: format!("{path:?} at {}", pos + at as u64),
                    });
                };
                if h.base_offset >= hw {
                    out.push(&chunk, buffer, taken, at);
                    pos += at as u64;
                    break 'chunks;
                }
                if h.last_offset() < offset {
                    at += h.size;
                    continue;
                }
                let from = *taken.get_or_insert(at);
                let first = out.len() + (at - from) == 0;
                if !first && out.len() + (at - from) + h.size > want {
                    out.push(&chunk, buffer, taken, at);
                    pos += at as u64;
                    break 'chunks;
                }
                if at + h.size > chunk.len() {
                    if first {
                        // The first batch is bigger than the chunk: read it whole.
                        let whole = file
                            .read_at(pos + at as u64, h.size)
                            .await
                            .map_err(|e| StorageError::io("read", &path, e))?;
                        out.push_whole(whole);
                        next_offset = Some(h.last_offset() + 1);
                        pos += (at + h.size) as u64;
                        break 'chunks;
                    }
                    break;
                }
                next_offset = Some(h.last_offset() + 1);
                at += h.size;
            }
            out.push(&chunk, buffer, taken, at);
            if at == 0 {
                break;
            }
            pos += at as u64;
            if out.len() >= want {
                break;
            }
            if windowed && out.len() > 0 {
                // The answer ends where its window ends: one slice of it, not a copy of
                // parts of two (the next read finds its first batch whole in the next window).
                // A window that held nothing for this read (only batches before `offset`)
                // does not end it: the next window does.
                break;
            }
        }
        if sequential && self.read_ahead_budget.bytes_max() > 0 {
            let r = ahead.get_or_insert_with(|| ReadAhead::new(base, file.clone()));
            r.issue(&self.read_ahead_budget, pos, end, want);
            if r.is_idle() {
                // Nothing held or in flight (the segment's end, or the budget spent): keep
                // no file handle for nothing.
                ahead = None;
            }
        }
        if self.read_ahead_generation.get() == generation {
            *self.read_ahead.borrow_mut() = ahead.or(others);
            if let Some(next) = next_offset {
                self.last_read_end.set(Some((base, next, pos)));
            }
        }
        Ok(outcome(out.finish()))
    }

    /// The first offset whose batch has a timestamp at or after `timestamp`, with that
    /// batch's max timestamp; `None` if every batch is older.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>> {
        let plan = {
            let inner = self.inner.borrow();
            let hw = inner.visible_hw();
            inner
                .segments
                .values()
                .find(|s| s.max_timestamp >= timestamp && s.base_offset < hw)
                .map(|s| {
                    (
                        s.base_offset + s.time_index.lookup(timestamp) as i64,
                        inner.log_start_offset,
                        hw,
                    )
                })
        };
        let Some((mut from, start, hw)) = plan else {
            return Ok(None);
        };
        from = from.max(start);
        while from < hw {
            let read = self.read(from, SCAN_CHUNK_BYTES).await?;
            if read.records.is_empty() {
                break;
            }
            let mut at = 0;
            while let Some(h) = Header::parse(&read.records[at..]) {
                if h.max_timestamp >= timestamp {
                    return Ok(Some((h.base_offset.max(start), h.max_timestamp)));
                }
                from = h.last_offset() + 1;
                at += h.size;
                if at >= read.records.len() {
                    break;
                }
            }
        }
        Ok(None)
    }

    /// Offset and value of the largest timestamp in the log (ListOffsets MAX_TIMESTAMP).
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let inner = self.inner.borrow();
        let hw = inner.visible_hw();
        inner
            .segments
            .values()
            .filter(|s| s.max_timestamp >= 0 && s.offset_of_max_timestamp < hw)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.offset_of_max_timestamp, s.max_timestamp))
    }
}

/// Whether `records` holds a batch with no records that is not a control batch (one
/// compaction emptied).
fn has_empty_batch(records: &[u8]) -> bool {
    let mut at = 0;
    while let Some(h) = records.get(at..).and_then(Header::parse) {
        if h.records_count == 0 && !h.is_control() {
            return true;
        }
        at += h.size;
    }
    false
}

/// A run of emptied batches a consumer read is given as one.
struct EmptyRun {
    base_offset: i64,
    last_offset: i64,
    epoch: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl EmptyRun {
    fn new(h: &Header) -> EmptyRun {
        EmptyRun {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            epoch: h.leader_epoch,
            base_timestamp: h.base_timestamp,
            max_timestamp: h.max_timestamp,
        }
    }

    fn extend(&mut self, h: &Header) {
        self.last_offset = h.last_offset();
        self.epoch = h.leader_epoch;
        self.max_timestamp = self.max_timestamp.max(h.max_timestamp);
    }

    fn batch(&self) -> [u8; crate::hdr::HEADER_BYTES] {
        sluice_codec::records::empty_batch(
            self.base_offset,
            self.last_offset,
            self.epoch,
            self.base_timestamp,
            self.max_timestamp,
        )
    }
}

/// How many times its own size a read's answer may keep alive by sharing a chunk's buffer
/// instead of copying out of it: a 256 KiB answer out of a 1 MiB read-ahead window is
/// shared, a 100-byte one is copied.
const SHARED_CHUNK_FACTOR_MAX: usize = 4;

/// The batches one read returns, gathered from the chunks it read: one slice of a chunk
/// when they all came from one (no copy, unless that would keep more than
/// [`SHARED_CHUNK_FACTOR_MAX`] times the answer alive), else one copy of them all.
#[derive(Default)]
struct Gathered {
    parts: smallvec::SmallVec<[(Bytes, usize); 2]>,
    len: usize,
}

impl Gathered {
    fn len(&self) -> usize {
        self.len
    }

    /// `chunk[from..to]`, where `from` is where this read's batches began in the chunk
    /// (`None`: none did); `buffer` is the length of the buffer the chunk is part of.
    fn push(&mut self, chunk: &Bytes, buffer: usize, from: Option<usize>, to: usize) {
        if let Some(from) = from.filter(|&f| f < to) {
            self.parts.push((chunk.slice(from..to), buffer));
            self.len += to - from;
        }
    }

    fn push_whole(&mut self, batch: Bytes) {
        self.len += batch.len();
        let kept = batch.len();
        self.parts.push((batch, kept));
    }

    fn finish(self) -> Bytes {
        match &self.parts[..] {
            [] => Bytes::new(),
            [(only, kept)] if only.len() * SHARED_CHUNK_FACTOR_MAX >= *kept => only.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.len);
                for (p, _) in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }
}
