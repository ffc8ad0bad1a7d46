#!/usr/bin/env python3
"""New authenticated connections per second (issue 14's SASL handshake benchmark).

Starts one broker (`target/release/sluice`, one shard, unpinned) with a plaintext and a
`sasl_plaintext` listener and a SCRAM user for each mechanism, then for each mode opens
CONNECTIONS connections from WORKERS processes, each connection doing the whole exchange
and closing: `plaintext` (ApiVersions only, the baseline), `PLAIN`, `SCRAM-SHA-256` and
`SCRAM-SHA-512` (4096 iterations). It prints connections per second and the broker's CPU
milliseconds per connection (utime + stime from /proc) as a markdown table:

    tests/.venv/bin/python perf/sasl-rate.py [--connections 2000] [--workers 2]

The client caches each user's salted password (real clients derive it per connection);
that keeps the client's PBKDF2 off the shared 2-core host so the broker's cost shows. The
broker runs PBKDF2 for PLAIN (it checks a password against the stored SCRAM credential)
and only HMACs for SCRAM (it stores the derived keys).
"""

import argparse
import base64
import hashlib
import hmac
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

from perfutil import free_port, cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
PASSWORD = "bench-secret"
MODES = ["plaintext", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def call(s, api_key, version, corr, body):
    """One request (header v1) and its response body after the correlation id."""
    req = struct.pack(">hhih", api_key, version, corr, 1) + b"b" + body
    s.sendall(struct.pack(">i", len(req)) + req)
    n = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, n)[4:]


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def authenticate(s, token):
    """SaslAuthenticate v1: (error code, auth bytes)."""
    r = call(s, 36, 1, 2, struct.pack(">i", len(token)) + token)
    code = struct.unpack(">h", r[:2])[0]
    mlen = struct.unpack(">h", r[2:4])[0]
    at = 4 + max(mlen, 0)
    blen = struct.unpack(">i", r[at:at + 4])[0]
    return code, r[at + 4:at + 4 + max(blen, 0)]


def scram(s, mechanism, user, cache):
    h = hashlib.sha256 if mechanism == "SCRAM-SHA-256" else hashlib.sha512
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n={user},r={nonce}"
    code, server_first = authenticate(s, f"n,,{first_bare}".encode())
    assert code == 0, code
    attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
    salt, iterations = base64.b64decode(attrs["s"]), int(attrs["i"])
    key = (mechanism, salt, iterations)
    if key not in cache:
        cache[key] = hashlib.pbkdf2_hmac(h().name, PASSWORD.encode(), salt, iterations)
    salted = cache[key]
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = h(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first.decode()},{final_bare}".encode()
    signature = hmac.new(stored, auth_message, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    code, _ = authenticate(s, f"{final_bare},p={base64.b64encode(proof).decode()}".encode())
    assert code == 0, code


def worker(args):
    mode, n, plain_port, sasl_port = args
    cache = {}
    user = "bench" if mode in ("plaintext", "PLAIN") else mode.lower().replace("-", "")
    for i in range(n):
        port = plain_port if mode == "plaintext" else sasl_port
        with socket.create_connection(("127.0.0.1", port)) as s:
            if mode == "plaintext":
                call(s, 18, 0, i, b"")
                continue
            mechanism = mode
            r = call(s, 17, 1, 1, struct.pack(">h", len(mechanism)) + mechanism.encode())
            assert struct.unpack(">h", r[:2])[0] == 0
            if mode == "PLAIN":
                code, _ = authenticate(s, f"\0{user}\0{PASSWORD}".encode())
                assert code == 0, code
            else:
                scram(s, mode, user, cache)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="sluice-sasl-rate-")
    broker = None
    try:
        data = os.path.join(work, "data")
        for mech, user in [("SCRAM-SHA-256", "bench"), ("SCRAM-SHA-256", "scramsha256"),
                           ("SCRAM-SHA-512", "scramsha512")]:
            subprocess.run([SLUICE, "users", "add", "--data-dir", data, "--mechanism", mech,
                            "--name", user, "--password", PASSWORD],
                           check=True, capture_output=True)
        plain_port, sasl_port = free_port(), free_port()
        broker = subprocess.Popen(
            [SLUICE, "start", "--data-dir", data, "--shards", "1", "--no-pin", "--listen",
             f"127.0.0.1:{plain_port},sasl_plaintext://127.0.0.1:{sasl_port}"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "broker.log"), "w"))
        while not broker.stdout.readline().startswith(b"sluice: ready"):
            if broker.poll() is not None:
                sys.exit("the broker did not start")
        rows = []
        per = a.connections // a.workers
        with multiprocessing.Pool(a.workers) as pool:
            for mode in MODES:
                pool.map(worker, [(mode, 20, plain_port, sasl_port)] * a.workers)  # warm-up
                c0, t0 = cpu_seconds(broker.pid), time.monotonic()
                done = sum(pool.map(worker, [(mode, per, plain_port, sasl_port)] * a.workers))
                c1, t1 = cpu_seconds(broker.pid), time.monotonic()
                rows.append((mode, done / (t1 - t0), (c1 - c0) * 1000 / done))
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"{a.connections} connections per mode from {a.workers} client processes, "
          "one broker shard\n")
    print("| mode | connections/s | broker CPU ms per connection |")
    print("| --- | --- | --- |")
    for mode, rate, cpu in rows:
        print(f"| {mode} | {rate:.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()
