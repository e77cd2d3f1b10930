//! `berth doctor`: checks what this host needs to run Berth's services,
//! and says how to fix each failure. The checks are pure functions of
//! the configuration and of facts about the host ([`Host`]); [`host`]
//! gathers those facts from the running system.

pub mod host;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{DriverSettings, Settings};
use crate::volume::human_bytes;

/// Where Docker looks for plugin spec files besides `plugins_dir`.
pub const SPEC_DIRS: [&str; 2] = ["/etc/docker/plugins", "/usr/lib/docker/plugins"];

/// Facts about the host the checks need.
pub trait Host {
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Whether `tool` is an executable on PATH (or in /sbin, /usr/sbin).
    fn has_tool(&self, tool: &str) -> bool;
    /// Loop devices not attached, and all loop devices.
    fn loop_devices(&self) -> (usize, usize);
    /// Bytes available on the filesystem holding `path` (or its nearest
    /// existing parent).
    fn available(&self, path: &Path) -> Result<u64, String>;
    /// Files in `dir` (names only; empty when it does not exist).
    fn files(&self, dir: &Path) -> Vec<String>;
    /// Asks the plugin at `socket`: Ok(filesystems of its volumes), or
    /// why it does not answer.
    fn ask(&self, socket: &Path) -> Result<Vec<String>, String>;
    /// Whether a socket file has a listener.
    fn listens(&self, socket: &Path) -> bool;
    /// Propagation of the mount holding `path`: Some(true) shared,
    /// Some(false) private or slave only, None unknown.
    fn shared(&self, path: &Path) -> Option<bool>;
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked ("loop devices", "socket of service fast").
    #[serde(rename = "Check")]
    pub name: String,
    /// Passed.
    #[serde(rename = "Ok")]
    pub ok: bool,
    /// What was found.
    #[serde(rename = "Detail")]
    pub detail: String,
    /// How to fix a failure.
    #[serde(rename = "Fix", skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: true,
        detail: detail.into(),
        fix: None,
    }
}

fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok: false,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

/// Every check for `settings` on `host`, in a stable order.
pub fn run(settings: &Settings, host: &dyn Host) -> Vec<Check> {
    let mut out = Vec::new();
    let loops = settings
        .services
        .values()
        .any(|s| matches!(s.driver, DriverSettings::Loop { .. }));
    if loops {
        out.push(loop_devices(host));
    }
    let mut fs_in_use: Vec<String> = Vec::new();
    for svc in settings.services.values() {
        let socket = settings.socket_path(&svc.name);
        let name = format!("socket of service {}", svc.name);
        match host.ask(&socket) {
            Ok(types) => {
                out.push(pass(name, format!("{} answers", socket.display())));
                if matches!(svc.driver, DriverSettings::Loop { .. }) {
                    fs_in_use.extend(types);
                }
            }
            Err(why) => out.push(fail(
                name,
                format!("{}: {why}", socket.display()),
                format!(
                    "systemctl enable --now berth@{n}.socket; then `berth --service {n} status` (journalctl -u berth@{n}.service tells why it failed)",
                    n = svc.name
                ),
            )),
        }
        if let DriverSettings::Loop { image_dir, pools } = &svc.driver {
            fs_in_use.push(svc.policy.create_defaults.fs_type.as_str().to_string());
            out.push(free_space(
                host,
                &svc.name,
                image_dir,
                svc.policy.create_defaults.size,
            ));
            for (pool, dir) in pools {
                out.push(free_space(
                    host,
                    &format!("{}/{pool}", svc.name),
                    dir,
                    svc.policy.create_defaults.size,
                ));
            }
        }
    }
    fs_in_use.sort();
    fs_in_use.dedup();
    for fs in fs_in_use.iter().filter(|f| !f.is_empty()) {
        out.push(mkfs(host, fs));
    }
    out.extend(ceph_tools(settings, host));
    out.push(plugin_dir(settings, host));
    out.extend(leftovers(settings, host));
    out.push(propagation(&settings.daemon.mount_dir, host));
    out
}

fn loop_devices(host: &dyn Host) -> Check {
    let name = "loop devices";
    let (free, all) = host.loop_devices();
    if host.exists(Path::new("/dev/loop-control")) {
        pass(
            name,
            format!("/dev/loop-control present; {free} of {all} free (more are made on demand)"),
        )
    } else if free > 0 {
        pass(
            name,
            format!("no /dev/loop-control, but {free} of {all} free"),
        )
    } else {
        fail(
            name,
            format!("no /dev/loop-control and {free} free of {all}"),
            "modprobe loop (and add `loop` to /etc/modules-load.d/); in a container, pass /dev/loop-control and /dev/loop* in",
        )
    }
}

fn free_space(host: &dyn Host, what: &str, dir: &Path, size: u64) -> Check {
    let name = format!("free space for {what}");
    match host.available(dir) {
        Ok(avail) if avail >= size => pass(
            name,
            format!(
                "{} available in {}; default create size {}",
                human_bytes(avail),
                dir.display(),
                human_bytes(size)
            ),
        ),
        Ok(avail) => fail(
            name,
            format!(
                "{} available in {}, less than the default create size {}",
                human_bytes(avail),
                dir.display(),
                human_bytes(size)
            ),
            "free space there, or lower [volume.create.default] size (docs/configuration.md)",
        ),
        Err(e) => fail(
            name,
            e,
            format!("create {} on a filesystem with room", dir.display()),
        ),
    }
}

fn mkfs(host: &dyn Host, fs: &str) -> Check {
    let tool = format!("mkfs.{fs}");
    let package = match fs {
        "xfs" => "xfsprogs",
        "btrfs" => "btrfs-progs",
        _ => "e2fsprogs",
    };
    if host.has_tool(&tool) {
        pass(tool.clone(), format!("{fs} is in use; {tool} found"))
    } else {
        fail(
            tool.clone(),
            format!("{fs} is in use but {tool} is not installed"),
            format!("apt-get install {package}"),
        )
    }
}

fn ceph_tools(settings: &Settings, host: &dyn Host) -> Vec<Check> {
    let mut out = Vec::new();
    let kinds: Vec<&str> = settings
        .services
        .values()
        .map(|s| s.driver.kind())
        .filter(|k| *k != "loop")
        .collect();
    if kinds.is_empty() {
        return out;
    }
    out.push(if host.exists(Path::new("/dev/fuse")) {
        pass(
            "FUSE",
            "/dev/fuse present (Ceph services mount through FUSE)",
        )
    } else {
        fail(
            "FUSE",
            "no /dev/fuse; Ceph volumes cannot be mounted",
            "modprobe fuse; apt-get install fuse3",
        )
    });
    for (kind, tool) in [("cephfs", "ceph-fuse"), ("rbd", "rbd-fuse")] {
        if kinds.contains(&kind) {
            out.push(if host.has_tool(tool) {
                pass(tool, format!("{kind} services exist; {tool} found"))
            } else {
                fail(
                    tool,
                    format!("{kind} services exist but {tool} is not installed"),
                    format!("apt-get install {tool}"),
                )
            });
        }
    }
    out
}

fn plugin_dir(settings: &Settings, host: &dyn Host) -> Check {
    let dir = &settings.daemon.plugins_dir;
    if host.exists(dir) {
        pass(
            "Docker plugin directory",
            format!("{} exists", dir.display()),
        )
    } else {
        fail(
            "Docker plugin directory",
            format!("{} does not exist: Docker finds no Berth service", dir.display()),
            "systemctl enable --now berth@berth.socket (the socket units make it), or set plugins_dir to where Docker looks",
        )
    }
}

/// REX-Ray's sockets and spec files, and sockets nobody listens on: each
/// makes `docker volume ls` wait for a plugin that never answers.
fn leftovers(settings: &Settings, host: &dyn Host) -> Vec<Check> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = vec![settings.daemon.plugins_dir.clone()];
    dirs.extend(SPEC_DIRS.iter().map(PathBuf::from));
    let ours: Vec<PathBuf> = settings
        .services
        .keys()
        .map(|n| settings.socket_path(n))
        .collect();
    for dir in &dirs {
        for f in host.files(dir) {
            let path = dir.join(&f);
            let rexray = f.starts_with("rexray") || f.starts_with("libstorage");
            let stale = f.ends_with(".sock") && !ours.contains(&path) && !host.listens(&path);
            if rexray || stale {
                found.push(path);
            }
        }
    }
    let name = "leftover plugin sockets and spec files";
    if found.is_empty() {
        vec![pass(name, "no REX-Ray leftovers, no dead sockets")]
    } else {
        let list: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        vec![fail(
            name,
            format!("found {}", list.join(", ")),
            format!(
                "stop and disable REX-Ray (systemctl disable --now rexray), then rm {}",
                list.join(" ")
            ),
        )]
    }
}

fn propagation(mount_dir: &Path, host: &dyn Host) -> Check {
    let name = "mount propagation";
    match host.shared(mount_dir) {
        Some(true) => pass(
            name,
            format!("{} is on a shared mount: Docker and containers see its mounts", mount_dir.display()),
        ),
        Some(false) => fail(
            name,
            format!(
                "{} is on a private (or slave-only) mount: volumes mounted there stay invisible to Docker's mount namespace",
                mount_dir.display()
            ),
            "mount --make-rshared / (systemd does this at boot; look for what made it private, e.g. a unit with PrivateMounts=)",
        ),
        None => fail(
            name,
            format!("cannot tell how {} propagates (no /proc/self/mountinfo?)", mount_dir.display()),
            "mount /proc",
        ),
    }
}

#[cfg(test)]
mod tests;
