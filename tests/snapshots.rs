//! Snapshots and clones of loop volumes, for real: point-in-time
//! content, restores by name and ID, reflink pools, clones of volumes in
//! use. Needs root (every test is named `root_…`); skips loudly otherwise.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::blkid_type;
use common::loopfs::*;
use serde_json::json;

#[test]
fn root_clone_of_a_volume_in_use_is_consistent_and_independent() {
    if !can_run("root_clone_of_a_volume_in_use_is_consistent_and_independent") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    api.create(
        "src",
        &[("size", "200M"), ("uid", "1000"), ("mode", "0750")],
    );
    let p = api.mount("src", Some("writer"));
    write_data(&p.join("big"), 20 << 20, 7);
    fs::write(p.join("small"), b"before").expect("write");
    let src_id = api.status("src")["id"].as_str().expect("id").to_string();
    // Cloned while mounted (and written to a moment before).
    api.create("c1", &[("volumeName", "src")]);
    api.create("c2", &[("VOLUMEID", &src_id), ("size", "300M")]);
    fs::write(p.join("small"), b"after").expect("write");
    fs::write(p.join("later"), b"later").expect("write");
    let st = api.status("c1");
    assert_eq!(st["origin"], json!(format!("volume src ({src_id})")));
    assert_eq!(st["copyMethod"], json!("copy"), "the test dir is on ext4");
    assert_eq!(st["fsType"], json!("ext4"));
    assert_eq!(st["dataUid"], json!(1000), "owner comes from the source");
    assert_eq!(api.status("c2")["sizeBytes"], json!(300u64 << 20));
    for c in ["c1", "c2"] {
        let q = api.mount(c, Some("reader"));
        assert_eq!(fs::read(q.join("small")).expect("read"), b"before", "{c}");
        assert!(!q.join("later").exists(), "{c}");
        let big = fs::read(q.join("big")).expect("read");
        let mut expect = Vec::new();
        write_data(&d.dir.path().join("expect"), 20 << 20, 7);
        fs::File::open(d.dir.path().join("expect"))
            .and_then(|mut f| f.read_to_end(&mut expect))
            .expect("read");
        assert!(big == expect, "{c}: big file differs");
        let md = fs::metadata(&q).expect("stat");
        assert_eq!((md.uid(), md.mode() & 0o7777), (1000, 0o750), "{c}");
        // Independent afterwards: writes to the copy stay there.
        fs::write(q.join("mine"), c).expect("write");
        api.unmount(c, Some("reader"));
    }
    assert!(!p.join("mine").exists());
    assert!(
        fs_total(&api.mount("c2", Some("r"))) > 250 << 20,
        "c2 was grown"
    );
    api.unmount("c2", Some("r"));
    api.unmount("src", Some("writer"));
}

#[test]
fn root_snapshots_restore_snapshot_time_content_and_survive_restarts() {
    if !can_run("root_snapshots_restore_snapshot_time_content_and_survive_restarts") {
        return;
    }
    let mut d = start();
    let api = d.client(SERVICE);
    api.create("v", &[("fsType", "xfs"), ("size", "320M")]);
    let p = api.mount("v", Some("w"));
    fs::write(p.join("a"), b"snapshot time").expect("write");
    let s1 = api.snapshot("v", "s1");
    assert_eq!(s1["Volume"], json!("v"));
    assert_eq!(s1["SizeBytes"], json!(320u64 << 20));
    assert_eq!(s1["FsType"], json!("xfs"));
    assert_eq!(s1["CopyMethod"], json!("copy"));
    assert!(
        s1["FrozenMicros"].as_u64().is_some(),
        "a mounted source is frozen"
    );
    fs::write(p.join("a"), b"later").expect("write");
    fs::write(p.join("b"), b"later").expect("write");
    // A long copy shows in /Berth.Progress while it runs.
    write_data(&p.join("bulk"), 100 << 20, 5);
    let seen = std::thread::scope(|sc| {
        let t = sc.spawn(|| api.snapshot("v", "s2"));
        let mut seen = None;
        while !t.is_finished() {
            let ops = api.ok("Berth.Progress", json!({}));
            if let Some(op) = ops["Operations"].as_array().and_then(|a| a.first()) {
                seen = Some(op.clone());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().expect("snapshot thread");
        seen
    });
    let op = seen.expect("the snapshot showed in /Berth.Progress");
    assert_eq!(
        (op["Kind"].as_str(), op["Target"].as_str()),
        (Some("snapshot"), Some("s2"))
    );
    assert!(
        api.ok("Berth.Progress", json!({}))["Operations"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "finished operations leave the table"
    );
    api.unmount("v", Some("w"));
    // From the snapshot by name and by ID: snapshot-time content only.
    api.create("r1", &[("snapshotName", "s1")]);
    api.create("r2", &[("SNAPSHOTID", s1["ID"].as_str().expect("id"))]);
    for r in ["r1", "r2"] {
        assert_eq!(blkid_type(&image(&d, r)), "xfs");
        let q = api.mount(r, Some("c"));
        assert_eq!(
            fs::read(q.join("a")).expect("read"),
            b"snapshot time",
            "{r}"
        );
        assert!(!q.join("b").exists(), "{r}");
        api.unmount(r, Some("c"));
    }
    // Listing shows size and source.
    let l = api.ok("Berth.SnapshotList", json!({"Volume": "v"}));
    let names: Vec<&str> = l["Snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["Name"].as_str())
        .collect();
    assert_eq!(names, vec!["s1", "s2"]);
    // A snapshot with volumes made from it can go: they are copies.
    api.ok("Berth.SnapshotRemove", json!({"Name": "s1"}));
    assert!(!d.image_dir(SERVICE).join("s1.snap").exists());
    let q = api.mount("r1", Some("c"));
    assert_eq!(fs::read(q.join("a")).expect("read"), b"snapshot time");
    api.unmount("r1", Some("c"));
    // Removing the volume keeps its snapshots.
    api.ok("VolumeDriver.Remove", json!({"Name": "v"}));
    let s2 = api.ok("Berth.SnapshotInspect", json!({"Name": "s2"}))["Snapshot"].clone();
    assert_eq!(s2["VolumeExists"], json!(false));
    // Snapshots survive a restart.
    d.restart();
    let l = api.ok("Berth.SnapshotList", json!({}));
    assert_eq!(l["Snapshots"].as_array().expect("list").len(), 1);
    api.create("r3", &[("snapshotName", "s2")]);
    let q = api.mount("r3", Some("c"));
    assert_eq!(fs::read(q.join("b")).expect("read"), b"later");
    api.unmount("r3", Some("c"));
    // The CLI sees the same.
    let out = run_ok(
        env!("CARGO_BIN_EXE_berth"),
        &["--socket", &s(&d.socket(SERVICE)), "snapshot", "ls"],
    );
    assert!(out.contains("s2") && out.contains("v (removed)"), "{out}");
    let e = api.err(
        "Berth.SnapshotCreate",
        json!({"Volume": "nope", "Name": "s9"}),
    );
    assert!(e.contains("nope"), "{e}");
    let e = api.err("Berth.SnapshotRemove", json!({"Name": "s1"}));
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn root_reflink_pool_snapshots_share_extents() {
    if !can_run("root_reflink_pool_snapshots_share_extents") {
        return;
    }
    let d = start_with_xfs_pool(2 << 30);
    let api = d.client(SERVICE);
    let pool_dir = xfs_pool_dir(&d);
    // A type that names no pool (REX-Ray's storage classes) is recorded
    // and shown; the volume lives in the default pool.
    api.create("classy", &[("volumeType", "gold"), ("size", "1")]);
    assert_eq!(api.status("classy")["type"], json!("gold"));
    assert_eq!(api.status("classy")["pool"], json!("default"));
    assert!(!pool_dir.join("classy.img").exists(), "not in pool fast");
    assert!(d.image_dir(SERVICE).join("classy.img").exists());
    api.remove("classy");
    api.create("v", &[("type", "fast"), ("size", "1")]);
    assert_eq!(api.status("v")["type"], json!("fast"));
    assert!(pool_dir.join("v.img").exists(), "image lives in the pool");
    let p = api.mount("v", Some("w"));
    write_data(&p.join("data"), 64 << 20, 3);
    let free_before = fs_free(&pool_dir);
    let snap = api.snapshot("v", "s");
    let free_after = fs_free(&pool_dir);
    assert_eq!(snap["CopyMethod"], json!("reflink"));
    assert_eq!(snap["Type"], json!("fast"));
    let frozen = snap["FrozenMicros"].as_u64().expect("frozen");
    assert!(frozen < 2_000_000, "frozen for {frozen} µs");
    let snap_img = pool_dir.join("s.snap");
    let frag = run_ok("filefrag", &["-v", &s(&snap_img)]);
    assert!(frag.contains("shared"), "extents are shared:\n{frag}");
    assert!(
        free_before.saturating_sub(free_after) < 8 << 20,
        "a reflink snapshot of 64 MiB of data took {} bytes",
        free_before.saturating_sub(free_after)
    );
    // Clones in the pool are reflinks too, and independent.
    api.create("c", &[("volumeName", "v")]);
    assert_eq!(api.status("c")["copyMethod"], json!("reflink"));
    assert_eq!(api.status("c")["type"], json!("fast"));
    fs::write(p.join("after"), b"x").expect("write");
    api.unmount("v", Some("w"));
    let q = api.mount("c", Some("r"));
    assert!(!q.join("after").exists());
    assert_eq!(fs::metadata(q.join("data")).expect("stat").len(), 64 << 20);
    api.unmount("c", Some("r"));
    // A clone across pools falls back to a copy.
    api.create("x", &[("volumeName", "v"), ("type", "default")]);
    assert_eq!(api.status("x")["copyMethod"], json!("copy"));
}
