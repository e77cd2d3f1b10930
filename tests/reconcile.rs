//! What berthd repairs when it starts: mounts and counts kept across a
//! SIGKILL, records the kernel disagrees with, interrupted creates, temp
//! files, a freeze left by a crash in the middle of a snapshot. Needs root
//! (every test is named `root_…`); skips loudly otherwise.

mod common;

use common::{can_use_storage, is_mounted, loopfs, Daemon};
use serde_json::json;

fn image(d: &Daemon, name: &str) -> std::path::PathBuf {
    d.image_dir("berth").join(format!("{name}.img"))
}

#[test]
fn root_kill9_keeps_mounts_and_counts() {
    if !can_use_storage("root_kill9_keeps_mounts_and_counts") {
        return;
    }
    let mut d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("k", &[("size", "32M")]);
    let p = api.mount("k", Some("one"));
    api.mount("k", Some("two"));
    std::fs::write(p.join("data"), b"precious").expect("write");
    d.kill9();
    assert!(
        is_mounted(&d.mount_dir().join("k")),
        "SIGKILL must not unmount"
    );
    d.spawn();
    let api = d.client("berth");
    // (Get may be answered from the record while the state loads; the
    // log is complete once List, which needs every volume, is answered)
    let v = api.get("k");
    assert_eq!(v["Mountpoint"], p.to_string_lossy().as_ref());
    assert_eq!(v["Status"]["mountCount"], 2);
    api.list_names();
    let v = api.get("k");
    assert_eq!(v["Status"]["mountCount"], 2);
    assert!(
        d.log().contains("repairs=0"),
        "nothing to repair after a clean kill:\n{}",
        d.log()
    );
    api.unmount("k", Some("one"));
    assert!(is_mounted(&d.mount_dir().join("k")), "two still holds it");
    assert_eq!(std::fs::read(p.join("data")).expect("read"), b"precious");
    api.unmount("k", Some("two"));
    assert!(!is_mounted(&d.mount_dir().join("k")));
    api.remove("k");
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}

#[test]
fn root_reconcile_repairs_what_the_kernel_disagrees_with() {
    if !can_use_storage("root_reconcile_repairs_what_the_kernel_disagrees_with") {
        return;
    }
    let mut d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("gone", &[("size", "32M")]);
    api.create("orphan", &[("size", "32M")]);
    api.mount("gone", Some("a"));
    api.mount("orphan", Some("b"));
    d.stop();
    // 1. "gone" was unmounted behind Berth's back (or the host rebooted).
    let target = d.mount_dir().join("gone");
    nix::mount::umount2(&target, nix::mount::MntFlags::empty()).expect("umount by hand");
    // 2. "orphan" is mounted, but its record holds no user (as after a
    //    crash between mount and the record write).
    let rec_path = d.records_dir("berth").join("orphan.json");
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&rec_path).expect("read")).expect("json");
    rec["mounts"] = json!({});
    std::fs::write(&rec_path, serde_json::to_vec(&rec).expect("encode")).expect("write");
    // 3. An interrupted create: a record in phase "creating" and its image.
    let mut rec2 = rec.clone();
    rec2["name"] = json!("halfmade");
    rec2["phase"] = json!("creating");
    rec2["mounted"] = json!(null);
    rec2["driver_data"] = json!({});
    std::fs::write(
        d.records_dir("berth").join("halfmade.json"),
        serde_json::to_vec(&rec2).expect("encode"),
    )
    .expect("write");
    std::fs::write(image(&d, "halfmade"), b"partial").expect("write");
    // 4. A leftover temp file of an interrupted record write.
    std::fs::write(d.records_dir("berth").join(".gone.json.tmp"), b"{").expect("write");

    d.spawn();
    let api = d.client("berth");
    // Get answers from the record as reconciliation will (it may come
    // first); List waits for reconciliation.
    assert_eq!(api.get("gone")["Status"]["mountCount"], 0, "{}", d.log());
    api.list_names();
    let log = d.log();
    assert_eq!(api.get("gone")["Mountpoint"], "");
    assert!(log.contains("mount counts are reset"), "{log}");
    assert!(!is_mounted(&d.mount_dir().join("orphan")), "{log}");
    assert!(log.contains("no user"), "{log}");
    assert!(api
        .err("VolumeDriver.Get", json!({"Name": "halfmade"}))
        .contains("not found"));
    assert!(!image(&d, "halfmade").exists());
    assert!(!d.records_dir("berth").join("halfmade.json").exists());
    assert!(!d.records_dir("berth").join(".gone.json.tmp").exists());
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    // Docker's late Unmount for the reset volume is still answered.
    api.unmount("gone", Some("a"));
    api.remove("gone");
    api.remove("orphan");
}

#[test]
fn root_a_freeze_left_by_a_crash_is_thawed_at_start() {
    if !loopfs::can_run("root_a_freeze_left_by_a_crash_is_thawed_at_start") {
        return;
    }
    let mut d = loopfs::start();
    let api = d.client(loopfs::SERVICE);
    api.create("f", &[]);
    let p = api.mount("f", Some("c"));
    let root = p.parent().expect("root").to_path_buf();
    // As if berthd died between FIFREEZE and FITHAW.
    loopfs::run_ok("fsfreeze", &["--freeze", &loopfs::s(&root)]);
    d.restart();
    // List, which needs every volume, waits for reconciliation.
    api.list_names();
    let out = std::process::Command::new("fsfreeze")
        .args(["--unfreeze", &loopfs::s(&root)])
        .output()
        .expect("fsfreeze");
    assert!(
        !out.status.success(),
        "the volume was still frozen after a restart"
    );
    assert!(d.log().contains("thawed it"), "{}", d.log());
    std::fs::write(p.join("w"), b"writable").expect("write");
    api.unmount("f", Some("c"));
}

#[test]
fn root_start_from_the_index_reconciles_mounts_with_the_kernel() {
    if !can_use_storage("root_start_from_the_index_reconciles_mounts_with_the_kernel") {
        return;
    }
    let mut d = Daemon::builder().start();
    let api = d.client("berth");
    api.create("rebooted", &[("size", "32M")]);
    api.create("kept", &[("size", "32M")]);
    api.create("idle", &[("size", "32M")]);
    api.mount("rebooted", Some("a"));
    let kept = api.mount("kept", Some("b"));
    d.stop();
    let index = d
        .records_dir("berth")
        .parent()
        .expect("records")
        .join("berth.index");
    assert!(index.exists(), "a clean stop writes the index");
    // "rebooted" lost its mount behind Berth's back (as in a reboot).
    let target = d.mount_dir().join("rebooted");
    nix::mount::umount2(&target, nix::mount::MntFlags::empty()).expect("umount by hand");
    d.spawn();
    let api = d.client("berth");
    assert_eq!(api.list_names().len(), 3);
    let log = d.log();
    assert!(log.contains("loaded from the state index"), "{log}");
    assert_eq!(api.get("rebooted")["Mountpoint"], "");
    assert_eq!(api.get("rebooted")["Status"]["mountCount"], 0);
    assert!(log.contains("mount counts are reset"), "{log}");
    assert_eq!(
        api.get("kept")["Mountpoint"],
        kept.to_string_lossy().as_ref()
    );
    assert!(is_mounted(&d.mount_dir().join("kept")));
    assert!(
        !target.exists(),
        "the empty mount point of an idle volume is removed"
    );
    // A crash after changes: the index is stale, every record is read.
    api.create("late", &[("size", "32M")]);
    api.mount("rebooted", Some("c"));
    d.kill9();
    d.spawn();
    let api = d.client("berth");
    assert_eq!(api.list_names().len(), 4);
    let log = d.log();
    assert!(
        log.contains("state index ignored") && log.contains("stale"),
        "{log}"
    );
    assert_eq!(api.get("rebooted")["Status"]["mountCount"], 1);
    for (v, id) in [("rebooted", "c"), ("kept", "b")] {
        api.unmount(v, Some(id));
    }
    for v in ["rebooted", "kept", "idle", "late"] {
        api.remove(v);
    }
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}
