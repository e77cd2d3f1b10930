//! Upgrades and rollbacks between the berthd that wrote
//! `tests/fixtures/v1` (built once from that commit by
//! `tests/upgrade/old-berthd.sh`, cached in /var/cache/berth-test) and
//! this build, on the same state directory:
//!
//! - this build serves every v1 fixture record and refuses one of a newer
//!   format, naming the file and the format, without touching it;
//! - a volume mounted (several mount IDs) by the old berthd keeps its
//!   mounts and counts under the new one, which unmounts it cleanly;
//! - the old berthd reads the records this build writes (a rollback), and
//!   refuses a record of a newer format, leaving it byte for byte.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use berth::state::{RecordStore, RECORD_VERSION};
use berth::volume::VolumeName;
use common::{Api, Daemon};
use serde_json::{json, Value};

const ID_A: &str = "4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180f1e2d3c4b5a69788796";
const ID_B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// The berthd of [`common::old::FIXTURE_COMMIT`]; `None` (SKIPPED printed) when this
/// checkout does not have that commit.
fn old_berthd(test: &str) -> Option<PathBuf> {
    common::old::berthd(test, "")
}

fn new_berthd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berthd"))
}

/// Every file under `dir` with its bytes.
fn snapshot_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(snapshot_files(&p));
        } else {
            out.insert(p.clone(), std::fs::read(&p).expect("read file"));
        }
    }
    out
}

fn status(api: &Api) -> Value {
    let (_, v) = api.raw("Berth.Status", "{}");
    v["Services"][0].clone()
}

fn snapshot_names(api: &Api) -> Vec<String> {
    let v = api.ok("Berth.SnapshotList", json!({}));
    let mut n: Vec<String> = v["Snapshots"]
        .as_array()
        .expect("Snapshots")
        .iter()
        .map(|s| s["Name"].as_str().expect("Name").to_string())
        .collect();
    n.sort();
    n
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read fixture dir").flatten() {
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy fixture");
        }
    }
}

/// `rec` (a record file's text) as a future berthd of format `format`
/// might write it: a field this build does not know, another shape.
fn future_record(text: &[u8], format: u32) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(text).expect("record JSON");
    v["version"] = json!(format);
    v["placement"] = json!({"tier": "fast"});
    serde_json::to_vec_pretty(&v).expect("encode")
}

#[test]
fn new_berthd_serves_the_v1_fixtures_and_refuses_a_newer_format() {
    let dir = tempfile::Builder::new()
        .prefix("berth-upgrade-")
        .tempdir()
        .expect("tempdir");
    let records = dir.path().join("state/records/berth");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/loop/records"),
        &dir.path().join("state/records"),
    );
    let fresh = std::fs::read(records.join("fresh.json")).expect("fixture");
    let future = future_record(&fresh, RECORD_VERSION + 1).replace_name("fresh", "future");
    std::fs::write(records.join("future.json"), &future).expect("write");
    let d = Daemon::builder().dir(dir).start();
    let api = d.client("berth");

    // Every Ready v1 volume, with its size and filesystem.
    let mut names = api.list_names();
    names.sort();
    assert_eq!(
        names,
        [
            "adopted",
            "clone",
            "fresh",
            "from-snap",
            "mounted",
            "options",
            "owner-pending",
            "snapped",
            "to-resize"
        ],
        "log:\n{}",
        d.log()
    );
    for (name, size, fs) in [
        ("fresh", 64u64 << 20, "ext4"),
        ("options", 320 << 20, "xfs"),
        ("clone", 128 << 20, "ext4"),
        ("adopted", 64 << 20, "ext4"),
        ("to-resize", 64 << 20, "ext4"),
    ] {
        let st = api.status(name);
        assert_eq!(st["sizeBytes"], json!(size), "{name}: {st}");
        assert_eq!(st["fsType"], json!(fs), "{name}: {st}");
    }
    assert_eq!(snapshot_names(&api), ["snap-cold", "snap-hot"]);

    // The newer record: refused by name, naming its file and format.
    let path = records.join("future.json");
    for e in [
        api.err("VolumeDriver.Get", json!({"Name": "future"})),
        api.create_err("future", &[]),
        api.err("VolumeDriver.Remove", json!({"Name": "future"})),
    ] {
        assert!(
            e.contains(&path.display().to_string())
                && e.contains(&format!("record format {}", RECORD_VERSION + 1))
                && e.contains("newer than this berthd reads"),
            "{e}"
        );
    }
    assert_eq!(std::fs::read(&path).expect("still there"), future);
    let st = status(&api);
    // What was found at start-up: 11 volume and 4 snapshot files of
    // format 1 (the damaged one tells none), the newer one.
    let mut formats = serde_json::Map::new();
    formats.insert("1".into(), json!(15));
    formats.insert((RECORD_VERSION + 1).to_string(), json!(1));
    assert_eq!(st["RecordFormats"], Value::Object(formats), "{st}");
    let refused: Vec<&str> = st["Unreadable"]
        .as_array()
        .expect("Unreadable")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(refused.len(), 2, "damaged and future: {refused:?}");
    assert!(refused.iter().any(|l| l.starts_with("volume damaged:")));
    assert!(refused.iter().any(|l| l.starts_with("volume future:")));
    // `berth status` shows them.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--socket")
        .arg(d.socket("berth"))
        .arg("status")
        .output()
        .expect("berth status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "berth: record formats 1 (15), {} (1)",
            RECORD_VERSION + 1
        )),
        "{text}"
    );
    assert!(text.contains("berth: refused: volume future:"), "{text}");
}

trait ReplaceName {
    fn replace_name(self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceName for Vec<u8> {
    /// The same record under another volume name.
    fn replace_name(self, from: &str, to: &str) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(&self).expect("record JSON");
        assert_eq!(v["name"], json!(from));
        v["name"] = json!(to);
        serde_json::to_vec_pretty(&v).expect("encode")
    }
}

#[test]
fn root_volume_mounted_by_old_berthd_is_unmounted_by_new() {
    const TEST: &str = "root_volume_mounted_by_old_berthd_is_unmounted_by_new";
    if !common::can_use_storage(TEST) {
        return;
    }
    let Some(old) = old_berthd(TEST) else {
        return;
    };
    let mut d = Daemon::builder().binary(&old).start();
    let api = d.client("berth");
    api.create("data", &[("size", "64M")]);
    api.create("idle", &[("size", "320M"), ("fsType", "xfs")]);
    let mp = api.mount("data", Some(ID_A));
    let target = d.mount_dir().join("data");
    std::fs::write(mp.join("kept"), b"written under the old berthd").expect("write");
    api.snapshot("data", "before");
    assert_eq!(api.mount("data", Some(ID_A)), mp);
    api.mount("data", Some(ID_B));
    api.mount("data", None);
    let records = d.records_dir("berth");
    let before = snapshot_files(&d.dir.path().join("state/records"));

    // Upgrade: the new berthd takes over the same state and mounts.
    let t = Instant::now();
    d.stop();
    assert!(common::is_mounted(&target), "a stop leaves mounts in place");
    d.bin = new_berthd();
    d.spawn();
    eprintln!(
        "{TEST}: old berthd stopped, new berthd serving in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let api = d.client("berth");
    let st = api.status("data");
    assert_eq!(st["sizeBytes"], json!(64u64 << 20), "{st}");
    assert_eq!(st["fsType"], json!("ext4"), "{st}");
    assert_eq!(st["mountCount"], json!(4), "{st}");
    assert_eq!(api.status("idle")["fsType"], json!("xfs"));
    assert_eq!(snapshot_names(&api), ["before"]);
    assert_eq!(status(&api)["RecordFormats"], json!({"1": 3}));
    assert_eq!(
        snapshot_files(&d.dir.path().join("state/records")),
        before,
        "reading changes no record"
    );
    let rec = RecordStore::open(&records)
        .expect("store")
        .load(&VolumeName::parse("data").expect("name"))
        .expect("load")
        .expect("record");
    let mounts: Vec<(&str, u32)> = rec.mounts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(mounts, [("", 1), (ID_B, 1), (ID_A, 2)]);
    assert_eq!(
        std::fs::read(mp.join("kept")).expect("data"),
        b"written under the old berthd"
    );

    // The mounts Docker made through the old berthd go away one by one.
    api.unmount("data", None);
    api.unmount("data", Some(ID_A));
    api.unmount("data", Some(ID_B));
    assert!(common::is_mounted(&target), "ID_A still holds one mount");
    api.unmount("data", Some(ID_B)); // holds none: nothing unmounted
    assert!(common::is_mounted(&target));
    api.unmount("data", Some(ID_A));
    assert!(
        !common::is_mounted(&target),
        "the last user's unmount unmounts"
    );
    assert_eq!(api.status("data")["mountCount"], json!(0));
    api.remove("data");
    api.remove("idle");
    api.ok("Berth.SnapshotRemove", json!({"Name": "before"}));
    d.stop();
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_old_berthd_reads_todays_records_and_refuses_a_newer_format() {
    const TEST: &str = "root_old_berthd_reads_todays_records_and_refuses_a_newer_format";
    if !common::can_use_storage(TEST) {
        return;
    }
    let Some(old) = old_berthd(TEST) else {
        return;
    };
    // Records written by this build.
    let mut d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("kept", &[("size", "64M")]);
    api.create("gone", &[("size", "64M")]);
    api.mount("kept", Some(ID_A));
    let target = d.mount_dir().join("kept");
    api.mount("kept", Some(ID_B));
    api.unmount("kept", Some(ID_B));
    api.snapshot("kept", "snap");
    d.stop();
    let records = d.records_dir("berth");
    let newer = future_record(
        &std::fs::read(records.join("gone.json")).expect("record"),
        RECORD_VERSION + 1,
    );
    std::fs::write(records.join("gone.json"), &newer).expect("write");
    let before = snapshot_files(&d.dir.path().join("state/records"));

    // Rollback: the old berthd reads today's format and serves it.
    d.bin = old;
    d.spawn();
    let api = d.client("berth");
    assert_eq!(api.list_names(), ["kept"], "log:\n{}", d.log());
    assert_eq!(api.status("kept")["mountCount"], json!(1));
    assert_eq!(snapshot_names(&api), ["snap"]);
    // It refuses the newer record clearly and leaves it alone.
    let log = d.log();
    assert!(
        log.contains("gone.json")
            && log.contains(&format!(
                "record version {} is newer than this build",
                RECORD_VERSION + 1
            )),
        "{log}"
    );
    let e = api.create_err("gone", &[]);
    assert!(e.contains("unreadable"), "{e}");
    api.unmount("kept", Some(ID_A));
    assert!(!common::is_mounted(&target));
    d.stop();
    let after = snapshot_files(&d.dir.path().join("state/records"));
    assert_eq!(
        after[&records.join("gone.json")],
        newer,
        "the newer record is left byte for byte"
    );
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(p, b)| before.get(*p) != Some(*b))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        changed,
        [&records.join("kept.json")],
        "only the unmount wrote"
    );

    // Back to this build: the newer record is still refused, the rest served.
    d.bin = new_berthd();
    d.spawn();
    let api = d.client("berth");
    assert_eq!(api.list_names(), ["kept"]);
    let e = api.err("VolumeDriver.Get", json!({"Name": "gone"}));
    assert!(e.contains("gone.json") && e.contains("newer"), "{e}");
    api.remove("kept");
    api.ok("Berth.SnapshotRemove", json!({"Name": "snap"}));
    d.stop();
    assert_eq!(
        std::fs::read(records.join("gone.json")).expect("left"),
        newer
    );
    std::fs::remove_file(records.join("gone.json")).expect("tidy");
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}
