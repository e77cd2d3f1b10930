//! `berth volume import` for loop services: an existing filesystem image
//! file is moved, untouched, into the service's image directory under the
//! volume's name, where the create that follows adopts it (its filesystem
//! is detected and kept; nothing is formatted).

use std::path::Path;
use std::time::Duration;

use super::{DriverError, DriverResult};
use crate::sys::{fsutil, loopdev, SysError};
use crate::volume::{FsType, VolumeName};

/// Moves image file `from` to `<dir>/<name>.img`, after checking that it
/// is a regular file, not attached to a loop device, and holds a
/// filesystem Berth mounts. Refusals say why and what to do instead.
pub(super) fn place(
    dir: &Path,
    timeout: Duration,
    name: &VolumeName,
    from: &Path,
) -> DriverResult<()> {
    let refuse = |reason: String| DriverError::Conflict {
        volume: name.to_string(),
        reason,
    };
    let shown = from.display();
    if !from.is_absolute() {
        return Err(refuse(format!("{shown}: the image path must be absolute")));
    }
    let meta = std::fs::symlink_metadata(from).map_err(|e| {
        DriverError::sys(
            name,
            "inspect the image to import",
            SysError::io("stat", from, e),
        )
    })?;
    if meta.is_dir() {
        return Err(refuse(format!(
            "{shown} is a directory; import adopts a filesystem image file. Copy a directory's contents into a new volume instead: docker run --rm -v {name}:/to -v {shown}:/from busybox cp -a /from/. /to/"
        )));
    }
    if !meta.file_type().is_file() {
        return Err(refuse(format!(
            "{shown} is not a regular file (symbolic links and devices are not imported)"
        )));
    }
    if !loopdev::find_by_backing_file(from).is_empty() {
        return Err(refuse(format!(
            "{shown} is attached to a loop device (in use); unmount and detach it first"
        )));
    }
    let fs = fsutil::probe_fs_type(from, timeout)
        .map_err(|e| DriverError::sys(name, "probe the image's filesystem", e))?
        .ok_or_else(|| {
            refuse(format!(
                "{shown} holds no filesystem Berth can find; it is not imported (import never formats)"
            ))
        })?;
    FsType::parse(&fs).map_err(|r| refuse(format!("{shown} holds {r}")))?;
    let target = dir.join(format!("{name}.img"));
    if target.exists() {
        return Err(refuse(format!(
            "{} already exists (a create of {name} adopts it)",
            target.display()
        )));
    }
    fsutil::ensure_dir(dir, 0o700).map_err(|e| DriverError::sys(name, "image directory", e))?;
    match std::fs::rename(from, &target) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            return Err(refuse(format!(
                "{shown} is on another filesystem than the image directory {}; move it there first (mv {shown} {}), and a create of {name} adopts it",
                dir.display(),
                target.display()
            )))
        }
        Err(e) => {
            return Err(DriverError::sys(
                name,
                "move the image into place",
                SysError::io("rename", from, e),
            ))
        }
    }
    fsutil::fsync_dir(dir).map_err(|e| DriverError::sys(name, "move the image into place", e))
}
