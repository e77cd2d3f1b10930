# shellcheck shell=bash disable=SC2016 # mmdebstrap hooks expand in their own shell
# box.sh - a throw-away Debian booted with systemd as PID 1
# (systemd-nspawn -b), for testing Berth's package and units. Sourced by
# run.sh; works on hosts whose PID 1 is not systemd (CI VMs, containers).
#
#   box_rootfs          path of the cached rootfs tarball (built when missing)
#   box_boot NAME ARGS  unpack a fresh rootfs, boot it, wait until it runs
#   X CMD...            run CMD inside the booted machine
#   box_halt            orderly halt; removes the cgroups
#   box_remove          removes the rootfs copy
#   box_stop            both
#
# Environment: BERTH_TEST_CACHE (default /var/cache/berth-test),
# BERTH_TEST_MIRROR, BERTH_TEST_SUITE, BERTH_TEST_REFRESH=1 (rebuild the
# rootfs tarball).

BOX_CACHE=${BERTH_TEST_CACHE:-/var/cache/berth-test}
BOX_SUITE=${BERTH_TEST_SUITE:-}
if [ -z "$BOX_SUITE" ]; then
    # The .deb is built on this host, so the machine runs the same release
    # (its libc must be at least as new); Debian bookworm elsewhere.
    BOX_SUITE=$(. /etc/os-release 2>/dev/null && [ "${ID:-}" = debian ] && echo "${VERSION_CODENAME:-}")
    BOX_SUITE=${BOX_SUITE:-bookworm}
fi
box_mirror() {
    if [ -n "${BERTH_TEST_MIRROR:-}" ]; then echo "$BERTH_TEST_MIRROR"; return; fi
    local m
    m=$(awk '/^URIs:/ && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
    [ -n "$m" ] || m=$(awk '$1 == "deb" && $0 ~ /debian\/? / {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}
BOX_MIRROR=$(box_mirror)
# Docker runs inside the machine: its volume mounts have to be in the
# mount namespace where berthd mounts (nspawn's namespace is a slave of
# the host's, so nothing mounted inside ever reaches a host dockerd).
# No Ceph libraries: the package berth must work without them. They are
# downloaded into /root/ceph-debs for the test of berth-ceph (the machine
# has no network), with whatever else they need.
BOX_PACKAGES="systemd,systemd-sysv,dbus,init-system-helpers,e2fsprogs,docker.io,busybox-static"
BOX_CEPH_PACKAGES="librados2 librbd1"
BOX_DOCKER_CONFIG='{"storage-driver": "vfs", "iptables": false, "ip6tables": false, "bridge": "none"}'
# Bump when the hooks below change.
BOX_REV=2
BOX_KEY=$(printf '%s\n' "$BOX_SUITE" "$BOX_MIRROR" "$BOX_PACKAGES" "$BOX_CEPH_PACKAGES" "$BOX_DOCKER_CONFIG" "$BOX_REV" | sha256sum | cut -c1-16)
BOX_TARBALL="$BOX_CACHE/rootfs-$BOX_SUITE-$BOX_KEY.tar"

BOX_NAME=""
BOX_ROOT=""
BOX_NSPAWN_PID=""
BOX_LOG=""
BOX_CG=""

box_log() { printf '[box %s] %s\n' "$(date +%T)" "$*" >&2; }

box_rootfs() {
    mkdir -p "$BOX_CACHE"
    if [ -s "$BOX_TARBALL" ] && [ "${BERTH_TEST_REFRESH:-0}" != 1 ]; then
        echo "$BOX_TARBALL"
        return 0
    fi
    local t0=$SECONDS log="$BOX_CACHE/rootfs-build.log"
    box_log "building $BOX_SUITE rootfs ($BOX_PACKAGES) from $BOX_MIRROR"
    # Documentation, manual pages and translations are left out: a third
    # smaller and faster to unpack.
    if ! mmdebstrap --variant=apt --format=tar --include="$BOX_PACKAGES" \
        --dpkgopt=force-unsafe-io --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook='echo berth-test > "$1/etc/hostname"' \
        --customize-hook='rm -f "$1/etc/machine-id"; touch "$1/etc/machine-id"' \
        --customize-hook="mkdir -p \"\$1/etc/docker\"; echo '$BOX_DOCKER_CONFIG' > \"\$1/etc/docker/daemon.json\"" \
        --customize-hook="chroot \"\$1\" apt-get install -q -y --download-only $BOX_CEPH_PACKAGES" \
        --customize-hook='mkdir -p "$1/root/ceph-debs" && mv "$1"/var/cache/apt/archives/*.deb "$1/root/ceph-debs/"' \
        --customize-hook='rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*' \
        "$BOX_SUITE" "$BOX_TARBALL.tmp" "$BOX_MIRROR" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$BOX_TARBALL.tmp"
        return 1
    fi
    mv "$BOX_TARBALL.tmp" "$BOX_TARBALL"
    # Older tarballs (other keys) are of no further use.
    find "$BOX_CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$BOX_TARBALL" -delete
    box_log "rootfs built in $((SECONDS - t0)) s: $(du -h "$BOX_TARBALL" | cut -f1)"
    echo "$BOX_TARBALL"
}

# cgroup roots: hybrid/legacy (name=systemd v1 + cgroup2 at unified/) or v2.
box_cg_dirs() {
    if mountpoint -q /sys/fs/cgroup/systemd 2>/dev/null; then
        echo /sys/fs/cgroup/systemd
        if mountpoint -q /sys/fs/cgroup/unified 2>/dev/null; then echo /sys/fs/cgroup/unified; fi
    else
        echo /sys/fs/cgroup
    fi
}

box_host_has_systemd() { [ -d /run/systemd/system ]; }

# Host PID of the machine's PID 1: nspawn's only child.
box_leader() { pgrep -P "$BOX_NSPAWN_PID" | head -n 1; }

# box_boot NAME WORKDIR [nspawn args...]
box_boot() {
    BOX_NAME=$1
    local work=$2
    shift 2
    local tarball
    tarball=$(box_rootfs) || return 1
    BOX_ROOT="$work/root"
    BOX_LOG="$work/console.log"
    BOX_CG="berth-test-$BOX_NAME"
    rm -rf --one-file-system "$BOX_ROOT"
    mkdir -p "$BOX_ROOT"
    tar -C "$BOX_ROOT" -xf "$tarball" || return 1
    local args=(-D "$BOX_ROOT" -b -M "$BOX_NAME")
    if ! box_host_has_systemd; then
        # Without systemd on the host there is no machined to register
        # with, and no scope to create.
        args+=(--register=no --keep-unit)
    fi
    # cgroup v2 inside whatever the host has: what Docker in the machine
    # needs, and a clean boot.
    export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
    (
        # nspawn --keep-unit splits its own cgroup into supervisor/ and
        # payload/: give it one of its own, never the host's root.
        if ! box_host_has_systemd; then
            for d in $(box_cg_dirs); do
                mkdir -p "$d/$BOX_CG"
                echo "$BASHPID" >"$d/$BOX_CG/cgroup.procs"
            done
        fi
        exec setsid systemd-nspawn "${args[@]}" "$@" </dev/null >"$BOX_LOG" 2>&1
    ) &
    BOX_NSPAWN_PID=$!
    local st="" t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 90 ]; do
        if ! kill -0 "$BOX_NSPAWN_PID" 2>/dev/null; then
            box_log "systemd-nspawn exited:"
            tail -n 20 "$BOX_LOG" >&2
            return 1
        fi
        if [ -n "$(box_leader)" ]; then
            st=$(X systemctl is-system-running 2>/dev/null || true)
            case "$st" in running | degraded) break ;; esac
        fi
        sleep 0.2
    done
    case "$st" in
    running) return 0 ;;
    degraded)
        box_log "machine is degraded:"
        X systemctl --failed --no-pager >&2
        return 0
        ;;
    *)
        box_log "machine not up after 90 s (state '$st')"
        tail -n 30 "$BOX_LOG" >&2
        return 1
        ;;
    esac
}

# Runs a command in all namespaces of the machine's PID 1, with a clean
# environment (the host's PATH, locale and so on stay outside).
X() {
    local leader
    leader=$(box_leader)
    [ -n "$leader" ] || {
        echo "box: machine is not running" >&2
        return 125
    }
    nsenter -t "$leader" -m -u -i -n -p -C -r -w \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive "$@"
}

# Orderly halt of the machine, then its cgroups go.
box_halt() {
    [ -n "$BOX_NSPAWN_PID" ] || return 0
    local t0=$SECONDS
    if kill -0 "$BOX_NSPAWN_PID" 2>/dev/null; then
        # SIGTERM to nspawn = SIGRTMIN+3 to the machine's systemd = halt.
        kill -TERM "$BOX_NSPAWN_PID"
        while kill -0 "$BOX_NSPAWN_PID" 2>/dev/null && [ $((SECONDS - t0)) -lt 60 ]; do sleep 0.2; done
        if kill -0 "$BOX_NSPAWN_PID" 2>/dev/null; then
            box_log "machine still up after 60 s: SIGKILL"
            kill -KILL "$BOX_NSPAWN_PID"
        fi
    fi
    wait "$BOX_NSPAWN_PID" 2>/dev/null
    box_log "machine halted in $((SECONDS - t0)) s"
    BOX_NSPAWN_PID=""
    if ! box_host_has_systemd; then
        local d
        for d in $(box_cg_dirs); do
            [ -d "$d/$BOX_CG" ] && find "$d/$BOX_CG" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    fi
    # nspawn leaves its (empty) propagation directory behind on a host
    # without a tmpfs /run.
    rmdir "/run/systemd/nspawn/propagate/$BOX_NAME" 2>/dev/null
    return 0
}

# Removes the unpacked rootfs (after box_halt).
box_remove() {
    [ -z "$BOX_NSPAWN_PID" ] || box_halt
    if [ -n "$BOX_ROOT" ] && [ -d "$BOX_ROOT" ]; then
        local t0=$SECONDS
        rm -rf --one-file-system "$BOX_ROOT"
        box_log "rootfs copy removed in $((SECONDS - t0)) s"
    fi
    return 0
}

box_stop() {
    box_halt
    box_remove
}
