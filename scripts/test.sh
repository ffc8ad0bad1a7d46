#!/usr/bin/env bash
# The project's test command: installs test dependencies, builds the release broker the
# integration tests run, then runs every test in the workspace. Exits non-zero on any
# failure. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p sluice-tests`,
# or `scripts/test.sh -- --nocapture`); with arguments, they replace `--workspace`.
#
# Then the client suites run again against a 3-node cluster with every topic at
# replication factor 3 (SLUICE_TEST_CLUSTER=3, see tests/src/lib.rs): real clients
# (librdkafka, kafka-python, kcat, the load generator, raw wire) producing, fetching,
# administering topics and running consumer groups on replicated partitions. About 2.5 min
# on the 2-core host; only with the full test suite (no arguments);
# SLUICE_TEST_CLUSTER_SUITES=0 skips it.
#
# After the tests, a short fuzzing run (scripts/fuzz.sh, SLUICE_FUZZ_SECONDS per target,
# default 20; 0 skips it) checks that no input the fuzzer reaches quickly crashes the
# request path or record-batch validation. It runs only with the full test suite (no
# arguments). The long runs are recorded in perf/results/*-fuzz.md.
#
# Why two builds: the integration tests (tests/) drive the `sluice` binary as a separate
# process and use target/release/sluice, so the broker is measured optimised; the test
# crates themselves build in the dev profile (opt-level 1, dependencies at 2), which is
# fast enough and quicker to compile.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash scripts/install-test-deps.sh

echo "test.sh: cargo build --release -p sluice -p sluice-bench"
cargo build --release -p sluice -p sluice-bench

# Pin the harness to exactly the binary just built (it would find the same one by
# default; this also covers a relative CARGO_TARGET_DIR).
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
[[ "$target_dir" = /* ]] || target_dir="$repo_root/$target_dir"
export SLUICE_BIN="$target_dir/release/sluice"

if (($#)); then
    echo "test.sh: cargo test $*"
    cargo test "$@"
else
    echo "test.sh: cargo test --workspace"
    cargo test --workspace
    # --workspace, not -p sluice-tests: the same feature resolution as the run above, so
    # its test binaries are reused instead of rebuilt (rdkafka-sys included).
    cluster_suites=(--test rdkafka_basic --test python_client --test quickstart --test groups
        --test bad_input --test loadgen --test transactions)
    if [[ "${SLUICE_TEST_CLUSTER_SUITES:-1}" != 0 ]]; then
        echo "test.sh: SLUICE_TEST_CLUSTER=3 cargo test --workspace ${cluster_suites[*]}"
        SLUICE_TEST_CLUSTER=3 cargo test --workspace "${cluster_suites[@]}"
    else
        echo "test.sh: client suites on a 3-node cluster skipped (SLUICE_TEST_CLUSTER_SUITES=0)"
    fi
    fuzz_seconds="${SLUICE_FUZZ_SECONDS:-20}"
    if ((fuzz_seconds > 0)); then
        echo "test.sh: scripts/fuzz.sh $fuzz_seconds"
        bash scripts/fuzz.sh "$fuzz_seconds"
    fi
fi
