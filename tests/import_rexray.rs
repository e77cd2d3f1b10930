//! `berth import-rexray` end to end: REX-Ray configurations of several
//! shapes become Berth configurations that `berthd --check-config` accepts;
//! a broken one is refused naming its line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rexray")
        .join(name)
}

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .expect("run berth")
}

fn check_config(file: &Path) -> Output {
    check_config_with(file, Path::new("/nonexistent/berthd-ceph"))
}

/// `berthd --check-config`, with `helper` as the berthd built with Ceph.
fn check_config_with(file: &Path, helper: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berthd"))
        .env("BERTH_CEPH_BERTHD", helper)
        .arg("--check-config")
        .arg("--config")
        .arg(file)
        .output()
        .expect("run berthd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Imports `name` to a file and checks it with berthd.
fn import_and_check(name: &str) -> (String, Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("config.toml");
    let imp = berth(&[
        "import-rexray",
        fixture(name).to_str().expect("utf-8 path"),
        "--output",
        out.to_str().expect("utf-8 path"),
    ]);
    assert!(imp.status.success(), "{name}: {}", text(&imp.stderr));
    assert!(imp.stdout.is_empty(), "--output writes nothing to stdout");
    let toml = std::fs::read_to_string(&out).expect("output written");
    (toml, check_config(&out))
}

#[test]
fn loop_shaped_configs_pass_check_config() {
    for (name, services) in [
        ("seed-volume-size.yml", &["rexray"][..]),
        ("seed-mesos.yml", &["rexray"][..]),
        ("multi-service.yml", &["scaleio", "virtualbox"][..]),
        ("legacy-docker.yml", &["rexray"][..]),
    ] {
        let (toml, check) = import_and_check(name);
        let said = text(&check.stdout);
        assert!(
            check.status.success(),
            "{name}: berthd --check-config refused:\n{}\n{toml}",
            text(&check.stderr)
        );
        for s in services {
            assert!(said.contains(s), "{name}: service {s} missing in:\n{said}");
        }
    }
}

#[test]
fn rbd_config_becomes_an_rbd_service() {
    let (toml, check) = import_and_check("rbd.yml");
    assert!(toml.contains("driver = \"rbd\""), "{toml}");
    assert!(toml.contains("pool = \"volumes\""), "{toml}");
    // REX-Ray's images stay volumes: the service adopts them.
    let doc: toml::Table = toml.parse().expect("TOML");
    let services = doc["services"].as_table().expect("services");
    let rbd: Vec<&toml::Value> = services
        .values()
        .filter(|s| s["driver"].as_str() == Some("rbd"))
        .collect();
    assert_eq!(rbd.len(), 1, "{toml}");
    assert_eq!(rbd[0]["ceph"]["adopt"].as_str(), Some("rexray"), "{toml}");
    assert!(
        toml.contains("# REX-Ray's images"),
        "the key is explained:\n{toml}"
    );
    if cfg!(feature = "ceph") {
        assert!(check.status.success(), "{}\n{toml}", text(&check.stderr));
    } else {
        // Without the ceph feature berthd has no rbd driver: it names the
        // package that has one.
        let err = text(&check.stderr);
        assert!(err.contains("install the package berth-ceph"), "{err}");
    }
}

/// A berthd without Ceph hands a Ceph configuration to the berthd built
/// with it: same process, same arguments (docs/systemd.md, "Packages").
#[test]
fn without_ceph_berthd_runs_the_ceph_build_with_its_arguments() {
    if cfg!(feature = "ceph") {
        return; // this berthd serves Ceph itself
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("config.toml");
    std::fs::write(&conf, "[services.vols]\ndriver = \"rbd\"\n").expect("write config");
    let helper = dir.path().join("berthd-ceph");
    std::fs::write(&helper, "#!/bin/sh\necho \"ceph build: $*\"\n").expect("write helper");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = check_config_with(&conf, &helper);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("ceph build: --check-config --config {}", conf.display())
    );
}

#[test]
fn stdout_by_default() {
    let imp = berth(&[
        "import-rexray",
        fixture("seed-mesos.yml").to_str().expect("utf-8"),
    ]);
    assert!(imp.status.success(), "{}", text(&imp.stderr));
    let out = text(&imp.stdout);
    assert!(out.contains("[services.rexray]"), "{out}");
    assert!(out.contains("mount.preempt = true"), "{out}");
}

#[test]
fn a_broken_file_is_refused_naming_the_line() {
    let imp = berth(&[
        "import-rexray",
        fixture("broken.yml").to_str().expect("utf-8"),
    ]);
    assert!(!imp.status.success());
    let err = text(&imp.stderr);
    assert!(err.contains("broken.yml: line 9"), "{err}");
    let imp = berth(&[
        "import-rexray",
        fixture("bad-value.yml").to_str().expect("utf-8"),
    ]);
    assert!(!imp.status.success());
    let err = text(&imp.stderr);
    assert!(
        err.contains(
            "bad-value.yml: line 8: libstorage.integration.volume.operations.create.default.size"
        ),
        "{err}"
    );
}

#[test]
fn default_path_is_rexrays() {
    if Path::new("/etc/rexray/config.yml").exists() {
        eprintln!("SKIPPED: /etc/rexray/config.yml exists on this host");
        return;
    }
    let imp = berth(&["import-rexray"]);
    assert!(!imp.status.success());
    let err = text(&imp.stderr);
    assert!(err.contains("/etc/rexray/config.yml"), "{err}");
}
