//! The Ceph catalog index (src/driver/ceph/index.rs) on two simulated
//! hosts against a real cluster: host A creates, host B lists and looks
//! up; the index is repaired when it disagrees with the volumes; an entry
//! of a newer format is refused by name.
//!
//! `BERTH_CATALOG_BENCH=100,1000,10000` turns it into the benchmark of
//! docs/ceph.md (scripts/bench-ceph-catalog.sh): at each N it fills the
//! rbd pool up to N volumes in bulk, the way the rbd driver's create does
//! minus the filesystem (image, record in its metadata, index entry, with
//! the driver's own code), and measures List on host B (the reuse window
//! expired before each call), a Get of one name, the full scan List made
//! before the index, a create through berthd on host A, and the delay
//! before B sees a create and a remove.
#![cfg(feature = "ceph")]

mod common;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::config::CephSettings;
use berth::driver::ceph::index::{Index, NAMESPACE};
use berth::driver::ceph::scan::{RbdScan, Scan};
use berth::driver::ceph::{encode, Backend, META_KEY};
use berth::state::{Phase, VolumeRecord, RECORD_VERSION};
use berth::sys::ceph::OmapObject;
use berth::volume::{FsType, VolumeName};
use common::ceph::{CephCluster, HOST_A, HOST_B};
use common::{percentile, Api, Daemon};
use serde_json::json;

/// The catalog's reuse window (CATALOG_TTL) and a margin.
const REUSE: Duration = Duration::from_millis(1100);

fn host_config(c: &CephCluster, host: &str) -> String {
    let ceph = |extra: &str| {
        format!(
            "conf = \"{}\"\nkeyring = \"{}\"\nhost = \"{host}\"\ntimeout = \"30s\"\n{extra}",
            c.conf.display(),
            c.keyring.display()
        )
    };
    format!(
        "[services.shared]\ndriver = \"cephfs\"\n[services.shared.ceph]\n{}\n\
         [services.block]\ndriver = \"rbd\"\n[services.block.ceph]\n{}\n",
        ceph(""),
        ceph("pool = \"rbd\"")
    )
}

/// Runs `f` on a thread inside host `host`'s network namespace (threads
/// librados starts from there inherit it).
fn in_host<T: Send>(host: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(format!("/run/netns/{host}")).expect("netns");
            // SAFETY: a valid open namespace file; only this thread moves.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns {host}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in host")
    })
}

/// The rbd driver's pieces, in this process (run inside host A).
struct Driverish {
    b: Arc<Backend>,
    scan: Arc<RbdScan>,
    index: Arc<Index>,
}

impl Driverish {
    fn new(c: &CephCluster) -> Self {
        let b = Arc::new(Backend::new(
            "block",
            &CephSettings {
                conf: c.conf.clone(),
                keyring: Some(c.keyring.clone()),
                client: "admin".into(),
                host: "filler".into(),
                timeout: Duration::from_secs(60),
            },
        ));
        let scan = Arc::new(RbdScan {
            b: b.clone(),
            pool: "rbd".into(),
        });
        let index = Index::new(b.clone(), scan.clone());
        Driverish { b, scan, index }
    }

    fn omap(&self) -> OmapObject {
        let c = self.b.cluster("test").expect("connect");
        OmapObject::open(&c, "rbd", NAMESPACE, "catalog").expect("index object")
    }

    /// Image + metadata (+ index entry when `indexed`), as create does.
    fn make(&self, name: &str, indexed: bool) {
        let rec = record(name);
        let pool = self
            .b
            .cluster(name)
            .expect("connect")
            .rbd("rbd")
            .expect("pool");
        pool.create(name, rec.size).expect("rbd create");
        pool.meta_set(name, META_KEY, &encode(&rec))
            .expect("meta set");
        if indexed {
            self.index.put_volume(&rec).expect("index");
        }
    }

    /// Fills up to `names` with `threads` workers.
    fn fill(&self, names: &[String], threads: usize) {
        let chunk = names.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|s| {
            for part in names.chunks(chunk) {
                s.spawn(move || part.iter().for_each(|n| self.make(n, true)));
            }
        });
    }
}

fn record(name: &str) -> VolumeRecord {
    VolumeRecord {
        version: RECORD_VERSION,
        name: VolumeName::parse(name).expect("name"),
        id: format!("{:032x}", common::fnv64(name.as_bytes())),
        phase: Phase::Ready,
        created_at: "2026-12-03T09:00:00Z".into(),
        size: 64 << 20,
        fs_type: FsType::Ext4,
        volume_type: "default".into(),
        iops: 0,
        availability_zone: String::new(),
        uid: 0,
        gid: 0,
        mode: 0o755,
        owner_pending: false,
        origin: String::new(),
        driver_data: BTreeMap::from([("pool".into(), "rbd".into())]),
        mounts: BTreeMap::new(),
        mounted: None,
    }
}

/// Polls `cond` every 50 ms for up to `limit`; how long it took.
fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed(), v)
}

#[test]
fn root_ceph_catalog_index() {
    let Some(mut c) = CephCluster::start_or_skip("root_ceph_catalog_index") else {
        return;
    };
    let a = Daemon::builder()
        .netns(HOST_A)
        .service_toml(&host_config(&c, "host-a"))
        .envs(c.env())
        .start();
    let b = Daemon::builder()
        .netns(HOST_B)
        .service_toml(&host_config(&c, "host-b"))
        .envs(c.env())
        .start();
    c.add_mount_root(&a.mount_dir());
    c.add_mount_root(&b.mount_dir());
    let (ba, bb) = (a.client("block"), b.client("block"));
    let (sa, sb) = (a.client("shared"), b.client("shared"));

    // Create on A, seen by B; remove on A, gone on B (both drivers).
    for (ca, cb, size) in [(&ba, &bb, "64M"), (&sa, &sb, "64M")] {
        ca.create("cat1", &[("size", size)]);
        until(Duration::from_secs(10), || {
            cb.list_names().contains(&"cat1".into())
        })
        .expect("B lists a volume A created");
        assert_eq!(cb.get("cat1")["Name"], "cat1");
        ca.remove("cat1");
        until(Duration::from_secs(10), || {
            !cb.list_names().contains(&"cat1".into())
        })
        .expect("B drops a volume A removed");
    }

    in_host(HOST_A, || {
        let d = Driverish::new(&c);
        newer_format_is_refused(&d, &bb);
        missing_key_is_found_and_added(&d, &bb);
        index_is_repaired(&d, &bb);
        if let Ok(levels) = std::env::var("BERTH_CATALOG_BENCH") {
            let levels: Vec<usize> = levels
                .split(',')
                .filter_map(|s| s.trim().parse().ok())
                .collect();
            bench(&d, &ba, &bb, &levels);
        }
    });

    drop((ba, bb, sa, sb));
    drop(a);
    drop(b);
    c.stop();
}

/// An index entry of a newer format: Get names object, key and version;
/// List leaves it out; the volume's own metadata with a newer format is
/// refused the same way.
fn newer_format_is_refused(d: &Driverish, bb: &Api) {
    let entry =
        json!({"format": 99, "volume": serde_json::to_value(record("future1")).expect("json")});
    d.omap()
        .set(&[("v/future1", entry.to_string().as_bytes())])
        .expect("write entry");
    let err = bb.err("VolumeDriver.Get", json!({"Name": "future1"}));
    assert!(
        err.contains("format 99") && err.contains("rbd/berth/catalog") && err.contains("v/future1"),
        "{err}"
    );
    std::thread::sleep(REUSE);
    assert!(!bb.list_names().contains(&"future1".to_string()));
    d.omap().remove(&["v/future1"]).expect("clean up");
    println!("newer format refused: {err}");
}

/// A volume with metadata but no index key (made by an older berthd):
/// a Get on B finds it, and the key is added.
fn missing_key_is_found_and_added(d: &Driverish, bb: &Api) {
    d.make("legacy1", false);
    assert!(d.omap().get("v/legacy1").expect("read").is_none());
    assert_eq!(bb.get("legacy1")["Name"], "legacy1");
    assert!(
        d.omap().get("v/legacy1").expect("read").is_some(),
        "the Get added the missing key"
    );
}

/// A stale key (its volume gone) and a missing one, with the index marked
/// as never built: List answers from the scan meanwhile, and the repair
/// thread fixes both keys and stamps the index.
fn index_is_repaired(d: &Driverish, bb: &Api) {
    let ghost =
        serde_json::to_string(&json!({"format": 1, "volume": record("ghost1")})).expect("json");
    d.make("legacy2", false);
    let o = d.omap();
    o.set(&[("v/ghost1", ghost.as_bytes())]).expect("ghost");
    // A repair asked for earlier may still be under way and stamp the
    // index again; every List that finds it unbuilt asks for another.
    let fixed = || {
        o.get("repaired").expect("read").is_some()
            && o.get("v/ghost1").expect("read").is_none()
            && o.get("v/legacy2").expect("read").is_some()
    };
    let took = until(Duration::from_secs(90), || {
        if fixed() {
            return true;
        }
        if o.get("repaired").expect("read").is_some() {
            o.remove(&["repaired"]).expect("unbuild");
        }
        std::thread::sleep(REUSE);
        bb.list_names();
        false
    })
    .expect("the repair fixed the index");
    std::thread::sleep(REUSE);
    let names = bb.list_names();
    assert!(names.contains(&"legacy2".to_string()) && !names.contains(&"ghost1".to_string()));
    println!("index repaired {took:?} after the List that found it unbuilt");
}

struct Figures {
    n: usize,
    list_b: Duration,
    list_b_first: Duration,
    get: Duration,
    scan: Option<Duration>,
    create: Duration,
    seen_create: Duration,
    seen_remove: Duration,
}

fn bench(d: &Driverish, ba: &Api, bb: &Api, levels: &[usize]) {
    let mut have = d.index.volumes().expect("index").len();
    let mut out = Vec::new();
    for &n in levels {
        let names: Vec<String> = (have..n).map(|i| format!("bulk{i:05}")).collect();
        let (t, ()) = timed(|| d.fill(&names, 8));
        println!("filled {} volumes in {t:?}", names.len());
        have = have.max(n);
        // The first List on B learns every volume; then the steady cost.
        std::thread::sleep(REUSE);
        let (list_b_first, first) = timed(|| bb.list_names());
        assert!(first.len() >= n, "B lists {} of {n}", first.len());
        // Timed until the answer is received: berthd's work and the
        // transfer, not this debug build's decoding of it (dockerd decodes
        // it in Go); the answer is checked after the clock stops.
        let mut lists: Vec<Duration> = (0..5)
            .map(|_| {
                std::thread::sleep(REUSE);
                let (t, (status, body)) = timed(|| bb.raw_bytes("VolumeDriver.List", "{}"));
                assert_eq!(status, 200);
                let v: serde_json::Value = serde_json::from_slice(&body).expect("List JSON");
                let listed = v["Volumes"].as_array().map_or(0, Vec::len);
                assert!(listed >= n, "B lists {listed} of {n}");
                t
            })
            .collect();
        let mut gets: Vec<Duration> = (0..20)
            .map(|i| timed(|| d.index.volume(&format!("bulk{:05}", i * n / 20))).0)
            .collect();
        let mut reads: Vec<Duration> = (0..5)
            .map(|_| timed(|| d.index.volumes().expect("index")).0)
            .collect();
        println!(
            "N={n}: the index read alone (in this process, parsed): {:?}",
            percentile(&mut reads, 0.5)
        );
        let scan = (n <= 1000).then(|| timed(|| d.scan.volumes().expect("scan")).0);
        let mut creates = Vec::new();
        let mut seen_c = Vec::new();
        let mut seen_r = Vec::new();
        for i in 0..3 {
            let name = format!("probe{n}x{i}");
            let (t, ()) = timed(|| ba.create(&name, &[("size", "64M")]));
            creates.push(t);
            seen_c.push(
                until(Duration::from_secs(30), || bb.list_names().contains(&name))
                    .expect("B sees the create"),
            );
            ba.remove(&name);
            seen_r.push(
                until(Duration::from_secs(30), || !bb.list_names().contains(&name))
                    .expect("B sees the remove"),
            );
        }
        let f = Figures {
            n,
            list_b: percentile(&mut lists, 0.5),
            list_b_first,
            get: percentile(&mut gets, 0.5),
            scan,
            create: percentile(&mut creates, 0.5),
            seen_create: percentile(&mut seen_c, 0.5),
            seen_remove: percentile(&mut seen_r, 0.5),
        };
        println!(
            "N={}: List on B {:?} (first {:?}); Get {:?}; full scan {:?}; create on A {:?}; B sees create {:?}, remove {:?}",
            f.n, f.list_b, f.list_b_first, f.get, f.scan, f.create, f.seen_create, f.seen_remove
        );
        out.push(f);
    }
    println!("| N | List on B (median of 5) | first List on B | Get (index) | full scan (before) | create on A | B sees create | B sees remove |");
    for f in &out {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.2} ms | {} | {:.0} ms | {:.2} s | {:.2} s |",
            f.n,
            f.list_b.as_secs_f64() * 1e3,
            f.list_b_first.as_secs_f64() * 1e3,
            f.get.as_secs_f64() * 1e3,
            f.scan
                .map(|s| format!("{:.0} ms", s.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into()),
            f.create.as_secs_f64() * 1e3,
            f.seen_create.as_secs_f64(),
            f.seen_remove.as_secs_f64()
        );
    }
}
