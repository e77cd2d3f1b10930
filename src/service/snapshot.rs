//! Snapshots, resize and the progress of long operations.
//!
//! A snapshot is a point-in-time copy of a volume, kept by the driver and
//! described by a durable record (`<records_dir>/snapshots/<name>.json`)
//! with the same Creating → Ready → Removing lifecycle as a volume. Taking
//! one holds the source volume's lock, so no mount, unmount or remove of
//! that volume runs meanwhile. Snapshots are independent of their source:
//! removing the volume keeps them, and volumes created from a snapshot are
//! independent of it (see docs/snapshots.md).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::lane::{Held, Op};
use super::{new_id, read, write, ServiceError, ServiceResult, VolumeService};
use crate::driver::{Progress, DEFAULT_POOL};
use crate::state::{CopyMethod, Facts, Phase, SnapshotRecord, StateError, RECORD_VERSION};
use crate::volume::{human_bytes, NameError, VolumeName, MAX_NAME_LEN};

/// A snapshot in the catalog.
pub(super) struct SnapEntry {
    pub(super) rec: SnapshotRecord,
    pub(super) allocated: u64,
    /// When this host made or learnt of it (see the volumes' `Entry`).
    pub(super) since: Instant,
}

impl SnapEntry {
    pub(super) fn new(rec: SnapshotRecord, allocated: u64) -> Self {
        SnapEntry {
            rec,
            allocated,
            since: Instant::now(),
        }
    }
}

/// A long operation in flight.
pub(super) struct OpEntry {
    kind: &'static str,
    target: String,
    source: String,
    started: Instant,
    progress: Arc<Progress>,
}

/// A snapshot as the API shows it.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    /// The record.
    pub record: SnapshotRecord,
    /// Bytes its storage takes (shared extents count in full).
    pub allocated: u64,
    /// Whether the volume it was taken from still exists.
    pub source_exists: bool,
}

/// A long operation as `/Berth.Progress` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationView {
    /// Operation ID.
    pub id: u64,
    /// "snapshot", "clone" or "resize".
    pub kind: String,
    /// What is being made (snapshot or volume name).
    pub target: String,
    /// What it is made from.
    pub source: String,
    /// Bytes done.
    pub done: u64,
    /// Bytes to do (0: not known yet).
    pub total: u64,
    /// Time since it started.
    pub elapsed: Duration,
}

impl OperationView {
    /// One line for `STATUS=` and logs.
    pub fn line(&self) -> String {
        let pct = match self.done.saturating_mul(100).checked_div(self.total) {
            Some(p) => format!("{p}% of {}", human_bytes(self.total)),
            None => "starting".to_string(),
        };
        format!("{} {} from {}: {pct}", self.kind, self.target, self.source)
    }
}

/// Removes its operation from the table when dropped, and stops the
/// status ticker.
pub(super) struct OpGuard<'a> {
    svc: &'a VolumeService,
    id: u64,
    progress: Arc<Progress>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl OpGuard<'_> {
    pub(super) fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if let Ok(mut ops) = self.svc.ops.lock() {
            ops.remove(&self.id);
        }
        self.svc.changed.notify_one();
    }
}

/// A state error of a snapshot's record, naming the snapshot.
pub(super) fn snap_state_err(
    name: &impl std::fmt::Display,
) -> impl Fn(StateError) -> ServiceError + '_ {
    move |e| ServiceError::Snapshot {
        snapshot: name.to_string(),
        reason: e.to_string(),
    }
}

/// Validates a snapshot name (the volume name rule).
pub fn snapshot_name(s: &str) -> ServiceResult<VolumeName> {
    VolumeName::parse(s).map_err(|e| {
        ServiceError::BadInput(match e {
            NameError::Empty => "snapshot name is empty".into(),
            NameError::TooLong(n) => {
                format!("snapshot name is {n} bytes long; at most {MAX_NAME_LEN} are allowed")
            }
            NameError::Invalid { name, reason } => format!(
                "snapshot name {name:?} is invalid: {reason} (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)"
            ),
        })
    })
}

impl VolumeService {
    pub(super) fn get_snapshot(&self, name: &VolumeName) -> Option<SnapshotRecord> {
        read(&self.snapshots).get(name).map(|e| e.rec.clone())
    }

    pub(super) fn snapshot_by_id(&self, id: &str) -> Option<SnapshotRecord> {
        read(&self.snapshots)
            .values()
            .find(|e| e.rec.id == id)
            .map(|e| e.rec.clone())
    }

    pub(super) fn begin_op(&self, kind: &'static str, target: &str, source: &str) -> OpGuard<'_> {
        let id = self.next_op.fetch_add(1, Ordering::Relaxed);
        let progress = Arc::new(Progress::default());
        if let Ok(mut ops) = self.ops.lock() {
            ops.insert(
                id,
                OpEntry {
                    kind,
                    target: target.to_string(),
                    source: source.to_string(),
                    started: Instant::now(),
                    progress: progress.clone(),
                },
            );
        }
        // STATUS= follows a long copy once a second.
        let changed = self.changed.clone();
        let ticker = tokio::runtime::Handle::try_current().ok().map(|h| {
            h.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    changed.notify_one();
                }
            })
        });
        OpGuard {
            svc: self,
            id,
            progress,
            ticker,
        }
    }

    /// Long operations in flight.
    pub fn operations(&self) -> Vec<OperationView> {
        let Ok(ops) = self.ops.lock() else {
            return Vec::new();
        };
        ops.iter()
            .map(|(id, o)| {
                let (done, total) = o.progress.get();
                OperationView {
                    id: *id,
                    kind: o.kind.to_string(),
                    target: o.target.clone(),
                    source: o.source.clone(),
                    done,
                    total,
                    elapsed: o.started.elapsed(),
                }
            })
            .collect()
    }

    fn snap_view(&self, e: &SnapEntry) -> SnapshotView {
        let source_exists = read(&self.catalog)
            .get(&e.rec.volume)
            .is_some_and(|v| v.rec.id == e.rec.volume_id);
        SnapshotView {
            record: e.rec.clone(),
            allocated: e.allocated,
            source_exists,
        }
    }

    /// Takes snapshot `snap` of volume `volume`.
    pub async fn snapshot_create(&self, volume: &str, snap: &str) -> ServiceResult<SnapshotView> {
        let vname = VolumeName::parse(volume)?;
        let sname = snapshot_name(snap)?;
        let mut held = self
            .lock_for(Op::Snapshot, vec![self.vkey(&vname), self.skey(&sname)])
            .await?;
        if let Some(reason) = read(&self.damaged_snapshots).get(sname.as_str()) {
            return Err(ServiceError::Snapshot {
                snapshot: sname.to_string(),
                reason: format!(
                    "its state record is unreadable ({reason}); fix or remove it first"
                ),
            });
        }
        // A snapshot of that name taken on another host (shared catalogs).
        self.learn_snapshots().await?;
        if let Some(existing) = self.get_snapshot(&sname) {
            return Err(ServiceError::Snapshot {
                snapshot: sname.to_string(),
                reason: format!(
                    "a snapshot of that name already exists (of volume {}); pick another name or remove it first",
                    existing.volume
                ),
            });
        }
        let vol = self
            .known(&vname)
            .await?
            .ok_or_else(|| self.missing(&vname))?;
        let started = Instant::now();
        let mounted = vol.mounted.is_some();
        let op = self.begin_op("snapshot", sname.as_str(), &format!("volume {vname}"));
        let result = self
            .snapshot_work(vol, sname.clone(), op.progress(), &mut held)
            .await;
        drop(op);
        let (rec, allocated) = result?;
        info!(service = %self.name, snapshot = %sname, volume = %vname, operation = "snapshot",
            mounted, copy = rec.copy_method().map(CopyMethod::as_str).unwrap_or(""),
            frozen_us = rec.frozen_for().map(|d| d.as_micros() as u64).unwrap_or(0),
            duration_ms = started.elapsed().as_millis() as u64, "snapshot taken");
        let entry = SnapEntry::new(rec, allocated);
        let view = self.snap_view(&entry);
        write(&self.snapshots).insert(sname, entry);
        self.invalidate();
        Ok(view)
    }

    /// The storage side of a snapshot: intent record, the driver's copy,
    /// Ready record; undone on error or past the deadline.
    async fn snapshot_work(
        &self,
        vol: crate::state::VolumeRecord,
        sname: VolumeName,
        progress: Arc<Progress>,
        held: &mut Held,
    ) -> ServiceResult<(SnapshotRecord, u64)> {
        let rec = SnapshotRecord {
            version: RECORD_VERSION,
            name: sname.clone(),
            id: new_id(),
            phase: Phase::Creating,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            volume: vol.name.clone(),
            volume_id: vol.id.clone(),
            size: vol.size,
            fs_type: vol.fs_type,
            volume_type: if vol.volume_type.is_empty() {
                DEFAULT_POOL.to_string()
            } else {
                vol.volume_type.clone()
            },
            uid: vol.uid,
            gid: vol.gid,
            mode: vol.mode,
            driver_data: Default::default(),
        };
        let driver = self.driver.clone();
        let store = self.snap_store.clone();
        let who = format!("{sname} (of volume {})", vol.name);
        let vname = vol.name.clone();
        self.run(Op::Snapshot, &vname, held, move |ticket| {
            let mut rec = rec;
            let n = sname;
            store.save(&rec).map_err(snap_state_err(&who))?;
            if let Err(e) = driver.snapshot(&vol, &mut rec, &progress) {
                if let Err(se) = store.delete(&n) {
                    warn!(snapshot = %n, "could not remove the record of a failed snapshot: {se}");
                }
                return Err(e.into());
            }
            rec.phase = Phase::Ready;
            let committed = ticket
                .commit(&who)
                .and_then(|_| store.save(&rec).map_err(snap_state_err(&who)));
            if let Err(e) = committed {
                if let Err(re) = driver.remove_snapshot(&rec) {
                    warn!(snapshot = %n, "rollback of a snapshot could not remove it (the next start does): {re}");
                    return Err(e);
                }
                if let Err(se) = store.delete(&n) {
                    warn!(snapshot = %n, "could not remove the record of a rolled-back snapshot: {se}");
                }
                return Err(e);
            }
            let allocated = driver.snapshot_allocated(&rec);
            Ok((rec, allocated))
        })
        .await
    }

    /// Every snapshot, or those of `volume`.
    pub fn snapshot_list(&self, volume: Option<&str>) -> ServiceResult<Vec<SnapshotView>> {
        let filter = volume.map(VolumeName::parse).transpose()?;
        Ok(read(&self.snapshots)
            .values()
            .filter(|e| filter.as_ref().is_none_or(|v| &e.rec.volume == v))
            .map(|e| self.snap_view(e))
            .collect())
    }

    /// One snapshot, by name or ID.
    pub fn snapshot_get(&self, name_or_id: &str) -> ServiceResult<SnapshotView> {
        let snaps = read(&self.snapshots);
        let found = VolumeName::parse(name_or_id)
            .ok()
            .and_then(|n| snaps.get(&n))
            .or_else(|| snaps.values().find(|e| e.rec.id == name_or_id));
        match found {
            Some(e) => Ok(self.snap_view(e)),
            None => {
                snapshot_name(name_or_id)?;
                Err(ServiceError::SnapshotNotFound(name_or_id.to_string()))
            }
        }
    }

    /// Removes a snapshot. Volumes created from it are independent copies
    /// and stay.
    pub async fn snapshot_remove(&self, name: &str) -> ServiceResult<()> {
        let sname = snapshot_name(name)?;
        let mut held = self
            .lock_for(Op::SnapshotRemove, vec![self.skey(&sname)])
            .await?;
        if self.get_snapshot(&sname).is_none() {
            self.learn_snapshots().await?;
        }
        let mut rec = self
            .get_snapshot(&sname)
            .ok_or_else(|| ServiceError::SnapshotNotFound(sname.to_string()))?;
        let started = Instant::now();
        rec.phase = Phase::Removing;
        let driver = self.driver.clone();
        let store = self.snap_store.clone();
        let n = sname.clone();
        self.run(Op::SnapshotRemove, &sname, &mut held, move |_| {
            store.save(&rec).map_err(snap_state_err(&n))?;
            driver.remove_snapshot(&rec)?;
            store.delete(&n).map_err(snap_state_err(&n))?;
            Ok(())
        })
        // On error the record says Removing and the next start finishes
        // the job; until then the snapshot stays listed.
        .await?;
        self.note_removed(super::catalog::Removed::Snapshot(sname.clone()));
        write(&self.snapshots).remove(&sname);
        self.invalidate();
        let copies = read(&self.catalog)
            .values()
            .filter(|e| e.rec.origin.starts_with(&format!("snapshot {sname} (")))
            .count();
        info!(service = %self.name, snapshot = %sname, operation = "snapshot remove",
            volumes_from_it = copies,
            duration_ms = started.elapsed().as_millis() as u64, "snapshot removed");
        Ok(())
    }
}
