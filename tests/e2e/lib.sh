# shellcheck shell=bash
# Shared by the end-to-end scripts in tests/e2e and by
# scripts/bench-docker-cycle.sh: checks, a berthd and a private dockerd
# under the work directory $W (in the caller's private mount namespace),
# and the clean-up of what they leave. Needs W and BERTHD set.

PASS=0
FAIL=0
# check WHAT CMD...: runs CMD (output to $W/checks.log), prints one line.
check() {
    local what=$1
    shift
    echo "### $what" >>"$W/checks.log"
    if "$@" >>"$W/checks.log" 2>&1; then
        echo "ok   - $what"
        PASS=$((PASS + 1))
    else
        echo "FAIL - $what (see $W/checks.log)"
        FAIL=$((FAIL + 1))
    fi
}

BPID=
DPID=
# start_berthd [SOCKET]: starts $BERTHD with $W/config.toml and waits
# until SOCKET (default berth's) answers Plugin.Activate.
start_berthd() {
    local sock=${1:-/run/docker/plugins/berth.sock}
    "$BERTHD" --config "$W/config.toml" >>"$W/berthd.log" 2>&1 &
    BPID=$!
    for _ in $(seq 1 400); do
        curl -sf --unix-socket "$sock" -X POST http://p/Plugin.Activate >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "berthd did not answer on $sock (see $W/berthd.log)" >&2
    return 1
}

# D ARGS...: the docker CLI against the private engine.
D() { docker -H "unix://$W/docker/docker.sock" "$@"; }

# start_dockerd [ARGS...]: a private dockerd (vfs storage, no iptables,
# state under $W/docker) with the extra ARGS; waits until it answers.
start_dockerd() {
    mkdir -p "$W/docker"
    [ -f "$W/docker/daemon.json" ] || echo '{}' >"$W/docker/daemon.json"
    dockerd --config-file "$W/docker/daemon.json" --data-root "$W/docker/root" \
        --exec-root "$W/docker/exec" --pidfile "$W/docker/pid" -H "unix://$W/docker/docker.sock" \
        --iptables=false --ip6tables=false --storage-driver=vfs "$@" >"$W/docker/log" 2>&1 &
    DPID=$!
    for _ in $(seq 1 300); do
        D version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    D version
}

# e2e_cleanup: stops dockerd and berthd, unmounts what is below $W and
# detaches loop devices on files below it.
e2e_cleanup() {
    [ -n "${DPID}" ] && kill "$DPID" 2>/dev/null && for _ in $(seq 1 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
    [ -n "${BPID}" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
    for m in $(awk '{print $5}' /proc/self/mountinfo | grep "^$W/" | sort -r); do umount -l "$m" 2>/dev/null; done
    for l in $(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v w="$W/" 'index($2, w) == 1 {print $1}'); do losetup -d "$l"; done
    return 0
}
