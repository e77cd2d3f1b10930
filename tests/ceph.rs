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
use common::probe::{fails_in_time, post_timed, read_p99, stuck_lines};
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
fn root_ceph_volumes_on_two_hosts() {
    let Some(mut c) = CephCluster::start_or_skip("root_ceph_volumes_on_two_hosts") else {
        return;
    };
    println!("cluster up in {:?}", c.up_time);
    let mut a = Daemon::builder()
        .netns(HOST_A)
        .service_toml(&host_config(&c, "host-a", false))
        .envs(c.env())
        .start();
    let mut b = Daemon::builder()
        .netns(HOST_B)
        .service_toml(&host_config(&c, "host-b", false))
        .envs(c.env())
        .start();
    c.add_mount_root(&a.mount_dir());
    c.add_mount_root(&b.mount_dir());

    cephfs_shared_by_two_hosts(&a, &b);
    rbd_single_writer_with_preemption(&c, &a, &b);
    rbd_host_crash_then_preempt(&c, &mut a, &b);
    where_users_wait(&a, &b);
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
    a_knows_it_was_taken_over(a);
    // A's Docker gives up the volume; B remounts from the cluster and
    // sees no trace of A's late write.
    ba.unmount("blk", Some("ctr-a"));
    let st = ba.status("blk");
    assert_eq!(st["mountCount"], 0, "{st}");
    assert!(st.get("takenOver").is_none(), "{st}");
    assert!(!common::is_mounted(&pa), "A's dead mount is still there");
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

/// The fenced host A learns of the take-over by itself (its sampler,
/// not a request): Get, status and the log say who has `blk` and since
/// when, not "mounted, 1 user"; a new Mount on A without preempt is a new
/// take-over and is refused naming B.
fn a_knows_it_was_taken_over(a: &Daemon) {
    let ba = a.client("block");
    let t = Instant::now();
    let st = loop {
        let st = ba.status("blk");
        if st.get("takenOver").is_some() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "A still shows blk as its own: {st}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "fenced host learnt of the take-over after {:?}",
        t.elapsed()
    );
    assert_eq!(st["takenOverBy"], "host-b", "{st}");
    assert!(
        st["takenOverAt"].as_str().is_some_and(|s| s.ends_with('Z')),
        "{st}"
    );
    assert_eq!(st["mounted"], false, "{st}");
    let services = ba.ok("Berth.Status", json!({}))["Services"].clone();
    let block = services
        .as_array()
        .and_then(|v| v.iter().find(|s| s["Name"] == "block"))
        .cloned()
        .expect("block in status");
    assert_eq!(block["Mounted"], 0, "{block}");
    let lines = block["TakenOver"].to_string();
    assert!(lines.contains("blk") && lines.contains("host-b"), "{block}");
    let log = a.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("volume blk was taken over by host host-b"))
        .count();
    assert_eq!(warned, 1, "the take-over is logged once at WARNING:\n{log}");
    // A new Mount on A is a new take-over: without preempt it is refused.
    let e = ba.err("VolumeDriver.Mount", json!({"Name": "blk", "ID": "ctr-a2"}));
    assert!(e.contains("host-b") && e.contains("preempt"), "{e}");
}

/// Where users wait: rbd create and cephfs unmount, ten of each, with
/// their medians. A cephfs unmount does not wait for ceph-fuse to exit;
/// what A wrote (without fsync) just before is on host B at once.
fn where_users_wait(a: &Daemon, b: &Daemon) {
    let (sa, ba, sb) = (a.client("shared"), a.client("block"), b.client("shared"));
    let mut creates = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        ba.create(&format!("lat{i}"), &[("size", "1")]);
        creates.push(t.elapsed());
    }
    // The filesystem is there: the volume mounts and takes data.
    let p = ba.mount("lat9", None);
    write_file(&p.join("x"), b"x");
    ba.unmount("lat9", None);
    for i in 0..10 {
        ba.remove(&format!("lat{i}"));
    }
    sa.create("lat", &[("size", "64M")]);
    let mut unmounts = Vec::new();
    for i in 0..10u8 {
        let id = format!("c{i}");
        let p = sa.mount("lat", Some(&id));
        let data = pattern(i, 1 << 20);
        std::fs::write(p.join(format!("f{i}")), &data).expect("write on A");
        let t = Instant::now();
        sa.unmount("lat", Some(&id));
        unmounts.push(t.elapsed());
        let pb = sb.mount("lat", Some("b"));
        assert_eq!(
            std::fs::read(pb.join(format!("f{i}"))).expect("read on B"),
            data,
            "B must see what A wrote before its unmount returned"
        );
        sb.unmount("lat", Some("b"));
    }
    // A's next mount sees everything too.
    let p = sa.mount("lat", Some("last"));
    for i in 0..10u8 {
        assert_eq!(
            std::fs::read(p.join(format!("f{i}"))).expect("read"),
            pattern(i, 1 << 20)
        );
    }
    sa.unmount("lat", Some("last"));
    sa.remove("lat");
    println!(
        "rbd create (1 GiB ext4), 10 creates: median {:?}, max {:?}",
        common::percentile(&mut creates, 0.5),
        common::percentile(&mut creates, 1.0)
    );
    println!(
        "cephfs unmount after writing 1 MiB, 10 unmounts: median {:?}, max {:?}",
        common::percentile(&mut unmounts, 0.5),
        common::percentile(&mut unmounts, 1.0)
    );
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
    let d = Daemon::builder().service_toml(&toml).start();
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
fn root_ceph_docker_end_to_end() {
    for tool in ["dockerd", "docker", "unshare", "curl"] {
        if !common::which(tool) {
            eprintln!("SKIP: root_ceph_docker_end_to_end needs {tool}");
            return;
        }
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: root_ceph_docker_end_to_end needs /bin/busybox (busybox-static)");
        return;
    }
    let Some(mut c) = CephCluster::start_or_skip("root_ceph_docker_end_to_end") else {
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

/// Deadline of the hung services' Unmount and Remove (`timeout`).
const HUNG_DEADLINE: Duration = Duration::from_secs(3);
/// Deadline of their Mount (`mount_timeout`): a first rbd mount (lock,
/// rbd-fuse, loop, mount) must fit in it on a loaded machine.
const HUNG_MOUNT_DEADLINE: Duration = Duration::from_secs(5);

/// Config of the hung-helper test: an rbd service `blk` and a cephfs
/// service `fs`, both with short deadlines, a fast sampler and one
/// worker, so that one stuck operation holds all of its service's
/// storage capacity (as 64 stuck creates do with 8 workers in
/// tests/hung_backend.rs).
fn hung_config(c: &CephCluster) -> String {
    let ceph = |extra: &str| {
        format!(
            "conf = \"{}\"\nkeyring = \"{}\"\nhost = \"host-a\"\ntimeout = \"20s\"\n{extra}",
            c.conf.display(),
            c.keyring.display()
        )
    };
    let limits = format!(
        "workers = 1\ncreate_timeout = \"30s\"\nmount_timeout = \"{}s\"\ntimeout = \"{}s\"\nsample_every = \"500ms\"\n",
        HUNG_MOUNT_DEADLINE.as_secs(),
        HUNG_DEADLINE.as_secs()
    );
    format!(
        "[services.fs]\ndriver = \"cephfs\"\n[services.fs.ceph]\n{}\n[services.fs.limits]\n{limits}\n\
         [services.blk]\ndriver = \"rbd\"\n[services.blk.ceph]\n{}\n[services.blk.limits]\n{limits}\n",
        ceph(""),
        ceph("pool = \"rbd\"")
    )
}

/// Processes stopped with SIGSTOP; dropping the value (also on a panic)
/// lets them go on, so nothing stays stopped.
struct Stopped(Vec<u32>);

impl Stopped {
    fn stop(pids: Vec<u32>) -> Stopped {
        for &p in &pids {
            signal(p, nix::sys::signal::Signal::SIGSTOP);
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &p in &self.0 {
            signal(p, nix::sys::signal::Signal::SIGCONT);
        }
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// Waits until no service lists stuck work (at most 60 s); how long.
fn wait_unstuck(sock: &Path) -> Duration {
    let t = Instant::now();
    loop {
        let lines = stuck_lines(sock);
        if lines.is_empty() {
            return t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{lines:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 64 concurrent Mounts of `volume` (new mount IDs), started now; each
/// thread returns (status, answer, time).
fn mount_storm(
    sock: &Path,
    volume: &str,
) -> Vec<std::thread::JoinHandle<(u16, serde_json::Value, Duration)>> {
    (0..64)
        .map(|i| {
            let (sock, volume) = (sock.to_path_buf(), volume.to_string());
            std::thread::spawn(move || {
                post_timed(
                    &sock,
                    "VolumeDriver.Mount",
                    json!({"Name": volume, "ID": format!("storm{i}")}),
                )
            })
        })
        .collect()
}

/// Joins a [`mount_storm`]: every caller got an error naming the volume
/// within two deadlines (waiting for the volume, then failing); the
/// slowest answer.
fn storm_failed_in_time(
    storm: Vec<std::thread::JoinHandle<(u16, serde_json::Value, Duration)>>,
    volume: &str,
) -> Duration {
    let mut slowest = Duration::ZERO;
    for c in storm {
        let (status, v, took) = c.join().expect("caller");
        assert_ne!(status, 200, "mount while the helper is stopped: {v}");
        let msg = v["Err"].as_str().unwrap_or("");
        assert!(msg.contains(&format!("volume {volume}")), "{v}");
        slowest = slowest.max(took);
    }
    assert!(
        slowest < HUNG_MOUNT_DEADLINE * 2 + Duration::from_secs(3),
        "{slowest:?}"
    );
    slowest
}

/// A stopped FUSE helper (SIGSTOP: it keeps its mount and its cluster
/// sessions but answers nothing, as a wedged ceph-fuse or rbd-fuse would)
/// stalls only the work that needs it. One berthd on host A serves an
/// rbd service `blk` and a cephfs service `fs`.
///
/// cephfs: the ceph-fuse of mounted volume `hv` is stopped. What truly
/// needs it: Unmount of `hv` (ceph-fuse must answer the path lookup and
/// exit after the unmount) and a Mount of `hv` with a new mount ID (the
/// data directory is prepared inside the mount). A Mount of another
/// volume starts a ceph-fuse of its own and does not hang; Create and
/// Remove are mgr calls. So the Unmount is the stuck work, and 64 Mounts
/// of `hv` with new IDs are the stuck callers (they wait for the volume
/// the stuck Unmount holds). Checked: Get/List of both services p99 <
/// 50 ms, Unmount/Mount/Remove of `hv` answer with an error within the
/// deadline, `/Berth.Status` shows the stuck work, used/free of `hv` is
/// shown stale, `blk` does storage work meanwhile; after SIGCONT the
/// Unmount finishes on its own and `hv` mounts, unmounts and is removed
/// without a restart.
///
/// rbd: the rbd-fuse of mounted volume `bv` is stopped. Unmount needs it
/// (unmounting the filesystem writes through the loop device into
/// rbd-fuse, and rbd-fuse must exit); the same checks follow.
#[test]
fn root_a_stopped_ceph_helper_stalls_only_its_own_work() {
    let Some(mut c) =
        CephCluster::start_or_skip("root_a_stopped_ceph_helper_stalls_only_its_own_work")
    else {
        return;
    };
    let mut d = Daemon::builder()
        .netns(HOST_A)
        .service_toml(&hung_config(&c))
        .envs(c.env())
        .start();
    c.add_mount_root(&d.mount_dir());
    let (fs_sock, blk_sock) = (d.socket("fs"), d.socket("blk"));
    let (fs, blk) = (d.client("fs"), d.client("blk"));
    fs.create("hv", &[("size", "64M")]);
    let p = fs.mount("hv", Some("a"));
    write_file(&p.join("kept"), b"cephfs data");
    let t = Instant::now();
    blk.create("bv", &[("size", "1")]);
    println!("rbd create: {:?}", t.elapsed());
    let t = Instant::now();
    let p = blk.mount("bv", Some("a"));
    println!("rbd mount: {:?}", t.elapsed());
    write_file(&p.join("kept"), b"rbd data");

    stopped_ceph_fuse(&d, &fs_sock, &blk_sock);
    stopped_rbd_fuse(&d, &fs_sock, &blk_sock);

    d.stop();
    let left = d.leftovers();
    assert!(left.is_empty(), "left behind by the daemon: {left:?}");
    c.stop();
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind by the cluster: {left:?}");
}

fn stopped_ceph_fuse(d: &Daemon, fs_sock: &Path, blk_sock: &Path) {
    let (fs, blk) = (d.client("fs"), d.client("blk"));
    let before_fs = read_p99(fs_sock, "hv", 50);
    let before_blk = read_p99(blk_sock, "bv", 50);
    let helpers = fuse_helpers(&d.mount_dir().join("hv").to_string_lossy());
    assert_eq!(helpers.len(), 1, "ceph-fuse of hv: {helpers:?}");
    let stopped = Stopped::stop(helpers);

    let u = fails_in_time(
        fs_sock,
        "VolumeDriver.Unmount",
        json!({"Name": "hv", "ID": "a"}),
        HUNG_DEADLINE,
    );
    assert!(u.contains("volume hv: unmount is stuck at step"), "{u}");
    let m = fails_in_time(
        fs_sock,
        "VolumeDriver.Mount",
        json!({"Name": "hv", "ID": "b"}),
        HUNG_MOUNT_DEADLINE,
    );
    assert!(
        m.contains("volume hv: busy") && m.contains("STUCK unmount of hv"),
        "{m}"
    );
    let r = fails_in_time(
        fs_sock,
        "VolumeDriver.Remove",
        json!({"Name": "hv"}),
        HUNG_DEADLINE,
    );
    assert!(
        r.contains("volume hv: busy") && r.contains("STUCK unmount of hv"),
        "{r}"
    );

    let storm = mount_storm(fs_sock, "hv");
    std::thread::sleep(Duration::from_millis(300));
    let during_fs = read_p99(fs_sock, "hv", 100);
    let during_blk = read_p99(blk_sock, "bv", 100);
    println!(
        "cephfs helper stopped: Get/List p99 fs {before_fs:?} before, {during_fs:?} with 64 stuck callers; blk {before_blk:?} before, {during_blk:?}"
    );
    assert!(during_fs < Duration::from_millis(50), "{during_fs:?}");
    assert!(during_blk < Duration::from_millis(50), "{during_blk:?}");
    // The rbd service does storage work meanwhile.
    let t = Instant::now();
    blk.create("other", &[("size", "1")]);
    blk.mount("other", Some("x"));
    blk.unmount("other", Some("x"));
    blk.remove("other");
    println!(
        "rbd create/mount/unmount/remove meanwhile: {:?}",
        t.elapsed()
    );
    let slowest = storm_failed_in_time(storm, "hv");
    println!("64 stuck mounts of hv all answered with an error; slowest after {slowest:?}");
    let lines = stuck_lines(fs_sock);
    println!("status: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("STUCK unmount of hv at step \"")),
        "{lines:?}"
    );
    // Its used/free figures are shown stale, not waited for.
    let t = Instant::now();
    while fs.get("hv")["Status"]["usageStale"] != true {
        assert!(t.elapsed() < Duration::from_secs(10), "{}", fs.get("hv"));
        std::thread::sleep(Duration::from_millis(200));
    }

    drop(stopped);
    let back = wait_unstuck(fs_sock);
    println!("ceph-fuse resumed: stuck work returned and was reconciled after {back:?}");
    // The unmount that outlived its deadline finished: Docker was told it
    // failed, and unmounting is what it asked for.
    let st = fs.get("hv")["Status"].clone();
    assert_eq!(st["mountCount"], 0, "{st}");
    assert_eq!(st["mounted"], false, "{st}");
    assert!(!common::is_mounted(&d.mount_dir().join("hv")));
    // The detached ceph-fuse writes back and exits by itself.
    let t = Instant::now();
    while !fuse_helpers(&d.mount_dir().join("hv").to_string_lossy()).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "ceph-fuse of hv still runs after its unmount"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let p = fs.mount("hv", Some("c"));
    assert_eq!(std::fs::read(p.join("kept")).expect("read"), b"cephfs data");
    fs.unmount("hv", Some("c"));
    fs.remove("hv");
    assert!(!fs.list_names().contains(&"hv".to_string()));
}

fn stopped_rbd_fuse(d: &Daemon, fs_sock: &Path, blk_sock: &Path) {
    let (fs, blk) = (d.client("fs"), d.client("blk"));
    fs.create("fv", &[("size", "64M")]);
    fs.mount("fv", Some("a"));
    let before_fs = read_p99(fs_sock, "fv", 50);
    let before_blk = read_p99(blk_sock, "bv", 50);
    let exposed = d.mount_dir().join(".rbd-fuse").join("bv");
    let helpers = fuse_helpers(&exposed.to_string_lossy());
    assert_eq!(helpers.len(), 1, "rbd-fuse of bv: {helpers:?}");
    let stopped = Stopped::stop(helpers);

    let u = fails_in_time(
        blk_sock,
        "VolumeDriver.Unmount",
        json!({"Name": "bv", "ID": "a"}),
        HUNG_DEADLINE,
    );
    assert!(u.contains("volume bv: unmount is stuck at step"), "{u}");
    let r = fails_in_time(
        blk_sock,
        "VolumeDriver.Remove",
        json!({"Name": "bv"}),
        HUNG_DEADLINE,
    );
    assert!(
        r.contains("volume bv: busy") && r.contains("STUCK unmount of bv"),
        "{r}"
    );
    let storm = mount_storm(blk_sock, "bv");
    std::thread::sleep(Duration::from_millis(300));
    let during_fs = read_p99(fs_sock, "fv", 100);
    let during_blk = read_p99(blk_sock, "bv", 100);
    println!(
        "rbd helper stopped: Get/List p99 fs {before_fs:?} before, {during_fs:?}; blk {before_blk:?} before, {during_blk:?} with 64 stuck callers"
    );
    assert!(during_fs < Duration::from_millis(50), "{during_fs:?}");
    assert!(during_blk < Duration::from_millis(50), "{during_blk:?}");
    // The cephfs service does storage work meanwhile.
    let t = Instant::now();
    fs.create("other", &[("size", "64M")]);
    fs.mount("other", Some("x"));
    fs.unmount("other", Some("x"));
    fs.remove("other");
    println!(
        "cephfs create/mount/unmount/remove meanwhile: {:?}",
        t.elapsed()
    );
    let slowest = storm_failed_in_time(storm, "bv");
    println!("64 stuck mounts of bv all answered with an error; slowest after {slowest:?}");
    let lines = stuck_lines(blk_sock);
    println!("status: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("STUCK unmount of bv at step \"")),
        "{lines:?}"
    );

    drop(stopped);
    let back = wait_unstuck(blk_sock);
    println!("rbd-fuse resumed: stuck work returned and was reconciled after {back:?}");
    let st = blk.get("bv")["Status"].clone();
    assert_eq!(st["mountCount"], 0, "{st}");
    assert_eq!(st["mounted"], false, "{st}");
    assert!(!common::is_mounted(&d.mount_dir().join("bv")));
    assert!(!common::is_mounted(&exposed));
    let p = blk.mount("bv", Some("c"));
    assert_eq!(std::fs::read(p.join("kept")).expect("read"), b"rbd data");
    blk.unmount("bv", Some("c"));
    blk.remove("bv");
    fs.unmount("fv", Some("a"));
    fs.remove("fv");
}
