#!/usr/bin/env bash
#: Transactional producing against the same load without transactions on one sluice node (issue 13).
#
# Starts one sluice node on a free loopback port with a temporary data directory and runs
# the same sluice-bench workload (bench/workloads/transactions.toml: librdkafka producers and
# consumer, 1 KiB records, 16 partitions) at the same fixed rate in five modes:
#
#   a  no transactions,                                consumer read_uncommitted
#   b  no transactions,                                consumer read_committed
#   c  transactions committed every 100 ms,            consumer read_committed
#   d  transactions committed every 1,000 records,     consumer read_committed
#   e  transactions committed every 100 ms,            consumer read_uncommitted
#
# Each producer (two in the workload) has its own transactional.id, counts its own records
# for d (so at 20,000 records/s d commits about every 100 ms too) and commits on its own
# sender thread, which waits for the commit as an application's producing thread would; latencies
# start at each record's scheduled send time (the workload's `stamp = "schedule"`), so the
# records held while a commit runs count that wait. Every run makes (and deletes) its own
# topic. It prints one table: achieved produce rate, end-to-end (send → consumed) p50/p99,
# produce p99, commit_transaction p50/p99, generator CPUs and the broker's CPU seconds per
# GiB produced (from /proc, over the measured phase only: sluice-bench --broker-pid), with
# each mode's ratio to mode a of the same round.
#
#     perf/txn-bench.sh [--binary target/release/sluice] [--bench target/release/sluice-bench]
#         [--workload bench/workloads/transactions.toml] [--rate 20000] [--duration-s 20]
#         [--warmup-s 3] [--shards N] [--rounds 1] [--modes abcde] [--stats-ms MS]
#
# --rounds N: N rounds on the same node, the mode order reversed every other round (a..e,
# then e..a) so that the host's drift does not always land on the same mode; a row per run,
# then with N > 1 the medians of each mode's per-round ratios to mode a.
#
# --stats-ms MS: the node logs its stage timers every MS (`--stats-interval-ms`); the
# summary then adds the produce and fetch requests the broker answered per second in each
# run (warm-up included), which is where per-request costs show.
#
# Results: target/bench-results/txn-<date>/ (sluice-bench's files per run, broker.log) and
# a markdown summary on stdout, ending with the broker's WARN/ERROR lines.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=$root/target/release/sluice
bench=$root/target/release/sluice-bench
workload=$root/bench/workloads/transactions.toml
rate=20000
duration=20
warmup=3
rounds=1
modes=abcde
shards=()
stats=()
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration-s) duration=$2; shift 2 ;;
    --warmup-s) warmup=$2; shift 2 ;;
    --shards) shards=(--shards "$2"); shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --stats-ms) stats=(--stats-interval-ms "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$rate" != 0 ] || { echo "--rate must be a fixed rate: the modes compare at the same rate" >&2; exit 2; }
[[ $modes =~ ^[a-e]+$ ]] || { echo "--modes: letters a-e" >&2; exit 2; }
for f in "$binary" "$bench"; do
  [ -x "$f" ] || { echo "$f: not built (cargo build --release -p sluice / -p sluice-bench)" >&2; exit 2; }
done

# A mode's sluice-bench flags.
mode_args() {
  case $1 in
    a) echo "--isolation read_uncommitted" ;;
    b) echo "--isolation read_committed" ;;
    c) echo "--txn-commit-ms 100 --isolation read_committed" ;;
    d) echo "--txn-commit-records 1000 --isolation read_committed" ;;
    e) echo "--txn-commit-ms 100 --isolation read_uncommitted" ;;
  esac
}

work=$(mktemp -d)
out=$root/target/bench-results/txn-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
broker=""
cleanup() {
  if [ -n "$broker" ]; then
    kill -TERM "$broker" 2>/dev/null || true
    wait "$broker" 2>/dev/null || true
  fi
  cp "$work/broker.log" "$out/broker.log" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$binary" start --data-dir "$work/data" --listen "127.0.0.1:$port" "${shards[@]}" "${stats[@]}" \
  >"$work/broker.log" 2>&1 &
broker=$!
for _ in $(seq 1 300); do
  grep -q "sluice: ready" "$work/broker.log" 2>/dev/null && break
  kill -0 "$broker" 2>/dev/null || break
  sleep 0.1
done
grep -q "sluice: ready" "$work/broker.log" || { cat "$work/broker.log" >&2; echo "broker not ready in 30 s" >&2; exit 1; }
bootstrap=127.0.0.1:$port

echo "| round | mode | transactions | isolation | produce rec/s | e2e p50 / p99 ms | produce p99 ms | commit p50 / p99 ms | generator CPUs | broker CPU s per GiB | ×a: rate / e2e p99 / broker CPU per GiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  order=$modes
  if [ $((round % 2)) = 0 ]; then order=$(echo "$modes" | rev); fi
  for mode in $(echo "$order" | fold -w1); do
    name=$mode-$round
    from=$(wc -l <"$work/broker.log")
    # shellcheck disable=SC2046 # mode_args is a list of flags
    "$bench" run --bootstrap "$bootstrap" --workload "$workload" --broker-pid "$broker" \
      --rate "$rate" --duration-s "$duration" --warmup-s "$warmup" $(mode_args "$mode") \
      --out "$out" --name "$name" >"$out/$name.stdout" 2>&1 || { cat "$out/$name.stdout" >&2; exit 1; }
    # The broker log's lines during this run, for the request rates below.
    echo "$name $from $(wc -l <"$work/broker.log")" >>"$out/log-lines"
  done
  # Rows in mode order, each with its ratios to mode a of this round (when a ran).
  python3 - "$out" "$round" "$modes" <<'EOF'
import json, os, sys
out, rnd, modes = sys.argv[1], sys.argv[2], sys.argv[3]
def load(m):
    r = json.load(open(f"{out}/{m}-{rnd}.json"))
    ph = r["phases"][-1]
    w = r["workload"]
    moved = ph["produce"]["bytes"] / 2**30
    cpu = ph["broker_cpu_cores"]
    return {
        "txn": (f"every {w['txn_commit_ms']} ms" if w["txn_commit_ms"]
                else f"every {w['txn_commit_records']} records" if w["txn_commit_records"]
                else "none"),
        "iso": w["isolation"] or "client default",
        "rate": ph["produce"]["records_per_s"],
        "e2e": ph["e2e_latency"], "prod": ph["produce_latency"],
        "commit": ph.get("commit_latency"),
        "gen": ph["generator_cpu_cores"],
        "cpu": cpu * ph["seconds"] / moved if cpu is not None and moved else float("nan"),
        "warn": r["warnings"],
    }
def div(x, y):
    return x / y if y else float("nan")
runs = {m: load(m) for m in modes}
a = runs.get("a")
for m, x in runs.items():
    c = x["commit"]
    ratio = "–"
    if a and m != "a":
        ratio = (f"{div(x['rate'], a['rate']):.2f} / {div(x['e2e']['p99_ms'], a['e2e']['p99_ms']):.2f} / "
                 f"{div(x['cpu'], a['cpu']):.2f}")
    print(f"| {rnd} | {m} | {x['txn']} | {x['iso']} | {x['rate']:.0f} | "
          f"{x['e2e']['p50_ms']:.1f} / {x['e2e']['p99_ms']:.1f} | {x['prod']['p99_ms']:.1f} | "
          + (f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}" if c else "–")
          + f" | {x['gen']:.2f} | {x['cpu']:.1f} | {ratio} |")
with open(f"{out}/warnings", "a") as f:
    for m, x in runs.items():
        for line in x["warn"]:
            f.write(f"{m}-{rnd}: {line}\n")
EOF
done
if [ "$rounds" -gt 1 ] && [[ $modes == *a* ]]; then
  python3 - "$out" "$rounds" "$modes" <<'EOF'
import json, statistics, sys
out, rounds, modes = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def fig(m, r):
    ph = json.load(open(f"{out}/{m}-{r}.json"))["phases"][-1]
    moved = ph["produce"]["bytes"] / 2**30
    cpu = ph["broker_cpu_cores"]
    return (ph["produce"]["records_per_s"], ph["e2e_latency"]["p99_ms"],
            cpu * ph["seconds"] / moved if cpu is not None and moved else float("nan"))
print()
print(f"Medians over {rounds} rounds of the per-round ratio to mode a:")
print()
print("| mode | rate | e2e p99 | broker CPU s per GiB |")
print("|---|---|---|---|")
for m in modes:
    if m == "a":
        continue
    rs = [[x / y if y else float("nan") for x, y in zip(fig(m, r), fig("a", r))]
          for r in range(1, rounds + 1)]
    print(f"| {m} | " + " | ".join(f"{statistics.median(c):.2f}" for c in zip(*rs)) + " |")
EOF
fi
if [ ${#stats[@]} -gt 0 ]; then
  python3 - "$out" "$work/broker.log" <<'EOF'
import re, sys
out, log = sys.argv[1], open(sys.argv[2]).read().splitlines()
print()
print("Requests the broker answered per second (stage timers, each run's whole span):")
print()
print("| run | produce requests/s | fetch requests/s |")
print("|---|---|---|")
for line in open(f"{out}/log-lines"):
    name, a, b = line.split()
    secs, n = {}, {"produce.request": 0, "fetch.request": 0}
    for l in log[int(a):int(b)]:
        m = re.search(r" stats (\S+) interval ([0-9.]+) s", l)
        if m:
            secs[m[1]] = secs.get(m[1], 0.0) + float(m[2])
            continue
        m = re.search(r" stats \S+ (produce\.request|fetch\.request)\s+n=(\d+)", l)
        if m:
            n[m[1]] += int(m[2])
    # Every shard reports each interval: the span is one shard's sum of intervals.
    span = max(secs.values(), default=0.0)
    rate = lambda k: f"{n[k] / span:.0f}" if span else "–"
    print(f"| {name} | {rate('produce.request')} | {rate('fetch.request')} |")
EOF
fi
echo
if [ -s "$out/warnings" ]; then
  echo "Generator warnings:"
  sed 's/^/- /' "$out/warnings"
  echo
fi
n=$(grep -cE ' (WARN|ERROR) ' "$work/broker.log" || true)
echo "Broker log: $n WARN/ERROR lines"
grep -E ' (WARN|ERROR) ' "$work/broker.log" | cut -c26- | sort | uniq -c | sort -rn | head -20 || true
echo
echo "files: $out"
