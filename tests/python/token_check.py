"""Delegation tokens (KIP-48) against a real broker, over raw Kafka requests (no Python
client has the token APIs): CreateDelegationToken v3, RenewDelegationToken v2,
ExpireDelegationToken v2 and DescribeDelegationToken v3 from SASL/PLAIN-authenticated
connections, with Kafka's answers: the HMAC is HMAC-SHA512 of the token id under the
secret, lifetimes follow the broker's settings, renewers and owners are checked, token
requests on a plaintext listener are refused; a token logs in with SCRAM and Kafka's
`tokenauth=true` extension as its owner, and such a connection may not ask for tokens.

Usage: token_check.py --sasl HOST:PORT --plain HOST:PORT --secret KEY
                      --phase create|persisted|disabled
(`create` expects --delegation-token-expiry-time-ms 60000,
--delegation-token-max-lifetime-ms 3600000, the ACL authorizer with super user admin, and
users admin and bob with passwords NAME-secret). Exits non-zero with the reason on a failed check.
"""

import argparse
import base64
import hashlib
import hmac as hmaclib
import os
import struct
import time

import kafka_wire
from kafka_wire import cbytes, cstr, uvarint

CREATE, RENEW, EXPIRE, DESCRIBE = 38, 39, 40, 41
HANDSHAKE, AUTHENTICATE = 17, 36


class Conn(kafka_wire.Conn):
    def plain(self, user, password):
        r = self.call(HANDSHAKE, 1, struct.pack(">h", 5) + b"PLAIN", flexible=False)
        assert r.i16() == 0
        token = f"\0{user}\0{password}".encode()
        r = self.call(AUTHENTICATE, 2, cbytes(token) + b"\0")
        assert r.i16() == 0, f"authenticating {user}"
        return self

    def scram_token(self, token_id, hmac_bytes, bits=256):
        """SCRAM-SHA-256/512 with Kafka's tokenauth extension: the error code of the last
        step and the session lifetime it gave."""
        mechanism = f"SCRAM-SHA-{bits}".encode()
        digest = {256: hashlib.sha256, 512: hashlib.sha512}[bits]
        r = self.call(HANDSHAKE, 1, struct.pack(">h", len(mechanism)) + mechanism,
                      flexible=False)
        assert r.i16() == 0
        password = base64.b64encode(hmac_bytes)
        nonce = base64.b64encode(os.urandom(18)).decode()
        first_bare = f"n={token_id},r={nonce},tokenauth=true"
        r = self.call(AUTHENTICATE, 2, cbytes(("n,," + first_bare).encode()) + b"\0")
        error = r.i16()
        r.cstr()
        if error:
            return error, 0
        server_first = r.cbytes().decode()
        attrs = dict(a.split("=", 1) for a in server_first.split(","))
        salted = hashlib.pbkdf2_hmac(digest().name, password, base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmaclib.new(salted, b"Client Key", digest).digest()
        stored = digest(client_key).digest()
        without = f"c=biws,r={attrs['r']}"
        auth = f"{first_bare},{server_first},{without}".encode()
        sig = hmaclib.new(stored, auth, digest).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        final = f"{without},p={base64.b64encode(proof).decode()}".encode()
        r = self.call(AUTHENTICATE, 2, cbytes(final) + b"\0")
        error = r.i16()
        r.cstr()
        r.cbytes()
        return error, r.i64()

    def create(self, renewers=(), owner=None, max_lifetime=-1):
        body = cstr("User" if owner else None) + cstr(owner)
        body += uvarint(len(renewers) + 1)
        for t, n in renewers:
            body += cstr(t) + cstr(n) + b"\0"
        body += struct.pack(">q", max_lifetime) + b"\0"
        r = self.call(CREATE, 3, body)
        return dict(error=r.i16(), owner=(r.cstr(), r.cstr()), requester=(r.cstr(), r.cstr()),
                    issue=r.i64(), expiry=r.i64(), max=r.i64(), id=r.cstr(), hmac=r.cbytes())

    def expiry(self, api, mac, period):
        r = self.call(api, 2, cbytes(mac) + struct.pack(">q", period) + b"\0")
        return r.i16(), r.i64()

    def describe(self, owners=None):
        if owners is None:
            body = b"\0"
        else:
            body = uvarint(len(owners) + 1)
            for t, n in owners:
                body += cstr(t) + cstr(n) + b"\0"
        r = self.call(DESCRIBE, 3, body + b"\0")
        error = r.i16()
        tokens = []
        for _ in range(r.uvarint() - 1):
            t = dict(owner=(r.cstr(), r.cstr()), requester=(r.cstr(), r.cstr()),
                     issue=r.i64(), expiry=r.i64(), max=r.i64(), id=r.cstr(), hmac=r.cbytes())
            renewers = []
            for _ in range(r.uvarint() - 1):
                renewers.append((r.cstr(), r.cstr()))
                r.tags()
            t["renewers"] = renewers
            r.tags()
            tokens.append(t)
        return error, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sasl", required=True)
    ap.add_argument("--plain", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--phase", required=True)
    a = ap.parse_args()
    sign = lambda token_id: hmaclib.new(a.secret.encode(), token_id.encode(), hashlib.sha512).digest()

    admin = Conn(a.sasl).plain("admin", "admin-secret")
    if a.phase == "disabled":
        # No --delegation-token-secret-key: DELEGATION_TOKEN_AUTH_DISABLED.
        assert admin.create()["error"] == 61
        assert admin.describe() == (61, [])
        assert admin.expiry(RENEW, b"x", 1000) == (61, -1)
        print("tokens disabled")
        return
    if a.phase == "persisted":
        error, tokens = admin.describe()
        assert error == 0 and [t["owner"] for t in tokens] == [("User", "alice")], tokens
        assert tokens[0]["hmac"] == sign(tokens[0]["id"])
        assert Conn(a.sasl).scram_token(tokens[0]["id"], tokens[0]["hmac"])[0] == 0
        print("tokens persisted")
        return

    # Not on a plaintext listener (Kafka's rule: tokens need an authenticated client).
    plain = Conn(a.plain)
    assert plain.create()["error"] == 64
    assert plain.describe()[0] == 64

    t1 = admin.create(renewers=[("User", "bob")])
    assert t1["error"] == 0, t1
    assert t1["owner"] == ("User", "admin") and t1["requester"] == ("User", "admin"), t1
    assert len(t1["id"]) == 22 and t1["hmac"] == sign(t1["id"]), t1
    assert t1["expiry"] - t1["issue"] == 60000 and t1["max"] - t1["issue"] == 3600000, t1
    assert abs(t1["issue"] - time.time() * 1000) < 60000, t1
    # A shorter max lifetime asked for is taken; renewers must be users.
    short = admin.create(max_lifetime=5000)
    assert short["max"] - short["issue"] == 5000 and short["expiry"] == short["max"], short
    assert admin.create(renewers=[("Group", "g")])["error"] == 67
    # For another owner (v3): admin is a super user; bob lacks CREATE_TOKENS on User:alice.
    bob = Conn(a.sasl).plain("bob", "bob-secret")
    assert bob.create(owner="alice")["error"] == 65
    t2 = admin.create(owner="alice")
    assert t2["error"] == 0 and t2["owner"] == ("User", "alice"), t2
    assert t2["requester"] == ("User", "admin"), t2

    error, tokens = admin.describe()
    assert error == 0 and {t["id"] for t in tokens} == {t1["id"], short["id"], t2["id"]}, tokens
    described = next(t for t in tokens if t["id"] == t1["id"])
    assert described["renewers"] == [("User", "bob")] and described["hmac"] == t1["hmac"]
    assert admin.describe(owners=[])[1] == []
    assert admin.describe(owners=[("User", "nobody")])[1] == []
    assert {t["id"] for t in admin.describe(owners=[("User", "alice")])[1]} == {t2["id"]}

    # Renew: by the owner, within the max; by a renewer; not by anyone else.
    error, expiry = admin.expiry(RENEW, t1["hmac"], 1000)
    assert error == 0 and 0 <= expiry - time.time() * 1000 <= 1000 + 5000, (error, expiry)
    assert admin.expiry(RENEW, b"not a token", 1000) == (62, -1)
    assert bob.expiry(RENEW, t1["hmac"], -1)[0] == 0
    assert bob.expiry(RENEW, t2["hmac"], -1)[0] == 63
    # bob sees the token he may renew, not the others (no DESCRIBE on them).
    assert [t["id"] for t in bob.describe()[1]] == [t1["id"]]

    # Expire: at once with a negative period; then it is gone.
    error, expiry = admin.expiry(EXPIRE, t1["hmac"], -1)
    assert error == 0, error
    assert admin.expiry(EXPIRE, short["hmac"], -1)[0] == 0
    assert admin.expiry(RENEW, t1["hmac"], 1000) == (62, -1)
    assert [t["id"] for t in admin.describe()[1]] == [t2["id"]]

    # Logging in with a token (SCRAM, tokenauth=true): the owner's principal, and no token
    # requests from such a connection.
    as_alice = Conn(a.sasl)
    error, lifetime = as_alice.scram_token(t2["id"], t2["hmac"])
    # The session ends with the token (which expires a minute after it was made).
    assert error == 0 and 0 < lifetime <= 60000, (error, lifetime)
    assert Conn(a.sasl).scram_token(t2["id"], t2["hmac"], bits=512)[0] == 0
    assert as_alice.create()["error"] == 64
    assert as_alice.describe()[0] == 64
    assert as_alice.expiry(RENEW, t2["hmac"], 1000) == (64, -1)
    # A removed token, or a wrong HMAC, does not log in (SASL_AUTHENTICATION_FAILED).
    assert Conn(a.sasl).scram_token(t1["id"], t1["hmac"])[0] == 58
    assert Conn(a.sasl).scram_token(t2["id"], b"wrong")[0] == 58
    print("token checks passed")


if __name__ == "__main__":
    main()
