use super::*;
use crate::config::{CreateDefaults, DriverSettings, Policy, ServiceSettings};
use crate::driver::fake::FakeDriver;
use crate::state::Phase;
use crate::volume::FsType;

struct Harness {
    _dir: tempfile::TempDir,
    svc: Arc<VolumeService>,
    fake: Arc<FakeDriver>,
    records: PathBuf,
}

pub(super) fn policy() -> Policy {
    Policy {
        create_defaults: CreateDefaults {
            size: 1 << 30,
            fs_type: FsType::Ext4,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
        },
        create_implicit: true,
        create_disable: false,
        create_refuse_unknown_type: false,
        remove_disable: false,
        remove_force: false,
        mount_preempt: false,
        root_path: "/data".into(),
        ignore_used_count: false,
        data_mode: 0o755,
        data_uid: nix::unistd::getuid().as_raw(),
        data_gid: nix::unistd::getgid().as_raw(),
    }
}

fn harness_with(p: Policy, ns: Arc<Namespace>, name: &str) -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = ServiceSettings {
        name: name.into(),
        driver: DriverSettings::Loop {
            image_dir: dir.path().join("images"),
            pools: BTreeMap::new(),
        },
        scope: Scope::Local,
        policy: p,
        limits: Default::default(),
    };
    let fake = Arc::new(FakeDriver::default().with_pools(&["fast"]));
    let records = dir.path().join("records");
    let svc = VolumeService::open(
        &settings,
        &records,
        &dir.path().join("mnt"),
        fake.clone(),
        ns,
        Arc::new(tokio::sync::Notify::new()),
    )
    .expect("open");
    Harness {
        _dir: dir,
        svc: Arc::new(svc),
        fake,
        records,
    }
}

fn harness(p: Policy) -> Harness {
    harness_with(p, Arc::new(Namespace::default()), "berth")
}

fn no_opts() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Volume record files (the `snapshots` sub-directory holds snapshot
/// records).
fn record_files(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&h.records)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "snapshots")
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn create_is_idempotent_and_durable() {
    let h = harness(policy());
    h.svc.create("v1", &no_opts()).await.expect("create");
    h.svc.create("v1", &no_opts()).await.expect("create again");
    assert_eq!(record_files(&h), vec!["v1.json"]);
    let calls = h.fake.state.lock().expect("state").calls.clone();
    assert_eq!(
        calls,
        vec!["create v1"],
        "second create must not reach the driver"
    );
    let v = h.svc.get("v1").expect("get");
    assert_eq!(v.record.phase, Phase::Ready);
    assert!(v.mountpoint.is_none());
}

#[tokio::test]
async fn bad_names_and_options_create_nothing() {
    let h = harness(policy());
    for bad in ["", "..", "a/b", "-x", "a\0b"] {
        let e = h.svc.create(bad, &no_opts()).await.expect_err("bad name");
        assert!(e.to_string().contains("volume name"), "{e}");
    }
    let mut o = no_opts();
    o.insert("size".into(), "0".into());
    let e = h.svc.create("v", &o).await.expect_err("bad size");
    assert!(
        e.to_string().contains("volume v") && e.to_string().contains("size"),
        "{e}"
    );
    assert!(record_files(&h).is_empty());
    assert!(h.fake.state.lock().expect("state").calls.is_empty());
}

#[tokio::test]
async fn failed_driver_create_leaves_no_record() {
    let h = harness(policy());
    h.fake.state.lock().expect("state").fail = Some("create");
    let e = h.svc.create("v", &no_opts()).await.expect_err("injected");
    assert!(e.to_string().contains("volume v"), "{e}");
    assert!(record_files(&h).is_empty());
    assert!(h.svc.get("v").is_err());
    h.svc.create("v", &no_opts()).await.expect("retry works");
}

#[tokio::test]
async fn mount_counts_are_a_multiset() {
    let h = harness(policy());
    h.svc.create("v", &no_opts()).await.expect("create");
    let p1 = h.svc.mount("v", Some("a")).await.expect("mount a");
    let p2 = h
        .svc
        .mount("v", Some("a"))
        .await
        .expect("mount a again (docker cp)");
    h.svc.mount("v", None).await.expect("anonymous");
    assert_eq!(p1, p2);
    assert!(p1.ends_with("v/data"), "{}", p1.display());
    assert!(p1.is_dir(), "data dir created");
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 3);
    h.svc.unmount("v", Some("a")).await.expect("unmount a");
    h.svc
        .unmount("v", Some("zzz"))
        .await
        .expect("unknown id is a no-op");
    h.svc.unmount("v", None).await.expect("anonymous");
    assert!(
        h.fake.state.lock().expect("state").mounted.contains("v"),
        "a still holds one"
    );
    h.svc.unmount("v", Some("a")).await.expect("last");
    assert!(!h.fake.state.lock().expect("state").mounted.contains("v"));
    assert_eq!(h.svc.path("v").expect("path"), None);
    // The record on disk agrees.
    let (recs, _) = h.svc.store.load_all().expect("load");
    assert_eq!(recs[0].mount_count(), 0);
    assert!(recs[0].mounted.is_none());
}

#[tokio::test]
async fn ignore_used_count_unmounts_every_time() {
    let mut p = policy();
    p.ignore_used_count = true;
    let h = harness(p);
    h.svc
        .mount("v", None)
        .await
        .expect("implicit create + mount");
    h.svc.mount("v", None).await.expect("mount again");
    h.svc.unmount("v", None).await.expect("unmount");
    assert!(!h.fake.state.lock().expect("state").mounted.contains("v"));
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 0);
}

#[tokio::test]
async fn implicit_create_can_be_disabled() {
    let mut p = policy();
    p.create_implicit = false;
    let h = harness(p);
    let e = h.svc.mount("nope", None).await.expect_err("not found");
    assert!(
        e.to_string().contains("nope") && e.to_string().contains("not found"),
        "{e}"
    );
}

#[tokio::test]
async fn remove_refused_while_mounted_unless_forced() {
    let h = harness(policy());
    h.svc
        .mount("v", Some("abcdef0123456789"))
        .await
        .expect("mount");
    let e = h.svc.remove("v").await.expect_err("in use");
    assert!(e.to_string().contains("abcdef012345"), "{e}");
    assert!(h.svc.get("v").is_ok(), "nothing removed");

    let mut p = policy();
    p.remove_force = true;
    h.svc.set_policy(p);
    h.svc.remove("v").await.expect("forced");
    assert!(h.svc.get("v").is_err());
    {
        let s = h.fake.state.lock().expect("state");
        assert!(s.mounted.is_empty() && s.created.is_empty());
    }
    assert!(record_files(&h).is_empty());
    h.svc
        .remove("v")
        .await
        .expect("remove of absent volume is success");
}

#[tokio::test]
async fn disable_policies_acknowledge_without_acting() {
    let mut p = policy();
    p.create_disable = true;
    p.remove_disable = true;
    let h = harness(p);
    h.svc.create("v", &no_opts()).await.expect("ack");
    assert!(h.svc.get("v").is_err(), "create.disable creates nothing");
    let mut p = policy();
    p.remove_disable = true;
    h.svc.set_policy(p);
    h.svc.create("v", &no_opts()).await.expect("create");
    h.svc.remove("v").await.expect("ack");
    assert!(h.svc.get("v").is_ok(), "remove.disable removes nothing");
}

#[tokio::test]
async fn failed_mount_changes_nothing() {
    let h = harness(policy());
    h.svc.create("v", &no_opts()).await.expect("create");
    h.fake.state.lock().expect("state").fail = Some("mount");
    let e = h.svc.mount("v", Some("a")).await.expect_err("injected");
    assert!(e.to_string().contains("volume v"), "{e}");
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 0);
    let (recs, _) = h.svc.store.load_all().expect("load");
    assert_eq!(recs[0].mount_count(), 0);
}

#[tokio::test]
async fn failed_unmount_keeps_the_count() {
    let h = harness(policy());
    h.svc.mount("v", Some("a")).await.expect("mount");
    h.fake.state.lock().expect("state").fail = Some("unmount");
    h.svc.unmount("v", Some("a")).await.expect_err("injected");
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 1);
    h.svc.unmount("v", Some("a")).await.expect("retry");
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 0);
}

#[tokio::test]
async fn names_are_unique_across_services() {
    let ns = Arc::new(Namespace::default());
    let a = harness_with(policy(), ns.clone(), "a");
    let b = harness_with(policy(), ns, "b");
    a.svc.create("shared", &no_opts()).await.expect("a");
    let e = b.svc.create("shared", &no_opts()).await.expect_err("b");
    assert!(e.to_string().contains("service a"), "{e}");
    a.svc.remove("shared").await.expect("remove");
    b.svc
        .create("shared", &no_opts())
        .await
        .expect("free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mounts_lose_no_count() {
    let h = harness(policy());
    h.svc.create("v", &no_opts()).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let svc = h.svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.mount("v", Some(&format!("id{}", i % 8)))
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("mount");
    }
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 64);
    assert_eq!(
        h.fake
            .state
            .lock()
            .expect("state")
            .calls
            .iter()
            .filter(|c| c.starts_with("mount"))
            .count(),
        64
    );
    let mut tasks = Vec::new();
    for i in 0..64 {
        let svc = h.svc.clone();
        tasks.push(tokio::spawn(async move {
            svc.unmount("v", Some(&format!("id{}", i % 8))).await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("unmount");
    }
    assert_eq!(h.svc.get("v").expect("get").record.mount_count(), 0);
    let s = h.fake.state.lock().expect("state");
    assert_eq!(
        s.calls.iter().filter(|c| c.starts_with("unmount")).count(),
        1,
        "exactly one real unmount"
    );
    assert_eq!(h.svc.ns.lock_entries(), 0);
}

#[tokio::test]
async fn status_map_has_rexray_keys() {
    let h = harness(policy());
    let mut o = no_opts();
    o.insert("iops".into(), "150".into());
    o.insert("availabilityZone".into(), "z1".into());
    h.svc.create("v", &o).await.expect("create");
    let m = status_map(&h.svc.get("v").expect("get"), "berth");
    for k in [
        "name",
        "size",
        "iops",
        "type",
        "availabilityZone",
        "service",
        "server",
        "fields",
        "fsType",
        "usedBytes",
        "freeBytes",
        "mounted",
    ] {
        assert!(m.contains_key(k), "missing {k}");
    }
    assert_eq!(m["size"], serde_json::json!(1.0));
    assert_eq!(m["iops"], serde_json::json!(150));
    assert_eq!(m["availabilityZone"], serde_json::json!("z1"));
}

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn pools_are_real_and_unknown_types_recorded_or_refused() {
    let h = harness(policy());
    h.svc
        .create("v", &opts(&[("volumeType", "fast")]))
        .await
        .expect("pool fast");
    assert_eq!(h.svc.get("v").expect("get").record.volume_type, "fast");
    h.svc.create("d", &no_opts()).await.expect("default pool");
    let m = status_map(&h.svc.get("d").expect("get"), "berth");
    assert_eq!(m["type"], serde_json::json!("default"));
    // A type that names no pool (REX-Ray's io1, gp2…) is recorded and
    // shown; the volume lives in the default pool.
    h.svc
        .create("x", &opts(&[("type", "io1")]))
        .await
        .expect("unknown type accepted");
    let v = h.svc.get("x").expect("get");
    assert_eq!(v.record.volume_type, "default");
    let m = status_map(&v, "berth");
    assert_eq!(m["type"], serde_json::json!("io1"));
    assert_eq!(m["pool"], serde_json::json!("default"));
    // Refusing them is an opt-in.
    let mut strict = policy();
    strict.create_refuse_unknown_type = true;
    let h = harness(strict);
    let e = h
        .svc
        .create("y", &opts(&[("type", "gold")]))
        .await
        .expect_err("unknown pool refused");
    let msg = e.to_string();
    assert!(
        msg.contains("gold") && msg.contains("default, fast"),
        "{msg}"
    );
    assert!(h.svc.get("y").is_err());
}

#[tokio::test]
async fn clone_takes_source_properties_and_checks_options() {
    let h = harness(policy());
    h.svc
        .create(
            "src",
            &opts(&[
                ("size", "2"),
                ("fsType", "xfs"),
                ("type", "fast"),
                ("uid", "7"),
            ]),
        )
        .await
        .expect("src");
    let id = h.svc.get("src").expect("get").record.id;
    h.svc
        .create("c1", &opts(&[("volumeName", "src")]))
        .await
        .expect("clone by name");
    let c1 = h.svc.get("c1").expect("get").record;
    assert_eq!((c1.size, c1.fs_type, c1.uid), (2 << 30, FsType::Xfs, 7));
    assert_eq!(c1.volume_type, "fast", "a clone stays in its source's pool");
    assert!(c1.origin.starts_with("volume src ("), "{}", c1.origin);
    assert!(!c1.owner_pending);
    h.svc
        .create(
            "c2",
            &opts(&[("VolumeID", &id), ("size", "3"), ("uid", "9")]),
        )
        .await
        .expect("clone by id, grown");
    let c2 = h.svc.get("c2").expect("get").record;
    assert_eq!(c2.size, 3 << 30);
    assert!(c2.owner_pending && c2.uid == 9);
    assert_eq!(
        h.fake.state.lock().expect("state").sizes.get("c2"),
        Some(&(3 << 30))
    );
    for (o, needle) in [
        (vec![("volumeName", "nope")], "no volume \"nope\""),
        (vec![("volumeID", "feed")], "no volume \"feed\""),
        (
            vec![("volumeName", "src"), ("fsType", "ext4")],
            "keeps its source",
        ),
        (vec![("volumeName", "src"), ("size", "1")], "smaller"),
        (vec![("snapshotName", "nope")], "no snapshot"),
    ] {
        let e = h
            .svc
            .create("bad", &opts(&o))
            .await
            .expect_err("must be refused");
        assert!(e.to_string().contains(needle), "{o:?}: {e}");
        assert!(h.svc.get("bad").is_err(), "nothing created");
    }
    let e = h
        .svc
        .create("src2", &opts(&[("volumeName", "src2")]))
        .await
        .expect_err("self");
    assert!(e.to_string().contains("no volume"), "{e}");
}

#[tokio::test]
async fn failed_grow_of_a_clone_rolls_back() {
    let h = harness(policy());
    h.svc.create("src", &no_opts()).await.expect("src");
    h.fake.state.lock().expect("state").fail = Some("resize");
    h.svc
        .create("c", &opts(&[("volumeName", "src"), ("size", "5")]))
        .await
        .expect_err("injected");
    assert!(h.svc.get("c").is_err());
    assert!(!h.fake.state.lock().expect("state").created.contains("c"));
    assert_eq!(record_files(&h), vec!["src.json"]);
}

#[tokio::test]
async fn snapshots_lifecycle() {
    let h = harness(policy());
    h.svc
        .create("v", &opts(&[("mode", "0700")]))
        .await
        .expect("v");
    h.svc.mount("v", Some("a")).await.expect("mount");
    let s = h.svc.snapshot_create("v", "s1").await.expect("snapshot");
    assert_eq!(s.record.volume.as_str(), "v");
    assert!(s.source_exists);
    let e = h.svc.snapshot_create("v", "s1").await.expect_err("dup");
    assert!(e.to_string().contains("already exists"), "{e}");
    let e = h
        .svc
        .snapshot_create("nope", "s2")
        .await
        .expect_err("no vol");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = h
        .svc
        .snapshot_create("v", "../x")
        .await
        .expect_err("bad name");
    assert!(e.to_string().contains("snapshot name"), "{e}");
    // From the snapshot, by name and by ID.
    h.svc
        .create("r1", &opts(&[("snapshotName", "s1")]))
        .await
        .expect("restore");
    let r1 = h.svc.get("r1").expect("get").record;
    assert_eq!(r1.mode, 0o700, "owner comes from the snapshot");
    h.svc
        .create("r2", &opts(&[("snapshotID", &s.record.id)]))
        .await
        .expect("restore by id");
    assert_eq!(h.svc.snapshot_list(Some("v")).expect("ls").len(), 1);
    assert_eq!(
        h.svc.snapshot_get(&s.record.id).expect("by id").record.name,
        s.record.name
    );
    // Removing the volume keeps its snapshots.
    h.svc.unmount("v", Some("a")).await.expect("unmount");
    h.svc.remove("v").await.expect("remove");
    let s = h.svc.snapshot_get("s1").expect("kept");
    assert!(!s.source_exists);
    // Survives a restart (records on disk).
    h.svc.snapshot_remove("s1").await.expect("rm");
    let e = h.svc.snapshot_remove("s1").await.expect_err("gone");
    assert!(e.to_string().contains("not found"), "{e}");
    assert!(h.svc.get("r1").is_ok(), "volumes from it stay");
}

#[tokio::test]
async fn failed_snapshot_leaves_nothing_and_interrupted_one_is_cleaned() {
    let h = harness(policy());
    h.svc.create("v", &no_opts()).await.expect("v");
    h.fake.state.lock().expect("state").fail = Some("snapshot");
    h.svc.snapshot_create("v", "s").await.expect_err("injected");
    assert!(h.svc.snapshot_get("s").is_err());
    let snaps_dir = h.records.join("snapshots");
    assert_eq!(std::fs::read_dir(&snaps_dir).expect("ls").count(), 0);
    // An interrupted snapshot (record says Creating) is removed at start.
    let snap = h
        .svc
        .snapshot_create("v", "s")
        .await
        .expect("snapshot")
        .record;
    let mut creating = snap.clone();
    creating.phase = Phase::Creating;
    h.svc.snap_store.save(&creating).expect("save");
    let fake = h.fake.clone();
    let settings = ServiceSettings {
        name: "berth".into(),
        driver: DriverSettings::Loop {
            image_dir: h._dir.path().join("images"),
            pools: BTreeMap::new(),
        },
        scope: Scope::Local,
        policy: policy(),
        limits: Default::default(),
    };
    let svc2 = VolumeService::open(
        &settings,
        &h.records,
        &h._dir.path().join("mnt"),
        fake.clone(),
        Arc::new(Namespace::default()),
        Arc::new(tokio::sync::Notify::new()),
    )
    .expect("reopen");
    assert!(svc2.snapshot_get("s").is_err(), "interrupted snapshot gone");
    assert!(!fake.state.lock().expect("state").snapshots.contains("s"));
    assert!(svc2.get("v").is_ok());
}

#[tokio::test]
async fn resize_grows_and_refuses_shrink() {
    let h = harness(policy());
    h.svc.create("v", &opts(&[("size", "2")])).await.expect("v");
    let e = h.svc.resize("v", "1").await.expect_err("shrink");
    assert!(e.to_string().contains("cannot shrink"), "{e}");
    let e = h.svc.resize("v", "lots").await.expect_err("bad size");
    assert!(e.to_string().contains("size"), "{e}");
    assert_eq!(h.svc.resize("v", "2").await.expect("same"), 2 << 30);
    assert_eq!(h.svc.resize("v", "3G").await.expect("grow"), 3 << 30);
    assert_eq!(h.svc.get("v").expect("get").record.size, 3 << 30);
    let (recs, _) = h.svc.store.load_all().expect("load");
    assert_eq!(recs[0].size, 3 << 30, "durable");
    h.fake.state.lock().expect("state").fail = Some("resize");
    h.svc.resize("v", "4").await.expect_err("injected");
    assert_eq!(h.svc.get("v").expect("get").record.size, 3 << 30);
    let e = h.svc.resize("nope", "4").await.expect_err("missing");
    assert!(e.to_string().contains("not found"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossed_clones_do_not_deadlock() {
    let h = harness(policy());
    h.svc.create("a", &no_opts()).await.expect("a");
    h.svc.create("b", &no_opts()).await.expect("b");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let svc = h.svc.clone();
        tasks.push(tokio::spawn(async move {
            let (src, dst) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
            let _ = svc
                .create(&format!("{dst}{i}"), &opts(&[("volumeName", src)]))
                .await;
            svc.snapshot_create(src, &format!("s{i}")).await.map(|_| ())
        }));
    }
    let all = async {
        for t in tasks {
            t.await.expect("join").expect("op");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), all)
        .await
        .expect("no deadlock");
    assert_eq!(h.svc.ns.lock_entries(), 0);
}

/// Two "hosts" (services with their own state) on one shared catalog.
fn shared_pair(catalog: &crate::driver::fake::SharedCatalog) -> (Harness, Harness) {
    let make = |catalog: &crate::driver::fake::SharedCatalog| {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ServiceSettings {
            name: "ceph".into(),
            driver: DriverSettings::Loop {
                image_dir: dir.path().join("images"),
                pools: BTreeMap::new(),
            },
            scope: Scope::Global,
            policy: policy(),
            limits: Default::default(),
        };
        let fake = Arc::new(FakeDriver::on(catalog));
        let records = dir.path().join("records");
        let svc = VolumeService::open(
            &settings,
            &records,
            &dir.path().join("mnt"),
            fake.clone(),
            Arc::new(Namespace::default()),
            Arc::new(tokio::sync::Notify::new()),
        )
        .expect("open");
        Harness {
            _dir: dir,
            svc: Arc::new(svc),
            fake,
            records,
        }
    };
    (make(catalog), make(catalog))
}

#[tokio::test]
async fn shared_catalog_shows_volumes_of_other_hosts() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    a.svc.create("v1", &no_opts()).await.expect("create on A");
    // Get on B: not in memory, found in the catalog.
    assert!(b.svc.needs_lookup("v1"));
    b.svc.lookup("v1").await.expect("lookup");
    assert_eq!(
        b.svc.get("v1").expect("get on B").record.name.as_str(),
        "v1"
    );
    assert!(!b.svc.needs_lookup("v1"));
    // B learnt of it without writing a record: its record appears at mount.
    assert!(record_files(&b).is_empty());
    // List on B shows volumes created on A after B's start.
    a.svc
        .create("v2", &no_opts())
        .await
        .expect("create v2 on A");
    b.svc.refresh().await.expect("refresh");
    let names: Vec<String> = b
        .svc
        .list_views()
        .iter()
        .map(|v| v.record.name.to_string())
        .collect();
    assert_eq!(names, vec!["v1", "v2"]);
    // Create on B of a name A made is success without a second create.
    b.svc.create("v2", &no_opts()).await.expect("idempotent");
    assert!(!b
        .fake
        .state
        .lock()
        .expect("state")
        .calls
        .iter()
        .any(|c| c == "create v2"));
    // Mount on B of a volume B never saw: looked up, then mounted.
    a.svc
        .create("v3", &no_opts())
        .await
        .expect("create v3 on A");
    let p = b.svc.mount("v3", Some("m1")).await.expect("mount on B");
    assert!(p.ends_with("v3/data"), "{}", p.display());
    assert_eq!(record_files(&b), vec!["v3.json"]);
}

#[tokio::test]
async fn a_catalog_whose_version_stayed_is_not_listed_again() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    a.svc.create("v1", &no_opts()).await.expect("create on A");
    let listings = |b: &Harness| {
        b.fake
            .state
            .lock()
            .expect("state")
            .calls
            .iter()
            .filter(|c| c.as_str() == "catalog_list *")
            .count()
    };
    b.svc.refresh().await.expect("refresh");
    assert_eq!(listings(&b), 1);
    b.svc.refresh().await.expect("refresh");
    assert_eq!(listings(&b), 1, "nothing changed: no second listing");
    a.svc
        .create("v2", &no_opts())
        .await
        .expect("create v2 on A");
    b.svc.refresh().await.expect("refresh");
    assert_eq!(listings(&b), 2, "a create on A changes the version");
    assert!(b.svc.get("v2").is_ok(), "and B lists it");
    a.svc.remove("v1").await.expect("remove on A");
    b.svc.refresh().await.expect("refresh");
    assert!(b.svc.get("v1").is_err(), "a remove on A is seen too");
}

#[tokio::test]
async fn volumes_removed_elsewhere_disappear_unless_mounted_here() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    for v in ["gone", "kept"] {
        a.svc.create(v, &no_opts()).await.expect("create");
    }
    b.svc.refresh().await.expect("refresh");
    b.svc.mount("kept", Some("m1")).await.expect("mount on B");
    a.svc.remove("gone").await.expect("remove on A");
    // Remove on A of a volume mounted on B: the fake allows it, as a
    // shared filesystem would; B keeps serving its mount.
    a.svc.remove("kept").await.expect("remove kept on A");
    b.svc.refresh().await.expect("refresh");
    assert!(
        b.svc.get("gone").is_err(),
        "removed elsewhere: gone here too"
    );
    assert!(b.svc.get("kept").is_ok(), "still mounted here: kept");
    b.svc.unmount("kept", Some("m1")).await.expect("unmount");
    b.svc.refresh().await.expect("refresh");
    assert!(b.svc.get("kept").is_err(), "gone once unmounted");
    assert!(record_files(&b).is_empty(), "{:?}", record_files(&b));
}

#[tokio::test]
async fn preempt_policy_reaches_the_driver() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    a.svc.create("v", &no_opts()).await.expect("create");
    let mut p = policy();
    p.mount_preempt = true;
    b.svc.set_policy(p);
    b.svc.mount("v", None).await.expect("mount");
    assert!(b
        .fake
        .state
        .lock()
        .expect("state")
        .calls
        .iter()
        .any(|c| c == "preempt v"));
    assert!(!a
        .fake
        .state
        .lock()
        .expect("state")
        .calls
        .iter()
        .any(|c| c.starts_with("preempt")));
}

#[tokio::test]
async fn unreachable_shared_catalog_is_a_clear_error() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (_a, b) = shared_pair(&catalog);
    b.fake.state.lock().expect("state").fail = Some("catalog_get");
    let e = b.svc.lookup("v").await.expect_err("injected");
    assert!(e.to_string().contains("fake-catalog_get"), "{e}");
    b.fake.state.lock().expect("state").fail = Some("catalog_list");
    let e = b.svc.refresh().await.expect_err("injected");
    assert!(e.to_string().contains("fake-catalog_list"), "{e}");
}

#[tokio::test]
async fn snapshots_of_a_shared_catalog_are_seen_by_every_host() {
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    a.svc.create("v", &no_opts()).await.expect("create on A");
    a.svc
        .snapshot_create("v", "s1")
        .await
        .expect("snapshot on A");
    // B lists it, restores from it, refuses the same name.
    b.svc.refresh().await.expect("refresh");
    let names: Vec<String> = b
        .svc
        .snapshot_list(None)
        .expect("list")
        .iter()
        .map(|s| s.record.name.to_string())
        .collect();
    assert_eq!(names, vec!["s1"]);
    let e = b
        .svc
        .snapshot_create("v", "s1")
        .await
        .expect_err("taken on A");
    assert!(e.to_string().contains("already exists"), "{e}");
    let mut o = no_opts();
    o.insert("snapshotName".into(), "s1".into());
    b.svc.create("from-s1", &o).await.expect("restore on B");
    // A snapshot taken on A after B's last listing is found by a create.
    a.svc
        .snapshot_create("v", "s2")
        .await
        .expect("snapshot s2 on A");
    o.insert("snapshotName".into(), "s2".into());
    b.svc
        .create("from-s2", &o)
        .await
        .expect("restore s2 on B without a listing");
    // Removed on B: gone on A at its next listing.
    b.svc.snapshot_remove("s1").await.expect("remove on B");
    a.svc.refresh().await.expect("refresh A");
    assert!(a.svc.snapshot_get("s1").is_err(), "removed elsewhere");
    assert!(a.svc.snapshot_get("s2").is_ok());
}

#[tokio::test]
async fn a_volume_adopted_elsewhere_is_shown_adopted_here() {
    use crate::config::Adopt;
    use crate::state::Adoption;
    let catalog = crate::driver::fake::SharedCatalog::default();
    let (a, b) = shared_pair(&catalog);
    a.svc.create("rx", &no_opts()).await.expect("create");
    let mut rec = catalog.lock().expect("catalog")["rx"].clone();
    rec.set_adoption(Adoption::Pending(Adopt::Rexray));
    catalog
        .lock()
        .expect("catalog")
        .insert("rx".into(), rec.clone());
    b.svc.refresh().await.expect("refresh");
    let view = b.svc.get("rx").expect("listed");
    assert!(view.record.adoption_pending());
    let status = super::views::status_map(&view, "ceph");
    assert_eq!(status["adoption"], "pending", "{status:?}");
    assert_eq!(status["adoptedFrom"], "rexray", "{status:?}");
    // Another host's first mount adopted it: B follows without a mount.
    rec.set_adoption(Adoption::Done(Adopt::Rexray));
    catalog.lock().expect("catalog").insert("rx".into(), rec);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    b.svc.refresh().await.expect("refresh");
    assert_eq!(
        b.svc.get("rx").expect("listed").record.adoption(),
        Some(Adoption::Done(Adopt::Rexray))
    );
}
