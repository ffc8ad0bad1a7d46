//! Size-prefixed framing: `FrameDecoder` cuts complete request frames out of a socket buffer,
//! and `encode_response`/`frame_response` write size prefix + response header + body.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use crate::error::CodecError;

/// Length of the big-endian i32 size prefix in front of every Kafka request and response.
pub const FRAME_SIZE_PREFIX_LEN: usize = 4;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const KAFKA_SOCKET_REQUEST_MAX_BYTES: usize = 104_857_600;

/// Default `request_size_max`: Kafka's socket limit plus slack for the request header and
/// produce framing around a maximum-size batch, so that a batch accepted by
/// `message.max.bytes`-style checks is never rejected by framing first.
pub const REQUEST_SIZE_MAX_DEFAULT: usize = KAFKA_SOCKET_REQUEST_MAX_BYTES + 64 * 1024;

/// Largest payload a response frame can carry: the size prefix is a signed 32-bit integer.
pub const RESPONSE_SIZE_MAX: usize = i32::MAX as usize;

/// Sans-IO request framer.
///
/// The caller owns the `BytesMut` the socket is read into and calls [`FrameDecoder::decode`]
/// after each read. A complete frame is split off the front of that buffer without copying
/// (`BytesMut::split_to` + `freeze`), so the only copy of request bytes is the socket read.
///
/// The decoder never reserves memory for the size a prefix declares: the buffer grows only
/// as bytes really arrive (the caller decides how much to read, and accounts for it), so a
/// client that declares a 100 MiB frame and sends nothing more costs nothing.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    request_size_max: usize,
    /// Payload length of the frame currently being received, once its prefix was validated.
    pending: Option<usize>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(REQUEST_SIZE_MAX_DEFAULT)
    }
}

impl FrameDecoder {
    /// A decoder rejecting frames whose payload exceeds `request_size_max` bytes.
    pub fn new(request_size_max: usize) -> Self {
        Self {
            request_size_max,
            pending: None,
        }
    }

    /// The configured payload limit.
    pub fn request_size_max(&self) -> usize {
        self.request_size_max
    }

    /// Payload length of a partially received frame whose prefix has been validated, so the
    /// broker can size its next read (never reserved: the buffer grows as bytes arrive).
    pub fn pending_frame_len(&self) -> Option<usize> {
        self.pending
    }

    /// Take the next complete frame (payload after the size prefix) off the front of `buf`.
    ///
    /// Returns `Ok(None)` when more bytes are needed. An error means the stream is
    /// unusable (negative or oversized prefix) and the connection must be closed; the decoder
    /// and buffer should then be dropped.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let len = match self.pending {
            Some(len) => len,
            None => {
                let Some(prefix) = buf.get(..FRAME_SIZE_PREFIX_LEN) else {
                    return Ok(None);
                };
                let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
                let len = check_frame_size(size, self.request_size_max)?;
                self.pending = Some(len);
                len
            }
        };
        let total = FRAME_SIZE_PREFIX_LEN + len;
        if buf.len() < total {
            return Ok(None);
        }
        self.pending = None;
        let mut frame = buf.split_to(total);
        frame.advance(FRAME_SIZE_PREFIX_LEN);
        Ok(Some(frame.freeze()))
    }
}

/// Validate a raw size prefix against `size_max`, returning the payload length.
pub fn check_frame_size(size: i32, size_max: usize) -> Result<usize, CodecError> {
    let Ok(len) = usize::try_from(size) else {
        return Err(CodecError::FrameSizeNegative { size });
    };
    if len > size_max {
        return Err(CodecError::FrameTooLarge {
            size: len,
            size_max,
        });
    }
    Ok(len)
}

/// Encoded length of a response header at `header_version` (0: correlation id; 1: plus an
/// empty tagged-field section, one byte).
fn response_header_len(header_version: i16) -> Result<usize, CodecError> {
    match header_version {
        0 => Ok(4),
        1 => Ok(5),
        other => Err(CodecError::ResponseEncode {
            version: other,
            reason: format!("response header version {other} does not exist (0 or 1)"),
        }),
    }
}

/// Append one complete response frame (size prefix, header, body) to `out`.
///
/// `compute_size` sizes the frame once, so `out` grows at most once. Pick
/// `response_header_version` with `ApiKey::response_header_version(version)`; it is always 0
/// for ApiVersions. The header carries no tagged fields: Kafka defines none for responses.
/// Returns the number of bytes appended. On error `out` is left as it was.
pub fn encode_response<T: Encodable>(
    out: &mut BytesMut,
    correlation_id: i32,
    response_header_version: i16,
    body: &T,
    version: i16,
) -> Result<usize, CodecError> {
    let payload_len = payload_len(response_header_version, body, version)?;
    let start = out.len();
    out.reserve(FRAME_SIZE_PREFIX_LEN + payload_len);
    let result = write_frame(
        out,
        payload_len,
        correlation_id,
        response_header_version,
        body,
        version,
    );
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// [`encode_response`] into any encoder output (the caller discards it on error).
pub(crate) fn encode_frame<T: Encodable, B: ByteBufMut>(
    out: &mut B,
    correlation_id: i32,
    response_header_version: i16,
    body: &T,
    version: i16,
) -> Result<usize, CodecError> {
    let payload_len = payload_len(response_header_version, body, version)?;
    write_frame(
        out,
        payload_len,
        correlation_id,
        response_header_version,
        body,
        version,
    )
}

/// Header plus body length of a response, checked against `RESPONSE_SIZE_MAX`.
fn payload_len<T: Encodable>(
    response_header_version: i16,
    body: &T,
    version: i16,
) -> Result<usize, CodecError> {
    let header_len = response_header_len(response_header_version)?;
    let body_len = body
        .compute_size(version)
        .map_err(|e| CodecError::ResponseEncode {
            version,
            reason: format!("{e:#}"),
        })?;
    header_len
        .checked_add(body_len)
        .filter(|&n| n <= RESPONSE_SIZE_MAX)
        .ok_or(CodecError::ResponseTooLarge {
            size: header_len.saturating_add(body_len),
            size_max: RESPONSE_SIZE_MAX,
        })
}

fn write_frame<T: Encodable, B: ByteBufMut>(
    out: &mut B,
    payload_len: usize,
    correlation_id: i32,
    response_header_version: i16,
    body: &T,
    version: i16,
) -> Result<usize, CodecError> {
    let start = out.offset();
    // `payload_len <= RESPONSE_SIZE_MAX <= i32::MAX` was checked, so the cast is lossless.
    out.put_i32(payload_len as i32);
    out.put_i32(correlation_id);
    if response_header_version >= 1 {
        out.put_u8(0); // empty tagged-field section
    }
    body.encode(out, version)
        .map_err(|e| CodecError::ResponseEncode {
            version,
            reason: format!("{e:#}"),
        })?;
    let written = out.offset() - start;
    if written != FRAME_SIZE_PREFIX_LEN + payload_len {
        // A compute_size/encode disagreement would desynchronise the client's framing.
        return Err(CodecError::ResponseEncode {
            version,
            reason: format!(
                "encoder wrote {} bytes but compute_size promised {}",
                written - FRAME_SIZE_PREFIX_LEN,
                payload_len
            ),
        });
    }
    Ok(written)
}

/// One response frame in its own buffer; see [`encode_response`].
pub fn frame_response<T: Encodable>(
    correlation_id: i32,
    response_header_version: i16,
    body: &T,
    version: i16,
) -> Result<Bytes, CodecError> {
    let mut out = BytesMut::new();
    encode_response(
        &mut out,
        correlation_id,
        response_header_version,
        body,
        version,
    )?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, MetadataResponse};

    fn prefixed(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_frames_split_across_reads() {
        let mut wire = prefixed(b"hello");
        wire.extend(prefixed(b""));
        wire.extend(prefixed(b"world!"));
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames, vec![&b"hello"[..], &b""[..], &b"world!"[..]]);
        assert!(buf.is_empty());
        assert_eq!(dec.pending_frame_len(), None);
    }

    #[test]
    fn never_reserves_what_a_prefix_declares() {
        let mut dec = FrameDecoder::default();
        let mut buf = BytesMut::with_capacity(64);
        buf.put_i32(KAFKA_SOCKET_REQUEST_MAX_BYTES as i32);
        buf.put_slice(&[1, 2, 3]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert_eq!(
            dec.pending_frame_len(),
            Some(KAFKA_SOCKET_REQUEST_MAX_BYTES)
        );
        assert_eq!(buf.capacity(), 64, "nothing reserved for the declared size");
    }

    #[test]
    fn rejects_negative_and_oversized_prefix_without_reserving() {
        let mut dec = FrameDecoder::new(1000);
        let mut buf = BytesMut::from(&(-1i32).to_be_bytes()[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::FrameSizeNegative { size: -1 })
        );
        let mut buf = BytesMut::from(&1001i32.to_be_bytes()[..]);
        let cap = buf.capacity();
        assert_eq!(
            dec.decode(&mut buf),
            Err(CodecError::FrameTooLarge {
                size: 1001,
                size_max: 1000
            })
        );
        assert_eq!(buf.capacity(), cap);
        let mut buf = BytesMut::from(&1000i32.to_be_bytes()[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
    }

    #[test]
    fn default_limit_accepts_kafka_max_and_rejects_i32_max() {
        assert!(check_frame_size(
            KAFKA_SOCKET_REQUEST_MAX_BYTES as i32,
            REQUEST_SIZE_MAX_DEFAULT
        )
        .is_ok());
        assert!(check_frame_size(i32::MAX, REQUEST_SIZE_MAX_DEFAULT).is_err());
    }

    #[test]
    fn response_frame_layout() {
        let body = MetadataResponse::default()
            .with_cluster_id(Some("c".into()))
            .with_controller_id(1.into());
        let version = 12;
        let hv = ApiKey::Metadata.response_header_version(version);
        assert_eq!(hv, 1);
        let frame = frame_response(7, hv, &body, version).unwrap();
        let size = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(size, frame.len() - 4);
        assert_eq!(&frame[4..8], &7i32.to_be_bytes());
        assert_eq!(frame[8], 0);
        let mut rest = frame.slice(9..);
        let decoded =
            <MetadataResponse as kafka_protocol::protocol::Decodable>::decode(&mut rest, version)
                .unwrap();
        assert_eq!(decoded, body);
    }

    #[test]
    fn api_versions_response_header_is_v0_and_appends() {
        let hv = ApiKey::ApiVersions.response_header_version(4);
        assert_eq!(hv, 0);
        let mut out = BytesMut::from(&b"xx"[..]);
        let n = encode_response(&mut out, 9, hv, &ApiVersionsResponse::default(), 4).unwrap();
        assert_eq!(out.len(), 2 + n);
        assert_eq!(&out[6..10], &9i32.to_be_bytes());
    }

    #[test]
    fn bad_header_version_or_field_leaves_buffer_untouched() {
        let mut out = BytesMut::from(&b"keep"[..]);
        assert!(encode_response(&mut out, 1, 2, &ApiVersionsResponse::default(), 0).is_err());
        // A version the message does not have -> encoder error, buffer restored.
        assert!(encode_response(&mut out, 1, 0, &MetadataResponse::default(), 99).is_err());
        assert_eq!(&out[..], b"keep");
    }
}
