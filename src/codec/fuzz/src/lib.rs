//! The fuzz harnesses behind the cargo-fuzz targets (`fuzz_targets/`), kept in a library so
//! that the seed generator and the regression tests run exactly what the fuzzer runs.
//!
//! Neither harness catches panics: under libFuzzer a panic aborts and is reported as a crash
//! with the input that caused it. The codec itself contains decoder panics (it turns them
//! into decode errors); the request harness checks `contained_panics` so such a panic is a
//! crash here too.

use bytes::{Bytes, BytesMut};
use sluice_broker::handlers::alter_configs::check_broker_config;
use sluice_broker::handlers::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
use sluice_broker::topic_config::validate_topic_configs;
use sluice_broker::topics::validate_topic_name;
use sluice_codec::kafka_protocol::messages::RequestKind;
use sluice_codec::kafka_protocol::records::RecordBatchDecoder;
use sluice_codec::{
    contained_panics, validate_batch, ApiTable, BatchHeader, BatchItem, BatchIter, CodecError,
    FrameDecoder, Request, RECORD_BATCH_HEADER_LEN, REQUEST_SIZE_MAX_DEFAULT,
};

pub mod seeds;

/// The broker's own table (`sluice_broker::handlers::SUPPORTED`), built once: the fuzzer
/// should spend its time where the broker does, on the APIs and versions it serves.
pub fn broker_table() -> &'static ApiTable {
    static TABLE: std::sync::OnceLock<ApiTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(sluice_broker::handlers::api_table)
}

/// Request path: `data[0]` is the size of each simulated socket read (0: everything in one
/// read), the rest is the byte stream a client sends. Each frame the framer cuts goes
/// through header parsing, the version check and body decoding against the broker's table,
/// then through the checks the broker's handlers make on a decoded request.
pub fn request(data: &[u8]) {
    let Some((&read_size, stream)) = data.split_first() else {
        return;
    };
    let read_size = match read_size {
        0 => stream.len().max(1),
        n => usize::from(n),
    };
    let panics_before = contained_panics();
    let table = broker_table();
    let mut framer = FrameDecoder::new(REQUEST_SIZE_MAX_DEFAULT);
    let mut buf = BytesMut::new();
    'reads: for read in stream.chunks(read_size) {
        buf.extend_from_slice(read);
        loop {
            match framer.decode(&mut buf) {
                Ok(Some(frame)) => match table.decode_frame(frame) {
                    Ok(request) => handler_checks(&request),
                    Err(e) => error_answer(&e),
                },
                Ok(None) => break,
                // The broker closes the connection: nothing after this is read.
                Err(e) => {
                    error_answer(&e);
                    break 'reads;
                }
            }
        }
    }
    // The codec contains decoder panics; for the fuzzer each one is a crash.
    assert_eq!(
        contained_panics(),
        panics_before,
        "the request decoder panicked (contained by the codec)"
    );
}

/// What the connection does with a codec error: pick the answer (or close).
fn error_answer(e: &CodecError) {
    let _ = (
        e.api_versions_fallback(),
        e.closes_connection(),
        e.correlation_id(),
        e.kafka_error_code(),
    );
    let _ = e.to_string();
}

/// The input checks the broker's handlers make before touching any state, run with the
/// same functions: topic names, topic and broker config values, produced record batches.
fn handler_checks(request: &Request) {
    let _ = request.header.response_header_version();
    let names = |names: &mut dyn Iterator<Item = &str>| {
        for name in names {
            let _ = validate_topic_name(name);
        }
    };
    match &request.body {
        RequestKind::Produce(r) => {
            for partition in r.topic_data.iter().flat_map(|t| &t.partition_data) {
                if let Some(records) = &partition.records {
                    produced_records(records);
                }
            }
        }
        RequestKind::Metadata(r) => names(
            &mut r
                .topics
                .iter()
                .flatten()
                .filter_map(|t| t.name.as_ref().map(|n| &*n.0)),
        ),
        RequestKind::CreateTopics(r) => {
            names(&mut r.topics.iter().map(|t| &*t.name.0));
            for t in &r.topics {
                let _ = validate_topic_configs(
                    t.configs
                        .iter()
                        .filter_map(|c| Some((&*c.name, c.value.as_deref()?))),
                );
            }
        }
        RequestKind::DeleteTopics(r) => {
            names(&mut r.topic_names.iter().map(|n| &*n.0));
            names(
                &mut r
                    .topics
                    .iter()
                    .filter_map(|t| t.name.as_ref().map(|n| &*n.0)),
            );
        }
        RequestKind::CreatePartitions(r) => names(&mut r.topics.iter().map(|t| &*t.name.0)),
        RequestKind::AlterConfigs(r) => {
            for res in &r.resources {
                let configs = res
                    .configs
                    .iter()
                    .filter_map(|c| Some((&*c.name, c.value.as_deref()?)));
                config_checks(res.resource_type, configs);
            }
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            for res in &r.resources {
                let configs = res
                    .configs
                    .iter()
                    .filter_map(|c| Some((&*c.name, c.value.as_deref()?)));
                config_checks(res.resource_type, configs);
            }
        }
        _ => {}
    }
}

fn config_checks<'a>(resource_type: i8, configs: impl Iterator<Item = (&'a str, &'a str)> + Clone) {
    match resource_type {
        RESOURCE_TOPIC => {
            let _ = validate_topic_configs(configs);
        }
        RESOURCE_BROKER => {
            for (name, value) in configs {
                let _ = check_broker_config(name, value);
            }
        }
        _ => {}
    }
}

/// A partition's records in a Produce request: what the broker checks before appending.
fn produced_records(records: &Bytes) {
    if let Ok(header) = validate_batch(records) {
        // validate_batch accepted it, so the header fields must describe these bytes.
        assert_eq!(header.total_len(), records.len());
        assert_eq!(BatchHeader::parse(records), Ok(header));
    }
}

/// Record-batch path: `data[0]` selects options (bit 0: fix every batch's CRC first, so the
/// fuzzer gets past the checksum to the fields behind it), the rest is a records blob as it
/// arrives in a Produce request or sits in a log segment.
pub fn record_batch(data: &[u8]) {
    let Some((&mode, blob)) = data.split_first() else {
        return;
    };
    let mut blob = blob.to_vec();
    if mode & 1 != 0 {
        fix_crcs(&mut blob);
    }

    // One batch, as Produce carries it.
    let single = validate_batch(&blob);
    if let Ok(header) = &single {
        assert_eq!(header.total_len(), blob.len());
        // The broker stamps accepted batches in place; they must stay valid.
        let mut stamped = blob.clone();
        sluice_codec::set_base_offset(&mut stamped, 1_000).expect("validated batch");
        sluice_codec::set_partition_leader_epoch(&mut stamped, 3).expect("validated batch");
        sluice_codec::set_log_append_time(&mut stamped, 1_700_000_000_000)
            .expect("validated batch");
        let restamped = validate_batch(&stamped).expect("stamping keeps a batch valid");
        assert_eq!(restamped.base_offset, 1_000);
        assert_eq!(restamped.records_count, header.records_count);
    }

    // Concatenated batches, as in a fetch or a segment.
    let mut whole_batches = 0;
    let mut iter = BatchIter::new(&blob);
    for item in iter.by_ref() {
        match item {
            Ok(BatchItem::Batch(b)) => {
                assert_eq!(b.bytes, &blob[b.range.clone()]);
                assert_eq!(validate_batch(b.bytes), Ok(b.header));
                whole_batches += 1;
            }
            Ok(BatchItem::Partial(p)) => assert!(p.position + p.available == blob.len()),
            Err(_) => break,
        }
    }
    assert!(iter.position() <= blob.len());
    if single.is_ok() {
        assert_eq!(whole_batches, 1);
    }

    // The vendored decoder, as the broker uses it on stored (validated) batches; fed
    // everything here, since it must reject bad input by itself too. Decompression is capped
    // at DECOMPRESSED_BYTES_MAX by the vendored patch.
    if blob.len() >= RECORD_BATCH_HEADER_LEN {
        let mut bytes = Bytes::from(blob);
        let _ = RecordBatchDecoder::decode_all(&mut bytes);
    }
}

/// Rewrite the CRC32C of every batch whose length field fits in `blob` (walking by the
/// length fields), so the checksum does not hide the rest of the batch from the fuzzer.
pub fn fix_crcs(blob: &mut [u8]) {
    const BATCH_LENGTH_AT: usize = 8;
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    let mut pos = 0usize;
    while let Some(len) = blob.get(pos + BATCH_LENGTH_AT..pos + BATCH_LENGTH_AT + 4) {
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + 12).checked_add(l))
            .filter(|&end| end <= blob.len() && end >= pos + ATTRIBUTES_AT)
        else {
            return;
        };
        let crc = crc32c::crc32c(&blob[pos + ATTRIBUTES_AT..end]);
        blob[pos + CRC_AT..pos + CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}
