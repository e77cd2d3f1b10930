#!/bin/bash
# The docker-level cycle, Berth next to Docker's `local` driver in the same
# run: median of RUNS (default 15) cycles of
#   docker volume create [-d berth --opt size=1] VOL
#   docker run --rm -v VOL:/data IMG true
#   docker volume rm VOL
# interleaved (local, Berth, local, Berth, ...), through a private dockerd
# (own data root, exec root and socket; vfs storage; no bridge, no
# iptables) and a private berthd (loop driver, ext4 1 GiB volumes).
# Prints both medians, the difference, where Berth's part of the time
# went (its own create/mount/unmount/remove durations from its log) and
# the plugin calls dockerd makes per cycle.
#
#   scripts/bench-docker-cycle.sh [BERTHD]      (root; needs dockerd, busybox)
#
# BERTHD defaults to target/release/berthd (built when missing).
set -eu
RUNS=${RUNS:-15}
HERE=$(cd "$(dirname "$0")/.." && pwd)
BERTHD=${1:-${CARGO_TARGET_DIR:-$HERE/target}/release/berthd}

if [ "$(id -u)" != 0 ]; then
    echo "SKIPPED: the docker cycle needs root" >&2
    exit 0
fi
for t in dockerd docker busybox; do
    command -v "$t" >/dev/null || { echo "SKIPPED: $t not found" >&2; exit 0; }
done

if [ "${BERTH_BENCH_INNER:-}" != 1 ]; then
    [ -x "$BERTHD" ] || (cd "$HERE" && cargo build --release --bin berthd)
    W=$(mktemp -d /var/tmp/berth-docker-cycle.XXXXXX)
    mkdir -p /run/docker/plugins
    export BERTH_BENCH_INNER=1 W BERTHD
    # A private mount namespace with its own /run/docker/plugins: volume
    # mounts made by berthd are seen by dockerd, and no other dockerd on
    # the host sees the plugin.
    rc=0
    unshare -m --propagation private "$0" "$@" || rc=$?
    rm -rf "$W"
    exit $rc
fi

mkdir -p "$W/plugins" "$W/state" "$W/docker" "$W/rootfs/bin"
mount --bind "$W/plugins" /run/docker/plugins
cat >"$W/config.toml" <<CFG
[daemon]
state_dir = "$W/state"
mount_dir = "$W/state/volumes"
log_level = "info"
[services.berth]
driver = "loop"
CFG

# shellcheck source=tests/e2e/lib.sh
. "$HERE/tests/e2e/lib.sh"
cleanup() {
    e2e_cleanup
    umount /run/docker/plugins 2>/dev/null || true
}
trap cleanup EXIT

stop_berthd() {
    kill "$BPID"
    wait "$BPID" 2>/dev/null || true
    BPID=
}
start_berthd

start_dockerd --bridge=none >/dev/null

# The image: busybox-static alone.
cp "$(command -v busybox)" "$W/rootfs/bin/busybox"
ln -s busybox "$W/rootfs/bin/true"
ln -s busybox "$W/rootfs/bin/sh"
tar -C "$W/rootfs" -c . | D import - bbx:bench >/dev/null

cycle() { # DRIVER NAME → milliseconds on stdout
    local opts=()
    [ "$1" = berth ] && opts=(-d berth --opt size=1)
    local t0=$EPOCHREALTIME
    D volume create "${opts[@]}" "$2" >/dev/null
    D run --rm --network none -v "$2:/data" bbx:bench true
    D volume rm "$2" >/dev/null
    local t1=$EPOCHREALTIME
    echo $(((${t1/./} - ${t0/./}) / 1000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

for i in 1 2; do cycle local warm-l$i >/dev/null; cycle berth warm-b$i >/dev/null; done
: >"$W/local.ms"
: >"$W/berth.ms"
mark=$(wc -l <"$W/berthd.log")
for i in $(seq 1 "$RUNS"); do
    cycle local "cl$i" >>"$W/local.ms"
    cycle berth "cb$i" >>"$W/berth.ms"
done
L=$(median <"$W/local.ms")
B=$(median <"$W/berth.ms")
echo "# docker volume create + docker run --rm -v VOL:/data + docker volume rm ($RUNS cycles each, interleaved; load: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| driver | median | min | max |"
echo "|---|---|---|---|"
echo "| local | $L ms | $(sort -n "$W/local.ms" | head -1) ms | $(sort -n "$W/local.ms" | tail -1) ms |"
echo "| berth (loop, ext4 1 GiB) | $B ms | $(sort -n "$W/berth.ms" | head -1) ms | $(sort -n "$W/berth.ms" | tail -1) ms |"
echo
echo "Berth − local: $(awk -v b="$B" -v l="$L" 'BEGIN {print b - l}') ms"
echo
echo "Berth's own time per step (medians over the measured cycles, from its log):"
for what in "volume created" "volume mounted" "volume unmounted" "volume removed"; do
    tail -n +"$mark" "$W/berthd.log" | grep "$what" | sed -n 's/.*duration_ms=\([0-9]*\).*/\1/p' | median |
        awk -v w="$what" '{printf "  %-17s %s ms\n", w, $1}'
done

# One more cycle with every request logged: the calls dockerd makes.
stop_berthd
RUST_LOG=debug start_berthd
mark=$(wc -l <"$W/berthd.log")
cycle berth traced >/dev/null
echo
echo "Plugin calls in one cycle (with their time inside berthd):"
tail -n +"$mark" "$W/berthd.log" | grep ' request' |
    sed -n 's/.*route=\/VolumeDriver\.\([A-Za-z]*\).*duration_us=\([0-9]*\).*/  \1 \2 µs/p'
