//! mount(2)/umount2(2) and the kernel's mount table.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use procfs_core::FromRead;

use super::{SysError, SysResult};

/// Mounts `source` (a block device) on `target`.
pub fn mount(source: &Path, target: &Path, fs_type: &str, data: &str) -> SysResult<()> {
    crate::step::enter(format!(
        "mount {} on {}",
        source.display(),
        target.display()
    ));
    failpoint!("mounts.mount");
    let data = if data.is_empty() { None } else { Some(data) };
    nix::mount::mount(
        Some(source),
        target,
        Some(fs_type),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data,
    )
    .map_err(|e| SysError::Mount {
        op: "mount",
        target: target.to_path_buf(),
        source: e,
    })
}

/// Unmounts `target`. Returns `false` when nothing was mounted there.
pub fn unmount(target: &Path) -> SysResult<bool> {
    crate::step::enter(format!("unmount {}", target.display()));
    failpoint!("mounts.unmount");
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(false),
        Err(e) => Err(SysError::Mount {
            op: "unmount",
            target: target.to_path_buf(),
            source: e,
        }),
    }
}

/// Detaches `target` from the mount tree even while it is busy
/// (`MNT_DETACH`); the kernel finishes the unmount when the last user
/// goes. For Berth's own private mounts, when a plain unmount failed.
pub fn detach_lazily(target: &Path) -> SysResult<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(SysError::Mount {
            op: "detach",
            target: target.to_path_buf(),
            source: e,
        }),
    }
}

/// One entry of `/proc/self/mountinfo`, reduced to what Berth uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// The mount source (device).
    pub source: String,
    /// The filesystem type.
    pub fs_type: String,
}

/// A snapshot of the mount table of this process's namespace.
#[derive(Debug, Clone, Default)]
pub struct MountTable {
    entries: Vec<MountEntry>,
    /// Target → index of the top-most entry (lookups are per volume, so
    /// they must not scan the table).
    top: std::collections::HashMap<PathBuf, usize>,
}

impl MountTable {
    /// Reads `/proc/self/mountinfo`.
    pub fn read() -> SysResult<Self> {
        let path = "/proc/self/mountinfo";
        let f = File::open(path).map_err(|e| SysError::io("open", path, e))?;
        Self::parse(f).map_err(|e| SysError::io("parse", path, std::io::Error::other(e)))
    }

    /// Parses mountinfo text.
    pub fn parse<R: std::io::Read>(r: R) -> Result<Self, String> {
        let infos = procfs_core::process::MountInfos::from_read(r).map_err(|e| e.to_string())?;
        let entries: Vec<MountEntry> = infos
            .into_iter()
            .map(|m| MountEntry {
                target: m.mount_point,
                source: m.mount_source.unwrap_or_default(),
                fs_type: m.fs_type,
            })
            .collect();
        let top = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.target.clone(), i))
            .collect();
        Ok(MountTable { entries, top })
    }

    /// Every mount, in mountinfo order.
    pub fn entries(&self) -> &[MountEntry] {
        &self.entries
    }

    /// The top-most mount on `target`, if any.
    pub fn at(&self, target: &Path) -> Option<&MountEntry> {
        self.top.get(target).and_then(|&i| self.entries.get(i))
    }

    /// How many mounts are stacked on `target`.
    pub fn count_at(&self, target: &Path) -> usize {
        self.entries.iter().filter(|e| e.target == target).count()
    }

    /// Every mount whose target lies under `dir`.
    pub fn under<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a MountEntry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.target.starts_with(dir) && e.target != dir)
    }

    /// Every mount whose source is `dev`.
    pub fn of_source(&self, dev: &Path) -> impl Iterator<Item = &MountEntry> + '_ {
        let dev = dev.to_string_lossy().into_owned();
        self.entries.iter().filter(move |e| e.source == dev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 7:3 / /var/lib/berth/volumes/v1 rw,nosuid,nodev,relatime shared:20 - ext4 /dev/loop3 rw
41 22 7:4 / /var/lib/berth/volumes/v2 rw,nosuid,nodev,relatime shared:21 - xfs /dev/loop4 rw,nouuid
";

    #[test]
    fn parses_and_finds() {
        let t = MountTable::parse(SAMPLE.as_bytes()).expect("parse");
        let e = t
            .at(Path::new("/var/lib/berth/volumes/v2"))
            .expect("v2 mounted");
        assert_eq!(e.fs_type, "xfs");
        assert_eq!(e.source, "/dev/loop4");
        assert!(t.at(Path::new("/var/lib/berth/volumes/v3")).is_none());
        assert_eq!(t.under(Path::new("/var/lib/berth/volumes")).count(), 2);
        assert_eq!(t.of_source(Path::new("/dev/loop3")).count(), 1);
    }

    #[test]
    fn reads_live_table() {
        let t = MountTable::read().expect("read mountinfo");
        assert!(t.at(Path::new("/")).is_some(), "root must be mounted");
    }
}
