//! `sluice topic consume`: fetches from each partition's leader and prints every record
//! through a kcat-style format (`%k\t%v\n`), or as one JSON object per line.
//!
//! With `-g GROUP` the consumer starts from the group's committed offsets and commits what it
//! printed, as a consumer with assigned partitions (Kafka's `assign()` + `commitSync`) does:
//! it does not join the group's membership, so it does not take partitions from members.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use serde_json::json;
use sluice_codec::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_codec::kafka_protocol::messages::{BrokerId, FetchRequest};
use sluice_codec::kafka_protocol::records::{Record, RecordBatchDecoder};

use crate::client::Client;
use crate::offsets::{
    commit_with_ids, committed, coordinator, leaders, list_offsets, topic_ids, Tp,
};
use crate::topic::{name, topic_metadata};
use crate::{error_name, CliError};

/// Bytes a fetch may return per partition and in all (the Java consumer's
/// `max.partition.fetch.bytes` and `fetch.max.bytes` defaults).
const PARTITION_FETCH_BYTES: i32 = 1 << 20;
const FETCH_BYTES: i32 = 50 << 20;
/// How long the leader may hold a fetch that found nothing new.
const FETCH_WAIT_MS: i32 = 500;
const RETRY_BACKOFF: Duration = Duration::from_millis(300);
/// How long a consume waits for its partitions to have leaders before it starts (Kafka's
/// `default.api.timeout.ms`).
const LEADER_WAIT_MAX: Duration = Duration::from_secs(60);

/// Where to start reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    Beginning,
    End,
    /// An absolute offset.
    At(i64),
    /// This many records before the end.
    FromEnd(i64),
    /// The first record at or after this timestamp (ms).
    Time(i64),
}

/// `-o`'s value: `beginning`, `end`, an offset, `-N` (N before the end), `@TIMESTAMP`.
pub fn parse_start(s: &str) -> Result<Start, String> {
    let bad = || format!("{s}: expected beginning, end, an offset, -N or @TIMESTAMP");
    match s {
        "beginning" | "start" | "oldest" => Ok(Start::Beginning),
        "end" | "newest" => Ok(Start::End),
        _ => {
            if let Some(ts) = s.strip_prefix('@') {
                ts.parse().map(Start::Time).map_err(|_| bad())
            } else if let Some(n) = s.strip_prefix('-') {
                n.parse().map(Start::FromEnd).map_err(|_| bad())
            } else {
                s.parse().map(Start::At).map_err(|_| bad())
            }
        }
    }
}

/// How each record is printed.
pub enum Output {
    /// kcat's format verbs, escapes already interpreted.
    Pattern(Vec<Piece>),
    /// One JSON object per record and line.
    JsonLines,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Text(Vec<u8>),
    Key,
    Value,
    Partition,
    Offset,
    Topic,
    Timestamp,
    Headers,
    KeyLength,
    ValueLength,
}

/// kcat's `-f` format: `%k` key, `%v` value, `%p` partition, `%o` offset, `%t` topic, `%T`
/// timestamp, `%h` headers (`k=v,…`), `%K`/`%S` key/value length, `%%`; and the escapes
/// `\n` `\t` `\r` `\\`. Anything else is printed as written.
pub fn parse_pattern(format: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars().peekable();
    let push = |pieces: &mut Vec<Piece>, text: &mut Vec<u8>, p: Piece| {
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(text)));
        }
        pieces.push(p);
    };
    while let Some(c) = chars.next() {
        match (c, chars.peek().copied()) {
            ('%', Some(v)) => {
                let piece = match v {
                    'k' => Some(Piece::Key),
                    'v' => Some(Piece::Value),
                    'p' => Some(Piece::Partition),
                    'o' => Some(Piece::Offset),
                    't' => Some(Piece::Topic),
                    'T' => Some(Piece::Timestamp),
                    'h' => Some(Piece::Headers),
                    'K' => Some(Piece::KeyLength),
                    'S' => Some(Piece::ValueLength),
                    '%' => {
                        text.push(b'%');
                        None
                    }
                    _ => {
                        text.push(b'%');
                        text.extend(v.to_string().as_bytes());
                        None
                    }
                };
                chars.next();
                if let Some(p) = piece {
                    push(&mut pieces, &mut text, p);
                }
            }
            ('\\', Some(e)) => {
                let byte = match e {
                    'n' => Some(b'\n'),
                    't' => Some(b'\t'),
                    'r' => Some(b'\r'),
                    '\\' => Some(b'\\'),
                    _ => None,
                };
                match byte {
                    Some(b) => {
                        text.push(b);
                        chars.next();
                    }
                    None => text.push(b'\\'),
                }
            }
            _ => {
                let mut buf = [0u8; 4];
                text.extend(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

pub struct ConsumeOptions {
    pub start: Option<Start>,
    pub count: Option<u64>,
    pub group: Option<String>,
    pub partition: Option<i32>,
    pub exit_at_end: bool,
    pub output: Output,
}

/// One record as printed.
struct Shown<'a> {
    topic: &'a str,
    partition: i32,
    record: &'a Record,
}

fn render(out: &mut Vec<u8>, output: &Output, r: &Shown) {
    let bytes = |b: &Option<Bytes>| b.as_ref().map_or(&[][..], |b| &b[..]).to_vec();
    match output {
        Output::JsonLines => {
            let text =
                |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            let headers: serde_json::Map<String, serde_json::Value> = r
                .record
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(text(v))))
                .collect();
            let line = json!({
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.record.offset,
                "timestamp": r.record.timestamp,
                "key": text(&r.record.key),
                "value": text(&r.record.value),
                "headers": headers,
            });
            out.extend(line.to_string().as_bytes());
            out.push(b'\n');
        }
        Output::Pattern(pieces) => {
            for p in pieces {
                match p {
                    Piece::Text(t) => out.extend(t),
                    Piece::Key => out.extend(bytes(&r.record.key)),
                    Piece::Value => out.extend(bytes(&r.record.value)),
                    Piece::Partition => out.extend(r.partition.to_string().as_bytes()),
                    Piece::Offset => out.extend(r.record.offset.to_string().as_bytes()),
                    Piece::Topic => out.extend(r.topic.as_bytes()),
                    Piece::Timestamp => out.extend(r.record.timestamp.to_string().as_bytes()),
                    Piece::KeyLength => out.extend(
                        r.record
                            .key
                            .as_ref()
                            .map_or(-1, |k| k.len() as i64)
                            .to_string()
                            .as_bytes(),
                    ),
                    Piece::ValueLength => out.extend(
                        r.record
                            .value
                            .as_ref()
                            .map_or(-1, |v| v.len() as i64)
                            .to_string()
                            .as_bytes(),
                    ),
                    Piece::Headers => {
                        for (i, (k, v)) in r.record.headers.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            out.extend(k.as_bytes());
                            out.push(b'=');
                            out.extend(bytes(v));
                        }
                    }
                }
            }
        }
    }
}

/// Positions of one topic's partitions, keyed as the offsets module keys them.
fn tps(topic: &str, position: &BTreeMap<i32, i64>) -> BTreeMap<Tp, i64> {
    position
        .iter()
        .map(|(&p, &o)| ((topic.to_string(), p), o))
        .collect()
}

/// The complete batches of a fetch's record bytes (a fetch may end in part of one), each
/// with the offset after it (from its header: a compacted batch's last record may be gone).
pub(crate) fn batches(mut records: Bytes) -> Vec<(Bytes, i64)> {
    let mut out = Vec::new();
    while records.len() >= 12 {
        let base = i64::from_be_bytes(records[0..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(records[8..12].try_into().expect("4 bytes"));
        let total = 12 + len.max(0) as usize;
        if len < 49 || records.len() < total {
            break;
        }
        let last_delta = i32::from_be_bytes(records[23..27].try_into().expect("4 bytes"));
        out.push((records.slice(..total), base + last_delta as i64 + 1));
        records.advance(total);
    }
    out
}

pub fn run(
    client: &mut Client,
    topic: &str,
    opts: &ConsumeOptions,
    stdout: &mut dyn Write,
) -> Result<(), CliError> {
    let mut meta = topic_metadata(client, topic)?;
    let all: Vec<i32> = match opts.partition {
        Some(p) if meta.partitions.iter().any(|m| m.partition_index == p) => vec![p],
        Some(p) => return Err(CliError(format!("topic {topic} has no partition {p}"))),
        None => {
            let mut all: Vec<i32> = meta.partitions.iter().map(|p| p.partition_index).collect();
            all.sort();
            all
        }
    };
    // Starting positions come from the partitions' leaders: wait for an election under way,
    // as Kafka's consumers do (bounded by their default.api.timeout.ms).
    let deadline = Instant::now() + LEADER_WAIT_MAX;
    loop {
        let (_, leaderless) = leaders(&meta, &all);
        let Some(&p) = leaderless.first() else {
            break;
        };
        if Instant::now() >= deadline {
            return Err(CliError(format!(
                "partition {p} has no leader (waited {} s)",
                LEADER_WAIT_MAX.as_secs()
            )));
        }
        std::thread::sleep(RETRY_BACKOFF);
        meta = topic_metadata(client, topic)?;
    }
    let group = match &opts.group {
        Some(g) => Some((g.clone(), coordinator(client, g)?)),
        None => None,
    };
    // The topic's id for the commits (OffsetCommit v10 names topics by id), looked up once.
    let ids = match &group {
        Some(_) => topic_ids(client, Some(&[topic.to_string()]))?,
        None => Default::default(),
    };
    // Starting positions: the group's commits first, then -o (default: the beginning).
    let mut position: BTreeMap<i32, i64> = BTreeMap::new();
    if let Some((g, coord)) = &group {
        for ((_, p), o) in committed(client, *coord, g, Some(&[&meta]))? {
            position.insert(p, o);
        }
    }
    let rest: Vec<i32> = all
        .iter()
        .copied()
        .filter(|p| !position.contains_key(p))
        .collect();
    if !rest.is_empty() {
        let start = opts.start.clone().unwrap_or(Start::Beginning);
        let found = match start {
            Start::Beginning => list_offsets(client, topic, &meta, &rest, -2)?,
            Start::End => list_offsets(client, topic, &meta, &rest, -1)?,
            Start::At(o) => rest.iter().map(|&p| (p, o)).collect(),
            Start::FromEnd(n) => {
                let begin = list_offsets(client, topic, &meta, &rest, -2)?;
                list_offsets(client, topic, &meta, &rest, -1)?
                    .into_iter()
                    .map(|(p, end)| (p, (end - n).max(begin.get(&p).copied().unwrap_or(0))))
                    .collect()
            }
            Start::Time(ts) => {
                let end = list_offsets(client, topic, &meta, &rest, -1)?;
                list_offsets(client, topic, &meta, &rest, ts)?
                    .into_iter()
                    // No record at or after the time: start at the end.
                    .map(|(p, o)| {
                        (
                            p,
                            if o < 0 {
                                end.get(&p).copied().unwrap_or(0)
                            } else {
                                o
                            },
                        )
                    })
                    .collect()
            }
        };
        position.extend(found);
    }
    let mut shown = 0u64;
    // With a count, and records going somewhere other than the terminal.
    let progress = crate::progress::records(
        "consumed",
        opts.count,
        opts.count.is_some() && !crate::progress::stdout_is_terminal(),
    );
    let mut committed_at = position.clone();
    let mut at_end: BTreeMap<i32, bool> = BTreeMap::new();
    let mut buf = Vec::new();
    'fetching: loop {
        if opts.count.is_some_and(|n| shown >= n) {
            break;
        }
        if opts.exit_at_end && all.iter().all(|p| at_end.get(p) == Some(&true)) {
            break;
        }
        // A partition whose leader is being elected is skipped until metadata names one.
        let (by_leader, leaderless) = leaders(&meta, &all);
        let mut refresh = !leaderless.is_empty();
        for (leader, parts) in by_leader {
            let req = |version: i16| {
                let t = FetchTopic::default().with_partitions(
                    parts
                        .iter()
                        .map(|&p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(position[&p])
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(PARTITION_FETCH_BYTES)
                        })
                        .collect(),
                );
                // Fetch v13+ names topics by id, earlier versions by name.
                let t = if version >= 13 {
                    t.with_topic_id(meta.topic_id)
                } else {
                    t.with_topic(name(topic))
                };
                FetchRequest::default()
                    .with_replica_id(BrokerId(-1))
                    .with_max_wait_ms(FETCH_WAIT_MS)
                    .with_min_bytes(1)
                    .with_max_bytes(FETCH_BYTES)
                    .with_isolation_level(0)
                    .with_topics(vec![t])
            };
            let resp = client.call_node_with(leader, req)?;
            if resp.error_code != 0 {
                return Err(CliError(format!(
                    "fetching from broker {leader}: {}",
                    error_name(resp.error_code)
                )));
            }
            for pd in resp.responses.iter().flat_map(|t| &t.partitions) {
                let p = pd.partition_index;
                let Some(&from) = position.get(&p) else {
                    continue;
                };
                match pd.error_code {
                    0 => {}
                    // OFFSET_OUT_OF_RANGE: Kafka consumers' auto.offset.reset; start over
                    // from the log start (retention moved it past this position).
                    1 => {
                        let start = list_offsets(client, topic, &meta, &[p], -2)?;
                        position.insert(p, start.get(&p).copied().unwrap_or(0));
                        continue;
                    }
                    code if crate::produce::retriable(code) => {
                        refresh = true;
                        continue;
                    }
                    code => {
                        return Err(CliError(format!(
                            "fetching {topic} partition {p}: {}",
                            error_name(code)
                        )))
                    }
                }
                let mut next = from;
                for (batch, after) in batches(pd.records.clone().unwrap_or_default()) {
                    let mut bytes = batch;
                    let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| {
                        CliError(format!("{topic} partition {p}: undecodable batch: {e}"))
                    })?;
                    for record in &set.records {
                        if record.control || record.offset < from {
                            continue;
                        }
                        if opts.count.is_some_and(|n| shown >= n) {
                            break;
                        }
                        render(
                            &mut buf,
                            &opts.output,
                            &Shown {
                                topic,
                                partition: p,
                                record,
                            },
                        );
                        shown += 1;
                        next = record.offset + 1;
                    }
                    if opts.count.is_some_and(|n| shown >= n) {
                        break;
                    }
                    next = next.max(after);
                }
                position.insert(p, next);
                at_end.insert(p, next >= pd.high_watermark);
                progress.set_position(shown);
                stdout
                    .write_all(&buf)
                    .and_then(|()| stdout.flush())
                    .map_err(|e| CliError(format!("writing to stdout: {e}")))?;
                buf.clear();
                if opts.count.is_some_and(|n| shown >= n) {
                    break 'fetching;
                }
            }
        }
        if let Some((g, coord)) = &group {
            if position != committed_at {
                commit_with_ids(client, *coord, g, &tps(topic, &position), &ids)?;
                committed_at = position.clone();
            }
        }
        if refresh {
            std::thread::sleep(RETRY_BACKOFF);
            meta = topic_metadata(client, topic)?;
        }
    }
    if let Some((g, coord)) = &group {
        if position != committed_at {
            commit_with_ids(client, *coord, g, &tps(topic, &position), &ids)?;
        }
    }
    progress.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcat_format_verbs_and_escapes() {
        assert_eq!(
            parse_pattern(r"%k\t%v\n"),
            [
                Piece::Key,
                Piece::Text(b"\t".to_vec()),
                Piece::Value,
                Piece::Text(b"\n".to_vec())
            ]
        );
        assert_eq!(
            parse_pattern("%p:%o %t %T %h 100%% %x"),
            [
                Piece::Partition,
                Piece::Text(b":".to_vec()),
                Piece::Offset,
                Piece::Text(b" ".to_vec()),
                Piece::Topic,
                Piece::Text(b" ".to_vec()),
                Piece::Timestamp,
                Piece::Text(b" ".to_vec()),
                Piece::Headers,
                Piece::Text(b" 100% %x".to_vec()),
            ]
        );
    }

    #[test]
    fn start_positions() {
        assert_eq!(parse_start("beginning"), Ok(Start::Beginning));
        assert_eq!(parse_start("end"), Ok(Start::End));
        assert_eq!(parse_start("42"), Ok(Start::At(42)));
        assert_eq!(parse_start("-3"), Ok(Start::FromEnd(3)));
        assert_eq!(
            parse_start("@1700000000000"),
            Ok(Start::Time(1_700_000_000_000))
        );
        assert!(parse_start("soon").is_err());
        assert!(parse_start("@x").is_err());
    }

    #[test]
    fn a_partial_batch_at_the_end_of_a_fetch_is_left_for_the_next() {
        let mut buf = bytes::BytesMut::new();
        let record = crate::produce::record(None, Some(Bytes::from_static(b"v")));
        for _ in 0..2 {
            sluice_codec::kafka_protocol::records::RecordBatchEncoder::encode(
                &mut buf,
                [&record],
                &sluice_codec::kafka_protocol::records::RecordEncodeOptions {
                    version: 2,
                    compression: sluice_codec::kafka_protocol::records::Compression::None,
                },
            )
            .unwrap();
        }
        let whole = buf.freeze();
        assert_eq!(batches(whole.clone()).len(), 2);
        let cut = whole.slice(..whole.len() - 5);
        let found = batches(cut);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, 1, "the offset after a one-record batch at 0");
    }
}
