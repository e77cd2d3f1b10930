//! A mounted volume another host took over: what Get, status, Unmount and
//! a new Mount do (the fake driver plays the other host).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::tests::policy;
use super::*;
use crate::config::{DriverSettings, ServiceSettings};
use crate::driver::fake::FakeDriver;
use crate::driver::TakeOver;

fn service() -> (tempfile::TempDir, Arc<VolumeService>, Arc<FakeDriver>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = ServiceSettings {
        name: "block".into(),
        driver: DriverSettings::Loop {
            image_dir: dir.path().join("images"),
            pools: BTreeMap::new(),
        },
        scope: Scope::Global,
        policy: policy(),
        limits: Default::default(),
    };
    let fake = Arc::new(FakeDriver::default());
    let svc = VolumeService::open(
        &settings,
        &dir.path().join("records"),
        &dir.path().join("mnt"),
        fake.clone(),
        Arc::new(Namespace::default()),
        Arc::new(tokio::sync::Notify::new()),
    )
    .expect("open");
    (dir, Arc::new(svc), fake)
}

async fn taken_over(svc: &VolumeService, fake: &FakeDriver) {
    svc.create("v", &BTreeMap::new()).await.expect("create");
    svc.mount("v", Some("a")).await.expect("mount");
    fake.state
        .lock()
        .expect("fake")
        .taken
        .insert("v".into(), TakeOver::by_host("host-b"));
    svc.sample_round(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn get_and_status_show_the_take_over_and_unmount_clears_it() {
    let (_dir, svc, fake) = service();
    taken_over(&svc, &fake).await;
    let view = svc.get("v").expect("get");
    let st = status_map(&view, "block");
    assert_eq!(st["takenOver"], true, "{st:?}");
    assert_eq!(st["takenOverBy"], "host-b", "{st:?}");
    assert!(st["takenOverAt"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(st["mounted"], false, "{st:?}");
    assert_eq!(st["mountCount"], 1, "{st:?}");
    let status = svc.status();
    assert_eq!((status.mounted, status.mount_users), (0, 0));
    assert_eq!(status.taken_over.len(), 1, "{:?}", status.taken_over);
    assert!(status.taken_over[0].contains("volume v: taken over by host host-b"));

    svc.unmount("v", Some("a")).await.expect("unmount succeeds");
    let st = status_map(&svc.get("v").expect("get"), "block");
    assert_eq!(st["mountCount"], 0, "{st:?}");
    assert!(st.get("takenOver").is_none(), "{st:?}");
    assert!(svc.status().taken_over.is_empty());
}

#[tokio::test]
async fn a_new_mount_is_a_new_take_over() {
    let (_dir, svc, fake) = service();
    taken_over(&svc, &fake).await;
    fake.state.lock().expect("fake").calls.clear();
    svc.mount("v", Some("b")).await.expect("mount again");
    let calls = fake.state.lock().expect("fake").calls.clone();
    assert_eq!(calls, ["unmount v", "mount v"], "the dead mount goes first");
    let st = status_map(&svc.get("v").expect("get"), "block");
    assert!(st.get("takenOver").is_none(), "{st:?}");
    assert_eq!(st["mounted"], true, "{st:?}");
    assert_eq!(st["mountCount"], 2, "{st:?}");
}
