#!/bin/bash
# Prints the directory holding `berthd` and `berth` built from COMMIT (the
# build that wrote tests/fixtures/v1), building them once into the test
# cache ($BERTH_TEST_CACHE, /var/cache/berth-test) from `git archive`.
#
#   tests/upgrade/old-berthd.sh 4755b3ac842743a6c177c7f9f572e107d5fab3f7 [FEATURES]
#
# FEATURES (e.g. `ceph`) are passed to `cargo build --features`; each set
# of features has its own cache directory.
#
# Exit 3: this checkout has no history of COMMIT (a shallow clone).
set -euo pipefail
commit=$1
features=${2:-}
cd "$(dirname "$0")/../.."
cache=${BERTH_TEST_CACHE:-/var/cache/berth-test}/old-berthd/$commit${features:+-$features}
if [ -x "$cache/berthd" ] && [ -x "$cache/berth" ]; then
    echo "$cache"
    exit 0
fi
git cat-file -e "$commit^{commit}" 2>/dev/null || {
    echo "commit $commit is not in this checkout" >&2
    exit 3
}
mkdir -p "$(dirname "$cache")"
exec 9>"$(dirname "$cache")/lock"
flock 9
if [ ! -x "$cache/berthd" ]; then
    work=$(mktemp -d "$(dirname "$cache")/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    git archive "$commit" | tar -x -C "$work"
    echo "building berthd of $commit (once; cached in $cache)" >&2
    # The package test's release target directory: the dependencies built
    # for today's package are reused, only Berth itself is compiled again.
    target=${BERTH_TEST_TARGET_DIR:-${BERTH_TEST_CACHE:-/var/cache/berth-test}/target}
    # The package test's settings (tests/systemd/run.sh): a test build,
    # no link-time optimisation, dependencies shared with it.
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    CARGO_TARGET_DIR="$target" cargo build --release --locked \
        ${features:+--features "$features"} \
        --manifest-path "$work/Cargo.toml" --bin berthd --bin berth >&2
    mkdir -p "$cache.tmp"
    cp "$target/release/berthd" "$target/release/berth" "$cache.tmp/"
    rm -rf "$cache"
    mv "$cache.tmp" "$cache"
fi
echo "$cache"
