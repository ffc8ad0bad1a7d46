#!/usr/bin/env bash
# Produce latency with and without the log cleaner at work (issue 15's "produce p99 during
# compaction within 1.5x of p99 without it"): alternating runs of
# bench/workloads/compaction.toml against a fresh broker whose cleaner passes every second
# (`on`) and one whose cleaner never runs (`off`), at 50 % of --peak. Prints one line per
# run with the produce latency, the broker's CPU seconds, the cleaner's passes that
# rewrote segments and the data directory's size at the end; raw results go to OUT.
#
# Usage: perf/compaction-ab.sh [--rounds N] [--peak REC_PER_S] [--out DIR] [--duration-s S]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
rounds=2 peak=260000 out="$root/target/compaction-ab" duration=30
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --peak) peak="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --duration-s) duration="$2"; shift 2 ;;
        *) echo "compaction-ab.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
cargo build --release -p sluice -p sluice-bench
bench="$root/target/release/sluice-bench"
sluice="$root/target/release/sluice"
mkdir -p "$out" "$root/target/bench-tmp"

bpid="" data=""
cleanup() {
    if [[ -n "$bpid" ]] && kill -0 "$bpid" 2>/dev/null; then
        kill -TERM "$bpid" 2>/dev/null || true
        wait "$bpid" 2>/dev/null || true
    fi
    [[ -n "$data" ]] && rm -rf "$data"
}
trap cleanup EXIT

for round in $(seq 1 "$rounds"); do
    for which in off on; do
        interval=1000000000
        [[ $which == on ]] && interval=1000
        data="$(mktemp -d "$root/target/bench-tmp/compaction-data.XXXXXX")"
        port=$((20000 + RANDOM % 20000))
        log="$out/broker-$which-$round.log"
        "$sluice" start --data-dir "$data" --listen "127.0.0.1:$port" --admin-listen off \
            --log-cleaner-interval-ms "$interval" > "$log" 2>&1 &
        bpid=$!
        for _ in $(seq 1 300); do
            grep -q "sluice: ready" "$log" 2>/dev/null && break
            kill -0 "$bpid" 2>/dev/null || { cat "$log" >&2; exit 1; }
            sleep 0.1
        done
        "$bench" run --bootstrap "127.0.0.1:$port" --workload bench/workloads/compaction.toml \
            --peak "$peak" --broker-pid "$bpid" --out "$out" --name "$which-$round" \
            --duration-s "$duration" --delete-topic false > /dev/null 2>&1
        passes=$(grep -c "cleaned .* segment" "$log" || true)
        size=$(du -sm "$data" | cut -f1)
        python3 - "$out/$which-$round.json" "cleaner $which, round $round" "$passes" "$size" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases"][0]
l = p["produce_latency"]
print(f"{sys.argv[2]}: produce {p['produce']['records_per_s']:.0f} rec/s, "
      f"p50 {l['p50_ms']:.2f} / p99 {l['p99_ms']:.2f} / p99.9 {l['p999_ms']:.2f} ms, "
      f"broker CPUs {p.get('broker_cpu_cores') or float('nan'):.2f}, cleaning passes {sys.argv[3]}, "
      f"data {sys.argv[4]} MiB")
PY
        kill -TERM "$bpid"
        wait "$bpid" || true
        bpid=""
        rm -rf "$data"
        data=""
    done
done
