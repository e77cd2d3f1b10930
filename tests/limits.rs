//! Defined behaviour at exhaustion: the image store full, the state
//! directory full, a tool that hangs (bounded by `command_timeout`, well
//! inside Docker's 2-minute plugin timeout), and more connections than
//! `max_connections`. Each gives a clear error or waits within the
//! documented bound, and leaves nothing behind. (No free loop device and
//! a slow disk are in tests/faults.rs: they need failpoints.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{can_use_storage, settled_violations, Conn, Daemon};

use serde_json::json;

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .expect("mount tmpfs");
        Tmpfs(at.to_path_buf())
    }

    /// Fills it up but for `leave` bytes.
    fn fill(&self, leave: u64) -> PathBuf {
        let free = berth::sys::fsutil::space(&self.0)
            .expect("statvfs")
            .available;
        let f = self.0.join("filler");
        let data = vec![0u8; (free.saturating_sub(leave)) as usize];
        let _ = std::fs::write(&f, &data);
        f
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn root_image_store_full_is_refused_cleanly() {
    if !can_use_storage("root_image_store_full_is_refused_cleanly") {
        return;
    }
    let store = tempfile::Builder::new()
        .prefix("berth-store-")
        .tempdir()
        .expect("tempdir");
    let fs = Tmpfs::mount(&store.path().join("images"), "64m");
    let d = Daemon::builder()
        .service_toml(&format!(
            "[services.berth]\ndriver = \"loop\"\nimage_dir = \"{}\"\n",
            fs.0.display()
        ))
        .start();
    let api = d.client("berth");
    // Larger than the store: refused before anything is written.
    let e = api.err(
        "VolumeDriver.Create",
        json!({"Name": "big", "Opts": {"size": "128M"}}),
    );
    assert!(e.contains("big") && e.contains("free for images"), "{e}");
    // Fits: made.
    api.create("fits", &[("size", "32M")]);
    // The store fills up: the next create is refused, nothing is left.
    let filler = fs.fill(1 << 20);
    let e = api.err(
        "VolumeDriver.Create",
        json!({"Name": "nospace", "Opts": {"size": "16M"}}),
    );
    assert!(e.contains("nospace") && e.contains("free"), "{e}");
    let st = common::DiskState::read(&d.records_dir("berth"), &fs.0, &d.mount_dir(), store.path());
    let mut v = st.violations();
    v.retain(|x| !x.contains("filler"));
    assert!(v.is_empty(), "{v:?}");
    assert_eq!(st.ready_names().len(), 1);
    eprintln!("FIGURES limits: image store full -> {e}");
    std::fs::remove_file(filler).expect("rm filler");
    api.remove("fits");
    assert!(d.leftovers().is_empty());
}

#[test]
fn root_state_dir_full_is_refused_cleanly() {
    if !can_use_storage("root_state_dir_full_is_refused_cleanly") {
        return;
    }
    let d = Daemon::builder().start();
    let api = d.client("berth");
    // The socket answers before the state is loaded: wait until it is,
    // or the tmpfs below would hide the records directory from loading.
    assert!(api.list_names().is_empty());
    let rec = d.records_dir("berth");
    let fs = Tmpfs::mount(&rec, "1m");
    fs.fill(0);
    let e = api.err(
        "VolumeDriver.Create",
        json!({"Name": "norec", "Opts": {"size": "16M"}}),
    );
    assert!(
        e.contains("norec") && e.contains("No space left on device"),
        "{e}"
    );
    assert!(api.list_names().is_empty());
    drop(fs);
    let (st, v) = settled_violations(&d, "berth", Duration::from_secs(2));
    assert!(v.is_empty(), "{v:?}");
    assert!(st.images.is_empty(), "{st:?}");
    eprintln!("FIGURES limits: state directory full -> {e}");
    // Space again: the same request works.
    api.create("norec", &[("size", "16M")]);
    api.remove("norec");
}

#[test]
fn root_hung_mkfs_is_killed_at_command_timeout() {
    if !can_use_storage("root_hung_mkfs_is_killed_at_command_timeout") {
        return;
    }
    let fake = tempfile::tempdir().expect("tempdir");
    let tool = fake.path().join("mkfs.ext4");
    std::fs::write(&tool, "#!/bin/sh\nsleep 60\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let d = Daemon::builder()
        .daemon_toml("command_timeout = \"2s\"\n")
        .env("PATH", &path)
        .start();
    let sock = d.socket("berth");
    let t = Instant::now();
    let slow = std::thread::spawn(move || {
        let mut c = Conn::open(&sock, Duration::from_secs(30)).expect("connect");
        c.post(
            "/VolumeDriver.Create",
            json!({"Name": "hung", "Opts": {"size": "16M"}})
                .to_string()
                .as_bytes(),
        )
        .expect("answer")
    });
    // Meanwhile the daemon answers everything else at once.
    let api = d.client("berth");
    std::thread::sleep(Duration::from_millis(300));
    let r = Instant::now();
    assert!(api.list_names().is_empty());
    assert!(r.elapsed() < Duration::from_millis(500));
    let a = slow.join().expect("create");
    let took = t.elapsed();
    let msg = String::from_utf8_lossy(&a.body).into_owned();
    assert_eq!(a.status, 500, "{msg}");
    assert!(
        msg.contains("hung") && msg.contains("timed out after 2s"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    let (st, v) = settled_violations(&d, "berth", Duration::from_secs(2));
    assert!(v.is_empty(), "{v:?}");
    assert!(st.images.is_empty() && st.records.is_empty(), "{st:?}");
    eprintln!(
        "FIGURES limits: mkfs hung -> error after {:.1} s: {msg}",
        took.as_secs_f64()
    );
}

#[test]
fn more_connections_than_the_limit_wait_for_a_free_slot() {
    let d = Daemon::builder()
        .daemon_toml("max_connections = 4\n")
        .start();
    let sock = d.socket("berth");
    // Four clients take every slot and then sit idle.
    let mut held: Vec<Conn> = (0..4)
        .map(|_| {
            let mut c = Conn::open(&sock, Duration::from_secs(30)).expect("connect");
            assert_eq!(c.post("/Plugin.Activate", b"").expect("answer").status, 200);
            c
        })
        .collect();
    // The fifth is accepted by the kernel and answered once an idle
    // connection has been closed (10 s without a request).
    let t = Instant::now();
    let mut fifth = Conn::open(&sock, Duration::from_secs(30)).expect("connect");
    let a = fifth.post("/VolumeDriver.List", b"{}").expect("answer");
    let waited = t.elapsed();
    assert_eq!(a.status, 200);
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    for c in &mut held {
        assert!(c.wait_closed(), "idle connection closed");
    }
    eprintln!(
        "FIGURES limits: max_connections=4 with 4 idle clients -> the 5th was answered after {:.1} s",
        waited.as_secs_f64()
    );
    drop(d);
}
