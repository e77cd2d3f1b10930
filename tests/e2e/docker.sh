#!/bin/bash
# End-to-end check of Berth against a real Docker engine.
#
#   docker.sh WORKDIR BERTHD
#
# Runs berthd and a private dockerd in one private mount namespace, where
# /run/docker/plugins is a private directory: volume mounts made by berthd
# are seen by dockerd, and nothing leaks to the host's plugin directory or
# to another dockerd. Prints one line per check and "N passed, N failed".
set -u
W=$1
BERTHD=$2
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
# Volumes created without a size (docker run -v NEW:/path) get this one;
# the built-in 16 GB would be refused on a host with less free disk.
[volume.create.default]
size = "1G"
[services.berth]
driver = "loop"
CFG

trap e2e_cleanup EXIT

check "berthd starts and binds the berth socket" start_berthd

check "private dockerd answers" start_dockerd --bridge=none

# A test image: busybox-static alone.
mkdir -p "$W/rootfs/bin" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh cat echo ls stat sleep id touch; do ln -sf busybox "$W/rootfs/bin/$a"; done
check "test image imported" sh -c "tar -C '$W/rootfs' -c . | docker -H unix://$W/docker/docker.sock import - bbx:1"

check "docker volume create -d berth --opt size=1 vol1" D volume create -d berth --opt size=1 vol1
check "inspect shows REX-Ray's Status keys and Scope local" sh -c "
    D() { docker -H unix://$W/docker/docker.sock \"\$@\"; }
    out=\$(D volume inspect vol1) &&
    for k in name size iops type availabilityZone service server fields fsType; do
        echo \"\$out\" | grep -q \"\\\"\$k\\\"\" || { echo missing \$k; exit 1; }
    done &&
    echo \"\$out\" | grep -q '\"Scope\": \"local\"' && echo \"\$out\" | grep -q '\"size\": 1'"
check "docker run --mount src=vol1,dst=/data writes a file" D run --rm --network none --mount type=volume,src=vol1,dst=/data bbx:1 sh -c 'echo written-before-kill > /data/f'
check "volume is unmounted after the container exits" sh -c "! grep -q ' $W/state/volumes/vol1 ' /proc/self/mountinfo"

# A running container holds the volume while berthd is killed.
check "long-running container with vol1" D run -d --name holder --network none -v vol1:/data bbx:1 sleep 600
check "docker cp into the running container (extra Mount/Unmount pair)" sh -c "echo cp-data > $W/cpfile && docker -H unix://$W/docker/docker.sock cp $W/cpfile holder:/data/cpfile"
check "volume still mounted after docker cp" grep -q " $W/state/volumes/vol1 " /proc/self/mountinfo
kill -9 "$BPID"; wait "$BPID" 2>/dev/null
check "volume still mounted after SIGKILL of berthd" grep -q " $W/state/volumes/vol1 " /proc/self/mountinfo
check "berthd restarts" start_berthd
check "a second container reads the file written before the kill" sh -c "docker -H unix://$W/docker/docker.sock run --rm --network none -v vol1:/data bbx:1 cat /data/f | grep -q written-before-kill"
check "the holder still sees its data" sh -c "docker -H unix://$W/docker/docker.sock exec holder cat /data/cpfile | grep -q cp-data"
check "volume still mounted while holder runs" grep -q " $W/state/volumes/vol1 " /proc/self/mountinfo
check "docker rm -f holder (Docker's Unmount after the restart)" D rm -f holder
check "volume unmounted once its last user left" sh -c "! grep -q ' $W/state/volumes/vol1 ' /proc/self/mountinfo"
check "docker volume rm vol1" D volume rm vol1
check "no image file left" sh -c "! ls $W/state/images/berth/vol1.img 2>/dev/null"

check "xfs volume owned by uid 1000" D volume create -d berth --opt fsType=xfs --opt size=2 --opt uid=1000 vx
check "a container running as uid 1000 writes to it" D run --rm --network none --user 1000 -v vx:/data bbx:1 sh -c 'echo mine > /data/f && id -u'
check "it really is xfs" sh -c "blkid -p -o value -s TYPE $W/state/images/berth/vx.img | grep -qx xfs"
check "docker volume ls lists both drivers' volumes" sh -c "docker -H unix://$W/docker/docker.sock volume ls | grep -q 'berth *vx'"
check "docker volume rm vx" D volume rm vx
check "docker run --volume-driver berth -v new1:/data creates the volume" D run --rm --network none --volume-driver berth -v new1:/data bbx:1 sh -c 'echo x > /data/x'
check "docker volume rm new1" D volume rm new1

# A refused docker command: the same text in the journal/log at WARNING.
refused() {
    local out
    out=$(docker -H unix://$W/docker/docker.sock volume create -d berth --opt size=lots bad1 2>&1) && return 1
    echo "docker said: $out"
    # dockerd prints "... VolumeDriver.Create: <Berth's message>"
    local msg=${out##*VolumeDriver.Create: }
    grep -F "VolumeDriver.Create failed: $msg" "$W/berthd.log" | grep -q WARN
}
check "a refused docker volume create is logged once at WARNING with Docker's text" refused
check "...exactly once" sh -c "[ \$(grep -c 'VolumeDriver.Create failed: volume bad1' $W/berthd.log) -eq 1 ]"

check "no mount left" sh -c "! grep -q ' $W/state/volumes/' /proc/self/mountinfo"
check "no loop device left" sh -c "! losetup -nO BACK-FILE | grep -q '$W/'"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
