#!/usr/bin/env bash
# Baseline of the load-generator issue, in one run (~10 minutes on a 2-CPU VM):
#   1. host limits: raw O_DIRECT sequential write bandwidth and 4 KiB write+fdatasync latency
#      (sluice-storage-bench), loopback TCP bandwidth and the generator's own ceiling
#      (sluice-bench loopback / self-test);
#   2. starts its own sluice broker on 127.0.0.1 with a scratch data directory;
#   3. runs the shipped workloads (bench/workloads/*.toml), scaled down in time; the latency
#      run uses the peak the max-rate run measured a minute earlier;
#   4. stops the broker and writes perf/results/<YYYY-MM-DD>-<host>.md with every figure as
#      a ratio to its limit and the targets marked PASS/MISS. Raw results (JSON, markdown,
#      SVG plots) go to perf/results/<YYYY-MM-DD>-<host>/.
#
# Usage: perf/baseline.sh [--separate-cpus] [--quick] | --report-only perf/results/<date>-<host>
#   --separate-cpus  broker on CPU 0 (one shard), generator on CPU 1 (the rest of the host is
#                    still shared with whatever else runs there)
#   --quick          ~3 minutes: shorter phases, for checking the script itself
#   --report-only D  re-render the summary from D's raw results and D/meta.env (no runs)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

separate=0
quick=0
report_only=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    a="${args[$i]}"
    case "$a" in
        --report-only)
            report_only="${args[$((i + 1))]:-}"
            i=$((i + 1))
            ;;
        --separate-cpus) separate=1 ;;
        --quick) quick=1 ;;
        -h | --help)
            sed -n '2,18p' "$0"
            exit 0
            ;;
        *)
            echo "baseline.sh: unknown argument $a" >&2
            exit 2
            ;;
    esac
done

# Phase lengths (s): warm-up, measured, storage-bench phases, loopback.
if [[ $quick -eq 1 ]]; then
    warm=2 dur=8 sweep_dur=6 storage_s=1 loop_s=2 ret_dur=30
else
    warm=5 dur=30 sweep_dur=20 storage_s=3 loop_s=5 ret_dur=60
fi

if [[ -z "$report_only" ]]; then
cargo build --release -p sluice-bench --bins
cargo build --release -p sluice

bench="$root/target/release/sluice-bench"
storage_bench="$root/target/release/sluice-storage-bench"
broker="$root/target/release/sluice"
day="$(date -u +%Y-%m-%d)"
host="$(hostname -s 2>/dev/null || hostname)"
out="$root/perf/results/$day-$host"
md="$root/perf/results/$day-$host.md"
mkdir -p "$out"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
if [[ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]]; then
    dirty=" (with uncommitted changes)"
fi

# The scratch data must be on the real disk (the storage bench refuses tmpfs; so should we).
scratch="$root/target/bench-tmp"
mkdir -p "$scratch"

echo "== host limits" >&2
"$storage_bench" --dir "$scratch" --seconds "$storage_s" --json "$out/storage.json" > "$out/storage.md"
"$bench" loopback --seconds "$loop_s" --json "$out/loopback.json"
gen_cpus_flag=()
broker_prefix=()
broker_flags=()
if [[ $separate -eq 1 ]]; then
    gen_cpus_flag=(--cpus 1)
    broker_prefix=(taskset -c 0)
    broker_flags=(--shards 1)
fi
"$bench" self-test --seconds 2 "${gen_cpus_flag[@]}" --json "$out/self-test.json" > "$out/self-test.md"

echo "== broker" >&2
data="$(mktemp -d "$scratch/baseline-data.XXXXXX")"
port=$((20000 + RANDOM % 20000))
blog="$out/broker.log"
"${broker_prefix[@]}" "$broker" start --data-dir "$data" --listen "127.0.0.1:$port" \
    --retention-check-interval-ms 1000 --stats-interval-ms 5000 "${broker_flags[@]}" > "$blog" 2>&1 &
bpid=$!
cleanup() {
    if kill -0 "$bpid" 2>/dev/null; then
        kill -TERM "$bpid" 2>/dev/null || true
        # Bounded wait for the broker's flush-and-exit.
        for _ in $(seq 1 100); do
            kill -0 "$bpid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$bpid" 2>/dev/null || true
    fi
    rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 1 300); do
    grep -q "sluice: ready" "$blog" 2>/dev/null && break
    kill -0 "$bpid" 2>/dev/null || { cat "$blog" >&2; echo "broker exited" >&2; exit 1; }
    sleep 0.1
done
grep -q "sluice: ready" "$blog" || { cat "$blog" >&2; echo "broker not ready in 30 s" >&2; exit 1; }

run() { # name workload extra-args...
    local name="$1" wl="$2"
    shift 2
    echo "== workload $name" >&2
    "$bench" run --bootstrap "127.0.0.1:$port" --workload "bench/workloads/$wl.toml" \
        --broker-pid "$bpid" --out "$out" --name "$name" "${gen_cpus_flag[@]}" "$@" > /dev/null
}

jq_py() { # file expr
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"
}

run max-rate max-rate-1k-16p --warmup-s "$warm" --duration-s "$dur"
peak="$(jq_py "$out/max-rate.json" 'd["phases"][0]["produce"]["records_per_s"]')"
run latency latency-50pct --peak "$peak" --peak-fractions 0.25,0.5,0.75 \
    --warmup-s "$warm" --duration-s "$sweep_dur"
# One more 50 %-of-peak run whose window is known, to pick the broker's per-stage timers
# (logged every 5 s) from the middle of its measured phase.
stages_from_ms="$(date +%s%3N)"
run stages latency-50pct --peak "$peak" --peak-fractions 0.5 --warmup-s "$warm" --duration-s "$dur"
stages_to_ms="$(date +%s%3N)"
run producers-50 producers-50 --warmup-s "$warm" --duration-s "$dur"
run keyed-100 keyed-100-producers --warmup-s "$warm" --duration-s "$dur"
# Runs delete their topics when done (tens of GB otherwise); this one's segments are counted.
run retention retention --warmup-s "$warm" --duration-s "$ret_dur" --delete-topic false
segments_left="$(find "$data" -name '*.log' -path '*bench-retention*' 2>/dev/null | wc -l)"

cleanup
trap - EXIT
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# Everything the summary needs besides the JSON files, so --report-only can re-render it.
{
    printf 'DAY=%q\nHOST=%q\nSTARTED=%q\nCOMMAND=%q\nCOMMIT=%q\n' "$day" "$host" "$started" \
        "perf/baseline.sh${*:+ $*}" "$commit$dirty"
    printf 'KERNEL=%q\nCPUS=%q\n' "$(uname -srm)" \
        "$(nproc) ($(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1))"
    printf 'LOAD_BEFORE=%q\nLOAD_AFTER=%q\nPORT=%q\nPEAK=%q\nSEGMENTS_LEFT=%q\n' \
        "$load_before" "$load_after" "$port" "$peak" "$segments_left"
    printf 'STAGES_FROM_MS=%q\nSTAGES_TO_MS=%q\nMEASURED_S=%q\n' \
        "$stages_from_ms" "$stages_to_ms" "$dur"
} > "$out/meta.env"
else
    out="$(cd "$report_only" && pwd)"
    md="$out.md"
fi

set -a
# shellcheck disable=SC1091
source "$out/meta.env"
set +a
echo "== report" >&2
python3 - "$out" "$md" <<'EOF'
import json, os, sys
out, md = sys.argv[1], sys.argv[2]
E = os.environ
j = lambda n: json.load(open(os.path.join(out, n + ".json")))
st, lb, stt = j("storage"), j("loopback"), j("self-test")
disk = st["raw_write"]["mib_per_s"]
sync = st["raw_fdatasync_4k"]["fdatasync"]
sync_p99, sync_p999 = sync["p99_us"] / 1000, sync["p999_us"] / 1000
loop = lb["mib_per_s"]
limit = min(disk, loop)
names = ["max-rate", "latency", "stages", "producers-50", "keyed-100", "retention"]
runs = {n: j(n) for n in names if os.path.exists(os.path.join(out, n + ".json"))}
mx = runs["max-rate"]["phases"][0]
lat = [p for p in runs["latency"]["phases"]]
half = min(lat, key=lambda p: abs(p["target_rate"] - 0.5 * float(E["PEAK"])))
tp_ratio = mx["produce"]["mib_per_s"] / limit
p99_ratio = half["produce_latency"]["p99_ms"] / sync_p99
p999_ratio = half["produce_latency"]["p999_ms"] / sync_p99
v = lambda ok: "PASS" if ok else "MISS"
L = []
w = L.append
w(f"# Load-generator baseline, {E['DAY']}, {E['HOST']}\n")
w(f"- started: {E['STARTED']}; command: `{E['COMMAND']}`")
w(f"- commit: {E['COMMIT']}")
w(f"- kernel: {E['KERNEL']}; CPUs: {E['CPUS']}")
w(f"- CPU placement: {runs['max-rate']['host']['cpu_note']}")
w(f"- load average (1/5/15 min) before / after: {E['LOAD_BEFORE']} / {E['LOAD_AFTER']} (other agents' builds share these CPUs)")
w(f"- broker: `target/release/sluice start --retention-check-interval-ms 1000` on 127.0.0.1:{E['PORT']}, data on the same disk as the storage bench")
w(f"- raw results, per-run markdown and SVG plots: [{os.path.basename(out)}/]({os.path.basename(out)}/)\n")
w("## Limits of this host\n")
w("| limit | value |\n|---|---|")
w(f"| raw O_DIRECT sequential write, 1 MiB QD1 | {disk:.0f} MiB/s |")
w(f"| raw 4 KiB write+fdatasync | p50 {sync['p50_us']/1000:.3f} / p99 {sync_p99:.3f} / p99.9 {sync_p999:.3f} ms |")
w(f"| loopback TCP, one connection | {loop:.0f} MiB/s |")
w(f"| generator ceiling (self-test, {stt['threads']} threads): record path / + librdkafka enqueue | {stt['record_path_records_per_s']:.0f} / {stt['enqueue_records_per_s']:.0f} rec/s ({stt['enqueue_mib_per_s']:.0f} MiB/s at 1 KiB) |")
w(f"| generator ceiling (self-test): native producer to a discard server (what max-rate and latency use) | {stt.get('native_records_per_s', 0):.0f} rec/s ({stt.get('native_mib_per_s', 0):.0f} MiB/s) |")
w(f"| throughput limit = min(disk, loopback) | {limit:.0f} MiB/s |\n")
w("## Workloads\n")
w("| run | phase target rec/s | produce rec/s | produce MiB/s | ÷ limit | consume rec/s | produce p50 / p99 / p99.9 ms | p99 ÷ fdatasync p99 | e2e p50 / p99 / p99.9 ms | generator CPUs | host busy | broker CPUs |")
w("|---|---|---|---|---|---|---|---|---|---|---|---|")
for n, r in runs.items():
    for p in r["phases"]:
        pl, el = p["produce_latency"], p["e2e_latency"]
        tgt = f"{p['target_rate']:.0f}" if p["target_rate"] > 0 else "max"
        b = p["broker_cpu_cores"]
        w(f"| {n} | {tgt} | {p['produce']['records_per_s']:.0f} | {p['produce']['mib_per_s']:.1f} | {p['produce']['mib_per_s']/limit:.3f} | {p['consume']['records_per_s']:.0f} | {pl['p50_ms']:.2f} / {pl['p99_ms']:.2f} / {pl['p999_ms']:.2f} | {pl['p99_ms']/sync_p99:.2f} | {el['p50_ms']:.2f} / {el['p99_ms']:.2f} / {el['p999_ms']:.2f} | {p['generator_cpu_cores']:.2f} | {p['host_cpu_busy']*100:.0f} % | {'–' if b is None else f'{b:.2f}'} |")
w("")
w("Backlog drain (records behind when producers stopped → drain rate):\n")
for n, r in runs.items():
    d = r["drain"]
    w(f"- {n}: {d['backlog_records']} records, {d['records_per_s']:.0f} rec/s ({d['mib_per_s']:.1f} MiB/s) over {d['seconds']:.1f} s{'' if d['complete'] else ' — INCOMPLETE'}")
w(f"\nRetention run: {E['SEGMENTS_LEFT']} segment files of the retention topic left at the end (4 MiB segments, 16 MiB retention.bytes per partition, 4 partitions: ~16 if retention deletes, ~{int(runs['retention']['phases'][0]['produce']['bytes']/4194304)+4} if it did not).\n")
w("## Targets\n")
w("| target | measured | goal | verdict |\n|---|---|---|---|")
w(f"| max-rate produce MiB/s ÷ min(disk, loopback) MiB/s, 1 KiB records | {mx['produce']['mib_per_s']:.1f} ÷ {limit:.0f} = {tp_ratio:.3f} | ≥ 0.50 | {v(tp_ratio >= 0.5)} |")
w(f"| at 50 % of peak ({half['target_rate']:.0f} rec/s): produce p99 ÷ fdatasync p99 | {half['produce_latency']['p99_ms']:.2f} ÷ {sync_p99:.2f} = {p99_ratio:.2f} | ≤ 3 | {v(p99_ratio <= 3)} |")
w(f"| at 50 % of peak: produce p99.9 ÷ fdatasync p99 | {half['produce_latency']['p999_ms']:.2f} ÷ {sync_p99:.2f} = {p999_ratio:.2f} | ≤ 5 | {v(p999_ratio <= 5)} |")
w(f"\n(For reference: produce p99.9 ÷ fdatasync p99.9 = {half['produce_latency']['p999_ms']/sync_p999:.2f}.)\n")
# Per-stage timers: for each shard, the 5 s block of the broker's stats log nearest the
# middle of the stages run's measured phase (which ends when the generator exits).
stage_lines = []
if "STAGES_TO_MS" in E and os.path.exists(os.path.join(out, "broker.log")):
    mid = int(E["STAGES_TO_MS"]) - int(E["MEASURED_S"]) * 500
    blocks = {}
    cur = None
    for line in open(os.path.join(out, "broker.log")):
        if " stats " not in line:
            continue
        body = line.split(" stats ", 1)[1].rstrip()
        if " interval " in body and "unix_ms" in body:
            shard, end = body.split()[0], int(body.split("unix_ms ")[1].split()[0])
            cur = [end, [body]]
            blocks.setdefault(shard, []).append(cur)
        elif cur is not None:
            cur[1].append(body)
    for shard in sorted(blocks):
        best = min(blocks[shard], key=lambda b: abs(b[0] - 2500 - mid))
        if abs(best[0] - 2500 - mid) < 10000:
            stage_lines += best[1]
if stage_lines:
    w("## Where produce time goes (broker per-stage timers)\n")
    w(f"A separate run at 50 % of peak (`stages`, {runs['stages']['phases'][0]['produce']['records_per_s']:.0f} rec/s, produce p50 / p99 / p99.9 {runs['stages']['phases'][0]['produce_latency']['p50_ms']:.2f} / {runs['stages']['phases'][0]['produce_latency']['p99_ms']:.2f} / {runs['stages']['phases'][0]['produce_latency']['p999_ms']:.2f} ms at the client); the broker's `--stats-interval-ms 5000` timers for one 5 s interval in the middle of its measured phase, per shard. Stages: `produce.request` frame decoded → response written; `produce.handled` → every partition answered; `produce.remote_partition` one partition's cross-shard call; `produce.append` the append itself; `produce.append_to_durable` append → covered by an fdatasync; `flush.write` / `flush.fdatasync` one flush's writes / sync. What the client sees beyond `produce.request` is its own batching (linger), its queue and the loopback.\n")
    w("```")
    L.extend(stage_lines)
    w("```\n")
warn = [(n, m) for n, r in runs.items() for m in r["warnings"]]
if warn:
    w("## Warnings from the generator\n")
    for n, m in warn:
        w(f"- {n}: {m}")
    w("")
w("## Plots\n")
for n in runs:
    w(f"### {n}\n\n![{n}]({os.path.basename(out)}/{n}.svg)\n")
open(md, "w").write("\n".join(L) + "\n")
print("\n".join(L))
EOF
echo "wrote $md and $out/" >&2
