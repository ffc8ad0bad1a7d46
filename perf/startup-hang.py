#!/usr/bin/env python3
"""Starts K 3-node clusters at once, over and over, and reports nodes that never get ready.

A soak for the startup hang (README, "Client suites on a cluster"): a node whose shard
slept in io_uring past a due timer never printed its ready line. Each round starts K
clusters of 3 `sluice` processes on loopback (their own data directories, 2 shards each),
waits up to --ready-wait-s for every node's ready line, then kill -9s them all. A node
that is not ready in time is reported; its stack (gdb, if installed) and logs are kept in
--out, and then the script checks whether interrupting its syscalls (SIGSTOP/SIGCONT)
releases it, which is what a lost wake-up looks like. Run it while the host is busy
(e.g. a build): the hang needed a loaded host.

    tests/.venv/bin/python perf/startup-hang.py --binary target/release/sluice \\
        --clusters 3 --rounds 500

Exit status 1 if any node hung.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--clusters", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--ready-wait-s", type=float, default=30.0)
    ap.add_argument("--out", default=None, help="where hung nodes' logs go (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="startup-hang-")
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="startup-hang-work-")
    hangs = starts = 0
    t_start = time.time()
    try:
        for rnd in range(args.rounds):
            nodes = []
            ports = free_ports(6 * args.clusters)  # all distinct within a round
            for c in range(args.clusters):
                rpc, kafka = ports[6 * c:6 * c + 3], ports[6 * c + 3:6 * c + 6]
                voters = ",".join(f"{j + 1}@127.0.0.1:{rpc[j]}" for j in range(3))
                for i in range(3):
                    d = os.path.join(work, f"c{c}n{i + 1}")
                    shutil.rmtree(d, ignore_errors=True)
                    os.makedirs(d)
                    err = open(f"{d}.log", "w")
                    p = subprocess.Popen(
                        [args.binary, "start", "--node-id", str(i + 1), "--data-dir", d,
                         "--listen", f"127.0.0.1:{kafka[i]}", "--rpc-listen",
                         f"127.0.0.1:{rpc[i]}", "--voters", voters, "--shards", "2"],
                        stdout=subprocess.PIPE, stderr=err,
                        env=dict(os.environ, SLUICE_LOG="debug"))
                    os.set_blocking(p.stdout.fileno(), False)
                    nodes.append({"c": c, "i": i + 1, "p": p, "d": d, "out": b""})
                    starts += 1

            def ready(n):
                try:
                    chunk = n["p"].stdout.read()
                except OSError:
                    chunk = None
                if chunk:
                    n["out"] += chunk
                return b"ready" in n["out"]

            t0 = time.time()
            pending = list(nodes)
            while pending and time.time() - t0 < args.ready_wait_s:
                pending = [n for n in pending if not ready(n)]
                time.sleep(0.05)
            for n in pending:
                p = n["p"]
                if p.poll() is not None:
                    # Not a hang (e.g. a port taken by another process meanwhile).
                    print(f"round {rnd}: cluster {n['c']} node {n['i']} exited {p.returncode}")
                    continue
                hangs += 1
                keep = os.path.join(out, f"r{rnd}-c{n['c']}n{n['i']}")
                print(f"round {rnd}: cluster {n['c']} node {n['i']} not ready after "
                      f"{args.ready_wait_s}s (logs: {keep}.*)", flush=True)
                shutil.copy(f"{n['d']}.log", f"{keep}.log")
                if shutil.which("gdb"):
                    os.system(f"gdb -p {p.pid} -batch -ex 'thread apply all bt' "
                              f"> {keep}.gdb 2>&1")
                else:
                    os.kill(p.pid, signal.SIGSTOP)
                    time.sleep(0.2)
                    os.kill(p.pid, signal.SIGCONT)
                time.sleep(3)
                print(f"round {rnd}: ready once its syscalls were interrupted: {ready(n)}",
                      flush=True)
            for n in nodes:
                n["p"].send_signal(signal.SIGKILL)
            for n in nodes:
                n["p"].wait()
            if rnd % 50 == 49:
                print(f"{rnd + 1} rounds, {starts} node starts, {hangs} hung, "
                      f"{time.time() - t_start:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"node starts: {starts}, hung: {hangs}, rounds: {args.rounds}, "
          f"clusters per round: {args.clusters}")
    sys.exit(1 if hangs else 0)


if __name__ == "__main__":
    main()
