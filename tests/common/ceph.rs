//! A real, throw-away Ceph cluster and two simulated hosts for the tests.
//!
//! Two network namespaces, [`HOST_A`] (169.254.77.1) and [`HOST_B`]
//! (169.254.77.2), joined by a veth pair, stand for two machines; the
//! cluster's daemons (mon, mgr, one OSD on a sparse file, MDS) run in host A
//! at [`HOST_A_IP`], so both hosts reach it. Processes enter a host with
//! `nsenter --net` only: their mounts land in the normal mount namespace.
//! The shell scripts doing the work are `tests/ceph/hosts.sh` and
//! `tests/ceph/cluster.sh`.
//!
//! ```ignore
//! let Some(ceph) = CephCluster::start_or_skip("my_test") else { return };
//! ceph.run(HOST_B, &["ceph", "fs", "subvolume", "create", "cephfs", "v1"]);
//! let d = Daemon::builder().netns(HOST_A).service_toml(&services_toml).envs(ceph.env()).start();
//! // dropping `d`, then `ceph`, stops everything and checks nothing is left
//! ```
//!
//! One cluster at a time per machine: [`CephCluster::start`] takes an
//! exclusive `flock` that its `Drop` releases.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

pub const HOST_A: &str = "berth-a";
pub const HOST_B: &str = "berth-b";
pub const HOST_A_IP: &str = "169.254.77.1";
pub const HOST_B_IP: &str = "169.254.77.2";
/// The monitor's msgr2 port (inside host A's namespace, so it cannot clash
/// with anything on the machine).
pub const MON_PORT: u16 = 13300;

const LOCK_FILE: &str = "/run/lock/berth-ceph-tests.lock";

/// Programs the cluster and the two hosts need.
const TOOLS: &[&str] = &[
    "ceph-mon",
    "ceph-mgr",
    "ceph-osd",
    "ceph-mds",
    "ceph",
    "ceph-authtool",
    "monmaptool",
    "rbd",
    "ceph-fuse",
    "rbd-fuse",
    "fusermount",
    "nsenter",
    "ip",
    "uuidgen",
    "bc",
    "losetup",
    "findmnt",
];

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph")
}

/// A command run inside the simulated host `host` (a network namespace):
/// `nsenter --net=/run/netns/HOST -- ARGS...`. `nsenter` execs the program,
/// so a spawned child's PID is the program's.
pub fn host_cmd(host: &str, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{host}"))
        .arg("--")
        .args(args);
    c
}

/// Runs `hosts.sh up`: both namespaces exist and are wired (idempotent).
pub fn hosts_up() {
    script("hosts.sh", &["up"]);
}

/// Runs `hosts.sh down` (idempotent).
pub fn hosts_down() {
    script("hosts.sh", &["down"]);
}

/// Whether the named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn script(name: &str, args: &[&str]) -> Output {
    let out = Command::new(scripts().join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    assert!(
        out.status.success(),
        "{name} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Live (non-zombie) processes other than this one whose command line
/// contains `needle` or whose environment has `CEPH_CONF=<needle>…`:
/// (pid, command line).
pub fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let p = e.path();
        let state = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let state = state
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or("X");
        if state == "Z" || state == "X" {
            continue;
        }
        let cmdline = std::fs::read(p.join("cmdline"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let environ = std::fs::read(p.join("environ")).unwrap_or_default();
        let env_hit = environ
            .split(|b| *b == 0)
            .any(|v| v.starts_with(format!("CEPH_CONF={needle}").as_bytes()));
        if cmdline.contains(needle) || env_hit {
            out.push((pid, cmdline));
        }
    }
    out
}

/// A running cluster; dropping it stops the cluster and the two hosts and
/// removes its directory.
pub struct CephCluster {
    /// Work directory, unique per run (`/tmp/berth-ceph-<pid>-<nanos>`).
    pub dir: PathBuf,
    /// The cluster's ceph.conf (clients: `CEPH_CONF`, or `-c`).
    pub conf: PathBuf,
    /// client.admin's keyring (ceph.conf also points clients at it).
    pub keyring: PathBuf,
    /// The monitor's address, `v2:169.254.77.1:13300`.
    pub mon_addr: String,
    /// How long `cluster.sh up` took.
    pub up_time: Duration,
    mount_roots: Vec<PathBuf>,
    stopped: bool,
    _lock: Flock<File>,
}

impl CephCluster {
    /// What this machine lacks for a cluster (empty: nothing).
    pub fn missing() -> Vec<String> {
        let mut out = Vec::new();
        if !nix::unistd::geteuid().is_root() {
            out.push("root".to_string());
        }
        for t in TOOLS {
            if !super::which(t) {
                out.push((*t).to_string());
            }
        }
        if !Path::new("/dev/fuse").exists() {
            out.push("/dev/fuse".to_string());
        }
        out
    }

    /// Whether the Ceph tools exist and we are root.
    pub fn available() -> bool {
        Self::missing().is_empty()
    }

    /// Starts a cluster, or prints `SKIP: <test>: …` and returns `None`
    /// when [`CephCluster::available`] says no. With `BERTH_REQUIRE_CEPH=1`
    /// in the environment, a missing tool is a failure instead.
    pub fn start_or_skip(test: &str) -> Option<CephCluster> {
        let missing = Self::missing();
        if missing.is_empty() {
            return Some(Self::start());
        }
        let msg = format!(
            "{test}: needs root and the Ceph tools (missing: {})",
            missing.join(", ")
        );
        if std::env::var_os("BERTH_REQUIRE_CEPH").is_some_and(|v| v == "1") {
            panic!("BERTH_REQUIRE_CEPH=1 but {msg}");
        }
        eprintln!("SKIP: {msg}");
        None
    }

    /// Brings up the two hosts and a fresh cluster in host A (about 6 s).
    /// Panics, with the log, when the cluster does not come up.
    pub fn start() -> CephCluster {
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("open {LOCK_FILE}: {e}"));
        let lock = Flock::lock(lock, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("flock {LOCK_FILE}: {e}"));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = PathBuf::from(format!("/tmp/berth-ceph-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(dir.join("mnt")).expect("create the cluster's work dir");
        let cdir = dir.join("cluster");
        let mut c = CephCluster {
            conf: cdir.join("ceph.conf"),
            keyring: cdir.join("client.admin.keyring"),
            mon_addr: format!("v2:{HOST_A_IP}:{MON_PORT}"),
            up_time: Duration::ZERO,
            mount_roots: vec![dir.join("mnt")],
            stopped: false,
            _lock: lock,
            dir,
        };
        reap_stale_runs(&c.dir);
        hosts_up();
        let log_path = c.dir.join("up.log");
        let log = File::create(&log_path).expect("up.log");
        let start = Instant::now();
        let status = Command::new(scripts().join("cluster.sh"))
            .arg("up")
            .arg(&cdir)
            .arg(HOST_A_IP)
            .arg(HOST_A)
            .env("MON_PORT", MON_PORT.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .status()
            .expect("run cluster.sh up");
        c.up_time = start.elapsed();
        // The step timestamps, for the test's output.
        let steps = std::fs::read_to_string(&log_path).unwrap_or_default();
        for l in steps.lines().filter(|l| l.starts_with('[')) {
            eprintln!("ceph up {l}");
        }
        if !status.success() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let mon_log = std::fs::read_to_string(cdir.join("log/mon.a.log")).unwrap_or_default();
            let tail: Vec<&str> = mon_log.lines().rev().take(30).collect();
            drop(c);
            panic!(
                "cluster.sh up failed ({status}):\n{log}\n--- mon.a.log tail (newest first):\n{}",
                tail.join("\n")
            );
        }
        c
    }

    /// Also clean up FUSE mounts (and loop devices on files) below `root`
    /// when the cluster goes down, e.g. a berthd's mount directory. The
    /// cluster's own FUSE clients are found without it; this covers mounts
    /// whose FUSE daemon is already dead.
    pub fn add_mount_root(&mut self, root: &Path) {
        self.mount_roots.push(root.to_path_buf());
    }

    /// A directory for the test's mounts, cleaned up with the cluster.
    pub fn mnt_dir(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// Environment for Ceph clients (a berthd, the CLI): `CEPH_CONF`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "CEPH_CONF".to_string(),
            self.conf.to_string_lossy().into_owned(),
        )]
    }

    /// `args` run in `host` with this cluster's `CEPH_CONF`, e.g.
    /// `c.cmd(HOST_B, &["rbd", "ls"])`.
    pub fn cmd(&self, host: &str, args: &[&str]) -> Command {
        let mut c = host_cmd(host, args);
        c.envs(self.env()).stdin(Stdio::null());
        c
    }

    /// Runs [`CephCluster::cmd`], panics unless it succeeds; its stdout.
    pub fn run(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .cmd(host, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {host}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} in {host} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Resident memory (kB) of each cluster daemon, by PID file.
    pub fn daemon_rss(&self) -> Vec<(String, u64)> {
        ["mon.a", "mgr.x", "osd.0", "mds.a"]
            .iter()
            .filter_map(|n| {
                let pid =
                    std::fs::read_to_string(self.dir.join(format!("cluster/run/{n}.pid"))).ok()?;
                let status =
                    std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).ok()?;
                let kb = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some((n.to_string(), kb))
            })
            .collect()
    }

    /// Stops the cluster (FUSE/loop mounts of its clients first) and the
    /// two hosts, and removes the work directory; idempotent. Returns how
    /// long it took. The lock is kept until the value is dropped, so the
    /// caller may check for leftovers undisturbed.
    pub fn stop(&mut self) -> Duration {
        if self.stopped {
            return Duration::ZERO;
        }
        self.stopped = true;
        let start = Instant::now();
        let out = Command::new(scripts().join("cluster.sh"))
            .arg("down")
            .arg(self.dir.join("cluster"))
            .args(&self.mount_roots)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "cluster.sh down failed ({}):\n{}{}",
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run cluster.sh down: {e}"),
        }
        let hosts = Command::new(scripts().join("hosts.sh"))
            .arg("down")
            .stdin(Stdio::null())
            .status();
        if !matches!(hosts, Ok(s) if s.success()) {
            eprintln!("hosts.sh down failed: {hosts:?}");
        }
        // Never delete through a mount that is still there.
        let left = super::leftovers_under(&self.dir);
        if left.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("cannot remove {}: {e}", self.dir.display());
            }
        } else {
            eprintln!(
                "{} kept: still mounted or attached:\n{}",
                self.dir.display(),
                left.join("\n")
            );
        }
        start.elapsed()
    }

    /// Everything this cluster could have left behind: live processes
    /// naming its directory, mounts and loop devices under it, the
    /// namespaces and the veth pair, the directory itself.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out: Vec<String> = processes_naming(&self.dir.to_string_lossy())
            .into_iter()
            .map(|(pid, cmd)| format!("process {pid}: {cmd}"))
            .collect();
        out.extend(super::leftovers_under(&self.dir));
        for ns in [HOST_A, HOST_B] {
            if netns_exists(ns) {
                out.push(format!("network namespace {ns}"));
            }
        }
        if Path::new("/sys/class/net/bertha0").exists() {
            out.push("veth bertha0 in the host's namespace".to_string());
        }
        if self.dir.exists() {
            out.push(format!("directory {}", self.dir.display()));
        }
        out
    }
}

/// Stops and removes what runs killed before their `Drop` left behind
/// (their daemons would hold the monitor's address). Called with the lock
/// held, so every other `/tmp/berth-ceph-*` belongs to a dead run.
fn reap_stale_runs(mine: &Path) {
    let Ok(rd) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let stale = p != mine
            && e.file_name().to_string_lossy().starts_with("berth-ceph-")
            && p.join("cluster").is_dir();
        if !stale {
            continue;
        }
        eprintln!("cleaning up a previous run's cluster in {}", p.display());
        let _ = Command::new(scripts().join("cluster.sh"))
            .arg("down")
            .arg(p.join("cluster"))
            .arg(p.join("mnt"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if super::leftovers_under(&p).is_empty() {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
