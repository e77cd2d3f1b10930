//! Shared helpers for the integration tests: start a real `berthd` with a
//! private config, talk to it over its socket, and check the host for
//! leftovers.

#![allow(dead_code)]

pub mod ceph;
pub mod hangfs;
pub mod loopfs;
pub mod old;
pub mod probe;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth::client::PluginClient;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::Value;

/// True when the test may use loop devices, mkfs and mount. When it may
/// not, prints a loud SKIPPED line naming the test.
pub fn can_use_storage(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let loop_ctl = Path::new("/dev/loop-control").exists();
    let tools = which("mkfs.ext4") && which("blkid");
    if root && loop_ctl && tools {
        return true;
    }
    eprintln!(
        "SKIPPED (needs root, /dev/loop-control, mkfs.ext4 and blkid): {test} \
         [root={root} loop-control={loop_ctl} tools={tools}]"
    );
    false
}

/// Whether `tool` is on PATH.
pub fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// A running berthd with its own directories.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub extra_env: Vec<(String, String)>,
    /// Network namespace (`/run/netns/NAME`) berthd runs in, entered with
    /// `nsenter --net` only (mounts stay in the host's mount namespace).
    pub netns: Option<String>,
    /// The service whose socket tells that berthd is up.
    pub ready_service: String,
    /// The berthd executable (this build's unless
    /// [`DaemonBuilder::binary`] named another, e.g. an older release).
    pub bin: PathBuf,
}

/// How to start a [`Daemon`]: every integration test starts berthd
/// through this, e.g.
///
/// ```ignore
/// let d = Daemon::builder()
///     .daemon_toml("command_timeout = \"2s\"\n")
///     .service_toml("[services.fast]\ndriver = \"loop\"\n")
///     .env("RUST_LOG", "warn")
///     .start();
/// ```
///
/// Without `service_toml` naming a `[services.*]` table, the config has
/// one loop service, `berth`.
#[must_use]
#[derive(Default)]
pub struct DaemonBuilder {
    daemon_toml: String,
    service_toml: String,
    env: Vec<(String, String)>,
    netns: Option<String>,
    dir: Option<tempfile::TempDir>,
    bin: Option<PathBuf>,
}

impl DaemonBuilder {
    /// More `[daemon]` keys, one `key = value` per line.
    pub fn daemon_toml(mut self, toml: &str) -> Self {
        self.daemon_toml.push_str(toml);
        self
    }

    /// `[services.*]` tables and any other tables of the config.
    pub fn service_toml(mut self, toml: &str) -> Self {
        self.service_toml.push_str(toml);
        self
    }

    /// One environment variable of the berthd process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Several environment variables (e.g. a Ceph cluster's `env()`).
    pub fn envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// Runs berthd inside network namespace `/run/netns/NAME` (a
    /// simulated host of [`ceph`]), entered with `nsenter --net` only:
    /// mounts stay in the host's mount namespace.
    pub fn netns(mut self, ns: &str) -> Self {
        self.netns = Some(ns.to_string());
        self
    }

    /// Runs `bin` instead of this build's berthd (an older release, to
    /// test upgrades); [`Daemon::bin`] can change it between starts.
    pub fn binary(mut self, bin: &Path) -> Self {
        self.bin = Some(bin.to_path_buf());
        self
    }

    /// The directory berthd's config, state, sockets (`plugins/`), mounts
    /// (`mnt/`) and log go to; a fresh one when not given. For tests that
    /// prepare files there the config refers to.
    pub fn dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Writes the config and starts berthd; returns once the socket of
    /// the `berth` service (when the config has one, else of the first
    /// service) answers.
    pub fn start(self) -> Daemon {
        let dir = self.dir.unwrap_or_else(|| {
            tempfile::Builder::new()
                .prefix("berth-test-")
                .tempdir()
                .expect("tempdir")
        });
        let config = dir.path().join("config.toml");
        let mut text = format!(
            "[daemon]\nplugins_dir = \"{p}/plugins\"\nstate_dir = \"{p}/state\"\nmount_dir = \"{p}/mnt\"\nlog_level = \"debug\"\n",
            p = dir.path().display()
        );
        text.push_str(&self.daemon_toml);
        text.push_str(&self.service_toml);
        if !self.service_toml.contains("[services.") {
            text.push_str("\n[services.berth]\ndriver = \"loop\"\n");
        }
        let ready_service = if text.contains("[services.berth]") {
            "berth".to_string()
        } else {
            text.lines()
                .find_map(|l| l.trim().strip_prefix("[services."))
                .and_then(|r| r.split(['.', ']']).next())
                .unwrap_or("berth")
                .trim_matches('"')
                .to_string()
        };
        std::fs::write(&config, text).expect("write config");
        let mut d = Daemon {
            dir,
            child: None,
            config,
            extra_env: self.env,
            netns: self.netns,
            ready_service,
            bin: self
                .bin
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_berthd"))),
        };
        d.spawn();
        d
    }
}

impl Daemon {
    /// The one way tests start berthd: see [`DaemonBuilder`].
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// Stops berthd (SIGTERM) and starts it again on the same config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Starts one more berthd process on this daemon's config serving only
    /// `service` (as the systemd template units run them); its log goes to
    /// `<service>.log`. The caller stops it.
    pub fn spawn_service(&self, service: &str) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("{service}.log")))
            .expect("log file");
        self.command()
            .args(["--service", service])
            .stderr(log)
            .spawn()
            .expect("spawn berthd")
    }

    /// The berthd command line on this daemon's config, in its network
    /// namespace, with its environment.
    fn command(&self) -> Command {
        let bin = self.bin.to_string_lossy();
        let mut cmd = match &self.netns {
            // nsenter execs berthd: the child's PID is berthd's.
            Some(ns) => ceph::host_cmd(ns, &[bin.as_ref()]),
            None => Command::new(&self.bin),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the daemon process (its log appends to berthd.log).
    fn start_process(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("log file");
        let mut cmd = self.command();
        cmd.stderr(log);
        self.child = Some(cmd.spawn().expect("spawn berthd"));
    }

    /// Starts (again) the daemon process and waits until it answers.
    pub fn spawn(&mut self) {
        self.start_process();
        let service = self.ready_service.clone();
        self.wait_ready(&service);
    }

    /// Waits until `service`'s socket answers Activate.
    pub fn wait_ready(&mut self, service: &str) {
        let sock = self.socket(service);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("berthd exited early ({status}); log:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not start; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    pub fn socket(&self, service: &str) -> PathBuf {
        self.dir
            .path()
            .join("plugins")
            .join(format!("{service}.sock"))
    }

    pub fn mount_dir(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    pub fn image_dir(&self, service: &str) -> PathBuf {
        self.dir.path().join("state/images").join(service)
    }

    pub fn records_dir(&self, service: &str) -> PathBuf {
        self.dir.path().join("state/records").join(service)
    }

    /// SIGKILL, no clean-up by the daemon.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn client(&self, service: &str) -> Api {
        Api {
            client: PluginClient::new(self.socket(service), Duration::from_secs(130)),
        }
    }

    /// Everything this daemon's directories still have mounted or attached.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers_under(self.dir.path())
    }
}

/// Mounts and loop devices that reference `root`.
pub fn leftovers_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let r = root.to_string_lossy();
    for line in mi.lines() {
        if line.contains(&*r) {
            out.push(format!("mount: {line}"));
        }
    }
    for (dev, backing) in berth::sys::loopdev::list_attached() {
        if backing.starts_with(root) {
            out.push(format!("loop: {} -> {}", dev.display(), backing.display()));
        }
    }
    out
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // Best-effort clean-up so one failing test can't leak into others.
        cleanup_under(self.dir.path());
    }
}

/// Unmounts everything under `dir` (newest first) and detaches loop
/// devices backed by files under it.
pub fn cleanup_under(dir: &Path) {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    for _ in 0..3 {
        let Ok(table) = berth::sys::mounts::MountTable::read() else {
            break;
        };
        let mut targets: Vec<PathBuf> = table.under(&canon).map(|m| m.target.clone()).collect();
        if targets.is_empty() {
            break;
        }
        targets.reverse();
        for t in targets {
            if berth::sys::mounts::unmount(&t).is_err() {
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

/// A small synchronous facade over the plugin client.
pub struct Api {
    pub client: PluginClient,
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

impl Api {
    /// POSTs `body` to `/method`: (status, parsed JSON).
    pub fn raw(&self, method: &str, body: &str) -> (StatusCode, Value) {
        let (status, bytes) = rt()
            .block_on(self.client.call_raw(method, Bytes::from(body.to_string())))
            .expect("transport");
        let v = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "answer to {method} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, v)
    }

    /// POSTs `body` to `/method` and returns the answer's status and
    /// bytes as received, unparsed (what a client waits for before its
    /// own decoding).
    pub fn raw_bytes(&self, method: &str, body: &str) -> (StatusCode, Bytes) {
        rt().block_on(self.client.call_raw(method, Bytes::from(body.to_string())))
            .expect("transport")
    }

    /// Calls and expects 200 with an empty Err.
    pub fn ok(&self, method: &str, body: Value) -> Value {
        let (s, v) = self.raw(method, &body.to_string());
        assert_eq!(s, StatusCode::OK, "{method} {body}: {v}");
        assert!(v.get("Err").is_none_or(|e| e == ""), "{method}: {v}");
        v
    }

    /// Calls and expects an error answer; returns its message.
    pub fn err(&self, method: &str, body: Value) -> String {
        let (s, v) = self.raw(method, &body.to_string());
        assert_ne!(s, StatusCode::OK, "{method} {body} should fail: {v}");
        v["Err"]
            .as_str()
            .unwrap_or_else(|| panic!("no Err in {v}"))
            .to_string()
    }

    pub fn create(&self, name: &str, opts: &[(&str, &str)]) {
        let o: serde_json::Map<String, Value> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.ok(
            "VolumeDriver.Create",
            serde_json::json!({"Name": name, "Opts": o}),
        );
    }

    pub fn mount(&self, name: &str, id: Option<&str>) -> PathBuf {
        let body = match id {
            Some(id) => serde_json::json!({"Name": name, "ID": id}),
            None => serde_json::json!({"Name": name}),
        };
        let v = self.ok("VolumeDriver.Mount", body);
        PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint"))
    }

    pub fn unmount(&self, name: &str, id: Option<&str>) {
        let body = match id {
            Some(id) => serde_json::json!({"Name": name, "ID": id}),
            None => serde_json::json!({"Name": name}),
        };
        self.ok("VolumeDriver.Unmount", body);
    }

    pub fn remove(&self, name: &str) {
        self.ok("VolumeDriver.Remove", serde_json::json!({"Name": name}));
    }

    pub fn get(&self, name: &str) -> Value {
        self.ok("VolumeDriver.Get", serde_json::json!({"Name": name}))["Volume"].clone()
    }

    /// Create that must fail; returns the error message.
    pub fn create_err(&self, name: &str, opts: &[(&str, &str)]) -> String {
        let o: serde_json::Map<String, Value> = opts
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect();
        self.err(
            "VolumeDriver.Create",
            serde_json::json!({"Name": name, "Opts": o}),
        )
    }

    /// The volume's `Status` map.
    pub fn status(&self, name: &str) -> Value {
        self.get(name)["Status"].clone()
    }

    /// `Berth.SnapshotCreate`; returns the snapshot.
    pub fn snapshot(&self, volume: &str, name: &str) -> Value {
        self.ok(
            "Berth.SnapshotCreate",
            serde_json::json!({"Volume": volume, "Name": name}),
        )["Snapshot"]
            .clone()
    }

    pub fn list_names(&self) -> Vec<String> {
        let v = self.ok("VolumeDriver.List", serde_json::json!({}));
        v["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .map(|x| x["Name"].as_str().expect("Name").to_string())
            .collect()
    }
}

/// Whether `path` is a mount point (per mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    berth::sys::mounts::MountTable::read()
        .expect("mountinfo")
        .at(path)
        .is_some()
}

/// Filesystem type on a device or image, per blkid.
pub fn blkid_type(dev: &Path) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(dev)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------
// Robustness helpers (chaos, faults, hostile, load, limits).
// ---------------------------------------------------------------------

/// The seed of a randomized test: `BERTH_TEST_SEED` or a fresh one,
/// printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("BERTH_TEST_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("{test}: seed {s} (replay with BERTH_TEST_SEED={s})");
    s
}

/// A number from the environment, or `default`.
pub fn env_num(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// FNV-1a, 64 bits: a checksum for test data.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Nearest-rank percentile of `v` (sorted in place).
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

impl Daemon {
    /// Starts the process again after a kill and returns how long it took
    /// until the socket accepted a connection (reconciliation included).
    pub fn respawn_timed(&mut self) -> Duration {
        let start = Instant::now();
        self.start_process();
        let sock = self.socket(&self.ready_service.clone());
        let deadline = start + Duration::from_secs(60);
        loop {
            if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
                return start.elapsed();
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "berthd exited early ({status}); log tail:\n{}",
                        self.log_tail(60)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not come back within 60 s; log tail:\n{}",
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// What is on disk and in the kernel for `service`.
    pub fn disk_state(&self, service: &str) -> DiskState {
        DiskState::read(
            &self.records_dir(service),
            &self.image_dir(service),
            &self.mount_dir(),
            self.dir.path(),
        )
    }
}

/// A snapshot of everything a service owns or might leak: records, images,
/// mounts under the mount directory, loop devices on files under the
/// test's directory, and the mount directory's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskState {
    /// Record file name → raw content.
    pub records: std::collections::BTreeMap<String, Vec<u8>>,
    /// Other files in the records directory (temp files, …).
    pub record_junk: Vec<String>,
    /// Snapshot record file name → raw content (`<records>/snapshots`).
    pub snapshots: std::collections::BTreeMap<String, Vec<u8>>,
    /// Other files in the snapshot records directory.
    pub snapshot_junk: Vec<String>,
    /// Image file name (volume `.img`, snapshot `.snap`, anything else
    /// left there) → length.
    pub images: std::collections::BTreeMap<String, u64>,
    /// (target, source) of every mount under the mount directory.
    pub mounts: Vec<(PathBuf, String)>,
    /// (device, backing file) of loop devices on our files.
    pub loops: Vec<(PathBuf, PathBuf)>,
    /// Entries of the mount directory.
    pub mount_dir_entries: Vec<String>,
    mount_dir: PathBuf,
    image_dir: PathBuf,
}

impl DiskState {
    pub fn read(records_dir: &Path, image_dir: &Path, mount_dir: &Path, root: &Path) -> DiskState {
        let mut records = std::collections::BTreeMap::new();
        let mut record_junk = Vec::new();
        if let Ok(rd) = std::fs::read_dir(records_dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".json") && !n.starts_with('.') {
                    records.insert(n, std::fs::read(e.path()).unwrap_or_default());
                } else if n == "snapshots" && e.path().is_dir() {
                    // The service's snapshot records live here.
                    continue;
                } else {
                    record_junk.push(n);
                }
            }
        }
        let mut snapshots = std::collections::BTreeMap::new();
        let mut snapshot_junk = Vec::new();
        if let Ok(rd) = std::fs::read_dir(records_dir.join("snapshots")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.ends_with(".json") && !n.starts_with('.') {
                    snapshots.insert(n, std::fs::read(e.path()).unwrap_or_default());
                } else {
                    snapshot_junk.push(n);
                }
            }
        }
        let mut images = std::collections::BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(image_dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                images.insert(n, len);
            }
        }
        let table = berth::sys::mounts::MountTable::read().expect("mountinfo");
        let mut mounts: Vec<(PathBuf, String)> = table
            .under(mount_dir)
            .map(|m| (m.target.clone(), m.source.clone()))
            .collect();
        mounts.sort();
        let loops = berth::sys::loopdev::list_attached()
            .into_iter()
            .filter(|(_, b)| b.starts_with(root))
            .collect();
        let mut mount_dir_entries: Vec<String> = std::fs::read_dir(mount_dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        mount_dir_entries.sort();
        DiskState {
            records,
            record_junk,
            snapshots,
            snapshot_junk,
            images,
            mounts,
            loops,
            mount_dir_entries,
            mount_dir: mount_dir.to_path_buf(),
            image_dir: image_dir.to_path_buf(),
        }
    }

    /// Parsed records by volume name.
    pub fn parsed(&self) -> std::collections::BTreeMap<String, Value> {
        self.records
            .iter()
            .filter_map(|(f, b)| {
                let name = f.strip_suffix(".json")?.to_string();
                let v: Value = serde_json::from_slice(b).ok()?;
                Some((name, v))
            })
            .collect()
    }

    /// Parsed snapshot records by snapshot name.
    pub fn parsed_snapshots(&self) -> std::collections::BTreeMap<String, Value> {
        self.snapshots
            .iter()
            .filter_map(|(f, b)| {
                let name = f.strip_suffix(".json")?.to_string();
                let v: Value = serde_json::from_slice(b).ok()?;
                Some((name, v))
            })
            .collect()
    }

    /// Snapshot names with a ready record.
    pub fn ready_snapshots(&self) -> std::collections::BTreeSet<String> {
        self.parsed_snapshots()
            .into_iter()
            .filter(|(_, v)| v["phase"] == "ready")
            .map(|(n, _)| n)
            .collect()
    }

    /// Volume names with a ready record.
    pub fn ready_names(&self) -> std::collections::BTreeSet<String> {
        self.parsed()
            .into_iter()
            .filter(|(_, v)| v["phase"] == "ready")
            .map(|(n, _)| n)
            .collect()
    }

    /// Every way the state and the system disagree: records that are not
    /// `ready`, temp files, images without records and records without
    /// images, mounts and loop devices no record owns, records whose mount
    /// count and kernel mount disagree, stacked mounts, stray mount points.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for j in &self.record_junk {
            out.push(format!("records dir holds a non-record file {j}"));
        }
        let parsed = self.parsed();
        for f in self.records.keys() {
            let stem = f.strip_suffix(".json").unwrap_or(f);
            if !parsed.contains_key(stem) {
                out.push(format!("record {f} is not valid JSON"));
            }
        }
        for (name, rec) in &parsed {
            if rec["phase"] != "ready" {
                out.push(format!("record {name} is in phase {}", rec["phase"]));
            }
            if !self.images.contains_key(&format!("{name}.img")) {
                out.push(format!("record {name} has no image"));
            }
            let count: u64 = rec["mounts"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            let target = self.mount_dir.join(name);
            let kernel: Vec<&(PathBuf, String)> =
                self.mounts.iter().filter(|(t, _)| *t == target).collect();
            if count > 0 {
                if kernel.is_empty() {
                    out.push(format!(
                        "record {name} holds {count} mount(s) but nothing is mounted at {}",
                        target.display()
                    ));
                }
                if rec["mounted"].is_null() {
                    out.push(format!("record {name} holds mounts but says not mounted"));
                }
            } else {
                if !kernel.is_empty() {
                    out.push(format!(
                        "record {name} holds no mount but {} is mounted",
                        target.display()
                    ));
                }
                if !rec["mounted"].is_null() {
                    out.push(format!("record {name} holds no mount but says mounted"));
                }
            }
            if kernel.len() > 1 {
                out.push(format!(
                    "{} is mounted {} times (stacked mounts)",
                    target.display(),
                    kernel.len()
                ));
            }
            if let Some((_, source)) = kernel.first() {
                let image = self.image_dir.join(format!("{name}.img"));
                let backed = self
                    .loops
                    .iter()
                    .any(|(d, b)| d.to_string_lossy() == source.as_str() && *b == image);
                if !backed {
                    out.push(format!(
                        "{} is mounted from {source}, which is not a loop device on {}",
                        target.display(),
                        image.display()
                    ));
                }
                if rec["mounted"]["device"].as_str() != Some(source.as_str()) {
                    out.push(format!(
                        "record {name} says device {} but the kernel mounted {source}",
                        rec["mounted"]["device"]
                    ));
                }
            }
        }
        for j in &self.snapshot_junk {
            out.push(format!("snapshot records dir holds a non-record file {j}"));
        }
        let snaps = self.parsed_snapshots();
        for f in self.snapshots.keys() {
            let stem = f.strip_suffix(".json").unwrap_or(f);
            if !snaps.contains_key(stem) {
                out.push(format!("snapshot record {f} is not valid JSON"));
            }
        }
        for (name, rec) in &snaps {
            if rec["phase"] != "ready" {
                out.push(format!(
                    "snapshot record {name} is in phase {}",
                    rec["phase"]
                ));
            }
            if !self.images.contains_key(&format!("{name}.snap")) {
                out.push(format!("snapshot record {name} has no image"));
            }
        }
        let ready = self.ready_names();
        for img in self.images.keys() {
            let owned = if let Some(stem) = img.strip_suffix(".img") {
                parsed.contains_key(stem)
            } else if let Some(stem) = img.strip_suffix(".snap") {
                snaps.contains_key(stem)
            } else {
                false
            };
            if !owned {
                out.push(format!("image file {img} belongs to no record"));
            }
        }
        for (target, source) in &self.mounts {
            let name = target
                .strip_prefix(&self.mount_dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !ready.contains(&name) {
                out.push(format!(
                    "mount {} (from {source}) belongs to no volume",
                    target.display()
                ));
            }
        }
        for (dev, backing) in &self.loops {
            let used = self
                .mounts
                .iter()
                .any(|(_, s)| s.as_str() == dev.to_string_lossy());
            if !used {
                out.push(format!(
                    "loop device {} on {} is attached but not mounted",
                    dev.display(),
                    backing.display()
                ));
            }
        }
        for e in &self.mount_dir_entries {
            let t = self.mount_dir.join(e);
            if !self.mounts.iter().any(|(m, _)| *m == t) {
                out.push(format!(
                    "stray entry {} in the mount directory",
                    t.display()
                ));
            }
        }
        out
    }
}

/// Reads the state until it has no violation or `wait` has passed (the
/// kernel detaches autoclear loop devices a moment after the unmount).
pub fn settled_violations(d: &Daemon, service: &str, wait: Duration) -> (DiskState, Vec<String>) {
    let end = Instant::now() + wait;
    loop {
        let st = d.disk_state(service);
        let v = st.violations();
        if v.is_empty() || Instant::now() >= end {
            return (st, v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A raw keep-alive HTTP/1.1 connection to a plugin socket, for floods
/// and hostile input. Every read is bounded by a timeout.
pub struct Conn {
    r: std::io::BufReader<std::os::unix::net::UnixStream>,
    w: std::os::unix::net::UnixStream,
}

/// A raw answer.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<String>,
    pub close: bool,
    pub body: Vec<u8>,
}

impl Conn {
    pub fn open(sock: &Path, timeout: Duration) -> std::io::Result<Conn> {
        let s = std::os::unix::net::UnixStream::connect(sock)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            r: std::io::BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.w.write_all(bytes)
    }

    /// POSTs `body` to `path` with a Content-Length.
    pub fn post(&mut self, path: &str, body: &[u8]) -> std::io::Result<RawAnswer> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        match self.send(&req) {
            Ok(()) => self.read_answer(),
            // The server may answer (413, 404) and close before it has
            // read the whole body: the answer is still there to read.
            Err(e)
                if e.kind() == std::io::ErrorKind::BrokenPipe
                    || e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                let mut a = self.read_answer().map_err(|_| e)?;
                a.close = true;
                Ok(a)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads (and drops) whatever comes until the server closes the
    /// connection: `true`; `false` when the read timeout passes first.
    pub fn wait_closed(&mut self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 4096];
        loop {
            match self.r.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return false
                }
                Err(_) => return true,
            }
        }
    }

    /// Reads one answer (status line, headers, Content-Length body).
    pub fn read_answer(&mut self) -> std::io::Result<RawAnswer> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        let mut content_type = None;
        let mut close = false;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("content-type:") {
                content_type = Some(v.trim().to_string());
            } else if l.starts_with("connection:") && l.contains("close") {
                close = true;
            }
        }
        let mut body = vec![0u8; len];
        self.r.read_exact(&mut body)?;
        Ok(RawAnswer {
            status,
            content_type,
            close,
            body,
        })
    }
}
