#!/bin/bash
# Docker end-to-end on a Ceph-backed (rbd) service.
#
#   docker-ceph.sh WORKDIR BERTHD CEPH_CONF CEPH_KEYRING
#
# Like docker.sh: berthd and a private dockerd share one private mount
# namespace. Run it where the cluster is reachable (the tests run it in
# network namespace berth-a). Prints one line per check and
# "N passed, N failed".
set -u
W=$1
BERTHD=$2
CONF=$3
KEYRING=$4
if [ "${BERTH_E2E_INNER:-}" != 1 ]; then
    mkdir -p /run/docker/plugins "$W"
    export BERTH_E2E_INNER=1
    exec unshare -m --propagation private "$0" "$@"
fi

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

mkdir -p "$W/plugins" "$W/state" "$W/docker"
mount --bind "$W/plugins" /run/docker/plugins
cat >"$W/config.toml" <<CFG
[daemon]
state_dir = "$W/state"
mount_dir = "$W/state/volumes"
[services.cephblock]
driver = "rbd"
[services.cephblock.ceph]
conf = "$CONF"
keyring = "$KEYRING"
host = "docker-host"
pool = "rbd"
CFG
SOCK=/run/docker/plugins/cephblock.sock

trap e2e_cleanup EXIT

check "berthd starts with an rbd service" start_berthd "$SOCK"

check "private dockerd answers" start_dockerd --bridge=none

mkdir -p "$W/rootfs/bin" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh cat echo; do ln -sf busybox "$W/rootfs/bin/$a"; done
check "test image imported" sh -c "tar -C '$W/rootfs' -c . | docker -H unix://$W/docker/docker.sock import - bbx:1"

check "docker volume create -d cephblock --opt size=1 cephvol" D volume create -d cephblock --opt size=1 cephvol
check "inspect says Scope global and the rbd attach method" sh -c "
    out=\$(docker -H unix://$W/docker/docker.sock volume inspect cephvol) &&
    echo \"\$out\" | grep -q '\"Scope\": \"global\"' && echo \"\$out\" | grep -q 'rbd-fuse+loop'"
check "docker run -v cephvol:/data writes" D run --rm --network none -v cephvol:/data bbx:1 sh -c 'echo hello-ceph > /data/f'
check "volume is unmounted after the container exits" sh -c "! grep -q ' $W/state/volumes/cephvol ' /proc/self/mountinfo"
check "a second container reads what the first wrote" sh -c "docker -H unix://$W/docker/docker.sock run --rm --network none -v cephvol:/data bbx:1 cat /data/f | grep -qx hello-ceph"
check "the data lives in Ceph: the rbd image exists" sh -c "rbd -c '$CONF' --keyring '$KEYRING' ls rbd | grep -qx cephvol"
check "docker volume rm cephvol" D volume rm cephvol
check "the rbd image is gone" sh -c "! rbd -c '$CONF' --keyring '$KEYRING' ls rbd | grep -qx cephvol"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
