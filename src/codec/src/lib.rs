//! Sans-IO Kafka wire codec for sluice: request framing, header parsing, the supported-API
//! table, request body decoding and RecordBatch v2 header validation, and the records
//! inside a batch read and rebuilt in place for the log cleaner ([`records`]). No sockets,
//! no async.
//!
//! Typical request path on a connection:
//!
//! 1. append socket bytes to a `BytesMut` and call [`FrameDecoder::decode`] until it yields
//!    `None`;
//! 2. hand each frame to [`ApiTable::decode_frame`] (or [`decode_request_header`] +
//!    [`ApiTable::decode_request`] for finer control);
//! 3. on error, answer with a v0 ApiVersions response if [`CodecError::api_versions_fallback`]
//!    says so, otherwise close when [`CodecError::closes_connection`];
//! 4. validate produced records with [`validate_batch`], stamp them in place with
//!    [`set_base_offset`] / [`set_partition_leader_epoch`] / [`set_log_append_time`];
//! 5. write the answer with [`encode_response`] / [`frame_response`].
//!
//! `kafka_protocol` is re-exported so the broker uses exactly the version this crate decodes
//! with.

pub use kafka_protocol;

pub mod api;
pub mod batch;
pub mod error;
pub mod frame;
pub mod header;
pub mod partitioner;
pub mod records;
pub mod splice;

pub use api::{
    contained_panics, decode_record_batch_contained, decode_request, panic_is_contained, ApiTable,
    Request, API_KEY_SLOTS,
};
pub use batch::{
    set_base_offset, set_log_append_time, set_partition_leader_epoch, validate_batch, BatchHeader,
    BatchItem, BatchIter, BatchRef, Compression, PartialBatch, TimestampType,
    BATCH_LENGTH_MAX_DEFAULT, RECORD_BATCH_HEADER_LEN,
};
pub use error::CodecError;
pub use frame::{
    check_frame_size, encode_response, frame_response, FrameDecoder, FRAME_SIZE_PREFIX_LEN,
    REQUEST_SIZE_MAX_DEFAULT, RESPONSE_SIZE_MAX,
};
pub use header::{
    decode_request_header, peek_request_prefix, RequestHeaderInfo, RequestPrefix,
    REQUEST_HEADER_FIXED_LEN,
};
pub use splice::{frame_response_spliced, SPLICE_BYTES_MIN};

#[cfg(test)]
mod tests;
