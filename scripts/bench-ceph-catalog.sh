#!/bin/bash
# Catalog figures of docs/ceph.md ("Catalog at scale"): a real single-node
# cluster and two simulated hosts (tests/common/ceph.rs). Host A's berthd
# creates, host B's berthd lists. At each N the rbd pool is filled up to N
# volumes in bulk through the rbd driver's own code (image, record in the
# image metadata, catalog index entry; no filesystem is made in the bulk
# volumes), then: List on host B with the one-second reuse window expired
# before each call (median of 5, and the first List that learns them all),
# a Get of one name (the driver's index read, median of 20), the full scan
# that List made before the index (N <= 1000), a create through berthd on
# host A (median of 3, with mkfs), and how long until host B's List shows a
# create and a remove made on A.
#
# Needs root, the Ceph daemons and berthd built with the ceph feature.
# BENCH_N=100,1000,10000 sets the levels (default). Filling 10 000 takes
# several minutes.
#
#   sudo scripts/bench-ceph-catalog.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BERTH_CATALOG_BENCH="${BENCH_N:-100,1000,10000}"
exec cargo test --features ceph --test ceph_catalog -- --nocapture
