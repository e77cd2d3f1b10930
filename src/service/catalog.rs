//! The shared catalog (Ceph): volumes and snapshots made or removed by
//! other hosts, learnt on lookup and on List.

use std::collections::BTreeSet;
use std::time::Instant;

use tracing::{info, warn};

use super::lane::{Held, Op};
use super::snapshot::SnapEntry;
use super::{read, state_err, write, ServiceResult, VolumeService, CATALOG_TTL};
use crate::state::{Phase, SnapshotRecord, VolumeRecord};
use crate::volume::VolumeName;

/// Something this host removed: a listing of the shared catalog fetched
/// before the removal must not bring it back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Removed {
    /// A volume.
    Volume(VolumeName),
    /// A snapshot.
    Snapshot(VolumeName),
}

/// The last complete listing of a shared catalog.
#[derive(Debug, Clone, Copy)]
pub(super) struct Synced {
    /// When it finished.
    at: Instant,
    /// The catalog's version read before it (`None`: the driver has no
    /// version to offer).
    version: Option<u64>,
}

impl VolumeService {
    /// The volume `name`: from memory, else (shared catalogs) from the
    /// backend, remembering it. Callers hold the name's lock.
    pub(super) async fn known(&self, name: &VolumeName) -> ServiceResult<Option<VolumeRecord>> {
        if let Some(r) = self.get_record(name) {
            return Ok(Some(r));
        }
        if !self.shared {
            return Ok(None);
        }
        let driver = self.driver.clone();
        let n = name.clone();
        let found = self
            .run(Op::Catalog, name, &mut Held::default(), move |_| {
                Ok(driver.catalog_get(&n)?)
            })
            .await?;
        if let Some(rec) = &found {
            self.learn(rec.clone());
        }
        Ok(found)
    }

    /// Notes that `key` was removed just now.
    pub(super) fn note_removed(&self, key: Removed) {
        if !self.shared {
            return;
        }
        let mut m = self.removed.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, t| t.elapsed() < std::time::Duration::from_secs(300));
        m.insert(key, Instant::now());
    }

    /// Whether `key` was removed here after `fetched` (a listing from
    /// before the removal).
    pub(super) fn removed_after(&self, key: &Removed, fetched: Instant) -> bool {
        self.removed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .is_some_and(|t| *t >= fetched)
    }

    /// Adds a volume of the shared catalog that this host had no record
    /// of. Nothing is written: a record appears when this host mounts it.
    pub(super) fn learn(&self, mut rec: VolumeRecord) {
        rec.mounts.clear();
        rec.mounted = None;
        rec.phase = Phase::Ready;
        if let Err(owner) = self.ns.claim(rec.name.as_str(), &self.name) {
            warn!(service = %self.name, volume = %rec.name,
                "volume name is also used by service {owner}; Docker can reach only one of them");
        }
        self.put(rec);
    }

    /// Whether Get/Path of `name` should ask the shared catalog (a
    /// volume created on another host).
    pub fn needs_lookup(&self, name: &str) -> bool {
        self.shared
            && VolumeName::parse(name)
                .map(|n| self.get_record(&n).is_none())
                .unwrap_or(false)
    }

    /// Asks the shared catalog for `name` (see [`Self::needs_lookup`]).
    pub async fn lookup(&self, name: &str) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let _held = self.lock_for(Op::Catalog, vec![self.vkey(&name)]).await?;
        self.known(&name).await.map(|_| ())
    }

    /// Brings the volume list up to date with a shared catalog: volumes
    /// created on other hosts appear, volumes removed on other hosts (and
    /// not mounted here) disappear. A listing is reused for
    /// [`CATALOG_TTL`]; while one is under way, callers answer from
    /// memory instead of queueing behind it; so do they while every
    /// storage worker of the service is busy (stuck work must not hold
    /// up a listing), and the next List tries again. Nothing to do for
    /// host-local drivers.
    pub async fn refresh(&self) -> ServiceResult<()> {
        if !self.shared {
            return Ok(());
        }
        let Ok(mut synced) = self.synced.try_lock() else {
            return Ok(());
        };
        if synced.is_some_and(|s| s.at.elapsed() < CATALOG_TTL) {
            return Ok(());
        }
        let Some(version) = self.catalog_version().await else {
            return Ok(());
        };
        let version = version?;
        if let (Some(last), Some(now)) = (*synced, version) {
            // Nothing changed in the catalog since the last complete
            // listing: what is in memory is what a listing would give.
            if last.version == Some(now) {
                *synced = Some(Synced {
                    at: Instant::now(),
                    version,
                });
                return Ok(());
            }
        }
        let started = Instant::now();
        let Some(volumes_settled) = self.refresh_volumes(started).await? else {
            return Ok(());
        };
        let Some(snapshots_settled) = self.refresh_snapshots(started).await? else {
            return Ok(());
        };
        // What memory kept against the listing (a volume mounted here, a
        // busy name) must be looked at again by the next listing, even if
        // the catalog's version stays.
        let settled = volumes_settled && snapshots_settled;
        *synced = Some(Synced {
            at: Instant::now(),
            version: version.filter(|_| settled),
        });
        Ok(())
    }

    /// The shared catalog's version (one small read), `None` when no
    /// storage worker was free.
    async fn catalog_version(&self) -> Option<ServiceResult<Option<u64>>> {
        let driver = self.driver.clone();
        let label = format!("(catalog of service {})", self.name);
        self.lane
            .run_if_free(Op::Catalog, &label, &mut Held::default(), move |_| {
                Ok(driver.catalog_version()?)
            })
            .await
    }

    /// `None`: no storage worker was free; nothing done. `Some(false)`:
    /// done, but memory keeps volumes the listing lacks.
    async fn refresh_volumes(&self, started: Instant) -> ServiceResult<Option<bool>> {
        let driver = self.driver.clone();
        let label = format!("(catalog of service {})", self.name);
        let Some(remote) = self
            .lane
            .run_if_free(Op::Catalog, &label, &mut Held::default(), move |_| {
                Ok(driver.catalog_list()?)
            })
            .await
        else {
            return Ok(None);
        };
        let remote = remote?;
        self.follow_adoptions(&remote);
        let names: BTreeSet<VolumeName> = remote.iter().map(|r| r.name.clone()).collect();
        let unseen: Vec<VolumeRecord> = {
            let cat = read(&self.catalog);
            remote
                .into_iter()
                .filter(|r| !cat.contains_key(&r.name))
                .collect()
        };
        // A name with a record here but not in memory is a clean-up this
        // host still owes (an interrupted create or remove): not a volume.
        let store = self.store.clone();
        let Some(new) = self
            .lane
            .run_if_free(Op::Catalog, &label, &mut Held::default(), move |_| {
                Ok(unseen
                    .into_iter()
                    .filter(|r| matches!(store.load(&r.name), Ok(None)))
                    .collect::<Vec<VolumeRecord>>())
            })
            .await
        else {
            return Ok(None);
        };
        let new = new?;
        for rec in new {
            // Removed here while the listing was under way: not back.
            if !self.removed_after(&Removed::Volume(rec.name.clone()), started) {
                self.learn(rec);
            }
        }
        let gone: Vec<VolumeName> = read(&self.catalog)
            .iter()
            .filter(|(n, e)| !names.contains(*n) && e.since < started)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            self.forget_gone_volume(name, started).await;
        }
        Ok(Some(read(&self.catalog).keys().all(|n| names.contains(n))))
    }

    /// Volumes known here as pending adoption that the listing shows
    /// adopted (another host mounted them first): the stored record
    /// replaces the one learnt before, unless this host mounts it.
    fn follow_adoptions(&self, remote: &[VolumeRecord]) {
        let adopted: Vec<VolumeRecord> = {
            let cat = read(&self.catalog);
            remote
                .iter()
                .filter(|r| !r.adoption_pending())
                .filter(|r| {
                    cat.get(&r.name).is_some_and(|e| {
                        e.rec.adoption_pending()
                            && e.rec.mount_count() == 0
                            && e.rec.phase == Phase::Ready
                    })
                })
                .cloned()
                .collect()
        };
        for rec in adopted {
            info!(service = %self.name, volume = %rec.name, "volume was adopted by another host");
            self.learn(rec);
        }
    }

    /// Drops a volume another host removed, unless it is mounted here or
    /// busy (then the next listing tries again).
    async fn forget_gone_volume(&self, name: VolumeName, started: Instant) {
        let Some(_held) = self.try_lock(self.vkey(&name)).await else {
            return;
        };
        let drop_it = read(&self.catalog).get(&name).is_some_and(|e| {
            e.since < started && e.rec.mount_count() == 0 && e.rec.phase == Phase::Ready
        });
        if !drop_it {
            return;
        }
        // The listing may lack a volume that exists (an index key lost to a
        // crash between the volume's creation and its key): a volume is
        // gone only when a lookup of its name says so too.
        let driver = self.driver.clone();
        let n = name.clone();
        let still = self
            .lane
            .run_if_free(Op::Catalog, &name, &mut Held::default(), move |_| {
                Ok(driver.catalog_get(&n)?)
            })
            .await;
        match still {
            Some(Ok(None)) => {}
            Some(Ok(Some(_))) => {
                warn!(service = %self.name, volume = %name,
                    "volume missing from the catalog listing but present in the cluster; kept");
                return;
            }
            Some(Err(_)) | None => return,
        }
        let store = self.store.clone();
        let n = name.clone();
        let Some(deleted) = self
            .lane
            .run_if_free(Op::Record, &name, &mut Held::default(), move |_| {
                store.delete(&n).map_err(state_err(&n))
            })
            .await
        else {
            return;
        };
        if let Err(e) = deleted {
            warn!(service = %self.name, volume = %name, "could not remove the record of a volume removed on another host: {e}");
            return;
        }
        self.note_removed(Removed::Volume(name.clone()));
        write(&self.catalog).remove(&name);
        self.ns.release(name.as_str(), &self.name);
        self.invalidate();
        info!(service = %self.name, volume = %name, "volume was removed on another host");
    }

    /// As [`Self::refresh_volumes`], for snapshots.
    async fn refresh_snapshots(&self, started: Instant) -> ServiceResult<Option<bool>> {
        let Some(remote) = self.learn_snapshots_with(false).await? else {
            return Ok(None);
        };
        let names: BTreeSet<VolumeName> = remote.iter().map(|r| r.name.clone()).collect();
        let gone: Vec<VolumeName> = read(&self.snapshots)
            .iter()
            .filter(|(n, e)| !names.contains(*n) && e.since < started)
            .map(|(n, _)| n.clone())
            .collect();
        for name in gone {
            let Some(_held) = self.try_lock(self.skey(&name)).await else {
                continue;
            };
            let drop_it = read(&self.snapshots)
                .get(&name)
                .is_some_and(|e| e.since < started && e.rec.phase == Phase::Ready);
            if !drop_it {
                continue;
            }
            let store = self.snap_store.clone();
            let n = name.clone();
            let Some(deleted) = self
                .lane
                .run_if_free(Op::Record, &name, &mut Held::default(), move |_| {
                    store.delete(&n).map_err(state_err(&n))
                })
                .await
            else {
                continue;
            };
            if let Err(e) = deleted {
                warn!(service = %self.name, snapshot = %name, "could not remove the record of a snapshot removed on another host: {e}");
                continue;
            }
            self.note_removed(Removed::Snapshot(name.clone()));
            write(&self.snapshots).remove(&name);
            self.invalidate();
            info!(service = %self.name, snapshot = %name, "snapshot was removed on another host");
        }
        Ok(Some(
            read(&self.snapshots).keys().all(|n| names.contains(n)),
        ))
    }

    /// Adds the snapshots of a shared catalog this host has not seen
    /// (taken on other hosts); returns the whole remote list. Takes no
    /// lock, so callers may hold name locks.
    pub(super) async fn learn_snapshots(&self) -> ServiceResult<Vec<SnapshotRecord>> {
        Ok(self.learn_snapshots_with(true).await?.unwrap_or_default())
    }

    /// [`Self::learn_snapshots`]; unless `wait`, `None` at once when no
    /// storage worker is free.
    async fn learn_snapshots_with(&self, wait: bool) -> ServiceResult<Option<Vec<SnapshotRecord>>> {
        if !self.shared {
            return Ok(Some(Vec::new()));
        }
        let driver = self.driver.clone();
        let label = format!("(snapshot catalog of service {})", self.name);
        let fetched = Instant::now();
        let store = self.snap_store.clone();
        let work = move |_: &super::lane::Ticket| {
            let remote = driver.snapshot_catalog_list()?;
            // Snapshots with an intent record here (an interrupted create
            // or removal this host still has to finish) are not learnt.
            let pending: std::collections::BTreeSet<VolumeName> = remote
                .iter()
                .filter(
                    |r| matches!(store.load(&r.name), Ok(Some(ref l)) if l.phase != Phase::Ready),
                )
                .map(|r| r.name.clone())
                .collect();
            Ok((remote, pending))
        };
        let mut held = Held::default();
        let (remote, pending) = if wait {
            self.run(Op::Catalog, &label, &mut held, work).await?
        } else {
            match self
                .lane
                .run_if_free(Op::Catalog, &label, &mut held, work)
                .await
            {
                Some(r) => r?,
                None => return Ok(None),
            }
        };
        let mut added = false;
        {
            let mut snaps = write(&self.snapshots);
            for rec in &remote {
                if !snaps.contains_key(&rec.name)
                    && !pending.contains(&rec.name)
                    && !self.removed_after(&Removed::Snapshot(rec.name.clone()), fetched)
                {
                    let mut rec = rec.clone();
                    rec.phase = Phase::Ready;
                    snaps.insert(rec.name.clone(), SnapEntry::new(rec, 0));
                    added = true;
                }
            }
        }
        if added {
            self.invalidate();
        }
        Ok(Some(remote))
    }
}
