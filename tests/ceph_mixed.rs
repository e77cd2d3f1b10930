//! A rolling upgrade of a Ceph cluster's hosts: host A runs the berthd
//! that wrote `tests/fixtures/v1` (built once from that commit with the
//! `ceph` feature, `tests/upgrade/old-berthd.sh`), host B runs this build,
//! both on the same rbd and cephfs services. Each sees, mounts and keeps
//! the data of the volumes the other made; a volume removed by the new
//! host disappears from the old one; then A is upgraded in place with a
//! volume mounted, and the new berthd on A keeps the mount and unmounts
//! it cleanly.
//!
//! `cargo test --features ceph --test ceph_mixed` (root, Ceph daemons).
#![cfg(feature = "ceph")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ceph::{CephCluster, HOST_A, HOST_B};
use common::{Api, Daemon};
use serde_json::json;

const TEST: &str = "root_old_and_new_berthd_share_ceph_volumes";

/// A cephfs service `shared` and an rbd service `block` (the same
/// configuration keys in both versions).
fn host_config(c: &CephCluster, host: &str) -> String {
    let ceph = |extra: &str| {
        format!(
            "conf = \"{}\"\nkeyring = \"{}\"\nhost = \"{host}\"\ntimeout = \"20s\"\n{extra}",
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

/// Waits (up to 10 s: the catalog reuse window of both versions is about
/// one second) until `api`'s List does or does not show `name`.
fn listed_within(api: &Api, name: &str, want: bool) -> Duration {
    let t = Instant::now();
    loop {
        if api.list_names().iter().any(|n| n == name) == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name} {} in the list after 10 s",
            if want { "still not" } else { "still" }
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(mp: &Path, file: &str, text: &str) {
    std::fs::write(mp.join(file), text).expect("write");
}

fn read(mp: &Path, file: &str) -> String {
    std::fs::read_to_string(mp.join(file)).expect("read")
}

/// One service: volumes made by either version are served by the other.
fn both_ways(service: &str, old: &Daemon, new: &Daemon) {
    let (a, b) = (old.client(service), new.client(service));
    let (made_old, made_new) = (format!("old-{service}"), format!("new-{service}"));

    a.create(&made_old, &[("size", "64M")]);
    let mp = a.mount(&made_old, Some("a1"));
    write(&mp, "from-old", "written by the old berthd");
    a.unmount(&made_old, Some("a1"));

    // The new host finds it by name (Docker's Get before a Mount).
    assert_eq!(b.get(&made_old)["Name"], json!(made_old));
    assert_eq!(b.status(&made_old)["sizeBytes"], json!(64u64 << 20));
    let mp = b.mount(&made_old, Some("b1"));
    assert_eq!(read(&mp, "from-old"), "written by the old berthd");
    write(&mp, "from-new", "written by the new berthd");
    b.unmount(&made_old, Some("b1"));

    b.create(&made_new, &[("size", "32M")]);
    let mp = b.mount(&made_new, Some("b2"));
    write(&mp, "from-new", "made by the new berthd");
    b.unmount(&made_new, Some("b2"));
    let seen = listed_within(&a, &made_new, true);
    println!("{TEST}: {service}: the old host lists a volume the new one made after {seen:?}");
    assert_eq!(a.status(&made_new)["sizeBytes"], json!(32u64 << 20));
    let mp = a.mount(&made_new, Some("a2"));
    assert_eq!(read(&mp, "from-new"), "made by the new berthd");
    a.unmount(&made_new, Some("a2"));
    let mp = a.mount(&made_old, Some("a3"));
    assert_eq!(read(&mp, "from-new"), "written by the new berthd");
    a.unmount(&made_old, Some("a3"));

    // Removed by the new host: gone from the old host's list too.
    b.remove(&made_new);
    let gone = listed_within(&a, &made_new, false);
    println!("{TEST}: {service}: a remove by the new host left the old host's list after {gone:?}");
}

#[test]
fn root_old_and_new_berthd_share_ceph_volumes() {
    let Some(mut c) = CephCluster::start_or_skip(TEST) else {
        return;
    };
    let Some(old_bin) = common::old::berthd(TEST, "ceph") else {
        return;
    };
    let mut a = Daemon::builder()
        .netns(HOST_A)
        .binary(&old_bin)
        .service_toml(&host_config(&c, "host-a"))
        .envs(c.env())
        .start();
    let mut b = Daemon::builder()
        .netns(HOST_B)
        .service_toml(&host_config(&c, "host-b"))
        .envs(c.env())
        .start();
    c.add_mount_root(&a.mount_dir());
    c.add_mount_root(&b.mount_dir());

    both_ways("block", &a, &b);
    both_ways("shared", &a, &b);

    // Upgrade A in place with an rbd volume mounted (a running container).
    let api = a.client("block");
    let mp = api.mount("old-block", Some("kept"));
    write(&mp, "during", "written before the upgrade");
    let target = a.mount_dir().join("old-block");
    a.stop();
    assert!(common::is_mounted(&target), "a stop leaves mounts in place");
    a.bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_berthd"));
    a.spawn();
    let api = a.client("block");
    assert_eq!(api.status("old-block")["mountCount"], json!(1));
    assert_eq!(read(&mp, "during"), "written before the upgrade");
    api.unmount("old-block", Some("kept"));
    assert!(!common::is_mounted(&target), "the new berthd unmounts");
    // Both hosts now run the new build: a volume made by the old one is
    // removed cleanly.
    for svc in ["block", "shared"] {
        a.client(svc).remove(&format!("old-{svc}"));
        listed_within(&b.client(svc), &format!("old-{svc}"), false);
    }

    a.stop();
    b.stop();
    let left: Vec<String> = a.leftovers().into_iter().chain(b.leftovers()).collect();
    assert!(left.is_empty(), "left behind by the daemons: {left:?}");
    c.stop();
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind by the cluster: {left:?}");
}
