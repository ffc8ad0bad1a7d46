//! `__transaction_state` record formats, written and read as Kafka does, so the log reads
//! like Kafka's and Kafka's tools can dump it.
//!
//! Schemas (apache/kafka `transaction-coordinator/src/main/resources/common/message/`):
//! - `TransactionLogKey` v0: `transactionalId: string`.
//! - `TransactionLogValue` v0: `producerId: int64, producerEpoch: int16,
//!   transactionTimeoutMs: int32, transactionStatus: int8, transactionPartitions: nullable
//!   [topic: string, partitionIds: [int32]], transactionLastUpdateTimestampMs: int64,
//!   transactionStartTimestampMs: int64`. v1 is the same, flexible (compact strings and
//!   arrays, tagged fields), with tagged `previousProducerId` (0), `nextProducerId` (1) and
//!   `clientTransactionVersion` (2).
//!
//! Key and value start with their int16 schema version; a null value is the tombstone of an
//! expired transactional id. We write key v0, value v1 for transactions on transaction
//! version 2 (KIP-890 part 2) or whose end rotates the producer id, value v0 otherwise, and
//! read both value versions.

use std::collections::BTreeSet;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::TxnError;
use crate::state::TxnState;

/// A decoded `TransactionLogValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    /// v1's `previousProducerId`; -1 in v0.
    pub previous_producer_id: i64,
    /// v1's `nextProducerId`; -1 in v0.
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// v1's `clientTransactionVersion`; 0 in v0.
    pub client_transaction_version: i16,
}

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_string(&mut b, transactional_id);
    b.freeze()
}

pub fn decode_key(key: &[u8]) -> Result<String, TxnError> {
    let mut r = Reader(key);
    let version = r.i16("version")?;
    if version != 0 {
        return Err(TxnError::UnknownVersion {
            what: "key",
            version,
        });
    }
    r.string("transactionalId")
}

/// Encodes `v`: as value v1 (flexible, with its tagged fields) for a transaction on
/// transaction version 2 or one whose end rotates the producer id, as value v0 otherwise.
/// Empty transactions write a null partition list, as Kafka does.
pub fn encode_value(v: &TxnValue) -> Bytes {
    if v.client_transaction_version >= 2 || v.next_producer_id != -1 {
        return encode_value_v1(v);
    }
    let mut b = BytesMut::with_capacity(64);
    b.put_i16(0);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.id());
    if v.state == TxnState::Empty {
        b.put_i32(-1);
    } else {
        let topics = group_by_topic(&v.partitions);
        b.put_i32(topics.len() as i32);
        for (topic, parts) in topics {
            put_string(&mut b, topic);
            b.put_i32(parts.len() as i32);
            for p in parts {
                b.put_i32(p);
            }
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b.freeze()
}

fn encode_value_v1(v: &TxnValue) -> Bytes {
    let mut b = BytesMut::with_capacity(96);
    b.put_i16(1);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.id());
    if v.state == TxnState::Empty {
        put_uvarint(&mut b, 0);
    } else {
        let topics = group_by_topic(&v.partitions);
        put_uvarint(&mut b, topics.len() as u64 + 1);
        for (topic, parts) in topics {
            put_uvarint(&mut b, topic.len() as u64 + 1);
            b.put_slice(topic.as_bytes());
            put_uvarint(&mut b, parts.len() as u64 + 1);
            for p in parts {
                b.put_i32(p);
            }
            put_uvarint(&mut b, 0);
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    // Tagged fields in tag order, each only when it differs from its default.
    let mut tagged: Vec<(u64, Vec<u8>)> = Vec::new();
    if v.previous_producer_id != -1 {
        tagged.push((0, v.previous_producer_id.to_be_bytes().to_vec()));
    }
    if v.next_producer_id != -1 {
        tagged.push((1, v.next_producer_id.to_be_bytes().to_vec()));
    }
    if v.client_transaction_version != 0 {
        tagged.push((2, v.client_transaction_version.to_be_bytes().to_vec()));
    }
    put_uvarint(&mut b, tagged.len() as u64);
    for (tag, data) in tagged {
        put_uvarint(&mut b, tag);
        put_uvarint(&mut b, data.len() as u64);
        b.put_slice(&data);
    }
    b.freeze()
}

fn put_uvarint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

pub fn decode_value(value: &[u8]) -> Result<TxnValue, TxnError> {
    let mut r = Reader(value);
    let version = r.i16("version")?;
    let flexible = match version {
        0 => false,
        1 => true,
        _ => {
            return Err(TxnError::UnknownVersion {
                what: "value",
                version,
            })
        }
    };
    let producer_id = r.i64("producerId")?;
    let producer_epoch = r.i16("producerEpoch")?;
    let timeout_ms = r.i32("transactionTimeoutMs")?;
    let status = r.i8("transactionStatus")?;
    let state = TxnState::from_id(status).ok_or(TxnError::UnknownState(status))?;
    let mut partitions = BTreeSet::new();
    let topics = if flexible {
        r.compact_len("transactionPartitions")?
    } else {
        r.len("transactionPartitions")?
    };
    for _ in 0..topics.unwrap_or(0) {
        let topic = if flexible {
            r.compact_string("topic")?
        } else {
            r.string("topic")?
        };
        let n = if flexible {
            r.compact_len("partitionIds")?
        } else {
            r.len("partitionIds")?
        };
        for _ in 0..n.unwrap_or(0) {
            partitions.insert((topic.clone(), r.i32("partitionIds")?));
        }
        if flexible {
            r.skip_tagged("PartitionsSchema")?;
        }
    }
    let last_update_ms = r.i64("transactionLastUpdateTimestampMs")?;
    let start_ms = r.i64("transactionStartTimestampMs")?;
    let mut v = TxnValue {
        producer_id,
        previous_producer_id: -1,
        next_producer_id: -1,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        last_update_ms,
        start_ms,
        client_transaction_version: 0,
    };
    if flexible {
        let count = r.uvarint("taggedFields")?;
        for _ in 0..count {
            let tag = r.uvarint("tag")?;
            let size = r.uvarint("tagSize")? as usize;
            let mut field = Reader(r.take(size, "taggedField")?);
            match tag {
                0 => v.previous_producer_id = field.i64("previousProducerId")?,
                1 => v.next_producer_id = field.i64("nextProducerId")?,
                2 => v.client_transaction_version = field.i16("clientTransactionVersion")?,
                _ => {}
            }
        }
    }
    Ok(v)
}

/// The partitions in topic order, each topic's partitions ascending.
pub fn group_by_topic(partitions: &BTreeSet<(String, i32)>) -> Vec<(&str, Vec<i32>)> {
    let mut out: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, p) in partitions {
        match out.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*p),
            _ => out.push((topic.as_str(), vec![*p])),
        }
    }
    out
}

fn put_string(b: &mut BytesMut, s: &str) {
    // Transactional ids and topic names are far below i16::MAX bytes (the request decoder
    // read them as int16-length strings).
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TxnError> {
        if self.0.len() < n {
            return Err(TxnError::Truncated { field });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn i8(&mut self, f: &'static str) -> Result<i8, TxnError> {
        Ok(self.take(1, f)?[0] as i8)
    }
    fn i16(&mut self, f: &'static str) -> Result<i16, TxnError> {
        Ok(i16::from_be_bytes(self.take(2, f)?.try_into().expect("2")))
    }
    fn i32(&mut self, f: &'static str) -> Result<i32, TxnError> {
        Ok(i32::from_be_bytes(self.take(4, f)?.try_into().expect("4")))
    }
    fn i64(&mut self, f: &'static str) -> Result<i64, TxnError> {
        Ok(i64::from_be_bytes(self.take(8, f)?.try_into().expect("8")))
    }
    fn uvarint(&mut self, f: &'static str) -> Result<u64, TxnError> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let b = self.take(1, f)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(TxnError::BadLength {
            field: f,
            len: v as i64,
        })
    }
    /// An int32 array length; `None` for null. A count larger than the bytes left is refused
    /// before anything is allocated for it.
    fn len(&mut self, f: &'static str) -> Result<Option<usize>, TxnError> {
        let n = self.i32(f)?;
        self.check_len(f, i64::from(n))
    }
    fn compact_len(&mut self, f: &'static str) -> Result<Option<usize>, TxnError> {
        let n = self.uvarint(f)? as i64 - 1;
        self.check_len(f, n)
    }
    fn check_len(&self, field: &'static str, n: i64) -> Result<Option<usize>, TxnError> {
        if n == -1 {
            return Ok(None);
        }
        if n < 0 || n as u64 > self.0.len() as u64 {
            return Err(TxnError::BadLength { field, len: n });
        }
        Ok(Some(n as usize))
    }
    fn string(&mut self, f: &'static str) -> Result<String, TxnError> {
        let n = self.i16(f)?;
        if n < 0 {
            return Err(TxnError::BadLength {
                field: f,
                len: i64::from(n),
            });
        }
        let bytes = self.take(n as usize, f)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TxnError::NotUtf8 { field: f })
    }
    fn compact_string(&mut self, f: &'static str) -> Result<String, TxnError> {
        let n = self
            .compact_len(f)?
            .ok_or(TxnError::BadLength { field: f, len: -1 })?;
        let bytes = self.take(n, f)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| TxnError::NotUtf8 { field: f })
    }
    fn skip_tagged(&mut self, f: &'static str) -> Result<(), TxnError> {
        for _ in 0..self.uvarint(f)? {
            self.uvarint(f)?;
            let size = self.uvarint(f)? as usize;
            self.take(size, f)?;
        }
        Ok(())
    }
}
