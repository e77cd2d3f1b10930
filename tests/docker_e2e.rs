//! End-to-end against a real Docker engine (tests/e2e/docker.sh). Needs
//! root, dockerd, the docker CLI, unshare and busybox; skips loudly
//! otherwise.

mod common;

use std::process::Command;

#[test]
fn root_docker_engine_end_to_end() {
    if !common::can_use_storage("root_docker_engine_end_to_end") {
        return;
    }
    for tool in ["dockerd", "docker", "unshare", "curl"] {
        if !common::which(tool) {
            eprintln!("SKIPPED (needs {tool}): root_docker_engine_end_to_end");
            return;
        }
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!(
            "SKIPPED (needs /bin/busybox from busybox-static): root_docker_engine_end_to_end"
        );
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-e2e-")
        .tempdir()
        .expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/docker.sh");
    let out = Command::new(script)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_berthd"))
        .output()
        .expect("run docker.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        let log = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        panic!(
            "docker end-to-end failed:\n{stdout}\n--- checks.log\n{}\n--- berthd.log\n{}\n--- dockerd log (tail)\n{}",
            log("checks.log"),
            log("berthd.log"),
            log("docker/log").lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(common::leftovers_under(dir.path()).is_empty());
}
