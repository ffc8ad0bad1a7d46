"""Kafka wire helpers for the raw-request test scripts (token_check.py, telemetry_check.py,
perf/telemetry-push-cost.py): unsigned varints, compact strings and bytes, a reader of
responses, and a connection that sends a request and reads its response.
"""

import socket
import struct


def uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


class Reader:
    def __init__(self, data):
        self.d, self.p = data, 0

    def take(self, n):
        v = self.d[self.p:self.p + n]
        self.p += n
        return v

    def uvarint(self):
        n = shift = 0
        while True:
            b = self.d[self.p]
            self.p += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def cstr(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def cbytes(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1)

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def cstr(s):
    if s is None:
        return b"\0"
    b = s.encode()
    return uvarint(len(b) + 1) + b


def cbytes(b):
    return uvarint(len(b) + 1) + b


class Conn:
    """A connection to the Kafka listener at `addr` (`host:port`, or a bootstrap list whose
    first entry is used), sending requests with client id `client_id`."""

    def __init__(self, addr, client_id="tc", timeout=15):
        host, port = addr.split(",")[0].rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.client_id = client_id.encode()
        self.corr = 0

    def call(self, api, version, body, flexible=True):
        """Sends one request (header v2 when `flexible`, else v1) and reads its response:
        a Reader past the response header."""
        self.corr += 1
        header = struct.pack(">hhih", api, version, self.corr, len(self.client_id))
        header += self.client_id
        if flexible:
            header += b"\0"
        msg = header + body
        self.s.sendall(struct.pack(">i", len(msg)) + msg)
        size = struct.unpack(">i", self.recv(4))[0]
        r = Reader(self.recv(size))
        assert r.i32() == self.corr
        if flexible:
            r.tags()
        return r

    def recv(self, n):
        out = b""
        while len(out) < n:
            chunk = self.s.recv(n - len(out))
            if not chunk:
                raise AssertionError("the broker closed the connection")
            out += chunk
        return out
