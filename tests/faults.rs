//! Injected faults: every step of create, mount, unmount, remove,
//! snapshot create and remove, clone (from a volume, mounted or not,
//! grown or not, and from a snapshot) and resize (ext4 offline; xfs
//! offline and online when mkfs.xfs is there) is made to fail — once at
//! its k-th call for every k the operation reaches, and for good — and
//! each time:
//!
//! - the request gets a clear error (non-200, JSON `Err` naming the volume
//!   or snapshot, the failed step and its errno);
//! - the system is left exactly as before the request (records, images,
//!   mounts, loop devices, mount directory, and what Get says), or, where
//!   a half-done step cannot be undone, the same request completes when
//!   it is sent again;
//! - nothing leaks: after clean-up, no record, image, mount or loop device
//!   of the test is left;
//! - the data is intact: the source volume, a clone and a snapshot (read
//!   through a volume made from it) hold the file written before the
//!   request, and no filesystem is left frozen.
//!
//! Also: a slow disk (every state write takes 1.5 s) slows the volume
//! being changed and nothing else.
//!
//! Needs root and the `failpoints` feature:
//! `cargo test --features failpoints --test faults`.
#![cfg(feature = "failpoints")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{can_use_storage, settled_violations, Conn, Daemon, DiskState, RawAnswer};
use serde_json::{json, Value};

const SERVICE: &str = "berth";
const VOL: &str = "fv";
const ID_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// The mount ID of the test's own reads and writes.
const ID_T: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const SNAP: &str = "fs1";
const CLONE: &str = "fc";
/// The volume made to read a snapshot's content.
const PEEK: &str = "fpeek";
const DATA_FILE: &str = "data";

/// Every failpoint, with the errno it injects.
const POINTS: &[(&str, &str)] = &[
    ("fsutil.create_sparse", "ENOSPC"),
    ("loop.mkfs", "EIO"),
    ("fsutil.fsync_dir", "EIO"),
    ("fsutil.atomic_write", "ENOSPC"),
    ("fsutil.fsync", "EIO"),
    ("state.save", "EIO"),
    ("state.delete", "EIO"),
    ("fsutil.remove", "EIO"),
    ("loopdev.attach", "ENODEV"),
    ("mounts.mount", "EIO"),
    ("fsutil.data_dir", "EACCES"),
    ("mounts.unmount", "EBUSY"),
    ("loopdev.detach", "EBUSY"),
    ("reflink.freeze", "EIO"),
    ("reflink.thaw", "EIO"),
    ("reflink.clone", "ENOSPC"),
    ("reflink.copy", "ENOSPC"),
    ("fsutil.fsync_file", "EIO"),
    ("fsutil.rename", "EIO"),
    ("fsutil.set_file_len", "ENOSPC"),
    ("loopdev.set_capacity", "EIO"),
    ("loop.check_fs", "EIO"),
    ("loop.grow_fs", "EIO"),
];

fn errno_text(e: &str) -> &'static str {
    match e {
        "ENOSPC" => "No space left on device",
        "ENODEV" => "No such device",
        "EACCES" => "Permission denied",
        "EBUSY" => "busy",
        _ => "Input/output error",
    }
}

/// The operations under test: the state before it, and the request.
#[derive(Debug, Clone, Copy)]
enum Case {
    Create,
    ImplicitCreateMount,
    MountFirst,
    MountSecond,
    UnmountNotLast,
    UnmountLast,
    Remove,
    SnapshotCreate,
    SnapshotCreateMounted,
    SnapshotRemove,
    Clone,
    CloneMounted,
    CloneGrown,
    CloneSnapshot,
    Resize,
    ResizeXfs,
    ResizeXfsMounted,
}

const CASES: &[Case] = &[
    Case::Create,
    Case::ImplicitCreateMount,
    Case::MountFirst,
    Case::MountSecond,
    Case::UnmountNotLast,
    Case::UnmountLast,
    Case::Remove,
    Case::SnapshotCreate,
    Case::SnapshotCreateMounted,
    Case::SnapshotRemove,
    Case::Clone,
    Case::CloneMounted,
    Case::CloneGrown,
    Case::CloneSnapshot,
    Case::Resize,
    Case::ResizeXfs,
    Case::ResizeXfsMounted,
];

impl Case {
    /// Whether the case starts from a volume holding a data file (then
    /// checked after the request).
    fn has_data(self) -> bool {
        !matches!(
            self,
            Case::Create
                | Case::ImplicitCreateMount
                | Case::MountFirst
                | Case::MountSecond
                | Case::UnmountNotLast
                | Case::UnmountLast
                | Case::Remove
        )
    }

    fn xfs(self) -> bool {
        matches!(self, Case::ResizeXfs | Case::ResizeXfsMounted)
    }

    /// The source volume is mounted (with [`ID_A`]) during the request.
    fn mounted(self) -> bool {
        matches!(
            self,
            Case::SnapshotCreateMounted | Case::CloneMounted | Case::ResizeXfsMounted
        )
    }

    /// What the error must name.
    fn subject(self) -> &'static str {
        match self {
            Case::SnapshotRemove => SNAP,
            Case::Clone | Case::CloneMounted | Case::CloneGrown | Case::CloneSnapshot => CLONE,
            _ => VOL,
        }
    }

    fn request(self) -> (&'static str, Value) {
        match self {
            Case::SnapshotCreate | Case::SnapshotCreateMounted => (
                "/Berth.SnapshotCreate",
                json!({"Volume": VOL, "Name": SNAP}),
            ),
            Case::SnapshotRemove => ("/Berth.SnapshotRemove", json!({"Name": SNAP})),
            Case::Clone | Case::CloneMounted => (
                "/VolumeDriver.Create",
                json!({"Name": CLONE, "Opts": {"volumeName": VOL}}),
            ),
            Case::CloneGrown => (
                "/VolumeDriver.Create",
                json!({"Name": CLONE, "Opts": {"volumeName": VOL, "size": "24M"}}),
            ),
            Case::CloneSnapshot => (
                "/VolumeDriver.Create",
                json!({"Name": CLONE, "Opts": {"snapshotName": SNAP}}),
            ),
            Case::Resize => ("/Berth.VolumeResize", json!({"Name": VOL, "Size": "24M"})),
            Case::ResizeXfs | Case::ResizeXfsMounted => {
                ("/Berth.VolumeResize", json!({"Name": VOL, "Size": "320M"}))
            }
            Case::Create => (
                "/VolumeDriver.Create",
                json!({"Name": VOL, "Opts": {"size": "16M"}}),
            ),
            Case::ImplicitCreateMount | Case::MountFirst => {
                ("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_A}))
            }
            Case::MountSecond => ("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_B})),
            Case::UnmountNotLast => ("/VolumeDriver.Unmount", json!({"Name": VOL, "ID": ID_B})),
            Case::UnmountLast => ("/VolumeDriver.Unmount", json!({"Name": VOL, "ID": ID_A})),
            Case::Remove => ("/VolumeDriver.Remove", json!({"Name": VOL})),
        }
    }
}

struct Rig {
    d: Daemon,
    _fp_dir: tempfile::TempDir,
    fp_file: PathBuf,
    generation: u64,
    conn: Option<Conn>,
}

impl Rig {
    fn start(extra: &str) -> Rig {
        let dir = tempfile::Builder::new()
            .prefix("berth-fp-")
            .tempdir()
            .expect("tempdir");
        let fp_file = dir.path().join("failpoints");
        std::fs::write(&fp_file, "").expect("failpoints file");
        let d = Daemon::builder()
            .service_toml(extra)
            .env("BERTH_FAILPOINTS_FILE", &fp_file.display().to_string())
            .env("RUST_LOG", "info")
            .start();
        Rig {
            d,
            _fp_dir: dir,
            fp_file,
            generation: 0,
            conn: None,
        }
    }

    fn arm(&mut self, spec: &str) {
        self.generation += 1;
        let text = format!("# {}\n{spec}\n", self.generation);
        if let Some(p) = self.fp_file.parent() {
            std::fs::create_dir_all(p).expect("failpoints dir");
        }
        std::fs::write(&self.fp_file, &text).expect("write failpoints");
        let mut ack = self.fp_file.clone().into_os_string();
        ack.push(".applied");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&ack).ok().as_deref() != Some(text.as_str()) {
            assert!(
                Instant::now() < deadline,
                "berthd did not apply failpoints {spec:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn disarm(&mut self) {
        self.arm("");
    }

    fn post(&mut self, path: &str, body: &Value) -> RawAnswer {
        if self.conn.is_none() {
            self.conn = Some(
                Conn::open(&self.d.socket(SERVICE), Duration::from_secs(60)).expect("connect"),
            );
        }
        let a = self
            .conn
            .as_mut()
            .expect("conn")
            .post(path, body.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{path} {body}: transport error {e}"));
        if a.close {
            self.conn = None;
        }
        a
    }

    fn ok(&mut self, path: &str, body: Value) {
        let a = self.post(path, &body);
        assert_eq!(
            a.status,
            200,
            "{path} {body}: {}",
            String::from_utf8_lossy(&a.body)
        );
    }

    /// What the daemon says about a volume: (exists, mountCount,
    /// Mountpoint, sizeBytes).
    fn get_of(&mut self, name: &str) -> (bool, u64, String, u64) {
        let a = self.post("/VolumeDriver.Get", &json!({"Name": name}));
        let v: Value = serde_json::from_slice(&a.body).expect("Get answer is JSON");
        if a.status != 200 {
            return (false, 0, String::new(), 0);
        }
        (
            true,
            v["Volume"]["Status"]["mountCount"].as_u64().unwrap_or(0),
            v["Volume"]["Mountpoint"].as_str().unwrap_or("").to_string(),
            v["Volume"]["Status"]["sizeBytes"].as_u64().unwrap_or(0),
        )
    }

    /// What the daemon says about the volume, the clone and the snapshots.
    fn view(&mut self) -> View {
        let vol = self.get_of(VOL);
        let clone = self.get_of(CLONE).0;
        let a = self.post("/Berth.SnapshotList", &json!({}));
        let v: Value = serde_json::from_slice(&a.body).expect("SnapshotList answer is JSON");
        let snapshots = v["Snapshots"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|s| format!("{} of {}", s["Name"], s["Volume"]))
                    .collect()
            })
            .unwrap_or_default();
        View {
            vol,
            clone,
            snapshots,
        }
    }

    /// Mounts `name` with `id` and returns the data path.
    fn try_mount(&mut self, name: &str, id: &str) -> Result<PathBuf, String> {
        let a = self.post("/VolumeDriver.Mount", &json!({"Name": name, "ID": id}));
        let v: Value = serde_json::from_slice(&a.body).expect("Mount answer is JSON");
        if a.status != 200 {
            return Err(format!("mount {name}: {v}"));
        }
        Ok(PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint")))
    }

    fn mount(&mut self, name: &str, id: &str) -> PathBuf {
        self.try_mount(name, id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether `name` holds the data file (mounted for the check with
    /// its own ID); `None` when the volume does not exist.
    fn data_intact(&mut self, name: &str) -> Option<Result<(), String>> {
        if !self.get_of(name).0 {
            return None;
        }
        let p = match self.try_mount(name, ID_T) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let got = std::fs::read(p.join(DATA_FILE));
        self.ok("/VolumeDriver.Unmount", json!({"Name": name, "ID": ID_T}));
        Some(match got {
            Ok(b) if b == data() => Ok(()),
            Ok(b) => Err(format!("{name}: data file has {} other bytes", b.len())),
            Err(e) => Err(format!("{name}: data file: {e}")),
        })
    }

    /// After a request of a case with data: the source, a clone and the
    /// snapshot (read through a volume made from it) hold the data file,
    /// and no filesystem is frozen.
    fn check_data(&mut self, case: Case) -> Vec<String> {
        let mut out = Vec::new();
        if !case.has_data() {
            return out;
        }
        for (target, _) in self.d.disk_state(SERVICE).mounts {
            if let Ok(true) = berth::sys::reflink::thaw_if_frozen(&target) {
                out.push(format!("{} was left frozen", target.display()));
            }
        }
        match self.data_intact(VOL) {
            Some(Ok(())) => {}
            Some(Err(e)) => out.push(e),
            None => out.push(format!("the source volume {VOL} is gone")),
        }
        if let Some(Err(e)) = self.data_intact(CLONE) {
            out.push(e);
        }
        if self.view().snapshots.iter().any(|s| s.contains(SNAP)) {
            self.ok(
                "/VolumeDriver.Create",
                json!({"Name": PEEK, "Opts": {"snapshotName": SNAP}}),
            );
            if let Some(Err(e)) = self.data_intact(PEEK) {
                out.push(format!("snapshot {SNAP}: {e}"));
            }
            self.ok("/VolumeDriver.Remove", json!({"Name": PEEK}));
        }
        out
    }

    fn setup(&mut self, case: Case) {
        let create = || {
            (
                "/VolumeDriver.Create",
                json!({"Name": VOL, "Opts": {"size": "16M"}}),
            )
        };
        match case {
            Case::Create | Case::ImplicitCreateMount => {}
            Case::MountFirst | Case::Remove => {
                let (p, b) = create();
                self.ok(p, b);
            }
            Case::MountSecond | Case::UnmountLast => {
                let (p, b) = create();
                self.ok(p, b);
                self.ok("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_A}));
            }
            Case::UnmountNotLast => {
                let (p, b) = create();
                self.ok(p, b);
                self.ok("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_A}));
                self.ok("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_B}));
            }
            _ => {
                let opts = if case.xfs() {
                    json!({"size": "300M", "fsType": "xfs"})
                } else {
                    json!({"size": "16M"})
                };
                self.ok("/VolumeDriver.Create", json!({"Name": VOL, "Opts": opts}));
                let p = self.mount(VOL, ID_A);
                write_data(&p.join(DATA_FILE));
                if !case.mounted() {
                    self.ok("/VolumeDriver.Unmount", json!({"Name": VOL, "ID": ID_A}));
                }
                if matches!(case, Case::SnapshotRemove | Case::CloneSnapshot) {
                    self.ok(
                        "/Berth.SnapshotCreate",
                        json!({"Volume": VOL, "Name": SNAP}),
                    );
                }
            }
        }
    }

    /// Back to nothing: every mount released, the volume removed, and no
    /// leftover of any kind.
    fn teardown(&mut self, what: &str) {
        self.disarm();
        for name in [VOL, CLONE, PEEK] {
            for _ in 0..8 {
                if self.get_of(name).1 == 0 {
                    break;
                }
                for id in [ID_A, ID_B, ID_T] {
                    self.ok("/VolumeDriver.Unmount", json!({"Name": name, "ID": id}));
                }
            }
            self.ok("/VolumeDriver.Remove", json!({"Name": name}));
        }
        if !self.view().snapshots.is_empty() {
            self.ok("/Berth.SnapshotRemove", json!({"Name": SNAP}));
        }
        let (st, v) = settled_violations(&self.d, SERVICE, Duration::from_secs(2));
        assert!(v.is_empty(), "{what}: after clean-up: {v:?}");
        assert!(
            st.records.is_empty() && st.images.is_empty() && st.snapshots.is_empty(),
            "{what}: {st:?}"
        );
        assert!(
            self.d.leftovers().is_empty(),
            "{what}: {:?}",
            self.d.leftovers()
        );
    }
}

/// What the daemon says: see [`Rig::view`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    /// The volume: (exists, mountCount, Mountpoint, sizeBytes).
    vol: (bool, u64, String, u64),
    /// Whether the clone exists.
    clone: bool,
    /// "name of volume" of every snapshot.
    snapshots: Vec<String>,
}

/// The content of the data file.
fn data() -> Vec<u8> {
    (0..20_000u32).map(|i| (i % 251) as u8).collect()
}

fn write_data(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create data file");
    f.write_all(&data()).expect("write data file");
    f.sync_all().expect("fsync data file");
}

fn settled_equal(d: &Daemon, before: &DiskState) -> (bool, DiskState) {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let now = d.disk_state(SERVICE);
        if now == *before || Instant::now() >= end {
            return (now == *before, now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What differs between two snapshots, in words.
fn diff(a: &DiskState, b: &DiskState) -> String {
    let mut out = Vec::new();
    let pa = a.parsed();
    let pb = b.parsed();
    for (n, rb) in &pb {
        match pa.get(n) {
            None => out.push(format!("record {n} appeared (phase {})", rb["phase"])),
            Some(ra) if ra != rb => out.push(format!(
                "record {n}: phase {} -> {}, mounts {} -> {}",
                ra["phase"], rb["phase"], ra["mounts"], rb["mounts"]
            )),
            _ => {}
        }
    }
    for n in pa.keys() {
        if !pb.contains_key(n) {
            out.push(format!("record {n} vanished"));
        }
    }
    if a.images != b.images {
        out.push(format!("images {:?} -> {:?}", a.images, b.images));
    }
    if a.mounts != b.mounts {
        out.push(format!("mounts {:?} -> {:?}", a.mounts, b.mounts));
    }
    if a.loops != b.loops {
        out.push(format!("loop devices {:?} -> {:?}", a.loops, b.loops));
    }
    if a.mount_dir_entries != b.mount_dir_entries {
        out.push(format!(
            "mount dir {:?} -> {:?}",
            a.mount_dir_entries, b.mount_dir_entries
        ));
    }
    if a.snapshots != b.snapshots {
        out.push(format!(
            "snapshot records {:?} -> {:?}",
            a.parsed_snapshots()
                .iter()
                .map(|(n, v)| format!("{n}:{}", v["phase"]))
                .collect::<Vec<_>>(),
            b.parsed_snapshots()
                .iter()
                .map(|(n, v)| format!("{n}:{}", v["phase"]))
                .collect::<Vec<_>>()
        ));
    }
    if a.snapshot_junk != b.snapshot_junk {
        out.push(format!("snapshot records dir junk {:?}", b.snapshot_junk));
    }
    if a.record_junk != b.record_junk {
        out.push(format!("records dir junk {:?}", b.record_junk));
    }
    if out.is_empty() {
        "nothing on disk (the daemon's view)".into()
    } else {
        out.join("; ")
    }
}

#[derive(Default, Debug)]
struct Tally {
    injected: u64,
    rolled_back: u64,
    completed_on_retry: u64,
    not_on_path: u64,
    problems: Vec<String>,
}

#[test]
fn root_every_step_fails_cleanly() {
    if !can_use_storage("root_every_step_fails_cleanly") {
        return;
    }
    let mut rig = Rig::start("");
    let mut t = Tally::default();
    let mut retried: Vec<String> = Vec::new();
    let mut per_case: Vec<String> = Vec::new();
    let xfs = common::which("mkfs.xfs") && common::which("xfs_growfs");
    let only = |var: &str, what: &str| {
        std::env::var(var)
            .map(|v| v.split(',').any(|x| x.trim() == what))
            .unwrap_or(true)
    };
    for &case in CASES {
        if !only("BERTH_FAULT_CASES", &format!("{case:?}")) {
            continue;
        }
        if case.xfs() && !xfs {
            eprintln!("SKIPPED {case:?}: needs mkfs.xfs and xfs_growfs");
            continue;
        }
        let case_start = Instant::now();
        let injected_before = t.injected;
        // The reference: the same request without a fault.
        rig.setup(case);
        let (path, body) = case.request();
        rig.ok(path, body.clone());
        let want_view = rig.view();
        for p in rig.check_data(case) {
            t.problems.push(format!("{case:?} without a fault: {p}"));
        }
        rig.teardown(&format!("{case:?} reference"));

        for &(point, errno) in POINTS {
            if !only("BERTH_FAULT_POINTS", point) {
                continue;
            }
            // k-th call fails once, for k = 0, 1, … until the request no
            // longer reaches the point; then the point fails for good.
            let mut k = 0u32;
            loop {
                let persistent = k == u32::MAX;
                let spec = if persistent {
                    format!("{point}=return({errno})")
                } else if k == 0 {
                    format!("{point}=1*return({errno})")
                } else {
                    format!("{point}={k}*off->1*return({errno})")
                };
                let what = format!("{case:?} with {spec}");
                rig.setup(case);
                let before = rig.d.disk_state(SERVICE);
                let before_view = rig.view();
                rig.arm(&spec);
                let a = rig.post(path, &body);
                rig.disarm();
                if a.status == 200 {
                    // The point was not reached (or its failure was
                    // harmless): the result must be the clean one.
                    let (_, v) = settled_violations(&rig.d, SERVICE, Duration::from_secs(2));
                    if !v.is_empty() {
                        t.problems.push(format!("{what}: succeeded but {v:?}"));
                    }
                    if rig.view() != want_view {
                        t.problems.push(format!(
                            "{what}: succeeded with view {:?}, clean run gives {want_view:?}",
                            rig.view()
                        ));
                    }
                    for p in rig.check_data(case) {
                        t.problems.push(format!("{what}: succeeded but {p}"));
                    }
                    rig.teardown(&what);
                    if persistent || k == 0 {
                        // Not reached at its first call: never reached.
                        if k == 0 {
                            t.not_on_path += 1;
                        }
                        break;
                    }
                    k = u32::MAX;
                    continue;
                }
                t.injected += 1;
                // A clear error.
                let msg = serde_json::from_slice::<Value>(&a.body)
                    .ok()
                    .and_then(|v| v["Err"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if !(msg.contains(case.subject())
                    && msg.contains(point)
                    && msg.contains(errno_text(errno)))
                {
                    t.problems.push(format!(
                        "{what}: unclear error (HTTP {}): {msg:?}",
                        a.status
                    ));
                }
                // Exactly as before, or completes on retry.
                let (same, after) = settled_equal(&rig.d, &before);
                let after_view = rig.view();
                if same && after_view == before_view {
                    t.rolled_back += 1;
                } else {
                    let r = rig.post(path, &body);
                    if r.status != 200 {
                        t.problems.push(format!(
                            "{what}: left the system changed and the retry failed: {}\nbefore {before:?}\nafter {after:?}",
                            String::from_utf8_lossy(&r.body)
                        ));
                    } else {
                        let (_, v) = settled_violations(&rig.d, SERVICE, Duration::from_secs(2));
                        if !v.is_empty() || rig.view() != want_view {
                            t.problems.push(format!(
                                "{what}: retry succeeded but left {v:?}, view {:?} (want {want_view:?})",
                                rig.view()
                            ));
                        }
                        t.completed_on_retry += 1;
                        retried.push(format!(
                            "{what}: view {before_view:?} -> {after_view:?}; changed: {}",
                            diff(&before, &after)
                        ));
                    }
                }
                for p in rig.check_data(case) {
                    t.problems.push(format!("{what}: {p}"));
                }
                rig.teardown(&what);
                if persistent {
                    break;
                }
                k += 1;
                if k > 40 {
                    t.problems.push(format!("{what}: still failing at k = 40"));
                    break;
                }
            }
        }
        per_case.push(format!(
            "{case:?}: {} faults, {:.0} s",
            t.injected - injected_before,
            case_start.elapsed().as_secs_f64()
        ));
    }
    eprintln!("faults per operation: {}", per_case.join("; "));
    for r in &retried {
        eprintln!("completed on retry: {r}");
    }
    eprintln!(
        "FIGURES faults: points={} operations={} injected={} rolled_back={} completed_on_retry={} problems={}",
        POINTS.len(),
        per_case.len(),
        t.injected,
        t.rolled_back,
        t.completed_on_retry,
        t.problems.len()
    );
    assert!(
        t.problems.is_empty(),
        "{} problem(s):\n{}\nlog tail:\n{}",
        t.problems.len(),
        t.problems.join("\n"),
        rig.d.log_tail(40)
    );
    if std::env::var_os("BERTH_FAULT_CASES").is_none()
        && std::env::var_os("BERTH_FAULT_POINTS").is_none()
    {
        assert!(t.injected > 100, "faults were injected: {t:?}");
    }
}

/// A slow disk: every state write takes 1.5 s. The volume being changed
/// waits for it; reads and other volumes do not.
#[test]
fn root_slow_disk_slows_only_the_volume_being_changed() {
    if !can_use_storage("root_slow_disk_slows_only_the_volume_being_changed") {
        return;
    }
    let mut rig = Rig::start("");
    rig.ok(
        "/VolumeDriver.Create",
        json!({"Name": "other", "Opts": {"size": "16M"}}),
    );
    rig.arm("fsutil.atomic_write=sleep(1500)");
    let sock = rig.d.socket(SERVICE);
    let slow = std::thread::spawn(move || {
        let mut c = Conn::open(&sock, Duration::from_secs(60)).expect("connect");
        let t = Instant::now();
        let a = c
            .post(
                "/VolumeDriver.Create",
                json!({"Name": "slow", "Opts": {"size": "16M"}})
                    .to_string()
                    .as_bytes(),
            )
            .expect("answer");
        (a.status, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        let a = rig.post("/VolumeDriver.Get", &json!({"Name": "other"}));
        assert_eq!(a.status, 200);
        let a = rig.post("/VolumeDriver.List", &json!({}));
        assert_eq!(a.status, 200);
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, took) = slow.join().expect("slow create");
    rig.disarm();
    assert_eq!(status, 200, "a slow disk delays, it does not fail");
    assert!(
        took >= Duration::from_millis(3000),
        "two state writes: {took:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "reads waited {worst:?} behind a slow state write"
    );
    eprintln!(
        "FIGURES slow disk: create with 1.5 s state writes took {:.1} s; worst Get+List meanwhile {:.1} ms",
        took.as_secs_f64(),
        worst.as_secs_f64() * 1e3
    );
    rig.ok("/VolumeDriver.Remove", json!({"Name": "slow"}));
    rig.ok("/VolumeDriver.Remove", json!({"Name": "other"}));
    assert!(rig.d.leftovers().is_empty());
}

/// No free loop device: Mount answers with a clear error, the volume
/// stays as it was, and the next Mount works once a device is free.
#[test]
fn root_no_free_loop_device() {
    if !can_use_storage("root_no_free_loop_device") {
        return;
    }
    let mut rig = Rig::start("");
    rig.ok(
        "/VolumeDriver.Create",
        json!({"Name": VOL, "Opts": {"size": "16M"}}),
    );
    let before = rig.d.disk_state(SERVICE);
    rig.arm("loopdev.attach=return(ENODEV)");
    let a = rig.post("/VolumeDriver.Mount", &json!({"Name": VOL, "ID": ID_A}));
    rig.disarm();
    let msg = String::from_utf8_lossy(&a.body).into_owned();
    assert_eq!(a.status, 500, "{msg}");
    assert!(
        msg.contains("attach loop device") && msg.contains(VOL),
        "{msg}"
    );
    let (same, after) = settled_equal(&rig.d, &before);
    assert!(same, "before {before:?}\nafter {after:?}");
    rig.ok("/VolumeDriver.Mount", json!({"Name": VOL, "ID": ID_A}));
    rig.teardown("no free loop device");
}
