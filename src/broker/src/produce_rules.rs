//! Kafka's rules for what a client may write, checked on a produce before anything is appended.
//!
//! Sans-IO: one partition's records blob and the topic's settings in, the Kafka error code
//! Kafka would answer with (and its message) out. The checks follow Kafka's produce path:
//! `ProduceRequest.validateRecords` (v3+: exactly one magic-v2 batch per partition, zstd only
//! from v7), `ReplicaManager` (no writes to internal topics from clients) and `LogValidator`
//! (no control batches from clients, record count consistent with the offset range,
//! producer ids with valid sequences, transactional batches with a producer id, timestamps
//! within `message.timestamp.before.max.ms` / `after.max.ms` of the broker's clock, KIP-937;
//! on a compacted topic a key on every record, [`check_keys`], KIP-467 record errors).
//!
//! The topic settings the rules need ([`TopicRules`]) come from [`topic_config::effective`],
//! the one source of Kafka's defaults, and are derived once per topic whenever the topic
//! table changes (kept beside each topic in [`crate::topics::TopicTable`]): checking a
//! produce parses no config, and allocates nothing unless it refuses a batch or decodes a
//! compacted topic's records.
//!
//! Invariant: a produce that fails any rule appends nothing, on any partition batch of it; a
//! produce that passes is one batch whose framing is sound, so the storage append sees
//! exactly one batch (the storage still checks the CRC, once, where the bytes are stored).
//!
//! Timestamps are checked on the batch header: the first record's timestamp (baseTimestamp)
//! and the largest (maxTimestamp). A record older than the first one is not seen; that can
//! only matter for `message.timestamp.before.max.ms`, whose default is unbounded. What the
//! check exists for, a far-future timestamp that would pin time retention, is caught.

use std::collections::BTreeMap;

use sluice_codec::batch::{
    BatchHeader, Compression, RECORD_BATCH_HEADER_LEN, RECORD_ENCODED_LEN_MIN,
};

use crate::kerr;
use crate::topic_config;

/// The client id of Kafka's own admin tooling, which may write internal topics.
pub const ADMIN_CLIENT_ID: &str = "__admin_client";

/// The settings of one topic that the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRules {
    pub internal: bool,
    /// `message.timestamp.type` = LogAppendTime: client timestamps are replaced, not checked.
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// `cleanup.policy` includes `compact`: every record needs a key ([`check_keys`]).
    pub compacted: bool,
}

impl TopicRules {
    /// From a topic's overrides, then the broker's `log.`-prefixed settings, then Kafka's
    /// defaults, all as [`topic_config::effective`] reads them (the one source of the
    /// defaults). Built once per topic when the topic table changes
    /// ([`crate::topics::TopicTable`]), never per request. A value that does not parse falls
    /// back to the default (config validation keeps such values out in the first place).
    pub fn from_configs(
        internal: bool,
        overrides: &BTreeMap<String, String>,
        broker: &BTreeMap<String, String>,
    ) -> TopicRules {
        // Values are read trimmed, as Kafka's config parser (and `topic_config`) reads them.
        let get = |name: &str| {
            let key = topic_config::topic_config_key(name).expect("a known topic config");
            (
                topic_config::effective(overrides, broker, key).0.trim(),
                key.default,
            )
        };
        let millis = |name: &str| {
            let (value, default) = get(name);
            let parse = |v: &str| v.parse::<i64>().ok().filter(|v| *v >= 0);
            parse(value)
                .or_else(|| parse(default))
                .expect("the default of a millisecond config parses")
        };
        TopicRules {
            internal,
            log_append_time: get("message.timestamp.type").0 == "LogAppendTime",
            timestamp_before_max_ms: millis("message.timestamp.before.max.ms"),
            timestamp_after_max_ms: millis("message.timestamp.after.max.ms"),
            compacted: topic_config::cleanup_compacts(overrides, broker),
        }
    }
}

/// Why a partition's records were refused: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: i16,
    pub message: String,
    /// KIP-467: the refused records' indexes in the batch, each with why (Produce v8+
    /// `record_errors`); empty when the whole batch is at fault.
    pub record_errors: Vec<(i32, String)>,
}

fn refuse(code: i16, message: impl Into<String>) -> Result<(), Refusal> {
    Err(Refusal {
        code,
        message: message.into(),
        record_errors: Vec::new(),
    })
}

/// Kafka's `LogValidator` shows at most this many record errors in the error message (all
/// of them go in `record_errors`).
const RECORD_ERRORS_IN_MESSAGE_MAX: usize = 3;

/// A compacted topic's rule (Kafka's `LogValidator.validateKey`): every record of the batch
/// has a key, or the whole batch is refused with INVALID_RECORD and a record error per
/// keyless record. Runs after [`check`] passed, only for compacted topics: it decodes the
/// records (decompressing under the codec's cap), which a plain topic never pays for. A batch
/// that does not decode is CORRUPT_MESSAGE, as Kafka answers a batch it cannot read.
pub fn check_keys(topic: &str, partition: i32, records: &bytes::Bytes) -> Result<(), Refusal> {
    let Some(keyed) = sluice_codec::api::record_keys_contained(records) else {
        return refuse(kerr::CORRUPT_MESSAGE, "record batch does not decode");
    };
    let why = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}."
    );
    let record_errors: Vec<(i32, String)> = keyed
        .iter()
        .enumerate()
        .filter(|(_, &has_key)| !has_key)
        .map(|(i, _)| (i32::try_from(i).unwrap_or(i32::MAX), why.clone()))
        .collect();
    if record_errors.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = record_errors
        .iter()
        .take(RECORD_ERRORS_IN_MESSAGE_MAX)
        .map(|(i, m)| format!("RecordError(batchIndex={i}, message={m})"))
        .collect();
    Err(Refusal {
        code: kerr::INVALID_RECORD,
        message: format!(
            "One or more records have been rejected due to {} record errors in total, and only showing the first three errors at most: [{}]",
            record_errors.len(),
            shown.join(", ")
        ),
        record_errors,
    })
}

/// Checks one partition's records of a Produce request of `version` from `client_id`.
pub fn check(
    version: i16,
    client_id: Option<&str>,
    topic: &str,
    rules: &TopicRules,
    records: Option<&[u8]>,
    now_ms: i64,
) -> Result<(), Refusal> {
    if rules.internal && client_id != Some(ADMIN_CLIENT_ID) {
        return refuse(
            kerr::INVALID_TOPIC_EXCEPTION,
            format!("Cannot append to internal topic {topic}"),
        );
    }
    let records = records.unwrap_or_default();
    if records.is_empty() {
        return refuse(
            kerr::INVALID_RECORD,
            format!("Produce requests with version {version} must have at least one record batch per partition"),
        );
    }
    if records.len() < RECORD_BATCH_HEADER_LEN {
        return refuse(
            kerr::CORRUPT_MESSAGE,
            "record batch shorter than its header",
        );
    }
    let h = BatchHeader::parse(records).map_err(|e| Refusal {
        code: kerr::CORRUPT_MESSAGE,
        message: e.to_string(),
        record_errors: Vec::new(),
    })?;
    if h.magic != sluice_codec::batch::MAGIC_V2 {
        return refuse(
            kerr::INVALID_RECORD,
            format!("Produce requests with version {version} are only allowed to contain record batches with magic version 2"),
        );
    }
    let total = h.total_len();
    if total < RECORD_BATCH_HEADER_LEN || total > records.len() {
        return refuse(
            kerr::CORRUPT_MESSAGE,
            format!(
                "record batch length {} does not fit the {} bytes sent",
                h.batch_length,
                records.len()
            ),
        );
    }
    if total < records.len() {
        return refuse(
            kerr::INVALID_RECORD,
            format!("Produce requests with version {version} are only allowed to contain exactly one record batch per partition"),
        );
    }
    let Some(compression) = h.compression() else {
        return refuse(
            kerr::CORRUPT_MESSAGE,
            format!("unknown compression type id {}", h.compression_codec()),
        );
    };
    if compression == Compression::Zstd && version < 7 {
        return refuse(
            kerr::UNSUPPORTED_COMPRESSION_TYPE,
            format!("Produce requests with version {version} are not allowed to use ZStandard compression"),
        );
    }
    if h.is_control() {
        return refuse(
            kerr::INVALID_RECORD,
            "Clients are not allowed to write control records",
        );
    }
    if h.records_count <= 0 {
        return refuse(
            kerr::INVALID_RECORD,
            format!(
                "Invalid reported count for record batch: {}",
                h.records_count
            ),
        );
    }
    if i64::from(h.last_offset_delta) + 1 != i64::from(h.records_count) {
        return refuse(
            kerr::INVALID_RECORD,
            format!(
                "Inconsistent batch offset range ({} records by lastOffsetDelta) and record count ({})",
                i64::from(h.last_offset_delta) + 1,
                h.records_count
            ),
        );
    }
    let records_bytes = total - RECORD_BATCH_HEADER_LEN;
    if compression == Compression::None
        && (h.records_count as usize).saturating_mul(RECORD_ENCODED_LEN_MIN) > records_bytes
    {
        return refuse(
            kerr::CORRUPT_MESSAGE,
            format!(
                "{} records cannot fit in {records_bytes} bytes",
                h.records_count
            ),
        );
    }
    if h.producer_id >= 0 && h.base_sequence < 0 {
        return refuse(
            kerr::INVALID_RECORD,
            format!(
                "Invalid sequence number {} in record batch with producerId {}",
                h.base_sequence, h.producer_id
            ),
        );
    }
    if h.is_transactional() && h.producer_id < 0 {
        return refuse(
            kerr::INVALID_RECORD,
            "Transactional records must carry a producer id",
        );
    }
    if !rules.log_append_time {
        let (first, max) = (h.base_timestamp, h.max_timestamp);
        let too_new = max.saturating_sub(now_ms) > rules.timestamp_after_max_ms;
        let too_old = now_ms.saturating_sub(first) > rules.timestamp_before_max_ms;
        if too_new || too_old {
            let ts = if too_new { max } else { first };
            return refuse(
                kerr::INVALID_TIMESTAMP,
                format!(
                    "Timestamp {ts} of a record is out of range. The timestamp should be within [{}, {}]",
                    now_ms.saturating_sub(rules.timestamp_before_max_ms),
                    now_ms.saturating_add(rules.timestamp_after_max_ms)
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn rules() -> TopicRules {
        TopicRules::from_configs(false, &BTreeMap::new(), &BTreeMap::new())
    }

    /// A valid uncompressed batch of `n` one-byte-value records (CRC not filled: the rules
    /// leave the CRC to storage).
    fn batch(n: i32) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..n {
            // length, attributes, ts delta, offset delta, key -1, value len 1, value, headers 0
            let body = [0u8, 0, (i as u8) << 1, 1, 2, b'x', 0];
            records.push((body.len() as u8) << 1);
            records.extend_from_slice(&body);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2); // magic
        b.extend_from_slice(&0u32.to_be_bytes()); // crc
        b.extend_from_slice(&0i16.to_be_bytes()); // attributes
        b.extend_from_slice(&(n - 1).to_be_bytes()); // last offset delta
        b.extend_from_slice(&NOW.to_be_bytes());
        b.extend_from_slice(&NOW.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&n.to_be_bytes());
        b.extend_from_slice(&records);
        b
    }

    fn code(version: i16, client: Option<&str>, r: &TopicRules, b: &[u8]) -> i16 {
        match check(version, client, "t", r, Some(b), NOW) {
            Ok(()) => 0,
            Err(e) => e.code,
        }
    }

    fn set_i16(b: &mut [u8], at: usize, v: i16) {
        b[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    fn set_i32(b: &mut [u8], at: usize, v: i32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    fn set_i64(b: &mut [u8], at: usize, v: i64) {
        b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn a_plain_batch_passes() {
        assert_eq!(code(9, Some("c"), &rules(), &batch(3)), 0);
    }

    #[test]
    fn each_rule_answers_kafkas_code() {
        let r = rules();
        let internal = TopicRules {
            internal: true,
            ..r
        };
        assert_eq!(
            code(9, Some("c"), &internal, &batch(1)),
            kerr::INVALID_TOPIC_EXCEPTION
        );
        assert_eq!(code(9, Some(ADMIN_CLIENT_ID), &internal, &batch(1)), 0);
        assert_eq!(code(9, None, &r, &[]), kerr::INVALID_RECORD);
        assert_eq!(code(9, None, &r, &batch(1)[..40]), kerr::CORRUPT_MESSAGE);

        let mut two = batch(1);
        two.extend_from_slice(&batch(1));
        assert_eq!(code(9, None, &r, &two), kerr::INVALID_RECORD, "two batches");
        assert_eq!(
            code(9, None, &r, &batch(2)[..70]),
            kerr::CORRUPT_MESSAGE,
            "truncated"
        );

        let mut magic = batch(1);
        magic[16] = 1;
        assert_eq!(code(9, None, &r, &magic), kerr::INVALID_RECORD);

        let mut control = batch(1);
        set_i16(&mut control, 21, 1 << 5);
        assert_eq!(code(9, None, &r, &control), kerr::INVALID_RECORD);

        let mut codec = batch(1);
        set_i16(&mut codec, 21, 6);
        assert_eq!(code(9, None, &r, &codec), kerr::CORRUPT_MESSAGE);
        let mut zstd = batch(1);
        set_i16(&mut zstd, 21, 4);
        assert_eq!(code(6, None, &r, &zstd), kerr::UNSUPPORTED_COMPRESSION_TYPE);
        assert_eq!(code(7, None, &r, &zstd), 0);

        let mut counts = batch(3);
        set_i32(&mut counts, 57, 2);
        assert_eq!(code(9, None, &r, &counts), kerr::INVALID_RECORD, "count");
        let mut counts = batch(3);
        set_i32(&mut counts, 23, 5);
        assert_eq!(code(9, None, &r, &counts), kerr::INVALID_RECORD, "delta");
        let mut empty = batch(1);
        set_i32(&mut empty, 57, 0);
        set_i32(&mut empty, 23, -1);
        assert_eq!(
            code(9, None, &r, &empty),
            kerr::INVALID_RECORD,
            "no records"
        );
        let mut overflow = batch(2);
        set_i32(&mut overflow, 57, 1000);
        set_i32(&mut overflow, 23, 999);
        assert_eq!(code(9, None, &r, &overflow), kerr::CORRUPT_MESSAGE);

        let mut seq = batch(1);
        set_i64(&mut seq, 43, 7);
        assert_eq!(code(9, None, &r, &seq), kerr::INVALID_RECORD, "pid, seq -1");
        set_i32(&mut seq, 53, 0);
        assert_eq!(code(9, None, &r, &seq), 0, "pid, seq 0");

        let mut txn = batch(1);
        set_i16(&mut txn, 21, 1 << 4);
        assert_eq!(code(9, None, &r, &txn), kerr::INVALID_RECORD, "txn, no pid");
    }

    /// Kafka's defaults, read from `topic_config`: no limit on old timestamps, Kafka 4's
    /// one hour into the future, CreateTime.
    #[test]
    fn defaults_come_from_topic_config() {
        let r = rules();
        assert_eq!(r.timestamp_before_max_ms, i64::MAX);
        assert_eq!(r.timestamp_after_max_ms, 3_600_000);
        assert!(!r.log_append_time && !r.internal);
        let broker = [(
            "log.message.timestamp.after.max.ms".to_string(),
            " 5000 ".to_string(),
        )]
        .into();
        let r = TopicRules::from_configs(false, &BTreeMap::new(), &broker);
        assert_eq!(r.timestamp_after_max_ms, 5000, "broker value, trimmed");
        let topic = [(
            "message.timestamp.after.max.ms".to_string(),
            "7000".to_string(),
        )]
        .into();
        let r = TopicRules::from_configs(false, &topic, &broker);
        assert_eq!(
            r.timestamp_after_max_ms, 7000,
            "the topic overrides the broker"
        );
    }

    #[test]
    fn timestamps_follow_kip_937() {
        let r = rules();
        let after_max = r.timestamp_after_max_ms;
        let mut future = batch(1);
        set_i64(&mut future, 35, NOW + after_max + 1);
        assert_eq!(code(9, None, &r, &future), kerr::INVALID_TIMESTAMP);
        set_i64(&mut future, 35, NOW + after_max);
        assert_eq!(code(9, None, &r, &future), 0);

        let mut old = batch(1);
        set_i64(&mut old, 27, 0);
        assert_eq!(code(9, None, &r, &old), 0, "old is fine by default");
        let strict = TopicRules::from_configs(
            false,
            &[(
                "message.timestamp.before.max.ms".to_string(),
                "1000".to_string(),
            )]
            .into(),
            &BTreeMap::new(),
        );
        assert_eq!(code(9, None, &strict, &old), kerr::INVALID_TIMESTAMP);

        let append_time = TopicRules::from_configs(
            false,
            &BTreeMap::new(),
            &[(
                "log.message.timestamp.type".to_string(),
                "LogAppendTime".to_string(),
            )]
            .into(),
        );
        set_i64(&mut future, 35, i64::MAX);
        assert_eq!(code(9, None, &append_time, &future), 0);
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use sluice_codec::kafka_protocol::records::{
        Compression as KpCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    /// A batch whose record `i` has a key unless `keyless` names it.
    fn batch(n: i64, keyless: &[i64], compression: KpCompression) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // The encoder starts a new batch where offset - sequence changes.
                sequence: i as i32,
                timestamp: 1_700_000_000_000,
                key: (!keyless.contains(&i)).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn a_compacted_topic_refuses_keyless_records_naming_each() {
        for c in [KpCompression::None, KpCompression::Lz4, KpCompression::Zstd] {
            assert_eq!(check_keys("t", 0, &batch(4, &[], c)), Ok(()), "{c:?}");
            let r = check_keys("t", 3, &batch(6, &[1, 2, 3, 5], c)).unwrap_err();
            assert_eq!(r.code, kerr::INVALID_RECORD, "{c:?}");
            let why = "Compacted topic cannot accept message without key in topic partition t-3.";
            let idx: Vec<i32> = r.record_errors.iter().map(|(i, _)| *i).collect();
            assert_eq!(idx, vec![1, 2, 3, 5]);
            assert!(r.record_errors.iter().all(|(_, m)| m == why));
            // Kafka's message: the count, then at most three of them.
            assert!(
                r.message.contains("due to 4 record errors"),
                "{}",
                r.message
            );
            assert!(r.message.contains("batchIndex=3") && !r.message.contains("batchIndex=5"));
        }
    }

    #[test]
    fn a_batch_that_does_not_decode_is_corrupt() {
        let mut b = batch(2, &[], KpCompression::None).to_vec();
        let n = b.len();
        b[n - 3] ^= 0xff;
        let r = check_keys("t", 0, &Bytes::from(b)).unwrap_err();
        assert_eq!(r.code, kerr::CORRUPT_MESSAGE);
    }

    #[test]
    fn compaction_is_read_from_the_cleanup_policy() {
        let mut o = BTreeMap::new();
        assert!(!TopicRules::from_configs(false, &o, &BTreeMap::new()).compacted);
        o.insert("cleanup.policy".to_string(), "delete, compact".to_string());
        assert!(TopicRules::from_configs(false, &o, &BTreeMap::new()).compacted);
        let broker = BTreeMap::from([("log.cleanup.policy".to_string(), "compact".to_string())]);
        assert!(TopicRules::from_configs(false, &BTreeMap::new(), &broker).compacted);
    }
}
