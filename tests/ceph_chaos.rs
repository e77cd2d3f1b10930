//! Chaos on Ceph volumes: one berthd with a cephfs service and an rbd
//! service on a real single-node cluster runs a workload (create, mount
//! with several IDs, write + checksum, unmount, remove, snapshot create
//! and remove, clone with `volumeName=`) while it is killed with SIGKILL
//! at random moments — many inside multi-step operations (rbd create is
//! image + rbd-fuse + mkfs, mount is lock + rbd-fuse + loop + mount, a
//! cephfs unmount waits for ceph-fuse to exit) — and restarted. After
//! every restart and at the end the invariants are checked:
//!
//! 1. every volume the workload knew before the kill, and that was not
//!    being removed, still exists (Get answers) with all its data
//!    (checksums: in place when mounted, else after a mount);
//! 2. Ceph holds no image or subvolume the daemon does not list, and the
//!    daemon lists nothing the workload did not make;
//! 3. no rbd-fuse / ceph-fuse process, loop device or mount under the
//!    daemon's mount directory that no mounted volume owns, and nothing a
//!    mounted volume needs is missing;
//! 4. mount counts equal what the workload holds;
//! 5. Docker-style Unmounts sent after the restart succeed;
//! 6. an rbd volume this host has not mounted holds no lock of this
//!    host, and a mounted one holds it;
//! 7. snapshots listed are exactly those the workload took.
//!
//! An operation in flight at the kill may have happened or not (a create
//! may be cleaned up at the next start, see the service's reconcile of
//! intent records), never half.
//!
//! `cargo test --features ceph --test ceph_chaos -- --nocapture` makes
//! a short run (10 kills, part of the normal Ceph tests);
//! `BERTH_CEPH_CHAOS_KILLS` sets the number of kills (the long run of
//! scripts/chaos-long.sh: 100), `BERTH_CEPH_CHAOS=0` skips it,
//! `BERTH_TEST_SEED` replays a run. Needs root and the Ceph tools (skips
//! loudly without them).
#![cfg(feature = "ceph")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::ceph::{processes_naming, CephCluster, HOST_A};
use common::workload::{choose, free_sources, snap_key, Busy, Vol};
use common::{env_num, percentile, seed, Conn, Daemon};
use serde_json::{json, Value};

/// The cephfs service.
const FS: &str = "shared";
/// The rbd service.
const BLK: &str = "block";
const SERVICES: [&str; 2] = [FS, BLK];
/// This host's name in locks (cookie `berth:host-a`).
const HOST: &str = "host-a";
/// Volume names per service.
const NAMES: usize = 4;
/// Snapshot names per service.
const SNAPSHOTS: usize = 3;
const SIZE: &str = "64M";
const TIMEOUT: Duration = Duration::from_secs(120);
/// Kills of the short run in the normal test set (a long run:
/// `BERTH_CEPH_CHAOS_KILLS=100`, scripts/chaos-long.sh ceph).
const CI_KILLS: u64 = 10;
/// Volumes whose data is checked through a mount at each check (besides
/// the mounted ones, checked in place, and the ones a cut operation
/// touched), in a long run; the short run checks those only, and every
/// volume at the end.
const VERIFY_PER_CHECK: usize = 2;

fn config(c: &CephCluster) -> String {
    let ceph = |extra: &str| {
        format!(
            "conf = \"{}\"\nkeyring = \"{}\"\nhost = \"{HOST}\"\ntimeout = \"20s\"\n{extra}",
            c.conf.display(),
            c.keyring.display()
        )
    };
    format!(
        "[services.{FS}]\ndriver = \"cephfs\"\n[services.{FS}.ceph]\n{}\n\
         [services.{BLK}]\ndriver = \"rbd\"\n[services.{BLK}.ceph]\n{}\n",
        ceph(""),
        ceph("pool = \"rbd\"")
    )
}

/// The service of a volume or snapshot name.
fn svc_of(name: &str) -> &'static str {
    if name.starts_with("cfs") {
        FS
    } else {
        BLK
    }
}

fn prefix(svc: &str) -> &'static str {
    if svc == FS {
        "cfs"
    } else {
        "rbd"
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Mount(String, String),
    Unmount(String, String),
    Remove(String),
    /// Volume, snapshot.
    SnapCreate(String, String),
    /// Snapshot, its volume.
    SnapRemove(String, String),
    /// New volume, source volume.
    Clone(String, String),
}

impl Op {
    fn svc(&self) -> &'static str {
        match self {
            Op::Create(n)
            | Op::Mount(n, _)
            | Op::Unmount(n, _)
            | Op::Remove(n)
            | Op::SnapCreate(n, _)
            | Op::SnapRemove(_, n)
            | Op::Clone(n, _) => svc_of(n),
        }
    }

    fn keys(&self) -> Vec<String> {
        match self {
            Op::Create(n) | Op::Mount(n, _) | Op::Unmount(n, _) | Op::Remove(n) => {
                vec![n.clone()]
            }
            Op::SnapCreate(v, s) | Op::SnapRemove(s, v) => vec![v.clone(), snap_key(s)],
            Op::Clone(n, src) => vec![n.clone(), src.clone()],
        }
    }

    fn kind(&self) -> &'static str {
        let rbd = self.svc() == BLK;
        match (self, rbd) {
            (Op::Create(_), false) => "cephfs_create",
            (Op::Create(_), true) => "rbd_create",
            (Op::Mount(..), false) => "cephfs_mount",
            (Op::Mount(..), true) => "rbd_mount",
            (Op::Unmount(..), false) => "cephfs_unmount",
            (Op::Unmount(..), true) => "rbd_unmount",
            (Op::Remove(_), false) => "cephfs_remove",
            (Op::Remove(_), true) => "rbd_remove",
            (Op::SnapCreate(..), false) => "cephfs_snapshot",
            (Op::SnapCreate(..), true) => "rbd_snapshot",
            (Op::SnapRemove(..), false) => "cephfs_snapshot_remove",
            (Op::SnapRemove(..), true) => "rbd_snapshot_remove",
            (Op::Clone(..), false) => "cephfs_clone",
            (Op::Clone(..), true) => "rbd_clone",
        }
    }

    fn request(&self) -> (&'static str, Value) {
        match self {
            Op::Create(n) => (
                "/VolumeDriver.Create",
                json!({"Name": n, "Opts": {"size": SIZE}}),
            ),
            Op::Mount(n, id) => ("/VolumeDriver.Mount", json!({"Name": n, "ID": id})),
            Op::Unmount(n, id) => ("/VolumeDriver.Unmount", json!({"Name": n, "ID": id})),
            Op::Remove(n) => ("/VolumeDriver.Remove", json!({"Name": n})),
            Op::SnapCreate(v, s) => ("/Berth.SnapshotCreate", json!({"Volume": v, "Name": s})),
            Op::SnapRemove(s, _) => ("/Berth.SnapshotRemove", json!({"Name": s})),
            Op::Clone(n, src) => (
                "/VolumeDriver.Create",
                json!({"Name": n, "Opts": {"volumeName": src}}),
            ),
        }
    }
}

#[derive(Default)]
struct Figures {
    kills: u64,
    ops: u64,
    in_flight: u64,
    unanswered: u64,
    violations: Vec<String>,
    /// Restart → first answer to List of both services.
    recovery: Vec<Duration>,
    verified_files: u64,
    verified_by_mount: u64,
    late_unmounts: u64,
    lock_checks: u64,
    /// Checks that found an interrupted create/remove not cleaned up yet.
    pending_cleanups: u64,
    cut: BTreeMap<&'static str, u64>,
    took: BTreeMap<&'static str, (u64, Duration)>,
}

struct Chaos<'a> {
    c: &'a CephCluster,
    rng: fastrand::Rng,
    model: BTreeMap<String, Vol>,
    /// Snapshot → its volume.
    snaps: BTreeMap<String, String>,
    ids: Vec<String>,
    socks: BTreeMap<&'static str, PathBuf>,
    records: BTreeMap<&'static str, PathBuf>,
    mnt: PathBuf,
    fig: Figures,
    epoch: u64,
    /// Extra volumes checked through a mount at each check.
    verify_extra: usize,
}

impl Chaos<'_> {
    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION (epoch {}): {what}", self.epoch);
        self.fig
            .violations
            .push(format!("epoch {}: {what}", self.epoch));
    }

    /// A call: (HTTP status, answer).
    fn call_any(&mut self, svc: &str, path: &str, body: &Value) -> (u16, Value) {
        let mut conn = Conn::open(&self.socks[svc], TIMEOUT).expect("connect");
        let a = conn
            .post(path, body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("epoch {}: {svc} {path} {body}: {e}", self.epoch));
        self.fig.ops += 1;
        let v = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
            panic!(
                "{path}: answer is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&a.body)
            )
        });
        (a.status, v)
    }

    /// A call that must succeed; a failure is a violation (`None`).
    fn call(&mut self, svc: &str, path: &str, body: &Value) -> Option<Value> {
        let (status, v) = self.call_any(svc, path, body);
        if status != 200 || v.get("Err").is_some_and(|e| e != "") {
            self.violation(format!("{svc} {path} {body}: HTTP {status} {v}"));
            if svc == BLK {
                if let Some(n) = body["Name"].as_str().filter(|n| n.starts_with("rbd-")) {
                    self.diagnose_image(n);
                }
            }
            return None;
        }
        Some(v)
    }

    fn list(&mut self, svc: &str) -> BTreeSet<String> {
        let v = self
            .call(svc, "/VolumeDriver.List", &json!({}))
            .unwrap_or_else(|| panic!("epoch {}: List of {svc} failed", self.epoch));
        v["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .map(|x| x["Name"].as_str().expect("Name").to_string())
            .collect()
    }

    fn list_snapshots(&mut self, svc: &str) -> BTreeSet<String> {
        let Some(v) = self.call(svc, "/Berth.SnapshotList", &json!({})) else {
            return BTreeSet::new();
        };
        v["Snapshots"]
            .as_array()
            .expect("Snapshots")
            .iter()
            .map(|x| x["Name"].as_str().expect("Name").to_string())
            .collect()
    }

    /// Get's `Volume`, `None` (a violation) when it does not answer.
    fn get(&mut self, name: &str) -> Option<Value> {
        self.call(svc_of(name), "/VolumeDriver.Get", &json!({"Name": name}))
            .map(|v| v["Volume"].clone())
    }

    fn pick(&mut self, busy: &Busy) -> Option<Op> {
        for _ in 0..20 {
            let svc = SERVICES[self.rng.usize(0..2)];
            let name = format!("{}-{}", prefix(svc), self.rng.usize(0..NAMES));
            if busy.contains(&name) {
                continue;
            }
            let id = choose(&mut self.rng, &self.ids);
            let snap = format!("{}-s{}", prefix(svc), self.rng.usize(0..SNAPSHOTS));
            let snap_free = !busy.contains(&snap_key(&snap));
            let op = match self.model.get(&name) {
                None => {
                    let srcs = free_sources(&self.model, busy, |k| svc_of(k) == svc);
                    if !srcs.is_empty() && self.rng.u8(0..4) == 0 {
                        Op::Clone(name, choose(&mut self.rng, &srcs))
                    } else {
                        Op::Create(name)
                    }
                }
                Some(v) => {
                    let has_snaps = self.snaps.values().any(|s| *s == name);
                    match self.rng.u8(0..12) {
                        0..=3 => Op::Mount(name, id),
                        4..=6 if v.count() > 0 => {
                            let id = v.held_id(&mut self.rng).expect("held");
                            Op::Unmount(name, id)
                        }
                        7 | 8 if snap_free => match self.snaps.get(&snap) {
                            Some(vol) if !busy.contains(vol) => {
                                Op::SnapRemove(snap.clone(), vol.clone())
                            }
                            Some(_) => continue,
                            None => Op::SnapCreate(name, snap),
                        },
                        _ if v.count() == 0 && !has_snaps => Op::Remove(name),
                        _ if has_snaps && v.count() == 0 => {
                            // Free it for a later remove.
                            let s = self
                                .snaps
                                .iter()
                                .find(|(s, v)| **v == name && !busy.contains(&snap_key(s)))
                                .map(|(s, _)| s.clone());
                            match s {
                                Some(s) => Op::SnapRemove(s, name),
                                None => continue,
                            }
                        }
                        _ => Op::Mount(name, id),
                    }
                }
            };
            return Some(op);
        }
        None
    }

    /// Runs `op` to completion and updates the model.
    fn apply(&mut self, op: &Op) {
        let t = Instant::now();
        let (path, body) = op.request();
        let answer = self.call(op.svc(), path, &body);
        let e = self.fig.took.entry(op.kind()).or_default();
        e.0 += 1;
        e.1 += t.elapsed();
        let Some(answer) = answer else {
            return;
        };
        if let Op::Mount(n, _) = op {
            let p = PathBuf::from(answer["Mountpoint"].as_str().expect("Mountpoint"));
            if self.model[n].count() == 0 {
                // It was unmounted: everything written before is back.
                self.verify_files(n, &p);
            }
            self.model.get_mut(n).expect("volume").path = Some(p);
        }
        self.applied(op);
        if matches!(op, Op::Mount(..)) && self.rng.bool() {
            self.write_file(&op.keys()[0]);
        }
    }

    /// The model after a successful `op`.
    fn applied(&mut self, op: &Op) {
        match op {
            Op::Create(n) => {
                self.model.insert(n.clone(), Vol::default());
            }
            Op::Clone(n, src) => {
                let files = self.model[src].files.clone();
                self.model.insert(
                    n.clone(),
                    Vol {
                        files,
                        ..Vol::default()
                    },
                );
            }
            Op::Mount(n, id) => {
                let v = self.model.get_mut(n).expect("volume");
                *v.holds.entry(id.clone()).or_insert(0) += 1;
            }
            Op::Unmount(n, id) => {
                let v = self.model.get_mut(n).expect("volume");
                if let Some(c) = v.holds.get_mut(id) {
                    *c -= 1;
                    if *c == 0 {
                        v.holds.remove(id);
                    }
                }
                if v.count() == 0 {
                    v.path = None;
                }
            }
            Op::Remove(n) => {
                self.model.remove(n);
            }
            Op::SnapCreate(v, s) => {
                self.snaps.insert(s.clone(), v.clone());
            }
            Op::SnapRemove(s, _) => {
                self.snaps.remove(s);
            }
        }
    }

    fn write_file(&mut self, name: &str) {
        let Some(dir) = self.model.get(name).and_then(|v| v.path.clone()) else {
            return;
        };
        let len = self.rng.usize(1024..64 * 1024);
        let data: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        let file = format!("f{}-{}", self.epoch, self.rng.u32(..));
        let written = std::fs::File::create(dir.join(&file))
            .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
        match written {
            Ok(()) => {
                self.model
                    .get_mut(name)
                    .expect("volume")
                    .files
                    .insert(file, common::fnv64(&data));
            }
            Err(e) => self.violation(format!("volume {name}: write {file}: {e}")),
        }
    }

    fn verify_files(&mut self, name: &str, dir: &Path) {
        let files = self.model[name].files.clone();
        for (f, sum) in files {
            match std::fs::read(dir.join(&f)) {
                Ok(b) if common::fnv64(&b) == sum => self.fig.verified_files += 1,
                Ok(_) => self.violation(format!("volume {name}: file {f} has other content")),
                Err(e) => self.violation(format!("volume {name}: file {f} is lost: {e}")),
            }
        }
    }

    /// Mounts with a private ID, checks the data, unmounts.
    fn verify_by_mount(&mut self, name: &str) {
        let svc = svc_of(name);
        let id = "chaos-verifier";
        let Some(v) = self.call(svc, "/VolumeDriver.Mount", &json!({"Name": name, "ID": id}))
        else {
            return;
        };
        let p = PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint"));
        self.verify_files(name, &p);
        if let Err(e) = std::fs::write(p.join(".probe"), b"probe") {
            self.violation(format!("volume {name} is not writable: {e}"));
        }
        self.call(
            svc,
            "/VolumeDriver.Unmount",
            &json!({"Name": name, "ID": id}),
        );
        self.fig.verified_by_mount += 1;
    }

    /// After a restart: what an operation cut by the kill did, from what
    /// the daemon says now.
    fn resolve(&mut self, op: &Op, listed: &BTreeMap<&str, BTreeSet<String>>) {
        *self.fig.cut.entry(op.kind()).or_insert(0) += 1;
        let svc = op.svc();
        match op {
            Op::Create(n) | Op::Clone(n, _) => {
                if listed[svc].contains(n) {
                    self.applied(op);
                }
            }
            Op::Remove(n) => {
                if !listed[svc].contains(n) {
                    self.applied(op);
                }
            }
            Op::Mount(n, _) | Op::Unmount(n, _) => {
                let before = i64::from(self.model[n].count());
                let Some(v) = self.get(n) else {
                    return;
                };
                let now = v["Status"]["mountCount"].as_i64().unwrap_or(-1);
                let step = if matches!(op, Op::Mount(..)) { 1 } else { -1 };
                if now == before + step {
                    self.applied(op);
                } else if now != before {
                    self.violation(format!(
                        "{op:?} cut by the kill: mount count {before} -> {now}"
                    ));
                }
            }
            Op::SnapCreate(_, s) | Op::SnapRemove(s, _) => {
                let present = self.list_snapshots(svc).contains(s);
                if present == matches!(op, Op::SnapCreate(..)) {
                    self.applied(op);
                }
            }
        }
    }

    /// Image names (`rbd ls`) and subvolume names in Ceph.
    fn ceph_volumes(&mut self) -> BTreeMap<&'static str, BTreeSet<String>> {
        let mut out = BTreeMap::new();
        let images: Vec<String> = serde_json::from_str(
            &self
                .c
                .run(HOST_A, &["rbd", "ls", "-p", "rbd", "--format", "json"]),
        )
        .expect("rbd ls json");
        out.insert(BLK, images.into_iter().collect());
        let sub = self
            .c
            .cmd(
                HOST_A,
                &[
                    "ceph",
                    "fs",
                    "subvolume",
                    "ls",
                    "cephfs",
                    "--group_name",
                    "berth",
                    "--format",
                    "json",
                ],
            )
            .output()
            .expect("ceph fs subvolume ls");
        let subs: BTreeSet<String> = if sub.status.success() {
            let v: Value = serde_json::from_slice(&sub.stdout).expect("subvolume ls json");
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            // No group yet: no subvolumes.
            BTreeSet::new()
        };
        out.insert(FS, subs);
        out
    }

    /// Prints what Ceph says of rbd image `name` (a violation's context).
    fn diagnose_image(&self, name: &str) {
        for args in [
            &["rbd", "status", "-p", "rbd", name][..],
            &["rbd", "info", "-p", "rbd", name][..],
            &["rbd", "snap", "ls", "--all", "-p", "rbd", name][..],
            &["rbd", "lock", "ls", "-p", "rbd", name][..],
        ] {
            let out = self.c.cmd(HOST_A, args).output().expect("rbd");
            eprintln!(
                "DIAGNOSIS {args:?}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The phase of service `svc`'s record of `name` when it is an
    /// intent (creating, removing).
    fn intent(&self, svc: &str, name: &str) -> Option<String> {
        let p = self.records[svc].join(format!("{name}.json"));
        let v: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        let phase = v["phase"].as_str()?.to_string();
        (phase != "ready").then_some(phase)
    }

    /// Whether rbd image `name` holds a lock of this host.
    fn locked_here(&self, name: &str) -> bool {
        self.c
            .run(
                HOST_A,
                &["rbd", "lock", "ls", "-p", "rbd", name, "--format", "json"],
            )
            .contains(&format!("berth:{HOST}"))
    }

    /// What runs, is mounted and is attached under the mount directory,
    /// against what the mounted volumes own.
    fn system_violations(&self) -> Vec<String> {
        let mut want_mounts = BTreeSet::new();
        let mut want_helpers = BTreeMap::new();
        let mut want_loops = BTreeSet::new();
        for (n, v) in &self.model {
            if v.count() == 0 {
                continue;
            }
            let target = self.mnt.join(n);
            want_mounts.insert(target.clone());
            if svc_of(n) == FS {
                want_helpers.insert(target, "ceph-fuse");
            } else {
                let dir = self.mnt.join(".rbd-fuse").join(n);
                want_mounts.insert(dir.clone());
                want_loops.insert(dir.join(n));
                want_helpers.insert(dir, "rbd-fuse");
            }
        }
        let mut out = Vec::new();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts = Vec::new();
        for l in mi.lines() {
            if let Some(mp) = l.split(' ').nth(4) {
                let p = PathBuf::from(mp);
                if p.starts_with(&self.mnt) {
                    mounts.push(p);
                }
            }
        }
        for p in &mounts {
            if !want_mounts.contains(p) {
                out.push(format!("mount {} that no mounted volume owns", p.display()));
            }
        }
        for p in &want_mounts {
            match mounts.iter().filter(|m| *m == p).count() {
                1 => {}
                0 => out.push(format!("mount {} is missing", p.display())),
                k => out.push(format!("{} is mounted {k} times", p.display())),
            }
        }
        let mut helpers: BTreeMap<PathBuf, Vec<u32>> = BTreeMap::new();
        for (pid, cmd) in processes_naming(&self.mnt.to_string_lossy()) {
            let prog = cmd.split(' ').next().unwrap_or("");
            let base = prog.rsplit('/').next().unwrap_or("");
            if base != "rbd-fuse" && base != "ceph-fuse" {
                continue;
            }
            let target = cmd
                .split(' ')
                .map(PathBuf::from)
                .find(|a| a.starts_with(&self.mnt))
                .unwrap_or_default();
            match want_helpers.get(&target) {
                Some(kind) if *kind == base => {}
                _ => out.push(format!(
                    "{base} (pid {pid}) that no mounted volume owns: {cmd}"
                )),
            }
            helpers.entry(target).or_default().push(pid);
        }
        for (t, kind) in &want_helpers {
            match helpers.get(t).map_or(0, Vec::len) {
                1 => {}
                0 => out.push(format!("no {kind} serves {}", t.display())),
                k => out.push(format!("{k} {kind} processes serve {}", t.display())),
            }
        }
        let mut loops = Vec::new();
        for (dev, backing) in berth::sys::loopdev::list_attached() {
            if backing.starts_with(&self.mnt) {
                if !want_loops.contains(&backing) {
                    out.push(format!(
                        "loop device {} on {} that no mounted volume owns",
                        dev.display(),
                        backing.display()
                    ));
                }
                loops.push(backing);
            }
        }
        for b in &want_loops {
            let k = loops.iter().filter(|l| *l == b).count();
            if k != 1 {
                out.push(format!("{k} loop devices on {} (want 1)", b.display()));
            }
        }
        out
    }

    /// The checks after every restart (the model is resolved) and at the
    /// end. `touched`: volumes a cut operation touched, checked through a
    /// mount whatever happens.
    fn check(&mut self, touched: &BTreeSet<String>) {
        let mut listed = BTreeMap::new();
        for svc in SERVICES {
            listed.insert(svc, self.list(svc));
        }
        let names: Vec<String> = self.model.keys().cloned().collect();
        for name in &names {
            let svc = svc_of(name);
            if !listed[svc].contains(name) {
                self.violation(format!("volume {name} was lost (not listed)"));
            }
            let Some(v) = self.get(name) else {
                self.model.remove(name);
                continue;
            };
            let want = self.model[name].count();
            let count = v["Status"]["mountCount"].as_u64();
            if count != Some(u64::from(want)) {
                self.violation(format!(
                    "volume {name}: mountCount {count:?}, the workload holds {want}"
                ));
            }
            let mp = v["Mountpoint"].as_str().unwrap_or("").to_string();
            if (want > 0) == mp.is_empty() {
                self.violation(format!(
                    "volume {name}: holds {want} but Mountpoint is {mp:?}"
                ));
            }
            if want > 0 && !mp.is_empty() {
                let p = PathBuf::from(&mp);
                if self.model[name].path.as_ref() != Some(&p) {
                    self.model.get_mut(name).expect("volume").path = Some(p.clone());
                }
                self.verify_files(name, &p);
            }
            if svc == BLK {
                self.fig.lock_checks += 1;
                let locked = self.locked_here(name);
                if locked != (want > 0) {
                    self.violation(format!(
                        "rbd volume {name}: mounted by {want} but locked by this host: {locked}"
                    ));
                }
            }
        }
        for svc in SERVICES {
            for n in &listed[svc] {
                if !self.model.contains_key(n) {
                    self.violation(format!(
                        "service {svc} lists {n}, which the workload does not have"
                    ));
                }
            }
        }
        let in_ceph = self.ceph_volumes();
        for svc in SERVICES {
            for n in &in_ceph[svc] {
                if !listed[svc].contains(n) && self.intent(svc, n).is_some() {
                    // An interrupted create or remove whose clean-up
                    // failed (the killed berthd's watch on the image lasts
                    // the OSDs' watch timeout): retried at the next start
                    // or Create of the name.
                    self.fig.pending_cleanups += 1;
                } else if !listed[svc].contains(n) {
                    self.violation(format!(
                        "Ceph holds {n} ({svc}) but the daemon does not list it"
                    ));
                    if svc == BLK {
                        self.diagnose_image(n);
                    }
                }
            }
            for n in &listed[svc] {
                if !in_ceph[svc].contains(n) {
                    self.violation(format!("service {svc} lists {n}, absent from Ceph"));
                }
            }
            let snaps = self.list_snapshots(svc);
            let want: BTreeSet<String> = self
                .snaps
                .keys()
                .filter(|s| svc_of(s) == svc)
                .cloned()
                .collect();
            if snaps != want {
                self.violation(format!(
                    "service {svc}: snapshots {snaps:?}, the workload has {want:?}"
                ));
                for s in want.difference(&snaps) {
                    self.snaps.remove(s);
                }
            }
        }
        // Data of unmounted volumes, through a mount: the touched ones
        // and a few more.
        let mut idle: Vec<String> = self
            .model
            .iter()
            .filter(|(n, v)| v.count() == 0 && (touched.contains(*n) || !v.files.is_empty()))
            .map(|(n, _)| n.clone())
            .collect();
        self.rng.shuffle(&mut idle);
        let mut n_extra = 0;
        for n in idle {
            if !touched.contains(&n) {
                if n_extra == self.verify_extra {
                    continue;
                }
                n_extra += 1;
            }
            self.verify_by_mount(&n);
        }
        // Last, after the mounts above: a Mount cut by the kill may have
        // left a FUSE helper that finishes mounting after the restart's
        // reconcile (it outlives berthd by design); the verifying Mount
        // adopts that mount and its Unmount removes it.
        // Helpers daemonize and loop devices detach a moment after an
        // unmount: give the system 3 s to settle.
        let end = Instant::now() + Duration::from_secs(3);
        let sys = loop {
            let v = self.system_violations();
            if v.is_empty() || Instant::now() >= end {
                break v;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for v in sys {
            self.violation(v);
        }
    }

    fn held(&self) -> Vec<(String, String)> {
        self.model
            .iter()
            .flat_map(|(n, v)| v.holds.keys().map(move |id| (n.clone(), id.clone())))
            .collect()
    }
}

/// Restarts berthd; the time until both services answer List.
fn restart(d: &mut Daemon, socks: &BTreeMap<&'static str, PathBuf>) -> Duration {
    let t = Instant::now();
    d.spawn();
    for svc in SERVICES {
        loop {
            let answered = Conn::open(&socks[svc], TIMEOUT)
                .and_then(|mut c| c.post("/VolumeDriver.List", b"{}"))
                .is_ok_and(|a| a.status == 200);
            if answered {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{svc} does not answer List after a restart; log tail:\n{}",
                d.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    t.elapsed()
}

#[test]
fn root_ceph_chaos_sigkill_loses_nothing() {
    // The short run (CI_KILLS kills) is part of the normal Ceph tests;
    // scripts/chaos-long.sh ceph makes it long (BERTH_CEPH_CHAOS_KILLS).
    if std::env::var_os("BERTH_CEPH_CHAOS").is_some_and(|v| v == "0") {
        eprintln!("SKIP: root_ceph_chaos_sigkill_loses_nothing (BERTH_CEPH_CHAOS=0)");
        return;
    }
    let Some(mut c) = CephCluster::start_or_skip("root_ceph_chaos_sigkill_loses_nothing") else {
        return;
    };
    eprintln!("cluster up in {:?}", c.up_time);
    let kills = env_num("BERTH_CEPH_CHAOS_KILLS", CI_KILLS);
    let seed = seed("root_ceph_chaos_sigkill_loses_nothing");
    let mut d = Daemon::builder()
        .netns(HOST_A)
        .service_toml(&config(&c))
        .envs(c.env())
        .start();
    d.wait_ready(BLK);
    c.add_mount_root(&d.mount_dir());
    let socks: BTreeMap<&'static str, PathBuf> =
        SERVICES.iter().map(|s| (*s, d.socket(s))).collect();
    let mut ch = Chaos {
        c: &c,
        rng: fastrand::Rng::with_seed(seed),
        model: BTreeMap::new(),
        snaps: BTreeMap::new(),
        ids: Vec::new(),
        socks: socks.clone(),
        records: SERVICES.iter().map(|s| (*s, d.records_dir(s))).collect(),
        mnt: d.mount_dir(),
        fig: Figures::default(),
        epoch: 0,
        verify_extra: if kills > CI_KILLS {
            VERIFY_PER_CHECK
        } else {
            0
        },
    };
    ch.ids = (0..3)
        .map(|_| format!("{:016x}", ch.rng.u64(..)).repeat(4))
        .collect();
    let started = Instant::now();
    while ch.fig.kills < kills {
        ch.epoch += 1;
        // A few operations run to completion…
        for _ in 0..ch.rng.usize(1..=4) {
            if let Some(op) = ch.pick(&BTreeSet::new()) {
                ch.apply(&op);
            }
            let held: Vec<String> = ch
                .model
                .iter()
                .filter(|(_, v)| v.count() > 0)
                .map(|(n, _)| n.clone())
                .collect();
            if !held.is_empty() && ch.rng.u8(0..3) == 0 {
                let n = held[ch.rng.usize(0..held.len())].clone();
                ch.write_file(&n);
            }
        }
        // …then 1–3 are sent and berthd is killed 0–600 ms later (Ceph
        // steps take tens to hundreds of ms), without waiting for them.
        let mut busy = BTreeSet::new();
        let mut flying = Vec::new();
        for _ in 0..ch.rng.usize(1..=3) {
            if let Some(op) = ch.pick(&busy) {
                busy.extend(op.keys());
                let (path, body) = op.request();
                let mut conn =
                    Conn::open(&socks[op.svc()], Duration::from_millis(300)).expect("connect");
                let body = body.to_string();
                let req = format!(
                    "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.send(req.as_bytes()).expect("send");
                flying.push((op, conn));
            }
        }
        let delay = match ch.rng.u8(0..4) {
            0 => ch.rng.u64(0..=5),
            _ => ch.rng.u64(0..=600),
        };
        std::thread::sleep(Duration::from_millis(delay));
        d.kill9();
        ch.fig.kills += 1;
        ch.fig.in_flight += flying.len() as u64;
        let mut cut = Vec::new();
        for (op, mut conn) in flying {
            match conn.read_answer() {
                Ok(a) if a.status == 200 => {
                    ch.fig.ops += 1;
                    cut.push((op, true));
                }
                _ => {
                    ch.fig.unanswered += 1;
                    cut.push((op, false));
                }
            }
        }
        let took = restart(&mut d, &socks);
        ch.fig.recovery.push(took);
        for (op, answered) in &cut {
            if *answered {
                ch.applied(op);
            }
        }
        let mut listed = BTreeMap::new();
        for svc in SERVICES {
            listed.insert(svc, ch.list(svc));
        }
        for (op, answered) in &cut {
            if !answered {
                ch.resolve(op, &listed);
            }
        }
        let touched: BTreeSet<String> = cut
            .iter()
            .flat_map(|(op, _)| op.keys())
            .filter(|k| !k.starts_with('@'))
            .collect();
        ch.check(&touched);
        // Docker-style: an Unmount sent after the restart succeeds and
        // releases exactly one mount.
        let held = ch.held();
        if !held.is_empty() {
            let (n, id) = held[ch.rng.usize(0..held.len())].clone();
            let before = ch.model[&n].count();
            ch.apply(&Op::Unmount(n.clone(), id));
            if let Some(v) = ch.get(&n) {
                let after = v["Status"]["mountCount"].as_u64().unwrap_or(u64::MAX);
                if after != u64::from(before) - 1 {
                    ch.violation(format!("late Unmount of {n}: count {before} -> {after}"));
                }
            }
            if svc_of(&n) == BLK && before == 1 && ch.locked_here(&n) {
                ch.violation(format!(
                    "rbd volume {n}: still locked by this host after its last Unmount"
                ));
            }
            ch.fig.late_unmounts += 1;
        }
        eprintln!(
            "ceph chaos: epoch {} kills {} ops {} violations {} recovery {:?} ({:.0} s)",
            ch.epoch,
            ch.fig.kills,
            ch.fig.ops,
            ch.fig.violations.len(),
            took,
            started.elapsed().as_secs_f64()
        );
    }
    // The end: everything is checked, released and removed; nothing is
    // left in Ceph or on the host.
    ch.check(&BTreeSet::new());
    for (n, id) in ch.held() {
        for _ in 0..ch.model[&n].holds[&id] {
            ch.apply(&Op::Unmount(n.clone(), id.clone()));
        }
    }
    let names: Vec<String> = ch.model.keys().cloned().collect();
    for n in &names {
        ch.verify_by_mount(n);
    }
    let snaps: Vec<(String, String)> = ch
        .snaps
        .iter()
        .map(|(s, v)| (s.clone(), v.clone()))
        .collect();
    for (s, v) in snaps {
        ch.apply(&Op::SnapRemove(s, v));
    }
    for n in names {
        ch.apply(&Op::Remove(n));
    }
    ch.check(&BTreeSet::new());
    let pending = |ch: &Chaos| {
        SERVICES.iter().any(|s| {
            std::fs::read_dir(&ch.records[s]).is_ok_and(|mut d| {
                d.any(|e| {
                    e.is_ok_and(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(".json")
                            .is_some_and(|n| ch.intent(s, n).is_some())
                    })
                })
            })
        })
    };
    if pending(&ch) {
        // Clean-ups waiting for a dead client's watch to time out (30 s):
        // the next start finishes them.
        eprintln!("interrupted clean-ups pending at the end: waiting 35 s, then restarting");
        std::thread::sleep(Duration::from_secs(35));
        d.stop();
        restart(&mut d, &socks);
        ch.check(&BTreeSet::new());
        if pending(&ch) {
            ch.violation("interrupted clean-ups still pending after a restart".into());
        }
    }
    let left = ch.ceph_volumes();
    for svc in SERVICES {
        if !left[svc].is_empty() {
            ch.violation(format!(
                "at the end, Ceph still holds {:?} ({svc})",
                left[svc]
            ));
        }
    }
    let log = d.log();
    let kept = std::env::temp_dir().join(format!("berth-ceph-chaos-{seed}.log"));
    if !ch.fig.violations.is_empty() && std::fs::write(&kept, &log).is_ok() {
        eprintln!("berthd's log is kept in {}", kept.display());
    }
    d.stop();
    let left = d.leftovers();
    if !left.is_empty() {
        ch.violation(format!("at the end, leftovers: {left:?}"));
    }
    for (what, needle) in [
        ("interrupted_create", "an interrupted create was found"),
        (
            "interrupted_create_not_cleaned",
            "an interrupted create could not be cleaned up",
        ),
        ("interrupted_remove", "an interrupted remove was found"),
        (
            "interrupted_remove_not_cleaned",
            "an interrupted remove could not be cleaned up",
        ),
        ("mounted_without_user", "was mounted with no user"),
        ("counts_reset", "mount counts are reset"),
        (
            "rbd_fuse_stopped",
            "rbd-fuse was running with no mount using it",
        ),
        ("interrupted_snapshot", "an interrupted snapshot was found"),
        (
            "interrupted_snapshot_remove",
            "an interrupted snapshot removal was found",
        ),
        (
            "temporary_snapshot_left",
            "could not remove temporary snapshot",
        ),
    ] {
        eprintln!("ceph chaos repairs: {what}={}", log.matches(needle).count());
    }
    let f = &mut ch.fig;
    let n = f.recovery.len().max(1) as u32;
    let mean = f.recovery.iter().sum::<Duration>() / n;
    let p50 = percentile(&mut f.recovery, 0.5);
    let max = f.recovery.iter().max().copied().unwrap_or_default();
    let cut: Vec<String> = f.cut.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    eprintln!("ceph chaos cut by a kill, by operation: {}", cut.join(" "));
    let took: Vec<String> = f
        .took
        .iter()
        .map(|(k, (n, t))| format!("{k}:{n}x{:.0}ms", t.as_secs_f64() * 1e3 / *n as f64))
        .collect();
    eprintln!(
        "ceph chaos operations run to completion (count x mean): {}",
        took.join(" ")
    );
    eprintln!(
        "FIGURES ceph_chaos: seed={seed} kills={} violations={} ops={} in_flight_at_kill={} \
         cut_mid_operation={} files_verified={} verified_by_mount={} late_unmounts={} lock_checks={} pending_cleanups={} \
         recovery_mean_ms={:.0} recovery_p50_ms={:.0} recovery_max_ms={:.0} wall_s={:.0}",
        f.kills,
        f.violations.len(),
        f.ops,
        f.in_flight,
        f.unanswered,
        f.verified_files,
        f.verified_by_mount,
        f.late_unmounts,
        f.lock_checks,
        f.pending_cleanups,
        mean.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    let violations = std::mem::take(&mut f.violations);
    drop(ch);
    drop(d);
    c.stop();
    let left = c.leftovers();
    assert!(
        violations.is_empty(),
        "{} invariant violation(s) (seed {seed}):\n{}\nberthd log tail:\n{}",
        violations.len(),
        violations.join("\n"),
        log.lines()
            .rev()
            .take(80)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(left.is_empty(), "left behind by the cluster: {left:?}");
}
