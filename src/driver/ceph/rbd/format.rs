//! The filesystem of a new rbd volume, made without a FUSE helper.
//!
//! `mkfs` runs on a local sparse file of the image's size (on this host's
//! disk, a few milliseconds), and only the blocks it wrote are sent to the
//! fresh image through berthd's own librbd connection
//! ([`RbdPool::import_sparse`], a handful of writes and one flush). The
//! image then holds byte for byte what `mkfs` on the image itself would
//! have written: a fresh image reads as zeros everywhere else. Starting
//! rbd-fuse, attaching and stopping it, which made most of the time of a
//! create, is gone.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use tracing::{debug, warn};

use super::RbdDriver;
use crate::driver::{fsops, DriverError, DriverResult};
use crate::state::VolumeRecord;
use crate::sys::ceph::RbdPool;
use crate::sys::fsutil;

impl RbdDriver {
    /// Puts a new filesystem on the fresh image of `rec`.
    pub(super) fn format(&self, pool: &RbdPool, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let t = Instant::now();
        fsutil::ensure_dir(&self.fuse_root, 0o700)
            .map_err(|e| DriverError::sys(&rec.name, "create rbd scratch directory", e))?;
        let scratch = self.fuse_root.join(format!(".mkfs-{}", rec.id));
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch)
            .and_then(|f| f.set_len(rec.size));
        if let Err(e) = made {
            // A size the local filesystem cannot hold as a file, say.
            let _ = std::fs::remove_file(&scratch);
            warn!(volume = %name, "cannot make a local scratch file of {} bytes ({e}); making the filesystem through rbd-fuse", rec.size);
            return self.format_through_fuse(rec);
        }
        let done = fsops::mkfs(rec.fs_type, &scratch, self.timeout)
            .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e))
            .and_then(|()| {
                pool.import_sparse(name, &scratch).map_err(|e| {
                    self.b
                        .fail(name, "write the new filesystem to the image", e)
                })
            });
        let _ = std::fs::remove_file(&scratch);
        let written = done?;
        debug!(volume = %name, written, took = ?t.elapsed(), "filesystem made locally and written to the image");
        Ok(())
    }
}
