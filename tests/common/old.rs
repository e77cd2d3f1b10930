//! The berthd that wrote `tests/fixtures/v1`, built once from that commit
//! by `tests/upgrade/old-berthd.sh` and cached in /var/cache/berth-test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The commit whose berthd wrote `tests/fixtures/v1` (its MANIFEST.md).
pub const FIXTURE_COMMIT: &str = "4755b3ac842743a6c177c7f9f572e107d5fab3f7";

/// The berthd of [`FIXTURE_COMMIT`] built with `features` (`""`: none);
/// `None` (SKIPPED printed) when this checkout does not have that commit.
pub fn berthd(test: &str, features: &str) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upgrade/old-berthd.sh");
    let started = Instant::now();
    let mut cmd = Command::new(&script);
    cmd.arg(FIXTURE_COMMIT);
    if !features.is_empty() {
        cmd.arg(features);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .expect("run old-berthd.sh");
    match out.status.code() {
        Some(0) => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            eprintln!(
                "{test}: berthd of {FIXTURE_COMMIT} ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Some(Path::new(&dir).join("berthd"))
        }
        Some(3) => {
            eprintln!("SKIPPED (no commit {FIXTURE_COMMIT} in this checkout): {test}");
            None
        }
        _ => panic!("building the berthd of {FIXTURE_COMMIT} failed: {out:?}"),
    }
}
