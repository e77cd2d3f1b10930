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

pub mod loopdrv;

use std::path::{Path, PathBuf};

use crate::state::{MountRecord, VolumeRecord};
use crate::sys::{fsutil, mounts::MountTable, SysError};

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
    /// A step failed and undoing the earlier steps failed too.
    #[error("{cause}; rolling back also failed: {rollback}")]
    Rollback {
        /// The first failure.
        cause: Box<DriverError>,
        /// The rollback failure.
        rollback: SysError,
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

    /// The errno at the bottom, when there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DriverError::Sys { source, .. } => source.errno(),
            DriverError::Rollback { cause, .. } => cause.errno(),
            _ => None,
        }
    }
}

/// Result alias for drivers.
pub type DriverResult<T> = Result<T, DriverError>;

/// How to create a volume, beyond what the record says.
#[derive(Debug, Clone, Default)]
pub struct CreateHow {
    /// Reformat even if a filesystem is already there.
    pub overwrite_fs: bool,
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

    /// Bytes available for new volumes (`None`: unknown / unlimited).
    fn free_space(&self) -> Option<u64>;

    /// Creates the backing store for `rec` and records what the driver
    /// needs in `rec.driver_data`. May adjust `rec.fs_type`/`rec.size`
    /// when it adopts existing storage. On error nothing is left behind.
    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow) -> DriverResult<()>;

    /// Deletes the backing store. Absent is fine.
    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()>;

    /// Attaches and mounts the volume's filesystem root on `target`.
    /// On error nothing stays attached or mounted.
    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord>;

    /// Unmounts `target` and detaches. Not mounted is fine.
    fn unmount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()>;

    /// Space used by an unmounted volume's backing store.
    fn allocated(&self, rec: &VolumeRecord) -> u64;

    /// Start-up clean-up of driver-level leftovers (e.g. loop devices on
    /// this service's images that no mount uses). Returns one line per
    /// repair, for the log.
    fn reconcile(&self, records: &[VolumeRecord], table: &MountTable) -> Vec<String>;
}

/// Creates the data directory Docker sees (`<target><root_path>`) with the
/// volume's owner and mode, if it is not there yet, and returns its path.
pub fn prepare_data_dir(
    rec: &VolumeRecord,
    target: &Path,
    root_path: &str,
) -> DriverResult<PathBuf> {
    let dir = data_path(target, root_path);
    if dir == target {
        return Ok(dir);
    }
    fsutil::ensure_owned_dir(&dir, rec.mode, rec.uid, rec.gid)
        .map_err(|e| DriverError::sys(&rec.name, "prepare data directory", e))?;
    Ok(dir)
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
