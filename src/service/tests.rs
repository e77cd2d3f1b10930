use super::*;
use crate::config::{CreateDefaults, DriverSettings, Policy, ServiceSettings};
use crate::driver::fake::FakeDriver;
use crate::volume::FsType;

struct Harness {
    _dir: tempfile::TempDir,
    svc: Arc<VolumeService>,
    fake: Arc<FakeDriver>,
    records: PathBuf,
}

fn policy() -> Policy {
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
        },
        scope: Scope::Local,
        policy: p,
    };
    let fake = Arc::new(FakeDriver::default());
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

fn record_files(h: &Harness) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&h.records)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
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
