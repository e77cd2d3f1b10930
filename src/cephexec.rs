//! Ceph in a separate binary: the package `berth` ships a berthd built
//! without the ceph feature (no librados/librbd on loop-only hosts), the
//! package `berth-ceph` a berthd built with it at [`CEPH_BERTHD`]. When the
//! configuration declares a Ceph service, the loop-only berthd replaces
//! itself with that binary (same process: systemd's sockets, `LISTEN_PID`,
//! the watchdog and `NOTIFY_SOCKET` stay valid), or refuses to start,
//! naming the package to install (docs/systemd.md, "Packages").

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Settings;

/// Where the package berth-ceph installs the berthd built with Ceph.
pub const CEPH_BERTHD: &str = "/usr/libexec/berth/berthd-ceph";

/// Overrides [`CEPH_BERTHD`] (tests, or a build installed elsewhere).
pub const CEPH_BERTHD_ENV: &str = "BERTH_CEPH_BERTHD";

/// What berthd does with the configuration it loaded.
#[derive(Debug, PartialEq, Eq)]
pub enum Handoff {
    /// This binary serves every selected service.
    Serve,
    /// Replace this process with the berthd built with Ceph.
    Exec(PathBuf),
    /// A Ceph service is declared and no berthd with Ceph is installed:
    /// the message says which service and what to install.
    Missing(String),
}

/// The berthd built with Ceph: `$BERTH_CEPH_BERTHD`, else [`CEPH_BERTHD`].
pub fn helper_path() -> PathBuf {
    std::env::var_os(CEPH_BERTHD_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CEPH_BERTHD))
}

/// Decides for `settings`; `built_with_ceph` is this binary's feature.
pub fn decide(settings: &Settings, built_with_ceph: bool, helper: &Path) -> Handoff {
    let ceph = settings.ceph_services();
    if built_with_ceph || ceph.is_empty() {
        return Handoff::Serve;
    }
    if is_executable(helper) {
        return Handoff::Exec(helper.to_path_buf());
    }
    Handoff::Missing(missing_message(&ceph, helper))
}

/// The refusal of a berthd without Ceph for a Ceph configuration.
pub fn missing_message(ceph: &[String], helper: &Path) -> String {
    format!(
        "service{} {} use{} Ceph, and this berthd is built without it: install the package \
         berth-ceph (it provides {}; docs/ceph.md)",
        if ceph.len() == 1 { "" } else { "s" },
        ceph.join(", "),
        if ceph.len() == 1 { "s" } else { "" },
        helper.display()
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replaces this process with `helper`, passing `args` (berthd's own,
/// without argv\[0\]) and the environment unchanged. Returns only on failure.
pub fn exec(helper: &Path, args: impl IntoIterator<Item = OsString>) -> std::io::Error {
    crate::sys::cmd::replace_process(helper, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        Settings::from_str_with_source(text, None).expect("parse")
    }

    const RBD: &str = "[services.vols]\ndriver = \"rbd\"\n[services.l]\ndriver = \"loop\"\n";

    #[test]
    fn loop_only_configs_are_served_by_any_build() {
        let s = settings("[services.l]\ndriver = \"loop\"\n");
        assert_eq!(decide(&s, false, Path::new("/nonexistent")), Handoff::Serve);
        assert_eq!(decide(&s, true, Path::new("/nonexistent")), Handoff::Serve);
    }

    #[test]
    fn a_build_with_ceph_serves_ceph_itself() {
        assert_eq!(
            decide(&settings(RBD), true, Path::new("/nonexistent")),
            Handoff::Serve
        );
    }

    #[test]
    fn without_ceph_a_ceph_service_goes_to_the_helper_or_names_the_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let helper = dir.path().join("berthd-ceph");
        match decide(&settings(RBD), false, &helper) {
            Handoff::Missing(m) => {
                assert!(m.contains("install the package berth-ceph"), "{m}");
                assert!(m.contains("vols (rbd)") && !m.contains("l (loop)"), "{m}");
                assert!(m.contains(&helper.display().to_string()), "{m}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&helper, "#!/bin/sh\n").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(
            decide(&settings(RBD), false, &helper),
            Handoff::Exec(helper.clone())
        );
    }
}
