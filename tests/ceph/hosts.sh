#!/bin/bash
# Two simulated hosts for Berth's tests: network namespaces berth-a
# (169.254.77.1) and berth-b (169.254.77.2) joined by one veth pair. The
# addresses are link-local and exist only inside the two namespaces.
# Start processes in them with `nsenter --net=/run/netns/NAME` (not
# `ip netns exec`, which also unshares the mount namespace: mounts made
# there would stay invisible to the host).
#
# Usage: hosts.sh up|down      (both idempotent)
set -euo pipefail

A=berth-a
B=berth-b
A_IP=169.254.77.1
B_IP=169.254.77.2

healthy() {
    ip -n "$A" -4 -o addr show dev bertha0 2>/dev/null | grep -qF " $A_IP/24 " &&
        ip -n "$B" -4 -o addr show dev berthb0 2>/dev/null | grep -qF " $B_IP/24 " &&
        ip -n "$A" link show lo 2>/dev/null | grep -q 'state UNKNOWN\|,UP' &&
        ip -n "$B" link show lo 2>/dev/null | grep -q 'state UNKNOWN\|,UP' &&
        ip -n "$A" link show bertha0 2>/dev/null | grep -q ',UP' &&
        ip -n "$B" link show berthb0 2>/dev/null | grep -q ',UP'
}

down() {
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    # A veth left in the host's namespace by a run killed half-way.
    ip link del bertha0 2>/dev/null || true
}

up() {
    if healthy; then
        return 0
    fi
    down
    ip netns add "$A"
    ip netns add "$B"
    ip link add bertha0 type veth peer name berthb0
    ip link set bertha0 netns "$A"
    ip link set berthb0 netns "$B"
    ip -n "$A" addr add "$A_IP/24" dev bertha0
    ip -n "$B" addr add "$B_IP/24" dev berthb0
    for n in "$A" "$B"; do ip -n "$n" link set lo up; done
    ip -n "$A" link set bertha0 up
    ip -n "$B" link set berthb0 up
    healthy || { echo "hosts.sh: namespaces did not come up as expected" >&2; exit 1; }
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
