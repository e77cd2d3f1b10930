//! `dvdcli` end to end: the binary, run as Mesos runs it, against a real
//! berthd (loop devices, mkfs, mount: needs root), against a small v1
//! plugin of this file's own found through a `.spec`/`.json` file, and
//! against a plugin that never answers.
//!
//! Without root, the berthd tests print `SKIPPED (needs root): …` and
//! pass; the others run everywhere.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::{json, Value};

const DVDCLI: &str = env!("CARGO_BIN_EXE_dvdcli");
const GIB: u64 = 1 << 30;

// ---------------------------------------------------------------- running dvdcli

/// What one dvdcli run left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Run {
    fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what}: dvdcli failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn fails(self, what: &str) -> Run {
        assert_eq!(
            self.code, 1,
            "{what}: dvdcli must exit 1\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "{what}: nothing on stdout on error: {:?}",
            self.stdout
        );
        self
    }

    /// stdout, which must be exactly one line.
    fn line(&self) -> &str {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stdout, got {:?}", self.stdout);
        assert!(self.stdout.ends_with('\n'));
        lines[0]
    }
}

/// Where dvdcli looks for plugins in a test: private directories only.
struct Dirs {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = Dirs::tempdir();
        Dirs {
            root: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        }
    }

    /// A private directory with the socket and spec directories.
    fn tempdir() -> tempfile::TempDir {
        let tmp = tempfile::Builder::new()
            .prefix("dvdcli-test.")
            .tempdir()
            .expect("tempdir");
        for d in ["plugins", "specs", "lib-specs"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        tmp
    }

    fn root(&self) -> &Path {
        &self.root
    }

    fn sockets(&self) -> PathBuf {
        self.root().join("plugins")
    }

    fn specs(&self) -> PathBuf {
        self.root().join("specs")
    }

    fn dvdcli(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(DVDCLI);
        cmd.args(args)
            .env_remove("DVDCLI_TIMEOUT")
            .env_remove("DVDCLI_LOG_LEVEL")
            .env("DVDCLI_SOCKET_DIR", self.sockets())
            .env(
                "DVDCLI_SPEC_DIRS",
                format!(
                    "{}:{}",
                    self.specs().display(),
                    self.root().join("lib-specs").display()
                ),
            )
            .env("DVDCLI_RETRY_TIMEOUT", "0")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let out = cmd.output().expect("run dvdcli");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        }
    }
}

/// The command line mesos-module-dvdi builds from a task's environment
/// (`formatOptions`: each comma-separated item of `DVDI_VOLUME_OPTS`
/// becomes one `--volumeopts=<item>`), with the `--explicitCreate` flag
/// spelled as the module spells it.
fn dvdi_mount_args(driver: &str, name: &str, opts: &str, explicit: &str) -> Vec<String> {
    let mut a = vec![
        "mount".to_string(),
        format!("--volumedriver={driver}"),
        format!("--volumename={name}"),
    ];
    for item in opts.split(',').filter(|i| !i.is_empty()) {
        a.push(format!("--volumeopts={item}"));
    }
    a.push(format!("--explicitCreate={explicit}"));
    a
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The seed's Marathon example (Mesos containerizer).
const SEED_OPTS: &str = "size=5,iops=150,volumetype=io1,newfstype=xfs,overwritefs=true";

// ---------------------------------------------------------------- kernel state

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Mount points and their filesystem types, from /proc/self/mountinfo.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let target = f.get(4)?.replace("\\040", " ");
            Some((PathBuf::from(target), f.get(sep + 1)?.to_string()))
        })
        .collect()
}

fn fs_at(target: &Path) -> Option<String> {
    mounts()
        .into_iter()
        .rev()
        .find(|(t, _)| t == target)
        .map(|(_, fs)| fs)
}

/// Loop devices whose backing file is under `root`.
fn loops_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim()).starts_with(root) {
                out.push(format!("/dev/{name}"));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- berthd

/// A berthd serving two loop services from a private directory:
/// `mesos` (volume.unmount.ignoreusedcount = true, as docs/mesos.md
/// recommends) and `counting` (the default counting mode). Its sockets
/// are where dvdcli looks for plugins.
struct Berthd {
    d: Daemon,
    dirs: Dirs,
}

impl Berthd {
    fn start() -> Berthd {
        let tmp = Dirs::tempdir();
        let root = tmp.path().to_path_buf();
        let mut d = Daemon::builder()
            .service_toml(&format!(
                r#"
[services.mesos]
driver = "loop"
[services.mesos.volume.unmount]
ignoreusedcount = true
[services.mesos.pools.io1]
image_dir = "{root}/pools/io1"

[services.counting]
driver = "loop"

# As named in the seed, with nothing but the defaults.
[services.rexray]
driver = "loop"
"#,
                root = root.display()
            ))
            .env("RUST_LOG", "info")
            .dir(tmp)
            .start();
        d.wait_ready("counting");
        Berthd {
            d,
            dirs: Dirs { root, _tmp: None },
        }
    }

    fn mount_dir(&self) -> PathBuf {
        self.d.mount_dir()
    }

    /// The volume's `Status` through the plugin API (not through dvdcli).
    fn status(&self, service: &str, volume: &str) -> Value {
        self.d.client(service).status(volume)
    }

    fn stop(&mut self) {
        self.d.stop();
    }
}

macro_rules! needs_root {
    ($name:expr) => {
        if !is_root() {
            eprintln!(
                "SKIPPED (needs root): {}: loop devices, mkfs and mount",
                $name
            );
            return;
        }
    };
}

// ---------------------------------------------------------------- berthd tests

/// The seed's Mesos-containerizer example, verbatim: driver `rexray`,
/// `volumetype=io1` naming no pool of a service with the default config.
#[test]
fn root_seed_mesos_containerizer_example_verbatim() {
    needs_root!("root_seed_mesos_containerizer_example_verbatim");
    let d = Berthd::start();
    let dv = |args: &[&str]| d.dirs.dvdcli(args, &[]);
    let mount_args = dvdi_mount_args("rexray", "test12345", SEED_OPTS, "false");
    let path = PathBuf::from(dv(&strs(&mount_args)).ok("mount").line());
    std::fs::write(path.join("hello"), b"seed\n").expect("write in the volume");
    let status = d.status("rexray", "test12345");
    assert_eq!(status["type"], json!("io1"), "recorded: {status:?}");
    assert_eq!(status["pool"], json!("default"), "{status:?}");
    assert_eq!(status["fsType"], json!("xfs"), "{status:?}");
    assert_eq!(status["iops"], json!(150), "{status:?}");
    assert_eq!(status["sizeBytes"], json!(5 * GIB), "{status:?}");
    dv(&["unmount", "--volumedriver=rexray", "--volumename=test12345"]).ok("unmount");
    let log = d.d.log();
    assert!(
        log.contains("volumeType \"io1\" names no storage pool"),
        "an INFO line says so"
    );
}

#[test]
fn root_marathon_native_containerizer_example_on_berth() {
    needs_root!("root_marathon_native_containerizer_example_on_berth");
    let mut d = Berthd::start();
    let dv = |args: &[&str]| d.dirs.dvdcli(args, &[]);
    let mount_args = dvdi_mount_args("mesos", "test12345", SEED_OPTS, "false");
    let unmount_args = ["unmount", "--volumedriver=mesos", "--volumename=test12345"];
    let target = d.mount_dir().join("test12345");

    // mount: a path, alone on stdout; a 5 GB xfs filesystem behind it.
    let first = dv(&strs(&mount_args)).ok("first mount");
    let path = PathBuf::from(first.line());
    assert_eq!(path, target.join("data"), "Berth's data directory");
    assert_eq!(
        fs_at(&target).as_deref(),
        Some("xfs"),
        "newfstype=xfs honoured"
    );
    let st = nix::sys::statvfs::statvfs(&path).expect("statvfs");
    let total = st.blocks() * st.fragment_size();
    assert!(
        total > 45 * GIB / 10 && total <= 5 * GIB,
        "a 5 GB filesystem, got {total} bytes"
    );
    let status = d.status("mesos", "test12345");
    assert_eq!(status["sizeBytes"], json!(5 * GIB), "{status:?}");
    assert_eq!(status["size"].as_f64(), Some(5.0), "size in GB: {status:?}");
    assert_eq!(status["fsType"], json!("xfs"), "{status:?}");
    assert_eq!(status["iops"], json!(150), "{status:?}");
    assert_eq!(status["type"], json!("io1"), "{status:?}");
    assert_eq!(status["mounted"], json!(true), "{status:?}");

    // The task's loop: touch a file in the volume.
    std::fs::write(path.join("hello"), b"from task 1\n").expect("write in the volume");
    assert_eq!(
        dv(&["path", "--volumedriver=mesos", "--volumename=test12345"])
            .ok("path")
            .line(),
        path.to_str().expect("utf-8")
    );
    assert_eq!(
        dv(&["get", "--volumedriver=mesos", "--volumename=test12345"])
            .ok("get")
            .line(),
        "test12345"
    );
    let list = dv(&["list", "--volumedriver=mesos"]).ok("list");
    assert!(list.stdout.lines().any(|l| l == "test12345"), "{list:?}");

    // unmount really unmounts.
    let un = dv(&unmount_args).ok("unmount");
    assert!(
        un.stdout.is_empty(),
        "unmount prints nothing: {:?}",
        un.stdout
    );
    assert_eq!(fs_at(&target), None, "unmounted after dvdcli unmount");
    assert!(!path.join("hello").exists());
    assert!(
        dv(&["path", "--volumedriver=mesos", "--volumename=test12345"])
            .ok("path")
            .stdout
            .is_empty()
    );

    // A new mount (the task restarted): same path, the file survived, and
    // the create options are not reapplied (overwritefs must not wipe it).
    let again = dv(&strs(&mount_args)).ok("second mount");
    assert_eq!(again.line(), path.to_str().expect("utf-8"));
    assert_eq!(
        std::fs::read(path.join("hello")).expect("file survived"),
        b"from task 1\n"
    );
    assert_eq!(fs_at(&target).as_deref(), Some("xfs"));

    // ignoreusedcount: two mounts, one unmount, and it is gone.
    dv(&strs(&mount_args)).ok("third mount");
    assert_eq!(d.status("mesos", "test12345")["mountCount"], json!(2));
    let un2 = dv(&unmount_args).ok("unmount in ignore-used-count mode");
    assert_eq!(fs_at(&target), None, "one unmount is a real unmount");

    // Explicit create: a missing volume is an error, and nothing is made.
    let ex = dv(&strs(&dvdi_mount_args(
        "mesos", "absent1", "size=1", "true",
    )))
    .fails("explicit");
    assert!(
        ex.stderr.contains("absent1") && ex.stderr.contains("explicitcreate"),
        "{}",
        ex.stderr
    );
    dv(&["get", "--volumedriver=mesos", "--volumename=absent1"]).fails("not created");

    // An option without '=': a clear error before any request.
    let bad = dv(&[
        "mount",
        "--volumedriver=mesos",
        "--volumename=noeq1",
        "--volumeopts=size",
    ])
    .fails("no '='");
    assert!(
        bad.stderr.contains("\"size\"") && bad.stderr.contains("KEY=VALUE"),
        "{}",
        bad.stderr
    );
    dv(&["get", "--volumedriver=mesos", "--volumename=noeq1"]).fails("not created");

    // A value with '=' reaches Berth whole.
    dv(&[
        "create",
        "--volumedriver=mesos",
        "--volumename=eqopt1",
        "--volumeopts=availabilityZone=rack=a1,size=200M",
    ])
    .ok("create");
    assert_eq!(
        d.status("mesos", "eqopt1")["availabilityZone"],
        json!("rack=a1")
    );

    // Clean up through dvdcli.
    dv(&["remove", "--volumedriver=mesos", "--volumename=eqopt1"]).ok("remove eqopt1");
    dv(&["remove", "--volumedriver=mesos", "--volumename=test12345"]).ok("remove");
    dv(&["get", "--volumedriver=mesos", "--volumename=test12345"]).fails("removed");
    assert!(loops_under(d.dirs.root()).is_empty(), "no loop device left");

    eprintln!(
        "timings (dvdcli, berthd loop/xfs 5 GB): first mount incl. create+mkfs {:?}, \
         remount {:?}, unmount {:?}, unmount {:?}",
        first.took, again.took, un.took, un2.took
    );
    d.stop();
}

#[test]
fn root_two_tasks_share_a_volume_under_counting() {
    needs_root!("root_two_tasks_share_a_volume_under_counting");
    let mut d = Berthd::start();
    let dv = |args: &[&str]| d.dirs.dvdcli(args, &[]);
    let mount = dvdi_mount_args("counting", "shared1", "size=1", "false");
    let unmount = ["unmount", "--volumedriver=counting", "--volumename=shared1"];
    let target = d.mount_dir().join("shared1");

    // Both tasks start at once, each running its own dvdcli mount of a
    // volume that does not exist yet.
    let (a, b) = std::thread::scope(|s| {
        let ta = s.spawn(|| dv(&strs(&mount)));
        let tb = s.spawn(|| dv(&strs(&mount)));
        (ta.join().expect("task A"), tb.join().expect("task B"))
    });
    let (a, b) = (a.ok("task A mounts"), b.ok("task B mounts"));
    assert_eq!(a.line(), b.line(), "both tasks get the same path");
    let path = PathBuf::from(a.line());
    assert_eq!(
        fs_at(&target).as_deref(),
        Some("ext4"),
        "the default filesystem"
    );
    std::fs::write(path.join("shared"), b"x").expect("write");
    assert_eq!(d.status("counting", "shared1")["mountCount"], json!(2));

    dv(&unmount).ok("task A ends");
    assert_eq!(
        fs_at(&target).as_deref(),
        Some("ext4"),
        "still mounted for task B"
    );
    assert!(path.join("shared").exists(), "task B still sees its data");
    assert_eq!(d.status("counting", "shared1")["mountCount"], json!(1));

    let last = dv(&unmount).ok("task B ends");
    assert_eq!(fs_at(&target), None, "the last unmount unmounts");
    eprintln!(
        "timings (dvdcli, counting): mount {:?} / {:?}, last unmount {:?}",
        a.took, b.took, last.took
    );

    dv(&["remove", "--volumedriver=counting", "--volumename=shared1"]).ok("remove");
    assert!(loops_under(d.dirs.root()).is_empty(), "no loop device left");
    d.stop();
}

// ---------------------------------------------------------------- a plugin that never answers

/// Accepts connections and never answers them.
struct HungPlugin {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HungPlugin {
    fn bind(socket: &Path) -> HungPlugin {
        let l = UnixListener::bind(socket).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HungPlugin {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HungPlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_plugin_that_never_answers_fails_within_the_timeout() {
    let dirs = Dirs::new();
    let sock = dirs.sockets().join("hung.sock");
    let _p = HungPlugin::bind(&sock);
    for args in [
        strs(&dvdi_mount_args("hung", "v1", SEED_OPTS, "false")),
        vec!["unmount", "--volumedriver=hung", "--volumename=v1"],
    ] {
        let r = dirs
            .dvdcli(&args, &[("DVDCLI_TIMEOUT", "2s")])
            .fails("hung plugin");
        assert!(
            r.took >= Duration::from_secs(2) && r.took < Duration::from_secs(8),
            "{}: gave up after {:?}, expected about 2 s",
            args[0],
            r.took
        );
        assert!(
            r.stderr.contains("no answer within 2s") && r.stderr.contains("hung.sock"),
            "the error names the socket and the limit: {}",
            r.stderr
        );
        eprintln!(
            "timings: {} against a hung plugin gave up after {:?}",
            args[0], r.took
        );
    }
}

#[test]
fn unknown_driver_and_bad_command_lines_exit_1() {
    let dirs = Dirs::new();
    let r = dirs
        .dvdcli(&["mount", "--volumedriver=ghost", "--volumename=v"], &[])
        .fails("unknown driver");
    assert!(r.stderr.contains("\"ghost\" not found"), "{}", r.stderr);
    // With the default retry budget, a missing driver is waited for, then
    // given up on, as Docker does (tries at 0, 1, 3 s within 5 s here).
    let r = dirs
        .dvdcli(
            &["get", "--volumedriver=ghost", "--volumename=v"],
            &[("DVDCLI_RETRY_TIMEOUT", "5s")],
        )
        .fails("unknown driver, retried");
    assert!(
        r.took >= Duration::from_secs(3) && r.took < Duration::from_secs(5),
        "{:?}",
        r.took
    );
    assert_eq!(r.stderr.matches("retrying in").count(), 2, "{}", r.stderr);
    for (args, needle) in [
        (
            &[
                "mount",
                "--volumedriver=x",
                "--volumename=v",
                "--volumesize=5",
            ][..],
            "unknown flag",
        ),
        (
            &["mount", "--volumedriver=x/y", "--volumename=v"][..],
            "'/'",
        ),
        (
            &["mount", "--volumedriver=x", "--volumename=a/b"][..],
            "'/'",
        ),
        (&["mount", "--volumedriver=x"][..], "--volumename"),
        (
            &[
                "unmount",
                "--volumedriver=x",
                "--volumename=v",
                "--volumeopts=a=1",
            ][..],
            "only create and mount",
        ),
        (&["eject"][..], "unknown command"),
    ] {
        let r = dirs.dvdcli(args, &[]).fails(&format!("{args:?}"));
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    let r = dirs.dvdcli(
        &["mount", "--volumedriver=x", "--volumename=v"],
        &[("DVDCLI_TIMEOUT", "never")],
    );
    let r = r.fails("bad environment");
    assert!(r.stderr.contains("DVDCLI_TIMEOUT"), "{}", r.stderr);
    let v = dirs.dvdcli(&["version"], &[]).ok("version");
    assert!(v.stdout.contains(env!("CARGO_PKG_VERSION")), "{}", v.stdout);
    let h = dirs.dvdcli(&["--help"], &[]).ok("help");
    assert!(h.stdout.contains("--explicitcreate") && h.stdout.contains("DVDCLI_TIMEOUT"));
}

// ---------------------------------------------------------------- another v1 plugin, over a spec file

/// One request as the fake plugin saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct FakeState {
    seen: Vec<Seen>,
    /// name → (create options, mount count)
    volumes: BTreeMap<String, (Value, u32)>,
}

/// A tiny Docker volume plugin (API v1) kept in memory, written the way a
/// third-party Go plugin answers: errors as HTTP 500 + `{"Err"}`, an empty
/// list as `"Volumes": null`.
struct FakePlugin {
    state: Arc<Mutex<FakeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

trait Accept: Send + 'static {
    type Conn: Read + Write;
    fn accept_conn(&self) -> std::io::Result<Self::Conn>;
}

impl Accept for TcpListener {
    type Conn = std::net::TcpStream;
    fn accept_conn(&self) -> std::io::Result<Self::Conn> {
        let (c, _) = self.accept()?;
        c.set_nonblocking(false)?;
        Ok(c)
    }
}

impl Accept for UnixListener {
    type Conn = UnixStream;
    fn accept_conn(&self) -> std::io::Result<Self::Conn> {
        let (c, _) = self.accept()?;
        c.set_nonblocking(false)?;
        Ok(c)
    }
}

fn mountpoint_of(name: &str) -> String {
    format!("/fake/mnt/{name}")
}

fn answer(state: &Mutex<FakeState>, method: &str, body: &Value) -> (u16, Value) {
    let mut st = state.lock().expect("state");
    let name = body["Name"].as_str().unwrap_or_default().to_string();
    let missing = || (500, json!({ "Err": format!("no such volume: {name}") }));
    match method {
        "Plugin.Activate" => (200, json!({ "Implements": ["VolumeDriver"] })),
        "VolumeDriver.Capabilities" => (200, json!({ "Capabilities": { "Scope": "local" } })),
        "VolumeDriver.Create" => {
            st.volumes
                .entry(name)
                .or_insert_with(|| (body["Opts"].clone(), 0));
            (200, json!({ "Err": "" }))
        }
        "VolumeDriver.Get" => match st.volumes.get(&name) {
            Some((_, n)) => {
                let mp = if *n > 0 {
                    mountpoint_of(&name)
                } else {
                    String::new()
                };
                (
                    200,
                    json!({ "Volume": { "Name": name, "Mountpoint": mp, "Status": {} }, "Err": "" }),
                )
            }
            None => missing(),
        },
        "VolumeDriver.Mount" => match st.volumes.get_mut(&name) {
            Some((_, n)) => {
                *n += 1;
                (
                    200,
                    json!({ "Mountpoint": mountpoint_of(&name), "Err": "" }),
                )
            }
            None => missing(),
        },
        "VolumeDriver.Unmount" => match st.volumes.get_mut(&name) {
            Some((_, n)) => {
                *n = n.saturating_sub(1);
                (200, json!({ "Err": "" }))
            }
            None => missing(),
        },
        "VolumeDriver.Path" => match st.volumes.get(&name) {
            Some((_, n)) if *n > 0 => (200, json!({ "Mountpoint": mountpoint_of(&name) })),
            Some(_) => (200, json!({ "Mountpoint": "" })),
            None => missing(),
        },
        "VolumeDriver.Remove" => {
            st.volumes.remove(&name);
            (200, json!({ "Err": "" }))
        }
        "VolumeDriver.List" => {
            let vols: Vec<Value> = st
                .volumes
                .keys()
                .map(|n| json!({ "Name": n, "Mountpoint": "" }))
                .collect();
            let vols = if vols.is_empty() {
                Value::Null
            } else {
                Value::Array(vols)
            };
            (200, json!({ "Volumes": vols, "Err": "" }))
        }
        _ => (404, json!({ "Err": "404 page not found" })),
    }
}

fn serve_one<C: Read + Write>(conn: C, state: &Mutex<FakeState>) -> std::io::Result<()> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (verb, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let method = path.trim_start_matches('/').to_string();
    state.lock().expect("state").seen.push(Seen {
        method: method.clone(),
        headers,
        body: body.clone(),
    });
    let (code, value) = if verb == "POST" {
        answer(
            state,
            &method,
            &serde_json::from_str(&body).unwrap_or(Value::Null),
        )
    } else {
        (405, json!({ "Err": "POST only" }))
    };
    let text = value.to_string();
    let reason = if code == 200 { "OK" } else { "Error" };
    let mut conn = r.into_inner();
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1.1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

impl FakePlugin {
    fn serve<L: Accept>(listener: L) -> FakePlugin {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                match listener.accept_conn() {
                    Ok(c) => {
                        let _ = serve_one(c, &st);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakePlugin {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn tcp() -> (FakePlugin, String) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        let addr = l.local_addr().expect("addr").to_string();
        (FakePlugin::serve(l), addr)
    }

    fn unix(socket: &Path) -> FakePlugin {
        let l = UnixListener::bind(socket).expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        FakePlugin::serve(l)
    }

    /// The requests since the last call.
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().expect("state").seen)
    }

    fn methods(seen: &[Seen]) -> Vec<&str> {
        seen.iter().map(|s| s.method.as_str()).collect()
    }

    fn opts_of(&self, name: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("state")
            .volumes
            .get(name)
            .map(|(o, _)| o.clone())
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The flows of the berthd tests, against the fake plugin called `driver`,
/// checking the exact calls dvdcli makes.
fn run_flows(dirs: &Dirs, fake: &FakePlugin, driver: &str) {
    let dv = |args: &[String]| dirs.dvdcli(&strs(args), &[]);
    let a = |s: &str| s.to_string();
    let d = format!("--volumedriver={driver}");
    let n = a("--volumename=test12345");

    // Mount as mesos-module-dvdi runs it: Activate, Get, Create(opts), Mount.
    let r = dv(&dvdi_mount_args(driver, "test12345", SEED_OPTS, "false")).ok("mount");
    assert_eq!(r.line(), mountpoint_of("test12345"));
    let seen = fake.take();
    assert_eq!(
        FakePlugin::methods(&seen),
        [
            "Plugin.Activate",
            "VolumeDriver.Get",
            "VolumeDriver.Create",
            "VolumeDriver.Mount"
        ]
    );
    assert_eq!(
        seen[0].body, "",
        "Activate has an empty body, as dockerd sends it"
    );
    for s in &seen {
        assert_eq!(
            s.headers.get("accept").map(String::as_str),
            Some("application/vnd.docker.plugins.v1.2+json")
        );
    }
    assert_eq!(
        seen[2].json(),
        json!({ "Name": "test12345", "Opts": {
            "size": "5", "iops": "150", "volumetype": "io1", "newfstype": "xfs", "overwritefs": "true"
        }})
    );
    assert_eq!(
        seen[3].json(),
        json!({ "Name": "test12345" }),
        "Mount without an ID"
    );

    // A second task: the volume exists, so no Create.
    let r = dv(&dvdi_mount_args(driver, "test12345", SEED_OPTS, "false")).ok("mount again");
    assert_eq!(r.line(), mountpoint_of("test12345"));
    assert!(
        r.stderr.contains("not applied"),
        "says the options were not applied: {}",
        r.stderr
    );
    assert_eq!(
        FakePlugin::methods(&fake.take()),
        ["Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Mount"]
    );

    // path, from Get's mountpoint.
    let r = dv(&[a("path"), d.clone(), n.clone()]).ok("path");
    assert_eq!(r.line(), mountpoint_of("test12345"));
    assert_eq!(
        FakePlugin::methods(&fake.take()),
        ["Plugin.Activate", "VolumeDriver.Get"]
    );

    // unmount twice: Get, Unmount without an ID.
    for _ in 0..2 {
        let r = dv(&[a("unmount"), d.clone(), n.clone()]).ok("unmount");
        assert!(r.stdout.is_empty());
        let seen = fake.take();
        assert_eq!(
            FakePlugin::methods(&seen),
            [
                "Plugin.Activate",
                "VolumeDriver.Get",
                "VolumeDriver.Unmount"
            ]
        );
        assert_eq!(seen[2].json(), json!({ "Name": "test12345" }));
    }
    // path of an unmounted volume: Get has no mountpoint, so Path; nothing printed.
    let r = dv(&[a("path"), d.clone(), n.clone()]).ok("path, unmounted");
    assert!(r.stdout.is_empty(), "{:?}", r.stdout);
    assert_eq!(
        FakePlugin::methods(&fake.take()),
        ["Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Path"]
    );

    // get, list, create (a value with '=' stays whole), remove.
    assert_eq!(
        dv(&[a("get"), d.clone(), n.clone()]).ok("get").line(),
        "test12345"
    );
    let r = dv(&[
        a("create"),
        d.clone(),
        a("--volumename=other1"),
        a("--volumeopts=opt=a=b=c,size=1"),
        a("--volumeopts"),
        a("\"label=x,y\""),
    ])
    .ok("create");
    assert!(r.stdout.is_empty(), "create prints nothing: {:?}", r.stdout);
    assert_eq!(
        fake.opts_of("other1"),
        Some(json!({ "opt": "a=b=c", "size": "1", "label": "x,y" }))
    );
    let r = dv(&[a("list"), d.clone()]).ok("list");
    assert_eq!(r.stdout, "other1\ntest12345\n");
    fake.take();
    for v in ["other1", "test12345"] {
        dv(&[a("remove"), d.clone(), format!("--volumename={v}")]).ok("remove");
        assert_eq!(
            FakePlugin::methods(&fake.take()),
            ["Plugin.Activate", "VolumeDriver.Get", "VolumeDriver.Remove"]
        );
    }
    // An empty list arrives as "Volumes": null.
    assert!(dv(&[a("list"), d.clone()])
        .ok("empty list")
        .stdout
        .is_empty());

    // Errors: explicit create of a missing volume stops after Get.
    let r = dv(&dvdi_mount_args(driver, "absent1", "size=1", "true")).fails("explicit");
    assert!(
        r.stderr.contains("absent1") && r.stderr.contains("no such volume"),
        "{}",
        r.stderr
    );
    fake.take();
    // Unmount and get of a missing volume fail.
    dv(&[a("unmount"), d.clone(), a("--volumename=absent1")]).fails("unmount missing");
    dv(&[a("get"), d.clone(), a("--volumename=absent1")]).fails("get missing");
    assert_eq!(
        FakePlugin::methods(&fake.take()),
        [
            "Plugin.Activate",
            "VolumeDriver.Get",
            "Plugin.Activate",
            "VolumeDriver.Get"
        ],
        "nothing after a failed Get"
    );
    // An option without '=': nothing is sent at all.
    let r = dv(&[
        a("mount"),
        d.clone(),
        n.clone(),
        a("--volumeopts=size=1,iops"),
    ])
    .fails("no '='");
    assert!(
        r.stderr.contains("\"iops\" is not KEY=VALUE"),
        "{}",
        r.stderr
    );
    assert!(fake.take().is_empty(), "no request for a bad command line");
}

#[test]
fn any_v1_plugin_through_a_spec_file() {
    let dirs = Dirs::new();
    let (fake, addr) = FakePlugin::tcp();
    std::fs::write(
        dirs.specs().join("fakespec.spec"),
        format!("tcp://{addr}\n"),
    )
    .expect("spec");
    run_flows(&dirs, &fake, "fakespec");
    // Over TCP the Host header is the plugin's address.
    dirs.dvdcli(&["list", "--volumedriver=fakespec"], &[])
        .ok("list");
    let seen = fake.take();
    assert_eq!(seen[0].headers.get("host"), Some(&addr));
}

#[test]
fn any_v1_plugin_through_a_json_file_in_the_second_directory() {
    let dirs = Dirs::new();
    let elsewhere = dirs.root().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let sock = elsewhere.join("plugin.sock");
    let fake = FakePlugin::unix(&sock);
    let nested = dirs.root().join("lib-specs").join("fakejson");
    std::fs::create_dir_all(&nested).expect("mkdir");
    std::fs::write(
        nested.join("fakejson.json"),
        json!({ "Name": "fakejson", "Addr": format!("unix://{}", sock.display()) }).to_string(),
    )
    .expect("json");
    run_flows(&dirs, &fake, "fakejson");
}

#[test]
fn a_socket_in_the_socket_directory_wins_over_spec_files() {
    let dirs = Dirs::new();
    let sock_plugin = FakePlugin::unix(&dirs.sockets().join("both.sock"));
    let (spec_plugin, addr) = FakePlugin::tcp();
    std::fs::write(dirs.specs().join("both.spec"), format!("tcp://{addr}")).expect("spec");
    dirs.dvdcli(&["list", "--volumedriver=both"], &[])
        .ok("list");
    assert_eq!(
        sock_plugin.take().len(),
        2,
        "Activate and List on the socket"
    );
    assert!(spec_plugin.take().is_empty(), "the spec file is not used");
}
