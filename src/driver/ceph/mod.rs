//! Ceph-backed drivers: `cephfs` (CephFS subvolumes, mounted on many
//! hosts at once) and `rbd` (RBD images, one writer at a time, moved
//! between hosts with locks and fencing).
//!
//! Both keep the volume catalog in Ceph (the volume's record as JSON in
//! image / subvolume metadata under [`META_KEY`]), so every host lists
//! the same volumes and a host can die without losing any. Mount counts
//! stay host-local in the service's records.
//!
//! The cluster connection is made lazily and remade after errors that
//! mean it is gone, so berthd starts (and serves its other services)
//! while a cluster is unreachable; this service then answers with the
//! reason, and `STATUS=` shows it.

pub mod cephfs;
pub mod index;
pub mod rbd;
pub mod scan;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::{Driver, DriverError};
use crate::config::{CephSettings, DriverSettings, Settings};
use crate::state::{SnapshotRecord, VolumeRecord};
use crate::sys::ceph::{CephConfig, CephError, Cluster};

/// Metadata key holding a volume's record in Ceph.
pub const META_KEY: &str = "berth.volume";

/// Metadata key an rbd create puts on its image at once (the volume's
/// id): an image that has it is Berth's, being made (or left by an
/// interrupted create), and never adopted ([`rbd`]'s `adopt`).
pub const CREATING_KEY: &str = "berth.creating";

/// Prefix of the metadata keys (on the snapshot's volume) holding the
/// records of its snapshots: `berth.snapshot.<name>`.
pub const SNAP_META_PREFIX: &str = "berth.snapshot.";

/// How long a fenced client stays blocklisted. A blocklisted rbd-fuse's
/// writes hang (they do not fail) and would land when the entry expires,
/// so it is long, and the fenced host also kills that rbd-fuse as soon as
/// its hold check (the service's sampler, `Driver::check_hold`) sees
/// its lock gone or its client blocklisted, or when it unmounts.
pub const FENCE_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Builds the driver of Ceph service `name`.
pub fn make(settings: &Settings, name: &str) -> Arc<dyn Driver> {
    let svc = &settings.services[name];
    let fuse_root = settings.daemon.mount_dir.join(".rbd-fuse");
    match &svc.driver {
        DriverSettings::Cephfs {
            ceph,
            filesystem,
            group,
        } => Arc::new(cephfs::CephfsDriver::new(
            Backend::new(name, ceph),
            filesystem.clone(),
            group.clone(),
        )),
        DriverSettings::Rbd { ceph, pool, adopt } => {
            let mut d = rbd::RbdDriver::new(
                Backend::new(name, ceph),
                pool.clone(),
                fuse_root,
                settings.daemon.command_timeout,
            );
            if let Some(from) = adopt {
                d = d.adopting(*from, &svc.policy);
            }
            Arc::new(d)
        }
        DriverSettings::Loop { .. } => unreachable!("make is only called for Ceph services"),
    }
}

/// A lazily made, shared cluster connection and its health.
#[derive(Debug)]
pub struct Backend {
    service: String,
    cfg: CephConfig,
    host: String,
    conn: Mutex<Option<Cluster>>,
    problem: Mutex<Option<String>>,
}

/// errnos after which the connection is dropped and made again.
fn connection_lost(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(libc::ESHUTDOWN | libc::ETIMEDOUT | libc::ENOTCONN | libc::ECONNREFUSED)
    )
}

impl Backend {
    /// A backend for `service`; nothing is contacted yet.
    pub fn new(service: &str, s: &CephSettings) -> Self {
        Backend {
            service: service.to_string(),
            cfg: CephConfig {
                conf: s.conf.clone(),
                keyring: s.keyring.clone(),
                client: s.client.clone(),
                timeout: s.timeout,
            },
            host: s.host.clone(),
            conn: Mutex::new(None),
            problem: Mutex::new(None),
        }
    }

    /// The connection settings (for the FUSE helpers).
    pub fn config(&self) -> &CephConfig {
        &self.cfg
    }

    /// This host's name in locks.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The connection, made now if there is none. `volume` names the
    /// volume in the error.
    pub fn cluster(&self, volume: &str) -> Result<Cluster, DriverError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        match Cluster::connect(&self.cfg) {
            Ok(c) => {
                *conn = Some(c.clone());
                if self.set_problem(None) {
                    info!(service = %self.service, "connected to the Ceph cluster");
                }
                Ok(c)
            }
            Err(e) => {
                let reason = format!(
                    "Ceph cluster unreachable (conf {}, client.{}): {e}",
                    self.cfg.conf.display(),
                    self.cfg.client
                );
                if self.set_problem(Some(reason.clone())) {
                    warn!(service = %self.service, "{reason}");
                }
                Err(DriverError::Backend {
                    volume: volume.to_string(),
                    step: "connect to the Ceph cluster",
                    reason,
                    errno: e.errno(),
                })
            }
        }
    }

    /// Records a failed step: an error that means the connection is gone
    /// drops it (the next call connects again) and marks the service
    /// unhealthy. Returns the driver error.
    pub fn fail(&self, volume: &str, step: &'static str, e: CephError) -> DriverError {
        let errno = e.errno();
        if connection_lost(errno) {
            *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let reason = format!("lost the Ceph cluster: {e}");
            if self.set_problem(Some(reason.clone())) {
                warn!(service = %self.service, "{reason}");
            }
        }
        DriverError::Backend {
            volume: volume.to_string(),
            step,
            reason: e.to_string(),
            errno,
        }
    }

    /// Sets the health; `true` when it changed.
    fn set_problem(&self, p: Option<String>) -> bool {
        let mut cur = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        let changed = cur.is_some() != p.is_some();
        *cur = p;
        changed
    }

    /// Why the cluster cannot serve (for `STATUS=`).
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Tries to connect in the background, so `STATUS=` tells early
    /// whether the cluster is reachable.
    pub fn warm_up(self: &Arc<Self>) {
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("ceph-connect".into())
            .spawn(move || {
                let _ = me.cluster("(start-up)");
            });
    }
}

/// A volume's record as stored in Ceph: no host-local state.
pub fn encode(rec: &VolumeRecord) -> String {
    let mut shown = rec.clone();
    shown.mounts.clear();
    shown.mounted = None;
    shown.phase = crate::state::Phase::Ready;
    shown.owner_pending = false;
    serde_json::to_string(&shown).unwrap_or_default()
}

/// Parses a record stored by [`encode`]; `None` (logged) if unreadable
/// or of a newer format than this berthd reads ([`index::check_format`]).
pub fn decode(service: &str, what: &str, text: &str) -> Option<VolumeRecord> {
    let parsed = serde_json::from_str::<serde_json::Value>(text).and_then(|v| {
        if let Err(refused) = index::check_format(&format!("{what}: Berth metadata"), &v) {
            tracing::error!(service, "{refused}; not listed");
            return Ok(None);
        }
        serde_json::from_value::<VolumeRecord>(v).map(Some)
    });
    match parsed {
        Ok(r) => r,
        Err(e) => {
            warn!(
                service,
                "{what}: Berth metadata unreadable ({e}); not listed"
            );
            None
        }
    }
}

/// A snapshot's record as stored in Ceph.
pub fn encode_snapshot(snap: &SnapshotRecord) -> String {
    let mut shown = snap.clone();
    shown.phase = crate::state::Phase::Ready;
    serde_json::to_string(&shown).unwrap_or_default()
}

/// The snapshot records among a volume's metadata.
pub fn snapshots_in(
    service: &str,
    volume: &str,
    meta: &std::collections::BTreeMap<String, String>,
) -> Vec<SnapshotRecord> {
    meta.iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(SNAP_META_PREFIX)?;
            let parsed = serde_json::from_str::<serde_json::Value>(v).and_then(|v| {
                let what = format!("snapshot {name} of {volume}: Berth metadata");
                if let Err(refused) = index::check_format(&what, &v) {
                    tracing::error!(service, "{refused}; not listed");
                    return Ok(None);
                }
                serde_json::from_value::<SnapshotRecord>(v).map(Some)
            });
            match parsed.transpose()? {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(
                        service,
                        "snapshot {name} of {volume}: Berth metadata unreadable ({e}); not listed"
                    );
                    None
                }
            }
        })
        .collect()
}

/// Reads Berth's records from every entry of `names` that is a volume
/// name (an image or subvolume), skipping entries removed meanwhile.
pub(crate) fn scan<T>(
    b: &Backend,
    names: Vec<String>,
    read: impl Fn(&str) -> Result<Vec<T>, CephError>,
) -> Result<Vec<T>, DriverError> {
    let mut out = Vec::new();
    for n in names
        .into_iter()
        .filter(|n| crate::volume::VolumeName::parse(n).is_ok())
    {
        match read(&n) {
            Ok(v) => out.extend(v),
            Err(e) if e.errno() == Some(libc::ENOENT) => {}
            Err(e) => return Err(b.fail(&n, "read Berth metadata", e)),
        }
    }
    Ok(out)
}

/// A removal in Ceph where "already gone" (ENOENT) is success: what an
/// interrupted or repeated remove finds.
pub(crate) fn gone_ok(r: Result<(), CephError>) -> Result<(), CephError> {
    match r {
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Removes an empty directory, ignoring errors (mount points).
pub(crate) fn remove_dir_quietly(p: &Path) {
    let _ = std::fs::remove_dir(p);
}

/// Removes a volume's storage with its catalog key dropped first, so the
/// index never names a volume whose storage is gone: a crash between the
/// two leaves storage without a key, which a Get of the name (it falls
/// back to the volume's own metadata) or the next repair finds again.
/// When the removal fails, the key is put back.
pub(crate) fn remove_unindexed(
    index: &index::Index,
    rec: &VolumeRecord,
    remove: impl FnOnce() -> Result<(), DriverError>,
) -> Result<(), DriverError> {
    index.drop_volume(rec)?;
    let removed = remove();
    if removed.is_err() {
        unindex(&index.put_volume(rec), index, rec.name.as_str());
    }
    removed
}

/// After a change that is done in Ceph (a volume or snapshot made or
/// gone): an index update that failed is logged and a repair asked for,
/// which brings the index in line with the volumes.
pub(crate) fn unindex(r: &Result<(), DriverError>, index: &index::Index, name: &str) {
    if let Err(e) = r {
        warn!(volume = %name, "catalog index not updated ({e}); a full scan will correct it");
        index.ask_repair();
    }
}
