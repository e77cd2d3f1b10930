//! Mount and unmount: the mount-ID multiset and the one real mount.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use tracing::{info, warn};

use super::lane::{Held, Op};
use super::{short, state_err, ServiceError, ServiceResult, VolumeService};
use crate::driver;
use crate::state::VolumeRecord;
use crate::volume::{MountId, VolumeName};

impl VolumeService {
    /// `VolumeDriver.Mount`: returns the path Docker uses.
    pub async fn mount(&self, name: &str, id: Option<&str>) -> ServiceResult<PathBuf> {
        let name = VolumeName::parse(name)?;
        let id = MountId::parse(id)
            .map_err(|r| ServiceError::BadInput(format!("volume {name}: {r}")))?;
        let policy = self.policy();
        let mut held = self.lock_for(Op::Mount, vec![self.vkey(&name)]).await?;
        if self.known(&name).await?.is_none() {
            if !policy.create_implicit {
                return Err(self.missing(&name));
            }
            let spec = super::create::spec_of(&name, &BTreeMap::new(), &policy)?;
            info!(service = %self.name, volume = %name, operation = "mount", "unknown volume: creating it (volume.create.implicit)");
            self.create_locked(&name, spec, &mut held).await?;
        }
        let rec = self.get_record(&name).ok_or_else(|| self.missing(&name))?;
        let started = Instant::now();
        let first = rec.mount_count() == 0;
        let (rec, data) = self.mount_work(rec, id, &mut held).await?;
        info!(service = %self.name, volume = %name, operation = "mount", first,
            users = rec.mount_count(), duration_ms = started.elapsed().as_millis() as u64,
            "volume mounted at {}", data.display());
        self.takeovers.forget(&name);
        self.put(rec);
        Ok(data)
    }

    /// The storage side of a mount: attach and mount (when not mounted
    /// yet), prepare the data directory, sample its space, and record the
    /// new user. Rolled back whole on error or past the deadline.
    async fn mount_work(
        &self,
        mut rec: VolumeRecord,
        id: MountId,
        held: &mut Held,
    ) -> ServiceResult<(VolumeRecord, PathBuf)> {
        let target = self.target_of(&rec.name);
        let driver = self.driver.clone();
        let store = self.store.clone();
        let samples = self.samples.clone();
        let policy = self.policy();
        let how = driver::MountHow {
            preempt: policy.mount_preempt,
        };
        let name = rec.name.clone();
        // Mounted here, but another host took it over: the local mount is
        // dead. Clean it up; this mount is a new take-over.
        let lost = rec.mounted.is_some() && self.takeovers.get(&name).is_some();
        self.run(Op::Mount, &name, held, move |ticket| {
            let n = rec.name.clone();
            if lost {
                driver.unmount(&rec, &target)?;
                rec.mounted = None;
                store.save(&rec).map_err(state_err(&n))?;
            }
            let fresh = driver.mount_with(&mut rec, &target, &how)?;
            let newly_mounted = rec.mounted.is_none();
            let undo = |rec: &VolumeRecord| {
                if newly_mounted {
                    if let Err(e) = driver.unmount(rec, &target) {
                        warn!(volume = %rec.name, "rollback of mount failed: {e}");
                    }
                }
            };
            let data = match driver::prepare_data_dir(&rec, &target, &policy.root_path) {
                Ok(d) => d,
                Err(e) => {
                    undo(&rec);
                    return Err(e.into());
                }
            };
            if let Ok(u) = driver.usage(&rec, Some(&target)) {
                samples.put(&n, u);
            }
            rec.mounted = Some(fresh);
            rec.owner_pending = false;
            rec.add_mount(&id);
            let committed = ticket
                .commit(&n)
                .and_then(|_| store.save(&rec).map_err(state_err(&n)));
            if let Err(e) = committed {
                undo(&rec);
                return Err(e);
            }
            Ok((rec, data))
        })
        .await
    }

    /// `VolumeDriver.Unmount`. The last user's unmount (or every unmount
    /// with `ignoreusedcount`) really unmounts.
    pub async fn unmount(&self, name: &str, id: Option<&str>) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let id = MountId::parse(id)
            .map_err(|r| ServiceError::BadInput(format!("volume {name}: {r}")))?;
        let policy = self.policy();
        let mut held = self.lock_for(Op::Unmount, vec![self.vkey(&name)]).await?;
        let Some(mut rec) = self.get_record(&name) else {
            warn!(service = %self.name, volume = %name, operation = "unmount", "unmount of an unknown volume: nothing to do");
            return Ok(());
        };
        if policy.ignore_used_count {
            rec.mounts.clear();
        } else if !rec.remove_mount(&id) {
            if rec.mount_count() > 0 {
                warn!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                    users = rec.mount_count(), "mount ID holds no mount of this volume: nothing unmounted");
                return Ok(());
            }
            if rec.mounted.is_none() {
                return Ok(());
            }
        }
        let started = Instant::now();
        let last = rec.mount_count() == 0 && rec.mounted.is_some();
        let rec = self.unmount_work(rec, last, &mut held).await?;
        if last {
            self.samples.forget(&name);
            self.takeovers.forget(&name);
            info!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                duration_ms = started.elapsed().as_millis() as u64, "volume unmounted");
        } else {
            info!(service = %self.name, volume = %name, operation = "unmount", mount_id = %id,
                users = rec.mount_count(), "mount released; volume stays mounted for its other users");
        }
        self.put(rec);
        Ok(())
    }

    /// The storage side of an unmount: the record first (a failed write
    /// leaves the volume mounted and counted; a crash right after it is
    /// repaired at start-up), then, for the last user, the real unmount;
    /// if that fails the previous record is put back.
    async fn unmount_work(
        &self,
        mut rec: VolumeRecord,
        last: bool,
        held: &mut Held,
    ) -> ServiceResult<VolumeRecord> {
        let target = self.target_of(&rec.name);
        let driver = self.driver.clone();
        let store = self.store.clone();
        let before = self.get_record(&rec.name);
        let name = rec.name.clone();
        self.run(Op::Unmount, &name, held, move |_| {
            let n = rec.name.clone();
            if !last {
                store.save(&rec).map_err(state_err(&n))?;
                return Ok(rec);
            }
            rec.mounted = None;
            store.save(&rec).map_err(state_err(&n))?;
            if let Err(e) = driver.unmount(&rec, &target) {
                if let Some(b) = before {
                    if let Err(se) = store.save(&b) {
                        warn!(volume = %n, "could not restore the record of a failed unmount: {se}");
                    }
                }
                return Err(e.into());
            }
            Ok(rec)
        })
        .await
    }

    /// Mount IDs of `rec` as errors show them.
    pub(super) fn mount_ids(rec: &VolumeRecord) -> String {
        rec.mounts
            .keys()
            .map(|k| {
                if k.is_empty() {
                    "(anonymous)".into()
                } else {
                    short(k)
                }
            })
            .collect::<Vec<String>>()
            .join(", ")
    }
}
