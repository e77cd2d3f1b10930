//! The Debian package and the systemd units under real systemd: runs
//! `tests/systemd/run.sh`, which builds the `.deb`, boots a minimal Debian
//! with `systemd-nspawn -b` and checks install, socket activation, status,
//! journald fields, adding a service, crash recovery, reload, upgrade,
//! remove and purge, and an upgrade from the release that wrote
//! tests/fixtures/v1 with a container running (see docs/systemd.md). The
//! script prints one line per check; this test fails unless it ends with
//! "N passed, 0 failed".
//!
//! It also hands run.sh the commands of README.md and docs/*.md marked
//! `runs: systemd` (tests/common/docblocks.rs), which it runs in the
//! machine, one check each.
//!
//! Needs root and the tools `.ci/run` installs; without them it prints a
//! SKIPPED line and passes. `BERTH_SKIP_SYSTEMD_TEST=1` skips it too.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wait_timeout::ChildExt;

#[path = "common/docblocks.rs"]
mod docblocks;

/// A cold run (crates, rootfs and two release builds from scratch: this
/// tree's and, once, the fixtures' release) takes a while on two cores;
/// this only guards against a hang.
const LIMIT: Duration = Duration::from_secs(45 * 60);

const TOOLS: &[(&str, &str)] = &[
    ("systemd-nspawn", "systemd-container"),
    ("mmdebstrap", "mmdebstrap"),
    ("dpkg-buildpackage", "dpkg-dev"),
    ("dh", "debhelper"),
    ("help2man", "help2man"),
    ("lintian", "lintian"),
    ("nsenter", "util-linux"),
    ("flock", "util-linux"),
];

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(tool))))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn skip(why: &str) {
    let line = format!(
        "\n==============================================================\n\
         SKIPPED ({why}): root_package_and_units_under_systemd (tests/systemd/run.sh)\n\
         ==============================================================\n"
    );
    // Straight to the terminal: a skip must be seen even when the
    // harness captures the output of passing tests.
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[test]
fn root_package_and_units_under_systemd() {
    if std::env::var_os("BERTH_SKIP_SYSTEMD_TEST").is_some_and(|v| v == "1") {
        skip("BERTH_SKIP_SYSTEMD_TEST=1 is set");
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        skip("needs root: loop devices, mounts, systemd-nspawn");
        return;
    }
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(tool, _)| !in_path(tool))
        .map(|(tool, pkg)| format!("{tool} from package {pkg}"))
        .collect();
    if !missing.is_empty() {
        skip(&format!("needs {}", missing.join(", ")));
        return;
    }

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/systemd/run.sh");
    let summary = tempfile::NamedTempFile::new().expect("summary file");
    // The documented commands marked `runs: systemd`, one script each,
    // for run.sh to run in the machine (tests/common/docblocks.rs).
    let blocks = tempfile::tempdir().expect("doc blocks dir");
    let doc = docblocks::all(&root);
    let mut n = 0;
    for b in doc.iter().filter(|b| b.runs_in(&docblocks::Place::Systemd)) {
        n += 1;
        let name = format!("{n:02}-{}-{}.sh", b.file.replace('/', "-"), b.line);
        std::fs::write(
            blocks.path().join(name),
            format!("# {}\n{}", b.at(), b.script()),
        )
        .expect("write doc block");
    }
    assert!(n > 0, "no block of the docs is marked `runs: systemd`");
    let started = Instant::now();
    // Output goes straight to the terminal, check by check, as it happens.
    let mut child = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        // The package build uses a target directory of its own: the one
        // of this `cargo test` is locked while it runs.
        .env_remove("CARGO_TARGET_DIR")
        .env("BERTH_TEST_SUMMARY", summary.path())
        .env("BERTH_DOC_BLOCKS", blocks.path())
        .stdin(Stdio::null())
        .spawn()
        .expect("run tests/systemd/run.sh");
    let status = match child.wait_timeout(LIMIT).expect("wait for run.sh") {
        Some(s) => s,
        None => {
            // SIGTERM lets the script halt the machine and clean up.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if child
                .wait_timeout(Duration::from_secs(90))
                .ok()
                .flatten()
                .is_none()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
            panic!("tests/systemd/run.sh still running after {LIMIT:?}; stopped");
        }
    };
    let last = std::fs::read_to_string(summary.path()).unwrap_or_default();
    let last = last.trim();
    eprintln!(
        "tests/systemd/run.sh: {last:?}, {status}, {:.0?}",
        started.elapsed()
    );
    let counts: Vec<u32> = last
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        status.success() && last.ends_with(" failed") && counts.len() == 2 && counts[1] == 0,
        "tests/systemd/run.sh: {status}, summary {last:?} (its output above says which check failed)"
    );
    assert!(counts[0] > 0, "no check ran: {last:?}");
}
