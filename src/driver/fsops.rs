//! Filesystem operations on a block image (a loop image, or an RBD image
//! seen as a file through rbd-fuse): make a filesystem, grow it offline.

use std::path::Path;
use std::time::Duration;

use crate::sys::{cmd, fsutil, loopdev, mounts, SysError, SysResult};
use crate::volume::FsType;

/// Makes a `fs` filesystem on `image` (a file or a device).
pub fn mkfs(fs: FsType, image: &Path, timeout: Duration) -> SysResult<()> {
    let img = image.to_string_lossy();
    match fs {
        // nodiscard: the image is sparse already; lazy init keeps mkfs at
        // a few ms whatever the size.
        FsType::Ext4 => cmd::run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                &img,
            ],
            timeout,
        ),
        FsType::Xfs => cmd::run("mkfs.xfs", &["-q", "-f", "-K", &img], timeout),
        FsType::Btrfs => cmd::run("mkfs.btrfs", &["-q", "-f", "-K", &img], timeout),
    }
    .map(|_| ())
}

/// Grows the unmounted `fs` filesystem on `image` to fill it. ext4 grows
/// in place; xfs and btrfs only grow while mounted, so they are mounted
/// privately at `scratch` (created and removed here) for the moment.
pub fn grow_offline(fs: FsType, image: &Path, scratch: &Path, timeout: Duration) -> SysResult<()> {
    let img = image.to_string_lossy();
    match fs {
        FsType::Ext4 => {
            // resize2fs insists on a freshly checked filesystem. e2fsck -p
            // exits 1 when it fixed something: still fine.
            match cmd::run("e2fsck", &["-f", "-p", &img], timeout) {
                Ok(_) => {}
                Err(SysError::Command { outcome, .. }) if outcome.contains("exit status: 1)") => {}
                Err(e) => return Err(e),
            }
            cmd::run("resize2fs", &[&img], timeout).map(|_| ())
        }
        FsType::Xfs | FsType::Btrfs => {
            fsutil::ensure_dir(scratch, 0o700)?;
            let attached = match loopdev::attach(image) {
                Ok(a) => a,
                Err(e) => {
                    let _ = std::fs::remove_dir(scratch);
                    return Err(e);
                }
            };
            let data = if fs == FsType::Xfs { "nouuid" } else { "" };
            if let Err(e) = mounts::mount(attached.path(), scratch, fs.as_str(), data) {
                let _ = attached.detach();
                let _ = std::fs::remove_dir(scratch);
                return Err(e);
            }
            let grown = grow_mounted(fs, attached.path(), scratch, timeout);
            drop(attached);
            let unmounted = mounts::unmount(scratch);
            let _ = std::fs::remove_dir(scratch);
            grown?;
            unmounted.map(|_| ())
        }
    }
}

/// Grows a mounted filesystem (`device` mounted at `target`) to fill its
/// device.
pub fn grow_mounted(fs: FsType, device: &Path, target: &Path, timeout: Duration) -> SysResult<()> {
    let dev = device.to_string_lossy();
    let tgt = target.to_string_lossy();
    match fs {
        FsType::Ext4 => cmd::run("resize2fs", &[&dev], timeout),
        FsType::Xfs => cmd::run("xfs_growfs", &[&tgt], timeout),
        FsType::Btrfs => cmd::run("btrfs", &["filesystem", "resize", "max", &tgt], timeout),
    }
    .map(|_| ())
}
