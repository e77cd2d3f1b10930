//! The storage side of a create, on a worker: intent record, storage,
//! optional grow of a copy, Ready record, with one rollback.

use std::path::Path;
use std::sync::Arc;

use tracing::warn;

use super::create::{used_by, Plan, Resolved};
use super::lane::Ticket;
use super::reconcile::finish_interrupted;
use super::{state_err, ServiceError, ServiceResult};
use crate::driver::{CreateHow, Driver, Progress};
use crate::state::{Phase, RecordStore, VolumeRecord};
use crate::volume::{human_bytes, VolumeName};

/// The other service (possibly served by another berthd process, as with
/// one systemd instance per service) that has a volume `name`: its record
/// sits in a sibling of this service's record directory. Docker keys
/// volumes by name alone.
fn owner_elsewhere(store: &RecordStore, name: &VolumeName) -> Option<String> {
    let mine = store.dir();
    let root = mine.parent()?;
    std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| e.path() != mine)
        .find(|e| e.path().join(format!("{name}.json")).exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
}

/// The storage side of a create, on a worker: intent record, storage,
/// optional grow, Ready record. Everything is undone on error or when the
/// request was answered past its deadline ([`Ticket::commit`]).
pub(super) fn create_storage(
    driver: &dyn Driver,
    store: &RecordStore,
    target: &Path,
    plan: Plan,
    progress: Option<Arc<Progress>>,
    ticket: &Ticket,
) -> ServiceResult<(VolumeRecord, u64)> {
    let Plan {
        mut rec,
        source,
        grow_to,
        overwrite_fs,
        fs_given,
    } = plan;
    let n = rec.name.clone();
    if let Some(owner) = owner_elsewhere(store, &n) {
        return Err(used_by(&n, &owner));
    }
    if source.is_none() {
        if let Some(free) = driver.free_space(&rec.volume_type) {
            if rec.size > free {
                return Err(ServiceError::BadInput(format!(
                    "volume {n}: size {} is more than the {} free for images in pool {}; \
                     ask for less (-o size=4G) or set size under [volume.create.default] \
                     in the config",
                    human_bytes(rec.size),
                    human_bytes(free),
                    rec.volume_type
                )));
            }
        }
    }
    // A record left by an interrupted create or remove whose clean-up
    // failed at start-up (a Ceph image still had a watcher): its storage
    // may still be there. Finish that clean-up first; overwriting the
    // record (and deleting it when this create fails) would leak the
    // storage for good.
    if let Some(old) = store.load(&n).map_err(state_err(&n))? {
        if old.phase != Phase::Ready {
            finish_interrupted(driver, store, target, &old).map_err(|e| {
                ServiceError::Conflict {
                    volume: n.to_string(),
                    reason: format!(
                    "an interrupted create or remove of it is not cleaned up yet ({e}); retry later"
                ),
                }
            })?;
            warn!(volume = %n, "an interrupted create or remove was found; its storage and record were removed");
        }
    }
    if driver.storage_exists(&rec) {
        rec.set_adopted();
    }
    store.save(&rec).map_err(state_err(&n))?;
    let how = CreateHow {
        overwrite_fs,
        fs_given,
        source: source.as_ref().map(Resolved::as_source),
        progress: progress.as_deref(),
    };
    if let Err(e) = driver.create(&mut rec, &how) {
        if let Err(se) = store.delete(&n) {
            warn!(volume = %n, "could not remove the record of a failed create: {se}");
        }
        return Err(e.into());
    }
    let finished = grow_and_commit(driver, store, &mut rec, grow_to, ticket);
    if let Err(e) = finished {
        // Storage that was there before (adopted) is never removed.
        match finish_interrupted(driver, store, target, &rec) {
            Ok(()) => {}
            Err(re) => {
                warn!(volume = %n, "rollback of a failed create could not remove its storage (the next start does): {re}")
            }
        }
        return Err(e);
    }
    let used = driver.allocated(&rec);
    Ok((rec, used))
}

/// Grows a copy to its asked size, then makes the volume Ready. The
/// record says Creating until then, so a crash removes the half-made
/// volume at the next start.
fn grow_and_commit(
    driver: &dyn Driver,
    store: &RecordStore,
    rec: &mut VolumeRecord,
    grow_to: Option<u64>,
    ticket: &Ticket,
) -> ServiceResult<()> {
    let n = rec.name.clone();
    if let Some(size) = grow_to {
        store.save(rec).map_err(state_err(&n))?;
        driver.resize(rec, size)?;
        rec.size = size;
    }
    ticket.commit(&n)?;
    let mut ready = rec.clone();
    ready.phase = Phase::Ready;
    store.save(&ready).map_err(state_err(&n))?;
    *rec = ready;
    Ok(())
}
