//! Real volumes: sparse images, mkfs, loop devices and mounts, driven
//! through a real berthd over its socket. Needs root; skips loudly
//! otherwise.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{blkid_type, can_use_storage, is_mounted, Daemon};
use serde_json::json;

fn image(d: &Daemon, name: &str) -> std::path::PathBuf {
    d.image_dir("berth").join(format!("{name}.img"))
}

#[test]
fn root_lifecycle_ext4_with_status_and_size_enforced() {
    if !can_use_storage("root_lifecycle_ext4_with_status_and_size_enforced") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("v1", &[("size", "64M")]);
    assert!(image(&d, "v1").exists());
    assert_eq!(blkid_type(&image(&d, "v1")), "ext4");
    let vol = api.get("v1");
    assert_eq!(vol["Mountpoint"], "", "not mounted yet");
    assert!(vol["CreatedAt"].as_str().expect("CreatedAt").ends_with('Z'));
    let st = &vol["Status"];
    for k in [
        "name",
        "size",
        "iops",
        "type",
        "availabilityZone",
        "service",
        "server",
        "fields",
        "fsType",
    ] {
        assert!(st.get(k).is_some(), "Status lacks {k}: {st}");
    }
    assert_eq!(st["service"], "berth");
    assert_eq!(st["fsType"], "ext4");
    assert_eq!(st["sizeBytes"], 64 << 20);

    let id = "a".repeat(64);
    let p = api.mount("v1", Some(&id));
    assert_eq!(p, d.mount_dir().join("v1/data"));
    assert!(is_mounted(&d.mount_dir().join("v1")));
    assert_eq!(api.get("v1")["Mountpoint"], p.to_string_lossy().as_ref());
    assert_eq!(
        api.ok("VolumeDriver.Path", json!({"Name": "v1"}))["Mountpoint"],
        p.to_string_lossy().as_ref()
    );
    // The filesystem enforces the size: 100 MiB do not fit in 64 MiB.
    let big = vec![7u8; 1 << 20];
    let mut f = std::fs::File::create(p.join("fill")).expect("create file");
    let mut written = 0usize;
    let mut full = false;
    for _ in 0..100 {
        use std::io::Write;
        match f.write_all(&big) {
            Ok(()) => written += 1,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                full = true;
                break;
            }
        }
    }
    drop(f);
    assert!(full, "wrote {written} MiB into a 64 MiB volume");
    std::fs::remove_file(p.join("fill")).expect("rm");
    std::fs::write(p.join("hello"), b"kept").expect("write");
    let st = api.get("v1")["Status"].clone();
    assert_eq!(st["mounted"], true);
    assert!(st["freeBytes"].as_u64().expect("freeBytes") > 0);

    api.unmount("v1", Some(&id));
    assert!(!is_mounted(&d.mount_dir().join("v1")));
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    assert_eq!(
        api.ok("VolumeDriver.Path", json!({"Name": "v1"}))["Mountpoint"],
        ""
    );
    // Data survives unmount + mount.
    let p = api.mount("v1", None);
    assert_eq!(std::fs::read(p.join("hello")).expect("read"), b"kept");
    api.unmount("v1", None);
    api.remove("v1");
    assert!(!image(&d, "v1").exists());
    assert!(!d.records_dir("berth").join("v1.json").exists());
    assert!(api.list_names().is_empty());
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_xfs_and_btrfs_are_real() {
    if !can_use_storage("root_xfs_and_btrfs_are_real") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    let mut kinds = vec![];
    if common::which("mkfs.xfs") {
        kinds.push("xfs");
    } else {
        eprintln!("SKIPPED part: mkfs.xfs missing");
    }
    if common::which("mkfs.btrfs") {
        kinds.push("btrfs");
    } else {
        eprintln!("SKIPPED part: mkfs.btrfs missing");
    }
    for fs in kinds {
        let name = format!("v-{fs}");
        api.create(&name, &[("size", "512M"), ("fsType", fs)]);
        assert_eq!(blkid_type(&image(&d, &name)), fs);
        let p = api.mount(&name, Some("x"));
        let mi = berth::sys::mounts::MountTable::read().expect("mountinfo");
        let m = mi.at(&d.mount_dir().join(&name)).expect("mounted");
        assert_eq!(m.fs_type, fs);
        std::fs::write(p.join("f"), b"x").expect("write");
        api.unmount(&name, Some("x"));
        api.remove(&name);
    }
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_mount_ids_are_a_multiset_and_shared_volume_stays_mounted() {
    if !can_use_storage("root_mount_ids_are_a_multiset_and_shared_volume_stays_mounted") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("shared", &[("size", "32M")]);
    let target = d.mount_dir().join("shared");
    api.mount("shared", Some("c1"));
    api.mount("shared", Some("c2"));
    api.mount("shared", Some("c1")); // docker cp on c1
    api.unmount("shared", Some("c1"));
    api.unmount("shared", Some("c1"));
    assert!(is_mounted(&target), "c2 still uses it");
    let e = api.err("VolumeDriver.Remove", json!({"Name": "shared"}));
    assert!(e.contains("shared") && e.contains("c2"), "{e}");
    api.unmount("shared", Some("c2"));
    assert!(!is_mounted(&target));
    api.remove("shared");
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_failed_mkfs_leaves_nothing() {
    if !can_use_storage("root_failed_mkfs_leaves_nothing") {
        return;
    }
    let fake = tempfile::tempdir().expect("tempdir");
    let tool = fake.path().join("mkfs.ext4");
    std::fs::write(
        &tool,
        "#!/bin/sh\necho 'mkfs.ext4: injected failure' >&2\nexit 1\n",
    )
    .expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = Daemon::builder().env("PATH", &path).start();
    let api = d.client("berth");
    let e = api.err(
        "VolumeDriver.Create",
        json!({"Name": "nofs", "Opts": {"size": "32M"}}),
    );
    assert!(
        e.contains("nofs") && e.contains("mkfs.ext4") && e.contains("injected failure"),
        "{e}"
    );
    assert!(!image(&d, "nofs").exists(), "image rolled back");
    assert!(
        !d.records_dir("berth").join("nofs.json").exists(),
        "record rolled back"
    );
    assert!(api.list_names().is_empty());
    // Implicit create on Mount fails the same clean way.
    let e = api.err("VolumeDriver.Mount", json!({"Name": "nofs2", "ID": "x"}));
    assert!(e.contains("injected failure"), "{e}");
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_failed_mount_leaks_no_loop_device() {
    if !can_use_storage("root_failed_mount_leaks_no_loop_device") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("broken", &[("size", "32M")]);
    // Wipe the superblock region: the kernel will refuse to mount it.
    let img = image(&d, "broken");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .expect("open");
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0u8; 1 << 20], 0).expect("wipe");
    f.sync_all().expect("sync");
    drop(f);
    let e = api.err("VolumeDriver.Mount", json!({"Name": "broken", "ID": "x"}));
    assert!(e.contains("broken") && e.contains("mount"), "{e}");
    assert_eq!(api.get("broken")["Status"]["mountCount"], 0);
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    api.remove("broken");
}

#[test]
fn root_ownership_mode_and_policies() {
    if !can_use_storage("root_ownership_mode_and_policies") {
        return;
    }
    let d = Daemon::builder().service_toml(
        "[services.berth]\ndriver = \"loop\"\n[services.berth.volume.remove]\nforce = true\n[services.berth.volume.data]\nmode = \"0700\"\n",
    ).start();
    let api = d.client("berth");
    api.create(
        "owned",
        &[
            ("size", "32M"),
            ("uid", "1000"),
            ("gid", "1001"),
            ("mode", "0750"),
        ],
    );
    let p = api.mount("owned", Some("x"));
    let m = std::fs::metadata(&p).expect("stat");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o750));
    // Config default applies when no option is given.
    let p2 = api.mount("implicit", Some("y"));
    assert_eq!(std::fs::metadata(&p2).expect("stat").mode() & 0o7777, 0o700);
    // remove.force unmounts a volume in use.
    api.remove("owned");
    api.remove("implicit");
    assert!(api.list_names().is_empty());
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    assert!(!Path::new(&p).exists());
}

#[test]
fn root_parallel_operations() {
    if !can_use_storage("root_parallel_operations") {
        return;
    }
    let d = Daemon::builder().start();
    let sock = d.socket("berth");
    std::thread::scope(|s| {
        for i in 0..6 {
            let sock = sock.clone();
            s.spawn(move || {
                let api = common::Api {
                    client: berth::client::PluginClient::new(
                        sock,
                        std::time::Duration::from_secs(120),
                    ),
                };
                let name = format!("par{i}");
                api.create(&name, &[("size", "32M")]);
                for j in 0..3 {
                    api.mount(&name, Some(&format!("id{j}")));
                }
                for j in 0..3 {
                    api.unmount(&name, Some(&format!("id{j}")));
                }
                api.remove(&name);
            });
        }
        // Many users of one volume at once.
        let api = d.client("berth");
        api.create("hot", &[("size", "32M")]);
        let mut hs = Vec::new();
        for j in 0..12 {
            let sock = sock.clone();
            hs.push(s.spawn(move || {
                let api = common::Api {
                    client: berth::client::PluginClient::new(
                        sock,
                        std::time::Duration::from_secs(120),
                    ),
                };
                api.mount("hot", Some(&format!("c{}", j % 4)));
            }));
        }
        for h in hs {
            h.join().expect("mount thread");
        }
        assert_eq!(api.get("hot")["Status"]["mountCount"], 12);
    });
    let api = d.client("berth");
    for j in 0..12 {
        api.unmount("hot", Some(&format!("c{}", j % 4)));
    }
    assert_eq!(api.get("hot")["Status"]["mountCount"], 0);
    api.remove("hot");
    assert!(api.list_names().is_empty());
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_adopted_image_is_kept_and_never_deleted_by_recovery() {
    if !can_use_storage("root_adopted_image_is_kept_and_never_deleted_by_recovery") {
        return;
    }
    let mut d = Daemon::builder().start();
    let api = d.client("berth");
    // An operator's image with a filesystem and data, put in place by hand.
    std::fs::create_dir_all(d.image_dir("berth")).expect("mkdir");
    let img = image(&d, "legacy");
    std::process::Command::new("truncate")
        .args(["-s", "64M"])
        .arg(&img)
        .status()
        .expect("truncate");
    let src = d.dir.path().join("seed");
    std::fs::create_dir_all(src.join("data")).expect("seed");
    std::fs::write(src.join("data/old.txt"), b"from before").expect("seed file");
    let ok = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&src)
        .arg(&img)
        .status()
        .expect("mkfs");
    assert!(ok.success());
    api.create("legacy", &[("size", "1")]);
    let p = api.mount("legacy", Some("x"));
    assert_eq!(
        std::fs::read(p.join("old.txt")).expect("adopted data"),
        b"from before"
    );
    assert_eq!(
        api.get("legacy")["Status"]["sizeBytes"],
        64 << 20,
        "the image keeps its size"
    );
    api.unmount("legacy", Some("x"));

    // A crash in the middle of adopting: the intent record marks the image
    // as pre-existing, so recovery gives it back untouched.
    d.stop();
    let rec_path = d.records_dir("berth").join("legacy.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).expect("read")).expect("json");
    rec["phase"] = json!("creating");
    rec["driver_data"] = json!({"berth.adopted": "true"});
    std::fs::write(&rec_path, serde_json::to_vec(&rec).expect("encode")).expect("write");
    d.spawn();
    let api = d.client("berth");
    assert!(api.list_names().is_empty(), "{}", d.log());
    assert!(
        img.exists(),
        "an adopted image must survive recovery:\n{}",
        d.log()
    );
    // And it can be adopted again.
    api.create("legacy", &[]);
    let p = api.mount("legacy", None);
    assert_eq!(
        std::fs::read(p.join("old.txt")).expect("data"),
        b"from before"
    );
    api.unmount("legacy", None);
    api.remove("legacy");
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_names_are_unique_across_berthd_processes() {
    if !can_use_storage("root_names_are_unique_across_berthd_processes") {
        return;
    }
    // One process per service, as the systemd template units run them.
    let mut a = Daemon::builder()
        .service_toml("[services.berth]\ndriver = \"loop\"\n[services.second]\ndriver = \"loop\"\n")
        .start();
    a.stop();
    let mut p1 = a.spawn_service("berth");
    let mut p2 = a.spawn_service("second");
    for s in ["berth", "second"] {
        a.wait_ready(s);
    }
    let one = a.client("berth");
    let two = a.client("second");
    one.create("dup", &[("size", "32M")]);
    let e = two.err(
        "VolumeDriver.Create",
        json!({"Name": "dup", "Opts": {"size": "32M"}}),
    );
    assert!(e.contains("dup") && e.contains("service berth"), "{e}");
    assert!(two.list_names().is_empty());
    one.remove("dup");
    two.create("dup", &[("size", "32M")]);
    two.remove("dup");
    for p in [&mut p1, &mut p2] {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = p.wait();
    }
    assert!(a.leftovers().is_empty(), "{:?}", a.leftovers());
}
