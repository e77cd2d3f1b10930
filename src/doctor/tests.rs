use std::collections::{BTreeMap, BTreeSet};

use super::*;

#[derive(Default)]
struct Fake {
    paths: BTreeSet<PathBuf>,
    tools: BTreeSet<String>,
    loops: (usize, usize),
    space: u64,
    files: BTreeMap<PathBuf, Vec<String>>,
    answering: BTreeMap<PathBuf, Vec<String>>,
    listening: BTreeSet<PathBuf>,
    shared: Option<bool>,
}

impl Host for Fake {
    fn exists(&self, path: &Path) -> bool {
        self.paths.contains(path)
    }
    fn has_tool(&self, tool: &str) -> bool {
        self.tools.contains(tool)
    }
    fn loop_devices(&self) -> (usize, usize) {
        self.loops
    }
    fn available(&self, _: &Path) -> Result<u64, String> {
        Ok(self.space)
    }
    fn files(&self, dir: &Path) -> Vec<String> {
        self.files.get(dir).cloned().unwrap_or_default()
    }
    fn ask(&self, socket: &Path) -> Result<Vec<String>, String> {
        self.answering
            .get(socket)
            .cloned()
            .ok_or_else(|| "connection refused".into())
    }
    fn listens(&self, socket: &Path) -> bool {
        self.listening.contains(socket)
    }
    fn shared(&self, _: &Path) -> Option<bool> {
        self.shared
    }
}

fn healthy() -> (Settings, Fake) {
    let s = Settings::builtin();
    let sock = s.socket_path("berth");
    let mut f = Fake {
        loops: (2, 8),
        space: 100 << 30,
        shared: Some(true),
        ..Fake::default()
    };
    f.paths.insert("/dev/loop-control".into());
    f.paths.insert(s.daemon.plugins_dir.clone());
    f.tools.insert("mkfs.ext4".into());
    f.tools.insert("mkfs.xfs".into());
    f.answering.insert(sock.clone(), vec!["xfs".into()]);
    f.files
        .insert(s.daemon.plugins_dir.clone(), vec!["berth.sock".into()]);
    (s, f)
}

fn failed(checks: &[Check]) -> Vec<&str> {
    checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| c.name.as_str())
        .collect()
}

#[test]
fn a_healthy_host_passes_every_check() {
    let (s, f) = healthy();
    let checks = run(&s, &f);
    assert!(failed(&checks).is_empty(), "{checks:#?}");
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    // The filesystems of existing volumes count, not only the default.
    assert!(
        names.contains(&"mkfs.xfs") && names.contains(&"mkfs.ext4"),
        "{names:?}"
    );
}

#[test]
fn each_failure_is_named_with_a_fix() {
    let (s, mut f) = healthy();
    f.paths.clear();
    f.loops = (0, 0);
    f.tools.remove("mkfs.xfs");
    f.space = 1 << 20;
    f.answering.clear();
    f.shared = Some(false);
    let spec = PathBuf::from("/etc/docker/plugins");
    f.files.insert(spec, vec!["rexray.spec".into()]);
    f.files.insert(
        s.daemon.plugins_dir.clone(),
        vec!["berth.sock".into(), "dead.sock".into()],
    );
    let checks = run(&s, &f);
    let bad = failed(&checks);
    for want in [
        "loop devices",
        "socket of service berth",
        "free space for berth",
        "Docker plugin directory",
        "leftover plugin sockets and spec files",
        "mount propagation",
    ] {
        assert!(bad.contains(&want), "{want} in {bad:?}");
    }
    assert!(checks.iter().filter(|c| !c.ok).all(|c| c.fix.is_some()));
    let left = checks
        .iter()
        .find(|c| c.name.starts_with("leftover"))
        .expect("leftovers");
    assert!(
        left.detail.contains("/etc/docker/plugins/rexray.spec"),
        "{left:?}"
    );
    assert!(left.detail.contains("dead.sock"), "{left:?}");
    assert!(
        !left.detail.contains("berth.sock"),
        "our own socket is no leftover: {left:?}"
    );
    let sock = checks
        .iter()
        .find(|c| c.name == "socket of service berth")
        .expect("socket");
    assert!(sock
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("berth@berth.socket"));
}

#[test]
fn ceph_services_need_fuse_tools() {
    let text = "[services.shared]\ndriver = \"cephfs\"\n[services.shared.ceph]\nconf = \"/etc/ceph/ceph.conf\"\n";
    let Ok(s) = Settings::from_str_with_source(text, None) else {
        // A build without the Ceph drivers refuses the service.
        return;
    };
    let (_, f) = healthy();
    let bad_names: Vec<String> = run(&s, &f)
        .into_iter()
        .filter(|c| !c.ok)
        .map(|c| c.name)
        .collect();
    assert!(bad_names.contains(&"FUSE".to_string()), "{bad_names:?}");
    assert!(
        bad_names.contains(&"ceph-fuse".to_string()),
        "{bad_names:?}"
    );
}
