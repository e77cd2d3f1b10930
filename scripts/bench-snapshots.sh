#!/bin/bash
# Snapshot and clone times of a 1 GiB volume holding 500 MiB of data:
# reflink pool (an xfs filesystem of its own, loop-mounted by the
# benchmark) against copy pool (the ext4 root), through berthd's plugin
# socket. Needs root, mkfs.xfs and filefrag. BENCH_RUNS=N sets the runs
# per figure (default 10; the copy pool does at most 5).
#
#   sudo scripts/bench-snapshots.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench snapshots
