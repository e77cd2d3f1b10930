//! The loop driver: a volume is a sparse image file, formatted with
//! mkfs, attached to a loop device and mounted.
//!
//! Pools are image directories (the default pool is the service's
//! `image_dir`). Snapshots are image files `<snapshot>.snap` next to the
//! source's image, made with `FICLONE` where the pool's filesystem shares
//! extents and with a sparse copy elsewhere; a mounted source is frozen
//! (`FIFREEZE`) for the length of the copy. Clones are made the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use super::{
    fsops, CreateHow, CreateSource, Driver, DriverError, DriverResult, Progress, DEFAULT_POOL,
};
use crate::state::{
    CopyMethod as Copied, Facts, MountRecord, Phase, SnapshotRecord, VolumeRecord, RESIZING_KEY,
};
use crate::sys::reflink::{self, CopyMethod};
use crate::sys::{blockfs, caps, fsutil, loopdev, mounts, mounts::MountTable, SysError};
use crate::volume::{human_bytes, FsType};

/// Key of the image path in `driver_data`.
const IMAGE_KEY: &str = "image";
/// Records how a copy was made and how long its source was frozen.
fn record_copy(
    rec: &mut impl Facts,
    method: reflink::CopyMethod,
    frozen: Option<std::time::Duration>,
) {
    rec.set_copy_method(match method {
        reflink::CopyMethod::Reflink => Copied::Reflink,
        reflink::CopyMethod::SparseCopy => Copied::SparseCopy,
    });
    if let Some(f) = frozen {
        rec.set_frozen_for(f);
    }
}

/// Prefix of the temporary mount points used to grow an unmounted
/// xfs or btrfs volume (under the pool directory).
const GROW_PREFIX: &str = ".berth-grow-";

/// Suffix of a copy in the making (garbage if found at start-up).
const PARTIAL_SUFFIX: &str = ".partial";

/// `<dir>/.<name>.partial` for `<dir>/<name>`.
fn partial_of(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
}

/// Loop-device volumes for one service.
#[derive(Debug)]
pub struct LoopDriver {
    image_dir: PathBuf,
    pools: RwLock<BTreeMap<String, PathBuf>>,
    timeout: Duration,
}

impl LoopDriver {
    /// A driver keeping images in `image_dir` (the default pool); external
    /// tools get at most `timeout` each.
    pub fn new(image_dir: PathBuf, timeout: Duration) -> Self {
        LoopDriver {
            image_dir,
            pools: RwLock::new(BTreeMap::new()),
            timeout,
        }
    }

    /// Adds named pools (image directories).
    pub fn with_pools(self, pools: BTreeMap<String, PathBuf>) -> Self {
        *self.pools.write().unwrap_or_else(|p| p.into_inner()) = pools;
        self
    }

    /// The image directory of the default pool.
    pub fn image_dir(&self) -> &Path {
        &self.image_dir
    }

    /// The image directory of `pool` ("" is the default pool).
    pub fn pool_dir(&self, pool: &str) -> Option<PathBuf> {
        if pool.is_empty() || pool == DEFAULT_POOL {
            return Some(self.image_dir.clone());
        }
        self.pools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(pool)
            .cloned()
    }

    fn all_dirs(&self) -> Vec<PathBuf> {
        let mut v = vec![self.image_dir.clone()];
        v.extend(
            self.pools
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned(),
        );
        v
    }

    fn dir_of_pool(&self, name: &impl std::fmt::Display, pool: &str) -> DriverResult<PathBuf> {
        self.pool_dir(pool).ok_or_else(|| DriverError::Conflict {
            volume: name.to_string(),
            reason: format!(
                "storage pool {pool:?} is not configured (pools: {})",
                self.pools().join(", ")
            ),
        })
    }

    fn image_of(&self, rec: &VolumeRecord) -> PathBuf {
        rec.driver_data
            .get(IMAGE_KEY)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                self.pool_dir(&rec.volume_type)
                    .unwrap_or_else(|| self.image_dir.clone())
                    .join(format!("{}.img", rec.name))
            })
    }

    fn snap_image_of(&self, snap: &SnapshotRecord) -> PathBuf {
        snap.driver_data
            .get(IMAGE_KEY)
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                self.pool_dir(&snap.volume_type)
                    .unwrap_or_else(|| self.image_dir.clone())
                    .join(format!("{}.snap", snap.name))
            })
    }

    /// Copies `src` to the new file `dst`, freezing the filesystem
    /// mounted at `freeze_at` (if any) for the length of the copy only:
    /// the copy is made under a temporary name (`.<name>.partial`, removed
    /// at start-up if a crash leaves one), made durable after the thaw,
    /// then renamed into place. Returns the method and how long writers
    /// of the source were blocked (from the freeze call to the thaw).
    fn point_in_time_copy(
        &self,
        who: &impl std::fmt::Display,
        src: &Path,
        dst: &Path,
        freeze_at: Option<&Path>,
        progress: Option<&Progress>,
    ) -> DriverResult<(CopyMethod, Option<Duration>)> {
        let report = |done: u64, total: u64| {
            if let Some(p) = progress {
                p.set(done, total);
            }
        };
        let partial = partial_of(dst);
        let started = Instant::now();
        let copied = blockfs::frozen_copy(
            freeze_at,
            || {
                reflink::clone_or_copy(src, &partial, false, &report)
                    .map_err(|e| DriverError::sys(who, "copy image", e))
            },
            |_| {
                std::fs::remove_file(&partial).map_err(|e| {
                    DriverError::sys(who, "remove the copy", SysError::io("remove", &partial, e))
                })
            },
        )
        .map_err(|e| DriverError::frozen_copy_failed(who, e))?;
        let copied_at = started.elapsed();
        let (method, frozen_for) = (copied.value, copied.frozen_for);
        let durable =
            fsutil::fsync_file(&partial).and_then(|_| fsutil::rename_durable(&partial, dst));
        if let Err(e) = durable {
            // The rename may have happened before the directory sync
            // failed; `dst` did not exist before (callers check), so
            // both names go.
            let undo =
                [partial.as_path(), dst]
                    .map(|p| match std::fs::remove_file(p) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(
                            DriverError::sys(who, "remove the copy", SysError::io("remove", p, e)),
                        ),
                        _ => Ok(()),
                    })
                    .into_iter()
                    .collect::<DriverResult<()>>();
            return Err(DriverError::sys(who, "make the copy durable", e).undone(undo));
        }
        tracing::debug!(copy = %who, method = method.as_str(),
            frozen_us = frozen_for.map(|d| d.as_micros() as u64),
            freeze_us = copied.freeze_took.as_micros() as u64,
            copy_us = copied_at.as_micros() as u64,
            durable_us = (started.elapsed() - copied_at).as_micros() as u64,
            "point-in-time copy made");
        Ok((method, frozen_for))
    }

    fn grow_offline(&self, rec: &VolumeRecord, image: &Path) -> DriverResult<()> {
        let dir = image.parent().unwrap_or(&self.image_dir);
        let scratch = dir.join(format!("{GROW_PREFIX}{}", rec.name));
        fsops::grow_offline(rec.fs_type, image, &scratch, self.timeout)
            .map_err(|e| e.into_driver(&rec.name))
    }

    /// Start-up: a resize cut by a crash (the record still carries
    /// [`RESIZING_KEY`]) may have left the image, or the image and the
    /// filesystem, larger than the record says. Puts both back to the
    /// recorded size, so a resize happened entirely or not at all.
    fn undo_interrupted_resize(&self, rec: &VolumeRecord, table: &MountTable) -> Option<String> {
        rec.driver_data.get(RESIZING_KEY)?;
        let image = self.image_of(rec);
        let len = std::fs::metadata(&image).ok()?.len();
        let fs = fs_bytes(&image, rec.fs_type);
        if len <= rec.size && fs.is_none_or(|b| b <= rec.size) {
            return None;
        }
        let what = format!(
            "volume {}: an interrupted resize left the image at {} and the filesystem at {} (the record says {})",
            rec.name,
            human_bytes(len),
            fs.map(human_bytes).unwrap_or_else(|| "?".into()),
            human_bytes(rec.size)
        );
        if rec
            .mounted
            .as_ref()
            .is_some_and(|m| table.at(&m.target).is_some())
        {
            return Some(format!(
                "{what}; it is mounted, so it stays so until it is resized again"
            ));
        }
        Some(match self.shrink_back(rec, &image) {
            Ok(()) => format!("{what}; put back to {}", human_bytes(rec.size)),
            Err(e) => format!("{what}; could not put it back: {e}"),
        })
    }

    fn shrink_back(&self, rec: &VolumeRecord, image: &Path) -> Result<(), SysError> {
        if rec.fs_type == FsType::Ext4 {
            // A resize2fs cut in the middle leaves the filesystem marked
            // as having errors: check (and repair) it first.
            fsops::check_ext4(image, "-y", self.timeout)?;
            if fs_bytes(image, rec.fs_type).is_some_and(|b| b > rec.size) {
                // The grow had finished: drop the new, still unused
                // block groups again.
                fsops::resize2fs_image(image, Some(rec.size), self.timeout)?;
            }
        } else if let Some(b) = fs_bytes(image, rec.fs_type).filter(|b| *b > rec.size) {
            return Err(SysError::io(
                "shrink",
                image,
                std::io::Error::other(format!(
                    "the {} filesystem already spans {} and cannot shrink; resize the volume to at least that",
                    rec.fs_type,
                    human_bytes(b)
                )),
            ));
        }
        fsutil::set_file_len(image, rec.size)
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

    fn place_image(&self, name: &crate::volume::VolumeName, from: &Path) -> DriverResult<()> {
        super::loop_import::place(&self.image_dir, self.timeout, name, from)
    }

    fn pools(&self) -> Vec<String> {
        let mut v = vec![DEFAULT_POOL.to_string()];
        v.extend(
            self.pools
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned(),
        );
        v
    }

    fn free_space(&self, pool: &str) -> Option<u64> {
        let dir = self.pool_dir(pool)?;
        crate::step::enter(format!("free space of pool {pool} ({})", dir.display()));
        let probe = if dir.exists() {
            dir.as_path()
        } else {
            dir.ancestors().find(|p| p.exists())?
        };
        fsutil::space(probe).ok().map(|s| s.available)
    }

    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow<'_>) -> DriverResult<()> {
        let dir = self.dir_of_pool(&rec.name, &rec.volume_type)?;
        fsutil::ensure_dir(&dir, 0o700)
            .map_err(|e| DriverError::sys(&rec.name, "create image directory", e))?;
        let image = dir.join(format!("{}.img", rec.name));
        if let Some(source) = how.source {
            if image.exists() {
                return Err(DriverError::Conflict {
                    volume: rec.name.to_string(),
                    reason: format!(
                        "image {} already exists; a clone never overwrites it (move it away or pick another name)",
                        image.display()
                    ),
                });
            }
            let (src, freeze_at, size, fs) = match source {
                CreateSource::Volume(s) => (
                    self.image_of(s),
                    s.mounted.as_ref().map(|m| m.target.clone()),
                    s.size,
                    s.fs_type,
                ),
                CreateSource::Snapshot(s) => (self.snap_image_of(s), None, s.size, s.fs_type),
            };
            let (method, frozen) = self.point_in_time_copy(
                &rec.name,
                &src,
                &image,
                freeze_at.as_deref(),
                how.progress,
            )?;
            rec.size = std::fs::metadata(&image).map(|m| m.len()).unwrap_or(size);
            rec.fs_type = fs;
            rec.driver_data
                .insert(IMAGE_KEY.into(), image.to_string_lossy().into_owned());
            record_copy(rec, method, frozen);
            return Ok(());
        }
        // An image already in place (put there by an operator) is adopted:
        // its filesystem is kept unless overwritefs is set. Only an image
        // made here is deleted on failure.
        let existed = image.exists();
        let too_small = |rec: &VolumeRecord| {
            if rec.size < rec.fs_type.min_size() {
                return Err(DriverError::Conflict {
                    volume: rec.name.to_string(),
                    reason: format!(
                        "size {} is too small for {} (at least {}); set the size option",
                        human_bytes(rec.size),
                        rec.fs_type,
                        human_bytes(rec.fs_type.min_size())
                    ),
                });
            }
            Ok(())
        };
        if !existed {
            too_small(rec)?;
        }
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
                _ => {
                    too_small(rec)?;
                    fsops::mkfs(rec.fs_type, &image, self.timeout)
                        .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e))
                }
            }?;
            // mkfs synced the image's data; make its directory entry
            // durable before the record says Ready.
            let dir = image.parent().unwrap_or(Path::new("/"));
            fsutil::fsync_dir(dir)
                .map_err(|e| DriverError::sys(&rec.name, "sync image directory", e))
        })();
        if let Err(cause) = result {
            if !existed {
                let undo = fsutil::remove_durable(&image)
                    .map_err(|e| DriverError::sys(&rec.name, "delete image", e));
                return Err(cause.undone(undo));
            }
            return Err(cause);
        }
        rec.driver_data
            .insert(IMAGE_KEY.into(), image.to_string_lossy().into_owned());
        Ok(())
    }

    fn storage_exists(&self, rec: &VolumeRecord) -> bool {
        self.image_of(rec).exists()
    }

    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let image = self.image_of(rec);
        self.detach_all(&image)
            .map_err(|e| DriverError::sys(&rec.name, "detach loop device", e))?;
        fsutil::remove_durable(&image).map_err(|e| DriverError::sys(&rec.name, "delete image", e))
    }

    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        let image = self.image_of(rec);
        crate::step::enter(format!("look up image {}", image.display()));
        if !image.exists() {
            return Err(DriverError::Conflict {
                volume: rec.name.to_string(),
                reason: format!("image {} is missing", image.display()),
            });
        }
        if let Some(m) = super::existing_loop_mount(rec, target, &image)? {
            return Ok(m);
        }
        let device = blockfs::attach_and_mount(&image, target, rec.fs_type, 0o755)
            .map_err(|e| DriverError::mount_failed(&rec.name, e))?;
        Ok(MountRecord {
            device,
            target: target.to_path_buf(),
        })
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

    fn snapshot(
        &self,
        rec: &VolumeRecord,
        snap: &mut SnapshotRecord,
        progress: &Progress,
    ) -> DriverResult<()> {
        let src = self.image_of(rec);
        let dir = src
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.image_dir.clone());
        let dst = dir.join(format!("{}.snap", snap.name));
        let who = format!("{} (snapshot {})", rec.name, snap.name);
        if dst.exists() {
            return Err(DriverError::Conflict {
                volume: who,
                reason: format!(
                    "snapshot image {} already exists; it is never overwritten",
                    dst.display()
                ),
            });
        }
        let freeze_at = rec.mounted.as_ref().map(|m| m.target.as_path());
        let (method, frozen) =
            self.point_in_time_copy(&who, &src, &dst, freeze_at, Some(progress))?;
        snap.driver_data
            .insert(IMAGE_KEY.into(), dst.to_string_lossy().into_owned());
        record_copy(snap, method, frozen);
        Ok(())
    }

    fn remove_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let image = self.snap_image_of(snap);
        fsutil::remove_durable(&image).map_err(|e| {
            DriverError::sys(
                &format!("{} (snapshot {})", snap.volume, snap.name),
                "delete snapshot image",
                e,
            )
        })
    }

    fn snapshot_allocated(&self, snap: &SnapshotRecord) -> u64 {
        fsutil::allocated_bytes(&self.snap_image_of(snap)).unwrap_or(0)
    }

    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        let image = self.image_of(rec);
        let current = std::fs::metadata(&image)
            .map_err(|e| {
                DriverError::sys(&rec.name, "inspect image", SysError::io("stat", &image, e))
            })?
            .len();
        if new_size < current {
            return Err(DriverError::Conflict {
                volume: rec.name.to_string(),
                reason: format!(
                    "cannot shrink from {} to {}: volumes only grow (shrinking a filesystem can lose data, and xfs cannot shrink at all)",
                    human_bytes(current),
                    human_bytes(new_size)
                ),
            });
        }
        if let Some(m) = &rec.mounted {
            if rec.fs_type == FsType::Ext4
                && caps::has_effective(caps::CAP_SYS_RESOURCE) == Some(false)
            {
                return Err(DriverError::Conflict {
                    volume: rec.name.to_string(),
                    reason: "it is mounted, and growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE (ext4's online-resize ioctl demands it), which berthd does not have; stop the containers using it and resize again (an unmounted volume grows offline), or give berthd CAP_SYS_RESOURCE".into(),
                });
            }
            fsutil::set_file_len(&image, new_size)
                .map_err(|e| DriverError::sys(&rec.name, "grow image", e))?;
            let grown = loopdev::open(&m.device)
                .and_then(|d| d.set_capacity())
                .map_err(|e| DriverError::sys(&rec.name, "update loop device capacity", e))
                .and_then(|_| {
                    fsops::grow_mounted(rec.fs_type, &m.device, &m.target, self.timeout)
                        .map_err(|e| DriverError::sys(&rec.name, "grow mounted filesystem", e))
                });
            if let Err(cause) = grown {
                // The filesystem did not take the new space: give it back
                // so the image matches the filesystem again.
                let undo = fsutil::set_file_len(&image, current)
                    .and_then(|_| loopdev::open(&m.device).and_then(|d| d.set_capacity()))
                    .map_err(|e| DriverError::sys(&rec.name, "shrink image back", e));
                return Err(cause.undone(undo));
            }
            return Ok(());
        }
        fsutil::set_file_len(&image, new_size)
            .map_err(|e| DriverError::sys(&rec.name, "grow image", e))?;
        if let Err(cause) = self.grow_offline(rec, &image) {
            // Growth tools either finish or leave the filesystem at its old
            // size, so the image can shrink back to where it was.
            let undo = fsutil::set_file_len(&image, current)
                .map_err(|e| DriverError::sys(&rec.name, "shrink image back", e));
            return Err(cause.undone(undo));
        }
        Ok(())
    }

    fn reconcile(
        &self,
        records: &[VolumeRecord],
        snapshots: &[SnapshotRecord],
        table: &MountTable,
    ) -> Vec<String> {
        let mut notes = fsops::thaw_interrupted_freezes(records, table);
        // Temporary mounts of an interrupted offline resize.
        for dir in self.all_dirs() {
            let leftovers: Vec<PathBuf> = table
                .under(&dir)
                .filter(|m| {
                    m.target
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(GROW_PREFIX))
                })
                .map(|m| m.target.clone())
                .collect();
            for t in leftovers {
                match mounts::unmount(&t) {
                    Ok(_) => {
                        let _ = std::fs::remove_dir(&t);
                        notes.push(format!(
                            "unmounted {} left by an interrupted resize",
                            t.display()
                        ))
                    }
                    Err(e) => notes.push(format!("could not unmount {}: {e}", t.display())),
                }
            }
        }
        let table = MountTable::read().unwrap_or_else(|_| table.clone());
        let table = &table;
        for rec in records {
            notes.extend(self.undo_interrupted_resize(rec, table));
        }
        for dir in self.all_dirs() {
            self.reconcile_dir(&dir, records, snapshots, table, &mut notes);
        }
        notes
    }
}

/// Bytes the filesystem on `image` spans, from its superblock (`None`:
/// no superblock of that type found).
fn fs_bytes(image: &Path, fs: FsType) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(image).ok()?;
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    match fs {
        FsType::Ext4 => {
            let mut sb = [0u8; 1024];
            f.read_exact_at(&mut sb, 1024).ok()?;
            if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
                return None;
            }
            let mut blocks = u64::from(le32(&sb, 0x04));
            // INCOMPAT_64BIT: the high half of the block count.
            if le32(&sb, 0x60) & 0x80 != 0 {
                blocks |= u64::from(le32(&sb, 0x150)) << 32;
            }
            let block = 1024u64 << le32(&sb, 0x18).min(16);
            Some(blocks.saturating_mul(block))
        }
        FsType::Xfs => {
            let mut sb = [0u8; 16];
            f.read_exact_at(&mut sb, 0).ok()?;
            if &sb[0..4] != b"XFSB" {
                return None;
            }
            let block = u32::from_be_bytes([sb[4], sb[5], sb[6], sb[7]]);
            let mut d = [0u8; 8];
            d.copy_from_slice(&sb[8..16]);
            Some(u64::from_be_bytes(d).saturating_mul(u64::from(block)))
        }
        FsType::Btrfs => {
            let mut sb = [0u8; 0x78];
            f.read_exact_at(&mut sb, 0x10000).ok()?;
            if &sb[0x40..0x48] != b"_BHRfS_M" {
                return None;
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&sb[0x70..0x78]);
            Some(u64::from_le_bytes(t))
        }
    }
}

impl LoopDriver {
    fn reconcile_dir(
        &self,
        image_dir: &Path,
        records: &[VolumeRecord],
        snapshots: &[SnapshotRecord],
        table: &MountTable,
        notes: &mut Vec<String>,
    ) {
        let canon_dir =
            std::fs::canonicalize(image_dir).unwrap_or_else(|_| image_dir.to_path_buf());
        // Devices in use: the source of a mount of a Ready record.
        let in_use: Vec<PathBuf> = records
            .iter()
            .filter(|r| r.phase == Phase::Ready)
            .filter_map(|r| r.mounted.as_ref())
            .filter(|m| table.at(&m.target).is_some())
            .map(|m| m.device.clone())
            .collect();
        for (dev, backing) in loopdev::list_attached() {
            if !(backing.starts_with(&canon_dir) || backing.starts_with(image_dir)) {
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
        let owned: std::collections::HashSet<PathBuf> =
            records.iter().map(|r| self.image_of(r)).collect();
        let snap_owned: std::collections::HashSet<PathBuf> =
            snapshots.iter().map(|s| self.snap_image_of(s)).collect();
        if let Ok(entries) = std::fs::read_dir(image_dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let path = e.path();
                if name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX) {
                    match fsutil::remove_durable(&path) {
                        Ok(()) => notes.push(format!(
                            "removed {} left by an interrupted snapshot or clone",
                            path.display()
                        )),
                        Err(e) => notes.push(format!("could not remove {}: {e}", path.display())),
                    }
                } else if let Some(stem) = name.strip_suffix(".img") {
                    if !owned.contains(&path) {
                        notes.push(format!(
                            "image {} belongs to no volume; left in place (a create named {stem} adopts it)",
                            path.display()
                        ));
                    }
                } else if name.ends_with(".snap") && !snap_owned.contains(&path) {
                    notes.push(format!(
                        "snapshot image {} belongs to no snapshot record; left in place",
                        path.display()
                    ));
                }
            }
        }
    }
}
