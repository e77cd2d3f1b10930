//! The facts `berth doctor` checks, read from this host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Host;
use crate::client::PluginClient;
use crate::protocol::DetailedListResponse;

/// How long a socket gets to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// This host.
#[derive(Debug, Default)]
pub struct Real;

/// `path`, or its nearest existing parent.
fn existing(path: &Path) -> PathBuf {
    let mut p = path.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(parent) => p = parent.to_path_buf(),
            None => break,
        }
    }
    p
}

impl Host for Real {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn has_tool(&self, tool: &str) -> bool {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/sbin", "/usr/sbin"].map(PathBuf::from))
            .any(|d| d.join(tool).is_file())
    }

    fn loop_devices(&self) -> (usize, usize) {
        let Ok(rd) = std::fs::read_dir("/sys/block") else {
            return (0, 0);
        };
        let mut free = 0;
        let mut all = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                continue;
            }
            all += 1;
            if !e.path().join("loop/backing_file").exists() {
                free += 1;
            }
        }
        (free, all)
    }

    fn available(&self, path: &Path) -> Result<u64, String> {
        crate::sys::fsutil::space(&existing(path))
            .map(|s| s.available)
            .map_err(|e| e.to_string())
    }

    fn files(&self, dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn ask(&self, socket: &Path) -> Result<Vec<String>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let c = PluginClient::new(socket, ASK_TIMEOUT);
        let l: DetailedListResponse =
            rt.block_on(c.call::<(), _>("Berth.List", None))
                .map_err(|e| match e {
                    crate::client::ClientError::Connect { source, .. } => source.to_string(),
                    other => other.to_string(),
                })?;
        Ok(l.volumes
            .iter()
            .filter_map(|v| v.status.as_ref()?.get("fsType")?.as_str().map(String::from))
            .collect())
    }

    fn listens(&self, socket: &Path) -> bool {
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    }

    fn shared(&self, path: &Path) -> Option<bool> {
        use procfs_core::process::{MountInfos, MountOptFields};
        use procfs_core::FromRead;
        let infos = MountInfos::from_file("/proc/self/mountinfo").ok()?;
        let path = existing(path);
        let m = infos
            .0
            .iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.as_os_str().len())?;
        Some(
            m.opt_fields
                .iter()
                .any(|f| matches!(f, MountOptFields::Shared(_))),
        )
    }
}
