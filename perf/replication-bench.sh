#!/usr/bin/env bash
#: Replication factor 3 against replication factor 1 on one 3-node loopback cluster (issue 12).
#
# Starts three sluice nodes on this host (one shard each, their own data directories under
# a temporary directory), creates two topics of PARTITIONS partitions, `rf1` (one replica
# per partition, placed across the nodes: the direct path) and `rf3` (three replicas: a Raft
# group per partition), and runs the same sluice-bench workload against each in turn
# (rdkafka producer and consumer, which follow partition leaders across nodes), recording
# throughput, produce latency and the CPU seconds all three brokers used per GiB produced
# (from /proc, so the shared host's other load does not count). Ratios come from one run.
# Both topics keep 256 MiB per partition (`retention.bytes`, checked every 5 s), so a long
# run's disk use stays bounded.
#
#     perf/replication-bench.sh [--binary target/release/sluice] [--bench target/release/sluice-bench]
#         [--workload bench/workloads/max-rate-1k-16p.toml] [--rate 20000] [--duration-s 20]
#         [--partitions 6] [--rounds 1] [--profile] [--stats-ms MS]
#         (--rate 0: as fast as the cluster takes it)
#
# --rounds N: N rounds on the same cluster, alternating the order (rf1 rf3, then rf3 rf1,
# ...) so that neither topic always runs first on a host whose disk and CPU drift; a row per
# run, then the medians over the rounds and the per-round rf3/rf1 ratios with their median
# (single runs on the shared 2-CPU host move by ±15 % in throughput and up to 10x in p99).
#
# --stats-ms MS: the nodes log their stage timers every MS (`--stats-interval-ms`: produce,
# Raft commit and sync latencies per interval), kept as <results>/node-N.log.
#
# --profile: `perf record --call-graph dwarf` of the three brokers for 10 s in the middle of each topic's
# run, into <results>/<topic>.perf.data (read with `perf report -i ... --no-children`).
#
# Results: target/bench-results/replication-<date>/ (sluice-bench's files per topic) and a
# markdown summary on stdout. Needs tests/.venv (scripts/install-test-deps.sh) for the
# admin client that creates the topics.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
binary=$root/target/release/sluice
bench=$root/target/release/sluice-bench
workload=$root/bench/workloads/max-rate-1k-16p.toml
rate=20000
duration=20
partitions=6
rounds=1
profile=0
stats=()
while [ $# -gt 0 ]; do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --workload) workload=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration-s) duration=$2; shift 2 ;;
    --partitions) partitions=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --profile) profile=1; shift ;;
    --stats-ms) stats=(--stats-interval-ms "$2"); shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
py=$root/tests/.venv/bin/python
[ -x "$py" ] || { echo "needs $py (scripts/install-test-deps.sh)" >&2; exit 2; }

work=$(mktemp -d)
out=$root/target/bench-results/replication-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ ${#stats[@]} -gt 0 ]; then
    for i in 1 2 3; do cp "$work/n$i.log" "$out/node-$i.log" 2>/dev/null || true; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kports=(); rports=()
for i in 1 2 3; do kports+=("$(free_port)"); rports+=("$(free_port)"); done
voters="1@127.0.0.1:${rports[0]},2@127.0.0.1:${rports[1]},3@127.0.0.1:${rports[2]}"
for i in 1 2 3; do
  "$binary" start --node-id "$i" --data-dir "$work/d$i" --shards 1 --retention-check-interval-ms 5000 "${stats[@]}" \
    --listen "127.0.0.1:${kports[$((i-1))]}" --rpc-listen "127.0.0.1:${rports[$((i-1))]}" \
    --voters "$voters" >"$work/n$i.log" 2>&1 &
  pids+=($!)
done
bootstrap="127.0.0.1:${kports[0]}"

"$py" - "$bootstrap" "$partitions" <<'EOF'
import sys, time
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
bootstrap, parts = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 60
while True:
    try:
        a = KafkaAdminClient(bootstrap_servers=bootstrap)
        if len(a.describe_cluster()["brokers"]) == 3:
            break
    except Exception:
        pass
    if time.time() > deadline:
        sys.exit("the three nodes did not register within 60 s")
    time.sleep(0.5)
# Retention bounds the disk: a full-rate round writes several GiB per topic, and a host
# whose disk fills up (or whose thin-provisioned disk slows as it grows) skews the rounds
# that come later.
configs = {"retention.bytes": str(256 << 20), "segment.bytes": str(64 << 20)}
# A client made before the last node registered may not know the controller's node yet
# (UnknownBrokerIdError): a new one learns it.
while True:
    try:
        KafkaAdminClient(bootstrap_servers=bootstrap).create_topics(
            [NewTopic("rf1", parts, 1, topic_configs=configs),
             NewTopic("rf3", parts, 3, topic_configs=configs)])
        break
    except Exception as e:
        if "TopicAlreadyExists" in repr(e):
            break  # an earlier attempt created them
        if time.time() > deadline:
            sys.exit(f"creating the topics: {e!r}")
        time.sleep(0.5)
time.sleep(5)  # every partition elects its leader
EOF

cpu_ticks() {
  local t=0
  for p in "${pids[@]}"; do
    read -r -a f <"/proc/$p/stat"
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
hz=$(getconf CLK_TCK)

echo "| round | topic | replicas | produced MiB/s | produce p50 / p99 / p99.9 ms | broker CPU s per GiB |"
echo "|---|---|---|---|---|---|"
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) = 1 ]; then order="rf1 rf3"; else order="rf3 rf1"; fi
  for topic in $order; do
    name=$topic-$round
    before=$(cpu_ticks)
    if [ "$profile" = 1 ]; then
      pidlist=$(IFS=,; echo "${pids[*]}")
      (sleep $(( duration / 2 )) && perf record -q -F 400 --call-graph dwarf,16384 -p "$pidlist" -o "$out/$name.perf.data" \
        -- sleep 10 >/dev/null 2>&1) &
      profiler=$!
    fi
    "$bench" run --bootstrap "$bootstrap" --workload "$workload" --topic "$topic" \
      --rate "$rate" --duration-s "$duration" --warmup-s 3 --partitions "$partitions" \
      --client rdkafka --consumer-client rdkafka --out "$out" --name "$name" \
      >"$out/$name.stdout" 2>&1 || { cat "$out/$name.stdout" >&2; exit 1; }
    # A short run's profile window must not reach into the next topic's run.
    if [ "$profile" = 1 ]; then wait "$profiler" || true; fi
    after=$(cpu_ticks)
    echo "$round $topic $(( after - before ))" >>"$out/cpu-ticks"
    "$py" - "$out" "$round" "$topic" "$hz" <<'EOF'
import json, sys
out, rnd, topic, hz = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ticks = {(int(r), t): int(n) for r, t, n in (l.split() for l in open(f"{out}/cpu-ticks"))}
ph = json.load(open(f"{out}/{topic}-{rnd}.json"))["phases"][-1]
lat = ph["produce_latency"]
moved = ph["produce"]["bytes"]
per_gib = ticks[(rnd, topic)] / hz / (moved / 2**30) if moved else float("nan")
print(f"| {rnd} | {topic} | {topic[2]} | {ph['produce']['mib_per_s']:.1f} | "
      f"{lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} / {lat['p999_ms']:.1f} | {per_gib:.1f} |")
EOF
  done
done
if [ "$rounds" -gt 1 ]; then
  "$py" - "$out" "$rounds" "$hz" <<'EOF'
import json, statistics, sys
out, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ticks = {(int(r), t): int(n) for r, t, n in (l.split() for l in open(f"{out}/cpu-ticks"))}
def run(r, t):
    ph = json.load(open(f"{out}/{t}-{r}.json"))["phases"][-1]
    lat = ph["produce_latency"]
    moved = ph["produce"]["bytes"]
    return {
        "mib": ph["produce"]["mib_per_s"],
        "p50": lat["p50_ms"], "p99": lat["p99_ms"], "p999": lat["p999_ms"],
        "cpu": ticks[(r, t)] / hz / (moved / 2**30) if moved else float("nan"),
    }
rs = range(1, rounds + 1)
runs = {(r, t): run(r, t) for r in rs for t in ("rf1", "rf3")}
def med(t, k):
    return statistics.median(runs[(r, t)][k] for r in rs)
print()
print(f"Medians over {rounds} rounds:")
print()
print("| topic | produced MiB/s | produce p50 / p99 / p99.9 ms | broker CPU s per GiB |")
print("|---|---|---|---|")
for t in ("rf1", "rf3"):
    print(f"| {t} | {med(t, 'mib'):.1f} | {med(t, 'p50'):.1f} / {med(t, 'p99'):.1f} / "
          f"{med(t, 'p999'):.1f} | {med(t, 'cpu'):.1f} |")
for what, key in (("throughput", "mib"), ("p99", "p99")):
    xs = [runs[(r, "rf3")][key] / runs[(r, "rf1")][key] for r in rs]
    print()
    print(f"rf3/rf1 {what} per round: " + ", ".join(f"{x:.2f}" for x in xs)
          + f" (median {statistics.median(xs):.2f})")
EOF
fi
echo
echo "files: $out"
