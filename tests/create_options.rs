//! Every create option, honoured for real: each test starts `berthd` with
//! a private config and state, talks the plugin API over its socket, and
//! checks the result on the real filesystem (blkid, statvfs, stat, file
//! contents). Needs root (loop devices, mkfs, mount): every test is named
//! `root_…`; without root each prints `SKIPPED (needs root)` and passes.
//!
//! Snapshots and clones are in `snapshots.rs`, resize in `resize.rs`.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::blkid_type;
use common::loopfs::*;
use serde_json::json;

#[test]
fn root_size_and_filesystems_are_real() {
    if !can_run("root_size_and_filesystems_are_real") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    api.create("e", &[("size", "200M")]);
    api.create("x", &[("FSTYPE", "xfs"), ("size", "0.5")]);
    api.create("b", &[("NewFsType", "btrfs"), ("Size", "300M")]);
    api.create("g", &[]); // the configured default size
    assert_eq!(blkid_type(&image(&d, "e")), "ext4");
    assert_eq!(blkid_type(&image(&d, "x")), "xfs");
    assert_eq!(blkid_type(&image(&d, "b")), "btrfs");
    assert_eq!(fs::metadata(image(&d, "x")).expect("img").len(), 512 << 20);
    assert_eq!(fs::metadata(image(&d, "g")).expect("img").len(), 200 << 20);
    assert_eq!(api.status("x")["fsType"], json!("xfs"));
    assert_eq!(api.status("x")["size"], json!(0.5));
    for (v, fs_name, size) in [
        ("e", "ext4", 200u64 << 20),
        ("x", "xfs", 512 << 20),
        ("b", "btrfs", 300 << 20),
    ] {
        let p = api.mount(v, Some("c1"));
        let root = p.parent().expect("root").to_path_buf();
        assert_eq!(mount_fs_type(&root), fs_name, "{v}");
        let total = fs_total(&p);
        assert!(
            total <= size && total > size / 2,
            "{v}: filesystem of {total} bytes for a {size}-byte volume"
        );
        api.unmount(v, Some("c1"));
    }
    // The filesystem enforces the size: writing past it fails.
    let p = api.mount("e", Some("c1"));
    let mut f = fs::File::create(p.join("fill")).expect("create");
    let chunk = vec![1u8; 4 << 20];
    let mut written = 0u64;
    let full = loop {
        match f.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(written <= 200 << 20, "wrote past the volume size");
    };
    assert_eq!(full.raw_os_error(), Some(libc::ENOSPC), "{full}");
    drop(f);
    api.unmount("e", Some("c1"));
}

#[test]
fn root_overwritefs_decides_about_an_existing_filesystem() {
    if !can_run("root_overwritefs_decides_about_an_existing_filesystem") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    fs::create_dir_all(d.image_dir(SERVICE)).expect("mkdir");
    // Two images an operator put in place, each holding ext4 with a file.
    for n in ["keep", "wipe"] {
        let img = image(&d, n);
        fs::File::create(&img)
            .and_then(|f| f.set_len(320 << 20))
            .expect("image");
        run_ok("mkfs.ext4", &["-q", "-F", &s(&img)]);
        let mnt = d.dir.path().join(format!("seed-{n}"));
        fs::create_dir(&mnt).expect("mkdir");
        let att = berth::sys::loopdev::attach(&img).expect("attach");
        berth::sys::mounts::mount(att.path(), &mnt, "ext4", "").expect("mount");
        drop(att);
        fs::create_dir(mnt.join("data")).expect("mkdir");
        fs::write(mnt.join("data/precious"), b"keep me").expect("write");
        berth::sys::mounts::unmount(&mnt).expect("unmount");
    }
    // Without overwritefs the filesystem (and the data) stay.
    api.create("keep", &[("fsType", "xfs")]);
    assert_eq!(blkid_type(&image(&d, "keep")), "ext4");
    assert_eq!(api.status("keep")["fsType"], json!("ext4"));
    let p = api.mount("keep", Some("c"));
    assert_eq!(fs::read(p.join("precious")).expect("read"), b"keep me");
    api.unmount("keep", Some("c"));
    // With overwritefs=true it is reformatted as asked.
    api.create("wipe", &[("fsType", "xfs"), ("OVERWRITEFS", "true")]);
    assert_eq!(blkid_type(&image(&d, "wipe")), "xfs");
    let p = api.mount("wipe", Some("c"));
    assert!(!p.join("precious").exists());
    api.unmount("wipe", Some("c"));
}

#[test]
fn root_ownership_and_mode_of_the_data_directory() {
    if !can_run("root_ownership_and_mode_of_the_data_directory") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    api.create("o", &[("UID", "1000"), ("gid", "1001"), ("Mode", "0750")]);
    let p = api.mount("o", Some("c"));
    let md = fs::metadata(&p).expect("stat");
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (1000, 1001, 0o750)
    );
    let st = api.status("o");
    assert_eq!(
        (
            st["dataUid"].clone(),
            st["dataGid"].clone(),
            st["dataMode"].clone()
        ),
        (json!(1000), json!(1001), json!("0750"))
    );
    api.unmount("o", Some("c"));
    // A copy asked for other owners gets them at its first mount.
    api.create(
        "o2",
        &[("volumeName", "o"), ("uid", "2000"), ("mode", "0700")],
    );
    let p = api.mount("o2", Some("c"));
    let md = fs::metadata(&p).expect("stat");
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (2000, 0, 0o700)
    );
    api.unmount("o2", Some("c"));
}

#[test]
fn root_iops_and_availability_zone_are_recorded() {
    if !can_run("root_iops_and_availability_zone_are_recorded") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    api.create("z", &[("IOPS", "150"), ("AvailabilityZone", "rack-1")]);
    let st = api.status("z");
    assert_eq!(st["iops"], json!(150));
    assert_eq!(st["availabilityZone"], json!("rack-1"));
    assert_eq!(st["type"], json!("default"));
}

#[test]
fn root_bad_values_of_every_option_create_nothing() {
    if !can_run("root_bad_values_of_every_option_create_nothing") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    api.create("src", &[]);
    let cases: &[(&str, &str, &str)] = &[
        ("size", "0", "size"),
        ("size", "lots", "size"),
        ("size", "-2", "size"),
        ("fsType", "zfs", "fsType"),
        ("newfstype", "ntfs", "newfstype"),
        ("overwritefs", "maybe", "overwritefs"),
        ("volumeName", "nope", "volumeName"),
        ("volumeName", "../etc", "volumeName"),
        ("volumeID", "feedbeef", "volumeID"),
        ("snapshotName", "nope", "snapshotName"),
        ("snapshotID", "feedbeef", "snapshotID"),
        ("iops", "-1", "iops"),
        ("iops", "fast", "iops"),
        ("availabilityZone", "a\nb", "availabilityZone"),
        ("uid", "root", "uid"),
        ("gid", "-1", "gid"),
        ("mode", "0999", "mode"),
        ("encrypted", "true", "encrypted"),
        ("bogus", "1", "bogus"),
    ];
    for (k, v, needle) in cases {
        let e = api.create_err("bad", &[(k, v)]);
        assert!(e.contains(needle), "{k}={v:?}: {e}");
    }
    for (pairs, needle) in [
        (vec![("fsType", "xfs"), ("size", "100M")], "too small"),
        (vec![("fsType", "xfs")], "too small"), // the 200M default
        (
            vec![("volumeName", "src"), ("fsType", "xfs")],
            "keeps its source",
        ),
        (vec![("volumeName", "src"), ("size", "10M")], "smaller"),
        (
            vec![("volumeName", "src"), ("overwritefs", "true")],
            "overwritefs",
        ),
        (
            vec![("volumeName", "src"), ("snapshotName", "s")],
            "same thing",
        ),
    ] {
        let e = api.create_err("bad", &pairs);
        assert!(e.contains(needle), "{pairs:?}: {e}");
    }
    assert_eq!(api.list_names(), vec!["src".to_string()]);
    let images: Vec<String> = fs::read_dir(d.image_dir(SERVICE))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(images, vec!["src.img".to_string()]);
    let records: Vec<String> = fs::read_dir(d.records_dir(SERVICE))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(records, vec!["src.json".to_string()]);
}
