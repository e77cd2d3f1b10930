//! Removing a volume.

use std::time::Instant;

use tracing::info;

use super::catalog::Removed;
use super::lane::Op;
use super::reconcile::finish_interrupted;
use super::{read, state_err, write, ServiceError, ServiceResult, VolumeService};
use crate::state::Phase;
use crate::volume::VolumeName;

impl VolumeService {
    /// `VolumeDriver.Remove`. Removing an unknown volume is success.
    pub async fn remove(&self, name: &str) -> ServiceResult<()> {
        self.remove_checked(name, true).await
    }

    /// Removes `name`; an unknown volume is success when `absent_ok`,
    /// else [`ServiceError::NotFound`].
    pub async fn remove_checked(&self, name: &str, absent_ok: bool) -> ServiceResult<()> {
        let name = VolumeName::parse(name)?;
        let policy = self.policy();
        if policy.remove_disable {
            info!(service = %self.name, volume = %name, operation = "remove",
                "remove.disable is set: request acknowledged, nothing removed");
            return Ok(());
        }
        let mut held = self.lock_for(Op::Remove, vec![self.vkey(&name)]).await?;
        let Some(mut rec) = self.known(&name).await? else {
            if let Some(refused) = self.refused(&name) {
                return Err(refused);
            }
            if !absent_ok {
                return Err(ServiceError::NotFound(name.to_string()));
            }
            info!(service = %self.name, volume = %name, operation = "remove", "volume already absent");
            return Ok(());
        };
        let users = rec.mount_count();
        if users > 0 && !policy.remove_force {
            return Err(ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "it is mounted by {users} user(s) (mount IDs: {}); unmount it first, or set volume.remove.force",
                    Self::mount_ids(&rec)
                ),
            });
        }
        let started = Instant::now();
        let target = self.target_of(&name);
        let driver = self.driver.clone();
        let store = self.store.clone();
        let n = name.clone();
        rec.phase = Phase::Removing;
        self.run(Op::Remove, &name, &mut held, move |_| {
            store.save(&rec).map_err(state_err(&n))?;
            finish_interrupted(driver.as_ref(), &store, &target, &rec)
        })
        // On error the record says Removing and the next start (or the
        // next remove) finishes the job; until then the volume stays
        // visible.
        .await?;
        self.note_removed(Removed::Volume(name.clone()));
        write(&self.catalog).remove(&name);
        self.samples.forget(&name);
        self.ns.release(name.as_str(), &self.name);
        self.invalidate();
        let kept = read(&self.snapshots)
            .values()
            .filter(|e| e.rec.volume == name)
            .count();
        info!(service = %self.name, volume = %name, operation = "remove", forced = users > 0,
            snapshots_kept = kept,
            duration_ms = started.elapsed().as_millis() as u64, "volume removed");
        Ok(())
    }
}
