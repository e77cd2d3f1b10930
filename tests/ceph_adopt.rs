//! Adopting REX-Ray's RBD images (`adopt = "rexray"`) on two simulated
//! hosts against a real single-node cluster started here: images made as
//! REX-Ray's rbd driver made them (named as the volume, in the service's
//! pool, `layering` only, a filesystem made on first attach or none yet),
//! listed on both hosts, adopted by the first mount with their data
//! intact, then moved between hosts like any rbd volume.
//!
//! `cargo test --features ceph --test ceph_adopt` (root, the Ceph tools).
#![cfg(feature = "ceph")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ceph::{CephCluster, HOST_A, HOST_B};
use common::Daemon;
use serde_json::json;

/// Images made as REX-Ray did besides the two the test mounts, to time a
/// List with many adoptable images.
const EXTRA: usize = 40;

/// The `block` rbd service of one host; `adopt` turns adoption on.
fn host_config(c: &CephCluster, host: &str, adopt: bool, preempt: bool, no_rm: bool) -> String {
    let adopt = if adopt { "adopt = \"rexray\"\n" } else { "" };
    format!(
        "[services.block]\ndriver = \"rbd\"\n[services.block.ceph]\nconf = \"{}\"\n\
         keyring = \"{}\"\nhost = \"{host}\"\ntimeout = \"20s\"\npool = \"rbd\"\n{adopt}\
         [services.block.volume.mount]\npreempt = {preempt}\n\
         [services.block.volume.remove]\ndisable = {no_rm}\n",
        c.conf.display(),
        c.keyring.display()
    )
}

/// Rewrites berthd's service config (adoption on) and reloads it.
fn reload(d: &Daemon, c: &CephCluster, host: &str, preempt: bool, no_rm: bool) {
    let text = std::fs::read_to_string(&d.config).expect("read config");
    let daemon_part = text
        .split("[services.block]")
        .next()
        .unwrap_or_default()
        .to_string();
    let cfg = daemon_part + &host_config(c, host, true, preempt, no_rm);
    std::fs::write(&d.config, cfg).expect("config");
    let pid = d.pid().expect("berthd runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    std::thread::sleep(Duration::from_millis(300));
}

/// What REX-Ray left: `rx-data` holds an ext4 filesystem with
/// `/data/hello` (REX-Ray's rootPath), `rx-blank` was never attached,
/// and `EXTRA` more blank ones.
fn make_rexray_images(c: &CephCluster) {
    let work = c.dir.join("rexray");
    std::fs::create_dir_all(work.join("tree/data")).expect("mkdir");
    std::fs::write(work.join("tree/data/hello"), b"written under REX-Ray").expect("file");
    let img = work.join("rx-data.img");
    let img_s = img.to_string_lossy().to_string();
    let tree = work.join("tree").to_string_lossy().to_string();
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d", &tree, &img_s, "256M"])
        .output()
        .expect("mkfs.ext4");
    assert!(out.status.success(), "mkfs.ext4 -d: {out:?}");
    c.run(
        HOST_A,
        &[
            "rbd",
            "import",
            "--image-feature",
            "layering",
            &img_s,
            "rbd/rx-data",
        ],
    );
    std::fs::remove_file(&img).expect("rm image");
    let mut script = String::from("set -e\n");
    script.push_str("rbd create --image-feature layering --size 256M rbd/rx-blank\n");
    for i in 0..EXTRA {
        script.push_str(&format!(
            "rbd create --image-feature layering --size 64M rbd/rx-n{i:02}\n"
        ));
    }
    c.run(HOST_A, &["sh", "-c", &script]);
}

fn rexray_names(names: &[String]) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| n.starts_with("rx-"))
        .collect()
}

/// Median time of `n` Lists, each after the service's listing aged out.
fn list_median(d: &Daemon, n: usize) -> Duration {
    let api = d.client("block");
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(1100));
            let t = Instant::now();
            api.ok("VolumeDriver.List", json!({}));
            t.elapsed()
        })
        .collect();
    common::percentile(&mut v, 50.0)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(15), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn root_rexray_rbd_images_adopted_on_two_hosts() {
    let Some(mut c) = CephCluster::start_or_skip("root_rexray_rbd_images_adopted_on_two_hosts")
    else {
        return;
    };
    make_rexray_images(&c);

    // Without the opt-in, REX-Ray's images are nobody's volumes.
    let mut plain = Daemon::builder()
        .netns(HOST_A)
        .service_toml(&host_config(&c, "host-a", false, false, false))
        .envs(c.env())
        .start();
    let names = plain.client("block").list_names();
    assert!(
        rexray_names(&names).is_empty(),
        "listed without adopt: {names:?}"
    );
    assert!(
        plain
            .client("block")
            .raw("VolumeDriver.Get", &json!({"Name": "rx-data"}).to_string())
            .0
            != 200,
        "Get found rx-data without adopt"
    );
    println!(
        "List without adopt (same pool), median of 5 uncached: {:?}",
        list_median(&plain, 5)
    );
    plain.stop();

    let start = |host: &str, ns: &str| {
        Daemon::builder()
            .netns(ns)
            .service_toml(&host_config(&c, host, true, false, false))
            .envs(c.env())
            .start()
    };
    let a = start("host-a", HOST_A);
    let b = start("host-b", HOST_B);
    c.add_mount_root(&a.mount_dir());
    c.add_mount_root(&b.mount_dir());
    let (ba, bb) = (a.client("block"), b.client("block"));

    let t = Instant::now();
    let on_a = ba.list_names();
    println!(
        "first List on A ({} adoptable images): {:?}",
        EXTRA + 2,
        t.elapsed()
    );
    for names in [on_a, bb.list_names()] {
        let rx = rexray_names(&names);
        assert_eq!(rx.len(), EXTRA + 2, "{names:?}");
        assert!(
            rx.contains(&"rx-data") && rx.contains(&"rx-blank"),
            "{names:?}"
        );
    }
    println!(
        "List on A, {} adoptable images, nothing changed (version checks), median of 5: {:?}",
        EXTRA + 2,
        list_median(&a, 5)
    );
    // An image REX-Ray's way made now is in the next List past the cache.
    let mut fresh = Vec::new();
    for i in 0..3 {
        let n = format!("rx-late{i}");
        c.run(
            HOST_B,
            &[
                "rbd",
                "create",
                "--image-feature",
                "layering",
                "--size",
                "64M",
                &format!("rbd/{n}"),
            ],
        );
        std::thread::sleep(Duration::from_millis(1100));
        let t = Instant::now();
        let names = ba.list_names();
        fresh.push(t.elapsed());
        assert!(names.contains(&n), "{n} not listed: {names:?}");
    }
    println!(
        "List on A after a new image came, {}+ adoptable images, median of 3: {:?}",
        EXTRA + 2,
        common::percentile(&mut fresh, 50.0)
    );
    let st = bb.status("rx-data");
    assert_eq!(st["adoption"], "pending", "{st}");
    assert_eq!(st["adoptedFrom"], "rexray", "{st}");
    assert_eq!(st["id"], "rbd.rx-data", "REX-Ray's volume ID: {st}");

    adopt_with_data(&c, &a, &b);
    adopt_blank(&a, &b);
    berth_creates_are_not_adopted(&c, &a);
    remove_obeys_disable(&c, &a);

    let (mut a, mut b) = (a, b);
    a.stop();
    b.stop();
    let left: Vec<String> = a.leftovers().into_iter().chain(b.leftovers()).collect();
    assert!(left.is_empty(), "left behind by the daemons: {left:?}");
    c.stop();
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind by the cluster: {left:?}");
}

/// rx-data: mounted on A with its file intact (adopted), then on B,
/// which sees it adopted; then preempted back by A.
fn adopt_with_data(c: &CephCluster, a: &Daemon, b: &Daemon) {
    let (ba, bb) = (a.client("block"), b.client("block"));
    let t = Instant::now();
    let pa = ba.mount("rx-data", Some("ctr-a"));
    println!(
        "first mount of an adopted image (ext4, 256 MiB): {:?}",
        t.elapsed()
    );
    assert_eq!(
        std::fs::read(pa.join("hello")).expect("read on A"),
        b"written under REX-Ray",
        "data survived adoption"
    );
    let st = ba.status("rx-data");
    assert_eq!(st["adoption"], "adopted", "{st}");
    assert_eq!(st["fsType"], "ext4", "{st}");
    assert_eq!(st["sizeBytes"], 256u64 << 20, "{st}");
    let meta = c.run(
        HOST_B,
        &["rbd", "image-meta", "get", "rbd/rx-data", "berth.volume"],
    );
    assert!(meta.contains("\"rx-data\""), "{meta}");
    write_synced(&pa.join("from-a"), b"written on A");
    ba.unmount("rx-data", Some("ctr-a"));

    // B learnt rx-data as pending before; the cluster now says adopted.
    wait_for("B shows rx-data adopted", || {
        bb.list_names();
        bb.status("rx-data")["adoption"] == "adopted"
    });
    let pb = bb.mount("rx-data", Some("ctr-b"));
    assert_eq!(
        std::fs::read(pb.join("hello")).expect("B"),
        b"written under REX-Ray"
    );
    assert_eq!(
        std::fs::read(pb.join("from-a")).expect("B"),
        b"written on A"
    );
    assert_eq!(bb.status("rx-data")["adoption"], "adopted");

    // Preemption works as for Berth's volumes.
    let e = ba.err(
        "VolumeDriver.Mount",
        json!({"Name": "rx-data", "ID": "ctr-a2"}),
    );
    assert!(e.contains("host-b") && e.contains("preempt"), "{e}");
    reload(a, c, "host-a", true, false);
    let t = Instant::now();
    let pa = ba.mount("rx-data", Some("ctr-a2"));
    println!("preempt hand-over of an adopted volume: {:?}", t.elapsed());
    assert_eq!(
        std::fs::read(pa.join("from-a")).expect("A"),
        b"written on A"
    );
    bb.unmount("rx-data", Some("ctr-b"));
    ba.unmount("rx-data", Some("ctr-a2"));
    reload(a, c, "host-a", false, false);
}

/// rx-blank: never attached under REX-Ray; the first mount makes the
/// service's default filesystem, and B then mounts that one.
fn adopt_blank(a: &Daemon, b: &Daemon) {
    let (ba, bb) = (a.client("block"), b.client("block"));
    let t = Instant::now();
    let pa = ba.mount("rx-blank", None);
    println!(
        "first mount of a blank adopted image (mkfs.ext4, 256 MiB): {:?}",
        t.elapsed()
    );
    write_synced(&pa.join("f"), b"first data");
    let st = ba.status("rx-blank");
    assert_eq!(
        (st["adoption"].clone(), st["fsType"].clone()),
        (json!("adopted"), json!("ext4"))
    );
    ba.unmount("rx-blank", None);
    let pb = bb.mount("rx-blank", None);
    assert_eq!(std::fs::read(pb.join("f")).expect("B"), b"first data");
    bb.unmount("rx-blank", None);
}

/// An image a Berth create is making (marked at once) is never adopted,
/// though a List may show it for that moment; a Berth create of a name
/// works as before next to adopted images.
fn berth_creates_are_not_adopted(c: &CephCluster, a: &Daemon) {
    let ba = a.client("block");
    c.run(
        HOST_B,
        &[
            "sh",
            "-c",
            "rbd create --image-feature layering --size 64M rbd/in-the-making && \
              rbd image-meta set rbd/in-the-making berth.creating some-id",
        ],
    );
    let e = ba.err("VolumeDriver.Mount", json!({"Name": "in-the-making"}));
    assert!(e.contains("Berth create"), "{e}");
    let meta = c.run(HOST_B, &["rbd", "image-meta", "list", "rbd/in-the-making"]);
    assert!(!meta.contains("berth.volume"), "adopted: {meta}");
    c.run(HOST_B, &["rbd", "rm", "--no-progress", "rbd/in-the-making"]);
    ba.create("made-by-berth", &[("size", "64M")]);
    let st = ba.status("made-by-berth");
    assert!(st.get("adoption").is_none(), "{st}");
    let meta = c.run(HOST_B, &["rbd", "image-meta", "list", "rbd/made-by-berth"]);
    assert!(
        meta.contains("berth.creating") && meta.contains("berth.volume"),
        "{meta}"
    );
    ba.remove("made-by-berth");
}

/// `remove.disable` holds for adopted volumes and pending ones alike;
/// without it, a pending image is removed like any volume.
fn remove_obeys_disable(c: &CephCluster, a: &Daemon) {
    let ba = a.client("block");
    reload(a, c, "host-a", false, true);
    ba.remove("rx-blank");
    ba.remove("rx-n00");
    let images = c.run(HOST_B, &["rbd", "ls", "rbd"]);
    assert!(
        images.contains("rx-blank") && images.contains("rx-n00"),
        "{images}"
    );
    let names = ba.list_names();
    assert!(names.contains(&"rx-blank".to_string()) && names.contains(&"rx-n00".to_string()));
    reload(a, c, "host-a", false, false);
    ba.remove("rx-n00");
    let images = c.run(HOST_B, &["rbd", "ls", "rbd"]);
    assert!(!images.lines().any(|l| l == "rx-n00"), "{images}");
    wait_for("rx-n00 unlisted", || {
        !ba.list_names().contains(&"rx-n00".to_string())
    });
}

fn write_synced(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .expect("fsync");
}
