//! Ceph-backed volumes on two simulated hosts (network namespaces
//! berth-a and berth-b, each with its own berthd, state and mount
//! directories) against one real single-node cluster started here.
//!
//! Needs root, the Ceph daemons and FUSE helpers, and a berthd built with
//! the `ceph` feature: `cargo test --features ceph --test ceph`. Without
//! the feature this file is empty; without the tools it skips loudly.
#![cfg(feature = "ceph")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::ceph::{CephCluster, HOST_A, HOST_B};
use common::Daemon;
use serde_json::json;

/// Config of one host: a cephfs service `shared` and an rbd service
/// `block` on the test cluster.
fn host_config(c: &CephCluster, host: &str, preempt: bool) -> String {
    let ceph = |extra: &str| {
        format!(
            "conf = \"{}\"\nkeyring = \"{}\"\nhost = \"{host}\"\ntimeout = \"20s\"\n{extra}",
            c.conf.display(),
            c.keyring.display()
        )
    };
    format!(
        "[services.shared]\ndriver = \"cephfs\"\n[services.shared.ceph]\n{}\n\
         [services.block]\ndriver = \"rbd\"\n[services.block.ceph]\n{}\n\
         [services.block.volume.mount]\npreempt = {preempt}\n",
        ceph(""),
        ceph("pool = \"rbd\"")
    )
}

/// Rewrites berthd's config and reloads it (SIGHUP).
fn set_preempt(d: &Daemon, c: &CephCluster, host: &str, preempt: bool) {
    let text = std::fs::read_to_string(&d.config).expect("read config");
    let daemon_part = text
        .split("[services.shared]")
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(&d.config, daemon_part + &host_config(c, host, preempt)).expect("config");
    let pid = d.pid().expect("berthd runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    std::thread::sleep(Duration::from_millis(300));
}

fn sh(script: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .expect("sh")
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    let f = std::fs::File::open(path).expect("reopen");
    f.sync_all().expect("fsync");
}

/// Writes 1 MiB chunks with fdatasync each until an error or `max_mib`;
/// the bytes written and the error.
fn fill(path: &Path, max_mib: u64) -> (u64, std::io::Error) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create");
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    loop {
        if let Err(e) = f.write_all(&chunk).and_then(|_| f.sync_data()) {
            return (written, e);
        }
        written += 1 << 20;
        assert!(written < max_mib << 20, "no error after {written} bytes");
    }
}

/// Resident memory (kB) of each FUSE helper whose command line names
/// `needle`.
fn helper_rss(needle: &str) -> Vec<(String, u64)> {
    common::ceph::processes_naming(needle)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("rbd-fuse") || cmd.contains("ceph-fuse"))
        .filter_map(|(pid, cmd)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let kb = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some((cmd.split_whitespace().next().unwrap_or("?").to_string(), kb))
        })
        .collect()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// PIDs of FUSE helpers whose command line names `needle`.
fn fuse_helpers(needle: &str) -> Vec<u32> {
    common::ceph::processes_naming(needle)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("rbd-fuse") || cmd.contains("ceph-fuse"))
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn ceph_volumes_on_two_hosts() {
    let Some(mut c) = CephCluster::start_or_skip("ceph_volumes_on_two_hosts") else {
        return;
    };
    println!("cluster up in {:?}", c.up_time);
    let mut a = Daemon::start_in(Some(HOST_A), "", &host_config(&c, "host-a", false), c.env());
    let mut b = Daemon::start_in(Some(HOST_B), "", &host_config(&c, "host-b", false), c.env());
    c.add_mount_root(&a.mount_dir());
    c.add_mount_root(&b.mount_dir());

    cephfs_shared_by_two_hosts(&a, &b);
    rbd_single_writer_with_preemption(&c, &a, &b);
    rbd_host_crash_then_preempt(&c, &mut a, &b);
    unreachable_cluster_is_reported(&c);

    a.stop();
    b.stop();
    let left: Vec<String> = a.leftovers().into_iter().chain(b.leftovers()).collect();
    assert!(left.is_empty(), "left behind by the daemons: {left:?}");
    let down = c.stop();
    println!("cluster down in {down:?}");
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind by the cluster: {left:?}");
}

/// 1. cephfs: create on A, listed on B, mounted on both at once, a file
///    written on A is read on B, the quota holds, snapshot and clones.
fn cephfs_shared_by_two_hosts(a: &Daemon, b: &Daemon) {
    let (sa, sb) = (a.client("shared"), b.client("shared"));
    let t = Instant::now();
    sa.create("shv", &[("size", "64M")]);
    println!("cephfs create: {:?}", t.elapsed());
    assert!(
        sb.list_names().contains(&"shv".to_string()),
        "B lists A's volume"
    );
    let status = &sb.get("shv")["Status"];
    assert_eq!(status["fsType"], "cephfs", "{status}");
    assert_eq!(status["sizeBytes"], 64 << 20, "{status}");
    assert_eq!(status["attachMethod"], "ceph-fuse", "{status}");

    let t = Instant::now();
    let pa = sa.mount("shv", Some("task-a"));
    println!("cephfs first mount: {:?}", t.elapsed());
    let pb = sb.mount("shv", Some("task-b"));
    write_file(&pa.join("hello"), b"written on A");
    println!(
        "FUSE helpers on A (kB RSS): {:?}",
        helper_rss(&a.mount_dir().to_string_lossy())
    );
    let seen = std::fs::read(pb.join("hello")).expect("read on B");
    assert_eq!(seen, b"written on A");
    // B writes too: both hosts are writers of a shared filesystem.
    write_file(&pb.join("from-b"), b"written on B");
    assert_eq!(
        std::fs::read(pa.join("from-b")).expect("read on A"),
        b"written on B"
    );

    // Quota: 64 MiB, which df shows exactly. Writing on, 1 MiB at a time
    // with fdatasync, must fail with EDQUOT. CephFS quotas are enforced
    // by the client from usage the MDS reports with a lag, so more than
    // the quota can land first (documented in docs/ceph.md).
    let st = nix::sys::statvfs::statvfs(&pa).expect("statvfs");
    assert_eq!(
        st.blocks() * st.fragment_size(),
        64 << 20,
        "df of the volume"
    );
    let (written, err) = fill(&pa.join("big"), 512);
    println!("cephfs quota: {err} after {} MiB", written >> 20);
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");
    assert!(
        written <= 256 << 20,
        "quota enforced only after {written} bytes"
    );
    std::fs::remove_file(pa.join("big")).expect("rm big");
    // The space comes back once the MDS has purged the file and told the
    // client.
    let t = Instant::now();
    while std::fs::write(pa.join("probe"), b"x").is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "quota space never came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("cephfs quota space back after {:?}", t.elapsed());
    std::fs::remove_file(pa.join("probe")).expect("rm probe");

    // Snapshot, then a clone from it and a clone of the live volume.
    sa.ok(
        "Berth.SnapshotCreate",
        json!({"Volume": "shv", "Name": "shv-s1"}),
    );
    write_file(&pa.join("hello"), b"changed after the snapshot");
    // The snapshot taken on A is listed on B, and B restores from it.
    let listed = sb.ok("Berth.SnapshotList", json!({}));
    assert!(
        listed["Snapshots"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["Name"] == "shv-s1")),
        "B lists A's snapshot: {listed}"
    );
    sb.create("shv-from-snap", &[("snapshotName", "shv-s1")]);
    sb.create("shv-copy", &[("volumeName", "shv")]);
    let p = sb.mount("shv-from-snap", None);
    assert_eq!(
        std::fs::read(p.join("hello")).expect("read"),
        b"written on A"
    );
    sb.unmount("shv-from-snap", None);
    let p = sa.mount("shv-copy", None);
    assert_eq!(
        std::fs::read(p.join("hello")).expect("read"),
        b"changed after the snapshot"
    );
    sa.unmount("shv-copy", None);

    sa.unmount("shv", Some("task-a"));
    sb.unmount("shv", Some("task-b"));
    let e = sb.err("VolumeDriver.Remove", json!({"Name": "shv"}));
    assert!(e.contains("shv") && e.contains("snapshot"), "{e}");
    // Removed on B, the snapshot taken on A.
    sb.ok("Berth.SnapshotRemove", json!({"Name": "shv-s1"}));
    let listed = sa.ok("Berth.SnapshotList", json!({}));
    assert!(
        listed["Snapshots"].as_array().is_some_and(|a| a.is_empty()),
        "A no longer lists it: {listed}"
    );
    for v in ["shv", "shv-from-snap", "shv-copy"] {
        sb.remove(v);
    }
    // A re-reads the catalog at most once a second.
    let t = Instant::now();
    while !sa.list_names().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "A still lists {:?}",
            sa.list_names()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 2. rbd: A writes; B without preempt is refused naming A; with preempt
///    B gets A's data within 5 s, and A is fenced.
fn rbd_single_writer_with_preemption(c: &CephCluster, a: &Daemon, b: &Daemon) {
    let (ba, bb) = (a.client("block"), b.client("block"));
    let t = Instant::now();
    ba.create("blk", &[("size", "1")]);
    println!("rbd create (1 GiB ext4): {:?}", t.elapsed());
    let t = Instant::now();
    let pa = ba.mount("blk", Some("ctr-a"));
    println!("rbd first mount: {:?}", t.elapsed());
    let data = pattern(7, 4 << 20);
    write_file(&pa.join("data"), &data);
    sh("sync");

    println!(
        "rbd helpers on A after writing 4 MiB (kB RSS): {:?}",
        helper_rss(&a.mount_dir().to_string_lossy())
    );
    let e = bb.err("VolumeDriver.Mount", json!({"Name": "blk", "ID": "ctr-b"}));
    assert!(e.contains("host-a") && e.contains("preempt"), "{e}");
    assert!(!common::is_mounted(&b.mount_dir().join("blk")));

    set_preempt(b, c, "host-b", true);
    let t = Instant::now();
    let pb = bb.mount("blk", Some("ctr-b"));
    let handover = t.elapsed();
    println!("rbd preempt hand-over: {handover:?}");
    assert!(
        handover < Duration::from_secs(5),
        "hand-over took {handover:?}"
    );
    assert_eq!(std::fs::read(pb.join("data")).expect("read on B"), data);

    // A still has its mount, but its rbd-fuse is blocklisted: a write
    // with fsync fails and never reaches the image.
    let out = sh(&format!(
        "dd if=/dev/urandom of={}/after-fence bs=1M count=4 conv=fsync 2>&1",
        pa.display()
    ));
    assert!(
        !out.status.success(),
        "a fenced host could write: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A's Docker gives up the volume; B remounts from the cluster and
    // sees no trace of A's late write.
    ba.unmount("blk", Some("ctr-a"));
    bb.unmount("blk", Some("ctr-b"));
    let pb = bb.mount("blk", Some("ctr-b2"));
    assert!(!pb.join("after-fence").exists(), "a fenced write landed");
    assert_eq!(std::fs::read(pb.join("data")).expect("read"), data);
    bb.unmount("blk", Some("ctr-b2"));
    set_preempt(b, c, "host-b", false);
    // Unlocked now: A can have it back without preempt.
    let pa = ba.mount("blk", None);
    assert_eq!(std::fs::read(pa.join("data")).expect("read on A"), data);
    ba.unmount("blk", None);
    bb.remove("blk");
    // A re-reads the catalog at most once a second.
    let t = Instant::now();
    while ba.list_names().contains(&"blk".to_string()) {
        assert!(t.elapsed() < Duration::from_secs(5), "A still lists blk");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// 3. A crashes (berthd and its FUSE helpers killed) holding a volume; B
///    preempts and has the data.
fn rbd_host_crash_then_preempt(c: &CephCluster, a: &mut Daemon, b: &Daemon) {
    let (ba, bb) = (a.client("block"), b.client("block"));
    ba.create("crashy", &[("size", "1"), ("fsType", "xfs")]);
    let pa = ba.mount("crashy", Some("ctr-a"));
    let data = pattern(3, 8 << 20);
    write_file(&pa.join("data"), &data);
    sh("sync");
    a.kill9();
    let helpers = fuse_helpers(&a.mount_dir().to_string_lossy());
    assert!(!helpers.is_empty(), "no rbd-fuse found for A");
    for pid in helpers {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    set_preempt(b, c, "host-b", true);
    let t = Instant::now();
    let pb = bb.mount("crashy", Some("ctr-b"));
    println!("rbd preempt after a crash: {:?}", t.elapsed());
    assert_eq!(std::fs::read(pb.join("data")).expect("read on B"), data);
    bb.unmount("crashy", Some("ctr-b"));
    set_preempt(b, c, "host-b", false);

    // A comes back: its Docker unmounts what it held; nothing is left.
    a.spawn();
    a.wait_ready("shared");
    let ba = a.client("block");
    ba.unmount("crashy", Some("ctr-a"));
    assert!(!common::is_mounted(&pa), "A's stale mount is gone");
    bb.remove("crashy");
}

/// A service whose cluster cannot be reached: berthd starts, answers
/// with the reason, and its status says so.
fn unreachable_cluster_is_reported(c: &CephCluster) {
    let bad = PathBuf::from(format!("{}/missing.conf", c.dir.display()));
    std::fs::write(&bad, "[global]\nmon_host = v2:127.0.0.1:1\n").expect("conf");
    let toml = format!(
        "[services.berth]\ndriver = \"loop\"\n\
         [services.dead]\ndriver = \"rbd\"\n[services.dead.ceph]\nconf = \"{}\"\nkeyring = \"{}\"\ntimeout = \"2s\"\n",
        bad.display(),
        c.keyring.display()
    );
    let d = Daemon::start_in(None, "", &toml, vec![]);
    let api = d.client("dead");
    let t = Instant::now();
    let e = api.err(
        "VolumeDriver.Create",
        json!({"Name": "x", "Opts": {"size": "1"}}),
    );
    assert!(
        e.contains("unreachable") && e.contains("missing.conf"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    // The loop service of the same berthd works.
    d.client("berth").create("fine", &[("size", "64M")]);
    let st = d.client("berth").ok("Berth.Status", json!({}))["Services"].clone();
    let dead = st
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["Name"] == "dead")
        .cloned()
        .expect("dead listed");
    assert!(
        dead["Problem"]
            .as_str()
            .is_some_and(|p| p.contains("unreachable")),
        "{dead}"
    );
    d.client("berth").remove("fine");
}

/// 4. Docker end-to-end on one host: `docker volume create -d <rbd
///    service> --opt size=1`, `docker run -v` writes and reads.
#[test]
fn ceph_docker_end_to_end() {
    for tool in ["dockerd", "docker", "unshare", "curl"] {
        if !common::which(tool) {
            eprintln!("SKIP: ceph_docker_end_to_end needs {tool}");
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: ceph_docker_end_to_end needs /bin/busybox (busybox-static)");
        return;
    }
    let Some(mut c) = CephCluster::start_or_skip("ceph_docker_end_to_end") else {
        return;
    };
    let dir = c.dir.join("e2e");
    std::fs::create_dir_all(&dir).expect("e2e dir");
    c.add_mount_root(&dir);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/docker-ceph.sh");
    let conf = c.conf.to_string_lossy().into_owned();
    let keyring = c.keyring.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();
    let out = common::ceph::host_cmd(
        HOST_A,
        &[
            script,
            &dir_s,
            env!("CARGO_BIN_EXE_berthd"),
            &conf,
            &keyring,
        ],
    )
    .output()
    .expect("run docker-ceph.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        let log = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        panic!(
            "docker on ceph failed:\n{stdout}\n--- checks.log\n{}\n--- berthd.log\n{}",
            log("checks.log"),
            log("berthd.log")
        );
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    c.stop();
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}
