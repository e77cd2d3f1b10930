//! Hostile input against a live berthd: ≥ 100 000 malformed or hostile
//! requests (bad JSON, wrong types, huge numbers, 1 MB names, `..`, NUL,
//! unicode tricks, unknown endpoints, HTTP-level garbage, bodies over the
//! limit) over parallel keep-alive connections, and slow clients that
//! send nothing, half a header or half a body.
//!
//! Required: 0 crashes (same process at the end), 0 hangs (every answer
//! within 5 s), 0 changes on disk (the daemon's whole directory, the
//! records, images, mounts and loop devices are identical afterwards, and
//! a volume in use keeps its mount and data), and every answer a
//! well-formed error: the status and `{"Err": ...}` message that
//! [`berth::api::docker::precheck`] — the in-process entry point the fuzz
//! target drives — predicts for it.
//!
//! `BERTH_HOSTILE_REQUESTS` sets the count (default 100 000);
//! `BERTH_TEST_SEED` replays a run. Root is used when available (a real
//! volume in use during the flood) but not needed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth::api::docker::{precheck, Route};
use berth::api::response::Failure;
use common::{env_num, percentile, seed, Conn, Daemon};
use serde_json::{json, Value};

const KEEP: &str = "keep";
const HOLDER: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";
const ROUTES: &[&str] = &[
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
    "/VolumeDriver.Capabilities",
    "/Plugin.Activate",
    "/Berth.Status",
    "/Berth.List",
];

fn pick<'a, T>(rng: &mut fastrand::Rng, v: &'a [T]) -> &'a T {
    &v[rng.usize(0..v.len())]
}

fn random_unicode(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| match rng.u8(0..4) {
            0 => rng.char('\u{0}'..'\u{80}'),
            1 => rng.char('\u{80}'..'\u{800}'),
            2 => *pick(
                rng,
                &[
                    '\u{202e}', '\u{200b}', '\u{feff}', '\u{0301}', '\u{ff0e}', '\u{2215}',
                    '\u{2024}', '/', '\\', '.',
                ],
            ),
            _ => rng.char(..),
        })
        .collect()
}

fn hostile_name(rng: &mut fastrand::Rng) -> String {
    let fixed: &[&str] = &[
        "",
        ".",
        "..",
        "../etc",
        "../../../../etc/passwd",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\u{0}b",
        "\u{0}",
        "-rf",
        "_x",
        " a",
        "a ",
        "a\nb",
        "a\tb",
        "é",
        "\u{ff41}",
        "a\u{202e}gpj.exe",
        "a\u{200b}",
        "a\u{0301}",
        "\u{feff}a",
        "%2e%2e",
        "..%2f",
        "a:b",
        "a*b",
        "$(reboot)",
        "`id`",
        "a;rm -rf /",
        "💥",
        "keep/../keep",
        "keep\u{0}",
        "KEEP\u{200b}",
        "con",
        "a\r\nHost: evil",
    ];
    match rng.u8(0..10) {
        0..=4 => pick(rng, fixed).to_string(),
        5 => "x".repeat(129 + rng.usize(0..200)),
        6 => {
            // Up to 1 MB (rarely: they are slow to send).
            if rng.u8(0..50) == 0 {
                "n".repeat(1 << 20)
            } else {
                "n".repeat(rng.usize(129..20_000))
            }
        }
        7 => {
            let n = rng.usize(1..40);
            random_unicode(rng, n)
        }
        8 => format!("{}/{}", "a", random_unicode(rng, 3)),
        _ => format!(".{}", rng.u32(..)),
    }
}

fn hostile_value(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..8) {
        0 => json!(rng.i64(..)),
        1 => json!(null),
        2 => json!([1, "a"]),
        3 => json!({"a": {"b": []}}),
        4 => json!(rng.bool()),
        5 => json!(f64::MAX),
        6 => json!(-0.0),
        _ => json!(u64::MAX),
    }
}

fn hostile_opts(rng: &mut fastrand::Rng) -> Value {
    let sizes: &[&str] = &[
        "0",
        "-1",
        "1e400",
        "NaN",
        "inf",
        "-inf",
        "99999999999999999999999",
        "18446744073709551616",
        "0x10",
        "16 M",
        "16M\n",
        " ",
        "",
        "1/0",
        "16MiB!!",
        "999999T",
        "1e-30",
        "-0",
        "1M",
        "7M",
        "1.5.5G",
        "16\u{0}M",
        "１６M",
    ];
    let mut m = serde_json::Map::new();
    for _ in 0..rng.usize(1..4) {
        let (k, v): (String, Value) = match rng.u8(0..10) {
            0 | 1 => ("size".into(), json!(pick(rng, sizes))),
            2 => ("size".into(), json!("9".repeat(rng.usize(20..20_000)))),
            3 => (
                "fsType".into(),
                json!(pick(
                    rng,
                    &[
                        "zfs",
                        "ext4\u{0}",
                        "EXT4 ",
                        "../xfs",
                        "",
                        "ntfs",
                        "xfs;reboot"
                    ]
                )),
            ),
            4 => (
                "mode".into(),
                json!(pick(
                    rng,
                    &["99999", "-1", "0o7777x", "1e3", "", "0777777", "rwx"]
                )),
            ),
            5 => (
                pick(rng, &["uid", "gid", "iops"]).to_string(),
                json!(pick(
                    rng,
                    &["4294967296", "-1", "0x0", "1.5", "", "18446744073709551616"]
                )),
            ),
            6 => (random_unicode(rng, 8), json!("1")),
            7 => ("k\u{0}".repeat(rng.usize(1..50)), json!("v")),
            8 => (
                pick(rng, &["type", "availabilityZone", "volumeType"]).to_string(),
                json!(format!("a\u{0}{}", "z".repeat(rng.usize(0..300)))),
            ),
            _ => (
                pick(
                    rng,
                    &["volumeName", "snapshotID", "encrypted", "overwritefs"],
                )
                .to_string(),
                json!(pick(rng, &["maybe", "src", "../../x"])),
            ),
        };
        m.insert(k, v);
    }
    // A valid option next to the bad ones changes nothing.
    if rng.bool() {
        m.insert("fsType".into(), json!("ext4"));
    }
    Value::Object(m)
}

fn hostile_id(rng: &mut fastrand::Rng) -> Value {
    match rng.u8(0..6) {
        0 => json!("a".repeat(257 + rng.usize(0..1000))),
        1 => json!("a b"),
        2 => json!(format!("{HOLDER}\u{0}")),
        3 => json!(random_unicode(rng, 10)),
        4 => json!("\u{7f}"),
        _ => hostile_value(rng),
    }
}

/// A JSON-level hostile request: (path, body).
fn json_request(rng: &mut fastrand::Rng) -> (String, Vec<u8>) {
    let path = if rng.u8(0..10) == 0 {
        pick(
            rng,
            &[
                "/",
                "/VolumeDriver.",
                "/volumedriver.create",
                "/VolumeDriver.Create/",
                "/VolumeDriver%2ECreate",
                "//VolumeDriver.Create",
                "/VolumeDriver.Create/../VolumeDriver.Remove",
                "/Plugin.Deactivate",
                "/VolumeDriver.Snapshot",
                "/etc/passwd",
                "/Berth.Shutdown",
            ],
        )
        .to_string()
    } else {
        pick(rng, ROUTES).to_string()
    };
    let name_routes = [
        "/VolumeDriver.Remove",
        "/VolumeDriver.Path",
        "/VolumeDriver.Get",
    ];
    let body: Vec<u8> = match rng.u8(0..10) {
        // Well-formed JSON, hostile values.
        0..=3 => {
            let v = if path == "/VolumeDriver.Create" {
                match rng.u8(0..3) {
                    0 => json!({"Name": hostile_name(rng), "Opts": {"size": "16M"}}),
                    1 => json!({"Name": KEEP, "Opts": hostile_opts(rng)}),
                    _ => json!({"Name": format!("v{}", rng.u32(..)), "Opts": hostile_opts(rng)}),
                }
            } else if path == "/VolumeDriver.Mount" || path == "/VolumeDriver.Unmount" {
                match rng.u8(0..3) {
                    0 => json!({"Name": hostile_name(rng), "ID": "x"}),
                    1 => json!({"Name": KEEP, "ID": hostile_id(rng)}),
                    _ => json!({"Name": hostile_name(rng)}),
                }
            } else if name_routes.contains(&path.as_str()) {
                json!({"Name": hostile_name(rng)})
            } else {
                json!({"Name": hostile_name(rng), "Opts": hostile_opts(rng)})
            };
            v.to_string().into_bytes()
        }
        // Wrong types.
        4 | 5 => {
            let v = match rng.u8(0..5) {
                0 => json!({"Name": hostile_value(rng)}),
                1 => json!({"Name": KEEP, "Opts": hostile_value(rng)}),
                2 => json!({"Name": KEEP, "ID": hostile_value(rng)}),
                3 => json!({"Name": KEEP, "Opts": {"size": hostile_value(rng)}}),
                _ => hostile_value(rng),
            };
            v.to_string().into_bytes()
        }
        // Broken JSON.
        6 | 7 => {
            let good = json!({"Name": KEEP, "Opts": {"size": "16M"}, "ID": HOLDER}).to_string();
            match rng.u8(0..10) {
                0 => good.as_bytes()[..rng.usize(0..good.len())].to_vec(),
                1 => (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect(),
                2 => {
                    let d = rng.usize(100..5000);
                    format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()
                }
                3 => b"{\"Name\":\"keep\",\"Name\":\"x/..\"}".to_vec(),
                4 => format!("{good}garbage").into_bytes(),
                5 => [b"\xef\xbb\xbf".as_slice(), good.as_bytes()].concat(),
                6 => good.encode_utf16().flat_map(|u| u.to_le_bytes()).collect(),
                7 => Vec::new(),
                8 => b"{\"Name\":\"\\ud800\"}".to_vec(),
                _ => format!("{{\"Name\": \"{}\"}}", "\\u0000".repeat(rng.usize(1..100)))
                    .into_bytes(),
            }
        }
        // Huge numbers.
        8 => match rng.u8(0..3) {
            0 => b"{\"Name\": 1e999999}".to_vec(),
            1 => format!(
                "{{\"Name\":\"keep\",\"Opts\":{{\"size\": {}}}}}",
                "9".repeat(400)
            )
            .into_bytes(),
            _ => b"{\"Name\": -123456789012345678901234567890}".to_vec(),
        },
        // Near or over the body limit.
        _ => {
            if rng.u8(0..30) == 0 {
                let mut b = b"{\"Name\":\"".to_vec();
                b.extend(std::iter::repeat_n(b'n', (1 << 20) + rng.usize(0..1000)));
                b.extend_from_slice(b"\"}");
                b
            } else {
                json!({"Name": hostile_name(rng), "Pad": "p".repeat(rng.usize(0..20_000))})
                    .to_string()
                    .into_bytes()
            }
        }
    };
    (path, body)
}

/// HTTP-level garbage: raw bytes, and whether a 200 is acceptable.
fn raw_request(rng: &mut fastrand::Rng) -> (Vec<u8>, bool) {
    let cases: Vec<(Vec<u8>, bool)> =
        vec![
        (b"GARBAGE\r\n\r\n".to_vec(), false),
        (b"POST  HTTP/1.1\r\n\r\n".to_vec(), false),
        (b"POST /VolumeDriver.List HTTP/9.9\r\n\r\n".to_vec(), false),
        (b"POST /VolumeDriver.List HTTP/1.1\r\nContent-Length: -5\r\n\r\n".to_vec(), false),
        (
            b"POST /VolumeDriver.List HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"
                .to_vec(),
            false,
        ),
        (
            b"POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
                .to_vec(),
            false,
        ),
        (
            b"POST /VolumeDriver.Get HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n"
                .to_vec(),
            false,
        ),
        (b"POST /VolumeDriver.Get HTTP/1.1\r\nX: a\x00b\r\n\r\n".to_vec(), false),
        (
            [
                b"POST /VolumeDriver.Get HTTP/1.1\r\nX: ".as_slice(),
                &vec![b'h'; 200_000],
                b"\r\n\r\n",
            ]
            .concat(),
            false,
        ),
        (b"POST /VolumeDriver.\xff HTTP/1.1\r\n\r\n".to_vec(), false),
        (
            format!(
                "POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                (1 << 20) + 1
            )
            .into_bytes(),
            false,
        ),
        // Tolerated: the method and the URI form are not checked.
        (b"GET /VolumeDriver.List HTTP/1.1\r\n\r\n".to_vec(), true),
        (
            b"POST http://evil.example/VolumeDriver.List HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
                .to_vec(),
            true,
        ),
        (
            b"POST /VolumeDriver.List?Name=../x HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            true,
        ),
    ];
    pick(rng, &cases).clone()
}

/// Files under `root` (except the log and the socket) with size and mtime.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u64, i64, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.ends_with("berthd.log") {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() && !common::is_mounted(&p) {
                stack.push(p.clone());
            }
            // A mounted volume's image is written by the kernel (journal):
            // its size and mode must stay, its mtime may move.
            let mtime = if p.extension().is_some_and(|e| e == "img") {
                0
            } else {
                m.mtime()
            };
            out.insert(p, (m.len(), mtime, m.mode()));
        }
    }
    out
}

#[derive(Default)]
struct Tally {
    sent: u64,
    refused: u64,
    let_through: u64,
    json_level: u64,
    raw: u64,
    closed_by_server: u64,
    statuses: BTreeMap<u16, u64>,
    bad: Vec<String>,
    latencies: Vec<Duration>,
}

fn check_json_answer(t: &mut Tally, path: &str, body: &[u8], a: &common::RawAnswer) {
    *t.statuses.entry(a.status).or_default() += 1;
    let shown = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    let v: Value = match serde_json::from_slice(&a.body) {
        Ok(v) => v,
        Err(e) => {
            t.bad.push(format!(
                "{path} {}: answer is not JSON ({e}): {}",
                shown(body),
                shown(&a.body)
            ));
            return;
        }
    };
    if a.content_type.as_deref() != Some(berth::api::response::CONTENT_TYPE) {
        t.bad
            .push(format!("{path}: content type {:?}", a.content_type));
    }
    let err = v.get("Err").and_then(Value::as_str).unwrap_or("");
    let route_path = path.split('?').next().unwrap_or(path);
    match precheck(route_path, body) {
        Err(Failure {
            status,
            message: msg,
            ..
        }) => {
            t.refused += 1;
            if a.status != status.as_u16() || err.is_empty() {
                t.bad.push(format!(
                    "{path} {}: answered {} {err:?}, expected {status} {msg:?}",
                    shown(body),
                    a.status
                ));
            } else if status != hyper::StatusCode::PAYLOAD_TOO_LARGE && err != msg {
                t.bad.push(format!(
                    "{path}: message {err:?} differs from precheck's {msg:?}"
                ));
            }
        }
        Ok(route) => {
            t.let_through += 1;
            // Allowed through: reads, idempotent Remove/Unmount, Create of
            // the existing volume. Success or a clean error, nothing else.
            if route == Route::Mount || (a.status != 200 && err.is_empty()) {
                t.bad.push(format!(
                    "{path} {}: {} {}",
                    shown(body),
                    a.status,
                    shown(&a.body)
                ));
            }
        }
    }
}

#[test]
fn hostile_flood_changes_nothing_and_every_answer_is_an_error() {
    let root = common::can_use_storage("hostile_flood (the in-use volume part)");
    let total = env_num("BERTH_HOSTILE_REQUESTS", 100_000);
    let seed = seed("hostile_flood_changes_nothing_and_every_answer_is_an_error");
    let d = Daemon::builder().env("RUST_LOG", "warn").start();
    let sock = d.socket("berth");
    let mut data_path = None;
    if root {
        let api = d.client("berth");
        api.create(KEEP, &[("size", "16M")]);
        let p = api.mount(KEEP, Some(HOLDER));
        std::fs::write(p.join("precious"), b"precious data").expect("write");
        data_path = Some(p);
    }
    let pid = d.pid();
    let before_tree = tree(d.dir.path());
    let before = d.disk_state("berth");
    let threads = 8u64;
    let started = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                let sock = sock.clone();
                s.spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(i));
                    let mut t = Tally::default();
                    let mut conn: Option<Conn> = None;
                    let n = total / threads + u64::from(i < total % threads);
                    while t.sent < n {
                        if conn.is_none() {
                            conn =
                                Some(Conn::open(&sock, Duration::from_secs(5)).expect("connect"));
                        }
                        let c = conn.as_mut().expect("conn");
                        t.sent += 1;
                        let begin = Instant::now();
                        if rng.u8(0..100) < 3 {
                            t.raw += 1;
                            let (bytes, ok200) = raw_request(&mut rng);
                            let _ = c.send(&bytes);
                            match c.read_answer() {
                                Ok(a) => {
                                    *t.statuses.entry(a.status).or_default() += 1;
                                    if a.status == 200 && !ok200 {
                                        t.bad.push(format!(
                                            "raw {:?}: 200",
                                            String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                                        ));
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut =>
                                {
                                    t.bad.push(format!(
                                        "HANG: raw {:?}: no answer in 5 s",
                                        String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                                    ));
                                }
                                Err(_) => t.closed_by_server += 1,
                            }
                            // The server may close after garbage: start afresh.
                            conn = None;
                        } else {
                            t.json_level += 1;
                            let (path, body) = json_request(&mut rng);
                            // A request that would really create or mount is
                            // not hostile; it is skipped.
                            if let Ok(r) = precheck(&path, &body) {
                                let keep =
                                    serde_json::from_slice::<berth::protocol::NameRequest>(&body)
                                        .is_ok_and(|r| r.name == KEEP);
                                if r == Route::Mount || (r == Route::Create && !keep) {
                                    t.sent -= 1;
                                    t.json_level -= 1;
                                    continue;
                                }
                            }
                            match c.post(&path, &body) {
                                Ok(a) => {
                                    check_json_answer(&mut t, &path, &body, &a);
                                    if a.close {
                                        conn = None;
                                    }
                                }
                                Err(e) => {
                                    t.bad.push(format!("{path}: no answer ({e})"));
                                    conn = None;
                                }
                            }
                        }
                        t.latencies.push(begin.elapsed());
                    }
                    t
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("flood thread"))
            .collect()
    });
    let took = started.elapsed();
    let mut all = Tally::default();
    for t in tallies {
        all.sent += t.sent;
        all.json_level += t.json_level;
        all.raw += t.raw;
        all.refused += t.refused;
        all.let_through += t.let_through;
        all.closed_by_server += t.closed_by_server;
        for (k, v) in t.statuses {
            *all.statuses.entry(k).or_default() += v;
        }
        all.bad.extend(t.bad);
        all.latencies.extend(t.latencies);
    }
    // 0 crashes: the same process answers.
    assert_eq!(d.pid(), pid);
    let mut d = d;
    if let Some(c) = d.child.as_mut() {
        assert!(
            matches!(c.try_wait(), Ok(None)),
            "berthd died; log tail:\n{}",
            d.log_tail(40)
        );
    }
    d.client("berth").ok("Plugin.Activate", json!({}));
    // 0 changes on disk.
    let after_tree = tree(d.dir.path());
    let after = d.disk_state("berth");
    assert_eq!(
        before, after,
        "records, images, mounts or loop devices changed"
    );
    for (p, m) in &before_tree {
        if after_tree.get(p) != Some(m) && !p.ends_with("berth.sock") {
            all.bad.push(format!("{} changed", p.display()));
        }
    }
    for p in after_tree.keys() {
        if !before_tree.contains_key(p) {
            all.bad.push(format!("{} appeared", p.display()));
        }
    }
    if let Some(p) = &data_path {
        assert_eq!(
            std::fs::read(p.join("precious")).expect("read"),
            b"precious data"
        );
        let v = d.client("berth").get(KEEP);
        assert_eq!(v["Status"]["mountCount"], 1, "{v}");
        d.client("berth").unmount(KEEP, Some(HOLDER));
        d.client("berth").remove(KEEP);
        assert!(d.leftovers().is_empty(), "{:?}", d.leftovers());
    }
    let p99 = percentile(&mut all.latencies, 0.99);
    let max = all.latencies.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURES hostile: seed={seed} requests={} json_level={} (refused={} harmless_reads_or_noops={}) http_level={} closed_by_server={} \
         statuses={:?} bad={} wall_s={:.1} rate={:.0}/s p99_ms={:.2} max_ms={:.1}",
        all.sent,
        all.json_level,
        all.refused,
        all.let_through,
        all.raw,
        all.closed_by_server,
        all.statuses,
        all.bad.len(),
        took.as_secs_f64(),
        all.sent as f64 / took.as_secs_f64(),
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
    all.bad.truncate(50);
    assert!(all.bad.is_empty(), "seed {seed}:\n{}", all.bad.join("\n"));
    assert!(all.sent >= total);
}

/// The same validation in process, fast: the properties the fuzz target
/// checks, over random and hostile inputs.
#[test]
fn precheck_properties_hold_for_random_input() {
    let seed = seed("precheck_properties_hold_for_random_input");
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = env_num("BERTH_PRECHECK_CASES", 50_000);
    let mut accepted = 0u64;
    for i in 0..n {
        let (path, body) = if i % 2 == 0 {
            json_request(&mut rng)
        } else {
            let len = rng.usize(0..64);
            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                b = format!("{{\"Name\":\"{}\"}}", String::from_utf8_lossy(&b)).into_bytes();
            }
            (pick(&mut rng, ROUTES).to_string(), b)
        };
        match precheck(&path, &body) {
            Err(Failure {
                status,
                message: msg,
                ..
            }) => {
                assert!(!msg.is_empty());
                assert!(matches!(status.as_u16(), 400 | 404 | 413 | 500), "{status}");
            }
            Ok(route) => {
                accepted += 1;
                if matches!(
                    route,
                    Route::Create
                        | Route::Remove
                        | Route::Path
                        | Route::Get
                        | Route::Mount
                        | Route::Unmount
                ) {
                    let r: berth::protocol::NameRequest =
                        serde_json::from_slice(&body).expect("accepted body decodes");
                    let name = r.name.as_str();
                    assert!(
                        !name.is_empty()
                            && name.len() <= 128
                            && name
                                .bytes()
                                .next()
                                .is_some_and(|c| c.is_ascii_alphanumeric())
                            && name
                                .bytes()
                                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c)),
                        "accepted {name:?}"
                    );
                    let j = Path::new("/m").join(name);
                    assert_eq!(j.parent(), Some(Path::new("/m")), "{name:?}");
                }
            }
        }
    }
    eprintln!("FIGURES precheck: seed={seed} cases={n} accepted={accepted}");
}

/// Slow clients: idle connections, half a header, half a body. They are
/// cut off within the documented bounds and never delay other clients.
#[test]
fn slow_clients_are_cut_off_and_do_not_delay_others() {
    let d = Daemon::builder().env("RUST_LOG", "warn").start();
    let sock = d.socket("berth");
    let open = |bytes: &[u8]| {
        let mut c = Conn::open(&sock, Duration::from_secs(30)).expect("connect");
        c.send(bytes).expect("send");
        c
    };
    let mut half_header: Vec<Conn> = (0..40)
        .map(|_| open(b"POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\n"))
        .collect();
    let mut half_body: Vec<Conn> = (0..20)
        .map(|_| open(b"POST /VolumeDriver.Get HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"Na"))
        .collect();
    let mut silent: Vec<Conn> = (0..20).map(|_| open(b"")).collect();
    let started = Instant::now();
    // Meanwhile other clients are served at once.
    let mut worst = Duration::ZERO;
    let mut c = Conn::open(&sock, Duration::from_secs(5)).expect("connect");
    while started.elapsed() < Duration::from_secs(3) {
        let t = Instant::now();
        let a = c.post("/VolumeDriver.List", b"{}").expect("answer");
        assert_eq!(a.status, 200);
        worst = worst.max(t.elapsed());
    }
    assert!(worst < Duration::from_millis(500), "served in {worst:?}");
    // Half a body: 408 after the 10 s body timeout.
    for h in &mut half_body {
        let a = h.read_answer().expect("an answer to a half body");
        assert_eq!(a.status, 408);
    }
    let body_cut = started.elapsed();
    // Half a header: the connection is closed after the 10 s header timeout.
    let closed = |c: &mut Conn| c.wait_closed();
    for h in &mut half_header {
        assert!(closed(h));
    }
    let header_cut = started.elapsed();
    let mut silent_cut = 0;
    for h in &mut silent {
        if closed(h) {
            silent_cut += 1;
        }
    }
    let silent_t = started.elapsed();
    eprintln!(
        "FIGURES slow clients: half body answered 408 after {:.1} s; half header closed after {:.1} s; \
         {silent_cut}/20 silent connections closed after {:.1} s; others served in <= {:.1} ms meanwhile",
        body_cut.as_secs_f64(),
        header_cut.as_secs_f64(),
        silent_t.as_secs_f64(),
        worst.as_secs_f64() * 1e3
    );
    assert!(body_cut < Duration::from_secs(15));
    assert!(header_cut < Duration::from_secs(15));
    assert_eq!(silent_cut, 20, "silent connections are closed");
    assert!(silent_t < Duration::from_secs(15));
}
