#!/bin/bash
# Runs tests/ceph_sys.rs (the Ceph OS boundary) against a throw-away
# cluster of its own on 127.0.0.1, then stops it.
#
#   tests/ceph/sys-tests.sh [cargo test args…]
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=$(mktemp -d /tmp/berthsys-ceph.XXXXXX)
down() {
    tests/ceph/cluster.sh down "$DIR/cluster" "$DIR" >/dev/null 2>&1 || true
    rm -rf "$DIR"
}
trap down EXIT
MON_PORT=13400 tests/ceph/cluster.sh up "$DIR/cluster" 127.0.0.1 >"$DIR/up.log" 2>&1 ||
    { cat "$DIR/up.log"; exit 1; }
export BERTH_TEST_CEPH_CONF="$DIR/cluster/ceph.conf"
export BERTH_TEST_CEPH_KEYRING="$DIR/cluster/client.admin.keyring"
cargo test --features ceph --test ceph_sys "$@"
