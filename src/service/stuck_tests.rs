//! A hung backend: deadlines, clear errors, reads that never wait, and
//! reconciliation when the hung step returns (fake driver).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::{DriverSettings, Limits, ServiceSettings};
use crate::driver::fake::FakeDriver;

struct H {
    _dir: tempfile::TempDir,
    svc: Arc<VolumeService>,
    fake: Arc<FakeDriver>,
}

fn harness() -> H {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = ServiceSettings {
        name: "hung".into(),
        driver: DriverSettings::Loop {
            image_dir: dir.path().join("images"),
            pools: BTreeMap::new(),
        },
        scope: Scope::Local,
        policy: super::tests::policy(),
        limits: Limits {
            workers: 4,
            create_timeout: Duration::from_millis(1500),
            mount_timeout: Duration::from_millis(1500),
            timeout: Duration::from_millis(1500),
            sample_every: Duration::from_millis(200),
        },
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
    let svc = Arc::new(svc);
    tokio::spawn(svc.clone().run_background());
    H {
        _dir: dir,
        svc,
        fake,
    }
}

async fn settle(h: &H, what: impl Fn(&VolumeService) -> bool) {
    let t = Instant::now();
    while !what(&h.svc) {
        assert!(t.elapsed() < Duration::from_secs(10), "did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_mount_answers_within_its_deadline_and_rolls_back_when_it_returns() {
    let h = harness();
    h.svc.create("v1", &BTreeMap::new()).await.expect("create");
    h.fake.hold("mount");
    let t = Instant::now();
    let err = h.svc.mount("v1", Some("a")).await.expect_err("stuck");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let msg = err.to_string();
    assert!(
        msg.contains("volume v1") && msg.contains("mount is stuck"),
        "{msg}"
    );
    assert!(msg.contains("fake mount of v1"), "names the step: {msg}");
    // Reads answer from memory meanwhile; status shows the stuck work.
    let t = Instant::now();
    assert_eq!(h.svc.get("v1").expect("get").record.mount_count(), 0);
    assert_eq!(h.svc.list_views().len(), 1);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "reads never wait for the held step"
    );
    let st = h.svc.status();
    assert_eq!(st.stuck, 1);
    assert!(st.busy[0].starts_with("STUCK mount of v1"), "{:?}", st.busy);
    // The next request on the volume waits at most its deadline.
    let err = h.svc.unmount("v1", Some("a")).await.expect_err("busy");
    assert!(err.to_string().contains("busy"), "{err}");
    // A request on another volume is not held up.
    h.svc
        .create("v2", &BTreeMap::new())
        .await
        .expect("create v2");
    h.fake.release();
    settle(&h, |s| s.status().stuck == 0).await;
    // The late mount was rolled back: not counted, not mounted.
    settle(&h, |s| !s.any_mounted()).await;
    let v = h.svc.get("v1").expect("get");
    assert_eq!(v.record.mount_count(), 0);
    assert!(v.record.mounted.is_none());
    assert!(!h.fake.state.lock().expect("s").mounted.contains("v1"));
    // And the volume works again without a restart.
    h.svc.mount("v1", Some("b")).await.expect("mount");
    h.svc.unmount("v1", Some("b")).await.expect("unmount");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_create_leaves_nothing_behind_when_it_returns() {
    let h = harness();
    h.fake.hold("create");
    let err = h
        .svc
        .create("c1", &BTreeMap::new())
        .await
        .expect_err("stuck");
    assert!(err.to_string().contains("create is stuck"), "{err}");
    assert!(h.svc.get("c1").is_err());
    h.fake.release();
    settle(&h, |s| s.status().stuck == 0).await;
    let records = h.svc.store.clone();
    settle(&h, move |_| {
        matches!(records.load(&VolumeName::parse("c1").expect("n")), Ok(None))
    })
    .await;
    assert!(h.svc.get("c1").is_err());
    assert!(!h.fake.state.lock().expect("s").created.contains("c1"));
    h.svc
        .create("c1", &BTreeMap::new())
        .await
        .expect("create again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_remove_finishes_in_the_background() {
    let h = harness();
    h.svc.create("r1", &BTreeMap::new()).await.expect("create");
    h.fake.hold("remove");
    let err = h.svc.remove("r1").await.expect_err("stuck");
    assert!(err.to_string().contains("remove is stuck"), "{err}");
    h.fake.release();
    settle(&h, |s| s.get("r1").is_err()).await;
    assert!(!h.fake.state.lock().expect("s").created.contains("r1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_work_takes_at_most_this_services_workers() {
    let h = harness();
    for i in 0..4 {
        h.svc
            .create(&format!("w{i}"), &BTreeMap::new())
            .await
            .expect("create");
    }
    h.fake.hold("mount");
    let mut calls = Vec::new();
    for i in 0..4 {
        let s = h.svc.clone();
        calls.push(tokio::spawn(async move {
            s.mount(&format!("w{i}"), None).await
        }));
    }
    for c in calls {
        assert!(c.await.expect("join").is_err());
    }
    // Every worker is held: a fifth piece of work is refused clearly.
    let err = h
        .svc
        .create("w9", &BTreeMap::new())
        .await
        .expect_err("no worker");
    assert!(err.to_string().contains("storage workers"), "{err}");
    h.fake.release();
    settle(&h, |s| s.status().stuck == 0).await;
    h.svc
        .create("w9", &BTreeMap::new())
        .await
        .expect("create after release");
}

impl VolumeService {
    fn any_mounted(&self) -> bool {
        read(&self.catalog)
            .values()
            .any(|e| e.rec.mounted.is_some())
    }
}
