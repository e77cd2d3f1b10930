//! The plugin API over a real socket of a real berthd: what dockerd and
//! dvdcli send, and bad input. Nothing here needs root: no request below
//! reaches the storage layer.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::Daemon;
use hyper::StatusCode;
use serde_json::json;

/// Sends raw bytes and returns the raw HTTP answer.
fn raw_http(sock: &std::path::Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    // The server may answer and close before it has read everything.
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let len = text[..head_end].lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if let Some(len) = len {
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[test]
fn activate_with_empty_body_no_content_type_any_host() {
    let d = Daemon::builder().start();
    let answer = raw_http(
        &d.socket("berth"),
        b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin.moby.localhost\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("{\"Implements\":[\"VolumeDriver\"]}"),
        "{answer}"
    );
    let answer = raw_http(
        &d.socket("berth"),
        b"POST /Plugin.Activate HTTP/1.1\r\nHost: anything.example\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn capabilities_scope_from_config() {
    let d = Daemon::builder().service_toml(
        "[services.berth]\ndriver = \"loop\"\n[services.shared]\ndriver = \"loop\"\nscope = \"global\"\n",
    ).start();
    let v = d.client("berth").ok("VolumeDriver.Capabilities", json!({}));
    assert_eq!(v, json!({"Capabilities": {"Scope": "local"}}));
    let mut d = d;
    d.wait_ready("shared");
    let v = d
        .client("shared")
        .ok("VolumeDriver.Capabilities", json!({}));
    assert_eq!(v["Capabilities"]["Scope"], "global");
}

#[test]
fn list_and_get_on_empty_service() {
    let d = Daemon::builder().start();
    let api = d.client("berth");
    assert!(api.list_names().is_empty());
    let e = api.err("VolumeDriver.Get", json!({"Name": "nope"}));
    assert!(e.contains("nope") && e.contains("not found"), "{e}");
    let e = api.err("VolumeDriver.Path", json!({"Name": "nope"}));
    assert!(e.contains("nope"), "{e}");
    // Remove and Unmount of unknown volumes are idempotent successes.
    api.ok("VolumeDriver.Remove", json!({"Name": "nope"}));
    api.ok("VolumeDriver.Unmount", json!({"Name": "nope", "ID": "x"}));
}

#[test]
fn malformed_unknown_oversized() {
    let d = Daemon::builder().start();
    let api = d.client("berth");
    let (s, v) = api.raw("VolumeDriver.Create", "{not json");
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["Err"].as_str().expect("Err").contains("malformed"), "{v}");
    let (s, _) = api.raw("VolumeDriver.Create", "{\"Name\": 5}");
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.raw(
        "VolumeDriver.Create",
        "{\"Name\": \"v\", \"Opts\": {\"size\": 1}}",
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "option values must be strings");
    let (s, _) = api.raw("VolumeDriver.Mount", "");
    assert_eq!(s, StatusCode::BAD_REQUEST, "Mount needs a body");
    let (s, v) = api.raw("VolumeDriver.Nope", "{}");
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(v["Err"]
        .as_str()
        .expect("Err")
        .contains("VolumeDriver.Nope"));
    // An announced oversized body is refused before it is read.
    let answer = raw_http(
        &d.socket("berth"),
        b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: x\r\nContent-Length: 2097152\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Chunked body without Content-Length over the limit: 413 too.
    let mut req =
        b"POST /VolumeDriver.Get HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..20 {
        req.extend_from_slice(format!("{:x}\r\n", 100_000).as_bytes());
        req.extend_from_slice(&vec![b'a'; 100_000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_http(&d.socket("berth"), &req);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // Still alive and well.
    api.ok("Plugin.Activate", json!(null));
}

#[test]
fn bad_names_and_options_are_refused_before_storage() {
    let d = Daemon::builder().start();
    let api = d.client("berth");
    let long = "a".repeat(200);
    for bad in [
        "",
        "..",
        "../etc",
        "a/b",
        "-lead",
        "a b",
        "a\u{0}b",
        "é",
        long.as_str(),
    ] {
        let e = api.err("VolumeDriver.Create", json!({"Name": bad}));
        assert!(e.contains("volume name"), "{bad:?}: {e}");
        let e = api.err("VolumeDriver.Mount", json!({"Name": bad, "ID": "x"}));
        assert!(e.contains("volume name"), "{bad:?}: {e}");
    }
    for (k, v, needle) in [
        ("size", "0", "size"),
        ("size", "-1", "size"),
        ("size", "ten", "size"),
        ("size", "999999T", "free"),
        ("fsType", "zfs", "zfs"),
        ("bogus", "1", "valid options"),
        ("uid", "-1", "uid"),
        ("mode", "0999", "mode"),
        ("overwritefs", "perhaps", "overwritefs"),
    ] {
        let e = api.err("VolumeDriver.Create", json!({"Name": "v", "Opts": {k: v}}));
        assert!(e.contains("volume v") && e.contains(needle), "{k}={v}: {e}");
    }
    assert!(api.list_names().is_empty(), "nothing was created");
    let images = d.image_dir("berth");
    let n = std::fs::read_dir(&images).map(|r| r.count()).unwrap_or(0);
    assert_eq!(n, 0, "no image file was made");
    let n = std::fs::read_dir(d.records_dir("berth"))
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(n, 0, "no record was written");
}

#[test]
fn status_endpoint_lists_every_service() {
    let mut d = Daemon::builder()
        .service_toml("[services.berth]\ndriver = \"loop\"\n[services.second]\ndriver = \"loop\"\n")
        .start();
    d.wait_ready("second");
    let v = d.client("second").ok("Berth.Status", json!({}));
    assert_eq!(v["Service"], "second");
    let names: Vec<&str> = v["Services"]
        .as_array()
        .expect("Services")
        .iter()
        .map(|s| s["Name"].as_str().expect("Name"))
        .collect();
    assert_eq!(names, vec!["berth", "second"]);
}

#[test]
fn sockets_are_0660_and_removed_on_exit() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::builder().start();
    let sock = d.socket("berth");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    d.stop();
    assert!(!sock.exists(), "berthd removes the socket it bound");
}

#[test]
fn bad_config_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[daemon]\nstate_dir = \"/x\"\nbogus_key = 1\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berthd"))
        .args(["--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("bogus_key"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berthd"))
        .args(["--check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an explicit missing config is an error"
    );
}

#[test]
fn cli_reports_errors_on_stderr_with_nonzero_exit() {
    let d = Daemon::builder().start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--socket")
        .arg(d.socket("berth"))
        .args(["volume", "create", "bad/name"])
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("volume name"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--socket")
        .arg(d.socket("berth"))
        .args(["--json", "status"])
        .output()
        .expect("run berth");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["Services"][0]["Name"], "berth");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--socket", "/nonexistent/x.sock", "status"])
        .output()
        .expect("run berth");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.sock"));
}
