//! A hung storage backend stalls nothing else (root: loop devices and
//! FUSE). One berthd serves two loop services; the image directory of
//! service `hung` is a test FUSE filesystem ([`common::hangfs`]) that is
//! told to stop answering, as a wedged storage helper would. Checked:
//! with 64 callers stuck on `hung`, Get/List of both services answer in
//! p99 < 50 ms; Mount/Unmount/Remove of a hung volume answer with an
//! error within the configured deadline; every failed request is logged
//! (one by one or counted in a rate-limit summary); after the helper
//! resumes everything works without a restart and the stuck work left
//! nothing behind; with the helper dead (ENOTCONN), Get/List answer and
//! Unmount cleans up.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::hangfs::HangFs;
use common::probe::{self, post_timed, read_p99, stuck_lines};
use common::Daemon;
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(3);

fn can_use_fuse(test: &str) -> bool {
    if !common::can_use_storage(test) {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        eprintln!("SKIPPED (needs /dev/fuse): {test}");
        return false;
    }
    true
}

fn post(sock: &Path, method: &str, body: Value) -> (u16, Value) {
    let (status, v, _) = post_timed(sock, method, body);
    (status, v)
}

fn fails_in_time(sock: &Path, method: &str, body: Value) -> String {
    probe::fails_in_time(sock, method, body, DEADLINE)
}

#[test]
fn root_a_hung_backend_stalls_only_its_own_work() {
    if !can_use_fuse("root_a_hung_backend_stalls_only_its_own_work") {
        return;
    }
    let fuse_dir = tempfile::tempdir().expect("tempdir");
    let (backing, mnt) = (fuse_dir.path().join("backing"), fuse_dir.path().join("mnt"));
    std::fs::create_dir_all(&backing).expect("mkdir");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let fs = HangFs::mount(&backing, &mnt).expect("fuse mount");
    let limits = format!(
        "[services.hung.limits]\ncreate_timeout = \"{s}s\"\nmount_timeout = \"{s}s\"\ntimeout = \"{s}s\"\nsample_every = \"500ms\"\n",
        s = DEADLINE.as_secs()
    );
    let mut d = Daemon::builder().service_toml(
&format!(
        "[services.ok]\ndriver = \"loop\"\n\n[services.hung]\ndriver = \"loop\"\nimage_dir = \"{}\"\n{limits}",
        mnt.display()
    )).start();
    let (hung, ok) = (d.socket("hung"), d.socket("ok"));
    let (h, o) = (d.client("hung"), d.client("ok"));
    h.create("h1", &[("size", "64M")]);
    h.create("h2", &[("size", "64M")]);
    o.create("o1", &[("size", "64M")]);
    h.mount("h1", Some("a"));
    o.mount("o1", Some("a"));
    let before_hung = read_p99(&hung, "h1", 50);
    let before_ok = read_p99(&ok, "o1", 50);

    fs.hang();
    // Hung volumes answer with errors within the deadline, naming the
    // stuck step; a second request on a volume held by stuck work too.
    let m = fails_in_time(
        &hung,
        "VolumeDriver.Mount",
        json!({"Name": "h2", "ID": "b"}),
    );
    assert!(m.contains("volume h2: mount is stuck at step"), "{m}");
    let u = fails_in_time(
        &hung,
        "VolumeDriver.Unmount",
        json!({"Name": "h1", "ID": "a"}),
    );
    assert!(u.contains("volume h1: unmount is stuck at step"), "{u}");
    let r = fails_in_time(&hung, "VolumeDriver.Remove", json!({"Name": "h2"}));
    assert!(
        r.contains("volume h2: busy") && r.contains("STUCK mount of h2"),
        "{r}"
    );

    // 64 callers stuck on the hung service.
    let callers: Vec<_> = (0..64)
        .map(|i| {
            let sock = hung.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let (status, v) = post(
                    &sock,
                    "VolumeDriver.Create",
                    json!({"Name": format!("c{i}"), "Opts": {"size": "16M"}}),
                );
                (status, v, t.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let during_ok = read_p99(&ok, "o1", 100);
    let during_hung = read_p99(&hung, "h1", 100);
    eprintln!(
        "Get/List p99: service ok {before_ok:?} before, {during_ok:?} with 64 stuck callers on service hung; service hung {before_hung:?} before, {during_hung:?} during"
    );
    assert!(during_ok < Duration::from_millis(50), "{during_ok:?}");
    assert!(during_hung < Duration::from_millis(50), "{during_hung:?}");
    // The other service does storage work meanwhile.
    o.create("o2", &[("size", "64M")]);
    o.mount("o2", Some("b"));
    o.unmount("o2", Some("b"));
    o.remove("o2");
    let mut slowest = Duration::ZERO;
    for c in callers {
        let (status, v, took) = c.join().expect("caller");
        assert_ne!(status, 200, "create on a hung backend: {v}");
        slowest = slowest.max(took);
    }
    eprintln!("64 stuck creates all answered with an error; slowest after {slowest:?}");
    assert!(
        slowest < DEADLINE * 2 + Duration::from_secs(3),
        "{slowest:?}"
    );
    let lines = stuck_lines(&hung);
    eprintln!("status: {lines:?}");
    assert!(!lines.is_empty(), "status shows the stuck work");
    assert!(
        lines.iter().all(|l| l.contains("step \"")),
        "each names its step: {lines:?}"
    );
    fs.resume();
    let t = Instant::now();
    while !stuck_lines(&hung).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{:?}",
            stuck_lines(&hung)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "stuck work returned and was reconciled {:?} after resume",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Nothing the failed creates started is left; the volumes work again.
    let names = h.list_names();
    assert!(names.iter().all(|n| !n.starts_with('c')), "{names:?}");
    let images: Vec<String> = std::fs::read_dir(&backing)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('c'))
        .collect();
    assert!(
        images.is_empty(),
        "leftover images of failed creates: {images:?}"
    );
    // The unmount that outlived its deadline finished when the helper
    // came back: Docker was told it failed, and unmounting is what it
    // asked for.
    assert_eq!(h.get("h1")["Status"]["mountCount"], 0, "{}", h.get("h1"));
    assert!(!common::is_mounted(&d.mount_dir().join("h1")));
    h.mount("h1", Some("a"));
    h.mount("h2", Some("b"));
    h.unmount("h2", Some("b"));
    h.create("n1", &[("size", "16M")]);
    h.remove("n1");
    std::thread::sleep(Duration::from_millis(1500));
    let log = d.log();
    let one_by_one = log
        .lines()
        .filter(|l| l.contains("VolumeDriver.Create failed: volume c"))
        .count();
    let summarised: usize = log
        .lines()
        .filter_map(|l| {
            let i = l.find(" more failed requests in the last second")?;
            l[..i].rsplit(' ').next()?.parse::<usize>().ok()
        })
        .sum();
    eprintln!("failed creates logged: {one_by_one} one by one, {summarised} in summaries");
    assert!(one_by_one >= 20, "{one_by_one}");
    // Every failed create is in the log once: one by one, or counted in
    // a rate-limit summary (flushed every second).
    assert_eq!(one_by_one + summarised, 64, "{one_by_one} + {summarised}");

    // The helper dies: its mount answers ENOTCONN.
    fs.kill();
    let dead = read_p99(&hung, "h1", 20);
    assert!(dead < Duration::from_millis(50), "{dead:?}");
    let t = Instant::now();
    let (status, v) = post(
        &hung,
        "VolumeDriver.Unmount",
        json!({"Name": "h1", "ID": "a"}),
    );
    eprintln!(
        "unmount with the helper dead: {status} {v} in {:?}",
        t.elapsed()
    );
    assert_eq!(status, 200, "{v}");
    assert!(!common::is_mounted(&d.mount_dir().join("h1")));
    assert_eq!(h.get("h1")["Status"]["mountCount"], 0);
    d.stop();
    drop(fs);
}
