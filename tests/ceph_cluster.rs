//! The Ceph test harness itself: a throw-away cluster in simulated host A
//! answers from host B (CephFS subvolume, RBD image, FUSE mounts), a
//! berthd runs inside a host, and stopping leaves nothing behind. Needs
//! root and the Ceph packages; skips loudly otherwise.

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::ceph::{CephCluster, HOST_A, HOST_B};
use common::{is_mounted, Daemon};
use serde_json::Value;

#[test]
fn root_cluster_serves_both_hosts_and_leaves_nothing_behind() {
    let t0 = Instant::now();
    let Some(mut c) =
        CephCluster::start_or_skip("root_cluster_serves_both_hosts_and_leaves_nothing_behind")
    else {
        return;
    };
    eprintln!("cluster up in {:?}", c.up_time);

    // Host B sees a healthy cluster: the OSD up, the MDS active.
    let s: Value = serde_json::from_str(&c.run(HOST_B, &["ceph", "-s", "--format", "json"]))
        .expect("ceph -s JSON");
    let health = s["health"]["status"].as_str().unwrap_or_default();
    assert!(
        health == "HEALTH_OK" || health == "HEALTH_WARN",
        "health {health}: {s}"
    );
    assert_eq!(s["osdmap"]["num_up_osds"], 1, "{s}");
    let ranks = s["fsmap"]["by_rank"].as_array().expect("fsmap.by_rank");
    assert!(
        ranks.iter().any(|r| r["status"] == "up:active"),
        "no active MDS: {s}"
    );

    // A CephFS subvolume (mgr volumes module) and an RBD image, from B.
    c.run(
        HOST_B,
        &[
            "ceph",
            "fs",
            "subvolume",
            "create",
            "cephfs",
            "sv1",
            "--size",
            "16777216",
        ],
    );
    let path = c.run(
        HOST_B,
        &["ceph", "fs", "subvolume", "getpath", "cephfs", "sv1"],
    );
    let path = path.trim();
    assert!(path.starts_with("/volumes/_nogroup/sv1/"), "{path}");
    c.run(
        HOST_B,
        &[
            "rbd",
            "create",
            "--size",
            "64",
            "--image-feature",
            "layering",
            "rbd/img1",
        ],
    );
    assert!(c
        .run(HOST_A, &["rbd", "ls", "rbd"])
        .lines()
        .any(|l| l == "img1"));

    // Clients left mounted on purpose: stopping the cluster must clean
    // them up (ceph-fuse on B, rbd-fuse + loop + ext4 on A).
    let m = c.mnt_dir();
    for d in ["fs", "rbd", "vol"] {
        std::fs::create_dir_all(m.join(d)).expect("mount dir");
    }
    let fs = m.join("fs");
    let fs_s = fs.to_string_lossy().into_owned();
    c.run(
        HOST_B,
        &["ceph-fuse", "-n", "client.admin", "-r", path, &fs_s],
    );
    std::fs::write(fs.join("hello"), "from B").expect("write on CephFS");
    let rbd = m.join("rbd").to_string_lossy().into_owned();
    c.run(HOST_A, &["rbd-fuse", "-p", "rbd", "-r", "img1", &rbd]);
    let img = format!("{rbd}/img1");
    let dev = c.run(HOST_A, &["losetup", "-f", "--show", &img]);
    let dev = dev.trim();
    c.run(HOST_A, &["mkfs.ext4", "-q", "-E", "nodiscard", dev]);
    let vol = m.join("vol");
    c.run(HOST_A, &["mount", dev, &vol.to_string_lossy()]);
    std::fs::write(vol.join("hello"), "from A").expect("write on RBD");
    assert!(is_mounted(&fs) && is_mounted(&vol));

    // A berthd inside host A: its network namespace is A's, its mounts
    // land in ours.
    {
        let d = Daemon::builder().netns(HOST_A).envs(c.env()).start();
        let pid = d.pid().expect("berthd pid");
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).expect("berthd netns");
        let a = std::fs::metadata(format!("/run/netns/{HOST_A}")).expect("netns file");
        assert_eq!(
            (ns.dev(), ns.ino()),
            (a.dev(), a.ino()),
            "berthd not in {HOST_A}"
        );
        let api = d.client("berth");
        api.create("v1", &[("size", "16M")]);
        let mp = api.mount("v1", Some("c1"));
        assert!(mp.starts_with(d.mount_dir().join("v1")), "{}", mp.display());
        assert!(
            is_mounted(&d.mount_dir().join("v1")),
            "berthd's mount is not visible here"
        );
        api.unmount("v1", Some("c1"));
        api.remove("v1");
    }

    for (name, kb) in c.daemon_rss() {
        eprintln!("rss {name}: {} MB", kb / 1024);
    }
    let took = c.stop();
    eprintln!("cluster down in {took:?}");
    // Killed daemons are reaped by PID 1, which may take a moment.
    let end = Instant::now() + Duration::from_secs(10);
    let mut left = c.leftovers();
    while !left.is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
        left = c.leftovers();
    }
    assert!(left.is_empty(), "left behind:\n{}", left.join("\n"));
    eprintln!("whole test {:?}", t0.elapsed());
}
