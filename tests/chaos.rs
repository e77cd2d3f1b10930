//! Chaos: a workload of real volumes (create, mount with several IDs,
//! write + checksum, unmount, remove) while berthd is killed with SIGKILL
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
//! 4. Docker-style Unmounts sent after the restart succeed.
//!
//! An operation in flight at the kill may have happened or not, never
//! half: a create leaves a complete, usable volume or nothing; a remove
//! leaves the whole volume or nothing; a mount or unmount changes the
//! count by one or not at all.
//!
//! CI runs 50 kills; `BERTH_CHAOS_KILLS=1000 cargo test --release --test
//! chaos -- --nocapture` (or `scripts/chaos-long.sh`) is the long run.
//! `BERTH_TEST_SEED` replays a run. Needs root.
//!
//! New operations (snapshots, clones, resize) plug in as further
//! [`Op`] variants: a way to send it, and a way to resolve it after a kill.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{can_use_storage, env_num, percentile, seed, settled_violations, Conn, Daemon};
use serde_json::{json, Value};

const SERVICE: &str = "berth";
const NAMES: usize = 10;
const VOLUME_SIZE: &str = "16M";
const TIMEOUT: Duration = Duration::from_secs(120);

/// What the workload knows of one volume.
#[derive(Debug, Default, Clone)]
struct Vol {
    /// Mount ID → mounts the workload holds.
    holds: BTreeMap<String, u32>,
    /// File name → checksum of what was written (and fsynced).
    files: BTreeMap<String, u64>,
    /// Data path while mounted.
    path: Option<PathBuf>,
}

impl Vol {
    fn count(&self) -> u32 {
        self.holds.values().sum()
    }
}

/// One plugin call the workload can make. To add an operation: a variant,
/// its request in [`Op::request`], when it may be chosen in
/// [`Chaos::pick`], its effect in [`Chaos::apply`], and how to resolve it
/// when the daemon died during it in [`Chaos::resolve`].
#[derive(Debug, Clone)]
enum Op {
    Create(String),
    Mount(String, String),
    Unmount(String, String),
    Remove(String),
}

impl Op {
    fn volume(&self) -> &str {
        match self {
            Op::Create(n) | Op::Remove(n) | Op::Mount(n, _) | Op::Unmount(n, _) => n,
        }
    }

    fn request(&self) -> (&'static str, Value) {
        match self {
            Op::Create(n) => (
                "/VolumeDriver.Create",
                json!({"Name": n, "Opts": {"size": VOLUME_SIZE}}),
            ),
            Op::Mount(n, id) => ("/VolumeDriver.Mount", json!({"Name": n, "ID": id})),
            Op::Unmount(n, id) => ("/VolumeDriver.Unmount", json!({"Name": n, "ID": id})),
            Op::Remove(n) => ("/VolumeDriver.Remove", json!({"Name": n})),
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
}

struct Chaos {
    rng: fastrand::Rng,
    model: BTreeMap<String, Vol>,
    ids: Vec<String>,
    conn: Option<Conn>,
    sock: PathBuf,
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

    /// A call that must succeed.
    fn call(&mut self, path: &str, body: &Value) -> Value {
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
        assert_eq!(a.status, 200, "epoch {}: {path} {body}: {v}", self.epoch);
        assert!(
            v.get("Err").is_none_or(|e| e == ""),
            "epoch {}: {path} {body}: {v}",
            self.epoch
        );
        self.fig.ops += 1;
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
    /// `busy` names volumes that already have an operation in flight.
    fn pick(&mut self, busy: &BTreeSet<String>) -> Option<Op> {
        for _ in 0..20 {
            let name = format!("chaos-{}", self.rng.usize(0..NAMES));
            if busy.contains(&name) {
                continue;
            }
            let id = self.ids[self.rng.usize(0..self.ids.len())].clone();
            let op = match self.model.get(&name) {
                None => Op::Create(name),
                Some(v) => match self.rng.u8(0..10) {
                    0..=3 => Op::Mount(name, id),
                    4..=7 if v.count() > 0 => {
                        let held: Vec<&String> = v.holds.keys().collect();
                        let id = held[self.rng.usize(0..held.len())].clone();
                        Op::Unmount(name, id)
                    }
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
        let (path, body) = op.request();
        let answer = self.call(path, &body);
        match op {
            Op::Create(n) => {
                self.model.insert(n.clone(), Vol::default());
            }
            Op::Mount(n, id) => {
                let p = PathBuf::from(answer["Mountpoint"].as_str().expect("Mountpoint"));
                let first = self.model[n].count() == 0;
                if first {
                    // The volume was unmounted: everything written before
                    // must be back.
                    self.verify_files(n, &p);
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

    /// Mounts with a private ID, checks the data, unmounts.
    fn verify_by_mount(&mut self, name: &str) {
        let id = "chaos-verifier";
        let v = self.call("/VolumeDriver.Mount", &json!({"Name": name, "ID": id}));
        let p = PathBuf::from(v["Mountpoint"].as_str().expect("Mountpoint"));
        self.verify_files(name, &p);
        // Usable: a write goes through.
        if let Err(e) = std::fs::write(p.join(".probe"), b"probe") {
            self.violation(format!("volume {name} is not writable: {e}"));
        }
        self.call("/VolumeDriver.Unmount", &json!({"Name": name, "ID": id}));
    }

    /// After a restart: decide what an operation cut by the kill did.
    fn resolve(&mut self, op: &Op, listed: &BTreeSet<String>) {
        let name = op.volume().to_string();
        let exists = listed.contains(&name);
        match op {
            Op::Create(_) => {
                if exists {
                    // Created before the kill: it must be complete.
                    self.model.insert(name.clone(), Vol::default());
                    self.verify_by_mount(&name);
                }
            }
            Op::Remove(_) => {
                if exists {
                    // Not removed: every byte must still be there.
                    self.verify_by_mount(&name);
                } else {
                    self.model.remove(&name);
                }
            }
            Op::Mount(_, id) | Op::Unmount(_, id) => {
                if !exists {
                    self.violation(format!("volume {name} vanished during {op:?}"));
                    self.model.remove(&name);
                    return;
                }
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

    /// The checks after every restart (and at the end).
    fn check(&mut self, d: &Daemon, in_flight: &BTreeSet<String>) {
        let (st, violations) = settled_violations(d, SERVICE, Duration::from_secs(2));
        for v in violations {
            self.violation(v);
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
            let vol = self.get(&name);
            let count = vol["Status"]["mountCount"].as_u64().unwrap_or(u64::MAX);
            let want = u64::from(self.model[&name].count());
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
                if self.model[&name].path.is_none() {
                    self.model.get_mut(&name).expect("volume").path = Some(p.clone());
                } else if self.model[&name].path.as_ref() != Some(&p) {
                    self.violation(format!("volume {name}: Mountpoint moved to {mp}"));
                }
                self.verify_files(&name, &p);
            }
        }
        for name in &listed {
            if !self.model.contains_key(name) && !in_flight.contains(name) {
                self.violation(format!(
                    "volume {name} exists but the workload never made it"
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

#[test]
fn root_chaos_sigkill_loses_nothing() {
    if !can_use_storage("root_chaos_sigkill_loses_nothing") {
        return;
    }
    let kills = env_num("BERTH_CHAOS_KILLS", 50);
    let seed = seed("root_chaos_sigkill_loses_nothing");
    let mut d = Daemon::start_with_env("", vec![("RUST_LOG".into(), "info".into())]);
    let mut c = Chaos {
        rng: fastrand::Rng::with_seed(seed),
        model: BTreeMap::new(),
        ids: Vec::new(),
        conn: None,
        sock: d.socket(SERVICE),
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
                busy.insert(op.volume().to_string());
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
            .map(|(op, _)| op.volume().to_string())
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
    assert!(c.list().is_empty());
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
    ] {
        eprintln!("chaos repairs: {what}={}", log.matches(needle).count());
    }
    let f = &mut c.fig;
    let n = f.recovery.len().max(1) as u32;
    let mean = f.recovery.iter().sum::<Duration>() / n;
    let p99 = percentile(&mut f.recovery, 0.99);
    let max = f.recovery.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURES chaos: seed={seed} kills={} violations={} ops={} in_flight_at_kill={} cut_mid_operation={} \
         files_verified={} late_unmounts={} recovery_mean_ms={:.1} recovery_p99_ms={:.1} recovery_max_ms={:.1} wall_s={:.0}",
        f.kills,
        f.violations.len(),
        f.ops,
        f.in_flight,
        f.unanswered,
        f.verified_files,
        f.late_unmounts,
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

/// An operation whose success answer arrived before the kill.
fn apply_answered(c: &mut Chaos, op: &Op) {
    match op {
        Op::Create(n) => {
            c.model.insert(n.clone(), Vol::default());
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
    }
}
