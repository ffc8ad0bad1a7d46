#!/usr/bin/env bash
# A/B of two sluice broker binaries on this host: alternating runs (old, new, old, new, ...)
# of the max-rate workload and of a fixed-rate latency run, each broker on a fresh data
# directory, so the disk's and the host's drift favour neither. Prints one line per run;
# raw results (JSON, markdown) go to OUT.
#
# Usage: perf/ab-broker.sh OLD_SLUICE NEW_SLUICE [--rounds N] [--peak REC_PER_S] [--out DIR]
#            [--max-only | --catchup | --cpu-curve [FRACTIONS]]
#   e.g. build the old commit elsewhere:
#     git worktree add /tmp/old <commit> && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p sluice)
#     perf/ab-broker.sh /tmp/old-target/release/sluice target/release/sluice --rounds 3
# The latency run offers 50 % of --peak (default 260000 records/s) with latency-50pct.toml.
# --catchup runs only catchup-16p.toml (a backlog of several GiB built with the consumer
# paused, then drained from disk) and prints the drain rate and the broker's CPU seconds.
# --cpu-curve runs the latency workload at each fraction of --peak (default 0.1,0.25,0.5,1)
# and prints, per fraction, the broker's CPU cores and CPU seconds per GiB moved (produced +
# consumed): issue 16's item 3, CPU per byte at moderate load.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[[ $# -ge 2 ]] || { sed -n 2,16p "$0" >&2; exit 2; }
old="$1" new="$2"
shift 2
rounds=2 peak=260000 out="$root/target/ab-broker" max_only=0 catchup=0 curve=
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --peak) peak="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --max-only) max_only=1; shift ;;
        --catchup) catchup=1; shift ;;
        --cpu-curve)
            curve="0.1,0.25,0.5,1"
            if [[ $# -ge 2 && "$2" != --* ]]; then curve="$2"; shift; fi
            shift ;;
        *) echo "ab-broker.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for b in "$old" "$new"; do
    [[ -x "$b" ]] || { echo "ab-broker.sh: $b is not an executable" >&2; exit 2; }
done
cargo build --release -p sluice-bench --bin sluice-bench
bench="$root/target/release/sluice-bench"
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

summary() { # json name
    python3 - "$1" "$2" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))["phases"][0]
l = p["produce_latency"]
print(f"{sys.argv[2]}: produce {p['produce']['records_per_s']:.0f} rec/s, "
      f"p50 {l['p50_ms']:.2f} / p99 {l['p99_ms']:.2f} / p99.9 {l['p999_ms']:.2f} ms")
PY
}

catchup_summary() { # json name broker-cpu-seconds
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["drain"]
print(f"{sys.argv[2]}: drained {d['backlog_bytes'] / 2**20:.0f} MiB at {d['mib_per_s']:.0f} MiB/s "
      f"({d['records_per_s']:.0f} rec/s) in {d['seconds']:.1f} s"
      f"{'' if d['complete'] else ' (INCOMPLETE)'}; broker CPU {float(sys.argv[3]):.1f} s over the run")
PY
}

curve_summary() { # json name
    python3 - "$1" "$2" <<'PY'
import json, sys
for p in json.load(open(sys.argv[1]))["phases"]:
    gib = (p["produce"]["bytes"] + p["consume"]["bytes"]) / 2**30
    cores = p["broker_cpu_cores"]
    per_gib = cores * p["seconds"] / gib if gib > 0 and cores is not None else float("nan")
    l = p["produce_latency"]
    print(f"{sys.argv[2]} at {p['target_rate']:.0f} rec/s: produce {p['produce']['records_per_s']:.0f} rec/s, "
          f"broker {cores:.2f} CPUs, {per_gib:.2f} CPU s/GiB moved, "
          f"p50 {l['p50_ms']:.2f} / p99 {l['p99_ms']:.2f} / p99.9 {l['p999_ms']:.2f} ms")
PY
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"
}

for round in $(seq 1 "$rounds"); do
    for which in old new; do
        bin="$old"
        [[ $which == new ]] && bin="$new"
        data="$(mktemp -d "$root/target/bench-tmp/ab-data.XXXXXX")"
        port=$((20000 + RANDOM % 20000))
        log="$out/broker-$which-$round.log"
        "$bin" start --data-dir "$data" --listen "127.0.0.1:$port" --stats-interval-ms 5000 > "$log" 2>&1 &
        bpid=$!
        for _ in $(seq 1 300); do
            grep -q "sluice: ready" "$log" 2>/dev/null && break
            kill -0 "$bpid" 2>/dev/null || { cat "$log" >&2; exit 1; }
            sleep 0.1
        done
        if [[ -n "$curve" ]]; then
            "$bench" run --bootstrap "127.0.0.1:$port" --workload bench/workloads/latency-50pct.toml \
                --peak "$peak" --peak-fractions "$curve" --broker-pid "$bpid" --out "$out" \
                --name "curve-$which-$round" --warmup-s 3 --duration-s 10 > /dev/null 2>&1
            curve_summary "$out/curve-$which-$round.json" "$which round $round"
        elif [[ $catchup -eq 1 ]]; then
            "$bench" run --bootstrap "127.0.0.1:$port" --workload bench/workloads/catchup-16p.toml \
                --broker-pid "$bpid" --out "$out" --name "catchup-$which-$round" > /dev/null 2>&1
            catchup_summary "$out/catchup-$which-$round.json" "catch-up $which round $round" "$(cpu_seconds "$bpid")"
        else
            "$bench" run --bootstrap "127.0.0.1:$port" --workload bench/workloads/max-rate-1k-16p.toml \
                --broker-pid "$bpid" --out "$out" --name "max-$which-$round" --warmup-s 3 --duration-s 10 > /dev/null 2>&1
            summary "$out/max-$which-$round.json" "max-rate $which round $round"
        fi
        if [[ $max_only -eq 0 && $catchup -eq 0 && -z "$curve" ]]; then
            "$bench" run --bootstrap "127.0.0.1:$port" --workload bench/workloads/latency-50pct.toml \
                --peak "$peak" --peak-fractions 0.5 --broker-pid "$bpid" --out "$out" \
                --name "lat-$which-$round" --warmup-s 3 --duration-s 15 > /dev/null 2>&1
            summary "$out/lat-$which-$round.json" "50 % of $peak $which round $round"
        fi
        kill -TERM "$bpid"
        wait "$bpid" || true
        bpid=""
        rm -rf "$data"
        data=""
    done
done
