#!/usr/bin/env bash
# Installs everything the integration tests (tests/) need on a fresh Debian machine
# of this project's kind: run as root, non-interactive, idempotent. A second run
# with everything present does no apt and no pip work and takes about a second.
#
# What and why:
#   - make, gcc, g++, pkg-config, zlib1g-dev: rdkafka-sys builds the bundled
#     librdkafka with its ./configure + make and links zlib (libz feature);
#     zstd-sys and libz-sys compile C through the cc crate.
#   - kcat: the README quickstart is checked with it (librdkafka's CLI client).
#   - tests/.venv: a Python venv with the pinned packages of
#     tests/python/requirements.txt (kafka-python and its codec libraries), used by
#     tests/tests/python_client.rs as a client that is not librdkafka.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/tests/.venv"
requirements="$repo_root/tests/python/requirements.txt"

log() { echo "install-test-deps: $*"; }

# ---- Debian packages -------------------------------------------------------
apt_packages=(make gcc g++ pkg-config zlib1g-dev kcat)
missing=()
for pkg in "${apt_packages[@]}"; do
    # dpkg-query is the ground truth; `command -v` would accept a tool from elsewhere
    # but then the package's headers (zlib1g-dev) could still be missing.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
    log "Debian packages present: ${apt_packages[*]}"
fi

# ---- Python venv -----------------------------------------------------------
# Prefer python3.11 explicitly (the machine's interpreter), then any python3.
python=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then
        python="$(command -v "$candidate")"
        break
    fi
done
if [[ -z "$python" ]]; then
    log "no python3 on PATH; installing Debian's python3"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-venv
    python="$(command -v python3)"
fi

# The stamp records which requirements (and interpreter) the venv was built for, so
# an unchanged venv is reused and a changed requirements.txt triggers a reinstall.
stamp="$venv/.sluice-requirements.sha256"
want_stamp="$( (sha256sum "$requirements" | cut -d' ' -f1; "$python" --version) | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
    log "venv up to date: $venv"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating venv $venv with $python"
        if ! "$python" -m venv "$venv"; then
            # Debian's own python3 needs python3-venv for ensurepip.
            rm -rf "$venv"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq --no-install-recommends python3-venv
            "$python" -m venv "$venv"
        fi
    fi
    log "pip install -r $requirements"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$requirements"
    echo "$want_stamp" >"$stamp"
fi

# Fail here, with a clear message, rather than inside a test.
"$venv/bin/python" -c 'import kafka, lz4.frame, zstandard, snappy; print("install-test-deps: kafka-python", kafka.__version__)'
command -v kcat >/dev/null
log "done"
