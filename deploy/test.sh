#!/usr/bin/env bash
# fleetpulse's test command; CI runs exactly this (through .ci/run).
#
#   ./deploy/test.sh
#
# 1. Installs the real servers the integration tests start themselves
#    (mosquitto, InfluxDB 1.x, VictoriaMetrics: Debian packages), openssl
#    for the broker's test certificates, and chromium for the headless
#    dashboard and report tests, if any binary is missing.
#    Needs root, or sudo.
# 2. Runs rustfmt --check, clippy -D warnings and the whole test suite
#    (cargo-nextest if present, else cargo test), then the doc tests.
#
# The tests start every server on free loopback ports with temporary data
# directories, so this script starts none, and servers the packages may run
# as system services (on their default ports) do not get in the way.
# Every check runs even if an earlier one failed; the exit code is non-zero
# if any failed.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# chromium: the dashboard and report tests render the pages headless.
PACKAGES=(mosquitto mosquitto-clients influxdb victoria-metrics openssl chromium)
BINARIES=(mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd influxd victoria-metrics openssl chromium)
# mosquitto lives in /usr/sbin, which a non-root PATH often lacks; the test
# fixtures look there too.
SEARCH_PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# --- output helpers ---------------------------------------------------------

now_ms() {
    local t=${EPOCHREALTIME/[.,]/}
    echo $((t / 1000))
}
SCRIPT_START=$(now_ms)

elapsed() { # elapsed START_MS -> "12.3s"
    local ms=$(($(now_ms) - $1))
    printf '%d.%01ds' $((ms / 1000)) $((ms % 1000 / 100))
}

section() {
    printf '\n==== %s ====\n' "$*"
}

die() {
    printf '\nERROR: %s\n' "$*" >&2
    exit 1
}

have() {
    PATH="$SEARCH_PATH" command -v "$1" >/dev/null 2>&1
}

# --- 1. servers ---------------------------------------------------------------

SUDO=()
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_RC_D_OURS=0

cleanup() {
    if [[ $POLICY_RC_D_OURS == 1 ]]; then
        "${SUDO[@]}" rm -f "$POLICY_RC_D" || true
    fi
}
trap cleanup EXIT

install_servers() {
    local missing=() b
    for b in "${BINARIES[@]}"; do
        have "$b" || missing+=("$b")
    done
    if ((${#missing[@]} == 0)); then
        echo "all present: ${BINARIES[*]} (apt skipped)"
        return
    fi
    echo "missing: ${missing[*]}"

    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            die "not root and no sudo: as root run
    apt-get update && apt-get install -y --no-install-recommends ${PACKAGES[*]}"
        # No terminal to type a password into (CI): fail instead of waiting.
        if [[ -t 0 ]]; then SUDO=(sudo); else SUDO=(sudo -n); fi
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: install ${PACKAGES[*]} (Debian packages) by hand"

    # The tests start their own servers: keep the packages from starting
    # system services during the install (the usual Docker technique), unless
    # the machine already has a policy.
    if [[ ! -e $POLICY_RC_D ]]; then
        "${SUDO[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $POLICY_RC_D && chmod 755 $POLICY_RC_D"
        POLICY_RC_D_OURS=1
    fi

    local apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q
        -o Acquire::Retries=3
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "${PACKAGES[@]}"

    cleanup
    POLICY_RC_D_OURS=0

    missing=()
    for b in "${BINARIES[@]}"; do
        have "$b" || missing+=("$b")
    done
    ((${#missing[@]} == 0)) || die "still missing after apt-get install: ${missing[*]}"
}

section "servers for the integration tests"
t=$(now_ms)
install_servers
PATH="$SEARCH_PATH"
if command -v dpkg-query >/dev/null 2>&1; then
    dpkg-query -W -f='${Package} ${Version}\n' "${PACKAGES[@]}" 2>/dev/null || true
else
    mosquitto -h 2>&1 | head -n 1 || true
    influxd version 2>&1 | head -n 1 || true
fi
echo "---- done in $(elapsed "$t")"

# --- 2. toolchain -------------------------------------------------------------

section "toolchain"
t=$(now_ms)
cargo --version || die "cargo not found"
rustc --version
cargo fmt --version || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version || die "clippy missing: rustup component add clippy"
if cargo nextest --version >/dev/null 2>&1; then
    NEXTEST=1
    cargo nextest --version | head -n 1
else
    NEXTEST=0
    echo "cargo-nextest not found: falling back to cargo test" \
        "(faster: cargo install cargo-nextest --locked)"
fi
echo "---- done in $(elapsed "$t")"

# --- 3. checks ----------------------------------------------------------------

RESULTS=()
FAILED=0

check() { # check NAME COMMAND...
    local name=$1
    shift
    section "$name: $*"
    local t status=0
    t=$(now_ms)
    "$@" || status=$?
    if ((status == 0)); then
        RESULTS+=("$(printf '%-10s ok      %8s' "$name" "$(elapsed "$t")")")
        echo "---- $name ok in $(elapsed "$t")"
    else
        FAILED=1
        RESULTS+=("$(printf '%-10s FAILED  %8s  (exit %d)' "$name" "$(elapsed "$t")" "$status")")
        echo "---- $name FAILED (exit $status) in $(elapsed "$t")"
    fi
}

check fmt cargo fmt --all -- --check
check clippy cargo clippy --workspace --all-targets -- -D warnings
if ((NEXTEST)); then
    # nextest does not run doc tests. They go first so that nextest's
    # summary is the last test-runner output of the run.
    check doctests cargo test --workspace --doc --no-fail-fast
    # One test per core (nextest's default). At 1.5 per core the phase ends
    # 17% sooner on 2 cores, but the load brings out kill-and-restart
    # losses still being chased (BENCHMARKS.md section 57).
    check tests cargo nextest run --workspace --no-fail-fast
else
    check tests cargo test --workspace --no-fail-fast
fi

section "summary"
printf '%s\n' "${RESULTS[@]}"
echo "total $(elapsed "$SCRIPT_START")"
if ((FAILED)); then
    echo "FAILED"
    exit 1
fi
echo "all checks passed"
