//! The supported-versions table (`ApiTable`) and request body decoding checked against it.
//!
//! The table is an array indexed by api key so that the per-request lookup is one bounds
//! check and a load, and it doubles as the source for the ApiVersions response.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestKind};
use kafka_protocol::protocol::VersionRange;

use crate::error::CodecError;
use crate::header::{decode_request_header, peek_request_prefix, RequestHeaderInfo};

/// Number of api key slots. Kafka's keys are small dense integers (highest today is 92), so
/// 128 slots cover them with room for new ones; keys outside are simply unsupported.
pub const API_KEY_SLOTS: usize = 128;

/// Which api keys the broker serves, and at which versions.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiTable {
    slots: [Option<VersionRange>; API_KEY_SLOTS],
}

impl Default for ApiTable {
    fn default() -> Self {
        Self::empty()
    }
}

impl ApiTable {
    /// A table serving nothing.
    pub const fn empty() -> Self {
        Self {
            slots: [None; API_KEY_SLOTS],
        }
    }

    /// Build a table from `(api key, min version, max version)` entries, e.g. a broker's
    /// `SUPPORTED` constant. Later entries for the same key replace earlier ones.
    pub fn new(entries: &[(ApiKey, i16, i16)]) -> Result<Self, CodecError> {
        let mut table = Self::empty();
        for &(key, min, max) in entries {
            table.insert(key, min, max)?;
        }
        Ok(table)
    }

    /// Every api key at every version kafka-protocol can decode (for tests and tools).
    pub fn codec_max() -> Self {
        let mut table = Self::empty();
        for key in ApiKey::iter() {
            if let Some(slot) = table.slots.get_mut(key as i16 as usize) {
                *slot = Some(key.valid_versions());
            }
        }
        table
    }

    /// Serve `api_key` at versions `min..=max`. The range must be non-empty and within what
    /// kafka-protocol can decode, otherwise requests would pass the check and fail decoding.
    pub fn insert(&mut self, api_key: ApiKey, min: i16, max: i16) -> Result<(), CodecError> {
        let codec = api_key.valid_versions();
        let bad = CodecError::ApiTableEntry {
            api_key,
            min,
            max,
            codec,
        };
        if min > max || min < codec.min || max > codec.max {
            return Err(bad);
        }
        let Some(slot) = self.slots.get_mut(api_key as i16 as usize) else {
            return Err(bad);
        };
        *slot = Some(VersionRange { min, max });
        Ok(())
    }

    /// Stop serving `api_key`.
    pub fn remove(&mut self, api_key: ApiKey) {
        if let Some(slot) = self.slots.get_mut(api_key as i16 as usize) {
            *slot = None;
        }
    }

    /// Versions served for `api_key`, if any.
    #[inline]
    pub fn range(&self, api_key: ApiKey) -> Option<VersionRange> {
        self.range_raw(api_key as i16)
    }

    /// Versions served for a raw api key (negative or out-of-table keys: `None`).
    #[inline]
    pub fn range_raw(&self, api_key: i16) -> Option<VersionRange> {
        let idx = usize::try_from(api_key).ok()?;
        self.slots.get(idx).copied().flatten()
    }

    /// Served keys in key order, for building the ApiVersions response.
    pub fn iter(&self) -> impl Iterator<Item = (ApiKey, VersionRange)> + '_ {
        self.slots.iter().enumerate().filter_map(|(idx, slot)| {
            let range = (*slot)?;
            let key = ApiKey::try_from(i16::try_from(idx).ok()?).ok()?;
            Some((key, range))
        })
    }

    /// Check that `version` of `api_key` is served.
    #[inline]
    pub fn check(&self, api_key: ApiKey, version: i16) -> Result<(), CodecError> {
        self.check_inner(api_key, version, None)
    }

    fn check_inner(
        &self,
        api_key: ApiKey,
        version: i16,
        correlation_id: Option<i32>,
    ) -> Result<(), CodecError> {
        match self.range(api_key) {
            Some(r) if (r.min..=r.max).contains(&version) => Ok(()),
            supported => Err(CodecError::UnsupportedVersion {
                api_key,
                version,
                supported,
                correlation_id,
            }),
        }
    }

    /// Decode a request body after checking the version against the table.
    ///
    /// Variable-length payloads (record sets, strings, bytes) in the result share `body`'s
    /// memory rather than being copied.
    pub fn decode_request(
        &self,
        api_key: ApiKey,
        version: i16,
        body: Bytes,
    ) -> Result<RequestKind, CodecError> {
        self.check(api_key, version)?;
        decode_body(api_key, version, body)
    }

    /// Decode a whole request frame (as returned by `FrameDecoder`): header, version check,
    /// body.
    ///
    /// The version is checked before the rest of the header is parsed, so an ApiVersions
    /// request from a newer client yields `UnsupportedVersion` with its correlation id even
    /// if its header layout is one we cannot read (see `CodecError::api_versions_fallback`).
    pub fn decode_frame(&self, frame: Bytes) -> Result<Request, CodecError> {
        let prefix = peek_request_prefix(&frame)?;
        let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
            return Err(CodecError::UnknownApiKey {
                api_key: prefix.api_key,
                api_version: prefix.api_version,
                correlation_id: prefix.correlation_id,
            });
        };
        self.check_inner(api_key, prefix.api_version, Some(prefix.correlation_id))?;
        let (header, body) = decode_request_header(frame)?;
        let body = decode_body(api_key, header.api_version, body)?;
        Ok(Request { header, body })
    }
}

/// A decoded request: header plus typed body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The parsed header.
    pub header: RequestHeaderInfo,
    /// The typed body.
    pub body: RequestKind,
}

/// Decode a request body, checking `version` against `table` first.
///
/// Free-function form of [`ApiTable::decode_request`].
pub fn decode_request(
    table: &ApiTable,
    api_key: ApiKey,
    version: i16,
    body: Bytes,
) -> Result<RequestKind, CodecError> {
    table.decode_request(api_key, version, body)
}

/// Panics inside kafka-protocol's decoder that [`decode_body`] turned into errors, process-wide.
static CONTAINED_PANICS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// True while this thread runs the decoder under `catch_unwind`, so a process-wide panic
    /// hook can tell a contained decoder panic from one that must take the process down.
    static IN_CONTAINED_DECODE: Cell<bool> = const { Cell::new(false) };
}

/// How many decoder panics this process contained so far. Every one is a bug (in the
/// vendored kafka-protocol, which should have returned an error); tests and fuzz targets
/// assert that this does not move.
pub fn contained_panics() -> u64 {
    CONTAINED_PANICS.load(Ordering::Relaxed)
}

/// Whether the current thread is inside the codec's contained request decode, i.e. a panic
/// now will be caught and answered as a decode error rather than unwinding further. For a
/// panic hook that aborts on every other panic.
pub fn panic_is_contained() -> bool {
    IN_CONTAINED_DECODE.with(Cell::get)
}

/// Marks the current thread as inside a contained decode until dropped; dropping on unwind
/// too, so the mark never outlives the `catch_unwind` it describes.
struct ContainedScope {
    outer: bool,
}

impl ContainedScope {
    fn enter() -> Self {
        Self {
            outer: IN_CONTAINED_DECODE.with(|c| c.replace(true)),
        }
    }
}

impl Drop for ContainedScope {
    fn drop(&mut self) {
        IN_CONTAINED_DECODE.with(|c| c.set(self.outer));
    }
}

/// Runs `f` under `catch_unwind` with the thread marked as contained; a panic is counted in
/// `panics`, logged, and returned as `Err(())`.
fn contain<T>(
    panics: &AtomicU64,
    api_key: ApiKey,
    version: i16,
    f: impl FnOnce() -> T,
) -> Result<T, ()> {
    let result = {
        let _scope = ContainedScope::enter();
        catch_unwind(AssertUnwindSafe(f))
    };
    result.map_err(|_| {
        let total = panics.fetch_add(1, Ordering::Relaxed) + 1;
        log::error!(
            "kafka-protocol panicked decoding {api_key:?} v{version}; contained as a decode \
             error ({total} so far; a bug to report)"
        );
    })
}

fn decode_body(api_key: ApiKey, version: i16, mut body: Bytes) -> Result<RequestKind, CodecError> {
    // kafka-protocol is written to return errors, but it is third-party code fed with
    // untrusted bytes: a panic in it must cost one connection, not the shard.
    let result = contain(&CONTAINED_PANICS, api_key, version, || {
        RequestKind::decode(api_key, &mut body, version)
    });
    match result {
        Ok(Ok(kind)) => Ok(kind),
        Ok(Err(e)) => Err(CodecError::BodyDecode {
            api_key,
            version,
            reason: format!("{e:#}"),
        }),
        Err(()) => Err(CodecError::BodyDecode {
            api_key,
            version,
            reason: "decoder panicked".to_owned(),
        }),
    }
}

/// Decodes one stored record batch (its records, decompressed under the vendored crate's
/// cap) with the same containment as request bodies: the broker decodes client-written
/// batches for ListOffsets by timestamp. `None` when the batch does not decode (or the
/// decoder panicked, which is counted and logged like a request decoder panic).
pub fn decode_record_batch_contained(
    mut batch: Bytes,
) -> Option<kafka_protocol::records::RecordSet> {
    contain(&CONTAINED_PANICS, ApiKey::ListOffsets, -1, || {
        kafka_protocol::records::RecordBatchDecoder::decode(&mut batch)
    })
    .ok()?
    .ok()
}

/// Whether each record of the one v2 batch `batch` has a key, read in place with
/// [`crate::records`] (no copy per record); `None` when its records do not decompress,
/// parse or number what its header says. A panic in the decompressors (third-party code
/// fed with client bytes) is contained as for the decoder.
pub fn record_keys_contained(batch: &[u8]) -> Option<Vec<bool>> {
    contain(&CONTAINED_PANICS, ApiKey::Produce, -1, || {
        let count = crate::batch::BatchHeader::parse(batch).ok()?.records_count;
        let raw = crate::records::records_section(batch).ok()?;
        let records = crate::records::parse_records(&raw).ok()?;
        // As many records as the header says, or the batch is not what it claims.
        (usize::try_from(count).ok()? == records.len())
            .then(|| records.iter().map(|r| r.key.is_some()).collect())
    })
    .ok()?
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    const SUPPORTED: &[(ApiKey, i16, i16)] = &[
        (ApiKey::ApiVersions, 0, 4),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::Produce, 3, 11),
    ];

    #[test]
    fn table_lookup_and_iteration() {
        let t = ApiTable::new(SUPPORTED).unwrap();
        assert_eq!(
            t.range(ApiKey::Metadata),
            Some(VersionRange { min: 0, max: 12 })
        );
        assert_eq!(t.range(ApiKey::Fetch), None);
        assert_eq!(t.range_raw(-1), None);
        assert_eq!(t.range_raw(i16::MAX), None);
        let keys: Vec<_> = t.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            vec![ApiKey::Produce, ApiKey::Metadata, ApiKey::ApiVersions]
        );
        assert!(t.check(ApiKey::Produce, 2).is_err());
        assert!(t.check(ApiKey::Produce, 3).is_ok());
        let mut t = t;
        t.remove(ApiKey::Produce);
        assert!(t.check(ApiKey::Produce, 3).is_err());
    }

    #[test]
    fn table_rejects_bad_entries() {
        assert!(ApiTable::new(&[(ApiKey::Metadata, 5, 4)]).is_err());
        assert!(ApiTable::new(&[(ApiKey::Metadata, 0, 99)]).is_err());
        assert!(ApiTable::new(&[(ApiKey::Produce, 0, 3)]).is_err());
    }

    #[test]
    fn codec_max_covers_every_key() {
        let t = ApiTable::codec_max();
        assert_eq!(t.iter().count(), ApiKey::iter().count());
    }

    #[test]
    fn api_versions_from_newer_client_yields_fallback() {
        let t = ApiTable::new(SUPPORTED).unwrap();
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::ApiVersions as i16);
        buf.put_i16(99);
        buf.put_i32(1234);
        buf.put_slice(&[0xde, 0xad]); // header layout from the future: not parsed
        let err = t.decode_frame(buf.freeze()).unwrap_err();
        assert_eq!(err.api_versions_fallback(), Some(1234));
        assert_eq!(err.kafka_error_code(), 35);
        assert!(!err.closes_connection());
    }

    #[test]
    fn other_unsupported_versions_close_the_connection() {
        let t = ApiTable::new(SUPPORTED).unwrap();
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Fetch as i16);
        buf.put_i16(12);
        buf.put_i32(1);
        let err = t.decode_frame(buf.freeze()).unwrap_err();
        assert_eq!(err.api_versions_fallback(), None);
        assert_eq!(err.correlation_id(), Some(1));
        assert!(err.closes_connection());
    }

    #[test]
    fn contained_panics_are_counted_and_flagged() {
        // A local counter: the process-wide one must stay at zero for the proptests.
        let panics = AtomicU64::new(0);
        assert!(!panic_is_contained());
        let out = contain(&panics, ApiKey::Metadata, 1, || {
            assert!(panic_is_contained());
            7
        });
        assert_eq!(out, Ok(7));
        assert!(!panic_is_contained());
        assert_eq!(panics.load(Ordering::Relaxed), 0);
        let out: Result<(), ()> = contain(&panics, ApiKey::Metadata, 1, || {
            assert!(panic_is_contained());
            panic!("deliberate: checks containment")
        });
        assert_eq!(out, Err(()));
        // Cleared by the unwind, not left set by the panic.
        assert!(!panic_is_contained());
        assert_eq!(panics.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn body_errors_are_reported() {
        let t = ApiTable::new(SUPPORTED).unwrap();
        let err = t
            .decode_request(ApiKey::Metadata, 12, Bytes::from_static(&[0x05]))
            .unwrap_err();
        assert!(matches!(
            err,
            CodecError::BodyDecode {
                api_key: ApiKey::Metadata,
                version: 12,
                ..
            }
        ));
    }

    #[test]
    fn record_keys_are_read_and_a_batch_that_lies_is_refused() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = (0..4)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                sequence: i as i32,
                timestamp: 1_000,
                key: (i != 2).then(|| Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        for c in [Compression::None, Compression::Lz4] {
            let mut buf = BytesMut::new();
            let opts = RecordEncodeOptions {
                version: 2,
                compression: c,
            };
            RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
            let b = buf.to_vec();
            assert_eq!(
                record_keys_contained(&b),
                Some(vec![true, true, false, true]),
                "{c:?}"
            );
            // A header that claims another record count.
            let mut lying = b.clone();
            let at = crate::batch::offsets::RECORDS_COUNT;
            lying[at..at + 4].copy_from_slice(&5i32.to_be_bytes());
            assert_eq!(record_keys_contained(&lying), None);
            // Cut records.
            assert_eq!(record_keys_contained(&b[..b.len() - 3]), None);
        }
    }
}
