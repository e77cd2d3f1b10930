//! Creating a volume: options, sources (clones and copies of snapshots),
//! pools, and the crash-safe create itself.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tracing::info;

use super::lane::{Held, Op};
use super::options::{CreateSpec, OptionError, SourceRef};
use super::{new_id, read, LockKey, ServiceError, ServiceResult, VolumeService};
use crate::driver::{CreateSource, DEFAULT_POOL};
use crate::state::{CopyMethod, Facts, Phase, SnapshotRecord, VolumeRecord, RECORD_VERSION};
use crate::volume::{human_bytes, VolumeName};

/// A create's source, resolved under its lock.
pub(super) enum Resolved {
    Volume(VolumeRecord),
    Snapshot(SnapshotRecord),
}

impl Resolved {
    pub(super) fn as_source(&self) -> CreateSource<'_> {
        match self {
            Resolved::Volume(v) => CreateSource::Volume(v),
            Resolved::Snapshot(s) => CreateSource::Snapshot(s),
        }
    }

    fn label(&self) -> String {
        match self {
            Resolved::Volume(v) => format!("volume {}", v.name),
            Resolved::Snapshot(s) => format!("snapshot {}", s.name),
        }
    }
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The volume was made.
    Created,
    /// It existed already (Docker's semantics: success); `differs` lists
    /// each asked option its record does not have ("size: 1.0 GiB, asked
    /// 2.0 GiB"), nothing was changed.
    Existed {
        /// The options that differ, one line each.
        differs: Vec<String>,
    },
    /// `create.disable` is set: nothing was made.
    Disabled,
}

/// A create, planned: the intent record and what the storage work needs.
pub(super) struct Plan {
    pub(super) rec: VolumeRecord,
    pub(super) source: Option<Resolved>,
    pub(super) grow_to: Option<u64>,
    pub(super) overwrite_fs: bool,
    pub(super) fs_given: bool,
}

impl VolumeService {
    /// `VolumeDriver.Create`. Idempotent: an existing volume is success.
    pub async fn create(&self, name: &str, opts: &BTreeMap<String, String>) -> ServiceResult<()> {
        self.create_reporting(name, opts).await.map(|_| ())
    }

    /// [`VolumeService::create`], telling what it did: whether the volume
    /// existed, and which asked options its record does not have.
    pub async fn create_reporting(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
    ) -> ServiceResult<CreateOutcome> {
        let name = VolumeName::parse(name)?;
        let policy = self.policy();
        let spec = spec_of(&name, opts, &policy)?;
        if policy.create_disable {
            info!(service = %self.name, volume = %name, operation = "create",
                "create.disable is set: request acknowledged, nothing created");
            return Ok(CreateOutcome::Disabled);
        }
        let mut keys = vec![self.vkey(&name)];
        if let Some(src) = &spec.source {
            keys.push(self.source_lock_key(&name, src)?);
        }
        let mut held = self.lock_for(Op::Create, keys).await?;
        self.create_locked(&name, spec, &mut held).await
    }

    /// The lock key of a create's source (resolving IDs to names).
    fn source_lock_key(&self, name: &VolumeName, src: &SourceRef) -> ServiceResult<LockKey> {
        Ok(match src {
            SourceRef::VolumeName(n) => self.vkey(n),
            SourceRef::VolumeId(id) => self
                .volume_by_id(id)
                .map(|r| self.vkey(&r.name))
                .ok_or_else(|| self.missing_source(name, src))?,
            SourceRef::SnapshotName(n) => self.skey(n),
            SourceRef::SnapshotId(id) => self
                .snapshot_by_id(id)
                .map(|r| self.skey(&r.name))
                .ok_or_else(|| self.missing_source(name, src))?,
        })
    }

    fn missing_source(&self, name: &VolumeName, src: &SourceRef) -> ServiceError {
        let what = match src {
            SourceRef::VolumeName(_) | SourceRef::VolumeId(_) => "volume",
            SourceRef::SnapshotName(_) | SourceRef::SnapshotId(_) => "snapshot",
        };
        ServiceError::Option {
            volume: name.to_string(),
            source: OptionError(format!(
                "option {}: no {what} {:?} in service {}",
                src.option(),
                src.value(),
                self.name
            )),
        }
    }

    fn volume_by_id(&self, id: &str) -> Option<VolumeRecord> {
        read(&self.catalog)
            .values()
            .find(|e| e.rec.id == id)
            .map(|e| e.rec.clone())
    }

    /// Resolves a create's source under its lock.
    fn resolve_source(&self, name: &VolumeName, src: &SourceRef) -> ServiceResult<Resolved> {
        let found = match src {
            SourceRef::VolumeName(n) => self.get_record(n).map(Resolved::Volume),
            SourceRef::VolumeId(id) => self.volume_by_id(id).map(Resolved::Volume),
            SourceRef::SnapshotName(n) => self.get_snapshot(n).map(Resolved::Snapshot),
            SourceRef::SnapshotId(id) => self.snapshot_by_id(id).map(Resolved::Snapshot),
        };
        let found = found.ok_or_else(|| self.missing_source(name, src))?;
        if let Resolved::Volume(v) = &found {
            if &v.name == name {
                return Err(ServiceError::Option {
                    volume: name.to_string(),
                    source: OptionError(format!(
                        "option {}: a volume cannot be a copy of itself",
                        src.option()
                    )),
                });
            }
        }
        Ok(found)
    }

    /// Creates `name` (its locks held in `held`); an existing volume is
    /// success.
    pub(super) async fn create_locked(
        &self,
        name: &VolumeName,
        spec: CreateSpec,
        held: &mut Held,
    ) -> ServiceResult<CreateOutcome> {
        if let Some(rec) = self.known(name).await? {
            let differs = differences(&rec, &spec);
            if !differs.is_empty() {
                info!(service = %self.name, volume = %name, operation = "create",
                    "volume exists; asked options it does not have were ignored: {}", differs.join("; "));
            }
            return Ok(CreateOutcome::Existed { differs });
        }
        if let Some(refused) = self.refused(name) {
            return Err(refused);
        }
        if let Some(owner) = self.ns.owner(name.as_str()).filter(|o| *o != self.name) {
            return Err(used_by(name, &owner));
        }
        let started = Instant::now();
        match &spec.source {
            // A source made on another host (shared catalogs).
            Some(SourceRef::VolumeName(n)) => {
                self.known(n).await?;
            }
            Some(SourceRef::SnapshotName(_) | SourceRef::SnapshotId(_)) => {
                self.learn_snapshots().await?;
            }
            _ => {}
        }
        let plan = self.plan(name, spec)?;
        let op = plan
            .source
            .as_ref()
            .map(|s| self.begin_op("clone", name.as_str(), &s.label()));
        let progress = op.as_ref().map(|o| o.progress());
        let (driver, store, target) = (
            self.driver.clone(),
            self.store.clone(),
            self.target_of(name),
        );
        let rec = self
            .run(Op::Create, name, held, move |ticket| {
                super::provision::create_storage(
                    driver.as_ref(),
                    &store,
                    &target,
                    plan,
                    progress,
                    ticket,
                )
            })
            .await;
        drop(op);
        let (rec, usage) = rec?;
        info!(service = %self.name, volume = %name, operation = "create",
            size = rec.size, fs_type = %rec.fs_type, pool = %rec.volume_type,
            origin = %rec.origin, copy = rec.copy_method().map(CopyMethod::as_str).unwrap_or(""),
            duration_ms = started.elapsed().as_millis() as u64, "volume created");
        let _ = self.ns.claim(name.as_str(), &self.name);
        self.samples.put(
            name,
            crate::driver::Usage {
                used: usage,
                free: None,
            },
        );
        self.put(rec);
        Ok(CreateOutcome::Created)
    }

    /// The intent record of a create: options, source, pool.
    fn plan(&self, name: &VolumeName, spec: CreateSpec) -> ServiceResult<Plan> {
        let opt_err = |msg: String| ServiceError::Option {
            volume: name.to_string(),
            source: OptionError(msg),
        };
        let source = match &spec.source {
            Some(src) => Some(self.resolve_source(name, src)?),
            None => None,
        };
        // The pool: as asked, else the source's, else the default.
        let pool = match (&source, spec.type_given) {
            (Some(Resolved::Volume(v)), false) => v.volume_type.clone(),
            (Some(Resolved::Snapshot(s)), false) => s.volume_type.clone(),
            _ => spec.volume_type.clone(),
        };
        let pool = if pool.is_empty() {
            DEFAULT_POOL.to_string()
        } else {
            pool
        };
        let pools = self.driver.pools();
        let mut requested = None;
        let pool = if pools.contains(&pool) {
            pool
        } else if spec.type_given && !self.policy().create_refuse_unknown_type {
            info!(service = %self.name, volume = %name, operation = "create",
                "volumeType {pool:?} names no storage pool of service {} (pools: {}); recorded, the volume goes to the default pool (set volume.create.refuseUnknownType to refuse)",
                self.name, pools.join(", "));
            requested = Some(pool);
            DEFAULT_POOL.to_string()
        } else {
            return Err(opt_err(format!(
                "option type: storage pool {pool:?} is not configured for service {} (pools: {})",
                self.name,
                pools.join(", ")
            )));
        };
        let mut rec = VolumeRecord {
            version: RECORD_VERSION,
            name: name.clone(),
            id: new_id(),
            phase: Phase::Creating,
            created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            size: spec.size,
            fs_type: spec.fs_type,
            volume_type: pool,
            iops: spec.iops,
            availability_zone: spec.availability_zone.clone(),
            uid: spec.uid,
            gid: spec.gid,
            mode: spec.mode,
            owner_pending: false,
            origin: String::new(),
            driver_data: BTreeMap::new(),
            mounts: BTreeMap::new(),
            mounted: None,
        };
        if let Some(t) = &requested {
            rec.set_requested_type(t);
        }
        let grow_to = match &source {
            Some(found) => copy_of(&mut rec, found, &spec).map_err(opt_err)?,
            None => None,
        };
        Ok(Plan {
            rec,
            source,
            grow_to,
            overwrite_fs: spec.overwrite_fs,
            fs_given: spec.fs_given,
        })
    }
}

/// The create options `opts` of volume `name` under `policy`'s defaults.
pub(super) fn spec_of(
    name: &VolumeName,
    opts: &BTreeMap<String, String>,
    policy: &crate::config::Policy,
) -> ServiceResult<CreateSpec> {
    CreateSpec::parse(
        opts,
        &policy.create_defaults,
        (policy.data_mode, policy.data_uid, policy.data_gid),
    )
    .map_err(|e| ServiceError::Option {
        volume: name.to_string(),
        source: e,
    })
}

/// The options of `spec` that were asked for and that the existing
/// volume `rec` does not have, one line each.
fn differences(rec: &VolumeRecord, spec: &CreateSpec) -> Vec<String> {
    let mut out = Vec::new();
    if spec.size_given && spec.size != rec.size {
        out.push(format!(
            "size: {}, asked {}",
            human_bytes(rec.size),
            human_bytes(spec.size)
        ));
    }
    if spec.fs_given && spec.fs_type != rec.fs_type {
        out.push(format!("fsType: {}, asked {}", rec.fs_type, spec.fs_type));
    }
    let pool = rec.requested_type().unwrap_or(&rec.volume_type);
    if spec.type_given && spec.volume_type != pool {
        out.push(format!("volumeType: {pool}, asked {}", spec.volume_type));
    }
    if spec.owner_given && (spec.uid, spec.gid, spec.mode) != (rec.uid, rec.gid, rec.mode) {
        out.push(format!(
            "owner: uid {} gid {} mode {:o}, asked uid {} gid {} mode {:o}",
            rec.uid, rec.gid, rec.mode, spec.uid, spec.gid, spec.mode
        ));
    }
    if let Some(src) = &spec.source {
        let origin = if rec.origin.is_empty() {
            "a new filesystem"
        } else {
            rec.origin.as_str()
        };
        out.push(format!(
            "source: {origin}, asked {}={}",
            src.option(),
            src.value()
        ));
    }
    out
}

/// A copy has its source's filesystem, size (unless grown) and, unless
/// asked otherwise, data-directory owner. Returns the size to grow to.
fn copy_of(
    rec: &mut VolumeRecord,
    found: &Resolved,
    spec: &CreateSpec,
) -> Result<Option<u64>, String> {
    let (kind, src_name, src_id, size, fs, owner) = match found {
        Resolved::Volume(v) => (
            "volume",
            &v.name,
            &v.id,
            v.size,
            v.fs_type,
            (v.uid, v.gid, v.mode),
        ),
        Resolved::Snapshot(s) => (
            "snapshot",
            &s.name,
            &s.id,
            s.size,
            s.fs_type,
            (s.uid, s.gid, s.mode),
        ),
    };
    if spec.fs_given && spec.fs_type != fs {
        return Err(format!(
            "option fsType={}: {kind} {src_name} holds {fs}, and a copy keeps its source's filesystem (leave fsType out)",
            spec.fs_type
        ));
    }
    if spec.size_given && spec.size < size {
        return Err(format!(
            "option size: {} is smaller than {kind} {src_name} ({}); a copy can only be the same size or larger",
            human_bytes(spec.size),
            human_bytes(size)
        ));
    }
    rec.size = size;
    rec.fs_type = fs;
    if spec.owner_given {
        rec.owner_pending = true;
    } else {
        (rec.uid, rec.gid, rec.mode) = owner;
    }
    rec.origin = format!("{kind} {src_name} ({src_id})");
    Ok((spec.size_given && spec.size > size).then_some(spec.size))
}

pub(super) fn used_by(name: &VolumeName, owner: &str) -> ServiceError {
    ServiceError::Conflict {
        volume: name.to_string(),
        reason: format!(
            "the name is already used by service {owner}; volume names are unique across services"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CreateDefaults;
    use crate::volume::FsType;

    fn spec(pairs: &[(&str, &str)]) -> CreateSpec {
        let m = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = CreateDefaults {
            size: 1 << 30,
            fs_type: FsType::Ext4,
            volume_type: String::new(),
            iops: 0,
            availability_zone: String::new(),
        };
        CreateSpec::parse(&m, &d, (0o755, 0, 0)).expect("valid options")
    }

    fn record() -> VolumeRecord {
        let mut r = crate::state::tests::sample("v");
        r.volume_type = DEFAULT_POOL.into();
        r
    }

    #[test]
    fn only_asked_options_that_differ_are_named() {
        let rec = record();
        // Defaults and matching options: nothing to say.
        assert!(differences(&rec, &spec(&[])).is_empty());
        assert!(differences(&rec, &spec(&[("size", "1"), ("fsType", "ext4")])).is_empty());
        let d = differences(
            &rec,
            &spec(&[("size", "2G"), ("fsType", "xfs"), ("uid", "1000")]),
        );
        assert_eq!(
            d,
            vec![
                "size: 1.0 GiB, asked 2.0 GiB".to_string(),
                "fsType: ext4, asked xfs".to_string(),
                "owner: uid 0 gid 0 mode 755, asked uid 1000 gid 0 mode 755".to_string(),
            ]
        );
        let d = differences(&rec, &spec(&[("snapshotName", "s1")]));
        assert_eq!(d, vec!["source: a new filesystem, asked snapshotName=s1"]);
    }
}
