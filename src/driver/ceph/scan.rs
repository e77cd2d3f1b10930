//! The full scan of a Ceph service's catalog: every image / subvolume
//! and the records in its metadata, one read per volume. The catalog
//! index ([`super::index`]) answers List and Get; the scan is what it is
//! built and repaired from, and what answers while it is not built yet.

use std::sync::Arc;

use super::{decode, scan, snapshots_in, Backend, META_KEY};
use crate::driver::DriverResult;
use crate::state::{SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{CephError, CephFs};

/// Reads the records kept in the metadata of the volumes themselves.
pub trait Scan: Send + Sync + std::fmt::Debug {
    /// Every volume's record (one read per volume).
    fn volumes(&self) -> DriverResult<Vec<VolumeRecord>>;
    /// The record of volume `name`; `None` when it does not exist or is
    /// not Berth's.
    fn volume(&self, name: &str) -> DriverResult<Option<VolumeRecord>>;
    /// Every snapshot's record (one read per volume).
    fn snapshots(&self) -> DriverResult<Vec<SnapshotRecord>>;
    /// The snapshot records kept on volume `name` (none when it is gone).
    fn snapshots_of(&self, name: &str) -> DriverResult<Vec<SnapshotRecord>>;
    /// Where the service's catalog index lives: pool and object name (in
    /// RADOS namespace [`super::index::NAMESPACE`]).
    fn place(&self) -> DriverResult<(String, String)>;
}

/// The images of an RBD pool.
#[derive(Debug)]
pub struct RbdScan {
    /// The cluster connection.
    pub b: Arc<Backend>,
    /// The pool.
    pub pool: String,
}

impl RbdScan {
    fn open(&self, what: &str) -> DriverResult<crate::sys::ceph::RbdPool> {
        let c = self.b.cluster(what)?;
        c.rbd(&self.pool)
            .map_err(|e| self.b.fail(what, "open RBD pool", e))
    }

    fn images(&self, pool: &crate::sys::ceph::RbdPool) -> DriverResult<Vec<String>> {
        pool.list()
            .map_err(|e| self.b.fail("(catalog)", "list images", e))
    }
}

fn one<T>(
    r: Result<Option<String>, CephError>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, CephError> {
    Ok(r?.and_then(|t| parse(&t)).into_iter().collect())
}

impl Scan for RbdScan {
    fn volumes(&self) -> DriverResult<Vec<VolumeRecord>> {
        let pool = self.open("(catalog)")?;
        let images = self.images(&pool)?;
        scan(&self.b, images, |img| {
            one(pool.meta_get(img, META_KEY), |t| {
                decode(&self.pool, &format!("image {img}"), t)
            })
        })
    }

    fn volume(&self, name: &str) -> DriverResult<Option<VolumeRecord>> {
        let pool = self.open(name)?;
        Ok(scan(&self.b, vec![name.to_string()], |img| {
            one(pool.meta_get(img, META_KEY), |t| {
                decode(&self.pool, &format!("image {img}"), t)
            })
        })?
        .pop())
    }

    fn snapshots(&self) -> DriverResult<Vec<SnapshotRecord>> {
        let pool = self.open("(catalog)")?;
        let images = self.images(&pool)?;
        scan(&self.b, images, |img| {
            Ok(snapshots_in(&self.pool, img, &pool.meta_list(img)?))
        })
    }

    fn snapshots_of(&self, name: &str) -> DriverResult<Vec<SnapshotRecord>> {
        let pool = self.open(name)?;
        scan(&self.b, vec![name.to_string()], |img| {
            Ok(snapshots_in(&self.pool, img, &pool.meta_list(img)?))
        })
    }

    /// Object `catalog` in the service's pool.
    fn place(&self) -> DriverResult<(String, String)> {
        Ok((self.pool.clone(), "catalog".into()))
    }
}

/// The subvolumes of a CephFS subvolume group.
#[derive(Debug)]
pub struct CephfsScan {
    /// The cluster connection.
    pub b: Arc<Backend>,
    /// The filesystem.
    pub fs: String,
    /// The subvolume group.
    pub group: String,
}

impl CephfsScan {
    fn open(&self, what: &str) -> DriverResult<CephFs> {
        Ok(CephFs::new(self.b.cluster(what)?, &self.fs, &self.group))
    }

    /// The group's subvolumes (none while the group does not exist).
    fn names(&self, fs: &CephFs) -> DriverResult<Vec<String>> {
        match fs.list() {
            Ok(n) => Ok(n),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(Vec::new()),
            Err(e) => Err(self.b.fail("(catalog)", "list subvolumes", e)),
        }
    }

    fn stored(&self, fs: &CephFs, n: &str) -> Result<Vec<VolumeRecord>, CephError> {
        one(fs.metadata_get(n, META_KEY), |t| {
            decode(&self.fs, &format!("subvolume {n}"), t)
        })
    }
}

impl Scan for CephfsScan {
    fn volumes(&self) -> DriverResult<Vec<VolumeRecord>> {
        let fs = self.open("(catalog)")?;
        scan(&self.b, self.names(&fs)?, |n| self.stored(&fs, n))
    }

    fn volume(&self, name: &str) -> DriverResult<Option<VolumeRecord>> {
        let fs = self.open(name)?;
        Ok(scan(&self.b, vec![name.to_string()], |n| self.stored(&fs, n))?.pop())
    }

    fn snapshots(&self) -> DriverResult<Vec<SnapshotRecord>> {
        let fs = self.open("(catalog)")?;
        scan(&self.b, self.names(&fs)?, |n| {
            Ok(snapshots_in(&self.fs, n, &fs.metadata_list(n)?))
        })
    }

    fn snapshots_of(&self, name: &str) -> DriverResult<Vec<SnapshotRecord>> {
        let fs = self.open(name)?;
        scan(&self.b, vec![name.to_string()], |n| {
            Ok(snapshots_in(&self.fs, n, &fs.metadata_list(n)?))
        })
    }

    /// Object `catalog.<group>` in the filesystem's metadata pool (where
    /// Ceph CSI keeps its omaps too).
    fn place(&self) -> DriverResult<(String, String)> {
        let fs = self.open("(catalog index)")?;
        let pool = fs
            .metadata_pool()
            .map_err(|e| self.b.fail("(catalog index)", "find the metadata pool", e))?;
        let group = if self.group.is_empty() {
            "_nogroup"
        } else {
            &self.group
        };
        Ok((pool, format!("catalog.{group}")))
    }
}
