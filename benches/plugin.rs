//! Berth's benchmark suite (run with `cargo bench --bench plugin`, as root
//! for the storage parts). Prints a Markdown table; asserts nothing.
//! `cargo bench --bench plugin -- api` (or `activation`, `storage`) runs
//! one part.
//!
//! Every figure is measured next to a floor taken in the same run:
//! - HTTP floor: a tokio + hyper server on a UNIX socket, built like
//!   berthd, that answers Get, Path and List from memory with Berth's own
//!   answers (captured first), so bodies have the same shape and size
//!   (`support/floor.rs`); Berth and the floor are measured alternately
//!   with the same keep-alive client;
//! - storage floor: the same create/mount/unmount/remove steps done with
//!   the tools by hand (truncate, mkfs.ext4, losetup, mount, umount).
//!
//! Read-path figures use N fabricated volume records (phase ready, no
//! image), so 10 000 volumes cost seconds, not the hour 10 000 mkfs take.

mod support;

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{floor, ms, pct, us, Conn};

/// The daemon measured: this build's, or `BERTH_BENCH_BERTHD` (to
/// measure another build with the same client and floor).
fn berthd() -> String {
    std::env::var("BERTH_BENCH_BERTHD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_berthd").into())
}

struct Bench {
    dir: PathBuf,
}

impl Bench {
    fn config(&self) -> PathBuf {
        let c = self.dir.join("config.toml");
        std::fs::write(
            &c,
            format!(
                "[daemon]\nplugins_dir = \"{d}/plugins\"\nstate_dir = \"{d}/state\"\nmount_dir = \"{d}/mnt\"\nlog_level = \"warn\"\n[services.berth]\ndriver = \"loop\"\n",
                d = self.dir.display()
            ),
        )
        .expect("config");
        c
    }

    fn fabricate(&self, n: usize) {
        let rec_dir = self.dir.join("state/records/berth");
        let _ = std::fs::remove_dir_all(&rec_dir);
        std::fs::create_dir_all(&rec_dir).expect("records dir");
        for i in 0..n {
            let name = format!("fab{i:05}");
            let rec = serde_json::json!({
                "version": 1, "name": name, "id": format!("{i:032x}"), "phase": "ready",
                "created_at": "2026-01-01T00:00:00Z", "size": 1u64 << 30, "fs_type": "ext4",
                "volume_type": "", "iops": 0, "availability_zone": "", "uid": 0, "gid": 0, "mode": 493,
                "driver_data": {}, "mounts": {}, "mounted": null
            });
            std::fs::write(rec_dir.join(format!("{name}.json")), rec.to_string())
                .expect("write record");
        }
    }

    fn start(&self) -> Child {
        let cfg = self.config();
        let child = Command::new(berthd())
            .arg("--config")
            .arg(&cfg)
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berthd");
        let sock = self.sock();
        let end = Instant::now() + Duration::from_secs(60);
        while UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < end, "berthd did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("plugins/berth.sock")
    }
}

fn stop(mut c: Child) {
    let _ = Command::new("kill").arg(c.id().to_string()).status();
    let _ = c.wait();
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn run(cmd: &str, args: &[&str]) {
    let s = Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect(cmd);
    assert!(s.success(), "{cmd} {args:?}");
}

fn main() {
    // `cargo bench` passes --bench; other words name the parts to run.
    let root = nix::unistd::geteuid().is_root();
    let dir = tempfile::Builder::new()
        .prefix("berth-bench-")
        .tempdir()
        .expect("tempdir");
    let b = Bench {
        dir: dir.path().to_path_buf(),
    };
    println!(
        "# Berth benchmarks ({})\n",
        if root {
            "root: all parts"
        } else {
            "not root: storage parts skipped"
        }
    );

    let get_body = "{\"Name\":\"fab00001\"}\n";
    println!("| figure | Berth | floor (same run) | Berth / floor |\n|---|---|---|---|");
    if part("api") {
        for n in [10usize, 1000, 10000] {
            api_at(&b, n, get_body);
        }
    }

    if part("activation") {
        activation(&b);
    }

    let size = std::fs::metadata(berthd()).map(|m| m.len()).unwrap_or(0);
    println!(
        "| berthd binary (release, stripped) | {:.2} MB | | |",
        size as f64 / 1048576.0
    );

    if !part("storage") {
        return;
    }
    if !root {
        println!("\nSKIPPED: storage benchmarks need root.");
        return;
    }
    storage(&b);
}

/// Whether the command line asks for `name` (no word: every part).
fn part(name: &str) -> bool {
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    words.is_empty() || words.iter().any(|w| w == name)
}

/// Berth's answers to Get and Path of every volume and to List, for the
/// floor to give back.
fn capture(sock: &Path, n: usize) -> floor::Answers {
    let mut c = Conn::open(sock);
    let mut a = floor::Answers {
        list: Bytes::from(c.call("VolumeDriver.List", "{}\n")),
        ..Default::default()
    };
    for i in 0..n {
        let name = format!("fab{i:05}");
        let body = format!("{{\"Name\":\"{name}\"}}\n");
        a.get
            .insert(name.clone(), Bytes::from(c.call("VolumeDriver.Get", &body)));
        a.path
            .insert(name, Bytes::from(c.call("VolumeDriver.Path", &body)));
    }
    a
}

fn ratio(b: Duration, f: Duration) -> String {
    format!("{:.2}×", b.as_secs_f64() / f.as_secs_f64())
}

/// Read path at `n` volumes, next to the floor.
fn api_at(b: &Bench, n: usize, get_body: &str) {
    b.fabricate(n);
    let t0 = Instant::now();
    let child = b.start();
    let sock = b.sock();
    // Serving starts before the volumes are loaded; the first Get is
    // answered once they are.
    Conn::open(&sock).call("VolumeDriver.Get", get_body);
    let startup = t0.elapsed();
    let answers = capture(&sock, n);
    let (get_len, list_len) = (
        answers.get.get("fab00001").map_or(0, Bytes::len),
        answers.list.len(),
    );
    let fsock = b.dir.join(format!("floor-{n}.sock"));
    floor::start(&fsock, answers);
    let lat = |method: &str, body: &str, calls: usize, what: &str| {
        let p = support::latency_pair(&sock, &fsock, method, body, calls, 3);
        println!(
            "| N={n}: {what} c=1, p50 / p99 | {} / {} | {} / {} | {} |",
            us(p.berth.0),
            us(p.berth.1),
            us(p.floor.0),
            us(p.floor.1),
            ratio(p.berth.0, p.floor.0)
        );
    };
    lat("VolumeDriver.Get", get_body, 5000, "Get");
    lat("VolumeDriver.Path", get_body, 3000, "Path");
    lat(
        "VolumeDriver.List",
        "{}\n",
        if n >= 10000 { 300 } else { 2000 },
        "List",
    );
    let tput = |method: &str, body: &str, what: &str| {
        let (bt, ft) = support::throughput_pair(&sock, &fsock, method, body, 2);
        println!(
            "| N={n}: {what} c=16 | {bt:.0} req/s | {ft:.0} req/s | {:.2}× |",
            bt / ft
        );
    };
    tput("VolumeDriver.Get", get_body, "Get");
    tput("VolumeDriver.List", "{}\n", "List");
    let rss = rss_kb(child.id());
    println!("| N={n}: body sizes, Get / List | {get_len} / {list_len} bytes | same | |");
    println!(
        "| N={n}: exec → first Get answered (volumes loaded) | {} | | | |",
        ms(startup)
    );
    println!(
        "| N={n}: RSS after load | {:.1} MB | | | |",
        rss as f64 / 1024.0
    );
    stop(child);
}

/// Cold start under socket activation, 0 and 10 000 volumes.
fn activation(b: &Bench) {
    if !Path::new("/usr/bin/systemd-socket-activate").exists() {
        return;
    }
    let dir = &b.dir;
    for n in [0usize, 10000] {
        b.fabricate(n);
        let cfg = b.config();
        let mut v = Vec::new();
        let mut vg = Vec::new();
        let mut rss = 0;
        for _ in 0..7 {
            let sock = dir.join("act.sock");
            let _ = std::fs::remove_file(&sock);
            let mut act = Command::new("systemd-socket-activate")
                .arg(format!("--listen={}", sock.display()))
                .arg("--fdname=berth")
                .arg(berthd())
                .arg("--config")
                .arg(&cfg)
                .env_remove("NOTIFY_SOCKET")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("activate");
            while !sock.exists() {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            let mut c = Conn::open(&sock);
            c.call("Plugin.Activate", "");
            v.push(t.elapsed());
            c.call("VolumeDriver.Get", "{\"Name\":\"fab00001\"}");
            vg.push(t.elapsed());
            std::thread::sleep(Duration::from_millis(100));
            rss = rss_kb(act.id());
            let _ = Command::new("kill").arg(act.id().to_string()).status();
            let _ = act.wait();
        }
        println!(
                "| socket activation, {n} volumes: connect → first answer | median {} (min {}) | floor ≈1.7 ms / 5.4 ms (reference) | |",
                ms(pct(&mut v.clone(), 0.5)),
                ms(pct(&mut v, 0.0))
            );
        println!(
            "| socket activation, {n} volumes: connect → first Get answered | median {} | | |",
            ms(pct(&mut vg, 0.5))
        );
        println!(
            "| RSS idle after activation, {n} volumes | {:.1} MB | | |",
            rss as f64 / 1024.0
        );
    }
}

/// Create + mount + unmount + remove, and create cost as the count grows.
fn storage(b: &Bench) {
    let dir = &b.dir;
    // Lifecycle: create + mount + unmount + remove, ext4 1 GiB, vs by hand.
    b.fabricate(0);
    let child = b.start();
    let sock = b.sock();
    let mut c = Conn::open(&sock);
    let rounds = 20;
    let mut phases: [Vec<Duration>; 5] = Default::default();
    for i in 0..rounds {
        let name = format!("{{\"Name\":\"cyc{i}\",\"ID\":\"x\",\"Opts\":{{\"size\":\"1\"}}}}");
        let t = Instant::now();
        c.call("VolumeDriver.Create", &name);
        let t1 = Instant::now();
        c.call("VolumeDriver.Mount", &name);
        let t2 = Instant::now();
        c.call("VolumeDriver.Unmount", &name);
        let t3 = Instant::now();
        c.call("VolumeDriver.Remove", &name);
        let t4 = Instant::now();
        phases[0].push(t1 - t);
        phases[1].push(t2 - t1);
        phases[2].push(t3 - t2);
        phases[3].push(t4 - t3);
        phases[4].push(t4 - t);
    }
    let fl = dir.join("floor");
    std::fs::create_dir_all(&fl).expect("floor dir");
    let img = fl.join("f.img");
    let mnt = fl.join("mnt");
    std::fs::create_dir_all(&mnt).expect("mnt");
    let mut by_hand = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        run("truncate", &["-s", "1G", &img.to_string_lossy()]);
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                &img.to_string_lossy(),
            ],
        );
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .expect("losetup");
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        run("mount", &[&dev, &mnt.to_string_lossy()]);
        std::fs::create_dir_all(mnt.join("data")).expect("data");
        run("umount", &[&mnt.to_string_lossy()]);
        run("losetup", &["-d", &dev]);
        std::fs::remove_file(&img).expect("rm");
        by_hand.push(t.elapsed());
    }
    let names = ["create", "mount", "unmount", "remove", "whole cycle"];
    for (i, n) in names.iter().enumerate() {
        let m = pct(&mut phases[i], 0.5);
        if i == 4 {
            println!(
                "| lifecycle ext4 1 GiB: {n} (median of {rounds}) | {} | by hand with tools {} | |",
                ms(m),
                ms(pct(&mut by_hand, 0.5))
            );
        } else {
            println!("| lifecycle ext4 1 GiB: {n} | {} | | |", ms(m));
        }
    }
    stop(child);

    // Create cost as the volume count grows.
    for n in [10usize, 1000, 10000] {
        b.fabricate(n);
        let child = b.start();
        let mut c = Conn::open(&b.sock());
        let mut v = Vec::new();
        for i in 0..15 {
            let body = format!("{{\"Name\":\"grow{i}\",\"Opts\":{{\"size\":\"64M\"}}}}");
            let t = Instant::now();
            c.call("VolumeDriver.Create", &body);
            v.push(t.elapsed());
            c.call("VolumeDriver.Remove", &body);
        }
        println!(
            "| create (ext4 64 MiB) with {n} volumes present | median {} | | |",
            ms(pct(&mut v, 0.5))
        );
        stop(child);
    }
}
