//! Tooling shared by the plugin benchmark: a keep-alive client, the
//! HTTP floor server, and percentiles.

pub mod floor;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 client over a UNIX socket; both Berth and the
/// floor are measured with it.
pub struct Conn {
    r: BufReader<UnixStream>,
    w: UnixStream,
    line: String,
}

impl Conn {
    pub fn open(p: &Path) -> Conn {
        let s = UnixStream::connect(p).expect("connect");
        Conn {
            r: BufReader::new(s.try_clone().expect("clone")),
            w: s,
            line: String::new(),
        }
    }

    pub fn call(&mut self, method: &str, body: &str) -> Vec<u8> {
        let req = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin.moby.localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.w.write_all(req.as_bytes()).expect("write");
        let mut len = 0usize;
        loop {
            self.line.clear();
            self.r.read_line(&mut self.line).expect("read header");
            if self.line == "\r\n" || self.line.is_empty() {
                break;
            }
            let l = self.line.to_ascii_lowercase();
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().expect("length");
            }
        }
        let mut buf = vec![0u8; len];
        self.r.read_exact(&mut buf).expect("body");
        buf
    }
}

pub fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

pub fn median_f(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// p50 and p99 of `n` sequential calls on one connection.
pub fn latency(sock: &Path, method: &str, body: &str, n: usize) -> (Duration, Duration) {
    let mut c = Conn::open(sock);
    for _ in 0..(n / 10).clamp(10, 50) {
        c.call(method, body);
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.call(method, body);
        v.push(t.elapsed());
    }
    (pct(&mut v, 0.5), pct(&mut v, 0.99))
}

/// Requests per second of `conns` clients calling back to back.
pub fn throughput(sock: &Path, method: &str, body: &str, conns: usize, dur: Duration) -> f64 {
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

/// One figure for Berth and its floor: `rounds` alternating runs of
/// `measure` on each socket (floor first), the median of each side.
pub struct Pair {
    pub berth: (Duration, Duration),
    pub floor: (Duration, Duration),
}

pub fn latency_pair(
    berth: &Path,
    floor: &Path,
    method: &str,
    body: &str,
    n: usize,
    rounds: usize,
) -> Pair {
    let (mut b50, mut b99, mut f50, mut f99) = (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (a, b) = latency(floor, method, body, n);
        f50.push(a);
        f99.push(b);
        let (a, b) = latency(berth, method, body, n);
        b50.push(a);
        b99.push(b);
    }
    Pair {
        berth: (pct(&mut b50, 0.5), pct(&mut b99, 0.5)),
        floor: (pct(&mut f50, 0.5), pct(&mut f99, 0.5)),
    }
}

/// Median req/s of Berth and of the floor over alternating runs.
pub fn throughput_pair(
    berth: &Path,
    floor: &Path,
    method: &str,
    body: &str,
    rounds: usize,
) -> (f64, f64) {
    let (mut b, mut f) = (vec![], vec![]);
    for _ in 0..rounds {
        f.push(throughput(floor, method, body, 16, Duration::from_secs(2)));
        b.push(throughput(berth, method, body, 16, Duration::from_secs(2)));
    }
    (median_f(&mut b), median_f(&mut f))
}
