//! The hanging FUSE filesystem of tests/common/hangfs.rs: it serves files
//! well enough for loop images, holds requests while hung and fails them
//! once killed. Root only.

mod common;

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::hangfs::HangFs;
use wait_timeout::ChildExt;

/// True when the test may mount FUSE; else prints a loud SKIPPED line.
fn can_fuse(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let fuse = Path::new("/dev/fuse").exists();
    if root && fuse {
        return true;
    }
    eprintln!("SKIPPED (needs root and /dev/fuse): {test} [root={root} fuse={fuse}]");
    false
}

/// A backing directory and a mount point in one temporary directory.
fn setup() -> (tempfile::TempDir, HangFs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("backing");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&backing).expect("backing dir");
    fs::create_dir(&mnt).expect("mount point");
    let fs = HangFs::mount(&backing, &mnt).expect("mount hangfs");
    (dir, fs)
}

/// Runs `cmd args`, killing it after `limit`; its stdout on success.
fn run(cmd: &str, args: &[&str], limit: Duration) -> String {
    let mut child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    match child.wait_timeout(limit).expect("wait") {
        Some(status) => {
            let out = child.wait_with_output().expect("output");
            assert!(
                status.success(),
                "{cmd} {args:?}: {status}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd} {args:?} still running after {limit:?}");
        }
    }
}

/// Stats `path` from another thread; the answer arrives on the channel.
fn stat_in_thread(path: &Path) -> mpsc::Receiver<io::Result<fs::Metadata>> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(fs::metadata(&path));
    });
    rx
}

#[test]
fn root_hangfs_serves_files_and_loop_images() {
    let test = "root_hangfs_serves_files_and_loop_images";
    if !can_fuse(test) || !common::can_use_storage(test) {
        return;
    }
    if !common::which("losetup") {
        eprintln!("SKIPPED (needs losetup): {test}");
        return;
    }
    let (dir, hfs) = setup();
    let mnt = hfs.mountpoint().to_path_buf();

    // Plain files and directories, seen in the backing directory too.
    fs::write(mnt.join("hello"), b"hello, berth").expect("write");
    assert_eq!(fs::read(mnt.join("hello")).expect("read"), b"hello, berth");
    assert_eq!(
        fs::read(dir.path().join("backing/hello")).expect("read backing"),
        b"hello, berth"
    );
    fs::create_dir(mnt.join("d")).expect("mkdir");
    fs::rename(mnt.join("hello"), mnt.join("d/hello2")).expect("rename");
    let names: Vec<_> = fs::read_dir(mnt.join("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["hello2"]);
    fs::remove_file(mnt.join("d/hello2")).expect("unlink");
    fs::remove_dir(mnt.join("d")).expect("rmdir");

    // A sparse image, formatted and mounted through a loop device.
    let img = mnt.join("vol.img");
    let f = fs::File::create(&img).expect("create image");
    f.set_len(64 << 20).expect("set_len");
    f.sync_all().expect("fsync");
    drop(f);
    let meta = fs::metadata(&img).expect("stat image");
    assert_eq!(meta.len(), 64 << 20);
    let limit = Duration::from_secs(60);
    let img_s = img.to_str().expect("utf-8 path");
    run("mkfs.ext4", &["-q", "-F", img_s], limit);
    let dev = run("losetup", &["--find", "--show", img_s], limit);
    assert!(dev.starts_with("/dev/loop"), "losetup said {dev:?}");
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).expect("inner mount point");
    let inner_s = inner.to_str().expect("utf-8 path");
    let mounted = Command::new("mount")
        .args([&dev, inner_s])
        .status()
        .map(|s| s.success());
    let checked = mounted.as_ref().is_ok_and(|ok| *ok)
        && fs::write(inner.join("data"), b"on ext4 on fuse").is_ok()
        && fs::read(inner.join("data")).is_ok_and(|d| d == b"on ext4 on fuse");
    if mounted.is_ok_and(|ok| ok) {
        run("umount", &[inner_s], limit);
    }
    run("losetup", &["-d", &dev], limit);
    assert!(checked, "ext4 on {dev} over hangfs did not mount or serve");

    fs::rename(&img, mnt.join("vol2.img")).expect("rename image");
    fs::remove_file(mnt.join("vol2.img")).expect("unlink image");
}

#[test]
fn root_hangfs_hang_holds_requests_until_resume() {
    if !can_fuse("root_hangfs_hang_holds_requests_until_resume") {
        return;
    }
    let (_dir, hfs) = setup();
    let file = hfs.mountpoint().join("f");
    fs::write(&file, b"x").expect("write");

    hfs.hang();
    let rx = stat_in_thread(&file);
    match rx.recv_timeout(Duration::from_millis(500)) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("stat on a hung mount returned: {other:?}"),
    }
    hfs.resume();
    let meta = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stat returns after resume")
        .expect("stat succeeds after resume");
    assert_eq!(meta.len(), 1);
}

#[test]
fn root_hangfs_kill_fails_requests_with_enotconn() {
    if !can_fuse("root_hangfs_kill_fails_requests_with_enotconn") {
        return;
    }
    let (_dir, hfs) = setup();
    let file = hfs.mountpoint().join("f");
    fs::write(&file, b"x").expect("write");

    // A request held by a hang fails too when the helper dies.
    hfs.hang();
    let held = stat_in_thread(&file);
    assert!(held.recv_timeout(Duration::from_millis(300)).is_err());
    hfs.kill();
    let err = held
        .recv_timeout(Duration::from_secs(2))
        .expect("held stat returns after kill")
        .expect_err("held stat fails after kill");
    // The kernel fails requests in flight when the connection is aborted
    // with ECONNABORTED, later ones with ENOTCONN (or EIO).
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ENOTCONN) | Some(libc::EIO) | Some(libc::ECONNABORTED)
        ),
        "held stat: {err}"
    );

    let err = stat_in_thread(&file)
        .recv_timeout(Duration::from_secs(2))
        .expect("stat returns promptly after kill")
        .expect_err("stat fails after kill");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "stat: {err}");
    // The mount point stays until unmounted.
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mnt = hfs.mountpoint().to_string_lossy().to_string();
    assert!(
        info.lines()
            .any(|l| l.split(' ').nth(4) == Some(mnt.as_str())),
        "{mnt} is no longer mounted"
    );
}

#[test]
fn root_hangfs_drop_answers_held_requests_and_cuts_off_users() {
    if !can_fuse("root_hangfs_drop_answers_held_requests_and_cuts_off_users") {
        return;
    }
    let (_dir, hfs) = setup();
    let mnt = hfs.mountpoint().to_path_buf();
    let file = mnt.join("f");
    fs::write(&file, b"x").expect("write");
    // An open file keeps the detached mount alive: Drop must abort it.
    let open = fs::File::open(&file).expect("open");

    hfs.hang();
    let held = stat_in_thread(&file);
    assert!(held.recv_timeout(Duration::from_millis(300)).is_err());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(hfs);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("drop of a hung, busy HangFs returns");
    held.recv_timeout(Duration::from_secs(2))
        .expect("held stat returns after drop")
        .expect("held stat is answered by the resume in drop");
    let mut buf = [0u8; 1];
    let err = std::io::Read::read(&mut &open, &mut buf).expect_err("read after drop fails");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "read: {err}");
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let mnt = mnt.to_string_lossy().to_string();
    assert!(
        !info
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(mnt.as_str())),
        "{mnt} is still mounted"
    );
}
