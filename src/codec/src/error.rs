//! `CodecError`: every way the wire codec can reject input, with enough context to log it and
//! to pick the Kafka error code (or connection close) the broker answers with.

use std::fmt;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;

/// Errors produced by the codec. None of them is a panic path: all bad input ends up here.
///
/// Variants are grouped by layer: framing (the broker must close the connection), request
/// header/body (closes the connection unless the broker can still answer), and record batch
/// validation (answered per partition with [`CodecError::kafka_error_code`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CodecError {
    // ----- framing -----
    /// The 4-byte size prefix of a request was negative.
    FrameSizeNegative {
        /// The raw size prefix.
        size: i32,
    },
    /// The size prefix announced a frame larger than the configured limit.
    FrameTooLarge {
        /// Announced payload size in bytes.
        size: usize,
        /// The configured `request_size_max`.
        size_max: usize,
    },
    /// An encoded response would not fit in a Kafka frame (size prefix is an i32).
    ResponseTooLarge {
        /// Encoded size of header + body in bytes.
        size: usize,
        /// The largest size that can be framed.
        size_max: usize,
    },
    /// kafka-protocol failed to encode a response (bad field for the version, size mismatch...).
    ResponseEncode {
        /// Version the body was being encoded at.
        version: i16,
        /// Reason reported by the encoder.
        reason: String,
    },

    // ----- request header / body -----
    /// The frame is too short to hold the field being read.
    HeaderTruncated {
        /// Which header field was being read.
        field: &'static str,
        /// Bytes needed from the start of the frame.
        needed: usize,
        /// Bytes the frame holds.
        available: usize,
        /// Correlation id when the frame was long enough to carry it.
        correlation_id: Option<i32>,
    },
    /// A header field holds an impossible value (negative string length, oversized tag...).
    HeaderInvalid {
        /// Which header field was being read.
        field: &'static str,
        /// The offending value.
        value: i64,
        /// Correlation id of the request.
        correlation_id: i32,
    },
    /// The api key is not one kafka-protocol knows; Kafka closes the connection.
    UnknownApiKey {
        /// The raw api key.
        api_key: i16,
        /// The raw api version.
        api_version: i16,
        /// Correlation id, kept so the broker can log it.
        correlation_id: i32,
    },
    /// The api key is known but this broker does not serve it, or not at this version.
    ///
    /// For `ApiKey::ApiVersions` the broker must still answer (v0 response, error 35, full
    /// API list); see [`CodecError::api_versions_fallback`].
    UnsupportedVersion {
        /// The api key.
        api_key: ApiKey,
        /// The requested version.
        version: i16,
        /// What the table allows for this key (`None`: the key is not served at all).
        supported: Option<VersionRange>,
        /// Correlation id when the error came from a whole frame (`None` from `decode_request`,
        /// whose caller already holds the header).
        correlation_id: Option<i32>,
    },
    /// kafka-protocol rejected the request body.
    BodyDecode {
        /// The api key.
        api_key: ApiKey,
        /// The version decoded at.
        version: i16,
        /// Reason reported by the decoder.
        reason: String,
    },
    /// An entry given to the API table is unusable (range empty or beyond kafka-protocol's).
    ApiTableEntry {
        /// The api key.
        api_key: ApiKey,
        /// The requested minimum version.
        min: i16,
        /// The requested maximum version.
        max: i16,
        /// The versions kafka-protocol can decode for this key.
        codec: VersionRange,
    },

    // ----- record batches -----
    /// Fewer bytes than a batch header (or than the announced batch) are available.
    BatchTruncated {
        /// Offset of the batch within the records blob.
        position: usize,
        /// Bytes the batch needs (header, or 12 + batchLength).
        needed: usize,
        /// Bytes available from `position`.
        available: usize,
    },
    /// batchLength is smaller than the fixed v2 header, or over the configured maximum.
    BatchLengthInvalid {
        /// Offset of the batch within the records blob.
        position: usize,
        /// The raw batchLength field.
        batch_length: i32,
        /// Largest accepted batchLength.
        batch_length_max: usize,
    },
    /// The magic byte is not 2.
    UnsupportedMagic {
        /// Offset of the batch within the records blob.
        position: usize,
        /// The magic byte found.
        magic: i8,
    },
    /// The stored CRC32C does not match the bytes.
    CrcMismatch {
        /// Offset of the batch within the records blob.
        position: usize,
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over attributes..end.
        computed: u32,
    },
    /// recordsCount / lastOffsetDelta are negative or mutually inconsistent.
    BatchCountsInvalid {
        /// Offset of the batch within the records blob.
        position: usize,
        /// The recordsCount field.
        records_count: i32,
        /// The lastOffsetDelta field.
        last_offset_delta: i32,
    },
    /// The compression codec id (attributes & 7) is not one Kafka defines (0-4).
    UnknownCompression {
        /// Offset of the batch within the records blob.
        position: usize,
        /// The codec id found.
        codec: u8,
    },
    /// recordsCount claims more records than the batch has bytes (each record is >= 7 bytes).
    BatchRecordsOverflow {
        /// Offset of the batch within the records blob.
        position: usize,
        /// The recordsCount field.
        records_count: i32,
        /// Bytes after the header.
        records_bytes: usize,
    },
    /// The records inside a batch do not parse or do not decompress ([`crate::records`]).
    RecordsInvalid {
        /// What is wrong.
        reason: String,
    },
}

impl CodecError {
    /// The Kafka error code to answer with when the broker replies instead of closing.
    ///
    /// Framing and header errors normally close the connection; their code is what Kafka's
    /// closest equivalent would report and is mostly useful for metrics.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            CodecError::FrameSizeNegative { .. }
            | CodecError::HeaderTruncated { .. }
            | CodecError::HeaderInvalid { .. }
            | CodecError::BodyDecode { .. } => ResponseError::InvalidRequest.code(),
            CodecError::FrameTooLarge { .. } => ResponseError::InvalidRequest.code(),
            CodecError::ResponseTooLarge { .. } | CodecError::ResponseEncode { .. } => {
                ResponseError::UnknownServerError.code()
            }
            CodecError::UnknownApiKey { .. } | CodecError::UnsupportedVersion { .. } => {
                ResponseError::UnsupportedVersion.code()
            }
            CodecError::ApiTableEntry { .. } => ResponseError::UnknownServerError.code(),
            // Old message formats (magic 0/1) are well-formed but not served: Kafka reports
            // UNSUPPORTED_FOR_MESSAGE_FORMAT. Any other magic is garbage, i.e. corruption.
            CodecError::UnsupportedMagic { magic: 0 | 1, .. } => {
                ResponseError::UnsupportedForMessageFormat.code()
            }
            CodecError::UnsupportedMagic { .. }
            | CodecError::BatchTruncated { .. }
            | CodecError::BatchLengthInvalid { .. }
            | CodecError::CrcMismatch { .. }
            | CodecError::BatchCountsInvalid { .. }
            | CodecError::UnknownCompression { .. }
            | CodecError::BatchRecordsOverflow { .. }
            | CodecError::RecordsInvalid { .. } => ResponseError::CorruptMessage.code(),
        }
    }

    /// Correlation id of the offending request, when the frame was long enough to carry one.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            CodecError::HeaderTruncated { correlation_id, .. } => *correlation_id,
            CodecError::HeaderInvalid { correlation_id, .. }
            | CodecError::UnknownApiKey { correlation_id, .. } => Some(*correlation_id),
            CodecError::UnsupportedVersion { correlation_id, .. } => *correlation_id,
            _ => None,
        }
    }

    /// `Some(correlation_id)` when Kafka's rule says to answer rather than close: an
    /// ApiVersions request at a version we do not serve gets a v0 ApiVersionsResponse with
    /// error UNSUPPORTED_VERSION (35) and the full API list, so the client can downgrade.
    pub fn api_versions_fallback(&self) -> Option<i32> {
        match self {
            CodecError::UnsupportedVersion {
                api_key: ApiKey::ApiVersions,
                correlation_id,
                ..
            } => *correlation_id,
            _ => None,
        }
    }

    /// True for errors after which the byte stream cannot be trusted and the broker must close
    /// the connection (Kafka does the same for these).
    pub fn closes_connection(&self) -> bool {
        match self {
            CodecError::FrameSizeNegative { .. }
            | CodecError::FrameTooLarge { .. }
            | CodecError::HeaderTruncated { .. }
            | CodecError::HeaderInvalid { .. }
            | CodecError::UnknownApiKey { .. }
            | CodecError::BodyDecode { .. } => true,
            // ApiVersions is answered (v0, error 35) whichever path produced the error.
            CodecError::UnsupportedVersion { api_key, .. } => *api_key != ApiKey::ApiVersions,
            _ => false,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::FrameSizeNegative { size } => {
                write!(f, "request size prefix is negative ({size})")
            }
            CodecError::FrameTooLarge { size, size_max } => write!(
                f,
                "request of {size} bytes exceeds request_size_max of {size_max} bytes"
            ),
            CodecError::ResponseTooLarge { size, size_max } => write!(
                f,
                "response of {size} bytes exceeds the frame limit of {size_max} bytes"
            ),
            CodecError::ResponseEncode { version, reason } => {
                write!(f, "failed to encode response v{version}: {reason}")
            }
            CodecError::HeaderTruncated {
                field,
                needed,
                available,
                correlation_id,
            } => {
                write!(
                    f,
                    "request header truncated reading {field}: need {needed} bytes, frame has {available}"
                )?;
                if let Some(id) = correlation_id {
                    write!(f, " (correlation id {id})")?;
                }
                Ok(())
            }
            CodecError::HeaderInvalid {
                field,
                value,
                correlation_id,
            } => write!(
                f,
                "request header field {field} has invalid value {value} (correlation id {correlation_id})"
            ),
            CodecError::UnknownApiKey {
                api_key,
                api_version,
                correlation_id,
            } => write!(
                f,
                "unknown api key {api_key} (version {api_version}, correlation id {correlation_id})"
            ),
            CodecError::UnsupportedVersion {
                api_key,
                version,
                supported,
                correlation_id,
            } => {
                write!(f, "{api_key:?} v{version} is not supported")?;
                match supported {
                    Some(range) => write!(f, " (supported {range})")?,
                    None => write!(f, " (api not served)")?,
                }
                if let Some(id) = correlation_id {
                    write!(f, " (correlation id {id})")?;
                }
                Ok(())
            }
            CodecError::BodyDecode {
                api_key,
                version,
                reason,
            } => write!(f, "failed to decode {api_key:?} v{version} body: {reason}"),
            CodecError::ApiTableEntry {
                api_key,
                min,
                max,
                codec,
            } => write!(
                f,
                "api table entry {api_key:?} {min}..{max} is empty or outside the codec's range {codec}"
            ),
            CodecError::BatchTruncated {
                position,
                needed,
                available,
            } => write!(
                f,
                "record batch at byte {position} truncated: need {needed} bytes, have {available}"
            ),
            CodecError::BatchLengthInvalid {
                position,
                batch_length,
                batch_length_max,
            } => write!(
                f,
                "record batch at byte {position} has invalid batchLength {batch_length} (max {batch_length_max})"
            ),
            CodecError::UnsupportedMagic { position, magic } => write!(
                f,
                "record batch at byte {position} has magic {magic}, only 2 is supported"
            ),
            CodecError::CrcMismatch {
                position,
                stored,
                computed,
            } => write!(
                f,
                "record batch at byte {position} failed CRC32C: stored {stored:#010x}, computed {computed:#010x}"
            ),
            CodecError::BatchCountsInvalid {
                position,
                records_count,
                last_offset_delta,
            } => write!(
                f,
                "record batch at byte {position} has invalid recordsCount {records_count} / lastOffsetDelta {last_offset_delta}"
            ),
            CodecError::UnknownCompression { position, codec } => write!(
                f,
                "record batch at byte {position} uses unknown compression codec {codec}"
            ),
            CodecError::BatchRecordsOverflow {
                position,
                records_count,
                records_bytes,
            } => write!(
                f,
                "record batch at byte {position} claims {records_count} records in {records_bytes} bytes"
            ),
            CodecError::RecordsInvalid { reason } => {
                write!(f, "records of a batch are invalid: {reason}")
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// Kafka's name of an error code (`NOT_LEADER_OR_FOLLOWER`, `NONE` for 0), from
/// kafka-protocol's [`ResponseError`]: the one table of names the broker and CLI use.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(ResponseError::Unknown(c)) => format!("UNKNOWN_ERROR_CODE_{c}"),
        Some(e) => {
            let camel = format!("{e:?}");
            let mut out = String::with_capacity(camel.len() + 8);
            for (i, ch) in camel.chars().enumerate() {
                if ch.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(ch.to_ascii_uppercase());
            }
            out
        }
    }
}
