//! Request header parsing: splits a frame into the header fields the broker dispatches on and
//! the body bytes, without copying the body and without needing the api key to be served.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::StrBytes;

use crate::error::CodecError;

/// Bytes of the fixed header prefix shared by every request header version:
/// api key (i16), api version (i16), correlation id (i32).
pub const REQUEST_HEADER_FIXED_LEN: usize = 8;

/// Longest encoding of an unsigned varint holding a u32.
const UNSIGNED_VARINT_LEN_MAX: usize = 5;

/// The fixed 8-byte prefix of a request header, readable even when the api key is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    /// Raw api key.
    pub api_key: i16,
    /// Requested api version.
    pub api_version: i16,
    /// Correlation id to echo in the response.
    pub correlation_id: i32,
}

/// Read the fixed prefix of a request frame.
pub fn peek_request_prefix(frame: &[u8]) -> Result<RequestPrefix, CodecError> {
    let Some(p) = frame.get(..REQUEST_HEADER_FIXED_LEN) else {
        return Err(CodecError::HeaderTruncated {
            field: "fixed header",
            needed: REQUEST_HEADER_FIXED_LEN,
            available: frame.len(),
            correlation_id: None,
        });
    };
    Ok(RequestPrefix {
        api_key: i16::from_be_bytes([p[0], p[1]]),
        api_version: i16::from_be_bytes([p[2], p[3]]),
        correlation_id: i32::from_be_bytes([p[4], p[5], p[6], p[7]]),
    })
}

/// A parsed request header (versions 0-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderInfo {
    /// The api key.
    pub api_key: ApiKey,
    /// The requested api version.
    pub api_version: i16,
    /// Correlation id to echo in the response.
    pub correlation_id: i32,
    /// Client id (absent in header v0 or when sent as null). Shares the frame's memory when
    /// it is valid UTF-8; Kafka tolerates invalid UTF-8 here, so it is then replaced lossily.
    pub client_id: Option<StrBytes>,
    /// Request header version the frame was parsed with (2 means flexible).
    pub header_version: i16,
}

impl RequestHeaderInfo {
    /// Response header version to answer with (always 0 for ApiVersions).
    pub fn response_header_version(&self) -> i16 {
        self.api_key.response_header_version(self.api_version)
    }
}

/// Split a request frame into its header and body.
///
/// The header layout is chosen by `ApiKey::request_header_version`, which is defined for any
/// version number, so this works for versions the broker does not serve (needed to answer
/// ApiVersions from newer clients). Header tagged fields are validated and skipped: Kafka
/// defines none for requests. The body is a zero-copy slice of `frame`.
pub fn decode_request_header(frame: Bytes) -> Result<(RequestHeaderInfo, Bytes), CodecError> {
    let prefix = peek_request_prefix(&frame)?;
    let correlation_id = prefix.correlation_id;
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
        return Err(CodecError::UnknownApiKey {
            api_key: prefix.api_key,
            api_version: prefix.api_version,
            correlation_id,
        });
    };
    let header_version = api_key.request_header_version(prefix.api_version);
    let mut pos = REQUEST_HEADER_FIXED_LEN;

    let client_id = if header_version >= 1 {
        let len_bytes = take(&frame, &mut pos, 2, "client id length", correlation_id)?;
        let len = i16::from_be_bytes([len_bytes[0], len_bytes[1]]);
        match len {
            -1 => None,
            n if n < 0 => {
                return Err(CodecError::HeaderInvalid {
                    field: "client id length",
                    value: i64::from(n),
                    correlation_id,
                })
            }
            n => {
                let start = pos;
                take(&frame, &mut pos, n as usize, "client id", correlation_id)?;
                let raw = frame.slice(start..pos);
                Some(match StrBytes::from_utf8(raw) {
                    Ok(s) => s,
                    Err(_) => StrBytes::from_string(
                        String::from_utf8_lossy(&frame[start..pos]).into_owned(),
                    ),
                })
            }
        }
    } else {
        None
    };

    if header_version >= 2 {
        // Each tagged field costs at least two bytes (tag + size), so the loop is bounded by
        // the frame length and allocates nothing.
        let count = read_unsigned_varint(&frame, &mut pos, "tagged field count", correlation_id)?;
        for _ in 0..count {
            read_unsigned_varint(&frame, &mut pos, "tagged field tag", correlation_id)?;
            let size = read_unsigned_varint(&frame, &mut pos, "tagged field size", correlation_id)?;
            take(
                &frame,
                &mut pos,
                size as usize,
                "tagged field",
                correlation_id,
            )?;
        }
    }

    let header = RequestHeaderInfo {
        api_key,
        api_version: prefix.api_version,
        correlation_id,
        client_id,
        header_version,
    };
    Ok((header, frame.slice(pos..)))
}

/// Advance `pos` over `n` bytes of `frame`, returning them.
fn take<'a>(
    frame: &'a [u8],
    pos: &mut usize,
    n: usize,
    field: &'static str,
    correlation_id: i32,
) -> Result<&'a [u8], CodecError> {
    let end = pos.checked_add(n).filter(|&end| end <= frame.len());
    let Some(end) = end else {
        return Err(CodecError::HeaderTruncated {
            field,
            needed: pos.saturating_add(n),
            available: frame.len(),
            correlation_id: Some(correlation_id),
        });
    };
    let out = &frame[*pos..end];
    *pos = end;
    Ok(out)
}

/// Read a Kafka unsigned varint (LEB128, at most 5 bytes for a u32).
fn read_unsigned_varint(
    frame: &[u8],
    pos: &mut usize,
    field: &'static str,
    correlation_id: i32,
) -> Result<u32, CodecError> {
    let mut value: u64 = 0;
    for i in 0..UNSIGNED_VARINT_LEN_MAX {
        let b = take(frame, pos, 1, field, correlation_id)?[0];
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| CodecError::HeaderInvalid {
                field,
                value: value as i64,
                correlation_id,
            });
        }
    }
    Err(CodecError::HeaderInvalid {
        field,
        value: value as i64,
        correlation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};
    use kafka_protocol::messages::RequestHeader;
    use kafka_protocol::protocol::Encodable;

    fn encoded_header(key: ApiKey, version: i16, client_id: Option<&'static str>) -> BytesMut {
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(client_id.map(StrBytes::from_static_str));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        buf
    }

    #[test]
    fn parses_v1_and_v2_headers() {
        for (key, version, hv) in [(ApiKey::Metadata, 8, 1), (ApiKey::Metadata, 12, 2)] {
            let mut buf = encoded_header(key, version, Some("client-1"));
            buf.put_slice(b"BODY");
            let (h, body) = decode_request_header(buf.freeze()).unwrap();
            assert_eq!(h.api_key, key);
            assert_eq!(h.api_version, version);
            assert_eq!(h.correlation_id, 42);
            assert_eq!(h.client_id.as_deref(), Some("client-1"));
            assert_eq!(h.header_version, hv);
            assert_eq!(&body[..], b"BODY");
        }
    }

    #[test]
    fn null_client_id_and_tagged_fields_are_skipped() {
        let mut buf = BytesMut::new();
        buf.put_i16(ApiKey::Metadata as i16);
        buf.put_i16(12);
        buf.put_i32(5);
        buf.put_i16(-1);
        buf.put_u8(2); // two tagged fields
        buf.put_slice(&[0, 1, 0xaa]);
        buf.put_slice(&[0x81, 0x01, 0, 0xff]); // tag 129, size 0; then body
        let (h, body) = decode_request_header(buf.freeze()).unwrap();
        assert_eq!(h.client_id, None);
        assert_eq!(&body[..], &[0xff]);
    }

    #[test]
    fn unknown_api_key_keeps_correlation_id() {
        let mut buf = BytesMut::new();
        buf.put_i16(1000);
        buf.put_i16(3);
        buf.put_i32(77);
        let err = decode_request_header(buf.freeze()).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnknownApiKey {
                api_key: 1000,
                api_version: 3,
                correlation_id: 77
            }
        );
        assert_eq!(err.correlation_id(), Some(77));
        assert!(err.closes_connection());
    }

    #[test]
    fn truncated_and_invalid_headers() {
        assert!(matches!(
            decode_request_header(Bytes::from_static(&[0, 3, 0])),
            Err(CodecError::HeaderTruncated {
                correlation_id: None,
                ..
            })
        ));
        // client id claims 10 bytes, 1 present
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0, 10, b'x']);
        assert!(matches!(
            decode_request_header(frame),
            Err(CodecError::HeaderTruncated {
                correlation_id: Some(9),
                ..
            })
        ));
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xfe]);
        assert!(matches!(
            decode_request_header(frame),
            Err(CodecError::HeaderInvalid { value: -2, .. })
        ));
        // flexible header with a 6-byte varint
        let frame = Bytes::from_static(&[
            0, 3, 0, 12, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ]);
        assert!(matches!(
            decode_request_header(frame),
            Err(CodecError::HeaderInvalid { .. })
        ));
    }

    #[test]
    fn invalid_utf8_client_id_is_tolerated() {
        let frame = Bytes::from_static(&[0, 3, 0, 1, 0, 0, 0, 9, 0, 2, 0xc3, 0x28]);
        let (h, _) = decode_request_header(frame).unwrap();
        assert_eq!(h.client_id.as_deref(), Some("\u{fffd}("));
    }
}
