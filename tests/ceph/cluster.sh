#!/bin/bash
# A throw-away single-node Ceph cluster (mon + mgr + 1 OSD + MDS) for Berth's
# tests, started by hand: everything (conf, keyrings, data, logs, pids,
# admin sockets) lives under one directory.
#
# Usage:
#   cluster.sh up DIR IP [NETNS]     wipe DIR (stopping what a previous run
#                                    left there) and start a fresh cluster
#   cluster.sh down DIR [MNTROOT...] unmount the cluster's FUSE/loop mounts,
#                                    stop its daemons; idempotent
#
#   IP     address the daemons bind to (127.0.0.1, or one inside NETNS)
#   NETNS  network namespace (/run/netns/NETNS) to run the daemons and the
#          set-up commands in; entered with `nsenter --net` only, so the
#          mount namespace stays the host's
#   MNTROOT  also unmount ceph-fuse/rbd-fuse mounts (and loop devices on
#          files) below this prefix, even if their FUSE daemon is gone
#
# Env: MON_PORT (13300), OSD_SIZE in GiB (4), DOWN_GRACE seconds of SIGTERM
# before SIGKILL on down (0: SIGKILL at once; the data is thrown away).
#
# Clients: CEPH_CONF=DIR/ceph.conf (client.admin's keyring is found from it:
# DIR/client.admin.keyring).
set -euo pipefail

t0=$(date +%s.%N)
ts() { printf '[%6.2fs] %s\n' "$(echo "$(date +%s.%N) - $t0" | bc)" "$*"; }

# PIDs of processes named $1 whose command line or environment names $2.
procs_naming() {
    local name=$1 needle=$2 p
    for p in $(pgrep -x "$name" || true); do
        if tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$needle" ||
            tr '\0' '\n' 2>/dev/null <"/proc/$p/environ" | grep -qxF -- "CEPH_CONF=$needle"; then
            echo "$p"
        fi
    done
}

# Whether PID $1 is alive: exists and is no zombie (daemons are reparented
# to PID 1, which may reap them only seconds later).
alive() {
    local st
    st=$(awk '{print $3}' 2>/dev/null </proc/"$1"/stat) || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# Waits until none of the PIDs is alive; SIGKILLs what is left after $1 s.
wait_gone() {
    local secs=$1 p n alive
    shift
    n=$(echo "$secs * 20 / 1" | bc)
    for _ in $(seq 1 "$n"); do
        alive=0
        for p in "$@"; do alive "$p" && alive=1; done
        [ "$alive" = 0 ] && return 0
        sleep 0.05
    done
    for p in "$@"; do
        if alive "$p"; then
            echo "pid $p ($(cat /proc/"$p"/comm 2>/dev/null)) still there after ${secs}s: SIGKILL"
            kill -9 "$p" 2>/dev/null || true
        fi
    done
    for p in "$@"; do
        while alive "$p"; do sleep 0.05; done
    done
}

# Mount points (fuse.ceph-fuse / fuse.rbd-fuse) whose FUSE daemon is ours,
# plus those below any MNTROOT prefix.
fuse_mounts() {
    local d=$1 p a
    shift
    local mounts
    mounts=$(findmnt -rn -o TARGET,FSTYPE | awk '$2 ~ /^fuse\.(ceph-fuse|rbd-fuse)$/ {print $1}')
    [ -n "$mounts" ] || return 0
    {
        for p in $(procs_naming ceph-fuse "$d/ceph.conf") $(procs_naming rbd-fuse "$d/ceph.conf"); do
            tr '\0' '\n' 2>/dev/null <"/proc/$p/cmdline" | while read -r a; do
                a=$(realpath -m -- "$a" 2>/dev/null) || continue
                grep -qxF -- "$a" <<<"$mounts" && echo "$a"
            done
        done
        for r in "$@"; do
            awk -v m="$r" 'index($0, m) == 1' <<<"$mounts"
        done
    } | sort -u
}

down() {
    local d=${1:?dir}
    shift
    [ -d "$d" ] || { ts "down: $d does not exist, nothing to do"; return 0; }
    d=$(realpath "$d")
    local roots=() r
    for r in "$@"; do roots+=("$(realpath -m "$r")"); done

    # 1. loop devices on files of our FUSE mounts (rbd-fuse) or below a
    #    MNTROOT: unmount what is mounted from them, detach, wait for the
    #    (asynchronous) detach before the FUSE unmount.
    local fmounts l mp backing
    fmounts=$(fuse_mounts "$d" "${roots[@]}")
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        l=${line%%:*}
        backing=$(sed -n 's/^[^(]*(\(.*\))$/\1/p' <<<"$line")
        local ours=""
        for r in $fmounts "${roots[@]}"; do
            [ "${backing#"$r"/}" != "$backing" ] && ours=1
        done
        [ -n "$ours" ] || continue
        for mp in $(findmnt -rn -o TARGET -S "$l" | sort -r); do umount "$mp" || umount -l "$mp"; done
        losetup -d "$l" 2>/dev/null || true
        for _ in $(seq 1 50); do losetup "$l" >/dev/null 2>&1 || break; sleep 0.1; done
        ts "down: detached $l ($backing)"
    done < <(losetup -a)

    # 2. FUSE mounts, deepest first; then let the FUSE daemons flush and
    #    close their sessions before the MDS goes away.
    local fpids
    fpids=$(procs_naming ceph-fuse "$d/ceph.conf"; procs_naming rbd-fuse "$d/ceph.conf")
    while IFS= read -r mp; do
        [ -n "$mp" ] || continue
        fusermount -u "$mp" 2>/dev/null || umount "$mp" 2>/dev/null || umount -l "$mp"
        ts "down: unmounted $mp"
    done < <(sort -r <<<"$fmounts")
    # shellcheck disable=SC2086
    [ -z "$fpids" ] || { wait_gone 10 $fpids; ts "down: FUSE daemons gone"; }

    # 3. cluster daemons, by PID file (checked against the command line,
    #    which names our ceph.conf, so a reused PID is never hit).
    local pids=() n f pid
    for n in mds.a osd.0 mgr.x mon.a; do
        f="$d/run/$n.pid"
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | grep -qxF -- "$d/ceph.conf"; then
            pids+=("$pid")
        fi
    done
    # Daemons whose PID file was not written yet (a run killed early).
    for n in ceph-mds ceph-osd ceph-mgr ceph-mon; do
        for pid in $(procs_naming "$n" "$d/ceph.conf"); do
            [[ " ${pids[*]} " == *" $pid "* ]] || pids+=("$pid")
        done
    done
    if [ ${#pids[@]} -gt 0 ]; then
        local grace=${DOWN_GRACE:-0}
        if [ "$grace" != 0 ]; then
            kill "${pids[@]}" 2>/dev/null || true
            wait_gone "$grace" "${pids[@]}"
        else
            kill -9 "${pids[@]}" 2>/dev/null || true
            wait_gone 5 "${pids[@]}"
        fi
        ts "down: daemons stopped (${pids[*]})"
    fi
    ts "down: done"
}

up() {
    local D=${1:?dir} IP=${2:?ip} NS=${3:-}
    if [ -n "$NS" ] && [ "${BERTH_CEPH_IN_NETNS:-}" != "$NS" ]; then
        # Everything (daemons and set-up commands) in the namespace: the
        # cluster address exists only there.
        BERTH_CEPH_IN_NETNS=$NS exec nsenter --net="/run/netns/$NS" -- "$0" up "$@"
    fi
    local MON_PORT=${MON_PORT:-13300} OSD_SIZE=${OSD_SIZE:-4}
    if [ -e "$D" ]; then
        down "$D"
        rm -rf "$D"
        ts "stale $D wiped"
    fi
    mkdir -p "$D"
    D=$(realpath "$D")
    mkdir -p "$D"/{mon/ceph-a,mgr/ceph-x,osd/ceph-0,mds/ceph-a,run,log,crash}
    local FSID C
    FSID=$(uuidgen)
    C="$D/ceph.conf"
    cat >"$C" <<EOF
[global]
fsid = $FSID
mon_host = v2:$IP:$MON_PORT
public_addr = $IP
public_network = $IP/32
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $D/run
admin_socket = $D/run/\$name.asok
pid_file = $D/run/\$name.pid
log_file = $D/log/\$name.log
mon_cluster_log_file = $D/log/\$cluster.log
keyring = $D/\$name.keyring
crash_dir = $D/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_max_pg_per_osd = 1000
ms_bind_msgr1 = false
ms_bind_msgr2 = true
# tests: a crashed client must not hold things up for long
mds_reconnect_timeout = 5
mds_beacon_grace = 10
# a small cluster's map updates need not be batched for a second
paxos_propose_interval = 0.1
# daemons report PG states to the mgr every second, not every 5 s
mgr_stats_period = 1
[client]
pid_file = ""
admin_socket = $D/run/\$name.\$pid.asok
log_file = $D/log/client.log
[mon]
mon_data = $D/mon/ceph-\$id
mon_initial_members = a
[mgr]
mgr_data = $D/mgr/ceph-\$id
[osd]
osd_data = $D/osd/ceph-\$id
osd_objectstore = bluestore
bluestore_block_size = $((OSD_SIZE * 1024 * 1024 * 1024))
bluestore_block_create = true
bluestore_block_db_create = false
bluestore_block_wal_create = false
osd_memory_target = 939524096
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_op_num_shards = 1
osd_op_num_threads_per_shard = 2
[mds]
mds_data = $D/mds/ceph-\$id
mds_cache_memory_limit = 134217728
EOF
    export CEPH_CONF="$C"
    ts "conf written ($D, fsid $FSID, v2:$IP:$MON_PORT${NS:+, netns $NS})"

    # Keyrings: every daemon's key goes into the mon's initial keyring, so
    # no `auth get-or-create` round trips are needed.
    ceph-authtool --create-keyring "$D/mon.a.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$D/client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool --create-keyring "$D/mgr.x.keyring" --gen-key -n mgr.x \
        --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool --create-keyring "$D/mds.a.keyring" --gen-key -n mds.a \
        --cap mon 'allow profile mds' --cap mgr 'allow profile mds' --cap mds 'allow *' --cap osd 'allow *' >/dev/null
    for k in client.admin mgr.x mds.a; do
        ceph-authtool "$D/mon.a.keyring" --import-keyring "$D/$k.keyring" >/dev/null
    done
    monmaptool --create --addv a "[v2:$IP:$MON_PORT]" --fsid "$FSID" "$D/monmap" >/dev/null

    # The OSD's bluestore mkfs (the slowest step) needs no monitor when it
    # is given the monmap: run it while the mon starts.
    local OSD_UUID OSD_SECRET
    OSD_UUID=$(uuidgen)
    OSD_SECRET=$(ceph-authtool --gen-print-key)
    ceph-authtool --create-keyring "$D/osd.0.keyring" --name osd.0 --add-key "$OSD_SECRET" >/dev/null
    ceph-osd -c "$C" -i 0 --mkfs --osd-uuid "$OSD_UUID" --monmap "$D/monmap" --no-mon-config \
        >"$D/log/osd-mkfs.out" 2>&1 &
    local MKFS=$!

    ceph-mon -c "$C" --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.a.keyring"
    ceph-mon -c "$C" -i a
    ts "mon started"
    ceph-mgr -c "$C" -i x
    ts "mgr started"
    ceph-mds -c "$C" -i a
    ts "mds started (standby until the fs exists)"

    echo "{\"cephx_secret\": \"$OSD_SECRET\"}" >"$D/osd-new.json"
    timeout 60 ceph osd new "$OSD_UUID" 0 -i "$D/osd-new.json" >/dev/null
    rm -f "$D/osd-new.json"
    ts "mon answers, osd.0 created"

    # Pools and the file system need no OSD yet: create them while the OSD
    # starts, in one `ceph` process (each costs ~0.3 s of Python start-up).
    timeout 120 ceph >"$D/log/setup.out" 2>&1 <<EOF &
osd pool create cephfs_metadata 8
osd pool create cephfs_data 8
osd pool create rbd 8
osd pool application enable rbd rbd
fs new cephfs cephfs_metadata cephfs_data
fs set cephfs session_timeout 30
fs set cephfs session_autoclose 30
EOF
    local SETUP=$!
    if ! wait "$MKFS"; then
        cat "$D/log/osd-mkfs.out" >&2
        echo "osd mkfs failed" >&2
        exit 1
    fi
    ts "osd.0 mkfs done"
    ceph-osd -c "$C" -i 0 2>>"$D/log/osd-start.out"
    ts "osd started"
    if ! wait "$SETUP" || grep -q '^Error' "$D/log/setup.out"; then
        cat "$D/log/setup.out" >&2
        echo "creating pools / cephfs failed" >&2
        exit 1
    fi
    ts "pools and cephfs created"

    local i
    for i in $(seq 1 240); do
        ceph osd stat 2>/dev/null | grep -q '1 up' && break
        [ "$i" = 240 ] && { echo "osd did not come up" >&2; exit 1; }
        sleep 0.25
    done
    ts "osd up"
    timeout 60 rbd pool init rbd
    ts "rbd pool ready"
    for i in $(seq 1 240); do
        ceph mds stat 2>/dev/null | grep -q "up:active" && break
        [ "$i" = 240 ] && { echo "mds did not become active" >&2; exit 1; }
        sleep 0.25
    done
    ts "mds active"
    for i in $(seq 1 120); do
        timeout 10 ceph fs subvolume ls cephfs >/dev/null 2>&1 && break
        [ "$i" = 120 ] && { echo "mgr volumes module does not answer" >&2; exit 1; }
        sleep 0.25
    done
    ts "mgr volumes module answers"
    local st
    for i in $(seq 1 240); do
        st=$(ceph pg stat 2>/dev/null || true)
        [[ $st =~ ^([0-9]+)\ pgs:\ ([0-9]+)\ active\+clean\; ]] &&
            [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ] && break
        [ "$i" = 240 ] && { echo "pgs not active+clean" >&2; exit 1; }
        sleep 0.25
    done
    ts "all pgs active+clean (${st%%;*})"
    ceph -s
    ts "cluster up"
}

cmd=${1:-}
shift || true
case "$cmd" in
up) up "$@" ;;
down) down "$@" ;;
*)
    echo "usage: $0 up DIR IP [NETNS] | down DIR [MNTROOT...]" >&2
    exit 2
    ;;
esac
