#!/bin/bash
# The documented commands marked `runs: daemon` (README.md, docs/*.md),
# against a real berthd and a private dockerd.
#
#   docs.sh WORKDIR BERTHD BINDIR BLOCK...
#
# Runs in a private mount and network namespace: /run/docker/plugins and
# /srv are directories under WORKDIR there (state_dir is /srv/berth, so a
# documented `berth volume import NAME /srv/FILE` moves the file within
# one filesystem), dockerd's bridge lives and dies with the namespace.
# The docker CLI reaches the private engine through DOCKER_HOST, `berth`
# (from BINDIR) the default socket; `busybox` is an image of the host's
# busybox-static. Each BLOCK (a script whose first line is `# FILE:LINE`)
# runs with `bash -e -o pipefail` in WORKDIR/cwd; one line per block, then
# "N passed, N failed".
set -u
W=$1
BERTHD=$2
BINDIR=$3
shift 3
if [ "${BERTH_E2E_INNER:-}" != 1 ]; then
    mkdir -p /run/docker/plugins /srv "$W"
    export BERTH_E2E_INNER=1
    exec unshare -m -n --propagation private "$0" "$W" "$BERTHD" "$BINDIR" "$@"
fi

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

ip link set lo up
mkdir -p "$W/plugins" "$W/srv" "$W/docker" "$W/cwd"
mount --bind "$W/plugins" /run/docker/plugins
mount --bind "$W/srv" /srv
cat >"$W/config.toml" <<CFG
[daemon]
state_dir = "/srv/berth"
mount_dir = "/srv/berth/volumes"
[volume.create.default]
size = "1G"
[services.berth]
driver = "loop"
CFG

cleanup() {
    # What berthd mounted under /srv and the loop devices on its images;
    # then lib.sh's clean-up for what is under $W.
    [ -n "${DPID}" ] && kill "$DPID" 2>/dev/null && for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    DPID=
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep '^/srv/' | sort -r); do umount -l "$m" 2>/dev/null; done
    for l in $(losetup -nO NAME,BACK-FILE 2>/dev/null | awk 'index($2, "/srv/") == 1 {print $1}'); do losetup -d "$l"; done
    e2e_cleanup
}
trap cleanup EXIT

check "berthd starts and binds the berth socket" start_berthd
check "private dockerd answers" start_dockerd
export DOCKER_HOST="unix://$W/docker/docker.sock"
export PATH="$BINDIR:$PATH"
mkdir -p "$W/rootfs/bin" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh cat echo ls stat sleep id touch; do ln -sf busybox "$W/rootfs/bin/$a"; done
check "image busybox from busybox-static" sh -c "tar -C '$W/rootfs' -c . | docker import - busybox:latest"
# What the documented commands refer to.
truncate -s 64M /srv/old.img && mkfs.ext4 -q /srv/old.img

for b in "$@"; do
    at=$(sed -n '1s/^# //p' "$b")
    check "$at" bash -c "cd '$W/cwd' && bash -e -o pipefail '$b'"
done
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
