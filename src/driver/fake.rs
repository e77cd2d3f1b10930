//! An in-memory driver for unit tests of the service layer, with
//! injectable failures. Never compiled into the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use super::{CreateHow, CreateSource, Driver, DriverError, DriverResult, Progress, DEFAULT_POOL};
use crate::state::{MountRecord, SnapshotRecord, VolumeRecord};
use crate::sys::{mounts::MountTable, SysError};

/// What the fake holds and which step fails next.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Volumes with storage.
    pub created: BTreeSet<String>,
    /// Volumes mounted.
    pub mounted: BTreeSet<String>,
    /// Snapshots with storage.
    pub snapshots: BTreeSet<String>,
    /// Extra pools.
    pub pools: BTreeMap<String, String>,
    /// Volume sizes after resize.
    pub sizes: BTreeMap<String, u64>,
    /// Fail the next call of this step ("create", "mount", "unmount",
    /// "remove", "snapshot", "remove_snapshot", "resize").
    pub fail: Option<&'static str>,
    /// Calls, in order.
    pub calls: Vec<String>,
    /// Mounted volumes another "host" took over ([`Driver::check_hold`]).
    pub taken: BTreeMap<String, super::TakeOver>,
}

/// A catalog shared by several fakes: "hosts" of one cluster.
pub type SharedCatalog = std::sync::Arc<Mutex<BTreeMap<String, VolumeRecord>>>;

/// Snapshots of a shared catalog, by name (kept apart from volumes).
static SHARED_SNAPSHOTS: Mutex<BTreeMap<usize, BTreeMap<String, SnapshotRecord>>> =
    Mutex::new(BTreeMap::new());

fn catalog_key(c: &SharedCatalog) -> usize {
    std::sync::Arc::as_ptr(c) as usize
}

/// A step the fake holds (does not return from) until released: a hung
/// backend.
#[derive(Debug, Default)]
pub struct Hold {
    step: Mutex<Option<&'static str>>,
    released: std::sync::Condvar,
}

/// The fake driver.
#[derive(Debug, Default)]
pub struct FakeDriver {
    /// Its state.
    pub state: Mutex<FakeState>,
    /// The step that hangs, if any.
    pub hold: Hold,
    /// With a shared catalog the fake behaves like a Ceph driver: every
    /// fake holding the same catalog sees the same volumes.
    pub shared: Option<SharedCatalog>,
}

impl FakeDriver {
    /// A fake on a catalog shared with other fakes.
    pub fn on(catalog: &SharedCatalog) -> Self {
        FakeDriver {
            state: Mutex::default(),
            hold: Hold::default(),
            shared: Some(catalog.clone()),
        }
    }
}

impl FakeDriver {
    /// Pools besides the default one.
    pub fn with_pools(self, pools: &[&str]) -> Self {
        self.state.lock().expect("fake state").pools = pools
            .iter()
            .map(|p| (p.to_string(), String::new()))
            .collect();
        self
    }

    /// From now on, calls of `step` hang until [`FakeDriver::release`].
    pub fn hold(&self, step: &'static str) {
        *self.hold.step.lock().expect("hold") = Some(step);
    }

    /// Lets held calls return.
    pub fn release(&self) {
        *self.hold.step.lock().expect("hold") = None;
        self.hold.released.notify_all();
    }

    fn step(
        &self,
        step: &'static str,
        name: &str,
    ) -> DriverResult<std::sync::MutexGuard<'_, FakeState>> {
        {
            let mut held = self.hold.step.lock().expect("hold");
            while *held == Some(step) {
                crate::step::enter(format!("fake {step} of {name}"));
                held = self.hold.released.wait(held).expect("hold");
            }
        }
        let mut s = self.state.lock().expect("fake state");
        s.calls.push(format!("{step} {name}"));
        if s.fail == Some(step) {
            s.fail = None;
            return Err(DriverError::Sys {
                volume: name.to_string(),
                step,
                source: SysError::Command {
                    command: format!("fake-{step}"),
                    outcome: "failed (injected)".into(),
                },
            });
        }
        Ok(s)
    }
}

impl Driver for FakeDriver {
    fn kind(&self) -> &'static str {
        "fake"
    }
    fn pools(&self) -> Vec<String> {
        let s = self.state.lock().expect("fake state");
        std::iter::once(DEFAULT_POOL.to_string())
            .chain(s.pools.keys().cloned())
            .collect()
    }
    fn free_space(&self, _pool: &str) -> Option<u64> {
        Some(1 << 40)
    }
    fn create(&self, rec: &mut VolumeRecord, how: &CreateHow<'_>) -> DriverResult<()> {
        let mut s = self.step("create", rec.name.as_str())?;
        match how.source {
            Some(CreateSource::Volume(v)) => {
                s.calls.push(format!("clone {} from {}", rec.name, v.name));
                rec.size = v.size;
                rec.fs_type = v.fs_type;
            }
            Some(CreateSource::Snapshot(sn)) => {
                let in_shared = self.shared.as_ref().is_some_and(|c| {
                    SHARED_SNAPSHOTS
                        .lock()
                        .expect("snapshots")
                        .get(&catalog_key(c))
                        .is_some_and(|m| m.contains_key(sn.name.as_str()))
                });
                if !s.snapshots.contains(sn.name.as_str()) && !in_shared {
                    return Err(DriverError::Conflict {
                        volume: rec.name.to_string(),
                        reason: format!("snapshot {} has no storage", sn.name),
                    });
                }
                s.calls
                    .push(format!("restore {} from {}", rec.name, sn.name));
                rec.size = sn.size;
                rec.fs_type = sn.fs_type;
            }
            None => {}
        }
        s.created.insert(rec.name.to_string());
        if let Some(c) = &self.shared {
            let mut c = c.lock().expect("catalog");
            if c.contains_key(rec.name.as_str()) {
                return Err(DriverError::Conflict {
                    volume: rec.name.to_string(),
                    reason: "already exists in the shared catalog".into(),
                });
            }
            let mut shown = rec.clone();
            shown.phase = crate::state::Phase::Ready;
            c.insert(rec.name.to_string(), shown);
        }
        Ok(())
    }
    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let mut s = self.step("remove", rec.name.as_str())?;
        s.created.remove(rec.name.as_str());
        if let Some(c) = &self.shared {
            c.lock().expect("catalog").remove(rec.name.as_str());
        }
        Ok(())
    }
    fn shared_catalog(&self) -> bool {
        self.shared.is_some()
    }
    fn snapshot_catalog_list(&self) -> DriverResult<Vec<SnapshotRecord>> {
        Ok(self
            .shared
            .as_ref()
            .and_then(|c| {
                SHARED_SNAPSHOTS
                    .lock()
                    .expect("snapshots")
                    .get(&catalog_key(c))
                    .map(|m| m.values().cloned().collect())
            })
            .unwrap_or_default())
    }
    fn catalog_version(&self) -> DriverResult<Option<u64>> {
        use std::hash::{Hash, Hasher};
        let Some(c) = &self.shared else {
            return Ok(None);
        };
        // A version that changes with every entry written, as an index
        // object's does.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        c.lock().expect("catalog").iter().for_each(|(k, v)| {
            k.hash(&mut h);
            serde_json::to_string(v).unwrap_or_default().hash(&mut h);
        });
        if let Some(snaps) = SHARED_SNAPSHOTS
            .lock()
            .expect("snapshots")
            .get(&catalog_key(c))
        {
            snaps.keys().for_each(|k| k.hash(&mut h));
        }
        Ok(Some(h.finish()))
    }
    fn catalog_list(&self) -> DriverResult<Vec<VolumeRecord>> {
        drop(self.step("catalog_list", "*")?);
        Ok(self
            .shared
            .as_ref()
            .map(|c| c.lock().expect("catalog").values().cloned().collect())
            .unwrap_or_default())
    }
    fn catalog_get(&self, name: &crate::volume::VolumeName) -> DriverResult<Option<VolumeRecord>> {
        drop(self.step("catalog_get", name.as_str())?);
        Ok(self
            .shared
            .as_ref()
            .and_then(|c| c.lock().expect("catalog").get(name.as_str()).cloned()))
    }
    fn mount_with(
        &self,
        rec: &mut VolumeRecord,
        target: &Path,
        how: &super::MountHow,
    ) -> DriverResult<MountRecord> {
        if how.preempt {
            self.state
                .lock()
                .expect("fake state")
                .calls
                .push(format!("preempt {}", rec.name));
        }
        self.mount(rec, target)
    }
    fn mount(&self, rec: &VolumeRecord, target: &Path) -> DriverResult<MountRecord> {
        let mut s = self.step("mount", rec.name.as_str())?;
        std::fs::create_dir_all(target)
            .map_err(|e| DriverError::sys(&rec.name, "mkdir", SysError::io("mkdir", target, e)))?;
        s.mounted.insert(rec.name.to_string());
        Ok(MountRecord {
            device: "/dev/fake".into(),
            target: target.to_path_buf(),
        })
    }
    fn unmount(&self, rec: &VolumeRecord, _target: &Path) -> DriverResult<()> {
        let mut s = self.step("unmount", rec.name.as_str())?;
        s.mounted.remove(rec.name.as_str());
        s.taken.remove(rec.name.as_str());
        Ok(())
    }
    fn allocated(&self, _rec: &VolumeRecord) -> u64 {
        4096
    }
    fn check_hold(&self, rec: &VolumeRecord) -> DriverResult<Option<super::TakeOver>> {
        let s = self.state.lock().expect("fake state");
        Ok(s.mounted
            .contains(rec.name.as_str())
            .then(|| s.taken.get(rec.name.as_str()).cloned())
            .flatten())
    }
    fn reconcile(
        &self,
        _records: &[VolumeRecord],
        _snapshots: &[SnapshotRecord],
        _table: &MountTable,
    ) -> Vec<String> {
        Vec::new()
    }
    fn snapshot(
        &self,
        rec: &VolumeRecord,
        snap: &mut SnapshotRecord,
        progress: &Progress,
    ) -> DriverResult<()> {
        let mut s = self.step("snapshot", snap.name.as_str())?;
        progress.set(rec.size, rec.size);
        s.snapshots.insert(snap.name.to_string());
        snap.driver_data.insert("fake".into(), "1".into());
        if let Some(c) = &self.shared {
            let mut shown = snap.clone();
            shown.phase = crate::state::Phase::Ready;
            SHARED_SNAPSHOTS
                .lock()
                .expect("snapshots")
                .entry(catalog_key(c))
                .or_default()
                .insert(snap.name.to_string(), shown);
        }
        Ok(())
    }
    fn remove_snapshot(&self, snap: &SnapshotRecord) -> DriverResult<()> {
        let mut s = self.step("remove_snapshot", snap.name.as_str())?;
        s.snapshots.remove(snap.name.as_str());
        if let Some(c) = &self.shared {
            if let Some(m) = SHARED_SNAPSHOTS
                .lock()
                .expect("snapshots")
                .get_mut(&catalog_key(c))
            {
                m.remove(snap.name.as_str());
            }
        }
        Ok(())
    }
    fn resize(&self, rec: &VolumeRecord, new_size: u64) -> DriverResult<()> {
        let mut s = self.step("resize", rec.name.as_str())?;
        s.sizes.insert(rec.name.to_string(), new_size);
        Ok(())
    }
}
