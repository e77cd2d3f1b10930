//! Every create option, honoured for real: each test starts `berthd` with
//! a private config and state, talks the plugin API over its socket, and
//! checks the result on the real filesystem (blkid, statvfs, stat, file
//! contents). Needs root (loop devices, mkfs, mount); without it each
//! test prints `SKIPPED (needs root)` and passes.
//!
//! Every test cleans up after itself, also when it fails: the daemon is
//! stopped, every mount under the test's directory is unmounted, loop
//! devices on its images are detached and the directory is removed.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const SERVICE: &str = "t";

fn skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root): {test}: loop devices, mkfs and mount need root");
        return true;
    }
    for tool in ["mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "blkid", "filefrag"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            println!("SKIPPED (needs {tool}): {test}");
            return true;
        }
    }
    false
}

/// A private berthd: config, state, mounts and socket under one temp dir.
struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pools: Vec<(String, PathBuf)>,
}

impl Daemon {
    fn start(pools: &[(&str, PathBuf)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-opts-")
            .tempdir()
            .expect("tempdir");
        let mut d = Daemon {
            dir,
            child: None,
            pools: pools
                .iter()
                .map(|(n, p)| (n.to_string(), p.clone()))
                .collect(),
        };
        d.write_config();
        d.spawn();
        d
    }

    /// A daemon whose pool `fast` is an xfs filesystem of its own (a
    /// loop-mounted image), so reflinks work there.
    fn start_with_xfs_pool(pool_size: u64) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("berth-opts-")
            .tempdir()
            .expect("tempdir");
        let img = dir.path().join("pool.img");
        let mnt = dir.path().join("poolfs");
        fs::create_dir(&mnt).expect("mkdir");
        fs::File::create(&img)
            .and_then(|f| f.set_len(pool_size))
            .expect("pool image");
        run_ok("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", &s(&img)]);
        let att = berth::sys::loopdev::attach(&img).expect("attach pool");
        berth::sys::mounts::mount(att.path(), &mnt, "xfs", "").expect("mount pool");
        drop(att); // the mount holds the device (autoclear)
        let mut d = Daemon {
            dir,
            child: None,
            pools: vec![("fast".into(), mnt.join("images"))],
        };
        d.write_config();
        d.spawn();
        d
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self) -> PathBuf {
        self.path().join("plugins").join(format!("{SERVICE}.sock"))
    }

    fn image_dir(&self) -> PathBuf {
        self.path().join("state/images").join(SERVICE)
    }

    fn records_dir(&self) -> PathBuf {
        self.path().join("state/records").join(SERVICE)
    }

    fn write_config(&self) {
        let p = self.path();
        let mut text = format!(
            "[daemon]\nplugins_dir = \"{}\"\nstate_dir = \"{}\"\nmount_dir = \"{}\"\nlog_level = \"debug\"\ncommand_timeout = \"60s\"\n\n[volume.create.default]\nsize = \"200M\"\n\n[services.{SERVICE}]\ndriver = \"loop\"\n",
            s(&p.join("plugins")),
            s(&p.join("state")),
            s(&p.join("mnt")),
        );
        for (name, dir) in &self.pools {
            text.push_str(&format!(
                "[services.{SERVICE}.pools.{name}]\nimage_dir = \"{}\"\n",
                s(dir)
            ));
        }
        fs::write(p.join("config.toml"), text).expect("config");
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("berthd.log"))
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_berthd"))
            .arg("--config")
            .arg(self.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berthd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("berthd exited ({st}):\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("berthd did not listen in time:\n{}", self.log());
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn log(&self) -> String {
        fs::read_to_string(self.path().join("berthd.log")).unwrap_or_default()
    }

    /// POSTs `body` to `/<method>`; returns (status, JSON answer).
    fn call(&self, method: &str, body: &Value) -> (u16, Value) {
        let mut sock = UnixStream::connect(self.socket()).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        let b = body.to_string();
        write!(
            sock,
            "POST /{method} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        )
        .expect("send");
        let mut raw = Vec::new();
        sock.read_to_end(&mut raw).expect("read");
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP answer");
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status");
        let v = serde_json::from_str(body).unwrap_or_else(|e| panic!("{method}: {e}: {body}"));
        (status, v)
    }

    /// A call that must succeed.
    fn ok(&self, method: &str, body: Value) -> Value {
        let (st, v) = self.call(method, &body);
        let err = v["Err"].as_str().unwrap_or("");
        assert!(
            st == 200 && err.is_empty(),
            "{method} {body}: HTTP {st}: {err}\n--- berthd log ---\n{}",
            self.log()
        );
        v
    }

    /// A call that must fail; returns the error message.
    fn err(&self, method: &str, body: Value) -> String {
        let (st, v) = self.call(method, &body);
        let err = v["Err"].as_str().unwrap_or("").to_string();
        assert!(
            st != 200 && !err.is_empty(),
            "{method} {body} must fail, got HTTP {st}: {v}"
        );
        err
    }

    fn create(&self, name: &str, opts: &[(&str, &str)]) {
        self.ok(
            "VolumeDriver.Create",
            json!({"Name": name, "Opts": opts_of(opts)}),
        );
    }

    fn create_err(&self, name: &str, opts: &[(&str, &str)]) -> String {
        self.err(
            "VolumeDriver.Create",
            json!({"Name": name, "Opts": opts_of(opts)}),
        )
    }

    fn mount(&self, name: &str, id: &str) -> PathBuf {
        let v = self.ok("VolumeDriver.Mount", json!({"Name": name, "ID": id}));
        PathBuf::from(v["Mountpoint"].as_str().expect("mountpoint"))
    }

    fn unmount(&self, name: &str, id: &str) {
        self.ok("VolumeDriver.Unmount", json!({"Name": name, "ID": id}));
    }

    fn status(&self, name: &str) -> Value {
        self.ok("VolumeDriver.Get", json!({"Name": name}))["Volume"]["Status"].clone()
    }

    fn image(&self, name: &str) -> PathBuf {
        self.image_dir().join(format!("{name}.img"))
    }

    fn snapshot(&self, volume: &str, name: &str) -> Value {
        self.ok(
            "Berth.SnapshotCreate",
            json!({"Volume": volume, "Name": name}),
        )["Snapshot"]
            .clone()
    }

    fn names(&self) -> Vec<String> {
        let v = self.ok("VolumeDriver.List", json!({}));
        v["Volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|x| x["Name"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        cleanup(self.dir.path());
    }
}

/// Unmounts everything under `dir` (newest first), detaches loop devices
/// backed by files under it.
fn cleanup(dir: &Path) {
    let canon = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for _ in 0..3 {
        let table = berth::sys::mounts::MountTable::read().expect("mountinfo");
        let mut targets: Vec<PathBuf> = table.under(&canon).map(|m| m.target.clone()).collect();
        if targets.is_empty() {
            break;
        }
        targets.reverse();
        for t in targets {
            if let Err(e) = berth::sys::mounts::unmount(&t) {
                eprintln!("cleanup: {e}");
                let _ = nix::mount::umount2(&t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
    for (dev, backing) in berth::sys::loopdev::list_attached() {
        if backing.starts_with(&canon) {
            let _ = berth::sys::loopdev::detach(&dev);
        }
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn opts_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn blkid_type(p: &Path) -> String {
    run_ok("blkid", &["-p", "-o", "value", "-s", "TYPE", &s(p)])
        .trim()
        .to_string()
}

/// Total bytes of the filesystem holding `p`.
fn fs_total(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks() * st.fragment_size()
}

fn fs_free(p: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(p).expect("statvfs");
    st.blocks_free() * st.fragment_size()
}

fn mount_fs_type(target: &Path) -> String {
    let table = berth::sys::mounts::MountTable::read().expect("mountinfo");
    table
        .at(target)
        .map(|m| m.fs_type.clone())
        .unwrap_or_default()
}

/// Writes `len` bytes of a pattern derived from `seed`, and syncs.
fn write_data(p: &Path, len: usize, seed: u8) {
    let mut f = fs::File::create(p).expect("create");
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    f.sync_all().expect("sync");
}

// ---------------------------------------------------------------- tests

#[test]
fn size_and_filesystems_are_real() {
    if skip("size_and_filesystems_are_real") {
        return;
    }
    let d = Daemon::start(&[]);
    d.create("e", &[("size", "200M")]);
    d.create("x", &[("FSTYPE", "xfs"), ("size", "0.5")]);
    d.create("b", &[("NewFsType", "btrfs"), ("Size", "300M")]);
    d.create("g", &[]); // the configured default size
    assert_eq!(blkid_type(&d.image("e")), "ext4");
    assert_eq!(blkid_type(&d.image("x")), "xfs");
    assert_eq!(blkid_type(&d.image("b")), "btrfs");
    assert_eq!(fs::metadata(d.image("x")).expect("img").len(), 512 << 20);
    assert_eq!(fs::metadata(d.image("g")).expect("img").len(), 200 << 20);
    assert_eq!(d.status("x")["fsType"], json!("xfs"));
    assert_eq!(d.status("x")["size"], json!(0.5));
    for (v, fs_name, size) in [
        ("e", "ext4", 200u64 << 20),
        ("x", "xfs", 512 << 20),
        ("b", "btrfs", 300 << 20),
    ] {
        let p = d.mount(v, "c1");
        let root = p.parent().expect("root").to_path_buf();
        assert_eq!(mount_fs_type(&root), fs_name, "{v}");
        let total = fs_total(&p);
        assert!(
            total <= size && total > size / 2,
            "{v}: filesystem of {total} bytes for a {size}-byte volume"
        );
        d.unmount(v, "c1");
    }
    // The filesystem enforces the size: writing past it fails.
    let p = d.mount("e", "c1");
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
    d.unmount("e", "c1");
}

#[test]
fn overwritefs_decides_about_an_existing_filesystem() {
    if skip("overwritefs_decides_about_an_existing_filesystem") {
        return;
    }
    let d = Daemon::start(&[]);
    fs::create_dir_all(d.image_dir()).expect("mkdir");
    // Two images an operator put in place, each holding ext4 with a file.
    for n in ["keep", "wipe"] {
        let img = d.image(n);
        fs::File::create(&img)
            .and_then(|f| f.set_len(320 << 20))
            .expect("image");
        run_ok("mkfs.ext4", &["-q", "-F", &s(&img)]);
        let mnt = d.path().join(format!("seed-{n}"));
        fs::create_dir(&mnt).expect("mkdir");
        let att = berth::sys::loopdev::attach(&img).expect("attach");
        berth::sys::mounts::mount(att.path(), &mnt, "ext4", "").expect("mount");
        drop(att);
        fs::create_dir(mnt.join("data")).expect("mkdir");
        fs::write(mnt.join("data/precious"), b"keep me").expect("write");
        berth::sys::mounts::unmount(&mnt).expect("unmount");
    }
    // Without overwritefs the filesystem (and the data) stay.
    d.create("keep", &[("fsType", "xfs")]);
    assert_eq!(blkid_type(&d.image("keep")), "ext4");
    assert_eq!(d.status("keep")["fsType"], json!("ext4"));
    let p = d.mount("keep", "c");
    assert_eq!(fs::read(p.join("precious")).expect("read"), b"keep me");
    d.unmount("keep", "c");
    // With overwritefs=true it is reformatted as asked.
    d.create("wipe", &[("fsType", "xfs"), ("OVERWRITEFS", "true")]);
    assert_eq!(blkid_type(&d.image("wipe")), "xfs");
    let p = d.mount("wipe", "c");
    assert!(!p.join("precious").exists());
    d.unmount("wipe", "c");
}

#[test]
fn clone_of_a_volume_in_use_is_consistent_and_independent() {
    if skip("clone_of_a_volume_in_use_is_consistent_and_independent") {
        return;
    }
    let d = Daemon::start(&[]);
    d.create(
        "src",
        &[("size", "200M"), ("uid", "1000"), ("mode", "0750")],
    );
    let p = d.mount("src", "writer");
    write_data(&p.join("big"), 20 << 20, 7);
    fs::write(p.join("small"), b"before").expect("write");
    let src_id = d.status("src")["id"].as_str().expect("id").to_string();
    // Cloned while mounted (and written to a moment before).
    d.create("c1", &[("volumeName", "src")]);
    d.create("c2", &[("VOLUMEID", &src_id), ("size", "300M")]);
    fs::write(p.join("small"), b"after").expect("write");
    fs::write(p.join("later"), b"later").expect("write");
    let st = d.status("c1");
    assert_eq!(st["origin"], json!(format!("volume src ({src_id})")));
    assert_eq!(st["copyMethod"], json!("copy"), "the test dir is on ext4");
    assert_eq!(st["fsType"], json!("ext4"));
    assert_eq!(st["dataUid"], json!(1000), "owner comes from the source");
    assert_eq!(d.status("c2")["sizeBytes"], json!(300u64 << 20));
    for c in ["c1", "c2"] {
        let q = d.mount(c, "reader");
        assert_eq!(fs::read(q.join("small")).expect("read"), b"before", "{c}");
        assert!(!q.join("later").exists(), "{c}");
        let big = fs::read(q.join("big")).expect("read");
        let mut expect = Vec::new();
        write_data(&d.path().join("expect"), 20 << 20, 7);
        fs::File::open(d.path().join("expect"))
            .and_then(|mut f| f.read_to_end(&mut expect))
            .expect("read");
        assert!(big == expect, "{c}: big file differs");
        let md = fs::metadata(&q).expect("stat");
        assert_eq!((md.uid(), md.mode() & 0o7777), (1000, 0o750), "{c}");
        // Independent afterwards: writes to the copy stay there.
        fs::write(q.join("mine"), c).expect("write");
        d.unmount(c, "reader");
    }
    assert!(!p.join("mine").exists());
    assert!(fs_total(&d.mount("c2", "r")) > 250 << 20, "c2 was grown");
    d.unmount("c2", "r");
    d.unmount("src", "writer");
}

#[test]
fn snapshots_restore_snapshot_time_content_and_survive_restarts() {
    if skip("snapshots_restore_snapshot_time_content_and_survive_restarts") {
        return;
    }
    let mut d = Daemon::start(&[]);
    d.create("v", &[("fsType", "xfs"), ("size", "320M")]);
    let p = d.mount("v", "w");
    fs::write(p.join("a"), b"snapshot time").expect("write");
    let s1 = d.snapshot("v", "s1");
    assert_eq!(s1["Volume"], json!("v"));
    assert_eq!(s1["SizeBytes"], json!(320u64 << 20));
    assert_eq!(s1["FsType"], json!("xfs"));
    assert_eq!(s1["CopyMethod"], json!("copy"));
    assert!(
        s1["FrozenMicros"].as_u64().is_some(),
        "a mounted source is frozen"
    );
    fs::write(p.join("a"), b"later").expect("write");
    fs::write(p.join("b"), b"later").expect("write");
    // A long copy shows in /Berth.Progress while it runs.
    write_data(&p.join("bulk"), 100 << 20, 5);
    let seen = std::thread::scope(|sc| {
        let t = sc.spawn(|| d.snapshot("v", "s2"));
        let mut seen = None;
        while !t.is_finished() {
            let ops = d.ok("Berth.Progress", json!({}));
            if let Some(op) = ops["Operations"].as_array().and_then(|a| a.first()) {
                seen = Some(op.clone());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        t.join().expect("snapshot thread");
        seen
    });
    let op = seen.expect("the snapshot showed in /Berth.Progress");
    assert_eq!(
        (op["Kind"].as_str(), op["Target"].as_str()),
        (Some("snapshot"), Some("s2"))
    );
    assert!(
        d.ok("Berth.Progress", json!({}))["Operations"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "finished operations leave the table"
    );
    d.unmount("v", "w");
    // From the snapshot by name and by ID: snapshot-time content only.
    d.create("r1", &[("snapshotName", "s1")]);
    d.create("r2", &[("SNAPSHOTID", s1["ID"].as_str().expect("id"))]);
    for r in ["r1", "r2"] {
        assert_eq!(blkid_type(&d.image(r)), "xfs");
        let q = d.mount(r, "c");
        assert_eq!(
            fs::read(q.join("a")).expect("read"),
            b"snapshot time",
            "{r}"
        );
        assert!(!q.join("b").exists(), "{r}");
        d.unmount(r, "c");
    }
    // Listing shows size and source.
    let l = d.ok("Berth.SnapshotList", json!({"Volume": "v"}));
    let names: Vec<&str> = l["Snapshots"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|s| s["Name"].as_str())
        .collect();
    assert_eq!(names, vec!["s1", "s2"]);
    // A snapshot with volumes made from it can go: they are copies.
    d.ok("Berth.SnapshotRemove", json!({"Name": "s1"}));
    assert!(!d.image_dir().join("s1.snap").exists());
    let q = d.mount("r1", "c");
    assert_eq!(fs::read(q.join("a")).expect("read"), b"snapshot time");
    d.unmount("r1", "c");
    // Removing the volume keeps its snapshots.
    d.ok("VolumeDriver.Remove", json!({"Name": "v"}));
    let s2 = d.ok("Berth.SnapshotInspect", json!({"Name": "s2"}))["Snapshot"].clone();
    assert_eq!(s2["VolumeExists"], json!(false));
    // Snapshots survive a restart.
    d.restart();
    let l = d.ok("Berth.SnapshotList", json!({}));
    assert_eq!(l["Snapshots"].as_array().expect("list").len(), 1);
    d.create("r3", &[("snapshotName", "s2")]);
    let q = d.mount("r3", "c");
    assert_eq!(fs::read(q.join("b")).expect("read"), b"later");
    d.unmount("r3", "c");
    // The CLI sees the same.
    let out = run_ok(
        env!("CARGO_BIN_EXE_berth"),
        &["--socket", &s(&d.socket()), "snapshot", "ls"],
    );
    assert!(out.contains("s2") && out.contains("v (removed)"), "{out}");
    let e = d.err(
        "Berth.SnapshotCreate",
        json!({"Volume": "nope", "Name": "s9"}),
    );
    assert!(e.contains("nope"), "{e}");
    let e = d.err("Berth.SnapshotRemove", json!({"Name": "s1"}));
    assert!(e.contains("not found"), "{e}");
}

#[test]
fn reflink_pool_snapshots_share_extents() {
    if skip("reflink_pool_snapshots_share_extents") {
        return;
    }
    let d = Daemon::start_with_xfs_pool(2 << 30);
    let pool_dir = d.pools[0].1.clone();
    // Unknown pool: a clear error listing the pools, nothing created.
    let e = d.create_err("nope", &[("volumeType", "gold")]);
    assert!(e.contains("gold") && e.contains("default, fast"), "{e}");
    assert!(!d.names().contains(&"nope".to_string()));
    d.create("v", &[("type", "fast"), ("size", "1")]);
    assert_eq!(d.status("v")["type"], json!("fast"));
    assert!(pool_dir.join("v.img").exists(), "image lives in the pool");
    let p = d.mount("v", "w");
    write_data(&p.join("data"), 64 << 20, 3);
    let free_before = fs_free(&pool_dir);
    let snap = d.snapshot("v", "s");
    let free_after = fs_free(&pool_dir);
    assert_eq!(snap["CopyMethod"], json!("reflink"));
    assert_eq!(snap["Type"], json!("fast"));
    let frozen = snap["FrozenMicros"].as_u64().expect("frozen");
    assert!(frozen < 2_000_000, "frozen for {frozen} µs");
    let snap_img = pool_dir.join("s.snap");
    let frag = run_ok("filefrag", &["-v", &s(&snap_img)]);
    assert!(frag.contains("shared"), "extents are shared:\n{frag}");
    assert!(
        free_before.saturating_sub(free_after) < 8 << 20,
        "a reflink snapshot of 64 MiB of data took {} bytes",
        free_before.saturating_sub(free_after)
    );
    // Clones in the pool are reflinks too, and independent.
    d.create("c", &[("volumeName", "v")]);
    assert_eq!(d.status("c")["copyMethod"], json!("reflink"));
    assert_eq!(d.status("c")["type"], json!("fast"));
    fs::write(p.join("after"), b"x").expect("write");
    d.unmount("v", "w");
    let q = d.mount("c", "r");
    assert!(!q.join("after").exists());
    assert_eq!(fs::metadata(q.join("data")).expect("stat").len(), 64 << 20);
    d.unmount("c", "r");
    // A clone across pools falls back to a copy.
    d.create("x", &[("volumeName", "v"), ("type", "default")]);
    assert_eq!(d.status("x")["copyMethod"], json!("copy"));
}

#[test]
fn resize_grows_image_device_and_filesystem() {
    if skip("resize_grows_image_device_and_filesystem") {
        return;
    }
    let d = Daemon::start(&[]);
    // ext4, unmounted: e2fsck + resize2fs on the image.
    d.create("e", &[("size", "200M")]);
    let p = d.mount("e", "w");
    fs::write(p.join("f"), b"kept").expect("write");
    d.unmount("e", "w");
    let r = d.ok("Berth.VolumeResize", json!({"Name": "e", "Size": "400M"}));
    assert_eq!(r["SizeBytes"], json!(400u64 << 20));
    assert_eq!(fs::metadata(d.image("e")).expect("img").len(), 400 << 20);
    assert_eq!(d.status("e")["sizeBytes"], json!(400u64 << 20));
    let p = d.mount("e", "w");
    assert!(fs_total(&p) > 300 << 20, "ext4 grew");
    assert_eq!(fs::read(p.join("f")).expect("read"), b"kept");
    // ext4, mounted: works with CAP_SYS_RESOURCE, else a clear refusal.
    let has_cap = berth::sys::caps::has_effective(berth::sys::caps::CAP_SYS_RESOURCE);
    if has_cap == Some(false) {
        let e = d.err("Berth.VolumeResize", json!({"Name": "e", "Size": "500M"}));
        assert!(
            e.contains("CAP_SYS_RESOURCE") && e.contains("unmount"),
            "{e}"
        );
        assert_eq!(fs::metadata(d.image("e")).expect("img").len(), 400 << 20);
    } else {
        d.ok("Berth.VolumeResize", json!({"Name": "e", "Size": "500M"}));
        assert!(fs_total(&p) > 400 << 20);
    }
    d.unmount("e", "w");
    // Shrinking is refused, and so is a bad size.
    let e = d.err("Berth.VolumeResize", json!({"Name": "e", "Size": "100M"}));
    assert!(e.contains("cannot shrink"), "{e}");
    let e = d.err("Berth.VolumeResize", json!({"Name": "e", "Size": "big"}));
    assert!(e.contains("size"), "{e}");
    // xfs, mounted: grows online.
    d.create("x", &[("fsType", "xfs"), ("size", "320M")]);
    let p = d.mount("x", "w");
    fs::write(p.join("f"), b"xfs data").expect("write");
    let before = fs_total(&p);
    d.ok("Berth.VolumeResize", json!({"Name": "x", "Size": "1"}));
    let after = fs_total(&p);
    assert!(
        after > before + (500 << 20),
        "xfs grew online: {before} → {after}"
    );
    assert_eq!(fs::read(p.join("f")).expect("read"), b"xfs data");
    d.unmount("x", "w");
    // btrfs, unmounted: grown through a private temporary mount.
    d.create("b", &[("fsType", "btrfs"), ("size", "300M")]);
    d.ok("Berth.VolumeResize", json!({"Name": "b", "Size": "600M"}));
    let p = d.mount("b", "w");
    assert!(fs_total(&p) > 450 << 20, "btrfs grew");
    d.unmount("b", "w");
    // No temporary mount point is left behind.
    let leftovers: Vec<_> = fs::read_dir(d.image_dir())
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".berth"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn ownership_and_mode_of_the_data_directory() {
    if skip("ownership_and_mode_of_the_data_directory") {
        return;
    }
    let d = Daemon::start(&[]);
    d.create("o", &[("UID", "1000"), ("gid", "1001"), ("Mode", "0750")]);
    let p = d.mount("o", "c");
    let md = fs::metadata(&p).expect("stat");
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (1000, 1001, 0o750)
    );
    let st = d.status("o");
    assert_eq!(
        (
            st["dataUid"].clone(),
            st["dataGid"].clone(),
            st["dataMode"].clone()
        ),
        (json!(1000), json!(1001), json!("0750"))
    );
    d.unmount("o", "c");
    // A copy asked for other owners gets them at its first mount.
    d.create(
        "o2",
        &[("volumeName", "o"), ("uid", "2000"), ("mode", "0700")],
    );
    let p = d.mount("o2", "c");
    let md = fs::metadata(&p).expect("stat");
    assert_eq!(
        (md.uid(), md.gid(), md.permissions().mode() & 0o7777),
        (2000, 0, 0o700)
    );
    d.unmount("o2", "c");
}

#[test]
fn iops_and_availability_zone_are_recorded() {
    if skip("iops_and_availability_zone_are_recorded") {
        return;
    }
    let d = Daemon::start(&[]);
    d.create("z", &[("IOPS", "150"), ("AvailabilityZone", "rack-1")]);
    let st = d.status("z");
    assert_eq!(st["iops"], json!(150));
    assert_eq!(st["availabilityZone"], json!("rack-1"));
    assert_eq!(st["type"], json!("default"));
}

#[test]
fn bad_values_of_every_option_create_nothing() {
    if skip("bad_values_of_every_option_create_nothing") {
        return;
    }
    let d = Daemon::start(&[]);
    d.create("src", &[]);
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
        ("volumeType", "gold", "gold"),
        ("type", "gold", "gold"),
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
        let e = d.create_err("bad", &[(k, v)]);
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
        let e = d.create_err("bad", &pairs);
        assert!(e.contains(needle), "{pairs:?}: {e}");
    }
    assert_eq!(d.names(), vec!["src".to_string()]);
    let images: Vec<String> = fs::read_dir(d.image_dir())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(images, vec!["src.img".to_string()]);
    let records: Vec<String> = fs::read_dir(d.records_dir())
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(records, vec!["src.json".to_string()]);
}

// ------------------------------------------------------------ benchmark

fn stats(samples: &mut [f64]) -> String {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    format!(
        "median {median:8.2} ms  min {:8.2}  max {:8.2}  (n={n})",
        samples[0],
        samples[n - 1]
    )
}

/// Snapshot and clone times of a 1 GiB volume holding 500 MiB of data,
/// on a reflink pool (xfs) and on a copy pool (the ext4 root), through
/// the plugin socket. Run with `scripts/bench-snapshots.sh` (release
/// build, `--ignored --nocapture`).
#[test]
#[ignore = "benchmark: run scripts/bench-snapshots.sh"]
fn bench_snapshots() {
    if skip("bench_snapshots") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let d = Daemon::start_with_xfs_pool(4 << 30);
    println!();
    println!("1 GiB volume (ext4) holding 500 MiB of data; {runs} runs each; times are whole plugin-API calls over the socket");
    for (pool, label) in [
        ("fast", "reflink pool (xfs)"),
        ("default", "copy pool (ext4)"),
    ] {
        let v = format!("bench-{pool}");
        d.create(&v, &[("size", "1"), ("type", pool)]);
        let p = d.mount(&v, "w");
        write_data(&p.join("data"), 500 << 20, 11);
        let n = if pool == "fast" { runs } else { runs.min(5) };
        let mut snap_mounted = Vec::new();
        let mut frozen = Vec::new();
        let mut method = String::new();
        for i in 0..n {
            // Something new to flush each time, as a live volume would have.
            fs::write(p.join(format!("touch{i}")), b"x").expect("write");
            let t = Instant::now();
            let s = d.snapshot(&v, "s");
            snap_mounted.push(t.elapsed().as_secs_f64() * 1000.0);
            frozen.push(s["FrozenMicros"].as_u64().unwrap_or(0) as f64 / 1000.0);
            method = s["CopyMethod"].as_str().unwrap_or("").to_string();
            d.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        d.unmount(&v, "w");
        let mut snap_idle = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            d.snapshot(&v, "s");
            snap_idle.push(t.elapsed().as_secs_f64() * 1000.0);
            d.ok("Berth.SnapshotRemove", json!({"Name": "s"}));
        }
        let mut clone = Vec::new();
        for _ in 0..n {
            let t = Instant::now();
            d.create("bench-clone", &[("volumeName", &v)]);
            clone.push(t.elapsed().as_secs_f64() * 1000.0);
            d.ok("VolumeDriver.Remove", json!({"Name": "bench-clone"}));
        }
        println!("{label}: copy method {method}");
        println!("  snapshot, mounted   {}", stats(&mut snap_mounted));
        println!("    of which frozen   {}", stats(&mut frozen));
        println!("  snapshot, unmounted {}", stats(&mut snap_idle));
        println!(
            "  clone (create from volumeName), unmounted {}",
            stats(&mut clone)
        );
        d.ok("VolumeDriver.Remove", json!({"Name": v}));
    }
    if std::env::var_os("BENCH_VERBOSE").is_some() {
        for l in d
            .log()
            .lines()
            .filter(|l| l.contains("point-in-time copy made") || l.contains("snapshot steps"))
        {
            println!("{l}");
        }
    }
}

#[test]
fn a_freeze_left_by_a_crash_is_thawed_at_start() {
    if skip("a_freeze_left_by_a_crash_is_thawed_at_start") {
        return;
    }
    let mut d = Daemon::start(&[]);
    d.create("f", &[]);
    let p = d.mount("f", "c");
    let root = p.parent().expect("root").to_path_buf();
    // As if berthd died between FIFREEZE and FITHAW.
    run_ok("fsfreeze", &["--freeze", &s(&root)]);
    d.restart();
    let out = Command::new("fsfreeze")
        .args(["--unfreeze", &s(&root)])
        .output()
        .expect("fsfreeze");
    assert!(
        !out.status.success(),
        "the volume was still frozen after a restart"
    );
    assert!(d.log().contains("thawed it"), "{}", d.log());
    fs::write(p.join("w"), b"writable").expect("write");
    d.unmount("f", "c");
}
