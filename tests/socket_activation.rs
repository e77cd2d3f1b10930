//! Socket activation as systemd does it, through `systemd-socket-activate`:
//! two named sockets reach two services in one berthd, which binds
//! nothing itself.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn two_named_sockets_reach_two_services() {
    if !common::which("systemd-socket-activate") {
        eprintln!("SKIPPED (needs systemd-socket-activate from package systemd): two_named_sockets_reach_two_services");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join("sd")).expect("mkdir");
    let cfg = p.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nplugins_dir = \"{d}/plugins\"\nstate_dir = \"{d}/state\"\nmount_dir = \"{d}/mnt\"\n\
             [services.alpha]\ndriver = \"loop\"\n[services.beta]\ndriver = \"loop\"\nscope = \"global\"\n",
            d = p.display()
        ),
    )
    .expect("config");
    let a = p.join("sd/alpha.sock");
    let b = p.join("sd/beta.sock");
    // Listed in the opposite order of the config: mapping must go by name.
    let mut child = Command::new("systemd-socket-activate")
        .arg(format!("--listen={}", b.display()))
        .arg(format!("--listen={}", a.display()))
        .arg("--fdname=beta:alpha")
        .arg(env!("CARGO_BIN_EXE_berthd"))
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(p.join("log")).expect("log"),
        ))
        .spawn()
        .expect("spawn systemd-socket-activate");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.exists() && b.exists()) {
        assert!(Instant::now() < deadline, "sockets did not appear");
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let beta = common::Api {
        client: berth::client::PluginClient::new(&b, Duration::from_secs(10)),
    };
    let v = beta.ok("VolumeDriver.Capabilities", json!({}));
    let first = started.elapsed();
    assert_eq!(
        v["Capabilities"]["Scope"], "global",
        "beta's socket reached beta"
    );
    let alpha = common::Api {
        client: berth::client::PluginClient::new(&a, Duration::from_secs(10)),
    };
    let v = alpha.ok("VolumeDriver.Capabilities", json!({}));
    assert_eq!(
        v["Capabilities"]["Scope"], "local",
        "alpha's socket reached alpha"
    );
    let st = alpha.ok("Berth.Status", json!({}));
    assert_eq!(st["Service"], "alpha");
    let socks: Vec<String> = st["Services"]
        .as_array()
        .expect("Services")
        .iter()
        .map(|s| s["Socket"].as_str().expect("Socket").to_string())
        .collect();
    assert_eq!(
        socks,
        vec![a.display().to_string(), b.display().to_string()]
    );
    assert!(!p.join("plugins").exists(), "berthd bound nothing itself");
    eprintln!("first answer after activation: {first:?}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let log = std::fs::read_to_string(p.join("log")).unwrap_or_default();
    assert!(log.contains("passed by systemd"), "{log}");
}
