//! Adopting RBD images another volume plugin made (`adopt = "rexray"`).
//!
//! REX-Ray's rbd driver named an image after its volume, in the
//! service's pool, with the `layering` feature only, made the filesystem
//! at the first attach (so an image may be blank) and wrote no Berth
//! metadata. With the opt-in, List and Get show such images as volumes
//! of the service, pending adoption: List from one listing of the pool
//! (reused while the pool's image directory does not change), Get from
//! one look at the image. The first Mount adopts the image under the
//! same lock (and fencing, with preempt) as any rbd volume: the
//! filesystem on it is detected and mounted as it is, never formatted; a
//! blank image gets the service's default filesystem, as REX-Ray did.
//! Once mounted, Berth's record goes into the image's metadata and the
//! catalog index, so every host sees a Berth volume from then on.

use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use tracing::info;

use super::RbdDriver;
use crate::config::{Adopt, Policy};
use crate::driver::ceph::{decode, CREATING_KEY, META_KEY};
use crate::driver::{fsops, DriverError, DriverResult};
use crate::state::{Adoption, Phase, VolumeRecord, RECORD_VERSION};
use crate::sys::ceph::RbdPool;
use crate::sys::fsutil;
use crate::volume::{FsType, VolumeName};

/// How far into an image without a filesystem must read as zeros for it
/// to count as blank (and get a filesystem): partition tables, LVM and
/// LUKS headers all start well within it.
const BLANK_PREFIX: u64 = 4 << 20;

/// What an adopting rbd service knows.
#[derive(Debug)]
pub(super) struct Adopting {
    from: Adopt,
    /// What a blank image gets, and the data directory's owner and mode
    /// of a volume listed before its adoption (the service's defaults).
    fs_type: FsType,
    uid: u32,
    gid: u32,
    mode: u32,
    /// The pool's image names, with the directory version read before.
    listed: Mutex<Option<(u64, Vec<String>)>>,
}

impl RbdDriver {
    /// This driver, also showing and adopting images of `from` in its
    /// pool; `policy` gives the defaults for them.
    pub fn adopting(mut self, from: Adopt, policy: &Policy) -> Self {
        let d = &policy.create_defaults;
        self.adopt = Some(Adopting {
            from,
            fs_type: d.fs_type,
            uid: policy.data_uid,
            gid: policy.data_gid,
            mode: policy.data_mode,
            listed: Mutex::default(),
        });
        self
    }

    /// The pool's image names: one listing, reused while the pool's
    /// image directory keeps its version.
    fn image_names(&self, a: &Adopting, pool: &RbdPool) -> DriverResult<Vec<String>> {
        let fail = |e| self.b.fail("(catalog)", "list images", e);
        let version = pool.directory_version().map_err(fail)?;
        let mut listed = a.listed.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(v), Some((had, names))) = (version, listed.as_ref()) {
            if v == *had {
                return Ok(names.clone());
            }
        }
        let names = pool.list().map_err(fail)?;
        *listed = version.map(|v| (v, names.clone()));
        Ok(names)
    }

    /// The catalog's version with adoptable images in it: `index` (the
    /// catalog index's version) as it is without `adopt`; with it, the
    /// sum of `index` and the version of the pool's image directory.
    /// Both only ever grow, so the sum moves whenever either does (an
    /// image made or removed by another plugin, or a Berth volume).
    pub(super) fn with_adoptable_version(&self, index: Option<u64>) -> DriverResult<Option<u64>> {
        let (Some(_), Some(index)) = (&self.adopt, index) else {
            return Ok(index);
        };
        let pool = self.pool("(catalog)")?;
        let dir = pool.directory_version().map_err(|e| {
            self.b
                .fail("(catalog)", "read the pool's image directory", e)
        })?;
        Ok(dir.map(|d| d.wrapping_add(index)))
    }

    /// Volumes pending adoption: the pool's images that are no volume of
    /// `known` (the Berth volumes).
    pub(super) fn adoptable(&self, known: &[VolumeRecord]) -> DriverResult<Vec<VolumeRecord>> {
        let Some(a) = &self.adopt else {
            return Ok(Vec::new());
        };
        let pool = self.pool("(catalog)")?;
        let names = self.image_names(a, &pool)?;
        let berth: std::collections::HashSet<&str> =
            known.iter().map(|r| r.name.as_str()).collect();
        Ok(names
            .iter()
            .filter(|n| !berth.contains(n.as_str()))
            .filter_map(|n| VolumeName::parse(n).ok())
            .map(|n| self.pending(a, n, 0))
            .collect())
    }

    /// Image `name` as a volume pending adoption, when it exists (it has
    /// no Berth metadata: the caller looked).
    pub(super) fn adoptable_one(&self, name: &VolumeName) -> DriverResult<Option<VolumeRecord>> {
        let Some(a) = &self.adopt else {
            return Ok(None);
        };
        let n = name.as_str();
        let pool = self.pool(n)?;
        match pool.size(n) {
            Ok(size) => Ok(Some(self.pending(a, name.clone(), size))),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(self.b.fail(n, "read image size", e)),
        }
    }

    /// The record of an image not adopted yet; its ID is REX-Ray's
    /// (`pool.name`), so every host shows the same one.
    fn pending(&self, a: &Adopting, name: VolumeName, size: u64) -> VolumeRecord {
        let mut rec = VolumeRecord {
            version: RECORD_VERSION,
            id: format!("{}.{name}", self.pool),
            name,
            phase: Phase::Ready,
            created_at: String::new(),
            size,
            fs_type: a.fs_type,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
            uid: a.uid,
            gid: a.gid,
            mode: a.mode,
            owner_pending: false,
            origin: String::new(),
            driver_data: Default::default(),
            mounts: Default::default(),
            mounted: None,
        };
        rec.driver_data.insert("pool".into(), self.pool.clone());
        rec.set_adoption(Adoption::Pending(a.from));
        rec
    }

    /// Marks the fresh image of `rec` as Berth's, being made, before
    /// anything else is done with it: an adopting service (on any host)
    /// never takes it for another plugin's image.
    pub(super) fn mark_creating(&self, pool: &RbdPool, rec: &VolumeRecord) -> DriverResult<()> {
        let name = rec.name.as_str();
        pool.meta_set(name, CREATING_KEY, &rec.id)
            .map_err(|e| self.b.fail(name, "mark the image as Berth's", e))
    }

    /// Refuses `what` on a volume not adopted yet (its filesystem is not
    /// known before its first mount).
    pub(super) fn refuse_pending(&self, rec: &VolumeRecord, what: &str) -> DriverResult<()> {
        if !rec.adoption_pending() {
            return Ok(());
        }
        Err(DriverError::Conflict {
            volume: rec.name.to_string(),
            reason: format!(
                "it is not adopted yet (an image without Berth metadata); mount it once, which adopts it, before {what}"
            ),
        })
    }

    /// First step of adopting `rec`, under this host's lock: when another
    /// host adopted it meanwhile, its stored record replaces `rec` (mount
    /// state kept); else `rec` gets the image's size.
    pub(super) fn adopt_locked(&self, pool: &RbdPool, rec: &mut VolumeRecord) -> DriverResult<()> {
        let name = rec.name.to_string();
        let stored = pool
            .meta_get(&name, META_KEY)
            .map_err(|e| self.b.fail(&name, "read volume metadata", e))?;
        if let Some(text) = stored {
            let what = format!("image {}/{name}", self.pool);
            let mut found =
                decode(&self.pool, &what, &text).ok_or_else(|| DriverError::Conflict {
                    volume: name.clone(),
                    reason: format!(
                        "{what} holds Berth metadata this berthd cannot read; not adopted"
                    ),
                })?;
            found.mounts = std::mem::take(&mut rec.mounts);
            found.mounted = rec.mounted.take();
            found.phase = rec.phase;
            *rec = found;
            return Ok(());
        }
        let creating = pool
            .meta_get(&name, CREATING_KEY)
            .map_err(|e| self.b.fail(&name, "read volume metadata", e))?;
        if creating.is_some() {
            return Err(DriverError::Conflict {
                volume: name,
                reason: "a Berth create is making this image (or was interrupted on its host, whose next start removes it); it is not adopted".into(),
            });
        }
        rec.size = pool
            .size(&name)
            .map_err(|e| self.b.fail(&name, "read image size", e))?;
        Ok(())
    }

    /// Second step, with the image exposed at `file`: the filesystem on
    /// it becomes the volume's; a blank image gets the service's
    /// default one. Anything else is refused, and nothing is written.
    pub(super) fn adopt_filesystem(
        &self,
        rec: &mut VolumeRecord,
        file: &std::path::Path,
    ) -> DriverResult<()> {
        let refuse = |reason: String| DriverError::Conflict {
            volume: rec.name.to_string(),
            reason,
        };
        let t = Instant::now();
        let probed = fsutil::probe_fs_type(file, self.timeout)
            .map_err(|e| DriverError::sys(&rec.name, "probe the image's filesystem", e))?;
        if let Some(found) = probed {
            rec.fs_type = FsType::parse(&found).map_err(|r| {
                refuse(format!(
                    "the image holds {r}; not adopted (Berth mounts ext4, xfs and btrfs)"
                ))
            })?;
            info!(volume = %rec.name, fs_type = found, took = ?t.elapsed(), "adopting image: its filesystem is kept");
            return Ok(());
        }
        let blank = fsutil::reads_as_zeros(file, BLANK_PREFIX)
            .map_err(|e| DriverError::sys(&rec.name, "read the image", e))?;
        if !blank {
            return Err(refuse(
                "the image holds data but no filesystem Berth recognises (a partition table?); it is never formatted: not adopted".into(),
            ));
        }
        fsops::mkfs(rec.fs_type, file, self.timeout)
            .map_err(|e| DriverError::sys(&rec.name, "make filesystem", e))?;
        info!(volume = %rec.name, fs_type = rec.fs_type.as_str(), took = ?t.elapsed(),
            "adopting image: it was blank (never attached); made the service's default filesystem, as REX-Ray did on first attach");
        Ok(())
    }

    /// Last step, once mounted: Berth's record goes into the image's
    /// metadata and the catalog index. `rec` changes only when both are
    /// written.
    pub(super) fn adopt_record(&self, pool: &RbdPool, rec: &mut VolumeRecord) -> DriverResult<()> {
        let Some(Adoption::Pending(from)) = rec.adoption() else {
            return Ok(());
        };
        let mut done = rec.clone();
        done.set_adoption(Adoption::Done(from));
        if done.created_at.is_empty() {
            done.created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        }
        self.save_meta(pool, &done)?;
        info!(volume = %rec.name, from = from.as_str(), fs_type = done.fs_type.as_str(), size = done.size,
            "image adopted: Berth's record is in its metadata and the catalog index");
        *rec = done;
        Ok(())
    }
}
