//! The supported-versions table (`ApiTable`) and request body decoding checked against it.
//!
//! The table is an array indexed by api key so that the per-request lookup is one bounds
//! check and a load, and it doubles as the source for the ApiVersions response.

use std::panic::{catch_unwind, AssertUnwindSafe};

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

thread_local! {
    /// Set while this thread runs the third-party decoder under `catch_unwind`.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a panic on this thread now would be caught and turned into a decode error (the
/// thread is inside the vendored request decoder). The process's panic policy (end the
/// process at once on any panic) makes this one exception, so a decoder bug costs one
/// connection, not the broker; every such panic is still a bug the fuzzers must find.
pub fn panic_is_contained() -> bool {
    CONTAINED.with(|c| c.get())
}

fn decode_body(api_key: ApiKey, version: i16, mut body: Bytes) -> Result<RequestKind, CodecError> {
    // kafka-protocol is written to return errors, but it is third-party code fed with
    // untrusted bytes: a panic in it must cost one connection, not the shard.
    CONTAINED.with(|c| c.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| {
        RequestKind::decode(api_key, &mut body, version)
    }));
    CONTAINED.with(|c| c.set(false));
    match result {
        Ok(Ok(kind)) => Ok(kind),
        Ok(Err(e)) => Err(CodecError::BodyDecode {
            api_key,
            version,
            reason: format!("{e:#}"),
        }),
        Err(_) => Err(CodecError::BodyDecode {
            api_key,
            version,
            reason: "decoder panicked".to_owned(),
        }),
    }
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
}
