//! Chaos: a workload of real volumes (create, mount with several IDs,
//! write + checksum, unmount, remove, snapshot create and remove, clone
//! from a volume or a snapshot, resize) while berthd is killed with SIGKILL
//! at random moments — many of them in the middle of a multi-step
//! operation — and restarted. After every restart and at the end the
//! invariants are checked:
//!
//! 1. every volume the workload knew before the kill, and that was not
//!    being removed, still exists with all its data (checksums);
//! 2. no loop device, mount, image or record exists that the state does
//!    not own, and nothing the state owns is missing
//!    ([`common::DiskState::violations`]);
//! 3. mount counts equal what the workload holds, and a volume is mounted
//!    in the kernel exactly when its count is above zero;
//! 4. Docker-style Unmounts sent after the restart succeed;
//! 5. every snapshot the workload knew and was not removing is listed and
//!    holds what its source held when it was taken (checked through a
//!    volume created from it); a clone holds its source's content; a
//!    volume has the size of its last answered resize (record, image and
//!    filesystem) and its data; no filesystem is left frozen.
//!
//! An operation in flight at the kill may have happened or not, never
//! half: a create or clone leaves a complete, usable volume or nothing; a
//! remove leaves the whole volume or nothing; a mount or unmount changes
//! the count by one or not at all; a snapshot exists with all its content
//! or not at all; a resize leaves the old size or the new one, in the
//! record, the image and the filesystem alike.
//!
//! CI runs 50 kills; `BERTH_CHAOS_KILLS=1000 cargo test --release --test
//! chaos -- --nocapture` (or `scripts/chaos-long.sh`) is the long run.
//! `BERTH_TEST_SEED` replays a run. Needs root.
//!
//! Growing a mounted ext4 volume needs CAP_SYS_RESOURCE; where berthd
//! lacks it the refusal is an expected answer (and changes nothing).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::workload::{choose, free_sources, snap_key, Busy, Vol};
use common::{can_use_storage, env_num, percentile, seed, settled_violations, Conn, Daemon};
use serde_json::{json, Value};

const SERVICE: &str = "berth";
const NAMES: usize = 10;
const SNAPSHOTS: usize = 6;
const MIB: u64 = 1 << 20;
/// Size of a new volume; resizes and grown clones add [`GROW`] up to
/// [`MAX_SIZE`].
const VOLUME_SIZE: u64 = 16 * MIB;
const GROW: u64 = 8 * MIB;
const MAX_SIZE: u64 = 40 * MIB;
/// The volume made to check a snapshot's content.
const VERIFIER: &str = "chaos-verify";
const TIMEOUT: Duration = Duration::from_secs(120);

fn size_arg(bytes: u64) -> String {
    format!("{}M", bytes / MIB)
}

/// What the workload knows of one snapshot: its source and the content
/// the source had when it was taken.
#[derive(Debug, Clone)]
struct Snap {
    volume: String,
    files: BTreeMap<String, u64>,
    size: u64,
}

/// One plugin call the workload can make. To add an operation: a variant,
/// its request in [`Op::request`], when it may be chosen in
/// [`Chaos::pick`], its effect in [`Chaos::apply`] and [`apply_answered`],
/// and how to resolve it when the daemon died during it in
/// [`Chaos::resolve`].
#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Mount(String, String),
    Unmount(String, String),
    Remove(String),
    /// Volume, snapshot.
    SnapCreate(String, String),
    SnapRemove(String),
    /// New volume, source volume, a larger size asked for.
    Clone(String, String, Option<u64>),
    /// New volume, source snapshot.
    CloneSnap(String, String),
    /// Volume, new size.
    Resize(String, u64),
}

impl Op {
    /// The volumes and snapshots (as [`snap_key`]) the operation touches.
    fn keys(&self) -> Vec<String> {
        match self {
            Op::Create(n) | Op::Remove(n) | Op::Mount(n, _) | Op::Unmount(n, _) => {
                vec![n.clone()]
            }
            Op::Resize(n, _) => vec![n.clone()],
            Op::SnapCreate(v, s) => vec![v.clone(), snap_key(s)],
            Op::SnapRemove(s) => vec![snap_key(s)],
            Op::Clone(n, src, _) => vec![n.clone(), src.clone()],
            Op::CloneSnap(n, s) => vec![n.clone(), snap_key(s)],
        }
    }

    fn request(&self) -> (&'static str, Value) {
        match self {
            Op::Create(n) => (
                "/VolumeDriver.Create",
                json!({"Name": n, "Opts": {"size": size_arg(VOLUME_SIZE)}}),
            ),
            Op::Mount(n, id) => ("/VolumeDriver.Mount", json!({"Name": n, "ID": id})),
            Op::Unmount(n, id) => ("/VolumeDriver.Unmount", json!({"Name": n, "ID": id})),
            Op::Remove(n) => ("/VolumeDriver.Remove", json!({"Name": n})),
            Op::SnapCreate(v, s) => ("/Berth.SnapshotCreate", json!({"Volume": v, "Name": s})),
            Op::SnapRemove(s) => ("/Berth.SnapshotRemove", json!({"Name": s})),
            Op::Clone(n, src, grow) => {
                let mut opts = json!({ "volumeName": src });
                if let Some(g) = grow {
                    opts["size"] = json!(size_arg(*g));
                }
                ("/VolumeDriver.Create", json!({"Name": n, "Opts": opts}))
            }
            Op::CloneSnap(n, s) => (
                "/VolumeDriver.Create",
                json!({"Name": n, "Opts": {"snapshotName": s}}),
            ),
            Op::Resize(n, size) => (
                "/Berth.VolumeResize",
                json!({"Name": n, "Size": size_arg(*size)}),
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
    recovery: Vec<Duration>,
    verified_files: u64,
    late_unmounts: u64,
    snapshots_taken: u64,
    snapshots_verified: u64,
    clones: u64,
    resized: u64,
    resize_refused: u64,
    sizes_checked: u64,
    cut: BTreeMap<&'static str, u64>,
    /// Operation kind → (count, total time) of the answered ones.
    took: BTreeMap<&'static str, (u64, Duration)>,
}

struct Chaos {
    rng: fastrand::Rng,
    model: BTreeMap<String, Vol>,
    snaps: BTreeMap<String, Snap>,
    ids: Vec<String>,
    conn: Option<Conn>,
    sock: PathBuf,
    image_dir: PathBuf,
    fig: Figures,
    epoch: u64,
}

impl Chaos {
    fn conn(&mut self) -> &mut Conn {
        if self.conn.is_none() {
            self.conn = Some(Conn::open(&self.sock, TIMEOUT).expect("connect"));
        }
        self.conn.as_mut().expect("connection")
    }

    /// A call: (HTTP status, JSON answer).
    fn call_any(&mut self, path: &str, body: &Value) -> (u16, Value) {
        let a = match self.conn().post(path, body.to_string().as_bytes()) {
            Ok(a) => a,
            Err(e) => {
                self.conn = None;
                panic!("{path} {body}: transport error {e}");
            }
        };
        let v: Value = serde_json::from_slice(&a.body).unwrap_or_else(|e| {
            panic!(
                "{path}: answer is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&a.body)
            )
        });
        if a.close {
            self.conn = None;
        }
        self.fig.ops += 1;
        (a.status, v)
    }

    /// A call that must succeed.
    fn call(&mut self, path: &str, body: &Value) -> Value {
        let (status, v) = self.call_any(path, body);
        assert_eq!(status, 200, "epoch {}: {path} {body}: {v}", self.epoch);
        assert!(
            v.get("Err").is_none_or(|e| e == ""),
            "epoch {}: {path} {body}: {v}",
            self.epoch
        );
        v
    }

    fn list(&mut self) -> BTreeSet<String> {
        let v = self.call("/VolumeDriver.List", &json!({}));
        v["Volumes"]
            .as_array()
            .expect("Volumes")
            .iter()
            .map(|x| x["Name"].as_str().expect("Name").to_string())
            .collect()
    }

    /// Snapshot name → its answer.
    fn list_snapshots(&mut self) -> BTreeMap<String, Value> {
        let v = self.call("/Berth.SnapshotList", &json!({}));
        v["Snapshots"]
            .as_array()
            .expect("Snapshots")
            .iter()
            .map(|x| (x["Name"].as_str().expect("Name").to_string(), x.clone()))
            .collect()
    }

    fn get(&mut self, name: &str) -> Value {
        self.call("/VolumeDriver.Get", &json!({"Name": name}))["Volume"].clone()
    }

    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION (epoch {}): {what}", self.epoch);
        self.fig
            .violations
            .push(format!("epoch {}: {what}", self.epoch));
    }

    /// Chooses an operation that is valid for the workload's model;
    /// `busy` holds the keys of operations already in flight.
    fn pick(&mut self, busy: &Busy) -> Option<Op> {
        for _ in 0..20 {
            let name = format!("chaos-{}", self.rng.usize(0..NAMES));
            if busy.contains(&name) {
                continue;
            }
            let id = choose(&mut self.rng, &self.ids);
            let snapshot = format!("snap-{}", self.rng.usize(0..SNAPSHOTS));
            let snap_free = !busy.contains(&snap_key(&snapshot));
            let op = match self.model.get(&name) {
                None => match self.rng.u8(0..6) {
                    0 => {
                        let srcs = free_sources(&self.model, busy, |_| true);
                        if srcs.is_empty() {
                            Op::Create(name)
                        } else {
                            let src = choose(&mut self.rng, &srcs);
                            let size = self.model[&src].size;
                            let grow = (self.rng.u8(0..3) == 0 && size + GROW <= MAX_SIZE)
                                .then_some(size + GROW);
                            Op::Clone(name, src, grow)
                        }
                    }
                    1 if snap_free && self.snaps.contains_key(&snapshot) => {
                        Op::CloneSnap(name, snapshot)
                    }
                    _ => Op::Create(name),
                },
                Some(v) => match self.rng.u8(0..14) {
                    0..=3 => Op::Mount(name, id),
                    4..=7 if v.count() > 0 => {
                        let id = v.held_id(&mut self.rng).expect("held");
                        Op::Unmount(name, id)
                    }
                    8..=10 if snap_free => {
                        if self.snaps.contains_key(&snapshot) {
                            Op::SnapRemove(snapshot)
                        } else {
                            Op::SnapCreate(name, snapshot)
                        }
                    }
                    11 | 12 if v.size + GROW <= MAX_SIZE => Op::Resize(name, v.size + GROW),
                    _ if v.count() == 0 => Op::Remove(name),
                    _ => Op::Mount(name, id),
                },
            };
            return Some(op);
        }
        None
    }

    /// Runs `op` to completion and updates the model.
    fn apply(&mut self, op: &Op) {
        let t = Instant::now();
        self.apply_inner(op);
        let e = self.fig.took.entry(op_kind(op)).or_default();
        e.0 += 1;
        e.1 += t.elapsed();
    }

    fn apply_inner(&mut self, op: &Op) {
        let (path, body) = op.request();
        if let Op::Resize(n, size) = op {
            let (status, answer) = self.call_any(path, &body);
            let mounted = self.model[n].count() > 0;
            if status == 200 {
                if answer["SizeBytes"].as_u64() != Some(*size) {
                    self.violation(format!("resize of {n} to {size} answered {answer}"));
                }
                self.model.get_mut(n).expect("volume").size = *size;
                self.fig.resized += 1;
                if mounted {
                    self.check_size_mounted(n);
                }
            } else if mounted
                && answer["Err"]
                    .as_str()
                    .unwrap_or("")
                    .contains("CAP_SYS_RESOURCE")
            {
                // Expected: no online ext4 grow without the capability.
                self.fig.resize_refused += 1;
                let got = self.get(n)["Status"]["sizeBytes"].as_u64();
                if got != Some(self.model[n].size) {
                    self.violation(format!("refused resize of {n} changed its size to {got:?}"));
                }
            } else {
                panic!(
                    "epoch {}: {path} {body} (mounted {mounted}): HTTP {status} {answer}",
                    self.epoch
                );
            }
            return;
        }
        let answer = self.call(path, &body);
        match op {
            Op::Create(n) => {
                self.model
                    .insert(n.clone(), Vol::new(BTreeMap::new(), VOLUME_SIZE));
            }
            Op::Mount(n, id) => {
                let p = PathBuf::from(answer["Mountpoint"].as_str().expect("Mountpoint"));
                let first = self.model[n].count() == 0;
                if first {
                    // The volume was unmounted: everything written before
                    // must be back, in a filesystem of the right size.
                    self.verify_files(n, &p);
                    self.check_size(n, &p);
                }
                let v = self.model.get_mut(n).expect("volume");
                *v.holds.entry(id.clone()).or_insert(0) += 1;
                v.path = Some(p);
                if self.rng.bool() {
                    self.write_file(n);
                }
            }
            Op::Unmount(n, id) => {
                let v = self.model.get_mut(n).expect("volume");
                let c = v.holds.get_mut(id).expect("held");
                *c -= 1;
                if *c == 0 {
                    v.holds.remove(id);
                }
                if v.count() == 0 {
                    v.path = None;
                }
            }
            Op::Remove(n) => {
                self.model.remove(n);
            }
            Op::SnapCreate(..) | Op::SnapRemove(_) | Op::Clone(..) | Op::CloneSnap(..) => {
                apply_answered(self, op);
            }
            Op::Resize(..) => unreachable!("handled above"),
        }
    }

    fn write_file(&mut self, name: &str) {
        let Some(dir) = self.model[name].path.clone() else {
            return;
        };
        let len = self.rng.usize(1024..32 * 1024);
        let data: Vec<u8> = (0..len).map(|_| self.rng.u8(..)).collect();
        let file = format!("f{}-{}", self.epoch, self.rng.u32(..));
        let mut f = std::fs::File::create(dir.join(&file)).expect("create data file");
        f.write_all(&data).expect("write data");
        f.sync_all().expect("fsync data");
        self.model
            .get_mut(name)
            .expect("volume")
            .files
            .insert(file, common::fnv64(&data));
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

    /// The record, the image and the filesystem mounted at `dir` have
    /// the size the workload expects.
    fn check_size(&mut self, name: &str, dir: &Path) {
        let want = self.model[name].size;
        self.fig.sizes_checked += 1;
        let image = self.image_dir.join(format!("{name}.img"));
        match std::fs::metadata(&image) {
            Ok(m) if m.len() == want => {}
            Ok(m) => self.violation(format!(
                "volume {name}: image is {} bytes, expected {want}",
                m.len()
            )),
            Err(e) => self.violation(format!("volume {name}: image {}: {e}", image.display())),
        }
        let rec = self.get(name)["Status"]["sizeBytes"].as_u64();
        if rec != Some(want) {
            self.violation(format!(
                "volume {name}: Get says {rec:?} bytes, expected {want}"
            ));
        }
        // ext4's own blocks (journal, tables) take 2–7 MiB of these sizes:
        // a filesystem of the previous size (8 MiB less) is always below.
        match nix::sys::statvfs::statvfs(dir) {
            Ok(st) => {
                let total = st.blocks() * st.fragment_size();
                if total > want || total + GROW - MIB / 2 <= want {
                    self.violation(format!(
                        "volume {name}: filesystem has {total} bytes, expected a little less than {want}"
                    ));
                }
            }
            Err(e) => self.violation(format!("volume {name}: statvfs {}: {e}", dir.display())),
        }
    }

    fn check_size_mounted(&mut self, name: &str) {
        if let Some(p) = self.model[name].path.clone() {
            self.check_size(name, &p);
        }
    }

    /// Mounts with a private ID, checks the data and size, unmounts.
    fn verify_by_mount(&mut self, name: &str) {
        let id = "chaos-verifier";
        let v = self.call("/VolumeDriver.Mount", &json!({"Name": name, "ID": id}));
        let p = PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint"));
        self.verify_files(name, &p);
        self.check_size(name, &p);
        // Usable: a write goes through.
        if let Err(e) = std::fs::write(p.join(".probe"), b"probe") {
            self.violation(format!("volume {name} is not writable: {e}"));
        }
        self.call("/VolumeDriver.Unmount", &json!({"Name": name, "ID": id}));
    }

    /// Checks a snapshot's content: a volume created from it holds what
    /// its source held when it was taken. The volume is removed again.
    fn verify_snapshot(&mut self, snap: &str) {
        let Some(s) = self.snaps.get(snap).cloned() else {
            return;
        };
        let op = Op::CloneSnap(VERIFIER.into(), snap.into());
        let (path, body) = op.request();
        self.call(path, &body);
        self.model
            .insert(VERIFIER.into(), Vol::new(s.files.clone(), s.size));
        self.verify_by_mount(VERIFIER);
        self.call("/VolumeDriver.Remove", &json!({"Name": VERIFIER}));
        self.model.remove(VERIFIER);
        self.fig.snapshots_verified += 1;
    }

    /// After a restart: decide what an operation cut by the kill did.
    fn resolve(&mut self, op: &Op, listed: &BTreeSet<String>) {
        *self.fig.cut.entry(op_kind(op)).or_insert(0) += 1;
        match op {
            Op::Create(name) => {
                if listed.contains(name) {
                    // Created before the kill: it must be complete.
                    self.model
                        .insert(name.clone(), Vol::new(BTreeMap::new(), VOLUME_SIZE));
                    self.verify_by_mount(name);
                }
            }
            Op::Clone(name, src, grow) => {
                self.require_volume(src, op);
                if listed.contains(name) {
                    let Some(s) = self.model.get(src).cloned() else {
                        return;
                    };
                    let size = grow.unwrap_or(s.size);
                    self.model.insert(name.clone(), Vol::new(s.files, size));
                    self.verify_by_mount(name);
                }
            }
            Op::CloneSnap(name, snap) => {
                if !self.list_snapshots().contains_key(snap) {
                    self.violation(format!("snapshot {snap} vanished during {op:?}"));
                }
                if listed.contains(name) {
                    let s = self.snaps[snap].clone();
                    self.model.insert(name.clone(), Vol::new(s.files, s.size));
                    self.verify_by_mount(name);
                }
            }
            Op::Remove(name) => {
                if listed.contains(name) {
                    // Not removed: every byte must still be there.
                    self.verify_by_mount(name);
                } else {
                    self.model.remove(name);
                }
            }
            Op::SnapCreate(v, snap) => {
                self.require_volume(v, op);
                let listed_snaps = self.list_snapshots();
                if let Some(answer) = listed_snaps.get(snap) {
                    let Some(src) = self.model.get(v).cloned() else {
                        return;
                    };
                    if answer["Volume"] != json!(v) {
                        self.violation(format!("snapshot {snap} is of {}", answer["Volume"]));
                    }
                    self.snaps.insert(
                        snap.clone(),
                        Snap {
                            volume: v.clone(),
                            files: src.files,
                            size: src.size,
                        },
                    );
                    self.verify_snapshot(snap);
                }
                self.check_volume(v);
            }
            Op::SnapRemove(snap) => {
                if self.list_snapshots().contains_key(snap) {
                    // Not removed: its content must be whole.
                    self.verify_snapshot(snap);
                } else {
                    self.snaps.remove(snap);
                }
            }
            Op::Resize(name, size) => {
                if !self.require_volume(name, op) {
                    return;
                }
                let old = self.model[name].size;
                let got = self.get(name)["Status"]["sizeBytes"].as_u64();
                if got == Some(*size) {
                    self.model.get_mut(name).expect("volume").size = *size;
                } else if got != Some(old) {
                    self.violation(format!(
                        "volume {name}: after {op:?} cut by the kill the size is {got:?}, expected {old} or {size}"
                    ));
                    return;
                }
                if self.model[name].count() == 0 {
                    self.verify_by_mount(name);
                } else {
                    self.check_volume(name);
                    self.check_size_mounted(name);
                }
            }
            Op::Mount(name, id) | Op::Unmount(name, id) => {
                if !self.require_volume(name, op) {
                    return;
                }
                let name = name.clone();
                let got = self.get(&name)["Status"]["mountCount"]
                    .as_u64()
                    .unwrap_or(u64::MAX);
                let old = u64::from(self.model[&name].count());
                let mount = matches!(op, Op::Mount(..));
                let done = if mount {
                    old + 1
                } else {
                    old.saturating_sub(1)
                };
                if got == done && done != old {
                    if mount && old == 0 {
                        // First mount: adopt the path and check the data.
                        let mp = self.get(&name)["Mountpoint"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        let p = PathBuf::from(mp);
                        self.verify_files(&name, &p);
                        self.check_size(&name, &p);
                        self.model.get_mut(&name).expect("volume").path = Some(p);
                    }
                    let v = self.model.get_mut(&name).expect("volume");
                    if mount {
                        *v.holds.entry(id.clone()).or_insert(0) += 1;
                    } else if let Some(c) = v.holds.get_mut(id) {
                        *c -= 1;
                        if *c == 0 {
                            v.holds.remove(id);
                        }
                    }
                    if v.count() == 0 {
                        v.path = None;
                    }
                } else if got != old {
                    self.violation(format!(
                        "volume {name}: after {op:?} cut by the kill the count is {got}, expected {old} or {done}"
                    ));
                }
            }
        }
    }

    /// A volume an operation used but did not remove must still exist.
    fn require_volume(&mut self, name: &str, op: &Op) -> bool {
        if !self.model.contains_key(name) {
            return false;
        }
        if self.list().contains(name) {
            return true;
        }
        self.violation(format!("volume {name} vanished during {op:?}"));
        self.model.remove(name);
        false
    }

    /// The checks of one volume the workload knows: listed, counts and
    /// Mountpoint as held, data (and size) when mounted.
    fn check_volume(&mut self, name: &str) {
        if !self.model.contains_key(name) {
            return;
        }
        let vol = self.get(name);
        let count = vol["Status"]["mountCount"].as_u64().unwrap_or(u64::MAX);
        let want = u64::from(self.model[name].count());
        if count != want {
            self.violation(format!(
                "volume {name}: mount count {count}, the workload holds {want}"
            ));
        }
        let mp = vol["Mountpoint"].as_str().unwrap_or("").to_string();
        let mounted = !mp.is_empty();
        if (want > 0) != mounted {
            self.violation(format!(
                "volume {name}: holds {want} but Mountpoint is {mp:?}"
            ));
        }
        if want > 0 {
            let p = PathBuf::from(&mp);
            if self.model[name].path.is_none() {
                self.model.get_mut(name).expect("volume").path = Some(p.clone());
            } else if self.model[name].path.as_ref() != Some(&p) {
                self.violation(format!("volume {name}: Mountpoint moved to {mp}"));
            }
            self.verify_files(name, &p);
        } else {
            let image = self.image_dir.join(format!("{name}.img"));
            let len = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(0);
            if len != self.model[name].size {
                self.violation(format!(
                    "volume {name}: image is {len} bytes, expected {}",
                    self.model[name].size
                ));
            }
        }
    }

    /// The checks after every restart (and at the end); `in_flight` holds
    /// the keys of operations cut by the kill, resolved afterwards.
    fn check(&mut self, d: &Daemon, in_flight: &BTreeSet<String>) {
        let (st, violations) = settled_violations(d, SERVICE, Duration::from_secs(2));
        for v in violations {
            self.violation(v);
        }
        // A freeze outlives its process: none may be left.
        for (target, _) in &st.mounts {
            if let Ok(true) = berth::sys::reflink::thaw_if_frozen(target) {
                let t = target.display().to_string();
                self.violation(format!("{t} was left frozen"));
            }
        }
        let listed = self.list();
        let on_disk = st.ready_names();
        if listed != on_disk {
            self.violation(format!(
                "List {listed:?} differs from the ready records {on_disk:?}"
            ));
        }
        let names: Vec<String> = self.model.keys().cloned().collect();
        for name in names {
            if in_flight.contains(&name) {
                continue;
            }
            if !listed.contains(&name) {
                self.violation(format!("volume {name} was lost"));
                self.model.remove(&name);
                continue;
            }
            self.check_volume(&name);
        }
        for name in &listed {
            if !self.model.contains_key(name) && !in_flight.contains(name) {
                self.violation(format!(
                    "volume {name} exists but the workload never made it"
                ));
            }
        }
        let snaps = self.list_snapshots();
        let snaps_on_disk = st.ready_snapshots();
        let snap_names: BTreeSet<String> = snaps.keys().cloned().collect();
        if snap_names != snaps_on_disk {
            self.violation(format!(
                "SnapshotList {snap_names:?} differs from the ready records {snaps_on_disk:?}"
            ));
        }
        for (name, s) in self.snaps.clone() {
            if in_flight.contains(&snap_key(&name)) {
                continue;
            }
            match snaps.get(&name) {
                None => {
                    self.violation(format!("snapshot {name} was lost"));
                    self.snaps.remove(&name);
                }
                Some(a) => {
                    if a["Volume"] != json!(s.volume) || a["SizeBytes"] != json!(s.size) {
                        self.violation(format!("snapshot {name}: {a}, the workload has {s:?}"));
                    }
                }
            }
        }
        for name in snaps.keys() {
            if !self.snaps.contains_key(name) && !in_flight.contains(&snap_key(name)) {
                self.violation(format!(
                    "snapshot {name} exists but the workload never took it"
                ));
            }
        }
    }

    fn held(&self) -> Vec<(String, String)> {
        self.model
            .iter()
            .flat_map(|(n, v)| v.holds.keys().map(move |id| (n.clone(), id.clone())))
            .collect()
    }
}

fn op_kind(op: &Op) -> &'static str {
    match op {
        Op::Create(_) => "create",
        Op::Mount(..) => "mount",
        Op::Unmount(..) => "unmount",
        Op::Remove(_) => "remove",
        Op::SnapCreate(..) => "snapshot",
        Op::SnapRemove(_) => "snapshot_remove",
        Op::Clone(..) => "clone",
        Op::CloneSnap(..) => "clone_snapshot",
        Op::Resize(..) => "resize",
    }
}

#[test]
fn root_chaos_sigkill_loses_nothing() {
    if !can_use_storage("root_chaos_sigkill_loses_nothing") {
        return;
    }
    let kills = env_num("BERTH_CHAOS_KILLS", 50);
    let seed = seed("root_chaos_sigkill_loses_nothing");
    let mut d = Daemon::builder().env("RUST_LOG", "info").start();
    let mut c = Chaos {
        rng: fastrand::Rng::with_seed(seed),
        model: BTreeMap::new(),
        snaps: BTreeMap::new(),
        ids: Vec::new(),
        conn: None,
        sock: d.socket(SERVICE),
        image_dir: d.image_dir(SERVICE),
        fig: Figures::default(),
        epoch: 0,
    };
    c.ids = (0..3)
        .map(|_| format!("{:016x}", c.rng.u64(..)).repeat(4))
        .collect();
    let started = Instant::now();
    while c.fig.kills < kills {
        c.epoch += 1;
        // A few operations run to completion…
        for _ in 0..c.rng.usize(1..=6) {
            if let Some(op) = c.pick(&BTreeSet::new()) {
                c.apply(&op);
            }
            let held: Vec<String> = c
                .model
                .iter()
                .filter(|(_, v)| v.count() > 0)
                .map(|(n, _)| n.clone())
                .collect();
            if !held.is_empty() && c.rng.u8(0..3) == 0 {
                let n = held[c.rng.usize(0..held.len())].clone();
                c.write_file(&n);
            }
        }
        // …then 1–3 are sent and the daemon is killed 0–30 ms later,
        // without waiting for their answers.
        let mut busy = BTreeSet::new();
        let mut flying = Vec::new();
        for _ in 0..c.rng.usize(1..=3) {
            if let Some(op) = c.pick(&busy) {
                busy.extend(op.keys());
                let (path, body) = op.request();
                let mut conn = Conn::open(&c.sock, Duration::from_millis(200)).expect("connect");
                let body = body.to_string();
                let req = format!(
                    "POST {path} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                conn.send(req.as_bytes()).expect("send");
                flying.push((op, conn));
            }
        }
        let delay = match c.rng.u8(0..4) {
            0 => c.rng.u64(0..=2),
            _ => c.rng.u64(0..=30),
        };
        std::thread::sleep(Duration::from_millis(delay));
        c.conn = None;
        d.kill9();
        c.fig.kills += 1;
        c.fig.in_flight += flying.len() as u64;
        let mut cut = Vec::new();
        for (op, mut conn) in flying {
            match conn.read_answer() {
                Ok(a) if a.status == 200 => {
                    // Answered before the kill: it happened.
                    c.fig.ops += 1;
                    cut.push((op, true));
                }
                _ => {
                    c.fig.unanswered += 1;
                    cut.push((op, false));
                }
            }
        }
        let took = d.respawn_timed();
        c.fig.recovery.push(took);
        // Ops that answered are applied to the model; the others are
        // resolved from what the daemon says now.
        let busy: BTreeSet<String> = cut
            .iter()
            .filter(|(_, answered)| !answered)
            .flat_map(|(op, _)| op.keys())
            .collect();
        for (op, answered) in &cut {
            if *answered {
                apply_answered(&mut c, op);
            }
        }
        c.check(&d, &busy);
        let listed = c.list();
        for (op, answered) in &cut {
            if !answered {
                c.resolve(op, &listed);
            }
        }
        // The volumes the cut operations only read (sources) were
        // skipped by the check above: they must hold too.
        for key in &busy {
            c.check_volume(key);
        }
        // Docker-style: an Unmount sent after the restart succeeds and
        // releases exactly one mount.
        let held = c.held();
        if !held.is_empty() {
            let (n, id) = held[c.rng.usize(0..held.len())].clone();
            let before = c.model[&n].count();
            c.apply(&Op::Unmount(n.clone(), id));
            let after = c.get(&n)["Status"]["mountCount"]
                .as_u64()
                .unwrap_or(u64::MAX);
            if after != u64::from(before) - 1 {
                c.violation(format!("late Unmount of {n}: count {before} -> {after}"));
            }
            c.fig.late_unmounts += 1;
        }
        if c.epoch % 25 == 0 {
            eprintln!(
                "chaos: {} kills, {} ops, {} violations, {:.0} s",
                c.fig.kills,
                c.fig.ops,
                c.fig.violations.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    // The end: everything is released and removed, and nothing is left.
    c.check(&d, &BTreeSet::new());
    for (n, id) in c.held() {
        while c.model.get(&n).and_then(|v| v.holds.get(&id)).is_some() {
            c.apply(&Op::Unmount(n.clone(), id.clone()));
        }
    }
    let names: Vec<String> = c.model.keys().cloned().collect();
    for n in names {
        c.verify_by_mount(&n);
        c.apply(&Op::Remove(n));
    }
    let snaps: Vec<String> = c.snaps.keys().cloned().collect();
    for s in snaps {
        c.verify_snapshot(&s);
        c.apply(&Op::SnapRemove(s));
    }
    assert!(c.list().is_empty());
    assert!(c.list_snapshots().is_empty());
    let (_, left) = settled_violations(&d, SERVICE, Duration::from_secs(2));
    for v in left {
        c.violation(format!("at the end: {v}"));
    }
    let left = d.leftovers();
    if !left.is_empty() {
        c.violation(format!("at the end, leftovers: {left:?}"));
    }
    // Which repairs the kills made necessary: evidence that they landed
    // inside multi-step operations.
    let log = d.log();
    for (what, needle) in [
        ("interrupted_create", "an interrupted create was found"),
        ("interrupted_remove", "an interrupted remove was found"),
        ("mounted_without_user", "was mounted with no user"),
        ("counts_reset", "mount counts are reset"),
        ("stale_loop_detached", "that no mount used"),
        ("interrupted_snapshot", "an interrupted snapshot was found"),
        (
            "interrupted_snapshot_remove",
            "an interrupted snapshot removal was found",
        ),
        (
            "partial_copy_removed",
            "left by an interrupted snapshot or clone",
        ),
        ("thawed", "was frozen (interrupted snapshot or clone)"),
        (
            "interrupted_resize_undone",
            "an interrupted resize left the image",
        ),
    ] {
        eprintln!("chaos repairs: {what}={}", log.matches(needle).count());
    }
    let f = &mut c.fig;
    let n = f.recovery.len().max(1) as u32;
    let mean = f.recovery.iter().sum::<Duration>() / n;
    let p99 = percentile(&mut f.recovery, 0.99);
    let max = f.recovery.iter().max().copied().unwrap_or_default();
    let cut: Vec<String> = f.cut.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    eprintln!("chaos cut by a kill, by operation: {}", cut.join(" "));
    let took: Vec<String> = f
        .took
        .iter()
        .map(|(k, (n, t))| format!("{k}:{n}x{:.0}ms", t.as_secs_f64() * 1e3 / *n as f64))
        .collect();
    eprintln!(
        "chaos operations run to completion (count x mean): {}",
        took.join(" ")
    );
    eprintln!(
        "FIGURES chaos: seed={seed} kills={} violations={} ops={} in_flight_at_kill={} cut_mid_operation={} \
         files_verified={} late_unmounts={} snapshots={} snapshots_verified={} clones={} resized={} \
         resize_refused_mounted={} sizes_checked={} \
         recovery_mean_ms={:.1} recovery_p99_ms={:.1} recovery_max_ms={:.1} wall_s={:.0}",
        f.kills,
        f.violations.len(),
        f.ops,
        f.in_flight,
        f.unanswered,
        f.verified_files,
        f.late_unmounts,
        f.snapshots_taken,
        f.snapshots_verified,
        f.clones,
        f.resized,
        f.resize_refused,
        f.sizes_checked,
        mean.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    assert!(
        f.violations.is_empty(),
        "{} invariant violation(s) (seed {seed}):\n{}\nlog tail:\n{}",
        f.violations.len(),
        f.violations.join("\n"),
        d.log_tail(80)
    );
}

/// An operation whose success answer arrived (before the kill, or in
/// [`Chaos::apply`]).
fn apply_answered(c: &mut Chaos, op: &Op) {
    match op {
        Op::Create(n) => {
            c.model
                .insert(n.clone(), Vol::new(BTreeMap::new(), VOLUME_SIZE));
        }
        Op::Mount(n, id) => {
            // The data path is adopted from Get by the next check.
            let v = c.model.get_mut(n).expect("volume");
            *v.holds.entry(id.clone()).or_insert(0) += 1;
        }
        Op::Unmount(n, id) => {
            let v = c.model.get_mut(n).expect("volume");
            if let Some(cnt) = v.holds.get_mut(id) {
                *cnt -= 1;
                if *cnt == 0 {
                    v.holds.remove(id);
                }
            }
            if v.count() == 0 {
                v.path = None;
            }
        }
        Op::Remove(n) => {
            c.model.remove(n);
        }
        Op::SnapCreate(v, s) => {
            let src = c.model[v].clone();
            c.snaps.insert(
                s.clone(),
                Snap {
                    volume: v.clone(),
                    files: src.files,
                    size: src.size,
                },
            );
            c.fig.snapshots_taken += 1;
        }
        Op::SnapRemove(s) => {
            c.snaps.remove(s);
        }
        Op::Clone(n, src, grow) => {
            let s = c.model[src].clone();
            c.model
                .insert(n.clone(), Vol::new(s.files, grow.unwrap_or(s.size)));
            c.fig.clones += 1;
        }
        Op::CloneSnap(n, snap) => {
            let s = c.snaps[snap].clone();
            c.model.insert(n.clone(), Vol::new(s.files, s.size));
            c.fig.clones += 1;
        }
        Op::Resize(n, size) => {
            c.model.get_mut(n).expect("volume").size = *size;
            c.fig.resized += 1;
        }
    }
}
