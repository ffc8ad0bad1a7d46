#!/usr/bin/env bash
#: Rebalance timings of the classic group protocol against KIP-848's on one sluice node (issue 13).
#
# Runs the ignored test `group_rebalance_timings` (tests/tests/groups.rs) --rounds times.
# Each run starts one broker and, for each protocol in turn, three rdkafka members on a
# 6-partition topic, then adds a fourth, then closes one. Classic members use the range
# assignor; KIP-848 members the broker's default (uniform). It measures, from the client side
# (the members' assignment() polled every 50 ms):
#
#   first_ms      start of 3 members -> 6 partitions split 2/2/2
#   join_ms       a 4th member starts -> every member owns some, all 6 owned once
#   join_revoked  partitions the 3 earlier members gave up during that join
#   leave_ms      one member closes -> the other 3 own all 6 (2/2/2)
#
# Classic: group.initial.rebalance.delay.ms (3 s) on the first join, then join/sync rounds
# paced by the 1 s heartbeat the tests configure; eager revocation of everything. KIP-848:
# members learn a new target on their next heartbeat (group.consumer.heartbeat.interval.ms,
# Kafka's 5 s default), and only moved partitions are revoked.
#
#     perf/group-rebalance.sh [--rounds 3]
#
# Prints one line per run and protocol, then a markdown table of the medians.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
rounds=3
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

cd "$root"
cargo build --release -p sluice >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for r in $(seq 1 "$rounds"); do
  (cd tests && SLUICE_REBALANCE_ROUND=$r cargo test --release --test groups group_rebalance_timings \
      -- --ignored --nocapture 2>/dev/null) | grep '^REBALANCE' | tee -a "$out"
done

python3 - "$out" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split()[1:])
    rows.setdefault(f.pop("protocol"), []).append({k: float(v) for k, v in f.items()})
keys = ["first_ms", "join_ms", "join_revoked", "leave_ms"]
print()
print("| protocol | runs | " + " | ".join(keys) + " |")
print("|---|---|" + "---|" * len(keys))
for p, runs in rows.items():
    med = [statistics.median(r[k] for r in runs) for k in keys]
    print(f"| {p} | {len(runs)} | " + " | ".join(f"{m:.0f}" for m in med) + " |")
PY
