#!/bin/bash
# REX-Ray's scheduler examples, verbatim, against Berth and a real Docker
# engine.
#
#   seed.sh WORKDIR BERTHD
#
# berthd serves the services the examples name (virtualbox, scaleio,
# rexray) with the configuration of the examples' own config.yml (volumes
# of 1 GB by default). A private dockerd, in a private mount and network
# namespace, runs the Docker CLI commands of the examples as written, and
# the Marathon Docker-containerizer example as the `docker run` Mesos
# builds from it. Prints one line per check and "N passed, N failed".
set -u
W=$1
BERTHD=$2
if [ "${BERTH_E2E_INNER:-}" != 1 ]; then
    mkdir -p /run/docker/plugins "$W"
    export BERTH_E2E_INNER=1
    exec unshare -m -n --propagation private "$0" "$@"
fi

# shellcheck source=tests/e2e/lib.sh
. "$(dirname "$0")/lib.sh"

ip link set lo up
mkdir -p "$W/plugins" "$W/state" "$W/docker"
mount --bind "$W/plugins" /run/docker/plugins
cat >"$W/config.toml" <<CFG
[daemon]
state_dir = "$W/state"
mount_dir = "$W/state/volumes"
# libstorage.integration.volume.operations.create.default.size: 1
[volume.create.default]
size = 1
[services.virtualbox]
driver = "loop"
[services.scaleio]
driver = "loop"
[services.rexray]
driver = "loop"
CFG

trap e2e_cleanup EXIT

check "berthd starts with the services virtualbox, scaleio and rexray" start_berthd /run/docker/plugins/rexray.sock

# `ls /run/docker/plugins/` shows the seed's sockets (and rexray's).
check "ls /run/docker/plugins/ shows scaleio.sock and virtualbox.sock" sh -c '
    out=$(ls /run/docker/plugins/) && echo "$out" &&
    echo "$out" | grep -qx scaleio.sock && echo "$out" | grep -qx virtualbox.sock'

start_dockerd >/dev/null 2>&1
# The seed writes `docker ...`: the docker CLI finds the private engine
# through DOCKER_HOST, so the commands below are the seed's, character for
# character.
export DOCKER_HOST="unix://$W/docker/docker.sock"
check "private dockerd answers" docker version

# The Marathon app's image, million12/nginx: busybox serving /data/www.
mkdir -p "$W/rootfs/bin" "$W/rootfs/tmp" "$W/rootfs/data/www"
cp /bin/busybox "$W/rootfs/bin/busybox"
for a in sh cat echo ls httpd sleep touch wget; do ln -sf busybox "$W/rootfs/bin/$a"; done
check "test image million12/nginx imported" sh -c "tar -C '$W/rootfs' -c . | docker import \
    --change 'CMD [\"sh\", \"-c\", \"echo served-from-berth > /data/www/index.html && exec httpd -f -p 80 -h /data/www\"]' \
    - million12/nginx"

# ---- Docker: Volume Management
check "docker volume (usage, as in the seed)" sh -c 'docker volume 2>&1 | grep -q "Manage volumes"'

# The volumes the seed's listing shows: local1, Volume-001 (scaleio), vbox1.
check "setup: volumes local1, Volume-001 and vbox1" sh -c '
    docker volume create local1 && docker volume create -d scaleio Volume-001 &&
    docker volume create -d virtualbox vbox1'

check "docker volume ls (the seed's listing)" sh -c '
    out=$(docker volume ls) && echo "$out" &&
    echo "$out" | grep -q "^DRIVER *VOLUME NAME" &&
    echo "$out" | grep -q "^local *local1$" &&
    echo "$out" | grep -q "^scaleio *Volume-001$" &&
    echo "$out" | grep -q "^virtualbox *vbox1$"'

check "docker volume inspect vbox1 (the seed's Status keys)" sh -c '
    out=$(docker volume inspect vbox1) && echo "$out" &&
    for k in availabilityZone fields iops name server service size type; do
        echo "$out" | grep -q "\"$k\":" || { echo "missing $k"; exit 1; }
    done &&
    echo "$out" | grep -q "\"Driver\": \"virtualbox\"" &&
    echo "$out" | grep -q "\"service\": \"virtualbox\"" &&
    echo "$out" | grep -q "\"size\": 1,"'

check "docker volume create --driver=virtualbox --name=vbox2 --opt=size=2" sh -c '
    out=$(docker volume create --driver=virtualbox --name=vbox2 --opt=size=2) && echo "$out" &&
    [ "$out" = vbox2 ] && docker volume inspect vbox2 | grep -q "\"size\": 2,"'

# The option table: size, IOPS, volumeType (a type no pool is named after
# is recorded), volumeName/snapshotName (create from a volume/snapshot).
check "docker volume create --opt=IOPS=150 --opt=volumeType=io1 (recorded)" sh -c '
    docker volume create --driver=virtualbox --name=vbox3 --opt=size=1 --opt=IOPS=150 --opt=volumeType=io1 &&
    out=$(docker volume inspect vbox3) && echo "$out" &&
    echo "$out" | grep -q "\"iops\": 150" && echo "$out" | grep -q "\"type\": \"io1\""'
check "docker volume create --opt=volumeName=vbox3 (a copy)" \
    docker volume create --driver=virtualbox --name=vbox4 --opt=volumeName=vbox3

check "docker volume rm vbox2" docker volume rm vbox2
check "vbox2 is gone" sh -c '! docker volume inspect vbox2'
check "cleanup: vbox3 and vbox4" docker volume rm vbox3 vbox4

# ---- Mesos: Docker containerizer with Marathon
# Mesos turns the app into this command line: cpus 0.2 -> --cpu-shares 204,
# mem 32 -> --memory 33554432, BRIDGE with containerPort 80 -> --net bridge
# -p HOSTPORT:80/tcp, each parameter -> --key=value.
check "Marathon nginx app as docker run --volume-driver=rexray --volume=nginx-data:/data/www" \
    docker run -d --name mesos-nginx --cpu-shares 204 --memory 33554432 --net bridge -p 31000:80/tcp \
    --volume-driver=rexray --volume=nginx-data:/data/www million12/nginx
check "the rexray service created and mounted nginx-data" sh -c "
    for _ in \$(seq 1 100); do [ -f '$W/state/volumes/nginx-data/data/index.html' ] && break; sleep 0.1; done
    grep -q ' $W/state/volumes/nginx-data ' /proc/self/mountinfo &&
    grep -qx served-from-berth '$W/state/volumes/nginx-data/data/index.html'"
check "nginx-data is a rexray volume" sh -c 'docker volume ls | grep -q "^rexray *nginx-data$"'
check "the app serves its page from the volume through the mapped port" sh -c '
    for _ in $(seq 1 50); do
        out=$(busybox wget -q -O - http://127.0.0.1:31000/ 2>/dev/null) && [ "$out" = served-from-berth ] && exit 0
        sleep 0.2
    done
    exit 1'
check "docker rm -f mesos-nginx" docker rm -f mesos-nginx
check "nginx-data unmounted once the task is gone" sh -c "! grep -q ' $W/state/volumes/nginx-data ' /proc/self/mountinfo"
check "a new task finds the data" sh -c '
    docker run --rm --net none --volume-driver=rexray --volume=nginx-data:/data/www million12/nginx cat /data/www/index.html |
    grep -qx served-from-berth'

# ---- Swarm and Compose (docs/migrating-from-rexray.md), on a one-node
# Swarm: the service's mount names the driver; the Compose file's volume
# has driver_opts.
check "docker swarm init" docker swarm init --advertise-addr 127.0.0.1
check "docker service create --mount type=volume,...,volume-driver=rexray,volume-opt=size=1" \
    docker service create --detach --no-resolve-image --name web \
    --mount type=volume,source=site,destination=/data/www,volume-driver=rexray,volume-opt=size=1 \
    million12/nginx
check "the Swarm task runs and its volume site is a mounted rexray volume" sh -c "
    for _ in \$(seq 1 300); do [ -f '$W/state/volumes/site/data/index.html' ] && break; sleep 0.2; done
    docker volume ls | grep -q '^rexray *site$' &&
    grep -q ' $W/state/volumes/site ' /proc/self/mountinfo"
check "docker service rm web" docker service rm web
cat >"$W/compose.yml" <<'YML'
services:
  web:
    image: million12/nginx
    volumes:
      - site2:/data/www
volumes:
  site2:
    driver: rexray
    driver_opts:
      size: "1"
      volumeType: io1
YML
check "the Compose file parses (docker stack config)" docker stack config -c "$W/compose.yml"
check "docker stack deploy: the Compose volume is created by rexray with its driver_opts" sh -c "
    docker stack deploy --detach=true --resolve-image never -c '$W/compose.yml' seed &&
    for _ in \$(seq 1 300); do docker volume inspect seed_site2 >/dev/null 2>&1 && break; sleep 0.2; done
    out=\$(docker volume inspect seed_site2) && echo \"\$out\" &&
    echo \"\$out\" | grep -q '\"Driver\": \"rexray\"' && echo \"\$out\" | grep -q '\"type\": \"io1\"' &&
    echo \"\$out\" | grep -q '\"size\": 1,'"
check "docker stack rm seed" docker stack rm seed
check "the Swarm's volumes unmounted once the tasks are gone" sh -c "
    for _ in \$(seq 1 300); do
        grep -q ' $W/state/volumes/site' /proc/self/mountinfo || exit 0; sleep 0.2
    done; exit 1"
check "docker swarm leave --force" docker swarm leave --force
check "cleanup: docker volume rm site seed_site2" sh -c "
    for _ in \$(seq 1 100); do docker volume rm site seed_site2 && exit 0; sleep 0.3; done; exit 1"

# ---- An image file REX-Ray left (its data under /data, as REX-Ray's
# rootPath put it), adopted by a create of its name (docs/migrating-from-rexray.md).
adopt_image() {
    local img=$W/old.img m=$W/old.mnt
    truncate -s 64M "$img" && mkfs.ext4 -q -F "$img" && mkdir -p "$m" &&
        mount -o loop "$img" "$m" && mkdir "$m/data" && echo kept-from-rexray >"$m/data/hello" &&
        umount "$m" && mkdir -p "$W/state/images/rexray" && mv "$img" "$W/state/images/rexray/old.img"
}
check "setup: an ext4 image holding data/hello" adopt_image
check "docker volume create -d rexray old adopts it" docker volume create -d rexray old
check "a container reads the adopted data" sh -c '
    docker run --rm --net none --volume-driver=rexray -v old:/data/www million12/nginx cat /data/www/hello |
    grep -qx kept-from-rexray'
check "it kept its filesystem and size" sh -c '
    out=$(docker volume inspect old) && echo "$out" &&
    echo "$out" | grep -q "\"fsType\": \"ext4\"" && echo "$out" | grep -q "\"sizeBytes\": 67108864"'

check "cleanup: docker volume rm nginx-data vbox1 Volume-001 local1 old" docker volume rm nginx-data vbox1 Volume-001 local1 old
check "no mount left" sh -c "! grep -q ' $W/state/volumes/' /proc/self/mountinfo"
check "no loop device left" sh -c "! losetup -nO BACK-FILE | grep -q '$W/'"
echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
