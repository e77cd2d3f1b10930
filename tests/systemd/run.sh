#!/bin/bash
# shellcheck disable=SC2016 # commands for the machine expand there, not here
# run.sh - Berth's package and units under real systemd.
#
# Builds the .deb (and a rebuilt one with a higher version, and once the
# package of the commit that wrote tests/fixtures/v1), checks it with lintian, boots a minimal Debian with systemd as PID 1
# (systemd-nspawn -b) in which a Docker engine runs, and checks install,
# socket activation, sd-notify status, journald fields, adding a service,
# crash recovery, reload, an idle daemon behind its socket, upgrade,
# remove and purge, and an upgrade from the fixtures' release with a
# container running, the documented commands marked `runs: systemd` (the
# scripts in $BERTH_DOC_BLOCKS, which tests/systemd_nspawn.rs writes), and
# the package berth-ceph on a machine that had no Ceph library.
# Prints one line per check and "N passed, N failed";
# exits non-zero when a check failed.
#
# Run as root: tests/systemd/run.sh
# Needs: systemd-container, mmdebstrap, debhelper, dpkg-dev, build-essential, help2man,
# lintian, util-linux, and cargo in PATH. The rootfs tarball and the cargo
# target directory are cached in $BERTH_TEST_CACHE (/var/cache/berth-test).
#
# Environment: BERTH_TEST_CACHE, BERTH_TEST_TARGET_DIR (cargo target dir,
# default $BERTH_TEST_CACHE/target), BERTH_TEST_OLD_TARGET_DIR (the one of
# the fixtures' release, default the same: its dependencies are reused), BERTH_TEST_KEEP=1 (leave the machine
# running after the checks, for a look inside; stop it with the command
# printed), plus those of box.sh.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/systemd/box.sh
. "$HERE/box.sh"

CACHE=$BOX_CACHE
mkdir -p "$CACHE"
# One run at a time per cache: they share the build tree and the target.
exec 9>"$CACHE/lock"
if ! flock -n 9; then
    echo "run.sh: another run holds $CACHE/lock; waiting" >&2
    flock 9
fi

WORK=$(mktemp -d "$CACHE/run.XXXXXX")
DEBS="$WORK/debs"
mkdir -p "$DEBS"
T0=$(date +%s%N)
PASS=0
FAIL=0
ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
say() { echo "---- [$(ms) ms] $*"; }
ok() {
    PASS=$((PASS + 1))
    echo "ok   [$(ms) ms] $*"
}
bad() {
    FAIL=$((FAIL + 1))
    echo "FAIL [$(ms) ms] $*"
    # Enough context to see why, once per failure.
    if [ -n "$BOX_NSPAWN_PID" ]; then
        X journalctl -n 12 --no-pager -o short-monotonic -u 'berth@*' 2>&1 | sed 's/^/     | /'
    fi
}
# check DESCRIPTION CMD...: one line, pass when CMD succeeds.
check() {
    local d=$1
    shift
    if "$@"; then
        ok "$d"
    else
        bad "$d"
        return 1
    fi
}
# wait_for SECONDS CMD...: until CMD succeeds (true) or time is up (false).
wait_for() {
    local limit=$1 t0=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - t0)) -ge "$limit" ] && return 1
        sleep 0.2
    done
}

# Fatal: the remaining checks cannot run.
die() {
    bad "$*"
    exit 1
}

cleanup() {
    local rc=$?
    if [ "${BERTH_TEST_KEEP:-0}" = 1 ] && [ -n "$BOX_NSPAWN_PID" ]; then
        echo "machine left running: nsenter -t $(box_leader) -a bash; stop: kill -TERM $BOX_NSPAWN_PID"
    else
        if [ -n "$BOX_NSPAWN_PID" ]; then
            box_halt
            # Whatever the machine mounted went with its mount namespace;
            # autoclear detached the loop devices under those mounts.
            local left
            left=$(grep -l "^$BOX_ROOT/" /sys/block/loop*/loop/backing_file 2>/dev/null)
            check "11 machine halted, no loop device left on its images${left:+: $left}" test -z "$left"
        fi
        box_remove
        rm -rf --one-file-system "$WORK"
    fi
    echo "total $(ms) ms"
    echo "$PASS passed, $FAIL failed"
    [ -n "${BERTH_TEST_SUMMARY:-}" ] && echo "$PASS passed, $FAIL failed" >"$BERTH_TEST_SUMMARY"
    [ "$rc" = 0 ] && [ "$FAIL" != 0 ] && rc=1
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

########################################################################
# 0. Packages: the .deb, and a rebuilt one with a higher version.
########################################################################
# A copy of the tree at a fixed path, so cargo finds its previous build
# up to date (mtimes are kept); debian/changelog is edited in the copy only.
BUILD="$CACHE/build/berth"
say "building the packages (log: $WORK/build.log)"
rm -rf --one-file-system "$BUILD"
mkdir -p "$BUILD"
tar -C "$SRC" -c --exclude=./target --exclude='./target-*' --exclude=./.git --exclude=./.sdbox \
    --exclude=./debian/berth --exclude=./debian/.debhelper --exclude=./debian/generated \
    --exclude=./debian/files --exclude='./debian/*.substvars' --exclude='./debian/*.log' \
    --exclude=./debian/debhelper-build-stamp . | tar -C "$BUILD" -x
export CARGO_TARGET_DIR=${BERTH_TEST_TARGET_DIR:-$CACHE/target}
# The packages built here are tested, not shipped: they are built without
# link-time optimisation and with parallel code generation (several times
# faster on a cold machine). What is tested is the package (files, units,
# maintainer scripts, behaviour), which the optimiser does not change;
# `dpkg-buildpackage` elsewhere uses Cargo.toml's release profile.
# tests/upgrade/old-berthd.sh builds with the same settings into the same
# target directory, so they share the compiled dependencies.
export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
build_deb() {
    (cd "$BUILD" && dpkg-buildpackage -b -us -uc) >>"$WORK/build.log" 2>&1 || {
        tail -n 40 "$WORK/build.log"
        return 1
    }
    mv "$BUILD"/../berth_*.deb "$BUILD"/../berth-ceph_*.deb "$DEBS/" &&
        rm -f "$BUILD"/../berth_*.buildinfo "$BUILD"/../berth_*.changes
}
V1=$(cd "$BUILD" && dpkg-parsechangelog -S Version)
V2="$V1+upgradetest1"
build_deb || die "0 dpkg-buildpackage -b -us -uc"
ok "0 dpkg-buildpackage -b -us -uc: berth_${V1}"
DEB1=$(ls "$DEBS"/berth_"${V1}"_*.deb)
DEBC1=$(ls "$DEBS"/berth-ceph_"${V1}"_*.deb)
{
    printf 'berth (%s) unstable; urgency=medium\n\n  * Rebuild for the upgrade test.\n\n -- %s  %s\n\n' \
        "$V2" "$(cd "$BUILD" && dpkg-parsechangelog -S Maintainer)" "$(date -R)"
    cat "$BUILD/debian/changelog"
} >"$BUILD/debian/changelog.new" && mv "$BUILD/debian/changelog.new" "$BUILD/debian/changelog"
build_deb || die "0 rebuilt package berth_${V2}"
ok "0 rebuilt package berth_${V2}"
DEB2=$(ls "$DEBS"/berth_"${V2}"_*.deb 2>/dev/null)
DEBC2=$(ls "$DEBS"/berth-ceph_"${V2}"_*.deb 2>/dev/null)

# The package of the commit that wrote tests/fixtures/v1 (section 9),
# built once and kept in $CACHE/old-debs/COMMIT.
OLD=$(sed -n 's/^State records written by berthd at commit \([0-9a-f]*\).*/\1/p' \
    "$SRC/tests/fixtures/v1/loop/MANIFEST.md")
OLD=$(git -C "$SRC" rev-parse -q --verify "${OLD:-none}^{commit}" 2>/dev/null)
OLDDEBS="$CACHE/old-debs/$OLD"
if [ -z "$OLD" ]; then
    say "9 skipped: the fixtures' commit is not in this checkout"
elif ! ls "$OLDDEBS"/berth_*.deb >/dev/null 2>&1; then
    say "building the package of $OLD once (log: $WORK/build-old.log)"
    OBUILD="$CACHE/build/old/berth"
    rm -rf --one-file-system "$CACHE/build/old"
    mkdir -p "$OBUILD"
    git -C "$SRC" archive "$OLD" | tar -C "$OBUILD" -x
    if (cd "$OBUILD" && CARGO_TARGET_DIR=${BERTH_TEST_OLD_TARGET_DIR:-$CARGO_TARGET_DIR} \
        dpkg-buildpackage -b -us -uc) >"$WORK/build-old.log" 2>&1; then
        mkdir -p "$OLDDEBS.tmp" && mv "$OBUILD"/../berth_*.deb "$OLDDEBS.tmp/" &&
            rm -rf "$OLDDEBS" && mv "$OLDDEBS.tmp" "$OLDDEBS"
    else
        tail -n 40 "$WORK/build-old.log"
    fi
    rm -rf --one-file-system "$CACHE/build/old"
fi
DEBOLD=$(ls "$OLDDEBS"/berth_*.deb 2>/dev/null)
[ -z "$OLD" ] || check "0 package of the fixtures' commit ${OLD:0:7}: ${DEBOLD:-none}" test -n "$DEBOLD"

LINTIAN="$WORK/lintian.txt"
lintian --fail-on error "$DEB1" "$DEBC1" >"$LINTIAN" 2>&1
LRC=$?
grep -E '^[EW]: ' "$LINTIAN" | sed 's/^/     | /'
check "0 lintian: no errors ($(grep -c '^W: ' "$LINTIAN") warning(s))" test "$LRC" = 0

########################################################################
# Boot.
########################################################################
say "rootfs"
box_rootfs >/dev/null || die "rootfs ($BOX_TARBALL)"
say "booting"
# Docker in the machine needs every capability, the keyring and bpf
# system calls (runc); --private-network keeps it off the host's network.
box_boot "berth-test-${WORK##*.}" "$WORK" --private-network --capability=all \
    --system-call-filter='@keyring bpf' || die "boot"
say "booted"
cp "$DEB1" "$DEB2" "$DEBC2" "$BOX_ROOT/root/"
if [ -n "$DEBOLD" ]; then
    mkdir -p "$BOX_ROOT/root/old" && cp "$DEBOLD" "$BOX_ROOT/root/old/"
fi
# No udev in the machine: make the loop device nodes the kernel will hand
# out (LOOP_CTL_GET_FREE numbers), on the host's numbering.
shift_bits=0
max_part=$(cat /sys/module/loop/parameters/max_part 2>/dev/null || echo 0)
while [ "$max_part" -gt 0 ]; do
    max_part=$((max_part >> 1))
    shift_bits=$((shift_bits + 1))
done
nloops=$(($(find /sys/block -maxdepth 1 -name 'loop*' | wc -l) + 256))
X sh -c "[ -e /dev/loop-control ] || mknod -m 0600 /dev/loop-control c 10 237
    i=0; while [ \$i -lt $nloops ]; do
        [ -e /dev/loop\$i ] || mknod -m 0660 /dev/loop\$i b 7 \$((i << $shift_bits)); i=\$((i + 1)); done"
wait_for 60 X systemctl is-active -q docker.service || {
    X systemctl status docker.service --no-pager -l | tail -n 20
    die "docker.service in the machine"
}
# A test image from the machine's busybox (no registry is reachable).
X sh -c 'set -e; d=$(mktemp -d); mkdir "$d/bin"; cp /bin/busybox "$d/bin/"
    for a in sh cat echo sleep sync ls; do ln -s busybox "$d/bin/$a"; done
    tar -C "$d" -c . | docker import - berth-test:1 >/dev/null; rm -rf "$d"' ||
    die "docker import of the test image"
D() { X docker "$@"; }
quiet() { "$@" >/dev/null; }
# Output of commands whose success is the check, kept for a look later.
logged() { "$@" >>"$WORK/commands.log" 2>&1; }
RUN=(docker run --network none)
say "ready"

########################################################################
# 1. apt-get install ./berth_*.deb: the socket listens, the daemon does not run.
########################################################################
DEBNAME1=$(basename "$DEB1")
# A host without the group docker (Docker installed later, or never):
# berth@.socket's SocketGroup=docker needs it, the package makes it.
X groupdel docker >/dev/null 2>&1
# The rootfs leaves out the manual pages and docs of its own packages
# (dpkg path-exclude); Berth's are checked below, so they install.
X rm -f /etc/dpkg/dpkg.cfg.d/99mmdebstrap
X sh -c "cd /root && apt-get install -y -q ./$DEBNAME1" >"$WORK/install.log" 2>&1
check "1 apt-get install ./$DEBNAME1" test $? = 0 || tail -n 20 "$WORK/install.log"
check "1 the package made the missing group docker" X getent group docker
# The package berth needs no Ceph library (berth-ceph has the Ceph build).
check "1 no Ceph library in the machine: dpkg -s librados2 librbd1 fail, no librados.so" \
    X sh -c '! dpkg -s librados2 >/dev/null 2>&1 && ! dpkg -s librbd1 >/dev/null 2>&1 &&
             ! ls /usr/lib/*/librados.so* /usr/lib/*/librbd.so* 2>/dev/null'
check "1 berthd and berth run without them (berthd --version, berth --version)" \
    quiet X sh -c 'berthd --version && berth --version'
out=$(X systemd-analyze verify /lib/systemd/system/berth@berth.socket /lib/systemd/system/berth@berth.service 2>&1)
check "1 systemd-analyze verify berth@.socket berth@.service: no output${out:+ ($out)}" test -z "$out"
check "1 berth@berth.socket enabled and listening" \
    X sh -c 'systemctl is-enabled -q berth@berth.socket && systemctl is-active -q berth@berth.socket'
check "1 /run/docker/plugins/berth.sock is a socket, mode 0660, group docker" \
    X sh -c 'test -S /run/docker/plugins/berth.sock && test "$(stat -c %a:%G /run/docker/plugins/berth.sock)" = 660:docker'
check "1 berthd not running (berth@berth.service inactive, no process)" \
    X sh -c 'test "$(systemctl show -P ActiveState berth@berth.service)" = inactive && ! grep -qsx berthd /proc/[0-9]*/comm'
check "1 tmpfiles.d: /var/lib/berth (0711) and /run/berth exist, /run/docker and its plugins are 0711" \
    X sh -c 'test "$(stat -c %a /var/lib/berth)" = 711 && test -d /run/berth &&
             test "$(stat -c %a /run/docker):$(stat -c %a /run/docker/plugins)" = 711:711'
check "1 socket and daemon ordered before docker.service" \
    X sh -c 'systemctl show -P Before berth@berth.socket | grep -qw docker.service &&
             systemctl show -P Before berth@berth.service | grep -qw docker.service'

# Another group with a drop-in, as docs/systemd.md says; then back.
X sh -c 'groupadd -f ops && mkdir -p /etc/systemd/system/berth@.socket.d &&
    printf "[Socket]\nSocketGroup=ops\nSocketMode=0600\n" >/etc/systemd/system/berth@.socket.d/access.conf &&
    systemctl daemon-reload && systemctl restart berth@berth.socket'
check "1 a drop-in with SocketGroup=ops SocketMode=0600 applies" \
    X sh -c 'test "$(stat -c %a:%G /run/docker/plugins/berth.sock)" = 600:ops'
X sh -c 'rm -r /etc/systemd/system/berth@.socket.d && systemctl daemon-reload && systemctl restart berth@berth.socket'
check "1 without it: group docker, mode 0660 again" \
    X sh -c 'test "$(stat -c %a:%G /run/docker/plugins/berth.sock)" = 660:docker'
check "1 manual pages of berth's subcommands and of berth.toml(5), shell completions" \
    X sh -c 'test -f /usr/share/man/man1/berth-volume-create.1.gz && test -f /usr/share/man/man5/berth.toml.5.gz &&
        test -f /usr/share/bash-completion/completions/berth && test -f /usr/share/fish/vendor_completions.d/berth.fish'
# Every relative link between the shipped docs resolves on the host.
check "1 /usr/share/doc/berth: every doc, every relative link between them resolves" \
    X sh -c 'cd /usr/share/doc/berth && test -f docs/ceph.md && bad=0 &&
        for f in README.md docs/*.md; do
            for l in $(grep -o "](\([^):#]*\.md\)" "$f" | sed "s/^](//"); do
                test -f "$(dirname "$f")/$l" || { echo "$f: $l"; bad=1; }
            done
        done; test $bad = 0'
check "1 berth-metrics.timer installed, not enabled" \
    X sh -c 'test -f /lib/systemd/system/berth-metrics.timer && ! systemctl -q is-enabled berth-metrics.timer'

########################################################################
# 2. Docker activates the daemon; a container writes to a volume.
########################################################################
check "2 docker volume create -d berth --opt size=1 v1" quiet D volume create -d berth --opt size=1 v1
check "2 the request started berth@berth.service" \
    X sh -c 'test "$(systemctl show -P ActiveState berth@berth.service)" = active'
PID=$(X systemctl show -P MainPID berth@berth.service)
check "2 berthd (pid $PID) is in the host's mount namespace (mounts reach dockerd)" \
    X sh -c "test \"\$(readlink /proc/$PID/ns/mnt)\" = \"\$(readlink /proc/1/ns/mnt)\""
check "2 docker run -v v1:/data writes a file" \
    X "${RUN[@]}" --rm -v v1:/data berth-test:1 sh -c 'echo written-by-container > /data/f && sync'
check "2 another container reads it back" \
    X sh -c "test \"\$(${RUN[*]} --rm -v v1:/data berth-test:1 cat /data/f)\" = written-by-container"
# keeper holds v1 mounted and in use through checks 3 to 5.
D "${RUN[@]:1}" -d --name keeper -v v1:/data berth-test:1 sleep 100000 >/dev/null
mounted_src() { X findmnt -n -o SOURCE --mountpoint "/var/lib/berth/volumes/$1" 2>/dev/null; }
V1SRC=$(mounted_src v1)
check "2 v1 mounted at /var/lib/berth/volumes/v1 (${V1SRC:-not mounted}) while keeper runs" \
    test -n "$V1SRC"
# berth-metrics.service once, as its timer would run it.
X mkdir -p /var/lib/prometheus/node-exporter
check "2 systemctl start berth-metrics.service" logged X systemctl start berth-metrics.service
check "2 it wrote /var/lib/prometheus/node-exporter/berth-berth.prom: berth_up 1, v1 counted" \
    X sh -c 'f=/var/lib/prometheus/node-exporter/berth-berth.prom &&
        grep -q "^berth_up{service=\"berth\"} 1" $f && grep -q "^berth_volumes{service=\"berth\"} 1" $f'

# Members of the group docker use the plugin and the berth command;
# other users are refused by the socket's mode.
X sh -c 'useradd -M -G docker alice 2>/dev/null; useradd -M bob 2>/dev/null; true'
check "2 alice (group docker) runs berth volume ls" \
    X sh -c 'runuser -u alice -- berth --socket /run/docker/plugins/berth.sock volume ls | grep -qw v1'
check "2 bob (not in the group) is refused" \
    X sh -c '! runuser -u bob -- berth --socket /run/docker/plugins/berth.sock volume ls >/dev/null 2>&1'

########################################################################
# 3. sd-notify status and journald fields.
########################################################################
status_has() { [[ "$(X systemctl show -P StatusText berth@berth.service)" == *"$1"* ]]; }
wait_for 5 status_has 'berth: 1 volume, 1 mounted'
check "3 systemctl show: STATUS= '$(X systemctl show -P StatusText berth@berth.service)'" \
    status_has 'berth: 1 volume, 1 mounted'
journal_has() { # UNIT VOLUME OPERATION
    local j
    j=$(X journalctl -u "$1" -o json --no-pager)
    # No grep -q inside a pipeline: with pipefail, the writer's SIGPIPE fails it.
    grep "\"BERTH_VOLUME\":\"$2\"" <<<"$j" | grep "\"BERTH_OPERATION\":\"$3\"" >/dev/null
}
check "3 journalctl -u berth@berth -o json: BERTH_VOLUME=v1 BERTH_OPERATION=create" journal_has berth@berth.service v1 create
check "3 journalctl -u berth@berth -o json: BERTH_VOLUME=v1 BERTH_OPERATION=mount" journal_has berth@berth.service v1 mount
check "3 journal entries carry BERTH_SERVICE=berth" \
    X sh -c 'journalctl -u berth@berth.service -o json --no-pager | grep -q "\"BERTH_SERVICE\":\"berth\""'
check "3 watchdog armed (WatchdogUSec=$(X systemctl show -P WatchdogUSec berth@berth.service))" \
    X sh -c 'test "$(systemctl show -P WatchdogUSec berth@berth.service)" != 0 &&
             test "$(systemctl show -P WatchdogUSec berth@berth.service)" != infinity'

########################################################################
# 4. Adding a service: systemctl enable --now berth@NAME.socket.
########################################################################
# Requests keep coming on the berth socket while the service is added.
X sh -c 'n=0; f=0; end=$(($(date +%s) + 4)); while [ "$(date +%s)" -lt $end ]; do
    berth volume ls >/dev/null 2>&1 || f=$((f + 1)); n=$((n + 1)); done; echo "$n $f"' >"$WORK/hammer" &
HAMMER=$!
sleep 1
check "4 systemctl enable --now berth@second.socket (berth@berth.service running)" \
    logged X systemctl enable --now berth@second.socket
wait "$HAMMER"
read -r hn hf <"$WORK/hammer"
check "4 $hn requests on berth.sock meanwhile, ${hf:-?} failed" test "${hf:-1}" = 0 -a "${hn:-0}" -gt 0
check "4 berth@second.socket enabled and listening on /run/docker/plugins/second.sock" \
    X sh -c 'systemctl is-enabled -q berth@second.socket && systemctl is-active -q berth@second.socket &&
             test -S /run/docker/plugins/second.sock'
check "4 berth@berth.service untouched (pid $PID)" \
    test "$(X systemctl show -P MainPID berth@berth.service)" = "$PID"
check "4 v1 still mounted from $V1SRC" test "$(mounted_src v1)" = "$V1SRC"
check "4 keeper still writes to v1" D exec keeper sh -c 'echo during-add >> /data/f'
check "4 docker volume create -d second v2" quiet D volume create -d second --opt size=1 v2
check "4 docker run -v v2:/data writes through the new service" \
    X "${RUN[@]}" --rm -v v2:/data berth-test:1 sh -c 'echo second > /data/g'
check "4 berth@second.service serves it" \
    X sh -c 'systemctl is-active -q berth@second.service && test -e /var/lib/berth/images/second/v2.img'
# A socket restart alone is refused while its daemon runs (and leaves the
# socket dead); Requires= in the service makes it restart both.
check "4 systemctl restart berth@second.socket while its daemon runs" logged X systemctl restart berth@second.socket
check "4 the socket listens again and serves" \
    X sh -c 'systemctl is-active -q berth@second.socket && test -S /run/docker/plugins/second.sock &&
             docker volume inspect v2 >/dev/null'

########################################################################
# 5. SIGKILL: systemd restarts berthd; the volume stays mounted.
########################################################################
X systemctl kill -s KILL berth@berth.service
restarted() {
    local p
    p=$(X systemctl show -P MainPID berth@berth.service)
    [ -n "$p" ] && [ "$p" != 0 ] && [ "$p" != "$PID" ] &&
        [ "$(X systemctl show -P ActiveState berth@berth.service)" = active ]
}
check "5 systemctl kill -s KILL berth@berth.service: systemd restarted it" wait_for 20 restarted
check "5 NRestarts=$(X systemctl show -P NRestarts berth@berth.service)" \
    test "$(X systemctl show -P NRestarts berth@berth.service)" = 1
PID=$(X systemctl show -P MainPID berth@berth.service)
check "5 v1 still mounted from $V1SRC" test "$(mounted_src v1)" = "$V1SRC"
check "5 data intact" \
    X sh -c 'test "$(docker exec keeper cat /data/f)" = "$(printf "written-by-container\nduring-add")"'
check "5 Docker's Unmount works (docker rm -f keeper unmounts v1)" quiet D rm -f keeper
check "5 v1 no longer mounted" wait_for 5 test -z "$(mounted_src v1)"
check "5 Docker's Remove works (docker volume rm v1, image gone)" \
    X sh -c 'docker volume rm v1 >/dev/null && ! test -e /var/lib/berth/images/berth/v1.img'

########################################################################
# 6. systemctl reload: new configuration, same process, mounts kept.
########################################################################
D volume create -d berth --opt size=1 v3 >/dev/null
D "${RUN[@]:1}" -d --name keeper2 -v v3:/data berth-test:1 sleep 100000 >/dev/null
D exec keeper2 sh -c 'echo v3-data > /data/h'
V3SRC=$(mounted_src v3)
X sed -i 's/^#size = 16$/size = "300M"/' /etc/berth/config.toml
check "6 edited config passes berthd --check-config" X berthd --check-config --service berth >/dev/null
reloads() { X journalctl -u berth@berth.service -o cat --no-pager | grep -c 'configuration reloaded'; }
before=$(reloads)
check "6 systemctl reload berth@berth.service" X systemctl reload berth@berth.service
reloaded() { [ "$(reloads)" -gt "$before" ]; }
check "6 berthd logged the reload" wait_for 10 reloaded
check "6 same process (pid $PID), active" \
    X sh -c "test \"\$(systemctl show -P MainPID berth@berth.service)\" = $PID && systemctl is-active -q berth@berth.service"
check "6 v3 still mounted (${V3SRC:-not mounted}) and in use" test -n "$V3SRC" -a "$(mounted_src v3)" = "$V3SRC"
check "6 keeper2 reads its data" X sh -c 'test "$(docker exec keeper2 cat /data/h)" = v3-data'
D volume create -d berth v4 >/dev/null
size=$(D volume inspect v4 --format '{{json .Status.sizeBytes}}' 2>&1)
check "6 new default size applies: docker volume create v4 -> sizeBytes $size" test "$size" = 314572800

########################################################################
# 7. Daemon stopped, socket held: docker volume ls stays fast and
#    re-activates it.
########################################################################
logged X systemctl stop berth@berth.service
check "7 berth@berth.service stopped, its socket still listening" \
    X sh -c '! systemctl is-active -q berth@berth.service && systemctl is-active -q berth@berth.socket &&
             test -S /run/docker/plugins/berth.sock'
check "7 v3 stays mounted while berthd is stopped" test "$(mounted_src v3)" = "$V3SRC"
t=$(date +%s%N)
ls_out=$(D volume ls --format '{{.Driver}}/{{.Name}}' 2>&1)
ls_ms=$((($(date +%s%N) - t) / 1000000))
check "7 docker volume ls took $ls_ms ms (< 5000)" test "$ls_ms" -lt 5000
lists_all() { grep -qx berth/v3 <<<"$ls_out" && grep -qx berth/v4 <<<"$ls_out" && grep -qx second/v2 <<<"$ls_out"; }
check "7 it lists berth/v3 berth/v4 second/v2: ${ls_out//$'\n'/ }" lists_all
check "7 the request re-activated berth@berth.service" X systemctl is-active -q berth@berth.service
PID=$(X systemctl show -P MainPID berth@berth.service)

########################################################################
# D. The documented commands marked `runs: systemd` (README.md,
#    docs/*.md), one check each; tests/systemd_nspawn.rs extracts them.
########################################################################
if [ -n "${BERTH_DOC_BLOCKS:-}" ] && [ -d "$BERTH_DOC_BLOCKS" ]; then
    mkdir -p "$BOX_ROOT/root/doc-blocks" "$BOX_ROOT/root/doc-cwd"
    cp "$BERTH_DOC_BLOCKS"/*.sh "$BOX_ROOT/root/doc-blocks/"
    # `apt install ./berth_*.deb` in the docs: the package installed.
    cp "$DEB1" "$BOX_ROOT/root/doc-cwd/"
    for f in "$BOX_ROOT"/root/doc-blocks/*.sh; do
        b=$(basename "$f")
        at=$(sed -n '1s/^# //p' "$f")
        X sh -c "cd /root/doc-cwd && bash -e -o pipefail /root/doc-blocks/$b" >"$WORK/doc-$b.log" 2>&1
        check "D $at runs in the machine" test $? = 0 || sed 's/^/     | /' "$WORK/doc-$b.log" | tail -n 15
    done
    # Undo what they changed: the socket drop-in, the service "doc", the
    # timer; then Docker's next request starts the daemons again.
    X sh -c 'rm -rf /etc/systemd/system/berth@.socket.d && systemctl daemon-reload &&
        systemctl disable -q --now berth@doc.socket berth-metrics.timer;
        systemctl restart berth@berth.socket berth@second.socket' >>"$WORK/commands.log" 2>&1
    D volume ls >/dev/null
    both_active() { X systemctl is-active -q berth@berth.service berth@second.service; }
    check "D afterwards: both daemons serve again" wait_for 10 both_active
    check "D afterwards: sockets of group docker again" \
        X sh -c 'test "$(stat -c %G /run/docker/plugins/berth.sock)" = docker'
    check "D v3 still mounted from $V3SRC" test "$(mounted_src v3)" = "$V3SRC"
    PID=$(X systemctl show -P MainPID berth@berth.service)
else
    say "D skipped: BERTH_DOC_BLOCKS is not set (cargo test --test systemd_nspawn sets it)"
fi

########################################################################
# 8. Upgrade, remove, purge.
########################################################################
SPID=$(X systemctl show -P MainPID berth@second.service)
INODE=$(X stat -c %i /run/docker/plugins/berth.sock)
SINODE=$(X stat -c %i /run/docker/plugins/second.sock)
DEBNAME2=$(basename "$DEB2")
X sh -c "cd /root && apt-get install -y -q ./$DEBNAME2" >"$WORK/upgrade.log" 2>&1
check "8 apt-get install ./$DEBNAME2 (upgrade from $V1)" test $? = 0 || tail -n 20 "$WORK/upgrade.log"
check "8 version $V2 installed" test "$(X dpkg-query -W -f '${Version}' berth)" = "$V2"
newpid() { # UNIT OLDPID
    local p
    p=$(X systemctl show -P MainPID "$1")
    [ "$p" != 0 ] && [ "$p" != "$2" ] && [ "$(X readlink "/proc/$p/exe")" = /usr/sbin/berthd ]
}
check "8 berth@berth.service restarted on the new binary (was pid $PID)" newpid berth@berth.service "$PID"
check "8 berth@second.service restarted on the new binary (was pid $SPID)" newpid berth@second.service "$SPID"
check "8 same sockets (inodes $INODE, $SINODE), still listening" \
    X sh -c "test \"\$(stat -c %i /run/docker/plugins/berth.sock)\" = $INODE &&
             test \"\$(stat -c %i /run/docker/plugins/second.sock)\" = $SINODE &&
             systemctl is-active -q berth@berth.socket berth@second.socket"
v3_intact() { [ "$(mounted_src v3)" = "$V3SRC" ] && [ "$(D exec keeper2 cat /data/h)" = v3-data ]; }
check "8 v3 still mounted from $V3SRC, its data intact" v3_intact
check "8 Docker works after the upgrade (v3 inspect, v2 ls)" \
    X sh -c 'docker volume inspect v3 >/dev/null && docker volume ls -q | grep -qx v2'
D rm -f keeper2 >/dev/null
X sh -c "apt-get remove -y -q berth" >"$WORK/remove.log" 2>&1
check "8 apt-get remove berth" test $? = 0 || tail -n 20 "$WORK/remove.log"
check "8 remove: sockets and daemons stopped, socket files gone" \
    X sh -c '! systemctl is-active -q berth@berth.socket berth@second.socket berth@berth.service berth@second.service &&
             ! ls /run/docker/plugins/*.sock 2>/dev/null && ! grep -qsx berthd /proc/[0-9]*/comm'
check "8 remove: volume images, records and config kept" \
    X sh -c 'test -s /var/lib/berth/images/berth/v3.img && test -s /var/lib/berth/images/second/v2.img &&
             ls /var/lib/berth/records/berth | grep -q v3 && grep -q "^size = \"300M\"" /etc/berth/config.toml'
X sh -c "apt-get purge -y -q berth" >"$WORK/purge.log" 2>&1
check "8 apt-get purge berth" test $? = 0 || tail -n 20 "$WORK/purge.log"
check "8 purge: config gone (/etc/berth)" X test ! -e /etc/berth
check "8 purge: units and their links gone" \
    X sh -c '! ls /lib/systemd/system/berth@* /etc/systemd/system/*/berth@* 2>/dev/null &&
             test -z "$(systemctl list-unit-files --no-legend "berth@*")"'
data_kept() { grep -q 'keeping /var/lib/berth' "$WORK/purge.log" && [ -s "$BOX_ROOT/var/lib/berth/images/berth/v3.img" ]; }
check "8 purge: volume data kept, and said so" data_kept
sed -n 's/^berth: /     | berth: /p' "$WORK/purge.log"
# Once the data is gone, purge takes the state with it, saying so.
X sh -c "rm -rf --one-file-system /var/lib/berth && cd /root && apt-get install -y -q ./$DEBNAME1 &&
    apt-get purge -y -q berth" >"$WORK/purge2.log" 2>&1
state_gone() { grep -q 'removing /var/lib/berth' "$WORK/purge2.log" && X test ! -e /var/lib/berth; }
check "8 install and purge without volumes: /var/lib/berth removed, said so" state_gone

########################################################################
# 9. Upgrade from the release that wrote tests/fixtures/v1, a container
#    running on a Berth volume (docs/upgrading.md).
########################################################################
if [ -n "$DEBOLD" ]; then
    U0=$(date +%s%N)
    # That release's package depends on the Ceph libraries.
    X sh -c "cd /root/old && apt-get install -y -q ./$(basename "$DEBOLD") /root/ceph-debs/*.deb" >"$WORK/install-old.log" 2>&1
    check "9 apt-get install the package of ${OLD:0:7}" test $? = 0 || tail -n 20 "$WORK/install-old.log"
    check "9 docker volume create -d berth --opt size=1 u1 (old berthd)" \
        quiet D volume create -d berth --opt size=1 u1
    D "${RUN[@]:1}" -d --name keeper3 -v u1:/data berth-test:1 \
        sh -c 'echo before-upgrade > /data/u && sync && sleep 100000' >/dev/null
    u1_written() { [ "$(D exec keeper3 cat /data/u 2>/dev/null)" = before-upgrade ]; }
    wait_for 10 u1_written
    U1SRC=$(mounted_src u1)
    check "9 keeper3 wrote to u1, mounted from ${U1SRC:-nothing}" test -n "$U1SRC"
    count_is() { X berth --json volume inspect u1 | grep -Eq "\"mountCount\": *$1([^0-9]|\$)"; }
    check "9 u1's mount count is 1 under the old berthd" count_is 1
    PID=$(X systemctl show -P MainPID berth@berth.service)
    INODE=$(X stat -c %i /run/docker/plugins/berth.sock)
    T=$(date +%s%N)
    X sh -c "cd /root && apt-get install -y -q ./$DEBNAME2" >"$WORK/upgrade-old.log" 2>&1
    check "9 apt-get install ./$DEBNAME2 (upgrade from ${OLD:0:7}, $((($(date +%s%N) - T) / 1000000)) ms)" \
        test $? = 0 || tail -n 20 "$WORK/upgrade-old.log"
    check "9 berth@berth.service restarted on the new binary (was pid $PID)" \
        newpid berth@berth.service "$PID"
    check "9 same socket (inode $INODE)" test "$(X stat -c %i /run/docker/plugins/berth.sock)" = "$INODE"
    u1_alive() {
        [ "$(mounted_src u1)" = "$U1SRC" ] && u1_written &&
            D exec keeper3 sh -c 'echo after-upgrade > /data/v && sync' &&
            [ "$(D exec keeper3 cat /data/v)" = after-upgrade ]
    }
    check "9 keeper3 keeps its data and writes on, u1 still mounted from $U1SRC" u1_alive
    check "9 u1's mount count is still 1 under the new berthd" count_is 1
    formats=$(X berth status | sed -n 's/^berth: record formats //p')
    check "9 berth status: record formats ${formats:-none}" test "$formats" = "1 (1)"
    logged D stop keeper3
    u1_released() { [ -z "$(mounted_src u1)" ] && count_is 0; }
    check "9 docker stop keeper3: the new berthd unmounts u1, count 0" u1_released
    D rm -f keeper3 >/dev/null
    check "9 docker volume rm u1" quiet D volume rm u1
    X sh -c "apt-get purge -y -q berth && rm -rf --one-file-system /var/lib/berth" >>"$WORK/purge.log" 2>&1
    say "9 upgrade from ${OLD:0:7} with a running container: $((($(date +%s%N) - U0) / 1000000)) ms"
fi

########################################################################
# 10. The package berth-ceph: berthd with the Ceph drivers, run by the
#     berthd of the package berth for a configuration with a Ceph service.
########################################################################
X sh -c "dpkg --purge berth-ceph berth; rm -rf --one-file-system /var/lib/berth" >/dev/null 2>&1
DEBNAMEC2=$(basename "$DEBC2")
X sh -c "cd /root && apt-get install -y -q ./$DEBNAME2" >"$WORK/install-10.log" 2>&1
check "10 apt-get install ./$DEBNAME2 alone" test $? = 0 || tail -n 20 "$WORK/install-10.log"
X sh -c 'printf "[services.vols]\ndriver = \"rbd\"\n[services.vols.ceph]\npool = \"volumes\"\n" >/root/ceph.toml'
out=$(X berthd --check-config --config /root/ceph.toml 2>&1)
rc=$?
refused() { [ "$rc" = 2 ] && grep -q 'install the package berth-ceph' <<<"$out"; }
check "10 without berth-ceph, berthd --check-config of an rbd service exits $rc: ${out//$'\n'/ }" refused
X sh -c "cd /root && apt-get install -y -q ./$DEBNAMEC2 /root/ceph-debs/*.deb" >"$WORK/install-ceph.log" 2>&1
check "10 apt-get install ./$DEBNAMEC2 (with the Ceph libraries)" test $? = 0 || tail -n 20 "$WORK/install-ceph.log"
check "10 /usr/libexec/berth/berthd-ceph links librados and librbd; /usr/sbin/berthd neither" \
    X sh -c 'ldd /usr/libexec/berth/berthd-ceph | grep -q librados && ldd /usr/libexec/berth/berthd-ceph | grep -q librbd &&
             ! ldd /usr/sbin/berthd | grep -q -e librados -e librbd'
out=$(X berthd --check-config --config /root/ceph.toml 2>&1)
check "10 with berth-ceph, berthd --check-config accepts it: $(grep 'service vols' <<<"$out")" \
    grep -q 'service vols: driver rbd' <<<"$out"
check "10 the loop service still works beside it" \
    X sh -c 'docker volume create -d berth --opt size=1 c1 >/dev/null && docker volume rm c1 >/dev/null'
X sh -c "apt-get purge -y -q berth-ceph" >"$WORK/purge-ceph.log" 2>&1
check "10 apt-get purge berth-ceph: berth stays" \
    X sh -c '! test -e /usr/libexec/berth/berthd-ceph && dpkg -s berth >/dev/null'

[ "$FAIL" = 0 ]
