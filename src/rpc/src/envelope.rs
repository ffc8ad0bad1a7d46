//! The body of a `Raft` frame: a `sluice_raft::Envelope`, compact heartbeats encoded by hand
//! and raft-rs `Message`s in raft's own protobuf encoding, with the Kafka batches of
//! partition entries carried beside the messages rather than inside them. Layout
//! (big-endian):
//!
//! ```text
//! covered u32     bytes after this field up to the end of the batch lengths
//! from u64, to u64,
//! heartbeats u32, then each: group u64, flags u8 (bit 0: response, bit 1: quiesce; the rest 0), term u64, commit u64
//! messages u32,   then each: group u64, len u32, eraftpb.Message (len bytes of protobuf)
//! batches u32,    then each: len u32
//! -- the frame CRC covers everything above (`covered` + 4 bytes), nothing below --
//! the batches' bytes, one after another
//! ```
//!
//! with nothing after the last batch. Batch `i` is the data of the `i`-th entry, in message
//! then entry order, that is a normal entry whose context names a record count and whose
//! data is empty in the protobuf (a proposed batch is never empty, so the two cannot be
//! confused). Each batch must be a whole Kafka RecordBatch v2 whose own CRC32C checks out:
//! the decoder checks it, as the frame CRC would have (corruption closes the connection),
//! and the batch CRC is what a Kafka follower checks anyway. So one pass over the bytes on
//! the receiver replaces two (frame and batch), none is needed on the sender, and the
//! sender writes the batches from the memory they were proposed or read in, without
//! copying them into the protobuf encoding. The controller's entries (metadata records,
//! not Kafka batches) stay inside their messages ([`encode_envelope_frames`]'s `beside`).
//!
//! An envelope too large for one frame is split into several (each a valid envelope with
//! the same ends): Raft does not care how its messages are grouped, only that each arrives
//! whole.

use bytes::{Buf, BufMut, Bytes};
use protobuf::{CodedOutputStream, Message as _};
use raft::eraftpb::{Entry, EntryType, Message};
use sluice_raft::{batch_records, Envelope, GroupId, Heartbeat};

/// Bytes of the envelope's fixed part: covered length, ends and the three counts.
const ENVELOPE_FIXED: usize = 4 + 8 + 8 + 4 + 4 + 4;
/// Bytes of one compact heartbeat.
const HEARTBEAT_LEN: usize = 8 + 1 + 8 + 8;
/// Bytes in front of each protobuf message: group and length.
const MESSAGE_PREFIX: usize = 8 + 4;
/// Bytes of one batch length.
const BATCH_PREFIX: usize = 4;
/// Raft messages one envelope may carry: the manager sends one per group with news for the
/// peer, so this is far above any shard's groups with traffic in one call, and it bounds
/// what a decoded envelope holds (a `Message` in memory is ~200 bytes, and an empty one is
/// zero bytes on the wire).
pub const MESSAGES_PER_ENVELOPE_MAX: usize = 65_536;
/// Raft entries all messages of one envelope may carry together, counted on the wire before
/// parsing: an empty entry is 2 bytes on the wire and ~100 in memory, so without this a
/// 65 MiB frame could decode into gigabytes. Batches beside are entries too.
pub const ENTRIES_PER_ENVELOPE_MAX: usize = 65_536;
/// eraftpb.Message's `entries` field number.
const MESSAGE_ENTRIES_FIELD: u64 = 7;
/// The one heartbeat flag defined.
const FLAG_RESPONSE: u8 = 1;
/// The leader's notice that the group goes quiet (`Heartbeat::quiesce`).
const FLAG_QUIESCE: u8 = 2;
/// Kafka RecordBatch v2 layout, as far as the check of a batch beside needs it: the
/// `batchLength` field (bytes after it), `magic`, `crc` (CRC32C of everything after it).
const BATCH_LENGTH_AT: usize = 8;
const BATCH_MAGIC_AT: usize = 16;
const BATCH_CRC_AT: usize = 17;
const BATCH_CRC_FROM: usize = 21;
/// The smallest v2 batch: its 61-byte header.
const BATCH_HEADER_LEN: usize = 61;

/// Why a `Raft` body was refused (the connection is closed: a peer sending it is broken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError(pub &'static str);

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed raft envelope: {}", self.0)
    }
}

impl std::error::Error for EnvelopeError {}

/// One `Raft` frame body as the sender holds it: the part the frame CRC covers (from the
/// `covered` field to the batch lengths), then the batches, written after it as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftBody {
    pub covered: Bytes,
    pub batches: Vec<Bytes>,
}

impl RaftBody {
    /// Bytes on the wire (the frame's body length).
    pub fn len(&self) -> usize {
        self.covered.len() + self.batches.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body in one buffer, as a receiver reads it (tests, and small frames).
    pub fn to_bytes(&self) -> Bytes {
        let mut b = Vec::with_capacity(self.len());
        b.extend_from_slice(&self.covered);
        for batch in &self.batches {
            b.extend_from_slice(batch);
        }
        b.into()
    }
}

/// How many leading bytes of a received `Raft` body the frame CRC covers, from its
/// `covered` field; `None` if the body is too short to say or says more than it holds.
pub fn covered_len(body: &[u8]) -> Option<usize> {
    let n = body.get(..4)?;
    let n = 4 + u32::from_be_bytes(n.try_into().ok()?) as usize;
    (n <= body.len()).then_some(n)
}

/// True for an entry whose data travels beside its message: a Kafka batch (see the module
/// header).
fn carries_batch(e: &Entry) -> bool {
    batch_records(e).is_some()
}

/// True for a decoded entry whose data is the next batch beside.
fn wants_batch(e: &Entry) -> bool {
    e.get_entry_type() == EntryType::EntryNormal
        && e.data.is_empty()
        && <[u8; 4]>::try_from(&e.context[..]).is_ok_and(|c| u32::from_be_bytes(c) > 0)
}

/// What [`check_batch`] says of a batch whose only fault is its CRC.
const BAD_CRC: &str = "a batch beside fails its CRC";

/// Checks that `b` is one whole Kafka RecordBatch v2 with a good CRC. The CRC covers all
/// but `baseOffset` and `partitionLeaderEpoch` (bytes 0..8 and 12..16, outside every Kafka
/// batch CRC); length and magic are checked here, and the store compares those two with
/// the offset and term the entry has and restamps a copy if they differ, so damage there
/// is overwritten rather than stored.
fn check_batch(b: &[u8]) -> Result<(), EnvelopeError> {
    if b.len() < BATCH_HEADER_LEN {
        return Err(EnvelopeError(
            "a batch beside is shorter than a batch header",
        ));
    }
    let length = u32::from_be_bytes(b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].try_into().unwrap());
    if length as usize + BATCH_LENGTH_AT + 4 != b.len() {
        return Err(EnvelopeError("a batch beside does not fill its length"));
    }
    if b[BATCH_MAGIC_AT] != 2 {
        return Err(EnvelopeError("a batch beside is not a v2 record batch"));
    }
    let crc = u32::from_be_bytes(b[BATCH_CRC_AT..BATCH_CRC_AT + 4].try_into().unwrap());
    if crc32c::crc32c(&b[BATCH_CRC_FROM..]) != crc {
        return Err(EnvelopeError(BAD_CRC));
    }
    Ok(())
}

/// `envelope` as one body in one buffer, whatever its size (tests; see
/// [`encode_envelope_frames`] for the transport's split and `beside`).
pub fn encode_envelope(envelope: Envelope, beside: bool) -> Bytes {
    let (mut bodies, too_large) = encode_envelope_frames(envelope, usize::MAX, beside);
    debug_assert!(too_large.is_empty());
    debug_assert_eq!(bodies.len(), 1);
    bodies.pop().map(|b| b.to_bytes()).unwrap_or_default()
}

/// `envelope` as bodies of at most `max_body` bytes each, in order (heartbeats first, then
/// messages in their order), and the groups of messages that do not fit a body even alone
/// (dropped: the caller counts them; a sender keeps messages within the limit, see
/// [`crate::RAFT_ENTRY_BYTES_MAX`]). An envelope with nothing in it gives no body. With
/// `beside`, the data of entries that are Kafka batches goes beside the messages (only
/// partition groups' entries are: the controller's are not).
pub fn encode_envelope_frames(
    envelope: Envelope,
    max_body: usize,
    beside: bool,
) -> (Vec<RaftBody>, Vec<(GroupId, usize)>) {
    let Envelope {
        from,
        to,
        heartbeats,
        messages,
    } = envelope;
    let mut too_large = Vec::new();
    // Batches out first, then sizes (protobuf caches them in the messages for the write
    // below).
    let mut sized: Vec<(GroupId, Message, Vec<Bytes>, usize)> = Vec::with_capacity(messages.len());
    for (group, mut m) in messages {
        let mut batches = Vec::new();
        if beside {
            for e in m.mut_entries().iter_mut().filter(|e| carries_batch(e)) {
                batches.push(std::mem::take(&mut e.data));
            }
        }
        let len = m.compute_size() as usize
            + MESSAGE_PREFIX
            + batches
                .iter()
                .map(|b| BATCH_PREFIX + b.len())
                .sum::<usize>();
        if ENVELOPE_FIXED + len > max_body {
            too_large.push((group, len));
        } else {
            sized.push((group, m, batches, len));
        }
    }
    let mut bodies = Vec::new();
    let mut hbs = &heartbeats[..];
    let mut msgs = sized.into_iter().peekable();
    while !hbs.is_empty() || msgs.peek().is_some() {
        // Greedy: as many heartbeats, then messages, as fit (at least one item fits: checked
        // above for messages; a heartbeat is far below any sane limit).
        let mut room = max_body.saturating_sub(ENVELOPE_FIXED);
        let n_hb = hbs.len().min(room / HEARTBEAT_LEN).max(1).min(hbs.len());
        room = room.saturating_sub(n_hb * HEARTBEAT_LEN);
        let mut chunk = Vec::new();
        while let Some((_, _, _, len)) = msgs.peek() {
            if *len > room && !(chunk.is_empty() && n_hb == 0) {
                break;
            }
            let item = msgs.next().expect("peeked");
            room = room.saturating_sub(item.3);
            chunk.push(item);
        }
        let batches: Vec<Bytes> = chunk
            .iter_mut()
            .flat_map(|(_, _, b, _)| std::mem::take(b))
            .collect();
        let size = ENVELOPE_FIXED
            + n_hb * HEARTBEAT_LEN
            + chunk.iter().map(|(.., len)| len).sum::<usize>()
            - batches.iter().map(Bytes::len).sum::<usize>();
        // One byte of slack: protobuf's `flush` into a Vec always reserves one more byte,
        // which on an exactly full Vec doubles it and copies the whole body again.
        let mut body: Vec<u8> = Vec::with_capacity(size + 1);
        body.put_u32((size - 4) as u32);
        body.put_u64(from);
        body.put_u64(to);
        body.put_u32(n_hb as u32);
        for hb in &hbs[..n_hb] {
            body.put_u64(hb.group);
            let mut flags = 0;
            if hb.response {
                flags |= FLAG_RESPONSE;
            }
            if hb.quiesce {
                flags |= FLAG_QUIESCE;
            }
            body.put_u8(flags);
            body.put_u64(hb.term);
            body.put_u64(hb.commit);
        }
        hbs = &hbs[n_hb..];
        body.put_u32(chunk.len() as u32);
        for (group, m, _, len) in &chunk {
            body.put_u64(*group);
            let proto = m.get_cached_size() as usize;
            debug_assert!(proto + MESSAGE_PREFIX <= *len);
            body.put_u32(proto as u32);
            let mut os = CodedOutputStream::vec(&mut body);
            m.write_to_with_cached_sizes(&mut os)
                .and_then(|()| os.flush())
                .expect("protobuf encodes into a Vec");
        }
        body.put_u32(batches.len() as u32);
        for b in &batches {
            body.put_u32(b.len() as u32);
        }
        debug_assert_eq!(body.len(), size);
        bodies.push(RaftBody {
            covered: Bytes::from(body),
            batches,
        });
    }
    (bodies, too_large)
}

/// Decodes a `Raft` body (the whole of it, as received). Never panics and allocates nothing
/// beyond what the body's own bytes justify (counts are checked against the bytes left
/// before any vector is sized; the messages' data fields and the batches beside share
/// `body`'s buffer). Every batch beside is checked as [`check_batch`] says; one that fails
/// fails the body.
pub fn decode_envelope(body: &Bytes) -> Result<Envelope, EnvelopeError> {
    match decode_envelope_lossy(body)? {
        (env, damaged) if damaged.is_empty() => Ok(env),
        _ => Err(EnvelopeError("a batch beside fails its CRC")),
    }
}

/// [`decode_envelope`] for the transport: a message whose batch beside fails its CRC (whole
/// and in place, so the body's structure is sound) is left out and its group named, rather
/// than failing the body. A leader whose own stored copy of a batch is damaged sends it
/// again on every retry; closing the connection each time would cut every group and the
/// controller between the two nodes, where dropping the one message stalls only that group
/// (as a lost message would).
pub fn decode_envelope_lossy(body: &Bytes) -> Result<(Envelope, Vec<GroupId>), EnvelopeError> {
    let covered = covered_len(body).ok_or(EnvelopeError("bad covered length"))?;
    let mut b = &body[4..covered];
    if b.len() < ENVELOPE_FIXED - 4 {
        return Err(EnvelopeError("shorter than its fixed part"));
    }
    let from = b.get_u64();
    let to = b.get_u64();
    let n_hb = b.get_u32() as usize;
    if n_hb > b.len() / HEARTBEAT_LEN {
        return Err(EnvelopeError("more heartbeats than bytes"));
    }
    let mut heartbeats = Vec::with_capacity(n_hb);
    for _ in 0..n_hb {
        let group = b.get_u64();
        let flags = b.get_u8();
        if flags & !(FLAG_RESPONSE | FLAG_QUIESCE) != 0 {
            return Err(EnvelopeError("unknown heartbeat flags"));
        }
        heartbeats.push(Heartbeat {
            group,
            response: flags & FLAG_RESPONSE != 0,
            term: b.get_u64(),
            commit: b.get_u64(),
            quiesce: flags & FLAG_QUIESCE != 0,
        });
    }
    if b.len() < 4 {
        return Err(EnvelopeError("no message count"));
    }
    let n_msg = b.get_u32() as usize;
    if n_msg > b.len() / MESSAGE_PREFIX {
        return Err(EnvelopeError("more messages than bytes"));
    }
    if n_msg > MESSAGES_PER_ENVELOPE_MAX {
        return Err(EnvelopeError("more messages than an envelope may carry"));
    }
    let mut entries = 0usize;
    let mut messages = Vec::with_capacity(n_msg);
    for _ in 0..n_msg {
        if b.len() < MESSAGE_PREFIX {
            return Err(EnvelopeError("truncated message header"));
        }
        let group = b.get_u64();
        let len = b.get_u32() as usize;
        if len > b.len() {
            return Err(EnvelopeError("message longer than the body"));
        }
        let start = covered - b.len();
        entries += count_entries(&body[start..start + len])
            .ok_or(EnvelopeError("message is not a raft protobuf Message"))?;
        if entries > ENTRIES_PER_ENVELOPE_MAX {
            return Err(EnvelopeError("more entries than an envelope may carry"));
        }
        let m = Message::parse_from_carllerche_bytes(&body.slice(start..start + len))
            .map_err(|_| EnvelopeError("message is not a raft protobuf Message"))?;
        b.advance(len);
        messages.push((group, m));
    }
    if b.len() < 4 {
        return Err(EnvelopeError("no batch count"));
    }
    let n_batches = b.get_u32() as usize;
    if n_batches.checked_mul(BATCH_PREFIX) != Some(b.len()) {
        return Err(EnvelopeError(
            "batch count does not match the covered bytes",
        ));
    }
    // Each batch fills an entry counted above: the count is bounded with them.
    let mut at = covered;
    let mut batches = Vec::with_capacity(n_batches.min(entries));
    for _ in 0..n_batches {
        let len = b.get_u32() as usize;
        if len > body.len() - at {
            return Err(EnvelopeError("batch longer than the body"));
        }
        let batch = body.slice(at..at + len);
        let sound = match check_batch(&batch) {
            Ok(()) => true,
            Err(EnvelopeError(BAD_CRC)) => false,
            Err(e) => return Err(e),
        };
        batches.push((batch, sound));
        at += len;
    }
    if at != body.len() {
        return Err(EnvelopeError("bytes after the last batch"));
    }
    let mut batches = batches.into_iter();
    let mut damaged = Vec::new();
    for (group, m) in &mut messages {
        let mut sound = true;
        for e in m.mut_entries().iter_mut().filter(|e| wants_batch(e)) {
            let (batch, ok) = batches
                .next()
                .ok_or(EnvelopeError("an entry without its batch"))?;
            e.data = batch;
            sound &= ok;
        }
        if !sound {
            damaged.push(*group);
        }
    }
    if batches.next().is_some() {
        return Err(EnvelopeError("a batch without its entry"));
    }
    if !damaged.is_empty() {
        messages.retain(|(g, _)| !damaged.contains(g));
    }
    Ok((
        Envelope {
            from,
            to,
            heartbeats,
            messages,
        },
        damaged,
    ))
}

/// How many `entries` fields a protobuf-encoded `eraftpb.Message` holds, read from its wire
/// format without decoding it; `None` if the bytes are not well-formed protobuf.
fn count_entries(mut b: &[u8]) -> Option<usize> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut n = 0;
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let skip = match key & 7 {
            0 => {
                varint(&mut b)?;
                0
            }
            1 => 8,
            2 => usize::try_from(varint(&mut b)?).ok()?,
            5 => 4,
            _ => return None,
        };
        if key >> 3 == MESSAGE_ENTRIES_FIELD && key & 7 == 2 {
            n += 1;
        }
        b = b.get(skip..)?;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfState, Entry, EntryType, MessageType, Snapshot};
    use sluice_raft::Rng;

    /// A whole Kafka RecordBatch v2 of `len` bytes (at least a header) with a good CRC.
    fn kafka_batch(fill: u8, len: usize) -> Bytes {
        let len = len.max(BATCH_HEADER_LEN);
        let mut b = vec![fill; len];
        b[BATCH_LENGTH_AT..BATCH_LENGTH_AT + 4].copy_from_slice(&((len - 12) as u32).to_be_bytes());
        b[BATCH_MAGIC_AT] = 2;
        let crc = crc32c::crc32c(&b[BATCH_CRC_FROM..]);
        b[BATCH_CRC_AT..BATCH_CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b.into()
    }

    /// `inner` (from `from` to the message list's end) as a whole body with no batches.
    fn wrap(mut inner: Vec<u8>) -> Bytes {
        inner.extend_from_slice(&0u32.to_be_bytes());
        let mut b = (inner.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(&inner);
        b.into()
    }

    fn append(from: u64, to: u64, entries: usize, data: usize) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.from = from;
        m.to = to;
        m.term = 7;
        m.log_term = 6;
        m.index = 100;
        m.commit = 99;
        m.set_entries(
            (0..entries)
                .map(|i| {
                    let mut e = Entry::default();
                    e.set_entry_type(EntryType::EntryNormal);
                    e.term = 7;
                    e.index = 101 + i as u64;
                    e.data = kafka_batch(i as u8, data);
                    e.context = Bytes::from_static(&[0, 0, 0, 3]);
                    e
                })
                .collect::<Vec<_>>()
                .into(),
        );
        m
    }

    fn sample() -> Envelope {
        let mut snap_msg = Message::default();
        snap_msg.set_msg_type(MessageType::MsgSnapshot);
        snap_msg.from = 1;
        snap_msg.to = 2;
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 5;
        snap.mut_metadata().set_conf_state(ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        });
        snap_msg.set_snapshot(snap);
        let mut vote = Message::default();
        vote.set_msg_type(MessageType::MsgRequestPreVote);
        vote.from = 1;
        vote.to = 2;
        vote.term = 9;
        vote.reject = true;
        vote.reject_hint = u64::MAX;
        vote.context = Bytes::from_static(b"ctx");
        Envelope {
            from: 1,
            to: 2,
            heartbeats: vec![
                Heartbeat {
                    group: 1,
                    response: false,
                    term: 3,
                    commit: 10,
                    quiesce: true,
                },
                Heartbeat {
                    group: u64::MAX,
                    response: true,
                    term: u64::MAX,
                    commit: 0,
                    quiesce: false,
                },
            ],
            messages: vec![(4, append(1, 2, 3, 100)), (5, snap_msg), (6, vote)],
        }
    }

    #[test]
    fn round_trip() {
        for beside in [false, true] {
            let env = sample();
            let body = encode_envelope(env.clone(), beside);
            assert_eq!(decode_envelope(&body).unwrap(), env, "beside {beside}");
        }
        let empty = Envelope {
            from: 3,
            to: 4,
            ..Default::default()
        };
        // An empty envelope has no body to send...
        assert!(encode_envelope_frames(empty.clone(), 1 << 20, true)
            .0
            .is_empty());
        // ...but the fixed part alone decodes.
        let mut fixed = Vec::new();
        fixed.put_u64(3);
        fixed.put_u64(4);
        fixed.put_u32(0);
        fixed.put_u32(0);
        assert_eq!(decode_envelope(&wrap(fixed)).unwrap(), empty);
    }

    #[test]
    fn batches_go_beside_and_share_the_frame_buffer() {
        let env = Envelope {
            from: 1,
            to: 2,
            heartbeats: vec![],
            messages: vec![(1, append(1, 2, 2, 4096))],
        };
        let (bodies, _) = encode_envelope_frames(env.clone(), usize::MAX, true);
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0].batches.len(), 2, "both batches beside");
        assert!(
            bodies[0].covered.len() < 200,
            "no batch inside the covered part"
        );
        assert_eq!(
            covered_len(&bodies[0].to_bytes()),
            Some(bodies[0].covered.len())
        );
        for beside in [false, true] {
            let body = encode_envelope(env.clone(), beside);
            let got = decode_envelope(&body).unwrap();
            let data = &got.messages[0].1.entries[1].data;
            let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
            assert!(
                range.contains(&(data.as_ptr() as usize)),
                "entry data is not copied"
            );
        }
        // The controller's entries (beside off) stay inside the covered part.
        let (bodies, _) = encode_envelope_frames(env, usize::MAX, false);
        assert!(bodies[0].batches.is_empty());
    }

    /// A batch beside is checked as the frame CRC would have checked it: any flipped bit,
    /// and a length, magic or entry count that does not match, closes the connection.
    #[test]
    fn damaged_batches_beside_are_refused() {
        let env = Envelope {
            from: 1,
            to: 2,
            heartbeats: vec![],
            messages: vec![(1, append(1, 2, 1, 300))],
        };
        let body = encode_envelope(env.clone(), true).to_vec();
        let covered = covered_len(&body).unwrap();
        for at in covered..body.len() {
            // baseOffset and partitionLeaderEpoch are outside every Kafka batch CRC: the
            // store stamps its own values over whatever arrives there.
            if (0..8).contains(&(at - covered)) || (12..16).contains(&(at - covered)) {
                continue;
            }
            let mut bad = body.clone();
            bad[at] ^= 0x10;
            assert!(decode_envelope(&Bytes::from(bad)).is_err(), "flip at {at}");
        }
        // The same batch as an entry's data inside the protobuf (beside off) is the frame
        // CRC's to check, not the decoder's.
        let batch = env.messages[0].1.entries[0].data.clone();
        let mut inside = encode_envelope(env, false).to_vec();
        let at = inside
            .windows(batch.len())
            .position(|w| w == &batch[..])
            .expect("the batch is inside");
        inside[at + 100] ^= 0x10;
        assert!(decode_envelope(&Bytes::from(inside)).is_ok());
    }

    /// On the wire a batch that fails only its CRC costs its own message, not the frame: the
    /// other groups' messages and the heartbeats are delivered.
    #[test]
    fn a_damaged_batch_drops_only_its_message() {
        let mut env = sample();
        env.messages.push((8, append(1, 2, 2, 500)));
        let body = encode_envelope(env.clone(), true).to_vec();
        let covered = covered_len(&body).unwrap();
        // The last batch beside is group 8's second: flip a byte in its records.
        let mut bad = body.clone();
        let last = bad.len() - 10;
        bad[last] ^= 0x01;
        let bad = Bytes::from(bad);
        assert!(decode_envelope(&bad).is_err(), "strict decoding refuses it");
        let (got, damaged) = decode_envelope_lossy(&bad).unwrap();
        assert_eq!(damaged, vec![8]);
        env.messages.retain(|(g, _)| *g != 8);
        assert_eq!(got, env, "everything else arrives as sent");
        // A batch whose structure is broken (its length field) still fails the body.
        let mut broken = body.clone();
        broken[covered + 11] ^= 0x01;
        assert!(decode_envelope_lossy(&Bytes::from(broken)).is_err());
    }

    #[test]
    fn splits_to_fit_the_frame_limit() {
        let mut env = sample();
        env.heartbeats = (0..1000)
            .map(|g| Heartbeat {
                group: g,
                response: g % 2 == 0,
                term: g,
                commit: g,
                quiesce: g % 3 == 0,
            })
            .collect();
        env.messages = (0..20).map(|g| (g, append(1, 2, 2, 3000))).collect();
        let huge = append(1, 2, 1, 20_000);
        env.messages.insert(10, (99, huge));
        let max = 16 * 1024;
        let (bodies, too_large) = encode_envelope_frames(env.clone(), max, true);
        assert_eq!(too_large.len(), 1);
        assert_eq!(too_large[0].0, 99);
        assert!(bodies.len() > 2);
        let mut joined = Envelope {
            from: 1,
            to: 2,
            ..Default::default()
        };
        for b in &bodies {
            assert!(b.len() <= max, "{} > {max}", b.len());
            let part = decode_envelope(&b.to_bytes()).unwrap();
            assert_eq!((part.from, part.to), (1, 2));
            joined.heartbeats.extend(part.heartbeats);
            joined.messages.extend(part.messages);
        }
        env.messages.remove(10);
        assert_eq!(joined, env, "nothing lost, nothing reordered");
    }

    #[test]
    fn truncated_and_padded_bodies_are_refused() {
        let body = encode_envelope(sample(), true);
        for cut in 0..body.len() {
            assert!(decode_envelope(&body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut padded = body.to_vec();
        padded.push(0);
        assert!(decode_envelope(&Bytes::from(padded)).is_err());
        let mut huge_count = body.to_vec();
        huge_count[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_envelope(&Bytes::from(huge_count)).is_err());
        let mut bad_flags = body.to_vec();
        bad_flags[32] = 4;
        assert!(decode_envelope(&Bytes::from(bad_flags)).is_err());
    }

    /// Many empty messages, or one message of many empty entries, cost a few bytes each on
    /// the wire and far more decoded: both are refused past their caps, before parsing.
    #[test]
    fn amplifying_bodies_are_refused_before_they_are_parsed() {
        let head = |n_msg: u32| {
            let mut b = Vec::new();
            b.extend_from_slice(&1u64.to_be_bytes());
            b.extend_from_slice(&2u64.to_be_bytes());
            b.extend_from_slice(&0u32.to_be_bytes());
            b.extend_from_slice(&n_msg.to_be_bytes());
            b
        };
        let n = MESSAGES_PER_ENVELOPE_MAX as u32 + 1;
        let mut many = head(n);
        for _ in 0..n {
            many.extend_from_slice(&1u64.to_be_bytes());
            many.extend_from_slice(&0u32.to_be_bytes());
        }
        assert!(decode_envelope(&wrap(many)).is_err());
        // One message: ENTRIES_PER_ENVELOPE_MAX + 1 empty entries (key 0x3a, length 0).
        let entries: Vec<u8> = [0x3a, 0x00].repeat(ENTRIES_PER_ENVELOPE_MAX + 1);
        let mut one = head(1);
        one.extend_from_slice(&1u64.to_be_bytes());
        one.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        one.extend_from_slice(&entries);
        assert!(decode_envelope(&wrap(one)).is_err());
        // Just under the cap it is a valid (if odd) append.
        let entries: Vec<u8> = [0x3a, 0x00].repeat(ENTRIES_PER_ENVELOPE_MAX);
        let mut ok = head(1);
        ok.extend_from_slice(&1u64.to_be_bytes());
        ok.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        ok.extend_from_slice(&entries);
        let env = decode_envelope(&wrap(ok)).expect("at the cap");
        assert_eq!(env.messages[0].1.entries.len(), ENTRIES_PER_ENVELOPE_MAX);
    }

    /// The wire-format entry count agrees with what protobuf decodes.
    #[test]
    fn entries_are_counted_as_protobuf_decodes_them() {
        for n in [0, 1, 7] {
            let m = append(1, 2, n, 10);
            let bytes = m.write_to_bytes().unwrap();
            assert_eq!(count_entries(&bytes), Some(n));
        }
        assert_eq!(
            count_entries(&[0x3a, 0x05, 0x00]),
            None,
            "length past the end"
        );
        assert_eq!(
            count_entries(&[0x0b]),
            None,
            "group wire types are not raft's"
        );
    }

    /// Hostile input: random bytes, and valid bodies with random bytes flipped, inserted or
    /// counts set to extremes, must decode or be refused, never panic (a panic fails the
    /// test), and a decoded envelope must re-encode to something that decodes again.
    #[test]
    fn hostile_bodies_never_panic() {
        let mut rng = Rng::new(0x5eed);
        let valid = encode_envelope(sample(), true);
        let mut decoded = 0;
        for i in 0..20_000u32 {
            let bytes: Vec<u8> = if i % 4 == 0 {
                let n = rng.below(200) as usize;
                (0..n).map(|_| rng.below(256) as u8).collect()
            } else {
                let mut v = valid.to_vec();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(v.len() as u64) as usize;
                    match rng.below(3) {
                        0 => v[at] = rng.below(256) as u8,
                        1 => v[at] ^= 1 << rng.below(8),
                        _ => v.insert(at, rng.below(256) as u8),
                    }
                }
                v
            };
            if let Ok(env) = decode_envelope(&Bytes::from(bytes)) {
                decoded += 1;
                let again = encode_envelope(env.clone(), true);
                assert_eq!(decode_envelope(&again).unwrap(), env);
            }
        }
        assert!(decoded > 0, "some mutations (e.g. of a term) still decode");
    }
}
