#!/usr/bin/env bash
# Fuzz the request path and record-batch validation with cargo-fuzz (libFuzzer): installs
# the pinned cargo-fuzz if missing, builds the targets in src/codec/fuzz, writes the
# generated seeds into the corpus, and runs each target for SECONDS_PER_TARGET seconds
# (default 30), one after the other. Exits non-zero as soon as a target crashes; the input
# is then in src/codec/fuzz/artifacts/<target>/ and can be replayed with
#   (cd src/codec && cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>)
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    (targets: request record_batch)
#
# Environment:
#   SLUICE_FUZZ_SANITIZER  none (default) or address. Stable Rust runs libFuzzer fine
#                          without a sanitizer (the targets are safe Rust, and a panic is
#                          the crash we look for); ASan needs -Zsanitizer, which this script
#                          allows on stable through RUSTC_BOOTSTRAP=1 (see perf/results/
#                          2026-12-01-fuzz.md).
#   SLUICE_FUZZ_ARGS       extra libFuzzer arguments, e.g. "-runs=100000000".
#
# Why -s none is the default: the sanitizer runtimes ship with stable rustc, but ASan only
# adds checks to unsafe code (one line in the vendored crate) at a 2-3x cost in executions.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-30}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(request record_batch)
sanitizer="${SLUICE_FUZZ_SANITIZER:-none}"
read -r -a extra_args <<<"${SLUICE_FUZZ_ARGS:-}"

# Pinned so that a fresh machine fuzzes with the same cargo-fuzz as the recorded runs.
cargo_fuzz_version=0.13.1
if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "fuzz.sh: cargo install cargo-fuzz --version $cargo_fuzz_version --locked"
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

if [[ "$sanitizer" != none ]]; then
    # -Zsanitizer is a nightly flag; stable rustc accepts it when told it is bootstrapping.
    export RUSTC_BOOTSTRAP=1
fi

# Without a sanitizer libFuzzer cannot print the crash's stack; the Rust panic hook can.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

cd "$repo_root/src/codec"
build=(cargo fuzz build --sanitizer "$sanitizer")
echo "fuzz.sh: ${build[*]}"
"${build[@]}"

# Longest input libFuzzer generates: enough for a produce request carrying a few batches,
# small enough to keep each execution cheap.
max_len_of() {
    case "$1" in
    request) echo 8192 ;;
    *) echo 4096 ;;
    esac
}

for target in "${targets[@]}"; do
    mkdir -p "fuzz/artifacts/$target"
    # The target writes the generated seeds (src/codec/fuzz/src/seeds.rs) into its corpus.
    export SLUICE_FUZZ_SEEDS_DIR="fuzz/corpus/$target"
    run=(cargo fuzz run --sanitizer "$sanitizer" "$target" "fuzz/corpus/$target"
        -- -max_total_time="$seconds" -max_len="$(max_len_of "$target")" -timeout=10
        -rss_limit_mb=2048 -print_final_stats=1 "${extra_args[@]}")
    echo "fuzz.sh: ${run[*]}"
    rc=0
    "${run[@]}" || rc=$?
    if ((rc == 72)); then
        # libFuzzer's exit code for SIGINT/SIGTERM: stopped, not a finding.
        echo "fuzz.sh: $target interrupted" >&2
        exit 130
    elif ((rc != 0)); then
        echo "fuzz.sh: $target failed (exit $rc); input in src/codec/fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
echo "fuzz.sh: ${targets[*]}: no crashes in ${seconds}s each"
