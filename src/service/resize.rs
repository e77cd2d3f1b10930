//! Growing a volume.

use std::time::Instant;

use tracing::{info, warn};

use super::lane::Op;
use super::{state_err, ServiceError, ServiceResult, VolumeService};
use crate::volume::{human_bytes, parse_size, VolumeName};

impl VolumeService {
    /// Grows volume `name` to `size` (REX-Ray size syntax). Shrinking is
    /// refused; the same size is a no-op.
    pub async fn resize(&self, name: &str, size: &str) -> ServiceResult<u64> {
        let name = VolumeName::parse(name)?;
        let new_size = parse_size(size).map_err(|r| ServiceError::Option {
            volume: name.to_string(),
            source: super::OptionError(format!("size: {r}")),
        })?;
        let mut held = self.lock_for(Op::Resize, vec![self.vkey(&name)]).await?;
        let rec = self
            .known(&name)
            .await?
            .ok_or_else(|| self.missing(&name))?;
        if new_size < rec.size {
            return Err(ServiceError::Conflict {
                volume: name.to_string(),
                reason: format!(
                    "cannot shrink from {} to {}: volumes only grow (shrinking a filesystem can lose data, and xfs cannot shrink at all)",
                    human_bytes(rec.size),
                    human_bytes(new_size)
                ),
            });
        }
        if new_size == rec.size {
            return Ok(rec.size);
        }
        let started = Instant::now();
        let op = self.begin_op("resize", name.as_str(), &human_bytes(rec.size));
        let driver = self.driver.clone();
        let store = self.store.clone();
        let n = name.clone();
        let old = rec.size;
        let result = self
            .run(Op::Resize, &name, &mut held, move |_| {
                if let Some(free) = driver.free_space(&rec.volume_type) {
                    let more = new_size - rec.size;
                    if more > free {
                        return Err(ServiceError::BadInput(format!(
                            "volume {n}: growing by {} needs more than the {} free for images in pool {}",
                            human_bytes(more),
                            human_bytes(free),
                            rec.volume_type
                        )));
                    }
                }
                // The intent first: a crash while the storage grows leaves
                // a record that says so, and the next start puts the
                // storage back to the recorded size (never half grown).
                let mut rec = rec;
                rec.set_resizing_to(None);
                let mut intent = rec.clone();
                intent.set_resizing_to(Some(new_size));
                store.save(&intent).map_err(state_err(&n))?;
                if let Err(e) = driver.resize(&rec, new_size) {
                    // The driver put the storage back; the record follows.
                    if let Err(se) = store.save(&rec) {
                        warn!(volume = %n, "could not clear the resize intent of a failed resize (the next start does): {se}");
                    }
                    return Err(e.into());
                }
                rec.size = new_size;
                store.save(&rec).map_err(state_err(&n))?;
                Ok(rec)
            })
            .await;
        drop(op);
        let rec = result?;
        info!(service = %self.name, volume = %name, operation = "resize",
            from = old, to = new_size, mounted = rec.mounted.is_some(),
            duration_ms = started.elapsed().as_millis() as u64, "volume grown");
        self.samples.forget(&name);
        self.put(rec);
        Ok(new_size)
    }
}
