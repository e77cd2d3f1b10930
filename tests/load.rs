//! Load: 100 concurrent clients (one keep-alive connection each) mixing
//! Get/List/Path with create/mount/unmount/remove, each on its own
//! volume and all on a few shared volumes. Required: 0 failed requests,
//! no deadlock (the run ends within its deadline), per-volume
//! serialization holds: no volume is ever mounted twice (a sampler reads
//! the kernel's mount table throughout), a shared volume stays mounted
//! and readable while any client holds it, and every count returns to 0.
//! Reports throughput and latency percentiles.
//!
//! `BERTH_LOAD_CLIENTS` (default 100) and `BERTH_LOAD_ROUNDS` (default 2)
//! scale it. Needs root.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{can_use_storage, env_num, percentile, settled_violations, Conn, Daemon};
use serde_json::{json, Value};

const SHARED: usize = 4;

#[derive(Default)]
struct Stats {
    reads: Vec<Duration>,
    storage: Vec<Duration>,
    failures: Vec<String>,
}

struct Client {
    conn: Conn,
    sock: PathBuf,
    stats: Stats,
}

impl Client {
    fn call(&mut self, path: &str, body: Value, storage: bool) -> Option<Value> {
        let t = Instant::now();
        let r = self.conn.post(path, body.to_string().as_bytes());
        let took = t.elapsed();
        if storage {
            self.stats.storage.push(took);
        } else {
            self.stats.reads.push(took);
        }
        match r {
            Ok(a) => {
                if a.close {
                    self.conn = Conn::open(&self.sock, Duration::from_secs(60)).expect("reconnect");
                }
                let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                if a.status != 200 {
                    self.stats
                        .failures
                        .push(format!("{path} {body}: {} {v}", a.status));
                    return None;
                }
                Some(v)
            }
            Err(e) => {
                self.stats.failures.push(format!("{path} {body}: {e}"));
                self.conn = Conn::open(&self.sock, Duration::from_secs(60)).expect("reconnect");
                None
            }
        }
    }

    fn fail(&mut self, what: String) {
        self.stats.failures.push(what);
    }
}

#[test]
fn root_load_100_clients_no_failure_no_double_mount() {
    if !can_use_storage("root_load_100_clients_no_failure_no_double_mount") {
        return;
    }
    let clients = env_num("BERTH_LOAD_CLIENTS", 100) as usize;
    let rounds = env_num("BERTH_LOAD_ROUNDS", 2) as usize;
    let d = Daemon::builder().env("RUST_LOG", "warn").start();
    let sock = d.socket("berth");
    let mnt = d.mount_dir();
    let api = d.client("berth");
    for k in 0..SHARED {
        let name = format!("shared-{k}");
        api.create(&name, &[("size", "16M")]);
        let p = api.mount(&name, Some("setup"));
        std::fs::write(p.join("marker"), name.as_bytes()).expect("marker");
        api.unmount(&name, Some("setup"));
    }
    let stop = AtomicBool::new(false);
    let stacked = Mutex::new(Vec::<String>::new());
    let samples = AtomicU64::new(0);
    let deadline = Duration::from_secs(env_num("BERTH_LOAD_DEADLINE_S", 300));
    let started = Instant::now();
    let all: Vec<Stats> = std::thread::scope(|s| {
        // The sampler: no mount point under the mount directory is ever
        // mounted twice.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let t = berth::sys::mounts::MountTable::read().expect("mountinfo");
                let mut seen = std::collections::BTreeMap::new();
                for m in t.under(&mnt) {
                    *seen.entry(m.target.clone()).or_insert(0) += 1;
                }
                for (target, n) in seen {
                    if n > 1 {
                        stacked
                            .lock()
                            .expect("lock")
                            .push(format!("{} mounted {n} times", target.display()));
                    }
                }
                samples.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let hs: Vec<_> = (0..clients)
            .map(|i| {
                let sock = sock.clone();
                let mnt = mnt.clone();
                s.spawn(move || {
                    let mut c = Client {
                        conn: Conn::open(&sock, Duration::from_secs(120)).expect("connect"),
                        sock: sock.clone(),
                        stats: Stats::default(),
                    };
                    let mut rng = fastrand::Rng::with_seed(i as u64);
                    let own = format!("load-{i}");
                    let id = format!("{:064x}", i + 1);
                    c.call(
                        "/VolumeDriver.Create",
                        json!({"Name": own, "Opts": {"size": "16M"}}),
                        true,
                    );
                    for round in 0..rounds {
                        // Own volume: mount, write, check Path, unmount.
                        if let Some(v) =
                            c.call("/VolumeDriver.Mount", json!({"Name": own, "ID": id}), true)
                        {
                            let p = PathBuf::from(v["Mountpoint"].as_str().unwrap_or(""));
                            if let Err(e) = std::fs::write(p.join(format!("r{round}")), b"x") {
                                c.fail(format!("{own}: write: {e}"));
                            }
                            let path = c.call("/VolumeDriver.Path", json!({"Name": own}), false);
                            if path.is_some_and(|v| v["Mountpoint"] != p.to_string_lossy().as_ref())
                            {
                                c.fail(format!("{own}: Path disagrees with Mount"));
                            }
                            c.call(
                                "/VolumeDriver.Unmount",
                                json!({"Name": own, "ID": id}),
                                true,
                            );
                        }
                        // A shared volume: while held, it is mounted and
                        // its data readable, whatever the others do.
                        let shared = format!("shared-{}", rng.usize(0..SHARED));
                        if let Some(v) = c.call(
                            "/VolumeDriver.Mount",
                            json!({"Name": shared, "ID": id}),
                            true,
                        ) {
                            let p = PathBuf::from(v["Mountpoint"].as_str().unwrap_or(""));
                            for _ in 0..3 {
                                if !common::is_mounted(&mnt.join(&shared)) {
                                    c.fail(format!(
                                        "{shared} not mounted while client {i} holds it"
                                    ));
                                }
                                match std::fs::read(p.join("marker")) {
                                    Ok(b) if b == shared.as_bytes() => {}
                                    other => c.fail(format!("{shared}: marker {other:?}")),
                                }
                                let g = c.call("/VolumeDriver.Get", json!({"Name": shared}), false);
                                if g.is_some_and(|g| {
                                    g["Volume"]["Status"]["mountCount"].as_u64().unwrap_or(0) == 0
                                }) {
                                    c.fail(format!("{shared}: count 0 while client {i} holds it"));
                                }
                                std::thread::sleep(Duration::from_millis(rng.u64(0..5)));
                            }
                            c.call(
                                "/VolumeDriver.Unmount",
                                json!({"Name": shared, "ID": id}),
                                true,
                            );
                        }
                        // Reads.
                        for _ in 0..20 {
                            match rng.u8(0..3) {
                                0 => c.call("/VolumeDriver.List", json!({}), false),
                                1 => c.call("/VolumeDriver.Get", json!({"Name": own}), false),
                                _ => c.call(
                                    "/VolumeDriver.Path",
                                    json!({"Name": format!("shared-{}", rng.usize(0..SHARED))}),
                                    false,
                                ),
                            };
                        }
                    }
                    c.call("/VolumeDriver.Remove", json!({"Name": own}), true);
                    c.stats
                })
            })
            .collect();
        let out = hs.into_iter().map(|h| h.join().expect("client")).collect();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let mixed = started.elapsed();
    assert!(mixed < deadline, "the run took {mixed:?}: a deadlock?");

    // A read-only phase: throughput of Get/List/Path under 100 clients.
    let read_for = Duration::from_secs(3);
    let read_stats: Vec<Vec<Duration>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|i| {
                let sock = sock.clone();
                s.spawn(move || {
                    let mut conn = Conn::open(&sock, Duration::from_secs(30)).expect("connect");
                    let mut v = Vec::new();
                    let end = Instant::now() + read_for;
                    let mut n = 0usize;
                    while Instant::now() < end {
                        let (p, b) = match n % 3 {
                            0 => (
                                "/VolumeDriver.Get",
                                json!({"Name": format!("shared-{}", i % SHARED)}),
                            ),
                            1 => ("/VolumeDriver.List", json!({})),
                            _ => ("/VolumeDriver.Path", json!({"Name": "shared-0"})),
                        };
                        let t = Instant::now();
                        let a = conn.post(p, b.to_string().as_bytes()).expect("answer");
                        assert_eq!(a.status, 200);
                        v.push(t.elapsed());
                        n += 1;
                    }
                    v
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("reader")).collect()
    });

    let mut reads = Vec::new();
    let mut storage = Vec::new();
    let mut failures = Vec::new();
    for s in all {
        reads.extend(s.reads);
        storage.extend(s.storage);
        failures.extend(s.failures);
    }
    let total = reads.len() + storage.len();
    let mut ro: Vec<Duration> = read_stats.into_iter().flatten().collect();
    let ro_n = ro.len();
    let stacked = stacked.into_inner().expect("lock");
    // Every count is back to 0 and nothing is left.
    for k in 0..SHARED {
        let name = format!("shared-{k}");
        let v = api.get(&name);
        if v["Status"]["mountCount"] != 0 {
            failures.push(format!(
                "{name}: count {} at the end",
                v["Status"]["mountCount"]
            ));
        }
        api.remove(&name);
    }
    assert!(api.list_names().is_empty());
    let (_, v) = settled_violations(&d, "berth", Duration::from_secs(2));
    failures.extend(v);
    failures.extend(d.leftovers());
    eprintln!(
        "FIGURES load: clients={clients} mixed_requests={total} failed={} stacked_mounts={} sampler_reads={} \
         mixed_wall_s={:.1} mixed_rate={:.0}/s storage_ops={} storage_p50_ms={:.1} storage_p99_ms={:.1} \
         read_p50_ms={:.2} read_p99_ms={:.2} | read-only: requests={ro_n} rate={:.0}/s p50_ms={:.2} p99_ms={:.2} max_ms={:.1}",
        failures.len(),
        stacked.len(),
        samples.load(Ordering::Relaxed),
        mixed.as_secs_f64(),
        total as f64 / mixed.as_secs_f64(),
        storage.len(),
        percentile(&mut storage, 0.5).as_secs_f64() * 1e3,
        percentile(&mut storage, 0.99).as_secs_f64() * 1e3,
        percentile(&mut reads, 0.5).as_secs_f64() * 1e3,
        percentile(&mut reads, 0.99).as_secs_f64() * 1e3,
        ro_n as f64 / read_for.as_secs_f64(),
        percentile(&mut ro, 0.5).as_secs_f64() * 1e3,
        percentile(&mut ro, 0.99).as_secs_f64() * 1e3,
        ro.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    failures.truncate(30);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(stacked.is_empty(), "{stacked:?}");
}
