//! Upgrades never lose a volume: records written by earlier berthd builds
//! must stay readable by this one.
//!
//! `tests/fixtures/v1/loop/` holds the state records (format version 1)
//! written by a real berthd with the loop driver, one for each state a
//! record can be in (see its MANIFEST.md; `tests/fixtures/make-v1.sh`
//! regenerates them). `tests/fixtures/v1/ceph/` holds the catalog
//! entries the rbd and cephfs drivers store in Ceph metadata (see its
//! MANIFEST.md). Each is parsed with the current record types and store,
//! and checked field by field. Needs no root and no Ceph.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth::state::{
    BadRecord, Phase, RecordStore, SnapshotRecord, SnapshotStore, VolumeRecord, RECORD_VERSION,
    RESIZING_KEY,
};
use berth::volume::{FsType, VolumeName};

const MIB: u64 = 1 << 20;

/// The two Docker mount IDs the fixtures were mounted with.
const ID_A: &str = "4f1c2a9e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a29180f1e2d3c4b5a69788796";
const ID_B: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn v1() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read fixture dir") {
        let e = e.expect("entry");
        let dst = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy fixture");
        }
    }
}

/// What the store reads from the loop fixtures (through a private copy:
/// loading tidies the directory).
struct Loaded {
    _dir: tempfile::TempDir,
    volumes_dir: PathBuf,
    volumes: Vec<VolumeRecord>,
    bad_volumes: Vec<BadRecord>,
    snapshots: Vec<SnapshotRecord>,
    bad_snapshots: Vec<BadRecord>,
}

impl Loaded {
    fn vol(&self, name: &str) -> &VolumeRecord {
        self.volumes
            .iter()
            .find(|r| r.name.as_str() == name)
            .unwrap_or_else(|| panic!("no volume record {name} read from the fixtures"))
    }

    fn snap(&self, name: &str) -> &SnapshotRecord {
        self.snapshots
            .iter()
            .find(|r| r.name.as_str() == name)
            .unwrap_or_else(|| panic!("no snapshot record {name} read from the fixtures"))
    }
}

fn load_loop() -> Loaded {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&v1().join("loop/records"), &dir.path().join("records"));
    let volumes_dir = dir.path().join("records/berth");
    let store = RecordStore::open(&volumes_dir).expect("open record store");
    let (volumes, bad_volumes) = store.load_all().expect("load volume records");
    let snaps = SnapshotStore::open(&volumes_dir.join("snapshots")).expect("open snapshot store");
    let (snapshots, bad_snapshots) = snaps.load_all().expect("load snapshot records");
    Loaded {
        _dir: dir,
        volumes_dir,
        volumes,
        bad_volumes,
        snapshots,
        bad_snapshots,
    }
}

fn names<T>(v: &[T], f: impl Fn(&T) -> &VolumeName) -> Vec<String> {
    v.iter().map(|r| f(r).as_str().to_string()).collect()
}

/// The checks every readable volume record passes.
fn assert_common(r: &VolumeRecord) {
    assert_eq!(r.version, RECORD_VERSION, "{}", r.name);
    assert_eq!(r.id.len(), 32, "{}: id {:?}", r.name, r.id);
    assert!(!r.created_at.is_empty(), "{}", r.name);
    assert_eq!(r.volume_type, "default", "{}", r.name);
    // Read back losslessly by the current types.
    let again: VolumeRecord =
        serde_json::from_str(&serde_json::to_string(r).expect("encode")).expect("decode");
    assert_eq!(&again, r);
}

fn assert_ready_unmounted(r: &VolumeRecord) {
    assert_eq!(r.phase, Phase::Ready, "{}", r.name);
    assert!(r.mounts.is_empty(), "{}: {:?}", r.name, r.mounts);
    assert_eq!(r.mount_count(), 0, "{}", r.name);
    assert!(r.mounted.is_none(), "{}", r.name);
}

fn image_of(r: &VolumeRecord) -> &str {
    r.driver_data
        .get("image")
        .map(String::as_str)
        .unwrap_or_else(|| panic!("{}: no image in driver_data", r.name))
}

#[test]
fn loop_fixtures_hold_every_record_and_only_the_damaged_one_is_bad() {
    let l = load_loop();
    assert_eq!(
        names(&l.volumes, |r| &r.name),
        [
            "adopted",
            "clone",
            "creating",
            "fresh",
            "from-snap",
            "mounted",
            "options",
            "owner-pending",
            "snapped",
            "to-remove",
            "to-resize",
        ]
    );
    assert_eq!(
        names(&l.snapshots, |r| &r.name),
        ["snap-cold", "snap-creating", "snap-hot", "snap-to-remove"]
    );
    assert!(l.bad_snapshots.is_empty(), "{:?}", l.bad_snapshots);
    assert_eq!(l.bad_volumes.len(), 1, "{:?}", l.bad_volumes);
    assert!(l.bad_volumes[0].path.ends_with("damaged.json"));
    assert!(!l.bad_volumes[0].reason.is_empty());
    for r in &l.volumes {
        assert_common(r);
    }
}

#[test]
fn damaged_record_is_reported_unreadable() {
    let l = load_loop();
    let store = RecordStore::open(&l.volumes_dir).expect("open");
    let name = VolumeName::parse("damaged").expect("name");
    let err = store
        .load(&name)
        .expect_err("a truncated record must not load");
    assert!(err.to_string().contains("damaged.json"), "{err}");
    // The file is still there for a human.
    assert!(l.volumes_dir.join("damaged.json").exists());
    let text = std::fs::read(v1().join("loop/records/berth/damaged.json")).expect("read");
    assert!(serde_json::from_slice::<VolumeRecord>(&text).is_err());
}

#[test]
fn fresh_volume() {
    let l = load_loop();
    let r = l.vol("fresh");
    assert_ready_unmounted(r);
    assert_eq!(r.size, 64 * MIB);
    assert_eq!(r.fs_type, FsType::Ext4);
    assert_eq!((r.uid, r.gid, r.mode), (0, 0, 0o755));
    assert_eq!((r.iops, r.availability_zone.as_str()), (0, ""));
    assert!(!r.owner_pending);
    assert!(r.origin.is_empty());
    assert!(image_of(r).ends_with("/fresh.img"));
    assert_eq!(r.driver_data.len(), 1, "{:?}", r.driver_data);
}

#[test]
fn volume_with_options() {
    let l = load_loop();
    let r = l.vol("options");
    assert_ready_unmounted(r);
    assert_eq!(r.size, 320 * MIB);
    assert_eq!(r.fs_type, FsType::Xfs);
    assert_eq!(r.iops, 300);
    assert_eq!(r.availability_zone, "zone-b");
    assert_eq!((r.uid, r.gid, r.mode), (1000, 1001, 0o750));
    assert!(!r.owner_pending);
}

#[test]
fn adopted_volume() {
    let l = load_loop();
    let r = l.vol("adopted");
    assert_ready_unmounted(r);
    assert_eq!(r.size, 64 * MIB, "size is the adopted file's");
    assert_eq!(r.fs_type, FsType::Ext4);
    assert_eq!(
        r.driver_data.get("berth.adopted").map(String::as_str),
        Some("true")
    );
    assert!(image_of(r).ends_with("/adopted.img"));
}

#[test]
fn mounted_volume_keeps_its_mount_ids_and_counts() {
    let l = load_loop();
    let r = l.vol("mounted");
    assert_eq!(r.phase, Phase::Ready);
    assert_eq!(r.size, 64 * MIB);
    let want: BTreeMap<String, u32> = [
        (String::new(), 1),
        (ID_A.to_string(), 2),
        (ID_B.to_string(), 1),
    ]
    .into();
    assert_eq!(r.mounts, want);
    assert_eq!(r.mount_count(), 4);
    let m = r.mounted.as_ref().expect("mounted while mounts are held");
    assert!(
        m.device.to_string_lossy().starts_with("/dev/loop"),
        "{:?}",
        m.device
    );
    assert!(m.target.ends_with("mnt/mounted"), "{:?}", m.target);
}

#[test]
fn volume_with_snapshots() {
    let l = load_loop();
    let v = l.vol("snapped");
    assert_ready_unmounted(v);
    assert_eq!(v.size, 64 * MIB);
    for (name, mounted) in [("snap-cold", false), ("snap-hot", true)] {
        let s = l.snap(name);
        assert_eq!(s.version, RECORD_VERSION);
        assert_eq!(s.phase, Phase::Ready, "{name}");
        assert_eq!(s.volume.as_str(), "snapped", "{name}");
        assert_eq!(s.volume_id, v.id, "{name}");
        assert_eq!(s.size, v.size, "{name}");
        assert_eq!(s.fs_type, FsType::Ext4, "{name}");
        assert_eq!(s.volume_type, "default", "{name}");
        assert_eq!((s.uid, s.gid, s.mode), (v.uid, v.gid, v.mode), "{name}");
        assert!(
            s.driver_data
                .get("image")
                .is_some_and(|i| i.ends_with(&format!("/{name}.snap"))),
            "{name}: {:?}",
            s.driver_data
        );
        assert!(s.driver_data.contains_key("copyMethod"), "{name}");
        assert_eq!(
            s.driver_data.contains_key("frozenMicros"),
            mounted,
            "{name}: a snapshot of a mounted volume records the freeze"
        );
        let again: SnapshotRecord =
            serde_json::from_str(&serde_json::to_string(s).expect("encode")).expect("decode");
        assert_eq!(&again, s);
    }
}

#[test]
fn clone_and_volumes_from_snapshots() {
    let l = load_loop();
    let src = l.vol("snapped");

    let c = l.vol("clone");
    assert_ready_unmounted(c);
    assert_eq!(c.size, 128 * MIB, "the clone was grown");
    assert_eq!(c.fs_type, FsType::Ext4);
    assert_eq!(c.origin, format!("volume snapped ({})", src.id));
    assert!(c.driver_data.contains_key("copyMethod"));
    assert!(
        c.driver_data.contains_key("frozenMicros"),
        "cloned while mounted"
    );
    assert!(image_of(c).ends_with("/clone.img"));

    let f = l.vol("from-snap");
    assert_ready_unmounted(f);
    assert_eq!(f.size, 64 * MIB);
    assert_eq!(
        f.origin,
        format!("snapshot snap-cold ({})", l.snap("snap-cold").id)
    );
    assert!(!f.owner_pending);
    assert!(f.driver_data.contains_key("copyMethod"));

    let o = l.vol("owner-pending");
    assert_ready_unmounted(o);
    assert_eq!(
        o.origin,
        format!("snapshot snap-hot ({})", l.snap("snap-hot").id)
    );
    assert!(o.owner_pending);
    assert_eq!((o.uid, o.gid), (2000, 2000));
}

#[test]
fn interrupted_create_and_remove() {
    let l = load_loop();
    let c = l.vol("creating");
    assert_eq!(c.phase, Phase::Creating);
    assert_eq!(c.size, 64 * MIB);
    assert_eq!(c.fs_type, FsType::Ext4);
    assert!(c.mounts.is_empty() && c.mounted.is_none());
    assert!(!c.driver_data.contains_key("berth.adopted"));

    let r = l.vol("to-remove");
    assert_eq!(r.phase, Phase::Removing);
    assert_eq!(r.size, 64 * MIB);
    assert!(image_of(r).ends_with("/to-remove.img"));
    assert!(r.mounts.is_empty() && r.mounted.is_none());

    let sc = l.snap("snap-creating");
    assert_eq!(sc.phase, Phase::Creating);
    assert_eq!(sc.volume.as_str(), "to-resize");
    assert_eq!(sc.volume_id, l.vol("to-resize").id);
    assert!(sc.driver_data.is_empty());

    let sr = l.snap("snap-to-remove");
    assert_eq!(sr.phase, Phase::Removing);
    assert_eq!(sr.volume.as_str(), "to-resize");
    assert!(sr
        .driver_data
        .get("image")
        .is_some_and(|i| i.ends_with("/snap-to-remove.snap")));
}

#[test]
fn interrupted_resize() {
    let l = load_loop();
    let r = l.vol("to-resize");
    assert_ready_unmounted(r);
    assert_eq!(r.size, 64 * MIB, "the old size until the resize is done");
    assert_eq!(
        r.driver_data.get(RESIZING_KEY).map(String::as_str),
        Some("134217728")
    );
}

/// The Ceph catalog entries: `(file, stored value)` of a fixture dir.
fn ceph_entries(driver: &str) -> Vec<(String, String)> {
    let dir = v1().join("ceph").join(driver);
    let mut v: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("ceph fixture dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).expect("read"),
            )
        })
        .filter(|(n, _)| n.ends_with(".json"))
        .collect();
    v.sort();
    v
}

/// Parses a catalog entry as the drivers do (`decode` / `snapshots_in`
/// are `serde_json::from_str` of these types).
fn ceph_volume(driver: &str, image: &str) -> VolumeRecord {
    let (_, text) = ceph_entries(driver)
        .into_iter()
        .find(|(n, _)| *n == format!("{image}.berth.volume.json"))
        .unwrap_or_else(|| panic!("no {driver} entry for {image}"));
    let r: VolumeRecord = serde_json::from_str(&text).expect("volume catalog entry");
    assert_eq!(r.name.as_str(), image);
    assert_eq!(r.version, RECORD_VERSION);
    assert_eq!(r.phase, Phase::Ready, "the catalog always says ready");
    assert!(r.mounts.is_empty() && r.mounted.is_none(), "no host state");
    assert!(!r.owner_pending);
    r
}

fn ceph_snapshot(driver: &str, image: &str, snap: &str) -> SnapshotRecord {
    let file = format!("{image}.berth.snapshot.{snap}.json");
    let (_, text) = ceph_entries(driver)
        .into_iter()
        .find(|(n, _)| *n == file)
        .unwrap_or_else(|| panic!("no {driver} entry {file}"));
    let s: SnapshotRecord = serde_json::from_str(&text).expect("snapshot catalog entry");
    assert_eq!(s.name.as_str(), snap);
    assert_eq!(s.volume.as_str(), image);
    assert_eq!(s.phase, Phase::Ready);
    s
}

#[test]
fn ceph_catalog_entries() {
    for driver in ["rbd", "cephfs"] {
        let files: Vec<String> = ceph_entries(driver).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            files,
            [
                "clone1.berth.volume.json",
                "data1.berth.snapshot.snap1.json",
                "data1.berth.volume.json",
                "restored1.berth.volume.json",
            ],
            "{driver}"
        );
        let data = ceph_volume(driver, "data1");
        assert_eq!(data.size, 1 << 30, "{driver}");
        assert_eq!(data.fs_type, FsType::Ext4, "{driver}");
        assert!(data.origin.is_empty());
        let snap = ceph_snapshot(driver, "data1", "snap1");
        assert_eq!(snap.volume_id, data.id);
        assert_eq!(snap.size, data.size);
        let restored = ceph_volume(driver, "restored1");
        assert_eq!(restored.origin, format!("snapshot snap1 ({})", snap.id));
        let clone = ceph_volume(driver, "clone1");
        assert_eq!(clone.origin, format!("volume data1 ({})", data.id));
        assert_eq!(clone.size, data.size, "{driver}");
        match driver {
            "rbd" => {
                assert_eq!(
                    data.driver_data.get("pool").map(String::as_str),
                    Some("rbd")
                );
                assert_eq!(
                    snap.driver_data.get("image").map(String::as_str),
                    Some("data1")
                );
                assert_eq!(
                    clone.driver_data.get("copyMethod").map(String::as_str),
                    Some("rbd clone")
                );
            }
            _ => {
                assert_eq!(
                    data.driver_data.get("filesystem").map(String::as_str),
                    Some("cephfs")
                );
                assert_eq!(
                    snap.driver_data.get("subvolume").map(String::as_str),
                    Some("data1")
                );
                assert_eq!(
                    restored.driver_data.get("copyMethod").map(String::as_str),
                    Some("subvolume clone")
                );
            }
        }
    }
}

/// With the Ceph drivers built in: the drivers' own decoders read the
/// catalog fixtures.
#[cfg(feature = "ceph")]
#[test]
fn ceph_catalog_entries_through_the_driver_decoders() {
    use berth::driver::ceph::{decode, snapshots_in};
    for driver in ["rbd", "cephfs"] {
        let mut meta = BTreeMap::new();
        for (file, text) in ceph_entries(driver) {
            let key = file.strip_suffix(".json").expect("json");
            if let Some(image) = key.strip_suffix(".berth.volume") {
                let r = decode("svc", image, &text).expect("decodes");
                assert_eq!(r.name.as_str(), image);
            } else if let Some(rest) = key.strip_prefix("data1.") {
                meta.insert(rest.to_string(), text);
            }
        }
        let snaps = snapshots_in("svc", "data1", &meta);
        assert_eq!(names(&snaps, |s| &s.name), ["snap1"], "{driver}");
    }
}

/// Writes `tests/fixtures/v1/ceph/`: each catalog entry as the rbd and
/// cephfs drivers store it, made by the drivers' own encoders
/// (`berth::driver::ceph::encode` / `encode_snapshot`) from records
/// filled in as the service and the drivers fill them (a new volume, a
/// snapshot of it, a volume from that snapshot, a clone of the volume). IDs and
/// times are fixed so a rerun only changes what the encoders change.
///
/// `cargo test --features ceph --test upgrade_fixtures -- --ignored write_ceph_fixtures`
#[cfg(feature = "ceph")]
#[test]
#[ignore = "writes the fixtures; run by hand"]
fn write_ceph_fixtures() {
    use berth::driver::ceph::{encode, encode_snapshot, META_KEY, SNAP_META_PREFIX};

    let name = |s: &str| VolumeName::parse(s).expect("name");
    const DATA_ID: &str = "5d0c1e2f3a4b5c6d7e8f90a1b2c3d4e5";
    const SNAP_ID: &str = "6e1d2f3a4b5c6d7e8f90a1b2c3d4e5f6";
    let volume = |n: &str, id: &str, size: u64, origin: String| VolumeRecord {
        version: RECORD_VERSION,
        name: name(n),
        id: id.into(),
        // As when the driver stores it: the create intent.
        phase: Phase::Creating,
        created_at: "2026-12-03T09:00:00Z".into(),
        size,
        fs_type: FsType::Ext4,
        volume_type: "default".into(),
        iops: 0,
        availability_zone: String::new(),
        uid: 0,
        gid: 0,
        mode: 0o755,
        owner_pending: false,
        origin,
        driver_data: BTreeMap::new(),
        mounts: BTreeMap::new(),
        mounted: None,
    };
    for driver in ["rbd", "cephfs"] {
        let dir = v1().join("ceph").join(driver);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let put = |image: &str, key: &str, value: String| {
            std::fs::write(dir.join(format!("{image}.{key}.json")), value).expect("write");
        };
        let copy_method = if driver == "rbd" {
            "rbd clone"
        } else {
            "subvolume clone"
        };
        // What the driver's create adds to driver_data.
        let fill = |d: &mut BTreeMap<String, String>| {
            if driver == "rbd" {
                d.insert("pool".into(), "rbd".into());
            } else {
                d.insert("filesystem".into(), "cephfs".into());
                d.insert("group".into(), "berth".into());
            }
        };

        let mut data = volume("data1", DATA_ID, 1 << 30, String::new());
        fill(&mut data.driver_data);
        put("data1", META_KEY, encode(&data));

        let mut snap = SnapshotRecord {
            version: RECORD_VERSION,
            name: name("snap1"),
            id: SNAP_ID.into(),
            phase: Phase::Creating,
            created_at: "2026-12-03T09:01:00Z".into(),
            volume: name("data1"),
            volume_id: DATA_ID.into(),
            size: data.size,
            fs_type: data.fs_type,
            volume_type: "default".into(),
            uid: 0,
            gid: 0,
            mode: 0o755,
            driver_data: BTreeMap::new(),
        };
        match driver {
            "rbd" => {
                snap.driver_data.insert("image".into(), "data1".into());
                snap.driver_data.insert("pool".into(), "rbd".into());
            }
            _ => {
                snap.driver_data.insert("subvolume".into(), "data1".into());
            }
        }
        put(
            "data1",
            &format!("{SNAP_META_PREFIX}snap1"),
            encode_snapshot(&snap),
        );

        let mut restored = volume(
            "restored1",
            "7f2e3a4b5c6d7e8f90a1b2c3d4e5f6a7",
            data.size,
            format!("snapshot snap1 ({SNAP_ID})"),
        );
        restored
            .driver_data
            .insert("copyMethod".into(), copy_method.into());
        fill(&mut restored.driver_data);
        put("restored1", META_KEY, encode(&restored));

        let mut clone = volume(
            "clone1",
            "8a3f4b5c6d7e8f90a1b2c3d4e5f6a7b8",
            data.size,
            format!("volume data1 ({DATA_ID})"),
        );
        clone
            .driver_data
            .insert("copyMethod".into(), copy_method.into());
        fill(&mut clone.driver_data);
        put("clone1", META_KEY, encode(&clone));
    }
}
