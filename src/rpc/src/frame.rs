//! The frame layer of the node-to-node protocol (layout in the crate header): header encode
//! and checks, the bodies of `Hello`, `Request` and `Response`, and an incremental frame
//! reader over any `AsyncRead` that never trusts a declared length.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncReadExt};

use crate::NodeId;

/// First bytes of every frame: "SLRP" (sluice rpc). A peer speaking anything else (a Kafka
/// client on the wrong port, a port scanner) is closed at its first header.
pub const MAGIC: u32 = u32::from_be_bytes(*b"SLRP");
/// Layout version of the frame header itself. A different header layout gets a new value;
/// what the bodies mean is versioned separately, by the range negotiated in `Hello`.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 24;
/// Body versions this build speaks (negotiated in `Hello`: the highest both sides know).
/// Version 2: `Raft` bodies carry Kafka batches beside the envelope, outside the frame CRC
/// (version 1 had them inside). No release spoke version 1, so it is not kept.
pub const PROTOCOL_VERSION_MIN: u16 = 2;
pub const PROTOCOL_VERSION_MAX: u16 = 2;
/// Longest cluster id in `Hello` (Kafka's are 22-character base64 UUIDs).
pub const CLUSTER_ID_MAX: usize = 255;
/// Largest `Hello` body: the only frame a connection accepts before its handshake, so an
/// unidentified peer can make us buffer no more than this.
pub const HELLO_BODY_MAX: usize = HELLO_FIXED_LEN + CLUSTER_ID_MAX;
/// Bytes of a `Hello` body before the cluster id's bytes.
const HELLO_FIXED_LEN: usize = 2 + 2 + 8 + 8 + 16 + 16 + 2;
/// A data directory id (see [`Hello::directory`]); all zeros means none or unknown.
pub type DirectoryId = [u8; 16];

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// 16 bytes as Kafka prints a `Uuid`: 22 characters of URL-safe base64 without padding.
pub fn uuid_to_base64(b: &[u8; 16]) -> String {
    let mut out = String::with_capacity(22);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(BASE64_ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The inverse of [`uuid_to_base64`]; `None` for anything it would not print.
pub fn uuid_from_base64(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 22 {
        return None;
    }
    let mut out = [0u8; 16];
    for (k, chunk) in s.chunks(4).enumerate() {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = BASE64_ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        for i in 0..bytes {
            out[3 * k + i] = (n >> (16 - 8 * i)) as u8;
        }
    }
    // The last character carries 4 unused bits: they must be 0, so each id has one form.
    (uuid_to_base64(&out).as_bytes() == s).then_some(out)
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The handshake, first frame each way.
    Hello = 1,
    /// A `sluice_raft::Envelope` (correlation id 0).
    Raft = 2,
    /// A request to be answered by a `Response` with the same correlation id.
    Request = 3,
    Response = 4,
    /// Liveness probe from the dialing side; the other side answers `Pong` with the same
    /// correlation id. Both have empty bodies.
    Ping = 5,
    Pong = 6,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Raft,
            3 => Kind::Request,
            4 => Kind::Response,
            5 => Kind::Ping,
            6 => Kind::Pong,
            _ => return None,
        })
    }
}

/// Why a frame was refused: every one closes the connection.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    BadMagic(u32),
    BadFormatVersion(u8),
    UnknownKind(u8),
    /// The reserved header bytes were not zero.
    Reserved(u16),
    TooLarge {
        len: usize,
        max: usize,
    },
    BadCrc {
        expected: u32,
        actual: u32,
    },
    /// A body that does not decode as its kind says.
    BadBody(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::BadMagic(m) => write!(f, "bad magic {m:#010x} (not a sluice rpc peer)"),
            FrameError::BadFormatVersion(v) => write!(f, "unknown frame format version {v}"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::Reserved(r) => write!(f, "reserved header bits set ({r:#06x})"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes is over the limit of {max}")
            }
            FrameError::BadCrc { expected, actual } => {
                write!(
                    f,
                    "body CRC32C {actual:#010x} does not match header {expected:#010x}"
                )
            }
            FrameError::BadBody(what) => write!(f, "malformed body: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// The fixed header, decoded and checked (except the CRC, which needs the body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub correlation: u64,
    pub len: usize,
    pub crc: u32,
}

impl Header {
    /// Decodes and checks a header against `max_body` (the caller's limit for this point of
    /// the connection). Nothing is allocated here: the caller reads the body only once the
    /// declared length passed.
    pub fn decode(b: &[u8; HEADER_LEN], max_body: usize) -> Result<Header, FrameError> {
        let mut b = &b[..];
        let magic = b.get_u32();
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let format = b.get_u8();
        if format != FORMAT_VERSION {
            return Err(FrameError::BadFormatVersion(format));
        }
        let kind_byte = b.get_u8();
        let kind = Kind::from_u8(kind_byte).ok_or(FrameError::UnknownKind(kind_byte))?;
        let reserved = b.get_u16();
        if reserved != 0 {
            return Err(FrameError::Reserved(reserved));
        }
        let correlation = b.get_u64();
        let len = b.get_u32() as usize;
        let crc = b.get_u32();
        if len > max_body {
            return Err(FrameError::TooLarge { len, max: max_body });
        }
        Ok(Header {
            kind,
            correlation,
            len,
            crc,
        })
    }
}

/// One frame: kind, correlation id and body; the header is derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub correlation: u64,
    /// The body, or on a frame being sent, the part of it the CRC covers.
    pub body: Bytes,
    /// On a frame being sent: the rest of the body, outside the CRC (a `Raft` frame's
    /// batches, see [`crate::envelope`]), written as it is. A received frame's body is
    /// whole in `body`.
    pub beside: Vec<Bytes>,
}

/// How many leading bytes of a received body of `kind` the header's CRC covers: all of
/// it, except a `Raft` body, which says (the batches after that part carry their own CRCs).
fn crc_covered(kind: Kind, body: &[u8]) -> Result<usize, FrameError> {
    match kind {
        Kind::Raft => crate::envelope::covered_len(body)
            .ok_or(FrameError::BadBody("raft body's covered length")),
        _ => Ok(body.len()),
    }
}

impl Frame {
    pub fn new(kind: Kind, correlation: u64, body: Bytes) -> Frame {
        Frame {
            kind,
            correlation,
            body,
            beside: Vec::new(),
        }
    }

    /// A `Raft` frame of an encoded envelope body.
    pub fn raft(body: crate::envelope::RaftBody) -> Frame {
        Frame {
            kind: Kind::Raft,
            correlation: 0,
            body: body.covered,
            beside: body.batches,
        }
    }

    /// Bytes of the body on the wire.
    pub fn body_len(&self) -> usize {
        self.body.len() + self.beside.iter().map(Bytes::len).sum::<usize>()
    }

    /// The encoded header. The body must fit the `u32` length field (every sender keeps
    /// bodies within [`crate::RPC_FRAME_MAX`], far below it).
    pub fn header(&self) -> [u8; HEADER_LEN] {
        debug_assert!(
            self.beside.is_empty() || self.kind == Kind::Raft,
            "only raft bodies have bytes outside the CRC"
        );
        let len = u32::try_from(self.body_len()).expect("frame body within u32");
        let mut h = [0u8; HEADER_LEN];
        let mut w = &mut h[..];
        w.put_u32(MAGIC);
        w.put_u8(FORMAT_VERSION);
        w.put_u8(self.kind as u8);
        w.put_u16(0);
        w.put_u64(self.correlation);
        w.put_u32(len);
        w.put_u32(crc32c::crc32c(&self.body));
        h
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Header and body in one buffer (tests and small frames).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.wire_len());
        b.put_slice(&self.header());
        b.put_slice(&self.body);
        for part in &self.beside {
            b.put_slice(part);
        }
        b.freeze()
    }
}

/// The body buffer's first size, at most: a Raft append of raft-rs's 1 MiB message size
/// arrives in one read buffer, without growing (each growth copies what arrived).
const BODY_FIRST_MAX: usize = 1 << 20;
/// Smallest step the body buffer grows by while a body arrives.
const BODY_GROWTH_MIN: usize = 64 * 1024;

/// Reads one frame whose body may be up to `max_body` bytes. `Ok(None)` is a clean end of
/// stream at a frame boundary. The body buffer starts at no more than [`BODY_FIRST_MAX`]
/// and then grows with the bytes that actually arrive (at most doubling), never to the
/// declared length up front, so a peer that declares a large frame and stalls holds no more
/// memory than it sent (or the first step, whichever is more).
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_body: usize,
) -> Result<Option<Frame>, FrameError> {
    let mut h = [0u8; HEADER_LEN];
    // The first byte separately: EOF there is a clean close, anywhere else truncation.
    let n = r.read(&mut h[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut h[1..]).await?;
    let header = Header::decode(&h, max_body)?;
    // The first step from the allocator's zeroed memory, which it need not clear again when
    // it comes fresh from the OS (`resize` would always write the zeros).
    let mut body = BytesMut::zeroed(header.len.min(BODY_FIRST_MAX));
    r.read_exact(&mut body).await?;
    while body.len() < header.len {
        let start = body.len();
        let step = (header.len - start).min(start.max(BODY_GROWTH_MIN));
        body.resize(start + step, 0);
        r.read_exact(&mut body[start..]).await?;
    }
    let covered = crc_covered(header.kind, &body)?;
    let actual = crc32c::crc32c(&body[..covered]);
    if actual != header.crc {
        return Err(FrameError::BadCrc {
            expected: header.crc,
            actual,
        });
    }
    Ok(Some(Frame::new(
        header.kind,
        header.correlation,
        body.freeze(),
    )))
}

/// The handshake, first frame each way. The dialer says who it is and whom it means to
/// reach; the listener checks, then answers with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub version_min: u16,
    pub version_max: u16,
    /// The sender's node id (never 0).
    pub node_id: NodeId,
    /// The node id the sender believes the receiver has (0: no expectation).
    pub peer_id: NodeId,
    /// The id of the sender's data directory (zeros: none, as in tests without one). A
    /// node whose directory was wiped comes back with a new id, which its peers, knowing
    /// the old one from its registration, refuse (see the crate header).
    pub directory: DirectoryId,
    /// The directory id the sender knows the receiver by (zeros: it knows none).
    pub peer_directory: DirectoryId,
    /// Must be equal on both sides (empty until the controller assigns one).
    pub cluster_id: String,
}

impl Hello {
    pub fn new(node_id: NodeId, peer_id: NodeId, cluster_id: &str) -> Hello {
        Hello {
            version_min: PROTOCOL_VERSION_MIN,
            version_max: PROTOCOL_VERSION_MAX,
            node_id,
            peer_id,
            directory: [0; 16],
            peer_directory: [0; 16],
            cluster_id: cluster_id.to_owned(),
        }
    }

    /// The same with the directory ids set.
    pub fn with_directories(mut self, directory: DirectoryId, peer: DirectoryId) -> Hello {
        self.directory = directory;
        self.peer_directory = peer;
        self
    }

    pub fn encode(&self) -> Bytes {
        assert!(
            self.cluster_id.len() <= CLUSTER_ID_MAX,
            "cluster id too long"
        );
        let mut b = BytesMut::with_capacity(HELLO_FIXED_LEN + self.cluster_id.len());
        b.put_u16(self.version_min);
        b.put_u16(self.version_max);
        b.put_u64(self.node_id);
        b.put_u64(self.peer_id);
        b.put_slice(&self.directory);
        b.put_slice(&self.peer_directory);
        b.put_u16(self.cluster_id.len() as u16);
        b.put_slice(self.cluster_id.as_bytes());
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<Hello, FrameError> {
        if b.len() < HELLO_FIXED_LEN {
            return Err(FrameError::BadBody("hello too short"));
        }
        let version_min = b.get_u16();
        let version_max = b.get_u16();
        let node_id = b.get_u64();
        let peer_id = b.get_u64();
        let mut directory = [0; 16];
        b.copy_to_slice(&mut directory);
        let mut peer_directory = [0; 16];
        b.copy_to_slice(&mut peer_directory);
        let n = b.get_u16() as usize;
        if n > CLUSTER_ID_MAX || b.len() != n {
            return Err(FrameError::BadBody("hello cluster id length"));
        }
        let cluster_id = std::str::from_utf8(b)
            .map_err(|_| FrameError::BadBody("hello cluster id is not UTF-8"))?
            .to_owned();
        if version_min > version_max {
            return Err(FrameError::BadBody("hello version range is empty"));
        }
        Ok(Hello {
            version_min,
            version_max,
            node_id,
            peer_id,
            directory,
            peer_directory,
            cluster_id,
        })
    }

    /// The protocol version both ends speak: the highest in both ranges, if any.
    pub fn agree(&self, other: &Hello) -> Option<u16> {
        let v = self.version_max.min(other.version_max);
        (v >= self.version_min.max(other.version_min)).then_some(v)
    }
}

/// Status of a [`Response`]. Values below 100 are the transport's; the owner's handler
/// uses its own from [`status::APP_MIN`] on.
pub mod status {
    /// Handled; the body is the handler's answer.
    pub const OK: u16 = 0;
    /// The receiving connection already runs [`crate::REQUESTS_IN_FLIGHT_MAX`] requests
    /// (the sender's own limit keeps a well-behaved peer under it): not handled, retry.
    pub const BUSY: u16 = 1;
    /// No handler for this method.
    pub const UNKNOWN_METHOD: u16 = 2;
    /// The receiver is shutting down: not handled.
    pub const SHUTTING_DOWN: u16 = 3;
    /// The handler's answer was larger than a frame may carry: not sent.
    pub const TOO_LARGE: u16 = 4;
    /// First status value free for the owner's handler.
    pub const APP_MIN: u16 = 100;
}

/// A request's body: the method (what the owner's handler should do) and its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: u16,
    pub body: Bytes,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Request {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.body.len());
        b.put_u16(self.method);
        b.put_slice(&self.body);
        b.freeze()
    }

    /// Decodes without copying: the argument shares the frame's body.
    pub fn decode(body: &Bytes) -> Result<Request, FrameError> {
        if body.len() < 2 {
            return Err(FrameError::BadBody("request too short"));
        }
        Ok(Request {
            method: u16::from_be_bytes([body[0], body[1]]),
            body: body.slice(2..),
        })
    }
}

impl Response {
    pub fn ok(body: Bytes) -> Response {
        Response {
            status: status::OK,
            body,
        }
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.body.len());
        b.put_u16(self.status);
        b.put_slice(&self.body);
        b.freeze()
    }

    pub fn decode(body: &Bytes) -> Result<Response, FrameError> {
        if body.len() < 2 {
            return Err(FrameError::BadBody("response too short"));
        }
        Ok(Response {
            status: u16::from_be_bytes([body[0], body[1]]),
            body: body.slice(2..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Option<Frame>, String>> {
        futures_lite::future::block_on(async {
            let mut r = futures_lite::io::Cursor::new(bytes.to_vec());
            let mut out = Vec::new();
            loop {
                match read_frame(&mut r, max).await {
                    Ok(Some(f)) => out.push(Ok(Some(f))),
                    Ok(None) => {
                        out.push(Ok(None));
                        break;
                    }
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        break;
                    }
                }
            }
            out
        })
    }

    #[test]
    fn frames_round_trip() {
        let a = Frame::new(Kind::Raft, 0, Bytes::from_static(b"\0\0\0\x08envelope"));
        let b = Frame::new(Kind::Request, 42, Bytes::from(vec![7u8; 300_000]));
        let c = Frame::new(Kind::Ping, 3, Bytes::new());
        let mut wire = Vec::new();
        for f in [&a, &b, &c] {
            wire.extend_from_slice(&f.encode());
        }
        let got = read_all(&wire, 1 << 20);
        assert_eq!(
            got,
            vec![Ok(Some(a)), Ok(Some(b)), Ok(Some(c)), Ok(None)],
            "three frames then a clean end"
        );
    }

    /// A `Raft` frame's CRC covers what its body's first field says, not the batches after
    /// it (the envelope decoder checks those by their own CRCs).
    #[test]
    fn raft_frames_are_checked_up_to_their_covered_length() {
        let f = Frame {
            kind: Kind::Raft,
            correlation: 0,
            body: Bytes::from_static(b"\0\0\0\x03env"),
            beside: vec![Bytes::from_static(b"batch one"), Bytes::from_static(b"two")],
        };
        let wire = f.encode();
        assert_eq!(wire.len(), f.wire_len());
        let whole = Frame::new(
            Kind::Raft,
            0,
            Bytes::from_static(b"\0\0\0\x03envbatch onetwo"),
        );
        assert_eq!(read_all(&wire, 1 << 20), vec![Ok(Some(whole)), Ok(None)]);
        let mut beside_flipped = wire.to_vec();
        *beside_flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(read_all(&beside_flipped, 1 << 20)[0], Ok(Some(_))));
        let mut covered_flipped = wire.to_vec();
        covered_flipped[HEADER_LEN + 5] ^= 1;
        assert!(read_all(&covered_flipped, 1 << 20)[0]
            .as_ref()
            .is_err_and(|e| e.contains("CRC")));
        let mut overlong = wire.to_vec();
        overlong[HEADER_LEN + 3] = 200;
        assert!(read_all(&overlong, 1 << 20)[0]
            .as_ref()
            .is_err_and(|e| e.contains("covered length")));
    }

    #[test]
    fn bad_frames_are_refused() {
        let good = Frame::new(Kind::Request, 1, Bytes::from_static(b"abcdef")).encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                {
                    let mut w = good.to_vec();
                    w[0] = b'X';
                    w
                },
                "bad magic",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[4] = 9;
                    w
                },
                "format version",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[5] = 0;
                    w
                },
                "unknown frame kind 0",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[5] = 200;
                    w
                },
                "unknown frame kind 200",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[7] = 1;
                    w
                },
                "reserved",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[HEADER_LEN] ^= 1;
                    w
                },
                "CRC32C",
            ),
            (
                {
                    let mut w = good.to_vec();
                    w[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
                    w
                },
                "over the limit",
            ),
            (good[..10].to_vec(), "unexpected end of file"),
            (good[..HEADER_LEN + 2].to_vec(), "unexpected end of file"),
        ];
        for (wire, why) in cases {
            let got = read_all(&wire, 1024);
            match got.last() {
                Some(Err(e)) => assert!(e.contains(why), "{why}: {e}"),
                other => panic!("{why}: expected an error, got {other:?}"),
            }
        }
        // The limit is the caller's: the same frame passes a larger one.
        assert!(matches!(read_all(&good, 6)[0], Ok(Some(_))));
        assert!(read_all(&good, 5)[0]
            .as_ref()
            .unwrap_err()
            .contains("over the limit of 5"));
    }

    #[test]
    fn base64_round_trips_and_has_one_form() {
        for id in [[0u8; 16], [0xff; 16], *b"0123456789abcdef"] {
            let s = uuid_to_base64(&id);
            assert_eq!(s.len(), 22);
            assert_eq!(uuid_from_base64(&s), Some(id));
        }
        // Kafka's printing of a known UUID (Uuid.toString is URL-safe base64, no padding).
        assert_eq!(uuid_to_base64(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(uuid_from_base64("AAAAAAAAAAAAAAAAAAAAAB"), None); // unused bits set
        assert_eq!(uuid_from_base64("AAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(uuid_from_base64("AAAAAAAAAAAAAAAAAAAA+A"), None);
    }

    #[test]
    fn hello_round_trip_and_agreement() {
        let h = Hello::new(3, 1, "cluster-x").with_directories([7; 16], [9; 16]);
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        assert!(h.encode().len() <= HELLO_BODY_MAX);
        let long = Hello::new(3, 1, &"c".repeat(CLUSTER_ID_MAX));
        assert_eq!(long.encode().len(), HELLO_BODY_MAX);
        let other = Hello {
            version_min: 1,
            version_max: 4,
            ..h.clone()
        };
        assert_eq!(h.agree(&other), Some(PROTOCOL_VERSION_MAX));
        let newer = Hello {
            version_min: PROTOCOL_VERSION_MAX + 1,
            version_max: PROTOCOL_VERSION_MAX + 3,
            ..h.clone()
        };
        assert_eq!(h.agree(&newer), None);
        // Version 1 carried batches inside the envelope: a node speaking only it is refused.
        let v1 = Hello {
            version_min: 1,
            version_max: 1,
            ..h.clone()
        };
        assert_eq!(h.agree(&v1), None);
        for bad in [&b""[..], &[0u8; 53][..], &h.encode()[..55]] {
            assert!(Hello::decode(bad).is_err());
        }
        let mut trailing = h.encode().to_vec();
        trailing.push(0);
        assert!(Hello::decode(&trailing).is_err());
        let mut bad_utf8 = Hello::new(1, 2, "ab").encode().to_vec();
        bad_utf8[HELLO_FIXED_LEN] = 0xff;
        assert!(Hello::decode(&bad_utf8).is_err());
    }

    #[test]
    fn request_and_response_bodies() {
        let r = Request {
            method: 7,
            body: Bytes::from_static(b"arg"),
        };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let s = Response {
            status: status::APP_MIN,
            body: Bytes::new(),
        };
        assert_eq!(Response::decode(&s.encode()).unwrap(), s);
        assert!(Request::decode(&Bytes::from_static(b"x")).is_err());
        assert!(Response::decode(&Bytes::new()).is_err());
    }
}
