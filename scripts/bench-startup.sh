#!/bin/bash
# berthd start-up with many loop volumes, started by the first connection
# to its socket as systemd does: time from that connection to the
# Plugin.Activate answer (process start), then to the answer of a Get of
# one volume, and from the connection to the first List answer (the state
# loaded and reconciled); warm and cold page cache; from the state index
# and without it (every record read), in the same run.
#
# Volumes: BENCH_REAL (default 100) real ones made through berthd (sparse
# ext4 images, `berth volume create`), then copies of one of them up to
# each count in BENCH_COUNTS (default "1000 10000 100000"): its record
# rewritten under the new name with a new ID (as berthd writes it) and a
# sparse image file of the same size with no filesystem inside (start-up
# never reads an image; formatting 100 000 images would take hours).
# BENCH_RUNS (default 3) starts per figure; the median is printed.
# BENCH_OLD_BERTHD=PATH also measures another berthd build (one without
# the index, e.g. tests/upgrade/old-berthd.sh COMMIT) on the same volumes.
#
# Needs root (drop_caches, mkfs), python3, systemd-socket-activate and a
# release build (`cargo build --release --bin berthd --bin berth`, or
# BENCH_BIN=DIR holding both).
# Uses BENCH_DIR (default /var/tmp/berth-bench-startup, on a real disk:
# the cold figures mean nothing on tmpfs); removed at the end.
#
#   sudo scripts/bench-startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (drop_caches, mkfs)" >&2; exit 1; }
BIN=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release}
for b in berthd berth; do
    [ -x "$BIN/$b" ] || { echo "no $BIN/$b: cargo build --release --bin berthd --bin berth" >&2; exit 1; }
done
command -v systemd-socket-activate >/dev/null || { echo "needs systemd-socket-activate" >&2; exit 1; }
WORK=${BENCH_DIR:-/var/tmp/berth-bench-startup}
REAL=${BENCH_REAL:-100}
COUNTS=${BENCH_COUNTS:-"1000 10000 100000"}
RUNS=${BENCH_RUNS:-3}
SVC=bench
SOCK=$WORK/plugins/$SVC.sock
REC=$WORK/state/records/$SVC
IMG=$WORK/state/images/$SVC
INDEX=$WORK/state/records/$SVC.index

rm -rf "$WORK"
mkdir -p "$WORK/plugins"
cat > "$WORK/config.toml" <<EOF
[daemon]
plugins_dir = "$WORK/plugins"
state_dir = "$WORK/state"
mount_dir = "$WORK/mnt"
socket_group = ""

[services.$SVC]
driver = "loop"
EOF
PID=
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# One berthd started by the first connection to its socket, as systemd
# does; the client times from that connection.
start() {
    rm -f "$SOCK"
    systemd-socket-activate -l "$SOCK" --fdname="$SVC" \
        "$BIN/berthd" --config "$WORK/config.toml" 2>"$WORK/berthd.log" &
    PID=$!
    while [ ! -S "$SOCK" ]; do sleep 0.01; done
}
stop() {
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

echo "making $REAL volumes through berthd"
start
"$BIN/berth" --socket "$SOCK" volume ls >/dev/null
for i in $(seq 1 "$REAL"); do
    "$BIN/berth" --socket "$SOCK" volume create "$(printf 'v%06d' "$i")" -o size=64M >/dev/null
done
stop

python3 - "$WORK" "$SOCK" "$REC" "$IMG" "$INDEX" "$REAL" "$RUNS" "$COUNTS" "$BIN/berthd" <<'PY'
import json, os, secrets, socket, statistics, subprocess, sys, time, re

work, sock, rec_dir, img_dir, index, real, runs, counts, binp = sys.argv[1:]
real, runs, counts = int(real), int(runs), [int(c) for c in counts.split()]

def name(i):
    return "v%06d" % i

template = json.load(open(os.path.join(rec_dir, name(1) + ".json")))
size = os.path.getsize(os.path.join(img_dir, name(1) + ".img"))

def replicate(upto):
    n = len([f for f in os.listdir(rec_dir) if f.endswith(".json")])
    for i in range(n + 1, upto + 1):
        r = dict(template)
        r["name"] = name(i)
        r["id"] = secrets.token_hex(16)
        dd = dict(r.get("driver_data", {}))
        if "image" in dd:
            dd["image"] = os.path.join(img_dir, name(i) + ".img")
        r["driver_data"] = dd
        with open(os.path.join(rec_dir, name(i) + ".json"), "w") as f:
            f.write(json.dumps(r, indent=2))
        with open(os.path.join(img_dir, name(i) + ".img"), "wb") as f:
            f.truncate(size)
    subprocess.run(["sync"], check=True)

def request(path, body):
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(sock)
            break
        except ConnectionRefusedError:
            # Bound but not listening yet.
            s.close()
            time.sleep(0.0005)
    data = json.dumps(body).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (path.encode(), len(data), data))
    out = b""
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        out += chunk
    s.close()
    return out

old_bin = os.environ.get("BENCH_OLD_BERTHD")

def one_start(n, with_index, cold, berthd=binp):
    if not with_index and os.path.exists(index):
        os.remove(index)
    if cold:
        subprocess.run(["sync"], check=True)
        open("/proc/sys/vm/drop_caches", "w").write("3\n")
    if os.path.exists(sock):
        os.remove(sock)
    log = open(os.path.join(work, "berthd.log"), "w")
    p = subprocess.Popen(["systemd-socket-activate", "-l", sock, "--fdname=bench",
                          berthd, "--config", os.path.join(work, "config.toml")],
                         stderr=log, stdout=subprocess.DEVNULL)
    try:
        while not os.path.exists(sock):
            time.sleep(0.001)
        want = name(n // 2)
        t0 = time.perf_counter()
        request("/Plugin.Activate", {})
        t_act = time.perf_counter()
        got = request("/VolumeDriver.Get", {"Name": want})
        t_get = time.perf_counter() - t_act
        t_act -= t0
        assert b'"Err":""' in got.replace(b" ", b"") and want.encode() in got, got[:300]
        listed = request("/VolumeDriver.List", {})
        t_list = time.perf_counter() - t0
        assert listed.count(b'"Name"') == n, (listed.count(b'"Name"'), n)
    finally:
        p.terminate()
        p.wait()
        log.close()
    text = open(os.path.join(work, "berthd.log")).read()
    m = re.search(r"state loaded and reconciled.*?duration_ms=(\d+)", text)
    loaded = int(m.group(1)) / 1000 if m else float("nan")
    used_index = "loaded from the state index" in text
    assert used_index == with_index, text[-2000:]
    if berthd != binp and os.path.exists(index):
        os.remove(index)
    return t_act, t_get, t_list, loaded

print("| volumes | records read from | page cache | connect → Activate answer | then Get | connect → List answer (ready) | load + reconcile (log) |")
print("|---:|---|---|---:|---:|---:|---:|")
for n in counts:
    replicate(n)
    modes = [("every record (no index)", False, binp), ("index", True, binp)]
    if old_bin:
        modes.insert(0, ("every record, " + old_bin, False, old_bin))
    for label, with_index, berthd in modes:
        # A clean stop writes the index the next start uses.
        if with_index:
            one_start(n, False, False)
        for cold in (False, True):
            res = [one_start(n, with_index, cold, berthd) for _ in range(runs)]
            med = [statistics.median(x) for x in zip(*res)]
            print("| %d | %s | %s | %.1f ms | %.1f ms | %.0f ms | %.0f ms |" % (
                n, label, "cold" if cold else "warm",
                med[0] * 1000, med[1] * 1000, med[2] * 1000, med[3] * 1000), flush=True)
PY
