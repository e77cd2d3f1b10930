//! Probes of a daemon whose backend hangs: timed requests, read
//! latency, answers within a deadline, stuck work in `/Berth.Status`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

/// One request on a fresh connection: (HTTP status, JSON answer, time).
pub fn post_timed(
    sock: &Path,
    method: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value, Duration) {
    let t = Instant::now();
    let mut c = super::Conn::open(sock, Duration::from_secs(120)).expect("connect");
    let a = c
        .post(&format!("/{method}"), body.to_string().as_bytes())
        .expect("answer");
    let v = serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null);
    (a.status, v, t.elapsed())
}

/// p99 of `n` sequential Get and List calls on one connection.
pub fn read_p99(sock: &Path, volume: &str, n: usize) -> Duration {
    let mut c = super::Conn::open(sock, Duration::from_secs(30)).expect("connect");
    let mut times = Vec::with_capacity(2 * n);
    for _ in 0..n {
        let t = Instant::now();
        let a = c
            .post(
                "/VolumeDriver.Get",
                json!({"Name": volume}).to_string().as_bytes(),
            )
            .expect("get");
        times.push(t.elapsed());
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        let t = Instant::now();
        let a = c.post("/VolumeDriver.List", b"{}").expect("list");
        times.push(t.elapsed());
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    }
    super::percentile(&mut times, 0.99)
}

/// An error answer within `deadline` (plus scheduling slack); its text.
pub fn fails_in_time(
    sock: &Path,
    method: &str,
    body: serde_json::Value,
    deadline: Duration,
) -> String {
    let (status, v, took) = post_timed(sock, method, body);
    assert_ne!(
        status, 200,
        "{method} should fail while the backend hangs: {v}"
    );
    assert!(
        took < deadline + Duration::from_secs(3),
        "{method} answered after {took:?}"
    );
    let msg = v["Err"].as_str().unwrap_or("").to_string();
    assert!(!msg.is_empty(), "{method}: {v}");
    println!("{method} answered in {took:?}: {msg}");
    msg
}

/// `/Berth.Status` "Stuck" lines of every service.
pub fn stuck_lines(sock: &Path) -> Vec<String> {
    let (_, v, _) = post_timed(sock, "Berth.Status", json!({}));
    v["Services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["Stuck"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect()
}
