//! Start-up from the state index (fake driver): the index is used when
//! valid, a crash after it still finds every volume, and Get answers from
//! one record before the state is loaded.

use super::tests::policy;
use super::*;
use crate::config::{DriverSettings, ServiceSettings};
use crate::driver::fake::FakeDriver;

struct Host {
    dir: tempfile::TempDir,
    settings: ServiceSettings,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = ServiceSettings {
            name: "berth".into(),
            driver: DriverSettings::Loop {
                image_dir: dir.path().join("images"),
                pools: BTreeMap::new(),
            },
            scope: crate::volume::Scope::Local,
            policy: policy(),
            limits: Default::default(),
        };
        Host { dir, settings }
    }

    /// A berthd's service, not loaded yet.
    fn service(&self) -> VolumeService {
        VolumeService::new(
            &self.settings,
            &self.dir.path().join("records").join("berth"),
            &self.dir.path().join("mnt"),
            Arc::new(FakeDriver::default()),
            Arc::new(Namespace::default()),
            Arc::new(tokio::sync::Notify::new()),
        )
        .expect("new")
    }

    fn started(&self) -> VolumeService {
        let s = self.service();
        s.load().expect("load");
        s
    }
}

fn listed(svc: &VolumeService) -> Vec<String> {
    svc.list_views()
        .iter()
        .map(|v| v.record.name.to_string())
        .collect()
}

#[tokio::test]
async fn a_clean_stop_makes_the_next_start_use_the_index() {
    let host = Host::new();
    let svc = host.started();
    assert_eq!(svc.loaded_from(), Some(LoadedFrom::Records), "no index yet");
    for n in ["a", "b", "c"] {
        svc.create(n, &BTreeMap::new()).await.expect("create");
    }
    svc.save_index();
    drop(svc);
    let svc = host.started();
    assert_eq!(svc.loaded_from(), Some(LoadedFrom::Index));
    assert_eq!(listed(&svc), vec!["a", "b", "c"]);
    assert_eq!(svc.status().record_formats.get(&1), Some(&3));
}

#[tokio::test]
async fn a_volume_created_after_the_index_is_found_after_a_crash() {
    let host = Host::new();
    let svc = host.started();
    svc.create("a", &BTreeMap::new()).await.expect("create");
    svc.save_index();
    // Later work, then a crash: no index written after it.
    svc.create("late", &BTreeMap::new()).await.expect("create");
    svc.remove("a").await.expect("remove");
    drop(svc);
    let svc = host.started();
    assert_eq!(svc.loaded_from(), Some(LoadedFrom::Records), "stale index");
    assert_eq!(listed(&svc), vec!["late"]);
}

#[tokio::test]
async fn a_damaged_index_is_ignored() {
    let host = Host::new();
    let svc = host.started();
    svc.create("a", &BTreeMap::new()).await.expect("create");
    svc.save_index();
    let path = svc.store.index_path();
    drop(svc);
    std::fs::write(&path, b"{\"version\": 1, \"dir\": ").expect("damage");
    let svc = host.started();
    assert_eq!(svc.loaded_from(), Some(LoadedFrom::Records));
    assert_eq!(listed(&svc), vec!["a"]);
}

#[tokio::test]
async fn get_answers_from_the_record_before_the_state_is_loaded() {
    let host = Host::new();
    let svc = host.started();
    svc.create("a", &BTreeMap::new()).await.expect("create");
    svc.mount("a", Some("m1")).await.expect("mount");
    drop(svc);
    let svc = host.service();
    assert!(!svc.is_loaded());
    assert!(svc.list_views().is_empty(), "nothing loaded");
    let v = svc
        .get_early("a")
        .await
        .expect("answered early")
        .expect("found");
    assert_eq!(v.record.name.as_str(), "a");
    // The fake driver mounts nothing in the kernel: shown unmounted, as
    // reconciliation will find it.
    assert!(v.mountpoint.is_none());
    let e = svc
        .get_early("nope")
        .await
        .expect("answered")
        .expect_err("absent");
    assert!(matches!(e, ServiceError::NotFound(_)), "{e}");
    svc.load().expect("load");
    assert!(svc.get_early("a").await.is_none(), "loaded: from memory");
    assert!(svc.get("a").expect("get").mountpoint.is_none());
}
