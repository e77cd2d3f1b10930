//! Berth's benchmark suite (run with `cargo bench --bench plugin`, as root
//! for the storage parts). Prints a Markdown table; asserts nothing.
//!
//! Every figure is measured next to a floor taken in the same run:
//! - HTTP floor: a minimal std-only HTTP/1.1 server on a UNIX socket that
//!   answers every request with a fixed small JSON body;
//! - storage floor: the same create/mount/unmount/remove steps done with
//!   the tools by hand (truncate, mkfs.ext4, losetup, mount, umount).
//!
//! Read-path figures use N fabricated volume records (phase ready, no
//! image), so 10 000 volumes cost seconds, not the hour 10 000 mkfs take.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BERTHD: &str = env!("CARGO_BIN_EXE_berthd");

/// A keep-alive HTTP/1.1 client over a UNIX socket (benchmark tooling).
struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Conn {
    fn open(p: &Path) -> Conn {
        let s = UnixStream::connect(p).expect("connect");
        Conn {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
        }
    }

    fn call(&mut self, method: &str, body: &str) -> Vec<u8> {
        let req = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).expect("write");
        let mut len = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("read header");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let l = line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf).expect("body");
        buf
    }
}

fn floor_server(p: &Path) {
    let l = UnixListener::bind(p).expect("bind floor");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                let body = b"{\"Volume\":{\"Name\":\"v\",\"Mountpoint\":\"\"},\"Err\":\"\"}";
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut b = vec![0u8; len];
                    if r.read_exact(&mut b).is_err() {
                        return;
                    }
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if w.write_all(head.as_bytes())
                        .and_then(|_| w.write_all(body))
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn latency(sock: &Path, method: &str, body: &str, n: usize) -> (Duration, Duration, f64) {
    let mut c = Conn::open(sock);
    for _ in 0..50 {
        c.call(method, body);
    }
    let mut v = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.call(method, body);
        v.push(t.elapsed());
    }
    let rps = n as f64 / start.elapsed().as_secs_f64();
    (pct(&mut v, 0.5), pct(&mut v, 0.99), rps)
}

fn throughput(sock: &Path, method: &str, body: &str, conns: usize, dur: Duration) -> f64 {
    let total: usize = std::thread::scope(|s| {
        let hs: Vec<_> = (0..conns)
            .map(|_| {
                s.spawn(move || {
                    let mut c = Conn::open(sock);
                    let end = Instant::now() + dur;
                    let mut n = 0;
                    while Instant::now() < end {
                        c.call(method, body);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    total as f64 / dur.as_secs_f64()
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
        let child = Command::new(BERTHD)
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
    // `cargo bench` passes --bench; accept and ignore arguments.
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

    // Floor.
    let floor = dir.path().join("floor.sock");
    floor_server(&floor);
    let get_body = "{\"Name\":\"fab00001\"}\n";
    let (p50, p99, rps) = latency(&floor, "VolumeDriver.Get", get_body, 5000);
    let tput = throughput(
        &floor,
        "VolumeDriver.Get",
        get_body,
        16,
        Duration::from_secs(2),
    );
    println!("| figure | Berth | floor (same run) |\n|---|---|---|");
    println!(
        "| HTTP floor Get, c=1 | — | p50 {} p99 {} ({rps:.0} req/s); c=16 {tput:.0} req/s |",
        us(p50),
        us(p99)
    );

    // Read path at N volumes.
    for n in [10usize, 1000, 10000] {
        b.fabricate(n);
        let t0 = Instant::now();
        let child = b.start();
        let sock = b.sock();
        // Serving starts before the volumes are loaded; the first Get is
        // answered once they are.
        Conn::open(&sock).call("VolumeDriver.Get", get_body);
        let startup = t0.elapsed();
        let (g50, g99, grps) = latency(&sock, "VolumeDriver.Get", get_body, 5000);
        let (p50, p99, _) = latency(&sock, "VolumeDriver.Path", get_body, 3000);
        let (l50, l99, _) = latency(
            &sock,
            "VolumeDriver.List",
            "{}\n",
            if n >= 10000 { 300 } else { 2000 },
        );
        let gt = throughput(
            &sock,
            "VolumeDriver.Get",
            get_body,
            16,
            Duration::from_secs(2),
        );
        let lt = throughput(
            &sock,
            "VolumeDriver.List",
            "{}\n",
            16,
            Duration::from_secs(2),
        );
        let rss = rss_kb(child.id());
        println!(
            "| N={n}: Get c=1 | p50 {} p99 {} ({grps:.0} req/s) | |",
            us(g50),
            us(g99)
        );
        println!("| N={n}: Get c=16 | {gt:.0} req/s | |");
        println!("| N={n}: Path c=1 | p50 {} p99 {} | |", us(p50), us(p99));
        println!("| N={n}: List c=1 | p50 {} p99 {} | |", us(l50), us(l99));
        println!("| N={n}: List c=16 | {lt:.0} req/s | |");
        println!(
            "| N={n}: exec → first Get answered (volumes loaded) | {} | |",
            ms(startup)
        );
        println!(
            "| N={n}: RSS after load | {:.1} MB | |",
            rss as f64 / 1024.0
        );
        stop(child);
    }

    // Cold start under socket activation, 0 and 10 000 volumes.
    if Path::new("/usr/bin/systemd-socket-activate").exists() {
        for n in [0usize, 10000] {
            b.fabricate(n);
            let cfg = b.config();
            let mut v = Vec::new();
            let mut vg = Vec::new();
            let mut rss = 0;
            for _ in 0..7 {
                let sock = dir.path().join("act.sock");
                let _ = std::fs::remove_file(&sock);
                let mut act = Command::new("systemd-socket-activate")
                    .arg(format!("--listen={}", sock.display()))
                    .arg("--fdname=berth")
                    .arg(BERTHD)
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
                "| socket activation, {n} volumes: connect → first answer | median {} (min {}) | floor ≈1.7 ms / 5.4 ms (reference) |",
                ms(pct(&mut v.clone(), 0.5)),
                ms(pct(&mut v, 0.0))
            );
            println!(
                "| socket activation, {n} volumes: connect → first Get answered | median {} | |",
                ms(pct(&mut vg, 0.5))
            );
            println!(
                "| RSS idle after activation, {n} volumes | {:.1} MB | |",
                rss as f64 / 1024.0
            );
        }
    }

    let size = std::fs::metadata(BERTHD).map(|m| m.len()).unwrap_or(0);
    println!(
        "| berthd binary (release, stripped) | {:.2} MB | |",
        size as f64 / 1048576.0
    );

    if !root {
        println!("\nSKIPPED: storage benchmarks need root.");
        return;
    }

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
    let fl = dir.path().join("floor");
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
                "| lifecycle ext4 1 GiB: {n} (median of {rounds}) | {} | by hand with tools {} |",
                ms(m),
                ms(pct(&mut by_hand, 0.5))
            );
        } else {
            println!("| lifecycle ext4 1 GiB: {n} | {} | |", ms(m));
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
            "| create (ext4 64 MiB) with {n} volumes present | median {} | |",
            ms(pct(&mut v, 0.5))
        );
        stop(child);
    }
}
