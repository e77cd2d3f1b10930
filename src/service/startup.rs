//! Start-up without reading every record: the state index (see
//! `state::index`), the Get answered from one record while the rest
//! loads, and the one sweep of leftover mount points.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::lane::{Held, Op};
use super::{read, state_err, Entry, ServiceResult, VolumeService, VolumeView};
use crate::driver::MountTable;
use crate::state::{IndexUnused, Loaded, Phase, StateError, VolumeRecord, RECORD_VERSION};
use crate::volume::VolumeName;

/// Where the volume records of a start came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadedFrom {
    /// The state index (and the records it lists to re-read).
    Index,
    /// Every record file.
    Records,
}

impl VolumeService {
    /// The volume records: from the index when it is valid, else every
    /// record file (saying once why the index was not used).
    pub(super) fn load_records(&self) -> Result<(Loaded<VolumeRecord>, LoadedFrom), StateError> {
        if self.shared {
            // Volumes of a shared catalog come from the cluster; the
            // records here are few (host-local mount state).
            return Ok((self.store.load_counted()?, LoadedFrom::Records));
        }
        match self.store.read_index() {
            Ok(idx) => {
                let mut loaded = self.store.load_named(&idx.reread);
                let from_index = idx.records.len();
                *loaded.formats.entry(RECORD_VERSION).or_insert(0) += from_index;
                loaded.records.extend(idx.records);
                loaded.records.sort_by(|a, b| a.name.cmp(&b.name));
                info!(service = %self.name, from_index, reread = idx.reread.len(),
                    index = %self.store.index_path().display(), "volume records loaded from the state index");
                Ok((loaded, LoadedFrom::Index))
            }
            Err(why) => {
                match &why {
                    IndexUnused::Missing(_) => {
                        info!(service = %self.name, "{why}; reading every record")
                    }
                    _ => {
                        warn!(service = %self.name, "state index ignored: {why}; reading every record")
                    }
                }
                Ok((self.store.load_counted()?, LoadedFrom::Records))
            }
        }
    }

    /// Where this start took its volume records from (`None` before
    /// the state is loaded).
    pub fn loaded_from(&self) -> Option<LoadedFrom> {
        *read(&self.loaded_from)
    }

    /// Whether the state is loaded and reconciled.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Writes the state index from the volumes in memory (at a clean
    /// stop). Nothing for shared catalogs or before the state is loaded.
    /// Blocking.
    pub fn save_index(&self) {
        if self.shared || !self.is_loaded() {
            return;
        }
        let started = std::time::Instant::now();
        let records: Vec<VolumeRecord> = read(&self.catalog)
            .values()
            .map(|e| e.rec.clone())
            .collect();
        match self.store.write_index(records.iter()) {
            Ok(w) => info!(service = %self.name, records = w.records, reread = w.reread,
                duration_ms = started.elapsed().as_millis() as u64,
                index = %self.store.index_path().display(), "state index written"),
            Err(e) => {
                warn!(service = %self.name, "state index not written (the next start reads every record): {e}");
                let _ = self.store.remove_index();
            }
        }
    }

    /// Removes empty mount points of this service's volumes that have no
    /// user (left by a kill inside Mount or Unmount): one listing of the
    /// mount directory, a removal only for what is there.
    pub(super) fn sweep_mount_points(&self, idle: &BTreeSet<VolumeName>) {
        let Ok(entries) = std::fs::read_dir(&self.mount_dir) else {
            return;
        };
        for e in entries.flatten() {
            let Ok(name) = VolumeName::parse(&e.file_name().to_string_lossy()) else {
                continue;
            };
            if idle.contains(&name) {
                // remove_dir refuses non-empty or mounted directories.
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }

    /// `VolumeDriver.Get` while the state is still loading: the one
    /// record of `name`, read now, shown as reconciliation will show it
    /// (mounted only when it has users and the kernel has it mounted).
    /// `None`: wait for the state (a shared catalog, or loaded already).
    pub async fn get_early(&self, name: &str) -> Option<ServiceResult<VolumeView>> {
        if self.shared || self.is_loaded() {
            return None;
        }
        let name = match VolumeName::parse(name) {
            Ok(n) => n,
            Err(e) => return Some(Err(e.into())),
        };
        let (store, target) = (self.store.clone(), self.target_of(&name));
        let n = name.clone();
        let found = self
            .run(Op::Record, &name, &mut Held::default(), move |_| {
                let rec = store.load(&n).map_err(state_err(&n))?;
                let Some(mut rec) = rec.filter(|r| r.phase == Phase::Ready) else {
                    return Ok(None);
                };
                let mounted = rec.mount_count() > 0
                    && MountTable::read().is_ok_and(|t| t.at(&target).is_some());
                if !mounted {
                    rec.mounts.clear();
                    rec.mounted = None;
                }
                Ok(Some(rec))
            })
            .await;
        Some(match found {
            Ok(Some(rec)) => Ok(self.view_of(&Entry::new(rec))),
            Ok(None) => Err(self.missing(&name)),
            // An unreadable record: refused, as after loading.
            Err(e) => Err(e),
        })
    }
}

/// The mount points of idle volumes, for [`VolumeService::sweep_mount_points`].
pub(super) fn idle_names(ready: &[VolumeRecord]) -> BTreeSet<VolumeName> {
    ready
        .iter()
        .filter(|r| r.mount_count() == 0)
        .map(|r| r.name.clone())
        .collect()
}
