#!/usr/bin/env python3
"""Measures the idle cost of many replicated partitions on a 3-node sluice cluster (issue 12:
"3 nodes, 3,000 replicated partitions each, idle CPU per node < 5 % of a core, memory per
replica <= 64 KiB").

Starts three real `sluice` processes on loopback with the cluster contract flags (one shard
each: `--shards 1 --no-pin`, so a node's whole cost is one executor and the figures do not
depend on how partitions hash across shards), waits until all three are registered, and then:

  1. baseline: lets the cluster settle, records each process's RSS (/proc/PID/status) and
     measures its CPU (utime + stime from /proc/PID/stat) over --window seconds with no topics;
  2. creates --partitions partitions at replication factor 3 (--topics topics of equal size,
     one CreateTopics request per topic, through the nodes in turn), timing it, and waits
     until every node's Metadata names a leader for every partition;
  3. waits until every replica is in sync (Metadata's ISR), measures CPU while the cluster
     settles for --settle seconds (idle Raft groups quiesce after an election timeout with
     everything committed), then over --window seconds, sampled every --sample seconds so a
     trend shows;
  4. prints a markdown table per node: idle CPU as % of one core before and after, RSS before
     and after and the growth per replica (every node holds a replica of every partition at
     RF 3), disk usage of the data directory per replica (allocated blocks, and the apparent
     size), open file descriptors and threads; and the WARN/ERROR lines of the node logs;
  5. with --restart, before that: SIGTERMs node 3, times its stop, the move of its leaders,
     its restart and the return to full ISRs, and measures the idle CPU again;
  6. with --restart-all term|kill, last: stops all three nodes at once (SIGTERM, or kill -9),
     starts them again at once and times the whole cluster's return: ready lines, every
     partition led on every node, every replica in sync; the elections it took (the sum of
     each partition's leader-epoch increase), how the leaders ended up spread, and each
     node's CPU seconds from its start until every replica was in sync.

    tests/.venv/bin/python perf/idle-cost.py [--binary target/release/sluice] [--partitions 3000]

Nothing is produced: the partitions hold only Raft's election no-ops. Needs kafka-python
(scripts/install-test-deps.sh puts it in tests/.venv).
"""

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from perfutil import cpu_seconds, disk_usage, free_port, open_files, proc_status  # noqa: E402



class Node:
    def __init__(self, binary, root, node_id, kafka, rpc, voters, extra):
        self.binary, self.node_id = binary, node_id
        self.kafka, self.rpc, self.voters, self.extra = kafka, rpc, voters, extra
        self.dir = os.path.join(root, f"d{node_id}")
        self.log = os.path.join(root, f"n{node_id}.log")
        self.proc = None

    def bootstrap(self):
        return f"127.0.0.1:{self.kafka}"

    def start(self):
        args = [self.binary, "start", "--shards", "1", "--no-pin",
                "--data-dir", self.dir, "--listen", self.bootstrap(),
                "--node-id", str(self.node_id), "--rpc-listen", f"127.0.0.1:{self.rpc}",
                "--voters", self.voters] + self.extra
        self.started, self.ready = time.monotonic(), None
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                     stderr=open(self.log, "a"))
        threading.Thread(target=self._watch, args=(self.proc,), daemon=True).start()

    def _watch(self, proc):
        for line in proc.stdout:
            if line.startswith("sluice: ready") and self.ready is None:
                self.ready = time.monotonic() - self.started

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "killed after 30 s"
        return self.proc.returncode if self.proc else None

    def cpu_seconds(self):
        return cpu_seconds(self.proc.pid)

    def status(self):
        return proc_status(self.proc.pid)

    def fds(self):
        return open_files(self.proc.pid)

    def disk(self):
        """(allocated bytes, apparent bytes, files) under the data directory."""
        return disk_usage(self.dir)


def admin(bootstrap, timeout_ms=30000):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)


def until(what, cond, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (KafkaError, OSError, ValueError, KeyError, IndexError) as e:
            last = e
        time.sleep(0.5)
    raise RuntimeError(f"timed out: {what} (last error: {last!r})")


def brokers(bootstrap):
    a = admin(bootstrap, 5000)
    try:
        return sorted(b["broker_id"] for b in a.describe_cluster()["brokers"])
    finally:
        a.close()


def leaderless(bootstrap, names, per_topic, rf, full_isr=False, dead=None):
    """Partitions of `names` that `bootstrap`'s Metadata lists without a leader (or not at
    all, or led by node `dead`, or with fewer than `rf` in-sync replicas if `full_isr`), the
    replica counts of the
    partitions it lists, and the leaders per node."""
    a = admin(bootstrap)
    try:
        missing = 0
        replicas = collections.Counter()
        leaders = collections.Counter()
        seen = {}
        for t in a.describe_topics(names):
            seen[t["name"]] = t
        for n in names:
            t = seen.get(n)
            if t is None or t.get("error_code", 0) != 0:
                missing += per_topic
                continue
            parts = t["partitions"]
            missing += per_topic - len(parts)
            for p in parts:
                replicas[len(p["replica_nodes"])] += 1
                leaders[p["leader_id"]] += 1
                if (p["leader_id"] < 0 or p["leader_id"] == dead or p["error_code"] != 0
                        or (full_isr and len(p["isr_nodes"]) < rf)):
                    missing += 1
        return missing, replicas, leaders
    finally:
        a.close()


def wait_led(nodes, names, per_topic, rf, t0, full_isr=False, dead=None, timeout=900):
    """Waits until every node's Metadata lists a leader (and, if `full_isr`, every replica in
    sync) for every partition; returns node 1's leaders per node."""
    out = {}
    for n in nodes:
        def led(n=n):
            missing, replicas, leaders = leaderless(n.bootstrap(), names, per_topic, rf,
                                                    full_isr, dead)
            print(f"  node {n.node_id}: {missing} partitions without a leader"
                  f"{' or a full ISR' if full_isr else ''} (replica counts {dict(replicas)}) "
                  f"at {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
            out.setdefault(n.node_id, dict(leaders))
            out[n.node_id] = dict(leaders)
            return missing == 0
        until(f"node {n.node_id} lists a leader for every partition", led, timeout)
    return out[nodes[0].node_id]


def epochs(bootstrap, names):
    """Each partition's leader epoch in `bootstrap`'s Metadata, by (topic, partition)."""
    a = admin(bootstrap)
    try:
        return {(t["name"], p["partition_index"]): p["leader_epoch"]
                for t in a.describe_topics(names) for p in t["partitions"]}
    finally:
        a.close()


def restart_all(nodes, names, per_topic, rf, how):
    """Stops every node at once (SIGTERM or kill -9), starts them all again at once, and
    times the cluster's return (see the module header, step 6)."""
    out = {"how": how}
    before = epochs(nodes[0].bootstrap(), names)
    t0 = time.monotonic()
    for n in nodes:
        if how == "kill":
            n.proc.kill()
        else:
            n.proc.send_signal(signal.SIGTERM)
    out["stop_codes"] = [n.proc.wait(timeout=60) for n in nodes]
    out["stop_s"] = time.monotonic() - t0
    t1 = time.monotonic()
    for n in nodes:
        n.start()
    for n in nodes:
        until(f"node {n.node_id} lists 3 brokers after the restart",
              lambda n=n: brokers(n.bootstrap()) == [1, 2, 3], 300)
    out["brokers_s"] = time.monotonic() - t1
    out["ready_lines_s"] = [n.ready if n.ready is not None else float("nan") for n in nodes]
    wait_led(nodes, names, per_topic, rf, t1)
    out["led_s"] = time.monotonic() - t1
    out["leaders"] = wait_led(nodes, names, per_topic, rf, t1, full_isr=True)
    out["isr_s"] = time.monotonic() - t1
    out["cpu_s"] = [n.cpu_seconds() for n in nodes]
    after = epochs(nodes[0].bootstrap(), names)
    bumps = collections.Counter(after[k] - before.get(k, 0) for k in after)
    out["elections"] = sum(k * v for k, v in bumps.items())
    out["bumps"] = dict(sorted(bumps.items()))
    return out


def measure_cpu(nodes, window, sample, label):
    """CPU % of one core per node over `window` seconds, and the per-sample figures."""
    t0 = time.monotonic()
    c0 = [n.cpu_seconds() for n in nodes]
    samples = [[] for _ in nodes]
    prev_t, prev_c = t0, list(c0)
    while True:
        left = t0 + window - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(sample, left))
        now = time.monotonic()
        c = [n.cpu_seconds() for n in nodes]
        for i in range(len(nodes)):
            samples[i].append(100 * (c[i] - prev_c[i]) / (now - prev_t))
        prev_t, prev_c = now, c
        print(f"  {label} t={now - t0:5.1f}s cpu% " +
              " ".join(f"{s[-1]:5.2f}" for s in samples), file=sys.stderr, flush=True)
    wall = time.monotonic() - t0
    c1 = [n.cpu_seconds() for n in nodes]
    return [100 * (c1[i] - c0[i]) / wall for i in range(len(nodes))], samples, wall


def log_lines(path, levels=("WARN", "ERROR")):
    """WARN/ERROR lines of a node log, grouped by their text with numbers blanked."""
    groups = collections.Counter()
    example = {}
    pat = re.compile(r"\b(" + "|".join(levels) + r")\b")
    with open(path, errors="replace") as f:
        for line in f:
            if not pat.search(line):
                continue
            key = re.sub(r"[0-9a-f]{16}|\d+", "N", line.split(" ", 2)[-1].strip())[:160]
            groups[key] += 1
            example.setdefault(key, line.strip()[:300])
    return groups, example


def kib(x):
    return f"{x / 1024:,.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/sluice")
    ap.add_argument("--partitions", type=int, default=3000,
                    help="replicated partitions in all (each node holds a replica of each)")
    ap.add_argument("--topics", type=int, default=0,
                    help="topics to spread them over (default: one per 100 partitions)")
    ap.add_argument("--replication-factor", type=int, default=3)
    ap.add_argument("--settle", type=float, default=30,
                    help="seconds between the last leader appearing and the measurement")
    ap.add_argument("--window", type=float, default=60, help="seconds of CPU measurement")
    ap.add_argument("--sample", type=float, default=10, help="seconds per printed sample")
    ap.add_argument("--keep", action="store_true", help="keep the data directories and logs")
    ap.add_argument("--log-level", default="", help="SLUICE_LOG for the nodes")
    ap.add_argument("--restart", action="store_true",
                    help="then SIGTERM and restart node 3 and measure the idle cost again")
    ap.add_argument("--restart-all", choices=["term", "kill"],
                    help="last, stop all three nodes at once (SIGTERM or kill -9) and time "
                         "the whole cluster's restart")
    ap.add_argument("extra", nargs="*", help="more `sluice start` flags (after --)")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    topics = args.topics or max(1, args.partitions // 100)
    per_topic = args.partitions // topics
    assert per_topic * topics == args.partitions, "--partitions must divide by --topics"
    if args.log_level:
        os.environ["SLUICE_LOG"] = args.log_level
    root = tempfile.mkdtemp(prefix="sluice-idle-")
    kafka = [free_port() for _ in range(3)]
    rpc = [free_port() for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{rpc[i]}" for i in range(3))
    nodes = [Node(binary, root, i + 1, kafka[i], rpc[i], voters, args.extra) for i in range(3)]
    names = [f"idle-{t:03d}" for t in range(topics)]
    report = {}
    try:
        for n in nodes:
            n.start()
        for n in nodes:
            until(f"node {n.node_id} lists 3 brokers",
                  lambda n=n: brokers(n.bootstrap()) == [1, 2, 3], 60)
        time.sleep(args.settle / 3)
        before_cpu, _, _ = measure_cpu(nodes, args.window, args.sample, "no topics")
        before_st = [n.status() for n in nodes]
        before_disk = [n.disk() for n in nodes]
        before_fds = [n.fds() for n in nodes]

        t0 = time.monotonic()
        errors = collections.Counter()
        for i, name in enumerate(names):
            a = admin(nodes[i % 3].bootstrap(), 60000)
            try:
                r = a.create_topics({name: {"num_partitions": per_topic,
                                            "replication_factor": args.replication_factor}},
                                    timeout_ms=60000, raise_errors=False)
                for t in r["topics"]:
                    if t["error_code"] != 0:
                        errors[f"{t['error_code']} {t.get('error_message')}"] += 1
            except KafkaError as e:
                errors[repr(e)] += 1
            finally:
                a.close()
        created = time.monotonic() - t0
        print(f"created {topics} topics x {per_topic} partitions in {created:.1f}s; "
              f"errors {dict(errors)}", file=sys.stderr, flush=True)
        rf = args.replication_factor
        wait_led(nodes, names, per_topic, rf, t0)
        led_all = time.monotonic() - t0
        leaders = wait_led(nodes, names, per_topic, rf, t0, full_isr=True)
        isr_all = time.monotonic() - t0
        print(f"every node lists a leader for every partition after {led_all:.1f}s, "
              f"full ISRs after {isr_all:.1f}s", file=sys.stderr, flush=True)
        settle_cpu, _, _ = measure_cpu(nodes, args.settle, args.sample, "settling")
        after_cpu, samples, wall = measure_cpu(nodes, args.window, args.sample, "idle")
        after_st = [n.status() for n in nodes]
        after_disk = [n.disk() for n in nodes]
        after_fds = [n.fds() for n in nodes]
        # Quiesced groups exchange nothing: their followers must stay in sync regardless
        # (the window is longer than replica.lag.time.max.ms's 30 s default).
        under, _, _ = leaderless(nodes[0].bootstrap(), names, per_topic, rf, full_isr=True)
        report = dict(under=under, created=created, led_all=led_all, isr_all=isr_all, errors=errors,
                      leaders=leaders)
        if args.restart:
            # SIGTERM the last node, start it again: how long its 1/3 of the leaders take
            # to move, its restart and recovery of every replica, the cluster's return to
            # full ISRs, and the idle cost afterwards.
            victim = nodes[-1]
            t0 = time.monotonic()
            report["stop_code"] = victim.stop()
            report["stop_s"] = time.monotonic() - t0
            wait_led(nodes[:-1], names, per_topic, rf, t0, dead=victim.node_id)
            report["moved_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            victim.start()
            until("the restarted node lists 3 brokers",
                  lambda: brokers(victim.bootstrap()) == [1, 2, 3], 300)
            report["ready_s"] = time.monotonic() - t1
            report["ready_line_s"] = victim.ready if victim.ready is not None else float("nan")
            report["restart_leaders"] = wait_led(nodes, names, per_topic, rf, t1,
                                                 full_isr=True)
            report["healed_s"] = time.monotonic() - t1
            time.sleep(args.settle)
            report["restart_cpu"], report["restart_samples"], _ = measure_cpu(
                nodes, args.window, args.sample, "idle after restart")
            report["restart_rss"] = [n.status()["VmRSS"] for n in nodes]
        if args.restart_all:
            report["all"] = restart_all(nodes, names, per_topic, rf, args.restart_all)
    finally:
        codes = [n.stop() for n in nodes]
    p = args.partitions
    print(f"3 nodes, --shards 1 each; {topics} topics x {per_topic} partitions = {p} at "
          f"replication factor {args.replication_factor} ({p} replicas per node)\n")
    print(f"- CreateTopics ({topics} requests, one topic each): {report['created']:.1f} s; "
          f"errors: {dict(report['errors']) or 'none'}")
    print(f"- until every node's Metadata lists a leader for every partition: "
          f"{report['led_all']:.1f} s after the first CreateTopics; every replica in sync: "
          f"{report['isr_all']:.1f} s; leaders per node {sorted(report['leaders'].items())}")
    print(f"- CPU measured while settling ({args.settle:.0f} s), then over {wall:.1f} s; "
          f"partitions without a leader or a full ISR after it: {report['under']}")
    if args.restart:
        print(f"- node 3 SIGTERM: exit {report['stop_code']} after {report['stop_s']:.1f} s; "
              f"every partition led by nodes 1-2 {report['moved_s']:.1f} s after the signal; "
              f"restarted node prints `sluice: ready` after {report['ready_line_s']:.1f} s and "
              f"lists 3 brokers after {report['ready_s']:.1f} s, every "
              f"replica in sync {report['healed_s']:.1f} s after its start; leaders per node "
              f"then {sorted(report['restart_leaders'].items())}")
        print(f"- idle CPU {args.settle:.0f} s later, per node: "
              + ", ".join(f"{c:.2f} % ({', '.join(f'{x:.1f}' for x in s)})" for c, s in
                          zip(report["restart_cpu"], report["restart_samples"]))
              + "; RSS " + ", ".join(f"{r / 2**20:.1f} MiB" for r in report["restart_rss"]))
    if args.restart_all:
        r = report["all"]
        stop = "kill -9" if r["how"] == "kill" else "SIGTERM"
        print(f"- whole-cluster restart: {stop} of all three nodes at once (exits "
              f"{r['stop_codes']} after {r['stop_s']:.1f} s), started again at once: "
              f"`sluice: ready` after "
              + ", ".join(f"{x:.1f}" for x in r["ready_lines_s"])
              + f" s; all list 3 brokers after {r['brokers_s']:.1f} s; every partition led on "
              f"every node after **{r['led_s']:.1f} s**, every replica in sync after "
              f"{r['isr_s']:.1f} s; {r['elections']} elections for {p} partitions (leader-epoch "
              f"increases: {r['bumps']}"
              f"{'; with the controlled shutdown hand-offs' if r['how'] == 'term' else ''}); "
              f"leaders per node "
              f"{sorted(r['leaders'].items())}; CPU seconds per node from start to full ISRs "
              + ", ".join(f"{c:.1f}" for c in r["cpu_s"]))
    print(f"- exit codes on SIGTERM at the end: {codes}\n")
    print("| node | idle CPU, no topics | CPU while settling | idle CPU, with partitions "
          "(samples) | RSS before | RSS after | RSS per replica | anon per replica | disk per "
          "replica (allocated / apparent) | files per replica | fds before/after | threads |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, n in enumerate(nodes):
        b, a = before_st[i], after_st[i]
        (ab, pb, fb), (aa, pa, fa) = before_disk[i], after_disk[i]
        print(f"| {n.node_id} | {before_cpu[i]:.2f} % | {settle_cpu[i]:.2f} % | "
              f"**{after_cpu[i]:.2f} %** ({', '.join(f'{s:.1f}' for s in samples[i])}) | "
              f"{b['VmRSS'] / 2**20:.1f} MiB | {a['VmRSS'] / 2**20:.1f} MiB | "
              f"**{kib((a['VmRSS'] - b['VmRSS']) / p)} KiB** | "
              f"{kib((a['RssAnon'] - b['RssAnon']) / p)} KiB | "
              f"{kib((aa - ab) / p)} / {kib((pa - pb) / p)} KiB | {(fa - fb) / p:.1f} | "
              f"{before_fds[i]}/{after_fds[i]} | {a['Threads']} |")
    print()
    for n in nodes:
        groups, example = log_lines(n.log)
        print(f"node {n.node_id} log: {sum(groups.values())} WARN/ERROR lines"
              f"{', ' + str(len(groups)) + ' kinds' if groups else ''}")
        for key, count in groups.most_common(10):
            print(f"    {count} x {example[key]}")
    if args.keep:
        print(f"\nkept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
