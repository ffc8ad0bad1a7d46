//! A pushed payload: decompressed (Kafka's record codecs, by the request's compression id)
//! under [`DECOMPRESSED_BYTES_MAX`], then decoded as OTLP `MetricsData`. A payload that
//! cannot be read is the push's INVALID_RECORD, as Kafka answers when its receiver cannot
//! read one; one past our bounds (the decompressed size, the message count) is
//! TELEMETRY_TOO_LARGE, which clients retry instead of giving up telemetry.

use std::borrow::Cow;
use std::io::Read;

use prost::Message;

use crate::code::{INVALID_RECORD, TELEMETRY_TOO_LARGE};
use crate::otlp::MetricsData;
use crate::{Refusal, DECOMPRESSED_BYTES_MAX};

/// snappy-java's stream header: a payload that starts with it is xerial-framed blocks (as
/// Java clients write), anything else one raw snappy block (as librdkafka writes).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// zstd's window may be at most 2^23 bytes (the cap, [`DECOMPRESSED_BYTES_MAX`]).
const DECOMPRESSED_WINDOW_LOG_MAX: u32 = 23;

fn invalid(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(INVALID_RECORD, format!("telemetry payload: {why}"))
}

/// A payload past a bound of ours (Kafka has none): TELEMETRY_TOO_LARGE, which clients
/// retry after their interval, rather than INVALID_RECORD, which ends their telemetry.
fn too_large(why: impl std::fmt::Display) -> Refusal {
    Refusal::new(TELEMETRY_TOO_LARGE, format!("telemetry payload: {why}"))
}

/// `data` decompressed with the codec `compression` names (0 none, 1 gzip, 2 snappy,
/// 3 lz4, 4 zstd).
pub fn decompress(compression: i8, data: &[u8]) -> Result<Cow<'_, [u8]>, Refusal> {
    let capped = |r: &mut dyn Read| -> Result<Cow<'_, [u8]>, Refusal> {
        let mut out = Vec::new();
        r.take(DECOMPRESSED_BYTES_MAX as u64 + 1)
            .read_to_end(&mut out)
            .map_err(invalid)?;
        if out.len() > DECOMPRESSED_BYTES_MAX {
            return Err(too_large(format!(
                "decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes"
            )));
        }
        Ok(Cow::Owned(out))
    };
    match compression {
        0 => Ok(Cow::Borrowed(data)),
        1 => capped(&mut flate2::read::GzDecoder::new(data)),
        2 => snappy(data).map(Cow::Owned),
        3 => capped(&mut lz4::Decoder::new(data).map_err(invalid)?),
        4 => {
            let mut d = zstd::stream::read::Decoder::new(data).map_err(invalid)?;
            // A frame may ask for a window up to 128 MiB; no output needs more than the cap.
            d.window_log_max(DECOMPRESSED_WINDOW_LOG_MAX)
                .map_err(invalid)?;
            capped(&mut d)
        }
        other => Err(invalid(format!("unknown compression type {other}"))),
    }
}

fn snappy(data: &[u8]) -> Result<Vec<u8>, Refusal> {
    let mut out = Vec::new();
    let block = |b: &[u8], out: &mut Vec<u8>| -> Result<(), Refusal> {
        let n = snap::raw::decompress_len(b).map_err(invalid)?;
        // The length header is the client's word: checked before anything is allocated.
        if out.len().saturating_add(n) > DECOMPRESSED_BYTES_MAX {
            return Err(too_large(format!(
                "decompresses to more than {DECOMPRESSED_BYTES_MAX} bytes"
            )));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(b, &mut out[start..])
            .map_err(invalid)?;
        Ok(())
    };
    if !data.starts_with(XERIAL_MAGIC) {
        block(data, &mut out)?;
        return Ok(out);
    }
    let mut rest = data
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| invalid("short snappy header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| invalid("short snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let b = tail
            .get(..len)
            .ok_or_else(|| invalid("short snappy block"))?;
        block(b, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

/// The payload decoded. An empty payload is no metrics (librdkafka 2.5–2.10 sends a null
/// one when it has nothing; the wire decoder makes that empty).
pub fn decode(compression: i8, data: &[u8]) -> Result<MetricsData, Refusal> {
    if data.is_empty() {
        return Ok(MetricsData::default());
    }
    let raw = decompress(compression, data)?;
    match crate::otlp::count_messages(&raw, crate::otlp::MESSAGES_MAX) {
        Ok(_) => {}
        Err(crate::otlp::Walk::TooMany) => {
            return Err(too_large(format!(
                "more than {} messages",
                crate::otlp::MESSAGES_MAX
            )))
        }
        Err(crate::otlp::Walk::Malformed(why)) => return Err(invalid(why)),
    }
    MetricsData::decode(raw.as_ref()).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::*;
    use std::io::Write;

    fn sample() -> MetricsData {
        MetricsData {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "org.apache.kafka.producer.record.queue.count".into(),
                        gauge: Some(Gauge {
                            data_points: vec![NumberDataPoint {
                                as_int: Some(3),
                                ..Default::default()
                            }],
                        }),
                        ..Default::default()
                    }],
                }],
            }],
        }
    }

    #[test]
    fn every_codec_kafka_names_decodes() {
        let raw = sample().encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        let gzip = gz.finish().unwrap();
        let raw_snappy = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        xerial.extend_from_slice(&(raw_snappy.len() as u32).to_be_bytes());
        xerial.extend_from_slice(&raw_snappy);
        let mut lz = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        lz.write_all(&raw).unwrap();
        let lz4 = lz.finish().0;
        let zstd = zstd::encode_all(raw.as_slice(), 1).unwrap();
        for (id, bytes) in [
            (0, &raw),
            (1, &gzip),
            (2, &raw_snappy),
            (2, &xerial),
            (3, &lz4),
            (4, &zstd),
        ] {
            assert_eq!(decode(id, bytes).unwrap(), sample(), "codec {id}");
        }
        assert_eq!(decode(4, &[]).unwrap(), MetricsData::default());
    }

    fn varint(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_varint(n as u64, &mut out);
        out
    }

    #[test]
    fn bad_payloads_are_invalid_records_and_bombs_stop_at_the_cap() {
        let bad = |id, b: &[u8]| decode(id, b).unwrap_err().code;
        assert_eq!(bad(0, b"\xff\xff\xff"), INVALID_RECORD);
        assert_eq!(bad(1, b"not gzip"), INVALID_RECORD);
        assert_eq!(bad(2, b"\x05\xff\xff"), INVALID_RECORD);
        assert_eq!(bad(3, b"not lz4"), INVALID_RECORD);
        assert_eq!(bad(4, b"not zstd"), INVALID_RECORD);
        assert_eq!(bad(9, b"x"), INVALID_RECORD);
        let zeros = vec![0u8; DECOMPRESSED_BYTES_MAX + 1];
        let bomb = zstd::encode_all(zeros.as_slice(), 3).unwrap();
        assert!(bomb.len() < 64 * 1024);
        let e = decode(4, &bomb).unwrap_err();
        assert!(
            e.code == TELEMETRY_TOO_LARGE && e.message.contains("more than"),
            "{e:?}"
        );
        // A raw snappy block claiming 4 GiB is refused from its header alone.
        assert!(decode(2, b"\xff\xff\xff\xff\x0f\x00")
            .unwrap_err()
            .message
            .contains("more than"));
        // Well-formed protobuf whose metric name is not UTF-8.
        let name = [0x0a, 0x01, 0xff];
        let scope = [&[0x12, name.len() as u8][..], &name].concat();
        let resource = [&[0x12, scope.len() as u8][..], &scope].concat();
        let data = [&[0x0a, resource.len() as u8][..], &resource].concat();
        assert_eq!(bad(0, &data), INVALID_RECORD);
        // Empty data points are 2 bytes each on the wire and tens of bytes built: a payload
        // of many is refused before it is built.
        let points: Vec<u8> = [0x0a, 0x00].repeat(crate::otlp::MESSAGES_MAX);
        let gauge = [&[0x2a][..], &varint(points.len()), &points].concat();
        let metric = [&[0x12][..], &varint(gauge.len()), &gauge].concat();
        let resource = [&[0x12][..], &varint(metric.len()), &metric].concat();
        let data = [&[0x0a][..], &varint(resource.len()), &resource].concat();
        let e = decode(0, &data).unwrap_err();
        assert!(
            e.code == TELEMETRY_TOO_LARGE && e.message.contains("messages"),
            "{e:?}"
        );
        let fewer = &points[..2 * 1000];
        let gauge = [&[0x2a][..], &varint(fewer.len()), fewer].concat();
        let metric = [&[0x12][..], &varint(gauge.len()), &gauge].concat();
        let resource = [&[0x12][..], &varint(metric.len()), &metric].concat();
        let data = [&[0x0a][..], &varint(resource.len()), &resource].concat();
        let m = &decode(0, &data).unwrap().resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(m[0].gauge.as_ref().unwrap().data_points.len(), 1000);
    }
}
