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

PASS=0
FAIL=0
check() {
    local what=$1
    shift
    if "$@" >>"$W/checks.log" 2>&1; then
        echo "ok   - $what"
        PASS=$((PASS + 1))
    else
        echo "FAIL - $what (see $W/checks.log)"
        FAIL=$((FAIL + 1))
    fi
}

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

BPID=
DPID=
cleanup() {
    [ -n "${DPID}" ] && kill "$DPID" 2>/dev/null && for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    [ -n "${BPID}" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep "^$W/" | sort -r); do umount -l "$m" 2>/dev/null; done
}
trap cleanup EXIT

start_berthd() {
    "$BERTHD" --config "$W/config.toml" >>"$W/berthd.log" 2>&1 &
    BPID=$!
    for _ in $(seq 1 200); do
        [ -S "$SOCK" ] && curl -s --unix-socket "$SOCK" -X POST http://p/Plugin.Activate >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}
check "berthd starts with an rbd service" start_berthd

echo '{}' >"$W/docker/daemon.json"
dockerd --config-file "$W/docker/daemon.json" --data-root "$W/docker/root" --exec-root "$W/docker/exec" \
    --pidfile "$W/docker/pid" -H "unix://$W/docker/docker.sock" --iptables=false --ip6tables=false \
    --bridge=none --storage-driver=vfs >"$W/docker/log" 2>&1 &
DPID=$!
D() { docker -H "unix://$W/docker/docker.sock" "$@"; }
for _ in $(seq 1 150); do D version >/dev/null 2>&1 && break; sleep 0.2; done
check "private dockerd answers" D version

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
