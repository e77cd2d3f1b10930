//! The loop driver: a volume is a sparse image file, formatted with
//! mkfs, attached to a loop device and mounted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{CreateHow, Driver, DriverError, DriverResult};
use crate::state::{MountRecord, Phase, VolumeRecord};
use crate::sys::{cmd, fsutil, loopdev, mounts, mounts::MountTable, SysError};
use crate::volume::FsType;

/// Key of the image path in `driver_data`.
const IMAGE_KEY: &str = "image";

/// Loop-device volumes for one service.
#[derive(Debug)]
pub struct LoopDriver {
    image_dir: PathBuf,
    timeout: Duration,
}

impl LoopDriver {
    /// A driver keeping images in `image_dir`; external tools get at most
    /// `timeout` each.
    pub fn new(image_dir: PathBuf, timeout: Duration) -> Self {
        LoopDriver { image_dir, timeout }
    }

    /// The image directory.
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    fn image_of(&self, rec: &VolumeRecord) -> PathBuf {
        rec.driver_data
            .get(IMAGE_KEY)
            .map(PathBuf::from)
            .unwrap_or_else(|| self.image_dir.join(format!("{}.img", rec.name)))
    }

    fn mkfs(&self, fs: FsType, image: &Path) -> Result<(), SysError> {
        failpoint!("loop.mkfs");
        let img = image.to_string_lossy();
        match fs {
            // nodiscard: the image is sparse already; lazy init keeps
            // mkfs at a few ms whatever the size.
            FsType::Ext4 => cmd::run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-E",
                    "nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                    &img,
                ],
                self.timeout,
            ),
            FsType::Xfs => cmd::run("mkfs.xfs", &["-q", "-f", "-K", &img], self.timeout),
            FsType::Btrfs => cmd::run("mkfs.btrfs", &["-q", "-f", "-K", &img], self.timeout),
        }
        .map(|_| ())
    }

    fn detach_all(&self, image: &Path) -> Result<(), SysError> {
        for dev in loopdev::find_by_backing_file(image) {
            loopdev::detach(&dev)?;
        }
        Ok(())
    }
}

impl Driver for LoopDriver {
    fn kind(&self) -> &'static str {
        "loop"
    }

    fn free_space(&self) -> Option<u64> {
        let probe = if self.image_dir.exists() {
            self.image_dir.as_path()
        } else {
            self.image_dir.ancestors().find(|p| p.exists())?
        };
        fsutil::space(probe).ok().map(|s| s.available)
    }

    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow) -> DriverResult<()> {
        fsutil::ensure_dir(&self.image_dir, 0o700)
            .map_err(|e| DriverError::sys(&rec.name, "create image directory", e))?;
        let image = self.image_dir.join(format!("{}.img", rec.name));
        // An image already in place (put there by an operator) is adopted:
        // its filesystem is kept unless overwritefs is set. Only an image
        // made here is deleted on failure.
        let existed = image.exists();
        if existed {
            let len = std::fs::metadata(&image)
                .map_err(|e| {
                    DriverError::sys(
                        &rec.name,
                        "inspect existing image",
                        SysError::io("stat", &image, e),
                    )
                })?
                .len();
            rec.size = len;
        } else {
            fsutil::create_sparse(&image, rec.size)
                .map_err(|e| DriverError::sys(&rec.name, "create image", e))?;
        }
        let result = (|| {
            // A file made just now is blank: only an adopted one is probed.
            let found = if existed {
                fsutil::probe_fs_type(&image, self.timeout)
                    .map_err(|e| DriverError::sys(&rec.name, "probe filesystem", e))?
            } else {
                None
            };
            match found {
                Some(fs) if !how.overwrite_fs => {
                    rec.fs_type = FsType::parse(&fs).map_err(|r| DriverError::Conflict {
                        volume: rec.name.to_string(),
                        reason: format!(
                            "existing image {} holds {r}; set overwritefs=true to reformat it",
                            image.display()
                        ),
                    })?;
                    return Ok(());
                }
                _ => self
                    .mkfs(rec.fs_type, &image)
                    .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e)),
            }?;
            // mkfs synced the image's data; make its directory entry
            // durable before the record says Ready.
            fsutil::fsync_dir(&self.image_dir)
                .map_err(|e| DriverError::sys(&rec.name, "sync image directory", e))
        })();
        if let Err(cause) = result {
            if !existed {
                if let Err(rb) = fsutil::remove_durable(&image) {
                    return Err(DriverError::Rollback {
                        cause: Box::new(cause),
                        rollback: rb,
                    });
                }
            }
            return Err(cause);
        }
        rec.driver_data
            .insert(IMAGE_KEY.into(), image.to_string_lossy().into_owned());
        Ok(())
    }

    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let image = self.image_of(rec);
        self.detach_all(&image)
            .map_err(|e| DriverError::sys(&rec.name, "detach loop device", e))?;
        fsutil::remove_durable(&image).map_err(|e| DriverError::sys(&rec.name, "delete image", e))
    }

    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        let image = self.image_of(rec);
        if !image.exists() {
            return Err(DriverError::Conflict {
                volume: rec.name.to_string(),
                reason: format!("image {} is missing", image.display()),
            });
        }
        // Already mounted from our image (a mount that outlived its
        // record, e.g. after a crash in the middle of Mount)? Use it.
        let table =
            MountTable::read().map_err(|e| DriverError::sys(&rec.name, "read mount table", e))?;
        if let Some(m) = table.at(target) {
            let devs = loopdev::find_by_backing_file(&image);
            if let Some(dev) = devs.iter().find(|d| d.to_string_lossy() == m.source) {
                return Ok(MountRecord {
                    device: dev.clone(),
                    target: target.to_path_buf(),
                });
            }
            return Err(DriverError::Conflict {
                volume: rec.name.to_string(),
                reason: format!(
                    "{} is already a mount point of {} ({}), not of this volume",
                    target.display(),
                    m.source,
                    m.fs_type
                ),
            });
        }
        fsutil::ensure_dir(target, 0o755)
            .map_err(|e| DriverError::sys(&rec.name, "create mount point", e))?;
        let attached = loopdev::attach(&image).map_err(|e| {
            let _ = std::fs::remove_dir(target);
            DriverError::sys(&rec.name, "attach loop device", e)
        })?;
        let data = match rec.fs_type {
            FsType::Xfs => "nouuid",
            _ => "",
        };
        if let Err(e) = mounts::mount(attached.path(), target, rec.fs_type.as_str(), data) {
            let cause = DriverError::sys(&rec.name, "mount", e);
            let _ = std::fs::remove_dir(target);
            if let Err(rb) = attached.detach() {
                return Err(DriverError::Rollback {
                    cause: Box::new(cause),
                    rollback: rb,
                });
            }
            return Err(cause);
        }
        Ok(MountRecord {
            device: attached.path().to_path_buf(),
            target: target.to_path_buf(),
        })
        // `attached` drops here; the mount now holds the device, and the
        // kernel detaches it (autoclear) when the filesystem is unmounted.
    }

    fn unmount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()> {
        mounts::unmount(target).map_err(|e| DriverError::sys(&rec.name, "unmount", e))?;
        self.detach_all(&self.image_of(rec))
            .map_err(|e| DriverError::sys(&rec.name, "detach loop device", e))?;
        let _ = std::fs::remove_dir(target);
        Ok(())
    }

    fn allocated(&self, rec: &VolumeRecord) -> u64 {
        fsutil::allocated_bytes(&self.image_of(rec)).unwrap_or(0)
    }

    fn reconcile(&self, records: &[VolumeRecord], table: &MountTable) -> Vec<String> {
        let mut notes = Vec::new();
        let canon_dir =
            std::fs::canonicalize(&self.image_dir).unwrap_or_else(|_| self.image_dir.clone());
        // Devices in use: the source of a mount of a Ready record.
        let in_use: Vec<PathBuf> = records
            .iter()
            .filter(|r| r.phase == Phase::Ready)
            .filter_map(|r| r.mounted.as_ref())
            .filter(|m| table.at(&m.target).is_some())
            .map(|m| m.device.clone())
            .collect();
        for (dev, backing) in loopdev::list_attached() {
            if !(backing.starts_with(&canon_dir) || backing.starts_with(&self.image_dir)) {
                continue;
            }
            if in_use.contains(&dev) || table.of_source(&dev).next().is_some() {
                continue;
            }
            match loopdev::detach(&dev) {
                Ok(()) => notes.push(format!(
                    "detached loop device {} (backing {}) that no mount used",
                    dev.display(),
                    backing.display()
                )),
                Err(e) => notes.push(format!("could not detach stale {}: {e}", dev.display())),
            }
        }
        // Image files no record owns: reported, never deleted (they may be
        // an operator's data, to be adopted by a create of that name).
        if let Ok(entries) = std::fs::read_dir(&self.image_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(stem) = name.strip_suffix(".img") {
                    if !records.iter().any(|r| r.name.as_str() == stem) {
                        notes.push(format!(
                            "image {} belongs to no volume; left in place (a create named {stem} adopts it)",
                            e.path().display()
                        ));
                    }
                }
            }
        }
        notes
    }
}
