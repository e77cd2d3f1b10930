//! The Ceph OS boundary (`berth::sys::ceph`) against a real cluster.
//!
//! The cluster is named by `BERTH_TEST_CEPH_CONF` (and
//! `BERTH_TEST_CEPH_KEYRING`, `BERTH_TEST_CEPH_CLIENT` = `admin`,
//! `BERTH_TEST_CEPH_POOL` = `rbd`, `BERTH_TEST_CEPH_FS` = `cephfs`);
//! without it every test that needs one prints `SKIP: …` and passes.
//! Run as root (FUSE mounts, loop devices):
//!
//! ```text
//! BERTH_TEST_CEPH_CONF=/path/ceph.conf cargo test --features ceph --test ceph_sys -- --nocapture
//! ```
#![cfg(feature = "ceph")]

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth::sys::ceph::{
    ceph_fuse_mount, fuse_unmount, rbd_fuse_mount, CephConfig, CephFs, Cluster, RbdPool,
};
use berth::sys::{cmd, loopdev, mounts};

const MIB: u64 = 1 << 20;

fn test_cfg() -> Option<CephConfig> {
    let conf = std::env::var_os("BERTH_TEST_CEPH_CONF")?;
    Some(CephConfig {
        conf: conf.into(),
        keyring: std::env::var_os("BERTH_TEST_CEPH_KEYRING").map(PathBuf::from),
        client: std::env::var("BERTH_TEST_CEPH_CLIENT").unwrap_or_else(|_| "admin".into()),
        timeout: Duration::from_secs(20),
    })
}

fn pool_name() -> String {
    std::env::var("BERTH_TEST_CEPH_POOL").unwrap_or_else(|_| "rbd".into())
}

fn fs_name() -> String {
    std::env::var("BERTH_TEST_CEPH_FS").unwrap_or_else(|_| "cephfs".into())
}

macro_rules! cluster_cfg {
    () => {
        match test_cfg() {
            Some(c) => c,
            None => {
                eprintln!("SKIP: BERTH_TEST_CEPH_CONF is not set, no Ceph cluster to test against (tests/ceph/sys-tests.sh starts one and runs these tests)");
                return;
            }
        }
    };
}

/// A name no other test (or earlier run) uses.
fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "bt-{what}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn errno(e: &berth::sys::ceph::CephError) -> i32 {
    e.errno().unwrap_or(-1)
}

/// PIDs of FUSE helpers whose command line names `target`.
fn helper_pids(target: &Path) -> Vec<i32> {
    let want = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let want = want.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .expect("proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let args: Vec<String> = c
                        .split(|&b| b == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect();
                    args.first().is_some_and(|a| a.ends_with("-fuse")) && args.contains(&want)
                })
                .unwrap_or(false)
        })
        .collect()
}

fn rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn wait_loop_released(file: &Path) {
    let start = Instant::now();
    while !loopdev::find_by_backing_file(file).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "loop device still holds {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes an image even when a snapshot/clone test failed halfway.
fn cleanup_image(pool: &RbdPool, image: &str) {
    if let Ok(snaps) = pool.snap_list(image) {
        for s in snaps {
            if s.protected {
                for c in pool.children(image, &s.name).unwrap_or_default() {
                    let _ = pool.remove(&c.image);
                }
                let _ = pool.snap_unprotect(image, &s.name);
            }
            let _ = pool.snap_remove(image, &s.name);
        }
    }
    let _ = pool.remove(image);
}

#[test]
fn connect_to_a_silent_address_fails_within_the_timeout() {
    // A "monitor" that accepts TCP connections and never says a word: the
    // worst case, where nothing but the timeout ends the wait.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("ceph.conf");
    fs::write(
        &conf,
        format!(
            "[global]\nmon_host = v2:127.0.0.1:{port}\nauth_client_required = none\n\
             log_file = {}/client.log\nadmin_socket = \n",
            dir.path().display()
        ),
    )
    .expect("conf");
    let cfg = CephConfig {
        conf,
        keyring: None,
        client: "admin".into(),
        timeout: Duration::from_secs(2),
    };
    let start = Instant::now();
    let err = Cluster::connect(&cfg).expect_err("nobody answers");
    let took = start.elapsed();
    eprintln!("connect to a silent monitor: {err} after {took:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(err.to_string().contains("ceph.conf"), "{err}");
    assert_eq!(errno(&err), libc::ETIMEDOUT, "{err}");
    drop(listener);
}

#[test]
fn connect_with_a_missing_conf_names_the_file() {
    let cfg = CephConfig {
        conf: "/nonexistent/berth/ceph.conf".into(),
        keyring: None,
        client: "admin".into(),
        timeout: Duration::from_secs(2),
    };
    let err = Cluster::connect(&cfg).expect_err("no conf");
    assert!(
        err.to_string().contains("/nonexistent/berth/ceph.conf"),
        "{err}"
    );
}

#[test]
fn root_cluster_basics() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let addr = c.instance_addr().expect("addr");
    assert!(addr.contains(":0/"), "{addr}");
    assert!(c.client_name().starts_with("client."));
    assert!(c.pool_exists(&pool_name()).expect("lookup"));
    assert!(!c.pool_exists("berth-no-such-pool").expect("lookup"));
    let out = c
        .mon_command(&serde_json::json!({"prefix": "osd pool ls"}))
        .expect("pool ls");
    let pools: Vec<String> = serde_json::from_slice(&out).expect("json");
    assert!(pools.contains(&pool_name()), "{pools:?}");
    let err = c
        .mon_command(&serde_json::json!({"prefix": "osd pool get", "pool": "berth-no-such-pool", "var": "size"}))
        .expect_err("no pool");
    assert_eq!(errno(&err), libc::ENOENT, "{err}");
    assert!(err.to_string().contains("osd pool get"), "{err}");
    assert!(err.to_string().contains("berth-no-such-pool"), "{err}");
    let out = c
        .mgr_command(&serde_json::json!({"prefix": "fs volume ls"}))
        .expect("fs volume ls");
    assert!(String::from_utf8_lossy(&out).contains(&fs_name()));
    let err = c.rbd("berth-no-such-pool").expect_err("no pool");
    assert_eq!(errno(&err), libc::ENOENT, "{err}");
}

#[test]
fn root_rbd_images_metadata_snapshots_clones() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let pool = c.rbd(&pool_name()).expect("pool");
    let img = unique("img");
    let clone = format!("{img}-clone");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.create(&img, 64 * MIB).expect("create");
        assert!(pool.list().expect("list").contains(&img));
        let err = pool.create(&img, MIB).expect_err("exists");
        assert_eq!(errno(&err), libc::EEXIST);
        assert_eq!(
            err.to_string(),
            format!("rbd create {}/{img}: File exists (errno 17)", pool_name())
        );
        assert_eq!(pool.size(&img).expect("size"), 64 * MIB);

        // metadata
        assert_eq!(pool.meta_get(&img, "berth.owner").expect("get"), None);
        pool.meta_set(&img, "berth.owner", "host-a").expect("set");
        pool.meta_set(&img, "berth.fstype", "ext4").expect("set");
        let long = "x".repeat(5000);
        pool.meta_set(&img, "berth.long", &long).expect("set long");
        assert_eq!(
            pool.meta_get(&img, "berth.owner").expect("get").as_deref(),
            Some("host-a")
        );
        assert_eq!(
            pool.meta_get(&img, "berth.long").expect("get"),
            Some(long.clone())
        );
        for i in 0..70 {
            pool.meta_set(&img, &format!("berth.k{i:03}"), &i.to_string())
                .expect("set many");
        }
        let all = pool.meta_list(&img).expect("list");
        assert_eq!(all.len(), 73, "{:?}", all.keys().collect::<Vec<_>>());
        assert_eq!(all.get("berth.k069").map(String::as_str), Some("69"));
        assert_eq!(all.get("berth.long"), Some(&long));
        pool.meta_remove(&img, "berth.owner").expect("remove");
        pool.meta_remove(&img, "berth.owner").expect("remove twice");
        assert_eq!(pool.meta_get(&img, "berth.owner").expect("get"), None);

        // resize: grow only
        pool.resize(&img, 128 * MIB).expect("grow");
        assert_eq!(pool.size(&img).expect("size"), 128 * MIB);
        let err = pool.resize(&img, 32 * MIB).expect_err("shrink");
        assert_eq!(errno(&err), libc::EINVAL, "{err}");

        // snapshots and clones
        pool.snap_create(&img, "s1").expect("snap");
        let snaps = pool.snap_list(&img).expect("snaps");
        assert_eq!(snaps.len(), 1);
        assert_eq!(snaps[0].name, "s1");
        assert_eq!(snaps[0].size, 128 * MIB);
        assert!(!snaps[0].protected);
        pool.snap_protect(&img, "s1").expect("protect");
        assert!(pool.snap_list(&img).expect("snaps")[0].protected);
        let err = pool.snap_remove(&img, "s1").expect_err("protected");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");
        assert!(err.to_string().contains(&format!("{img}@s1")), "{err}");
        pool.clone_image(&img, "s1", &clone).expect("clone");
        assert_eq!(pool.size(&clone).expect("clone size"), 128 * MIB);
        let children = pool.children(&img, "s1").expect("children");
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].image, clone);
        assert_eq!(children[0].pool, pool_name());
        let err = pool.snap_unprotect(&img, "s1").expect_err("has a child");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");
        pool.flatten(&clone).expect("flatten");
        assert!(pool.children(&img, "s1").expect("children").is_empty());
        pool.snap_unprotect(&img, "s1").expect("unprotect");
        let err = pool.remove(&img).expect_err("has a snapshot");
        assert_eq!(errno(&err), libc::ENOTEMPTY, "{err}");
        pool.snap_remove(&img, "s1").expect("snap rm");
        assert!(pool.snap_list(&img).expect("snaps").is_empty());

        pool.remove(&clone).expect("remove clone");
        pool.remove(&img).expect("remove");
        assert!(!pool.list().expect("list").contains(&img));
        let err = pool.remove(&img).expect_err("gone");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        let err = pool.size(&img).expect_err("gone");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        assert!(err.to_string().starts_with("rbd size "), "{err}");
    }));
    if result.is_err() {
        cleanup_image(&pool, &clone);
        cleanup_image(&pool, &img);
    }
    result.expect("test body");
}

#[test]
fn root_rbd_locks_between_two_clients() {
    let cfg = cluster_cfg!();
    let a = Cluster::connect(&cfg).expect("connect a");
    let b = Cluster::connect(&cfg).expect("connect b");
    assert_ne!(a.instance_id(), b.instance_id());
    let pa = a.rbd(&pool_name()).expect("pool a");
    let pb = b.rbd(&pool_name()).expect("pool b");
    let img = unique("lock");
    pa.create(&img, 16 * MIB).expect("create");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(pa.lockers(&img).expect("lockers").is_empty());
        pa.lock_exclusive(&img, "host-a").expect("lock a");
        let err = pa.lock_exclusive(&img, "host-a").expect_err("again");
        assert_eq!(errno(&err), libc::EEXIST, "{err}");
        let err = pb.lock_exclusive(&img, "host-b").expect_err("b");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");
        assert!(err.to_string().contains(&img), "{err}");
        let lockers = pb.lockers(&img).expect("lockers");
        assert_eq!(lockers.len(), 1, "{lockers:?}");
        assert_eq!(lockers[0].client, a.client_name());
        assert_eq!(lockers[0].cookie, "host-a");
        assert_eq!(lockers[0].address, a.instance_addr().expect("addr"));
        // B cannot release A's lock by cookie, it must break it.
        let err = pb.unlock(&img, "host-a").expect_err("not b's");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        pb.break_lock(&img, &lockers[0].client, &lockers[0].cookie)
            .expect("break");
        assert!(pb.lockers(&img).expect("lockers").is_empty());
        // Breaking did not blocklist A (we turned that off): A still works.
        pa.meta_set(&img, "after-break", "a")
            .expect("a still writes");
        pb.lock_exclusive(&img, "host-b").expect("lock b");
        let err = pa.unlock(&img, "host-a").expect_err("a lost it");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        pb.unlock(&img, "host-b").expect("unlock b");
        assert!(pa.lockers(&img).expect("lockers").is_empty());
    }));
    let _ = pa.remove(&img);
    result.expect("test body");
}

#[test]
fn root_rbd_fuse_shows_a_watcher_and_blocklisting_fences_it() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let pool = c.rbd(&pool_name()).expect("pool");
    let img = unique("fence");
    pool.create(&img, 64 * MIB).expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let m1 = dir.path().join("m1");
    let m2 = dir.path().join("m2");
    fs::create_dir_all(&m1).expect("mkdir");
    fs::create_dir_all(&m2).expect("mkdir");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(pool.watchers(&img).expect("watchers").is_empty());
        let file = rbd_fuse_mount(&cfg, &pool_name(), &img, &m1).expect("rbd-fuse");
        assert_eq!(file, fs::canonicalize(&m1).expect("canon").join(&img));
        assert_eq!(fs::metadata(&file).expect("stat").len(), 64 * MIB);
        let watchers = pool.watchers(&img).expect("watchers");
        assert_eq!(watchers.len(), 1, "{watchers:?}");
        let w = watchers[0].clone();
        assert_ne!(w.addr, c.instance_addr().expect("addr"));
        eprintln!("rbd-fuse watcher: {w:?}");
        let err = pool.remove(&img).expect_err("in use");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");
        let err = rbd_fuse_mount(&cfg, &pool_name(), &img, &m1).expect_err("mounted");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");

        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .expect("open");
        f.write_all_at(b"before-fence", 0).expect("write");
        f.sync_all().expect("fsync");

        // Fence: blocklist, then the epoch barrier (every placement group
        // of the pool has the map that carries the entry).
        let t = Instant::now();
        let epoch = pool
            .fence(&w.addr, Duration::from_secs(3600))
            .expect("fence");
        eprintln!("fence took {:?} (osdmap epoch {epoch})", t.elapsed());
        let pgs = c.pool_pgs(&pool_name()).expect("pgs");
        assert!(!pgs.is_empty());
        for pg in pgs {
            let have = c.pg_epoch(&pg).expect("pg query");
            assert!(have >= epoch, "pg {pg} has epoch {have} < {epoch}");
        }

        // What Ceph guarantees from here on: nothing the fenced client
        // sends lands. Whether its write(2) fails at once, fails later or
        // hangs (librbd retries) is a matter of timing, so the test does
        // not look at it: it gives the write time to land, kills the
        // fenced helper (as the fenced host's berthd does), and reads the
        // block back through a fresh, unfenced client.
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let t = Instant::now();
            let r = f
                .write_all_at(b"FENCED-WRITE", MIB)
                .and_then(|_| f.sync_all());
            let _ = tx.send((r, t.elapsed()));
        });
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok((r, took)) => eprintln!("fenced write+fsync returned {r:?} after {took:?}"),
            Err(_) => eprintln!("fenced write+fsync still blocked after 2 s"),
        }
        let ws = pool.watchers(&img).expect("watchers");
        eprintln!("watchers 2 s after blocklisting: {ws:?}");
        for pid in helper_pids(&m1) {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .expect("kill");
        }
        if let Ok((r, took)) = rx.recv_timeout(Duration::from_secs(10)) {
            eprintln!("fenced write+fsync after its rbd-fuse was killed: {r:?} ({took:?})");
        }
        let _ = writer.join();
        let t = Instant::now();
        fuse_unmount(&m1, Duration::from_secs(20)).expect("unmount fenced");
        eprintln!(
            "unmount of the killed, fenced rbd-fuse took {:?}",
            t.elapsed()
        );

        let file2 = rbd_fuse_mount(&cfg, &pool_name(), &img, &m2).expect("fresh rbd-fuse");
        let f2 = fs::File::open(&file2).expect("open");
        let mut buf = [0u8; 12];
        f2.read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"before-fence");
        f2.read_exact_at(&mut buf, MIB).expect("read");
        assert_ne!(&buf, b"FENCED-WRITE", "the fenced write landed");
        assert_eq!(buf, [0u8; 12]);
        drop(f2);
        fuse_unmount(&m2, Duration::from_secs(20)).expect("unmount");
        assert!(helper_pids(&m2).is_empty());
    }));
    let _ = fuse_unmount(&m1, Duration::from_secs(5));
    let _ = fuse_unmount(&m2, Duration::from_secs(5));
    let _ = pool.remove(&img);
    result.expect("test body");
}

/// Blocks the hand-over test writes: one 4 KiB block at the start of
/// each 4 MiB RBD object, so they fall on different objects and PGs.
const HANDOVER_BLOCKS: u64 = 16;
const HANDOVER_STRIDE: u64 = 4 * MIB;
const BLOCK: usize = 4096;

/// A block: `tag` (8 bytes), then `stamp` (little endian), repeated.
fn stamped_block(tag: &[u8; 8], stamp: u64) -> Vec<u8> {
    let mut unit = tag.to_vec();
    unit.extend_from_slice(&stamp.to_le_bytes());
    unit.iter().copied().cycle().take(BLOCK).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The hand-over invariant, over many trials: host A's rbd-fuse keeps
/// writing sequence-stamped blocks (write + fsync, one after another)
/// while host B takes the image over: B breaks A's lock, fences A's
/// client (blocklist + epoch barrier), takes the lock, starts its own
/// rbd-fuse and writes its marker to every block. Afterwards A keeps
/// trying for a while, then its helper is killed and the blocks are read
/// through a fresh client: any block that is not B's marker was
/// overwritten by A after B's first write — a violation. (A's writes
/// that landed before B's write are overwritten by it; that is allowed.)
/// A write A starts after the fence returned and that is acknowledged
/// (rbd-fuse runs without cache: acknowledged = on the OSDs) is a
/// violation too.
///
/// `BERTH_FENCE_TRIALS` sets the number of trials (default 20).
#[test]
fn root_handover_no_write_of_the_old_owner_lands_after_the_new_owners_first() {
    let cfg = cluster_cfg!();
    let trials: usize = std::env::var("BERTH_FENCE_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let ca = Cluster::connect(&cfg).expect("connect a");
    let cb = Cluster::connect(&cfg).expect("connect b");
    let pa = ca.rbd(&pool_name()).expect("pool a");
    let pb = cb.rbd(&pool_name()).expect("pool b");
    let img = unique("handover");
    pa.create(&img, HANDOVER_BLOCKS * HANDOVER_STRIDE)
        .expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let ma = dir.path().join("a");
    let mb = dir.path().join("b");
    let mc = dir.path().join("check");
    for m in [&ma, &mb, &mc] {
        fs::create_dir_all(m).expect("mkdir");
    }
    let started = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut fence_times = Vec::new();
        let mut handover_times = Vec::new();
        let mut violations = Vec::new();
        let (mut a_acked_total, mut a_after_barrier_tries) = (0u64, 0u64);
        let mut a_acked_after_barrier = 0u64;
        for trial in 0..trials as u64 {
            // Host A owns the image and writes.
            pa.lock_exclusive(&img, "berth:host-a").expect("lock a");
            let file_a = rbd_fuse_mount(&cfg, &pool_name(), &img, &ma).expect("rbd-fuse a");
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            // Stamps above this were written after the barrier.
            let barrier_at = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
            let late = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let writer = {
                let (stop, acked, tries) = (stop.clone(), acked.clone(), tries.clone());
                let (barrier_at, late) = (barrier_at.clone(), late.clone());
                let f = OpenOptions::new()
                    .write(true)
                    .open(&file_a)
                    .expect("open a");
                std::thread::spawn(move || {
                    for i in 1u64.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        tries.store(i, Ordering::SeqCst);
                        let off = (i % HANDOVER_BLOCKS) * HANDOVER_STRIDE;
                        let ok = f
                            .write_all_at(&stamped_block(b"host-a::", i), off)
                            .and_then(|_| f.sync_data());
                        // A fenced host does not give up by itself: it
                        // keeps writing until its helper is killed.
                        if ok.is_ok() {
                            acked.store(i, Ordering::SeqCst);
                            if i > barrier_at.load(Ordering::SeqCst) {
                                late.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            };
            let t = Instant::now();
            while acked.load(Ordering::SeqCst) < 3 {
                assert!(t.elapsed() < Duration::from_secs(20), "A does not write");
                std::thread::sleep(Duration::from_millis(2));
            }

            // Host B takes over: break, fence (blocklist + barrier), lock.
            let t0 = Instant::now();
            let watchers = pb.watchers(&img).expect("watchers");
            assert_eq!(watchers.len(), 1, "{watchers:?}");
            for l in pb.lockers(&img).expect("lockers") {
                pb.break_lock(&img, &l.client, &l.cookie).expect("break");
            }
            for w in &watchers {
                pb.fence(&w.addr, Duration::from_secs(600)).expect("fence");
            }
            let fenced = t0.elapsed();
            let a_at_barrier = tries.load(Ordering::SeqCst);
            let a_acked_at_barrier = acked.load(Ordering::SeqCst);
            barrier_at.store(a_at_barrier, Ordering::SeqCst);
            pb.lock_exclusive(&img, "berth:host-b").expect("lock b");
            // B's first write: its marker on every block.
            let file_b = rbd_fuse_mount(&cfg, &pool_name(), &img, &mb).expect("rbd-fuse b");
            let fb = OpenOptions::new()
                .write(true)
                .open(&file_b)
                .expect("open b");
            let marker = stamped_block(b"host-b::", trial);
            for k in 0..HANDOVER_BLOCKS {
                fb.write_all_at(&marker, k * HANDOVER_STRIDE)
                    .expect("B writes");
            }
            fb.sync_data().expect("B fsync");
            drop(fb);
            let handover = t0.elapsed();

            // A goes on trying (its writes hang or fail), then its host
            // notices and kills the helper.
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::SeqCst);
            sysceph_kill(&ma);
            writer.join().expect("writer");
            fuse_unmount(&ma, Duration::from_secs(20)).expect("unmount a");
            fuse_unmount(&mb, Duration::from_secs(20)).expect("unmount b");

            // Read back through a fresh client (no page cache of B's).
            let file_c = rbd_fuse_mount(&cfg, &pool_name(), &img, &mc).expect("rbd-fuse check");
            let fc = fs::File::open(&file_c).expect("open check");
            let mut buf = vec![0u8; BLOCK];
            for k in 0..HANDOVER_BLOCKS {
                fc.read_exact_at(&mut buf, k * HANDOVER_STRIDE)
                    .expect("read back");
                if buf != marker {
                    violations.push(format!(
                        "trial {trial}, block {k}: {:?} stamp {} (A: {} acknowledged, {} tried at the barrier)",
                        String::from_utf8_lossy(&buf[..8]),
                        u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
                        acked.load(Ordering::SeqCst),
                        a_at_barrier,
                    ));
                }
            }
            drop(fc);
            fuse_unmount(&mc, Duration::from_secs(20)).expect("unmount check");
            pb.unlock(&img, "berth:host-b").expect("unlock b");
            let late = late.load(Ordering::SeqCst);
            if late > 0 {
                violations.push(format!(
                    "trial {trial}: {late} write(s) A started after the barrier were acknowledged"
                ));
            }
            a_acked_total += a_acked_at_barrier;
            a_acked_after_barrier += acked.load(Ordering::SeqCst) - a_acked_at_barrier;
            a_after_barrier_tries += tries.load(Ordering::SeqCst) - a_at_barrier;
            fence_times.push(fenced);
            handover_times.push(handover);
        }
        fence_times.sort();
        handover_times.sort();
        eprintln!(
            "hand-over: {trials} trials in {:?}; A: {a_acked_total} writes acknowledged before the barrier, {a_after_barrier_tries} tried after it ({a_acked_after_barrier} acknowledged: the ones in flight at the barrier); violations: {}",
            started.elapsed(),
            violations.len()
        );
        eprintln!(
            "  fence (break + blocklist + epoch barrier): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&fence_times, 50.0),
            percentile(&fence_times, 99.0),
            fence_times.last().copied().unwrap_or_default()
        );
        eprintln!(
            "  hand-over to B's first durable write (+ lock, rbd-fuse start): p50 {:?}, p99 {:?}, max {:?}",
            percentile(&handover_times, 50.0),
            percentile(&handover_times, 99.0),
            handover_times.last().copied().unwrap_or_default()
        );
        assert!(
            violations.is_empty(),
            "writes of the fenced owner landed after the new owner's: {violations:#?}"
        );
    }));
    for m in [&ma, &mb, &mc] {
        sysceph_kill(m);
        let _ = fuse_unmount(m, Duration::from_secs(5));
    }
    let _ = pa.remove(&img);
    result.expect("test body");
}

/// Kills the FUSE helper serving `target` and waits until it is gone.
fn sysceph_kill(target: &Path) {
    berth::sys::ceph::kill_helpers(target, Duration::from_secs(10));
}

#[test]
fn root_watcher_of_a_killed_rbd_fuse_lingers_until_timeout_or_blocklist() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let pool = c.rbd(&pool_name()).expect("pool");
    let img = unique("linger");
    pool.create(&img, 16 * MIB).expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m");
    fs::create_dir_all(&m).expect("mkdir");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Round 1: SIGKILL and wait for the OSD to time the watch out.
        rbd_fuse_mount(&cfg, &pool_name(), &img, &m).expect("rbd-fuse");
        let w = pool.watchers(&img).expect("watchers");
        assert_eq!(w.len(), 1);
        for pid in helper_pids(&m) {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .expect("kill");
        }
        let t = Instant::now();
        while pool
            .watchers(&img)
            .expect("watchers")
            .iter()
            .any(|x| x.addr == w[0].addr)
        {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "watcher never expired"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        let linger = t.elapsed();
        eprintln!("watcher of a SIGKILLed rbd-fuse lingered {linger:?}");
        // The dead mount is still in the table ("transport endpoint is not
        // connected"): unmounting it works.
        fuse_unmount(&m, Duration::from_secs(5)).expect("unmount dead");

        // Round 2: SIGKILL, then blocklist the lingering watcher.
        rbd_fuse_mount(&cfg, &pool_name(), &img, &m).expect("rbd-fuse");
        let w = pool.watchers(&img).expect("watchers");
        assert_eq!(w.len(), 1);
        for pid in helper_pids(&m) {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .expect("kill");
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            pool.watchers(&img)
                .expect("watchers")
                .iter()
                .any(|x| x.addr == w[0].addr),
            "watcher still there 0.5 s after SIGKILL"
        );
        let t = Instant::now();
        c.blocklist_add(&w[0].addr, Duration::from_secs(600))
            .expect("blocklist");
        while pool
            .watchers(&img)
            .expect("watchers")
            .iter()
            .any(|x| x.addr == w[0].addr)
        {
            assert!(t.elapsed() < Duration::from_secs(120), "watcher never went");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "watcher of a SIGKILLed rbd-fuse gone {:?} after blocklisting its address (vs {linger:?} without)",
            t.elapsed()
        );
        fuse_unmount(&m, Duration::from_secs(5)).expect("unmount dead");
    }));
    let _ = fuse_unmount(&m, Duration::from_secs(5));
    let _ = pool.remove(&img);
    result.expect("test body");
}

#[test]
fn root_rbd_fuse_loop_ext4_round_trip() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let pool = c.rbd(&pool_name()).expect("pool");
    let img = unique("ext4");
    pool.create(&img, 128 * MIB).expect("create");
    let dir = tempfile::tempdir().expect("tempdir");
    let fuse_dir = dir.path().join("fuse");
    let vol = dir.path().join("vol");
    fs::create_dir_all(&fuse_dir).expect("mkdir");
    fs::create_dir_all(&vol).expect("mkdir");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let data: Vec<u8> = (0..4 * MIB).map(|i| (i * 7 % 251) as u8).collect();
        for round in 0..2 {
            let file = rbd_fuse_mount(&cfg, &pool_name(), &img, &fuse_dir).expect("rbd-fuse");
            let lo = loopdev::attach(&file).expect("loop");
            if round == 0 {
                cmd::run(
                    "mkfs.ext4",
                    &["-q", "-E", "nodiscard", &lo.path().to_string_lossy()],
                    Duration::from_secs(60),
                )
                .expect("mkfs");
            }
            mounts::mount(lo.path(), &vol, "ext4", "").expect("mount ext4");
            drop(lo); // the mount holds the device now (autoclear)
            let p = vol.join("data");
            if round == 0 {
                let mut f = fs::File::create(&p).expect("create");
                f.write_all(&data).expect("write");
                f.sync_all().expect("fsync");
            } else {
                let mut back = Vec::new();
                fs::File::open(&p)
                    .expect("open")
                    .read_to_end(&mut back)
                    .expect("read");
                assert!(back == data, "data differs after remount");
            }
            mounts::unmount(&vol).expect("umount ext4");
            wait_loop_released(&file);
            fuse_unmount(&fuse_dir, Duration::from_secs(20)).expect("unmount rbd-fuse");
            assert!(helper_pids(&fuse_dir).is_empty());
            assert!(pool.watchers(&img).expect("watchers").is_empty());
        }
    }));
    let _ = mounts::unmount(&vol);
    let _ = fuse_unmount(&fuse_dir, Duration::from_secs(5));
    let _ = pool.remove(&img);
    result.expect("test body");
}

#[test]
fn root_rbd_fuse_of_a_missing_image_fails_and_leaves_nothing_mounted() {
    let mut cfg = cluster_cfg!();
    cfg.timeout = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let err = rbd_fuse_mount(&cfg, &pool_name(), "berth-no-such-image", dir.path())
        .expect_err("no image");
    eprintln!("rbd-fuse of a missing image: {err} ({:?})", t.elapsed());
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    let table = mounts::MountTable::read().expect("mountinfo");
    let canon = fs::canonicalize(dir.path()).expect("canon");
    assert!(table.at(&canon).is_none(), "left a mount behind");
    assert!(helper_pids(dir.path()).is_empty(), "left a helper behind");
}

#[test]
fn root_cephfs_subvolumes_metadata_snapshots_clones() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let fs = CephFs::new(c, fs_name(), "berth-test");
    fs.ensure_group().expect("group");
    fs.ensure_group().expect("group again");
    let sv = unique("sv");
    let cl = format!("{sv}-clone");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fs.create(&sv, Some(20 * MIB), 1000, 1000, 0o750)
            .expect("create");
        assert!(fs.list().expect("list").contains(&sv));
        let path = fs.getpath(&sv).expect("getpath");
        assert!(
            path.starts_with(&format!("/volumes/berth-test/{sv}/")),
            "{path}"
        );
        let info = fs.info(&sv).expect("info");
        assert_eq!(info.bytes_quota, Some(20 * MIB));
        assert_eq!(info.path, path);
        assert_eq!((info.uid, info.gid), (1000, 1000));
        assert_eq!(info.mode & 0o7777, 0o750);
        assert_eq!(info.state, "complete");
        assert!(!info.created_at.is_empty());

        fs.resize(&sv, 40 * MIB).expect("resize");
        assert_eq!(fs.info(&sv).expect("info").bytes_quota, Some(40 * MIB));

        // metadata (Ceph 16.2.15 has `fs subvolume metadata`)
        assert_eq!(fs.metadata_get(&sv, "berth.owner").expect("get"), None);
        fs.metadata_set(&sv, "berth.owner", "host a").expect("set");
        fs.metadata_set(&sv, "berth.opts", r#"{"size":"20M"}"#)
            .expect("set");
        assert_eq!(
            fs.metadata_get(&sv, "berth.owner").expect("get").as_deref(),
            Some("host a")
        );
        let all = fs.metadata_list(&sv).expect("ls");
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all["berth.opts"], r#"{"size":"20M"}"#);
        fs.metadata_remove(&sv, "berth.owner").expect("rm");
        fs.metadata_remove(&sv, "berth.owner").expect("rm twice");
        assert_eq!(fs.metadata_get(&sv, "berth.owner").expect("get"), None);
        let err = fs
            .metadata_get("berth-no-such-sv", "k")
            .expect_err("no subvolume");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");

        // snapshot + clone
        fs.snapshot_create(&sv, "s1").expect("snap");
        assert_eq!(
            fs.snapshot_list(&sv).expect("snaps"),
            vec!["s1".to_string()]
        );
        fs.snapshot_clone(&sv, "s1", &cl).expect("clone");
        let t = Instant::now();
        let status = loop {
            let s = fs.clone_status(&cl).expect("status");
            if s.is_complete() || s.is_failed() || t.elapsed() > Duration::from_secs(60) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        eprintln!("subvolume clone: {status:?} after {:?}", t.elapsed());
        assert!(status.is_complete(), "{status:?}");
        let ci = fs.info(&cl).expect("clone info");
        assert_eq!(ci.bytes_quota, Some(40 * MIB));
        fs.snapshot_remove(&sv, "s1", false).expect("snap rm");
        fs.snapshot_remove(&sv, "s1", true)
            .expect("snap rm forced again");
        assert!(fs.snapshot_list(&sv).expect("snaps").is_empty());

        fs.remove(&cl, false).expect("rm clone");
        fs.remove(&sv, false).expect("rm");
        assert!(!fs.list().expect("list").contains(&sv));
        let err = fs.getpath(&sv).expect_err("gone");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        assert!(
            err.to_string().contains(&format!(
                "fs subvolume getpath {}/berth-test/{sv}",
                fs_name()
            )),
            "{err}"
        );
        let err = fs.remove(&sv, false).expect_err("gone");
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        fs.remove(&sv, true).expect("forced rm of nothing");
    }));
    if result.is_err() {
        let _ = fs.snapshot_remove(&sv, "s1", true);
        let _ = fs.remove(&cl, true);
        let _ = fs.remove(&sv, true);
    }
    result.expect("test body");
}

#[test]
fn root_ceph_fuse_mount_enforces_the_quota() {
    let cfg = cluster_cfg!();
    let c = Cluster::connect(&cfg).expect("connect");
    let fs = CephFs::new(c, fs_name(), "berth-test");
    fs.ensure_group().expect("group");
    let sv = unique("quota");
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).expect("mkdir");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fs.create(&sv, Some(8 * MIB), 0, 0, 0o755).expect("create");
        let path = fs.getpath(&sv).expect("getpath");
        ceph_fuse_mount(&cfg, &fs_name(), &path, &mnt).expect("ceph-fuse");
        let err = ceph_fuse_mount(&cfg, &fs_name(), &path, &mnt).expect_err("mounted");
        assert_eq!(errno(&err), libc::EBUSY, "{err}");
        let st = nix::sys::statvfs::statvfs(&mnt).expect("statvfs");
        let size = st.blocks() * st.fragment_size();
        eprintln!("df of an 8 MiB subvolume: {size} bytes");
        assert!((4 * MIB..=8 * MIB).contains(&size), "{size}");

        let mut f = fs::File::create(mnt.join("fill")).expect("create");
        let chunk = vec![0x5au8; MIB as usize];
        let mut written = 0u64;
        let err = loop {
            match f.write_all(&chunk).and_then(|_| f.sync_data()) {
                Ok(()) => written += MIB,
                Err(e) => break e,
            }
            assert!(
                written < 64 * MIB,
                "quota not enforced after {written} bytes"
            );
        };
        eprintln!("quota: {err} after {} MiB", written / MIB);
        assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
        drop(f);
        let t = Instant::now();
        fuse_unmount(&mnt, Duration::from_secs(20)).expect("unmount");
        eprintln!("ceph-fuse unmount (helper gone) took {:?}", t.elapsed());
        assert!(helper_pids(&mnt).is_empty());

        // A path that does not exist in the filesystem: error names the
        // mount point and carries ceph-fuse's reason.
        let err = ceph_fuse_mount(&cfg, &fs_name(), "/volumes/berth-no-such-dir", &mnt)
            .expect_err("no such path");
        eprintln!("ceph-fuse of a missing path: {err}");
        assert!(
            err.to_string().contains(&mnt.display().to_string()),
            "{err}"
        );
        assert_eq!(errno(&err), libc::ENOENT, "{err}");
        assert!(mounts::MountTable::read()
            .expect("mountinfo")
            .at(&fs::canonicalize(&mnt).expect("canon"))
            .is_none());
    }));
    let _ = fuse_unmount(&mnt, Duration::from_secs(5));
    let _ = fs.remove(&sv, true);
    result.expect("test body");
}

/// Prints the cost of each operation (ms) and the same operations through
/// the CLI, and the helpers' memory. Not an assertion of speed.
#[test]
fn root_timings_report() {
    let cfg = cluster_cfg!();
    fn ms(t: Instant) -> f64 {
        t.elapsed().as_secs_f64() * 1000.0
    }
    let mut rows: Vec<(String, f64)> = Vec::new();
    let mut c = None;
    for _ in 0..3 {
        let t = Instant::now();
        c = Some(Cluster::connect(&cfg).expect("connect"));
        rows.push(("Cluster::connect".into(), ms(t)));
    }
    let c = c.expect("connected");
    let pool = c.rbd(&pool_name()).expect("pool");
    let fs = CephFs::new(c.clone(), fs_name(), "berth-test");
    fs.ensure_group().expect("group");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut images = Vec::new();
    let mut subvols = Vec::new();
    for i in 0..3 {
        let img = unique("tim");
        let t = Instant::now();
        pool.create(&img, 64 * MIB).expect("create");
        pool.meta_set(&img, "berth.owner", "me").expect("meta");
        rows.push(("rbd create + meta_set".into(), ms(t)));
        let t = Instant::now();
        pool.lock_exclusive(&img, "me").expect("lock");
        rows.push(("rbd lock_exclusive".into(), ms(t)));
        let t = Instant::now();
        pool.lockers(&img).expect("lockers");
        rows.push(("rbd lockers".into(), ms(t)));
        pool.unlock(&img, "me").expect("unlock");
        let sv = unique("tim");
        let t = Instant::now();
        fs.create(&sv, Some(64 * MIB), 0, 0, 0o755)
            .expect("subvolume");
        rows.push(("subvolume create".into(), ms(t)));
        let t = Instant::now();
        let path = fs.getpath(&sv).expect("getpath");
        rows.push(("subvolume getpath".into(), ms(t)));

        let m = dir.path().join(format!("cf{i}"));
        fs::create_dir_all(&m).expect("mkdir");
        let t = Instant::now();
        ceph_fuse_mount(&cfg, &fs_name(), &path, &m).expect("ceph-fuse");
        rows.push(("ceph_fuse_mount".into(), ms(t)));
        let r = dir.path().join(format!("rf{i}"));
        fs::create_dir_all(&r).expect("mkdir");
        let t = Instant::now();
        rbd_fuse_mount(&cfg, &pool_name(), &img, &r).expect("rbd-fuse");
        rows.push(("rbd_fuse_mount".into(), ms(t)));
        if i == 0 {
            std::thread::sleep(Duration::from_secs(3));
            for (what, p) in [("ceph-fuse", &m), ("rbd-fuse", &r)] {
                for pid in helper_pids(p) {
                    eprintln!("RSS {what} idle: {} KiB", rss_kib(pid));
                }
            }
        }
        let t = Instant::now();
        fuse_unmount(&m, Duration::from_secs(20)).expect("unmount");
        rows.push(("fuse_unmount (ceph-fuse)".into(), ms(t)));
        let t = Instant::now();
        fuse_unmount(&r, Duration::from_secs(20)).expect("unmount");
        rows.push(("fuse_unmount (rbd-fuse)".into(), ms(t)));
        let t = Instant::now();
        c.blocklist_add(
            &format!("127.0.0.1:0/{}", 4_000_000_000u32 + i),
            Duration::from_secs(60),
        )
        .expect("blocklist");
        rows.push(("blocklist_add".into(), ms(t)));
        images.push(img);
        subvols.push(sv);
    }
    // The same through the CLI (one process per operation).
    let mut cli_env: Vec<String> = vec![
        "--conf".into(),
        cfg.conf.display().to_string(),
        "--id".into(),
        cfg.client.clone(),
    ];
    if let Some(k) = &cfg.keyring {
        cli_env.extend(["--keyring".into(), k.display().to_string()]);
    }
    let run = |prog: &str, args: &[String]| {
        let all: Vec<&str> = cli_env
            .iter()
            .map(String::as_str)
            .chain(args.iter().map(String::as_str))
            .collect();
        cmd::run(prog, &all, Duration::from_secs(60)).expect("cli");
    };
    for _ in 0..3 {
        let img = unique("cli");
        let t = Instant::now();
        run(
            "rbd",
            &[
                "create".into(),
                "--size".into(),
                "64".into(),
                "--image-feature".into(),
                "layering".into(),
                format!("{}/{img}", pool_name()),
            ],
        );
        rows.push(("CLI rbd create".into(), ms(t)));
        let t = Instant::now();
        run(
            "rbd",
            &[
                "image-meta".into(),
                "set".into(),
                format!("{}/{img}", pool_name()),
                "berth.owner".into(),
                "me".into(),
            ],
        );
        rows.push(("CLI rbd image-meta set".into(), ms(t)));
        let t = Instant::now();
        run(
            "rbd",
            &[
                "lock".into(),
                "add".into(),
                format!("{}/{img}", pool_name()),
                "me".into(),
            ],
        );
        rows.push(("CLI rbd lock add".into(), ms(t)));
        let sv = unique("cli");
        let t = Instant::now();
        run(
            "ceph",
            &[
                "fs".into(),
                "subvolume".into(),
                "create".into(),
                fs_name(),
                sv.clone(),
                "--size".into(),
                (64 * MIB).to_string(),
                "--group_name".into(),
                "berth-test".into(),
            ],
        );
        rows.push(("CLI ceph fs subvolume create".into(), ms(t)));
        let t = Instant::now();
        run(
            "ceph",
            &[
                "fs".into(),
                "subvolume".into(),
                "getpath".into(),
                fs_name(),
                sv.clone(),
                "--group_name".into(),
                "berth-test".into(),
            ],
        );
        rows.push(("CLI ceph fs subvolume getpath".into(), ms(t)));
        // the lock belongs to the CLI's dead client: break it through the API
        for l in pool.lockers(&img).expect("lockers") {
            pool.break_lock(&img, &l.client, &l.cookie).expect("break");
        }
        images.push(img);
        subvols.push(sv);
    }
    for img in &images {
        let _ = pool.remove(img);
    }
    for sv in &subvols {
        let _ = fs.remove(sv, true);
    }
    let mut names: Vec<&String> = rows.iter().map(|(n, _)| n).collect();
    names.dedup();
    let mut seen = std::collections::BTreeSet::new();
    eprintln!(
        "{:<32} {:>9} {:>9} {:>9}",
        "operation (ms)", "first", "median", "max"
    );
    for n in names {
        if !seen.insert(n.clone()) {
            continue;
        }
        let mut v: Vec<f64> = rows
            .iter()
            .filter(|(m, _)| m == n)
            .map(|(_, t)| *t)
            .collect();
        let first = v[0];
        v.sort_by(|a, b| a.total_cmp(b));
        eprintln!(
            "{:<32} {:>9.1} {:>9.1} {:>9.1}",
            n,
            first,
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
    let _ = std::io::stderr().flush();
}
