//! Start-up reconciliation of records with the kernel, the one clean-up
//! of an interrupted create or remove, and the re-sync of a volume whose
//! storage work returned after its deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::{info, warn};

use super::lane::Op;
use super::snapshot::snap_state_err;
use super::{state_err, write, Entry, ServiceError, ServiceResult, VolumeService};
use crate::driver::{Driver, MountTable};
use crate::state::{MountRecord, Phase, RecordStore, SnapshotRecord, StateError, VolumeRecord};
use crate::volume::VolumeName;

/// Finishes an interrupted create (phase Creating: its storage goes,
/// unless adopted) or remove (phase Removing: unmount, remove the
/// storage), then deletes the record. The one place this is done: at
/// start-up, by a create of the same name, by a remove, and when late
/// work is reconciled.
pub(super) fn finish_interrupted(
    driver: &dyn Driver,
    store: &RecordStore,
    target: &Path,
    rec: &VolumeRecord,
) -> ServiceResult<()> {
    driver.unmount(rec, target)?;
    if !(rec.phase == Phase::Creating && rec.adopted()) {
        driver.remove(rec)?;
    }
    store.delete(&rec.name).map_err(state_err(&rec.name))
}

impl VolumeService {
    /// Loads the records and reconciles them with the kernel (the table
    /// in docs/architecture.md). Blocking: runs inside `open`.
    pub(super) fn reconcile(&self) -> Result<(), StateError> {
        let started = Instant::now();
        let (loaded, from) = self.load_records()?;
        *write(&self.loaded_from) = Some(from);
        self.count_formats(&loaded.formats);
        let (records, bad) = (loaded.records, loaded.bad);
        for b in bad {
            warn!(service = %self.name, path = %b.path.display(), reason = %b.reason,
                "state record unreadable; its volume is refused until the file is fixed or removed");
            if let Some(stem) = b.path.file_stem() {
                write(&self.damaged).insert(stem.to_string_lossy().into_owned(), b.reason);
            }
        }
        let table = MountTable::read()?;
        let mut ready = Vec::new();
        let mut repairs = 0usize;
        for rec in records {
            if rec.phase != Phase::Ready {
                self.clean_interrupted(&rec);
                repairs += 1;
                continue;
            }
            let (rec, repaired) = self.reconcile_one(rec, &table)?;
            repairs += usize::from(repaired);
            ready.push(rec);
        }
        self.sweep_mount_points(&super::startup::idle_names(&ready));
        let snaps = self.reconcile_snapshots(&mut repairs)?;
        let table = MountTable::read()?;
        for note in self.driver.reconcile(&ready, &snaps, &table) {
            warn!(service = %self.name, "{note}");
            repairs += 1;
        }
        {
            let mut sc = write(&self.snapshots);
            for rec in snaps {
                let allocated = self.driver.snapshot_allocated(&rec);
                sc.insert(
                    rec.name.clone(),
                    super::snapshot::SnapEntry::new(rec, allocated),
                );
            }
        }
        let mut cat = write(&self.catalog);
        for rec in ready {
            if let Err(owner) = self.ns.claim(rec.name.as_str(), &self.name) {
                warn!(service = %self.name, volume = %rec.name,
                    "volume name is also used by service {owner}; Docker can reach only one of them");
            }
            cat.insert(rec.name.clone(), Entry::new(rec));
        }
        info!(service = %self.name, volume_count = cat.len(), repairs, loaded_from = ?from,
            duration_ms = started.elapsed().as_millis() as u64, "state loaded and reconciled");
        Ok(())
    }

    /// Adds record files per format to what `berth status` shows.
    fn count_formats(&self, found: &BTreeMap<u32, usize>) {
        let mut formats = write(&self.formats);
        for (f, n) in found {
            *formats.entry(*f).or_insert(0) += n;
        }
    }

    fn clean_interrupted(&self, rec: &VolumeRecord) {
        let what = if rec.phase == Phase::Creating {
            "create"
        } else {
            "remove"
        };
        let target = self.target_of(&rec.name);
        match finish_interrupted(self.driver.as_ref(), &self.store, &target, rec) {
            Ok(()) => warn!(service = %self.name, volume = %rec.name,
                "an interrupted {what} was found; the volume's storage and record were removed"),
            Err(e) => warn!(service = %self.name, volume = %rec.name,
                "an interrupted {what} could not be cleaned up: {e}"),
        }
    }

    /// One Ready record against the mount table; `true` when repaired.
    fn reconcile_one(
        &self,
        mut rec: VolumeRecord,
        table: &MountTable,
    ) -> Result<(VolumeRecord, bool), StateError> {
        let target = self.target_of(&rec.name);
        let in_kernel = table.at(&target).map(|m| PathBuf::from(&m.source));
        let users = rec.mount_count();
        let mut repaired = true;
        match (users > 0, in_kernel) {
            (true, None) => {
                warn!(service = %self.name, volume = %rec.name, users,
                    "volume was in use but is not mounted (host rebooted or unmounted by hand); its mount counts are reset");
                rec.mounts.clear();
                rec.mounted = None;
                self.store.save(&rec)?;
            }
            (false, Some(_)) => {
                match self.driver.unmount(&rec, &target) {
                    Ok(()) => warn!(service = %self.name, volume = %rec.name,
                        "volume was mounted with no user (interrupted mount or unmount); unmounted it"),
                    Err(e) => warn!(service = %self.name, volume = %rec.name,
                        "volume is mounted with no user and could not be unmounted: {e}"),
                }
                rec.mounted = None;
                self.store.save(&rec)?;
            }
            (true, Some(device)) => {
                let fresh = MountRecord {
                    device,
                    target: target.clone(),
                };
                repaired = rec.mounted.as_ref() != Some(&fresh);
                if repaired {
                    rec.mounted = Some(fresh);
                    self.store.save(&rec)?;
                }
            }
            (false, None) => {
                repaired = false;
                if rec.mounted.is_some() {
                    rec.mounted = None;
                    self.store.save(&rec)?;
                }
            }
        }
        Ok((rec, repaired))
    }

    /// Brings the in-memory view of `name` in line with its record after
    /// storage work on it returned past its deadline: a Ready record is
    /// taken as it is, an absent one drops the volume, an interrupted
    /// create or remove is finished.
    pub(super) async fn resync(&self, name: &str) {
        let Ok(name) = VolumeName::parse(name) else {
            return; // a snapshot: its own record settles it at next start
        };
        let mut held = match self.lock_for(Op::Record, vec![self.vkey(&name)]).await {
            Ok(h) => h,
            Err(e) => {
                warn!(service = %self.name, volume = %name, "cannot reconcile yet: {e}");
                return;
            }
        };
        let (store, driver, target) = (
            self.store.clone(),
            self.driver.clone(),
            self.target_of(&name),
        );
        let n = name.clone();
        let loaded = self
            .run(Op::Record, &name, &mut held, move |_| {
                let rec = store.load(&n).map_err(state_err(&n))?;
                match rec {
                    Some(r) if r.phase != Phase::Ready => {
                        finish_interrupted(driver.as_ref(), &store, &target, &r)?;
                        Ok(None)
                    }
                    other => Ok(other),
                }
            })
            .await;
        match loaded {
            Ok(Some(rec)) => {
                info!(service = %self.name, volume = %name, users = rec.mount_count(),
                    "reconciled after late storage work");
                self.samples.forget(&name);
                self.put(rec);
            }
            Ok(None) => {
                if write(&self.catalog).remove(&name).is_some() {
                    self.ns.release(name.as_str(), &self.name);
                    self.invalidate();
                }
                info!(service = %self.name, volume = %name, "reconciled after late storage work: the volume is absent");
            }
            Err(e) => {
                warn!(service = %self.name, volume = %name, "reconciling after late storage work failed: {e}")
            }
        }
    }

    /// Start-up: finishes interrupted snapshot creates/removes (their
    /// storage and record go) and returns the Ready snapshots.
    pub(super) fn reconcile_snapshots(
        &self,
        repairs: &mut usize,
    ) -> Result<Vec<SnapshotRecord>, StateError> {
        let loaded = self.snap_store.load_counted()?;
        self.count_formats(&loaded.formats);
        let (records, bad) = (loaded.records, loaded.bad);
        for b in bad {
            warn!(service = %self.name, path = %b.path.display(), reason = %b.reason,
                "snapshot record unreadable; the snapshot is refused until the file is fixed or removed");
            if let Some(stem) = b.path.file_stem() {
                write(&self.damaged_snapshots)
                    .insert(stem.to_string_lossy().into_owned(), b.reason);
            }
        }
        let mut ready = Vec::new();
        for rec in records {
            if rec.phase == Phase::Ready {
                ready.push(rec);
                continue;
            }
            let what = if rec.phase == Phase::Creating {
                "snapshot"
            } else {
                "snapshot removal"
            };
            let done = self
                .driver
                .remove_snapshot(&rec)
                .map_err(ServiceError::from)
                .and_then(|_| {
                    self.snap_store
                        .delete(&rec.name)
                        .map_err(snap_state_err(&rec.name))
                });
            match done {
                Ok(()) => warn!(service = %self.name, snapshot = %rec.name,
                    "an interrupted {what} was found; its storage and record were removed"),
                Err(e) => warn!(service = %self.name, snapshot = %rec.name,
                    "an interrupted {what} could not be cleaned up: {e}"),
            }
            *repairs += 1;
        }
        Ok(ready)
    }
}
