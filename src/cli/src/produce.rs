//! `sluice topic produce`: one record per stdin line, batched per partition into RecordBatch
//! v2 and sent to each partition's leader; keyed records go where Kafka's clients put them
//! (murmur2), records without a key to one partition per batch, in turn.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use serde_json::json;
use sluice_codec::kafka_protocol::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use sluice_codec::kafka_protocol::messages::ProduceRequest;
use sluice_codec::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use sluice_codec::partitioner::partition_of_key;

use crate::client::Client;
use crate::topic::{name, topic_metadata};
use crate::{error_text, CliError, Format};

/// What is pending is sent once its records hold this many bytes, over all partitions
/// (a request carries every partition's batch that its leader leads, and Kafka's
/// `max.request.size` default is 1 MiB).
pub const BATCH_BYTES_MAX: usize = 256 << 10;
/// Records read before what is pending is sent, whatever its size.
pub const PENDING_RECORDS_MAX: usize = 10_000;
/// Sends of one batch before a retriable error becomes the command's failure.
const ATTEMPTS_MAX: u32 = 5;
const RETRY_BACKOFF: Duration = Duration::from_millis(300);
/// How long the leader may take to have the batch acknowledged (Kafka's
/// `request.timeout.ms` default).
const ACK_TIMEOUT_MS: i32 = 30_000;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acks {
    /// Every in-sync replica has the records.
    All,
    /// The leader has them.
    #[value(name = "1")]
    One,
    /// No acknowledgement (nothing is known about the outcome).
    #[value(name = "0")]
    Zero,
}

impl Acks {
    fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::One => 1,
            Acks::Zero => 0,
        }
    }
}

pub struct ProduceOptions {
    pub keyed: bool,
    pub tombstone_empty: bool,
    pub partition: Option<i32>,
    pub acks: Acks,
}

/// Errors worth another try after fresh metadata: leadership moving, a partition not yet
/// known to the broker asked, an acknowledgement that timed out (a retry may duplicate
/// records, as any non-idempotent producer's retry may).
pub(crate) fn retriable(code: i16) -> bool {
    use sluice_codec::kafka_protocol::error::ResponseError;
    ResponseError::try_from_code(code).is_some_and(|e| e.is_retriable())
}

/// Where produced records went, for the summary.
#[derive(Default)]
struct Tally {
    records: u64,
    /// First and last offset written per partition (not known with acks=0).
    offsets: BTreeMap<i32, (i64, i64)>,
}

pub fn run(
    client: &mut Client,
    format: Format,
    topic: &str,
    opts: &ProduceOptions,
    input: &mut dyn BufRead,
    interactive: bool,
) -> Result<String, CliError> {
    let mut meta = topic_metadata(client, topic)?;
    let partitions = meta.partitions.len() as u32;
    if let Some(p) = opts.partition {
        if p < 0 || p as u32 >= partitions {
            return Err(CliError(format!(
                "topic {topic} has partitions 0..{partitions}; there is no partition {p}"
            )));
        }
    }
    let mut tally = Tally::default();
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let (mut pending_bytes, mut pending_records) = (0usize, 0usize);
    // Records without a key: a partition per batch, in turn from a varying one, so that
    // runs of one line each spread over the partitions as Kafka's sticky partitioner does.
    let mut next_unkeyed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % partitions;
    // Lines typed one at a time need no progress; a file's do (text output only).
    let progress = crate::progress::records(
        "produced",
        None,
        !interactive && matches!(format, Format::Text),
    );
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = input
            .read_until(b'\n', &mut line)
            .map_err(|e| CliError(format!("reading stdin: {e}")))?;
        if read > 0 {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let (key, value) = split(&line, opts.keyed);
            let value = match value {
                v if v.is_empty() && opts.tombstone_empty => None,
                v => Some(Bytes::copy_from_slice(v)),
            };
            let key = key.map(Bytes::copy_from_slice);
            let partition = match (opts.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_of_key(k, partitions) as i32,
                (None, None) => next_unkeyed as i32,
            };
            pending_bytes +=
                key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len());
            pending_records += 1;
            pending
                .entry(partition)
                .or_default()
                .push(record(key, value));
        }
        let full = pending_bytes >= BATCH_BYTES_MAX || pending_records >= PENDING_RECORDS_MAX;
        if !pending.is_empty() && (read == 0 || full || interactive) {
            send(
                client,
                topic,
                &mut meta,
                opts.acks,
                &mut pending,
                &mut tally,
            )?;
            (pending_bytes, pending_records) = (0, 0);
            next_unkeyed = (next_unkeyed + 1) % partitions;
            progress.set_position(tally.records);
        }
        if read == 0 {
            break;
        }
    }
    progress.finish_and_clear();
    Ok(match format {
        Format::Json => crate::output::json(&json!({
            "topic": topic,
            "records": tally.records,
            "partitions": tally.offsets.iter().map(|(p, (first, last))| json!({
                "partition": p, "first_offset": first, "last_offset": last,
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            // Records produced are reported on stderr: stdout stays for what pipes read.
            eprintln!("sluice: produced {} records to {topic}", tally.records);
            String::new()
        }
    })
}

/// Key and value of a line: with keys, split at the first tab (a line without one has no
/// key).
fn split(line: &[u8], keyed: bool) -> (Option<&[u8]>, &[u8]) {
    if !keyed {
        return (None, line);
    }
    match line.iter().position(|&b| b == b'\t') {
        Some(i) => (Some(&line[..i]), &line[i + 1..]),
        None => (None, line),
    }
}

pub(crate) fn record(key: Option<Bytes>, value: Option<Bytes>) -> Record {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: now,
        key,
        value,
        headers: Default::default(),
        delete_horizon: false,
    }
}

fn encode(records: &[Record]) -> Result<Bytes, CliError> {
    // Offsets are relative to the batch: the leader assigns the real ones. The encoder
    // starts a new batch wherever offset minus sequence changes, and writes the first
    // record's sequence as the batch's: so sequences run from -1 (no producer id, no
    // sequence) alongside the offsets, and all the records make one batch.
    let numbered: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            offset: i as i64,
            sequence: i as i32 - 1,
            ..r.clone()
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &numbered,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| CliError(format!("encoding a record batch: {e}")))?;
    let batch = buf.freeze();
    debug_assert_eq!(
        crate::consume::batches(batch.clone()).len(),
        1,
        "one batch per partition and request"
    );
    Ok(batch)
}

/// Sends every pending batch to its leader, retrying retriable errors with fresh metadata.
fn send(
    client: &mut Client,
    topic: &str,
    meta: &mut sluice_codec::kafka_protocol::messages::metadata_response::MetadataResponseTopic,
    acks: Acks,
    pending: &mut BTreeMap<i32, Vec<Record>>,
    tally: &mut Tally,
) -> Result<(), CliError> {
    let mut batches: BTreeMap<i32, (Bytes, u64)> = BTreeMap::new();
    for (p, records) in std::mem::take(pending) {
        batches.insert(p, (encode(&records)?, records.len() as u64));
    }
    let mut attempt = 1;
    while !batches.is_empty() {
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for &p in batches.keys() {
            let leader = meta
                .partitions
                .iter()
                .find(|m| m.partition_index == p)
                .map_or(-1, |m| m.leader_id.0);
            by_leader.entry(leader).or_default().push(p);
        }
        let mut failed: Vec<(i32, i16, Option<String>)> = Vec::new();
        for (leader, parts) in by_leader {
            if leader < 0 {
                // LEADER_NOT_AVAILABLE: retried after fresh metadata.
                failed.extend(parts.iter().map(|&p| (p, 5, None)));
                continue;
            }
            let req = |version: i16| {
                // Produce v13 names topics by id, earlier versions by name.
                let topic_data = TopicProduceData::default().with_partition_data(
                    parts
                        .iter()
                        .map(|&p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(batches[&p].0.clone()))
                        })
                        .collect(),
                );
                let topic_data = if version >= 13 {
                    topic_data.with_topic_id(meta.topic_id)
                } else {
                    topic_data.with_name(name(topic))
                };
                ProduceRequest::default()
                    .with_acks(acks.wire())
                    .with_timeout_ms(ACK_TIMEOUT_MS)
                    .with_topic_data(vec![topic_data])
            };
            if acks == Acks::Zero {
                client.send_node(leader, req)?;
                for p in parts {
                    tally.records += batches.remove(&p).map_or(0, |b| b.1);
                }
                continue;
            }
            let resp = client.call_node_with(leader, req)?;
            let answers = resp.responses.iter().flat_map(|t| &t.partition_responses);
            for a in answers {
                let Some((_, count)) = batches.get(&a.index) else {
                    continue;
                };
                if a.error_code == 0 {
                    let count = *count;
                    batches.remove(&a.index);
                    tally.records += count;
                    let last = a.base_offset + count as i64 - 1;
                    let e = tally
                        .offsets
                        .entry(a.index)
                        .or_insert((a.base_offset, last));
                    e.1 = last;
                } else {
                    let message = a.error_message.as_ref().map(|m| m.to_string());
                    failed.push((a.index, a.error_code, message));
                }
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let exhausted = attempt >= ATTEMPTS_MAX;
        let give_up = failed
            .iter()
            .find(|f| !retriable(f.1))
            .or(failed.first().filter(|_| exhausted));
        if let Some((p, code, message)) = give_up {
            return Err(CliError(format!(
                "producing to {topic} partition {p}: {}",
                error_text(*code, message.as_deref())
            )));
        }
        if failed.is_empty() {
            return Err(CliError(format!(
                "producing to {topic}: the leader did not answer for partitions {:?}",
                batches.keys().collect::<Vec<_>>()
            )));
        }
        attempt += 1;
        std::thread::sleep(RETRY_BACKOFF);
        *meta = topic_metadata(client, topic)?;
    }
    Ok(())
}

/// Whether stdin is a terminal: then each line is sent as it is typed.
pub fn stdin_is_interactive() -> bool {
    std::io::stdin().is_terminal()
}
