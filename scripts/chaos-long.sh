#!/bin/bash
# The long robustness runs (docs/robustness.md): 1 000 SIGKILLs, 1 000 000
# hostile requests, a longer load, the fault sweep and 30 minutes of
# fuzzing. Needs root (loop devices, mounts). Every knob can be set from
# the environment; BERTH_TEST_SEED replays a run. Prints FIGURES lines.
#
#   sudo scripts/chaos-long.sh            # everything
#   sudo scripts/chaos-long.sh chaos      # one part: chaos, hostile, load, faults, fuzz, ceph
set -euo pipefail
cd "$(dirname "$0")/.."

export BERTH_CHAOS_KILLS="${BERTH_CHAOS_KILLS:-1000}"
export BERTH_HOSTILE_REQUESTS="${BERTH_HOSTILE_REQUESTS:-1000000}"
export BERTH_PRECHECK_CASES="${BERTH_PRECHECK_CASES:-2000000}"
export BERTH_LOAD_ROUNDS="${BERTH_LOAD_ROUNDS:-10}"
FUZZ_SECONDS="${BERTH_FUZZ_SECONDS:-1800}"
parts=("${@:-chaos hostile load faults fuzz ceph}")
# shellcheck disable=SC2206
parts=(${parts[*]})

run() { echo "== $*"; "$@"; }

for part in "${parts[@]}"; do
    case "$part" in
    chaos) run cargo test --test chaos -- --nocapture ;;
    ceph) BERTH_CEPH_CHAOS_KILLS="${BERTH_CEPH_CHAOS_KILLS:-100}" \
        run cargo test --features ceph --test ceph_chaos -- --nocapture ;;
    hostile) run cargo test --test hostile -- --nocapture ;;
    load) run cargo test --test load -- --nocapture ;;
    faults) run cargo test --features failpoints --test faults -- --nocapture --test-threads=1 ;;
    fuzz)
        if ! rustup toolchain list | grep -q nightly; then
            echo "SKIPPED fuzz: no nightly toolchain (cargo-fuzz needs one)"
            continue
        fi
        command -v cargo-fuzz >/dev/null || run cargo install cargo-fuzz --locked
        corpus="${BERTH_FUZZ_CORPUS:-$(mktemp -d)}"
        (cd fuzz && run cargo +nightly fuzz run request "$corpus" seeds/request -- \
            -dict=request.dict -max_total_time="$FUZZ_SECONDS" -print_final_stats=1)
        ;;
    *) echo "unknown part $part (chaos, hostile, load, faults, fuzz, ceph)" >&2; exit 2 ;;
    esac
done
