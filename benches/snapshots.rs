//! Snapshot and clone times of a 1 GiB volume holding 500 MiB of data,
//! on a reflink pool (xfs) and on a copy pool (the ext4 root), through
//! the plugin socket; prints figures, asserts nothing. Needs root,
//! mkfs.xfs and filefrag. Run with `scripts/bench-snapshots.sh` or
//! `cargo bench --bench snapshots`; `BENCH_RUNS=N` sets the runs per
//! figure (default 10; the copy pool does at most 5), `BENCH_VERBOSE=1`
//! adds berthd's step timings.

#[path = "../tests/common/mod.rs"]
#[allow(clippy::unwrap_used)]
mod common;

use std::fs;
use std::time::Instant;

use common::loopfs::{can_run, image, start_with_xfs_pool, write_data, SERVICE};
use serde_json::json;

fn stats(samples: &mut [f64]) -> String {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    format!(
        "median {median:8.2} ms  min {:8.2}  max {:8.2}  (n={n})",
        samples[0],
        samples[n - 1]
    )
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not:
    // then only check that this builds.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !can_run("bench snapshots") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let d = start_with_xfs_pool(4 << 30);
    let api = d.client(SERVICE);
    println!();
    println!("1 GiB volume (ext4) holding 500 MiB of data; {runs} runs each; times are whole plugin-API calls over the socket");
    for (pool, label) in [
        ("fast", "reflink pool (xfs)"),
        ("default", "copy pool (ext4)"),
    ] {
        let v = format!("bench-{pool}");
        api.create(&v, &[("size", "1"), ("type", pool)]);
        let p = api.mount(&v, Some("w"));
        write_data(&p.join("data"), 500 << 20, 11);
        let n = if pool == "fast" { runs } else { runs.min(5) };
        let mut snap_mounted = Vec::new();
        let mut frozen = Vec::new();
        let mut method = String::new();
        for i in 0..n {
            // Something new to flush each time, as a live volume would have.
            fs::write(p.join(format!("touch{i}")), b"x").expect("write");
            let t = Instant::now();
            let s = api.snapshot(&v, "s");
            snap_mounted.push(t.elapsed().as_secs_f64() * 1000.0);
            frozen.push(s["FrozenMicros"].as_u64().unwrap_or(0) as f64 / 1000.0);
            method = s["CopyMethod"].as_str().unwrap_or("").to_string();
            api.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        api.unmount(&v, Some("w"));
        let mut snap_idle = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            api.snapshot(&v, "s");
            snap_idle.push(t.elapsed().as_secs_f64() * 1000.0);
            api.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        let mut clone = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            api.create("bench-clone", &[("volumeName", &v)]);
            clone.push(t.elapsed().as_secs_f64() * 1000.0);
            api.ok("VolumeDriver.Remove", json!({"Name": "bench-clone"}));
        }
        println!("{label}: copy method {method}");
        println!("  snapshot, mounted   {}", stats(&mut snap_mounted));
        println!("    of which frozen   {}", stats(&mut frozen));
        println!("  snapshot, unmounted {}", stats(&mut snap_idle));
        println!(
            "  clone (create from volumeName), unmounted {}",
            stats(&mut clone)
        );
        api.ok("VolumeDriver.Remove", json!({"Name": v}));
    }
    copy_pool_against_floor(&d, runs.min(5));
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for l in d
            .log()
            .lines()
            .filter(|l| l.contains("point-in-time copy made") || l.contains("snapshot steps"))
        {
            println!("{l}");
        }
    }
}

/// The copy pool's sparse copy against its floor in the same run: `cp
/// --sparse=always` of the same image plus `sync` of the copy (Berth makes
/// every snapshot durable, so the floor pays the flush too), at 100 MiB,
/// 500 MiB and 2 GiB of data, runs interleaved so load hits both alike.
fn copy_pool_against_floor(d: &common::Daemon, runs: usize) {
    let api = d.client(SERVICE);
    println!();
    println!("copy pool (ext4 root): snapshot of an unmounted volume vs cp --sparse=always + sync of its image; {runs} runs each");
    for (mib, size) in [(100usize, "1"), (500, "1"), (2048, "3")] {
        let v = format!("bench-copy-{mib}");
        api.create(&v, &[("size", size)]);
        let p = api.mount(&v, Some("w"));
        write_data(&p.join("data"), mib << 20, 7);
        let mut held = Vec::new();
        let mut mounted = Vec::new();
        for i in 0..runs {
            fs::write(p.join(format!("touch{i}")), b"x").expect("write");
            let t = Instant::now();
            let s = api.snapshot(&v, "s");
            mounted.push(t.elapsed().as_secs_f64() * 1000.0);
            held.push(s["FrozenMicros"].as_u64().unwrap_or(0) as f64 / 1000.0);
            api.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        api.unmount(&v, Some("w"));
        let img = image(d, &v);
        let floor_copy = img.with_extension("floor");
        let (mut berth, mut floor) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let t = Instant::now();
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg("cp --sparse=always \"$1\" \"$2\" && sync \"$2\"")
                .args([
                    "floor",
                    &img.to_string_lossy(),
                    &floor_copy.to_string_lossy(),
                ])
                .status()
                .is_ok_and(|s| s.success());
            floor.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(ok, "cp --sparse=always of {}", img.display());
            let _ = fs::remove_file(&floor_copy);
            let t = Instant::now();
            api.snapshot(&v, "s");
            berth.push(t.elapsed().as_secs_f64() * 1000.0);
            api.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        let ratio = median(&berth) / median(&floor);
        println!("  {mib:5} MiB of data:");
        println!("    floor cp+sync       {}", stats(&mut floor));
        println!(
            "    snapshot, unmounted {}  ({ratio:.2}x the floor)",
            stats(&mut berth)
        );
        println!("    snapshot, mounted   {}", stats(&mut mounted));
        println!("      writers held      {}", stats(&mut held));
        api.ok("VolumeDriver.Remove", json!({"Name": v}));
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
