//! An in-memory driver for unit tests of the service layer, with
//! injectable failures. Never compiled into the daemon.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

use super::{CreateHow, Driver, DriverError, DriverResult};
use crate::state::{MountRecord, VolumeRecord};
use crate::sys::{mounts::MountTable, SysError};

/// What the fake holds and which step fails next.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Volumes with storage.
    pub created: BTreeSet<String>,
    /// Volumes mounted.
    pub mounted: BTreeSet<String>,
    /// Fail the next call of this step ("create", "mount", "unmount", "remove").
    pub fail: Option<&'static str>,
    /// Calls, in order.
    pub calls: Vec<String>,
}

/// The fake driver.
#[derive(Debug, Default)]
pub struct FakeDriver {
    /// Its state.
    pub state: Mutex<FakeState>,
}

impl FakeDriver {
    fn step(
        &self,
        step: &'static str,
        name: &str,
    ) -> DriverResult<std::sync::MutexGuard<'_, FakeState>> {
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
    fn free_space(&self) -> Option<u64> {
        Some(1 << 40)
    }
    fn create(&self, rec: &mut VolumeRecord, _how: &CreateHow) -> DriverResult<()> {
        let mut s = self.step("create", rec.name.as_str())?;
        s.created.insert(rec.name.to_string());
        Ok(())
    }
    fn remove(&self, rec: &VolumeRecord) -> DriverResult<()> {
        let mut s = self.step("remove", rec.name.as_str())?;
        s.created.remove(rec.name.as_str());
        Ok(())
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
        Ok(())
    }
    fn allocated(&self, _rec: &VolumeRecord) -> u64 {
        4096
    }
    fn reconcile(&self, _records: &[VolumeRecord], _table: &MountTable) -> Vec<String> {
        Vec::new()
    }
}
