//! Response frames that do not copy their large byte fields: the frame comes out as a list
//! of buffers in which each spliced field (a fetch's records) is the very `Bytes` the
//! caller handed in, ready for one vectored socket write.
//!
//! The generated encoders write a bytes field with a single `put_slice` of the whole value.
//! [`SplicingBuf`] recognises a slice that *is* one of the caller's buffers (same address,
//! same length) and, instead of copying it, closes the bytes written so far as one part and
//! appends the caller's buffer as the next. Everything else is written into one growing
//! head buffer, so small fields cost what they cost before.

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::Encodable;

use crate::error::CodecError;
use crate::frame::encode_frame;

/// Byte fields shorter than this are copied: a part per small field would cost more in
/// iovec entries and bookkeeping than the copy.
pub const SPLICE_BYTES_MIN: usize = 4 * 1024;

/// An encoder output that splices the caller's buffers instead of copying them.
pub struct SplicingBuf<'a> {
    /// Bytes written since the last spliced part.
    head: BytesMut,
    /// Finished parts, in order.
    parts: Vec<Bytes>,
    /// Total length of `parts`.
    parts_len: usize,
    /// Buffers that may be spliced when written whole.
    shared: &'a [Bytes],
    /// Where in `shared` the next spliced field is expected: encoders write fields in the
    /// order the caller collected them, so the lookup is one comparison, not a scan per field.
    next_shared: usize,
}

impl<'a> SplicingBuf<'a> {
    pub fn new(shared: &'a [Bytes], head_capacity: usize) -> SplicingBuf<'a> {
        SplicingBuf {
            head: BytesMut::with_capacity(head_capacity),
            parts: Vec::new(),
            parts_len: 0,
            shared,
            next_shared: 0,
        }
    }

    /// The parts, in order (empty ones left out).
    pub fn finish(mut self) -> Vec<Bytes> {
        self.close_head();
        self.parts
    }

    fn close_head(&mut self) {
        if !self.head.is_empty() {
            self.parts_len += self.head.len();
            // `split` keeps the spare capacity in `head` for what follows.
            self.parts.push(self.head.split().freeze());
        }
    }

    /// Joins everything into `head` again: the generated message encoders never seek back
    /// or patch earlier bytes, but if one did, it must see one contiguous buffer.
    fn flatten(&mut self) {
        if self.parts.is_empty() {
            return;
        }
        let mut all = BytesMut::with_capacity(self.parts_len + self.head.len());
        for p in self.parts.drain(..) {
            all.extend_from_slice(&p);
        }
        all.extend_from_slice(&self.head);
        self.parts_len = 0;
        self.head = all;
    }
}

// SAFETY: every raw-buffer method is forwarded unchanged to `head`, a `BytesMut`, whose own
// implementation upholds the trait's contract; `put_slice` only adds safe calls.
unsafe impl BufMut for SplicingBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller's guarantee for `self` is the one `head` needs: `cnt` bytes of
        // `head.chunk_mut()` were initialised.
        unsafe { self.head.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SPLICE_BYTES_MIN {
            let is_src = |b: &Bytes| b.as_ptr() == src.as_ptr() && b.len() == src.len();
            // In order first; any order still works (a scan), only slower.
            let at = match self.shared.get(self.next_shared) {
                Some(b) if is_src(b) => Some(self.next_shared),
                _ => self.shared.iter().position(is_src),
            };
            if let Some(i) = at {
                let b = self.shared[i].clone();
                self.next_shared = i + 1;
                self.close_head();
                self.parts_len += b.len();
                self.parts.push(b);
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

impl ByteBufMut for SplicingBuf<'_> {
    fn offset(&self) -> usize {
        self.parts_len + self.head.len()
    }

    fn seek(&mut self, offset: usize) {
        self.flatten();
        self.head.resize(offset, 0);
    }

    fn range(&mut self, r: std::ops::Range<usize>) -> &mut [u8] {
        self.flatten();
        &mut self.head[r]
    }
}

/// One complete response frame (size prefix, header, body) as parts, with every byte field
/// that is one of `shared` (whole) spliced in rather than copied. Same checks and errors as
/// [`crate::encode_response`].
pub fn frame_response_spliced<T: Encodable>(
    correlation_id: i32,
    response_header_version: i16,
    body: &T,
    version: i16,
    shared: &[Bytes],
) -> Result<Vec<Bytes>, CodecError> {
    // The head holds everything but the spliced buffers; most responses fit in 4 KiB.
    let mut out = SplicingBuf::new(shared, 4096);
    encode_frame(
        &mut out,
        correlation_id,
        response_header_version,
        body,
        version,
    )?;
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_response;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{ApiKey, FetchResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn response(records: &[Bytes], version: i16) -> FetchResponse {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PartitionData::default()
                    .with_partition_index(i as i32)
                    .with_high_watermark(100 + i as i64)
                    .with_records(Some(r.clone()))
            })
            .collect();
        // Only the fields each version has: the encoder refuses the others.
        let topic = if version >= 13 {
            FetchableTopicResponse::default().with_topic_id(uuid::Uuid::from_u128(5))
        } else {
            FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_static_str("t")))
        };
        FetchResponse::default()
            .with_session_id(if version >= 7 { 7 } else { 0 })
            .with_responses(vec![topic.with_partitions(partitions)])
    }

    #[test]
    fn spliced_frame_equals_the_copied_one_in_every_fetch_version() {
        let records: Vec<Bytes> = [10usize, 5000, 0, 70_000, 4096]
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8 + 1; n]))
            .collect();
        for version in 4..=ApiKey::Fetch.valid_versions().max {
            let body = response(&records, version);
            let hv = ApiKey::Fetch.response_header_version(version);
            let copied = frame_response(9, hv, &body, version).unwrap();
            let parts = frame_response_spliced(9, hv, &body, version, &records).unwrap();
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, copied[..], "fetch v{version}");
            // The three records of at least SPLICE_BYTES_MIN are the caller's own buffers.
            for r in records.iter().filter(|r| r.len() >= SPLICE_BYTES_MIN) {
                assert!(parts
                    .iter()
                    .any(|p| p.as_ptr() == r.as_ptr() && p.len() == r.len()));
            }
        }
    }

    #[test]
    fn seeking_back_joins_the_parts() {
        let big = Bytes::from(vec![7u8; SPLICE_BYTES_MIN]);
        let mut out = SplicingBuf::new(std::slice::from_ref(&big), 16);
        out.put_slice(b"ab");
        out.put_slice(&big);
        out.put_slice(b"cd");
        out.range(0..1)[0] = b'X';
        let parts = out.finish();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].len(), SPLICE_BYTES_MIN + 4);
        assert_eq!(&parts[0][..2], b"Xb");
    }
}
