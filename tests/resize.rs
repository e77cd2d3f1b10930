//! Resize of loop volumes, for real: image, loop device and filesystem
//! (ext4, xfs, btrfs; mounted and unmounted) grow; shrinking is refused.
//! Needs root (every test is named `root_…`); skips loudly otherwise.

mod common;

use std::fs;

use common::loopfs::*;
use serde_json::json;

#[test]
fn root_resize_grows_image_device_and_filesystem() {
    if !can_run("root_resize_grows_image_device_and_filesystem") {
        return;
    }
    let d = start();
    let api = d.client(SERVICE);
    // ext4, unmounted: e2fsck + resize2fs on the image.
    api.create("e", &[("size", "200M")]);
    let p = api.mount("e", Some("w"));
    fs::write(p.join("f"), b"kept").expect("write");
    api.unmount("e", Some("w"));
    let r = api.ok("Berth.VolumeResize", json!({"Name": "e", "Size": "400M"}));
    assert_eq!(r["SizeBytes"], json!(400u64 << 20));
    assert_eq!(fs::metadata(image(&d, "e")).expect("img").len(), 400 << 20);
    assert_eq!(api.status("e")["sizeBytes"], json!(400u64 << 20));
    let p = api.mount("e", Some("w"));
    assert!(fs_total(&p) > 300 << 20, "ext4 grew");
    assert_eq!(fs::read(p.join("f")).expect("read"), b"kept");
    // ext4, mounted: works with CAP_SYS_RESOURCE, else a clear refusal.
    let has_cap = berth::sys::caps::has_effective(berth::sys::caps::CAP_SYS_RESOURCE);
    if has_cap == Some(false) {
        let e = api.err("Berth.VolumeResize", json!({"Name": "e", "Size": "500M"}));
        assert!(
            e.contains("CAP_SYS_RESOURCE") && e.contains("unmount"),
            "{e}"
        );
        assert_eq!(fs::metadata(image(&d, "e")).expect("img").len(), 400 << 20);
    } else {
        api.ok("Berth.VolumeResize", json!({"Name": "e", "Size": "500M"}));
        assert!(fs_total(&p) > 400 << 20);
    }
    api.unmount("e", Some("w"));
    // Shrinking is refused, and so is a bad size.
    let e = api.err("Berth.VolumeResize", json!({"Name": "e", "Size": "100M"}));
    assert!(e.contains("cannot shrink"), "{e}");
    let e = api.err("Berth.VolumeResize", json!({"Name": "e", "Size": "big"}));
    assert!(e.contains("size"), "{e}");
    // xfs, mounted: grows online.
    api.create("x", &[("fsType", "xfs"), ("size", "320M")]);
    let p = api.mount("x", Some("w"));
    fs::write(p.join("f"), b"xfs data").expect("write");
    let before = fs_total(&p);
    api.ok("Berth.VolumeResize", json!({"Name": "x", "Size": "1"}));
    let after = fs_total(&p);
    assert!(
        after > before + (500 << 20),
        "xfs grew online: {before} → {after}"
    );
    assert_eq!(fs::read(p.join("f")).expect("read"), b"xfs data");
    api.unmount("x", Some("w"));
    // btrfs, unmounted: grown through a private temporary mount.
    api.create("b", &[("fsType", "btrfs"), ("size", "300M")]);
    api.ok("Berth.VolumeResize", json!({"Name": "b", "Size": "600M"}));
    let p = api.mount("b", Some("w"));
    assert!(fs_total(&p) > 450 << 20, "btrfs grew");
    api.unmount("b", Some("w"));
    // No temporary mount point is left behind.
    let leftovers: Vec<_> = fs::read_dir(d.image_dir(SERVICE))
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".berth"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
