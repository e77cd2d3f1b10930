//! Filesystem operations on a block image (a loop image, or an RBD image
//! seen as a file through rbd-fuse): make a filesystem, check it, grow it
//! offline or mounted. Shared by the loop and rbd drivers.
//!
//! The failpoints keep the names of the loop driver that introduced them
//! (`loop.mkfs`, `loop.check_fs`, `loop.grow_fs`; docs/robustness.md).

use std::path::Path;
use std::time::Duration;

use super::DriverError;
use crate::sys::blockfs::{self, MountStep};
use crate::sys::{cmd, mounts, SysError, SysResult};
use crate::volume::FsType;

/// Makes a `fs` filesystem on `image` (a file or a device).
pub fn mkfs(fs: FsType, image: &Path, timeout: Duration) -> SysResult<()> {
    failpoint!("loop.mkfs");
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

/// `e2fsck -f <mode>` on an unmounted ext4 image; exit 1 (something
/// fixed) and 2 (fixed, reboot advised: irrelevant for an image) are
/// success.
pub fn check_ext4(image: &Path, mode: &str, timeout: Duration) -> SysResult<()> {
    failpoint!("loop.check_fs");
    let img = image.to_string_lossy();
    match cmd::run("e2fsck", &["-f", mode, &img], timeout) {
        Ok(_) => Ok(()),
        Err(SysError::Command { outcome, .. })
            if outcome.contains("exit status: 1)") || outcome.contains("exit status: 2)") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `resize2fs` on an unmounted ext4 image: to the image's size, or to
/// `bytes`.
pub fn resize2fs_image(image: &Path, bytes: Option<u64>, timeout: Duration) -> SysResult<()> {
    failpoint!("loop.grow_fs");
    let img = image.to_string_lossy();
    let size = bytes.map(|b| format!("{}K", b / 1024));
    let mut args = vec![img.as_ref()];
    args.extend(size.as_deref());
    cmd::run("resize2fs", &args, timeout).map(|_| ())
}

/// Grows a mounted filesystem (`device` mounted at `target`) to fill its
/// device.
pub fn grow_mounted(fs: FsType, device: &Path, target: &Path, timeout: Duration) -> SysResult<()> {
    failpoint!("loop.grow_fs");
    let dev = device.to_string_lossy();
    let tgt = target.to_string_lossy();
    match fs {
        FsType::Ext4 => cmd::run("resize2fs", &[&dev], timeout),
        FsType::Xfs => cmd::run("xfs_growfs", &[&tgt], timeout),
        FsType::Btrfs => cmd::run("btrfs", &["filesystem", "resize", "max", &tgt], timeout),
    }
    .map(|_| ())
}

/// Where [`grow_offline`] failed.
#[derive(Debug)]
pub struct GrowError {
    /// The step ("check filesystem", "grow filesystem", …).
    pub step: &'static str,
    /// The cause.
    pub source: SysError,
    /// Undoing the earlier steps failed too (the loop device of the
    /// private mount could not be detached).
    pub rollback: Option<Box<SysError>>,
}

impl GrowError {
    /// The driver error of `volume`, with the failed undo as the
    /// rollback failure.
    pub fn into_driver(self, volume: &impl std::fmt::Display) -> DriverError {
        let undo = match self.rollback {
            Some(rb) => Err(DriverError::sys(volume, "detach loop device", *rb)),
            None => Ok(()),
        };
        DriverError::sys(volume, self.step, self.source).undone(undo)
    }
}

/// Grows the unmounted `fs` filesystem on `image` to fill it. ext4 grows
/// in place; xfs and btrfs only grow while mounted, so they are mounted
/// privately at `scratch` (created and removed here) for the moment.
pub fn grow_offline(
    fs: FsType,
    image: &Path,
    scratch: &Path,
    timeout: Duration,
) -> Result<(), GrowError> {
    let at = |step| {
        move |source| GrowError {
            step,
            source,
            rollback: None,
        }
    };
    match fs {
        FsType::Ext4 => {
            // resize2fs insists on a freshly checked filesystem.
            check_ext4(image, "-p", timeout).map_err(at("check filesystem"))?;
            resize2fs_image(image, None, timeout).map_err(at("grow filesystem"))
        }
        FsType::Xfs | FsType::Btrfs => {
            let device =
                blockfs::attach_and_mount(image, scratch, fs, 0o700).map_err(|e| GrowError {
                    step: match e.step {
                        MountStep::MakeDir => "create temporary mount point",
                        MountStep::Attach => "attach loop device",
                        MountStep::Mount => "mount to grow",
                    },
                    source: e.source,
                    rollback: e.rollback,
                })?;
            let grown = grow_mounted(fs, &device, scratch, timeout);
            // The private mount must go whatever happens: a plain unmount,
            // else a lazy one (nobody else uses it).
            let unmounted = mounts::unmount(scratch)
                .map(|_| ())
                .or_else(|_| mounts::detach_lazily(scratch));
            let _ = std::fs::remove_dir(scratch);
            grown.map_err(at("grow filesystem"))?;
            // The filesystem has grown: the image must keep its new size
            // now, so an unmount failure is not the resize's.
            if let Err(e) = unmounted {
                tracing::warn!(
                    "could not unmount {} after growing (removed at the next start): {e}",
                    scratch.display()
                );
            }
            Ok(())
        }
    }
}

/// Thaws every mounted volume whose filesystem a crash left frozen: a
/// freeze outlives the process that made it, so a kill during a snapshot
/// or clone would leave the volume's writers blocked for good, and an
/// unmount of a frozen filesystem keeps its device busy (the frozen
/// superblock stays). Run at start-up, before anything else touches the
/// volumes. Returns a note per volume thawed or that could not be.
pub fn thaw_interrupted_freezes(
    records: &[crate::state::VolumeRecord],
    table: &crate::sys::mounts::MountTable,
) -> Vec<String> {
    let mut notes = Vec::new();
    for rec in records {
        let Some(m) = rec
            .mounted
            .as_ref()
            .filter(|m| table.at(&m.target).is_some())
        else {
            continue;
        };
        match crate::sys::reflink::thaw_if_frozen(&m.target) {
            Ok(true) => notes.push(format!(
                "volume {} was frozen (interrupted snapshot or clone); thawed it",
                rec.name
            )),
            Ok(false) => {}
            Err(e) => notes.push(format!("volume {}: could not thaw: {e}", rec.name)),
        }
    }
    notes
}
