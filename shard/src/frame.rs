//! `Frame`: one cross-shard message, an rkyv body read in place plus an optional zero-copy payload.
//!
//! The body is small structured data (a request, a reply, a table change) serialized with rkyv
//! into an aligned buffer; the receiving shard validates it and reads the archived form directly,
//! never deserializing into a copy. Record bytes do not go through rkyv at all: they travel as a
//! `bytes::Bytes` beside the body, so crossing a shard moves a refcount, not the data.

use bytes::Bytes;
use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};

use crate::error::ShardError;

/// Largest rkyv body a frame may carry. Bodies are control data; bulk bytes go in the payload.
pub const FRAME_BODY_MAX: usize = 1 << 20;

/// A message between shards. `Send`, so it can cross threads through the mesh channels.
#[derive(Clone, Default)]
pub struct Frame {
    /// Caller-chosen message kind, so a handler can pick the body type before validating it.
    tag: u16,
    body: AlignedVec,
    payload: Option<Bytes>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &self.tag)
            .field("body_len", &self.body.len())
            .field("payload_len", &self.payload.as_ref().map(Bytes::len))
            .finish()
    }
}

impl Frame {
    /// Serializes `value` as the body; `payload` rides along without being copied.
    pub fn encode<T>(value: &T, payload: Option<Bytes>) -> Result<Frame, ShardError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        Frame::encode_tagged(0, value, payload)
    }

    /// Like [`Frame::encode`], with a message kind tag the receiver can read first.
    pub fn encode_tagged<T>(
        tag: u16,
        value: &T,
        payload: Option<Bytes>,
    ) -> Result<Frame, ShardError>
    where
        T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
    {
        let body = rkyv::to_bytes::<rancor::Error>(value).map_err(|e| ShardError::Encode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        if body.len() > FRAME_BODY_MAX {
            return Err(ShardError::FrameTooLarge {
                len: body.len(),
                frame_body_max: FRAME_BODY_MAX,
            });
        }
        Ok(Frame { tag, body, payload })
    }

    /// A frame with no body, only a tag and maybe a payload (acks, raw byte handoffs).
    pub fn empty(tag: u16, payload: Option<Bytes>) -> Frame {
        Frame {
            tag,
            body: AlignedVec::new(),
            payload,
        }
    }

    /// Validates the body as an archived `T` and returns a reference into it (no copy).
    pub fn access<T>(&self) -> Result<&T::Archived, ShardError>
    where
        T: Archive,
        T::Archived: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        if self.body.len() > FRAME_BODY_MAX {
            return Err(ShardError::FrameTooLarge {
                len: self.body.len(),
                frame_body_max: FRAME_BODY_MAX,
            });
        }
        rkyv::access::<T::Archived, rancor::Error>(&self.body).map_err(|e| ShardError::Decode {
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })
    }

    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The serialized body bytes (16-byte aligned).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn payload(&self) -> Option<&Bytes> {
        self.payload.as_ref()
    }

    /// Moves the payload out, leaving none (the body stays readable).
    pub fn take_payload(&mut self) -> Option<Bytes> {
        self.payload.take()
    }
}

/// Which way an envelope travels through the mesh; see [`RouteHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RouteKind {
    /// Expects a reply with the same correlation id.
    Request = 0,
    /// Fire-and-forget; the handler's reply is dropped.
    OneWay = 1,
    /// Answer to a `Request`.
    Reply = 2,
    /// The receiver could not run its handler; the frame is empty.
    ReplyFailed = 3,
}

/// Fixed routing header in front of every frame on a mesh channel.
///
/// Not serialized: it is moved by value through the in-memory channel, so it is a plain
/// `repr(C)` struct whose size is pinned below (channel slots are preallocated per link, so
/// growing it grows every link).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct RouteHeader {
    /// Matches a reply to its pending call on the calling shard; unique per calling shard.
    pub corr_id: u64,
    /// Shard that sent this envelope.
    pub from: u16,
    pub kind: RouteKind,
    pub _reserved: [u8; 5],
}

const _: () = assert!(std::mem::size_of::<RouteHeader>() == 16);

/// What a mesh channel carries.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub header: RouteHeader,
    pub frame: Frame,
}

// Frame = tag (padded to 8) + AlignedVec (ptr, cap, len) + Option<Bytes> (4 words, niche).
const _: () = assert!(std::mem::size_of::<Frame>() == 64);
const _: () = assert!(std::mem::size_of::<Envelope>() == 80);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, Debug, PartialEq)]
    struct ProduceReq {
        partition: i32,
        acks: i16,
        topic: String,
    }

    #[test]
    fn roundtrip_in_place_with_payload() {
        let payload = Bytes::from_static(b"record batch bytes");
        let req = ProduceReq {
            partition: 7,
            acks: -1,
            topic: "orders".into(),
        };
        let f = Frame::encode_tagged(3, &req, Some(payload.clone())).unwrap();
        assert_eq!(f.tag(), 3);
        assert_eq!(f.body().as_ptr() as usize % 16, 0);
        let a = f.access::<ProduceReq>().unwrap();
        assert_eq!(a.partition, 7);
        assert_eq!(a.acks, -1);
        assert_eq!(a.topic.as_str(), "orders");
        // Same allocation: the payload was not copied.
        assert_eq!(f.payload().unwrap().as_ptr(), payload.as_ptr());
    }

    #[test]
    fn garbage_body_is_an_error_not_a_panic() {
        let f = Frame::empty(1, None);
        assert!(matches!(
            f.access::<ProduceReq>(),
            Err(ShardError::Decode { .. })
        ));
        let wrong = Frame::encode(&5u8, None).unwrap();
        assert!(wrong.access::<ProduceReq>().is_err());
    }

    #[test]
    fn oversize_body_is_rejected() {
        let big = vec![0u8; FRAME_BODY_MAX + 1];
        assert!(matches!(
            Frame::encode(&big, None),
            Err(ShardError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn frame_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Frame>();
        is_send::<Envelope>();
    }
}
