//! The storage driver boundary.
//!
//! A [`Driver`] turns volume records into real storage: it creates and
//! removes the backing store, attaches and mounts it, and cleans up what it
//! owns at start-up. Drivers are synchronous: the service calls them on
//! blocking threads. Every method that changes the system either completes
//! or leaves the system as it was (rollback), and removal/unmount are
//! idempotent, so the service can retry them after a crash.
//!
//! What the service owns (and drivers never see): names, locks, mount-ID
//! counts, policy (implicit create, remove.disable, …) and the records.
//! Optional features (snapshots, clones, resize) have default methods that
//! refuse with [`DriverError::Unsupported`].

#[cfg(feature = "ceph")]
pub mod ceph;
pub mod fsops;
pub mod hold;
mod loop_import;
pub mod loopdrv;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::{MountRecord, SnapshotRecord, VolumeRecord};
use crate::sys::{blockfs, fsutil, SysError};

pub use crate::sys::mounts::MountTable;
pub use hold::{LostTo, TakeOver};

/// The driver of service `name`, built from its settings: the one place
/// drivers are made.
pub fn make(settings: &crate::config::Settings, name: &str) -> std::sync::Arc<dyn Driver> {
    use crate::config::DriverSettings;
    let svc = &settings.services[name];
    match &svc.driver {
        DriverSettings::Loop { image_dir, pools } => std::sync::Arc::new(
            loopdrv::LoopDriver::new(image_dir.clone(), settings.daemon.command_timeout)
                .with_pools(pools.clone()),
        ),
        #[cfg(feature = "ceph")]
        DriverSettings::Cephfs { .. } | DriverSettings::Rbd { .. } => ceph::make(settings, name),
        #[cfg(not(feature = "ceph"))]
        DriverSettings::Cephfs { .. } | DriverSettings::Rbd { .. } => {
            unreachable!("daemon::run refuses Ceph services in builds without the ceph feature")
        }
    }
}

/// Makes the directory volumes are mounted under (the service's mount
/// points live there).
pub fn ensure_mount_dir(dir: &Path) -> Result<(), SysError> {
    fsutil::ensure_dir(dir, 0o755)
}
use crate::volume::VolumeName;

/// Errors raised by drivers. Messages name the volume and the step.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// An OS-level step failed.
    #[error("volume {volume}: {step}: {source}")]
    Sys {
        /// Volume name.
        volume: String,
        /// What was being done.
        step: &'static str,
        /// The OS error.
        source: SysError,
    },
    /// The driver does not do this.
    #[error("the {driver} driver does not support {what}")]
    Unsupported {
        /// Driver kind.
        driver: &'static str,
        /// The feature or option.
        what: String,
    },
    /// The request conflicts with what is on disk.
    #[error("volume {volume}: {reason}")]
    Conflict {
        /// Volume name.
        volume: String,
        /// Why.
        reason: String,
    },
    /// The storage backend (a cluster) refused or failed a step.
    #[error("volume {volume}: {step}: {reason}")]
    Backend {
        /// Volume (or snapshot) name.
        volume: String,
        /// What was being done.
        step: &'static str,
        /// The backend's message.
        reason: String,
        /// The errno the backend returned, when there is one.
        errno: Option<i32>,
    },
    /// A step failed and undoing the earlier steps failed too.
    #[error("{cause}; rolling back also failed: {rollback}")]
    Rollback {
        /// The first failure.
        cause: Box<DriverError>,
        /// The rollback failure: an OS step, a backend step, anything a
        /// driver undoes.
        rollback: Box<DriverError>,
    },
}

impl DriverError {
    /// Wraps a [`SysError`] for `volume` at `step`.
    pub fn sys(volume: &impl std::fmt::Display, step: &'static str, source: SysError) -> Self {
        DriverError::Sys {
            volume: volume.to_string(),
            step,
            source,
        }
    }

    /// `self` (the failure that made the caller undo its earlier steps)
    /// with the outcome of that undo: unchanged when the undo worked,
    /// else a [`DriverError::Rollback`] carrying both, the failed undo
    /// logged at WARN. An undo failure is never dropped.
    pub fn undone(self, undo: DriverResult<()>) -> DriverError {
        match undo {
            Ok(()) => self,
            Err(rollback) => {
                tracing::warn!("rolling back after \"{self}\" failed: {rollback}");
                DriverError::Rollback {
                    cause: Box::new(self),
                    rollback: Box::new(rollback),
                }
            }
        }
    }

    /// The error of a failed [`blockfs::attach_and_mount`] of `volume`,
    /// with the failed detach, if any, as the rollback failure.
    pub fn mount_failed(volume: &impl std::fmt::Display, e: blockfs::MountError) -> Self {
        let undo = match e.rollback {
            Some(rb) => Err(DriverError::sys(volume, "detach loop device", *rb)),
            None => Ok(()),
        };
        DriverError::sys(volume, e.step.as_str(), e.source).undone(undo)
    }

    /// The error of a failed [`blockfs::frozen_copy`] whose copy is of
    /// (or for) `who`: a failed thaw, with the failed undo of the copy as
    /// the rollback failure, if the undo failed.
    pub fn frozen_copy_failed(
        who: &impl std::fmt::Display,
        e: blockfs::CopyError<DriverError>,
    ) -> Self {
        match e {
            blockfs::CopyError::Freeze(e) => {
                DriverError::sys(who, "freeze the source filesystem", e)
            }
            blockfs::CopyError::Copy(e) => e,
            blockfs::CopyError::Thaw { source, undo } => {
                DriverError::sys(who, "thaw the source filesystem", source)
                    .undone(undo.map_or(Ok(()), Err))
            }
        }
    }

    /// The errno at the bottom, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DriverError::Sys { source, .. } => source.errno(),
            DriverError::Rollback { cause, .. } => cause.errno(),
            DriverError::Backend { errno, .. } => *errno,
            _ => None,
        }
    }
}

/// Result alias for drivers.
pub type DriverResult<T> = Result<T, DriverError>;

/// The pool every driver has: the service's own storage location.
pub const DEFAULT_POOL: &str = "default";

/// Where a new volume's content comes from.
#[derive(Debug, Clone, Copy)]
pub enum CreateSource<'a> {
    /// A copy of this volume, crash-consistent even while it is mounted
    /// and written to.
    Volume(&'a VolumeRecord),
    /// A copy of this snapshot.
    Snapshot(&'a SnapshotRecord),
}

/// How to create a volume, beyond what the record says.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateHow<'a> {
    /// Reformat even if a filesystem is already there.
    pub overwrite_fs: bool,
    /// The filesystem was asked for (`fsType`), not a default.
    pub fs_given: bool,
    /// Content to start from (a clone); `None`: a new filesystem.
    pub source: Option<CreateSource<'a>>,
    /// Where a long copy reports how far it got.
    pub progress: Option<&'a Progress>,
}

/// Progress of a long copy: bytes done of bytes to do. Shared between the
/// blocking thread doing the work and whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    /// Sets both figures.
    pub fn set(&self, done: u64, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
    }

    /// `(done, total)` bytes.
    pub fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}

/// How to mount, beyond what the record says.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountHow {
    /// `volume.mount.preempt`: take over a volume another host holds
    /// (and fence that host) instead of refusing.
    pub preempt: bool,
}

/// Space figures for inspect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes used inside the filesystem (mounted) or allocated by the
    /// backing store (not mounted).
    pub used: u64,
    /// Bytes free inside the filesystem (`None` when not mounted).
    pub free: Option<u64>,
}

/// A storage backend.
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// The driver's config name ("loop").
    fn kind(&self) -> &'static str;

    /// Moves the filesystem image file `from`, untouched, to where a
    /// create of volume `name` (default pool) adopts it
    /// (`berth volume import`).
    fn place_image(&self, name: &VolumeName, from: &Path) -> DriverResult<()> {
        let _ = (name, from);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "importing an image file".into(),
        })
    }

    /// Storage pools a volume can be created in (the `volumeType`
    /// option), [`DEFAULT_POOL`] first.
    fn pools(&self) -> Vec<String> {
        vec![DEFAULT_POOL.to_string()]
    }

    /// Bytes available for new volumes in `pool` (`None`: unknown /
    /// unlimited).
    fn free_space(&self, pool: &str) -> Option<u64>;

    /// Creates the backing store for `rec` (in pool `rec.volume_type`) and
    /// records what the driver needs in `rec.driver_data`. May adjust
    /// `rec.fs_type`/`rec.size` when it adopts existing storage or copies
    /// a source. On error nothing is left behind.
    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow<'_>) -> DriverResult<()>;

    /// Whether backing storage for `rec` exists before it is created (an
    /// image an operator put in place, to be adopted). The service records
    /// this in the intent record, so a crash during the create never
    /// deletes storage Berth did not make.
    fn storage_exists(&self, _rec: &VolumeRecord) -> bool {
        false
    }

    /// Deletes the backing store. Absent is fine.
    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()>;

    /// Attaches and mounts the volume's filesystem root on `target`.
    /// On error nothing stays attached or mounted.
    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord>;

    /// [`Driver::mount`] with mount options. Drivers of shared storage
    /// (where another host may hold the volume) implement this one. It
    /// may update `rec` with what the mount learnt of the storage (an
    /// adopted image's filesystem and size); the caller keeps `rec`.
    fn mount_with(
        &self,
        rec: &mut VolumeRecord,
        target: &Path,
        how: &MountHow,
    ) -> DriverResult<MountRecord> {
        let _ = how;
        self.mount(rec, target)
    }

    /// Whether the volume catalog lives in shared storage (every host
    /// sees the same volumes). The service then asks
    /// [`Driver::catalog_list`]/[`Driver::catalog_get`] for volumes it
    /// has no record of; its own records keep host-local mount state.
    fn shared_catalog(&self) -> bool {
        false
    }

    /// Every volume in the shared catalog, as records without host-local
    /// state (no mounts).
    fn catalog_list(&self) -> DriverResult<Vec<VolumeRecord>> {
        Ok(Vec::new())
    }

    /// A version of the shared catalog that changes whenever a volume
    /// or snapshot is added to it or removed from it, read without
    /// listing it: while it stays the same, a listing would give what the
    /// last one gave. `None`: no such version (every refresh lists).
    fn catalog_version(&self) -> DriverResult<Option<u64>> {
        Ok(None)
    }

    /// One volume of the shared catalog; `None` when it does not exist.
    fn catalog_get(&self, name: &VolumeName) -> DriverResult<Option<VolumeRecord>> {
        let _ = name;
        Ok(None)
    }

    /// Every snapshot in the shared catalog (drivers with
    /// [`Driver::shared_catalog`]), as records in phase Ready.
    fn snapshot_catalog_list(&self) -> DriverResult<Vec<SnapshotRecord>> {
        Ok(Vec::new())
    }

    /// Why the backend cannot serve right now (an unreachable cluster),
    /// for `STATUS=` and `berth status`; `None` when it can.
    fn health(&self) -> Option<String> {
        None
    }

    /// Whether this host still holds mounted volume `rec` (drivers of
    /// storage another host can take over): `Some` once it lost it. A
    /// driver that finds it lost cuts this host's access at once (stops
    /// its client, so nothing written here later can land). May block as
    /// long as the backend does: the service calls it from its sampler
    /// only, never on a request.
    fn check_hold(&self, rec: &VolumeRecord) -> DriverResult<Option<TakeOver>> {
        let _ = rec;
        Ok(None)
    }

    /// Filesystem shown by inspect (`fsType`).
    fn fs_label(&self, rec: &VolumeRecord) -> String {
        rec.fs_type.as_str().to_string()
    }

    /// Extra inspect fields (how volumes are attached on this host, …).
    fn inspect_fields(&self, rec: &VolumeRecord) -> BTreeMap<String, String> {
        let _ = rec;
        BTreeMap::new()
    }

    /// Unmounts `target` and detaches. Not mounted is fine.
    fn unmount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()>;

    /// Space used by an unmounted volume's backing store.
    fn allocated(&self, rec: &VolumeRecord) -> u64;

    /// Used/free figures: of the filesystem mounted at `target`, or of
    /// the backing store when not mounted. May block as long as the
    /// backend does: the service calls it from its sampler only.
    fn usage(&self, rec: &VolumeRecord, target: Option<&Path>) -> DriverResult<Usage> {
        match target {
            Some(t) => {
                crate::step::enter(format!("statvfs {}", t.display()));
                let s = fsutil::space(t).map_err(|e| DriverError::sys(&rec.name, "statvfs", e))?;
                // An unmount may have taken the mount away (one whose
                // flush hangs is already gone from the table): the
                // figures would be those of the directory below.
                let table = MountTable::read()
                    .map_err(|e| DriverError::sys(&rec.name, "read mount table", e))?;
                if table.at(t).is_none() {
                    return Err(DriverError::Conflict {
                        volume: rec.name.to_string(),
                        reason: format!("nothing is mounted at {}", t.display()),
                    });
                }
                Ok(Usage {
                    used: s.used,
                    free: Some(s.available),
                })
            }
            None => Ok(Usage {
                used: self.allocated(rec),
                free: None,
            }),
        }
    }

    /// Start-up clean-up of driver-level leftovers (e.g. loop devices on
    /// this service's images that no mount uses). Returns one line per
    /// repair, for the log.
    fn reconcile(
        &self,
        records: &[VolumeRecord],
        snapshots: &[SnapshotRecord],
        table: &MountTable,
    ) -> Vec<String>;

    /// Takes a crash-consistent point-in-time copy of `rec` (mounted or
    /// not; the service guarantees no mount or unmount runs meanwhile),
    /// recording what it needs in `snap.driver_data`. On error nothing is
    /// left behind.
    fn snapshot(
        &self,
        rec: &VolumeRecord,
        snap: &mut SnapshotRecord,
        progress: &Progress,
    ) -> DriverResult<()> {
        let _ = (rec, snap, progress);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "snapshots".into(),
        })
    }

    /// Deletes a snapshot's storage. Absent is fine.
    fn remove_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let _ = snap;
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "snapshots".into(),
        })
    }

    /// Space a snapshot takes (0 when unknown or shared).
    fn snapshot_allocated(&self, snap: &SnapshotRecord) -> u64 {
        let _ = snap;
        0
    }

    /// Grows the volume to `new_size` bytes: storage, then the
    /// filesystem, online when `rec.mounted` is set (if the kernel allows
    /// it). Shrinking is refused. On error the volume is left usable at
    /// its old size.
    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        let _ = (rec, new_size);
        Err(DriverError::Unsupported {
            driver: self.kind(),
            what: "resizing volumes".into(),
        })
    }
}

/// Creates the data directory Docker sees (`<target><root_path>`) with the
/// volume's owner and mode, if it is not there yet (or sets them on the
/// existing one when `rec.owner_pending`), and returns its path.
pub fn prepare_data_dir(
    rec: &VolumeRecord,
    target: &Path,
    root_path: &str,
) -> DriverResult<PathBuf> {
    let dir = data_path(target, root_path);
    if dir == target {
        if rec.owner_pending {
            fsutil::set_owner_mode(&dir, rec.mode, rec.uid, rec.gid)
                .map_err(|e| DriverError::sys(&rec.name, "set owner of data directory", e))?;
        }
        return Ok(dir);
    }
    let created = fsutil::ensure_owned_dir(&dir, rec.mode, rec.uid, rec.gid)
        .map_err(|e| DriverError::sys(&rec.name, "prepare data directory", e))?;
    if rec.owner_pending && !created {
        fsutil::set_owner_mode(&dir, rec.mode, rec.uid, rec.gid)
            .map_err(|e| DriverError::sys(&rec.name, "set owner of data directory", e))?;
    }
    Ok(dir)
}

/// A mount of `backing` (through a loop device) already at `target` (a
/// mount that outlived its record, e.g. after a crash in the middle of
/// Mount): its record, to use it. `None` when nothing is mounted there; an
/// error when something else is.
pub fn existing_loop_mount(
    rec: &VolumeRecord,
    target: &Path,
    backing: &Path,
) -> DriverResult<Option<MountRecord>> {
    let table =
        MountTable::read().map_err(|e| DriverError::sys(&rec.name, "read mount table", e))?;
    let Some(m) = table.at(target) else {
        return Ok(None);
    };
    let devs = crate::sys::loopdev::find_by_backing_file(backing);
    if let Some(dev) = devs.iter().find(|d| d.to_string_lossy() == m.source) {
        return Ok(Some(MountRecord {
            device: dev.clone(),
            target: target.to_path_buf(),
        }));
    }
    Err(DriverError::Conflict {
        volume: rec.name.to_string(),
        reason: format!(
            "{} is already a mount point of {} ({}), not of this volume",
            target.display(),
            m.source,
            m.fs_type
        ),
    })
}

/// `<target><root_path>` (`/` means the filesystem root itself).
pub fn data_path(target: &Path, root_path: &str) -> PathBuf {
    let sub = root_path.trim_start_matches('/');
    if sub.is_empty() {
        target.to_path_buf()
    } else {
        target.join(sub)
    }
}

#[cfg(test)]
pub mod fake;
