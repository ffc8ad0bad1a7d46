#!/usr/bin/env bash
# The same workloads against any Kafka-API brokers given by address, in alternating rounds,
# and one table of medians and ratios (issue 16's side-by-side table). It starts no broker
# and needs no Kafka: it takes bootstrap addresses (sluice, Apache Kafka, Redpanda, Tansu,
# ...). Each broker is measured in turn within a round, so the host's drift favours none:
#   1. max rate: bench/workloads/max-rate-1k-16p.toml (produce + consume MiB/s);
#   2. latency at a fixed rate: latency-50pct.toml at 50 % of the reference peak (--peak, or
#      the first broker's max-rate records/s in round 1): produce p50/p99/p99.9/p99.99;
#   3. catch-up: catchup-16p.toml (a backlog built with the consumer paused, then drained).
# With a broker's PID (NAME=HOST:PORT@PID, a process on this host) its CPU is measured too:
# CPU cores used, and CPU seconds per GiB moved (produced + consumed).
#
# Usage: perf/compare.sh NAME=HOST:PORT[@PID] [NAME=HOST:PORT[@PID] ...]
#            [--rounds N] [--peak REC_PER_S] [--duration-s S] [--skip max|lat|catchup]... [--out DIR]
#   e.g. perf/compare.sh sluice=127.0.0.1:9092@$(pgrep -f 'sluice start') kafka=127.0.0.1:19092
# Writes DIR/compare.md (the table) and each run's JSON beside it (default target/compare).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
usage() { sed -n 2,17p "$0" >&2; exit 2; }
brokers=() rounds=1 peak="" duration=15 out="$root/target/compare" skip=" "
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --peak) peak="$2"; shift 2 ;;
        --duration-s) duration="$2"; shift 2 ;;
        --skip) skip+="$2 "; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage ;;
        *=*) brokers+=("$1"); shift ;;
        *) echo "compare.sh: unknown argument $1" >&2; usage ;;
    esac
done
[[ ${#brokers[@]} -ge 1 ]] || usage
bench="${SLUICE_BENCH:-$root/target/release/sluice-bench}"
if [[ -z "${SLUICE_BENCH:-}" ]]; then
    cargo build --release -p sluice-bench --bin sluice-bench
fi
mkdir -p "$out"
rm -f "$out"/cmp-*.json

addr_of() { local v="${1#*=}"; echo "${v%@*}"; }
pid_of() { local v="${1#*=}"; [[ "$v" == *@* ]] && echo "${v##*@}" || true; }
name_of() { echo "${1%%=*}"; }

run() { # broker-spec workload name [extra args...]
    local spec="$1" workload="$2" name="$3"
    shift 3
    local pid_args=()
    local pid
    pid="$(pid_of "$spec")"
    [[ -n "$pid" ]] && pid_args=(--broker-pid "$pid")
    if ! "$bench" run --bootstrap "$(addr_of "$spec")" --workload "bench/workloads/$workload" \
        "${pid_args[@]}" --out "$out" --name "$name" "$@" > "$out/$name.log" 2>&1; then
        echo "compare.sh: $name failed (see $out/$name.log)" >&2
        return 1
    fi
    echo "  $name done"
}

for round in $(seq 1 "$rounds"); do
    for spec in "${brokers[@]}"; do
        n="$(name_of "$spec")"
        if [[ "$skip" != *" max "* ]]; then
            run "$spec" max-rate-1k-16p.toml "cmp-max-$n-$round" --warmup-s 3 --duration-s "$duration" || true
            if [[ -z "$peak" && -f "$out/cmp-max-$n-$round.json" ]]; then
                # The reference peak: the first broker's, first round.
                peak="$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["phases"][0]["produce"]["records_per_s"]))' "$out/cmp-max-$n-$round.json")"
                echo "reference peak: $peak records/s ($n)"
            fi
        fi
        if [[ "$skip" != *" lat "* && -n "$peak" ]]; then
            run "$spec" latency-50pct.toml "cmp-lat-$n-$round" --peak "$peak" --peak-fractions 0.5 \
                --warmup-s 3 --duration-s "$duration" || true
        fi
        if [[ "$skip" != *" catchup "* ]]; then
            run "$spec" catchup-16p.toml "cmp-catchup-$n-$round" || true
        fi
    done
done

names=()
for spec in "${brokers[@]}"; do names+=("$(name_of "$spec")"); done
python3 - "$out" "$rounds" "${peak:-0}" "${names[@]}" > "$out/compare.md" <<'PY'
import json, os, statistics, subprocess, sys
out, rounds, peak, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]

def load(kind, name, r):
    p = os.path.join(out, f"cmp-{kind}-{name}-{r}.json")
    return json.load(open(p)) if os.path.exists(p) else None

def phase_metric(kind, f):
    """Per broker: the median over rounds of f(phase) (None where no run gave a value)."""
    res = {}
    for n in names:
        vals = []
        for r in range(1, rounds + 1):
            d = load(kind, n, r)
            if d and d.get("phases"):
                v = f(d["phases"][0])
                if v is not None:
                    vals.append(v)
        res[n] = statistics.median(vals) if vals else None
    return res

def cpu_per_gib(p):
    cores = p.get("broker_cpu_cores")
    moved = (p["produce"]["bytes"] + p["consume"]["bytes"]) / 2 ** 30
    return cores * p["seconds"] / moved if cores is not None and moved > 0 else None

def drain(name):
    vals = []
    for r in range(1, rounds + 1):
        d = load("catchup", name, r)
        if d and d.get("drain") and d["drain"].get("complete"):
            vals.append(d["drain"]["mib_per_s"])
    return statistics.median(vals) if vals else None

rows = [
    ("max produce+consume MiB/s", phase_metric("max", lambda p: p["produce"]["mib_per_s"] + p["consume"]["mib_per_s"]), 0),
    ("broker CPUs at max", phase_metric("max", lambda p: p.get("broker_cpu_cores")), 2),
    ("broker CPU s per GiB moved at max", phase_metric("max", cpu_per_gib), 2),
    (f"produce p50 ms at {peak // 2} rec/s", phase_metric("lat", lambda p: p["produce_latency"]["p50_ms"]), 1),
    ("produce p99 ms", phase_metric("lat", lambda p: p["produce_latency"]["p99_ms"]), 1),
    ("produce p99.9 ms", phase_metric("lat", lambda p: p["produce_latency"]["p999_ms"]), 1),
    ("produce p99.99 ms", phase_metric("lat", lambda p: p["produce_latency"]["p9999_ms"]), 1),
    ("achieved rec/s at that rate", phase_metric("lat", lambda p: p["produce"]["records_per_s"]), 0),
    ("broker CPUs at that rate", phase_metric("lat", lambda p: p.get("broker_cpu_cores")), 2),
    ("broker CPU s per GiB moved at that rate", phase_metric("lat", cpu_per_gib), 2),
    ("catch-up drain MiB/s", {n: drain(n) for n in names}, 0),
]
fmt = lambda v, d: "–" if v is None else f"{v:,.{d}f}"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"Medians over {rounds} round(s), brokers alternating within each round "
      f"(perf/compare.sh at {commit}; sluice-bench, 16 partitions, 1 KiB records, acks=all).\n")
ref = names[0]
head = ["same run, same host"] + names + [f"{n} / {ref}" for n in names[1:]]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for label, vals, d in rows:
    cells = [fmt(vals[n], d) for n in names]
    for n in names[1:]:
        a, b = vals[n], vals[ref]
        cells.append("–" if a is None or not b else f"{a / b:.2f}×")
    print(f"| {label} | " + " | ".join(cells) + " |")
PY
cat "$out/compare.md"
