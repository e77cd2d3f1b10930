//! `berth volume import NAME PATH`: an existing filesystem image file
//! becomes a loop volume, its data and filesystem kept; what cannot be
//! adopted is refused with the reason and left where it was.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::Daemon;

fn berth(sock: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--socket")
        .arg(sock)
        .args(args)
        .output()
        .expect("run berth")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn root_an_image_file_is_adopted_and_other_things_are_refused() {
    let name = "root_an_image_file_is_adopted_and_other_things_are_refused";
    if !common::can_use_storage(name) || !common::which("mkfs.ext4") {
        eprintln!("SKIPPED (needs root and mkfs.ext4): {name}");
        return;
    }
    let mut d = Daemon::builder().start();
    let sock = d.socket("berth");
    let work = d.dir.path().join("old");
    std::fs::create_dir_all(work.join("tree/data")).expect("mkdir");
    std::fs::write(work.join("tree/data/hello"), b"kept\n").expect("write");
    let img = work.join("old.img");
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(work.join("tree"))
        .arg(&img)
        .arg("64M")
        .status()
        .expect("mkfs.ext4");
    assert!(made.success());

    let out = berth(
        &sock,
        &["volume", "import", "old", img.to_str().expect("utf-8")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "old\n");
    assert!(!img.exists(), "the file was moved, not copied");
    assert!(d.image_dir("berth").join("old.img").exists());
    let api = d.client("berth");
    let st = api.status("old");
    assert_eq!(st["fsType"], "ext4", "{st}");
    assert_eq!(st["sizeBytes"], 64 << 20, "{st}");
    let path = api.mount("old", Some("m1"));
    assert_eq!(std::fs::read(path.join("hello")).expect("read"), b"kept\n");
    api.unmount("old", Some("m1"));

    // A directory: a clear refusal, nothing moved.
    let out = berth(
        &sock,
        &[
            "volume",
            "import",
            "d1",
            work.join("tree").to_str().expect("utf-8"),
        ],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is a directory; import adopts a filesystem image file"),
        "{err}"
    );
    assert!(work.join("tree/data/hello").exists());

    // A file without a filesystem is never formatted.
    let blank = work.join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).expect("write");
    let out = berth(
        &sock,
        &["volume", "import", "b1", blank.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("holds no filesystem Berth can find"), "{err}");
    assert!(blank.exists() && std::fs::read(&blank).expect("read").iter().all(|b| *b == 0));

    // The name of an existing volume.
    let out = berth(
        &sock,
        &["volume", "import", "old", blank.to_str().expect("utf-8")],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a volume of that name exists"),
        "{}",
        text(&out.stderr)
    );
    assert!(api.list_names().iter().all(|n| n != "d1" && n != "b1"));

    api.remove("old");
    d.stop();
    assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
}
