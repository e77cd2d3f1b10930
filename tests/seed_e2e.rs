//! REX-Ray's scheduler examples verbatim against Berth and a real Docker
//! engine (tests/e2e/seed.sh): the Docker CLI commands and the Marathon
//! Docker-containerizer app, with services named as in the examples.
//! Needs root, dockerd, the docker CLI, unshare, ip and busybox; skips
//! loudly otherwise. The Mesos-containerizer example is in tests/dvdcli.rs.

mod common;

use std::process::Command;

#[test]
fn root_seed_docker_examples_verbatim() {
    let name = "root_seed_docker_examples_verbatim";
    if !common::can_use_storage(name) {
        return;
    }
    for tool in ["dockerd", "docker", "unshare", "curl", "ip"] {
        if !common::which(tool) {
            eprintln!("SKIPPED (needs {tool}): {name}");
            return;
        }
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED (needs /bin/busybox from busybox-static): {name}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-seed-")
        .tempdir()
        .expect("tempdir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/seed.sh");
    let out = Command::new(script)
        .arg(dir.path())
        .arg(env!("CARGO_BIN_EXE_berthd"))
        .output()
        .expect("run seed.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    if !out.status.success() {
        let log = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        panic!(
            "seed examples failed:\n{stdout}\n--- checks.log\n{}\n--- berthd.log\n{}\n--- dockerd log (tail)\n{}",
            log("checks.log"),
            log("berthd.log"),
            log("docker/log").lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    assert!(common::leftovers_under(dir.path()).is_empty());
}
