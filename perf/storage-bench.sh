#!/usr/bin/env bash
# Storage benchmark of the Foundation issue: builds sluice-storage-bench in release, runs it
# (raw O_DIRECT bandwidth, raw 4 KiB write+fdatasync latency, log append throughput, log
# durable-append latency) and records the result, dated, in
# perf/results/<YYYY-MM-DD>-<hostname>-storage.md (+ .json with every figure).
#
# Usage: perf/storage-bench.sh [sluice-storage-bench flags...]
#   e.g. perf/storage-bench.sh --seconds 10 --dir /mnt/nvme/tmp
# Defaults: --seconds 5, --batch-bytes 1MiB, --dir ./target/bench-tmp (must be a real disk).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

dir="./target/bench-tmp"
have_seconds=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --dir) dir="${args[$((i + 1))]:-}" ;;
        --dir=*) dir="${args[$i]#--dir=}" ;;
        --seconds | --seconds=*) have_seconds=1 ;;
        --json | --json=*)
            echo "storage-bench.sh: --json is set by this script" >&2
            exit 2
            ;;
    esac
done
if [[ $have_seconds -eq 0 ]]; then
    args+=(--seconds 5)
fi

cargo build --release -p sluice-bench --bin sluice-storage-bench

day="$(date -u +%Y-%m-%d)"
host="$(hostname -s 2>/dev/null || hostname)"
out_dir="$root/perf/results"
mkdir -p "$out_dir" "$dir"
md="$out_dir/$day-$host-storage.md"
json="$out_dir/$day-$host-storage.json"
bin="$root/target/release/sluice-storage-bench"

# Facts about the machine, taken before the run (load is what other processes add as noise).
kernel="$(uname -srm)"
cpus="$(nproc)"
cpu_model="$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)"
mem="$(free -h 2>/dev/null | awk '/^Mem:/ {print $2}')"
fs="$(findmnt -no FSTYPE,SOURCE,OPTIONS -T "$dir" 2>/dev/null || df -T "$dir" | tail -n1)"
dev="$(findmnt -no SOURCE -T "$dir" 2>/dev/null | sed 's|^/dev/||; s|[0-9]*$||' || true)"
disk=""
if [[ -n "$dev" && -d "/sys/block/$dev/queue" ]]; then
    q="/sys/block/$dev/queue"
    disk="$dev: rotational=$(cat $q/rotational), write_cache=$(cat $q/write_cache), scheduler=$(cat $q/scheduler)"
fi
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
dirty=""
# Not `git status | grep -q`: under pipefail, grep's early exit makes git's SIGPIPE fail the test.
if [[ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]]; then
    dirty=" (with uncommitted changes)"
fi
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

cmd=("$bin" "${args[@]}" --json "$json")
echo "running: ${cmd[*]}" >&2
table="$("${cmd[@]}")"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

{
    echo "# Storage benchmark, $day, $host"
    echo
    echo "- started: $started"
    echo "- command: \`perf/storage-bench.sh${*:+ $*}\` → \`${cmd[*]#"$root/"}\`"
    echo "- commit: $commit$dirty"
    echo "- kernel: $kernel"
    echo "- CPUs: $cpus ($cpu_model), memory $mem"
    echo "- data directory: $dir — filesystem: $fs"
    [[ -n "$disk" ]] && echo "- disk: $disk"
    echo "- load average before / after: $load_before / $load_after"
    echo "- raw figures: $(basename "$json")"
    echo
    echo "$table"
} > "$md"

echo "$table"
echo >&2
echo "wrote $md and $json" >&2
