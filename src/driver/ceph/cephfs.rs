//! The `cephfs` driver: a volume is a CephFS subvolume (the mgr
//! `volumes` interface Ceph CSI uses) in the service's subvolume group.
//!
//! Size is the subvolume's quota (writes past it fail with EDQUOT);
//! snapshots and clones go through the subvolume API. Volumes are
//! mounted with `ceph-fuse` rooted at the subvolume's path, on as many
//! hosts at once as want it (scope global, no locks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::index::Index;
use super::scan::CephfsScan;
use super::{encode, encode_snapshot, remove_dir_quietly, Backend, META_KEY, SNAP_META_PREFIX};
use crate::driver::{CreateHow, CreateSource, Driver, DriverError, DriverResult, Progress};
use crate::state::{CopyMethod, Facts, MountRecord, SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{self as sysceph, CephFs};
use crate::sys::{fsutil, mounts::MountTable};
use crate::volume::VolumeName;

/// How volumes are attached on this host (shown by inspect).
pub const ATTACH_METHOD: &str = "ceph-fuse";

/// The cephfs driver.
#[derive(Debug)]
pub struct CephfsDriver {
    b: Arc<Backend>,
    fs: String,
    group: String,
    /// The service's catalog index.
    index: Arc<Index>,
}

impl CephfsDriver {
    /// A driver for subvolumes of group `group` in filesystem `fs`.
    pub fn new(b: Backend, fs: String, group: String) -> Self {
        let b = Arc::new(b);
        b.warm_up();
        let index = Index::new(
            b.clone(),
            Arc::new(CephfsScan {
                b: b.clone(),
                fs: fs.clone(),
                group: group.clone(),
            }),
        );
        CephfsDriver {
            b,
            fs,
            group,
            index,
        }
    }

    fn subvolumes(&self, volume: &str) -> DriverResult<CephFs> {
        let c = self.b.cluster(volume)?;
        Ok(CephFs::new(c, &self.fs, &self.group))
    }

    /// Removes subvolume `name` (absent is fine), with what an
    /// interrupted clone from it left.
    fn remove_subvolume(&self, fs: &CephFs, name: &str) -> DriverResult<()> {
        let mut removed = fs.remove(name, false);
        if matches!(&removed, Err(e) if e.errno() == Some(libc::ENOTEMPTY))
            && self.remove_clone_leftovers(fs, name)
        {
            removed = fs.remove(name, false);
        }
        match removed {
            Ok(()) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
            Err(e) if e.errno() == Some(libc::ENOTEMPTY) => Err(DriverError::Conflict {
                volume: name.to_string(),
                reason: "its subvolume holds snapshots; remove them first (berth snapshot rm)"
                    .into(),
            }),
            Err(e) => Err(self.b.fail(name, "remove subvolume", e)),
        }
    }

    /// Waits for a clone to finish, reporting progress.
    fn wait_clone(&self, fs: &CephFs, name: &str, progress: Option<&Progress>) -> DriverResult<()> {
        let started = Instant::now();
        let limit = Duration::from_secs(3600);
        loop {
            let st = fs
                .clone_status(name)
                .map_err(|e| self.b.fail(name, "clone status", e))?;
            match st.state.as_str() {
                "complete" => {
                    if let Some(p) = progress {
                        let (_, total) = p.get();
                        p.set(total.max(1), total.max(1));
                    }
                    return Ok(());
                }
                "failed" | "canceled" => {
                    return Err(DriverError::Backend {
                        volume: name.to_string(),
                        step: "clone subvolume",
                        reason: format!("the clone ended {}", st.state),
                        errno: None,
                    })
                }
                _ => {}
            }
            if let (Some(p), Some(fraction)) = (progress, st.progress) {
                // Ceph reports a fraction; show it as per mille.
                p.set((fraction.clamp(0.0, 1.0) * 1000.0) as u64, 1000);
            }
            if started.elapsed() > limit {
                return Err(DriverError::Backend {
                    volume: name.to_string(),
                    step: "clone subvolume",
                    reason: format!("not done after {limit:?}"),
                    errno: None,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Removes the temporary snapshots (`berth-clone-*`) of clones from
    /// subvolume `name` that a crash interrupted: nothing else removes
    /// them, and the subvolume cannot go while they are there. One with a
    /// clone still pending is refused by Ceph and stays. Whether any went.
    fn remove_clone_leftovers(&self, fs: &CephFs, name: &str) -> bool {
        let Ok(snaps) = fs.snapshot_list(name) else {
            return false;
        };
        let mut any = false;
        for t in snaps.iter().filter(|s| s.starts_with("berth-clone-")) {
            match fs.snapshot_remove(name, t, false) {
                Ok(()) => {
                    any = true;
                    warn!(volume = %name, "removed temporary snapshot {t} left by an interrupted clone");
                }
                Err(e) => warn!(volume = %name, "could not remove temporary snapshot {t}: {e}"),
            }
        }
        any
    }

    /// Stores the record in the subvolume's metadata, then in the index.
    fn save_meta(&self, fs: &CephFs, rec: &VolumeRecord) -> DriverResult<()> {
        fs.metadata_set(rec.name.as_str(), META_KEY, &encode(rec))
            .map_err(|e| self.b.fail(rec.name.as_str(), "store volume metadata", e))?;
        self.index.put_volume(rec)
    }
}

impl Driver for CephfsDriver {
    fn kind(&self) -> &'static str {
        "cephfs"
    }

    fn free_space(&self, _pool: &str) -> Option<u64> {
        None
    }

    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow<'_>) -> DriverResult<()> {
        let name = rec.name.to_string();
        if how.fs_given {
            return Err(DriverError::Unsupported {
                driver: "cephfs",
                what: "fsType (a cephfs volume is a CephFS subvolume, not a filesystem of its own; leave fsType out)".into(),
            });
        }
        if how.overwrite_fs {
            return Err(DriverError::Unsupported {
                driver: "cephfs",
                what: "overwritefs".into(),
            });
        }
        let fs = self.subvolumes(&name)?;
        fs.ensure_group()
            .map_err(|e| self.b.fail(&name, "create subvolume group", e))?;
        if fs.getpath(&name).is_ok() {
            return Err(DriverError::Conflict {
                volume: name.clone(),
                reason: format!(
                    "a subvolume {name} already exists in group {} of filesystem {}",
                    self.group, self.fs
                ),
            });
        }
        let undo = |fs: &CephFs| {
            if let Err(e) = fs.remove(&name, true) {
                warn!(volume = %name, "rollback could not remove the subvolume: {e}");
            }
        };
        match how.source {
            None => {
                fs.create(&name, Some(rec.size), 0, 0, 0o755)
                    .map_err(|e| self.b.fail(&name, "create subvolume", e))?;
            }
            Some(CreateSource::Snapshot(s)) => {
                let src = s
                    .driver_data
                    .get("subvolume")
                    .cloned()
                    .unwrap_or_else(|| s.volume.to_string());
                fs.snapshot_clone(&src, s.name.as_str(), &name)
                    .map_err(|e| self.b.fail(&name, "clone subvolume", e))?;
                if let Err(e) = self.wait_clone(&fs, &name, how.progress) {
                    undo(&fs);
                    return Err(e);
                }
                rec.set_copy_method(CopyMethod::SubvolumeClone);
            }
            Some(CreateSource::Volume(v)) => {
                let src = v.name.as_str();
                let tmp = format!("berth-clone-{}", rec.id);
                fs.snapshot_create(src, &tmp)
                    .map_err(|e| self.b.fail(src, "snapshot for clone", e))?;
                let made = fs
                    .snapshot_clone(src, &tmp, &name)
                    .map_err(|e| self.b.fail(&name, "clone subvolume", e))
                    .and_then(|_| self.wait_clone(&fs, &name, how.progress));
                if let Err(e) = fs.snapshot_remove(src, &tmp, true) {
                    warn!(volume = %src, "could not remove temporary snapshot {tmp}: {e}");
                }
                if let Err(e) = made {
                    undo(&fs);
                    return Err(e);
                }
                rec.set_copy_method(CopyMethod::SubvolumeClone);
            }
        }
        if how.source.is_some() {
            // A clone has its source's quota; the record's size rules.
            if let Err(e) = fs.resize(&name, rec.size) {
                undo(&fs);
                return Err(self.b.fail(&name, "set quota", e));
            }
        }
        rec.driver_data.insert("filesystem".into(), self.fs.clone());
        rec.driver_data.insert("group".into(), self.group.clone());
        if let Err(e) = self.save_meta(&fs, rec) {
            undo(&fs);
            return Err(e);
        }
        Ok(())
    }

    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        let fs = self.subvolumes(name)?;
        super::remove_unindexed(&self.index, rec, || self.remove_subvolume(&fs, name))
    }

    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        let name = rec.name.as_str();
        let table =
            MountTable::read().map_err(|e| DriverError::sys(&rec.name, "read mount table", e))?;
        if let Some(m) = table.at(target) {
            if m.fs_type.starts_with("fuse.ceph") {
                return Ok(MountRecord {
                    device: PathBuf::from(&m.source),
                    target: target.to_path_buf(),
                });
            }
            return Err(DriverError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "{} is already a mount point of {} ({}), not of this volume",
                    target.display(),
                    m.source,
                    m.fs_type
                ),
            });
        }
        let fs = self.subvolumes(name)?;
        let path = fs
            .getpath(name)
            .map_err(|e| self.b.fail(name, "find subvolume path", e))?;
        fsutil::ensure_dir(target, 0o755)
            .map_err(|e| DriverError::sys(&rec.name, "create mount point", e))?;
        if let Err(e) = sysceph::ceph_fuse_mount(self.b.config(), &self.fs, &path, target) {
            remove_dir_quietly(target);
            return Err(self.b.fail(name, "mount with ceph-fuse", e));
        }
        Ok(MountRecord {
            device: PathBuf::from(format!("ceph-fuse:{}:{path}", self.fs)),
            target: target.to_path_buf(),
        })
    }

    fn unmount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<()> {
        sysceph::ceph_fuse_detach(target, self.b.config().timeout)
            .map_err(|e| self.b.fail(rec.name.as_str(), "unmount ceph-fuse", e))?;
        remove_dir_quietly(target);
        Ok(())
    }

    fn allocated(&self, _rec: &VolumeRecord) -> u64 {
        0
    }

    fn reconcile(
        &self,
        _records: &[VolumeRecord],
        _snapshots: &[SnapshotRecord],
        _table: &MountTable,
    ) -> Vec<String> {
        // ceph-fuse mounts sit at the volumes' own mount points, which
        // the service reconciles.
        Vec::new()
    }

    fn shared_catalog(&self) -> bool {
        true
    }

    fn catalog_list(&self) -> DriverResult<Vec<VolumeRecord>> {
        self.index.volumes()
    }

    fn catalog_version(&self) -> DriverResult<Option<u64>> {
        self.index.built_version()
    }

    fn catalog_get(&self, name: &VolumeName) -> DriverResult<Option<VolumeRecord>> {
        self.index.volume(name.as_str())
    }

    fn snapshot_catalog_list(&self) -> DriverResult<Vec<SnapshotRecord>> {
        self.index.snapshots()
    }

    fn health(&self) -> Option<String> {
        self.b.problem()
    }

    fn fs_label(&self, _rec: &VolumeRecord) -> String {
        "cephfs".into()
    }

    fn inspect_fields(&self, _rec: &VolumeRecord) -> BTreeMap<String, String> {
        [
            ("attachMethod".to_string(), ATTACH_METHOD.to_string()),
            ("cephFilesystem".to_string(), self.fs.clone()),
            ("subvolumeGroup".to_string(), self.group.clone()),
        ]
        .into()
    }

    fn snapshot(
        &self,
        rec: &VolumeRecord,
        snap: &mut SnapshotRecord,
        progress: &Progress,
    ) -> DriverResult<()> {
        let fs = self.subvolumes(rec.name.as_str())?;
        fs.snapshot_create(rec.name.as_str(), snap.name.as_str())
            .map_err(|e| {
                self.b
                    .fail(snap.name.as_str(), "create subvolume snapshot", e)
            })?;
        snap.driver_data
            .insert("subvolume".into(), rec.name.to_string());
        let key = format!("{SNAP_META_PREFIX}{}", snap.name);
        if let Err(e) = fs.metadata_set(rec.name.as_str(), &key, &encode_snapshot(snap)) {
            let _ = fs.snapshot_remove(rec.name.as_str(), snap.name.as_str(), true);
            return Err(self
                .b
                .fail(snap.name.as_str(), "store snapshot metadata", e));
        }
        super::unindex(
            &self.index.put_snapshot(snap),
            &self.index,
            snap.name.as_str(),
        );
        progress.set(rec.size, rec.size);
        Ok(())
    }

    fn remove_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let sub = snap
            .driver_data
            .get("subvolume")
            .cloned()
            .unwrap_or_else(|| snap.volume.to_string());
        let fs = self.subvolumes(snap.name.as_str())?;
        let name = snap.name.as_str();
        super::gone_ok(fs.snapshot_remove(&sub, name, false))
            .map_err(|e| self.b.fail(name, "remove subvolume snapshot", e))?;
        super::gone_ok(fs.metadata_remove(&sub, &format!("{SNAP_META_PREFIX}{name}")))
            .map_err(|e| self.b.fail(name, "remove snapshot metadata", e))?;
        super::unindex(&self.index.drop_snapshot(snap), &self.index, name);
        Ok(())
    }

    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        // A quota change: online, on every host at once.
        let fs = self.subvolumes(rec.name.as_str())?;
        fs.resize(rec.name.as_str(), new_size)
            .map_err(|e| self.b.fail(rec.name.as_str(), "grow quota", e))?;
        let mut updated = rec.clone();
        updated.size = new_size;
        self.save_meta(&fs, &updated)
    }
}
